//! The worker's side of established NAT connections in the XDP fast path
//! (port/fastpath_nat.rs, bpf/fastpath_nat.h): deciding that the decision just
//! taken for a packet may be replayed by the kernel for the rest of its
//! connection's direction, writing it, deleting it on FIN/RST, and the
//! once-a-second sweep that keeps conntrack the source of truth (last use copied
//! from the kernel, entries of connections that went or left ESTABLISHED deleted).

use super::Worker;
use crate::conntrack::tcp::TcpState;
use crate::conntrack::{Tuple, Verdict, cflag};
use crate::flow::field::Field;
use crate::flow::key::{Key, ct_state};
use crate::port::fastpath::{AGING_SWEEP_NS, monotonic_ns};
use crate::port::fastpath_nat::{
    IDLE_MARGIN_S, MAX_INSTALLED, NatKey, NatValue, STAGE_CT, STAGE_NONE, STAGE_OUT, kernel_skips,
    mac_bytes, tuple_of_key,
};
use std::collections::HashMap;

/// The packet in the pipeline so far qualifies: written once its last pass
/// forwarded it to one port.
struct Pending {
    key: NatKey,
    pre: Tuple,
    in_port: u32,
    match_dst: [u8; 6],
    match_src: [u8; 6],
    ttl: u8,
}

/// One entry this worker wrote: the connection it belongs to.
struct Installed {
    orig: Tuple,
}

#[derive(Default)]
pub(super) struct NatWorker {
    /// The first pass of the packet in the pipeline was a plain `ct(nat)`.
    armed: bool,
    pending: Option<Pending>,
    /// Keys written with epoch `installed_epoch` (once per key and epoch).
    installed: HashMap<NatKey, Installed>,
    installed_epoch: u32,
    last_sweep: u64,
}

const FIN_RST: u16 = 0x05;

impl Worker {
    /// Called before a megaflow's actions run: its NAT stage (0 without the fast path).
    #[inline]
    pub(super) fn nat_stage_begin(
        &mut self,
        id: crate::flow::megaflow::MegaflowId,
        depth: u32,
    ) -> u8 {
        if self.links.fastpath.is_none() {
            return STAGE_NONE;
        }
        let stage = self.cache.nat_stage(id);
        let n = &mut self.fp.nat;
        if depth == 0 {
            n.armed = stage == STAGE_CT;
            n.pending = None;
        } else {
            n.armed = false;
            if stage != STAGE_OUT || depth != 1 {
                n.pending = None;
            }
        }
        stage
    }

    /// Whether `ct_action` should keep the key as received for [`Self::nat_note`].
    #[inline]
    pub(super) fn nat_wants(&self, k: &Key) -> bool {
        self.links.fastpath.is_some()
            && (self.fp.nat.armed
                || (k.ip_proto() == 6 && Field::TcpFlags.get(k) as u16 & FIN_RST != 0))
    }

    /// After conntrack translated a packet (`pre` as received, `post` now): a
    /// FIN or RST deletes the connection's kernel entries; an armed packet of an
    /// existing connection becomes a candidate.
    pub(super) fn nat_note(&mut self, pre: &Key, post: &Key, v: &Verdict) {
        let armed = std::mem::take(&mut self.fp.nat.armed);
        if v.xlate.is_empty() || !v.inner.is_empty() || v.hairpin {
            return;
        }
        let (Some(t_pre), Some(t_post)) = (tuple_of_key(pre, 0), tuple_of_key(post, 0)) else {
            return;
        };
        if pre.ip_proto() == 6 && Field::TcpFlags.get(pre) as u16 & FIN_RST != 0 {
            // Both directions: this packet's (as received) and the other one's
            // (the reverse of this packet as translated).
            self.nat_forget(&t_pre);
            self.nat_forget(&t_post.reversed());
            return;
        }
        let st = Field::CtState.get(post) as u8;
        if !armed
            || kernel_skips(pre)
            || st & ct_state::TRK == 0
            || st & (ct_state::INV | ct_state::REL) != 0
        {
            return;
        }
        let Some(key) = NatKey::of_tuple(&t_pre) else {
            return;
        };
        if self.fp.nat.installed_epoch == self.fp.epoch && self.fp.nat.installed.contains_key(&key)
        {
            return;
        }
        self.fp.nat.pending = Some(Pending {
            key,
            pre: Tuple {
                zone: Field::CtZone.get(post) as u16,
                ..t_pre
            },
            in_port: pre.in_port(),
            match_dst: mac_bytes(Field::EthDst.get(pre)),
            match_src: mac_bytes(Field::EthSrc.get(pre)),
            ttl: Field::IpTtl.get(pre) as u8,
        });
    }

    fn nat_forget(&mut self, t: &Tuple) {
        let (Some(fp), Some(k)) = (&self.links.fastpath, NatKey::of_tuple(t)) else {
            return;
        };
        fp.nat_delete(&k);
        self.fp.nat.installed.remove(&k);
    }

    /// After the last pass (`key` as the frame left): writes the pending entry
    /// if the frame went to one fast-path port and the connection qualifies.
    pub(super) fn nat_finish(&mut self, key: &Key, now: u64) {
        let Some(p) = self.fp.nat.pending.take() else {
            return;
        };
        let Some(out_port) = self.fp.out else {
            return;
        };
        let Some(fp) = self.links.fastpath.clone() else {
            return;
        };
        if out_port == p.in_port || self.links.capture.armed() {
            return;
        }
        let (Some(ri), Some(ro)) = (self.snap.port(p.in_port), self.snap.port(out_port)) else {
            return;
        };
        if !(ri.fp_ingress && ro.fastpath) || ri.ifindex == 0 || ro.ifindex == 0 {
            return;
        }
        let (in_ifindex, out_ifindex) = (ri.ifindex, ro.ifindex);
        let Some(post) = tuple_of_key(key, 0) else {
            return;
        };
        let ttl = Field::IpTtl.get(key) as u8;
        let dec_ttl = match p.ttl.wrapping_sub(ttl) {
            0 => 0,
            1 => 1,
            _ => return,
        };
        let n = &mut self.fp.nat;
        if n.installed_epoch != self.fp.epoch {
            n.installed.clear();
            n.installed_epoch = self.fp.epoch;
        }
        if n.installed.len() >= MAX_INSTALLED {
            return;
        }
        // The connection as the table has it now (once per entry and epoch).
        let Some(f) = self.conntrack.table.lookup(&p.pre, now, |_, _| true) else {
            return;
        };
        let c = &f.conn;
        let tcp = c.orig.proto == 6;
        if c.has(cflag::HAIRPIN)
            || (tcp && (c.state != TcpState::Established as u8 || !c.has(cflag::ASSURED)))
            || c.timeout_s <= IDLE_MARGIN_S
        {
            return;
        }
        let v = NatValue {
            in_ifindex,
            out_ifindex,
            in_port: p.in_port,
            out_port,
            match_dst: p.match_dst,
            match_src: p.match_src,
            new_dst: mac_bytes(Field::EthDst.get(key)),
            new_src: mac_bytes(Field::EthSrc.get(key)),
            saddr: post.src[3].to_be_bytes(),
            daddr: post.dst[3].to_be_bytes(),
            sport: post.sport.to_be_bytes(),
            dport: post.dport.to_be_bytes(),
            epoch: self.fp.epoch,
            dec_ttl,
            pad: [0; 7],
            idle_ns: u64::from(c.timeout_s - IDLE_MARGIN_S) * 1_000_000_000,
            last_seen: monotonic_ns(),
        };
        if fp.nat_install(&p.key, &v).is_err() {
            return;
        }
        let orig = c.orig;
        let udp_reply = f.reply && !tcp;
        self.fp.nat.installed.insert(p.key, Installed { orig });
        if udp_reply {
            // The original direction's entry was decided before the reply made
            // the connection +est: decide it again.
            self.nat_forget(&orig);
        }
    }

    /// Once a second: copies the kernel's last use of each entry this worker
    /// wrote into its connection (so conntrack does not expire a connection the
    /// kernel still forwards), and deletes entries whose connection is gone or
    /// (TCP) no longer ESTABLISHED. Runs before conntrack's expiry.
    pub(super) fn nat_sweep(&mut self, now: u64) {
        let Some(fp) = self.links.fastpath.clone() else {
            return;
        };
        let n = &mut self.fp.nat;
        if now.saturating_sub(n.last_sweep) < AGING_SWEEP_NS {
            return;
        }
        n.last_sweep = now;
        if n.installed_epoch != fp.epoch() {
            n.installed.clear();
            return;
        }
        let epoch = n.installed_epoch;
        let mono = monotonic_ns();
        let table = &self.conntrack.table;
        n.installed.retain(|k, rec| {
            let Some(v) = fp.nat_lookup(k) else {
                return false;
            };
            if v.epoch != epoch {
                return false;
            }
            let seen = now.saturating_sub(mono.saturating_sub(v.last_seen));
            let mut keep = false;
            let _ = table.lookup(&rec.orig, now, |c, _| {
                keep = c.orig.proto != 6
                    || (c.state == TcpState::Established as u8 && c.has(cflag::ASSURED));
                if keep && seen > c.last_ns {
                    c.last_ns = seen;
                }
                true
            });
            if !keep {
                fp.nat_delete(k);
            }
            keep
        });
    }
}

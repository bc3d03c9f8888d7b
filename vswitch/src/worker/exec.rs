//! The pipeline on a worker: cache lookup, datapath actions on the frame, and
//! recirculation after `ct` and `decap`.

use super::{DropTally, LearnEvent, Worker};
use crate::bridge::Learned;
use crate::conntrack::CtRequest;
use crate::counters::WorkerCounters;
use crate::flow::dpaction::DpAction;
use crate::flow::extract::{self, Offsets};
use crate::flow::field::Field;
use crate::flow::key::{self, Key};
use crate::flow::rewrite;
use crate::overlay::vxlan;
use crate::pool::Frame;
use vswitch_proto::DropReason;

/// Recirculations one packet may go through before it is dropped.
const MAX_RECIRC: u32 = 8;

/// A frame waiting to go through the pipeline again (after ct or decap).
pub(super) struct Recirc {
    frame: Frame,
    key: Key,
    off: Option<Offsets>,
    depth: u32,
}

impl Worker {
    /// Runs one received frame through the pipeline.
    #[inline]
    pub(super) fn process(&mut self, frame: Frame, in_port: u32, now: u64, tally: &mut DropTally) {
        self.fp.tun.pending = None;
        let mut key = Key::ZERO;
        let off = match extract::extract(self.pool.data(&frame), in_port, &mut key) {
            Ok(o) => o,
            Err(_) => return self.drop_frame(frame, DropReason::Malformed, tally),
        };
        // A VLAN tag cut short is a frame that lies about itself; other truncated
        // headers still go through the pipeline (L2 rules may forward them).
        if off.truncated && !off.vlan && matches!(key.eth_type(), 0x8100 | 0x88a8) {
            return self.drop_frame(frame, DropReason::Malformed, tally);
        }
        let Some(route) = self.snap.port(in_port) else {
            return self.drop_frame(frame, DropReason::PortDown, tally);
        };
        if frame.len > route.max_frame {
            return self.drop_frame(frame, DropReason::Oversize, tally);
        }
        self.run_pipeline(frame, key, Some(off), 0, now, tally);
        while let Some(r) = self.recirc.pop() {
            if r.depth > MAX_RECIRC {
                self.drop_frame(r.frame, DropReason::ActionFailed, tally);
                continue;
            }
            self.run_pipeline(r.frame, r.key, r.off, r.depth, now, tally);
        }
    }

    #[inline]
    fn drop_frame(&mut self, frame: Frame, r: DropReason, tally: &mut DropTally) {
        tally.counts[r as usize] += 1;
        if tally.capture {
            self.tap_drop(&frame, tally.slot, r);
        }
        self.pool.free(frame);
    }

    #[inline]
    fn run_pipeline(
        &mut self,
        frame: Frame,
        mut key: Key,
        off: Option<Offsets>,
        depth: u32,
        now: u64,
        tally: &mut DropTally,
    ) {
        // The sender's MAC as received: where an ICMP error for this packet goes.
        self.ingress_src = Field::EthSrc.get(&key) as u64;
        let id = self.cache.lookup(&key);
        // Plain L2 forwarding straight off a port: the kernel may take the next
        // frames of this key (port/fastpath.rs).
        let fp_key = if depth == 0 && self.links.fastpath.is_some() && self.cache.offloadable(id) {
            crate::port::fastpath::FdbKey::of_frame(0, self.pool.data(&frame))
        } else {
            None
        };
        let in_port = key.in_port();
        let tun = self.tunnel_fp_pre(&frame, &key, depth);
        let nat_stage = self.nat_stage_begin(id, depth);
        let Some((actions, last)) = self.cache.take_actions(id, frame.len, now) else {
            return self.drop_frame(frame, DropReason::Pipeline, tally);
        };
        self.fp.out = None;
        self.execute(frame, &mut key, off, &actions, last, depth, now, tally);
        if let Some(t) = tun {
            self.tunnel_fp_post(t, &key, &actions);
        }
        self.cache.put_actions(id, actions);
        if nat_stage == crate::port::fastpath_nat::STAGE_OUT {
            self.nat_finish(&key, now);
        }
        if let Some(k) = fp_key
            && let Some(out) = self.fp.out.take()
        {
            self.fastpath_install(k, in_port, out);
        }
    }

    /// Executes datapath actions in order; the action at `last` (the last one
    /// that hands the frame on) gets the frame itself, earlier ones copies.
    #[allow(clippy::too_many_arguments)]
    fn execute(
        &mut self,
        frame: Frame,
        key: &mut Key,
        mut off: Option<Offsets>,
        actions: &[DpAction],
        last: Option<usize>,
        depth: u32,
        now: u64,
        tally: &mut DropTally,
    ) {
        let Some(last) = last else {
            return self.drop_frame(frame, DropReason::Pipeline, tally);
        };
        let mut cur = frame;
        for (i, a) in actions.iter().enumerate().take(last + 1) {
            let mine = i == last;
            match a {
                DpAction::SetField { field, value, mask } => {
                    let o = match self.offsets(&cur, key, &mut off) {
                        Some(o) => o,
                        None => return self.drop_frame(cur, DropReason::ActionFailed, tally),
                    };
                    let data = self.pool.data_mut(&cur);
                    if rewrite::set_field(data, &o, *field, *value, *mask, Some(key)).is_err() {
                        return self.drop_frame(cur, DropReason::ActionFailed, tally);
                    }
                }
                DpAction::Policy(dir) => {
                    if !self.policy_allows(*dir, key, now) {
                        return self.drop_frame(cur, DropReason::Policy, tally);
                    }
                }
                DpAction::SetMeta { word, value, mask } => {
                    if let Some(w) = key.0.get_mut(usize::from(*word)) {
                        *w = (*w & !mask) | value;
                    }
                }
                DpAction::DecTtl => {
                    let o = match self.offsets(&cur, key, &mut off) {
                        Some(o) => o,
                        None => return self.drop_frame(cur, DropReason::ActionFailed, tally),
                    };
                    if rewrite::dec_ttl(self.pool.data_mut(&cur), &o, Some(key)).is_err() {
                        return self.drop_frame(cur, DropReason::TtlExpired, tally);
                    }
                }
                DpAction::Encap { vni, src, dst } => {
                    let t = self.links.tunnel.get();
                    let e = vxlan::Encap {
                        vni: *vni as u32,
                        src: *src,
                        dst: *dst,
                        port: t.port,
                        sport: vxlan::source_port(self.flow_hash(key)),
                        mtu: t.mtu,
                    };
                    let len = cur.len as usize;
                    let buf = self.pool.buffer_mut(cur.idx);
                    match vxlan::encap(buf, 0, len, &e) {
                        Ok(n) => cur.len = n as u32,
                        Err(vxlan::EncapError::TooBig { df }) => {
                            if df {
                                self.frag_needed(cur, key, &t, tally);
                            } else {
                                self.drop_frame(cur, DropReason::TunnelTooBig, tally);
                            }
                            return;
                        }
                        Err(vxlan::EncapError::NoRoom) => {
                            return self.drop_frame(cur, DropReason::ActionFailed, tally);
                        }
                    }
                    // The outer frame: the flows' next set_field (outer MACs) re-parses it.
                    off = None;
                }
                DpAction::PushVlan(_) | DpAction::PopVlan => {
                    let Some(mut o) = self.offsets(&cur, key, &mut off) else {
                        return self.drop_frame(cur, DropReason::ActionFailed, tally);
                    };
                    let len = cur.len as usize;
                    let buf = self.pool.buffer_mut(cur.idx);
                    let r = match a {
                        DpAction::PushVlan(tpid) => {
                            rewrite::push_vlan(buf, len, *tpid, &mut o, Some(key))
                        }
                        _ => rewrite::pop_vlan(buf, len, &mut o, Some(key)),
                    };
                    match r {
                        Ok(n) => cur.len = n as u32,
                        Err(_) => return self.drop_frame(cur, DropReason::ActionFailed, tally),
                    }
                    off = Some(o);
                }
                _ => {
                    // Actions that hand the frame on.
                    let f = if mine {
                        cur
                    } else {
                        match self.pool.clone_frame(&cur) {
                            Some(c) => c,
                            None => {
                                tally.counts[DropReason::NoBuffer as usize] += 1;
                                continue;
                            }
                        }
                    };
                    self.hand_on(f, key, off, a, depth, now, tally);
                    if mine {
                        return;
                    }
                }
            }
        }
    }

    /// The NetworkPolicy verdict for this packet's connection (counted; denied
    /// ones audited, rate limited).
    #[inline]
    fn policy_allows(&mut self, dir: crate::policy::Dir, key: &Key, now: u64) -> bool {
        let Some(p) = crate::policy::Packet::from_key(key) else {
            return true;
        };
        let d = self.links.policy.load().decide_counted(dir, &p);
        if !d.allows() && self.audit.enabled() && self.audit.allow(now) {
            let suppressed = std::mem::take(&mut self.audit.suppressed);
            tracing::info!(
                target: "vswitch::policy_audit",
                dir = dir.as_str(),
                src = %crate::policy::eval::ip_text(p.src),
                dst = %crate::policy::eval::ip_text(p.dst),
                proto = p.proto,
                dport = p.dport,
                suppressed,
                "connection denied by NetworkPolicy"
            );
        }
        d.allows()
    }

    /// Header offsets of the frame as it is now (computed once per change of shape).
    #[inline]
    pub(super) fn offsets(
        &self,
        f: &Frame,
        key: &Key,
        off: &mut Option<Offsets>,
    ) -> Option<Offsets> {
        if off.is_none() {
            let mut scratch = Key::ZERO;
            *off = extract::extract(self.pool.data(f), key.in_port(), &mut scratch).ok();
        }
        *off
    }

    #[allow(clippy::too_many_arguments)]
    fn hand_on(
        &mut self,
        f: Frame,
        key: &mut Key,
        off: Option<Offsets>,
        a: &DpAction,
        depth: u32,
        now: u64,
        tally: &mut DropTally,
    ) {
        let in_port = key.in_port();
        match a {
            DpAction::Output(p) => {
                self.fp.out = Some(*p);
                self.output(f, *p, tally)
            }
            DpAction::Normal => self.normal(f, key, now, tally),
            DpAction::Flood => self.flood(f, in_port, tally),
            DpAction::Clone(inner) => {
                let mut k = *key;
                let last = inner.iter().rposition(crate::flow::cache::consumes_frame);
                self.execute(f, &mut k, off, inner, last, depth, now, tally);
            }
            DpAction::Ct {
                zone,
                commit,
                nat,
                set_mark,
                set_label,
                recirc,
            } => {
                let mut k = *key;
                let mut f = f;
                let req = CtRequest {
                    zone: *zone,
                    commit: *commit,
                    nat: nat.as_ref(),
                    set_mark: *set_mark,
                    set_label: *set_label,
                };
                let mut off = off;
                if !self.ct_action(&mut f, &mut k, &mut off, &req, now) {
                    return self.drop_frame(f, DropReason::ActionFailed, tally);
                }
                match recirc {
                    Some(r) => {
                        k.set_recirc_id(*r);
                        self.recirc.push(Recirc {
                            frame: f,
                            key: k,
                            off,
                            depth: depth + 1,
                        });
                    }
                    None => self.pool.free(f),
                }
            }
            DpAction::ServiceLb { id, zone, recirc } => {
                let mut k = *key;
                let mut f = f;
                let mut off = off;
                match self.service_lb(&mut f, &mut k, &mut off, *id, *zone, now) {
                    Ok(()) => {
                        k.set_recirc_id(*recirc);
                        self.recirc.push(Recirc {
                            frame: f,
                            key: k,
                            off,
                            depth: depth + 1,
                        });
                    }
                    Err(r) => self.drop_frame(f, r, tally),
                }
            }
            DpAction::Punt(crate::flow::spec::Punt::Reject) => {
                let len = f.len as usize;
                let mut f = f;
                if !self.punt.allow(now) {
                    return self.drop_frame(f, DropReason::Punt, tally);
                }
                match super::reject::reject(self.pool.buffer_mut(f.idx), len) {
                    Some(n) => {
                        f.len = n as u32;
                        self.output(f, in_port, tally);
                    }
                    None => self.drop_frame(f, DropReason::Punt, tally),
                }
            }
            DpAction::Punt(p) => {
                if !self.punt.allow(now)
                    || crate::worker::punt::answer(p, self.pool.data_mut(&f)).is_none()
                {
                    return self.drop_frame(f, DropReason::Punt, tally);
                }
                self.output(f, in_port, tally);
            }
            DpAction::Decap { recirc } => {
                let t = self.links.tunnel.get();
                let len = f.len as usize;
                let buf = self.pool.buffer_mut(f.idx);
                let d = match vxlan::decap(buf, 0, len, t.port, t.vni) {
                    Ok(d) => d,
                    Err(_) => return self.drop_frame(f, DropReason::TunnelRejected, tally),
                };
                let mut inner = f;
                inner.len = d.len as u32;
                let mut k = Key::ZERO;
                let off = match extract::extract(self.pool.data(&inner), in_port, &mut k) {
                    Ok(o) => o,
                    Err(_) => return self.drop_frame(inner, DropReason::Malformed, tally),
                };
                // Registers and metadata set before decap travel; conntrack starts afresh.
                k.0[key::W_REGS..=key::W_METADATA]
                    .copy_from_slice(&key.0[key::W_REGS..=key::W_METADATA]);
                Field::TunId.set_masked(&mut k, u128::from(d.vni), u128::MAX);
                Field::TunSrc.set_masked(&mut k, u128::from(d.src), u128::MAX);
                Field::TunDst.set_masked(&mut k, u128::from(d.dst), u128::MAX);
                k.set_recirc_id(*recirc);
                self.recirc.push(Recirc {
                    frame: inner,
                    key: k,
                    off: Some(off),
                    depth: depth + 1,
                });
            }
            _ => self.pool.free(f),
        }
    }

    /// Hash of the inner flow (addresses, protocol, ports) for the outer UDP
    /// source port: one flow, one underlay path.
    #[inline]
    pub(super) fn flow_hash(&self, key: &Key) -> u64 {
        let a = key.0[key::W_NW] ^ key.0[key::W_TP].rotate_left(17) ^ key.0[key::W_ETH_SRC] >> 48;
        let h = a.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h ^ (h >> 29)
    }

    /// A packet too big for the tunnel with DF set: the gateway answers with ICMP
    /// fragmentation-needed out of the ingress port (path MTU discovery), rate
    /// limited like the other punt handlers. The drop is counted either way.
    fn frag_needed(&mut self, f: Frame, key: &Key, t: &vxlan::TunnelConfig, tally: &mut DropTally) {
        tally.counts[DropReason::TunnelTooBig as usize] += 1;
        let now = self.now_ns();
        let len = f.len as usize;
        let src_mac = self.ingress_src.to_be_bytes();
        let dst_mac = [
            src_mac[2], src_mac[3], src_mac[4], src_mac[5], src_mac[6], src_mac[7],
        ];
        let mtu = t.mtu.saturating_sub(vxlan::MTU_OVERHEAD).min(0xffff) as u16;
        let buf = self.pool.buffer_mut(f.idx);
        if !self.punt.allow(now) {
            return self.pool.free(f);
        }
        match vxlan::frag_needed(buf, 0, len, t.gw_mac, t.gw_ip, dst_mac, mtu) {
            Some(n) => {
                let mut r = f;
                r.len = n as u32;
                self.output(r, key.in_port(), tally);
            }
            None => self.pool.free(f),
        }
    }

    /// The learning bridge as an action: learn the source on the ingress port,
    /// forward by destination MAC (flood when unknown or group-addressed).
    fn normal(&mut self, f: Frame, key: &Key, now: u64, tally: &mut DropTally) {
        let in_port = key.in_port();
        let src = Field::EthSrc.get(key) as u64;
        let dst = Field::EthDst.get(key) as u64;
        let tci = key.vlan_tci();
        let vlan = if tci & key::VLAN_PRESENT != 0 {
            u64::from(tci & 0x0fff)
        } else {
            0
        };
        // Group bit of the first octet (the u48 is big-endian).
        if (src >> 40) & 1 != 0 {
            return self.drop_frame(f, DropReason::BadSrcMac, tally);
        }
        let skey = src | (vlan << 48);
        // A load-balanced packet carries the gateway's MAC as source: not the
        // sender's, so not learned (it would pull the gateway MAC onto a pod port).
        let routed = crate::flow::layout::reg::SVC_FLAGS.get(key)
            & u128::from(crate::flow::layout::svc_flags::ROUTED)
            != 0;
        if routed {
            return self.forward_by_dst(f, key, dst, vlan, in_port, tally, now);
        }
        match self.macs.learn(skey, in_port, now) {
            Learned::Refreshed => {}
            Learned::New => WorkerCounters::add(&self.links.counters.mac_learned, 1),
            Learned::Moved { .. } => {
                WorkerCounters::add(&self.links.counters.mac_moved, 1);
                self.fastpath_invalidate();
            }
            Learned::Full => WorkerCounters::add(&self.links.counters.mac_table_full, 1),
        }
        if self.links.learn.has_peers()
            && self
                .macs
                .due_for_announce(skey, now, self.macs.aging_ns() / 4)
        {
            self.links.learn.announce(LearnEvent {
                key: skey,
                port: in_port,
                seen: now,
            });
        }
        self.forward_by_dst(f, key, dst, vlan, in_port, tally, now)
    }

    #[allow(clippy::too_many_arguments)]
    fn forward_by_dst(
        &mut self,
        f: Frame,
        _key: &Key,
        dst: u64,
        vlan: u64,
        in_port: u32,
        tally: &mut DropTally,
        now: u64,
    ) {
        if (dst >> 40) & 1 != 0 {
            self.flooded += 1;
            return self.flood(f, in_port, tally);
        }
        match self.macs.lookup(dst | (vlan << 48), now) {
            Some(p) if p == in_port => self.drop_frame(f, DropReason::SamePort, tally),
            Some(p) => {
                self.fp.out = Some(p);
                self.output(f, p, tally)
            }
            None => {
                self.flooded += 1;
                self.flood(f, in_port, tally)
            }
        }
    }
}

//! A worker's side of VXLAN encap and decap in the XDP fast path
//! (port/fastpath_tunnel.rs): after the pipeline executed a frame's cached
//! actions, write the decision into the kernel's tunnel maps when it has one of
//! the two offloadable shapes.
//!
//! Decap takes two passes through the pipeline (the outer frame, `decap`, then the
//! inner frame from the recirculation): the outer pass leaves a [`PendingDecap`]
//! that the inner pass of the same frame completes. Every frame starts with none
//! (`process`).

use super::Worker;
use crate::flow::dpaction::DpAction;
use crate::flow::field::Field;
use crate::flow::key::{self, Key};
use crate::pool::Frame;
use crate::port::fastpath::{MAX_INSTALLED, monotonic_ns};
use crate::port::fastpath_tunnel::{
    TunDecap, TunDecapKey, TunEncap, TunFlowKey, bpf_words, decap_outer_ok, encap_plan, inner_plan,
    words_agree,
};
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use vswitch_proto::PortKind;

/// What a worker installed in the current epoch (one map write per key and epoch).
#[derive(Default)]
pub(super) struct TunFp {
    /// Set by the outer pass of a tunnel frame whose decision was only `decap`.
    pub(super) pending: Option<PendingDecap>,
    epoch: u32,
    encaps: HashSet<TunFlowKey>,
    decaps: HashSet<TunDecapKey>,
}

pub(super) struct PendingDecap {
    key: TunDecapKey,
    in_port: u32,
    max_in: u32,
}

/// The frame's kernel key words, taken before the actions changed it.
pub(super) struct TunPre {
    words: [u64; 5],
    in_port: u32,
    depth: u32,
    vni: u32,
    tun_nw: u64,
}

fn mac_of_word(w: u64) -> [u8; 6] {
    let b = w.to_be_bytes();
    [b[2], b[3], b[4], b[5], b[6], b[7]]
}

impl Worker {
    /// Before executing: the words the kernel would compute for this frame, when
    /// it could become a tunnel entry (fast path on, outer pass or the inner pass
    /// of a pending decap, a frame the BPF parser takes whose words are the key's).
    #[inline]
    pub(super) fn tunnel_fp_pre(&self, frame: &Frame, key: &Key, depth: u32) -> Option<TunPre> {
        self.links.fastpath.as_ref()?;
        if depth > 1 || (depth == 1 && self.fp.tun.pending.is_none()) {
            return None;
        }
        let (words, _) = bpf_words(self.pool.data(frame))?;
        if !words_agree(&words, key) {
            return None;
        }
        Some(TunPre {
            words,
            in_port: key.in_port(),
            depth,
            vni: Field::TunId.get(key) as u32,
            tun_nw: key.0[key::W_TUN_NW],
        })
    }

    /// After executing `actions` (`key` as they left it): installs an encap entry,
    /// notes a pending decap, or completes one.
    pub(super) fn tunnel_fp_post(&mut self, pre: TunPre, key: &Key, actions: &[DpAction]) {
        if self.links.capture.armed() {
            self.fp.tun.pending = None;
            return;
        }
        if self.fp.tun.epoch != self.fp.epoch {
            self.fp.tun.encaps.clear();
            self.fp.tun.decaps.clear();
            self.fp.tun.epoch = self.fp.epoch;
        }
        if pre.depth == 1 {
            if let Some(p) = self.fp.tun.pending.take() {
                self.decap_install(p, &pre, actions);
            }
            return;
        }
        let Some(ri) = self.snap.port(pre.in_port) else {
            return;
        };
        if !ri.fp_ingress || ri.ifindex == 0 {
            return;
        }
        if ri.kind == PortKind::Uplink {
            if decap_outer_ok(actions) {
                self.fp.tun.pending = Some(PendingDecap {
                    key: TunDecapKey {
                        in_ifindex: ri.ifindex,
                        outer: pre.words,
                        ..TunDecapKey::default()
                    },
                    in_port: pre.in_port,
                    max_in: ri.max_frame,
                });
            }
            return;
        }
        // Encap: the frame went out (not too big, not dropped) by the plan's port.
        let Some(out) = self.fp.out else { return };
        let Some(plan) = encap_plan(actions) else {
            return;
        };
        let Some(ro) = self.snap.port(out) else {
            return;
        };
        if plan.out != out || ro.kind != PortKind::Uplink || !ro.fastpath || ro.ifindex == 0 {
            return;
        }
        let k = TunFlowKey {
            in_ifindex: ri.ifindex,
            pad: 0,
            w: pre.words,
        };
        let tun = &self.fp.tun;
        if tun.encaps.len() >= MAX_INSTALLED || tun.encaps.contains(&k) {
            return;
        }
        let t = self.links.tunnel.get();
        let sport = crate::overlay::vxlan::source_port(self.flow_hash(key));
        let vni = plan.vni;
        let v = TunEncap {
            outer_dst: plan.outer.dst.unwrap_or([0; 6]),
            outer_src: plan.outer.src.unwrap_or([0; 6]),
            inner_dst: plan.inner.dst.unwrap_or(mac_of_word(pre.words[2])),
            inner_src: plan.inner.src.unwrap_or(mac_of_word(pre.words[1])),
            saddr: plan.src.to_be_bytes(),
            daddr: plan.dst.to_be_bytes(),
            vni: [(vni >> 16) as u8, (vni >> 8) as u8, vni as u8, 0],
            sport: sport.to_be_bytes(),
            dport: t.port.to_be_bytes(),
            mtu: t.mtu,
            max_in: ri.max_frame,
            dec_ttl: u32::from(plan.inner.dec_ttl),
            out_ifindex: ro.ifindex,
            out_port: out,
            in_port: pre.in_port,
            epoch: self.fp.epoch,
            pad: 0,
            last_seen: monotonic_ns(),
        };
        let Some(fp) = &self.links.fastpath else {
            return;
        };
        if counted(fp, fp.tunnel.install_encap(&k, &v)) {
            self.fp.tun.encaps.insert(k);
        }
    }

    /// The inner pass of a frame whose outer pass was only `decap`.
    fn decap_install(&mut self, p: PendingDecap, pre: &TunPre, actions: &[DpAction]) {
        let Some(out) = self.fp.out else { return };
        let Some((rw, o)) = inner_plan(actions) else {
            return;
        };
        let Some(ro) = self.snap.port(out) else {
            return;
        };
        // The tunnel metadata the inner pass saw is the outer frame's.
        if o != out
            || pre.in_port != p.in_port
            || pre.tun_nw != p.key.outer[3]
            || ro.kind == PortKind::Uplink
            || !ro.fastpath
            || ro.ifindex == 0
        {
            return;
        }
        let mut k = p.key;
        k.vni = pre.vni;
        k.inner = pre.words;
        let tun = &self.fp.tun;
        if tun.decaps.len() >= MAX_INSTALLED || tun.decaps.contains(&k) {
            return;
        }
        let v = TunDecap {
            inner_dst: rw.dst.unwrap_or(mac_of_word(pre.words[2])),
            inner_src: rw.src.unwrap_or(mac_of_word(pre.words[1])),
            dec_ttl: u32::from(rw.dec_ttl),
            max_in: p.max_in,
            out_ifindex: ro.ifindex,
            out_port: out,
            in_port: p.in_port,
            epoch: self.fp.epoch,
            pad: 0,
            last_seen: monotonic_ns(),
        };
        let Some(fp) = &self.links.fastpath else {
            return;
        };
        if counted(fp, fp.tunnel.install_decap(&k, &v)) {
            self.fp.tun.decaps.insert(k);
        }
    }
}

/// Counts an entry write in the fast path's install counters; true when it was written.
fn counted(fp: &crate::port::fastpath::FastPath, written: std::io::Result<()>) -> bool {
    let c = &fp.counters;
    match written {
        Ok(()) => {
            c.installs.fetch_add(1, Ordering::Relaxed);
            true
        }
        Err(_) => {
            c.install_errors.fetch_add(1, Ordering::Relaxed);
            false
        }
    }
}

//! The worker's side of conntrack and service load balancing: reading what the
//! key lacks from the frame (ICMP ids and quoted headers), applying the NAT a
//! connection asks for, and the `service_lb` action.

use super::Worker;
use crate::conntrack::{CtRequest, LbChoice, PacketInfo, Verdict, Xlate, icmp};
use crate::flow::extract::Offsets;
use crate::flow::field::{Field, ip_proto};
use crate::flow::key::Key;
use crate::flow::layout::{ct_label, reg, svc_flags};
use crate::flow::rewrite;
use crate::pool::Frame;
use crate::services::lb::{HAIRPIN_SNAT_V4, conn_hash};
use vswitch_proto::DropReason;

fn mac_u128(m: [u8; 6]) -> u128 {
    let mut b = [0u8; 16];
    b[10..].copy_from_slice(&m);
    u128::from_be_bytes(b)
}

/// Rewrites addresses (and ports, for TCP/UDP/SCTP) by `x`; checksums follow.
fn xlate(data: &mut [u8], o: &Offsets, k: &mut Key, x: &Xlate) -> bool {
    let v6 = k.eth_type() == 0x86dd;
    let (fs, fd) = if v6 {
        (Field::Ipv6Src, Field::Ipv6Dst)
    } else {
        (Field::Ipv4Src, Field::Ipv4Dst)
    };
    let ports = matches!(k.ip_proto(), ip_proto::TCP | ip_proto::UDP | ip_proto::SCTP);
    for (val, fa, fp) in [(x.src, fs, Field::TpSrc), (x.dst, fd, Field::TpDst)] {
        let Some((a, p)) = val else { continue };
        if fa.get(k) != a && rewrite::set_field(data, o, fa, a, u128::MAX, Some(k)).is_err() {
            return false;
        }
        if ports
            && fp.get(k) != u128::from(p)
            && rewrite::set_field(data, o, fp, u128::from(p), u128::MAX, Some(k)).is_err()
        {
            return false;
        }
    }
    true
}

impl Worker {
    fn packet_info(&self, f: &Frame, k: &Key, off: &mut Option<Offsets>) -> PacketInfo {
        if !matches!(k.ip_proto(), ip_proto::ICMP | ip_proto::ICMPV6) {
            return PacketInfo::default();
        }
        match self.offsets(f, k, off) {
            Some(o) => icmp::packet_info(self.pool.data(f), &o),
            None => PacketInfo::default(),
        }
    }

    /// One `ct` action: sets the key's ct_* fields and, under `nat`, rewrites
    /// the packet as its connection says. False when a rewrite failed.
    pub(super) fn ct_action(
        &mut self,
        f: &mut Frame,
        k: &mut Key,
        off: &mut Option<Offsets>,
        req: &CtRequest<'_>,
        now: u64,
    ) -> bool {
        let info = self.packet_info(f, k, off);
        // As received, for the XDP fast path (worker/fastpath_nat.rs).
        let pre = (req.nat.is_some() && self.nat_wants(k)).then_some(*k);
        let v = self.conntrack.process(k, req, &info, now);
        if req.nat.is_none() {
            return true;
        }
        let ok = self.apply_verdict(f, k, off, &v);
        if let Some(pre) = pre
            && ok
        {
            self.nat_note(&pre, k, &v);
        }
        ok
    }

    fn apply_verdict(
        &mut self,
        f: &mut Frame,
        k: &mut Key,
        off: &mut Option<Offsets>,
        v: &Verdict,
    ) -> bool {
        if v.hairpin {
            reg::SVC_FLAGS.set_masked(
                k,
                u128::from(svc_flags::HAIRPIN),
                u128::from(svc_flags::HAIRPIN),
            );
        }
        if v.xlate.is_empty() && v.inner.is_empty() {
            return true;
        }
        let Some(o) = self.offsets(f, k, off) else {
            return false;
        };
        // The endpoint's MAC when it is a local pod: towards it (original
        // direction), or back to it (the reply of a hairpin connection).
        let mut macs = None;
        if v.service != 0 && (!v.reply || v.hairpin) {
            let lbt = self.links.services.load();
            if let Some(fe) = lbt.get(&v.service)
                && let Some(be) = fe.backends.get(v.backend as usize)
                && let Some(mac) = be.mac
            {
                macs = Some((mac, fe.gateway_mac));
            }
        }
        let data = self.pool.data_mut(f);
        if !v.inner.is_empty() && icmp::rewrite_inner(data, &o, &v.inner).is_none() {
            return false;
        }
        if !xlate(data, &o, k, &v.xlate) {
            return false;
        }
        if let Some((dst, src)) = macs {
            let ok = rewrite::set_field(data, &o, Field::EthDst, mac_u128(dst), u128::MAX, Some(k));
            if ok.is_err() {
                return false;
            }
            if let Some(s) = src
                && rewrite::set_field(data, &o, Field::EthSrc, mac_u128(s), u128::MAX, Some(k))
                    .is_err()
            {
                return false;
            }
            if src.is_some() {
                let flags = crate::flow::layout::reg::SVC_FLAGS;
                let v = flags.get(k) | u128::from(crate::flow::layout::svc_flags::ROUTED);
                flags.set(k, v);
            }
        }
        true
    }

    /// `service_lb`: pick an endpoint, commit with DNAT, rewrite.
    pub(super) fn service_lb(
        &mut self,
        f: &mut Frame,
        k: &mut Key,
        off: &mut Option<Offsets>,
        id: u32,
        zone: u16,
        now: u64,
    ) -> Result<(), DropReason> {
        let fe = match self.links.services.load().get(&id) {
            Some(fe) => fe.clone(),
            None => return Err(DropReason::Pipeline),
        };
        let info = self.packet_info(f, k, off);
        let v6 = k.eth_type() == 0x86dd;
        let (src, dst) = if v6 {
            (Field::Ipv6Src.get(k), Field::Ipv6Dst.get(k))
        } else {
            (Field::Ipv4Src.get(k), Field::Ipv4Dst.get(k))
        };
        let (sp, dp) = (Field::TpSrc.get(k) as u16, Field::TpDst.get(k) as u16);
        let h = conn_hash(src, dst, sp, dp, k.ip_proto());
        let b = fe.select(h, src, now).ok_or(DropReason::Pipeline)?;
        let be = fe
            .backends
            .get(usize::from(b))
            .ok_or(DropReason::Pipeline)?;
        let hairpin = !v6 && be.ip == src;
        // NodePort from outside the node (the node pipeline marked it in table
        // 0): source NAT to the node IP whatever the endpoint, as kube-proxy
        // masquerades it (`snat_remote` is `None` under externalTrafficPolicy
        // Local, which keeps the client's address), and the client's next-hop MAC
        // kept in the label for the replies, which leave by the uplink.
        let from_uplink = reg::SVC_FLAGS.get(k) & u128::from(svc_flags::UPLINK_IN) != 0;
        let snat = if hairpin {
            Some(u128::from(HAIRPIN_SNAT_V4))
        } else if !be.local || from_uplink {
            fe.snat_remote
        } else {
            None
        };
        let label = if from_uplink {
            ct_label::VIA_UPLINK | (Field::EthSrc.get(k) & ct_label::MAC)
        } else {
            0
        };
        let choice = LbChoice {
            service: id,
            backend: u32::from(b),
            dst: (be.ip, be.port),
            snat,
            hairpin,
            label,
        };
        let v = match self.conntrack.commit_lb(k, zone, &info, &choice, now) {
            Some(v) => {
                fe.hit(b);
                v
            }
            None => {
                // Tracked meanwhile (a retransmission on another worker) or the
                // table refused it: use what the table holds, if anything.
                let req = CtRequest {
                    zone,
                    commit: false,
                    nat: None,
                    set_mark: None,
                    set_label: None,
                };
                let v = self.conntrack.process(k, &req, &info, now);
                if v.xlate.is_empty() {
                    return Err(DropReason::ActionFailed);
                }
                v
            }
        };
        if self.apply_verdict(f, k, off, &v) {
            Ok(())
        } else {
            Err(DropReason::ActionFailed)
        }
    }
}

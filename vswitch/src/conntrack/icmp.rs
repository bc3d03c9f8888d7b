//! What conntrack reads from ICMP beyond the flow key, and the rewrite of the
//! header an ICMP error quotes. The flow key has no ICMP identifier field (and
//! adding one would widen every key), so both are read here through the
//! extracted [`Offsets`].

use super::tuple::{Tuple, addr_words};
use super::{PacketInfo, Xlate};
use crate::flow::extract::{L4, Offsets};
use crate::flow::field::ip_proto;
use crate::flow::rewrite::incremental_csum_update;

fn u16_at(f: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*f.get(at)?, *f.get(at + 1)?]))
}

/// The ICMP echo id and the quoted tuple of an ICMP error, if any.
pub fn packet_info(frame: &[u8], off: &Offsets) -> PacketInfo {
    let l4 = off.l4 as usize;
    let (echo, error) = match off.l4_kind {
        L4::Icmp => (&[0u8, 8][..], &[3u8, 11, 12][..]),
        L4::Icmpv6 => (&[128u8, 129][..], &[1u8, 2, 3, 4][..]),
        _ => return PacketInfo::default(),
    };
    let Some(&ty) = frame.get(l4) else {
        return PacketInfo::default();
    };
    let end = (off.end as usize).min(frame.len());
    let frame = &frame[..end];
    if echo.contains(&ty) {
        return PacketInfo {
            icmp_id: u16_at(frame, l4 + 4),
            icmp_inner: None,
        };
    }
    if error.contains(&ty) {
        return PacketInfo {
            icmp_id: None,
            icmp_inner: inner_tuple(frame, l4 + 8, off.l4_kind == L4::Icmpv6).map(|(t, _)| t),
        };
    }
    PacketInfo::default()
}

/// The quoted header at `at`: its tuple and where its L4 header starts.
fn inner_tuple(f: &[u8], at: usize, v6: bool) -> Option<(Tuple, usize)> {
    let (src, dst, proto, l4) = if v6 {
        let h = f.get(at..at + 40)?;
        if h[0] >> 4 != 6 {
            return None;
        }
        let a = |o: usize| -> u128 {
            let mut b = [0u8; 16];
            b.copy_from_slice(&h[o..o + 16]);
            u128::from_be_bytes(b)
        };
        (a(8), a(24), h[6], at + 40)
    } else {
        let h = f.get(at..at + 20)?;
        if h[0] >> 4 != 4 {
            return None;
        }
        let ihl = usize::from(h[0] & 0x0f) * 4;
        let a = |o: usize| u128::from(u32::from_be_bytes([h[o], h[o + 1], h[o + 2], h[o + 3]]));
        (a(12), a(16), h[9], at + ihl)
    };
    let (sport, dport) = match proto {
        ip_proto::TCP | ip_proto::UDP | ip_proto::SCTP => (u16_at(f, l4)?, u16_at(f, l4 + 2)?),
        ip_proto::ICMP | ip_proto::ICMPV6 => {
            let id = u16_at(f, l4 + 4)?;
            (id, id)
        }
        _ => return None,
    };
    Some((
        Tuple {
            src: addr_words(src),
            dst: addr_words(dst),
            sport,
            dport,
            zone: 0,
            proto,
            v6,
        },
        l4,
    ))
}

/// Writes `new` at `at` and fixes the checksum at `csum` (covering data that
/// starts at `start`; `at - start` must be even).
fn patch(f: &mut [u8], at: usize, new: &[u8], csum: usize, start: usize) -> Option<()> {
    if !(at - start).is_multiple_of(2) || new.len() > 16 {
        return None;
    }
    let mut old = [0u8; 16];
    old[..new.len()].copy_from_slice(f.get(at..at + new.len())?);
    let c = u16_at(f, csum)?;
    f.get_mut(at..at + new.len())?.copy_from_slice(new);
    let c2 = incremental_csum_update(c, &old[..new.len()], new);
    f.get_mut(csum..csum + 2)?
        .copy_from_slice(&c2.to_be_bytes());
    Some(())
}

/// Rewrites the quoted header of the ICMP error in `frame` by `x` (addresses;
/// ports for TCP/UDP/SCTP), keeping the quoted IPv4 header checksum and the ICMP
/// checksum right. The quoted L4 checksum is left alone (most errors quote only
/// 8 bytes of it, and receivers do not check it).
pub fn rewrite_inner(frame: &mut [u8], off: &Offsets, x: &Xlate) -> Option<()> {
    let l4 = off.l4 as usize;
    let v6 = off.l4_kind == L4::Icmpv6;
    let at = l4 + 8;
    let (t, inner_l4) = inner_tuple(frame, at, v6)?;
    let icmp_csum = l4 + 2;
    let ports = matches!(t.proto, ip_proto::TCP | ip_proto::UDP | ip_proto::SCTP);
    for (which, val) in [(0usize, x.src), (1, x.dst)] {
        let Some((addr, port)) = val else { continue };
        if v6 {
            let o = at + if which == 0 { 8 } else { 24 };
            patch(frame, o, &addr.to_be_bytes(), icmp_csum, l4)?;
        } else {
            let o = at + if which == 0 { 12 } else { 16 };
            // The quoted IPv4 header checksum first, then the ICMP checksum
            // for both changed fields.
            let old_ip_csum = u16_at(frame, at + 10)?;
            let mut old = [0u8; 4];
            old.copy_from_slice(frame.get(o..o + 4)?);
            let new = (addr as u32).to_be_bytes();
            let ip_csum = incremental_csum_update(old_ip_csum, &old, &new);
            patch(frame, o, &new, icmp_csum, l4)?;
            patch(frame, at + 10, &ip_csum.to_be_bytes(), icmp_csum, l4)?;
        }
        if ports {
            let o = inner_l4 + if which == 0 { 0 } else { 2 };
            patch(frame, o, &port.to_be_bytes(), icmp_csum, l4)?;
        }
    }
    Some(())
}

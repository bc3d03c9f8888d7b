//! Hand-built Ethernet frames, valid and deliberately broken, for injecting through a
//! packet socket. Written out byte by byte (not with a packet library) so that a broken
//! frame is broken in exactly the way its label says.

use crate::{Result, err};
use std::net::Ipv4Addr;

pub const ETH_HLEN: usize = 14;
pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_VLAN: u16 = 0x8100;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.trim().split(':');
    for b in &mut mac {
        let p = parts.next().ok_or_else(|| err!("bad MAC '{s}'"))?;
        *b = u8::from_str_radix(p, 16).map_err(|_| err!("bad MAC '{s}'"))?;
    }
    if parts.next().is_some() {
        return Err(err!("bad MAC '{s}'"));
    }
    Ok(mac)
}

/// Ethernet header + payload, no padding (veth needs none, and a runt must stay a runt).
pub fn ethernet(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(ETH_HLEN + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// The Internet checksum (RFC 1071).
pub fn inet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in data.chunks(2) {
        let w = match c {
            [a, b] => u16::from_be_bytes([*a, *b]),
            [a] => u16::from_be_bytes([*a, 0]),
            _ => 0,
        };
        sum += u32::from(w);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A 20-byte IPv4 header with a correct checksum.
pub fn ipv4_header(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, total_len: u16) -> [u8; 20] {
    let mut h = [0u8; 20];
    h[0] = 0x45;
    h[2..4].copy_from_slice(&total_len.to_be_bytes());
    h[6] = 0x40; // DF: never fragmented by anyone
    h[8] = 64;
    h[9] = proto;
    h[12..16].copy_from_slice(&src.octets());
    h[16..20].copy_from_slice(&dst.octets());
    let c = inet_checksum(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h
}

/// A valid Ethernet/IPv4/UDP frame (UDP checksum 0 = none, allowed for IPv4).
pub fn udp_frame(
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ports: (u16, u16),
    payload: &[u8],
) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let total = 20 + udp_len;
    let mut p = Vec::with_capacity(total);
    p.extend_from_slice(&ipv4_header(src, dst, 17, total as u16));
    p.extend_from_slice(&ports.0.to_be_bytes());
    p.extend_from_slice(&ports.1.to_be_bytes());
    p.extend_from_slice(&(udp_len as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    ethernet(dst_mac, src_mac, ETHERTYPE_IPV4, &p)
}

/// Frames whose headers are cut short or lie about their lengths, each with a label.
/// Source MAC is valid, so each should be counted as `malformed`, not `bad_src_mac`.
/// (Frames shorter than 14 bytes cannot be sent through a packet socket on Ethernet:
/// the kernel refuses them, see `dev_validate_header`.)
pub fn malformed_frames(
    dst: [u8; 6],
    src: [u8; 6],
    sip: Ipv4Addr,
    dip: Ipv4Addr,
) -> Vec<(&'static str, Vec<u8>)> {
    let good = udp_frame(dst, src, sip, dip, (4000, 4001), &[0x55; 32]);
    let ip = |f: &mut Vec<u8>| {
        // Recompute the IPv4 header checksum so that only the intended fault remains.
        f[ETH_HLEN + 10] = 0;
        f[ETH_HLEN + 11] = 0;
        let c = inet_checksum(&f[ETH_HLEN..ETH_HLEN + 20]);
        f[ETH_HLEN + 10..ETH_HLEN + 12].copy_from_slice(&c.to_be_bytes());
    };
    let mut out = Vec::new();
    out.push((
        "ipv4 ethertype, no ip header",
        ethernet(dst, src, ETHERTYPE_IPV4, &[]),
    ));
    out.push((
        "ipv4 header cut at 10 bytes",
        good[..ETH_HLEN + 10].to_vec(),
    ));
    let mut f = good.clone();
    f[ETH_HLEN] = 0x44; // IHL 4: shorter than the minimum header
    ip(&mut f);
    out.push(("ipv4 ihl 4", f));
    let mut f = good[..ETH_HLEN + 28].to_vec();
    f[ETH_HLEN] = 0x4f; // IHL 15 = 60 bytes, frame has 28
    f[ETH_HLEN + 2..ETH_HLEN + 4].copy_from_slice(&28u16.to_be_bytes());
    ip(&mut f);
    out.push(("ipv4 ihl beyond frame", f));
    let mut f = good.clone();
    f[ETH_HLEN + 2..ETH_HLEN + 4].copy_from_slice(&1400u16.to_be_bytes());
    ip(&mut f);
    out.push(("ipv4 total length beyond frame", f));
    let mut f = good.clone();
    f[ETH_HLEN + 2..ETH_HLEN + 4].copy_from_slice(&10u16.to_be_bytes());
    ip(&mut f);
    out.push(("ipv4 total length below header", f));
    let mut f = good.clone();
    f[ETH_HLEN] = 0x65; // version 6 under an IPv4 ethertype
    out.push(("ipv4 ethertype, version 6", f));
    let mut f = good[..ETH_HLEN + 24].to_vec();
    f[ETH_HLEN + 2..ETH_HLEN + 4].copy_from_slice(&24u16.to_be_bytes());
    ip(&mut f);
    out.push(("udp header cut", f));
    let mut tcp = ipv4_header(sip, dip, 6, 30).to_vec();
    tcp.extend_from_slice(&[0x0f, 0xa0, 0x0f, 0xa1, 0, 0, 0, 1, 0, 0]); // 10 of 20 bytes
    out.push(("tcp header cut", ethernet(dst, src, ETHERTYPE_IPV4, &tcp)));
    let mut tcp = ipv4_header(sip, dip, 6, 40).to_vec();
    let mut th = [0u8; 20];
    th[12] = 0xf0; // data offset 15 words = 60 bytes, segment has 20
    th[13] = 0x02; // SYN
    tcp.extend_from_slice(&th);
    out.push((
        "tcp data offset beyond segment",
        ethernet(dst, src, ETHERTYPE_IPV4, &tcp),
    ));
    out.push((
        "arp cut",
        ethernet(dst, src, ETHERTYPE_ARP, &[0, 1, 8, 0, 6, 4, 0, 1, 0, 0]),
    ));
    out.push(("vlan tag cut", ethernet(dst, src, ETHERTYPE_VLAN, &[0, 5])));
    out.push((
        "ipv6 header cut",
        ethernet(dst, src, ETHERTYPE_IPV6, &[0x60, 0, 0, 0, 0, 8, 17, 64]),
    ));
    out
}

/// Valid untagged IPv4/UDP frames carrying `mtu + 1 ..= mtu + 4` bytes of IP packet:
/// too big for a port with that MTU, yet small enough (<= mtu + 18) that the kernel's
/// veth still delivers them to the switch side (`is_skb_forwardable` allows room for a
/// VLAN tag). The sending interface needs an MTU of at least `mtu + 4`.
pub fn oversize_frames(
    dst: [u8; 6],
    src: [u8; 6],
    sip: Ipv4Addr,
    dip: Ipv4Addr,
    mtu: usize,
) -> Vec<Vec<u8>> {
    (1..=4)
        .map(|extra| {
            udp_frame(
                dst,
                src,
                sip,
                dip,
                (4000, 4002),
                &vec![0xaa; mtu + extra - 28],
            )
        })
        .collect()
}

/// `count` frames of pseudo-random bytes (14 to 300 bytes; fixed seed, so a failure
/// can be replayed).
pub fn garbage_frames(seed: u64, count: usize) -> Vec<Vec<u8>> {
    let mut x = seed | 1;
    let mut next = move || {
        // xorshift64: good enough for junk, no dependency.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..count)
        .map(|_| {
            let len = ETH_HLEN + (next() % 287) as usize;
            (0..len).map(|_| next() as u8).collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const B: [u8; 6] = [2, 0, 0, 0, 0, 2];

    #[test]
    fn mac_round_trip() {
        assert_eq!(
            parse_mac("02:00:00:0a:ff:01").expect("mac"),
            [2, 0, 0, 0x0a, 0xff, 1]
        );
        assert!(parse_mac("02:00:00:0a:ff").is_err());
        assert!(parse_mac("02:00:00:0a:ff:01:02").is_err());
        assert!(parse_mac("zz:00:00:0a:ff:01").is_err());
    }

    #[test]
    fn udp_frame_is_valid() {
        let f = udp_frame(
            A,
            B,
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 2),
            (1, 2),
            b"hi",
        );
        assert_eq!(f.len(), 14 + 20 + 8 + 2);
        // A correct header checksums to zero.
        assert_eq!(inet_checksum(&f[14..34]), 0);
        assert_eq!(u16::from_be_bytes([f[16], f[17]]), 30);
    }

    #[test]
    fn broken_frames_are_broken() {
        let fs = malformed_frames(A, B, Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        assert!(fs.len() >= 10);
        for (label, f) in &fs {
            assert!(f.len() >= ETH_HLEN, "{label}");
            assert_eq!(&f[6..12], &B, "{label}: source MAC must stay valid");
        }
        let o = oversize_frames(
            A,
            B,
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 2),
            1500,
        );
        assert_eq!(
            o.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![1515, 1516, 1517, 1518]
        );
        let g = garbage_frames(7, 50);
        assert_eq!(g.len(), 50);
        assert!(g.iter().all(|f| (ETH_HLEN..=300).contains(&f.len())));
        assert_eq!(g, garbage_frames(7, 50));
    }
}

//! `punt:reject`: what kube-proxy's REJECT does for a service without endpoints.
//! TCP gets a RST (so `connect` fails at once with "connection refused"), other
//! protocols an ICMP (IPv4) or ICMPv6 (IPv6) port unreachable quoting the
//! packet. The request frame is rewritten into the answer in place (it may
//! grow; the pool's frames have room). IPv6 packets with extension headers
//! before the transport header are not answered (dropped, counted).

const ETH_IPV4: u16 = 0x0800;
const ETH_IPV6: u16 = 0x86dd;
/// The IPv6 minimum MTU: an ICMPv6 error quotes as much as fits in it (RFC 4443).
const IPV6_MIN_MTU: usize = 1280;

fn sum16(data: &[u8], mut sum: u32) -> u32 {
    for c in data.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    sum
}

fn fold(mut sum: u32) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn ipv4_header(b: &mut [u8], total: u16, proto: u8, src: [u8; 4], dst: [u8; 4]) {
    b[0] = 0x45;
    b[1] = 0;
    b[2..4].copy_from_slice(&total.to_be_bytes());
    b[4..8].copy_from_slice(&[0, 0, 0x40, 0]); // id 0, DF
    b[8] = 64;
    b[9] = proto;
    b[10..12].copy_from_slice(&[0, 0]);
    b[12..16].copy_from_slice(&src);
    b[16..20].copy_from_slice(&dst);
    let c = fold(sum16(&b[..20], 0));
    b[10..12].copy_from_slice(&c.to_be_bytes());
}

/// Rewrites the frame of `len` bytes in `buf` into its rejection; returns the
/// new length, or `None` when the packet gets no answer.
pub fn reject(buf: &mut [u8], len: usize) -> Option<usize> {
    let frame = buf.get(..len)?;
    let (o, et) = match u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]) {
        0x8100 | 0x88a8 => (18, u16::from_be_bytes([*frame.get(16)?, *frame.get(17)?])),
        et => (14, et),
    };
    if et == ETH_IPV6 {
        let n = reject_v6(buf, len, o)?;
        let (d, s) = buf.split_at_mut(6);
        d[..6].swap_with_slice(&mut s[..6]);
        return Some(n);
    }
    if et != ETH_IPV4 {
        return None;
    }
    let ihl = usize::from(*frame.get(o)? & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([*frame.get(o + 2)?, *frame.get(o + 3)?]));
    if ihl < 20 || total < ihl || o + total > len {
        return None;
    }
    // Never answer a fragment after the first.
    if u16::from_be_bytes([frame[o + 6], frame[o + 7]]) & 0x1fff != 0 {
        return None;
    }
    let proto = frame[o + 9];
    let mut src = [0u8; 4];
    let mut dst = [0u8; 4];
    src.copy_from_slice(&frame[o + 12..o + 16]);
    dst.copy_from_slice(&frame[o + 16..o + 20]);
    let l4 = o + ihl;
    let new_len = if proto == 6 {
        tcp_rst(buf, o, l4, total - ihl, src, dst)?
    } else {
        port_unreachable(buf, o, ihl, total, src, dst)?
    };
    // Back to the sender.
    let (d, s) = buf.split_at_mut(6);
    d[..6].swap_with_slice(&mut s[..6]);
    Some(new_len)
}

/// A RST's source port, destination port, sequence and acknowledgment
/// numbers and flags.
type RstFields = ([u8; 2], [u8; 2], u32, u32, u8);

/// What a RST answering the TCP header `t` (of a segment with `l4_len` bytes
/// of TCP) carries: ports swapped, sequence and acknowledgment numbers, flags.
/// `None` for a RST (never answered) or a bad header length.
fn rst_answer(t: &[u8], l4_len: usize) -> Option<RstFields> {
    let t = t.get(..20)?;
    let thl = usize::from(t[12] >> 4) * 4;
    let flags = t[13];
    if flags & 0x04 != 0 || thl < 20 || thl > l4_len {
        return None;
    }
    let seq = u32::from_be_bytes([t[4], t[5], t[6], t[7]]);
    let ack = u32::from_be_bytes([t[8], t[9], t[10], t[11]]);
    let payload = (l4_len - thl) as u32;
    let (new_seq, new_ack, new_flags) = if flags & 0x10 != 0 {
        (ack, 0, 0x04)
    } else {
        let syn_fin = u32::from(flags & 0x02 != 0) + u32::from(flags & 0x01 != 0);
        (0, seq.wrapping_add(payload + syn_fin), 0x14)
    };
    Some(([t[2], t[3]], [t[0], t[1]], new_seq, new_ack, new_flags))
}

/// Sum of the IPv6 pseudo-header (RFC 8200 8.1).
fn pseudo_v6(src: &[u8], dst: &[u8], len: usize, next: u8) -> u32 {
    let len = len as u32;
    sum16(dst, sum16(src, 0)) + (len >> 16) + (len & 0xffff) + u32::from(next)
}

fn ipv6_header(b: &mut [u8], payload: usize, next: u8, src: [u8; 16], dst: [u8; 16]) {
    b[0..4].copy_from_slice(&[0x60, 0, 0, 0]);
    b[4..6].copy_from_slice(&(payload as u16).to_be_bytes());
    b[6] = next;
    b[7] = 64;
    b[8..24].copy_from_slice(&src);
    b[24..40].copy_from_slice(&dst);
}

/// The IPv6 answer at `o`: a RST for TCP, ICMPv6 port unreachable for UDP and
/// SCTP; nothing for other next headers (extension headers included).
fn reject_v6(buf: &mut [u8], len: usize, o: usize) -> Option<usize> {
    let ip = buf.get(o..o + 40)?;
    if ip[0] >> 4 != 6 {
        return None;
    }
    let plen = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
    let next = ip[6];
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    src.copy_from_slice(&ip[8..24]);
    dst.copy_from_slice(&ip[24..40]);
    // Never to the unspecified or a multicast source.
    if src == [0; 16] || src[0] == 0xff || o + 40 + plen > len {
        return None;
    }
    let l4 = o + 40;
    match next {
        6 => {
            let (sport, dport, seq, ack, flags) = rst_answer(buf.get(l4..l4 + plen)?, plen)?;
            ipv6_header(buf.get_mut(o..l4)?, 20, 6, dst, src);
            let t = buf.get_mut(l4..l4 + 20)?;
            t[0..2].copy_from_slice(&sport);
            t[2..4].copy_from_slice(&dport);
            t[4..8].copy_from_slice(&seq.to_be_bytes());
            t[8..12].copy_from_slice(&ack.to_be_bytes());
            t[12] = 5 << 4;
            t[13] = flags;
            t[14..20].copy_from_slice(&[0; 6]);
            let c = fold(sum16(t, pseudo_v6(&dst, &src, 20, 6)));
            t[16..18].copy_from_slice(&c.to_be_bytes());
            Some(l4 + 20)
        }
        17 | 132 => {
            // Quote the invoking packet, as much as fits in the minimum MTU.
            let quoted = (40 + plen).min(IPV6_MIN_MTU - 40 - 8);
            let icmp = l4;
            let end = icmp + 8 + quoted;
            if buf.len() < end {
                return None;
            }
            buf.copy_within(o..o + quoted, icmp + 8);
            ipv6_header(&mut buf[o..l4], 8 + quoted, 58, dst, src);
            let m = &mut buf[icmp..end];
            m[0..8].copy_from_slice(&[1, 4, 0, 0, 0, 0, 0, 0]);
            let c = fold(sum16(m, pseudo_v6(&dst, &src, 8 + quoted, 58)));
            m[2..4].copy_from_slice(&c.to_be_bytes());
            Some(end)
        }
        _ => None,
    }
}

fn tcp_rst(
    buf: &mut [u8],
    o: usize,
    l4: usize,
    l4_len: usize,
    src: [u8; 4],
    dst: [u8; 4],
) -> Option<usize> {
    // Never answer a RST.
    let (new_sport, new_dport, new_seq, new_ack, new_flags) =
        rst_answer(buf.get(l4..l4 + 20)?, l4_len)?;
    let l4 = o + 20;
    // The answer carries no IP options: the TCP header moves to o + 20.
    ipv4_header(buf.get_mut(o..o + 20)?, 40, 6, dst, src);
    let t = buf.get_mut(l4..l4 + 20)?;
    t[0..2].copy_from_slice(&new_sport);
    t[2..4].copy_from_slice(&new_dport);
    t[4..8].copy_from_slice(&new_seq.to_be_bytes());
    t[8..12].copy_from_slice(&new_ack.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = new_flags;
    t[14..20].copy_from_slice(&[0; 6]);
    let mut pseudo = [0u8; 12];
    pseudo[0..4].copy_from_slice(&dst);
    pseudo[4..8].copy_from_slice(&src);
    pseudo[9] = 6;
    pseudo[10..12].copy_from_slice(&20u16.to_be_bytes());
    let c = fold(sum16(t, sum16(&pseudo, 0)));
    t[16..18].copy_from_slice(&c.to_be_bytes());
    Some(l4 + 20)
}

fn port_unreachable(
    buf: &mut [u8],
    o: usize,
    ihl: usize,
    total: usize,
    src: [u8; 4],
    dst: [u8; 4],
) -> Option<usize> {
    // Quote the IP header and the first 8 bytes of its payload (RFC 792).
    let quoted = ihl + (total - ihl).min(8);
    let icmp = o + 20;
    let end = icmp + 8 + quoted;
    if buf.len() < end {
        return None;
    }
    buf.copy_within(o..o + quoted, icmp + 8);
    ipv4_header(&mut buf[o..o + 20], (20 + 8 + quoted) as u16, 1, dst, src);
    let m = &mut buf[icmp..end];
    m[0..8].copy_from_slice(&[3, 3, 0, 0, 0, 0, 0, 0]);
    let c = fold(sum16(m, 0));
    m[2..4].copy_from_slice(&c.to_be_bytes());
    Some(end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};

    #[test]
    fn syn_gets_rst_ack_with_valid_checksums() {
        let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 0, 0, 1], [10, 96, 0, 1], 64)
            .tcp(40000, 80, 1000, 64000)
            .syn();
        let mut f = Vec::new();
        b.write(&mut f, &[]).expect("build");
        let mut buf = f.clone();
        buf.resize(2048, 0);
        let n = reject(&mut buf, f.len()).expect("answered");
        let p = SlicedPacket::from_ethernet(&buf[..n]).expect("parse");
        let Some(NetSlice::Ipv4(ip)) = &p.net else {
            panic!("ipv4")
        };
        assert_eq!(ip.header().source(), [10, 96, 0, 1]);
        assert_eq!(ip.header().destination(), [10, 0, 0, 1]);
        let Some(TransportSlice::Tcp(t)) = &p.transport else {
            panic!("tcp")
        };
        assert!(t.rst() && t.ack());
        assert_eq!(t.acknowledgment_number(), 1001);
        assert_eq!(t.source_port(), 80);
        let want = t
            .to_header()
            .calc_checksum_ipv4(&ip.header().to_header(), &[])
            .expect("csum");
        assert_eq!(t.checksum(), want);
        assert_eq!(&buf[0..6], &[2, 0, 0, 0, 0, 1]);
    }

    #[test]
    fn ipv6_syn_gets_rst_ack_udp_gets_icmpv6_port_unreachable() {
        let c6 = [0xfd00, 0, 0, 0, 0, 0, 0, 0x10u16];
        let vip = [0xfd00, 0, 0, 0, 0, 0, 0x96, 1u16];
        let oct = |w: [u16; 8]| {
            let mut b = [0u8; 16];
            for (i, x) in w.iter().enumerate() {
                b[2 * i..2 * i + 2].copy_from_slice(&x.to_be_bytes());
            }
            b
        };
        let (client, service) = (oct(c6), oct(vip));
        // TCP SYN with 3 bytes of data: RST+ACK acknowledging SYN + data.
        let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv6(client, service, 64)
            .tcp(40000, 80, 1000, 64000)
            .syn();
        let mut f = Vec::new();
        b.write(&mut f, b"abc").expect("build");
        let mut buf = f.clone();
        buf.resize(2048, 0);
        let n = reject(&mut buf, f.len()).expect("answered");
        let p = SlicedPacket::from_ethernet(&buf[..n]).expect("parse");
        let Some(NetSlice::Ipv6(ip)) = &p.net else {
            panic!("ipv6")
        };
        assert_eq!(ip.header().source(), service);
        assert_eq!(ip.header().destination(), client);
        let Some(TransportSlice::Tcp(t)) = &p.transport else {
            panic!("tcp")
        };
        assert!(t.rst() && t.ack() && !t.syn());
        assert_eq!(t.acknowledgment_number(), 1004);
        assert_eq!((t.source_port(), t.destination_port()), (80, 40000));
        let want = t
            .to_header()
            .calc_checksum_ipv6(&ip.header().to_header(), &[])
            .expect("csum");
        assert_eq!(t.checksum(), want);
        assert_eq!(&buf[0..6], &[2, 0, 0, 0, 0, 1], "back to the sender");
        assert_eq!(&buf[6..12], &[2, 0, 0, 0, 0, 2]);
        // UDP: ICMPv6 destination unreachable, port unreachable (1/4),
        // quoting the whole (small) packet.
        let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv6(client, service, 64)
            .udp(5000, 53);
        let mut f = Vec::new();
        b.write(&mut f, b"hello").expect("build");
        let mut buf = f.clone();
        buf.resize(2048, 0);
        let n = reject(&mut buf, f.len()).expect("answered");
        let p = SlicedPacket::from_ethernet(&buf[..n]).expect("parse");
        let Some(NetSlice::Ipv6(ip)) = &p.net else {
            panic!("ipv6")
        };
        assert_eq!(ip.header().source(), service);
        assert_eq!(ip.header().destination(), client);
        let Some(TransportSlice::Icmpv6(i)) = &p.transport else {
            panic!("icmpv6")
        };
        assert_eq!((i.type_u8(), i.code_u8()), (1, 4));
        let sum = pseudo_v6(&service, &client, i.slice().len(), 58);
        assert_eq!(fold(sum16(i.slice(), sum)), 0, "ICMPv6 checksum verifies");
        assert_eq!(i.payload(), &f[14..], "the invoking packet, quoted");
        // A large datagram: the answer stays within the minimum MTU.
        let b = PacketBuilder::ethernet2([2; 6], [3; 6])
            .ipv6(client, service, 64)
            .udp(5000, 53);
        let mut f = Vec::new();
        b.write(&mut f, &[7u8; 1400]).expect("build");
        let l = f.len();
        f.resize(2048, 0);
        let n = reject(&mut f, l).expect("answered");
        assert_eq!(n - 14, IPV6_MIN_MTU);
        // A RST, an ICMPv6 message and a truncated packet get nothing.
        let b = PacketBuilder::ethernet2([2; 6], [3; 6])
            .ipv6(client, service, 64)
            .tcp(1, 2, 3, 4)
            .rst();
        let mut f = Vec::new();
        b.write(&mut f, &[]).expect("build");
        let l = f.len();
        f.resize(2048, 0);
        assert!(reject(&mut f, l).is_none());
        let b = PacketBuilder::ethernet2([2; 6], [3; 6])
            .ipv6(client, service, 64)
            .icmpv6_echo_request(1, 1);
        let mut f = Vec::new();
        b.write(&mut f, &[]).expect("build");
        let l = f.len();
        f.resize(2048, 0);
        assert!(reject(&mut f, l).is_none());
        let b = PacketBuilder::ethernet2([2; 6], [3; 6])
            .ipv6(client, service, 64)
            .udp(5000, 53);
        let mut f = Vec::new();
        b.write(&mut f, b"hello").expect("build");
        f.resize(2048, 0);
        assert!(
            reject(&mut f, 60).is_none(),
            "shorter than its payload length"
        );
    }

    #[test]
    fn udp_gets_port_unreachable() {
        let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 0, 0, 1], [10, 96, 0, 1], 64)
            .udp(5000, 53);
        let mut f = Vec::new();
        b.write(&mut f, b"hello").expect("build");
        let mut buf = f.clone();
        buf.resize(2048, 0);
        let n = reject(&mut buf, f.len()).expect("answered");
        let p = SlicedPacket::from_ethernet(&buf[..n]).expect("parse");
        let Some(TransportSlice::Icmpv4(i)) = &p.transport else {
            panic!("icmp")
        };
        assert_eq!(i.type_u8(), 3);
        assert_eq!(i.code_u8(), 3);
        assert_eq!(fold(sum16(i.slice(), 0)), 0, "ICMP checksum verifies");
        // The quote is the original IP header and UDP header.
        assert_eq!(i.payload().len(), 28);
        assert_eq!(&i.payload()[12..16], &[10, 0, 0, 1]);
        // A RST is never answered.
        let b = PacketBuilder::ethernet2([2; 6], [3; 6])
            .ipv4([1, 1, 1, 1], [2, 2, 2, 2], 64)
            .tcp(1, 2, 3, 4)
            .rst();
        let mut f = Vec::new();
        b.write(&mut f, &[]).expect("build");
        let l = f.len();
        f.resize(2048, 0);
        assert!(reject(&mut f, l).is_none());
    }
}

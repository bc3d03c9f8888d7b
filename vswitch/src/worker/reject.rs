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
    let new_len = match et {
        ETH_IPV4 => reject_v4(buf, len, o)?,
        ETH_IPV6 => reject_v6(buf, len, o)?,
        _ => return None,
    };
    // Back to the sender.
    let (d, s) = buf.split_at_mut(6);
    d[..6].swap_with_slice(&mut s[..6]);
    Some(new_len)
}

/// The answer's IP layer, by address family: its source (the request's
/// destination) and destination (the request's source).
#[derive(Clone, Copy)]
enum Answer {
    V4 { src: [u8; 4], dst: [u8; 4] },
    V6 { src: [u8; 16], dst: [u8; 16] },
}

impl Answer {
    /// The answer's IP header carries no options or extension headers.
    fn header_len(self) -> usize {
        match self {
            Answer::V4 { .. } => 20,
            Answer::V6 { .. } => 40,
        }
    }

    /// Writes the IP header for `l4_len` bytes of protocol `proto` after it.
    fn write_header(self, b: &mut [u8], l4_len: usize, proto: u8) {
        match self {
            Answer::V4 { src, dst } => ipv4_header(b, (20 + l4_len) as u16, proto, src, dst),
            Answer::V6 { src, dst } => ipv6_header(b, l4_len, proto, src, dst),
        }
    }

    /// The pseudo-header sum a TCP checksum over `l4_len` bytes starts from.
    fn pseudo(self, l4_len: usize, proto: u8) -> u32 {
        match self {
            Answer::V4 { src, dst } => pseudo_header(&src, &dst, l4_len, proto),
            Answer::V6 { src, dst } => pseudo_header(&src, &dst, l4_len, proto),
        }
    }

    /// Port unreachable: the ICMP protocol number, its type and code, and the
    /// sum its checksum over `len` bytes starts from (ICMPv6 covers a
    /// pseudo-header, ICMP does not).
    fn unreachable(self, len: usize) -> (u8, u8, u8, u32) {
        match self {
            Answer::V4 { .. } => (1, 3, 3, 0),
            Answer::V6 { .. } => (58, 1, 4, self.pseudo(len, 58)),
        }
    }
}

/// The IPv4 answer at `o`: a RST for TCP, ICMP port unreachable otherwise.
fn reject_v4(buf: &mut [u8], len: usize, o: usize) -> Option<usize> {
    let frame = buf.get(..len)?;
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
    let ip = Answer::V4 { src: dst, dst: src };
    if proto == 6 {
        tcp_rst(buf, o, o + ihl, total - ihl, ip)
    } else {
        // Quote the IP header and the first 8 bytes of its payload (RFC 792).
        port_unreachable(buf, o, ihl + (total - ihl).min(8), ip)
    }
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

/// Sum of the pseudo-header over `src`, `dst`, the upper-layer length and
/// protocol: IPv6's (RFC 8200 8.1), and with 4-byte addresses IPv4's (RFC
/// 793; the one's-complement sum does not depend on the fields' order).
fn pseudo_header(src: &[u8], dst: &[u8], len: usize, next: u8) -> u32 {
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
    let ip = Answer::V6 { src: dst, dst: src };
    match next {
        6 => tcp_rst(buf, o, o + 40, plen, ip),
        // Quote the invoking packet, as much as fits in the minimum MTU.
        17 | 132 => port_unreachable(buf, o, (40 + plen).min(IPV6_MIN_MTU - 40 - 8), ip),
        _ => None,
    }
}

/// Rewrites the TCP segment at `l4` (`l4_len` bytes of TCP) of the packet at
/// `o` into the RST answering it; never answers a RST.
fn tcp_rst(buf: &mut [u8], o: usize, l4: usize, l4_len: usize, ip: Answer) -> Option<usize> {
    let (new_sport, new_dport, new_seq, new_ack, new_flags) =
        rst_answer(buf.get(l4..l4 + 20)?, l4_len)?;
    // The TCP header moves to just after the answer's fixed IP header.
    let l4 = o + ip.header_len();
    ip.write_header(buf.get_mut(o..l4)?, 20, 6);
    let t = buf.get_mut(l4..l4 + 20)?;
    t[0..2].copy_from_slice(&new_sport);
    t[2..4].copy_from_slice(&new_dport);
    t[4..8].copy_from_slice(&new_seq.to_be_bytes());
    t[8..12].copy_from_slice(&new_ack.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = new_flags;
    t[14..20].copy_from_slice(&[0; 6]);
    let c = fold(sum16(t, ip.pseudo(20, 6)));
    t[16..18].copy_from_slice(&c.to_be_bytes());
    Some(l4 + 20)
}

/// Rewrites the packet at `o` into the port unreachable quoting its first
/// `quoted` bytes.
fn port_unreachable(buf: &mut [u8], o: usize, quoted: usize, ip: Answer) -> Option<usize> {
    let icmp = o + ip.header_len();
    let end = icmp + 8 + quoted;
    if buf.len() < end {
        return None;
    }
    buf.copy_within(o..o + quoted, icmp + 8);
    let (proto, kind, code, sum) = ip.unreachable(8 + quoted);
    ip.write_header(&mut buf[o..icmp], 8 + quoted, proto);
    let m = &mut buf[icmp..end];
    m[0..8].copy_from_slice(&[kind, code, 0, 0, 0, 0, 0, 0]);
    let c = fold(sum16(m, sum));
    m[2..4].copy_from_slice(&c.to_be_bytes());
    Some(end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{
        IpHeaders, NetSlice, PacketBuilder, PacketBuilderStep, SlicedPacket, TransportSlice,
    };

    /// The frame a builder step writes with `payload`.
    macro_rules! frame {
        ($b:expr, $payload:expr) => {{
            let mut f = Vec::new();
            $b.write(&mut f, $payload).expect("build");
            f
        }};
    }

    /// From `[2, 0, 0, 0, 0, 1]` to `[2, 0, 0, 0, 0, 2]`, over IPv4.
    fn v4(src: [u8; 4], dst: [u8; 4]) -> PacketBuilderStep<IpHeaders> {
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]).ipv4(src, dst, 64)
    }

    /// From `[2, 0, 0, 0, 0, 1]` to `[2, 0, 0, 0, 0, 2]`, over IPv6.
    fn v6(src: [u8; 16], dst: [u8; 16]) -> PacketBuilderStep<IpHeaders> {
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]).ipv6(src, dst, 64)
    }

    /// `f` rejected in a pool-sized buffer: the answer, or `None`.
    fn rejected(f: &[u8]) -> Option<Vec<u8>> {
        let mut buf = f.to_vec();
        buf.resize(2048, 0);
        let n = reject(&mut buf, f.len())?;
        buf.truncate(n);
        Some(buf)
    }

    #[test]
    fn syn_gets_rst_ack_with_valid_checksums() {
        let f = frame!(
            v4([10, 0, 0, 1], [10, 96, 0, 1])
                .tcp(40000, 80, 1000, 64000)
                .syn(),
            &[]
        );
        let buf = rejected(&f).expect("answered");
        let p = SlicedPacket::from_ethernet(&buf).expect("parse");
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
        let f = frame!(
            v6(client, service).tcp(40000, 80, 1000, 64000).syn(),
            b"abc"
        );
        let buf = rejected(&f).expect("answered");
        let p = SlicedPacket::from_ethernet(&buf).expect("parse");
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
        let f = frame!(v6(client, service).udp(5000, 53), b"hello");
        let buf = rejected(&f).expect("answered");
        let p = SlicedPacket::from_ethernet(&buf).expect("parse");
        let Some(NetSlice::Ipv6(ip)) = &p.net else {
            panic!("ipv6")
        };
        assert_eq!(ip.header().source(), service);
        assert_eq!(ip.header().destination(), client);
        let Some(TransportSlice::Icmpv6(i)) = &p.transport else {
            panic!("icmpv6")
        };
        assert_eq!((i.type_u8(), i.code_u8()), (1, 4));
        let sum = pseudo_header(&service, &client, i.slice().len(), 58);
        assert_eq!(fold(sum16(i.slice(), sum)), 0, "ICMPv6 checksum verifies");
        assert_eq!(i.payload(), &f[14..], "the invoking packet, quoted");
        // A large datagram: the answer stays within the minimum MTU.
        let f = frame!(v6(client, service).udp(5000, 53), &[7u8; 1400]);
        let n = rejected(&f).expect("answered").len();
        assert_eq!(n - 14, IPV6_MIN_MTU);
        // A RST, an ICMPv6 message and a truncated packet get nothing.
        let f = frame!(v6(client, service).tcp(1, 2, 3, 4).rst(), &[]);
        assert!(rejected(&f).is_none());
        let f = frame!(v6(client, service).icmpv6_echo_request(1, 1), &[]);
        assert!(rejected(&f).is_none());
        let f = frame!(v6(client, service).udp(5000, 53), b"hello");
        assert!(
            rejected(&f[..60]).is_none(),
            "shorter than its payload length"
        );
    }

    #[test]
    fn udp_gets_port_unreachable() {
        let f = frame!(v4([10, 0, 0, 1], [10, 96, 0, 1]).udp(5000, 53), b"hello");
        let buf = rejected(&f).expect("answered");
        let p = SlicedPacket::from_ethernet(&buf).expect("parse");
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
        let f = frame!(v4([1, 1, 1, 1], [2, 2, 2, 2]).tcp(1, 2, 3, 4).rst(), &[]);
        assert!(rejected(&f).is_none());
    }
}

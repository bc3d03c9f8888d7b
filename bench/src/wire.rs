//! Frames the generator sends, and the stamp the sink reads back.
//!
//! A frame is Ethernet / IPv4 or IPv6 / UDP or TCP (SYN), followed by an 18-byte
//! *stamp* and a filler pattern up to the requested size:
//!
//! ```text
//! stamp offset  0..4   magic "VSB1" (big endian)   the same magic and offsets as
//!               4..8   sequence number (u32 LE)    ../shared/bench's vsb payload, so
//!               8..16  CLOCK_MONOTONIC ns (u64 LE)  vsb-sink can time our frames and we
//!              16..18  stream id (u16 LE)           theirs (vsb puts a flow index at 4..8)
//! ```
//!
//! 18 bytes is exactly what a 64-byte IPv4/UDP frame has left after its headers
//! (64 - 4 FCS - 14 - 20 - 8), so minimum-size frames carry a full stamp.
//!
//! Sizes are Ethernet frame sizes *including* the 4-byte FCS, as in RFC 2544 and
//! vsb: a "64-byte frame" is 60 bytes handed to the interface.
//!
//! Checksums: per packet the stamp (and, with many flows, the flow fields) change,
//! so the L4 checksum is finished per packet from a precomputed partial sum of
//! everything else ([`Template::l4_sum_without`]): a dozen additions, never a pass
//! over the payload. Parsing ([`parse_stamp`]) takes untrusted bytes and never
//! panics.

use std::net::IpAddr;

/// "VSB1": the magic of ../shared/bench's payload, reused on purpose.
pub const MAGIC: u32 = 0x5653_4231;
/// Bytes of the stamp.
pub const STAMP_LEN: usize = 18;
/// Bytes of the Ethernet FCS, counted in sizes but not handed to the interface.
pub const FCS_LEN: usize = 4;
pub const ETH_LEN: usize = 14;
pub const IPV4_LEN: usize = 20;
pub const IPV6_LEN: usize = 40;
pub const UDP_LEN: usize = 8;
pub const TCP_LEN: usize = 20;
/// Largest frame the generator builds (including FCS): standard Ethernet.
pub const MAX_FRAME_SIZE: usize = 1518;
/// Ethernet's minimum frame size (including FCS).
pub const MIN_FRAME_SIZE: usize = 64;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

/// Stamp field offsets, relative to the start of the L4 payload.
mod field {
    use std::ops::Range;
    pub const MAGIC: Range<usize> = 0..4;
    pub const SEQ: Range<usize> = 4..8;
    pub const TS: Range<usize> = 8..16;
    pub const STREAM: Range<usize> = 16..18;
}

/// Transport of generated frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Proto {
    /// UDP datagrams.
    Udp,
    /// TCP segments with only SYN set (a SYN flood), stamp as segment payload.
    TcpSyn,
}

impl Proto {
    fn l4_len(self) -> usize {
        match self {
            Proto::Udp => UDP_LEN,
            Proto::TcpSyn => TCP_LEN,
        }
    }

    fn ip_proto(self) -> u8 {
        match self {
            Proto::Udp => IPPROTO_UDP,
            Proto::TcpSyn => IPPROTO_TCP,
        }
    }
}

/// The smallest frame size (with FCS) that carries headers and a full stamp.
pub fn min_size(ipv6: bool, proto: Proto) -> usize {
    let l3 = if ipv6 { IPV6_LEN } else { IPV4_LEN };
    (ETH_LEN + l3 + proto.l4_len() + STAMP_LEN + FCS_LEN).max(MIN_FRAME_SIZE)
}

/// The per-flow fields of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowFields {
    pub src_ip: IpAddr,
    pub dst_ip: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
}

/// Everything that is the same for all frames of one size class, and where the
/// per-packet fields live in it.
#[derive(Debug, Clone)]
pub struct Template {
    /// Bytes handed to the interface (size - FCS).
    pub len: usize,
    pub ipv6: bool,
    pub proto: Proto,
    /// Offset of the L3 header.
    pub l3: usize,
    /// Offset of the L4 header.
    pub l4: usize,
    /// Offset of the stamp.
    pub stamp: usize,
    /// Compute the UDP checksum over IPv4 (IPv6 and TCP always have one).
    pub l4_checksum: bool,
    /// One's-complement sum of the L4 checksum input with the flow fields (addresses
    /// in the pseudo header, ports), the stamp's sequence and time and the checksum
    /// field itself all zero. Per packet: add those fields, fold.
    pub l4_sum_without: u32,
    /// Same for the IPv4 header checksum, without the two addresses.
    pub ip_sum_without: u32,
}

/// What a frame should look like, apart from the per-flow fields.
#[derive(Debug, Clone)]
pub struct FrameSpec {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub ipv6: bool,
    pub proto: Proto,
    /// Frame size including FCS.
    pub size: usize,
    pub stream: u16,
    /// TCP sequence number of the SYNs (ignored for UDP).
    pub tcp_seq: u32,
    /// Compute the UDP checksum over IPv4 (otherwise 0, which IPv4 allows).
    pub udp_checksum_v4: bool,
}

/// Errors in building a frame: a size that cannot hold the headers and stamp.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("frame size {size} is too small for {what} with a stamp (minimum {min})")]
    TooSmall {
        size: usize,
        min: usize,
        what: &'static str,
    },
    #[error("frame size {size} is larger than {max}")]
    TooLarge { size: usize, max: usize },
    #[error("buffer of {have} bytes cannot hold a {need}-byte frame")]
    Buffer { have: usize, need: usize },
    #[error("address family does not match the frame (ipv6={ipv6})")]
    Family { ipv6: bool },
}

fn what(ipv6: bool, proto: Proto) -> &'static str {
    match (ipv6, proto) {
        (false, Proto::Udp) => "IPv4/UDP",
        (false, Proto::TcpSyn) => "IPv4/TCP",
        (true, Proto::Udp) => "IPv6/UDP",
        (true, Proto::TcpSyn) => "IPv6/TCP",
    }
}

/// Adds the big-endian 16-bit words of `b` (odd length: last byte padded) to `sum`.
#[inline]
pub fn sum16(mut sum: u32, b: &[u8]) -> u32 {
    let mut chunks = b.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    // Keep headroom: fold the carries now and then (callers add a few words more).
    (sum & 0xffff) + (sum >> 16)
}

/// Folds a one's-complement sum and complements it: the checksum field value.
#[inline]
pub fn fold(mut sum: u32) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn ip_bytes(ip: &IpAddr) -> ([u8; 16], usize) {
    let mut b = [0u8; 16];
    match ip {
        IpAddr::V4(a) => {
            b[..4].copy_from_slice(&a.octets());
            (b, 4)
        }
        IpAddr::V6(a) => {
            b.copy_from_slice(&a.octets());
            (b, 16)
        }
    }
}

/// Writes a complete frame for `spec` and `flow` into `buf` (stamp sequence and time
/// zero, checksums final for those zeros) and returns its template.
pub fn build(buf: &mut [u8], spec: &FrameSpec, flow: &FlowFields) -> Result<Template, WireError> {
    let min = min_size(spec.ipv6, spec.proto);
    if spec.size < min {
        return Err(WireError::TooSmall {
            size: spec.size,
            min,
            what: what(spec.ipv6, spec.proto),
        });
    }
    if spec.size > MAX_FRAME_SIZE {
        return Err(WireError::TooLarge {
            size: spec.size,
            max: MAX_FRAME_SIZE,
        });
    }
    if flow.src_ip.is_ipv6() != spec.ipv6 || flow.dst_ip.is_ipv6() != spec.ipv6 {
        return Err(WireError::Family { ipv6: spec.ipv6 });
    }
    let len = spec.size - FCS_LEN;
    if buf.len() < len {
        return Err(WireError::Buffer {
            have: buf.len(),
            need: len,
        });
    }
    let f = &mut buf[..len];
    f.fill(0);
    f[0..6].copy_from_slice(&spec.dst_mac);
    f[6..12].copy_from_slice(&spec.src_mac);
    let l3 = ETH_LEN;
    let l4 = l3 + if spec.ipv6 { IPV6_LEN } else { IPV4_LEN };
    let stamp = l4 + spec.proto.l4_len();
    let l4_total = len - l4;
    if spec.ipv6 {
        f[12..14].copy_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
        f[l3] = 0x60;
        f[l3 + 4..l3 + 6].copy_from_slice(&(l4_total as u16).to_be_bytes());
        f[l3 + 6] = spec.proto.ip_proto();
        f[l3 + 7] = 64;
    } else {
        f[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        f[l3] = 0x45;
        f[l3 + 2..l3 + 4].copy_from_slice(&((len - l3) as u16).to_be_bytes());
        f[l3 + 6] = 0x40; // DF
        f[l3 + 8] = 64;
        f[l3 + 9] = spec.proto.ip_proto();
    }
    match spec.proto {
        Proto::Udp => {
            f[l4 + 4..l4 + 6].copy_from_slice(&(l4_total as u16).to_be_bytes());
        }
        Proto::TcpSyn => {
            f[l4 + 4..l4 + 8].copy_from_slice(&spec.tcp_seq.to_be_bytes());
            f[l4 + 12] = 5 << 4; // data offset: 20 bytes, no options
            f[l4 + 13] = 0x02; // SYN
            f[l4 + 14..l4 + 16].copy_from_slice(&64240u16.to_be_bytes());
        }
    }
    let p = &mut f[stamp..];
    p[field::MAGIC].copy_from_slice(&MAGIC.to_be_bytes());
    p[field::STREAM].copy_from_slice(&spec.stream.to_le_bytes());
    for (i, b) in p[STAMP_LEN..].iter_mut().enumerate() {
        *b = i as u8;
    }

    // Partial sums with the per-packet fields (still zero here) left out.
    let l4_checksum = spec.ipv6 || spec.proto == Proto::TcpSyn || spec.udp_checksum_v4;
    let mut s = 0u32;
    s += u32::from(spec.proto.ip_proto());
    s += l4_total as u32;
    s = sum16(s, &f[l4..len]);
    let ip_sum_without = if spec.ipv6 {
        0
    } else {
        sum16(0, &f[l3..l3 + 12])
    };
    let t = Template {
        len,
        ipv6: spec.ipv6,
        proto: spec.proto,
        l3,
        l4,
        stamp,
        l4_checksum,
        l4_sum_without: s,
        ip_sum_without,
    };
    t.set_flow(f, flow);
    t.finish(f, 0, 0, t.flow_sum(flow));
    Ok(t)
}

impl Template {
    /// The one's-complement sum of the flow fields as the L4 checksum sees them.
    #[inline]
    pub fn flow_sum(&self, flow: &FlowFields) -> u32 {
        let (s, sl) = ip_bytes(&flow.src_ip);
        let (d, dl) = ip_bytes(&flow.dst_ip);
        let mut sum = sum16(0, &s[..sl]);
        sum = sum16(sum, &d[..dl]);
        sum + u32::from(flow.src_port) + u32::from(flow.dst_port)
    }

    /// Writes the flow fields (addresses, ports) and, for IPv4, the header checksum.
    /// The L4 checksum is written by [`finish`](Self::finish).
    #[inline]
    pub fn set_flow(&self, f: &mut [u8], flow: &FlowFields) {
        let (s, sl) = ip_bytes(&flow.src_ip);
        let (d, dl) = ip_bytes(&flow.dst_ip);
        if self.ipv6 {
            f[self.l3 + 8..self.l3 + 24].copy_from_slice(&s[..16.min(sl)]);
            f[self.l3 + 24..self.l3 + 40].copy_from_slice(&d[..16.min(dl)]);
        } else {
            f[self.l3 + 12..self.l3 + 16].copy_from_slice(&s[..4.min(sl)]);
            f[self.l3 + 16..self.l3 + 20].copy_from_slice(&d[..4.min(dl)]);
            let sum = sum16(sum16(self.ip_sum_without, &s[..sl]), &d[..dl]);
            f[self.l3 + 10..self.l3 + 12].copy_from_slice(&fold(sum).to_be_bytes());
        }
        f[self.l4..self.l4 + 2].copy_from_slice(&flow.src_port.to_be_bytes());
        f[self.l4 + 2..self.l4 + 4].copy_from_slice(&flow.dst_port.to_be_bytes());
    }

    /// Writes the stamp's sequence number and time and the L4 checksum. `flow_sum`
    /// is [`flow_sum`](Self::flow_sum) of the frame's flow (kept per frame by the
    /// generator so that this stays a handful of additions).
    #[inline]
    pub fn finish(&self, f: &mut [u8], seq: u32, ts_ns: u64, flow_sum: u32) {
        let st = self.stamp;
        let seq_b = seq.to_le_bytes();
        let ts_b = ts_ns.to_le_bytes();
        f[st + field::SEQ.start..st + field::SEQ.end].copy_from_slice(&seq_b);
        f[st + field::TS.start..st + field::TS.end].copy_from_slice(&ts_b);
        let ck_off = match self.proto {
            Proto::Udp => self.l4 + 6,
            Proto::TcpSyn => self.l4 + 16,
        };
        if !self.l4_checksum {
            return;
        }
        let mut sum = self.l4_sum_without + flow_sum;
        sum = sum16(sum, &seq_b);
        sum = sum16(sum, &ts_b);
        let mut ck = fold(sum);
        if ck == 0 && self.proto == Proto::Udp {
            // 0 means "no checksum" for UDP; the one's-complement equivalent is 0xffff.
            ck = 0xffff;
        }
        f[ck_off..ck_off + 2].copy_from_slice(&ck.to_be_bytes());
    }
}

/// What the sink reads back from a generated frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub seq: u32,
    pub ts_ns: u64,
    pub stream: u16,
}

/// Finds the stamp in a received frame: Ethernet (one optional 802.1Q tag), IPv4
/// (any header length, first fragment) or IPv6 (no extension headers), UDP or TCP.
/// `None` for anything else, for short frames and for a wrong magic. Never panics.
pub fn parse_stamp(f: &[u8]) -> Option<Stamp> {
    let mut off = 12;
    let mut ethertype = u16::from_be_bytes([*f.get(off)?, *f.get(off + 1)?]);
    off += 2;
    if ethertype == ETHERTYPE_VLAN {
        ethertype = u16::from_be_bytes([*f.get(off + 2)?, *f.get(off + 3)?]);
        off += 4;
    }
    let proto = match ethertype {
        ETHERTYPE_IPV4 => {
            let vihl = *f.get(off)?;
            if vihl >> 4 != 4 {
                return None;
            }
            let ihl = usize::from(vihl & 0x0f) * 4;
            let frag = u16::from_be_bytes([*f.get(off + 6)?, *f.get(off + 7)?]);
            if ihl < IPV4_LEN || frag & 0x1fff != 0 {
                return None;
            }
            let p = *f.get(off + 9)?;
            off += ihl;
            p
        }
        ETHERTYPE_IPV6 => {
            if *f.get(off)? >> 4 != 6 {
                return None;
            }
            let p = *f.get(off + 6)?;
            off += IPV6_LEN;
            p
        }
        _ => return None,
    };
    off += match proto {
        IPPROTO_UDP => UDP_LEN,
        IPPROTO_TCP => usize::from(*f.get(off + 12)? >> 4) * 4,
        _ => return None,
    };
    let p = f.get(off..off + STAMP_LEN)?;
    let magic = u32::from_be_bytes(p[field::MAGIC].try_into().ok()?);
    if magic != MAGIC {
        return None;
    }
    Some(Stamp {
        seq: u32::from_le_bytes(p[field::SEQ].try_into().ok()?),
        ts_ns: u64::from_le_bytes(p[field::TS].try_into().ok()?),
        stream: u16::from_le_bytes(p[field::STREAM].try_into().ok()?),
    })
}

/// Parses "02:00:00:00:00:01".
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

pub fn format_mac(m: &[u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

/// A broadcast frame with EtherType 0x88B5 (IEEE local experimental) from `src`,
/// which the sink sends at start so that learning switches know where it is.
pub fn announce_frame(src: &[u8; 6]) -> [u8; 60] {
    let mut f = [0u8; 60];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(src);
    f[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
    f[14..18].copy_from_slice(b"vsbA");
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn spec(ipv6: bool, proto: Proto, size: usize) -> FrameSpec {
        FrameSpec {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            ipv6,
            proto,
            size,
            stream: 7,
            tcp_seq: 12345,
            udp_checksum_v4: true,
        }
    }

    fn flow(ipv6: bool, sport: u16) -> FlowFields {
        if ipv6 {
            FlowFields {
                src_ip: IpAddr::V6(Ipv6Addr::new(0xfd00, 0x76, 0, 0, 0, 0, 0, 0x10)),
                dst_ip: IpAddr::V6(Ipv6Addr::new(0xfd00, 0x76, 0, 0, 0, 0, 0, 0x20)),
                src_port: sport,
                dst_port: 5001,
            }
        } else {
            FlowFields {
                src_ip: IpAddr::V4(Ipv4Addr::new(10, 76, 0, 10)),
                dst_ip: IpAddr::V4(Ipv4Addr::new(10, 76, 0, 20)),
                src_port: sport,
                dst_port: 5001,
            }
        }
    }

    /// The checksums we finish per packet must be what a full computation gives:
    /// etherparse recomputes them from scratch.
    fn check_checksums(f: &[u8]) {
        let p = SlicedPacket::from_ethernet(f).expect("parses");
        match (p.net.expect("net"), p.transport.expect("transport")) {
            (NetSlice::Ipv4(ip), TransportSlice::Udp(u)) => {
                let h = ip.header().to_header();
                assert_eq!(h.header_checksum, h.calc_header_checksum());
                let want = u
                    .to_header()
                    .calc_checksum_ipv4(&h, u.payload())
                    .expect("sum");
                assert_eq!(u.checksum(), want);
            }
            (NetSlice::Ipv4(ip), TransportSlice::Tcp(t)) => {
                let h = ip.header().to_header();
                assert_eq!(h.header_checksum, h.calc_header_checksum());
                let want = t
                    .to_header()
                    .calc_checksum_ipv4(&h, t.payload())
                    .expect("sum");
                assert_eq!(t.checksum(), want);
                assert!(t.syn() && !t.ack());
            }
            (NetSlice::Ipv6(ip), TransportSlice::Udp(u)) => {
                let h = ip.header().to_header();
                let want = u
                    .to_header()
                    .calc_checksum_ipv6(&h, u.payload())
                    .expect("sum");
                assert_eq!(u.checksum(), want);
            }
            (NetSlice::Ipv6(ip), TransportSlice::Tcp(t)) => {
                let h = ip.header().to_header();
                let want = t
                    .to_header()
                    .calc_checksum_ipv6(&h, t.payload())
                    .expect("sum");
                assert_eq!(t.checksum(), want);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn min_sizes() {
        assert_eq!(min_size(false, Proto::Udp), 64);
        assert_eq!(min_size(false, Proto::TcpSyn), 76);
        assert_eq!(min_size(true, Proto::Udp), 84);
        assert_eq!(min_size(true, Proto::TcpSyn), 96);
    }

    #[test]
    fn builds_valid_frames_and_stamps_round_trip() {
        for ipv6 in [false, true] {
            for proto in [Proto::Udp, Proto::TcpSyn] {
                for size in [min_size(ipv6, proto), 576, 1518] {
                    let mut buf = vec![0u8; 2048];
                    let s = spec(ipv6, proto, size);
                    let fl = flow(ipv6, 1024);
                    let t = build(&mut buf, &s, &fl).expect("build");
                    assert_eq!(t.len, size - 4);
                    let f = &mut buf[..t.len];
                    check_checksums(f);
                    assert_eq!(
                        parse_stamp(f),
                        Some(Stamp {
                            seq: 0,
                            ts_ns: 0,
                            stream: 7
                        })
                    );
                    // Per packet: another flow and a stamp; checksums stay right.
                    let fl2 = flow(ipv6, 40000);
                    t.set_flow(f, &fl2);
                    t.finish(f, 0xdead_beef, 0x0123_4567_89ab_cdef, t.flow_sum(&fl2));
                    check_checksums(f);
                    assert_eq!(
                        parse_stamp(f),
                        Some(Stamp {
                            seq: 0xdead_beef,
                            ts_ns: 0x0123_4567_89ab_cdef,
                            stream: 7
                        })
                    );
                }
            }
        }
    }

    #[test]
    fn refuses_impossible_sizes() {
        let mut buf = vec![0u8; 2048];
        let e = build(&mut buf, &spec(true, Proto::Udp, 64), &flow(true, 1)).expect_err("small");
        assert_eq!(
            e.to_string(),
            "frame size 64 is too small for IPv6/UDP with a stamp (minimum 84)"
        );
        assert!(build(&mut buf, &spec(false, Proto::Udp, 1519), &flow(false, 1)).is_err());
        assert!(build(&mut buf, &spec(false, Proto::Udp, 64), &flow(true, 1)).is_err());
        assert!(
            build(
                &mut buf[..10],
                &spec(false, Proto::Udp, 64),
                &flow(false, 1)
            )
            .is_err()
        );
    }

    #[test]
    fn compatible_with_vsb_payload_offsets() {
        // vsb: struct vsb_payload { __be32 magic; __u32 flow; __u64 ts_ns; } right
        // after the UDP header.
        let mut buf = vec![0u8; 2048];
        let t = build(&mut buf, &spec(false, Proto::Udp, 64), &flow(false, 1)).expect("build");
        let f = &mut buf[..t.len];
        t.finish(f, 1, 42, t.flow_sum(&flow(false, 1)));
        assert_eq!(&f[42..46], &[0x56, 0x53, 0x42, 0x31]);
        assert_eq!(u64::from_le_bytes(f[50..58].try_into().expect("8")), 42);
        assert_eq!(f.len(), 60);
    }

    #[test]
    fn parse_never_panics_on_garbage() {
        let mut buf = vec![0u8; 2048];
        let t = build(&mut buf, &spec(false, Proto::TcpSyn, 100), &flow(false, 1)).expect("b");
        let good = buf[..t.len].to_vec();
        for cut in 0..good.len() {
            let _ = parse_stamp(&good[..cut]);
        }
        // Every single-byte corruption either parses or is refused, never panics.
        for i in 0..good.len() {
            let mut g = good.clone();
            g[i] ^= 0xff;
            let _ = parse_stamp(&g);
        }
        // A VLAN tag in front is understood.
        let mut tagged = good[..12].to_vec();
        tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x05]);
        tagged.extend_from_slice(&good[12..]);
        assert!(parse_stamp(&tagged).is_some());
        assert!(parse_stamp(&announce_frame(&[2, 0, 0, 0, 0, 9])).is_none());
    }

    #[test]
    fn macs() {
        assert_eq!(parse_mac("02:0a:00:00:00:ff"), Some([2, 10, 0, 0, 0, 255]));
        assert_eq!(parse_mac("02:0a:00:00:00"), None);
        assert_eq!(parse_mac("02:0a:00:00:00:ff:01"), None);
        assert_eq!(parse_mac("2:0a:00:00:00:ff"), None);
        assert_eq!(format_mac(&[2, 10, 0, 0, 0, 255]), "02:0a:00:00:00:ff");
    }
}

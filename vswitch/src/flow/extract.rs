//! Flow key extraction: one pass over a frame's headers that fills the packet words
//! of a [`Key`] and records where the L3 and L4 headers are, for the actions that
//! rewrite them ([`super::rewrite`]).
//!
//! Hand-written rather than built on etherparse (a dev-dependency, used by the tests
//! below as the reference parser): etherparse allocates nothing either, but it decodes
//! every header into a struct (options, extension headers, all ICMP variants) and
//! validates more than a flow key needs, which costs several times our budget of
//! ~15 ns per frame; and its views are read-only, while the rewrite step needs the
//! offsets to write in place. Here each header is read by offset, straight into the
//! key words, with one bounds check per header.
//!
//! What is extracted follows OVS's `miniflow_extract`:
//! - Ethernet addresses and type; one VLAN tag (TPID 0x8100, or 0x88a8 as the outer
//!   tag) into `vlan_tci` with [`VLAN_PRESENT`] set (the tag's DEI bit is not kept,
//!   as in OVS); `eth_type` is then the type after the tag. A second tag is not
//!   parsed: `eth_type` is its TPID and no L3 follows.
//! - ARP for Ethernet/IPv4 only (htype 1, ptype 0x0800, 6/4 address lengths).
//! - IPv4: addresses, protocol, TTL, TOS, fragment bits. A header with a bad version,
//!   IHL or total length is not used at all (the key stays at L2). The total length
//!   bounds what follows: Ethernet padding is never parsed as L4.
//! - IPv6: addresses, traffic class, flow label, hop limit, and the protocol after
//!   hop-by-hop, routing, destination-options, AH and fragment extension headers.
//!   For a later fragment `ip_proto` is the fragment header's next header (as for
//!   IPv4; OVS reports 44 there).
//! - TCP (ports, the 12 flag bits), UDP and SCTP (ports), ICMP and ICMPv6 (type in
//!   `tp_src`, code in `tp_dst`), each only when its whole header is there. A later
//!   fragment (`ip_frag` 3) has no L4 header.
//!
//! A frame cut short (or malformed) after the Ethernet header still gives a key: the
//! headers before the damage are in it, the rest is zero, and
//! [`Offsets::truncated`] says so. L2 rules still forward it, as in OVS.

use super::field::{eth_type, ip_proto};
use super::key::*;

/// Length of an Ethernet header without tags.
pub const ETH_HEADER_LEN: usize = 14;
/// Length of one 802.1Q tag.
pub const VLAN_TAG_LEN: usize = 4;

/// The frame is shorter than an Ethernet header: there is no key to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ExtractError {
    #[error("frame of {0} bytes is shorter than an Ethernet header")]
    Runt(usize),
}

/// Which network header [`Offsets::l3`] points at (parsed and complete).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum L3 {
    /// None the pipeline knows, or it was truncated or malformed.
    #[default]
    None,
    /// Ethernet/IPv4 ARP, all 28 bytes present.
    Arp,
    Ipv4,
    Ipv6,
}

/// Which transport header [`Offsets::l4`] points at (parsed and complete).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum L4 {
    /// No known L4 header: not IP, another protocol, a later fragment, or truncated.
    #[default]
    None,
    Tcp,
    Udp,
    Sctp,
    Icmp,
    Icmpv6,
}

/// Where the headers of an extracted frame are, for the execution step.
///
/// Offsets are from the start of the frame. When `l3_kind` is IP, `l3 < l4 <= end
/// <= frame.len()` and the whole IP header (with IPv6 extension headers) lies in
/// `l3..l4`; when `l4_kind` is not [`L4::None`] its whole header lies in `l4..end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Offsets {
    /// Start of the L3 header: 14, or 18 after a VLAN tag.
    pub l3: u32,
    /// Start of the L4 header (the IP payload); 0 when `l3_kind` is not IP.
    pub l4: u32,
    /// End of the IP packet (`l3` + IP total length): L4 checksums cover `l4..end`,
    /// bytes after it are Ethernet padding. The frame length when not IP.
    pub end: u32,
    pub l3_kind: L3,
    pub l4_kind: L4,
    /// As the key's `ip_frag`: 0, 1 (a fragment), 3 (a later fragment).
    pub ip_frag: u8,
    /// A VLAN tag is at bytes 12..16.
    pub vlan: bool,
    /// IPv6 only: a routing header with segments left is present, so the L4
    /// pseudo-header uses the final destination, not `ipv6_dst` (which therefore can
    /// be rewritten without touching the L4 checksum).
    pub ipv6_routing: bool,
    /// A header the key would cover was cut short or malformed: the key stops
    /// before it.
    pub truncated: bool,
}

impl Offsets {
    /// Whether a complete, known L4 header is at `l4`.
    #[inline]
    pub fn l4_valid(&self) -> bool {
        self.l4_kind != L4::None
    }
}

/// `ip_frag` values.
pub mod frag {
    /// A fragment (first or later).
    pub const ANY: u8 = 1;
    /// A later fragment: offset != 0, no L4 header.
    pub const LATER: u8 = 3;
}

/// IPv6 extension header numbers skipped on the way to the L4 protocol.
mod ipv6_ext {
    pub const HOP_BY_HOP: u8 = 0;
    pub const ROUTING: u8 = 43;
    pub const FRAGMENT: u8 = 44;
    pub const AUTH: u8 = 51;
    pub const DEST_OPTS: u8 = 60;
}

#[inline(always)]
fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}

#[inline(always)]
fn be32(b: [u8; 4]) -> u32 {
    u32::from_be_bytes(b)
}

#[inline(always)]
fn be64(b: [u8; 8]) -> u64 {
    u64::from_be_bytes(b)
}

/// `N` bytes at `at`, if the slice holds them.
#[inline(always)]
fn chunk<const N: usize>(b: &[u8], at: usize) -> Option<&[u8; N]> {
    b.get(at..)?.first_chunk::<N>()
}

/// A 48-bit MAC at `b[0..6]` as the key stores it.
#[inline(always)]
fn mac(b: &[u8; 6]) -> u64 {
    be64([0, 0, b[0], b[1], b[2], b[3], b[4], b[5]])
}

/// The packet words after word 0: each path below writes all of them exactly once,
/// from registers, so no path merges into another's stores.
type Words = [u64; KEY_WORDS];

/// Words 1..W_TUN_ID for a frame with nothing past L2 (or a damaged L3 header).
#[inline(always)]
fn l2_only(k: &mut Words, src: u64, dst: u64) {
    k[W_ETH_SRC] = src;
    k[W_ETH_DST] = dst;
    k[W_NW..W_TUN_ID].fill(0);
}

/// Fills the packet words of `key` (words `0..W_TUN_ID`: in_port, Ethernet, VLAN,
/// L3, L4) from `frame` and returns where the headers are.
///
/// Every packet word is overwritten, so fields a previous frame left are cleared;
/// the tunnel words and metadata words (`W_TUN_ID..`) are left as the caller set
/// them. Never panics, never allocates. Only a frame shorter than an Ethernet header
/// is an error; truncated or malformed L3/L4 headers give a key that stops before
/// them, with [`Offsets::truncated`] set.
#[inline]
pub fn extract(frame: &[u8], in_port: u32, key: &mut Key) -> Result<Offsets, ExtractError> {
    let Some(eth) = frame.first_chunk::<ETH_HEADER_LEN>() else {
        return Err(ExtractError::Runt(frame.len()));
    };
    // Two 8-byte loads (the frame has at least 14 bytes, so neither can miss).
    let dst = frame.first_chunk::<8>().map_or(0, |b| be64(*b)) >> 16;
    let src = chunk::<8>(frame, 4).map_or(0, |b| be64(*b)) & 0xffff_ffff_ffff;
    let mut etype = be16([eth[12], eth[13]]);

    let mut off = Offsets {
        l3: ETH_HEADER_LEN as u32,
        end: frame.len() as u32,
        ..Offsets::default()
    };
    let mut tci = 0u16;
    if etype == eth_type::VLAN || etype == eth_type::QINQ {
        match chunk::<VLAN_TAG_LEN>(frame, ETH_HEADER_LEN) {
            Some(tag) => {
                tci = be16([tag[0], tag[1]]) | VLAN_PRESENT;
                etype = be16([tag[2], tag[3]]);
                off.l3 = (ETH_HEADER_LEN + VLAN_TAG_LEN) as u32;
                off.vlan = true;
            }
            // eth_type stays the TPID, as OVS does for a tag it cannot read.
            None => off.truncated = true,
        }
    }

    let k = &mut key.0;
    k[W_PORT_TYPE_VLAN] = u64::from(in_port) | (u64::from(etype) << 32) | (u64::from(tci) << 48);
    let l3 = off.l3 as usize;
    match etype {
        eth_type::IPV4 => ipv4(frame, l3, src, dst, k, &mut off),
        eth_type::IPV6 => ipv6(frame, l3, src, dst, k, &mut off),
        eth_type::ARP => arp(frame, l3, src, dst, k, &mut off),
        _ => l2_only(k, src, dst),
    }
    Ok(off)
}

#[inline(always)]
fn ipv4(frame: &[u8], l3: usize, src: u64, dst: u64, k: &mut Words, off: &mut Offsets) {
    let Some(h) = chunk::<20>(frame, l3) else {
        off.truncated = true;
        return l2_only(k, src, dst);
    };
    let ihl = usize::from(h[0] & 0x0f) * 4;
    let total = usize::from(be16([h[2], h[3]]));
    let end = l3 + total;
    if h[0] >> 4 != 4 || ihl < 20 || total < ihl || end > frame.len() {
        off.truncated = true;
        return l2_only(k, src, dst);
    }
    let proto = h[9];
    let frag_off = be16([h[6], h[7]]);
    let mut ip_frag = 0;
    if frag_off & 0x3fff != 0 {
        ip_frag = frag::ANY;
        if frag_off & 0x1fff != 0 {
            ip_frag = frag::LATER;
        }
    }
    off.l3_kind = L3::Ipv4;
    off.l4 = (l3 + ihl) as u32;
    off.end = end as u32;
    off.ip_frag = ip_frag;
    let tp = if ip_frag != frag::LATER {
        l4(frame, l3 + ihl, end, proto, false, off)
    } else {
        0
    };
    k[W_ETH_SRC] = src | (u64::from(proto) << 48) | (u64::from(h[8]) << 56);
    k[W_ETH_DST] = dst | (u64::from(h[1]) << 48) | (u64::from(ip_frag) << 56);
    k[W_NW] = u64::from(be32([h[12], h[13], h[14], h[15]]))
        | (u64::from(be32([h[16], h[17], h[18], h[19]])) << 32);
    k[W_TP] = tp;
    k[W_IPV6_SRC..W_TUN_ID].fill(0);
}

#[inline(always)]
fn ipv6(frame: &[u8], l3: usize, src: u64, dst: u64, k: &mut Words, off: &mut Offsets) {
    let Some(h) = chunk::<40>(frame, l3) else {
        off.truncated = true;
        return l2_only(k, src, dst);
    };
    let end = l3 + 40 + usize::from(be16([h[4], h[5]]));
    if h[0] >> 4 != 6 || end > frame.len() {
        off.truncated = true;
        return l2_only(k, src, dst);
    }
    off.l3_kind = L3::Ipv6;
    off.end = end as u32;

    // Extension headers: each advances `pos` by at least 8 bytes within `end`.
    let mut nxt = h[6];
    let mut pos = l3 + 40;
    let mut ip_frag = 0u8;
    let mut complete = true;
    loop {
        match nxt {
            ipv6_ext::HOP_BY_HOP | ipv6_ext::ROUTING | ipv6_ext::DEST_OPTS | ipv6_ext::AUTH => {
                let Some(e) = frame.get(pos..end).and_then(|s| s.first_chunk::<4>()) else {
                    complete = false;
                    break;
                };
                let len = if nxt == ipv6_ext::AUTH {
                    (usize::from(e[1]) + 2) * 4
                } else {
                    (usize::from(e[1]) + 1) * 8
                };
                if pos + len > end {
                    complete = false;
                    break;
                }
                if nxt == ipv6_ext::ROUTING && e[3] != 0 {
                    off.ipv6_routing = true;
                }
                nxt = e[0];
                pos += len;
            }
            ipv6_ext::FRAGMENT => {
                let Some(e) = frame.get(pos..end).and_then(|s| s.first_chunk::<8>()) else {
                    complete = false;
                    break;
                };
                nxt = e[0];
                pos += 8;
                let offlg = be16([e[2], e[3]]);
                if offlg & 0xfff9 != 0 {
                    ip_frag = frag::ANY;
                    if offlg & 0xfff8 != 0 {
                        ip_frag = frag::LATER;
                        break;
                    }
                }
            }
            _ => break,
        }
    }
    off.ip_frag = ip_frag;
    let tp = if !complete {
        off.truncated = true;
        0
    } else {
        off.l4 = pos as u32;
        if ip_frag != frag::LATER {
            l4(frame, pos, end, nxt, true, off)
        } else {
            0
        }
    };
    let vtcfl = be32([h[0], h[1], h[2], h[3]]);
    let word = |i: usize| {
        be64([
            h[i],
            h[i + 1],
            h[i + 2],
            h[i + 3],
            h[i + 4],
            h[i + 5],
            h[i + 6],
            h[i + 7],
        ])
    };
    let tos = u64::from((vtcfl >> 20) as u8);
    k[W_ETH_SRC] = src | (u64::from(nxt) << 48) | (u64::from(h[7]) << 56);
    k[W_ETH_DST] = dst | (tos << 48) | (u64::from(ip_frag) << 56);
    k[W_NW] = 0;
    k[W_TP] = tp;
    k[W_IPV6_SRC] = word(8);
    k[W_IPV6_SRC + 1] = word(16);
    k[W_IPV6_DST] = word(24);
    k[W_IPV6_DST + 1] = word(32);
    k[W_IPV6_LABEL] = u64::from(vtcfl & 0x000f_ffff);
}

/// Parses the L4 header at `l4..end`; returns the key's W_TP word.
#[inline(always)]
fn l4(frame: &[u8], l4: usize, end: usize, proto: u8, v6: bool, off: &mut Offsets) -> u64 {
    let Some(p) = frame.get(l4..end) else {
        off.truncated = true;
        return 0;
    };
    let ports = |h: &[u8; 4]| u64::from(be16([h[0], h[1]])) | (u64::from(be16([h[2], h[3]])) << 16);
    match proto {
        ip_proto::TCP => match p.first_chunk::<20>() {
            Some(h) if (20..=p.len()).contains(&(usize::from(h[12] >> 4) * 4)) => {
                let flags = be16([h[12], h[13]]) & 0x0fff;
                off.l4_kind = L4::Tcp;
                ports(&[h[0], h[1], h[2], h[3]]) | (u64::from(flags) << 32)
            }
            _ => {
                off.truncated = true;
                0
            }
        },
        ip_proto::UDP | ip_proto::SCTP => {
            let need = if proto == ip_proto::UDP { 8 } else { 12 };
            match p.first_chunk::<4>() {
                Some(h) if p.len() >= need => {
                    off.l4_kind = if proto == ip_proto::UDP {
                        L4::Udp
                    } else {
                        L4::Sctp
                    };
                    ports(h)
                }
                _ => {
                    off.truncated = true;
                    0
                }
            }
        }
        ip_proto::ICMP | ip_proto::ICMPV6 if v6 == (proto == ip_proto::ICMPV6) => {
            match p.first_chunk::<2>() {
                Some(h) if p.len() >= 8 => {
                    off.l4_kind = if v6 { L4::Icmpv6 } else { L4::Icmp };
                    u64::from(h[0]) | (u64::from(h[1]) << 16)
                }
                _ => {
                    off.truncated = true;
                    0
                }
            }
        }
        _ => 0,
    }
}

#[inline(always)]
fn arp(frame: &[u8], l3: usize, src: u64, dst: u64, k: &mut Words, off: &mut Offsets) {
    let Some(a) = chunk::<28>(frame, l3) else {
        off.truncated = true;
        return l2_only(k, src, dst);
    };
    // Ethernet hardware, IPv4 protocol, 6- and 4-byte addresses: the only ARP the
    // key has room for. Others are valid frames, just not ones we look into.
    if a[0..6] != [0, 1, 0x08, 0x00, 6, 4] {
        return l2_only(k, src, dst);
    }
    off.l3_kind = L3::Arp;
    k[W_ETH_SRC] = src;
    k[W_ETH_DST] = dst;
    k[W_NW] = u64::from(be32([a[14], a[15], a[16], a[17]]))
        | (u64::from(be32([a[24], a[25], a[26], a[27]])) << 32);
    k[W_TP] = u64::from(be16([a[6], a[7]])) << 44;
    k[W_IPV6_SRC] = mac(&[a[8], a[9], a[10], a[11], a[12], a[13]]);
    k[W_IPV6_SRC + 1] = 0;
    k[W_IPV6_DST] = mac(&[a[18], a[19], a[20], a[21], a[22], a[23]]);
    k[W_IPV6_DST + 1] = 0;
    k[W_IPV6_LABEL] = 0;
}

/// Random valid packets built with etherparse, and etherparse's own parse of a frame
/// turned into a key: the reference the extraction and rewrite tests compare with.
#[cfg(test)]
pub(crate) mod testpkt {
    use super::super::field::Field;
    use super::super::key::*;
    use super::{L3, L4, Offsets, frag};
    use etherparse::checksum::Sum16BitWords;
    use etherparse::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    pub struct Vlan {
        pub tpid: u16,
        pub pcp: u8,
        pub dei: bool,
        pub vid: u16,
    }

    #[derive(Debug, Clone)]
    pub enum L4Spec {
        Tcp {
            sport: u16,
            dport: u16,
            seq: u32,
            ack: u32,
            flags: u16,
            window: u16,
            opt_words: usize,
        },
        Udp {
            sport: u16,
            dport: u16,
            no_csum: bool,
        },
        Sctp {
            sport: u16,
            dport: u16,
            vtag: u32,
        },
        Icmp {
            ty: u8,
            code: u8,
            rest: [u8; 4],
        },
        Other {
            proto: u8,
        },
    }

    #[derive(Debug, Clone)]
    pub enum Ext {
        HopByHop(u8),
        DestOpts(u8),
        Routing { len: u8, segs_left: u8 },
        Fragment { offset: u16, mf: bool, id: u32 },
    }

    #[derive(Debug, Clone)]
    pub enum L3Spec {
        Arp {
            op: u16,
            sha: [u8; 6],
            spa: [u8; 4],
            tha: [u8; 6],
            tpa: [u8; 4],
        },
        Ipv4 {
            tos: u8,
            ttl: u8,
            src: [u8; 4],
            dst: [u8; 4],
            opt_words: usize,
            df: bool,
            mf: bool,
            frag_offset: u16,
            id: u16,
            l4: L4Spec,
        },
        Ipv6 {
            tc: u8,
            label: u32,
            hop: u8,
            src: [u8; 16],
            dst: [u8; 16],
            exts: Vec<Ext>,
            l4: L4Spec,
        },
        Other {
            ethertype: u16,
        },
    }

    #[derive(Debug, Clone)]
    pub struct Spec {
        pub dst: [u8; 6],
        pub src: [u8; 6],
        pub vlan: Option<Vlan>,
        pub l3: L3Spec,
        pub payload: Vec<u8>,
        /// Ethernet padding after the L3 packet.
        pub pad: Vec<u8>,
    }

    /// A frame and the offsets extraction must report for it.
    #[derive(Debug, Clone)]
    pub struct Built {
        pub bytes: Vec<u8>,
        pub offsets: Offsets,
    }

    /// CRC32c bit by bit (independent of the table in `rewrite`).
    pub fn crc32c_bitwise(data: &[u8]) -> u32 {
        let mut c = !0u32;
        for &b in data {
            c ^= u32::from(b);
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    (c >> 1) ^ 0x82f6_3b78
                } else {
                    c >> 1
                };
            }
        }
        !c
    }

    /// Whether an SCTP packet's CRC32c is right.
    #[allow(dead_code)] // used by the rewrite tests
    pub fn sctp_crc_ok(l4: &[u8]) -> bool {
        let mut b = l4.to_vec();
        let stored = [b[8], b[9], b[10], b[11]];
        b[8..12].fill(0);
        crc32c_bitwise(&b).to_le_bytes() == stored
    }

    /// The ICMPv6 checksum over `msg` (its checksum field zeroed by the caller).
    pub fn icmpv6_csum(src: [u8; 16], dst: [u8; 16], msg: &[u8]) -> u16 {
        Sum16BitWords::new()
            .add_16bytes(src)
            .add_16bytes(dst)
            .add_4bytes((msg.len() as u32).to_be_bytes())
            .add_2bytes([0, 58])
            .add_slice(msg)
            .ones_complement()
            .to_be()
    }

    /// The ICMPv4 checksum over `msg` (its checksum field zeroed by the caller).
    pub fn icmpv4_csum(msg: &[u8]) -> u16 {
        Sum16BitWords::new()
            .add_slice(msg)
            .ones_complement()
            .to_be()
    }

    enum Pseudo {
        V4([u8; 4], [u8; 4]),
        V6([u8; 16], [u8; 16]),
    }

    /// The L4 bytes (header and payload) with correct checksums, and the protocol.
    fn l4_bytes(l4: &L4Spec, payload: &[u8], ip: Pseudo) -> (u8, Vec<u8>) {
        match *l4 {
            L4Spec::Tcp {
                sport,
                dport,
                seq,
                ack,
                flags,
                window,
                opt_words,
            } => {
                let mut t = TcpHeader::new(sport, dport, seq, window);
                t.acknowledgment_number = ack;
                t.fin = flags & 0x001 != 0;
                t.syn = flags & 0x002 != 0;
                t.rst = flags & 0x004 != 0;
                t.psh = flags & 0x008 != 0;
                t.ack = flags & 0x010 != 0;
                t.urg = flags & 0x020 != 0;
                t.ece = flags & 0x040 != 0;
                t.cwr = flags & 0x080 != 0;
                t.ns = flags & 0x100 != 0;
                t.set_options_raw(&vec![1u8; 4 * opt_words])
                    .expect("options");
                t.checksum = match ip {
                    Pseudo::V4(s, d) => t.calc_checksum_ipv4_raw(s, d, payload),
                    Pseudo::V6(s, d) => t.calc_checksum_ipv6_raw(s, d, payload),
                }
                .expect("checksum");
                let mut b = t.to_bytes().to_vec();
                b.extend_from_slice(payload);
                (6, b)
            }
            L4Spec::Udp {
                sport,
                dport,
                no_csum,
            } => {
                let mut u = UdpHeader {
                    source_port: sport,
                    destination_port: dport,
                    length: (8 + payload.len()) as u16,
                    checksum: 0,
                };
                if !no_csum {
                    u.checksum = match ip {
                        Pseudo::V4(s, d) => u.calc_checksum_ipv4_raw(s, d, payload),
                        Pseudo::V6(s, d) => u.calc_checksum_ipv6_raw(s, d, payload),
                    }
                    .expect("checksum");
                }
                let mut b = u.to_bytes().to_vec();
                b.extend_from_slice(payload);
                (17, b)
            }
            L4Spec::Sctp { sport, dport, vtag } => {
                let mut b = Vec::new();
                b.extend_from_slice(&sport.to_be_bytes());
                b.extend_from_slice(&dport.to_be_bytes());
                b.extend_from_slice(&vtag.to_be_bytes());
                b.extend_from_slice(&[0; 4]);
                b.extend_from_slice(payload);
                let crc = crc32c_bitwise(&b);
                b[8..12].copy_from_slice(&crc.to_le_bytes());
                (132, b)
            }
            L4Spec::Icmp { ty, code, rest } => {
                let mut b = vec![ty, code, 0, 0];
                b.extend_from_slice(&rest);
                b.extend_from_slice(payload);
                let (proto, c) = match ip {
                    Pseudo::V4(..) => (1, icmpv4_csum(&b)),
                    Pseudo::V6(s, d) => (58, icmpv6_csum(s, d, &b)),
                };
                b[2..4].copy_from_slice(&c.to_be_bytes());
                (proto, b)
            }
            L4Spec::Other { proto } => (proto, payload.to_vec()),
        }
    }

    fn l4_kind(l4: &L4Spec, v6: bool) -> L4 {
        match l4 {
            L4Spec::Tcp { .. } => L4::Tcp,
            L4Spec::Udp { .. } => L4::Udp,
            L4Spec::Sctp { .. } => L4::Sctp,
            L4Spec::Icmp { .. } if v6 => L4::Icmpv6,
            L4Spec::Icmp { .. } => L4::Icmp,
            L4Spec::Other { .. } => L4::None,
        }
    }

    fn ip_frag(mf: bool, offset: u16) -> u8 {
        match (mf, offset) {
            (_, 1..) => frag::LATER,
            (true, 0) => frag::ANY,
            (false, 0) => 0,
        }
    }

    impl Spec {
        pub fn build(&self) -> Built {
            let mut off = Offsets::default();
            let mut l3 = Vec::new();
            let inner_type = match &self.l3 {
                L3Spec::Arp {
                    op,
                    sha,
                    spa,
                    tha,
                    tpa,
                } => {
                    l3.extend_from_slice(&[0, 1, 8, 0, 6, 4]);
                    l3.extend_from_slice(&op.to_be_bytes());
                    l3.extend_from_slice(sha);
                    l3.extend_from_slice(spa);
                    l3.extend_from_slice(tha);
                    l3.extend_from_slice(tpa);
                    off.l3_kind = L3::Arp;
                    0x0806
                }
                L3Spec::Ipv4 {
                    tos,
                    ttl,
                    src,
                    dst,
                    opt_words,
                    df,
                    mf,
                    frag_offset,
                    id,
                    l4,
                } => {
                    let (proto, l4b) = l4_bytes(l4, &self.payload, Pseudo::V4(*src, *dst));
                    let mut ip =
                        Ipv4Header::new(0, *ttl, IpNumber(proto), *src, *dst).expect("ipv4");
                    ip.dscp = IpDscp::try_new(tos >> 2).expect("dscp");
                    ip.ecn = IpEcn::try_new(tos & 3).expect("ecn");
                    ip.identification = *id;
                    ip.dont_fragment = *df;
                    ip.more_fragments = *mf;
                    ip.fragment_offset = IpFragOffset::try_new(*frag_offset).expect("offset");
                    ip.options =
                        Ipv4Options::try_from(&vec![1u8; 4 * opt_words][..]).expect("options");
                    ip.set_payload_len(l4b.len()).expect("length");
                    ip.header_checksum = ip.calc_header_checksum();
                    l3.extend_from_slice(&ip.to_bytes());
                    l3.extend_from_slice(&l4b);
                    off.l3_kind = L3::Ipv4;
                    off.l4 = ip.header_len() as u32;
                    off.ip_frag = ip_frag(*mf, *frag_offset);
                    if off.ip_frag != frag::LATER {
                        off.l4_kind = l4_kind(l4, false);
                    }
                    0x0800
                }
                L3Spec::Ipv6 {
                    tc,
                    label,
                    hop,
                    src,
                    dst,
                    exts,
                    l4,
                } => {
                    let (proto, l4b) = l4_bytes(l4, &self.payload, Pseudo::V6(*src, *dst));
                    // Extension headers back to front, each naming the next.
                    let mut next = proto;
                    let mut chain: Vec<u8> = Vec::new();
                    for e in exts.iter().rev() {
                        let (num, mut b) = match *e {
                            Ext::HopByHop(n) => (0, vec![next, n]),
                            Ext::DestOpts(n) => (60, vec![next, n]),
                            Ext::Routing { len, segs_left } => {
                                off.ipv6_routing |= segs_left != 0;
                                (43, vec![next, len, 253, segs_left])
                            }
                            Ext::Fragment { offset, mf, id } => {
                                off.ip_frag = ip_frag(mf, offset);
                                let ol = (offset << 3) | u16::from(mf);
                                let mut b = vec![next, 0];
                                b.extend_from_slice(&ol.to_be_bytes());
                                b.extend_from_slice(&id.to_be_bytes());
                                (44, b)
                            }
                        };
                        let len = match *e {
                            Ext::Fragment { .. } => 8,
                            _ => (usize::from(b[1]) + 1) * 8,
                        };
                        b.resize(len, 0);
                        b.extend_from_slice(&chain);
                        chain = b;
                        next = num;
                    }
                    let ip = Ipv6Header {
                        traffic_class: *tc,
                        flow_label: Ipv6FlowLabel::try_new(*label).expect("label"),
                        payload_length: (chain.len() + l4b.len()) as u16,
                        next_header: IpNumber(next),
                        hop_limit: *hop,
                        source: *src,
                        destination: *dst,
                    };
                    l3.extend_from_slice(&ip.to_bytes());
                    off.l4 = (40 + chain.len()) as u32;
                    l3.extend_from_slice(&chain);
                    l3.extend_from_slice(&l4b);
                    off.l3_kind = L3::Ipv6;
                    if off.ip_frag != frag::LATER {
                        off.l4_kind = l4_kind(l4, true);
                    }
                    0x86dd
                }
                L3Spec::Other { ethertype } => {
                    l3.extend_from_slice(&self.payload);
                    *ethertype
                }
            };
            let mut bytes = Vec::new();
            bytes.extend_from_slice(&self.dst);
            bytes.extend_from_slice(&self.src);
            if let Some(v) = &self.vlan {
                bytes.extend_from_slice(&v.tpid.to_be_bytes());
                let tci = (u16::from(v.pcp) << 13) | (u16::from(v.dei) << 12) | v.vid;
                bytes.extend_from_slice(&tci.to_be_bytes());
                off.vlan = true;
            }
            bytes.extend_from_slice(&inner_type.to_be_bytes());
            off.l3 = bytes.len() as u32;
            bytes.extend_from_slice(&l3);
            if matches!(off.l3_kind, L3::Ipv4 | L3::Ipv6) {
                off.l4 += off.l3;
                off.end = bytes.len() as u32;
            }
            bytes.extend_from_slice(&self.pad);
            if !matches!(off.l3_kind, L3::Ipv4 | L3::Ipv6) {
                off.end = bytes.len() as u32;
            }
            Built {
                bytes,
                offsets: off,
            }
        }
    }

    fn mac(b: &[u8]) -> u128 {
        b.iter().fold(0u128, |v, &x| (v << 8) | u128::from(x))
    }

    /// L4 fields etherparse did not parse (fragments, SCTP), read with its header
    /// types from the IP payload.
    fn l4_by_hand(k: &mut Key, proto: u8, p: &[u8], v6: bool) {
        match proto {
            6 => {
                if let Ok((t, _)) = TcpHeader::from_slice(p) {
                    tcp(k, &t);
                }
            }
            17 => {
                if let Ok((u, _)) = UdpHeader::from_slice(p) {
                    Field::TpSrc.set(k, u128::from(u.source_port));
                    Field::TpDst.set(k, u128::from(u.destination_port));
                }
            }
            132 if p.len() >= 12 => {
                Field::TpSrc.set(k, mac(&p[0..2]));
                Field::TpDst.set(k, mac(&p[2..4]));
            }
            1 if !v6 => {
                if let Ok(i) = Icmpv4Slice::from_slice(p) {
                    Field::IcmpType.set(k, u128::from(i.type_u8()));
                    Field::IcmpCode.set(k, u128::from(i.code_u8()));
                }
            }
            58 if v6 => {
                if let Ok(i) = Icmpv6Slice::from_slice(p) {
                    Field::IcmpType.set(k, u128::from(i.type_u8()));
                    Field::IcmpCode.set(k, u128::from(i.code_u8()));
                }
            }
            _ => {}
        }
    }

    fn tcp(k: &mut Key, t: &TcpHeader) {
        Field::TpSrc.set(k, u128::from(t.source_port));
        Field::TpDst.set(k, u128::from(t.destination_port));
        let flags = [t.fin, t.syn, t.rst, t.psh, t.ack, t.urg, t.ece, t.cwr, t.ns]
            .iter()
            .enumerate()
            .fold(0u128, |f, (i, &b)| f | (u128::from(b) << i));
        Field::TcpFlags.set(k, flags);
    }

    /// The key etherparse's parse of `frame` gives (panics if etherparse rejects
    /// the frame: only for frames built from a [`Spec`]).
    pub fn reference_key(frame: &[u8], in_port: u32) -> Key {
        let h = PacketHeaders::from_ethernet_slice(frame).expect("etherparse parses it");
        let mut k = Key::ZERO;
        Field::InPort.set(&mut k, u128::from(in_port));
        let Some(LinkHeader::Ethernet2(eth)) = &h.link else {
            panic!("not Ethernet");
        };
        Field::EthDst.set(&mut k, mac(&eth.destination));
        Field::EthSrc.set(&mut k, mac(&eth.source));
        let mut et = eth.ether_type.0;
        if let Some(LinkExtHeader::Vlan(v)) = h.link_exts.first() {
            let tci = (u16::from(v.pcp.value()) << 13) | VLAN_PRESENT | v.vlan_id.value();
            Field::VlanTci.set(&mut k, u128::from(tci));
            et = v.ether_type.0;
        }
        Field::EthType.set(&mut k, u128::from(et));
        let mut later = false;
        let mut v6 = false;
        match &h.net {
            Some(NetHeaders::Ipv4(ip, _)) => {
                Field::IpProto.set(&mut k, u128::from(ip.protocol.0));
                Field::IpTtl.set(&mut k, u128::from(ip.time_to_live));
                Field::IpDscp.set(&mut k, u128::from(ip.dscp.value()));
                Field::IpEcn.set(&mut k, u128::from(ip.ecn.value()));
                Field::Ipv4Src.set(&mut k, mac(&ip.source));
                Field::Ipv4Dst.set(&mut k, mac(&ip.destination));
                let f = ip_frag(ip.more_fragments, ip.fragment_offset.value());
                Field::IpFrag.set(&mut k, u128::from(f));
                later = f == frag::LATER;
            }
            Some(NetHeaders::Ipv6(ip, exts)) => {
                v6 = true;
                let proto = exts.next_header(ip.next_header).expect("extension chain");
                Field::IpProto.set(&mut k, u128::from(proto.0));
                Field::IpTtl.set(&mut k, u128::from(ip.hop_limit));
                Field::IpDscp.set(&mut k, u128::from(ip.traffic_class >> 2));
                Field::IpEcn.set(&mut k, u128::from(ip.traffic_class & 3));
                Field::Ipv6Src.set(&mut k, mac(&ip.source));
                Field::Ipv6Dst.set(&mut k, mac(&ip.destination));
                Field::Ipv6Label.set(&mut k, u128::from(ip.flow_label.value()));
                if let Some(fh) = &exts.fragment {
                    let f = ip_frag(fh.more_fragments, fh.fragment_offset.value());
                    Field::IpFrag.set(&mut k, u128::from(f));
                    later = f == frag::LATER;
                }
            }
            Some(NetHeaders::Arp(a)) => {
                Field::ArpOp.set(&mut k, u128::from(a.operation.0));
                Field::ArpSha.set(&mut k, mac(a.sender_hw_addr()));
                Field::ArpSpa.set(&mut k, mac(a.sender_protocol_addr()));
                Field::ArpTha.set(&mut k, mac(a.target_hw_addr()));
                Field::ArpTpa.set(&mut k, mac(a.target_protocol_addr()));
            }
            None => {}
        }
        match &h.transport {
            Some(TransportHeader::Tcp(t)) => tcp(&mut k, t),
            Some(TransportHeader::Udp(u)) => {
                Field::TpSrc.set(&mut k, u128::from(u.source_port));
                Field::TpDst.set(&mut k, u128::from(u.destination_port));
            }
            Some(TransportHeader::Icmpv4(i)) => {
                let b = i.to_bytes();
                Field::IcmpType.set(&mut k, u128::from(b[0]));
                Field::IcmpCode.set(&mut k, u128::from(b[1]));
            }
            Some(TransportHeader::Icmpv6(i)) => {
                let b = i.to_bytes();
                Field::IcmpType.set(&mut k, u128::from(b[0]));
                Field::IcmpCode.set(&mut k, u128::from(b[1]));
            }
            Some(TransportHeader::Igmp(_)) => {}
            None => {
                if let (PayloadSlice::Ip(p), false) = (&h.payload, later) {
                    l4_by_hand(&mut k, p.ip_number.0, p.payload, v6);
                }
            }
        }
        k
    }

    // ---- strategies -----------------------------------------------------------------

    /// IP protocols that neither we nor etherparse parse further (no L4, no
    /// extension header, and not one etherparse decodes while we do not).
    const KNOWN_PROTOS: [u8; 15] = [0, 1, 2, 6, 17, 43, 44, 50, 51, 58, 60, 132, 135, 139, 140];
    /// EtherTypes either parser looks into.
    const KNOWN_TYPES: [u16; 7] = [0x0800, 0x0806, 0x86dd, 0x8100, 0x88a8, 0x9100, 0x88e5];

    pub fn arb_l4() -> impl Strategy<Value = L4Spec> {
        prop_oneof![
            3 => (any::<u16>(), any::<u16>(), any::<u32>(), any::<u32>(), 0u16..0x200, any::<u16>(), 0usize..=10)
                .prop_map(|(sport, dport, seq, ack, flags, window, opt_words)| L4Spec::Tcp {
                    sport, dport, seq, ack, flags, window, opt_words
                }),
            3 => (any::<u16>(), any::<u16>(), proptest::bool::weighted(0.2))
                .prop_map(|(sport, dport, no_csum)| L4Spec::Udp { sport, dport, no_csum }),
            1 => (any::<u16>(), any::<u16>(), any::<u32>())
                .prop_map(|(sport, dport, vtag)| L4Spec::Sctp { sport, dport, vtag }),
            2 => (arb_icmp_type(), any::<u8>(), any::<[u8; 4]>())
                .prop_map(|(ty, code, rest)| L4Spec::Icmp { ty, code, rest }),
            1 => any::<u8>()
                .prop_filter("a protocol someone parses", |p| !KNOWN_PROTOS.contains(p))
                .prop_map(|proto| L4Spec::Other { proto }),
        ]
    }

    /// ICMP types without the fixed-length timestamp messages (13, 14), which
    /// etherparse rejects at other lengths.
    pub fn arb_icmp_type() -> impl Strategy<Value = u8> {
        any::<u8>().prop_map(|t| if t == 13 || t == 14 { t + 2 } else { t })
    }

    fn arb_frag() -> impl Strategy<Value = (bool, u16)> {
        prop_oneof![3 => Just((false, 0u16)), 1 => (any::<bool>(), 0u16..8192)]
    }

    fn arb_exts() -> impl Strategy<Value = Vec<Ext>> {
        (
            proptest::option::weighted(0.3, 0u8..3),
            proptest::option::weighted(0.3, 0u8..3),
            proptest::option::weighted(0.3, (0u8..3, prop_oneof![Just(0u8), any::<u8>()])),
            proptest::option::weighted(0.3, (arb_frag(), any::<u32>())),
        )
            .prop_map(|(hbh, dst, rt, fr)| {
                let mut v = Vec::new();
                v.extend(hbh.map(Ext::HopByHop));
                v.extend(dst.map(Ext::DestOpts));
                v.extend(rt.map(|(len, segs_left)| Ext::Routing { len, segs_left }));
                v.extend(fr.map(|((mf, offset), id)| Ext::Fragment { offset, mf, id }));
                v
            })
    }

    pub fn arb_ipv4() -> impl Strategy<Value = L3Spec> {
        (
            any::<u8>(),
            any::<u8>(),
            any::<[u8; 4]>(),
            any::<[u8; 4]>(),
            prop_oneof![3 => Just(0usize), 1 => 0usize..=10],
            any::<bool>(),
            arb_frag(),
            any::<u16>(),
            arb_l4(),
        )
            .prop_map(
                |(tos, ttl, src, dst, opt_words, df, (mf, frag_offset), id, l4)| L3Spec::Ipv4 {
                    tos,
                    ttl,
                    src,
                    dst,
                    opt_words,
                    df,
                    mf,
                    frag_offset,
                    id,
                    l4,
                },
            )
    }

    pub fn arb_ipv6() -> impl Strategy<Value = L3Spec> {
        (
            any::<u8>(),
            0u32..0x10_0000,
            any::<u8>(),
            any::<[u8; 16]>(),
            any::<[u8; 16]>(),
            arb_exts(),
            arb_l4(),
        )
            .prop_map(|(tc, label, hop, src, dst, exts, l4)| L3Spec::Ipv6 {
                tc,
                label,
                hop,
                src,
                dst,
                exts,
                l4,
            })
    }

    pub fn arb_l3() -> impl Strategy<Value = L3Spec> {
        prop_oneof![
            4 => arb_ipv4(),
            3 => arb_ipv6(),
            1 => (any::<u16>(), any::<[u8; 6]>(), any::<[u8; 4]>(), any::<[u8; 6]>(), any::<[u8; 4]>())
                .prop_map(|(op, sha, spa, tha, tpa)| L3Spec::Arp { op, sha, spa, tha, tpa }),
            1 => any::<u16>()
                .prop_filter("an EtherType someone parses", |t| !KNOWN_TYPES.contains(t))
                .prop_map(|ethertype| L3Spec::Other { ethertype }),
        ]
    }

    pub fn arb_vlan() -> impl Strategy<Value = Option<Vlan>> {
        proptest::option::weighted(
            0.3,
            (
                prop_oneof![Just(0x8100u16), Just(0x88a8u16)],
                0u8..8,
                any::<bool>(),
                0u16..4096,
            )
                .prop_map(|(tpid, pcp, dei, vid)| Vlan {
                    tpid,
                    pcp,
                    dei,
                    vid,
                }),
        )
    }

    pub fn arb_spec_with(l3: impl Strategy<Value = L3Spec>) -> impl Strategy<Value = Spec> {
        (
            any::<[u8; 6]>(),
            any::<[u8; 6]>(),
            arb_vlan(),
            l3,
            proptest::collection::vec(any::<u8>(), 0..40),
            prop_oneof![3 => Just(Vec::new()), 1 => proptest::collection::vec(any::<u8>(), 1..8)],
        )
            .prop_map(|(dst, src, vlan, l3, payload, pad)| Spec {
                dst,
                src,
                vlan,
                l3,
                payload,
                pad,
            })
    }

    pub fn arb_spec() -> impl Strategy<Value = Spec> {
        arb_spec_with(arb_l3())
    }
}

#[cfg(test)]
mod tests {
    use super::testpkt::*;
    use super::*;
    use crate::flow::field::Field;
    use proptest::prelude::*;

    fn key_of(frame: &[u8]) -> (Key, Offsets) {
        let mut k = Key::ZERO;
        let off = extract(frame, 7, &mut k).expect("extract");
        (k, off)
    }

    fn get(k: &Key, f: Field) -> u128 {
        f.get(k)
    }

    /// 02:00:00:00:00:01 -> 02:00:00:00:00:02, 10.0.0.1:1234 -> 10.0.0.2:53 UDP,
    /// TTL 64, DSCP 46 ECN 1, 4 bytes of payload, padded to 60 bytes.
    const UDP4: [u8; 60] = [
        0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, 0x08, 0x00, // eth
        0x45, 0xb9, 0x00, 0x20, 0x12, 0x34, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, // ip..
        10, 0, 0, 1, 10, 0, 0, 2, // addresses
        0x04, 0xd2, 0x00, 0x35, 0x00, 0x0c, 0x00, 0x00, // udp
        0xde, 0xad, 0xbe, 0xef, // payload
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // padding
    ];

    #[test]
    fn udp_ipv4_fields() {
        let (k, off) = key_of(&UDP4);
        assert_eq!(get(&k, Field::InPort), 7);
        assert_eq!(get(&k, Field::EthDst), 0x0200_0000_0002);
        assert_eq!(get(&k, Field::EthSrc), 0x0200_0000_0001);
        assert_eq!(get(&k, Field::EthType), 0x0800);
        assert_eq!(get(&k, Field::VlanTci), 0);
        assert_eq!(get(&k, Field::IpProto), 17);
        assert_eq!(get(&k, Field::IpTtl), 64);
        assert_eq!(get(&k, Field::IpDscp), 46);
        assert_eq!(get(&k, Field::IpEcn), 1);
        assert_eq!(get(&k, Field::IpFrag), 0);
        assert_eq!(get(&k, Field::Ipv4Src), 0x0a00_0001);
        assert_eq!(get(&k, Field::Ipv4Dst), 0x0a00_0002);
        assert_eq!(get(&k, Field::TpSrc), 1234);
        assert_eq!(get(&k, Field::TpDst), 53);
        assert_eq!(
            off,
            Offsets {
                l3: 14,
                l4: 34,
                end: 46,
                l3_kind: L3::Ipv4,
                l4_kind: L4::Udp,
                ..Offsets::default()
            }
        );
    }

    #[test]
    fn vlan_tcp_fields() {
        // Same addresses, a tag (PCP 5, DEI, VID 100), TCP SYN|ACK|ECE|NS 80 -> 40000.
        let mut f = UDP4[..12].to_vec();
        f.extend_from_slice(&[0x81, 0x00, 0xb0, 0x64, 0x08, 0x00]);
        f.extend_from_slice(&[
            0x45, 0, 0, 40, 0, 0, 0, 0, 1, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ]);
        f.extend_from_slice(&[
            0, 80, 0x9c, 0x40, 0, 0, 0, 1, 0, 0, 0, 2, 0x51, 0x52, 0xff, 0xff,
        ]);
        f.extend_from_slice(&[0, 0, 0, 0]);
        let (k, off) = key_of(&f);
        assert_eq!(get(&k, Field::VlanTci), 0xb064 | 0x1000);
        assert_eq!(get(&k, Field::VlanVid), 0x1064);
        assert_eq!(get(&k, Field::VlanPcp), 5);
        assert_eq!(get(&k, Field::EthType), 0x0800);
        assert_eq!(get(&k, Field::IpProto), 6);
        assert_eq!(get(&k, Field::IpTtl), 1);
        assert_eq!(get(&k, Field::TpSrc), 80);
        assert_eq!(get(&k, Field::TpDst), 40000);
        assert_eq!(get(&k, Field::TcpFlags), 0x152);
        assert!(off.vlan && off.l3 == 18 && off.l4 == 38 && off.l4_kind == L4::Tcp);
        // A TCP data offset pointing past the packet: ports not taken.
        f[18 + 20 + 12] = 0xf0;
        let (k, off) = key_of(&f);
        assert_eq!(
            (get(&k, Field::TpSrc), off.l4_kind, off.truncated),
            (0, L4::None, true)
        );
        assert_eq!(get(&k, Field::IpProto), 6);
    }

    #[test]
    fn qinq_outer_tag_only() {
        let mut f = UDP4[..12].to_vec();
        f.extend_from_slice(&[0x88, 0xa8, 0x00, 0x0a, 0x81, 0x00, 0x00, 0x14, 0x08, 0x00]);
        f.extend_from_slice(&UDP4[14..]);
        let (k, off) = key_of(&f);
        assert_eq!(get(&k, Field::VlanTci), 0x100a);
        assert_eq!(get(&k, Field::EthType), 0x8100);
        assert_eq!(get(&k, Field::IpProto), 0);
        assert_eq!((off.l3, off.l3_kind, off.truncated), (18, L3::None, false));
    }

    #[test]
    fn arp_fields() {
        let f: [u8; 42] = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 1, 0x08, 0x06, // eth
            0, 1, 8, 0, 6, 4, 0, 2, 2, 0, 0, 0, 0, 1, 10, 0, 0, 1, 2, 0, 0, 0, 0, 2, 10, 0, 0, 2,
        ];
        let (k, off) = key_of(&f);
        assert_eq!(get(&k, Field::ArpOp), 2);
        assert_eq!(get(&k, Field::ArpSha), 0x0200_0000_0001);
        assert_eq!(get(&k, Field::ArpSpa), 0x0a00_0001);
        assert_eq!(get(&k, Field::ArpTha), 0x0200_0000_0002);
        assert_eq!(get(&k, Field::ArpTpa), 0x0a00_0002);
        assert_eq!(off.l3_kind, L3::Arp);
        // Not Ethernet/IPv4 ARP: L2 only, not an error.
        let mut g = f;
        g[19] = 16;
        let (k, off) = key_of(&g);
        assert_eq!(
            (get(&k, Field::ArpOp), off.l3_kind, off.truncated),
            (0, L3::None, false)
        );
        let (k, off) = key_of(&f[..41]);
        assert_eq!((get(&k, Field::ArpSpa), off.truncated), (0, true));
        assert_eq!(get(&k, Field::EthSrc), 0x0200_0000_0001);
    }

    #[test]
    fn icmp_and_fragments() {
        let mut f = UDP4.to_vec();
        f[23] = 1; // ICMP
        f[34..38].copy_from_slice(&[8, 0, 0, 0]); // echo request
        let (k, off) = key_of(&f);
        assert_eq!((get(&k, Field::IcmpType), get(&k, Field::IcmpCode)), (8, 0));
        assert_eq!(get(&k, Field::TpSrc), 8);
        assert_eq!(off.l4_kind, L4::Icmp);
        // First fragment (MF): L4 parsed, ip_frag 1.
        let mut f = UDP4.to_vec();
        f[20] = 0x20;
        let (k, off) = key_of(&f);
        assert_eq!(
            (get(&k, Field::IpFrag), get(&k, Field::TpDst), off.ip_frag),
            (1, 53, 1)
        );
        // Later fragment: no L4, ip_proto kept.
        f[21] = 0x01;
        let (k, off) = key_of(&f);
        assert_eq!((get(&k, Field::IpFrag), get(&k, Field::TpDst)), (3, 0));
        assert_eq!(
            (get(&k, Field::IpProto), off.l4_kind, off.truncated),
            (17, L4::None, false)
        );
    }

    #[test]
    fn malformed_ipv4_stays_l2() {
        for (i, v) in [(14, 0x55u8), (14, 0x44), (16, 0x01), (17, 0x10)] {
            let mut f = UDP4.to_vec();
            f[i] = v;
            let (k, off) = key_of(&f);
            assert_eq!(get(&k, Field::EthType), 0x0800);
            assert_eq!(get(&k, Field::Ipv4Src), 0, "byte {i} = {v:#x}");
            assert!(off.truncated && off.l3_kind == L3::None);
        }
        // The UDP length is not checked, the IP total length bounds it: padding is
        // not L4 (a 2-byte IP payload cannot hold a UDP header).
        let mut f = UDP4.to_vec();
        f[17] = 22;
        let (k, off) = key_of(&f);
        assert_eq!(
            (get(&k, Field::TpSrc), off.truncated, off.end),
            (0, true, 36)
        );
    }

    #[test]
    fn ipv6_with_extension_headers() {
        let mut f = UDP4[..12].to_vec();
        f.extend_from_slice(&[0x86, 0xdd]);
        // version 6, TC 0xb9, label 0x12345; payload 8 + 16 + 8 + 8; next: hop-by-hop.
        f.extend_from_slice(&[0x6b, 0x91, 0x23, 0x45, 0, 40, 0, 33]);
        f.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        f.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        f.extend_from_slice(&[43, 0, 1, 4, 0, 0, 0, 0]); // hop-by-hop -> routing
        f.extend_from_slice(&[44, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // -> frag
        f.extend_from_slice(&[17, 0, 0, 1, 0, 0, 0, 9]); // offset 0, MF -> UDP
        f.extend_from_slice(&[0x04, 0xd2, 0x00, 0x35, 0x00, 0x08, 0, 0]);
        let (k, off) = key_of(&f);
        assert_eq!(get(&k, Field::Ipv6Src), 0xfd00_u128 << 112 | 1);
        assert_eq!(get(&k, Field::Ipv6Dst), 0xfd00_u128 << 112 | 2);
        assert_eq!(get(&k, Field::Ipv6Label), 0x12345);
        assert_eq!(
            (get(&k, Field::IpDscp), get(&k, Field::IpEcn)),
            (0xb9 >> 2, 1)
        );
        assert_eq!((get(&k, Field::IpProto), get(&k, Field::IpTtl)), (17, 33));
        assert_eq!((get(&k, Field::IpFrag), get(&k, Field::TpDst)), (1, 53));
        assert_eq!((off.l4, off.end, off.l4_kind), (86, 94, L4::Udp));
        assert!(!off.ipv6_routing);
        // Segments left in the routing header.
        f[54 + 8 + 3] = 1;
        assert!(key_of(&f).1.ipv6_routing);
        // A later fragment: proto from the fragment header, no L4.
        f[54 + 24 + 2] = 0x01;
        let (k, off) = key_of(&f);
        assert_eq!((get(&k, Field::IpFrag), get(&k, Field::IpProto)), (3, 17));
        assert_eq!((get(&k, Field::TpDst), off.l4_kind), (0, L4::None));
        // Extension header running past the payload.
        f[54 + 8 + 1] = 9;
        let (k, off) = key_of(&f);
        assert!(off.truncated);
        assert_eq!((get(&k, Field::IpProto), get(&k, Field::IpTtl)), (43, 33));
    }

    #[test]
    fn runts_and_truncated_tags() {
        for n in 0..14 {
            let mut k = Key::ZERO;
            assert_eq!(extract(&UDP4[..n], 0, &mut k), Err(ExtractError::Runt(n)));
        }
        let f = [0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 2, 0x81, 0x00, 0x00, 0x05];
        let (k, off) = key_of(&f);
        assert_eq!(
            (get(&k, Field::EthType), get(&k, Field::VlanTci)),
            (0x8100, 0)
        );
        assert!(off.truncated && !off.vlan);
    }

    #[test]
    fn leaves_tunnel_and_metadata_words() {
        let mut k = Key::ALL_ONES;
        extract(&UDP4, 3, &mut k).expect("extract");
        assert!(k.0[W_TUN_ID..].iter().all(|&w| w == u64::MAX));
        // Every packet word is rewritten: nothing left over from an earlier frame.
        let mut fresh = Key::ALL_ONES;
        fresh.0[..W_TUN_ID].fill(0);
        extract(&UDP4, 3, &mut fresh).expect("extract");
        assert_eq!(k, fresh);
    }

    /// Whether every packet field of `part` is 0 or the one in `full`.
    fn subset(part: &Key, full: &Key) -> bool {
        Field::ALL
            .iter()
            .filter(|f| f.def().word < W_TUN_ID && **f != Field::EthType)
            .all(|f| f.get(part) == 0 || f.get(part) == f.get(full))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn matches_etherparse(spec in arb_spec(), in_port in any::<u32>()) {
            let b = spec.build();
            let mut k = Key::ZERO;
            let off = extract(&b.bytes, in_port, &mut k).expect("extract");
            prop_assert_eq!(k, reference_key(&b.bytes, in_port), "{:02x?}", b.bytes);
            prop_assert_eq!(off, b.offsets);
        }

        #[test]
        fn truncations_keep_a_prefix(spec in arb_spec()) {
            let b = spec.build();
            let (full, full_off) = key_of(&b.bytes);
            for n in 0..b.bytes.len() {
                let mut k = Key::ZERO;
                match extract(&b.bytes[..n], 7, &mut k) {
                    Err(ExtractError::Runt(m)) => prop_assert!(n < 14 && m == n),
                    Ok(off) => {
                        prop_assert!(n >= 14);
                        prop_assert_eq!(Field::EthSrc.get(&k), Field::EthSrc.get(&full));
                        prop_assert_eq!(Field::EthDst.get(&k), Field::EthDst.get(&full));
                        prop_assert!(subset(&k, &full), "{} of {:02x?}", n, b.bytes);
                        let need = match full_off.l3_kind {
                            L3::None => 0,
                            L3::Arp => full_off.l3 as usize + 28,
                            L3::Ipv4 | L3::Ipv6 => full_off.end as usize,
                        };
                        if n < need {
                            prop_assert!(off.truncated, "{} of {:02x?}", n, b.bytes);
                        }
                        prop_assert!(off.end as usize <= n);
                    }
                }
            }
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..160)) {
            let mut k = Key::ZERO;
            let _ = extract(&bytes, 0, &mut k);
        }

        #[test]
        fn never_panics_past_l2(
            etype in prop_oneof![Just(0x0800u16), Just(0x86dd), Just(0x0806), Just(0x8100), Just(0x88a8)],
            inner in prop_oneof![Just(0x0800u16), Just(0x86dd), Just(0x0806), Just(0x8100)],
            ver in 0u8..16,
            rest in proptest::collection::vec(any::<u8>(), 0..160),
        ) {
            let mut f = vec![0u8; 12];
            f.extend_from_slice(&etype.to_be_bytes());
            if etype == 0x8100 || etype == 0x88a8 {
                f.extend_from_slice(&[0, 1]);
                f.extend_from_slice(&inner.to_be_bytes());
            }
            let at = f.len();
            f.extend_from_slice(&rest);
            if let Some(b) = f.get_mut(at) {
                *b = (ver << 4) | (*b & 0x0f);
            }
            let mut k = Key::ZERO;
            let off = extract(&f, 0, &mut k).expect("long enough");
            prop_assert!(off.end as usize <= f.len());
            if off.l4_valid() {
                prop_assert!(off.l3 < off.l4 && off.l4 <= off.end);
            }
        }
    }
}

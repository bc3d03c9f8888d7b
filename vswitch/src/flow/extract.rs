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

/// The packet words of a key as they are being built.
#[derive(Default)]
struct Words {
    /// ip_proto (0..8) and ip_ttl (8..16), to go to bits 48..64 of word 1.
    proto_ttl: u64,
    /// ip_tos (0..8) and ip_frag (8..16), to go to bits 48..64 of word 2.
    tos_frag: u64,
    nw: u64,
    tp: u64,
    v6_src: (u64, u64),
    v6_dst: (u64, u64),
    label: u64,
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
    let dst = be64([
        eth[0], eth[1], eth[2], eth[3], eth[4], eth[5], eth[6], eth[7],
    ]) >> 16;
    let src = mac(&[eth[6], eth[7], eth[8], eth[9], eth[10], eth[11]]);
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

    let mut w = Words::default();
    let l3 = off.l3 as usize;
    match etype {
        eth_type::IPV4 => ipv4(frame, l3, &mut w, &mut off),
        eth_type::IPV6 => ipv6(frame, l3, &mut w, &mut off),
        eth_type::ARP => arp(frame, l3, &mut w, &mut off),
        _ => {}
    }

    let k = &mut key.0;
    k[W_PORT_TYPE_VLAN] = u64::from(in_port) | (u64::from(etype) << 32) | (u64::from(tci) << 48);
    k[W_ETH_SRC] = src | (w.proto_ttl << 48);
    k[W_ETH_DST] = dst | (w.tos_frag << 48);
    k[W_NW] = w.nw;
    k[W_TP] = w.tp;
    k[W_IPV6_SRC] = w.v6_src.0;
    k[W_IPV6_SRC + 1] = w.v6_src.1;
    k[W_IPV6_DST] = w.v6_dst.0;
    k[W_IPV6_DST + 1] = w.v6_dst.1;
    k[W_IPV6_LABEL] = w.label;
    Ok(off)
}

#[inline(always)]
fn ipv4(frame: &[u8], l3: usize, w: &mut Words, off: &mut Offsets) {
    let Some(h) = chunk::<20>(frame, l3) else {
        off.truncated = true;
        return;
    };
    let ihl = usize::from(h[0] & 0x0f) * 4;
    let total = usize::from(be16([h[2], h[3]]));
    let end = l3 + total;
    if h[0] >> 4 != 4 || ihl < 20 || total < ihl || end > frame.len() {
        off.truncated = true;
        return;
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
    w.proto_ttl = u64::from(proto) | (u64::from(h[8]) << 8);
    w.tos_frag = u64::from(h[1]) | (u64::from(ip_frag) << 8);
    w.nw = u64::from(be32([h[12], h[13], h[14], h[15]]))
        | (u64::from(be32([h[16], h[17], h[18], h[19]])) << 32);
    off.l3_kind = L3::Ipv4;
    off.l4 = (l3 + ihl) as u32;
    off.end = end as u32;
    off.ip_frag = ip_frag;
    if ip_frag != frag::LATER {
        l4(frame, l3 + ihl, end, proto, false, w, off);
    }
}

#[inline(always)]
fn ipv6(frame: &[u8], l3: usize, w: &mut Words, off: &mut Offsets) {
    let Some(h) = chunk::<40>(frame, l3) else {
        off.truncated = true;
        return;
    };
    let end = l3 + 40 + usize::from(be16([h[4], h[5]]));
    if h[0] >> 4 != 6 || end > frame.len() {
        off.truncated = true;
        return;
    }
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
    w.v6_src = (word(8), word(16));
    w.v6_dst = (word(24), word(32));
    w.label = u64::from(vtcfl & 0x000f_ffff);
    let tos = u64::from((vtcfl >> 20) as u8);
    let hop_limit = u64::from(h[7]);
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
    w.proto_ttl = u64::from(nxt) | (hop_limit << 8);
    w.tos_frag = tos | (u64::from(ip_frag) << 8);
    off.ip_frag = ip_frag;
    if !complete {
        off.truncated = true;
        return;
    }
    off.l4 = pos as u32;
    if ip_frag != frag::LATER {
        l4(frame, pos, end, nxt, true, w, off);
    }
}

#[inline(always)]
fn l4(frame: &[u8], l4: usize, end: usize, proto: u8, v6: bool, w: &mut Words, off: &mut Offsets) {
    let Some(p) = frame.get(l4..end) else {
        off.truncated = true;
        return;
    };
    let ports = |h: &[u8; 4]| u64::from(be16([h[0], h[1]])) | (u64::from(be16([h[2], h[3]])) << 16);
    match proto {
        ip_proto::TCP => match p.first_chunk::<20>() {
            Some(h)
                if usize::from(h[12] >> 4) * 4 >= 20 && usize::from(h[12] >> 4) * 4 <= p.len() =>
            {
                let flags = be16([h[12], h[13]]) & 0x0fff;
                w.tp = ports(&[h[0], h[1], h[2], h[3]]) | (u64::from(flags) << 32);
                off.l4_kind = L4::Tcp;
            }
            _ => off.truncated = true,
        },
        ip_proto::UDP | ip_proto::SCTP => {
            let need = if proto == ip_proto::UDP { 8 } else { 12 };
            match p.first_chunk::<4>() {
                Some(h) if p.len() >= need => {
                    w.tp = ports(h);
                    off.l4_kind = if proto == ip_proto::UDP {
                        L4::Udp
                    } else {
                        L4::Sctp
                    };
                }
                _ => off.truncated = true,
            }
        }
        ip_proto::ICMP | ip_proto::ICMPV6 if v6 == (proto == ip_proto::ICMPV6) => {
            match p.first_chunk::<2>() {
                Some(h) if p.len() >= 8 => {
                    w.tp = u64::from(h[0]) | (u64::from(h[1]) << 16);
                    off.l4_kind = if v6 { L4::Icmpv6 } else { L4::Icmp };
                }
                _ => off.truncated = true,
            }
        }
        _ => {}
    }
}

#[inline(always)]
fn arp(frame: &[u8], l3: usize, w: &mut Words, off: &mut Offsets) {
    let Some(a) = chunk::<28>(frame, l3) else {
        off.truncated = true;
        return;
    };
    // Ethernet hardware, IPv4 protocol, 6- and 4-byte addresses: the only ARP the
    // key has room for. Others are valid frames, just not ones we look into.
    if a[0..6] != [0, 1, 0x08, 0x00, 6, 4] {
        return;
    }
    let op = u64::from(be16([a[6], a[7]]));
    w.v6_src.0 = mac(&[a[8], a[9], a[10], a[11], a[12], a[13]]);
    w.nw = u64::from(be32([a[14], a[15], a[16], a[17]]))
        | (u64::from(be32([a[24], a[25], a[26], a[27]])) << 32);
    w.v6_dst.0 = mac(&[a[18], a[19], a[20], a[21], a[22], a[23]]);
    w.tp = op << 44;
    off.l3_kind = L3::Arp;
}

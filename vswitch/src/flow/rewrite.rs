//! In-place header rewrites for the execution step: `set_field` on every writable
//! packet field, `dec_ttl`, `push_vlan` and `pop_vlan`, on a frame whose headers
//! [`extract`] located.
//!
//! Hand-written rather than built on etherparse: its headers are decoded copies that
//! would have to be re-serialised (and their checksums recomputed over the whole
//! packet) after each change; here a write touches only the bytes of the field and
//! fixes the checksums incrementally.
//!
//! Checksums follow RFC 1624 (eqn. 3, `HC' = ~(~HC + ~m + m')`, see
//! [`incremental_csum_update`]):
//! - the IPv4 header checksum when an IPv4 address, TTL or TOS changes;
//! - the TCP, UDP and ICMPv6 checksums when an address of their pseudo-header
//!   changes (IPv4 and IPv6), and when a port or an ICMPv6 type/code changes;
//! - the ICMPv4 checksum when its type or code changes (no pseudo-header);
//! - a UDP checksum of 0 means "none" and stays 0; a computed 0 is sent as 0xffff.
//!   (IPv6 too, as OVS does, though RFC 8200 makes the checksum mandatory there:
//!   RFC 6935 zero-checksum tunnels must stay zero);
//! - SCTP's CRC32c cannot be updated incrementally: a port change recomputes it over
//!   the whole SCTP packet, the one non-incremental case. IP addresses are not in
//!   it, so address changes leave it alone;
//! - an IPv6 `ipv6_dst` change leaves the L4 checksum alone when a routing header
//!   with segments left is present (the pseudo-header has the final destination).
//!
//! Fragments: a later fragment has no L4 header, so L4 fields cannot be written
//! ([`RewriteError::NotApplicable`]). A first fragment carries the L4 header and its
//! checksum covers the whole datagram; since the incremental update is linear it
//! stays exact, so TCP/UDP/ICMP ports, types and codes are written and IP address
//! changes still fix the L4 checksum there (as OVS does). SCTP ports on any fragment
//! are refused ([`RewriteError::Fragment`]): the CRC covers bytes this frame lacks.
//!
//! Every function takes an optional [`Key`]: when given, it is kept equal to what
//! [`extract`] would now produce for the frame (the written field holds its new
//! value). Nothing here panics on any bytes or offsets, and nothing allocates; an
//! `Err` means the frame and key are unchanged.

use super::extract::{self, ETH_HEADER_LEN, L3, L4, Offsets, VLAN_TAG_LEN};
use super::field::{Field, FieldDef, eth_type};
use super::key::*;
use crate::pool::MAX_FRAME_LEN;

/// Why a rewrite did not happen (the frame is unchanged).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RewriteError {
    /// The frame does not have the header the field lives in (no VLAN tag for
    /// `vlan_vid`, not IPv4 for `ip_src`, a later fragment for `tp_dst`...).
    #[error("the frame has no header for this field")]
    NotApplicable,
    /// Not writable: in_port, eth_type, ip_proto, ip_frag, tcp_flags, ct_state,
    /// ct_zone.
    #[error("read-only field")]
    ReadOnly,
    /// SCTP ports on a fragment: the CRC32c covers bytes this frame does not hold.
    #[error("cannot rewrite the L4 header of a fragment")]
    Fragment,
    /// `push_vlan` would make the frame longer than its buffer.
    #[error("no room in the buffer for a VLAN tag")]
    NoRoom,
    /// The offsets do not fit the frame (they belong to another frame).
    #[error("offsets outside the frame")]
    OutOfBounds,
}

/// `dec_ttl` on a TTL or hop limit of 0 or 1: the packet must be dropped (or punted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("TTL expired")]
pub struct TtlExpired;

// ---- checksums --------------------------------------------------------------------

/// One's complement addition of two 16-bit words (end-around carry).
#[inline(always)]
fn add1c(a: u16, b: u16) -> u16 {
    let (s, carry) = a.overflowing_add(b);
    s.wrapping_add(u16::from(carry))
}

/// The part of RFC 1624 eqn. 3 that does not depend on the checksum, `~m + m'`,
/// summed over the changed 16-bit words.
#[inline(always)]
fn delta_bytes(old: &[u8], new: &[u8]) -> u16 {
    #[inline(always)]
    fn word(c: &[u8]) -> u16 {
        match *c {
            [a, b, ..] => u16::from_be_bytes([a, b]),
            [a] => u16::from(a) << 8,
            [] => 0,
        }
    }
    let mut sum = 0u64;
    for (o, n) in old.chunks(2).zip(new.chunks(2)) {
        sum += u64::from(!word(o)) + u64::from(word(n));
    }
    // Fold 64 -> 16 bits (the sum overflows only past 2^47 words).
    let s = (sum & 0xffff_ffff) + (sum >> 32);
    let s = (s & 0xffff) + (s >> 16);
    let s = (s & 0xffff) + (s >> 16);
    add1c(s as u16, (s >> 16) as u16)
}

/// `~m + m'` for one 16-bit word.
#[inline(always)]
fn delta16(old: u16, new: u16) -> u16 {
    add1c(!old, new)
}

/// `~m + m'` for a 32-bit value (two words).
#[inline(always)]
fn delta32(old: u32, new: u32) -> u16 {
    let (o, n) = (!old, new);
    add1c(
        add1c((o >> 16) as u16, o as u16),
        add1c((n >> 16) as u16, n as u16),
    )
}

/// Applies a `~m + m'` sum to a checksum: `HC' = ~(~HC + ~m + m')`.
#[inline(always)]
fn apply(csum: u16, delta: u16) -> u16 {
    !add1c(!csum, delta)
}

/// The checksum after the 16-bit-aligned bytes `old` were replaced by `new` (RFC
/// 1624 eqn. 3: `HC' = ~(~HC + ~m + m')`, one's complement sums).
///
/// `old` and `new` must start at an even offset from the start of the checksummed
/// data and have the same length (only the common prefix counts); an
/// odd last byte is the high byte of a word whose low byte did not change.
#[inline]
pub fn incremental_csum_update(old_csum: u16, old: &[u8], new: &[u8]) -> u16 {
    apply(old_csum, delta_bytes(old, new))
}

/// [`incremental_csum_update`] for one 16-bit word.
#[inline(always)]
pub fn csum_update16(old_csum: u16, old: u16, new: u16) -> u16 {
    apply(old_csum, delta16(old, new))
}

/// [`incremental_csum_update`] for a 32-bit value (two words).
#[inline(always)]
pub fn csum_update32(old_csum: u16, old: u32, new: u32) -> u16 {
    apply(old_csum, delta32(old, new))
}

/// CRC32c of `data` as SCTP uses it (RFC 4960 appendix B; stored little-endian).
/// The crate uses the CPU's CRC32 instruction where there is one.
#[inline]
pub fn crc32c(data: &[u8]) -> u32 {
    crc32c::crc32c(data)
}

// ---- byte access --------------------------------------------------------------------
//
// Each rewrite borrows the whole header it touches as a fixed-size array (one bounds
// check), so the field and checksum offsets inside it are constants the compiler
// checks, and a write cannot stop half-way: everything is borrowed before anything
// is written.

use RewriteError::{NotApplicable, OutOfBounds};

#[inline(always)]
fn chunk_mut<const N: usize>(b: &mut [u8], at: usize) -> Result<&mut [u8; N], RewriteError> {
    b.get_mut(at..)
        .and_then(|s| s.first_chunk_mut::<N>())
        .ok_or(OutOfBounds)
}

#[inline(always)]
fn rd16(b: &[u8], at: usize) -> Result<u16, RewriteError> {
    b.get(at..)
        .and_then(|s| s.first_chunk::<2>())
        .map(|c| u16::from_be_bytes(*c))
        .ok_or(OutOfBounds)
}

#[inline(always)]
fn wr16(b: &mut [u8], at: usize, v: u16) -> Result<(), RewriteError> {
    *chunk_mut::<2>(b, at)? = v.to_be_bytes();
    Ok(())
}

/// The 16-bit word at constant offset `AT` of a header array.
#[inline(always)]
fn get16<const N: usize, const AT: usize>(h: &[u8; N]) -> u16 {
    const { assert!(AT + 2 <= N) };
    u16::from_be_bytes([h[AT], h[AT + 1]])
}

#[inline(always)]
fn put16<const N: usize, const AT: usize>(h: &mut [u8; N], v: u16) {
    const { assert!(AT + 2 <= N) };
    [h[AT], h[AT + 1]] = v.to_be_bytes();
}

#[inline(always)]
fn get32<const N: usize, const AT: usize>(h: &[u8; N]) -> u32 {
    const { assert!(AT + 4 <= N) };
    u32::from_be_bytes([h[AT], h[AT + 1], h[AT + 2], h[AT + 3]])
}

#[inline(always)]
fn put32<const N: usize, const AT: usize>(h: &mut [u8; N], v: u32) {
    const { assert!(AT + 4 <= N) };
    [h[AT], h[AT + 1], h[AT + 2], h[AT + 3]] = v.to_be_bytes();
}

/// `(old & !m) | (v & m)` on the `N`-byte big-endian field at `at` (N <= 16);
/// returns the old and new values.
#[inline(always)]
fn put_masked<const N: usize>(
    b: &mut [u8],
    at: usize,
    v: u128,
    m: u128,
) -> Result<(u128, u128), RewriteError> {
    const { assert!(N <= 16) };
    let c = chunk_mut::<N>(b, at)?;
    let mut wide = [0u8; 16];
    wide[16 - N..].copy_from_slice(c);
    let old = u128::from_be_bytes(wide);
    let new = (old & !m) | (v & m);
    c.copy_from_slice(&new.to_be_bytes()[16 - N..]);
    Ok((old, new))
}

/// A UDP checksum after an update: 0 ("none") stays 0, a computed 0 is 0xffff.
#[inline(always)]
fn udp_apply(old: u16, delta: u16) -> u16 {
    match (old, apply(old, delta)) {
        (0, _) => 0,
        (_, 0) => 0xffff,
        (_, c) => c,
    }
}

/// The L4 checksum a pseudo-header change affects, borrowed: TCP, UDP (with the
/// UDP rules), ICMPv6; None for ICMPv4, SCTP, no L4.
#[inline(always)]
fn pseudo_csum(tail: &mut [u8], kind: L4) -> Result<Option<(&mut [u8; 2], bool)>, RewriteError> {
    Ok(match kind {
        L4::Tcp => Some((chunk_mut::<2>(tail, 16)?, false)),
        L4::Udp => Some((chunk_mut::<2>(tail, 6)?, true)),
        L4::Icmpv6 => Some((chunk_mut::<2>(tail, 2)?, false)),
        L4::None | L4::Icmp | L4::Sctp => None,
    })
}

#[inline(always)]
fn fix_pseudo(c: Option<(&mut [u8; 2], bool)>, delta: u16) {
    if let Some((c, udp)) = c {
        let old = u16::from_be_bytes(*c);
        *c = if udp {
            udp_apply(old, delta)
        } else {
            apply(old, delta)
        }
        .to_be_bytes();
    }
}

/// The IPv4 header and the L4 bytes after it (the L4 slice empty when the offsets
/// have no L4).
#[inline(always)]
fn ipv4_split<'a>(
    frame: &'a mut [u8],
    off: &Offsets,
) -> Result<(&'a mut [u8; 20], &'a mut [u8]), RewriteError> {
    if off.l3_kind != L3::Ipv4 {
        return Err(NotApplicable);
    }
    let (head, tail) = frame
        .split_at_mut_checked(off.l4 as usize)
        .ok_or(OutOfBounds)?;
    Ok((chunk_mut::<20>(head, off.l3 as usize)?, tail))
}

#[inline(always)]
fn ipv6_split<'a>(
    frame: &'a mut [u8],
    off: &Offsets,
) -> Result<(&'a mut [u8; 40], &'a mut [u8]), RewriteError> {
    if off.l3_kind != L3::Ipv6 {
        return Err(NotApplicable);
    }
    let (head, tail) = frame
        .split_at_mut_checked(off.l4 as usize)
        .ok_or(OutOfBounds)?;
    Ok((chunk_mut::<40>(head, off.l3 as usize)?, tail))
}

// ---- set_field ----------------------------------------------------------------------------

/// Writes `value` under `mask` (bits outside `mask` keep their value) into `field`
/// of the frame, fixing checksums, and into `key` when given.
///
/// Metadata fields (tunnel, conntrack mark and label, registers, metadata) exist
/// only in the key: they are written there (if given) and the frame is untouched.
/// `vlan_tci` writes PCP and VID (the present bit is the key's, the wire DEI bit is
/// kept); `vlan_vid` writes the low 12 bits. Errors leave frame and key unchanged.
#[inline]
pub fn set_field(
    frame: &mut [u8],
    off: &Offsets,
    field: Field,
    value: u128,
    mask: u128,
    key: Option<&mut Key>,
) -> Result<(), RewriteError> {
    use Field as F;
    // One dispatch; inside each arm the field is a constant, and `sync!` turns the
    // key update into one masked store into a fixed word.
    macro_rules! sync {
        ($f:expr, $new:expr) => {{
            let new = $new;
            if let Some(k) = key {
                const D: &FieldDef = $f.def();
                set_key::<{ D.word }, { D.shift }, { D.bits }>(k, new);
            }
            Ok(())
        }};
    }
    match field {
        F::EthDst => sync!(F::EthDst, put_masked::<6>(frame, 0, value, mask)?.1),
        F::EthSrc => sync!(F::EthSrc, put_masked::<6>(frame, 6, value, mask)?.1),
        F::VlanTci => {
            sync!(
                F::VlanTci,
                vlan(frame, off, value as u16, mask as u16 & !VLAN_PRESENT)?
            )
        }
        F::VlanVid => sync!(
            F::VlanTci,
            vlan(frame, off, value as u16, mask as u16 & 0x0fff)?
        ),
        F::VlanPcp => {
            let m = (mask as u16 & 7) << 13;
            sync!(F::VlanTci, vlan(frame, off, (value as u16) << 13, m)?)
        }
        F::Ipv4Src => sync!(
            F::Ipv4Src,
            ipv4_addr::<12>(frame, off, value as u32, mask as u32)?
        ),
        F::Ipv4Dst => sync!(
            F::Ipv4Dst,
            ipv4_addr::<16>(frame, off, value as u32, mask as u32)?
        ),
        F::IpTtl => sync!(F::IpTtl, ip_ttl(frame, off, value as u8, mask as u8)?),
        F::IpDscp => {
            let tos = ip_tos(frame, off, (value as u8) << 2, (mask as u8) << 2)?;
            sync!(F::IpDscp, u128::from(tos >> 2))
        }
        F::IpEcn => {
            let tos = ip_tos(frame, off, value as u8 & 3, mask as u8 & 3)?;
            sync!(F::IpEcn, u128::from(tos & 3))
        }
        F::Ipv6Src => sync!(F::Ipv6Src, ipv6_addr::<8>(frame, off, value, mask)?),
        F::Ipv6Dst => sync!(F::Ipv6Dst, ipv6_addr::<24>(frame, off, value, mask)?),
        F::Ipv6Label => sync!(
            F::Ipv6Label,
            ipv6_label(frame, off, value as u32, mask as u32)?
        ),
        F::TpSrc => sync!(
            F::TpSrc,
            tp_port::<0>(frame, off, value as u16, mask as u16)?
        ),
        F::TpDst => sync!(
            F::TpDst,
            tp_port::<2>(frame, off, value as u16, mask as u16)?
        ),
        F::IcmpType => {
            let tc = icmp(frame, off, (value as u16) << 8, (mask as u16) << 8)?;
            sync!(F::IcmpType, u128::from(tc >> 8))
        }
        F::IcmpCode => {
            let tc = icmp(frame, off, value as u16 & 0xff, mask as u16 & 0xff)?;
            sync!(F::IcmpCode, u128::from(tc & 0xff))
        }
        F::ArpOp => sync!(F::ArpOp, arp::<6, 2>(frame, off, value, mask)?),
        F::ArpSha => sync!(F::ArpSha, arp::<8, 6>(frame, off, value, mask)?),
        F::ArpSpa => sync!(F::ArpSpa, arp::<14, 4>(frame, off, value, mask)?),
        F::ArpTha => sync!(F::ArpTha, arp::<18, 6>(frame, off, value, mask)?),
        F::ArpTpa => sync!(F::ArpTpa, arp::<24, 4>(frame, off, value, mask)?),
        _ => {
            // Everything else is metadata (key only) or read-only, as the field
            // table says.
            if !field.def().writable {
                return Err(RewriteError::ReadOnly);
            }
            if field.is_packet_field() {
                return Err(NotApplicable);
            }
            if let Some(k) = key {
                field.set_masked(k, value, mask);
            }
            Ok(())
        }
    }
}

/// `Field::set` for a field known at compile time: `BITS` bits at `SHIFT` in word
/// `W` (128 bits: words `W`, `W + 1`), from the field table.
#[inline(always)]
fn set_key<const W: usize, const SHIFT: u32, const BITS: u32>(k: &mut Key, v: u128) {
    const { assert!(BITS == 128 || (BITS < 64 && SHIFT + BITS <= 64)) };
    const { assert!(W + ((BITS == 128) as usize) < KEY_WORDS) };
    if BITS == 128 {
        k.0[W] = (v >> 64) as u64;
        k.0[W + (BITS == 128) as usize] = v as u64;
    } else {
        let m = ((1u64 << (BITS % 64)) - 1) << (SHIFT % 64);
        k.0[W] = (k.0[W] & !m) | (((v as u64) << (SHIFT % 64)) & m);
    }
}

/// VLAN TCI bits under `m`; returns the key's new vlan_tci (present bit set).
#[inline(always)]
fn vlan(frame: &mut [u8], off: &Offsets, v: u16, m: u16) -> Result<u128, RewriteError> {
    if !off.vlan {
        return Err(NotApplicable);
    }
    let tag = chunk_mut::<4>(frame, 12)?;
    let new = (get16::<4, 2>(tag) & !m) | (v & m);
    put16::<4, 2>(tag, new);
    Ok(u128::from(new | VLAN_PRESENT))
}

#[inline(always)]
fn ipv4_addr<const AT: usize>(
    frame: &mut [u8],
    off: &Offsets,
    v: u32,
    m: u32,
) -> Result<u128, RewriteError> {
    let (ip, tail) = ipv4_split(frame, off)?;
    let l4c = pseudo_csum(tail, off.l4_kind)?;
    let old = get32::<20, AT>(ip);
    let new = (old & !m) | (v & m);
    put32::<20, AT>(ip, new);
    let d = delta32(old, new);
    put16::<20, 10>(ip, apply(get16::<20, 10>(ip), d));
    fix_pseudo(l4c, d);
    Ok(u128::from(new))
}

#[inline(always)]
fn ipv6_addr<const AT: usize>(
    frame: &mut [u8],
    off: &Offsets,
    v: u128,
    m: u128,
) -> Result<u128, RewriteError> {
    let (ip, tail) = ipv6_split(frame, off)?;
    // With segments left in a routing header the pseudo-header has the final
    // destination, not this one.
    let skip = AT == 24 && off.ipv6_routing;
    let l4c = if skip {
        None
    } else {
        pseudo_csum(tail, off.l4_kind)?
    };
    let (old, new) = put_masked::<16>(ip, AT, v, m)?;
    fix_pseudo(l4c, delta_bytes(&old.to_be_bytes(), &new.to_be_bytes()));
    Ok(new)
}

#[inline(always)]
fn ip_ttl(frame: &mut [u8], off: &Offsets, v: u8, m: u8) -> Result<u128, RewriteError> {
    match off.l3_kind {
        L3::Ipv4 => {
            let (ip, _) = ipv4_split(frame, off)?;
            let old = get16::<20, 8>(ip);
            let new = (old & !(u16::from(m) << 8)) | (u16::from(v & m) << 8);
            put16::<20, 8>(ip, new);
            put16::<20, 10>(ip, csum_update16(get16::<20, 10>(ip), old, new));
            Ok(u128::from(new >> 8))
        }
        L3::Ipv6 => {
            let (ip, _) = ipv6_split(frame, off)?;
            ip[7] = (ip[7] & !m) | (v & m);
            Ok(u128::from(ip[7]))
        }
        L3::Arp | L3::None => Err(NotApplicable),
    }
}

/// TOS / traffic class bits under `m`; returns the new TOS byte.
#[inline(always)]
fn ip_tos(frame: &mut [u8], off: &Offsets, v: u8, m: u8) -> Result<u8, RewriteError> {
    match off.l3_kind {
        L3::Ipv4 => {
            let (ip, _) = ipv4_split(frame, off)?;
            let old = get16::<20, 0>(ip);
            let new = (old & !u16::from(m)) | u16::from(v & m);
            put16::<20, 0>(ip, new);
            put16::<20, 10>(ip, csum_update16(get16::<20, 10>(ip), old, new));
            Ok(new as u8)
        }
        L3::Ipv6 => {
            let (ip, _) = ipv6_split(frame, off)?;
            let old = get32::<40, 0>(ip);
            let new = (old & !(u32::from(m) << 20)) | (u32::from(v & m) << 20);
            put32::<40, 0>(ip, new);
            Ok((new >> 20) as u8)
        }
        L3::Arp | L3::None => Err(NotApplicable),
    }
}

#[inline(always)]
fn ipv6_label(frame: &mut [u8], off: &Offsets, v: u32, m: u32) -> Result<u128, RewriteError> {
    let (ip, _) = ipv6_split(frame, off)?;
    let m = m & 0x000f_ffff;
    let new = (get32::<40, 0>(ip) & !m) | (v & m);
    put32::<40, 0>(ip, new);
    Ok(u128::from(new & 0x000f_ffff))
}

/// A TCP, UDP or SCTP port at `AT` (0: source, 2: destination).
#[inline(always)]
fn tp_port<const AT: usize>(
    frame: &mut [u8],
    off: &Offsets,
    v: u16,
    m: u16,
) -> Result<u128, RewriteError> {
    let l4 = off.l4 as usize;
    let new = match off.l4_kind {
        L4::Tcp | L4::Udp => {
            let udp = off.l4_kind == L4::Udp;
            let (at, len) = if udp { (6, 8) } else { (16, 18) };
            let h = frame
                .get_mut(l4..)
                .and_then(|s| s.get_mut(..len))
                .ok_or(OutOfBounds)?;
            // Both reads succeed, so neither write below can fail.
            let (old, sum) = (rd16(h, AT)?, rd16(h, at)?);
            let new = (old & !m) | (v & m);
            let d = delta16(old, new);
            wr16(h, AT, new)?;
            wr16(
                h,
                at,
                if udp {
                    udp_apply(sum, d)
                } else {
                    apply(sum, d)
                },
            )?;
            new
        }
        L4::Sctp => {
            if off.ip_frag != 0 {
                return Err(RewriteError::Fragment);
            }
            // The one non-incremental checksum: CRC32c over the whole SCTP packet.
            let pkt = frame.get_mut(l4..off.end as usize).ok_or(OutOfBounds)?;
            let h = pkt.first_chunk_mut::<12>().ok_or(OutOfBounds)?;
            let new = (get16::<12, AT>(h) & !m) | (v & m);
            put16::<12, AT>(h, new);
            h[8..12].fill(0);
            let crc = crc32c(pkt);
            *chunk_mut::<4>(pkt, 8)? = crc.to_le_bytes();
            new
        }
        L4::Icmp | L4::Icmpv6 | L4::None => return Err(NotApplicable),
    };
    Ok(u128::from(new))
}

/// ICMP / ICMPv6 type (high byte) and code (low byte) under `m`; returns the new
/// type/code word. Its checksum covers them without a pseudo-header change.
#[inline(always)]
fn icmp(frame: &mut [u8], off: &Offsets, v: u16, m: u16) -> Result<u16, RewriteError> {
    if !matches!(off.l4_kind, L4::Icmp | L4::Icmpv6) {
        return Err(NotApplicable);
    }
    let h = chunk_mut::<4>(frame, off.l4 as usize)?;
    let old = get16::<4, 0>(h);
    let new = (old & !m) | (v & m);
    put16::<4, 0>(h, new);
    put16::<4, 2>(h, csum_update16(get16::<4, 2>(h), old, new));
    Ok(new)
}

/// An ARP field of `N` bytes at `AT` in the ARP header.
#[inline(always)]
fn arp<const AT: usize, const N: usize>(
    frame: &mut [u8],
    off: &Offsets,
    v: u128,
    m: u128,
) -> Result<u128, RewriteError> {
    if off.l3_kind != L3::Arp {
        return Err(NotApplicable);
    }
    let a = chunk_mut::<28>(frame, off.l3 as usize)?;
    Ok(put_masked::<N>(a, AT, v, m)?.1)
}

// ---- dec_ttl ----------------------------------------------------------------------------

/// Decrements the IPv4 TTL (fixing the header checksum) or the IPv6 hop limit.
///
/// A TTL of 0 or 1 is [`TtlExpired`] and the frame is left as it was: the caller
/// drops it (OVS sends it to the controller when asked). Frames that are not IP are
/// left alone (as OVS does).
#[inline]
pub fn dec_ttl(frame: &mut [u8], off: &Offsets, key: Option<&mut Key>) -> Result<(), TtlExpired> {
    let new_ttl = match off.l3_kind {
        L3::Ipv4 => {
            let Ok((ip, _)) = ipv4_split(frame, off) else {
                return Ok(());
            };
            let word = get16::<20, 8>(ip);
            if word >> 8 <= 1 {
                return Err(TtlExpired);
            }
            let new = word - 0x100;
            put16::<20, 8>(ip, new);
            put16::<20, 10>(ip, csum_update16(get16::<20, 10>(ip), word, new));
            (new >> 8) as u8
        }
        L3::Ipv6 => {
            let Ok((ip, _)) = ipv6_split(frame, off) else {
                return Ok(());
            };
            if ip[7] <= 1 {
                return Err(TtlExpired);
            }
            ip[7] -= 1;
            ip[7]
        }
        L3::Arp | L3::None => return Ok(()),
    };
    if let Some(k) = key {
        Field::IpTtl.set(k, u128::from(new_ttl));
    }
    Ok(())
}

// ---- VLAN ------------------------------------------------------------------------------------

/// Re-extracts `frame` into `key` (or a scratch key) and `off`, keeping in_port and
/// the metadata words: the rare VLAN cases (double tags) where the layering changes.
fn reextract(frame: &[u8], off: &mut Offsets, key: Option<&mut Key>) {
    let mut scratch = Key::ZERO;
    let k = key.unwrap_or(&mut scratch);
    let in_port = k.in_port();
    match extract::extract(frame, in_port, k) {
        Ok(o) => *off = o,
        // Not reachable: push and pop keep at least an Ethernet header.
        Err(_) => *off = Offsets::default(),
    }
}

/// Pushes a VLAN tag with TPID `tpid` in front of the frame's payload (after the
/// MAC addresses): the data `buf[12..len]` moves right by 4 within `buf`, whose
/// length is the buffer's capacity (the frame starts at a fixed headroom in the
/// pool, so the MACs cannot move left instead). Returns the new length.
///
/// The new tag copies the VID and PCP of the tag already there, or is 0 (OpenFlow's
/// push_vlan); set `vlan_vid` after. `off` (and `key`, when given) follow the
/// frame: the key's `vlan_tci` is the new tag's with the present bit.
pub fn push_vlan(
    buf: &mut [u8],
    len: usize,
    tpid: u16,
    off: &mut Offsets,
    key: Option<&mut Key>,
) -> Result<usize, RewriteError> {
    if len < ETH_HEADER_LEN || len > buf.len() {
        return Err(RewriteError::OutOfBounds);
    }
    let new_len = len + VLAN_TAG_LEN;
    if new_len > buf.len().min(MAX_FRAME_LEN) {
        return Err(RewriteError::NoRoom);
    }
    let inner = rd16(buf, 12)?;
    let tagged = inner == eth_type::VLAN || inner == eth_type::QINQ;
    let tci = if tagged && len >= ETH_HEADER_LEN + VLAN_TAG_LEN {
        rd16(buf, ETH_HEADER_LEN)?
    } else {
        0
    };
    buf.copy_within(12..len, 12 + VLAN_TAG_LEN);
    wr16(buf, 12, tpid)?;
    wr16(buf, ETH_HEADER_LEN, tci)?;
    let frame = buf.get(..new_len).ok_or(RewriteError::OutOfBounds)?;
    if tagged || off.truncated || !(tpid == eth_type::VLAN || tpid == eth_type::QINQ) {
        // The headers now nest differently (a second tag, or an unusual TPID).
        reextract(frame, off, key);
        return Ok(new_len);
    }
    off.l3 = off.l3.saturating_add(VLAN_TAG_LEN as u32);
    if off.l4 != 0 {
        off.l4 = off.l4.saturating_add(VLAN_TAG_LEN as u32);
    }
    off.end = off.end.saturating_add(VLAN_TAG_LEN as u32);
    off.vlan = true;
    if let Some(k) = key {
        Field::VlanTci.set(k, u128::from(tci | VLAN_PRESENT));
    }
    Ok(new_len)
}

/// Removes the outer VLAN tag: `buf[16..len]` moves left by 4. Returns the new
/// length; [`RewriteError::NotApplicable`] when there is no tag.
pub fn pop_vlan(
    buf: &mut [u8],
    len: usize,
    off: &mut Offsets,
    key: Option<&mut Key>,
) -> Result<usize, RewriteError> {
    if len > buf.len() {
        return Err(RewriteError::OutOfBounds);
    }
    if len < ETH_HEADER_LEN + VLAN_TAG_LEN {
        return Err(RewriteError::NotApplicable);
    }
    let tpid = rd16(buf, 12)?;
    if tpid != eth_type::VLAN && tpid != eth_type::QINQ {
        return Err(RewriteError::NotApplicable);
    }
    let inner = rd16(buf, 16)?;
    buf.copy_within(12 + VLAN_TAG_LEN..len, 12);
    let new_len = len - VLAN_TAG_LEN;
    let frame = buf.get(..new_len).ok_or(RewriteError::OutOfBounds)?;
    if !off.vlan || inner == eth_type::VLAN || inner == eth_type::QINQ {
        // A second tag becomes the outer one, and what follows it is parsed now.
        reextract(frame, off, key);
        return Ok(new_len);
    }
    off.l3 = off.l3.saturating_sub(VLAN_TAG_LEN as u32);
    if off.l4 != 0 {
        off.l4 = off.l4.saturating_sub(VLAN_TAG_LEN as u32);
    }
    off.end = off.end.saturating_sub(VLAN_TAG_LEN as u32);
    off.vlan = false;
    if let Some(k) = key {
        Field::VlanTci.set(k, 0);
    }
    Ok(new_len)
}

#[cfg(test)]
mod tests {
    use super::super::extract::testpkt::*;
    use super::super::extract::{Offsets, extract, frag};
    use super::*;
    use etherparse::{Ipv4Header, Ipv6Header, TcpHeader, UdpHeader};
    use proptest::prelude::*;

    fn extracted(frame: &[u8]) -> (Key, Offsets) {
        let mut k = Key::ZERO;
        let off = extract(frame, 7, &mut k).expect("extract");
        (k, off)
    }

    fn udp4(no_csum: bool) -> Spec {
        Spec {
            dst: [2, 0, 0, 0, 0, 2],
            src: [2, 0, 0, 0, 0, 1],
            vlan: None,
            l3: L3Spec::Ipv4 {
                tos: 0,
                ttl: 64,
                src: [10, 0, 0, 1],
                dst: [10, 0, 0, 2],
                opt_words: 0,
                df: true,
                mf: false,
                frag_offset: 0,
                id: 0x1234,
                l4: L4Spec::Udp {
                    sport: 1234,
                    dport: 53,
                    no_csum,
                },
            },
            payload: b"hello".to_vec(),
            pad: vec![0; 5],
        }
    }

    fn with_l4(mut s: Spec, l4: L4Spec) -> Spec {
        match &mut s.l3 {
            L3Spec::Ipv4 { l4: x, .. } | L3Spec::Ipv6 { l4: x, .. } => *x = l4,
            _ => {}
        }
        s
    }

    fn tcp() -> L4Spec {
        L4Spec::Tcp {
            sport: 80,
            dport: 40000,
            seq: 1,
            ack: 2,
            flags: 0x12,
            window: 1000,
            opt_words: 1,
        }
    }

    fn v6(spec: Spec, exts: Vec<Ext>) -> Spec {
        let l4 = match spec.l3 {
            L3Spec::Ipv4 { l4, .. } => l4,
            _ => L4Spec::Other { proto: 59 },
        };
        Spec {
            l3: L3Spec::Ipv6 {
                tc: 0,
                label: 0x12345,
                hop: 64,
                src: [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                dst: [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
                exts,
                l4,
            },
            ..spec
        }
    }

    /// Checks every checksum of the frame against a full recomputation by
    /// etherparse. `pseudo_dst`: the L4 pseudo-header destination when it is not
    /// the IPv6 header's (routing header); `udp_none`: the UDP checksum was 0.
    fn checksums_ok(
        frame: &[u8],
        off: &Offsets,
        pseudo_dst: Option<[u8; 16]>,
        udp_none: bool,
    ) -> Result<(), TestCaseError> {
        let l4 = frame.get(off.l4 as usize..off.end as usize).unwrap_or(&[]);
        let l3 = &frame[off.l3 as usize..];
        match off.l3_kind {
            L3::Ipv4 => {
                let (ip, _) = Ipv4Header::from_slice(l3).expect("ipv4");
                prop_assert_eq!(ip.header_checksum, ip.calc_header_checksum());
                match off.l4_kind {
                    L4::Tcp => {
                        let (t, p) = TcpHeader::from_slice(l4).expect("tcp");
                        prop_assert_eq!(t.checksum, t.calc_checksum_ipv4(&ip, p).expect("len"));
                    }
                    L4::Udp => {
                        let (u, p) = UdpHeader::from_slice(l4).expect("udp");
                        let want = if udp_none {
                            0
                        } else {
                            u.calc_checksum_ipv4(&ip, p).expect("len")
                        };
                        prop_assert_eq!(u.checksum, want);
                    }
                    L4::Icmp => {
                        let mut b = l4.to_vec();
                        b[2..4].fill(0);
                        prop_assert_eq!(&l4[2..4], &icmpv4_csum(&b).to_be_bytes());
                    }
                    L4::Sctp => prop_assert!(sctp_crc_ok(l4)),
                    _ => {}
                }
            }
            L3::Ipv6 => {
                let (ip, _) = Ipv6Header::from_slice(l3).expect("ipv6");
                let dst = pseudo_dst.unwrap_or(ip.destination);
                match off.l4_kind {
                    L4::Tcp => {
                        let (t, p) = TcpHeader::from_slice(l4).expect("tcp");
                        let want = t.calc_checksum_ipv6_raw(ip.source, dst, p).expect("len");
                        prop_assert_eq!(t.checksum, want);
                    }
                    L4::Udp => {
                        let (u, p) = UdpHeader::from_slice(l4).expect("udp");
                        let want = if udp_none {
                            0
                        } else {
                            u.calc_checksum_ipv6_raw(ip.source, dst, p).expect("len")
                        };
                        prop_assert_eq!(u.checksum, want);
                    }
                    L4::Icmpv6 => {
                        let mut b = l4.to_vec();
                        b[2..4].fill(0);
                        let want = icmpv6_csum(ip.source, dst, &b);
                        prop_assert_eq!(&l4[2..4], &want.to_be_bytes());
                    }
                    L4::Sctp => prop_assert!(sctp_crc_ok(l4)),
                    _ => {}
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn check(frame: &[u8], off: &Offsets) {
        checksums_ok(frame, off, None, false).expect("checksums");
    }

    // ---- checksum helpers ---------------------------------------------------------

    #[test]
    fn rfc1624_example() {
        // RFC 1624 section 4: eqn. 3 gives 0x0000 where eqn. 2 gave 0xffff.
        assert_eq!(
            incremental_csum_update(0xdd2f, &[0x55, 0x55], &[0x32, 0x85]),
            0
        );
        assert_eq!(csum_update16(0xdd2f, 0x5555, 0x3285), 0);
        let (o, n) = (0x0a00_0001u32, 0xc0a8_0164u32);
        assert_eq!(
            csum_update32(0x1234, o, n),
            incremental_csum_update(0x1234, &o.to_be_bytes(), &n.to_be_bytes())
        );
        // An odd tail is the high byte of its word.
        assert_eq!(
            incremental_csum_update(0x1234, &[1, 2, 3], &[1, 2, 9]),
            csum_update16(0x1234, 0x0300, 0x0900)
        );
    }

    #[test]
    fn crc32c_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(crc32c(b"123456789"), crc32c_bitwise(b"123456789"));
    }

    // ---- set_field, one field at a time --------------------------------------------

    /// Applies one set_field and checks: Ok, the key is what extract now gives, the
    /// field holds `want`, and the checksums verify.
    fn set_ok(frame: &mut [u8], f: Field, value: u128, mask: u128, want: u128) {
        let (mut k, off) = extracted(frame);
        let none = udp_none(frame, &off);
        set_field(frame, &off, f, value, mask, Some(&mut k)).expect("set_field");
        let (k2, off2) = extracted(frame);
        assert_eq!(k, k2, "{f:?}");
        assert_eq!(off, off2);
        assert_eq!(f.get(&k), want, "{f:?}");
        checksums_ok(frame, &off, None, none).expect("checksums");
    }

    #[test]
    fn ethernet_and_ipv4_fields() {
        let mut f = udp4(false).build().bytes;
        set_ok(
            &mut f,
            Field::EthDst,
            0x0a0b_0c0d_0e0f,
            u128::MAX,
            0x0a0b_0c0d_0e0f,
        );
        assert_eq!(f[..6], [0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f]);
        set_ok(&mut f, Field::EthSrc, 0xff, 0xff, 0x0200_0000_00ff);
        set_ok(&mut f, Field::Ipv4Dst, 0xc0a8_0001, u128::MAX, 0xc0a8_0001);
        assert_eq!(f[30..34], [192, 168, 0, 1]);
        set_ok(&mut f, Field::Ipv4Src, 0x0000_0063, 0xff, 0x0a00_0063);
        set_ok(&mut f, Field::IpTtl, 3, u128::MAX, 3);
        set_ok(&mut f, Field::IpDscp, 46, u128::MAX, 46);
        set_ok(&mut f, Field::IpEcn, 3, u128::MAX, 3);
        assert_eq!(f[15], 46 << 2 | 3);
        set_ok(&mut f, Field::TpDst, 5353, u128::MAX, 5353);
        set_ok(&mut f, Field::TpSrc, 0, 0xff00, 1234 & 0xff);
        let off = extracted(&f).1;
        for field in [
            Field::Ipv6Src,
            Field::Ipv6Label,
            Field::ArpSpa,
            Field::IcmpType,
        ] {
            let before = f.clone();
            let r = set_field(&mut f, &off, field, 1, u128::MAX, None);
            assert_eq!(r, Err(RewriteError::NotApplicable), "{field:?}");
            assert_eq!(f, before);
        }
        for field in [Field::VlanVid, Field::VlanPcp, Field::VlanTci] {
            let r = set_field(&mut f, &off, field, 1, u128::MAX, None);
            assert_eq!(r, Err(RewriteError::NotApplicable));
        }
    }

    #[test]
    fn tcp_ipv4_and_metadata() {
        let mut f = with_l4(udp4(false), tcp()).build().bytes;
        set_ok(&mut f, Field::Ipv4Dst, 0x0102_0304, u128::MAX, 0x0102_0304);
        set_ok(&mut f, Field::TpDst, 8080, u128::MAX, 8080);
        set_ok(&mut f, Field::TpSrc, 443, u128::MAX, 443);
        let (mut k, off) = extracted(&f);
        let before = f.clone();
        for field in [
            Field::InPort,
            Field::EthType,
            Field::IpProto,
            Field::IpFrag,
            Field::TcpFlags,
        ] {
            let r = set_field(&mut f, &off, field, 1, u128::MAX, Some(&mut k));
            assert_eq!(r, Err(RewriteError::ReadOnly));
        }
        set_field(&mut f, &off, Field::Reg3, 9, u128::MAX, Some(&mut k)).expect("reg");
        set_field(&mut f, &off, Field::TunId, 5, u128::MAX, Some(&mut k)).expect("tun");
        assert_eq!(f, before);
        assert_eq!((Field::Reg3.get(&k), Field::TunId.get(&k)), (9, 5));
    }

    #[test]
    fn udp_checksum_none_and_0xffff() {
        let mut f = udp4(true).build().bytes;
        set_ok(&mut f, Field::Ipv4Dst, 0x0102_0304, u128::MAX, 0x0102_0304);
        set_ok(&mut f, Field::TpDst, 1, u128::MAX, 1);
        assert_eq!(f[40..42], [0, 0]);
        // A port that makes the computed checksum 0: sent as 0xffff.
        let mut f = udp4(false).build().bytes;
        let c = u16::from_be_bytes([f[40], f[41]]);
        let port = (0..=u16::MAX)
            .find(|&p| csum_update16(c, 53, p) == 0)
            .expect("some port zeroes the checksum");
        let (_, off) = extracted(&f);
        set_field(
            &mut f,
            &off,
            Field::TpDst,
            u128::from(port),
            u128::MAX,
            None,
        )
        .expect("set");
        assert_eq!(f[40..42], [0xff, 0xff]);
        let (u, p) = UdpHeader::from_slice(&f[34..47]).expect("udp");
        let ip = Ipv4Header::from_slice(&f[14..]).expect("ip").0;
        assert_eq!(u.calc_checksum_ipv4(&ip, p).expect("len"), 0xffff);
    }

    #[test]
    fn icmp_type_and_code() {
        let icmp = L4Spec::Icmp {
            ty: 8,
            code: 0,
            rest: [0, 1, 0, 2],
        };
        let mut f = with_l4(udp4(false), icmp.clone()).build().bytes;
        set_ok(&mut f, Field::IcmpType, 0, u128::MAX, 0);
        set_ok(&mut f, Field::IcmpCode, 7, u128::MAX, 7);
        let off = extracted(&f).1;
        let r = set_field(&mut f, &off, Field::TpDst, 1, u128::MAX, None);
        assert_eq!(r, Err(RewriteError::NotApplicable));
        // ICMPv6: type, code, and addresses through the pseudo-header.
        let mut f = v6(with_l4(udp4(false), icmp), vec![]).build().bytes;
        set_ok(&mut f, Field::IcmpType, 129, u128::MAX, 129);
        set_ok(&mut f, Field::IcmpCode, 1, u128::MAX, 1);
        set_ok(&mut f, Field::Ipv6Src, 5, 0xffff, (0xfd00 << 112) | 5);
    }

    #[test]
    fn ipv6_fields() {
        for l4 in [
            tcp(),
            L4Spec::Udp {
                sport: 1,
                dport: 2,
                no_csum: false,
            },
        ] {
            let mut f = v6(with_l4(udp4(false), l4), vec![Ext::HopByHop(0)])
                .build()
                .bytes;
            let a = (0x2001_0db8_u128 << 96) | 0x42;
            set_ok(&mut f, Field::Ipv6Dst, a, u128::MAX, a);
            set_ok(&mut f, Field::Ipv6Src, a + 1, u128::MAX, a + 1);
            set_ok(&mut f, Field::IpTtl, 9, u128::MAX, 9);
            set_ok(&mut f, Field::IpDscp, 10, u128::MAX, 10);
            set_ok(&mut f, Field::IpEcn, 2, u128::MAX, 2);
            set_ok(&mut f, Field::Ipv6Label, 0xabcde, u128::MAX, 0xabcde);
            set_ok(&mut f, Field::Ipv6Label, 0, 0xf, 0xabcd0);
            set_ok(&mut f, Field::TpDst, 99, u128::MAX, 99);
            assert_eq!(f[14] >> 4, 6, "version kept");
        }
    }

    #[test]
    fn ipv6_routing_header_keeps_l4_checksum_on_dst_change() {
        let rt = Ext::Routing {
            len: 0,
            segs_left: 2,
        };
        let b = v6(with_l4(udp4(false), tcp()), vec![rt]).build();
        let mut f = b.bytes.clone();
        let (mut k, off) = extracted(&f);
        assert!(off.ipv6_routing);
        let csum = f[off.l4 as usize + 16..off.l4 as usize + 18].to_vec();
        set_field(&mut f, &off, Field::Ipv6Dst, 7, u128::MAX, Some(&mut k)).expect("set");
        assert_eq!(f[off.l4 as usize + 16..off.l4 as usize + 18], csum[..]);
        let orig_dst = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
        checksums_ok(&f, &off, Some(orig_dst), false).expect("checksums");
        assert_eq!(extracted(&f).0, k);
    }

    #[test]
    fn sctp_recomputes_crc() {
        let sctp = L4Spec::Sctp {
            sport: 5000,
            dport: 6000,
            vtag: 0xdead_beef,
        };
        let mut f = with_l4(udp4(false), sctp.clone()).build().bytes;
        set_ok(&mut f, Field::TpSrc, 1, u128::MAX, 1);
        set_ok(&mut f, Field::Ipv4Dst, 1, u128::MAX, 1);
        let mut f = v6(with_l4(udp4(false), sctp.clone()), vec![]).build().bytes;
        set_ok(&mut f, Field::TpDst, 2, u128::MAX, 2);
        // A first fragment: the CRC covers bytes this frame does not have.
        let frag = Ext::Fragment {
            offset: 0,
            mf: true,
            id: 1,
        };
        let mut f = v6(with_l4(udp4(false), sctp), vec![frag]).build().bytes;
        let off = extracted(&f).1;
        assert_eq!(off.ip_frag, frag::ANY);
        let r = set_field(&mut f, &off, Field::TpDst, 2, u128::MAX, None);
        assert_eq!(r, Err(RewriteError::Fragment));
    }

    #[test]
    fn fragments() {
        let mut s = with_l4(udp4(false), tcp());
        if let L3Spec::Ipv4 { mf, .. } = &mut s.l3 {
            *mf = true;
        }
        // First fragment: ports rewritten, checksum still exact for the datagram.
        let mut f = s.build().bytes;
        set_ok(&mut f, Field::TpDst, 22, u128::MAX, 22);
        set_ok(&mut f, Field::Ipv4Src, 22, u128::MAX, 22);
        if let L3Spec::Ipv4 { frag_offset, .. } = &mut s.l3 {
            *frag_offset = 100;
        }
        let mut f = s.build().bytes;
        let off = extracted(&f).1;
        assert_eq!(off.ip_frag, frag::LATER);
        let r = set_field(&mut f, &off, Field::TpDst, 1, u128::MAX, None);
        assert_eq!(r, Err(RewriteError::NotApplicable));
        set_ok(&mut f, Field::Ipv4Dst, 22, u128::MAX, 22);
    }

    #[test]
    fn arp_fields() {
        let s = Spec {
            l3: L3Spec::Arp {
                op: 1,
                sha: [2, 0, 0, 0, 0, 1],
                spa: [10, 0, 0, 1],
                tha: [0; 6],
                tpa: [10, 0, 0, 2],
            },
            ..udp4(false)
        };
        let mut f = s.build().bytes;
        set_ok(&mut f, Field::ArpOp, 2, u128::MAX, 2);
        set_ok(
            &mut f,
            Field::ArpSha,
            0x0200_0000_0009,
            u128::MAX,
            0x0200_0000_0009,
        );
        set_ok(
            &mut f,
            Field::ArpTha,
            0x0200_0000_0001,
            u128::MAX,
            0x0200_0000_0001,
        );
        set_ok(&mut f, Field::ArpSpa, 0x0a00_0002, u128::MAX, 0x0a00_0002);
        set_ok(&mut f, Field::ArpTpa, 0x0a00_0001, u128::MAX, 0x0a00_0001);
        let off = extracted(&f).1;
        let r = set_field(&mut f, &off, Field::Ipv4Src, 1, u128::MAX, None);
        assert_eq!(r, Err(RewriteError::NotApplicable));
        assert_eq!(dec_ttl(&mut f, &off, None), Ok(()));
    }

    #[test]
    fn vlan_fields() {
        let mut s = udp4(false);
        s.vlan = Some(Vlan {
            tpid: 0x8100,
            pcp: 3,
            dei: true,
            vid: 10,
        });
        let mut f = s.build().bytes;
        set_ok(&mut f, Field::VlanVid, 0x1000 | 20, u128::MAX, 0x1000 | 20);
        assert_eq!(f[14..16], [0x70, 20], "PCP and DEI kept");
        set_ok(&mut f, Field::VlanPcp, 6, u128::MAX, 6);
        set_ok(&mut f, Field::VlanTci, 0x0005, u128::MAX, 0x1005);
        assert_eq!(
            f[14..16],
            [0x10, 5],
            "DEI kept, the present bit is the key's"
        );
    }

    #[test]
    fn dec_ttl_ipv4_ipv6() {
        let mut f = udp4(false).build().bytes;
        let (mut k, off) = extracted(&f);
        dec_ttl(&mut f, &off, Some(&mut k)).expect("64");
        assert_eq!((f[22], Field::IpTtl.get(&k)), (63, 63));
        assert_eq!(extracted(&f).0, k);
        check(&f, &off);
        for ttl in [1, 0] {
            f[22] = ttl;
            let before = f.clone();
            assert_eq!(dec_ttl(&mut f, &off, None), Err(TtlExpired));
            assert_eq!(f, before);
        }
        let mut f = v6(udp4(false), vec![]).build().bytes;
        let (mut k, off) = extracted(&f);
        dec_ttl(&mut f, &off, Some(&mut k)).expect("64");
        assert_eq!((f[21], Field::IpTtl.get(&k)), (63, 63));
        f[21] = 1;
        assert_eq!(dec_ttl(&mut f, &off, None), Err(TtlExpired));
    }

    // ---- VLAN push / pop ------------------------------------------------------------------

    fn in_buffer(frame: &[u8]) -> Vec<u8> {
        let mut buf = vec![0xee; MAX_FRAME_LEN];
        buf[..frame.len()].copy_from_slice(frame);
        buf
    }

    #[test]
    fn push_then_pop() {
        let frame = udp4(false).build().bytes;
        let mut buf = in_buffer(&frame);
        let (k0, off0) = extracted(&frame);
        let (mut k, mut off) = (k0, off0);
        let n = push_vlan(&mut buf, frame.len(), 0x8100, &mut off, Some(&mut k)).expect("push");
        assert_eq!(n, frame.len() + 4);
        assert_eq!(buf[12..18], [0x81, 0x00, 0, 0, 0x08, 0x00]);
        assert_eq!((k, off), extracted(&buf[..n]));
        assert_eq!(Field::VlanTci.get(&k), 0x1000);
        let (mut k2, off2) = extracted(&buf[..n]);
        set_field(
            &mut buf[..n],
            &off2,
            Field::VlanVid,
            42,
            0xfff,
            Some(&mut k2),
        )
        .expect("vid");
        let n = pop_vlan(&mut buf, n, &mut off, Some(&mut k)).expect("pop");
        assert_eq!(&buf[..n], &frame[..]);
        assert_eq!((k, off), (k0, off0));
        assert_eq!(
            pop_vlan(&mut buf, n, &mut off, None),
            Err(RewriteError::NotApplicable)
        );
        // No room: the frame fills its buffer.
        let mut full = frame.clone();
        assert_eq!(
            push_vlan(&mut full, frame.len(), 0x8100, &mut off, None),
            Err(RewriteError::NoRoom)
        );
        assert_eq!(full, frame);
    }

    // ---- properties --------------------------------------------------------------------------

    #[derive(Debug, Clone)]
    enum Op {
        Set(Field, u128, u128),
        DecTtl,
    }

    const WRITABLE: [Field; 22] = [
        Field::EthSrc,
        Field::EthDst,
        Field::VlanTci,
        Field::VlanVid,
        Field::VlanPcp,
        Field::IpTtl,
        Field::IpEcn,
        Field::IpDscp,
        Field::Ipv4Src,
        Field::Ipv4Dst,
        Field::ArpSpa,
        Field::ArpTpa,
        Field::TpSrc,
        Field::TpDst,
        Field::IcmpType,
        Field::IcmpCode,
        Field::ArpOp,
        Field::ArpSha,
        Field::ArpTha,
        Field::Ipv6Src,
        Field::Ipv6Dst,
        Field::Ipv6Label,
    ];

    fn arb_op() -> impl Strategy<Value = Op> {
        let set = (
            0..WRITABLE.len(),
            any::<u128>(),
            prop_oneof![Just(u128::MAX), any::<u128>()],
            arb_icmp_type(),
        )
            .prop_map(|(i, v, m, ty)| match WRITABLE[i] {
                // Keep etherparse able to re-parse (see arb_icmp_type).
                Field::IcmpType => Op::Set(Field::IcmpType, u128::from(ty), u128::MAX),
                f => Op::Set(f, v, m),
            });
        prop_oneof![6 => set, 1 => Just(Op::DecTtl)]
    }

    fn applicable(f: Field, off: &Offsets) -> bool {
        let ip = matches!(off.l3_kind, L3::Ipv4 | L3::Ipv6);
        match f {
            Field::EthSrc | Field::EthDst => true,
            Field::VlanTci | Field::VlanVid | Field::VlanPcp => off.vlan,
            Field::IpTtl | Field::IpEcn | Field::IpDscp => ip,
            Field::Ipv4Src | Field::Ipv4Dst => off.l3_kind == L3::Ipv4,
            Field::Ipv6Src | Field::Ipv6Dst | Field::Ipv6Label => off.l3_kind == L3::Ipv6,
            Field::TpSrc | Field::TpDst => match off.l4_kind {
                L4::Tcp | L4::Udp => true,
                L4::Sctp => off.ip_frag == 0,
                _ => false,
            },
            Field::IcmpType | Field::IcmpCode => matches!(off.l4_kind, L4::Icmp | L4::Icmpv6),
            _ => off.l3_kind == L3::Arp,
        }
    }

    fn pseudo_dst(spec: &Spec, off: &Offsets) -> Option<[u8; 16]> {
        match &spec.l3 {
            L3Spec::Ipv6 { dst, .. } if off.ipv6_routing => Some(*dst),
            _ => None,
        }
    }

    fn udp_none(frame: &[u8], off: &Offsets) -> bool {
        off.l4_kind == L4::Udp && frame[off.l4 as usize + 6..off.l4 as usize + 8] == [0, 0]
    }

    fn arb_offsets() -> impl Strategy<Value = Offsets> {
        let l3 = prop_oneof![
            Just(L3::None),
            Just(L3::Arp),
            Just(L3::Ipv4),
            Just(L3::Ipv6)
        ];
        let l4 = prop_oneof![
            Just(L4::None),
            Just(L4::Tcp),
            Just(L4::Udp),
            Just(L4::Sctp),
            Just(L4::Icmp),
            Just(L4::Icmpv6)
        ];
        let pos = prop_oneof![0u32..120, any::<u32>()];
        (
            pos.clone(),
            pos.clone(),
            pos,
            l3,
            l4,
            0u8..4,
            any::<[bool; 3]>(),
        )
            .prop_map(
                |(l3, l4, end, l3_kind, l4_kind, ip_frag, [vlan, ipv6_routing, truncated])| {
                    Offsets {
                        l3,
                        l4,
                        end,
                        l3_kind,
                        l4_kind,
                        ip_frag,
                        vlan,
                        ipv6_routing,
                        truncated,
                    }
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn rewrites_match_full_recomputation(
            spec in arb_spec(),
            ops in proptest::collection::vec(arb_op(), 1..8),
        ) {
            let built = spec.build();
            let mut f = built.bytes.clone();
            let (mut k, off) = extracted(&f);
            Field::Reg0.set(&mut k, 0x5a5a); // metadata survives
            let udp0 = udp_none(&f, &off);
            for op in &ops {
                let (before, kbefore) = (f.clone(), k);
                match *op {
                    Op::Set(field, v, m) => {
                        let r = set_field(&mut f, &off, field, v, m, Some(&mut k));
                        prop_assert_eq!(r.is_ok(), applicable(field, &off), "{:?}: {:?}", op, r);
                        if r.is_ok() {
                            let m = m & field.full_mask();
                            let want = match field {
                                Field::VlanVid => (v & m & 0xfff) | 0x1000,
                                Field::VlanTci => (v & m & !0x1000) | 0x1000,
                                _ => v & m,
                            };
                            prop_assert_eq!(field.get(&k) & m, want & m, "{:?}", op);
                        }
                    }
                    Op::DecTtl => {
                        let ttl = Field::IpTtl.get(&k);
                        let r = dec_ttl(&mut f, &off, Some(&mut k));
                        let ip = matches!(off.l3_kind, L3::Ipv4 | L3::Ipv6);
                        prop_assert_eq!(r.is_err(), ip && ttl <= 1);
                        if ip && ttl > 1 {
                            prop_assert_eq!(Field::IpTtl.get(&k), ttl - 1);
                        }
                    }
                }
                if f == before {
                    // Nothing written (an error, or the same value): nor in the key.
                    prop_assert!(k == kbefore || matches!(op, Op::Set(..)));
                }
                let (k2, off2) = extracted(&f);
                prop_assert_eq!(off2, off);
                let mut k2 = k2;
                Field::Reg0.set(&mut k2, 0x5a5a);
                prop_assert_eq!(k2, k, "after {:?}", op);
            }
            let mut reference = reference_key(&f, 7);
            Field::Reg0.set(&mut reference, 0x5a5a);
            prop_assert_eq!(reference, k);
            checksums_ok(&f, &off, pseudo_dst(&spec, &off), udp0)?;
            prop_assert_eq!(f.len(), built.bytes.len());
        }

        #[test]
        fn errors_change_nothing(spec in arb_spec(), op in arb_op()) {
            let mut f = spec.build().bytes;
            let (mut k, off) = extracted(&f);
            let (before, kbefore) = (f.clone(), k);
            let failed = match op {
                Op::Set(field, v, m) => set_field(&mut f, &off, field, v, m, Some(&mut k)).is_err(),
                Op::DecTtl => dec_ttl(&mut f, &off, Some(&mut k)).is_err(),
            };
            if failed {
                prop_assert_eq!(f, before);
                prop_assert_eq!(k, kbefore);
            }
        }

        #[test]
        fn vlan_push_pop_round_trip(spec in arb_spec(), tpid in prop_oneof![Just(0x8100u16), Just(0x88a8u16)]) {
            let frame = spec.build().bytes;
            let mut buf = in_buffer(&frame);
            let (k0, off0) = extracted(&frame);
            let (mut k, mut off) = (k0, off0);
            let n = push_vlan(&mut buf, frame.len(), tpid, &mut off, Some(&mut k)).expect("push");
            prop_assert_eq!((k, off), extracted(&buf[..n]));
            prop_assert_eq!(&buf[..12], &frame[..12]);
            prop_assert_eq!(&buf[16..n], &frame[12..]);
            let m = pop_vlan(&mut buf, n, &mut off, Some(&mut k)).expect("pop");
            prop_assert_eq!(&buf[..m], &frame[..]);
            prop_assert_eq!((k, off), (k0, off0));
            // And the other way round on a tagged frame: pop, push, restore the TCI.
            if let Some(v) = &spec.vlan {
                let n = pop_vlan(&mut buf, m, &mut off, Some(&mut k)).expect("pop");
                prop_assert_eq!((k, off), extracted(&buf[..n]));
                let n = push_vlan(&mut buf, n, v.tpid, &mut off, Some(&mut k)).expect("push");
                let tci = (u16::from(v.pcp) << 13) | v.vid;
                set_field(&mut buf[..n], &off, Field::VlanTci, u128::from(tci), u128::MAX, Some(&mut k))
                    .expect("tci");
                let mut want = frame.clone();
                want[14] &= !0x10; // DEI is not carried over a pop
                prop_assert_eq!(&buf[..n], &want[..]);
                prop_assert_eq!((k, off), extracted(&want));
            }
        }

        #[test]
        fn never_panics_on_any_bytes_or_offsets(
            bytes in proptest::collection::vec(any::<u8>(), 0..120),
            cap in 0usize..140,
            given in proptest::option::of(arb_offsets()),
            ops in proptest::collection::vec(arb_op(), 1..4),
            tpid in any::<u16>(),
        ) {
            let mut buf = bytes.clone();
            buf.resize(bytes.len().max(cap), 0);
            let len = bytes.len();
            let mut k = Key::ZERO;
            let mut off = match given {
                Some(o) => o,
                None => extract(&bytes, 0, &mut k).unwrap_or_default(),
            };
            for op in &ops {
                match *op {
                    Op::Set(field, v, m) => {
                        let _ = set_field(&mut buf[..len], &off, field, v, m, Some(&mut k));
                    }
                    Op::DecTtl => {
                        let _ = dec_ttl(&mut buf[..len], &off, Some(&mut k));
                    }
                }
            }
            if let Ok(n) = push_vlan(&mut buf, len, tpid, &mut off, Some(&mut k)) {
                let _ = pop_vlan(&mut buf, n, &mut off, None);
            }
            let _ = pop_vlan(&mut buf, len, &mut off, Some(&mut k));
        }

        #[test]
        fn never_panics_on_truncated_packets(spec in arb_spec(), ops in proptest::collection::vec(arb_op(), 1..4)) {
            let full = spec.build().bytes;
            for n in 14..full.len() {
                let mut f = full[..n].to_vec();
                let (mut k, off) = extracted(&f);
                for op in &ops {
                    match *op {
                        Op::Set(field, v, m) => { let _ = set_field(&mut f, &off, field, v, m, Some(&mut k)); }
                        Op::DecTtl => { let _ = dec_ttl(&mut f, &off, Some(&mut k)); }
                    }
                }
                let (mut k2, _) = extracted(&f);
                k2.0[W_TUN_ID..].copy_from_slice(&k.0[W_TUN_ID..]);
                prop_assert_eq!(k2, k);
            }
        }
    }
}

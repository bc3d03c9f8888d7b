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
use super::field::{Field, eth_type};
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

/// Folds a sum of 16-bit words to 16 bits with end-around carry.
#[inline(always)]
fn fold(mut s: u64) -> u16 {
    s = (s & 0xffff_ffff) + (s >> 32);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s as u16
}

/// The checksum after the 16-bit-aligned bytes `old` were replaced by `new` (RFC
/// 1624 eqn. 3: `HC' = ~(~HC + ~m + m')`, one's complement sums).
///
/// `old` and `new` must start at an even offset from the start of the checksummed
/// data and have the same length (only the common prefix counts); an odd last byte
/// is the high byte of a word whose low byte did not change.
#[inline]
pub fn incremental_csum_update(old_csum: u16, old: &[u8], new: &[u8]) -> u16 {
    #[inline(always)]
    fn word(c: &[u8]) -> u16 {
        match *c {
            [a, b, ..] => u16::from_be_bytes([a, b]),
            [a] => u16::from(a) << 8,
            [] => 0,
        }
    }
    let mut sum = u64::from(!old_csum);
    for (o, n) in old.chunks(2).zip(new.chunks(2)) {
        sum += u64::from(!word(o)) + u64::from(word(n));
    }
    !fold(sum)
}

/// [`incremental_csum_update`] for one 16-bit word.
#[inline(always)]
pub fn csum_update16(old_csum: u16, old: u16, new: u16) -> u16 {
    !fold(u64::from(!old_csum) + u64::from(!old) + u64::from(new))
}

/// [`incremental_csum_update`] for a 32-bit value (two words).
#[inline(always)]
pub fn csum_update32(old_csum: u16, old: u32, new: u32) -> u16 {
    let sum = u64::from(!old_csum)
        + u64::from(!(old >> 16) & 0xffff)
        + u64::from(!old & 0xffff)
        + u64::from(new >> 16)
        + u64::from(new & 0xffff);
    !fold(sum)
}

/// CRC32c (Castagnoli, reflected 0x82F63B78), byte at a time.
const CRC32C_TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82f6_3b78
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

/// CRC32c of `data` as SCTP uses it (RFC 4960 appendix B; stored little-endian).
pub fn crc32c(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c = CRC32C_TABLE[usize::from(c as u8 ^ b)] ^ (c >> 8);
    }
    !c
}

// ---- byte access --------------------------------------------------------------------

#[inline(always)]
fn chunk_mut<const N: usize>(b: &mut [u8], at: usize) -> Result<&mut [u8; N], RewriteError> {
    b.get_mut(at..)
        .and_then(|s| s.first_chunk_mut::<N>())
        .ok_or(RewriteError::OutOfBounds)
}

#[inline(always)]
fn rd16(b: &[u8], at: usize) -> Result<u16, RewriteError> {
    b.get(at..)
        .and_then(|s| s.first_chunk::<2>())
        .map(|c| u16::from_be_bytes(*c))
        .ok_or(RewriteError::OutOfBounds)
}

#[inline(always)]
fn wr16(b: &mut [u8], at: usize, v: u16) -> Result<(), RewriteError> {
    *chunk_mut::<2>(b, at)? = v.to_be_bytes();
    Ok(())
}

#[inline(always)]
fn be_get<const N: usize>(b: &[u8; N]) -> u128 {
    b.iter().fold(0u128, |v, &x| (v << 8) | u128::from(x))
}

#[inline(always)]
fn be_put<const N: usize>(b: &mut [u8; N], v: u128) {
    for (i, x) in b.iter_mut().rev().enumerate() {
        *x = (v >> (8 * i)) as u8;
    }
}

/// `(old & !mask) | (value & mask)` on `N` big-endian bytes at `at`; returns the
/// old and new values.
#[inline(always)]
fn put_masked<const N: usize>(
    b: &mut [u8],
    at: usize,
    value: u128,
    mask: u128,
) -> Result<(u128, u128), RewriteError> {
    let c = chunk_mut::<N>(b, at)?;
    let old = be_get(c);
    let new = (old & !mask) | (value & mask);
    be_put(c, new);
    Ok((old, new))
}

// ---- where things are ------------------------------------------------------------------

/// Checks the offsets against the frame once, so that the writes below (which
/// still go through checked accessors) cannot stop half-way.
#[inline(always)]
fn check(frame: &[u8], off: &Offsets) -> Result<(), RewriteError> {
    let end = off.end as usize;
    if end > frame.len() || (off.vlan && frame.len() < ETH_HEADER_LEN + VLAN_TAG_LEN) {
        return Err(RewriteError::OutOfBounds);
    }
    let l3 = off.l3 as usize;
    let l3_len = match off.l3_kind {
        L3::None => 0,
        L3::Arp => 28,
        L3::Ipv4 => 20,
        L3::Ipv6 => 40,
    };
    let l4 = off.l4 as usize;
    let l4_len = match off.l4_kind {
        L4::None => 0,
        L4::Tcp => 20,
        L4::Udp | L4::Icmp | L4::Icmpv6 => 8,
        L4::Sctp => 12,
    };
    let ip = matches!(off.l3_kind, L3::Ipv4 | L3::Ipv6);
    if l3 + l3_len > frame.len()
        || (ip && (l3 + l3_len > l4 || l4 > end))
        || (off.l4_kind != L4::None && l4 + l4_len > end)
    {
        return Err(RewriteError::OutOfBounds);
    }
    Ok(())
}

/// Where the L4 checksum affected by a pseudo-header change is, if any.
#[inline(always)]
fn pseudo_csum_at(off: &Offsets) -> Option<(usize, bool)> {
    let l4 = off.l4 as usize;
    match off.l4_kind {
        L4::Tcp => Some((l4 + 16, false)),
        L4::Udp => Some((l4 + 6, true)),
        L4::Icmpv6 => Some((l4 + 2, false)),
        _ => None,
    }
}

/// Applies a checksum change to the L4 checksum at `at` (`udp`: 0 stays 0, a
/// computed 0 is written 0xffff).
#[inline(always)]
fn fix_l4(
    frame: &mut [u8],
    at: usize,
    udp: bool,
    f: impl FnOnce(u16) -> u16,
) -> Result<(), RewriteError> {
    let c = rd16(frame, at)?;
    if udp && c == 0 {
        return Ok(());
    }
    let mut n = f(c);
    if udp && n == 0 {
        n = 0xffff;
    }
    wr16(frame, at, n)
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
    let def = field.def();
    if !def.writable {
        return Err(RewriteError::ReadOnly);
    }
    let mask = mask & field.full_mask();
    let value = value & mask;
    if !field.is_packet_field() {
        if let Some(k) = key {
            field.set_masked(k, value, mask);
        }
        return Ok(());
    }
    check(frame, off)?;
    let new = write_packet_field(frame, off, field, value, mask)?;
    if let Some(k) = key {
        match field {
            Field::VlanTci | Field::VlanVid | Field::VlanPcp => {
                Field::VlanTci.set(k, new | u128::from(VLAN_PRESENT));
            }
            _ => field.set(k, new),
        }
    }
    Ok(())
}

/// The frame part of [`set_field`]; returns the field's new value (for VLAN fields,
/// the new wire TCI).
#[inline(always)]
fn write_packet_field(
    frame: &mut [u8],
    off: &Offsets,
    field: Field,
    value: u128,
    mask: u128,
) -> Result<u128, RewriteError> {
    use RewriteError::NotApplicable;
    let l3 = off.l3 as usize;
    let l4 = off.l4 as usize;
    let (v4, v6, arp) = (
        off.l3_kind == L3::Ipv4,
        off.l3_kind == L3::Ipv6,
        off.l3_kind == L3::Arp,
    );
    match field {
        Field::EthDst => Ok(put_masked::<6>(frame, 0, value, mask)?.1),
        Field::EthSrc => Ok(put_masked::<6>(frame, 6, value, mask)?.1),

        Field::VlanTci | Field::VlanVid | Field::VlanPcp => {
            if !off.vlan {
                return Err(NotApplicable);
            }
            let (v, m) = match field {
                Field::VlanTci => (value as u16, mask as u16 & !VLAN_PRESENT),
                Field::VlanVid => (value as u16, mask as u16 & 0x0fff),
                _ => ((value as u16) << 13, (mask as u16) << 13),
            };
            let at = ETH_HEADER_LEN;
            let old = rd16(frame, at)?;
            let new = (old & !m) | (v & m);
            wr16(frame, at, new)?;
            Ok(u128::from(new))
        }

        Field::Ipv4Src | Field::Ipv4Dst if v4 => {
            let at = l3 + if field == Field::Ipv4Src { 12 } else { 16 };
            let (old, new) = put_masked::<4>(frame, at, value, mask)?;
            let (old, new) = (old as u32, new as u32);
            let c = rd16(frame, l3 + 10)?;
            wr16(frame, l3 + 10, csum_update32(c, old, new))?;
            if let Some((at, udp)) = pseudo_csum_at(off) {
                fix_l4(frame, at, udp, |c| csum_update32(c, old, new))?;
            }
            Ok(u128::from(new))
        }
        Field::IpTtl if v4 => {
            let at = l3 + 8;
            let old = rd16(frame, at)?;
            let new = (old & !((mask as u16) << 8)) | ((value as u16) << 8);
            wr16(frame, at, new)?;
            let c = rd16(frame, l3 + 10)?;
            wr16(frame, l3 + 10, csum_update16(c, old, new))?;
            Ok(u128::from(new >> 8))
        }
        Field::IpDscp | Field::IpEcn if v4 => {
            let (v, m) = tos_bits(field, value, mask);
            let old = rd16(frame, l3)?;
            let new = (old & !u16::from(m)) | u16::from(v);
            wr16(frame, l3, new)?;
            let c = rd16(frame, l3 + 10)?;
            wr16(frame, l3 + 10, csum_update16(c, old, new))?;
            Ok(tos_field(field, new as u8))
        }

        Field::Ipv6Src | Field::Ipv6Dst if v6 => {
            let at = l3 + if field == Field::Ipv6Src { 8 } else { 24 };
            let (old, new) = put_masked::<16>(frame, at, value, mask)?;
            let skip = field == Field::Ipv6Dst && off.ipv6_routing;
            if let (Some((at, udp)), false) = (pseudo_csum_at(off), skip) {
                let (o, n) = (old.to_be_bytes(), new.to_be_bytes());
                fix_l4(frame, at, udp, |c| incremental_csum_update(c, &o, &n))?;
            }
            Ok(new)
        }
        Field::IpTtl if v6 => Ok(put_masked::<1>(frame, l3 + 7, value, mask)?.1),
        Field::IpDscp | Field::IpEcn if v6 => {
            let (v, m) = tos_bits(field, value, mask);
            let c = chunk_mut::<4>(frame, l3)?;
            let old = u32::from_be_bytes(*c);
            let new = (old & !(u32::from(m) << 20)) | (u32::from(v) << 20);
            *c = new.to_be_bytes();
            Ok(tos_field(field, (new >> 20) as u8))
        }
        Field::Ipv6Label if v6 => {
            let c = chunk_mut::<4>(frame, l3)?;
            let old = u32::from_be_bytes(*c);
            let new = (old & !(mask as u32)) | value as u32;
            *c = new.to_be_bytes();
            Ok(u128::from(new & 0x000f_ffff))
        }

        Field::TpSrc | Field::TpDst => {
            let at = l4 + if field == Field::TpSrc { 0 } else { 2 };
            match off.l4_kind {
                L4::Tcp | L4::Udp => {
                    let (old, new) = put_masked::<2>(frame, at, value, mask)?;
                    let (csum, udp) = if off.l4_kind == L4::Tcp {
                        (l4 + 16, false)
                    } else {
                        (l4 + 6, true)
                    };
                    fix_l4(frame, csum, udp, |c| {
                        csum_update16(c, old as u16, new as u16)
                    })?;
                    Ok(new)
                }
                L4::Sctp if off.ip_frag != 0 => Err(RewriteError::Fragment),
                L4::Sctp => {
                    let (_, new) = put_masked::<2>(frame, at, value, mask)?;
                    let end = off.end as usize;
                    *chunk_mut::<4>(frame, l4 + 8)? = [0; 4];
                    let crc = crc32c(frame.get(l4..end).ok_or(RewriteError::OutOfBounds)?);
                    *chunk_mut::<4>(frame, l4 + 8)? = crc.to_le_bytes();
                    Ok(new)
                }
                _ => Err(NotApplicable),
            }
        }
        Field::IcmpType | Field::IcmpCode if matches!(off.l4_kind, L4::Icmp | L4::Icmpv6) => {
            let old = rd16(frame, l4)?;
            let (v, m) = if field == Field::IcmpType {
                ((value as u16) << 8, (mask as u16) << 8)
            } else {
                (value as u16, mask as u16)
            };
            let new = (old & !m) | v;
            wr16(frame, l4, new)?;
            let c = rd16(frame, l4 + 2)?;
            wr16(frame, l4 + 2, csum_update16(c, old, new))?;
            Ok(u128::from(if field == Field::IcmpType {
                new >> 8
            } else {
                new & 0xff
            }))
        }

        Field::ArpOp if arp => Ok(put_masked::<2>(frame, l3 + 6, value, mask)?.1),
        Field::ArpSha if arp => Ok(put_masked::<6>(frame, l3 + 8, value, mask)?.1),
        Field::ArpSpa if arp => Ok(put_masked::<4>(frame, l3 + 14, value, mask)?.1),
        Field::ArpTha if arp => Ok(put_masked::<6>(frame, l3 + 18, value, mask)?.1),
        Field::ArpTpa if arp => Ok(put_masked::<4>(frame, l3 + 24, value, mask)?.1),

        _ => Err(NotApplicable),
    }
}

/// A DSCP or ECN value and mask placed in the TOS byte.
#[inline(always)]
fn tos_bits(field: Field, value: u128, mask: u128) -> (u8, u8) {
    if field == Field::IpDscp {
        ((value as u8) << 2, (mask as u8) << 2)
    } else {
        (value as u8 & 3, mask as u8 & 3)
    }
}

/// The DSCP or ECN part of a TOS byte.
#[inline(always)]
fn tos_field(field: Field, tos: u8) -> u128 {
    u128::from(if field == Field::IpDscp {
        tos >> 2
    } else {
        tos & 3
    })
}

// ---- dec_ttl ----------------------------------------------------------------------------

/// Decrements the IPv4 TTL (fixing the header checksum) or the IPv6 hop limit.
///
/// A TTL of 0 or 1 is [`TtlExpired`] and the frame is left as it was: the caller
/// drops it (OVS sends it to the controller when asked). Frames that are not IP are
/// left alone (as OVS does).
#[inline]
pub fn dec_ttl(frame: &mut [u8], off: &Offsets, key: Option<&mut Key>) -> Result<(), TtlExpired> {
    let l3 = off.l3 as usize;
    let new_ttl = match off.l3_kind {
        L3::Ipv4 => {
            let (Ok(word), Ok(c)) = (rd16(frame, l3 + 8), rd16(frame, l3 + 10)) else {
                return Ok(());
            };
            if word >> 8 <= 1 {
                return Err(TtlExpired);
            }
            let new = word - 0x100;
            if wr16(frame, l3 + 8, new).is_err()
                || wr16(frame, l3 + 10, csum_update16(c, word, new)).is_err()
            {
                return Ok(());
            }
            (new >> 8) as u8
        }
        L3::Ipv6 => {
            let Some(h) = frame.get_mut(l3 + 7) else {
                return Ok(());
            };
            if *h <= 1 {
                return Err(TtlExpired);
            }
            *h -= 1;
            *h
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
    buf.copy_within(ETH_HEADER_LEN + VLAN_TAG_LEN..len, 12);
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

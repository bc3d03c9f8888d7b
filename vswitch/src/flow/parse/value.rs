//! Field values as flow specs write them: integers, MACs, IPv4/IPv6 prefixes, flag
//! sets (`+trk-new`), port names, and `lo-hi` ranges expanded into prefixes.

use super::PortNames;
use super::lex::{PResult, Tok, ones, parse_u128, parse_uint};
use crate::flow::field::{Field, FieldKind};
use crate::flow::key::{ct_state, tcp_flags};
use crate::flow::spec::port_no;
use std::net::{Ipv4Addr, Ipv6Addr};

/// `ip_frag` values by name, as OVS writes them: (name, value, mask).
pub(crate) const IP_FRAG_NAMES: [(&str, u128, u128); 5] = [
    ("no", 0, 3),
    ("yes", 1, 1),
    ("first", 1, 3),
    ("later", 3, 3),
    ("not_later", 0, 2),
];

/// Parses `v` as a value of `f`, with an optional `/mask`. The mask defaults to
/// the field's full width; the value comes back already masked.
pub(crate) fn field_value(f: Field, v: Tok<'_>, ports: &dyn PortNames) -> PResult<(u128, u128)> {
    if v.is_empty() {
        return v.err(format!("{} needs a value", f.name()));
    }
    let (value, mask) = match f.def().kind {
        FieldKind::Int | FieldKind::Hex => int_value(f, v)?,
        FieldKind::Port => match v.s.contains('/') {
            true => int_masked(f, v)?,
            false => (u128::from(match_port(v, ports)?), f.full_mask()),
        },
        FieldKind::Mac => masked_by(f, v, mac)?,
        FieldKind::Ipv4 => addr_masked(f, v, ipv4, 32)?,
        FieldKind::Ipv6 => addr_masked(f, v, ipv6, 128)?,
        FieldKind::CtState => {
            flags_or_int(f, v, &ct_state::NAMES.map(|(n, b)| (n, u128::from(b))))?
        }
        FieldKind::TcpFlags => {
            flags_or_int(f, v, &tcp_flags::NAMES.map(|(n, b)| (n, u128::from(b))))?
        }
    };
    Ok((value & mask, mask))
}

/// An integer field value: `V`, `V/M`, or (ip_frag) a name.
fn int_value(f: Field, v: Tok<'_>) -> PResult<(u128, u128)> {
    let name = IP_FRAG_NAMES
        .iter()
        .find(|(n, _, _)| f == Field::IpFrag && *n == v.s);
    if let Some((_, val, mask)) = name {
        return Ok((*val, *mask));
    }
    int_masked(f, v)
}

/// `V` or `V/M`, both integers that fit the field.
fn int_masked(f: Field, v: Tok<'_>) -> PResult<(u128, u128)> {
    masked_by(f, v, |t| {
        let n = parse_u128(t)?;
        fits(f, n, t)?;
        Ok(n)
    })
}

/// `V` or `V/M` where both are written the same way (`parse`).
fn masked_by(
    f: Field,
    v: Tok<'_>,
    parse: impl Fn(Tok<'_>) -> PResult<u128>,
) -> PResult<(u128, u128)> {
    match v.split_once("/") {
        Some((val, mask)) => Ok((parse(val)?, parse(mask)?)),
        None => Ok((parse(v)?, f.full_mask())),
    }
}

/// An address with an optional `/prefix-length` or `/address-mask`.
fn addr_masked(
    f: Field,
    v: Tok<'_>,
    parse: fn(Tok<'_>) -> PResult<u128>,
    bits: u32,
) -> PResult<(u128, u128)> {
    let Some((val, mask)) = v.split_once("/") else {
        return Ok((parse(v)?, f.full_mask()));
    };
    let value = parse(val)?;
    if !mask.is_empty() && mask.s.bytes().all(|b| b.is_ascii_digit()) {
        let n = parse_uint(mask, u128::from(bits), "prefix length")? as u32;
        return Ok((value, prefix_mask(n, bits)));
    }
    Ok((value, parse(mask)?))
}

/// The mask of an `n`-bit prefix of a `bits`-wide address.
pub(crate) fn prefix_mask(n: u32, bits: u32) -> u128 {
    if n == 0 {
        0
    } else {
        ones(bits) & !ones(bits - n.min(bits))
    }
}

/// Errors unless `n` fits in the field's width.
pub(crate) fn fits(f: Field, n: u128, t: Tok<'_>) -> PResult<()> {
    if n & !f.full_mask() != 0 {
        let d = f.def();
        return t.err(format!(
            "value {} does not fit in {} ({} bits)",
            t.s, d.name, d.bits
        ));
    }
    Ok(())
}

pub(crate) fn mac(t: Tok<'_>) -> PResult<u128> {
    let mut out = 0u128;
    let mut n = 0;
    for part in t.s.split(':') {
        let ok = (1..=2).contains(&part.len()) && part.bytes().all(|b| b.is_ascii_hexdigit());
        if !ok || n == 6 {
            return t.err(format!(
                "'{}' is not a MAC address (write aa:bb:cc:dd:ee:ff)",
                t.s
            ));
        }
        out = (out << 8) | u128::from(u8::from_str_radix(part, 16).unwrap_or(0));
        n += 1;
    }
    if n != 6 {
        return t.err(format!(
            "'{}' is not a MAC address (write aa:bb:cc:dd:ee:ff)",
            t.s
        ));
    }
    Ok(out)
}

pub(crate) fn ipv4(t: Tok<'_>) -> PResult<u128> {
    t.s.parse::<Ipv4Addr>()
        .map(|a| u128::from(u32::from(a)))
        .map_err(|_| t.perr(format!("'{}' is not an IPv4 address", t.s)))
}

pub(crate) fn ipv6(t: Tok<'_>) -> PResult<u128> {
    t.s.parse::<Ipv6Addr>()
        .map(u128::from)
        .map_err(|_| t.perr(format!("'{}' is not an IPv6 address", t.s)))
}

/// `+a-b` flag syntax (a `-x` puts the bit in the mask with value 0), or an integer.
fn flags_or_int(f: Field, v: Tok<'_>, names: &[(&str, u128)]) -> PResult<(u128, u128)> {
    if !v.s.starts_with(['+', '-']) {
        return int_masked(f, v);
    }
    let (mut value, mut mask) = (0u128, 0u128);
    let mut rest = v;
    while let Some(sign) = rest.s.chars().next() {
        let body = rest.from(1);
        let len = body.s.find(['+', '-']).unwrap_or(body.s.len());
        let name = body.slice(0, len);
        let Some(&(_, bit)) = names.iter().find(|(n, _)| *n == name.s) else {
            let known: Vec<&str> = names.iter().map(|(n, _)| *n).collect();
            let what = if name.is_empty() {
                "missing flag name".to_string()
            } else {
                format!("unknown flag '{}'", name.s)
            };
            return name.err(format!(
                "{what} for {} (known: {})",
                f.name(),
                known.join(", ")
            ));
        };
        if mask & bit != 0 {
            return name.err(format!("flag '{}' given twice", name.s));
        }
        mask |= bit;
        if sign == '+' {
            value |= bit;
        } else if sign != '-' {
            return rest.err("expected '+' or '-' before a flag name");
        }
        rest = body.from(len);
    }
    Ok((value, mask))
}

/// A port in a match or filter: a number or an interface name.
pub(crate) fn match_port(t: Tok<'_>, ports: &dyn PortNames) -> PResult<u32> {
    if t.s.starts_with(|c: char| c.is_ascii_digit()) {
        return Ok(parse_uint(t, u128::from(u32::MAX), "port")? as u32);
    }
    ports
        .port_no(t.s)
        .ok_or_else(|| t.perr(format!("unknown port '{}'", t.s)))
}

/// A port an action sends to: a number, an interface name, or `in_port`.
pub(crate) fn out_port(t: Tok<'_>, ports: &dyn PortNames) -> PResult<u32> {
    if t.s.eq_ignore_ascii_case("in_port") {
        return Ok(port_no::IN_PORT);
    }
    let p = match_port(t, ports)?;
    if p == port_no::NONE {
        return t.err("port 0xffffffff is reserved (it means 'no port')");
    }
    Ok(p)
}

/// `lo-hi` of an integer field (a port range), if `v` is one.
pub(crate) fn range(f: Field, v: Tok<'_>) -> PResult<Option<(u128, u128)>> {
    let Some((lo_t, hi_t)) = v.split_once("-") else {
        return Ok(None);
    };
    match f.def().kind {
        FieldKind::Int | FieldKind::Hex => {}
        FieldKind::Mac | FieldKind::Ipv4 => {
            return v.err(format!("{} does not take a range", f.name()));
        }
        // '-' is part of these values: `-trk`, `-ack`, a port named `veth-a`.
        FieldKind::CtState | FieldKind::TcpFlags | FieldKind::Port | FieldKind::Ipv6 => {
            return Ok(None);
        }
    }
    if v.s.contains('/') {
        return v.err("a range cannot have a mask");
    }
    let (lo, hi) = (parse_u128(lo_t)?, parse_u128(hi_t)?);
    fits(f, lo, lo_t)?;
    fits(f, hi, hi_t)?;
    if lo > hi {
        return v.err(format!("empty range: {} is above {}", lo_t.s, hi_t.s));
    }
    Ok(Some((lo, hi)))
}

/// The fewest value/mask prefixes of a `bits`-wide field that together match
/// exactly `lo..=hi` (each value in the range by exactly one prefix).
pub(crate) fn range_prefixes(lo: u128, hi: u128, bits: u32) -> Vec<(u128, u128)> {
    let full = ones(bits);
    let mut out = Vec::new();
    let mut lo = lo;
    loop {
        // The largest block aligned at `lo` that does not run past `hi`.
        let mut k = lo.trailing_zeros().min(bits);
        while k > 0 && (lo | ones(k)) > hi {
            k -= 1;
        }
        let end = lo | ones(k);
        out.push((lo, full & !ones(k)));
        if end >= hi {
            return out;
        }
        lo = end + 1;
    }
}

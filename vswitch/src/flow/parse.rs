//! The text syntax of flows, filters and groups, as `ovs-ofctl add-flow`,
//! `del-flows`/`dump-flows` and `add-group` write them (see ovs-ofctl(8),
//! ovs-fields(7), ovs-actions(7)); [`super::format`] prints the same syntax back.
//!
//! Parsing never panics: any input gives a value or a [`ParseError`] that points at
//! the offending token.

mod action;
mod lex;
mod value;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use self::action::{ActCtx, group_id, parse_actions};
use self::lex::{Delim, Lexer, PResult, Perr, Tok, did_you_mean, parse_u16, parse_u64, parse_uint};
use self::value::{field_value, out_port, range, range_prefixes};
use super::field::{Field, Prereq, eth_type, ip_proto};
use super::key::{Key, VLAN_PRESENT};
use super::spec::{
    Bucket, DEFAULT_PRIORITY, FlowFilter, FlowSpec, GroupKind, GroupSpec, MAX_TABLE, Match,
};
use std::collections::HashMap;
use std::hash::BuildHasher;

pub(crate) use self::lex::ones;
pub(crate) use self::value::{IP_FRAG_NAMES, prefix_mask};

/// At most this many flows come out of one spec with port ranges (`tp_dst=1-65534`
/// alone makes 30; a cross product of two such ranges would make 900).
pub const MAX_EXPANSION: usize = 1024;

/// Resolves interface names in specs (`in_port=veth12`, `output:veth12`) and back.
pub trait PortNames {
    fn port_no(&self, name: &str) -> Option<u32>;
    fn port_name(&self, no: u32) -> Option<String>;
}

/// No names: ports are numbers only.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoPortNames;

impl PortNames for NoPortNames {
    fn port_no(&self, _: &str) -> Option<u32> {
        None
    }
    fn port_name(&self, _: u32) -> Option<String> {
        None
    }
}

impl<S: BuildHasher> PortNames for HashMap<String, u32, S> {
    fn port_no(&self, name: &str) -> Option<u32> {
        self.get(name).copied()
    }
    fn port_name(&self, no: u32) -> Option<String> {
        self.iter()
            .find(|(_, n)| **n == no)
            .map(|(name, _)| name.clone())
    }
}

/// A syntax or validation error, at a 1-based character column of the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {column}: {message}")]
pub struct ParseError {
    pub column: usize,
    pub message: String,
}

impl ParseError {
    fn at(text: &str, e: Perr) -> ParseError {
        let column = match text.get(..e.at) {
            Some(before) => before.chars().count() + 1,
            None => e.at + 1,
        };
        ParseError {
            column,
            message: e.msg,
        }
    }

    /// The message and the line of `text` it refers to, with a caret under the
    /// column (as rustc does):
    ///
    /// ```text
    /// error: tp_dst requires ip_proto tcp, udp or sctp (add 'tcp,')
    ///   |
    ///   | ip,tp_dst=80,actions=drop
    ///   |    ^
    /// ```
    pub fn render(&self, text: &str) -> String {
        let idx = self.column.saturating_sub(1);
        let mut start = 0; // char index where the current line starts
        let mut shown = ("", 0);
        for line in text.split('\n') {
            let len = line.chars().count();
            shown = (line, idx.saturating_sub(start));
            if idx <= start + len {
                break;
            }
            start += len + 1;
        }
        let (line, col) = shown;
        // Tabs would shift the caret; show them as single spaces.
        let line: String = line
            .chars()
            .map(|c| if c == '\t' { ' ' } else { c })
            .collect();
        let pad = " ".repeat(col);
        format!("error: {}\n  |\n  | {line}\n  | {pad}^\n", self.message)
    }
}

fn public<T>(text: &str, r: PResult<T>) -> Result<T, ParseError> {
    r.map_err(|e| ParseError::at(text, e))
}

/// Parses an `add-flow` spec: `key=value` matches and shorthands, then `actions=`.
/// Port ranges (`tp_dst=1000-1999`) expand into one flow per value/mask prefix, so
/// the result may hold several specs (at most [`MAX_EXPANSION`]).
pub fn parse_flow(text: &str, ports: &dyn PortNames) -> Result<Vec<FlowSpec>, ParseError> {
    public(text, flow(Tok::new(text), ports))
}

/// Parses a non-strict `del-flows`/`dump-flows` filter: `table=`, `cookie=V/M`,
/// `out_port=` and match fields (no priority, no actions).
pub fn parse_filter(text: &str, ports: &dyn PortNames) -> Result<FlowFilter, ParseError> {
    public(text, filter(Tok::new(text), ports, false))
}

/// Parses a `--strict` filter: as [`parse_filter`], plus `priority=` (default
/// 32768, as OVS), and the match must be equal rather than at least as specific.
pub fn parse_filter_strict(text: &str, ports: &dyn PortNames) -> Result<FlowFilter, ParseError> {
    public(text, filter(Tok::new(text), ports, true))
}

/// Parses a bare match (`in_port=1,tcp,tp_dst=80`), as `trace` takes a packet.
pub fn parse_match(text: &str, ports: &dyn PortNames) -> Result<Match, ParseError> {
    public(text, bare_match(Tok::new(text), ports))
}

/// Parses an `add-group` spec:
/// `group_id=1,type=select,selection_method=hash,fields(ip_src,tp_src),bucket=weight:10,actions=output:1,bucket=actions=output:2`.
pub fn parse_group(text: &str, ports: &dyn PortNames) -> Result<GroupSpec, ParseError> {
    public(text, group(Tok::new(text), ports))
}

// ---- matches ------------------------------------------------------------------

/// (name, eth_type, ip_proto) of the protocol shorthands.
pub(crate) const SHORTHANDS: [(&str, u16, Option<u8>); 11] = [
    ("ip", eth_type::IPV4, None),
    ("ipv6", eth_type::IPV6, None),
    ("arp", eth_type::ARP, None),
    ("tcp", eth_type::IPV4, Some(ip_proto::TCP)),
    ("udp", eth_type::IPV4, Some(ip_proto::UDP)),
    ("sctp", eth_type::IPV4, Some(ip_proto::SCTP)),
    ("icmp", eth_type::IPV4, Some(ip_proto::ICMP)),
    ("tcp6", eth_type::IPV6, Some(ip_proto::TCP)),
    ("udp6", eth_type::IPV6, Some(ip_proto::UDP)),
    ("sctp6", eth_type::IPV6, Some(ip_proto::SCTP)),
    ("icmp6", eth_type::IPV6, Some(ip_proto::ICMPV6)),
];

/// Bits of the match set by one item, kept to report duplicates and conflicts.
struct Setting<'a> {
    origin: Tok<'a>,
    /// A field named by the user (two of those on the same bits is a duplicate);
    /// a shorthand may repeat bits another item sets, if the values agree.
    explicit: bool,
    /// A range: its bits are set per expanded flow, so nothing may share them.
    ranged: bool,
    m: Match,
}

/// A port range on a field, expanded into prefixes.
struct Ranged<'a> {
    field: Field,
    origin: Tok<'a>,
    prefixes: Vec<(u128, u128)>,
}

/// Accumulates match items and checks them once the whole match is known.
#[derive(Default)]
struct MatchBuilder<'a> {
    m: Match,
    settings: Vec<Setting<'a>>,
    /// Fields the user named, to check prerequisites (and duplicate names) on.
    named: Vec<(Field, Tok<'a>)>,
    ranges: Vec<Ranged<'a>>,
}

fn overlaps(a: &Key, b: &Key) -> bool {
    a.0.iter().zip(b.0.iter()).any(|(x, y)| x & y != 0)
}

impl<'a> MatchBuilder<'a> {
    /// Handles a match item; `Ok(false)` if `key` is neither a field nor a shorthand.
    fn item(
        &mut self,
        key: Tok<'a>,
        delim: Delim,
        value: Tok<'a>,
        ports: &dyn PortNames,
    ) -> PResult<bool> {
        if let Some(&(_, et, proto)) = SHORTHANDS.iter().find(|(n, _, _)| *n == key.s) {
            if delim != Delim::None {
                return key.err(format!("'{}' takes no value", key.s));
            }
            self.shorthand(key, et, proto)?;
            return Ok(true);
        }
        let Some(f) = Field::by_name(key.s) else {
            return Ok(false);
        };
        if delim == Delim::None || delim == Delim::Paren {
            return key.err(format!("{} needs a value, as in '{}=...'", key.s, key.s));
        }
        if let Some((_, first)) = self.named.iter().find(|(g, _)| *g == f) {
            return key.err(format!(
                "duplicate field: {} is already given as '{}'",
                key.s, first.s
            ));
        }
        self.named.push((f, key));
        if let Some((lo, hi)) = range(f, value)? {
            return self.range(f, key, lo, hi).map(|_| true);
        }
        let (f, v, m) = self.field_value(f, key, value, ports)?;
        let mut one = Match::ANY;
        one.set(f, v, m);
        self.add(key, true, false, one)?;
        Ok(true)
    }

    /// The field, value and mask an item sets, with `dl_vlan`'s OpenFlow 1.0
    /// meaning: `dl_vlan=N` is a tag with VID N (present bit set), `dl_vlan=0xffff`
    /// no tag at all (the whole TCI zero, as `vlan_tci=0`).
    fn field_value(
        &self,
        f: Field,
        key: Tok<'a>,
        value: Tok<'a>,
        ports: &dyn PortNames,
    ) -> PResult<(Field, u128, u128)> {
        if key.s != "dl_vlan" {
            return field_value(f, value, ports).map(|(v, m)| (f, v, m));
        }
        let vid = parse_uint(value, 0xffff, "dl_vlan")?;
        match vid {
            0xffff => Ok((Field::VlanTci, 0, Field::VlanTci.full_mask())),
            0..=0xfff => Ok((f, u128::from(VLAN_PRESENT) | vid, f.full_mask())),
            _ => value.err("dl_vlan is a VLAN id 0..4095, or 0xffff for untagged packets"),
        }
    }

    fn shorthand(&mut self, key: Tok<'a>, et: u16, proto: Option<u8>) -> PResult<()> {
        let mut one = Match::ANY;
        one.set_exact(Field::EthType, u128::from(et));
        if let Some(p) = proto {
            one.set_exact(Field::IpProto, u128::from(p));
        }
        self.add(key, false, false, one)
    }

    fn range(&mut self, f: Field, key: Tok<'a>, lo: u128, hi: u128) -> PResult<()> {
        let prefixes = range_prefixes(lo, hi, f.def().bits);
        let total = self
            .ranges
            .iter()
            .try_fold(prefixes.len(), |n, r| n.checked_mul(r.prefixes.len()));
        if total.is_none_or(|n| n > MAX_EXPANSION) {
            return key.err(format!(
                "these ranges expand to more than {MAX_EXPANSION} flows; narrow or align them"
            ));
        }
        let mut one = Match::ANY;
        one.set(f, 0, u128::MAX);
        self.add(key, true, true, one)?;
        self.ranges.push(Ranged {
            field: f,
            origin: key,
            prefixes,
        });
        Ok(())
    }

    /// Adds one item's bits, refusing duplicates and conflicting values.
    fn add(&mut self, origin: Tok<'a>, explicit: bool, ranged: bool, one: Match) -> PResult<()> {
        for s in &self.settings {
            if !overlaps(&s.m.mask, &one.mask) {
                continue;
            }
            if (explicit && s.explicit) || ranged || s.ranged {
                return origin.err(format!(
                    "{} overlaps '{}' given earlier",
                    origin.s, s.origin.s
                ));
            }
            let both = one.mask.masked(&s.m.mask);
            if one.value.masked(&both) != s.m.value.masked(&both) {
                return origin.err(format!(
                    "{} conflicts with '{}' given earlier",
                    origin.s, s.origin.s
                ));
            }
        }
        if !ranged {
            self.m.mask.or_assign(&one.mask);
            self.m.value.or_assign(&one.value);
        }
        self.settings.push(Setting {
            origin,
            explicit,
            ranged,
            m: one,
        });
        Ok(())
    }

    /// The match without ranged fields (what actions are checked against).
    fn base(&self) -> Match {
        self.m
    }

    /// Every flow's match: the cross product of the range prefixes, each checked
    /// for the prerequisites of the fields the user named.
    fn finish(&self) -> PResult<Vec<Match>> {
        let mut out = vec![self.m];
        for r in &self.ranges {
            let mut next = Vec::with_capacity(out.len() * r.prefixes.len());
            for m in &out {
                for &(v, mask) in &r.prefixes {
                    let mut m = *m;
                    m.set(r.field, v, mask);
                    next.push(m);
                }
            }
            out = next;
        }
        for m in &out {
            for &(f, key) in &self.named {
                check_prereq_named(f, key.s, m, key)?;
            }
        }
        Ok(out)
    }

    /// The one match of a filter (a range there must be a single prefix).
    fn finish_single(&self) -> PResult<Match> {
        if let Some(r) = self.ranges.iter().find(|r| r.prefixes.len() > 1) {
            return r.origin.err(format!(
                "{} takes a single value or value/mask in a filter, not a range",
                r.origin.s
            ));
        }
        let all = self.finish()?;
        Ok(all.first().copied().unwrap_or(self.m))
    }
}

/// `field`'s exact value in `m`, if it is matched with all bits.
pub(crate) fn exact(m: &Match, f: Field) -> Option<u128> {
    m.get(f)
        .filter(|(_, mask)| *mask == f.full_mask())
        .map(|(v, _)| v)
}

/// Whether `m` meets prerequisite `p` (OVS's rules: a field is only meaningful,
/// and only stored unambiguously, for the packets its prerequisite selects).
pub(crate) fn prereq_met(p: Prereq, m: &Match) -> bool {
    let et = exact(m, Field::EthType);
    let proto = exact(m, Field::IpProto);
    let is = |t: u16| et == Some(u128::from(t));
    let proto_is = |p: u8| proto == Some(u128::from(p));
    let ip = is(eth_type::IPV4) || is(eth_type::IPV6);
    match p {
        Prereq::None => true,
        Prereq::Ipv4 => is(eth_type::IPV4),
        Prereq::Ipv6 => is(eth_type::IPV6),
        Prereq::Ip => ip,
        Prereq::Arp => is(eth_type::ARP),
        Prereq::L4 => {
            ip && (proto_is(ip_proto::TCP) || proto_is(ip_proto::UDP) || proto_is(ip_proto::SCTP))
        }
        Prereq::Tcp => ip && proto_is(ip_proto::TCP),
        Prereq::Icmp => {
            (is(eth_type::IPV4) && proto_is(ip_proto::ICMP))
                || (is(eth_type::IPV6) && proto_is(ip_proto::ICMPV6))
        }
        Prereq::Vlan => {
            let p = u128::from(VLAN_PRESENT);
            m.get(Field::VlanTci)
                .is_some_and(|(v, mask)| v & mask & p != 0)
        }
    }
}

/// What to add to meet a prerequisite, for error messages.
fn prereq_hint(p: Prereq) -> &'static str {
    match p {
        Prereq::None => "",
        Prereq::Ipv4 => "ip (add 'ip,')",
        Prereq::Ipv6 => "ipv6 (add 'ipv6,')",
        Prereq::Ip => "ip or ipv6 (add 'ip,')",
        Prereq::Arp => "arp (add 'arp,')",
        Prereq::L4 => "ip_proto tcp, udp or sctp (add 'tcp,')",
        Prereq::Tcp => "ip_proto tcp (add 'tcp,')",
        Prereq::Icmp => "icmp or icmp6 (add 'icmp,')",
        Prereq::Vlan => "a VLAN tag (add 'dl_vlan=N,' or 'vlan_tci=0x1000/0x1000,')",
    }
}

fn check_prereq_named(f: Field, name: &str, m: &Match, at: Tok<'_>) -> PResult<()> {
    let p = f.def().prereq;
    if prereq_met(p, m) {
        return Ok(());
    }
    at.err(format!("{name} requires {}", prereq_hint(p)))
}

/// Checks a field an action touches against the flow's match.
pub(crate) fn check_prereq(f: Field, m: &Match, at: Tok<'_>) -> PResult<()> {
    check_prereq_named(f, f.name(), m, at)
}

// ---- flows, filters, groups -----------------------------------------------------

pub(crate) fn table_num(t: Tok<'_>) -> PResult<u8> {
    Ok(parse_uint(t, u128::from(MAX_TABLE), "table")? as u8)
}

/// Refuses a keyword given twice.
fn once<'a>(seen: &mut Vec<Tok<'a>>, key: Tok<'a>) -> PResult<()> {
    if seen.iter().any(|k| k.s == key.s) {
        return key.err(format!("{} is given twice", key.s));
    }
    seen.push(key);
    Ok(())
}

fn is_actions(key: Tok<'_>, delim: Delim) -> bool {
    matches!(key.s, "actions" | "action") && matches!(delim, Delim::Eq | Delim::Colon)
}

/// The error for a key that is no field, shorthand or keyword of this context.
fn unknown(key: Tok<'_>, keywords: &[&str]) -> Perr {
    if key.is_empty() {
        return key.perr("expected a field name before this");
    }
    let fields = Field::ALL
        .iter()
        .flat_map(|f| std::iter::once(f.name()).chain(f.def().aliases.iter().copied()));
    let names = fields
        .chain(SHORTHANDS.iter().map(|s| s.0))
        .chain(keywords.iter().copied());
    let hint = did_you_mean(key.s, names);
    key.perr(format!("unknown field or keyword '{}'{hint}", key.s))
}

/// Keys `dump-flows` prints that `add-flow` ignores, so its output can be fed back.
const STATS_KEYS: [&str; 5] = ["duration", "n_packets", "n_bytes", "idle_age", "hard_age"];
const FLOW_KEYS: [&str; 6] = [
    "table",
    "priority",
    "cookie",
    "idle_timeout",
    "hard_timeout",
    "actions",
];

fn flow(src: Tok<'_>, ports: &dyn PortNames) -> PResult<Vec<FlowSpec>> {
    let mut spec = FlowSpec::default();
    let mut mb = MatchBuilder::default();
    let mut seen = Vec::new();
    let mut lx = Lexer::new(src);
    let mut actions = None;
    while let Some((key, delim)) = lx.next_key() {
        if is_actions(key, delim) {
            actions = Some(lx.rest());
            break;
        }
        let value = lx.value(delim)?;
        match key.s {
            "table" => {
                once(&mut seen, key)?;
                spec.table = table_num(value)?;
            }
            "priority" => {
                once(&mut seen, key)?;
                spec.priority = parse_u16(value, "priority")?;
            }
            "cookie" => {
                once(&mut seen, key)?;
                if let Some((_, m)) = value.split_once("/") {
                    return m
                        .err("a cookie mask only makes sense in a filter (del-flows, dump-flows)");
                }
                spec.cookie = parse_u64(value, "cookie")?;
            }
            "idle_timeout" => {
                once(&mut seen, key)?;
                spec.idle_timeout = parse_u16(value, "idle_timeout")?;
            }
            "hard_timeout" => {
                once(&mut seen, key)?;
                spec.hard_timeout = parse_u16(value, "hard_timeout")?;
            }
            s if STATS_KEYS.contains(&s) => {}
            "out_port" => {
                return key.err("out_port only makes sense in a filter (del-flows, dump-flows)");
            }
            _ => {
                if !mb.item(key, delim, value, ports)? {
                    return Err(unknown(key, &FLOW_KEYS));
                }
            }
        }
    }
    let Some(actions) = actions else {
        return src
            .end()
            .err("missing 'actions=' (write 'actions=drop' for a flow that drops)");
    };
    let matches = mb.finish()?;
    let cx = ActCtx {
        ports,
        table: Some(spec.table),
        m: Some(mb.base()),
        group: None,
    };
    spec.actions = parse_actions(actions, &cx)?;
    Ok(matches
        .into_iter()
        .map(|m| FlowSpec { m, ..spec.clone() })
        .collect())
}

const FILTER_KEYS: [&str; 4] = ["table", "cookie", "out_port", "priority"];

fn filter(src: Tok<'_>, ports: &dyn PortNames, strict: bool) -> PResult<FlowFilter> {
    let mut f = FlowFilter::default();
    let mut mb = MatchBuilder::default();
    let mut seen = Vec::new();
    let mut priority = None;
    let mut lx = Lexer::new(src);
    while let Some((key, delim)) = lx.next_key() {
        if is_actions(key, delim) {
            return key.err("a filter takes no actions");
        }
        let value = lx.value(delim)?;
        match key.s {
            "table" => {
                once(&mut seen, key)?;
                f.table = Some(table_num(value)?);
            }
            "cookie" => {
                once(&mut seen, key)?;
                f.cookie = Some(cookie_mask(value)?);
            }
            "out_port" => {
                once(&mut seen, key)?;
                f.out_port = Some(out_port(value, ports)?);
            }
            "priority" if strict => {
                once(&mut seen, key)?;
                priority = Some(parse_u16(value, "priority")?);
            }
            "priority" => return key.err("priority only selects flows with --strict"),
            "idle_timeout" | "hard_timeout" => {
                return key.err(format!("{} is not part of a filter", key.s));
            }
            _ => {
                if !mb.item(key, delim, value, ports)? {
                    return Err(unknown(key, &FILTER_KEYS));
                }
            }
        }
    }
    f.m = mb.finish_single()?;
    if strict {
        f.strict_priority = Some(priority.unwrap_or(DEFAULT_PRIORITY));
    }
    Ok(f)
}

/// `cookie=V/M` (a plain `cookie=V` means all 64 bits).
fn cookie_mask(v: Tok<'_>) -> PResult<(u64, u64)> {
    let (val, mask) = match v.split_once("/") {
        Some((a, b)) => (parse_u64(a, "cookie")?, parse_u64(b, "cookie mask")?),
        None => (parse_u64(v, "cookie")?, u64::MAX),
    };
    Ok((val & mask, mask))
}

fn bare_match(src: Tok<'_>, ports: &dyn PortNames) -> PResult<Match> {
    let mut mb = MatchBuilder::default();
    let mut lx = Lexer::new(src);
    while let Some((key, delim)) = lx.next_key() {
        let value = lx.value(delim)?;
        if !mb.item(key, delim, value, ports)? {
            return Err(unknown(key, &[]));
        }
    }
    mb.finish_single()
}

const GROUP_KEYS: [&str; 5] = ["group_id", "type", "selection_method", "fields", "bucket"];

/// The group-level settings, before buckets are parsed (they depend on the type).
#[derive(Default)]
struct GroupHead<'a> {
    id: Option<u32>,
    kind: Option<GroupKind>,
    method: Option<Tok<'a>>,
    fields: Vec<Field>,
    fields_tok: Option<Tok<'a>>,
    buckets: Vec<Tok<'a>>,
}

fn group(src: Tok<'_>, ports: &dyn PortNames) -> PResult<GroupSpec> {
    let mut h = GroupHead::default();
    let mut seen = Vec::new();
    let mut lx = Lexer::new(src);
    while let Some((key, delim)) = lx.next_key() {
        if key.s == "bucket" && matches!(delim, Delim::Eq | Delim::Colon) {
            h.buckets.push(bucket_text(src, &mut lx)?);
            continue;
        }
        // Everything after the first `bucket=` belongs to some bucket, so these
        // are all group settings.
        let value = lx.value(delim)?;
        once(&mut seen, key)?;
        match key.s {
            "group_id" => h.id = Some(group_id(value)?),
            "type" => h.kind = Some(group_kind(value)?),
            "selection_method" => match value.s {
                "hash" => h.method = Some(key),
                _ => {
                    return value.err(format!(
                        "unsupported selection_method '{}' (supported: hash)",
                        value.s
                    ));
                }
            },
            "fields" => {
                h.fields = hash_fields(value)?;
                h.fields_tok = Some(key);
            }
            _ => return Err(unknown_group_key(key)),
        }
    }
    let Some(id) = h.id else {
        return src.end().err("missing group_id=N");
    };
    let Some(kind) = h.kind else {
        return src.end().err("missing type=all or type=select");
    };
    if let (GroupKind::All, Some(t)) = (kind, h.method.or(h.fields_tok)) {
        return t.err(format!("{} only applies to type=select groups", t.s));
    }
    let buckets = h
        .buckets
        .iter()
        .map(|b| bucket(*b, kind, id, ports))
        .collect::<PResult<Vec<_>>>()?;
    Ok(GroupSpec {
        id,
        kind,
        fields: h.fields,
        buckets,
    })
}

fn unknown_group_key(key: Tok<'_>) -> Perr {
    let hint = did_you_mean(key.s, GROUP_KEYS.iter().copied());
    key.perr(format!("unknown group keyword '{}'{hint}", key.s))
}

fn group_kind(v: Tok<'_>) -> PResult<GroupKind> {
    match v.s {
        "all" => Ok(GroupKind::All),
        "select" => Ok(GroupKind::Select),
        "indirect" | "ff" | "fast_failover" => v.err(format!(
            "group type '{}' is not supported (all, select)",
            v.s
        )),
        _ => v.err(format!("unknown group type '{}' (all, select)", v.s)),
    }
}

/// `fields(ip_src,tp_src)` or `fields=ip_src`.
fn hash_fields(v: Tok<'_>) -> PResult<Vec<Field>> {
    let mut out = Vec::new();
    let mut lx = Lexer::new(v);
    while let Some(item) = lx.next_item() {
        let item = item?;
        if item.delim != Delim::None {
            return item.key.err("hash fields take no masks or values");
        }
        let f = action::field_ref(item.key)?;
        if out.contains(&f) {
            return item.key.err(format!("{} is listed twice", item.key.s));
        }
        out.push(f);
    }
    if out.is_empty() {
        return v.err("fields() needs at least one field");
    }
    Ok(out)
}

/// The text of one bucket: from after `bucket=` to the next top-level `bucket=`.
fn bucket_text<'a>(src: Tok<'a>, lx: &mut Lexer<'a>) -> PResult<Tok<'a>> {
    let start = lx.pos();
    loop {
        let here = lx.pos();
        let Some((key, delim)) = lx.next_key() else {
            return Ok(src.slice(start, here).trim());
        };
        if key.s == "bucket" && matches!(delim, Delim::Eq | Delim::Colon) {
            lx.reset(here);
            return Ok(src.slice(start, here).trim());
        }
        lx.value(delim)?;
    }
}

/// `weight:N,actions=...`, or the actions alone (`bucket=output:1`).
fn bucket(text: Tok<'_>, kind: GroupKind, id: u32, ports: &dyn PortNames) -> PResult<Bucket> {
    let mut weight = None;
    let mut lx = Lexer::new(text);
    let mut actions = text.end();
    loop {
        let here = lx.pos();
        let Some((key, delim)) = lx.next_key() else {
            break;
        };
        if is_actions(key, delim) {
            actions = lx.rest();
            break;
        }
        match key.s {
            "weight" if matches!(delim, Delim::Eq | Delim::Colon) => {
                let v = lx.value(delim)?;
                if kind != GroupKind::Select {
                    return key.err("only select groups have bucket weights");
                }
                if weight.replace(parse_u16(v, "weight")?).is_some() {
                    return key.err("weight is given twice");
                }
            }
            "bucket_id" | "watch_port" | "watch_group" => {
                return key.err(format!("{} is not supported", key.s));
            }
            _ => {
                // OVS accepts a bucket's actions without `actions=`.
                actions = text.from(here);
                break;
            }
        }
    }
    let cx = ActCtx {
        ports,
        table: None,
        m: None,
        group: Some(id),
    };
    let actions = parse_actions(actions, &cx)?;
    // OpenFlow: weight is for select groups (default 1) and 0 otherwise.
    let default = if kind == GroupKind::Select { 1 } else { 0 };
    Ok(Bucket {
        weight: weight.unwrap_or(default),
        actions,
    })
}

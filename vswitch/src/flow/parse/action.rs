//! The action list after `actions=` (ovs-actions(7) syntax, the subset the switch
//! executes), and group buckets' action lists.

use super::PortNames;
use super::lex::{
    Delim, Item, Lexer, PResult, Tok, did_you_mean, ones, parse_u16, parse_u32, parse_u128,
};
use super::value::{field_value, ipv4, ipv6, mac, out_port};
use super::{check_prereq, table_num};
use crate::flow::field::{Field, eth_type};
use crate::flow::key::VLAN_PRESENT;
use crate::flow::spec::{Action, CtAction, CtZone, Encap, Match, NatKind, NatSpec, Punt};
use std::net::IpAddr;

/// Highest group id (OpenFlow's OFPG_MAX; ids above are reserved).
pub(crate) const MAX_GROUP: u32 = 0xffff_ff00;

/// What the action list is checked against.
pub(crate) struct ActCtx<'p> {
    pub ports: &'p dyn PortNames,
    /// The flow's own table (`goto_table` must go to a later one); `None` in a
    /// group bucket, where `goto_table` is not allowed at all.
    pub table: Option<u8>,
    /// The flow's match, for `set_field`/`move` prerequisites; `None` in a bucket.
    pub m: Option<Match>,
    /// The group being defined (a bucket may not send to its own group).
    pub group: Option<u32>,
}

/// Parses a comma-separated action list. `drop` (alone) and the empty list both
/// give an empty vector: the one canonical form of "no actions".
pub(crate) fn parse_actions(src: Tok<'_>, cx: &ActCtx<'_>) -> PResult<Vec<Action>> {
    let mut lx = Lexer::new(src);
    let mut out = Vec::new();
    let mut drop: Option<Tok<'_>> = None;
    let mut after_goto = false;
    // The match as the actions so far leave it (push_vlan/pop_vlan change what
    // later set_field actions may touch).
    let mut m = cx.m;
    while let Some(item) = lx.next_item() {
        let item = item?;
        if after_goto {
            return item.key.err(format!(
                "goto_table must be the last action ('{}' comes after it)",
                item.key.s
            ));
        }
        if item.key.s.eq_ignore_ascii_case("drop") {
            no_value(&item)?;
            drop = Some(item.key);
            continue;
        }
        let a = action(&item, cx)?;
        if let Some(m) = m.as_mut() {
            check_action_prereqs(&a, m, item.key)?;
        }
        after_goto = matches!(a, Action::GotoTable(_));
        out.push(a);
    }
    if let (Some(d), false) = (drop, out.is_empty()) {
        return d.err("'drop' must be the only action");
    }
    Ok(out)
}

fn no_value(item: &Item<'_>) -> PResult<()> {
    match item.delim {
        Delim::None => Ok(()),
        Delim::Paren if item.value.is_empty() => Ok(()),
        _ => item.key.err(format!("'{}' takes no argument", item.key.s)),
    }
}

fn need_value<'a>(item: &Item<'a>, example: &str) -> PResult<Tok<'a>> {
    if item.delim == Delim::None || item.value.is_empty() {
        return item.key.err(format!(
            "'{}' needs an argument, as in '{example}'",
            item.key.s
        ));
    }
    Ok(item.value)
}

const ACTION_NAMES: &[&str] = &[
    "output",
    "in_port",
    "flood",
    "normal",
    "drop",
    "set_field",
    "load",
    "move",
    "mod_dl_src",
    "mod_dl_dst",
    "mod_nw_src",
    "mod_nw_dst",
    "mod_tp_src",
    "mod_tp_dst",
    "mod_nw_ttl",
    "mod_vlan_vid",
    "mod_vlan_pcp",
    "dec_ttl",
    "push_vlan",
    "pop_vlan",
    "strip_vlan",
    "goto_table",
    "resubmit",
    "group",
    "ct",
    "encap",
    "decap",
    "punt",
    "policy",
    "service_lb",
    "note",
];

/// One action item.
fn action(item: &Item<'_>, cx: &ActCtx<'_>) -> PResult<Action> {
    let kw = item.key.s.to_ascii_lowercase();
    let a = match kw.as_str() {
        "output" => Action::Output(out_port(need_value(item, "output:2")?, cx.ports)?),
        "in_port" => bare(item, Action::Output(crate::flow::spec::port_no::IN_PORT))?,
        "flood" => bare(item, Action::Flood)?,
        "normal" => bare(item, Action::Normal)?,
        "set_field" => set_field(need_value(item, "set_field:10.0.0.1->ip_dst")?, cx.ports)?,
        "load" => load(need_value(item, "load:1->reg0[0..7]")?)?,
        "move" => move_action(need_value(item, "move:reg0[]->reg1[]")?)?,
        "mod_dl_src" => mod_field(item, Field::EthSrc, cx)?,
        "mod_dl_dst" => mod_field(item, Field::EthDst, cx)?,
        "mod_nw_src" => mod_field(item, Field::Ipv4Src, cx)?,
        "mod_nw_dst" => mod_field(item, Field::Ipv4Dst, cx)?,
        "mod_tp_src" => mod_field(item, Field::TpSrc, cx)?,
        "mod_tp_dst" => mod_field(item, Field::TpDst, cx)?,
        "mod_nw_ttl" => mod_field(item, Field::IpTtl, cx)?,
        "mod_vlan_pcp" => mod_field(item, Field::VlanPcp, cx)?,
        "mod_vlan_vid" => mod_vlan_vid(need_value(item, "mod_vlan_vid:10")?)?,
        "dec_ttl" => bare(item, Action::DecTtl)?,
        "push_vlan" => push_vlan(need_value(item, "push_vlan:0x8100")?)?,
        "pop_vlan" | "strip_vlan" => bare(item, Action::PopVlan)?,
        "goto_table" => goto_table(need_value(item, "goto_table:1")?, cx)?,
        "resubmit" => resubmit(item, cx)?,
        "group" => group(need_value(item, "group:1")?, cx)?,
        "ct" => Action::Ct(ct(item)?),
        "encap" => encap(item)?,
        "decap" => decap(item)?,
        "punt" => Action::Punt(punt(need_value(item, "punt:icmp_echo_reply")?)?),
        "policy" => policy(item)?,
        "service_lb" => service_lb(item)?,
        "note" => Action::Note(note(item.value)?),
        _ => return bare_port(item, cx),
    };
    Ok(a)
}

fn bare(item: &Item<'_>, a: Action) -> PResult<Action> {
    no_value(item)?;
    Ok(a)
}

/// `actions=2` or `actions=veth12`: a bare port is an output (as in OVS).
fn bare_port(item: &Item<'_>, cx: &ActCtx<'_>) -> PResult<Action> {
    let k = item.key;
    let is_port = k.s.starts_with(|c: char| c.is_ascii_digit()) || cx.ports.port_no(k.s).is_some();
    if is_port && item.delim == Delim::None {
        return Ok(Action::Output(out_port(k, cx.ports)?));
    }
    if k.is_empty() {
        return k.err("expected an action");
    }
    let hint = did_you_mean(&k.s.to_ascii_lowercase(), ACTION_NAMES.iter().copied());
    k.err(format!("unknown action '{}'{hint}", k.s))
}

/// NXM/OXM register and header names that OVS users still write (`NXM_NX_REG0[]`).
const NXM_NAMES: &[(&str, Field)] = &[
    ("NXM_OF_IN_PORT", Field::InPort),
    ("NXM_OF_ETH_DST", Field::EthDst),
    ("NXM_OF_ETH_SRC", Field::EthSrc),
    ("NXM_OF_ETH_TYPE", Field::EthType),
    ("NXM_OF_VLAN_TCI", Field::VlanTci),
    ("OXM_OF_VLAN_VID", Field::VlanVid),
    ("OXM_OF_VLAN_PCP", Field::VlanPcp),
    ("NXM_OF_IP_PROTO", Field::IpProto),
    ("NXM_NX_IP_TTL", Field::IpTtl),
    ("NXM_NX_IP_ECN", Field::IpEcn),
    ("OXM_OF_IP_DSCP", Field::IpDscp),
    ("NXM_NX_IP_FRAG", Field::IpFrag),
    ("NXM_OF_IP_SRC", Field::Ipv4Src),
    ("NXM_OF_IP_DST", Field::Ipv4Dst),
    ("NXM_OF_ARP_SPA", Field::ArpSpa),
    ("NXM_OF_ARP_TPA", Field::ArpTpa),
    ("NXM_OF_ARP_OP", Field::ArpOp),
    ("NXM_NX_ARP_SHA", Field::ArpSha),
    ("NXM_NX_ARP_THA", Field::ArpTha),
    ("NXM_OF_TCP_SRC", Field::TpSrc),
    ("NXM_OF_TCP_DST", Field::TpDst),
    ("NXM_OF_UDP_SRC", Field::TpSrc),
    ("NXM_OF_UDP_DST", Field::TpDst),
    ("OXM_OF_SCTP_SRC", Field::TpSrc),
    ("OXM_OF_SCTP_DST", Field::TpDst),
    ("NXM_OF_ICMP_TYPE", Field::IcmpType),
    ("NXM_OF_ICMP_CODE", Field::IcmpCode),
    ("NXM_NX_ICMPV6_TYPE", Field::IcmpType),
    ("NXM_NX_ICMPV6_CODE", Field::IcmpCode),
    ("NXM_NX_TCP_FLAGS", Field::TcpFlags),
    ("NXM_NX_IPV6_SRC", Field::Ipv6Src),
    ("NXM_NX_IPV6_DST", Field::Ipv6Dst),
    ("NXM_NX_IPV6_LABEL", Field::Ipv6Label),
    ("NXM_NX_TUN_ID", Field::TunId),
    ("NXM_NX_TUN_IPV4_SRC", Field::TunSrc),
    ("NXM_NX_TUN_IPV4_DST", Field::TunDst),
    ("NXM_NX_CT_STATE", Field::CtState),
    ("NXM_NX_CT_ZONE", Field::CtZone),
    ("NXM_NX_CT_MARK", Field::CtMark),
    ("NXM_NX_CT_LABEL", Field::CtLabel),
    ("NXM_NX_REG0", Field::Reg0),
    ("NXM_NX_REG1", Field::Reg1),
    ("NXM_NX_REG2", Field::Reg2),
    ("NXM_NX_REG3", Field::Reg3),
    ("NXM_NX_REG4", Field::Reg4),
    ("NXM_NX_REG5", Field::Reg5),
    ("NXM_NX_REG6", Field::Reg6),
    ("NXM_NX_REG7", Field::Reg7),
    ("OXM_OF_METADATA", Field::Metadata),
];

/// A field by its name, an alias, or an NXM/OXM name.
pub(crate) fn field_ref(t: Tok<'_>) -> PResult<Field> {
    if let Some(f) = Field::by_name(t.s) {
        return Ok(f);
    }
    if let Some((_, f)) = NXM_NAMES.iter().find(|(n, _)| *n == t.s) {
        return Ok(*f);
    }
    let names = Field::ALL.iter().map(|f| f.name());
    t.err(format!(
        "unknown field '{}'{}",
        t.s,
        did_you_mean(t.s, names)
    ))
}

fn writable(f: Field, t: Tok<'_>) -> PResult<Field> {
    if !f.def().writable {
        return t.err(format!("{} cannot be written (it is read-only)", f.name()));
    }
    Ok(f)
}

/// `FIELD[]`, `FIELD[a..b]`, `FIELD[n]` or plain `FIELD`: (field, offset, bits).
pub(crate) fn subfield(t: Tok<'_>) -> PResult<(Field, u32, u32)> {
    let Some(inner) = t.strip_suffix("]") else {
        let f = field_ref(t)?;
        return Ok((f, 0, f.def().bits));
    };
    let Some((name, range)) = inner.split_once("[") else {
        return t.err("expected FIELD[a..b]");
    };
    let f = field_ref(name)?;
    let bits = f.def().bits;
    if range.is_empty() {
        return Ok((f, 0, bits));
    }
    let (a, b) = match range.split_once("..") {
        Some((a, b)) => (parse_u128(a)?, parse_u128(b)?),
        None => {
            let n = parse_u128(range)?;
            (n, n)
        }
    };
    if a > b || b >= u128::from(bits) {
        return range.err(format!(
            "bits {} are outside {} (bits 0..{})",
            range.s,
            f.name(),
            bits - 1
        ));
    }
    Ok((f, a as u32, (b - a + 1) as u32))
}

/// `V[/M]->FIELD`.
fn set_field(v: Tok<'_>, ports: &dyn PortNames) -> PResult<Action> {
    let (f, value, mask) = set_field_parts(v, ports)?;
    Ok(Action::SetField {
        field: f,
        value,
        mask,
    })
}

/// The field, value and mask of `V[/M]->FIELD` (also used by `ct(exec(...))`).
pub(crate) fn set_field_parts(v: Tok<'_>, ports: &dyn PortNames) -> PResult<(Field, u128, u128)> {
    let Some((val, name)) = v.rsplit_once("->") else {
        return v.err("expected VALUE->FIELD, as in 'set_field:10.0.0.1->ip_dst'");
    };
    let f = writable(field_ref(name)?, name)?;
    let (value, mask) = field_value(f, val, ports)?;
    if mask == 0 {
        return val.err("the mask is zero: nothing would be set");
    }
    Ok((f, value, mask))
}

/// `load:V->FIELD[a..b]`: a set_field of the bit slice.
fn load(v: Tok<'_>) -> PResult<Action> {
    let (f, value, mask) = load_parts(v)?;
    Ok(Action::SetField {
        field: f,
        value,
        mask,
    })
}

pub(crate) fn load_parts(v: Tok<'_>) -> PResult<(Field, u128, u128)> {
    let Some((val, dst)) = v.rsplit_once("->") else {
        return v.err("expected VALUE->FIELD[a..b], as in 'load:1->reg0[0..7]'");
    };
    let (f, ofs, n) = subfield(dst)?;
    let f = writable(f, dst)?;
    let value = parse_u128(val)?;
    if value & !ones(n) != 0 {
        return val.err(format!("value {} does not fit in {n} bits", val.s));
    }
    Ok((f, value << ofs, ones(n) << ofs))
}

/// `move:SRC[a..b]->DST[c..d]`.
fn move_action(v: Tok<'_>) -> PResult<Action> {
    let Some((src_t, dst_t)) = v.split_once("->") else {
        return v.err("expected SRC[a..b]->DST[c..d]");
    };
    let (src, src_ofs, n) = subfield(src_t)?;
    let (dst, dst_ofs, dn) = subfield(dst_t)?;
    writable(dst, dst_t)?;
    if n != dn {
        return dst_t.err(format!(
            "source has {n} bits but destination {dn}: widths must agree"
        ));
    }
    Ok(Action::Move {
        src,
        src_ofs,
        dst,
        dst_ofs,
        n_bits: n,
    })
}

/// `mod_nw_dst:10.0.0.1` and friends: set the whole field.
fn mod_field(item: &Item<'_>, f: Field, cx: &ActCtx<'_>) -> PResult<Action> {
    let v = need_value(item, "mod_nw_dst:10.0.0.1")?;
    if v.s.contains('/') {
        return v.err(format!(
            "'{}' takes no mask (use set_field:V/M->{})",
            item.key.s,
            f.name()
        ));
    }
    let (value, mask) = field_value(f, v, cx.ports)?;
    Ok(Action::SetField {
        field: f,
        value,
        mask,
    })
}

/// `mod_vlan_vid:N`: the VID with the present bit, as OVS.
fn mod_vlan_vid(v: Tok<'_>) -> PResult<Action> {
    let vid = super::lex::parse_uint(v, 0xfff, "VLAN id")?;
    Ok(Action::SetField {
        field: Field::VlanVid,
        value: u128::from(VLAN_PRESENT) | vid,
        mask: Field::VlanVid.full_mask(),
    })
}

fn push_vlan(v: Tok<'_>) -> PResult<Action> {
    let tpid = parse_u16(v, "ethertype")?;
    if tpid != eth_type::VLAN && tpid != eth_type::QINQ {
        return v.err("push_vlan takes ethertype 0x8100 or 0x88a8");
    }
    Ok(Action::PushVlan(tpid))
}

fn goto_table(v: Tok<'_>, cx: &ActCtx<'_>) -> PResult<Action> {
    let t = table_num(v)?;
    let Some(own) = cx.table else {
        return v.err("goto_table is not allowed in a group bucket");
    };
    if t <= own {
        return v.err(format!(
            "goto_table must go to a later table than this flow's table {own}"
        ));
    }
    Ok(Action::GotoTable(t))
}

/// `resubmit(PORT,TABLE)`, `resubmit(,TABLE)`, `resubmit:PORT`.
fn resubmit(item: &Item<'_>, cx: &ActCtx<'_>) -> PResult<Action> {
    let v = need_value(item, "resubmit(,1)")?;
    let (port_t, table_t) = match (item.delim, v.split_once(",")) {
        (Delim::Paren, Some((p, t))) => (p.trim(), Some(t.trim())),
        _ => (v.trim(), None),
    };
    // `in_port` (or nothing) keeps the packet's in_port.
    let in_port = match port_t.s {
        "" => None,
        s if s.eq_ignore_ascii_case("in_port") => None,
        _ => Some(out_port(port_t, cx.ports)?),
    };
    let table = match table_t {
        Some(t) if !t.is_empty() => Some(table_num(t)?),
        _ => None,
    };
    if in_port.is_none() && table.is_none() {
        return v.err("resubmit needs a port or a table, as in 'resubmit(,1)'");
    }
    Ok(Action::Resubmit { in_port, table })
}

fn group(v: Tok<'_>, cx: &ActCtx<'_>) -> PResult<Action> {
    let id = group_id(v)?;
    if cx.group == Some(id) {
        return v.err("a group cannot send to itself");
    }
    Ok(Action::Group(id))
}

pub(crate) fn group_id(v: Tok<'_>) -> PResult<u32> {
    let id = parse_u32(v, "group id")?;
    if id > MAX_GROUP {
        return v.err(format!(
            "group id {} is reserved (at most {MAX_GROUP:#x})",
            v.s
        ));
    }
    Ok(id)
}

fn encap(item: &Item<'_>) -> PResult<Action> {
    let v = need_value(item, "encap(vxlan)")?;
    match v.s.trim() {
        "vxlan" => Ok(Action::Encap(Encap::Vxlan)),
        _ => v.err(format!("unknown encapsulation '{}' (known: vxlan)", v.s)),
    }
}

/// `decap` or `decap(table=N)`: the inner frame continues in table N (default 0).
fn decap(item: &Item<'_>) -> PResult<Action> {
    if item.value.trim().is_empty() {
        no_value(item)?;
        return Ok(Action::Decap { table: 0 });
    }
    let v = item.value.trim();
    match (item.delim, v.strip_prefix("table=")) {
        (Delim::Paren, Some(t)) => Ok(Action::Decap {
            table: table_num(t)?,
        }),
        _ => v.err("expected decap(table=N)"),
    }
}

/// `policy(ingress)` or `policy(egress)`.
fn policy(item: &Item<'_>) -> PResult<Action> {
    let v = need_value(item, "policy(ingress)")?;
    match v.s {
        "ingress" => Ok(Action::Policy(crate::policy::Dir::Ingress)),
        "egress" => Ok(Action::Policy(crate::policy::Dir::Egress)),
        _ => v.err("expected policy(ingress) or policy(egress)"),
    }
}

/// `service_lb(id=N,zone=Z,table=T)` (zone defaults to 0, table to 20).
fn service_lb(item: &Item<'_>) -> PResult<Action> {
    let v = item.value.trim();
    if item.delim != Delim::Paren || v.is_empty() {
        return v.err("expected service_lb(id=N,zone=Z,table=T)");
    }
    let (mut id, mut zone, mut table) = (None, 0u16, crate::flow::layout::EGRESS_POLICY);
    let mut rest = v;
    loop {
        let (part, more) = match rest.split_once(",") {
            Some((a, b)) => (a.trim(), Some(b)),
            None => (rest.trim(), None),
        };
        match part.split_once("=") {
            Some((k, val)) if k.s.trim() == "id" => id = Some(parse_u32(val.trim(), "service id")?),
            Some((k, val)) if k.s.trim() == "zone" => zone = parse_u16(val.trim(), "zone")?,
            Some((k, val)) if k.s.trim() == "table" => table = table_num(val.trim())?,
            _ => return part.err("expected id=N, zone=Z or table=T"),
        }
        match more {
            Some(m) => rest = m,
            None => break,
        }
    }
    match id {
        Some(id) => Ok(Action::ServiceLb { id, zone, table }),
        None => v.err("service_lb needs id=N"),
    }
}

fn punt(v: Tok<'_>) -> PResult<Punt> {
    if v.s == "icmp_echo_reply" {
        return Ok(Punt::IcmpEchoReply);
    }
    if v.s == "reject" {
        return Ok(Punt::Reject);
    }
    if let Some(arg) = v
        .strip_prefix("arp_responder(")
        .and_then(|t| t.strip_suffix(")"))
    {
        let m = mac(arg.trim())?;
        return Ok(Punt::ArpResponder {
            mac: (m as u64).to_be_bytes()[2..].try_into().unwrap_or([0; 6]),
        });
    }
    v.err(format!(
        "unknown punt target '{}' (known: arp_responder(MAC), icmp_echo_reply, reject)",
        v.s
    ))
}

/// `note:01.02.0a` (hex bytes, optional dots between them) or `note:"text"`.
pub(crate) fn note(v: Tok<'_>) -> PResult<Vec<u8>> {
    if let Some(body) = v.strip_prefix("\"") {
        return quoted(v, body);
    }
    let mut out = Vec::new();
    let b = v.s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'.' {
            i += 1;
            continue;
        }
        let pair = b.get(i..i + 2).and_then(|p| std::str::from_utf8(p).ok());
        match pair.and_then(|p| {
            u8::from_str_radix(p, 16)
                .ok()
                .filter(|_| p.bytes().all(|c| c.is_ascii_hexdigit()))
        }) {
            Some(byte) => out.push(byte),
            None => {
                return v
                    .slice(i, i + 1)
                    .err("a note is hex bytes (note:01.02.ab) or \"text\"");
            }
        }
        i += 2;
    }
    Ok(out)
}

/// The body of a `"..."` string (after the opening quote), with `\"` and `\\`.
fn quoted(whole: Tok<'_>, body: Tok<'_>) -> PResult<Vec<u8>> {
    let mut out = Vec::new();
    let mut chars = body.s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, e @ ('"' | '\\'))) => out.push(e as u8),
                _ => {
                    return body
                        .slice(i, i + 1)
                        .err("only \\\" and \\\\ are escapes in a note");
                }
            },
            '"' if i + 1 == body.s.len() => return Ok(out),
            '"' => {
                return body
                    .from(i + 1)
                    .err("unexpected text after the closing quote");
            }
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    whole.err("unterminated quoted string")
}

/// `ct(commit,zone=N,table=T,nat(...),exec(...))`.
fn ct(item: &Item<'_>) -> PResult<CtAction> {
    let mut ct = CtAction {
        commit: false,
        zone: CtZone::Value(0),
        table: None,
        nat: None,
        set_mark: None,
        set_label: None,
    };
    if item.delim != Delim::Paren && item.delim != Delim::None {
        return item.key.err("expected ct(...)");
    }
    let mut seen: Vec<String> = Vec::new();
    let mut exec_tok = None;
    let mut lx = Lexer::new(item.value);
    while let Some(arg) = lx.next_item() {
        let arg = arg?;
        let name = arg.key.s.to_ascii_lowercase();
        if seen.contains(&name) {
            return arg.key.err(format!("'{}' given twice", arg.key.s));
        }
        match name.as_str() {
            "commit" => {
                no_value(&arg)?;
                ct.commit = true;
            }
            "zone" => ct.zone = ct_zone(need_value(&arg, "zone=5")?)?,
            "table" => ct.table = Some(table_num(need_value(&arg, "table=1")?)?),
            "nat" => ct.nat = Some(nat(&arg)?),
            "exec" => {
                ct_exec(&arg, &mut ct)?;
                exec_tok = Some(arg.key);
            }
            "force" | "alg" => return arg.key.err(format!("ct '{}' is not supported", arg.key.s)),
            _ => {
                let hint = did_you_mean(&name, ["commit", "zone", "table", "nat", "exec"]);
                return arg
                    .key
                    .err(format!("unknown ct argument '{}'{hint}", arg.key.s));
            }
        }
        seen.push(name);
    }
    let sets = ct.set_mark.is_some() || ct.set_label.is_some();
    match exec_tok {
        Some(e) if sets && !ct.commit => e.err("setting ct_mark or ct_label needs 'commit'"),
        _ => Ok(ct),
    }
}

/// `zone=N` or `zone=regN[0..15]`.
fn ct_zone(v: Tok<'_>) -> PResult<CtZone> {
    if v.s.starts_with(|c: char| c.is_ascii_digit()) {
        return Ok(CtZone::Value(parse_u16(v, "zone")?));
    }
    let (f, ofs, n) = subfield(v)?;
    let reg = matches!(
        f,
        Field::Reg0
            | Field::Reg1
            | Field::Reg2
            | Field::Reg3
            | Field::Reg4
            | Field::Reg5
            | Field::Reg6
            | Field::Reg7
    );
    if !reg || ofs != 0 || n != 16 {
        return v.err("a zone is a number or a register's low 16 bits, as in 'zone=reg5[0..15]'");
    }
    Ok(CtZone::Field(f))
}

/// `exec(set_field:V/M->ct_mark,set_field:V/M->ct_label)` (or `load:` forms).
fn ct_exec(arg: &Item<'_>, ct: &mut CtAction) -> PResult<()> {
    if arg.delim != Delim::Paren {
        return arg.key.err("expected exec(...)");
    }
    let mut lx = Lexer::new(arg.value);
    while let Some(a) = lx.next_item() {
        let a = a?;
        let v = need_value(&a, "set_field:1->ct_mark")?;
        let (f, value, mask) = match a.key.s {
            "set_field" => set_field_parts(v, &super::NoPortNames)?,
            "load" => load_parts(v)?,
            _ => return a.key.err("ct exec can only set ct_mark and ct_label"),
        };
        let twice = match f {
            Field::CtMark => ct.set_mark.replace((value as u32, mask as u32)).is_some(),
            Field::CtLabel => ct.set_label.replace((value, mask)).is_some(),
            _ => return v.err("ct exec can only set ct_mark and ct_label"),
        };
        if twice {
            return a.key.err(format!("{} is set twice", f.name()));
        }
    }
    Ok(())
}

/// `nat`, `nat(src)`, `nat(src=A[-B][:P[-Q]])`, `nat(dst=[V6][-[V6]][:P[-Q]])`.
fn nat(arg: &Item<'_>) -> PResult<NatSpec> {
    let mut spec = NatSpec {
        kind: None,
        addr_min: None,
        addr_max: None,
        port_min: None,
        port_max: None,
    };
    if arg.delim == Delim::None {
        return Ok(spec);
    }
    if arg.delim != Delim::Paren {
        return arg.key.err("expected nat or nat(src=...)");
    }
    let mut lx = Lexer::new(arg.value);
    while let Some(a) = lx.next_item() {
        let a = a?;
        let kind = match a.key.s {
            "src" => NatKind::Src,
            "dst" => NatKind::Dst,
            "persistent" | "random" | "hash" => {
                return a.key.err(format!("nat '{}' is not supported", a.key.s));
            }
            _ => {
                return a.key.err(format!(
                    "unknown nat argument '{}' (expected src or dst)",
                    a.key.s
                ));
            }
        };
        if spec.kind.is_some() {
            return a.key.err("nat takes one of src and dst");
        }
        spec.kind = Some(kind);
        if a.delim == Delim::Eq || a.delim == Delim::Colon {
            nat_range(a.value, &mut spec)?;
        } else if a.delim != Delim::None {
            return a.key.err("expected src=ADDR[-ADDR][:PORT[-PORT]]");
        }
    }
    Ok(spec)
}

fn nat_range(v: Tok<'_>, spec: &mut NatSpec) -> PResult<()> {
    if !v.s.contains('[') && v.s.matches(':').count() > 1 {
        return v.err("write IPv6 NAT addresses in brackets, as in [fd00::1]");
    }
    let (addrs, ports) = split_nat_ports(v)?;
    if addrs.is_empty() {
        return addrs.err("nat needs an address");
    }
    let (lo, hi) = match addrs.split_once("-") {
        Some((a, b)) => (a, Some(b)),
        None => (addrs, None),
    };
    let lo_ip = nat_addr(lo)?;
    spec.addr_min = Some(lo_ip);
    if let Some(hi) = hi {
        let hi_ip = nat_addr(hi)?;
        if lo_ip.is_ipv4() != hi_ip.is_ipv4() {
            return hi.err("both ends of an address range must be the same family");
        }
        if hi_ip < lo_ip {
            return hi.err("address range ends below its start");
        }
        spec.addr_max = Some(hi_ip);
    }
    if let Some(p) = ports {
        let (lo, hi) = match p.split_once("-") {
            Some((a, b)) => (a, Some(b)),
            None => (p, None),
        };
        let lo_p = parse_u16(lo, "port")?;
        spec.port_min = Some(lo_p);
        if let Some(hi) = hi {
            let hi_p = parse_u16(hi, "port")?;
            if hi_p < lo_p {
                return hi.err("port range ends below its start");
            }
            spec.port_max = Some(hi_p);
        }
    }
    Ok(())
}

/// Splits `ADDRS[:PORTS]` at the first ':' outside brackets (IPv6 addresses are
/// bracketed so their colons are not taken for the port separator).
fn split_nat_ports(v: Tok<'_>) -> PResult<(Tok<'_>, Option<Tok<'_>>)> {
    let mut depth = 0usize;
    for (i, c) in v.s.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            ':' if depth == 0 => return Ok((v.slice(0, i), Some(v.from(i + 1)))),
            _ => {}
        }
    }
    Ok((v, None))
}

fn nat_addr(t: Tok<'_>) -> PResult<IpAddr> {
    if let Some(inner) = t.strip_prefix("[").and_then(|i| i.strip_suffix("]")) {
        let v = ipv6(inner)?;
        return Ok(IpAddr::V6(v.into()));
    }
    if t.s.contains(':') {
        return t.err("write IPv6 NAT addresses in brackets, as in [fd00::1]");
    }
    let v = ipv4(t)?;
    Ok(IpAddr::V4((v as u32).into()))
}

/// Checks that the fields an action reads or writes are meaningful for the packets
/// the flow matches (set_field on ip_dst needs `ip`, as OVS requires), and tracks
/// how push_vlan/pop_vlan change that.
fn check_action_prereqs(a: &Action, m: &mut Match, at: Tok<'_>) -> PResult<()> {
    match a {
        Action::SetField { field, .. } => check_prereq(*field, m, at),
        Action::Move { src, dst, .. } => {
            check_prereq(*src, m, at)?;
            check_prereq(*dst, m, at)
        }
        Action::PushVlan(_) => {
            let p = u128::from(VLAN_PRESENT);
            m.set(Field::VlanTci, p, p);
            Ok(())
        }
        Action::PopVlan => {
            Field::VlanTci.set_masked(&mut m.mask, 0, u128::MAX);
            Field::VlanTci.set_masked(&mut m.value, 0, u128::MAX);
            Ok(())
        }
        _ => Ok(()),
    }
}

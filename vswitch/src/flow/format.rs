//! Printing matches, actions, flows and groups in the syntax [`super::parse`]
//! reads, in one canonical form: `parse_flow(format_flow(spec))` gives back `spec`.
//!
//! The layout follows `ovs-ofctl dump-flows`: a protocol shorthand (`tcp`) when
//! eth_type and ip_proto allow it, then fields in [`Field::ALL`] order under the
//! names OVS prints (`nw_dst`, `dl_src`), masks only when not full, address masks as
//! prefix lengths when contiguous, flags as `+trk+new`.

use super::field::{Field, FieldKind};
use super::key::{Key, VLAN_PRESENT, ct_state, tcp_flags};
use super::parse::{IP_FRAG_NAMES, PortNames, SHORTHANDS, exact, prefix_mask, prereq_met};
use super::spec::{
    Action, CtAction, CtZone, DEFAULT_PRIORITY, Encap, FlowSpec, GroupKind, GroupSpec, Match,
    NatKind, NatSpec, Punt, port_no,
};
use std::fmt::{self, Display, Formatter, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The counters `dump-flows` prints next to a flow.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct FlowStatsView {
    /// Seconds since the flow was added.
    pub duration_s: f64,
    pub packets: u64,
    pub bytes: u64,
    /// Seconds since the flow last matched a packet, if it has.
    pub idle_age_s: Option<f64>,
}

/// A match as text: `tcp,nw_dst=10.0.0.0/24,tp_dst=80` (empty for "any").
pub struct MatchDisplay<'a> {
    m: &'a Match,
    ports: &'a dyn PortNames,
}

/// An action list as text; the empty list prints as `drop`.
pub struct ActionsDisplay<'a> {
    actions: &'a [Action],
    ports: &'a dyn PortNames,
}

/// One `dump-flows` line (it starts with a space, as OVS's do).
pub struct FlowDisplay<'a> {
    spec: &'a FlowSpec,
    stats: Option<FlowStatsView>,
    ports: &'a dyn PortNames,
}

/// A group as `add-group` takes it.
pub struct GroupDisplay<'a> {
    group: &'a GroupSpec,
    ports: &'a dyn PortNames,
}

pub fn format_match<'a>(m: &'a Match, ports: &'a dyn PortNames) -> MatchDisplay<'a> {
    MatchDisplay { m, ports }
}

pub fn format_actions<'a>(actions: &'a [Action], ports: &'a dyn PortNames) -> ActionsDisplay<'a> {
    ActionsDisplay { actions, ports }
}

/// ` cookie=0x0, duration=12.3s, table=0, n_packets=10, n_bytes=980, idle_timeout=10, priority=100,ip,nw_dst=10.0.0.0/24 actions=output:2`
/// (without `stats`, the duration and counters are left out).
pub fn format_flow<'a>(
    spec: &'a FlowSpec,
    stats: Option<FlowStatsView>,
    ports: &'a dyn PortNames,
) -> FlowDisplay<'a> {
    FlowDisplay { spec, stats, ports }
}

pub fn format_group<'a>(group: &'a GroupSpec, ports: &'a dyn PortNames) -> GroupDisplay<'a> {
    GroupDisplay { group, ports }
}

impl Display for MatchDisplay<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str(&match_pieces(self.m, self.ports).join(","))
    }
}

impl Display for ActionsDisplay<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        if self.actions.is_empty() {
            return f.write_str("drop");
        }
        let texts: Vec<String> = self
            .actions
            .iter()
            .map(|a| action_text(a, self.ports))
            .collect();
        f.write_str(&texts.join(","))
    }
}

impl Display for FlowDisplay<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let s = self.spec;
        write!(f, " cookie={:#x}", s.cookie)?;
        if let Some(st) = &self.stats {
            write!(f, ", duration={}s", seconds(st.duration_s))?;
        }
        write!(f, ", table={}", s.table)?;
        if let Some(st) = &self.stats {
            write!(f, ", n_packets={}, n_bytes={}", st.packets, st.bytes)?;
        }
        if s.idle_timeout != 0 {
            write!(f, ", idle_timeout={}", s.idle_timeout)?;
        }
        if s.hard_timeout != 0 {
            write!(f, ", hard_timeout={}", s.hard_timeout)?;
        }
        if let Some(age) = self.stats.and_then(|st| st.idle_age_s) {
            // Whole seconds, as OVS; `as` saturates (NaN and negatives give 0).
            write!(f, ", idle_age={}", age as u64)?;
        }
        let mut pieces = Vec::new();
        if s.priority != DEFAULT_PRIORITY {
            pieces.push(format!("priority={}", s.priority));
        }
        pieces.extend(match_pieces(&s.m, self.ports));
        let actions = format_actions(&s.actions, self.ports);
        if pieces.is_empty() {
            write!(f, ", actions={actions}")
        } else {
            write!(f, ", {} actions={actions}", pieces.join(","))
        }
    }
}

impl Display for GroupDisplay<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let g = self.group;
        let kind = match g.kind {
            GroupKind::All => "all",
            GroupKind::Select => "select",
        };
        write!(f, "group_id={},type={kind}", g.id)?;
        if !g.fields.is_empty() {
            let names: Vec<&str> = g.fields.iter().map(|f| f.name()).collect();
            write!(f, ",selection_method=hash,fields({})", names.join(","))?;
        }
        for b in &g.buckets {
            f.write_str(",bucket=")?;
            if g.kind == GroupKind::Select || b.weight != 0 {
                write!(f, "weight:{},", b.weight)?;
            }
            write!(f, "actions={}", format_actions(&b.actions, self.ports))?;
        }
        Ok(())
    }
}

/// `12.3` for 12.3 s: milliseconds, trailing zeros trimmed (OVS trims them too).
fn seconds(s: f64) -> String {
    if !s.is_finite() || s <= 0.0 {
        return "0".to_string();
    }
    let text = format!("{s:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

// ---- matches ------------------------------------------------------------------

/// The names `ovs-ofctl dump-flows` prints; the rest print as [`Field::name`].
fn display_name(f: Field) -> &'static str {
    match f {
        Field::EthType => "dl_type",
        Field::EthSrc => "dl_src",
        Field::EthDst => "dl_dst",
        Field::IpProto => "nw_proto",
        Field::IpTtl => "nw_ttl",
        Field::IpEcn => "nw_ecn",
        Field::IpFrag => "nw_frag",
        Field::Ipv4Src => "nw_src",
        Field::Ipv4Dst => "nw_dst",
        Field::VlanPcp => "dl_vlan_pcp",
        _ => f.name(),
    }
}

/// The shorthand for the match's eth_type (and ip_proto), and whether it covers
/// ip_proto too.
fn shorthand(m: &Match) -> Option<(&'static str, bool)> {
    let et = exact(m, Field::EthType)?;
    if let Some(p) = exact(m, Field::IpProto) {
        let hit = SHORTHANDS
            .iter()
            .find(|(_, e, pr)| u128::from(*e) == et && pr.map(u128::from) == Some(p));
        if let Some((name, _, _)) = hit {
            return Some((name, true));
        }
    }
    SHORTHANDS
        .iter()
        .find(|(_, e, pr)| u128::from(*e) == et && pr.is_none())
        .map(|(name, _, _)| (*name, false))
}

fn match_pieces(m: &Match, ports: &dyn PortNames) -> Vec<String> {
    let mut out = Vec::new();
    // Bits not printed yet. Fields that share storage (ip_src and arp_spa, tp_src
    // and icmp_type, ...) are told apart by their prerequisites.
    let mut rest = m.mask;
    if let Some((name, covers_proto)) = shorthand(m) {
        out.push(name.to_string());
        Field::EthType.set_masked(&mut rest, 0, u128::MAX);
        if covers_proto {
            Field::IpProto.set_masked(&mut rest, 0, u128::MAX);
        }
    }
    for &f in Field::ALL {
        match f {
            Field::VlanTci => vlan_pieces(m, &mut rest, &mut out),
            Field::VlanVid | Field::VlanPcp => {}
            _ if prereq_met(f.def().prereq, m) => emit(f, m, &mut rest, ports, &mut out),
            _ => {}
        }
    }
    // Whatever is left belongs to a field whose prerequisite the match lacks (a
    // match built in code, not parsed): print it anyway rather than hide it.
    for &f in Field::ALL {
        emit(f, m, &mut rest, ports, &mut out);
    }
    out
}

fn emit(f: Field, m: &Match, rest: &mut Key, ports: &dyn PortNames, out: &mut Vec<String>) {
    let mask = f.get(rest);
    if mask == 0 {
        return;
    }
    let v = f.get(&m.value) & mask;
    out.push(format!(
        "{}={}",
        display_name(f),
        value_text(f, v, mask, ports)
    ));
    f.set_masked(rest, 0, mask);
}

/// The VLAN TCI as OVS users write it: `dl_vlan=10[,dl_vlan_pcp=3]` for a tag,
/// `vlan_tci=0` for untagged, raw `vlan_vid`/`vlan_tci` otherwise.
fn vlan_pieces(m: &Match, rest: &mut Key, out: &mut Vec<String>) {
    let mask = Field::VlanTci.get(rest);
    Field::VlanTci.set_masked(rest, 0, u128::MAX);
    if mask == 0 {
        return;
    }
    let v = Field::VlanTci.get(&m.value) & mask;
    let present = u128::from(VLAN_PRESENT);
    let (vid_m, pcp_m) = (mask & 0x1fff, mask >> 13);
    if mask == 0xffff && v == 0 {
        out.push("vlan_tci=0".to_string());
    } else if v & present != 0 {
        if vid_m == 0x1fff {
            out.push(format!("dl_vlan={}", v & 0xfff));
        } else {
            out.push(format!(
                "vlan_vid={}",
                int_text(Field::VlanVid, v & 0x1fff, vid_m)
            ));
        }
        if pcp_m != 0 {
            out.push(format!(
                "dl_vlan_pcp={}",
                int_text(Field::VlanPcp, v >> 13, pcp_m)
            ));
        }
    } else if pcp_m == 0 {
        out.push(format!("vlan_vid={}", int_text(Field::VlanVid, v, vid_m)));
    } else {
        // A PCP without a tag cannot be written as vlan_pcp (it needs one).
        out.push(format!("vlan_tci={}", hex_text(Field::VlanTci, v, mask)));
    }
}

/// A field value (and mask, when not full) as the parser reads it back.
pub(crate) fn value_text(f: Field, v: u128, mask: u128, ports: &dyn PortNames) -> String {
    let full = f.full_mask();
    match f.def().kind {
        FieldKind::Int if f == Field::IpFrag => IP_FRAG_NAMES
            .iter()
            .find(|(_, fv, fm)| *fv == v && *fm == mask)
            .map(|(name, _, _)| name.to_string())
            .unwrap_or_else(|| int_text(f, v, mask)),
        FieldKind::Int => int_text(f, v, mask),
        FieldKind::Hex => hex_text(f, v, mask),
        FieldKind::Port if mask == full => port_text(v as u32, ports),
        FieldKind::Port => format!("{v:#x}/{mask:#x}"),
        FieldKind::Mac => masked_addr(v, mask, full, 48, mac_text),
        FieldKind::Ipv4 => masked_addr(v, mask, full, 32, |x| Ipv4Addr::from(x as u32).to_string()),
        FieldKind::Ipv6 => masked_addr(v, mask, full, 128, |x| Ipv6Addr::from(x).to_string()),
        FieldKind::CtState => {
            let names = ct_state::NAMES.map(|(n, b)| (n, u128::from(b)));
            flags_text(v, mask, &names).unwrap_or_else(|| hex_text(f, v, mask))
        }
        FieldKind::TcpFlags => {
            let names = tcp_flags::NAMES.map(|(n, b)| (n, u128::from(b)));
            flags_text(v, mask, &names).unwrap_or_else(|| hex_text(f, v, mask))
        }
    }
}

/// Decimal when exact, `0xV/0xM` when masked (as OVS prints masked integers).
fn int_text(f: Field, v: u128, mask: u128) -> String {
    if mask == f.full_mask() {
        v.to_string()
    } else {
        format!("{v:#x}/{mask:#x}")
    }
}

/// `0x0800`: hex, zero-padded to the width for fields of up to 16 bits.
fn hex_text(f: Field, v: u128, mask: u128) -> String {
    let bits = f.def().bits;
    let hex = |x: u128| {
        if bits <= 16 {
            format!("{x:#0w$x}", w = 2 + bits.div_ceil(4) as usize)
        } else {
            format!("{x:#x}")
        }
    };
    if mask == f.full_mask() {
        hex(v)
    } else {
        format!("{}/{}", hex(v), hex(mask))
    }
}

/// An address, then `/N` for a prefix mask or `/address` for any other.
fn masked_addr(
    v: u128,
    mask: u128,
    full: u128,
    bits: u32,
    show: impl Fn(u128) -> String,
) -> String {
    let mut s = show(v);
    if mask != full {
        let n = (mask << (128 - bits)).leading_ones();
        if bits != 48 && prefix_mask(n, bits) == mask {
            let _ = write!(s, "/{n}");
        } else {
            let _ = write!(s, "/{}", show(mask));
        }
    }
    s
}

fn mac_text(v: u128) -> String {
    let b = (v as u64).to_be_bytes();
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        b[2], b[3], b[4], b[5], b[6], b[7]
    )
}

/// `+trk+new-est`, or `None` if the mask has bits without a name.
fn flags_text(v: u128, mask: u128, names: &[(&str, u128)]) -> Option<String> {
    let named = names.iter().fold(0, |acc, (_, b)| acc | b);
    if mask & !named != 0 {
        return None;
    }
    let mut s = String::new();
    for (name, bit) in names {
        if mask & bit != 0 {
            s.push(if v & bit != 0 { '+' } else { '-' });
            s.push_str(name);
        }
    }
    Some(s)
}

/// A port's name when it has one the parser reads back as the same port.
fn port_text(p: u32, ports: &dyn PortNames) -> String {
    let readable = |n: &str| {
        n.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            && !n.eq_ignore_ascii_case("in_port")
    };
    match ports.port_name(p) {
        Some(n) if readable(&n) && ports.port_no(&n) == Some(p) => n,
        _ => p.to_string(),
    }
}

// ---- actions ------------------------------------------------------------------

fn action_text(a: &Action, ports: &dyn PortNames) -> String {
    match a {
        Action::Output(p) if *p == port_no::IN_PORT => "in_port".to_string(),
        Action::Output(p) => format!("output:{}", port_text(*p, ports)),
        Action::Flood => "flood".to_string(),
        Action::Normal => "normal".to_string(),
        Action::Drop => "drop".to_string(),
        Action::SetField { field, value, mask } => set_field_text(*field, *value, *mask, ports),
        Action::Move {
            src,
            src_ofs,
            dst,
            dst_ofs,
            n_bits,
        } => format!(
            "move:{}->{}",
            subfield_text(*src, *src_ofs, *n_bits),
            subfield_text(*dst, *dst_ofs, *n_bits)
        ),
        Action::DecTtl => "dec_ttl".to_string(),
        Action::PushVlan(tpid) => format!("push_vlan:{tpid:#06x}"),
        Action::PopVlan => "pop_vlan".to_string(),
        Action::GotoTable(t) => format!("goto_table:{t}"),
        Action::Resubmit {
            in_port: Some(p),
            table: None,
        } => format!("resubmit:{}", port_text(*p, ports)),
        Action::Resubmit { in_port, table } => format!(
            "resubmit({},{})",
            in_port.map(|p| port_text(p, ports)).unwrap_or_default(),
            table.map(|t| t.to_string()).unwrap_or_default()
        ),
        Action::Group(g) => format!("group:{g}"),
        Action::Ct(ct) => ct_text(ct),
        Action::Encap(Encap::Vxlan) => "encap(vxlan)".to_string(),
        Action::Decap { table } => format!("decap(table={table})"),
        Action::Punt(Punt::ArpResponder { mac }) => {
            let mut b = [0u8; 8];
            b[2..].copy_from_slice(mac);
            format!(
                "punt:arp_responder({})",
                mac_text(u128::from(u64::from_be_bytes(b)))
            )
        }
        Action::Punt(Punt::IcmpEchoReply) => "punt:icmp_echo_reply".to_string(),
        Action::Policy(d) => format!("policy({})", d.as_str()),
        Action::Punt(Punt::Reject) => "punt:reject".to_string(),
        Action::ServiceLb { id, zone, table } => {
            format!("service_lb(id={id},zone={zone},table={table})")
        }
        Action::Note(bytes) => format!("note:{}", note_text(bytes)),
    }
}

/// `mod_vlan_vid:N` for a tag's VID, `load:V->F[a..b]` for a bit slice of an
/// integer field, `set_field:V[/M]->F` otherwise.
fn set_field_text(f: Field, v: u128, mask: u128, ports: &dyn PortNames) -> String {
    let full = f.full_mask();
    let mask = mask & full;
    let v = v & mask;
    let present = u128::from(VLAN_PRESENT);
    if f == Field::VlanVid && mask == full && v & present != 0 {
        return format!("mod_vlan_vid:{}", v & 0xfff);
    }
    let int = matches!(f.def().kind, FieldKind::Int | FieldKind::Hex);
    if int && mask != full && mask != 0 {
        let ofs = mask.trailing_zeros();
        let n = (mask >> ofs).trailing_ones();
        if (super::parse::ones(n) << ofs) == mask {
            return format!("load:{:#x}->{}", v >> ofs, subfield_text(f, ofs, n));
        }
    }
    format!("set_field:{}->{}", value_text(f, v, mask, ports), f.name())
}

/// `reg0[]`, `reg0[3]` or `reg0[0..15]`.
fn subfield_text(f: Field, ofs: u32, n: u32) -> String {
    let name = f.name();
    if ofs == 0 && n == f.def().bits {
        format!("{name}[]")
    } else if n == 1 {
        format!("{name}[{ofs}]")
    } else {
        format!("{name}[{ofs}..{}]", ofs.saturating_add(n).saturating_sub(1))
    }
}

fn ct_text(ct: &CtAction) -> String {
    let mut args = Vec::new();
    if ct.commit {
        args.push("commit".to_string());
    }
    match ct.zone {
        CtZone::Value(0) => {}
        CtZone::Value(z) => args.push(format!("zone={z}")),
        CtZone::Field(f) => args.push(format!("zone={}[0..15]", f.name())),
    }
    if let Some(t) = ct.table {
        args.push(format!("table={t}"));
    }
    if let Some(nat) = &ct.nat {
        args.push(nat_text(nat));
    }
    let mut exec = Vec::new();
    if let Some((v, m)) = ct.set_mark {
        exec.push(ct_set_text(
            u128::from(v),
            u128::from(m),
            u128::from(u32::MAX),
            "ct_mark",
        ));
    }
    if let Some((v, m)) = ct.set_label {
        exec.push(ct_set_text(v, m, u128::MAX, "ct_label"));
    }
    if !exec.is_empty() {
        args.push(format!("exec({})", exec.join(",")));
    }
    if args.is_empty() {
        "ct".to_string()
    } else {
        format!("ct({})", args.join(","))
    }
}

fn ct_set_text(v: u128, m: u128, full: u128, name: &str) -> String {
    if m == full {
        format!("set_field:{:#x}->{name}", v & m)
    } else {
        format!("set_field:{:#x}/{m:#x}->{name}", v & m)
    }
}

fn nat_text(n: &NatSpec) -> String {
    let Some(kind) = n.kind else {
        return "nat".to_string();
    };
    let mut s = match kind {
        NatKind::Src => "nat(src".to_string(),
        NatKind::Dst => "nat(dst".to_string(),
    };
    if let Some(lo) = n.addr_min {
        let _ = write!(s, "={}", nat_addr(lo));
        if let Some(hi) = n.addr_max {
            let _ = write!(s, "-{}", nat_addr(hi));
        }
        if let Some(p) = n.port_min {
            let _ = write!(s, ":{p}");
            if let Some(q) = n.port_max {
                let _ = write!(s, "-{q}");
            }
        }
    }
    s.push(')');
    s
}

fn nat_addr(a: IpAddr) -> String {
    match a {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// Printable ASCII as `"text"`, anything else as dotted hex bytes (OVS's form).
fn note_text(bytes: &[u8]) -> String {
    let printable = !bytes.is_empty() && bytes.iter().all(|b| (0x20..0x7f).contains(b));
    if printable {
        let mut s = String::from("\"");
        for &b in bytes {
            if b == b'"' || b == b'\\' {
                s.push('\\');
            }
            s.push(char::from(b));
        }
        s.push('"');
        return s;
    }
    let hex: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
    hex.join(".")
}

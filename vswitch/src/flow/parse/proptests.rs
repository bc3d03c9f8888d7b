//! Property tests: the parsers never panic, whatever the input, and formatting a
//! valid spec and parsing it back gives the same spec.

use super::action::MAX_GROUP;
use super::tests::ports;
use super::*;
use crate::flow::field::FieldKind;
use crate::flow::format::{FlowStatsView, format_flow, format_group, format_match};
use crate::flow::spec::{Action, Bucket, CtAction, CtZone, Encap, NatKind, NatSpec, Punt, port_no};
use proptest::prelude::*;
use std::net::IpAddr;

/// Valid texts that mutations start from.
const CORPUS: &[&str] = &[
    "table=1,priority=100,cookie=0x5,idle_timeout=10,tcp,nw_src=10.0.0.0/8,tp_dst=1000-1999,actions=output:veth12,goto_table:3",
    "in_port=veth12,dl_vlan=10,dl_vlan_pcp=3,dl_src=02:00:00:00:00:01/ff:ff:ff:00:00:00,actions=pop_vlan,normal",
    "ipv6,ipv6_src=fd00::/64,actions=set_field:fd00::1->ipv6_dst,load:0x5->NXM_NX_REG0[0..15],move:reg0[]->reg1[]",
    "ip,ct_state=+trk+new-est,actions=ct(commit,zone=reg5[0..15],table=2,nat(src=[fd00::1]-[fd00::2]:80-90),exec(set_field:0x1/0x1->ct_mark))",
    "arp,arp_tpa=10.0.0.1,arp_op=1,actions=punt:arp_responder(02:00:00:00:00:01),note:\"a, b\",note:01.02",
    "tcp6,tcp_flags=+syn-ack,actions=resubmit(,3),resubmit(veth12,4),group:7,encap(vxlan),decap(table=2)",
    "group_id=1,type=select,selection_method=hash,fields(ip_src,tp_src),bucket=weight:10,actions=output:1,bucket=actions=output:2",
    "table=3,cookie=0x10/0xf0,out_port=veth12,udp,udp_dst=53",
];

/// Runs every parser (and error rendering) on `s`; only a panic fails.
fn parse_everything(s: &str) {
    let p = ports();
    let results = [
        parse_flow(s, &p).err(),
        parse_filter(s, &p).err(),
        parse_filter_strict(s, &p).err(),
        parse_match(s, &p).err(),
        parse_group(s, &p).err(),
    ];
    for e in results.into_iter().flatten() {
        assert!(
            e.column >= 1 && e.column <= s.chars().count() + 1,
            "column {} in {s:?}",
            e.column
        );
        let _ = e.render(s);
    }
    if let Ok(flows) = parse_flow(s, &p) {
        for f in &flows {
            let _ = format_flow(f, None, &p).to_string();
        }
    }
}

/// Applies `edits` (position, kind, char) to `base`: 0 deletes, 1 inserts, 2 replaces.
fn mutate(base: &str, edits: &[(usize, u8, char)]) -> String {
    let mut chars: Vec<char> = base.chars().collect();
    for &(pos, kind, c) in edits {
        let i = pos % (chars.len() + 1);
        match kind {
            0 if i < chars.len() => {
                chars.remove(i);
            }
            2 if i < chars.len() => chars[i] = c,
            _ => chars.insert(i, c),
        }
    }
    chars.into_iter().collect()
}

/// A character biased towards the syntax's own.
fn syntax_char() -> impl Strategy<Value = char> {
    prop_oneof![
        3 => prop::sample::select(vec![
            ',', '=', ':', '(', ')', '[', ']', '.', '/', '+', '-', '>', '"', '\\', ' ', '0', '1', 'f', 'x', 'é', '\t', '\n'
        ]),
        1 => any::<char>(),
    ]
}

proptest! {
    // 512 cases keep `cargo test` quick on a shared machine; raise it for a deep run
    // (20,000 per property passed when this was written).
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn never_panics_on_arbitrary_text(s in ".{0,120}") {
        parse_everything(&s);
    }

    #[test]
    fn never_panics_on_syntax_soup(s in prop::collection::vec(syntax_char(), 0..80)) {
        let s: String = s.into_iter().collect();
        parse_everything(&s);
        parse_everything(&format!("actions={s}"));
        parse_everything(&format!("ip,actions=ct({s}"));
    }

    #[test]
    fn never_panics_on_mutated_specs(
        which in 0..CORPUS.len(),
        edits in prop::collection::vec((any::<usize>(), 0u8..3, syntax_char()), 1..6),
    ) {
        parse_everything(&mutate(CORPUS[which], &edits));
    }

    #[test]
    fn formatting_any_match_never_panics(words in prop::collection::vec(any::<u64>(), 42)) {
        let mut m = Match::ANY;
        m.mask.0.copy_from_slice(&words[..21]);
        m.value.0.copy_from_slice(&words[21..]);
        m.value = m.value.masked(&m.mask);
        let _ = format_match(&m, &ports()).to_string();
    }

    #[test]
    fn flows_round_trip(seed in any::<u64>()) {
        let spec = gen_flow(&mut Rng(seed));
        let p = ports();
        let stats = FlowStatsView { duration_s: 1.5, packets: 3, bytes: 4, idle_age_s: Some(0.2) };
        for st in [None, Some(stats)] {
            let text = format_flow(&spec, st, &p).to_string();
            match parse_flow(&text, &p) {
                Ok(back) => prop_assert_eq!(back, vec![spec.clone()], "text: {}", text),
                Err(e) => prop_assert!(false, "{:?}\n{}", spec, e.render(&text)),
            }
        }
    }

    #[test]
    fn groups_round_trip(seed in any::<u64>()) {
        let g = gen_group(&mut Rng(seed));
        let p = ports();
        let text = format_group(&g, &p).to_string();
        match parse_group(&text, &p) {
            Ok(back) => prop_assert_eq!(back, g, "text: {}", text),
            Err(e) => prop_assert!(false, "{:?}\n{}", g, e.render(&text)),
        }
    }
}

// ---- generators of valid specs ----------------------------------------------------

/// splitmix64: the generators below are plain code driven by one proptest seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn u128(&mut self) -> u128 {
        (u128::from(self.next()) << 64) | u128::from(self.next())
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize]
    }
}

/// A value and a non-zero mask for `f`, written the ways users write them.
fn gen_value(r: &mut Rng, f: Field) -> (u128, u128) {
    let full = f.full_mask();
    let bits = f.def().bits;
    let v = r.u128() & full;
    let mask = match (f.def().kind, r.below(4)) {
        (FieldKind::Port, _) => return (r.pick(&[1, 12, 7, u128::from(u32::MAX - 1)]), full),
        (_, 0 | 1) => full,
        (FieldKind::Ipv4 | FieldKind::Ipv6 | FieldKind::Mac, 2) => {
            prefix_mask(1 + r.below(u64::from(bits)) as u32, bits)
        }
        _ => r.u128() & full,
    };
    let mask = if mask == 0 { full } else { mask };
    (v & mask, mask)
}

fn overlaps(m: &Match, f: Field) -> bool {
    f.get(&m.mask) != 0
}

fn gen_match(r: &mut Rng) -> Match {
    let mut m = Match::ANY;
    match r.below(14) {
        0 => {}
        12 => {
            let (v, mask) = gen_value(r, Field::EthType);
            m.set(Field::EthType, v, mask);
        }
        13 => {
            m.set_exact(Field::EthType, u128::from(r.pick(&[0x0800u16, 0x86dd])));
            let (v, mask) = gen_value(r, Field::IpProto);
            m.set(Field::IpProto, v, mask);
        }
        i => {
            let (_, et, proto) = SHORTHANDS[(i - 1) as usize];
            m.set_exact(Field::EthType, u128::from(et));
            if let Some(p) = proto {
                m.set_exact(Field::IpProto, u128::from(p));
            }
        }
    }
    for &f in Field::ALL {
        let skip = matches!(f, Field::EthType | Field::IpProto) || !r.chance(30);
        if skip || !prereq_met(f.def().prereq, &m) || overlaps(&m, f) {
            continue;
        }
        let (v, mask) = gen_value(r, f);
        m.set(f, v, mask);
    }
    m
}

fn gen_port(r: &mut Rng) -> u32 {
    r.pick(&[1, 2, 12, 0, port_no::IN_PORT, u32::MAX - 1])
}

/// A field the actions may read or write at this point, if any.
fn gen_field(r: &mut Rng, m: Option<&Match>, writable: bool) -> Option<Field> {
    let ok: Vec<Field> = Field::ALL
        .iter()
        .copied()
        .filter(|f| !writable || f.def().writable)
        .filter(|f| m.is_none_or(|m| prereq_met(f.def().prereq, m)))
        .collect();
    (!ok.is_empty()).then(|| r.pick(&ok))
}

fn gen_ip(r: &mut Rng, v6: bool) -> IpAddr {
    if v6 {
        IpAddr::from(r.u128().to_be_bytes())
    } else {
        IpAddr::from((r.next() as u32).to_be_bytes())
    }
}

fn gen_nat(r: &mut Rng) -> NatSpec {
    let mut n = NatSpec {
        kind: None,
        addr_min: None,
        addr_max: None,
        port_min: None,
        port_max: None,
    };
    if r.chance(25) {
        return n;
    }
    n.kind = Some(if r.chance(50) {
        NatKind::Src
    } else {
        NatKind::Dst
    });
    if r.chance(20) {
        return n;
    }
    let v6 = r.chance(50);
    let (a, b) = (gen_ip(r, v6), gen_ip(r, v6));
    n.addr_min = Some(a.min(b));
    if r.chance(50) {
        n.addr_max = Some(a.max(b));
    }
    if r.chance(50) {
        let (p, q) = (r.next() as u16, r.next() as u16);
        n.port_min = Some(p.min(q));
        if r.chance(50) {
            n.port_max = Some(p.max(q));
        }
    }
    n
}

fn gen_ct(r: &mut Rng) -> CtAction {
    let commit = r.chance(50);
    let regs = [Field::Reg0, Field::Reg3, Field::Reg5, Field::Reg7];
    let zone = match r.below(3) {
        0 => CtZone::Value(0),
        1 => CtZone::Value(r.next() as u16),
        _ => CtZone::Field(r.pick(&regs)),
    };
    let nonzero = |x: u128, full: u128| if x & full == 0 { full } else { x & full };
    let set_mark = (commit && r.chance(50)).then(|| {
        let m = nonzero(r.u128(), u128::from(u32::MAX)) as u32;
        (r.next() as u32 & m, if r.chance(50) { u32::MAX } else { m })
    });
    let set_mark = set_mark.map(|(v, m)| (v & m, m));
    let set_label = (commit && r.chance(50)).then(|| {
        let m = if r.chance(50) {
            u128::MAX
        } else {
            nonzero(r.u128(), u128::MAX)
        };
        (r.u128() & m, m)
    });
    CtAction {
        commit,
        zone,
        table: r.chance(50).then(|| r.below(64) as u8),
        nat: r.chance(50).then(|| gen_nat(r)),
        set_mark,
        set_label,
    }
}

/// A random action list valid for a flow in `table` with match `m` (or for a
/// bucket of group `group` when `m` is `None`).
fn gen_actions(r: &mut Rng, table: Option<u8>, m: Option<Match>, group: u32) -> Vec<Action> {
    let mut m = m;
    let mut out = Vec::new();
    for _ in 0..r.below(6) {
        let a = match r.below(18) {
            0 => Action::Output(gen_port(r)),
            1 => Action::Flood,
            2 => Action::Normal,
            3 | 4 => match gen_field(r, m.as_ref(), true) {
                Some(field) => {
                    let (value, mask) = gen_value(r, field);
                    Action::SetField { field, value, mask }
                }
                None => Action::DecTtl,
            },
            5 => match (
                gen_field(r, m.as_ref(), false),
                gen_field(r, m.as_ref(), true),
            ) {
                (Some(src), Some(dst)) => {
                    let max = src.def().bits.min(dst.def().bits);
                    let n_bits = 1 + r.below(u64::from(max)) as u32;
                    let src_ofs = r.below(u64::from(src.def().bits - n_bits + 1)) as u32;
                    let dst_ofs = r.below(u64::from(dst.def().bits - n_bits + 1)) as u32;
                    Action::Move {
                        src,
                        src_ofs,
                        dst,
                        dst_ofs,
                        n_bits,
                    }
                }
                _ => Action::DecTtl,
            },
            6 => Action::DecTtl,
            7 => Action::PushVlan(r.pick(&[0x8100, 0x88a8])),
            8 => Action::PopVlan,
            9 => {
                let in_port = r
                    .chance(50)
                    .then(|| r.pick(&[1u32, 12, 99, port_no::IN_PORT]));
                let table = (in_port.is_none() || r.chance(50)).then(|| r.below(64) as u8);
                Action::Resubmit { in_port, table }
            }
            10 => Action::Group(match r.below(MAX_GROUP as u64 + 1) as u32 {
                g if g == group => g.wrapping_add(1) % MAX_GROUP,
                g => g,
            }),
            11 => Action::Ct(gen_ct(r)),
            12 => Action::Encap(Encap::Vxlan),
            13 => Action::Decap {
                table: r.below(64) as u8,
            },
            14 => Action::Punt(Punt::ArpResponder {
                mac: r.next().to_be_bytes()[..6].try_into().unwrap_or([0; 6]),
            }),
            15 => Action::Punt(Punt::IcmpEchoReply),
            16 => Action::Policy(if r.chance(50) {
                crate::policy::Dir::Ingress
            } else {
                crate::policy::Dir::Egress
            }),
            _ => Action::Note(
                (0..r.below(6))
                    .map(|_| r.pick(&[0u8, 7, b'a', b'"', b' ', b',', 0xff]))
                    .collect(),
            ),
        };
        // Keep the match the actions see in step with push/pop, as the parser does.
        if let Some(m) = m.as_mut() {
            match a {
                Action::PushVlan(_) => m.set(Field::VlanTci, 0x1000, 0x1000),
                Action::PopVlan => {
                    Field::VlanTci.set_masked(&mut m.mask, 0, u128::MAX);
                    Field::VlanTci.set_masked(&mut m.value, 0, u128::MAX);
                }
                _ => {}
            }
        }
        out.push(a);
    }
    if let Some(t) = table.filter(|t| *t < MAX_TABLE && r.chance(30)) {
        out.push(Action::GotoTable(
            t + 1 + r.below(u64::from(MAX_TABLE - t)) as u8,
        ));
    }
    out
}

fn gen_flow(r: &mut Rng) -> FlowSpec {
    let table = r.below(64) as u8;
    let m = gen_match(r);
    FlowSpec {
        table,
        priority: if r.chance(30) {
            DEFAULT_PRIORITY
        } else {
            r.next() as u16
        },
        cookie: if r.chance(50) { 0 } else { r.next() },
        idle_timeout: if r.chance(50) { 0 } else { r.next() as u16 },
        hard_timeout: if r.chance(50) { 0 } else { r.next() as u16 },
        m,
        actions: gen_actions(r, Some(table), Some(m), u32::MAX),
    }
}

fn gen_group(r: &mut Rng) -> GroupSpec {
    let id = r.below(u64::from(MAX_GROUP) + 1) as u32;
    let kind = if r.chance(50) {
        GroupKind::All
    } else {
        GroupKind::Select
    };
    let mut fields = Vec::new();
    if kind == GroupKind::Select {
        for _ in 0..r.below(4) {
            let f = r.pick(Field::ALL);
            if !fields.contains(&f) {
                fields.push(f);
            }
        }
    }
    let buckets = (0..r.below(4))
        .map(|_| Bucket {
            weight: if kind == GroupKind::Select {
                r.next() as u16
            } else {
                0
            },
            actions: gen_actions(r, None, None, id),
        })
        .collect();
    GroupSpec {
        id,
        kind,
        fields,
        buckets,
    }
}

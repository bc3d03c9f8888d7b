//! Unit tests of the flow, filter and group syntax, and of formatting.

use super::value::range_prefixes;
use super::*;
use crate::flow::format::{FlowStatsView, format_actions, format_flow, format_group, format_match};
use crate::flow::key::{Key, ct_state};
use crate::flow::spec::{
    Action, Bucket, CtAction, CtZone, Encap, FlowFilter, GroupKind, NatKind, NatSpec, Punt, port_no,
};
use std::net::IpAddr;

pub(super) fn ports() -> HashMap<String, u32> {
    [("veth12", 12), ("uplink", 1)]
        .into_iter()
        .map(|(n, p)| (n.to_string(), p))
        .collect()
}

fn flows(text: &str) -> Vec<FlowSpec> {
    match parse_flow(text, &ports()) {
        Ok(v) => v,
        Err(e) => panic!("{}", e.render(text)),
    }
}

fn one(text: &str) -> FlowSpec {
    let mut v = flows(text);
    assert_eq!(v.len(), 1, "{text}");
    v.remove(0)
}

fn actions(text: &str) -> Vec<Action> {
    one(text).actions
}

/// The 1-based character column of the `n`th (0-based) occurrence of `needle`.
fn col_nth(text: &str, needle: &str, n: usize) -> usize {
    let (i, _) = text
        .match_indices(needle)
        .nth(n)
        .unwrap_or_else(|| panic!("'{needle}' not in '{text}'"));
    text[..i].chars().count() + 1
}

fn check_err(
    r: Result<impl std::fmt::Debug, ParseError>,
    text: &str,
    needle: &str,
    n: usize,
    msg: &str,
) {
    let e = match r {
        Ok(v) => panic!("'{text}' parsed: {v:?}"),
        Err(e) => e,
    };
    assert_eq!(
        e.column,
        col_nth(text, needle, n),
        "wrong column for '{text}':\n{}",
        e.render(text)
    );
    assert!(
        e.message.contains(msg),
        "'{text}': message '{}' lacks '{msg}'",
        e.message
    );
}

/// Asserts `parse_flow(text)` fails at the first `needle` with a message containing `msg`.
fn flow_err(text: &str, needle: &str, msg: &str) {
    check_err(parse_flow(text, &ports()), text, needle, 0, msg);
}

fn flow_err_nth(text: &str, needle: &str, n: usize, msg: &str) {
    check_err(parse_flow(text, &ports()), text, needle, n, msg);
}

fn get(spec: &FlowSpec, f: Field) -> Option<(u128, u128)> {
    spec.m.get(f)
}

fn ip4(s: &str) -> u128 {
    u128::from(u32::from(
        s.parse::<std::net::Ipv4Addr>().expect("test address"),
    ))
}

fn ip6(s: &str) -> u128 {
    u128::from(s.parse::<std::net::Ipv6Addr>().expect("test address"))
}

// ---- field kinds ----------------------------------------------------------------

#[test]
fn int_fields() {
    let s = one("ip,nw_ttl=64,reg0=0x10/0xf0,reg1=7,tun_id=0xffffffffffffffff,actions=drop");
    assert_eq!(get(&s, Field::IpTtl), Some((64, 0xff)));
    assert_eq!(get(&s, Field::Reg0), Some((0x10, 0xf0)));
    assert_eq!(get(&s, Field::Reg1), Some((7, 0xffff_ffff)));
    assert_eq!(
        get(&s, Field::TunId),
        Some((u128::from(u64::MAX), u128::from(u64::MAX)))
    );
    // Bits outside the mask are dropped (OVS does the same).
    let s = one("reg0=0xff/0x0f,actions=drop");
    assert_eq!(get(&s, Field::Reg0), Some((0xf, 0xf)));
    flow_err(
        "ip,nw_ttl=256,actions=drop",
        "256",
        "does not fit in ip_ttl (8 bits)",
    );
    flow_err("reg0=1/0x100000000,actions=drop", "0x1000", "does not fit");
    flow_err("reg0=12a,actions=drop", "12a", "expected a number");
    flow_err("reg0=,actions=drop", ",actions", "needs a value");
    flow_err("reg0=+5,actions=drop", "+5", "expected a number");
    flow_err(
        "reg0=99999999999999999999999999999999999999999,actions=drop",
        "999",
        "too large",
    );
}

#[test]
fn hex_fields() {
    let s = one("dl_type=0x88cc,metadata=0x1/0xff,ct_mark=10,actions=drop");
    assert_eq!(get(&s, Field::EthType), Some((0x88cc, 0xffff)));
    assert_eq!(get(&s, Field::Metadata), Some((1, 0xff)));
    assert_eq!(get(&s, Field::CtMark), Some((10, 0xffff_ffff)));
    let s = one("ct_label=0xffffffffffffffffffffffffffffffff,actions=drop");
    assert_eq!(get(&s, Field::CtLabel), Some((u128::MAX, u128::MAX)));
    let s = one("ct_label=0x1/0x10000000000000001,actions=drop");
    assert_eq!(get(&s, Field::CtLabel), Some((1, (1 << 64) | 1)));
    flow_err(
        "ct_label=0x1ffffffffffffffffffffffffffffffff,actions=drop",
        "0x1f",
        "too large",
    );
    flow_err(
        "dl_type=0x10000,actions=drop",
        "0x10000",
        "eth_type (16 bits)",
    );
    flow_err(
        "ipv6,ipv6_label=0x100000,actions=drop",
        "0x100000",
        "20 bits",
    );
}

#[test]
fn mac_fields() {
    let s = one("dl_dst=01:00:00:00:00:00/01:00:00:00:00:00,dl_src=02:aa:bb:cc:dd:0e,actions=drop");
    assert_eq!(
        get(&s, Field::EthDst),
        Some((0x0100_0000_0000, 0x0100_0000_0000))
    );
    assert_eq!(
        get(&s, Field::EthSrc),
        Some((0x02aa_bbcc_dd0e, 0xffff_ffff_ffff))
    );
    let s = one("eth_src=aa:bb:cc:dd:ee:ff/ff:ff:ff:00:00:00,actions=drop");
    assert_eq!(
        get(&s, Field::EthSrc),
        Some((0xaabb_cc00_0000, 0xffff_ff00_0000))
    );
    flow_err(
        "dl_src=aa:bb:cc:dd:ee,actions=drop",
        "aa:",
        "not a MAC address",
    );
    flow_err(
        "dl_src=aa:bb:cc:dd:ee:ff:00,actions=drop",
        "aa:",
        "not a MAC address",
    );
    flow_err(
        "dl_src=aa:bb:cc:dd:ee:fg,actions=drop",
        "aa:",
        "not a MAC address",
    );
    flow_err(
        "dl_src=aa:bb:cc:dd:ee:ff/ff:ff,actions=drop",
        "ff:ff,",
        "not a MAC address",
    );
}

#[test]
fn ipv4_fields() {
    let a = one("ip,nw_dst=10.0.0.0/8,actions=drop");
    let b = one("ip,nw_dst=10.0.0.0/255.0.0.0,actions=drop");
    let c = one("ip,ip_dst=10.1.2.3/8,actions=drop");
    assert_eq!(
        get(&a, Field::Ipv4Dst),
        Some((ip4("10.0.0.0"), 0xff00_0000))
    );
    assert_eq!(a, b);
    assert_eq!(a, c);
    let s = one("ip,nw_src=10.0.0.1,tun_dst=192.168.1.1,actions=drop");
    assert_eq!(
        get(&s, Field::Ipv4Src),
        Some((ip4("10.0.0.1"), 0xffff_ffff))
    );
    assert_eq!(
        get(&s, Field::TunDst),
        Some((ip4("192.168.1.1"), 0xffff_ffff))
    );
    let s = one("ip,nw_src=10.0.0.1/255.0.255.0,actions=drop");
    assert_eq!(
        get(&s, Field::Ipv4Src),
        Some((ip4("10.0.0.0"), 0xff00_ff00))
    );
    // /0 wildcards the field entirely.
    assert_eq!(
        get(&one("ip,nw_src=10.0.0.1/0,actions=drop"), Field::Ipv4Src),
        None
    );
    flow_err(
        "ip,nw_dst=10.0.0.0/33,actions=drop",
        "33",
        "prefix length 33 is out of range",
    );
    flow_err(
        "ip,nw_dst=10.0.0.256,actions=drop",
        "10.0",
        "not an IPv4 address",
    );
    flow_err(
        "ip,nw_dst=10.0.0.0/255.0.0.x,actions=drop",
        "255",
        "not an IPv4 address",
    );
}

#[test]
fn ipv6_fields() {
    let s = one("ipv6,ipv6_src=fd00::/64,ipv6_dst=fd00::1,actions=drop");
    assert_eq!(
        get(&s, Field::Ipv6Src),
        Some((ip6("fd00::"), u128::MAX << 64))
    );
    assert_eq!(get(&s, Field::Ipv6Dst), Some((ip6("fd00::1"), u128::MAX)));
    let s = one("ipv6,ipv6_src=fd00::1:2/ffff::ffff,actions=drop");
    assert_eq!(
        get(&s, Field::Ipv6Src),
        Some((ip6("fd00::2"), ip6("ffff::ffff")))
    );
    flow_err(
        "ipv6,ipv6_src=fd00::/129,actions=drop",
        "129",
        "out of range",
    );
    flow_err(
        "ipv6,ipv6_src=fd00:::1,actions=drop",
        "fd00",
        "not an IPv6 address",
    );
}

#[test]
fn port_fields() {
    assert_eq!(
        get(&one("in_port=veth12,actions=drop"), Field::InPort),
        Some((12, 0xffff_ffff))
    );
    assert_eq!(
        get(&one("in_port=5,actions=drop"), Field::InPort),
        Some((5, 0xffff_ffff))
    );
    assert_eq!(
        get(&one("in_port=0x7/0xf,actions=drop"), Field::InPort),
        Some((7, 0xf))
    );
    flow_err(
        "in_port=veth99,actions=drop",
        "veth99",
        "unknown port 'veth99'",
    );
    flow_err(
        "in_port=4294967296,actions=drop",
        "4294967296",
        "out of range",
    );
}

#[test]
fn ct_state_flags() {
    let s = one("ct_state=+trk+new-est,actions=drop");
    let (v, m) = (
        ct_state::TRK | ct_state::NEW,
        ct_state::TRK | ct_state::NEW | ct_state::EST,
    );
    assert_eq!(
        get(&s, Field::CtState),
        Some((u128::from(v), u128::from(m)))
    );
    let s = one("ct_state=0x20/0x20,actions=drop");
    assert_eq!(get(&s, Field::CtState), Some((0x20, 0x20)));
    let s = one("ct_state=-trk,actions=drop");
    assert_eq!(get(&s, Field::CtState), Some((0, 0x20)));
    flow_err(
        "ct_state=+trk+bogus,actions=drop",
        "bogus",
        "unknown flag 'bogus' for ct_state",
    );
    flow_err(
        "ct_state=+trk+,actions=drop",
        ",actions",
        "missing flag name",
    );
    flow_err("ct_state=+trk-trk,actions=drop", "trk,", "given twice");
}

#[test]
fn tcp_flags_field() {
    let s = one("tcp,tcp_flags=+syn-ack,actions=drop");
    assert_eq!(get(&s, Field::TcpFlags), Some((0x002, 0x012)));
    let s = one("tcp6,tcp_flags=0x2/0x2,actions=drop");
    assert_eq!(get(&s, Field::TcpFlags), Some((2, 2)));
    flow_err("tcp,tcp_flags=+syn+fun,actions=drop", "fun", "unknown flag");
    flow_err(
        "udp,tcp_flags=+syn,actions=drop",
        "tcp_flags",
        "tcp_flags requires ip_proto tcp (add 'tcp,')",
    );
}

#[test]
fn vlan_fields() {
    let tci = |t: &str| get(&one(t), Field::VlanTci);
    assert_eq!(tci("dl_vlan=10,actions=drop"), Some((0x100a, 0x1fff)));
    assert_eq!(tci("dl_vlan=0xffff,actions=drop"), Some((0, 0xffff)));
    assert_eq!(tci("vlan_tci=0,actions=drop"), Some((0, 0xffff)));
    assert_eq!(
        tci("vlan_vid=0x1000/0x1000,actions=drop"),
        Some((0x1000, 0x1000))
    );
    assert_eq!(tci("vlan_vid=0x100a,actions=drop"), Some((0x100a, 0x1fff)));
    assert_eq!(
        tci("dl_vlan=10,dl_vlan_pcp=3,actions=drop"),
        Some((0x700a, 0xffff))
    );
    assert_eq!(
        tci("vlan_tci=0x1000/0x1000,vlan_pcp=5,actions=drop"),
        Some((0xb000, 0xf000))
    );
    flow_err("dl_vlan=4096,actions=drop", "4096", "VLAN id 0..4095");
    flow_err(
        "vlan_pcp=3,actions=drop",
        "vlan_pcp",
        "vlan_pcp requires a VLAN tag",
    );
    flow_err(
        "dl_vlan=0xffff,vlan_pcp=3,actions=drop",
        "vlan_pcp",
        "overlaps 'dl_vlan'",
    );
    flow_err(
        "vlan_tci=0x0000/0x1000,vlan_pcp=3,actions=drop",
        "vlan_pcp=",
        "requires a VLAN tag",
    );
    flow_err(
        "dl_vlan=10,vlan_tci=0x1000/0x1000,actions=drop",
        "vlan_tci",
        "overlaps 'dl_vlan'",
    );
}

#[test]
fn ip_frag_names() {
    assert_eq!(
        get(&one("ip,ip_frag=first,actions=drop"), Field::IpFrag),
        Some((1, 3))
    );
    assert_eq!(
        get(&one("ip,nw_frag=not_later,actions=drop"), Field::IpFrag),
        Some((0, 2))
    );
    assert_eq!(
        get(&one("ip,ip_frag=3,actions=drop"), Field::IpFrag),
        Some((3, 3))
    );
}

#[test]
fn shorthands() {
    let cases: [(&str, u16, Option<u8>); 11] = [
        ("ip", 0x0800, None),
        ("ipv6", 0x86dd, None),
        ("arp", 0x0806, None),
        ("tcp", 0x0800, Some(6)),
        ("udp", 0x0800, Some(17)),
        ("sctp", 0x0800, Some(132)),
        ("icmp", 0x0800, Some(1)),
        ("tcp6", 0x86dd, Some(6)),
        ("udp6", 0x86dd, Some(17)),
        ("sctp6", 0x86dd, Some(132)),
        ("icmp6", 0x86dd, Some(58)),
    ];
    for (name, et, proto) in cases {
        let s = one(&format!("{name},actions=drop"));
        assert_eq!(
            get(&s, Field::EthType),
            Some((u128::from(et), 0xffff)),
            "{name}"
        );
        assert_eq!(
            get(&s, Field::IpProto),
            proto.map(|p| (u128::from(p), 0xff)),
            "{name}"
        );
    }
    // Repeating what a shorthand says is fine; contradicting it is not.
    assert_eq!(one("ip,tcp,actions=drop"), one("tcp,actions=drop"));
    assert_eq!(one("tcp,nw_proto=6,actions=drop"), one("tcp,actions=drop"));
    flow_err("tcp,udp,actions=drop", "udp", "udp conflicts with 'tcp'");
    flow_err(
        "tcp,nw_proto=17,actions=drop",
        "nw_proto",
        "conflicts with 'tcp'",
    );
    flow_err("ip,ipv6,actions=drop", "ipv6", "conflicts with 'ip'");
    flow_err("tcp=1,actions=drop", "tcp", "'tcp' takes no value");
}

#[test]
fn prerequisites() {
    flow_err(
        "tp_dst=80,actions=drop",
        "tp_dst",
        "tp_dst requires ip_proto tcp, udp or sctp (add 'tcp,')",
    );
    flow_err(
        "ip,tcp_dst=80,actions=drop",
        "tcp_dst",
        "tcp_dst requires ip_proto tcp, udp or sctp",
    );
    flow_err(
        "nw_src=10.0.0.1,actions=drop",
        "nw_src",
        "nw_src requires ip (add 'ip,')",
    );
    flow_err("ipv6,nw_src=10.0.0.1,actions=drop", "nw_src", "requires ip");
    flow_err(
        "ip,arp_spa=10.0.0.1,actions=drop",
        "arp_spa",
        "arp_spa requires arp (add 'arp,')",
    );
    flow_err("ip,ipv6_src=::1,actions=drop", "ipv6_src", "requires ipv6");
    flow_err(
        "tcp,icmp_type=8,actions=drop",
        "icmp_type",
        "icmp_type requires icmp or icmp6",
    );
    flow_err(
        "ipv6,nw_proto=1,icmp_type=8,actions=drop",
        "icmp_type",
        "requires icmp or icmp6",
    );
    flow_err(
        "nw_proto=6,actions=drop",
        "nw_proto",
        "nw_proto requires ip or ipv6",
    );
    flow_err(
        "dl_type=0x0800/0xff00,nw_ttl=1,actions=drop",
        "nw_ttl",
        "requires ip or ipv6",
    );
    // Prerequisites may come after the field, as in OVS.
    let s = one("tp_dst=80,tcp,actions=drop");
    assert_eq!(get(&s, Field::TpDst), Some((80, 0xffff)));
    let s = one("icmp6,icmpv6_type=135,icmp_code=0,actions=drop");
    assert_eq!(get(&s, Field::IcmpType), Some((135, 0xff)));
    let s = one("arp,arp_spa=10.0.0.1,arp_op=1,arp_sha=02:00:00:00:00:01,actions=drop");
    assert_eq!(get(&s, Field::ArpSpa), Some((ip4("10.0.0.1"), 0xffff_ffff)));
    assert_eq!(get(&s, Field::ArpOp), Some((1, 0xffff)));
    let s = one("sctp6,sctp_src=5,actions=drop");
    assert_eq!(get(&s, Field::TpSrc), Some((5, 0xffff)));
}

#[test]
fn duplicates_and_unknown_keys() {
    flow_err_nth(
        "tcp,tp_dst=80,tp_dst=81,actions=drop",
        "tp_dst",
        1,
        "duplicate field",
    );
    flow_err(
        "tcp,tp_dst=80,tcp_dst=80,actions=drop",
        "tcp_dst",
        "duplicate field: tcp_dst is already given as 'tp_dst'",
    );
    flow_err(
        "ip,nw_src=1.2.3.4,ip_src=1.2.3.4,actions=drop",
        "ip_src",
        "duplicate field",
    );
    flow_err(
        "foo=1,actions=drop",
        "foo",
        "unknown field or keyword 'foo'",
    );
    flow_err("tpc,actions=drop", "tpc", "did you mean 'tcp'?");
    flow_err(
        "ip,nw_dts=1.2.3.4,actions=drop",
        "nw_dts",
        "did you mean 'nw_dst'?",
    );
    flow_err(
        "priority=1,priority=2,actions=drop",
        "priority=2",
        "priority is given twice",
    );
    flow_err("ip,=5,actions=drop", "=5", "expected a field name");
    flow_err("tcp,tp_dst,actions=drop", "tp_dst", "needs a value");
}

#[test]
fn flow_keywords() {
    let s = one("table=3,priority=100,cookie=0x5,idle_timeout=10,hard_timeout=20,actions=drop");
    assert_eq!(
        (
            s.table,
            s.priority,
            s.cookie,
            s.idle_timeout,
            s.hard_timeout
        ),
        (3, 100, 5, 10, 20)
    );
    assert_eq!(s.m, Match::ANY);
    let d = one("actions=drop");
    assert_eq!((d.table, d.priority, d.cookie), (0, DEFAULT_PRIORITY, 0));
    // Space-separated and ':'-delimited items, as ovs-ofctl accepts.
    assert_eq!(
        one("priority=5 tcp tp_dst:80 actions=output:1"),
        one("priority=5,tcp,tp_dst=80,actions=output:1")
    );
    // dump-flows output can be fed back.
    let s = one(
        " cookie=0x0, duration=1.5s, table=0, n_packets=3, n_bytes=4, idle_age=2, priority=7 actions=drop",
    );
    assert_eq!(s.priority, 7);
    flow_err(
        "table=64,actions=drop",
        "64",
        "table 64 is out of range (at most 63)",
    );
    flow_err("priority=70000,actions=drop", "70000", "out of range");
    flow_err(
        "cookie=0x1/0xff,actions=drop",
        "0xff",
        "cookie mask only makes sense in a filter",
    );
    flow_err(
        "out_port=1,actions=drop",
        "out_port",
        "only makes sense in a filter",
    );
    let text = "priority=5,tcp";
    let e = parse_flow(text, &ports()).expect_err("no actions");
    assert_eq!(e.column, text.len() + 1);
    assert!(e.message.contains("missing 'actions='"));
}

// ---- actions --------------------------------------------------------------------

#[test]
fn output_actions() {
    assert_eq!(actions("actions=output:2"), vec![Action::Output(2)]);
    assert_eq!(actions("actions=output:veth12"), vec![Action::Output(12)]);
    assert_eq!(
        actions("actions=output:in_port"),
        vec![Action::Output(port_no::IN_PORT)]
    );
    assert_eq!(
        actions("actions=2,veth12 uplink"),
        vec![Action::Output(2), Action::Output(12), Action::Output(1)]
    );
    assert_eq!(
        actions("actions=in_port,flood,normal"),
        vec![
            Action::Output(port_no::IN_PORT),
            Action::Flood,
            Action::Normal
        ]
    );
    assert_eq!(actions("actions=NORMAL"), vec![Action::Normal]);
    assert_eq!(actions("actions=drop"), vec![]);
    assert_eq!(actions("actions="), vec![]);
    flow_err("actions=output:veth99", "veth99", "unknown port 'veth99'");
    flow_err("actions=output:0xffffffff", "0xffffffff", "reserved");
    flow_err("actions=output", "output", "needs an argument");
    flow_err("actions=flood:1", "flood", "takes no argument");
    flow_err(
        "actions=output:1,drop",
        "drop",
        "'drop' must be the only action",
    );
    flow_err(
        "actions=outptu:1",
        "outptu",
        "unknown action 'outptu' (did you mean 'output'?)",
    );
}

#[test]
fn set_field_actions() {
    let sf = |field, value, mask| Action::SetField { field, value, mask };
    assert_eq!(
        actions("ip,actions=set_field:10.0.0.1->ip_dst"),
        vec![sf(Field::Ipv4Dst, ip4("10.0.0.1"), 0xffff_ffff)]
    );
    assert_eq!(
        actions("actions=set_field:0x5/0xff->reg0"),
        vec![sf(Field::Reg0, 5, 0xff)]
    );
    assert_eq!(
        actions("actions=set_field:0x5->NXM_NX_REG3"),
        vec![sf(Field::Reg3, 5, 0xffff_ffff)]
    );
    assert_eq!(
        actions("actions=set_field:02:00:00:00:00:01->eth_dst"),
        vec![sf(Field::EthDst, 0x0200_0000_0001, 0xffff_ffff_ffff)]
    );
    assert_eq!(
        actions("ipv6,actions=set_field:fd00::/16->ipv6_src"),
        vec![sf(Field::Ipv6Src, ip6("fd00::"), 0xffff << 112)]
    );
    flow_err(
        "actions=set_field:1->in_port",
        "in_port",
        "in_port cannot be written",
    );
    flow_err("actions=set_field:1->nope", "nope", "unknown field 'nope'");
    flow_err("actions=set_field:1", "1", "expected VALUE->FIELD");
    flow_err(
        "actions=set_field:0x100->ip_ttl",
        "0x100",
        "does not fit in ip_ttl",
    );
    flow_err(
        "actions=set_field:10.0.0.1->ip_dst",
        "set_field",
        "ip_dst requires ip (add 'ip,')",
    );
    flow_err("actions=set_field:0/0->reg0", "0/0", "mask is zero");
}

#[test]
fn load_and_move() {
    let sf = |field, value, mask| Action::SetField { field, value, mask };
    assert_eq!(
        actions("actions=load:0x5->NXM_NX_REG0[0..15]"),
        vec![sf(Field::Reg0, 5, 0xffff)]
    );
    assert_eq!(
        actions("actions=load:0x5->reg0[16..31]"),
        vec![sf(Field::Reg0, 0x5_0000, 0xffff_0000)]
    );
    assert_eq!(
        actions("actions=load:1->reg1[31]"),
        vec![sf(Field::Reg1, 1 << 31, 1 << 31)]
    );
    assert_eq!(
        actions("actions=load:0x020000000001->NXM_OF_ETH_DST[]"),
        vec![sf(Field::EthDst, 0x0200_0000_0001, 0xffff_ffff_ffff)]
    );
    assert_eq!(
        actions("actions=load:3->metadata"),
        vec![sf(Field::Metadata, 3, u128::from(u64::MAX))]
    );
    flow_err(
        "actions=load:0x1ff->reg0[0..7]",
        "0x1ff",
        "does not fit in 8 bits",
    );
    flow_err("actions=load:1->reg0[5..40]", "5..40", "outside reg0");
    flow_err("actions=load:1->reg0[7..5]", "7..5", "outside reg0");
    flow_err(
        "actions=load:1->ct_state[]",
        "ct_state",
        "cannot be written",
    );
    assert_eq!(
        actions("actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[]"),
        vec![Action::Move {
            src: Field::EthSrc,
            src_ofs: 0,
            dst: Field::EthDst,
            dst_ofs: 0,
            n_bits: 48
        }]
    );
    assert_eq!(
        actions("actions=move:reg0[0..15]->reg1[16..31]"),
        vec![Action::Move {
            src: Field::Reg0,
            src_ofs: 0,
            dst: Field::Reg1,
            dst_ofs: 16,
            n_bits: 16
        }]
    );
    assert_eq!(
        actions("actions=move:in_port[]->reg2[]"),
        vec![Action::Move {
            src: Field::InPort,
            src_ofs: 0,
            dst: Field::Reg2,
            dst_ofs: 0,
            n_bits: 32
        }]
    );
    flow_err(
        "actions=move:reg0[0..7]->reg1[0..15]",
        "reg1",
        "source has 8 bits but destination 16",
    );
    flow_err(
        "actions=move:reg0[]->in_port[]",
        "in_port",
        "cannot be written",
    );
    flow_err(
        "actions=move:reg0[]",
        "reg0",
        "expected SRC[a..b]->DST[c..d]",
    );
    flow_err(
        "actions=move:ip_src[]->reg0[]",
        "move",
        "ip_src requires ip",
    );
}

#[test]
fn mod_actions() {
    let sf = |field, value, mask| Action::SetField { field, value, mask };
    let a = actions(
        "tcp,actions=mod_dl_src:02:00:00:00:00:01,mod_dl_dst:02:00:00:00:00:02,mod_nw_src:1.2.3.4,\
         mod_nw_dst:5.6.7.8,mod_tp_src:10,mod_tp_dst:20,mod_nw_ttl:9,mod_vlan_vid:10",
    );
    assert_eq!(
        a,
        vec![
            sf(Field::EthSrc, 0x0200_0000_0001, 0xffff_ffff_ffff),
            sf(Field::EthDst, 0x0200_0000_0002, 0xffff_ffff_ffff),
            sf(Field::Ipv4Src, ip4("1.2.3.4"), 0xffff_ffff),
            sf(Field::Ipv4Dst, ip4("5.6.7.8"), 0xffff_ffff),
            sf(Field::TpSrc, 10, 0xffff),
            sf(Field::TpDst, 20, 0xffff),
            sf(Field::IpTtl, 9, 0xff),
            sf(Field::VlanVid, 0x100a, 0x1fff),
        ]
    );
    flow_err("actions=mod_vlan_vid:4096", "4096", "out of range");
    flow_err("ip,actions=mod_nw_dst:10.0.0.0/8", "10.0", "takes no mask");
    flow_err(
        "actions=mod_tp_dst:80",
        "mod_tp_dst",
        "tp_dst requires ip_proto tcp, udp or sctp",
    );
    // vlan_pcp needs a tag: push_vlan provides one, pop_vlan takes it away.
    assert_eq!(actions("actions=push_vlan:0x8100,mod_vlan_pcp:3").len(), 2);
    flow_err(
        "actions=mod_vlan_pcp:3",
        "mod_vlan_pcp",
        "requires a VLAN tag",
    );
    flow_err(
        "dl_vlan=5,actions=pop_vlan,mod_vlan_pcp:3",
        "mod_vlan_pcp",
        "requires a VLAN tag",
    );
}

#[test]
fn vlan_ttl_table_actions() {
    assert_eq!(
        actions(
            "table=1,actions=dec_ttl,push_vlan:0x8100,push_vlan:0x88a8,pop_vlan,strip_vlan,goto_table:5"
        ),
        vec![
            Action::DecTtl,
            Action::PushVlan(0x8100),
            Action::PushVlan(0x88a8),
            Action::PopVlan,
            Action::PopVlan,
            Action::GotoTable(5)
        ]
    );
    flow_err("actions=push_vlan:0x0800", "0x0800", "0x8100 or 0x88a8");
    let text = "table=1,actions=goto_table:1";
    check_err(parse_flow(text, &ports()), text, "1", 1, "later table");
    flow_err("actions=goto_table:64", "64", "out of range");
    flow_err(
        "actions=goto_table:2,output:1",
        "output",
        "goto_table must be the last action",
    );
}

#[test]
fn resubmit_and_group() {
    let r = |in_port, table| Action::Resubmit { in_port, table };
    assert_eq!(actions("actions=resubmit(,3)"), vec![r(None, Some(3))]);
    assert_eq!(actions("actions=resubmit(2,3)"), vec![r(Some(2), Some(3))]);
    assert_eq!(
        actions("actions=resubmit(veth12,3)"),
        vec![r(Some(12), Some(3))]
    );
    assert_eq!(
        actions("actions=resubmit(in_port,3)"),
        vec![r(None, Some(3))]
    );
    assert_eq!(actions("actions=resubmit:2"), vec![r(Some(2), None)]);
    assert_eq!(actions("actions=resubmit(2,)"), vec![r(Some(2), None)]);
    assert_eq!(
        actions("table=5,actions=resubmit(,0)"),
        vec![r(None, Some(0))]
    );
    flow_err("actions=resubmit(,)", ",)", "needs a port or a table");
    flow_err("actions=resubmit(,64)", "64", "out of range");
    flow_err(
        "actions=resubmit:in_port",
        "in_port",
        "needs a port or a table",
    );
    assert_eq!(actions("actions=group:5"), vec![Action::Group(5)]);
    flow_err("actions=group:0xffffff01", "0xffffff01", "reserved");
}

#[test]
fn ct_actions() {
    let a = actions(
        "ip,actions=ct(commit,zone=5,table=2,nat(src=10.0.0.1-10.0.0.5:1000-2000),\
         exec(set_field:0x1/0x3->ct_mark,set_field:0x2->ct_label))",
    );
    let want = CtAction {
        commit: true,
        zone: CtZone::Value(5),
        table: Some(2),
        nat: Some(NatSpec {
            kind: Some(NatKind::Src),
            addr_min: Some(IpAddr::from([10, 0, 0, 1])),
            addr_max: Some(IpAddr::from([10, 0, 0, 5])),
            port_min: Some(1000),
            port_max: Some(2000),
        }),
        set_mark: Some((1, 3)),
        set_label: Some((2, u128::MAX)),
    };
    assert_eq!(a, vec![Action::Ct(want)]);
    let bare = CtAction {
        commit: false,
        zone: CtZone::Value(0),
        table: None,
        nat: None,
        set_mark: None,
        set_label: None,
    };
    assert_eq!(actions("actions=ct"), vec![Action::Ct(bare.clone())]);
    assert_eq!(actions("actions=ct()"), vec![Action::Ct(bare.clone())]);
    let Action::Ct(z) = &actions("actions=ct(zone=NXM_NX_REG5[0..15],nat)")[0] else {
        panic!("not ct")
    };
    assert_eq!(z.zone, CtZone::Field(Field::Reg5));
    assert_eq!(
        z.nat,
        Some(NatSpec {
            kind: None,
            addr_min: None,
            addr_max: None,
            port_min: None,
            port_max: None
        })
    );
    let Action::Ct(v6) = &actions("actions=ct(commit, nat(dst=[fd00::1]-[fd00::2]:80))")[0] else {
        panic!("not ct")
    };
    let nat = v6.nat.as_ref().expect("nat");
    assert_eq!(
        (nat.kind, nat.addr_min, nat.port_min, nat.port_max),
        (Some(NatKind::Dst), "fd00::1".parse().ok(), Some(80), None)
    );
    let Action::Ct(l) = &actions("actions=ct(commit,exec(load:1->NXM_NX_CT_MARK[]))")[0] else {
        panic!("not ct")
    };
    assert_eq!(l.set_mark, Some((1, u32::MAX)));
    flow_err(
        "actions=ct(zone=reg5[0..7])",
        "reg5",
        "register's low 16 bits",
    );
    flow_err(
        "actions=ct(exec(set_field:1->ct_mark))",
        "exec",
        "needs 'commit'",
    );
    flow_err(
        "actions=ct(commit,exec(set_field:1->reg0))",
        "1->reg0",
        "only set ct_mark and ct_label",
    );
    flow_err(
        "actions=ct(commit,exec(output:1))",
        "output",
        "only set ct_mark and ct_label",
    );
    flow_err(
        "actions=ct(commti)",
        "commti",
        "unknown ct argument 'commti' (did you mean 'commit'?)",
    );
    flow_err("actions=ct(commit,commit)", "commit)", "given twice");
    flow_err(
        "actions=ct(nat(src=10.0.0.5-10.0.0.1))",
        "10.0.0.1)",
        "ends below its start",
    );
    flow_err(
        "actions=ct(nat(src=10.0.0.1-[fd00::1]))",
        "[fd00",
        "same family",
    );
    flow_err("actions=ct(nat(src=fd00::1))", "fd00", "in brackets");
    flow_err(
        "actions=ct(nat(src=10.0.0.1:90-80))",
        "80",
        "ends below its start",
    );
    flow_err(
        "actions=ct(nat(src=10.0.0.1,dst=10.0.0.2))",
        "dst",
        "one of src and dst",
    );
    flow_err(
        "actions=ct(nat(src=10.0.0.1,random))",
        "random",
        "not supported",
    );
    flow_err("actions=ct(commit", "(", "missing ')'");
    flow_err("actions=ct(commit)x", "x", "expected ',' after ')'");
}

#[test]
fn tunnel_punt_note() {
    assert_eq!(
        actions("actions=encap(vxlan),decap,decap(table=3),decap()"),
        vec![
            Action::Encap(Encap::Vxlan),
            Action::Decap { table: 0 },
            Action::Decap { table: 3 },
            Action::Decap { table: 0 }
        ]
    );
    flow_err("actions=encap(gre)", "gre", "unknown encapsulation 'gre'");
    flow_err("actions=decap(table=99)", "99", "out of range");
    assert_eq!(
        actions("actions=punt:arp_responder(02:00:00:00:00:01),punt:icmp_echo_reply"),
        vec![
            Action::Punt(Punt::ArpResponder {
                mac: [2, 0, 0, 0, 0, 1]
            }),
            Action::Punt(Punt::IcmpEchoReply)
        ]
    );
    flow_err("actions=punt:bogus", "bogus", "unknown punt target");
    flow_err(
        "actions=punt:arp_responder(02:00)",
        "02:00",
        "not a MAC address",
    );
    assert_eq!(
        actions("actions=note:01.02.0304"),
        vec![Action::Note(vec![1, 2, 3, 4])]
    );
    assert_eq!(
        actions("actions=note:\"hello, (world)\",output:1"),
        vec![Action::Note(b"hello, (world)".to_vec()), Action::Output(1)]
    );
    assert_eq!(
        actions(r#"actions=note:"a\"b\\c""#),
        vec![Action::Note(br#"a"b\c"#.to_vec())]
    );
    flow_err("actions=note:012", "2", "hex bytes");
    flow_err("actions=note:0g", "0g", "hex bytes");
    flow_err("actions=note:\"abc", "\"abc", "unterminated");
    flow_err("actions=note:\"a\"b", "b", "after the closing quote");
}

// ---- ranges ---------------------------------------------------------------------

/// Every value of a 16-bit field is matched by exactly one prefix if it is in the
/// range, by none otherwise.
fn check_cover(lo: u128, hi: u128) -> usize {
    let p = range_prefixes(lo, hi, 16);
    for x in 0..=0xffffu128 {
        let hits = p.iter().filter(|(v, m)| x & m == *v).count();
        let want = usize::from((lo..=hi).contains(&x));
        assert_eq!(hits, want, "{x} in {lo}-{hi}: {p:x?}");
    }
    p.len()
}

#[test]
fn range_prefixes_cover_exactly() {
    assert_eq!(check_cover(0, 0xffff), 1);
    assert_eq!(check_cover(1, 0xfffe), 30);
    assert_eq!(check_cover(80, 80), 1);
    assert_eq!(check_cover(1024, 0xffff), 6);
    assert_eq!(check_cover(1000, 1999), 7);
    for (lo, hi) in [
        (0, 0),
        (0xffff, 0xffff),
        (3, 17),
        (32768, 32769),
        (5, 4000),
        (0, 1),
    ] {
        check_cover(lo, hi);
    }
    assert_eq!(range_prefixes(0, u128::MAX, 128), vec![(0, 0)]);
    assert_eq!(range_prefixes(1, u128::MAX - 1, 128).len(), 254);
}

#[test]
fn port_range_flows() {
    let specs = flows("tcp,tp_dst=1000-1999,actions=output:1");
    assert_eq!(specs.len(), 7);
    for x in 0..=0xffffu128 {
        let mut k = Key::ZERO;
        Field::EthType.set(&mut k, 0x0800);
        Field::IpProto.set(&mut k, 6);
        Field::TpDst.set(&mut k, x);
        let hits = specs.iter().filter(|s| s.m.matches(&k)).count();
        assert_eq!(hits, usize::from((1000..=1999).contains(&x)), "port {x}");
    }
    assert!(specs.iter().all(|s| s.actions == vec![Action::Output(1)]));
    // Both ranged: the cross product.
    let specs = flows("udp,udp_src=1-2,udp_dst=10-13,actions=drop");
    assert_eq!(specs.len(), 4);
    assert_eq!(
        flows("tcp,tp_src=1-65534,tp_dst=1-65534,actions=drop").len(),
        900
    );
    flow_err(
        "tcp,tp_src=1-65534,tp_dst=1-65534,reg0=1-4294967294,actions=drop",
        "reg0",
        "more than 1024 flows",
    );
    flow_err("tcp,tp_dst=2000-1000,actions=drop", "2000-", "empty range");
    flow_err(
        "tcp,tp_dst=1-70000,actions=drop",
        "70000",
        "does not fit in tp_dst",
    );
    flow_err(
        "ip,nw_src=10.0.0.1-10.0.0.2,actions=drop",
        "10.0.0.1-",
        "does not take a range",
    );
    flow_err(
        "tcp,tp_dst=1-5/0xff,actions=drop",
        "1-5",
        "cannot have a mask",
    );
    flow_err("tp_dst=1-5,actions=drop", "tp_dst", "requires ip_proto");
    flow_err(
        "tcp,tp_dst=1-5,tp_dst=6,actions=drop",
        "tp_dst=6",
        "duplicate",
    );
}

// ---- filters and groups ------------------------------------------------------------

#[test]
fn filters() {
    let f = parse_filter(
        "table=3,cookie=0x10/0xf0,out_port=veth12,tcp,tp_dst=80",
        &ports(),
    )
    .expect("filter");
    let mut m = Match::ANY;
    m.set_exact(Field::EthType, 0x0800);
    m.set_exact(Field::IpProto, 6);
    m.set_exact(Field::TpDst, 80);
    let want = FlowFilter {
        table: Some(3),
        cookie: Some((0x10, 0xf0)),
        m,
        strict_priority: None,
        out_port: Some(12),
    };
    assert_eq!(f, want);
    assert_eq!(parse_filter("", &ports()), Ok(FlowFilter::default()));
    assert_eq!(
        parse_filter("cookie=5", &ports()).expect("filter").cookie,
        Some((5, u64::MAX))
    );
    let s = parse_filter_strict("priority=5,ip", &ports()).expect("strict");
    assert_eq!(s.strict_priority, Some(5));
    assert_eq!(
        parse_filter_strict("ip", &ports())
            .expect("strict")
            .strict_priority,
        Some(DEFAULT_PRIORITY)
    );
    // A range that is one prefix is fine in a filter.
    assert!(parse_filter("tcp,tp_dst=0-1023", &ports()).is_ok());
    let t = "tcp,tp_dst=1-1023";
    check_err(parse_filter(t, &ports()), t, "tp_dst", 0, "not a range");
    let t = "priority=5,ip";
    check_err(
        parse_filter(t, &ports()),
        t,
        "priority",
        0,
        "only selects flows with --strict",
    );
    let t = "ip,actions=drop";
    check_err(
        parse_filter(t, &ports()),
        t,
        "actions",
        0,
        "a filter takes no actions",
    );
    let t = "table=1,idle_timeout=5";
    check_err(
        parse_filter(t, &ports()),
        t,
        "idle_timeout",
        0,
        "not part of a filter",
    );
    let t = "ip,nw_dst=1.2.3.4,tp_dst=5";
    check_err(
        parse_filter(t, &ports()),
        t,
        "tp_dst",
        0,
        "requires ip_proto",
    );
    let m = parse_match("in_port=veth12,tcp,tp_dst=80", &ports()).expect("match");
    assert_eq!(m.get(Field::InPort), Some((12, 0xffff_ffff)));
}

#[test]
fn groups() {
    let text = "group_id=1,type=select,selection_method=hash,fields(ip_src,tp_src),\
                bucket=weight:10,actions=output:1,bucket=actions=output:2";
    let g = parse_group(text, &ports()).expect("group");
    let want = GroupSpec {
        id: 1,
        kind: GroupKind::Select,
        fields: vec![Field::Ipv4Src, Field::TpSrc],
        buckets: vec![
            Bucket {
                weight: 10,
                actions: vec![Action::Output(1)],
            },
            Bucket {
                weight: 1,
                actions: vec![Action::Output(2)],
            },
        ],
    };
    assert_eq!(g, want);
    let all = parse_group(
        "group_id=7,type=all,bucket=output:1,output:veth12,bucket=actions=ct(commit,zone=1),2",
        &ports(),
    )
    .expect("group");
    assert_eq!(all.kind, GroupKind::All);
    assert_eq!(all.buckets.len(), 2);
    assert_eq!(
        all.buckets[0],
        Bucket {
            weight: 0,
            actions: vec![Action::Output(1), Action::Output(12)]
        }
    );
    assert_eq!(all.buckets[1].actions.len(), 2);
    assert!(all.fields.is_empty());
    let g = parse_group("group_id=2,type=select,fields=ip_dst", &ports()).expect("group");
    assert_eq!((g.fields, g.buckets.len()), (vec![Field::Ipv4Dst], 0));

    let err =
        |t: &str, needle: &str, msg: &str| check_err(parse_group(t, &ports()), t, needle, 0, msg);
    let e = parse_group("type=all", &ports()).expect_err("no id");
    assert_eq!(
        (e.column, e.message.contains("missing group_id")),
        (9, true)
    );
    err(
        "group_id=1,type=all,bucket=weight:2,actions=output:1",
        "weight",
        "only select groups have bucket weights",
    );
    err("group_id=1,type=indirect", "indirect", "not supported");
    err(
        "group_id=1,type=all,fields(ip_src)",
        "fields",
        "only applies to type=select",
    );
    err(
        "group_id=1,type=select,selection_method=dp_hash",
        "dp_hash",
        "unsupported selection_method",
    );
    err(
        "group_id=1,type=select,fields(ip_src,ip_src)",
        "ip_src)",
        "listed twice",
    );
    err(
        "group_id=1,type=select,fields(bogus)",
        "bogus",
        "unknown field",
    );
    err(
        "group_id=1,type=all,bucket=goto_table:2",
        "2",
        "not allowed in a group bucket",
    );
    let t = "group_id=1,type=all,bucket=group:1";
    check_err(parse_group(t, &ports()), t, "1", 1, "cannot send to itself");
    err(
        "group_id=1,type=all,bucket=actions=output:1,group_id=2",
        "group_id=2",
        "unknown action",
    );
    err(
        "group_id=1,group_id=2,type=all",
        "group_id=2",
        "given twice",
    );
    err(
        "group_id=1,type=all,colour=red",
        "colour",
        "unknown group keyword",
    );
    err("group_id=0xffffff01,type=all", "0xffffff01", "reserved");
}

// ---- errors -----------------------------------------------------------------------

#[test]
fn columns_count_characters_and_render_points_at_them() {
    // "é" is two bytes but one column.
    let text = "note=é,tp_dst=80,actions=drop";
    let e = parse_flow(text, &ports()).expect_err("unknown key");
    assert_eq!(e.column, 1);
    let text = "ip,nw_src=é";
    let e = parse_flow(text, &ports()).expect_err("bad address");
    assert_eq!(e.column, 11);
    let text = "ip,tp_dst=80,actions=drop";
    let e = parse_flow(text, &ports()).expect_err("prereq");
    assert_eq!(
        e.to_string(),
        "column 4: tp_dst requires ip_proto tcp, udp or sctp (add 'tcp,')"
    );
    assert_eq!(
        e.render(text),
        "error: tp_dst requires ip_proto tcp, udp or sctp (add 'tcp,')\n  |\n  | ip,tp_dst=80,actions=drop\n  |    ^\n"
    );
    // Multi-line input: the caret goes under the right line.
    let text = "ip,\n\ttp_dst=80,\nactions=drop";
    let e = parse_flow(text, &ports()).expect_err("prereq");
    assert!(
        e.render(text).ends_with("  |  tp_dst=80,\n  |  ^\n"),
        "{}",
        e.render(text)
    );
    // At the end of the text.
    let text = "ip";
    let e = parse_flow(text, &ports()).expect_err("no actions");
    assert!(e.render(text).ends_with("  | ip\n  |   ^\n"));
}

// ---- formatting -----------------------------------------------------------------

#[test]
fn dump_flows_line() {
    let s = one("priority=100,ip,nw_dst=10.0.0.0/24,idle_timeout=10,actions=output:2");
    let stats = FlowStatsView {
        duration_s: 12.3,
        packets: 10,
        bytes: 980,
        idle_age_s: None,
    };
    assert_eq!(
        format_flow(&s, Some(stats), &ports()).to_string(),
        " cookie=0x0, duration=12.3s, table=0, n_packets=10, n_bytes=980, idle_timeout=10, \
         priority=100,ip,nw_dst=10.0.0.0/24 actions=output:2"
    );
    let stats = FlowStatsView {
        duration_s: 3.0,
        packets: 1,
        bytes: 2,
        idle_age_s: Some(2.7),
    };
    let d = one("actions=drop");
    assert_eq!(
        format_flow(&d, Some(stats), &ports()).to_string(),
        " cookie=0x0, duration=3s, table=0, n_packets=1, n_bytes=2, idle_age=2, actions=drop"
    );
    let s = one("table=2,cookie=0xab,hard_timeout=5,tcp,tp_dst=80,actions=output:veth12");
    assert_eq!(
        format_flow(&s, None, &ports()).to_string(),
        " cookie=0xab, table=2, hard_timeout=5, tcp,tp_dst=80 actions=output:veth12"
    );
}

/// Canonical texts print back unchanged.
#[test]
fn canonical_matches() {
    for text in [
        "tcp,nw_src=10.0.0.0/8,nw_dst=10.1.2.3,tp_dst=80",
        "in_port=veth12,dl_vlan=10,dl_vlan_pcp=3,dl_src=02:00:00:00:00:01",
        "vlan_tci=0",
        "vlan_vid=0x1000/0x1000,dl_vlan_pcp=5",
        "vlan_tci=0x2000/0xe000",
        "dl_type=0x88cc",
        "arp,arp_spa=10.0.0.1,arp_op=1,arp_sha=02:00:00:00:00:01",
        "icmp,icmp_type=8,icmp_code=0",
        "icmp6,icmp_type=135",
        "ipv6,ipv6_src=fd00::/64,ipv6_label=0x12345",
        "ip,nw_proto=47,nw_frag=first",
        "tcp6,tcp_flags=+syn-ack",
        "tcp,tcp_flags=0x002",
        "ip,nw_src=10.0.0.0/255.0.255.0",
        "dl_dst=01:00:00:00:00:00/01:00:00:00:00:00",
        "ct_state=+new-est+trk,ct_zone=5,ct_mark=0x1/0xff,reg0=0x10/0xf0,reg3=7,metadata=0x5",
        "tun_id=100,tun_src=192.168.0.1",
        "ct_label=0x1/0xffffffffffffffff0000000000000001",
        "",
    ] {
        let m = parse_match(text, &ports()).unwrap_or_else(|e| panic!("{}", e.render(text)));
        assert_eq!(format_match(&m, &ports()).to_string(), text);
    }
}

#[test]
fn canonical_actions() {
    for text in [
        "output:veth12,output:3,in_port,flood,normal",
        "drop",
        "set_field:10.0.0.1->ip_dst,set_field:10.0.0.0/8->ip_src",
        "load:0x5->reg0[16..31],load:0x1->reg1[3],set_field:0x1/0x11->reg2,set_field:7->reg3",
        "set_field:02:00:00:00:00:00/ff:ff:ff:00:00:00->eth_dst",
        "move:eth_src[]->eth_dst[],move:reg0[0..15]->reg1[16..31]",
        "mod_vlan_vid:10,set_field:5->vlan_vid,dec_ttl,push_vlan:0x8100,pop_vlan",
        "resubmit(,3),resubmit(veth12,4),resubmit:2,group:7",
        "ct(commit,zone=5,table=2,nat(src=10.0.0.1-10.0.0.5:1000-2000),exec(set_field:0x1/0x3->ct_mark,set_field:0x2->ct_label))",
        "ct(zone=reg5[0..15],nat),ct,ct(nat(dst=[fd00::1]:80)),ct(nat(src))",
        "encap(vxlan),decap(table=0),decap(table=3)",
        "punt:arp_responder(02:00:00:00:00:01),punt:icmp_echo_reply",
        "note:\"hello, world\",note:01.02.ff,note:",
        "goto_table:5",
    ] {
        let flow = format!("ip,actions={text}");
        let a = actions(&flow);
        assert_eq!(format_actions(&a, &ports()).to_string(), text);
    }
}

#[test]
fn canonical_groups() {
    for text in [
        "group_id=1,type=select,selection_method=hash,fields(ip_src,tp_src),bucket=weight:10,actions=output:3,bucket=weight:1,actions=output:veth12",
        "group_id=7,type=all,bucket=actions=output:3,bucket=actions=drop",
        "group_id=8,type=select",
    ] {
        let g = parse_group(text, &ports()).unwrap_or_else(|e| panic!("{}", e.render(text)));
        assert_eq!(format_group(&g, &ports()).to_string(), text);
    }
}

/// Matches built in code without their prerequisites still print every bit.
#[test]
fn formatting_without_prerequisites() {
    let mut m = Match::ANY;
    m.set_exact(Field::TpDst, 80);
    m.set_exact(Field::Ipv4Src, 1);
    assert_eq!(
        format_match(&m, &NoPortNames).to_string(),
        "nw_src=0.0.0.1,tp_dst=80"
    );
}

/// Specs built in code (not parsed) may be nonsense; printing them must not panic.
#[test]
fn formatting_nonsense_actions_does_not_panic() {
    let nonsense = [
        Action::Move {
            src: Field::Reg0,
            src_ofs: u32::MAX,
            dst: Field::Reg1,
            dst_ofs: 7,
            n_bits: u32::MAX,
        },
        Action::SetField {
            field: Field::Reg0,
            value: u128::MAX,
            mask: 0,
        },
        Action::SetField {
            field: Field::CtLabel,
            value: u128::MAX,
            mask: 1 << 127,
        },
        Action::Resubmit {
            in_port: None,
            table: None,
        },
        Action::Ct(CtAction {
            commit: false,
            zone: CtZone::Field(Field::EthSrc),
            table: Some(255),
            nat: Some(NatSpec {
                kind: None,
                addr_min: None,
                addr_max: None,
                port_min: Some(1),
                port_max: None,
            }),
            set_mark: Some((5, 0)),
            set_label: None,
        }),
        Action::Drop,
    ];
    let text = format_actions(&nonsense, &NoPortNames).to_string();
    assert!(text.contains("load:0x1->ct_label[127]"), "{text}");
}

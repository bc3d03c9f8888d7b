use super::*;
use crate::flow::spec::NatSpec;
use std::net::Ipv4Addr;
use std::sync::Arc;

const S: u64 = 1_000_000_000;

fn pkt(proto: u8, src: u32, dst: u32, sp: u16, dp: u16, flags: u16) -> Key {
    let mut k = Key::ZERO;
    Field::EthType.set(&mut k, 0x0800);
    Field::IpProto.set(&mut k, u128::from(proto));
    Field::Ipv4Src.set(&mut k, u128::from(src));
    Field::Ipv4Dst.set(&mut k, u128::from(dst));
    Field::TpSrc.set(&mut k, u128::from(sp));
    Field::TpDst.set(&mut k, u128::from(dp));
    Field::TcpFlags.set(&mut k, u128::from(flags));
    k
}

fn req(commit: bool) -> CtRequest<'static> {
    CtRequest {
        zone: 1,
        commit,
        nat: None,
        set_mark: commit.then_some((7, 0xff)),
        set_label: None,
    }
}

fn st(k: &Key) -> u8 {
    Field::CtState.get(k) as u8
}

use ct_state::*;
use tcp::flags::*;

#[test]
fn udp_new_reply_established_and_timeouts() {
    let ct = Conntrack::default();
    let i = PacketInfo::default();
    let mut k = pkt(17, 1, 2, 1000, 53, 0);
    ct.process(&mut k, &req(false), &i, 1);
    assert_eq!(st(&k), TRK | NEW);
    assert!(ct.table.is_empty(), "not committed, not remembered");
    ct.process(&mut k, &req(true), &i, 2);
    assert_eq!(Field::CtMark.get(&k), 7);
    let c = ct.table.collect(|_| true);
    assert_eq!(c[0].timeout_s, 30, "unreplied");
    let mut r = pkt(17, 2, 1, 53, 1000, 0);
    ct.process(&mut r, &req(false), &i, 3);
    assert_eq!(st(&r), TRK | EST | RPL);
    assert_eq!(Field::CtMark.get(&r), 7);
    let c = ct.table.collect(|_| true);
    assert_eq!(c[0].timeout_s, 180, "assured");
    assert_eq!(state_name(&c[0]), "ASSURED");
    assert_eq!(ct.table.expire_some(3 + 181 * S, 4096), 1);
    assert!(ct.table.is_empty());
}

#[test]
fn tcp_state_machine_through_the_table() {
    let ct = Conntrack::default();
    let i = PacketInfo::default();
    let mut k = pkt(6, 1, 2, 40000, 80, SYN);
    ct.process(&mut k, &req(true), &i, 1);
    assert_eq!(st(&k), TRK | NEW);
    let name = |ct: &Conntrack| state_name(&ct.table.collect(|_| true)[0]);
    assert_eq!(name(&ct), "SYN_SENT");
    let mut r = pkt(6, 2, 1, 80, 40000, SYN | ACK);
    ct.process(&mut r, &req(false), &i, 2);
    assert_eq!(st(&r), TRK | EST | RPL);
    assert_eq!(name(&ct), "SYN_RECV");
    let mut a = pkt(6, 1, 2, 40000, 80, ACK);
    ct.process(&mut a, &req(false), &i, 3);
    assert_eq!(name(&ct), "ESTABLISHED");
    assert!(ct.table.collect(|_| true)[0].has(cflag::ASSURED));
    // A SYN in the middle of an established connection is invalid.
    let mut bad = pkt(6, 1, 2, 40000, 80, SYN);
    ct.process(&mut bad, &req(false), &i, 4);
    assert_eq!(st(&bad), TRK | INV);
    let mut f = pkt(6, 1, 2, 40000, 80, FIN | ACK);
    ct.process(&mut f, &req(false), &i, 5);
    assert_eq!(name(&ct), "FIN_WAIT");
    let mut f2 = pkt(6, 2, 1, 80, 40000, FIN | ACK);
    ct.process(&mut f2, &req(false), &i, 6);
    assert_eq!(name(&ct), "TIME_WAIT");
    // Reopened by a new SYN.
    let mut s2 = pkt(6, 1, 2, 40000, 80, SYN);
    ct.process(&mut s2, &req(true), &i, 7);
    assert_eq!(st(&s2), TRK | NEW);
    assert_eq!(name(&ct), "SYN_SENT");
    // No connection and not a SYN or ACK: invalid.
    let mut rst = pkt(6, 5, 6, 1, 2, RST);
    ct.process(&mut rst, &req(true), &i, 8);
    assert_eq!(st(&rst), TRK | INV);
    assert!(ct.table.counters.invalid.load(Ordering::Relaxed) >= 2);
}

#[test]
fn dnat_both_ways_and_zones() {
    let ct = Conntrack::default();
    let i = PacketInfo::default();
    let vip = u32::from(Ipv4Addr::new(10, 96, 0, 1));
    let be = u32::from(Ipv4Addr::new(10, 244, 0, 5));
    let cl = u32::from(Ipv4Addr::new(10, 244, 0, 9));
    let mut k = pkt(6, cl, vip, 5555, 80, SYN);
    let lb = LbChoice {
        service: 1,
        backend: 0,
        dst: (u128::from(be), 8080),
        snat: None,
        hairpin: false,
        label: 0,
    };
    let v = ct.commit_lb(&mut k, 1, &i, &lb, 1).expect("committed");
    assert_eq!(v.xlate.dst, Some((u128::from(be), 8080)));
    assert_eq!(v.xlate.src, None);
    assert_eq!(st(&k), TRK | NEW | DNAT);
    // The reply from the endpoint is translated back to the VIP.
    let mut r = pkt(6, be, cl, 8080, 5555, SYN | ACK);
    let v = ct.process(&mut r, &req(false), &i, 2);
    assert_eq!(v.xlate.src, Some((u128::from(vip), 80)));
    assert!(v.reply);
    assert_eq!(st(&r), TRK | EST | RPL | DNAT);
    // Further packets of the client are DNATed by the connection.
    let mut a = pkt(6, cl, vip, 5555, 80, ACK);
    let v = ct.process(&mut a, &req(false), &i, 3);
    assert_eq!(v.xlate.dst, Some((u128::from(be), 8080)));
    // Another zone does not see it.
    let mut z = pkt(6, cl, vip, 5555, 80, ACK);
    let mut r2 = req(false);
    r2.zone = 2;
    ct.process(&mut z, &r2, &i, 4);
    assert_eq!(st(&z), TRK | NEW);
}

#[test]
fn ct_commit_with_static_nat() {
    let ct = Conntrack::default();
    let i = PacketInfo::default();
    let nat = NatSpec {
        kind: Some(NatKind::Src),
        addr_min: Some(IpAddr::V4(Ipv4Addr::new(192, 168, 0, 1))),
        addr_max: None,
        port_min: None,
        port_max: None,
    };
    let mut k = pkt(17, 1, 2, 10, 20, 0);
    let r = CtRequest {
        zone: 0,
        commit: true,
        nat: Some(&nat),
        set_mark: None,
        set_label: None,
    };
    let v = ct.process(&mut k, &r, &i, 1);
    assert_eq!(v.xlate.src, Some((0xc0a8_0001, 10)));
    let mut back = pkt(17, 2, 0xc0a8_0001, 20, 10, 0);
    let v = ct.process(&mut back, &req(false), &PacketInfo::default(), 2);
    let mut back0 = back;
    Field::CtZone.set(&mut back0, 0);
    let _ = v;
    let v = ct.process(
        &mut back0,
        &CtRequest {
            zone: 0,
            commit: false,
            nat: None,
            set_mark: None,
            set_label: None,
        },
        &i,
        3,
    );
    assert_eq!(v.xlate.dst, Some((1, 10)));
}

#[test]
fn icmp_echo_by_id_and_errors_related() {
    let ct = Conntrack::default();
    let mut k = pkt(1, 1, 2, 8, 0, 0);
    let echo = PacketInfo {
        icmp_id: Some(77),
        icmp_inner: None,
    };
    ct.process(&mut k, &req(true), &echo, 1);
    let mut r = pkt(1, 2, 1, 0, 0, 0);
    ct.process(&mut r, &req(false), &echo, 2);
    assert_eq!(st(&r), TRK | EST | RPL);
    let other = PacketInfo {
        icmp_id: Some(78),
        icmp_inner: None,
    };
    let mut r2 = pkt(1, 2, 1, 0, 0, 0);
    ct.process(&mut r2, &req(false), &other, 3);
    assert_eq!(st(&r2), TRK | NEW, "another id is another connection");
    // UDP to a service, endpoint answers port unreachable: related, translated.
    let lb = LbChoice {
        service: 1,
        backend: 0,
        dst: (50, 5353),
        snat: None,
        hairpin: false,
        label: 0,
    };
    let mut u = pkt(17, 9, 100, 4000, 53, 0);
    ct.commit_lb(&mut u, 1, &PacketInfo::default(), &lb, 1)
        .expect("lb");
    let quoted = Tuple {
        src: tuple::addr_words(9),
        dst: tuple::addr_words(50),
        sport: 4000,
        dport: 5353,
        zone: 0,
        proto: 17,
        v6: false,
    };
    let mut e = pkt(1, 50, 9, 3, 3, 0);
    let v = ct.process(
        &mut e,
        &req(false),
        &PacketInfo {
            icmp_id: None,
            icmp_inner: Some(quoted),
        },
        2,
    );
    assert_eq!(st(&e), TRK | REL | RPL);
    assert_eq!(v.xlate.src, Some((100, 53)), "outer source back to the VIP");
    assert_eq!(
        v.inner.dst,
        Some((100, 53)),
        "quoted destination back to the VIP"
    );
    // An error quoting nothing we know is invalid.
    let mut e2 = pkt(1, 50, 9, 3, 3, 0);
    let mut q2 = quoted;
    q2.sport = 1;
    ct.process(
        &mut e2,
        &req(false),
        &PacketInfo {
            icmp_id: None,
            icmp_inner: Some(q2),
        },
        2,
    );
    assert_eq!(st(&e2), TRK | INV);
}

#[test]
fn full_table_evicts_oldest_unassured_and_counts() {
    let ct = Conntrack::new(CtConfig {
        max_entries: 64,
        ..CtConfig::default()
    });
    let i = PacketInfo::default();
    for n in 0..200u16 {
        let mut k = pkt(17, 1, 2, n, 53, 0);
        ct.process(&mut k, &req(true), &i, u64::from(n) + 1);
    }
    assert!(ct.table.len() <= 64, "bounded: {}", ct.table.len());
    assert!(ct.table.counters.evictions.load(Ordering::Relaxed) >= 136);
    // The newest survives.
    let mut k = pkt(17, 1, 2, 199, 53, 0);
    ct.process(&mut k, &req(false), &i, 300);
    assert_eq!(st(&k), TRK | NEW);
    assert!(ct.table.collect(|c| c.orig.sport == 199).len() == 1);
}

#[test]
fn assured_are_not_evicted() {
    let ct = Conntrack::new(CtConfig {
        max_entries: 16,
        ..CtConfig::default()
    });
    let i = PacketInfo::default();
    for n in 0..16u16 {
        let mut k = pkt(17, 1, 2, n, 53, 0);
        ct.process(&mut k, &req(true), &i, 1);
        let mut r = pkt(17, 2, 1, 53, n, 0);
        ct.process(&mut r, &req(false), &i, 2);
    }
    let mut k = pkt(17, 1, 2, 999, 53, 0);
    ct.process(&mut k, &req(true), &i, 3);
    assert_eq!(ct.table.len(), 16);
    assert_eq!(ct.table.counters.insert_failed.load(Ordering::Relaxed), 1);
}

#[test]
fn directions_on_different_threads() {
    let ct = Arc::new(Conntrack::default());
    let i = PacketInfo::default();
    for n in 0..1000u16 {
        let mut k = pkt(17, 1, 2, n, 53, 0);
        ct.process(&mut k, &req(true), &i, 1);
    }
    let c2 = ct.clone();
    let h = std::thread::spawn(move || {
        let mut ok = 0;
        for n in 0..1000u16 {
            let mut r = pkt(17, 2, 1, 53, n, 0);
            c2.process(&mut r, &req(false), &PacketInfo::default(), 2);
            if st(&r) == TRK | EST | RPL {
                ok += 1;
            }
        }
        ok
    });
    assert_eq!(h.join().expect("thread"), 1000);
}

#[test]
fn remove_where_drops_both_directions() {
    let ct = Conntrack::default();
    let i = PacketInfo::default();
    let lb = LbChoice {
        service: 3,
        backend: 1,
        dst: (50, 53),
        snat: None,
        hairpin: false,
        label: 0,
    };
    let mut u = pkt(17, 9, 100, 4000, 53, 0);
    ct.commit_lb(&mut u, 1, &i, &lb, 1).expect("lb");
    assert_eq!(
        ct.table.remove_where(|c| c.service == 3 && c.backend == 1),
        1
    );
    let mut r = pkt(17, 50, 9, 53, 4000, 0);
    ct.process(&mut r, &req(false), &i, 2);
    assert_eq!(st(&r), TRK | NEW);
    assert!(ct.table.is_empty());
}

#[test]
fn bytes_per_entry_under_256() {
    let ct = Conntrack::new(CtConfig {
        max_entries: 1 << 16,
        ..CtConfig::default()
    });
    let i = PacketInfo::default();
    let n = 50_000u32;
    for x in 0..n {
        let mut k = pkt(17, x, 2, (x & 0xffff) as u16, 53, 0);
        ct.process(&mut k, &req(true), &i, 1);
    }
    let per = ct.table.memory_bytes() / ct.table.len();
    eprintln!("conntrack: {per} bytes per connection");
    assert!(per < 256, "{per} bytes per connection");
}

/// A load-balanced connection from client `c` (port `sp`) to backend `b`
/// (10.50.0.b:8080) of service `svc`, inserted straight into the table.
fn lb_conn(c: u32, sp: u16, svc: u32, b: u32, now: u64) -> Conn {
    let orig = tuple::Tuple {
        src: [0, 0, 0, 0x0a01_0000 | c],
        dst: [0, 0, 0, 0x0a60_0000 | svc],
        sport: sp,
        dport: 80,
        zone: 1,
        proto: 6,
        v6: false,
    };
    let mut reply = orig.reversed();
    reply.src = [0, 0, 0, 0x0a32_0000 | b];
    reply.sport = 8080;
    let mut conn = Conn::new(orig, reply, now, 60);
    conn.service = svc;
    conn.backend = b;
    conn.flags |= table::cflag::DNAT;
    conn
}

fn be_key(svc: u32, b: u32) -> table::BackendKey {
    table::BackendKey {
        service: svc,
        addr: [0, 0, 0, 0x0a32_0000 | b],
        port: 8080,
    }
}

/// Removing one endpoint's connections through the backend index takes all of
/// them (both directions forgotten) and nothing else, also after other
/// connections of the same backend were removed, expired or evicted and their
/// slots reused.
#[test]
fn remove_backends_takes_that_endpoints_connections_only() {
    let ct = Conntrack::new(CtConfig {
        max_entries: 1 << 12,
        ..CtConfig::default()
    });
    let t = &ct.table;
    // 3 services x 4 backends x 100 clients.
    let mut all = Vec::new();
    for svc in 1..=3u32 {
        for b in 0..4u32 {
            for c in 0..100u32 {
                let conn = lb_conn(c, (svc * 1000 + b * 100 + c) as u16, svc, b, 1);
                assert!(t.insert(conn));
                all.push(conn);
            }
        }
    }
    // Churn: remove every third connection of (2, 1) and put new ones in
    // their slots, so lists are unlinked in the middle, at the head and reused.
    for (k, c) in all.iter().enumerate() {
        if c.service == 2 && c.backend == 1 && k % 3 == 0 {
            assert!(t.remove(&c.orig));
        }
    }
    for c in 0..40u32 {
        assert!(t.insert(lb_conn(c, 50_000 + c as u16, 2, 1, 2)));
    }
    let before = t.len();
    let of = |svc: u32, b: u32| t.collect(|c| c.service == svc && c.backend == b).len();
    let n21 = of(2, 1);
    assert_eq!(n21, 100 - 33 + 40, "indices 500..600: 33 multiples of 3");
    assert_eq!(t.remove_backends(&[be_key(2, 1)]), n21);
    assert_eq!(of(2, 1), 0);
    assert_eq!(t.len(), before - n21);
    // Everything else is untouched: same backend address under another
    // service, other backends of the service.
    for svc in 1..=3u32 {
        for b in 0..4u32 {
            if (svc, b) != (2, 1) {
                assert_eq!(of(svc, b), 100, "service {svc} backend {b}");
            }
        }
    }
    // Removed connections are forgotten in both directions.
    let gone = lb_conn(5, 2105, 2, 1, 1);
    assert!(
        t.lookup(&gone.reply, 3, |_, _| true).is_none(),
        "reply side"
    );
    assert!(
        t.lookup(&gone.orig, 3, |_, _| true).is_none(),
        "original side"
    );
    let kept = lb_conn(5, 2005, 2, 0, 1);
    assert!(
        t.lookup(&kept.reply, 3, |_, _| true)
            .is_some_and(|f| f.reply)
    );
    // Two backends at once; an unknown one removes nothing.
    assert_eq!(t.remove_backends(&[be_key(1, 0), be_key(3, 3)]), 200);
    assert_eq!(t.remove_backends(&[be_key(9, 9)]), 0);
    assert_eq!(t.len(), before - n21 - 200);
    // Expiry and eviction keep the index consistent: expire all of (1, 1),
    // then the backend removal finds nothing and the rest still goes.
    let n = t.remove_where(|c| c.service == 1 && c.backend == 1);
    assert_eq!(n, 100);
    assert_eq!(t.remove_backends(&[be_key(1, 1)]), 0);
    let left = t.len();
    assert_eq!(left, 800);
    assert_eq!(t.expire_some(1 + 61 * S, 1 << 12), left);
    assert!(t.is_empty());
    assert_eq!(t.remove_backends(&[be_key(1, 2), be_key(3, 0)]), 0);
}

/// The index follows the connections through random inserts, removals,
/// lookups that delete and slot reuse: for every backend, `remove_backends`
/// removes exactly the live connections a full scan finds.
#[test]
fn backend_index_matches_a_full_scan_under_churn() {
    let ct = Conntrack::new(CtConfig {
        max_entries: 256,
        ..CtConfig::default()
    });
    let t = &ct.table;
    let mut x = 0x9e37_79b9u32;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x
    };
    let mut live: Vec<Conn> = Vec::new();
    for step in 0..20_000u64 {
        let r = rnd();
        if r % 4 != 0 || live.is_empty() {
            let c = lb_conn(
                rnd() % 64,
                (rnd() % 60_000) as u16,
                1 + rnd() % 3,
                rnd() % 5,
                step,
            );
            if t.insert(c) {
                live.push(c);
            }
        } else {
            let k = (rnd() as usize) % live.len();
            let c = live.swap_remove(k);
            if r % 8 == 0 {
                // A lookup that deletes (as a TCP reopen does).
                t.lookup(&c.reply, step, |_, _| false);
            } else {
                t.remove(&c.orig);
            }
        }
    }
    for svc in 1..=3u32 {
        for b in 0..5u32 {
            let want = t.collect(|c| c.service == svc && c.backend == b).len();
            assert_eq!(t.remove_backends(&[be_key(svc, b)]), want, "{svc}/{b}");
        }
    }
    assert!(t.is_empty(), "every connection was load-balanced");
}

fn icmp6(src: u128, dst: u128, ty: u8) -> Key {
    let mut k = Key::ZERO;
    Field::EthType.set(&mut k, 0x86dd);
    Field::IpProto.set(&mut k, 58);
    Field::Ipv6Src.set(&mut k, src);
    Field::Ipv6Dst.set(&mut k, dst);
    Field::IcmpType.set(&mut k, u128::from(ty));
    k
}

/// IPv6 neighbour discovery and MLD are left untracked (no `+trk`, so no
/// `+inv` drop, no entry, not counted invalid), as Linux does; an ICMPv6 type
/// that is neither, nor echo, nor an error, is still `+inv`; protocols without
/// a tracker are untracked.
#[test]
fn ipv6_neighbour_discovery_and_mld_are_untracked_not_invalid() {
    let ct = Conntrack::default();
    let i = PacketInfo::default();
    let (a, b) = (
        0xfd00_0000_0000_0000_0000_0000_0000_0001u128,
        0xfd00u128 << 112 | 2,
    );
    for ty in [130u8, 131, 132, 133, 134, 135, 136, 137, 143] {
        let mut k = icmp6(a, b, ty);
        Field::CtState.set(&mut k, u128::from(TRK | INV));
        ct.process(&mut k, &req(true), &i, 1);
        assert_eq!(st(&k), 0, "type {ty}: untracked");
        assert!(untracked(&k));
    }
    assert!(ct.table.is_empty());
    assert_eq!(ct.table.counters.invalid.load(Ordering::Relaxed), 0);
    // Echo is tracked.
    let mut e = icmp6(a, b, 128);
    let echo = PacketInfo {
        icmp_id: Some(7),
        icmp_inner: None,
    };
    ct.process(&mut e, &req(true), &echo, 1);
    assert_eq!(st(&e), TRK | NEW);
    assert_eq!(ct.table.len(), 1);
    // Node information query (139) is no ND: still invalid.
    let mut q = icmp6(a, b, 139);
    ct.process(&mut q, &req(true), &i, 1);
    assert_eq!(st(&q), TRK | INV);
    // GRE over IPv4 and IPv6: untracked.
    for v6 in [false, true] {
        let mut g = if v6 {
            icmp6(a, b, 0)
        } else {
            pkt(47, 1, 2, 0, 0, 0)
        };
        Field::IpProto.set(&mut g, 47);
        ct.process(&mut g, &req(true), &i, 1);
        assert_eq!(st(&g), 0, "gre v6={v6}");
    }
    // ICMP (v4) with type 134 is no ICMPv6 neighbour discovery.
    let mut ra4 = pkt(1, 1, 2, 0, 0, 0);
    Field::IcmpType.set(&mut ra4, 134);
    assert!(!untracked(&ra4));
    assert_eq!(ct.table.len(), 1);
}

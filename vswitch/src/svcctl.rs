//! The `conntrack` and `services` control operations: listings of the
//! connection table and of the service frontends, and conntrack flushing.

use crate::Datapath;
use crate::conntrack::{Conn, CtTable, cflag, state_name};
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use vswitch_proto::{
    CT_LIST_DEFAULT, CT_LIST_MAX, ConntrackParams, ConntrackReply, ConntrackStats, CtEntry,
    CtTupleInfo, EndpointInfo, ServiceInfo, ServicesReply,
};

fn ip_u128(a: IpAddr) -> (u128, bool) {
    match a {
        IpAddr::V4(v) => (u128::from(u32::from(v)), false),
        IpAddr::V6(v) => (u128::from(v), true),
    }
}

/// Whether `c` passes every filter of `p`.
pub fn selects(p: &ConntrackParams, c: &Conn) -> bool {
    let o = &c.orig;
    if p.zone.is_some_and(|z| z != o.zone) || p.proto.is_some_and(|pr| !pr.matches(o.proto)) {
        return false;
    }
    let addr_ok = |want: Option<IpAddr>, have: u128| {
        want.is_none_or(|a| {
            let (ip, v6) = ip_u128(a);
            v6 == o.v6 && ip == have
        })
    };
    addr_ok(p.src, o.src_ip()) && addr_ok(p.dst, o.dst_ip())
}

fn proto_name(p: u8) -> String {
    match p {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        58 => "icmpv6".into(),
        132 => "sctp".into(),
        n => n.to_string(),
    }
}

fn tuple_info(t: &crate::conntrack::Tuple) -> CtTupleInfo {
    CtTupleInfo {
        src: t.fmt_ip(t.src_ip()),
        dst: t.fmt_ip(t.dst_ip()),
        sport: t.sport,
        dport: t.dport,
    }
}

/// One connection as listed.
pub fn entry(c: &Conn, now_ns: u64) -> CtEntry {
    let left_ns =
        (u64::from(c.timeout_s) * 1_000_000_000).saturating_sub(now_ns.saturating_sub(c.last_ns));
    let mut nat = Vec::new();
    if c.has(cflag::DNAT) {
        nat.push("dnat");
    }
    if c.has(cflag::SNAT) {
        nat.push("snat");
    }
    CtEntry {
        proto: proto_name(c.orig.proto),
        zone: c.orig.zone,
        orig: tuple_info(&c.orig),
        reply: tuple_info(&c.reply),
        state: state_name(c).to_string(),
        assured: c.has(cflag::ASSURED),
        timeout_s: left_ns.div_ceil(1_000_000_000),
        mark: c.mark,
        nat: nat.join(","),
        hairpin: c.has(cflag::HAIRPIN),
        service: c.service,
    }
}

/// Lists (or flushes) the connections `p` selects.
pub fn conntrack(table: &CtTable, p: &ConntrackParams, now_ns: u64) -> ConntrackReply {
    if p.flush {
        let n = table.remove_where(|c| selects(p, c));
        return ConntrackReply {
            matched: n as u64,
            flushed: n as u64,
            ..ConntrackReply::default()
        };
    }
    let limit = p.limit.unwrap_or(CT_LIST_DEFAULT).min(CT_LIST_MAX) as usize;
    let mut matched = 0u64;
    let mut entries = Vec::new();
    let _ = table.collect(|c| {
        if selects(p, c) && !c.expired(now_ns) {
            matched += 1;
            if entries.len() < limit {
                entries.push(entry(c, now_ns));
            }
        }
        false
    });
    entries.sort_by(|a: &CtEntry, b: &CtEntry| {
        (a.zone, &a.proto, &a.orig.src, a.orig.sport).cmp(&(
            b.zone,
            &b.proto,
            &b.orig.src,
            b.orig.sport,
        ))
    });
    ConntrackReply {
        truncated: matched > entries.len() as u64,
        entries,
        matched,
        flushed: 0,
    }
}

/// The counters `stats` reports.
pub fn ct_stats(table: &CtTable) -> ConntrackStats {
    let c = &table.counters;
    ConntrackStats {
        entries: table.len() as u64,
        max_entries: table.config.max_entries as u64,
        inserts: c.inserts.load(Ordering::Relaxed),
        evictions: c.evictions.load(Ordering::Relaxed),
        invalid: c.invalid.load(Ordering::Relaxed),
        full: c.insert_failed.load(Ordering::Relaxed),
        expired: c.expired.load(Ordering::Relaxed),
    }
}

fn fmt_ip(ip: u128, v6: bool) -> String {
    if v6 {
        std::net::Ipv6Addr::from(ip).to_string()
    } else {
        std::net::Ipv4Addr::from(ip as u32).to_string()
    }
}

/// Every service frontend, by name.
pub fn services(dp: &Datapath) -> ServicesReply {
    let lb = dp.services();
    let mut services: Vec<ServiceInfo> = lb
        .values()
        .map(|fe| {
            let v6 = fe.id & (1 << 7) != 0;
            ServiceInfo {
                id: fe.id,
                name: fe.name.clone(),
                vips: fe.vips.clone(),
                endpoints: fe
                    .backends
                    .iter()
                    .map(|b| EndpointInfo {
                        addr: if v6 {
                            format!("[{}]:{}", fmt_ip(b.ip, true), b.port)
                        } else {
                            format!("{}:{}", fmt_ip(b.ip, false), b.port)
                        },
                        local: b.local,
                        hits: b.hits.load(Ordering::Relaxed),
                    })
                    .collect(),
                affinity_timeout_s: fe.affinity.as_ref().map(|a| a.timeout_ns / 1_000_000_000),
                snat: fe.snat_remote.map(|ip| fmt_ip(ip, v6)),
                maglev_size: fe.maglev.len() as u32,
            }
        })
        .collect();
    services.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
    ServicesReply { services }
}

//! Service realisation and the service datapath's building blocks:
//!
//! - `realize/*`: one change (a service added then removed; one endpoint of one
//!   service replaced) pushed through the service realizer into a real
//!   datapath (flows in a bundle, frontend map published) while it holds
//!   10,000 services x 10 endpoints (and their 100,000 pods);
//! - `conntrack/*`: insert and lookup in the shared connection table;
//! - `conntrack_flush/*`: removing one vanished endpoint's connections from a
//!   table of 1M, through the backend index and by the old full scan;
//! - `maglev/*`: building one service's Maglev table.
//!
//!     cargo bench --bench services
//!
//! Figures in docs/benchmarks.md.

use criterion::{Criterion, criterion_group, criterion_main};
use std::collections::{BTreeMap, BTreeSet};
use std::hint::black_box;
use std::time::{Duration, Instant};
use vswitch::conntrack::config::CtConfig;
use vswitch::conntrack::table::{BackendKey, Conn, CtTable};
use vswitch::conntrack::tuple::Tuple;
use vswitch::desired::realize::{Change, RealizeCtx, Realizer};
use vswitch::services::maglev;
use vswitch::services::realize::{ServiceRealizer, ServicesConfig};
use vswitch::{Datapath, DatapathConfig};
use vswitch_proto::model::{Object, ObjectKey};
use vswitch_proto::{ChangeSet, DesiredState};

const SERVICES: u32 = 10_000;
const ENDPOINTS: u32 = 10;

fn obj(v: serde_json::Value) -> Object {
    serde_json::from_value(v).expect("object")
}

/// The `i`-th endpoint address of service `s`: 10.(s / 256 + 100 ...) unique.
fn ep_ip(s: u32, i: u32) -> String {
    let n = s * ENDPOINTS + i;
    format!("10.{}.{}.{}", 64 + (n >> 16), (n >> 8) & 255, n & 255)
}

fn service(s: u32) -> Object {
    obj(serde_json::json!({
        "kind": "Service", "namespace": "bench", "name": format!("svc-{s}"),
        "cluster_ips": [format!("172.{}.{}.{}", 16 + (s >> 16), (s >> 8) & 255, s & 255)],
        "ports": [{"name": "http", "port": 80, "protocol": "TCP", "target_port": 8080}],
    }))
}

fn endpoints(s: u32, ips: &[String]) -> Object {
    let eps: Vec<serde_json::Value> = ips
        .iter()
        .map(|ip| {
            serde_json::json!({"addresses": [ip], "ready": true, "serving": true,
                "terminating": false, "node_name": "node-a",
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]})
        })
        .collect();
    obj(serde_json::json!({
        "kind": "Endpoints", "namespace": "bench", "name": format!("svc-{s}"),
        "endpoints": eps,
    }))
}

fn pod(s: u32, i: u32) -> Object {
    obj(serde_json::json!({
        "kind": "Pod", "namespace": "bench", "name": format!("pod-{s}-{i}"),
        "ips": [ep_ip(s, i)], "node_name": "node-a", "local": true,
    }))
}

struct World {
    dp: Datapath,
    r: ServiceRealizer,
    state: DesiredState,
}

impl World {
    /// Applies `objs` (upserts) and `gone` (deletes) to the state and realises
    /// the change.
    fn sync(&mut self, objs: Vec<Object>, gone: Vec<ObjectKey>) {
        let mut keys = ChangeSet::default();
        let mut previous = BTreeMap::new();
        for o in objs {
            let k = o.key();
            if let Some(p) = self.state.upsert(o) {
                previous.insert(k.clone(), p);
            }
            keys.upserted.insert(k);
        }
        for k in gone {
            if let Some(p) = self.state.remove(&k) {
                previous.insert(k.clone(), p);
            }
            keys.deleted.insert(k);
        }
        let change = Change {
            keys,
            previous,
            generation: 0,
        };
        let ports = Vec::new();
        let mut ctx = RealizeCtx {
            ports: &ports,
            dp: Some(&mut self.dp),
        };
        self.r.realize(&self.state, &change, &mut ctx);
    }
}

fn world() -> World {
    let mut w = World {
        dp: Datapath::new(DatapathConfig::in_process(1)).expect("datapath"),
        r: ServiceRealizer::new(ServicesConfig::default()),
        state: DesiredState::new(),
    };
    let mut objs = vec![obj(serde_json::json!({
        "kind": "LocalNode", "name": "node-a", "pod_cidrs": ["10.64.0.0/10"],
        "node_ips": ["192.0.2.1"], "gateway_mac": "0a:58:0a:40:00:01",
    }))];
    for s in 0..SERVICES {
        let ips: Vec<String> = (0..ENDPOINTS).map(|i| ep_ip(s, i)).collect();
        for i in 0..ENDPOINTS {
            objs.push(pod(s, i));
        }
        objs.push(service(s));
        objs.push(endpoints(s, &ips));
    }
    let t = Instant::now();
    w.sync(objs, Vec::new());
    eprintln!(
        "initial realisation of {SERVICES} services x {ENDPOINTS} endpoints: {:?}, {} frontends",
        t.elapsed(),
        w.r.frontends().count()
    );
    w
}

fn realize(c: &mut Criterion) {
    let mut w = world();
    let mut g = c.benchmark_group("realize");
    g.sample_size(30).measurement_time(Duration::from_secs(8));
    // One more service (with its 10 endpoints) appears, then goes.
    let extra = SERVICES + 1;
    let ips: Vec<String> = (0..ENDPOINTS).map(|i| ep_ip(extra, i)).collect();
    g.bench_function("service_add_then_remove_10k_x_10", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let add = vec![service(extra), endpoints(extra, &ips)];
                let t = Instant::now();
                w.sync(add, Vec::new());
                let gone = vec![service(extra).key(), endpoints(extra, &ips).key()];
                w.sync(Vec::new(), gone);
                total += t.elapsed();
            }
            total
        })
    });
    // One endpoint of one service is replaced by another address.
    let s = SERVICES / 2;
    let base: Vec<String> = (0..ENDPOINTS).map(|i| ep_ip(s, i)).collect();
    let mut alt = base.clone();
    alt[0] = ep_ip(extra + 1, 0);
    let mut flip = false;
    g.bench_function("endpoint_change_10k_x_10", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                flip = !flip;
                let e = endpoints(s, if flip { &alt } else { &base });
                let t = Instant::now();
                w.sync(vec![e], Vec::new());
                total += t.elapsed();
            }
            total
        })
    });
    g.finish();
    let fe: BTreeSet<u32> = w.r.frontends().map(|f| f.id).collect();
    assert_eq!(fe.len(), SERVICES as usize, "frontends after the bench");
}

fn tuple(i: u32) -> Tuple {
    Tuple {
        src: [0, 0, 0, 0x0afa_0000 | (i >> 16)],
        dst: [0, 0, 0, 0x0a60_000a],
        sport: i as u16,
        dport: 80,
        zone: 1,
        proto: 6,
        v6: false,
    }
}

fn conntrack(c: &mut Criterion) {
    let mut g = c.benchmark_group("conntrack");
    const N: u32 = 100_000;
    let cfg = CtConfig::default();
    let t = CtTable::new(cfg);
    for i in 0..N {
        let o = tuple(i);
        t.insert(Conn::new(o, o.reversed(), 1, 3600));
    }
    let mut i = 0u32;
    g.bench_function("lookup_hit_100k", |b| {
        b.iter(|| {
            i = (i + 7919) % N;
            black_box(t.lookup(&tuple(i), 2, |_, _| true).is_some())
        })
    });
    g.bench_function("lookup_reply_direction_100k", |b| {
        b.iter(|| {
            i = (i + 7919) % N;
            black_box(t.lookup(&tuple(i).reversed(), 2, |_, _| true).is_some())
        })
    });
    // Insert then remove (so the table stays at N entries).
    let mut j = N;
    g.bench_function("insert_remove_100k", |b| {
        b.iter(|| {
            j = if j >= 4 * N { N } else { j + 1 };
            let o = tuple(j);
            black_box(t.insert(Conn::new(o, o.reversed(), 2, 3600)));
            black_box(t.remove(&o))
        })
    });
    g.finish();
}

/// Connection `i` of the flush bench: client 10.250.x.y:port to the VIP of
/// service `1 + i / 100` (frontend id), DNATed to backend `i % 10` of that
/// service (10.64.s.b:8080): 1M connections = 10k services x 10 endpoints x
/// 10 connections.
fn lb_conn(i: u32) -> Conn {
    let svc = 1 + i / 100;
    let b = i % 10;
    let orig = Tuple {
        src: [0, 0, 0, 0x0afa_0000 | (i >> 16)],
        dst: [0, 0, 0, 0xac10_0000 | svc],
        sport: i as u16,
        dport: 80,
        zone: 1,
        proto: 6,
        v6: false,
    };
    let mut reply = orig.reversed();
    reply.src = [0, 0, 0, 0x0a40_0000 | (svc << 4) | b];
    reply.sport = 8080;
    let mut c = Conn::new(orig, reply, 1, 3600);
    c.service = svc;
    c.backend = b;
    c
}

fn backend_key(c: &Conn) -> BackendKey {
    BackendKey {
        service: c.service,
        addr: c.reply.src,
        port: c.reply.sport,
    }
}

/// Removing the connections of one vanished endpoint (10 of them) from a table
/// of 1M: the backend index (`remove_backends`) against the scan it replaced
/// (`remove_where`). Each iteration puts the 10 connections back (same cost in
/// both).
fn conntrack_flush(c: &mut Criterion) {
    let mut g = c.benchmark_group("conntrack_flush");
    g.sample_size(20);
    const N: u32 = 1_000_000;
    let t = CtTable::new(CtConfig {
        max_entries: 2 * N as usize,
        ..CtConfig::default()
    });
    for i in 0..N {
        assert!(t.insert(lb_conn(i)), "insert {i}");
    }
    assert_eq!(t.len(), N as usize);
    // Backend 3 of service 4242: connections 424_103, 424_113, ... 424_193.
    let victims: Vec<Conn> = (0..10).map(|k| lb_conn(424_103 + 10 * k)).collect();
    let key = backend_key(&victims[0]);
    let put_back = |t: &CtTable| {
        for v in &victims {
            t.insert(*v);
        }
    };
    g.bench_function("remove_endpoint_index_1m", |b| {
        b.iter(|| {
            let n = t.remove_backends(&[key]);
            assert_eq!(n, 10);
            put_back(&t);
        })
    });
    g.bench_function("remove_endpoint_scan_1m", |b| {
        b.iter(|| {
            let n = t.remove_where(|c| {
                c.service == key.service && c.reply.src == key.addr && c.reply.sport == key.port
            });
            assert_eq!(n, 10);
            put_back(&t);
        })
    });
    g.finish();
    assert_eq!(t.len(), N as usize);
}

fn maglev_build(c: &mut Criterion) {
    let mut g = c.benchmark_group("maglev");
    for n in [10usize, 100] {
        let names: Vec<String> = (0..n)
            .map(|i| format!("10.1.{}.{}:8080", i / 256, i % 256))
            .collect();
        let m = maglev::size_for(n, maglev::DEFAULT_SIZE);
        g.bench_function(format!("build_{n}_endpoints_m{m}"), |b| {
            b.iter(|| black_box(maglev::build(black_box(&names), m)))
        });
    }
    let names: Vec<String> = (0..10).map(|i| format!("10.1.0.{i}:8080")).collect();
    g.bench_function("build_10_endpoints_m16381", |b| {
        b.iter(|| black_box(maglev::build(black_box(&names), 16381)))
    });
    g.finish();
}

criterion_group!(benches, realize, conntrack, conntrack_flush, maglev_build);
criterion_main!(benches);

//! NetworkPolicy engine at scale: 1k pods (10 namespaces, 100 apps, 50 teams) and 0,
//! 100, 1k, 10k policies, each selecting one app (10 pods) and allowing ingress from
//! one team in every namespace on one of 20 ports; at 10k, 100 policies select
//! every pod.
//!
//! `cargo bench --bench policy -- --measurement-time 2 --warm-up-time 1`
//!
//! - `policy_verdict/N`: one verdict (what `policy(ingress)` does on the first
//!   packet of a connection), over a fixed mix of 1024 packets (allowed and denied).
//! - `policy_pod_relabel/N`: a pod label change realised: the compiler moves the
//!   pod between address groups and policies and the engine is published (shallow
//!   clone, as the realizer stores it for the workers; the previous one stays
//!   alive meanwhile, as in the daemon, so copy-on-write copies are paid).
//!
//! - `policy_verdict_ipblock/N`: one verdict for a pod selected by N policies
//!   whose rules all admit one ipBlock (a /24 minus its upper /25) on port 80,
//!   the peers drawn from all those blocks (half allowed): the cost of finding
//!   the block that holds the peer among N in one port slot.
//!
//! Memory (live heap bytes, counted by this binary's allocator) is printed to
//! stderr: per policy (its rule, groups share, and the pods' rule indexes), and per
//! address-group member.

use criterion::{BenchmarkId, Criterion, Throughput};
use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicIsize, Ordering};
use vswitch::policy::compile::Compiler;
use vswitch::policy::{Dir, Packet, v4};
use vswitch_proto::model::*;

/// Live heap bytes.
struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        // SAFETY: same layout contract as ours.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        // SAFETY: `p` came from `alloc` with `l`.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

const PODS: usize = 1000;

fn sel(k: &str, v: String) -> LabelSelector {
    LabelSelector {
        match_labels: [(k.to_string(), v)].into(),
        ..LabelSelector::default()
    }
}

fn pod(i: usize, app: usize) -> Pod {
    Pod {
        namespace: format!("ns{}", i % 10),
        name: format!("pod{i}"),
        uid: String::new(),
        labels: [
            ("app".to_string(), format!("app{app}")),
            ("team".to_string(), format!("t{}", i % 50)),
        ]
        .into(),
        ips: vec![std::net::Ipv4Addr::from(0x0a00_0000 + i as u32).to_string()],
        mac: None,
        node_name: None,
        local: true,
        host_network: false,
        phase: None,
        host_ifname: None,
        ports: vec![],
    }
}

fn policy(i: usize) -> NetworkPolicy {
    NetworkPolicy {
        namespace: format!("ns{}", i % 10),
        name: format!("p{i}"),
        spec: NetworkPolicySpec {
            pod_selector: sel("app", format!("app{}", i % 100)),
            ingress: vec![IngressRule {
                from: vec![PolicyPeer {
                    pod_selector: Some(sel("team", format!("t{}", i % 50))),
                    namespace_selector: Some(LabelSelector::default()),
                    ..PolicyPeer::default()
                }],
                ports: vec![PolicyPort {
                    protocol: None,
                    port: Some(PortRef::Number(80 + (i % 20) as i32)),
                    end_port: None,
                }],
            }],
            ..NetworkPolicySpec::default()
        },
    }
}

/// Policy `i` of the ipBlock bench: pods app0 of ns0 admit 11.a.b.0/24 (i =
/// a * 256 + b) except its upper half, on TCP 80.
fn block_policy(i: usize) -> NetworkPolicy {
    let net = format!("11.{}.{}", i >> 8, i & 255);
    NetworkPolicy {
        namespace: "ns0".into(),
        name: format!("b{i}"),
        spec: NetworkPolicySpec {
            pod_selector: sel("app", "app0".into()),
            ingress: vec![IngressRule {
                from: vec![PolicyPeer {
                    ip_block: Some(IpBlock {
                        cidr: format!("{net}.0/24"),
                        except: vec![format!("{net}.128/25")],
                    }),
                    ..PolicyPeer::default()
                }],
                ports: vec![PolicyPort {
                    protocol: None,
                    port: Some(PortRef::Number(80)),
                    end_port: None,
                }],
            }],
            ..NetworkPolicySpec::default()
        },
    }
}

fn cluster(n_pol: usize) -> Compiler {
    let mut c = Compiler::new();
    for i in 0..PODS {
        c.set_pod(&pod(i, i % 100));
    }
    for i in 0..n_pol {
        c.set_policy(&policy(i));
    }
    c
}

fn packets() -> Vec<Packet> {
    (0..1024u32)
        .map(|k| Packet {
            src: v4(0x0a00_0000 + (k * 13) % PODS as u32),
            dst: v4(0x0a00_0000 + (k * 7) % PODS as u32),
            proto: 6,
            dport: 80 + (k % 20) as u16,
        })
        .collect()
}

fn memory() {
    for n_pol in [100usize, 1000, 10_000] {
        let base = {
            let before = live();
            let c = cluster(0);
            let b = live() - before;
            drop(c);
            b
        };
        let before = live();
        let c = cluster(n_pol);
        let used = live() - before;
        let s = c.engine().size();
        eprintln!(
            "policy memory: {n_pol} policies over {PODS} pods: {} bytes above the pods alone, {} bytes/policy; \
             rules={} groups={} members={} applied={} applied_rules={} index_entries={}",
            used - base,
            (used - base) / n_pol as isize,
            s.rules,
            s.groups,
            s.group_members,
            s.applied,
            s.applied_rules,
            s.index_entries
        );
    }
    // Per address-group member: one policy whose peer selects every pod, against the
    // same policy whose peer selects none.
    let peer_policy = |v: &str| NetworkPolicy {
        namespace: "ns0".into(),
        name: "peers".into(),
        spec: NetworkPolicySpec {
            pod_selector: sel("app", "none".into()),
            ingress: vec![IngressRule {
                from: vec![PolicyPeer {
                    pod_selector: Some(LabelSelector {
                        match_expressions: vec![LabelSelectorRequirement {
                            key: "team".into(),
                            operator: v.into(),
                            values: vec![],
                        }],
                        ..LabelSelector::default()
                    }),
                    namespace_selector: Some(LabelSelector::default()),
                    ..PolicyPeer::default()
                }],
                ports: vec![],
            }],
            ..NetworkPolicySpec::default()
        },
    };
    let mut sizes = Vec::new();
    for op in ["DoesNotExist", "Exists"] {
        let before = live();
        let mut c = cluster(0);
        c.set_policy(&peer_policy(op));
        sizes.push((live() - before, c.engine().size().group_members));
    }
    eprintln!(
        "policy memory: {} bytes per address-group member ({} members)",
        (sizes[1].0 - sizes[0].0) / (sizes[1].1 - sizes[0].1).max(1) as isize,
        sizes[1].1
    );
}

fn run(mut cr: Criterion) {
    memory();
    let pkts = packets();
    let mut g = cr.benchmark_group("policy_verdict");
    g.throughput(Throughput::Elements(pkts.len() as u64));
    for n_pol in [0usize, 100, 1000, 10_000] {
        let c = cluster(n_pol);
        let e = c.engine().clone();
        let allowed = pkts
            .iter()
            .filter(|p| e.decide(Dir::Ingress, p).allows())
            .count();
        eprintln!(
            "policy_verdict/{n_pol}: {allowed} of {} allowed",
            pkts.len()
        );
        g.bench_with_input(BenchmarkId::from_parameter(n_pol), &e, |b, e| {
            b.iter(|| {
                let mut n = 0u32;
                for p in &pkts {
                    n += u32::from(e.decide(Dir::Ingress, black_box(p)).allows());
                }
                n
            })
        });
    }
    g.finish();
    let mut g = cr.benchmark_group("policy_verdict_ipblock");
    g.throughput(Throughput::Elements(pkts.len() as u64));
    for n_pol in [1usize, 10, 100, 1000] {
        let mut c = cluster(0);
        for i in 0..n_pol {
            c.set_policy(&block_policy(i));
        }
        let e = c.engine().clone();
        // To pods 0, 100, ... 900 (app0 in ns0) from a host in one of the
        // blocks, in the admitted or the excepted half.
        let pk: Vec<Packet> = (0..1024u32)
            .map(|k| {
                let b = (k.wrapping_mul(2_654_435_761) >> 7) % n_pol as u32;
                Packet {
                    src: v4(0x0b00_0000 | (b << 8) | ((k * 37) & 255)),
                    dst: v4(0x0a00_0000 + 100 * (k % 10)),
                    proto: 6,
                    dport: 80,
                }
            })
            .collect();
        let allowed = pk
            .iter()
            .filter(|p| e.decide(Dir::Ingress, p).allows())
            .count();
        eprintln!(
            "policy_verdict_ipblock/{n_pol}: {allowed} of {} allowed",
            pk.len()
        );
        g.bench_with_input(BenchmarkId::from_parameter(n_pol), &e, |b, e| {
            b.iter(|| {
                let mut n = 0u32;
                for p in &pk {
                    n += u32::from(e.decide(Dir::Ingress, black_box(p)).allows());
                }
                n
            })
        });
    }
    g.finish();
    let mut g = cr.benchmark_group("policy_pod_relabel");
    for n_pol in [0usize, 100, 1000, 10_000] {
        let mut c = cluster(n_pol);
        // Pod 7 (ns7) moves between app7 and app17: out of 100 policies, into 100 others.
        let moves = [pod(7, 17), pod(7, 7)];
        let mut k = 0usize;
        // The published engine stays alive across changes, as in the daemon, so
        // every change pays its copy-on-write copies.
        let mut published = c.engine().clone();
        g.bench_function(BenchmarkId::from_parameter(n_pol), |b| {
            b.iter(|| {
                c.set_pod(&moves[k & 1]);
                k += 1;
                published = black_box(c.engine().clone());
            })
        });
        drop(published);
    }
    g.finish();
    cr.final_summary();
}

fn main() {
    run(Criterion::default().configure_from_args());
}

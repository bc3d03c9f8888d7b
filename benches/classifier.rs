//! The classification structures on their own: exact-match cache hits, megaflow cache
//! hits, full classifier lookups at 1 to 100k rules over 1, 10 and 50 masks, and the
//! cost of one rule update at 100k rules. Single core, no I/O.
//!
//! `cargo bench --bench classifier -- --measurement-time 2 --warm-up-time 1`
//!
//! Lookups are timed in batches of 1024 packets (throughput in lookups/s). Every
//! packet is made from a rule (or cache entry) chosen uniformly: the rule's matched
//! bits, random bits elsewhere. Bytes per rule / entry are printed to stderr.
//!
//! `BENCH_CLOCK=cpu` times with the thread's CPU clock instead of the wall clock: on a
//! shared machine, time spent descheduled then does not count as lookup time.

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use std::time::Duration;
use vswitch::flow::field::Field;
use vswitch::flow::{Classifier, ExactMatchCache, Key, Match, MegaflowCache, hash_key};

const BATCH: usize = 1024;

/// splitmix64: a deterministic generator, so every run measures the same tables.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const FULL: u128 = u128::MAX;

fn prefix(len: u32) -> u128 {
    u128::from(u32::MAX << (32 - len))
}

/// 50 realistic match shapes: (field, mask) lists. The first 10 are the kinds of
/// tables a Kubernetes pipeline has; the rest are route-like prefix tables.
fn shapes() -> Vec<Vec<(Field, u128)>> {
    use Field::*;
    let mut s: Vec<Vec<(Field, u128)>> = vec![
        // L2 forwarding.
        vec![(InPort, FULL), (EthDst, FULL)],
        // Connection 5-tuple.
        vec![
            (EthType, FULL),
            (IpProto, FULL),
            (Ipv4Src, FULL),
            (Ipv4Dst, FULL),
            (TpSrc, FULL),
            (TpDst, FULL),
        ],
        // Per-network /24 routes.
        vec![(EthType, FULL), (Reg0, FULL), (Ipv4Dst, prefix(24))],
        // Service VIP:port.
        vec![
            (EthType, FULL),
            (IpProto, FULL),
            (Ipv4Dst, FULL),
            (TpDst, FULL),
        ],
        // Source /16 policy per network.
        vec![(EthType, FULL), (Reg0, FULL), (Ipv4Src, prefix(16))],
        // Anti-spoofing: a port's own address.
        vec![(InPort, FULL), (EthType, FULL), (Ipv4Src, FULL)],
        // Policy by destination port and peer group.
        vec![
            (EthType, FULL),
            (IpProto, FULL),
            (TpDst, FULL),
            (Reg1, FULL),
        ],
        // Conntrack state per zone.
        vec![(CtState, 0x3f), (CtZone, FULL), (Reg0, FULL)],
        // ARP responder.
        vec![(EthType, FULL), (ArpOp, FULL), (ArpTpa, FULL)],
        // L2 per network.
        vec![(Metadata, FULL), (EthDst, FULL)],
    ];
    for len in (8..=32).filter(|&l| l != 24) {
        s.push(vec![(EthType, FULL), (Reg0, FULL), (Ipv4Dst, prefix(len))]);
    }
    for len in 16..32 {
        s.push(vec![
            (InPort, FULL),
            (EthType, FULL),
            (Ipv4Src, prefix(len)),
        ]);
    }
    assert_eq!(s.len(), 50);
    s
}

/// A rule of `shape` with random values (the wide fields make them distinct).
fn rule(shape: &[(Field, u128)], rng: &mut Rng) -> Match {
    let mut m = Match::ANY;
    for &(f, mask) in shape {
        let v = match f {
            Field::EthType if shape.iter().any(|(g, _)| *g == Field::ArpOp) => 0x0806,
            Field::EthType => 0x0800,
            Field::IpProto => [6, 17][rng.below(2)],
            _ => u128::from(rng.next()) << 64 | u128::from(rng.next()),
        };
        m.set(f, v, mask);
    }
    m
}

/// A packet matching `m`: its bits under the mask, random bits elsewhere.
fn packet_for(m: &Match, rng: &mut Rng) -> Key {
    let mut k = Key::ZERO;
    for w in k.0.iter_mut().take(5) {
        *w = rng.next();
    }
    for i in 0..k.0.len() {
        k.0[i] = (k.0[i] & !m.mask.0[i]) | m.value.0[i];
    }
    k
}

struct Table {
    cls: Classifier<u32>,
    rules: Vec<Match>,
}

/// `n_rules` rules spread round-robin over the first `n_masks` shapes; priorities fall
/// by shape (so lookup visits the shapes in order) with a little spread inside.
fn table(n_rules: usize, n_masks: usize, rng: &mut Rng, prefix_tracking: bool) -> Table {
    let shapes = shapes();
    // One mask: the 5-tuple, the most common single-mask table.
    let pick = |i: usize| if n_masks == 1 { 1 } else { i % n_masks };
    let mut cls = Classifier::with_prefix_tracking(prefix_tracking);
    let mut rules = Vec::with_capacity(n_rules);
    for i in 0..n_rules {
        let j = pick(i);
        let m = rule(&shapes[j], rng);
        let prio = 1000 - 10 * j as u16 + (i % 3) as u16;
        cls.insert(m, prio, i as u32);
        rules.push(m);
    }
    Table { cls, rules }
}

fn bench_emc<M: Measurement>(c: &mut Criterion<M>) {
    let mut rng = Rng(1);
    let mut emc = ExactMatchCache::default();
    let mut mc = MegaflowCache::<u32>::default();
    let shape = &shapes()[1];
    let keys: Vec<Key> = (0..4096)
        .map(|i| {
            let m = rule(shape, &mut rng);
            let k = packet_for(&m, &mut rng);
            let id = mc.insert(&m.mask, &k, i);
            emc.insert(&k, hash_key(&k), id);
            k
        })
        .collect();
    let batch: Vec<Key> = (0..BATCH).map(|_| keys[rng.below(keys.len())]).collect();
    eprintln!(
        "emc: {} entries, {} bytes, {} bytes/entry",
        emc.capacity(),
        emc.memory_bytes(),
        emc.memory_bytes() / emc.capacity()
    );
    let mut g = c.benchmark_group("emc");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("hash_key", |b| {
        b.iter(|| {
            for k in &batch {
                black_box(hash_key(black_box(k)));
            }
        })
    });
    g.bench_function("hit", |b| {
        b.iter(|| {
            for k in &batch {
                black_box(emc.lookup(k, hash_key(k)));
            }
        })
    });
    // What a worker pays on an EMC hit: hash, EMC, then the megaflow by id.
    g.bench_function("hit+megaflow_get", |b| {
        b.iter(|| {
            for k in &batch {
                if let Some(id) = emc.lookup(k, hash_key(k)) {
                    black_box(mc.get_mut(id));
                }
            }
        })
    });
    g.finish();
}

fn bench_megaflow<M: Measurement>(c: &mut Criterion<M>) {
    let shapes = shapes();
    let mut g = c.benchmark_group("megaflow_hit");
    g.throughput(Throughput::Elements(BATCH as u64));
    for n_masks in [1usize, 10, 50] {
        let mut rng = Rng(2);
        let mut mc = MegaflowCache::<u32>::default();
        let mut keys = Vec::new();
        for i in 0..20_000 {
            let m = rule(&shapes[i % n_masks], &mut rng);
            let k = packet_for(&m, &mut rng);
            mc.insert(&m.mask, &k, i as u32);
            keys.push(k);
        }
        eprintln!(
            "megaflow: {} entries over {} masks, {} bytes/entry",
            mc.len(),
            mc.n_subtables(),
            mc.memory_bytes() / mc.len()
        );
        // Uniform over entries, so over subtables: ranking cannot help; on average
        // half the subtables are probed.
        let batch: Vec<Key> = (0..BATCH).map(|_| keys[rng.below(keys.len())]).collect();
        g.bench_with_input(
            BenchmarkId::new("uniform", format!("{n_masks}masks")),
            &batch,
            |b, batch| {
                b.iter(|| {
                    for k in batch {
                        black_box(mc.lookup(k).map(|(id, _)| id));
                    }
                })
            },
        );
        if n_masks > 1 {
            // Skewed as real traffic is: 90% of packets hit one subtable, which the
            // ranking moves to the front.
            let hot: Vec<&Key> = keys.iter().step_by(n_masks).collect();
            let batch: Vec<Key> = (0..BATCH)
                .map(|_| {
                    if rng.below(10) == 0 {
                        keys[rng.below(keys.len())]
                    } else {
                        *hot[rng.below(hot.len())]
                    }
                })
                .collect();
            for k in &batch {
                mc.lookup(k);
            }
            mc.rank_subtables();
            g.bench_with_input(
                BenchmarkId::new("skewed", format!("{n_masks}masks")),
                &batch,
                |b, batch| {
                    b.iter(|| {
                        for k in batch {
                            black_box(mc.lookup(k).map(|(id, _)| id));
                        }
                    })
                },
            );
        }
    }
    g.finish();
}

fn bench_classifier<M: Measurement>(c: &mut Criterion<M>) {
    let mut g = c.benchmark_group("classifier_lookup");
    g.throughput(Throughput::Elements(BATCH as u64));
    for n_rules in [1usize, 1_000, 10_000, 100_000] {
        for n_masks in [1usize, 10, 50] {
            if n_masks > n_rules {
                continue;
            }
            let mut rng = Rng(3);
            let t = table(n_rules, n_masks, &mut rng, true);
            eprintln!(
                "classifier: {} rules over {} masks, {} bytes/rule",
                t.cls.len(),
                t.cls.n_subtables(),
                t.cls.memory_bytes() / t.cls.len()
            );
            let batch: Vec<Key> = (0..BATCH)
                .map(|_| packet_for(&t.rules[rng.below(t.rules.len())], &mut rng))
                .collect();
            g.bench_with_input(
                BenchmarkId::new(format!("{n_rules}rules"), format!("{n_masks}masks")),
                &batch,
                |b, batch| {
                    b.iter(|| {
                        for k in batch {
                            let mut consulted = Key::ZERO;
                            black_box(t.cls.lookup(k, &mut consulted).map(|r| r.1));
                            black_box(&consulted);
                        }
                    })
                },
            );
        }
    }
    g.finish();
}

/// The same tables without prefix tracking: its lookup cost, and how many key bits the
/// megaflows would match with and without it (on packets that miss every rule's
/// addresses: the traffic prefix tracking is for).
fn bench_prefix_tracking<M: Measurement>(c: &mut Criterion<M>) {
    let mut g = c.benchmark_group("classifier_lookup_no_tries");
    g.throughput(Throughput::Elements(BATCH as u64));
    for n_masks in [1usize, 10, 50] {
        let on = table(10_000, n_masks, &mut Rng(3), true);
        let mut rng = Rng(3);
        let off = table(10_000, n_masks, &mut rng, false).cls;
        let batch: Vec<Key> = (0..BATCH)
            .map(|_| packet_for(&on.rules[rng.below(on.rules.len())], &mut rng))
            .collect();
        let strangers: Vec<Key> = batch
            .iter()
            .map(|k| {
                let mut k = *k;
                Field::Ipv4Dst.set(&mut k, u128::from(0xc0a8_0000 | rng.next() as u32 & 0xffff));
                k
            })
            .collect();
        let bits = |cls: &Classifier<u32>| {
            let total: u32 = strangers
                .iter()
                .map(|k| {
                    let mut consulted = Key::ZERO;
                    cls.lookup(k, &mut consulted);
                    consulted.0.iter().map(|w| w.count_ones()).sum::<u32>()
                })
                .sum();
            total as f64 / strangers.len() as f64
        };
        eprintln!(
            "classifier: 10000 rules over {n_masks} masks, packets to 192.168/16: \
             megaflow matches {:.1} key bits with prefix tracking, {:.1} without",
            bits(&on.cls),
            bits(&off)
        );
        g.bench_with_input(
            BenchmarkId::new("10000rules", format!("{n_masks}masks")),
            &batch,
            |b, batch| {
                b.iter(|| {
                    for k in batch {
                        let mut consulted = Key::ZERO;
                        black_box(off.lookup(k, &mut consulted).map(|r| r.1));
                        black_box(&consulted);
                    }
                })
            },
        );
    }
    g.finish();
}

fn bench_update<M: Measurement>(c: &mut Criterion<M>) {
    let mut g = c.benchmark_group("classifier_update_100k");
    let mut rng = Rng(4);
    let mut t = table(100_000, 10, &mut rng, true);
    let shapes = shapes();
    // A rule in an existing subtable: the common case.
    let m = rule(&shapes[3], &mut rng);
    g.bench_function("insert+remove", |b| {
        b.iter(|| {
            t.cls.insert(black_box(m), 995, 0);
            black_box(t.cls.remove(&m, 995));
        })
    });
    // A rule with a new mask at the top priority: creates the subtable, re-sorts the
    // subtable order, and removes it again.
    let m = rule(&shapes[20], &mut rng);
    g.bench_function("insert+remove_new_mask", |b| {
        b.iter(|| {
            t.cls.insert(black_box(m), 2000, 0);
            black_box(t.cls.remove(&m, 2000));
        })
    });
    g.finish();
}

/// The calling thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`).
struct ThreadCpuTime;

static WALL: WallTime = WallTime;

fn thread_cpu_now() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

impl Measurement for ThreadCpuTime {
    type Intermediate = Duration;
    type Value = Duration;

    fn start(&self) -> Duration {
        thread_cpu_now()
    }

    fn end(&self, start: Duration) -> Duration {
        thread_cpu_now().saturating_sub(start)
    }

    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }

    fn zero(&self) -> Duration {
        Duration::ZERO
    }

    fn to_f64(&self, v: &Duration) -> f64 {
        v.as_nanos() as f64
    }

    fn formatter(&self) -> &dyn ValueFormatter {
        // Same unit (nanoseconds) as the wall clock: reuse its formatting.
        WALL.formatter()
    }
}

fn run<M: Measurement>(mut c: Criterion<M>) {
    bench_emc(&mut c);
    bench_megaflow(&mut c);
    bench_classifier(&mut c);
    bench_prefix_tracking(&mut c);
    bench_update(&mut c);
    c.final_summary();
}

fn main() {
    if std::env::var("BENCH_CLOCK").is_ok_and(|v| v == "cpu") {
        run(Criterion::default()
            .with_measurement(ThreadCpuTime)
            .configure_from_args());
    } else {
        run(Criterion::default().configure_from_args());
    }
}

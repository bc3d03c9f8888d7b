//! What the packet-capture hook costs the fast path while no capture runs.
//!
//! One poll-worker iteration on memory ports (as `benches/pipeline.rs`): a batch of
//! 64 64-byte UDP frames received from a replay port, classified on a cache hit and
//! either sent to a sink port (`output`) or dropped by the flow (`drop`, where every
//! frame also passes the per-drop capture test). No capture is armed.
//!
//! The figure alone says little; it is one half of an A/B: the same bench built with
//! `--features vswitch/bench-no-capture` has the hook compiled out (`Tap::armed` a
//! constant `false`). `benches/capture_ab.sh` builds both and runs them alternately
//! (interleaved repetitions) and states the difference with a confidence interval.
//!
//! Time is the benchmark thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`): on the shared
//! development machine, time spent preempted by other processes is not the code's.

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use vswitch::flow::tables::FlowMod;
use vswitch::flow::{NoPortNames, parse_flow};
use vswitch::port::BATCH_SIZE;
use vswitch::port::memory::MemoryPort;
use vswitch::{Datapath, DatapathConfig};
use vswitch_proto::PortKind;

/// CPU time of the calling thread, in nanoseconds (formatted like wall time).
struct ThreadCpuTime(WallTime);

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we own; the clock id is valid.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Measurement for ThreadCpuTime {
    type Intermediate = u64;
    type Value = u64;
    fn start(&self) -> u64 {
        thread_cpu_ns()
    }
    fn end(&self, start: u64) -> u64 {
        thread_cpu_ns().saturating_sub(start)
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, v: &u64) -> f64 {
        *v as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        self.0.formatter()
    }
}

/// 64-byte UDP/IPv4 frames from `flows` source ports.
fn frames(flows: u16) -> Vec<Vec<u8>> {
    (0..flows)
        .map(|i| {
            let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
                .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
                .udp(1024 + i, 5001);
            let payload = [0u8; 18];
            let mut out = Vec::with_capacity(b.size(payload.len()));
            b.write(&mut out, &payload).expect("frame builds");
            out
        })
        .collect()
}

/// A switch with a sink (port 1), a replay generator (port 2) and `flow`.
fn setup(flow: &str, flows: u16) -> Datapath {
    let mut dp = Datapath::new(DatapathConfig::in_process(1)).expect("datapath");
    let (sink, _) = MemoryPort::sink();
    dp.add_memory_port("sink", PortKind::Pod, sink)
        .expect("sink");
    dp.add_memory_port("gen", PortKind::Pod, MemoryPort::replay(frames(flows)))
        .expect("gen");
    let specs = parse_flow(flow, &NoPortNames).expect("flow parses");
    dp.flow_mods(specs.into_iter().map(FlowMod::Add).collect())
        .expect("flow added");
    for _ in 0..8 {
        dp.run_once(); // warm the caches
    }
    assert!(
        !dp.capture_tap().armed(),
        "no capture may run in this bench"
    );
    dp
}

fn bench(c: &mut Criterion<ThreadCpuTime>) {
    // Which half of the A/B this binary is (capture_ab.sh checks it).
    eprintln!(
        "capture hook: {}",
        if vswitch::capture::HOOK_COMPILED {
            "compiled in, inactive"
        } else {
            "compiled out"
        }
    );
    let mut g = c.benchmark_group("capture_idle");
    g.throughput(Throughput::Elements(BATCH_SIZE as u64));
    let cases = [
        ("output", "table=0,priority=100,in_port=2 actions=output:1"),
        ("drop", "table=0,priority=100,in_port=2 actions=drop"),
    ];
    for (name, flow) in cases {
        for flows in [1u16, 1024] {
            let mut dp = setup(flow, flows);
            g.bench_function(format!("{name}/{flows}flows"), |b| {
                b.iter(|| black_box(dp.run_once()))
            });
        }
    }
    g.finish();
}

fn config() -> Criterion<ThreadCpuTime> {
    Criterion::default().with_measurement(ThreadCpuTime(WallTime))
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench
}
criterion_main!(benches);

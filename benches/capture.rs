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

mod common;

use common::ThreadCpuTime;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use vswitch::Datapath;
use vswitch::port::BATCH_SIZE;

/// The replay switch of `common`, checked to have no capture armed.
fn setup(flow: &str, flows: u16) -> Datapath {
    let dp = common::replay_switch(flow, flows);
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
    Criterion::default().with_measurement(ThreadCpuTime)
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench
}
criterion_main!(benches);

//! The flow pipeline's per-packet cost on a cache hit, including the actions:
//! frames per second per core through one poll worker on memory ports.
//!
//! `cargo bench --bench pipeline`. Each iteration is one worker loop over a batch of
//! 64 64-byte frames: receive (a 64-byte copy per frame, standing in for the NIC's
//! DMA), extract the key, exact-match cache hit, execute the actions, transmit to a
//! sink. So the figure is an upper bound of the cache hit + action cost.

mod common;

use common::replay_switch as setup;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use vswitch::flow::tables::FlowMod;
use vswitch::flow::{NoPortNames, parse_flow};
use vswitch::port::BATCH_SIZE;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(BATCH_SIZE as u64));
    let cases = [
        ("output", "table=0,priority=100,in_port=2 actions=output:1"),
        (
            "set_field+output",
            "table=0,priority=100,in_port=2,udp actions=set_field:10.0.0.99->ip_dst,set_field:8080->tp_dst,output:1",
        ),
        (
            "goto3+output",
            "table=0,priority=100,in_port=2,ip actions=goto_table:5",
        ),
    ];
    for (name, flow) in cases {
        for flows in [1u16, 1024] {
            let mut dp = setup(flow, flows);
            if name == "goto3+output" {
                let more = [
                    "table=5,priority=100,ip actions=goto_table:30",
                    "table=30,priority=100,udp actions=output:1",
                ];
                for f in more {
                    let s = parse_flow(f, &NoPortNames).expect("parses");
                    dp.flow_mods(s.into_iter().map(FlowMod::Add).collect())
                        .expect("added");
                }
            }
            g.bench_function(format!("{name}/{flows}flows"), |b| {
                b.iter(|| black_box(dp.run_once()))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

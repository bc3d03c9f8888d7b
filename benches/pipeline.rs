//! The flow pipeline's per-packet cost on a cache hit, including the actions:
//! frames per second per core through one poll worker on memory ports.
//!
//! `cargo bench --bench pipeline`. Each iteration is one worker loop over a batch of
//! 64 64-byte frames: receive (a 64-byte copy per frame, standing in for the NIC's
//! DMA), extract the key, exact-match cache hit, execute the actions, transmit to a
//! sink. So the figure is an upper bound of the cache hit + action cost.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use vswitch::flow::tables::FlowMod;
use vswitch::flow::{NoPortNames, parse_flow};
use vswitch::port::BATCH_SIZE;
use vswitch::port::memory::MemoryPort;
use vswitch::{Datapath, DatapathConfig};
use vswitch_proto::PortKind;

/// 64-byte UDP/IPv4 frames from `flows` source ports.
fn frames(flows: u16) -> Vec<Vec<u8>> {
    (0..flows)
        .map(|i| {
            let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
                .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
                .udp(1024 + i, 5001);
            let payload = [0u8; 18];
            let mut out = Vec::with_capacity(b.size(payload.len()));
            if b.write(&mut out, &payload).is_err() {
                out.clear();
            }
            out
        })
        .collect()
}

/// A switch with a sink (port 1) and a replay generator (port 2) and `flow` added.
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
    dp
}

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

//! The learning bridge's own cost, apart from the kernel's: frames per second per
//! core through one poll worker on memory ports (no I/O, no syscalls).
//!
//! `cargo bench --bench bridge`. A replay port offers 64-byte frames in batches of
//! 64; each iteration is one worker loop: receive a batch (a 64-byte copy per frame,
//! standing in for the NIC's DMA), parse, learn, look up, queue and "transmit" to a
//! sink port.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use vswitch::port::BATCH_SIZE;
use vswitch::port::memory::MemoryPort;
use vswitch::{Datapath, DatapathConfig};
use vswitch_proto::PortKind;

const SINK_MAC: [u8; 6] = [0x02, 0, 0, 0, 0xee, 0xee];

fn frame(dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
    let mut f = Vec::with_capacity(64);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x08, 0x00]);
    f.resize(60, 0x5a);
    f
}

fn src_mac(i: u32) -> [u8; 6] {
    let b = i.to_be_bytes();
    [0x02, 0x10, b[0], b[1], b[2], b[3]]
}

/// A switch with a replay port sending `flows` source MACs to the sink, `extra`
/// further ports (flood targets), the sink's MAC learned.
fn setup(flows: u32, dst: [u8; 6], extra: usize) -> Datapath {
    let mut dp = Datapath::new(DatapathConfig::in_process(1)).expect("datapath");
    let frames = (0..flows).map(|i| frame(dst, src_mac(i))).collect();
    let (sink, _) = MemoryPort::sink_announcing(Some(frame([0xff; 6], SINK_MAC)));
    dp.add_memory_port("sink", PortKind::Pod, sink)
        .expect("sink");
    for i in 0..extra {
        let (p, _) = MemoryPort::sink();
        dp.add_memory_port(&format!("x{i}"), PortKind::Pod, p)
            .expect("extra");
    }
    for _ in 0..4 {
        dp.run_once(); // the sink announces itself
    }
    dp.add_memory_port("gen", PortKind::Pod, MemoryPort::replay(frames))
        .expect("gen");
    dp
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("bridge");
    g.throughput(Throughput::Elements(BATCH_SIZE as u64));
    for flows in [1u32, 1024] {
        let mut dp = setup(flows, SINK_MAC, 0);
        g.bench_function(format!("unicast/{flows}flows"), |b| {
            b.iter(|| black_box(dp.run_once()))
        });
    }
    let mut dp = setup(1, [0xff; 6], 2);
    g.bench_function("broadcast/3ports", |b| b.iter(|| black_box(dp.run_once())));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

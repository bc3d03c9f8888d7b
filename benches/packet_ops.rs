//! The two per-packet operations of the flow pipeline, alone: flow key extraction
//! and in-place header rewrites with incremental checksums.
//!
//! `cargo bench --bench packet_ops -- --measurement-time 2 --warm-up-time 1`.
//! Each iteration handles one 64-byte frame that stays in L1, so the figures are the
//! code's own cost per packet (no cache misses, no I/O).
//!
//! Time is the benchmark thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), not wall
//! time: the development machine is shared, and time spent preempted by other
//! processes is not the code's cost. On an idle machine the two agree.

mod common;

use common::ThreadCpuTime;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use etherparse::PacketBuilder;
use std::hint::black_box;
use vswitch::flow::extract::extract;
use vswitch::flow::rewrite::{dec_ttl, set_field};
use vswitch::flow::{Field, Key};

const SRC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
const DST: [u8; 6] = [0x02, 0, 0, 0, 0, 2];

/// Frames of exactly 64 bytes (the minimum Ethernet frame without FCS is 60; 64 is
/// the customary benchmark size).
fn udp4() -> Vec<u8> {
    let b = PacketBuilder::ethernet2(SRC, DST)
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .udp(1234, 53);
    let payload = [0x5a; 64 - 42];
    let mut f = Vec::with_capacity(64);
    b.write(&mut f, &payload).expect("build");
    f
}

fn tcp4() -> Vec<u8> {
    let b = PacketBuilder::ethernet2(SRC, DST)
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .tcp(40000, 80, 1, 1000)
        .ack(1);
    let payload = [0x5a; 64 - 54];
    let mut f = Vec::with_capacity(64);
    b.write(&mut f, &payload).expect("build");
    f
}

fn udp6() -> Vec<u8> {
    let mut a = [0u8; 16];
    a[0] = 0xfd;
    let mut z = a;
    a[15] = 1;
    z[15] = 2;
    let b = PacketBuilder::ethernet2(SRC, DST)
        .ipv6(a, z, 64)
        .udp(1234, 53);
    let payload = [0x5a; 64 - 62];
    let mut f = Vec::with_capacity(64);
    b.write(&mut f, &payload).expect("build");
    f
}

fn bench(c: &mut Criterion<ThreadCpuTime>) {
    let frames = [("udp4", udp4()), ("tcp4", tcp4()), ("udp6", udp6())];
    for (_, f) in &frames {
        assert_eq!(f.len(), 64);
    }

    let mut g = c.benchmark_group("extract");
    g.throughput(Throughput::Elements(1));
    for (name, f) in &frames {
        let mut key = Key::ZERO;
        g.bench_function(*name, |b| {
            b.iter(|| black_box(extract(black_box(f), 1, &mut key)))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("rewrite");
    g.throughput(Throughput::Elements(1));
    for (name, f) in &frames[..2] {
        let mut frame = f.clone();
        let mut key = Key::ZERO;
        let off = extract(&frame, 1, &mut key).expect("extract");
        let mut i = 0u32;
        // set_field ip_dst and tp_dst (checksums fixed, key kept in sync): a DNAT.
        g.bench_function(format!("ip_dst+tp_dst/{name}"), |b| {
            b.iter(|| {
                i = i.wrapping_add(1);
                let ip = u128::from(0x0a00_0000 | (i & 0xff));
                let port = u128::from(8000 + (i & 0xff));
                let o = black_box(&off);
                let r1 = set_field(&mut frame, o, Field::Ipv4Dst, ip, u128::MAX, Some(&mut key));
                let r2 = set_field(&mut frame, o, Field::TpDst, port, u128::MAX, Some(&mut key));
                black_box((r1, r2))
            })
        });
    }
    {
        let mut frame = udp4();
        let mut key = Key::ZERO;
        let off = extract(&frame, 1, &mut key).expect("extract");
        // The TTL is put back each time so it never expires (a 2-byte store of the
        // TTL/protocol word, which the load in dec_ttl can forward from).
        g.bench_function("dec_ttl/udp4", |b| {
            b.iter(|| {
                frame[22..24].copy_from_slice(&[64, 17]);
                black_box(dec_ttl(&mut frame, black_box(&off), Some(&mut key)))
            })
        });
        let mut frame = udp6();
        let off = extract(&frame, 1, &mut key).expect("extract");
        g.bench_function("dec_ttl/udp6", |b| {
            b.iter(|| {
                frame[21] = 64;
                black_box(dec_ttl(&mut frame, black_box(&off), Some(&mut key)))
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(ThreadCpuTime);
    targets = bench
}
criterion_main!(benches);

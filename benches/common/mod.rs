//! What several benches share: the thread-CPU-time measurement and the memory-port
//! switch with a replay generator and a sink. Included with `mod common;` (a folder,
//! so Cargo does not take it for a bench target of its own); each bench uses a part.
#![allow(dead_code)]

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use vswitch::flow::tables::FlowMod;
use vswitch::flow::{NoPortNames, parse_flow};
use vswitch::port::memory::MemoryPort;
use vswitch::{Datapath, DatapathConfig};
use vswitch_proto::PortKind;

/// Criterion measurement of the benchmark thread's CPU time
/// (`CLOCK_THREAD_CPUTIME_ID`), formatted like wall time: on the shared development
/// machine, time spent preempted by other processes is not the code's cost.
pub struct ThreadCpuTime;

pub fn thread_cpu_ns() -> u64 {
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
        WallTime.formatter()
    }
}

/// 64-byte UDP/IPv4 frames 10.0.0.1 -> 10.0.0.2:5001 from `flows` source ports.
pub fn udp_frames(flows: u16) -> Vec<Vec<u8>> {
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

/// An in-process switch with a sink (port 1), a generator replaying `udp_frames(flows)`
/// (port 2) and `flow` added, its caches warmed.
pub fn replay_switch(flow: &str, flows: u16) -> Datapath {
    let mut dp = Datapath::new(DatapathConfig::in_process(1)).expect("datapath");
    let (sink, _) = MemoryPort::sink();
    dp.add_memory_port("sink", PortKind::Pod, sink)
        .expect("sink");
    dp.add_memory_port("gen", PortKind::Pod, MemoryPort::replay(udp_frames(flows)))
        .expect("gen");
    let specs = parse_flow(flow, &NoPortNames).expect("flow parses");
    dp.flow_mods(specs.into_iter().map(FlowMod::Add).collect())
        .expect("flow added");
    for _ in 0..8 {
        dp.run_once(); // warm the caches
    }
    dp
}

//! The flow pipeline's per-packet cost on a cache hit, including the actions:
//! frames per second per core through one poll worker on memory ports.
//!
//! `cargo bench --bench pipeline`. Each iteration is one worker loop over a batch of
//! 64 64-byte frames: receive (a 64-byte copy per frame, standing in for the NIC's
//! DMA), extract the key, exact-match cache hit, execute the actions, transmit to a
//! sink. So the figure is an upper bound of the cache hit + action cost.
//!
//! `services/*`: the node pipeline with ClusterIP services, as the
//! `vswitchd-svc` vsb DUT sets it up (gateway port in, the endpoint pod's port
//! out, `svc` other services), realised through the desired store: `new_conn`
//! sends every frame from a new source address and port (each one a new
//! connection: ct miss, Maglev pick, conntrack insert, DNAT), `established`
//! one connection over and over.

mod common;

use common::replay_switch as setup;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use vswitch::flow::tables::FlowMod;
use vswitch::flow::{NoPortNames, parse_flow};
use vswitch::port::BATCH_SIZE;
use vswitch::port::memory::MemoryPort;

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

mod svc {
    use vswitch::conntrack::CtConfig;
    use vswitch::desired::DesiredStore;
    use vswitch::desired::realize::{LocalNodeLog, PodLinker, Realizer, Validator};
    use vswitch::overlay::node::{NodeNetwork, OverlayConfig};
    use vswitch::port::memory::MemoryPort;
    use vswitch::services::realize::{ServiceRealizer, ServicesConfig};
    use vswitch::{Datapath, DatapathConfig};
    use vswitch_proto::PortKind;
    use vswitch_proto::model::Object;
    use vswitch_proto::{PodRef, SyncFullParams};

    pub const GW_MAC: [u8; 6] = [0x0a, 0x58, 10, 77, 0, 1];

    fn obj(v: serde_json::Value) -> Object {
        serde_json::from_value(v).expect("object")
    }

    fn svc(name: &str, vip: &str, eps: &[String]) -> [Object; 2] {
        let e: Vec<serde_json::Value> = eps
            .iter()
            .map(|a| {
                serde_json::json!({"addresses": [a], "ready": true, "serving": true,
                    "terminating": false, "node_name": "vsb-node",
                    "ports": [{"name": "udp80", "port": 8080, "protocol": "UDP"}]})
            })
            .collect();
        [
            obj(
                serde_json::json!({"kind": "Service", "namespace": "vsb", "name": name,
                "cluster_ips": [vip],
                "ports": [{"name": "udp80", "port": 80, "protocol": "UDP", "target_port": 8080}]}),
            ),
            obj(
                serde_json::json!({"kind": "Endpoints", "namespace": "vsb", "name": name,
                "endpoints": e}),
            ),
        ]
    }

    /// The target's ClusterIP.
    pub const VIP: [u8; 4] = [10, 77, 128, 1];

    /// A datapath with the node pipeline, `others` services of 2 (remote)
    /// endpoints and the target service whose 2 endpoints are the sink pod's
    /// addresses; `generator` is the gateway port's traffic.
    pub fn setup(others: u32, generator: MemoryPort) -> Datapath {
        let mut cfg = DatapathConfig::in_process(1);
        cfg.conntrack = CtConfig::default();
        cfg.conntrack.timeouts.udp_unreplied = 1;
        let mut dp = Datapath::new(cfg).expect("datapath");
        let (sink, _) = MemoryPort::sink();
        dp.add_memory_port("g1", PortKind::Gateway, generator)
            .expect("g1");
        dp.add_memory_port("s1", PortKind::Pod, sink).expect("s1");
        let chain: Vec<Box<dyn Realizer>> = vec![
            Box::new(Validator),
            Box::new(LocalNodeLog),
            Box::new(PodLinker),
            Box::new(ServiceRealizer::new(ServicesConfig::default())),
            Box::new(NodeNetwork::new(OverlayConfig::default()).without_host_neighbours()),
        ];
        let mut store = DesiredStore::new(None).with_realizers(chain);
        let mut objs = vec![
            obj(serde_json::json!({"kind": "LocalNode", "name": "vsb-node",
                "pod_cidrs": ["10.77.0.0/18"], "node_ips": ["10.77.127.1"],
                "gateway_ips": ["10.77.0.1"], "gateway_mac": "0a:58:0a:4d:00:01"})),
            obj(
                serde_json::json!({"kind": "Pod", "namespace": "vsb", "name": "sink",
                "ips": ["10.77.0.20", "10.77.0.21"], "mac": "0a:58:0a:4d:00:14",
                "node_name": "vsb-node", "local": true, "phase": "Running"}),
            ),
        ];
        for k in 0..others {
            let vip = format!("10.{}.{}.{}", 96 + k / 65536, (k / 256) % 256, k % 256);
            let eps: Vec<String> = [2 * k % 16384, (2 * k + 1) % 16384]
                .iter()
                .map(|e| format!("10.77.{}.{}", 64 + e / 256, e % 256))
                .collect();
            objs.extend(svc(&format!("svc-{k}"), &vip, &eps));
        }
        let vip = format!("{}.{}.{}.{}", VIP[0], VIP[1], VIP[2], VIP[3]);
        objs.extend(svc(
            "target",
            &vip,
            &["10.77.0.20".into(), "10.77.0.21".into()],
        ));
        store
            .sync_full(
                SyncFullParams {
                    generation: 1,
                    state: objs.into_iter().collect(),
                    more: false,
                },
                Some(&mut dp),
            )
            .expect("sync");
        let info = dp
            .set_port_pod(
                "s1",
                Some(PodRef {
                    namespace: "vsb".into(),
                    name: "sink".into(),
                    container_id: None,
                }),
            )
            .expect("s1");
        store.port_changed(&info, true, &mut dp);
        dp
    }

    /// A 64-byte UDP frame from a client behind the gateway to the target VIP.
    pub fn frame() -> Vec<u8> {
        let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], GW_MAC)
            .ipv4([10, 77, 0, 10], VIP, 64)
            .udp(1024, 80);
        let payload = [0u8; 18];
        let mut out = Vec::with_capacity(b.size(payload.len()));
        if b.write(&mut out, &payload).is_err() {
            out.clear();
        }
        out
    }
}

/// Connection setup through the service pipeline.
fn services(c: &mut Criterion) {
    let mut g = c.benchmark_group("services");
    g.throughput(Throughput::Elements(BATCH_SIZE as u64));
    for others in [0u32, 10_000] {
        let n = others + 1;
        let mut dp = svc::setup(others, MemoryPort::new_flows(svc::frame()));
        dp.run_once();
        let sent = dp.stats(Some("s1")).expect("stats").ports[0].tx_packets;
        assert!(sent > 0, "new connections reach the endpoint");
        g.bench_function(format!("new_conn/{n}svc"), |b| {
            b.iter(|| black_box(dp.run_once()))
        });
        let mut dp = svc::setup(others, MemoryPort::replay(vec![svc::frame()]));
        dp.run_once();
        g.bench_function(format!("established/{n}svc"), |b| {
            b.iter(|| black_box(dp.run_once()))
        });
    }
    g.finish();
}

criterion_group!(benches, bench, services);
criterion_main!(benches);

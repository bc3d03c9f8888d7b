//! NodePort from the uplink on memory ports (docs/services.md, "NodePort from
//! outside the node"): the node pipeline and the services realizer on one
//! datapath; TCP frames from the uplink to the node IP and a NodePort come out of
//! the pod port DNATed (and SNATed to the node IP under externalTrafficPolicy
//! Cluster), the pod's answer comes out of the uplink translated back, addressed to
//! the client's MAC from the uplink's. No root needed.

use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};
use serde_json::json;
use vswitch::desired::DesiredStore;
use vswitch::desired::realize::{LocalNodeLog, PodLinker, Realizer, Validator};
use vswitch::overlay::node::{NodeNetwork, OverlayConfig};
use vswitch::port::memory::{MemoryPort, MemoryPortHandle};
use vswitch::services::realize::{ServiceRealizer, ServicesConfig};
use vswitch::{Datapath, DatapathConfig};
use vswitch_proto::model::{LocalNode, Object};
use vswitch_proto::{DesiredState, PodRef, PortKind, SyncFullParams};

const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xc1];
const GW_MAC: [u8; 6] = [0x0a, 0x58, 10, 250, 0, 1];
const POD_MAC: [u8; 6] = [0x0a, 0x58, 10, 250, 0, 21];
const NODE_IP: [u8; 4] = [192, 0, 2, 1];
const CLIENT_IP: [u8; 4] = [192, 0, 2, 2];
const POD_IP: [u8; 4] = [10, 250, 0, 21];

struct Node {
    dp: Datapath,
    up: MemoryPortHandle,
    pod: MemoryPortHandle,
    up_mac: [u8; 6],
}

fn service(name: &str, policy: &str, node_port: u16, cluster_ip: &str) -> Vec<Object> {
    let svc = json!({
        "namespace": "shop", "name": name, "type": "NodePort",
        "cluster_ips": [cluster_ip],
        "ports": [{"name": "http", "port": 80, "protocol": "TCP", "target_port": 8080,
                   "node_port": node_port}],
        "external_traffic_policy": policy,
    });
    let eps = json!({
        "namespace": "shop", "name": name,
        "endpoints": [{"addresses": ["10.250.0.21"], "ready": true, "serving": true,
                       "terminating": false, "node_name": "node-a",
                       "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}],
    });
    vec![
        Object::Service(serde_json::from_value(svc).expect("service")),
        Object::Endpoints(serde_json::from_value(eps).expect("endpoints")),
    ]
}

fn state() -> DesiredState {
    let pod = json!({
        "namespace": "shop", "name": "b1", "uid": "uid-b1", "labels": {},
        "ips": ["10.250.0.21"], "node_name": "node-a", "local": true,
        "host_network": false, "phase": "Running", "ports": [],
    });
    let mut objs = vec![
        Object::LocalNode(LocalNode {
            name: "node-a".into(),
            pod_cidrs: vec!["10.250.0.0/24".into()],
            node_ips: vec!["192.0.2.1".into()],
            gateway_ips: vec!["10.250.0.1".into()],
            gateway_mac: Some("0a:58:0a:fa:00:01".into()),
            uplink: Some("up".into()),
        }),
        Object::Pod(serde_json::from_value(pod).expect("pod")),
    ];
    objs.extend(service("cluster", "Cluster", 30080, "10.96.0.80"));
    objs.extend(service("local", "Local", 30081, "10.96.0.81"));
    objs.into_iter().collect()
}

impl Node {
    fn new() -> Node {
        let mut dp = Datapath::new(DatapathConfig::in_process(1)).expect("datapath");
        let (u, up) = MemoryPort::queue();
        dp.add_memory_port("up", PortKind::Uplink, u).expect("up");
        let (p, pod) = MemoryPort::queue();
        dp.add_memory_port("pod", PortKind::Pod, p).expect("pod");
        let chain: Vec<Box<dyn Realizer>> = vec![
            Box::new(Validator),
            Box::new(LocalNodeLog),
            Box::new(PodLinker),
            Box::new(ServiceRealizer::new(ServicesConfig::default())),
            Box::new(NodeNetwork::new(OverlayConfig::default()).without_host_neighbours()),
        ];
        let mut store = DesiredStore::new(None).with_realizers(chain);
        let info = dp
            .set_port_pod(
                "pod",
                Some(PodRef {
                    namespace: "shop".into(),
                    name: "b1".into(),
                    container_id: None,
                }),
            )
            .expect("port");
        store.port_changed(&info, true, &mut dp);
        store
            .sync_full(
                SyncFullParams {
                    generation: 1,
                    state: state(),
                    more: false,
                },
                Some(&mut dp),
            )
            .expect("sync");
        let up_info = dp
            .ports()
            .into_iter()
            .find(|p| p.name == "up")
            .expect("up port");
        let up_mac: Vec<u8> = up_info
            .mac
            .split(':')
            .map(|b| u8::from_str_radix(b, 16).expect("mac"))
            .collect();
        Node {
            dp,
            up,
            pod,
            up_mac: up_mac.try_into().expect("6 bytes"),
        }
    }

    fn run(&mut self) {
        for _ in 0..4 {
            self.dp.run_once();
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn tcp(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    syn: bool,
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(src_mac, dst_mac)
        .ipv4(src, dst, 64)
        .tcp(sport, dport, 1000, 64000);
    let b = if syn { b.syn() } else { b.syn().ack(1001) };
    let mut out = Vec::new();
    b.write(&mut out, &[]).expect("build");
    out
}

/// (eth src, eth dst, ip src, ip dst, sport, dport, ttl).
type Fields = ([u8; 6], [u8; 6], [u8; 4], [u8; 4], u16, u16, u8);

/// The fields of a TCP frame; panics unless the IPv4 and TCP checksums are right.
fn parse(f: &[u8]) -> Fields {
    let p = SlicedPacket::from_ethernet(f).expect("parse");
    let Some(etherparse::NetSlice::Ipv4(ip)) = &p.net else {
        panic!("not IPv4")
    };
    let h = ip.header().to_header();
    assert_eq!(h.calc_header_checksum(), h.header_checksum, "IPv4 checksum");
    let Some(TransportSlice::Tcp(t)) = &p.transport else {
        panic!("not TCP")
    };
    let th = t.to_header();
    assert_eq!(
        th.calc_checksum_ipv4(&h, t.payload()).expect("sum"),
        th.checksum,
        "TCP checksum"
    );
    let mut src_mac = [0; 6];
    src_mac.copy_from_slice(&f[6..12]);
    let mut dst_mac = [0; 6];
    dst_mac.copy_from_slice(&f[0..6]);
    (
        src_mac,
        dst_mac,
        h.source,
        h.destination,
        th.source_port,
        th.destination_port,
        h.time_to_live,
    )
}

#[test]
fn node_port_from_the_uplink_is_translated_both_ways() {
    let mut n = Node::new();
    let up_mac = n.up_mac;

    // Cluster: DNAT to the pod, SNAT to the node IP.
    assert!(n.up.inject(&tcp(
        CLIENT_MAC, up_mac, CLIENT_IP, NODE_IP, 40000, 30080, true
    )));
    n.run();
    let got = n.pod.take_output();
    assert_eq!(got.len(), 1, "SYN delivered to the pod");
    let (sm, dm, s, d, sp, dp, _) = parse(&got[0]);
    assert_eq!((sm, dm), (GW_MAC, POD_MAC), "routed to the pod");
    assert_eq!((d, dp), (POD_IP, 8080), "DNAT");
    assert_eq!(
        s, NODE_IP,
        "externalTrafficPolicy Cluster: SNAT to the node IP"
    );
    assert!(
        n.up.take_output().is_empty(),
        "nothing echoed on the uplink"
    );

    // The answer leaves by the uplink, translated back, to the client's MAC.
    assert!(
        n.pod
            .inject(&tcp(POD_MAC, GW_MAC, POD_IP, NODE_IP, 8080, sp, false))
    );
    n.run();
    let out = n.up.take_output();
    assert_eq!(out.len(), 1, "SYN-ACK out of the uplink");
    let (sm, dm, s, d, sp2, dp2, ttl) = parse(&out[0]);
    assert_eq!(dm, CLIENT_MAC, "to the MAC the request came from");
    assert_eq!(sm, up_mac, "from the uplink's MAC");
    assert_eq!((s, sp2), (NODE_IP, 30080), "from nodeIP:nodePort");
    assert_eq!((d, dp2), (CLIENT_IP, 40000), "to the client");
    assert_eq!(ttl, 63, "routed");
    assert!(n.pod.take_output().is_empty());

    // Local: the client's address is kept; the answer goes back the same way.
    assert!(n.up.inject(&tcp(
        CLIENT_MAC, up_mac, CLIENT_IP, NODE_IP, 40001, 30081, true
    )));
    n.run();
    let got = n.pod.take_output();
    assert_eq!(got.len(), 1, "SYN (Local) delivered");
    let (_, _, s, d, sp, dp, _) = parse(&got[0]);
    assert_eq!((s, sp), (CLIENT_IP, 40001), "Local keeps the client");
    assert_eq!((d, dp), (POD_IP, 8080));
    assert!(
        n.pod
            .inject(&tcp(POD_MAC, GW_MAC, POD_IP, CLIENT_IP, 8080, 40001, false))
    );
    n.run();
    let out = n.up.take_output();
    assert_eq!(out.len(), 1, "Local answer out of the uplink");
    let (sm, dm, s, _, sp, dp, _) = parse(&out[0]);
    assert_eq!((sm, dm), (up_mac, CLIENT_MAC));
    assert_eq!((s, sp, dp), (NODE_IP, 30081, 40001));

    // What no service takes is dropped: a NodePort-range port without a
    // service, a port outside the range, a ClusterIP from the uplink.
    for (dst, port) in [(NODE_IP, 30099u16), (NODE_IP, 22), ([10, 96, 0, 80], 80)] {
        assert!(n.up.inject(&tcp(CLIENT_MAC, up_mac, CLIENT_IP, dst, 40002, port, true)));
        n.run();
        assert!(
            n.pod.take_output().is_empty(),
            "{dst:?}:{port} reached the pod"
        );
        assert!(n.up.take_output().is_empty(), "{dst:?}:{port} came back");
    }
}

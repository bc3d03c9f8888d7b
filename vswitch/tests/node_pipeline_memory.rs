//! The node pipeline on memory ports: two nodes, each a datapath with a desired
//! store running the node realizer. A pod on A reaches a pod on B through VXLAN;
//! the gateway answers ARP; VXLAN from an unknown address is dropped on a counted
//! flow; removing node B removes exactly its flows. No root needed.

use etherparse::PacketBuilder;
use std::net::Ipv4Addr;
use vswitch::desired::DesiredStore;
use vswitch::desired::realize::{LocalNodeLog, PodLinker, Realizer, Validator};
use vswitch::flow::layout::cookie;
use vswitch::flow::spec::FlowFilter;
use vswitch::overlay::node::{NodeNetwork, OverlayConfig};
use vswitch::port::memory::{MemoryPort, MemoryPortHandle};
use vswitch::{Datapath, DatapathConfig};
use vswitch_proto::model::{LocalNode, Node, Object, Pod};
use vswitch_proto::{DesiredState, PodRef, PortKind, SyncFullParams};

struct Host {
    dp: Datapath,
    store: DesiredStore,
    pod: MemoryPortHandle,
    up: MemoryPortHandle,
    generation: u64,
}

fn node(name: &str, cidr: &str, ip: &str) -> Node {
    Node {
        name: name.into(),
        pod_cidrs: vec![cidr.into()],
        internal_ips: vec![ip.into()],
        vtep: None,
        labels: Default::default(),
    }
}

fn pod(name: &str, ip: &str, node: &str, local: bool) -> Object {
    Object::Pod(Pod {
        namespace: "default".into(),
        name: name.into(),
        uid: format!("uid-{name}"),
        labels: Default::default(),
        ips: vec![ip.into()],
        mac: None,
        node_name: Some(node.into()),
        local,
        host_network: false,
        phase: Some("Running".into()),
        host_ifname: None,
        ports: vec![],
    })
}

fn state(me: &str, nodes: &[Node], pods: Vec<Object>) -> DesiredState {
    let n = nodes.iter().find(|n| n.name == me).expect("me");
    let cidr = &n.pod_cidrs[0];
    let gw = cidr.replace(".0/24", ".1");
    let gw_ip: Ipv4Addr = gw.parse().expect("gw");
    let o = gw_ip.octets();
    let mut objs = vec![Object::LocalNode(LocalNode {
        name: me.into(),
        pod_cidrs: vec![cidr.clone()],
        node_ips: n.internal_ips.clone(),
        gateway_ips: vec![gw],
        gateway_mac: Some(format!(
            "0a:58:{:02x}:{:02x}:{:02x}:{:02x}",
            o[0], o[1], o[2], o[3]
        )),
        uplink: Some("up".into()),
    })];
    objs.extend(nodes.iter().cloned().map(Object::Node));
    objs.extend(pods);
    objs.into_iter().collect()
}

impl Host {
    fn new(pod_name: &str, peer_ip: Ipv4Addr) -> Host {
        let mut dp = Datapath::new(DatapathConfig::in_process(1)).expect("datapath");
        let (u, up) = MemoryPort::queue();
        dp.add_memory_port("up", PortKind::Uplink, u).expect("up");
        let (p, pod) = MemoryPort::queue();
        dp.add_memory_port("pod", PortKind::Pod, p).expect("pod");
        let mut nn = NodeNetwork::new(OverlayConfig::default()).without_host_neighbours();
        nn.set_neighbour(peer_ip, [2, 0, 0, 0, 0, 0x99]);
        let chain: Vec<Box<dyn Realizer>> = vec![
            Box::new(Validator),
            Box::new(LocalNodeLog),
            Box::new(PodLinker),
            Box::new(nn),
        ];
        let mut store = DesiredStore::new(None).with_realizers(chain);
        let info = dp
            .set_port_pod(
                "pod",
                Some(PodRef {
                    namespace: "default".into(),
                    name: pod_name.into(),
                    container_id: None,
                }),
            )
            .expect("port");
        store.port_changed(&info, true, &mut dp);
        Host {
            dp,
            store,
            pod,
            up,
            generation: 0,
        }
    }

    fn sync(&mut self, s: DesiredState) {
        self.generation += 1;
        self.store
            .sync_full(
                SyncFullParams {
                    generation: self.generation,
                    state: s,
                    more: false,
                },
                Some(&mut self.dp),
            )
            .expect("sync");
    }

    fn run(&mut self) {
        for _ in 0..4 {
            self.dp.run_once();
        }
    }

    fn node_flows(&self, filter_cookie: Option<(u64, u64)>) -> usize {
        self.dp
            .dump_flows(&FlowFilter {
                cookie: Some(filter_cookie.unwrap_or((cookie::NODE, cookie::MASK))),
                ..FlowFilter::default()
            })
            .len()
    }
}

fn udp(src: [u8; 4], dst: [u8; 4], dst_mac: [u8; 6]) -> Vec<u8> {
    let src_mac = [0x0a, 0x58, src[0], src[1], src[2], src[3]];
    let b = PacketBuilder::ethernet2(src_mac, dst_mac)
        .ipv4(src, dst, 64)
        .udp(40000, 7);
    let mut out = Vec::new();
    b.write(&mut out, &[0x42; 64]).expect("build");
    out
}

const GW_A: [u8; 6] = [0x0a, 0x58, 10, 1, 0, 1];

fn cluster() -> (Host, Host, Vec<Node>) {
    let nodes = vec![
        node("a", "10.1.0.0/24", "192.0.2.1"),
        node("b", "10.2.0.0/24", "192.0.2.2"),
    ];
    let pods = || {
        vec![
            pod("pa", "10.1.0.2", "a", false),
            pod("pb", "10.2.0.3", "b", false),
        ]
    };
    let mut a = Host::new("pa", "192.0.2.2".parse().expect("ip"));
    let mut b = Host::new("pb", "192.0.2.1".parse().expect("ip"));
    a.sync(state("a", &nodes, pods()));
    b.sync(state("b", &nodes, pods()));
    (a, b, nodes)
}

#[test]
fn pod_to_remote_pod_through_the_node_pipeline() {
    let (mut a, mut b, _) = cluster();
    assert!(a.node_flows(None) > 5, "node flows installed");
    let sent = udp([10, 1, 0, 2], [10, 2, 0, 3], GW_A);
    assert!(a.pod.inject(&sent));
    a.run();
    let wire = a.up.take_output();
    assert_eq!(wire.len(), 1, "encapsulated on the uplink");
    assert_eq!(&wire[0][0..6], &[2, 0, 0, 0, 0, 0x99], "next hop");
    assert!(b.up.inject(&wire[0]));
    b.run();
    let got = b.pod.take_output();
    assert_eq!(got.len(), 1, "delivered on B");
    assert_eq!(&got[0][0..6], &[0x0a, 0x58, 10, 2, 0, 3]);
    assert_eq!(&got[0][6..12], &[0x0a, 0x58, 10, 2, 0, 1]);
    assert_eq!(&got[0][42..], &sent[42..]);
}

#[test]
fn gateway_answers_arp_and_spoofed_sources_are_dropped() {
    let (mut a, _b, _) = cluster();
    let b = PacketBuilder::ethernet2([0x0a, 0x58, 10, 1, 0, 2], [0xff; 6]).arp(
        etherparse::ArpPacket::new(
            etherparse::ArpHardwareId::ETHERNET,
            etherparse::EtherType::IPV4,
            etherparse::ArpOperation::REQUEST,
            &[0x0a, 0x58, 10, 1, 0, 2],
            &[10, 1, 0, 2],
            &[0; 6],
            &[10, 1, 0, 1],
        )
        .expect("arp"),
    );
    let mut req = Vec::new();
    b.write(&mut req).expect("build");
    assert!(a.pod.inject(&req));
    a.run();
    let got = a.pod.take_output();
    assert_eq!(got.len(), 1, "ARP answered");
    assert_eq!(&got[0][6..12], &GW_A);
    // A pod sending from another IP goes nowhere.
    assert!(a.pod.inject(&udp([10, 1, 0, 9], [10, 2, 0, 3], GW_A)));
    a.run();
    assert!(a.up.take_output().is_empty());
}

#[test]
fn vxlan_from_unknown_node_is_dropped_and_node_removal_is_local() {
    let (mut a, mut b, nodes) = cluster();
    assert!(a.pod.inject(&udp([10, 1, 0, 2], [10, 2, 0, 3], GW_A)));
    a.run();
    let mut outer = a.up.take_output().remove(0);
    // Rewrite the outer source to an unknown address (fix the header checksum).
    outer[14 + 15] = 77;
    outer[24..26].fill(0);
    let mut sum = 0u32;
    for c in outer[14..34].chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    outer[24..26].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    assert!(b.up.inject(&outer));
    b.run();
    assert!(
        b.pod.take_output().is_empty(),
        "spoofed VXLAN not delivered"
    );
    b.dp.flush_flow_stats();
    let rej = b.dp.dump_flows(&FlowFilter {
        cookie: Some((cookie::NODE, u64::MAX)),
        table: Some(0),
        ..FlowFilter::default()
    });
    let hits: u64 = rej
        .iter()
        .filter(|r| r.spec.priority == 150)
        .map(|r| r.stats.packets())
        .sum();
    assert_eq!(hits, 1, "counted on the unknown-VXLAN drop flow");

    // Node b leaves A's state: its group of flows goes, the rest stays.
    let before_base = a.node_flows(Some((cookie::NODE, u64::MAX)));
    let before_all = a.node_flows(None);
    a.sync(state(
        "a",
        &nodes[..1],
        vec![pod("pa", "10.1.0.2", "a", false)],
    ));
    assert_eq!(a.node_flows(Some((cookie::NODE, u64::MAX))), before_base);
    assert!(a.node_flows(None) < before_all);
    assert!(a.pod.inject(&udp([10, 1, 0, 2], [10, 2, 0, 3], GW_A)));
    a.run();
    assert!(a.up.take_output().is_empty(), "no route to a removed node");
}

fn arp(op: etherparse::ArpOperation, src: [u8; 4], dst_mac: [u8; 6], tpa: [u8; 4]) -> Vec<u8> {
    let sha = [0x0a, 0x58, src[0], src[1], src[2], src[3]];
    let b = PacketBuilder::ethernet2(sha, dst_mac).arp(
        etherparse::ArpPacket::new(
            etherparse::ArpHardwareId::ETHERNET,
            etherparse::EtherType::IPV4,
            op,
            &sha,
            &src,
            &if dst_mac == [0xff; 6] {
                [0; 6]
            } else {
                dst_mac
            },
            &tpa,
        )
        .expect("arp"),
    );
    let mut out = Vec::new();
    b.write(&mut out).expect("build");
    out
}

/// A pod's ARP broadcast (and unknown unicast) reaches the node's other pods and
/// the gateway port, never the uplink: only tunnel traffic leaves by the node's NIC.
#[test]
fn pod_broadcasts_stay_off_the_uplink() {
    let mut a = Host::new("pa", "192.0.2.2".parse().expect("ip"));
    let (p2, pod2) = MemoryPort::queue();
    a.dp.add_memory_port("pod2", PortKind::Pod, p2)
        .expect("pod2");
    let info =
        a.dp.set_port_pod(
            "pod2",
            Some(PodRef {
                namespace: "default".into(),
                name: "pc".into(),
                container_id: None,
            }),
        )
        .expect("port");
    a.store.port_changed(&info, true, &mut a.dp);
    let (g, gw) = MemoryPort::queue();
    let ginfo =
        a.dp.add_memory_port("gw0", PortKind::Gateway, g)
            .expect("gw0");
    a.store.port_changed(&ginfo, true, &mut a.dp);
    let nodes = vec![
        node("a", "10.1.0.0/24", "192.0.2.1"),
        node("b", "10.2.0.0/24", "192.0.2.2"),
    ];
    a.sync(state(
        "a",
        &nodes,
        vec![
            pod("pa", "10.1.0.2", "a", true),
            pod("pc", "10.1.0.5", "a", true),
            pod("pb", "10.2.0.3", "b", false),
        ],
    ));

    // Who has 10.1.0.5? (pod pa asks for pod pc on the same node)
    let req = arp(
        etherparse::ArpOperation::REQUEST,
        [10, 1, 0, 2],
        [0xff; 6],
        [10, 1, 0, 5],
    );
    assert!(a.pod.inject(&req));
    a.run();
    assert_eq!(
        pod2.take_output(),
        vec![req.clone()],
        "the other pod hears it"
    );
    assert_eq!(
        gw.take_output(),
        vec![req.clone()],
        "the host (gateway) hears it"
    );
    assert!(a.up.take_output().is_empty(), "not flooded to the uplink");
    assert!(a.pod.take_output().is_empty(), "not back to the sender");

    // pc answers (unicast to pa, learned on pa's port): delivered to pa only.
    let reply = arp(
        etherparse::ArpOperation::REPLY,
        [10, 1, 0, 5],
        [0x0a, 0x58, 10, 1, 0, 2],
        [10, 1, 0, 2],
    );
    assert!(pod2.inject(&reply));
    a.run();
    assert_eq!(a.pod.take_output(), vec![reply]);
    assert!(gw.take_output().is_empty() && a.up.take_output().is_empty());

    // Unicast to a MAC nobody has shown (flooded by the learning bridge): still
    // not on the uplink.
    let unknown = arp(
        etherparse::ArpOperation::REPLY,
        [10, 1, 0, 2],
        [0x0a, 0x58, 10, 1, 0, 77],
        [10, 1, 0, 77],
    );
    assert!(a.pod.inject(&unknown));
    a.run();
    assert_eq!(pod2.take_output().len(), 1, "flooded to the other pod");
    assert_eq!(gw.take_output().len(), 1, "and to the gateway");
    assert!(a.up.take_output().is_empty(), "never to the uplink");

    // Tunnel traffic still leaves by the uplink (explicit output).
    assert!(a.pod.inject(&udp([10, 1, 0, 2], [10, 2, 0, 3], GW_A)));
    a.run();
    assert_eq!(a.up.take_output().len(), 1, "encapsulated on the uplink");
}

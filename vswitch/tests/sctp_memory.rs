//! SCTP through Services and NetworkPolicy at frame level, on memory ports: this
//! machine's kernel has no `sctp` module (`modprobe sctp` fails), so no real SCTP
//! socket can run in the namespace end-to-end tests. Here crafted SCTP frames go
//! in and what comes out is checked byte by byte: the ClusterIP DNAT (address and
//! port rewritten, CRC32c recomputed) and its reverse on the reply, and policy
//! allowing or dropping SCTP by port and peer. No root needed.

use std::net::Ipv4Addr;
use vswitch::desired::DesiredStore;
use vswitch::desired::realize::default_chain;
use vswitch::flow::rewrite::crc32c;
use vswitch::port::memory::{MemoryPort, MemoryPortHandle};
use vswitch::{Datapath, DatapathConfig};
use vswitch_proto::model::*;
use vswitch_proto::{DesiredState, PortKind, SyncFullParams};

const GW_MAC: [u8; 6] = [0x0a, 0x58, 10, 1, 0, 1];
const VIP: [u8; 4] = [10, 96, 0, 20];

fn mac_of(ip: [u8; 4]) -> [u8; 6] {
    [0x0a, 0x58, ip[0], ip[1], ip[2], ip[3]]
}

/// An SCTP INIT (or, with `ack`, INIT ACK) frame with valid IPv4 and CRC32c
/// checksums.
fn sctp(
    src: [u8; 4],
    dst: [u8; 4],
    dst_mac: [u8; 6],
    sport: u16,
    dport: u16,
    ack: bool,
) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&mac_of(src));
    f.extend_from_slice(&[0x08, 0x00]);
    // IPv4: 20 + 12 (common header) + 20 (INIT chunk).
    let total: u16 = 20 + 12 + 20;
    let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 132, 0, 0];
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&dst);
    let sum = ipv4_sum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&ip);
    let mut s = Vec::new();
    s.extend_from_slice(&sport.to_be_bytes());
    s.extend_from_slice(&dport.to_be_bytes());
    // Verification tag: 0 on INIT, the peer's on INIT ACK.
    s.extend_from_slice(&(if ack { 0x1122_3344u32 } else { 0 }).to_be_bytes());
    s.extend_from_slice(&[0; 4]); // checksum, filled below
    // INIT / INIT ACK chunk: type, flags, length 20, initiate tag, a_rwnd,
    // outbound and inbound streams, initial TSN.
    s.extend_from_slice(&[if ack { 2 } else { 1 }, 0, 0, 20]);
    s.extend_from_slice(&0x5566_7788u32.to_be_bytes());
    s.extend_from_slice(&65535u32.to_be_bytes());
    s.extend_from_slice(&[0, 10, 0, 10]);
    s.extend_from_slice(&1u32.to_be_bytes());
    let c = crc32c(&s);
    s[8..12].copy_from_slice(&c.to_le_bytes());
    f.extend_from_slice(&s);
    f
}

/// A gratuitous ARP from `ip` (so the switch learns the pod's MAC).
fn garp(ip: [u8; 4]) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&mac_of(ip));
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&mac_of(ip));
    f.extend_from_slice(&ip);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&ip);
    f
}

fn ipv4_sum(h: &[u8]) -> u16 {
    let mut sum: u32 = h
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// What a frame carries: (src, dst, sport, dport), with both checksums checked.
fn parse(f: &[u8]) -> ([u8; 4], [u8; 4], u16, u16) {
    assert!(f.len() >= 14 + 20 + 12, "short frame");
    let ip = &f[14..34];
    assert_eq!(ip[9], 132, "SCTP");
    assert_eq!(ipv4_sum(ip), 0, "IPv4 header checksum");
    let s = &f[34..];
    let mut z = s.to_vec();
    z[8..12].copy_from_slice(&[0; 4]);
    assert_eq!(
        u32::from_le_bytes([s[8], s[9], s[10], s[11]]),
        crc32c(&z),
        "SCTP CRC32c"
    );
    (
        [ip[12], ip[13], ip[14], ip[15]],
        [ip[16], ip[17], ip[18], ip[19]],
        u16::from_be_bytes([s[0], s[1]]),
        u16::from_be_bytes([s[2], s[3]]),
    )
}

fn obj(v: serde_json::Value) -> Object {
    serde_json::from_value(v).expect("object")
}

fn pod(name: &str, ip: [u8; 4], role: &str) -> Object {
    obj(serde_json::json!({
        "kind": "Pod", "namespace": "shop", "name": name, "uid": format!("uid-{name}"),
        "labels": {"role": role}, "ips": [Ipv4Addr::from(ip).to_string()],
        "node_name": "node-a", "local": true,
    }))
}

struct Node {
    dp: Datapath,
    store: DesiredStore,
    ports: Vec<MemoryPortHandle>,
    generation: u64,
}

const CLIENT: [u8; 4] = [10, 1, 0, 2];
const OTHER: [u8; 4] = [10, 1, 0, 3];
const BACKEND: [u8; 4] = [10, 1, 0, 10];

impl Node {
    /// Ports 0: client, 1: other, 2: backend.
    fn new() -> Node {
        let mut dp = Datapath::new(DatapathConfig::in_process(1)).expect("datapath");
        let mut ports = Vec::new();
        for name in ["client", "other", "backend"] {
            let (p, h) = MemoryPort::queue();
            dp.add_memory_port(name, PortKind::Pod, p).expect("port");
            ports.push(h);
        }
        Node {
            dp,
            store: DesiredStore::new(None).with_realizers(default_chain()),
            ports,
            generation: 0,
        }
    }

    fn sync(&mut self, objs: Vec<Object>) {
        self.generation += 1;
        let state: DesiredState = objs.into_iter().collect();
        let r = self
            .store
            .sync_full(
                SyncFullParams {
                    generation: self.generation,
                    state,
                    more: false,
                },
                Some(&mut self.dp),
            )
            .expect("sync");
        assert!(r.rejected.is_empty(), "{:?}", r.rejected);
    }

    /// Sends `f` in on port `from`; returns what every port got.
    fn send(&mut self, from: usize, f: &[u8]) -> Vec<Vec<Vec<u8>>> {
        assert!(self.ports[from].inject(f));
        for _ in 0..4 {
            self.dp.run_once();
        }
        self.ports.iter().map(|p| p.take_output()).collect()
    }
}

fn base() -> Vec<Object> {
    vec![
        obj(serde_json::json!({"kind": "LocalNode", "name": "node-a",
            "pod_cidrs": ["10.1.0.0/24"], "node_ips": ["192.0.2.1"],
            "gateway_ips": ["10.1.0.1"], "gateway_mac": "0a:58:0a:01:00:01"})),
        pod("client", CLIENT, "client"),
        pod("other", OTHER, "other"),
        pod("backend", BACKEND, "server"),
        // SCTP port 3868 (Diameter) to target port 13868.
        obj(
            serde_json::json!({"kind": "Service", "namespace": "shop", "name": "diameter",
            "cluster_ips": ["10.96.0.20"],
            "ports": [{"port": 3868, "protocol": "SCTP", "target_port": 13868}]}),
        ),
        obj(
            serde_json::json!({"kind": "Endpoints", "namespace": "shop", "name": "diameter",
            "endpoints": [{"addresses": ["10.1.0.10"], "ready": true, "serving": true,
                "terminating": false, "node_name": "node-a"}]}),
        ),
    ]
}

/// An SCTP INIT to the ClusterIP is DNATed to the endpoint (address and port,
/// CRC32c recomputed); the INIT ACK comes back from the ClusterIP's address and
/// port; SCTP to the ClusterIP on another port is not load-balanced.
#[test]
fn sctp_cluster_ip_is_translated_both_ways() {
    let mut n = Node::new();
    n.sync(base());
    for (i, ip) in [CLIENT, OTHER, BACKEND].into_iter().enumerate() {
        n.send(i, &garp(ip));
    }
    let out = n.send(0, &sctp(CLIENT, VIP, GW_MAC, 5000, 3868, false));
    assert_eq!(out[2].len(), 1, "delivered to the backend: {out:?}");
    let f = &out[2][0];
    assert_eq!(&f[0..6], &mac_of(BACKEND), "endpoint MAC");
    assert_eq!(parse(f), (CLIENT, BACKEND, 5000, 13868), "DNAT");
    assert!(out[0].is_empty() && out[1].is_empty(), "{out:?}");

    // The reply, as the backend sends it (to the client directly).
    let out = n.send(2, &sctp(BACKEND, CLIENT, mac_of(CLIENT), 13868, 5000, true));
    assert_eq!(out[0].len(), 1, "reply delivered to the client: {out:?}");
    assert_eq!(parse(&out[0][0]), (VIP, CLIENT, 3868, 5000), "reverse NAT");
    let ct = n.dp.conntrack().table.collect(|c| c.orig.proto == 132);
    assert_eq!(ct.len(), 1, "{ct:?}");
    assert_ne!(ct[0].service, 0, "load-balanced");

    // Another port of the ClusterIP: no service, so no DNAT.
    let out = n.send(0, &sctp(CLIENT, VIP, GW_MAC, 5001, 3869, false));
    assert!(
        out[2].iter().all(|f| parse(f).1 != BACKEND),
        "not translated: {out:?}"
    );
}

fn sctp_policy() -> Object {
    let sel = |k: &str, v: &str| LabelSelector {
        match_labels: [(k.to_string(), v.to_string())].into(),
        ..LabelSelector::default()
    };
    Object::NetworkPolicy(NetworkPolicy {
        namespace: "shop".into(),
        name: "sctp-in".into(),
        spec: NetworkPolicySpec {
            pod_selector: sel("role", "server"),
            policy_types: Some(vec![PolicyType::Ingress]),
            ingress: vec![IngressRule {
                from: vec![PolicyPeer {
                    pod_selector: Some(sel("role", "client")),
                    ..PolicyPeer::default()
                }],
                ports: vec![PolicyPort {
                    protocol: Some(Protocol::SCTP),
                    port: Some(PortRef::Number(13868)),
                    end_port: None,
                }],
            }],
            ..NetworkPolicySpec::default()
        },
    })
}

/// NetworkPolicy on SCTP: the backend admits SCTP 13868 from the client only.
/// Direct and through the ClusterIP (egress after DNAT sees the endpoint), the
/// client's INIT passes; the other pod's, and SCTP to another port, are dropped
/// and counted against the policy.
#[test]
fn sctp_network_policy_allows_by_port_and_peer() {
    let mut n = Node::new();
    let mut objs = base();
    objs.push(sctp_policy());
    n.sync(objs);
    let to_backend = |out: &Vec<Vec<Vec<u8>>>| out[2].iter().map(|f| parse(f)).collect::<Vec<_>>();

    let out = n.send(
        0,
        &sctp(CLIENT, BACKEND, mac_of(BACKEND), 6000, 13868, false),
    );
    assert_eq!(
        to_backend(&out),
        vec![(CLIENT, BACKEND, 6000, 13868)],
        "client direct"
    );
    let out = n.send(0, &sctp(CLIENT, VIP, GW_MAC, 6001, 3868, false));
    assert_eq!(
        to_backend(&out),
        vec![(CLIENT, BACKEND, 6001, 13868)],
        "client via the ClusterIP"
    );

    let out = n.send(
        1,
        &sctp(OTHER, BACKEND, mac_of(BACKEND), 6002, 13868, false),
    );
    assert!(out[2].is_empty(), "other pod dropped: {out:?}");
    let out = n.send(1, &sctp(OTHER, VIP, GW_MAC, 6003, 3868, false));
    assert!(
        out[2].is_empty(),
        "other pod via the ClusterIP dropped: {out:?}"
    );
    let out = n.send(
        0,
        &sctp(CLIENT, BACKEND, mac_of(BACKEND), 6004, 13869, false),
    );
    assert!(
        out[2].is_empty(),
        "client on another SCTP port dropped: {out:?}"
    );

    // The allowed association's reply goes back; counters name the policy.
    let out = n.send(2, &sctp(BACKEND, CLIENT, mac_of(CLIENT), 13868, 6000, true));
    assert_eq!(out[0].len(), 1, "reply of an allowed association: {out:?}");
    let report = vswitch::policy::report::policies(
        n.store.policy_compiler(),
        &vswitch_proto::PoliciesParams::default(),
    );
    let p = report
        .policies
        .iter()
        .find(|p| p.name == "sctp-in")
        .expect("policy reported");
    assert_eq!(p.denied_ingress, 3, "{p:?}");
    assert_eq!(p.rules.iter().map(|r| r.allowed).sum::<u64>(), 2, "{p:?}");
}

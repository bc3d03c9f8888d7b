//! The multi-node overlay end to end: two "nodes" (network namespaces joined by an
//! underlay veth carrying the node IPs), each running its own `vswitchd` with an
//! `[overlay]` section and `vswitch-agent --manifests` (Node objects with podCIDR and
//! InternalIP, Pod objects once the CNI plugin gave the pods their addresses). Pods
//! are attached by `vswitch-cni` with `host-local` IPAM, as the kubelet would. The
//! uplink is the node's underlay veth, attached in `packet` mode (the switch sees a
//! copy of each frame; the node's own stack keeps ARP working and drops the VXLAN
//! datagrams with an iptables rule, standing in for the uplink XDP filter).
//!
//! ```text
//!  pod a1 ─┐                                             ┌─ pod b1
//!          ├─ vswitchd (node-a) ─ ua 192.168.77.1 ═══ ub 192.168.77.2 ─ vswitchd (node-b) ─┤
//!  pod a2 ─┘   10.244.1.0/24                                 10.244.2.0/24               └─ ...
//! ```
//!
//!     cargo build && cargo test --test e2e_overlay -- --nocapture --test-threads 1
//!
//! Needs root, built binaries and containernetworking-plugins (host-local).

mod overlay_cluster;

use overlay_cluster::{
    Cluster, ClusterOpts, Extra, NodeNs, WAIT, host_tunnel_packets, node_doc, ping_df, ping_ns,
    ping_until, pod_to_outside, udp_echo, udp_receiver, vxlan_payload, write,
};
use std::net::{Ipv4Addr, UdpSocket};
use std::time::{Duration, Instant};
use vswitch_suite::netns::Netns;
use vswitch_suite::pod::tcp_transfer_ns;
use vswitch_suite::unique_suffix;
use vswitch_suite::veth::Veth;
use vswitch_suite::wait_for;

const NETWORK: &str = "vstovl";

impl NodeNs {
    fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 244, self.subnet, 1)
    }
}

/// Two nodes on an underlay with MTU `mtu`, switches in overlay `mode`, the uplink
/// in `packet` mode.
fn cluster(mtu: u32, mode: &str) -> Cluster {
    cluster_with(mtu, mode, "packet")
}

/// [`cluster`] with the uplink port in `uplink_mode` (`packet`, or an XDP mode: then
/// the switch's uplink filter takes the tunnel traffic).
fn cluster_with(mtu: u32, mode: &str, uplink_mode: &str) -> Cluster {
    Cluster::new(&ClusterOpts {
        network: NETWORK,
        mtu,
        mode,
        uplink_mode,
        vswitchd_args: Vec::new(),
        underlay_gro: false,
    })
}

/// Until `pods[a]` and `pods[b]` ping each other, then 5 pings each way all answered.
fn assert_pings(c: &Cluster, a: usize, b: usize) {
    let (pa, pb) = (&c.pods[a], &c.pods[b]);
    for (x, y) in [(pa, pb), (pb, pa)] {
        assert!(
            ping_until(&x.ns, y.ip, WAIT),
            "{} ({}) never reached {} ({})\n{}",
            x.name,
            x.ip,
            y.name,
            y.ip,
            c.logs()
        );
        let (got, text) = ping_ns(&x.ns, y.ip, 5);
        assert_eq!(got, 5, "{} -> {}: {text}", x.name, y.name);
    }
}

/// The standard two-node cluster with two pods on node a and one on node b, every
/// pod reaching every other.
fn two_nodes(mtu: u32) -> Cluster {
    two_nodes_with(mtu, None)
}

/// [`two_nodes`] with `mtu` in the CNI configuration.
fn two_nodes_with(mtu: u32, pod_mtu: Option<u32>) -> Cluster {
    let mut c = cluster(mtu, "vxlan");
    for n in &mut c.nodes {
        n.pod_mtu = pod_mtu;
    }
    c.start_agents(&Extra::default());
    c.add_pod(0, "a1");
    c.add_pod(0, "a2");
    c.add_pod(1, "b1");
    assert_pings(&c, 0, 2);
    c
}

#[test]
fn pods_on_two_nodes_reach_each_other_over_vxlan() {
    let Some(_env) = vswitch_suite::e2e() else {
        return;
    };
    let c = two_nodes(1500);
    let (a1, a2, b1) = (&c.pods[0], &c.pods[1], &c.pods[2]);

    // ICMP across nodes and on the same node.
    assert_pings(&c, 1, 2);
    assert_pings(&c, 0, 1);

    // The gateway answers ARP (with 0a:58 + its address) and ping.
    let gw = c.nodes[0].gateway();
    let (got, text) = ping_ns(&a1.ns, gw, 3);
    assert_eq!(got, 3, "ping gateway {gw}: {text}");
    let neigh = a1
        .ns
        .ip(&["neigh", "show", &gw.to_string()])
        .expect("neigh");
    assert!(neigh.contains("0a:58:0a:f4:01:01"), "gateway MAC: {neigh}");
    let (got, text) = ping_ns(&b1.ns, c.nodes[1].gateway(), 3);
    assert_eq!(got, 3, "ping node b's gateway: {text}");

    // The frames really crossed the underlay as VXLAN: node a's decap flow counts.
    let decap = c.nodes[0].flow_packets(&["decap", "192.168.77.2"]);
    assert!(decap >= 5, "decap flow of node b: {decap}\n{}", c.logs());

    // UDP both ways with real sockets.
    udp_echo(a1, b1, 200).expect("udp a1 -> b1");
    udp_echo(b1, a2, 200).expect("udp b1 -> a2");

    // TCP both ways, then 100 MB with the pod MTU = underlay MTU - 50 (the CNI
    // plugin's default, from the switch's uplink port).
    tcp_transfer_ns(&a1.ns, &b1.ns, b1.ip, 1 << 20).expect("tcp a1 -> b1");
    tcp_transfer_ns(&b1.ns, &a2.ns, a2.ip, 1 << 20).expect("tcp b1 -> a2");
    let mtu = a1.ns.ip(&["link", "show", "eth0"]).expect("eth0");
    assert!(mtu.contains("mtu 1450"), "pod MTU: {mtu}");
    let t = tcp_transfer_ns(&a2.ns, &b1.ns, b1.ip, 100 << 20)
        .unwrap_or_else(|e| panic!("100 MB a2 -> b1: {e}\n{}", c.logs()));
    eprintln!(
        "100 MB across nodes: {:.1} s, {:.0} Mbit/s (debug build, shared machine)",
        t.elapsed.as_secs_f64(),
        t.mbit_per_s()
    );
}

#[test]
fn removing_a_node_stops_traffic_and_re_adding_restores_it() {
    let Some(_env) = vswitch_suite::e2e() else {
        return;
    };
    let c = two_nodes(1500);
    let (a1, b1) = (&c.pods[0], &c.pods[2]);
    let na = &c.nodes[0];
    let all = c.node_docs(&Extra::default());

    // Node a forgets node b (no restart of anything).
    let only_a = node_doc(&na.name, na.subnet, na.node_ip, "");
    write(na.manifests.path(), "nodes.yaml", &only_a);
    let gone = wait_for(WAIT, || {
        (!na.dump_flows().contains("10.244.2.0/24")).then_some(())
    });
    assert!(gone.is_some(), "route to node b still there\n{}", c.logs());
    let (got, text) = ping_ns(&a1.ns, b1.ip, 5);
    assert_eq!(got, 0, "a1 -> b1 must stop: {text}");
    // b still tunnels to a; a drops it as VXLAN from an unknown address, counted.
    let before = na.flow_packets(&["priority=150"]);
    let (got, text) = ping_ns(&b1.ns, a1.ip, 5);
    assert_eq!(got, 0, "b1 -> a1 must stop: {text}");
    let after = na.flow_packets(&["priority=150"]);
    assert!(
        after >= before + 5,
        "dropped VXLAN from node b not counted: {before} -> {after}\n{}",
        c.logs()
    );

    // Re-added: traffic flows again.
    write(na.manifests.path(), "nodes.yaml", &all);
    assert_pings(&c, 0, 2);
    tcp_transfer_ns(&a1.ns, &b1.ns, b1.ip, 1 << 20).expect("tcp after re-adding");
}

#[test]
fn vxlan_from_an_unknown_address_is_dropped_and_counted() {
    let Some(_env) = vswitch_suite::e2e() else {
        return;
    };
    let c = two_nodes(1500);
    let (a1, b1) = (&c.pods[0], &c.pods[2]);
    let (na, nb) = (&c.nodes[0], &c.nodes[1]);
    // An impostor address on node b's underlay interface.
    nb.ns
        .ip(&["addr", "add", "192.168.77.9/24", "dev", &nb.uplink])
        .expect("impostor address");

    let rx = udp_receiver(&a1.ns, 7777, Duration::from_secs(4));
    std::thread::sleep(Duration::from_millis(300));
    let before = na.flow_packets(&["priority=150"]);
    let (a1_ip, b1_ip) = (a1.ip, b1.ip);
    nb.ns
        .enter(move || {
            // The same inner frame from the impostor (must be dropped) and from node
            // b's real address (must arrive: the test can tell the difference).
            for (from, tag) in [("192.168.77.9", b"spoofed"), ("192.168.77.2", b"genuine")] {
                let s = UdpSocket::bind(format!("{from}:0"))?;
                let p = vxlan_payload(b1_ip, a1_ip, 7777, 1, tag);
                for _ in 0..5 {
                    s.send_to(&p, "192.168.77.1:4789")?;
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            Ok(())
        })
        .expect("send VXLAN");
    let got = rx.join().expect("receiver thread").expect("receive");
    assert!(
        got.iter().all(|d| d == b"genuine"),
        "spoofed VXLAN reached the pod: {got:?}"
    );
    assert!(
        !got.is_empty(),
        "VXLAN from node b's own address did not arrive (the check proves nothing)\n{}",
        c.logs()
    );
    let after = na.flow_packets(&["priority=150"]);
    assert!(
        after >= before + 5,
        "spoofed VXLAN not counted: {before} -> {after}\n{}",
        c.logs()
    );
}

#[test]
fn df_packets_too_big_for_the_tunnel_get_frag_needed() {
    let Some(_env) = vswitch_suite::e2e() else {
        return;
    };
    // Underlay 1400, pods with an explicit 1450: full-size pod packets do not fit.
    let mut c = two_nodes_with(1400, Some(1450));
    // Without the explicit mtu a pod follows the uplink: 1400 - 50.
    c.nodes[0].pod_mtu = None;
    let a3 = c.add_pod(0, "a3");
    let link = c.pods[a3].ns.ip(&["link", "show", "eth0"]).expect("eth0");
    assert!(
        link.contains("mtu 1350"),
        "default pod MTU on a 1400 underlay: {link}"
    );
    let a1_link = c.pods[0].ns.ip(&["link", "show", "eth0"]).expect("eth0");
    assert!(a1_link.contains("mtu 1450"), "explicit pod MTU: {a1_link}");
    let (a1, b1) = (&c.pods[0], &c.pods[2]);
    // 1422 + 28 = 1450 bytes of IP with DF: the switch answers frag-needed, mtu 1350.
    let text = ping_df(&a1.ns, b1.ip, 1422);
    assert!(
        text.contains("mtu = 1350") || text.contains("mtu=1350"),
        "no frag-needed with mtu 1350: {text}"
    );
    let route = a1
        .ns
        .ip(&["route", "get", &b1.ip.to_string()])
        .expect("route get");
    assert!(route.contains("mtu 1350"), "PMTU not learned: {route}");
    let st = c.nodes[0].daemon.stats().expect("stats");
    let too_big: u64 = st.0["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["drops"]["tunnel_too_big"].as_u64())
        .sum();
    assert!(too_big >= 1, "tunnel_too_big not counted: {}", st.0);
    // What fits goes through; TCP finds the path MTU and completes both ways.
    let (got, text) = ping_ns(&a1.ns, b1.ip, 3);
    assert_eq!(got, 3, "{text}");
    let start = Instant::now();
    tcp_transfer_ns(&b1.ns, &a1.ns, a1.ip, 4 << 20)
        .unwrap_or_else(|e| panic!("tcp b1 -> a1 over the smaller path: {e}\n{}", c.logs()));
    tcp_transfer_ns(&a1.ns, &b1.ns, b1.ip, 4 << 20).expect("tcp a1 -> b1");
    eprintln!("PMTU transfers took {:?}", start.elapsed());
}

/// flannel's VTEP MAC on the kernel node (flannel picks a random one and publishes it).
const FLANNEL_VTEP: &str = "0e:fa:00:00:03:01";

/// A node configured the way flannel's vxlan backend configures the kernel:
/// `flannel.1` (VNI 1, dstport 8472, nolearning) holding the subnet's network
/// address, per remote node an FDB entry (VTEP MAC -> node IP), a permanent
/// neighbour (remote subnet's .0 -> VTEP MAC) and an onlink route via it; pods on a
/// `cni0` bridge. Returns the pod's veth, the node namespace and the pod namespace
/// (10.244.3.2).
fn flannel_node(c: &mut Cluster) -> (Veth, Netns, Netns) {
    let nf = Netns::new("nodef").expect("flannel node namespace");
    let up = c.join_underlay(&nf, Ipv4Addr::new(192, 168, 77, 3));
    let run = |argv: &[&str]| {
        nf.run(argv)
            .unwrap_or_else(|e| panic!("flannel node: {argv:?}: {e}"))
    };
    run(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    run(&[
        "ip",
        "link",
        "add",
        "flannel.1",
        "type",
        "vxlan",
        "id",
        "1",
        "local",
        "192.168.77.3",
        "dev",
        &up,
        "dstport",
        "8472",
        "nolearning",
    ]);
    run(&[
        "ip",
        "link",
        "set",
        "flannel.1",
        "address",
        FLANNEL_VTEP,
        "mtu",
        "1450",
        "up",
    ]);
    run(&["ip", "addr", "add", "10.244.3.0/32", "dev", "flannel.1"]);
    for n in &c.nodes {
        let s = n.subnet;
        let mac = format!("0a:58:0a:f4:{s:02x}:01");
        let gw = format!("10.244.{s}.0");
        run(&[
            "ip",
            "neigh",
            "replace",
            &gw,
            "lladdr",
            &mac,
            "dev",
            "flannel.1",
            "nud",
            "permanent",
        ]);
        run(&[
            "bridge",
            "fdb",
            "append",
            &mac,
            "dev",
            "flannel.1",
            "dst",
            &n.node_ip.to_string(),
            "self",
            "permanent",
        ]);
        run(&[
            "ip",
            "route",
            "replace",
            &format!("10.244.{s}.0/24"),
            "via",
            &gw,
            "dev",
            "flannel.1",
            "onlink",
        ]);
    }
    run(&["ip", "link", "add", "cni0", "type", "bridge"]);
    run(&["ip", "addr", "add", "10.244.3.1/24", "dev", "cni0"]);
    run(&["ip", "link", "set", "cni0", "up"]);
    let pf = Netns::new("podf").expect("flannel pod namespace");
    let host_end = format!("v{}", unique_suffix());
    let veth = Veth::new(&nf, &host_end, &pf, "eth0").expect("pod veth");
    run(&[
        "ip", "link", "set", &host_end, "mtu", "1450", "master", "cni0", "up",
    ]);
    pf.ip(&["link", "set", "eth0", "mtu", "1450", "up"])
        .expect("pod eth0");
    pf.ip(&["addr", "add", "10.244.3.2/24", "dev", "eth0"])
        .expect("pod address");
    pf.ip(&["route", "add", "default", "via", "10.244.3.1"])
        .expect("pod route");
    // Frames between namespaces carry no checksum and no segmentation offload
    // work for the userspace switch on the other side: a NIC would finish them,
    // veths do not (docs/cni.md).
    for (ns, dev) in [
        (&nf, up.as_str()),
        (&nf, "flannel.1"),
        (&nf, &host_end),
        (&pf, "eth0"),
    ] {
        vswitch_suite::veth::disable_offloads(ns, dev).expect("offloads");
    }
    (veth, nf, pf)
}

#[test]
fn flannel_node_and_our_nodes_share_the_cluster() {
    let Some(_env) = vswitch_suite::e2e() else {
        return;
    };
    let mut c = cluster(1500, "flannel");
    let (_veth, _nf, pf) = flannel_node(&mut c);
    let pf_ip = Ipv4Addr::new(10, 244, 3, 2);
    // The flannel node as the API shows it: its VTEP in flannel's annotations, the
    // tunnel endpoint in public-ip (its InternalIP deliberately elsewhere).
    let extra = Extra {
        nodes: node_doc(
            "node-f",
            3,
            Ipv4Addr::new(192, 168, 78, 3),
            &format!(
                "flannel.alpha.coreos.com/backend-type: vxlan, \
                 flannel.alpha.coreos.com/backend-data: '{{\"VNI\":1,\"VtepMAC\":\"{FLANNEL_VTEP}\"}}', \
                 flannel.alpha.coreos.com/public-ip: 192.168.77.3"
            ),
        ),
    };
    c.start_agents(&extra);
    c.add_pod(0, "a1");
    c.add_pod(1, "b1");
    assert_pings(&c, 0, 1);
    let (a1, b1) = (&c.pods[0], &c.pods[1]);
    for p in [a1, b1] {
        assert!(
            ping_until(&p.ns, pf_ip, WAIT),
            "{} ({}) never reached the flannel pod\n{}",
            p.name,
            p.ip,
            c.logs()
        );
        let (got, text) = ping_ns(&pf, p.ip, 3);
        assert_eq!(got, 3, "flannel pod -> {}: {text}", p.name);
    }
    // Our switch speaks flannel's port: the decap flow of node-f counts.
    let decap = c.nodes[0].flow_packets(&["decap", "192.168.77.3", "8472"]);
    assert!(
        decap >= 3,
        "decap flow of the flannel node: {decap}\n{}",
        c.logs()
    );
    // TCP both ways between the flannel pod and pods behind our switches.
    tcp_transfer_ns(&pf, &a1.ns, a1.ip, 8 << 20)
        .unwrap_or_else(|e| panic!("flannel pod -> a1: {e}\n{}", c.logs()));
    tcp_transfer_ns(&a1.ns, &pf, pf_ip, 8 << 20).expect("a1 -> flannel pod");
    tcp_transfer_ns(&b1.ns, &pf, pf_ip, 8 << 20).expect("b1 -> flannel pod");
    tcp_transfer_ns(&pf, &b1.ns, b1.ip, 8 << 20).expect("flannel pod -> b1");
}

/// The `iptables -t nat` POSTROUTING MASQUERADE rule's packet count in `ns`.
fn masquerade_packets(ns: &Netns) -> u64 {
    let out = ns
        .run(&[
            "iptables",
            "-t",
            "nat",
            "-L",
            "POSTROUTING",
            "-v",
            "-n",
            "-x",
        ])
        .expect("iptables -L");
    out.lines()
        .filter(|l| l.contains("MASQUERADE"))
        .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// The gateway port: a veth into the node's own stack (`vsgw0`, like antrea-gw0 or
/// cni0), the node namespace standing in for the host. The host side holds the
/// gateway IP with the gateway MAC, routes remote pod CIDRs on-link via their
/// gateways, forwards and masquerades pod traffic to non-cluster destinations. An
/// "external" namespace behind the node (no route to any pod CIDR) stands for the
/// world outside the cluster.
#[test]
fn gateway_port_connects_the_node_and_the_outside() {
    let Some(_env) = vswitch_suite::e2e() else {
        return;
    };
    let c = two_nodes(1500);
    let (na, ns) = (&c.nodes[0], &c.nodes[0].ns);
    let run = |argv: &[&str]| {
        ns.run(argv)
            .unwrap_or_else(|e| panic!("node a: {argv:?}: {e}"))
    };
    // The host routes of docs/overlay.md ("Gateway port and host routes").
    let gw_sw = format!("g{}", unique_suffix());
    let _gw = Veth::new(ns, "vsgw0", ns, &gw_sw).expect("gateway veth");
    run(&["ip", "link", "set", "vsgw0", "down"]);
    run(&["ip", "link", "set", "vsgw0", "address", "0a:58:0a:f4:01:01"]);
    run(&["ip", "addr", "add", "10.244.1.1/24", "dev", "vsgw0"]);
    run(&["ip", "link", "set", "vsgw0", "up"]);
    run(&[
        "ip",
        "route",
        "add",
        "10.244.2.0/24",
        "via",
        "10.244.2.1",
        "dev",
        "vsgw0",
        "onlink",
    ]);
    run(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    run(&[
        "iptables",
        "-t",
        "nat",
        "-A",
        "POSTROUTING",
        "-s",
        "10.244.1.0/24",
        "!",
        "-d",
        "10.244.0.0/16",
        "-j",
        "MASQUERADE",
    ]);
    for dev in ["vsgw0", gw_sw.as_str()] {
        vswitch_suite::veth::disable_offloads(ns, dev).expect("offloads");
    }
    na.daemon
        .add_port_kind(&gw_sw, "gateway", "auto")
        .expect("gateway port");
    // The outside world: 203.0.113.2 behind the node, no route to pods.
    let ext = Netns::new("ext").expect("external namespace");
    let ext_if = format!("x{}", unique_suffix());
    let _ext_link = Veth::new(ns, &ext_if, &ext, "eth0").expect("external veth");
    run(&["ip", "addr", "add", "203.0.113.1/24", "dev", &ext_if]);
    ext.ip(&["addr", "add", "203.0.113.2/24", "dev", "eth0"])
        .expect("external address");
    for (n, dev) in [(ns, ext_if.as_str()), (&ext, "eth0")] {
        vswitch_suite::veth::disable_offloads(n, dev).expect("offloads");
    }
    let (a1, b1) = (c.pods[0].ip, c.pods[2].ip);

    // The node reaches its pod (kubelet probes): ping and TCP, both ways.
    assert!(
        ping_until(ns, a1, WAIT),
        "node a never reached its pod {a1}\n{}",
        c.logs()
    );
    let (got, text) = ping_ns(ns, a1, 5);
    assert_eq!(got, 5, "node -> pod: {text}");
    tcp_transfer_ns(ns, &c.pods[0].ns, a1, 1 << 20)
        .unwrap_or_else(|e| panic!("node -> pod TCP: {e}\n{}", c.logs()));
    tcp_transfer_ns(&c.pods[0].ns, ns, Ipv4Addr::new(10, 244, 1, 1), 1 << 20)
        .unwrap_or_else(|e| panic!("pod -> node TCP: {e}\n{}", c.logs()));
    // A remote node's pod through the gateway and the tunnel (on-link route via
    // its gateway, answered by the switch's ARP responder on the gateway port).
    assert!(
        ping_until(ns, b1, WAIT),
        "node a never reached node b's pod {b1}\n{}",
        c.logs()
    );
    tcp_transfer_ns(ns, &c.pods[2].ns, b1, 1 << 20)
        .unwrap_or_else(|e| panic!("node a -> remote pod TCP: {e}\n{}", c.logs()));

    // A pod reaches the outside through the node's routing, masqueraded.
    let before = masquerade_packets(ns);
    let pod_ns = &c.pods[0].ns;
    let peer = pod_to_outside(&c, &ext);
    assert_eq!(
        peer, "203.0.113.1",
        "the outside sees the node's address (masquerade)"
    );
    assert!(masquerade_packets(ns) > before, "MASQUERADE rule not used");
    tcp_transfer_ns(pod_ns, &ext, Ipv4Addr::new(203, 0, 113, 2), 1 << 20)
        .unwrap_or_else(|e| panic!("pod -> external 1 MiB: {e}\n{}", c.logs()));
    // All of it crossed the switch's gateway port (the pods' host-side veths have
    // no addresses: there is no other way between the node and its pods): 2 MiB
    // node -> pods in, 1 MiB to the node and 1.25 MiB to the outside out.
    let st = na.daemon.stats().expect("stats");
    for key in ["rx_bytes", "tx_bytes"] {
        let n = st.counter(&gw_sw, key);
        assert!(n > 2 << 20, "gateway port {key}: {n}");
    }
}

/// The uplink in an XDP mode (skb, on the underlay veth): the switch's uplink
/// filter takes the VXLAN traffic, the node's stack keeps everything else (ARP for
/// the next hops, ping between the nodes) and never sees a tunnel datagram.
#[test]
fn pods_reach_each_other_with_the_uplink_in_xdp_mode() {
    let Some(_env) = vswitch_suite::e2e() else {
        return;
    };
    pods_over_an_xdp_uplink("xdp-skb");
}

/// The same in native (driver) mode on the underlay veth.
#[test]
fn pods_reach_each_other_with_the_uplink_in_xdp_drv_mode() {
    let Some(_env) = vswitch_suite::e2e() else {
        return;
    };
    pods_over_an_xdp_uplink("xdp-drv");
}

fn pods_over_an_xdp_uplink(mode: &str) {
    let mut c = cluster_with(1500, "vxlan", mode);
    for n in &c.nodes {
        let port = n.daemon.port(&n.uplink).expect("vsctl").expect("uplink");
        assert_eq!(port["mode"], mode, "{port}");
        let link = n.ns.ip(&["-d", "link", "show", &n.uplink]).expect("link");
        assert!(link.contains("vswitch_uplink"), "uplink filter: {link}");
    }
    c.start_agents(&Extra::default());
    c.add_pod(0, "a1");
    c.add_pod(1, "b1");
    assert_pings(&c, 0, 1);
    let (a1, b1) = (&c.pods[0], &c.pods[1]);
    udp_echo(a1, b1, 100).expect("udp a1 -> b1");
    tcp_transfer_ns(&a1.ns, &b1.ns, b1.ip, 8 << 20)
        .unwrap_or_else(|e| panic!("tcp a1 -> b1: {e}\n{}", c.logs()));
    tcp_transfer_ns(&b1.ns, &a1.ns, a1.ip, 8 << 20)
        .unwrap_or_else(|e| panic!("tcp b1 -> a1: {e}\n{}", c.logs()));
    let decap = c.nodes[0].flow_packets(&["decap", "192.168.77.2"]);
    assert!(decap >= 5, "decap flow of node b: {decap}\n{}", c.logs());
    // The hosts keep their own traffic on the uplink, and never saw the tunnel.
    let (got, text) = ping_ns(&c.nodes[0].ns, c.nodes[1].node_ip, 3);
    assert_eq!(got, 3, "node a -> node b (host traffic): {text}");
    for n in &c.nodes {
        assert_eq!(
            host_tunnel_packets(&n.ns, "4789"),
            0,
            "{}: the host saw VXLAN the filter should have taken",
            n.name
        );
    }
}

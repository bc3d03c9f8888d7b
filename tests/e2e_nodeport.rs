//! NodePort from outside the node (docs/services.md, "NodePort from the uplink"):
//! a client in another namespace, on the far side of the node's uplink, connects
//! with the kernel's TCP to nodeIP:nodePort. The uplink runs the switch's XDP
//! filter (`xdp-skb`), which hands NodePort-range TCP/UDP to the switch; the node
//! pipeline (`[overlay]` on, a LocalNode from the Node manifest) sends it through
//! conntrack and table 15, and the replies leave by the uplink to the client's MAC.
//!
//! Topology: namespace `node` (vswitchd, the host stack, uplink `npup0`
//! 192.0.2.1/24) joined by a veth to namespace `client` (`npup1`, 192.0.2.2/24);
//! a pod namespace (10.250.0.21, a socat server that answers with the peer address
//! it sees) on a port of the switch. The second test puts two nodes and the
//! client on an underlay bridge, with the endpoint on node b behind node a's
//! NodePort (SNAT to node a, tunnelled both ways).
//!
//!     cargo build && cargo test --test e2e_nodeport -- --nocapture
//!
//! Needs root and built binaries.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};
use vswitch_suite::daemon::{DaemonOpts, Vswitchd};
use vswitch_suite::netns::Netns;
use vswitch_suite::pod::{Pod, PodOpts};
use vswitch_suite::veth::{Veth, disable_offloads};
use vswitch_suite::{TempDir, wait_for};

mod services_common;
use services_common::{
    NODE, Servers, apply_text, ep_on, fetch, plain_pod, pod_on, svc, via_gateway,
};

const NODE_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const CLIENT_IP: &str = "192.0.2.2";
const UPLINK: &str = "npup0";
/// A NodePort Service and its EndpointSlice (`eps` may be empty).
fn node_port_svc(name: &str, policy: &str, node_port: u16, target: u16, eps: &str) -> String {
    svc(
        name,
        &format!(
            "type: NodePort, clusterIP: 10.96.0.{}, externalTrafficPolicy: {policy},
  ports: [{{name: http, port: 80, targetPort: {target}, nodePort: {node_port}}}]",
            node_port % 250
        ),
        eps,
        &format!("{{name: http, port: {target}}}"),
    )
}

#[test]
fn node_port_from_outside_the_node() {
    let Some(_env) = vswitch_suite::e2e() else {
        return;
    };
    let dir = TempDir::new("nodeport").expect("dir");
    let cfg = dir.path().join("vswitchd.toml");
    std::fs::write(&cfg, "[overlay]\nmode = \"vxlan\"\n").expect("config");
    let node = Netns::new("node").expect("node namespace");
    let client = Netns::new("client").expect("client namespace");
    let _link = Veth::new(&node, UPLINK, &client, "npup1").expect("uplink veth");
    node.ip(&["addr", "add", "192.0.2.1/24", "dev", UPLINK])
        .expect("node address");
    client
        .ip(&["addr", "add", "192.0.2.2/24", "dev", "npup1"])
        .expect("client address");
    // The client's TCP must carry finished checksums: a NIC would give the switch
    // complete frames, a veth hands over CHECKSUM_PARTIAL ones otherwise.
    disable_offloads(&client, "npup1").expect("client offloads");
    client
        .run(&["ping", "-c1", "-W2", &NODE_IP.to_string()])
        .expect("ping the node before the switch");

    let d = Vswitchd::start(
        &node,
        DaemonOpts {
            config: Some(cfg),
            ..DaemonOpts::default()
        },
    )
    .expect("vswitchd");
    d.add_port_kind(UPLINK, "uplink", "xdp-skb")
        .expect("uplink with its filter");

    let b1 = Pod::new(&node, Ipv4Addr::new(10, 250, 0, 21), PodOpts::default()).expect("pod");
    b1.ns
        .ip(&[
            "link",
            "set",
            "dev",
            &b1.ifname,
            "address",
            "0a:58:0a:fa:00:15",
        ])
        .expect("pod mac");
    d.vsctl(&[
        "add-port",
        &b1.switch_if,
        "--mode",
        "packet",
        "--pod",
        "shop/b1",
    ])
    .expect("pod port");
    via_gateway(&b1);
    let mut servers = Servers(Vec::new());
    servers.0.push(
        b1.command("socat")
            .args([
                "TCP-LISTEN:8080,fork,reuseaddr",
                "SYSTEM:echo from $SOCAT_PEERADDR",
            ])
            .spawn()
            .expect("tcp server"),
    );

    let ep = ep_on("10.250.0.21", "node-a");
    let mut m = format!("{NODE}{}", plain_pod("b1", "10.250.0.21"));
    m += &node_port_svc("cluster", "Cluster", 30080, 8080, &ep);
    m += &node_port_svc("local", "Local", 30081, 8080, &ep);
    m += &node_port_svc("empty", "Cluster", 30082, 8080, "");
    m += &node_port_svc("bulk", "Cluster", 30083, 8081, &ep);
    apply_text(&d, &dir, &m);
    let s = d.vsctl(&["services"]).expect("services");
    println!("{s}");
    assert!(s.contains("192.0.2.1:30080"), "{s}");

    // Cluster: the connection is source-NATed to the node IP (kube-proxy's
    // masquerade), and the answer comes back to the client.
    let first = wait_for(Duration::from_secs(10), || {
        fetch(&client, "192.0.2.1:30080").ok()
    });
    assert_eq!(
        first.as_deref(),
        Some("from 192.0.2.1"),
        "externalTrafficPolicy Cluster: the pod sees the node IP\n{}",
        d.vsctl(&["dump-flows"]).unwrap_or_default()
    );
    for _ in 0..3 {
        assert_eq!(
            fetch(&client, "192.0.2.1:30080").as_deref(),
            Ok("from 192.0.2.1"),
            "Cluster, again"
        );
    }
    let ct = d
        .vsctl(&["conntrack", "--proto", "tcp", "--src", CLIENT_IP])
        .expect("conntrack");
    println!("{ct}");
    assert!(ct.contains("dport=30080"), "{ct}");

    // Local: the client's own address reaches the pod.
    assert_eq!(
        fetch(&client, "192.0.2.1:30081").as_deref(),
        Ok(format!("from {CLIENT_IP}").as_str()),
        "externalTrafficPolicy Local keeps the client IP"
    );

    // A bigger exchange in both directions through a Cluster NodePort: the pod
    // echoes 256 KiB back, byte for byte.
    servers.0.push(
        b1.command("socat")
            .args(["TCP-LISTEN:8081,fork,reuseaddr", "EXEC:cat"])
            .spawn()
            .expect("echo server"),
    );
    let data: Vec<u8> = (0..256 * 1024u32)
        .map(|i| (i * 7 + i / 251) as u8)
        .collect();
    let sent = data.clone();
    let back = wait_for(Duration::from_secs(5), || {
        let sent = sent.clone();
        client
            .enter(move || {
                let mut s = TcpStream::connect_timeout(
                    &SocketAddr::from((NODE_IP, 30083)),
                    Duration::from_secs(3),
                )?;
                s.set_read_timeout(Some(Duration::from_secs(5)))?;
                let mut w = s.try_clone()?;
                let writer = std::thread::spawn(move || -> std::io::Result<()> {
                    w.write_all(&sent)?;
                    w.shutdown(std::net::Shutdown::Write)
                });
                let mut got = Vec::new();
                s.read_to_end(&mut got)?;
                writer
                    .join()
                    .map_err(|_| std::io::Error::other("writer panicked"))??;
                Ok(got)
            })
            .ok()
    });
    assert!(
        back.as_ref().is_some_and(|b| *b == data),
        "256 KiB echo through the NodePort: got {:?} bytes",
        back.map(|b| b.len())
    );

    // No endpoints: refused at once (RST from the switch), not a timeout.
    let t = Instant::now();
    let r = fetch(&client, "192.0.2.1:30082");
    let took = t.elapsed();
    assert!(
        r.as_ref().is_err_and(|e| e.contains("Connection refused")),
        "empty service: {r:?}"
    );
    assert!(took < Duration::from_secs(1), "refused after {took:?}");

    // A NodePort with no service: the switch took it and drops it (no RST from
    // the host either).
    let t = Instant::now();
    let r = fetch(&client, "192.0.2.1:30099");
    assert!(r.is_err(), "nothing serves 30099: {r:?}");
    assert!(
        t.elapsed() >= Duration::from_secs(2),
        "30099 answered at once ({r:?}): the host or the gateway saw it"
    );

    // The host's own TCP over the same uplink still works.
    let listener = node
        .enter(|| Ok(TcpListener::bind((NODE_IP, 2222))?))
        .expect("host listener");
    let server = std::thread::spawn(move || -> std::io::Result<Vec<u8>> {
        let (mut c, _) = listener.accept()?;
        let mut got = vec![0u8; 5];
        c.read_exact(&mut got)?;
        c.write_all(b"world")?;
        Ok(got)
    });
    let reply = client
        .enter(|| {
            let mut s = TcpStream::connect_timeout(
                &SocketAddr::from((NODE_IP, 2222)),
                Duration::from_secs(3),
            )?;
            s.set_read_timeout(Some(Duration::from_secs(3)))?;
            s.write_all(b"hello")?;
            let mut r = vec![0u8; 5];
            s.read_exact(&mut r)?;
            Ok(r)
        })
        .expect("TCP to the host over the uplink");
    assert_eq!(reply, b"world");
    assert_eq!(server.join().expect("thread").expect("server"), b"hello");
}

/// A node namespace on the underlay bridge, with its switch and uplink.
struct NodeNs {
    d: Vswitchd,
    ns: Netns,
}

fn start_node(ns: Netns, up: &str, dir: &TempDir, name: &str) -> NodeNs {
    let cfg = dir.path().join(format!("{name}.toml"));
    std::fs::write(&cfg, "[overlay]\nmode = \"vxlan\"\n").expect("config");
    let d = Vswitchd::start(
        &ns,
        DaemonOpts {
            config: Some(cfg),
            ..DaemonOpts::default()
        },
    )
    .expect("vswitchd");
    d.add_port_kind(up, "uplink", "xdp-skb")
        .expect("uplink with its filter");
    NodeNs { d, ns }
}

/// node-a, node-b (10.251.0.0/24 at 192.0.2.3) and pod b1 on node-b.
fn two_nodes() -> String {
    format!(
        "{NODE}apiVersion: v1
kind: Node
metadata: {{name: node-b}}
spec: {{podCIDR: 10.251.0.0/24}}
status: {{addresses: [{{type: InternalIP, address: 192.0.2.3}}]}}
---
{}",
        pod_on("b1", "10.251.0.21", "node-b")
    )
}

#[test]
fn node_port_to_an_endpoint_on_another_node() {
    let Some(_env) = vswitch_suite::e2e() else {
        return;
    };
    let dir = TempDir::new("nodeport2").expect("dir");
    // The underlay: a bridge joining node a, node b and the client.
    let underlay = Netns::new("ul").expect("underlay namespace");
    underlay
        .ip(&["link", "add", "br0", "type", "bridge"])
        .expect("bridge");
    underlay
        .ip(&["link", "set", "br0", "up"])
        .expect("bridge up");
    let mut links = Vec::new();
    let mut join = |ns: &Netns, ifname: &str, port: &str, ip: &str| {
        links.push(Veth::new(ns, ifname, &underlay, port).expect("underlay veth"));
        underlay
            .ip(&["link", "set", port, "master", "br0", "up"])
            .expect("bridge port");
        ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", ifname])
            .expect("address");
    };
    let a_ns = Netns::new("nodea").expect("node a");
    let b_ns = Netns::new("nodeb").expect("node b");
    let client = Netns::new("client").expect("client");
    join(&a_ns, "npa0", "ula", "192.0.2.1");
    join(&b_ns, "npb0", "ulb", "192.0.2.3");
    join(&client, "npc0", "ulc", CLIENT_IP);
    disable_offloads(&client, "npc0").expect("client offloads");
    for ip in ["192.0.2.1", "192.0.2.3"] {
        client
            .run(&["ping", "-c1", "-W2", ip])
            .expect("ping the nodes before the switches");
    }
    let a = start_node(a_ns, "npa0", &dir, "node-a");
    let b = start_node(b_ns, "npb0", &dir, "node-b");

    let pod = Pod::new(&b.ns, Ipv4Addr::new(10, 251, 0, 21), PodOpts::default()).expect("pod");
    pod.ns
        .ip(&[
            "link",
            "set",
            "dev",
            &pod.ifname,
            "address",
            "0a:58:0a:fb:00:15",
        ])
        .expect("pod mac");
    b.d.vsctl(&[
        "add-port",
        &pod.switch_if,
        "--mode",
        "packet",
        "--pod",
        "shop/b1",
    ])
    .expect("pod port");
    pod.ns
        .ip(&["route", "add", "default", "via", "10.251.0.1"])
        .expect("default route");
    let mut servers = Servers(Vec::new());
    servers.0.push(
        pod.command("socat")
            .args([
                "TCP-LISTEN:8080,fork,reuseaddr",
                "SYSTEM:echo from $SOCAT_PEERADDR",
            ])
            .spawn()
            .expect("tcp server"),
    );
    let ep = ep_on("10.251.0.21", "node-b");
    let m = two_nodes() + &node_port_svc("cluster", "Cluster", 30080, 8080, &ep);
    let f = dir.path().join("m.yaml");
    std::fs::write(&f, &m).expect("manifest");
    for (n, name) in [(&a, "node-a"), (&b, "node-b")] {
        let out =
            n.d.vsctl(&["apply", f.to_str().unwrap_or_default(), "--node-name", name])
                .expect("apply");
        assert!(out.starts_with("applied"), "{name}: {out}");
    }

    // Node a DNATs to the pod on node b, source-NATs to its own address and
    // tunnels; node b tunnels the answer back to node a's address, whose
    // conntrack translates it and sends it out of the uplink to the client.
    let got = wait_for(Duration::from_secs(15), || {
        fetch(&client, "192.0.2.1:30080").ok()
    });
    assert_eq!(
        got.as_deref(),
        Some("from 192.0.2.1"),
        "NodePort on node a to the endpoint on node b\n{}\n{}",
        a.d.vsctl(&["dump-flows"]).unwrap_or_default(),
        b.d.vsctl(&["dump-flows"]).unwrap_or_default()
    );
    for _ in 0..3 {
        assert_eq!(
            fetch(&client, "192.0.2.1:30080").as_deref(),
            Ok("from 192.0.2.1"),
            "again"
        );
    }
    // And through node b's own NodePort: a local endpoint there.
    assert_eq!(
        fetch(&client, "192.0.2.3:30080").as_deref(),
        Ok("from 192.0.2.3"),
        "node b's NodePort"
    );
    drop(servers);
    drop(pod);
    drop(b);
    drop(a);
    drop(links);
}

//! The gateway port made by the agent (`vswitch-agent --gateway vsgw0`): on the
//! two-node overlay cluster of `tests/overlay_cluster`, with each node's agent running
//! inside its node namespace, nothing is set up by hand — the agent creates the veth,
//! attaches its switch end to vswitchd, gives the host end the gateway IP and MAC,
//! routes node b's pod CIDR on-link via its gateway, turns on forwarding and adds
//! the MASQUERADE rule (docs/overlay.md, "Gateway port and host routes").
//!
//!     cargo build --workspace --bins && cargo test --test e2e_gateway -- --nocapture
//!
//! Needs root, built binaries and containernetworking-plugins (host-local).

#[allow(dead_code)] // shared with the other overlay tests; this file uses part of it
mod overlay_cluster;

use overlay_cluster::{Cluster, ClusterOpts, WAIT, ping_ns, ping_until, pod_to_outside};
use std::net::Ipv4Addr;
use std::time::Duration;
use vswitch_suite::netns::Netns;
use vswitch_suite::pod::tcp_transfer_ns;
use vswitch_suite::unique_suffix;
use vswitch_suite::veth::Veth;
use vswitch_suite::wait_for;

const NETWORK: &str = "vstgw";
const GW_ARGS: &[&str] = &["--gateway", "vsgw0"];

/// What the agent made in node a's namespace, counted.
#[derive(Debug, PartialEq, Eq)]
struct HostSide {
    /// Links named vsgw0 / vsgw0-sw.
    links: usize,
    /// vsgw0's MAC and IPv4 addresses.
    mac: String,
    addrs: Vec<String>,
    /// Routes to node b's pod CIDR (any device).
    remote_routes: Vec<String>,
    /// nat POSTROUTING rules with the agent's comment.
    rules: Vec<String>,
    ip_forward: String,
}

fn host_side(ns: &Netns) -> HostSide {
    let links = ns.ip(&["-o", "link", "show"]).expect("ip link");
    let count = links
        .lines()
        .filter(|l| {
            let name = l.split(": ").nth(1).unwrap_or("");
            let name = name.split('@').next().unwrap_or("");
            name == "vsgw0" || name == "vsgw0-sw"
        })
        .count();
    let show = ns.ip(&["-o", "link", "show", "vsgw0"]).unwrap_or_default();
    let mac = show
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .unwrap_or("")
        .to_string();
    let addrs = ns
        .ip(&["-o", "-4", "addr", "show", "dev", "vsgw0"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .skip_while(|w| *w != "inet")
                .nth(1)
                .map(str::to_string)
        })
        .collect();
    let remote_routes = ns
        .ip(&["route", "show", "10.244.2.0/24"])
        .expect("ip route")
        .lines()
        .map(|l| l.trim().to_string())
        .collect();
    let rules = ns
        .run(&["iptables", "-t", "nat", "-S", "POSTROUTING"])
        .expect("iptables -S")
        .lines()
        .filter(|l| l.contains("vswitch-agent-gateway"))
        .map(str::to_string)
        .collect();
    let ip_forward = ns
        .run(&["cat", "/proc/sys/net/ipv4/ip_forward"])
        .expect("ip_forward")
        .trim()
        .to_string();
    HostSide {
        links: count,
        mac,
        addrs,
        remote_routes,
        rules,
        ip_forward,
    }
}

fn expected() -> HostSide {
    HostSide {
        links: 2,
        mac: "0a:58:0a:f4:01:01".into(),
        addrs: vec!["10.244.1.1/24".into()],
        remote_routes: vec!["10.244.2.0/24 via 10.244.2.1 dev vsgw0 proto 86 onlink".into()],
        rules: vec![
            "-A POSTROUTING -s 10.244.1.0/24 ! -o vsgw0 -m comment --comment vswitch-agent-gateway -j MASQUERADE"
                .into(),
        ],
        ip_forward: "1".into(),
    }
}

/// Waits until node a's host side is exactly [`expected`] and vswitchd has the
/// gateway port; the last state seen otherwise.
fn wait_host_side(c: &Cluster) -> Result<(), String> {
    let na = &c.nodes[0];
    let mut last = None;
    let ok = wait_for(WAIT, || {
        let h = host_side(&na.ns);
        let port = na
            .daemon
            .vsctl(&["show"])
            .unwrap_or_default()
            .contains("vsgw0-sw");
        let done = h == expected() && port;
        last = Some((h, port));
        done.then_some(())
    });
    match ok {
        Some(()) => Ok(()),
        None => Err(format!(
            "host side never as expected: {last:?}\n{}",
            c.logs()
        )),
    }
}

fn masquerade_packets(ns: &Netns) -> u64 {
    ns.run(&[
        "iptables",
        "-t",
        "nat",
        "-L",
        "POSTROUTING",
        "-v",
        "-n",
        "-x",
    ])
    .expect("iptables -L")
    .lines()
    .filter(|l| l.contains("vswitch-agent-gateway"))
    .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
    .sum()
}

/// The node reaches its pod and node b's pod (ping, TCP both ways to its own).
fn node_reaches_pods(c: &Cluster) {
    let ns = &c.nodes[0].ns;
    let (a1, b1) = (c.pods[0].ip, c.pods[1].ip);
    assert!(
        ping_until(ns, a1, WAIT),
        "node a never reached its pod {a1}\n{}",
        c.logs()
    );
    let (got, text) = ping_ns(ns, a1, 3);
    assert_eq!(got, 3, "node -> pod: {text}");
    // The kubelet's probe: TCP from the node's host stack to the pod.
    tcp_transfer_ns(ns, &c.pods[0].ns, a1, 1 << 20)
        .unwrap_or_else(|e| panic!("node -> pod TCP: {e}\n{}", c.logs()));
    tcp_transfer_ns(&c.pods[0].ns, ns, Ipv4Addr::new(10, 244, 1, 1), 1 << 20)
        .unwrap_or_else(|e| panic!("pod -> node TCP: {e}\n{}", c.logs()));
    assert!(
        ping_until(ns, b1, WAIT),
        "node a never reached node b's pod {b1}\n{}",
        c.logs()
    );
    tcp_transfer_ns(ns, &c.pods[1].ns, b1, 1 << 20)
        .unwrap_or_else(|e| panic!("node a -> remote pod TCP: {e}\n{}", c.logs()));
}

#[test]
fn agent_creates_the_gateway_port() {
    let Some(_env) = vswitch_suite::e2e() else {
        return;
    };
    let mut c = Cluster::new(&ClusterOpts {
        network: NETWORK,
        mtu: 1500,
        mode: "vxlan",
        uplink_mode: "packet",
        vswitchd_args: Vec::new(),
        underlay_gro: false,
    });
    c.start_agents_in_nodes(GW_ARGS);
    c.add_pod(0, "a1");
    c.add_pod(1, "b1");
    wait_host_side(&c).unwrap_or_else(|e| panic!("{e}"));
    let first_log = c.nodes[0]
        .agent
        .as_ref()
        .map(|a| a.log_text())
        .unwrap_or_default();
    for what in [
        "gateway veth created",
        "gateway MASQUERADE rule added",
        "gateway port attached",
    ] {
        assert!(
            first_log.contains(what),
            "the agent did not log {what:?}:\n{first_log}"
        );
    }
    let ns = &c.nodes[0].ns;
    // The outside world: 203.0.113.2 behind node a, no route to any pod.
    let ext = Netns::new("ext").expect("external namespace");
    let ext_if = format!("x{}", unique_suffix());
    let _ext_link = Veth::new(ns, &ext_if, &ext, "eth0").expect("external veth");
    ns.ip(&["addr", "add", "203.0.113.1/24", "dev", &ext_if])
        .expect("node address");
    ext.ip(&["addr", "add", "203.0.113.2/24", "dev", "eth0"])
        .expect("external address");
    for (n, dev) in [(ns, ext_if.as_str()), (&ext, "eth0")] {
        vswitch_suite::veth::disable_offloads(n, dev).expect("offloads");
    }

    node_reaches_pods(&c);
    let before = masquerade_packets(ns);
    assert_eq!(
        pod_to_outside(&c, &ext),
        "203.0.113.1",
        "the outside sees the node's address (masquerade)"
    );
    assert!(
        masquerade_packets(ns) > before,
        "the agent's MASQUERADE rule not used"
    );

    // The agent restarted (twice: once more while nothing changed) finds it all in
    // place and leaves exactly one of each; everything keeps working.
    for _ in 0..2 {
        c.restart_agent_in_node(0, GW_ARGS);
        std::thread::sleep(Duration::from_secs(3));
        wait_host_side(&c).unwrap_or_else(|e| panic!("after an agent restart: {e}"));
        let log = c.nodes[0]
            .agent
            .as_ref()
            .map(|a| a.log_text())
            .unwrap_or_default();
        assert!(
            !log.contains("gateway veth created") && !log.contains("rule added"),
            "a restarted agent recreated what was there:\n{log}"
        );
    }
    node_reaches_pods(&c);
    assert_eq!(pod_to_outside(&c, &ext), "203.0.113.1");

    // Node b leaves the cluster: its route goes; it comes back: so does the route.
    let na = &c.nodes[0];
    let only_a = overlay_cluster::node_doc(&na.name, na.subnet, na.node_ip, "");
    overlay_cluster::write(na.manifests.path(), "nodes.yaml", &only_a);
    wait_for(WAIT, || {
        host_side(&c.nodes[0].ns)
            .remote_routes
            .is_empty()
            .then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "route to node b's pods stayed after node b left\n{}",
            c.logs()
        )
    });
    assert_eq!(host_side(&c.nodes[0].ns).rules, expected().rules);
    let all = c.node_docs(&overlay_cluster::Extra::default());
    overlay_cluster::write(c.nodes[0].manifests.path(), "nodes.yaml", &all);
    wait_host_side(&c).unwrap_or_else(|e| panic!("after node b came back: {e}"));

    // The switch loses the port (vsctl del-port, as after a vswitchd restart):
    // the agent attaches it again within a second or so.
    c.nodes[0]
        .daemon
        .vsctl(&["del-port", "vsgw0-sw"])
        .expect("del-port");
    wait_for(Duration::from_secs(10), || {
        c.nodes[0]
            .daemon
            .vsctl(&["show"])
            .unwrap_or_default()
            .contains("vsgw0-sw")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("gateway port never re-attached\n{}", c.logs()));
    node_reaches_pods(&c);

    // vswitchd restarts: the agent (not the test) attaches the gateway port to the
    // new daemon, and the host side stays exactly as it was.
    c.nodes[0].daemon.restart().expect("vswitchd restart");
    wait_host_side(&c).unwrap_or_else(|e| panic!("after a vswitchd restart: {e}"));
    let port = c.nodes[0].daemon.port("vsgw0-sw").expect("ports");
    assert_eq!(
        port.as_ref().and_then(|p| p["kind"].as_str()),
        Some("gateway"),
        "{port:?}"
    );

    // Node a's pod CIDR changes to 10.244.9.0/24: the gateway address, MAC and
    // MASQUERADE rule follow, the old ones go.
    let docs = c
        .node_docs(&overlay_cluster::Extra::default())
        .replace("podCIDR: 10.244.1.0/24", "podCIDR: 10.244.9.0/24");
    assert!(docs.contains("10.244.9.0/24"), "{docs}");
    overlay_cluster::write(c.nodes[0].manifests.path(), "nodes.yaml", &docs);
    let want = HostSide {
        mac: "0a:58:0a:f4:09:01".into(),
        addrs: vec!["10.244.9.1/24".into()],
        rules: vec![expected().rules[0].replace("10.244.1.0/24", "10.244.9.0/24")],
        ..expected()
    };
    let mut last = None;
    wait_for(WAIT, || {
        let h = host_side(&c.nodes[0].ns);
        let done = h == want;
        last = Some(h);
        done.then_some(())
    })
    .unwrap_or_else(|| panic!("after the pod CIDR change: {last:?}\n{}", c.logs()));
}

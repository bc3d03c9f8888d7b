//! Ports and the daemon over their lifetime: a pod vanishing under traffic, `del-port`,
//! SIGTERM, and a restart that restores ports from `--state-dir`.
//!
//!     cargo test --test e2e_lifecycle -- pod_vanishes
//!
//! Needs root and built binaries (`cargo build`).

use std::time::Duration;
use vswitch_suite::pod::tcp_transfer;
use vswitch_suite::topo::Topo;
use vswitch_suite::wait_for;

/// Pod 1 is deleted (its veth goes, as when Kubernetes removes a pod) while pods 0 and 2
/// flood it with pings. The daemon must keep running, drop the port by itself, and keep
/// forwarding between the others.
fn pod_vanishes_under_traffic(mode: &str) {
    let Some(_env) = vswitch_suite::e2e() else {
        return;
    };
    let mut t = Topo::with_pods(3).expect("topology");
    t.add_all(mode).expect("add ports");
    for (a, b) in [(0, 1), (2, 1), (0, 2)] {
        t.ping_pair(a, b).unwrap_or_else(|e| panic!("{mode}: {e}"));
    }
    let victim = t.pods[1].switch_if.clone();
    let mut floods = vec![
        t.pods[0].flood(t.pods[1].ip, 4).expect("flood 0 -> 1"),
        t.pods[2].flood(t.pods[1].ip, 4).expect("flood 2 -> 1"),
        t.pods[0].flood(t.pods[2].ip, 4).expect("flood 0 -> 2"),
    ];
    std::thread::sleep(Duration::from_millis(1000));
    t.pods[1].remove_link().expect("delete pod 1's veth");
    assert!(
        !t.sw.links().expect("links").contains(&victim),
        "the switch end must be gone with the pair"
    );

    t.wait_port_gone(&victim, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{mode}: {e}"));
    assert!(
        t.daemon.is_running(),
        "vswitchd died when a port vanished:\n{}",
        t.daemon.log_text()
    );
    for f in &mut floods {
        // They end by themselves (-w); the ones at pod 1 fail, which is expected.
        let _ = f.wait();
    }
    assert!(
        t.daemon.is_running(),
        "vswitchd died under traffic to a vanished port"
    );
    t.ping_pair(0, 2)
        .unwrap_or_else(|e| panic!("{mode}: after the pod went: {e}"));
    t.ping_pair(2, 0)
        .unwrap_or_else(|e| panic!("{mode}: after the pod went: {e}"));
    tcp_transfer(&t.pods[0], &t.pods[2], 2 << 20)
        .unwrap_or_else(|e| panic!("{mode}: tcp after the pod went: {e}"));
    // The other ports are untouched.
    for i in [0, 2] {
        let p = t.daemon.port(&t.pods[i].switch_if).expect("show");
        assert!(p.is_some_and(|p| p["state"] == "up"), "port {i} lost");
    }
}

#[test]
fn pod_vanishes_under_traffic_xdp_drv() {
    pod_vanishes_under_traffic("xdp-drv");
}

#[test]
fn pod_vanishes_under_traffic_xdp_skb() {
    pod_vanishes_under_traffic("xdp-skb");
}

#[test]
fn pod_vanishes_under_traffic_packet() {
    pod_vanishes_under_traffic("packet");
}

/// `del-port` detaches the port's XDP program and leaves the interface in place; the
/// other ports keep theirs. Packet mode never attaches XDP.
#[test]
fn del_port_detaches_xdp() {
    let Some(_env) = vswitch_suite::e2e() else {
        return;
    };
    let t = Topo::with_pods(3).expect("topology");
    let modes = ["xdp-drv", "xdp-skb", "packet"];
    for (p, mode) in t.pods.iter().zip(modes) {
        t.daemon.add_port(&p.switch_if, mode).expect("add port");
    }
    let ifs: Vec<String> = t.pods.iter().map(|p| p.switch_if.clone()).collect();
    let xdp = |i: usize| t.sw.xdp_attached(&ifs[i]).expect("ip link");
    assert!(
        xdp(0) && xdp(1) && !xdp(2),
        "XDP on drv/skb/packet ports: {} {} {}",
        xdp(0),
        xdp(1),
        xdp(2)
    );
    t.ping_pair(0, 1).expect("ping drv -> skb");
    t.ping_pair(2, 0).expect("ping packet -> drv");

    t.daemon.del_port(&ifs[0]).expect("del-port drv");
    assert!(!xdp(0), "XDP still attached to {} after del-port", ifs[0]);
    assert!(xdp(1), "del-port of another port detached {}", ifs[1]);
    assert!(
        t.daemon.port(&ifs[0]).expect("show").is_none(),
        "deleted port still listed"
    );
    assert!(
        t.sw.links().expect("links").contains(&ifs[0]),
        "del-port must not delete the interface"
    );
    t.ping_pair(1, 2)
        .expect("ping skb -> packet after del-port");

    t.daemon.del_port(&ifs[1]).expect("del-port skb");
    t.daemon.del_port(&ifs[2]).expect("del-port packet");
    assert!(
        t.sw.links_with_xdp().expect("ip link").is_empty(),
        "XDP left after deleting every port"
    );
    assert!(t.daemon.ports().expect("show").is_empty());
    assert!(
        t.daemon.del_port(&ifs[0]).is_err(),
        "del-port of an unknown port must fail"
    );
    // Ports can come back.
    t.daemon.add_port(&ifs[0], "xdp-skb").expect("re-add");
    t.daemon.add_port(&ifs[1], "xdp-skb").expect("re-add");
    t.ping_pair(0, 1).expect("ping after re-adding");
}

/// Pods with one port per mode, pinged, then SIGTERM: the daemon exits 0, no XDP program
/// is left on any interface of the switch namespace, the test's interfaces and pod
/// addresses are untouched, and interfaces the daemon made for itself are gone.
#[test]
fn sigterm_detaches_xdp_and_removes_nothing() {
    let Some(_env) = vswitch_suite::e2e() else {
        return;
    };
    let mut t = Topo::with_pods(3).expect("topology");
    for (p, mode) in t.pods.iter().zip(["xdp-drv", "xdp-skb", "packet"]) {
        t.daemon.add_port(&p.switch_if, mode).expect("add port");
    }
    t.ping_pair(0, 1).expect("ping");
    t.ping_pair(1, 2).expect("ping");
    // The interfaces the test made; the daemon may add helpers of its own (it does:
    // UMEM anchor veths), which it must remove again.
    let mut ours: Vec<String> = t.pods.iter().map(|p| p.switch_if.clone()).collect();
    ours.push("lo".into());
    ours.sort();
    assert!(
        !t.sw.links_with_xdp().expect("ip link").is_empty(),
        "no XDP attached before SIGTERM"
    );

    let status = t.daemon.stop().expect("vswitchd must exit on SIGTERM");
    assert!(
        status.success(),
        "vswitchd exited with {status:?} on SIGTERM:\n{}",
        t.daemon.log_text()
    );
    assert_eq!(
        t.sw.links_with_xdp().expect("ip link"),
        Vec::<String>::new(),
        "XDP left attached after SIGTERM"
    );
    // Ours are all still there, and whatever the daemon made for itself is gone.
    let mut after = t.sw.links().expect("links");
    after.sort();
    assert_eq!(
        after, ours,
        "after SIGTERM the switch namespace must hold exactly the test's interfaces"
    );
    for p in &t.pods {
        let addrs =
            p.ns.ip(&["-o", "addr", "show", "dev", &p.ifname])
                .expect("pod link");
        assert!(
            addrs.contains(&p.ip.to_string()),
            "pod {} lost its address",
            p.ip
        );
        let link = t.sw.link(&p.switch_if).expect("switch end");
        assert!(
            link["flags"]
                .as_array()
                .is_some_and(|f| f.iter().any(|x| x == "UP")),
            "{} went down",
            p.switch_if
        );
    }
}

/// After SIGTERM and a restart with the same `--state-dir`, the ports come back by
/// themselves (no add-port), in their modes, and traffic flows again.
#[test]
fn restart_restores_ports_from_state_dir() {
    let Some(_env) = vswitch_suite::e2e() else {
        return;
    };
    let mut t = Topo::with_pods(3).expect("topology");
    let modes = ["xdp-drv", "xdp-skb", "packet"];
    for (p, mode) in t.pods.iter().zip(modes) {
        t.daemon.add_port(&p.switch_if, mode).expect("add port");
    }
    t.ping_pair(0, 1).expect("ping before restart");
    let status = t.daemon.stop().expect("SIGTERM");
    assert!(status.success(), "exit on SIGTERM: {status:?}");

    t.daemon.restart().expect("restart with the same state dir");
    let ifs: Vec<String> = t.pods.iter().map(|p| p.switch_if.clone()).collect();
    let restored = wait_for(Duration::from_secs(10), || {
        let ports = t.daemon.ports().ok()?;
        let all = ifs.iter().zip(modes).all(|(i, m)| {
            ports
                .iter()
                .any(|p| p["name"] == i.as_str() && p["mode"] == m)
        });
        all.then_some(ports)
    });
    let Some(ports) = restored else {
        panic!(
            "ports not restored from {}: {:?}\n{}",
            t.daemon.state_dir().display(),
            t.daemon.ports(),
            t.daemon.log_text()
        );
    };
    assert_eq!(ports.len(), 3, "{ports:?}");
    for (a, b) in [(0, 1), (1, 2), (2, 0)] {
        t.ping_pair(a, b)
            .unwrap_or_else(|e| panic!("after restart: {e}"));
    }
    tcp_transfer(&t.pods[0], &t.pods[2], 2 << 20).expect("tcp after restart");
}

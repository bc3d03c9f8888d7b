//! The in-kernel XDP fast path (`vswitchd --xdp-fastpath`, vswitch/src/port/fastpath.rs)
//! with real pods: kernel ping and TCP go through it, the stats say so, a flow change
//! is in force at once (no stale kernel decision), a port deleted under traffic, a
//! MAC move, malformed frames, and SIGTERM leaving no XDP program.
//!
//! Needs root and built binaries (`cargo build`):
//!
//!     cargo test --test e2e_fastpath
//!
//! The pod end of every veth gets GRO on: a veth accepts redirected XDP frames only
//! when its peer runs NAPI (what the CNI plugin does for real pods).

use std::time::Duration;
use vswitch_suite::daemon::DaemonOpts;
use vswitch_suite::pod::{PodOpts, tcp_transfer};
use vswitch_suite::topo::Topo;
use vswitch_suite::wait_for;

const TCP_BYTES: u64 = 20 << 20;

fn topo(pods: usize) -> Topo {
    let opts = DaemonOpts {
        extra_args: vec!["--xdp-fastpath".into()],
        ..DaemonOpts::default()
    };
    let t = Topo::new(&vec![PodOpts::default(); pods], opts).expect("topology");
    for p in &t.pods {
        p.ns.run(&["ethtool", "-K", &p.ifname, "gro", "on"])
            .expect("gro on at the pod end");
    }
    t
}

/// `topo(pods)` with every port added in xdp-drv mode and pod 0 having pinged each
/// other pod, so the switch knows every MAC and the kernel holds entries.
fn talking_topo(pods: usize) -> Topo {
    let t = topo(pods);
    t.add_all("xdp-drv").expect("add ports");
    for b in 1..pods {
        t.ping_pair(0, b)
            .unwrap_or_else(|e| panic!("ping 0 -> {b}: {e}"));
    }
    t
}

fn ping_ok(t: &Topo, a: usize, b: usize, n: u32) -> bool {
    t.pods[a]
        .ping(t.pods[b].ip, n)
        .map(|r| r.all_answered())
        .unwrap_or(false)
}

/// (fast-path rx of port `a`, fast-path tx of port `b`).
fn fp_counts(t: &Topo, a: usize, b: usize) -> (u64, u64) {
    let s = t.daemon.stats().expect("stats");
    (
        s.counter(&t.pods[a].switch_if, "fastpath_rx_packets"),
        s.counter(&t.pods[b].switch_if, "fastpath_tx_packets"),
    )
}

/// The program on every switch end is ours (`vswitch_fastpath`).
fn assert_fastpath_prog(t: &Topo) {
    for p in &t.pods {
        let out =
            t.sw.run(&["ip", "-d", "link", "show", "dev", &p.switch_if])
                .expect("ip link");
        assert!(
            out.contains("vswitch_fastpa"),
            "{} should run the fast-path program:\n{out}",
            p.switch_if
        );
    }
}

fn forwarding_and_invalidation(mode: &str) {
    let Some(_env) = vswitch_suite::e2e() else {
        return;
    };
    let mut t = topo(3);
    t.add_all(mode).expect("add ports");
    assert_fastpath_prog(&t);
    for (a, b) in [(0, 1), (1, 0), (0, 2), (2, 1)] {
        t.ping_pair(a, b).unwrap_or_else(|e| panic!("{mode}: {e}"));
    }
    let before = t.daemon.stats().expect("stats");
    let x = tcp_transfer(&t.pods[0], &t.pods[1], TCP_BYTES)
        .unwrap_or_else(|e| panic!("{mode}: tcp 0 -> 1: {e}"));
    eprintln!(
        "{mode}: tcp 0 -> 1 with the fast path: {:.0} Mbit/s",
        x.mbit_per_s()
    );
    // Most frames of the transfer never reached user space, and the port counters
    // include them.
    let (s0, s1) = (&t.pods[0].switch_if, &t.pods[1].switch_if);
    let after = wait_for(Duration::from_secs(5), || {
        let s = t.daemon.stats().ok()?;
        (s.counter(s1, "tx_bytes") - before.counter(s1, "tx_bytes") >= TCP_BYTES).then_some(s)
    })
    .unwrap_or_else(|| panic!("{mode}: tx bytes of {s1} did not cover the transfer"));
    let d = |port: &str, key: &str| after.counter(port, key) - before.counter(port, key);
    let (rx, fp_rx) = (d(s0, "rx_packets"), d(s0, "fastpath_rx_packets"));
    let (tx, fp_tx) = (d(s1, "tx_packets"), d(s1, "fastpath_tx_packets"));
    eprintln!("{mode}: port 0 rx {rx} ({fp_rx} fast path); port 1 tx {tx} ({fp_tx} fast path)");
    assert!(
        fp_rx * 10 >= rx * 9 && fp_rx > 0,
        "{mode}: most of {s0}'s frames must take the fast path: {fp_rx} of {rx}"
    );
    assert!(fp_tx * 10 >= tx * 9, "{mode}: {fp_tx} of {tx}");
    assert!(
        d(s0, "rx_bytes") >= TCP_BYTES,
        "fast-path bytes are counted"
    );
    let text = t.daemon.vsctl(&["stats"]).expect("vsctl stats");
    assert!(text.contains("xdp fastpath rx pkts="), "{text}");

    // A drop flow is in force for the very next ping: no stale kernel decision.
    let (r0, _) = fp_counts(&t, 0, 1);
    assert!(ping_ok(&t, 0, 1, 5));
    let (r1, _) = fp_counts(&t, 0, 1);
    assert!(r1 > r0, "{mode}: the ping itself took the fast path");
    let drop = format!("table=0,priority=100,in_port={s0},icmp actions=drop");
    t.daemon.vsctl(&["add-flow", &drop]).expect("add-flow");
    let r = t.pods[0].ping(t.pods[1].ip, 3).expect("ping");
    assert_eq!(r.received, 0, "{mode}: ping must be dropped at once: {r:?}");
    t.daemon
        .vsctl(&["del-flows", &format!("table=0,in_port={s0},icmp")])
        .expect("del-flows");
    assert!(
        ping_ok(&t, 0, 1, 3),
        "{mode}: ping works again right after del-flows"
    );
    // An output flow steering pod 0's frames elsewhere also wins at once.
    let s2 = &t.pods[2].switch_if;
    let steer = format!("table=0,priority=100,in_port={s0} actions=output:{s2}");
    t.daemon.vsctl(&["add-flow", &steer]).expect("add-flow");
    let r = t.pods[0].ping(t.pods[1].ip, 3).expect("ping");
    assert_eq!(r.received, 0, "{mode}: frames go to pod 2 now: {r:?}");
    t.daemon
        .vsctl(&["del-flows", &format!("table=0,in_port={s0}")])
        .expect("del-flows");
    assert!(ping_ok(&t, 0, 1, 3), "{mode}: back to the bridge");

    // SIGTERM leaves no XDP program behind.
    let status = t.daemon.stop().expect("vswitchd must exit on SIGTERM");
    assert!(status.success(), "{status}");
    assert_eq!(
        t.sw.links_with_xdp().expect("ip link"),
        Vec::<String>::new(),
        "XDP programs left after SIGTERM"
    );
}

#[test]
fn fastpath_xdp_drv() {
    forwarding_and_invalidation("xdp-drv");
}

#[test]
fn fastpath_xdp_skb() {
    forwarding_and_invalidation("xdp-skb");
}

/// A port deleted while the kernel forwards to it: the others keep working, the
/// daemon is fine, nothing is redirected to the gone port.
#[test]
fn fastpath_port_deleted_under_traffic() {
    let Some(_env) = vswitch_suite::e2e() else {
        return;
    };
    let t = talking_topo(3);
    let mut flood = t.pods[0].flood(t.pods[1].ip, 4).expect("ping -f");
    std::thread::sleep(Duration::from_millis(500));
    let s1 = t.pods[1].switch_if.clone();
    t.daemon.del_port(&s1).expect("del-port under traffic");
    let _ = flood.wait();
    assert!(t.daemon.port(&s1).expect("show").is_none());
    assert!(
        !t.sw.xdp_attached(&s1).expect("ip link"),
        "deleted port keeps no program"
    );
    assert!(!ping_ok(&t, 0, 1, 2), "pod 1 is not reachable any more");
    assert!(ping_ok(&t, 0, 2, 3), "the other pods still talk");
    let (rx, _) = fp_counts(&t, 0, 2);
    assert!(rx > 0, "pod 0's frames still take the fast path");
}

/// A MAC that moves to another port: once the switch sees it there (a frame from
/// it on the new port), frames to it go to the new port, kernel entries included.
#[test]
fn fastpath_mac_move() {
    let Some(_env) = vswitch_suite::e2e() else {
        return;
    };
    let t = talking_topo(3);
    // Pod 1 goes away; pod 2 takes over its MAC and address (a VM migration, a
    // pod replaced with the same identity).
    let (p1, p2) = (&t.pods[1], &t.pods[2]);
    p1.ns
        .ip(&["link", "set", &p1.ifname, "down"])
        .expect("pod 1 down");
    p2.ns
        .ip(&["addr", "flush", "dev", &p2.ifname])
        .expect("flush");
    p2.ns
        .ip(&["link", "set", "dev", &p2.ifname, "address", &p1.mac])
        .expect("mac");
    p2.ns
        .ip(&["addr", "add", &format!("{}/24", p1.ip), "dev", &p2.ifname])
        .expect("addr");
    // The new home speaks first (its ARP for pod 0 is seen by the switch).
    t.pods[2]
        .ping_until(t.pods[0].ip, Duration::from_secs(10))
        .expect("pod 2 (with pod 1's identity) reaches pod 0");
    let before = t.daemon.stats().expect("stats");
    let s = before.0["switch"]["mac_moved"].as_u64().unwrap_or(0);
    assert!(s >= 1, "the move was learned: {}", before.0["switch"]);
    // Pod 0 still has pod 1's MAC in its ARP cache: its frames must reach pod 2.
    assert!(
        ping_ok(&t, 0, 1, 5),
        "frames to the moved MAC reach its new port"
    );
    let after = t.daemon.stats().expect("stats");
    let s2 = &t.pods[2].switch_if;
    assert!(
        after.counter(s2, "tx_packets") >= before.counter(s2, "tx_packets") + 5,
        "the replies' requests went out of pod 2's port"
    );
}

/// Runts, truncated VLAN tags and garbage from a pod: counted and dropped or
/// forwarded as the slow path would, the daemon keeps forwarding.
#[test]
fn fastpath_malformed_frames() {
    let Some(_env) = vswitch_suite::e2e() else {
        return;
    };
    let t = talking_topo(2);
    let (m0, m1) = (
        t.pods[0].mac_bytes().expect("mac"),
        t.pods[1].mac_bytes().expect("mac"),
    );
    let before = t.daemon.stats().expect("stats");
    let mut frames = Vec::new();
    // Exactly an Ethernet header, IPv4 type, to a known MAC (the kernel entry's key).
    let mut hdr = Vec::new();
    hdr.extend_from_slice(&m1);
    hdr.extend_from_slice(&m0);
    hdr.extend_from_slice(&[0x08, 0x00]);
    frames.push(hdr.clone());
    // A VLAN tag cut short: the slow path drops it as malformed.
    let mut vlan = Vec::new();
    vlan.extend_from_slice(&m1);
    vlan.extend_from_slice(&m0);
    vlan.extend_from_slice(&[0x81, 0x00, 0x00]);
    for _ in 0..5 {
        frames.push(vlan.clone());
    }
    // IPv4 with a nonsense header length.
    let mut bad = hdr.clone();
    bad.extend_from_slice(&[0x4f; 30]);
    frames.push(bad);
    let sent = t.pods[0].send_frames(frames).expect("send");
    assert!(sent.iter().all(|r| r.is_ok()), "{sent:?}");
    let s0 = &t.pods[0].switch_if;
    let counted = wait_for(Duration::from_secs(5), || {
        let s = t.daemon.stats().ok()?;
        (s.drops(s0, "malformed") >= before.drops(s0, "malformed") + 5).then_some(())
    });
    assert!(
        counted.is_some(),
        "truncated VLAN frames counted as malformed"
    );
    assert!(ping_ok(&t, 0, 1, 3), "still forwarding");
    assert!(ping_ok(&t, 1, 0, 3), "both ways");
}

/// The safety net: a pod end without NAPI (GRO off, no XDP program) makes the
/// kernel drop every frame redirected to it; the switch sees that the interface no
/// longer accepts redirects, takes that port off the fast path (traffic flows
/// through user space), and puts it back when GRO is turned on again.
#[test]
fn fastpath_port_without_napi_is_taken_off() {
    let Some(_env) = vswitch_suite::e2e() else {
        return;
    };
    let t = talking_topo(2);
    let p1 = &t.pods[1];
    let (_, a) = fp_counts(&t, 0, 1);
    assert!(a > 0, "pod 1 receives through the fast path");
    p1.ns
        .run(&["ethtool", "-K", &p1.ifname, "gro", "off"])
        .expect("gro off");
    let off = wait_for(Duration::from_secs(10), || {
        let s = t.daemon.stats().ok()?;
        (s.0["switch"]["fastpath_ports_disabled"].as_u64() >= Some(1)).then_some(())
    });
    assert!(off.is_some(), "port 1 taken off the fast path");
    let log = t.daemon.log_text();
    assert!(log.contains("taking it off the fast path"), "{log}");
    let (_, b) = fp_counts(&t, 0, 1);
    assert!(
        ping_ok(&t, 0, 1, 5),
        "all pings answered through user space"
    );
    let (_, c) = fp_counts(&t, 0, 1);
    assert_eq!(b, c, "nothing redirected to a port without NAPI");
    // GRO on again: back on the fast path, the kernel forwards to it.
    p1.ns
        .run(&["ethtool", "-K", &p1.ifname, "gro", "on"])
        .expect("gro on");
    let back = wait_for(Duration::from_secs(10), || {
        t.daemon
            .log_text()
            .contains("port back on the fast path")
            .then_some(())
    });
    assert!(back.is_some(), "port 1 back on the fast path");
    assert!(ping_ok(&t, 0, 1, 5), "pings answered");
    let (_, d) = fp_counts(&t, 0, 1);
    assert!(d > c, "pod 1 receives through the fast path again");
}

/// After SIGKILL the fast-path programs stay on the interfaces (nobody detaches
/// them); the next vswitchd recognises them as its own, replaces them when it
/// restores the ports, and forwards (through the kernel again).
#[test]
fn fastpath_restart_after_sigkill_replaces_leftovers() {
    let Some(_env) = vswitch_suite::e2e() else {
        return;
    };
    let mut t = talking_topo(2);
    let pid = t.daemon.pid().expect("pid");
    // SAFETY: kill(2) on the daemon this test started.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let dead = wait_for(Duration::from_secs(5), || {
        (!t.daemon.is_running()).then_some(())
    });
    assert!(dead.is_some(), "vswitchd killed");
    assert!(
        t.sw.xdp_attached(&t.pods[0].switch_if).expect("ip link"),
        "SIGKILL leaves the program behind"
    );
    t.daemon.restart().expect("restart with the same state dir");
    let restored = wait_for(Duration::from_secs(10), || {
        let n = t.daemon.ports().ok()?.len();
        (n == 2).then_some(())
    });
    assert!(restored.is_some(), "ports restored after SIGKILL");
    assert_fastpath_prog(&t);
    t.ping_pair(0, 1).expect("ping after restart");
    let (rx, tx) = fp_counts(&t, 0, 1);
    assert!(rx > 0 && tx > 0, "the new daemon's fast path forwards");
    let status = t.daemon.stop().expect("SIGTERM");
    assert!(status.success(), "{status}");
    assert_eq!(
        t.sw.links_with_xdp().expect("ip link"),
        Vec::<String>::new(),
        "no XDP program left"
    );
}

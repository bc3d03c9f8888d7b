//! End-to-end forwarding through vswitchd, once per port mode: three pods on one switch,
//! ARP, ping both ways between every pair, a 10 MB TCP transfer, counters.
//!
//! Needs root and built binaries (`cargo build`); one mode at a time:
//!
//!     cargo test --test e2e_forwarding -- xdp_skb
//!
//! The pods use the kernel's own ARP, ICMP and TCP: what a real pod would do.

use std::time::Duration;
use vswitch_suite::pod::tcp_transfer;
use vswitch_suite::topo::Topo;
use vswitch_suite::wait_for;

/// Bytes moved by each TCP transfer.
const TCP_BYTES: u64 = 10 << 20;

fn forwarding(mode: &str) {
    let Some(_env) = vswitch_suite::e2e() else {
        return;
    };
    let t = Topo::with_pods(3).expect("topology");
    t.add_all(mode).expect("add ports");

    // `vsctl show` lists every port as added, in the mode asked for.
    for p in &t.pods {
        let port = t
            .daemon
            .port(&p.switch_if)
            .expect("vsctl show")
            .unwrap_or_else(|| panic!("{} not listed", p.switch_if));
        assert_eq!(port["mode"], mode, "{port}");
        assert_eq!(port["requested_mode"], mode, "{port}");
        assert_eq!(port["kind"], "pod", "{port}");
        assert_eq!(port["state"], "up", "{port}");
        assert_eq!(
            port["zero_copy"], false,
            "veth has no zero-copy AF_XDP: {port}"
        );
        assert!(port["ifindex"].as_u64().is_some_and(|i| i > 0), "{port}");
        assert_eq!(port["mtu"], 1500, "{port}");
    }
    // The XDP modes put a program on the switch end; packet mode must not.
    for p in &t.pods {
        let xdp = t.sw.xdp_attached(&p.switch_if).expect("ip link");
        assert_eq!(
            xdp,
            mode != "packet",
            "{} in {mode}: XDP attached = {xdp}",
            p.switch_if
        );
    }
    let before = t.daemon.stats().expect("stats");

    // Ping both ways between every pair. The first ping of a pair needs ARP (broadcast
    // request, unicast reply) through the switch.
    for (a, b) in [(0, 1), (1, 0), (0, 2), (2, 0), (1, 2), (2, 1)] {
        t.ping_pair(a, b).unwrap_or_else(|e| panic!("{mode}: {e}"));
    }
    // ARP resolved to the right MACs.
    for (a, b) in [(0, 1), (1, 2), (2, 0)] {
        let (pa, pb) = (&t.pods[a], &t.pods[b]);
        let (lladdr, state) = pa
            .neighbor(pb.ip)
            .expect("ip neigh")
            .unwrap_or_else(|| panic!("no ARP entry for {}", pb.ip));
        assert_eq!(
            lladdr, pb.mac,
            "{} resolved {} (state {state})",
            pa.ip, pb.ip
        );
        assert!(
            !matches!(state.as_str(), "FAILED" | "INCOMPLETE"),
            "ARP state {state}"
        );
    }

    // TCP, with full-size segments (offloads are off on the pod ends, see veth.rs).
    let x = tcp_transfer(&t.pods[0], &t.pods[1], TCP_BYTES)
        .unwrap_or_else(|e| panic!("{mode}: tcp 0 -> 1: {e}"));
    eprintln!(
        "{mode}: tcp 0 -> 1: {} bytes in {:?} ({:.0} Mbit/s)",
        x.bytes,
        x.elapsed,
        x.mbit_per_s()
    );
    let y = tcp_transfer(&t.pods[2], &t.pods[0], TCP_BYTES)
        .unwrap_or_else(|e| panic!("{mode}: tcp 2 -> 0: {e}"));
    eprintln!(
        "{mode}: tcp 2 -> 0: {} bytes in {:?} ({:.0} Mbit/s)",
        y.bytes,
        y.elapsed,
        y.mbit_per_s()
    );

    // Counters moved: every port received and sent; the TCP paths carried at least the
    // payload. Workers may publish counters with a delay, hence the wait.
    let (p0, p1, p2) = (
        &t.pods[0].switch_if,
        &t.pods[1].switch_if,
        &t.pods[2].switch_if,
    );
    let moved = wait_for(Duration::from_secs(5), || {
        let s = t.daemon.stats().ok()?;
        let d = |port: &str, key: &str| {
            s.counter(port, key)
                .saturating_sub(before.counter(port, key))
        };
        let ok = [p0, p1, p2].iter().all(|p| d(p, "rx_packets") > 0 && d(p, "tx_packets") > 0)
            && d(p0, "rx_bytes") >= TCP_BYTES // 0 -> 1 enters the switch at port 0
            && d(p1, "tx_bytes") >= TCP_BYTES // and leaves at port 1
            && d(p2, "rx_bytes") >= TCP_BYTES // 2 -> 0 enters at port 2
            && d(p0, "tx_bytes") >= TCP_BYTES; // and leaves at port 0
        ok.then_some(s)
    });
    if moved.is_none() {
        let now = t.daemon.stats().expect("stats");
        panic!(
            "{mode}: counters did not move as expected\nbefore: {}\nafter: {}",
            before.0, now.0
        );
    }
}

#[test]
fn xdp_drv() {
    forwarding("xdp-drv");
}

#[test]
fn xdp_skb() {
    forwarding("xdp-skb");
}

#[test]
fn packet() {
    forwarding("packet");
}

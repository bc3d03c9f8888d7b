//! The uplink shared with the host (docs/overlay.md, "The uplink XDP filter"): a port of
//! kind `uplink` runs the switch's own XDP program, which takes only VXLAN and NodePort
//! traffic to the node's addresses; the host's own traffic over the same NIC (ping,
//! TCP, other UDP, ARP) never reaches the switch and survives the switch coming and
//! going.
//!
//! Topology: namespace `node` (the host stack and vswitchd, uplink `vsup0`,
//! 192.0.2.1/24) joined by a veth to namespace `peer` (`vsup1`, 192.0.2.2/24).
//!
//!     cargo test --test e2e_uplink
//!
//! Needs root and built binaries (`cargo build`).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use vswitch_suite::daemon::{DaemonOpts, Vswitchd};
use vswitch_suite::netns::Netns;
use vswitch_suite::veth::Veth;
use vswitch_suite::{Result, wait_for};

const NODE_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const UPLINK: &str = "vsup0";

struct Nodes {
    node: Netns,
    peer: Netns,
    _link: Veth,
}

fn nodes() -> Result<Nodes> {
    let node = Netns::new("node")?;
    let peer = Netns::new("peer")?;
    let link = Veth::new(&node, UPLINK, &peer, "vsup1")?;
    node.ip(&["addr", "add", "192.0.2.1/24", "dev", UPLINK])?;
    peer.ip(&["addr", "add", "192.0.2.2/24", "dev", "vsup1"])?;
    Ok(Nodes {
        node,
        peer,
        _link: link,
    })
}

/// The name of the XDP program on `ifname`, if any (`ip -d -j link`).
fn xdp_prog_name(ns: &Netns, ifname: &str) -> Result<Option<String>> {
    let link = ns.link(ifname)?;
    let Some(xdp) = link.get("xdp") else {
        return Ok(None);
    };
    Ok(Some(
        xdp["prog"]["name"]
            .as_str()
            .or_else(|| xdp["attached"][0]["prog"]["name"].as_str())
            .unwrap_or("?")
            .to_string(),
    ))
}

fn rx_packets(d: &Vswitchd) -> u64 {
    d.stats()
        .map(|s| s.counter(UPLINK, "rx_packets"))
        .unwrap_or(0)
}

/// Waits until the switch's uplink RX count stops moving, and returns it.
fn settled_rx(d: &Vswitchd) -> u64 {
    let mut last = rx_packets(d);
    loop {
        std::thread::sleep(Duration::from_millis(400));
        let now = rx_packets(d);
        if now == last {
            return now;
        }
        last = now;
    }
}

/// Sends `n` UDP datagrams from the peer namespace to `dst:port`.
fn send_udp(peer: &Netns, dst: Ipv4Addr, port: u16, n: usize) -> Result<()> {
    peer.enter(move || {
        let s = UdpSocket::bind("0.0.0.0:0")?;
        // A VXLAN header (I flag, VNI 1) and some payload; what it carries does not
        // matter to the filter.
        let mut msg = vec![0x08, 0, 0, 0, 0, 0, 1, 0];
        msg.extend_from_slice(&[0x55; 64]);
        for _ in 0..n {
            s.send_to(&msg, (dst, port))?;
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    })
}

fn filter_takes_only_switch_traffic(mode: &str) {
    let Some(_env) = vswitch_suite::e2e() else {
        return;
    };
    let n = nodes().expect("namespaces");
    let d = Vswitchd::start(&n.node, DaemonOpts::default()).expect("vswitchd");
    // The peer knows the node's MAC before the switch is there (ARP is the host's
    // anyway, but this keeps the first counted frames free of ARP timing).
    n.peer
        .run(&["ping", "-c1", "-W2", &NODE_IP.to_string()])
        .expect("ping before the switch");
    d.add_port_kind(UPLINK, "uplink", mode)
        .unwrap_or_else(|e| panic!("{mode}: add uplink: {e}"));
    assert_eq!(
        xdp_prog_name(&n.node, UPLINK).expect("link"),
        Some("vswitch_uplink".to_string()),
        "{mode}: the uplink runs the switch's filter, not libxdp's redirect-all program"
    );
    let base = settled_rx(&d);

    // Switch traffic: VXLAN to the node IP, UDP to a NodePort.
    send_udp(&n.peer, NODE_IP, 4789, 5).expect("send vxlan");
    send_udp(&n.peer, NODE_IP, 30080, 3).expect("send nodeport udp");
    let got = wait_for(Duration::from_secs(5), || {
        (rx_packets(&d) >= base + 8).then_some(())
    });
    assert!(
        got.is_some(),
        "{mode}: VXLAN and NodePort frames must reach the switch (rx {} -> {})",
        base,
        rx_packets(&d)
    );
    let after_switch = settled_rx(&d);
    assert_eq!(
        after_switch,
        base + 8,
        "{mode}: exactly the 8 frames sent to the switch"
    );

    // Host traffic: ping, UDP to a host socket, TCP to a host listener.
    n.peer
        .run(&["ping", "-c3", "-i0.2", "-W2", &NODE_IP.to_string()])
        .unwrap_or_else(|e| {
            panic!("{mode}: the host must answer ping with the switch attached: {e}")
        });
    let udp = n
        .node
        .enter(|| Ok(UdpSocket::bind((NODE_IP, 5000))?))
        .expect("host udp socket");
    udp.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    send_udp(&n.peer, NODE_IP, 5000, 4).expect("send host udp");
    let mut buf = [0u8; 256];
    for i in 0..4 {
        udp.recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("{mode}: host UDP datagram {i} lost: {e}"));
    }
    let listener = n
        .node
        .enter(|| Ok(TcpListener::bind((NODE_IP, 2222))?))
        .expect("host listener");
    let server = std::thread::spawn(move || -> std::io::Result<Vec<u8>> {
        let (mut c, _) = listener.accept()?;
        let mut got = vec![0u8; 5];
        c.read_exact(&mut got)?;
        c.write_all(b"world")?;
        Ok(got)
    });
    let reply = n
        .peer
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
        .unwrap_or_else(|e| panic!("{mode}: TCP to the host with the switch attached: {e}"));
    assert_eq!(reply, b"world");
    assert_eq!(
        server.join().expect("server thread").expect("server"),
        b"hello"
    );
    assert_eq!(
        settled_rx(&d),
        after_switch,
        "{mode}: the switch must see none of the host's ping, UDP, TCP and ARP"
    );

    // A TCP NodePort belongs to the switch: the host never answers it.
    let nodeport_tcp = n.peer.enter(|| {
        Ok(TcpStream::connect_timeout(
            &SocketAddr::from((NODE_IP, 30080)),
            Duration::from_millis(700),
        )
        .is_ok())
    });
    assert!(
        !nodeport_tcp.expect("connect attempt"),
        "{mode}: a SYN to a NodePort goes to the switch, not to the host (which would RST)"
    );
    assert!(
        settled_rx(&d) > after_switch,
        "{mode}: the switch received the NodePort SYN"
    );

    // An address added to the node later is taken too (the switch refreshes the
    // filter's node addresses every second).
    n.node
        .ip(&["addr", "add", "198.51.100.1/24", "dev", UPLINK])
        .expect("second node address");
    n.peer
        .ip(&["route", "add", "198.51.100.0/24", "dev", "vsup1"])
        .expect("peer route");
    std::thread::sleep(Duration::from_millis(1500));
    let before = settled_rx(&d);
    send_udp(&n.peer, Ipv4Addr::new(198, 51, 100, 1), 4789, 2).expect("vxlan to new address");
    let seen = wait_for(Duration::from_secs(5), || {
        (rx_packets(&d) >= before + 2).then_some(())
    });
    assert!(
        seen.is_some(),
        "{mode}: VXLAN to an address added after the port must reach the switch"
    );

    d.del_port(UPLINK).expect("del-port");
    assert_eq!(
        xdp_prog_name(&n.node, UPLINK).expect("link"),
        None,
        "{mode}: del-port removes the filter"
    );
    n.peer
        .run(&["ping", "-c1", "-W2", &NODE_IP.to_string()])
        .unwrap_or_else(|e| panic!("{mode}: ping after del-port: {e}"));
}

#[test]
fn uplink_filter_takes_only_switch_traffic_skb() {
    filter_takes_only_switch_traffic("xdp-skb");
}

#[test]
fn uplink_filter_takes_only_switch_traffic_drv() {
    filter_takes_only_switch_traffic("xdp-drv");
}

/// A TCP session of the host: the peer sends 1 KiB every 10 ms and the node's host
/// stack echoes it. Any stall longer than the read timeout fails the session.
struct Session {
    rounds: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    client: std::thread::JoinHandle<std::result::Result<u64, String>>,
    server: std::thread::JoinHandle<std::io::Result<()>>,
}

impl Session {
    fn start(n: &Nodes) -> Result<Session> {
        let listener = n.node.enter(|| Ok(TcpListener::bind((NODE_IP, 2323))?))?;
        let server = std::thread::spawn(move || -> std::io::Result<()> {
            let (mut c, _) = listener.accept()?;
            let mut buf = [0u8; 1024];
            loop {
                match c.read(&mut buf)? {
                    0 => return Ok(()),
                    k => c.write_all(&buf[..k])?,
                }
            }
        });
        let stream = n.peer.enter(|| {
            let s = TcpStream::connect_timeout(
                &SocketAddr::from((NODE_IP, 2323)),
                Duration::from_secs(3),
            )?;
            s.set_read_timeout(Some(Duration::from_secs(3)))?;
            Ok(s)
        })?;
        let rounds = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, st) = (rounds.clone(), stop.clone());
        let client = std::thread::spawn(move || -> std::result::Result<u64, String> {
            let mut s = stream;
            let msg = [0xa5u8; 1024];
            let mut back = [0u8; 1024];
            while !st.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                s.write_all(&msg).map_err(|e| format!("write: {e}"))?;
                s.read_exact(&mut back).map_err(|e| {
                    format!(
                        "echo stalled after {:?} (round {}): {e}",
                        t0.elapsed(),
                        r.load(Ordering::Relaxed)
                    )
                })?;
                if back != msg {
                    return Err("echo corrupted".into());
                }
                r.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(r.load(Ordering::Relaxed))
        });
        Ok(Session {
            rounds,
            stop,
            client,
            server,
        })
    }

    /// Waits `d` and checks the session made progress meanwhile.
    fn progresses(&self, d: Duration, phase: &str) {
        let before = self.rounds.load(Ordering::Relaxed);
        std::thread::sleep(d);
        let after = self.rounds.load(Ordering::Relaxed);
        assert!(
            after > before + 5,
            "host TCP session stalled while {phase} ({before} -> {after} rounds)"
        );
    }

    fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let rounds = self
            .client
            .join()
            .expect("client thread")
            .unwrap_or_else(|e| panic!("host TCP session broke: {e}"));
        drop(self.server);
        rounds
    }
}

#[test]
fn host_tcp_survives_uplink_lifecycle() {
    let Some(_env) = vswitch_suite::e2e() else {
        return;
    };
    let n = nodes().expect("namespaces");
    let session = Session::start(&n).expect("host TCP session");
    session.progresses(Duration::from_millis(500), "no switch runs");

    // Start, attach the uplink, run with VXLAN traffic beside the session, SIGTERM.
    let mut d = Vswitchd::start(&n.node, DaemonOpts::default()).expect("vswitchd");
    session.progresses(Duration::from_millis(300), "vswitchd starts");
    d.add_port_kind(UPLINK, "uplink", "xdp-skb")
        .expect("add uplink");
    assert_eq!(
        xdp_prog_name(&n.node, UPLINK).expect("link").as_deref(),
        Some("vswitch_uplink")
    );
    send_udp(&n.peer, NODE_IP, 4789, 20).expect("vxlan beside the session");
    session.progresses(Duration::from_secs(1), "the uplink is attached");
    assert!(
        rx_packets(&d) >= 20,
        "the switch got the VXLAN frames meanwhile"
    );
    let status = d.stop().expect("SIGTERM");
    assert!(
        status.success(),
        "vswitchd exits cleanly on SIGTERM: {status}"
    );
    assert_eq!(
        xdp_prog_name(&n.node, UPLINK).expect("link"),
        None,
        "no XDP program is left on the uplink after SIGTERM"
    );
    session.progresses(Duration::from_millis(500), "vswitchd has stopped");

    // A restart restores the uplink from the state dir and attaches the filter again;
    // del-port then removes it, the session running all along.
    d.restart().expect("restart");
    let back = wait_for(Duration::from_secs(5), || {
        xdp_prog_name(&n.node, UPLINK)
            .ok()
            .flatten()
            .filter(|p| p == "vswitch_uplink")
    });
    assert!(back.is_some(), "the restored uplink runs the filter again");
    session.progresses(
        Duration::from_millis(700),
        "the restored uplink is attached",
    );
    d.del_port(UPLINK).expect("del-port");
    assert_eq!(xdp_prog_name(&n.node, UPLINK).expect("link"), None);
    session.progresses(Duration::from_millis(300), "the uplink was deleted");
    let status = d.stop().expect("SIGTERM");
    assert!(status.success(), "{status}");

    let rounds = session.finish();
    assert!(
        rounds > 100,
        "the session kept exchanging data ({rounds} rounds)"
    );
    assert!(
        n.node.links_with_xdp().expect("links").is_empty(),
        "no XDP program anywhere in the node namespace"
    );
}

/// vswitchd killed with SIGKILL cannot detach its filter: the program stays, but with
/// the socket gone it passes every frame (the host keeps the NIC, VXLAN included);
/// the next vswitchd replaces it and SIGTERM then removes it.
#[test]
fn uplink_filter_left_by_sigkill_passes_everything() {
    let Some(_env) = vswitch_suite::e2e() else {
        return;
    };
    let n = nodes().expect("namespaces");
    let mut d = Vswitchd::start(&n.node, DaemonOpts::default()).expect("vswitchd");
    d.add_port_kind(UPLINK, "uplink", "xdp-skb")
        .expect("add uplink");
    let pid = d.pid().expect("pid");
    vswitch_suite::cmd::signal(pid, libc::SIGKILL).expect("SIGKILL");
    let status = d.stop().expect("reap");
    assert!(!status.success(), "killed: {status}");
    assert_eq!(
        xdp_prog_name(&n.node, UPLINK).expect("link").as_deref(),
        Some("vswitch_uplink"),
        "SIGKILL leaves the program attached (nothing can detach it)"
    );
    n.peer
        .run(&["ping", "-c2", "-i0.2", "-W2", &NODE_IP.to_string()])
        .expect("the host answers ping with the orphaned filter attached");
    // VXLAN, which the filter would take, reaches the host's stack now.
    let udp = n
        .node
        .enter(|| Ok(UdpSocket::bind((NODE_IP, 4789))?))
        .expect("host socket on the VXLAN port");
    udp.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    send_udp(&n.peer, NODE_IP, 4789, 2).expect("send vxlan");
    let mut buf = [0u8; 256];
    udp.recv_from(&mut buf)
        .expect("with no socket in its map, the orphaned filter passes VXLAN to the host");
    drop(udp);

    d.restart().expect("restart");
    let back = wait_for(Duration::from_secs(5), || {
        d.port(UPLINK).ok().flatten().filter(|p| p["state"] == "up")
    });
    assert!(
        back.is_some(),
        "the restarted vswitchd replaces the leftover filter and attaches the uplink:\n{}",
        d.log_text()
    );
    let base = settled_rx(&d);
    send_udp(&n.peer, NODE_IP, 4789, 3).expect("send vxlan");
    assert!(
        wait_for(Duration::from_secs(5), || (rx_packets(&d) >= base + 3)
            .then_some(()))
        .is_some(),
        "VXLAN reaches the restarted switch"
    );
    let status = d.stop().expect("SIGTERM");
    assert!(status.success(), "{status}");
    assert_eq!(xdp_prog_name(&n.node, UPLINK).expect("link"), None);
}

/// The host's UDP counters in `ns` (`/proc/net/snmp`): datagrams for which no
/// socket was listening, and datagrams delivered to a socket.
fn host_udp(ns: &Netns) -> (u64, u64) {
    let snmp = ns.run(&["cat", "/proc/net/snmp"]).expect("/proc/net/snmp");
    let mut rows = snmp.lines().filter(|l| l.starts_with("Udp: "));
    let (Some(names), Some(values)) = (rows.next(), rows.next()) else {
        panic!("no Udp rows in /proc/net/snmp:\n{snmp}");
    };
    let get = |what: &str| -> u64 {
        names
            .split_whitespace()
            .zip(values.split_whitespace())
            .find(|(n, _)| *n == what)
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or_else(|| panic!("no Udp {what} in /proc/net/snmp"))
    };
    (get("NoPorts"), get("InDatagrams"))
}

/// Per-RX-queue XDP packet counts of a veth (`ethtool -S`: `rx_queue_N_xdp_packets`).
fn xdp_packets_per_queue(ns: &Netns, ifname: &str) -> Vec<u64> {
    let out = ns.run(&["ethtool", "-S", ifname]).expect("ethtool -S");
    let mut per = Vec::new();
    for line in out.lines() {
        let Some((key, value)) = line.trim().split_once(':') else {
            continue;
        };
        let Some(q) = key
            .strip_prefix("rx_queue_")
            .and_then(|r| r.strip_suffix("_xdp_packets"))
            .and_then(|q| q.parse::<usize>().ok())
        else {
            continue;
        };
        if per.len() <= q {
            per.resize(q + 1, 0);
        }
        per[q] = value.trim().parse().unwrap_or(0);
    }
    per
}

/// A multi-queue uplink (a veth with 4 RX/TX queues on both ends, the filter in
/// driver mode): VXLAN and NodePort datagrams of many flows land, by the sender's
/// flow hash, on several RX queues, and every one of them is taken by the switch
/// (one AF_XDP socket per queue) — none reaches the host's UDP stack. With a socket
/// on queue 0 only, the other queues' frames would be passed to the host, which
/// counts them as "no port".
#[test]
fn multi_queue_uplink_takes_every_queue_drv() {
    const QUEUES: u32 = 4;
    const FLOWS: usize = 48;
    const PER_FLOW: usize = 3;
    let Some(_env) = vswitch_suite::e2e() else {
        return;
    };
    let node = Netns::new("node").expect("node namespace");
    let peer = Netns::new("peer").expect("peer namespace");
    let _link = Veth::with_queues(&node, UPLINK, &peer, "vsup1", QUEUES).expect("veth");
    node.ip(&["addr", "add", "192.0.2.1/24", "dev", UPLINK])
        .expect("node address");
    peer.ip(&["addr", "add", "192.0.2.2/24", "dev", "vsup1"])
        .expect("peer address");
    let d = Vswitchd::start(&node, DaemonOpts::default()).expect("vswitchd");
    peer.run(&["ping", "-c1", "-W2", &NODE_IP.to_string()])
        .expect("ping before the switch");
    d.add_port_kind(UPLINK, "uplink", "xdp-drv")
        .expect("add the uplink in driver mode");
    assert_eq!(
        xdp_prog_name(&node, UPLINK).expect("link"),
        Some("vswitch_uplink".to_string())
    );
    let base = settled_rx(&d);
    let (noports0, indgrams0) = host_udp(&node);
    let queues0 = xdp_packets_per_queue(&node, UPLINK);

    // Many flows: one socket (source port) each, to VXLAN and to a NodePort.
    peer.enter(|| {
        let mut msg = vec![0x08, 0, 0, 0, 0, 0, 1, 0];
        msg.extend_from_slice(&[0x55; 64]);
        for i in 0..FLOWS {
            let s = UdpSocket::bind("0.0.0.0:0")?;
            let port = if i % 2 == 0 { 4789 } else { 30080 };
            for _ in 0..PER_FLOW {
                s.send_to(&msg, (NODE_IP, port))?;
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        Ok(())
    })
    .expect("send");
    let sent = (FLOWS * PER_FLOW) as u64;
    wait_for(Duration::from_secs(5), || {
        (rx_packets(&d) >= base + sent).then_some(())
    });
    let taken = settled_rx(&d) - base;
    let queues1 = xdp_packets_per_queue(&node, UPLINK);
    let per_queue: Vec<u64> = queues1
        .iter()
        .enumerate()
        .map(|(q, n)| n - queues0.get(q).copied().unwrap_or(0))
        .collect();
    let (noports1, indgrams1) = host_udp(&node);
    eprintln!(
        "multi-queue uplink: sent {sent}, switch took {taken}, XDP packets per RX queue {per_queue:?}, host UDP no-port +{}",
        noports1 - noports0
    );
    assert!(
        per_queue.iter().filter(|n| **n > 0).count() > 1,
        "the flows must land on more than one RX queue to test anything: {per_queue:?}"
    );
    assert_eq!(
        noports1 - noports0,
        0,
        "no VXLAN/NodePort datagram may reach the host's UDP stack (per-queue {per_queue:?}, switch took {taken} of {sent})"
    );
    assert_eq!(indgrams1, indgrams0, "nor any host UDP socket");
    assert_eq!(
        taken, sent,
        "the switch takes every datagram, whatever its queue ({per_queue:?})"
    );

    // Host traffic still passes with a socket on every queue.
    peer.run(&["ping", "-c3", "-i0.2", "-W2", &NODE_IP.to_string()])
        .expect("the host answers ping with the switch on every queue");
    d.del_port(UPLINK).expect("del-port");
    assert_eq!(
        xdp_prog_name(&node, UPLINK).expect("link"),
        None,
        "del-port removes the filter"
    );
    peer.run(&["ping", "-c1", "-W2", &NODE_IP.to_string()])
        .expect("ping after del-port");
}

//! Services through the XDP fast path (`vswitchd --xdp-fastpath`,
//! vswitch/src/port/fastpath_nat.rs): established connections through a
//! ClusterIP are DNATed (and their replies reverse-translated) in the kernel,
//! with conntrack still the source of truth. Real kernel TCP/UDP clients and
//! servers in pod namespaces: a long TCP transfer and a UDP stream with at least
//! 90% of their frames forwarded by the kernel, the UDP connection kept alive in
//! conntrack by kernel-only traffic beyond its timeout, a conntrack flush and an
//! endpoint removal in force at once, TCP close then reconnect.
//!
//!     cargo build && cargo test --test e2e_services_fastpath -- --nocapture
//!
//! Needs root and built binaries.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use vswitch_suite::daemon::{DaemonOpts, Stats, Vswitchd};
use vswitch_suite::netns::Netns;
use vswitch_suite::pod::{Pod, PodOpts};
use vswitch_suite::{TempDir, err, wait_for};

mod services_common;
use services_common::{NODE, apply_text, ep, svc, via_gateway};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const TCP_BYTES: u64 = 64 << 20;
/// conntrack's UDP timeouts in this test (seconds): short, so that a stream
/// longer than that shows the kernel keeps the connection alive.
const UDP_TIMEOUT_S: u64 = 5;

fn pod_doc(name: &str, ip: Ipv4Addr, mac: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: shop, uid: uid-{name}, labels: {{app: web}},
  annotations: {{vswitch.dev/mac: '{mac}'}}}}
spec: {{nodeName: node-a, containers: [{{name: c, image: x}}]}}
status: {{phase: Running, podIP: {ip}, podIPs: [{{ip: {ip}}}]}}
---
"
    )
}

/// The node, and Service `web` (TCP 80 → 8080, UDP 53 → 5353) over `eps`.
fn manifest(pods: &str, eps: &[Ipv4Addr]) -> String {
    let eps: Vec<String> = eps.iter().map(|ip| ep(&ip.to_string(), true)).collect();
    let web = svc(
        "web",
        &format!(
            "clusterIP: {VIP}, ports: [{{name: http, port: 80, targetPort: 8080}},
  {{name: dns, protocol: UDP, port: 53, targetPort: 5353}}]"
        ),
        &eps.join(", "),
        "{name: http, port: 8080}, {name: dns, protocol: UDP, port: 5353}",
    );
    format!("{pods}{NODE}{web}")
}

/// A pod on an XDP port of the switch, GRO on at its end (a veth accepts
/// redirected frames only when its peer runs NAPI), default route via the gateway.
fn attach(sw: &Netns, d: &Vswitchd, last: u8) -> Pod {
    let p = Pod::new(sw, Ipv4Addr::new(10, 250, 0, last), PodOpts::default()).expect("pod");
    p.ns.run(&["ethtool", "-K", &p.ifname, "gro", "on"])
        .expect("gro on at the pod end");
    d.add_port(&p.switch_if, "xdp-drv").expect("add-port");
    via_gateway(&p);
    p
}

/// A backend's servers: TCP on 8080 (reads everything, answers the byte count
/// and its own last address byte), UDP on 5353 (echoes each datagram with its
/// last address byte appended). Counts the datagrams it received.
struct Backend {
    id: u8,
    udp_seen: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<vswitch_suite::Result<()>>>,
}

impl Backend {
    fn start(p: &Pod) -> Backend {
        let id = p.ip.octets()[3];
        let stop = Arc::new(AtomicBool::new(false));
        let udp_seen = Arc::new(AtomicU64::new(0));
        let (s, n) = (stop.clone(), udp_seen.clone());
        let udp =
            p.ns.spawn_in(move || {
                let sock = UdpSocket::bind("0.0.0.0:5353")?;
                sock.set_read_timeout(Some(Duration::from_millis(100)))?;
                let mut buf = [0u8; 2048];
                while !s.load(Ordering::Relaxed) {
                    let Ok((len, from)) = sock.recv_from(&mut buf[..2047]) else {
                        continue;
                    };
                    n.fetch_add(1, Ordering::Relaxed);
                    buf[len] = id;
                    let _ = sock.send_to(&buf[..=len], from);
                }
                Ok(())
            })
            .expect("udp server");
        let s = stop.clone();
        let tcp =
            p.ns.spawn_in(move || {
                let l = TcpListener::bind("0.0.0.0:8080")?;
                l.set_nonblocking(true)?;
                while !s.load(Ordering::Relaxed) {
                    let Ok((mut c, _)) = l.accept() else {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    };
                    c.set_nonblocking(false)?;
                    c.set_read_timeout(Some(Duration::from_secs(20)))?;
                    let mut buf = vec![0u8; 256 * 1024];
                    let mut got = 0u64;
                    loop {
                        match c.read(&mut buf) {
                            Ok(0) => break,
                            Ok(n) => {
                                if let Some(i) = (0..n).find(|&i| buf[i] != pattern(got + i as u64))
                                {
                                    return Err(err!("corrupted byte at {}", got + i as u64));
                                }
                                got += n as u64;
                            }
                            Err(e) => return Err(err!("receive after {got} bytes: {e}")),
                        }
                    }
                    let mut answer = got.to_be_bytes().to_vec();
                    answer.push(id);
                    c.write_all(&answer)?;
                }
                Ok(())
            })
            .expect("tcp server");
        Backend {
            id,
            udp_seen,
            stop,
            threads: vec![udp, tcp],
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            match t.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => eprintln!("backend {}: {e}", self.id),
                Err(_) => eprintln!("backend {} panicked", self.id),
            }
        }
    }
}

fn pattern(i: u64) -> u8 {
    (i % 251) as u8
}

/// Sends `bytes` to the ClusterIP's TCP port from `client` and returns (the
/// answer's byte count, the backend that answered, the local port).
fn tcp_through_vip(client: &Pod, bytes: u64) -> (u64, u8, u16) {
    client
        .ns
        .enter(move || {
            let dst = SocketAddr::from((VIP, 80));
            let mut s = TcpStream::connect_timeout(&dst, Duration::from_secs(5))
                .map_err(|e| err!("connect {dst}: {e}"))?;
            let local = s.local_addr()?.port();
            s.set_write_timeout(Some(Duration::from_secs(20)))?;
            s.set_read_timeout(Some(Duration::from_secs(20)))?;
            let mut buf = vec![0u8; 64 * 1024];
            let mut off = 0u64;
            while off < bytes {
                let n = (bytes - off).min(buf.len() as u64) as usize;
                for (i, b) in buf[..n].iter_mut().enumerate() {
                    *b = pattern(off + i as u64);
                }
                s.write_all(&buf[..n])
                    .map_err(|e| err!("send after {off} bytes: {e}"))?;
                off += n as u64;
            }
            s.shutdown(Shutdown::Write)?;
            let mut answer = [0u8; 9];
            s.read_exact(&mut answer).map_err(|e| err!("answer: {e}"))?;
            let mut n = [0u8; 8];
            n.copy_from_slice(&answer[..8]);
            Ok((u64::from_be_bytes(n), answer[8], local))
        })
        .expect("tcp through the ClusterIP")
}

/// A connected UDP socket in `client` from `sport` to the ClusterIP's UDP port:
/// a reply that is not reverse-translated to VIP:53 never reaches it.
struct UdpClient<'a> {
    ns: &'a Netns,
    sport: u16,
}

impl UdpClient<'_> {
    /// Sends `n` datagrams, one every `gap`, each waiting for its echo; returns
    /// the backend of each answer (0: none within 1 s).
    fn exchange(&self, n: usize, gap: Duration) -> Vec<u8> {
        let sport = self.sport;
        self.ns
            .enter(move || {
                let s = UdpSocket::bind(("0.0.0.0", sport))?;
                s.connect((VIP, 53))?;
                s.set_read_timeout(Some(Duration::from_secs(1)))?;
                let mut out = Vec::with_capacity(n);
                let mut buf = [0u8; 2048];
                for i in 0..n {
                    let q = (i as u32).to_be_bytes();
                    s.send(&q)?;
                    let who = loop {
                        match s.recv(&mut buf) {
                            // An older echo (after a timeout): skip it.
                            Ok(5) if buf[..4] != q => continue,
                            Ok(5) => break buf[4],
                            Ok(_) => continue,
                            Err(_) => break 0,
                        }
                    };
                    out.push(who);
                    if !gap.is_zero() {
                        std::thread::sleep(gap);
                    }
                }
                Ok(out)
            })
            .expect("udp exchange")
    }
}

/// (rx packets, of them through the kernel) of the switch's ports `ports`
/// between two stats.
fn kernel_share(before: &Stats, after: &Stats, ports: &[&str]) -> (u64, u64) {
    let d = |p: &str, k: &str| after.counter(p, k).saturating_sub(before.counter(p, k));
    ports.iter().fold((0, 0), |(rx, fp), p| {
        (rx + d(p, "rx_packets"), fp + d(p, "fastpath_rx_packets"))
    })
}

fn conntrack_of(d: &Vswitchd, proto: &str) -> String {
    d.vsctl(&["conntrack", "--proto", proto, "--src", "10.250.0.10"])
        .expect("vsctl conntrack")
}

#[test]
fn cluster_ip_established_connections_in_the_kernel() {
    let Some(_env) = vswitch_suite::e2e() else {
        return;
    };
    let dir = TempDir::new("svcfp").expect("dir");
    let cfg = dir.path().join("vswitchd.toml");
    std::fs::write(
        &cfg,
        format!(
            "[conntrack.timeouts]\nudp_unreplied = {UDP_TIMEOUT_S}\nudp_assured = {UDP_TIMEOUT_S}\n"
        ),
    )
    .expect("config");
    let sw = Netns::new("sw").expect("switch namespace");
    let opts = DaemonOpts {
        extra_args: vec!["--xdp-fastpath".into()],
        config: Some(cfg),
        ..DaemonOpts::default()
    };
    let d = Vswitchd::start(&sw, opts).expect("vswitchd");
    let client = attach(&sw, &d, 10);
    let pods: Vec<Pod> = [21u8, 22].iter().map(|&i| attach(&sw, &d, i)).collect();
    let mut docs = String::new();
    for (i, p) in pods.iter().enumerate() {
        docs.push_str(&pod_doc(&format!("web-{i}"), p.ip, &p.mac));
    }
    let backends: Vec<Backend> = pods.iter().map(Backend::start).collect();
    apply_text(&d, &dir, &manifest(&docs, &[pods[0].ip, pods[1].ip]));
    let port_of = |id: u8| -> &str {
        let p = pods
            .iter()
            .find(|p| p.ip.octets()[3] == id)
            .expect("backend");
        &p.switch_if
    };

    // --- A long TCP transfer: the kernel carries data and ACKs both ways. ---
    let first = wait_for(Duration::from_secs(10), || {
        client
            .ns
            .enter(|| {
                TcpStream::connect_timeout(&SocketAddr::from((VIP, 80)), Duration::from_secs(1))
                    .map_err(|e| err!("{e}"))
            })
            .ok()
    });
    assert!(first.is_some(), "no TCP answer through the ClusterIP");
    drop(first);
    let before = d.stats().expect("stats");
    let t = Instant::now();
    let (got, id, _) = tcp_through_vip(&client, TCP_BYTES);
    let took = t.elapsed();
    assert_eq!(got, TCP_BYTES, "the backend got every byte");
    let after = d.stats().expect("stats");
    let ports = [client.switch_if.as_str(), port_of(id)];
    let (rx, fp) = kernel_share(&before, &after, &ports);
    eprintln!(
        "tcp {} MiB through {VIP}:80 to .{id} in {took:?} ({:.0} Mbit/s): {fp} of {rx} frames in the kernel",
        TCP_BYTES >> 20,
        TCP_BYTES as f64 * 8.0 / took.as_secs_f64() / 1e6
    );
    assert!(
        fp * 10 >= rx * 9 && fp > 0,
        "at least 90% of the transfer's frames through the kernel: {fp} of {rx}"
    );
    let sw_stats = d.vsctl(&["stats"]).expect("vsctl stats");
    assert!(sw_stats.contains("xdp fastpath rx pkts="), "{sw_stats}");

    // --- TCP close (FIN reaches conntrack), then a new connection. ---
    let ct = conntrack_of(&d, "tcp");
    eprintln!("after close:\n{ct}");
    assert!(
        !ct.contains("ESTABLISHED"),
        "the closed connection left ESTABLISHED (its FINs went through conntrack):\n{ct}"
    );
    let before = d.stats().expect("stats");
    let (got, id2, _) = tcp_through_vip(&client, 8 << 20);
    assert_eq!(got, 8 << 20);
    let after = d.stats().expect("stats");
    let (rx, fp) = kernel_share(&before, &after, &[&client.switch_if, port_of(id2)]);
    eprintln!("reconnected to .{id2}: {fp} of {rx} frames in the kernel");
    assert!(fp * 10 >= rx * 9, "reconnection: {fp} of {rx}");

    // --- A UDP stream longer than conntrack's UDP timeout. ---
    let udp = UdpClient {
        ns: &client.ns,
        sport: 40053,
    };
    let before = d.stats().expect("stats");
    let n = (UDP_TIMEOUT_S as usize + 4) * 100;
    let who = udp.exchange(n, Duration::from_millis(10));
    let after = d.stats().expect("stats");
    let chosen = who[0];
    assert_ne!(chosen, 0, "first datagram answered");
    assert!(
        who.iter().all(|&w| w == chosen),
        "one connection, one backend, every datagram answered (reverse translation): {:?}",
        summary(&who)
    );
    // One connection throughout: conntrack never expired it and never had to
    // make it again, although user space saw almost none of its packets for
    // longer than its timeout.
    let inserts = |s: &Stats| s.0["switch"]["conntrack"]["inserts"].as_u64().unwrap_or(0);
    assert_eq!(
        inserts(&after) - inserts(&before),
        1,
        "the UDP stream must stay one conntrack connection"
    );
    let (rx, fp) = kernel_share(&before, &after, &[&client.switch_if, port_of(chosen)]);
    eprintln!(
        "udp: {n} datagrams and echoes to .{chosen} over {}s: {fp} of {rx} frames in the kernel",
        UDP_TIMEOUT_S + 4
    );
    assert!(fp * 10 >= rx * 9, "udp: {fp} of {rx} through the kernel");
    // Conntrack still holds the connection although user space saw almost none
    // of its packets for longer than its timeout, and counts its last use.
    let ct = conntrack_of(&d, "udp");
    eprintln!("{ct}");
    assert!(
        ct.contains("sport=40053") && ct.contains("nat=dnat"),
        "the UDP connection must not expire while the kernel forwards it:\n{ct}"
    );
    let left = timeout_left(&ct, 40053);
    assert!(
        left + 2 >= UDP_TIMEOUT_S,
        "its last use is the kernel's: {left}s of {UDP_TIMEOUT_S}s left:\n{ct}"
    );

    // --- Flush: the very next packet is tracked again (no stale kernel entry). ---
    d.vsctl(&["conntrack", "--flush"]).expect("flush");
    let who = udp.exchange(1, Duration::ZERO);
    assert_eq!(
        who,
        vec![chosen],
        "same flow, same endpoint after the flush"
    );
    let ct = conntrack_of(&d, "udp");
    assert!(
        ct.contains("sport=40053"),
        "the first packet after the flush must go through conntrack:\n{ct}"
    );

    // --- Endpoint removed mid-traffic: no datagram reaches it any more. ---
    let who = udp.exchange(50, Duration::from_millis(2));
    assert!(who.iter().all(|&w| w == chosen), "{:?}", summary(&who));
    let gone = backends.iter().find(|b| b.id == chosen).expect("backend");
    let other = backends.iter().find(|b| b.id != chosen).expect("backend");
    let keep: Vec<Ipv4Addr> = pods
        .iter()
        .filter(|p| p.ip.octets()[3] != chosen)
        .map(|p| p.ip)
        .collect();
    apply_text(&d, &dir, &manifest(&docs, &keep));
    let seen_gone = gone.udp_seen.load(Ordering::Relaxed);
    let who = udp.exchange(50, Duration::from_millis(2));
    assert!(
        who.iter().all(|&w| w == other.id),
        ".{chosen} was removed: every answer from .{} at once: {:?}",
        other.id,
        summary(&who)
    );
    assert_eq!(
        gone.udp_seen.load(Ordering::Relaxed),
        seen_gone,
        "a datagram still reached the removed endpoint"
    );
    drop(backends);
}

/// (backend, count) runs of a list of answers.
fn summary(who: &[u8]) -> Vec<(u8, usize)> {
    let mut out: Vec<(u8, usize)> = Vec::new();
    for &w in who {
        match out.last_mut() {
            Some((b, n)) if *b == w => *n += 1,
            _ => out.push((w, 1)),
        }
    }
    out
}

/// The timeout left (seconds) of the listed connection from `sport`.
fn timeout_left(listing: &str, sport: u16) -> u64 {
    listing
        .lines()
        .find(|l| l.contains(&format!("sport={sport}")))
        .and_then(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("timeout="))
                .and_then(|v| v.trim_end_matches('s').parse().ok())
        })
        .unwrap_or(0)
}

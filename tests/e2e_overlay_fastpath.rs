//! VXLAN encap and decap in the XDP fast path (`vswitchd --xdp-fastpath`,
//! vswitch/src/port/fastpath_tunnel.rs, bpf/fastpath_vxlan.h) across two nodes:
//! namespaces on an underlay bridge, each running vswitchd with `[overlay] mode =
//! "vxlan"` and `--xdp-fastpath`, the uplink in `xdp-drv` mode (its filter
//! decapsulates), the agent with Node/Pod manifests and pods made by the CNI plugin,
//! as in tests/e2e_overlay.rs (both set it up with tests/overlay_cluster/mod.rs).
//!
//! The underlay bridge's ports get GRO on: the node's uplink veth accepts frames
//! redirected by XDP only when its peer runs NAPI (the CNI plugin does the same at
//! the pod end of every pod veth).
//!
//!     cargo build && cargo test --test e2e_overlay_fastpath -- --test-threads 1
//!
//! Needs root, built binaries and containernetworking-plugins (host-local).

mod overlay_cluster;

use overlay_cluster::{
    Cluster, ClusterOpts, Extra, NodeNs, WAIT, host_tunnel_packets, node_doc, ping_df, ping_ns,
    ping_ns_args, ping_until, udp_echo, udp_receiver, vxlan_payload, write,
};
use serde_json::Value;
use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};
use vswitch_suite::netns::Netns;
use vswitch_suite::pod::tcp_transfer_ns;
use vswitch_suite::{Result, err, wait_for};

const NETWORK: &str = "vstovf";

/// Two nodes, pod a1 on node a and b1 on node b, reaching each other.
/// The switches run with `--xdp-fastpath` in `vxlan` mode, the uplink in `xdp-drv`
/// mode, GRO on the underlay bridge's ports; pods with `pod_mtu` (None: the CNI
/// plugin's default, uplink MTU − 50).
fn cluster(mtu: u32, pod_mtu: Option<u32>) -> Cluster {
    let mut c = Cluster::new(&ClusterOpts {
        network: NETWORK,
        mtu,
        mode: "vxlan",
        uplink_mode: "xdp-drv",
        vswitchd_args: vec!["--xdp-fastpath".into()],
        underlay_gro: true,
    });
    for n in &mut c.nodes {
        n.pod_mtu = pod_mtu;
    }
    c.start_agents(&Extra::default());
    c.add_pod(0, "a1");
    c.add_pod(1, "b1");
    for (x, y) in [(0, 1), (1, 0)] {
        let ok = ping_until(&c.pods[x].ns, c.pods[y].ip, WAIT);
        assert!(
            ok,
            "{} never reached {}\n{}",
            c.pods[x].name,
            c.pods[y].name,
            c.logs()
        );
    }
    c
}

/// (rx_packets, fastpath_rx_packets, tx_packets, fastpath_tx_packets) summed over
/// the node's uplink (`uplink`) or over its other ports.
fn counts(n: &NodeNs, uplink: bool) -> [u64; 4] {
    let st = n.daemon.stats().expect("stats");
    let mut c = [0u64; 4];
    for p in st.0["ports"].as_array().into_iter().flatten() {
        if (p["name"] == n.uplink.as_str()) != uplink {
            continue;
        }
        for (i, k) in [
            "rx_packets",
            "fastpath_rx_packets",
            "tx_packets",
            "fastpath_tx_packets",
        ]
        .iter()
        .enumerate()
        {
            c[i] += p[*k].as_u64().unwrap_or(0);
        }
    }
    c
}

fn delta(a: [u64; 4], b: [u64; 4]) -> [u64; 4] {
    [b[0] - a[0], b[1] - a[1], b[2] - a[2], b[3] - a[3]]
}

fn switch_counter(n: &NodeNs, key: &str) -> u64 {
    let st = n.daemon.stats().expect("stats");
    st.0["switch"][key].as_u64().unwrap_or(0)
}

/// A packet socket receiving every frame on `ifname` in `ns` for `secs`, keeping
/// those `keep` accepts.
fn capture(
    ns: &Netns,
    ifname: &str,
    secs: u64,
    keep: fn(&[u8]) -> bool,
) -> std::thread::JoinHandle<Result<Vec<Vec<u8>>>> {
    let ifname = ifname.to_string();
    let (tx, rx) = std::sync::mpsc::channel();
    let h = ns
        .spawn_in(move || {
            let cname = std::ffi::CString::new(ifname).map_err(|_| err!("name"))?;
            // SAFETY: valid NUL-terminated name.
            let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
            let proto = (libc::ETH_P_ALL as u16).to_be();
            // SAFETY: plain socket(2); owned right below.
            let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto)) };
            if fd < 0 || ifindex == 0 {
                return Err(err!("packet socket: {}", std::io::Error::last_os_error()));
            }
            // SAFETY: fresh descriptor.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            // SAFETY: sockaddr_ll is plain data.
            let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sa.sll_family = libc::AF_PACKET as u16;
            sa.sll_protocol = proto;
            sa.sll_ifindex = ifindex as i32;
            // SAFETY: valid address of the given length.
            let rc = unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    (&sa as *const libc::sockaddr_ll).cast(),
                    size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            if rc != 0 {
                return Err(err!("bind: {}", std::io::Error::last_os_error()));
            }
            let tv = libc::timeval {
                tv_sec: 0,
                tv_usec: 200_000,
            };
            // SAFETY: setsockopt reads a timeval.
            unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    (&tv as *const libc::timeval).cast(),
                    size_of::<libc::timeval>() as u32,
                )
            };
            let _ = tx.send(());
            let end = Instant::now() + Duration::from_secs(secs);
            let mut got = Vec::new();
            let mut buf = vec![0u8; 4096];
            while Instant::now() < end {
                // SAFETY: recv writes at most buf.len() bytes.
                let n =
                    unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
                if n > 0 && keep(&buf[..n as usize]) {
                    got.push(buf[..n as usize].to_vec());
                }
            }
            Ok(got)
        })
        .expect("capture thread");
    let _ = rx.recv_timeout(Duration::from_secs(5));
    h
}

const PROBE_PORT: u16 = 9999;

/// An inner frame a1 -> b1 (UDP to PROBE_PORT, DF, fixed IP id) as a1's stack
/// would send it to its gateway.
fn probe_frame(a1_mac: [u8; 6], src: Ipv4Addr, dst: Ipv4Addr, tag: u8) -> Vec<u8> {
    let data = [tag; 32];
    let udp_len = 8 + data.len();
    let mut ip = vswitch_suite::frames::ipv4_header(src, dst, 17, (20 + udp_len) as u16).to_vec();
    ip[6] |= 0x40; // DF
    ip[10..12].fill(0);
    let c = vswitch_suite::frames::inet_checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    ip.extend_from_slice(&40001u16.to_be_bytes());
    ip.extend_from_slice(&PROBE_PORT.to_be_bytes());
    ip.extend_from_slice(&(udp_len as u16).to_be_bytes());
    ip.extend_from_slice(&[0, 0]);
    ip.extend_from_slice(&data);
    vswitch_suite::frames::ethernet([0x0a, 0x58, 10, 244, 1, 1], a1_mac, 0x0800, &ip)
}

fn is_probe(f: &[u8]) -> bool {
    f.len() >= 42 && f[12..14] == [8, 0] && f[23] == 17 && f[36..38] == PROBE_PORT.to_be_bytes()
}

fn is_probe_outer(f: &[u8]) -> bool {
    f.len() >= 92
        && f[12..14] == [8, 0]
        && f[23] == 17
        && f[36..38] == 4789u16.to_be_bytes()
        && is_probe(&f[50..])
}

fn send_raw(ns: &Netns, ifname: &str, frame: Vec<u8>) {
    let ifname = ifname.to_string();
    ns.enter(move || {
        let cname = std::ffi::CString::new(ifname).map_err(|_| err!("name"))?;
        // SAFETY: valid NUL-terminated name.
        let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
        // SAFETY: plain socket(2).
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        if fd < 0 {
            return Err(err!("socket: {}", std::io::Error::last_os_error()));
        }
        // SAFETY: fresh descriptor.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: plain data.
        let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sa.sll_family = libc::AF_PACKET as u16;
        sa.sll_ifindex = ifindex as i32;
        sa.sll_halen = 6;
        sa.sll_addr[..6].copy_from_slice(&frame[..6]);
        // SAFETY: buffer and address valid for their lengths.
        let n = unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&sa as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if n < 0 {
            return Err(err!("sendto: {}", std::io::Error::last_os_error()));
        }
        Ok(())
    })
    .expect("send frame");
}

fn mac_of(ns: &Netns, ifname: &str) -> [u8; 6] {
    let l: Value = ns.link(ifname).expect("link");
    vswitch_suite::frames::parse_mac(l["address"].as_str().unwrap_or("")).expect("mac")
}

#[test]
fn overlay_fastpath_forwards_in_the_kernel() {
    let Some(_env) = vswitch_suite::e2e() else {
        return;
    };
    let c = cluster(1500, None);
    let (a1, b1) = (&c.pods[0], &c.pods[1]);
    let (na, nb) = (&c.nodes[0], &c.nodes[1]);
    for n in &c.nodes {
        let l = n.ns.ip(&["-d", "link", "show", &n.uplink]).expect("link");
        assert!(l.contains("vswitch_uplink"), "uplink filter attached: {l}");
    }

    // Ping both ways, and UDP with real sockets.
    let (got, text) = ping_ns(&a1.ns, b1.ip, 10);
    assert_eq!(got, 10, "{text}");
    let (got, text) = ping_ns(&b1.ns, a1.ip, 10);
    assert_eq!(got, 10, "{text}");
    udp_echo(a1, b1, 200).unwrap_or_else(|e| panic!("udp: {e}\n{}", c.logs()));

    // The same frame through the slow path (first of its key) and the fast path:
    // byte-identical at the receiving pod and on the underlay.
    let a1_mac = mac_of(&a1.ns, "eth0");
    let frame = probe_frame(a1_mac, a1.ip, b1.ip, 0x5a);
    let inner = capture(&b1.ns, "eth0", 6, is_probe);
    let outer = capture(&c.underlay, &c.ports[1], 6, is_probe_outer);
    let (e0, d0) = (counts(na, false), counts(nb, true));
    send_raw(&a1.ns, "eth0", frame.clone());
    std::thread::sleep(Duration::from_millis(500));
    let (e1, d1) = (counts(na, false), counts(nb, true));
    let mut fast = false;
    for _ in 0..5 {
        send_raw(&a1.ns, "eth0", frame.clone());
        std::thread::sleep(Duration::from_millis(300));
        let (e2, d2) = (counts(na, false), counts(nb, true));
        if e2[1] > e1[1] && d2[1] > d1[1] {
            fast = true;
            break;
        }
    }
    assert_eq!(e1[1], e0[1], "the first probe took the slow path at node a");
    assert_eq!(d1[1], d0[1], "the first probe took the slow path at node b");
    assert!(
        fast,
        "a later probe went through both kernels' fast paths\n{}",
        c.logs()
    );
    let inner = inner.join().expect("capture").expect("capture inner");
    let outer = outer.join().expect("capture").expect("capture outer");
    assert!(inner.len() >= 2, "probes at b1: {}", inner.len());
    assert!(outer.len() >= 2, "probes on the underlay: {}", outer.len());
    for f in &inner[1..] {
        assert_eq!(f, &inner[0], "inner frame slow vs fast");
    }
    for f in &outer[1..] {
        assert_eq!(f, &outer[0], "outer frame slow vs fast");
    }
    // What the slow path produces is the documented format: TTL decremented by
    // each node, MACs
    // rewritten to the pod scheme.
    assert_eq!(inner[0][22], frame[22] - 2, "inner TTL: one hop per node");
    assert_eq!(&inner[0][..6], &mac_of(&b1.ns, "eth0"));

    // 100 MB of TCP a1 -> b1: ≥ 90 % of the frames never reach user space at either
    // end (node a encapsulates, node b decapsulates in XDP).
    let (a0, u0) = (counts(na, false), counts(nb, true));
    let t = tcp_transfer_ns(&a1.ns, &b1.ns, b1.ip, 100 << 20)
        .unwrap_or_else(|e| panic!("100 MB a1 -> b1: {e}\n{}", c.logs()));
    eprintln!(
        "100 MB across nodes with the XDP fast path: {:.1} s, {:.0} Mbit/s (debug build, shared machine)",
        t.elapsed.as_secs_f64(),
        t.mbit_per_s()
    );
    std::thread::sleep(Duration::from_millis(300));
    let (a, u) = (delta(a0, counts(na, false)), delta(u0, counts(nb, true)));
    eprintln!(
        "node a pod ports rx {} (fast {}); node b uplink rx {} (fast {})",
        a[0], a[1], u[0], u[1]
    );
    assert!(
        a[0] > 10_000,
        "node a's pod port counted the transfer: {a:?}"
    );
    assert!(
        a[1] * 10 >= a[0] * 9,
        "encap in XDP: {} of {} frames",
        a[1],
        a[0]
    );
    assert!(
        u[0] > 10_000 && u[1] * 10 >= u[0] * 9,
        "decap in XDP: {u:?}"
    );
    assert!(switch_counter(na, "fastpath_installs") > 0);
    // The hosts never saw a tunnel datagram.
    for n in &c.nodes {
        let hits = host_tunnel_packets(&n.ns, "4789");
        assert_eq!(hits, 0, "{}: host saw tunnel traffic", n.name);
    }
}

#[test]
fn overlay_fastpath_spoofing_pmtu_and_node_removal() {
    let Some(_env) = vswitch_suite::e2e() else {
        return;
    };
    // Underlay 1400 and pods at 1450: full-size pod packets do not fit the tunnel.
    let c = cluster(1400, Some(1450));
    let (a1, b1) = (&c.pods[0], &c.pods[1]);
    let (na, nb) = (&c.nodes[0], &c.nodes[1]);

    // 1. Spoofed VXLAN. Genuine datagrams from node b's address first (the kernel
    // learns a decap entry for their inner frame), then the same inner frame from
    // an impostor address and with another VNI: dropped and counted, never
    // delivered, while the genuine ones keep arriving.
    nb.ns
        .ip(&["addr", "add", "192.168.77.9/24", "dev", &nb.uplink])
        .expect("impostor address");
    let rx = udp_receiver(&a1.ns, 7777, Duration::from_secs(3));
    std::thread::sleep(Duration::from_millis(300));
    let unknown0 = na.flow_packets(&["priority=150"]);
    let st0 = na.daemon.stats().expect("stats");
    let d0 = counts(na, true);
    let (a1_ip, b1_ip) = (a1.ip, b1.ip);
    nb.ns
        .enter(move || {
            let send = |from: &str, vni: u8, tag: &[u8], n: usize| -> std::io::Result<()> {
                let s = UdpSocket::bind(format!("{from}:40000"))?;
                for _ in 0..n {
                    s.send_to(
                        &vxlan_payload(b1_ip, a1_ip, 7777, vni, tag),
                        "192.168.77.1:4789",
                    )?;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Ok(())
            };
            send("192.168.77.2", 1, b"genuine", 10)?;
            send("192.168.77.9", 1, b"genuine", 5)?; // same inner frame, spoofed source
            send("192.168.77.2", 2, b"genuine", 5)?; // wrong VNI
            send("192.168.77.2", 1, b"genuine", 5)?;
            Ok(())
        })
        .expect("send VXLAN");
    let got = rx.join().expect("receiver thread").expect("receive");
    let d1 = counts(na, true);
    assert_eq!(
        got.len(),
        15,
        "exactly the 15 genuine datagrams arrive: {}\n{}",
        got.len(),
        c.logs()
    );
    assert!(
        d1[1] > d0[1],
        "genuine VXLAN was decapsulated in XDP: {d0:?} -> {d1:?}"
    );
    let unknown1 = na.flow_packets(&["priority=150"]);
    assert!(
        unknown1 >= unknown0 + 5,
        "spoofed source counted: {unknown0} -> {unknown1}"
    );
    let st1 = na.daemon.stats().expect("stats");
    let rej = st1.drops(&na.uplink, "tunnel_rejected") - st0.drops(&na.uplink, "tunnel_rejected");
    assert!(rej >= 5, "wrong VNI counted as tunnel_rejected: {rej}");

    // 2. Path MTU: small DF pings make a kernel entry for the ICMP flow; a DF
    // packet of the same flow too big for the tunnel still gets frag-needed
    // (mtu 1350) from the gateway.
    let (got, text) = ping_ns_args(&a1.ns, b1.ip, 5, &["-M", "do"]);
    assert_eq!(got, 5, "{text}");
    let e0 = counts(na, false);
    let (got, text) = ping_ns_args(&a1.ns, b1.ip, 5, &["-M", "do"]);
    assert_eq!(got, 5, "{text}");
    assert!(counts(na, false)[1] > e0[1], "pings took the fast path");
    let text = ping_df(&a1.ns, b1.ip, 1422);
    assert!(
        text.contains("mtu = 1350") || text.contains("mtu=1350"),
        "no frag-needed with mtu 1350: {text}\n{}",
        c.logs()
    );
    tcp_transfer_ns(&a1.ns, &b1.ns, b1.ip, 4 << 20).expect("tcp a1 -> b1 after PMTU");

    // 3. Node removal under kernel-forwarded traffic: a1 pings b1 through the fast
    // path; node a forgets node b; once its flows are gone not one more ping passes.
    let e0 = counts(na, false);
    let (got, _) = ping_ns(&a1.ns, b1.ip, 5);
    assert_eq!(got, 5);
    assert!(counts(na, false)[1] > e0[1], "pings took the fast path");
    let only_a = node_doc(&na.name, na.subnet, na.node_ip, "");
    write(na.manifests.path(), "nodes.yaml", &only_a);
    let gone = wait_for(WAIT, || {
        let f = na.daemon.vsctl(&["dump-flows"]).unwrap_or_default();
        (!f.contains("10.244.2.0/24")).then_some(())
    });
    assert!(gone.is_some(), "route to node b still there\n{}", c.logs());
    let (got, text) = ping_ns(&a1.ns, b1.ip, 5);
    assert_eq!(got, 0, "a1 -> b1 must stop at once: {text}");
    let (got, text) = ping_ns(&b1.ns, a1.ip, 5);
    assert_eq!(got, 0, "b1 -> a1 must stop at once: {text}");
    // Re-added: traffic flows again.
    let all = c.node_docs(&Extra::default());
    write(na.manifests.path(), "nodes.yaml", &all);
    assert!(
        ping_until(&a1.ns, b1.ip, WAIT),
        "after re-adding\n{}",
        c.logs()
    );
}

//! The `packet` port (AF_PACKET) on a real veth pair: the switch's end in namespace A,
//! the peer in namespace B, driven by a raw AF_PACKET socket or by B's kernel stack.
//! Root only; everything is created with unique names and removed on drop.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Netns, require_root, unique, veth_pair};
use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use vswitch::pool::{FramePool, MAX_FRAME_LEN};
use vswitch::port::packet::{PacketOptions, PacketPort};
use vswitch::port::{BATCH_SIZE, Port, PortError, RxDrops};
use vswitch_proto::PortMode;

/// IEEE 802 local experimental EtherType: nothing in the namespaces speaks it.
const TEST_TYPE: u16 = 0x88b5;
const DST: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
const SRC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];

struct Topo {
    ns_a: Netns,
    ns_b: Netns,
    /// The switch's end, in `ns_a`.
    a: String,
    /// The peer, in `ns_b`.
    b: String,
}

fn topo() -> Topo {
    let ns_a = Netns::new("vpA");
    let ns_b = Netns::new("vpB");
    // No IPv6 chatter (DAD, router solicitations) on the links under test.
    for ns in [&ns_a, &ns_b] {
        for k in ["all", "default"] {
            ns.exec(&[
                "sysctl",
                "-qw",
                &format!("net.ipv6.conf.{k}.disable_ipv6=1"),
            ])
            .expect("sysctl");
        }
    }
    let a = unique("vpa");
    let b = unique("vpb");
    veth_pair(&ns_a, &a, &ns_b, &b);
    Topo { ns_a, ns_b, a, b }
}

impl Topo {
    fn open(&self, opts: PacketOptions) -> (PacketPort, vswitch::port::PortAttachment) {
        // The socket is created in A and stays there after the thread switches back.
        self.ns_a
            .enter(|| PacketPort::open_with(&self.a, opts))
            .expect("open packet port")
    }
}

/// A test frame: our EtherType, a sequence number, then a pattern.
fn frame(seq: u32, len: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(len.max(18));
    f.extend_from_slice(&DST);
    f.extend_from_slice(&SRC);
    f.extend_from_slice(&TEST_TYPE.to_be_bytes());
    f.extend_from_slice(&seq.to_be_bytes());
    while f.len() < len {
        f.push((f.len() as u8) ^ (seq as u8));
    }
    f.truncate(len);
    f
}

/// Whether a frame is one of ours, behind any number of VLAN tags.
fn is_test(f: &[u8]) -> bool {
    let mut off = 12;
    while let Some(t) = f.get(off..off + 2) {
        match u16::from_be_bytes([t[0], t[1]]) {
            0x8100 | 0x88a8 => off += 4,
            t => return t == TEST_TYPE,
        }
    }
    false
}

fn poll_in(fd: RawFd, timeout: Duration) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut p, 1, ms) > 0 }
}

/// A raw AF_PACKET socket on an interface of a test namespace (the "peer").
struct Raw {
    fd: OwnedFd,
}

impl Raw {
    fn open(ns: &Netns, ifname: &str) -> Raw {
        ns.enter(|| {
            let ifindex = vswitch::port::netdev::ifindex(ifname).expect("ifindex");
            // SAFETY: plain syscall.
            let raw =
                unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
            assert!(raw >= 0, "socket: {}", io::Error::last_os_error());
            // SAFETY: fresh descriptor.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            set_int(&fd, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, 1);
            set_int(&fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 16 << 20);
            set_int(&fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, 16 << 20);
            let sll = libc::sockaddr_ll {
                sll_family: libc::AF_PACKET as u16,
                sll_protocol: (libc::ETH_P_ALL as u16).to_be(),
                sll_ifindex: ifindex as i32,
                sll_hatype: 0,
                sll_pkttype: 0,
                sll_halen: 0,
                sll_addr: [0; 8],
            };
            // SAFETY: valid sockaddr_ll and length.
            let r = unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    (&sll as *const libc::sockaddr_ll).cast(),
                    size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            assert_eq!(r, 0, "bind: {}", io::Error::last_os_error());
            Raw { fd }
        })
    }

    fn send(&self, f: &[u8]) {
        // SAFETY: f is valid for f.len() bytes.
        let r = unsafe { libc::send(self.fd.as_raw_fd(), f.as_ptr().cast(), f.len(), 0) };
        assert_eq!(
            r,
            f.len() as isize,
            "send {} bytes: {}",
            f.len(),
            io::Error::last_os_error()
        );
    }

    /// Sends many frames with one sendmmsg per 256; returns how many the kernel took.
    fn send_many(&self, frames: &[Vec<u8>]) -> usize {
        let mut done = 0;
        for chunk in frames.chunks(256) {
            let mut iov: Vec<libc::iovec> = chunk
                .iter()
                .map(|f| libc::iovec {
                    iov_base: f.as_ptr() as *mut _,
                    iov_len: f.len(),
                })
                .collect();
            let mut hdrs: Vec<libc::mmsghdr> = iov
                .iter_mut()
                .map(|io| {
                    // SAFETY: all-zero mmsghdr is valid.
                    let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                    m.msg_hdr.msg_iov = io;
                    m.msg_hdr.msg_iovlen = 1;
                    m
                })
                .collect();
            // SAFETY: hdrs describe frames that outlive the call.
            let r = unsafe {
                libc::sendmmsg(self.fd.as_raw_fd(), hdrs.as_mut_ptr(), hdrs.len() as u32, 0)
            };
            if r > 0 {
                done += r as usize;
            }
        }
        done
    }

    /// The next frame of ours, within `timeout`.
    fn recv_test(&self, timeout: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 65536];
        loop {
            let now = Instant::now();
            if now >= deadline || !poll_in(self.fd.as_raw_fd(), deadline - now) {
                return None;
            }
            // SAFETY: buf is writable for its length.
            let r = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if r > 0 && is_test(&buf[..r as usize]) {
                return Some(buf[..r as usize].to_vec());
            }
        }
    }

    fn kernel_drops(&self) -> u32 {
        let mut st = libc::tpacket_stats {
            tp_packets: 0,
            tp_drops: 0,
        };
        let mut len = size_of::<libc::tpacket_stats>() as u32;
        // SAFETY: st writable for len bytes.
        unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&mut st as *mut libc::tpacket_stats).cast(),
                &mut len,
            )
        };
        st.tp_drops
    }
}

fn set_int(fd: &OwnedFd, level: i32, opt: i32, val: i32) {
    // SAFETY: val is a valid c_int.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            (&val as *const i32).cast(),
            size_of::<i32>() as u32,
        )
    };
    assert_eq!(
        r,
        0,
        "setsockopt {level}/{opt}: {}",
        io::Error::last_os_error()
    );
}

/// Receives on the switch port until `want` frames of ours arrived or `timeout`
/// passed; other frames are freed. Every frame goes back to the pool.
fn rx_test(
    port: &mut PacketPort,
    pool: &mut FramePool,
    want: usize,
    timeout: Duration,
) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    let fd = port.poll_fd().expect("packet ports have a descriptor");
    let mut got = Vec::new();
    let mut frames = Vec::new();
    while got.len() < want {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        poll_in(fd, deadline - now);
        port.rx_batch(pool, &mut frames, BATCH_SIZE);
        for f in frames.drain(..) {
            let d = pool.data(&f);
            if is_test(d) {
                got.push(d.to_vec());
            }
            pool.free(f);
        }
    }
    got
}

fn mac_of(ns: &Netns, ifname: &str) -> [u8; 6] {
    let s = ns
        .exec(&["cat", &format!("/sys/class/net/{ifname}/address")])
        .expect("mac");
    s.trim()
        .parse::<vswitch::wire::MacAddr>()
        .expect("mac syntax")
        .0
}

#[test]
fn rx_delivers_the_peers_frames_byte_for_byte() {
    if !require_root() {
        return;
    }
    let t = topo();
    let peer = Raw::open(&t.ns_b, &t.b);
    let (mut port, att) = t.open(PacketOptions::default());
    assert_eq!(att.mode, PortMode::Packet);
    assert!(!att.zero_copy);
    assert_eq!(att.mtu, 1500);
    assert_eq!(att.mac, mac_of(&t.ns_a, &t.a));
    let ifindex = t.ns_a.enter(|| vswitch::port::netdev::ifindex(&t.a));
    assert_eq!(Some(att.ifindex), ifindex);

    let mut pool = FramePool::heap(256);
    let before = pool.available();
    let sent: Vec<Vec<u8>> = [18, 60, 61, 333, 1514]
        .iter()
        .enumerate()
        .map(|(i, &l)| frame(i as u32, l))
        .collect();
    for f in &sent {
        peer.send(f);
    }
    let got = rx_test(&mut port, &mut pool, sent.len(), Duration::from_secs(5));
    assert_eq!(got, sent);
    assert_eq!(pool.available(), before);
    assert_eq!(port.rx_drops(), RxDrops::default());
}

#[test]
fn tx_reaches_the_peer_intact_and_does_not_come_back() {
    if !require_root() {
        return;
    }
    let t = topo();
    let peer = Raw::open(&t.ns_b, &t.b);
    let (mut port, _) = t.open(PacketOptions::default());
    let mut pool = FramePool::heap(256);
    let before = pool.available();

    let sent: Vec<Vec<u8>> = [14, 60, 200, 1514]
        .iter()
        .enumerate()
        .map(|(i, &l)| frame(i as u32, l))
        .collect();
    let mut batch: Vec<_> = sent
        .iter()
        .map(|f| pool.alloc_copy(f).expect("frame"))
        .collect();
    let o = port.tx_batch(&mut pool, &mut batch);
    assert!(batch.is_empty(), "tx_batch drains its input");
    assert_eq!((o.sent, o.dropped), (sent.len() as u32, 0));
    assert_eq!(o.bytes, sent.iter().map(|f| f.len() as u64).sum::<u64>());
    assert_eq!(pool.available(), before, "sent frames go back to the pool");

    for f in &sent {
        assert_eq!(peer.recv_test(Duration::from_secs(5)).as_ref(), Some(f));
    }
    // The switch never receives what it sent itself.
    assert!(rx_test(&mut port, &mut pool, usize::MAX, Duration::from_millis(300)).is_empty());
    assert_eq!(pool.available(), before);
}

#[test]
fn frames_others_send_out_of_the_interface_are_not_received() {
    if !require_root() {
        return;
    }
    let t = topo();
    let peer = Raw::open(&t.ns_b, &t.b);
    let (mut port, _) = t.open(PacketOptions::default());
    // Another sender on the switch's own interface, like the host stack would be.
    let local = Raw::open(&t.ns_a, &t.a);
    let mut pool = FramePool::heap(64);
    let f = frame(7, 100);
    local.send(&f);
    assert_eq!(
        peer.recv_test(Duration::from_secs(5)),
        Some(f),
        "the frame did leave"
    );
    assert!(rx_test(&mut port, &mut pool, usize::MAX, Duration::from_millis(300)).is_empty());
}

#[test]
fn oversize_frames_are_dropped_and_counted() {
    if !require_root() {
        return;
    }
    let t = topo();
    // Both ends: a veth drops what exceeds the receiving end's MTU itself.
    t.ns_a
        .exec(&["ip", "link", "set", &t.a, "mtu", "9000"])
        .expect("mtu a");
    t.ns_b
        .exec(&["ip", "link", "set", &t.b, "mtu", "9000"])
        .expect("mtu b");
    let peer = Raw::open(&t.ns_b, &t.b);
    let (mut port, att) = t.open(PacketOptions::default());
    assert_eq!(att.mtu, 9000, "MTU is read in the port's namespace");
    let mut pool = FramePool::heap(128);
    let before = pool.available();

    let mut tagged = frame(3, MAX_FRAME_LEN + 2);
    tagged.splice(12..12, [0x81, 0x00, 0x00, 0x05]);
    let exact = frame(4, MAX_FRAME_LEN);
    let small = frame(5, 100);
    peer.send(&frame(1, 4000));
    peer.send(&frame(2, MAX_FRAME_LEN + 1));
    // Fits untagged (the kernel strips the tag) but not once the tag is put back.
    peer.send(&tagged);
    peer.send(&exact);
    peer.send(&small);

    let got = rx_test(&mut port, &mut pool, 2, Duration::from_secs(5));
    assert_eq!(got, vec![exact, small]);
    assert!(rx_test(&mut port, &mut pool, usize::MAX, Duration::from_millis(200)).is_empty());
    assert_eq!(
        port.rx_drops(),
        RxDrops {
            oversize: 3,
            malformed: 0,
            errors: 0
        }
    );
    assert_eq!(pool.available(), before);
}

#[test]
fn vlan_tags_the_kernel_strips_are_put_back() {
    if !require_root() {
        return;
    }
    let t = topo();
    let peer = Raw::open(&t.ns_b, &t.b);
    let (mut port, _) = t.open(PacketOptions::default());
    let mut pool = FramePool::heap(64);

    let mut dot1q = frame(1, 80);
    dot1q.splice(12..12, [0x81, 0x00, 0x60, 0x64]); // priority 3, VLAN 100
    let mut qinq = frame(2, 80);
    qinq.splice(12..12, [0x88, 0xa8, 0x00, 0xc8, 0x81, 0x00, 0x01, 0x2c]); // S-VLAN 200, C-VLAN 300
    peer.send(&dot1q);
    peer.send(&qinq);
    let got = rx_test(&mut port, &mut pool, 2, Duration::from_secs(5));
    assert_eq!(got, vec![dot1q, qinq]);
    assert_eq!(port.counters().vlan_restored, 2);
}

#[test]
fn partial_checksums_from_an_offloading_sender_are_completed() {
    if !require_root() {
        return;
    }
    let t = topo();
    let mac_a = t
        .ns_a
        .exec(&["cat", &format!("/sys/class/net/{}/address", t.a)])
        .expect("mac");
    t.ns_b
        .exec(&["ip", "addr", "add", "10.77.0.2/24", "dev", &t.b])
        .expect("addr");
    t.ns_b
        .exec(&[
            "ip",
            "neigh",
            "replace",
            "10.77.0.1",
            "lladdr",
            mac_a.trim(),
            "dev",
            &t.b,
            "nud",
            "permanent",
        ])
        .expect("neigh");
    // The sender's TX checksum offload on: its stack leaves L4 checksums partial.
    t.ns_b
        .exec(&["ethtool", "-K", &t.b, "tx", "on"])
        .expect("ethtool tx on");
    let features = t.ns_b.exec(&["ethtool", "-k", &t.b]).expect("ethtool -k");
    assert!(
        features.contains("tx-checksum-ip-generic: on"),
        "{features}"
    );

    let (mut port, _) = t.open(PacketOptions::default());
    let mut pool = FramePool::heap(64);
    t.ns_b.enter(|| {
        let udp = std::net::UdpSocket::bind("10.77.0.2:0").expect("udp bind");
        udp.send_to(b"a payload of odd length, 37 bytes...", "10.77.0.1:9999")
            .expect("udp send");
        // Sends a SYN and gives up: enough to see one real TCP header.
        let _ = std::net::TcpStream::connect_timeout(
            &"10.77.0.1:80".parse().expect("addr"),
            Duration::from_millis(50),
        );
    });

    let (mut udp_ok, mut tcp_ok) = (false, false);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut frames = Vec::new();
    while !(udp_ok && tcp_ok) && Instant::now() < deadline {
        poll_in(port.poll_fd().expect("fd"), Duration::from_millis(100));
        port.rx_batch(&mut pool, &mut frames, BATCH_SIZE);
        for f in frames.drain(..) {
            let bytes = pool.data(&f).to_vec();
            pool.free(f);
            let Ok(p) = etherparse::SlicedPacket::from_ethernet(&bytes) else {
                continue;
            };
            let Some(etherparse::NetSlice::Ipv4(ip)) = &p.net else {
                continue;
            };
            let (src, dst) = (ip.header().source(), ip.header().destination());
            match &p.transport {
                Some(etherparse::TransportSlice::Udp(u)) if u.destination_port() == 9999 => {
                    let want = u
                        .to_header()
                        .calc_checksum_ipv4_raw(src, dst, u.payload())
                        .expect("csum");
                    assert_eq!(u.checksum(), want, "UDP checksum");
                    udp_ok = true;
                }
                Some(etherparse::TransportSlice::Tcp(tcp)) if tcp.destination_port() == 80 => {
                    assert_eq!(
                        tcp.checksum(),
                        tcp.calc_checksum_ipv4(src, dst).expect("csum"),
                        "TCP checksum"
                    );
                    tcp_ok = true;
                }
                _ => {}
            }
        }
    }
    assert!(udp_ok && tcp_ok, "saw UDP: {udp_ok}, TCP SYN: {tcp_ok}");
    // Proof that the frames really arrived partial, so the path above was taken.
    assert!(port.counters().csum_completed >= 2, "{:?}", port.counters());
}

#[test]
fn a_burst_of_10k_frames_each_way_keeps_the_pool_whole() {
    if !require_root() {
        return;
    }
    const N: usize = 10_000;
    let len_of = |seq: usize| 60 + (seq * 37) % 1455;
    let t = topo();
    let peer = Raw::open(&t.ns_b, &t.b);
    let (mut port, _) = t.open(PacketOptions::default());
    let mut pool = FramePool::heap(1024);
    let before = pool.available();

    // Peer -> switch, paced so the test checks the port rather than queue sizes: the
    // sender stays at most 512 frames ahead of what the switch has taken.
    let taken = Arc::new(AtomicUsize::new(0));
    let sender = {
        let taken = taken.clone();
        std::thread::spawn(move || {
            for seq in 0..N {
                while seq > taken.load(Ordering::Relaxed) + 512 {
                    std::thread::sleep(Duration::from_micros(50));
                }
                peer.send(&frame(seq as u32, len_of(seq)));
            }
            peer
        })
    };
    let mut seen = vec![false; N];
    let mut frames = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut count = 0;
    while count < N && Instant::now() < deadline {
        poll_in(port.poll_fd().expect("fd"), Duration::from_millis(100));
        port.rx_batch(&mut pool, &mut frames, BATCH_SIZE);
        for f in frames.drain(..) {
            let d = pool.data(&f);
            if is_test(d) {
                let seq = u32::from_be_bytes([d[14], d[15], d[16], d[17]]) as usize;
                assert!(seq < N && !seen[seq], "frame {seq} unknown or seen twice");
                assert_eq!(d, frame(seq as u32, len_of(seq)).as_slice(), "frame {seq}");
                seen[seq] = true;
                count += 1;
            }
            pool.free(f);
        }
        taken.store(count, Ordering::Relaxed);
    }
    let peer = sender.join().expect("sender");
    assert_eq!(count, N, "received");
    assert_eq!(port.kernel_drops(), 0);
    assert_eq!(port.rx_drops(), RxDrops::default());
    assert_eq!(pool.available(), before);

    // Switch -> peer: 10k frames through tx_batch, in batches larger than one
    // sendmmsg takes, while the peer counts what arrives.
    let done = Arc::new(AtomicBool::new(false));
    let counter = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut n = 0usize;
            while let Some(_f) =
                peer.recv_test(Duration::from_millis(if done.load(Ordering::Relaxed) {
                    500
                } else {
                    5000
                }))
            {
                n += 1;
            }
            (n, peer.kernel_drops())
        })
    };
    let (mut sent, mut dropped) = (0u64, 0u64);
    let mut seq = 0;
    while seq < N {
        let n = (N - seq).min(700);
        let mut batch: Vec<_> = (seq..seq + n)
            .map(|s| pool.alloc_copy(&frame(s as u32, len_of(s))).expect("frame"))
            .collect();
        let o = port.tx_batch(&mut pool, &mut batch);
        assert_eq!(o.sent as usize + o.dropped as usize, n);
        sent += u64::from(o.sent);
        dropped += u64::from(o.dropped);
        assert_eq!(pool.available(), before, "after a tx batch");
        seq += n;
    }
    done.store(true, Ordering::Relaxed);
    let (arrived, peer_drops) = counter.join().expect("counter");
    eprintln!(
        "tx burst: sent {sent}, dropped {dropped}, peer got {arrived}, peer socket drops {peer_drops}"
    );
    assert_eq!(sent + dropped, N as u64);
    assert_eq!(
        arrived as u64 + u64::from(peer_drops),
        sent,
        "every frame sent is accounted for at the peer"
    );
    assert_eq!(pool.available(), before);
}

#[test]
fn a_missing_interface_is_reported_as_such() {
    // No root needed: the name is checked before any socket exists.
    let name = unique("vpnone");
    assert!(matches!(PacketPort::open(&name), Err(PortError::NoSuchInterface(n)) if n == name));
    for bad in [
        "",
        "../../etc",
        "has space",
        "a-name-far-too-long-for-linux",
    ] {
        assert!(
            matches!(PacketPort::open(bad), Err(PortError::NoSuchInterface(_))),
            "{bad:?}"
        );
    }
}

#[test]
fn an_interface_removed_under_the_port_costs_drops_not_panics() {
    if !require_root() {
        return;
    }
    let t = topo();
    let (mut port, _) = t.open(PacketOptions::default());
    let mut pool = FramePool::heap(64);
    let before = pool.available();
    t.ns_a.exec(&["ip", "link", "del", &t.a]).expect("del veth");

    let mut batch: Vec<_> = (0..10)
        .map(|i| pool.alloc_copy(&frame(i, 100)).expect("frame"))
        .collect();
    let o = port.tx_batch(&mut pool, &mut batch);
    assert_eq!((o.sent, o.dropped), (0, 10));
    let mut out = Vec::new();
    for _ in 0..3 {
        assert_eq!(port.rx_batch(&mut pool, &mut out, BATCH_SIZE), 0);
    }
    assert_eq!(pool.available(), before);
}

/// Informal packets-per-second numbers for this machine (not a benchmark):
/// `cargo test --release -p vswitch --test port_packet -- --ignored --nocapture`.
#[test]
#[ignore]
fn informal_packets_per_second() {
    if !require_root() {
        return;
    }
    let secs = Duration::from_secs(2);
    for bypass in [false, true] {
        let t = topo();
        let (mut port, _) = t.open(PacketOptions {
            qdisc_bypass: bypass,
        });
        let mut pool = FramePool::heap(1024);
        let template = frame(0, 64);
        let start = Instant::now();
        let (mut sent, mut dropped) = (0u64, 0u64);
        let mut batch = Vec::with_capacity(BATCH_SIZE);
        while start.elapsed() < secs {
            batch.extend((0..BATCH_SIZE).filter_map(|_| pool.alloc_copy(&template)));
            let o = port.tx_batch(&mut pool, &mut batch);
            sent += u64::from(o.sent);
            dropped += u64::from(o.dropped);
        }
        let el = start.elapsed().as_secs_f64();
        eprintln!(
            "tx 64B, qdisc_bypass={bypass}: {:.2} Mpps sent, {dropped} dropped",
            sent as f64 / el / 1e6
        );
    }

    let t = topo();
    let peer = Raw::open(&t.ns_b, &t.b);
    let (mut port, _) = t.open(PacketOptions::default());
    let mut pool = FramePool::heap(1024);

    // Receive cost alone: fill the socket queue first, then time draining it.
    let frames: Vec<Vec<u8>> = (0..256).map(|i| frame(i, 64)).collect();
    for _ in 0..40 {
        peer.send_many(&frames);
    }
    let mut out = Vec::new();
    let start = Instant::now();
    let mut got = 0u64;
    loop {
        let n = port.rx_batch(&mut pool, &mut out, BATCH_SIZE);
        pool.free_all(out.drain(..));
        if n == 0 {
            break;
        }
        got += n as u64;
    }
    let el = start.elapsed().as_secs_f64();
    eprintln!(
        "rx 64B, draining a full queue: {got} frames at {:.2} Mpps ({:.0} ns/frame), socket drops {}",
        got as f64 / el / 1e6,
        el * 1e9 / got.max(1) as f64,
        port.kernel_drops()
    );

    let stop = Arc::new(AtomicBool::new(false));
    let blaster = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let frames: Vec<Vec<u8>> = (0..256).map(|i| frame(i, 64)).collect();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += peer.send_many(&frames);
            }
            n
        })
    };
    let mut frames = Vec::new();
    let start = Instant::now();
    let mut got = 0u64;
    while start.elapsed() < secs {
        poll_in(port.poll_fd().expect("fd"), Duration::from_millis(10));
        got += port.rx_batch(&mut pool, &mut frames, BATCH_SIZE) as u64;
        pool.free_all(frames.drain(..));
    }
    let el = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let offered = blaster.join().expect("blaster");
    eprintln!(
        "rx 64B: {:.2} Mpps received of {:.2} Mpps offered, socket drops {}",
        got as f64 / el / 1e6,
        offered as f64 / el / 1e6,
        port.kernel_drops()
    );
}

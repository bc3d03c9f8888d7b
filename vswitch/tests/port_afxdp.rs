//! AF_XDP ports over veth pairs in private namespaces, in driver and skb mode.
//!
//! Root only. Each test makes its own namespaces: the switch side of each veth lives in
//! namespace A, the peer in B (and C), where an AF_PACKET socket plays the neighbour.

mod common;

use common::{Netns, require_root, unique, veth_pair};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};
use vswitch::pool::{Frame, FramePool};
use vswitch::port::afxdp::AfXdpPort;
use vswitch::port::{Port, PortError};
use vswitch_proto::PortMode;

const POOL: u32 = 4096;
/// Experimental ethertype (IEEE 802 local): the namespaces' own traffic (IPv6
/// neighbour discovery) is told apart by it.
const ETHERTYPE: u16 = 0x88b5;
const MAGIC: &[u8; 4] = b"VSWT";
const BURST: u32 = 10_000;
const WAIT: Duration = Duration::from_secs(10);

/// A test frame: broadcast-free unicast, our ethertype, magic, sequence number, and a
/// payload whose length and bytes depend on the sequence number.
fn frame(seq: u32) -> Vec<u8> {
    let len = 60 + (seq as usize * 7) % 1400;
    let mut f = Vec::with_capacity(len);
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01]);
    f.extend_from_slice(&ETHERTYPE.to_be_bytes());
    f.extend_from_slice(MAGIC);
    f.extend_from_slice(&seq.to_be_bytes());
    while f.len() < len {
        f.push((f.len() as u32 ^ seq) as u8);
    }
    f
}

/// The sequence number of one of our test frames, `None` for anything else.
fn seq_of(bytes: &[u8]) -> Option<u32> {
    if bytes.len() < 22 || bytes[12..14] != ETHERTYPE.to_be_bytes() || &bytes[14..18] != MAGIC {
        return None;
    }
    Some(u32::from_be_bytes([
        bytes[18], bytes[19], bytes[20], bytes[21],
    ]))
}

/// An AF_PACKET socket bound to one interface: the peer's end of a veth.
struct PacketSock {
    fd: OwnedFd,
}

impl PacketSock {
    /// Call inside the interface's namespace; the socket stays there.
    fn open(ifname: &str) -> PacketSock {
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain socket(2); the fd is owned right below.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                proto.into(),
            )
        };
        assert!(
            raw >= 0,
            "AF_PACKET socket: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: raw is a fresh fd nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let ifindex = vswitch::port::netdev::ifindex(ifname).expect("peer ifindex");
        // SAFETY: all-zero is a valid sockaddr_ll.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: sll is a valid sockaddr_ll of the given size.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(rc, 0, "bind AF_PACKET: {}", std::io::Error::last_os_error());
        let buf: libc::c_int = 32 << 20;
        // SAFETY: setsockopt reads one c_int.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&buf as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as u32,
            );
        }
        PacketSock { fd }
    }

    fn send(&self, bytes: &[u8]) {
        loop {
            // SAFETY: bytes is a valid buffer; the socket is bound to its interface.
            let n =
                unsafe { libc::send(self.fd.as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), 0) };
            if n == bytes.len() as isize {
                return;
            }
            let e = std::io::Error::last_os_error();
            assert!(
                matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::ENOBUFS)),
                "AF_PACKET send: {e}"
            );
            std::thread::sleep(Duration::from_micros(50));
        }
    }

    /// One received frame (not one we sent), or `None` when nothing is queued.
    fn recv(&self, buf: &mut [u8]) -> Option<usize> {
        loop {
            // SAFETY: all-zero is a valid sockaddr_ll.
            let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut flen = size_of::<libc::sockaddr_ll>() as u32;
            // SAFETY: buf and from are valid for the lengths given.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                    (&mut from as *mut libc::sockaddr_ll).cast(),
                    &mut flen,
                )
            };
            if n < 0 {
                return None;
            }
            if from.sll_pkttype != libc::PACKET_OUTGOING {
                return Some(n as usize);
            }
        }
    }
}

/// Whatever `ip -d link show` says about XDP on an interface; empty when none.
fn xdp_state(ns: &Netns, ifname: &str) -> String {
    let out = ns
        .exec(&["ip", "-d", "link", "show", "dev", ifname])
        .expect("ip link show");
    out.lines()
        .filter(|l| l.contains("prog/xdp") || l.split_whitespace().any(|w| w.starts_with("xdp")))
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" | ")
}

/// Namespace A (switch side) and B (peer side) joined by one veth.
struct Pair {
    a: Netns,
    b: Netns,
    sw: String,
    peer: String,
}

impl Pair {
    fn new() -> Pair {
        let a = Netns::new("vxa");
        let b = Netns::new("vxb");
        let sw = unique("vxs");
        let peer = unique("vxp");
        veth_pair(&a, &sw, &b, &peer);
        Pair { a, b, sw, peer }
    }

    fn open(&self, pool: &FramePool, mode: PortMode, port_no: u32) -> AfXdpPort {
        open_in(&self.a, &self.sw, pool, mode, port_no)
    }
}

fn open_in(ns: &Netns, ifname: &str, pool: &FramePool, mode: PortMode, port_no: u32) -> AfXdpPort {
    let (port, att) = ns
        .enter(|| AfXdpPort::open(ifname, mode, pool, port_no))
        .expect("open AF_XDP port");
    assert_eq!(att.mode, mode);
    assert!(!att.zero_copy, "veth has no zero-copy AF_XDP");
    assert!(att.ifindex > 0);
    assert_eq!(att.mtu, 1500);
    let mac = ns
        .exec(&["cat", &format!("/sys/class/net/{ifname}/address")])
        .expect("mac");
    let mac_text = att
        .mac
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    assert_eq!(mac.trim(), mac_text);
    port
}

/// Runs the port until `want` of our frames came in; returns them by sequence number.
fn receive(
    port: &mut AfXdpPort,
    pool: &mut FramePool,
    want: usize,
    seen: &mut [Option<Vec<u8>>],
) -> usize {
    let mut got = 0;
    let mut frames = Vec::with_capacity(64);
    let deadline = Instant::now() + WAIT;
    while got < want && Instant::now() < deadline {
        port.maintain(pool);
        port.rx_batch(pool, &mut frames, 64);
        for f in frames.drain(..) {
            if let Some(seq) = seq_of(pool.data(&f)) {
                let slot = &mut seen[seq as usize];
                assert!(slot.is_none(), "frame {seq} received twice");
                *slot = Some(pool.data(&f).to_vec());
                got += 1;
            }
            pool.free(f);
        }
    }
    got
}

/// Keeps maintaining until every frame the port sent has completed.
fn settle(port: &mut AfXdpPort, pool: &mut FramePool) {
    let deadline = Instant::now() + WAIT;
    while port.tx_in_flight() > 0 && Instant::now() < deadline {
        port.maintain(pool);
    }
    assert_eq!(port.tx_in_flight(), 0, "TX completions missing");
}

fn assert_no_leak(port: &AfXdpPort, pool: &FramePool) {
    assert_eq!(
        pool.available() + port.kernel_held() as usize,
        POOL as usize,
        "frames neither free nor with the kernel (kernel holds {})",
        port.kernel_held()
    );
}

/// Drops the port (outside its namespace: the port switches there for the
/// teardown), checks no XDP program is left and every frame comes back.
fn close(pair_ns: &Netns, ifname: &str, port: AfXdpPort, pool: &mut FramePool, port_no: u32) {
    let held = port.kernel_held() as usize;
    drop(port);
    assert_eq!(
        xdp_state(pair_ns, ifname),
        "",
        "XDP program left on {ifname} after the port was dropped"
    );
    assert_eq!(pool.reclaim_port(port_no), held);
    assert_eq!(pool.available(), POOL as usize);
}

fn single_frames(mode: PortMode) {
    if !require_root() {
        return;
    }
    let t = Pair::new();
    let mut pool = t.a.enter(|| FramePool::umem(POOL)).expect("UMEM");
    assert_eq!(xdp_state(&t.a, &t.sw), "");
    let mut port = t.open(&pool, mode, 1);
    let state = xdp_state(&t.a, &t.sw);
    let expected_word = if mode == PortMode::XdpDrv {
        " xdp "
    } else {
        "xdpgeneric"
    };
    assert!(
        format!(" {state} ").contains(expected_word),
        "{mode}: XDP state after open: {state}"
    );
    eprintln!("{mode}: attached: {state}");
    let id = port.xdp_prog_id().expect("program id");
    assert!(
        state.contains(&format!("prog/xdp id {id} ")),
        "{mode}: program {id} not in {state}"
    );
    port.maintain(&mut pool);
    assert_eq!(port.kernel_held(), vswitch::port::afxdp::FILL_TARGET);
    assert_no_leak(&port, &pool);
    let (fill_flag, tx_flag) = port.wakeup_flags();
    eprintln!("{mode}: need_wakeup flags after open: fill={fill_flag} tx={tx_flag}");

    // Peer -> switch.
    let peer = t.b.enter(|| PacketSock::open(&t.peer));
    let sent = frame(3);
    peer.send(&sent);
    let mut seen = vec![None; 8];
    assert_eq!(
        receive(&mut port, &mut pool, 1, &mut seen),
        1,
        "{mode}: frame from the peer not received"
    );
    assert_eq!(seen[3].as_deref(), Some(&sent[..]));

    // Switch -> peer.
    let out = frame(5);
    let mut batch = vec![pool.alloc_copy(&out).expect("frame")];
    let o = port.tx_batch(&mut pool, &mut batch);
    assert!(batch.is_empty());
    assert_eq!((o.sent, o.dropped, o.bytes), (1, 0, out.len() as u64));
    let mut buf = vec![0u8; 4096];
    let deadline = Instant::now() + WAIT;
    let mut arrived = None;
    while arrived.is_none() && Instant::now() < deadline {
        port.maintain(&mut pool);
        while let Some(n) = peer.recv(&mut buf) {
            if seq_of(&buf[..n]) == Some(5) {
                arrived = Some(buf[..n].to_vec());
            }
        }
    }
    assert_eq!(
        arrived.as_deref(),
        Some(&out[..]),
        "{mode}: transmitted frame did not reach the peer intact"
    );
    eprintln!(
        "{mode}: need_wakeup flags after traffic: {:?}; counters {:?}",
        port.wakeup_flags(),
        port.counters()
    );
    settle(&mut port, &mut pool);
    assert_no_leak(&port, &pool);
    assert_eq!(port.counters().bad_descs, 0);
    close(&t.a, &t.sw, port, &mut pool, 1);
}

fn bursts(mode: PortMode) {
    if !require_root() {
        return;
    }
    let t = Pair::new();
    let mut pool = t.a.enter(|| FramePool::umem(POOL)).expect("UMEM");
    let mut port = t.open(&pool, mode, 7);
    port.maintain(&mut pool);
    let peer = t.b.enter(|| PacketSock::open(&t.peer));

    // Peer -> switch, in chunks the veth's own queue (256) absorbs.
    let mut seen = vec![None; BURST as usize];
    let mut got = 0;
    for chunk in (0..BURST).collect::<Vec<_>>().chunks(64) {
        for &seq in chunk {
            peer.send(&frame(seq));
        }
        got += receive(&mut port, &mut pool, chunk.len(), &mut seen);
    }
    assert_eq!(
        got,
        BURST as usize,
        "{mode}: received {got} of {BURST}; kernel drops {}",
        port.kernel_drops()
    );
    for (seq, bytes) in seen.iter().enumerate() {
        assert_eq!(
            bytes.as_deref(),
            Some(&frame(seq as u32)[..]),
            "{mode}: frame {seq} differs"
        );
    }
    assert_eq!(port.kernel_drops(), 0);
    settle(&mut port, &mut pool);
    assert_no_leak(&port, &pool);

    // Switch -> peer.
    let mut buf = vec![0u8; 4096];
    let mut arrived = vec![false; BURST as usize];
    let mut count = 0;
    let mut batch = Vec::with_capacity(64);
    let mut sent = 0;
    let mut sent_bytes = 0;
    for chunk in (0..BURST).collect::<Vec<_>>().chunks(64) {
        batch.extend(
            chunk
                .iter()
                .map(|&s| pool.alloc_copy(&frame(s)).expect("pool frame")),
        );
        let o = port.tx_batch(&mut pool, &mut batch);
        assert_eq!(o.dropped, 0, "{mode}: TX ring refused frames");
        sent += o.sent;
        sent_bytes += o.bytes;
        port.maintain(&mut pool);
        while let Some(n) = peer.recv(&mut buf) {
            if let Some(seq) = seq_of(&buf[..n]) {
                assert_eq!(&buf[..n], &frame(seq)[..], "{mode}: frame {seq} corrupted");
                assert!(!arrived[seq as usize], "{mode}: frame {seq} twice");
                arrived[seq as usize] = true;
                count += 1;
            }
        }
    }
    assert_eq!(sent, BURST);
    assert_eq!(
        sent_bytes,
        (0..BURST).map(|s| frame(s).len() as u64).sum::<u64>()
    );
    let deadline = Instant::now() + WAIT;
    while count < BURST && Instant::now() < deadline {
        port.maintain(&mut pool);
        while let Some(n) = peer.recv(&mut buf) {
            if let Some(seq) = seq_of(&buf[..n]) {
                assert!(!arrived[seq as usize]);
                arrived[seq as usize] = true;
                count += 1;
            }
        }
    }
    assert_eq!(count, BURST, "{mode}: peer got {count} of {BURST}");
    eprintln!("{mode}: burst counters {:?}", port.counters());
    settle(&mut port, &mut pool);
    assert_no_leak(&port, &pool);
    close(&t.a, &t.sw, port, &mut pool, 7);
}

/// Two ports on one pool: frames received on one are transmitted on the other by
/// descriptor, and arrive intact.
fn forwarding(mode: PortMode) {
    if !require_root() {
        return;
    }
    let a = Netns::new("vxa");
    let b = Netns::new("vxb");
    let c = Netns::new("vxc");
    let (sw1, p1, sw2, p2) = (unique("vxs"), unique("vxp"), unique("vxs"), unique("vxp"));
    veth_pair(&a, &sw1, &b, &p1);
    veth_pair(&a, &sw2, &c, &p2);
    let mut pool = a.enter(|| FramePool::umem(POOL)).expect("UMEM");
    let mut in_port = open_in(&a, &sw1, &pool, mode, 1);
    let mut out_port = open_in(&a, &sw2, &pool, mode, 2);
    in_port.maintain(&mut pool);
    out_port.maintain(&mut pool);
    assert_eq!(
        pool.available(),
        (POOL - 2 * vswitch::port::afxdp::FILL_TARGET) as usize
    );
    let src = b.enter(|| PacketSock::open(&p1));
    let dst = c.enter(|| PacketSock::open(&p2));

    let mut buf = vec![0u8; 4096];
    let mut arrived = vec![false; BURST as usize];
    let (mut count, mut forwarded) = (0u32, 0u32);
    let mut frames = Vec::with_capacity(64);
    let mut drain = |count: &mut u32| {
        while let Some(n) = dst.recv(&mut buf) {
            if let Some(seq) = seq_of(&buf[..n]) {
                assert_eq!(
                    &buf[..n],
                    &frame(seq)[..],
                    "{mode}: forwarded frame {seq} corrupted"
                );
                assert!(!arrived[seq as usize]);
                arrived[seq as usize] = true;
                *count += 1;
            }
        }
    };
    for chunk in (0..BURST).collect::<Vec<_>>().chunks(64) {
        for &seq in chunk {
            src.send(&frame(seq));
        }
        let target = forwarded + chunk.len() as u32;
        let deadline = Instant::now() + WAIT;
        while forwarded < target && Instant::now() < deadline {
            in_port.maintain(&mut pool);
            out_port.maintain(&mut pool);
            in_port.rx_batch(&mut pool, &mut frames, 64);
            // Only our frames: the namespaces' own chatter is dropped here.
            frames.retain(|f| {
                let ours = seq_of(pool.data(f)).is_some();
                if !ours {
                    pool.free(*f);
                }
                ours
            });
            forwarded += out_port.tx_batch(&mut pool, &mut frames).sent;
        }
        drain(&mut count);
    }
    assert_eq!(forwarded, BURST, "{mode}: forwarded {forwarded} of {BURST}");
    let deadline = Instant::now() + WAIT;
    while count < BURST && Instant::now() < deadline {
        out_port.maintain(&mut pool);
        drain(&mut count);
    }
    assert_eq!(count, BURST, "{mode}: {count} of {BURST} arrived");
    settle(&mut in_port, &mut pool);
    settle(&mut out_port, &mut pool);
    assert_eq!(
        pool.available() + (in_port.kernel_held() + out_port.kernel_held()) as usize,
        POOL as usize,
        "{mode}: frames leaked while forwarding"
    );
    // The first port opened on the pool holds the UMEM's own socket: drop it first.
    close_two(&a, (&sw1, in_port, 1), (&sw2, out_port, 2), &mut pool);
}

fn close_two(
    ns: &Netns,
    first: (&str, AfXdpPort, u32),
    second: (&str, AfXdpPort, u32),
    pool: &mut FramePool,
) {
    for (name, port, no) in [first, second] {
        let held = port.kernel_held() as usize;
        drop(port);
        assert_eq!(xdp_state(ns, name), "", "XDP program left on {name}");
        assert_eq!(pool.reclaim_port(no), held);
    }
    assert_eq!(pool.available(), POOL as usize);
}

#[test]
fn drv_single_frames_both_ways() {
    single_frames(PortMode::XdpDrv);
}

#[test]
fn skb_single_frames_both_ways() {
    single_frames(PortMode::XdpSkb);
}

#[test]
fn drv_bursts_without_loss_or_leak() {
    bursts(PortMode::XdpDrv);
}

#[test]
fn skb_bursts_without_loss_or_leak() {
    bursts(PortMode::XdpSkb);
}

#[test]
fn drv_forwarding_between_ports_by_descriptor() {
    forwarding(PortMode::XdpDrv);
}

#[test]
fn skb_forwarding_between_ports_by_descriptor() {
    forwarding(PortMode::XdpSkb);
}

#[test]
fn missing_interface_is_reported() {
    if !require_root() {
        return;
    }
    let a = Netns::new("vxa");
    let pool = a.enter(|| FramePool::umem(64)).expect("UMEM");
    for mode in [PortMode::XdpDrv, PortMode::XdpSkb] {
        let r = a.enter(|| AfXdpPort::open("vxnosuch0", mode, &pool, 1));
        assert!(
            matches!(r, Err(PortError::NoSuchInterface(ref n)) if n == "vxnosuch0"),
            "{mode}: {:?}",
            r.err()
        );
    }
}

#[test]
fn second_port_on_one_interface_is_refused() {
    if !require_root() {
        return;
    }
    let t = Pair::new();
    let pool = t.a.enter(|| FramePool::umem(256)).expect("UMEM");
    let other = t.a.enter(|| FramePool::umem(256)).expect("UMEM");
    let port = t.open(&pool, PortMode::XdpSkb, 1);
    for p in [&pool, &other] {
        let r = t.a.enter(|| AfXdpPort::open(&t.sw, PortMode::XdpSkb, p, 2));
        assert!(
            matches!(r, Err(PortError::Unsupported { .. })),
            "{:?}",
            r.err()
        );
    }
    drop(port);
    assert_eq!(xdp_state(&t.a, &t.sw), "");
}

/// A pool made in another namespace would have its first socket bind an interface of
/// *that* namespace with the same index: refused before anything is bound.
#[test]
fn pool_from_another_namespace_is_refused() {
    if !require_root() {
        return;
    }
    let t = Pair::new();
    let outside = FramePool::umem(64).expect("UMEM");
    let r =
        t.a.enter(|| AfXdpPort::open(&t.sw, PortMode::XdpSkb, &outside, 1));
    assert!(
        matches!(r, Err(PortError::Unsupported { .. })),
        "{:?}",
        r.err()
    );
    assert_eq!(xdp_state(&t.a, &t.sw), "");
}

/// libxdp binds every socket of a pool through the pool's first one (see
/// port/afxdp.rs): once all are closed the pool cannot bind again and says why; a
/// fresh pool can (after the kernel let go of the old one's queue).
#[test]
fn closed_pool_is_reported_and_a_fresh_pool_works() {
    if !require_root() {
        return;
    }
    let t = Pair::new();
    let mut pool = t.a.enter(|| FramePool::umem(256)).expect("UMEM");
    let port = t.open(&pool, PortMode::XdpSkb, 1);
    drop(port);
    pool.reclaim_port(1);
    let again =
        t.a.enter(|| AfXdpPort::open(&t.sw, PortMode::XdpSkb, &pool, 1));
    match again {
        Err(PortError::Unsupported { reason, .. }) => {
            assert!(reason.contains("first socket"), "{reason}")
        }
        other => panic!("expected Unsupported, got {:?}", other.map(|_| ())),
    }
    assert_eq!(xdp_state(&t.a, &t.sw), "");
    drop(pool);
    let fresh = t.a.enter(|| FramePool::umem(256)).expect("UMEM");
    let deadline = Instant::now() + WAIT;
    let port = loop {
        match t
            .a
            .enter(|| AfXdpPort::open(&t.sw, PortMode::XdpSkb, &fresh, 1))
        {
            Ok((p, _)) => break p,
            Err(e) if Instant::now() < deadline => {
                eprintln!("fresh pool not bound yet: {e}");
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("fresh pool: {e}"),
        }
    };
    drop(port);
    assert_eq!(xdp_state(&t.a, &t.sw), "");
}

/// The veth is deleted under an open port: nothing panics or spins, transmit drops.
#[test]
fn interface_deleted_under_the_port() {
    if !require_root() {
        return;
    }
    for mode in [PortMode::XdpDrv, PortMode::XdpSkb] {
        let t = Pair::new();
        let mut pool = t.a.enter(|| FramePool::umem(POOL)).expect("UMEM");
        let mut port = t.open(&pool, mode, 3);
        port.maintain(&mut pool);
        t.a.exec(&["ip", "link", "del", &t.sw])
            .expect("ip link del");
        let mut frames = Vec::new();
        let mut dropped = 0;
        for i in 0..50u32 {
            let mut batch: Vec<Frame> = (0..16)
                .filter_map(|j| pool.alloc_copy(&frame(i * 16 + j)))
                .collect();
            let o = port.tx_batch(&mut pool, &mut batch);
            dropped += o.dropped;
            port.maintain(&mut pool);
            port.rx_batch(&mut pool, &mut frames, 64);
            pool.free_all(frames.drain(..));
        }
        assert!(
            port.is_gone(),
            "{mode}: socket did not notice its interface went away"
        );
        assert!(dropped > 0, "{mode}: nothing reported dropped");
        let mut pfd = libc::pollfd {
            fd: port.poll_fd().expect("fd"),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, 0) };
        eprintln!(
            "{mode}: after deletion poll() = {n}, revents {:#x}; {:?}",
            pfd.revents,
            port.counters()
        );
        assert_eq!(n, 0, "{mode}: a dead port's fd must not wake the worker");
        let _ = port.kernel_drops();
        let held = port.kernel_held() as usize;
        drop(port);
        assert_eq!(pool.reclaim_port(3), held);
        assert_eq!(pool.available(), POOL as usize);
    }
}

/// libxdp only uses its dispatcher when it finds a bpffs; the teardown must work
/// either way. Runs the single-frame tests again in a private mount namespace where
/// /sys/fs/bpf is an empty tmpfs (libxdp caches what it found, hence a new process).
#[test]
fn detach_without_bpffs() {
    if !require_root() {
        return;
    }
    if std::env::var_os("VSW_AFXDP_NO_BPFFS").is_some() {
        return; // already the child
    }
    let exe = std::env::current_exe().expect("test binary");
    let script = format!(
        "mount --make-rprivate / && mount -t tmpfs none /sys/fs/bpf && exec {} --exact --test-threads 1 --nocapture \
         drv_single_frames_both_ways skb_single_frames_both_ways interface_deleted_under_the_port",
        exe.display()
    );
    let out = std::process::Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .env("VSW_AFXDP_NO_BPFFS", "1")
        .output()
        .expect("unshare");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    assert!(out.status.success(), "tests without bpffs failed");
    assert!(text.contains("3 passed"), "child did not run the tests");
}

//! AF_PACKET fallback for hosts or interfaces without AF_XDP: `sendmmsg` and
//! `recvmmsg` on raw packet sockets, a batch per system call. Much slower than
//! AF_XDP (the kernel copies every frame and runs its full transmit path), and
//! always reported as such in the results.

use crate::engine::{GenCore, RxFrame, RxPort, TxPort};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

const FRAME: usize = 2048;
/// Frames of the generator's buffer (copied by the kernel on every send).
const FRAMES: u32 = 4096;
const BATCH: usize = 256;

fn ifindex(name: &str) -> Result<i32, String> {
    let c = std::ffi::CString::new(name).map_err(|_| format!("bad interface name {name:?}"))?;
    // SAFETY: a valid NUL-terminated string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        Err(format!("no interface {name}"))
    } else {
        Ok(i as i32)
    }
}

pub(crate) fn packet_socket(name: &str, proto: u16) -> Result<OwnedFd, String> {
    let idx = ifindex(name)?;
    // SAFETY: plain socket(2).
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            i32::from(proto.to_be()),
        )
    };
    if fd < 0 {
        return Err(format!("AF_PACKET socket: {}", io::Error::last_os_error()));
    }
    // SAFETY: fd is a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_ll is plain data; zero is a valid starting value.
    let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sa.sll_family = libc::AF_PACKET as u16;
    sa.sll_protocol = proto.to_be();
    sa.sll_ifindex = idx;
    // SAFETY: bind reads `size_of::<sockaddr_ll>()` bytes from a live local.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sa as *const libc::sockaddr_ll).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(format!(
            "bind AF_PACKET to {name}: {}",
            io::Error::last_os_error()
        ));
    }
    Ok(fd)
}

fn setopt(fd: &OwnedFd, level: i32, opt: i32, val: i32) -> bool {
    // SAFETY: setsockopt reads an int from a live local.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            (&val as *const i32).cast(),
            size_of::<i32>() as libc::socklen_t,
        ) == 0
    }
}

/// The generator over AF_PACKET.
pub struct PacketTx {
    fd: OwnedFd,
    buf: Vec<u8>,
    lens: Vec<usize>,
    used: u32,
    next: u32,
    iov: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
    errors: u64,
}

// SAFETY: the iovec/mmsghdr pointers only ever point into `buf`, which moves with
// the struct (a Vec's heap block does not move); they are rebuilt before each use.
unsafe impl Send for PacketTx {}

impl PacketTx {
    pub fn open(ifname: &str) -> Result<PacketTx, String> {
        // Protocol 0: this socket receives nothing.
        let fd = packet_socket(ifname, 0)?;
        // Skip the qdisc like a NIC-facing generator would (best effort).
        setopt(&fd, libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, 1);
        Ok(PacketTx {
            fd,
            buf: vec![0u8; FRAMES as usize * FRAME],
            lens: vec![0; FRAMES as usize],
            used: FRAMES,
            next: 0,
            // SAFETY: iovec and mmsghdr are plain data; zeroed is valid.
            iov: vec![unsafe { std::mem::zeroed() }; BATCH],
            // SAFETY: as above.
            msgs: vec![unsafe { std::mem::zeroed() }; BATCH],
            errors: 0,
        })
    }
}

impl TxPort for PacketTx {
    fn describe(&self) -> String {
        "af_packet (sendmmsg)".into()
    }

    fn frames(&self) -> u32 {
        FRAMES
    }

    fn layout(&mut self, core: &GenCore) {
        for i in 0..FRAMES {
            let s = i as usize * FRAME;
            self.lens[i as usize] = core.build_frame(i, &mut self.buf[s..s + FRAME]);
        }
        self.used = core.frames_used().clamp(1, FRAMES);
        self.next = 0;
    }

    fn reap(&mut self) {}

    fn pending(&mut self) -> usize {
        0
    }

    fn send(&mut self, core: &mut GenCore, n: usize, ts: u64) -> usize {
        let n = n.min(BATCH);
        let start = self.next;
        for k in 0..n {
            let idx = (start + k as u32) % self.used;
            let s = idx as usize * FRAME;
            core.stamp(idx, &mut self.buf[s..s + FRAME], ts);
            self.iov[k] = libc::iovec {
                iov_base: self.buf[s..].as_mut_ptr().cast(),
                iov_len: self.lens[idx as usize],
            };
        }
        for k in 0..n {
            // SAFETY: msghdr is plain data; zeroed then pointed at our iovec.
            let mut h: libc::msghdr = unsafe { std::mem::zeroed() };
            h.msg_iov = &mut self.iov[k];
            h.msg_iovlen = 1;
            self.msgs[k] = libc::mmsghdr {
                msg_hdr: h,
                msg_len: 0,
            };
        }
        // SAFETY: `n` message headers pointing at iovecs into `buf`, all alive
        // for the duration of the call; the socket is bound to the interface.
        let r = unsafe {
            libc::sendmmsg(
                self.fd.as_raw_fd(),
                self.msgs.as_mut_ptr(),
                n as u32,
                libc::MSG_DONTWAIT,
            )
        };
        let sent = if r < 0 {
            let e = io::Error::last_os_error().raw_os_error();
            if !matches!(
                e,
                Some(libc::EAGAIN) | Some(libc::ENOBUFS) | Some(libc::EINTR)
            ) {
                self.errors += 1;
            }
            0
        } else {
            r as usize
        };
        core.unsend(n - sent);
        self.next = (start + sent as u32) % self.used;
        sent
    }

    fn kick(&mut self) {}

    fn errors(&self) -> u64 {
        self.errors
    }

    fn drain(&mut self, _timeout: Duration) {}
}

/// The sink over AF_PACKET.
pub struct PacketRx {
    fd: OwnedFd,
    buf: Vec<u8>,
    iov: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
    /// Drops so far (the kernel's counter resets on every read).
    drops: std::cell::Cell<u64>,
}

// SAFETY: as for PacketTx: the pointers point into `buf` and are rebuilt per call.
unsafe impl Send for PacketRx {}

impl PacketRx {
    pub fn open(ifname: &str) -> Result<PacketRx, String> {
        let fd = packet_socket(ifname, libc::ETH_P_ALL as u16)?;
        // Our own announcement must not come back; a large buffer absorbs bursts.
        setopt(&fd, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, 1);
        if !setopt(&fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 16 << 20) {
            setopt(&fd, libc::SOL_SOCKET, libc::SO_RCVBUF, 16 << 20);
        }
        Ok(PacketRx {
            fd,
            buf: vec![0u8; BATCH * FRAME],
            // SAFETY: plain data, zeroed is valid.
            iov: vec![unsafe { std::mem::zeroed() }; BATCH],
            // SAFETY: as above.
            msgs: vec![unsafe { std::mem::zeroed() }; BATCH],
            drops: std::cell::Cell::new(0),
        })
    }

    fn stats(&self) -> (u32, u32) {
        // SAFETY: tpacket_stats is plain data; getsockopt writes at most `len`.
        let mut st: libc::tpacket_stats = unsafe { std::mem::zeroed() };
        let mut len = size_of::<libc::tpacket_stats>() as libc::socklen_t;
        // SAFETY: see above; reading the statistics also resets them.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&mut st as *mut libc::tpacket_stats).cast(),
                &mut len,
            )
        };
        if rc == 0 {
            (st.tp_packets, st.tp_drops)
        } else {
            (0, 0)
        }
    }
}

impl RxPort for PacketRx {
    fn describe(&self) -> String {
        "af_packet (recvmmsg)".into()
    }

    fn poll(&mut self, f: &mut dyn FnMut(RxFrame<'_>)) -> usize {
        for k in 0..BATCH {
            self.iov[k] = libc::iovec {
                iov_base: self.buf[k * FRAME..].as_mut_ptr().cast(),
                iov_len: FRAME,
            };
            // SAFETY: msghdr is plain data; zeroed then pointed at our iovec.
            let mut h: libc::msghdr = unsafe { std::mem::zeroed() };
            h.msg_iov = &mut self.iov[k];
            h.msg_iovlen = 1;
            self.msgs[k] = libc::mmsghdr {
                msg_hdr: h,
                msg_len: 0,
            };
        }
        // SAFETY: BATCH headers pointing at iovecs into `buf`, alive for the call.
        let r = unsafe {
            libc::recvmmsg(
                self.fd.as_raw_fd(),
                self.msgs.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if r <= 0 {
            return 0;
        }
        let n = r as usize;
        for k in 0..n {
            let len = (self.msgs[k].msg_len as usize).min(FRAME);
            f(RxFrame {
                data: &self.buf[k * FRAME..k * FRAME + len],
                rx_ns: None,
            });
        }
        n
    }

    fn announce(&mut self, frame: &[u8]) {
        for _ in 0..3 {
            // SAFETY: send reads `frame.len()` bytes from a live slice.
            unsafe {
                libc::send(
                    self.fd.as_raw_fd(),
                    frame.as_ptr().cast(),
                    frame.len(),
                    libc::MSG_DONTWAIT,
                )
            };
        }
    }

    fn kernel_drops(&self) -> u64 {
        // PACKET_STATISTICS resets on read: keep the running total.
        self.drops.set(self.drops.get() + u64::from(self.stats().1));
        self.drops.get()
    }
}

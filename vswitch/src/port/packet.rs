//! AF_PACKET ports: the `packet` mode, for hosts and interfaces where no XDP program
//! can be loaded (old kernels, locked-down hosts, drivers without XDP).
//!
//! # Data path
//!
//! One AF_PACKET socket per port, bound to its interface. `rx_batch` is one
//! `recvmmsg(2)` that scatters up to [`BATCH_SIZE`] frames straight into pool frames;
//! `tx_batch` is one `sendmmsg(2)` per [`TX_CAP`] frames, gathered straight from pool
//! frames. The kernel copies each frame once per direction, which is the least
//! AF_PACKET can do, and the syscall is paid per batch, not per frame. The message
//! headers and iovecs live in arrays the port owns, so a call allocates nothing.
//!
//! # Why not TPACKET_V3 rings
//!
//! An mmap'ed ring saves the syscall, not the copy: the kernel still copies every
//! frame into the ring, and since V3 hands ring memory back to the kernel in whole
//! blocks, a ring slot cannot be lent to the pipeline as a [`Frame`]: the switch would
//! copy it a second time into the pool. On TX a ring also needs a copy (pool to ring)
//! plus a `send()` kick per batch, the same syscall count as `sendmmsg`. V3 RX blocks
//! retire when full or on a timer (at least 1 ms), so at low rates the timer is added
//! latency. And a ring is a few MiB of pinned memory per port for the port's lifetime
//! (one port per pod), where socket buffers cost memory only while frames wait.
//! AF_XDP is the fast path; this is the fallback, so it is the simple one. If packet
//! mode ever needs more, a V3 RX ring fits behind the same [`Port`] trait.
//!
//! # What the kernel does to frames before we see them, and what we undo
//!
//! - **Partial checksums.** A local TCP/UDP sender whose device offers TX checksum
//!   offload (a veth does) leaves the L4 checksum unfinished: the field holds only the
//!   pseudo-header sum and the skb says "finish at csum_start + csum_offset". The
//!   kernel carries that state along when it delivers the skb itself; the switch copies
//!   bytes out and sends a new skb that the receiver verifies, so TCP between pods
//!   would break. We ask for a `virtio_net_hdr` per frame (`PACKET_VNET_HDR`), which
//!   carries exactly those offsets, and finish the checksum in software as the
//!   kernel's `skb_checksum_help` would. Taking the offsets from the kernel instead of
//!   parsing headers works for any protocol and for tunnels, where the partial
//!   checksum is the inner one.
//! - **VLAN tags.** The receive path moves the outer 802.1Q/802.1ad tag into skb
//!   metadata (in hardware, or in `skb_vlan_untag`) before packet sockets see the
//!   frame; it comes back only as `PACKET_AUXDATA`. A switch must forward the frame as
//!   it was on the wire, so we put the tag back.
//! - **Oversize frames.** Frames longer than a pool buffer ([`MAX_FRAME_LEN`]) are
//!   dropped and counted in [`RxDrops::oversize`]: jumbo frames, and GSO/GRO
//!   super-frames (a pod's veth with TSO/GSO on, an uplink with GRO on). Packet mode
//!   needs those offloads off; the warning says so.

use super::{BATCH_SIZE, Port, PortAttachment, PortError, RxDrops, TxOutcome, netdev};
use crate::pool::{Frame, FramePool, MAX_FRAME_LEN};
use std::cell::Cell;
use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;
use std::time::{Duration, Instant};
use vswitch_proto::PortMode;

/// `<linux/if_packet.h>`; not in the libc crate.
const PACKET_VNET_HDR: libc::c_int = 15;
/// `struct virtio_net_hdr`: flags, gso_type, hdr_len, gso_size, csum_start,
/// csum_offset, in host byte order (packet sockets use the legacy virtio layout).
const VNET_HDR_LEN: usize = 10;
const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;
/// Socket buffer asked for in each direction (the kernel doubles it for overhead):
/// room for a few thousand frames while the worker serves other ports.
const SOCK_BUF_BYTES: libc::c_int = 4 << 20;
/// Frames per `sendmmsg` call.
pub const TX_CAP: usize = 256;
/// Frames per `recvmmsg` call.
const RX_CAP: usize = BATCH_SIZE;
/// Control buffer per received message: one `tpacket_auxdata` record.
const CMSG_CAP: usize = 64;
const ETH_ADDRS_LEN: usize = 12;
const VLAN_TAG_LEN: usize = 4;
/// How often each kind of warning may be logged per port.
const WARN_INTERVAL: Duration = Duration::from_secs(10);

// SAFETY: CMSG_SPACE is arithmetic on its argument.
const _: () = assert!(
    unsafe { libc::CMSG_SPACE(size_of::<libc::tpacket_auxdata>() as u32) } as usize <= CMSG_CAP
);

/// Control-message buffer, aligned as `cmsghdr` requires.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct CmsgBuf([u8; CMSG_CAP]);

/// How to open a packet port.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PacketOptions {
    /// `PACKET_QDISC_BYPASS`: transmit straight to the driver. Saves the qdisc enqueue
    /// and dequeue, but frames also skip everything attached there: traffic shaping
    /// and fair queueing, tc egress programs (other CNIs' BPF on the uplink), and the
    /// taps, so `tcpdump` on the interface no longer shows what the switch sends. A
    /// busy device then drops instead of queueing. A veth's qdisc is `noqueue`, so the
    /// gain there is small; off by default.
    pub qdisc_bypass: bool,
}

/// Work a packet port did on received frames (beyond [`RxDrops`]), cumulative.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PacketCounters {
    /// Partial L4 checksums finished in software.
    pub csum_completed: u64,
    /// VLAN tags put back into received frames.
    pub vlan_restored: u64,
}

/// At most one warning per [`WARN_INTERVAL`], with a count of the ones held back.
#[derive(Default)]
struct Warn {
    last: Option<Instant>,
    suppressed: u64,
}

impl Warn {
    /// `Some(held back since the last one)` when a warning may be logged now.
    fn ready(&mut self) -> Option<u64> {
        let now = Instant::now();
        match self.last {
            Some(t) if now.duration_since(t) < WARN_INTERVAL => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }

    /// Logs a failed syscall, if a warning may be logged now.
    fn os_error(&mut self, port: &str, errno: i32, what: &str) {
        if let Some(held) = self.ready() {
            let err = io::Error::from_raw_os_error(errno);
            tracing::warn!(port, error = %err, held_back = held, "{what}");
        }
    }
}

/// Per-message scratch for `recvmmsg`. The pointers in `hdrs` are rebuilt at the
/// start of every call and never read between calls.
struct RxSlots {
    /// Frames lent to the current call (returned or handed out before it ends).
    frames: Vec<Frame>,
    hdrs: Vec<libc::mmsghdr>,
    iov: Vec<[libc::iovec; 2]>,
    vnet: Vec<[u8; VNET_HDR_LEN]>,
    cmsg: Vec<CmsgBuf>,
}

/// Per-message scratch for `sendmmsg`, as [`RxSlots`].
struct TxSlots {
    hdrs: Vec<libc::mmsghdr>,
    iov: Vec<[libc::iovec; 2]>,
    /// The header every sent frame carries: all zeros, "complete frame, no GSO".
    vnet: Box<[u8; VNET_HDR_LEN]>,
}

pub struct PacketPort {
    fd: OwnedFd,
    name: String,
    rx: RxSlots,
    tx: TxSlots,
    drops: RxDrops,
    counters: PacketCounters,
    /// `PACKET_STATISTICS` resets on read; this keeps the running total.
    kernel_drops: Cell<u64>,
    rx_warn: Warn,
    tx_warn: Warn,
    oversize_warn: Warn,
}

// SAFETY: the raw pointers inside the mmsghdr/iovec scratch arrays are the only
// reason the type is not Send. They point into the port's own heap arrays or at pool
// frames of the current call, are rebuilt at the start of every call and never
// dereferenced between calls, so moving the port to another thread moves nothing
// that is still in use.
unsafe impl Send for PacketPort {}

fn zeroed_mmsghdr() -> libc::mmsghdr {
    // SAFETY: mmsghdr is a C struct of integers and raw pointers; all zeros (null
    // pointers, zero lengths) is a valid value of it.
    unsafe { std::mem::zeroed() }
}

fn empty_iov() -> libc::iovec {
    libc::iovec {
        iov_base: ptr::null_mut(),
        iov_len: 0,
    }
}

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn set_opt<T>(fd: &OwnedFd, level: libc::c_int, opt: libc::c_int, val: &T) -> io::Result<()> {
    // SAFETY: `val` is a valid, initialised T of size_of::<T>() bytes; the kernel
    // only reads it.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            (val as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn set_int(fd: &OwnedFd, level: libc::c_int, opt: libc::c_int, val: libc::c_int) -> io::Result<()> {
    set_opt(fd, level, opt, &val)
}

/// ENODEV/ENXIO while opening: the interface went away under us.
fn or_missing(name: &str, e: io::Error) -> PortError {
    match e.raw_os_error() {
        Some(libc::ENODEV | libc::ENXIO) => PortError::NoSuchInterface(name.to_string()),
        _ => PortError::Io(e),
    }
}

/// The MAC of the interface a packet socket is bound to.
fn bound_mac(fd: &OwnedFd) -> io::Result<[u8; 6]> {
    let mut sll = libc::sockaddr_ll {
        sll_family: 0,
        sll_protocol: 0,
        sll_ifindex: 0,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: 0,
        sll_addr: [0; 8],
    };
    let mut len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: sll is writable for `len` bytes and len is updated by the kernel.
    let r = unsafe {
        libc::getsockname(
            fd.as_raw_fd(),
            (&mut sll as *mut libc::sockaddr_ll).cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut mac = [0u8; 6];
    if sll.sll_halen == 6 {
        mac.copy_from_slice(&sll.sll_addr[..6]);
    }
    Ok(mac)
}

/// The interface's MTU, asked through the socket: right in whichever network
/// namespace the socket lives, unlike /sys, which shows the namespace it was mounted in.
fn if_mtu(fd: &OwnedFd, name: &str) -> io::Result<u32> {
    // SAFETY: ifreq is a C struct (name array and a union of integers/sockaddrs);
    // all zeros is valid.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    // validate_name ensured 1..=15 bytes, so the name stays NUL-terminated.
    for (dst, src) in ifr
        .ifr_name
        .iter_mut()
        .zip(name.bytes().take(libc::IFNAMSIZ - 1))
    {
        *dst = src as libc::c_char;
    }
    // SAFETY: SIOCGIFMTU reads ifr_name and writes ifru_mtu of the ifreq we pass.
    let r = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::SIOCGIFMTU as _,
            &mut ifr as *mut libc::ifreq,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel filled the union's mtu member.
    let mtu = unsafe { ifr.ifr_ifru.ifru_mtu };
    Ok(u32::try_from(mtu).unwrap_or(0))
}

impl PacketPort {
    /// Opens a packet port on `name` in the calling thread's network namespace, with
    /// default [`PacketOptions`]. The socket stays in that namespace afterwards.
    pub fn open(name: &str) -> Result<(PacketPort, PortAttachment), PortError> {
        Self::open_with(name, PacketOptions::default())
    }

    /// Opens a packet port with explicit options.
    pub fn open_with(
        name: &str,
        opts: PacketOptions,
    ) -> Result<(PacketPort, PortAttachment), PortError> {
        let missing = || PortError::NoSuchInterface(name.to_string());
        netdev::validate_name(name).map_err(|_| missing())?;
        let ifindex = netdev::ifindex(name).ok_or_else(missing)?;

        // Protocol 0 here and ETH_P_ALL only at bind: a socket created with ETH_P_ALL
        // hears every interface of the namespace until bind narrows it, and whatever
        // it queued meanwhile would reach the switch as if from this port.
        // SAFETY: plain syscall without pointers.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error().into());
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };

        // Without this the socket also receives every frame that others (the host
        // stack, another switch) send out of the interface, and the switch would
        // forward them back in. Its own frames the kernel never loops back anyway.
        set_int(&fd, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, 1).map_err(|e| {
            PortError::Unsupported {
                name: name.to_string(),
                mode: PortMode::Packet,
                reason: format!("PACKET_IGNORE_OUTGOING (Linux 4.20+): {e}"),
            }
        })?;
        // Partial-checksum offsets and VLAN tags: see the module documentation.
        set_int(&fd, libc::SOL_PACKET, PACKET_VNET_HDR, 1)?;
        set_int(&fd, libc::SOL_PACKET, libc::PACKET_AUXDATA, 1)?;
        if opts.qdisc_bypass {
            set_int(&fd, libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, 1)?;
        }
        for (force, plain) in [
            (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
            (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
        ] {
            // FORCE ignores net.core.[rw]mem_max but needs CAP_NET_ADMIN; without it
            // we get what the sysctl allows. A small buffer costs drops, not function.
            if set_int(&fd, libc::SOL_SOCKET, force, SOCK_BUF_BYTES).is_err() {
                let _ = set_int(&fd, libc::SOL_SOCKET, plain, SOCK_BUF_BYTES);
            }
        }
        // Promiscuous through the socket: the kernel counts it per socket and takes it
        // back when the socket closes, even if the switch crashes. Setting IFF_PROMISC
        // on the link would outlive us and fight other users of the flag.
        let ifindex_c = libc::c_int::try_from(ifindex).map_err(|_| missing())?;
        let mreq = libc::packet_mreq {
            mr_ifindex: ifindex_c,
            mr_type: libc::PACKET_MR_PROMISC as libc::c_ushort,
            mr_alen: 0,
            mr_address: [0; 8],
        };
        set_opt(&fd, libc::SOL_PACKET, libc::PACKET_ADD_MEMBERSHIP, &mreq)
            .map_err(|e| or_missing(name, e))?;

        let sll = libc::sockaddr_ll {
            sll_family: libc::AF_PACKET as libc::c_ushort,
            sll_protocol: (libc::ETH_P_ALL as u16).to_be(),
            sll_ifindex: ifindex_c,
            sll_hatype: 0,
            sll_pkttype: 0,
            sll_halen: 0,
            sll_addr: [0; 8],
        };
        // SAFETY: sll is a valid sockaddr_ll and the length says so.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(or_missing(name, io::Error::last_os_error()));
        }
        let mac = bound_mac(&fd).map_err(|e| or_missing(name, e))?;
        let mtu = if_mtu(&fd, name).map_err(|e| or_missing(name, e))?;

        let port = PacketPort {
            fd,
            name: name.to_string(),
            rx: RxSlots {
                frames: Vec::with_capacity(RX_CAP),
                hdrs: (0..RX_CAP).map(|_| zeroed_mmsghdr()).collect(),
                iov: vec![[empty_iov(), empty_iov()]; RX_CAP],
                vnet: vec![[0; VNET_HDR_LEN]; RX_CAP],
                cmsg: vec![CmsgBuf([0; CMSG_CAP]); RX_CAP],
            },
            tx: TxSlots {
                hdrs: (0..TX_CAP).map(|_| zeroed_mmsghdr()).collect(),
                iov: vec![[empty_iov(), empty_iov()]; TX_CAP],
                vnet: Box::new([0; VNET_HDR_LEN]),
            },
            drops: RxDrops::default(),
            counters: PacketCounters::default(),
            kernel_drops: Cell::new(0),
            rx_warn: Warn::default(),
            tx_warn: Warn::default(),
            oversize_warn: Warn::default(),
        };
        let att = PortAttachment {
            filter: None,
            mode: PortMode::Packet,
            zero_copy: false,
            ifindex,
            mac,
            mtu,
        };
        Ok((port, att))
    }

    /// Checksums finished and VLAN tags restored so far.
    pub fn counters(&self) -> PacketCounters {
        self.counters
    }

    fn drop_rx(&mut self, pool: &mut FramePool, frame: Frame, why: RxDrop) {
        pool.free(frame);
        match why {
            RxDrop::Oversize => {
                self.drops.oversize += 1;
                if let Some(held) = self.oversize_warn.ready() {
                    tracing::warn!(
                        port = %self.name, held_back = held,
                        "dropped a frame longer than {MAX_FRAME_LEN} bytes: packet mode needs MTU <= 1500 \
                         and GRO/TSO/GSO off on this interface and its peer"
                    );
                }
            }
            RxDrop::Malformed => self.drops.malformed += 1,
        }
    }
}

/// Why a received frame is not handed to the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RxDrop {
    Oversize,
    Malformed,
}

/// Turns a received message into a frame length: checks truncation, finishes a
/// partial checksum, restores a VLAN tag. `buf` is the frame's whole data area.
fn finish_rx(
    buf: &mut [u8],
    msg: &libc::mmsghdr,
    vnet: &[u8; VNET_HDR_LEN],
    counters: &mut PacketCounters,
) -> Result<usize, RxDrop> {
    let flags = msg.msg_hdr.msg_flags;
    if flags & libc::MSG_TRUNC != 0 {
        return Err(RxDrop::Oversize);
    }
    let len = (msg.msg_len as usize)
        .checked_sub(VNET_HDR_LEN)
        .ok_or(RxDrop::Malformed)?;
    let frame = buf.get_mut(..len).ok_or(RxDrop::Oversize)?;
    if vnet[0] & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0 {
        let start = usize::from(u16::from_ne_bytes([vnet[6], vnet[7]]));
        let offset = usize::from(u16::from_ne_bytes([vnet[8], vnet[9]]));
        if !complete_csum(frame, start, offset) {
            return Err(RxDrop::Malformed);
        }
        counters.csum_completed += 1;
    }
    // With MSG_CTRUNC a record might be cut short; the buffer is sized so that it
    // never is, and if it were we would rather lose a tag than read garbage.
    let aux = if flags & libc::MSG_CTRUNC == 0 {
        auxdata(&msg.msg_hdr)
    } else {
        None
    };
    match aux {
        Some(aux) if aux.tp_status & libc::TP_STATUS_VLAN_VALID != 0 => {
            let tpid = if aux.tp_status & libc::TP_STATUS_VLAN_TPID_VALID != 0 {
                aux.tp_vlan_tpid
            } else {
                libc::ETH_P_8021Q as u16
            };
            let len = insert_vlan(buf, len, tpid, aux.tp_vlan_tci)?;
            counters.vlan_restored += 1;
            Ok(len)
        }
        _ => Ok(len),
    }
}

/// The `PACKET_AUXDATA` record of a received message, if the kernel attached one.
fn auxdata(msg: &libc::msghdr) -> Option<libc::tpacket_auxdata> {
    let want = size_of::<libc::tpacket_auxdata>() as u32;
    // SAFETY: msg_control points at this message's CmsgBuf, and the kernel set
    // msg_controllen to the bytes it wrote there (at most CMSG_CAP). CMSG_FIRSTHDR and
    // CMSG_NXTHDR only return headers lying within msg_controllen; without MSG_CTRUNC
    // (checked by the caller) each record lies wholly within it, and the length check
    // makes sure this one holds a full tpacket_auxdata, read unaligned.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_PACKET
                && (*c).cmsg_type == libc::PACKET_AUXDATA
                && (*c).cmsg_len as usize >= libc::CMSG_LEN(want) as usize
            {
                return Some(ptr::read_unaligned(
                    libc::CMSG_DATA(c).cast::<libc::tpacket_auxdata>(),
                ));
            }
            c = libc::CMSG_NXTHDR(msg, c);
        }
    }
    None
}

/// Puts a VLAN tag back after the MAC addresses of the `len`-byte frame at the start
/// of `buf`. Returns the new length.
fn insert_vlan(buf: &mut [u8], len: usize, tpid: u16, tci: u16) -> Result<usize, RxDrop> {
    if len < ETH_ADDRS_LEN {
        return Err(RxDrop::Malformed);
    }
    let new_len = len + VLAN_TAG_LEN;
    if new_len > buf.len() {
        return Err(RxDrop::Oversize);
    }
    buf.copy_within(ETH_ADDRS_LEN..len, ETH_ADDRS_LEN + VLAN_TAG_LEN);
    buf[ETH_ADDRS_LEN..ETH_ADDRS_LEN + 2].copy_from_slice(&tpid.to_be_bytes());
    buf[ETH_ADDRS_LEN + 2..ETH_ADDRS_LEN + VLAN_TAG_LEN].copy_from_slice(&tci.to_be_bytes());
    Ok(new_len)
}

/// Where SCTP keeps its checksum (`offsetof(struct sctphdr, checksum)`). No protocol
/// whose Internet checksum the kernel leaves partial puts it there (TCP 16; UDP,
/// UDP-Lite and DCCP 6; GRE 4; ICMP 2), so the offset alone tells SCTP apart.
const SCTP_CSUM_OFFSET: usize = 8;

/// Finishes a partial checksum as the kernel's `skb_checksum_help` does: the field
/// at `start + offset` holds the pseudo-header sum; the one's-complement sum from
/// `start` to the end of the frame, complemented, replaces it (0 becomes 0xffff,
/// which means the same to TCP and is required by UDP, where 0 means "none").
/// SCTP, which a veth also lets a sender leave unfinished, gets its CRC32c instead
/// (`skb_crc32c_csum_help`). False when the offsets do not fit the frame.
fn complete_csum(frame: &mut [u8], start: usize, offset: usize) -> bool {
    let field = start.saturating_add(offset);
    if offset == SCTP_CSUM_OFFSET {
        if field.saturating_add(4) > frame.len() {
            return false;
        }
        frame[field..field + 4].fill(0);
        let crc = crate::flow::rewrite::crc32c(&frame[start..]);
        frame[field..field + 4].copy_from_slice(&crc.to_le_bytes());
        return true;
    }
    let Some(body) = frame.get(start..) else {
        return false;
    };
    if field.saturating_add(2) > frame.len() || body.is_empty() {
        return false;
    }
    let sum = !fold(ones_sum(body));
    let sum = if sum == 0 { 0xffff } else { sum };
    frame[field..field + 2].copy_from_slice(&sum.to_be_bytes());
    true
}

/// One's-complement sum of `bytes` as big-endian 16-bit words (odd tail padded with
/// zero), unfolded. Summing 32-bit words is the same modulo 0xffff and half the work.
fn ones_sum(bytes: &[u8]) -> u64 {
    let mut acc = 0u64;
    let mut words = bytes.chunks_exact(4);
    for w in &mut words {
        acc += u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
    }
    match *words.remainder() {
        [a, b, c] => acc += u64::from(u16::from_be_bytes([a, b])) + (u64::from(c) << 8),
        [a, b] => acc += u64::from(u16::from_be_bytes([a, b])),
        [a] => acc += u64::from(a) << 8,
        _ => {}
    }
    acc
}

fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

impl Port for PacketPort {
    fn rx_batch(&mut self, pool: &mut FramePool, out: &mut Vec<Frame>, max: usize) -> usize {
        let fd = self.fd.as_raw_fd();
        let RxSlots {
            frames,
            hdrs,
            iov,
            vnet,
            cmsg,
        } = &mut self.rx;
        frames.clear();
        while frames.len() < max.min(RX_CAP) {
            let Some(f) = pool.alloc() else { break };
            frames.push(f);
        }
        let n = frames.len();
        if n == 0 {
            return 0;
        }
        for ((((f, io), m), v), c) in frames
            .iter()
            .zip(iov.iter_mut())
            .zip(hdrs.iter_mut())
            .zip(vnet.iter_mut())
            .zip(cmsg.iter_mut())
        {
            *io = [
                libc::iovec {
                    iov_base: v.as_mut_ptr().cast(),
                    iov_len: VNET_HDR_LEN,
                },
                libc::iovec {
                    iov_base: pool.data_ptr(f.idx).cast(),
                    iov_len: MAX_FRAME_LEN,
                },
            ];
            m.msg_len = 0;
            m.msg_hdr.msg_name = ptr::null_mut();
            m.msg_hdr.msg_namelen = 0;
            m.msg_hdr.msg_iov = io.as_mut_ptr();
            m.msg_hdr.msg_iovlen = 2;
            m.msg_hdr.msg_control = c.0.as_mut_ptr().cast();
            m.msg_hdr.msg_controllen = CMSG_CAP as _;
            m.msg_hdr.msg_flags = 0;
        }
        // SAFETY: hdrs[..n] describe n messages; their iovecs point at the port's vnet
        // slots (VNET_HDR_LEN bytes each) and at the data areas (MAX_FRAME_LEN bytes) of
        // n distinct frames this call took from the pool and nobody else can see, and
        // their control buffers are the port's (CMSG_CAP bytes). All of it outlives the
        // call; no Rust reference to those bytes exists during it.
        let r = unsafe {
            libc::recvmmsg(
                fd,
                hdrs.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT,
                ptr::null_mut(),
            )
        };
        let got = if r < 0 {
            let e = errno();
            if e != libc::EAGAIN && e != libc::EINTR {
                // ENETDOWN once after the link went down, EINVAL for a frame the
                // kernel could not describe in a vnet header (it drops that frame):
                // the next call goes on.
                self.drops.errors += 1;
                self.rx_warn.os_error(&self.name, e, "recvmmsg failed");
            }
            0
        } else {
            (r as usize).min(n)
        };

        let mut delivered = 0;
        for i in 0..n {
            let mut f = self.rx.frames[i];
            if i >= got {
                pool.free(f);
                continue;
            }
            let buf = pool.buffer_mut(f.idx);
            match finish_rx(buf, &self.rx.hdrs[i], &self.rx.vnet[i], &mut self.counters) {
                Ok(len) => {
                    f.len = len as u32;
                    out.push(f);
                    delivered += 1;
                }
                Err(why) => self.drop_rx(pool, f, why),
            }
        }
        self.rx.frames.clear();
        delivered
    }

    fn tx_batch(&mut self, pool: &mut FramePool, frames: &mut Vec<Frame>) -> TxOutcome {
        let fd = self.fd.as_raw_fd();
        let mut o = TxOutcome::default();
        let total = frames.len();
        let mut done = 0;
        let TxSlots { hdrs, iov, vnet } = &mut self.tx;
        // The kernel only reads the header; the cast to *mut is what iovec wants.
        let vnet_ptr = vnet.as_ptr().cast_mut().cast();
        'chunks: while done < total {
            let n = (total - done).min(TX_CAP);
            let chunk = &frames[done..done + n];
            for ((f, io), m) in chunk.iter().zip(iov.iter_mut()).zip(hdrs.iter_mut()) {
                let len = (f.len as usize).min(MAX_FRAME_LEN);
                *io = [
                    libc::iovec {
                        iov_base: vnet_ptr,
                        iov_len: VNET_HDR_LEN,
                    },
                    libc::iovec {
                        iov_base: pool.data_ptr(f.idx).cast(),
                        iov_len: len,
                    },
                ];
                m.msg_len = 0;
                m.msg_hdr.msg_name = ptr::null_mut();
                m.msg_hdr.msg_namelen = 0;
                m.msg_hdr.msg_iov = io.as_mut_ptr();
                m.msg_hdr.msg_iovlen = 2;
                m.msg_hdr.msg_control = ptr::null_mut();
                m.msg_hdr.msg_controllen = 0;
                m.msg_hdr.msg_flags = 0;
            }
            let mut i = 0;
            while i < n {
                // SAFETY: hdrs[i..n] describe frames of this chunk, which the caller
                // gave us and the pool keeps alive; the kernel reads them (and the
                // shared vnet header) and writes only msg_len. i < n <= TX_CAP keeps
                // the pointer inside the array.
                let r = unsafe {
                    libc::sendmmsg(
                        fd,
                        hdrs.as_mut_ptr().add(i),
                        (n - i) as libc::c_uint,
                        libc::MSG_DONTWAIT,
                    )
                };
                if r > 0 {
                    let sent = (r as usize).min(n - i);
                    for f in &chunk[i..i + sent] {
                        o.sent += 1;
                        o.bytes += u64::from(f.len.min(MAX_FRAME_LEN as u32));
                    }
                    i += sent;
                    continue;
                }
                let e = if r < 0 { errno() } else { libc::EAGAIN };
                let this_frame_only = matches!(e, libc::EMSGSIZE | libc::EINVAL);
                if e == libc::EINTR {
                    continue;
                }
                if !matches!(e, libc::EAGAIN | libc::ENOBUFS) {
                    self.tx_warn.os_error(&self.name, e, "sendmmsg failed");
                }
                if this_frame_only {
                    // Longer than the MTU, shorter than a header: this frame's fault.
                    o.dropped += 1;
                    i += 1;
                } else {
                    // Socket buffer or device queue full (EAGAIN/ENOBUFS), interface
                    // down or gone (ENETDOWN/ENXIO/ENODEV): the rest would fare the
                    // same, so they are dropped without trying.
                    o.dropped += (total - done - i) as u32;
                    break 'chunks;
                }
            }
            done += n;
        }
        // Sent frames were copied by the kernel; dropped ones are dropped.
        pool.free_all(frames.drain(..));
        o
    }

    fn maintain(&mut self, _pool: &mut FramePool) {
        // Nothing: no frames are lent to the kernel between calls.
    }

    fn poll_fd(&self) -> Option<RawFd> {
        Some(self.fd.as_raw_fd())
    }

    fn kernel_drops(&self) -> u64 {
        let mut st = libc::tpacket_stats {
            tp_packets: 0,
            tp_drops: 0,
        };
        let mut len = size_of::<libc::tpacket_stats>() as libc::socklen_t;
        // SAFETY: st is writable for `len` bytes.
        let r = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&mut st as *mut libc::tpacket_stats).cast(),
                &mut len,
            )
        };
        if r == 0 {
            self.kernel_drops
                .set(self.kernel_drops.get() + u64::from(st.tp_drops));
        }
        self.kernel_drops.get()
    }

    fn rx_drops(&self) -> RxDrops {
        self.drops
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ones_sum_matches_rfc1071_example() {
        // RFC 1071 section 3: 00 01 f2 03 f4 f5 f6 f7 sums to 0xddf2.
        assert_eq!(
            fold(ones_sum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7])),
            0xddf2
        );
        // Odd tails are padded with a zero byte.
        assert_eq!(fold(ones_sum(&[0x01])), 0x0100);
        assert_eq!(fold(ones_sum(&[0x01, 0x02, 0x03])), 0x0102 + 0x0300);
        assert_eq!(fold(ones_sum(&[0xff, 0xff, 0x00, 0x01])), 0x0001);
    }

    /// A UDP/IPv4 frame with the pseudo-header sum in the checksum field, as a
    /// sender with checksum offload leaves it, completes to etherparse's checksum.
    #[test]
    fn completes_a_partial_udp_checksum() {
        let payload = b"partial checksum, odd length";
        let builder = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(1234, 5678);
        let mut frame = Vec::new();
        builder.write(&mut frame, payload).expect("build");
        let l4 = 14 + 20;
        let want = u16::from_be_bytes([frame[l4 + 6], frame[l4 + 7]]);
        let udp_len = (8 + payload.len()) as u16;
        let pseudo = fold(ones_sum(&[10, 0, 0, 1, 10, 0, 0, 2, 0, 17]) + u64::from(udp_len));
        frame[l4 + 6..l4 + 8].copy_from_slice(&pseudo.to_be_bytes());
        assert!(complete_csum(&mut frame, l4, 6));
        assert_eq!(u16::from_be_bytes([frame[l4 + 6], frame[l4 + 7]]), want);
    }

    #[test]
    fn checksum_offsets_outside_the_frame_are_refused() {
        let mut f = [0u8; 40];
        assert!(!complete_csum(&mut f, 40, 0));
        assert!(!complete_csum(&mut f, 30, 9));
        assert!(!complete_csum(&mut f, usize::MAX, usize::MAX));
        assert!(complete_csum(&mut f, 32, 6));
        // All zeros sum to 0, whose complement 0xffff is written as such.
        assert_eq!(&f[38..40], &[0xff, 0xff]);
    }

    #[test]
    fn sctp_gets_a_crc32c() {
        assert_eq!(crate::flow::rewrite::crc32c(b"123456789"), 0xe306_9283);
        // 12-byte SCTP common header (ports 1/2, tag 0) with a junk checksum field.
        let mut f = [0, 1, 0, 2, 0, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef];
        let mut zeroed = f;
        zeroed[8..12].fill(0);
        let want = crate::flow::rewrite::crc32c(&zeroed).to_le_bytes();
        assert!(complete_csum(&mut f, 0, SCTP_CSUM_OFFSET));
        assert_eq!(f[8..12], want);
        assert!(!complete_csum(&mut [0u8; 11], 0, SCTP_CSUM_OFFSET));
    }

    #[test]
    fn vlan_tag_goes_back_after_the_addresses() {
        let mut buf = [0u8; 32];
        let frame: Vec<u8> = (1..=20).collect();
        buf[..20].copy_from_slice(&frame);
        assert_eq!(insert_vlan(&mut buf, 20, 0x8100, 0x6064), Ok(24));
        assert_eq!(&buf[..12], &frame[..12]);
        assert_eq!(&buf[12..16], &[0x81, 0x00, 0x60, 0x64]);
        assert_eq!(&buf[16..24], &frame[12..]);
        assert_eq!(insert_vlan(&mut buf, 29, 0x8100, 1), Err(RxDrop::Oversize));
        assert_eq!(insert_vlan(&mut buf, 11, 0x8100, 1), Err(RxDrop::Malformed));
    }
}

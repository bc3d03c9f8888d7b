//! AF_XDP ports: one socket per interface (queue 0), bound to the worker's shared UMEM
//! (a multi-queue uplink adds one socket per further RX queue: port/multiqueue.rs).
//!
//! # Why descriptors move and bytes do not
//!
//! Every AF_XDP socket of a worker is bound to the same UMEM, which is the worker's
//! [`FramePool`]. A received frame is a descriptor (address, length) that the kernel
//! put on our RX ring after it copied (copy mode) or DMA'd (zero-copy) the packet into
//! a pool frame we had given it on the fill ring. Forwarding that frame to another
//! port of the same worker is putting the same address on that port's TX ring: the
//! packet bytes are never touched by user space. A frame is therefore always in
//! exactly one place: the pool's free list, the worker's hands, or one port's kernel
//! rings (fill+RX, or TX+completion); [`FramePool::lend`]/[`FramePool::unlend`] record
//! the last case so a removed port's frames can be reclaimed.
//!
//! # Where the kernel is woken up
//!
//! Sockets are bound with `XDP_USE_NEED_WAKEUP`, so the kernel only wants a syscall
//! when it says so in the ring flags:
//! - TX: in copy mode (all veths, generic XDP) the kernel transmits *only* inside
//!   `sendto`/`poll` on the socket: the TX flag is always set. One `sendto` per
//!   `tx_batch` (never per frame) moves the whole batch: we raise the socket's
//!   per-call budget (`XDP_MAX_TX_SKB_BUDGET`, 32 by default) to the ring size where
//!   the kernel has that option, so one kick drains everything queued. Copy-mode
//!   completions are written during that `sendto`; `maintain` kicks again only when
//!   the TX ring still holds descriptors the kernel has not consumed (budget spent,
//!   device queue busy).
//! - Fill: a zero-copy driver that ran out of fill entries goes to sleep and sets the
//!   fill-ring flag; `maintain` wakes it (`poll`) after refilling or when RX is idle.
//!   In copy mode the flag is not used: RX runs in the sender's softirq.
//!
//! # Not hogging the pool
//!
//! The fill ring is as large as the UMEM config (4096), but a port keeps at most
//! its budget — the worker's pool divided among its ports, between [`MIN_FILL`]
//! and [`FILL_TARGET`] frames — with the kernel for receiving, and never takes
//! more than half of the pool's free frames in one refill, so many ports (fifty
//! pods and more) share a pool.
//!
//! # Teardown
//!
//! Dropping the xsk-rs queues deletes the socket; libxdp then drops its reference on
//! the XDP program it attached and detaches it when it was the last user. libxdp
//! does that with netlink calls *in the calling thread's network namespace*, naming
//! the interface by index, so [`AfXdpPort`] remembers the namespace it was opened in
//! and switches to it around the deletion (a port opened inside a test namespace
//! and dropped outside would otherwise leave its program attached, or worse, talk
//! about an unrelated interface with the same index).
//!
//! # What was observed (kernel 6.18, libxdp 1.6 via xsk-rs 0.11, veth)
//!
//! - Zero-copy: veth refuses `XDP_ZEROCOPY` (EOPNOTSUPP) before anything is attached,
//!   and the copy-mode retry succeeds. A socket that shares the UMEM (every port but
//!   the pool's first) is bound by libxdp with `XDP_SHARED_UMEM` alone and the kernel
//!   gives it the first socket's mode whatever we asked, so the mode is read back
//!   with `XDP_OPTIONS`. Consequence: a pool whose first port is copy mode never
//!   gets zero-copy, and a pool whose first port is zero-copy cannot take a veth.
//! - need_wakeup on veth (copy mode, both XDP modes): the TX flag is always set, so
//!   each `tx_batch` makes exactly one `sendto`; the fill flag is never set.
//! - Detach: with a bpffs at /sys/fs/bpf libxdp tries its dispatcher, whose
//!   compatibility check fails on this kernel (no BPF_PROG_TYPE_EXT: EPERM), and
//!   attaches `xsk_def_prog` directly; without a bpffs it does that at once. In both
//!   cases and both modes, deleting the socket detaches the program (checked with
//!   `ip -d link show` in `tests/port_afxdp.rs`). The dispatcher path could not be
//!   exercised, so `XdpWatch` detaches a program libxdp would leave behind.
//! - Namespaces: libxdp resolves the interface index in the calling thread's
//!   namespace when attaching and detaching, and the UMEM's own socket (see below)
//!   resolves it in the namespace the *pool* was made in. Hence the teardown runs in
//!   the port's namespace, and `open` refuses a pool from another namespace (it
//!   would have bound an unrelated interface with the same index there).
//!
//! # The pool's first socket
//!
//! libxdp binds the first socket of a UMEM through the UMEM's own descriptor and
//! closes that only when the UMEM is deleted; every later socket shares the UMEM
//! through it. Measured consequences, for the life of the pool:
//! - once all AF_XDP sockets of the pool are closed, no new one can be made
//!   (libxdp fails with ENOMEM while re-registering the rings): the worker has to
//!   make a new pool (a just-deleted pool releases its queues asynchronously, so a
//!   bind right after may briefly see EBUSY);
//! - the first port's program is detached when it is dropped, but the descriptor
//!   stays bound to its interface's queue 0, so that interface cannot get an AF_XDP
//!   socket again (EINVAL from this pool, EBUSY from another);
//! - if the first port's interface is deleted, new sockets fail with EBADF.
//!
//! `open` appends a pointer to this note to those errors. Best avoided by making the
//! worker's first AF_XDP port a long-lived one (the uplink or gateway), or by
//! binding the UMEM's own socket to an interface the switch keeps for that purpose.

use super::fastpath::FastPath;
use super::xdp_filter::{self, FilterParams, UplinkFilter};
use super::{Port, PortAttachment, PortError, TxOutcome, netdev};
use crate::pool::{AsUmem, Frame, FramePool, UmemHandle};
use std::fs::File;
use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Mutex};
use vswitch_proto::PortMode;
use xsk_rs::config::{BindFlags, Interface, LibxdpFlags, QueueSize, SocketConfig, XdpFlags};
use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, Socket, TxQueue};

/// RX ring entries (descriptors the kernel can queue for us before dropping).
pub const RX_RING_SIZE: u32 = 2048;
/// TX ring entries.
pub const TX_RING_SIZE: u32 = 2048;
/// Frames a port keeps with the kernel for receiving (fill ring plus unread RX ring).
pub const FILL_TARGET: u32 = 1024;
/// The least a port keeps for receiving however many ports share the pool.
pub const MIN_FILL: u32 = 64;
/// The queue every port binds first. Pods' veths have one; the uplink of a
/// multi-queue NIC gets one more socket per further RX queue
/// ([`AfXdpPort::open_queue`], port/multiqueue.rs).
const QUEUE_ID: u32 = 0;
/// Descriptors moved per ring operation; the scratch array's size.
const SCRATCH: usize = 256;
/// Below this many missing fill entries, topping up waits (batched ring updates),
/// unless the kernel is nearly out.
const REFILL_BATCH: u32 = 32;
/// `setsockopt(SOL_XDP, XDP_MAX_TX_SKB_BUDGET)` (Linux 6.17+): frames one copy-mode
/// `sendto` may transmit; older kernels answer ENOPROTOOPT and keep 32.
const XDP_MAX_TX_SKB_BUDGET: libc::c_int = 9;

/// One of the switch's own XDP programs, instead of libxdp's redirect-everything one.
#[derive(Debug, Clone)]
pub enum OwnProgram {
    /// The uplink filter (port/xdp_filter.rs).
    Filter(FilterParams),
    /// The in-kernel fast path (port/fastpath.rs), sharing these maps.
    FastPath(Arc<FastPath>),
    /// The uplink filter sharing the fast path's maps (tunnel decap in XDP).
    FilterFastPath(FilterParams, Arc<FastPath>),
}

/// Interfaces (by network namespace and index) that have a port in this process.
///
/// xsk-rs's `Socket::new` is unsafe when the same (interface, queue) is bound twice
/// from one UMEM (libxdp would detach the shared program twice); refusing a second
/// port on the same interface, whichever pool, rules that out. A second pool on the
/// same queue would be refused by the kernel (EBUSY) anyway.
static CLAIMS: Mutex<Vec<(u64, u64, u32)>> = Mutex::new(Vec::new());

/// Our entry in [`CLAIMS`]; removed on drop.
struct Claim((u64, u64, u32));

impl Claim {
    fn take(netns: (u64, u64), ifindex: u32) -> Option<Claim> {
        let key = (netns.0, netns.1, ifindex);
        let mut claims = CLAIMS.lock().unwrap_or_else(|e| e.into_inner());
        if claims.contains(&key) {
            return None;
        }
        claims.push(key);
        Some(Claim(key))
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut claims = CLAIMS.lock().unwrap_or_else(|e| e.into_inner());
        claims.retain(|k| *k != self.0);
    }
}

/// The calling thread's network namespace, as an open file.
fn current_netns() -> io::Result<File> {
    File::open("/proc/thread-self/ns/net")
}

/// Identity of a namespace file (nsfs device and inode).
fn netns_id(f: &File) -> io::Result<(u64, u64)> {
    let m = f.metadata()?;
    Ok((m.dev(), m.ino()))
}

fn setns(f: &File) -> io::Result<()> {
    // SAFETY: setns on a valid namespace fd only changes this thread's namespace.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The four rings of one socket. The socket is deleted when all four are dropped.
struct Rings {
    rx: RxQueue,
    tx: TxQueue,
    fq: FillQueue,
    cq: CompQueue,
}

/// Counters for diagnosing a port; read by tests and `stats`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AfXdpCounters {
    /// RX or completion descriptors that named no frame of the pool.
    pub bad_descs: u64,
    /// `sendto` calls made to start transmission.
    pub tx_kicks: u64,
    /// `poll` calls made because the fill ring asked for a wake-up.
    pub fill_wakeups: u64,
    /// `sendto` failures other than the transient ones (EAGAIN, EBUSY, ENOBUFS, ENETDOWN).
    pub tx_errors: u64,
}

pub struct AfXdpPort {
    rings: ManuallyDrop<Rings>,
    fd: RawFd,
    port_no: u32,
    zero_copy: bool,
    /// Reused for every ring operation: no allocation per batch.
    scratch: Box<[FrameDesc]>,
    /// Frames lent for receiving: on the fill ring or on the RX ring, not read yet.
    rx_held: u32,
    /// Frames lent for sending: on the TX ring or completed but not reaped yet.
    tx_held: u32,
    /// Most frames to keep lent for receiving (set by the worker, at most FILL_TARGET).
    fill_target: u32,
    /// The last `rx_batch` found nothing (a sleeping zero-copy driver needs waking).
    rx_idle: bool,
    /// The socket lost its interface (ENXIO): nothing will ever move again.
    gone: bool,
    counters: AfXdpCounters,
    /// The namespace the socket was made in: libxdp's teardown must run there.
    netns: File,
    xdp: XdpWatch,
    /// The uplink's own program (instead of libxdp's): detached on drop.
    filter: Option<UplinkFilter>,
    /// The interface's claim; `None` on the further queues of a multi-queue uplink,
    /// whose queue-0 port holds it.
    _claim: Option<Claim>,
}

impl AfXdpPort {
    /// Binds an AF_XDP socket to queue 0 of `name` on the worker pool's UMEM and
    /// attaches libxdp's redirect program in `mode` (`XdpDrv` or `XdpSkb`).
    ///
    /// Call it in the network namespace of `name`, which must be the one `pool` was
    /// created in (checked): libxdp binds the first socket of a UMEM through the
    /// UMEM's own descriptor, which looks interface indexes up in the namespace it
    /// was made in, so a pool from another namespace would bind an unrelated
    /// interface that happens to have the same index.
    ///
    /// The fill ring starts empty: the first [`Port::maintain`] fills it, so frames
    /// arriving before that are dropped by the kernel (and counted).
    pub fn open(
        name: &str,
        mode: PortMode,
        pool: &impl AsUmem,
        port_no: u32,
    ) -> Result<(AfXdpPort, PortAttachment), PortError> {
        Self::open_with(name, mode, pool, port_no, None)
    }

    /// [`open`](Self::open), with one of our own programs (the uplink filter,
    /// [`xdp_filter`], or the fast path, [`super::fastpath`]) instead of libxdp's
    /// redirect-everything program when `own` is given: the socket is
    /// bound with `XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD`, put into the program's
    /// socket map, and the program attached in `mode` (the node addresses are the
    /// interface's IPv4 addresses now; [`xdp_filter::FilterHandle`] updates them).
    /// Any failure of the filter fails the port: nothing falls back silently.
    pub fn open_with(
        name: &str,
        mode: PortMode,
        pool: &impl AsUmem,
        port_no: u32,
        own: Option<OwnProgram>,
    ) -> Result<(AfXdpPort, PortAttachment), PortError> {
        let unsupported = |reason: String| PortError::Unsupported {
            name: name.to_string(),
            mode,
            reason,
        };
        let ifindex =
            netdev::ifindex(name).ok_or_else(|| PortError::NoSuchInterface(name.to_string()))?;
        let iface: Interface = name
            .parse()
            .map_err(|_| PortError::NoSuchInterface(name.to_string()))?;
        // Zero-copy is tried first in driver mode and refused by drivers without
        // AF_XDP support (veth among them) before any program is attached.
        let wake = BindFlags::XDP_USE_NEED_WAKEUP;
        let (xdp_flags, attempts, what): (_, &[(BindFlags, bool)], _) = match mode {
            PortMode::XdpDrv => (
                XdpFlags::XDP_FLAGS_DRV_MODE,
                &[
                    (BindFlags::XDP_ZEROCOPY.union(wake), true),
                    (BindFlags::XDP_COPY.union(wake), false),
                ],
                "driver mode",
            ),
            PortMode::XdpSkb => (
                XdpFlags::XDP_FLAGS_SKB_MODE,
                &[(BindFlags::XDP_COPY.union(wake), false)],
                "skb mode",
            ),
            _ => return Err(unsupported("not an AF_XDP mode".into())),
        };
        let Some(UmemHandle {
            umem,
            netns: pool_netns,
        }) = pool.umem_handle()
        else {
            return Err(unsupported(
                "this worker has no UMEM (AF_XDP unavailable)".into(),
            ));
        };
        let umem = &umem;
        let netns = current_netns()?;
        let here = netns_id(&netns)?;
        if here != pool_netns {
            return Err(unsupported(
                "the worker's frame pool was created in another network namespace".into(),
            ));
        }
        let claim = Claim::take(here, ifindex)
            .ok_or_else(|| unsupported("the interface already has an AF_XDP port".into()))?;
        let sizes = (QueueSize::new(RX_RING_SIZE), QueueSize::new(TX_RING_SIZE));
        let (Ok(rx_size), Ok(tx_size)) = sizes else {
            return Err(unsupported("ring sizes must be powers of two".into()));
        };

        let before = query_xdp_prog(ifindex, xdp_flags);
        let is_filter = matches!(
            own,
            Some(OwnProgram::Filter(_) | OwnProgram::FilterFastPath(..))
        );
        let what_prog = if is_filter {
            "uplink XDP filter"
        } else {
            "XDP fast path"
        };
        let mut prog = match own {
            Some(OwnProgram::Filter(params)) => {
                let ips = netdev::ipv4_addrs(name, xdp_filter::MAX_NODE_IPS);
                let f = UplinkFilter::load(params, &ips)
                    .map_err(|e| unsupported(format!("uplink XDP filter: {e}")))?;
                Some(f)
            }
            Some(OwnProgram::FilterFastPath(params, fp)) => {
                let ips = netdev::ipv4_addrs(name, xdp_filter::MAX_NODE_IPS);
                let f = UplinkFilter::load_with(params, &ips, &fp.uplink_reuse())
                    .map_err(|e| unsupported(format!("uplink XDP filter: {e}")))?;
                Some(f)
            }
            Some(OwnProgram::FastPath(fp)) => Some(
                fp.load_port_program()
                    .map_err(|e| unsupported(format!("XDP fast path: {e}")))?,
            ),
            None => None,
        };
        let libxdp_flags = if prog.is_some() {
            LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD
        } else {
            LibxdpFlags::empty()
        };
        let mut last_err = String::new();
        for &(bind_flags, zero_copy) in attempts {
            let config = SocketConfig::builder()
                .rx_queue_size(rx_size)
                .tx_queue_size(tx_size)
                .xdp_flags(xdp_flags)
                .bind_flags(bind_flags)
                .libxdp_flags(libxdp_flags)
                .build();
            // SAFETY: xsk-rs requires INHIBIT_PROG_LOAD when this UMEM already has a
            // socket on (interface, queue); our claim above guarantees it has none.
            let created = unsafe { Socket::new(config, umem, &iface, QUEUE_ID) };
            let (tx, rx, fq_cq) = match created {
                Ok(queues) => queues,
                Err(e) => {
                    last_err = explain(&e);
                    continue;
                }
            };
            let Some((fq, cq)) = fq_cq else {
                // Cannot happen while the claim holds; the queues are dropped here,
                // which is the double-bind case the claim exists to avoid.
                return Err(unsupported(
                    "queue 0 is already bound from this pool".into(),
                ));
            };
            let fd = rx.fd().as_raw_fd();
            if let Some(f) = prog.as_mut() {
                // Socket first, program second: the program never runs with an
                // empty map (it would pass everything anyway).
                let hooked = f
                    .add_socket(QUEUE_ID, fd)
                    .map_err(|e| format!("{what_prog}: adding the socket to its map: {e}"))
                    .and_then(|()| {
                        f.attach(ifindex, xdp_flags.bits())
                            .map_err(|e| format!("{what_prog}: {e}"))
                    });
                if let Err(e) = hooked {
                    // The socket (and its rings) go here; nothing was attached.
                    last_err = e;
                    continue;
                }
            }
            // Ask the kernel rather than trust our flags: a socket sharing the UMEM
            // with an earlier one is bound with XDP_SHARED_UMEM only and inherits the
            // first socket's mode (libxdp does not pass our bind flags then).
            let zero_copy = kernel_zero_copy(fd).unwrap_or(zero_copy);
            if !zero_copy {
                raise_tx_budget(fd);
            }
            let handle = match prog
                .as_ref()
                .filter(|_| is_filter)
                .map(UplinkFilter::handle)
            {
                None => None,
                Some(Ok(h)) => Some(Arc::new(h)),
                Some(Err(e)) => {
                    if let Some(f) = prog.as_mut() {
                        f.detach();
                    }
                    return Err(unsupported(format!("uplink XDP filter: {e}")));
                }
            };
            let port = AfXdpPort {
                rings: ManuallyDrop::new(Rings { rx, tx, fq, cq }),
                fd,
                port_no,
                zero_copy,
                scratch: vec![FrameDesc::default(); SCRATCH].into_boxed_slice(),
                rx_held: 0,
                tx_held: 0,
                fill_target: FILL_TARGET,
                rx_idle: true,
                gone: false,
                counters: AfXdpCounters::default(),
                netns,
                xdp: XdpWatch {
                    ifindex,
                    flags: xdp_flags,
                    before,
                    ours: query_xdp_prog(ifindex, xdp_flags),
                },
                filter: prog,
                _claim: Some(claim),
            };
            let att = PortAttachment {
                mode,
                zero_copy,
                ifindex,
                mac: netdev::mac(name),
                mtu: netdev::mtu(name),
                filter: handle,
            };
            return Ok((port, att));
        }
        Err(unsupported(format!("{what} refused: {last_err}")))
    }

    /// A socket on RX queue `queue` (> 0) of the interface this port (queue 0,
    /// opened with the uplink filter) serves, on the same UMEM, registered in the
    /// filter's `xsks_map` at `queue`. The program is already attached (by this
    /// port) and stays this port's: the new socket only receives (its TX ring is
    /// never used; the switch transmits through queue 0). Call in the interface's
    /// namespace, from the thread that owns this port.
    pub fn open_queue(
        &self,
        name: &str,
        mode: PortMode,
        pool: &impl AsUmem,
        queue: u32,
    ) -> Result<AfXdpPort, PortError> {
        let unsupported = |reason: String| PortError::Unsupported {
            name: name.to_string(),
            mode,
            reason,
        };
        let Some(filter) = self.filter.as_ref().filter(|_| queue != QUEUE_ID) else {
            return Err(unsupported(format!(
                "queue {queue}: further queues need the uplink filter on queue 0"
            )));
        };
        let ifindex =
            netdev::ifindex(name).ok_or_else(|| PortError::NoSuchInterface(name.to_string()))?;
        if ifindex != self.xdp.ifindex {
            return Err(unsupported(format!(
                "queue {queue}: not the interface of this port"
            )));
        }
        let iface: Interface = name
            .parse()
            .map_err(|_| PortError::NoSuchInterface(name.to_string()))?;
        let Some(UmemHandle { umem, .. }) = pool.umem_handle() else {
            return Err(unsupported(
                "this worker has no UMEM (AF_XDP unavailable)".into(),
            ));
        };
        let (Ok(rx_size), Ok(tx_size)) =
            (QueueSize::new(RX_RING_SIZE), QueueSize::new(TX_RING_SIZE))
        else {
            return Err(unsupported("ring sizes must be powers of two".into()));
        };
        // A socket sharing the UMEM is bound with XDP_SHARED_UMEM and takes the
        // first socket's copy/zero-copy mode; the flags matter only for the record.
        let bind_flags = if self.zero_copy {
            BindFlags::XDP_ZEROCOPY
        } else {
            BindFlags::XDP_COPY
        }
        .union(BindFlags::XDP_USE_NEED_WAKEUP);
        let config = SocketConfig::builder()
            .rx_queue_size(rx_size)
            .tx_queue_size(tx_size)
            .xdp_flags(self.xdp.flags)
            .bind_flags(bind_flags)
            .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
            .build();
        // SAFETY: INHIBIT_PROG_LOAD is set, and (interface, queue) is bound by no
        // other socket of ours: the interface's claim is held by this port, which
        // binds queue 0 only, and the multi-queue port opens each queue once.
        let (tx, rx, fq_cq) = unsafe { Socket::new(config, &umem, &iface, queue) }
            .map_err(|e| unsupported(format!("queue {queue}: {}", explain(&e))))?;
        let Some((fq, cq)) = fq_cq else {
            return Err(unsupported(format!(
                "queue {queue} is already bound from this pool"
            )));
        };
        let fd = rx.fd().as_raw_fd();
        filter.add_socket(queue, fd).map_err(|e| {
            unsupported(format!(
                "queue {queue}: adding the socket to the filter's map: {e}"
            ))
        })?;
        let zero_copy = kernel_zero_copy(fd).unwrap_or(self.zero_copy);
        Ok(AfXdpPort {
            rings: ManuallyDrop::new(Rings { rx, tx, fq, cq }),
            fd,
            port_no: self.port_no,
            zero_copy,
            scratch: vec![FrameDesc::default(); SCRATCH].into_boxed_slice(),
            rx_held: 0,
            tx_held: 0,
            fill_target: self.fill_target,
            rx_idle: true,
            gone: false,
            counters: AfXdpCounters::default(),
            netns: current_netns()?,
            // Not the program's owner: nothing to detach when this socket goes.
            xdp: XdpWatch {
                ifindex,
                flags: self.xdp.flags,
                before: None,
                ours: None,
            },
            filter: None,
            _claim: None,
        })
    }

    /// Frames this port has lent to the kernel (fill, RX, TX and completion rings).
    pub fn kernel_held(&self) -> u32 {
        self.rx_held + self.tx_held
    }

    /// Frames handed to the TX ring whose completion was not reaped yet.
    pub fn tx_in_flight(&self) -> u32 {
        self.tx_held
    }

    pub fn counters(&self) -> AfXdpCounters {
        self.counters
    }

    /// Whether the kernel currently asks for a wake-up on the fill and TX rings.
    pub fn wakeup_flags(&self) -> (bool, bool) {
        (self.rings.fq.needs_wakeup(), self.rings.tx.needs_wakeup())
    }

    pub fn zero_copy(&self) -> bool {
        self.zero_copy
    }

    /// The id of the XDP program seen on the interface right after binding.
    pub fn xdp_prog_id(&self) -> Option<u32> {
        self.xdp.ours
    }

    /// True once the socket lost its interface (deleted): transmit drops everything.
    pub fn is_gone(&self) -> bool {
        self.gone
    }

    /// Starts transmission of what is on the TX ring: in copy mode this `sendto`
    /// *is* the transmit, completions are written before it returns.
    fn kick_tx(&mut self) {
        self.counters.tx_kicks += 1;
        // xsk-rs already treats EAGAIN/EBUSY/ENOBUFS (budget spent, queue busy) and
        // ENETDOWN (link down; frames wait on the ring) as success.
        if let Err(e) = self.rings.tx.wakeup() {
            match e.raw_os_error() {
                // Not bound any more: the interface was deleted under us.
                Some(libc::ENXIO) | Some(libc::ENODEV) => self.gone = true,
                _ => self.counters.tx_errors += 1,
            }
        }
    }

    /// Returns completed TX frames to the pool. Returns how many.
    fn reap_completions(&mut self, pool: &mut FramePool) -> u32 {
        let mut total = 0;
        loop {
            // SAFETY: the completion ring hands back addresses of this UMEM only;
            // the descriptors are plain values copied into our scratch array.
            let n = unsafe { self.rings.cq.consume(&mut self.scratch) };
            for d in &self.scratch[..n] {
                match pool.idx_of_addr(d.addr()) {
                    Some(idx) => {
                        pool.unlend(idx);
                        pool.free(Frame { idx, len: 0 });
                    }
                    None => self.counters.bad_descs += 1,
                }
            }
            total += n as u32;
            if n < self.scratch.len() {
                break;
            }
        }
        self.tx_held = self.tx_held.saturating_sub(total);
        total
    }

    /// Tops the fill ring up to the target level. Returns how many frames were given.
    fn refill(&mut self, pool: &mut FramePool) -> u32 {
        let missing = self.fill_target.saturating_sub(self.rx_held);
        if missing == 0 || (missing < REFILL_BATCH && self.rx_held >= REFILL_BATCH) {
            return 0;
        }
        // Leave the other half of the free frames to other ports and to the worker.
        let mut want = missing.min((pool.available() / 2) as u32);
        let mut given = 0;
        while want > 0 {
            let room = self.rings.fq.nb_free(want.min(SCRATCH as u32));
            let n = want.min(room).min(SCRATCH as u32) as usize;
            let mut k = 0;
            while k < n {
                let Some(f) = pool.alloc() else { break };
                let Some(d) = pool.to_xdp_desc(&f) else {
                    pool.free(f);
                    break;
                };
                pool.lend(f.idx, self.port_no);
                self.scratch[k] = d;
                k += 1;
            }
            if k == 0 {
                break;
            }
            // SAFETY: the frames were free in the pool (nobody else refers to them)
            // and are lent to this ring now; they belong to the socket's UMEM.
            let produced = unsafe { self.rings.fq.produce(&self.scratch[..k]) };
            // `produce` is all-or-nothing and `room` said there is space; should it
            // refuse anyway, the frames go straight back.
            if produced == 0 {
                for d in &self.scratch[..k] {
                    if let Some(idx) = pool.idx_of_addr(d.addr()) {
                        pool.unlend(idx);
                        pool.free(Frame { idx, len: 0 });
                    }
                }
                break;
            }
            given += k as u32;
            want -= k as u32;
            if k < n || n < SCRATCH {
                break;
            }
        }
        self.rx_held += given;
        given
    }

    /// Frees every frame of `frames` as dropped.
    fn drop_all(pool: &mut FramePool, frames: &mut Vec<Frame>, out: &mut TxOutcome) {
        for f in frames.drain(..) {
            if f.idx < pool.capacity() {
                pool.free(f);
            }
            out.dropped += 1;
        }
    }

    /// Puts the first `k` scratch descriptors (frames already lent) on the TX ring.
    #[inline]
    fn produce_tx(&mut self, pool: &mut FramePool, k: usize, o: &mut TxOutcome) {
        if k == 0 {
            return;
        }
        // SAFETY: the frames were handed to us by the caller (no one else refers to
        // them), belong to this socket's UMEM, and are lent to this ring from now on.
        let done = unsafe { self.rings.tx.produce(&self.scratch[..k]) };
        // `produce` is all-or-nothing and `nb_free` counted the room, so it takes
        // all; should it refuse anyway, the frames come straight back as drops.
        for d in &self.scratch[..k] {
            if done == 0 {
                if let Some(idx) = pool.idx_of_addr(d.addr()) {
                    pool.unlend(idx);
                    pool.free(Frame { idx, len: 0 });
                }
                o.dropped += 1;
            } else {
                o.sent += 1;
                o.bytes += d.lengths().data() as u64;
            }
        }
        self.tx_held += done as u32;
    }
}

use xdp_filter::XDP_FLAGS_REPLACE;

/// The XDP program on an interface, before our socket and right after it.
///
/// A safety net behind libxdp: if after our socket is deleted the interface still
/// carries exactly the program we saw appear, and it had none before, the program
/// is ours and is detached. Not seen to trigger (libxdp 1.6, kernel 6.18, veth,
/// both modes, with and without bpffs); there to cover libxdp's dispatcher path,
/// which could not be exercised here (the kernel offers no BPF_PROG_TYPE_EXT).
struct XdpWatch {
    ifindex: u32,
    flags: XdpFlags,
    before: Option<u32>,
    ours: Option<u32>,
}

impl XdpWatch {
    /// Call in the interface's namespace, after the socket was deleted.
    fn detach_leftover(&self) {
        let (Some(0), Some(ours)) = (self.before, self.ours) else {
            return;
        };
        if ours == 0 || query_xdp_prog(self.ifindex, self.flags) != Some(ours) {
            return;
        }
        // SAFETY: plain libbpf calls with valid arguments; the fd we get is closed
        // below and `opts` outlives the call that reads it.
        let rc = unsafe {
            let fd = libxdp_sys::bpf_prog_get_fd_by_id(ours);
            if fd < 0 {
                return;
            }
            let opts = xdp_filter::attach_opts(fd);
            let flags = self.flags.bits() | XDP_FLAGS_REPLACE;
            let rc = libxdp_sys::bpf_xdp_detach(self.ifindex as i32, flags, &*opts);
            libc::close(fd);
            rc
        };
        tracing::warn!(
            ifindex = self.ifindex,
            prog = ours,
            rc,
            "libxdp left its XDP program attached; detached it"
        );
    }
}

/// The id of the XDP program attached in `flags`' mode (0: none), `None` if unknown.
fn query_xdp_prog(ifindex: u32, flags: XdpFlags) -> Option<u32> {
    xdp_filter::query_prog(ifindex, flags.bits())
}

/// The kernel's reason behind a socket creation error, without libc's decoration.
fn explain(e: &xsk_rs::socket::SocketCreateError) -> String {
    use std::error::Error;
    let Some(src) = e.source() else {
        return e.to_string();
    };
    let text = src.to_string();
    let mut reason = match text.find(" (os error") {
        Some(i) => text[..i].to_string(),
        None => text.clone(),
    };
    let errno = src
        .downcast_ref::<io::Error>()
        .and_then(io::Error::raw_os_error);
    if matches!(
        errno,
        Some(libc::ENOMEM | libc::EBADF | libc::EINVAL | libc::EBUSY)
    ) {
        reason.push_str(
            " (if this worker's pool had AF_XDP sockets before, its first socket may be \
             closed or unbound; see \"The pool's first socket\" in port/afxdp.rs)",
        );
    }
    reason
}

/// Whether the kernel runs the socket in zero-copy mode (`XDP_OPTIONS`, Linux 5.3+).
fn kernel_zero_copy(fd: RawFd) -> Option<bool> {
    let mut flags: u32 = 0;
    let mut len = size_of::<u32>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into a live local; `fd` is the
    // socket just created.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_XDP,
            libc::XDP_OPTIONS,
            (&mut flags as *mut u32).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(flags & libc::XDP_OPTIONS_ZEROCOPY != 0)
}

/// Lets one copy-mode `sendto` transmit up to a whole TX ring instead of 32 frames.
fn raise_tx_budget(fd: RawFd) {
    let budget: u32 = TX_RING_SIZE;
    // SAFETY: setsockopt reads `size_of::<u32>()` bytes from a live local; the fd is
    // the socket we just created. Failure (older kernel) leaves the default.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_XDP,
            XDP_MAX_TX_SKB_BUDGET,
            (&budget as *const u32).cast(),
            size_of::<u32>() as libc::socklen_t,
        );
    }
}

impl Port for AfXdpPort {
    fn set_rx_budget(&mut self, frames: u32) {
        self.fill_target = frames.clamp(MIN_FILL, FILL_TARGET);
    }

    #[inline]
    fn rx_batch(&mut self, pool: &mut FramePool, out: &mut Vec<Frame>, max: usize) -> usize {
        let mut got = 0;
        while got < max {
            let want = (max - got).min(SCRATCH);
            // SAFETY: the RX ring hands out addresses of this UMEM only; we copy the
            // descriptors out and validate each against the pool below.
            let n = unsafe { self.rings.rx.consume(&mut self.scratch[..want]) };
            for d in &self.scratch[..n] {
                match pool.from_xdp_desc(d) {
                    Some(f) => {
                        pool.unlend(f.idx);
                        out.push(f);
                        got += 1;
                    }
                    None => {
                        // Not where an aligned UMEM puts data: the frame (if any)
                        // still came back to us, so it returns to the pool.
                        self.counters.bad_descs += 1;
                        if let Some(idx) = pool.idx_of_addr(d.addr()) {
                            pool.unlend(idx);
                            pool.free(Frame { idx, len: 0 });
                        }
                    }
                }
            }
            self.rx_held = self.rx_held.saturating_sub(n as u32);
            if n < want {
                break;
            }
        }
        self.rx_idle = got == 0;
        got
    }

    #[inline]
    fn tx_batch(&mut self, pool: &mut FramePool, frames: &mut Vec<Frame>) -> TxOutcome {
        let mut o = TxOutcome::default();
        if frames.is_empty() {
            return o;
        }
        if self.gone {
            Self::drop_all(pool, frames, &mut o);
            return o;
        }
        let len = frames.len() as u32;
        let mut room = self.rings.tx.nb_free(len);
        if room < len && self.tx_held > 0 {
            // Ring full: ask the kernel to take what it has not taken yet and collect
            // what it finished, before dropping anything.
            self.kick_tx();
            self.reap_completions(pool);
            room = self.rings.tx.nb_free(len);
        }
        let mut room = room as usize;
        let mut k = 0;
        for f in frames.drain(..) {
            // A zero-length descriptor is invalid: the kernel would skip it without
            // ever completing it, so the frame would be lost until the port goes.
            let desc = if room > 0 && f.len > 0 {
                pool.to_xdp_desc(&f)
            } else {
                None
            };
            let Some(d) = desc else {
                if f.idx < pool.capacity() {
                    pool.free(f);
                }
                o.dropped += 1;
                continue;
            };
            pool.lend(f.idx, self.port_no);
            self.scratch[k] = d;
            k += 1;
            room -= 1;
            if k == SCRATCH {
                self.produce_tx(pool, k, &mut o);
                k = 0;
            }
        }
        self.produce_tx(pool, k, &mut o);
        // One kick for the whole batch: in copy mode this is the transmit itself.
        if o.sent > 0 && self.rings.tx.needs_wakeup() {
            self.kick_tx();
        }
        o
    }

    #[inline]
    fn maintain(&mut self, pool: &mut FramePool) {
        let reaped = if self.tx_held > 0 {
            self.reap_completions(pool)
        } else {
            0
        };
        if self.tx_held > 0 && reaped == 0 && !self.gone && self.rings.tx.needs_wakeup() {
            // Nothing completed: if descriptors are still waiting on the TX ring the
            // last kick ran out of budget or met a busy queue; kick again. Frames
            // the kernel already took complete on their own (skb freed).
            if self.rings.tx.nb_free_exact() < TX_RING_SIZE {
                self.kick_tx();
                self.reap_completions(pool);
            }
        }
        if self.gone {
            return;
        }
        let given = self.refill(pool);
        if (given > 0 || self.rx_idle) && self.rings.fq.needs_wakeup() {
            self.counters.fill_wakeups += 1;
            let rings = &mut *self.rings;
            // Only a zero-copy driver sets this flag; poll() runs its NAPI. A
            // failing poll changes nothing we could act on.
            let _ = rings.fq.wakeup(rings.rx.fd_mut(), 0);
        }
    }

    fn poll_fd(&self) -> Option<RawFd> {
        Some(self.fd)
    }

    fn kernel_drops(&self) -> u64 {
        let Ok(s) = self.rings.rx.fd().xdp_statistics() else {
            return 0;
        };
        // rx_dropped: no fill frame (copy mode) or frame too long; rx_ring_full: our RX
        // ring was full. In copy mode an empty fill ring is already in rx_dropped;
        // a zero-copy driver instead drops in hardware, which only shows up as
        // "found the fill ring empty" events, the best count there is.
        let fill_empty = if self.zero_copy {
            s.rx_fill_ring_empty_descs()
        } else {
            0
        };
        s.rx_dropped() + s.rx_ring_full() + fill_empty
    }

    fn release(&mut self, pool: &mut FramePool) {
        // Frames still lent (fill/RX/TX rings) are reclaimed by the worker through
        // the pool's lending record once the socket is gone; completed ones can go
        // back now.
        self.reap_completions(pool);
    }
}

impl Drop for AfXdpPort {
    fn drop(&mut self) {
        // libxdp detaches the XDP program with netlink calls in this thread's
        // namespace, by interface index: run the deletion where the socket was made.
        let here = current_netns().ok();
        let elsewhere = match (&here, netns_id(&self.netns)) {
            (Some(h), Ok(ours)) => netns_id(h).map(|id| id != ours).unwrap_or(true),
            _ => true,
        };
        let switched = elsewhere && here.is_some() && setns(&self.netns).is_ok();
        // SAFETY: the rings are taken exactly once, here, and never touched again.
        drop(unsafe { ManuallyDrop::take(&mut self.rings) });
        if switched || !elsewhere {
            match self.filter.as_mut() {
                // Our own program: detach it, but only if it is still the one there.
                Some(f) => {
                    f.detach();
                }
                None => self.xdp.detach_leftover(),
            }
        }
        // Closing the program's descriptors (if detach could not run, the program
        // stays, with no socket in its map: it passes everything to the host).
        drop(self.filter.take());
        if switched {
            let back = here.as_ref().map(setns);
            if !matches!(back, Some(Ok(()))) {
                tracing::error!(
                    "AF_XDP port teardown could not return to the worker's network namespace"
                );
            }
        }
    }
}

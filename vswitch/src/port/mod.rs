//! Ports: one batch-oriented trait (ixy.rs style) for every way the switch reads and
//! writes an interface.
//!
//! | module | mode | data path |
//! | --- | --- | --- |
//! | [`afxdp`] | `xdp-drv`, `xdp-skb` | AF_XDP socket on the worker's shared UMEM: RX and TX move frame descriptors |
//! | [`packet`] | `packet` | AF_PACKET socket, `recvmmsg`/`sendmmsg` straight into/out of pool frames |
//! | [`memory`] | `memory` | in-process queues, for tests and micro benchmarks |
//! | [`multiqueue`] | `xdp-drv`, `xdp-skb` | the uplink on a multi-queue NIC: one AF_XDP socket per RX queue |
//!
//! A port is owned by exactly one poll worker and only ever touched by that thread
//! (a multi-queue uplink's sockets included).

pub mod afxdp;
pub mod anchor;
pub mod fastpath;
pub mod fastpath_nat;
pub mod fastpath_tunnel;
pub mod memory;
pub mod multiqueue;
pub mod netdev;
pub mod packet;
pub mod xdp_filter;

use crate::pool::{Frame, FramePool, UmemHandle};
use std::os::fd::RawFd;
use vswitch_proto::PortMode;

/// Most frames one `rx_batch` call returns.
pub const BATCH_SIZE: usize = 64;

/// Why a port could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("no interface named '{0}'")]
    NoSuchInterface(String),
    #[error("{mode} not possible on '{name}': {reason}")]
    Unsupported {
        name: String,
        mode: PortMode,
        reason: String,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Result of a transmit call.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TxOutcome {
    /// Frames handed to the device.
    pub sent: u32,
    /// Bytes of those frames.
    pub bytes: u64,
    /// Frames that did not fit (TX ring full / would block); already freed.
    pub dropped: u32,
}

/// Frames a port took from the kernel but could not hand to the worker, one counter
/// per reason, cumulative (Firecracker style). The kernel's own drops (queue full
/// before the switch read) are [`Port::kernel_drops`], not here.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RxDrops {
    /// Longer than a pool buffer ([`crate::pool::MAX_FRAME_LEN`]): jumbo frames and
    /// unsegmented GSO/GRO super-frames.
    pub oversize: u64,
    /// Delivered in a state the port could not repair (e.g. a partial checksum whose
    /// offsets lie outside the frame).
    pub malformed: u64,
    /// Receive calls that failed with something other than "nothing to read"
    /// (each may have cost frames the kernel then discarded).
    pub errors: u64,
}

/// What a port found out about its interface when it was opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortAttachment {
    pub mode: PortMode,
    pub zero_copy: bool,
    pub ifindex: u32,
    pub mac: [u8; 6],
    pub mtu: u32,
    /// The uplink filter program's parameters, when the port runs it
    /// (`xdp_filter`); the control thread updates its node addresses.
    pub filter: Option<std::sync::Arc<xdp_filter::FilterHandle>>,
}

/// Which XDP program an AF_XDP port runs.
#[derive(Debug, Clone, Default)]
pub enum XdpProgram {
    /// libxdp's default: every frame of the queue goes to the socket (pods).
    #[default]
    RedirectAll,
    /// The uplink filter; the port fails if it cannot be loaded or attached.
    Filter(xdp_filter::FilterParams),
    /// The uplink filter, or `RedirectAll` (with a warning) if it cannot be had.
    FilterOrAll(xdp_filter::FilterParams),
    /// The in-kernel fast path (`bpf/port_fastpath.c`) sharing these maps; the port
    /// fails if it cannot be loaded or attached (see port/fastpath.rs).
    FastPath(std::sync::Arc<fastpath::FastPath>),
    /// The uplink filter sharing the fast path's maps: it also decapsulates the
    /// tunnel frames the fast path has entries for (port/fastpath_tunnel.rs).
    FilterFastPath(xdp_filter::FilterParams, std::sync::Arc<fastpath::FastPath>),
}

impl PartialEq for XdpProgram {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (XdpProgram::RedirectAll, XdpProgram::RedirectAll) => true,
            (XdpProgram::Filter(a), XdpProgram::Filter(b)) => a == b,
            (XdpProgram::FilterOrAll(a), XdpProgram::FilterOrAll(b)) => a == b,
            (XdpProgram::FastPath(a), XdpProgram::FastPath(b)) => std::sync::Arc::ptr_eq(a, b),
            (XdpProgram::FilterFastPath(p, a), XdpProgram::FilterFastPath(q, b)) => {
                p == q && std::sync::Arc::ptr_eq(a, b)
            }
            _ => false,
        }
    }
}
impl Eq for XdpProgram {}

/// A switch port as a poll worker drives it.
///
/// Frame ownership: `rx_batch` hands the worker frames of the worker's pool;
/// `tx_batch` takes every frame it is given: sent frames go back to the pool when the
/// device is done with them (at once for copying ports, on TX completion for AF_XDP),
/// frames that did not fit are freed at once and reported in [`TxOutcome::dropped`].
pub trait Port: Send {
    /// Appends up to `max` received frames to `out`. Returns how many.
    fn rx_batch(&mut self, pool: &mut FramePool, out: &mut Vec<Frame>, max: usize) -> usize;

    /// Transmits and drains `frames`.
    fn tx_batch(&mut self, pool: &mut FramePool, frames: &mut Vec<Frame>) -> TxOutcome;

    /// Per-iteration housekeeping: reap TX completions, refill receive buffers, kick
    /// the kernel where it asked for a wake-up. Cheap when there is nothing to do.
    fn maintain(&mut self, pool: &mut FramePool);

    /// A descriptor that becomes readable when frames arrive, for sleeping in
    /// poll(2) when idle. `None`: the port must be polled (the worker never sleeps
    /// long while such a port exists).
    fn poll_fd(&self) -> Option<RawFd>;

    /// Further descriptors to sleep on besides [`Port::poll_fd`] (the other RX
    /// queues' sockets of a multi-queue uplink).
    fn extra_poll_fds(&self) -> &[RawFd] {
        &[]
    }

    /// Frames the kernel dropped before the switch saw them (AF_XDP statistics),
    /// cumulative. Read by the worker now and then, not per packet.
    fn kernel_drops(&self) -> u64 {
        0
    }

    /// Frames this port received but dropped itself, by reason, cumulative. Read by
    /// the worker now and then, not per packet.
    fn rx_drops(&self) -> RxDrops {
        RxDrops::default()
    }

    /// How many pool frames the port may keep lent to the kernel for receiving.
    /// The worker divides its pool among its ports and calls this whenever ports
    /// come or go, so fifty pods on one worker all get receive buffers.
    fn set_rx_budget(&mut self, frames: u32) {
        let _ = frames;
    }

    /// Called once, right before the port is dropped: return every frame the port
    /// still holds in user space to the pool (kernel-held frames are reclaimed by
    /// the worker through the pool's lending record).
    fn release(&mut self, pool: &mut FramePool) {
        let _ = pool;
    }
}

/// Opens a port on interface `name` in `mode` (never `Auto` or `Memory` here), on a
/// worker whose pool is `pool`. `port_no` tags the frames the port lends to the kernel.
pub fn open(
    name: &str,
    mode: PortMode,
    umem: Option<&UmemHandle>,
    port_no: u32,
    prog: &XdpProgram,
) -> Result<(Box<dyn Port>, PortAttachment), PortError> {
    match mode {
        PortMode::XdpDrv | PortMode::XdpSkb => {
            let (port, att): (afxdp::AfXdpPort, PortAttachment) = {
                let umem = umem.ok_or_else(|| PortError::Unsupported {
                    name: name.to_string(),
                    mode,
                    reason: "this worker has no UMEM (AF_XDP unavailable)".into(),
                })?;
                match prog {
                    XdpProgram::RedirectAll => afxdp::AfXdpPort::open(name, mode, umem, port_no)?,
                    XdpProgram::Filter(p) => afxdp::AfXdpPort::open_with(
                        name,
                        mode,
                        umem,
                        port_no,
                        Some(afxdp::OwnProgram::Filter(*p)),
                    )?,
                    XdpProgram::FilterFastPath(p, fp) => afxdp::AfXdpPort::open_with(
                        name,
                        mode,
                        umem,
                        port_no,
                        Some(afxdp::OwnProgram::FilterFastPath(*p, fp.clone())),
                    )?,
                    XdpProgram::FastPath(fp) => afxdp::AfXdpPort::open_with(
                        name,
                        mode,
                        umem,
                        port_no,
                        Some(afxdp::OwnProgram::FastPath(fp.clone())),
                    )?,
                    XdpProgram::FilterOrAll(p) => {
                        let own = Some(afxdp::OwnProgram::Filter(*p));
                        match afxdp::AfXdpPort::open_with(name, mode, umem, port_no, own) {
                            Ok(x) => x,
                            Err(PortError::NoSuchInterface(n)) => {
                                return Err(PortError::NoSuchInterface(n));
                            }
                            Err(e) => {
                                tracing::warn!(port = name, %mode, error = %e, "uplink filter unavailable; redirecting ALL frames of the queue to the switch, as configured (xdp_filter = full-if-unavailable)");
                                afxdp::AfXdpPort::open(name, mode, umem, port_no)?
                            }
                        }
                    }
                }
            };
            // The uplink filter (and only it) serves every RX queue of a multi-queue
            // NIC; with one queue the port is the plain single-socket one.
            let queues = if att.filter.is_some() {
                multiqueue::queues_of(name)
            } else {
                1
            };
            if queues > 1 {
                let umem = umem.ok_or_else(|| PortError::Unsupported {
                    name: name.to_string(),
                    mode,
                    reason: "this worker has no UMEM (AF_XDP unavailable)".into(),
                })?;
                let mq = multiqueue::MultiQueuePort::open(port, name, mode, umem, queues)?;
                return Ok((Box::new(mq), att));
            }
            Ok((Box::new(port), att))
        }
        PortMode::Packet => {
            let (port, att) = packet::PacketPort::open(name)?;
            Ok((Box::new(port), att))
        }
        PortMode::Auto | PortMode::Memory => Err(PortError::Unsupported {
            name: name.to_string(),
            mode,
            reason: "not an openable mode".into(),
        }),
    }
}

/// Opens a port, trying driver-mode AF_XDP, then skb-mode AF_XDP, then AF_PACKET
/// when `requested` is `Auto`. Returns the errors of the modes that failed too, so
/// the choice can be reported.
// The tuple is the port, what it found, and why the better modes failed; naming it
// would hide that more than it helps.
#[allow(clippy::type_complexity)]
pub fn open_with_fallback(
    name: &str,
    requested: PortMode,
    umem: Option<&UmemHandle>,
    port_no: u32,
    prog: &XdpProgram,
) -> Result<(Box<dyn Port>, PortAttachment, Vec<String>), PortError> {
    if requested != PortMode::Auto {
        return open(name, requested, umem, port_no, prog).map(|(p, a)| (p, a, Vec::new()));
    }
    let mut tried = Vec::new();
    let mut last = None;
    for mode in [PortMode::XdpDrv, PortMode::XdpSkb, PortMode::Packet] {
        match open(name, mode, umem, port_no, prog) {
            Ok((p, a)) => return Ok((p, a, tried)),
            Err(PortError::NoSuchInterface(n)) => return Err(PortError::NoSuchInterface(n)),
            Err(e) => {
                tried.push(format!("{mode}: {e}"));
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or_else(|| PortError::NoSuchInterface(name.to_string())))
}

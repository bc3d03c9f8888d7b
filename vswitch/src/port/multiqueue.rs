//! The uplink of a multi-queue NIC: one AF_XDP socket per RX queue, one port.
//!
//! RSS spreads the NIC's frames over its RX queues by flow hash. The uplink filter
//! (port/xdp_filter.rs) redirects a frame to the socket in `xsks_map` at the
//! frame's queue index and *passes* it when that slot is empty, so a switch with a
//! socket on queue 0 only would hand every VXLAN or NodePort flow that RSS puts on
//! another queue to the host, which has no VXLAN socket: those flows would silently
//! break. [`MultiQueuePort`] therefore binds one socket per RX queue of the
//! interface (its combined + RX channels, [`netdev::rx_queues`]), each registered
//! in the filter's map at its queue.
//!
//! # One worker polls every queue
//!
//! All the sockets are bound to the UMEM of the worker the uplink belongs to and
//! are owned by this one port, so that worker is their only user (no lock, no
//! sharing: the port is `Send`, never `Sync`). Queues are not spread over workers
//! because a port is the unit the pipeline, its counters, MAC learning and the
//! worker hand-off know; a frame received on any queue is the uplink's frame, and
//! forwarding it to a pod port of the same worker stays a descriptor move on the
//! same UMEM. The cost: the uplink's receive work is one core's, as it was with
//! one queue; what changes is that no queue's frames leak to the host.
//!
//! # What each queue does
//!
//! - RX: [`Port::rx_batch`] reads the queues round-robin, starting one further
//!   each call, so a busy queue cannot starve the others.
//! - TX: every frame leaves through queue 0's socket (the one that holds the
//!   program); the further sockets only receive, so their TX rings stay empty.
//! - Fill: the worker's receive budget for the port is split evenly over the
//!   queues (each keeps at least [`super::afxdp::MIN_FILL`]).
//! - Counters (kernel drops, receive drops) are summed over the queues; the
//!   pipeline counts the port's frames as one port's.
//! - Waking: queue 0's descriptor is [`Port::poll_fd`], the others are
//!   [`Port::extra_poll_fds`]; the worker sleeps on all of them.
//! - Teardown: the further sockets go first (the kernel removes each from the
//!   map), then queue 0's port, which detaches the program.
//!
//! With one RX queue nothing of this is used: `port::open` returns the plain
//! [`AfXdpPort`], exactly as before.

use super::afxdp::AfXdpPort;
use super::{Port, PortError, RxDrops, TxOutcome, netdev, xdp_filter};
use crate::pool::{AsUmem, Frame, FramePool};
use std::os::fd::RawFd;
use vswitch_proto::PortMode;

/// The most queues the filter's `xsks_map` has slots for.
pub const MAX_QUEUES: u32 = xdp_filter::XSKS_MAP_ENTRIES;

/// How many RX queues the uplink `name` needs sockets on (at least 1, at most
/// [`MAX_QUEUES`]; frames on queues beyond that would pass to the host, which is
/// logged).
pub fn queues_of(name: &str) -> u32 {
    let n = netdev::rx_queues(name).unwrap_or(1).max(1);
    if n > MAX_QUEUES {
        tracing::error!(
            port = name,
            queues = n,
            served = MAX_QUEUES,
            "the uplink has more RX queues than the filter has socket slots; frames on the others reach the host"
        );
    }
    n.min(MAX_QUEUES)
}

/// Queue 0's port plus one receive-only socket per further RX queue.
pub struct MultiQueuePort {
    /// Queues 1..n, in order. Declared before `first`, so dropped before it: the
    /// program stays attached until the last of its sockets is gone.
    rest: Vec<AfXdpPort>,
    /// Queue 0: holds the filter program and the interface's claim; transmits.
    first: AfXdpPort,
    /// Descriptors of `rest`, for the worker's poll.
    fds: Vec<RawFd>,
    /// Where the next `rx_batch` starts (0 = `first`).
    next: usize,
}

impl MultiQueuePort {
    /// Opens sockets on queues 1..`queues` of `name` beside `first` (queue 0, opened
    /// with the uplink filter). Any queue that cannot be bound fails the port:
    /// serving some queues only would silently lose the others' flows to the host.
    pub fn open(
        first: AfXdpPort,
        name: &str,
        mode: PortMode,
        pool: &impl AsUmem,
        queues: u32,
    ) -> Result<MultiQueuePort, PortError> {
        let mut rest = Vec::with_capacity(queues.saturating_sub(1) as usize);
        for q in 1..queues {
            // On error `rest` and then `first` drop here, in that order.
            rest.push(first.open_queue(name, mode, pool, q)?);
        }
        let fds = rest.iter().filter_map(|p| p.poll_fd()).collect();
        tracing::info!(
            port = name,
            queues,
            "uplink: one AF_XDP socket per RX queue"
        );
        Ok(MultiQueuePort {
            rest,
            first,
            fds,
            next: 0,
        })
    }

    /// How many queues (sockets) the port serves.
    pub fn queues(&self) -> usize {
        1 + self.rest.len()
    }

    fn queue_mut(&mut self, i: usize) -> &mut AfXdpPort {
        match i.checked_sub(1).and_then(|j| self.rest.get_mut(j)) {
            Some(p) => p,
            None => &mut self.first,
        }
    }
}

impl Port for MultiQueuePort {
    fn rx_batch(&mut self, pool: &mut FramePool, out: &mut Vec<Frame>, max: usize) -> usize {
        let n = self.queues();
        let start = self.next;
        self.next = (self.next + 1) % n;
        let mut got = 0;
        for k in 0..n {
            if got >= max {
                break;
            }
            got += self
                .queue_mut((start + k) % n)
                .rx_batch(pool, out, max - got);
        }
        got
    }

    fn tx_batch(&mut self, pool: &mut FramePool, frames: &mut Vec<Frame>) -> TxOutcome {
        self.first.tx_batch(pool, frames)
    }

    fn maintain(&mut self, pool: &mut FramePool) {
        self.first.maintain(pool);
        for q in &mut self.rest {
            q.maintain(pool);
        }
    }

    fn poll_fd(&self) -> Option<RawFd> {
        self.first.poll_fd()
    }

    fn extra_poll_fds(&self) -> &[RawFd] {
        &self.fds
    }

    fn kernel_drops(&self) -> u64 {
        self.rest
            .iter()
            .fold(self.first.kernel_drops(), |a, q| a + q.kernel_drops())
    }

    fn rx_drops(&self) -> RxDrops {
        let mut d = self.first.rx_drops();
        for q in &self.rest {
            let e = q.rx_drops();
            d.oversize += e.oversize;
            d.malformed += e.malformed;
            d.errors += e.errors;
        }
        d
    }

    fn set_rx_budget(&mut self, frames: u32) {
        let each = frames / self.queues() as u32;
        self.first.set_rx_budget(each);
        for q in &mut self.rest {
            q.set_rx_budget(each);
        }
    }

    fn release(&mut self, pool: &mut FramePool) {
        for q in &mut self.rest {
            q.release(pool);
        }
        self.first.release(pool);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn loopback_has_one_queue_or_none() {
        // `lo` reports no channels: the uplink would get one socket.
        assert!(matches!(super::netdev::rx_queues("lo"), None | Some(1)));
        assert_eq!(super::queues_of("no-such-if0"), 1);
    }
}

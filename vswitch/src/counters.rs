//! Always-on counters. Each counter has exactly one writer (the poll worker that owns
//! the port, or the worker itself), so an update is a relaxed load and store on a
//! cache line no other core writes: no atomic read-modify-write, no lock. Workers add
//! per batch, not per frame. Readers (the control thread) sum on demand.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use vswitch_proto::{DropCounters, DropReason, PortStats, SwitchStats, WorkerStats};

/// Adds to a single-writer counter.
#[inline]
fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
}

/// A typed set of drop counters.
#[derive(Default)]
pub struct DropSet([AtomicU64; DropReason::COUNT]);

impl DropSet {
    #[inline]
    pub fn add(&self, reason: DropReason, n: u64) {
        bump(&self.0[reason as usize], n);
    }

    pub fn read(&self) -> DropCounters {
        let mut a = [0u64; DropReason::COUNT];
        for (v, c) in a.iter_mut().zip(&self.0) {
            *v = c.load(Relaxed);
        }
        DropCounters::from_array(&a)
    }
}

/// Per port, written by the worker that owns the port.
#[repr(align(128))]
#[derive(Default)]
pub struct PortCounters {
    rx_packets: AtomicU64,
    rx_bytes: AtomicU64,
    tx_packets: AtomicU64,
    tx_bytes: AtomicU64,
    pub drops: DropSet,
}

impl PortCounters {
    #[inline]
    pub fn add_rx(&self, packets: u64, bytes: u64) {
        bump(&self.rx_packets, packets);
        bump(&self.rx_bytes, bytes);
    }

    #[inline]
    pub fn add_tx(&self, packets: u64, bytes: u64) {
        bump(&self.tx_packets, packets);
        bump(&self.tx_bytes, bytes);
    }

    pub fn read(&self, name: &str, port_no: u32) -> PortStats {
        PortStats {
            name: name.to_string(),
            port_no,
            rx_packets: self.rx_packets.load(Relaxed),
            rx_bytes: self.rx_bytes.load(Relaxed),
            tx_packets: self.tx_packets.load(Relaxed),
            tx_bytes: self.tx_bytes.load(Relaxed),
            fastpath_rx_packets: 0,
            fastpath_tx_packets: 0,
            drops: self.drops.read(),
        }
    }
}

/// Per worker: loop figures and bridge counters, written by that worker.
#[repr(align(128))]
#[derive(Default)]
pub struct WorkerCounters {
    pub busy_iterations: AtomicU64,
    pub idle_iterations: AtomicU64,
    pub sleeps: AtomicU64,
    pub rx_packets: AtomicU64,
    pub rx_batches: AtomicU64,
    pub ports: AtomicU64,
    pub mac_entries: AtomicU64,
    pub mac_learned: AtomicU64,
    pub mac_moved: AtomicU64,
    pub mac_aged: AtomicU64,
    pub mac_table_full: AtomicU64,
    pub flooded: AtomicU64,
    pub drops: DropSet,
    /// Nanoseconds spent in iterations that moved frames / that moved none
    /// (sleeping included), from the clock read each iteration already makes.
    pub busy_ns: AtomicU64,
    pub idle_ns: AtomicU64,
    /// Receive batches by size: bucket `b` counts batches of `2^b ..= 2^(b+1)-1`
    /// frames (the last bucket: 64 and more).
    pub batch_sizes: [AtomicU64; BATCH_BUCKETS],
}

/// Buckets of [`WorkerCounters::batch_sizes`].
pub const BATCH_BUCKETS: usize = 7;

/// The batch-size bucket of a batch of `n` (>= 1) frames.
#[inline]
pub fn batch_bucket(n: usize) -> usize {
    let b = (usize::BITS - 1 - (n | 1).leading_zeros()) as usize;
    b.min(BATCH_BUCKETS - 1)
}

impl WorkerCounters {
    #[inline]
    pub fn add(c: &AtomicU64, n: u64) {
        bump(c, n);
    }

    pub fn read(&self, id: usize, core: Option<usize>) -> WorkerStats {
        WorkerStats {
            id,
            core,
            ports: self.ports.load(Relaxed),
            busy_iterations: self.busy_iterations.load(Relaxed),
            idle_iterations: self.idle_iterations.load(Relaxed),
            sleeps: self.sleeps.load(Relaxed),
            rx_packets: self.rx_packets.load(Relaxed),
            rx_batches: self.rx_batches.load(Relaxed),
            busy_ns: self.busy_ns.load(Relaxed),
            idle_ns: self.idle_ns.load(Relaxed),
            batch_sizes: self.batch_sizes.iter().map(|c| c.load(Relaxed)).collect(),
            cache: Default::default(),
        }
    }

    /// Adds this worker's bridge counters into switch-wide ones.
    pub fn add_to(&self, s: &mut SwitchStats) {
        s.mac_entries = s.mac_entries.max(self.mac_entries.load(Relaxed));
        s.mac_learned += self.mac_learned.load(Relaxed);
        s.mac_moved += self.mac_moved.load(Relaxed);
        s.mac_aged += self.mac_aged.load(Relaxed);
        s.mac_table_full += self.mac_table_full.load(Relaxed);
        s.flooded += self.flooded.load(Relaxed);
        s.drops.add(&self.drops.read());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_buckets() {
        assert_eq!(batch_bucket(1), 0);
        assert_eq!(batch_bucket(2), 1);
        assert_eq!(batch_bucket(3), 1);
        assert_eq!(batch_bucket(4), 2);
        assert_eq!(batch_bucket(63), 5);
        assert_eq!(batch_bucket(64), 6);
        assert_eq!(batch_bucket(1000), 6);
        assert_eq!(batch_bucket(0), 0);
    }
}

//! A flow installed in a table, with its counters.
//!
//! Counters are not bumped per packet: a worker's cache entry counts its own hits
//! and pushes the sums to the rules it was built from during housekeeping (every
//! 250 ms, and when the entry is dropped), like OVS's revalidators. `dump-flows`
//! figures therefore lag by at most that much; idle timeouts work in seconds.

use super::spec::FlowSpec;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Debug, Default)]
pub struct RuleStats {
    packets: AtomicU64,
    bytes: AtomicU64,
    /// Nanoseconds since the datapath epoch of the newest hit (0 = never).
    last_hit_ns: AtomicU64,
}

impl RuleStats {
    /// Adds hits a cache entry counted (several workers may push concurrently).
    pub fn push(&self, packets: u64, bytes: u64, last_hit_ns: u64) {
        if packets == 0 {
            return;
        }
        self.packets.fetch_add(packets, Relaxed);
        self.bytes.fetch_add(bytes, Relaxed);
        self.last_hit_ns.fetch_max(last_hit_ns, Relaxed);
    }

    pub fn packets(&self) -> u64 {
        self.packets.load(Relaxed)
    }
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Relaxed)
    }
    pub fn last_hit_ns(&self) -> u64 {
        self.last_hit_ns.load(Relaxed)
    }
}

/// One flow of a table. Shared (`Arc`) by both copies of the pipeline and by the
/// cache entries built from it.
#[derive(Debug)]
pub struct Rule {
    pub spec: FlowSpec,
    /// Unique for the life of the process (traces and cache attribution).
    pub id: u64,
    /// When it was added, nanoseconds since the datapath epoch.
    pub added_ns: u64,
    pub stats: RuleStats,
}

impl Rule {
    pub fn new(spec: FlowSpec, id: u64, added_ns: u64) -> Rule {
        Rule {
            spec,
            id,
            added_ns,
            stats: RuleStats::default(),
        }
    }

    /// Whether an idle or hard timeout has run out at `now_ns`.
    pub fn expired(&self, now_ns: u64) -> bool {
        let s = &self.spec;
        const NS: u64 = 1_000_000_000;
        if s.hard_timeout > 0 && now_ns >= self.added_ns + u64::from(s.hard_timeout) * NS {
            return true;
        }
        if s.idle_timeout > 0 {
            let last = self.stats.last_hit_ns().max(self.added_ns);
            return now_ns >= last + u64::from(s.idle_timeout) * NS;
        }
        false
    }
}

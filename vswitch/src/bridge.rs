//! The learning bridge's MAC table.
//!
//! Each poll worker keeps its own table (no lock, no shared cache line on lookup);
//! workers tell each other what they learn through bounded channels (see
//! `worker::learning`), so a MAC learned on one worker's port is known to all.
//!
//! Semantics (what an OVS `NORMAL` / Linux bridge user expects):
//! - entries are keyed by (VLAN, MAC) and point at a port;
//! - an entry not refreshed by a frame from that MAC for `aging` is forgotten
//!   (300 s by default); lookups never return an expired entry;
//! - the table holds at most `capacity` entries (8192 by default). When it is full,
//!   expired entries are swept first; if it is still full the new MAC is *not*
//!   learned (counted as `mac_table_full`) and frames to it keep being flooded.
//!   Existing entries are never evicted by newcomers, so a MAC flood from one port
//!   cannot push out the addresses of established pods (the Linux bridge's
//!   `max_learned` behaviour rather than OVS's LRU eviction).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::time::Duration;

use crate::wire::MacAddr;

/// Table defaults.
pub const DEFAULT_AGING: Duration = Duration::from_secs(300);
pub const DEFAULT_CAPACITY: usize = 8192;

/// Key: VLAN id in bits 48..60, MAC in bits 0..48.
#[inline]
pub fn mac_key(mac: MacAddr, vlan: Option<u16>) -> u64 {
    mac.to_u64() | (u64::from(vlan.unwrap_or(0)) << 48)
}

/// A multiply-shift hasher for the 64-bit keys: the std SipHash costs more than
/// the whole rest of a lookup, and keys here are not attacker-chosen collisions
/// over a table bounded at `capacity` entries.
#[derive(Default)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 =
                (self.0.rotate_left(5) ^ u64::from(*b)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }
    #[inline]
    fn write_u64(&mut self, k: u64) {
        self.0 = (k ^ (k >> 29))
            .wrapping_mul(0xbf58_476d_1ce4_e5b9)
            .rotate_left(17);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MacEntry {
    pub port: u32,
    /// Last time a frame from this MAC was seen (ns, the worker's clock).
    pub seen: u64,
    /// Last time this entry was announced to the other workers.
    pub announced: u64,
}

/// What `learn` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learned {
    /// Known on this port; timestamp refreshed.
    Refreshed,
    New,
    /// Moved from another port.
    Moved {
        from: u32,
    },
    /// Not learned: table full.
    Full,
}

pub struct MacTable {
    map: HashMap<u64, MacEntry, BuildHasherDefault<KeyHasher>>,
    aging_ns: u64,
    capacity: usize,
}

impl MacTable {
    pub fn new(aging: Duration, capacity: usize) -> MacTable {
        MacTable {
            map: HashMap::with_capacity_and_hasher(capacity.min(1 << 16), Default::default()),
            aging_ns: aging.as_nanos().min(u128::from(u64::MAX)) as u64,
            capacity,
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn aging_ns(&self) -> u64 {
        self.aging_ns
    }

    /// Records that `key` was seen on `port` at `now`.
    #[inline]
    pub fn learn(&mut self, key: u64, port: u32, now: u64) -> Learned {
        if let Some(e) = self.map.get_mut(&key) {
            let from = e.port;
            e.seen = e.seen.max(now);
            if from == port {
                return Learned::Refreshed;
            }
            e.port = port;
            e.announced = 0;
            return Learned::Moved { from };
        }
        if self.map.len() >= self.capacity {
            self.expire(now);
            if self.map.len() >= self.capacity {
                return Learned::Full;
            }
        }
        self.map.insert(
            key,
            MacEntry {
                port,
                seen: now,
                announced: 0,
            },
        );
        Learned::New
    }

    /// The port `key` was last seen on, unless that is longer ago than the aging time.
    #[inline]
    pub fn lookup(&self, key: u64, now: u64) -> Option<u32> {
        let e = self.map.get(&key)?;
        (now.saturating_sub(e.seen) <= self.aging_ns).then_some(e.port)
    }

    /// Marks the entry as announced at `now` if it was not announced within
    /// `interval_ns`; true if the caller should announce it.
    #[inline]
    pub fn due_for_announce(&mut self, key: u64, now: u64, interval_ns: u64) -> bool {
        match self.map.get_mut(&key) {
            Some(e) if e.announced == 0 || now.saturating_sub(e.announced) >= interval_ns => {
                e.announced = now;
                true
            }
            _ => false,
        }
    }

    /// Removes entries older than the aging time. Returns how many.
    pub fn expire(&mut self, now: u64) -> usize {
        let before = self.map.len();
        let aging = self.aging_ns;
        self.map.retain(|_, e| now.saturating_sub(e.seen) <= aging);
        before - self.map.len()
    }

    /// Removes every entry pointing at `port` (the port was deleted).
    pub fn forget_port(&mut self, port: u32) -> usize {
        let before = self.map.len();
        self.map.retain(|_, e| e.port != port);
        before - self.map.len()
    }

    /// Entries for display: (key, entry).
    pub fn entries(&self) -> impl Iterator<Item = (u64, &MacEntry)> {
        self.map.iter().map(|(k, e)| (*k, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn key(last: u8) -> u64 {
        mac_key(MacAddr([2, 0, 0, 0, 0, last]), None)
    }

    #[test]
    fn learns_refreshes_and_moves() {
        let mut t = MacTable::new(Duration::from_secs(300), 16);
        assert_eq!(t.learn(key(1), 1, 0), Learned::New);
        assert_eq!(t.learn(key(1), 1, S), Learned::Refreshed);
        assert_eq!(t.lookup(key(1), 2 * S), Some(1));
        assert_eq!(t.learn(key(1), 2, 3 * S), Learned::Moved { from: 1 });
        assert_eq!(t.lookup(key(1), 3 * S), Some(2));
        assert_eq!(t.lookup(key(9), 3 * S), None);
    }

    #[test]
    fn vlans_are_separate() {
        let mac = MacAddr([2, 0, 0, 0, 0, 1]);
        let mut t = MacTable::new(DEFAULT_AGING, 16);
        t.learn(mac_key(mac, Some(10)), 1, 0);
        assert_eq!(t.lookup(mac_key(mac, Some(10)), 0), Some(1));
        assert_eq!(t.lookup(mac_key(mac, None), 0), None);
    }

    #[test]
    fn entries_age_out() {
        let mut t = MacTable::new(Duration::from_secs(10), 16);
        t.learn(key(1), 1, 0);
        t.learn(key(2), 1, 5 * S);
        assert_eq!(t.lookup(key(1), 10 * S), Some(1));
        assert_eq!(
            t.lookup(key(1), 11 * S),
            None,
            "expired entries are never returned"
        );
        assert_eq!(t.expire(11 * S), 1);
        assert_eq!(t.len(), 1);
        assert_eq!(t.lookup(key(2), 11 * S), Some(1));
    }

    #[test]
    fn full_table_refuses_newcomers_but_sweeps_expired_first() {
        let mut t = MacTable::new(Duration::from_secs(10), 2);
        assert_eq!(t.learn(key(1), 1, 0), Learned::New);
        assert_eq!(t.learn(key(2), 1, 0), Learned::New);
        assert_eq!(t.learn(key(3), 1, S), Learned::Full);
        assert_eq!(t.lookup(key(1), S), Some(1), "existing entries are kept");
        assert_eq!(t.learn(key(1), 1, 5 * S), Learned::Refreshed);
        // key(2) expires at 10 s; key(1) was refreshed at 5 s.
        assert_eq!(t.learn(key(3), 1, 12 * S), Learned::New);
        assert_eq!(t.lookup(key(2), 12 * S), None);
        assert_eq!(t.lookup(key(1), 12 * S), Some(1));
    }

    #[test]
    fn forgetting_a_port() {
        let mut t = MacTable::new(DEFAULT_AGING, 16);
        t.learn(key(1), 1, 0);
        t.learn(key(2), 2, 0);
        t.learn(key(3), 1, 0);
        assert_eq!(t.forget_port(1), 2);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn announce_is_rate_limited() {
        let mut t = MacTable::new(DEFAULT_AGING, 16);
        t.learn(key(1), 1, S);
        assert!(t.due_for_announce(key(1), S, 10 * S));
        assert!(!t.due_for_announce(key(1), 2 * S, 10 * S));
        assert!(t.due_for_announce(key(1), 11 * S, 10 * S));
        assert!(!t.due_for_announce(key(9), 11 * S, 10 * S));
    }
}

//! The connection table shared by every worker.
//!
//! Sharded by tuple hash; each shard is a `Mutex` over a hash map and a slab of
//! connections. A connection lives in the shard of its original tuple; its reply
//! tuple is an alias in the shard of that tuple, pointing back. No operation ever
//! holds two shard locks, so there is no lock order and no deadlock, and a
//! critical section is one hash probe plus a few field updates (see
//! docs/architecture.md for why locks and not a lock-free map).
//!
//! Bounded: a shard holds at most `max_entries / shards` connections; inserting
//! into a full shard evicts the oldest not-assured connection among the ones the
//! eviction hand scans (counted), or fails (counted) when all are assured.
//! Expiry is incremental: each call handles a few shards.

use super::config::CtConfig;
use super::tuple::{SeededState, Tuple, random_seed};
use hashbrown::HashTable;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Connection flags.
pub mod cflag {
    pub const LIVE: u8 = 0x01;
    pub const SEEN_REPLY: u8 = 0x02;
    pub const ASSURED: u8 = 0x04;
    pub const FIN_ORIG: u8 = 0x08;
    pub const FIN_REPLY: u8 = 0x10;
    /// Packets in the original direction get their source/destination rewritten.
    pub const SNAT: u8 = 0x20;
    pub const DNAT: u8 = 0x40;
    /// A pod reaching itself through a service (output back to its own port).
    pub const HAIRPIN: u8 = 0x80;
}

/// One connection. `reply` is the tuple replies carry (after NAT).
#[derive(Debug, Clone, Copy)]
pub struct Conn {
    pub orig: Tuple,
    pub reply: Tuple,
    pub label: [u64; 2],
    pub last_ns: u64,
    pub mark: u32,
    /// Seconds after `last_ns` the connection expires (depends on its state).
    pub timeout_s: u32,
    /// Service and endpoint that were chosen (0 = none), for endpoint removal.
    pub service: u32,
    pub backend: u32,
    pub flags: u8,
    /// Protocol state: a `TcpState` for TCP, else 0.
    pub state: u8,
}

impl Conn {
    pub fn new(orig: Tuple, reply: Tuple, now: u64, timeout_s: u32) -> Conn {
        Conn {
            orig,
            reply,
            label: [0; 2],
            last_ns: now,
            mark: 0,
            timeout_s,
            service: 0,
            backend: 0,
            flags: cflag::LIVE,
            state: 0,
        }
    }

    pub fn expired(&self, now: u64) -> bool {
        now.saturating_sub(self.last_ns) >= u64::from(self.timeout_s) * 1_000_000_000
    }

    pub fn has(&self, f: u8) -> bool {
        self.flags & f != 0
    }
}

#[derive(Clone, Copy)]
struct Ref {
    shard: u16,
    idx: u32,
}

/// A load-balanced connection's backend: service number, the endpoint's
/// address and port (the reply tuple's source), zone. The key of the
/// per-shard backend index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BackendKey {
    pub service: u32,
    pub addr: [u32; 4],
    pub port: u16,
}

impl BackendKey {
    pub fn of(c: &Conn) -> Option<BackendKey> {
        (c.service != 0).then_some(BackendKey {
            service: c.service,
            addr: c.reply.src,
            port: c.reply.sport,
        })
    }
}

/// End of a backend list.
const NIL: u32 = u32::MAX;

/// A slot's neighbours in its backend's list (parallel to the slab).
#[derive(Clone, Copy)]
struct Link {
    prev: u32,
    next: u32,
}

const UNLINKED: Link = Link {
    prev: NIL,
    next: NIL,
};

struct Shard {
    /// Connections whose original tuple hashes here, as slab indices (the tuple
    /// itself is in the slab: 4 bytes per entry instead of 48).
    origs: HashTable<u32>,
    /// Reply tuples that hash here, pointing to their connection's shard.
    map: HashMap<Tuple, Ref, SeededState>,
    slab: Vec<Conn>,
    /// Backend index: the head of each backend's doubly linked list of slots
    /// (load-balanced connections only), so removing an endpoint's connections
    /// costs in proportion to them, not to the table.
    by_backend: HashMap<BackendKey, u32, SeededState>,
    /// `links[i]`: slot i's neighbours in its backend's list.
    links: Vec<Link>,
    free: Vec<u32>,
    live: usize,
    /// Where the eviction scan resumes.
    hand: usize,
}

/// Table-wide counters (relaxed; read by `stats`).
#[derive(Default)]
pub struct CtCounters {
    pub inserts: AtomicU64,
    pub evictions: AtomicU64,
    pub insert_failed: AtomicU64,
    pub invalid: AtomicU64,
    pub expired: AtomicU64,
}

pub struct CtTable {
    shards: Box<[Mutex<Shard>]>,
    shard_cap: usize,
    hasher: SeededState,
    mask: usize,
    expiry_cursor: AtomicUsize,
    pub counters: CtCounters,
    pub config: CtConfig,
}

/// What a lookup found.
#[derive(Debug, Clone, Copy)]
pub struct Found {
    pub conn: Conn,
    /// The packet travels in the reply direction.
    pub reply: bool,
}

/// How many slots one eviction scans for the oldest not-assured victim.
const EVICT_SCAN: usize = 128;
const MAX_SHARDS: usize = 1024;

impl CtTable {
    pub fn new(config: CtConfig) -> CtTable {
        let n = (config.max_entries / 64)
            .clamp(1, MAX_SHARDS)
            .next_power_of_two();
        let n = if n > config.max_entries / 64 && n > 1 {
            n / 2
        } else {
            n
        };
        let hasher = SeededState(random_seed());
        let shards = (0..n)
            .map(|_| {
                Mutex::new(Shard {
                    origs: HashTable::new(),
                    map: HashMap::with_hasher(hasher),
                    slab: Vec::new(),
                    by_backend: HashMap::with_hasher(hasher),
                    links: Vec::new(),
                    free: Vec::new(),
                    live: 0,
                    hand: 0,
                })
            })
            .collect();
        CtTable {
            shards,
            shard_cap: config.max_entries.div_ceil(n),
            hasher,
            mask: n - 1,
            expiry_cursor: AtomicUsize::new(0),
            counters: CtCounters::default(),
            config,
        }
    }

    pub fn n_shards(&self) -> usize {
        self.shards.len()
    }

    fn shard_of(&self, t: &Tuple) -> usize {
        self.shard_index(self.hasher.hash_one(t))
    }

    /// The shard of a tuple whose hash is `h`: bits 32 and up. A shard's hash
    /// tables index their buckets by the hash's low bits (hashbrown; its tag is
    /// the top 7), so those must vary among the tuples of one shard: taken from
    /// the low bits, every tuple of a shard would start probing at the same
    /// bucket, and a lookup would walk the shard's whole cluster (what made a
    /// new connection cost several microseconds at 100k+ entries).
    #[inline]
    fn shard_index(&self, h: u64) -> usize {
        ((h >> 32) as usize) & self.mask
    }

    fn lock(&self, i: usize) -> std::sync::MutexGuard<'_, Shard> {
        // A worker that panicked while holding a shard leaves consistent data
        // (every update is a plain store): carry on with it.
        match self.shards[i].lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Looks `t` up in either direction and, if found and not expired, lets
    /// `update` change the connection under the shard lock. `update` returns
    /// false to delete the connection (TCP reopen, or expired).
    pub fn lookup<F>(&self, t: &Tuple, now: u64, update: F) -> Option<Found>
    where
        F: FnOnce(&mut Conn, bool) -> bool,
    {
        let h = self.hasher.hash_one(t);
        let si = self.shard_index(h);
        let r = {
            let s = self.lock(si);
            match s.find_orig(h, t) {
                Some(idx) => Ref {
                    shard: si as u16,
                    idx,
                },
                None => *s.map.get(t)?,
            }
        };
        let mut s = self.lock(usize::from(r.shard));
        let c = s.slab.get_mut(r.idx as usize)?;
        if !c.has(cflag::LIVE) {
            return None;
        }
        let reply = if c.orig == *t {
            false
        } else if c.reply == *t {
            true
        } else {
            return None;
        };
        let key = BackendKey::of(c);
        let keep = !c.expired(now) && update(c, reply);
        let conn = *c;
        if BackendKey::of(&conn) != key {
            // `update` re-pointed the connection: file it under its new backend.
            s.unlink_backend(r.idx, key);
            s.link_backend(r.idx, BackendKey::of(&conn));
        }
        if !keep {
            drop(s);
            if conn.expired(now) {
                self.counters.expired.fetch_add(1, Ordering::Relaxed);
            }
            self.remove(&conn.orig);
            return None;
        }
        Some(Found { conn, reply })
    }

    /// Inserts a new connection. Returns false when it could not (table full of
    /// assured connections, or the tuple is taken).
    pub fn insert(&self, c: Conn) -> bool {
        let h = self.hasher.hash_one(c.orig);
        let si = self.shard_index(h);
        let mut victim = None;
        let new_idx;
        {
            let mut s = self.lock(si);
            if s.find_orig(h, &c.orig).is_some() || s.map.contains_key(&c.orig) {
                return false;
            }
            if s.live >= self.shard_cap {
                match s.evict_candidate() {
                    Some(v) => {
                        victim = Some(v);
                        // Unlink the victim's original tuple here; its alias after.
                        let vh = self.hasher.hash_one(v.1.orig);
                        s.unlink(v, vh);
                        self.counters.evictions.fetch_add(1, Ordering::Relaxed);
                    }
                    None => {
                        self.counters.insert_failed.fetch_add(1, Ordering::Relaxed);
                        return false;
                    }
                }
            }
            let idx = match s.free.pop() {
                Some(i) => {
                    s.slab[i as usize] = c;
                    i
                }
                None => {
                    // Grow by an eighth, not double: the slab is most of the
                    // memory and a doubled one is half empty.
                    if s.slab.len() == s.slab.capacity() {
                        let more = (s.slab.len() / 8).max(16);
                        s.slab.reserve_exact(more);
                        s.links.reserve_exact(more);
                    }
                    s.slab.push(c);
                    s.links.push(UNLINKED);
                    (s.slab.len() - 1) as u32
                }
            };
            new_idx = idx;
            s.live += 1;
            s.link_backend(idx, BackendKey::of(&c));
            let hasher = self.hasher;
            let Shard { origs, slab, .. } = &mut *s;
            origs.insert_unique(h, idx, |&i| {
                slab.get(i as usize).map_or(0, |c| hasher.hash_one(c.orig))
            });
            if c.reply != c.orig && self.shard_of(&c.reply) == si {
                s.map.insert(
                    c.reply,
                    Ref {
                        shard: si as u16,
                        idx,
                    },
                );
            }
            // Hold the slot until its alias is gone (so it cannot be reused
            // under a stale alias): freed in `finish_removal`.
        }
        if let Some((vidx, vconn)) = victim {
            self.finish_removal(si, vidx, &vconn);
        }
        let ri = self.shard_of(&c.reply);
        if ri != si && c.reply != c.orig {
            self.lock(ri).map.insert(
                c.reply,
                Ref {
                    shard: si as u16,
                    idx: new_idx,
                },
            );
        }
        self.counters.inserts.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Removes the connection whose original tuple is `orig`.
    pub fn remove(&self, orig: &Tuple) -> bool {
        let h = self.hasher.hash_one(orig);
        let si = self.shard_index(h);
        let found = {
            let mut s = self.lock(si);
            let Some(idx) = s.find_orig(h, orig) else {
                return false;
            };
            let Some(c) = s.slab.get(idx as usize).copied() else {
                return false;
            };
            s.unlink((idx, c), h);
            (idx, c)
        };
        self.finish_removal(si, found.0, &found.1);
        true
    }

    /// Second half of a removal: the alias in the reply tuple's shard, then the
    /// slot goes back to the free list.
    fn finish_removal(&self, si: usize, idx: u32, c: &Conn) {
        let ri = self.shard_of(&c.reply);
        if ri != si {
            let mut r = self.lock(ri);
            if let Some(a) = r.map.get(&c.reply)
                && usize::from(a.shard) == si
                && a.idx == idx
            {
                r.map.remove(&c.reply);
            }
        }
        let mut s = self.lock(si);
        s.free.push(idx);
    }

    /// Expires connections in the next `n` shards; returns how many went.
    pub fn expire_some(&self, now: u64, n: usize) -> usize {
        let mut gone = Vec::new();
        let mut total = 0;
        for _ in 0..n.min(self.shards.len()) {
            let si = self.expiry_cursor.fetch_add(1, Ordering::Relaxed) & self.mask;
            {
                let mut s = self.lock(si);
                for (i, c) in s.slab.iter().enumerate() {
                    if c.has(cflag::LIVE) && c.expired(now) {
                        gone.push((i as u32, *c));
                    }
                }
                for &(i, c) in &gone {
                    s.unlink((i, c), self.hasher.hash_one(c.orig));
                }
            }
            for (i, c) in gone.drain(..) {
                self.finish_removal(si, i, &c);
                total += 1;
            }
        }
        self.counters
            .expired
            .fetch_add(total as u64, Ordering::Relaxed);
        total
    }

    /// Every live connection `keep` selects (shard by shard; a snapshot that may
    /// miss connections inserted meanwhile).
    pub fn collect<F: FnMut(&Conn) -> bool>(&self, mut pick: F) -> Vec<Conn> {
        let mut out = Vec::new();
        for si in 0..self.shards.len() {
            let s = self.lock(si);
            out.extend(
                s.slab
                    .iter()
                    .filter(|c| c.has(cflag::LIVE) && pick(c))
                    .copied(),
            );
        }
        out
    }

    /// Removes every connection load-balanced to one of `keys`' endpoints;
    /// returns how many. Walks each shard's list for those backends: the cost
    /// is the number of shards (one short lock each, a hash probe per key) plus
    /// those connections, not the size of the table.
    pub fn remove_backends(&self, keys: &[BackendKey]) -> usize {
        if keys.is_empty() {
            return 0;
        }
        let mut gone = Vec::new();
        let mut total = 0;
        for si in 0..self.shards.len() {
            {
                let mut s = self.lock(si);
                if s.by_backend.is_empty() {
                    continue;
                }
                for key in keys {
                    let Some(&head) = s.by_backend.get(key) else {
                        continue;
                    };
                    let mut i = head;
                    while i != NIL {
                        let Some(c) = s.slab.get(i as usize).copied() else {
                            break;
                        };
                        if c.has(cflag::LIVE) {
                            gone.push((i, c));
                        }
                        i = s.links.get(i as usize).map_or(NIL, |l| l.next);
                    }
                }
                for &(i, c) in &gone {
                    s.unlink((i, c), self.hasher.hash_one(c.orig));
                }
            }
            for (i, c) in gone.drain(..) {
                self.finish_removal(si, i, &c);
                total += 1;
            }
        }
        total
    }

    /// Removes every connection `pick` selects; returns how many.
    pub fn remove_where<F: FnMut(&Conn) -> bool>(&self, pick: F) -> usize {
        let victims = self.collect(pick);
        victims.iter().filter(|c| self.remove(&c.orig)).count()
    }

    /// Live connections.
    pub fn len(&self) -> usize {
        (0..self.shards.len()).map(|i| self.lock(i).live).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the table uses now (maps at capacity, slabs), for the per-entry figure.
    pub fn memory_bytes(&self) -> usize {
        let entry = std::mem::size_of::<(Tuple, Ref)>() + 1;
        let orig_entry = std::mem::size_of::<u32>() + 1;
        (0..self.shards.len())
            .map(|i| {
                let s = self.lock(i);
                // hashbrown keeps 1/8 of its buckets free: count the buckets.
                s.map.capacity() * 8 / 7 * entry
                    + s.origs.capacity() * 8 / 7 * orig_entry
                    + s.slab.capacity() * std::mem::size_of::<Conn>()
                    + s.links.capacity() * std::mem::size_of::<Link>()
                    + s.by_backend.capacity() * 8 / 7
                        * (std::mem::size_of::<(BackendKey, u32)>() + 1)
                    + s.free.capacity() * 4
            })
            .sum()
    }
}

impl Shard {
    fn find_orig(&self, h: u64, t: &Tuple) -> Option<u32> {
        let slab = &self.slab;
        self.origs
            .find(h, |&i| {
                slab.get(i as usize)
                    .is_some_and(|c| c.orig == *t && c.has(cflag::LIVE))
            })
            .copied()
    }

    /// Removes `c`'s tuples from this shard (the alias may live elsewhere); the
    /// slot stays dead and unusable until `finish_removal` frees it.
    fn unlink(&mut self, (idx, c): (u32, Conn), h: u64) {
        if let Ok(e) = self.origs.find_entry(h, |&i| i == idx) {
            e.remove();
        }
        if let Some(a) = self.map.get(&c.reply)
            && a.idx == idx
        {
            self.map.remove(&c.reply);
        }
        if let Some(slot) = self.slab.get_mut(idx as usize) {
            slot.flags &= !cflag::LIVE;
        }
        self.unlink_backend(idx, BackendKey::of(&c));
        self.live = self.live.saturating_sub(1);
    }

    /// Puts slot `idx` at the head of `key`'s list.
    fn link_backend(&mut self, idx: u32, key: Option<BackendKey>) {
        let Some(key) = key else {
            return;
        };
        let head = self.by_backend.insert(key, idx).unwrap_or(NIL);
        if let Some(l) = self.links.get_mut(idx as usize) {
            *l = Link {
                prev: NIL,
                next: head,
            };
        }
        if let Some(h) = self.links.get_mut(head as usize) {
            h.prev = idx;
        }
    }

    /// Takes slot `idx` out of `key`'s list.
    fn unlink_backend(&mut self, idx: u32, key: Option<BackendKey>) {
        let Some(key) = key else {
            return;
        };
        let Some(l) = self.links.get(idx as usize).copied() else {
            return;
        };
        if l.prev == NIL {
            if self.by_backend.get(&key) != Some(&idx) {
                return; // not linked (already taken out)
            }
            if l.next == NIL {
                self.by_backend.remove(&key);
            } else {
                self.by_backend.insert(key, l.next);
            }
        } else if let Some(p) = self.links.get_mut(l.prev as usize) {
            p.next = l.next;
        }
        if let Some(n) = self.links.get_mut(l.next as usize) {
            n.prev = l.prev;
        }
        if let Some(me) = self.links.get_mut(idx as usize) {
            *me = UNLINKED;
        }
    }

    /// The oldest not-assured live connection among the next slots the hand
    /// scans.
    fn evict_candidate(&mut self) -> Option<(u32, Conn)> {
        let n = self.slab.len();
        if n == 0 {
            return None;
        }
        let mut best: Option<(u32, Conn)> = None;
        for k in 0..EVICT_SCAN.min(n) {
            let i = (self.hand + k) % n;
            let c = &self.slab[i];
            if c.has(cflag::LIVE)
                && !c.has(cflag::ASSURED)
                && best.is_none_or(|(_, b)| c.last_ns < b.last_ns)
            {
                best = Some((i as u32, *c));
            }
        }
        self.hand = (self.hand + EVICT_SCAN) % n;
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tuples of one shard must not share the low hash bits the shard's
    /// hash tables index buckets with: if they did (the shard taken from those
    /// bits), all of them would probe from one bucket and every lookup would
    /// walk the shard's whole cluster.
    #[test]
    fn tuples_of_one_shard_spread_over_its_buckets() {
        let t = CtTable::new(CtConfig::default());
        assert_eq!(t.n_shards(), 1024);
        let mut low = std::collections::HashSet::new();
        let mut n = 0;
        for i in 0..200_000u32 {
            let tup = Tuple {
                src: [0, 0, 0, 0x0a4d_0000 | (i >> 16)],
                dst: [0, 0, 0, 0x0a4d_8001],
                sport: i as u16,
                dport: 80,
                zone: 1,
                proto: 17,
                v6: false,
            };
            let h = t.hasher.hash_one(tup);
            if t.shard_index(h) == 7 {
                n += 1;
                low.insert(h & 0x3ff);
            }
        }
        assert!(n > 100, "{n} tuples in shard 7");
        // ~n(1 - n/2048) distinct values of 1024 if independent; 1 if not.
        assert!(low.len() * 4 > n * 3, "{} distinct of {n}", low.len());
    }

    /// 100k connections (~100 per shard, well under the 1024 a shard may
    /// hold): all found in both directions, and gone after removal.
    #[test]
    fn many_connections_found_both_ways_and_removed() {
        let t = CtTable::new(CtConfig::default());
        let conn = |i: u32| {
            let orig = Tuple {
                src: [0, 0, 0, 0x0a4d_0000 | (i >> 16)],
                dst: [0, 0, 0, 0x0a4d_8001],
                sport: i as u16,
                dport: 80,
                zone: 1,
                proto: 17,
                v6: false,
            };
            let mut reply = orig.reversed();
            reply.src = [0, 0, 0, 0x0a4d_0014];
            reply.sport = 8080;
            Conn::new(orig, reply, 1, 30)
        };
        for i in 0..100_000 {
            assert!(t.insert(conn(i)), "insert {i}");
        }
        assert_eq!(t.len(), 100_000);
        for i in 0..100_000 {
            let c = conn(i);
            assert!(t.lookup(&c.orig, 2, |_, r| !r).is_some(), "orig {i}");
            assert!(t.lookup(&c.reply, 2, |_, r| r).is_some(), "reply {i}");
        }
        for i in 0..100_000 {
            assert!(t.remove(&conn(i).orig), "remove {i}");
        }
        assert!(t.is_empty());
        assert!(t.lookup(&conn(5).reply, 2, |_, _| true).is_none());
    }
}

//! A worker's flow cache: an exact-match cache in front of a megaflow cache in
//! front of the slow path (`xlate`), as in OVS's userspace datapath.
//!
//! Invalidation without stopping workers: an entry remembers the pipeline version
//! it was built at and the tables it read. Once per loop iteration the worker
//! notices a new published version and copies the per-table change stamps; an
//! entry that read a table changed after it was built is treated as a miss and
//! rebuilt. A removed flow therefore never acts again once `del-flows` returned
//! (the reply is sent after the publish; the next loop iteration sees it).

use super::dpaction::DpAction;
use super::emc::{ExactMatchCache, hash_key};
use super::key::Key;
use super::megaflow::{MegaflowCache, MegaflowId};
use super::rule::Rule;
use super::tables::{N_STAMPS, Pipeline, PipelineReader};
use super::xlate::{self, Translation};
use left_right::ReadHandle;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Sizes of a worker's caches.
#[derive(Debug, Clone, Copy)]
pub struct CacheConfig {
    pub emc_entries: usize,
    pub megaflows: usize,
    /// A megaflow hit enters the EMC with probability 1 / this (OVS's
    /// `emc-insert-inv-prob`; 1: always, 0: never). A full miss always enters it.
    pub emc_insert_inv_prob: u32,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            emc_entries: 8192,
            megaflows: 65536,
            emc_insert_inv_prob: EMC_INSERT_INV_PROB,
        }
    }
}

/// OVS's default: a flow that keeps sending enters the EMC after ~100 packets
/// (a few µs of megaflow lookups), while keys that never come back (every
/// packet of a new connection: each recirculation pass has its own) mostly
/// stay out instead of evicting the entries of established flows, and do not
/// pay for writing their 168-byte key into it.
pub const EMC_INSERT_INV_PROB: u32 = 100;

/// One megaflow: the actions and where its hits are owed.
pub struct CachedFlow {
    /// Taken out while executing (see `take_actions`).
    actions: Option<Box<[DpAction]>>,
    /// Index of the last action that consumes the frame (earlier ones get copies).
    pub last_consumer: Option<usize>,
    /// The in-kernel fast path may execute this entry (see [`offloadable`]).
    pub offloadable: bool,
    /// Its part in an offloadable NAT decision (`port::fastpath_nat::stage`).
    pub nat_stage: u8,
    tables: u128,
    built_at: u64,
    rules: Box<[Arc<Rule>]>,
    packets: u64,
    bytes: u64,
    last_hit: u64,
}

impl CachedFlow {
    fn push_stats(&mut self) {
        for r in self.rules.iter() {
            r.stats.push(self.packets, self.bytes, self.last_hit);
        }
        self.packets = 0;
        self.bytes = 0;
    }
}

/// Whether an action hands the frame on (so the last one may take the original).
pub fn consumes_frame(a: &DpAction) -> bool {
    matches!(
        a,
        DpAction::Output(_)
            | DpAction::Normal
            | DpAction::Flood
            | DpAction::Clone(_)
            | DpAction::Ct {
                recirc: Some(_),
                ..
            }
            | DpAction::Encap { .. }
            | DpAction::Decap { .. }
            | DpAction::ServiceLb { .. }
            | DpAction::Punt(_)
    )
}

/// Whether the XDP fast path (port/fastpath.rs) can execute a cached decision:
/// its actions are only `normal` or only `output:P` (no rewrite, ct, policy,
/// service, tunnel, punt, clone, flood), and the megaflow consulted nothing but
/// in_port, the Ethernet addresses, eth_type, vlan_tci and recirc_id. The kernel's
/// key (ingress interface, dst, src, ethertype, untagged only) is then at least as
/// specific as the megaflow, so every frame it matches would get these actions.
pub fn offloadable(actions: &[DpAction], consulted: &Key) -> bool {
    use super::key::{W_ETH_DST, W_ETH_SRC, W_PORT_TYPE_VLAN, W_RECIRC};
    if !matches!(actions, [DpAction::Normal] | [DpAction::Output(_)]) {
        return false;
    }
    const MAC: u64 = (1 << 48) - 1;
    consulted.0.iter().enumerate().all(|(w, &bits)| {
        let allowed = match w {
            W_PORT_TYPE_VLAN | W_RECIRC => u64::MAX,
            W_ETH_SRC | W_ETH_DST => MAC,
            _ => 0,
        };
        bits & !allowed == 0
    })
}

/// Hit/miss counters of one worker's caches (single writer: the worker).
#[derive(Debug, Default)]
pub struct CacheCounters {
    pub emc_hits: AtomicU64,
    pub megaflow_hits: AtomicU64,
    pub misses: AtomicU64,
    /// Entries found stale (a table they read changed) and rebuilt.
    pub revalidated: AtomicU64,
    pub megaflows: AtomicU64,
}

impl CacheCounters {
    pub fn read(&self) -> vswitch_proto::CacheStats {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        vswitch_proto::CacheStats {
            emc_hits: l(&self.emc_hits),
            megaflow_hits: l(&self.megaflow_hits),
            misses: l(&self.misses),
            revalidated: l(&self.revalidated),
            megaflows: l(&self.megaflows),
        }
    }
}

/// Which cache would answer a key right now (for `trace`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Probe {
    pub emc: bool,
    pub megaflow: bool,
}

pub struct FlowCache {
    emc: ExactMatchCache,
    mf: MegaflowCache<CachedFlow>,
    changed: [u64; N_STAMPS],
    version: u64,
    reader: ReadHandle<Pipeline>,
    published: Arc<AtomicU64>,
    // Per-batch tallies, stored into `counters` by `flush_counters`.
    emc_hits: u64,
    mf_hits: u64,
    misses: u64,
    revalidated: u64,
    emc_insert_inv_prob: u32,
    /// xorshift32 state for the EMC insertion draw (never 0).
    rng: u32,
    pub counters: Arc<CacheCounters>,
}

impl FlowCache {
    pub fn new(reader: &PipelineReader, cfg: CacheConfig, counters: Arc<CacheCounters>) -> Self {
        FlowCache {
            emc: ExactMatchCache::new(cfg.emc_entries),
            mf: MegaflowCache::new(cfg.megaflows),
            changed: [0; N_STAMPS],
            version: 0,
            reader: reader.handle(),
            published: reader.published.clone(),
            emc_hits: 0,
            mf_hits: 0,
            misses: 0,
            revalidated: 0,
            emc_insert_inv_prob: cfg.emc_insert_inv_prob,
            rng: 0x9e37_79b9,
            counters,
        }
    }

    /// Whether this megaflow hit should enter the EMC (see [`EMC_INSERT_INV_PROB`]).
    #[inline]
    fn emc_insert_due(&mut self) -> bool {
        match self.emc_insert_inv_prob {
            0 => false,
            1 => true,
            n => {
                let mut x = self.rng;
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                self.rng = x;
                x.is_multiple_of(n)
            }
        }
    }

    /// Once per loop iteration: pick up the change stamps of a new pipeline version.
    #[inline]
    pub fn refresh(&mut self) {
        if self.published.load(Ordering::Acquire) == self.version {
            return;
        }
        if let Some(p) = self.reader.enter() {
            self.changed = p.changed;
            self.version = p.version;
        }
    }

    #[inline]
    fn valid(changed: &[u64; N_STAMPS], f: &CachedFlow) -> bool {
        let mut t = f.tables;
        while t != 0 {
            let i = t.trailing_zeros() as usize;
            if changed.get(i).is_some_and(|&c| c > f.built_at) {
                return false;
            }
            t &= t - 1;
        }
        true
    }

    /// Finds or builds the megaflow for `key`.
    #[inline]
    pub fn lookup(&mut self, key: &Key) -> MegaflowId {
        let hash = hash_key(key);
        if let Some(id) = self.emc.lookup(key, hash)
            && let Some(f) = self.mf.get_mut(id)
        {
            if Self::valid(&self.changed, f) {
                self.emc_hits += 1;
                return id;
            }
            self.drop_stale(id);
        }
        if let Some((id, f)) = self.mf.lookup(key) {
            if Self::valid(&self.changed, f) {
                self.mf_hits += 1;
                if self.emc_insert_due() {
                    self.emc.insert(key, hash, id);
                }
                return id;
            }
            self.drop_stale(id);
        }
        self.misses += 1;
        let tr = match self.reader.enter() {
            Some(p) => xlate::translate(&p, key, None),
            None => Translation {
                actions: Vec::new(),
                consulted: Key::ALL_ONES,
                tables: 0,
                rules: Vec::new(),
                built_at: self.version,
                error: Some("pipeline unavailable".into()),
            },
        };
        let id = self.install(key, tr);
        self.emc.insert(key, hash, id);
        id
    }

    fn drop_stale(&mut self, id: MegaflowId) {
        if let Some(mut f) = self.mf.remove(id) {
            f.push_stats();
        }
        self.revalidated += 1;
    }

    fn install(&mut self, key: &Key, tr: Translation) -> MegaflowId {
        let actions = if tr.error.is_some() {
            Vec::new()
        } else {
            tr.actions
        };
        let last_consumer = actions.iter().rposition(consumes_frame);
        let offloadable = offloadable(&actions, &tr.consulted);
        let nat_stage = crate::port::fastpath_nat::stage(&actions, &tr.consulted);
        let f = CachedFlow {
            actions: Some(actions.into_boxed_slice()),
            last_consumer,
            offloadable,
            nat_stage,
            tables: tr.tables,
            built_at: tr.built_at,
            rules: tr.rules.into_boxed_slice(),
            packets: 0,
            bytes: 0,
            last_hit: 0,
        };
        self.mf.insert(&tr.consulted, key, f)
    }

    /// Counts a hit and lends out the entry's actions (give them back with
    /// `put_actions`): the worker executes them while mutating itself.
    #[inline]
    pub fn take_actions(
        &mut self,
        id: MegaflowId,
        bytes: u32,
        now: u64,
    ) -> Option<(Box<[DpAction]>, Option<usize>)> {
        let f = self.mf.get_mut(id)?;
        f.packets += 1;
        f.bytes += u64::from(bytes);
        f.last_hit = now;
        Some((f.actions.take()?, f.last_consumer))
    }

    /// Whether the entry may be executed by the XDP fast path.
    #[inline]
    pub fn offloadable(&self, id: MegaflowId) -> bool {
        self.mf.get(id).is_some_and(|f| f.offloadable)
    }

    /// The entry's part in an offloadable NAT decision (`port::fastpath_nat`).
    #[inline]
    pub fn nat_stage(&self, id: MegaflowId) -> u8 {
        self.mf.get(id).map_or(0, |f| f.nat_stage)
    }

    #[inline]
    pub fn put_actions(&mut self, id: MegaflowId, actions: Box<[DpAction]>) {
        if let Some(f) = self.mf.get_mut(id) {
            f.actions = Some(actions);
        }
    }

    /// Housekeeping: owed hits to the rules, counters out, stale entries gone.
    pub fn housekeeping(&mut self) {
        let changed = self.changed;
        let mut dropped = 0u64;
        self.mf.retain(|f| {
            f.push_stats();
            let keep = Self::valid(&changed, f);
            dropped += u64::from(!keep);
            keep
        });
        self.revalidated += dropped;
        self.flush_counters();
    }

    /// Stores the tallies into the shared counters (once per loop iteration: a
    /// few relaxed stores, and nothing when nothing happened).
    #[inline]
    pub fn flush_counters(&mut self) {
        if self.emc_hits | self.mf_hits | self.misses | self.revalidated == 0 {
            return;
        }
        let c = &self.counters;
        let add = |a: &AtomicU64, v: &mut u64| {
            if *v > 0 {
                a.store(a.load(Ordering::Relaxed) + *v, Ordering::Relaxed);
                *v = 0;
            }
        };
        add(&c.emc_hits, &mut self.emc_hits);
        add(&c.megaflow_hits, &mut self.mf_hits);
        add(&c.misses, &mut self.misses);
        add(&c.revalidated, &mut self.revalidated);
        c.megaflows.store(self.mf.len() as u64, Ordering::Relaxed);
    }

    /// Which cache would answer `key` now, without changing anything.
    pub fn probe(&mut self, key: &Key) -> Probe {
        let hash = hash_key(key);
        let changed = self.changed;
        let emc = self
            .emc
            .lookup(key, hash)
            .and_then(|id| self.mf.get_mut(id))
            .is_some_and(|f| Self::valid(&changed, f));
        let megaflow = self
            .mf
            .lookup(key)
            .is_some_and(|(_, f)| Self::valid(&changed, f));
        Probe { emc, megaflow }
    }

    /// Drops everything (owed hits are pushed first).
    pub fn clear(&mut self) {
        self.mf.retain(|f| {
            f.push_stats();
            false
        });
        self.emc.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::field::Field;

    #[test]
    fn offloadable_only_plain_l2() {
        let mut l2 = Key::ZERO;
        Field::InPort.set_masked(&mut l2, u128::MAX, u128::MAX);
        Field::EthDst.set_masked(&mut l2, u128::MAX, u128::MAX);
        Field::EthType.set_masked(&mut l2, u128::MAX, u128::MAX);
        assert!(offloadable(&[DpAction::Normal], &l2));
        assert!(offloadable(&[DpAction::Output(3)], &l2));
        assert!(offloadable(&[DpAction::Normal], &Key::ZERO));
        // Anything beyond one plain forwarding action.
        assert!(!offloadable(&[DpAction::Flood], &l2));
        assert!(!offloadable(&[], &l2));
        assert!(!offloadable(
            &[DpAction::Output(2), DpAction::Output(3)],
            &l2
        ));
        assert!(!offloadable(&[DpAction::DecTtl, DpAction::Normal], &l2));
        // A megaflow that looked at IP fields: the kernel's key is not exact enough.
        let mut ip = l2;
        Field::by_name("ip_dst")
            .expect("field")
            .set_masked(&mut ip, u128::MAX, u128::MAX);
        assert!(!offloadable(&[DpAction::Normal], &ip));
        let mut reg = l2;
        Field::by_name("reg0")
            .expect("field")
            .set_masked(&mut reg, u128::MAX, u128::MAX);
        assert!(!offloadable(&[DpAction::Normal], &reg));
        assert!(!offloadable(&[DpAction::Normal], &Key::ALL_ONES));
    }
}

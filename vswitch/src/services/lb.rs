//! The load-balancing state workers read: per service-port "frontend", its
//! endpoints and Maglev table. Published by the control thread as an immutable
//! map behind `ArcSwap` (workers take the new `Arc` once per loop iteration, no
//! lock); hit counters are the only shared writes (relaxed, one per new
//! connection). Session affinity keeps a small per-frontend map behind its own
//! mutex (consulted only by frontends that ask for it).

use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Source address for hairpin connections (a pod reaching itself through a
/// service): link-local, owned by no one, so the pod's reply goes to its default
/// gateway, i.e. through the switch.
pub const HAIRPIN_SNAT_V4: u32 = 0xa9fe_a9fd; // 169.254.169.253

#[derive(Debug)]
pub struct Backend {
    pub ip: u128,
    pub port: u16,
    /// MAC of a local endpoint pod (destination MAC after DNAT), when known.
    pub mac: Option<[u8; 6]>,
    pub local: bool,
    pub hits: AtomicU64,
}

#[derive(Debug)]
pub struct Frontend {
    pub id: u32,
    /// `namespace/name:port/proto`, for listings.
    pub name: String,
    /// The addresses (`ip:port`) that lead to it.
    pub vips: Vec<String>,
    pub backends: Vec<Backend>,
    pub maglev: Vec<u16>,
    /// Source NAT (to this node address) when the chosen endpoint is on another
    /// node: NodePort/external traffic with externalTrafficPolicy Cluster.
    pub snat_remote: Option<u128>,
    /// The gateway MAC: source MAC of packets delivered to a local endpoint.
    pub gateway_mac: Option<[u8; 6]>,
    pub affinity: Option<Affinity>,
}

#[derive(Debug)]
pub struct Affinity {
    pub timeout_ns: u64,
    pub map: Mutex<HashMap<u128, (u16, u64)>>,
}

/// Most clients remembered per frontend for session affinity.
const AFFINITY_MAX: usize = 65536;

impl Frontend {
    /// Picks an endpoint for a new connection: the client's remembered one under
    /// session affinity, else by Maglev on the connection hash.
    pub fn select(&self, hash: u64, client: u128, now: u64) -> Option<u16> {
        if self.maglev.is_empty() {
            return None;
        }
        let by_hash = self.maglev[(hash % self.maglev.len() as u64) as usize];
        let Some(a) = &self.affinity else {
            return Some(by_hash);
        };
        let mut m = match a.map.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if let Some((b, last)) = m.get_mut(&client)
            && now.saturating_sub(*last) < a.timeout_ns
            && usize::from(*b) < self.backends.len()
        {
            *last = now;
            return Some(*b);
        }
        if m.len() >= AFFINITY_MAX {
            let t = a.timeout_ns;
            m.retain(|_, (_, last)| now.saturating_sub(*last) < t);
        }
        if m.len() < AFFINITY_MAX {
            m.insert(client, (by_hash, now));
        }
        Some(by_hash)
    }

    pub fn hit(&self, b: u16) {
        if let Some(be) = self.backends.get(usize::from(b)) {
            be.hits.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Approximate bytes this frontend holds (for the per-endpoint figure).
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Frontend>()
            + self.name.capacity()
            + self.backends.capacity() * std::mem::size_of::<Backend>()
            + self.maglev.capacity() * 2
    }
}

/// Shards of the frontend map (a power of two). A change republishes the
/// shard array (this many `Arc` clones) and copies only the shards it touches,
/// so its cost does not grow with the number of services.
pub const LB_SHARDS: usize = 1024;

type Shard = HashMap<u32, Arc<Frontend>>;

/// Every frontend by id, in [`LB_SHARDS`] shards by service number (all
/// frontends of one service share a shard). Immutable once published; the
/// control thread builds the next one with [`LbTable::edit`].
#[derive(Debug, Clone)]
pub struct LbTable {
    shards: Vec<Arc<Shard>>,
}

impl Default for LbTable {
    fn default() -> Self {
        let empty = Arc::new(Shard::new());
        LbTable {
            shards: vec![empty; LB_SHARDS],
        }
    }
}

fn shard_of(id: u32) -> usize {
    // Frontend ids are `service << 8 | port/family/kind`.
    (id >> 8) as usize & (LB_SHARDS - 1)
}

impl LbTable {
    pub fn get(&self, id: &u32) -> Option<&Arc<Frontend>> {
        self.shards[shard_of(*id)].get(id)
    }

    /// Every frontend (in no particular order).
    pub fn values(&self) -> impl Iterator<Item = &Arc<Frontend>> {
        self.shards.iter().flat_map(|s| s.values())
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.shards.iter().all(|s| s.is_empty())
    }

    /// Adds or replaces a frontend (copying its shard if a published table
    /// still shares it).
    pub fn insert(&mut self, fe: Arc<Frontend>) {
        let id = fe.id;
        Arc::make_mut(&mut self.shards[shard_of(id)]).insert(id, fe);
    }

    pub fn remove(&mut self, id: &u32) -> Option<Arc<Frontend>> {
        let shard = &mut self.shards[shard_of(*id)];
        if !shard.contains_key(id) {
            return None;
        }
        Arc::make_mut(shard).remove(id)
    }
}

pub type SharedLb = Arc<ArcSwap<LbTable>>;

pub fn new_shared() -> SharedLb {
    Arc::new(ArcSwap::from_pointee(LbTable::default()))
}

/// A fixed connection hash for Maglev (the 5-tuple; any worker picks the same).
pub fn conn_hash(src: u128, dst: u128, sport: u16, dport: u16, proto: u8) -> u64 {
    let mut h = 0x243f_6a88_85a3_08d3u64;
    for w in [
        (src >> 64) as u64,
        src as u64,
        (dst >> 64) as u64,
        dst as u64,
        (u64::from(sport) << 24) | (u64::from(dport) << 8) | u64::from(proto),
    ] {
        h = (h ^ w).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29);
    }
    h ^ (h >> 32)
}

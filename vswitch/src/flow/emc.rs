//! The exact-match cache (EMC): the first, cheapest lookup a worker does for a packet.
//! It maps a full flow key to the [`MegaflowId`] of the megaflow that packet hit last
//! time, so a packet of an established connection skips the megaflow subtables.
//!
//! Shape: a fixed power-of-two number of entries, 2-way set associative. The set is
//! chosen by the low bits of the key's hash, and the full 32-bit hash is kept as a tag
//! so almost every non-matching way is rejected without touching its key. The tags and
//! ids of a set sit in one small record (`Set`), the keys in a separate array: a miss
//! reads one 32-byte record; only a tag match reads the 168-byte key.
//!
//! # Contract with the caller
//!
//! The EMC does not own megaflows, so it can hold ids of megaflows that were removed or
//! evicted since. The caller must resolve the id with `MegaflowCache::get_mut` (or
//! `get`) and treat `None` — a stale id whose version no longer matches its slot — as
//! a miss, then do the megaflow lookup and [`ExactMatchCache::insert`] the new id.
//! [`ExactMatchCache::invalidate`] drops the entries of one id eagerly, but nothing
//! depends on calling it: the version check alone keeps stale entries harmless.
//!
//! Unlike OVS there is no probabilistic insertion here; a caller that sees more flows
//! than entries (thrashing) can insert only every Nth miss itself.

use super::key::{KEY_WORDS, Key};
use super::megaflow::MegaflowId;

/// Default number of entries (as OVS's EMC: 8192).
pub const DEFAULT_ENTRIES: usize = 8192;

// ---- hashing ---------------------------------------------------------------------
//
// Hand-written rather than `FxHasher` (rustc-hash) or std's SipHash:
// - SipHash costs ~1 ns a byte; 168 bytes a packet is far too much for the hot path.
// - Fx (`(h.rotl(5) ^ w) * K`, word after word) is one long dependency chain (21
//   multiplies in sequence) and its low bits depend only on the inputs' low bits, so
//   keys that differ only in a word's high half (ip_dst lives in bits 32..64 of its
//   word) collide in the low bits that pick a set or a hash-table bucket.
// - Here words are mixed with a 64x64->128-bit "folded" multiply (high half xor low
//   half), which spreads every input bit over the whole output. A whole key is taken
//   two words at a time, one seeded word times the other (foldhash's trick): 11
//   multiplies for 21 words, and they do not depend on each other, so the CPU
//   overlaps them. A subtable hashes only its mask's few words, one multiply each.
// The hash is not keyed: an attacker who knows it could make keys collide. That
// costs only performance (EMC thrashing, longer probe chains) and every table it
// feeds is bounded; correctness never rests on the hash.

/// Odd 64-bit multiplier (2^64 / golden ratio).
const MUL: u64 = 0x9e37_79b9_7f4a_7c15;

/// One seed per word position, so that equal words at different positions (two
/// zero words, say) contribute different terms.
const SEEDS: [u64; KEY_WORDS] = seeds();

const fn seeds() -> [u64; KEY_WORDS] {
    // splitmix64 of the position: any fixed, well-spread constants would do.
    let mut out = [0u64; KEY_WORDS];
    let mut i = 0;
    while i < KEY_WORDS {
        let mut z = (i as u64 + 1).wrapping_mul(MUL);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        out[i] = z ^ (z >> 31);
        i += 1;
    }
    out
}

#[inline(always)]
fn folded_mul(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

/// The term one word at position `pos` adds to a hash.
#[inline(always)]
pub(crate) fn word_term(pos: usize, w: u64) -> u64 {
    folded_mul(w ^ SEEDS[pos], MUL)
}

/// Final avalanche of a sum of terms into 64 well-mixed bits.
#[inline(always)]
pub(crate) fn finish(acc: u64) -> u64 {
    folded_mul(acc ^ 0x2d35_8dcc_aa6c_78a5, 0x8bb8_4b93_962e_acc9)
}

/// Hash of a whole key, for the EMC (and anything else keyed by an exact key).
#[inline]
pub fn hash_key(key: &Key) -> u32 {
    let pairs = key.0.chunks_exact(2);
    let seed_pairs = SEEDS.chunks_exact(2);
    // An odd word out (KEY_WORDS is 21) is mixed on its own.
    let mut acc = match (pairs.remainder(), seed_pairs.remainder()) {
        ([w], [s]) => folded_mul(w ^ s, MUL),
        _ => 0,
    };
    for (w, s) in pairs.zip(seed_pairs) {
        // A word equal to its seed zeroes its pair's term: only that exact value,
        // and it only costs a collision.
        acc = acc.wrapping_add(folded_mul(w[0] ^ s[0], w[1] ^ s[1]));
    }
    finish(acc) as u32
}

/// Widens a stored 32-bit hash into the 64 bits `hashbrown` wants: it takes bucket
/// positions from the low bits and a 7-bit tag from the top bits, so both halves
/// must carry hash bits (tables keep 32-bit hashes to stay small).
#[inline(always)]
pub(crate) fn widen(h: u32) -> u64 {
    u64::from(h) | (u64::from(h) << 32)
}

/// A mask reduced to its non-zero words: what a subtable (classifier or megaflow
/// cache) hashes, compares and reports as consulted. A 5-tuple mask touches 4 of the
/// 21 words, so a probe costs 4 multiplies and 4 compares, not 21.
#[derive(Clone)]
pub(crate) struct MaskWords {
    n: usize,
    pos: [u8; KEY_WORDS],
    bits: [u64; KEY_WORDS],
}

impl MaskWords {
    pub(crate) fn new(mask: &Key) -> Self {
        let mut pos = [0u8; KEY_WORDS];
        let mut bits = [0u64; KEY_WORDS];
        let mut n = 0;
        for i in mask.nonzero_words() {
            pos[n] = i as u8;
            bits[n] = mask.0[i];
            n += 1;
        }
        MaskWords { n, pos, bits }
    }

    /// Hash of `key` under the mask (`key` need not be masked): equal for every key
    /// that agrees under the mask.
    #[inline]
    pub(crate) fn hash(&self, key: &[u64; KEY_WORDS]) -> u32 {
        let mut acc = 0u64;
        for j in 0..self.n {
            let p = usize::from(self.pos[j]);
            acc = acc.wrapping_add(word_term(p, key[p] & self.bits[j]));
        }
        finish(acc) as u32
    }

    /// Whether `key` under the mask equals `stored` (an already masked key).
    #[inline]
    pub(crate) fn same(&self, key: &[u64; KEY_WORDS], stored: &[u64; KEY_WORDS]) -> bool {
        let mut diff = 0u64;
        for j in 0..self.n {
            let p = usize::from(self.pos[j]);
            diff |= (key[p] & self.bits[j]) ^ stored[p];
        }
        diff == 0
    }

    /// `out |= mask`, touching only the mask's words.
    #[inline]
    pub(crate) fn or_into(&self, out: &mut Key) {
        for j in 0..self.n {
            out.0[usize::from(self.pos[j])] |= self.bits[j];
        }
    }
}

// ---- the cache -------------------------------------------------------------------

/// Tags and ids of one set's two ways (32 bytes aligned, so a probe reads one cache
/// line; the keys live apart).
#[derive(Clone, Copy)]
#[repr(align(32))]
struct Set {
    hash: [u32; 2],
    id: [MegaflowId; 2],
    /// The way written last; insertion replaces the other one (the older).
    newest: u8,
}

const EMPTY_SET: Set = Set {
    hash: [0; 2],
    id: [MegaflowId::NONE; 2],
    newest: 1,
};

/// Exact key → megaflow id, fixed size, 2-way set associative. See the module docs
/// for the stale-id contract.
pub struct ExactMatchCache {
    sets: Box<[Set]>,
    /// Way `w` of set `s` is `keys[2 * s + w]`.
    keys: Box<[[u64; KEY_WORDS]]>,
    set_mask: u32,
}

impl Default for ExactMatchCache {
    fn default() -> Self {
        Self::new(DEFAULT_ENTRIES)
    }
}

impl ExactMatchCache {
    /// A cache of `entries` entries, rounded up to a power of two, at least 2
    /// (at most 2^31).
    pub fn new(entries: usize) -> Self {
        let entries = entries.clamp(2, 1 << 31).next_power_of_two();
        let n_sets = entries / 2;
        ExactMatchCache {
            sets: vec![EMPTY_SET; n_sets].into_boxed_slice(),
            keys: vec![[0u64; KEY_WORDS]; entries].into_boxed_slice(),
            set_mask: (n_sets - 1) as u32,
        }
    }

    /// Number of entries (both ways of every set).
    pub fn capacity(&self) -> usize {
        self.keys.len()
    }

    /// The id cached for exactly `key` (whose [`hash_key`] is `hash`), if any. The
    /// id may be stale: see the module docs.
    #[inline]
    pub fn lookup(&self, key: &Key, hash: u32) -> Option<MegaflowId> {
        let s = (hash & self.set_mask) as usize;
        let set = &self.sets[s];
        for w in 0..2 {
            if set.hash[w] == hash && !set.id[w].is_none() && same_key(&self.keys[2 * s + w], key) {
                return Some(set.id[w]);
            }
        }
        None
    }

    /// Caches `key → id`. An entry for the same key is overwritten; otherwise an empty
    /// way is used, else the older of the two ways is replaced.
    pub fn insert(&mut self, key: &Key, hash: u32, id: MegaflowId) {
        let s = (hash & self.set_mask) as usize;
        let set = &mut self.sets[s];
        let mut way = None;
        for w in 0..2 {
            if !set.id[w].is_none() && set.hash[w] == hash && same_key(&self.keys[2 * s + w], key) {
                way = Some(w);
                break;
            }
        }
        let w = way.unwrap_or_else(|| {
            if set.id[0].is_none() {
                0
            } else if set.id[1].is_none() {
                1
            } else {
                usize::from(set.newest ^ 1)
            }
        });
        set.hash[w] = hash;
        set.id[w] = id;
        set.newest = w as u8;
        self.keys[2 * s + w] = key.0;
    }

    /// Drops every entry pointing at `id` (a full scan of the tags: O(entries)).
    /// Optional hygiene: stale ids are misses for the caller anyway.
    pub fn invalidate(&mut self, id: MegaflowId) {
        for set in self.sets.iter_mut() {
            for w in 0..2 {
                if set.id[w] == id {
                    set.id[w] = MegaflowId::NONE;
                }
            }
        }
    }

    /// Drops every entry (after a flow table change that may redirect any flow).
    pub fn clear(&mut self) {
        self.sets.fill(EMPTY_SET);
    }

    /// Number of occupied entries (a full scan: for statistics, not the hot path).
    pub fn len(&self) -> usize {
        self.sets
            .iter()
            .map(|s| s.id.iter().filter(|id| !id.is_none()).count())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes this cache holds (fixed: it never grows).
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + std::mem::size_of_val(&*self.sets)
            + std::mem::size_of_val(&*self.keys)
    }
}

/// Word-by-word comparison without early exit: branch-free, the compiler vectorises it.
#[inline(always)]
fn same_key(stored: &[u64; KEY_WORDS], key: &Key) -> bool {
    stored
        .iter()
        .zip(key.0.iter())
        .fold(0u64, |diff, (a, b)| diff | (a ^ b))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn id(slot: u32) -> MegaflowId {
        MegaflowId { slot, version: 1 }
    }

    fn key(words: &[(usize, u64)]) -> Key {
        let mut k = Key::ZERO;
        for &(i, w) in words {
            k.0[i] = w;
        }
        k
    }

    #[test]
    fn hash_spreads_high_half_changes_to_low_bits() {
        // ip_dst is the high half of word 3: keys differing only there must not pile
        // up in one set.
        let mut sets = std::collections::HashSet::new();
        for i in 0..256u64 {
            let h = hash_key(&key(&[(3, (0x0a00_0000 + i) << 32)]));
            sets.insert(h & 0xff);
        }
        assert!(sets.len() > 128, "only {} distinct low bytes", sets.len());
        // Position matters: the same word elsewhere hashes differently.
        assert_ne!(hash_key(&key(&[(3, 7)])), hash_key(&key(&[(4, 7)])));
    }

    #[test]
    fn insert_lookup_replace() {
        let mut emc = ExactMatchCache::new(8);
        assert_eq!(emc.capacity(), 8);
        let k = key(&[(0, 1), (3, 0x0a00_0001)]);
        let h = hash_key(&k);
        assert_eq!(emc.lookup(&k, h), None);
        emc.insert(&k, h, id(1));
        assert_eq!(emc.lookup(&k, h), Some(id(1)));
        emc.insert(&k, h, id(2)); // same key: overwritten in place
        assert_eq!(emc.lookup(&k, h), Some(id(2)));
        assert_eq!(emc.len(), 1);
        // A wrong hash (the caller's mistake) finds nothing rather than a wrong entry.
        assert_eq!(emc.lookup(&k, h ^ 0x100), None);
        emc.invalidate(id(2));
        assert_eq!(emc.lookup(&k, h), None);
        emc.insert(&k, h, id(3));
        emc.clear();
        assert!(emc.is_empty());
    }

    #[test]
    fn full_set_replaces_the_older_way() {
        let mut emc = ExactMatchCache::new(2); // one set, two ways
        let (a, b, c) = (key(&[(0, 1)]), key(&[(0, 2)]), key(&[(0, 3)]));
        emc.insert(&a, hash_key(&a), id(1));
        emc.insert(&b, hash_key(&b), id(2));
        emc.insert(&c, hash_key(&c), id(3)); // a is older: replaced
        assert_eq!(emc.lookup(&a, hash_key(&a)), None);
        assert_eq!(emc.lookup(&b, hash_key(&b)), Some(id(2)));
        assert_eq!(emc.lookup(&c, hash_key(&c)), Some(id(3)));
        emc.insert(&a, hash_key(&a), id(4)); // now b is older
        assert_eq!(emc.lookup(&b, hash_key(&b)), None);
        assert_eq!(emc.lookup(&c, hash_key(&c)), Some(id(3)));
    }

    #[test]
    fn sizes_round_to_powers_of_two() {
        assert_eq!(ExactMatchCache::new(0).capacity(), 2);
        assert_eq!(ExactMatchCache::new(1000).capacity(), 1024);
        assert_eq!(ExactMatchCache::default().capacity(), DEFAULT_ENTRIES);
    }

    proptest! {
        /// (d) The EMC only ever answers with the id last inserted for exactly that key,
        /// even with a tiny cache where sets collide all the time.
        #[test]
        fn returns_only_exact_keys(
            ops in proptest::collection::vec((0u64..40, 0u64..4, any::<bool>()), 1..300),
        ) {
            let mut emc = ExactMatchCache::new(8);
            let mut model: HashMap<Key, MegaflowId> = HashMap::new();
            for (n, (a, b, ins)) in ops.into_iter().enumerate() {
                // Keys differing in one word only, in the low or the high half.
                let k = key(&[(3, a << 32 | b), (4, b)]);
                let h = hash_key(&k);
                if ins {
                    let i = id(n as u32);
                    emc.insert(&k, h, i);
                    model.insert(k, i);
                } else if let Some(got) = emc.lookup(&k, h) {
                    prop_assert_eq!(Some(&got), model.get(&k));
                }
            }
            for (k, i) in &model {
                if let Some(got) = emc.lookup(k, hash_key(k)) {
                    prop_assert_eq!(got, *i);
                }
            }
        }
    }
}

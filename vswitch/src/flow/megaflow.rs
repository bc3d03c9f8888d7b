//! The megaflow cache: a worker's cache of classification results, each valid for
//! every packet that agrees with it under a mask (OVS's dpcls).
//!
//! An entry is `(mask, masked key) → T`, made after a full classification from the
//! packet's key and the classifier's `consulted` mask: every packet equal to that key
//! under that mask gets the same answer. Entries have no priorities: two entries that
//! both match a packet both hold a correct answer, so any one will do.
//!
//! Lookup is tuple-space search again — one hash table per distinct mask (subtable),
//! keyed by the masked key over the mask's non-zero words — but without priorities
//! there is no order to respect, so subtables are tried most-hit first: for the
//! usual traffic one or two subtables answer nearly every packet. Hit counts are
//! re-ranked every `rank_interval` lookups (and halved then, so the ranking follows
//! the traffic) or on demand with [`MegaflowCache::rank_subtables`].
//!
//! Entries live in a slab and are named by [`MegaflowId`] `{ slot, version }`; a slot's
//! version changes whenever its entry goes, so an id kept elsewhere (the EMC, a
//! batch's pending stats) is detected as stale instead of reaching the slot's next
//! tenant. The cache is bounded; when full, an insertion evicts one entry chosen by
//! CLOCK (second chance): lookups set a referenced bit, the hand clears it and evicts
//! the first entry found without it, which approximates least-recently-used at O(1)
//! amortised cost.

use super::emc::{MaskWords, widen};
use super::key::{KEY_WORDS, Key};
use hashbrown::HashTable;
use std::collections::HashMap;

/// Default bound on the number of entries.
pub const DEFAULT_CAPACITY: usize = 65536;
/// Default number of lookups between two re-rankings of the subtables.
pub const DEFAULT_RANK_INTERVAL: u32 = 1 << 16;

/// A handle on a megaflow entry. Version 0 is never handed out ([`MegaflowId::NONE`]);
/// after 2^32 reuses of one slot a very old handle could alias a new entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MegaflowId {
    pub slot: u32,
    pub version: u32,
}

impl MegaflowId {
    /// An id no entry ever has (an empty EMC way, say).
    pub const NONE: MegaflowId = MegaflowId {
        slot: u32::MAX,
        version: 0,
    };

    #[inline]
    pub fn is_none(&self) -> bool {
        self.version == 0
    }
}

/// One entry as [`MegaflowCache::iter`] and [`MegaflowCache::entry`] show it.
#[derive(Debug)]
pub struct MegaflowEntry<'a, T> {
    pub id: MegaflowId,
    pub mask: &'a Key,
    /// The key under the mask.
    pub key: Key,
    pub value: &'a T,
}

/// A subtable: the entries sharing one mask.
struct Subtable {
    words: MaskWords,
    mask: Key,
    /// (hash of the masked key, slot).
    table: HashTable<(u32, u32)>,
    hits: u64,
}

impl Subtable {
    fn new(mask: &Key) -> Self {
        Subtable {
            words: MaskWords::new(mask),
            mask: *mask,
            table: HashTable::new(),
            hits: 0,
        }
    }
}

/// One slab slot: an entry, or a free slot remembering its next version. Laid out
/// so that a hit's version, value and the key's first (packet) words come together.
#[repr(C)]
struct Slot<T> {
    version: u32,
    subtable: u32,
    hash: u32,
    /// Set by lookups, cleared by the eviction hand (CLOCK's second chance).
    referenced: bool,
    /// `None` when the slot is free.
    value: Option<T>,
    /// The masked key (a plain array: `Key`'s 64-byte alignment would pad each slot).
    key: [u64; KEY_WORDS],
}

/// Per-worker cache of (mask, masked key) → T. See the module docs.
pub struct MegaflowCache<T> {
    slots: Vec<Slot<T>>,
    free_slots: Vec<u32>,
    /// Subtables by id; `None` for an id freed when its last entry went.
    subtables: Vec<Option<Subtable>>,
    free_subtables: Vec<u32>,
    by_mask: HashMap<Key, u32>,
    /// Live subtable ids, most hits first at the last ranking.
    order: Vec<u32>,
    len: usize,
    capacity: usize,
    hand: usize,
    lookups_since_rank: u32,
    rank_interval: u32,
    evictions: u64,
}

impl<T> Default for MegaflowCache<T> {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY)
    }
}

impl<T> MegaflowCache<T> {
    /// A cache holding at most `capacity` entries (at least 1). Memory grows with
    /// use up to that bound.
    pub fn new(capacity: usize) -> Self {
        MegaflowCache {
            slots: Vec::new(),
            free_slots: Vec::new(),
            subtables: Vec::new(),
            free_subtables: Vec::new(),
            by_mask: HashMap::new(),
            order: Vec::new(),
            len: 0,
            capacity: capacity.clamp(1, u32::MAX as usize),
            hand: 0,
            lookups_since_rank: 0,
            rank_interval: DEFAULT_RANK_INTERVAL,
            evictions: 0,
        }
    }

    /// Re-rank the subtables every `n` lookups (at least 1).
    pub fn set_rank_interval(&mut self, n: u32) {
        self.rank_interval = n.max(1);
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn n_subtables(&self) -> usize {
        self.order.len()
    }

    /// Entries evicted to make room since the cache was made.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// Caches `key` under `mask` → `value` and returns the entry's id. If an entry
    /// with this mask and masked key exists, its value is replaced and its id kept
    /// (ids held elsewhere stay valid: they name the same packets). When the cache is
    /// full, one entry is evicted first (see [`MegaflowCache::evictions`]).
    pub fn insert(&mut self, mask: &Key, key: &Key, value: T) -> MegaflowId {
        let key = key.masked(mask).0;
        let sid = match self.by_mask.get(mask) {
            Some(&sid) => sid,
            None => self.add_subtable(mask),
        };
        let (hash, existing) = {
            let st = self.subtable(sid);
            let hash = st.words.hash(&key);
            let slots = &self.slots;
            let found = st
                .table
                .find(widen(hash), |&(h, s)| {
                    h == hash && st.words.same(&key, &slots[s as usize].key)
                })
                .map(|&(_, s)| s);
            (hash, found)
        };
        if let Some(s) = existing {
            let slot = &mut self.slots[s as usize];
            slot.value = Some(value);
            return MegaflowId {
                slot: s,
                version: slot.version,
            };
        }
        if self.len >= self.capacity {
            self.evict_one();
            // Evicting may have freed the subtable we are inserting into.
            if self.by_mask.get(mask) != Some(&sid) {
                let sid = self.add_subtable(mask);
                return self.insert_new(sid, hash, key, value);
            }
        }
        self.insert_new(sid, hash, key, value)
    }

    fn insert_new(&mut self, sid: u32, hash: u32, key: [u64; KEY_WORDS], value: T) -> MegaflowId {
        let s = match self.free_slots.pop() {
            Some(s) => s,
            None => {
                self.slots.push(Slot {
                    version: 1,
                    subtable: 0,
                    hash: 0,
                    referenced: false,
                    key: [0; KEY_WORDS],
                    value: None,
                });
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[s as usize];
        slot.subtable = sid;
        slot.hash = hash;
        slot.referenced = false;
        slot.key = key;
        slot.value = Some(value);
        let id = MegaflowId {
            slot: s,
            version: slot.version,
        };
        if let Some(st) = self.subtables[sid as usize].as_mut() {
            st.table
                .insert_unique(widen(hash), (hash, s), |&(h, _)| widen(h));
        }
        self.len += 1;
        id
    }

    fn subtable(&self, sid: u32) -> &Subtable {
        // Ids come from by_mask / slots, which only name live subtables.
        match &self.subtables[sid as usize] {
            Some(st) => st,
            None => unreachable!("megaflow subtable {sid} is not live"),
        }
    }

    fn add_subtable(&mut self, mask: &Key) -> u32 {
        let st = Some(Subtable::new(mask));
        let sid = match self.free_subtables.pop() {
            Some(sid) => {
                self.subtables[sid as usize] = st;
                sid
            }
            None => {
                self.subtables.push(st);
                (self.subtables.len() - 1) as u32
            }
        };
        self.by_mask.insert(*mask, sid);
        // A new mask has no hits yet: try it last until the next ranking.
        self.order.push(sid);
        sid
    }

    /// The entry matching `key`, if any, and marks it used. Subtables are tried in
    /// rank order; the first hit is the answer (any matching entry is correct).
    #[inline]
    pub fn lookup(&mut self, key: &Key) -> Option<(MegaflowId, &mut T)> {
        self.lookups_since_rank += 1;
        if self.lookups_since_rank >= self.rank_interval {
            self.rank_subtables();
        }
        let Self {
            subtables,
            slots,
            order,
            ..
        } = self;
        for &sid in order.iter() {
            let Some(st) = subtables[sid as usize].as_mut() else {
                continue;
            };
            let hash = st.words.hash(&key.0);
            let found = st
                .table
                .find(widen(hash), |&(h, s)| {
                    h == hash && st.words.same(&key.0, &slots[s as usize].key)
                })
                .map(|&(_, s)| s);
            if let Some(s) = found {
                st.hits += 1;
                let slot = &mut slots[s as usize];
                slot.referenced = true;
                let id = MegaflowId {
                    slot: s,
                    version: slot.version,
                };
                return slot.value.as_mut().map(|v| (id, v));
            }
        }
        None
    }

    /// Sorts the subtables by hits since the last ranking, most first, and halves the
    /// counts so old traffic fades. Allocation-free (it runs from `lookup`).
    pub fn rank_subtables(&mut self) {
        self.lookups_since_rank = 0;
        let subtables = &mut self.subtables;
        self.order.sort_unstable_by_key(|&sid| {
            std::cmp::Reverse(subtables[sid as usize].as_ref().map_or(0, |st| st.hits))
        });
        for st in subtables.iter_mut().flatten() {
            st.hits /= 2;
        }
    }

    fn live(&self, id: MegaflowId) -> Option<&Slot<T>> {
        self.slots
            .get(id.slot as usize)
            .filter(|s| s.version == id.version && s.value.is_some())
    }

    pub fn get(&self, id: MegaflowId) -> Option<&T> {
        self.live(id).and_then(|s| s.value.as_ref())
    }

    /// The entry's value, or `None` if the id is stale (its entry was removed or
    /// evicted): the EMC's contract.
    pub fn get_mut(&mut self, id: MegaflowId) -> Option<&mut T> {
        self.slots
            .get_mut(id.slot as usize)
            .filter(|s| s.version == id.version)
            .and_then(|s| s.value.as_mut())
    }

    pub fn contains(&self, id: MegaflowId) -> bool {
        self.live(id).is_some()
    }

    /// The entry's mask, masked key and value.
    pub fn entry(&self, id: MegaflowId) -> Option<MegaflowEntry<'_, T>> {
        let slot = self.live(id)?;
        self.entry_of(id, slot)
    }

    fn entry_of<'a>(&'a self, id: MegaflowId, slot: &'a Slot<T>) -> Option<MegaflowEntry<'a, T>> {
        let st = self.subtables.get(slot.subtable as usize)?.as_ref()?;
        Some(MegaflowEntry {
            id,
            mask: &st.mask,
            key: Key(slot.key),
            value: slot.value.as_ref()?,
        })
    }

    /// Removes the entry; `None` if the id is stale.
    pub fn remove(&mut self, id: MegaflowId) -> Option<T> {
        self.live(id)?;
        self.remove_slot(id.slot)
    }

    fn remove_slot(&mut self, s: u32) -> Option<T> {
        let slot = &mut self.slots[s as usize];
        let value = slot.value.take()?;
        // A new version makes every id of the old tenant stale.
        slot.version = match slot.version.wrapping_add(1) {
            0 => 1,
            v => v,
        };
        let (sid, hash) = (slot.subtable, slot.hash);
        self.free_slots.push(s);
        self.len -= 1;
        let now_empty = match self.subtables[sid as usize].as_mut() {
            Some(st) => {
                if let Ok(e) = st.table.find_entry(widen(hash), |&(_, x)| x == s) {
                    e.remove();
                }
                st.table.is_empty()
            }
            None => false,
        };
        if now_empty {
            // An empty subtable would only cost every miss a probe: drop it.
            if let Some(st) = self.subtables[sid as usize].take() {
                self.by_mask.remove(&st.mask);
            }
            self.free_subtables.push(sid);
            self.order.retain(|&x| x != sid);
        }
        Some(value)
    }

    /// CLOCK: skip entries used since the hand last passed (clearing their bit),
    /// evict the first one that was not. Two sweeps at most.
    fn evict_one(&mut self) {
        let n = self.slots.len();
        if n == 0 {
            return;
        }
        for _ in 0..2 * n + 1 {
            let s = self.hand % n;
            self.hand = (s + 1) % n;
            let slot = &mut self.slots[s];
            if slot.value.is_none() {
                continue;
            }
            if slot.referenced {
                slot.referenced = false;
                continue;
            }
            if self.remove_slot(s as u32).is_some() {
                self.evictions += 1;
            }
            return;
        }
    }

    /// Keeps the entries for which `f` returns true (revalidation: drop the megaflows
    /// a flow table change made wrong, or the idle ones).
    pub fn retain(&mut self, mut f: impl FnMut(&mut T) -> bool) {
        for s in 0..self.slots.len() {
            let keep = match self.slots[s].value.as_mut() {
                Some(v) => f(v),
                None => true,
            };
            if !keep {
                self.remove_slot(s as u32);
            }
        }
    }

    /// Removes every entry (every id handed out becomes stale).
    pub fn clear(&mut self) {
        for s in 0..self.slots.len() {
            self.remove_slot(s as u32);
        }
        self.hand = 0;
    }

    /// Every entry, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = MegaflowEntry<'_, T>> + '_ {
        self.slots.iter().enumerate().filter_map(move |(s, slot)| {
            slot.value.as_ref()?;
            let id = MegaflowId {
                slot: s as u32,
                version: slot.version,
            };
            self.entry_of(id, slot)
        })
    }

    /// An estimate of the heap and inline bytes held.
    pub fn memory_bytes(&self) -> usize {
        use std::mem::size_of;
        let tables: usize = self
            .subtables
            .iter()
            .flatten()
            .map(|st| st.table.allocation_size())
            .sum();
        size_of::<Self>()
            + self.slots.capacity() * size_of::<Slot<T>>()
            + self.free_slots.capacity() * 4
            + self.subtables.capacity() * size_of::<Option<Subtable>>()
            + self.free_subtables.capacity() * 4
            + self.order.capacity() * 4
            // std's HashMap: one (key, id) pair and a control byte per bucket.
            + self.by_mask.capacity() * (size_of::<(Key, u32)>() + 1)
            + tables
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    /// Masks sharing words in different ways, and the empty mask (matches all).
    fn mask_pool() -> [Key; 5] {
        let mut m = [Key::ZERO; 5];
        m[0].0[0] = 0xffff_ffff; // in_port
        m[1].0[0] = 0xffff_ffff; // in_port + eth_dst
        m[1].0[2] = 0xffff_ffff_ffff;
        m[2].0[3] = 0xffff_ff00 << 32; // ip_dst/24
        m[3].0[1] = 0xff << 48; // 5-tuple
        m[3].0[3] = u64::MAX;
        m[3].0[4] = 0xffff_ffff;
        m
    }

    fn key_from(a: u64, b: u64, c: u64, d: u64) -> Key {
        let mut k = Key::ZERO;
        k.0[0] = a | 0x0800 << 32;
        k.0[1] = 6 << 48 | b;
        k.0[2] = c;
        k.0[3] = (0x0a00_0000 | d << 6) << 32 | (0x0a00_0001 + b);
        k.0[4] = a << 16 | d;
        k
    }

    fn arb_key() -> impl Strategy<Value = Key> {
        (0u64..3, 0u64..3, 0u64..3, 0u64..8).prop_map(|(a, b, c, d)| key_from(a, b, c, d))
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(usize, Key),
        Lookup(Key),
        Remove(usize),
        Rank,
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0usize..5, arb_key()).prop_map(|(m, k)| Op::Insert(m, k)),
            4 => arb_key().prop_map(Op::Lookup),
            1 => any::<usize>().prop_map(Op::Remove),
            1 => Just(Op::Rank),
        ]
    }

    proptest! {
        /// (c) Every answer matches the key, every live entry is found, and entries
        /// disappear only by removal or counted eviction.
        #[test]
        fn answers_match_and_live_entries_are_found(
            ops in proptest::collection::vec(arb_op(), 1..200),
            capacity in 1usize..12,
        ) {
            let masks = mask_pool();
            let mut mc = MegaflowCache::new(capacity);
            mc.set_rank_interval(7);
            // Every id handed out: (mask, masked key, value); removed ids leave.
            let mut model: HashMap<MegaflowId, (Key, Key, u32)> = HashMap::new();
            let mut removed = 0u64;
            for (n, op) in ops.into_iter().enumerate() {
                let n = n as u32;
                match op {
                    Op::Insert(m, k) => {
                        let id = mc.insert(&masks[m], &k, n);
                        prop_assert!(!id.is_none());
                        model.insert(id, (masks[m], k.masked(&masks[m]), n));
                    }
                    Op::Lookup(k) => match mc.lookup(&k) {
                        Some((id, v)) => {
                            let v = *v;
                            let Some(&(mask, mk, val)) = model.get(&id) else {
                                return Err(TestCaseError::fail("unknown id"));
                            };
                            prop_assert!(k.matches(&mask, &mk));
                            prop_assert_eq!(v, val);
                        }
                        None => {
                            for (id, (mask, mk, _)) in &model {
                                prop_assert!(!(mc.contains(*id) && k.matches(mask, mk)));
                            }
                        }
                    },
                    Op::Remove(i) => {
                        let live: Vec<_> = model.keys().copied().filter(|id| mc.contains(*id)).collect();
                        if !live.is_empty() {
                            let id = live[i % live.len()];
                            prop_assert!(mc.remove(id).is_some());
                            prop_assert!(mc.remove(id).is_none());
                            prop_assert!(mc.get(id).is_none());
                            model.remove(&id);
                            removed += 1;
                        }
                    }
                    Op::Rank => mc.rank_subtables(),
                }
                prop_assert!(mc.len() <= capacity);
            }
            let live: Vec<_> = model.keys().copied().filter(|id| mc.contains(*id)).collect();
            prop_assert_eq!(live.len(), mc.len());
            prop_assert_eq!(mc.iter().count(), mc.len());
            // Gone without a remove: exactly the evictions.
            prop_assert_eq!((model.len() - live.len()) as u64, mc.evictions());
            let _ = removed;
            for id in live {
                let (mask, mk, val) = model[&id];
                let e = mc.entry(id).expect("live");
                prop_assert_eq!(*e.mask, mask);
                prop_assert_eq!(e.key, mk);
                prop_assert_eq!(*e.value, val);
                let Some((got, _)) = mc.lookup(&mk) else {
                    return Err(TestCaseError::fail("live entry not found"));
                };
                let (gm, gk, _) = model[&got];
                prop_assert!(mk.matches(&gm, &gk));
            }
        }
    }

    fn one_word_mask(w: usize) -> Key {
        let mut m = Key::ZERO;
        m.0[w] = u64::MAX;
        m
    }

    fn one_word_key(w: usize, v: u64) -> Key {
        let mut k = Key::ZERO;
        k.0[w] = v;
        k
    }

    #[test]
    fn replace_keeps_the_id() {
        let mut mc = MegaflowCache::new(4);
        let m = one_word_mask(3);
        let a = mc.insert(&m, &one_word_key(3, 1), "a");
        // Bits outside the mask do not make a different entry.
        let mut k = one_word_key(3, 1);
        k.0[5] = 99;
        let b = mc.insert(&m, &k, "b");
        assert_eq!(a, b);
        assert_eq!(mc.len(), 1);
        assert_eq!(mc.get(a), Some(&"b"));
        assert_eq!(mc.lookup(&k).map(|(id, v)| (id, *v)), Some((a, "b")));
    }

    #[test]
    fn stale_ids_are_detected() {
        let mut mc = MegaflowCache::new(4);
        let m = one_word_mask(0);
        let a = mc.insert(&m, &one_word_key(0, 1), 1);
        assert_eq!(mc.remove(a), Some(1));
        assert_eq!(mc.n_subtables(), 0);
        // The slot is reused with a new version: the old id reaches nothing.
        let b = mc.insert(&m, &one_word_key(0, 2), 2);
        assert_eq!(a.slot, b.slot);
        assert_ne!(a.version, b.version);
        assert_eq!(mc.get_mut(a), None);
        assert_eq!(mc.get_mut(b), Some(&mut 2));
        assert!(mc.entry(a).is_none());
        assert_eq!(mc.remove(a), None);
        assert_eq!(mc.get(MegaflowId::NONE), None);
        assert_eq!(
            mc.get(MegaflowId {
                slot: 1000,
                version: 1
            }),
            None
        );
    }

    #[test]
    fn eviction_gives_used_entries_a_second_chance() {
        let mut mc = MegaflowCache::new(3);
        let m = one_word_mask(0);
        let ids: Vec<_> = (1..=3)
            .map(|v| mc.insert(&m, &one_word_key(0, v), v))
            .collect();
        // Use 1 and 3; 2 is the one not used since the hand last passed.
        assert!(mc.lookup(&one_word_key(0, 1)).is_some());
        assert!(mc.lookup(&one_word_key(0, 3)).is_some());
        let d = mc.insert(&m, &one_word_key(0, 4), 4);
        assert_eq!(mc.evictions(), 1);
        assert_eq!(mc.len(), 3);
        assert!(mc.contains(ids[0]) && mc.contains(ids[2]) && mc.contains(d));
        assert!(!mc.contains(ids[1]));
        assert!(mc.lookup(&one_word_key(0, 2)).is_none());
        // No bits set now (the hand cleared them): the next victim is the next slot.
        mc.insert(&m, &one_word_key(0, 5), 5);
        assert_eq!(mc.evictions(), 2);
        assert_eq!(mc.len(), 3);
    }

    #[test]
    fn eviction_of_a_subtables_last_entry() {
        let mut mc = MegaflowCache::new(1);
        let a = mc.insert(&one_word_mask(0), &one_word_key(0, 1), 1);
        let b = mc.insert(&one_word_mask(0), &one_word_key(0, 2), 2);
        assert!(!mc.contains(a) && mc.contains(b));
        let c = mc.insert(&one_word_mask(3), &one_word_key(3, 1), 3);
        assert!(!mc.contains(b) && mc.contains(c));
        assert_eq!(mc.n_subtables(), 1);
        assert_eq!(mc.evictions(), 2);
    }

    #[test]
    fn ranking_puts_the_busiest_subtable_first() {
        let mut mc = MegaflowCache::new(16);
        mc.set_rank_interval(u32::MAX);
        mc.insert(&one_word_mask(0), &one_word_key(0, 1), 0);
        mc.insert(&one_word_mask(3), &one_word_key(3, 1), 3);
        let hot = one_word_key(3, 1);
        for _ in 0..10 {
            assert!(mc.lookup(&hot).is_some());
        }
        let first = |mc: &MegaflowCache<i32>| {
            let sid = mc.order[0] as usize;
            mc.subtables[sid].as_ref().map(|st| st.mask)
        };
        assert_eq!(first(&mc), Some(one_word_mask(0)));
        mc.rank_subtables();
        assert_eq!(first(&mc), Some(one_word_mask(3)));
    }

    #[test]
    fn retain_and_clear() {
        let mut mc = MegaflowCache::new(16);
        let ids: Vec<_> = (0..8u64)
            .map(|v| {
                mc.insert(
                    &one_word_mask((v % 2) as usize),
                    &one_word_key((v % 2) as usize, v),
                    v,
                )
            })
            .collect();
        mc.retain(|v| *v % 2 == 0);
        assert_eq!(mc.len(), 4);
        assert_eq!(mc.n_subtables(), 1);
        assert!(
            ids.iter()
                .enumerate()
                .all(|(i, id)| mc.contains(*id) == (i % 2 == 0))
        );
        assert!(mc.memory_bytes() > 0);
        mc.clear();
        assert!(mc.is_empty());
        assert_eq!(mc.n_subtables(), 0);
        assert!(ids.iter().all(|id| !mc.contains(*id)));
        assert!(mc.lookup(&one_word_key(0, 0)).is_none());
    }

    #[test]
    fn empty_mask_matches_everything() {
        let mut mc = MegaflowCache::new(4);
        let id = mc.insert(&Key::ZERO, &one_word_key(7, 7), ());
        assert_eq!(mc.lookup(&Key::ALL_ONES).map(|(i, _)| i), Some(id));
        assert_eq!(mc.entry(id).map(|e| e.key), Some(Key::ZERO));
    }
}

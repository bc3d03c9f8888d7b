//! The flow table classifier: tuple-space search over prioritised rules (the idea of
//! OVS's `lib/classifier.c`, without its RCU and versioning: the caller serialises
//! access).
//!
//! Rules are grouped by mask into subtables. Within a subtable every rule's value is
//! masked the same way, so the rules that can match a packet are found with one hash
//! probe of the packet's key under that mask (over the mask's non-zero words only).
//! A packet is classified by probing subtables one after another.
//!
//! # Early termination
//!
//! Each subtable knows the highest priority among its rules, and lookup visits the
//! subtables in decreasing order of that maximum. Once a rule of priority `p` has
//! matched, a subtable whose maximum is below `p` cannot hold a better rule, and
//! neither can any subtable after it: lookup stops there. A subtable whose maximum
//! *equals* `p` is still probed, because it may hold a rule of priority `p` inserted
//! earlier, which wins ties. With the common layout — specific high-priority rules,
//! broad low-priority defaults — most packets are answered by the first subtables.
//!
//! # The consulted mask (what makes megaflows correct)
//!
//! [`Classifier::lookup`] ORs into `consulted` the mask of every subtable it probed.
//! **Invariant: any key that agrees with the looked-up key on every bit set in
//! `consulted` gets the same answer (the same rule, or no rule).** Reasoning:
//! the order of subtables does not depend on the key; each probe's outcome depends
//! only on the key's bits under that subtable's mask; which subtable comes next, or
//! whether lookup stops, depends only on the outcomes so far. So a key that agrees on
//! the probed masks takes the same path and gets the same result. Subtables skipped by
//! early termination are not consulted: their rules could not have changed the answer.
//! The worker caches `(consulted, key & consulted) → answer` as a megaflow.

use super::emc::{MaskWords, widen};
use super::key::Key;
use super::spec::Match;
use hashbrown::HashTable;
use std::collections::{BTreeMap, HashMap};

/// One rule of a bucket.
struct Rule<T> {
    priority: u16,
    /// Insertion order across the whole classifier: breaks priority ties.
    seq: u64,
    value: T,
}

/// The rules sharing one match (same mask, same masked value), at distinct priorities.
struct Bucket<T> {
    hash: u32,
    m: Match,
    /// Highest priority first; never empty while the bucket is in its table.
    rules: Vec<Rule<T>>,
}

impl<T> Bucket<T> {
    /// Position of `priority` in `rules` (sorted descending).
    fn find(&self, priority: u16) -> Result<usize, usize> {
        self.rules.binary_search_by(|r| priority.cmp(&r.priority))
    }
}

/// All rules with one mask.
struct Subtable<T> {
    words: MaskWords,
    mask: Key,
    /// Buckets boxed: a table resize moves 8-byte pointers, not 400-byte matches.
    table: HashTable<Box<Bucket<T>>>,
    /// How many rules have each priority: gives the new maximum after a removal.
    priorities: BTreeMap<u16, u32>,
    n_rules: usize,
}

impl<T> Subtable<T> {
    fn max_priority(&self) -> Option<u16> {
        self.priorities.last_key_value().map(|(&p, _)| p)
    }

    /// The bucket whose match `key` satisfies (at most one: same mask, so distinct
    /// values are disjoint).
    #[inline]
    fn find(&self, key: &Key) -> Option<&Bucket<T>> {
        let hash = self.words.hash(&key.0);
        self.table
            .find(widen(hash), |b| {
                b.hash == hash && self.words.same(&key.0, &b.m.value.0)
            })
            .map(|b| &**b)
    }
}

/// Prioritised rules `(Match, priority) → T`, looked up by tuple-space search. See
/// the module docs for the lookup order and the consulted-mask invariant.
pub struct Classifier<T> {
    subtables: Vec<Subtable<T>>,
    by_mask: HashMap<Key, usize>,
    /// (max priority, index in `subtables`), highest first: lookup's visiting order.
    order: Vec<(u16, u32)>,
    n_rules: usize,
    next_seq: u64,
}

impl<T> Default for Classifier<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// The match with its value masked (a caller's unmasked value would never match).
fn normalized(m: &Match) -> Match {
    Match {
        value: m.value.masked(&m.mask),
        mask: m.mask,
    }
}

impl<T> Classifier<T> {
    pub fn new() -> Self {
        Classifier {
            subtables: Vec::new(),
            by_mask: HashMap::new(),
            order: Vec::new(),
            n_rules: 0,
            next_seq: 0,
        }
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.n_rules
    }

    pub fn is_empty(&self) -> bool {
        self.n_rules == 0
    }

    /// Number of distinct masks.
    pub fn n_subtables(&self) -> usize {
        self.subtables.len()
    }

    /// Adds a rule. A rule with the same match and priority is replaced: its value is
    /// returned and the rule keeps its place in insertion order (it is the same rule,
    /// modified). Costs one hash probe plus, when the subtable's maximum priority
    /// changes, a re-sort of the subtable order (a few dozen entries).
    pub fn insert(&mut self, m: Match, priority: u16, value: T) -> Option<T> {
        let m = normalized(&m);
        let si = match self.by_mask.get(&m.mask) {
            Some(&si) => si,
            None => self.add_subtable(&m.mask),
        };
        let seq = self.next_seq;
        let st = &mut self.subtables[si];
        let old_max = st.max_priority();
        let hash = st.words.hash(&m.value.0);
        let rule = Rule {
            priority,
            seq,
            value,
        };
        match st
            .table
            .find_mut(widen(hash), |b| b.hash == hash && b.m.value == m.value)
        {
            Some(b) => match b.find(priority) {
                Ok(i) => return Some(std::mem::replace(&mut b.rules[i].value, rule.value)),
                Err(i) => b.rules.insert(i, rule),
            },
            None => {
                let b = Box::new(Bucket {
                    hash,
                    m,
                    rules: vec![rule],
                });
                st.table.insert_unique(widen(hash), b, |b| widen(b.hash));
            }
        }
        *st.priorities.entry(priority).or_insert(0) += 1;
        st.n_rules += 1;
        let changed = st.max_priority() != old_max;
        self.next_seq += 1;
        self.n_rules += 1;
        if changed {
            self.reorder(si);
        }
        None
    }

    /// Removes the rule with exactly this match and priority.
    pub fn remove(&mut self, m: &Match, priority: u16) -> Option<T> {
        let m = normalized(m);
        let si = *self.by_mask.get(&m.mask)?;
        let st = &mut self.subtables[si];
        let old_max = st.max_priority();
        let hash = st.words.hash(&m.value.0);
        let mut entry = st
            .table
            .find_entry(widen(hash), |b| b.hash == hash && b.m.value == m.value)
            .ok()?;
        let b = entry.get_mut();
        let i = b.find(priority).ok()?;
        let rule = b.rules.remove(i);
        if b.rules.is_empty() {
            entry.remove();
        }
        if let Some(n) = st.priorities.get_mut(&priority) {
            *n -= 1;
            if *n == 0 {
                st.priorities.remove(&priority);
            }
        }
        st.n_rules -= 1;
        self.n_rules -= 1;
        if st.n_rules == 0 {
            self.remove_subtable(si);
        } else if st.max_priority() != old_max {
            self.reorder(si);
        }
        Some(rule.value)
    }

    /// The value of the rule with exactly this match and priority.
    pub fn get(&self, m: &Match, priority: u16) -> Option<&T> {
        let m = normalized(m);
        let st = &self.subtables[*self.by_mask.get(&m.mask)?];
        let hash = st.words.hash(&m.value.0);
        let b = st
            .table
            .find(widen(hash), |b| b.hash == hash && b.m.value == m.value)?;
        let i = b.find(priority).ok()?;
        Some(&b.rules[i].value)
    }

    /// The highest-priority rule matching `key` (among equal priorities the one
    /// inserted first), and ORs into `consulted` the masks of the subtables probed.
    /// See the module docs for why that makes `(consulted, key & consulted)` a valid
    /// megaflow. No allocation.
    #[inline]
    pub fn lookup(&self, key: &Key, consulted: &mut Key) -> Option<(&Match, u16, &T)> {
        let mut best: Option<(&Bucket<T>, &Rule<T>)> = None;
        for &(max_priority, si) in &self.order {
            if let Some((_, r)) = best {
                // Sorted by maximum: nothing from here on can beat (or tie) `r`.
                if max_priority < r.priority {
                    break;
                }
            }
            let st = &self.subtables[si as usize];
            st.words.or_into(consulted);
            let Some((b, r)) = st.find(key).and_then(|b| Some((b, b.rules.first()?))) else {
                continue;
            };
            let better = match best {
                None => true,
                Some((_, cur)) => {
                    r.priority > cur.priority || (r.priority == cur.priority && r.seq < cur.seq)
                }
            };
            if better {
                best = Some((b, r));
            }
        }
        best.map(|(b, r)| (&b.m, r.priority, &r.value))
    }

    /// Every rule: (match, priority, value), in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&Match, u16, &T)> + '_ {
        self.subtables.iter().flat_map(|st| {
            st.table
                .iter()
                .flat_map(|b| b.rules.iter().map(move |r| (&b.m, r.priority, &r.value)))
        })
    }

    /// Removes every rule.
    pub fn clear(&mut self) {
        self.subtables.clear();
        self.by_mask.clear();
        self.order.clear();
        self.n_rules = 0;
    }

    /// An estimate of the bytes held (walks every bucket: not for the hot path).
    pub fn memory_bytes(&self) -> usize {
        use std::mem::size_of;
        // A BTreeMap<u16, u32> node holds up to 11 entries in ~100 bytes.
        const BTREE_BYTES_PER_ENTRY: usize = 16;
        let mut total = size_of::<Self>()
            + self.subtables.capacity() * size_of::<Subtable<T>>()
            + self.order.capacity() * size_of::<(u16, u32)>()
            + self.by_mask.capacity() * (size_of::<(Key, usize)>() + 1);
        for st in &self.subtables {
            total += st.table.allocation_size() + st.priorities.len() * BTREE_BYTES_PER_ENTRY;
            for b in st.table.iter() {
                total += size_of::<Bucket<T>>() + b.rules.capacity() * size_of::<Rule<T>>();
            }
        }
        total
    }

    fn add_subtable(&mut self, mask: &Key) -> usize {
        let si = self.subtables.len();
        self.subtables.push(Subtable {
            words: MaskWords::new(mask),
            mask: *mask,
            table: HashTable::new(),
            priorities: BTreeMap::new(),
            n_rules: 0,
        });
        self.by_mask.insert(*mask, si);
        // Placed for real by `reorder` once its first rule is in.
        self.order.push((0, si as u32));
        si
    }

    /// Drops the (empty) subtable `si`; the last subtable takes its index.
    fn remove_subtable(&mut self, si: usize) {
        let last = self.subtables.len() - 1;
        let st = self.subtables.swap_remove(si);
        self.by_mask.remove(&st.mask);
        self.order.retain(|&(_, x)| x as usize != si);
        if si != last {
            if let Some(moved) = self.subtables.get(si) {
                self.by_mask.insert(moved.mask, si);
            }
            for e in self.order.iter_mut() {
                if e.1 as usize == last {
                    e.1 = si as u32;
                }
            }
        }
    }

    /// Records subtable `si`'s new maximum priority and restores the visiting order.
    fn reorder(&mut self, si: usize) {
        let max = self.subtables[si].max_priority().unwrap_or(0);
        for e in self.order.iter_mut() {
            if e.1 as usize == si {
                e.0 = max;
            }
        }
        self.order.sort_unstable_by(|a, b| b.0.cmp(&a.0));
    }
}

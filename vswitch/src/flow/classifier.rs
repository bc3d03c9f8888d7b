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
//!
//! # Prefix tracking (OVS's `prefixes=ip_dst,ip_src`)
//!
//! Probing a subtable consults its whole mask, so one `ip_dst=10.1.2.3` rule would
//! make every megaflow match all 32 destination bits. Instead, two tries hold the
//! ip_dst and ip_src prefixes of all rules whose mask there is a CIDR prefix. Before
//! a probe of such a subtable (prefix length `l`) counts as consulted, lookup asks the
//! trie whether any rule prefix of length `l` covers the packet's address; if none
//! does, the miss is explained by the leading address bits that decided it (often a
//! handful: the point where the address leaves the trie), and only those are
//! consulted. Only misses ask (a hit needs the whole mask anyway), each trie is
//! walked at most once per lookup, and only if some subtable asks.

use super::emc::{MaskWords, widen};
use super::key::{Key, W_NW};
use super::spec::Match;
use hashbrown::HashTable;
use std::collections::{BTreeMap, HashMap};
use trie::{PrefixTrie, cidr_len, prefix_mask};

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
    /// The mask's prefix length on each [`TRIE_SHIFTS`] address, 0 when the mask
    /// there is empty or not a CIDR prefix (then the trie cannot speak for it).
    trie_plen: [u32; 2],
}

/// Where the tracked addresses sit in word [`W_NW`]: ip_dst (and arp_tpa, which shares
/// its bits) in the high half, ip_src (arp_spa) in the low half.
const TRIE_SHIFTS: [u32; 2] = [32, 0];

#[inline]
fn trie_field(k: &Key, f: usize) -> u32 {
    (k.0[W_NW] >> TRIE_SHIFTS[f]) as u32
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
    /// Whether subtables consult `tries` before probing.
    prefix_tracking: bool,
    /// The prefixes of every rule whose mask on ip_dst / ip_src is a CIDR prefix.
    tries: [PrefixTrie; 2],
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
    /// An empty classifier with prefix tracking on ip_dst and ip_src (as OVS's
    /// default `prefixes=ip_dst,ip_src`).
    pub fn new() -> Self {
        Self::with_prefix_tracking(true)
    }

    /// Without prefix tracking, lookups skip no subtable on their addresses: a little
    /// faster to classify, but megaflows then match every address bit a probed
    /// subtable looks at.
    pub fn with_prefix_tracking(on: bool) -> Self {
        Classifier {
            subtables: Vec::new(),
            by_mask: HashMap::new(),
            order: Vec::new(),
            n_rules: 0,
            next_seq: 0,
            prefix_tracking: on,
            tries: [PrefixTrie::new(), PrefixTrie::new()],
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
        for (f, &plen) in st.trie_plen.iter().enumerate() {
            if plen > 0 {
                self.tries[f].insert(trie_field(&m.value, f), plen);
            }
        }
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
        for (f, &plen) in st.trie_plen.iter().enumerate() {
            if plen > 0 {
                self.tries[f].remove(trie_field(&m.value, f), plen);
            }
        }
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
        // Each trie is walked at most once, when a subtable first asks.
        let mut walks: [Option<(u64, u32)>; 2] = [None; 2];
        for &(max_priority, si) in &self.order {
            if let Some((_, r)) = best {
                // Sorted by maximum: nothing from here on can beat (or tie) `r`.
                if max_priority < r.priority {
                    break;
                }
            }
            let st = &self.subtables[si as usize];
            // Probe first: a hit needs the whole mask anyway, and the probe is cheaper
            // than a trie walk. Only a miss asks the trie whether fewer bits prove it.
            let Some((b, r)) = st.find(key).and_then(|b| Some((b, b.rules.first()?))) else {
                if !(self.prefix_tracking && self.ruled_out_by_trie(st, key, &mut walks, consulted))
                {
                    st.words.or_into(consulted);
                }
                continue;
            };
            st.words.or_into(consulted);
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

    /// For a subtable whose probe missed: whether no rule anywhere has `st`'s prefix
    /// length on a tracked address covering the key's address. Then only the address
    /// bits that decide this go into `consulted` — `min(plen, bits the trie walk
    /// needed)` — instead of `st`'s whole mask: any key agreeing on them gets the same
    /// trie answer, so its probe of `st` misses too (a hit would be a covering rule),
    /// which keeps the consulted-mask invariant. When the trie cannot rule `st` out,
    /// the caller consults the whole mask as usual.
    #[inline]
    fn ruled_out_by_trie(
        &self,
        st: &Subtable<T>,
        key: &Key,
        walks: &mut [Option<(u64, u32)>; 2],
        consulted: &mut Key,
    ) -> bool {
        for f in 0..2 {
            let plen = st.trie_plen[f];
            if plen == 0 {
                continue;
            }
            let (plens, check) =
                *walks[f].get_or_insert_with(|| self.tries[f].lookup(trie_field(key, f)));
            if plens & (1 << plen) == 0 {
                consulted.0[W_NW] |= u64::from(prefix_mask(plen.min(check))) << TRIE_SHIFTS[f];
                return true;
            }
        }
        false
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
        self.tries = [PrefixTrie::new(), PrefixTrie::new()];
    }

    /// An estimate of the bytes held (walks every bucket: not for the hot path).
    pub fn memory_bytes(&self) -> usize {
        use std::mem::size_of;
        // A BTreeMap<u16, u32> node holds up to 11 entries in ~100 bytes.
        const BTREE_BYTES_PER_ENTRY: usize = 16;
        let mut total = size_of::<Self>()
            + self.subtables.capacity() * size_of::<Subtable<T>>()
            + self.order.capacity() * size_of::<(u16, u32)>()
            + self.by_mask.capacity() * (size_of::<(Key, usize)>() + 1)
            + self
                .tries
                .iter()
                .map(PrefixTrie::memory_bytes)
                .sum::<usize>();
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
        let trie_plen = std::array::from_fn(|f| {
            let bits = trie_field(mask, f);
            match cidr_len(bits) {
                Some(len) if self.prefix_tracking => len,
                _ => 0,
            }
        });
        self.subtables.push(Subtable {
            words: MaskWords::new(mask),
            mask: *mask,
            table: HashTable::new(),
            priorities: BTreeMap::new(),
            n_rules: 0,
            trie_plen,
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
        self.order.sort_unstable_by_key(|e| std::cmp::Reverse(e.0));
    }
}

/// Prefix tries over the IPv4 address fields (OVS's `prefixes=ip_dst,ip_src`): which
/// prefix lengths of the rules' addresses cover a packet's address, and how many of
/// its leading bits that answer depends on.
mod trie {
    const NIL: u32 = u32::MAX;

    /// The top `len` bits set.
    #[inline]
    pub(super) fn prefix_mask(len: u32) -> u32 {
        if len == 0 { 0 } else { u32::MAX << (32 - len) }
    }

    /// Bit `pos` counted from the most significant (0..32).
    #[inline]
    fn bit(a: u32, pos: u32) -> usize {
        ((a >> (31 - pos)) & 1) as usize
    }

    /// The prefix `len` if `mask` is a non-empty CIDR mask (leading ones only).
    pub(super) fn cidr_len(mask: u32) -> Option<u32> {
        let len = mask.leading_ones();
        (len > 0 && mask == prefix_mask(len)).then_some(len)
    }

    #[derive(Clone, Copy)]
    struct Node {
        /// The node's whole prefix, left-aligned, zero past `end`.
        bits: u32,
        /// Its length: the depth at which this node ends.
        end: u32,
        /// Rules whose prefix is exactly this one.
        count: u32,
        child: [u32; 2],
    }

    /// A path-compressed binary trie of counted prefixes. Every node other than the
    /// root ends a rule prefix or branches in two, so a walk visits at most one node
    /// per prefix length present, and usually far fewer.
    pub(super) struct PrefixTrie {
        nodes: Vec<Node>,
        free: Vec<u32>,
    }

    const ROOT: usize = 0;

    impl PrefixTrie {
        pub(super) fn new() -> Self {
            PrefixTrie {
                nodes: vec![Node {
                    bits: 0,
                    end: 0,
                    count: 0,
                    child: [NIL; 2],
                }],
                free: Vec::new(),
            }
        }

        fn alloc(&mut self, n: Node) -> u32 {
            match self.free.pop() {
                Some(i) => {
                    self.nodes[i as usize] = n;
                    i
                }
                None => {
                    self.nodes.push(n);
                    (self.nodes.len() - 1) as u32
                }
            }
        }

        /// For address `a`: bit `l` of the first result is set when some prefix of
        /// length `l` covers `a`; the second is how many leading bits of `a` decide
        /// that answer for a given length `l`: `min(l, second)` (see `lookup` in the
        /// classifier for why this is enough to unwildcard).
        #[inline]
        pub(super) fn lookup(&self, a: u32) -> (u64, u32) {
            let mut plens = 0u64;
            let mut n = &self.nodes[ROOT];
            loop {
                if n.count > 0 {
                    plens |= 1 << n.end;
                }
                if n.end == 32 {
                    return (plens, 32);
                }
                let c = n.child[bit(a, n.end)];
                if c == NIL {
                    // Bits 0..=end decide that nothing longer covers `a`.
                    return (plens, n.end + 1);
                }
                let child = &self.nodes[c as usize];
                let diff = (a ^ child.bits) & prefix_mask(child.end);
                if diff != 0 {
                    // `a` leaves the trie at its first differing bit.
                    return (plens, diff.leading_zeros() + 1);
                }
                n = child;
            }
        }

        /// Adds one rule with prefix `p/len` (`len` in 1..=32).
        pub(super) fn insert(&mut self, p: u32, len: u32) {
            let p = p & prefix_mask(len);
            let mut n = ROOT;
            loop {
                let node = self.nodes[n];
                if node.end == len {
                    self.nodes[n].count += 1;
                    return;
                }
                let dir = bit(p, node.end);
                let c = node.child[dir];
                if c == NIL {
                    let leaf = self.alloc(Node {
                        bits: p,
                        end: len,
                        count: 1,
                        child: [NIL; 2],
                    });
                    self.nodes[n].child[dir] = leaf;
                    return;
                }
                let child = self.nodes[c as usize];
                let common = (p ^ child.bits).leading_zeros().min(child.end).min(len);
                if common == child.end {
                    n = c as usize;
                    continue;
                }
                // `p` leaves the child's path at `common` (> node.end): put a node
                // there, holding the child and either `p` itself or a leaf for it.
                let mut mid = Node {
                    bits: p & prefix_mask(common),
                    end: common,
                    count: 0,
                    child: [NIL; 2],
                };
                mid.child[bit(child.bits, common)] = c;
                let mid = if common == len {
                    mid.count = 1;
                    self.alloc(mid)
                } else {
                    let leaf = self.alloc(Node {
                        bits: p,
                        end: len,
                        count: 1,
                        child: [NIL; 2],
                    });
                    mid.child[bit(p, common)] = leaf;
                    self.alloc(mid)
                };
                self.nodes[n].child[dir] = mid;
                return;
            }
        }

        /// Removes one rule with prefix `p/len`; false if there is none.
        pub(super) fn remove(&mut self, p: u32, len: u32) -> bool {
            let p = p & prefix_mask(len);
            // (node, direction taken from its parent): at most 33 nodes deep.
            let mut path = [(0u32, 0usize); 34];
            let mut depth = 0;
            let mut n = ROOT as u32;
            loop {
                let node = self.nodes[n as usize];
                if node.end == len {
                    break;
                }
                let dir = bit(p, node.end);
                let c = node.child[dir];
                if c == NIL {
                    return false;
                }
                let child = &self.nodes[c as usize];
                if child.end > len || (p ^ child.bits) & prefix_mask(child.end) != 0 {
                    return false;
                }
                path[depth] = (n, dir);
                depth += 1;
                n = c;
            }
            if self.nodes[n as usize].count == 0 {
                return false;
            }
            self.nodes[n as usize].count -= 1;
            // Restore the shape: drop prefix-less leaves, splice prefix-less nodes
            // with one child.
            while depth > 0 && self.nodes[n as usize].count == 0 {
                let (parent, dir) = path[depth - 1];
                let node = self.nodes[n as usize];
                match (node.child[0], node.child[1]) {
                    (NIL, NIL) => {
                        self.nodes[parent as usize].child[dir] = NIL;
                        self.free.push(n);
                        n = parent;
                        depth -= 1;
                    }
                    (only, NIL) | (NIL, only) => {
                        self.nodes[parent as usize].child[dir] = only;
                        self.free.push(n);
                        break;
                    }
                    _ => break,
                }
            }
            true
        }

        pub(super) fn memory_bytes(&self) -> usize {
            self.nodes.capacity() * std::mem::size_of::<Node>() + self.free.capacity() * 4
        }

        #[cfg(test)]
        pub(super) fn live_nodes(&self) -> usize {
            self.nodes.len() - self.free.len()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::field::Field;
    use proptest::prelude::*;

    /// Packet fields, each from a small domain so that rules and packets overlap.
    #[derive(Debug, Clone, Copy)]
    struct Pkt {
        in_port: u8,
        eth_dst: u8,
        ip_src: u8,
        ip_dst: u8,
        proto_udp: bool,
        tp_dst: u8,
    }

    fn arb_pkt() -> impl Strategy<Value = Pkt> {
        (0u8..3, 0u8..2, 0u8..4, 0u8..8, any::<bool>(), 0u8..2).prop_map(
            |(in_port, eth_dst, ip_src, ip_dst, proto_udp, tp_dst)| Pkt {
                in_port,
                eth_dst,
                ip_src,
                ip_dst,
                proto_udp,
                tp_dst,
            },
        )
    }

    fn ip(x: u8) -> u128 {
        // 10.0.{0,1}.{1..4}: /24 and /16 prefixes group them differently.
        u128::from(0x0a00_0000u32 | (u32::from(x >> 2) << 8) | (u32::from(x & 3) + 1))
    }

    fn values(p: &Pkt) -> [(Field, u128); 8] {
        [
            (Field::InPort, u128::from(p.in_port) + 1),
            (Field::EthDst, 0x0200_0000_0000 | u128::from(p.eth_dst)),
            (Field::EthType, 0x0800),
            (Field::IpProto, if p.proto_udp { 17 } else { 6 }),
            (Field::Ipv4Src, ip(p.ip_src)),
            (Field::Ipv4Dst, ip(p.ip_dst)),
            (Field::TpSrc, 40000),
            (Field::TpDst, if p.tp_dst == 0 { 80 } else { 443 }),
        ]
    }

    fn key_of(p: &Pkt, noise: &[u64; 4]) -> Key {
        let mut k = Key::ZERO;
        for (f, v) in values(p) {
            f.set(&mut k, v);
        }
        // Words no rule looks at, filled with noise.
        k.0[5] = noise[0];
        k.0[10] = noise[1];
        k.0[12] = noise[2];
        k.0[16] = noise[3];
        k
    }

    /// (field, mask) combinations: several rules share each, so subtables are shared.
    const SHAPES: &[&[(Field, u128)]] = &[
        &[(Field::InPort, u128::MAX)],
        &[(Field::InPort, u128::MAX), (Field::EthDst, u128::MAX)],
        &[(Field::EthType, u128::MAX), (Field::Ipv4Dst, 0xffff_ff00)],
        &[(Field::EthType, u128::MAX), (Field::Ipv4Dst, 0xffff_0000)],
        &[
            (Field::EthType, u128::MAX),
            (Field::IpProto, u128::MAX),
            (Field::Ipv4Src, u128::MAX),
            (Field::Ipv4Dst, u128::MAX),
            (Field::TpDst, u128::MAX),
        ],
        &[
            (Field::EthType, u128::MAX),
            (Field::Ipv4Dst, u128::MAX),
            (Field::TpDst, u128::MAX),
        ],
        &[],
    ];

    fn rule_match(shape: usize, p: &Pkt) -> Match {
        let vals = values(p);
        let mut m = Match::ANY;
        for &(f, mask) in SHAPES[shape % SHAPES.len()] {
            if let Some(&(_, v)) = vals.iter().find(|(g, _)| *g == f) {
                m.set(f, v, mask);
            }
        }
        m
    }

    const PRIOS: [u16; 5] = [0, 1, 2, 100, 32768];

    #[derive(Debug, Clone)]
    enum Op {
        Insert(usize, Pkt, usize),
        /// Remove the n-th rule of the model (or a rule that is not there).
        Remove(usize, bool),
        Lookup(Pkt, [u64; 4], [u64; 4]),
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        let noise = || proptest::array::uniform4(any::<u64>());
        prop_oneof![
            5 => (0..SHAPES.len(), arb_pkt(), 0..PRIOS.len()).prop_map(|(s, p, pr)| Op::Insert(s, p, pr)),
            2 => (any::<usize>(), any::<bool>()).prop_map(|(i, absent)| Op::Remove(i, absent)),
            5 => (arb_pkt(), noise(), noise()).prop_map(|(p, n, f)| Op::Lookup(p, n, f)),
        ]
    }

    /// The specification: a linear scan.
    struct Naive {
        rules: Vec<(Match, u16, u64, u32)>,
        seq: u64,
    }

    impl Naive {
        fn insert(&mut self, m: Match, prio: u16, v: u32) -> Option<u32> {
            if let Some(r) = self.rules.iter_mut().find(|r| r.0 == m && r.1 == prio) {
                return Some(std::mem::replace(&mut r.3, v));
            }
            self.rules.push((m, prio, self.seq, v));
            self.seq += 1;
            None
        }

        fn remove(&mut self, m: &Match, prio: u16) -> Option<u32> {
            let i = self.rules.iter().position(|r| r.0 == *m && r.1 == prio)?;
            Some(self.rules.remove(i).3)
        }

        fn lookup(&self, k: &Key) -> Option<(Match, u16, u32)> {
            self.rules
                .iter()
                .filter(|r| r.0.matches(k))
                .max_by(|a, b| a.1.cmp(&b.1).then(b.2.cmp(&a.2)))
                .map(|r| (r.0, r.1, r.3))
        }
    }

    fn owned(r: Option<(&Match, u16, &u32)>) -> Option<(Match, u16, u32)> {
        r.map(|(m, p, v)| (*m, p, *v))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// (a) lookup agrees with a linear scan over random inserts and removes, and
        /// (b) flipping any bits outside `consulted` does not change the answer.
        #[test]
        fn agrees_with_linear_scan_and_consulted_mask_holds(
            ops in proptest::collection::vec(arb_op(), 1..120),
        ) {
            let mut cls = Classifier::new();
            let mut naive = Naive { rules: Vec::new(), seq: 0 };
            for (n, op) in ops.into_iter().enumerate() {
                let n = n as u32;
                match op {
                    Op::Insert(shape, p, pr) => {
                        let m = rule_match(shape, &p);
                        let prio = PRIOS[pr];
                        prop_assert_eq!(cls.insert(m, prio, n), naive.insert(m, prio, n));
                        prop_assert_eq!(cls.get(&m, prio), Some(&n));
                    }
                    Op::Remove(i, absent) => {
                        if naive.rules.is_empty() {
                            continue;
                        }
                        let (m, mut prio, _, _) = naive.rules[i % naive.rules.len()];
                        if absent {
                            prio = prio.wrapping_add(7);
                        }
                        prop_assert_eq!(cls.remove(&m, prio), naive.remove(&m, prio));
                        prop_assert_eq!(cls.get(&m, prio), None);
                    }
                    Op::Lookup(p, noise, flips) => {
                        let k = key_of(&p, &noise);
                        let mut consulted = Key::ZERO;
                        let got = owned(cls.lookup(&k, &mut consulted));
                        prop_assert_eq!(got, naive.lookup(&k));
                        if let Some((m, _, _)) = got {
                            // The winner's own mask is always among those consulted.
                            prop_assert!(m.mask.masked(&consulted) == m.mask);
                        }
                        // (b) Random bits outside `consulted`, all at once...
                        let mut k2 = k;
                        for (i, w) in k2.0.iter_mut().enumerate() {
                            let r = flips[i % 4].rotate_left(i as u32 * 7) ^ noise[(i + 1) % 4];
                            *w ^= r & !consulted.0[i];
                        }
                        // (`consulted` itself may differ: a trie walk can stop at
                        // another depth and still rule out the same subtables.)
                        let mut c2 = Key::ZERO;
                        prop_assert_eq!(owned(cls.lookup(&k2, &mut c2)), got);
                        // ...and one bit at a time.
                        for i in 0..KEY_WORDS_FOR_TEST {
                            let bit = 1u64 << (flips[i % 4] >> (i * 3 % 58) & 63);
                            if consulted.0[i] & bit == 0 {
                                let mut k3 = k;
                                k3.0[i] ^= bit;
                                let mut c3 = Key::ZERO;
                                prop_assert_eq!(owned(cls.lookup(&k3, &mut c3)), got);
                            }
                        }
                    }
                }
                prop_assert_eq!(cls.len(), naive.rules.len());
            }
            prop_assert_eq!(cls.iter().count(), naive.rules.len());
            for (m, prio, _, v) in &naive.rules {
                prop_assert_eq!(cls.get(m, *prio), Some(v));
            }
            let masks: std::collections::HashSet<Key> = naive.rules.iter().map(|r| r.0.mask).collect();
            prop_assert_eq!(cls.n_subtables(), masks.len());
            // The visiting order is sorted by each subtable's true maximum.
            for w in cls.order.windows(2) {
                prop_assert!(w[0].0 >= w[1].0);
            }
            for &(max, si) in &cls.order {
                prop_assert_eq!(Some(max), cls.subtables[si as usize].max_priority());
            }
            // Removing every rule leaves nothing behind, tries included.
            for (m, prio, _, v) in std::mem::take(&mut naive.rules) {
                prop_assert_eq!(cls.remove(&m, prio), Some(v));
            }
            prop_assert!(cls.is_empty() && cls.n_subtables() == 0);
            prop_assert!(cls.tries.iter().all(|t| t.live_nodes() == 1));
        }
    }

    const KEY_WORDS_FOR_TEST: usize = crate::flow::key::KEY_WORDS;

    proptest! {
        /// The trie's answer agrees with the set of prefixes it holds, and depends only
        /// on the leading bits it says it does.
        #[test]
        fn prefix_trie_agrees_with_a_list(
            ops in proptest::collection::vec((any::<bool>(), 0u32..8, 0u32..=32), 1..80),
            probes in proptest::collection::vec((any::<u32>(), any::<u32>()), 1..20),
        ) {
            let mut t = trie::PrefixTrie::new();
            let mut list: Vec<(u32, u32)> = Vec::new();
            // Addresses near each other so prefixes nest and share paths.
            let addr = |x: u32| 0x0a00_0000 | x.rotate_right(3);
            for (add, x, len) in ops {
                let len = len.max(1);
                let p = addr(x) & prefix_mask(len);
                if add {
                    t.insert(p, len);
                    list.push((p, len));
                } else {
                    let i = list.iter().position(|e| *e == (p, len));
                    prop_assert_eq!(t.remove(p, len), i.is_some());
                    if let Some(i) = i {
                        list.remove(i);
                    }
                }
            }
            for (x, noise) in probes {
                let a = addr(x % 8) ^ (noise & 0xff);
                let (plens, check) = t.lookup(a);
                for len in 1..=32u32 {
                    let covered = list.iter().any(|&(p, l)| l == len && a & prefix_mask(l) == p);
                    prop_assert_eq!(plens & (1 << len) != 0, covered);
                    // Flip bits past min(len, check): the answer for len stays.
                    let keep = prefix_mask(len.min(check));
                    let b = (a & keep) | (noise.rotate_left(len) & !keep);
                    prop_assert_eq!(t.lookup(b).0 & (1 << len), plens & (1 << len));
                }
            }
            for (p, len) in list.drain(..) {
                prop_assert!(t.remove(p, len));
            }
            // Every node but the root is gone again.
            prop_assert_eq!(t.live_nodes(), 1);
            prop_assert_eq!(t.lookup(0x0a00_0001), (0, 1));
        }
    }

    #[test]
    fn prefix_tracking_unwildcards_fewer_address_bits() {
        let dst = |a: u32, len: u32| {
            let mut m = Match::ANY;
            m.set(Field::EthType, 0x0800, u128::MAX);
            m.set(Field::Ipv4Dst, u128::from(a), u128::from(prefix_mask(len)));
            m
        };
        let mut key = Key::ZERO;
        Field::EthType.set(&mut key, 0x0800);
        Field::Ipv4Dst.set(&mut key, 0xc0a8_0101); // 192.168.1.1
        for tracking in [true, false] {
            let mut c = Classifier::with_prefix_tracking(tracking);
            c.insert(dst(0x0a00_0000, 8), 10, "10/8");
            c.insert(dst(0x0a01_0200, 24), 20, "10.1.2/24");
            c.insert(dst(0x0a01_0203, 32), 30, "10.1.2.3/32");
            c.insert(Match::ANY, 0, "default");
            let mut consulted = Key::ZERO;
            assert_eq!(
                c.lookup(&key, &mut consulted).map(|r| *r.2),
                Some("default")
            );
            let bits = Field::Ipv4Dst.get(&consulted);
            if tracking {
                // 192 vs 10 differ in the first bit: one bit rules out every prefix.
                assert_eq!(bits, 0x8000_0000);
                assert_eq!(Field::EthType.get(&consulted), 0);
            } else {
                assert_eq!(bits, 0xffff_ffff);
            }
        }
    }

    fn exact(field: Field, v: u128) -> Match {
        let mut m = Match::ANY;
        m.set_exact(field, v);
        m
    }

    #[test]
    fn replace_remove_get() {
        let mut c = Classifier::new();
        let m = exact(Field::InPort, 1);
        assert_eq!(c.insert(m, 10, "a"), None);
        assert_eq!(c.insert(m, 10, "b"), Some("a"));
        assert_eq!(c.insert(m, 20, "c"), None);
        assert_eq!(c.len(), 2);
        assert_eq!(c.n_subtables(), 1);
        assert_eq!(c.get(&m, 10), Some(&"b"));
        let mut k = Key::ZERO;
        Field::InPort.set(&mut k, 1);
        let mut consulted = Key::ZERO;
        assert_eq!(
            c.lookup(&k, &mut consulted).map(|r| (r.1, *r.2)),
            Some((20, "c"))
        );
        assert_eq!(consulted, exact(Field::InPort, u128::MAX).value);
        assert_eq!(c.remove(&m, 20), Some("c"));
        assert_eq!(c.remove(&m, 20), None);
        assert_eq!(c.remove(&exact(Field::InPort, 2), 10), None);
        assert_eq!(
            c.lookup(&k, &mut consulted).map(|r| (r.1, *r.2)),
            Some((10, "b"))
        );
        assert_eq!(c.remove(&m, 10), Some("b"));
        assert!(c.is_empty());
        assert_eq!(c.n_subtables(), 0);
        assert_eq!(c.lookup(&k, &mut consulted), None);
    }

    #[test]
    fn unmasked_values_are_normalised() {
        let mut c = Classifier::new();
        let mut m = Match::ANY;
        m.mask.0[3] = 0xffff_ff00 << 32;
        m.value.0[3] = 0x0a00_0001 << 32 | 7; // bits outside the mask
        c.insert(m, 1, ());
        let mut k = Key::ZERO;
        k.0[3] = 0x0a00_00ff << 32;
        assert!(c.lookup(&k, &mut Key::default()).is_some());
        assert_eq!(c.get(&m, 1), Some(&()));
        assert_eq!(c.remove(&m, 1), Some(()));
    }

    #[test]
    fn ties_go_to_the_earliest_insertion() {
        let mut c = Classifier::new();
        let mut k = Key::ZERO;
        Field::InPort.set(&mut k, 1);
        Field::EthType.set(&mut k, 0x0800);
        c.insert(exact(Field::EthType, 0x0800), 5, "first");
        c.insert(exact(Field::InPort, 1), 5, "second");
        assert_eq!(
            c.lookup(&k, &mut Key::default()).map(|r| *r.2),
            Some("first")
        );
        // Replacing keeps the rule's place.
        c.insert(exact(Field::EthType, 0x0800), 5, "first'");
        assert_eq!(
            c.lookup(&k, &mut Key::default()).map(|r| *r.2),
            Some("first'")
        );
        c.remove(&exact(Field::EthType, 0x0800), 5);
        c.insert(exact(Field::EthType, 0x0800), 5, "third");
        assert_eq!(
            c.lookup(&k, &mut Key::default()).map(|r| *r.2),
            Some("second")
        );
    }

    #[test]
    fn early_termination_skips_lower_subtables() {
        let mut c = Classifier::new();
        c.insert(exact(Field::InPort, 1), 100, "port");
        c.insert(exact(Field::EthType, 0x0800), 10, "ip");
        c.insert(Match::ANY, 0, "default");
        assert_eq!(c.n_subtables(), 3);
        let mut k = Key::ZERO;
        Field::InPort.set(&mut k, 1);
        Field::EthType.set(&mut k, 0x0800);
        let mut consulted = Key::ZERO;
        assert_eq!(c.lookup(&k, &mut consulted).map(|r| *r.2), Some("port"));
        // Only in_port was needed: eth_type's subtable was never probed.
        assert_eq!(consulted, exact(Field::InPort, u128::MAX).value);
        Field::InPort.set(&mut k, 2);
        let mut consulted = Key::ZERO;
        assert_eq!(c.lookup(&k, &mut consulted).map(|r| *r.2), Some("ip"));
        let mut both = exact(Field::InPort, u128::MAX).value;
        both.or_assign(&exact(Field::EthType, 0xffff).value);
        assert_eq!(consulted, both);
    }

    #[test]
    fn max_priority_follows_removals() {
        let mut c = Classifier::new();
        let (a, b) = (exact(Field::InPort, 1), exact(Field::InPort, 2));
        c.insert(a, 50, 'a');
        c.insert(b, 10, 'b');
        c.insert(exact(Field::EthType, 0x0800), 30, 'e');
        assert_eq!(c.order[0].0, 50);
        c.remove(&a, 50);
        assert_eq!(c.order[0].0, 30);
        assert_eq!(c.order[1].0, 10);
        assert!(c.memory_bytes() > 0);
        assert_eq!(c.iter().count(), 2);
        c.clear();
        assert!(c.is_empty() && c.n_subtables() == 0);
    }
}

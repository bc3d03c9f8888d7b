//! The per-pod rule index a verdict walks instead of every rule applied to the pod.
//!
//! For one selected pod and direction, rules are filed by what the packet must
//! carry for them to allow it:
//! - by destination port: `(protocol, port)` -> candidates, for single ports,
//!   short ranges (expanded, up to [`EXPAND_MAX`] ports) and, for ingress, named
//!   ports resolved against the pod's own container ports;
//! - per protocol, for long ranges, protocol-only entries and egress named ports
//!   (the port is checked at verdict time);
//! - rules with no `ports` (every port).
//!
//! Within each list, candidates are filed by peer: rules open to every peer, rules
//! by address group `(group, rule)` sorted by group (intersected with the groups
//! the peer belongs to, [`super::Engine::member_of`]), and rules with ipBlocks,
//! flattened into sorted disjoint address ranges (each CIDR minus its
//! exceptions; each range names the lowest rule whose blocks cover it), found by
//! binary search.
//! A verdict therefore costs a few hash lookups plus the rules sharing the
//! packet's port and one of the peer's groups, plus a logarithmic search among
//! the slot's ipBlocks: the rules that can match, not all rules selecting the pod.

use super::eval::Packet;
use super::{Block, Dir, Engine, GroupId, Ip, NamedPort, PortSpec, RuleId};
use std::collections::{BTreeMap, HashMap};

/// Longest port range filed port by port (longer ones are checked at verdict time).
pub const EXPAND_MAX: u32 = 64;

#[inline]
fn port_key(proto: u8, port: u16) -> u32 {
    (u32::from(proto) << 16) | u32::from(port)
}

/// Candidate rules of one port slot, filed by peer.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Cands {
    any_peer: Box<[RuleId]>,
    /// Sorted by group, then rule.
    by_group: Box<[(GroupId, RuleId)]>,
    blocks: Box<[RuleId]>,
    /// The address space cut at every block boundary: `(start, rule)` sorted by
    /// start, a range running to the next start; `rule` is the lowest of
    /// `blocks` whose ipBlocks hold the range's addresses ([`NO_RULE`]: none).
    block_ranges: Box<[(Ip, RuleId)]>,
}

/// A range no ipBlock of the slot holds.
const NO_RULE: RuleId = RuleId::MAX;

/// The addresses `b` holds, as disjoint inclusive ranges in order.
fn block_ranges(b: &Block, out: &mut Vec<(Ip, Ip)>) {
    let span = |c: &super::Cidr| {
        let host = if c.len >= 128 {
            0
        } else {
            u128::MAX >> u32::from(c.len)
        };
        (c.net & !host, c.net | host)
    };
    let (lo, hi) = span(&b.cidr);
    let mut cuts: Vec<(Ip, Ip)> = b.except.iter().map(span).collect();
    cuts.sort_unstable();
    let mut at = lo;
    for (clo, chi) in cuts {
        if chi < at || clo > hi {
            continue;
        }
        if clo > at {
            out.push((at, clo - 1));
        }
        if chi >= hi {
            return;
        }
        at = at.max(chi + 1);
    }
    out.push((at, hi));
}

/// Flattens the ipBlocks of `rules` into `(start, lowest rule)` ranges: a sweep
/// over the range ends with the rules open at each point in a counted set.
fn flatten(e: &Engine, rules: &[RuleId]) -> Box<[(Ip, RuleId)]> {
    // (point, opens, rule): a range [lo, hi] opens at lo and closes after hi.
    let mut ev: Vec<(Ip, bool, RuleId)> = Vec::new();
    let mut tmp = Vec::new();
    for &id in rules {
        let Some(Some(r)) = e.rules.get(id as usize) else {
            continue;
        };
        for b in &r.blocks {
            tmp.clear();
            block_ranges(b, &mut tmp);
            for &(lo, hi) in &tmp {
                ev.push((lo, true, id));
                // A range reaching the top of the space never closes.
                if let Some(end) = hi.checked_add(1) {
                    ev.push((end, false, id));
                }
            }
        }
    }
    // At one point, closings before openings (a range ending at p-1 and one
    // starting at p meet at p).
    ev.sort_unstable_by_key(|&(p, open, id)| (p, open, id));
    let mut open: BTreeMap<RuleId, u32> = BTreeMap::new();
    let mut out: Vec<(Ip, RuleId)> = Vec::new();
    let mut i = 0;
    while i < ev.len() {
        let p = ev[i].0;
        while i < ev.len() && ev[i].0 == p {
            let (_, opens, id) = ev[i];
            if opens {
                *open.entry(id).or_default() += 1;
            } else if let Some(n) = open.get_mut(&id) {
                *n -= 1;
                if *n == 0 {
                    open.remove(&id);
                }
            }
            i += 1;
        }
        let best = open.keys().next().copied().unwrap_or(NO_RULE);
        if out.last().is_none_or(|&(_, r)| r != best) {
            out.push((p, best));
        }
    }
    out.into()
}

#[derive(Default)]
struct CandsBuild {
    any_peer: Vec<RuleId>,
    by_group: Vec<(GroupId, RuleId)>,
    blocks: Vec<RuleId>,
}

impl CandsBuild {
    fn finish(mut self, e: &Engine) -> Cands {
        for v in [&mut self.any_peer, &mut self.blocks] {
            v.sort_unstable();
            v.dedup();
        }
        self.by_group.sort_unstable();
        self.by_group.dedup();
        let block_ranges = flatten(e, &self.blocks);
        Cands {
            any_peer: self.any_peer.into(),
            by_group: self.by_group.into(),
            blocks: self.blocks.into(),
            block_ranges,
        }
    }
}

impl Cands {
    fn len(&self) -> usize {
        self.any_peer.len() + self.by_group.len() + self.blocks.len() + self.block_ranges.len()
    }

    /// The lowest rule whose ipBlocks hold `peer`: a binary search.
    #[inline]
    fn block_rule(&self, peer: Ip) -> Option<RuleId> {
        let i = self
            .block_ranges
            .partition_point(|&(start, _)| start <= peer);
        let (_, id) = *self.block_ranges.get(i.checked_sub(1)?)?;
        (id != NO_RULE).then_some(id)
    }

    /// The first candidate that allows `peer` (and, with `check`, the packet's port).
    #[inline]
    fn find(
        &self,
        e: &Engine,
        peer: Ip,
        peer_groups: &[GroupId],
        check: Option<&Packet>,
    ) -> Option<RuleId> {
        let port_ok = |id: RuleId| {
            check.is_none_or(|p| {
                e.rules
                    .get(id as usize)
                    .and_then(Option::as_ref)
                    .is_some_and(|r| e.port_matches(r, p))
            })
        };
        if let Some(&id) = self.any_peer.iter().find(|&&id| port_ok(id)) {
            return Some(id);
        }
        if !self.by_group.is_empty() && !peer_groups.is_empty() {
            if self.by_group.len() <= peer_groups.len() {
                for &(g, id) in self.by_group.iter() {
                    if peer_groups.binary_search(&g).is_ok() && port_ok(id) {
                        return Some(id);
                    }
                }
            } else {
                for &g in peer_groups {
                    let start = self.by_group.partition_point(|x| x.0 < g);
                    for &(g2, id) in &self.by_group[start..] {
                        if g2 != g {
                            break;
                        }
                        if port_ok(id) {
                            return Some(id);
                        }
                    }
                }
            }
        }
        let first = self.block_rule(peer)?;
        if check.is_none() || port_ok(first) {
            return Some(first);
        }
        // A slot whose port is checked per packet (long ranges, egress named
        // ports): the lowest block rule may not take this port; look further.
        self.blocks.iter().copied().find(|&id| {
            id > first
                && e.rules
                    .get(id as usize)
                    .and_then(Option::as_ref)
                    .is_some_and(|r| r.blocks.iter().any(|b| b.contains(peer)))
                && port_ok(id)
        })
    }
}

/// The index of the rules applied to one pod in one direction.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RuleIndex {
    any_port: Cands,
    exact: HashMap<u32, Cands>,
    wide: Box<[(u8, Cands)]>,
}

impl RuleIndex {
    /// Files `rules` (ids into `e.rules`); `named`: the pod's own named ports
    /// (ingress named ports resolve against them).
    pub fn build(e: &Engine, dir: Dir, rules: &[RuleId], named: Option<&[NamedPort]>) -> RuleIndex {
        let mut any_port = CandsBuild::default();
        let mut exact: HashMap<u32, CandsBuild> = HashMap::new();
        let mut wide: Vec<(u8, CandsBuild)> = Vec::new();
        for &id in rules {
            let Some(Some(r)) = e.rules.get(id as usize) else {
                continue;
            };
            let file = |c: &mut CandsBuild| {
                if r.any_peer {
                    c.any_peer.push(id);
                }
                c.by_group.extend(r.groups.iter().map(|&g| (g, id)));
                if !r.blocks.is_empty() {
                    c.blocks.push(id);
                }
            };
            if r.ports.is_empty() {
                file(&mut any_port);
                continue;
            }
            let mut wide_for = |proto: u8| {
                let i = match wide.iter().position(|(p, _)| *p == proto) {
                    Some(i) => i,
                    None => {
                        wide.push((proto, CandsBuild::default()));
                        wide.len() - 1
                    }
                };
                file(&mut wide[i].1);
            };
            for ps in &r.ports {
                match ps {
                    PortSpec::Range { proto, lo, hi } => {
                        if u32::from(*hi) - u32::from(*lo) < EXPAND_MAX {
                            for port in *lo..=*hi {
                                file(exact.entry(port_key(*proto, port)).or_default());
                            }
                        } else {
                            wide_for(*proto);
                        }
                    }
                    PortSpec::Named { proto, name } => match dir {
                        // The destination is the selected pod: resolve now.
                        Dir::Ingress => {
                            for (pr, n, num) in named.unwrap_or(&[]) {
                                if pr == proto && **n == **name {
                                    file(exact.entry(port_key(*proto, *num)).or_default());
                                }
                            }
                        }
                        // The destination is the peer: checked per packet.
                        Dir::Egress => wide_for(*proto),
                    },
                }
            }
        }
        RuleIndex {
            any_port: any_port.finish(e),
            exact: exact.into_iter().map(|(k, c)| (k, c.finish(e))).collect(),
            wide: wide.into_iter().map(|(p, c)| (p, c.finish(e))).collect(),
        }
    }

    /// The first rule that allows traffic with `peer` (member of `peer_groups`)
    /// and packet `p`.
    #[inline]
    pub fn find(
        &self,
        e: &Engine,
        p: &Packet,
        peer: Ip,
        peer_groups: &[GroupId],
    ) -> Option<RuleId> {
        if let Some(id) = self.any_port.find(e, peer, peer_groups, None) {
            return Some(id);
        }
        if let Some(c) = self.exact.get(&port_key(p.proto, p.dport))
            && let Some(id) = c.find(e, peer, peer_groups, None)
        {
            return Some(id);
        }
        self.wide
            .iter()
            .filter(|(proto, _)| *proto == p.proto)
            .find_map(|(_, c)| c.find(e, peer, peer_groups, Some(p)))
    }

    /// Entries held (for size figures).
    pub fn entries(&self) -> usize {
        self.any_port.len()
            + self.exact.values().map(Cands::len).sum::<usize>()
            + self.wide.iter().map(|(_, c)| c.len()).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Cidr;

    fn cidr(s: &str) -> Cidr {
        Cidr::parse(s).expect("cidr")
    }

    fn ranges(b: &Block) -> Vec<(Ip, Ip)> {
        let mut v = Vec::new();
        block_ranges(b, &mut v);
        v
    }

    /// A CIDR minus its exceptions as ranges: every address of the CIDR is in
    /// exactly one range unless an exception holds it.
    #[test]
    fn block_minus_exceptions_as_ranges() {
        let b = Block {
            cidr: cidr("10.0.0.0/24"),
            except: vec![
                cidr("10.0.0.128/25"),
                cidr("10.0.0.16/28"),
                cidr("9.0.0.0/8"),
            ],
        };
        let r = ranges(&b);
        let v4 = |x: u32| crate::policy::v4(x);
        assert_eq!(
            r,
            vec![
                (v4(0x0a00_0000), v4(0x0a00_000f)),
                (v4(0x0a00_0020), v4(0x0a00_007f)),
            ]
        );
        for x in 0x0a00_0000u32 - 3..0x0a00_0103 {
            let inside = r.iter().any(|&(lo, hi)| (lo..=hi).contains(&v4(x)));
            assert_eq!(inside, b.contains(v4(x)), "{x:#x}");
        }
        // An exception covering everything; the whole space.
        let none = Block {
            cidr: cidr("10.0.0.0/24"),
            except: vec![cidr("10.0.0.0/16")],
        };
        assert!(ranges(&none).is_empty());
        let all = Block {
            cidr: cidr("::/0"),
            except: vec![],
        };
        assert_eq!(ranges(&all), vec![(0, u128::MAX)]);
    }
}

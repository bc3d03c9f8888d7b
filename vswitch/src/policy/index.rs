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
//! the peer belongs to, [`super::Engine::member_of`]), and rules with ipBlocks.
//! A verdict therefore costs a few hash lookups plus the rules sharing the
//! packet's port and one of the peer's groups: the rules that can match, not all
//! rules selecting the pod.

use super::eval::Packet;
use super::{Dir, Engine, GroupId, Ip, NamedPort, PortSpec, RuleId};
use std::collections::HashMap;

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
}

#[derive(Default)]
struct CandsBuild {
    any_peer: Vec<RuleId>,
    by_group: Vec<(GroupId, RuleId)>,
    blocks: Vec<RuleId>,
}

impl CandsBuild {
    fn finish(mut self) -> Cands {
        for v in [&mut self.any_peer, &mut self.blocks] {
            v.sort_unstable();
            v.dedup();
        }
        self.by_group.sort_unstable();
        self.by_group.dedup();
        Cands {
            any_peer: self.any_peer.into(),
            by_group: self.by_group.into(),
            blocks: self.blocks.into(),
        }
    }
}

impl Cands {
    fn len(&self) -> usize {
        self.any_peer.len() + self.by_group.len() + self.blocks.len()
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
        self.blocks.iter().copied().find(|&id| {
            e.rules
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
            any_port: any_port.finish(),
            exact: exact.into_iter().map(|(k, c)| (k, c.finish())).collect(),
            wide: wide.into_iter().map(|(p, c)| (p, c.finish())).collect(),
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

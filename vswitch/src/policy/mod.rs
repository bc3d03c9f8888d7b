//! NetworkPolicy: the native policy stage of the pipeline.
//!
//! The pipeline's tables 20 (egress) and 40 (ingress) run the `policy(DIR)` action on
//! the first packet of a connection (`ct_state=+new+trk`) and on untracked IP
//! packets. The action asks the published [`Engine`] for a verdict; a denied packet
//! is dropped there, an allowed one goes on and is committed to conntrack in table
//! 50, so every later packet of the connection (and its replies) skips policy.
//!
//! The engine holds, instead of a cross product of flows:
//! - address groups: the pod IPs one peer selector matches (shared by every rule
//!   with the same selector, like Antrea's address groups);
//! - rules: peer groups + IP blocks + ports;
//! - per selected pod IP and direction, the rules that may allow it (isolation).
//!
//! Its size is linear in (groups x members) + rules + (selected pods x their
//! policies' rules), and a verdict is a handful of hash lookups whatever the number
//! of policies. The control thread edits a private copy ([`compile::Compiler`]) and
//! publishes a shallow clone (every part behind an `Arc`, copied only when changed).
//! See docs/policy.md.

pub mod audit;
pub mod compile;
pub mod eval;
pub mod index;
pub mod report;

use arc_swap::ArcSwap;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub use eval::{Decision, Packet};

/// An address, IPv4 as IPv4-mapped IPv6 so that one set holds both families.
pub type Ip = u128;

/// Maps an IPv4 address into [`Ip`].
#[inline]
pub const fn v4(a: u32) -> Ip {
    0xffff_0000_0000 | a as u128
}

/// [`Ip`] of a std address.
pub fn ip_of(a: std::net::IpAddr) -> Ip {
    match a {
        std::net::IpAddr::V4(v) => v4(u32::from(v)),
        std::net::IpAddr::V6(v) => u128::from(v),
    }
}

/// Policy direction: which end of the connection is the selected pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dir {
    /// The destination is the selected pod; peers are sources.
    Ingress,
    /// The source is the selected pod; peers are destinations.
    Egress,
}

impl Dir {
    pub fn as_str(self) -> &'static str {
        match self {
            Dir::Ingress => "ingress",
            Dir::Egress => "egress",
        }
    }
}

/// A prefix in the [`Ip`] space (an IPv4 /n is a /96+n).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub net: Ip,
    pub len: u8,
}

impl Cidr {
    #[inline]
    pub fn contains(&self, ip: Ip) -> bool {
        let mask = if self.len == 0 {
            0
        } else {
            u128::MAX << (128 - u32::from(self.len.min(128)))
        };
        ip & mask == self.net & mask
    }

    /// Parses `10.0.0.0/8` or `fd00::/64` (host bits allowed and ignored).
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (a, l) = s
            .split_once('/')
            .ok_or_else(|| format!("'{s}' is not a CIDR (ADDRESS/LENGTH)"))?;
        let addr: std::net::IpAddr = a.parse().map_err(|_| format!("'{s}': bad address"))?;
        let len: u8 = l.parse().map_err(|_| format!("'{s}': bad prefix length"))?;
        let (max, off) = if addr.is_ipv4() { (32, 96) } else { (128, 0) };
        if len > max {
            return Err(format!("'{s}': prefix length over {max}"));
        }
        Ok(Cidr {
            net: ip_of(addr),
            len: len + off,
        })
    }
}

/// `ipBlock`: the CIDR minus its exceptions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub cidr: Cidr,
    pub except: Vec<Cidr>,
}

impl Block {
    #[inline]
    pub fn contains(&self, ip: Ip) -> bool {
        self.cidr.contains(ip) && !self.except.iter().any(|e| e.contains(ip))
    }
}

/// One entry of a rule's `ports`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortSpec {
    /// A protocol and a port range (`lo..=hi`; the whole range when no port given).
    Range { proto: u8, lo: u16, hi: u16 },
    /// A named container port, resolved against the destination pod.
    Named { proto: u8, name: Box<str> },
}

/// A named port of a pod: (protocol, name, number).
pub type NamedPort = (u8, Box<str>, u16);

/// Identifiers: indices into the engine's slabs.
pub type GroupId = u32;
pub type RuleId = u32;
pub type PolicyId = u32;

/// A compiled rule (one element of a policy's `ingress` or `egress` list).
#[derive(Debug, Clone)]
pub struct Rule {
    pub policy: PolicyId,
    pub dir: Dir,
    /// Position in the policy's list of that direction.
    pub index: u32,
    /// `from`/`to` empty: every peer.
    pub any_peer: bool,
    pub groups: Vec<GroupId>,
    pub blocks: Vec<Block>,
    /// Empty: every port and protocol.
    pub ports: Vec<PortSpec>,
}

/// Per-policy counters, shared between engine generations of the same policy.
#[derive(Debug, Default)]
pub struct PolicyCounters {
    /// New connections allowed, per ingress rule then per egress rule.
    pub allowed: Box<[AtomicU64]>,
    /// New connections denied while this policy isolated the pod.
    pub denied_ingress: AtomicU64,
    pub denied_egress: AtomicU64,
}

impl PolicyCounters {
    pub fn new(n_rules: usize) -> PolicyCounters {
        PolicyCounters {
            allowed: (0..n_rules).map(|_| AtomicU64::new(0)).collect(),
            ..PolicyCounters::default()
        }
    }

    #[inline]
    pub(crate) fn bump(c: &AtomicU64) {
        // Counted on new connections only (not per packet), relaxed.
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// What the engine knows of a policy.
#[derive(Debug)]
pub struct PolicyInfo {
    pub namespace: String,
    pub name: String,
    pub n_ingress: u32,
    pub n_egress: u32,
    pub types: (bool, bool),
    pub counters: Arc<PolicyCounters>,
}

/// The rules that may allow traffic of one selected pod in one direction, and the
/// policies that isolate it (for drop counters).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    pub rules: Box<[RuleId]>,
    pub policies: Box<[PolicyId]>,
    /// `rules` filed by port and peer: what a verdict walks.
    pub index: index::RuleIndex,
}

/// The published policy state workers evaluate against. Cloning is shallow.
#[derive(Debug, Clone, Default)]
pub struct Engine {
    // The slabs sit behind an `Arc` of their own too: publishing (a clone) is
    // then O(1) whatever the number of policies, and a change copies a slab's
    // pointer vector only when it changes that slab (a pod relabel touches no
    // rule or policy; it copies the group slab only when its groups change).
    pub(crate) groups: Arc<Vec<Option<Arc<HashSet<Ip>>>>>,
    pub(crate) rules: Arc<Vec<Option<Arc<Rule>>>>,
    pub(crate) policies: Arc<Vec<Option<Arc<PolicyInfo>>>>,
    pub(crate) ingress: Arc<HashMap<Ip, Arc<Applied>>>,
    pub(crate) egress: Arc<HashMap<Ip, Arc<Applied>>>,
    /// Named container ports by pod IP (every pod with an IP, local or not).
    pub(crate) named: Arc<HashMap<Ip, Arc<[NamedPort]>>>,
    /// The address groups each IP belongs to, sorted (the groups inverted: a
    /// verdict intersects these with a port slot's groups).
    pub(crate) member_of: Arc<HashMap<Ip, Arc<[GroupId]>>>,
}

/// What workers and the control thread share.
pub type SharedEngine = Arc<ArcSwap<Engine>>;

pub fn shared() -> SharedEngine {
    Arc::new(ArcSwap::from_pointee(Engine::default()))
}

/// Size figures (for `vsctl policies` and benchmarks).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineSize {
    pub policies: usize,
    pub rules: usize,
    pub groups: usize,
    /// Sum of group sizes.
    pub group_members: usize,
    /// Selected (pod IP, direction) entries.
    pub applied: usize,
    /// Sum of rule ids over applied entries.
    pub applied_rules: usize,
    /// Entries of the per-pod rule indexes (each pod's index counted once).
    pub index_entries: usize,
}

impl Engine {
    pub fn size(&self) -> EngineSize {
        EngineSize {
            policies: self.policies.iter().flatten().count(),
            rules: self.rules.iter().flatten().count(),
            groups: self.groups.iter().flatten().count(),
            group_members: self.groups.iter().flatten().map(|g| g.len()).sum(),
            applied: self.ingress.len() + self.egress.len(),
            applied_rules: self
                .ingress
                .values()
                .chain(self.egress.values())
                .map(|a| a.rules.len())
                .sum(),
            index_entries: {
                // An index is shared by a pod's IPs: count each once.
                let mut seen = HashSet::new();
                self.ingress
                    .values()
                    .chain(self.egress.values())
                    .filter(|a| seen.insert(Arc::as_ptr(a)))
                    .map(|a| a.index.entries())
                    .sum()
            },
        }
    }

    /// Every policy with its counters, for `vsctl policies`.
    pub fn policies(&self) -> impl Iterator<Item = &Arc<PolicyInfo>> {
        self.policies.iter().flatten()
    }

    /// Whether `ip` is isolated in `dir`.
    pub fn isolated(&self, dir: Dir, ip: Ip) -> bool {
        match dir {
            Dir::Ingress => self.ingress.contains_key(&ip),
            Dir::Egress => self.egress.contains_key(&ip),
        }
    }
}

#[cfg(test)]
mod tests;

//! The verdict for one new connection: the work `policy(DIR)` does per packet.
//! No allocation, no lock: hash lookups in the published engine.

use super::{Dir, Engine, Ip, PolicyCounters, PortSpec, Rule, v4};
use crate::flow::field::{Field, ip_proto};
use crate::flow::key::Key;

/// The fields a verdict depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    pub src: Ip,
    pub dst: Ip,
    pub proto: u8,
    /// Destination port (TCP, UDP, SCTP); 0 otherwise.
    pub dport: u16,
}

impl Packet {
    /// The packet's addresses and port; `None` for what policy does not judge:
    /// non-IP, and ICMPv6 neighbour discovery and MLD (the link's own control
    /// traffic, as ARP is for IPv4: an isolated pod must still resolve its
    /// peers' addresses and be resolved by them, or replies to the connections
    /// its policies allow could not reach it; Antrea and Calico let it pass too).
    #[inline]
    pub fn from_key(key: &Key) -> Option<Packet> {
        if key.eth_type() == 0x86dd
            && key.ip_proto() == ip_proto::ICMPV6
            && crate::conntrack::ICMPV6_UNTRACKED.contains(&(Field::IcmpType.get(key) as u8))
        {
            return None;
        }
        let (src, dst) = match key.eth_type() {
            0x0800 => (
                v4(Field::Ipv4Src.get(key) as u32),
                v4(Field::Ipv4Dst.get(key) as u32),
            ),
            0x86dd => (Field::Ipv6Src.get(key), Field::Ipv6Dst.get(key)),
            _ => return None,
        };
        let proto = key.ip_proto();
        let dport = match proto {
            ip_proto::TCP | ip_proto::UDP | ip_proto::SCTP => Field::TpDst.get(key) as u16,
            _ => 0,
        };
        Some(Packet {
            src,
            dst,
            proto,
            dport,
        })
    }
}

/// The outcome of [`Engine::decide`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The pod is not isolated in this direction.
    NotIsolated,
    /// Allowed by this rule.
    Allowed(super::RuleId),
    Denied,
}

impl Decision {
    pub fn allows(self) -> bool {
        !matches!(self, Decision::Denied)
    }
}

impl Engine {
    /// Decides without counting (trace, tests).
    #[inline]
    pub fn decide(&self, dir: Dir, p: &Packet) -> Decision {
        let (me, peer) = match dir {
            Dir::Ingress => (p.dst, p.src),
            Dir::Egress => (p.src, p.dst),
        };
        let map = match dir {
            Dir::Ingress => &self.ingress,
            Dir::Egress => &self.egress,
        };
        let Some(applied) = map.get(&me) else {
            return Decision::NotIsolated;
        };
        let groups = self.member_of.get(&peer).map_or(&[][..], |g| &g[..]);
        match applied.index.find(self, p, peer, groups) {
            Some(id) => Decision::Allowed(id),
            None => Decision::Denied,
        }
    }

    /// Decides and counts: the allowing rule, or every policy isolating the pod.
    #[inline]
    pub fn decide_counted(&self, dir: Dir, p: &Packet) -> Decision {
        let d = self.decide(dir, p);
        match d {
            Decision::NotIsolated => {}
            Decision::Allowed(id) => {
                if let Some(Some(r)) = self.rules.get(id as usize)
                    && let Some(Some(pi)) = self.policies.get(r.policy as usize)
                {
                    let i = match r.dir {
                        Dir::Ingress => r.index as usize,
                        Dir::Egress => (pi.n_ingress + r.index) as usize,
                    };
                    if let Some(c) = pi.counters.allowed.get(i) {
                        PolicyCounters::bump(c);
                    }
                }
            }
            Decision::Denied => {
                let map = match dir {
                    Dir::Ingress => self.ingress.get(&p.dst),
                    Dir::Egress => self.egress.get(&p.src),
                };
                for &pid in map.map(|a| &a.policies[..]).unwrap_or(&[]) {
                    if let Some(Some(pi)) = self.policies.get(pid as usize) {
                        PolicyCounters::bump(match dir {
                            Dir::Ingress => &pi.counters.denied_ingress,
                            Dir::Egress => &pi.counters.denied_egress,
                        });
                    }
                }
            }
        }
        d
    }

    /// Whether one of `r`'s ports takes the packet (its protocol and port).
    #[inline]
    pub(crate) fn port_matches(&self, r: &Rule, p: &Packet) -> bool {
        if r.ports.is_empty() {
            return true;
        }
        r.ports.iter().any(|ps| match ps {
            PortSpec::Range { proto, lo, hi } => {
                *proto == p.proto && (*lo..=*hi).contains(&p.dport)
            }
            // Named ports are the destination pod's, whichever direction.
            PortSpec::Named { proto, name } => {
                *proto == p.proto
                    && self.named.get(&p.dst).is_some_and(|ports| {
                        ports
                            .iter()
                            .any(|(pr, n, num)| pr == proto && **n == **name && *num == p.dport)
                    })
            }
        })
    }
}

/// An [`Ip`] as text (IPv4-mapped addresses as dotted quads).
pub fn ip_text(ip: Ip) -> std::net::IpAddr {
    let v6 = std::net::Ipv6Addr::from(ip);
    match v6.to_ipv4_mapped() {
        Some(v4) => std::net::IpAddr::V4(v4),
        None => std::net::IpAddr::V6(v6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn icmp6(ty: u8) -> Key {
        let mut k = Key::ZERO;
        Field::EthType.set(&mut k, 0x86dd);
        Field::IpProto.set(&mut k, u128::from(ip_proto::ICMPV6));
        Field::Ipv6Src.set(&mut k, 0xfd00 << 112 | 1);
        Field::Ipv6Dst.set(&mut k, 0xfd00 << 112 | 2);
        Field::IcmpType.set(&mut k, u128::from(ty));
        k
    }

    /// Neighbour discovery and MLD are not judged by policy (an isolated pod
    /// must still resolve and be resolved); echo and other ICMPv6 are.
    #[test]
    fn neighbour_discovery_is_not_judged() {
        for ty in [130u8, 131, 132, 133, 134, 135, 136, 137, 143] {
            assert_eq!(Packet::from_key(&icmp6(ty)), None, "type {ty}");
        }
        for ty in [1u8, 128, 129, 139] {
            let p = Packet::from_key(&icmp6(ty)).expect("judged");
            assert_eq!((p.proto, p.dst), (ip_proto::ICMPV6, 0xfd00 << 112 | 2));
        }
    }
}

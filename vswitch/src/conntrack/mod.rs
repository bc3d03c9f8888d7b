//! Connection tracking behind the `ct` action and the service load balancer.
//!
//! One table shared by all workers ([`table::CtTable`]: sharded, bounded,
//! incrementally expired), so the two directions of a connection may arrive on
//! different workers. Per protocol: TCP runs the state machine of [`tcp`] with
//! per-state timeouts, UDP/SCTP are unreplied or assured, ICMP echo is keyed by
//! its identifier, and ICMP errors are related (`+rel`) to the connection whose
//! header they quote. NAT is stored per connection: packets in the original
//! direction get the reply tuple's inverse, replies get the original's inverse.

pub mod config;
pub mod icmp;
pub mod table;
pub mod tcp;
pub mod tuple;

pub use config::{CtConfig, Timeouts};
pub use table::{Conn, CtTable, cflag};
pub use tuple::Tuple;

use crate::flow::field::{Field, ip_proto};
use crate::flow::key::{Key, ct_state};
use crate::flow::spec::{NatKind, NatSpec};
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use tcp::{Step, TcpState};

/// What one `ct` action asks for.
pub struct CtRequest<'a> {
    pub zone: u16,
    pub commit: bool,
    pub nat: Option<&'a NatSpec>,
    pub set_mark: Option<(u32, u32)>,
    pub set_label: Option<(u128, u128)>,
}

/// What the executor read from the frame besides the key.
#[derive(Debug, Clone, Copy, Default)]
pub struct PacketInfo {
    /// ICMP echo identifier (request or reply).
    pub icmp_id: Option<u16>,
    /// For an ICMP error: the quoted packet's tuple as carried (zone unset).
    pub icmp_inner: Option<Tuple>,
}

/// New (address, port) values to write into a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Xlate {
    pub src: Option<(u128, u16)>,
    pub dst: Option<(u128, u16)>,
}

impl Xlate {
    pub fn is_empty(&self) -> bool {
        self.src.is_none() && self.dst.is_none()
    }
}

/// What conntrack decided for one packet (the key's ct_* fields are set too).
#[derive(Debug, Clone, Copy, Default)]
pub struct Verdict {
    /// Header rewrite the connection's NAT asks for (applied only under `nat`).
    pub xlate: Xlate,
    /// For an ICMP error: the rewrite of the quoted header (its src/dst).
    pub inner: Xlate,
    pub hairpin: bool,
    /// The reply direction of a NATed connection (the client's side).
    pub reply: bool,
    /// Frontend and endpoint index of a load-balanced connection (0: none).
    pub service: u32,
    pub backend: u32,
}

/// Which backend a load-balanced connection was given.
#[derive(Debug, Clone, Copy)]
pub struct LbChoice {
    pub service: u32,
    pub backend: u32,
    pub dst: (u128, u16),
    /// Source NAT to this address (hairpin, NodePort to a remote endpoint).
    pub snat: Option<u128>,
    pub hairpin: bool,
    /// The connection's `ct_label` (0: none).
    pub label: u128,
}

/// ICMPv6 messages that belong to the link, not to a connection: MLD query,
/// report and done (130-132), router solicitation and advertisement, neighbour
/// solicitation and advertisement, redirect (133-137), MLDv2 report (143).
/// Linux's conntrack leaves exactly these untracked (`noct_valid_new`).
pub const ICMPV6_UNTRACKED: [u8; 9] = [130, 131, 132, 133, 134, 135, 136, 137, 143];

/// Whether conntrack leaves the packet untracked (`ct_state` without `+trk`)
/// rather than judging it: IP protocols it has no state machine for (Linux
/// would track them generically; here they pass untouched, and NetworkPolicy
/// sees them as `-trk`), and ICMPv6 neighbour discovery and MLD. Without this,
/// a `ct` over all IP traffic would call IPv6 neighbour discovery `+inv`, and
/// the `+inv` drop would cut IPv6 pods off each other.
pub fn untracked(key: &Key) -> bool {
    if !matches!(key.eth_type(), 0x0800 | 0x86dd) {
        return false;
    }
    match key.ip_proto() {
        ip_proto::TCP | ip_proto::UDP | ip_proto::SCTP | ip_proto::ICMP => false,
        ip_proto::ICMPV6 => {
            key.eth_type() == 0x86dd && ICMPV6_UNTRACKED.contains(&(Field::IcmpType.get(key) as u8))
        }
        _ => true,
    }
}

/// The tuple of the packet described by `key`, or `None` for what conntrack does
/// not track (not IP, other protocols, ICMP that is neither echo nor error).
pub fn tuple_of(key: &Key, zone: u16, info: &PacketInfo) -> Option<Tuple> {
    let (src, dst, v6) = match key.eth_type() {
        0x0800 => (Field::Ipv4Src.get(key), Field::Ipv4Dst.get(key), false),
        0x86dd => (Field::Ipv6Src.get(key), Field::Ipv6Dst.get(key), true),
        _ => return None,
    };
    let proto = key.ip_proto();
    let (sport, dport) = match proto {
        ip_proto::TCP | ip_proto::UDP | ip_proto::SCTP => {
            (Field::TpSrc.get(key) as u16, Field::TpDst.get(key) as u16)
        }
        ip_proto::ICMP | ip_proto::ICMPV6 => {
            let id = info.icmp_id?;
            (id, id)
        }
        _ => return None,
    };
    Some(Tuple {
        src: tuple::addr_words(src),
        dst: tuple::addr_words(dst),
        sport,
        dport,
        zone,
        proto,
        v6,
    })
}

/// The connection table plus the per-packet logic around it.
pub struct Conntrack {
    pub table: CtTable,
}

impl Default for Conntrack {
    fn default() -> Self {
        Conntrack::new(CtConfig::default())
    }
}

fn set_ct(key: &mut Key, state: u8, c: Option<&Conn>) {
    Field::CtState.set(key, u128::from(state));
    match c {
        Some(c) => {
            Field::CtMark.set(key, u128::from(c.mark));
            Field::CtLabel.set(key, (u128::from(c.label[0]) << 64) | u128::from(c.label[1]));
        }
        None => {
            Field::CtMark.set(key, 0);
            Field::CtLabel.set(key, 0);
        }
    }
}

fn apply_exec(c: &mut Conn, req: &CtRequest<'_>) {
    if let Some((v, m)) = req.set_mark {
        c.mark = (c.mark & !m) | (v & m);
    }
    if let Some((v, m)) = req.set_label {
        let l = (u128::from(c.label[0]) << 64) | u128::from(c.label[1]);
        let l = (l & !m) | (v & m);
        c.label = [(l >> 64) as u64, l as u64];
    }
}

/// The rewrite that makes a packet of `c` in direction `reply` look like the
/// other side expects.
fn xlate_for(c: &Conn, reply: bool) -> Xlate {
    let mut x = Xlate::default();
    if reply {
        // Reply (B → client or hairpin IP) becomes (VIP → client).
        if c.has(cflag::DNAT) {
            x.src = Some((c.orig.dst_ip(), c.orig.dport));
        }
        if c.has(cflag::SNAT) {
            x.dst = Some((c.orig.src_ip(), c.orig.sport));
        }
    } else {
        if c.has(cflag::DNAT) {
            x.dst = Some((c.reply.src_ip(), c.reply.sport));
        }
        if c.has(cflag::SNAT) {
            x.src = Some((c.reply.dst_ip(), c.reply.dport));
        }
    }
    x
}

fn ip_u128(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(v) => u128::from(u32::from(v)),
        IpAddr::V6(v) => u128::from(v),
    }
}

impl Conntrack {
    pub fn new(config: CtConfig) -> Conntrack {
        Conntrack {
            table: CtTable::new(config),
        }
    }

    fn timeout_for(&self, c: &Conn) -> u32 {
        let t = &self.table.config.timeouts;
        match c.orig.proto {
            ip_proto::TCP => tcp_state(c.state).timeout_s(t),
            ip_proto::ICMP | ip_proto::ICMPV6 => t.icmp,
            _ if c.has(cflag::SEEN_REPLY) => t.udp_assured,
            _ => t.udp_unreplied,
        }
    }

    fn invalid(&self, key: &mut Key) -> Verdict {
        self.table.counters.invalid.fetch_add(1, Ordering::Relaxed);
        set_ct(key, ct_state::TRK | ct_state::INV, None);
        Verdict::default()
    }

    /// Tracks the packet described by `key`, setting its ct_* fields.
    pub fn process(
        &self,
        key: &mut Key,
        req: &CtRequest<'_>,
        info: &PacketInfo,
        now: u64,
    ) -> Verdict {
        Field::CtZone.set(key, u128::from(req.zone));
        if untracked(key) {
            // Not conntrack's business (Linux leaves these untracked too):
            // `-trk`, so no `+inv` drop, and no entry.
            set_ct(key, 0, None);
            return Verdict::default();
        }
        if let Some(inner) = info.icmp_inner {
            return self.related(key, req.zone, inner, now);
        }
        let Some(t) = tuple_of(key, req.zone, info) else {
            return self.invalid(key);
        };
        let flags = Field::TcpFlags.get(key) as u16;
        let is_tcp = t.proto == ip_proto::TCP;
        let mut bad = false;
        let mut reopen = false;
        let found = self.table.lookup(&t, now, |c, reply| {
            if is_tcp {
                let fo = c.has(cflag::FIN_ORIG);
                let fr = c.has(cflag::FIN_REPLY);
                match tcp::step(tcp_state(c.state), flags, reply, fo, fr) {
                    Step::Invalid => {
                        bad = true;
                        return true;
                    }
                    Step::Reopen => {
                        reopen = true;
                        return false;
                    }
                    Step::To(s) => {
                        c.state = s as u8;
                        if flags & tcp::flags::FIN != 0 {
                            c.flags |= if reply {
                                cflag::FIN_REPLY
                            } else {
                                cflag::FIN_ORIG
                            };
                        }
                        if s == TcpState::Established && c.has(cflag::SEEN_REPLY) {
                            c.flags |= cflag::ASSURED;
                        }
                    }
                }
            }
            if reply {
                c.flags |= cflag::SEEN_REPLY;
                if !is_tcp {
                    c.flags |= cflag::ASSURED;
                }
            }
            c.last_ns = now;
            if req.commit {
                apply_exec(c, req);
            }
            c.timeout_s = self.timeout_for(c);
            true
        });
        if bad {
            return self.invalid(key);
        }
        if let Some(f) = found {
            let c = &f.conn;
            let mut st = ct_state::TRK;
            if f.reply {
                st |= ct_state::RPL | ct_state::EST;
            } else if c.has(cflag::SEEN_REPLY) {
                st |= ct_state::EST;
            } else {
                st |= ct_state::NEW;
            }
            if c.has(cflag::DNAT) {
                st |= ct_state::DNAT;
            }
            if c.has(cflag::SNAT) {
                st |= ct_state::SNAT;
            }
            set_ct(key, st, Some(c));
            return Verdict {
                xlate: xlate_for(c, f.reply),
                inner: Xlate::default(),
                hairpin: c.has(cflag::HAIRPIN),
                reply: f.reply,
                service: c.service,
                backend: c.backend,
            };
        }
        let _ = reopen;
        // No connection: is this a valid first packet?
        let tstate = if is_tcp {
            match tcp::open(flags) {
                Some(s) => s as u8,
                None => return self.invalid(key),
            }
        } else {
            0
        };
        if !req.commit {
            set_ct(key, ct_state::TRK | ct_state::NEW, None);
            return Verdict::default();
        }
        let mut reply = t.reversed();
        let mut flags_c = 0;
        if let Some(n) = req.nat {
            match (n.kind, n.addr_min) {
                (Some(NatKind::Dst), Some(a)) => {
                    reply.src = tuple::addr_words(ip_u128(a));
                    if let Some(p) = n.port_min {
                        reply.sport = p;
                    }
                    flags_c |= cflag::DNAT;
                }
                (Some(NatKind::Src), Some(a)) => {
                    reply.dst = tuple::addr_words(ip_u128(a));
                    if let Some(p) = n.port_min {
                        reply.dport = p;
                    }
                    flags_c |= cflag::SNAT;
                }
                _ => {}
            }
        }
        let mut c = Conn::new(t, reply, now, 0);
        c.state = tstate;
        c.flags |= flags_c;
        apply_exec(&mut c, req);
        c.timeout_s = self.timeout_for(&c);
        let mut st = ct_state::TRK | ct_state::NEW;
        if self.table.insert(c) {
            if c.has(cflag::DNAT) {
                st |= ct_state::DNAT;
            }
            if c.has(cflag::SNAT) {
                st |= ct_state::SNAT;
            }
            set_ct(key, st, Some(&c));
            Verdict {
                xlate: xlate_for(&c, false),
                ..Verdict::default()
            }
        } else {
            set_ct(key, st, None);
            Verdict::default()
        }
    }

    /// Commits a load-balanced connection for the packet in `key` (a new one,
    /// already looked up) with DNAT to the chosen endpoint; returns the rewrite.
    /// `None` when the table refused it (full of assured connections).
    pub fn commit_lb(
        &self,
        key: &mut Key,
        zone: u16,
        info: &PacketInfo,
        lb: &LbChoice,
        now: u64,
    ) -> Option<Verdict> {
        let t = tuple_of(key, zone, info)?;
        let flags = Field::TcpFlags.get(key) as u16;
        let tstate = if t.proto == ip_proto::TCP {
            tcp::open(flags)? as u8
        } else {
            0
        };
        let mut reply = t.reversed();
        reply.src = tuple::addr_words(lb.dst.0);
        reply.sport = lb.dst.1;
        let mut c = Conn::new(t, reply, now, 0);
        c.flags |= cflag::DNAT;
        if let Some(s) = lb.snat {
            c.reply.dst = tuple::addr_words(s);
            c.flags |= cflag::SNAT;
        }
        if lb.hairpin {
            c.flags |= cflag::HAIRPIN;
        }
        c.state = tstate;
        c.service = lb.service;
        c.backend = lb.backend;
        c.label = [(lb.label >> 64) as u64, lb.label as u64];
        c.timeout_s = self.timeout_for(&c);
        if !self.table.insert(c) {
            return None;
        }
        let mut st = ct_state::TRK | ct_state::NEW | ct_state::DNAT;
        if lb.snat.is_some() {
            st |= ct_state::SNAT;
        }
        set_ct(key, st, Some(&c));
        Some(Verdict {
            xlate: xlate_for(&c, false),
            inner: Xlate::default(),
            hairpin: lb.hairpin,
            reply: false,
            service: lb.service,
            backend: lb.backend,
        })
    }

    /// An ICMP error quoting `inner`: related to the connection of the quoted
    /// packet. The quoted packet travelled towards the error's sender, so the
    /// reverse of the quoted tuple is the error's own direction.
    fn related(&self, key: &mut Key, zone: u16, mut inner: Tuple, now: u64) -> Verdict {
        inner.zone = zone;
        let Some(f) = self.table.lookup(&inner.reversed(), now, |_, _| true) else {
            return self.invalid(key);
        };
        let c = &f.conn;
        let st = ct_state::TRK | ct_state::REL | if f.reply { ct_state::RPL } else { 0 };
        set_ct(key, st, Some(c));
        // The outer header is translated as any packet of the error's direction;
        // the quoted header (the other direction, already translated on its way
        // out) gets the same translation with source and destination swapped, so
        // the receiver recognises its own packet.
        let outer = xlate_for(c, f.reply);
        Verdict {
            xlate: outer,
            inner: Xlate {
                src: outer.dst,
                dst: outer.src,
            },
            hairpin: c.has(cflag::HAIRPIN),
            reply: f.reply,
            service: c.service,
            backend: c.backend,
        }
    }

    /// Housekeeping (every 250 ms per worker): expire a slice of the table, an
    /// eighth of the shards (at least 16), so one worker sweeps the whole table
    /// every 2 s. A slice costs a scan of its shards' slots (~0.2 ms at 1M
    /// entries); a slower sweep (16 shards: 16 s at 1M entries) let dead
    /// connections fill the table at 100k+ new connections per second, so
    /// inserts evicted instead of reusing expired slots.
    pub fn expire_some(&self, now: u64) -> usize {
        let n = (self.table.n_shards() / 8).max(16);
        self.table.expire_some(now, n)
    }
}

fn tcp_state(s: u8) -> TcpState {
    match s {
        0 => TcpState::SynSent,
        1 => TcpState::SynRecv,
        2 => TcpState::Established,
        3 => TcpState::FinWait,
        4 => TcpState::CloseWait,
        5 => TcpState::TimeWait,
        _ => TcpState::Close,
    }
}

/// The state name of a connection for listings.
pub fn state_name(c: &Conn) -> &'static str {
    match c.orig.proto {
        ip_proto::TCP => tcp_state(c.state).name(),
        _ if c.has(cflag::ASSURED) => "ASSURED",
        _ => "UNREPLIED",
    }
}

#[cfg(test)]
mod tests;

//! Connection tracking behind the `ct` action.
//!
//! This is the hook the pipeline calls and the minimal engine behind it: per
//! worker, IPv4/IPv6 TCP/UDP/ICMP connections keyed by zone and 5-tuple, committed
//! by `ct(commit)`, reporting `+trk` with `+new`/`+est`/`+rpl` and the stored
//! mark and label. The full engine (TCP state machine and timeouts, NAT, ICMP
//! errors, a table shared by all workers, bounded with eviction) is the Services
//! work; its interface is this one.

use crate::flow::field::{Field, ip_proto};
use crate::flow::key::{Key, ct_state};
use crate::flow::spec::NatSpec;
use std::collections::HashMap;

/// Most connections one worker's minimal table holds; beyond it commits fail
/// (the packet still gets `+trk+new`).
const MAX_ENTRIES: usize = 65536;
/// A connection not seen for this long is forgotten.
const IDLE_NS: u64 = 120_000_000_000;

/// What one `ct` action asks for.
pub struct CtRequest<'a> {
    pub zone: u16,
    pub commit: bool,
    pub nat: Option<&'a NatSpec>,
    pub set_mark: Option<(u32, u32)>,
    pub set_label: Option<(u128, u128)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ConnKey {
    zone: u16,
    proto: u8,
    src: u128,
    dst: u128,
    sport: u16,
    dport: u16,
}

impl ConnKey {
    fn reversed(&self) -> ConnKey {
        ConnKey {
            src: self.dst,
            dst: self.src,
            sport: self.dport,
            dport: self.sport,
            ..*self
        }
    }
}

#[derive(Debug, Clone)]
struct Conn {
    seen_reply: bool,
    mark: u32,
    label: u128,
    last_ns: u64,
}

#[derive(Default)]
pub struct Conntrack {
    conns: HashMap<ConnKey, Conn>,
}

impl Conntrack {
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// Tracks the packet described by `key`, setting its ct_* fields.
    pub fn process(&mut self, key: &mut Key, req: &CtRequest<'_>, now_ns: u64) {
        Field::CtZone.set(key, u128::from(req.zone));
        let Some(ck) = conn_key(key, req.zone) else {
            // Not a protocol we track: tracked, but invalid.
            Field::CtState.set(key, u128::from(ct_state::TRK | ct_state::INV));
            return;
        };
        let mut state = ct_state::TRK;
        let (dir_key, reply) = if self.conns.contains_key(&ck) {
            (ck, false)
        } else if self.conns.contains_key(&ck.reversed()) {
            (ck.reversed(), true)
        } else {
            (ck, false)
        };
        let existing = self.conns.get_mut(&dir_key).filter(|c| {
            // Forget idle connections lazily.
            now_ns.saturating_sub(c.last_ns) < IDLE_NS
        });
        match existing {
            Some(c) => {
                c.last_ns = now_ns;
                if reply {
                    c.seen_reply = true;
                    state |= ct_state::RPL | ct_state::EST;
                } else if c.seen_reply {
                    state |= ct_state::EST;
                } else {
                    state |= ct_state::NEW;
                }
                if req.commit {
                    apply_exec(c, req);
                }
                Field::CtMark.set(key, u128::from(c.mark));
                Field::CtLabel.set(key, c.label);
            }
            None => {
                state |= ct_state::NEW;
                if req.commit && self.conns.len() < MAX_ENTRIES {
                    let mut c = Conn {
                        seen_reply: false,
                        mark: 0,
                        label: 0,
                        last_ns: now_ns,
                    };
                    apply_exec(&mut c, req);
                    Field::CtMark.set(key, u128::from(c.mark));
                    Field::CtLabel.set(key, c.label);
                    self.conns.insert(ck, c);
                } else {
                    Field::CtMark.set(key, 0);
                    Field::CtLabel.set(key, 0);
                }
            }
        }
        Field::CtState.set(key, u128::from(state));
    }

    /// Drops connections idle for longer than the timeout (housekeeping).
    pub fn expire(&mut self, now_ns: u64) -> usize {
        let before = self.conns.len();
        self.conns
            .retain(|_, c| now_ns.saturating_sub(c.last_ns) < IDLE_NS);
        before - self.conns.len()
    }
}

fn apply_exec(c: &mut Conn, req: &CtRequest<'_>) {
    if let Some((v, m)) = req.set_mark {
        c.mark = (c.mark & !m) | (v & m);
    }
    if let Some((v, m)) = req.set_label {
        c.label = (c.label & !m) | (v & m);
    }
}

fn conn_key(key: &Key, zone: u16) -> Option<ConnKey> {
    let proto = key.ip_proto();
    let (src, dst) = match key.eth_type() {
        0x0800 => (Field::Ipv4Src.get(key), Field::Ipv4Dst.get(key)),
        0x86dd => (Field::Ipv6Src.get(key), Field::Ipv6Dst.get(key)),
        _ => return None,
    };
    let (sport, dport) = match proto {
        ip_proto::TCP | ip_proto::UDP | ip_proto::SCTP => {
            (Field::TpSrc.get(key) as u16, Field::TpDst.get(key) as u16)
        }
        // ICMP echo request/reply pair up as one connection (ids are not in the
        // key; type alone is enough for the minimal engine).
        ip_proto::ICMP | ip_proto::ICMPV6 => (0, 0),
        _ => return None,
    };
    Some(ConnKey {
        zone,
        proto,
        src,
        dst,
        sport,
        dport,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp(src: u32, dst: u32, sp: u16, dp: u16) -> Key {
        let mut k = Key::ZERO;
        Field::EthType.set(&mut k, 0x0800);
        Field::IpProto.set(&mut k, 17);
        Field::Ipv4Src.set(&mut k, u128::from(src));
        Field::Ipv4Dst.set(&mut k, u128::from(dst));
        Field::TpSrc.set(&mut k, u128::from(sp));
        Field::TpDst.set(&mut k, u128::from(dp));
        k
    }

    fn req(commit: bool) -> CtRequest<'static> {
        CtRequest {
            zone: 1,
            commit,
            nat: None,
            set_mark: commit.then_some((7, 0xff)),
            set_label: None,
        }
    }

    #[test]
    fn new_then_reply_then_established() {
        let mut ct = Conntrack::default();
        let mut k = udp(1, 2, 1000, 53);
        ct.process(&mut k, &req(false), 1);
        assert_eq!(Field::CtState.get(&k) as u8, ct_state::TRK | ct_state::NEW);
        assert!(ct.is_empty(), "not committed, not remembered");
        ct.process(&mut k, &req(true), 2);
        assert_eq!(Field::CtMark.get(&k), 7);
        let mut r = udp(2, 1, 53, 1000);
        ct.process(&mut r, &req(false), 3);
        assert_eq!(
            Field::CtState.get(&r) as u8,
            ct_state::TRK | ct_state::EST | ct_state::RPL
        );
        assert_eq!(Field::CtMark.get(&r), 7);
        let mut k2 = udp(1, 2, 1000, 53);
        ct.process(&mut k2, &req(false), 4);
        assert_eq!(Field::CtState.get(&k2) as u8, ct_state::TRK | ct_state::EST);
        assert_eq!(Field::CtZone.get(&k2), 1);
        assert_eq!(ct.expire(4 + IDLE_NS), 1);
    }
}

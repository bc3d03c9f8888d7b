//! Established conntrack connections with their NAT in the XDP fast path
//! (`bpf/fastpath_nat.h`): the kernel side of Services for connections past their
//! first packet, as OVS's netdev-offload-xdp or Cilium's datapath do it.
//!
//! Conntrack stays the source of truth; the kernel replays one direction of one
//! connection per entry of `nat_flows` ({saddr, daddr, sport, dport, proto} →
//! expected ingress and Ethernet addresses, new Ethernet addresses, new
//! addresses/ports, TTL decrement, egress, epoch, idle limit, last_seen).
//!
//! - **What is offloaded** (the worker decides, `worker/fastpath_nat.rs`): an
//!   IPv4 TCP/UDP packet whose first pipeline pass was exactly a `ct(nat)` that
//!   recirculates ([`STAGE_CT`]) and whose second pass only rewrote Ethernet
//!   addresses, maybe decremented the TTL, and forwarded to one port
//!   ([`STAGE_OUT`]), both megaflows consulting nothing that varies between the
//!   packets of one direction of a connection (no TCP flags, TOS, TTL,
//!   fragmentation). The connection: found in the table with a translation, not
//!   hairpin; TCP ESTABLISHED and assured, UDP any packet after the first.
//! - **Never stale**: entries carry the fast path's epoch (flows, ports,
//!   services, policy, MAC moves, conntrack flush and endpoint removal bump it);
//!   FIN/RST/SYN always reach user space, which deletes both directions' entries
//!   of that connection; each worker re-checks its entries once a second against
//!   the table (gone or no longer ESTABLISHED: deleted).
//! - **Expiry**: the same once-a-second sweep copies each entry's `last_seen`
//!   into the connection's last-use time, and the kernel ignores an entry idle
//!   for longer than the connection's timeout less [`IDLE_MARGIN_S`], so the
//!   kernel stops before conntrack could expire a connection it still forwards.

use super::fastpath::FastPath;
use crate::conntrack::Tuple;
use crate::flow::dpaction::DpAction;
use crate::flow::field::Field;
use crate::flow::key::{
    Key, W_CT, W_CT_LABEL, W_ETH_DST, W_ETH_SRC, W_METADATA, W_NW, W_PORT_TYPE_VLAN, W_RECIRC,
    W_REGS, W_TP,
};
use std::io;
use std::os::fd::AsRawFd;

/// Entries a worker remembers as installed (more: no further NAT installs until
/// the next epoch).
pub const MAX_INSTALLED: usize = 65536;
/// Seconds the kernel's idle limit stays below the connection's timeout: covers
/// `last_seen`'s 1 s granularity and the 1 s sweep.
pub const IDLE_MARGIN_S: u32 = 3;

/// Not part of an offloadable NAT decision.
pub const STAGE_NONE: u8 = 0;
/// `ct(nat)` recirculating: the first pass of an offloadable decision.
pub const STAGE_CT: u8 = 1;
/// Ethernet rewrites, maybe `dec_ttl`, then one `normal` or `output`: the last pass.
pub const STAGE_OUT: u8 = 2;

/// Whether the megaflow consulted only what is the same for every packet of one
/// direction of a connection: in_port, Ethernet addresses and type, IPv4
/// addresses, protocol, ports, and pipeline metadata (ct state, registers,
/// recirculation).
fn consults_only_connection(consulted: &Key) -> bool {
    const MAC: u64 = (1 << 48) - 1;
    const MAC_PROTO: u64 = (1 << 56) - 1; // eth_src + ip_proto, not ip_ttl
    consulted.0.iter().enumerate().all(|(w, &bits)| {
        let allowed = match w {
            W_PORT_TYPE_VLAN | W_NW => u64::MAX,
            W_ETH_SRC => MAC_PROTO,
            W_ETH_DST => MAC,    // not ip_tos / ip_frag
            W_TP => 0xffff_ffff, // ports, not tcp_flags
            W_CT | W_CT_LABEL | W_CT_LABEL_LO | W_METADATA | W_RECIRC => u64::MAX,
            w if (W_REGS..W_METADATA).contains(&w) => u64::MAX,
            _ => 0,
        };
        bits & !allowed == 0
    })
}

const W_CT_LABEL_LO: usize = W_CT_LABEL + 1;

/// A megaflow's part in an offloadable NAT decision ([`STAGE_CT`], [`STAGE_OUT`]
/// or [`STAGE_NONE`]).
pub fn stage(actions: &[DpAction], consulted: &Key) -> u8 {
    if !consults_only_connection(consulted) {
        return STAGE_NONE;
    }
    // Register/metadata writes before the `ct` (the overlay's table 0 loads
    // reg0 with the port's kind): deterministic, and only the key carries them.
    let lead = actions
        .iter()
        .take_while(|a| matches!(a, DpAction::SetMeta { .. }))
        .count();
    let actions_ct = &actions[lead..];
    if let [
        DpAction::Ct {
            commit: false,
            nat: Some(_),
            set_mark: None,
            set_label: None,
            recirc: Some(_),
            ..
        },
    ] = actions_ct
    {
        return STAGE_CT;
    }
    match actions {
        [
            DpAction::Ct {
                commit: false,
                nat: Some(_),
                set_mark: None,
                set_label: None,
                recirc: Some(_),
                ..
            },
        ] => STAGE_CT,
        [init @ .., DpAction::Normal | DpAction::Output(_)] => {
            let plain = init.iter().all(|a| match a {
                DpAction::SetField { field, mask, .. } => {
                    matches!(field, Field::EthSrc | Field::EthDst)
                        && (*mask == u128::MAX || *mask == field.full_mask())
                }
                DpAction::DecTtl | DpAction::SetMeta { .. } => true,
                _ => false,
            });
            let ttl = init
                .iter()
                .filter(|a| matches!(a, DpAction::DecTtl))
                .count();
            if plain && ttl <= 1 {
                STAGE_OUT
            } else {
                STAGE_NONE
            }
        }
        _ => STAGE_NONE,
    }
}

/// Must match `struct nat_key` in `bpf/fastpath_nat.h` (16 bytes). Addresses and
/// ports in network byte order (as on the wire).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NatKey {
    pub saddr: [u8; 4],
    pub daddr: [u8; 4],
    pub sport: [u8; 2],
    pub dport: [u8; 2],
    pub proto: u8,
    pub pad: [u8; 3],
}

const _: () = assert!(size_of::<NatKey>() == 16);

impl NatKey {
    /// The key of packets carrying `t` (IPv4 TCP/UDP only).
    pub fn of_tuple(t: &Tuple) -> Option<NatKey> {
        if t.v6 || !matches!(t.proto, 6 | 17) {
            return None;
        }
        Some(NatKey {
            saddr: t.src[3].to_be_bytes(),
            daddr: t.dst[3].to_be_bytes(),
            sport: t.sport.to_be_bytes(),
            dport: t.dport.to_be_bytes(),
            proto: t.proto,
            pad: [0; 3],
        })
    }
}

/// Must match `struct nat_value` in `bpf/fastpath_nat.h` (80 bytes).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct NatValue {
    pub in_ifindex: u32,
    pub out_ifindex: u32,
    pub in_port: u32,
    pub out_port: u32,
    pub match_dst: [u8; 6],
    pub match_src: [u8; 6],
    pub new_dst: [u8; 6],
    pub new_src: [u8; 6],
    pub saddr: [u8; 4],
    pub daddr: [u8; 4],
    pub sport: [u8; 2],
    pub dport: [u8; 2],
    pub epoch: u32,
    pub dec_ttl: u8,
    pub pad: [u8; 7],
    pub idle_ns: u64,
    /// CLOCK_MONOTONIC ns, refreshed by the program about once a second.
    pub last_seen: u64,
}

const _: () = assert!(size_of::<NatValue>() == 80);

/// The 6 bytes of a MAC held in the low 48 bits of a key field.
pub fn mac_bytes(v: u128) -> [u8; 6] {
    let b = (v as u64).to_be_bytes();
    [b[2], b[3], b[4], b[5], b[6], b[7]]
}

/// The tuple (zone `zone`) of an IPv4 TCP/UDP packet described by `k`.
pub fn tuple_of_key(k: &Key, zone: u16) -> Option<Tuple> {
    if k.eth_type() != 0x0800 || !matches!(k.ip_proto(), 6 | 17) {
        return None;
    }
    Some(Tuple {
        src: crate::conntrack::tuple::addr_words(Field::Ipv4Src.get(k)),
        dst: crate::conntrack::tuple::addr_words(Field::Ipv4Dst.get(k)),
        sport: Field::TpSrc.get(k) as u16,
        dport: Field::TpDst.get(k) as u16,
        zone,
        proto: k.ip_proto(),
        v6: false,
    })
}

/// Whether the frame described by `k` is one the program leaves to user space
/// whatever the map says: TCP with SYN, FIN or RST, IPv4 fragments.
pub fn kernel_skips(k: &Key) -> bool {
    let flags = Field::TcpFlags.get(k) as u16;
    (k.ip_proto() == 6 && flags & 0x07 != 0) || Field::IpFrag.get(k) != 0
}

fn ok(rc: i32) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else if rc < 0 {
        Err(io::Error::from_raw_os_error(-rc))
    } else {
        Err(io::Error::last_os_error())
    }
}

impl FastPath {
    /// Writes one direction of a connection into `nat_flows`.
    pub fn nat_install(&self, k: &NatKey, v: &NatValue) -> io::Result<()> {
        // SAFETY: key and value are repr(C) plain data of the map's sizes (the
        // BTF of the embedded object); both outlive the call.
        let rc = unsafe {
            libxdp_sys::bpf_map_update_elem(
                self.nat_flows.as_raw_fd(),
                (k as *const NatKey).cast(),
                (v as *const NatValue).cast(),
                0,
            )
        };
        let r = ok(rc);
        let c = &self.counters;
        match &r {
            Ok(()) => c
                .installs
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            Err(_) => c
                .install_errors
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        };
        r
    }

    /// The entry for `k`, if the kernel has it.
    pub fn nat_lookup(&self, k: &NatKey) -> Option<NatValue> {
        let mut v = NatValue::default();
        // SAFETY: key and value have the map's sizes; `v` is written by the kernel.
        let rc = unsafe {
            libxdp_sys::bpf_map_lookup_elem(
                self.nat_flows.as_raw_fd(),
                (k as *const NatKey).cast(),
                (&mut v as *mut NatValue).cast(),
            )
        };
        (rc == 0).then_some(v)
    }

    /// Deletes the entry for `k` (absent is fine).
    pub fn nat_delete(&self, k: &NatKey) {
        // SAFETY: a key of the map's size; the kernel only reads it.
        unsafe {
            libxdp_sys::bpf_map_delete_elem(self.nat_flows.as_raw_fd(), (k as *const NatKey).cast())
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::spec::NatSpec;

    fn l2() -> Key {
        let mut k = Key::ZERO;
        Field::InPort.set_masked(&mut k, u128::MAX, u128::MAX);
        Field::EthDst.set_masked(&mut k, u128::MAX, u128::MAX);
        Field::EthType.set_masked(&mut k, u128::MAX, u128::MAX);
        k
    }

    fn ct() -> DpAction {
        DpAction::Ct {
            zone: 1,
            commit: false,
            nat: Some(NatSpec {
                kind: None,
                addr_min: None,
                addr_max: None,
                port_min: None,
                port_max: None,
            }),
            set_mark: None,
            set_label: None,
            recirc: Some(3),
        }
    }

    #[test]
    fn stages() {
        let mut k = l2();
        for f in ["ip_src", "ip_dst", "ip_proto", "tp_dst", "ct_state", "reg4"] {
            Field::by_name(f)
                .expect("field")
                .set_masked(&mut k, u128::MAX, u128::MAX);
        }
        assert_eq!(stage(&[ct()], &k), STAGE_CT);
        let reg0 = DpAction::SetMeta {
            word: 15,
            value: 2,
            mask: 0xffff_ffff,
        };
        assert_eq!(stage(&[reg0.clone(), ct()], &k), STAGE_CT);
        assert_eq!(stage(&[ct(), reg0.clone()], &k), STAGE_NONE);
        assert_eq!(stage(&[DpAction::Normal], &k), STAGE_OUT);
        let routed = [
            DpAction::SetField {
                field: Field::EthSrc,
                value: 1,
                mask: u128::MAX,
            },
            DpAction::DecTtl,
            DpAction::Output(4),
        ];
        assert_eq!(stage(&routed, &k), STAGE_OUT);
        // A committing ct, a second action, a flood, a policy check, an IP
        // rewrite: not offloadable.
        let mut commit = ct();
        if let DpAction::Ct { commit: c, .. } = &mut commit {
            *c = true;
        }
        assert_eq!(stage(&[commit], &k), STAGE_NONE);
        assert_eq!(stage(&[ct(), DpAction::Normal], &k), STAGE_NONE);
        assert_eq!(stage(&[DpAction::Flood], &k), STAGE_NONE);
        assert_eq!(
            stage(
                &[
                    DpAction::Policy(crate::policy::Dir::Ingress),
                    DpAction::Normal
                ],
                &k
            ),
            STAGE_NONE
        );
        let nw = [
            DpAction::SetField {
                field: Field::Ipv4Dst,
                value: 1,
                mask: u128::MAX,
            },
            DpAction::Normal,
        ];
        assert_eq!(stage(&nw, &k), STAGE_NONE);
        assert_eq!(
            stage(&[DpAction::DecTtl, DpAction::DecTtl, DpAction::Normal], &k),
            STAGE_NONE
        );
        // Megaflows that looked at what varies within a connection.
        for f in [
            "tcp_flags",
            "ip_ttl",
            "ip_dscp",
            "ip_frag",
            "tun_id",
            "ipv6_src",
        ] {
            let mut m = k;
            Field::by_name(f)
                .expect("field")
                .set_masked(&mut m, u128::MAX, u128::MAX);
            assert_eq!(stage(&[DpAction::Normal], &m), STAGE_NONE, "{f}");
            assert_eq!(stage(&[ct()], &m), STAGE_NONE, "{f}");
        }
    }

    #[test]
    fn key_of_tuple_is_network_order() {
        let t = Tuple {
            src: crate::conntrack::tuple::addr_words(0x0a00_0001),
            dst: crate::conntrack::tuple::addr_words(0x0a60_000a),
            sport: 40000,
            dport: 80,
            zone: 1,
            proto: 6,
            v6: false,
        };
        let k = NatKey::of_tuple(&t).expect("tcp");
        assert_eq!(k.saddr, [10, 0, 0, 1]);
        assert_eq!(k.daddr, [10, 96, 0, 10]);
        assert_eq!(k.sport, 40000u16.to_be_bytes());
        assert_eq!(k.dport, [0, 80]);
        assert!(NatKey::of_tuple(&Tuple { proto: 1, ..t }).is_none());
        assert!(NatKey::of_tuple(&Tuple { v6: true, ..t }).is_none());
        assert_eq!(mac_bytes(0x0a58_0a00_0001), [0x0a, 0x58, 0x0a, 0, 0, 1]);
    }
}

//! Every matchable and settable field: its name, where it lives in the [`Key`],
//! how wide it is, how its values are written, and what a match on it requires.
//! Parsing, formatting, matching and `set_field` all go through this one table.

use super::key::*;

/// How a field's values are written in flow specs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// Decimal or `0x` hex integer.
    Int,
    /// Hex integer, printed `0x0800`.
    Hex,
    /// `aa:bb:cc:dd:ee:ff`.
    Mac,
    /// Dotted quad, matchable as a prefix `10.0.0.0/8` or `addr/mask`.
    Ipv4,
    /// RFC 5952 text, prefix `fd00::/64`.
    Ipv6,
    /// A port number, `LOCAL`-style names resolved by the caller.
    Port,
    /// `+trk+new-est` flags.
    CtState,
    /// `+syn-ack` flags (or a plain integer).
    TcpFlags,
}

/// What a match on the field requires to be matched too (OVS prerequisites).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prereq {
    None,
    /// eth_type 0x0800.
    Ipv4,
    /// eth_type 0x86dd.
    Ipv6,
    /// eth_type 0x0800 or 0x86dd.
    Ip,
    /// eth_type 0x0806.
    Arp,
    /// IP with ip_proto 6, 17 or 132.
    L4,
    /// IP with ip_proto 6.
    Tcp,
    /// IPv4 with ip_proto 1, or IPv6 with ip_proto 58.
    Icmp,
    /// A VLAN tag present (vlan_tci has VLAN_PRESENT).
    Vlan,
}

macro_rules! fields {
    ($( $(#[$doc:meta])* $id:ident = $name:literal [$($alias:literal),*] word $w:expr, shift $s:expr, bits $b:expr, $kind:ident, $pre:ident, $rw:literal; )*) => {
        /// A field of the flow key.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Field { $( $(#[$doc])* $id, )* }

        impl Field {
            /// Every field, in canonical print order.
            pub const ALL: &'static [Field] = &[ $( Field::$id, )* ];

            pub const fn def(self) -> &'static FieldDef {
                match self { $( Field::$id => &FieldDef {
                    field: Field::$id, name: $name, aliases: &[$($alias),*],
                    word: $w, shift: $s, bits: $b, kind: FieldKind::$kind,
                    prereq: Prereq::$pre, writable: $rw,
                }, )* }
            }
        }
    };
}

/// Where and how one field is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldDef {
    pub field: Field,
    pub name: &'static str,
    /// Other names accepted in specs (OVS's older `dl_*`/`nw_*`/`tp_*` spellings).
    pub aliases: &'static [&'static str],
    pub word: usize,
    pub shift: u32,
    /// Width in bits; 128 spans `word` (high 64 bits) and `word + 1` (low 64 bits).
    pub bits: u32,
    pub kind: FieldKind,
    pub prereq: Prereq,
    /// Whether `set_field` may write it (everything but in_port and the derived bits).
    pub writable: bool,
}

fields! {
    InPort = "in_port" [] word W_PORT_TYPE_VLAN, shift 0, bits 32, Port, None, false;
    EthType = "eth_type" ["dl_type"] word W_PORT_TYPE_VLAN, shift 32, bits 16, Hex, None, false;
    /// The whole TCI with VLAN_PRESENT; `vlan_vid` is its low 13 bits.
    VlanTci = "vlan_tci" [] word W_PORT_TYPE_VLAN, shift 48, bits 16, Hex, None, true;
    /// VLAN id with the present bit (0x1000 | vid), as OVS's `vlan_vid`.
    VlanVid = "vlan_vid" ["dl_vlan"] word W_PORT_TYPE_VLAN, shift 48, bits 13, Int, None, true;
    VlanPcp = "vlan_pcp" ["dl_vlan_pcp"] word W_PORT_TYPE_VLAN, shift 61, bits 3, Int, Vlan, true;
    EthSrc = "eth_src" ["dl_src"] word W_ETH_SRC, shift 0, bits 48, Mac, None, true;
    IpProto = "ip_proto" ["nw_proto"] word W_ETH_SRC, shift 48, bits 8, Int, Ip, false;
    IpTtl = "ip_ttl" ["nw_ttl"] word W_ETH_SRC, shift 56, bits 8, Int, Ip, true;
    EthDst = "eth_dst" ["dl_dst"] word W_ETH_DST, shift 0, bits 48, Mac, None, true;
    IpEcn = "ip_ecn" ["nw_ecn"] word W_ETH_DST, shift 48, bits 2, Int, Ip, true;
    IpDscp = "ip_dscp" [] word W_ETH_DST, shift 50, bits 6, Int, Ip, true;
    /// 1 = a fragment, 3 = a later fragment (no L4 header), as OVS's ip_frag.
    IpFrag = "ip_frag" ["nw_frag"] word W_ETH_DST, shift 56, bits 2, Int, Ip, false;
    Ipv4Src = "ip_src" ["nw_src"] word W_NW, shift 0, bits 32, Ipv4, Ipv4, true;
    Ipv4Dst = "ip_dst" ["nw_dst"] word W_NW, shift 32, bits 32, Ipv4, Ipv4, true;
    ArpSpa = "arp_spa" [] word W_NW, shift 0, bits 32, Ipv4, Arp, true;
    ArpTpa = "arp_tpa" [] word W_NW, shift 32, bits 32, Ipv4, Arp, true;
    TpSrc = "tp_src" ["tcp_src", "udp_src", "sctp_src"] word W_TP, shift 0, bits 16, Int, L4, true;
    TpDst = "tp_dst" ["tcp_dst", "udp_dst", "sctp_dst"] word W_TP, shift 16, bits 16, Int, L4, true;
    IcmpType = "icmp_type" ["icmpv6_type"] word W_TP, shift 0, bits 8, Int, Icmp, true;
    IcmpCode = "icmp_code" ["icmpv6_code"] word W_TP, shift 16, bits 8, Int, Icmp, true;
    TcpFlags = "tcp_flags" [] word W_TP, shift 32, bits 12, TcpFlags, Tcp, false;
    ArpOp = "arp_op" [] word W_TP, shift 44, bits 16, Int, Arp, true;
    ArpSha = "arp_sha" [] word W_IPV6_SRC, shift 0, bits 48, Mac, Arp, true;
    ArpTha = "arp_tha" [] word W_IPV6_DST, shift 0, bits 48, Mac, Arp, true;
    Ipv6Src = "ipv6_src" [] word W_IPV6_SRC, shift 0, bits 128, Ipv6, Ipv6, true;
    Ipv6Dst = "ipv6_dst" [] word W_IPV6_DST, shift 0, bits 128, Ipv6, Ipv6, true;
    Ipv6Label = "ipv6_label" [] word W_IPV6_LABEL, shift 0, bits 20, Hex, Ipv6, true;
    TunId = "tun_id" ["tunnel_id"] word W_TUN_ID, shift 0, bits 64, Int, None, true;
    TunSrc = "tun_src" [] word W_TUN_NW, shift 0, bits 32, Ipv4, None, true;
    TunDst = "tun_dst" [] word W_TUN_NW, shift 32, bits 32, Ipv4, None, true;
    CtState = "ct_state" [] word W_CT, shift 0, bits 8, CtState, None, false;
    CtZone = "ct_zone" [] word W_CT, shift 8, bits 16, Int, None, false;
    CtMark = "ct_mark" [] word W_CT, shift 24, bits 32, Hex, None, true;
    CtLabel = "ct_label" [] word W_CT_LABEL, shift 0, bits 128, Hex, None, true;
    Reg0 = "reg0" [] word W_REGS, shift 0, bits 32, Int, None, true;
    Reg1 = "reg1" [] word W_REGS, shift 32, bits 32, Int, None, true;
    Reg2 = "reg2" [] word W_REGS + 1, shift 0, bits 32, Int, None, true;
    Reg3 = "reg3" [] word W_REGS + 1, shift 32, bits 32, Int, None, true;
    Reg4 = "reg4" [] word W_REGS + 2, shift 0, bits 32, Int, None, true;
    Reg5 = "reg5" [] word W_REGS + 2, shift 32, bits 32, Int, None, true;
    Reg6 = "reg6" [] word W_REGS + 3, shift 0, bits 32, Int, None, true;
    Reg7 = "reg7" [] word W_REGS + 3, shift 32, bits 32, Int, None, true;
    Metadata = "metadata" [] word W_METADATA, shift 0, bits 64, Hex, None, true;
}

impl Field {
    /// Looks a field up by its name or an alias.
    pub fn by_name(name: &str) -> Option<Field> {
        Field::ALL.iter().copied().find(|f| {
            let d = f.def();
            d.name == name || d.aliases.contains(&name)
        })
    }

    pub fn name(self) -> &'static str {
        self.def().name
    }

    /// The all-ones value of the field's width.
    pub const fn full_mask(self) -> u128 {
        let b = self.def().bits;
        if b >= 128 {
            u128::MAX
        } else {
            (1u128 << b) - 1
        }
    }

    /// Whether the field's value is written into the packet by `set_field` (as
    /// opposed to metadata that exists only in the key).
    pub fn is_packet_field(self) -> bool {
        self.def().word < PACKET_WORDS
            && !matches!(self, Field::TunId | Field::TunSrc | Field::TunDst)
    }

    /// Reads the field's value from a key.
    #[inline]
    pub fn get(self, k: &Key) -> u128 {
        let d = self.def();
        if d.bits == 128 {
            (u128::from(k.0[d.word]) << 64) | u128::from(k.0[d.word + 1])
        } else {
            (u128::from(k.0[d.word] >> d.shift)) & self.full_mask()
        }
    }

    /// Writes `value & mask` into the key under `mask` (bits outside `mask` kept).
    #[inline]
    pub fn set_masked(self, k: &mut Key, value: u128, mask: u128) {
        let d = self.def();
        let mask = mask & self.full_mask();
        let value = value & mask;
        if d.bits == 128 {
            let (mh, ml) = ((mask >> 64) as u64, mask as u64);
            let (vh, vl) = ((value >> 64) as u64, value as u64);
            k.0[d.word] = (k.0[d.word] & !mh) | vh;
            k.0[d.word + 1] = (k.0[d.word + 1] & !ml) | vl;
        } else {
            let m = (mask as u64) << d.shift;
            let v = (value as u64) << d.shift;
            k.0[d.word] = (k.0[d.word] & !m) | v;
        }
    }

    #[inline]
    pub fn set(self, k: &mut Key, value: u128) {
        self.set_masked(k, value, u128::MAX);
    }
}

/// The eth_type values prerequisites refer to.
pub mod eth_type {
    pub const IPV4: u16 = 0x0800;
    pub const ARP: u16 = 0x0806;
    pub const VLAN: u16 = 0x8100;
    pub const QINQ: u16 = 0x88a8;
    pub const IPV6: u16 = 0x86dd;
}

/// IP protocol numbers the pipeline knows.
pub mod ip_proto {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ICMPV6: u8 = 58;
    pub const SCTP: u8 = 132;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_aliases_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for f in Field::ALL {
            let d = f.def();
            assert!(seen.insert(d.name), "{}", d.name);
            for a in d.aliases {
                assert!(seen.insert(*a), "{a}");
            }
            assert_eq!(Field::by_name(d.name), Some(*f));
        }
        assert_eq!(Field::by_name("dl_src"), Some(Field::EthSrc));
        assert_eq!(Field::by_name("nope"), None);
    }

    #[test]
    fn fields_stay_inside_their_words() {
        for f in Field::ALL {
            let d = f.def();
            if d.bits == 128 {
                assert!(d.word + 1 < KEY_WORDS);
            } else {
                assert!(d.shift + d.bits <= 64, "{}", d.name);
                assert!(d.word < KEY_WORDS);
            }
        }
    }

    #[test]
    fn get_and_set_round_trip() {
        let mut k = Key::ZERO;
        Field::EthSrc.set(&mut k, 0x0200_0000_0001);
        Field::IpProto.set(&mut k, 6);
        Field::IpTtl.set(&mut k, 64);
        Field::Ipv6Dst.set(&mut k, 0xfd00_u128 << 112 | 5);
        Field::Reg3.set(&mut k, 0xdead_beef);
        assert_eq!(Field::EthSrc.get(&k), 0x0200_0000_0001);
        assert_eq!(Field::IpProto.get(&k), 6);
        assert_eq!(Field::IpTtl.get(&k), 64);
        assert_eq!(Field::Ipv6Dst.get(&k), 0xfd00_u128 << 112 | 5);
        assert_eq!(Field::Reg3.get(&k), 0xdead_beef);
        assert_eq!(Field::Reg2.get(&k), 0);
        Field::Reg3.set_masked(&mut k, 0x1, 0xff);
        assert_eq!(Field::Reg3.get(&k), 0xdead_be01);
    }
}

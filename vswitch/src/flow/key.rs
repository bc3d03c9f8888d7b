//! The flow key: every field a flow can match, packed into a fixed array of 64-bit
//! words (OVS's `struct flow` idea). A match is a key plus a mask of the same shape,
//! so matching is `key & mask == value` word by word, hashing a masked key is cheap,
//! and a classifier subtable only touches the words its mask uses.
//!
//! The words that come from the packet (and the ingress port) come first, metadata
//! the pipeline sets (conntrack, registers, recirculation) last. Fields whose
//! headers exclude each other share words: ARP addresses live where IPv4 and IPv6
//! addresses would, ICMP type/code where L4 ports would (as in OVS). Match
//! prerequisites (`eth_type`, `ip_proto`) keep those aliases apart.

/// Number of 64-bit words in a key.
pub const KEY_WORDS: usize = 21;

/// Word holding in_port (bits 0..32), eth_type (32..48), vlan_tci (48..64).
pub const W_PORT_TYPE_VLAN: usize = 0;
/// eth_src (0..48), ip_proto (48..56), ip_ttl (56..64).
pub const W_ETH_SRC: usize = 1;
/// eth_dst (0..48), ip_tos (48..56: ECN in the low 2 bits, DSCP above), ip_frag (56..64).
pub const W_ETH_DST: usize = 2;
/// IPv4 (or ARP spa/tpa) source (0..32) and destination (32..64).
pub const W_NW: usize = 3;
/// tp_src (0..16), tp_dst (16..32), tcp_flags (32..44), arp_op (44..60).
pub const W_TP: usize = 4;
/// IPv6 source (high word, low word); ARP sha shares the high word.
pub const W_IPV6_SRC: usize = 5;
/// IPv6 destination (high word, low word); ARP tha shares the high word.
pub const W_IPV6_DST: usize = 7;
/// IPv6 flow label (0..20).
pub const W_IPV6_LABEL: usize = 9;
/// Tunnel id (VNI), 64 bits.
pub const W_TUN_ID: usize = 10;
/// Tunnel outer source (0..32) and destination (32..64) IPv4 addresses.
pub const W_TUN_NW: usize = 11;
/// ct_state (0..8), ct_zone (8..24), ct_mark (24..56).
pub const W_CT: usize = 12;
/// ct_label, 128 bits over two words (high, low).
pub const W_CT_LABEL: usize = 13;
/// reg0..reg7, two per word (even register in the low half).
pub const W_REGS: usize = 15;
/// The 64-bit metadata word.
pub const W_METADATA: usize = 19;
/// recirc_id (0..32): which table a packet re-enters at after ct() or decap.
pub const W_RECIRC: usize = 20;

/// Words that come from the packet itself (and in_port / tunnel metadata): what an
/// ingress key can have non-zero before the pipeline touches it.
pub const PACKET_WORDS: usize = W_CT;

/// Conntrack state bits, as in OVS (`ct_state=+trk+new`).
pub mod ct_state {
    pub const NEW: u8 = 0x01;
    pub const EST: u8 = 0x02;
    pub const REL: u8 = 0x04;
    pub const RPL: u8 = 0x08;
    pub const INV: u8 = 0x10;
    pub const TRK: u8 = 0x20;
    pub const SNAT: u8 = 0x40;
    pub const DNAT: u8 = 0x80;
    /// Names in the order `ct_state=` prints them.
    pub const NAMES: [(&str, u8); 8] = [
        ("new", NEW),
        ("est", EST),
        ("rel", REL),
        ("rpl", RPL),
        ("inv", INV),
        ("trk", TRK),
        ("snat", SNAT),
        ("dnat", DNAT),
    ];
}

/// VLAN TCI "present" bit (OVS's CFI convention): a tagged frame has it set even
/// for VLAN 0, an untagged frame has vlan_tci 0.
pub const VLAN_PRESENT: u16 = 0x1000;

/// TCP flag bits as they appear in the header's low 12 bits.
pub mod tcp_flags {
    pub const FIN: u16 = 0x001;
    pub const SYN: u16 = 0x002;
    pub const RST: u16 = 0x004;
    pub const PSH: u16 = 0x008;
    pub const ACK: u16 = 0x010;
    pub const URG: u16 = 0x020;
    pub const ECE: u16 = 0x040;
    pub const CWR: u16 = 0x080;
    pub const NS: u16 = 0x100;
    pub const NAMES: [(&str, u16); 9] = [
        ("fin", FIN),
        ("syn", SYN),
        ("rst", RST),
        ("psh", PSH),
        ("ack", ACK),
        ("urg", URG),
        ("ece", ECE),
        ("cwr", CWR),
        ("ns", NS),
    ];
}

/// A flow key, or a mask, or a masked value: the same shape for all three.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(C, align(64))]
pub struct Key(pub [u64; KEY_WORDS]);

impl Key {
    pub const ZERO: Key = Key([0; KEY_WORDS]);
    pub const ALL_ONES: Key = Key([u64::MAX; KEY_WORDS]);

    /// `self & mask`, word by word.
    #[inline]
    pub fn masked(&self, mask: &Key) -> Key {
        let mut out = [0u64; KEY_WORDS];
        for (i, o) in out.iter_mut().enumerate() {
            *o = self.0[i] & mask.0[i];
        }
        Key(out)
    }

    /// Whether `self & mask == value` (value already masked).
    #[inline]
    pub fn matches(&self, mask: &Key, value: &Key) -> bool {
        let mut diff = 0u64;
        for i in 0..KEY_WORDS {
            diff |= (self.0[i] & mask.0[i]) ^ value.0[i];
        }
        diff == 0
    }

    /// Bitwise or (accumulating the fields a lookup consulted).
    #[inline]
    pub fn or_assign(&mut self, other: &Key) {
        for i in 0..KEY_WORDS {
            self.0[i] |= other.0[i];
        }
    }

    pub fn is_zero(&self) -> bool {
        self.0.iter().all(|&w| w == 0)
    }

    /// Indices of the non-zero words (a subtable hashes and compares only these).
    pub fn nonzero_words(&self) -> impl Iterator<Item = usize> + '_ {
        self.0
            .iter()
            .enumerate()
            .filter(|(_, w)| **w != 0)
            .map(|(i, _)| i)
    }

    // ---- typed accessors for the hot path (extraction, execution) ---------------

    #[inline]
    pub fn in_port(&self) -> u32 {
        self.0[W_PORT_TYPE_VLAN] as u32
    }
    #[inline]
    pub fn eth_type(&self) -> u16 {
        (self.0[W_PORT_TYPE_VLAN] >> 32) as u16
    }
    #[inline]
    pub fn vlan_tci(&self) -> u16 {
        (self.0[W_PORT_TYPE_VLAN] >> 48) as u16
    }
    #[inline]
    pub fn ip_proto(&self) -> u8 {
        (self.0[W_ETH_SRC] >> 48) as u8
    }
    #[inline]
    pub fn recirc_id(&self) -> u32 {
        self.0[W_RECIRC] as u32
    }
    #[inline]
    pub fn set_recirc_id(&mut self, id: u32) {
        self.0[W_RECIRC] = (self.0[W_RECIRC] & !0xffff_ffff) | u64::from(id);
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key[")?;
        let mut first = true;
        for (i, w) in self.0.iter().enumerate() {
            if *w != 0 {
                if !first {
                    f.write_str(" ")?;
                }
                write!(f, "{i}:{w:#x}")?;
                first = false;
            }
        }
        f.write_str("]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_match() {
        let mut k = Key::ZERO;
        k.0[3] = 0x0a00_0001_0a00_0002;
        let mut m = Key::ZERO;
        m.0[3] = 0xffff_ffff;
        let v = k.masked(&m);
        assert!(k.matches(&m, &v));
        let mut k2 = k;
        k2.0[3] ^= 0x1_0000_0000; // differs only in unmasked bits
        assert!(k2.matches(&m, &v));
        k2.0[3] ^= 1;
        assert!(!k2.matches(&m, &v));
        assert_eq!(m.nonzero_words().collect::<Vec<_>>(), vec![3]);
    }
}

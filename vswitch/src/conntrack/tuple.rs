//! A connection's identity in one direction: zone, protocol, addresses, ports.
//! Addresses are IPv6-sized (IPv4 in the low word) but stored as `[u32; 4]` so a
//! tuple is 40 bytes with 4-byte alignment: the table holds two per connection.

use std::hash::{BuildHasher, Hasher};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tuple {
    pub src: [u32; 4],
    pub dst: [u32; 4],
    /// For ICMP echo: the identifier (both ports carry it).
    pub sport: u16,
    pub dport: u16,
    pub zone: u16,
    pub proto: u8,
    pub v6: bool,
}

pub fn addr_words(a: u128) -> [u32; 4] {
    [
        (a >> 96) as u32,
        (a >> 64) as u32,
        (a >> 32) as u32,
        a as u32,
    ]
}

pub fn words_addr(w: [u32; 4]) -> u128 {
    (u128::from(w[0]) << 96)
        | (u128::from(w[1]) << 64)
        | (u128::from(w[2]) << 32)
        | u128::from(w[3])
}

impl Tuple {
    pub fn reversed(&self) -> Tuple {
        Tuple {
            src: self.dst,
            dst: self.src,
            sport: self.dport,
            dport: self.sport,
            ..*self
        }
    }

    pub fn src_ip(&self) -> u128 {
        words_addr(self.src)
    }

    pub fn dst_ip(&self) -> u128 {
        words_addr(self.dst)
    }

    /// The address as text (IPv4 or IPv6 as the tuple is).
    pub fn fmt_ip(&self, a: u128) -> String {
        if self.v6 {
            std::net::Ipv6Addr::from(a).to_string()
        } else {
            std::net::Ipv4Addr::from(a as u32).to_string()
        }
    }
}

impl std::hash::Hash for Tuple {
    fn hash<H: Hasher>(&self, h: &mut H) {
        // Five words, so the hasher runs five rounds (derive would run twelve).
        let w = |a: u32, b: u32| (u64::from(a) << 32) | u64::from(b);
        h.write_u64(w(self.src[0] ^ self.dst[0], self.src[1] ^ self.dst[1]));
        h.write_u64(w(self.src[2], self.src[3]));
        h.write_u64(w(self.dst[2], self.dst[3]));
        h.write_u64(
            (u64::from(self.sport) << 48)
                | (u64::from(self.dport) << 32)
                | (u64::from(self.zone) << 16)
                | (u64::from(self.proto) << 8)
                | u64::from(self.v6),
        );
    }
}

/// A fast keyed hasher (multiply-xorshift per word, seeded per table so that
/// colliding tuples cannot be precomputed by a sender).
#[derive(Clone, Copy)]
pub struct SeededState(pub u64);

pub struct SeededHasher(u64);

impl BuildHasher for SeededState {
    type Hasher = SeededHasher;
    fn build_hasher(&self) -> SeededHasher {
        SeededHasher(self.0)
    }
}

const K: u64 = 0x9e37_79b9_7f4a_7c15;

impl Hasher for SeededHasher {
    fn finish(&self) -> u64 {
        // MurmurHash3's fmix64: two multiply rounds, so that every input bit
        // reaches every output bit. One round left the low bits blind to the
        // ports (the high bits of the last word written), and the table takes
        // bucket positions from the low bits.
        let mut x = self.0;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        x ^= x >> 33;
        x
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(23) ^ v).wrapping_mul(K);
    }
}

/// A per-process random seed (no extra dependency: the std hasher is seeded).
pub fn random_seed() -> u64 {
    use std::collections::hash_map::RandomState;
    RandomState::new().hash_one(0x5eed_u64)
}

//! What to send: addresses, flows, sizes, rate. Pure data and arithmetic (no I/O):
//! the flow numbering, the IMIX pattern, the seeded random numbers and the token
//! bucket all live here so they can be tested without root.

use crate::wire::{self, FlowFields, Proto};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A header field that changes from flow to flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    SrcIp,
    SrcPort,
    DstPort,
    DstIp,
}

impl Field {
    pub fn name(self) -> &'static str {
        match self {
            Field::SrcIp => "src_ip",
            Field::SrcPort => "src_port",
            Field::DstPort => "dst_port",
            Field::DstIp => "dst_ip",
        }
    }
}

/// The classic simple IMIX: 7:4:1 of 64, 576 and 1500-byte frames.
pub const IMIX: [(u16, u32); 3] = [(64, 7), (576, 4), (1500, 1)];

/// Frame sizes (including FCS) and their weights.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SizeMix(pub Vec<(u16, u32)>);

impl SizeMix {
    pub fn fixed(size: u16) -> SizeMix {
        SizeMix(vec![(size, 1)])
    }

    pub fn imix() -> SizeMix {
        SizeMix(IMIX.to_vec())
    }

    /// "64", "imix", or "64:7,576:4,1500:1".
    pub fn label(&self) -> String {
        if *self == SizeMix::imix() {
            return "imix".into();
        }
        match self.0.as_slice() {
            [(s, _)] => s.to_string(),
            v => v
                .iter()
                .map(|(s, w)| format!("{s}:{w}"))
                .collect::<Vec<_>>()
                .join(","),
        }
    }

    /// Average frame size (with FCS), for bit rates.
    pub fn mean(&self) -> f64 {
        let w: u64 = self.0.iter().map(|&(_, w)| u64::from(w)).sum();
        if w == 0 {
            return 0.0;
        }
        self.0
            .iter()
            .map(|&(s, w)| f64::from(s) * f64::from(w))
            .sum::<f64>()
            / w as f64
    }

    /// The sizes in a seeded, shuffled order with each size as often as its weight:
    /// the generator lays its frames out in this pattern, so the mix holds over any
    /// window of a few dozen frames and is the same for the same seed.
    pub fn pattern(&self, seed: u64) -> Vec<u16> {
        let mut v: Vec<u16> = self
            .0
            .iter()
            .flat_map(|&(s, w)| std::iter::repeat_n(s, w as usize))
            .collect();
        let mut rng = SplitMix64::new(seed ^ 0x5ee0_5eed);
        rng.shuffle(&mut v);
        v
    }
}

/// Generated traffic, fully resolved (no defaults left).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrafficSpec {
    pub proto: Proto,
    pub ipv6: bool,
    pub sizes: SizeMix,
    pub flows: u32,
    /// Fields varied from flow to flow; the first varies fastest.
    pub fields: Vec<Field>,
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src_ip: IpAddr,
    pub dst_ip: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
    /// Packets per second over all generator threads; `None`: as fast as possible.
    pub rate: Option<f64>,
    /// Descriptors per ring operation.
    pub batch: u32,
    pub seed: u64,
    /// Compute UDP checksums over IPv4 (always done for IPv6 and TCP).
    pub udp_checksum: bool,
}

impl TrafficSpec {
    /// Defaults matching the "build" topology's addresses.
    pub fn new(src_mac: [u8; 6], dst_mac: [u8; 6]) -> TrafficSpec {
        TrafficSpec {
            proto: Proto::Udp,
            ipv6: false,
            sizes: SizeMix::fixed(64),
            flows: 1,
            fields: vec![Field::SrcPort],
            src_mac,
            dst_mac,
            src_ip: IpAddr::V4(Ipv4Addr::new(10, 76, 0, 10)),
            dst_ip: IpAddr::V4(Ipv4Addr::new(10, 76, 0, 20)),
            src_port: 1024,
            dst_port: 5001,
            rate: None,
            batch: 64,
            seed: 1,
            udp_checksum: true,
        }
    }

    /// The default addresses of a family.
    pub fn default_ips(ipv6: bool) -> (IpAddr, IpAddr) {
        if ipv6 {
            (
                IpAddr::V6(Ipv6Addr::new(0xfd00, 0x76, 0, 0, 0, 0, 0, 0x10)),
                IpAddr::V6(Ipv6Addr::new(0xfd00, 0x76, 0, 0, 0, 0, 0, 0x20)),
            )
        } else {
            (
                IpAddr::V4(Ipv4Addr::new(10, 76, 0, 10)),
                IpAddr::V4(Ipv4Addr::new(10, 76, 0, 20)),
            )
        }
    }

    /// How many distinct values `field` can take from its base value.
    pub fn capacity(&self, field: Field) -> u64 {
        match field {
            Field::SrcPort => 65536 - u64::from(self.src_port),
            Field::DstPort => 65536 - u64::from(self.dst_port),
            Field::SrcIp => ip_room(&self.src_ip),
            Field::DstIp => ip_room(&self.dst_ip),
        }
    }

    /// Checks that the spec can be generated; the message names the problem.
    pub fn validate(&self) -> Result<(), String> {
        if self.flows == 0 {
            return Err("flows must be at least 1".into());
        }
        if self.fields.is_empty() && self.flows > 1 {
            return Err("more than one flow needs at least one field to vary".into());
        }
        let mut seen = Vec::new();
        for f in &self.fields {
            if seen.contains(f) {
                return Err(format!("field {} listed twice", f.name()));
            }
            seen.push(*f);
        }
        let room: u64 = self
            .fields
            .iter()
            .map(|f| self.capacity(*f))
            .fold(1u64, |a, b| a.saturating_mul(b));
        if u64::from(self.flows) > room {
            return Err(format!(
                "{} flows do not fit in the fields [{}] ({} distinct values from the base addresses/ports)",
                self.flows,
                self.fields
                    .iter()
                    .map(|f| f.name())
                    .collect::<Vec<_>>()
                    .join(", "),
                room
            ));
        }
        if self.src_ip.is_ipv6() != self.ipv6 || self.dst_ip.is_ipv6() != self.ipv6 {
            return Err(format!(
                "addresses {} -> {} are not IPv{}",
                self.src_ip,
                self.dst_ip,
                if self.ipv6 { 6 } else { 4 }
            ));
        }
        let min = wire::min_size(self.ipv6, self.proto);
        if self.sizes.0.is_empty() || self.sizes.0.iter().all(|&(_, w)| w == 0) {
            return Err("no frame size".into());
        }
        for &(s, _) in &self.sizes.0 {
            let s = usize::from(s);
            if s < min || s > wire::MAX_FRAME_SIZE {
                return Err(format!(
                    "frame size {s} outside {min}..={} for {}{}",
                    wire::MAX_FRAME_SIZE,
                    if self.ipv6 { "IPv6/" } else { "IPv4/" },
                    match self.proto {
                        Proto::Udp => "UDP",
                        Proto::TcpSyn => "TCP SYN",
                    }
                ));
            }
        }
        if let Some(r) = self.rate
            && !(r.is_finite() && r > 0.0)
        {
            return Err(format!("rate {r} must be a positive number of packets/s"));
        }
        if self.batch == 0 || self.batch > 1024 {
            return Err(format!("batch {} outside 1..=1024", self.batch));
        }
        Ok(())
    }

    /// The header fields of flow `i` (0-based, `i < flows`): a mixed-radix number
    /// whose first listed field is the fastest-changing digit.
    pub fn flow(&self, i: u32) -> FlowFields {
        let mut f = FlowFields {
            src_ip: self.src_ip,
            dst_ip: self.dst_ip,
            src_port: self.src_port,
            dst_port: self.dst_port,
        };
        let mut rest = u64::from(i);
        for field in &self.fields {
            let cap = self.capacity(*field).max(1);
            let d = rest % cap;
            rest /= cap;
            match field {
                Field::SrcPort => f.src_port = self.src_port.wrapping_add(d as u16),
                Field::DstPort => f.dst_port = self.dst_port.wrapping_add(d as u16),
                Field::SrcIp => f.src_ip = ip_add(&self.src_ip, d),
                Field::DstIp => f.dst_ip = ip_add(&self.dst_ip, d),
            }
        }
        f
    }

    /// Per-thread rate when `threads` generator threads share the work.
    pub fn rate_per_thread(&self, threads: usize) -> Option<f64> {
        self.rate.map(|r| r / threads.max(1) as f64)
    }
}

/// Addresses left above `ip` in its last 32 bits (flows change the low bits).
fn ip_room(ip: &IpAddr) -> u64 {
    match ip {
        IpAddr::V4(a) => (1u64 << 32) - u64::from(u32::from(*a)),
        IpAddr::V6(a) => {
            let low = (u128::from(*a) & 0xffff_ffff) as u64;
            (1u64 << 32) - low
        }
    }
}

fn ip_add(ip: &IpAddr, d: u64) -> IpAddr {
    match ip {
        IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(*a).wrapping_add(d as u32))),
        IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(*a).wrapping_add(u128::from(d)))),
    }
}

/// Flows of thread `lane` out of `lanes`: every `lanes`-th flow, so that a flow is
/// always sent by the same thread (one queue), as RSS would keep it.
pub fn lane_flows(flows: u32, lane: usize, lanes: usize) -> Vec<u32> {
    (0..flows)
        .filter(|f| (*f as usize) % lanes.max(1) == lane)
        .collect()
}

/// A small, fast, seedable generator (SplitMix64): reproducible layouts and TCP
/// sequence numbers without a dependency.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0; slight modulo bias is irrelevant here).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
    }
}

/// A token bucket: tokens flow in at `rate` per second up to `depth`; each packet
/// takes one. The generator asks [`allow`](Self::allow) once per loop and sends at
/// most that many (in batches), so the rate holds on average and bursts never
/// exceed the depth.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    per_ns: f64,
    depth: f64,
    tokens: f64,
    last_ns: u64,
}

impl TokenBucket {
    /// `rate` packets per second, starting with one token at `now_ns`. The depth is
    /// 10 ms worth of packets, but at least four batches and at most 2048 (one TX
    /// ring): a generator thread that lost its CPU for a few milliseconds (a busy
    /// shared host) makes up for it in batch-sized bursts, so the average rate
    /// holds, and no burst is ever larger than a ring. A longer stall is forgiven
    /// rather than turned into a flood; the trial then reports the stall and that
    /// the target rate was not reached.
    pub fn new(rate: f64, batch: u32, now_ns: u64) -> TokenBucket {
        let depth = (rate * 10e-3)
            .min(2048.0)
            .max(4.0 * f64::from(batch))
            .max(1.0);
        TokenBucket {
            per_ns: rate / 1e9,
            depth,
            tokens: 1.0,
            last_ns: now_ns,
        }
    }

    /// Whole tokens available at `now_ns`.
    #[inline]
    pub fn allow(&mut self, now_ns: u64) -> u64 {
        if now_ns > self.last_ns {
            self.tokens =
                (self.tokens + (now_ns - self.last_ns) as f64 * self.per_ns).min(self.depth);
            self.last_ns = now_ns;
        }
        self.tokens.max(0.0) as u64
    }

    /// `n` packets went out.
    #[inline]
    pub fn take(&mut self, n: u64) {
        self.tokens -= n as f64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> TrafficSpec {
        TrafficSpec::new([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
    }

    #[test]
    fn flows_vary_the_first_field_fastest() {
        let mut s = spec();
        s.src_port = 65534;
        s.fields = vec![Field::SrcPort, Field::SrcIp];
        s.flows = 5;
        s.validate().expect("valid");
        let f: Vec<_> = (0..5).map(|i| s.flow(i)).collect();
        assert_eq!(f[0].src_port, 65534);
        assert_eq!(f[1].src_port, 65535);
        assert_eq!(f[2].src_port, 65534);
        assert_eq!(f[2].src_ip, "10.76.0.11".parse::<IpAddr>().expect("ip"));
        assert_eq!(f[4].src_ip, "10.76.0.12".parse::<IpAddr>().expect("ip"));
        // Every flow distinct.
        let mut t: Vec<_> = f.iter().map(|x| (x.src_ip, x.src_port)).collect();
        t.sort();
        t.dedup();
        assert_eq!(t.len(), 5);
    }

    #[test]
    fn refuses_flows_that_do_not_fit() {
        let mut s = spec();
        s.dst_port = 65530;
        s.fields = vec![Field::DstPort];
        s.flows = 7;
        let e = s.validate().expect_err("too many");
        assert!(e.contains("7 flows do not fit"), "{e}");
        s.flows = 6;
        s.validate().expect("fits");
        s.fields = vec![];
        assert!(s.validate().is_err());
        s.fields = vec![Field::DstPort, Field::DstPort];
        assert!(s.validate().expect_err("twice").contains("twice"));
    }

    #[test]
    fn ipv6_flows() {
        let mut s = spec();
        s.ipv6 = true;
        (s.src_ip, s.dst_ip) = TrafficSpec::default_ips(true);
        s.sizes = SizeMix::fixed(84);
        s.fields = vec![Field::DstIp];
        s.flows = 3;
        s.validate().expect("valid");
        assert_eq!(
            s.flow(2).dst_ip,
            "fd00:76::22".parse::<IpAddr>().expect("ip")
        );
        s.sizes = SizeMix::fixed(64);
        assert!(s.validate().expect_err("small").contains("outside 84"));
    }

    #[test]
    fn lanes_split_flows() {
        assert_eq!(lane_flows(5, 0, 2), vec![0, 2, 4]);
        assert_eq!(lane_flows(5, 1, 2), vec![1, 3]);
        assert_eq!(lane_flows(1, 1, 2), Vec::<u32>::new());
    }

    #[test]
    fn imix_pattern_is_seeded_and_weighted() {
        let m = SizeMix::imix();
        let a = m.pattern(1);
        assert_eq!(a.len(), 12);
        assert_eq!(a.iter().filter(|&&s| s == 64).count(), 7);
        assert_eq!(a.iter().filter(|&&s| s == 576).count(), 4);
        assert_eq!(a, m.pattern(1));
        assert_ne!(a, m.pattern(2));
        assert!((m.mean() - (7.0 * 64.0 + 4.0 * 576.0 + 1500.0) / 12.0).abs() < 1e-9);
        assert_eq!(m.label(), "imix");
        assert_eq!(SizeMix::fixed(128).label(), "128");
    }

    #[test]
    fn token_bucket_holds_the_rate() {
        // 50 kpps polled every 3 µs for one simulated second.
        let mut b = TokenBucket::new(50_000.0, 64, 0);
        let mut sent = 0;
        let mut now = 0u64;
        while now < 1_000_000_000 {
            let n = b.allow(now).min(64);
            b.take(n);
            sent += n;
            now += 3_000;
        }
        assert!((49_900..=50_100).contains(&sent), "{sent}");
        // A long stall does not turn into a huge burst.
        let n = b.allow(now + 1_000_000_000);
        assert!(n <= 500, "{n}");
        // At high rates a burst is at most one TX ring.
        let mut fast = TokenBucket::new(10e6, 64, 0);
        assert_eq!(fast.allow(1_000_000_000), 2048);
    }
}

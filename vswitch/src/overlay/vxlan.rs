//! VXLAN (RFC 7348) on a frame buffer: encapsulation, decapsulation, and the ICMP
//! fragmentation-needed answer for packets too big for the tunnel.
//!
//! The buffers are the pool's: packet data starts at a fixed offset (`start`,
//! [`crate::pool::HEADROOM`]) so a frame stays an index and a length. Encapsulation
//! therefore moves the inner frame [`OVERHEAD`] bytes to the right and writes the
//! outer headers in front of it; decapsulation moves it back. A move of a 1500-byte
//! frame is one `memmove` of ~1.5 KB (tens of nanoseconds, in cache: the frame was
//! just parsed); see docs/overlay.md for the measurement and the alternative (a
//! per-frame data offset) that was not taken.
//!
//! Outer format (50 bytes):
//!
//! ```text
//! Ethernet  dst = next hop MAC, src = uplink MAC (both set by the flows after encap), 0x0800
//! IPv4      ihl 5, TOS = inner TOS (ECN copied, RFC 6040), id 0, DF = inner DF,
//!           TTL 64, proto 17, src = tun_src, dst = tun_dst, header checksum
//! UDP       sport = 49152 + hash(inner flow) % 16384 (ECMP entropy), dport = port,
//!           checksum 0 (allowed for IPv4, RFC 7348 §5)
//! VXLAN     flags 0x08 (VNI valid), VNI 24 bits, reserved zero
//! ```
//!
//! Everything here is a function of bytes and parameters: no allocation, no
//! panics on any input (every access is checked).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

/// IANA port of VXLAN.
pub const DEFAULT_PORT: u16 = 4789;
/// The port flannel's vxlan backend uses (the Linux default before IANA's).
pub const FLANNEL_PORT: u16 = 8472;
/// Default VNI (flannel's too).
pub const DEFAULT_VNI: u32 = 1;
/// Outer Ethernet + IPv4 + UDP + VXLAN.
pub const OVERHEAD: usize = 14 + 20 + 8 + 8;
/// What the tunnel costs the inner IP packet: [`OVERHEAD`] (the inner Ethernet
/// header travels inside, the outer one is not part of the uplink MTU).
pub const MTU_OVERHEAD: u32 = 50;
/// TTL of the outer header.
pub const OUTER_TTL: u8 = 64;

const ETH: usize = 14;

/// The tunnel settings the workers read per packet (relaxed atomic loads: the
/// control thread changes them rarely, and a packet seeing the old or the new
/// value is equally right).
#[derive(Debug, Default)]
pub struct TunnelParams {
    port: AtomicU32,
    vni: AtomicU32,
    /// Uplink MTU: the largest outer IP packet.
    mtu: AtomicU32,
    gw_ip: AtomicU32,
    gw_mac: AtomicU64,
}

/// A copy of [`TunnelParams`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunnelConfig {
    pub port: u16,
    pub vni: u32,
    pub mtu: u32,
    /// The gateway: source of the ICMP errors the tunnel sends.
    pub gw_ip: u32,
    pub gw_mac: [u8; 6],
}

impl Default for TunnelConfig {
    fn default() -> Self {
        TunnelConfig {
            port: DEFAULT_PORT,
            vni: DEFAULT_VNI,
            mtu: 1500,
            gw_ip: 0,
            gw_mac: [0; 6],
        }
    }
}

fn mac_to_u64(m: [u8; 6]) -> u64 {
    m.iter().fold(0, |a, b| (a << 8) | u64::from(*b))
}

fn u64_to_mac(v: u64) -> [u8; 6] {
    let b = v.to_be_bytes();
    [b[2], b[3], b[4], b[5], b[6], b[7]]
}

impl TunnelParams {
    pub fn new(c: TunnelConfig) -> TunnelParams {
        let p = TunnelParams::default();
        p.set(&c);
        p
    }

    pub fn set(&self, c: &TunnelConfig) {
        self.port.store(u32::from(c.port), Relaxed);
        self.vni.store(c.vni, Relaxed);
        self.mtu.store(c.mtu, Relaxed);
        self.gw_ip.store(c.gw_ip, Relaxed);
        self.gw_mac.store(mac_to_u64(c.gw_mac), Relaxed);
    }

    #[inline]
    pub fn get(&self) -> TunnelConfig {
        TunnelConfig {
            port: self.port.load(Relaxed) as u16,
            vni: self.vni.load(Relaxed),
            mtu: self.mtu.load(Relaxed),
            gw_ip: self.gw_ip.load(Relaxed),
            gw_mac: u64_to_mac(self.gw_mac.load(Relaxed)),
        }
    }
}

/// Why a frame could not be encapsulated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncapError {
    /// The outer packet would exceed the MTU; `df`: the inner IPv4 packet forbids
    /// fragmentation (the sender should get ICMP fragmentation-needed).
    TooBig { df: bool },
    /// The buffer has no room for the outer headers (or the frame is malformed).
    NoRoom,
}

/// Outer parameters of one encapsulation.
#[derive(Debug, Clone, Copy)]
pub struct Encap {
    pub vni: u32,
    pub src: u32,
    pub dst: u32,
    pub port: u16,
    /// UDP source port (see [`source_port`]).
    pub sport: u16,
    /// Largest outer IP packet.
    pub mtu: u32,
}

/// UDP source port from a hash of the inner flow: the range 49152..65535 that
/// RFC 7348 recommends, so ECMP in the underlay spreads flows, and one flow keeps
/// one path.
#[inline]
pub fn source_port(hash: u64) -> u16 {
    // Fold the 64-bit hash so every input bit matters.
    let h = hash ^ (hash >> 32);
    let h = h ^ (h >> 16);
    49152 | (h as u16 & 0x3fff)
}

/// TOS and DF of the inner IPv4 packet at `start` (zero for non-IPv4 inner).
#[inline]
fn inner_tos_df(buf: &[u8], start: usize) -> (u8, bool) {
    let et = buf.get(start + 12..start + 14);
    if et != Some(&[0x08, 0x00][..]) {
        return (0, false);
    }
    let tos = buf.get(start + ETH + 1).copied().unwrap_or(0);
    let df = buf.get(start + ETH + 6).is_some_and(|b| b & 0x40 != 0);
    (tos, df)
}

/// Encapsulates the frame of `len` bytes at `buf[start..]` in place: the result
/// starts at `start` too. The outer MACs are left zero for the flows to set.
/// Returns the new length.
pub fn encap(buf: &mut [u8], start: usize, len: usize, e: &Encap) -> Result<usize, EncapError> {
    if len < ETH || start.checked_add(len).is_none_or(|end| end > buf.len()) {
        return Err(EncapError::NoRoom);
    }
    let (tos, df) = inner_tos_df(buf, start);
    let ip_len = len + 20 + 8 + 8;
    if ip_len as u64 > u64::from(e.mtu) {
        return Err(EncapError::TooBig { df });
    }
    let new_len = len + OVERHEAD;
    if start + new_len > buf.len() {
        return Err(EncapError::NoRoom);
    }
    buf.copy_within(start..start + len, start + OVERHEAD);
    let h = &mut buf[start..start + OVERHEAD];
    h[0..12].fill(0);
    h[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip = &mut h[ETH..ETH + 20];
    ip[0] = 0x45;
    ip[1] = tos;
    ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
    ip[4..6].fill(0);
    ip[6..8].copy_from_slice(&(if df { 0x4000u16 } else { 0 }).to_be_bytes());
    ip[8] = OUTER_TTL;
    ip[9] = 17;
    ip[10..12].fill(0);
    ip[12..16].copy_from_slice(&e.src.to_be_bytes());
    ip[16..20].copy_from_slice(&e.dst.to_be_bytes());
    let c = checksum(ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let udp = &mut h[ETH + 20..ETH + 28];
    udp[0..2].copy_from_slice(&e.sport.to_be_bytes());
    udp[2..4].copy_from_slice(&e.port.to_be_bytes());
    udp[4..6].copy_from_slice(&((len + 16) as u16).to_be_bytes());
    udp[6..8].fill(0);
    let vx = &mut h[ETH + 28..ETH + 36];
    vx.copy_from_slice(&[0x08, 0, 0, 0, 0, 0, 0, 0]);
    vx[4..7].copy_from_slice(&e.vni.to_be_bytes()[1..4]);
    Ok(new_len)
}

/// What decapsulation found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decapped {
    pub vni: u32,
    /// Outer source and destination IPv4 addresses.
    pub src: u32,
    pub dst: u32,
    /// Length of the inner frame, now at `start`.
    pub len: usize,
}

/// Why a frame is not VXLAN for us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecapError {
    /// Not untagged Ethernet/IPv4/UDP to `port`, fragmented, or cut short.
    NotVxlan,
    /// VXLAN with the I flag clear or another VNI.
    WrongVni,
}

/// Checks that the frame at `buf[start..start + len]` is VXLAN to UDP `port` with
/// `vni` and strips the outer headers in place (the inner frame then starts at
/// `start`).
pub fn decap(
    buf: &mut [u8],
    start: usize,
    len: usize,
    port: u16,
    vni: u32,
) -> Result<Decapped, DecapError> {
    let end = start.checked_add(len).ok_or(DecapError::NotVxlan)?;
    let f = buf.get(start..end).ok_or(DecapError::NotVxlan)?;
    if f.len() < ETH + 20 || f[12..14] != [0x08, 0x00] || f[ETH] >> 4 != 4 {
        return Err(DecapError::NotVxlan);
    }
    let ihl = usize::from(f[ETH] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([f[ETH + 2], f[ETH + 3]]));
    let frag = u16::from_be_bytes([f[ETH + 6], f[ETH + 7]]) & 0x3fff;
    if ihl < 20 || f[ETH + 9] != 17 || frag != 0 || total < ihl + 16 || ETH + total > f.len() {
        return Err(DecapError::NotVxlan);
    }
    let udp = ETH + ihl;
    if u16::from_be_bytes([f[udp + 2], f[udp + 3]]) != port {
        return Err(DecapError::NotVxlan);
    }
    let vx = udp + 8;
    let got = u32::from_be_bytes([0, f[vx + 4], f[vx + 5], f[vx + 6]]);
    if f[vx] & 0x08 == 0 || got != vni {
        return Err(DecapError::WrongVni);
    }
    let inner = vx + 8;
    let inner_len = ETH + total - inner;
    if inner_len < ETH {
        return Err(DecapError::NotVxlan);
    }
    let src = u32::from_be_bytes([f[ETH + 12], f[ETH + 13], f[ETH + 14], f[ETH + 15]]);
    let dst = u32::from_be_bytes([f[ETH + 16], f[ETH + 17], f[ETH + 18], f[ETH + 19]]);
    buf.copy_within(start + inner..start + inner + inner_len, start);
    Ok(Decapped {
        vni: got,
        src,
        dst,
        len: inner_len,
    })
}

/// Turns the IPv4 frame at `buf[start..start + len]` (untagged) into an ICMP
/// destination-unreachable / fragmentation-needed (type 3 code 4, RFC 1191) from
/// the gateway `gw_ip`/`gw_mac` to the packet's sender at `dst_mac`, quoting the
/// IP header and the first 8 payload bytes. `None` when no error may be sent
/// (not IPv4, a non-first fragment, an ICMP error itself, a broadcast source).
pub fn frag_needed(
    buf: &mut [u8],
    start: usize,
    len: usize,
    gw_mac: [u8; 6],
    gw_ip: u32,
    dst_mac: [u8; 6],
    next_hop_mtu: u16,
) -> Option<usize> {
    let f = buf.get(start..start.checked_add(len)?)?;
    if f.len() < ETH + 20 || f[12..14] != [0x08, 0x00] || f[ETH] >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(f[ETH] & 0x0f) * 4;
    if ihl < 20 || f.len() < ETH + ihl {
        return None;
    }
    if u16::from_be_bytes([f[ETH + 6], f[ETH + 7]]) & 0x1fff != 0 {
        return None;
    }
    let proto = f[ETH + 9];
    if proto == 1
        && f.get(ETH + ihl)
            .is_none_or(|t| ![0u8, 8, 13, 15].contains(t))
    {
        return None; // never answer an ICMP error with one
    }
    let mut sender = [0u8; 4];
    sender.copy_from_slice(&f[ETH + 12..ETH + 16]);
    if sender == [0; 4] || sender[0] >= 224 || dst_mac[0] & 1 != 0 {
        return None;
    }
    let quote = (ihl + 8).min(len - ETH);
    let new_len = ETH + 20 + 8 + quote;
    if start + new_len > buf.len() {
        return None;
    }
    buf.copy_within(start + ETH..start + ETH + quote, start + ETH + 28);
    let h = &mut buf[start..start + ETH + 28];
    h[0..6].copy_from_slice(&dst_mac);
    h[6..12].copy_from_slice(&gw_mac);
    h[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip = &mut h[ETH..ETH + 20];
    ip[0] = 0x45;
    ip[1] = 0xc0; // internetwork control
    ip[2..4].copy_from_slice(&((20 + 8 + quote) as u16).to_be_bytes());
    ip[4..8].fill(0);
    ip[8] = 64;
    ip[9] = 1;
    ip[10..12].fill(0);
    ip[12..16].copy_from_slice(&gw_ip.to_be_bytes());
    ip[16..20].copy_from_slice(&sender);
    let c = checksum(ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let icmp = &mut buf[start + ETH + 20..start + new_len];
    icmp[0] = 3;
    icmp[1] = 4;
    icmp[2..6].fill(0);
    icmp[6..8].copy_from_slice(&next_hop_mtu.to_be_bytes());
    let c = checksum(icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    Some(new_len)
}

/// Internet checksum of `b` (whose checksum field must be zero).
fn checksum(b: &[u8]) -> u16 {
    let mut sum = 0u32;
    let mut it = b.chunks_exact(2);
    for c in &mut it {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = it.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};

    const START: usize = 256;

    fn inner_udp(payload: usize, df: bool) -> Vec<u8> {
        let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 1, 0, 2], [10, 2, 0, 3], 63)
            .udp(1234, 5678);
        let mut out = Vec::new();
        b.write(&mut out, &vec![0xab; payload]).expect("build");
        if df {
            out[ETH + 6] |= 0x40;
        } else {
            out[ETH + 6] &= !0x40;
        }
        out[ETH + 10..ETH + 12].fill(0);
        let c = checksum(&out[ETH..ETH + 20]);
        out[ETH + 10..ETH + 12].copy_from_slice(&c.to_be_bytes());
        out
    }

    fn buffer(frame: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; 2048];
        buf[START..START + frame.len()].copy_from_slice(frame);
        buf
    }

    fn params(mtu: u32) -> Encap {
        Encap {
            vni: 0x123456,
            src: u32::from_be_bytes([192, 0, 2, 1]),
            dst: u32::from_be_bytes([192, 0, 2, 2]),
            port: DEFAULT_PORT,
            sport: source_port(0xdead_beef),
            mtu,
        }
    }

    #[test]
    fn encap_writes_rfc7348_headers_that_etherparse_reads() {
        let inner = inner_udp(100, true);
        let mut buf = buffer(&inner);
        let n = encap(&mut buf, START, inner.len(), &params(1500)).expect("encap");
        assert_eq!(n, inner.len() + OVERHEAD);
        let outer = buf[START..START + n].to_vec();
        let p = SlicedPacket::from_ethernet(&outer).expect("outer parses");
        let Some(NetSlice::Ipv4(ip)) = &p.net else {
            panic!("outer IPv4")
        };
        let h = ip.header();
        assert_eq!(h.source(), [192, 0, 2, 1]);
        assert_eq!(h.destination(), [192, 0, 2, 2]);
        assert_eq!(h.ttl(), OUTER_TTL);
        assert!(h.dont_fragment(), "DF follows the inner packet");
        assert_eq!(h.total_len() as usize, n - ETH);
        assert_eq!(
            h.header_checksum(),
            h.to_header().calc_header_checksum(),
            "outer IP checksum"
        );
        let Some(TransportSlice::Udp(u)) = &p.transport else {
            panic!("outer UDP")
        };
        assert_eq!(u.destination_port(), DEFAULT_PORT);
        assert!(u.source_port() >= 49152);
        assert_eq!(u.length() as usize, n - ETH - 20);
        let vx = u.payload();
        assert_eq!(vx[0], 0x08);
        assert_eq!(&vx[4..7], &[0x12, 0x34, 0x56]);
        assert_eq!(&vx[8..], &inner[..], "inner frame intact");
        // And back.
        let d = decap(&mut buf, START, n, DEFAULT_PORT, 0x123456).expect("decap");
        assert_eq!(d.len, inner.len());
        assert_eq!(d.src, u32::from_be_bytes([192, 0, 2, 1]));
        assert_eq!(&buf[START..START + d.len], &inner[..]);
    }

    #[test]
    fn encap_refuses_too_big_and_reports_df() {
        let inner = inner_udp(1472, true);
        let mut buf = buffer(&inner);
        assert_eq!(
            encap(&mut buf, START, inner.len(), &params(1500)),
            Err(EncapError::TooBig { df: true })
        );
        let inner = inner_udp(1422, false);
        let mut buf = buffer(&inner);
        assert!(encap(&mut buf, START, inner.len(), &params(1500)).is_ok());
        let inner = inner_udp(1423, false);
        let mut buf = buffer(&inner);
        assert_eq!(
            encap(&mut buf, START, inner.len(), &params(1500)),
            Err(EncapError::TooBig { df: false })
        );
        // No room at the end of the buffer.
        let mut small = buffer(&inner_udp(10, false));
        small.truncate(START + 60);
        assert_eq!(
            encap(&mut small, START, 52, &params(9000)),
            Err(EncapError::NoRoom)
        );
    }

    #[test]
    fn decap_rejects_other_ports_vnis_fragments_and_garbage() {
        let inner = inner_udp(64, false);
        let mut buf = buffer(&inner);
        let n = encap(&mut buf, START, inner.len(), &params(1500)).expect("encap");
        let pristine = buf.clone();
        assert_eq!(
            decap(&mut buf.clone(), START, n, FLANNEL_PORT, 0x123456),
            Err(DecapError::NotVxlan)
        );
        assert_eq!(
            decap(&mut buf.clone(), START, n, DEFAULT_PORT, 1),
            Err(DecapError::WrongVni)
        );
        // More fragments set.
        buf[START + ETH + 6] |= 0x20;
        assert_eq!(
            decap(&mut buf, START, n, DEFAULT_PORT, 0x123456),
            Err(DecapError::NotVxlan)
        );
        // Every truncation and every single-byte corruption: no panic.
        for cut in 0..n {
            let mut b = pristine.clone();
            let _ = decap(&mut b, START, cut, DEFAULT_PORT, 0x123456);
        }
        for i in 0..n {
            let mut b = pristine.clone();
            b[START + i] ^= 0xff;
            let _ = decap(&mut b, START, n, DEFAULT_PORT, 0x123456);
        }
        assert!(decap(&mut [0u8; 10], 5, 100, DEFAULT_PORT, 1).is_err());
    }

    #[test]
    fn frag_needed_quotes_the_packet_and_checks_out() {
        let inner = inner_udp(1472, true);
        let mut buf = buffer(&inner);
        let gw = [0x0a, 0x58, 10, 1, 0, 1];
        let pod = [0x0a, 0x58, 10, 1, 0, 2];
        let n = frag_needed(
            &mut buf,
            START,
            inner.len(),
            gw,
            u32::from_be_bytes([10, 1, 0, 1]),
            pod,
            1450,
        )
        .expect("answered");
        assert_eq!(n, ETH + 20 + 8 + 28);
        let answer = buf[START..START + n].to_vec();
        let p = SlicedPacket::from_ethernet(&answer).expect("parses");
        let Some(NetSlice::Ipv4(ip)) = &p.net else {
            panic!("IPv4")
        };
        assert_eq!(ip.header().source(), [10, 1, 0, 1]);
        assert_eq!(ip.header().destination(), [10, 1, 0, 2]);
        assert_eq!(
            ip.header().header_checksum(),
            ip.header().to_header().calc_header_checksum()
        );
        let Some(TransportSlice::Icmpv4(icmp)) = &p.transport else {
            panic!("ICMP")
        };
        match icmp.icmp_type() {
            etherparse::Icmpv4Type::DestinationUnreachable(
                etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu },
            ) => assert_eq!(next_hop_mtu, 1450),
            t => panic!("type {t:?}"),
        }
        let mut all = icmp.slice().to_vec();
        all[2..4].fill(0);
        assert_eq!(checksum(&all), icmp.checksum(), "ICMP checksum");
        assert_eq!(&buf[START + 42..START + 42 + 28], &inner[ETH..ETH + 28]);
        // An ICMP error is not answered; neither is garbage.
        let mut again = buf.clone();
        assert!(frag_needed(&mut again, START, n, gw, 1, pod, 1450).is_none());
        assert!(frag_needed(&mut [0u8; 40], 0, 40, gw, 1, pod, 1450).is_none());
    }

    #[test]
    fn params_round_trip_and_source_ports_spread() {
        let c = TunnelConfig {
            port: FLANNEL_PORT,
            vni: 7,
            mtu: 9000,
            gw_ip: 0x0a000001,
            gw_mac: [0x0a, 0x58, 10, 0, 0, 1],
        };
        assert_eq!(TunnelParams::new(c).get(), c);
        let ports: std::collections::HashSet<u16> = (0..1000u64)
            .map(|i| source_port(i.wrapping_mul(0x9e37_79b9_7f4a_7c15)))
            .collect();
        assert!(ports.len() > 900, "{}", ports.len());
        assert!(ports.iter().all(|p| *p >= 49152));
    }
}

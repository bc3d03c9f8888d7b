//! The switch's own packet handlers, reached by the `punt:` action: an ARP
//! responder and an ICMP echo responder (the gateway answers for itself). Each
//! rewrites the request into its reply in place and sends it back out of the
//! ingress port. Rate limited per worker by a token bucket so a flood of requests
//! costs bounded CPU.

use crate::flow::spec::Punt;

/// Replies per second a worker sends, and the burst it allows.
pub const PUNT_RATE: u64 = 10_000;
pub const PUNT_BURST: u64 = 1_000;

/// Token bucket in nanoseconds of credit.
pub struct PuntLimiter {
    tokens: u64,
    last_ns: u64,
}

impl Default for PuntLimiter {
    fn default() -> Self {
        PuntLimiter {
            tokens: PUNT_BURST,
            last_ns: 0,
        }
    }
}

impl PuntLimiter {
    /// Takes one token if there is one.
    pub fn allow(&mut self, now_ns: u64) -> bool {
        let elapsed = now_ns.saturating_sub(self.last_ns);
        let refill = elapsed.saturating_mul(PUNT_RATE) / 1_000_000_000;
        if refill > 0 {
            self.tokens = (self.tokens + refill).min(PUNT_BURST);
            self.last_ns = now_ns;
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

/// Turns the request in `frame` into its reply. `None` when the frame is not a
/// request this handler answers (it is then dropped and counted).
pub fn answer(p: &Punt, frame: &mut [u8]) -> Option<()> {
    match p {
        Punt::ArpResponder { mac } => arp_reply(frame, *mac),
        Punt::IcmpEchoReply => icmp_echo_reply(frame),
        // Answered by `worker::reject` (the answer may be longer than the request).
        Punt::Reject => None,
    }
}

/// Offset of the L3 header after an optional 802.1Q tag, with its EtherType.
fn l3(frame: &[u8]) -> Option<(usize, u16)> {
    let et = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    if et == 0x8100 || et == 0x88a8 {
        let inner = u16::from_be_bytes([*frame.get(16)?, *frame.get(17)?]);
        return Some((18, inner));
    }
    Some((14, et))
}

fn arp_reply(frame: &mut [u8], mac: [u8; 6]) -> Option<()> {
    let (o, et) = l3(frame)?;
    if et != 0x0806 {
        return None;
    }
    let arp = frame.get_mut(o..o + 28)?;
    // Ethernet/IPv4 request only.
    if arp[0..8] != [0, 1, 8, 0, 6, 4, 0, 1] {
        return None;
    }
    let mut sha = [0u8; 6];
    sha.copy_from_slice(&arp[8..14]);
    let mut spa = [0u8; 4];
    spa.copy_from_slice(&arp[14..18]);
    let mut tpa = [0u8; 4];
    tpa.copy_from_slice(&arp[24..28]);
    arp[7] = 2; // reply
    arp[8..14].copy_from_slice(&mac);
    arp[14..18].copy_from_slice(&tpa);
    arp[18..24].copy_from_slice(&sha);
    arp[24..28].copy_from_slice(&spa);
    frame[0..6].copy_from_slice(&sha);
    frame[6..12].copy_from_slice(&mac);
    Some(())
}

fn icmp_echo_reply(frame: &mut [u8]) -> Option<()> {
    let (o, et) = l3(frame)?;
    if et != 0x0800 {
        return None;
    }
    let ihl = usize::from(*frame.get(o)? & 0x0f) * 4;
    if ihl < 20 || *frame.get(o + 9)? != 1 {
        return None;
    }
    let icmp = o + ihl;
    if *frame.get(icmp)? != 8 || frame.len() < icmp + 8 {
        return None;
    }
    // Swap MACs and IP addresses; the IP checksum is unchanged by a swap.
    let (dst, src) = frame.split_at_mut(6);
    dst[..6].swap_with_slice(&mut src[..6]);
    let (a, b) = frame[o + 12..o + 20].split_at_mut(4);
    a.swap_with_slice(b);
    frame[o + 8] = 64; // fresh TTL: adjust the header checksum
    let csum = ipv4_checksum(&frame[o..o + ihl]);
    frame[o + 10..o + 12].copy_from_slice(&csum.to_be_bytes());
    // Type 8 -> 0: the checksum goes up by 0x0800 (RFC 1624, one's complement).
    frame[icmp] = 0;
    let old = u16::from_be_bytes([frame[icmp + 2], frame[icmp + 3]]);
    let sum = u32::from(old) + 0x0800;
    let new = ((sum & 0xffff) + (sum >> 16)) as u16;
    frame[icmp + 2..icmp + 4].copy_from_slice(&new.to_be_bytes());
    Some(())
}

fn ipv4_checksum(hdr: &[u8]) -> u16 {
    let mut sum = 0u32;
    for (i, c) in hdr.chunks(2).enumerate() {
        if i == 5 {
            continue; // the checksum field itself
        }
        let w = u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]);
        sum += u32::from(w);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arp_request_becomes_reply() {
        let mut f = vec![0xffu8; 6];
        f.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x06]);
        f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 1, 10, 0, 0, 1]);
        f.extend_from_slice(&[0, 0, 0, 0, 0, 0, 10, 0, 0, 254]);
        let gw = [0xaa, 0, 0, 0, 0, 0xfe];
        answer(&Punt::ArpResponder { mac: gw }, &mut f).expect("answered");
        assert_eq!(&f[0..6], &[2, 0, 0, 0, 0, 1]);
        assert_eq!(&f[6..12], &gw);
        assert_eq!(f[21], 2);
        assert_eq!(&f[22..28], &gw);
        assert_eq!(&f[28..32], &[10, 0, 0, 254]);
        assert_eq!(&f[38..42], &[10, 0, 0, 1]);
        // A reply is not answered.
        assert!(answer(&Punt::ArpResponder { mac: gw }, &mut f).is_none());
    }

    #[test]
    fn limiter_allows_burst_then_rate() {
        let mut l = PuntLimiter::default();
        let n = (0..2 * PUNT_BURST).filter(|_| l.allow(1)).count() as u64;
        assert_eq!(n, PUNT_BURST);
        assert!(l.allow(1 + 1_000_000_000 / PUNT_RATE + 1));
    }
}

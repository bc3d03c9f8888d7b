//! Outer next-hop resolution: the switch learns the MAC of each remote node (or of
//! the underlay router in front of it) from the **host's neighbour table**.
//!
//! The uplink is shared with the host, so the host's kernel already runs ARP on
//! it: it answers requests for the node IP and keeps entries for the peers it
//! talks to. The control thread reads that table (`/proc/net/arp` of the switch's
//! network namespace) once a second for the uplink; a next hop without a complete
//! entry is solicited by sending one UDP datagram to its discard port (9) through
//! the uplink, which makes the kernel resolve it. What was learnt is kept in a
//! [`NeighCache`] whose entries expire ([`DEFAULT_TTL`]) unless the host table
//! confirms them again, so a peer that moved (new MAC) or vanished is noticed. A
//! change of a node's next-hop MAC re-installs that node's flows (the MAC is an
//! action of its flows: no per-packet lookup, no shared table in the workers).
//!
//! Nothing here runs per packet.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// How long an entry lives without being confirmed by the host table.
pub const DEFAULT_TTL: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    mac: [u8; 6],
    expires: Instant,
}

/// IPv4 next hop → MAC, with expiry.
#[derive(Debug)]
pub struct NeighCache {
    ttl: Duration,
    entries: HashMap<Ipv4Addr, Entry>,
}

impl Default for NeighCache {
    fn default() -> Self {
        NeighCache::new(DEFAULT_TTL)
    }
}

impl NeighCache {
    pub fn new(ttl: Duration) -> NeighCache {
        NeighCache {
            ttl,
            entries: HashMap::new(),
        }
    }

    /// Records (or confirms) `ip` at `mac`; true when the MAC is new or changed.
    pub fn confirm(&mut self, ip: Ipv4Addr, mac: [u8; 6], now: Instant) -> bool {
        let e = Entry {
            mac,
            expires: now + self.ttl,
        };
        match self.entries.insert(ip, e) {
            Some(old) => old.mac != mac,
            None => true,
        }
    }

    /// The MAC of `ip` unless it expired.
    pub fn lookup(&self, ip: Ipv4Addr, now: Instant) -> Option<[u8; 6]> {
        self.entries
            .get(&ip)
            .filter(|e| e.expires > now)
            .map(|e| e.mac)
    }

    /// Removes expired entries and returns their addresses.
    pub fn expire(&mut self, now: Instant) -> Vec<Ipv4Addr> {
        let gone: Vec<Ipv4Addr> = self
            .entries
            .iter()
            .filter(|(_, e)| e.expires <= now)
            .map(|(ip, _)| *ip)
            .collect();
        for ip in &gone {
            self.entries.remove(ip);
        }
        gone
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Complete entries of `dev` in the text of `/proc/net/arp`:
/// `IP address  HW type  Flags  HW address  Mask  Device`.
pub fn parse_proc_arp(text: &str, dev: &str) -> Vec<(Ipv4Addr, [u8; 6])> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let [ip, _hw, flags, mac, _mask, d] = f.as_slice() else {
                return None;
            };
            let flags = u32::from_str_radix(flags.trim_start_matches("0x"), 16).ok()?;
            // ATF_COM: the entry is complete.
            if *d != dev || flags & 0x2 == 0 {
                return None;
            }
            let ip: Ipv4Addr = ip.parse().ok()?;
            let mac = mac.parse::<crate::wire::mac::MacAddr>().ok()?.0;
            (mac != [0; 6]).then_some((ip, mac))
        })
        .collect()
}

/// The host's complete neighbour entries on `dev`.
pub fn host_neighbours(dev: &str) -> Vec<(Ipv4Addr, [u8; 6])> {
    std::fs::read_to_string("/proc/net/arp")
        .map(|t| parse_proc_arp(&t, dev))
        .unwrap_or_default()
}

/// Makes the host's kernel resolve `ip` on `dev`: one empty UDP datagram to the
/// discard port, sent through `dev`.
pub fn solicit(ip: Ipv4Addr, dev: &str) -> std::io::Result<()> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0")?;
    let name = std::ffi::CString::new(dev).map_err(std::io::Error::other)?;
    let bytes = name.as_bytes_with_nul();
    // SAFETY: a valid socket and a NUL-terminated name of the given length.
    let rc = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&s),
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            bytes.as_ptr().cast(),
            bytes.len() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    s.send_to(&[], (ip, 9)).map(|_| ())
}

/// The next hop for `dst` as the host routes it (`ip route get`): the gateway
/// when there is one, else `dst` itself (on-link).
pub fn next_hop(dst: Ipv4Addr) -> Ipv4Addr {
    let out = std::process::Command::new("ip")
        .args(["-o", "route", "get", &dst.to_string()])
        .output();
    match out {
        Ok(o) if o.status.success() => parse_route_get(&String::from_utf8_lossy(&o.stdout), dst),
        _ => dst,
    }
}

fn parse_route_get(text: &str, dst: Ipv4Addr) -> Ipv4Addr {
    let mut words = text.split_whitespace();
    while let Some(w) = words.next() {
        if w == "via"
            && let Some(gw) = words.next().and_then(|g| g.parse().ok())
        {
            return gw;
        }
    }
    dst
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_unless_confirmed() {
        let t0 = Instant::now();
        let mut c = NeighCache::new(Duration::from_secs(10));
        let ip = Ipv4Addr::new(192, 0, 2, 2);
        let mac = [2, 0, 0, 0, 0, 2];
        assert!(c.confirm(ip, mac, t0));
        assert!(!c.confirm(ip, mac, t0), "same MAC is no change");
        assert_eq!(c.lookup(ip, t0 + Duration::from_secs(9)), Some(mac));
        assert_eq!(c.lookup(ip, t0 + Duration::from_secs(10)), None);
        // Confirmed at 8 s: lives until 18 s.
        assert!(!c.confirm(ip, mac, t0 + Duration::from_secs(8)));
        assert!(c.expire(t0 + Duration::from_secs(17)).is_empty());
        assert_eq!(c.expire(t0 + Duration::from_secs(18)), vec![ip]);
        assert!(c.is_empty());
        assert!(c.confirm(ip, [2, 0, 0, 0, 0, 3], t0));
        assert!(c.confirm(ip, mac, t0), "a moved peer is a change");
    }

    #[test]
    fn proc_arp_is_parsed_per_device_complete_only() {
        let text = "IP address       HW type     Flags       HW address            Mask     Device\n\
                    192.0.2.2        0x1         0x2         02:00:00:00:00:02     *        up0\n\
                    192.0.2.3        0x1         0x0         00:00:00:00:00:00     *        up0\n\
                    192.0.2.4        0x1         0x2         02:00:00:00:00:04     *        eth9\n\
                    garbage line\n";
        assert_eq!(
            parse_proc_arp(text, "up0"),
            vec![(Ipv4Addr::new(192, 0, 2, 2), [2, 0, 0, 0, 0, 2])]
        );
    }

    #[test]
    fn route_get_gateway_or_onlink() {
        let d = Ipv4Addr::new(198, 51, 100, 7);
        assert_eq!(
            parse_route_get(
                "198.51.100.7 via 192.0.2.254 dev up0 src 192.0.2.1 uid 0",
                d
            ),
            Ipv4Addr::new(192, 0, 2, 254)
        );
        assert_eq!(parse_route_get("198.51.100.7 dev up0 src 192.0.2.1", d), d);
    }
}

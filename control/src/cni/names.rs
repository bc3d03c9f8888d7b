//! Names and addresses derived from an attachment `(container id, ifname)`.
//!
//! The host end of a pod's veth is named from a hash of the attachment, so DEL,
//! CHECK and GC find it again without any state of their own, a retried ADD reuses
//! the name, and two attachments never collide in practice (48 bits). The hash is
//! SHA-256: it must stay the same across plugin versions (a node upgraded between
//! ADD and DEL), which `std`'s hasher does not promise.
//!
//! The host end also carries an alias (`ip link` shows it) naming the network and
//! the attachment: GC needs to know which attachment a leftover veth belonged to,
//! and a hash cannot be read backwards.

use sha2::{Digest, Sha256};

/// Every host interface this plugin creates starts with this.
pub const HOST_PREFIX: &str = "vsw";

/// Start of the alias of every host interface this plugin creates.
pub const ALIAS_TAG: &str = "vswitch-cni";

fn digest(container_id: &str, ifname: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    // The separator cannot occur in either part (ifname forbids ':', container ids
    // are alphanumerics, '_', '.', '-'), so distinct pairs hash distinct inputs.
    h.update(container_id.as_bytes());
    h.update(b":");
    h.update(ifname.as_bytes());
    h.finalize().into()
}

/// `vsw` + 12 hex digits: 15 bytes, the most an interface name may have.
pub fn host_ifname(container_id: &str, ifname: &str) -> String {
    let d = digest(container_id, ifname);
    let mut s = String::with_capacity(15);
    s.push_str(HOST_PREFIX);
    for b in &d[..6] {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// A MAC for the pod interface: locally administered, unicast, stable for the
/// attachment (a retried ADD gives the pod the same address, so neighbours' ARP
/// caches stay right). Bytes taken from the digest after those used for the name.
pub fn pod_mac(container_id: &str, ifname: &str) -> [u8; 6] {
    let d = digest(container_id, ifname);
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&d[6..12]);
    // Bit 1 of the first byte: locally administered; bit 0 clear: unicast.
    mac[0] = (mac[0] & 0xfc) | 0x02;
    mac
}

/// `aa:bb:cc:dd:ee:ff`.
/// The MAC of a pod with IPv4 address `ip`: `0a:58:` + the address bytes (locally
/// administered, unicast; the scheme OVN-Kubernetes uses, and the gateway's too).
pub fn ip_mac(ip: std::net::Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x0a, 0x58, o[0], o[1], o[2], o[3]]
}

pub fn format_mac(mac: &[u8]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses `aa:bb:cc:dd:ee:ff` (either case) into a unicast MAC.
pub fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        let p = parts
            .next()
            .filter(|p| p.len() == 2)
            .ok_or_else(|| format!("MAC {s:?} is not six hex bytes separated by ':'"))?;
        *b = u8::from_str_radix(p, 16)
            .map_err(|_| format!("MAC {s:?} is not six hex bytes separated by ':'"))?;
    }
    if parts.next().is_some() {
        return Err(format!("MAC {s:?} has more than six bytes"));
    }
    if mac[0] & 1 == 1 {
        return Err(format!("MAC {s:?} is a multicast address"));
    }
    if mac == [0; 6] {
        return Err(format!("MAC {s:?} is all zeros"));
    }
    Ok(mac)
}

/// Who a host interface belongs to, as written in its alias.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub network: String,
    pub container_id: String,
    pub ifname: String,
}

impl Owner {
    /// `vswitch-cni NETWORK CONTAINERID IFNAME`. None of the three can contain a
    /// space (the spec restricts network names and container ids; interface names
    /// have no white space), so the alias splits back unambiguously.
    pub fn alias(&self) -> String {
        format!(
            "{ALIAS_TAG} {} {} {}",
            self.network, self.container_id, self.ifname
        )
    }

    /// Reads an alias written by [`Owner::alias`]; `None` for anyone else's.
    pub fn from_alias(alias: &str) -> Option<Owner> {
        let mut it = alias.split(' ');
        if it.next()? != ALIAS_TAG {
            return None;
        }
        let o = Owner {
            network: it.next()?.to_string(),
            container_id: it.next()?.to_string(),
            ifname: it.next()?.to_string(),
        };
        it.next().is_none().then_some(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_are_short_stable_and_distinct() {
        let a = host_ifname("abc", "eth0");
        assert_eq!(a.len(), 15);
        assert!(a.starts_with("vsw"));
        assert!(a[3..].bytes().all(|b| b.is_ascii_hexdigit()));
        // Fixed: the same attachment must map to the same name in every release.
        assert_eq!(a, host_ifname("abc", "eth0"));
        assert_eq!(a, "vswb133159de544"); // sha256("abc:eth0")[..6]
        assert_ne!(a, host_ifname("abc", "eth1"));
        assert_ne!(a, host_ifname("abd", "eth0"));
        // No ambiguity between "ab"+"c:eth0"-like splits.
        assert_ne!(host_ifname("ab", "ceth0"), host_ifname("abc", "eth0"));
        let long = "f".repeat(64);
        assert_eq!(host_ifname(&long, "eth0").len(), 15);
    }

    #[test]
    fn pod_macs_are_local_unicast() {
        for i in 0..200 {
            let m = pod_mac(&format!("c{i}"), "eth0");
            assert_eq!(m[0] & 0x03, 0x02, "{}", format_mac(&m));
        }
        assert_eq!(pod_mac("abc", "eth0"), pod_mac("abc", "eth0"));
        assert_ne!(pod_mac("abc", "eth0"), pod_mac("abc", "eth1"));
    }

    #[test]
    fn macs_parse_and_format() {
        let m = parse_mac("02:AB:cd:00:11:ff").expect("mac");
        assert_eq!(format_mac(&m), "02:ab:cd:00:11:ff");
        for bad in [
            "",
            "02:ab:cd:00:11",
            "02:ab:cd:00:11:ff:00",
            "0g:00:00:00:00:01",
            "01:00:5e:00:00:01",
            "00:00:00:00:00:00",
            "2:ab:cd:00:11:ff",
        ] {
            assert!(parse_mac(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn aliases_round_trip() {
        let o = Owner {
            network: "pods".into(),
            container_id: "abc-1.2_3".into(),
            ifname: "eth0".into(),
        };
        assert_eq!(o.alias(), "vswitch-cni pods abc-1.2_3 eth0");
        assert_eq!(Owner::from_alias(&o.alias()), Some(o));
        for other in [
            "",
            "vswitch-cni",
            "vswitch-cni a b",
            "vswitch-cni a b c d",
            "calico a b c",
        ] {
            assert_eq!(Owner::from_alias(other), None, "{other}");
        }
    }
}

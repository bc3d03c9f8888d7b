//! Facts about a kernel network interface: index, MAC, MTU, existence.

use std::ffi::CString;
use std::io;

/// The interface's index, or `None` if there is no such interface.
pub fn ifindex(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: c is a valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (idx != 0).then_some(idx)
}

fn sysfs(name: &str, attr: &str) -> io::Result<String> {
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "bad interface name",
        ));
    }
    Ok(
        std::fs::read_to_string(format!("/sys/class/net/{name}/{attr}"))?
            .trim()
            .to_string(),
    )
}

/// Asks the kernel about an interface with an `ifreq` ioctl. Unlike /sys/class/net,
/// which shows the namespace /sys was mounted in, this answers for the calling
/// thread's network namespace (a worker that entered the switch's namespace, a test
/// inside `Netns::enter`).
fn ifreq(name: &str, request: libc::c_ulong) -> io::Result<libc::ifreq> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "bad interface name",
        ));
    }
    // SAFETY: plain socket(2); the descriptor is owned right below.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: raw is a fresh descriptor nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: all-zero is a valid ifreq (name empty, union zeroed).
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    // SAFETY: the request is one of the SIOCGIF* reads, which fill in `req`.
    if unsafe { libc::ioctl(sock.as_raw_fd(), request as _, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(req)
}

/// `SIOCETHTOOL` (linux/sockios.h) and `ETHTOOL_GCHANNELS` (linux/ethtool.h).
const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_GCHANNELS: u32 = 0x0000_003c;

/// `struct ethtool_channels`.
#[repr(C)]
#[derive(Default)]
struct EthtoolChannels {
    cmd: u32,
    max_rx: u32,
    max_tx: u32,
    max_other: u32,
    max_combined: u32,
    rx_count: u32,
    tx_count: u32,
    other_count: u32,
    combined_count: u32,
}

/// How many RX queues the interface delivers frames on: its combined plus
/// RX-only channels (`ethtool -l`), asked with `ETHTOOL_GCHANNELS` in the calling
/// thread's namespace. `None` when the driver does not report channels (then it
/// has one RX queue as far as AF_XDP is concerned) or the interface is unknown.
pub fn rx_queues(name: &str) -> Option<u32> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return None;
    }
    // SAFETY: plain socket(2); the descriptor is owned right below.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return None;
    }
    // SAFETY: raw is a fresh descriptor nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut ch = EthtoolChannels {
        cmd: ETHTOOL_GCHANNELS,
        ..EthtoolChannels::default()
    };
    // SAFETY: all-zero is a valid ifreq (name empty, union zeroed).
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    req.ifr_ifru.ifru_data = (&mut ch as *mut EthtoolChannels).cast();
    // SAFETY: SIOCETHTOOL with ETHTOOL_GCHANNELS writes one ethtool_channels
    // through ifr_data, which points at `ch`, alive for the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), SIOCETHTOOL as _, &mut req) } < 0 {
        return None;
    }
    let n = ch.combined_count.saturating_add(ch.rx_count);
    (n > 0).then_some(n)
}

/// The interface's MAC address (zeros when unknown).
pub fn mac(name: &str) -> [u8; 6] {
    if let Ok(req) = ifreq(name, libc::SIOCGIFHWADDR) {
        // SAFETY: SIOCGIFHWADDR filled the hwaddr member of the union.
        let sa = unsafe { req.ifr_ifru.ifru_hwaddr };
        let mut mac = [0u8; 6];
        for (d, s) in mac.iter_mut().zip(sa.sa_data) {
            *d = s as u8;
        }
        return mac;
    }
    sysfs(name, "address")
        .ok()
        .and_then(|s| s.parse::<crate::wire::MacAddr>().ok())
        .map(|m| m.0)
        .unwrap_or_default()
}

/// The interface's MTU (1500 when unknown).
pub fn mtu(name: &str) -> u32 {
    if let Ok(req) = ifreq(name, libc::SIOCGIFMTU) {
        // SAFETY: SIOCGIFMTU filled the mtu member of the union.
        let mtu = unsafe { req.ifr_ifru.ifru_mtu };
        if let Ok(mtu) = u32::try_from(mtu) {
            return mtu;
        }
    }
    sysfs(name, "mtu")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1500)
}

/// The interface's IPv4 addresses (in the calling thread's namespace), in the
/// order the kernel lists them, at most `max`; empty when it has none or the
/// lookup fails.
pub fn ipv4_addrs(name: &str, max: usize) -> Vec<std::net::Ipv4Addr> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs allocates a list we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return out;
    }
    let mut cur = head;
    while !cur.is_null() && out.len() < max {
        // SAFETY: cur is a node of the list getifaddrs returned, alive until freed.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string of the live list.
        let ifname = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) };
        // SAFETY: ifa_addr is non-null and points at a sockaddr of the list.
        let family = unsafe { (*ifa.ifa_addr).sa_family };
        if ifname.to_bytes() != name.as_bytes() || i32::from(family) != libc::AF_INET {
            continue;
        }
        // SAFETY: an AF_INET ifa_addr is a sockaddr_in.
        let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
        out.push(std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)));
    }
    // SAFETY: head came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    out
}

/// Identity (nsfs device, inode) of the calling thread's network namespace.
pub fn current_netns_id() -> io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata("/proc/thread-self/ns/net")?;
    Ok((m.dev(), m.ino()))
}

/// Checks a user-supplied interface name before it reaches the kernel.
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 15 {
        return Err(format!("interface name '{name}' must be 1 to 15 bytes"));
    }
    if name == "."
        || name == ".."
        || name
            .bytes()
            .any(|b| b == b'/' || b == 0 || b.is_ascii_whitespace() || b == b':')
    {
        return Err(format!("'{name}' is not a valid interface name"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_exists_and_junk_does_not() {
        assert_eq!(ifindex("lo"), Some(1));
        assert_eq!(ifindex("no-such-if0"), None);
        assert_eq!(ifindex("bad\0name"), None);
        assert_eq!(mtu("lo"), 65536);
    }

    #[test]
    fn names_are_validated() {
        assert!(validate_name("veth0").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name("a-very-long-interface-name").is_err());
        assert!(validate_name("../etc").is_err());
        assert!(validate_name("a b").is_err());
    }
}

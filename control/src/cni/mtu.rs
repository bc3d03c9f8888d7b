//! The pod interface's MTU when the network configuration does not set `mtu`.
//!
//! Pod traffic to other nodes is VXLAN-encapsulated on the uplink (50 bytes:
//! outer Ethernet 14, IPv4 20, UDP 8, VXLAN 8), so the pod MTU is the uplink MTU
//! less 50. The first of these that answers decides:
//!
//! 1. `mtu` in the network configuration (the administrator knows best);
//! 2. the MTU of vswitchd's `uplink` port (asked over the control socket: the
//!    interface the tunnels actually leave by) − 50;
//! 3. the MTU of the interface of the default route in the plugin's network
//!    namespace (the node's, where the runtime runs it) − 50 — before the uplink
//!    is attached, or on a switch without one;
//! 4. [`DEFAULT_MTU`] (1450: a 1500-byte underlay).
//!
//! A source whose MTU would leave less than [`MIN_MTU`] for the pod is skipped.

use std::io;

use super::config::{DEFAULT_MTU, MAX_MTU, MIN_MTU};
use super::netlink::Netlink;

/// Bytes a VXLAN encapsulation adds in front of the pod's frame.
pub const VXLAN_OVERHEAD: u32 = 50;

/// Where the pod MTU came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Config,
    SwitchUplink,
    DefaultRoute,
    Default,
}

/// The pod MTU from what is known (see the module documentation for the order).
pub fn choose(
    config: Option<u32>,
    switch_uplink: Option<u32>,
    default_route: Option<u32>,
) -> (u32, Source) {
    if let Some(m) = config {
        return (m, Source::Config);
    }
    let fits = |m: u32| {
        m.checked_sub(VXLAN_OVERHEAD)
            .filter(|p| (MIN_MTU..=MAX_MTU).contains(p))
    };
    if let Some(m) = switch_uplink.and_then(fits) {
        return (m, Source::SwitchUplink);
    }
    if let Some(m) = default_route.and_then(fits) {
        return (m, Source::DefaultRoute);
    }
    (DEFAULT_MTU, Source::Default)
}

/// The interface of the IPv4 default route in `/proc/net/route` text: the
/// lowest-metric entry with destination and mask 0 that is up (flag RTF_UP).
pub fn default_route_ifname(route_table: &str) -> Option<String> {
    const RTF_UP: u32 = 0x1;
    route_table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 8 {
                return None;
            }
            let dest = u32::from_str_radix(f[1], 16).ok()?;
            let flags = u32::from_str_radix(f[3], 16).ok()?;
            let metric: u32 = f[6].parse().ok()?;
            let mask = u32::from_str_radix(f[7], 16).ok()?;
            (dest == 0 && mask == 0 && flags & RTF_UP != 0).then(|| (metric, f[0].to_string()))
        })
        .min_by_key(|(metric, _)| *metric)
        .map(|(_, name)| name)
}

/// The MTU of the default route's interface in this network namespace, if there
/// is a default route.
pub fn default_route_mtu(nl: &mut Netlink) -> io::Result<Option<u32>> {
    // /proc/self/net follows the namespace of this process (the runtime's).
    let table = match std::fs::read_to_string("/proc/self/net/route") {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let Some(name) = default_route_ifname(&table) else {
        return Ok(None);
    };
    Ok(nl.link_by_name(&name)?.and_then(|l| l.mtu))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_of_sources() {
        assert_eq!(
            choose(Some(1400), Some(9000), Some(1500)),
            (1400, Source::Config)
        );
        assert_eq!(
            choose(None, Some(9000), Some(1500)),
            (8950, Source::SwitchUplink)
        );
        assert_eq!(choose(None, None, Some(9000)), (8950, Source::DefaultRoute));
        assert_eq!(choose(None, None, None), (1450, Source::Default));
        // An explicit MTU wins even when it is larger than the uplink allows.
        assert_eq!(choose(Some(9000), Some(1500), None), (9000, Source::Config));
    }

    #[test]
    fn unusable_sources_are_skipped() {
        // 100 - 50 is below the IPv4 minimum: the next source decides.
        assert_eq!(
            choose(None, Some(100), Some(1500)),
            (1450, Source::DefaultRoute)
        );
        assert_eq!(choose(None, Some(10), Some(0)), (1450, Source::Default));
        // lo's 65536 leaves 65486, within a veth's range.
        assert_eq!(
            choose(None, None, Some(65536)),
            (65486, Source::DefaultRoute)
        );
    }

    #[test]
    fn default_route_from_proc() {
        let table = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
            eth1\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
            eth2\t00000000\t0101A8C0\t0003\t0\t0\t200\t00000000\t0\t0\t0\n\
            eth0\t00000000\t0102A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
            down0\t00000000\t0102A8C0\t0002\t0\t0\t1\t00000000\t0\t0\t0\n";
        assert_eq!(default_route_ifname(table).as_deref(), Some("eth0"));
        let none = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\n\
            eth1\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        assert_eq!(default_route_ifname(none), None);
        assert_eq!(default_route_ifname(""), None);
        assert_eq!(default_route_ifname("hdr\ngarbage line\n"), None);
        assert_eq!(default_route_ifname("hdr\ne\tzz\t0\t1\t0\t0\t0\t0\n"), None);
    }
}

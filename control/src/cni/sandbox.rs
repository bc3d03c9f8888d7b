//! The pod's side of the veth: configured and inspected from inside the pod's
//! network namespace (these functions run on a thread that entered it, see
//! `Netns::run`).

use super::error::{CniError, CniResult};
use super::netlink::{Link, Netlink, RouteSpec};
use super::offload;
use super::result::{Cidr, Success};

/// Brings `ifname` up with its addresses and routes, offloads off. Returns the
/// link as configured.
pub fn configure(ifname: &str, addrs: &[Cidr], routes: &[RouteSpec]) -> CniResult<Link> {
    let mut nl = open()?;
    let link = nl
        .link_by_name(ifname)
        .map_err(|e| CniError::kernel(format!("looking up {ifname} in the container: {e}")))?
        .ok_or_else(|| {
            CniError::kernel(format!(
                "{ifname} did not appear in the container's namespace"
            ))
        })?;
    offload::disable(ifname)
        .map_err(|e| CniError::kernel(format!("turning off offloads on {ifname}: {e}")))?;
    for a in addrs {
        nl.add_address(link.index, *a)
            .map_err(|e| CniError::kernel(format!("adding {a} to {ifname}: {e}")))?;
    }
    // Up before routes: the kernel refuses a route through a link that is down.
    nl.set_up(link.index, None)
        .map_err(|e| CniError::kernel(format!("setting {ifname} up: {e}")))?;
    for r in routes {
        nl.add_route(link.index, r).map_err(|e| {
            CniError::kernel(format!(
                "adding route {}{} on {ifname}: {e}",
                r.dst,
                r.gw.map(|g| format!(" via {g}")).unwrap_or_default()
            ))
        })?;
    }
    Ok(link)
}

/// Whether an interface named `ifname` exists (in the calling thread's namespace).
pub fn exists(ifname: &str) -> CniResult<bool> {
    open()?
        .link_by_name(ifname)
        .map(|l| l.is_some())
        .map_err(|e| CniError::kernel(format!("looking up {ifname}: {e}")))
}

/// `ifname` and its addresses, if it exists.
pub fn inspect(ifname: &str) -> CniResult<Option<(Link, Vec<Cidr>)>> {
    let mut nl = open()?;
    let Some(link) = nl
        .link_by_name(ifname)
        .map_err(|e| CniError::kernel(format!("looking up {ifname}: {e}")))?
    else {
        return Ok(None);
    };
    let addrs = nl
        .addresses(link.index)
        .map_err(|e| CniError::kernel(format!("listing the addresses of {ifname}: {e}")))?;
    Ok(Some((link, addrs)))
}

fn open() -> CniResult<Netlink> {
    Netlink::open().map_err(|e| CniError::kernel(format!("opening a netlink socket: {e}")))
}

/// The routes of an IPAM result, ready to install: a route without `gw` goes via
/// the gateway of the first address of its family that has one (as the reference
/// plugins' `ConfigureIface` does), else straight out of the link.
pub fn route_specs(ipam: &Success) -> Vec<RouteSpec> {
    ipam.routes
        .iter()
        .map(|r| {
            let gw = r.gw.or_else(|| {
                ipam.ips
                    .iter()
                    .filter(|ip| ip.address.is_ipv4() == r.dst.is_ipv4())
                    .find_map(|ip| ip.gateway)
            });
            RouteSpec {
                dst: r.dst,
                gw,
                mtu: r.mtu,
                advmss: r.advmss,
                priority: r.priority,
                table: r.table,
                scope: r.scope,
                onlink: false,
                protocol: None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn routes_take_the_gateway_of_their_family() {
        let ipam = Success::parse(&json!({
            "ips": [
                {"address": "10.1.0.5/24", "gateway": "10.1.0.1"},
                {"address": "fd00::5/64", "gateway": "fd00::1"}
            ],
            "routes": [
                {"dst": "0.0.0.0/0"},
                {"dst": "::/0"},
                {"dst": "192.168.0.0/16", "gw": "10.1.0.254"}
            ]
        }))
        .expect("result");
        let r = route_specs(&ipam);
        assert_eq!(r[0].gw, Some("10.1.0.1".parse().expect("ip")));
        assert_eq!(r[1].gw, Some("fd00::1".parse().expect("ip")));
        assert_eq!(r[2].gw, Some("10.1.0.254".parse().expect("ip")));
    }

    #[test]
    fn routes_without_any_gateway_are_on_link() {
        let ipam = Success::parse(&json!({
            "ips": [{"address": "10.1.0.5/24"}],
            "routes": [{"dst": "10.2.0.0/16"}]
        }))
        .expect("result");
        assert_eq!(route_specs(&ipam)[0].gw, None);
    }
}

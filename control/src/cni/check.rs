//! CHECK: is the attachment still as ADD made it? The host end of the veth, the
//! pod's interface with its MAC and addresses (from `prevResult`), the two being
//! peers, the switch port (up, belonging to this container), and the IPAM
//! plugin's own CHECK.
//!
//! Routes are not checked: the spec lets later plugins of a chain change them.

use super::config::NetConf;
use super::env::Env;
use super::error::{ATTACHMENT_BROKEN, CniError, CniResult};
use super::ipam::Ipam;
use super::names;
use super::netlink::Netlink;
use super::netns::Netns;
use super::result::Success;
use super::sandbox;
use super::switch::Switch;

fn broken(details: String) -> CniError {
    CniError::new(ATTACHMENT_BROKEN, "attachment is broken", details)
}

pub fn check(env: &Env, conf: &NetConf, stdin: &[u8]) -> CniResult<()> {
    if !conf.version.has_check() {
        return Err(CniError::version(format!(
            "CHECK does not exist in cniVersion {} (since 0.4.0)",
            conf.cni_version
        )));
    }
    let att = env.attachment(true)?;
    let ipam = Ipam::new(conf, stdin, &env.path)?;
    let prev = conf
        .prev_result
        .as_ref()
        .ok_or_else(|| CniError::config("CHECK needs prevResult (the result of the ADD)"))?;
    let prev = Success::parse(prev).map_err(|e| CniError::config(format!("prevResult: {e}")))?;
    let netns_path = att
        .netns
        .clone()
        .ok_or_else(|| CniError::env("CHECK needs CNI_NETNS"))?;
    let host = names::host_ifname(&att.container_id, &att.ifname);

    // What the ADD said: our pod interface, its MAC and addresses.
    let sandbox_str = netns_path.display().to_string();
    let pod_idx = prev
        .interfaces
        .iter()
        .position(|i| i.name == att.ifname && i.sandbox.as_deref() == Some(&sandbox_str))
        .ok_or_else(|| {
            CniError::config(format!(
                "prevResult lists no interface {} in {sandbox_str}",
                att.ifname
            ))
        })?;
    let want_mac = prev.interfaces[pod_idx].mac.clone();
    let want_addrs: Vec<_> = prev
        .ips
        .iter()
        .filter(|ip| ip.interface == Some(pod_idx))
        .map(|ip| ip.address)
        .collect();

    // The host end.
    let mut nl = Netlink::open().map_err(|e| CniError::kernel(format!("netlink: {e}")))?;
    let host_link = nl
        .link_by_name(&host)
        .map_err(|e| CniError::kernel(format!("looking up {host}: {e}")))?
        .ok_or_else(|| {
            broken(format!(
                "host interface {host} of the pod's veth is missing"
            ))
        })?;
    if !host_link.up {
        return Err(broken(format!("host interface {host} is down")));
    }

    // The pod's side.
    let ns = Netns::open(&netns_path)?;
    let ifname = att.ifname.clone();
    let (pod_link, addrs) = ns.run(move || sandbox::inspect(&ifname))?.ok_or_else(|| {
        broken(format!(
            "interface {} is missing in the container",
            att.ifname
        ))
    })?;
    if let (Some(want), Some(have)) = (&want_mac, pod_link.mac) {
        let have = names::format_mac(&have);
        if !want.eq_ignore_ascii_case(&have) {
            return Err(broken(format!(
                "{} has MAC {have}, the ADD result says {want}",
                att.ifname
            )));
        }
    }
    if pod_link.peer_index != Some(host_link.index) {
        return Err(broken(format!(
            "{} in the container is not the peer of {host}",
            att.ifname
        )));
    }
    if !pod_link.up {
        return Err(broken(format!("{} in the container is down", att.ifname)));
    }
    for a in &want_addrs {
        if !addrs.contains(a) {
            return Err(broken(format!("{} has lost address {a}", att.ifname)));
        }
    }

    // The switch.
    let mut sw = Switch::connect(&conf.socket)?;
    let port = sw
        .port(&host)?
        .ok_or_else(|| broken(format!("vswitchd has no port {host}")))?;
    if port.state != vswitch_proto::PortState::Up {
        return Err(broken(format!("switch port {host} is {:?}", port.state)));
    }
    let owner = port.pod.as_ref().and_then(|p| p.container_id.as_deref());
    if owner != Some(att.container_id.as_str()) {
        return Err(broken(format!(
            "switch port {host} belongs to container {owner:?}, not {}",
            att.container_id
        )));
    }

    ipam.check()
}

//! ADD: create the pod's veth, address it through IPAM, attach it to the switch.
//!
//! Order, and why:
//! 1. everything that can be checked without changing anything: environment,
//!    configuration, the namespace, free interface names, a reachable vswitchd
//!    (daemon down: code 11 before any address is taken);
//! 2. IPAM ADD (an address is reserved);
//! 3. the veth: host end here, peer created directly in the pod's namespace;
//! 4. inside the pod: offloads off, addresses, up, routes;
//! 5. the host end up and attached to the switch as a `pod` port.
//!
//! Each step that made something registers its undo with a [`Rollback`]; if a
//! later step fails (or the plugin panics) the undo runs in reverse order: port
//! detached, veth deleted (the pod end goes with it), IPAM released. No half-made
//! pod stays behind.

use vswitch_proto::PodRef;

use super::config::NetConf;
use super::env::{Attachment, Env};
use super::error::{CniError, CniResult};
use super::ipam::{Ipam, Overrides};
use super::mtu;
use super::names::{self, Owner};
use super::netlink::{Netlink, VethSpec};
use super::netns::Netns;
use super::result::{Interface, Success};
use super::sandbox;
use super::switch::Switch;

pub fn add(env: &Env, conf: &NetConf, stdin: &[u8]) -> CniResult<Success> {
    let att = env.attachment(true)?;
    let ipam = Ipam::new(conf, stdin, &env.path)?;
    let prev = conf
        .prev_result
        .as_ref()
        .map(|v| Success::parse(v).map_err(|e| CniError::config(format!("prevResult: {e}"))))
        .transpose()?;
    let netns_path = att
        .netns
        .clone()
        .ok_or_else(|| CniError::env("ADD needs CNI_NETNS"))?;
    let ns = Netns::open(&netns_path)?;
    let asked_mac = pod_mac(conf, &att)?;
    let host = names::host_ifname(&att.container_id, &att.ifname);

    // 1. Nothing changed yet: refuse early.
    let mut nl = Netlink::open().map_err(|e| CniError::kernel(format!("netlink: {e}")))?;
    if nl
        .link_by_name(&host)
        .map_err(|e| CniError::kernel(format!("looking up {host}: {e}")))?
        .is_some()
    {
        return Err(CniError::config(format!(
            "host interface {host} of attachment ({}, {}) exists already: an earlier ADD was not followed by DEL",
            att.container_id, att.ifname
        )));
    }
    let ifname = att.ifname.clone();
    if ns.run(move || sandbox::exists(&ifname))? {
        return Err(CniError::config(format!(
            "interface {} exists already in the container",
            att.ifname
        )));
    }
    let mut switch = Switch::connect(&conf.socket)?;
    let mtu = pod_mtu(conf, &mut switch, &mut nl)?;

    let mut undo = Rollback::new(&ipam);
    // 2. Addresses.
    let ipam_result = ipam.add()?;
    undo.ipam = true;
    // Without a MAC asked for, the pod's MAC follows its first IPv4 address
    // (0a:58:a.b.c.d, the OVN-Kubernetes scheme): the switch routes to a pod by
    // rewriting eth_dst from the destination IP, with no ARP and no learning.
    let pod_mac = asked_mac.unwrap_or_else(|| {
        ipam_result
            .ips
            .iter()
            .find_map(|ip| match ip.address.addr {
                std::net::IpAddr::V4(v4) => Some(names::ip_mac(v4)),
                std::net::IpAddr::V6(_) => None,
            })
            .unwrap_or_else(|| names::pod_mac(&att.container_id, &att.ifname))
    });

    // 3. The veth pair.
    nl.create_veth(&VethSpec {
        host: &host,
        peer: &att.ifname,
        peer_mac: pod_mac,
        mtu,
        peer_netns: ns.fd(),
    })
    .map_err(|e| CniError::kernel(format!("creating veth {host} <-> {}: {e}", att.ifname)))?;
    undo.veth = Some(host.clone());

    // 4. The pod's side.
    let addrs: Vec<_> = ipam_result.ips.iter().map(|ip| ip.address).collect();
    let routes = sandbox::route_specs(&ipam_result);
    let ifname = att.ifname.clone();
    let pod_link = ns.run(move || sandbox::configure(&ifname, &addrs, &routes))?;

    // 5. The host end, and the switch.
    let host_link = nl
        .link_by_name(&host)
        .map_err(|e| CniError::kernel(format!("looking up {host}: {e}")))?
        .ok_or_else(|| CniError::kernel(format!("{host} vanished right after it was made")))?;
    let owner = Owner {
        network: conf.name.clone(),
        container_id: att.container_id.clone(),
        ifname: att.ifname.clone(),
    };
    nl.set_up(host_link.index, Some(&owner.alias()))
        .map_err(|e| CniError::kernel(format!("setting {host} up: {e}")))?;
    let (namespace, name) = att.pod_name();
    switch.attach(
        &host,
        PodRef {
            namespace,
            name,
            container_id: Some(att.container_id.clone()),
        },
    )?;
    undo.port = Some(switch);

    let mut result = prev.unwrap_or_default();
    let ours = Success {
        interfaces: vec![
            Interface {
                name: host.clone(),
                mac: host_link.mac.map(|m| names::format_mac(&m)),
                mtu: Some(mtu),
                ..Interface::default()
            },
            Interface {
                name: att.ifname.clone(),
                mac: Some(names::format_mac(&pod_link.mac.unwrap_or(pod_mac))),
                mtu: Some(mtu),
                sandbox: Some(netns_path.display().to_string()),
                ..Interface::default()
            },
        ],
        ips: ipam_result
            .ips
            .iter()
            .cloned()
            .map(|mut ip| {
                ip.interface = Some(1);
                ip
            })
            .collect(),
        routes: ipam_result.routes.clone(),
        dns: if ipam_result.dns.is_empty() {
            conf.dns.clone().unwrap_or_default()
        } else {
            ipam_result.dns.clone()
        },
    };
    result.append(ours);
    undo.disarm();
    Ok(result)
}

/// The pod interface's MAC if the runtime asked for one: `runtimeConfig.mac` (the
/// `mac` capability), else `MAC` in `CNI_ARGS`. Otherwise it is derived from the
/// pod's IPv4 address once IPAM gave one (see `run`).
fn pod_mac(conf: &NetConf, att: &Attachment) -> CniResult<Option<[u8; 6]>> {
    if let Some(m) = &conf.runtime_mac {
        return names::parse_mac(m)
            .map(Some)
            .map_err(|e| CniError::config(format!("runtimeConfig.mac: {e}")));
    }
    if let Some(m) = att.args.get("MAC") {
        return names::parse_mac(m)
            .map(Some)
            .map_err(|e| CniError::env(format!("CNI_ARGS MAC: {e}")));
    }
    Ok(None)
}

/// The pod interface's MTU: `mtu` of the configuration, else the switch's uplink
/// MTU − 50, else the default route's interface MTU − 50, else 1450 (`mtu.rs`).
fn pod_mtu(conf: &NetConf, switch: &mut Switch, nl: &mut Netlink) -> CniResult<u32> {
    if let Some(m) = conf.mtu {
        return Ok(m);
    }
    let uplink = switch.uplink_mtu()?;
    let route = if uplink.is_some() {
        None
    } else {
        mtu::default_route_mtu(nl)
            .map_err(|e| CniError::kernel(format!("the default route's interface MTU: {e}")))?
    };
    Ok(mtu::choose(None, uplink, route).0)
}

/// Undoes what a failed ADD made, in reverse order, on drop unless disarmed.
struct Rollback<'a> {
    ipam: bool,
    ipam_plugin: &'a Ipam<'a>,
    veth: Option<String>,
    port: Option<Switch>,
    armed: bool,
}

impl<'a> Rollback<'a> {
    fn new(ipam_plugin: &'a Ipam<'a>) -> Rollback<'a> {
        Rollback {
            ipam: false,
            ipam_plugin,
            veth: None,
            port: None,
            armed: true,
        }
    }

    fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for Rollback<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // Errors here cannot change the outcome (ADD failed already); they go to
        // stderr, which the runtime logs.
        if let (Some(sw), Some(host)) = (self.port.as_mut(), self.veth.as_deref())
            && let Err(e) = sw.detach(host)
        {
            eprintln!("vswitch-cni: rollback: {e}");
        }
        if let Some(host) = &self.veth {
            let r = Netlink::open().and_then(|mut nl| match nl.link_by_name(host)? {
                Some(l) => nl.del_link(l.index),
                None => Ok(()),
            });
            if let Err(e) = r {
                eprintln!("vswitch-cni: rollback: deleting {host}: {e}");
            }
        }
        if self.ipam
            && let Err(e) = self.ipam_plugin.del(&Overrides::default())
        {
            eprintln!("vswitch-cni: rollback: releasing the address: {e}");
        }
    }
}

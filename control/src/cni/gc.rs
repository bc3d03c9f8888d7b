//! GC: release every attachment of this network that the runtime no longer lists
//! in `cni.dev/valid-attachments`, then forward GC to the IPAM plugin.
//!
//! Our attachments are found by the alias on their host interface
//! (`vswitch-cni NETWORK CONTAINERID IFNAME`, see `names`), so GC needs no state
//! file and touches nothing of another network or another plugin. Each stale one
//! is detached from the switch, its veth deleted and its addresses released with
//! an IPAM DEL for that attachment: that also works with IPAM plugins older than
//! GC (Debian's 1.1.1), which are then not sent the GC itself.
//!
//! Errors do not stop the sweep; they are reported together at the end.

use std::collections::HashSet;

use super::config::NetConf;
use super::del;
use super::env::{Command, Env};
use super::error::{CniError, CniResult, GC_INCOMPLETE};
use super::ipam::{Ipam, Overrides};
use super::names::{HOST_PREFIX, Owner};
use super::netlink::Netlink;
use super::switch::Switch;

pub fn gc(env: &Env, conf: &NetConf, stdin: &[u8]) -> CniResult<()> {
    let ipam = Ipam::new(conf, stdin, &env.path)?;
    // Without the list, everything would look stale: refuse rather than guess.
    let valid = conf.valid_attachments.as_ref().ok_or_else(|| {
        CniError::config("GC needs cni.dev/valid-attachments (an empty list means none)")
    })?;
    let valid: HashSet<(&str, &str)> = valid
        .iter()
        .map(|a| (a.container_id.as_str(), a.ifname.as_str()))
        .collect();

    let mut nl = Netlink::open().map_err(|e| CniError::kernel(format!("netlink: {e}")))?;
    let links = nl
        .links()
        .map_err(|e| CniError::kernel(format!("listing interfaces: {e}")))?;
    let stale: Vec<(String, Owner)> = links
        .into_iter()
        .filter(|l| l.name.starts_with(HOST_PREFIX))
        .filter_map(|l| Some((l.name, Owner::from_alias(l.alias.as_deref()?)?)))
        .filter(|(_, o)| o.network == conf.name)
        .filter(|(_, o)| !valid.contains(&(o.container_id.as_str(), o.ifname.as_str())))
        .collect();

    let mut errors = Vec::new();
    let mut switch = match Switch::connect(&conf.socket) {
        Ok(s) => Some(s),
        Err(e) if stale.is_empty() => {
            eprintln!("vswitch-cni: GC: {e}");
            None
        }
        Err(e) => {
            errors.push(e.to_string());
            None
        }
    };
    for (host, owner) in &stale {
        eprintln!(
            "vswitch-cni: GC: releasing {host} (container {}, {})",
            owner.container_id, owner.ifname
        );
        if let Some(sw) = switch.as_mut()
            && let Err(e) = sw.detach(host)
        {
            errors.push(e.to_string());
        }
        if let Err(e) = del::delete_link(host) {
            errors.push(e.to_string());
        }
        let o = Overrides {
            container_id: Some(owner.container_id.clone()),
            ifname: Some(owner.ifname.clone()),
            no_netns: true,
        };
        if let Err(e) = ipam.del(&o) {
            errors.push(e.to_string());
        }
    }

    match ipam.knows_gc_and_status() {
        Ok(true) => {
            if let Err(e) = ipam.forward(Command::Gc) {
                errors.push(e.to_string());
            }
        }
        Ok(false) => {}
        Err(e) => errors.push(e.to_string()),
    }

    if errors.is_empty() {
        Ok(())
    } else {
        Err(CniError::new(
            GC_INCOMPLETE,
            "garbage collection incomplete",
            errors.join("; "),
        ))
    }
}

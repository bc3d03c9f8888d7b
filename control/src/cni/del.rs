//! DEL: detach the port, delete the veth, release the addresses. Idempotent: what
//! is already gone (the namespace, the veth, the daemon's port, the daemon itself)
//! is skipped, and a second DEL succeeds.
//!
//! Only an IPAM failure fails DEL (the spec asks plugins to pass on delegated
//! errors, and a runtime that retries DEL then gets the address released). Every
//! other step is best effort: a veth that is gone leaves nothing for the switch to
//! poll, and vswitchd removes pod ports whose interface vanished by itself.

use super::config::NetConf;
use super::env::Env;
use super::error::{CniError, CniResult};
use super::ipam::{Ipam, Overrides};
use super::names;
use super::netlink::Netlink;
use super::switch::Switch;

pub fn del(env: &Env, conf: &NetConf, stdin: &[u8]) -> CniResult<()> {
    let att = env.attachment(false)?;
    let ipam = Ipam::new(conf, stdin, &env.path)?;
    let host = names::host_ifname(&att.container_id, &att.ifname);
    remove_attachment(conf, &host);
    ipam.del(&Overrides::default())
}

/// Detaches and deletes host interface `host`, reporting problems on stderr only.
pub fn remove_attachment(conf: &NetConf, host: &str) {
    match Switch::connect(&conf.socket) {
        Ok(mut sw) => {
            if let Err(e) = sw.detach(host) {
                eprintln!("vswitch-cni: DEL: {e}");
            }
        }
        Err(e) => eprintln!("vswitch-cni: DEL: port {host} not detached: {e}"),
    }
    if let Err(e) = delete_link(host) {
        eprintln!("vswitch-cni: DEL: {e}");
    }
}

/// Deletes host interface `name` if it exists (its veth peer goes with it).
pub fn delete_link(name: &str) -> CniResult<()> {
    let mut nl = Netlink::open().map_err(|e| CniError::kernel(format!("netlink: {e}")))?;
    match nl.link_by_name(name) {
        Ok(Some(l)) => nl
            .del_link(l.index)
            .map_err(|e| CniError::kernel(format!("deleting {name}: {e}"))),
        Ok(None) => Ok(()),
        Err(e) => Err(CniError::kernel(format!("looking up {name}: {e}"))),
    }
}

//! The usual end-to-end topology: one switch namespace running `vswitchd`, and pods
//! attached to it by veths.
//!
//! ```text
//!  pod ns 0            switch ns (vswitchd)            pod ns 1
//!  [vpNxA 10.250.0.10] <-> [vsNxA]  ...  [vsNxB] <-> [vpNxB 10.250.0.11]
//! ```

use crate::daemon::{DaemonOpts, Vswitchd};
use crate::netns::Netns;
use crate::pod::{Pod, PodOpts, pod_ip};
use crate::{Result, err, wait_for};
use std::time::Duration;

/// Switch namespace + daemon + pods. Fields drop in order: the daemon stops first
/// (SIGTERM, with its ports still there), then the pods go, then the switch namespace.
pub struct Topo {
    pub daemon: Vswitchd,
    pub pods: Vec<Pod>,
    pub sw: Netns,
}

/// Address of pod `i` in a [`Topo`]: 10.250.0.(10 + i).
pub fn topo_ip(i: usize) -> std::net::Ipv4Addr {
    pod_ip(10 + i as u8)
}

impl Topo {
    /// `pods.len()` pods (with those options) and a running daemon; no ports added yet.
    pub fn new(pods: &[PodOpts], opts: DaemonOpts) -> Result<Topo> {
        let sw = Netns::new("sw")?;
        let pods = pods
            .iter()
            .enumerate()
            .map(|(i, o)| Pod::new(&sw, topo_ip(i), o.clone()))
            .collect::<Result<Vec<_>>>()?;
        let daemon = Vswitchd::start(&sw, opts)?;
        Ok(Topo { daemon, pods, sw })
    }

    /// `n` default pods.
    pub fn with_pods(n: usize) -> Result<Topo> {
        Topo::new(&vec![PodOpts::default(); n], DaemonOpts::default())
    }

    /// Adds the switch end of every pod as a port in `mode`.
    pub fn add_all(&self, mode: &str) -> Result<()> {
        for p in &self.pods {
            self.daemon.add_port(&p.switch_if, mode)?;
        }
        Ok(())
    }

    /// Waits until pod `from` gets a ping reply from pod `to` (ARP resolved, MACs
    /// learned), then checks that 5 more pings all get answers.
    pub fn ping_pair(&self, from: usize, to: usize) -> Result<()> {
        let (a, b) = (&self.pods[from], &self.pods[to]);
        a.ping_until(b.ip, Duration::from_secs(15))?;
        let r = a.ping(b.ip, 5)?;
        if !r.all_answered() {
            return Err(err!(
                "{} -> {}: {}/{} ping replies",
                a.ip,
                b.ip,
                r.received,
                r.transmitted
            ));
        }
        Ok(())
    }

    /// Waits until `vsctl show` no longer lists port `ifname`.
    pub fn wait_port_gone(&self, ifname: &str, timeout: Duration) -> Result<()> {
        wait_for(timeout, || {
            self.daemon
                .port(ifname)
                .ok()
                .and_then(|p| p.is_none().then_some(()))
        })
        .ok_or_else(|| err!("port {ifname} still listed after {timeout:?}"))
    }
}

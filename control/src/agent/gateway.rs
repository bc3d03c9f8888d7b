//! The gateway port (`vswitch-agent --gateway IFNAME`): a veth pair into the node's
//! own network stack, like antrea-gw0, created and kept by the agent.
//!
//! From this node's Node object (its IPv4 pod CIDR) and the other nodes' pod CIDRs
//! the agent keeps, in the namespace it runs in (docs/overlay.md, "Gateway port and
//! host routes"):
//!
//! * the veth `IFNAME` (host end: the gateway MAC, the gateway IP with the pod
//!   CIDR's prefix and no other IPv4 address, MTU = uplink MTU − 50) and `IFNAME-sw` (the switch end),
//!   offloads off on both, both up;
//! * `IFNAME-sw` attached to vswitchd as a port of kind `gateway` (checked every
//!   [`PORT_CHECK`], so a restarted vswitchd gets it back);
//! * one route per remote node: `POD_CIDR via GATEWAY dev IFNAME onlink`, protocol
//!   [`RT_PROTO`] (how the agent tells its routes from anyone else's: routes of that
//!   protocol on `IFNAME` that no node wants any more are removed);
//! * `net.ipv4.ip_forward = 1`;
//! * `iptables -t nat POSTROUTING -s POD_CIDR ! -o IFNAME -m comment --comment
//!   vswitch-agent-gateway -j MASQUERADE` (Antrea's rule): pod traffic the host
//!   routes anywhere but back into the switch leaves with the node's address.
//!   Rules with that comment that differ (an old pod CIDR) are removed.
//!
//! Every step looks before it changes, so a restarted agent (or one racing an
//! operator's hand-made `vsgw0` of the same shape) leaves exactly one of each.
//! The agent leaves all of it in place when it exits, as Antrea leaves antrea-gw0:
//! the switch keeps forwarding without the agent, and the node must keep reaching
//! its pods (kubelet probes) across an agent upgrade or restart.

use crate::agent::cluster::{Cluster, StateChange};
use crate::client::Client;
use crate::cni::netlink::{Netlink, RouteSpec};
use crate::cni::offload;
use crate::cni::result::Cidr as NlCidr;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use vswitch_proto::Kind;
use vswitch_proto::model::Node;
use vswitch_proto::port::{PortKind, PortMode};
use vswitch_proto::validate::Cidr;

/// How often the switch is asked whether the gateway port is still attached.
pub const PORT_CHECK: Duration = Duration::from_secs(1);
/// How often the host side (link, address, routes, rule) is checked again even
/// when no Node changed (someone deleted a route by hand).
pub const HOST_CHECK: Duration = Duration::from_secs(30);
/// `rtm_protocol` of the agent's routes (unassigned in rtnetlink's list; Antrea
/// and Calico use their own numbers the same way).
pub const RT_PROTO: u8 = 0x56;
/// The comment that marks the agent's MASQUERADE rule.
pub const RULE_COMMENT: &str = "vswitch-agent-gateway";
/// The longest host-end name: `-sw` is appended for the switch end (15 max).
pub const MAX_NAME: usize = 12;

/// The switch end of gateway `name`.
pub fn switch_end(name: &str) -> String {
    format!("{name}-sw")
}

/// Checks a `--gateway` value.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > MAX_NAME
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return Err(format!(
            "gateway name {name:?}: 1 to {MAX_NAME} of [A-Za-z0-9._-] (the switch end adds \"-sw\")"
        ));
    }
    Ok(())
}

/// What the host side should look like, derived from the Node objects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Want {
    /// This node's IPv4 pod CIDR (network address, prefix) and gateway IP; `None`
    /// until our Node object with an IPv4 pod CIDR is seen.
    pub local: Option<(Ipv4Addr, u8, Ipv4Addr)>,
    /// Other nodes' IPv4 pod CIDRs → their gateway IP.
    pub remotes: BTreeMap<(Ipv4Addr, u8), Ipv4Addr>,
}

/// The IPv4 pod CIDR of `n`: (network, prefix, first host).
fn v4_cidr(n: &Node) -> Option<(Ipv4Addr, u8, Ipv4Addr)> {
    n.pod_cidrs.iter().find_map(|c| {
        let c = Cidr::parse(c).ok()?;
        match (c.network(), c.first_host()?) {
            (IpAddr::V4(net), IpAddr::V4(gw)) => Some((net, c.prefix, gw)),
            _ => None,
        }
    })
}

impl Want {
    /// From the Node objects the agent holds; `own` is this node's name.
    pub fn from_nodes<'a>(own: &str, nodes: impl Iterator<Item = &'a Node>) -> Want {
        let mut w = Want::default();
        for n in nodes {
            let Some((net, prefix, gw)) = v4_cidr(n) else {
                continue;
            };
            if n.name == own {
                w.local = Some((net, prefix, gw));
            } else {
                w.remotes.insert((net, prefix), gw);
            }
        }
        // A remote CIDR overlapping our own would take our pods' traffic away.
        if let Some((net, prefix, _)) = w.local {
            w.remotes.remove(&(net, prefix));
        }
        w
    }

    /// The MASQUERADE rule's arguments after `-A POSTROUTING`/`-D POSTROUTING`.
    pub fn rule(&self, ifname: &str) -> Option<Vec<String>> {
        let (net, prefix, _) = self.local?;
        Some(
            [
                "-s",
                &format!("{net}/{prefix}"),
                "!",
                "-o",
                ifname,
                "-m",
                "comment",
                "--comment",
                RULE_COMMENT,
                "-j",
                "MASQUERADE",
            ]
            .iter()
            .map(ToString::to_string)
            .collect(),
        )
    }
}

/// After the sources applied a batch: a new [`Want`] when `changes` touch Nodes.
pub fn update(handle: Option<&GatewayHandle>, cluster: &Cluster, changes: &[StateChange]) {
    if let Some(h) = handle
        && changes
            .iter()
            .any(|(k, _)| matches!(k.kind, Kind::Node | Kind::LocalNode))
    {
        h.set(Want::from_nodes(
            &cluster.settings().node_name,
            cluster.nodes(),
        ));
    }
}

/// The gateway MAC of `ip` (`0a:58:` + its bytes, as the switch uses).
pub fn gateway_mac(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x0a, 0x58, o[0], o[1], o[2], o[3]]
}

/// Shared between the sources (which set what is wanted) and the gateway thread.
#[derive(Default)]
pub struct GatewayHandle {
    want: Mutex<(Want, u64)>,
    wake: Condvar,
}

impl GatewayHandle {
    /// A new desired host side (no-op when unchanged).
    pub fn set(&self, w: Want) {
        let mut g = self.want.lock().unwrap_or_else(|e| e.into_inner());
        if g.0 != w {
            g.0 = w;
            g.1 += 1;
            self.wake.notify_all();
        }
    }

    fn wait(&self, seen: u64, timeout: Duration) -> (Want, u64) {
        let g = self.want.lock().unwrap_or_else(|e| e.into_inner());
        let (g, _) = self
            .wake
            .wait_timeout_while(g, timeout, |g| g.1 == seen)
            .unwrap_or_else(|e| e.into_inner());
        (g.0.clone(), g.1)
    }
}

/// The gateway thread's settings.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Host end (`--gateway`).
    pub name: String,
    /// vswitchd's control socket.
    pub socket: PathBuf,
    /// The uplink, whose MTU − 50 the gateway gets (1450 without one).
    pub uplink: Option<String>,
}

/// Keeps the gateway in step with `handle` until `stop` is set.
pub fn run(cfg: GatewayConfig, handle: Arc<GatewayHandle>, stop: Arc<AtomicBool>) {
    let mut seen = 0u64;
    let mut want = Want::default();
    let mut host_ok_at: Option<Instant> = None;
    let mut client: Option<Client> = None;
    let mut last_error = String::new();
    while !stop.load(Ordering::Relaxed) {
        let (w, generation) = handle.wait(seen, PORT_CHECK);
        if generation != seen {
            seen = generation;
            want = w;
            host_ok_at = None;
        }
        if want.local.is_none() {
            continue;
        }
        let due = host_ok_at.is_none_or(|t| t.elapsed() >= HOST_CHECK);
        let result = (|| -> anyhow::Result<()> {
            if due {
                reconcile_host(&cfg, &want)?;
                host_ok_at = Some(Instant::now());
            }
            ensure_port(&cfg, &mut client)
        })();
        match result {
            Ok(()) => {
                if !last_error.is_empty() {
                    tracing::info!(gateway = %cfg.name, "gateway port in place again");
                }
                last_error.clear();
            }
            Err(e) => {
                let e = format!("{e:#}");
                if e != last_error {
                    tracing::warn!(gateway = %cfg.name, error = %e, "gateway port not in place; retrying");
                    last_error = e;
                }
                host_ok_at = None;
            }
        }
    }
}

/// Attaches the switch end to vswitchd unless it is attached already.
fn ensure_port(cfg: &GatewayConfig, client: &mut Option<Client>) -> anyhow::Result<()> {
    let sw = switch_end(&cfg.name);
    if client.is_none() {
        let mut c = Client::connect(&cfg.socket)?;
        c.set_timeout(Some(Duration::from_secs(10)))?;
        *client = Some(c);
    }
    let Some(c) = client.as_mut() else {
        return Ok(());
    };
    let r = (|| -> anyhow::Result<()> {
        if c.list_ports()?.iter().any(|p| p.name == sw) {
            return Ok(());
        }
        let p = c.add_port(&sw, PortKind::Gateway, PortMode::Auto)?;
        tracing::info!(port = %sw, port_no = p.port_no, mode = ?p.mode, "gateway port attached to vswitchd");
        Ok(())
    })();
    if r.is_err() {
        // A restarted daemon: connect again next time.
        *client = None;
    }
    r
}

/// The host side: link, address, routes, forwarding, masquerade.
pub fn reconcile_host(cfg: &GatewayConfig, want: &Want) -> anyhow::Result<()> {
    // The pod CIDR's connected route comes with the address.
    let Some((_, prefix, gw)) = want.local else {
        return Ok(());
    };
    let sw = switch_end(&cfg.name);
    let mut nl = Netlink::open()?;
    let mtu = cfg
        .uplink
        .as_deref()
        .and_then(|u| nl.link_by_name(u).ok().flatten())
        .and_then(|l| l.mtu)
        .map_or(1450, |m| m.saturating_sub(50).max(576));
    let mac = gateway_mac(gw);
    let host = match nl.link_by_name(&cfg.name)? {
        Some(l) => l,
        None => {
            let ns = std::fs::File::open("/proc/thread-self/ns/net")?;
            // The switch end is made here, the host end "in the peer namespace",
            // which is this one: the peer is the end that gets the MAC.
            nl.create_veth(&crate::cni::netlink::VethSpec {
                host: &sw,
                peer: &cfg.name,
                peer_mac: mac,
                mtu,
                peer_netns: ns.as_raw_fd(),
            })
            .map_err(|e| anyhow::anyhow!("creating veth {}/{sw}: {e}", cfg.name))?;
            tracing::info!(host = %cfg.name, switch = %sw, mtu, "gateway veth created");
            nl.link_by_name(&cfg.name)?
                .ok_or_else(|| anyhow::anyhow!("{} vanished after creation", cfg.name))?
        }
    };
    let sw_link = nl.link_by_name(&sw)?.ok_or_else(|| {
        anyhow::anyhow!(
            "{} exists but {sw} does not: not a gateway veth of ours; delete it or pick another --gateway",
            cfg.name
        )
    })?;
    if host.mac != Some(mac) {
        nl.set_mac(host.index, mac)?;
    }
    for l in [&host, &sw_link] {
        if l.mtu != Some(mtu) {
            nl.set_mtu(l.index, mtu)?;
        }
    }
    for dev in [cfg.name.as_str(), sw.as_str()] {
        offload::disable(dev).map_err(|e| anyhow::anyhow!("offloads of {dev}: {e}"))?;
    }
    let addr = NlCidr {
        addr: IpAddr::V4(gw),
        prefix,
    };
    let present = nl.addresses(host.index)?;
    for a in present.iter().filter(|a| a.addr.is_ipv4() && **a != addr) {
        // An old gateway address (this node's pod CIDR changed).
        nl.del_address(host.index, *a)?;
        tracing::info!(addr = %a.addr, prefix = a.prefix, "stale gateway address removed");
    }
    if !present.contains(&addr) {
        match nl.add_address(host.index, addr) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            other => other?,
        }
    }
    nl.set_up(sw_link.index, None)?;
    nl.set_up(host.index, None)?;

    // Routes to remote pod CIDRs: add the wanted, remove ours nobody wants.
    let ours: Vec<_> = nl
        .routes(true)?
        .into_iter()
        .filter(|r| r.oif == Some(host.index) && r.protocol == RT_PROTO)
        .collect();
    for r in &ours {
        let keep = match (r.dst.addr, r.gw) {
            (IpAddr::V4(d), Some(IpAddr::V4(g))) => {
                want.remotes.get(&(d, r.dst.prefix)) == Some(&g) && r.onlink
            }
            _ => false,
        };
        if !keep {
            nl.del_route(host.index, r.dst, r.gw)?;
            tracing::info!(dst = %r.dst.addr, prefix = r.dst.prefix, "stale gateway route removed");
        }
    }
    for (&(dnet, dprefix), &dgw) in &want.remotes {
        let dst = NlCidr {
            addr: IpAddr::V4(dnet),
            prefix: dprefix,
        };
        let present = ours
            .iter()
            .any(|r| r.dst == dst && r.gw == Some(IpAddr::V4(dgw)) && r.onlink);
        if !present {
            nl.add_route(
                host.index,
                &RouteSpec {
                    dst,
                    gw: Some(IpAddr::V4(dgw)),
                    mtu: None,
                    advmss: None,
                    priority: None,
                    table: None,
                    scope: None,
                    onlink: true,
                    protocol: Some(RT_PROTO),
                },
            )
            .map_err(|e| anyhow::anyhow!("route {dnet}/{dprefix} via {dgw}: {e}"))?;
        }
    }

    let fwd = "/proc/sys/net/ipv4/ip_forward";
    if std::fs::read_to_string(fwd)?.trim() != "1" {
        std::fs::write(fwd, "1")?;
        tracing::info!("net.ipv4.ip_forward set to 1");
    }
    if let Some(rule) = want.rule(&cfg.name) {
        ensure_masquerade(&rule)?;
    }
    Ok(())
}

fn iptables(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("iptables")
        .args(["-w", "5", "-t", "nat"])
        .args(args)
        .output()
        .map_err(|e| anyhow::anyhow!("running iptables: {e}"))?;
    if !out.status.success() {
        anyhow::bail!(
            "iptables {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Exactly one rule carrying [`RULE_COMMENT`] in nat POSTROUTING: `rule`.
fn ensure_masquerade(rule: &[String]) -> anyhow::Result<()> {
    let listing = iptables(&["-S", "POSTROUTING"])?;
    let mut found = false;
    for line in listing.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.len() < 2 || words[0] != "-A" || !words.contains(&RULE_COMMENT) {
            continue;
        }
        let args = &words[2..];
        if !found && args.iter().copied().eq(rule.iter().map(String::as_str)) {
            found = true;
            continue;
        }
        let mut del = vec!["-D", "POSTROUTING"];
        del.extend_from_slice(args);
        iptables(&del)?;
        tracing::info!(rule = %line, "stale gateway MASQUERADE rule removed");
    }
    if !found {
        let mut add = vec!["-A", "POSTROUTING"];
        add.extend(rule.iter().map(String::as_str));
        iptables(&add)?;
        tracing::info!(rule = %rule.join(" "), "gateway MASQUERADE rule added");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, cidrs: &[&str]) -> Node {
        Node {
            name: name.into(),
            pod_cidrs: cidrs.iter().map(ToString::to_string).collect(),
            internal_ips: Vec::new(),
            vtep: None,
            labels: Default::default(),
        }
    }

    #[test]
    fn want_from_nodes() {
        let nodes = [
            node("a", &["fd00:1::/64", "10.244.1.0/24"]),
            node("b", &["10.244.2.0/24"]),
            node("c", &["fd00:3::/64"]),
            node("d", &["10.244.1.0/24"]),
            node("e", &[]),
        ];
        let w = Want::from_nodes("a", nodes.iter());
        assert_eq!(
            w.local,
            Some((
                Ipv4Addr::new(10, 244, 1, 0),
                24,
                Ipv4Addr::new(10, 244, 1, 1)
            ))
        );
        // c has no IPv4 CIDR, d overlaps ours exactly, e has none.
        assert_eq!(
            w.remotes.into_iter().collect::<Vec<_>>(),
            [(
                (Ipv4Addr::new(10, 244, 2, 0), 24),
                Ipv4Addr::new(10, 244, 2, 1)
            )]
        );
        assert_eq!(Want::from_nodes("x", nodes.iter()).local, None);
    }

    #[test]
    fn rule_and_names() {
        let w = Want::from_nodes("a", [node("a", &["10.244.1.0/24"])].iter());
        assert_eq!(
            w.rule("vsgw0").expect("rule").join(" "),
            "-s 10.244.1.0/24 ! -o vsgw0 -m comment --comment vswitch-agent-gateway -j MASQUERADE"
        );
        assert_eq!(Want::default().rule("vsgw0"), None);
        assert_eq!(
            gateway_mac(Ipv4Addr::new(10, 244, 1, 1)),
            [0x0a, 0x58, 10, 244, 1, 1]
        );
        assert_eq!(switch_end("vsgw0"), "vsgw0-sw");
        assert!(check_name("vsgw0").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("thirteen-char").is_err());
        assert!(check_name("a b").is_err());
    }

    #[test]
    fn handle_wakes_only_on_change() {
        let h = GatewayHandle::default();
        let (w, g) = h.wait(0, Duration::ZERO);
        assert_eq!((w, g), (Want::default(), 0));
        h.set(Want::default());
        assert_eq!(
            h.wait(0, Duration::ZERO).1,
            0,
            "same want: no new generation"
        );
        let w = Want::from_nodes("a", [node("a", &["10.244.1.0/24"])].iter());
        h.set(w.clone());
        assert_eq!(h.wait(0, Duration::from_secs(5)), (w, 1));
    }
}

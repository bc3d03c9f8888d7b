//! The node pipeline: what a LocalNode (and the cluster's other Nodes) turn into
//! in tables 0 CLASSIFIER, 5 SPOOF_GUARD, 30 L3_FORWARDING and 60 OUTPUT, all under
//! cookie [`layout::cookie::NODE`] (see docs/overlay.md for the flows).
//!
//! Flows are grouped by a sub-cookie (bits 32..48 of the cookie say which group,
//! the low 32 bits which member): the node base, one group per pod port, one per
//! remote node. Each realisation computes every group's flows, and only groups
//! whose flows differ from what is installed are replaced (delete by exact cookie,
//! add): adding, changing or removing a Node touches that node's flows only.
//!
//! Without a LocalNode nothing is installed: the switch stays the learning-bridge
//! skeleton.

use crate::desired::realize::{Change, RealizeCtx, Realizer};
use crate::flow::layout::{self, cookie, ct_label, port_kind, svc_flags};
use crate::flow::parse::{NoPortNames, parse_flow};
use crate::flow::spec::FlowFilter;
use crate::flow::tables::FlowMod;
use crate::overlay::neigh::{self, NeighCache};
use crate::overlay::vxlan::{self, TunnelConfig};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Instant;
use vswitch_proto::model::{DesiredState, Kind, Node, Object};
use vswitch_proto::validate::{Cidr, gateway_mac};
use vswitch_proto::{PortInfo, PortKind};

/// Overlay settings (`[overlay]` of the daemon configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverlayConfig {
    /// UDP destination port of VXLAN (4789; 8472 in flannel mode).
    pub port: u16,
    pub vni: u32,
}

impl Default for OverlayConfig {
    fn default() -> Self {
        OverlayConfig {
            port: vxlan::DEFAULT_PORT,
            vni: vxlan::DEFAULT_VNI,
        }
    }
}

impl OverlayConfig {
    /// flannel's vxlan backend: UDP 8472, VNI 1.
    pub fn flannel() -> OverlayConfig {
        OverlayConfig {
            port: vxlan::FLANNEL_PORT,
            vni: 1,
        }
    }
}

const GROUP_BASE: u64 = 0;
const GROUP_PORT: u64 = 1;
const GROUP_NODE: u64 = 2;

fn group_cookie(group: u64, member: u32) -> u64 {
    cookie::NODE | (group << 32) | u64::from(member)
}

fn mac_str(m: [u8; 6]) -> String {
    crate::wire::mac::MacAddr(m).to_string()
}

/// The settings of this node the flows need.
struct Local {
    node_ip: Ipv4Addr,
    gw_ip: Ipv4Addr,
    gw_mac: String,
}

fn v4(s: &str) -> Option<Ipv4Addr> {
    s.parse().ok()
}

fn v4_cidrs(list: &[String]) -> Vec<Cidr> {
    list.iter()
        .filter_map(|c| Cidr::parse(c).ok())
        .filter(|c| c.addr.is_ipv4())
        .collect()
}

/// A remote node as the flows see it.
struct Remote {
    ip: Ipv4Addr,
    cidrs: Vec<Cidr>,
    /// Inner destination MAC: the node's VTEP MAC (flannel's `VtepMAC`), else its
    /// gateway MAC (`0a:58:` + its gateway IPv4).
    vtep_mac: String,
    gw_ip: Option<Ipv4Addr>,
}

fn remote(n: &Node) -> Option<Remote> {
    // flannel's `public-ip` annotation names the tunnel endpoint when present (it
    // may differ from the InternalIP); else the first IPv4 InternalIP.
    let ip = n
        .vtep
        .as_ref()
        .and_then(|v| v.public_ip.as_deref())
        .and_then(v4)
        .or_else(|| n.internal_ips.iter().find_map(|s| v4(s)))?;
    let cidrs = v4_cidrs(&n.pod_cidrs);
    let gw_ip = cidrs
        .first()
        .and_then(|c| c.first_host())
        .and_then(|a| match a {
            std::net::IpAddr::V4(a) => Some(a),
            _ => None,
        });
    let vtep_mac = n
        .vtep
        .as_ref()
        .and_then(|v| v.mac.clone())
        .or_else(|| gw_ip.map(|g| gateway_mac(g.into())))?;
    Some(Remote {
        ip,
        cidrs,
        vtep_mac,
        gw_ip,
    })
}

/// `tp_dst` value/mask pairs that together match exactly `lo..=hi`.
fn port_masks(lo: u16, hi: u16) -> Vec<(u16, u16)> {
    let (mut lo, hi) = (u32::from(lo), u32::from(hi));
    let mut out = Vec::new();
    while lo <= hi {
        // The largest aligned block that starts at `lo` and ends by `hi`.
        let mut size = 1u32;
        while size < 0x1_0000 && lo % (size * 2) == 0 && lo + size * 2 - 1 <= hi {
            size *= 2;
        }
        out.push((lo as u16, (!(size - 1) & 0xffff) as u16));
        lo += size;
    }
    out
}

/// The node realizer.
pub struct NodeNetwork {
    cfg: OverlayConfig,
    /// The NodePort range the uplink takes (`[uplink] nodeport_range`).
    nodeports: Option<(u16, u16)>,
    /// Installed flows (texts) per cookie.
    installed: BTreeMap<u64, Vec<String>>,
    /// Stable ids of remote nodes (their cookies).
    ids: BTreeMap<String, u32>,
    next_id: u32,
    neigh: NeighCache,
    /// Read the host's neighbour table (false in unit tests).
    host_neigh: bool,
}

impl NodeNetwork {
    pub fn new(cfg: OverlayConfig) -> NodeNetwork {
        NodeNetwork {
            cfg,
            nodeports: crate::port::xdp_filter::FilterParams::default().nodeports,
            installed: BTreeMap::new(),
            ids: BTreeMap::new(),
            next_id: 1,
            neigh: NeighCache::default(),
            host_neigh: true,
        }
    }

    /// For tests: next hops come only from [`NodeNetwork::set_neighbour`].
    pub fn without_host_neighbours(mut self) -> NodeNetwork {
        self.host_neigh = false;
        self
    }

    pub fn set_neighbour(&mut self, ip: Ipv4Addr, mac: [u8; 6]) {
        self.neigh.confirm(ip, mac, Instant::now());
    }

    fn id(&mut self, name: &str) -> u32 {
        if let Some(i) = self.ids.get(name) {
            return *i;
        }
        let i = self.next_id;
        self.next_id += 1;
        self.ids.insert(name.to_string(), i);
        i
    }

    /// Every flow of the node pipeline, by cookie.
    fn desired(&mut self, state: &DesiredState, ports: &[PortInfo]) -> BTreeMap<u64, Vec<String>> {
        let mut out: BTreeMap<u64, Vec<String>> = BTreeMap::new();
        let Some(ln) = state.local_node() else {
            return out;
        };
        let gw_ip = ln.gateway_ips.iter().find_map(|s| v4(s));
        let node_ip = ln.node_ips.iter().find_map(|s| v4(s));
        let (Some(gw_ip), Some(node_ip), Some(gw_mac)) = (gw_ip, node_ip, ln.gateway_mac.clone())
        else {
            tracing::warn!(node = %ln.name, "local node without IPv4 gateway, node IP or gateway MAC: no node pipeline");
            return out;
        };
        let local = Local {
            node_ip,
            gw_ip,
            gw_mac,
        };
        let uplink = ports
            .iter()
            .find(|p| p.kind == PortKind::Uplink || ln.uplink.as_deref() == Some(&p.name));
        let gateway = ports.iter().find(|p| p.kind == PortKind::Gateway);
        let (t0, t5, t10, t30, t40, t60) = (
            layout::CLASSIFIER,
            layout::SPOOF_GUARD,
            layout::CT_ZONE,
            layout::L3_FORWARDING,
            layout::INGRESS_POLICY,
            layout::OUTPUT,
        );
        let base = group_cookie(GROUP_BASE, 0);
        let gm = &local.gw_mac;
        let gi = local.gw_ip;
        let mut b = vec![
            // Unknown ports: dropped (no packet bypasses policy before its port's flows).
            format!("table={t0},priority=1,actions=drop"),
            // The gateway answers ARP and ping for itself.
            format!(
                "table={t0},priority=300,arp,arp_op=1,arp_tpa={gi} actions=punt:arp_responder({gm})"
            ),
            format!(
                "table={t0},priority=300,icmp,icmp_type=8,nw_dst={gi} actions=punt:icmp_echo_reply"
            ),
            // IP with no route (no gateway port): dropped, never bridged.
            format!("table={t30},priority=1,ip actions=drop"),
            // Pods may send only from their own addresses (per-port flows below).
            format!(
                "table={t5},priority=100,reg0={} actions=drop",
                port_kind::POD
            ),
        ];
        if let Some(g) = gateway {
            let n = g.port_no;
            b.push(format!(
                "table={t0},priority=100,in_port={n} actions=load:{}->reg0,goto_table:{t5}",
                port_kind::GATEWAY
            ));
            // Default route: everything not for a pod goes to the host.
            b.push(format!(
                "table={t30},priority=10,ip actions=load:{n}->reg1,goto_table:{t40}"
            ));
            b.push(format!(
                "table={t60},priority=100,reg1={n} actions=output:{n}"
            ));
        }
        if let Some(u) = uplink {
            let n = u.port_no;
            let port = self.cfg.port;
            // VXLAN from no known node: dropped, counted on this flow.
            b.push(format!(
                "table={t0},priority=150,in_port={n},udp,nw_dst={},tp_dst={port} actions=drop",
                local.node_ip
            ));
            // Anything else on the uplink belongs to the host.
            b.push(format!("table={t0},priority=100,in_port={n} actions=drop"));
            // Tunnel traffic to an unresolved next hop: dropped, never bridged.
            b.push(format!("table={t60},priority=100,reg1={n} actions=drop"));
            // NodePort from outside the node: TCP/UDP to a node IP in the NodePort
            // range enters the service pipeline marked UPLINK_IN (service_lb then
            // SNATs under externalTrafficPolicy Cluster and records the client's
            // MAC in the connection's label); what no service took is dropped in
            // table 30, never handed to the host through the gateway.
            if let Some((lo, hi)) = self.nodeports {
                let fl = svc_flags::UPLINK_IN;
                for ip in ln.node_ips.iter().filter_map(|s| v4(s)) {
                    for proto in ["tcp", "udp"] {
                        for (v, m) in port_masks(lo, hi) {
                            b.push(format!(
                                "table={t0},priority=120,in_port={n},{proto},nw_dst={ip},tp_dst={v}/{m:#x} actions=load:{}->reg0,set_field:{fl:#x}/{fl:#x}->reg4,goto_table:{t5}",
                                port_kind::UPLINK
                            ));
                        }
                    }
                }
                b.push(format!(
                    "table={t30},priority=100,reg0={} actions=drop",
                    port_kind::UPLINK
                ));
                // Replies of those connections (after reverse NAT: from the node
                // IP and NodePort to the client) go back out of the uplink to the
                // MAC the request came from, never into the host.
                let via = ct_label::VIA_UPLINK;
                let out = svc_flags::UPLINK_OUT;
                b.push(format!(
                    "table={t30},priority=250,ip,ct_state=+trk+rpl,ct_label={via:#x}/{via:#x} actions=move:ct_label[0..47]->eth_dst,set_field:{}->eth_src,dec_ttl,set_field:{out:#x}/{out:#x}->reg4,load:{n}->reg1,goto_table:{t40}",
                    u.mac
                ));
                b.push(format!(
                    "table={t60},priority=150,reg1={n},reg4={out:#x}/{out:#x} actions=output:{n}"
                ));
            }
        }
        out.insert(base, b);

        // Pod ports.
        for p in ports.iter().filter(|p| p.kind == PortKind::Pod) {
            let Some(r) = &p.pod else { continue };
            let Some(pod) = state.pod(&r.namespace, &r.name) else {
                continue;
            };
            let n = p.port_no;
            let c = group_cookie(GROUP_PORT, n);
            let mut f = vec![format!(
                "table={t0},priority=100,in_port={n} actions=load:{}->reg0,goto_table:{t5}",
                port_kind::POD
            )];
            for ip in pod.ips.iter().filter_map(|s| v4(s)) {
                let mac = pod.mac.clone().unwrap_or_else(|| gateway_mac(ip.into()));
                f.push(format!(
                    "table={t5},priority=200,in_port={n},ip,dl_src={mac},nw_src={ip} actions=goto_table:{t10}"
                ));
                f.push(format!(
                    "table={t5},priority=200,in_port={n},arp,arp_sha={mac},arp_spa={ip} actions=goto_table:{t10}"
                ));
                // Routed (to the gateway MAC, or from a tunnel): rewrite MACs.
                f.push(format!(
                    "table={t30},priority=200,ip,dl_dst={gm},nw_dst={ip} actions=set_field:{gm}->eth_src,set_field:{mac}->eth_dst,dec_ttl,load:{n}->reg1,goto_table:{t40}"
                ));
                // Same subnet, switched.
                f.push(format!(
                    "table={t30},priority=190,ip,nw_dst={ip} actions=load:{n}->reg1,goto_table:{t40}"
                ));
            }
            f.push(format!(
                "table={t60},priority=100,reg1={n} actions=output:{n}"
            ));
            out.insert(c, f);
        }

        // Remote nodes.
        let nodes: Vec<Node> = state
            .of_kind(Kind::Node)
            .filter_map(|o| match o {
                Object::Node(n) if n.name != ln.name => Some(n.clone()),
                _ => None,
            })
            .collect();
        for node in nodes {
            let Some(r) = remote(&node) else { continue };
            let id = self.id(&node.name);
            let c = group_cookie(GROUP_NODE, id);
            let mut f = Vec::new();
            let ri = r.ip;
            let li = local.node_ip;
            let vni = self.cfg.vni;
            if let Some(u) = uplink {
                let un = u.port_no;
                let port = self.cfg.port;
                f.push(format!(
                    "table={t0},priority=200,in_port={un},udp,nw_src={ri},nw_dst={li},tp_dst={port} actions=load:{}->reg0,decap(table={t10})",
                    port_kind::TUNNEL
                ));
                for cidr in &r.cidrs {
                    f.push(format!(
                        "table={t30},priority=150,ip,nw_dst={}/{} actions=set_field:{gm}->eth_src,set_field:{}->eth_dst,dec_ttl,set_field:{vni}->tun_id,set_field:{li}->tun_src,set_field:{ri}->tun_dst,load:{un}->reg1,goto_table:{t40}",
                        cidr.network(),
                        cidr.prefix,
                        r.vtep_mac
                    ));
                }
                // Replies to that node's own address (a NodePort connection it
                // source-NATed to its node IP and tunnelled here) go back through
                // the tunnel, so they meet its conntrack again, rather than by our
                // default route to the host (which it would not recognise).
                f.push(format!(
                    "table={t30},priority=160,ip,ct_state=+trk+rpl,nw_dst={ri} actions=set_field:{gm}->eth_src,set_field:{}->eth_dst,dec_ttl,set_field:{vni}->tun_id,set_field:{li}->tun_src,set_field:{ri}->tun_dst,load:{un}->reg1,goto_table:{t40}",
                    r.vtep_mac
                ));
                if let Some(mac) = self.neigh.lookup(r.ip, Instant::now()) {
                    f.push(format!(
                        "table={t60},priority=200,reg1={un},tun_dst={ri} actions=encap(vxlan),set_field:{}->eth_src,set_field:{}->eth_dst,output:{un}",
                        u.mac,
                        mac_str(mac)
                    ));
                }
            }
            // The host reaches remote pods via the remote gateway, on-link on gw0.
            if let (Some(g), Some(rg)) = (gateway, r.gw_ip) {
                f.push(format!(
                    "table={t0},priority=300,in_port={},arp,arp_op=1,arp_tpa={rg} actions=punt:arp_responder({gm})",
                    g.port_no
                ));
            }
            out.insert(c, f);
        }
        out
    }

    /// Replaces the groups whose flows changed.
    fn sync(&mut self, state: &DesiredState, ctx: &mut RealizeCtx<'_>) {
        if let Some(dp) = ctx.dp.as_deref() {
            use crate::port::XdpProgram;
            self.nodeports = match &dp.config().uplink_xdp {
                XdpProgram::Filter(p)
                | XdpProgram::FilterOrAll(p)
                | XdpProgram::FilterFastPath(p, _) => p.nodeports,
                _ => crate::port::xdp_filter::FilterParams::default().nodeports,
            };
        }
        if let Some(ln) = state.local_node() {
            let mtu = ctx
                .ports
                .iter()
                .find(|p| p.kind == PortKind::Uplink || ln.uplink.as_deref() == Some(&p.name))
                .map_or(1500, |p| p.mtu);
            let gw_ip = ln
                .gateway_ips
                .iter()
                .find_map(|s| v4(s))
                .map_or(0, u32::from);
            let gw_mac = ln
                .gateway_mac
                .as_deref()
                .and_then(|m| m.parse::<crate::wire::mac::MacAddr>().ok())
                .map_or([0; 6], |m| m.0);
            if let Some(dp) = ctx.dp.as_deref_mut() {
                dp.tunnel().set(&TunnelConfig {
                    port: self.cfg.port,
                    vni: self.cfg.vni,
                    mtu,
                    gw_ip,
                    gw_mac,
                });
            }
        }
        let want = self.desired(state, ctx.ports);
        let mut mods = Vec::new();
        let mut changed = Vec::new();
        for c in self.installed.keys().filter(|c| !want.contains_key(c)) {
            changed.push(*c);
        }
        for (c, flows) in &want {
            if self.installed.get(c) != Some(flows) {
                changed.push(*c);
            }
        }
        if changed.is_empty() {
            return;
        }
        for c in &changed {
            mods.push(FlowMod::Delete(FlowFilter {
                cookie: Some((*c, u64::MAX)),
                ..FlowFilter::default()
            }));
            for text in want.get(c).into_iter().flatten() {
                match parse_flow(&format!("cookie={c:#x},{text}"), &NoPortNames) {
                    Ok(specs) => mods.extend(specs.into_iter().map(FlowMod::Add)),
                    Err(e) => tracing::error!(flow = %text, error = %e, "node flow does not parse"),
                }
            }
        }
        let Some(dp) = ctx.dp.as_deref_mut() else {
            self.installed = want;
            return;
        };
        match dp.flow_mods(mods) {
            Ok(o) => {
                tracing::info!(
                    groups = changed.len(),
                    added = o.added,
                    deleted = o.deleted,
                    "node flows updated"
                );
                self.installed = want;
            }
            Err(e) => tracing::error!(error = %e, "node flows refused"),
        }
    }

    /// Refreshes next hops from the host's neighbour table, solicits missing ones,
    /// expires old ones.
    fn refresh_neighbours(&mut self, state: &DesiredState, ports: &[PortInfo]) {
        let Some(ln) = state.local_node() else { return };
        let Some(up) = ports
            .iter()
            .find(|p| p.kind == PortKind::Uplink || ln.uplink.as_deref() == Some(&p.name))
        else {
            return;
        };
        let now = Instant::now();
        if self.host_neigh {
            for (ip, mac) in neigh::host_neighbours(&up.name) {
                self.neigh.confirm(ip, mac, now);
            }
        }
        for o in state.of_kind(Kind::Node) {
            let Object::Node(n) = o else { continue };
            if n.name == ln.name {
                continue;
            }
            if let Some(r) = remote(n)
                && self.host_neigh
                && self.neigh.lookup(r.ip, now).is_none()
            {
                let _ = neigh::solicit(neigh::next_hop(r.ip), &up.name);
            }
        }
        self.neigh.expire(now);
    }
}

impl Realizer for NodeNetwork {
    fn name(&self) -> &'static str {
        "node-network"
    }

    fn realize(&mut self, state: &DesiredState, change: &Change, ctx: &mut RealizeCtx<'_>) {
        if [Kind::LocalNode, Kind::Node, Kind::Pod]
            .iter()
            .any(|k| change.keys.touches(*k))
        {
            self.refresh_neighbours(state, ctx.ports);
            self.sync(state, ctx);
        }
    }

    fn port_changed(
        &mut self,
        state: &DesiredState,
        _port: &PortInfo,
        _added: bool,
        ctx: &mut RealizeCtx<'_>,
    ) {
        self.sync(state, ctx);
    }

    fn tick(&mut self, state: &DesiredState, ctx: &mut RealizeCtx<'_>) {
        self.refresh_neighbours(state, ctx.ports);
        self.sync(state, ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::port_masks;

    #[test]
    fn port_masks_match_exactly_the_range() {
        for (lo, hi) in [
            (30000, 32767),
            (1, 65535),
            (31000, 31010),
            (8, 8),
            (65535, 65535),
        ] {
            let m = port_masks(lo, hi);
            for p in 0..=u16::MAX {
                let hits = m.iter().filter(|(v, k)| p & k == *v).count();
                let want = usize::from((lo..=hi).contains(&p));
                assert_eq!(hits, want, "{lo}-{hi}: port {p} matched {hits} times");
            }
        }
        assert!(port_masks(30000, 32767).len() <= 16);
    }
}

//! Checks of desired-state objects, and the address parsing they rest on.
//!
//! The daemon runs [`validate`] on every object a sync brings; a failing object is
//! rejected with the message and the rest of the sync goes ahead. Messages name the
//! field, so that a person can find it in the Kubernetes object.

use crate::model::{
    Endpoints, LabelSelector, LocalNode, NetworkPolicy, Node, Object, Pod, PolicyPort, PortRef,
    Service,
};
use std::net::IpAddr;

/// An address with a prefix length, `10.244.1.0/24` or `fd00::/64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| format!("'{s}' is not a CIDR (ADDRESS/PREFIX)"))?;
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("'{s}': '{a}' is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = p
            .parse()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("'{s}': prefix '{p}' is not in 0..={max}"))?;
        Ok(Cidr { addr, prefix })
    }

    /// The network address (host bits cleared).
    pub fn network(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
        }
    }

    /// The first host address: the network address + 1 (the pod gateway by
    /// convention, as with flannel and Antrea). `None` for /31, /32, /127, /128.
    pub fn first_host(&self) -> Option<IpAddr> {
        match self.network() {
            IpAddr::V4(n) if self.prefix < 31 => Some(IpAddr::V4((u32::from(n) + 1).into())),
            IpAddr::V6(n) if self.prefix < 127 => Some(IpAddr::V6((u128::from(n) + 1).into())),
            _ => None,
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let other = Cidr {
            addr: ip,
            prefix: self.prefix,
        };
        ip.is_ipv4() == self.addr.is_ipv4() && other.network() == self.network()
    }
}

/// The gateway MAC the agent announces: `0a:58:` followed by the four bytes of an
/// IPv4 address (or the last four of an IPv6 one). Locally administered, unicast,
/// derived from the address so that every agent computes the same (the scheme
/// OVN-Kubernetes uses).
pub fn gateway_mac(ip: IpAddr) -> String {
    let b = match ip {
        IpAddr::V4(a) => a.octets(),
        IpAddr::V6(a) => {
            let o = a.octets();
            [o[12], o[13], o[14], o[15]]
        }
    };
    format!("0a:58:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3])
}

fn ip(field: &str, s: &str) -> Result<IpAddr, String> {
    s.parse()
        .map_err(|_| format!("{field}: '{s}' is not an IP address"))
}

fn cidr(field: &str, s: &str) -> Result<Cidr, String> {
    Cidr::parse(s).map_err(|e| format!("{field}: {e}"))
}

fn mac(field: &str, s: &str) -> Result<(), String> {
    let parts: Vec<&str> = s.split(':').collect();
    let ok = parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()));
    if ok {
        Ok(())
    } else {
        Err(format!("{field}: '{s}' is not a MAC address"))
    }
}

fn name(field: &str, s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 253 || s.contains('/') {
        return Err(format!(
            "{field}: '{s}' is not a valid name (1 to 253 characters, no '/')"
        ));
    }
    Ok(())
}

fn port(field: &str, p: i32) -> Result<(), String> {
    if (1..=65535).contains(&p) {
        Ok(())
    } else {
        Err(format!("{field}: {p} is not a port number (1..=65535)"))
    }
}

fn port_ref(field: &str, p: &PortRef) -> Result<(), String> {
    match p {
        PortRef::Number(n) => port(field, *n),
        // IANA_SVC_NAME: at most 15 characters.
        PortRef::Name(n) if !n.is_empty() && n.len() <= 15 => Ok(()),
        PortRef::Name(n) => Err(format!("{field}: '{n}' is not a port name")),
    }
}

/// Checks one object; the error says which field is wrong and why.
pub fn validate(obj: &Object) -> Result<(), String> {
    match obj {
        Object::LocalNode(n) => local_node(n),
        Object::Node(n) => node(n),
        Object::Namespace(n) => name("name", &n.name),
        Object::Pod(p) => pod(p),
        Object::Service(s) => service(s),
        Object::Endpoints(e) => endpoints(e),
        Object::NetworkPolicy(p) => policy(p),
    }
}

fn local_node(n: &LocalNode) -> Result<(), String> {
    name("name", &n.name)?;
    for c in &n.pod_cidrs {
        cidr("pod_cidrs", c)?;
    }
    for a in &n.node_ips {
        ip("node_ips", a)?;
    }
    for a in &n.gateway_ips {
        ip("gateway_ips", a)?;
    }
    if let Some(m) = &n.gateway_mac {
        mac("gateway_mac", m)?;
    }
    Ok(())
}

fn node(n: &Node) -> Result<(), String> {
    name("name", &n.name)?;
    for c in &n.pod_cidrs {
        cidr("pod_cidrs", c)?;
    }
    for a in &n.internal_ips {
        ip("internal_ips", a)?;
    }
    if let Some(v) = &n.vtep {
        if let Some(m) = &v.mac {
            mac("vtep.mac", m)?;
        }
        if let Some(a) = &v.public_ip {
            ip("vtep.public_ip", a)?;
        }
    }
    Ok(())
}

fn pod(p: &Pod) -> Result<(), String> {
    name("namespace", &p.namespace)?;
    name("name", &p.name)?;
    for a in &p.ips {
        ip("ips", a)?;
    }
    if let Some(m) = &p.mac {
        mac("mac", m)?;
    }
    for cp in &p.ports {
        port(&format!("ports[{}].port", cp.name), cp.port)?;
    }
    Ok(())
}

fn service(s: &Service) -> Result<(), String> {
    name("namespace", &s.namespace)?;
    name("name", &s.name)?;
    for a in &s.cluster_ips {
        ip("cluster_ips", a)?;
    }
    for a in &s.external_ips {
        ip("external_ips", a)?;
    }
    for a in &s.load_balancer_ips {
        ip("load_balancer_ips", a)?;
    }
    for (i, sp) in s.ports.iter().enumerate() {
        port(&format!("ports[{i}].port"), sp.port)?;
        if let Some(t) = &sp.target_port {
            port_ref(&format!("ports[{i}].target_port"), t)?;
        }
        if let Some(n) = sp.node_port {
            port(&format!("ports[{i}].node_port"), n)?;
        }
    }
    if let Some(t) = s.session_affinity_timeout
        && !(1..=86400).contains(&t)
    {
        return Err(format!(
            "session_affinity_timeout: {t} is not in 1..=86400 seconds"
        ));
    }
    Ok(())
}

fn endpoints(e: &Endpoints) -> Result<(), String> {
    name("namespace", &e.namespace)?;
    name("name", &e.name)?;
    for (i, ep) in e.endpoints.iter().enumerate() {
        for a in &ep.addresses {
            ip(&format!("endpoints[{i}].addresses"), a)?;
        }
        for p in &ep.ports {
            port(&format!("endpoints[{i}].ports"), p.port)?;
        }
    }
    Ok(())
}

fn selector(field: &str, s: &LabelSelector) -> Result<(), String> {
    for r in &s.match_expressions {
        match (r.operator.as_str(), r.values.is_empty()) {
            ("In" | "NotIn", false) | ("Exists" | "DoesNotExist", true) => {}
            ("In" | "NotIn", true) => {
                return Err(format!(
                    "{field}: operator {} on '{}' needs values",
                    r.operator, r.key
                ));
            }
            ("Exists" | "DoesNotExist", false) => {
                return Err(format!(
                    "{field}: operator {} on '{}' takes no values",
                    r.operator, r.key
                ));
            }
            (op, _) => {
                return Err(format!(
                    "{field}: unknown operator '{op}' (expected In, NotIn, Exists or DoesNotExist)"
                ));
            }
        }
    }
    Ok(())
}

fn policy_port(field: &str, p: &PolicyPort) -> Result<(), String> {
    if let Some(pr) = &p.port {
        port_ref(field, pr)?;
    }
    match (&p.port, p.end_port) {
        (_, None) => Ok(()),
        (Some(PortRef::Number(start)), Some(end)) if end >= *start && end <= 65535 => Ok(()),
        (Some(PortRef::Number(start)), Some(end)) => {
            Err(format!("{field}: endPort {end} must be in {start}..=65535"))
        }
        (_, Some(_)) => Err(format!("{field}: endPort needs a numeric port")),
    }
}

fn policy(p: &NetworkPolicy) -> Result<(), String> {
    name("namespace", &p.namespace)?;
    name("name", &p.name)?;
    let s = &p.spec;
    selector("spec.podSelector", &s.pod_selector)?;
    let peers = s
        .ingress
        .iter()
        .enumerate()
        .flat_map(|(i, r)| {
            r.from
                .iter()
                .map(move |p| (format!("spec.ingress[{i}].from"), p))
        })
        .chain(s.egress.iter().enumerate().flat_map(|(i, r)| {
            r.to.iter()
                .map(move |p| (format!("spec.egress[{i}].to"), p))
        }));
    for (field, peer) in peers {
        if let Some(sel) = &peer.pod_selector {
            selector(&format!("{field}.podSelector"), sel)?;
        }
        if let Some(sel) = &peer.namespace_selector {
            selector(&format!("{field}.namespaceSelector"), sel)?;
        }
        if let Some(b) = &peer.ip_block {
            if peer.pod_selector.is_some() || peer.namespace_selector.is_some() {
                return Err(format!(
                    "{field}: ipBlock cannot be combined with a selector"
                ));
            }
            let c = cidr(&format!("{field}.ipBlock.cidr"), &b.cidr)?;
            for e in &b.except {
                let x = cidr(&format!("{field}.ipBlock.except"), e)?;
                if !c.contains(x.addr) || x.prefix < c.prefix {
                    return Err(format!(
                        "{field}.ipBlock.except: {e} is not inside {}",
                        b.cidr
                    ));
                }
            }
        }
    }
    let ports = s
        .ingress
        .iter()
        .enumerate()
        .flat_map(|(i, r)| {
            r.ports
                .iter()
                .map(move |p| (format!("spec.ingress[{i}].ports"), p))
        })
        .chain(s.egress.iter().enumerate().flat_map(|(i, r)| {
            r.ports
                .iter()
                .map(move |p| (format!("spec.egress[{i}].ports"), p))
        }));
    for (field, p) in ports {
        policy_port(&field, p)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;

    #[test]
    fn cidrs_and_gateways() {
        let c = Cidr::parse("10.244.1.7/24").expect("cidr");
        assert_eq!(c.network().to_string(), "10.244.1.0");
        assert_eq!(
            c.first_host().map(|a| a.to_string()).as_deref(),
            Some("10.244.1.1")
        );
        assert!(c.contains("10.244.1.200".parse().expect("ip")));
        assert!(!c.contains("10.244.2.1".parse().expect("ip")));
        let c6 = Cidr::parse("fd00:10:244:1::/64").expect("v6");
        assert_eq!(
            c6.first_host().map(|a| a.to_string()).as_deref(),
            Some("fd00:10:244:1::1")
        );
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("10.0.0.0").is_err());
        assert!(Cidr::parse("x/8").is_err());
        assert_eq!(Cidr::parse("0.0.0.0/0").expect("any").prefix, 0);
        assert_eq!(
            gateway_mac("10.244.1.1".parse().expect("ip")),
            "0a:58:0a:f4:01:01"
        );
    }

    fn policy_with(peer: PolicyPeer, port: PolicyPort) -> Object {
        Object::NetworkPolicy(NetworkPolicy {
            namespace: "default".into(),
            name: "p".into(),
            spec: NetworkPolicySpec {
                ingress: vec![IngressRule {
                    from: vec![peer],
                    ports: vec![port],
                }],
                ..Default::default()
            },
        })
    }

    #[test]
    fn bad_objects_are_named_precisely() {
        let e = validate(&Object::Pod(Pod {
            namespace: "default".into(),
            name: "x".into(),
            uid: String::new(),
            labels: Default::default(),
            ips: vec!["10.0.0.300".into()],
            mac: None,
            node_name: None,
            local: false,
            host_network: false,
            phase: None,
            host_ifname: None,
            ports: vec![],
        }))
        .expect_err("bad ip");
        assert_eq!(e, "ips: '10.0.0.300' is not an IP address");

        let ok_peer = PolicyPeer {
            ip_block: Some(IpBlock {
                cidr: "10.0.0.0/8".into(),
                except: vec!["10.1.0.0/16".into()],
            }),
            ..Default::default()
        };
        assert!(validate(&policy_with(ok_peer.clone(), PolicyPort::default())).is_ok());
        let bad_except = PolicyPeer {
            ip_block: Some(IpBlock {
                cidr: "10.0.0.0/8".into(),
                except: vec!["192.168.0.0/16".into()],
            }),
            ..Default::default()
        };
        assert!(
            validate(&policy_with(bad_except, PolicyPort::default()))
                .expect_err("except")
                .contains("not inside")
        );
        let bad_op = PolicyPeer {
            pod_selector: Some(LabelSelector {
                match_expressions: vec![LabelSelectorRequirement {
                    key: "a".into(),
                    operator: "Maybe".into(),
                    values: vec![],
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(
            validate(&policy_with(bad_op, PolicyPort::default()))
                .expect_err("op")
                .contains("unknown operator 'Maybe'")
        );
        let end_before_start = PolicyPort {
            protocol: None,
            port: Some(PortRef::Number(100)),
            end_port: Some(90),
        };
        assert!(validate(&policy_with(ok_peer.clone(), end_before_start)).is_err());
        let end_with_name = PolicyPort {
            protocol: None,
            port: Some(PortRef::Name("http".into())),
            end_port: Some(90),
        };
        assert!(validate(&policy_with(ok_peer, end_with_name)).is_err());
    }
}

//! Publishing our node the way flannel's vxlan backend publishes its nodes, so
//! that flannel nodes sharing the cluster (a migration) reach our pods.
//!
//! flannel (with `kube-subnet-manager`) reads each Node's annotations
//! `flannel.alpha.coreos.com/backend-type`, `backend-data` (`{"VNI":1,"VtepMAC":..}`)
//! and `public-ip`, and for every node with them installs an FDB entry (VtepMAC →
//! public-ip), a permanent neighbour (the node's subnet address → VtepMAC) and an
//! onlink route to its pod CIDR. In `--overlay flannel` mode the agent (Kubernetes
//! source) writes these annotations on its own Node, with our VTEP MAC (the gateway
//! MAC, `0a:58:` + gateway IPv4) and our tunnel endpoint (the first IPv4
//! InternalIP), as a JSON merge patch — only when they differ from what the Node
//! carries, so the Node update the patch causes does not cause another patch.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde_json::{Value, json};
use vswitch_proto::model::Node;
use vswitch_proto::validate::{Cidr, gateway_mac};

pub const BACKEND_TYPE: &str = "flannel.alpha.coreos.com/backend-type";
pub const BACKEND_DATA: &str = "flannel.alpha.coreos.com/backend-data";
pub const PUBLIC_IP: &str = "flannel.alpha.coreos.com/public-ip";
pub const KUBE_SUBNET_MANAGER: &str = "flannel.alpha.coreos.com/kube-subnet-manager";

/// flannel's VNI (its vxlan backend's default, and what our flannel mode speaks).
pub const VNI: u32 = 1;

/// The annotations our Node must carry, from its translation: `None` while it has
/// no IPv4 pod CIDR or no IPv4 InternalIP (nothing true to publish yet).
pub fn own_annotations(node: &Node) -> Option<BTreeMap<String, String>> {
    let gw = node
        .pod_cidrs
        .iter()
        .filter_map(|c| Cidr::parse(c).ok())
        .filter(|c| c.addr.is_ipv4())
        .find_map(|c| c.first_host())?;
    let public_ip = node
        .internal_ips
        .iter()
        .find_map(|s| s.parse::<Ipv4Addr>().ok())?;
    let data = json!({"VNI": VNI, "VtepMAC": gateway_mac(gw)});
    Some(BTreeMap::from([
        (BACKEND_TYPE.to_string(), "vxlan".to_string()),
        (BACKEND_DATA.to_string(), data.to_string()),
        (PUBLIC_IP.to_string(), public_ip.to_string()),
        (KUBE_SUBNET_MANAGER.to_string(), "true".to_string()),
    ]))
}

/// The merge patch that makes `current` (the Node's flannel annotations) carry
/// `want`, or `None` when it does already. Other annotations are not touched.
pub fn patch(current: &BTreeMap<String, String>, want: &BTreeMap<String, String>) -> Option<Value> {
    let diff: serde_json::Map<String, Value> = want
        .iter()
        .filter(|(k, v)| current.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    (!diff.is_empty()).then(|| json!({"metadata": {"annotations": diff}}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(cidrs: &[&str], ips: &[&str]) -> Node {
        Node {
            name: "node-a".into(),
            pod_cidrs: cidrs.iter().map(|s| s.to_string()).collect(),
            internal_ips: ips.iter().map(|s| s.to_string()).collect(),
            vtep: None,
            labels: Default::default(),
        }
    }

    #[test]
    fn annotations_of_our_node() {
        let a = own_annotations(&node(
            &["fd00::/64", "10.244.1.0/24"],
            &["fd00::1", "192.0.2.1"],
        ))
        .expect("annotations");
        assert_eq!(a[BACKEND_TYPE], "vxlan");
        assert_eq!(a[PUBLIC_IP], "192.0.2.1");
        assert_eq!(a[KUBE_SUBNET_MANAGER], "true");
        let data: Value = serde_json::from_str(&a[BACKEND_DATA]).expect("json");
        assert_eq!(data, json!({"VNI": 1, "VtepMAC": "0a:58:0a:f4:01:01"}));
        assert_eq!(own_annotations(&node(&[], &["192.0.2.1"])), None);
        assert_eq!(own_annotations(&node(&["10.244.1.0/24"], &[])), None);
        assert_eq!(
            own_annotations(&node(&["10.244.1.0/24"], &["fd00::1"])),
            None
        );
    }

    #[test]
    fn patch_only_what_differs() {
        let want = own_annotations(&node(&["10.244.1.0/24"], &["192.0.2.1"])).expect("want");
        let p = patch(&BTreeMap::new(), &want).expect("patch");
        assert_eq!(
            p["metadata"]["annotations"].as_object().map(|m| m.len()),
            Some(4)
        );
        assert_eq!(patch(&want, &want), None, "nothing to do");
        let mut stale = want.clone();
        stale.insert(PUBLIC_IP.into(), "192.0.2.9".into());
        stale.insert(
            "flannel.alpha.coreos.com/backend-v6-data".into(),
            "x".into(),
        );
        assert_eq!(
            patch(&stale, &want),
            Some(json!({"metadata": {"annotations": {PUBLIC_IP: "192.0.2.1"}}}))
        );
    }
}

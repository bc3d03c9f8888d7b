//! The agent's picture of the cluster: every watched object, translated, and the
//! [`DesiredState`] built from it for the daemon.
//!
//! Objects are translated when they arrive; a translation error keeps the last good
//! translation of that object (a broken update does not delete what works). The
//! desired state is rebuilt from the whole picture on each sync, which keeps the
//! derived objects (per-service endpoints, this node's LocalNode) simple and right;
//! the syncer then sends only the difference.

use crate::agent::kobj::{KubeKey, KubeKind, KubeObject};
use crate::agent::translate::{Translated, translate};
use std::collections::BTreeMap;
use vswitch_proto::model::{Endpoints, LocalNode, Object};
use vswitch_proto::validate::{Cidr, gateway_mac};
use vswitch_proto::{DesiredState, Kind, ObjectKey};

/// The node-level settings that do not come from the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeSettings {
    /// `--node-name`: whose Node object gives LocalNode, which pods are local.
    pub node_name: String,
    /// `--uplink`.
    pub uplink: Option<String>,
    /// `--overlay`: which overlay vswitchd speaks (in `flannel` mode the
    /// Kubernetes source publishes flannel's annotations on our Node).
    pub overlay: OverlayMode,
}

/// The overlay mode of the node's vswitchd (`[overlay] mode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OverlayMode {
    #[default]
    Vxlan,
    /// flannel's vxlan backend on the wire; our Node carries flannel's annotations.
    Flannel,
}

impl std::str::FromStr for OverlayMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "vxlan" => Ok(OverlayMode::Vxlan),
            "flannel" => Ok(OverlayMode::Flannel),
            other => Err(format!("overlay mode {other:?}: vxlan or flannel")),
        }
    }
}

#[derive(Debug, Default)]
pub struct Cluster {
    settings: NodeSettings,
    items: BTreeMap<KubeKey, Translated>,
}

impl Cluster {
    pub fn new(settings: NodeSettings) -> Cluster {
        Cluster {
            settings,
            items: BTreeMap::new(),
        }
    }

    /// Adds or replaces an object. An object that does not translate is reported
    /// and its previous translation, if any, stays.
    pub fn apply(&mut self, obj: &KubeObject) -> Result<(), String> {
        let key = obj.key();
        match translate(obj, &self.settings.node_name) {
            Ok(t) => {
                self.items.insert(key, t);
                Ok(())
            }
            Err(e) => Err(format!("{key}: {e}")),
        }
    }

    pub fn delete(&mut self, key: &KubeKey) {
        self.items.remove(key);
    }

    /// Replaces every object of `kind` with `objs` (a relist). Translation errors
    /// are returned; those objects keep their last good translation.
    pub fn replace_kind(&mut self, kind: KubeKind, objs: &[KubeObject]) -> Vec<String> {
        let keep: std::collections::BTreeSet<KubeKey> = objs.iter().map(KubeObject::key).collect();
        self.items.retain(|k, _| k.kind != kind || keep.contains(k));
        objs.iter().filter_map(|o| self.apply(o).err()).collect()
    }

    /// Replaces everything (a manifest re-read). Objects not in `objs` go.
    pub fn replace_all(&mut self, objs: &[KubeObject]) -> Vec<String> {
        let mut errors = Vec::new();
        for kind in KubeKind::ALL {
            let of_kind: Vec<KubeObject> =
                objs.iter().filter(|o| o.kind() == kind).cloned().collect();
            errors.extend(self.replace_kind(kind, &of_kind));
        }
        errors
    }

    /// This node's Node object, translated (if it has been seen).
    pub fn own_node(&self) -> Option<&vswitch_proto::model::Node> {
        let key = KubeKey {
            kind: KubeKind::Node,
            namespace: String::new(),
            name: self.settings.node_name.clone(),
        };
        match self.items.get(&key) {
            Some(Translated::Object(Object::Node(n))) => Some(n),
            _ => None,
        }
    }

    pub fn settings(&self) -> &NodeSettings {
        &self.settings
    }

    /// Objects held, per kind.
    pub fn counts(&self) -> BTreeMap<KubeKind, usize> {
        let mut c: BTreeMap<KubeKind, usize> = KubeKind::ALL.iter().map(|k| (*k, 0)).collect();
        for k in self.items.keys() {
            *c.entry(k.kind).or_default() += 1;
        }
        c
    }

    /// The desired state for the daemon.
    pub fn build(&self) -> DesiredState {
        let mut state = DesiredState::new();
        let mut endpoints: BTreeMap<(String, String), Endpoints> = BTreeMap::new();
        for t in self.items.values() {
            match t {
                Translated::Object(o) => {
                    state.upsert(o.clone());
                }
                Translated::Slice(s) => {
                    endpoints
                        .entry((s.namespace.clone(), s.service.clone()))
                        .or_insert_with(|| Endpoints {
                            namespace: s.namespace.clone(),
                            name: s.service.clone(),
                            endpoints: Vec::new(),
                        })
                        .endpoints
                        .extend(s.endpoints.iter().cloned());
                }
                Translated::Ignored(_) => {}
            }
        }
        for (_, mut e) in endpoints {
            // Slices come and go independently: a stable order keeps diffs quiet.
            e.endpoints.sort();
            state.upsert(Object::Endpoints(e));
        }
        if let Some(local) = self.local_node(&state) {
            state.upsert(Object::LocalNode(local));
        }
        state
    }

    /// This node's settings from its Node object; `None` until that object is seen.
    fn local_node(&self, state: &DesiredState) -> Option<LocalNode> {
        let key = ObjectKey::cluster(Kind::Node, &self.settings.node_name);
        let Some(Object::Node(n)) = state.get(&key) else {
            return None;
        };
        let gateway_ips: Vec<std::net::IpAddr> = n
            .pod_cidrs
            .iter()
            .filter_map(|c| Cidr::parse(c).ok()?.first_host())
            .collect();
        // The MAC follows the IPv4 gateway when there is one (dual-stack nodes).
        let mac_source = gateway_ips
            .iter()
            .find(|ip| ip.is_ipv4())
            .or(gateway_ips.first());
        Some(LocalNode {
            name: n.name.clone(),
            pod_cidrs: n.pod_cidrs.clone(),
            node_ips: n.internal_ips.clone(),
            gateway_ips: gateway_ips.iter().map(ToString::to_string).collect(),
            gateway_mac: mac_source.map(|ip| gateway_mac(*ip)),
            uplink: self.settings.uplink.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::kobj::{Parsed, parse_value};
    use serde_json::json;

    fn obj(v: serde_json::Value) -> KubeObject {
        match parse_value(v).expect("parse").pop() {
            Some(Parsed::Object(o)) => o,
            other => panic!("{other:?}"),
        }
    }

    fn slice(name: &str, ip: &str) -> KubeObject {
        obj(
            json!({"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice",
            "metadata":{"name":name,"namespace":"default","labels":{"kubernetes.io/service-name":"web"}},
            "addressType":"IPv4","endpoints":[{"addresses":[ip]}],"ports":[{"port":80}]}),
        )
    }

    fn cluster() -> Cluster {
        Cluster::new(NodeSettings {
            node_name: "node-a".into(),
            uplink: Some("eth1".into()),
            overlay: OverlayMode::Vxlan,
        })
    }

    #[test]
    fn local_node_from_own_node_object() {
        let mut c = cluster();
        assert!(c.build().local_node().is_none());
        c.apply(&obj(
            json!({"apiVersion":"v1","kind":"Node","metadata":{"name":"node-a"},
            "spec":{"podCIDRs":["10.244.1.0/24","fd00:1::/64"]},
            "status":{"addresses":[{"type":"InternalIP","address":"192.0.2.1"}]}}),
        ))
        .expect("node");
        c.apply(&obj(
            json!({"apiVersion":"v1","kind":"Node","metadata":{"name":"node-b"},
            "spec":{"podCIDR":"10.244.2.0/24"}}),
        ))
        .expect("node b");
        let s = c.build();
        let l = s.local_node().expect("local");
        assert_eq!(l.gateway_ips, ["10.244.1.1", "fd00:1::1"]);
        assert_eq!(l.gateway_mac.as_deref(), Some("0a:58:0a:f4:01:01"));
        assert_eq!(l.node_ips, ["192.0.2.1"]);
        assert_eq!(l.uplink.as_deref(), Some("eth1"));
        assert_eq!(s.of_kind(Kind::Node).count(), 2);
    }

    #[test]
    fn slices_merge_per_service_and_relist_replaces() {
        let mut c = cluster();
        c.replace_kind(
            KubeKind::EndpointSlice,
            &[slice("web-2", "10.0.0.2"), slice("web-1", "10.0.0.1")],
        );
        let s = c.build();
        let Some(Object::Endpoints(e)) = s.get(&ObjectKey::new(Kind::Endpoints, "default", "web"))
        else {
            panic!("endpoints")
        };
        let ips: Vec<_> = e
            .endpoints
            .iter()
            .map(|e| e.addresses[0].as_str())
            .collect();
        assert_eq!(ips, ["10.0.0.1", "10.0.0.2"]);
        c.replace_kind(KubeKind::EndpointSlice, &[slice("web-2", "10.0.0.2")]);
        let s = c.build();
        let Some(Object::Endpoints(e)) = s.get(&ObjectKey::new(Kind::Endpoints, "default", "web"))
        else {
            panic!("endpoints")
        };
        assert_eq!(e.endpoints.len(), 1);
        c.replace_kind(KubeKind::EndpointSlice, &[]);
        assert_eq!(c.build().of_kind(Kind::Endpoints).count(), 0);
    }

    #[test]
    fn bad_update_keeps_last_good_translation() {
        let mut c = cluster();
        let good = obj(
            json!({"apiVersion":"v1","kind":"Service","metadata":{"name":"s"},
            "spec":{"ports":[{"port":80}]}}),
        );
        c.apply(&good).expect("good");
        let bad = obj(
            json!({"apiVersion":"v1","kind":"Service","metadata":{"name":"s"},
            "spec":{"type":"Weird","ports":[{"port":81}]}}),
        );
        let e = c.apply(&bad).expect_err("bad");
        assert!(
            e.contains("Service default/s") && e.contains("Weird"),
            "{e}"
        );
        let s = c.build();
        let Some(Object::Service(svc)) = s.get(&ObjectKey::new(Kind::Service, "default", "s"))
        else {
            panic!("kept")
        };
        assert_eq!(svc.ports[0].port, 80);
    }
}

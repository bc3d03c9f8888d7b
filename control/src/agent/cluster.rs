//! The agent's picture of the cluster: every watched object, translated, and the
//! [`DesiredState`] built from it for the daemon.
//!
//! Objects are translated when they arrive; a translation error keeps the last good
//! translation of that object (a broken update does not delete what works).
//!
//! Changes are incremental: each [`apply`](Cluster::apply) or
//! [`delete`](Cluster::delete) marks the desired-state keys it can affect (the
//! object's own; for an EndpointSlice its service's Endpoints; for our own Node the
//! LocalNode), and [`take_changes`](Cluster::take_changes) derives just those keys
//! again — a Service change costs one object, an EndpointSlice change the slices of
//! its one service, whatever the cluster holds. [`build`](Cluster::build) derives
//! everything from scratch (`vsctl apply`, and the tests' reference for the
//! incremental path).

use crate::agent::kobj::{KubeKey, KubeKind, KubeObject};
use crate::agent::translate::{Translated, translate};
use std::collections::{BTreeMap, BTreeSet};
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

/// A desired-state key and what it holds now (`None`: it is gone).
pub type StateChange = (ObjectKey, Option<Object>);

#[derive(Debug, Default)]
pub struct Cluster {
    settings: NodeSettings,
    items: BTreeMap<KubeKey, Translated>,
    /// Which Kubernetes object each plain (non-derived) model object came from.
    objects: BTreeMap<ObjectKey, KubeKey>,
    /// The EndpointSlices of each service (namespace, name).
    slices: BTreeMap<(String, String), BTreeSet<KubeKey>>,
    /// Objects held per kind.
    counts: BTreeMap<KubeKind, usize>,
    /// Desired-state keys to derive again.
    dirty: BTreeSet<ObjectKey>,
}

impl Cluster {
    pub fn new(settings: NodeSettings) -> Cluster {
        Cluster {
            settings,
            counts: KubeKind::ALL.iter().map(|k| (*k, 0)).collect(),
            ..Cluster::default()
        }
    }

    /// Adds or replaces an object. An object that does not translate is reported
    /// and its previous translation, if any, stays.
    pub fn apply(&mut self, obj: &KubeObject) -> Result<(), String> {
        let key = obj.key();
        match translate(obj, &self.settings.node_name) {
            Ok(t) => {
                self.touch(&key, &t, true);
                if let Some(old) = self.items.insert(key.clone(), t) {
                    self.touch(&key, &old, false);
                } else {
                    *self.counts.entry(key.kind).or_default() += 1;
                }
                Ok(())
            }
            Err(e) => Err(format!("{key}: {e}")),
        }
    }

    pub fn delete(&mut self, key: &KubeKey) {
        if let Some(old) = self.items.remove(key) {
            self.touch(key, &old, false);
            if let Some(n) = self.counts.get_mut(&key.kind) {
                *n = n.saturating_sub(1);
            }
        }
    }

    /// Marks what `t` (the translation of `key`, arriving or leaving) derives
    /// and keeps the indexes in step.
    fn touch(&mut self, key: &KubeKey, t: &Translated, arriving: bool) {
        match t {
            Translated::Object(o) => {
                let ok = o.key();
                if arriving {
                    self.objects.insert(ok.clone(), key.clone());
                } else if self.objects.get(&ok) == Some(key) && !self.still_maps(key, &ok) {
                    self.objects.remove(&ok);
                }
                if let Object::Node(n) = o
                    && n.name == self.settings.node_name
                {
                    self.dirty
                        .insert(ObjectKey::cluster(Kind::LocalNode, &n.name));
                }
                self.dirty.insert(ok);
            }
            Translated::Slice(s) => {
                let svc = (s.namespace.clone(), s.service.clone());
                if arriving {
                    self.slices.entry(svc).or_default().insert(key.clone());
                } else if !self.still_slice_of(key, &svc)
                    && let Some(set) = self.slices.get_mut(&svc)
                {
                    set.remove(key);
                    if set.is_empty() {
                        self.slices.remove(&svc);
                    }
                }
                self.dirty
                    .insert(ObjectKey::new(Kind::Endpoints, &s.namespace, &s.service));
            }
            Translated::Ignored(_) => {}
        }
    }

    /// Whether `key`'s current translation (already in place when an update
    /// replaces it) still yields the model object `ok`.
    fn still_maps(&self, key: &KubeKey, ok: &ObjectKey) -> bool {
        matches!(self.items.get(key), Some(Translated::Object(o)) if o.key() == *ok)
    }

    /// Whether `key`'s current translation is still a slice of `svc`.
    fn still_slice_of(&self, key: &KubeKey, svc: &(String, String)) -> bool {
        matches!(self.items.get(key), Some(Translated::Slice(s)) if s.namespace == svc.0 && s.service == svc.1)
    }

    /// The desired-state keys changed since the last call, each with what it holds
    /// now (`None`: gone). Costs in proportion to what changed: one object per
    /// touched key; an Endpoints is merged from its own service's slices.
    pub fn take_changes(&mut self) -> Vec<StateChange> {
        std::mem::take(&mut self.dirty)
            .into_iter()
            .map(|k| {
                let o = self.derive(&k);
                (k, o)
            })
            .collect()
    }

    /// What desired-state key `key` holds now.
    fn derive(&self, key: &ObjectKey) -> Option<Object> {
        match key.kind {
            Kind::Endpoints => {
                let slices = self
                    .slices
                    .get(&(key.namespace.clone(), key.name.clone()))?;
                let mut e = Endpoints {
                    namespace: key.namespace.clone(),
                    name: key.name.clone(),
                    endpoints: Vec::new(),
                };
                for k in slices {
                    if let Some(Translated::Slice(s)) = self.items.get(k) {
                        e.endpoints.extend(s.endpoints.iter().cloned());
                    }
                }
                e.endpoints.sort();
                Some(Object::Endpoints(e))
            }
            Kind::LocalNode => (key.name == self.settings.node_name)
                .then(|| self.local_node())
                .flatten()
                .map(Object::LocalNode),
            _ => match self.items.get(self.objects.get(key)?)? {
                Translated::Object(o) if o.key() == *key => Some(o.clone()),
                _ => None,
            },
        }
    }

    /// Replaces every object of `kind` with `objs` (a relist). Translation errors
    /// are returned; those objects keep their last good translation.
    pub fn replace_kind(&mut self, kind: KubeKind, objs: &[KubeObject]) -> Vec<String> {
        let keep: BTreeSet<KubeKey> = objs.iter().map(KubeObject::key).collect();
        let gone: Vec<KubeKey> = self
            .items
            .keys()
            .filter(|k| k.kind == kind && !keep.contains(*k))
            .cloned()
            .collect();
        for k in &gone {
            self.delete(k);
        }
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

    /// Every Node object held, translated.
    pub fn nodes(&self) -> impl Iterator<Item = &vswitch_proto::model::Node> {
        let first = KubeKey {
            kind: KubeKind::Node,
            namespace: String::new(),
            name: String::new(),
        };
        self.items
            .range(first..)
            .take_while(|(k, _)| k.kind == KubeKind::Node)
            .filter_map(|(_, t)| match t {
                Translated::Object(Object::Node(n)) => Some(n),
                _ => None,
            })
    }

    pub fn settings(&self) -> &NodeSettings {
        &self.settings
    }

    /// Objects held, per kind.
    pub fn counts(&self) -> BTreeMap<KubeKind, usize> {
        let mut c = self.counts.clone();
        for k in KubeKind::ALL {
            c.entry(k).or_default();
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
        if let Some(local) = self.local_node() {
            state.upsert(Object::LocalNode(local));
        }
        state
    }

    /// This node's settings from its Node object; `None` until that object is seen.
    fn local_node(&self) -> Option<LocalNode> {
        let n = self.own_node()?;
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

    /// One step of a random history over a small universe of objects.
    #[derive(Debug, Clone)]
    enum Step {
        Apply(serde_json::Value),
        Delete(KubeKind, &'static str, String),
        Relist(KubeKind, Vec<serde_json::Value>),
    }

    const NAMESPACES: [&str; 2] = ["default", "shop"];

    fn any_object() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        let ns = proptest::sample::select(NAMESPACES.to_vec());
        prop_oneof![
            (0..2u8, 0..3u8).prop_map(|(n, c)| json!({"apiVersion":"v1","kind":"Node",
                "metadata":{"name":format!("node-{}", if n == 0 { 'a' } else { 'b' })},
                "spec":{"podCIDR":format!("10.24{c}.{n}.0/24")}})),
            (0..2usize, 0..3u8).prop_map(|(i, l)| json!({"apiVersion":"v1","kind":"Namespace",
                "metadata":{"name":NAMESPACES[i],"labels":{"team":format!("t{l}")}}})),
            (ns.clone(), 0..4u8, 0..3u8, 0..250u8).prop_map(|(ns, p, l, ip)| json!({
                "apiVersion":"v1","kind":"Pod",
                "metadata":{"name":format!("p{p}"),"namespace":ns,"labels":{"app":format!("a{l}")}},
                "spec":{"nodeName":"node-a","containers":[{"name":"c"}]},
                "status":{"podIP":format!("10.240.0.{ip}")}})),
            (ns.clone(), 0..3u8, 1..4i32, any::<bool>()).prop_map(|(ns, s, port, bad)| json!({
                "apiVersion":"v1","kind":"Service","metadata":{"name":format!("s{s}"),"namespace":ns},
                "spec":{"type": if bad { "Weird" } else { "ClusterIP" },
                        "clusterIP":format!("172.16.0.{s}"),"ports":[{"port":port * 80}]}})),
            (ns.clone(), 0..5u8, proptest::option::of(0..3u8), proptest::collection::vec(0..250u8, 0..3))
                .prop_map(|(ns, i, svc, ips)| {
                    let mut labels = serde_json::Map::new();
                    if let Some(s) = svc {
                        labels.insert("kubernetes.io/service-name".into(), json!(format!("s{s}")));
                    }
                    json!({"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice",
                        "metadata":{"name":format!("sl{i}"),"namespace":ns,"labels":labels},
                        "addressType":"IPv4",
                        "endpoints": ips.iter().map(|ip| json!({"addresses":[format!("10.241.0.{ip}")]})).collect::<Vec<_>>(),
                        "ports":[{"port":8080}]})
                }),
            (ns, 0..3u8, 1..100i32).prop_map(|(ns, i, port)| json!({
                "apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy",
                "metadata":{"name":format!("np{i}"),"namespace":ns},
                "spec":{"podSelector":{"matchLabels":{"app":"a0"}},"ingress":[{"ports":[{"port":port}]}]}})),
        ]
    }

    fn any_step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        prop_oneof![
            6 => any_object().prop_map(Step::Apply),
            2 => (proptest::sample::select(KubeKind::ALL.to_vec()), 0..2usize, 0..5u8).prop_map(|(k, ns, i)| {
                let name = match k {
                    KubeKind::Node => format!("node-{}", if i % 2 == 0 { 'a' } else { 'b' }),
                    KubeKind::Namespace => NAMESPACES[ns].to_string(),
                    KubeKind::Pod => format!("p{i}"),
                    KubeKind::Service => format!("s{i}"),
                    KubeKind::EndpointSlice => format!("sl{i}"),
                    KubeKind::NetworkPolicy => format!("np{i}"),
                };
                Step::Delete(k, NAMESPACES[ns], name)
            }),
            1 => proptest::collection::vec(any_object(), 0..6).prop_map(|objs| {
                // A relist of the first object's kind (the others are dropped).
                let kind = objs.first().map_or(KubeKind::EndpointSlice, |o| obj(o.clone()).kind());
                let objs = objs.into_iter().filter(|o| obj(o.clone()).kind() == kind).collect();
                Step::Relist(kind, objs)
            }),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Applying only the changed keys after every step gives the same desired
        /// state as building it from scratch; and so does a daemon fed only the
        /// handoff's deltas.
        #[test]
        fn incremental_changes_equal_a_full_build(steps in proptest::collection::vec(any_step(), 1..40)) {
            let mut c = cluster();
            let mut mirror = DesiredState::new();
            let handoff = crate::agent::syncer::Handoff::default();
            let mut daemon = DesiredState::new();
            for step in steps {
                match step {
                    Step::Apply(v) => {
                        let o = obj(v);
                        if let Err(e) = c.apply(&o) {
                            proptest::prop_assert!(e.contains("Weird"), "{}", e);
                        }
                    }
                    Step::Delete(kind, ns, name) => c.delete(&KubeKey {
                        kind,
                        namespace: if kind.namespaced() { ns.to_string() } else { String::new() },
                        name,
                    }),
                    Step::Relist(kind, objs) => {
                        let objs: Vec<KubeObject> = objs.into_iter().map(obj).collect();
                        c.replace_kind(kind, &objs);
                    }
                }
                let changes = c.take_changes();
                for (k, o) in &changes {
                    match o {
                        Some(o) => { mirror.upsert(o.clone()); }
                        None => { mirror.remove(k); }
                    }
                }
                let full = c.build();
                proptest::prop_assert_eq!(&mirror, &full);
                handoff.update(changes, std::time::Instant::now());
                if let Some(p) = handoff.take_delta(std::time::Duration::ZERO) {
                    for k in &p.delta.deletes {
                        daemon.remove(k);
                    }
                    for o in p.delta.upserts {
                        daemon.upsert(o);
                    }
                    proptest::prop_assert_eq!(&p.counts, &full.counts());
                }
                proptest::prop_assert_eq!(&daemon, &full);
                let counts: BTreeMap<KubeKind, usize> = KubeKind::ALL
                    .iter()
                    .map(|k| (*k, c.items.keys().filter(|key| key.kind == *k).count()))
                    .collect();
                proptest::prop_assert_eq!(c.counts(), counts);
            }
        }
    }
}

//! The desired-state model: what the cluster wants of this node's switch, as plain
//! serde types independent of Kubernetes' own types (the agent translates those).
//!
//! Every object has a stable [`ObjectKey`] (kind + namespace/name). A
//! [`DesiredState`] holds all objects in one `BTreeMap` ordered by key, so two states
//! diff deterministically ([`crate::sync::diff`]) and a kind's objects are one range.
//!
//! Addresses, CIDRs and MACs are strings, as in Kubernetes: the daemon validates
//! them per object ([`crate::validate`]) and rejects only the bad object, where a
//! typed field would make one bad address fail a whole sync.
//!
//! Field names are snake_case like the rest of the protocol, except
//! [`NetworkPolicySpec`], which is Kubernetes' own `networking.k8s.io/v1` JSON
//! (camelCase) so that a policy spec can be copied in unchanged.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// Labels of an object.
pub type Labels = BTreeMap<String, String>;

/// The kinds of object in desired state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    /// This node's own settings (one per state): pod CIDRs, gateway, uplink.
    LocalNode,
    /// Every node of the cluster, this one included: pod CIDRs, address, VTEP.
    Node,
    Namespace,
    Pod,
    Service,
    /// A service's endpoints: its EndpointSlices flattened into one object.
    Endpoints,
    NetworkPolicy,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::LocalNode,
        Kind::Node,
        Kind::Namespace,
        Kind::Pod,
        Kind::Service,
        Kind::Endpoints,
        Kind::NetworkPolicy,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::LocalNode => "LocalNode",
            Kind::Node => "Node",
            Kind::Namespace => "Namespace",
            Kind::Pod => "Pod",
            Kind::Service => "Service",
            Kind::Endpoints => "Endpoints",
            Kind::NetworkPolicy => "NetworkPolicy",
        }
    }

    /// Whether objects of this kind live in a namespace.
    pub fn namespaced(self) -> bool {
        matches!(
            self,
            Kind::Pod | Kind::Service | Kind::Endpoints | Kind::NetworkPolicy
        )
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown kind '{s}'"))
    }
}

/// Identity of an object: `Pod/default/web-1`, `Node/node-a`. Serialised as that
/// string. `namespace` is empty for cluster-scoped kinds.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(kind: Kind, namespace: &str, name: &str) -> ObjectKey {
        ObjectKey {
            kind,
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }

    pub fn cluster(kind: Kind, name: &str) -> ObjectKey {
        ObjectKey::new(kind, "", name)
    }

    /// The smallest key of a kind: start of that kind's range in a [`DesiredState`].
    fn first_of(kind: Kind) -> ObjectKey {
        ObjectKey::new(kind, "", "")
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.kind.namespaced() {
            write!(f, "{}/{}/{}", self.kind, self.namespace, self.name)
        } else {
            write!(f, "{}/{}", self.kind, self.name)
        }
    }
}

impl FromStr for ObjectKey {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.split('/');
        let kind: Kind = parts.next().unwrap_or_default().parse()?;
        let rest: Vec<&str> = parts.collect();
        let (namespace, name) = match (kind.namespaced(), rest.as_slice()) {
            (true, [ns, name]) => (*ns, *name),
            (false, [name]) => ("", *name),
            (true, _) => return Err(format!("key '{s}': expected {kind}/NAMESPACE/NAME")),
            (false, _) => return Err(format!("key '{s}': expected {kind}/NAME")),
        };
        if name.is_empty() || (kind.namespaced() && namespace.is_empty()) {
            return Err(format!("key '{s}': empty name or namespace"));
        }
        Ok(ObjectKey::new(kind, namespace, name))
    }
}

impl Serialize for ObjectKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ObjectKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// L4 protocol of a port.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub enum Protocol {
    #[default]
    TCP,
    UDP,
    SCTP,
}

impl FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "TCP" => Ok(Protocol::TCP),
            "UDP" => Ok(Protocol::UDP),
            "SCTP" => Ok(Protocol::SCTP),
            _ => Err(format!(
                "unknown protocol '{s}' (expected TCP, UDP or SCTP)"
            )),
        }
    }
}

/// A port given as a number or as the name of a container port
/// (Kubernetes' IntOrString).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PortRef {
    Number(i32),
    Name(String),
}

/// This node's settings, from its own Node object and the agent's flags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalNode {
    pub name: String,
    /// `spec.podCIDRs` (or `spec.podCIDR`).
    #[serde(default)]
    pub pod_cidrs: Vec<String>,
    /// The node's `InternalIP` addresses.
    #[serde(default)]
    pub node_ips: Vec<String>,
    /// Gateway address of each pod CIDR: its first host address.
    #[serde(default)]
    pub gateway_ips: Vec<String>,
    /// The gateway's MAC: `0a:58:` + the first IPv4 gateway address (see docs/agent.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_mac: Option<String>,
    /// The uplink interface (`--uplink`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplink: Option<String>,
}

/// Overlay endpoint of a node, from flannel's annotations where present.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Vtep {
    /// `flannel.alpha.coreos.com/backend-type` (`vxlan`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// `VtepMAC` of the backend data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// `VNI` of the backend data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
    /// `Port` of the backend data (UDP port of the tunnel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// `flannel.alpha.coreos.com/public-ip`: the tunnel's remote address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_ip: Option<String>,
    /// Every `flannel.alpha.coreos.com/*` annotation as it was.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// A node of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    #[serde(default)]
    pub pod_cidrs: Vec<String>,
    /// `InternalIP` addresses, first is the node IP.
    #[serde(default)]
    pub internal_ips: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vtep: Option<Vtep>,
    #[serde(default)]
    pub labels: Labels,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespace {
    pub name: String,
    #[serde(default)]
    pub labels: Labels,
}

/// A named container port (what a named `targetPort` or policy port refers to).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ContainerPort {
    pub name: String,
    pub port: i32,
    #[serde(default)]
    pub protocol: Protocol,
}

/// A pod of the cluster (all nodes: policies select remote pods by label too).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    #[serde(default)]
    pub uid: String,
    #[serde(default)]
    pub labels: Labels,
    /// `status.podIPs`, empty until the pod has an address.
    #[serde(default)]
    pub ips: Vec<String>,
    /// The pod interface's MAC, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// `spec.nodeName`, empty until scheduled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// Whether `node_name` is this node (the agent's `--node-name`).
    #[serde(default)]
    pub local: bool,
    /// Host-network pods have no port on the switch.
    #[serde(default)]
    pub host_network: bool,
    /// `status.phase` (`Pending`, `Running`, `Succeeded`, `Failed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// The host-side interface of the pod, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ifname: Option<String>,
    /// Named container ports.
    #[serde(default)]
    pub ports: Vec<ContainerPort>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum ServiceType {
    #[default]
    ClusterIP,
    NodePort,
    LoadBalancer,
    ExternalName,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum SessionAffinity {
    #[default]
    None,
    ClientIP,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum TrafficPolicy {
    #[default]
    Cluster,
    Local,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicePort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub port: i32,
    #[serde(default)]
    pub protocol: Protocol,
    /// Defaults to `port` in Kubernetes; a name refers to a container port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<PortRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_port: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    pub namespace: String,
    pub name: String,
    #[serde(default, rename = "type")]
    pub service_type: ServiceType,
    /// `spec.clusterIPs` without `None`.
    #[serde(default)]
    pub cluster_ips: Vec<String>,
    /// `clusterIP: None`.
    #[serde(default)]
    pub headless: bool,
    /// `spec.selector`; `None` for services with hand-made endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<Labels>,
    #[serde(default)]
    pub ports: Vec<ServicePort>,
    #[serde(default)]
    pub external_ips: Vec<String>,
    /// `status.loadBalancer.ingress[].ip`.
    #[serde(default)]
    pub load_balancer_ips: Vec<String>,
    #[serde(default)]
    pub session_affinity: SessionAffinity,
    /// `sessionAffinityConfig.clientIP.timeoutSeconds` (Kubernetes' default: 10800).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_affinity_timeout: Option<i32>,
    #[serde(default)]
    pub external_traffic_policy: TrafficPolicy,
    #[serde(default)]
    pub internal_traffic_policy: TrafficPolicy,
}

/// A port of an endpoint (from its EndpointSlice).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EndpointPort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub port: i32,
    #[serde(default)]
    pub protocol: Protocol,
}

/// A pod (or other target) an endpoint points at.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TargetRef {
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub namespace: String,
    pub name: String,
}

/// One endpoint of a service.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Endpoint {
    pub addresses: Vec<String>,
    /// Conditions as Kubernetes defines their absence: ready when unset, serving
    /// like ready when unset, not terminating when unset.
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<TargetRef>,
    /// The ports of the slice the endpoint came from.
    #[serde(default)]
    pub ports: Vec<EndpointPort>,
}

/// The endpoints of one service: every EndpointSlice labelled
/// `kubernetes.io/service-name`, flattened and sorted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoints {
    pub namespace: String,
    /// The service's name.
    pub name: String,
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
}

/// `metav1.LabelSelector`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: Labels,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelectorRequirement {
    pub key: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    pub operator: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

impl LabelSelector {
    /// Whether `labels` match (an empty selector matches everything). An unknown
    /// operator matches nothing; validation rejects such selectors up front.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| {
                let have = labels.get(&r.key);
                match r.operator.as_str() {
                    "In" => have.is_some_and(|v| r.values.contains(v)),
                    "NotIn" => have.is_none_or(|v| !r.values.contains(v)),
                    "Exists" => have.is_some(),
                    "DoesNotExist" => have.is_none(),
                    _ => false,
                }
            })
    }
}

/// `networking.k8s.io/v1` NetworkPolicySpec, field for field.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    #[serde(default)]
    pub pod_selector: LabelSelector,
    /// `Ingress`, `Egress`. Unset: Ingress, plus Egress if there are egress rules
    /// (see [`NetworkPolicySpec::effective_policy_types`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_types: Option<Vec<PolicyType>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<IngressRule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<EgressRule>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PolicyType {
    Ingress,
    Egress,
}

impl NetworkPolicySpec {
    /// The policy types in force, with Kubernetes' default when unset.
    pub fn effective_policy_types(&self) -> Vec<PolicyType> {
        match &self.policy_types {
            Some(t) => t.clone(),
            None if self.egress.is_empty() => vec![PolicyType::Ingress],
            None => vec![PolicyType::Ingress, PolicyType::Egress],
        }
    }
}

/// Empty `from`/`ports` mean all sources/ports, as in Kubernetes.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IngressRule {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<PolicyPeer>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PolicyPort>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EgressRule {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<PolicyPeer>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PolicyPort>,
}

/// A peer: `Some(empty selector)` selects all, `None` does not constrain.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyPeer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_block: Option<IpBlock>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpBlock {
    pub cidr: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub except: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyPort {
    /// Kubernetes' default is TCP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_port: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkPolicy {
    pub namespace: String,
    pub name: String,
    pub spec: NetworkPolicySpec,
}

/// Any object, tagged with its kind: `{"kind": "Pod", "namespace": ..., ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind")]
pub enum Object {
    LocalNode(LocalNode),
    Node(Node),
    Namespace(Namespace),
    Pod(Pod),
    Service(Service),
    Endpoints(Endpoints),
    NetworkPolicy(NetworkPolicy),
}

impl Object {
    pub fn kind(&self) -> Kind {
        match self {
            Object::LocalNode(_) => Kind::LocalNode,
            Object::Node(_) => Kind::Node,
            Object::Namespace(_) => Kind::Namespace,
            Object::Pod(_) => Kind::Pod,
            Object::Service(_) => Kind::Service,
            Object::Endpoints(_) => Kind::Endpoints,
            Object::NetworkPolicy(_) => Kind::NetworkPolicy,
        }
    }

    pub fn key(&self) -> ObjectKey {
        let (ns, name) = match self {
            Object::LocalNode(o) => ("", &o.name),
            Object::Node(o) => ("", &o.name),
            Object::Namespace(o) => ("", &o.name),
            Object::Pod(o) => (o.namespace.as_str(), &o.name),
            Object::Service(o) => (o.namespace.as_str(), &o.name),
            Object::Endpoints(o) => (o.namespace.as_str(), &o.name),
            Object::NetworkPolicy(o) => (o.namespace.as_str(), &o.name),
        };
        ObjectKey::new(self.kind(), ns, name)
    }
}

/// Everything desired of the switch, keyed and ordered by [`ObjectKey`].
///
/// On the wire: `{"objects": [Object, ...]}` (the keys follow from the objects).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DesiredState {
    objects: BTreeMap<ObjectKey, Object>,
}

impl DesiredState {
    pub fn new() -> DesiredState {
        DesiredState::default()
    }

    /// Inserts or replaces an object; returns the previous one.
    pub fn upsert(&mut self, obj: Object) -> Option<Object> {
        self.objects.insert(obj.key(), obj)
    }

    pub fn remove(&mut self, key: &ObjectKey) -> Option<Object> {
        self.objects.remove(key)
    }

    pub fn get(&self, key: &ObjectKey) -> Option<&Object> {
        self.objects.get(key)
    }

    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// All objects, by key.
    pub fn iter(&self) -> impl Iterator<Item = (&ObjectKey, &Object)> {
        self.objects.iter()
    }

    /// The objects of one kind, by key.
    pub fn of_kind(&self, kind: Kind) -> impl Iterator<Item = &Object> {
        self.objects
            .range(ObjectKey::first_of(kind)..)
            .take_while(move |(k, _)| k.kind == kind)
            .map(|(_, o)| o)
    }

    /// Number of objects per kind (every kind listed, zeros included).
    pub fn counts(&self) -> BTreeMap<Kind, usize> {
        let mut c: BTreeMap<Kind, usize> = Kind::ALL.iter().map(|k| (*k, 0)).collect();
        for k in self.objects.keys() {
            *c.entry(k.kind).or_default() += 1;
        }
        c
    }

    pub fn local_node(&self) -> Option<&LocalNode> {
        self.of_kind(Kind::LocalNode).find_map(|o| match o {
            Object::LocalNode(n) => Some(n),
            _ => None,
        })
    }

    pub fn pod(&self, namespace: &str, name: &str) -> Option<&Pod> {
        match self.get(&ObjectKey::new(Kind::Pod, namespace, name)) {
            Some(Object::Pod(p)) => Some(p),
            _ => None,
        }
    }

    pub fn pods(&self) -> impl Iterator<Item = &Pod> {
        self.of_kind(Kind::Pod).filter_map(|o| match o {
            Object::Pod(p) => Some(p),
            _ => None,
        })
    }
}

impl FromIterator<Object> for DesiredState {
    fn from_iter<I: IntoIterator<Item = Object>>(iter: I) -> Self {
        let mut s = DesiredState::new();
        for o in iter {
            s.upsert(o);
        }
        s
    }
}

impl Serialize for DesiredState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        struct Objects<'a>(&'a BTreeMap<ObjectKey, Object>);
        impl Serialize for Objects<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(self.0.values())
            }
        }
        let mut st = s.serialize_struct("DesiredState", 1)?;
        st.serialize_field("objects", &Objects(&self.objects))?;
        st.end()
    }
}

impl<'de> Deserialize<'de> for DesiredState {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Wire {
            #[serde(default)]
            objects: Vec<Object>,
        }
        Ok(Wire::deserialize(d)?.objects.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn pod(ns: &str, name: &str, ip: &str) -> Object {
        Object::Pod(Pod {
            namespace: ns.into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            labels: [("app".to_string(), name.to_string())].into(),
            ips: vec![ip.into()],
            mac: None,
            node_name: Some("node-a".into()),
            local: true,
            host_network: false,
            phase: Some("Running".into()),
            host_ifname: None,
            ports: vec![ContainerPort {
                name: "http".into(),
                port: 8080,
                protocol: Protocol::TCP,
            }],
        })
    }

    #[test]
    fn keys_print_and_parse() {
        let k = ObjectKey::new(Kind::Pod, "default", "web");
        assert_eq!(k.to_string(), "Pod/default/web");
        assert_eq!("Pod/default/web".parse::<ObjectKey>(), Ok(k));
        let n = ObjectKey::cluster(Kind::Node, "a");
        assert_eq!(n.to_string(), "Node/a");
        assert_eq!("Node/a".parse::<ObjectKey>(), Ok(n));
        for bad in ["Pod/web", "Node/a/b", "Frob/a", "", "Pod//x", "Node/"] {
            assert!(bad.parse::<ObjectKey>().is_err(), "{bad}");
        }
    }

    #[test]
    fn state_round_trips_and_ranges_by_kind() {
        let mut s = DesiredState::new();
        s.upsert(pod("default", "b", "10.0.0.2"));
        s.upsert(pod("default", "a", "10.0.0.1"));
        s.upsert(Object::Namespace(Namespace {
            name: "default".into(),
            labels: Labels::new(),
        }));
        s.upsert(Object::Node(Node {
            name: "node-a".into(),
            pod_cidrs: vec!["10.0.0.0/24".into()],
            internal_ips: vec!["192.0.2.1".into()],
            vtep: None,
            labels: Labels::new(),
        }));
        let names: Vec<_> = s.pods().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(s.of_kind(Kind::Node).count(), 1);
        assert_eq!(s.counts()[&Kind::Pod], 2);
        assert_eq!(s.counts()[&Kind::Service], 0);
        let json = serde_json::to_string(&s).expect("encode");
        assert!(json.starts_with(r#"{"objects":[{"kind":"Node""#), "{json}");
        let back: DesiredState = serde_json::from_str(&json).expect("decode");
        assert_eq!(back, s);
        assert!(s.pod("default", "a").is_some());
    }

    #[test]
    fn network_policy_spec_reads_kubernetes_json() {
        let spec: NetworkPolicySpec = serde_json::from_str(
            r#"{"podSelector":{"matchLabels":{"app":"db"}},
                "policyTypes":["Ingress","Egress"],
                "ingress":[{"from":[{"namespaceSelector":{"matchExpressions":[{"key":"team","operator":"In","values":["a"]}]},"podSelector":{}},
                                    {"ipBlock":{"cidr":"10.0.0.0/8","except":["10.1.0.0/16"]}}],
                            "ports":[{"protocol":"TCP","port":"http","endPort":null},{"port":5432}]}],
                "egress":[{"ports":[{"protocol":"UDP","port":53,"endPort":60}]}]}"#,
        )
        .expect("spec");
        assert_eq!(spec.ingress[0].from.len(), 2);
        assert_eq!(
            spec.ingress[0].from[0].pod_selector,
            Some(LabelSelector::default())
        );
        assert_eq!(
            spec.ingress[0].ports[0].port,
            Some(PortRef::Name("http".into()))
        );
        assert_eq!(spec.ingress[0].ports[1].port, Some(PortRef::Number(5432)));
        assert_eq!(spec.egress[0].ports[0].end_port, Some(60));
        let back: NetworkPolicySpec =
            serde_json::from_value(serde_json::to_value(&spec).expect("enc")).expect("dec");
        assert_eq!(back, spec);
    }

    #[test]
    fn selectors_match_like_kubernetes() {
        let labels: Labels = [("app".to_string(), "web".to_string())].into();
        let mut s = LabelSelector::default();
        assert!(s.matches(&labels));
        s.match_expressions.push(LabelSelectorRequirement {
            key: "tier".into(),
            operator: "NotIn".into(),
            values: vec!["db".into()],
        });
        assert!(s.matches(&labels));
        s.match_expressions.push(LabelSelectorRequirement {
            key: "app".into(),
            operator: "In".into(),
            values: vec!["api".into()],
        });
        assert!(!s.matches(&labels));
    }

    #[test]
    fn default_policy_types() {
        let mut spec = NetworkPolicySpec::default();
        assert_eq!(spec.effective_policy_types(), [PolicyType::Ingress]);
        spec.egress.push(EgressRule::default());
        assert_eq!(
            spec.effective_policy_types(),
            [PolicyType::Ingress, PolicyType::Egress]
        );
    }
}

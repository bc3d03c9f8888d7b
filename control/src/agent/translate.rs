//! Kubernetes objects to desired-state model objects.
//!
//! One function per kind, each a pure function of the object (and of this node's
//! name, for `Pod.local`). EndpointSlices become [`Translated::Slice`] pieces that
//! [`crate::agent::cluster::Cluster::build`] merges per service.

use crate::agent::kobj::KubeObject;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;
use vswitch_proto::model::{
    self, ContainerPort, Endpoint, EndpointPort, Object, PortRef, Protocol, ServiceType,
    SessionAffinity, TargetRef, TrafficPolicy, Vtep,
};

/// Annotation giving a pod interface's MAC (set by whoever knows it, e.g. the CNI).
pub const ANNOTATION_MAC: &str = "vswitch.dev/mac";
/// Annotation naming a pod's host-side interface.
pub const ANNOTATION_HOST_IFNAME: &str = "vswitch.dev/host-ifname";
/// Label linking an EndpointSlice to its service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
const FLANNEL_PREFIX: &str = "flannel.alpha.coreos.com/";

/// One EndpointSlice's part of a service's endpoints.
#[derive(Debug, Clone, PartialEq)]
pub struct SlicePart {
    pub namespace: String,
    pub service: String,
    pub endpoints: Vec<Endpoint>,
}

/// What a Kubernetes object becomes.
#[derive(Debug, Clone, PartialEq)]
pub enum Translated {
    Object(Object),
    Slice(SlicePart),
    /// Nothing to realise (e.g. a slice of no service); the reason, for debug logs.
    Ignored(String),
}

/// Translates one object. An error names the field at fault.
pub fn translate(obj: &KubeObject, node_name: &str) -> Result<Translated, String> {
    Ok(match obj {
        KubeObject::Node(n) => Translated::Object(Object::Node(node(n))),
        KubeObject::Namespace(n) => Translated::Object(Object::Namespace(model::Namespace {
            name: n.metadata.name.clone().unwrap_or_default(),
            labels: n.metadata.labels.clone().unwrap_or_default(),
        })),
        KubeObject::Pod(p) => Translated::Object(Object::Pod(pod(p, node_name)?)),
        KubeObject::Service(s) => Translated::Object(Object::Service(service(s)?)),
        KubeObject::EndpointSlice(s) => slice(s)?,
        KubeObject::NetworkPolicy(p) => Translated::Object(Object::NetworkPolicy(policy(p)?)),
    })
}

fn protocol(p: Option<&String>) -> Result<Protocol, String> {
    p.map_or(Ok(Protocol::TCP), |s| s.parse())
}

fn namespace_of(m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    m.namespace.clone().unwrap_or_else(|| "default".into())
}

fn node(n: &core::Node) -> model::Node {
    let spec = n.spec.as_ref();
    let pod_cidrs = match spec.and_then(|s| s.pod_cidrs.clone()) {
        Some(c) if !c.is_empty() => c,
        _ => spec.and_then(|s| s.pod_cidr.clone()).into_iter().collect(),
    };
    let internal_ips = n
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .map(|a| {
            a.iter()
                .filter(|a| a.type_ == "InternalIP")
                .map(|a| a.address.clone())
                .collect()
        })
        .unwrap_or_default();
    model::Node {
        name: n.metadata.name.clone().unwrap_or_default(),
        pod_cidrs,
        internal_ips,
        vtep: vtep(n.metadata.annotations.as_ref()),
        labels: n.metadata.labels.clone().unwrap_or_default(),
    }
}

/// flannel's node annotations: `backend-type`, `backend-data` (JSON with `VNI`,
/// `VtepMAC` and, for some backends, `Port`), `public-ip`.
fn vtep(annotations: Option<&BTreeMap<String, String>>) -> Option<Vtep> {
    let flannel: BTreeMap<String, String> = annotations?
        .iter()
        .filter(|(k, _)| k.starts_with(FLANNEL_PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if flannel.is_empty() {
        return None;
    }
    let get = |k: &str| flannel.get(&format!("{FLANNEL_PREFIX}{k}")).cloned();
    let data: serde_json::Value = get("backend-data")
        .and_then(|d| serde_json::from_str(&d).ok())
        .unwrap_or_default();
    Some(Vtep {
        backend: get("backend-type"),
        mac: data
            .get("VtepMAC")
            .and_then(|v| v.as_str())
            .map(str::to_string),
        vni: data
            .get("VNI")
            .and_then(serde_json::Value::as_u64)
            .and_then(|v| u32::try_from(v).ok()),
        port: data
            .get("Port")
            .and_then(serde_json::Value::as_u64)
            .and_then(|v| u16::try_from(v).ok()),
        public_ip: get("public-ip"),
        annotations: flannel,
    })
}

fn pod(p: &core::Pod, node_name: &str) -> Result<model::Pod, String> {
    let spec = p.spec.as_ref();
    let status = p.status.as_ref();
    let mut ips: Vec<String> = status
        .and_then(|s| s.pod_ips.as_ref())
        .map(|ips| ips.iter().map(|i| i.ip.clone()).collect())
        .unwrap_or_default();
    if ips.is_empty()
        && let Some(ip) = status.and_then(|s| s.pod_ip.clone())
    {
        ips.push(ip);
    }
    let mut ports = Vec::new();
    for c in spec.map(|s| s.containers.as_slice()).unwrap_or_default() {
        for cp in c.ports.as_deref().unwrap_or_default() {
            if let Some(name) = &cp.name {
                ports.push(ContainerPort {
                    name: name.clone(),
                    port: cp.container_port,
                    protocol: protocol(cp.protocol.as_ref())
                        .map_err(|e| format!("container {} port {name}: {e}", c.name))?,
                });
            }
        }
    }
    ports.sort();
    let annotations = p.metadata.annotations.as_ref();
    let node = spec.and_then(|s| s.node_name.clone());
    Ok(model::Pod {
        namespace: namespace_of(&p.metadata),
        name: p.metadata.name.clone().unwrap_or_default(),
        uid: p.metadata.uid.clone().unwrap_or_default(),
        labels: p.metadata.labels.clone().unwrap_or_default(),
        ips,
        mac: annotations.and_then(|a| a.get(ANNOTATION_MAC).cloned()),
        local: node.as_deref() == Some(node_name),
        node_name: node,
        host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
        phase: status.and_then(|s| s.phase.clone()),
        host_ifname: annotations.and_then(|a| a.get(ANNOTATION_HOST_IFNAME).cloned()),
        ports,
    })
}

fn port_ref(p: &IntOrString) -> PortRef {
    match p {
        IntOrString::Int(n) => PortRef::Number(*n),
        IntOrString::String(s) => PortRef::Name(s.clone()),
    }
}

fn service(s: &core::Service) -> Result<model::Service, String> {
    let spec = s.spec.clone().unwrap_or_default();
    let service_type = match spec.type_.as_deref() {
        None | Some("ClusterIP") => ServiceType::ClusterIP,
        Some("NodePort") => ServiceType::NodePort,
        Some("LoadBalancer") => ServiceType::LoadBalancer,
        Some("ExternalName") => ServiceType::ExternalName,
        Some(t) => return Err(format!("spec.type: unknown service type '{t}'")),
    };
    let mut cluster_ips = match spec.cluster_ips.clone() {
        Some(ips) if !ips.is_empty() => ips,
        _ => spec.cluster_ip.clone().into_iter().collect(),
    };
    let headless = cluster_ips.iter().any(|ip| ip == "None");
    cluster_ips.retain(|ip| ip != "None" && !ip.is_empty());
    let mut ports = Vec::new();
    for (i, p) in spec.ports.as_deref().unwrap_or_default().iter().enumerate() {
        ports.push(model::ServicePort {
            name: p.name.clone(),
            port: p.port,
            protocol: protocol(p.protocol.as_ref()).map_err(|e| format!("spec.ports[{i}]: {e}"))?,
            target_port: p.target_port.as_ref().map(port_ref),
            node_port: p.node_port,
        });
    }
    let traffic = |field: &str, v: Option<&str>| match v {
        None | Some("Cluster") => Ok(TrafficPolicy::Cluster),
        Some("Local") => Ok(TrafficPolicy::Local),
        Some(o) => Err(format!("spec.{field}: unknown policy '{o}'")),
    };
    let session_affinity = match spec.session_affinity.as_deref() {
        None | Some("None") => SessionAffinity::None,
        Some("ClientIP") => SessionAffinity::ClientIP,
        Some(o) => return Err(format!("spec.sessionAffinity: unknown value '{o}'")),
    };
    Ok(model::Service {
        namespace: namespace_of(&s.metadata),
        name: s.metadata.name.clone().unwrap_or_default(),
        service_type,
        cluster_ips,
        headless,
        selector: spec.selector.clone(),
        ports,
        external_ips: spec.external_ips.clone().unwrap_or_default(),
        load_balancer_ips: s
            .status
            .as_ref()
            .and_then(|st| st.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .map(|ing| ing.iter().filter_map(|i| i.ip.clone()).collect())
            .unwrap_or_default(),
        session_affinity,
        session_affinity_timeout: spec
            .session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds),
        external_traffic_policy: traffic(
            "externalTrafficPolicy",
            spec.external_traffic_policy.as_deref(),
        )?,
        internal_traffic_policy: traffic(
            "internalTrafficPolicy",
            spec.internal_traffic_policy.as_deref(),
        )?,
    })
}

fn slice(s: &discovery::EndpointSlice) -> Result<Translated, String> {
    let Some(service) = s
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SERVICE_NAME_LABEL))
    else {
        return Ok(Translated::Ignored(format!(
            "no {SERVICE_NAME_LABEL} label"
        )));
    };
    let namespace = namespace_of(&s.metadata);
    let mut ports = Vec::new();
    for (i, p) in s.ports.as_deref().unwrap_or_default().iter().enumerate() {
        // A port without a number means "all ports" in Kubernetes, which only
        // selector-less services of no use to a switch produce: skipped.
        let Some(port) = p.port else { continue };
        ports.push(EndpointPort {
            name: p.name.clone(),
            port,
            protocol: protocol(p.protocol.as_ref()).map_err(|e| format!("ports[{i}]: {e}"))?,
        });
    }
    ports.sort();
    let endpoints = s
        .endpoints
        .iter()
        .map(|e| {
            let c = e.conditions.clone().unwrap_or_default();
            let ready = c.ready.unwrap_or(true);
            Endpoint {
                addresses: e.addresses.clone(),
                ready,
                serving: c.serving.unwrap_or(ready),
                terminating: c.terminating.unwrap_or(false),
                node_name: e.node_name.clone(),
                zone: e.zone.clone(),
                target: e.target_ref.as_ref().and_then(|t| {
                    Some(TargetRef {
                        kind: t.kind.clone().unwrap_or_default(),
                        namespace: t.namespace.clone().unwrap_or_else(|| namespace.clone()),
                        name: t.name.clone()?,
                    })
                }),
                ports: ports.clone(),
            }
        })
        .collect();
    Ok(Translated::Slice(SlicePart {
        namespace,
        service: service.clone(),
        endpoints,
    }))
}

/// Our NetworkPolicySpec is Kubernetes' JSON field for field, so the spec goes
/// through JSON; what our types cannot hold (an unknown protocol) fails here.
fn policy(
    p: &k8s_openapi::api::networking::v1::NetworkPolicy,
) -> Result<model::NetworkPolicy, String> {
    let spec = match &p.spec {
        Some(s) => {
            let v = serde_json::to_value(s).map_err(|e| format!("spec: {e}"))?;
            serde_json::from_value(v).map_err(|e| format!("spec: {e}"))?
        }
        None => model::NetworkPolicySpec::default(),
    };
    Ok(model::NetworkPolicy {
        namespace: namespace_of(&p.metadata),
        name: p.metadata.name.clone().unwrap_or_default(),
        spec,
    })
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

    fn model_of(v: serde_json::Value) -> Object {
        match translate(&obj(v), "node-a").expect("translate") {
            Translated::Object(o) => o,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn node_with_flannel_annotations() {
        let Object::Node(n) = model_of(json!({"apiVersion":"v1","kind":"Node",
            "metadata":{"name":"node-b","annotations":{
                "flannel.alpha.coreos.com/backend-type":"vxlan",
                "flannel.alpha.coreos.com/backend-data":"{\"VNI\":1,\"VtepMAC\":\"aa:bb:cc:dd:ee:ff\"}",
                "flannel.alpha.coreos.com/public-ip":"192.0.2.2",
                "other":"x"}},
            "spec":{"podCIDR":"10.244.2.0/24"},
            "status":{"addresses":[{"type":"Hostname","address":"node-b"},{"type":"InternalIP","address":"192.0.2.2"}]}}))
        else {
            panic!("node")
        };
        assert_eq!(n.pod_cidrs, ["10.244.2.0/24"]);
        assert_eq!(n.internal_ips, ["192.0.2.2"]);
        let v = n.vtep.expect("vtep");
        assert_eq!(v.vni, Some(1));
        assert_eq!(v.mac.as_deref(), Some("aa:bb:cc:dd:ee:ff"));
        assert_eq!(v.backend.as_deref(), Some("vxlan"));
        assert_eq!(v.annotations.len(), 3);
    }

    #[test]
    fn pod_fields() {
        let Object::Pod(p) = model_of(json!({"apiVersion":"v1","kind":"Pod",
            "metadata":{"name":"web","namespace":"shop","uid":"u1","labels":{"app":"web"},
                        "annotations":{"vswitch.dev/mac":"02:00:00:00:00:07"}},
            "spec":{"nodeName":"node-a","containers":[{"name":"c","ports":[
                {"name":"http","containerPort":8080},{"containerPort":9000},{"name":"dns","containerPort":53,"protocol":"UDP"}]}]},
            "status":{"phase":"Running","podIP":"10.244.1.5","podIPs":[{"ip":"10.244.1.5"},{"ip":"fd00::5"}]}}))
        else {
            panic!("pod")
        };
        assert_eq!(p.namespace, "shop");
        assert!(p.local);
        assert_eq!(p.ips, ["10.244.1.5", "fd00::5"]);
        assert_eq!(p.mac.as_deref(), Some("02:00:00:00:00:07"));
        let names: Vec<_> = p
            .ports
            .iter()
            .map(|p| (p.name.as_str(), p.protocol))
            .collect();
        assert_eq!(names, [("dns", Protocol::UDP), ("http", Protocol::TCP)]);
        let bad = obj(
            json!({"apiVersion":"v1","kind":"Pod","metadata":{"name":"x"},
            "spec":{"containers":[{"name":"c","ports":[{"name":"q","containerPort":1,"protocol":"QUIC"}]}]}}),
        );
        assert!(translate(&bad, "n").expect_err("proto").contains("QUIC"));
    }

    #[test]
    fn service_fields() {
        let Object::Service(s) = model_of(json!({"apiVersion":"v1","kind":"Service",
            "metadata":{"name":"web"},
            "spec":{"type":"LoadBalancer","clusterIP":"10.96.0.10","clusterIPs":["10.96.0.10"],
                    "ports":[{"name":"http","port":80,"targetPort":"http","nodePort":30080},{"port":53,"protocol":"UDP","targetPort":5353}],
                    "externalIPs":["198.51.100.1"],"sessionAffinity":"ClientIP",
                    "sessionAffinityConfig":{"clientIP":{"timeoutSeconds":60}},
                    "externalTrafficPolicy":"Local","selector":{"app":"web"}},
            "status":{"loadBalancer":{"ingress":[{"ip":"203.0.113.9"},{"hostname":"lb.example"}]}}}))
        else {
            panic!("svc")
        };
        assert_eq!(s.namespace, "default");
        assert_eq!(s.service_type, ServiceType::LoadBalancer);
        assert_eq!(s.ports[0].target_port, Some(PortRef::Name("http".into())));
        assert_eq!(s.ports[0].node_port, Some(30080));
        assert_eq!(s.ports[1].target_port, Some(PortRef::Number(5353)));
        assert_eq!(s.load_balancer_ips, ["203.0.113.9"]);
        assert_eq!(s.session_affinity, SessionAffinity::ClientIP);
        assert_eq!(s.session_affinity_timeout, Some(60));
        assert_eq!(s.external_traffic_policy, TrafficPolicy::Local);
        assert_eq!(s.internal_traffic_policy, TrafficPolicy::Cluster);
        let Object::Service(h) = model_of(json!({"apiVersion":"v1","kind":"Service",
            "metadata":{"name":"h"},"spec":{"clusterIP":"None"}}))
        else {
            panic!("svc")
        };
        assert!(h.headless && h.cluster_ips.is_empty());
    }

    #[test]
    fn slice_conditions_default_like_kubernetes() {
        let t = translate(
            &obj(json!({"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice",
                "metadata":{"name":"web-abc","namespace":"shop","labels":{"kubernetes.io/service-name":"web"}},
                "addressType":"IPv4",
                "endpoints":[{"addresses":["10.244.1.5"],"nodeName":"node-a","zone":"z1",
                              "targetRef":{"kind":"Pod","name":"web-1"}},
                             {"addresses":["10.244.2.6"],"conditions":{"ready":false,"terminating":true}}],
                "ports":[{"name":"http","port":8080,"protocol":"TCP"}]})),
            "node-a",
        )
        .expect("slice");
        let Translated::Slice(s) = t else {
            panic!("{t:?}")
        };
        assert_eq!((s.namespace.as_str(), s.service.as_str()), ("shop", "web"));
        let e = &s.endpoints;
        assert!(e[0].ready && e[0].serving && !e[0].terminating);
        assert!(!e[1].ready && !e[1].serving && e[1].terminating);
        assert_eq!(e[0].target.as_ref().expect("target").namespace, "shop");
        assert_eq!(e[0].ports[0].port, 8080);
        let orphan = translate(
            &obj(
                json!({"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice",
                "metadata":{"name":"x"},"addressType":"IPv4","endpoints":[]}),
            ),
            "n",
        )
        .expect("orphan");
        assert!(matches!(orphan, Translated::Ignored(_)));
    }

    #[test]
    fn policy_spec_is_kept_faithfully() {
        let Object::NetworkPolicy(p) = model_of(
            json!({"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy",
            "metadata":{"name":"db","namespace":"shop"},
            "spec":{"podSelector":{"matchLabels":{"app":"db"}},"policyTypes":["Ingress"],
                    "ingress":[{"from":[{"podSelector":{}},{"ipBlock":{"cidr":"10.0.0.0/8","except":["10.1.0.0/16"]}}],
                                "ports":[{"port":"pg"},{"protocol":"TCP","port":7000,"endPort":7010}]}]}}),
        ) else {
            panic!("policy")
        };
        let r = &p.spec.ingress[0];
        assert_eq!(r.from[0].pod_selector, Some(Default::default()));
        assert!(r.from[0].namespace_selector.is_none());
        assert_eq!(r.ports[0].port, Some(PortRef::Name("pg".into())));
        assert_eq!(r.ports[1].end_port, Some(7010));
        assert_eq!(p.spec.pod_selector.match_labels["app"], "db");
    }
}

//! The Kubernetes objects the agent reads, whichever source they come from (API
//! watchers or manifest files), as Kubernetes' own types (`k8s-openapi`).

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::Value;
use std::fmt;

/// The resources the agent watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KubeKind {
    Node,
    Namespace,
    Pod,
    Service,
    EndpointSlice,
    NetworkPolicy,
}

impl KubeKind {
    pub const ALL: [KubeKind; 6] = [
        KubeKind::Node,
        KubeKind::Namespace,
        KubeKind::Pod,
        KubeKind::Service,
        KubeKind::EndpointSlice,
        KubeKind::NetworkPolicy,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            KubeKind::Node => "Node",
            KubeKind::Namespace => "Namespace",
            KubeKind::Pod => "Pod",
            KubeKind::Service => "Service",
            KubeKind::EndpointSlice => "EndpointSlice",
            KubeKind::NetworkPolicy => "NetworkPolicy",
        }
    }

    /// The `apiVersion` the agent reads this kind in.
    pub fn api_version(self) -> &'static str {
        match self {
            KubeKind::EndpointSlice => "discovery.k8s.io/v1",
            KubeKind::NetworkPolicy => "networking.k8s.io/v1",
            _ => "v1",
        }
    }

    pub fn namespaced(self) -> bool {
        !matches!(self, KubeKind::Node | KubeKind::Namespace)
    }

    fn from_kind(kind: &str) -> Option<KubeKind> {
        KubeKind::ALL.into_iter().find(|k| k.as_str() == kind)
    }
}

impl fmt::Display for KubeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Identity of a Kubernetes object: kind, namespace ("" if cluster-scoped), name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KubeKey {
    pub kind: KubeKind,
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for KubeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// One object of a watched kind.
#[derive(Debug, Clone, PartialEq)]
pub enum KubeObject {
    Node(Box<Node>),
    Namespace(Box<Namespace>),
    Pod(Box<Pod>),
    Service(Box<Service>),
    EndpointSlice(Box<EndpointSlice>),
    NetworkPolicy(Box<NetworkPolicy>),
}

impl KubeObject {
    pub fn kind(&self) -> KubeKind {
        match self {
            KubeObject::Node(_) => KubeKind::Node,
            KubeObject::Namespace(_) => KubeKind::Namespace,
            KubeObject::Pod(_) => KubeKind::Pod,
            KubeObject::Service(_) => KubeKind::Service,
            KubeObject::EndpointSlice(_) => KubeKind::EndpointSlice,
            KubeObject::NetworkPolicy(_) => KubeKind::NetworkPolicy,
        }
    }

    fn meta(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        match self {
            KubeObject::Node(o) => &o.metadata,
            KubeObject::Namespace(o) => &o.metadata,
            KubeObject::Pod(o) => &o.metadata,
            KubeObject::Service(o) => &o.metadata,
            KubeObject::EndpointSlice(o) => &o.metadata,
            KubeObject::NetworkPolicy(o) => &o.metadata,
        }
    }

    pub fn key(&self) -> KubeKey {
        let m = self.meta();
        let kind = self.kind();
        KubeKey {
            kind,
            namespace: if kind.namespaced() {
                m.namespace.clone().unwrap_or_else(|| "default".into())
            } else {
                String::new()
            },
            name: m.name.clone().unwrap_or_default(),
        }
    }
}

macro_rules! from_k8s {
    ($($t:ident),*) => {$(
        impl From<$t> for KubeObject {
            fn from(o: $t) -> KubeObject {
                KubeObject::$t(Box::new(o))
            }
        }
    )*};
}
from_k8s!(Node, Namespace, Pod, Service, EndpointSlice, NetworkPolicy);

/// What one manifest document held.
#[derive(Debug)]
pub enum Parsed {
    Object(KubeObject),
    /// A kind the agent does not read (Deployment, ConfigMap...): ignored, not an error.
    Unsupported(String),
}

/// Reads a key from a document that may be broken further down, so that a bad edit
/// of an object can be tied to the object (whose last good state then stays).
pub fn peek_key(v: &Value) -> Option<KubeKey> {
    let kind = KubeKind::from_kind(v.get("kind")?.as_str()?)?;
    let meta = v.get("metadata")?;
    let name = meta.get("name")?.as_str()?.to_string();
    let namespace = if kind.namespaced() {
        meta.get("namespace")
            .and_then(Value::as_str)
            .unwrap_or("default")
            .to_string()
    } else {
        String::new()
    };
    Some(KubeKey {
        kind,
        namespace,
        name,
    })
}

/// Turns one JSON document (from YAML or JSON) into objects: a `kind: List` gives
/// its items. Namespaced objects without a namespace get `default`, as with
/// `kubectl apply`.
pub fn parse_value(v: Value) -> Result<Vec<Parsed>, String> {
    let Value::Object(map) = &v else {
        return Err("a manifest document must be a mapping (apiVersion, kind, metadata...)".into());
    };
    let kind = map
        .get("kind")
        .and_then(Value::as_str)
        .ok_or("missing 'kind'")?
        .to_string();
    let api_version = map
        .get("apiVersion")
        .and_then(Value::as_str)
        .ok_or("missing 'apiVersion'")?
        .to_string();
    if kind == "List" || (kind.ends_with("List") && map.contains_key("items")) {
        let Some(Value::Array(items)) = map.get("items") else {
            return Err(format!("{kind}: 'items' must be a list"));
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            out.extend(parse_value(item.clone()).map_err(|e| format!("items[{i}]: {e}"))?);
        }
        return Ok(out);
    }
    let Some(k) = KubeKind::from_kind(&kind) else {
        return Ok(vec![Parsed::Unsupported(format!("{api_version} {kind}"))]);
    };
    if api_version != k.api_version() {
        return Err(format!(
            "{kind}: apiVersion '{api_version}' is not supported (expected {})",
            k.api_version()
        ));
    }
    let name_ok = map
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    if !name_ok {
        return Err(format!("{kind}: missing metadata.name"));
    }
    let what = peek_key(&v).map_or_else(|| kind.clone(), |k| k.to_string());
    let bad = |e: serde_json::Error| format!("{what}: {e}");
    let obj = match k {
        KubeKind::Node => KubeObject::from(serde_json::from_value::<Node>(v).map_err(bad)?),
        KubeKind::Namespace => {
            KubeObject::from(serde_json::from_value::<Namespace>(v).map_err(bad)?)
        }
        KubeKind::Pod => KubeObject::from(serde_json::from_value::<Pod>(v).map_err(bad)?),
        KubeKind::Service => KubeObject::from(serde_json::from_value::<Service>(v).map_err(bad)?),
        KubeKind::EndpointSlice => {
            KubeObject::from(serde_json::from_value::<EndpointSlice>(v).map_err(bad)?)
        }
        KubeKind::NetworkPolicy => {
            KubeObject::from(serde_json::from_value::<NetworkPolicy>(v).map_err(bad)?)
        }
    };
    Ok(vec![Parsed::Object(obj)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lists_defaults_and_unsupported_kinds() {
        let v = json!({"apiVersion":"v1","kind":"List","items":[
            {"apiVersion":"v1","kind":"Pod","metadata":{"name":"a"}},
            {"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"d"}},
            {"apiVersion":"v1","kind":"Namespace","metadata":{"name":"n"}}
        ]});
        let got = parse_value(v).expect("list");
        assert_eq!(got.len(), 3);
        let Parsed::Object(p) = &got[0] else {
            panic!("pod")
        };
        assert_eq!(p.key().to_string(), "Pod default/a");
        assert!(matches!(&got[1], Parsed::Unsupported(s) if s == "apps/v1 Deployment"));
        let Parsed::Object(n) = &got[2] else {
            panic!("ns")
        };
        assert_eq!(n.key().namespace, "");
    }

    #[test]
    fn bad_documents_say_why() {
        let e = parse_value(json!({"kind":"Pod","metadata":{"name":"a"}})).expect_err("api");
        assert!(e.contains("apiVersion"), "{e}");
        let e = parse_value(json!({"apiVersion":"discovery.k8s.io/v1beta1","kind":"EndpointSlice","metadata":{"name":"a"}}))
            .expect_err("version");
        assert!(e.contains("not supported"), "{e}");
        let e =
            parse_value(json!({"apiVersion":"v1","kind":"Pod","metadata":{}})).expect_err("name");
        assert!(e.contains("metadata.name"), "{e}");
        let v = json!({"apiVersion":"v1","kind":"Pod","metadata":{"name":"a","namespace":"x"},"spec":{"containers":5}});
        let e = parse_value(v.clone()).expect_err("type");
        assert!(e.starts_with("Pod x/a: "), "{e}");
        assert_eq!(
            peek_key(&v).map(|k| k.to_string()).as_deref(),
            Some("Pod x/a")
        );
        assert!(parse_value(json!([1])).is_err());
    }
}

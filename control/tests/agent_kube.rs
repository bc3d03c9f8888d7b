//! The agent's Kubernetes source against a fake API server started here, which
//! speaks the list/watch protocol over plain HTTP: JSON lists with a
//! resourceVersion, `?watch=true` chunked event streams (ADDED, MODIFIED, DELETED,
//! BOOKMARK), a `410 Gone` ERROR event, and failing lists. The kube client and
//! kube-runtime's watcher run for real; nothing is mocked at their traits.
//!
//! The same server also speaks HTTPS (a throw-away CA made with rcgen, rustls on the
//! server side) and checks the bearer token, as a real API server does: the agent is
//! run over TLS from a kubeconfig and, as a binary, with `--in-cluster` reading a
//! service account mounted in a private mount namespace.
#![allow(clippy::unwrap_used)]

use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vswitch_control::agent::cluster::{NodeSettings, OverlayMode};
use vswitch_control::agent::kube_source;
use vswitch_control::agent::metrics::Metrics;
use vswitch_control::agent::syncer::Handoff;
use vswitch_proto::model::Object;
use vswitch_proto::{DesiredState, Kind, ObjectKey};

const PODS: &str = "/api/v1/pods";
const NODES: &str = "/api/v1/nodes";
const NAMESPACES: &str = "/api/v1/namespaces";
const SERVICES: &str = "/api/v1/services";
const SLICES: &str = "/apis/discovery.k8s.io/v1/endpointslices";
const POLICIES: &str = "/apis/networking.k8s.io/v1/networkpolicies";

/// What the watch thread of a resource sends next.
enum Next {
    Event(Value),
    /// End the watch response cleanly (like the server's timeoutSeconds).
    EndWatch,
}

#[derive(Default)]
struct Resource {
    api_version: String,
    kind: String,
    objects: BTreeMap<String, Value>,
    queue: VecDeque<Next>,
    lists: usize,
    fail_lists: usize,
}

#[derive(Default)]
struct State {
    rv: u64,
    /// When set, requests without `Authorization: Bearer <token>` get 401.
    token: Option<String>,
    resources: HashMap<String, Resource>,
    requests: Vec<String>,
    /// PATCH requests: (path, content type, body).
    patches: Vec<(String, String, Value)>,
}

#[derive(Clone, Default)]
struct FakeApi {
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

fn key_of(o: &Value) -> String {
    format!(
        "{}/{}",
        o["metadata"]["namespace"].as_str().unwrap_or(""),
        o["metadata"]["name"].as_str().unwrap_or("")
    )
}

impl FakeApi {
    fn start() -> (FakeApi, u16) {
        Self::start_with(None)
    }

    /// Serves HTTPS with `tls`, or plain HTTP without it.
    fn start_with(tls: Option<Arc<rustls::ServerConfig>>) -> (FakeApi, u16) {
        let fake = FakeApi::default();
        for (path, api_version, kind) in [
            (PODS, "v1", "Pod"),
            (NODES, "v1", "Node"),
            (NAMESPACES, "v1", "Namespace"),
            (SERVICES, "v1", "Service"),
            (SLICES, "discovery.k8s.io/v1", "EndpointSlice"),
            (POLICIES, "networking.k8s.io/v1", "NetworkPolicy"),
        ] {
            fake.state.lock().unwrap().resources.insert(
                path.into(),
                Resource {
                    api_version: api_version.into(),
                    kind: kind.into(),
                    ..Resource::default()
                },
            );
        }
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let f = fake.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if f.stop.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let f = f.clone();
                let tls = tls.clone();
                std::thread::spawn(move || match tls {
                    None => f.serve(conn),
                    Some(cfg) => {
                        let Ok(server) = rustls::ServerConnection::new(cfg) else {
                            return;
                        };
                        f.serve(rustls::StreamOwned::new(server, conn));
                    }
                });
            }
        });
        (fake, port)
    }

    fn serve<S: Read + Write>(&self, mut s: S) {
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let split = head.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0) + 4;
        let mut body = head.split_off(split);
        let head = String::from_utf8_lossy(&head).to_string();
        let header = |name: &str| {
            head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
        };
        let method = head.split_whitespace().next().unwrap_or("").to_string();
        let target = head.split_whitespace().nth(1).unwrap_or("").to_string();
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let params: HashMap<&str, &str> = query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .collect();
        let authorized = {
            let mut st = self.state.lock().unwrap();
            st.requests.push(target.clone());
            st.token.as_ref().is_none_or(|t| {
                head.lines()
                    .any(|l| l.eq_ignore_ascii_case(&format!("authorization: bearer {t}")))
            })
        };
        if !authorized {
            Self::respond(
                &mut s,
                "401 Unauthorized",
                &json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
                        "reason":"Unauthorized","code":401}),
            );
            return;
        }
        if method == "PATCH" {
            let len: usize = header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            while body.len() < len {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => body.extend_from_slice(&buf[..n]),
                }
            }
            let ct = header("content-type").unwrap_or_default();
            self.patch(s, path, &ct, &body);
        } else if params.get("watch") == Some(&"true") {
            self.watch(s, path);
        } else {
            self.list(s, path);
        }
    }

    fn respond(s: &mut impl Write, status: &str, body: &Value) {
        let body = body.to_string();
        let _ = write!(
            s,
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    }

    fn list(&self, mut s: impl Write, path: &str) {
        let mut st = self.state.lock().unwrap();
        let rv = st.rv;
        let Some(r) = st.resources.get_mut(path) else {
            drop(st);
            Self::respond(
                &mut s,
                "404 Not Found",
                &json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","reason":"NotFound","code":404}),
            );
            return;
        };
        r.lists += 1;
        if r.fail_lists > 0 {
            r.fail_lists -= 1;
            drop(st);
            Self::respond(
                &mut s,
                "500 Internal Server Error",
                &json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
                        "message":"etcd is having a bad day","reason":"InternalError","code":500}),
            );
            return;
        }
        // Like the API server: items carry no apiVersion/kind of their own.
        let items: Vec<Value> = r
            .objects
            .values()
            .map(|o| {
                let mut o = o.clone();
                if let Some(m) = o.as_object_mut() {
                    m.remove("apiVersion");
                    m.remove("kind");
                }
                o
            })
            .collect();
        let body = json!({"apiVersion": r.api_version, "kind": format!("{}List", r.kind),
                          "metadata": {"resourceVersion": rv.to_string()}, "items": items});
        drop(st);
        Self::respond(&mut s, "200 OK", &body);
    }

    fn watch(&self, mut s: impl Write, path: &str) {
        if write!(
            s,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )
        .is_err()
        {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            let next = {
                let mut st = self.state.lock().unwrap();
                st.resources.get_mut(path).and_then(|r| r.queue.pop_front())
            };
            match next {
                Some(Next::Event(ev)) => {
                    let is_error = ev["type"] == "ERROR";
                    let line = format!("{ev}\n");
                    if write!(s, "{:x}\r\n{line}\r\n", line.len()).is_err() {
                        return;
                    }
                    // The API server ends a watch after an ERROR event.
                    if is_error {
                        break;
                    }
                }
                Some(Next::EndWatch) => break,
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        let _ = write!(s, "0\r\n\r\n");
    }

    /// A JSON merge patch (RFC 7386) of `/api/v1/nodes/NAME`, as the API server
    /// applies it: recorded, applied to the stored Node, and a MODIFIED event.
    fn patch(&self, mut s: impl Write, path: &str, content_type: &str, body: &[u8]) {
        let Ok(patch) = serde_json::from_slice::<Value>(body) else {
            Self::respond(
                &mut s,
                "400 Bad Request",
                &json!({"kind":"Status","code":400}),
            );
            return;
        };
        self.state.lock().unwrap().patches.push((
            path.to_string(),
            content_type.to_string(),
            patch.clone(),
        ));
        let Some(name) = path.strip_prefix(&format!("{NODES}/")) else {
            Self::respond(
                &mut s,
                "404 Not Found",
                &json!({"kind":"Status","code":404}),
            );
            return;
        };
        let current = self.state.lock().unwrap().resources[NODES]
            .objects
            .get(&format!("/{name}"))
            .cloned();
        let Some(mut obj) = current else {
            Self::respond(
                &mut s,
                "404 Not Found",
                &json!({"kind":"Status","code":404}),
            );
            return;
        };
        merge(&mut obj, &patch);
        self.put(NODES, obj.clone(), true);
        Self::respond(&mut s, "200 OK", &obj);
    }

    fn patches(&self) -> Vec<(String, String, Value)> {
        self.state.lock().unwrap().patches.clone()
    }

    fn with<R>(&self, path: &str, f: impl FnOnce(&mut Resource, u64) -> R) -> R {
        let mut st = self.state.lock().unwrap();
        st.rv += 1;
        let rv = st.rv;
        f(st.resources.get_mut(path).unwrap(), rv)
    }

    /// Creates or changes an object; with `notify` a watch event goes out too.
    fn put(&self, path: &str, mut obj: Value, notify: bool) {
        self.with(path, |r, rv| {
            obj["metadata"]["resourceVersion"] = json!(rv.to_string());
            obj["apiVersion"] = json!(r.api_version);
            obj["kind"] = json!(r.kind);
            let key = key_of(&obj);
            let ty = if r.objects.contains_key(&key) {
                "MODIFIED"
            } else {
                "ADDED"
            };
            r.objects.insert(key, obj.clone());
            if notify {
                r.queue
                    .push_back(Next::Event(json!({"type": ty, "object": obj})));
            }
        });
    }

    fn delete(&self, path: &str, ns: &str, name: &str, notify: bool) {
        self.with(path, |r, rv| {
            if let Some(mut obj) = r.objects.remove(&format!("{ns}/{name}")) {
                obj["metadata"]["resourceVersion"] = json!(rv.to_string());
                if notify {
                    r.queue
                        .push_back(Next::Event(json!({"type": "DELETED", "object": obj})));
                }
            }
        });
    }

    /// A BOOKMARK at a new resourceVersion; returns it.
    fn bookmark(&self, path: &str) -> u64 {
        self.with(path, |r, rv| {
            r.queue
                .push_back(Next::Event(json!({"type": "BOOKMARK", "object": {
                "apiVersion": r.api_version, "kind": r.kind,
                "metadata": {"resourceVersion": rv.to_string()}}})));
            rv
        })
    }

    fn gone(&self, path: &str) {
        self.with(path, |r, _| {
            r.queue.push_back(Next::Event(json!({"type": "ERROR", "object": {
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "too old resource version: 1 (99)", "reason": "Expired", "code": 410}})));
        });
    }

    fn end_watch(&self, path: &str) {
        self.with(path, |r, _| r.queue.push_back(Next::EndWatch));
    }

    fn lists(&self, path: &str) -> usize {
        self.state.lock().unwrap().resources[path].lists
    }

    fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }
}

/// RFC 7386 JSON merge patch.
fn merge(target: &mut Value, patch: &Value) {
    let Some(p) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let t = target.as_object_mut().unwrap();
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

fn pod(name: &str, node: &str, ip: &str, app: &str) -> Value {
    json!({"metadata": {"name": name, "namespace": "shop", "uid": format!("uid-{name}"), "labels": {"app": app}},
           "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x",
                    "ports": [{"name": "http", "containerPort": 8080}]}]},
           "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}})
}

fn seed(f: &FakeApi) {
    f.put(NODES, json!({"metadata": {"name": "node-a"}, "spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24"]},
        "status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.1"}]}}), false);
    f.put(NODES, json!({"metadata": {"name": "node-b", "annotations": {
            "flannel.alpha.coreos.com/backend-type": "vxlan",
            "flannel.alpha.coreos.com/backend-data": "{\"VNI\":1,\"VtepMAC\":\"6e:1a:2b:3c:4d:5e\"}",
            "flannel.alpha.coreos.com/public-ip": "192.0.2.2"}},
        "spec": {"podCIDR": "10.244.2.0/24"},
        "status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.2"}]}}), false);
    f.put(
        NAMESPACES,
        json!({"metadata": {"name": "shop", "labels": {"team": "a"}}}),
        false,
    );
    f.put(PODS, pod("web-1", "node-a", "10.244.1.5", "web"), false);
    f.put(SERVICES, json!({"metadata": {"name": "web", "namespace": "shop"},
        "spec": {"type": "NodePort", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                 "selector": {"app": "web"},
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http", "nodePort": 30080}]}}), false);
    f.put(SLICES, json!({"metadata": {"name": "web-abc", "namespace": "shop",
            "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.244.1.5"], "conditions": {"ready": true}, "nodeName": "node-a",
                       "targetRef": {"kind": "Pod", "namespace": "shop", "name": "web-1"}}],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}), false);
    f.put(
        POLICIES,
        json!({"metadata": {"name": "web-in", "namespace": "shop"},
        "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"],
                 "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "a"}}}],
                              "ports": [{"protocol": "TCP", "port": "http"}]}]}}),
        false,
    );
}

fn scratch_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vsagent-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn kubeconfig(port: u16) -> PathBuf {
    write_kubeconfig(&format!("http://127.0.0.1:{port}"), None, "plain")
}

/// A kubeconfig for `server` with the bearer token `test-token`, trusting `ca`.
fn write_kubeconfig(server: &str, ca: Option<&std::path::Path>, tag: &str) -> PathBuf {
    let path = scratch_dir(tag).join("kubeconfig");
    let ca = ca
        .map(|p| format!("    certificate-authority: {}\n", p.display()))
        .unwrap_or_default();
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster:
    server: {server}
{ca}contexts:
- name: fake
  context:
    cluster: fake
    user: nobody
current-context: fake
users:
- name: nobody
  user:
    token: test-token
"
        ),
    )
    .unwrap();
    path
}

/// A throw-away CA and a server certificate it signed for 127.0.0.1: the CA's PEM
/// and the server's rustls configuration.
fn test_pki() -> (String, Arc<rustls::ServerConfig>) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone(), ca.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    (ca.pem(), Arc::new(cfg))
}

/// Runs the agent's Kubernetes source for node-a from `kc` on a thread of its own
/// (a current-thread tokio runtime, as the binary uses).
fn spawn_source(
    kc: PathBuf,
    uplink: Option<&str>,
    handoff: Arc<Handoff>,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<anyhow::Result<()>> {
    spawn_source_with(kc, uplink, OverlayMode::Vxlan, handoff, metrics, stop)
}

fn spawn_source_with(
    kc: PathBuf,
    uplink: Option<&str>,
    overlay: OverlayMode,
    handoff: Arc<Handoff>,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<anyhow::Result<()>> {
    let settings = NodeSettings {
        node_name: "node-a".into(),
        uplink: uplink.map(str::to_string),
        overlay,
    };
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let client = kube_source::client_from_kubeconfig(&kc).await?;
            kube_source::run(client, settings, handoff, metrics, stop).await
        })
    })
}

/// Takes published states until one satisfies `ok`.
fn wait_state(h: &Handoff, what: &str, ok: impl Fn(&DesiredState) -> bool) -> DesiredState {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = None;
    while Instant::now() < deadline {
        if let Some(s) = h.take(Duration::from_millis(100)) {
            if ok(&s.state) {
                return s.state;
            }
            last = Some(s.state);
        }
    }
    panic!("timed out waiting for {what}; last state: {last:#?}");
}

fn pod_ips(s: &DesiredState, name: &str) -> Option<Vec<String>> {
    s.pod("shop", name).map(|p| p.ips.clone())
}

#[test]
fn kubernetes_source_lists_watches_and_relists() {
    let (fake, port) = FakeApi::start();
    seed(&fake);
    // The first pod list fails: the watcher must back off and try again.
    fake.with(PODS, |r, _| r.fail_lists = 1);
    let kc = kubeconfig(port);
    let handoff = Arc::new(Handoff::default());
    let metrics = Arc::new(Metrics::new());
    let stop = Arc::new(AtomicBool::new(false));
    let (h, m, st) = (handoff.clone(), metrics.clone(), stop.clone());
    let agent = spawn_source(kc, Some("eth1"), h, m, st);

    // Initial lists: everything translated, LocalNode from node-a.
    let s = wait_state(&handoff, "the initial lists", |s| {
        s.pod("shop", "web-1").is_some() && s.of_kind(Kind::NetworkPolicy).count() == 1
    });
    let local = s.local_node().expect("local node");
    assert_eq!(local.gateway_ips, ["10.244.1.1"]);
    assert_eq!(local.node_ips, ["192.0.2.1"]);
    assert_eq!(local.uplink.as_deref(), Some("eth1"));
    let Some(Object::Node(b)) = s.get(&ObjectKey::cluster(Kind::Node, "node-b")) else {
        panic!("node-b")
    };
    assert_eq!(b.vtep.as_ref().and_then(|v| v.vni), Some(1));
    let p = s.pod("shop", "web-1").unwrap();
    assert!(p.local);
    assert_eq!(p.ports[0].name, "http");
    let Some(Object::Endpoints(e)) = s.get(&ObjectKey::new(Kind::Endpoints, "shop", "web")) else {
        panic!("endpoints")
    };
    assert_eq!(e.endpoints[0].addresses, ["10.244.1.5"]);
    let Some(Object::Service(svc)) = s.get(&ObjectKey::new(Kind::Service, "shop", "web")) else {
        panic!("service")
    };
    assert_eq!(svc.ports[0].node_port, Some(30080));
    assert!(fake.lists(PODS) >= 2, "the failed list was retried");
    assert!(fake.patches().is_empty(), "vxlan mode patches no Node");
    assert!(
        metrics
            .encode()
            .contains("vswitch_agent_api_errors_total{kind=\"Pod\"} 1"),
        "{}",
        metrics.encode()
    );
    let watches: Vec<String> = fake
        .requests()
        .into_iter()
        .filter(|r| r.starts_with(PODS) && r.contains("watch=true"))
        .collect();
    assert!(
        watches
            .iter()
            .all(|w| w.contains("allowWatchBookmarks=true")),
        "{watches:?}"
    );

    // Watch events: MODIFIED, ADDED, DELETED.
    fake.put(PODS, pod("web-1", "node-a", "10.244.1.6", "web"), true);
    wait_state(&handoff, "MODIFIED web-1", |s| {
        pod_ips(s, "web-1") == Some(vec!["10.244.1.6".into()])
    });
    fake.put(PODS, pod("web-2", "node-b", "10.244.2.7", "web"), true);
    let s = wait_state(&handoff, "ADDED web-2", |s| {
        s.pod("shop", "web-2").is_some()
    });
    assert!(!s.pod("shop", "web-2").unwrap().local);
    fake.delete(PODS, "shop", "web-1", true);
    wait_state(&handoff, "DELETED web-1", |s| {
        s.pod("shop", "web-1").is_none() && s.pod("shop", "web-2").is_some()
    });

    // BOOKMARK, then the watch ends: the next watch resumes at the bookmark.
    let rv = fake.bookmark(PODS);
    fake.end_watch(PODS);
    let want = format!("resourceVersion={rv}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !fake
        .requests()
        .iter()
        .any(|r| r.starts_with(PODS) && r.contains("watch=true") && r.contains(&want))
    {
        assert!(
            Instant::now() < deadline,
            "no watch from the bookmark: {:?}",
            fake.requests()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Events are lost (no notification), then 410 Gone: only a relist can find out.
    let lists_before = fake.lists(PODS);
    fake.delete(PODS, "shop", "web-2", false);
    fake.put(PODS, pod("web-3", "node-a", "10.244.1.8", "web"), false);
    fake.gone(PODS);
    wait_state(&handoff, "the relist after 410 Gone", |s| {
        s.pod("shop", "web-2").is_none() && s.pod("shop", "web-3").is_some()
    });
    assert!(fake.lists(PODS) > lists_before, "410 must cause a relist");

    // Other kinds kept watching through all that.
    fake.put(
        NAMESPACES,
        json!({"metadata": {"name": "shop", "labels": {"team": "b"}}}),
        true,
    );
    wait_state(&handoff, "namespace label change", |s| {
        matches!(s.get(&ObjectKey::cluster(Kind::Namespace, "shop")),
                 Some(Object::Namespace(n)) if n.labels.get("team").map(String::as_str) == Some("b"))
    });
    let text = metrics.encode();
    assert!(
        text.contains("vswitch_agent_watched_objects{kind=\"Pod\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("vswitch_agent_api_errors_total{kind=\"Pod\"} 2"),
        "{text}"
    );

    stop.store(true, Ordering::Relaxed);
    fake.stop.store(true, Ordering::Relaxed);
    agent.join().unwrap().unwrap();
}

/// The kube client over HTTPS: the server's certificate is checked against the
/// kubeconfig's CA and every request carries the bearer token (the fake answers 401
/// without it), as against a real API server.
/// In flannel mode the source publishes flannel's annotations on its own Node
/// (one merge patch with exactly them), does not patch again once the Node carries
/// them, patches only what changed when the Node changes, and never touches other
/// Nodes.
#[test]
fn flannel_mode_publishes_our_node_annotations() {
    let (fake, port) = FakeApi::start();
    seed(&fake);
    let handoff = Arc::new(Handoff::default());
    let metrics = Arc::new(Metrics::new());
    let stop = Arc::new(AtomicBool::new(false));
    let (h, m, st) = (handoff.clone(), metrics.clone(), stop.clone());
    let agent = spawn_source_with(kubeconfig(port), None, OverlayMode::Flannel, h, m, st);

    let wait_patches = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let p = fake.patches();
            if p.len() >= n {
                return p;
            }
            assert!(Instant::now() < deadline, "{n} patches expected, got {p:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let p = wait_patches(1);
    assert_eq!(p[0].0, "/api/v1/nodes/node-a");
    assert_eq!(p[0].1, "application/merge-patch+json");
    assert_eq!(
        p[0].2,
        json!({"metadata": {"annotations": {
            "flannel.alpha.coreos.com/backend-type": "vxlan",
            "flannel.alpha.coreos.com/backend-data": "{\"VNI\":1,\"VtepMAC\":\"0a:58:0a:f4:01:01\"}",
            "flannel.alpha.coreos.com/public-ip": "192.0.2.1",
            "flannel.alpha.coreos.com/kube-subnet-manager": "true"}}})
    );
    // The patched Node comes back through the watch: our own vtep as flannel sees it.
    wait_state(&handoff, "node-a with its VtepMAC", |s| {
        matches!(s.get(&ObjectKey::cluster(Kind::Node, "node-a")),
            Some(Object::Node(n)) if n.vtep.as_ref().and_then(|v| v.mac.as_deref()) == Some("0a:58:0a:f4:01:01")
                && n.vtep.as_ref().and_then(|v| v.vni) == Some(1))
    });
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        fake.patches().len(),
        1,
        "no patch once the Node carries them"
    );

    // Our node's address changes: only public-ip is patched.
    let mut a = fake.state.lock().unwrap().resources[NODES].objects["/node-a"].clone();
    a["status"]["addresses"] = json!([{"type": "InternalIP", "address": "192.0.2.11"}]);
    fake.put(NODES, a, true);
    let p = wait_patches(2);
    assert_eq!(
        p[1].2,
        json!({"metadata": {"annotations": {"flannel.alpha.coreos.com/public-ip": "192.0.2.11"}}})
    );
    std::thread::sleep(Duration::from_millis(1000));
    let p = fake.patches();
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(p.iter().all(|(path, _, _)| path == "/api/v1/nodes/node-a"));
    let a = fake.state.lock().unwrap().resources[NODES].objects["/node-a"].clone();
    assert_eq!(
        a["metadata"]["annotations"]["flannel.alpha.coreos.com/public-ip"],
        "192.0.2.11"
    );
    stop.store(true, Ordering::Relaxed);
    fake.stop.store(true, Ordering::Relaxed);
    agent.join().unwrap().unwrap();
}

#[test]
fn kubernetes_source_over_tls_with_a_bearer_token() {
    let (ca_pem, tls) = test_pki();
    let (fake, port) = FakeApi::start_with(Some(tls));
    fake.state.lock().unwrap().token = Some("test-token".into());
    seed(&fake);
    let ca = scratch_dir("tls").join("ca.pem");
    std::fs::write(&ca, &ca_pem).unwrap();
    let kc = write_kubeconfig(&format!("https://127.0.0.1:{port}"), Some(&ca), "tls");
    let handoff = Arc::new(Handoff::default());
    let stop = Arc::new(AtomicBool::new(false));
    let (h, st) = (handoff.clone(), stop.clone());
    let agent = spawn_source(kc, None, h, Arc::new(Metrics::new()), st);
    wait_state(&handoff, "the initial lists over TLS", |s| {
        s.pod("shop", "web-1").is_some() && s.local_node().is_some()
    });
    fake.put(PODS, pod("web-2", "node-a", "10.244.1.9", "web"), true);
    wait_state(&handoff, "a watch event over TLS", |s| {
        s.pod("shop", "web-2").is_some()
    });
    stop.store(true, Ordering::Relaxed);
    fake.stop.store(true, Ordering::Relaxed);
    agent.join().unwrap().unwrap();
}

/// A kubeconfig whose CA did not sign the server's certificate: the agent reports
/// API errors and learns nothing (no panic, no fallback to an unchecked connection).
#[test]
fn kubernetes_source_refuses_an_untrusted_server() {
    let (_, tls) = test_pki();
    let (other_ca, _) = test_pki();
    let (fake, port) = FakeApi::start_with(Some(tls));
    seed(&fake);
    let ca = scratch_dir("untrusted").join("ca.pem");
    std::fs::write(&ca, &other_ca).unwrap();
    let kc = write_kubeconfig(&format!("https://127.0.0.1:{port}"), Some(&ca), "untrusted");
    let handoff = Arc::new(Handoff::default());
    let metrics = Arc::new(Metrics::new());
    let stop = Arc::new(AtomicBool::new(false));
    let (h, m, st) = (handoff.clone(), metrics.clone(), stop.clone());
    let agent = spawn_source(kc, None, h, m, st);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !metrics
        .encode()
        .contains("vswitch_agent_api_errors_total{kind=\"Pod\"}")
    {
        assert!(
            Instant::now() < deadline,
            "no API error counted: {}",
            metrics.encode()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        handoff.take(Duration::from_millis(500)).is_none(),
        "state learnt from an untrusted server"
    );
    assert!(
        fake.lists(PODS) == 0,
        "a list was answered over an unverified connection"
    );
    stop.store(true, Ordering::Relaxed);
    fake.stop.store(true, Ordering::Relaxed);
    let _ = agent.join().unwrap();
}

/// `vswitch-agent --in-cluster`, the binary as a DaemonSet runs it: the service
/// account (token, ca.crt, namespace) is mounted at the well-known path inside a
/// private mount namespace (a tmpfs over /run, so the host's /run is untouched) and
/// the API server is found through KUBERNETES_SERVICE_HOST/PORT.
#[test]
fn in_cluster_binary_uses_the_service_account() {
    if !nix_is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "in_cluster_binary_uses_the_service_account needs root (unshare -m) and CI runs as root"
        );
        eprintln!("SKIP: needs root");
        return;
    }
    let (ca_pem, tls) = test_pki();
    let (fake, port) = FakeApi::start_with(Some(tls));
    fake.state.lock().unwrap().token = Some("test-token".into());
    seed(&fake);
    let dir = scratch_dir("incluster");
    std::fs::write(dir.join("ca.crt"), &ca_pem).unwrap();
    std::fs::write(dir.join("token"), "test-token").unwrap();
    std::fs::write(dir.join("namespace"), "kube-system").unwrap();
    let metrics_port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let agent_bin = env!("CARGO_BIN_EXE_vswitch-agent");
    let sa = "/run/secrets/kubernetes.io/serviceaccount";
    let script = format!(
        "mount --make-rprivate / && mount -t tmpfs vsagent-test /run && mkdir -p {sa} && \
         cp {d}/ca.crt {d}/token {d}/namespace {sa}/ && \
         exec {agent_bin} --in-cluster --node-name node-a --socket {d}/no-daemon.sock \
         --metrics-addr 127.0.0.1:{metrics_port}",
        d = dir.display()
    );
    let mut child = std::process::Command::new("unshare")
        .args(["--mount", "sh", "-c", &script])
        .env("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        .env("KUBERNETES_SERVICE_PORT", port.to_string())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("unshare");
    let deadline = Instant::now() + Duration::from_secs(30);
    let want = "vswitch_agent_watched_objects{kind=\"Pod\"} 1";
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("vswitch-agent --in-cluster exited: {status}");
        }
        last = http_get(metrics_port, "/metrics").unwrap_or_default();
        if last.contains(want) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    fake.stop.store(true, Ordering::Relaxed);
    assert!(
        last.contains(want),
        "no pods watched in-cluster; /metrics: {last}"
    );
    assert!(
        fake.requests().iter().any(|r| r.starts_with(PODS)),
        "the API server was never asked"
    );
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A plain HTTP GET of `path` on 127.0.0.1:`port`; the body.
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

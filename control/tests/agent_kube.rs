//! The agent's Kubernetes source against a fake API server started here, which
//! speaks the list/watch protocol over plain HTTP: JSON lists with a
//! resourceVersion, `?watch=true` chunked event streams (ADDED, MODIFIED, DELETED,
//! BOOKMARK), a `410 Gone` ERROR event, and failing lists. The kube client and
//! kube-runtime's watcher run for real; nothing is mocked at their traits.
#![allow(clippy::unwrap_used)]

use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vswitch_control::agent::cluster::NodeSettings;
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
    resources: HashMap<String, Resource>,
    requests: Vec<String>,
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
                std::thread::spawn(move || f.serve(conn));
            }
        });
        (fake, port)
    }

    fn serve(&self, mut s: TcpStream) {
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let head = String::from_utf8_lossy(&head).to_string();
        let target = head.split_whitespace().nth(1).unwrap_or("").to_string();
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let params: HashMap<&str, &str> = query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .collect();
        self.state.lock().unwrap().requests.push(target.clone());
        if params.get("watch") == Some(&"true") {
            self.watch(s, path);
        } else {
            self.list(s, path);
        }
    }

    fn respond(s: &mut TcpStream, status: &str, body: &Value) {
        let body = body.to_string();
        let _ = write!(
            s,
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    }

    fn list(&self, mut s: TcpStream, path: &str) {
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

    fn watch(&self, mut s: TcpStream, path: &str) {
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

fn kubeconfig(port: u16) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vsagent-kube-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster:
    server: http://127.0.0.1:{port}
contexts:
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
    let agent = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let client = kube_source::client_from_kubeconfig(&kc).await?;
            kube_source::run(
                client,
                NodeSettings {
                    node_name: "node-a".into(),
                    uplink: Some("eth1".into()),
                },
                h,
                m,
                st,
            )
            .await
        })
    });

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

//! `vswitch-agent --manifests` against a real vswitchd in a private namespace: the
//! state is realised, pods link to their ports, edits go out as deltas, a bad
//! document is reported and leaves the last good state, a restarted daemon is
//! resynchronised by the agent on its own, and /metrics counts it all. Also
//! `vsctl apply`.
//!
//!     cargo build && cargo test --test e2e_agent -- --nocapture
//!
//! Needs root and built binaries.

use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;
use vswitch_suite::agent::Agent;
use vswitch_suite::control::RawClient;
use vswitch_suite::daemon::{DaemonOpts, Vswitchd};
use vswitch_suite::netns::Netns;
use vswitch_suite::pod::{Pod, PodOpts, pod_ip};
use vswitch_suite::{TempDir, wait_for};

const WAIT: Duration = Duration::from_secs(20);

const NODES: &str = "\
apiVersion: v1
kind: Node
metadata: {name: node-a}
spec: {podCIDR: 10.244.1.0/24}
status:
  addresses: [{type: InternalIP, address: 192.0.2.1}]
---
apiVersion: v1
kind: Node
metadata:
  name: node-b
  annotations:
    flannel.alpha.coreos.com/backend-type: vxlan
    flannel.alpha.coreos.com/backend-data: '{\"VNI\":1,\"VtepMAC\":\"6e:1a:2b:3c:4d:5e\"}'
spec: {podCIDR: 10.244.2.0/24}
";

const SERVICES: &str = r#"{"apiVersion": "v1", "kind": "List", "items": [
 {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "labels": {"team": "a"}}},
 {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "shop"},
  "spec": {"clusterIP": "10.96.0.10", "selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}},
 {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
  "metadata": {"name": "web-1", "namespace": "shop", "labels": {"kubernetes.io/service-name": "web"}},
  "addressType": "IPv4", "endpoints": [{"addresses": ["10.244.1.5"]}], "ports": [{"port": 8080}]},
 {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "deny", "namespace": "shop"},
  "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}
]}"#;

fn pod_doc(name: &str, ip: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: shop, uid: uid-{name}, labels: {{app: web}}}}
spec:
  nodeName: node-a
  containers: [{{name: c, image: x}}]
status: {{phase: Running, podIP: {ip}, podIPs: [{{ip: {ip}}}]}}
"
    )
}

fn write(dir: &Path, name: &str, text: &str) {
    // Write then rename, as an editor or a ConfigMap update does: the agent never
    // reads half a file.
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).expect("write manifest");
    std::fs::rename(&tmp, dir.join(name)).expect("rename manifest");
}

fn sync_status(d: &Vswitchd) -> Option<Value> {
    let mut c = RawClient::connect(d.socket()).ok()?;
    let r = c.request(r#"{"id":1,"op":"sync_status"}"#).ok()?;
    r.get("result").cloned()
}

fn count(st: &Value, kind: &str) -> u64 {
    st["counts"][kind].as_u64().unwrap_or(0)
}

/// Waits until `sync_status` satisfies `ok`; returns it.
fn wait_status(d: &Vswitchd, agent: &Agent, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    wait_for(WAIT, || sync_status(d).filter(|s| ok(s))).unwrap_or_else(|| {
        panic!(
            "timed out waiting for {what}; status: {:?}\n--- agent log ---\n{}",
            sync_status(d),
            agent.log_text()
        )
    })
}

fn port_entry(d: &Vswitchd, name: &str) -> Value {
    d.port(name)
        .expect("vsctl show")
        .unwrap_or_else(|| panic!("port {name} not listed"))
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn agent_realises_manifests_and_survives_a_daemon_restart() {
    let Some(_env) = vswitch_suite::e2e() else {
        return;
    };
    let sw = Netns::new("sw").expect("switch namespace");
    let mut d = Vswitchd::start(&sw, DaemonOpts::default()).expect("vswitchd");
    let dir = TempDir::new("manifests").expect("manifest dir");
    let m = dir.path();
    write(m, "nodes.yaml", NODES);
    write(m, "services.json", SERVICES);
    write(
        m,
        "pods.yaml",
        &format!(
            "{}---\n{}",
            pod_doc("web-1", "10.244.1.5"),
            pod_doc("web-2", "10.244.1.6")
        ),
    );
    let mut agent =
        Agent::start_manifests(d.socket(), "node-a", m, &["--uplink", "eth9"]).expect("agent");

    // 1. Everything realised.
    let st = wait_status(&d, &agent, "the first sync", |s| {
        count(s, "Pod") == 2 && count(s, "LocalNode") == 1
    });
    assert!(st["generation"].as_u64().unwrap_or(0) >= 1, "{st}");
    for (kind, n) in [
        ("Node", 2),
        ("Namespace", 1),
        ("Service", 1),
        ("Endpoints", 1),
        ("NetworkPolicy", 1),
    ] {
        assert_eq!(count(&st, kind), n, "{kind}: {st}");
    }
    assert_eq!(st["last_change"]["sync"], "full", "{st}");
    let ready = wait_for(WAIT, || agent.get("/readyz").ok().filter(|r| r.0 == 200));
    assert!(ready.is_some(), "/readyz never became 200");

    // 2. A port added for pod web-1 shows the pod and its address from desired state.
    let pod = Pod::new(&sw, pod_ip(1), PodOpts::default()).expect("pod veth");
    let mut c = RawClient::connect(d.socket()).expect("connect");
    let r = c
        .request(
            &json!({"id": 2, "op": "add_port", "params": {"name": pod.switch_if, "mode": "packet",
                    "pod": {"namespace": "shop", "name": "web-1"}}})
            .to_string(),
        )
        .expect("add_port");
    assert!(r.get("result").is_some(), "{r}");
    let p = port_entry(&d, &pod.switch_if);
    assert_eq!(p["pod"]["name"], "web-1", "{p}");
    assert_eq!(p["pod_link"]["ips"], json!(["10.244.1.5"]), "{p}");
    assert_eq!(p["pod_link"]["uid"], "uid-web-1", "{p}");
    let text = d.vsctl(&["show"]).expect("vsctl show");
    assert!(
        text.contains("pod: shop/web-1") && text.contains("pod_ips: 10.244.1.5"),
        "{text}"
    );

    // 3. An edit goes out as a delta: web-1 moves, web-2 goes.
    let g1 = st["generation"].as_u64().unwrap_or(0);
    write(m, "pods.yaml", &pod_doc("web-1", "10.244.1.15"));
    let st = wait_status(&d, &agent, "the edit", |s| {
        count(s, "Pod") == 1 && s["generation"].as_u64().unwrap_or(0) > g1
    });
    assert_eq!(st["last_change"]["sync"], "delta", "{st}");
    let p = port_entry(&d, &pod.switch_if);
    assert_eq!(p["pod_link"]["ips"], json!(["10.244.1.15"]), "{p}");

    // 4. A bad edit of web-1 is reported with file and line; web-1 keeps its last
    //    good state while the good document beside it (web-3) is applied.
    let bad = "apiVersion: v1\nkind: Pod\nmetadata: {name: web-1, namespace: shop}\nspec:\n  containers: 5\n";
    write(
        m,
        "pods.yaml",
        &format!("{}---\n{bad}", pod_doc("web-3", "10.244.1.7")),
    );
    wait_status(&d, &agent, "web-3 beside the bad document", |s| {
        count(s, "Pod") == 2
    });
    let p = port_entry(&d, &pod.switch_if);
    assert_eq!(
        p["pod_link"]["ips"],
        json!(["10.244.1.15"]),
        "last good kept: {p}"
    );
    let log = agent.log_text();
    assert!(
        log.contains(&format!("{}:9:", m.join("pods.yaml").display())),
        "the bad document must be reported with file and line:\n{log}"
    );

    // 5. The daemon goes away; meanwhile the manifests change. The restarted daemon
    //    gets the new state from the agent (not from its state dir) by itself.
    let before = sync_status(&d).expect("status")["generation"]
        .as_u64()
        .unwrap_or(0);
    d.stop().expect("stop vswitchd");
    write(m, "extra.yaml", &pod_doc("web-4", "10.244.1.9"));
    std::thread::sleep(Duration::from_millis(2500));
    d.restart().expect("restart vswitchd");
    let st = wait_status(&d, &agent, "the resync after the restart", |s| {
        count(s, "Pod") == 3
    });
    assert!(st["generation"].as_u64().unwrap_or(0) > before, "{st}");
    assert!(
        agent.is_running(),
        "the agent must survive the daemon restart"
    );
    let p = port_entry(&d, &pod.switch_if);
    assert_eq!(p["pod_link"]["ips"], json!(["10.244.1.15"]), "{p}");

    // 6. Health and metrics.
    assert_eq!(agent.get("/healthz").expect("healthz").0, 200);
    let (code, text) = agent.get("/metrics").expect("metrics");
    assert_eq!(code, 200);
    assert!(
        metric(
            &text,
            "vswitch_agent_syncs_total{type=\"full\",result=\"ok\"}"
        ) >= 2.0,
        "{text}"
    );
    assert!(
        metric(
            &text,
            "vswitch_agent_syncs_total{type=\"delta\",result=\"ok\"}"
        ) >= 2.0,
        "{text}"
    );
    assert!(
        metric(&text, "vswitch_agent_daemon_connects_total") >= 2.0,
        "{text}"
    );
    assert!(
        metric(&text, "vswitch_agent_manifest_errors_total") >= 1.0,
        "{text}"
    );
    assert_eq!(
        metric(&text, "vswitch_agent_watched_objects{kind=\"Pod\"}"),
        3.0,
        "{text}"
    );
    assert!(
        metric(&text, "vswitch_agent_synced_generation")
            >= st["generation"].as_f64().unwrap_or(0.0),
        "{text}"
    );
    assert!(
        metric(&text, "vswitch_agent_realization_seconds_count") >= 3.0,
        "{text}"
    );
}

#[test]
fn vsctl_apply_replaces_desired_state_and_reports_bad_documents() {
    let Some(_env) = vswitch_suite::e2e() else {
        return;
    };
    let sw = Netns::new("sw").expect("switch namespace");
    let d = Vswitchd::start(&sw, DaemonOpts::default()).expect("vswitchd");
    let dir = TempDir::new("apply").expect("dir");
    let m = dir.path();
    write(m, "nodes.yaml", NODES);
    write(m, "pods.yaml", &pod_doc("web-1", "10.244.1.5"));
    let out = d
        .vsctl(&["apply", &m.display().to_string(), "--node-name", "node-a"])
        .expect("vsctl apply");
    assert!(
        out.starts_with("applied 4 objects as generation 1"),
        "{out}"
    );
    let st = d.vsctl_json(&["sync-status"]).expect("sync-status");
    assert_eq!((count(&st, "Pod"), count(&st, "LocalNode")), (1, 1), "{st}");

    write(
        m,
        "broken.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: x\n",
    );
    let e = d
        .vsctl(&["apply", &m.display().to_string()])
        .expect_err("a bad document fails the command");
    assert!(e.0.contains("broken.yaml:"), "{e}");
    let st = d.vsctl_json(&["sync-status"]).expect("sync-status");
    assert_eq!(st["generation"], 2, "the good documents were applied: {st}");
    assert_eq!(
        count(&st, "LocalNode"),
        0,
        "no --node-name, no LocalNode: {st}"
    );
    let text = d.vsctl(&["sync-status"]).expect("text");
    assert!(text.starts_with("desired state: generation 2"), "{text}");
}

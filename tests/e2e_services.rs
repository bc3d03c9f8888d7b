//! Kubernetes Services through the switch: real TCP clients and servers in pod
//! namespaces, a ClusterIP service DNATed by conntrack to ready endpoints only,
//! a service without endpoints refused at once, and the skeleton back when the
//! services go.
//!
//!     cargo build && cargo test --test e2e_services -- --nocapture
//!
//! Needs root and built binaries.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use vswitch_suite::daemon::{DaemonOpts, Vswitchd};
use vswitch_suite::netns::Netns;
use vswitch_suite::pod::{Pod, PodOpts};
use vswitch_suite::{TempDir, wait_for};

const GW_IP: &str = "10.250.0.1";
/// What the agent derives for the gateway of 10.250.0.0/24: 0a:58 + 10.250.0.1.
const GW_MAC: &str = "0a:58:0a:fa:00:01";

fn pod_doc(name: &str, ip: &str, mac: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: shop, uid: uid-{name}, labels: {{app: web}},
  annotations: {{vswitch.dev/mac: '{mac}'}}}}
spec:
  nodeName: node-a
  containers: [{{name: c, image: x, ports: [{{name: http, containerPort: 8080}}]}}]
status: {{phase: Running, podIP: {ip}, podIPs: [{{ip: {ip}}}]}}
---
"
    )
}

fn services(eps: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Node
metadata: {{name: node-a}}
spec: {{podCIDR: 10.250.0.0/24}}
status: {{addresses: [{{type: InternalIP, address: 192.0.2.1}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: shop}}
spec: {{clusterIP: 10.96.0.10, ports: [{{name: http, port: 80, targetPort: http}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: web-1, namespace: shop, labels: {{kubernetes.io/service-name: web}}}}
addressType: IPv4
endpoints: [{eps}]
ports: [{{name: http, port: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: empty, namespace: shop}}
spec: {{clusterIP: 10.96.0.11, ports: [{{port: 80, targetPort: 8080}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: bad, namespace: shop}}
spec: {{clusterIP: 10.96.0.300, ports: [{{port: 80}}]}}
"#
    )
}

fn ep(ip: &str, ready: bool) -> String {
    format!("{{addresses: [{ip}], conditions: {{ready: {ready}}}}}")
}

/// A pod attached to the switch, with a default route via the gateway address
/// (resolved statically: the gateway's ARP responder is the overlay's work).
fn attach(sw: &Netns, d: &Vswitchd, last: u8) -> Pod {
    let ip = std::net::Ipv4Addr::new(10, 250, 0, last);
    let p = Pod::new(sw, ip, PodOpts::default()).expect("pod");
    d.add_port(&p.switch_if, "packet").expect("add-port");
    p.ns.ip(&["neigh", "add", GW_IP, "lladdr", GW_MAC, "dev", &p.ifname])
        .expect("gateway neighbour");
    p.ns.ip(&["route", "add", "default", "via", GW_IP])
        .expect("default route");
    p
}

/// One TCP exchange: the server's answer (its address), or the error text.
fn fetch(client: &Pod, addr: &str) -> Result<String, String> {
    let out = client
        .command("socat")
        .args(["-T", "3", "-", &format!("TCP:{addr},connect-timeout=3")])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

fn apply(d: &Vswitchd, dir: &TempDir, text: &str) -> String {
    let f = dir.path().join("m.yaml");
    std::fs::write(&f, text).expect("write");
    d.vsctl(&[
        "apply",
        f.to_str().unwrap_or_default(),
        "--node-name",
        "node-a",
    ])
    .unwrap_or_else(|e| format!("apply failed: {e}"))
}

#[test]
fn cluster_ip_balances_over_ready_endpoints_and_rejects_when_empty() {
    let Some(_env) = vswitch_suite::e2e() else {
        return;
    };
    let sw = Netns::new("sw").expect("switch namespace");
    let d = Vswitchd::start(&sw, DaemonOpts::default()).expect("vswitchd");
    let client = attach(&sw, &d, 10);
    let backends: Vec<Pod> = [21u8, 22, 23].iter().map(|&i| attach(&sw, &d, i)).collect();
    let mut servers = Vec::new();
    for b in &backends {
        servers.push(
            b.command("socat")
                .args([
                    "TCP-LISTEN:8080,fork,reuseaddr",
                    &format!("SYSTEM:echo {}", b.ip),
                ])
                .spawn()
                .expect("server"),
        );
    }
    // Pods first (their MACs), then services: .23 is not ready.
    let mut pods = String::new();
    for (i, b) in backends.iter().enumerate() {
        pods.push_str(&pod_doc(&format!("web-{i}"), &b.ip.to_string(), &b.mac));
    }
    let dir = TempDir::new("svc").expect("dir");
    let eps = [
        ep("10.250.0.21", true),
        ep("10.250.0.22", true),
        ep("10.250.0.23", false),
    ]
    .join(", ");
    let out = apply(&d, &dir, &format!("{pods}{}", services(&eps)));
    println!("{out}");
    let flows = d.vsctl(&["dump-flows"]).expect("dump-flows");
    println!("{flows}");
    assert!(flows.contains("service_lb("), "{flows}");
    assert!(flows.contains("punt:reject"), "{flows}");

    // Wait for the servers, then many connections.
    let first = wait_for(Duration::from_secs(10), || {
        fetch(&client, "10.96.0.10:80").ok()
    });
    assert!(first.is_some(), "no answer through the ClusterIP");
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    for _ in 0..40 {
        let a = fetch(&client, "10.96.0.10:80").expect("answer through the service");
        *seen.entry(a).or_default() += 1;
    }
    println!("answers: {seen:?}");
    assert!(
        seen.contains_key("10.250.0.21") && seen.contains_key("10.250.0.22"),
        "{seen:?}"
    );
    assert!(
        !seen.contains_key("10.250.0.23"),
        "a not-ready endpoint was chosen: {seen:?}"
    );

    // No endpoints: refused at once (RST), not a timeout.
    let t = Instant::now();
    let r = fetch(&client, "10.96.0.11:80");
    let took = t.elapsed();
    assert!(r.is_err(), "{r:?}");
    assert!(
        took < Duration::from_secs(1),
        "refusal took {took:?}: {r:?}"
    );
    println!("empty service: {r:?} in {took:?}");

    let ct = d.vsctl(&["stats", "--json"]).expect("stats");
    println!("{ct}");

    // Endpoint .21 removed: new connections all go to .22.
    let eps = [ep("10.250.0.22", true), ep("10.250.0.23", false)].join(", ");
    apply(&d, &dir, &format!("{pods}{}", services(&eps)));
    for _ in 0..10 {
        assert_eq!(
            fetch(&client, "10.96.0.10:80").as_deref(),
            Ok("10.250.0.22")
        );
    }

    // Services gone: the skeleton again (no conntrack flows).
    let f = dir.path().join("m.yaml");
    std::fs::write(&f, pods).expect("write");
    d.vsctl(&[
        "apply",
        f.to_str().unwrap_or_default(),
        "--node-name",
        "node-a",
    ])
    .expect("apply");
    let flows = d.vsctl(&["dump-flows"]).expect("dump-flows");
    assert!(!flows.contains("ct("), "{flows}");
    for mut s in servers {
        let _ = s.kill();
        let _ = s.wait();
    }
}

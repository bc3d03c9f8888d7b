//! Helpers shared by tests/e2e_services.rs, tests/e2e_nodeport.rs and
//! tests/e2e_services_fastpath.rs (included by each with `mod services_common;`;
//! a folder, so Cargo does not build it as a test target of its own): the pod
//! gateway, manifest builders for node-a, its pods and Services, `vsctl apply`,
//! a TCP client and the servers' cleanup.

// Each test file uses a part of these.
#![allow(dead_code)]

use vswitch_suite::TempDir;
use vswitch_suite::daemon::Vswitchd;
use vswitch_suite::netns::Netns;
use vswitch_suite::pod::Pod;

pub const GW_IP: &str = "10.250.0.1";
/// What the agent derives for the gateway of 10.250.0.0/24: 0a:58 + 10.250.0.1.
pub const GW_MAC: &str = "0a:58:0a:fa:00:01";

/// The Node object of node-a (pod CIDR 10.250.0.0/24, node IP 192.0.2.1).
pub const NODE: &str = "apiVersion: v1
kind: Node
metadata: {name: node-a}
spec: {podCIDR: 10.250.0.0/24}
status: {addresses: [{type: InternalIP, address: 192.0.2.1}]}
---
";

/// A running pod in namespace `shop` on `node`, without labels.
pub fn pod_on(name: &str, ip: &str, node: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: shop, uid: uid-{name}}}
spec: {{nodeName: {node}, containers: [{{name: c, image: x}}]}}
status: {{phase: Running, podIP: {ip}, podIPs: [{{ip: {ip}}}]}}
---
"
    )
}

/// A running pod in namespace `shop` on node-a, without labels.
pub fn plain_pod(name: &str, ip: &str) -> String {
    pod_on(name, ip, "node-a")
}

/// A Service and its EndpointSlice. `spec` is the inside of the Service's spec
/// (flow mapping), `eps` the endpoints, `ports` the slice's ports.
pub fn svc(name: &str, spec: &str, eps: &str, ports: &str) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: shop}}
spec: {{{spec}}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}-1, namespace: shop, labels: {{kubernetes.io/service-name: {name}}}}}
addressType: IPv4
endpoints: [{eps}]
ports: [{ports}]
---
"
    )
}

/// An endpoint without a node.
pub fn ep(ip: &str, ready: bool) -> String {
    format!("{{addresses: [{ip}], conditions: {{ready: {ready}}}}}")
}

/// A ready endpoint on `node`.
pub fn ep_on(ip: &str, node: &str) -> String {
    format!("{{addresses: [{ip}], nodeName: {node}, conditions: {{ready: true}}}}")
}

/// `vsctl apply` of `text` for node-a: its output, or the error text.
pub fn apply(d: &Vswitchd, dir: &TempDir, text: &str) -> String {
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

/// [`apply`], which must succeed.
pub fn apply_text(d: &Vswitchd, dir: &TempDir, text: &str) {
    let out = apply(d, dir, text);
    assert!(out.starts_with("applied"), "{out}");
}

/// The pod's default route via the gateway address (resolved statically: the
/// gateway's ARP responder is the overlay's work).
pub fn via_gateway(p: &Pod) {
    p.ns.ip(&["neigh", "add", GW_IP, "lladdr", GW_MAC, "dev", &p.ifname])
        .expect("gateway neighbour");
    p.ns.ip(&["route", "add", "default", "via", GW_IP])
        .expect("default route");
}

/// One TCP exchange from `client`: what the server wrote, or the error text.
pub fn fetch(client: &Netns, addr: &str) -> Result<String, String> {
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

/// Server processes, killed and reaped when dropped.
pub struct Servers(pub Vec<std::process::Child>);

impl Drop for Servers {
    fn drop(&mut self) {
        for s in &mut self.0 {
            let _ = s.kill();
            let _ = s.wait();
        }
    }
}

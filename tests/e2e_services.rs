//! Kubernetes Services through the switch: real TCP/UDP clients and servers in
//! pod namespaces. A ClusterIP service DNATed by conntrack to ready endpoints
//! only, a service without endpoints refused at once, and the skeleton back when
//! the services go; UDP (and the conntrack flush when an endpoint goes), session
//! affinity with its timeout, hairpin, several ports, ICMP errors translated,
//! NodePort through a gateway port, Local traffic policies, a full conntrack
//! table.
//!
//!     cargo build && cargo test --test e2e_services -- --nocapture
//!
//! Needs root and built binaries.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use vswitch_suite::daemon::{DaemonOpts, Vswitchd};
use vswitch_suite::netns::Netns;
use vswitch_suite::pod::{Pod, PodOpts};
use vswitch_suite::{TempDir, wait_for};

mod services_common;
use services_common::{
    GW_MAC, NODE, Servers, apply, apply_text, ep, ep_on, fetch, plain_pod, svc, via_gateway,
};

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
    let web = svc(
        "web",
        "clusterIP: 10.96.0.10, ports: [{name: http, port: 80, targetPort: http}]",
        eps,
        "{name: http, port: 8080}",
    );
    format!(
        r#"{NODE}{web}apiVersion: v1
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

/// A pod attached to the switch, with a default route via the gateway address.
fn attach(sw: &Netns, d: &Vswitchd, last: u8) -> Pod {
    let ip = std::net::Ipv4Addr::new(10, 250, 0, last);
    let p = Pod::new(sw, ip, PodOpts::default()).expect("pod");
    d.add_port(&p.switch_if, "packet").expect("add-port");
    via_gateway(&p);
    p
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
        fetch(&client.ns, "10.96.0.10:80").ok()
    });
    assert!(first.is_some(), "no answer through the ClusterIP");
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    for _ in 0..40 {
        let a = fetch(&client.ns, "10.96.0.10:80").expect("answer through the service");
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
    let r = fetch(&client.ns, "10.96.0.11:80");
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
            fetch(&client.ns, "10.96.0.10:80").as_deref(),
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

/// A pod whose MAC is what the CNI plugin gives it (0a:58 + its IPv4 address),
/// so the service path finds it without an annotation.
fn attach_cni(sw: &Netns, d: &Vswitchd, last: u8) -> Pod {
    let ip = std::net::Ipv4Addr::new(10, 250, 0, last);
    let p = Pod::new(sw, ip, PodOpts::default()).expect("pod");
    let mac = format!("0a:58:0a:fa:00:{last:02x}");
    p.ns.ip(&["link", "set", "dev", &p.ifname, "address", &mac])
        .expect("pod mac");
    d.add_port(&p.switch_if, "packet").expect("add-port");
    via_gateway(&p);
    p
}

/// One UDP exchange from `sport` (0: any): the answer or the error text.
fn udp_ask(client: &Pod, addr: &str, sport: u16) -> Result<String, String> {
    let mut target = format!("UDP:{addr}");
    if sport != 0 {
        target.push_str(&format!(",sourceport={sport},reuseaddr"));
    }
    let out = client
        .command("sh")
        .args(["-c", &format!("echo q | socat -t 2 -T 2 - {target}")])
        .output()
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() && !text.is_empty() {
        Ok(text)
    } else {
        Err(format!(
            "status {:?}, stderr {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// TCP servers on `ports` and a UDP one on 5353, each answering `tag ip`.
fn serve(p: &Pod, tcp: &[u16], out: &mut Servers) {
    for port in tcp {
        out.0.push(
            p.command("socat")
                .args([
                    &format!("TCP-LISTEN:{port},fork,reuseaddr"),
                    &format!("SYSTEM:echo {port} {}", p.ip),
                ])
                .spawn()
                .expect("tcp server"),
        );
    }
    out.0.push(
        p.command("socat")
            .args([
                "UDP-RECVFROM:5353,fork,reuseaddr",
                // Read the query before answering: `echo` alone may exit before
                // socat hands it the datagram, and socat then gives up on EPIPE
                // without sending the answer.
                &format!("SYSTEM:read q; echo udp {}", p.ip),
            ])
            .spawn()
            .expect("udp server"),
    );
}

#[test]
fn udp_affinity_hairpin_ports_and_icmp_errors() {
    let Some(_env) = vswitch_suite::e2e() else {
        return;
    };
    let sw = Netns::new("sw").expect("switch namespace");
    let d = Vswitchd::start(&sw, DaemonOpts::default()).expect("vswitchd");
    let client = attach_cni(&sw, &d, 10);
    let b1 = attach_cni(&sw, &d, 21);
    let b2 = attach_cni(&sw, &d, 22);
    let mut servers = Servers(Vec::new());
    serve(&b1, &[8080, 8081], &mut servers);
    serve(&b2, &[8080, 8081], &mut servers);
    let dir = TempDir::new("svc").expect("dir");
    let both = [ep("10.250.0.21", true), ep("10.250.0.22", true)].join(", ");
    let manifest = |dns_eps: &str| {
        let mut m = String::from(NODE);
        m += &plain_pod("b1", "10.250.0.21");
        m += &plain_pod("b2", "10.250.0.22");
        m += &plain_pod("client", "10.250.0.10");
        m += &svc(
            "dns",
            "clusterIP: 10.96.0.53, ports: [{name: dns, port: 53, protocol: UDP, targetPort: 5353}]",
            dns_eps,
            "{name: dns, port: 5353, protocol: UDP}",
        );
        m += &svc(
            "sticky",
            "clusterIP: 10.96.0.20, sessionAffinity: ClientIP, sessionAffinityConfig: {clientIP: {timeoutSeconds: 1}}, ports: [{name: http, port: 80, targetPort: 8080}]",
            &both,
            "{name: http, port: 8080}",
        );
        m += &svc(
            "self",
            "clusterIP: 10.96.0.30, ports: [{name: http, port: 80, targetPort: 8080}]",
            &ep("10.250.0.21", true),
            "{name: http, port: 8080}",
        );
        m += &svc(
            "multi",
            "clusterIP: 10.96.0.40, ports: [{name: http, port: 80, targetPort: 8080}, {name: alt, port: 81, targetPort: 8081}]",
            &ep("10.250.0.22", true),
            "{name: http, port: 8080}, {name: alt, port: 8081}",
        );
        m += &svc(
            "closed",
            "clusterIP: 10.96.0.60, ports: [{name: x, port: 53, protocol: UDP, targetPort: 9999}]",
            &ep("10.250.0.22", true),
            "{name: x, port: 9999, protocol: UDP}",
        );
        m
    };
    apply_text(&d, &dir, &manifest(&both));
    let first = wait_for(Duration::from_secs(10), || {
        fetch(&client.ns, "10.96.0.40:80").ok()
    });
    assert_eq!(first.as_deref(), Some("8080 10.250.0.22"), "multi port 80");

    // Several ports of one service, each to its own target port.
    assert_eq!(
        fetch(&client.ns, "10.96.0.40:81").as_deref(),
        Ok("8081 10.250.0.22")
    );

    // UDP through the service, to both endpoints over many source ports.
    let mut seen = BTreeSet::new();
    for _ in 0..16 {
        seen.insert(udp_ask(&client, "10.96.0.53:53", 0).expect("udp answer"));
    }
    assert_eq!(seen.len(), 2, "{seen:?}");

    // The DNS black hole: the endpoint a UDP flow uses goes away; the next
    // datagram of the same flow reaches the one that is left.
    let chosen = udp_ask(&client, "10.96.0.53:53", 40053).expect("udp from fixed port");
    assert_eq!(
        udp_ask(&client, "10.96.0.53:53", 40053).as_deref(),
        Ok(chosen.as_str()),
        "same flow, same endpoint"
    );
    let (gone, left) = if chosen.ends_with(".21") {
        ("10.250.0.21", "10.250.0.22")
    } else {
        ("10.250.0.22", "10.250.0.21")
    };
    let ct = d
        .vsctl(&["conntrack", "--proto", "udp", "--src", "10.250.0.10"])
        .expect("conntrack");
    println!("{ct}");
    assert!(
        ct.contains("sport=40053") && ct.contains("nat=dnat"),
        "{ct}"
    );
    apply_text(&d, &dir, &manifest(&ep(left, true)));
    assert_eq!(
        udp_ask(&client, "10.96.0.53:53", 40053).as_deref(),
        Ok(format!("udp {left}").as_str()),
        "{gone} was removed but the flow still goes there"
    );

    // Session affinity: one client, one endpoint, over many connections.
    let mut seen = BTreeSet::new();
    for _ in 0..12 {
        seen.insert(fetch(&client.ns, "10.96.0.20:80").expect("sticky"));
    }
    assert_eq!(seen.len(), 1, "affinity not kept: {seen:?}");
    // ... and its 1 s timeout honoured: after a pause, Maglev chooses again
    // (per connection hash), so both endpoints show up over a few pauses.
    let mut after = seen.clone();
    for _ in 0..12 {
        std::thread::sleep(Duration::from_millis(1200));
        after.insert(fetch(&client.ns, "10.96.0.20:80").expect("sticky"));
        if after.len() == 2 {
            break;
        }
    }
    assert_eq!(after.len(), 2, "affinity never timed out: {after:?}");

    // Hairpin: a pod reaching its own service lands on itself.
    assert_eq!(
        fetch(&b1.ns, "10.96.0.30:80").as_deref(),
        Ok("8080 10.250.0.21"),
        "hairpin"
    );
    let ct = d
        .vsctl_json(&["conntrack", "--src", "10.250.0.21", "--proto", "tcp"])
        .expect("conntrack json");
    let entries = ct["entries"].as_array().cloned().unwrap_or_default();
    assert!(
        entries
            .iter()
            .any(|e| e["hairpin"] == true && e["reply"]["dst"] == "169.254.169.253"),
        "{ct}"
    );

    // ICMP errors: the endpoint's port unreachable comes back quoting the VIP,
    // so a connected UDP socket gets ECONNREFUSED.
    let r = udp_ask(&client, "10.96.0.60:53", 0);
    assert!(
        r.as_ref().is_err_and(|e| e.contains("Connection refused")),
        "{r:?}"
    );

    // The listings.
    let s = d.vsctl(&["services"]).expect("services");
    println!("{s}");
    assert!(
        s.contains("shop/multi:81/TCP") && s.contains("10.250.0.22:8081"),
        "{s}"
    );
    let js = d.vsctl_json(&["services"]).expect("services json");
    let hits: u64 = js["services"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| {
            f["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("shop/sticky"))
        })
        .flat_map(|f| f["endpoints"].as_array().cloned().unwrap_or_default())
        .filter_map(|e| e["hits"].as_u64())
        .sum();
    assert!(hits >= 12, "{js}");
    let st = d.vsctl_json(&["stats"]).expect("stats");
    let c = &st["switch"]["conntrack"];
    assert!(c["inserts"].as_u64().unwrap_or(0) > 20, "{c}");
    assert!(c["entries"].as_u64().unwrap_or(0) > 0, "{c}");
    let flushed = d
        .vsctl_json(&["conntrack", "--flush", "--proto", "udp"])
        .expect("flush");
    assert!(flushed["flushed"].as_u64().unwrap_or(0) >= 1, "{flushed}");
    let left = d
        .vsctl_json(&["conntrack", "--proto", "udp"])
        .expect("list");
    assert_eq!(left["matched"], 0, "{left}");
}

#[test]
fn node_port_via_gateway_local_policies_and_full_table() {
    let Some(_env) = vswitch_suite::e2e() else {
        return;
    };
    let dir = TempDir::new("svcnp").expect("dir");
    let cfg = dir.path().join("vswitchd.toml");
    std::fs::write(&cfg, "[conntrack]\nmax_entries = 16\n").expect("config");
    let sw = Netns::new("sw").expect("switch namespace");
    let d = Vswitchd::start(
        &sw,
        DaemonOpts {
            config: Some(cfg),
            ..DaemonOpts::default()
        },
    )
    .expect("vswitchd");
    // The host side of the gateway port: owns the gateway address and reaches
    // the node IP's NodePort through the switch.
    let host = Pod::new(
        &sw,
        std::net::Ipv4Addr::new(10, 250, 0, 1),
        PodOpts::default(),
    )
    .expect("host");
    host.ns
        .ip(&["link", "set", "dev", &host.ifname, "address", GW_MAC])
        .expect("gw mac");
    d.add_port_kind(&host.switch_if, "gateway", "packet")
        .expect("gateway port");
    host.ns
        .ip(&["route", "add", "192.0.2.1/32", "dev", &host.ifname])
        .expect("node route");
    host.ns
        .ip(&[
            "neigh",
            "add",
            "192.0.2.1",
            "lladdr",
            "0a:58:c0:00:02:01",
            "dev",
            &host.ifname,
        ])
        .expect("node neighbour");
    let client = attach_cni(&sw, &d, 10);
    let b1 = attach_cni(&sw, &d, 21);
    let mut servers = Servers(Vec::new());
    serve(&b1, &[8080], &mut servers);
    // One local endpoint and one on another node (unreachable here: were it
    // chosen, the connection would time out).
    let eps = [
        ep_on("10.250.0.21", "node-a"),
        ep_on("10.251.0.5", "node-b"),
    ]
    .join(", ");
    let mut m = String::from(NODE);
    m += &plain_pod("b1", "10.250.0.21");
    m += &svc(
        "np",
        "type: NodePort, clusterIP: 10.96.0.70, externalTrafficPolicy: Local, internalTrafficPolicy: Local, ports: [{name: http, port: 80, targetPort: 8080, nodePort: 30080}]",
        &eps,
        "{name: http, port: 8080}",
    );
    apply_text(&d, &dir, &m);
    let s = d.vsctl(&["services"]).expect("services");
    println!("{s}");
    assert!(s.contains("192.0.2.1:30080"), "{s}");
    let first = wait_for(Duration::from_secs(10), || {
        fetch(&host.ns, "192.0.2.1:30080").ok()
    });
    assert_eq!(first.as_deref(), Some("8080 10.250.0.21"), "NodePort");
    // Four of each: every one stays in the table (assured, TIME_WAIT for 30 s)
    // and assured entries are never evicted, so more than 16 would fill the
    // table and the next new connection would be dropped (as Linux does when
    // nothing is evictable); 8 + 1 leave room for the full-table part below.
    for _ in 0..4 {
        assert_eq!(
            fetch(&host.ns, "192.0.2.1:30080").as_deref(),
            Ok("8080 10.250.0.21"),
            "externalTrafficPolicy Local"
        );
        assert_eq!(
            fetch(&client.ns, "10.96.0.70:80").as_deref(),
            Ok("8080 10.250.0.21"),
            "internalTrafficPolicy Local"
        );
    }

    // A full table (16 entries): 40 unreplied UDP flows to a closed port, then
    // new connections still work because not-assured entries are evicted.
    for i in 0..40u16 {
        let _ = udp_ask(&client, "10.250.0.21:9", 41000 + i);
    }
    let st = d.vsctl_json(&["stats"]).expect("stats");
    let c = &st["switch"]["conntrack"];
    println!("conntrack: {c}");
    assert!(c["evictions"].as_u64().unwrap_or(0) >= 20, "{c}");
    assert!(c["entries"].as_u64().unwrap_or(99) <= 16, "{c}");
    for _ in 0..4 {
        assert_eq!(
            fetch(&client.ns, "10.96.0.70:80").as_deref(),
            Ok("8080 10.250.0.21"),
            "a new connection with the table full"
        );
    }
    let text = d.vsctl(&["stats"]).expect("stats");
    assert!(text.contains("conntrack: entries="), "{text}");
}

/// A pod with IPv6 address fd00:250::`last`/64 besides its IPv4 one (no DAD,
/// so the address is usable at once; neighbour discovery still runs).
fn attach_v6(sw: &Netns, d: &Vswitchd, last: u8) -> (Pod, String) {
    let p = attach_cni(sw, d, last);
    let v6 = format!("fd00:250::{last:x}");
    p.ns.ip(&[
        "-6",
        "addr",
        "add",
        &format!("{v6}/64"),
        "dev",
        &p.ifname,
        "nodad",
    ])
    .expect("ipv6 address");
    (p, v6)
}

fn dual_pod(name: &str, ip: &str, v6: &str, role: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: shop, uid: uid-{name}, labels: {{role: {role}}}}}
spec: {{nodeName: node-a, containers: [{{name: c, image: x}}]}}
status: {{phase: Running, podIP: {ip}, podIPs: [{{ip: {ip}}}, {{ip: '{v6}'}}]}}
---
"
    )
}

fn ping6(p: &Pod, to: &str) -> bool {
    p.command("ping")
        .args(["-6", "-c", "2", "-i", "0.2", "-W", "2", to])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// IPv6 between pods while a Service (and so conntrack over all pod traffic)
/// is configured: neighbour discovery is left untracked instead of `+inv`
/// and dropped, so `ping -6` works; with a NetworkPolicy isolating one pod,
/// neighbour discovery still passes (only TCP 8080 from the client is
/// allowed in, and the client must resolve the server for it), echo does not.
#[test]
fn ipv6_neighbour_discovery_and_ping_with_services_and_policy() {
    let Some(_env) = vswitch_suite::e2e() else {
        return;
    };
    let sw = Netns::new("sw").expect("switch namespace");
    let d = Vswitchd::start(&sw, DaemonOpts::default()).expect("vswitchd");
    let (a, a6) = attach_v6(&sw, &d, 10);
    let (b, b6) = attach_v6(&sw, &d, 11);
    let (c, c6) = attach_v6(&sw, &d, 12);
    let mut servers = Servers(Vec::new());
    servers.0.push(
        b.command("socat")
            .args(["TCP6-LISTEN:8080,fork,reuseaddr", "SYSTEM:echo b6"])
            .spawn()
            .expect("server"),
    );
    let pods = [
        dual_pod("a", &a.ip.to_string(), &a6, "client"),
        dual_pod("b", &b.ip.to_string(), &b6, "server"),
        dual_pod("c", &c.ip.to_string(), &c6, "other"),
    ]
    .concat();
    let dir = TempDir::new("svc6").expect("dir");
    let service = svc(
        "web",
        "clusterIP: 10.96.0.10, ports: [{port: 80, targetPort: 8080}]",
        &ep_on("10.250.0.11", "node-a"),
        "{port: 8080}",
    );
    println!("{}", apply(&d, &dir, &format!("{NODE}{pods}{service}")));
    let flows = d.vsctl(&["dump-flows"]).expect("dump-flows");
    assert!(flows.contains("service_lb("), "{flows}");
    assert!(flows.contains("ct("), "{flows}");
    let inv = |d: &Vswitchd| -> u64 {
        let s = d.vsctl(&["stats", "--json"]).unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&s).unwrap_or_default();
        v["conntrack"]["invalid"].as_u64().unwrap_or(u64::MAX)
    };
    let before = inv(&d);

    // Neighbour discovery and echo, both ways, between a and c.
    assert!(ping6(&a, &c6), "ping -6 a -> c with a service configured");
    assert!(ping6(&c, &a6), "ping -6 c -> a");
    let n = a.ns.ip(&["-6", "neigh", "show", &c6]).unwrap_or_default();
    assert!(n.contains("lladdr"), "a resolved c: {n}");
    // The IPv4 service still works beside it.
    let got = wait_for(Duration::from_secs(10), || {
        fetch(&a.ns, "10.96.0.10:80").ok()
    });
    assert!(got.is_some(), "service over IPv4");
    assert_eq!(inv(&d), before, "nothing was invalid");

    // b isolated: only TCP 8080 from role=client.
    let policy = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: server, namespace: shop}
spec:
  podSelector: {matchLabels: {role: server}}
  policyTypes: [Ingress]
  ingress: [{from: [{podSelector: {matchLabels: {role: client}}}], ports: [{port: 8080}]}]
---
";
    println!(
        "{}",
        apply(&d, &dir, &format!("{NODE}{pods}{service}{policy}"))
    );
    // a has never talked to b: its first packet needs neighbour discovery
    // through b's policy.
    let answer = a
        .command("socat")
        .args([
            "-T",
            "3",
            "-",
            &format!("TCP6:[{b6}]:8080,connect-timeout=3"),
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    assert_eq!(answer, "b6", "TCP over IPv6 into the isolated pod");
    assert!(!ping6(&a, &b6), "echo into b is not allowed by its policy");
    assert!(!ping6(&c, &b6), "nor from c");
    let n = c.ns.ip(&["-6", "neigh", "show", &b6]).unwrap_or_default();
    assert!(
        n.contains("lladdr"),
        "c still resolved b (neighbour discovery is not policed): {n}"
    );
    assert!(ping6(&b, &a6), "b's own echo out, and its reply back in");
    assert_eq!(inv(&d), before, "nothing was invalid");
}

//! The upstream Kubernetes NetworkPolicy e2e cases (test/e2e/network/netpol)
//! against one vswitchd: namespaces x, y, z with pods a, b, c serving TCP and UDP
//! on 80 and 81, each case a policy set fed through `vswitch-agent --manifests`
//! and a full 9x9 reachability matrix probed in parallel.
//!
//!     cargo build && cargo test --test netpol -- --nocapture
//!
//! Needs root and built binaries. Pods: x/a=10.250.0.10 ... z/c=10.250.0.18.

use vswitch_suite::netpol::{Cluster, Matrix, Proto};

fn np(ns: &str, name: &str, spec: &str) -> String {
    format!(
        "---\n{{\"apiVersion\": \"networking.k8s.io/v1\", \"kind\": \"NetworkPolicy\", \"metadata\": {{\"name\": \"{name}\", \"namespace\": \"{ns}\"}}, \"spec\": {spec}}}\n"
    )
}

const NS: [&str; 3] = ["x", "y", "z"];
fn pods_of(ns: &str) -> Vec<String> {
    ["a", "b", "c"]
        .iter()
        .map(|p| format!("{ns}/{p}"))
        .collect()
}

/// Everything open except traffic into `to` from pods not in `allowed_from`.
fn only_from(to: &str, allowed_from: &[&str]) -> Matrix {
    let mut m = Matrix::all(true);
    m.to(to, false);
    for f in allowed_from {
        m.set(f, to, true);
    }
    m.self_allowed();
    m
}

fn all_pods() -> Vec<String> {
    NS.iter().flat_map(|n| pods_of(n)).collect()
}

struct Case {
    name: &'static str,
    policies: String,
    n: u64,
    checks: Vec<(u16, Proto, Matrix)>,
}

fn cases() -> Vec<Case> {
    use Proto::*;
    let mut v = Vec::new();
    // Deny all ingress into x.
    let mut m = Matrix::all(true);
    for p in pods_of("x") {
        m.to(&p, false);
    }
    m.self_allowed();
    v.push(Case {
        name: "deny-all ingress in x",
        policies: np(
            "x",
            "deny",
            r#"{"podSelector": {}, "policyTypes": ["Ingress"]}"#,
        ),
        n: 1,
        checks: vec![(80, Tcp, m.clone()), (80, Udp, m.clone()), (81, Tcp, m)],
    });
    // Deny all egress from x.
    let mut m = Matrix::all(true);
    for p in pods_of("x") {
        m.from(&p, false);
    }
    m.self_allowed();
    v.push(Case {
        name: "deny-all egress in x",
        policies: np(
            "x",
            "deny-egress",
            r#"{"podSelector": {}, "policyTypes": ["Egress"]}"#,
        ),
        n: 1,
        checks: vec![(80, Tcp, m.clone()), (81, Udp, m)],
    });
    // Allow x/a from namespace y.
    let from_y: Vec<String> = pods_of("y");
    let from_y_refs: Vec<&str> = from_y.iter().map(String::as_str).collect();
    v.push(Case {
        name: "allow from namespace (matchLabels)",
        policies: np(
            "x",
            "allow-y",
            r#"{"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}"#,
        ),
        n: 1,
        checks: vec![
            (80, Tcp, only_from("x/a", &from_y_refs)),
            (81, Udp, only_from("x/a", &from_y_refs)),
        ],
    });
    v.push(Case {
        name: "allow from namespace (matchExpressions In)",
        policies: np(
            "x",
            "allow-y-expr",
            r#"{"podSelector": {"matchExpressions": [{"key": "pod", "operator": "In", "values": ["a"]}]}, "ingress": [{"from": [{"namespaceSelector": {"matchExpressions": [{"key": "ns", "operator": "In", "values": ["y"]}]}}]}]}"#,
        ),
        n: 1,
        checks: vec![(80, Tcp, only_from("x/a", &from_y_refs))],
    });
    v.push(Case {
        name: "allow from namespaces NotIn [x] (matchExpressions)",
        policies: np(
            "x",
            "not-x",
            r#"{"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [{"namespaceSelector": {"matchExpressions": [{"key": "ns", "operator": "NotIn", "values": ["x"]}]}}]}]}"#,
        ),
        n: 1,
        checks: vec![(
            80,
            Tcp,
            only_from("x/a", &["y/a", "y/b", "y/c", "z/a", "z/b", "z/c"]),
        )],
    });
    v.push(Case {
        name: "allow from pod b in namespace y (podSelector AND namespaceSelector)",
        policies: np(
            "x",
            "and",
            r#"{"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}, "podSelector": {"matchLabels": {"pod": "b"}}}]}]}"#,
        ),
        n: 1,
        checks: vec![(80, Tcp, only_from("x/a", &["y/b"])), (80, Udp, only_from("x/a", &["y/b"]))],
    });
    v.push(Case {
        name: "multiple peers (OR): namespace y, or pod b of x",
        policies: np(
            "x",
            "or",
            r#"{"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}, {"podSelector": {"matchLabels": {"pod": "b"}}}]}]}"#,
        ),
        n: 1,
        checks: vec![(80, Tcp, only_from("x/a", &["y/a", "y/b", "y/c", "x/b"]))],
    });
    v.push(Case {
        name: "allow from pods in the same namespace (podSelector {})",
        policies: np(
            "x",
            "same-ns",
            r#"{"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [{"podSelector": {}}]}]}"#,
        ),
        n: 1,
        checks: vec![(80, Tcp, only_from("x/a", &["x/b", "x/c"]))],
    });
    // Ports.
    let all: Vec<String> = all_pods();
    let all_refs: Vec<&str> = all.iter().map(String::as_str).collect();
    let open = only_from("x/a", &all_refs);
    let closed = only_from("x/a", &[]);
    v.push(Case {
        name: "allow ingress on numbered port 81 (TCP)",
        policies: np(
            "x",
            "port-81",
            r#"{"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"ports": [{"port": 81}]}]}"#,
        ),
        n: 1,
        checks: vec![
            (81, Tcp, open.clone()),
            (80, Tcp, closed.clone()),
            (81, Udp, closed.clone()),
        ],
    });
    v.push(Case {
        name: "allow ingress on named port serve-81-tcp",
        policies: np(
            "x",
            "named",
            r#"{"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"ports": [{"port": "serve-81-tcp", "protocol": "TCP"}]}]}"#,
        ),
        n: 1,
        checks: vec![(81, Tcp, open.clone()), (80, Tcp, closed.clone())],
    });
    v.push(Case {
        name: "allow ingress on port range 80-81 (endPort), TCP only",
        policies: np(
            "x",
            "range",
            r#"{"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"ports": [{"port": 80, "endPort": 81, "protocol": "TCP"}]}]}"#,
        ),
        n: 1,
        checks: vec![
            (80, Tcp, open.clone()),
            (81, Tcp, open.clone()),
            (80, Udp, closed.clone()),
        ],
    });
    v.push(Case {
        name: "allow ingress on UDP 80 only",
        policies: np(
            "x",
            "udp",
            r#"{"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"ports": [{"port": 80, "protocol": "UDP"}]}]}"#,
        ),
        n: 1,
        checks: vec![(80, Udp, open.clone()), (80, Tcp, closed.clone()), (81, Udp, closed.clone())],
    });
    // ipBlock with except: all pods' /24 except y/b (10.250.0.14).
    let mut not_yb = all_refs.clone();
    not_yb.retain(|p| *p != "y/b");
    v.push(Case {
        name: "ingress from ipBlock with except",
        policies: np(
            "x",
            "ipblock",
            r#"{"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.250.0.0/24", "except": ["10.250.0.14/32"]}}]}]}"#,
        ),
        n: 1,
        checks: vec![(80, Tcp, only_from("x/a", &not_yb))],
    });
    // Egress to one CIDR.
    let mut m = Matrix::all(true);
    m.from("x/a", false).set("x/a", "y/b", true).self_allowed();
    v.push(Case {
        name: "egress to CIDR (y/b's /32 only)",
        policies: np(
            "x",
            "egress-cidr",
            r#"{"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"], "egress": [{"to": [{"ipBlock": {"cidr": "10.250.0.14/32"}}]}]}"#,
        ),
        n: 1,
        checks: vec![(80, Tcp, m.clone()), (81, Udp, m)],
    });
    // Egress on a named port of the destination pod.
    let mut m = Matrix::all(true);
    m.from("x/a", false).self_allowed();
    let mut m81 = Matrix::all(true);
    m81.self_allowed();
    v.push(Case {
        name: "egress on named port serve-81-udp (resolved at the destination)",
        policies: np(
            "x",
            "egress-named",
            r#"{"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"], "egress": [{"ports": [{"port": "serve-81-udp", "protocol": "UDP"}]}]}"#,
        ),
        n: 1,
        checks: vec![(81, Udp, m81), (80, Udp, m.clone()), (81, Tcp, m)],
    });
    // Stacked: deny-all + allow-all = allow all (union).
    let mut open_all = Matrix::all(true);
    open_all.self_allowed();
    v.push(Case {
        name: "deny-all plus allow-all ingress (policies combine as a union)",
        policies: format!(
            "{}{}",
            np(
                "x",
                "deny",
                r#"{"podSelector": {}, "policyTypes": ["Ingress"]}"#
            ),
            np("x", "allow-all", r#"{"podSelector": {}, "ingress": [{}]}"#)
        ),
        n: 2,
        checks: vec![(80, Tcp, open_all.clone())],
    });
    // Stacked ports: one policy allows 80 from y, another 81 from z.
    let mut m80 = only_from("x/a", &from_y_refs);
    m80.self_allowed();
    v.push(Case {
        name: "stacked policies: 80 from y, 81 from z",
        policies: format!(
            "{}{}",
            np("x", "p80", r#"{"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}], "ports": [{"port": 80}]}]}"#),
            np("x", "p81", r#"{"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "z"}}}], "ports": [{"port": 81}]}]}"#)
        ),
        n: 2,
        checks: vec![
            (80, Tcp, m80),
            (81, Tcp, only_from("x/a", &["z/a", "z/b", "z/c"])),
        ],
    });
    // Ingress and egress in one policy: x/a talks only to/from y.
    let mut m = Matrix::all(true);
    m.to("x/a", false).from("x/a", false);
    for p in &from_y_refs {
        m.set(p, "x/a", true).set("x/a", p, true);
    }
    m.self_allowed();
    v.push(Case {
        name: "ingress and egress in one policy",
        policies: np(
            "x",
            "both",
            r#"{"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Ingress", "Egress"], "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}], "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}"#,
        ),
        n: 1,
        checks: vec![(80, Tcp, m)],
    });
    v
}

#[test]
fn upstream_netpol_cases() {
    let Some(_env) = vswitch_suite::e2e() else {
        return;
    };
    let c = Cluster::new().expect("cluster");
    let mut open = Matrix::all(true);
    open.self_allowed();
    c.expect(80, Proto::Tcp, &open)
        .expect("no policy: everything reachable");
    let mut failures = Vec::new();
    for case in cases() {
        let t = std::time::Instant::now();
        c.set_policies(&case.policies, case.n)
            .expect("policies in force");
        for (port, proto, want) in &case.checks {
            if let Err(e) = c.expect(*port, *proto, want) {
                failures.push(format!("{}: {e}", case.name));
            }
        }
        eprintln!("case '{}': {:?}", case.name, t.elapsed());
        c.set_policies("", 0).expect("policies removed");
    }
    // Policy update: allow from y, then change to allow from z.
    let pol = |ns: &str| {
        np(
            "x",
            "update",
            &format!(
                r#"{{"podSelector": {{"matchLabels": {{"pod": "a"}}}}, "ingress": [{{"from": [{{"namespaceSelector": {{"matchLabels": {{"ns": "{ns}"}}}}}}]}}]}}"#
            ),
        )
    };
    c.set_policies(&pol("y"), 1).expect("update 1");
    if let Err(e) = c.expect(80, Proto::Tcp, &only_from("x/a", &["y/a", "y/b", "y/c"])) {
        failures.push(format!("policy update (before): {e}"));
    }
    c.set_policies(&pol("z"), 1).expect("update 2");
    if let Err(e) = c.expect(80, Proto::Tcp, &only_from("x/a", &["z/a", "z/b", "z/c"])) {
        failures.push(format!("policy update (after): {e}"));
    }
    // Pod relabel: allow from pods labelled role=client in any namespace.
    c.set_policies(
        &np(
            "x",
            "clients",
            r#"{"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"role": "client"}}}]}]}"#,
        ),
        1,
    )
    .expect("clients policy");
    if let Err(e) = c.expect(80, Proto::Tcp, &only_from("x/a", &[])) {
        failures.push(format!("pod relabel (before): {e}"));
    }
    c.set_labels(&[], &[("y/c", "role", "client")])
        .expect("relabel pod");
    if let Err(e) = c.expect(80, Proto::Tcp, &only_from("x/a", &["y/c"])) {
        failures.push(format!("pod relabel (after): {e}"));
    }
    // Namespace relabel: allow from namespaces labelled team=t1.
    c.set_labels(&[], &[]).expect("labels back");
    c.set_policies(
        &np(
            "x",
            "team",
            r#"{"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "t1"}}}]}]}"#,
        ),
        1,
    )
    .expect("team policy");
    if let Err(e) = c.expect(80, Proto::Tcp, &only_from("x/a", &[])) {
        failures.push(format!("namespace relabel (before): {e}"));
    }
    c.set_labels(&[("z", "team", "t1")], &[])
        .expect("relabel ns");
    if let Err(e) = c.expect(80, Proto::Tcp, &only_from("x/a", &["z/a", "z/b", "z/c"])) {
        failures.push(format!("namespace relabel (after): {e}"));
    }
    // Back to no policy: the pipeline is the plain skeleton again.
    c.set_policies("", 0).expect("no policies");
    let flows = c.daemon.vsctl(&["dump-flows"]).expect("dump-flows");
    if flows.contains("policy(") {
        failures.push(format!("policy flows left behind:\n{flows}"));
    }
    if let Err(e) = c.expect(80, Proto::Tcp, &open) {
        failures.push(format!("after removing every policy: {e}"));
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// `vsctl policies` against the daemon: real connections in, per-rule allowed
/// counters, per-policy denials, selected pods and the audit log out.
///
///     cargo test --test netpol -- vsctl_policies
#[test]
fn vsctl_policies_counts_selection_and_audit() {
    let Some(_env) = vswitch_suite::e2e() else {
        return;
    };
    let c = Cluster::with_opts(vswitch_suite::daemon::DaemonOpts {
        extra_args: vec!["--policy-audit-per-s".into(), "1000".into()],
        ..Default::default()
    })
    .expect("cluster");
    let policies = [
        // x/a: TCP 80 from namespace y (rule 0), UDP 81 from x/b (rule 1).
        np(
            "x",
            "allow",
            r#"{"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [
                {"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}], "ports": [{"protocol": "TCP", "port": 80}]},
                {"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}], "ports": [{"protocol": "UDP", "port": 81}]}]}"#,
        ),
        // x/b: nothing in.
        np(
            "x",
            "deny-b",
            r#"{"podSelector": {"matchLabels": {"pod": "b"}}, "policyTypes": ["Ingress"]}"#,
        ),
        // z/c: out to namespace x on TCP 80 only.
        np(
            "z",
            "egress-c",
            r#"{"podSelector": {"matchLabels": {"pod": "c"}}, "policyTypes": ["Egress"], "egress": [
                {"to": [{"namespaceSelector": {"matchLabels": {"ns": "x"}}}], "ports": [{"port": 80}]}]}"#,
        ),
    ]
    .concat();
    c.set_policies(&policies, 3).expect("policies in force");
    // Wait until the engine has them (the flows come with the engine).
    vswitch_suite::wait_for(std::time::Duration::from_secs(10), || {
        c.probe_pair("z/b", "x/a", 80, Proto::Tcp)
            .ok()
            .filter(|ok| !ok)
    })
    .expect("policy in force: z/b cannot reach x/a");
    let before = c.daemon.vsctl_json(&["policies"]).expect("policies");
    let get = |v: &serde_json::Value, name: &str| {
        v["policies"]
            .as_array()
            .and_then(|a| a.iter().find(|p| p["name"] == name).cloned())
            .unwrap_or_else(|| panic!("no policy {name} in {v}"))
    };
    let n = |v: &serde_json::Value, f: &str| v[f].as_u64().unwrap_or(u64::MAX);
    let rule = |v: &serde_json::Value, dir: &str, i: u64| {
        v["rules"]
            .as_array()
            .and_then(|a| {
                a.iter()
                    .find(|r| r["direction"] == dir && r["index"] == i)
                    .cloned()
            })
            .unwrap_or_else(|| panic!("no {dir} rule {i} in {v}"))
    };
    let allow0 = get(&before, "allow");
    let base_denied_a = n(&allow0, "denied_ingress");
    assert!(
        base_denied_a >= 1,
        "the wait's probes were denied: {allow0}"
    );
    assert_eq!(allow0["selected"], serde_json::json!(["a"]));
    assert_eq!(get(&before, "deny-b")["selected"], serde_json::json!(["b"]));
    assert_eq!(
        get(&before, "egress-c")["selected"],
        serde_json::json!(["c"])
    );
    assert_eq!(
        get(&before, "egress-c")["types"],
        serde_json::json!(["Egress"])
    );
    assert_eq!(n(&rule(&allow0, "ingress", 0), "allowed"), 0);

    // Allowed: 3 TCP connections y/a -> x/a (rule 0), 2 UDP flows x/b -> x/a (rule 1).
    for _ in 0..3 {
        assert!(c.probe_pair("y/a", "x/a", 80, Proto::Tcp).expect("probe"));
    }
    for _ in 0..2 {
        assert!(c.probe_pair("x/b", "x/a", 81, Proto::Udp).expect("probe"));
    }
    // Denied into x/b (deny-b), and z/c -> x/a: egress allowed by egress-c rule 0,
    // ingress denied by allow. z/c -> y/a: denied by egress-c.
    assert!(!c.probe_pair("y/a", "x/b", 80, Proto::Tcp).expect("probe"));
    assert!(!c.probe_pair("z/c", "x/a", 80, Proto::Tcp).expect("probe"));
    assert!(!c.probe_pair("z/c", "y/a", 80, Proto::Tcp).expect("probe"));
    // Not isolated in that direction: y/b -> z/c is open (egress-c is egress only).
    assert!(c.probe_pair("y/b", "z/c", 80, Proto::Tcp).expect("probe"));

    let after = c.daemon.vsctl_json(&["policies"]).expect("policies");
    let allow = get(&after, "allow");
    assert_eq!(n(&rule(&allow, "ingress", 0), "allowed"), 3, "{allow}");
    assert_eq!(n(&rule(&allow, "ingress", 1), "allowed"), 2, "{allow}");
    assert!(n(&allow, "denied_ingress") > base_denied_a, "{allow}");
    assert_eq!(n(&allow, "denied_egress"), 0, "{allow}");
    let deny_b = get(&after, "deny-b");
    assert!(n(&deny_b, "denied_ingress") >= 1, "{deny_b}");
    assert_eq!(deny_b["rules"], serde_json::json!([]), "{deny_b}");
    let eg = get(&after, "egress-c");
    assert_eq!(n(&rule(&eg, "egress", 0), "allowed"), 1, "{eg}");
    assert!(n(&eg, "denied_egress") >= 1, "{eg}");
    assert_eq!(n(&eg, "denied_ingress"), 0, "{eg}");
    assert_eq!(after["size"]["policies"], 3);
    // The namespace filter and the text form.
    let only_z = c
        .daemon
        .vsctl_json(&["policies", "--namespace", "z"])
        .expect("policies -n z");
    assert_eq!(only_z["policies"].as_array().map(Vec::len), Some(1));
    let text = c.daemon.vsctl(&["policies"]).expect("policies text");
    assert!(text.contains("x/allow (Ingress)"), "{text}");
    assert!(text.contains("ingress rule 0: allowed=3"), "{text}");
    assert!(text.contains("selects: c"), "{text}");
    // The audit log names the denied connections.
    let log = c.daemon.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("connection denied by NetworkPolicy")
                && l.contains("10.250.0.18")
                && l.contains("10.250.0.13")
                && l.contains("egress")),
        "no audit line for z/c -> y/a:\n{log}"
    );
}

/// Bad policies (an invalid selector operator, CIDR, port, an unknown protocol) are
/// reported with their names; the good policy beside them is enforced.
///
///     cargo test --test netpol -- bad_policies
#[test]
fn bad_policies_reported_by_name_rest_enforced() {
    let Some(_env) = vswitch_suite::e2e() else {
        return;
    };
    let c = Cluster::new().expect("cluster");
    let policies = [
        np(
            "x",
            "good",
            r#"{"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}"#,
        ),
        np(
            "x",
            "bad-operator",
            r#"{"podSelector": {"matchExpressions": [{"key": "pod", "operator": "Near", "values": ["b"]}]}, "policyTypes": ["Ingress"]}"#,
        ),
        np(
            "x",
            "bad-cidr",
            r#"{"podSelector": {"matchLabels": {"pod": "b"}}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.250.0.300/24"}}]}]}"#,
        ),
        np(
            "y",
            "bad-port",
            r#"{"podSelector": {}, "ingress": [{"ports": [{"port": 70000}]}]}"#,
        ),
        np(
            "z",
            "bad-protocol",
            r#"{"podSelector": {}, "ingress": [{"ports": [{"protocol": "ICMP", "port": 80}]}]}"#,
        ),
    ]
    .concat();
    c.set_policies(&policies, 1)
        .expect("the good policy in force");
    let from_y: Vec<String> = pods_of("y");
    let from_y: Vec<&str> = from_y.iter().map(String::as_str).collect();
    // Only x/a is isolated: x/b (bad-operator, bad-cidr), y (bad-port) and z
    // (bad-protocol) stay open, since none of the bad policies is in force.
    let mut failures = Vec::new();
    for (port, proto) in [(80, Proto::Tcp), (81, Proto::Udp)] {
        if let Err(e) = c.expect(port, proto, &only_from("x/a", &from_y)) {
            failures.push(e);
        }
    }
    let v = c.daemon.vsctl_json(&["policies"]).expect("policies");
    let names: Vec<&str> = v["policies"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(names, ["good"], "{v}");
    // Each bad policy is named with what is wrong with it.
    let named = |log: &str, name: &str, what: &str| {
        log.lines()
            .any(|l| l.contains(name) && l.to_lowercase().contains(what))
    };
    let wanted = [
        ("x/bad-operator", "near"),
        ("x/bad-cidr", "10.250.0.300"),
        ("y/bad-port", "70000"),
        ("z/bad-protocol", "icmp"),
    ];
    let all_named = vswitch_suite::wait_for(std::time::Duration::from_secs(5), || {
        let log = c.agent.log_text();
        wanted.iter().all(|(n, w)| named(&log, n, w)).then_some(())
    });
    if all_named.is_none() {
        let log = c.agent.log_text();
        for (n, w) in wanted {
            if !named(&log, n, w) {
                failures.push(format!("{n} not reported (with '{w}')"));
            }
        }
        failures.push(format!("agent log:\n{log}"));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

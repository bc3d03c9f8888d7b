//! The compiled engine against a naive evaluator written straight from the
//! Kubernetes API documentation, on random pods, labels, namespaces, policies and
//! packets, after random incremental changes (relabel, delete, re-add).

use super::compile::{Compiler, NS_NAME_LABEL, proto_num};
use super::eval::Packet;
use super::{Cidr, Dir, ip_of};
use proptest::prelude::*;
use std::collections::BTreeMap;
use vswitch_proto::model::*;

/// A small deterministic generator driven by one proptest seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
    fn pick<T: Clone>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize].clone()
    }
}

const NSS: [&str; 3] = ["x", "y", "z"];

fn labels(r: &mut Rng) -> Labels {
    let mut l = Labels::new();
    for (k, vs) in [("app", ["a", "b", "c"]), ("tier", ["f", "g", "h"])] {
        if r.chance(70) {
            l.insert(k.into(), r.pick(&vs).into());
        }
    }
    l
}

fn selector(r: &mut Rng) -> LabelSelector {
    let mut s = LabelSelector::default();
    if r.chance(50) {
        s.match_labels.insert(
            r.pick(&["app", "tier", "ns"]).into(),
            r.pick(&["a", "b", "f", "x"]).into(),
        );
    }
    if r.chance(40) {
        let op = r.pick(&["In", "NotIn", "Exists", "DoesNotExist"]);
        let values = if op == "In" || op == "NotIn" {
            (0..1 + r.below(2))
                .map(|_| r.pick(&["a", "b", "c", "f", "y"]).to_string())
                .collect()
        } else {
            Vec::new()
        };
        s.match_expressions.push(LabelSelectorRequirement {
            key: r.pick(&["app", "tier", NS_NAME_LABEL]).into(),
            operator: op.into(),
            values,
        });
    }
    s
}

fn peer(r: &mut Rng) -> PolicyPeer {
    match r.below(4) {
        0 => PolicyPeer {
            ip_block: Some(IpBlock {
                cidr: r
                    .pick(&["10.0.0.0/24", "10.0.0.0/29", "0.0.0.0/0", "10.0.1.0/24"])
                    .into(),
                except: if r.chance(50) {
                    vec![r.pick(&["10.0.0.2/32", "10.0.0.4/30"]).into()]
                } else {
                    vec![]
                },
            }),
            ..PolicyPeer::default()
        },
        1 => PolicyPeer {
            pod_selector: Some(selector(r)),
            ..PolicyPeer::default()
        },
        2 => PolicyPeer {
            namespace_selector: Some(selector(r)),
            ..PolicyPeer::default()
        },
        _ => PolicyPeer {
            pod_selector: Some(selector(r)),
            namespace_selector: Some(selector(r)),
            ..PolicyPeer::default()
        },
    }
}

fn port(r: &mut Rng) -> PolicyPort {
    let protocol = r
        .chance(70)
        .then(|| r.pick(&[Protocol::TCP, Protocol::UDP, Protocol::SCTP]));
    match r.below(4) {
        0 => PolicyPort {
            protocol,
            port: None,
            end_port: None,
        },
        1 => PolicyPort {
            protocol,
            port: Some(PortRef::Number(r.pick(&[80, 81, 53]))),
            end_port: None,
        },
        2 => PolicyPort {
            protocol,
            port: Some(PortRef::Number(80)),
            end_port: Some(r.pick(&[80, 81, 90, 200])),
        },
        _ => PolicyPort {
            protocol,
            port: Some(PortRef::Name(
                r.pick(&["serve-80", "serve-81", "dns", "assoc"]).into(),
            )),
            end_port: None,
        },
    }
}

fn policy(r: &mut Rng, i: usize) -> NetworkPolicy {
    let mut spec = NetworkPolicySpec {
        pod_selector: selector(r),
        ..NetworkPolicySpec::default()
    };
    for _ in 0..r.below(3) {
        spec.ingress.push(IngressRule {
            from: (0..r.below(3)).map(|_| peer(r)).collect(),
            ports: (0..r.below(3)).map(|_| port(r)).collect(),
        });
    }
    for _ in 0..r.below(3) {
        spec.egress.push(EgressRule {
            to: (0..r.below(3)).map(|_| peer(r)).collect(),
            ports: (0..r.below(3)).map(|_| port(r)).collect(),
        });
    }
    spec.policy_types = match r.below(4) {
        0 => None,
        1 => Some(vec![PolicyType::Ingress]),
        2 => Some(vec![PolicyType::Egress]),
        _ => Some(vec![PolicyType::Ingress, PolicyType::Egress]),
    };
    NetworkPolicy {
        namespace: r.pick(&NSS).into(),
        name: format!("p{i}"),
        spec,
    }
}

fn pod(r: &mut Rng, i: usize) -> Pod {
    Pod {
        namespace: r.pick(&NSS).into(),
        name: format!("pod{i}"),
        uid: String::new(),
        labels: labels(r),
        ips: vec![format!("10.0.0.{}", i + 1)],
        mac: None,
        node_name: None,
        local: r.chance(85),
        host_network: false,
        phase: None,
        host_ifname: None,
        ports: vec![
            ContainerPort {
                name: "serve-80".into(),
                port: r.pick(&[80, 81]),
                protocol: Protocol::TCP,
            },
            ContainerPort {
                name: "dns".into(),
                port: 53,
                protocol: Protocol::UDP,
            },
            ContainerPort {
                name: "assoc".into(),
                port: r.pick(&[80, 81]),
                protocol: Protocol::SCTP,
            },
        ],
    }
}

/// The state the naive evaluator reads.
#[derive(Default, Clone)]
struct World {
    ns: BTreeMap<String, Labels>,
    pods: BTreeMap<String, Pod>,
    policies: BTreeMap<String, NetworkPolicy>,
}

impl World {
    fn ns_labels(&self, ns: &str) -> Labels {
        let mut l = self.ns.get(ns).cloned().unwrap_or_default();
        l.entry(NS_NAME_LABEL.into()).or_insert(ns.into());
        l
    }
    fn pod_by_ip(&self, ip: &str) -> Option<&Pod> {
        self.pods.values().find(|p| p.ips.iter().any(|i| i == ip))
    }

    fn peer_ok(&self, pol: &NetworkPolicy, peers: &[PolicyPeer], ip: &str) -> bool {
        if peers.is_empty() {
            return true;
        }
        let addr = ip_of(ip.parse().expect("ip"));
        peers.iter().any(|p| {
            if let Some(b) = &p.ip_block {
                let c = |s: &str| Cidr::parse(s).expect("cidr");
                return c(&b.cidr).contains(addr) && !b.except.iter().any(|e| c(e).contains(addr));
            }
            let Some(pod) = self.pod_by_ip(ip) else {
                return false;
            };
            let ns_ok = match &p.namespace_selector {
                None => pod.namespace == pol.namespace,
                Some(s) => s.matches(&self.ns_labels(&pod.namespace)),
            };
            ns_ok
                && p.pod_selector
                    .as_ref()
                    .is_none_or(|s| s.matches(&pod.labels))
        })
    }

    fn port_ok(&self, ports: &[PolicyPort], dst: &str, proto: u8, dport: u16) -> bool {
        ports.is_empty()
            || ports.iter().any(|pp| {
                let pr = proto_num(pp.protocol.unwrap_or_default());
                if pr != proto {
                    return false;
                }
                match (&pp.port, pp.end_port) {
                    (None, _) => true,
                    (Some(PortRef::Number(n)), None) => i32::from(dport) == *n,
                    (Some(PortRef::Number(n)), Some(e)) => (*n..=e).contains(&i32::from(dport)),
                    (Some(PortRef::Name(name)), _) => self.pod_by_ip(dst).is_some_and(|p| {
                        p.ports.iter().any(|c| {
                            &c.name == name
                                && proto_num(c.protocol) == proto
                                && c.port == i32::from(dport)
                        })
                    }),
                }
            })
    }

    fn allows(&self, dir: Dir, src: &str, dst: &str, proto: u8, dport: u16) -> bool {
        let me = match dir {
            Dir::Ingress => dst,
            Dir::Egress => src,
        };
        let Some(pod) = self.pod_by_ip(me).filter(|p| p.local && !p.host_network) else {
            return true;
        };
        let want = match dir {
            Dir::Ingress => PolicyType::Ingress,
            Dir::Egress => PolicyType::Egress,
        };
        let applying: Vec<&NetworkPolicy> = self
            .policies
            .values()
            .filter(|p| {
                p.namespace == pod.namespace
                    && p.spec.pod_selector.matches(&pod.labels)
                    && p.spec.effective_policy_types().contains(&want)
            })
            .collect();
        if applying.is_empty() {
            return true;
        }
        applying.iter().any(|p| match dir {
            Dir::Ingress => p.spec.ingress.iter().any(|r| {
                self.peer_ok(p, &r.from, src) && self.port_ok(&r.ports, dst, proto, dport)
            }),
            Dir::Egress => {
                p.spec.egress.iter().any(|r| {
                    self.peer_ok(p, &r.to, dst) && self.port_ok(&r.ports, dst, proto, dport)
                })
            }
        })
    }
}

fn check(w: &World, c: &Compiler, r: &mut Rng) -> Result<(), TestCaseError> {
    let mut ips: Vec<String> = w.pods.values().flat_map(|p| p.ips.clone()).collect();
    ips.push("10.0.1.9".into());
    ips.push("192.0.2.1".into());
    for _ in 0..60 {
        let src = r.pick(&ips);
        let dst = r.pick(&ips);
        let (proto, dport) = r.pick(&[
            (6u8, 80u16),
            (6, 81),
            (17, 80),
            (17, 53),
            (6, 85),
            (1, 0),
            (132, 80),
            (132, 81),
            (132, 53),
            (6, 150),
            (132, 150),
        ]);
        let p = Packet {
            src: ip_of(src.parse().expect("ip")),
            dst: ip_of(dst.parse().expect("ip")),
            proto,
            dport,
        };
        for dir in [Dir::Ingress, Dir::Egress] {
            let naive = w.allows(dir, &src, &dst, proto, dport);
            let got = c.engine().decide(dir, &p).allows();
            prop_assert_eq!(
                got,
                naive,
                "{:?} {} -> {} proto {} port {}",
                dir,
                src,
                dst,
                proto,
                dport
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn compiled_verdict_equals_naive_verdict(seed in 1u64..u64::MAX) {
        let mut r = Rng(seed);
        let mut w = World::default();
        let mut c = Compiler::new();
        for ns in NSS {
            let mut l = Labels::new();
            l.insert("ns".into(), ns.into());
            if r.chance(50) { l.insert("app".into(), r.pick(&["a", "b"]).into()); }
            c.set_namespace(ns, &l);
            w.ns.insert(ns.into(), l);
        }
        let n_pods = 3 + r.below(7) as usize;
        for i in 0..n_pods {
            let p = pod(&mut r, i);
            c.set_pod(&p);
            w.pods.insert(p.name.clone(), p);
        }
        for i in 0..1 + r.below(5) as usize {
            let p = policy(&mut r, i);
            prop_assert!(c.set_policy(&p).is_empty());
            w.policies.insert(format!("{}/{}", p.namespace, p.name), p);
        }
        check(&w, &c, &mut r)?;
        for step in 0..8 {
            match r.below(6) {
                0 => { // relabel a pod
                    let i = r.below(n_pods as u64) as usize;
                    if let Some(p) = w.pods.get_mut(&format!("pod{i}")) {
                        p.labels = labels(&mut r);
                        c.set_pod(p);
                    }
                }
                1 => { // relabel a namespace
                    let ns = r.pick(&NSS);
                    let mut l = Labels::new();
                    if r.chance(60) { l.insert("ns".into(), r.pick(&["x", "y"]).into()); }
                    if r.chance(50) { l.insert("app".into(), r.pick(&["a", "b"]).into()); }
                    c.set_namespace(ns, &l);
                    w.ns.insert(ns.into(), l);
                }
                2 => { // delete a pod
                    let i = r.below(n_pods as u64) as usize;
                    if let Some(p) = w.pods.remove(&format!("pod{i}")) {
                        c.remove_pod(&p.namespace, &p.name);
                    }
                }
                3 => { // delete a policy
                    if let Some(k) = w.policies.keys().next().cloned()
                        && let Some(p) = w.policies.remove(&k) {
                        c.remove_policy(&p.namespace, &p.name);
                    }
                }
                4 => { // replace or add a policy
                    let i = r.below(6) as usize;
                    let p = policy(&mut r, i);
                    let k = format!("{}/{}", p.namespace, p.name);
                    c.set_policy(&p);
                    w.policies.insert(k, p);
                }
                _ => { // move a pod's IP (delete + re-add under another name)
                    let i = n_pods + step;
                    let mut p = pod(&mut r, i);
                    p.ips = vec![format!("10.0.0.{}", 100 + step)];
                    c.set_pod(&p);
                    w.pods.insert(p.name.clone(), p);
                }
            }
            check(&w, &c, &mut r)?;
        }
    }
}

#[test]
fn deny_all_then_allow_from_namespace() {
    let mut c = Compiler::new();
    let mk = |ns: &str, name: &str, ip: &str| Pod {
        namespace: ns.into(),
        name: name.into(),
        uid: String::new(),
        labels: [("pod".to_string(), name.to_string())].into(),
        ips: vec![ip.into()],
        mac: None,
        node_name: None,
        local: true,
        host_network: false,
        phase: None,
        host_ifname: None,
        ports: vec![],
    };
    c.set_pod(&mk("x", "a", "10.0.0.1"));
    c.set_pod(&mk("y", "b", "10.0.0.2"));
    let pkt = Packet {
        src: ip_of("10.0.0.2".parse().expect("ip")),
        dst: ip_of("10.0.0.1".parse().expect("ip")),
        proto: 6,
        dport: 80,
    };
    assert!(
        c.engine().decide(Dir::Ingress, &pkt).allows(),
        "no policy: open"
    );
    let deny = NetworkPolicy {
        namespace: "x".into(),
        name: "deny".into(),
        spec: NetworkPolicySpec::default(),
    };
    assert!(c.set_policy(&deny).is_empty());
    assert!(
        !c.engine().decide(Dir::Ingress, &pkt).allows(),
        "empty podSelector isolates"
    );
    assert!(
        c.engine().decide(Dir::Egress, &pkt).allows(),
        "ingress only"
    );
    let allow = NetworkPolicy {
        namespace: "x".into(),
        name: "allow-y".into(),
        spec: NetworkPolicySpec {
            ingress: vec![IngressRule {
                from: vec![PolicyPeer {
                    namespace_selector: Some(LabelSelector {
                        match_labels: [(NS_NAME_LABEL.to_string(), "y".to_string())].into(),
                        ..LabelSelector::default()
                    }),
                    ..PolicyPeer::default()
                }],
                ports: vec![],
            }],
            ..NetworkPolicySpec::default()
        },
    };
    assert!(c.set_policy(&allow).is_empty());
    assert!(
        c.engine().decide(Dir::Ingress, &pkt).allows(),
        "union of policies"
    );
    c.remove_policy("x", "allow-y");
    assert!(!c.engine().decide(Dir::Ingress, &pkt).allows());
    c.remove_policy("x", "deny");
    assert!(c.engine().decide(Dir::Ingress, &pkt).allows());
    assert_eq!(c.engine().size().groups, 0, "groups freed");
}

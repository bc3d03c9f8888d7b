//! Scale figures (docs/benchmarks.md, "NetworkPolicy"):
//!
//!     cargo test --release -p vswitch --lib policy::scale -- --ignored --nocapture
//!
//! 1k pods, 0/100/1k/10k policies: engine size, time to add the policies, to
//! realise a pod label change and a policy change, and the verdict cost.

use super::compile::Compiler;
use super::eval::Packet;
use super::{Dir, v4};
use std::time::Instant;
use vswitch_proto::model::*;

fn pod(i: usize, app: usize) -> Pod {
    Pod {
        namespace: format!("ns{}", i % 10),
        name: format!("pod{i}"),
        uid: String::new(),
        labels: [
            ("app".to_string(), format!("app{app}")),
            ("team".to_string(), format!("t{}", i % 50)),
        ]
        .into(),
        ips: vec![std::net::Ipv4Addr::from(0x0a00_0000 + i as u32).to_string()],
        mac: None,
        node_name: None,
        local: true,
        host_network: false,
        phase: None,
        host_ifname: None,
        ports: vec![],
    }
}

fn policy(i: usize) -> NetworkPolicy {
    let sel = |k: &str, v: String| LabelSelector {
        match_labels: [(k.to_string(), v)].into(),
        ..LabelSelector::default()
    };
    NetworkPolicy {
        namespace: format!("ns{}", i % 10),
        name: format!("p{i}"),
        spec: NetworkPolicySpec {
            pod_selector: sel("app", format!("app{}", i % 100)),
            ingress: vec![IngressRule {
                from: vec![PolicyPeer {
                    pod_selector: Some(sel("team", format!("t{}", i % 50))),
                    namespace_selector: Some(LabelSelector::default()),
                    ..PolicyPeer::default()
                }],
                ports: vec![PolicyPort {
                    protocol: None,
                    port: Some(PortRef::Number(80 + (i % 20) as i32)),
                    end_port: None,
                }],
            }],
            ..NetworkPolicySpec::default()
        },
    }
}

#[test]
#[ignore]
fn scale_figures() {
    for n_pol in [0usize, 100, 1000, 10000] {
        let mut c = Compiler::new();
        for i in 0..1000 {
            c.set_pod(&pod(i, i % 100));
        }
        let t = Instant::now();
        for i in 0..n_pol {
            c.set_policy(&policy(i));
        }
        let add = t.elapsed();
        // A pod label change (it leaves its app's policies for another app's).
        let t = Instant::now();
        c.set_pod(&pod(7, 55));
        let relabel = t.elapsed();
        let t = Instant::now();
        let _published = c.engine().clone();
        let publish = t.elapsed();
        // A policy change.
        let t = Instant::now();
        let mut p = policy(3);
        p.spec.ingress[0].ports[0].port = Some(PortRef::Number(8080));
        c.set_policy(&p);
        let pchange = t.elapsed();
        // Verdict cost (what policy(ingress) does on a new connection).
        let e = c.engine().clone();
        let n = 1_000_000u32;
        let t = Instant::now();
        let mut allowed = 0u32;
        for k in 0..n {
            let pkt = Packet {
                src: v4(0x0a00_0000 + (k % 1000)),
                dst: v4(0x0a00_0000 + ((k * 7) % 1000)),
                proto: 6,
                dport: 80 + (k % 20) as u16,
            };
            allowed += u32::from(e.decide(Dir::Ingress, &pkt).allows());
        }
        let per = t.elapsed().as_nanos() as f64 / f64::from(n);
        let s = e.size();
        println!(
            "policies={n_pol:>5} add_all={add:>10.2?} relabel={relabel:>9.2?} publish={publish:>9.2?} policy_change={pchange:>9.2?} verdict={per:>6.0}ns allowed={allowed} size={s:?}"
        );
    }
}

//! `policies` (`vsctl policies`): every NetworkPolicy in force with its per-rule
//! allowed counters, its denials and the local pods it selects.

use super::compile::Compiler;
use super::{Dir, EngineSize};
use std::sync::atomic::Ordering;
use vswitch_proto::{PoliciesParams, PoliciesReply, PolicyEngineSize, PolicyInfo, PolicyRuleInfo};

/// The reply to `policies` (empty when the chain has no policy realizer).
pub fn policies(c: Option<&Compiler>, p: &PoliciesParams) -> PoliciesReply {
    let Some(c) = c else {
        return PoliciesReply::default();
    };
    let e = c.engine();
    let mut out: Vec<PolicyInfo> = e
        .policies()
        .filter(|pi| p.namespace.as_deref().is_none_or(|n| n == pi.namespace))
        .map(|pi| {
            let (compiled, mut selected) = c.view(&pi.namespace, &pi.name).unwrap_or_default();
            selected.sort();
            let count = |i: usize| {
                pi.counters
                    .allowed
                    .get(i)
                    .map_or(0, |a| a.load(Ordering::Relaxed))
            };
            let mut rules = Vec::new();
            for (dir, n, base) in [
                (Dir::Ingress, pi.n_ingress, 0),
                (Dir::Egress, pi.n_egress, pi.n_ingress),
            ] {
                for index in 0..n {
                    rules.push(PolicyRuleInfo {
                        direction: dir.as_str().to_string(),
                        index,
                        enforced: compiled.contains(&(dir, index)),
                        allowed: count((base + index) as usize),
                    });
                }
            }
            let mut types = Vec::new();
            if pi.types.0 {
                types.push("Ingress".to_string());
            }
            if pi.types.1 {
                types.push("Egress".to_string());
            }
            PolicyInfo {
                namespace: pi.namespace.clone(),
                name: pi.name.clone(),
                types,
                rules,
                denied_ingress: pi.counters.denied_ingress.load(Ordering::Relaxed),
                denied_egress: pi.counters.denied_egress.load(Ordering::Relaxed),
                selected,
            }
        })
        .collect();
    out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    let s: EngineSize = e.size();
    PoliciesReply {
        policies: out,
        size: PolicyEngineSize {
            policies: s.policies as u64,
            rules: s.rules as u64,
            groups: s.groups as u64,
            group_members: s.group_members as u64,
            applied: s.applied as u64,
            applied_rules: s.applied_rules as u64,
        },
    }
}

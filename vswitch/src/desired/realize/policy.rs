//! NetworkPolicy realizer: keeps the policy engine in step with desired state and
//! the policy flows of tables 20 and 40 present exactly while a policy exists.
//!
//! With no NetworkPolicy the pipeline stays the plain skeleton. With one or more:
//!
//! ```text
//! table=20 priority=100 ct_state=+new+trk actions=policy(egress),goto_table:21
//! table=20 priority=90  ct_state=-trk,ip  actions=policy(egress),goto_table:21   (and ipv6)
//! table=40 priority=100 ct_state=+new+trk actions=policy(ingress),goto_table:41
//! table=40 priority=90  ct_state=-trk,ip  actions=policy(ingress),goto_table:41  (and ipv6)
//! ```
//!
//! plus the shared conntrack base ([`super::ct_base`]). Isolation is decided by pod
//! IP from desired state, not by port, so a pod's port is under policy from its
//! first packet, whenever it attaches; and at a restart desired state (and so the
//! engine and these flows) is restored before any port (see `vswitchd`).

use super::{Change, RealizeCtx, Realizer, ct_base};
use crate::Datapath;
use crate::flow::layout::{self, cookie};
use crate::flow::parse::{NoPortNames, parse_flow};
use crate::flow::spec::{FlowFilter, FlowSpec};
use crate::flow::tables::FlowMod;
use crate::policy::compile::Compiler;
use std::sync::Arc;
use std::time::Instant;
use vswitch_proto::DesiredState;
use vswitch_proto::model::{Kind, Object};

/// The policy flows (cookie [`cookie::POLICY`]).
pub fn flows() -> Vec<FlowSpec> {
    let mut text = Vec::new();
    for (t, next, dir) in [
        (layout::EGRESS_POLICY, layout::EGRESS_DEFAULT, "egress"),
        (layout::INGRESS_POLICY, layout::INGRESS_DEFAULT, "ingress"),
    ] {
        text.push(format!(
            "table={t},priority=100,ct_state=+new+trk,actions=policy({dir}),goto_table:{next}"
        ));
        for ip in ["ip", "ipv6"] {
            text.push(format!(
                "table={t},priority=90,ct_state=-trk,{ip},actions=policy({dir}),goto_table:{next}"
            ));
        }
    }
    text.iter()
        .flat_map(|t| parse_flow(t, &NoPortNames).unwrap_or_default())
        .map(|mut f| {
            f.cookie = cookie::POLICY;
            f
        })
        .collect()
}

#[derive(Default)]
pub struct PolicyRealizer {
    compiler: Compiler,
}

impl PolicyRealizer {
    pub fn compiler(&self) -> &Compiler {
        &self.compiler
    }

    /// Applies one change to the compiler (no publishing).
    pub fn apply(&mut self, state: &DesiredState, change: &Change) {
        for key in &change.keys.deleted {
            match key.kind {
                Kind::Namespace => self.compiler.remove_namespace(&key.name),
                Kind::Pod => self.compiler.remove_pod(&key.namespace, &key.name),
                Kind::NetworkPolicy => self.compiler.remove_policy(&key.namespace, &key.name),
                _ => {}
            }
        }
        // Keys are ordered by kind: namespaces, then pods, then policies.
        for key in &change.keys.upserted {
            match state.get(key) {
                Some(Object::Namespace(n)) => self.compiler.set_namespace(&n.name, &n.labels),
                Some(Object::Pod(p)) => self.compiler.set_pod(p),
                Some(Object::NetworkPolicy(p)) => {
                    for problem in self.compiler.set_policy(p) {
                        tracing::warn!(policy = %key, %problem, "NetworkPolicy partly not enforced");
                    }
                }
                None => match key.kind {
                    Kind::Namespace => self.compiler.remove_namespace(&key.name),
                    Kind::Pod => self.compiler.remove_pod(&key.namespace, &key.name),
                    Kind::NetworkPolicy => self.compiler.remove_policy(&key.namespace, &key.name),
                    _ => {}
                },
                _ => {}
            }
        }
    }

    /// Publishes the engine, then makes the flows match (engine first: flows never
    /// point at an engine that lacks the policies that made them appear).
    pub fn publish(&self, dp: &mut Datapath) {
        dp.policy_engine()
            .store(Arc::new(self.compiler.engine().clone()));
        let filter = FlowFilter {
            cookie: Some((cookie::POLICY, cookie::MASK)),
            ..FlowFilter::default()
        };
        let want = self.compiler.n_policies() > 0;
        let mine = flows();
        // An exact lookup of one of them (they come and go together), not a
        // walk over every flow.
        let have = mine.first().is_some_and(|f| dp.has_flow(f));
        let mods: Vec<FlowMod> = match (want, have) {
            (true, false) => mine.into_iter().map(FlowMod::Add).collect(),
            (false, true) => vec![FlowMod::Delete(filter)],
            _ => Vec::new(),
        };
        if !mods.is_empty()
            && let Err(e) = dp.flow_mods(mods)
        {
            tracing::error!(error = %e, "policy flows not changed");
        }
        ct_base::sync(dp);
    }
}

impl Realizer for PolicyRealizer {
    fn name(&self) -> &'static str {
        "policy"
    }

    fn policy_compiler(&self) -> Option<&Compiler> {
        Some(&self.compiler)
    }

    fn realize(&mut self, state: &DesiredState, change: &Change, ctx: &mut RealizeCtx<'_>) {
        if ![Kind::Namespace, Kind::Pod, Kind::NetworkPolicy]
            .iter()
            .any(|k| change.keys.touches(*k))
        {
            return;
        }
        let t0 = Instant::now();
        self.apply(state, change);
        if let Some(dp) = ctx.dp.as_deref_mut() {
            self.publish(dp);
        }
        tracing::debug!(
            took_us = t0.elapsed().as_micros() as u64,
            policies = self.compiler.n_policies(),
            "policy realised"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_flows_parse() {
        assert_eq!(flows().len(), 6);
    }
}

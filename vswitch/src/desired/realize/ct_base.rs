//! The conntrack base flows that NetworkPolicy and Services both need, owned by
//! neither: whoever changes its own flows calls [`sync`], which installs them while
//! any policy or services flow exists and removes them when none does. Stateless
//! and idempotent (it looks at the tables: a few exact lookups, whatever the
//! number of flows), so the two features never disagree. The one copy of these
//! flows: Services and NetworkPolicy install none of their own.
//!
//! ```text
//! table=10 priority=100 tcp|udp|sctp|icmp (and v6) actions=ct(zone=1,table=11,nat)
//! table=11 priority=200 ct_state=+inv+trk           actions=drop
//! table=11 priority=190 ct_state=+est+trk           actions=goto_table:20
//! table=11 priority=190 ct_state=+rel+trk           actions=goto_table:20
//! table=50 priority=100 ct_state=+new+trk-dnat      actions=ct(commit,zone=1,table=60)
//! ```
//!
//! Established and related packets skip table 15 (the service load balancer
//! only acts on `+new`). Only protocols conntrack tracks enter it; others stay
//! `-trk` (policy still judges them, see docs/policy.md), and so do ICMPv6
//! neighbour discovery and MLD, which conntrack leaves untracked
//! ([`crate::conntrack::untracked`]) instead of calling them `+inv`.
//! Cookie [`layout::cookie::CT_BASE`].

use crate::Datapath;
use crate::flow::layout::{self, cookie};
use crate::flow::parse::{NoPortNames, parse_flow};
use crate::flow::spec::{FlowFilter, FlowSpec};
use crate::flow::tables::FlowMod;

/// The flows, as text (what `dump-flows` shows).
pub fn flows() -> Vec<FlowSpec> {
    let z = layout::CT_ZONE_PODS;
    let mut text: Vec<String> = Vec::new();
    for p in [
        "tcp", "udp", "sctp", "icmp", "tcp6", "udp6", "sctp6", "icmp6",
    ] {
        text.push(format!(
            "table={},priority=100,{p},actions=ct(zone={z},table={},nat)",
            layout::CT_ZONE,
            layout::CT_STATE
        ));
    }
    text.push(format!(
        "table={},priority=200,ct_state=+inv+trk,actions=drop",
        layout::CT_STATE
    ));
    for st in ["+est+trk", "+rel+trk"] {
        text.push(format!(
            "table={},priority=190,ct_state={st},actions=goto_table:{}",
            layout::CT_STATE,
            layout::EGRESS_POLICY
        ));
    }
    text.push(format!(
        "table={},priority=100,ct_state=+new+trk-dnat,actions=ct(commit,zone={z},table={})",
        layout::CT_COMMIT,
        layout::OUTPUT
    ));
    text.iter()
        .flat_map(|t| parse_flow(t, &NoPortNames).unwrap_or_default())
        .map(|mut f| {
            f.cookie = cookie::CT_BASE;
            f
        })
        .collect()
}

/// Whether a feature that needs conntrack has flows installed: each feature
/// has a flow that exists exactly while it has any (policy's fixed flows, the
/// services' hairpin flow), looked up exactly.
fn needed(dp: &Datapath) -> bool {
    let policy = super::policy::flows();
    let services = crate::services::realize::hairpin_flow();
    policy.first().is_some_and(|f| dp.has_flow(f)) || dp.has_flow(&services)
}

/// Installs or removes the base flows to match what the features need.
pub fn sync(dp: &mut Datapath) {
    let want = needed(dp);
    let base = flows();
    let have = base.first().is_some_and(|f| dp.has_flow(f));
    let mods: Vec<FlowMod> = match (want, have) {
        (true, false) => base.into_iter().map(FlowMod::Add).collect(),
        (false, true) => vec![FlowMod::Delete(FlowFilter {
            cookie: Some((cookie::CT_BASE, u64::MAX)),
            ..FlowFilter::default()
        })],
        _ => return,
    };
    if let Err(e) = dp.flow_mods(mods) {
        tracing::error!(error = %e, "conntrack base flows not changed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DatapathConfig;

    #[test]
    fn all_flows_parse() {
        assert_eq!(flows().len(), 12);
        assert!(flows().iter().all(|f| f.cookie == cookie::CT_BASE));
    }

    fn base_count(dp: &Datapath) -> usize {
        dp.dump_flows(&FlowFilter {
            cookie: Some((cookie::CT_BASE, u64::MAX)),
            ..FlowFilter::default()
        })
        .len()
    }

    /// One set of base flows while policy, services or both have flows; none
    /// when neither has.
    #[test]
    fn installed_once_while_either_feature_needs_them() {
        let mut dp = Datapath::new(DatapathConfig::in_process(1)).expect("datapath");
        let add = |dp: &mut Datapath, f: Vec<FlowSpec>| {
            dp.flow_mods(f.into_iter().map(FlowMod::Add).collect())
                .expect("add");
        };
        let del = |dp: &mut Datapath, c: u64| {
            dp.flow_mods(vec![FlowMod::Delete(FlowFilter {
                cookie: Some((c, cookie::MASK)),
                ..FlowFilter::default()
            })])
            .expect("delete");
        };
        sync(&mut dp);
        assert_eq!(base_count(&dp), 0, "nothing needs them");
        add(&mut dp, super::super::policy::flows());
        sync(&mut dp);
        assert_eq!(base_count(&dp), 12);
        add(&mut dp, vec![crate::services::realize::hairpin_flow()]);
        sync(&mut dp);
        assert_eq!(base_count(&dp), 12, "not twice");
        del(&mut dp, cookie::POLICY);
        sync(&mut dp);
        assert_eq!(base_count(&dp), 12, "services still need them");
        del(&mut dp, cookie::SERVICES);
        sync(&mut dp);
        assert_eq!(base_count(&dp), 0);
    }
}

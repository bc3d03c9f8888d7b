//! The conntrack base flows that NetworkPolicy and Services both need, owned by
//! neither: whoever changes its own flows calls [`sync`], which installs them while
//! any policy or services flow exists and removes them when none does. Stateless
//! and idempotent (it looks at the tables), so the two features never disagree.
//!
//! ```text
//! table=10 priority=99 tcp|udp|sctp|icmp (and v6) actions=ct(zone=1,table=11,nat)
//! table=11 priority=99 ct_state=+inv+trk           actions=drop
//! table=50 priority=99 ct_state=+new+trk-dnat      actions=ct(commit,zone=1,table=60)
//! ```
//!
//! Priority 99, one below the Services engineer's own copy of the same flows
//! (`services::realize::base_flows`, priority 100, same zone): where services
//! exist theirs decide and these are inert; where only policy exists these serve.
//! Merging the two into this helper is left for later.
//!
//! Only protocols conntrack tracks enter it (others would come back `+inv` and be
//! dropped); policy still sees untracked IP packets (`ct_state=-trk`, see
//! docs/policy.md). Cookie [`layout::cookie::CT_BASE`].

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
            "table={},priority=99,{p},actions=ct(zone={z},table={},nat)",
            layout::CT_ZONE,
            layout::CT_STATE
        ));
    }
    text.push(format!(
        "table={},priority=99,ct_state=+inv+trk,actions=drop",
        layout::CT_STATE
    ));
    text.push(format!(
        "table={},priority=99,ct_state=+new+trk-dnat,actions=ct(commit,zone={z},table={})",
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

fn by_cookie(c: u64, mask: u64) -> FlowFilter {
    FlowFilter {
        cookie: Some((c, mask)),
        ..FlowFilter::default()
    }
}

/// Whether a feature that needs conntrack has flows installed.
fn needed(dp: &Datapath) -> bool {
    [cookie::POLICY, cookie::SERVICES]
        .iter()
        .any(|&c| !dp.dump_flows(&by_cookie(c, cookie::MASK)).is_empty())
}

/// Installs or removes the base flows to match what the features need.
pub fn sync(dp: &mut Datapath) {
    let want = needed(dp);
    let have = !dp
        .dump_flows(&by_cookie(cookie::CT_BASE, u64::MAX))
        .is_empty();
    let mods: Vec<FlowMod> = match (want, have) {
        (true, false) => flows().into_iter().map(FlowMod::Add).collect(),
        (false, true) => vec![FlowMod::Delete(by_cookie(cookie::CT_BASE, u64::MAX))],
        _ => return,
    };
    if let Err(e) = dp.flow_mods(mods) {
        tracing::error!(error = %e, "conntrack base flows not changed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_flows_parse() {
        assert_eq!(flows().len(), 10);
    }
}

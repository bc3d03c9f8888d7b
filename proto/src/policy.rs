//! `policies`: the NetworkPolicies in force, as `vsctl policies` shows them.

use serde::{Deserialize, Serialize};

/// Parameters of `policies` (all optional).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoliciesParams {
    /// Only the policies of this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// One rule of a policy (an element of its `ingress` or `egress` list).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRuleInfo {
    /// `ingress` or `egress`.
    pub direction: String,
    /// Position in the policy's list of that direction.
    pub index: u32,
    /// False when the rule could not be compiled at all (every port bad): it allows
    /// nothing.
    pub enforced: bool,
    /// New connections this rule allowed.
    pub allowed: u64,
}

/// One NetworkPolicy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyInfo {
    pub namespace: String,
    pub name: String,
    /// Effective policy types: `Ingress`, `Egress`.
    pub types: Vec<String>,
    pub rules: Vec<PolicyRuleInfo>,
    /// New connections denied while this policy isolated the pod, per direction (a
    /// denial counts against every policy isolating the pod in that direction: no
    /// rule matched, so none is to blame).
    pub denied_ingress: u64,
    pub denied_egress: u64,
    /// Local pods the policy selects (names; they are in the policy's namespace).
    pub selected: Vec<String>,
}

/// Size of the compiled policy state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyEngineSize {
    pub policies: u64,
    pub rules: u64,
    /// Address groups (peer selectors) and the sum of their sizes.
    pub groups: u64,
    pub group_members: u64,
    /// Selected (pod IP, direction) entries and the rule ids they hold.
    pub applied: u64,
    pub applied_rules: u64,
}

/// Result of `policies`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoliciesReply {
    pub policies: Vec<PolicyInfo>,
    pub size: PolicyEngineSize,
}

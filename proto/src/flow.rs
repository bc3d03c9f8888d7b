//! Flow-table operations: flows and groups travel as OVS-like text (the daemon
//! parses them, so every client gets the same syntax and the same errors), and
//! come back from `dump_flows` both as text and as fields.

use serde::{Deserialize, Serialize};

/// What one change in a bundle does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlowModOp {
    /// `spec` is a flow (`table=0,priority=10,ip actions=drop`); same table, match
    /// and priority replaces.
    Add,
    /// `spec` is a filter (`table=1,ip,nw_dst=10.0.0.0/8`; empty = everything);
    /// flows at least as specific are deleted.
    Delete,
    /// Like delete, but only the flow with exactly this match and `priority=`.
    DeleteStrict,
    /// `spec` is a filter plus `actions=`: the selected flows get those actions.
    Modify,
    /// `spec` is a group (`group_id=1,type=select,bucket=actions=output:1,...`).
    AddGroup,
    /// `spec` is `group_id=N`, or empty for all groups.
    DeleteGroup,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowModText {
    pub op: FlowModOp,
    #[serde(default)]
    pub spec: String,
}

/// Parameters of `flow_mods`: a bundle, applied all or nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowModsParams {
    pub mods: Vec<FlowModText>,
}

/// Result of `flow_mods`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowModsReply {
    pub added: usize,
    pub replaced: usize,
    pub deleted: usize,
    pub modified: usize,
    pub groups_set: usize,
    pub groups_deleted: usize,
    /// Version of the flow tables that holds the change.
    pub version: u64,
}

/// Parameters of `dump_flows`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DumpFlowsParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u8>,
    /// A filter as for delete (`ip,nw_dst=10.0.0.0/8`, `cookie=0x5/-1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
}

/// One flow as `dump_flows` reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlowEntry {
    pub table: u8,
    pub priority: u16,
    pub cookie: u64,
    /// The match in canonical text (`ip,nw_dst=10.0.0.0/24`); empty = any.
    #[serde(rename = "match")]
    pub match_: String,
    pub actions: String,
    pub idle_timeout: u16,
    pub hard_timeout: u16,
    pub n_packets: u64,
    pub n_bytes: u64,
    /// Seconds since the flow was added.
    pub duration_s: f64,
    /// Seconds since its last hit (none yet: absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_age_s: Option<f64>,
    /// The whole line as `ovs-ofctl dump-flows` would print it.
    pub text: String,
}

/// Parameters of `trace`: a packet described like a flow match with exact values
/// (`in_port=p1,tcp,nw_src=10.0.0.1,nw_dst=10.0.0.2,tp_dst=80`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceParams {
    pub spec: String,
}

/// One table visited by a trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceTable {
    pub table: u8,
    /// Nesting level (resubmit, goto, group).
    pub depth: u32,
    /// The flow matched (dump-flows text), or `None` for a table miss.
    pub flow: Option<String>,
    pub notes: Vec<String>,
}

/// Result of `trace`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceReply {
    /// The packet key as understood (canonical match text).
    pub packet: String,
    pub tables: Vec<TraceTable>,
    /// The datapath actions the packet gets, in order.
    pub datapath_actions: Vec<String>,
    /// `forward`, `drop`, `flood`, `recirculate`...
    pub verdict: String,
    /// The megaflow that would be installed: the bits consulted (match text).
    pub megaflow: String,
    /// Per worker: would the exact-match / megaflow cache have answered it now.
    pub emc_hit: Vec<bool>,
    pub megaflow_hit: Vec<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One group as `dump_groups` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupEntry {
    pub group_id: u32,
    pub text: String,
}

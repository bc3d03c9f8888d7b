//! The control-socket protocol of `vswitchd`: newline-delimited JSON requests and
//! responses, and the types they carry. Shared by the daemon, `vsctl` and the agent.
//!
//! Everything here is plain data plus a decoder that never panics on any input
//! (it is fuzzed: `fuzz/fuzz_targets/control_decode.rs`).

pub mod capture;
pub mod codec;
pub mod flow;
pub mod model;
pub mod policy;
pub mod port;
pub mod services;
pub mod stats;
pub mod sync;
pub mod validate;

pub use capture::{
    CaptureIdParams, CaptureReadReply, CaptureStartParams, CaptureStartReply, CapturedPacket,
};
pub use codec::{
    ErrorCode, ErrorReply, MAX_LINE_BYTES, PROTOCOL_VERSION, Request, RequestId, Response,
    decode_request, encode_response,
};
pub use flow::{
    DumpFlowsParams, FlowEntry, FlowModOp, FlowModText, FlowModsParams, FlowModsReply, GroupEntry,
    TraceParams, TraceReply, TraceTable,
};
pub use model::{DesiredState, Kind, Object, ObjectKey};
pub use policy::{PoliciesParams, PoliciesReply, PolicyEngineSize, PolicyInfo, PolicyRuleInfo};
pub use port::{
    AddPortParams, DelPortParams, PodLink, PodRef, PortEntry, PortInfo, PortKind, PortMode,
    PortState,
};
pub use services::{CT_LIST_DEFAULT, CT_LIST_MAX};
pub use services::{
    ConntrackParams, ConntrackReply, ConntrackStats, CtEntry, CtProto, CtTupleInfo, EndpointInfo,
    ServiceInfo, ServicesReply,
};
pub use stats::{
    CacheStats, DropCounters, DropReason, PortStats, StatsParams, StatsReply, SwitchStats,
    WorkerStats,
};
pub use sync::{ChangeSet, SyncDeltaParams, SyncFullParams, SyncReply, SyncStatus};

/// Every operation the control socket understands, with its parameters.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "op", content = "params", rename_all = "snake_case")]
pub enum Op {
    /// Protocol handshake: the reply carries [`HelloReply`].
    Hello,
    /// Attach an interface as a switch port: [`PortInfo`] back.
    AddPort(AddPortParams),
    /// Detach a port: `{}` back.
    DelPort(DelPortParams),
    /// All ports: `[PortInfo]` back.
    ListPorts,
    /// Counters: [`StatsReply`] back.
    Stats(StatsParams),
    /// A bundle of flow/group changes, all or nothing: [`FlowModsReply`] back.
    FlowMods(FlowModsParams),
    /// Flows: `[FlowEntry]` back.
    DumpFlows(DumpFlowsParams),
    /// Groups: `[GroupEntry]` back.
    DumpGroups,
    /// Where a packet would go: [`TraceReply`] back.
    Trace(TraceParams),
    /// Replace the whole desired state: [`SyncReply`] back.
    SyncFull(SyncFullParams),
    /// Change the desired state incrementally: [`SyncReply`] back, or
    /// `generation_mismatch` when `base_generation` is not the daemon's.
    SyncDelta(SyncDeltaParams),
    /// Realised generation, object counts, last change: [`SyncStatus`] back.
    SyncStatus,
    /// List or flush connections: [`ConntrackReply`] back.
    Conntrack(ConntrackParams),
    /// Service frontends, endpoints and hit counts: [`ServicesReply`] back.
    Services,
    /// NetworkPolicies with their counters and selected pods: [`PoliciesReply`] back.
    Policies(PoliciesParams),
    /// Arm a packet capture on a port: [`CaptureStartReply`] back.
    CaptureStart(CaptureStartParams),
    /// Captured frames so far: [`CaptureReadReply`] back.
    CaptureRead(CaptureIdParams),
    /// End a capture: `{}` back.
    CaptureStop(CaptureIdParams),
}

impl Op {
    /// The wire name of the operation (`"add_port"`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Op::Hello => "hello",
            Op::AddPort(_) => "add_port",
            Op::DelPort(_) => "del_port",
            Op::ListPorts => "list_ports",
            Op::Stats(_) => "stats",
            Op::FlowMods(_) => "flow_mods",
            Op::DumpFlows(_) => "dump_flows",
            Op::DumpGroups => "dump_groups",
            Op::Trace(_) => "trace",
            Op::SyncFull(_) => "sync_full",
            Op::SyncDelta(_) => "sync_delta",
            Op::SyncStatus => "sync_status",
            Op::Conntrack(_) => "conntrack",
            Op::Services => "services",
            Op::Policies(_) => "policies",
            Op::CaptureStart(_) => "capture_start",
            Op::CaptureRead(_) => "capture_read",
            Op::CaptureStop(_) => "capture_stop",
        }
    }
}

/// Result of `hello`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HelloReply {
    /// [`PROTOCOL_VERSION`] of the daemon.
    pub protocol: u32,
    /// The daemon's package version.
    pub version: String,
    /// The daemon's process id (handy to tell restarts apart).
    pub pid: u32,
}

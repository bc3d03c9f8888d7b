//! Counters reported by `stats`: per port traffic and typed drop reasons, switch-wide
//! learning counters, and per-worker poll-loop figures.

use serde::{Deserialize, Serialize};

/// Declares the drop reasons once: the enum, its wire names and the counter struct
/// stay in step by construction.
macro_rules! drop_reasons {
    ($( $(#[doc = $doc:literal])* $variant:ident => $field:ident ),+ $(,)?) => {
        /// Why the switch dropped a frame. Every drop is counted under exactly one reason.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum DropReason { $( $(#[doc = $doc])* $variant ),+ }

        impl DropReason {
            /// All reasons, in counter order.
            pub const ALL: &'static [DropReason] = &[$(DropReason::$variant),+];
            /// Number of reasons (size of a counter array indexed by `reason as usize`).
            pub const COUNT: usize = [$(DropReason::$variant),+].len();
            /// Wire / metrics name.
            pub fn name(self) -> &'static str {
                match self { $(DropReason::$variant => stringify!($field)),+ }
            }
        }

        /// Drop counters by reason.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
        pub struct DropCounters { $( $(#[doc = $doc])* #[serde(default)] pub $field: u64 ),+ }

        impl DropCounters {
            /// Builds the struct from an array indexed by `DropReason as usize`.
            pub fn from_array(a: &[u64; DropReason::COUNT]) -> Self {
                let mut it = a.iter().copied();
                DropCounters { $( $field: it.next().unwrap_or(0) ),+ }
            }
            /// The counter of one reason.
            pub fn get(&self, r: DropReason) -> u64 {
                match r { $(DropReason::$variant => self.$field),+ }
            }
            /// Sum over all reasons.
            pub fn total(&self) -> u64 { 0 $( + self.$field )+ }
            /// Adds another set of counters into this one.
            pub fn add(&mut self, o: &DropCounters) { $( self.$field += o.$field; )+ }
        }
    };
}

drop_reasons! {
    /// Shorter than an Ethernet header, or a header that lies about its length.
    Malformed => malformed,
    /// Longer than the port's MTU allows (or than a frame buffer).
    Oversize => oversize,
    /// Source MAC is multicast/broadcast (never valid as a source).
    BadSrcMac => bad_src_mac,
    /// Destination was learned on the ingress port itself (split horizon).
    SamePort => same_port,
    /// No output was possible (e.g. flood with no other port).
    NoRoute => no_route,
    /// Output port is gone or down.
    PortDown => port_down,
    /// Output TX ring was full.
    RingFull => ring_full,
    /// No free frame buffer to copy into or to refill a receive ring.
    NoBuffer => no_buffer,
    /// Hand-off queue to another poll worker was full.
    CrossWorkerFull => cross_worker_full,
    /// Dropped by the kernel before the switch saw it (AF_XDP socket statistics).
    KernelRx => kernel_rx,
    /// The flow pipeline decided to drop it (a drop flow, no output, or a table miss).
    Pipeline => pipeline,
    /// dec_ttl on a packet whose TTL / hop limit was already 1 or 0.
    TtlExpired => ttl_expired,
    /// A punt to the switch's own handlers over their rate limit, or not answerable.
    Punt => punt,
    /// An action the packet could not take (e.g. a header that is not there, a
    /// frame that would not fit, recirculation too deep).
    ActionFailed => action_failed,
    /// Conntrack marked the packet invalid and the pipeline dropped it.
    CtInvalid => ct_invalid,
    /// VXLAN that is not ours: from an address that is no known node, to another
    /// UDP port or VNI, fragmented, or with a bad VXLAN header.
    TunnelRejected => tunnel_rejected,
    /// Too big for the tunnel once encapsulated; with DF set the sender got an ICMP
    /// fragmentation-needed from the gateway (counted here all the same).
    TunnelTooBig => tunnel_too_big,
    /// Denied by NetworkPolicy (`vsctl policies` says which policy).
    Policy => policy,
}

/// Parameters of `stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsParams {
    /// Only this port (all ports when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
}

/// Counters of one port, summed over workers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortStats {
    pub name: String,
    pub port_no: u32,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Of `rx_packets`: frames the in-kernel XDP fast path forwarded from this port
    /// without the switch's user space seeing them (`--xdp-fastpath`).
    #[serde(default)]
    pub fastpath_rx_packets: u64,
    /// Of `tx_packets`: frames the XDP fast path redirected to this port.
    #[serde(default)]
    pub fastpath_tx_packets: u64,
    /// Drops attributed to this port (ingress or egress).
    pub drops: DropCounters,
}

/// Switch-wide learning-bridge counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchStats {
    /// MAC table entries (largest over workers).
    pub mac_entries: u64,
    pub mac_capacity: u64,
    pub mac_learned: u64,
    pub mac_moved: u64,
    pub mac_aged: u64,
    /// New source MACs not learned because the table was full.
    pub mac_table_full: u64,
    /// Frames flooded (broadcast, multicast or unknown unicast).
    pub flooded: u64,
    /// Ports whose interface disappeared under the switch.
    pub ports_vanished: u64,
    /// Drops not attributable to a port.
    pub drops: DropCounters,
    /// Flow cache figures summed over workers.
    #[serde(default)]
    pub cache: CacheStats,
    /// Flows per table (index = table; trailing empty tables left out).
    #[serde(default)]
    pub flows_per_table: Vec<u64>,
    /// Version of the flow tables.
    #[serde(default)]
    pub flows_version: u64,
    /// Connection tracking counters.
    #[serde(default)]
    pub conntrack: crate::ConntrackStats,
    /// XDP fast path (`--xdp-fastpath`): decisions written to the kernel.
    #[serde(default)]
    pub fastpath_installs: u64,
    /// XDP fast path: epoch bumps (every cached kernel decision made stale).
    #[serde(default)]
    pub fastpath_invalidations: u64,
    /// XDP fast path: ports taken off it because the kernel could not transmit
    /// redirected frames on them (veth peer without NAPI).
    #[serde(default)]
    pub fastpath_ports_disabled: u64,
}

/// Flow cache hits and misses (OVS's `pmd-stats-show` emc/megaflow/miss lines).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheStats {
    /// Packets answered by the exact-match cache.
    pub emc_hits: u64,
    /// Packets answered by the megaflow cache (EMC missed).
    pub megaflow_hits: u64,
    /// Packets that went through the slow path (flow tables).
    pub misses: u64,
    /// Cache entries found stale after a flow change and rebuilt.
    pub revalidated: u64,
    /// Megaflows installed now.
    pub megaflows: u64,
}

/// One poll worker's loop figures (like `ovs-appctl dpif-netdev/pmd-stats-show`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerStats {
    pub id: usize,
    /// CPU the worker is pinned to, if any.
    pub core: Option<usize>,
    pub ports: u64,
    /// Loop iterations that moved at least one frame.
    pub busy_iterations: u64,
    /// Loop iterations that moved none.
    pub idle_iterations: u64,
    /// Times the worker went to sleep in poll(2).
    pub sleeps: u64,
    pub rx_packets: u64,
    /// Receive batches (rx_packets / rx_batches = mean batch size).
    pub rx_batches: u64,
    /// Nanoseconds in loop iterations that moved frames.
    #[serde(default)]
    pub busy_ns: u64,
    /// Nanoseconds in iterations that moved none, sleeping included.
    #[serde(default)]
    pub idle_ns: u64,
    /// Receive batches by size: entry `b` counts batches of `2^b ..= 2^(b+1)-1`
    /// frames; the last entry, 64 and more.
    #[serde(default)]
    pub batch_sizes: Vec<u64>,
    /// This worker's flow cache figures.
    #[serde(default)]
    pub cache: CacheStats,
}

/// Result of `stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsReply {
    pub ports: Vec<PortStats>,
    pub switch: SwitchStats,
    pub workers: Vec<WorkerStats>,
}

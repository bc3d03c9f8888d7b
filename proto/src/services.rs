//! `conntrack` and `services`: the connection table and the service load
//! balancer as `vsctl conntrack` and `vsctl services` show them.

use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// Protocols a conntrack filter can name (`icmp` covers ICMPv6 too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CtProto {
    Tcp,
    Udp,
    Icmp,
    Sctp,
}

impl CtProto {
    /// Whether IP protocol number `p` is this protocol.
    pub fn matches(self, p: u8) -> bool {
        match self {
            CtProto::Tcp => p == 6,
            CtProto::Udp => p == 17,
            CtProto::Icmp => p == 1 || p == 58,
            CtProto::Sctp => p == 132,
        }
    }
}

impl std::str::FromStr for CtProto {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(CtProto::Tcp),
            "udp" => Ok(CtProto::Udp),
            "icmp" | "icmpv6" | "icmp6" => Ok(CtProto::Icmp),
            "sctp" => Ok(CtProto::Sctp),
            _ => Err(format!("unknown protocol '{s}' (tcp, udp, icmp, sctp)")),
        }
    }
}

/// Default and largest number of entries one `conntrack` listing returns.
pub const CT_LIST_DEFAULT: u32 = 10_000;
pub const CT_LIST_MAX: u32 = 100_000;

/// Parameters of `conntrack`: list (or, with `flush`, remove) the connections
/// every given filter selects. `src`/`dst` match the original direction's
/// addresses (as `conntrack -L -s/-d`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConntrackParams {
    #[serde(default)]
    pub flush: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto: Option<CtProto>,
    /// Most entries listed (default [`CT_LIST_DEFAULT`], at most [`CT_LIST_MAX`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// One direction of a connection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CtTupleInfo {
    pub src: String,
    pub dst: String,
    /// Ports (TCP/UDP/SCTP) or the echo identifier (ICMP).
    pub sport: u16,
    pub dport: u16,
}

/// One connection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CtEntry {
    /// `tcp`, `udp`, `icmp`, `icmpv6`, `sctp` or the number.
    pub proto: String,
    pub zone: u16,
    pub orig: CtTupleInfo,
    pub reply: CtTupleInfo,
    /// TCP state (`ESTABLISHED`, ...), else `UNREPLIED` or `ASSURED`.
    pub state: String,
    pub assured: bool,
    /// Seconds left before it expires.
    pub timeout_s: u64,
    pub mark: u32,
    /// `dnat`, `snat`, `dnat,snat` or empty.
    #[serde(default)]
    pub nat: String,
    #[serde(default)]
    pub hairpin: bool,
    /// The service frontend that chose the endpoint (0: none).
    #[serde(default)]
    pub service: u32,
}

/// Result of `conntrack`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConntrackReply {
    /// Listed entries (empty after a flush).
    pub entries: Vec<CtEntry>,
    /// How many connections the filters selected.
    pub matched: u64,
    /// How many were removed (flush).
    pub flushed: u64,
    /// `matched` exceeded the limit: the listing is cut.
    pub truncated: bool,
}

/// Conntrack counters in `stats` (`switch.conntrack`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConntrackStats {
    /// Connections in the table now.
    pub entries: u64,
    pub max_entries: u64,
    pub inserts: u64,
    /// Not-assured connections evicted to make room.
    pub evictions: u64,
    /// Packets that fit no connection state (`+inv`).
    pub invalid: u64,
    /// New connections not committed because the table was full of assured ones.
    pub full: u64,
    pub expired: u64,
}

/// One endpoint of a service frontend.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointInfo {
    /// `ip:port`.
    pub addr: String,
    pub local: bool,
    /// New connections sent to it.
    pub hits: u64,
}

/// One service frontend (a service port, address family and internal/external).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceInfo {
    pub id: u32,
    /// `namespace/name:port/PROTO`, ` (external)` for NodePort/external addresses.
    pub name: String,
    /// Addresses (`ip:port`) that lead to it.
    pub vips: Vec<String>,
    pub endpoints: Vec<EndpointInfo>,
    /// Client-IP session affinity timeout in seconds, when enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity_timeout_s: Option<u64>,
    /// Source NAT address for remote endpoints (external traffic, policy Cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snat: Option<String>,
    /// Slots of its Maglev table.
    pub maglev_size: u32,
}

/// Result of `services`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicesReply {
    pub services: Vec<ServiceInfo>,
}

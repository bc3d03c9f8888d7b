//! Packet capture operations (`capture_start`, `capture_read`, `capture_stop`).

use serde::{Deserialize, Serialize};

/// Parameters of `capture_start`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureStartParams {
    /// Port name to capture on (frames received and sent there).
    pub port: String,
    /// Also capture frames dropped after arriving on the port, with the reason.
    #[serde(default)]
    pub drops: bool,
    /// A flow match (`udp,tp_dst=53`, `icmp`, `ip,nw_src=10.0.0.1`); all frames
    /// when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
}

/// Result of `capture_start`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureStartReply {
    /// Names the session in `capture_read` / `capture_stop`.
    pub id: u64,
    pub port_no: u32,
    /// Bytes kept of each frame.
    pub snaplen: u32,
}

/// Parameters of `capture_read` and `capture_stop`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureIdParams {
    pub id: u64,
    /// `capture_read`: most packets to return (default and cap 256).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u32>,
}

/// One captured frame.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapturedPacket {
    /// Wall-clock time, nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    /// `rx`, `tx` or `drop`.
    pub dir: String,
    /// Drop reason (a `DropReason` name) when `dir` is `drop`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Length on the wire; `data` may be shorter (snap length).
    pub orig_len: u32,
    /// The frame's bytes (up to the snap length), lowercase hex.
    pub data: String,
}

/// Result of `capture_read`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureReadReply {
    pub packets: Vec<CapturedPacket>,
    /// Frames that matched but were lost because the capture queue was full.
    pub lost: u64,
}

//! Port descriptions exchanged over the control socket.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// What a port connects the switch to. Pod ports come and go with their pods: when
/// the interface vanishes the port is removed for good. Uplink and gateway ports are
/// node infrastructure: when their interface vanishes they stay configured (state
/// `down`) and are attached again when it comes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PortKind {
    #[default]
    Pod,
    Uplink,
    Gateway,
}

/// How the switch reads and writes the interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PortMode {
    /// Try AF_XDP in driver mode, then AF_XDP in skb mode, then AF_PACKET.
    #[default]
    Auto,
    /// AF_XDP, XDP program in the driver (native) hook.
    XdpDrv,
    /// AF_XDP, XDP program in the generic (skb) hook.
    XdpSkb,
    /// AF_PACKET socket with batched recvmmsg/sendmmsg; no XDP at all.
    Packet,
    /// In-process memory port (tests and benchmarks only; not accepted over the socket).
    Memory,
}

impl PortKind {
    pub const ALL: [PortKind; 3] = [PortKind::Pod, PortKind::Uplink, PortKind::Gateway];
    pub fn as_str(self) -> &'static str {
        match self {
            PortKind::Pod => "pod",
            PortKind::Uplink => "uplink",
            PortKind::Gateway => "gateway",
        }
    }
}

impl PortMode {
    pub fn as_str(self) -> &'static str {
        match self {
            PortMode::Auto => "auto",
            PortMode::XdpDrv => "xdp-drv",
            PortMode::XdpSkb => "xdp-skb",
            PortMode::Packet => "packet",
            PortMode::Memory => "memory",
        }
    }
}

impl fmt::Display for PortKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for PortMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PortKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PortKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown port kind '{s}' (expected pod, uplink or gateway)"))
    }
}

impl FromStr for PortMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(PortMode::Auto),
            "xdp-drv" => Ok(PortMode::XdpDrv),
            "xdp-skb" => Ok(PortMode::XdpSkb),
            "packet" => Ok(PortMode::Packet),
            _ => Err(format!(
                "unknown port mode '{s}' (expected auto, xdp-drv, xdp-skb or packet)"
            )),
        }
    }
}

/// Parameters of `add_port`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddPortParams {
    /// Interface name in the switch's network namespace.
    pub name: String,
    #[serde(default)]
    pub kind: PortKind,
    #[serde(default)]
    pub mode: PortMode,
    /// The pod this port belongs to (pod ports attached by the CNI plugin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodRef>,
}

/// Which pod a port belongs to: the CNI plugin passes it from `CNI_ARGS`
/// (`K8S_POD_NAMESPACE`, `K8S_POD_NAME`) and the container id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    /// The runtime's container (sandbox) id, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
}

/// Parameters of `del_port`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DelPortParams {
    pub name: String,
}

/// Whether a configured port is attached to its interface right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PortState {
    /// Attached and polled.
    Up,
    /// Configured, but its interface is missing (uplink/gateway only); re-attached
    /// when the interface comes back.
    Down,
}

/// One port as `list_ports` / `add_port` report it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortInfo {
    pub name: String,
    /// Switch port number (stable while the port exists; the `in_port` of flows).
    pub port_no: u32,
    pub kind: PortKind,
    /// The mode asked for.
    pub requested_mode: PortMode,
    /// The mode in use (never `auto`).
    pub mode: PortMode,
    /// AF_XDP zero-copy in use (never on veth).
    pub zero_copy: bool,
    /// Poll worker that owns the port's queue.
    pub worker: usize,
    /// Kernel interface index, 0 while down.
    pub ifindex: u32,
    /// Interface MAC address, `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    pub mtu: u32,
    pub state: PortState,
    /// The pod the port belongs to, when the attacher said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodRef>,
}

/// What desired state says about the pod of a pod port: filled in by the daemon's
/// `list_ports` from the Pod object whose namespace/name match the port's [`PodRef`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PodLink {
    pub uid: String,
    /// The pod's addresses (`status.podIPs`).
    #[serde(default)]
    pub ips: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
}

/// One element of the `list_ports` result: the port's members, plus `pod_link` when
/// the port names a pod that desired state knows. A port with `pod` but no
/// `pod_link` belongs to a pod the daemon has not (yet) been told about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortEntry {
    #[serde(flatten)]
    pub port: PortInfo,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_link: Option<PodLink>,
}

//! The multi-node pod network: VXLAN encapsulation (RFC 7348) and the outer
//! next-hop resolution (see docs/overlay.md).
//!
//! - [`vxlan`]: encap/decap and the ICMP fragmentation-needed answer, as functions
//!   of a frame buffer (the workers call them from `exec`);
//! - [`neigh`]: the neighbour cache the control thread fills from the host's
//!   neighbour table (nothing per packet).

pub mod neigh;
pub mod node;
pub mod vxlan;

pub use vxlan::{TunnelConfig, TunnelParams};

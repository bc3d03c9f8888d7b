//! Everything that talks to `vswitchd` over its control socket: the [`client`]
//! library (used by `vsctl`, the agent and the CNI plugin), `vsctl`'s output
//! [`format`]ting, the [`agent`] (`vswitch-agent`) and the [`cni`] plugin.
pub mod agent;
pub mod capture;
pub mod client;
pub mod cni;
pub mod format;

pub use client::{CallError, Client, DEFAULT_SOCKET};

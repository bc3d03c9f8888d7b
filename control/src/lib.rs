//! Everything that talks to `vswitchd` over its control socket: the [`client`]
//! library (used by `vsctl`, the agent and the CNI plugin) and `vsctl`'s output
//! [`format`]ting.
pub mod client;
pub mod format;

pub use client::{CallError, Client, DEFAULT_SOCKET};

//! The vswitch datapath: ports, frame pools, poll workers, the learning bridge.
//!
//! See `docs/architecture.md` for who owns what and how a frame travels.

pub mod bridge;
pub mod capture;
pub mod config;
pub mod conntrack;
pub mod control;
pub mod counters;
pub mod daemon;
pub mod datapath;
pub mod desired;
pub mod flow;
pub mod flowctl;
pub mod housekeeping;
pub mod metrics;
pub mod overlay;
pub mod persist;
pub mod policy;
pub mod pool;
pub mod port;
pub mod services;
pub mod snapshot;
pub mod svcctl;
pub mod wire;
pub mod worker;

pub use datapath::{Datapath, DatapathConfig};

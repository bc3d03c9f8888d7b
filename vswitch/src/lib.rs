//! The vswitch datapath: ports, frame pools, poll workers, the learning bridge.
//!
//! See `docs/architecture.md` for who owns what and how a frame travels.

pub mod pool;
pub mod port;
pub mod wire;

//! The daemon side of the control socket: a Unix stream socket speaking
//! newline-delimited JSON (see `docs/control-protocol.md`).
//!
//! [`ControlServer`] owns the socket and its connections and runs a single-threaded
//! mio event loop. It frames lines, decodes them with [`vswitch_proto::decode_request`],
//! and hands each decoded [`Op`] to a [`Handler`] in the same thread, in order. The
//! handler is the only part that knows about the switch; everything here is transport.
//!
//! Wiring into a daemon:
//!
//! ```no_run
//! use std::sync::atomic::AtomicBool;
//! use vswitch::control::{ControlServer, Handler};
//! use vswitch_proto::{ErrorReply, Op};
//!
//! struct Daemon;
//! impl Handler for Daemon {
//!     fn handle(&mut self, op: Op) -> Result<serde_json::Value, ErrorReply> {
//!         match op {
//!             Op::Hello => Ok(serde_json::to_value(vswitch::control::hello_reply()).unwrap_or_default()),
//!             other => Err(ErrorReply::new(vswitch_proto::ErrorCode::Failed, format!("{} not wired", other.name()))),
//!         }
//!     }
//! }
//!
//! # fn main() -> std::io::Result<()> {
//! static SHUTDOWN: AtomicBool = AtomicBool::new(false); // set from SIGTERM/SIGINT
//! let mut server = ControlServer::bind("/run/vswitch/vswitchd.sock".as_ref())?;
//! server.run(&mut Daemon, &SHUTDOWN)?;
//! # Ok(())
//! # }
//! ```

mod auth;
mod conn;
mod server;

pub use auth::peer_allowed;
pub use server::{ControlServer, Limits, TICK_INTERVAL};

use vswitch_proto::{ErrorReply, HelloReply, Op, PROTOCOL_VERSION};

/// What the control socket asks of the daemon.
///
/// Called on the control thread only, one request at a time, so an implementation
/// needs no locking of its own beyond what it shares with the datapath.
pub trait Handler {
    /// Carries out one operation. The `Ok` value becomes the response's `result`, the
    /// `Err` its `error`. A panic in here is caught and answered with `internal`.
    fn handle(&mut self, op: Op) -> Result<serde_json::Value, ErrorReply>;

    /// Called about every [`TICK_INTERVAL`] while the server runs, busy or idle:
    /// the place for periodic work (reaping vanished interfaces, aging, metrics).
    fn tick(&mut self) {}

    /// Told of every error response the server sends (bad requests included),
    /// for counting.
    fn note_error(&mut self, _e: &ErrorReply) {}
}

/// The `hello` result of this build: protocol version, package version and pid.
pub fn hello_reply() -> HelloReply {
    HelloReply {
        protocol: PROTOCOL_VERSION,
        version: env!("CARGO_PKG_VERSION").to_string(),
        pid: std::process::id(),
    }
}

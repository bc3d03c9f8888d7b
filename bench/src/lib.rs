//! vswitch-bench: an AF_XDP traffic generator and sink, and a benchmark runner for
//! the switch and its peers (throughput, loss, one-way latency, RFC 2544 search).
//!
//! - [`wire`]: frames and the timestamp the sink reads back;
//! - [`traffic`]: flows, sizes (IMIX), seeds, the token bucket;
//! - [`engine`]: the generator/sink loops and their pinned threads;
//!   [`xsk`] (AF_XDP) and [`packet`] (AF_PACKET fallback) are the sockets;
//! - [`scenario`]: TOML scenario files; [`topo`]: the namespaces and veths;
//!   [`dut`]: the device under test's commands; [`xdpfwd`]: a kernel XDP
//!   forwarder for baselines; [`bpfprog`]: the XDP programs, assembled in place;
//! - [`search`]: RFC 2544 binary search; [`report`]: results and JSON;
//!   [`plot`]: SVG/PNG plots; [`run`]: `vswitch-bench run`.
//!
//! See docs/benchmarking.md for how to use it.

pub mod bpfprog;
pub mod dut;
pub mod engine;
pub mod packet;
pub mod plot;
pub mod report;
pub mod run;
pub mod scenario;
pub mod search;
pub mod topo;
pub mod traffic;
pub mod wire;
pub mod xdpfwd;
pub mod xdpsink;
pub mod xsk;

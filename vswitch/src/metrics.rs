//! The Prometheus endpoint of vswitchd (`--metrics-addr`, `[metrics] addr`).
//!
//! A small dedicated thread owns the TCP listener and speaks just enough HTTP/1.x
//! (`GET /metrics`, one request per connection, bounded head, timeouts). It never
//! touches the datapath: it asks the control thread for a rendering through
//! [`MetricsShared`] and waits (bounded) for it. The control thread renders on its
//! next tick (at most [`crate::control::TICK_INTERVAL`] later) from the same
//! counters `stats` reads, so workers pay nothing for a scrape. See
//! `docs/operations.md` for the metric list.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;
use vswitch_proto::{DropReason, StatsReply, SyncStatus};

/// Longest request head read (request line and headers).
const MAX_HEAD: usize = 8192;
/// Read/write timeout of one scrape connection.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a scrape waits for the control thread to render.
const RENDER_WAIT: Duration = Duration::from_secs(3);

/// The meeting point of the metrics thread and the control thread.
#[derive(Default)]
pub struct MetricsShared {
    /// Renderings asked for (a sequence number).
    requested: AtomicU64,
    /// The last rendering and the request number it answers.
    out: Mutex<(u64, Arc<String>)>,
    ready: Condvar,
    /// Requests answered with an HTTP error (bad method, path, head).
    pub http_errors: AtomicU64,
    /// Scrapes served.
    pub scrapes: AtomicU64,
}

impl MetricsShared {
    /// Whether a scrape waits for a rendering (checked by the control thread).
    pub fn wanted(&self) -> bool {
        let done = match self.out.lock() {
            Ok(g) => g.0,
            Err(p) => p.into_inner().0,
        };
        self.requested.load(Ordering::Acquire) > done
    }

    /// Publishes a rendering for every request made so far.
    pub fn publish(&self, text: String) {
        let seq = self.requested.load(Ordering::Acquire);
        let mut g = match self.out.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        *g = (seq, Arc::new(text));
        drop(g);
        self.ready.notify_all();
    }

    /// Asks for a fresh rendering and waits for it (`None` after [`RENDER_WAIT`]).
    fn fetch(&self) -> Option<Arc<String>> {
        let me = self.requested.fetch_add(1, Ordering::AcqRel) + 1;
        let g = match self.out.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let (g, _) = match self.ready.wait_timeout_while(g, RENDER_WAIT, |o| o.0 < me) {
            Ok(r) => r,
            Err(p) => p.into_inner(),
        };
        (g.0 >= me).then(|| g.1.clone())
    }
}

/// Binds `addr` and serves scrapes on a thread of its own. Returns the bound
/// address (port 0 picks one).
pub fn spawn(addr: SocketAddr, shared: Arc<MetricsShared>) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let local = listener.local_addr()?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    Ok(s) => serve(s, &shared),
                    Err(e) => {
                        tracing::debug!(error = %e, "metrics accept failed");
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            }
        })?;
    tracing::info!(addr = %local, "metrics endpoint listening");
    Ok(local)
}

/// Answers one connection: one request, then close.
fn serve(mut s: TcpStream, shared: &MetricsShared) {
    let _ = s.set_read_timeout(Some(IO_TIMEOUT));
    let _ = s.set_write_timeout(Some(IO_TIMEOUT));
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    let complete = loop {
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            break true;
        }
        if head.len() > MAX_HEAD {
            break false;
        }
        match s.read(&mut buf) {
            Ok(0) => break false,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    let reply = if complete {
        route(&head, shared)
    } else {
        Err((400, "Bad Request"))
    };
    let (status, reason, body, head_only) = match reply {
        Ok((body, head_only)) => {
            shared.scrapes.fetch_add(1, Ordering::Relaxed);
            (200, "OK", body, head_only)
        }
        Err((code, reason)) => {
            shared.http_errors.fetch_add(1, Ordering::Relaxed);
            (code, reason, Arc::new(format!("{reason}\n")), false)
        }
    };
    let ctype = if status == 200 {
        "text/plain; version=0.0.4; charset=utf-8"
    } else {
        "text/plain; charset=utf-8"
    };
    let hdr = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = s.write_all(hdr.as_bytes());
    if !head_only {
        let _ = s.write_all(body.as_bytes());
    }
    let _ = s.flush();
}

type Routed = Result<(Arc<String>, bool), (u16, &'static str)>;

fn route(head: &[u8], shared: &MetricsShared) -> Routed {
    let line_end = head
        .iter()
        .position(|&b| b == b'\n')
        .ok_or((400, "Bad Request"))?;
    let line = std::str::from_utf8(&head[..line_end]).map_err(|_| (400, "Bad Request"))?;
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err((400, "Bad Request"));
    };
    if !version.starts_with("HTTP/1.") {
        return Err((400, "Bad Request"));
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Err((405, "Method Not Allowed")),
    };
    let path = target.split('?').next().unwrap_or(target);
    if path != "/metrics" {
        return Err((404, "Not Found"));
    }
    let text = shared.fetch().ok_or((503, "Service Unavailable"))?;
    Ok((text, head_only))
}

/// Conntrack figures for a rendering.
#[derive(Debug, Clone, Copy, Default)]
pub struct CtFigures {
    pub entries: u64,
    pub inserts: u64,
    pub evictions: u64,
    pub insert_failed: u64,
    pub invalid: u64,
    pub expired: u64,
}

/// What one rendering reads.
pub struct Inputs<'a> {
    pub stats: &'a StatsReply,
    pub sync: &'a SyncStatus,
    pub ct: CtFigures,
    /// Error replies of the control socket, by error code name.
    pub control_errors: &'a [(String, u64)],
    pub http_errors: u64,
    pub scrapes: u64,
}

/// Prometheus text exposition (format 0.0.4) writer.
struct Text(String);

impl Text {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP vswitch_{name} {help}");
        let _ = writeln!(self.0, "# TYPE vswitch_{name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], v: impl std::fmt::Display) {
        self.0.push_str("vswitch_");
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                self.0.push_str(k);
                self.0.push_str("=\"");
                for c in val.chars() {
                    match c {
                        '\\' => self.0.push_str("\\\\"),
                        '"' => self.0.push_str("\\\""),
                        '\n' => self.0.push_str("\\n"),
                        c => self.0.push(c),
                    }
                }
                self.0.push('"');
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {v}");
    }

    /// A family with one unlabelled sample.
    fn single(&mut self, name: &str, kind: &str, help: &str, v: u64) {
        self.family(name, kind, help);
        self.sample(name, &[], v);
    }
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// Renders every metric (names in `docs/operations.md`).
pub fn render(i: &Inputs) -> String {
    let mut t = Text(String::with_capacity(16 * 1024));
    let st = i.stats;

    t.family(
        "port_rx_packets_total",
        "counter",
        "Frames received on the port",
    );
    for p in &st.ports {
        t.sample("port_rx_packets_total", &[("port", &p.name)], p.rx_packets);
    }
    t.family(
        "port_rx_bytes_total",
        "counter",
        "Bytes received on the port",
    );
    for p in &st.ports {
        t.sample("port_rx_bytes_total", &[("port", &p.name)], p.rx_bytes);
    }
    t.family(
        "port_tx_packets_total",
        "counter",
        "Frames sent on the port",
    );
    for p in &st.ports {
        t.sample("port_tx_packets_total", &[("port", &p.name)], p.tx_packets);
    }
    t.family("port_tx_bytes_total", "counter", "Bytes sent on the port");
    for p in &st.ports {
        t.sample("port_tx_bytes_total", &[("port", &p.name)], p.tx_bytes);
    }
    t.family(
        "port_fastpath_rx_packets_total",
        "counter",
        "Of the frames received on the port: forwarded by the in-kernel XDP fast path",
    );
    for p in &st.ports {
        t.sample(
            "port_fastpath_rx_packets_total",
            &[("port", &p.name)],
            p.fastpath_rx_packets,
        );
    }
    t.family(
        "port_fastpath_tx_packets_total",
        "counter",
        "Of the frames sent on the port: redirected to it by the in-kernel XDP fast path",
    );
    for p in &st.ports {
        t.sample(
            "port_fastpath_tx_packets_total",
            &[("port", &p.name)],
            p.fastpath_tx_packets,
        );
    }
    t.family(
        "port_drops_total",
        "counter",
        "Frames dropped, attributed to the port, by reason",
    );
    for p in &st.ports {
        for r in DropReason::ALL {
            let labels = [("port", p.name.as_str()), ("reason", r.name())];
            t.sample("port_drops_total", &labels, p.drops.get(*r));
        }
    }
    t.family(
        "drops_total",
        "counter",
        "Frames dropped and not attributable to a port, by reason",
    );
    for r in DropReason::ALL {
        t.sample(
            "drops_total",
            &[("reason", r.name())],
            st.switch.drops.get(*r),
        );
    }

    let workers: Vec<String> = st.workers.iter().map(|w| w.id.to_string()).collect();
    t.family(
        "worker_iterations_total",
        "counter",
        "Poll loop iterations, by kind (busy: moved frames; idle: moved none)",
    );
    for (w, id) in st.workers.iter().zip(&workers) {
        let busy = [("worker", id.as_str()), ("kind", "busy")];
        t.sample("worker_iterations_total", &busy, w.busy_iterations);
        let idle = [("worker", id.as_str()), ("kind", "idle")];
        t.sample("worker_iterations_total", &idle, w.idle_iterations);
    }
    t.family(
        "worker_seconds_total",
        "counter",
        "Time in poll loop iterations, by kind (idle includes sleeping)",
    );
    for (w, id) in st.workers.iter().zip(&workers) {
        let busy = [("worker", id.as_str()), ("kind", "busy")];
        t.sample("worker_seconds_total", &busy, secs(w.busy_ns));
        let idle = [("worker", id.as_str()), ("kind", "idle")];
        t.sample("worker_seconds_total", &idle, secs(w.idle_ns));
    }
    t.family(
        "worker_sleeps_total",
        "counter",
        "Times the worker slept in poll(2)",
    );
    for (w, id) in st.workers.iter().zip(&workers) {
        t.sample("worker_sleeps_total", &[("worker", id)], w.sleeps);
    }
    t.family(
        "worker_rx_packets_total",
        "counter",
        "Frames the worker received from its ports",
    );
    for (w, id) in st.workers.iter().zip(&workers) {
        t.sample("worker_rx_packets_total", &[("worker", id)], w.rx_packets);
    }
    t.family(
        "worker_rx_batch_size",
        "histogram",
        "Frames per non-empty receive batch",
    );
    for (w, id) in st.workers.iter().zip(&workers) {
        let mut cum = 0u64;
        let n = w.batch_sizes.len();
        for (b, c) in w.batch_sizes.iter().enumerate() {
            cum += c;
            if b + 1 < n {
                let le = ((1u64 << (b + 1)) - 1).to_string();
                t.sample(
                    "worker_rx_batch_size_bucket",
                    &[("worker", id), ("le", &le)],
                    cum,
                );
            }
        }
        t.sample(
            "worker_rx_batch_size_bucket",
            &[("worker", id), ("le", "+Inf")],
            w.rx_batches,
        );
        t.sample("worker_rx_batch_size_sum", &[("worker", id)], w.rx_packets);
        t.sample(
            "worker_rx_batch_size_count",
            &[("worker", id)],
            w.rx_batches,
        );
    }
    t.family(
        "cache_lookups_total",
        "counter",
        "Flow cache lookups by result (emc, megaflow, miss = slow path)",
    );
    for (w, id) in st.workers.iter().zip(&workers) {
        for (res, v) in [
            ("emc", w.cache.emc_hits),
            ("megaflow", w.cache.megaflow_hits),
            ("miss", w.cache.misses),
        ] {
            t.sample("cache_lookups_total", &[("worker", id), ("result", res)], v);
        }
    }
    t.family(
        "cache_revalidated_total",
        "counter",
        "Cache entries found stale after a flow change and rebuilt",
    );
    for (w, id) in st.workers.iter().zip(&workers) {
        t.sample(
            "cache_revalidated_total",
            &[("worker", id)],
            w.cache.revalidated,
        );
    }
    t.family("cache_megaflows", "gauge", "Megaflows installed");
    for (w, id) in st.workers.iter().zip(&workers) {
        t.sample("cache_megaflows", &[("worker", id)], w.cache.megaflows);
    }

    let s = &st.switch;
    t.single("ports", "gauge", "Ports attached", st.ports.len() as u64);
    t.single("mac_entries", "gauge", "MAC table entries", s.mac_entries);
    t.single(
        "mac_learned_total",
        "counter",
        "MAC addresses learned",
        s.mac_learned,
    );
    t.single(
        "mac_moved_total",
        "counter",
        "MAC addresses seen moving port",
        s.mac_moved,
    );
    t.single(
        "mac_aged_total",
        "counter",
        "MAC entries aged out",
        s.mac_aged,
    );
    t.single(
        "mac_table_full_total",
        "counter",
        "Source MACs not learned: table full",
        s.mac_table_full,
    );
    t.single(
        "flooded_total",
        "counter",
        "Frames flooded (broadcast, multicast, unknown unicast)",
        s.flooded,
    );
    t.single(
        "ports_vanished_total",
        "counter",
        "Ports whose interface disappeared under the switch",
        s.ports_vanished,
    );

    t.family("flows", "gauge", "Flows installed, by table");
    for (table, n) in s.flows_per_table.iter().enumerate() {
        t.sample("flows", &[("table", &table.to_string())], n);
    }
    t.single(
        "flows_version",
        "gauge",
        "Version of the flow tables",
        s.flows_version,
    );

    let ct = i.ct;
    t.single(
        "conntrack_entries",
        "gauge",
        "Connections tracked",
        ct.entries,
    );
    t.single(
        "conntrack_inserts_total",
        "counter",
        "Connections committed",
        ct.inserts,
    );
    t.single(
        "conntrack_evictions_total",
        "counter",
        "Connections evicted to make room",
        ct.evictions,
    );
    t.single(
        "conntrack_insert_failed_total",
        "counter",
        "Commits that found no room",
        ct.insert_failed,
    );
    t.single(
        "conntrack_invalid_total",
        "counter",
        "Packets conntrack marked invalid",
        ct.invalid,
    );
    t.single(
        "conntrack_expired_total",
        "counter",
        "Connections timed out",
        ct.expired,
    );

    t.single(
        "desired_generation",
        "gauge",
        "Desired-state generation realised (0: none synced)",
        i.sync.generation,
    );
    t.family(
        "desired_objects",
        "gauge",
        "Desired-state objects held, by kind",
    );
    for (kind, n) in &i.sync.counts {
        let k = serde_json::to_value(kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_else(|| format!("{kind:?}"));
        t.sample("desired_objects", &[("kind", &k)], n);
    }

    t.family(
        "control_errors_total",
        "counter",
        "Error replies on the control socket, by error code",
    );
    for (code, n) in i.control_errors {
        t.sample("control_errors_total", &[("code", code)], n);
    }
    t.single(
        "metrics_http_errors_total",
        "counter",
        "Metrics endpoint requests answered with an HTTP error",
        i.http_errors,
    );
    t.single(
        "metrics_scrapes_total",
        "counter",
        "Metrics endpoint scrapes served (before this one)",
        i.scrapes,
    );
    t.0
}

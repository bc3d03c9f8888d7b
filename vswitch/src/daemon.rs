//! The daemon's request handler: control-socket operations applied to the datapath,
//! with every port change written to the state directory.

use crate::Datapath;
use crate::control::Handler;
use crate::desired::DesiredStore;
use crate::flow::spec::Match;
use crate::metrics::{CtFigures, Inputs, MetricsShared};
use crate::persist::StateStore;
use crate::port::netdev;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};
use vswitch_proto::{
    AddPortParams, CaptureStartParams, CaptureStartReply, ErrorCode, ErrorReply, Op, PortKind,
};

/// How often interfaces are checked for having vanished or come back.
const LINK_CHECK: Duration = Duration::from_secs(1);

pub struct Daemon {
    dp: Datapath,
    store: Option<StateStore>,
    last_link_check: Instant,
    /// Desired state from the agent (`sync_*` ops); in memory unless
    /// [`Daemon::with_desired`] gave one that persists.
    desired: DesiredStore,
    /// The metrics endpoint's meeting point, when one is served.
    metrics: Option<Arc<MetricsShared>>,
    /// Error replies sent on the control socket, by code.
    control_errors: BTreeMap<String, u64>,
    /// The running packet capture, if any, and the id of the next.
    capture: Option<crate::capture::Active>,
    next_capture: u64,
}

fn to_value<T: serde::Serialize>(v: &T) -> Result<Value, ErrorReply> {
    serde_json::to_value(v).map_err(|e| ErrorReply::new(ErrorCode::Internal, e.to_string()))
}

impl Daemon {
    pub fn new(dp: Datapath, store: Option<StateStore>) -> Daemon {
        Daemon {
            dp,
            store,
            last_link_check: Instant::now(),
            desired: DesiredStore::default(),
            metrics: None,
            control_errors: BTreeMap::new(),
            capture: None,
            next_capture: 1,
        }
    }

    /// Uses `desired` (typically persisting to the state dir) and realises what it
    /// restored from there.
    pub fn with_desired(mut self, mut desired: DesiredStore) -> Daemon {
        if let Err(e) = desired.restore(Some(&mut self.dp)) {
            tracing::error!(error = %e, "cannot read saved desired state; starting without it");
        }
        self.desired = desired;
        self
    }

    /// Renders metrics for scrapes waiting on `shared` (from [`Handler::tick`]).
    pub fn with_metrics(mut self, shared: Arc<MetricsShared>) -> Daemon {
        self.metrics = Some(shared);
        self
    }

    /// The Prometheus text of the switch now (see `docs/operations.md`).
    pub fn render_metrics(&self) -> String {
        let stats = self.dp.stats(None).unwrap_or_default();
        let t = &self.dp.conntrack().table;
        let c = &t.counters;
        let ct = CtFigures {
            entries: t.len() as u64,
            inserts: c.inserts.load(Relaxed),
            evictions: c.evictions.load(Relaxed),
            insert_failed: c.insert_failed.load(Relaxed),
            invalid: c.invalid.load(Relaxed),
            expired: c.expired.load(Relaxed),
        };
        let errors: Vec<(String, u64)> = self
            .control_errors
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        let (http_errors, scrapes) = match &self.metrics {
            Some(m) => (m.http_errors.load(Relaxed), m.scrapes.load(Relaxed)),
            None => (0, 0),
        };
        crate::metrics::render(&Inputs {
            stats: &stats,
            sync: &self.desired.status(),
            ct,
            control_errors: &errors,
            http_errors,
            scrapes,
        })
    }

    fn capture_start(&mut self, p: CaptureStartParams) -> Result<Value, ErrorReply> {
        if cfg!(feature = "bench-no-capture") {
            return Err(ErrorReply::new(
                ErrorCode::Failed,
                "this vswitchd was built without packet capture (feature bench-no-capture)",
            ));
        }
        let port_no = self.dp.port_no(&p.port).ok_or_else(|| {
            ErrorReply::new(ErrorCode::NotFound, format!("no port named '{}'", p.port))
        })?;
        let filter = match p.filter.as_deref().map(str::trim) {
            None | Some("") => Match::ANY,
            Some(text) => crate::flowctl::parse_filter(&self.dp, text).map_err(|e| {
                ErrorReply::new(ErrorCode::InvalidParams, format!("capture filter: {e}"))
            })?,
        };
        if let Some(a) = &self.capture
            && a.last_read.elapsed() < crate::capture::IDLE_TIMEOUT
        {
            return Err(ErrorReply::new(
                ErrorCode::Failed,
                format!("a capture is already running (id {}); one at a time", a.id),
            ));
        }
        let id = self.next_capture;
        self.next_capture += 1;
        let (session, rx) = crate::capture::Session::new(port_no, p.drops, filter);
        self.dp.capture_tap().arm(session.clone());
        self.capture = Some(crate::capture::Active::new(
            id,
            session,
            rx,
            self.dp.now_ns(),
        ));
        tracing::info!(id, port = %p.port, drops = p.drops, "capture started");
        to_value(&CaptureStartReply {
            id,
            port_no,
            snaplen: crate::capture::SNAPLEN as u32,
        })
    }

    fn capture_of(&mut self, id: u64) -> Result<&mut crate::capture::Active, ErrorReply> {
        match &mut self.capture {
            Some(a) if a.id == id => Ok(a),
            _ => Err(ErrorReply::new(
                ErrorCode::NotFound,
                format!("no capture with id {id} (ended, timed out or never started)"),
            )),
        }
    }

    fn capture_stop(&mut self) {
        if let Some(a) = self.capture.take() {
            self.dp.capture_tap().disarm();
            tracing::info!(id = a.id, "capture stopped");
        }
    }

    pub fn datapath(&mut self) -> &mut Datapath {
        &mut self.dp
    }

    /// Re-attaches the ports saved in the state directory. Pod ports whose interface
    /// is gone are forgotten (their pod is); uplink/gateway ports wait, down, for
    /// their interface. Returns (attached, skipped).
    pub fn restore(&mut self) -> (usize, usize) {
        let Some(store) = &self.store else {
            return (0, 0);
        };
        let saved = match store.load() {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "cannot read saved ports; starting without them");
                return (0, 0);
            }
        };
        let (mut ok, mut skipped) = (0, 0);
        for p in saved {
            let present = netdev::ifindex(&p.name).is_some();
            let r = match (present, p.kind) {
                (true, _) => self.dp.add_port(&p),
                (false, PortKind::Pod) => {
                    tracing::info!(port = %p.name, "saved pod port has no interface any more; forgotten");
                    skipped += 1;
                    continue;
                }
                (false, _) => self.dp.add_down_port(&p),
            };
            match r {
                Ok(info) => {
                    tracing::info!(port = %info.name, mode = %info.mode, state = ?info.state, "restored port");
                    self.desired.port_changed(&info, true, &mut self.dp);
                    ok += 1;
                }
                Err(e) => {
                    tracing::error!(port = %p.name, error = %e, "could not restore port");
                    skipped += 1;
                }
            }
        }
        self.save();
        (ok, skipped)
    }

    fn save(&self) {
        let Some(store) = &self.store else { return };
        let ports: Vec<AddPortParams> = self
            .dp
            .ports()
            .into_iter()
            .map(|p| AddPortParams {
                name: p.name,
                kind: p.kind,
                mode: p.requested_mode,
                pod: p.pod,
            })
            .collect();
        if let Err(e) = store.save(&ports) {
            tracing::error!(error = %e, "cannot save port state");
        }
    }
}

impl Handler for Daemon {
    fn handle(&mut self, op: Op) -> Result<Value, ErrorReply> {
        let r = self.handle_op(op);
        // Whatever the request changed (flows, ports, desired state, a capture),
        // the kernel's cached decisions are stale before the reply goes out.
        self.dp.fastpath_sync();
        r
    }

    fn note_error(&mut self, e: &ErrorReply) {
        let code = serde_json::to_value(e.code)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_else(|| format!("{:?}", e.code));
        *self.control_errors.entry(code).or_insert(0) += 1;
    }

    fn tick(&mut self) {
        if let Some(m) = &self.metrics
            && m.wanted()
        {
            let text = self.render_metrics();
            m.publish(text);
        }
        if self
            .capture
            .as_ref()
            .is_some_and(|a| a.last_read.elapsed() >= crate::capture::IDLE_TIMEOUT)
        {
            tracing::info!("capture not read for a while; its client is gone");
            self.capture_stop();
        }
        self.dp.fastpath_sync();
        if self.last_link_check.elapsed() < LINK_CHECK {
            return;
        }
        self.last_link_check = Instant::now();
        let expired = self.dp.expire_flows();
        if expired > 0 {
            tracing::debug!(expired, "flows timed out");
        }
        let before = self.dp.ports();
        let ch = self.dp.check_links();
        self.desired.tick(&mut self.dp);
        if !ch.removed.is_empty() {
            self.save();
        }
        for info in before.iter().filter(|i| ch.removed.contains(&i.name)) {
            self.desired.port_changed(info, false, &mut self.dp);
        }
        for info in self.dp.ports().iter().filter(|i| ch.up.contains(&i.name)) {
            self.desired.port_changed(info, true, &mut self.dp);
        }
        self.dp.fastpath_sync();
    }
}

impl Daemon {
    fn handle_op(&mut self, op: Op) -> Result<Value, ErrorReply> {
        match op {
            Op::Hello => to_value(&crate::control::hello_reply()),
            Op::AddPort(p) => {
                let info = self.dp.add_port(&p)?;
                self.save();
                self.desired.port_changed(&info, true, &mut self.dp);
                to_value(&info)
            }
            Op::DelPort(p) => {
                let gone = self.dp.ports().into_iter().find(|i| i.name == p.name);
                self.dp.del_port(&p.name)?;
                self.save();
                if let Some(info) = gone {
                    self.desired.port_changed(&info, false, &mut self.dp);
                }
                Ok(Value::Object(Default::default()))
            }
            Op::ListPorts => to_value(&self.desired.port_entries(self.dp.ports())),
            Op::Stats(p) => to_value(&self.dp.stats(p.port.as_deref())?),
            Op::FlowMods(p) => to_value(&crate::flowctl::flow_mods(&mut self.dp, p)?),
            Op::DumpFlows(p) => to_value(&crate::flowctl::dump_flows(&mut self.dp, p)?),
            Op::DumpGroups => to_value(&crate::flowctl::dump_groups(&self.dp)),
            Op::Trace(p) => to_value(&crate::flowctl::trace(&mut self.dp, p)?),
            Op::SyncFull(p) => to_value(&self.desired.sync_full(p, Some(&mut self.dp))?),
            Op::SyncDelta(p) => to_value(&self.desired.sync_delta(p, Some(&mut self.dp))?),
            Op::SyncStatus => to_value(&self.desired.status()),
            Op::Conntrack(p) => {
                let now = self.dp.now_ns();
                let r = crate::svcctl::conntrack(&self.dp.conntrack().table, &p, now);
                if r.flushed > 0 {
                    // Flushed connections may be in the XDP fast path.
                    self.dp.fastpath_invalidate();
                }
                to_value(&r)
            }
            Op::Services => to_value(&crate::svcctl::services(&self.dp)),
            Op::Policies(p) => to_value(&crate::policy::report::policies(
                self.desired.policy_compiler(),
                &p,
            )),
            Op::CaptureStart(p) => self.capture_start(p),
            Op::CaptureRead(p) => {
                let max = p.max.unwrap_or(256).clamp(1, 256) as usize;
                let reply = self.capture_of(p.id)?.read(max);
                to_value(&reply)
            }
            Op::CaptureStop(p) => {
                self.capture_of(p.id)?;
                self.capture_stop();
                Ok(Value::Object(Default::default()))
            }
        }
    }
}

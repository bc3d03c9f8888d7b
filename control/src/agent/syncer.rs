//! Pushes desired state to `vswitchd` and keeps it there.
//!
//! The sources publish whole [`DesiredState`]s into a [`Handoff`] (latest wins);
//! the syncer thread sends the daemon only the difference from what it last
//! acknowledged (`sync_delta`), or everything (`sync_full`) after connecting, when
//! the daemon's generation is not the one we left it at (it restarted from older
//! saved state, or `vsctl apply` replaced it), or when a delta is refused with
//! `generation_mismatch`. A lost connection is retried with exponential backoff and
//! followed by a full sync, so a restarted daemon is resynchronised without
//! restarting the agent. A `sync_status` every second notices a daemon that went
//! away while nothing changed.

use crate::agent::metrics::Metrics;
use crate::client::{CallError, Client};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use vswitch_proto::sync::{Delta, diff};
use vswitch_proto::{
    DesiredState, ErrorCode, ErrorReply, MAX_LINE_BYTES, Object, ObjectKey, Op, SyncDeltaParams,
    SyncFullParams, SyncReply, SyncStatus,
};

/// Bytes of objects per request: well below the daemon's line limit, which also
/// has to hold the request's envelope.
pub const PART_BUDGET: usize = MAX_LINE_BYTES * 3 / 4;
/// How often an idle syncer checks that the daemon is still there and unchanged.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// Longest wait for a new state while idle (then the heartbeat is due or not).
const IDLE_WAIT: Duration = Duration::from_millis(200);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// A desired state and when its oldest not yet synced change was seen.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub state: DesiredState,
    pub changed_at: Instant,
}

/// Latest-wins hand-over of desired state from a source to the syncer.
#[derive(Default)]
pub struct Handoff {
    slot: Mutex<Option<Snapshot>>,
    cv: Condvar,
}

impl Handoff {
    /// Offers a new state. An unsynced older one is replaced, keeping its
    /// `changed_at` so latency counts from the first change.
    pub fn publish(&self, state: DesiredState) {
        let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        let changed_at = slot.as_ref().map_or_else(Instant::now, |s| s.changed_at);
        *slot = Some(Snapshot { state, changed_at });
        self.cv.notify_all();
    }

    /// Takes the newest state, waiting up to `timeout` for one.
    pub fn take(&self, timeout: Duration) -> Option<Snapshot> {
        let slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        let (mut slot, _) = self
            .cv
            .wait_timeout_while(slot, timeout, |s| s.is_none())
            .unwrap_or_else(|p| p.into_inner());
        slot.take()
    }
}

fn encoded_len(o: &impl serde::Serialize) -> usize {
    serde_json::to_vec(o).map_or(0, |v| v.len()) + 1
}

/// Drops objects too large for any request (the daemon would refuse the line and
/// close the connection), with an error log.
fn fits(o: &Object) -> bool {
    let n = encoded_len(o);
    if n > PART_BUDGET {
        tracing::error!(key = %o.key(), bytes = n, "object too large for the control socket; not synced");
        return false;
    }
    true
}

/// A full sync as one request, or as several (`more: true` on all but the last)
/// when the state is larger than `budget` bytes.
pub fn full_parts(generation: u64, state: &DesiredState, budget: usize) -> Vec<SyncFullParams> {
    let mut parts = Vec::new();
    let mut cur = DesiredState::new();
    let mut size = 0;
    for (_, o) in state.iter().filter(|(_, o)| fits(o)) {
        let n = encoded_len(o);
        if size + n > budget && !cur.is_empty() {
            parts.push(std::mem::take(&mut cur));
            size = 0;
        }
        cur.upsert(o.clone());
        size += n;
    }
    parts.push(cur);
    let last = parts.len() - 1;
    parts
        .into_iter()
        .enumerate()
        .map(|(i, state)| SyncFullParams {
            generation,
            state,
            more: i < last,
        })
        .collect()
}

/// A delta as consecutive requests of at most `budget` bytes, each based on the
/// generation the previous one reaches (`base + 1`, `base + 2`, ...).
pub fn delta_parts(base: u64, delta: &Delta, budget: usize) -> Vec<SyncDeltaParams> {
    let mut parts: Vec<SyncDeltaParams> = Vec::new();
    let mut size = 0;
    let mut next = base;
    let mut open = |parts: &mut Vec<SyncDeltaParams>, size: &mut usize, n: usize| {
        let need_new = parts
            .last()
            .is_none_or(|p| *size + n > budget && !(p.upserts.is_empty() && p.deletes.is_empty()));
        if need_new {
            next += 1;
            parts.push(SyncDeltaParams {
                base_generation: next - 1,
                generation: next,
                upserts: Vec::new(),
                deletes: Vec::new(),
            });
            *size = 0;
        }
        *size += n;
    };
    for k in &delta.deletes {
        open(&mut parts, &mut size, encoded_len(k));
        if let Some(p) = parts.last_mut() {
            p.deletes.push(k.clone());
        }
    }
    for o in delta.upserts.iter().filter(|o| fits(o)) {
        open(&mut parts, &mut size, encoded_len(o));
        if let Some(p) = parts.last_mut() {
            p.upserts.push(o.clone());
        }
    }
    parts
}

/// What the daemon holds as far as we know.
struct Pushed {
    generation: u64,
    state: DesiredState,
}

enum SyncError {
    /// The connection is gone or unusable: reconnect, then full sync.
    Connection(String),
    /// The daemon refused the request: full sync on the same connection.
    Refused(ErrorReply),
}

impl From<CallError> for SyncError {
    fn from(e: CallError) -> Self {
        match e {
            CallError::Remote(r) => SyncError::Refused(r),
            other => SyncError::Connection(other.to_string()),
        }
    }
}

pub struct Syncer {
    socket: PathBuf,
    handoff: Arc<Handoff>,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
    conn: Option<Client>,
    pushed: Option<Pushed>,
    current: Option<Snapshot>,
    need_full: bool,
    backoff: Duration,
    last_contact: Instant,
    /// Latest generation seen anywhere: new generations are always above it.
    high_water: u64,
}

impl Syncer {
    pub fn new(
        socket: PathBuf,
        handoff: Arc<Handoff>,
        metrics: Arc<Metrics>,
        stop: Arc<AtomicBool>,
    ) -> Syncer {
        Syncer {
            socket,
            handoff,
            metrics,
            stop,
            conn: None,
            pushed: None,
            current: None,
            need_full: true,
            backoff: BACKOFF_MIN,
            last_contact: Instant::now(),
            high_water: 0,
        }
    }

    /// Runs until `stop` is set.
    pub fn run(mut self) {
        while !self.stop.load(Ordering::Relaxed) {
            self.step();
        }
    }

    fn step(&mut self) {
        // Idle (connected, nothing to do) waits for a new state; anything else
        // (connecting, a sync pending) goes on at once.
        let idle =
            self.conn.is_some() && (self.current.is_none() || (!self.need_full && self.in_step()));
        let wait = if idle { IDLE_WAIT } else { Duration::ZERO };
        if let Some(s) = self.handoff.take(wait) {
            let changed_at = match &self.current {
                // An earlier change not yet pushed keeps its time.
                Some(c) if !self.in_step() => c.changed_at.min(s.changed_at),
                _ => s.changed_at,
            };
            self.current = Some(Snapshot {
                state: s.state,
                changed_at,
            });
        }
        if self.conn.is_none() && !self.connect() {
            return;
        }
        let Some(current) = self.current.clone() else {
            // Nothing to push yet (sources still listing): keep the line checked.
            if self.last_contact.elapsed() >= HEARTBEAT {
                self.heartbeat();
            }
            return;
        };
        // A resync of an unchanged state (after reconnecting) is not a change whose
        // realisation latency means anything.
        let was_change = !self.in_step();
        let result = if self.need_full {
            self.full(&current)
        } else if !self.in_step() {
            self.delta(&current)
        } else if self.last_contact.elapsed() >= HEARTBEAT {
            self.heartbeat();
            return;
        } else {
            return;
        };
        match result {
            Ok(()) => {
                self.backoff = BACKOFF_MIN;
                self.need_full = false;
                let latency = was_change.then(|| current.changed_at.elapsed());
                self.metrics.synced(self.high_water, latency);
                for (kind, n) in current.state.counts() {
                    self.metrics.set_desired(kind.as_str(), n);
                }
            }
            Err(SyncError::Refused(e)) => {
                tracing::warn!(error = %e, "vswitchd refused a sync; sending everything");
                self.need_full = true;
                self.sleep_backoff();
            }
            Err(SyncError::Connection(e)) => {
                tracing::warn!(error = %e, "lost vswitchd; reconnecting");
                self.conn = None;
                self.need_full = true;
            }
        }
    }

    /// Whether the daemon holds what we want.
    fn in_step(&self) -> bool {
        match (&self.pushed, &self.current) {
            (Some(p), Some(c)) => p.state == c.state,
            _ => false,
        }
    }

    fn connect(&mut self) -> bool {
        let r = Client::connect(&self.socket).and_then(|mut c| {
            let hello = c.hello()?;
            Ok((c, hello))
        });
        match r {
            Ok((c, hello)) => {
                tracing::info!(pid = hello.pid, version = %hello.version, "connected to vswitchd");
                self.metrics.connected();
                self.conn = Some(c);
                self.need_full = true;
                self.backoff = BACKOFF_MIN;
                self.last_contact = Instant::now();
                true
            }
            Err(e) => {
                tracing::debug!(error = %format!("{e:#}"), "vswitchd not reachable");
                self.sleep_backoff();
                false
            }
        }
    }

    fn sleep_backoff(&mut self) {
        let until = Instant::now() + self.backoff;
        while Instant::now() < until && !self.stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(20).min(self.backoff));
        }
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }

    fn call<T: serde::de::DeserializeOwned>(&mut self, op: Op) -> Result<T, SyncError> {
        let c = self
            .conn
            .as_mut()
            .ok_or_else(|| SyncError::Connection("not connected".into()))?;
        let v = c.call(op)?;
        self.last_contact = Instant::now();
        Ok(c.decode(v)?)
    }

    fn status(&mut self) -> Result<SyncStatus, SyncError> {
        self.call(Op::SyncStatus)
    }

    /// A `sync_status`; a daemon that moved to another generation behind our back
    /// gets a full sync.
    fn heartbeat(&mut self) {
        match self.status() {
            Ok(st) => {
                if self
                    .pushed
                    .as_ref()
                    .is_some_and(|p| p.generation != st.generation)
                {
                    tracing::info!(
                        daemon = st.generation,
                        ours = self.pushed.as_ref().map_or(0, |p| p.generation),
                        "vswitchd's generation moved; full sync"
                    );
                    self.need_full = true;
                }
            }
            Err(SyncError::Connection(e)) => {
                tracing::warn!(error = %e, "lost vswitchd; reconnecting");
                self.conn = None;
                self.need_full = true;
            }
            Err(SyncError::Refused(e)) => tracing::warn!(error = %e, "sync_status refused"),
        }
    }

    fn note_reply(&mut self, r: &SyncReply) {
        self.metrics.daemon_realized(r.realize_us);
        if !r.rejected.is_empty() {
            self.metrics.rejected(r.rejected.len());
            for x in &r.rejected {
                tracing::warn!(key = %x.key, reason = %x.message, "vswitchd rejected an object");
            }
        }
    }

    fn full(&mut self, snap: &Snapshot) -> Result<(), SyncError> {
        let st = self.status()?;
        // Generations only grow, across agent and daemon restarts alike.
        let generation = self.high_water.max(st.generation) + 1;
        // Taken even if this attempt fails: a retry then uses a new generation, so
        // the daemon drops parts it staged from this one instead of merging them.
        self.high_water = generation;
        let parts = full_parts(generation, &snap.state, PART_BUDGET);
        let n = parts.len();
        let mut last = SyncReply::default();
        for p in parts {
            match self.call::<SyncReply>(Op::SyncFull(p)) {
                Ok(r) => last = r,
                Err(e) => {
                    self.metrics.sync("full", false);
                    return Err(e);
                }
            }
        }
        self.metrics.sync("full", true);
        self.note_reply(&last);
        tracing::info!(
            generation,
            parts = n,
            objects = snap.state.len(),
            upserted = last.upserted,
            deleted = last.deleted,
            rejected = last.rejected.len(),
            realize_us = last.realize_us,
            "full sync"
        );
        self.high_water = generation;
        self.pushed = Some(Pushed {
            generation,
            state: snap.state.clone(),
        });
        Ok(())
    }

    fn delta(&mut self, snap: &Snapshot) -> Result<(), SyncError> {
        let Some(pushed) = &self.pushed else {
            return self.full(snap);
        };
        let d = diff(&pushed.state, &snap.state);
        let parts = delta_parts(pushed.generation, &d, PART_BUDGET);
        for p in parts {
            let generation = p.generation;
            // Applied part by part, so what the daemon holds is tracked part by part.
            let (ups, dels): (Vec<Object>, Vec<ObjectKey>) = (p.upserts.clone(), p.deletes.clone());
            match self.call::<SyncReply>(Op::SyncDelta(p)) {
                Ok(r) => {
                    self.metrics.sync("delta", true);
                    self.note_reply(&r);
                    tracing::info!(
                        generation,
                        upserted = r.upserted,
                        deleted = r.deleted,
                        rejected = r.rejected.len(),
                        realize_us = r.realize_us,
                        "delta sync"
                    );
                    if let Some(pushed) = &mut self.pushed {
                        for k in &dels {
                            pushed.state.remove(k);
                        }
                        for o in ups {
                            pushed.state.upsert(o);
                        }
                        pushed.generation = generation;
                    }
                    self.high_water = self.high_water.max(generation);
                }
                Err(SyncError::Refused(e)) => {
                    self.metrics.sync("delta", false);
                    let mismatch = e.code == ErrorCode::GenerationMismatch;
                    if mismatch {
                        tracing::info!(error = %e, "vswitchd is at another generation; full sync");
                    }
                    self.need_full = true;
                    // A refusal for another reason is not fixed by retrying at once.
                    return if mismatch {
                        self.full(snap)
                    } else {
                        Err(SyncError::Refused(e))
                    };
                }
                Err(e) => {
                    self.metrics.sync("delta", false);
                    return Err(e);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vswitch_proto::model::Namespace;

    fn ns(name: &str) -> Object {
        Object::Namespace(Namespace {
            name: name.into(),
            labels: [("pad".to_string(), "x".repeat(100))].into(),
        })
    }

    #[test]
    fn large_states_go_in_parts() {
        let state: DesiredState = (0..100).map(|i| ns(&format!("n{i:03}"))).collect();
        let one = full_parts(3, &state, usize::MAX);
        assert_eq!(one.len(), 1);
        assert!(!one[0].more);
        let parts = full_parts(3, &state, 1500);
        assert!(parts.len() > 5, "{}", parts.len());
        assert!(parts.iter().all(|p| p.generation == 3));
        assert!(parts[..parts.len() - 1].iter().all(|p| p.more));
        assert!(!parts[parts.len() - 1].more);
        let total: usize = parts.iter().map(|p| p.state.len()).sum();
        assert_eq!(total, 100);
        assert!(
            parts
                .iter()
                .all(|p| serde_json::to_vec(&p.state).map_or(0, |v| v.len()) < 1500 + 100)
        );
        // An empty state is still one (empty) full sync.
        assert_eq!(full_parts(1, &DesiredState::new(), 10).len(), 1);
    }

    #[test]
    fn large_deltas_chain_generations() {
        let old: DesiredState = (0..50).map(|i| ns(&format!("a{i:03}"))).collect();
        let new: DesiredState = (0..50).map(|i| ns(&format!("b{i:03}"))).collect();
        let d = diff(&old, &new);
        let parts = delta_parts(10, &d, 1500);
        assert!(parts.len() > 3);
        for (i, p) in parts.iter().enumerate() {
            assert_eq!(p.base_generation, 10 + i as u64);
            assert_eq!(p.generation, 11 + i as u64);
        }
        let dels: usize = parts.iter().map(|p| p.deletes.len()).sum();
        let ups: usize = parts.iter().map(|p| p.upserts.len()).sum();
        assert_eq!((dels, ups), (50, 50));
        assert!(delta_parts(1, &Delta::default(), 10).is_empty());
    }

    #[test]
    fn handoff_keeps_the_latest_and_the_first_change_time() {
        let h = Handoff::default();
        assert!(h.take(Duration::from_millis(10)).is_none());
        h.publish([ns("a")].into_iter().collect());
        let t0 = h.slot.lock().expect("lock").as_ref().expect("s").changed_at;
        std::thread::sleep(Duration::from_millis(5));
        h.publish([ns("b")].into_iter().collect());
        let s = h.take(Duration::ZERO).expect("snapshot");
        assert_eq!(s.changed_at, t0);
        assert!(s.state.get(&"Namespace/b".parse().expect("key")).is_some());
        assert!(h.take(Duration::ZERO).is_none());
    }
}

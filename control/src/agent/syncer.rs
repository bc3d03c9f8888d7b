//! Pushes desired state to `vswitchd` and keeps it there.
//!
//! The sources hand their changes to a [`Handoff`]: the keys that changed and what
//! each holds now ([`Handoff::update`]), in proportion to the change. The handoff
//! keeps the whole desired state and the set of keys changed since the syncer last
//! took them. The syncer thread sends the daemon just those keys (`sync_delta`) —
//! no copy or diff of the whole state per change — or everything (`sync_full`)
//! after connecting, when the daemon's generation is not the one we left it at (it
//! restarted from older saved state, or `vsctl apply` replaced it), or when a delta
//! is refused (`generation_mismatch` or otherwise). A lost connection is retried
//! with exponential backoff and followed by a full sync, so a restarted daemon is
//! resynchronised without restarting the agent. A `sync_status` every second
//! notices a daemon that went away while nothing changed.

use crate::agent::metrics::Metrics;
use crate::client::{CallError, Client};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use vswitch_proto::sync::Delta;
use vswitch_proto::{
    DesiredState, ErrorCode, ErrorReply, Kind, MAX_LINE_BYTES, Object, ObjectKey, Op,
    SyncDeltaParams, SyncFullParams, SyncReply, SyncStatus,
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

/// A desired state and when its oldest change not taken before was seen.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub state: DesiredState,
    pub changed_at: Instant,
}

/// The changes taken for a delta: the changed keys' objects (upserts) and the
/// keys now absent (deletes), in key order.
#[derive(Debug, Clone)]
pub struct Pending {
    pub delta: Delta,
    /// When the oldest of these changes was seen by its source.
    pub changed_at: Option<Instant>,
    pub counts: BTreeMap<Kind, usize>,
}

/// The whole state, for a full sync.
#[derive(Debug, Clone)]
pub struct Full {
    pub state: DesiredState,
    /// When the oldest change not taken before was seen (`None`: a resync of a
    /// state already pushed).
    pub changed_at: Option<Instant>,
    pub counts: BTreeMap<Kind, usize>,
}

#[derive(Default)]
struct Shared {
    state: DesiredState,
    counts: BTreeMap<Kind, usize>,
    /// Keys changed since the syncer last took changes.
    pending: BTreeSet<ObjectKey>,
    changed_at: Option<Instant>,
    /// A source has published its first complete state.
    ready: bool,
    /// Something was published since the last `take` (tests' view).
    unseen: bool,
}

/// The desired state shared between the sources and the syncer.
#[derive(Default)]
pub struct Handoff {
    slot: Mutex<Shared>,
    cv: Condvar,
}

impl Shared {
    /// Objects per kind, every kind listed (zeros included).
    fn counts(&self) -> BTreeMap<Kind, usize> {
        Kind::ALL
            .iter()
            .map(|k| (*k, self.counts.get(k).copied().unwrap_or(0)))
            .collect()
    }
}

impl Handoff {
    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies changes (a key and what it holds now; `None`: gone) that a source
    /// saw at `seen_at`. Costs one comparison per key; keys whose object did not
    /// actually change are not sent. The first call marks the state complete
    /// (the syncer's first full sync waits for it), even with no changes.
    /// Returns how many keys changed.
    pub fn update(
        &self,
        changes: impl IntoIterator<Item = (ObjectKey, Option<Object>)>,
        seen_at: Instant,
    ) -> usize {
        let mut s = self.lock();
        let mut n = 0;
        for (key, obj) in changes {
            let changed = match obj {
                Some(o) => {
                    if s.state.get(&key) == Some(&o) {
                        false
                    } else {
                        if s.state.upsert(o).is_none() {
                            *s.counts.entry(key.kind).or_default() += 1;
                        }
                        true
                    }
                }
                None => {
                    let gone = s.state.remove(&key).is_some();
                    if gone && let Some(c) = s.counts.get_mut(&key.kind) {
                        *c = c.saturating_sub(1);
                    }
                    gone
                }
            };
            if changed {
                s.pending.insert(key);
                n += 1;
            }
        }
        if n > 0 {
            s.changed_at = Some(s.changed_at.map_or(seen_at, |t| t.min(seen_at)));
        }
        if n > 0 || !s.ready {
            s.ready = true;
            s.unseen = true;
            self.cv.notify_all();
        }
        n
    }

    /// Replaces the whole state (a diff against the current one: O(state); the
    /// sources use [`update`](Self::update)).
    pub fn publish(&self, state: DesiredState) {
        let mut changes: Vec<(ObjectKey, Option<Object>)> = Vec::new();
        {
            let s = self.lock();
            let d = vswitch_proto::sync::diff(&s.state, &state);
            changes.extend(d.deletes.into_iter().map(|k| (k, None)));
            changes.extend(d.upserts.into_iter().map(|o| (o.key(), Some(o))));
        }
        self.update(changes, Instant::now());
    }

    /// Waits up to `timeout` for changes, and takes them for a delta.
    pub fn take_delta(&self, timeout: Duration) -> Option<Pending> {
        let s = self.lock();
        let (mut s, _) = self
            .cv
            .wait_timeout_while(s, timeout, |s| !s.ready || s.pending.is_empty())
            .unwrap_or_else(|p| p.into_inner());
        if !s.ready || s.pending.is_empty() {
            return None;
        }
        let mut delta = Delta::default();
        for k in std::mem::take(&mut s.pending) {
            match s.state.get(&k) {
                Some(o) => delta.upserts.push(o.clone()),
                None => delta.deletes.push(k),
            }
        }
        s.unseen = false;
        Some(Pending {
            delta,
            changed_at: s.changed_at.take(),
            counts: s.counts(),
        })
    }

    /// Takes the whole state for a full sync (and the pending changes with it),
    /// once a source has published its first state; waits up to `timeout` for that.
    pub fn take_full(&self, timeout: Duration) -> Option<Full> {
        let s = self.lock();
        let (mut s, _) = self
            .cv
            .wait_timeout_while(s, timeout, |s| !s.ready)
            .unwrap_or_else(|p| p.into_inner());
        if !s.ready {
            return None;
        }
        s.pending.clear();
        s.unseen = false;
        Some(Full {
            state: s.state.clone(),
            changed_at: s.changed_at.take(),
            counts: s.counts(),
        })
    }

    /// Waits up to `timeout` for something new to be published and returns the
    /// whole state (a copy: tests and tools, not the syncer).
    pub fn take(&self, timeout: Duration) -> Option<Snapshot> {
        let s = self.lock();
        let (mut s, _) = self
            .cv
            .wait_timeout_while(s, timeout, |s| !s.unseen)
            .unwrap_or_else(|p| p.into_inner());
        if !s.unseen {
            return None;
        }
        s.unseen = false;
        s.pending.clear();
        Some(Snapshot {
            state: s.state.clone(),
            changed_at: s.changed_at.take().unwrap_or_else(Instant::now),
        })
    }
}

/// Hands the heap's free space back to the system and consolidates it. A full sync
/// clones and encodes the whole desired state (tens of MB in small blocks) and frees
/// it; glibc merges such freed blocks lazily, on the next larger allocation, which
/// put tens of milliseconds on the first change after a full sync
/// (benches/realize.py). Doing it here keeps that off the change path.
fn trim_heap() {
    // SAFETY: malloc_trim takes no pointers and is safe to call at any time.
    unsafe {
        libc::malloc_trim(0);
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
    /// The generation the daemon holds from us (`None`: nothing pushed yet).
    pushed: Option<u64>,
    need_full: bool,
    /// When the oldest change taken but not yet acknowledged was seen: kept
    /// across a failed attempt, so the latency of its eventual realisation
    /// counts from the change.
    carried: Option<Instant>,
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
            need_full: true,
            carried: None,
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

    fn carry(&mut self, changed_at: Option<Instant>) {
        self.carried = match (self.carried, changed_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    fn step(&mut self) {
        if self.conn.is_none() && !self.connect() {
            return;
        }
        let (result, counts) = if self.need_full {
            // Nothing to push until a source has its first complete state
            // (still listing): keep the line checked meanwhile.
            let Some(full) = self.handoff.take_full(IDLE_WAIT) else {
                if self.last_contact.elapsed() >= HEARTBEAT {
                    self.heartbeat();
                }
                return;
            };
            self.carry(full.changed_at);
            (self.full(&full.state), full.counts)
        } else {
            let Some(p) = self.handoff.take_delta(IDLE_WAIT) else {
                if self.last_contact.elapsed() >= HEARTBEAT {
                    self.heartbeat();
                }
                return;
            };
            self.carry(p.changed_at);
            (self.delta(&p.delta), p.counts)
        };
        match result {
            Ok(()) => {
                self.backoff = BACKOFF_MIN;
                if self.need_full {
                    trim_heap();
                }
                self.need_full = false;
                // A resync of an unchanged state (after reconnecting) is not a
                // change whose realisation latency means anything.
                let latency = self.carried.take().map(|t| t.elapsed());
                self.metrics.synced(self.high_water, latency);
                for (kind, n) in counts {
                    self.metrics.set_desired(kind.as_str(), n);
                }
            }
            Err(SyncError::Refused(e)) => {
                if e.code == ErrorCode::GenerationMismatch {
                    // Not fixed by waiting: the full sync goes out at once.
                    tracing::info!(error = %e, "vswitchd is at another generation; full sync");
                } else {
                    tracing::warn!(error = %e, "vswitchd refused a sync; sending everything");
                    self.sleep_backoff();
                }
                self.need_full = true;
            }
            Err(SyncError::Connection(e)) => {
                tracing::warn!(error = %e, "lost vswitchd; reconnecting");
                self.conn = None;
                self.need_full = true;
            }
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
                if self.pushed.is_some_and(|g| g != st.generation) {
                    tracing::info!(
                        daemon = st.generation,
                        ours = self.pushed.unwrap_or(0),
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

    fn full(&mut self, state: &DesiredState) -> Result<(), SyncError> {
        let st = self.status()?;
        // Generations only grow, across agent and daemon restarts alike.
        let generation = self.high_water.max(st.generation) + 1;
        // Taken even if this attempt fails: a retry then uses a new generation, so
        // the daemon drops parts it staged from this one instead of merging them.
        self.high_water = generation;
        // Until it is acknowledged, what the daemon holds is unknown.
        self.pushed = None;
        let parts = full_parts(generation, state, PART_BUDGET);
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
            objects = state.len(),
            upserted = last.upserted,
            deleted = last.deleted,
            rejected = last.rejected.len(),
            realize_us = last.realize_us,
            "full sync"
        );
        self.pushed = Some(generation);
        Ok(())
    }

    /// Sends one delta (in parts when large). Any failure leaves a full sync to
    /// do, which carries these changes too (they are in the handoff's state).
    fn delta(&mut self, d: &Delta) -> Result<(), SyncError> {
        let Some(base) = self.pushed else {
            return Err(SyncError::Connection("nothing pushed yet".into()));
        };
        for p in delta_parts(base, d, PART_BUDGET) {
            let generation = p.generation;
            match self.call::<SyncReply>(Op::SyncDelta(p)) {
                Ok(r) => {
                    self.metrics.sync("delta", true);
                    self.note_reply(&r);
                    tracing::debug!(
                        generation,
                        upserted = r.upserted,
                        deleted = r.deleted,
                        rejected = r.rejected.len(),
                        realize_us = r.realize_us,
                        "delta sync"
                    );
                    // Applied part by part, so what the daemon holds is tracked
                    // part by part.
                    self.pushed = Some(generation);
                    self.high_water = self.high_water.max(generation);
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
        let d = vswitch_proto::sync::diff(&old, &new);
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
        assert!(
            h.take_full(Duration::ZERO).is_none(),
            "nothing published yet"
        );
        h.publish([ns("a")].into_iter().collect());
        let t0 = h.lock().changed_at.expect("changed");
        std::thread::sleep(Duration::from_millis(5));
        h.publish([ns("b")].into_iter().collect());
        let s = h.take(Duration::ZERO).expect("snapshot");
        assert_eq!(s.changed_at, t0);
        assert!(s.state.get(&"Namespace/b".parse().expect("key")).is_some());
        assert!(h.take(Duration::ZERO).is_none());
    }

    #[test]
    fn handoff_hands_over_only_the_changed_keys() {
        let h = Handoff::default();
        let t0 = Instant::now();
        // The first update makes the state complete, even an empty one.
        assert_eq!(h.update(Vec::new(), t0), 0);
        let f = h.take_full(Duration::ZERO).expect("ready");
        assert!(f.state.is_empty() && f.changed_at.is_none());
        let a = ns("a");
        let b = ns("b");
        assert_eq!(
            h.update([(a.key(), Some(a.clone())), (b.key(), Some(b.clone()))], t0),
            2
        );
        let p = h.take_delta(Duration::ZERO).expect("delta");
        assert_eq!(p.delta.upserts, [a.clone(), b.clone()]);
        assert_eq!(p.changed_at, Some(t0));
        assert_eq!(p.counts[&Kind::Namespace], 2);
        assert!(h.take_delta(Duration::ZERO).is_none(), "taken");
        // The same object again is no change; a removal is a delete; a key added
        // and removed before it is taken is a delete of what was never sent.
        assert_eq!(h.update([(a.key(), Some(a.clone()))], Instant::now()), 0);
        assert!(h.take_delta(Duration::ZERO).is_none());
        let c = ns("c");
        h.update(
            [(b.key(), None), (c.key(), Some(c.clone()))],
            Instant::now(),
        );
        h.update([(c.key(), None)], Instant::now());
        let p = h.take_delta(Duration::ZERO).expect("delta");
        assert!(p.delta.upserts.is_empty());
        assert_eq!(p.delta.deletes, [b.key(), c.key()]);
        assert_eq!(p.counts[&Kind::Namespace], 1);
        // A full sync takes everything, pending changes included.
        h.update([(b.key(), Some(b.clone()))], Instant::now());
        let f = h.take_full(Duration::ZERO).expect("full");
        assert_eq!(f.state.len(), 2);
        assert!(f.changed_at.is_some());
        assert!(h.take_delta(Duration::ZERO).is_none());
    }
}

//! The daemon's copy of desired state (what `vswitch-agent` says the cluster wants):
//! applies `sync_full` and `sync_delta`, answers `sync_status`, keeps the state in
//! the state directory across restarts, and hands every change to the
//! [`Realizer`](realize::Realizer) chain.
//!
//! Applying is all or nothing per object, never per sync: an object a realizer's
//! check refuses is reported in the reply and skipped (its previous version stays in
//! force), and everything else in the same sync is applied.

pub mod realize;

use realize::{Change, RealizeCtx, Realizer};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use vswitch_proto::sync::{LastChange, Rejection, diff};
use vswitch_proto::{
    ChangeSet, DesiredState, ErrorCode, ErrorReply, Object, PortEntry, PortInfo, SyncDeltaParams,
    SyncFullParams, SyncReply, SyncStatus,
};

const FILE: &str = "desired.json";
/// Deltas since `desired.json` was written, one JSON record per line, appended
/// and synced per delta: persisting a delta costs in proportion to it, not to
/// the whole state. Folded into `desired.json` (and emptied) by every full sync
/// and once it outgrows a quarter of the snapshot (at least 1 MiB).
const JOURNAL: &str = "desired.journal";
const JOURNAL_MIN: u64 = 1 << 20;
const VERSION: u32 = 1;

/// One journal line: the objects a delta upserted (as they are after it) and
/// the keys it deleted, reaching `generation`.
#[derive(Serialize, Deserialize)]
struct JournalRecord {
    generation: u64,
    #[serde(default)]
    upserts: Vec<Object>,
    #[serde(default)]
    deletes: Vec<vswitch_proto::ObjectKey>,
}

/// Most objects a staged (multi-part) full sync may collect before it is refused:
/// bounds what a client that never sends the last part can make the daemon hold.
pub const MAX_STAGED_OBJECTS: usize = 1_000_000;

#[derive(Serialize, Deserialize)]
struct StateFile {
    version: u32,
    generation: u64,
    state: DesiredState,
}

/// How a change came: reported in `sync_status` as `last_change.sync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum How {
    Full,
    Delta,
    /// Read back from the state directory at start.
    Restore,
}

impl How {
    fn as_str(self) -> &'static str {
        match self {
            How::Full => "full",
            How::Delta => "delta",
            How::Restore => "restore",
        }
    }
}

/// A full sync being received in parts.
struct Staging {
    generation: u64,
    state: DesiredState,
}

pub struct DesiredStore {
    state: DesiredState,
    generation: u64,
    staging: Option<Staging>,
    last_change: Option<LastChange>,
    restored: bool,
    dir: Option<PathBuf>,
    /// Bytes of the last snapshot and of the journal after it.
    snapshot_bytes: u64,
    journal_bytes: u64,
    realizers: Vec<Box<dyn Realizer>>,
}

impl Default for DesiredStore {
    fn default() -> Self {
        DesiredStore::new(None)
    }
}

impl DesiredStore {
    /// An empty store that persists to `dir` (when given) and runs the default
    /// realizer chain.
    pub fn new(dir: Option<&Path>) -> DesiredStore {
        DesiredStore {
            state: DesiredState::new(),
            generation: 0,
            staging: None,
            last_change: None,
            restored: false,
            dir: dir.map(Path::to_path_buf),
            snapshot_bytes: 0,
            journal_bytes: 0,
            realizers: realize::default_chain(),
        }
    }

    /// Replaces the realizer chain (tests; later issues add theirs to the default).
    pub fn with_realizers(mut self, realizers: Vec<Box<dyn Realizer>>) -> DesiredStore {
        self.realizers = realizers;
        self
    }

    pub fn state(&self) -> &DesiredState {
        &self.state
    }

    /// The NetworkPolicy compiler of the realizer chain, if it has one.
    pub fn policy_compiler(&self) -> Option<&crate::policy::compile::Compiler> {
        self.realizers.iter().find_map(|r| r.policy_compiler())
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Loads the saved state, if any, and realises it. A corrupt file is moved aside
    /// (`desired.json.corrupt`) and reported; the store then starts empty at
    /// generation 0, and the agent's next full sync fills it.
    pub fn restore(&mut self, dp: Option<&mut crate::Datapath>) -> Result<(), String> {
        let Some(dir) = &self.dir else { return Ok(()) };
        let path = dir.join(FILE);
        self.journal_bytes = std::fs::metadata(dir.join(JOURNAL)).map_or(0, |m| m.len());
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // No snapshot yet: only deltas since an empty start, if any.
                let (generation, state) = replay_journal(dir, 0, DesiredState::new());
                if generation > 0 {
                    self.commit_full(generation, state, dp, How::Restore);
                    self.restored = true;
                }
                return Ok(());
            }
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let file = match serde_json::from_slice::<StateFile>(&text) {
            Ok(f) if f.version == VERSION => f,
            Ok(f) => {
                return Err(format!(
                    "{}: unsupported version {}",
                    path.display(),
                    f.version
                ));
            }
            Err(e) => {
                let aside = dir.join(format!("{FILE}.corrupt"));
                let _ = std::fs::rename(&path, &aside);
                return Err(format!(
                    "{}: {e} (moved to {})",
                    path.display(),
                    aside.display()
                ));
            }
        };
        self.snapshot_bytes = text.len() as u64;
        let (generation, state) = replay_journal(dir, file.generation, file.state);
        let reply = self.commit_full(generation, state, dp, How::Restore);
        for r in &reply.rejected {
            tracing::warn!(key = %r.key, reason = %r.message, "saved object no longer valid; dropped");
        }
        self.restored = true;
        tracing::info!(
            generation = self.generation,
            objects = self.state.len(),
            "desired state restored"
        );
        Ok(())
    }

    /// `sync_full`: stages a part (`more`), or replaces the whole state.
    pub fn sync_full(
        &mut self,
        p: SyncFullParams,
        dp: Option<&mut crate::Datapath>,
    ) -> Result<SyncReply, ErrorReply> {
        // Parts of another generation belong to an abandoned full sync.
        let mut staged = match self.staging.take() {
            Some(s) if s.generation == p.generation => s.state,
            _ => DesiredState::new(),
        };
        if staged.len() + p.state.len() > MAX_STAGED_OBJECTS {
            return Err(ErrorReply::new(
                ErrorCode::Failed,
                format!("a full sync may hold at most {MAX_STAGED_OBJECTS} objects"),
            ));
        }
        for (_, obj) in p.state.iter() {
            staged.upsert(obj.clone());
        }
        if p.more {
            let n = staged.len();
            self.staging = Some(Staging {
                generation: p.generation,
                state: staged,
            });
            return Ok(SyncReply {
                generation: self.generation,
                staged: Some(n),
                ..SyncReply::default()
            });
        }
        Ok(self.commit_full(p.generation, staged, dp, How::Full))
    }

    /// `sync_delta`: deletes, then upserts, on top of `base_generation`.
    pub fn sync_delta(
        &mut self,
        p: SyncDeltaParams,
        dp: Option<&mut crate::Datapath>,
    ) -> Result<SyncReply, ErrorReply> {
        if p.base_generation != self.generation {
            return Err(ErrorReply::new(
                ErrorCode::GenerationMismatch,
                format!(
                    "delta is based on generation {} but the daemon is at generation {}; send a sync_full",
                    p.base_generation, self.generation
                ),
            ));
        }
        if p.generation <= p.base_generation {
            return Err(ErrorReply::new(
                ErrorCode::InvalidParams,
                format!(
                    "generation {} must be greater than base_generation {}",
                    p.generation, p.base_generation
                ),
            ));
        }
        let start = Instant::now();
        let mut change = Change {
            generation: p.generation,
            ..Change::default()
        };
        for key in p.deletes {
            if let Some(old) = self.state.remove(&key) {
                change.keys.deleted.insert(key.clone());
                change.previous.insert(key, old);
            }
        }
        let mut rejected = Vec::new();
        for obj in p.upserts {
            let key = obj.key();
            if self.state.get(&key) == Some(&obj) {
                continue;
            }
            if let Err(message) = self.check(&obj) {
                rejected.push(Rejection { key, message });
                continue;
            }
            // A key deleted and re-added in one delta is a modification.
            change.keys.deleted.remove(&key);
            if let Some(old) = self.state.upsert(obj) {
                change.previous.entry(key.clone()).or_insert(old);
            }
            change.keys.upserted.insert(key);
        }
        self.generation = p.generation;
        Ok(self.finish(change, rejected, dp, How::Delta, start))
    }

    pub fn status(&self) -> SyncStatus {
        SyncStatus {
            generation: self.generation,
            counts: self.state.counts(),
            last_change: self.last_change.clone(),
            restored: self.restored,
        }
    }

    /// Ports as `list_ports` reports them: with the linked pod where there is one.
    pub fn port_entries(&self, ports: Vec<PortInfo>) -> Vec<PortEntry> {
        ports
            .into_iter()
            .map(|port| PortEntry {
                pod_link: realize::pod_link(&self.state, &port),
                port,
            })
            .collect()
    }

    /// Tells the realizers a port was attached (`added`) or removed, and logs the
    /// link of a pod port to its pod.
    pub fn port_changed(&mut self, port: &PortInfo, added: bool, dp: &mut crate::Datapath) {
        if let Some(r) = &port.pod {
            let pod = format!("{}/{}", r.namespace, r.name);
            match (added, realize::pod_link(&self.state, port)) {
                (true, Some(l)) => {
                    tracing::info!(port = %port.name, %pod, ips = ?l.ips, "port linked to pod")
                }
                (true, None) => {
                    tracing::info!(port = %port.name, %pod, "port's pod is not in desired state (yet)")
                }
                (false, _) => tracing::info!(port = %port.name, %pod, "pod port removed"),
            }
        }
        let ports = dp.ports();
        let mut ctx = RealizeCtx {
            ports: &ports,
            dp: Some(dp),
        };
        for r in &mut self.realizers {
            r.port_changed(&self.state, port, added, &mut ctx);
        }
    }

    /// The realizers' timers (about once a second).
    pub fn tick(&mut self, dp: &mut crate::Datapath) {
        let ports = dp.ports();
        let mut ctx = RealizeCtx {
            ports: &ports,
            dp: Some(dp),
        };
        for r in &mut self.realizers {
            r.tick(&self.state, &mut ctx);
        }
    }

    fn check(&self, obj: &Object) -> Result<(), String> {
        self.realizers
            .iter()
            .try_for_each(|r| r.check(obj, &self.state))
    }

    /// Replaces the state with `candidate` (objects the checks refuse keep their
    /// previous version).
    fn commit_full(
        &mut self,
        generation: u64,
        candidate: DesiredState,
        dp: Option<&mut crate::Datapath>,
        how: How,
    ) -> SyncReply {
        let start = Instant::now();
        let old = std::mem::take(&mut self.state);
        let mut rejected = Vec::new();
        for (key, obj) in candidate.iter() {
            if let Err(message) = self.check(obj) {
                rejected.push(Rejection {
                    key: key.clone(),
                    message,
                });
                if let Some(prev) = old.get(key)
                    && self.check(prev).is_ok()
                {
                    self.state.upsert(prev.clone());
                }
                continue;
            }
            self.state.upsert(obj.clone());
        }
        let delta = diff(&old, &self.state);
        let keys = ChangeSet::from(&delta);
        let previous: BTreeMap<_, _> = keys
            .upserted
            .iter()
            .chain(&keys.deleted)
            .filter_map(|k| old.get(k).map(|o| (k.clone(), o.clone())))
            .collect();
        self.generation = generation;
        let change = Change {
            keys,
            previous,
            generation,
        };
        self.finish(change, rejected, dp, how, start)
    }

    /// Persists, realises and records a change.
    fn finish(
        &mut self,
        change: Change,
        rejected: Vec<Rejection>,
        dp: Option<&mut crate::Datapath>,
        how: How,
        start: Instant,
    ) -> SyncReply {
        for r in &rejected {
            tracing::warn!(key = %r.key, reason = %r.message, "desired object rejected");
        }
        // A restore re-reads what is on disk: no need to write it back. A delta
        // goes to the journal (in proportion to it), a full sync to a snapshot.
        match how {
            How::Restore => {}
            How::Delta => self.journal(&change),
            How::Full => self.save(),
        }
        if !change.keys.is_empty() {
            let ports = dp.as_ref().map(|d| d.ports()).unwrap_or_default();
            let mut ctx = RealizeCtx { ports: &ports, dp };
            for r in &mut self.realizers {
                r.realize(&self.state, &change, &mut ctx);
            }
        }
        let realize_us = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
        let reply = SyncReply {
            generation: self.generation,
            upserted: change.keys.upserted.len(),
            deleted: change.keys.deleted.len(),
            rejected,
            realize_us,
            staged: None,
        };
        tracing::info!(
            sync = how.as_str(),
            generation = reply.generation,
            upserted = reply.upserted,
            deleted = reply.deleted,
            rejected = reply.rejected.len(),
            realize_us,
            "desired state applied"
        );
        self.last_change = Some(LastChange {
            generation: reply.generation,
            sync: how.as_str().to_string(),
            upserted: reply.upserted,
            deleted: reply.deleted,
            rejected: reply.rejected.len(),
            realize_us,
            at_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                .unwrap_or(0),
        });
        reply
    }

    /// Writes the whole state (`desired.json`), then empties the journal (its
    /// records are at or below the snapshot's generation, so a crash between
    /// the two replays nothing twice).
    fn save(&mut self) {
        let Some(dir) = &self.dir else { return };
        let file = StateFile {
            version: VERSION,
            generation: self.generation,
            state: self.state.clone(),
        };
        let r = serde_json::to_vec(&file)
            .map_err(std::io::Error::other)
            .and_then(|body| {
                crate::persist::write_atomic(dir, FILE, &body)?;
                Ok(body.len() as u64)
            });
        match r {
            Ok(n) => {
                self.snapshot_bytes = n;
                match std::fs::remove_file(dir.join(JOURNAL)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => tracing::error!(error = %e, "cannot empty the desired-state journal"),
                }
                self.journal_bytes = 0;
            }
            Err(e) => tracing::error!(error = %e, "cannot save desired state"),
        }
    }

    /// Appends one delta to the journal (synced), or snapshots when the journal
    /// has grown past its share.
    fn journal(&mut self, change: &Change) {
        let Some(dir) = &self.dir else { return };
        if self.journal_bytes > (self.snapshot_bytes / 4).max(JOURNAL_MIN) {
            return self.save();
        }
        let rec = JournalRecord {
            generation: self.generation,
            upserts: change
                .keys
                .upserted
                .iter()
                .filter_map(|k| self.state.get(k).cloned())
                .collect(),
            deletes: change.keys.deleted.iter().cloned().collect(),
        };
        let r = serde_json::to_vec(&rec)
            .map_err(std::io::Error::other)
            .and_then(|mut line| {
                use std::io::Write;
                line.push(b'\n');
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(dir.join(JOURNAL))?;
                f.write_all(&line)?;
                f.sync_data()?;
                Ok(line.len() as u64)
            });
        match r {
            Ok(n) => self.journal_bytes += n,
            Err(e) => {
                tracing::error!(error = %e, "cannot append to the desired-state journal; saving all");
                self.save();
            }
        }
    }
}

/// The snapshot's state with the journal's records above its generation
/// applied in order. A torn last line (a crash mid-append) ends the replay:
/// that delta was never acknowledged.
fn replay_journal(dir: &Path, mut generation: u64, mut state: DesiredState) -> (u64, DesiredState) {
    let text = match std::fs::read(dir.join(JOURNAL)) {
        Ok(t) => t,
        Err(_) => return (generation, state),
    };
    let mut applied = 0usize;
    for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let Ok(rec) = serde_json::from_slice::<JournalRecord>(line) else {
            tracing::warn!(
                applied,
                "desired-state journal ends in a torn record; ignored"
            );
            break;
        };
        if rec.generation <= generation {
            continue;
        }
        for k in &rec.deletes {
            state.remove(k);
        }
        for o in rec.upserts {
            state.upsert(o);
        }
        generation = rec.generation;
        applied += 1;
    }
    if applied > 0 {
        tracing::info!(
            records = applied,
            generation,
            "desired-state journal replayed"
        );
    }
    (generation, state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vswitch_proto::model::{LocalNode, Namespace, Pod};
    use vswitch_proto::{Kind, ObjectKey, PodRef, PortKind, PortMode, PortState};

    fn pod(name: &str, ip: &str) -> Object {
        Object::Pod(Pod {
            namespace: "default".into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            labels: Default::default(),
            ips: vec![ip.into()],
            mac: None,
            node_name: Some("n1".into()),
            local: true,
            host_network: false,
            phase: Some("Running".into()),
            host_ifname: None,
            ports: vec![],
        })
    }

    fn ns(name: &str) -> Object {
        Object::Namespace(Namespace {
            name: name.into(),
            labels: Default::default(),
        })
    }

    fn full(generation: u64, objs: Vec<Object>) -> SyncFullParams {
        SyncFullParams {
            generation,
            state: objs.into_iter().collect(),
            more: false,
        }
    }

    fn port(name: &str, pod: Option<&str>) -> PortInfo {
        PortInfo {
            name: name.into(),
            port_no: 1,
            kind: PortKind::Pod,
            requested_mode: PortMode::Auto,
            mode: PortMode::Packet,
            zero_copy: false,
            worker: 0,
            ifindex: 3,
            mac: "02:00:00:00:00:01".into(),
            mtu: 1500,
            state: PortState::Up,
            pod: pod.map(|p| PodRef {
                namespace: "default".into(),
                name: p.into(),
                container_id: None,
            }),
        }
    }

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("vswitch-desired-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("mkdir");
        d
    }

    #[test]
    fn full_then_delta_then_mismatch() {
        let mut s = DesiredStore::new(None);
        let r = s
            .sync_full(full(5, vec![pod("a", "10.0.0.1"), ns("default")]), None)
            .expect("full");
        assert_eq!((r.generation, r.upserted, r.deleted), (5, 2, 0));
        let r = s
            .sync_delta(
                SyncDeltaParams {
                    base_generation: 5,
                    generation: 6,
                    upserts: vec![pod("a", "10.0.0.9"), pod("b", "10.0.0.2")],
                    deletes: vec!["Namespace/default".parse().expect("key")],
                },
                None,
            )
            .expect("delta");
        assert_eq!((r.generation, r.upserted, r.deleted), (6, 2, 1));
        assert_eq!(s.state().pod("default", "a").expect("a").ips, ["10.0.0.9"]);
        let e = s
            .sync_delta(
                SyncDeltaParams {
                    base_generation: 5,
                    generation: 7,
                    upserts: vec![],
                    deletes: vec![],
                },
                None,
            )
            .expect_err("stale base");
        assert_eq!(e.code, ErrorCode::GenerationMismatch);
        let e = s
            .sync_delta(
                SyncDeltaParams {
                    base_generation: 6,
                    generation: 6,
                    upserts: vec![],
                    deletes: vec![],
                },
                None,
            )
            .expect_err("no progress");
        assert_eq!(e.code, ErrorCode::InvalidParams);
        let st = s.status();
        assert_eq!(st.generation, 6);
        assert_eq!(st.counts[&Kind::Pod], 2);
        assert_eq!(st.counts[&Kind::Namespace], 0);
        assert_eq!(st.last_change.expect("last").sync, "delta");
    }

    #[test]
    fn bad_objects_are_rejected_and_the_last_good_version_stays() {
        let mut s = DesiredStore::new(None);
        s.sync_full(full(1, vec![pod("a", "10.0.0.1")]), None)
            .expect("full");
        let r = s
            .sync_full(
                full(2, vec![pod("a", "10.0.0.999"), pod("b", "10.0.0.2")]),
                None,
            )
            .expect("full");
        assert_eq!(r.rejected.len(), 1);
        assert_eq!(r.rejected[0].key.to_string(), "Pod/default/a");
        assert!(r.rejected[0].message.contains("10.0.0.999"));
        assert_eq!(
            s.state().pod("default", "a").expect("kept").ips,
            ["10.0.0.1"]
        );
        assert!(s.state().pod("default", "b").is_some());
        let r = s
            .sync_delta(
                SyncDeltaParams {
                    base_generation: 2,
                    generation: 3,
                    upserts: vec![pod("b", "bogus")],
                    deletes: vec![],
                },
                None,
            )
            .expect("delta");
        assert_eq!(r.rejected.len(), 1);
        assert_eq!(
            s.state().pod("default", "b").expect("kept").ips,
            ["10.0.0.2"]
        );
        assert_eq!(s.generation(), 3);
    }

    #[test]
    fn one_local_node_only() {
        let ln = |n: &str| {
            Object::LocalNode(LocalNode {
                name: n.into(),
                pod_cidrs: vec!["10.244.0.0/24".into()],
                node_ips: vec![],
                gateway_ips: vec!["10.244.0.1".into()],
                gateway_mac: None,
                uplink: None,
            })
        };
        let mut s = DesiredStore::new(None);
        let r = s
            .sync_full(full(1, vec![ln("a"), ln("b")]), None)
            .expect("full");
        assert_eq!(r.rejected.len(), 1);
        assert_eq!(s.state().local_node().expect("one").name, "a");
    }

    #[test]
    fn staged_full_sync_applies_only_with_the_last_part() {
        let mut s = DesiredStore::new(None);
        let mut p = full(9, vec![pod("a", "10.0.0.1")]);
        p.more = true;
        let r = s.sync_full(p, None).expect("part 1");
        assert_eq!((r.staged, r.generation), (Some(1), 0));
        assert!(s.state().is_empty());
        let r = s
            .sync_full(full(9, vec![pod("b", "10.0.0.2")]), None)
            .expect("last");
        assert_eq!((r.generation, r.upserted), (9, 2));
        // A part of another generation starts over.
        let mut p = full(10, vec![pod("c", "10.0.0.3")]);
        p.more = true;
        s.sync_full(p, None).expect("part");
        s.sync_full(full(11, vec![pod("d", "10.0.0.4")]), None)
            .expect("other");
        let names: Vec<_> = s.state().pods().map(|p| p.name.clone()).collect();
        assert_eq!(names, ["d"]);
    }

    #[test]
    fn persists_and_restores() {
        let d = tmpdir("persist");
        let mut s = DesiredStore::new(Some(&d));
        s.sync_full(full(4, vec![pod("a", "10.0.0.1")]), None)
            .expect("full");
        let mut back = DesiredStore::new(Some(&d));
        back.restore(None).expect("restore");
        assert_eq!(back.generation(), 4);
        assert_eq!(back.state(), s.state());
        assert!(back.status().restored);
        std::fs::write(d.join(FILE), b"{broken").expect("write");
        let mut again = DesiredStore::new(Some(&d));
        assert!(again.restore(None).expect_err("corrupt").contains("moved"));
        assert_eq!(again.generation(), 0);
        let _ = std::fs::remove_dir_all(&d);
    }

    fn delta(base: u64, up: Vec<Object>, del: Vec<ObjectKey>) -> SyncDeltaParams {
        SyncDeltaParams {
            base_generation: base,
            generation: base + 1,
            upserts: up,
            deletes: del,
        }
    }

    /// Deltas are journaled (the snapshot is not rewritten for them) and
    /// replayed at restore; a full sync folds the journal into the snapshot; a
    /// torn last record is ignored.
    #[test]
    fn deltas_are_journaled_and_replayed() {
        let d = tmpdir("journal");
        let mut s = DesiredStore::new(Some(&d));
        s.sync_full(
            full(4, vec![pod("a", "10.0.0.1"), pod("b", "10.0.0.2")]),
            None,
        )
        .expect("full");
        let snap = std::fs::read(d.join(FILE)).expect("snapshot");
        s.sync_delta(delta(4, vec![pod("c", "10.0.0.3")], vec![]), None)
            .expect("delta");
        let gone = pod("a", "10.0.0.1").key();
        s.sync_delta(delta(5, vec![pod("b", "10.0.0.9")], vec![gone]), None)
            .expect("delta");
        assert_eq!(
            std::fs::read(d.join(FILE)).expect("snapshot"),
            snap,
            "snapshot untouched"
        );
        let journal = std::fs::read_to_string(d.join(JOURNAL)).expect("journal");
        assert_eq!(journal.lines().count(), 2, "{journal}");
        let mut back = DesiredStore::new(Some(&d));
        back.restore(None).expect("restore");
        assert_eq!(back.generation(), 6);
        assert_eq!(back.state(), s.state());
        // A torn record (crash mid-append) is ignored: generation 6 stays.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(d.join(JOURNAL))
            .expect("open");
        std::io::Write::write_all(&mut f, b"{\"generation\": 7, \"upser").expect("write");
        let mut torn = DesiredStore::new(Some(&d));
        torn.restore(None).expect("restore");
        assert_eq!(torn.generation(), 6);
        assert_eq!(torn.state(), s.state());
        // A full sync: snapshot rewritten, journal gone.
        s.sync_full(full(9, vec![pod("z", "10.0.0.26")]), None)
            .expect("full");
        assert!(!d.join(JOURNAL).exists());
        let mut last = DesiredStore::new(Some(&d));
        last.restore(None).expect("restore");
        assert_eq!(last.generation(), 9);
        assert_eq!(last.state(), s.state());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn ports_show_their_pod() {
        let mut s = DesiredStore::new(None);
        s.sync_full(full(1, vec![pod("a", "10.0.0.1")]), None)
            .expect("full");
        let e = s.port_entries(vec![
            port("v1", Some("a")),
            port("v2", Some("zz")),
            port("v3", None),
        ]);
        assert_eq!(e[0].pod_link.as_ref().expect("linked").ips, ["10.0.0.1"]);
        assert!(e[1].pod_link.is_none());
        assert!(e[2].pod_link.is_none());
        let v = serde_json::to_value(&e[0]).expect("json");
        assert_eq!(v["name"], "v1");
        assert_eq!(v["pod"]["name"], "a");
        assert_eq!(v["pod_link"]["ips"][0], "10.0.0.1");
        let _ = ObjectKey::cluster(Kind::Node, "x");
    }

    /// A realizer that records what it was given: the change set is easy to consume.
    /// (upserted keys, deleted keys, previous versions) per call.
    type Calls = Vec<(Vec<String>, Vec<String>, usize)>;
    struct Record(std::rc::Rc<std::cell::RefCell<Calls>>);
    impl Realizer for Record {
        fn name(&self) -> &'static str {
            "record"
        }
        fn realize(&mut self, _s: &DesiredState, c: &Change, _ctx: &mut RealizeCtx<'_>) {
            self.0.borrow_mut().push((
                c.keys.upserted.iter().map(ToString::to_string).collect(),
                c.keys.deleted.iter().map(ToString::to_string).collect(),
                c.previous.len(),
            ));
        }
    }

    #[test]
    fn realizers_see_keys_and_previous_versions() {
        let log = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let mut s = DesiredStore::new(None).with_realizers(vec![
            Box::new(realize::Validator),
            Box::new(Record(log.clone())),
        ]);
        s.sync_full(full(1, vec![pod("a", "10.0.0.1"), ns("x")]), None)
            .expect("full");
        s.sync_full(full(2, vec![pod("a", "10.0.0.2")]), None)
            .expect("full");
        // Nothing changed: realizers are not called.
        s.sync_full(full(3, vec![pod("a", "10.0.0.2")]), None)
            .expect("full");
        let log = log.borrow();
        assert_eq!(log.len(), 2);
        assert_eq!(log[0].0, ["Namespace/x", "Pod/default/a"]);
        assert_eq!(
            log[1],
            (
                vec!["Pod/default/a".to_string()],
                vec!["Namespace/x".to_string()],
                2
            )
        );
    }
}

//! The agent's syncer against the daemon's real control server and desired-state
//! store (no datapath, no root needed): full sync at start, deltas after, a full
//! sync when someone else moved the daemon's generation, a resync after the daemon
//! restarts empty, and rejected objects counted; and a long random sequence of
//! incremental changes (with a daemon restart in the middle) ending with the
//! daemon holding exactly the agent's state.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use vswitch::control::{ControlServer, Handler};
use vswitch::desired::DesiredStore;
use vswitch_control::Client;
use vswitch_control::agent::metrics::Metrics;
use vswitch_control::agent::syncer::{Handoff, Syncer};
use vswitch_proto::model::{Namespace, Object, Pod};
use vswitch_proto::{DesiredState, ErrorCode, ErrorReply, Op, SyncFullParams, SyncStatus};
use vswitch_suite::{TempDir, wait_for};

/// A daemon that holds desired state and nothing else; a copy of that state is
/// left in `.1` after every sync, for the test to look at.
struct StoreOnly(DesiredStore, Arc<Mutex<DesiredState>>);

impl Handler for StoreOnly {
    fn handle(&mut self, op: Op) -> Result<Value, ErrorReply> {
        let v = match op {
            Op::Hello => serde_json::to_value(vswitch::control::hello_reply()),
            Op::SyncFull(p) => {
                let r = self.0.sync_full(p, None)?;
                *self.1.lock().expect("lock") = self.0.state().clone();
                serde_json::to_value(r)
            }
            Op::SyncDelta(p) => {
                let r = self.0.sync_delta(p, None)?;
                *self.1.lock().expect("lock") = self.0.state().clone();
                serde_json::to_value(r)
            }
            Op::SyncStatus => serde_json::to_value(self.0.status()),
            other => {
                return Err(ErrorReply::new(
                    ErrorCode::Failed,
                    format!("{} not served here", other.name()),
                ));
            }
        };
        v.map_err(|e| ErrorReply::new(ErrorCode::Internal, e.to_string()))
    }
}

struct Daemon {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    state: Arc<Mutex<DesiredState>>,
}

impl Daemon {
    fn start(socket: &Path) -> Daemon {
        let stop = Arc::new(AtomicBool::new(false));
        let mut server = ControlServer::bind(socket).expect("bind");
        let s = stop.clone();
        let state = Arc::new(Mutex::new(DesiredState::new()));
        let st = state.clone();
        let thread = std::thread::spawn(move || {
            let mut h = StoreOnly(DesiredStore::new(None), st);
            server.run(&mut h, &s).expect("serve");
        });
        Daemon {
            stop,
            thread: Some(thread),
            state,
        }
    }

    fn state(&self) -> DesiredState {
        self.state.lock().expect("lock").clone()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn ns(name: &str) -> Object {
    Object::Namespace(Namespace {
        name: name.into(),
        labels: Default::default(),
    })
}

fn pod(name: &str, ip: &str) -> Object {
    Object::Pod(Pod {
        namespace: "default".into(),
        name: name.into(),
        uid: String::new(),
        labels: Default::default(),
        ips: vec![ip.into()],
        mac: None,
        node_name: None,
        local: false,
        host_network: false,
        phase: None,
        host_ifname: None,
        ports: vec![],
    })
}

fn status(socket: &Path) -> Option<SyncStatus> {
    let mut c = Client::connect(socket).ok()?;
    let v = c.call(Op::SyncStatus).ok()?;
    c.decode(v).ok()
}

fn wait_status(socket: &Path, what: &str, ok: impl Fn(&SyncStatus) -> bool) -> SyncStatus {
    wait_for(Duration::from_secs(10), || status(socket).filter(|s| ok(s)))
        .unwrap_or_else(|| panic!("timed out waiting for {what}: {:?}", status(socket)))
}

fn pods(s: &SyncStatus) -> usize {
    s.counts
        .get(&vswitch_proto::Kind::Pod)
        .copied()
        .unwrap_or(0)
}

#[test]
fn syncer_keeps_the_daemon_in_step() {
    let dir = TempDir::new("syncer").expect("dir");
    let socket: PathBuf = dir.path().join("vswitchd.sock");
    let daemon = Daemon::start(&socket);
    let handoff = Arc::new(Handoff::default());
    let metrics = Arc::new(Metrics::new());
    let stop = Arc::new(AtomicBool::new(false));
    let syncer = Syncer::new(
        socket.clone(),
        handoff.clone(),
        metrics.clone(),
        stop.clone(),
    );
    let t = std::thread::spawn(move || syncer.run());

    // Start: one full sync.
    let a: DesiredState = [ns("default"), pod("a", "10.0.0.1")].into_iter().collect();
    handoff.publish(a);
    let st = wait_status(&socket, "the first full sync", |s| pods(s) == 1);
    assert_eq!(st.generation, 1);
    assert_eq!(
        st.last_change.as_ref().map(|c| c.sync.as_str()),
        Some("full")
    );
    assert!(metrics.is_ready());

    // A change: one delta.
    let b: DesiredState = [ns("default"), pod("a", "10.0.0.1"), pod("b", "10.0.0.2")]
        .into_iter()
        .collect();
    handoff.publish(b.clone());
    let st = wait_status(&socket, "the delta", |s| pods(s) == 2);
    assert_eq!(st.generation, 2);
    assert_eq!(
        st.last_change.as_ref().map(|c| c.sync.as_str()),
        Some("delta")
    );

    // Someone else replaces the state (`vsctl apply`): the heartbeat sees the
    // generation move and the syncer puts its state back with a higher generation.
    let mut other = Client::connect(&socket).expect("connect");
    other
        .call(Op::SyncFull(SyncFullParams {
            generation: 100,
            state: [ns("x")].into_iter().collect(),
            more: false,
        }))
        .expect("foreign full sync");
    let st = wait_status(&socket, "the state put back", |s| {
        pods(s) == 2 && s.generation > 100
    });
    assert_eq!(st.generation, 101);

    // The daemon restarts with nothing: the syncer reconnects and resyncs.
    drop(daemon);
    let _daemon = Daemon::start(&socket);
    let st = wait_status(&socket, "the resync", |s| pods(s) == 2);
    assert_eq!(
        st.last_change.as_ref().map(|c| c.sync.as_str()),
        Some("full")
    );

    // An invalid object is rejected, counted, and does not stop the others.
    let c: DesiredState = [
        ns("default"),
        pod("a", "10.0.0.1"),
        pod("b", "bogus"),
        pod("c", "10.0.0.3"),
    ]
    .into_iter()
    .collect();
    handoff.publish(c);
    wait_status(&socket, "pod c", |s| pods(s) == 3);
    let text = metrics.encode();
    assert!(
        text.contains("vswitch_agent_rejected_objects_total 1"),
        "{text}"
    );
    assert!(
        text.contains("vswitch_agent_daemon_connects_total 2"),
        "{text}"
    );

    stop.store(true, Ordering::Relaxed);
    t.join().expect("syncer thread");
}

/// Incremental changes only (keys and what they hold now), many of them, some
/// coalesced while a sync is in flight, a daemon restart in the middle: the
/// daemon ends up holding exactly the agent's state. A change the daemon
/// rejects leaves the last good version there (and is counted).
#[test]
fn incremental_changes_end_where_a_full_sync_would() {
    let dir = TempDir::new("syncer-inc").expect("dir");
    let socket: PathBuf = dir.path().join("vswitchd.sock");
    let mut daemon = Daemon::start(&socket);
    let handoff = Arc::new(Handoff::default());
    let metrics = Arc::new(Metrics::new());
    let stop = Arc::new(AtomicBool::new(false));
    let syncer = Syncer::new(
        socket.clone(),
        handoff.clone(),
        metrics.clone(),
        stop.clone(),
    );
    let t = std::thread::spawn(move || syncer.run());

    let mut rng = 11u64;
    let mut next = |n: u64| {
        rng = rng
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (rng >> 33) % n
    };
    let mut want = DesiredState::new();
    handoff.update([(ns("default").key(), Some(ns("default")))], Instant::now());
    want.upsert(ns("default"));
    for round in 0..400 {
        let i = next(30);
        let o = pod(&format!("p{i}"), &format!("10.0.{}.{i}", next(3)));
        if next(4) == 0 {
            handoff.update([(o.key(), None)], Instant::now());
            want.remove(&o.key());
        } else {
            handoff.update([(o.key(), Some(o.clone()))], Instant::now());
            want.upsert(o);
        }
        if round == 200 {
            // The daemon restarts empty: a full sync puts everything back and
            // the deltas go on from there.
            drop(daemon);
            daemon = Daemon::start(&socket);
        }
        if next(8) == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let held = wait_for(Duration::from_secs(10), || {
        Some(daemon.state()).filter(|s| *s == want)
    });
    assert!(
        held.is_some(),
        "daemon: {:#?}\nwant: {want:#?}",
        daemon.state()
    );

    // A bad version of a pod is rejected by the daemon: counted, and its last
    // good version stays there; the next good change goes through.
    let good = want.pod("default", "p1").cloned().map(Object::Pod);
    let good = good.unwrap_or_else(|| pod("p1", "10.0.0.1"));
    handoff.update([(good.key(), Some(good.clone()))], Instant::now());
    wait_for(Duration::from_secs(10), || {
        (daemon.state().get(&good.key()) == Some(&good)).then_some(())
    })
    .expect("the good pod synced");
    let bad = pod("p1", "bogus");
    handoff.update([(bad.key(), Some(bad.clone()))], Instant::now());
    wait_for(Duration::from_secs(10), || {
        metrics
            .encode()
            .contains("vswitch_agent_rejected_objects_total 1")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("rejection not counted: {}", metrics.encode()));
    assert_eq!(daemon.state().get(&good.key()), Some(&good));
    let fixed = pod("p1", "10.0.9.1");
    handoff.update([(fixed.key(), Some(fixed.clone()))], Instant::now());
    wait_for(Duration::from_secs(10), || {
        (daemon.state().get(&fixed.key()) == Some(&fixed)).then_some(())
    })
    .expect("the fixed pod synced");
    // After the resync, changes go as deltas again.
    let st = status(&socket).expect("status");
    assert_eq!(
        st.last_change.as_ref().map(|c| c.sync.as_str()),
        Some("delta")
    );

    stop.store(true, Ordering::Relaxed);
    t.join().expect("syncer thread");
}

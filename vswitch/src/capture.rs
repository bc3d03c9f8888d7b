//! Packet capture taps (`vsctl capture`).
//!
//! One [`Tap`] is shared by every worker. While no capture runs, a worker pays one
//! relaxed load of [`Tap::armed`] per receive batch and per transmit flush, and a
//! copied bool test per drop. While one runs, frames received on, sent on, or (with
//! `drops`) dropped after arriving on the captured port are matched against the
//! filter and copied (up to [`SNAPLEN`] bytes) into a bounded queue the control
//! thread drains; a full queue counts the frame as lost, never blocks the worker.

use crate::flow::extract;
use crate::flow::key::Key;
use crate::flow::spec::Match;
use arc_swap::ArcSwapOption;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use vswitch_proto::DropReason;

/// Bytes kept of each captured frame.
pub const SNAPLEN: usize = 1600;
/// Records queued between the workers and the control thread.
pub const QUEUE: usize = 2048;
/// Whether the workers carry the capture hook (false only with the `bench-no-capture`
/// feature, the "without" half of the hook's A/B benchmark).
pub const HOOK_COMPILED: bool = !cfg!(feature = "bench-no-capture");

/// Where a frame was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    Rx,
    Tx,
    Drop(DropReason),
}

/// One captured frame.
pub struct Record {
    /// Datapath clock (ns since the datapath started).
    pub ts: u64,
    pub dir: Dir,
    pub orig_len: u32,
    pub len: u16,
    pub data: [u8; SNAPLEN],
}

/// What one capture session takes.
pub struct Session {
    pub port_no: u32,
    pub drops: bool,
    pub filter: Match,
    tx: Sender<Record>,
    /// Frames that matched but found the queue full.
    pub lost: AtomicU64,
}

impl Session {
    /// A session and the receiver of its records.
    pub fn new(port_no: u32, drops: bool, filter: Match) -> (Arc<Session>, Receiver<Record>) {
        let (tx, rx) = crossbeam_channel::bounded(QUEUE);
        let s = Session {
            port_no,
            drops,
            filter,
            tx,
            lost: AtomicU64::new(0),
        };
        (Arc::new(s), rx)
    }

    /// Copies `data` if it passes the filter.
    pub fn offer(&self, data: &[u8], in_port: u32, dir: Dir, now: u64) {
        let mut key = Key::ZERO;
        if extract::extract(data, in_port, &mut key).is_err() {
            // Malformed frames are only worth seeing as drops.
            if !matches!(dir, Dir::Drop(_)) {
                return;
            }
        } else if !self.filter.matches(&key) {
            return;
        }
        let len = data.len().min(SNAPLEN);
        let mut r = Record {
            ts: now,
            dir,
            orig_len: data.len() as u32,
            len: len as u16,
            data: [0; SNAPLEN],
        };
        r.data[..len].copy_from_slice(&data[..len]);
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.tx.try_send(r) {
            self.lost.fetch_add(1, Relaxed);
        }
    }
}

/// The switch-wide capture switch.
#[derive(Default)]
pub struct Tap {
    armed: AtomicBool,
    session: ArcSwapOption<Session>,
}

impl Tap {
    /// Whether a capture runs (one relaxed load; workers check it per batch).
    #[cfg(not(feature = "bench-no-capture"))]
    #[inline]
    pub fn armed(&self) -> bool {
        self.armed.load(Relaxed)
    }

    /// Built without the capture hook (the `bench-no-capture` feature, for the A/B
    /// benchmark of what an inactive hook costs): never armed, so the compiler removes
    /// the workers' checks and the taps altogether.
    #[cfg(feature = "bench-no-capture")]
    #[inline(always)]
    pub fn armed(&self) -> bool {
        false
    }

    /// The running session, if any.
    pub fn session(&self) -> Option<Arc<Session>> {
        self.session.load_full()
    }

    pub fn arm(&self, s: Arc<Session>) {
        self.session.store(Some(s));
        self.armed.store(true, Relaxed);
    }

    pub fn disarm(&self) {
        self.armed.store(false, Relaxed);
        self.session.store(None);
    }
}

/// How long a capture lives without a `capture_read` (its client went away).
pub const IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The control thread's side of the running capture.
pub struct Active {
    pub id: u64,
    pub session: Arc<Session>,
    rx: Receiver<Record>,
    /// Wall-clock ns at datapath time 0.
    wall_base: u64,
    pub last_read: std::time::Instant,
}

fn hex(data: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(data.len() * 2);
    for b in data {
        s.push(D[usize::from(b >> 4)] as char);
        s.push(D[usize::from(b & 15)] as char);
    }
    s
}

impl Active {
    pub fn new(id: u64, session: Arc<Session>, rx: Receiver<Record>, dp_now: u64) -> Active {
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Active {
            id,
            session,
            rx,
            wall_base: wall.saturating_sub(dp_now),
            last_read: std::time::Instant::now(),
        }
    }

    /// Up to `max` records, oldest first.
    pub fn read(&mut self, max: usize) -> vswitch_proto::CaptureReadReply {
        self.last_read = std::time::Instant::now();
        let mut packets = Vec::new();
        while packets.len() < max {
            let Ok(r) = self.rx.try_recv() else { break };
            let (dir, reason) = match r.dir {
                Dir::Rx => ("rx", None),
                Dir::Tx => ("tx", None),
                Dir::Drop(why) => ("drop", Some(why.name().to_string())),
            };
            let len = usize::from(r.len).min(SNAPLEN);
            packets.push(vswitch_proto::CapturedPacket {
                ts_ns: self.wall_base.saturating_add(r.ts),
                dir: dir.into(),
                reason,
                orig_len: r.orig_len,
                data: hex(&r.data[..len]),
            });
        }
        vswitch_proto::CaptureReadReply {
            packets,
            lost: self.session.lost.load(Relaxed),
        }
    }
}

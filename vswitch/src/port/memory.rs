//! In-process ports (the OVS netdev-dummy idea): the whole switch runs without root,
//! a test injects a frame and asserts what comes out of which port.
//!
//! Two flavours:
//! - a *queue* port, driven through a [`MemoryPortHandle`]: `inject` frames in,
//!   `take_output` frames out (tests);
//! - a *replay* port that endlessly offers the same frames and a *sink* port that
//!   counts what it is given (micro benchmarks: no allocation per frame).

use super::{Port, TxOutcome};
use crate::pool::{Frame, FramePool};
use crossbeam_channel::{Receiver, Sender, TrySendError};
use std::os::fd::RawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Frames a queue port holds in each direction before refusing more.
const QUEUE_DEPTH: usize = 4096;

enum Mode {
    Queue {
        inbound: Receiver<Vec<u8>>,
        outbound: Sender<Vec<u8>>,
    },
    Replay {
        frames: Vec<Vec<u8>>,
        next: usize,
    },
    /// Discards what it transmits; receives `announce` once (so the bridge learns
    /// the sink's MAC), then nothing.
    Sink {
        announce: Option<Vec<u8>>,
    },
}

pub struct MemoryPort {
    mode: Mode,
    sunk: Arc<AtomicU64>,
}

/// The test's end of a queue port.
#[derive(Clone)]
pub struct MemoryPortHandle {
    inbound: Sender<Vec<u8>>,
    outbound: Receiver<Vec<u8>>,
}

impl MemoryPortHandle {
    /// Queues a frame for the switch to receive. False if the queue is full.
    pub fn inject(&self, frame: &[u8]) -> bool {
        !matches!(
            self.inbound.try_send(frame.to_vec()),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_))
        )
    }

    /// Everything the switch transmitted on this port so far.
    pub fn take_output(&self) -> Vec<Vec<u8>> {
        self.outbound.try_iter().collect()
    }
}

impl MemoryPort {
    /// A queue port and its handle.
    pub fn queue() -> (MemoryPort, MemoryPortHandle) {
        let (in_tx, in_rx) = crossbeam_channel::bounded(QUEUE_DEPTH);
        let (out_tx, out_rx) = crossbeam_channel::bounded(QUEUE_DEPTH);
        let port = MemoryPort {
            mode: Mode::Queue {
                inbound: in_rx,
                outbound: out_tx,
            },
            sunk: Arc::default(),
        };
        (
            port,
            MemoryPortHandle {
                inbound: in_tx,
                outbound: out_rx,
            },
        )
    }

    /// A port that receives `frames` round-robin, forever.
    pub fn replay(frames: Vec<Vec<u8>>) -> MemoryPort {
        MemoryPort {
            mode: Mode::Replay { frames, next: 0 },
            sunk: Arc::default(),
        }
    }

    /// A port that discards what it transmits; the counter counts frames.
    pub fn sink() -> (MemoryPort, Arc<AtomicU64>) {
        Self::sink_announcing(None)
    }

    /// A sink that first receives `announce` once, so the bridge learns its MAC.
    pub fn sink_announcing(announce: Option<Vec<u8>>) -> (MemoryPort, Arc<AtomicU64>) {
        let sunk = Arc::new(AtomicU64::new(0));
        (
            MemoryPort {
                mode: Mode::Sink { announce },
                sunk: sunk.clone(),
            },
            sunk,
        )
    }
}

impl Port for MemoryPort {
    fn rx_batch(&mut self, pool: &mut FramePool, out: &mut Vec<Frame>, max: usize) -> usize {
        let mut n = 0;
        match &mut self.mode {
            Mode::Queue { inbound, .. } => {
                while n < max && pool.available() > 0 {
                    let Ok(bytes) = inbound.try_recv() else { break };
                    // Frames longer than a buffer are cut, as a NIC would deliver
                    // them truncated; the pipeline then sees a length mismatch.
                    let len = bytes.len().min(crate::pool::MAX_FRAME_LEN);
                    if let Some(f) = pool.alloc_copy(&bytes[..len]) {
                        out.push(f);
                        n += 1;
                    }
                }
            }
            Mode::Replay { frames, next } => {
                if frames.is_empty() {
                    return 0;
                }
                while n < max {
                    let Some(f) = pool.alloc_copy(&frames[*next]) else {
                        break;
                    };
                    *next = (*next + 1) % frames.len();
                    out.push(f);
                    n += 1;
                }
            }
            Mode::Sink { announce } => {
                if let Some(f) = announce.take().and_then(|b| pool.alloc_copy(&b)) {
                    out.push(f);
                    n = 1;
                }
            }
        }
        n
    }

    fn tx_batch(&mut self, pool: &mut FramePool, frames: &mut Vec<Frame>) -> TxOutcome {
        let mut o = TxOutcome::default();
        for f in frames.drain(..) {
            let ok = match &self.mode {
                Mode::Queue { outbound, .. } => outbound.try_send(pool.data(&f).to_vec()).is_ok(),
                Mode::Sink { .. } | Mode::Replay { .. } => true,
            };
            if ok {
                o.sent += 1;
                o.bytes += u64::from(f.len);
            } else {
                o.dropped += 1;
            }
            pool.free(f);
        }
        self.sunk.fetch_add(u64::from(o.sent), Ordering::Relaxed);
        o
    }

    fn maintain(&mut self, _pool: &mut FramePool) {}

    fn poll_fd(&self) -> Option<RawFd> {
        None
    }
}

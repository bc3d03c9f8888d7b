//! In-process ports (the OVS netdev-dummy idea): the whole switch runs without root,
//! a test injects a frame and asserts what comes out of which port.
//!
//! Two flavours:
//! - a *queue* port, driven through a [`MemoryPortHandle`]: `inject` frames in,
//!   `take_output` frames out (tests);
//! - a *replay* port that endlessly offers the same frames, a *new-flows* port
//!   that offers one IPv4 frame with a fresh source address and port each time
//!   (every frame a new connection), and a *sink* port that counts what it is
//!   given (micro benchmarks: no allocation per frame).

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
    /// `template` (IPv4 TCP/UDP, untagged) with source address and port taken
    /// from a counter, so no two frames of 2^32 share a 5-tuple.
    NewFlows {
        template: Vec<u8>,
        next: u32,
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

    /// A port that receives `template` (an untagged IPv4 frame with TCP or UDP)
    /// forever, each time with another source: the counter's high 16 bits
    /// replace the low 16 bits of the source address, its low 16 bits the
    /// source port (IPv4 checksum fixed, UDP checksum zeroed). Every frame is
    /// a new connection (benchmarks of the connection setup path).
    pub fn new_flows(template: Vec<u8>) -> MemoryPort {
        MemoryPort {
            mode: Mode::NewFlows { template, next: 0 },
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
            Mode::NewFlows { template, next } => {
                let ihl = usize::from(template.get(14).map_or(0, |b| b & 0x0f)) * 4;
                if ihl < 20 || template.len() < 14 + ihl + 8 {
                    return 0;
                }
                while n < max {
                    let Some(f) = pool.alloc_copy(template) else {
                        break;
                    };
                    let c = *next;
                    *next = next.wrapping_add(1);
                    let d = pool.data_mut(&f);
                    let ip = &mut d[14..14 + ihl];
                    ip[14..16].copy_from_slice(&((c >> 16) as u16).to_be_bytes());
                    ip[10..12].copy_from_slice(&[0, 0]);
                    let mut sum = 0u32;
                    for w in ip.chunks(2) {
                        sum += u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]));
                    }
                    while sum >> 16 != 0 {
                        sum = (sum & 0xffff) + (sum >> 16);
                    }
                    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
                    let proto = ip[9];
                    let l4 = &mut d[14 + ihl..];
                    l4[0..2].copy_from_slice(&(c as u16).to_be_bytes());
                    if proto == 17 {
                        l4[6..8].copy_from_slice(&[0, 0]);
                    }
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
                Mode::Sink { .. } | Mode::Replay { .. } | Mode::NewFlows { .. } => true,
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

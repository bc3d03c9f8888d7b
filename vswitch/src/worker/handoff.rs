//! Frames crossing from one poll worker to another.
//!
//! Each worker owns its UMEM, and an AF_XDP TX ring has one producer, so a frame
//! received on worker A for a port of worker B is *copied* into a buffer travelling
//! over a bounded channel; B copies it into its own pool and transmits. The buffers
//! are preallocated and come back over a second channel, so steady state allocates
//! nothing. Ports that talk a lot belong on the same worker (the default with one
//! worker); this path keeps the rest correct.

use crate::pool::MAX_FRAME_LEN;
use crossbeam_channel::{Receiver, Sender, bounded};

/// Buffers in flight per (from, to) worker pair.
pub const HANDOFF_DEPTH: usize = 1024;

pub struct HandoffFrame {
    pub port_no: u32,
    pub len: u16,
    pub buf: Box<[u8; MAX_FRAME_LEN]>,
}

/// The sending end, owned by the source worker.
pub struct HandoffTx {
    frames: Sender<HandoffFrame>,
    empties: Receiver<HandoffFrame>,
}

/// The receiving end, owned by the destination worker.
pub struct HandoffRx {
    frames: Receiver<HandoffFrame>,
    empties: Sender<HandoffFrame>,
}

/// A channel pair with `HANDOFF_DEPTH` preallocated buffers.
pub fn handoff() -> (HandoffTx, HandoffRx) {
    let (ftx, frx) = bounded(HANDOFF_DEPTH);
    let (etx, erx) = bounded(HANDOFF_DEPTH);
    for _ in 0..HANDOFF_DEPTH {
        let _ = etx.try_send(HandoffFrame {
            port_no: 0,
            len: 0,
            buf: Box::new([0; MAX_FRAME_LEN]),
        });
    }
    (
        HandoffTx {
            frames: ftx,
            empties: erx,
        },
        HandoffRx {
            frames: frx,
            empties: etx,
        },
    )
}

impl HandoffTx {
    /// Copies `bytes` for `port_no`; false when no buffer is free (receiver behind).
    #[inline]
    pub fn send(&self, port_no: u32, bytes: &[u8]) -> bool {
        let Ok(mut f) = self.empties.try_recv() else {
            return false;
        };
        let n = bytes.len().min(MAX_FRAME_LEN);
        f.buf[..n].copy_from_slice(&bytes[..n]);
        f.len = n as u16;
        f.port_no = port_no;
        self.frames.try_send(f).is_ok()
    }
}

impl HandoffRx {
    /// Hands each waiting frame (at most `max`) to `f`, then recycles its buffer.
    #[inline]
    pub fn drain(&self, max: usize, mut f: impl FnMut(u32, &[u8])) -> usize {
        let mut n = 0;
        while n < max {
            let Ok(frame) = self.frames.try_recv() else {
                break;
            };
            f(frame.port_no, &frame.buf[..usize::from(frame.len)]);
            let _ = self.empties.try_send(frame);
            n += 1;
        }
        n
    }

    /// True if frames are waiting.
    pub fn has_pending(&self) -> bool {
        !self.frames.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_cross_and_buffers_recycle() {
        let (tx, rx) = handoff();
        for i in 0..HANDOFF_DEPTH {
            assert!(tx.send(i as u32, &[i as u8; 60]), "buffer {i}");
        }
        assert!(!tx.send(0, b"x"), "all buffers in flight");
        let mut seen = 0;
        rx.drain(usize::MAX, |p, b| {
            assert_eq!(b, &[p as u8; 60][..]);
            seen += 1;
        });
        assert_eq!(seen, HANDOFF_DEPTH);
        assert!(tx.send(7, b"again"));
    }
}

//! The worker's side of packet capture (see `crate::capture`): called only while a
//! capture is armed, so none of this runs on the fast path otherwise.

use super::Worker;
use crate::capture::Dir;
use crate::pool::Frame;
use vswitch_proto::DropReason;

impl Worker {
    /// Offers frames received on or queued for `port_no` to the running capture.
    #[cold]
    pub(super) fn tap_frames(&self, frames: &[Frame], port_no: u32, dir: Dir, now: u64) {
        let Some(s) = self.links.capture.session() else {
            return;
        };
        if s.port_no != port_no {
            return;
        }
        for f in frames {
            s.offer(self.pool.data(f), port_no, dir, now);
        }
    }

    /// Offers a frame dropped for `reason` after arriving on slot `slot`.
    #[cold]
    pub(super) fn tap_drop(&self, frame: &Frame, slot: usize, reason: DropReason) {
        let Some(s) = self.links.capture.session() else {
            return;
        };
        let Some(in_port) = self.slots.get(slot).map(|s| s.port_no) else {
            return;
        };
        if !s.drops || s.port_no != in_port {
            return;
        }
        let now = self.now_ns();
        s.offer(self.pool.data(frame), in_port, Dir::Drop(reason), now);
    }
}

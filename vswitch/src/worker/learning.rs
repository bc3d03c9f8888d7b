//! MAC learning shared between workers: each worker announces what it learns (new,
//! moved, and periodic refreshes so remote entries age correctly) to every other
//! worker over bounded channels. Announcements are best effort: when a channel is
//! full the event is dropped and the next refresh carries it.

use crossbeam_channel::{Receiver, Sender};

/// "MAC `key` was seen on `port` at `seen`" (ns on the switch-wide clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LearnEvent {
    pub key: u64,
    pub port: u32,
    pub seen: u64,
}

/// Events processed per worker iteration, at most.
const DRAIN_MAX: usize = 256;

pub struct LearnPeers {
    pub to_peers: Vec<Sender<LearnEvent>>,
    pub from_peers: Receiver<LearnEvent>,
}

impl LearnPeers {
    #[inline]
    pub fn has_peers(&self) -> bool {
        !self.to_peers.is_empty()
    }

    #[inline]
    pub fn announce(&self, ev: LearnEvent) {
        for tx in &self.to_peers {
            let _ = tx.try_send(ev);
        }
    }

    pub fn drain(&self, mut f: impl FnMut(LearnEvent)) {
        for ev in self.from_peers.try_iter().take(DRAIN_MAX) {
            f(ev);
        }
    }
}

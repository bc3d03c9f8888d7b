//! The pipeline on a worker: cache lookup, datapath actions on the frame, and
//! recirculation after `ct` and `decap`.

use super::{DropTally, LearnEvent, Worker};
use crate::bridge::Learned;
use crate::conntrack::CtRequest;
use crate::counters::WorkerCounters;
use crate::flow::dpaction::DpAction;
use crate::flow::extract::{self, Offsets};
use crate::flow::field::Field;
use crate::flow::key::{self, Key};
use crate::flow::rewrite;
use crate::pool::Frame;
use vswitch_proto::DropReason;

/// Recirculations one packet may go through before it is dropped.
const MAX_RECIRC: u32 = 8;

/// A frame waiting to go through the pipeline again (after ct or decap).
pub(super) struct Recirc {
    frame: Frame,
    key: Key,
    off: Option<Offsets>,
    depth: u32,
}

impl Worker {
    /// Runs one received frame through the pipeline.
    #[inline]
    pub(super) fn process(&mut self, frame: Frame, in_port: u32, now: u64, tally: &mut DropTally) {
        let mut key = Key::ZERO;
        let off = match extract::extract(self.pool.data(&frame), in_port, &mut key) {
            Ok(o) => o,
            Err(_) => return self.drop_frame(frame, DropReason::Malformed, tally),
        };
        // A VLAN tag cut short is a frame that lies about itself; other truncated
        // headers still go through the pipeline (L2 rules may forward them).
        if off.truncated && !off.vlan && matches!(key.eth_type(), 0x8100 | 0x88a8) {
            return self.drop_frame(frame, DropReason::Malformed, tally);
        }
        let Some(route) = self.snap.port(in_port) else {
            return self.drop_frame(frame, DropReason::PortDown, tally);
        };
        if frame.len > route.max_frame {
            return self.drop_frame(frame, DropReason::Oversize, tally);
        }
        self.run_pipeline(frame, key, Some(off), 0, now, tally);
        while let Some(r) = self.recirc.pop() {
            if r.depth > MAX_RECIRC {
                self.drop_frame(r.frame, DropReason::ActionFailed, tally);
                continue;
            }
            self.run_pipeline(r.frame, r.key, r.off, r.depth, now, tally);
        }
    }

    #[inline]
    fn drop_frame(&mut self, frame: Frame, r: DropReason, tally: &mut DropTally) {
        tally.counts[r as usize] += 1;
        if tally.capture {
            self.tap_drop(&frame, tally.slot, r);
        }
        self.pool.free(frame);
    }

    #[inline]
    fn run_pipeline(
        &mut self,
        frame: Frame,
        mut key: Key,
        off: Option<Offsets>,
        depth: u32,
        now: u64,
        tally: &mut DropTally,
    ) {
        let id = self.cache.lookup(&key);
        let Some((actions, last)) = self.cache.take_actions(id, frame.len, now) else {
            return self.drop_frame(frame, DropReason::Pipeline, tally);
        };
        self.execute(frame, &mut key, off, &actions, last, depth, now, tally);
        self.cache.put_actions(id, actions);
    }

    /// Executes datapath actions in order; the action at `last` (the last one
    /// that hands the frame on) gets the frame itself, earlier ones copies.
    #[allow(clippy::too_many_arguments)]
    fn execute(
        &mut self,
        frame: Frame,
        key: &mut Key,
        mut off: Option<Offsets>,
        actions: &[DpAction],
        last: Option<usize>,
        depth: u32,
        now: u64,
        tally: &mut DropTally,
    ) {
        let Some(last) = last else {
            return self.drop_frame(frame, DropReason::Pipeline, tally);
        };
        let mut cur = frame;
        for (i, a) in actions.iter().enumerate().take(last + 1) {
            let mine = i == last;
            match a {
                DpAction::SetField { field, value, mask } => {
                    let o = match self.offsets(&cur, key, &mut off) {
                        Some(o) => o,
                        None => return self.drop_frame(cur, DropReason::ActionFailed, tally),
                    };
                    let data = self.pool.data_mut(&cur);
                    if rewrite::set_field(data, &o, *field, *value, *mask, Some(key)).is_err() {
                        return self.drop_frame(cur, DropReason::ActionFailed, tally);
                    }
                }
                DpAction::SetMeta { word, value, mask } => {
                    if let Some(w) = key.0.get_mut(usize::from(*word)) {
                        *w = (*w & !mask) | value;
                    }
                }
                DpAction::DecTtl => {
                    let o = match self.offsets(&cur, key, &mut off) {
                        Some(o) => o,
                        None => return self.drop_frame(cur, DropReason::ActionFailed, tally),
                    };
                    if rewrite::dec_ttl(self.pool.data_mut(&cur), &o, Some(key)).is_err() {
                        return self.drop_frame(cur, DropReason::TtlExpired, tally);
                    }
                }
                DpAction::PushVlan(_) | DpAction::PopVlan => {
                    let Some(mut o) = self.offsets(&cur, key, &mut off) else {
                        return self.drop_frame(cur, DropReason::ActionFailed, tally);
                    };
                    let len = cur.len as usize;
                    let buf = self.pool.buffer_mut(cur.idx);
                    let r = match a {
                        DpAction::PushVlan(tpid) => {
                            rewrite::push_vlan(buf, len, *tpid, &mut o, Some(key))
                        }
                        _ => rewrite::pop_vlan(buf, len, &mut o, Some(key)),
                    };
                    match r {
                        Ok(n) => cur.len = n as u32,
                        Err(_) => return self.drop_frame(cur, DropReason::ActionFailed, tally),
                    }
                    off = Some(o);
                }
                _ => {
                    // Actions that hand the frame on.
                    let f = if mine {
                        cur
                    } else {
                        match self.pool.clone_frame(&cur) {
                            Some(c) => c,
                            None => {
                                tally.counts[DropReason::NoBuffer as usize] += 1;
                                continue;
                            }
                        }
                    };
                    self.hand_on(f, key, off, a, depth, now, tally);
                    if mine {
                        return;
                    }
                }
            }
        }
    }

    /// Header offsets of the frame as it is now (computed once per change of shape).
    #[inline]
    pub(super) fn offsets(
        &self,
        f: &Frame,
        key: &Key,
        off: &mut Option<Offsets>,
    ) -> Option<Offsets> {
        if off.is_none() {
            let mut scratch = Key::ZERO;
            *off = extract::extract(self.pool.data(f), key.in_port(), &mut scratch).ok();
        }
        *off
    }

    #[allow(clippy::too_many_arguments)]
    fn hand_on(
        &mut self,
        f: Frame,
        key: &mut Key,
        off: Option<Offsets>,
        a: &DpAction,
        depth: u32,
        now: u64,
        tally: &mut DropTally,
    ) {
        let in_port = key.in_port();
        match a {
            DpAction::Output(p) => self.output(f, *p, tally),
            DpAction::Normal => self.normal(f, key, now, tally),
            DpAction::Flood => self.flood(f, in_port, tally),
            DpAction::Clone(inner) => {
                let mut k = *key;
                let last = inner.iter().rposition(crate::flow::cache::consumes_frame);
                self.execute(f, &mut k, off, inner, last, depth, now, tally);
            }
            DpAction::Ct {
                zone,
                commit,
                nat,
                set_mark,
                set_label,
                recirc,
            } => {
                let mut k = *key;
                let mut f = f;
                let req = CtRequest {
                    zone: *zone,
                    commit: *commit,
                    nat: nat.as_ref(),
                    set_mark: *set_mark,
                    set_label: *set_label,
                };
                let mut off = off;
                if !self.ct_action(&mut f, &mut k, &mut off, &req, now) {
                    return self.drop_frame(f, DropReason::ActionFailed, tally);
                }
                match recirc {
                    Some(r) => {
                        k.set_recirc_id(*r);
                        self.recirc.push(Recirc {
                            frame: f,
                            key: k,
                            off,
                            depth: depth + 1,
                        });
                    }
                    None => self.pool.free(f),
                }
            }
            DpAction::ServiceLb { id, zone, recirc } => {
                let mut k = *key;
                let mut f = f;
                let mut off = off;
                match self.service_lb(&mut f, &mut k, &mut off, *id, *zone, now) {
                    Ok(()) => {
                        k.set_recirc_id(*recirc);
                        self.recirc.push(Recirc {
                            frame: f,
                            key: k,
                            off,
                            depth: depth + 1,
                        });
                    }
                    Err(r) => self.drop_frame(f, r, tally),
                }
            }
            DpAction::Punt(crate::flow::spec::Punt::Reject) => {
                let len = f.len as usize;
                let mut f = f;
                if !self.punt.allow(now) {
                    return self.drop_frame(f, DropReason::Punt, tally);
                }
                match super::reject::reject(self.pool.buffer_mut(f.idx), len) {
                    Some(n) => {
                        f.len = n as u32;
                        self.output(f, in_port, tally);
                    }
                    None => self.drop_frame(f, DropReason::Punt, tally),
                }
            }
            DpAction::Punt(p) => {
                if !self.punt.allow(now)
                    || crate::worker::punt::answer(p, self.pool.data_mut(&f)).is_none()
                {
                    return self.drop_frame(f, DropReason::Punt, tally);
                }
                self.output(f, in_port, tally);
            }
            DpAction::Encap { .. } | DpAction::Decap { .. } => {
                // Tunnels are realised by the overlay (see docs/pipeline.md).
                self.drop_frame(f, DropReason::ActionFailed, tally);
            }
            _ => self.pool.free(f),
        }
    }

    /// The learning bridge as an action: learn the source on the ingress port,
    /// forward by destination MAC (flood when unknown or group-addressed).
    fn normal(&mut self, f: Frame, key: &Key, now: u64, tally: &mut DropTally) {
        let in_port = key.in_port();
        let src = Field::EthSrc.get(key) as u64;
        let dst = Field::EthDst.get(key) as u64;
        let tci = key.vlan_tci();
        let vlan = if tci & key::VLAN_PRESENT != 0 {
            u64::from(tci & 0x0fff)
        } else {
            0
        };
        // Group bit of the first octet (the u48 is big-endian).
        if (src >> 40) & 1 != 0 {
            return self.drop_frame(f, DropReason::BadSrcMac, tally);
        }
        let skey = src | (vlan << 48);
        match self.macs.learn(skey, in_port, now) {
            Learned::Refreshed => {}
            Learned::New => WorkerCounters::add(&self.links.counters.mac_learned, 1),
            Learned::Moved { .. } => WorkerCounters::add(&self.links.counters.mac_moved, 1),
            Learned::Full => WorkerCounters::add(&self.links.counters.mac_table_full, 1),
        }
        if self.links.learn.has_peers()
            && self
                .macs
                .due_for_announce(skey, now, self.macs.aging_ns() / 4)
        {
            self.links.learn.announce(LearnEvent {
                key: skey,
                port: in_port,
                seen: now,
            });
        }
        if (dst >> 40) & 1 != 0 {
            self.flooded += 1;
            return self.flood(f, in_port, tally);
        }
        match self.macs.lookup(dst | (vlan << 48), now) {
            Some(p) if p == in_port => self.drop_frame(f, DropReason::SamePort, tally),
            Some(p) => self.output(f, p, tally),
            None => {
                self.flooded += 1;
                self.flood(f, in_port, tally)
            }
        }
    }
}

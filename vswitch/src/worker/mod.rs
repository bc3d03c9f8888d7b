//! Poll workers: one thread per CPU, each owning a frame pool (its UMEM), a set of
//! ports, a MAC table and counters. A worker receives a batch from each port,
//! decides each frame's outputs, transmits per output port in batches, and does
//! ring housekeeping. When nothing has arrived for `idle_spin` it sleeps in poll(2)
//! on its ports' descriptors and its waker, so an idle switch costs ~0% CPU.
//!
//! Configuration arrives two ways, neither blocking the worker: the routing snapshot
//! (which port lives on which worker, the flood set) through arc-swap, and port
//! ownership (a socket can have only one user) through a command channel.

mod exec;
mod fastpath_nat;
pub mod handoff;
mod learning;
pub mod punt;
mod reject;
mod services;
mod tap;
mod tunnel_fp;
pub mod waker;

use crate::bridge::{Learned, MacTable};
use crate::conntrack::Conntrack;
use crate::counters::{PortCounters, WorkerCounters};
use crate::flow::cache::{CacheConfig, CacheCounters, FlowCache, Probe};
use crate::flow::key::Key;
use crate::flow::tables::PipelineReader;
use crate::pool::{Frame, FramePool};
use crate::port::{BATCH_SIZE, Port, RxDrops};
use crate::snapshot::{SharedSnapshot, Snapshot};
use crossbeam_channel::{Receiver, Sender};
use handoff::{HandoffRx, HandoffTx};
pub use learning::{LearnEvent, LearnPeers};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vswitch_proto::DropReason;
use waker::Waker;

/// How often (at most) the worker does its slow housekeeping: MAC aging, kernel
/// drop statistics, gauges.
const HOUSEKEEPING_NS: u64 = 250_000_000;

/// Tunables of one worker.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub id: usize,
    pub core: Option<usize>,
    pub mac_aging: Duration,
    pub mac_capacity: usize,
    /// Keep polling without sleeping for this long after the last frame.
    pub idle_spin: Duration,
    /// Longest sleep in poll(2) (housekeeping still runs this often when idle).
    pub max_sleep: Duration,
    /// Denied connections logged per second (0: no audit log).
    pub policy_audit_per_s: u32,
}

/// Messages from the control thread.
pub enum WorkerCmd {
    AddPort {
        port_no: u32,
        port: Box<dyn Port>,
        counters: Arc<PortCounters>,
    },
    /// Detach and drop the port; `done` is signalled after its socket is closed.
    DelPort {
        port_no: u32,
        done: Sender<()>,
    },
    /// Push cache hits owed to flows now (`done` when finished).
    FlushStats {
        done: Sender<()>,
    },
    /// Which of this worker's caches would answer `key` (for `trace`).
    Probe {
        key: Box<Key>,
        reply: Sender<Probe>,
    },
    Stop,
}

/// Everything a worker needs from outside, handed over at creation.
pub struct WorkerLinks {
    pub snapshot: SharedSnapshot,
    pub commands: Receiver<WorkerCmd>,
    pub waker: Arc<Waker>,
    pub counters: Arc<WorkerCounters>,
    /// Indexed by destination worker id; `None` for itself.
    pub handoff_out: Vec<Option<HandoffTx>>,
    /// Wakers of the other workers, indexed by id (to wake a sleeping receiver).
    pub peer_wakers: Vec<Arc<Waker>>,
    pub handoff_in: Vec<HandoffRx>,
    pub learn: LearnPeers,
    /// The flow tables (read side) and this worker's cache sizes and counters.
    pub pipeline: PipelineReader,
    pub cache_config: CacheConfig,
    pub cache_counters: Arc<CacheCounters>,
    /// The published NetworkPolicy engine (`policy(DIR)` actions read it).
    pub policy: crate::policy::SharedEngine,
    /// The connection table all workers share.
    pub conntrack: Arc<Conntrack>,
    /// Service load-balancing state (Maglev tables), published by the control thread.
    pub services: crate::services::SharedLb,
    /// Tunnel settings (UDP port, VNI, MTU, gateway) the overlay realizer sets.
    pub tunnel: Arc<crate::overlay::TunnelParams>,
    /// Packet capture (`vsctl capture`), checked once per batch.
    pub capture: Arc<crate::capture::Tap>,
    /// The in-kernel XDP fast path (`xdp_fastpath`), when enabled.
    pub fastpath: Option<Arc<crate::port::fastpath::FastPath>>,
}

/// A worker's side of the XDP fast path (port/fastpath.rs).
#[derive(Default)]
struct FpWorker {
    /// The epoch read at the start of this loop iteration, before the snapshot,
    /// the flow caches and the MAC table were looked at: entries installed during
    /// the iteration carry it.
    epoch: u32,
    /// Keys this worker wrote with epoch `installed_epoch`, with the ingress port
    /// (written once per key and epoch; read back by the aging sweep).
    installed: std::collections::HashMap<crate::port::fastpath::FdbKey, u32>,
    installed_epoch: u32,
    /// The egress port the frame being processed was forwarded to by `normal`
    /// (one known unicast port) or `output`.
    out: Option<u32>,
    last_sweep: u64,
    /// VXLAN encap/decap entries (tunnel_fp.rs).
    tun: tunnel_fp::TunFp,
    /// Established NAT connections (worker/fastpath_nat.rs).
    nat: fastpath_nat::NatWorker,
}

struct Slot {
    port_no: u32,
    port: Box<dyn Port>,
    counters: Arc<PortCounters>,
    /// Frames waiting to be transmitted on this port, flushed once per iteration.
    txq: Vec<Frame>,
    /// The port's own cumulative drop figures at the last housekeeping, so only
    /// the increase is added to the counters the worker also writes per frame.
    last_rx_drops: RxDrops,
    last_kernel_drops: u64,
}

/// Per-iteration drop tallies by ingress slot, stored once per batch.
struct DropTally {
    slot: usize,
    counts: [u64; DropReason::COUNT],
    /// A capture was armed when the batch started (drops are offered to it).
    capture: bool,
}

pub struct Worker {
    cfg: WorkerConfig,
    pool: FramePool,
    slots: Vec<Slot>,
    /// `slot_of[port_no]` = slot index + 1 for local ports, 0 otherwise.
    slot_of: Vec<u32>,
    snap: Arc<Snapshot>,
    links: WorkerLinks,
    macs: MacTable,
    rx: Vec<Frame>,
    epoch: Instant,
    last_housekeeping: u64,
    last_busy: u64,
    stopping: bool,
    pollfds: Vec<libc::pollfd>,
    /// Set when a port without a pollable descriptor exists.
    must_spin: bool,
    pollfds_dirty: bool,
    cache: FlowCache,
    conntrack: Arc<Conntrack>,
    punt: punt::PuntLimiter,
    audit: crate::policy::audit::AuditLimiter,
    /// Frames waiting to re-enter the pipeline (after ct or decap).
    recirc: Vec<exec::Recirc>,
    /// Frames flooded in the current batch.
    flooded: u64,
    /// Source MAC of the frame in the pipeline as it was received.
    ingress_src: u64,
    /// Start of the previous loop iteration and whether it moved frames: the time
    /// between two iteration starts is booked as busy or idle.
    iter_start: u64,
    iter_busy: bool,
    fp: FpWorker,
}

impl Worker {
    pub fn new(cfg: WorkerConfig, pool: FramePool, links: WorkerLinks, epoch: Instant) -> Worker {
        let snap = links.snapshot.load_full();
        let macs = MacTable::new(cfg.mac_aging, cfg.mac_capacity);
        let audit = crate::policy::audit::AuditLimiter::new(cfg.policy_audit_per_s);
        let conntrack = links.conntrack.clone();
        let cache = FlowCache::new(
            &links.pipeline,
            links.cache_config,
            links.cache_counters.clone(),
        );
        Worker {
            cfg,
            pool,
            slots: Vec::new(),
            slot_of: Vec::new(),
            snap,
            links,
            macs,
            rx: Vec::with_capacity(BATCH_SIZE),
            epoch,
            last_housekeeping: 0,
            last_busy: 0,
            stopping: false,
            pollfds: Vec::new(),
            must_spin: false,
            pollfds_dirty: true,
            cache,
            conntrack,
            punt: punt::PuntLimiter::default(),
            audit,
            recirc: Vec::with_capacity(BATCH_SIZE),
            flooded: 0,
            ingress_src: 0,
            iter_start: 0,
            iter_busy: false,
            fp: FpWorker::default(),
        }
    }

    pub fn id(&self) -> usize {
        self.cfg.id
    }

    /// Free frames in this worker's pool (tests check for leaks with it).
    pub fn pool_available(&self) -> usize {
        self.pool.available()
    }

    /// Pushes the hits its caches owe to flows (and drops stale entries).
    pub fn flush_flow_stats(&mut self) {
        self.cache.housekeeping();
    }

    /// Which of this worker's caches would answer `key` now.
    pub fn probe(&mut self, key: &Key) -> Probe {
        self.cache.probe(key)
    }

    pub fn mac_table(&self) -> &MacTable {
        &self.macs
    }

    #[inline]
    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// The thread body: pin, loop until told to stop, release every port.
    pub fn run(mut self) {
        if let Some(core) = self.cfg.core
            && !core_affinity::set_for_current(core_affinity::CoreId { id: core })
        {
            tracing::warn!(worker = self.cfg.id, core, "could not pin worker to core");
        }
        tracing::info!(worker = self.cfg.id, core = ?self.cfg.core, "poll worker started");
        while !self.stopping {
            let moved = self.run_once();
            if moved == 0 {
                let now = self.now_ns();
                if now.saturating_sub(self.last_busy) >= self.cfg.idle_spin.as_nanos() as u64 {
                    self.sleep();
                }
            }
        }
        self.release_all();
        tracing::info!(worker = self.cfg.id, "poll worker stopped");
    }

    /// One loop iteration: commands, snapshot, peers, every port once. Returns the
    /// number of frames received (from ports or other workers).
    pub fn run_once(&mut self) -> usize {
        // First: everything decided in this iteration is tagged with this epoch,
        // so a change published after it makes those decisions stale.
        if let Some(fp) = &self.links.fastpath {
            self.fp.epoch = fp.epoch();
        }
        self.handle_commands();
        self.refresh_snapshot();
        self.cache.refresh();
        let now = self.now_ns();
        self.apply_learn_events(now);
        let mut moved = self.receive_handoffs();
        for i in 0..self.slots.len() {
            moved += self.poll_port(i, now);
        }
        self.flush_all();
        self.cache.flush_counters();
        for s in &mut self.slots {
            s.port.maintain(&mut self.pool);
        }
        let c = &self.links.counters;
        let spent = now.saturating_sub(self.iter_start);
        WorkerCounters::add(
            if self.iter_busy {
                &c.busy_ns
            } else {
                &c.idle_ns
            },
            spent,
        );
        self.iter_start = now;
        self.iter_busy = moved > 0;
        if moved > 0 {
            self.last_busy = now;
            WorkerCounters::add(&c.busy_iterations, 1);
        } else {
            WorkerCounters::add(&c.idle_iterations, 1);
        }
        if now.saturating_sub(self.last_housekeeping) >= HOUSEKEEPING_NS {
            self.housekeeping(now);
        }
        moved
    }

    fn handle_commands(&mut self) {
        while let Ok(cmd) = self.links.commands.try_recv() {
            match cmd {
                WorkerCmd::AddPort {
                    port_no,
                    port,
                    counters,
                } => {
                    let idx = port_no as usize;
                    if self.slot_of.len() <= idx {
                        self.slot_of.resize(idx + 1, 0);
                    }
                    self.slots.push(Slot {
                        port_no,
                        port,
                        counters,
                        txq: Vec::with_capacity(BATCH_SIZE),
                        last_rx_drops: RxDrops::default(),
                        last_kernel_drops: 0,
                    });
                    self.slot_of[idx] = self.slots.len() as u32;
                    self.pollfds_dirty = true;
                    self.rebalance_rx_budgets();
                }
                WorkerCmd::DelPort { port_no, done } => {
                    self.remove_port(port_no);
                    let _ = done.send(());
                }
                WorkerCmd::FlushStats { done } => {
                    self.cache.housekeeping();
                    let _ = done.send(());
                }
                WorkerCmd::Probe { key, reply } => {
                    let _ = reply.send(self.cache.probe(&key));
                }
                WorkerCmd::Stop => self.stopping = true,
            }
        }
    }

    fn remove_port(&mut self, port_no: u32) {
        let Some(&pos) = self.slot_of.get(port_no as usize) else {
            return;
        };
        if pos == 0 {
            return;
        }
        let i = pos as usize - 1;
        let mut slot = self.slots.swap_remove(i);
        self.slot_of[port_no as usize] = 0;
        if let Some(moved) = self.slots.get(i) {
            self.slot_of[moved.port_no as usize] = i as u32 + 1;
        }
        self.pool.free_all(slot.txq.drain(..));
        slot.port.release(&mut self.pool);
        drop(slot);
        // The socket is closed now: nothing the kernel held for it will come back.
        self.pool.reclaim_port(port_no);
        self.macs.forget_port(port_no);
        self.pollfds_dirty = true;
        self.rebalance_rx_budgets();
    }

    /// Divides the pool among the ports for receiving: half of it, so the worker
    /// keeps the rest for copies, hand-offs and frames in flight to TX.
    fn rebalance_rx_budgets(&mut self) {
        let n = self.slots.len().max(1) as u32;
        let budget = self.pool.capacity() / 2 / n;
        for s in &mut self.slots {
            s.port.set_rx_budget(budget);
        }
    }

    fn release_all(&mut self) {
        let ports: Vec<u32> = self.slots.iter().map(|s| s.port_no).collect();
        for p in ports {
            self.remove_port(p);
        }
    }

    fn refresh_snapshot(&mut self) {
        let cur = self.links.snapshot.load();
        if cur.generation != self.snap.generation {
            self.snap = arc_swap::Guard::into_inner(cur);
        }
    }

    /// Receives one batch from slot `i` and decides where each frame goes.
    fn poll_port(&mut self, i: usize, now: u64) -> usize {
        let mut rx = std::mem::take(&mut self.rx);
        rx.clear();
        let n = self.slots[i]
            .port
            .rx_batch(&mut self.pool, &mut rx, BATCH_SIZE);
        if n == 0 {
            self.rx = rx;
            return 0;
        }
        let in_port = self.slots[i].port_no;
        let bytes: u64 = rx.iter().map(|f| u64::from(f.len)).sum();
        self.slots[i].counters.add_rx(n as u64, bytes);
        let c = &self.links.counters;
        WorkerCounters::add(&c.rx_packets, n as u64);
        WorkerCounters::add(&c.rx_batches, 1);
        WorkerCounters::add(&c.batch_sizes[crate::counters::batch_bucket(n)], 1);

        let capture = self.links.capture.armed();
        if capture {
            self.tap_frames(&rx, in_port, crate::capture::Dir::Rx, now);
        }
        let mut tally = DropTally {
            slot: i,
            counts: [0; DropReason::COUNT],
            capture,
        };
        self.flooded = 0;
        for frame in rx.drain(..) {
            self.process(frame, in_port, now, &mut tally);
        }
        self.rx = rx;
        WorkerCounters::add(&self.links.counters.flooded, self.flooded);
        let drops = &self.slots[tally.slot].counters.drops;
        for (r, &n) in DropReason::ALL.iter().zip(&tally.counts) {
            if n > 0 {
                drops.add(*r, n);
            }
        }
        n
    }

    /// Queues `frame` for `port_no`, locally or through another worker.
    #[inline]
    fn output(&mut self, frame: Frame, port_no: u32, tally: &mut DropTally) {
        match self.slot_of.get(port_no as usize) {
            Some(&pos) if pos > 0 => {
                let slot = &mut self.slots[pos as usize - 1];
                slot.txq.push(frame);
                if slot.txq.len() >= BATCH_SIZE {
                    self.flush_slot(pos as usize - 1);
                }
            }
            _ => {
                let r = self.send_to_peer(&frame, port_no);
                if let Err(reason) = r {
                    tally.counts[reason as usize] += 1;
                }
                self.pool.free(frame);
            }
        }
    }

    /// Hands a copy of `frame` to the worker that owns `port_no`.
    fn send_to_peer(&self, frame: &Frame, port_no: u32) -> Result<(), DropReason> {
        let Some(route) = self.snap.port(port_no) else {
            return Err(DropReason::PortDown);
        };
        let Some(Some(tx)) = self.links.handoff_out.get(route.worker) else {
            return Err(DropReason::PortDown);
        };
        if !tx.send(port_no, self.pool.data(frame)) {
            return Err(DropReason::CrossWorkerFull);
        }
        if let Some(w) = self.links.peer_wakers.get(route.worker) {
            w.wake_if_sleeping();
        }
        Ok(())
    }

    /// Sends `frame` to every port in the flood set except `in_port`: copies for all
    /// but the last local output, which gets the original.
    fn flood(&mut self, frame: Frame, in_port: u32, tally: &mut DropTally) {
        let mut last_local: Option<u32> = None;
        let mut any = false;
        // Indexing (not iterating) keeps `self` free for `output` without cloning
        // the snapshot Arc per flooded frame.
        for k in 0..self.snap.flood.len() {
            let p = self.snap.flood[k];
            if p == in_port {
                continue;
            }
            any = true;
            let local = matches!(self.slot_of.get(p as usize), Some(&pos) if pos > 0);
            if !local {
                if let Err(r) = self.send_to_peer(&frame, p) {
                    tally.counts[r as usize] += 1;
                }
                continue;
            }
            if let Some(prev) = last_local.replace(p) {
                match self.pool.clone_frame(&frame) {
                    Some(copy) => self.output(copy, prev, tally),
                    None => tally.counts[DropReason::NoBuffer as usize] += 1,
                }
            }
        }
        match last_local {
            Some(p) => self.output(frame, p, tally),
            None => {
                if !any {
                    tally.counts[DropReason::NoRoute as usize] += 1;
                }
                self.pool.free(frame);
            }
        }
    }

    fn flush_slot(&mut self, i: usize) {
        if self.links.capture.armed() && !self.slots[i].txq.is_empty() {
            let now = self.now_ns();
            let s = &self.slots[i];
            self.tap_frames(&s.txq, s.port_no, crate::capture::Dir::Tx, now);
        }
        let slot = &mut self.slots[i];
        if slot.txq.is_empty() {
            return;
        }
        let o = slot.port.tx_batch(&mut self.pool, &mut slot.txq);
        slot.counters.add_tx(u64::from(o.sent), o.bytes);
        if o.dropped > 0 {
            slot.counters
                .drops
                .add(DropReason::RingFull, u64::from(o.dropped));
        }
    }

    fn flush_all(&mut self) {
        for i in 0..self.slots.len() {
            self.flush_slot(i);
        }
    }

    /// Frames other workers received for our ports.
    fn receive_handoffs(&mut self) -> usize {
        let mut n = 0;
        let mut no_buffer = 0u64;
        let mut port_down = 0u64;
        for rx in &self.links.handoff_in {
            n += rx.drain(BATCH_SIZE, |port_no, bytes| {
                let pos = match self.slot_of.get(port_no as usize) {
                    Some(&pos) if pos > 0 => pos as usize - 1,
                    _ => {
                        port_down += 1;
                        return;
                    }
                };
                match self.pool.alloc_copy(bytes) {
                    Some(f) => self.slots[pos].txq.push(f),
                    None => no_buffer += 1,
                }
            });
        }
        let d = &self.links.counters.drops;
        if no_buffer > 0 {
            d.add(DropReason::NoBuffer, no_buffer);
        }
        if port_down > 0 {
            d.add(DropReason::PortDown, port_down);
        }
        n
    }

    fn apply_learn_events(&mut self, now: u64) {
        let interval = self.macs.aging_ns() / 4;
        let macs = &mut self.macs;
        let mut moved = false;
        self.links.learn.drain(|ev| {
            let l = macs.learn(ev.key, ev.port, ev.seen);
            moved |= matches!(l, Learned::Moved { .. });
            if l != Learned::Full {
                // Mark as announced so the event is not echoed back.
                macs.due_for_announce(ev.key, now, interval);
            }
        });
        if moved {
            self.fastpath_invalidate();
        }
    }

    /// A MAC moved or expired: decisions the kernel cached may name the old port.
    fn fastpath_invalidate(&self) {
        if let Some(fp) = &self.links.fastpath {
            fp.invalidate();
        }
    }

    /// Writes the decision just taken for a frame with fdb key `k` (ingress
    /// interface not set yet) into the kernel, if both ports run the fast path,
    /// no capture is on, and it was not written in this epoch already.
    pub(super) fn fastpath_install(
        &mut self,
        mut k: crate::port::fastpath::FdbKey,
        in_port: u32,
        out_port: u32,
    ) {
        use crate::port::fastpath::{FdbValue, MAX_INSTALLED, monotonic_ns};
        let Some(fp) = &self.links.fastpath else {
            return;
        };
        if out_port == in_port || self.links.capture.armed() {
            return;
        }
        let (Some(ri), Some(ro)) = (self.snap.port(in_port), self.snap.port(out_port)) else {
            return;
        };
        // The ingress runs the program; the egress accepts redirects (tx_ports).
        // The uplink takes part in tunnel entries only (tunnel_fp.rs).
        let uplink = vswitch_proto::PortKind::Uplink;
        if !(ri.fp_ingress && ro.fastpath)
            || ri.ifindex == 0
            || ro.ifindex == 0
            || ri.kind == uplink
            || ro.kind == uplink
        {
            return;
        }
        k.in_ifindex = ri.ifindex;
        if self.fp.installed_epoch != self.fp.epoch {
            self.fp.installed.clear();
            self.fp.installed_epoch = self.fp.epoch;
        }
        if self.fp.installed.len() >= MAX_INSTALLED || self.fp.installed.contains_key(&k) {
            return;
        }
        let v = FdbValue {
            out_ifindex: ro.ifindex,
            out_port,
            in_port,
            epoch: self.fp.epoch,
            last_seen: monotonic_ns(),
        };
        if fp.install(&k, &v).is_ok() {
            self.fp.installed.insert(k, in_port);
        }
    }

    /// MAC learning for frames the kernel forwarded: refreshes the source MAC of
    /// every entry of ours used since the last sweep (as OVS's revalidator does
    /// from datapath flow statistics). Returns whether a MAC moved.
    fn fastpath_aging_sweep(&mut self, now: u64) -> bool {
        use crate::port::fastpath::{AGING_SWEEP_NS, monotonic_ns};
        let Some(fp) = &self.links.fastpath else {
            return false;
        };
        if now.saturating_sub(self.fp.last_sweep) < AGING_SWEEP_NS {
            return false;
        }
        self.fp.last_sweep = now;
        if self.fp.installed_epoch != fp.epoch() {
            return false;
        }
        let mono = monotonic_ns();
        let aging = self.macs.aging_ns();
        let interval = aging / 4;
        let mut moved = false;
        for (k, &in_port) in &self.fp.installed {
            let Some(v) = fp.lookup(k) else { continue };
            if v.epoch != self.fp.installed_epoch {
                continue;
            }
            let age = mono.saturating_sub(v.last_seen);
            if age >= aging {
                continue;
            }
            let seen = now.saturating_sub(age);
            let skey = k.src_key();
            moved |= matches!(self.macs.learn(skey, in_port, seen), Learned::Moved { .. });
            if self.links.learn.has_peers() && self.macs.due_for_announce(skey, now, interval) {
                self.links.learn.announce(LearnEvent {
                    key: skey,
                    port: in_port,
                    seen,
                });
            }
        }
        moved
    }

    fn housekeeping(&mut self, now: u64) {
        self.last_housekeeping = now;
        // Gauges are refreshed here, not on every loop iteration.
        let relaxed = std::sync::atomic::Ordering::Relaxed;
        self.links
            .counters
            .ports
            .store(self.slots.len() as u64, relaxed);
        self.cache.housekeeping();
        self.nat_sweep(now);
        self.conntrack.expire_some(now);
        let moved = self.fastpath_aging_sweep(now);
        let aged = self.macs.expire(now);
        if moved || aged > 0 {
            self.fastpath_invalidate();
        }
        let c = &self.links.counters;
        WorkerCounters::add(&c.mac_aged, aged as u64);
        c.mac_entries
            .store(self.macs.len() as u64, std::sync::atomic::Ordering::Relaxed);
        for s in &mut self.slots {
            let (d, k) = (s.port.rx_drops(), s.port.kernel_drops());
            let (p, pk) = (s.last_rx_drops, s.last_kernel_drops);
            let drops = &s.counters.drops;
            drops.add(DropReason::Oversize, d.oversize.saturating_sub(p.oversize));
            drops.add(
                DropReason::Malformed,
                d.malformed.saturating_sub(p.malformed),
            );
            let kernel = d.errors.saturating_sub(p.errors) + k.saturating_sub(pk);
            drops.add(DropReason::KernelRx, kernel);
            s.last_rx_drops = d;
            s.last_kernel_drops = k;
        }
    }

    /// Sleeps in poll(2) until a port has frames, the control thread or a peer
    /// wakes us, or `max_sleep` passes.
    fn sleep(&mut self) {
        if self.pollfds_dirty {
            self.rebuild_pollfds();
        }
        let timeout = if self.must_spin {
            1
        } else {
            self.cfg.max_sleep.as_millis().max(1) as i32
        };
        let waker = &self.links.waker;
        waker.set_sleeping(true);
        // Re-check what a peer may have queued before it saw the flag.
        if self.links.handoff_in.iter().any(HandoffRx::has_pending)
            || !self.links.commands.is_empty()
        {
            waker.set_sleeping(false);
            return;
        }
        WorkerCounters::add(&self.links.counters.sleeps, 1);
        // SAFETY: pollfds is a valid array of pollfd structs for the call's duration.
        let _ = unsafe {
            libc::poll(
                self.pollfds.as_mut_ptr(),
                self.pollfds.len() as libc::nfds_t,
                timeout,
            )
        };
        waker.set_sleeping(false);
        if self.pollfds.first().is_some_and(|p| p.revents != 0) {
            waker.drain();
        }
    }

    fn rebuild_pollfds(&mut self) {
        self.pollfds.clear();
        self.pollfds.push(libc::pollfd {
            fd: self.links.waker.fd(),
            events: libc::POLLIN,
            revents: 0,
        });
        self.must_spin = false;
        for s in &self.slots {
            match s.port.poll_fd() {
                Some(fd) => self.pollfds.push(libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                }),
                None => self.must_spin = true,
            }
            for &fd in s.port.extra_poll_fds() {
                self.pollfds.push(libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                });
            }
        }
        self.pollfds_dirty = false;
    }
}

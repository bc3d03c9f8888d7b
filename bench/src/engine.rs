//! The generator and sink loops and the threads ("lanes") that run them.
//!
//! A lane is one pinned thread with an optional generator socket (one TX queue)
//! and an optional sink socket (one RX queue). On a 2-CPU machine the default is
//! one lane on CPU 0 that does both, alternating between sending a batch and
//! draining the sink's RX ring, leaving CPU 1 to the device under test.
//!
//! Lanes live for a whole run: they open their sockets once (in the namespaces of
//! their interfaces), then carry out one [`TrialCmd`] after another, so repeats,
//! sweeps and search steps do not re-attach XDP programs between trials.
//!
//! # Counting
//!
//! Every frame carries its send time. A trial's *window* is `[t_start, t_end)`; the
//! generator counts the frames it stamps with a time in the window (offered), the
//! sink counts received frames whose stamp lies in the window (delivered) and
//! records their latency. The generator stops at `t_end`; the sink keeps
//! reading until `sink_end` so frames still queued in the device are counted.
//! Edge effects cancel out: no frame sent before the window or in a previous
//! trial is ever counted as delivered.

use crate::report::new_histogram;
use crate::traffic::{SplitMix64, TokenBucket, TrafficSpec, lane_flows};
use crate::wire::{self, FrameSpec, Template};
use hdrhistogram::Histogram;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

/// CLOCK_MONOTONIC in nanoseconds: the clock of the stamps (and of
/// `bpf_ktime_get_ns`, so vsb's sink reads our stamps right).
#[inline]
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into a live local.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A received frame, borrowed from the sink's buffer.
pub struct RxFrame<'a> {
    pub data: &'a [u8],
    /// When the frame reached the sink's interface (CLOCK_MONOTONIC ns), stamped
    /// by the sink's XDP program; `None` where that program is not in use.
    pub rx_ns: Option<u64>,
}

/// A generator socket: frames live in its own memory, written by [`GenCore`].
pub trait TxPort: Send {
    fn describe(&self) -> String;
    /// Frames of its memory.
    fn frames(&self) -> u32;
    /// Writes every frame from `core` (between trials; all frames are free).
    fn layout(&mut self, core: &GenCore);
    /// Takes back frames the kernel is done with.
    fn reap(&mut self);
    /// Descriptors handed to the kernel but not consumed by it yet.
    fn pending(&mut self) -> usize;
    /// Stamps and queues up to `n` frames with time `ts`; returns how many.
    fn send(&mut self, core: &mut GenCore, n: usize, ts: u64) -> usize;
    /// Makes the kernel transmit what is queued.
    fn kick(&mut self);
    /// Transmit errors that were not transient.
    fn errors(&self) -> u64;
    /// Waits (at most `timeout`) until every frame is back.
    fn drain(&mut self, timeout: Duration);
}

/// A sink socket.
pub trait RxPort: Send {
    fn describe(&self) -> String;
    /// Hands every waiting frame to `f`; returns how many.
    fn poll(&mut self, f: &mut dyn FnMut(RxFrame<'_>)) -> usize;
    /// Sends `frame` a few times (the MAC announcement).
    fn announce(&mut self, frame: &[u8]);
    /// Frames the kernel dropped because the sink was too slow (ring full).
    fn kernel_drops(&self) -> u64;
    /// The sink counts in the kernel (the XDP sink): `poll` never has anything, so a
    /// lane with no generator need not poll it.
    fn counts_in_kernel(&self) -> bool {
        false
    }
    /// Before a trial (the lane's thread, before `times.t0`): sinks that count in
    /// the kernel (the XDP sink) reset their maps and take the window.
    fn begin_trial(&mut self, _times: &Times) -> Result<(), String> {
        Ok(())
    }
    /// After a trial: sinks that count in the kernel add their counts and
    /// latencies to `sink`.
    fn end_trial(&mut self, _sink: &mut SinkCore) -> Result<(), String> {
        Ok(())
    }
}

#[derive(Debug, Clone, Copy)]
struct FrameInfo {
    template: u16,
    flow_sum: u32,
}

/// The generator's view of the frames: which template (size) and flow each frame
/// of the socket's memory carries, and the per-packet stamping.
pub struct GenCore {
    spec: Arc<TrafficSpec>,
    templates: Vec<Template>,
    frames: Vec<FrameInfo>,
    /// More flows than frames can hold: flow fields are rewritten per packet.
    dynamic: bool,
    flows: Vec<u32>,
    next_flow: usize,
    used: u32,
    pattern_len: u64,
    seq: u32,
    stream: u16,
}

impl GenCore {
    /// Lays out `frames` frames for lane `lane` of `lanes`. Static layout (every
    /// frame keeps its flow; nothing but the stamp is written per packet) when
    /// each of the lane's flows can have every size of the mix at least twice;
    /// otherwise the flow fields are rewritten per packet.
    pub fn new(
        spec: Arc<TrafficSpec>,
        lane: usize,
        lanes: usize,
        frames: u32,
    ) -> Result<GenCore, String> {
        spec.validate()?;
        let flows = lane_flows(spec.flows, lane, lanes);
        if flows.is_empty() {
            return Err(format!(
                "generator thread {lane} has no flow ({} flows for {lanes} threads)",
                spec.flows
            ));
        }
        let pattern = spec.sizes.pattern(spec.seed);
        let w = pattern.len() as u64;
        let f = flows.len() as u64;
        let dynamic = f * w * 2 > u64::from(frames);
        let used = if dynamic {
            (u64::from(frames) / w) * w
        } else {
            (u64::from(frames) / (f * w)) * f * w
        } as u32;
        if used == 0 {
            return Err(format!(
                "the size mix ({} entries) does not fit in {frames} frames",
                pattern.len()
            ));
        }
        let mut sizes: Vec<u16> = pattern.clone();
        sizes.sort_unstable();
        sizes.dedup();
        let stream = (lane + 1) as u16;
        let mut scratch = vec![0u8; 2048];
        let mut templates = Vec::new();
        for &s in &sizes {
            let fs = frame_spec(&spec, s, stream);
            templates.push(
                wire::build(&mut scratch, &fs, &spec.flow(flows[0])).map_err(|e| e.to_string())?,
            );
        }
        let mut infos = Vec::with_capacity(used as usize);
        for j in 0..used as u64 {
            let size = pattern[(j % w) as usize];
            let t = sizes.iter().position(|&s| s == size).unwrap_or(0);
            let flow = flows[((j / w) % f) as usize];
            let fl = spec.flow(flow);
            infos.push(FrameInfo {
                template: t as u16,
                flow_sum: templates[t].flow_sum(&fl),
            });
        }
        Ok(GenCore {
            spec,
            templates,
            frames: infos,
            dynamic,
            flows,
            next_flow: 0,
            used,
            pattern_len: w,
            seq: 0,
            stream,
        })
    }

    pub fn frames_used(&self) -> u32 {
        self.used
    }

    pub fn is_dynamic(&self) -> bool {
        self.dynamic
    }

    pub fn spec(&self) -> &TrafficSpec {
        &self.spec
    }

    /// Writes frame `idx` in full into `buf`; returns its length (0 for frames
    /// beyond the layout, which are never sent).
    pub fn build_frame(&self, idx: u32, buf: &mut [u8]) -> usize {
        let Some(info) = self.frames.get(idx as usize) else {
            return 0;
        };
        let w = self.pattern_len;
        let flow = self.flows[((u64::from(idx) / w) % self.flows.len() as u64) as usize];
        let t = &self.templates[info.template as usize];
        let size = t.len + wire::FCS_LEN;
        let fs = frame_spec(&self.spec, size as u16, self.stream);
        match wire::build(buf, &fs, &self.spec.flow(flow)) {
            Ok(t) => t.len,
            Err(_) => 0,
        }
    }

    /// Per packet: the stamp, and in dynamic mode the next flow's fields.
    #[inline]
    pub fn stamp(&mut self, idx: u32, buf: &mut [u8], ts: u64) {
        let Some(info) = self.frames.get(idx as usize).copied() else {
            return;
        };
        let t = &self.templates[info.template as usize];
        let Some(f) = buf.get_mut(..t.len) else {
            return;
        };
        let sum = if self.dynamic {
            let flow = self.flows[self.next_flow];
            self.next_flow += 1;
            if self.next_flow == self.flows.len() {
                self.next_flow = 0;
            }
            let fl = self.spec.flow(flow);
            t.set_flow(f, &fl);
            t.flow_sum(&fl)
        } else {
            info.flow_sum
        };
        t.finish(f, self.seq, ts, sum);
        self.seq = self.seq.wrapping_add(1);
    }

    /// The last `n` stamped frames were not sent after all.
    pub fn unsend(&mut self, n: usize) {
        self.seq = self.seq.wrapping_sub(n as u32);
        if self.dynamic && !self.flows.is_empty() {
            let l = self.flows.len();
            self.next_flow = (self.next_flow + l - n % l) % l;
        }
    }
}

/// The frame of one size; the TCP sequence number is the same for every flow (so
/// that one partial checksum serves all flows), drawn from the seed.
fn frame_spec(spec: &TrafficSpec, size: u16, stream: u16) -> FrameSpec {
    FrameSpec {
        src_mac: spec.src_mac,
        dst_mac: spec.dst_mac,
        ipv6: spec.ipv6,
        proto: spec.proto,
        size: usize::from(size),
        stream,
        tcp_seq: SplitMix64::new(spec.seed).next_u64() as u32,
        udp_checksum_v4: spec.udp_checksum,
    }
}

/// The sink's bookkeeping for one trial.
pub struct SinkCore {
    t0: u64,
    t_start: u64,
    t_end: u64,
    pub frames: u64,
    pub stamped: u64,
    pub delivered: u64,
    pub foreign: u64,
    pub reordered: u64,
    pub bad: u64,
    last_seq: Vec<Option<u32>>,
    pub hist: Histogram<u64>,
}

impl SinkCore {
    pub fn new(times: &Times) -> SinkCore {
        SinkCore {
            t0: times.t0,
            t_start: times.t_start,
            t_end: times.t_end,
            frames: 0,
            stamped: 0,
            delivered: 0,
            foreign: 0,
            reordered: 0,
            bad: 0,
            last_seq: vec![None; 257],
            hist: new_histogram(),
        }
    }

    /// One received frame, read at time `now` (taken just before the ring was read,
    /// so latencies are never overstated by our own processing).
    #[inline]
    pub fn on_frame(&mut self, data: &[u8], rx_ns: Option<u64>, now: u64) {
        // The XDP receive time when there is a plausible one, else the poll time.
        let now = match rx_ns {
            Some(t) if t <= now => t,
            _ => now,
        };
        self.frames += 1;
        let Some(s) = wire::parse_stamp(data) else {
            self.foreign += 1;
            return;
        };
        if s.ts_ns > now {
            self.bad += 1;
            return;
        }
        if s.ts_ns < self.t0 {
            // Sent before this trial (a late frame of the previous one).
            return;
        }
        self.stamped += 1;
        if let Some(slot) = self.last_seq.get_mut(usize::from(s.stream)) {
            match *slot {
                Some(last) if (s.seq.wrapping_sub(last) as i32) < 0 => self.reordered += 1,
                _ => *slot = Some(s.seq),
            }
        }
        if s.ts_ns >= self.t_start && s.ts_ns < self.t_end {
            self.delivered += 1;
            let _ = self.hist.record((now - s.ts_ns).max(1));
        }
    }
}

/// A trial's clock: start sending at `t0`, measure `[t_start, t_end)`, stop
/// sending at `t_end`, stop receiving at `sink_end` (CLOCK_MONOTONIC ns).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Times {
    pub t0: u64,
    pub t_start: u64,
    pub t_end: u64,
    pub sink_end: u64,
}

impl Times {
    /// Starting `lead` from now.
    pub fn plan(lead: Duration, warmup: Duration, window: Duration, drain: Duration) -> Times {
        let t0 = mono_ns() + lead.as_nanos() as u64;
        let t_start = t0 + warmup.as_nanos() as u64;
        let t_end = t_start + window.as_nanos() as u64;
        Times {
            t0,
            t_start,
            t_end,
            sink_end: t_end + drain.as_nanos() as u64,
        }
    }
}

/// Totals the lanes publish while they run (for the live progress line).
#[derive(Debug, Default)]
pub struct Live {
    pub sent: AtomicU64,
    pub received: AtomicU64,
}

/// What one lane measured in one trial.
pub struct LaneResult {
    pub sent: u64,
    pub offered: u64,
    /// See [`TrialCounts::stalled_ns`].
    pub stalled_ns: u64,
    pub tx_errors: u64,
    pub sink: Option<SinkCore>,
    pub sink_drops: u64,
}

/// Descriptors the generator lets wait in the kernel's TX ring: more only adds
/// queueing latency (copy mode drains the ring inside `sendto`).
fn max_pending(batch: usize) -> usize {
    2 * batch
}

/// Runs one trial on this thread: generator and/or sink until the times say stop.
#[allow(clippy::too_many_arguments)]
pub fn run_trial(
    mut tx: Option<(&mut dyn TxPort, &mut GenCore)>,
    mut rx: Option<(&mut dyn RxPort, &mut SinkCore)>,
    rate: Option<f64>,
    batch: usize,
    times: Times,
    stop: &AtomicBool,
    live: &Live,
) -> TrialCounts {
    let mut bucket = rate.map(|r| TokenBucket::new(r, batch as u32, times.t0));
    let mut gen_on = tx.is_some();
    let (mut sent, mut offered) = (0u64, 0u64);
    let mut iter = 0u32;
    let mut prev = mono_ns();
    let mut stalled = 0u64;
    let base_sent = live.sent.load(Ordering::Relaxed);
    let base_rx = live.received.load(Ordering::Relaxed);
    loop {
        let now = mono_ns();
        // A loop iteration takes microseconds; a gap of more than 1 ms means this
        // thread lost its CPU (a busy host) while it should have been sending.
        if now - prev > STALL_NS && now > times.t0 && now < times.t_end {
            stalled += now - prev;
        }
        prev = now;
        let stopping = stop.load(Ordering::Relaxed);
        if let Some((port, core)) = tx.as_mut() {
            if gen_on && (now >= times.t_end || stopping) {
                gen_on = false;
            }
            if gen_on && now >= times.t0 {
                port.reap();
                let mut want = batch;
                if let Some(b) = bucket.as_mut() {
                    want = want.min(b.allow(now) as usize);
                }
                want = want.min(max_pending(batch).saturating_sub(port.pending()));
                if want > 0 {
                    let n = port.send(core, want, now) as u64;
                    if let Some(b) = bucket.as_mut() {
                        b.take(n);
                    }
                    sent += n;
                    if now >= times.t_start {
                        offered += n;
                    }
                }
            }
            port.kick();
        }
        if let Some((port, sink)) = rx.as_mut() {
            if tx.is_none() && port.counts_in_kernel() {
                // Nothing to read: wait for the end instead of spinning on a CPU.
                let left = times.sink_end.saturating_sub(now);
                std::thread::sleep(Duration::from_nanos(left.clamp(1, 10_000_000)));
            } else {
                let t = mono_ns();
                port.poll(&mut |f| sink.on_frame(f.data, f.rx_ns, t));
            }
        }
        iter = iter.wrapping_add(1);
        if iter.is_multiple_of(64) {
            live.sent.store(base_sent + sent, Ordering::Relaxed);
            if let Some((_, sink)) = rx.as_ref() {
                live.received
                    .store(base_rx + sink.stamped, Ordering::Relaxed);
            }
        }
        if stopping || (!gen_on && (rx.is_none() || now >= times.sink_end)) {
            break;
        }
    }
    live.sent.store(base_sent + sent, Ordering::Relaxed);
    if let Some((_, sink)) = rx.as_ref() {
        live.received
            .store(base_rx + sink.stamped, Ordering::Relaxed);
    }
    TrialCounts {
        sent,
        offered,
        stalled_ns: stalled,
    }
}

/// Loop gaps longer than this count as stalls.
const STALL_NS: u64 = 1_000_000;

/// What [`run_trial`] counted on this thread.
#[derive(Debug, Clone, Copy, Default)]
pub struct TrialCounts {
    /// Frames sent during the whole trial (warm-up included).
    pub sent: u64,
    /// Frames sent with a stamp inside the window.
    pub offered: u64,
    /// Time between `t0` and `t_end` during which the thread did not run (loop
    /// gaps over 1 ms): CPU contention.
    pub stalled_ns: u64,
}

/// Which socket type to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnginePref {
    /// AF_XDP, or AF_PACKET (with a warning) where AF_XDP cannot be had.
    Auto,
    Afxdp,
    AfPacket,
    /// Sinks only: the XDP counting sink (bench/bpf/xdp_sink.c), counting and
    /// timing frames in the kernel on the receiving CPU.
    Xdp,
}

/// An interface in a namespace (`None`: the namespace the process runs in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub netns: Option<String>,
    pub ifname: String,
    pub queue: u32,
}

/// What a lane thread is made of.
#[derive(Debug, Clone)]
pub struct LaneSpec {
    pub lane: usize,
    /// Generator lanes in all (flows are split between them).
    pub gen_lanes: usize,
    pub cpu: Option<usize>,
    pub generator: Option<Endpoint>,
    pub sink: Option<Endpoint>,
    pub engine: EnginePref,
    /// The sink's engine (usually `engine`; `Xdp` for the XDP counting sink).
    pub sink_engine: EnginePref,
    pub zero_copy: bool,
    /// Sent from the sink at start so that learning switches find it.
    pub announce_mac: Option<[u8; 6]>,
}

/// Work for a lane.
pub struct TrialCmd {
    pub spec: Arc<TrafficSpec>,
    pub times: Times,
}

enum Cmd {
    Trial(TrialCmd),
    Quit,
}

/// A running lane thread.
pub struct Lane {
    pub spec: LaneSpec,
    pub gen_engine: Option<String>,
    pub sink_engine: Option<String>,
    /// Why AF_XDP was not used (auto mode fell back to AF_PACKET).
    pub fallback: Option<String>,
    cmd: mpsc::Sender<Cmd>,
    res: mpsc::Receiver<Result<LaneResult, String>>,
    join: Option<JoinHandle<()>>,
}

struct Ready {
    generator: Option<String>,
    sink: Option<String>,
    fallback: Option<String>,
}

fn ns_file(name: &str) -> Result<File, String> {
    let p = PathBuf::from("/run/netns").join(name);
    File::open(&p).map_err(|e| format!("network namespace {name}: {e}"))
}

fn setns(f: &File) -> Result<(), String> {
    // SAFETY: setns on a valid namespace fd changes only this thread's namespace.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } == 0 {
        Ok(())
    } else {
        Err(format!("setns: {}", std::io::Error::last_os_error()))
    }
}

/// Enters `ep`'s namespace (if any) for `f`, then returns to `home`.
fn in_ns<T>(home: &File, ns: Option<&String>, f: impl FnOnce() -> T) -> Result<T, String> {
    match ns {
        Some(n) => {
            let file = ns_file(n)?;
            setns(&file)?;
            let r = f();
            setns(home)?;
            Ok(r)
        }
        None => Ok(f()),
    }
}

fn open_tx(
    ep: &Endpoint,
    engine: EnginePref,
    zc: bool,
) -> Result<(Box<dyn TxPort>, Option<String>), String> {
    let xdp = || crate::xsk::XskTx::open(&ep.ifname, ep.queue, zc);
    let pkt = || crate::packet::PacketTx::open(&ep.ifname);
    match engine {
        EnginePref::Afxdp => Ok((
            Box::new(xdp().map_err(|e| format!("AF_XDP TX on {}: {e}", ep.ifname))?),
            None,
        )),
        EnginePref::AfPacket => Ok((Box::new(pkt()?), None)),
        EnginePref::Xdp => Err("the xdp engine is a sink engine only".into()),
        EnginePref::Auto => match xdp() {
            Ok(t) => Ok((Box::new(t), None)),
            Err(e) => {
                let why = format!(
                    "AF_XDP TX on {} unavailable ({e}); using AF_PACKET",
                    ep.ifname
                );
                Ok((Box::new(pkt()?), Some(why)))
            }
        },
    }
}

fn open_rx(
    ep: &Endpoint,
    engine: EnginePref,
    zc: bool,
) -> Result<(Box<dyn RxPort>, Option<String>), String> {
    let xdp = || crate::xsk::XskRx::open(&ep.ifname, ep.queue, zc);
    let pkt = || crate::packet::PacketRx::open(&ep.ifname);
    match engine {
        EnginePref::Afxdp => Ok((
            Box::new(xdp().map_err(|e| format!("AF_XDP RX on {}: {e}", ep.ifname))?),
            None,
        )),
        EnginePref::AfPacket => Ok((Box::new(pkt()?), None)),
        EnginePref::Xdp => Ok((
            Box::new(
                crate::xdpsink::XdpSink::open(&ep.ifname)
                    .map_err(|e| format!("XDP sink on {}: {e}", ep.ifname))?,
            ),
            None,
        )),
        EnginePref::Auto => match xdp() {
            Ok(t) => Ok((Box::new(t), None)),
            Err(e) => {
                let why = format!(
                    "AF_XDP RX on {} unavailable ({e}); using AF_PACKET",
                    ep.ifname
                );
                Ok((Box::new(pkt()?), Some(why)))
            }
        },
    }
}

impl Lane {
    /// Starts the thread, opens its sockets and waits until they are ready.
    pub fn start(spec: LaneSpec, stop: Arc<AtomicBool>, live: Arc<Live>) -> Result<Lane, String> {
        let (cmd_tx, cmd_rx) = mpsc::channel::<Cmd>();
        let (res_tx, res_rx) = mpsc::channel::<Result<LaneResult, String>>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<Ready, String>>();
        let s = spec.clone();
        let join = std::thread::Builder::new()
            .name(format!("lane{}", spec.lane))
            .spawn(move || lane_main(s, cmd_rx, res_tx, ready_tx, stop, live))
            .map_err(|e| format!("cannot start a thread: {e}"))?;
        let ready = ready_rx
            .recv()
            .map_err(|_| "lane thread died while opening its sockets".to_string())
            .and_then(|r| r);
        match ready {
            Ok(r) => Ok(Lane {
                spec,
                gen_engine: r.generator,
                sink_engine: r.sink,
                fallback: r.fallback,
                cmd: cmd_tx,
                res: res_rx,
                join: Some(join),
            }),
            Err(e) => {
                let _ = join.join();
                Err(e)
            }
        }
    }

    /// Hands the lane a trial (returns at once).
    pub fn begin(&self, t: TrialCmd) -> Result<(), String> {
        self.cmd
            .send(Cmd::Trial(t))
            .map_err(|_| format!("lane {} is gone", self.spec.lane))
    }

    /// Waits for the trial's result.
    pub fn finish(&self) -> Result<LaneResult, String> {
        self.res
            .recv()
            .map_err(|_| format!("lane {} died during the trial", self.spec.lane))?
    }
}

impl Drop for Lane {
    fn drop(&mut self) {
        let _ = self.cmd.send(Cmd::Quit);
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}

/// What a lane thread opened: its home namespace, sockets and their description.
type Opened = (
    File,
    Option<Box<dyn TxPort>>,
    Option<Box<dyn RxPort>>,
    Ready,
);

fn lane_main(
    spec: LaneSpec,
    cmds: mpsc::Receiver<Cmd>,
    results: mpsc::Sender<Result<LaneResult, String>>,
    ready: mpsc::Sender<Result<Ready, String>>,
    stop: Arc<AtomicBool>,
    live: Arc<Live>,
) {
    let opened = (|| -> Result<Opened, String> {
        if let Some(cpu) = spec.cpu
            && !core_affinity::set_for_current(core_affinity::CoreId { id: cpu })
        {
            return Err(format!("cannot pin a thread to CPU {cpu}"));
        }
        let home = File::open("/proc/thread-self/ns/net")
            .map_err(|e| format!("own network namespace: {e}"))?;
        let mut fallback = None;
        let tx = match &spec.generator {
            Some(ep) => {
                let (t, fb) = in_ns(&home, ep.netns.as_ref(), || {
                    open_tx(ep, spec.engine, spec.zero_copy)
                })??;
                fallback = fallback.or(fb);
                Some(t)
            }
            None => None,
        };
        let rx = match &spec.sink {
            Some(ep) => {
                let (mut r, fb) = in_ns(&home, ep.netns.as_ref(), || {
                    match open_rx(ep, spec.sink_engine, spec.zero_copy) {
                        // The default XDP sink with the `auto` engine: fall back to
                        // an AF_XDP (or AF_PACKET) sink when it cannot be attached.
                        Err(e)
                            if spec.sink_engine == EnginePref::Xdp
                                && spec.engine == EnginePref::Auto =>
                        {
                            let (r, fb) = open_rx(ep, EnginePref::Auto, spec.zero_copy)?;
                            Ok((r, Some(fb.unwrap_or(format!("{e}; using the AF_XDP sink")))))
                        }
                        r => r,
                    }
                })??;
                fallback = fallback.or(fb);
                if let Some(mac) = spec.announce_mac {
                    r.announce(&wire::announce_frame(&mac));
                }
                Some(r)
            }
            None => None,
        };
        let r = Ready {
            generator: tx.as_ref().map(|t| t.describe()),
            sink: rx.as_ref().map(|r| r.describe()),
            fallback,
        };
        Ok((home, tx, rx, r))
    })();
    let (home, mut tx, mut rx) = match opened {
        Ok((home, tx, rx, r)) => {
            let _ = ready.send(Ok(r));
            (home, tx, rx)
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };

    let mut core: Option<(Arc<TrafficSpec>, GenCore)> = None;
    while let Ok(Cmd::Trial(t)) = cmds.recv() {
        let r = (|| -> Result<LaneResult, String> {
            let mut gen_part = None;
            if let Some(port) = tx.as_mut() {
                let same = core.as_ref().is_some_and(|(s, _)| **s == *t.spec);
                if !same {
                    port.drain(Duration::from_millis(500));
                    let c = GenCore::new(t.spec.clone(), spec.lane, spec.gen_lanes, port.frames())?;
                    port.layout(&c);
                    core = Some((t.spec.clone(), c));
                }
                if let Some((_, c)) = core.as_mut() {
                    gen_part = Some((port.as_mut() as &mut dyn TxPort, c));
                }
            }
            let mut sink = rx.as_ref().map(|_| SinkCore::new(&t.times));
            if let Some(r) = rx.as_mut() {
                r.begin_trial(&t.times)?;
            }
            let drops0 = rx.as_ref().map(|r| r.kernel_drops()).unwrap_or(0);
            let rx_part = match (rx.as_mut(), sink.as_mut()) {
                (Some(p), Some(s)) => Some((p.as_mut() as &mut dyn RxPort, s)),
                _ => None,
            };
            let rate = t.spec.rate_per_thread(spec.gen_lanes);
            let batch = t.spec.batch as usize;
            let c = run_trial(gen_part, rx_part, rate, batch, t.times, &stop, &live);
            if let (Some(r), Some(s)) = (rx.as_mut(), sink.as_mut()) {
                r.end_trial(s)?;
            }
            let tx_errors = tx.as_ref().map(|p| p.errors()).unwrap_or(0);
            if let Some(p) = tx.as_mut() {
                p.drain(Duration::from_millis(200));
            }
            let sink_drops = rx
                .as_ref()
                .map(|r| r.kernel_drops())
                .unwrap_or(0)
                .saturating_sub(drops0);
            Ok(LaneResult {
                sent: c.sent,
                offered: c.offered,
                stalled_ns: c.stalled_ns,
                tx_errors,
                sink,
                sink_drops,
            })
        })();
        if results.send(r).is_err() {
            break;
        }
    }
    // Close the sockets where they were made (libxdp detaches its program by
    // interface index, in the calling thread's namespace).
    if let Some(r) = rx.take() {
        let ns = spec.sink.as_ref().and_then(|e| e.netns.clone());
        if in_ns(&home, ns.as_ref(), || drop(r)).is_err() {
            eprintln!("warning: could not close the sink socket in its namespace");
        }
    }
    if let Some(t) = tx.take() {
        let ns = spec.generator.as_ref().and_then(|e| e.netns.clone());
        if in_ns(&home, ns.as_ref(), || drop(t)).is_err() {
            eprintln!("warning: could not close the generator socket in its namespace");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic::{Field, SizeMix};

    fn spec(flows: u32, sizes: SizeMix) -> Arc<TrafficSpec> {
        let mut s = TrafficSpec::new([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        s.flows = flows;
        s.sizes = sizes;
        s.fields = vec![Field::SrcPort, Field::SrcIp];
        Arc::new(s)
    }

    #[test]
    fn static_layout_cycles_flows_and_sizes() {
        let c = GenCore::new(spec(3, SizeMix::imix()), 0, 1, 4096).expect("core");
        assert!(!c.is_dynamic());
        assert_eq!(c.frames_used() % 36, 0);
        let mut buf = vec![0u8; 2048];
        let mut sizes = std::collections::HashMap::new();
        let mut ports = std::collections::HashSet::new();
        for i in 0..36 {
            let len = c.build_frame(i, &mut buf);
            *sizes.entry(len).or_insert(0) += 1;
            ports.insert(u16::from_be_bytes([buf[34], buf[35]]));
        }
        assert_eq!(sizes[&60], 21);
        assert_eq!(sizes[&572], 12);
        assert_eq!(sizes[&1496], 3);
        assert_eq!(ports.len(), 3);
    }

    #[test]
    fn dynamic_layout_rewrites_flows_and_stamps() {
        let mut c = GenCore::new(spec(100_000, SizeMix::fixed(64)), 1, 2, 4096).expect("core");
        assert!(c.is_dynamic());
        let mut buf = vec![0u8; 2048];
        let len = c.build_frame(0, &mut buf);
        assert_eq!(len, 60);
        let mut seen = std::collections::HashSet::new();
        for k in 0..10u64 {
            c.stamp(0, &mut buf, 1000 + k);
            let s = wire::parse_stamp(&buf[..len]).expect("stamp");
            assert_eq!(s.seq as u64, k);
            assert_eq!(s.ts_ns, 1000 + k);
            assert_eq!(s.stream, 2);
            seen.insert(u16::from_be_bytes([buf[34], buf[35]]));
        }
        assert_eq!(seen.len(), 10);
        c.unsend(3);
        c.stamp(0, &mut buf, 5);
        assert_eq!(wire::parse_stamp(&buf[..len]).expect("stamp").seq, 7);
    }

    #[test]
    fn sink_counts_by_window() {
        let times = Times {
            t0: 1000,
            t_start: 2000,
            t_end: 3000,
            sink_end: 4000,
        };
        let mut c = GenCore::new(spec(1, SizeMix::fixed(64)), 0, 1, 64).expect("core");
        let mut buf = vec![0u8; 2048];
        let len = c.build_frame(0, &mut buf);
        let mut s = SinkCore::new(&times);
        for ts in [500u64, 1500, 2000, 2500, 2999, 3000] {
            c.stamp(0, &mut buf, ts);
            s.on_frame(&buf[..len], None, 3500);
        }
        c.stamp(0, &mut buf, 9999);
        s.on_frame(&buf[..len], None, 3500);
        s.on_frame(&[0u8; 60], None, 3500);
        assert_eq!(s.frames, 8);
        assert_eq!(s.foreign, 1);
        assert_eq!(s.bad, 1);
        assert_eq!(s.stamped, 5);
        assert_eq!(s.delivered, 3);
        assert_eq!(s.hist.len(), 3);
        assert_eq!(s.hist.max(), 1500);
        assert_eq!(s.reordered, 0);
    }
}

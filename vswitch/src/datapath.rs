//! The control side of the switch: creates the poll workers, opens ports and hands
//! them to workers, publishes routing snapshots, watches for vanished interfaces and
//! reads counters. Runs on the control thread; never on the per-packet path.

use crate::counters::{PortCounters, WorkerCounters};
use crate::flow::cache::{CacheConfig, CacheCounters, Probe};
use crate::flow::key::Key;
use crate::flow::rule::Rule;
use crate::flow::spec::{FlowFilter, GroupSpec};
use crate::flow::tables::{BundleError, BundleOutcome, FlowMod, FlowTables, PipelineReader};
use crate::flow::xlate::{self, Trace, Translation};
use crate::pool::{FramePool, UmemHandle};
use crate::port::anchor::UmemAnchor;
use crate::port::memory::MemoryPort;
use crate::port::{self, Port, PortAttachment, PortError, netdev};
use crate::snapshot::{PortRoute, SharedSnapshot, Snapshot};
use crate::worker::handoff::{self, HandoffRx, HandoffTx};
use crate::worker::waker::Waker;
use crate::worker::{LearnPeers, Worker, WorkerCmd, WorkerConfig, WorkerLinks};
use arc_swap::ArcSwap;
use crossbeam_channel::{Sender, bounded, unbounded};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use vswitch_proto::{
    AddPortParams, ErrorCode, ErrorReply, PortInfo, PortKind, PortMode, PortState, StatsReply,
    SwitchStats,
};

/// Learn events queued per worker before announcements are dropped.
const LEARN_DEPTH: usize = 4096;
/// How long `del_port` waits for a worker to close a socket.
const DEL_TIMEOUT: Duration = Duration::from_secs(5);

/// How the datapath is built.
#[derive(Debug, Clone)]
pub struct DatapathConfig {
    /// One entry per poll worker: the CPU to pin it to, or `None`.
    pub workers: Vec<Option<usize>>,
    /// Frames per worker pool (2 KiB each).
    pub pool_frames: u32,
    pub mac_aging: Duration,
    pub mac_capacity: usize,
    pub idle_spin: Duration,
    pub max_sleep: Duration,
    /// Register pools as AF_XDP UMEMs when possible (false: plain memory only).
    pub use_umem: bool,
    /// Run workers on their own threads (false: the caller drives `run_once`,
    /// which is how in-process tests and micro benchmarks work).
    pub threaded: bool,
    /// Connection table size and timeouts.
    pub conntrack: crate::conntrack::CtConfig,
    /// Service load balancing (zone, Maglev size).
    pub services: crate::services::realize::ServicesConfig,
    /// The XDP program of AF_XDP ports of kind `uplink` (`[uplink]` in the
    /// daemon's TOML): by default the filter that takes only VXLAN and NodePort
    /// traffic to the node's addresses (port/xdp_filter.rs). Other kinds always
    /// run libxdp's redirect-everything program.
    pub uplink_xdp: port::XdpProgram,
    /// Audit log of connections NetworkPolicy denied: events per second per worker
    /// (0: off). See [`crate::policy::audit`].
    pub policy_audit_per_s: u32,
    /// Non-uplink AF_XDP ports run the in-kernel XDP fast path for cached L2
    /// decisions (`[datapath] xdp_fastpath`, `--xdp-fastpath`; port/fastpath.rs).
    pub xdp_fastpath: bool,
}

impl Default for DatapathConfig {
    fn default() -> Self {
        DatapathConfig {
            workers: vec![None],
            pool_frames: 16384,
            mac_aging: crate::bridge::DEFAULT_AGING,
            mac_capacity: crate::bridge::DEFAULT_CAPACITY,
            idle_spin: Duration::from_micros(200),
            max_sleep: Duration::from_millis(10),
            use_umem: true,
            threaded: true,
            conntrack: crate::conntrack::CtConfig::default(),
            services: crate::services::realize::ServicesConfig::default(),
            uplink_xdp: port::XdpProgram::Filter(Default::default()),
            policy_audit_per_s: 0,
            xdp_fastpath: false,
        }
    }
}

impl DatapathConfig {
    /// In-process configuration for tests and benchmarks: memory pools, no threads.
    pub fn in_process(workers: usize) -> DatapathConfig {
        DatapathConfig {
            workers: vec![None; workers.max(1)],
            pool_frames: 4096,
            use_umem: false,
            threaded: false,
            ..DatapathConfig::default()
        }
    }
}

struct WorkerHandle {
    core: Option<usize>,
    commands: Sender<WorkerCmd>,
    waker: Arc<Waker>,
    counters: Arc<WorkerCounters>,
    cache_counters: Arc<CacheCounters>,
    umem: Option<UmemHandle>,
    /// Keeps the UMEM bindable whatever ports come and go; dropped after the worker.
    anchor: Option<UmemAnchor>,
    thread: Option<JoinHandle<()>>,
    /// The worker itself when not threaded.
    inline: Option<Worker>,
    ports: usize,
}

struct PortRecord {
    info: PortInfo,
    counters: Arc<PortCounters>,
    /// The uplink filter's parameters and the node addresses last written to it.
    filter: Option<(Arc<port::xdp_filter::FilterHandle>, Vec<std::net::Ipv4Addr>)>,
    /// The port runs the fast-path program (whether or not it is in `tx_ports`
    /// now: that follows the kernel's `NDO_XMIT` feature of the interface).
    fp_eligible: bool,
}

/// What `check_links` found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LinkChanges {
    /// Pod ports removed because their interface vanished.
    pub removed: Vec<String>,
    /// Uplink/gateway ports that went down (interface vanished).
    pub down: Vec<String>,
    /// Uplink/gateway ports attached again.
    pub up: Vec<String>,
}

pub struct Datapath {
    cfg: DatapathConfig,
    workers: Vec<WorkerHandle>,
    ports: BTreeMap<String, PortRecord>,
    snapshot: SharedSnapshot,
    ports_vanished: u64,
    flows: FlowTables,
    epoch: Instant,
    /// NetworkPolicy engine shared with the workers (the policy realizer publishes).
    policy: crate::policy::SharedEngine,
    conntrack: Arc<crate::conntrack::Conntrack>,
    services: crate::services::SharedLb,
    tunnel: Arc<crate::overlay::TunnelParams>,
    capture: Arc<crate::capture::Tap>,
    /// The in-kernel fast path's shared maps and epoch (`xdp_fastpath`).
    fastpath: Option<Arc<port::fastpath::FastPath>>,
    /// What the fast path's entries were computed from, last time we looked: a
    /// change bumps the epoch ([`Datapath::fastpath_sync`]).
    fp_state: FpState,
}

/// Fingerprint of the state cached forwarding decisions depend on.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct FpState {
    flows_version: u64,
    snapshot: u64,
    policy: usize,
    services: usize,
    tunnel: crate::overlay::TunnelConfig,
    capture: bool,
}

fn err(code: ErrorCode, msg: impl Into<String>) -> ErrorReply {
    ErrorReply::new(code, msg)
}

impl Datapath {
    pub fn new(cfg: DatapathConfig) -> std::io::Result<Datapath> {
        let n = cfg.workers.len().max(1);
        let snapshot: SharedSnapshot = Arc::new(ArcSwap::from_pointee(Snapshot::default()));
        let epoch = Instant::now();
        let policy = crate::policy::shared();
        let wakers: Vec<Arc<Waker>> = (0..n)
            .map(|_| Waker::new().map(Arc::new))
            .collect::<Result<_, _>>()?;

        // Hand-off channels for every ordered pair of workers.
        let mut outs: Vec<Vec<Option<HandoffTx>>> =
            (0..n).map(|_| (0..n).map(|_| None).collect()).collect();
        let mut ins: Vec<Vec<HandoffRx>> = (0..n).map(|_| Vec::new()).collect();
        for (from, out) in outs.iter_mut().enumerate() {
            for (to, slot) in out.iter_mut().enumerate() {
                if from != to {
                    let (tx, rx) = handoff::handoff();
                    *slot = Some(tx);
                    ins[to].push(rx);
                }
            }
        }
        let learn: Vec<_> = (0..n).map(|_| bounded(LEARN_DEPTH)).collect();
        let conntrack = Arc::new(crate::conntrack::Conntrack::new(cfg.conntrack));
        let services = crate::services::lb::new_shared();
        let tunnel = Arc::new(crate::overlay::TunnelParams::new(
            crate::overlay::TunnelConfig::default(),
        ));
        let capture = Arc::new(crate::capture::Tap::default());
        let fastpath = if cfg.xdp_fastpath && cfg.use_umem {
            let fp = port::fastpath::FastPath::new()
                .map_err(|e| std::io::Error::other(format!("XDP fast path: {e}")))?;
            tracing::info!("XDP fast path enabled for non-uplink AF_XDP ports");
            Some(Arc::new(fp))
        } else {
            None
        };
        let (mut flows, reader): (FlowTables, PipelineReader) = FlowTables::new();
        // A new switch is a learning bridge: the skeleton chains the tables the
        // features use and ends in NORMAL (see flow::layout).
        let skeleton = crate::flow::layout::skeleton()
            .into_iter()
            .map(FlowMod::Add)
            .collect();
        if let Err(e) = flows.apply(skeleton, 0) {
            tracing::error!(error = %e, "cannot install the default bridge flow");
        }

        let mut workers = Vec::with_capacity(n);
        for (id, (out, inn)) in outs.into_iter().zip(ins).enumerate() {
            let core = cfg.workers.get(id).copied().flatten();
            let pool = if cfg.use_umem {
                FramePool::umem(cfg.pool_frames).unwrap_or_else(|e| {
                    tracing::warn!(worker = id, error = %e, "no AF_XDP UMEM; ports of this worker use packet mode");
                    FramePool::heap(cfg.pool_frames)
                })
            } else {
                FramePool::heap(cfg.pool_frames)
            };
            let umem = pool.umem_handle();
            let anchor = umem.as_ref().and_then(|u| {
                UmemAnchor::create(u, id)
                    .inspect_err(|e| tracing::warn!(worker = id, error = %e, "no UMEM anchor; AF_XDP ports may fail once the first is removed"))
                    .ok()
            });
            let (cmd_tx, cmd_rx) = unbounded();
            let counters = Arc::new(WorkerCounters::default());
            let cache_counters = Arc::new(CacheCounters::default());
            let links = WorkerLinks {
                policy: policy.clone(),
                capture: capture.clone(),
                fastpath: fastpath.clone(),
                pipeline: reader.clone(),
                conntrack: conntrack.clone(),
                services: services.clone(),
                cache_config: CacheConfig::default(),
                cache_counters: cache_counters.clone(),
                tunnel: tunnel.clone(),
                snapshot: snapshot.clone(),
                commands: cmd_rx,
                waker: wakers[id].clone(),
                counters: counters.clone(),
                handoff_out: out,
                peer_wakers: wakers.clone(),
                handoff_in: inn,
                learn: LearnPeers {
                    to_peers: learn
                        .iter()
                        .enumerate()
                        .filter(|(j, _)| *j != id)
                        .map(|(_, (tx, _))| tx.clone())
                        .collect(),
                    from_peers: learn[id].1.clone(),
                },
            };
            let wcfg = WorkerConfig {
                id,
                core,
                mac_aging: cfg.mac_aging,
                mac_capacity: cfg.mac_capacity,
                idle_spin: cfg.idle_spin,
                max_sleep: cfg.max_sleep,
                policy_audit_per_s: cfg.policy_audit_per_s,
            };
            let worker = Worker::new(wcfg, pool, links, epoch);
            let (thread, inline) = if cfg.threaded {
                let t = std::thread::Builder::new()
                    .name(format!("pmd{id}"))
                    .spawn(move || worker.run())?;
                (Some(t), None)
            } else {
                (None, Some(worker))
            };
            workers.push(WorkerHandle {
                core,
                commands: cmd_tx,
                waker: wakers[id].clone(),
                counters,
                cache_counters,
                umem,
                anchor,
                thread,
                inline,
                ports: 0,
            });
        }
        Ok(Datapath {
            cfg,
            workers,
            ports: BTreeMap::new(),
            snapshot,
            ports_vanished: 0,
            flows,
            epoch,
            policy,
            conntrack,
            services,
            tunnel,
            capture,
            fastpath,
            fp_state: FpState::default(),
        })
    }

    /// The in-kernel fast path, when enabled.
    pub fn fastpath(&self) -> Option<&Arc<port::fastpath::FastPath>> {
        self.fastpath.as_ref()
    }

    /// Makes every decision the kernel cached stale (no-op without the fast path).
    pub fn fastpath_invalidate(&mut self) {
        if let Some(fp) = &self.fastpath {
            fp.invalidate();
            self.fp_state = self.fp_fingerprint();
        }
    }

    fn fp_fingerprint(&self) -> FpState {
        FpState {
            flows_version: self.flows_version(),
            snapshot: self.snapshot.load().generation,
            policy: Arc::as_ptr(&self.policy.load_full()) as usize,
            services: Arc::as_ptr(&self.services.load_full()) as usize,
            tunnel: self.tunnel.get(),
            capture: self.capture.armed(),
        }
    }

    /// Bumps the fast path's epoch if anything its entries depend on changed
    /// since the last look: flows, ports, policy, services, tunnel, capture. The
    /// daemon calls it after every control request (before the reply) and tick.
    pub fn fastpath_sync(&mut self) {
        if self.fastpath.is_none() {
            return;
        }
        if self.fp_fingerprint() != self.fp_state {
            self.fastpath_invalidate();
        }
    }

    /// The NetworkPolicy engine workers evaluate `policy(DIR)` against.
    pub fn policy_engine(&self) -> &crate::policy::SharedEngine {
        &self.policy
    }

    /// The packet capture tap all workers check.
    pub fn capture_tap(&self) -> &Arc<crate::capture::Tap> {
        &self.capture
    }

    /// Nanoseconds since the datapath started (the clock of flow timeouts).
    pub fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Applies a bundle of flow and group changes atomically (all or nothing).
    /// The tunnel settings every worker reads (set by the overlay realizer).
    pub fn tunnel(&self) -> &crate::overlay::TunnelParams {
        &self.tunnel
    }

    pub fn flow_mods(&mut self, mods: Vec<FlowMod>) -> Result<BundleOutcome, BundleError> {
        let now = self.now_ns();
        let r = self.flows.apply(mods, now);
        // Published: the kernel must not act on a decision made before.
        self.fastpath_sync();
        r
    }

    /// The connection table the workers share.
    pub fn conntrack(&self) -> &crate::conntrack::Conntrack {
        &self.conntrack
    }

    /// The service frontends workers load-balance with now.
    pub fn services(&self) -> Arc<crate::services::LbTable> {
        self.services.load_full()
    }

    /// Publishes a new frontend map (workers pick it up on their next packet).
    pub fn publish_services(&mut self, t: crate::services::LbTable) {
        self.services.store(Arc::new(t));
        self.fastpath_sync();
    }

    /// Makes every worker push the hits its caches owe to flows, so counters read
    /// next are exact (otherwise they lag by up to the housekeeping interval).
    pub fn flush_flow_stats(&mut self) {
        let mut waits = Vec::new();
        for w in &mut self.workers {
            if let Some(inline) = &mut w.inline {
                inline.flush_flow_stats();
                continue;
            }
            let (tx, rx) = bounded(1);
            if w.commands.send(WorkerCmd::FlushStats { done: tx }).is_ok() {
                w.waker.wake();
                waits.push(rx);
            }
        }
        for rx in waits {
            let _ = rx.recv_timeout(Duration::from_millis(200));
        }
    }

    /// Flows the filter selects, by table and priority.
    pub fn dump_flows(&self, filter: &FlowFilter) -> Vec<Arc<Rule>> {
        self.flows.dump(filter)
    }

    /// Whether the flow `spec` names (table, match, priority) is installed with
    /// `spec`'s cookie: one classifier lookup, whatever the number of flows.
    pub fn has_flow(&self, spec: &crate::flow::spec::FlowSpec) -> bool {
        self.flows
            .read(|p| {
                p.tables
                    .get(usize::from(spec.table))
                    .and_then(|t| t.get(&spec.m, spec.priority))
                    .is_some_and(|r| r.spec.cookie == spec.cookie)
            })
            .unwrap_or(false)
    }

    pub fn groups(&self) -> Vec<Arc<GroupSpec>> {
        self.flows.groups()
    }

    /// Number of flows per table (index = table).
    pub fn flow_counts(&self) -> Vec<usize> {
        self.flows
            .read(|p| p.tables.iter().map(|t| t.len()).collect())
            .unwrap_or_default()
    }

    /// The version of the flow tables (bumped by every bundle that changed them).
    pub fn flows_version(&self) -> u64 {
        self.flows.version()
    }

    /// Removes flows whose timeouts ran out; call about once a second.
    pub fn expire_flows(&mut self) -> usize {
        let now = self.now_ns();
        self.flows.expire(now)
    }

    /// Runs the slow path for `key` with a trace, and asks every worker whether its
    /// caches would have answered.
    pub fn trace(&mut self, key: &Key) -> (Translation, Trace, Vec<Probe>) {
        let mut trace = Trace::default();
        let tr = self
            .flows
            .read(|p| xlate::translate(p, key, Some(&mut trace)))
            .unwrap_or_else(|| Translation {
                actions: Vec::new(),
                consulted: Key::ZERO,
                tables: 0,
                rules: Vec::new(),
                built_at: 0,
                error: Some("pipeline unavailable".into()),
            });
        let mut probes = Vec::new();
        for w in &mut self.workers {
            if let Some(inline) = &mut w.inline {
                probes.push(inline.probe(key));
                continue;
            }
            let (tx, rx) = bounded(1);
            let _ = w.commands.send(WorkerCmd::Probe {
                key: Box::new(*key),
                reply: tx,
            });
            w.waker.wake();
            probes.push(rx.recv_timeout(DEL_TIMEOUT).unwrap_or_default());
        }
        (tr, trace, probes)
    }

    /// Port number of an attached or configured port, by interface name.
    pub fn port_no(&self, name: &str) -> Option<u32> {
        self.ports.get(name).map(|r| r.info.port_no)
    }

    /// Interface name of a port number.
    pub fn port_name(&self, port_no: u32) -> Option<String> {
        self.ports
            .values()
            .find(|r| r.info.port_no == port_no)
            .map(|r| r.info.name.clone())
    }

    pub fn config(&self) -> &DatapathConfig {
        &self.cfg
    }

    /// Attaches interface `p.name` (in this process's network namespace).
    pub fn add_port(&mut self, p: &AddPortParams) -> Result<PortInfo, ErrorReply> {
        netdev::validate_name(&p.name).map_err(|m| err(ErrorCode::InvalidParams, m))?;
        if p.mode == PortMode::Memory {
            return Err(err(
                ErrorCode::InvalidParams,
                "mode 'memory' exists only in-process",
            ));
        }
        if let Some(rec) = self.ports.get(&p.name) {
            // Adding what is already there is a no-op (like `ovs-vsctl --may-exist
            // add-port`): a restarted switch restores its ports before its clients
            // re-add them, and a CNI ADD may be retried.
            let i = &rec.info;
            let same = i.kind == p.kind && i.requested_mode == p.mode && i.state == PortState::Up;
            if same && netdev::ifindex(&p.name) == Some(i.ifindex) {
                return Ok(i.clone());
            }
            return Err(err(
                ErrorCode::Exists,
                format!(
                    "port '{}' exists already (kind {}, mode {}, {:?})",
                    p.name, i.kind, i.requested_mode, i.state
                ),
            ));
        }
        let w = self.least_loaded_worker();
        let port_no = self.free_port_no();
        let prog = if p.kind == PortKind::Uplink {
            // With the fast path, the uplink's filter also decapsulates in XDP.
            match (&self.cfg.uplink_xdp, &self.fastpath) {
                (port::XdpProgram::Filter(f), Some(fp)) => {
                    port::XdpProgram::FilterFastPath(*f, fp.clone())
                }
                (x, _) => x.clone(),
            }
        } else if let Some(fp) = &self.fastpath {
            port::XdpProgram::FastPath(fp.clone())
        } else {
            port::XdpProgram::RedirectAll
        };
        let (port, att, tried) = port::open_with_fallback(
            &p.name,
            p.mode,
            self.workers[w].umem.as_ref(),
            port_no,
            &prog,
        )
        .map_err(|e| match e {
            PortError::NoSuchInterface(_) => err(ErrorCode::Failed, e.to_string()),
            other => err(
                ErrorCode::Failed,
                format!("cannot attach '{}': {other}", p.name),
            ),
        })?;
        if !tried.is_empty() {
            tracing::info!(port = %p.name, chosen = %att.mode, fell_back_from = ?tried, "auto mode fallback");
        }
        let mut info = self.install(&p.name, p.kind, p.mode, port_no, w, port, att);
        if p.pod.is_some() {
            info.pod = p.pod.clone();
            if let Some(rec) = self.ports.get_mut(&p.name) {
                rec.info.pod = p.pod.clone();
            }
        }
        Ok(info)
    }

    /// Names the pod a port belongs to (memory ports in tests; `add_port` takes it
    /// from its parameters).
    pub fn set_port_pod(
        &mut self,
        name: &str,
        pod: Option<vswitch_proto::PodRef>,
    ) -> Option<PortInfo> {
        let rec = self.ports.get_mut(name)?;
        rec.info.pod = pod;
        Some(rec.info.clone())
    }

    /// Attaches an in-process memory port (tests and benchmarks).
    pub fn add_memory_port(
        &mut self,
        name: &str,
        kind: PortKind,
        port: MemoryPort,
    ) -> Result<PortInfo, ErrorReply> {
        if self.ports.contains_key(name) {
            return Err(err(
                ErrorCode::Exists,
                format!("port '{name}' exists already"),
            ));
        }
        let w = self.least_loaded_worker();
        self.add_memory_port_on(name, kind, port, w)
    }

    /// Attaches a memory port to a chosen worker (tests of cross-worker paths).
    pub fn add_memory_port_on(
        &mut self,
        name: &str,
        kind: PortKind,
        port: MemoryPort,
        worker: usize,
    ) -> Result<PortInfo, ErrorReply> {
        if worker >= self.workers.len() {
            return Err(err(ErrorCode::InvalidParams, format!("no worker {worker}")));
        }
        let port_no = self.free_port_no();
        let att = PortAttachment {
            filter: None,
            mode: PortMode::Memory,
            zero_copy: false,
            ifindex: 0,
            mac: [0; 6],
            mtu: 1500,
        };
        Ok(self.install(
            name,
            kind,
            PortMode::Memory,
            port_no,
            worker,
            Box::new(port),
            att,
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn install(
        &mut self,
        name: &str,
        kind: PortKind,
        requested: PortMode,
        port_no: u32,
        w: usize,
        port: Box<dyn Port>,
        att: PortAttachment,
    ) -> PortInfo {
        let counters = Arc::new(PortCounters::default());
        let filter = att.filter.clone().map(|h| {
            let ips = netdev::ipv4_addrs(name, port::xdp_filter::MAX_NODE_IPS);
            tracing::info!(port = name, prog = h.prog_id(), params = ?h.params(), node_ips = ?ips, "uplink XDP filter attached");
            (h, ips)
        });
        let wh = &mut self.workers[w];
        // The worker owns the socket from here on; the control thread keeps only
        // the counters (read-only) and the description.
        let _ = wh.commands.send(WorkerCmd::AddPort {
            port_no,
            port,
            counters: counters.clone(),
        });
        wh.waker.wake();
        wh.ports += 1;
        // An AF_XDP pod/gateway port opened while the fast path is on runs its
        // program: the kernel may redirect to it from now on.
        // A reused port number starts from zero in the kernel's counters too.
        if let Some(fp) = &self.fastpath {
            fp.clear_port_stats(port_no);
        }
        // An uplink takes part (tunnel encap redirects to it, decap runs in its
        // filter) when its filter shares the fast path's maps.
        let fp_eligible = self.fastpath.is_some()
            && (kind != PortKind::Uplink || att.filter.is_some())
            && matches!(att.mode, PortMode::XdpDrv | PortMode::XdpSkb)
            && port_no < port::fastpath::MAX_PORTS;
        let fastpath = fp_eligible && self.fastpath_capable(name, att.ifindex);
        let route = PortRoute {
            port_no,
            worker: w,
            kind,
            max_frame: att.mtu + 18,
            ifindex: att.ifindex,
            fastpath,
            fp_ingress: fp_eligible,
        };
        let next = self.snapshot.load().with_port(route);
        self.snapshot.store(Arc::new(next));
        self.fastpath_sync();
        let info = PortInfo {
            name: name.to_string(),
            port_no,
            kind,
            requested_mode: requested,
            mode: att.mode,
            zero_copy: att.zero_copy,
            worker: w,
            ifindex: att.ifindex,
            mac: crate::wire::MacAddr(att.mac).to_string(),
            mtu: att.mtu,
            state: PortState::Up,
            pod: None,
        };
        self.ports.insert(
            name.to_string(),
            PortRecord {
                info: info.clone(),
                counters,
                filter,
                fp_eligible,
            },
        );
        self.kick_inline();
        tracing::info!(port = name, port_no, mode = %att.mode, worker = w, "port added");
        info
    }

    /// Detaches a port: it leaves the routing snapshot first (no worker sends to it
    /// any more), then its worker closes the socket, which detaches XDP.
    pub fn del_port(&mut self, name: &str) -> Result<(), ErrorReply> {
        let rec = self
            .ports
            .remove(name)
            .ok_or_else(|| err(ErrorCode::NotFound, format!("no port named '{name}'")))?;
        if rec.info.state == PortState::Up {
            self.detach(&rec.info);
        }
        tracing::info!(port = name, "port deleted");
        Ok(())
    }

    fn detach(&mut self, info: &PortInfo) {
        // The kernel stops redirecting to it first, then every cached decision
        // that named it goes stale.
        if let Some(fp) = &self.fastpath
            && let Some(route) = self.snapshot.load().port(info.port_no)
            && route.fastpath
        {
            fp.del_tx_port(route.ifindex);
        }
        let next = self.snapshot.load().without_port(info.port_no);
        self.snapshot.store(Arc::new(next));
        self.fastpath_sync();
        let wh = &mut self.workers[info.worker];
        wh.ports = wh.ports.saturating_sub(1);
        let (done_tx, done_rx) = bounded(1);
        let _ = wh.commands.send(WorkerCmd::DelPort {
            port_no: info.port_no,
            done: done_tx,
        });
        wh.waker.wake();
        if let Some(w) = wh.inline.as_mut() {
            w.run_once();
        }
        if done_rx.recv_timeout(DEL_TIMEOUT).is_err() {
            tracing::error!(port = %info.name, "worker did not release the port in time");
        }
    }

    pub fn ports(&self) -> Vec<PortInfo> {
        let mut v: Vec<PortInfo> = self.ports.values().map(|r| r.info.clone()).collect();
        v.sort_by_key(|p| p.port_no);
        v
    }

    pub fn port(&self, name: &str) -> Option<PortInfo> {
        self.ports.get(name).map(|r| r.info.clone())
    }

    pub fn stats(&self, port: Option<&str>) -> Result<StatsReply, ErrorReply> {
        let mut ports: Vec<_> = match port {
            Some(name) => {
                let r = self
                    .ports
                    .get(name)
                    .ok_or_else(|| err(ErrorCode::NotFound, format!("no port named '{name}'")))?;
                vec![r.counters.read(name, r.info.port_no)]
            }
            None => self
                .ports
                .iter()
                .map(|(n, r)| r.counters.read(n, r.info.port_no))
                .collect(),
        };
        if let Some(fp) = &self.fastpath {
            // Every port's slot is zeroed when it is added; one taken off the fast
            // path keeps what the kernel forwarded for it before.
            for p in ports.iter_mut() {
                let s = fp.port_stats(p.port_no);
                p.rx_packets += s.rx_packets;
                p.rx_bytes += s.rx_bytes;
                p.tx_packets += s.tx_packets;
                p.tx_bytes += s.tx_bytes;
                p.fastpath_rx_packets = s.rx_packets;
                p.fastpath_tx_packets = s.tx_packets;
            }
        }
        ports.sort_by_key(|p| p.port_no);
        let mut switch = SwitchStats {
            mac_capacity: self.cfg.mac_capacity as u64,
            ports_vanished: self.ports_vanished,
            ..SwitchStats::default()
        };
        let mut workers = Vec::new();
        for (id, w) in self.workers.iter().enumerate() {
            w.counters.add_to(&mut switch);
            let mut ws = w.counters.read(id, w.core);
            ws.cache = w.cache_counters.read();
            let c = &mut switch.cache;
            c.emc_hits += ws.cache.emc_hits;
            c.megaflow_hits += ws.cache.megaflow_hits;
            c.misses += ws.cache.misses;
            c.revalidated += ws.cache.revalidated;
            c.megaflows += ws.cache.megaflows;
            workers.push(ws);
        }
        let mut per_table: Vec<u64> = self.flow_counts().into_iter().map(|n| n as u64).collect();
        while per_table.last() == Some(&0) {
            per_table.pop();
        }
        switch.flows_per_table = per_table;
        switch.flows_version = self.flows_version();
        switch.conntrack = crate::svcctl::ct_stats(&self.conntrack.table);
        if let Some(fp) = &self.fastpath {
            let l = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
            switch.fastpath_installs = l(&fp.counters.installs);
            switch.fastpath_invalidations = l(&fp.counters.invalidations);
            switch.fastpath_ports_disabled = l(&fp.counters.ports_disabled);
        }
        Ok(StatsReply {
            ports,
            switch,
            workers,
        })
    }

    /// Notices interfaces that vanished (pod deleted) or came back. Pod ports are
    /// removed for good; uplink and gateway ports go down and are re-attached when
    /// their interface reappears. Call about once a second.
    pub fn check_links(&mut self) -> LinkChanges {
        let mut ch = LinkChanges::default();
        let names: Vec<String> = self.ports.keys().cloned().collect();
        for name in names {
            let Some(rec) = self.ports.get(&name) else {
                continue;
            };
            let info = rec.info.clone();
            if info.mode == PortMode::Memory {
                continue;
            }
            let now = netdev::ifindex(&name);
            match info.state {
                PortState::Up if now != Some(info.ifindex) => {
                    self.ports_vanished += 1;
                    tracing::warn!(port = %name, kind = %info.kind, "interface vanished");
                    self.detach(&info);
                    if info.kind == PortKind::Pod {
                        self.ports.remove(&name);
                        ch.removed.push(name);
                    } else if let Some(r) = self.ports.get_mut(&name) {
                        r.info.state = PortState::Down;
                        r.info.ifindex = 0;
                        ch.down.push(name);
                    }
                }
                PortState::Down if now.is_some() => {
                    self.ports.remove(&name);
                    let p = AddPortParams {
                        name: name.clone(),
                        kind: info.kind,
                        mode: info.requested_mode,
                        pod: info.pod.clone(),
                    };
                    match self.add_port(&p) {
                        Ok(_) => ch.up.push(name),
                        Err(e) => {
                            tracing::warn!(port = %name, error = %e, "re-attach failed; will retry");
                            self.insert_down(info);
                        }
                    }
                }
                _ => {}
            }
        }
        self.refresh_uplink_filters();
        self.watch_fastpath_ports();
        ch
    }

    /// Whether the kernel accepts redirected XDP frames on `ifindex` now, and if
    /// so puts it into the fast path's `tx_ports` (removes it otherwise).
    fn fastpath_capable(&self, name: &str, ifindex: u32) -> bool {
        let Some(fp) = &self.fastpath else {
            return false;
        };
        // A kernel that cannot tell (no netdev netlink family) gets the benefit of
        // the doubt: the CNI plugin turns GRO on at the pod end.
        let capable = match port::fastpath::accepts_redirects(ifindex) {
            Ok(c) => c.unwrap_or(true),
            Err(e) => {
                tracing::debug!(port = name, error = %e, "XDP fast path: cannot read xdp-features");
                true
            }
        };
        if !capable {
            fp.del_tx_port(ifindex);
            return false;
        }
        match fp.add_tx_port(ifindex) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(port = name, error = %e, "XDP fast path: cannot add the port to tx_ports; its frames take the slow path");
                false
            }
        }
    }

    /// The fast path's safety net, once a second: a port whose interface stops
    /// accepting redirected XDP frames (a veth whose peer has no NAPI: no XDP
    /// program and GRO off; the kernel would drop every redirected frame) is taken
    /// out of `tx_ports` and the cached decisions invalidated, so its traffic goes
    /// through the switch; it is put back when the interface accepts them again.
    /// Each removal is counted (`fastpath_ports_disabled`) and logged.
    fn watch_fastpath_ports(&mut self) {
        let Some(fp) = self.fastpath.clone() else {
            return;
        };
        let snap0 = self.snapshot.load_full();
        let mut snap = (*snap0).clone();
        let mut changed = false;
        for (name, rec) in &self.ports {
            if !rec.fp_eligible || rec.info.state != PortState::Up {
                continue;
            }
            let Some(Some(route)) = snap.ports.get(rec.info.port_no as usize) else {
                continue;
            };
            let was = route.fastpath;
            let now = self.fastpath_capable(name, route.ifindex);
            if was == now {
                continue;
            }
            if was {
                fp.counters
                    .ports_disabled
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(
                    port = %name,
                    "XDP fast path: the interface no longer accepts redirected frames (its veth \
                     peer needs GRO on or an XDP program); taking it off the fast path"
                );
            } else {
                tracing::info!(port = %name, "XDP fast path: the interface accepts redirected frames; port back on the fast path");
            }
            if let Some(Some(r)) = snap.ports.get_mut(rec.info.port_no as usize) {
                r.fastpath = now;
                changed = true;
            }
        }
        if changed {
            snap.generation += 1;
            self.snapshot.store(Arc::new(snap));
            self.fastpath_sync();
        }
    }

    /// Writes the uplinks' current IPv4 addresses into their filter programs when
    /// they changed (an address added to or removed from the node's NIC).
    fn refresh_uplink_filters(&mut self) {
        for (name, rec) in self.ports.iter_mut() {
            let Some((handle, ips)) = rec.filter.as_mut() else {
                continue;
            };
            if rec.info.state != PortState::Up {
                continue;
            }
            let now = netdev::ipv4_addrs(name, port::xdp_filter::MAX_NODE_IPS);
            if now == *ips {
                continue;
            }
            match handle.set_node_ips(&now) {
                Ok(()) => {
                    tracing::info!(port = %name, node_ips = ?now, "uplink filter: node addresses changed");
                    *ips = now;
                }
                Err(e) => {
                    tracing::warn!(port = %name, error = %e, "uplink filter: cannot update node addresses")
                }
            }
        }
    }

    /// Records an uplink/gateway port whose interface is missing (e.g. at restart):
    /// it is attached as soon as the interface appears.
    pub fn add_down_port(&mut self, p: &AddPortParams) -> Result<PortInfo, ErrorReply> {
        if self.ports.contains_key(&p.name) {
            return Err(err(
                ErrorCode::Exists,
                format!("port '{}' exists already", p.name),
            ));
        }
        let info = PortInfo {
            name: p.name.clone(),
            port_no: self.free_port_no(),
            kind: p.kind,
            requested_mode: p.mode,
            mode: p.mode,
            zero_copy: false,
            worker: 0,
            ifindex: 0,
            mac: crate::wire::MacAddr::default().to_string(),
            mtu: 0,
            state: PortState::Down,
            pod: p.pod.clone(),
        };
        self.insert_down(info.clone());
        Ok(info)
    }

    fn insert_down(&mut self, mut info: PortInfo) {
        info.state = PortState::Down;
        info.ifindex = 0;
        self.ports.insert(
            info.name.clone(),
            PortRecord {
                info,
                counters: Arc::default(),
                filter: None,
                fp_eligible: false,
            },
        );
    }

    /// Runs one iteration of every in-process worker (no-op when threaded).
    pub fn run_once(&mut self) -> usize {
        self.workers
            .iter_mut()
            .filter_map(|w| w.inline.as_mut())
            .map(Worker::run_once)
            .sum()
    }

    /// The in-process worker `id` (tests inspect pools and MAC tables).
    pub fn inline_worker(&self, id: usize) -> Option<&Worker> {
        self.workers.get(id).and_then(|w| w.inline.as_ref())
    }

    fn kick_inline(&mut self) {
        for w in self.workers.iter_mut() {
            if let Some(w) = w.inline.as_mut() {
                w.run_once();
            }
        }
    }

    fn least_loaded_worker(&self) -> usize {
        self.workers
            .iter()
            .enumerate()
            .min_by_key(|(_, w)| w.ports)
            .map(|(i, _)| i)
            .unwrap_or(0)
    }

    /// Lowest unused port number, starting at 1 (0 is never a port, like OpenFlow's
    /// reserved numbers start high and ofport 0 is invalid).
    fn free_port_no(&self) -> u32 {
        let used: std::collections::BTreeSet<u32> =
            self.ports.values().map(|r| r.info.port_no).collect();
        (1..).find(|n| !used.contains(n)).unwrap_or(u32::MAX)
    }

    /// Stops the workers; every socket is closed and every XDP program detached
    /// before this returns.
    pub fn shutdown(&mut self) {
        for w in &self.workers {
            let _ = w.commands.send(WorkerCmd::Stop);
            w.waker.wake();
        }
        for w in &mut self.workers {
            if let Some(t) = w.thread.take() {
                let _ = t.join();
            }
            if let Some(mut inline) = w.inline.take() {
                inline.run_once();
                drop(inline);
            }
            drop(w.anchor.take());
        }
    }
}

impl Drop for Datapath {
    fn drop(&mut self) {
        self.shutdown();
    }
}

//! `vswitch-bench run`: topology, DUT, lanes, then the trials the scenario asks
//! for (repeats per sweep point, or an RFC 2544 search per point), a live progress
//! line, and the report.

use crate::dut::Dut;
use crate::engine::{Endpoint, EnginePref, Lane, LaneSpec, Live, Times, TrialCmd, mono_ns};
use crate::report::{
    Environment, Latency, Point, Report, Sample, SearchResult, Trial, new_histogram, summarise,
};
use crate::scenario::{Scenario, Topology};
use crate::search::{Outcome, SearchConfig, search};
use crate::topo::{BuildOpts, Built, Names, if_mac, sweep_stale};
use crate::traffic::TrafficSpec;
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The error text of a run stopped by SIGINT/SIGTERM (main exits 130 on it).
pub const INTERRUPTED: &str = "interrupted";

#[derive(Debug, Clone, Default)]
pub struct RunOpts {
    pub json: Option<PathBuf>,
    pub plots: Vec<PathBuf>,
    /// No progress line and no per-trial lines.
    pub quiet: bool,
}

/// Stops the run on SIGINT/SIGTERM: the flag is checked by every loop, and the
/// session's drop order then closes sockets, stops the DUT, removes namespaces.
pub fn stop_flag() -> Result<Arc<AtomicBool>, String> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())
            .map_err(|e| format!("signal handler: {e}"))?;
    }
    Ok(stop)
}

/// Everything a run holds. Fields drop in order: lanes (sockets closed, XDP
/// detached), then the DUT (teardown, daemon stopped), then the namespaces.
pub struct Session {
    pub lanes: Vec<Lane>,
    pub dut: Option<Dut>,
    pub topo: Option<Built>,
    pub names: Names,
    pub stop: Arc<AtomicBool>,
    pub live: Arc<Live>,
    pub env: Environment,
    pb: ProgressBar,
    quiet: bool,
}

fn read_trim(p: &str) -> String {
    std::fs::read_to_string(p)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

impl Session {
    /// Builds or finds the topology, starts the DUT and the lanes.
    pub fn open(sc: &mut Scenario, stop: Arc<AtomicBool>, quiet: bool) -> Result<Session, String> {
        let (topo, names) = match &sc.topology {
            Topology::Build {
                prefix,
                dut_napi_cpu,
                napi_defer_hard_irqs,
                gro_flush_timeout_ns,
            } => {
                if !vswitch_suite::is_root() {
                    return Err(
                        "topology mode \"build\" needs root (namespaces, veths, XDP)".into(),
                    );
                }
                sweep_stale(prefix);
                let b = Built::new(&BuildOpts {
                    prefix: prefix.clone(),
                    gen_queues: sc.gen_cpus.len() as u32,
                    sink_queues: sc.sink_cpus.len() as u32,
                    dut_napi_cpu: *dut_napi_cpu,
                    napi_defer_hard_irqs: *napi_defer_hard_irqs,
                    gro_flush_timeout_ns: *gro_flush_timeout_ns,
                })?;
                let n = b.names.clone();
                (Some(b), n)
            }
            Topology::Existing {
                gen_ns,
                gen_if,
                sink_ns,
                sink_if,
                dut_ns,
                in_if,
                out_if,
            } => {
                let n = Names {
                    gen_ns: gen_ns.clone(),
                    dut_ns: dut_ns.clone(),
                    sink_ns: sink_ns.clone(),
                    gen_if: gen_if.clone(),
                    in_if: in_if.clone(),
                    out_if: out_if.clone(),
                    sink_if: sink_if.clone(),
                };
                if !sc.src_mac_given {
                    sc.traffic.src_mac = if_mac(n.gen_ns.as_deref(), &n.gen_if)?;
                }
                if !sc.dst_mac_given {
                    sc.traffic.dst_mac = if_mac(n.sink_ns.as_deref(), &n.sink_if)?;
                }
                (None, n)
            }
        };
        if stop.load(Ordering::Relaxed) {
            return Err(INTERRUPTED.into());
        }
        let dut = match &sc.dut {
            Some(spec) => {
                let mut vars: HashMap<&'static str, String> = HashMap::new();
                vars.insert("in_if", names.in_if.clone().unwrap_or_default());
                vars.insert("out_if", names.out_if.clone().unwrap_or_default());
                vars.insert("gen_ns", names.gen_ns.clone().unwrap_or_default());
                vars.insert("sink_ns", names.sink_ns.clone().unwrap_or_default());
                vars.insert("gen_if", names.gen_if.clone());
                vars.insert("sink_if", names.sink_if.clone());
                Some(Dut::start(spec, names.dut_ns.clone(), vars)?)
            }
            None => None,
        };
        if stop.load(Ordering::Relaxed) {
            return Err(INTERRUPTED.into());
        }

        // Lanes: one per generator CPU; a sink CPU that is also a generator CPU
        // shares that thread.
        let live = Arc::new(Live::default());
        let g = sc.gen_cpus.len();
        let mut specs: Vec<LaneSpec> = sc
            .gen_cpus
            .iter()
            .enumerate()
            .map(|(i, &cpu)| LaneSpec {
                lane: i,
                gen_lanes: g,
                cpu: Some(cpu),
                generator: Some(Endpoint {
                    netns: names.gen_ns.clone(),
                    ifname: names.gen_if.clone(),
                    queue: i as u32,
                }),
                sink: None,
                engine: sc.engine,
                sink_engine: sc.sink_engine,
                zero_copy: sc.zero_copy,
                announce_mac: None,
            })
            .collect();
        // The XDP sink counts on every CPU in the kernel: one lane holds it (the
        // first sink CPU's); AF_XDP sinks get a socket per sink CPU (queue j).
        let sink_lanes = if sc.sink_engine == EnginePref::Xdp {
            1
        } else {
            sc.sink_cpus.len()
        };
        for (j, &cpu) in sc.sink_cpus.iter().take(sink_lanes).enumerate() {
            let ep = Endpoint {
                netns: names.sink_ns.clone(),
                ifname: names.sink_if.clone(),
                queue: j as u32,
            };
            let announce = (j == 0).then_some(sc.traffic.dst_mac);
            match specs
                .iter_mut()
                .find(|s| s.cpu == Some(cpu) && s.sink.is_none())
            {
                Some(s) => {
                    s.sink = Some(ep);
                    s.announce_mac = announce;
                }
                None => specs.push(LaneSpec {
                    lane: g + j,
                    gen_lanes: g,
                    cpu: Some(cpu),
                    generator: None,
                    sink: Some(ep),
                    engine: sc.engine,
                    sink_engine: sc.sink_engine,
                    zero_copy: sc.zero_copy,
                    announce_mac: announce,
                }),
            }
        }
        let mut lanes = vec![];
        for s in specs {
            lanes.push(Lane::start(s, stop.clone(), live.clone())?);
        }
        let fallback = lanes.iter().find_map(|l| l.fallback.clone());
        if let Some(f) = &fallback {
            eprintln!("warning: {f}: rates will be far lower than with AF_XDP");
        }
        let env = Environment {
            host: read_trim("/proc/sys/kernel/hostname"),
            kernel: read_trim("/proc/sys/kernel/osrelease"),
            cpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0),
            gen_cpus: sc.gen_cpus.clone(),
            sink_cpus: sc.sink_cpus.clone(),
            gen_engine: lanes
                .iter()
                .find_map(|l| l.gen_engine.clone())
                .unwrap_or_default(),
            sink_engine: lanes
                .iter()
                .find_map(|l| l.sink_engine.clone())
                .unwrap_or_default(),
            fallback,
            topology: match &sc.topology {
                Topology::Build { .. } => "build".into(),
                Topology::Existing { .. } => "existing".into(),
            },
            interfaces: [
                Some(names.gen_if.clone()),
                names.in_if.clone(),
                names.out_if.clone(),
                Some(names.sink_if.clone()),
            ]
            .into_iter()
            .flatten()
            .collect(),
        };
        let pb = if quiet {
            ProgressBar::hidden()
        } else {
            ProgressBar::new(0)
        };
        pb.set_style(
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] trial {pos}/{len} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        Ok(Session {
            lanes,
            dut,
            topo,
            names,
            stop,
            live,
            env,
            pb,
            quiet,
        })
    }

    fn say(&self, s: &str) {
        if self.quiet {
            return;
        }
        if self.pb.is_hidden() {
            eprintln!("{s}");
        } else {
            self.pb.println(s);
        }
    }

    /// One trial: `warmup` then a `duration` window at `spec`'s rate.
    pub fn measure(
        &mut self,
        spec: &TrafficSpec,
        warmup: f64,
        duration: f64,
        drain: f64,
        repeat: u32,
        label: &str,
    ) -> Result<Trial, String> {
        let spec = Arc::new(spec.clone());
        let times = Times::plan(
            Duration::from_millis(50),
            Duration::from_secs_f64(warmup),
            Duration::from_secs_f64(duration),
            Duration::from_secs_f64(drain),
        );
        self.pb.inc_length(1);
        for l in &self.lanes {
            l.begin(TrialCmd {
                spec: spec.clone(),
                times,
            })?;
        }
        // Progress and the per-second series, from the lanes' live totals.
        let mut series = vec![];
        let mut last = (
            mono_ns(),
            self.live.sent.load(Ordering::Relaxed),
            self.live.received.load(Ordering::Relaxed),
        );
        let mut next_sample = times.t_start + 1_000_000_000;
        let mut sec: Option<(u64, u64, u64)> = None;
        loop {
            std::thread::sleep(Duration::from_millis(100));
            let now = mono_ns();
            let sent = self.live.sent.load(Ordering::Relaxed);
            let recv = self.live.received.load(Ordering::Relaxed);
            if now >= times.t_start && sec.is_none() {
                sec = Some((now, sent, recv));
            }
            if let Some(s0) = sec
                && now >= next_sample
                && now <= times.t_end + 100_000_000
            {
                let dt = (now - s0.0) as f64 / 1e9;
                if dt > 0.0 {
                    series.push(Sample {
                        t_s: (now.saturating_sub(times.t_start)) as f64 / 1e9,
                        offered_pps: sent.saturating_sub(s0.1) as f64 / dt,
                        delivered_pps: recv.saturating_sub(s0.2) as f64 / dt,
                    });
                }
                sec = Some((now, sent, recv));
                next_sample += 1_000_000_000;
            }
            let dt = (now - last.0) as f64 / 1e9;
            if dt >= 0.5 {
                let o = sent.saturating_sub(last.1) as f64 / dt;
                let d = recv.saturating_sub(last.2) as f64 / dt;
                let phase = if now < times.t0 {
                    "starting".to_string()
                } else if now < times.t_start {
                    "warm-up".to_string()
                } else if now < times.t_end {
                    format!(
                        "{:.0}/{:.0} s",
                        (now - times.t_start) as f64 / 1e9,
                        duration
                    )
                } else {
                    "draining".to_string()
                };
                self.pb.set_message(format!(
                    "{label} rep {repeat} | {phase} | offered {:.3} Mpps, delivered {:.3} Mpps",
                    o / 1e6,
                    d / 1e6
                ));
                last = (now, sent, recv);
            }
            self.pb.tick();
            if now >= times.sink_end || self.stop.load(Ordering::Relaxed) {
                break;
            }
        }
        let mut offered = 0;
        let mut delivered = 0;
        let (mut frames, mut foreign, mut reordered, mut bad, mut drops, mut errors) =
            (0, 0, 0, 0, 0, 0);
        let mut stalled_ns = 0u64;
        let mut hist = new_histogram();
        let mut failure = None;
        for l in &self.lanes {
            match l.finish() {
                Ok(r) => {
                    offered += r.offered;
                    stalled_ns += r.stalled_ns;
                    errors += r.tx_errors;
                    drops += r.sink_drops;
                    if let Some(s) = r.sink {
                        delivered += s.delivered;
                        frames += s.frames;
                        foreign += s.foreign;
                        reordered += s.reordered;
                        bad += s.bad;
                        let _ = hist.add(&s.hist);
                    }
                }
                Err(e) => failure = Some(e),
            }
        }
        self.pb.inc(1);
        if self.stop.load(Ordering::Relaxed) {
            return Err(INTERRUPTED.into());
        }
        if let Some(e) = failure {
            return Err(e);
        }
        if let Some(d) = self.dut.as_mut()
            && !d.alive()
        {
            return Err(format!("the DUT daemon died; its log:\n{}", d.log_tail()));
        }
        let window = duration;
        let offered_pps = offered as f64 / window;
        let delivered_pps = delivered as f64 / window;
        let loss_pct = if offered > 0 {
            (offered.saturating_sub(delivered)) as f64 / offered as f64 * 100.0
        } else {
            0.0
        };
        let latency = Latency::from_histogram(&hist);
        let t = Trial {
            point: point_of(&spec),
            repeat,
            window_s: window,
            offered,
            delivered,
            offered_pps,
            delivered_pps,
            loss_pct,
            delivered_bps: delivered_pps * spec.sizes.mean() * 8.0,
            sink_frames: frames,
            sink_foreign: foreign,
            reordered,
            bad_stamps: bad,
            rate_reached: spec.rate.map(|r| offered_pps >= 0.95 * r),
            stalled_ms: stalled_ns as f64 / 1e6,
            latency,
            series,
        };
        let lat = t
            .latency
            .as_ref()
            .map(|l| {
                format!(
                    " | latency p50 {:.1} p99 {:.1} p99.9 {:.1} max {:.1} us",
                    l.p50_us, l.p99_us, l.p999_us, l.max_us
                )
            })
            .unwrap_or_default();
        self.say(&format!(
            "{label} rep {repeat}: offered {:.3} Mpps, delivered {:.3} Mpps, loss {:.3}%{lat}",
            offered_pps / 1e6,
            delivered_pps / 1e6,
            loss_pct
        ));
        if drops > 0 {
            self.say(&format!(
                "  warning: the sink's own socket dropped {drops} frames (ring full): part of the loss is the sink's, not the DUT's"
            ));
        }
        if errors > 0 {
            self.say(&format!("  warning: {errors} transmit errors"));
        }
        if t.rate_reached == Some(false) {
            self.say("  warning: the generator did not reach the target rate (within 5 %)");
        }
        let thread_ms = (warmup + duration) * 1000.0 * self.lanes.len() as f64;
        if t.stalled_ms > 0.01 * thread_ms {
            self.say(&format!(
                "  warning: the generator/sink threads were off their CPU for {:.0} ms of {:.0} ms (a busy host): rates and latencies are not the DUT's alone",
                t.stalled_ms, thread_ms
            ));
        }
        Ok(t)
    }

    pub fn finish_progress(&self) {
        self.pb.finish_and_clear();
    }
}

pub fn point_of(spec: &TrafficSpec) -> Point {
    Point {
        flows: spec.flows,
        size: spec.sizes.label(),
        rate: spec.rate,
        proto: match spec.proto {
            crate::wire::Proto::Udp => "udp".into(),
            crate::wire::Proto::TcpSyn => "tcp-syn".into(),
        },
        ipv6: spec.ipv6,
    }
}

fn label_of(sc: &Scenario, spec: &TrafficSpec) -> String {
    let p = point_of(spec);
    let rate = p
        .rate
        .map(|r| format!("{:.0}", r))
        .unwrap_or_else(|| "max".into());
    match &sc.sweep {
        Some(s) => match s.name() {
            "flows" => format!("flows={}", p.flows),
            "size" => format!("size={}", p.size),
            _ => format!("rate={rate}"),
        },
        None => format!("flows={} size={} rate={rate}", p.flows, p.size),
    }
}

/// Runs a scenario; writes the JSON and plots the options ask for.
pub fn run(mut sc: Scenario, opts: &RunOpts) -> Result<Report, String> {
    for p in &opts.plots {
        crate::plot::check_path(p)?;
    }
    let stop = stop_flag()?;
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut s = Session::open(&mut sc, stop, opts.quiet)?;
    let points: Vec<TrafficSpec> = match &sc.sweep {
        None => vec![sc.traffic.clone()],
        Some(w) => (0..w.len()).map(|i| w.apply(&sc.traffic, i)).collect(),
    };
    let mut trials = vec![];
    let mut searches = vec![];
    for p in &points {
        let label = label_of(&sc, p);
        match &sc.search {
            None => {
                for rep in 1..=sc.repeats {
                    trials.push(s.measure(p, sc.warmup, sc.duration, sc.drain, rep, &label)?);
                }
            }
            Some(cfg) => {
                let upper = match cfg.max_rate {
                    Some(m) => m,
                    None => {
                        let mut q = p.clone();
                        q.rate = None;
                        let t = s.measure(
                            &q,
                            sc.warmup,
                            cfg.trial,
                            sc.drain,
                            0,
                            &format!("{label} (upper bound)"),
                        )?;
                        t.offered_pps.max(1.0)
                    }
                };
                let sc_cfg = SearchConfig {
                    loss_threshold_pct: cfg.loss_pct,
                    resolution_pps: cfg
                        .resolution_pps
                        .unwrap_or(upper * cfg.resolution_pct / 100.0),
                    min_rate: cfg.min_rate,
                    max_rate: upper,
                    max_trials: cfg.max_trials,
                };
                let found = search(&sc_cfg, |rate| {
                    let mut q = p.clone();
                    q.rate = Some(rate);
                    let t = s.measure(
                        &q,
                        sc.warmup,
                        cfg.trial,
                        sc.drain,
                        0,
                        &format!("{label} search {:.0} pps", rate),
                    )?;
                    Ok::<_, String>(Outcome {
                        offered_pps: t.offered_pps,
                        delivered_pps: t.delivered_pps,
                        loss_pct: t.loss_pct,
                    })
                })?;
                s.say(&format!(
                    "{label}: RFC 2544 throughput {:.3} Mpps (loss <= {}%, {} trials, limited by {})",
                    found.throughput_pps / 1e6,
                    cfg.loss_pct,
                    found.steps.len(),
                    found.limited_by
                ));
                let mut pt = point_of(p);
                pt.rate = None;
                searches.push(SearchResult {
                    point: pt,
                    throughput_pps: found.throughput_pps,
                    loss_threshold_pct: cfg.loss_pct,
                    resolution_pps: sc_cfg.resolution_pps,
                    limited_by: found.limited_by.into(),
                    steps: found.steps,
                });
            }
        }
    }
    s.finish_progress();
    let report = Report {
        tool: "vswitch-bench".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        scenario: sc.name.clone(),
        description: sc.description.clone(),
        started_unix: started,
        duration_s: sc.duration,
        warmup_s: sc.warmup,
        swept: sc.sweep.as_ref().map(|w| w.name().to_string()),
        env: s.env.clone(),
        summary: summarise(&trials),
        trials,
        search: searches,
    };
    drop(s);
    write_outputs(&report, opts)?;
    Ok(report)
}

/// Writes `--json` and `--plot` files.
pub fn write_outputs(report: &Report, opts: &RunOpts) -> Result<(), String> {
    if let Some(p) = &opts.json {
        let text = serde_json::to_string_pretty(report).map_err(|e| e.to_string())?;
        std::fs::write(p, text + "\n").map_err(|e| format!("{}: {e}", p.display()))?;
    }
    for p in &opts.plots {
        crate::plot::plot(report, p)?;
    }
    Ok(())
}

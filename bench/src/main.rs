//! vswitch-bench: AF_XDP traffic generator, sink and benchmark runner.
//!
//!   vswitch-bench run scenario.toml [--json out.json] [--plot out.svg]
//!   vswitch-bench check scenario.toml
//!   vswitch-bench gen --iface IF [--netns NS] [traffic options]
//!   vswitch-bench sink --iface IF [--netns NS]
//!   vswitch-bench xdp-fwd --in IF --out IF
//!
//! See docs/benchmarking.md.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use vswitch_bench::engine::{Endpoint, EnginePref, Lane, LaneSpec, Live, Times, TrialCmd};
use vswitch_bench::report::{Latency, new_histogram};
use vswitch_bench::run::{INTERRUPTED, RunOpts, run, stop_flag};
use vswitch_bench::scenario::{GEN_MAC, SINK_MAC, Scenario, parse_rate, parse_size};
use vswitch_bench::traffic::{Field, TrafficSpec};
use vswitch_bench::wire::{self, Proto};

#[derive(Parser)]
#[command(
    name = "vswitch-bench",
    version,
    about = "AF_XDP traffic generator and sink; throughput, loss, latency and RFC 2544 runs from TOML scenarios"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a scenario: build the topology, start the DUT, measure, report.
    Run {
        scenario: PathBuf,
        /// Write the results as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Write plots (throughput vs the swept parameter, latency CDF); .svg or .png.
        /// May be given more than once.
        #[arg(long)]
        plot: Vec<PathBuf>,
        /// No progress line and no per-trial lines.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Check a scenario file without running it.
    Check { scenario: PathBuf },
    /// Send traffic on one interface (one pinned thread) and report what was sent.
    Gen(GenArgs),
    /// Receive on one interface, print rates and latency of stamped frames each second.
    Sink(SinkArgs),
    /// Kernel XDP forwarder for baselines: redirect every frame from --in to --out
    /// until SIGINT/SIGTERM. Only on interfaces you created.
    XdpFwd {
        #[arg(long = "in")]
        input: String,
        #[arg(long = "out")]
        output: String,
        /// Generic (skb) mode instead of driver mode.
        #[arg(long)]
        skb: bool,
    },
}

#[derive(Args)]
struct Where {
    /// Interface to use.
    #[arg(long, short)]
    iface: String,
    /// Network namespace of the interface (`ip netns` name); default: ours.
    #[arg(long)]
    netns: Option<String>,
    /// Queue to bind.
    #[arg(long, default_value_t = 0)]
    queue: u32,
    /// Pin the thread to this CPU.
    #[arg(long)]
    cpu: Option<usize>,
    /// auto (AF_XDP, else AF_PACKET), afxdp, af_packet; for `sink` also xdp (the
    /// XDP counting sink: counts and times frames in the kernel).
    #[arg(long, default_value = "auto")]
    engine: String,
    /// Try zero-copy first (NICs that support it; veth does not).
    #[arg(long)]
    zero_copy: bool,
    /// Write the result as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args)]
struct GenArgs {
    #[command(flatten)]
    at: Where,
    /// udp or tcp-syn.
    #[arg(long, default_value = "udp")]
    proto: String,
    /// IPv6 instead of IPv4.
    #[arg(long)]
    ipv6: bool,
    /// Frame size including FCS (64..1518) or "imix".
    #[arg(long, default_value = "64")]
    size: String,
    #[arg(long, default_value_t = 1)]
    flows: u32,
    /// Fields varied across flows, first fastest: src_ip,src_port,dst_port,dst_ip.
    #[arg(long, default_value = "src_port")]
    fields: String,
    /// Packets per second ("50k", "1.5M") or "max".
    #[arg(long, default_value = "max")]
    rate: String,
    #[arg(long)]
    src_mac: Option<String>,
    /// Default: the "build" topology's sink, 02:76:00:00:00:20.
    #[arg(long)]
    dst_mac: Option<String>,
    #[arg(long)]
    src_ip: Option<String>,
    #[arg(long)]
    dst_ip: Option<String>,
    #[arg(long, default_value_t = 1024)]
    sport: u16,
    #[arg(long, default_value_t = 5001)]
    dport: u16,
    #[arg(long, default_value_t = 64)]
    batch: u32,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Leave the UDP checksum 0 over IPv4.
    #[arg(long)]
    no_udp_checksum: bool,
    /// Seconds of measurement (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    #[arg(long, default_value_t = 0.0)]
    warmup: f64,
}

#[derive(Args)]
struct SinkArgs {
    #[command(flatten)]
    at: Where,
    /// Stop after this many seconds (default: until Ctrl-C).
    #[arg(long)]
    duration: Option<u64>,
    /// Broadcast a frame from this MAC at start so learning switches find us
    /// (default: the interface's own MAC).
    #[arg(long)]
    announce: Option<String>,
}

fn engine(s: &str) -> Result<EnginePref, String> {
    match s {
        "auto" => Ok(EnginePref::Auto),
        "afxdp" | "af_xdp" => Ok(EnginePref::Afxdp),
        "af_packet" | "packet" => Ok(EnginePref::AfPacket),
        "xdp" => Ok(EnginePref::Xdp),
        o => Err(format!(
            "--engine {o:?}: expected auto, afxdp, af_packet or (sink only) xdp"
        )),
    }
}

fn toml_str(s: &str) -> toml::Value {
    match s.parse::<i64>() {
        Ok(i) => toml::Value::Integer(i),
        Err(_) => toml::Value::String(s.to_string()),
    }
}

fn gen_spec(a: &GenArgs) -> Result<TrafficSpec, String> {
    let mac = |o: &Option<String>, k: &str, d: [u8; 6]| -> Result<[u8; 6], String> {
        match o {
            None => Ok(d),
            Some(s) => {
                wire::parse_mac(s).ok_or_else(|| format!("--{k} {s:?} is not a MAC address"))
            }
        }
    };
    let src_default =
        vswitch_bench::topo::if_mac(a.at.netns.as_deref(), &a.at.iface).unwrap_or(GEN_MAC);
    let mut t = TrafficSpec::new(
        mac(&a.src_mac, "src-mac", src_default)?,
        mac(&a.dst_mac, "dst-mac", SINK_MAC)?,
    );
    t.proto = match a.proto.as_str() {
        "udp" => Proto::Udp,
        "tcp-syn" | "syn" => Proto::TcpSyn,
        o => return Err(format!("--proto {o:?}: expected udp or tcp-syn")),
    };
    t.ipv6 = a.ipv6;
    (t.src_ip, t.dst_ip) = TrafficSpec::default_ips(a.ipv6);
    if let Some(s) = &a.src_ip {
        t.src_ip = s
            .parse()
            .map_err(|_| format!("--src-ip {s:?} is not an IP address"))?;
    }
    if let Some(s) = &a.dst_ip {
        t.dst_ip = s
            .parse()
            .map_err(|_| format!("--dst-ip {s:?} is not an IP address"))?;
    }
    t.sizes = parse_size(&toml_str(&a.size)).map_err(|e| format!("--size: {e}"))?;
    t.rate = parse_rate(&toml_str(&a.rate)).map_err(|e| format!("--rate: {e}"))?;
    t.flows = a.flows;
    t.fields = a
        .fields
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|f| match f.trim() {
            "src_ip" => Ok(Field::SrcIp),
            "src_port" => Ok(Field::SrcPort),
            "dst_port" => Ok(Field::DstPort),
            "dst_ip" => Ok(Field::DstIp),
            o => Err(format!("--fields: unknown field {o:?}")),
        })
        .collect::<Result<_, _>>()?;
    t.src_port = a.sport;
    t.dst_port = a.dport;
    t.batch = a.batch;
    t.seed = a.seed;
    t.udp_checksum = !a.no_udp_checksum;
    t.validate()?;
    if !(a.duration > 0.0 && a.duration.is_finite() && a.warmup >= 0.0 && a.warmup.is_finite()) {
        return Err("--duration must be > 0 and --warmup >= 0".into());
    }
    Ok(t)
}

fn write_json(path: &Option<PathBuf>, v: &serde_json::Value) -> Result<(), String> {
    let text = serde_json::to_string_pretty(v).map_err(|e| e.to_string())?;
    println!("{text}");
    if let Some(p) = path {
        std::fs::write(p, text + "\n").map_err(|e| format!("{}: {e}", p.display()))?;
    }
    Ok(())
}

fn cmd_gen(a: GenArgs) -> Result<(), String> {
    let spec = gen_spec(&a)?;
    let stop = stop_flag()?;
    let live = Arc::new(Live::default());
    let lane = Lane::start(
        LaneSpec {
            lane: 0,
            gen_lanes: 1,
            cpu: a.at.cpu,
            generator: Some(Endpoint {
                netns: a.at.netns.clone(),
                ifname: a.at.iface.clone(),
                queue: a.at.queue,
            }),
            sink: None,
            engine: engine(&a.at.engine)?,
            sink_engine: EnginePref::Auto,
            zero_copy: a.at.zero_copy,
            announce_mac: None,
        },
        stop.clone(),
        live,
    )?;
    if let Some(f) = &lane.fallback {
        eprintln!("warning: {f}");
    }
    let times = Times::plan(
        Duration::from_millis(50),
        Duration::from_secs_f64(a.warmup),
        Duration::from_secs_f64(a.duration),
        Duration::ZERO,
    );
    lane.begin(TrialCmd {
        spec: Arc::new(spec.clone()),
        times,
    })?;
    let r = lane.finish()?;
    if stop.load(Ordering::Relaxed) {
        return Err(INTERRUPTED.into());
    }
    write_json(
        &a.at.json,
        &serde_json::json!({
            "tool": "vswitch-bench gen",
            "engine": lane.gen_engine,
            "iface": a.at.iface,
            "flows": spec.flows,
            "size": spec.sizes.label(),
            "rate_target": spec.rate,
            "window_s": a.duration,
            "offered": r.offered,
            "offered_pps": r.offered as f64 / a.duration,
            "sent_total": r.sent,
            "tx_errors": r.tx_errors,
            "stalled_ms": r.stalled_ns as f64 / 1e6,
        }),
    )
}

fn cmd_sink(a: SinkArgs) -> Result<(), String> {
    let stop = stop_flag()?;
    let live = Arc::new(Live::default());
    let announce = match &a.announce {
        Some(s) => Some(
            wire::parse_mac(s).ok_or_else(|| format!("--announce {s:?} is not a MAC address"))?,
        ),
        None => vswitch_bench::topo::if_mac(a.at.netns.as_deref(), &a.at.iface).ok(),
    };
    let lane = Lane::start(
        LaneSpec {
            lane: 0,
            gen_lanes: 1,
            cpu: a.at.cpu,
            generator: None,
            sink: Some(Endpoint {
                netns: a.at.netns.clone(),
                ifname: a.at.iface.clone(),
                queue: a.at.queue,
            }),
            engine: engine(&a.at.engine)?,
            sink_engine: engine(&a.at.engine)?,
            zero_copy: a.at.zero_copy,
            announce_mac: announce,
        },
        stop.clone(),
        live,
    )?;
    if let Some(f) = &lane.fallback {
        eprintln!("warning: {f}");
    }
    eprintln!(
        "sink on {} ({}); Ctrl-C to stop",
        a.at.iface,
        lane.sink_engine.clone().unwrap_or_default()
    );
    // Any spec will do: a sink-only lane does not generate.
    let dummy = Arc::new(TrafficSpec::new(GEN_MAC, SINK_MAC));
    let mut all = new_histogram();
    let (mut frames, mut stamped, mut secs) = (0u64, 0u64, 0u64);
    while !stop.load(Ordering::Relaxed) && a.duration.is_none_or(|d| secs < d) {
        let times = Times::plan(
            Duration::ZERO,
            Duration::ZERO,
            Duration::from_secs(1),
            Duration::ZERO,
        );
        lane.begin(TrialCmd {
            spec: dummy.clone(),
            times,
        })?;
        let r = lane.finish()?;
        let Some(s) = r.sink else { break };
        secs += 1;
        frames += s.frames;
        stamped += s.delivered;
        let _ = all.add(&s.hist);
        let l = Latency::from_histogram(&s.hist);
        eprintln!(
            "{secs:>5} s  stamped {:>10.0} pps  all {:>10.0} pps  drops {:>6}{}",
            s.delivered as f64,
            s.frames as f64,
            r.sink_drops,
            l.map(|l| format!(
                "  latency p50 {:.1} p99 {:.1} max {:.1} us",
                l.p50_us, l.p99_us, l.max_us
            ))
            .unwrap_or_default()
        );
    }
    write_json(
        &a.at.json,
        &serde_json::json!({
            "tool": "vswitch-bench sink",
            "engine": lane.sink_engine,
            "iface": a.at.iface,
            "seconds": secs,
            "frames": frames,
            "stamped": stamped,
            "latency": Latency::from_histogram(&all),
        }),
    )
}

fn cmd_xdp_fwd(input: &str, output: &str, skb: bool) -> Result<(), String> {
    let stop = stop_flag()?;
    let f = vswitch_bench::xdpfwd::XdpFwd::attach(input, output, skb)?;
    eprintln!(
        "xdp-fwd: {input} -> {output} ({} mode); SIGINT/SIGTERM to stop",
        f.mode
    );
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(f);
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    vswitch_bench::xsk::quiet_libraries();
    let r = match cli.cmd {
        Cmd::Run {
            scenario,
            json,
            plot,
            quiet,
        } => Scenario::load(&scenario)
            .map_err(|e| e.to_string())
            .and_then(|sc| {
                run(
                    sc,
                    &RunOpts {
                        json,
                        plots: plot,
                        quiet,
                    },
                )
            })
            .map(|report| print!("{}", vswitch_bench::report::table(&report))),
        Cmd::Check { scenario } => Scenario::load(&scenario)
            .map(|sc| println!("{}: ok ({})", scenario.display(), sc.name))
            .map_err(|e| e.to_string()),
        Cmd::Gen(a) => cmd_gen(a),
        Cmd::Sink(a) => cmd_sink(a),
        Cmd::XdpFwd { input, output, skb } => cmd_xdp_fwd(&input, &output, skb),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e == INTERRUPTED => {
            eprintln!("vswitch-bench: interrupted; cleaned up");
            ExitCode::from(130)
        }
        Err(e) => {
            // One line (multi-line details such as a DUT log follow it).
            eprintln!("vswitch-bench: error: {e}");
            ExitCode::FAILURE
        }
    }
}

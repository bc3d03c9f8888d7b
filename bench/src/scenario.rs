//! Scenario files: TOML describing the topology, the device under test, the
//! traffic, the run and an optional sweep or RFC 2544 search. See
//! `bench/examples/*.toml` and `docs/benchmarking.md` for the keys.
//!
//! Every error names the offending key and, where the TOML parser or our own
//! checks know it, the line: `scenario.toml:14:8: traffic.size: ...`. Unknown keys
//! are errors (a misspelt `duraton` must not silently run the default).

use crate::engine::EnginePref;
use crate::traffic::{Field, SizeMix, TrafficSpec};
use crate::wire::{self, Proto};
use serde::Deserialize;
use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use toml::Spanned;

/// A scenario file that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioError {
    /// `file:line:col` when known.
    pub at: Option<String>,
    /// The key, e.g. `traffic.size`.
    pub key: String,
    pub msg: String,
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(at) = &self.at {
            write!(f, "{at}: ")?;
        }
        if self.key.is_empty() {
            write!(f, "{}", self.msg)
        } else {
            write!(f, "{}: {}", self.key, self.msg)
        }
    }
}

impl std::error::Error for ScenarioError {}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: Option<String>,
    description: Option<String>,
    topology: Option<RawTopology>,
    dut: Option<RawDut>,
    #[serde(default)]
    traffic: RawTraffic,
    #[serde(default)]
    run: RawRun,
    sweep: Option<RawSweep>,
    search: Option<RawSearch>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTopology {
    mode: Option<Spanned<String>>,
    prefix: Option<Spanned<String>>,
    dut_napi_cpu: Option<Spanned<i64>>,
    napi_defer_hard_irqs: Option<Spanned<i64>>,
    gro_flush_timeout_ns: Option<Spanned<i64>>,
    gen_ns: Option<String>,
    gen_if: Option<Spanned<String>>,
    sink_ns: Option<String>,
    sink_if: Option<Spanned<String>>,
    dut_ns: Option<String>,
    in_if: Option<String>,
    out_if: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDut {
    daemon: Option<Spanned<String>>,
    #[serde(default)]
    setup: Vec<Spanned<String>>,
    #[serde(default)]
    teardown: Vec<Spanned<String>>,
    ready_timeout: Option<Spanned<f64>>,
    settle: Option<Spanned<f64>>,
    cpu: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTraffic {
    proto: Option<Spanned<String>>,
    ip: Option<Spanned<i64>>,
    size: Option<Spanned<toml::Value>>,
    flows: Option<Spanned<i64>>,
    fields: Option<Spanned<Vec<String>>>,
    rate: Option<Spanned<toml::Value>>,
    src_mac: Option<Spanned<String>>,
    dst_mac: Option<Spanned<String>>,
    src_ip: Option<Spanned<String>>,
    dst_ip: Option<Spanned<String>>,
    src_port: Option<Spanned<i64>>,
    dst_port: Option<Spanned<i64>>,
    batch: Option<Spanned<i64>>,
    seed: Option<Spanned<i64>>,
    udp_checksum: Option<bool>,
    engine: Option<Spanned<String>>,
    sink_engine: Option<Spanned<String>>,
    zero_copy: Option<bool>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRun {
    duration: Option<Spanned<f64>>,
    warmup: Option<Spanned<f64>>,
    drain: Option<Spanned<f64>>,
    repeats: Option<Spanned<i64>>,
    gen_cpus: Option<Spanned<Vec<i64>>>,
    sink_cpus: Option<Spanned<Vec<i64>>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSweep {
    flows: Option<Spanned<Vec<i64>>>,
    size: Option<Spanned<Vec<toml::Value>>>,
    rate: Option<Spanned<Vec<toml::Value>>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSearch {
    loss_pct: Option<Spanned<f64>>,
    resolution_pct: Option<Spanned<f64>>,
    resolution_pps: Option<Spanned<f64>>,
    trial: Option<Spanned<f64>>,
    min_rate: Option<Spanned<toml::Value>>,
    max_rate: Option<Spanned<toml::Value>>,
    max_trials: Option<Spanned<i64>>,
}

/// Where traffic comes from and goes to.
#[derive(Debug, Clone, PartialEq)]
pub enum Topology {
    /// Namespaces and veths made (and removed) by the tool:
    /// gen ns [g0] <-> [g1] dut ns [s1] <-> [s0] sink ns.
    Build {
        prefix: String,
        /// Threaded NAPI for the DUT's ingress interface, pinned to this CPU.
        dut_napi_cpu: Option<usize>,
        /// Interrupt moderation on the DUT ingress (see docs/benchmarking.md).
        napi_defer_hard_irqs: Option<u32>,
        gro_flush_timeout_ns: Option<u64>,
    },
    /// Interfaces that already exist (`None` namespace: the tool's own).
    Existing {
        gen_ns: Option<String>,
        gen_if: String,
        sink_ns: Option<String>,
        sink_if: String,
        dut_ns: Option<String>,
        in_if: Option<String>,
        out_if: Option<String>,
    },
}

/// Commands that make the device under test, run in the DUT namespace.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DutSpec {
    /// A long-running process, stopped with SIGTERM at the end.
    pub daemon: Option<String>,
    /// Run in order once the daemon started; each is retried until it succeeds or
    /// `ready_timeout` passes (so the first one doubles as a readiness probe).
    pub setup: Vec<String>,
    /// Run in order before the daemon is stopped; failures are only reported.
    pub teardown: Vec<String>,
    pub ready_timeout: f64,
    /// Seconds to wait after setup before the first trial.
    pub settle: f64,
    /// `{dut_cpu}` in the commands.
    pub cpu: usize,
}

/// What a sweep varies.
#[derive(Debug, Clone, PartialEq)]
pub enum Sweep {
    Flows(Vec<u32>),
    Size(Vec<SizeMix>),
    Rate(Vec<Option<f64>>),
}

impl Sweep {
    pub fn name(&self) -> &'static str {
        match self {
            Sweep::Flows(_) => "flows",
            Sweep::Size(_) => "size",
            Sweep::Rate(_) => "rate",
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Sweep::Flows(v) => v.len(),
            Sweep::Size(v) => v.len(),
            Sweep::Rate(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The traffic of point `i`.
    pub fn apply(&self, base: &TrafficSpec, i: usize) -> TrafficSpec {
        let mut t = base.clone();
        match self {
            Sweep::Flows(v) => t.flows = v[i],
            Sweep::Size(v) => t.sizes = v[i].clone(),
            Sweep::Rate(v) => t.rate = v[i],
        }
        t
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SearchSpec {
    pub loss_pct: f64,
    /// Resolution as a fraction of the upper bound ...
    pub resolution_pct: f64,
    /// ... or in packets/s (wins when given).
    pub resolution_pps: Option<f64>,
    pub trial: f64,
    pub min_rate: f64,
    /// `None`: measured with one unpaced trial first.
    pub max_rate: Option<f64>,
    pub max_trials: u32,
}

/// A checked scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    pub topology: Topology,
    pub dut: Option<DutSpec>,
    pub traffic: TrafficSpec,
    /// MACs were given in the file (otherwise taken from the interfaces).
    pub src_mac_given: bool,
    pub dst_mac_given: bool,
    pub engine: EnginePref,
    /// The sink's engine (`traffic.sink_engine`): by default the XDP counting sink
    /// (`Xdp`) with the `auto` and `afxdp` engines, `AfPacket` with `af_packet`.
    pub sink_engine: EnginePref,
    pub zero_copy: bool,
    pub duration: f64,
    pub warmup: f64,
    pub drain: f64,
    pub repeats: u32,
    pub gen_cpus: Vec<usize>,
    pub sink_cpus: Vec<usize>,
    pub sweep: Option<Sweep>,
    pub search: Option<SearchSpec>,
}

/// MACs of the "build" topology's generator and sink ends.
pub const GEN_MAC: [u8; 6] = [0x02, 0x76, 0, 0, 0, 0x10];
pub const SINK_MAC: [u8; 6] = [0x02, 0x76, 0, 0, 0, 0x20];

/// The placeholders DUT commands may use.
pub const PLACEHOLDERS: [&str; 10] = [
    "dut_ns", "in_if", "out_if", "gen_ns", "gen_if", "sink_ns", "sink_if", "dut_cpu", "state",
    "bin",
];

struct Ctx<'a> {
    file: &'a str,
    src: &'a str,
}

impl Ctx<'_> {
    fn at(&self, span: std::ops::Range<usize>) -> Option<String> {
        let upto = self.src.get(..span.start.min(self.src.len()))?;
        let line = upto.matches('\n').count() + 1;
        let col = upto
            .rfind('\n')
            .map(|i| upto.len() - i)
            .unwrap_or(upto.len() + 1);
        Some(format!("{}:{line}:{col}", self.file))
    }

    fn err<T>(
        &self,
        key: &str,
        span: Option<std::ops::Range<usize>>,
        msg: impl Into<String>,
    ) -> Result<T, ScenarioError> {
        Err(ScenarioError {
            at: span.and_then(|s| self.at(s)),
            key: key.into(),
            msg: msg.into(),
        })
    }

    fn int<T: TryFrom<i64>>(
        &self,
        key: &str,
        v: &Option<Spanned<i64>>,
        lo: i64,
        hi: i64,
    ) -> Result<Option<T>, ScenarioError> {
        let Some(v) = v else { return Ok(None) };
        let x = *v.get_ref();
        if x < lo || x > hi {
            return self.err(key, Some(v.span()), format!("{x} is outside {lo}..={hi}"));
        }
        match T::try_from(x) {
            Ok(t) => Ok(Some(t)),
            Err(_) => self.err(key, Some(v.span()), format!("{x} is out of range")),
        }
    }

    fn float(
        &self,
        key: &str,
        v: &Option<Spanned<f64>>,
        lo: f64,
        hi: f64,
    ) -> Result<Option<f64>, ScenarioError> {
        let Some(v) = v else { return Ok(None) };
        let x = *v.get_ref();
        if !(x.is_finite() && x >= lo && x <= hi) {
            return self.err(key, Some(v.span()), format!("{x} is outside {lo}..={hi}"));
        }
        Ok(Some(x))
    }

    fn cpus(
        &self,
        key: &str,
        v: &Option<Spanned<Vec<i64>>>,
    ) -> Result<Option<Vec<usize>>, ScenarioError> {
        let Some(v) = v else { return Ok(None) };
        let n = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1024);
        let mut out = vec![];
        for &c in v.get_ref() {
            if c < 0 || c as usize >= 1024 {
                return self.err(key, Some(v.span()), format!("CPU {c} is not a CPU number"));
            }
            let _ = n;
            out.push(c as usize);
        }
        if out.is_empty() {
            return self.err(key, Some(v.span()), "needs at least one CPU");
        }
        let mut d = out.clone();
        d.sort_unstable();
        d.dedup();
        if d.len() != out.len() {
            return self.err(key, Some(v.span()), "lists a CPU twice");
        }
        Ok(Some(out))
    }
}

/// Parses "max", 50000, 1.5e6, "50k", "1.5M", "2.5m" into packets/s (`None` = max).
pub fn parse_rate(v: &toml::Value) -> Result<Option<f64>, String> {
    let bad =
        || format!("expected \"max\" or a rate in packets/s (50000, \"50k\", \"1.5M\"), got {v}");
    let r = match v {
        toml::Value::Integer(i) => *i as f64,
        toml::Value::Float(f) => *f,
        toml::Value::String(s) => {
            let s = s.trim();
            if s.eq_ignore_ascii_case("max") {
                return Ok(None);
            }
            let (num, mult) = match s.chars().last() {
                Some('k' | 'K') => (&s[..s.len() - 1], 1e3),
                Some('m' | 'M') => (&s[..s.len() - 1], 1e6),
                _ => (s, 1.0),
            };
            num.trim().parse::<f64>().map_err(|_| bad())? * mult
        }
        _ => return Err(bad()),
    };
    if !(r.is_finite() && r > 0.0 && r <= 1e9) {
        return Err(format!("rate {r} must be between 0 and 1e9 packets/s"));
    }
    Ok(Some(r))
}

/// Parses 64, "imix" or [[64, 7], [576, 4], [1500, 1]].
pub fn parse_size(v: &toml::Value) -> Result<SizeMix, String> {
    let one = |x: i64| -> Result<u16, String> {
        if x < wire::MIN_FRAME_SIZE as i64 || x > wire::MAX_FRAME_SIZE as i64 {
            Err(format!(
                "frame size {x} is outside {}..={} (sizes include the 4-byte FCS)",
                wire::MIN_FRAME_SIZE,
                wire::MAX_FRAME_SIZE
            ))
        } else {
            Ok(x as u16)
        }
    };
    let bad =
        || format!("expected a frame size (64..1518), \"imix\" or [[size, weight], ...], got {v}");
    match v {
        toml::Value::Integer(i) => Ok(SizeMix::fixed(one(*i)?)),
        toml::Value::String(s) if s.eq_ignore_ascii_case("imix") => Ok(SizeMix::imix()),
        toml::Value::String(s) => match s.trim().parse::<i64>() {
            Ok(i) => Ok(SizeMix::fixed(one(i)?)),
            Err(_) => Err(bad()),
        },
        toml::Value::Array(a) if !a.is_empty() => {
            let mut mix = vec![];
            for e in a {
                let pair = e.as_array().ok_or_else(bad)?;
                let (Some(s), Some(w)) = (
                    pair.first().and_then(toml::Value::as_integer),
                    pair.get(1).and_then(toml::Value::as_integer),
                ) else {
                    return Err(bad());
                };
                if pair.len() != 2 || !(1..=1000).contains(&w) {
                    return Err(format!("weight {w} of size {s} is outside 1..=1000"));
                }
                mix.push((one(s)?, w as u32));
            }
            Ok(SizeMix(mix))
        }
        _ => Err(bad()),
    }
}

fn parse_field(s: &str) -> Option<Field> {
    Some(match s {
        "src_ip" => Field::SrcIp,
        "src_port" => Field::SrcPort,
        "dst_port" => Field::DstPort,
        "dst_ip" => Field::DstIp,
        _ => return None,
    })
}

/// Checks that `cmd` only uses known `{placeholders}`.
fn check_placeholders(cx: &Ctx<'_>, key: &str, cmd: &Spanned<String>) -> Result<(), ScenarioError> {
    let s = cmd.get_ref();
    let mut rest = s.as_str();
    while let Some(i) = rest.find('{') {
        let after = &rest[i + 1..];
        let Some(j) = after.find('}') else {
            return cx.err(key, Some(cmd.span()), format!("unclosed '{{' in {s:?}"));
        };
        let name = &after[..j];
        if !PLACEHOLDERS.contains(&name) {
            return cx.err(
                key,
                Some(cmd.span()),
                format!(
                    "unknown placeholder {{{name}}} (known: {})",
                    PLACEHOLDERS.map(|p| format!("{{{p}}}")).join(" ")
                ),
            );
        }
        rest = &after[j + 1..];
    }
    Ok(())
}

impl Scenario {
    /// Reads and checks a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let src = std::fs::read_to_string(path).map_err(|e| ScenarioError {
            at: None,
            key: String::new(),
            msg: format!("cannot read {}: {e}", path.display()),
        })?;
        Scenario::parse(&path.display().to_string(), &src)
    }

    /// Parses and checks scenario text; `file` only names it in errors.
    pub fn parse(file: &str, src: &str) -> Result<Scenario, ScenarioError> {
        let cx = Ctx { file, src };
        let raw: RawScenario = toml::from_str(src).map_err(|e| {
            let at = e.span().and_then(|s| cx.at(s));
            ScenarioError {
                at,
                key: String::new(),
                msg: e.message().trim().to_string(),
            }
        })?;
        let name = raw.name.clone().unwrap_or_else(|| {
            Path::new(file)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "scenario".into())
        });

        // [run]
        let r = &raw.run;
        let duration = cx
            .float("run.duration", &r.duration, 0.1, 86_400.0)?
            .unwrap_or(10.0);
        let warmup = cx
            .float("run.warmup", &r.warmup, 0.0, 3600.0)?
            .unwrap_or(2.0);
        let drain = cx.float("run.drain", &r.drain, 0.0, 60.0)?.unwrap_or(0.2);
        let repeats = cx
            .int::<u32>("run.repeats", &r.repeats, 1, 1000)?
            .unwrap_or(3);
        let gen_cpus = cx
            .cpus("run.gen_cpus", &r.gen_cpus)?
            .unwrap_or_else(|| vec![0]);
        let sink_cpus = cx
            .cpus("run.sink_cpus", &r.sink_cpus)?
            .unwrap_or_else(|| vec![gen_cpus[0]]);

        // [topology]
        let t = raw.topology.unwrap_or_default();
        let mode = t
            .mode
            .as_ref()
            .map(|m| m.get_ref().as_str())
            .unwrap_or("build");
        let topology = match mode {
            "build" => {
                for (k, present) in [
                    ("gen_ns", t.gen_ns.is_some()),
                    ("gen_if", t.gen_if.is_some()),
                    ("sink_ns", t.sink_ns.is_some()),
                    ("sink_if", t.sink_if.is_some()),
                    ("dut_ns", t.dut_ns.is_some()),
                    ("in_if", t.in_if.is_some()),
                    ("out_if", t.out_if.is_some()),
                ] {
                    if present {
                        return cx.err(&format!("topology.{k}"), None, "only for mode = \"existing\" (mode \"build\" names its own interfaces)");
                    }
                }
                let prefix = t
                    .prefix
                    .as_ref()
                    .map(|p| p.get_ref().clone())
                    .unwrap_or_else(|| "vb".into());
                if prefix.is_empty()
                    || prefix.len() > 4
                    || !prefix.chars().all(|c| c.is_ascii_alphanumeric())
                {
                    return cx.err("topology.prefix", t.prefix.as_ref().map(|p| p.span()), format!("{prefix:?} must be 1 to 4 letters or digits (interface names have at most 15 characters)"));
                }
                Topology::Build {
                    prefix,
                    dut_napi_cpu: cx.int::<usize>(
                        "topology.dut_napi_cpu",
                        &t.dut_napi_cpu,
                        0,
                        1023,
                    )?,
                    napi_defer_hard_irqs: cx.int::<u32>(
                        "topology.napi_defer_hard_irqs",
                        &t.napi_defer_hard_irqs,
                        0,
                        1_000_000,
                    )?,
                    gro_flush_timeout_ns: cx.int::<u64>(
                        "topology.gro_flush_timeout_ns",
                        &t.gro_flush_timeout_ns,
                        0,
                        1_000_000_000,
                    )?,
                }
            }
            "existing" => {
                for (k, present) in [
                    ("prefix", t.prefix.is_some()),
                    ("dut_napi_cpu", t.dut_napi_cpu.is_some()),
                    ("napi_defer_hard_irqs", t.napi_defer_hard_irqs.is_some()),
                    ("gro_flush_timeout_ns", t.gro_flush_timeout_ns.is_some()),
                ] {
                    if present {
                        return cx.err(&format!("topology.{k}"), None, "only for mode = \"build\"");
                    }
                }
                let need =
                    |k: &str, v: &Option<Spanned<String>>| -> Result<String, ScenarioError> {
                        match v {
                            Some(s) if !s.get_ref().is_empty() && s.get_ref().len() <= 15 => {
                                Ok(s.get_ref().clone())
                            }
                            Some(s) => cx.err(
                                &format!("topology.{k}"),
                                Some(s.span()),
                                "must be an interface name of 1 to 15 characters",
                            ),
                            None => cx.err(
                                &format!("topology.{k}"),
                                None,
                                "is required when mode = \"existing\"",
                            ),
                        }
                    };
                Topology::Existing {
                    gen_if: need("gen_if", &t.gen_if)?,
                    sink_if: need("sink_if", &t.sink_if)?,
                    gen_ns: t.gen_ns.clone(),
                    sink_ns: t.sink_ns.clone(),
                    dut_ns: t.dut_ns.clone(),
                    in_if: t.in_if.clone(),
                    out_if: t.out_if.clone(),
                }
            }
            other => {
                return cx.err(
                    "topology.mode",
                    t.mode.as_ref().map(|m| m.span()),
                    format!("{other:?} is neither \"build\" nor \"existing\""),
                );
            }
        };

        // [dut]
        let dut = match &raw.dut {
            None => None,
            Some(d) => {
                if let Some(c) = &d.daemon {
                    check_placeholders(&cx, "dut.daemon", c)?;
                }
                for (i, c) in d.setup.iter().enumerate() {
                    check_placeholders(&cx, &format!("dut.setup[{i}]"), c)?;
                }
                for (i, c) in d.teardown.iter().enumerate() {
                    check_placeholders(&cx, &format!("dut.teardown[{i}]"), c)?;
                }
                Some(DutSpec {
                    daemon: d.daemon.as_ref().map(|s| s.get_ref().clone()),
                    setup: d.setup.iter().map(|s| s.get_ref().clone()).collect(),
                    teardown: d.teardown.iter().map(|s| s.get_ref().clone()).collect(),
                    ready_timeout: cx
                        .float("dut.ready_timeout", &d.ready_timeout, 0.0, 600.0)?
                        .unwrap_or(20.0),
                    settle: cx
                        .float("dut.settle", &d.settle, 0.0, 600.0)?
                        .unwrap_or(0.5),
                    cpu: cx.int::<usize>("dut.cpu", &d.cpu, 0, 1023)?.unwrap_or(1),
                })
            }
        };

        // [traffic]
        let tr = &raw.traffic;
        let mut spec = TrafficSpec::new(GEN_MAC, SINK_MAC);
        if let Some(p) = &tr.proto {
            spec.proto = match p.get_ref().as_str() {
                "udp" => Proto::Udp,
                "tcp-syn" | "tcp_syn" | "syn" => Proto::TcpSyn,
                o => {
                    return cx.err(
                        "traffic.proto",
                        Some(p.span()),
                        format!("{o:?} is neither \"udp\" nor \"tcp-syn\""),
                    );
                }
            };
        }
        if let Some(ip) = &tr.ip {
            spec.ipv6 = match ip.get_ref() {
                4 => false,
                6 => true,
                o => {
                    return cx.err(
                        "traffic.ip",
                        Some(ip.span()),
                        format!("{o} is neither 4 nor 6"),
                    );
                }
            };
        }
        (spec.src_ip, spec.dst_ip) = TrafficSpec::default_ips(spec.ipv6);
        let ip =
            |k: &str, v: &Option<Spanned<String>>, dflt: IpAddr| -> Result<IpAddr, ScenarioError> {
                match v {
                    None => Ok(dflt),
                    Some(s) => match s.get_ref().parse::<IpAddr>() {
                        Ok(a) if a.is_ipv6() == spec.ipv6 => Ok(a),
                        Ok(a) => cx.err(
                            k,
                            Some(s.span()),
                            format!(
                                "{a} is not an IPv{} address (traffic.ip)",
                                if spec.ipv6 { 6 } else { 4 }
                            ),
                        ),
                        Err(_) => cx.err(
                            k,
                            Some(s.span()),
                            format!("{:?} is not an IP address", s.get_ref()),
                        ),
                    },
                }
            };
        spec.src_ip = ip("traffic.src_ip", &tr.src_ip, spec.src_ip)?;
        spec.dst_ip = ip("traffic.dst_ip", &tr.dst_ip, spec.dst_ip)?;
        let mac =
            |k: &str, v: &Option<Spanned<String>>| -> Result<Option<[u8; 6]>, ScenarioError> {
                match v {
                    None => Ok(None),
                    Some(s) => match wire::parse_mac(s.get_ref()) {
                        Some(m) => Ok(Some(m)),
                        None => cx.err(
                            k,
                            Some(s.span()),
                            format!("{:?} is not a MAC address (02:00:00:00:00:01)", s.get_ref()),
                        ),
                    },
                }
            };
        let src_mac = mac("traffic.src_mac", &tr.src_mac)?;
        let dst_mac = mac("traffic.dst_mac", &tr.dst_mac)?;
        if let Some(m) = src_mac {
            spec.src_mac = m;
        }
        if let Some(m) = dst_mac {
            spec.dst_mac = m;
        }
        spec.src_port = cx
            .int::<u16>("traffic.src_port", &tr.src_port, 1, 65535)?
            .unwrap_or(spec.src_port);
        spec.dst_port = cx
            .int::<u16>("traffic.dst_port", &tr.dst_port, 1, 65535)?
            .unwrap_or(spec.dst_port);
        spec.flows = cx
            .int::<u32>("traffic.flows", &tr.flows, 1, 100_000_000)?
            .unwrap_or(1);
        if let Some(f) = &tr.fields {
            let mut v = vec![];
            for s in f.get_ref() {
                match parse_field(s) {
                    Some(x) => v.push(x),
                    None => {
                        return cx.err(
                            "traffic.fields",
                            Some(f.span()),
                            format!("unknown field {s:?} (src_ip, src_port, dst_port, dst_ip)"),
                        );
                    }
                }
            }
            spec.fields = v;
        }
        if let Some(s) = &tr.size {
            spec.sizes =
                parse_size(s.get_ref()).or_else(|m| cx.err("traffic.size", Some(s.span()), m))?;
        }
        if let Some(r) = &tr.rate {
            spec.rate =
                parse_rate(r.get_ref()).or_else(|m| cx.err("traffic.rate", Some(r.span()), m))?;
        }
        spec.batch = cx
            .int::<u32>("traffic.batch", &tr.batch, 1, 1024)?
            .unwrap_or(64);
        spec.seed = cx
            .int::<u64>("traffic.seed", &tr.seed, 0, i64::MAX)?
            .unwrap_or(1);
        spec.udp_checksum = tr.udp_checksum.unwrap_or(true);
        let engine = match &tr.engine {
            None => EnginePref::Auto,
            Some(e) => match e.get_ref().as_str() {
                "auto" => EnginePref::Auto,
                "afxdp" | "af_xdp" => EnginePref::Afxdp,
                "af_packet" | "afpacket" | "packet" => EnginePref::AfPacket,
                o => {
                    return cx.err(
                        "traffic.engine",
                        Some(e.span()),
                        format!("{o:?} is not one of \"auto\", \"afxdp\", \"af_packet\""),
                    );
                }
            },
        };

        // Default: the XDP counting sink wherever the generator may use AF_XDP (it
        // costs the generator's CPU nothing and is what vsb's sink does; with
        // `auto` a lane falls back to an AF_XDP or AF_PACKET sink if it cannot be
        // attached); with `af_packet` the sink follows the generator.
        let sink_engine = match &tr.sink_engine {
            None => match engine {
                EnginePref::Auto | EnginePref::Afxdp => EnginePref::Xdp,
                e => e,
            },
            Some(e) => match e.get_ref().as_str() {
                "auto" => EnginePref::Auto,
                "afxdp" | "af_xdp" => EnginePref::Afxdp,
                "af_packet" | "afpacket" | "packet" => EnginePref::AfPacket,
                "xdp" => EnginePref::Xdp,
                o => {
                    return cx.err(
                        "traffic.sink_engine",
                        Some(e.span()),
                        format!("{o:?} is not one of \"auto\", \"afxdp\", \"af_packet\", \"xdp\""),
                    );
                }
            },
        };

        // [sweep]
        let sweep = match &raw.sweep {
            None => None,
            Some(s) => {
                let n = [s.flows.is_some(), s.size.is_some(), s.rate.is_some()]
                    .iter()
                    .filter(|x| **x)
                    .count();
                if n != 1 {
                    return cx.err(
                        "sweep",
                        None,
                        "give exactly one of flows = [...], size = [...], rate = [...]",
                    );
                }
                let sw = if let Some(f) = &s.flows {
                    let mut v = vec![];
                    for &x in f.get_ref() {
                        if !(1..=100_000_000).contains(&x) {
                            return cx.err(
                                "sweep.flows",
                                Some(f.span()),
                                format!("{x} is outside 1..=100000000"),
                            );
                        }
                        v.push(x as u32);
                    }
                    Sweep::Flows(v)
                } else if let Some(z) = &s.size {
                    let mut v = vec![];
                    for x in z.get_ref() {
                        v.push(parse_size(x).or_else(|m| cx.err("sweep.size", Some(z.span()), m))?);
                    }
                    Sweep::Size(v)
                } else if let Some(r) = &s.rate {
                    let mut v = vec![];
                    for x in r.get_ref() {
                        v.push(parse_rate(x).or_else(|m| cx.err("sweep.rate", Some(r.span()), m))?);
                    }
                    Sweep::Rate(v)
                } else {
                    return cx.err("sweep", None, "empty");
                };
                if sw.is_empty() {
                    return cx.err(
                        &format!("sweep.{}", sw.name()),
                        None,
                        "needs at least one value",
                    );
                }
                Some(sw)
            }
        };

        // [search]
        let search = match &raw.search {
            None => None,
            Some(s) => {
                let rate = |k: &str,
                            v: &Option<Spanned<toml::Value>>|
                 -> Result<Option<f64>, ScenarioError> {
                    match v {
                        None => Ok(None),
                        Some(x) => match parse_rate(x.get_ref()) {
                            Ok(r) => Ok(r),
                            Err(m) => cx.err(k, Some(x.span()), m),
                        },
                    }
                };
                let sp = SearchSpec {
                    loss_pct: cx
                        .float("search.loss_pct", &s.loss_pct, 0.0, 100.0)?
                        .unwrap_or(0.0),
                    resolution_pct: cx
                        .float("search.resolution_pct", &s.resolution_pct, 0.01, 50.0)?
                        .unwrap_or(1.0),
                    resolution_pps: cx.float(
                        "search.resolution_pps",
                        &s.resolution_pps,
                        1.0,
                        1e9,
                    )?,
                    trial: cx
                        .float("search.trial", &s.trial, 0.1, 3600.0)?
                        .unwrap_or(duration),
                    min_rate: rate("search.min_rate", &s.min_rate)?.unwrap_or(0.0),
                    max_rate: rate("search.max_rate", &s.max_rate)?,
                    max_trials: cx
                        .int::<u32>("search.max_trials", &s.max_trials, 1, 1000)?
                        .unwrap_or(20),
                };
                if let Some(m) = sp.max_rate
                    && m <= sp.min_rate
                {
                    return cx.err(
                        "search.max_rate",
                        None,
                        format!("{m} is not above search.min_rate {}", sp.min_rate),
                    );
                }
                if matches!(sweep, Some(Sweep::Rate(_))) {
                    return cx.err(
                        "search",
                        None,
                        "cannot be combined with sweep.rate (the search chooses the rate)",
                    );
                }
                Some(sp)
            }
        };

        // The traffic must be generable at every point.
        let points: Vec<TrafficSpec> = match &sweep {
            None => vec![spec.clone()],
            Some(s) => (0..s.len()).map(|i| s.apply(&spec, i)).collect(),
        };
        for p in &points {
            if let Err(m) = p.validate() {
                let key = match &sweep {
                    Some(s) => format!("sweep.{} / traffic", s.name()),
                    None => "traffic".to_string(),
                };
                return cx.err(&key, None, m);
            }
            if (p.flows as usize) < gen_cpus.len() {
                return cx.err(
                    "run.gen_cpus",
                    None,
                    format!(
                        "{} generator threads but only {} flows: every thread needs a flow",
                        gen_cpus.len(),
                        p.flows
                    ),
                );
            }
        }

        Ok(Scenario {
            name,
            description: raw.description.unwrap_or_default(),
            topology,
            dut,
            traffic: spec,
            src_mac_given: src_mac.is_some(),
            dst_mac_given: dst_mac.is_some(),
            engine,
            sink_engine,
            zero_copy: tr.zero_copy.unwrap_or(false),
            duration,
            warmup,
            drain,
            repeats,
            gen_cpus,
            sink_cpus,
            sweep,
            search,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(src: &str) -> String {
        Scenario::parse("t.toml", src)
            .expect_err("must fail")
            .to_string()
    }

    #[test]
    fn defaults() {
        let s = Scenario::parse("x.toml", "").expect("empty is fine");
        assert_eq!(s.name, "x");
        assert!(matches!(s.topology, Topology::Build { ref prefix, .. } if prefix == "vb"));
        assert_eq!(s.duration, 10.0);
        assert_eq!(s.repeats, 3);
        assert_eq!(s.traffic.flows, 1);
        assert_eq!(s.traffic.rate, None);
        assert_eq!(s.gen_cpus, vec![0]);
        assert_eq!(s.sink_cpus, vec![0]);
    }

    #[test]
    fn sink_engine_defaults_to_xdp_and_follows_af_packet() {
        let s = Scenario::parse("x.toml", "[traffic]\nengine = \"af_packet\"\n").expect("ok");
        assert_eq!(s.sink_engine, EnginePref::AfPacket);
        // The XDP counting sink is the default with AF_XDP generators.
        let s = Scenario::parse("x.toml", "").expect("ok");
        assert_eq!(s.sink_engine, EnginePref::Xdp);
        let s = Scenario::parse("x.toml", "[traffic]\nengine = \"afxdp\"\n").expect("ok");
        assert_eq!(s.sink_engine, EnginePref::Xdp);
        let s = Scenario::parse("x.toml", "[traffic]\nsink_engine = \"afxdp\"\n").expect("ok");
        assert_eq!(s.sink_engine, EnginePref::Afxdp);
        let s = Scenario::parse("x.toml", "[traffic]\nsink_engine = \"xdp\"\n").expect("ok");
        assert_eq!(s.engine, EnginePref::Auto);
        assert_eq!(s.sink_engine, EnginePref::Xdp);
        let e = err("[traffic]\nsink_engine = \"dpdk\"\n");
        assert!(
            e.contains("traffic.sink_engine") && e.contains("xdp"),
            "{e}"
        );
        // xdp is a sink engine only.
        let e = err("[traffic]\nengine = \"xdp\"\n");
        assert!(e.contains("traffic.engine"), "{e}");
    }

    #[test]
    fn full_file() {
        let s = Scenario::parse(
            "x.toml",
            r#"
name = "l2"
[topology]
mode = "build"
prefix = "vx"
dut_napi_cpu = 1
[dut]
daemon = "vswitchd --socket {state}/s --cores {dut_cpu}"
setup = ["vsctl --socket {state}/s add-port {in_if}"]
[traffic]
proto = "tcp-syn"
ip = 6
size = [[96, 3], [1500, 1]]
flows = 1024
fields = ["src_port", "dst_ip"]
rate = "1.5M"
[run]
duration = 5
warmup = 1
repeats = 2
[sweep]
flows = [1, 64, 1024]
"#,
        )
        .expect("valid");
        assert_eq!(s.traffic.rate, Some(1.5e6));
        assert!(s.traffic.ipv6);
        assert_eq!(s.traffic.sizes.0, vec![(96, 3), (1500, 1)]);
        assert_eq!(s.sweep, Some(Sweep::Flows(vec![1, 64, 1024])));
        assert_eq!(s.dut.as_ref().map(|d| d.cpu), Some(1));
    }

    #[test]
    fn errors_name_the_key_and_line() {
        let e = err("[traffic]\nsize = 40\n");
        assert!(
            e.starts_with("t.toml:2:8: traffic.size: frame size 40 is outside 64..=1518"),
            "{e}"
        );
        let e = err("[run]\nduraton = 5\n");
        assert!(
            e.contains("t.toml:2:1") && e.contains("unknown field `duraton`"),
            "{e}"
        );
        let e = err("[traffic]\nrate = \"fast\"\n");
        assert!(
            e.contains("traffic.rate: expected \"max\" or a rate"),
            "{e}"
        );
        let e = err("[traffic]\nflows = \"many\"\n");
        assert!(
            e.contains("t.toml:2:9") && e.contains("invalid type"),
            "{e}"
        );
        let e = err("[topology]\nmode = \"existing\"\ngen_if = \"a\"\n");
        assert!(e.contains("topology.sink_if: is required"), "{e}");
        let e = err("[topology]\nmode = \"magic\"\n");
        assert!(e.contains("t.toml:2:8: topology.mode"), "{e}");
        let e = err("[dut]\ndaemon = \"x {nope}\"\n");
        assert!(e.contains("dut.daemon: unknown placeholder {nope}"), "{e}");
        let e = err("[traffic]\nip = 6\nsize = 64\n");
        assert!(
            e.contains("traffic: frame size 64 outside 84..=1518"),
            "{e}"
        );
        let e = err("[traffic]\nflows = 10\nfields = [\"src_mac\"]\n");
        assert!(
            e.contains("traffic.fields: unknown field \"src_mac\""),
            "{e}"
        );
        let e = err("[sweep]\nflows = [1]\nsize = [64]\n");
        assert!(e.contains("sweep: give exactly one"), "{e}");
        let e = err("[traffic]\nsrc_ip = \"fd00::1\"\n");
        assert!(
            e.contains("traffic.src_ip: fd00::1 is not an IPv4 address"),
            "{e}"
        );
        let e = err("[run]\ngen_cpus = [0, 1]\n");
        assert!(
            e.contains("run.gen_cpus: 2 generator threads but only 1 flows"),
            "{e}"
        );
        let e = err("this is not toml");
        assert!(e.starts_with("t.toml:1:"), "{e}");
    }

    #[test]
    fn rates_and_sizes() {
        assert_eq!(
            parse_rate(&toml::Value::String("50k".into())),
            Ok(Some(50_000.0))
        );
        assert_eq!(parse_rate(&toml::Value::String("max".into())), Ok(None));
        assert_eq!(parse_rate(&toml::Value::Integer(1000)), Ok(Some(1000.0)));
        assert!(parse_rate(&toml::Value::Integer(0)).is_err());
        assert_eq!(
            parse_size(&toml::Value::String("imix".into())),
            Ok(SizeMix::imix())
        );
        assert!(parse_size(&toml::Value::Integer(2000)).is_err());
    }
}

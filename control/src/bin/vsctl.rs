//! `vsctl`: command line for the `vswitchd` control socket.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Parser, Subcommand};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use vswitch_control::agent::apply::apply_once;
use vswitch_control::agent::cluster::NodeSettings;
use vswitch_control::{Client, DEFAULT_SOCKET, format};
use vswitch_proto::{
    AddPortParams, ConntrackParams, ConntrackReply, CtProto, DelPortParams, DumpFlowsParams,
    FlowEntry, FlowModOp, FlowModText, FlowModsParams, FlowModsReply, GroupEntry, HelloReply, Op,
    PodRef, PoliciesParams, PoliciesReply, PortEntry, PortInfo, PortKind, PortMode, ServicesReply,
    StatsParams, StatsReply, SyncStatus, TraceParams, TraceReply,
};

#[derive(Debug, Parser)]
#[command(
    name = "vsctl",
    version,
    about = "Configure and inspect a running vswitchd through its control socket"
)]
struct Cli {
    /// Control socket of the vswitchd to talk to.
    #[arg(long, global = true, value_name = "PATH", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Print the daemon's result as JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Attach an interface to the switch as a port.
    AddPort {
        /// Interface name in the switch's network namespace.
        ifname: String,
        /// What the port connects the switch to.
        #[arg(long, default_value = "pod", value_parser = kind_parser())]
        kind: PortKind,
        /// How to read and write the interface; auto tries xdp-drv, xdp-skb, packet in turn.
        #[arg(long, default_value = "auto", value_parser = mode_parser())]
        mode: PortMode,
        /// The Pod behind the port, `NAMESPACE/NAME` (what the CNI plugin passes):
        /// the port gets that pod's flows once the Pod is in the desired state.
        #[arg(long, value_name = "NAMESPACE/NAME", value_parser = pod_ref_parser)]
        pod: Option<PodRef>,
    },
    /// Detach a port from the switch.
    DelPort { ifname: String },
    /// Show the daemon and its ports.
    Show,
    /// Show traffic and drop counters, of all ports or of one.
    Stats { ifname: Option<String> },
    /// Poll worker figures (packets, batches, busy %, cache hits), like
    /// `ovs-appctl dpif-netdev/pmd-stats-show`.
    PmdStats,
    /// Capture frames received and sent on a port (and, with --drops, frames dropped
    /// after arriving on it) into a pcap file `tcpdump -r` reads. Prints one line per
    /// frame (drop reasons there); stops after --count frames or on Ctrl-C.
    Capture {
        /// Port to capture on.
        port: String,
        /// Write the frames to this pcap file (classic libpcap, ns timestamps).
        #[arg(short = 'w', long = "write", value_name = "FILE")]
        write: PathBuf,
        /// Also capture frames dropped after arriving on the port, with the reason.
        #[arg(long)]
        drops: bool,
        /// Stop after this many frames.
        #[arg(long, short = 'c')]
        count: Option<u64>,
        /// `icmp`, `udp and dst port 53`, `src host 10.0.0.1`, or a flow match
        /// (`udp,tp_dst=53`).
        #[arg(long)]
        filter: Option<String>,
    },
    /// Print flows (all, or those a filter such as `ip,nw_dst=10.0.0.0/8` selects).
    DumpFlows {
        /// Only this table.
        #[arg(long)]
        table: Option<u8>,
        filter: Option<String>,
    },
    /// Add (or replace) a flow: `table=0,priority=100,ip,nw_dst=10.0.0.2 actions=output:2`.
    AddFlow { spec: String },
    /// Add the flows of FILE (one per line, `#` comments) in one atomic bundle.
    AddFlows { file: PathBuf },
    /// Delete flows at least as specific as SPEC (all flows without SPEC).
    DelFlows {
        spec: Option<String>,
        /// Only the flow with exactly this match and priority.
        #[arg(long)]
        strict: bool,
    },
    /// Replace the actions of the flows SPEC selects: `ip,nw_dst=10.0.0.2 actions=drop`.
    ModFlows { spec: String },
    /// Show which tables and flows a packet would take, and its final actions:
    /// `in_port=p1,tcp,nw_src=10.0.0.1,nw_dst=10.0.0.2,tp_dst=80`.
    Trace { spec: String },
    /// Add (or replace) a group: `group_id=1,type=select,bucket=actions=output:1,bucket=actions=output:2`.
    AddGroup { spec: String },
    /// Delete a group (`group_id=N`), or all groups.
    DelGroups { spec: Option<String> },
    /// Print groups.
    DumpGroups,
    /// Apply Kubernetes manifests once (a YAML/JSON file or a directory), as the
    /// agent's manifest mode reads them. Replaces the daemon's whole desired state.
    Apply {
        /// Manifest file or directory.
        file: PathBuf,
        /// This node's name: its Node object gives the LocalNode settings.
        #[arg(long, value_name = "NAME")]
        node_name: Option<String>,
        /// The node's uplink interface.
        #[arg(long, value_name = "IFNAME")]
        uplink: Option<String>,
    },
    /// Show the desired-state generation, object counts and last change.
    SyncStatus,
    /// List connection-tracking entries (or remove them with --flush); the
    /// filters combine (all must match).
    Conntrack {
        /// Remove the selected entries instead of listing them.
        #[arg(long)]
        flush: bool,
        /// Only this conntrack zone.
        #[arg(long, value_name = "Z")]
        zone: Option<u16>,
        /// Only connections from this address (original direction).
        #[arg(long, value_name = "IP")]
        src: Option<std::net::IpAddr>,
        /// Only connections to this address (original direction).
        #[arg(long, value_name = "IP")]
        dst: Option<std::net::IpAddr>,
        /// Only this protocol: tcp, udp, icmp, sctp.
        #[arg(long, value_name = "PROTO")]
        proto: Option<CtProto>,
        /// Most entries listed.
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
    },
    /// Show each service frontend: addresses, endpoints and their hit counts.
    Services,
    /// Show each NetworkPolicy: its rules with the connections each allowed, the
    /// connections denied while it isolated a pod, and the local pods it selects.
    Policies {
        /// Only the policies of this namespace.
        #[arg(long, short = 'n', value_name = "NAMESPACE")]
        namespace: Option<String>,
    },
}

/// `NAMESPACE/NAME`, both parts non-empty.
fn pod_ref_parser(s: &str) -> Result<PodRef, String> {
    match s.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok(PodRef {
                namespace: ns.to_string(),
                name: name.to_string(),
                container_id: None,
            })
        }
        _ => Err(format!("'{s}' is not NAMESPACE/NAME")),
    }
}

/// The kinds a user may ask for, listed in `--help`; parsed by the protocol's FromStr.
fn kind_parser() -> impl TypedValueParser<Value = PortKind> {
    PossibleValuesParser::new(PortKind::ALL.map(PortKind::as_str))
        .try_map(|s| s.parse::<PortKind>())
}

/// The modes a user may ask for (`memory` is for tests in-process only).
fn mode_parser() -> impl TypedValueParser<Value = PortMode> {
    let modes = [
        PortMode::Auto,
        PortMode::XdpDrv,
        PortMode::XdpSkb,
        PortMode::Packet,
    ];
    PossibleValuesParser::new(modes.map(PortMode::as_str)).try_map(|s| s.parse::<PortMode>())
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    match run(&cli) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("vsctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Help and version go out as clap writes them; real usage errors become one line,
/// like every other error of ours.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = e.print();
        return if e.use_stderr() {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        };
    }
    let rendered = e.render().to_string();
    let first = rendered.lines().next().unwrap_or("invalid arguments");
    let first = first.strip_prefix("error: ").unwrap_or(first);
    eprintln!("vsctl: {first} (see 'vsctl --help')");
    ExitCode::from(2)
}

/// Carries out the command and returns what to print.
fn run(cli: &Cli) -> anyhow::Result<String> {
    let mut client = Client::connect(&cli.socket)?;
    let json = cli.json;
    match &cli.command {
        Command::AddPort {
            ifname,
            kind,
            mode,
            pod,
        } => {
            let v = client.call(Op::AddPort(AddPortParams {
                name: ifname.clone(),
                kind: *kind,
                mode: *mode,
                pod: pod.clone(),
            }))?;
            output::<PortInfo>(&client, v, json, format::added_port)
        }
        Command::DelPort { ifname } => {
            let v = client.call(Op::DelPort(DelPortParams {
                name: ifname.clone(),
            }))?;
            if json {
                pretty(&v)
            } else {
                Ok(format!("deleted {ifname}\n"))
            }
        }
        Command::Show => {
            let hello = client.call(Op::Hello)?;
            let ports = client.call(Op::ListPorts)?;
            if json {
                return pretty(&json!({ "daemon": hello, "ports": ports }));
            }
            let hello: HelloReply = client.decode(hello)?;
            let ports: Vec<PortEntry> = client.decode(ports)?;
            Ok(format::show_entries(&hello, &ports))
        }
        Command::SyncStatus => {
            let v = client.call(Op::SyncStatus)?;
            output::<SyncStatus>(&client, v, json, format::sync_status)
        }
        Command::Apply {
            file,
            node_name,
            uplink,
        } => {
            let settings = NodeSettings {
                node_name: node_name.clone().unwrap_or_default(),
                uplink: uplink.clone(),
                overlay: Default::default(),
            };
            let s = apply_once(&mut client, file, settings)?;
            for e in &s.errors {
                eprintln!("vsctl: {e} (skipped)");
            }
            for r in &s.reply.rejected {
                eprintln!("vsctl: {}: rejected: {}", r.key, r.message);
            }
            let text = if json {
                pretty(&serde_json::to_value(&s.reply).context("formatting JSON")?)?
            } else {
                format!(
                    "applied {} objects as generation {}: {} upserted, {} deleted, {} rejected\n",
                    s.objects,
                    s.reply.generation,
                    s.reply.upserted,
                    s.reply.deleted,
                    s.reply.rejected.len()
                )
            };
            if !s.errors.is_empty() || !s.reply.rejected.is_empty() {
                print!("{text}");
                anyhow::bail!(
                    "{} bad document(s) skipped, {} object(s) rejected; the rest was applied",
                    s.errors.len(),
                    s.reply.rejected.len()
                );
            }
            Ok(text)
        }
        Command::Stats { ifname } => {
            let v = client.call(Op::Stats(StatsParams {
                port: ifname.clone(),
            }))?;
            output::<StatsReply>(&client, v, json, |s| format::stats(s, ifname.is_some()))
        }
        Command::Capture {
            port,
            write,
            drops,
            count,
            filter,
        } => capture(
            &mut client,
            port,
            write,
            *drops,
            *count,
            filter.as_deref(),
            json,
        ),
        Command::PmdStats => {
            let v = client.call(Op::Stats(StatsParams { port: None }))?;
            let s: StatsReply = client.decode(v)?;
            if json {
                return pretty(
                    &serde_json::to_value(format::pmd_stats_of(&s)).context("formatting JSON")?,
                );
            }
            Ok(format::pmd_stats(&s))
        }
        Command::DumpFlows { table, filter } => {
            let v = client.call(Op::DumpFlows(DumpFlowsParams {
                table: *table,
                filter: filter.clone(),
            }))?;
            output::<Vec<FlowEntry>>(&client, v, json, |f| format::dump_flows(f))
        }
        Command::AddFlow { spec } => flow_mods(&mut client, one_mod(FlowModOp::Add, spec), json),
        Command::AddFlows { file } => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))?;
            flow_mods(&mut client, flow_lines(&text), json)
        }
        Command::DelFlows { spec, strict } => {
            let op = if *strict {
                FlowModOp::DeleteStrict
            } else {
                FlowModOp::Delete
            };
            let spec = spec.clone().unwrap_or_default();
            flow_mods(&mut client, one_mod(op, &spec), json)
        }
        Command::ModFlows { spec } => {
            flow_mods(&mut client, one_mod(FlowModOp::Modify, spec), json)
        }
        Command::Trace { spec } => {
            let v = client.call(Op::Trace(TraceParams { spec: spec.clone() }))?;
            output::<TraceReply>(&client, v, json, format::trace)
        }
        Command::AddGroup { spec } => {
            flow_mods(&mut client, one_mod(FlowModOp::AddGroup, spec), json)
        }
        Command::DelGroups { spec } => {
            let spec = spec.clone().unwrap_or_default();
            flow_mods(&mut client, one_mod(FlowModOp::DeleteGroup, &spec), json)
        }
        Command::Conntrack {
            flush,
            zone,
            src,
            dst,
            proto,
            limit,
        } => {
            let v = client.call(Op::Conntrack(ConntrackParams {
                flush: *flush,
                zone: *zone,
                src: *src,
                dst: *dst,
                proto: *proto,
                limit: *limit,
            }))?;
            output::<ConntrackReply>(&client, v, json, |r| format::conntrack(r, *flush))
        }
        Command::Services => {
            let v = client.call(Op::Services)?;
            output::<ServicesReply>(&client, v, json, format::services)
        }
        Command::Policies { namespace } => {
            let v = client.call(Op::Policies(PoliciesParams {
                namespace: namespace.clone(),
            }))?;
            output::<PoliciesReply>(&client, v, json, format::policies)
        }
        Command::DumpGroups => {
            let v = client.call(Op::DumpGroups)?;
            output::<Vec<GroupEntry>>(&client, v, json, |g| {
                g.iter().map(|g| format!("{}\n", g.text)).collect()
            })
        }
    }
}

static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_interrupt(_: libc::c_int) {
    INTERRUPTED.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// `vsctl capture`: arms the daemon's tap, polls it, writes pcap, stops.
fn capture(
    client: &mut Client,
    port: &str,
    path: &std::path::Path,
    drops: bool,
    count: Option<u64>,
    filter: Option<&str>,
    json: bool,
) -> anyhow::Result<String> {
    use vswitch_control::capture::{PcapWriter, translate_filter, unhex};
    use vswitch_proto::{CaptureIdParams, CaptureReadReply, CaptureStartParams, CaptureStartReply};
    let filter = filter
        .map(translate_filter)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let v = client.call(Op::CaptureStart(CaptureStartParams {
        port: port.to_string(),
        drops,
        filter,
    }))?;
    let started: CaptureStartReply = client.decode(v)?;
    let id = started.id;
    let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()));
    let file = match file {
        Ok(f) => f,
        Err(e) => {
            let _ = client.call(Op::CaptureStop(CaptureIdParams { id, max: None }));
            return Err(e);
        }
    };
    let mut pcap = PcapWriter::new(std::io::BufWriter::new(file), started.snaplen)
        .with_context(|| format!("writing {}", path.display()))?;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(
            libc::SIGINT,
            on_interrupt as *const () as libc::sighandler_t,
        );
        libc::signal(
            libc::SIGTERM,
            on_interrupt as *const () as libc::sighandler_t,
        );
    }
    let want = count.unwrap_or(u64::MAX);
    let (mut n, mut lost, mut dropped) = (0u64, 0u64, 0u64);
    let mut listing = Vec::new();
    let result: anyhow::Result<()> = (|| {
        while n < want && !INTERRUPTED.load(std::sync::atomic::Ordering::Relaxed) {
            let max = (want - n).min(256) as u32;
            let v = client.call(Op::CaptureRead(CaptureIdParams { id, max: Some(max) }))?;
            let r: CaptureReadReply = client.decode(v)?;
            lost = r.lost;
            if r.packets.is_empty() {
                std::thread::sleep(std::time::Duration::from_millis(50));
                continue;
            }
            for p in r.packets {
                let data = unhex(&p.data).context("daemon sent bad hex")?;
                pcap.packet(p.ts_ns, p.orig_len, &data)
                    .with_context(|| format!("writing {}", path.display()))?;
                n += 1;
                let reason = p
                    .reason
                    .as_deref()
                    .map(|r| format!(" reason={r}"))
                    .unwrap_or_default();
                if p.dir == "drop" {
                    dropped += 1;
                }
                let line = format!(
                    "{n} {}.{:09} {} {port}{reason} len={}",
                    p.ts_ns / 1_000_000_000,
                    p.ts_ns % 1_000_000_000,
                    p.dir,
                    p.orig_len
                );
                if json {
                    listing.push(json!({"n": n, "ts_ns": p.ts_ns, "dir": p.dir, "reason": p.reason, "len": p.orig_len}));
                } else {
                    println!("{line}");
                }
            }
            pcap.flush()
                .with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    })();
    let _ = client.call(Op::CaptureStop(CaptureIdParams { id, max: None }));
    pcap.flush()
        .with_context(|| format!("writing {}", path.display()))?;
    result?;
    if json {
        return pretty(
            &json!({"file": path, "packets": n, "drops": dropped, "lost": lost, "listing": listing}),
        );
    }
    Ok(format!(
        "{n} packets captured to {} ({dropped} drops, {lost} lost)\n",
        path.display()
    ))
}

/// Sends one bundle and summarises what it did.
fn flow_mods(client: &mut Client, mods: Vec<FlowModText>, json: bool) -> anyhow::Result<String> {
    let v = client.call(Op::FlowMods(FlowModsParams { mods }))?;
    output::<FlowModsReply>(client, v, json, format::flow_mods)
}

fn one_mod(op: FlowModOp, spec: &str) -> Vec<FlowModText> {
    vec![FlowModText {
        op,
        spec: spec.to_string(),
    }]
}

/// Flow lines of an `add-flows` file: blank lines and `#` comments skipped.
fn flow_lines(text: &str) -> Vec<FlowModText> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| FlowModText {
            op: FlowModOp::Add,
            spec: l.to_string(),
        })
        .collect()
}

/// The raw result with `--json`, else the typed result through `text`.
fn output<T: DeserializeOwned>(
    client: &Client,
    v: Value,
    json: bool,
    text: impl FnOnce(&T) -> String,
) -> anyhow::Result<String> {
    if json {
        return pretty(&v);
    }
    let typed: T = client.decode(v)?;
    let mut s = text(&typed);
    if !s.ends_with('\n') {
        s.push('\n');
    }
    Ok(s)
}

fn pretty(v: &Value) -> anyhow::Result<String> {
    let mut s = serde_json::to_string_pretty(v).context("formatting JSON")?;
    s.push('\n');
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_work_before_and_after_the_subcommand() {
        let a =
            Cli::try_parse_from(["vsctl", "--socket", "/s", "--json", "stats"]).expect("before");
        let b = Cli::try_parse_from(["vsctl", "stats", "--socket", "/s", "--json"]).expect("after");
        for cli in [a, b] {
            assert_eq!(cli.socket, PathBuf::from("/s"));
            assert!(cli.json);
            assert!(matches!(cli.command, Command::Stats { ifname: None }));
        }
    }

    #[test]
    fn add_port_defaults_and_choices() {
        let cli = Cli::try_parse_from(["vsctl", "add-port", "veth1"]).expect("defaults");
        assert_eq!(cli.socket, PathBuf::from(DEFAULT_SOCKET));
        assert!(matches!(
            cli.command,
            Command::AddPort { ref ifname, kind: PortKind::Pod, mode: PortMode::Auto, pod: None } if ifname == "veth1"
        ));
        let cli = Cli::try_parse_from([
            "vsctl", "add-port", "eth0", "--kind", "uplink", "--mode", "xdp-skb",
        ])
        .expect("explicit");
        assert!(matches!(
            cli.command,
            Command::AddPort {
                kind: PortKind::Uplink,
                mode: PortMode::XdpSkb,
                ..
            }
        ));
        assert!(Cli::try_parse_from(["vsctl", "add-port", "x", "--mode", "memory"]).is_err());
        assert!(Cli::try_parse_from(["vsctl", "add-port", "x", "--kind", "router"]).is_err());
    }

    #[test]
    fn add_port_pod_ref() {
        let cli = Cli::try_parse_from(["vsctl", "add-port", "s1", "--pod", "bench/sink"])
            .expect("pod ref");
        match cli.command {
            Command::AddPort { pod: Some(p), .. } => {
                assert_eq!((p.namespace.as_str(), p.name.as_str()), ("bench", "sink"));
                assert_eq!(p.container_id, None);
            }
            other => panic!("unexpected {other:?}"),
        }
        let cli = Cli::try_parse_from(["vsctl", "add-port", "s1"]).expect("no pod");
        assert!(matches!(cli.command, Command::AddPort { pod: None, .. }));
        for bad in ["sink", "/sink", "bench/", "a/b/c", ""] {
            assert!(
                Cli::try_parse_from(["vsctl", "add-port", "s1", "--pod", bad]).is_err(),
                "{bad} accepted"
            );
        }
    }

    #[test]
    fn conntrack_filters_parse() {
        let cli = Cli::try_parse_from([
            "vsctl",
            "conntrack",
            "--flush",
            "--zone",
            "1",
            "--src",
            "10.0.0.1",
            "--dst",
            "fd00::2",
            "--proto",
            "udp",
        ])
        .expect("all filters");
        assert!(matches!(
            cli.command,
            Command::Conntrack {
                flush: true,
                zone: Some(1),
                src: Some(_),
                dst: Some(_),
                proto: Some(CtProto::Udp),
                limit: None
            }
        ));
        assert!(Cli::try_parse_from(["vsctl", "conntrack", "--src", "10.0.0.300"]).is_err());
        assert!(Cli::try_parse_from(["vsctl", "conntrack", "--proto", "gre"]).is_err());
        assert!(Cli::try_parse_from(["vsctl", "conntrack", "--zone", "65536"]).is_err());
        assert!(matches!(
            Cli::try_parse_from(["vsctl", "services", "--json"])
                .expect("services")
                .command,
            Command::Services
        ));
        assert!(matches!(
            Cli::try_parse_from(["vsctl", "policies", "-n", "x"])
                .expect("policies")
                .command,
            Command::Policies { namespace: Some(n) } if n == "x"
        ));
        assert!(Cli::try_parse_from(["vsctl", "policies", "extra"]).is_err());
    }
}

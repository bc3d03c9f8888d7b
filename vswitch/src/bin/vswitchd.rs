//! vswitchd: the switch daemon. Ports, per-CPU poll workers, the control socket.

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use vswitch::Datapath;
use vswitch::config::{DaemonConfig, parse_cores};
use vswitch::control::ControlServer;
use vswitch::daemon::Daemon;
use vswitch::desired::DesiredStore;
use vswitch::persist::StateStore;

#[derive(Parser, Debug)]
#[command(name = "vswitchd", version, about = "Userspace AF_XDP switch daemon")]
struct Args {
    /// Control socket (created mode 0600).
    #[arg(long, default_value = "/run/vswitch/vswitchd.sock")]
    socket: PathBuf,
    /// Optional TOML configuration; built-in defaults otherwise.
    #[arg(long)]
    config: Option<PathBuf>,
    /// CPUs for poll workers, e.g. "1" or "0,1" or "0-3" (default: one worker, not pinned).
    #[arg(long)]
    cores: Option<String>,
    /// Where ports and desired state are kept across restarts.
    #[arg(long, default_value = "/var/lib/vswitch")]
    state_dir: PathBuf,
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9400); overrides
    /// `[metrics] addr`. Off when neither is given.
    #[arg(long)]
    metrics_addr: Option<std::net::SocketAddr>,
    /// Log connections NetworkPolicy denies (target `vswitch::policy_audit`), at
    /// most this many per second per worker; overrides `[policy] audit_per_s`.
    /// 0: off (the default).
    #[arg(long, value_name = "N")]
    policy_audit_per_s: Option<u32>,
    /// Run the in-kernel XDP fast path on pod/gateway AF_XDP ports: forwarding
    /// decisions the switch cached (plain L2 forwarding between two such ports) are
    /// executed by our XDP program, redirecting between veths in the kernel; the
    /// switch stays the slow path. Same as `[datapath] xdp_fastpath = true`.
    #[arg(long)]
    xdp_fastpath: bool,
}

fn run(args: Args) -> Result<(), String> {
    let cfg = match &args.config {
        Some(p) => DaemonConfig::load(p)?,
        None => DaemonConfig::default(),
    };
    let cores: Vec<Option<usize>> = match &args.cores {
        Some(list) => parse_cores(list)?.into_iter().map(Some).collect(),
        None => vec![None],
    };
    // Pinned workers get their CPUs to themselves; this thread (the control loop)
    // and the threads it starts run on the others. Workers pin themselves, so the
    // order does not matter.
    let poll_cores: Vec<usize> = cores.iter().flatten().copied().collect();
    if !poll_cores.is_empty() {
        match vswitch::housekeeping::keep_off_cores(&poll_cores) {
            Ok(Some(kept)) => tracing::info!(?kept, "housekeeping threads off the poll cores"),
            Ok(None) => {
                tracing::info!("no CPU left besides the poll cores: housekeeping shares them")
            }
            Err(e) => tracing::warn!(error = %e, "could not move housekeeping off the poll cores"),
        }
    }
    let shutdown = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, shutdown.clone())
            .map_err(|e| format!("signal handler: {e}"))?;
    }
    let store = StateStore::open(&args.state_dir)
        .map_err(|e| format!("state dir {}: {e}", args.state_dir.display()))?;
    let mut server = ControlServer::bind(&args.socket)
        .map_err(|e| format!("socket {}: {e}", args.socket.display()))?;
    let mut dp_cfg = cfg.datapath(cores);
    if let Some(n) = args.policy_audit_per_s {
        dp_cfg.policy_audit_per_s = n;
    }
    if args.xdp_fastpath {
        dp_cfg.xdp_fastpath = true;
    }
    let dp = Datapath::new(dp_cfg).map_err(|e| format!("datapath: {e}"))?;
    // Desired state first: policy (and every other feature's flows) is realised
    // before a restored port forwards its first packet. Pod links are looked up
    // when ports are listed, so they find the ports restored next.
    let overlay = match cfg.overlay.mode {
        Some(_) => Some(cfg.overlay.config()?),
        None => None,
    };
    let mut daemon = Daemon::new(dp, Some(store)).with_desired(
        DesiredStore::new(Some(&args.state_dir))
            .with_realizers(vswitch::desired::realize::chain(overlay)),
    );
    // Then the ports, each announced to the realizers as it comes back.
    let (restored, skipped) = daemon.restore();
    if let Some(addr) = args.metrics_addr.or(cfg.metrics.addr) {
        let shared = Arc::new(vswitch::metrics::MetricsShared::default());
        vswitch::metrics::spawn(addr, shared.clone())
            .map_err(|e| format!("metrics address {addr}: {e}"))?;
        daemon = daemon.with_metrics(shared);
    }
    tracing::info!(socket = %args.socket.display(), restored, skipped, "vswitchd ready");
    let served = server.run(&mut daemon, &shutdown);
    tracing::info!("shutting down");
    // Workers stop and close every socket (detaching XDP) before the socket file goes.
    daemon.datapath().shutdown();
    let _ = std::fs::remove_file(&args.socket);
    served.map_err(|e| format!("control socket: {e}"))
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vswitchd: {e}");
            ExitCode::FAILURE
        }
    }
}

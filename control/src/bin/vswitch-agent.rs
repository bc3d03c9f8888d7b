//! `vswitch-agent`: watches the cluster (Kubernetes API or manifests on disk) and
//! keeps `vswitchd`'s desired state in step with it. See `docs/agent.md`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use clap::{ArgGroup, Parser};
use vswitch_control::DEFAULT_SOCKET;
use vswitch_control::agent::cluster::NodeSettings;
use vswitch_control::agent::{AgentConfig, Source, run};

#[derive(Debug, Parser)]
#[command(
    name = "vswitch-agent",
    version,
    about = "Feed cluster state (Kubernetes API or manifests) into vswitchd"
)]
#[command(group(ArgGroup::new("source").required(true).args(["kubeconfig", "in_cluster", "manifests"])))]
struct Cli {
    /// Control socket of the vswitchd to feed.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// This node's name: its Node object gives the pod CIDRs, gateway and node IP.
    #[arg(long, value_name = "NAME")]
    node_name: String,
    /// Watch the API server named in this kubeconfig.
    #[arg(long, value_name = "PATH")]
    kubeconfig: Option<PathBuf>,
    /// Watch the API server with the pod's service account.
    #[arg(long)]
    in_cluster: bool,
    /// Read manifests (a YAML/JSON file or a directory of them), re-read on change.
    #[arg(long, value_name = "PATH")]
    manifests: Option<PathBuf>,
    /// The node's uplink interface.
    #[arg(long, value_name = "IFNAME")]
    uplink: Option<String>,
    /// The overlay vswitchd speaks (`[overlay] mode`): with `flannel` the agent
    /// publishes flannel's annotations (backend-type, backend-data with our VTEP
    /// MAC, public-ip) on this node's Node object (Kubernetes sources only).
    #[arg(long, value_name = "MODE", default_value = "vxlan")]
    overlay: vswitch_control::agent::cluster::OverlayMode,
    /// Create and keep the gateway port into the host stack: the veth IFNAME (the
    /// gateway IP and MAC of this node's pod CIDR) and IFNAME-sw (a `gateway` port
    /// of vswitchd), routes to the other nodes' pod CIDRs and the MASQUERADE rule
    /// for pod traffic leaving the cluster (docs/overlay.md). Off by default.
    #[arg(long, value_name = "IFNAME", value_parser = parse_gateway)]
    gateway: Option<String>,
    /// Where /healthz, /readyz and /metrics are served.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9401")]
    metrics_addr: SocketAddr,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => return usage_error(e),
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let source = match (cli.kubeconfig, cli.in_cluster, cli.manifests) {
        (Some(p), _, _) => Source::Kubeconfig(p),
        (_, true, _) => Source::InCluster,
        (_, _, Some(p)) => Source::Manifests(p),
        // clap's required group makes this unreachable; answer like a usage error.
        _ => {
            eprintln!("vswitch-agent: one of --kubeconfig, --in-cluster, --manifests is needed");
            return ExitCode::from(2);
        }
    };
    let cfg = AgentConfig {
        socket: cli.socket,
        settings: NodeSettings {
            node_name: cli.node_name,
            uplink: cli.uplink,
            overlay: cli.overlay,
        },
        source,
        metrics_addr: cli.metrics_addr,
        gateway: cli.gateway,
    };
    // SIGTERM/SIGINT end the process: there is nothing to undo, the daemon keeps
    // the state it was given.
    match run(cfg, Arc::new(AtomicBool::new(false))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vswitch-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn parse_gateway(s: &str) -> Result<String, String> {
    vswitch_control::agent::gateway::check_name(s).map(|()| s.to_string())
}

/// Help and version as clap prints them; usage errors as one line.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    let rendered = e.render().to_string();
    let first = rendered.lines().next().unwrap_or("invalid arguments");
    let first = first.strip_prefix("error: ").unwrap_or(first);
    eprintln!("vswitch-agent: {first} (see 'vswitch-agent --help')");
    ExitCode::from(2)
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
    fn exactly_one_source() {
        assert!(Cli::try_parse_from(["a", "--node-name", "n"]).is_err());
        assert!(
            Cli::try_parse_from(["a", "--node-name", "n", "--in-cluster", "--manifests", "/m"])
                .is_err()
        );
        let c = Cli::try_parse_from(["a", "--node-name", "n", "--manifests", "/m"]).expect("ok");
        assert_eq!(c.metrics_addr.to_string(), "127.0.0.1:9401");
        assert_eq!(c.socket, PathBuf::from(DEFAULT_SOCKET));
        assert_eq!(c.gateway, None);
        let c = Cli::try_parse_from([
            "a",
            "--node-name",
            "n",
            "--manifests",
            "/m",
            "--gateway",
            "vsgw0",
        ])
        .expect("ok");
        assert_eq!(c.gateway.as_deref(), Some("vsgw0"));
        assert!(
            Cli::try_parse_from([
                "a",
                "--node-name",
                "n",
                "--manifests",
                "/m",
                "--gateway",
                "much-too-long0"
            ])
            .is_err()
        );
    }
}

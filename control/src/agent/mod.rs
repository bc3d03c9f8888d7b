//! `vswitch-agent`: feeds cluster state into `vswitchd`.
//!
//! ```text
//!  Kubernetes API ──watch events──┐                              ┌── /healthz /readyz /metrics
//!                                 ├─► Cluster ─changed keys─► Handoff ─► Syncer ─► vswitchd socket
//!  manifest dir ──poll 1 s, ──────┘  (translate)              (state +   (full / delta)
//!                 per-object diff                              pending)
//! ```
//!
//! Sources ([`kube_source`], [`manifest`]) deliver per-object events; the
//! [`cluster::Cluster`] translates the objects touched ([`translate`]) and derives
//! the desired-state keys they affect; the [`syncer`] thread sends `vswitchd` those
//! keys as one delta (everything after a (re)connect). Each step costs in
//! proportion to the change, not to the cluster. See `docs/agent.md`.

pub mod apply;
pub mod cluster;
pub mod flannel;
pub mod gateway;
pub mod http;
pub mod kobj;
pub mod kube_source;
pub mod manifest;
pub mod metrics;
pub mod syncer;
pub mod translate;

use anyhow::Context as _;
use cluster::{Cluster, NodeSettings};
use manifest::ManifestSet;
use metrics::Metrics;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use syncer::{Handoff, Syncer};

/// How often the manifest path is checked for changes.
pub const MANIFEST_POLL: Duration = Duration::from_secs(1);

/// Where the cluster state comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Kubeconfig(PathBuf),
    InCluster,
    Manifests(PathBuf),
}

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub socket: PathBuf,
    pub settings: NodeSettings,
    pub source: Source,
    pub metrics_addr: SocketAddr,
    /// `--gateway IFNAME`: create and keep the gateway port ([`gateway`]).
    pub gateway: Option<String>,
}

/// Runs the agent until `stop` is set or the source fails for good.
pub fn run(cfg: AgentConfig, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    let listener = TcpListener::bind(cfg.metrics_addr)
        .with_context(|| format!("metrics address {}", cfg.metrics_addr))?;
    tracing::info!(addr = %listener.local_addr()?, "serving /healthz, /readyz, /metrics");
    http::spawn(listener, metrics.clone()).context("starting the metrics server")?;

    let handoff = Arc::new(Handoff::default());
    let syncer = Syncer::new(
        cfg.socket.clone(),
        handoff.clone(),
        metrics.clone(),
        stop.clone(),
    );
    let sync_thread = std::thread::Builder::new()
        .name("sync".into())
        .spawn(move || syncer.run())
        .context("starting the sync thread")?;
    let gateway_handle = match &cfg.gateway {
        Some(name) => {
            gateway::check_name(name).map_err(|e| anyhow::anyhow!(e))?;
            let h = Arc::new(gateway::GatewayHandle::default());
            let gcfg = gateway::GatewayConfig {
                name: name.clone(),
                socket: cfg.socket.clone(),
                uplink: cfg.settings.uplink.clone(),
            };
            let (h2, stop2) = (h.clone(), stop.clone());
            std::thread::Builder::new()
                .name("gateway".into())
                .spawn(move || gateway::run(gcfg, h2, stop2))
                .context("starting the gateway thread")?;
            Some(h)
        }
        None => None,
    };

    let result = match cfg.source {
        Source::Manifests(path) => watch_manifests(
            &path,
            cfg.settings,
            &handoff,
            &metrics,
            &stop,
            gateway_handle.as_deref(),
        ),
        Source::Kubeconfig(_) | Source::InCluster => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("tokio runtime")?;
            rt.block_on(async {
                let client = match &cfg.source {
                    Source::Kubeconfig(p) => kube_source::client_from_kubeconfig(p).await?,
                    _ => kube_source::client_in_cluster()?,
                };
                kube_source::run_with_gateway(
                    client,
                    cfg.settings,
                    handoff.clone(),
                    metrics.clone(),
                    stop.clone(),
                    gateway_handle.clone(),
                )
                .await
            })
        }
    };
    stop.store(true, Ordering::Relaxed);
    let _ = sync_thread.join();
    result
}

/// The manifest source: re-reads `path` every [`MANIFEST_POLL`] and hands the
/// objects that changed (and only those) to the cluster and on to the syncer.
fn watch_manifests(
    path: &std::path::Path,
    settings: NodeSettings,
    handoff: &Handoff,
    metrics: &Metrics,
    stop: &AtomicBool,
    gateway: Option<&gateway::GatewayHandle>,
) -> anyhow::Result<()> {
    let mut set = ManifestSet::new(path);
    let mut cluster = Cluster::new(settings);
    let mut first = true;
    let mut last_error = String::new();
    while !stop.load(Ordering::Relaxed) {
        match set.refresh() {
            Ok(r) => {
                last_error.clear();
                for e in &r.errors {
                    tracing::warn!(error = %e, "bad manifest document skipped; the last good state of its object stays");
                }
                metrics.manifest_errors(r.errors.len());
                for u in &r.unsupported {
                    tracing::debug!(kind = %u, "kind not read by the agent; ignored");
                }
                if !r.events.is_empty() || first {
                    let seen_at = r.seen_at.unwrap_or_else(std::time::Instant::now);
                    for ev in &r.events {
                        match ev {
                            manifest::ManifestEvent::Apply(o) => {
                                if let Err(e) = cluster.apply(o) {
                                    tracing::warn!(error = %e, "object not translated; its last good state stays");
                                }
                            }
                            manifest::ManifestEvent::Delete(k) => cluster.delete(k),
                        }
                    }
                    let changes = cluster.take_changes();
                    gateway::update(gateway, &cluster, &changes);
                    handoff.update(changes, seen_at);
                    for (kind, n) in cluster.counts() {
                        metrics.set_watched(kind.as_str(), n);
                    }
                    first = false;
                }
            }
            Err(e) if first => return Err(anyhow::anyhow!("manifests: {e}")),
            Err(e) => {
                if e != last_error {
                    tracing::warn!(error = %e, "cannot read manifests; keeping the last state");
                    last_error = e;
                }
            }
        }
        let until = std::time::Instant::now() + MANIFEST_POLL;
        while std::time::Instant::now() < until && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(())
}

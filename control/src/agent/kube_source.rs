//! The Kubernetes API as a source: one kube-runtime watcher per resource.
//!
//! A watcher lists (paginated, with the list's resourceVersion), then watches from
//! that resourceVersion with bookmarks on, so a reconnect resumes where it left
//! off; a `410 Gone` (resourceVersion too old) makes it list again. Errors come out
//! of the stream as items, which are counted; `default_backoff` then delays the
//! next attempt exponentially (0.8 s doubling to 30 s, with jitter, reset after two
//! quiet minutes). A relist is applied as a replacement of that kind, so objects
//! deleted while the watch was down go away too.

use crate::agent::cluster::{Cluster, NodeSettings, OverlayMode};
use crate::agent::flannel;
use crate::agent::kobj::{KubeKey, KubeKind, KubeObject};
use crate::agent::metrics::Metrics;
use crate::agent::syncer::Handoff;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::Api;
use kube::api::{Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use std::collections::BTreeSet;
use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;

/// Most updates applied in one go before the changes are handed on (a relist
/// burst is then handed on in pieces rather than after all of it).
const MAX_BATCH: usize = 1024;

/// A Node patch that did not take effect (failed, or the Node still differs) is
/// sent again after this long.
pub const PATCH_RETRY: Duration = Duration::from_secs(10);

/// What a watcher tells the aggregator.
#[derive(Debug)]
enum Update {
    /// A complete (re)list of one kind.
    Replace(KubeKind, Vec<KubeObject>),
    Apply(KubeObject),
    Delete(KubeKey),
}

/// A client from a kubeconfig file.
pub async fn client_from_kubeconfig(path: &std::path::Path) -> anyhow::Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(path)
        .map_err(|e| anyhow::anyhow!("kubeconfig {}: {e}", path.display()))?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .map_err(|e| anyhow::anyhow!("kubeconfig {}: {e}", path.display()))?;
    Ok(kube::Client::try_from(cfg)?)
}

/// A client from the pod's service account (`--in-cluster`).
pub fn client_in_cluster() -> anyhow::Result<kube::Client> {
    let cfg = kube::Config::incluster().map_err(|e| anyhow::anyhow!("in-cluster config: {e}"))?;
    Ok(kube::Client::try_from(cfg)?)
}

fn watch<K>(
    api: Api<K>,
    kind: KubeKind,
    tx: mpsc::UnboundedSender<Update>,
    metrics: Arc<Metrics>,
) -> tokio::task::JoinHandle<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + Debug + Send + Sync + 'static,
    KubeObject: From<K>,
{
    tokio::spawn(async move {
        let mut stream = watcher::watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        let mut buffer: Vec<KubeObject> = Vec::new();
        while let Some(ev) = stream.next().await {
            let update = match ev {
                Ok(Event::Init) => {
                    buffer.clear();
                    continue;
                }
                Ok(Event::InitApply(o)) => {
                    buffer.push(o.into());
                    continue;
                }
                Ok(Event::InitDone) => Update::Replace(kind, std::mem::take(&mut buffer)),
                Ok(Event::Apply(o)) => Update::Apply(o.into()),
                Ok(Event::Delete(o)) => Update::Delete(KubeObject::from(o).key()),
                Err(e) => {
                    metrics.api_error(kind.as_str());
                    tracing::warn!(kind = %kind, error = %e, "watch error; retrying with backoff");
                    continue;
                }
            };
            if tx.send(update).is_err() {
                return;
            }
        }
    })
}

/// Watches the cluster and publishes desired state until `stop` is set. The first
/// state is published once every kind has been listed, so the first full sync
/// is complete.
pub async fn run(
    client: kube::Client,
    settings: NodeSettings,
    handoff: Arc<Handoff>,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    run_with_gateway(client, settings, handoff, metrics, stop, None).await
}

/// [`run`], also handing the Node objects to the gateway thread (`--gateway`).
pub async fn run_with_gateway(
    client: kube::Client,
    settings: NodeSettings,
    handoff: Arc<Handoff>,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
    gateway: Option<Arc<crate::agent::gateway::GatewayHandle>>,
) -> anyhow::Result<()> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let nodes: Api<Node> = Api::all(client.clone());
    let mut last_patch: Option<(serde_json::Value, std::time::Instant)> = None;
    let tasks = vec![
        watch(
            Api::<Node>::all(client.clone()),
            KubeKind::Node,
            tx.clone(),
            metrics.clone(),
        ),
        watch(
            Api::<Namespace>::all(client.clone()),
            KubeKind::Namespace,
            tx.clone(),
            metrics.clone(),
        ),
        watch(
            Api::<Pod>::all(client.clone()),
            KubeKind::Pod,
            tx.clone(),
            metrics.clone(),
        ),
        watch(
            Api::<Service>::all(client.clone()),
            KubeKind::Service,
            tx.clone(),
            metrics.clone(),
        ),
        watch(
            Api::<EndpointSlice>::all(client.clone()),
            KubeKind::EndpointSlice,
            tx.clone(),
            metrics.clone(),
        ),
        watch(
            Api::<NetworkPolicy>::all(client),
            KubeKind::NetworkPolicy,
            tx,
            metrics.clone(),
        ),
    ];
    let mut cluster = Cluster::new(settings);
    let mut listed: BTreeSet<KubeKind> = BTreeSet::new();
    let mut announced = false;
    let result = loop {
        if stop.load(Ordering::Relaxed) {
            break Ok(());
        }
        if cluster.settings().overlay == OverlayMode::Flannel {
            publish_flannel(&nodes, &cluster, &mut last_patch, &metrics).await;
        }
        let first = match tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
            Err(_) => continue,
            Ok(None) => break Err(anyhow::anyhow!("every watcher ended")),
            Ok(Some(u)) => u,
        };
        let seen_at = std::time::Instant::now();
        // What else has already arrived goes with it (a burst: a relist, a
        // rollout); nothing waits for more — the syncer coalesces what comes in
        // while it is busy.
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(u) => batch.push(u),
                Err(_) => break,
            }
        }
        for u in batch {
            let errors = match u {
                Update::Replace(kind, objs) => {
                    if listed.insert(kind) {
                        tracing::info!(kind = %kind, objects = objs.len(), "listed");
                    }
                    cluster.replace_kind(kind, &objs)
                }
                Update::Apply(o) => cluster.apply(&o).err().into_iter().collect(),
                Update::Delete(k) => {
                    cluster.delete(&k);
                    Vec::new()
                }
            };
            for e in errors {
                tracing::warn!(error = %e, "object not translated; its last good state stays");
            }
        }
        for (kind, n) in cluster.counts() {
            metrics.set_watched(kind.as_str(), n);
        }
        if listed.len() == KubeKind::ALL.len() {
            if !announced {
                tracing::info!("every kind listed; syncing");
                announced = true;
            }
            // Changes accumulated while listing go out together with the first.
            let changes = cluster.take_changes();
            crate::agent::gateway::update(gateway.as_deref(), &cluster, &changes);
            handoff.update(changes, seen_at);
        }
    };
    for t in tasks {
        t.abort();
    }
    result
}

/// In flannel mode: makes our Node carry flannel's annotations (see
/// [`flannel`]), patching only what differs; a patch is not repeated for
/// [`PATCH_RETRY`] unless what it should say changed.
async fn publish_flannel(
    api: &Api<Node>,
    cluster: &Cluster,
    last: &mut Option<(serde_json::Value, std::time::Instant)>,
    metrics: &Metrics,
) {
    let Some(node) = cluster.own_node() else {
        return;
    };
    let Some(want) = flannel::own_annotations(node) else {
        return;
    };
    let current = node
        .vtep
        .as_ref()
        .map(|v| v.annotations.clone())
        .unwrap_or_default();
    let Some(patch) = flannel::patch(&current, &want) else {
        return;
    };
    if let Some((sent, at)) = last.as_ref()
        && *sent == patch
        && at.elapsed() < PATCH_RETRY
    {
        return;
    }
    *last = Some((patch.clone(), std::time::Instant::now()));
    match api
        .patch(&node.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => tracing::info!(node = %node.name, "published flannel annotations on our Node"),
        Err(e) => {
            metrics.api_error("node-patch");
            tracing::warn!(node = %node.name, error = %e, "cannot publish flannel annotations; retrying");
        }
    }
}

//! The agent's Prometheus metrics and its readiness flag.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicBool, Ordering};

type Labels = Vec<(String, String)>;

fn label(k: &str, v: &str) -> Labels {
    vec![(k.to_string(), v.to_string())]
}

pub struct Metrics {
    registry: Registry,
    /// Kubernetes objects held, by kind (`Pod`, `EndpointSlice`...).
    watched: Family<Labels, Gauge>,
    /// Desired-state objects last pushed, by model kind.
    desired: Family<Labels, Gauge>,
    /// Errors from the API server (list/watch), by kind.
    api_errors: Family<Labels, Counter>,
    /// Syncs sent, by `type` (full, delta) and `result` (ok, error).
    syncs: Family<Labels, Counter>,
    generation: Gauge,
    /// From a change being seen to the daemon acknowledging it.
    realization: Histogram,
    /// The daemon's own share: applying and realising a sync (its `realize_us`).
    daemon_realize: Histogram,
    rejected: Counter,
    manifest_errors: Counter,
    connects: Counter,
    ready: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut m = Metrics {
            registry: Registry::with_prefix("vswitch_agent"),
            watched: Family::default(),
            desired: Family::default(),
            api_errors: Family::default(),
            syncs: Family::default(),
            generation: Gauge::default(),
            // 100 us to ~52 s: the target for one change is 10 ms.
            realization: Histogram::new(exponential_buckets(0.0001, 2.0, 20)),
            daemon_realize: Histogram::new(exponential_buckets(0.0001, 2.0, 20)),
            rejected: Counter::default(),
            manifest_errors: Counter::default(),
            connects: Counter::default(),
            ready: AtomicBool::new(false),
        };
        let r = &mut m.registry;
        r.register(
            "watched_objects",
            "Kubernetes objects held by the agent, by kind",
            m.watched.clone(),
        );
        r.register(
            "desired_objects",
            "Desired-state objects last pushed to vswitchd, by kind",
            m.desired.clone(),
        );
        r.register(
            "api_errors",
            "Errors listing or watching the Kubernetes API, by kind",
            m.api_errors.clone(),
        );
        r.register(
            "syncs",
            "Syncs sent to vswitchd, by type (full, delta) and result (ok, error)",
            m.syncs.clone(),
        );
        r.register(
            "synced_generation",
            "Desired-state generation vswitchd last acknowledged",
            m.generation.clone(),
        );
        r.register(
            "realization_seconds",
            "Time from a change being seen by the agent to vswitchd acknowledging it",
            m.realization.clone(),
        );
        r.register(
            "daemon_realize_seconds",
            "Time vswitchd took to apply and realise each sync request (its realize_us)",
            m.daemon_realize.clone(),
        );
        r.register(
            "rejected_objects",
            "Objects vswitchd refused as invalid",
            m.rejected.clone(),
        );
        r.register(
            "manifest_errors",
            "Bad manifest documents seen (each reported with file and line)",
            m.manifest_errors.clone(),
        );
        r.register(
            "daemon_connects",
            "Connections made to vswitchd's control socket",
            m.connects.clone(),
        );
        m
    }

    pub fn set_watched(&self, kind: &str, n: usize) {
        self.watched
            .get_or_create(&label("kind", kind))
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub fn set_desired(&self, kind: &str, n: usize) {
        self.desired
            .get_or_create(&label("kind", kind))
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub fn api_error(&self, kind: &str) {
        self.api_errors.get_or_create(&label("kind", kind)).inc();
    }

    pub fn sync(&self, kind: &str, ok: bool) {
        let labels = vec![
            ("type".to_string(), kind.to_string()),
            (
                "result".to_string(),
                if ok { "ok" } else { "error" }.to_string(),
            ),
        ];
        self.syncs.get_or_create(&labels).inc();
    }

    pub fn synced(&self, generation: u64, latency: Option<std::time::Duration>) {
        self.generation
            .set(i64::try_from(generation).unwrap_or(i64::MAX));
        if let Some(l) = latency {
            self.realization.observe(l.as_secs_f64());
        }
        self.ready.store(true, Ordering::Relaxed);
    }

    /// One sync request's realisation time as the daemon reported it.
    pub fn daemon_realized(&self, realize_us: u64) {
        self.daemon_realize.observe(realize_us as f64 / 1e6);
    }

    pub fn rejected(&self, n: usize) {
        self.rejected.inc_by(n as u64);
    }

    pub fn manifest_errors(&self, n: usize) {
        self.manifest_errors.inc_by(n as u64);
    }

    pub fn connected(&self) {
        self.connects.inc();
    }

    /// Ready: a sync has succeeded since the agent started.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut s = String::new();
        if let Err(e) = encode(&mut s, &self.registry) {
            s = format!("# encoding failed: {e}\n");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_every_family() {
        let m = Metrics::new();
        m.set_watched("Pod", 3);
        m.sync("full", true);
        m.synced(7, Some(std::time::Duration::from_millis(5)));
        m.daemon_realized(250);
        m.api_error("Node");
        let text = m.encode();
        for want in [
            "vswitch_agent_watched_objects{kind=\"Pod\"} 3",
            "vswitch_agent_syncs_total{type=\"full\",result=\"ok\"} 1",
            "vswitch_agent_synced_generation 7",
            "vswitch_agent_realization_seconds_count 1",
            "vswitch_agent_realization_seconds_bucket{le=\"0.0001\"} 0",
            "vswitch_agent_daemon_realize_seconds_sum 0.00025",
            "vswitch_agent_daemon_realize_seconds_count 1",
            "vswitch_agent_api_errors_total{kind=\"Node\"} 1",
            "# EOF",
        ] {
            assert!(text.contains(want), "{want} missing from\n{text}");
        }
        assert!(m.is_ready());
    }
}

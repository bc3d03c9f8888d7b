//! Results: one [`Trial`] per measurement window, summarised per parameter point,
//! written as JSON. Everything here round-trips through serde unchanged.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Latencies are recorded in nanoseconds, 1 ns to 100 s, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("constant histogram bounds are valid")
}

/// One-way latency summary, in microseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Latency {
    pub count: u64,
    pub min_us: f64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    /// (latency µs, fraction of frames at or below it), for CDF plots.
    pub cdf: Vec<(f64, f64)>,
}

impl Latency {
    pub fn from_histogram(h: &Histogram<u64>) -> Option<Latency> {
        if h.is_empty() {
            return None;
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        let mut cdf = Vec::new();
        // Quantiles spaced evenly on a "nines" scale up to 99.99 %, plus the ends.
        let mut qs: Vec<f64> = (0..=20).map(|i| f64::from(i) * 0.05).collect();
        qs.extend([0.96, 0.97, 0.98, 0.99, 0.995, 0.999, 0.9995, 0.9999, 1.0]);
        qs.sort_by(f64::total_cmp);
        qs.dedup();
        for q in qs {
            cdf.push((us(h.value_at_quantile(q)), q));
        }
        Some(Latency {
            count: h.len(),
            min_us: us(h.min()),
            mean_us: h.mean() / 1000.0,
            p50_us: us(h.value_at_quantile(0.50)),
            p90_us: us(h.value_at_quantile(0.90)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
            cdf,
        })
    }
}

/// Rates over one second of a trial.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Seconds since the start of the measurement window.
    pub t_s: f64,
    pub offered_pps: f64,
    pub delivered_pps: f64,
}

/// The parameters of a measurement point (what a sweep varies).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub flows: u32,
    /// "64", "imix", ...
    pub size: String,
    /// Target packets/s; `None` = as fast as possible.
    pub rate: Option<f64>,
    pub proto: String,
    pub ipv6: bool,
}

/// One measurement window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    pub point: Point,
    /// 1-based repetition (0 for search trials).
    pub repeat: u32,
    pub window_s: f64,
    /// Frames the generator handed to the kernel inside the window.
    pub offered: u64,
    /// Of those, frames the sink received (matched by their timestamps).
    pub delivered: u64,
    pub offered_pps: f64,
    pub delivered_pps: f64,
    /// (offered - delivered) / offered, in percent.
    pub loss_pct: f64,
    /// Delivered bits per second on the wire (frames incl. FCS, without preamble/IFG).
    pub delivered_bps: f64,
    /// Every frame the sink saw, stamped or not, during the whole trial.
    pub sink_frames: u64,
    /// Frames without our stamp (ARP, IPv6 chatter, other generators).
    pub sink_foreign: u64,
    /// Stamped frames that arrived behind a later one of the same stream.
    pub reordered: u64,
    /// Stamps from the future or from another run (clock or frame corruption).
    pub bad_stamps: u64,
    /// Whether the generator reached the target rate (within 5 %); `None` at max.
    pub rate_reached: Option<bool>,
    /// Milliseconds the generator/sink threads lost their CPU during the trial
    /// (loop gaps over 1 ms, summed over threads): non-zero means a busy host.
    #[serde(default)]
    pub stalled_ms: f64,
    pub latency: Option<Latency>,
    pub series: Vec<Sample>,
}

/// Median / min / max over the repetitions of one point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub point: Point,
    pub repeats: u32,
    pub offered_pps: f64,
    pub delivered_pps: f64,
    pub delivered_min_pps: f64,
    pub delivered_max_pps: f64,
    pub loss_pct: f64,
    /// Median of the repetitions' percentiles.
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    pub p999_us: Option<f64>,
    pub max_us: Option<f64>,
}

/// One trial of an RFC 2544 search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchStep {
    pub rate: f64,
    pub offered_pps: f64,
    pub delivered_pps: f64,
    pub loss_pct: f64,
    pub pass: bool,
}

/// The outcome of an RFC 2544 throughput search at one point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchResult {
    pub point: Point,
    /// Highest offered rate whose loss stayed at or under the threshold.
    pub throughput_pps: f64,
    pub loss_threshold_pct: f64,
    pub resolution_pps: f64,
    /// "dut": the search found the limit; "generator": even the highest rate the
    /// generator could offer passed, so the DUT's limit is higher.
    pub limited_by: String,
    pub steps: Vec<SearchStep>,
}

/// Where and how the run was made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Environment {
    pub host: String,
    pub kernel: String,
    pub cpus: usize,
    pub gen_cpus: Vec<usize>,
    pub sink_cpus: Vec<usize>,
    /// "afxdp (copy)", "afxdp (zero-copy)", "af_packet".
    pub gen_engine: String,
    pub sink_engine: String,
    /// Why AF_XDP was not used, when it was not.
    pub fallback: Option<String>,
    pub topology: String,
    pub interfaces: Vec<String>,
}

/// The JSON document of `vswitch-bench run --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub tool: String,
    pub version: String,
    pub scenario: String,
    pub description: String,
    /// Seconds since the Unix epoch at start.
    pub started_unix: u64,
    pub duration_s: f64,
    pub warmup_s: f64,
    /// The parameter a sweep varies ("flows", "size", "rate"), if any.
    pub swept: Option<String>,
    pub env: Environment,
    pub trials: Vec<Trial>,
    pub summary: Vec<Summary>,
    pub search: Vec<SearchResult>,
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Summaries of all trials that share a point (in order of first appearance).
pub fn summarise(trials: &[Trial]) -> Vec<Summary> {
    let mut points: Vec<Point> = Vec::new();
    for t in trials {
        if !points.contains(&t.point) {
            points.push(t.point.clone());
        }
    }
    points
        .into_iter()
        .map(|p| {
            let ts: Vec<&Trial> = trials.iter().filter(|t| t.point == p).collect();
            let col = |f: &dyn Fn(&Trial) -> f64| -> f64 {
                let mut v: Vec<f64> = ts.iter().map(|t| f(t)).collect();
                median(&mut v)
            };
            let offered = col(&|t| t.offered_pps);
            let delivered = col(&|t| t.delivered_pps);
            let loss = col(&|t| t.loss_pct);
            let lat = |f: &dyn Fn(&Latency) -> f64| -> Option<f64> {
                let mut v: Vec<f64> = ts
                    .iter()
                    .filter_map(|t| t.latency.as_ref().map(f))
                    .collect();
                (!v.is_empty()).then(|| median(&mut v))
            };
            Summary {
                repeats: ts.len() as u32,
                offered_pps: offered,
                delivered_pps: delivered,
                delivered_min_pps: ts.iter().map(|t| t.delivered_pps).fold(f64::MAX, f64::min),
                delivered_max_pps: ts.iter().map(|t| t.delivered_pps).fold(0.0, f64::max),
                loss_pct: loss,
                p50_us: lat(&|l| l.p50_us),
                p99_us: lat(&|l| l.p99_us),
                p999_us: lat(&|l| l.p999_us),
                max_us: lat(&|l| l.max_us),
                point: p,
            }
        })
        .collect()
}

/// A fixed-width table of the summaries (and search results) for the terminal.
pub fn table(r: &Report) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "{:>6} {:>8} {:>10} {:>11} {:>11} {:>19} {:>8} {:>9} {:>9} {:>9}\n",
        "flows",
        "size",
        "rate",
        "offer Mpps",
        "deliv Mpps",
        "deliv min-max",
        "loss %",
        "p50 us",
        "p99 us",
        "p99.9 us"
    ));
    let o = |v: Option<f64>| v.map(|x| format!("{x:.1}")).unwrap_or_else(|| "-".into());
    for m in &r.summary {
        s.push_str(&format!(
            "{:>6} {:>8} {:>10} {:>11.3} {:>11.3} {:>19} {:>8.3} {:>9} {:>9} {:>9}\n",
            m.point.flows,
            m.point.size,
            m.point
                .rate
                .map(|x| format!("{x:.0}"))
                .unwrap_or_else(|| "max".into()),
            m.offered_pps / 1e6,
            m.delivered_pps / 1e6,
            format!(
                "{:.3}-{:.3}",
                m.delivered_min_pps / 1e6,
                m.delivered_max_pps / 1e6
            ),
            m.loss_pct,
            o(m.p50_us),
            o(m.p99_us),
            o(m.p999_us),
        ));
    }
    for x in &r.search {
        s.push_str(&format!(
            "RFC 2544 flows={} size={}: throughput {:.3} Mpps at loss <= {}% (resolution {:.0} pps, {} trials, limited by {})\n",
            x.point.flows,
            x.point.size,
            x.throughput_pps / 1e6,
            x.loss_threshold_pct,
            x.resolution_pps,
            x.steps.len(),
            x.limited_by
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(flows: u32) -> Point {
        Point {
            flows,
            size: "64".into(),
            rate: None,
            proto: "udp".into(),
            ipv6: false,
        }
    }

    fn trial(flows: u32, delivered: f64) -> Trial {
        Trial {
            point: point(flows),
            repeat: 1,
            window_s: 1.0,
            offered: 100,
            delivered: delivered as u64,
            offered_pps: 100.0,
            delivered_pps: delivered,
            loss_pct: 100.0 - delivered,
            delivered_bps: delivered * 512.0,
            sink_frames: 100,
            sink_foreign: 0,
            reordered: 0,
            bad_stamps: 0,
            rate_reached: None,
            stalled_ms: 0.0,
            latency: None,
            series: vec![],
        }
    }

    #[test]
    fn latency_percentiles() {
        let mut h = new_histogram();
        for v in 1..=1000u64 {
            h.record(v * 1000).expect("in range");
        }
        let l = Latency::from_histogram(&h).expect("some");
        assert_eq!(l.count, 1000);
        assert!((l.p50_us - 500.0).abs() < 1.0, "{}", l.p50_us);
        assert!((l.p99_us - 990.0).abs() < 1.0, "{}", l.p99_us);
        assert!((l.max_us - 1000.0).abs() < 1.0);
        assert!(
            l.cdf
                .windows(2)
                .all(|w| w[0].0 <= w[1].0 && w[0].1 < w[1].1)
        );
        assert!(Latency::from_histogram(&new_histogram()).is_none());
    }

    #[test]
    fn summaries_take_medians_per_point() {
        let t = vec![
            trial(1, 90.0),
            trial(1, 80.0),
            trial(1, 95.0),
            trial(8, 50.0),
        ];
        let s = summarise(&t);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].repeats, 3);
        assert_eq!(s[0].delivered_pps, 90.0);
        assert_eq!(s[0].delivered_min_pps, 80.0);
        assert_eq!(s[0].delivered_max_pps, 95.0);
        assert_eq!(s[1].point.flows, 8);
    }
}

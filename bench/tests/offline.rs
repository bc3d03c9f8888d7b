//! Tests that need no root: the command line on bad scenarios, the JSON report's
//! round trip and the plots, on a synthetic report.

use std::path::Path;
use std::process::Command;
use vswitch_bench::report::{
    Environment, Latency, Point, Report, Sample, SearchResult, SearchStep, Trial, new_histogram,
    summarise,
};

fn bench_bin() -> &'static str {
    env!("CARGO_BIN_EXE_vswitch-bench")
}

fn synthetic() -> Report {
    let mut trials = vec![];
    for (i, flows) in [1u32, 64, 1024].into_iter().enumerate() {
        for rep in 1..=3u32 {
            let mut h = new_histogram();
            for v in 1..=2000u64 {
                h.record(v * (10 + i as u64) + rep as u64).expect("record");
            }
            let d = 800_000.0 - 50_000.0 * i as f64 + 1000.0 * rep as f64;
            trials.push(Trial {
                point: Point {
                    flows,
                    size: "64".into(),
                    rate: None,
                    proto: "udp".into(),
                    ipv6: false,
                },
                repeat: rep,
                window_s: 10.0,
                offered: 9_000_000,
                delivered: (d * 10.0) as u64,
                offered_pps: 900_000.0,
                delivered_pps: d,
                loss_pct: (900_000.0 - d) / 9_000.0,
                delivered_bps: d * 512.0,
                sink_frames: 1,
                sink_foreign: 0,
                reordered: 0,
                bad_stamps: 0,
                rate_reached: None,
                stalled_ms: 0.0,
                latency: Latency::from_histogram(&h),
                series: vec![Sample {
                    t_s: 1.0,
                    offered_pps: 900_000.0,
                    delivered_pps: d,
                }],
            });
        }
    }
    Report {
        tool: "vswitch-bench".into(),
        version: "0".into(),
        scenario: "synthetic".into(),
        description: String::new(),
        started_unix: 1,
        duration_s: 10.0,
        warmup_s: 2.0,
        swept: Some("flows".into()),
        env: Environment {
            host: "h".into(),
            kernel: "k".into(),
            cpus: 2,
            gen_cpus: vec![0],
            sink_cpus: vec![0],
            gen_engine: "afxdp (copy)".into(),
            sink_engine: "afxdp (copy, drv mode)".into(),
            fallback: None,
            topology: "build".into(),
            interfaces: vec!["a".into()],
        },
        summary: summarise(&trials),
        trials,
        search: vec![SearchResult {
            point: Point {
                flows: 1,
                size: "64".into(),
                rate: None,
                proto: "udp".into(),
                ipv6: false,
            },
            throughput_pps: 750_000.0,
            loss_threshold_pct: 0.0,
            resolution_pps: 9000.0,
            limited_by: "dut".into(),
            steps: vec![SearchStep {
                rate: 900_000.0,
                offered_pps: 900_000.0,
                delivered_pps: 800_000.0,
                loss_pct: 11.1,
                pass: false,
            }],
        }],
    }
}

#[test]
fn json_round_trips() {
    let r = synthetic();
    let text = serde_json::to_string_pretty(&r).expect("serialise");
    let back: Report = serde_json::from_str(&text).expect("parse");
    assert_eq!(back, r);
    // The fields a reader looks for are there by name.
    let v: serde_json::Value = serde_json::from_str(&text).expect("value");
    assert!(v["summary"][0]["delivered_pps"].is_number());
    assert!(v["trials"][0]["latency"]["p999_us"].is_number());
    assert_eq!(v["search"][0]["limited_by"], "dut");
}

#[test]
fn plots_are_written() {
    let r = synthetic();
    let dir = vswitch_suite::TempDir::new("vbplot").expect("tmp");
    let svg = dir.path().join("p.svg");
    let png = dir.path().join("p.png");
    vswitch_bench::plot::plot(&r, &svg).expect("svg");
    vswitch_bench::plot::plot(&r, &png).expect("png");
    let text = std::fs::read_to_string(&svg).expect("svg text");
    assert!(
        text.starts_with("<svg") && text.contains("throughput vs flows"),
        "{}",
        &text[..200.min(text.len())]
    );
    assert!(text.contains("latency CDF"));
    let bytes = std::fs::read(&png).expect("png");
    assert!(bytes.len() > 10_000 && bytes.starts_with(b"\x89PNG"));
    let e = vswitch_bench::plot::plot(&r, &dir.path().join("p.jpg")).expect_err("jpg");
    assert!(e.contains("must end in .svg or .png"), "{e}");
}

#[test]
fn table_lists_every_point() {
    let t = vswitch_bench::report::table(&synthetic());
    assert_eq!(t.lines().count(), 1 + 3 + 1, "{t}");
    assert!(
        t.contains("RFC 2544 flows=1 size=64: throughput 0.750 Mpps"),
        "{t}"
    );
}

/// The command line says what is wrong with a bad scenario, with the key and line.
#[test]
fn bad_scenarios_fail_with_the_key() {
    let dir = vswitch_suite::TempDir::new("vbbad").expect("tmp");
    for (src, want) in [
        (
            "[traffic]\nsize = 20\n",
            "bad.toml:2:8: traffic.size: frame size 20 is outside",
        ),
        ("[run]\nrepeat = 3\n", "unknown field `repeat`"),
        ("[traffic]\nrate = -5\n", "traffic.rate"),
        (
            "[topology]\nmode = \"existing\"\n",
            "topology.gen_if: is required",
        ),
    ] {
        let f = dir.path().join("bad.toml");
        std::fs::write(&f, src).expect("write");
        for sub in ["check", "run"] {
            let out = Command::new(bench_bin())
                .current_dir(dir.path())
                .args([sub, "bad.toml"])
                .output()
                .expect("run binary");
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{sub} {src:?}: {err}");
            assert!(err.starts_with("vswitch-bench: error: "), "{err}");
            assert!(
                err.contains(want),
                "{sub} {src:?}: wanted {want:?} in {err}"
            );
        }
    }
    let out = Command::new(bench_bin())
        .args(["check", "/nonexistent.toml"])
        .output()
        .expect("run binary");
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read /nonexistent.toml"));
    let ok = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    for e in std::fs::read_dir(ok).expect("examples") {
        let p = e.expect("entry").path();
        let out = Command::new(bench_bin())
            .arg("check")
            .arg(&p)
            .output()
            .expect("check");
        assert!(
            out.status.success(),
            "{}: {}",
            p.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

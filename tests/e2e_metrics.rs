//! vswitchd's Prometheus endpoint and `vsctl pmd-stats`: the text parses strictly as
//! the Prometheus text exposition format, counters move with a ping between two
//! pods, malformed HTTP requests get errors and do not hurt the daemon.
//!
//!     cargo test --test e2e_metrics

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;
use vswitch_suite::daemon::DaemonOpts;
use vswitch_suite::pod::PodOpts;
use vswitch_suite::topo::Topo;

const ADDR: &str = "127.0.0.1:9400";

/// Series (`name{a="x",b="y"}` with labels sorted) to value.
type Samples = BTreeMap<String, f64>;

fn valid_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_' || ch == ':')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == ':')
}

/// A strict parser of the text exposition format 0.0.4: every sample belongs to a
/// family whose `# TYPE` came first, names and labels are well formed, values parse,
/// no series appears twice, histogram buckets are cumulative and end in `+Inf`.
fn parse(text: &str) -> Result<Samples, String> {
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut helps: BTreeSet<String> = BTreeSet::new();
    let mut out = Samples::new();
    if !text.ends_with('\n') {
        return Err("text must end in a newline".into());
    }
    for (n, line) in text.lines().enumerate() {
        let at = |m: &str| format!("line {}: {m}: {line}", n + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (Some(kw), Some(name)) = (parts.next(), parts.next()) else {
                return Err(at("bad comment"));
            };
            if !valid_name(name) {
                return Err(at("bad metric name"));
            }
            match kw {
                "HELP" if !helps.insert(name.to_string()) => {
                    return Err(at("second HELP"));
                }
                "TYPE" => {
                    let t = parts.next().ok_or_else(|| at("TYPE without type"))?;
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&t) {
                        return Err(at("unknown type"));
                    }
                    if types.insert(name.to_string(), t.to_string()).is_some() {
                        return Err(at("second TYPE"));
                    }
                }
                _ => {}
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = match line.find('{') {
            Some(open) => {
                let close = line.rfind('}').ok_or_else(|| at("unclosed labels"))?;
                let name = &line[..open];
                let labels = parse_labels(&line[open + 1..close]).map_err(|e| at(&e))?;
                let v = line[close + 1..].trim_start_matches(' ');
                let s = format!(
                    "{name}{{{}}}",
                    labels
                        .iter()
                        .map(|(k, v)| format!("{k}=\"{v}\""))
                        .collect::<Vec<_>>()
                        .join(",")
                );
                (s, v)
            }
            None => {
                let (name, v) = line.split_once(' ').ok_or_else(|| at("no value"))?;
                (name.to_string(), v)
            }
        };
        let name = series.split('{').next().unwrap_or("");
        if !valid_name(name) {
            return Err(at("bad metric name"));
        }
        let family = types.keys().find(|f| {
            name == f.as_str()
                || (types.get(*f).map(String::as_str) == Some("histogram")
                    && [
                        format!("{f}_bucket"),
                        format!("{f}_sum"),
                        format!("{f}_count"),
                    ]
                    .iter()
                    .any(|x| x == name))
        });
        if family.is_none() {
            return Err(at("sample before its TYPE"));
        }
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v.parse().map_err(|_| at("bad value"))?,
        };
        if out.insert(series, value).is_some() {
            return Err(at("duplicate series"));
        }
    }
    Ok(out)
}

fn parse_labels(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' {
                break;
            }
            name.push(c);
            chars.next();
        }
        if name.is_empty() && chars.peek().is_none() {
            break;
        }
        if !valid_name(&name) {
            return Err(format!("bad label name {name:?}"));
        }
        if chars.next() != Some('=') || chars.next() != Some('"') {
            return Err("label value must be quoted".into());
        }
        let mut v = String::new();
        loop {
            match chars.next() {
                None => return Err("unterminated label value".into()),
                Some('"') => break,
                Some('\\') => match chars.next() {
                    Some('\\') => v.push('\\'),
                    Some('"') => v.push('"'),
                    Some('n') => v.push('\n'),
                    _ => return Err("bad escape".into()),
                },
                Some(c) => v.push(c),
            }
        }
        out.push((name, v));
        match chars.next() {
            None => break,
            Some(',') => {}
            Some(c) => return Err(format!("unexpected {c:?} after label")),
        }
    }
    out.sort();
    Ok(out)
}

/// Sends `request` raw, returns (status code, body).
fn http(request: &[u8]) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect(ADDR).map_err(|e| format!("connect {ADDR}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    s.write_all(request).map_err(|e| e.to_string())?;
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).map_err(|e| e.to_string())?;
    let text = String::from_utf8(buf).map_err(|e| e.to_string())?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no head in {text:?}"))?;
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line in {head:?}"))?;
    Ok((code, body.to_string()))
}

fn scrape(t: &Topo) -> Samples {
    let (code, body) = t
        .sw
        .enter(|| http(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").map_err(vswitch_suite::Error))
        .expect("scrape");
    assert_eq!(code, 200, "{body}");
    match parse(&body) {
        Ok(s) => s,
        Err(e) => panic!("metrics do not parse: {e}\n{body}"),
    }
}

fn get(s: &Samples, series: &str) -> f64 {
    *s.get(series)
        .unwrap_or_else(|| panic!("no series {series} in {:#?}", s.keys()))
}

#[test]
fn metrics_endpoint_counts_traffic() {
    let Some(_env) = vswitch_suite::e2e() else {
        return;
    };
    let opts = DaemonOpts {
        extra_args: vec!["--metrics-addr".into(), ADDR.into()],
        ..DaemonOpts::default()
    };
    let t = Topo::new(&[PodOpts::default(), PodOpts::default()], opts).expect("topology");
    t.add_all("xdp-skb").expect("add ports");
    let (s0, s1) = (t.pods[0].switch_if.clone(), t.pods[1].switch_if.clone());

    let before = scrape(&t);
    let rx0 = format!("vswitch_port_rx_packets_total{{port=\"{s0}\"}}");
    let tx1 = format!("vswitch_port_tx_packets_total{{port=\"{s1}\"}}");
    let busy = "vswitch_worker_iterations_total{kind=\"busy\",worker=\"0\"}";
    let lookups = |s: &Samples| {
        ["emc", "megaflow", "miss"]
            .iter()
            .map(|r| {
                get(
                    s,
                    &format!("vswitch_cache_lookups_total{{result=\"{r}\",worker=\"0\"}}"),
                )
            })
            .sum::<f64>()
    };
    t.ping_pair(0, 1).expect("ping through the switch");
    let r = t.pods[0].ping(t.pods[1].ip, 5).expect("ping");
    assert!(r.all_answered(), "{r:?}");
    let after = scrape(&t);
    assert!(get(&after, &rx0) >= get(&before, &rx0) + 5.0, "rx moved");
    assert!(get(&after, &tx1) >= get(&before, &tx1) + 5.0, "tx moved");
    assert!(
        get(&after, busy) > get(&before, busy),
        "busy iterations moved"
    );
    assert!(
        lookups(&after) >= lookups(&before) + 10.0,
        "cache lookups moved"
    );
    let busy_s = "vswitch_worker_seconds_total{kind=\"busy\",worker=\"0\"}";
    assert!(get(&after, busy_s) > 0.0);
    let count = "vswitch_worker_rx_batch_size_count{worker=\"0\"}";
    let inf = "vswitch_worker_rx_batch_size_bucket{le=\"+Inf\",worker=\"0\"}";
    assert_eq!(get(&after, count), get(&after, inf));
    assert!(get(&after, count) > 0.0);

    // A drop flow: its drops show under reason="pipeline" on the ingress port.
    let drop = format!("table=0,priority=100,in_port={s0},icmp actions=drop");
    t.daemon.vsctl(&["add-flow", &drop]).expect("add-flow");
    let r = t.pods[0].ping(t.pods[1].ip, 3).expect("ping");
    assert_eq!(r.received, 0);
    let dropped = scrape(&t);
    let pd = format!("vswitch_port_drops_total{{port=\"{s0}\",reason=\"pipeline\"}}");
    assert!(get(&dropped, &pd) >= get(&after, &pd) + 3.0, "drops moved");
    assert!(get(&dropped, "vswitch_flows{table=\"0\"}") >= 1.0);

    // A control error is counted by code.
    let _ = t.daemon.vsctl(&["stats", "no-such-port"]);
    let errs = scrape(&t);
    assert!(get(&errs, "vswitch_control_errors_total{code=\"not_found\"}") >= 1.0);

    // Malformed requests get HTTP errors; the daemon keeps serving.
    let bad: Vec<(&[u8], u16)> = vec![
        (b"POST /metrics HTTP/1.1\r\n\r\n", 405),
        (b"GET /nope HTTP/1.1\r\n\r\n", 404),
        (b"garbage\r\n\r\n", 400),
        (b"GET /metrics\r\n\r\n", 400),
        (b"\xff\xfe\r\n\r\n", 400),
        (b"GET /metrics HTTP/1.1\r\n", 400), // head never finished
    ];
    for (req, want) in bad {
        let req = req.to_vec();
        let (code, _) =
            t.sw.enter(move || http(&req).map_err(vswitch_suite::Error))
                .expect("bad request answered");
        assert_eq!(code, want);
    }
    let huge = {
        let mut v = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        v.resize(64 * 1024, b'a');
        v
    };
    let _ = t.sw.enter(move || {
        let _ = http(&huge);
        Ok(())
    });
    let last = scrape(&t);
    assert!(get(&last, "vswitch_metrics_http_errors_total") >= 6.0);
    t.daemon.vsctl(&["show"]).expect("daemon still answers");

    // pmd-stats, text and JSON.
    let text = t.daemon.vsctl(&["pmd-stats"]).expect("pmd-stats");
    assert!(text.contains("pmd thread worker 0"), "{text}");
    assert!(text.contains("avg. packets per batch"), "{text}");
    assert!(text.contains("emc hits"), "{text}");
    let j = t.daemon.vsctl_json(&["pmd-stats"]).expect("pmd-stats json");
    let w = &j[0];
    assert!(w["packets"].as_u64().unwrap_or(0) >= 10, "{j}");
    let busy_pct = w["busy_pct"].as_f64().unwrap_or(-1.0);
    assert!((0.0..=100.0).contains(&busy_pct), "{j}");
}

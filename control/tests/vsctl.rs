//! The client library and the `vsctl` binary against a scripted fake daemon.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};
use vswitch_control::{CallError, Client};
use vswitch_proto::{
    DropCounters, ErrorCode, ErrorReply, Op, PortInfo, PortKind, PortMode, PortState, PortStats,
    Response, StatsReply, SwitchStats, WorkerStats, decode_request, encode_response,
};

fn port(name: &str, requested: PortMode) -> PortInfo {
    PortInfo {
        name: name.into(),
        port_no: 1,
        kind: PortKind::Pod,
        requested_mode: requested,
        mode: if requested == PortMode::Auto {
            PortMode::XdpDrv
        } else {
            requested
        },
        zero_copy: false,
        worker: 0,
        ifindex: 9,
        mac: "02:00:00:00:00:01".into(),
        mtu: 1500,
        state: PortState::Up,
        pod: None,
    }
}

fn stats_reply(filter: Option<&str>) -> StatsReply {
    let drops = DropCounters {
        ring_full: 2,
        ..DropCounters::default()
    };
    let all = vec![PortStats {
        name: "veth1".into(),
        port_no: 1,
        rx_packets: 10,
        rx_bytes: 840,
        tx_packets: 9,
        tx_bytes: 756,
        fastpath_rx_packets: 0,
        fastpath_tx_packets: 0,
        drops,
    }];
    StatsReply {
        ports: all
            .into_iter()
            .filter(|p| filter.is_none_or(|f| f == p.name))
            .collect(),
        switch: SwitchStats {
            mac_capacity: 4096,
            ..SwitchStats::default()
        },
        workers: vec![WorkerStats {
            id: 0,
            ..WorkerStats::default()
        }],
    }
}

/// What the fake daemon answers: `add_port` of "wrong-id" answers another id.
fn answer(line: &[u8]) -> Response {
    let req = match decode_request(line) {
        Ok(r) => r,
        Err((id, e)) => return Response::err(id, e),
    };
    let id = req.id;
    let ok = |v: Value| Response::ok(id.clone(), v);
    match req.op {
        Op::Hello => ok(json!({"protocol": 1, "version": "9.9.9", "pid": 4242})),
        Op::AddPort(p) if p.name == "wrong-id" => Response::ok(json!(999_999), json!({})),
        Op::AddPort(p) => ok(serde_json::to_value(port(&p.name, p.mode)).unwrap()),
        Op::DelPort(p) if p.name == "veth1" => ok(json!({})),
        Op::DelPort(p) => Response::err(
            id.clone(),
            ErrorReply::new(ErrorCode::NotFound, format!("no port named {}", p.name)),
        ),
        Op::ListPorts => ok(serde_json::to_value(vec![port("veth1", PortMode::Auto)]).unwrap()),
        Op::Stats(p) => ok(serde_json::to_value(stats_reply(p.port.as_deref())).unwrap()),
        Op::SyncStatus => ok(json!({"generation": 4, "counts": {"Pod": 0}})),
        Op::SyncFull(p) => ok(
            json!({"generation": p.generation, "upserted": p.state.len(),
                                     "deleted": 0, "realize_us": 7}),
        ),
        Op::SyncDelta(_) => Response::err(
            id,
            ErrorReply::new(ErrorCode::GenerationMismatch, "not here"),
        ),
        Op::FlowMods(p) => ok(json!({"added": p.mods.len(), "replaced": 0, "deleted": 0,
            "modified": 0, "groups_set": 0, "groups_deleted": 0, "version": 3})),
        Op::DumpFlows(_) | Op::DumpGroups => ok(json!([])),
        Op::Conntrack(p) => ok(json!({"entries": [], "matched": 0,
            "flushed": 0, "truncated": false, "flush": p.flush})),
        Op::Services => ok(json!({"services": []})),
        Op::Policies(_) => ok(json!({"policies": [], "size": {"policies": 0, "rules": 0,
            "groups": 0, "group_members": 0, "applied": 0, "applied_rules": 0}})),
        Op::Trace(_) => Response::err(
            id,
            ErrorReply::new(ErrorCode::InvalidParams, "column 1: bad packet"),
        ),
        Op::CaptureStart(_) | Op::CaptureRead(_) | Op::CaptureStop(_) => Response::err(
            id,
            ErrorReply::new(ErrorCode::Failed, "no capture in the fake daemon"),
        ),
    }
}

/// A fake daemon on a fresh socket; `refuse` makes it turn every client away the
/// way vswitchd does (one `null`-id error line, then close).
fn fake_daemon(refuse: bool) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "vsctl-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("vswitchd.sock");
    let listener = UnixListener::bind(&path).unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            if refuse {
                let e = ErrorReply::new(
                    ErrorCode::PermissionDenied,
                    "uid 1000 may not use this socket",
                );
                let _ = stream.write_all(&encode_response(&Response::err(Value::Null, e)));
                continue;
            }
            std::thread::spawn(move || serve(stream));
        }
    });
    path
}

fn serve(stream: UnixStream) {
    let mut writer = stream.try_clone().unwrap();
    for line in BufReader::new(stream).split(b'\n') {
        let Ok(line) = line else { return };
        if writer.write_all(&encode_response(&answer(&line))).is_err() {
            return;
        }
    }
}

fn vsctl(socket: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vsctl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .expect("run vsctl")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn typed_helpers_round_trip() {
    let path = fake_daemon(false);
    let mut c = Client::connect(&path).expect("connect");
    let hello = c.hello().expect("hello");
    assert_eq!(
        (hello.protocol, hello.version.as_str(), hello.pid),
        (1, "9.9.9", 4242)
    );
    let p = c
        .add_port("veth1", PortKind::Pod, PortMode::Auto)
        .expect("add");
    assert_eq!(
        (p.mode, p.requested_mode),
        (PortMode::XdpDrv, PortMode::Auto)
    );
    c.del_port("veth1").expect("del");
    assert_eq!(c.list_ports().expect("list").len(), 1);
    assert_eq!(c.stats(None).expect("stats").ports.len(), 1);
    assert_eq!(c.stats(Some("nope")).expect("stats").ports.len(), 0);
}

#[test]
fn remote_errors_keep_code_and_message() {
    let path = fake_daemon(false);
    let mut c = Client::connect(&path).expect("connect");
    let e = c.del_port("veth9").expect_err("not found");
    let remote = e.remote().expect("remote error");
    assert_eq!(remote.code, ErrorCode::NotFound);
    assert_eq!(e.to_string(), "not_found: no port named veth9");
    // The connection is still usable after an error.
    assert!(c.hello().is_ok());
}

#[test]
fn mismatched_response_id_is_a_protocol_error() {
    let path = fake_daemon(false);
    let mut c = Client::connect(&path).expect("connect");
    let e = c
        .add_port("wrong-id", PortKind::Pod, PortMode::Auto)
        .expect_err("mismatch");
    assert!(matches!(e, CallError::Protocol { .. }), "{e:?}");
    assert!(e.to_string().contains("does not match request id 1"), "{e}");
}

#[test]
fn refusal_is_reported_as_the_daemons_error() {
    let path = fake_daemon(true);
    let mut c = Client::connect(&path).expect("connect");
    let e = c.hello().expect_err("refused");
    assert_eq!(
        e.remote().map(|r| r.code),
        Some(ErrorCode::PermissionDenied),
        "{e:?}"
    );
}

#[test]
fn connect_error_names_the_socket_and_the_daemon() {
    let e = Client::connect("/nonexistent/vswitchd.sock")
        .err()
        .expect("no daemon");
    let msg = format!("{e:#}");
    assert!(
        msg.contains("/nonexistent/vswitchd.sock") && msg.contains("is vswitchd running?"),
        "{msg}"
    );
}

#[test]
fn vsctl_add_port_prints_the_effective_mode() {
    let path = fake_daemon(false);
    let out = vsctl(&path, &["add-port", "veth1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "added veth1 as port 1 (mode xdp-drv, worker 0)\n"
    );
    let out = vsctl(
        &path,
        &["add-port", "veth2", "--kind", "uplink", "--mode", "packet"],
    );
    assert_eq!(
        text(&out.stdout),
        "added veth2 as port 1 (mode packet, worker 0)\n"
    );
}

#[test]
fn vsctl_errors_are_one_line_and_fail() {
    let path = fake_daemon(false);
    let out = vsctl(&path, &["del-port", "veth9"]);
    assert!(!out.status.success());
    assert_eq!(text(&out.stderr), "vsctl: not_found: no port named veth9\n");
    assert!(out.stdout.is_empty());

    let out = vsctl(Path::new("/nonexistent/x.sock"), &["show"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("vsctl: cannot connect to /nonexistent/x.sock (is vswitchd running?)"),
        "{err}"
    );

    let out = vsctl(&path, &["add-port", "x", "--mode", "turbo"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr).lines().count(),
        1,
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn vsctl_json_flag_before_the_subcommand_prints_raw_results() {
    let path = fake_daemon(false);
    let out = Command::new(env!("CARGO_BIN_EXE_vsctl"))
        .args([
            "--socket".as_ref(),
            path.as_os_str(),
            "--json".as_ref(),
            "stats".as_ref(),
        ])
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["ports"][0]["drops"]["ring_full"], json!(2));

    let out = vsctl(&path, &["show", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["daemon"]["pid"], json!(4242));
    assert_eq!(v["ports"][0]["name"], json!("veth1"));
}

#[test]
fn vsctl_show_and_stats_text() {
    let path = fake_daemon(false);
    let out = vsctl(&path, &["show"]);
    let s = text(&out.stdout);
    assert!(
        s.starts_with("vswitchd 9.9.9 (pid 4242, protocol 1)\n    Port veth1\n"),
        "{s}"
    );
    assert!(
        s.contains("        mode: xdp-drv (requested auto)\n"),
        "{s}"
    );

    let out = vsctl(&path, &["stats", "veth1"]);
    let s = text(&out.stdout);
    assert_eq!(
        s,
        "port stats: 1 port\n  port 1 veth1: rx pkts=10, bytes=840\n                tx pkts=9, bytes=756\n                drop=2: ring_full=2\n"
    );
    let s = text(&vsctl(&path, &["stats"]).stdout);
    assert!(
        s.contains("\nswitch: mac entries=0/4096") && s.contains("\nworker 0 (not pinned)"),
        "{s}"
    );
}

#[test]
fn vsctl_help_and_version_succeed() {
    for flag in ["--help", "--version"] {
        let out = Command::new(env!("CARGO_BIN_EXE_vsctl"))
            .arg(flag)
            .output()
            .expect("run");
        assert!(out.status.success(), "{flag}");
        assert!(!out.stdout.is_empty(), "{flag}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_vsctl"))
        .arg("--version")
        .output()
        .expect("run");
    assert_eq!(
        text(&out.stdout),
        format!("vsctl {}\n", env!("CARGO_PKG_VERSION"))
    );
}

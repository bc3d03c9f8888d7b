//! The `vswitch-cni` binary without root: the command-line contract (`--help`,
//! `--version`, a one-line error without `CNI_COMMAND`) and the CNI answers that
//! need no namespace (VERSION, configuration errors, STATUS with no daemon). The
//! root end-to-end tests are in the repository's `tests/cni.rs`.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};

fn plugin(env: &[(&str, &str)], stdin: &str) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vswitch-cni"));
    for (k, _) in std::env::vars() {
        if k.starts_with("CNI_") {
            c.env_remove(k);
        }
    }
    c.envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("start vswitch-cni");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait")
}

fn json_out(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {} / stderr {}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

#[test]
fn help_and_version() {
    let o = Command::new(env!("CARGO_BIN_EXE_vswitch-cni"))
        .arg("--help")
        .output()
        .expect("run");
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("CNI_COMMAND") && text.contains("mtu"),
        "{text}"
    );
    let o = Command::new(env!("CARGO_BIN_EXE_vswitch-cni"))
        .arg("--version")
        .output()
        .expect("run");
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("vswitch-cni "));
}

#[test]
fn without_cni_command_it_says_what_it_is() {
    let o = plugin(&[], "");
    assert!(!o.status.success());
    assert!(o.stdout.is_empty());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("CNI_COMMAND is not set"), "{err}");
}

#[test]
fn version_command() {
    let o = plugin(&[("CNI_COMMAND", "VERSION")], r#"{"cniVersion":"0.4.0"}"#);
    assert!(o.status.success());
    assert_eq!(
        json_out(&o),
        json!({"cniVersion": "0.4.0",
               "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]})
    );
}

#[test]
fn configuration_errors_carry_spec_codes() {
    let env = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "abc"),
        ("CNI_NETNS", "/proc/self/ns/net"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/usr/lib/cni"),
    ];
    let cases = [
        ("{ not json", 6),
        (r#"{"cniVersion":"1.1.0","name":"n"}"#, 7),
        (
            r#"{"cniVersion":"0.2.0","name":"n","ipam":{"type":"host-local"}}"#,
            1,
        ),
        (
            r#"{"cniVersion":"1.1.0","name":"n","mtu":10,"ipam":{"type":"host-local"}}"#,
            7,
        ),
    ];
    for (conf, code) in cases {
        let o = plugin(&env, conf);
        assert!(!o.status.success(), "{conf}");
        let out = json_out(&o);
        assert_eq!(out["code"], code, "{conf}: {out}");
        assert!(out["msg"].is_string(), "{out}");
        // And the one-line error on stderr.
        assert_eq!(String::from_utf8_lossy(&o.stderr).lines().count(), 1);
    }
    let o = plugin(
        &[("CNI_COMMAND", "DEL"), ("CNI_IFNAME", "eth0")],
        r#"{"cniVersion":"1.0.0","name":"n","ipam":{"type":"host-local"}}"#,
    );
    let out = json_out(&o);
    assert_eq!(out["code"], 4, "{out}");
    assert_eq!(out["cniVersion"], "1.0.0", "errors use the input's version");
}

#[test]
fn status_without_daemon() {
    let o = plugin(
        &[("CNI_COMMAND", "STATUS")],
        r#"{"cniVersion":"1.1.0","name":"n","socket":"/nonexistent/vswitchd.sock"}"#,
    );
    assert!(!o.status.success());
    assert_eq!(json_out(&o)["code"], 50);
}

//! The `vswitch-agent` binary's command line: help, version, one-line errors.
#![allow(clippy::unwrap_used)]

use std::process::Command;

fn agent(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_vswitch-agent"))
        .args(args)
        .env("RUST_LOG", "off")
        .output()
        .unwrap()
}

#[test]
fn help_and_version_succeed() {
    let out = agent(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--socket",
        "--node-name",
        "--kubeconfig",
        "--in-cluster",
        "--manifests",
        "--uplink",
        "--metrics-addr",
    ] {
        assert!(text.contains(flag), "{flag} missing from --help:\n{text}");
    }
    let out = agent(&["--version"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("vswitch-agent "));
}

#[test]
fn errors_are_one_line_and_fail() {
    let one_line = |out: &std::process::Output, want: &str| {
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with("vswitch-agent: ") && err.contains(want),
            "{err}"
        );
    };
    // No source.
    one_line(&agent(&["--node-name", "n"]), "required");
    // Two sources.
    one_line(
        &agent(&["--node-name", "n", "--in-cluster", "--manifests", "/x"]),
        "cannot be used with",
    );
    // An overlay mode that does not exist.
    one_line(
        &agent(&["--node-name", "n", "--in-cluster", "--overlay", "geneve"]),
        "vxlan or flannel",
    );
    // A manifest path that does not exist.
    one_line(
        &agent(&[
            "--node-name",
            "n",
            "--manifests",
            "/nonexistent/vswitch-manifests",
            "--metrics-addr",
            "127.0.0.1:0",
            "--socket",
            "/nonexistent/vswitchd.sock",
        ]),
        "/nonexistent/vswitch-manifests",
    );
    // A metrics address that cannot be bound.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    one_line(
        &agent(&[
            "--node-name",
            "n",
            "--manifests",
            "/nonexistent/m",
            "--metrics-addr",
            &addr,
        ]),
        &addr,
    );
}

//! `vswitch-cni`: the CNI plugin (specification 1.1.0) that gives a pod a veth whose
//! host end is a port of vswitchd.
//!
//! [`run`] is the whole plugin as a function of the environment and stdin, so the
//! binary only does I/O. Each command has its module; the building blocks are:
//!
//! | module | one job |
//! | --- | --- |
//! | `env` | the `CNI_*` variables |
//! | `config` | the network configuration on stdin |
//! | `version` | supported spec versions, VERSION |
//! | `result` | ADD results in every supported version |
//! | `error` | error codes and the error object |
//! | `names` | host interface name, MAC and alias derived from the attachment |
//! | `netlink` | links, addresses, routes over rtnetlink |
//! | `netns` | entering the pod's namespace on a thread of its own |
//! | `sandbox` | configuring and inspecting the pod's interface |
//! | `offload` | checksum/segmentation offloads off on the pod's interface |
//! | `ipam` | running the delegated IPAM plugin |
//! | `switch` | attaching and detaching ports on vswitchd |
//! | `mtu` | the pod MTU when the configuration does not set one |
//!
//! See `docs/cni.md` for behaviour, configuration and error codes.

mod add;
mod check;
pub mod config;
mod del;
pub mod env;
pub mod error;
mod gc;
mod ipam;
mod mtu;
pub mod names;
pub(crate) mod netlink;
mod netns;
pub(crate) mod offload;
pub mod result;
mod sandbox;
mod status;
mod switch;
pub mod version;

use serde_json::Value;

use config::NetConf;
use env::{Command, Env};
use error::CniError;

/// What the plugin prints and how it exits.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// The JSON for stdout (result, VERSION reply or error); `None` for a success
    /// without output (DEL, CHECK, GC, STATUS).
    pub stdout: Option<Value>,
    pub success: bool,
}

/// Runs one plugin invocation: `var` reads the environment, `stdin` is the
/// network configuration.
pub fn run(var: impl Fn(&str) -> Option<String>, stdin: &[u8]) -> Reply {
    let env = match Env::read(&var) {
        Ok(e) => e,
        Err(e) => return failure(&e, stdin),
    };
    if env.command == Command::Version {
        // Only `cniVersion` is read, and a broken input does not stop the answer.
        let requested = config::peek_version(stdin);
        return Reply {
            stdout: Some(version::version_reply(requested.as_deref())),
            success: true,
        };
    }
    let conf = match NetConf::parse(stdin) {
        Ok(c) => c,
        Err(e) => return failure(&e, stdin),
    };
    let outcome = match env.command {
        Command::Add => {
            add::add(&env, &conf, stdin).map(|r| Some(r.to_json(conf.version, &conf.cni_version)))
        }
        Command::Del => del::del(&env, &conf, stdin).map(|()| None),
        Command::Check => check::check(&env, &conf, stdin).map(|()| None),
        Command::Gc => gc::gc(&env, &conf, stdin).map(|()| None),
        Command::Status => status::status(&env, &conf, stdin).map(|()| None),
        Command::Version => Ok(None), // answered above
    };
    match outcome {
        Ok(stdout) => Reply {
            stdout,
            success: true,
        },
        Err(e) => failure(&e, stdin),
    }
}

/// An error reply, in the version of the input when it names one.
fn failure(e: &CniError, stdin: &[u8]) -> Reply {
    let v = config::peek_version(stdin)
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| version::CURRENT.to_string());
    Reply {
        stdout: Some(e.to_json(&v)),
        success: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::HashMap;

    fn invoke(vars: &[(&str, &str)], stdin: &str) -> Reply {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        run(|k| m.get(k).cloned(), stdin.as_bytes())
    }

    #[test]
    fn version_needs_nothing_else() {
        let r = invoke(&[("CNI_COMMAND", "VERSION")], r#"{"cniVersion":"0.4.0"}"#);
        assert!(r.success);
        assert_eq!(
            r.stdout,
            Some(json!({"cniVersion": "0.4.0",
                "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]}))
        );
        let r = invoke(&[("CNI_COMMAND", "VERSION")], "");
        assert_eq!(r.stdout.expect("reply")["cniVersion"], "1.1.0");
    }

    #[test]
    fn errors_come_in_the_input_version() {
        let r = invoke(
            &[("CNI_COMMAND", "ADD")],
            r#"{"cniVersion":"0.3.1","name":"n","ipam":{"type":"host-local"}}"#,
        );
        assert!(!r.success);
        let out = r.stdout.expect("error");
        assert_eq!(out["cniVersion"], "0.3.1");
        assert_eq!(out["code"], 4);
        assert!(
            out["details"]
                .as_str()
                .expect("details")
                .contains("CNI_CONTAINERID")
        );
    }

    #[test]
    fn bad_stdin() {
        let r = invoke(&[("CNI_COMMAND", "DEL")], "{not json");
        assert_eq!(r.stdout.expect("error")["code"], 6);
        let r = invoke(&[("CNI_COMMAND", "GC")], r#"{"cniVersion":"1.1.0"}"#);
        assert_eq!(r.stdout.expect("error")["code"], 7);
        let r = invoke(
            &[("CNI_COMMAND", "STATUS")],
            r#"{"cniVersion":"3.0.0","name":"n"}"#,
        );
        assert_eq!(r.stdout.expect("error")["code"], 1);
        let r = invoke(&[], "{}");
        assert_eq!(r.stdout.expect("error")["code"], 4);
    }

    #[test]
    fn check_refuses_old_versions() {
        let r = invoke(
            &[
                ("CNI_COMMAND", "CHECK"),
                ("CNI_CONTAINERID", "c"),
                ("CNI_IFNAME", "eth0"),
                ("CNI_NETNS", "/proc/self/ns/net"),
            ],
            r#"{"cniVersion":"0.3.1","name":"n","ipam":{"type":"host-local"}}"#,
        );
        assert_eq!(r.stdout.expect("error")["code"], 1);
    }

    #[test]
    fn status_without_daemon_is_code_50() {
        let r = invoke(
            &[("CNI_COMMAND", "STATUS")],
            r#"{"cniVersion":"1.1.0","name":"n","socket":"/nonexistent/vswitchd.sock"}"#,
        );
        assert!(!r.success);
        let out = r.stdout.expect("error");
        assert_eq!(out["code"], 50, "{out}");
        assert!(
            out["details"]
                .as_str()
                .expect("details")
                .contains("/nonexistent/vswitchd.sock")
        );
    }
}

//! `vswitch-cni`: the CNI plugin. With `CNI_COMMAND` set it behaves as the CNI
//! specification says (configuration on stdin, result or error JSON on stdout);
//! otherwise it is an ordinary command with `--help` and `--version`.

use std::io::{Read, Write};
use std::process::ExitCode;

use clap::Parser;
use vswitch_control::cni::{self, error::CniError};

/// Largest network configuration read from stdin (a config with a big prevResult
/// is a few KiB).
const MAX_STDIN: u64 = 16 << 20;

#[derive(Debug, Parser)]
#[command(
    name = "vswitch-cni",
    version,
    about = "CNI plugin that attaches a pod's veth to vswitchd",
    long_about = "CNI plugin (specification 1.1.0; configurations of 0.3.0 to 1.1.0) that \
gives a pod a veth pair, addresses it through the configured IPAM plugin, and attaches the \
host end to vswitchd as a pod port.\n\n\
A container runtime runs it with CNI_COMMAND (ADD, DEL, CHECK, GC, STATUS, VERSION), \
CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, CNI_ARGS and CNI_PATH in the environment and the \
network configuration on stdin; it prints the result or a CNI error on stdout.\n\n\
Configuration keys of its own: \"socket\" (vswitchd's control socket, default \
/run/vswitch/vswitchd.sock) and \"mtu\" (default 1450: a 1500-byte uplink less 50 bytes \
of VXLAN). See docs/cni.md."
)]
struct Cli {}

fn main() -> ExitCode {
    // Arguments mean a person (or a script) is asking; a runtime passes none.
    if std::env::args_os().len() > 1 || std::env::var_os("CNI_COMMAND").is_none() {
        let _ = Cli::parse();
        eprintln!(
            "vswitch-cni: CNI_COMMAND is not set: this is a CNI plugin, run by a container runtime (see --help)"
        );
        return ExitCode::FAILURE;
    }
    let mut stdin = Vec::new();
    let reply = match std::io::stdin().take(MAX_STDIN).read_to_end(&mut stdin) {
        // A bug must still end in a CNI error on stdout, not in silence: the
        // runtime reads stdout. ADD's rollback has run by then (it undoes on unwind).
        Ok(_) => std::panic::catch_unwind(|| cni::run(|k| std::env::var(k).ok(), &stdin))
            .unwrap_or_else(|_| cni::Reply {
                stdout: Some(
                    CniError::new(
                        cni::error::INTERNAL,
                        "internal error",
                        "vswitch-cni panicked",
                    )
                    .to_json(cni::version::CURRENT),
                ),
                success: false,
            }),
        Err(e) => cni::Reply {
            stdout: Some(
                CniError::new(
                    cni::error::IO_FAILURE,
                    "I/O failure",
                    format!("reading the network configuration from stdin: {e}"),
                )
                .to_json(cni::version::CURRENT),
            ),
            success: false,
        },
    };
    if let Some(out) = &reply.stdout {
        let mut text = serde_json::to_string_pretty(out).unwrap_or_else(|_| "{}".into());
        text.push('\n');
        let mut so = std::io::stdout().lock();
        if so
            .write_all(text.as_bytes())
            .and_then(|()| so.flush())
            .is_err()
        {
            return ExitCode::FAILURE;
        }
        if !reply.success {
            // The one-line error of every binary of the project, for logs.
            if let Some(msg) = out.get("msg").and_then(|m| m.as_str()) {
                let details = out.get("details").and_then(|d| d.as_str()).unwrap_or("");
                eprintln!(
                    "vswitch-cni: {msg}{}{details} (code {})",
                    if details.is_empty() { "" } else { ": " },
                    out["code"]
                );
            }
        }
    }
    if reply.success {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

//! Delegation to the IPAM plugin (spec section 4): found in `CNI_PATH`, run with
//! our environment and the complete network configuration on stdin, its stderr
//! going to ours, its result or error read from its stdout.
//!
//! One deviation, for interoperability: when the plugin answers "incompatible CNI
//! version" (code 1), we ask it for its VERSION and, if it speaks an older version
//! of the same result format (1.0.0 for a 1.1.0 network), run it again with that
//! `cniVersion`. Debian's containernetworking-plugins 1.1.1 stop at 1.0.0, and a
//! 1.0.0 `host-local` gives exactly what a 1.1.0 one would. GC and STATUS, which
//! only 1.1.0 plugins know, are forwarded only to plugins that list 1.1.0.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};

use serde_json::Value;

use super::config::NetConf;
use super::env::Command;
use super::error::{CniError, CniResult, INCOMPATIBLE_VERSION, IPAM_FAILURE};
use super::result::Success;
use super::version::{self, Version};

/// Largest output accepted from a delegated plugin.
const MAX_OUTPUT: u64 = 16 << 20;

/// The configured IPAM plugin.
pub struct Ipam<'a> {
    name: &'a str,
    exe: PathBuf,
    conf: &'a NetConf,
    stdin: &'a [u8],
}

/// Environment overrides for one delegated call (GC releases attachments other
/// than the one in our environment).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub container_id: Option<String>,
    pub ifname: Option<String>,
    /// Leave `CNI_NETNS` out (the namespace of a GC'd attachment is gone).
    pub no_netns: bool,
}

impl<'a> Ipam<'a> {
    /// Finds the plugin named in `ipam.type` in `cni_path`.
    pub fn new(conf: &'a NetConf, stdin: &'a [u8], cni_path: &[PathBuf]) -> CniResult<Ipam<'a>> {
        let name = conf.require_ipam()?.plugin.as_str();
        if cni_path.is_empty() {
            return Err(CniError::env(format!(
                "CNI_PATH is not set: cannot find the IPAM plugin {name:?}"
            )));
        }
        let exe = find(name, cni_path).ok_or_else(|| {
            CniError::config(format!(
                "IPAM plugin {name:?} not found in CNI_PATH ({})",
                cni_path
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(":")
            ))
        })?;
        Ok(Ipam {
            name,
            exe,
            conf,
            stdin,
        })
    }

    /// ADD: the addresses, routes and DNS for the attachment.
    pub fn add(&self) -> CniResult<Success> {
        let out = self.call_negotiated(Command::Add, &Overrides::default())?;
        let v = out.ok_or_else(|| self.failure("ADD printed no result"))?;
        let r = Success::parse(&v).map_err(|e| self.failure(&format!("ADD result: {e}")))?;
        if r.ips.is_empty() {
            return Err(self.failure("ADD returned no IP address"));
        }
        Ok(r)
    }

    /// DEL: releases the attachment's addresses (or another attachment's).
    pub fn del(&self, o: &Overrides) -> CniResult<()> {
        self.call_negotiated(Command::Del, o).map(drop)
    }

    /// CHECK: the plugin's own verification of the attachment.
    pub fn check(&self) -> CniResult<()> {
        self.call_negotiated(Command::Check, &Overrides::default())
            .map(drop)
    }

    /// GC and STATUS exist since 1.1.0: whether this plugin knows them.
    pub fn knows_gc_and_status(&self) -> CniResult<bool> {
        Ok(self
            .versions()?
            .iter()
            .filter_map(|s| Version::parse(s))
            .any(Version::has_gc_and_status))
    }

    /// Forwards GC or STATUS as they came (see [`Ipam::knows_gc_and_status`]).
    pub fn forward(&self, cmd: Command) -> CniResult<()> {
        self.call(cmd, &Overrides::default(), self.stdin).map(drop)
    }

    /// The versions the plugin lists in its VERSION reply.
    fn versions(&self) -> CniResult<Vec<String>> {
        let req = serde_json::json!({"cniVersion": version::CURRENT}).to_string();
        let v = self
            .call(Command::Version, &Overrides::default(), req.as_bytes())?
            .ok_or_else(|| self.failure("VERSION printed nothing"))?;
        v.get("supportedVersions")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .ok_or_else(|| self.failure("VERSION reply has no supportedVersions"))
    }

    /// Runs `cmd`; on "incompatible version" retries once in the newest version
    /// of the same format the plugin supports.
    fn call_negotiated(&self, cmd: Command, o: &Overrides) -> CniResult<Option<Value>> {
        match self.call(cmd, o, self.stdin) {
            Err(e) if e.code == INCOMPATIBLE_VERSION => {
                let supported = self.versions()?;
                let Some(v) = version::fallback(self.conf.version, &supported) else {
                    return Err(e.context(format!(
                        "IPAM plugin {} supports {}",
                        self.name,
                        supported.join(", ")
                    )));
                };
                let mut raw = self.conf.raw.clone();
                raw["cniVersion"] = Value::from(v.to_string());
                // A prevResult is read by the plugin in the version it is told;
                // the formats of one major version read alike.
                let stdin = serde_json::to_vec(&raw)
                    .map_err(|e| self.failure(&format!("re-encoding the config: {e}")))?;
                self.call(cmd, o, &stdin)
            }
            other => other,
        }
    }

    /// Runs the plugin once: `Ok(None)` for success without output.
    fn call(&self, cmd: Command, o: &Overrides, stdin: &[u8]) -> CniResult<Option<Value>> {
        let mut p = Process::new(&self.exe);
        p.env("CNI_COMMAND", cmd.as_str());
        if let Some(c) = &o.container_id {
            p.env("CNI_CONTAINERID", c);
        }
        if let Some(i) = &o.ifname {
            p.env("CNI_IFNAME", i);
        }
        if o.no_netns {
            p.env_remove("CNI_NETNS");
        }
        p.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = p
            .spawn()
            .map_err(|e| self.failure(&format!("cannot run {}: {e}", self.exe.display())))?;
        // Write stdin from another thread: a plugin that prints before reading all
        // of a large config would otherwise deadlock with us.
        let input = stdin.to_vec();
        let mut child_in = child.stdin.take();
        let writer = std::thread::spawn(move || {
            if let Some(w) = child_in.as_mut() {
                // A plugin that does not read stdin (VERSION) closes it: not an error.
                let _ = w.write_all(&input);
            }
        });
        let mut out = Vec::new();
        let read = match child.stdout.take() {
            Some(s) => s.take(MAX_OUTPUT).read_to_end(&mut out).map(drop),
            None => Ok(()),
        };
        let status = child.wait();
        let _ = writer.join();
        read.map_err(|e| self.failure(&format!("reading its output: {e}")))?;
        let status = status.map_err(|e| self.failure(&format!("waiting for it: {e}")))?;
        let text = String::from_utf8_lossy(&out);
        let parsed: Option<Value> = if text.trim().is_empty() {
            None
        } else {
            match serde_json::from_str(&text) {
                Ok(v) => Some(v),
                Err(e) => {
                    return Err(self.failure(&format!(
                        "{} {}: output is not JSON ({e}): {}",
                        cmd.as_str(),
                        status,
                        text.chars().take(300).collect::<String>()
                    )));
                }
            }
        };
        if status.success() {
            return Ok(parsed);
        }
        match parsed.as_ref().and_then(CniError::from_json) {
            Some(e) => Err(e.context(format!("IPAM plugin {} ({})", self.name, cmd.as_str()))),
            None => Err(self.failure(&format!("{} failed ({status})", cmd.as_str()))),
        }
    }

    fn failure(&self, what: &str) -> CniError {
        CniError::new(
            IPAM_FAILURE,
            "IPAM plugin failed",
            format!("{}: {what}", self.name),
        )
    }
}

/// The first executable file named `name` in `dirs`.
fn find(name: &str, dirs: &[PathBuf]) -> Option<PathBuf> {
    dirs.iter().map(|d| d.join(name)).find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_first_executable() {
        let d1 = std::env::temp_dir().join(format!("vswitch-cni-ipam-{}", std::process::id()));
        let d2 = d1.join("second");
        std::fs::create_dir_all(&d2).expect("dirs");
        std::fs::write(d1.join("fake-ipam"), "not executable").expect("write");
        std::fs::write(d2.join("fake-ipam"), "#!/bin/sh\n").expect("write");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(d2.join("fake-ipam"), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let dirs = vec![PathBuf::from("/nonexistent"), d1.clone(), d2.clone()];
        assert_eq!(find("fake-ipam", &dirs), Some(d2.join("fake-ipam")));
        assert_eq!(find("other", &dirs), None);
        let _ = std::fs::remove_dir_all(&d1);
    }
}

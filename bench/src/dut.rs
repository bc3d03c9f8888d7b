//! The device under test, made by the scenario's `[dut]` commands in the DUT
//! namespace: an optional long-running `daemon`, `setup` commands (retried until
//! they succeed: the first is the readiness probe) and `teardown` commands.
//!
//! Commands are `sh -c` lines with placeholders ({in_if}, {out_if}, {dut_cpu},
//! {state}, {bin}, ... see [`crate::scenario::PLACEHOLDERS`]). `{bin}` is the
//! directory of this executable, and is first on `PATH`, so `vswitchd`, `vsctl`
//! and `vswitch-bench` built next to it are found. The daemon is started with
//! `exec`, so the process we signal is the daemon itself; we stop only it.

use crate::scenario::DutSpec;
use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running DUT; dropping it runs the teardown and stops the daemon.
pub struct Dut {
    ns: Option<String>,
    vars: HashMap<&'static str, String>,
    teardown: Vec<String>,
    child: Option<Child>,
    state: PathBuf,
    log: PathBuf,
}

/// Replaces `{name}` placeholders.
pub fn expand(cmd: &str, vars: &HashMap<&'static str, String>) -> String {
    let mut s = cmd.to_string();
    for (k, v) in vars {
        s = s.replace(&format!("{{{k}}}"), v);
    }
    s
}

fn shell(ns: Option<&str>, line: &str, bin: &str) -> Command {
    let mut c = match ns {
        Some(n) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", n, "sh", "-c", line]);
            c
        }
        None => {
            let mut c = Command::new("sh");
            c.args(["-c", line]);
            c
        }
    };
    let path = std::env::var("PATH").unwrap_or_default();
    c.env("PATH", format!("{bin}:{path}"));
    c
}

fn tail(path: &PathBuf) -> String {
    let mut s = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.read_to_string(&mut s);
    }
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

impl Dut {
    /// Starts the DUT. `vars` fills the placeholders (`state` and `bin` are
    /// added here).
    pub fn start(
        spec: &DutSpec,
        ns: Option<String>,
        mut vars: HashMap<&'static str, String>,
    ) -> Result<Dut, String> {
        let state = std::env::temp_dir().join(format!(
            "vswitch-bench-{}-{}",
            std::process::id(),
            vars.get("in_if").cloned().unwrap_or_default()
        ));
        std::fs::create_dir_all(&state).map_err(|e| format!("{}: {e}", state.display()))?;
        let bin = std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.to_string_lossy().into_owned()))
            .unwrap_or_else(|| ".".into());
        vars.insert("state", state.to_string_lossy().into_owned());
        vars.insert("bin", bin.clone());
        vars.insert("dut_cpu", spec.cpu.to_string());
        vars.insert("dut_ns", ns.clone().unwrap_or_default());
        let log = state.join("dut.log");
        let mut d = Dut {
            ns,
            teardown: spec.teardown.iter().map(|c| expand(c, &vars)).collect(),
            vars,
            child: None,
            state,
            log,
        };
        if let Some(daemon) = &spec.daemon {
            let line = format!("exec {}", expand(daemon, &d.vars));
            let out = std::fs::File::create(&d.log).map_err(|e| e.to_string())?;
            let err = out.try_clone().map_err(|e| e.to_string())?;
            let child = shell(d.ns.as_deref(), &line, &bin)
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .map_err(|e| format!("cannot start the DUT daemon `{line}`: {e}"))?;
            d.child = Some(child);
        }
        let deadline = Instant::now() + Duration::from_secs_f64(spec.ready_timeout);
        for c in &spec.setup {
            let line = expand(c, &d.vars);
            loop {
                if let Some(ch) = d.child.as_mut()
                    && let Ok(Some(st)) = ch.try_wait()
                {
                    return Err(format!(
                        "the DUT daemon exited ({st}) during setup; its log:\n{}",
                        tail(&d.log)
                    ));
                }
                let out = vswitch_suite::cmd::run_timeout(
                    &mut shell(d.ns.as_deref(), &line, &bin),
                    Duration::from_secs(30),
                )
                .map_err(|e| e.0)?;
                if out.status.success() {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(format!(
                        "DUT setup `{line}` failed: {}{}",
                        String::from_utf8_lossy(&out.stderr).trim(),
                        if d.child.is_some() {
                            format!("\ndaemon log:\n{}", tail(&d.log))
                        } else {
                            String::new()
                        }
                    ));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        if let Some(ch) = d.child.as_mut()
            && let Ok(Some(st)) = ch.try_wait()
        {
            return Err(format!(
                "the DUT daemon exited ({st}); its log:\n{}",
                tail(&d.log)
            ));
        }
        std::thread::sleep(Duration::from_secs_f64(spec.settle));
        Ok(d)
    }

    /// Whether the daemon (if any) still runs.
    pub fn alive(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => true,
        }
    }

    /// The last lines of the daemon's output.
    pub fn log_tail(&self) -> String {
        tail(&self.log)
    }
}

impl Drop for Dut {
    fn drop(&mut self) {
        let bin = self.vars.get("bin").cloned().unwrap_or_default();
        for line in &self.teardown {
            match vswitch_suite::cmd::run_timeout(
                &mut shell(self.ns.as_deref(), line, &bin),
                Duration::from_secs(30),
            ) {
                Ok(o) if o.status.success() => {}
                Ok(o) => eprintln!(
                    "warning: DUT teardown `{line}` failed: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                ),
                Err(e) => eprintln!("warning: DUT teardown `{line}`: {e}"),
            }
        }
        if let Some(mut c) = self.child.take() {
            // SIGTERM to the daemon we started (exec'd: the pid is the daemon).
            if let Ok(pid) = i32::try_from(c.id()) {
                // SAFETY: kill(2) on our own child's pid.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match c.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() >= deadline => {
                        eprintln!("warning: DUT daemon ignored SIGTERM for 10 s; killing it");
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        }
        if std::env::var_os("VSWITCH_BENCH_KEEP").is_some() {
            eprintln!("keeping {}", self.state.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.state);
        }
    }
}

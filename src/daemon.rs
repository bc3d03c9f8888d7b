//! A `vswitchd` process inside a test namespace, and `vsctl` against it.
//!
//! Binaries are found in [`bin_dir`]: `$VSWITCH_BIN_DIR` if set, else the cargo target
//! directory the test executable was built into (`target/debug/deps/e2e_x-HASH` ->
//! `target/debug/`). Cargo does not build other packages' binaries for the umbrella
//! package's tests, so run `cargo build` (or `cargo build --all-targets`) first;
//! `scripts/test.sh` does.

use crate::netns::{Netns, json};
use crate::{Result, TempDir, cmd, err, wait_for};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

/// Where `vswitchd`, `vsctl` and `vswitch-cni` are looked up.
pub fn bin_dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("VSWITCH_BIN_DIR") {
        return Ok(PathBuf::from(d));
    }
    let exe = std::env::current_exe().map_err(|e| err!("current_exe: {e}"))?;
    let mut dir = exe
        .parent()
        .ok_or_else(|| err!("{} has no parent", exe.display()))?;
    // Test and bench executables live in target/<profile>/deps; binaries one level up.
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir = dir
            .parent()
            .ok_or_else(|| err!("{} has no parent", dir.display()))?;
    }
    Ok(dir.to_path_buf())
}

/// Path of binary `name` in [`bin_dir`], with advice if it is missing.
pub fn binary(name: &str) -> Result<PathBuf> {
    let p = bin_dir()?.join(name);
    if p.is_file() {
        Ok(p)
    } else {
        Err(err!(
            "{} not found: build it first (`cargo build`, same profile as the tests) or set VSWITCH_BIN_DIR",
            p.display()
        ))
    }
}

/// How to start the daemon. Socket, state dir and log go into a private temp dir
/// unless given.
#[derive(Debug, Clone, Default)]
pub struct DaemonOpts {
    /// `--cores`; default: none (one unpinned worker).
    pub cores: Option<String>,
    /// `--config`.
    pub config: Option<PathBuf>,
    /// `--state-dir`; default: `<tempdir>/state`.
    pub state_dir: Option<PathBuf>,
    /// More arguments, appended as they are.
    pub extra_args: Vec<String>,
}

/// How long `start` waits for `vsctl show` to work.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long `stop` waits after SIGTERM before SIGKILL.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `vswitchd` in namespace `ns`. Dropping it stops it (SIGTERM, then SIGKILL)
/// and removes its temp dir; if the test is failing, the daemon's log is printed.
pub struct Vswitchd {
    ns: String,
    dir: TempDir,
    socket: PathBuf,
    state_dir: PathBuf,
    log: PathBuf,
    opts: DaemonOpts,
    vswitchd: PathBuf,
    vsctl: PathBuf,
    child: Option<Child>,
}

impl Vswitchd {
    /// Starts the daemon in `ns` and waits until `vsctl show` answers.
    pub fn start(ns: &Netns, opts: DaemonOpts) -> Result<Vswitchd> {
        let dir = TempDir::new("vswitchd")?;
        let socket = dir.path().join("vswitchd.sock");
        let state_dir = opts
            .state_dir
            .clone()
            .unwrap_or_else(|| dir.path().join("state"));
        std::fs::create_dir_all(&state_dir)
            .map_err(|e| err!("create {}: {e}", state_dir.display()))?;
        let mut d = Vswitchd {
            ns: ns.name().into(),
            log: dir.path().join("vswitchd.log"),
            dir,
            socket,
            state_dir,
            opts,
            vswitchd: binary("vswitchd")?,
            vsctl: binary("vsctl")?,
            child: None,
        };
        d.spawn()?;
        Ok(d)
    }

    /// Starts the daemon again after [`stop`](Self::stop), with the same socket, state
    /// dir and options (a restart as an operator or systemd would do it).
    pub fn restart(&mut self) -> Result<()> {
        if self.child.is_some() {
            self.stop()?;
        }
        self.spawn()
    }

    fn spawn(&mut self) -> Result<()> {
        // A stale socket file from the previous run must not make us think the new
        // daemon is ready; the daemon is expected to replace it anyway.
        let _ = std::fs::remove_file(&self.socket);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| err!("open {}: {e}", self.log.display()))?;
        let log2 = log.try_clone()?;
        let mut c = Command::new("ip");
        // `ip netns exec` execs the daemon, so the child pid is the daemon's pid.
        c.args(["netns", "exec", &self.ns]).arg(&self.vswitchd);
        c.arg("--socket")
            .arg(&self.socket)
            .arg("--state-dir")
            .arg(&self.state_dir);
        if let Some(cores) = &self.opts.cores {
            c.args(["--cores", cores]);
        }
        if let Some(cfg) = &self.opts.config {
            c.arg("--config").arg(cfg);
        }
        c.args(&self.opts.extra_args);
        c.stdin(Stdio::null()).stdout(log).stderr(log2);
        // Plain log lines: the log is a file, read by people after a failure.
        c.env("NO_COLOR", "1");
        if std::env::var_os("RUST_LOG").is_none() {
            c.env("RUST_LOG", "info");
        }
        let child = c
            .spawn()
            .map_err(|e| err!("cannot start `{}`: {e}", cmd::describe(&c)))?;
        self.child = Some(child);
        let mut last_err = String::new();
        let ready = wait_for(READY_TIMEOUT, || {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                last_err = format!("vswitchd exited ({})", cmd::status_text(status));
                return Some(false);
            }
            if !self.socket.exists() {
                return None;
            }
            match self.vsctl(&["show"]) {
                Ok(_) => Some(true),
                Err(e) => {
                    last_err = e.0;
                    None
                }
            }
        });
        match ready {
            Some(true) => Ok(()),
            Some(false) | None => {
                let _ = self.stop();
                Err(err!(
                    "vswitchd did not become ready: {last_err}\n--- log ---\n{}",
                    self.log_text()
                ))
            }
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The daemon's stdout and stderr so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The private directory holding socket, log and (by default) state.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the daemon process is still alive.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// Stops the daemon with SIGTERM (what the contract promises to handle cleanly) and
    /// returns its exit status. If it does not exit within [`STOP_TIMEOUT`], it is
    /// killed and that is an error.
    pub fn stop(&mut self) -> Result<ExitStatus> {
        let Some(mut child) = self.child.take() else {
            return Err(err!("vswitchd is not running"));
        };
        if let Some(s) = child.try_wait()? {
            return Ok(s);
        }
        let _ = cmd::signal(child.id(), libc::SIGTERM);
        if let Some(s) = cmd::wait_deadline(&mut child, STOP_TIMEOUT)? {
            return Ok(s);
        }
        let _ = child.kill();
        let _ = child.wait();
        Err(err!(
            "vswitchd ignored SIGTERM for {STOP_TIMEOUT:?} and was killed"
        ))
    }

    /// `vsctl --socket S args...`, run inside the daemon's namespace like an operator
    /// would; stdout back.
    pub fn vsctl(&self, args: &[&str]) -> Result<String> {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns])
            .arg(&self.vsctl)
            .arg("--socket")
            .arg(&self.socket)
            .args(args);
        cmd::run(&mut c)
    }

    /// `vsctl --json args...` parsed.
    pub fn vsctl_json(&self, args: &[&str]) -> Result<Value> {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        json(&self.vsctl(&all)?)
    }

    /// `vsctl add-port IF --mode MODE` (kind pod).
    pub fn add_port(&self, ifname: &str, mode: &str) -> Result<String> {
        self.vsctl(&["add-port", ifname, "--mode", mode])
    }

    /// `vsctl add-port IF --kind KIND --mode MODE`.
    pub fn add_port_kind(&self, ifname: &str, kind: &str, mode: &str) -> Result<String> {
        self.vsctl(&["add-port", ifname, "--kind", kind, "--mode", mode])
    }

    pub fn del_port(&self, ifname: &str) -> Result<String> {
        self.vsctl(&["del-port", ifname])
    }

    /// The ports `vsctl --json show` lists. Accepts a bare array (the documented
    /// shape) or an object with a `ports` array.
    pub fn ports(&self) -> Result<Vec<Value>> {
        let v = self.vsctl_json(&["show"])?;
        let list = match &v {
            Value::Array(a) => a.clone(),
            Value::Object(o) => o
                .get("ports")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
            _ => return Err(err!("unexpected `vsctl --json show` output: {v}")),
        };
        Ok(list)
    }

    /// The port named `ifname` in `vsctl --json show`, if listed.
    pub fn port(&self, ifname: &str) -> Result<Option<Value>> {
        Ok(self.ports()?.into_iter().find(|p| p["name"] == ifname))
    }

    /// `vsctl --json stats`.
    pub fn stats(&self) -> Result<Stats> {
        self.vsctl_json(&["stats"]).map(Stats)
    }
}

impl Drop for Vswitchd {
    fn drop(&mut self) {
        if self.child.is_some()
            && let Err(e) = self.stop()
        {
            eprintln!("warning: {e}");
        }
        if std::thread::panicking() {
            eprintln!(
                "--- vswitchd log ({}) ---\n{}--- end of log ---",
                self.log.display(),
                self.log_text()
            );
        }
    }
}

/// `vsctl --json stats` output with lenient accessors: a missing counter reads 0, so a
/// test asserts on the numbers instead of failing on the shape first.
#[derive(Debug, Clone)]
pub struct Stats(pub Value);

impl Stats {
    /// The entry of port `name` in `ports`.
    pub fn port(&self, name: &str) -> Option<&Value> {
        self.0["ports"]
            .as_array()?
            .iter()
            .find(|p| p["name"] == name)
    }

    /// A port counter such as `rx_packets`.
    pub fn counter(&self, port: &str, key: &str) -> u64 {
        self.port(port).and_then(|p| p[key].as_u64()).unwrap_or(0)
    }

    /// A port drop counter such as `malformed`.
    pub fn drops(&self, port: &str, reason: &str) -> u64 {
        self.port(port)
            .and_then(|p| p["drops"][reason].as_u64())
            .unwrap_or(0)
    }

    /// Sum of a counter over all ports.
    pub fn total(&self, key: &str) -> u64 {
        self.0["ports"]
            .as_array()
            .map(|a| a.iter().filter_map(|p| p[key].as_u64()).sum())
            .unwrap_or(0)
    }
}

//! Named network namespaces (`ip netns`), removed on drop with everything in them.

use crate::{NAME_PREFIX, Result, cmd, err, unique_suffix};
use serde_json::Value;
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::Duration;

/// A network namespace named `vst-{pid}x{n}-{role}`. Dropping it kills the processes
/// still inside (they were started by the test) and deletes it, which also destroys
/// the interfaces in it (and so the peers of its veths).
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a namespace with a unique name and its loopback up. `role` ("sw", "pod")
    /// only makes `ip netns list` readable.
    pub fn new(role: &str) -> Result<Netns> {
        let name = format!("{NAME_PREFIX}-{}-{role}", unique_suffix());
        cmd::run(Command::new("ip").args(["netns", "add", &name]))?;
        // From here on Drop cleans up, also if the next step fails.
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip netns exec NAME program`: add arguments, then run or spawn it.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Runs `argv` inside the namespace; stdout back, or an error with stderr.
    pub fn run(&self, argv: &[&str]) -> Result<String> {
        let (prog, args) = argv.split_first().ok_or_else(|| err!("empty command"))?;
        cmd::run(self.command(prog).args(args))
    }

    /// `ip -n NAME args...` (no mount namespace games, cheaper than `run`).
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        cmd::run(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    /// Starts `argv` inside the namespace in the background, output discarded. The
    /// caller owns the child; whatever is still running when the namespace is dropped
    /// is killed then.
    pub fn spawn(&self, argv: &[&str]) -> Result<Child> {
        let (prog, args) = argv.split_first().ok_or_else(|| err!("empty command"))?;
        let mut c = self.command(prog);
        c.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c.spawn()
            .map_err(|e| err!("cannot start `{}`: {e}", cmd::describe(&c)))
    }

    /// Runs `f` on a fresh thread that has entered this namespace, and returns its
    /// result. Sockets `f` opens (TCP, packet sockets) live in the namespace.
    pub fn enter<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T> + Send + 'static,
    {
        self.spawn_in(f)?
            .join()
            .map_err(|_| err!("thread in namespace {} panicked", self.name))?
    }

    /// Like [`enter`](Self::enter) but returns at once; join the handle for the result.
    /// A thread of its own because setns(2) changes the calling thread only, and the
    /// thread ends with `f`, so no other code ever runs in the wrong namespace.
    pub fn spawn_in<T, F>(&self, f: F) -> Result<JoinHandle<Result<T>>>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T> + Send + 'static,
    {
        let path = format!("/run/netns/{}", self.name);
        let file = std::fs::File::open(&path).map_err(|e| err!("open {path}: {e}"))?;
        let name = self.name.clone();
        std::thread::Builder::new()
            .name(format!("in-{name}"))
            .spawn(move || {
                // SAFETY: setns on a valid namespace fd; only this thread is affected.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(err!("setns({name}): {}", std::io::Error::last_os_error()));
                }
                drop(file);
                f()
            })
            .map_err(|e| err!("spawn thread: {e}"))
    }

    /// Names of all interfaces in the namespace.
    pub fn links(&self) -> Result<Vec<String>> {
        let v = json(&self.ip(&["-j", "link", "show"])?)?;
        Ok(v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|l| l["ifname"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// `ip -j -d link show dev IF` as JSON (the first and only element).
    pub fn link(&self, ifname: &str) -> Result<Value> {
        let v = json(&self.ip(&["-j", "-d", "link", "show", "dev", ifname])?)?;
        v.as_array()
            .and_then(|a| a.first())
            .cloned()
            .ok_or_else(|| err!("no link {ifname} in {}", self.name))
    }

    /// Kernel counters of `ifname`: (rx_packets, tx_packets) from `ip -s`.
    pub fn link_packets(&self, ifname: &str) -> Result<(u64, u64)> {
        let v = json(&self.ip(&["-j", "-s", "link", "show", "dev", ifname])?)?;
        let s = &v[0]["stats64"];
        Ok((
            s["rx"]["packets"].as_u64().unwrap_or(0),
            s["tx"]["packets"].as_u64().unwrap_or(0),
        ))
    }

    /// Whether an XDP program is attached to `ifname` in any mode (iproute2 reports
    /// it as an `xdp` object, absent without a program).
    pub fn xdp_attached(&self, ifname: &str) -> Result<bool> {
        Ok(self.link(ifname)?.get("xdp").is_some())
    }

    /// Interfaces of this namespace that carry an XDP program.
    pub fn links_with_xdp(&self) -> Result<Vec<String>> {
        let v = json(&self.ip(&["-j", "-d", "link", "show"])?)?;
        Ok(v.as_array()
            .map(|a| {
                a.iter()
                    .filter(|l| l.get("xdp").is_some())
                    .filter_map(|l| l["ifname"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        kill_all_in(&self.name);
        if let Err(e) = cmd::run(Command::new("ip").args(["netns", "del", &self.name])) {
            eprintln!("warning: could not delete namespace {}: {e}", self.name);
        }
    }
}

/// Terminates the processes inside namespace `name` (SIGTERM, then SIGKILL after 2 s).
/// Only called on namespaces whose names say that a test made them.
pub(crate) fn kill_all_in(name: &str) {
    let pids = || -> Vec<u32> {
        cmd::run(Command::new("ip").args(["netns", "pids", name]))
            .map(|s| {
                s.split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    let first = pids();
    if first.is_empty() {
        return;
    }
    for &p in &first {
        let _ = cmd::signal(p, libc::SIGTERM);
    }
    if crate::wait_for(Duration::from_secs(2), || pids().is_empty().then_some(())).is_none() {
        for p in pids() {
            let _ = cmd::signal(p, libc::SIGKILL);
        }
        let _ = crate::wait_for(Duration::from_secs(2), || pids().is_empty().then_some(()));
    }
}

/// Parses command output as JSON.
pub(crate) fn json(s: &str) -> Result<Value> {
    serde_json::from_str(s).map_err(|e| {
        err!(
            "bad JSON ({e}): {}",
            s.chars().take(200).collect::<String>()
        )
    })
}

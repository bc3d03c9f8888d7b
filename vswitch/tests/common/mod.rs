//! Minimal namespace/veth fixtures for port-level tests of the vswitch crate.
//! Every name is unique (prefix + pid + counter) and everything is removed on drop.
#![allow(dead_code)]

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A short unique token: interface names are limited to 15 bytes.
pub fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{}{n}", std::process::id() % 100_000)
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Skips (returns false) outside CI when not root; fails loudly in CI.
pub fn require_root() -> bool {
    if is_root() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "root-only test running in CI without root"
    );
    eprintln!("SKIP: needs root");
    false
}

pub fn run(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{args:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(prefix: &str) -> Netns {
        let name = unique(prefix);
        run(&["ip", "netns", "add", &name]).expect("ip netns add");
        let ns = Netns { name };
        ns.exec(&["ip", "link", "set", "lo", "up"]).expect("lo up");
        ns
    }

    pub fn exec(&self, args: &[&str]) -> Result<String, String> {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(args);
        run(&full)
    }

    /// Runs `f` with the calling thread inside this namespace, then switches back.
    pub fn enter<R>(&self, f: impl FnOnce() -> R) -> R {
        use std::os::fd::AsRawFd;
        let here = std::fs::File::open("/proc/thread-self/ns/net").expect("own netns");
        let there =
            std::fs::File::open(format!("/var/run/netns/{}", self.name)).expect("test netns");
        // SAFETY: setns on valid namespace fds; the thread is switched back below.
        assert_eq!(
            unsafe { libc::setns(there.as_raw_fd(), libc::CLONE_NEWNET) },
            0,
            "setns"
        );
        let r = f();
        // SAFETY: as above.
        assert_eq!(
            unsafe { libc::setns(here.as_raw_fd(), libc::CLONE_NEWNET) },
            0,
            "setns back"
        );
        r
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run(&["ip", "netns", "del", &self.name]);
    }
}

/// A veth pair `a` (in `ns_a`) <-> `b` (in `ns_b`), both up, offloads off on both.
/// Deleted with the namespaces.
pub fn veth_pair(ns_a: &Netns, a: &str, ns_b: &Netns, b: &str) {
    run(&[
        "ip", "link", "add", a, "netns", &ns_a.name, "type", "veth", "peer", "name", b, "netns",
        &ns_b.name,
    ])
    .expect("ip link add veth");
    for (ns, i) in [(ns_a, a), (ns_b, b)] {
        ns.exec(&["ip", "link", "set", i, "up"]).expect("link up");
        let _ = ns.exec(&["ethtool", "-K", i, "tx", "off", "tso", "off", "gso", "off"]);
    }
}

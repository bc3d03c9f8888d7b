//! Test and benchmark support shared by `tests/` and `benches/`: network namespaces,
//! veth pairs and daemon processes that clean up after themselves.
//!
//! Everything here drives the switch only through its public contract
//! (`shared/CONTRACT.md`): the `vswitchd` and `vsctl` binaries, the control socket, and
//! kernel clients (ping, TCP sockets, packet sockets) inside network namespaces.
//!
//! Rules the helpers enforce so that tests can run side by side and never harm the host:
//! - every namespace and interface gets a unique name (prefix + process id + counter),
//!   see [`unique_suffix`];
//! - nothing is created in, or sent through, the root network namespace: veths are
//!   created from inside a test namespace, traffic goes only to test namespaces;
//! - every object removes itself on drop, also when the test panics, and
//!   [`sweep_stale`] removes what a killed test process (SIGKILL) left behind.
//!
//! A typical test:
//!
//! ```no_run
//! use vswitch_suite::{daemon::{DaemonOpts, Vswitchd}, netns::Netns, pod::{Pod, PodOpts}};
//! let Some(_env) = vswitch_suite::e2e() else { return };
//! let sw = Netns::new("sw").expect("switch namespace");
//! let a = Pod::new(&sw, vswitch_suite::pod::pod_ip(1), PodOpts::default()).expect("pod a");
//! let b = Pod::new(&sw, vswitch_suite::pod::pod_ip(2), PodOpts::default()).expect("pod b");
//! let d = Vswitchd::start(&sw, DaemonOpts::default()).expect("vswitchd");
//! d.add_port(&a.switch_if, "xdp-skb").expect("add a");
//! d.add_port(&b.switch_if, "xdp-skb").expect("add b");
//! a.ping_until(b.ip, std::time::Duration::from_secs(10)).expect("ping");
//! ```

pub mod agent;
pub mod cmd;
pub mod cni;
pub mod control;
pub mod daemon;
pub mod frames;
pub mod netns;
pub mod netpol;
pub mod pod;
pub mod topo;
pub mod veth;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};

/// Error of a support helper: what was attempted and why it failed (for commands:
/// the command line, exit status and stderr). Tests usually just `expect` it.
#[derive(Clone, PartialEq, Eq)]
pub struct Error(pub String);

// Debug prints the message as is: `expect` uses Debug, and messages carry multi-line
// daemon logs and stderr that should stay readable.
impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error(e.to_string())
    }
}

/// Result of a support helper.
pub type Result<T> = std::result::Result<T, Error>;

/// Builds an [`Error`] from a format string.
#[macro_export]
macro_rules! err {
    ($($arg:tt)*) => { $crate::Error(format!($($arg)*)) };
}

/// Every name a test makes starts with this; [`sweep_stale`] relies on it.
pub const NAME_PREFIX: &str = "vst";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// `{pid}x{counter}`: unique among all test processes alive on the machine. Kept short
/// because interface names have 15 characters at most (pid <= 7 digits).
pub fn unique_suffix() -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{}x{}", std::process::id(), n)
}

/// Whether the process runs as root (namespaces, veths and XDP need it).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Whether we run under CI (`CI` set to anything but empty, `0` or `false`).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// Returns `true` when a root-only test may run. Without root it panics under CI (a
/// suite that silently skipped everything would look green) and otherwise prints
/// `SKIP` and returns `false`, so a developer can run the unprivileged tests.
pub fn require_root() -> bool {
    if is_root() {
        return true;
    }
    if in_ci() {
        panic!(
            "this test needs root (network namespaces, veths, XDP) and CI is set: run the suite as root"
        );
    }
    eprintln!("SKIP: not root; run as root to include the end-to-end tests");
    false
}

/// Held for the duration of one end-to-end test; see [`e2e`].
pub struct E2eGuard {
    _lock: MutexGuard<'static, ()>,
}

static E2E_LOCK: Mutex<()> = Mutex::new(());

/// Start of every end-to-end test: checks root ([`require_root`]), removes leftovers of
/// killed test runs ([`sweep_stale`]) and serialises the end-to-end tests of this test
/// binary. Serialising matters on a 2-core machine: two daemons polling and two traffic
/// generators at once make timings (and so the tests) flaky. `None` means skip.
pub fn e2e() -> Option<E2eGuard> {
    if !require_root() {
        return None;
    }
    // A test that panicked while holding the lock poisons it; the lock protects no data,
    // so the next test may go on.
    let lock = E2E_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    sweep_stale();
    Some(E2eGuard { _lock: lock })
}

/// Removes namespaces (and the processes in them) that a test process which no longer
/// exists left behind, e.g. after SIGKILL or a power cut; Drop could not run there.
/// Only names of the form `vst-{pid}x{n}-...` whose pid is gone are touched.
pub fn sweep_stale() {
    let Ok(list) = cmd::run(std::process::Command::new("ip").args(["netns", "list"])) else {
        return;
    };
    for line in list.lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = owner_pid(name) else { continue };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        eprintln!("removing stale test namespace {name} (process {pid} is gone)");
        netns::kill_all_in(name);
        let _ = cmd::run(std::process::Command::new("ip").args(["netns", "del", name]));
    }
}

/// The test process id encoded in a namespace name made by [`netns::Netns::new`].
fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(NAME_PREFIX)?.strip_prefix('-')?;
    let (pid, _) = rest.split_once('x')?;
    pid.parse().ok()
}

/// A directory removed with its contents on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
    keep: bool,
}

impl TempDir {
    /// Creates `$TMPDIR/vst-{pid}x{n}-{label}`.
    pub fn new(label: &str) -> Result<TempDir> {
        let path = std::env::temp_dir().join(format!("{NAME_PREFIX}-{}-{label}", unique_suffix()));
        std::fs::create_dir_all(&path).map_err(|e| err!("create {}: {e}", path.display()))?;
        Ok(TempDir {
            path,
            keep: std::env::var_os("VSWITCH_KEEP_TMP").is_some(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // VSWITCH_KEEP_TMP=1 keeps daemon logs and state for a post-mortem.
        if self.keep {
            eprintln!("keeping {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Polls `f` every 50 ms until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: std::time::Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_are_unique_and_short() {
        let a = unique_suffix();
        let b = unique_suffix();
        assert_ne!(a, b);
        // 2-letter interface prefix + suffix must fit in IFNAMSIZ-1 = 15 even for a
        // 7-digit pid and a 4-digit counter.
        assert!(2 + "4194304x9999".len() <= 15);
    }

    #[test]
    fn owner_pid_reads_only_our_names() {
        assert_eq!(owner_pid("vst-1234x5-sw"), Some(1234));
        assert_eq!(owner_pid("vst-1234x5"), Some(1234));
        assert_eq!(owner_pid("vsdemo-1234-sw"), None);
        assert_eq!(owner_pid("vst-abcx1-sw"), None);
        assert_eq!(owner_pid("cni-1234x5"), None);
    }

    #[test]
    fn wait_for_times_out() {
        let mut n = 0;
        assert_eq!(
            wait_for(std::time::Duration::from_millis(200), || {
                n += 1;
                (n == 3).then_some(n)
            }),
            Some(3)
        );
        assert_eq!(
            wait_for(std::time::Duration::from_millis(100), || None::<()>),
            None
        );
    }
}

//! A `vswitch-agent` process for end-to-end tests, and a plain HTTP GET for its
//! metrics endpoint.
//!
//! The agent runs in the test's own (root) network namespace: it only needs the
//! daemon's Unix socket, which is a file, and a loopback TCP port for /metrics.

use crate::daemon::binary;
use crate::{Result, TempDir, cmd, err};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running agent; dropped: killed, and its log printed if the test is failing.
pub struct Agent {
    child: Option<Child>,
    log: PathBuf,
    _dir: TempDir,
    pub metrics_addr: SocketAddr,
}

/// A loopback address with a port that was free a moment ago.
pub fn free_loopback_addr() -> Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

impl Agent {
    /// `vswitch-agent --socket S --node-name N --manifests M --metrics-addr A [extra]`.
    pub fn start_manifests(
        socket: &Path,
        node_name: &str,
        manifests: &Path,
        extra: &[&str],
    ) -> Result<Agent> {
        Agent::start(None, socket, node_name, manifests, extra)
    }

    /// [`Agent::start_manifests`] inside network namespace `ns` (the agent then
    /// manages that namespace's links: `--gateway`). Its metrics address is on
    /// `ns`'s loopback.
    pub fn start_manifests_in(
        ns: &crate::netns::Netns,
        socket: &Path,
        node_name: &str,
        manifests: &Path,
        extra: &[&str],
    ) -> Result<Agent> {
        Agent::start(Some(ns), socket, node_name, manifests, extra)
    }

    fn start(
        ns: Option<&crate::netns::Netns>,
        socket: &Path,
        node_name: &str,
        manifests: &Path,
        extra: &[&str],
    ) -> Result<Agent> {
        let dir = TempDir::new("agent")?;
        let log = dir.path().join("agent.log");
        let metrics_addr = free_loopback_addr()?;
        let out = std::fs::File::create(&log)?;
        let bin = binary("vswitch-agent")?;
        let mut c = match ns {
            Some(ns) => ns.command(&bin.to_string_lossy()),
            None => Command::new(bin),
        };
        c.arg("--socket")
            .arg(socket)
            .args(["--node-name", node_name])
            .arg("--manifests")
            .arg(manifests)
            .args(["--metrics-addr", &metrics_addr.to_string()])
            .args(extra)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        if std::env::var_os("RUST_LOG").is_none() {
            c.env("RUST_LOG", "info");
        }
        let child = c
            .spawn()
            .map_err(|e| err!("cannot start `{}`: {e}", cmd::describe(&c)))?;
        Ok(Agent {
            child: Some(child),
            log,
            _dir: dir,
            metrics_addr,
        })
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// GET `path` on the metrics address: (status code, body).
    pub fn get(&self, path: &str) -> Result<(u16, String)> {
        http_get(self.metrics_addr, path)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- vswitch-agent log ---\n{}--- end of log ---",
                self.log_text()
            );
        }
    }
}

/// A minimal HTTP/1.1 GET: (status code, body).
pub fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| err!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| err!("not an HTTP response: {text}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

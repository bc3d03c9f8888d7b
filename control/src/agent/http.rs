//! `/healthz`, `/readyz` and `/metrics` over plain HTTP/1.1 on `--metrics-addr`.
//!
//! Three fixed GET endpoints for probes and a scraper do not need an HTTP stack: one
//! thread reads a request head, answers, and closes the connection.

use crate::agent::metrics::Metrics;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

/// Longest request head read.
const MAX_HEAD: usize = 8 * 1024;

/// Serves on `listener` from a thread of its own, for the life of the process.
pub fn spawn(listener: TcpListener, metrics: Arc<Metrics>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("http".into())
        .spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    Ok(s) => {
                        if let Err(e) = handle(s, &metrics) {
                            tracing::debug!(error = %e, "http connection");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "http accept");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })
        .map(drop)
}

fn handle(mut s: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head);
    let mut first = head.lines().next().unwrap_or_default().split_whitespace();
    let (method, target) = (
        first.next().unwrap_or_default(),
        first.next().unwrap_or_default(),
    );
    let path = target.split('?').next().unwrap_or_default();
    let (status, ctype, body) = route(method, path, metrics);
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(resp.as_bytes())?;
    if method != "HEAD" {
        s.write_all(body.as_bytes())?;
    }
    s.flush()
}

fn route(method: &str, path: &str, metrics: &Metrics) -> (&'static str, &'static str, String) {
    const TEXT: &str = "text/plain; charset=utf-8";
    if method != "GET" && method != "HEAD" {
        return ("405 Method Not Allowed", TEXT, "only GET\n".into());
    }
    match path {
        "/healthz" => ("200 OK", TEXT, "ok\n".into()),
        "/readyz" if metrics.is_ready() => ("200 OK", TEXT, "ready\n".into()),
        "/readyz" => (
            "503 Service Unavailable",
            TEXT,
            "not ready: no successful sync with vswitchd yet\n".into(),
        ),
        "/metrics" => (
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.encode(),
        ),
        _ => ("404 Not Found", TEXT, "not found\n".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut s = TcpStream::connect(addr).expect("connect");
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read");
        out
    }

    #[test]
    fn endpoints_answer() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        let m = Arc::new(Metrics::new());
        spawn(l, m.clone()).expect("spawn");
        assert!(get(addr, "/healthz").starts_with("HTTP/1.1 200 OK"));
        assert!(get(addr, "/readyz").starts_with("HTTP/1.1 503"));
        m.synced(1, None);
        assert!(get(addr, "/readyz").starts_with("HTTP/1.1 200 OK"));
        let metrics = get(addr, "/metrics?x=1");
        assert!(
            metrics.contains("vswitch_agent_synced_generation 1"),
            "{metrics}"
        );
        assert!(get(addr, "/nope").starts_with("HTTP/1.1 404"));
    }
}

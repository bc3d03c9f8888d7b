//! A raw client for the control socket: sends arbitrary bytes (including broken
//! requests) and reads response lines, for protocol and robustness tests. `vsctl` is
//! the client for everything else.

use crate::{Result, err};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// How long to wait for one response line.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

pub struct RawClient {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl RawClient {
    pub fn connect(socket: &Path) -> Result<RawClient> {
        let s =
            UnixStream::connect(socket).map_err(|e| err!("connect {}: {e}", socket.display()))?;
        s.set_read_timeout(Some(READ_TIMEOUT))?;
        s.set_write_timeout(Some(READ_TIMEOUT))?;
        let writer = s.try_clone()?;
        Ok(RawClient {
            reader: BufReader::new(s),
            writer,
        })
    }

    /// Writes `bytes` as they are (no newline added). A daemon that closes the
    /// connection early (e.g. on an oversized line) makes this fail with EPIPE or
    /// ECONNRESET; callers that expect that ignore the error.
    pub fn send(&mut self, bytes: &[u8]) -> Result<()> {
        self.writer
            .write_all(bytes)
            .map_err(|e| err!("write to control socket: {e}"))
    }

    /// Next response line; `None` if the daemon closed the connection.
    pub fn read_line(&mut self) -> Result<Option<String>> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => Ok(None),
            Ok(_) => Ok(Some(line)),
            // ECONNRESET: closed by the daemon with our data unread; same as EOF here.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(None),
            Err(e) => Err(err!("read from control socket: {e}")),
        }
    }

    /// Sends one line (newline added) and parses the response line.
    pub fn request(&mut self, line: &str) -> Result<Value> {
        self.send(format!("{line}\n").as_bytes())?;
        self.read_response()
    }

    /// Reads and parses one response line; EOF is an error.
    pub fn read_response(&mut self) -> Result<Value> {
        let line = self
            .read_line()?
            .ok_or_else(|| err!("daemon closed the connection without a response"))?;
        serde_json::from_str(&line).map_err(|e| err!("response is not JSON ({e}): {line}"))
    }

    /// Closes the writing half (the daemon sees EOF after what was sent).
    pub fn shutdown_write(&mut self) -> Result<()> {
        self.writer
            .shutdown(std::net::Shutdown::Write)
            .map_err(|e| err!("shutdown: {e}"))
    }
}

/// The `error.code` of a response, if it is an error.
pub fn error_code(resp: &Value) -> Option<&str> {
    resp.get("error")?.get("code")?.as_str()
}

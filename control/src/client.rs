//! Blocking client of the `vswitchd` control socket, for `vsctl`, the agent and the
//! CNI plugin.
//!
//! One request at a time on one connection: [`Client::call`] writes a request line
//! and reads the response line, checking that it answers this request. Typed helpers
//! wrap the operations the daemon knows.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use serde::de::DeserializeOwned;
use serde_json::Value;
use vswitch_proto::{
    AddPortParams, DelPortParams, ErrorReply, HelloReply, Op, PortInfo, PortKind, PortMode,
    Request, Response, StatsParams, StatsReply,
};

/// Where `vswitchd` listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/vswitch/vswitchd.sock";

/// How long a call waits for its response by default. Adding a port attaches XDP
/// programs and may take a while, but a daemon that says nothing for this long is
/// stuck, and a CNI plugin must not hang the kubelet with it.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest response line accepted; a stats reply of thousands of ports is far below.
const MAX_RESPONSE_BYTES: u64 = 64 << 20;

/// Why a call failed.
#[derive(Debug)]
pub enum CallError {
    /// The daemon answered with an error (`not_found`, `invalid_params`, ...).
    Remote(ErrorReply),
    /// Talking to the socket failed (daemon gone, timeout, ...).
    Io { path: PathBuf, source: io::Error },
    /// The daemon sent something that is not the answer to this request.
    Protocol { path: PathBuf, message: String },
}

impl CallError {
    /// The daemon's error reply, if that is what this is.
    pub fn remote(&self) -> Option<&ErrorReply> {
        match self {
            CallError::Remote(e) => Some(e),
            _ => None,
        }
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Remote(e) => write!(f, "{e}"),
            CallError::Io { path, source } => {
                write!(f, "control socket {}: {source}", path.display())
            }
            CallError::Protocol { path, message } => {
                write!(f, "control socket {}: {message}", path.display())
            }
        }
    }
}

// No `source()`: the Display text already carries the cause, and error chains
// printed with `{:#}` would repeat it.
impl std::error::Error for CallError {}

/// A connection to `vswitchd`.
pub struct Client {
    path: PathBuf,
    reader: BufReader<UnixStream>,
    next_id: u64,
}

impl Client {
    /// Connects to the control socket at `path`, with [`DEFAULT_TIMEOUT`] per call.
    pub fn connect(path: impl AsRef<Path>) -> anyhow::Result<Client> {
        let path = path.as_ref();
        let stream = UnixStream::connect(path).with_context(|| {
            format!(
                "cannot connect to {} (is vswitchd running?)",
                path.display()
            )
        })?;
        let mut client = Client {
            path: path.to_path_buf(),
            reader: BufReader::new(stream),
            next_id: 1,
        };
        client
            .set_timeout(Some(DEFAULT_TIMEOUT))
            .context("setting the socket timeout")?;
        Ok(client)
    }

    /// How long one call may wait for the daemon (`None`: forever).
    pub fn set_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        let stream = self.reader.get_ref();
        stream.set_read_timeout(timeout)?;
        stream.set_write_timeout(timeout)
    }

    /// The socket path this client talks to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sends one request and returns its result.
    pub fn call(&mut self, op: Op) -> Result<Value, CallError> {
        let id = self.next_id;
        self.next_id += 1;
        let mut line = serde_json::to_vec(&Request {
            id: Value::from(id),
            op,
        })
        .map_err(|e| self.protocol(format!("encoding the request: {e}")))?;
        line.push(b'\n');
        if let Err(e) = self.reader.get_mut().write_all(&line) {
            // The daemon may have refused us (permission, connection limit) and hung
            // up: its one error line is then more useful than EPIPE.
            if let Ok(Response {
                id: Value::Null,
                error: Some(refusal),
                ..
            }) = self.read_response()
            {
                return Err(CallError::Remote(refusal));
            }
            return Err(self.io(e));
        }
        let resp = self.read_response()?;
        self.check(id, resp)
    }

    /// Protocol handshake: the daemon's protocol and package version and pid.
    pub fn hello(&mut self) -> Result<HelloReply, CallError> {
        let v = self.call(Op::Hello)?;
        self.decode(v)
    }

    /// Attaches interface `name` as a port; returns it as the daemon set it up
    /// (the effective mode, worker, port number...).
    pub fn add_port(
        &mut self,
        name: &str,
        kind: PortKind,
        mode: PortMode,
    ) -> Result<PortInfo, CallError> {
        let v = self.call(Op::AddPort(AddPortParams {
            name: name.to_string(),
            kind,
            mode,
            pod: None,
        }))?;
        self.decode(v)
    }

    /// Attaches a port with every parameter the protocol has (the CNI plugin
    /// passes the pod the port belongs to).
    pub fn add_port_with(&mut self, params: AddPortParams) -> Result<PortInfo, CallError> {
        let v = self.call(Op::AddPort(params))?;
        self.decode(v)
    }

    /// Detaches port `name`.
    pub fn del_port(&mut self, name: &str) -> Result<(), CallError> {
        self.call(Op::DelPort(DelPortParams {
            name: name.to_string(),
        }))
        .map(drop)
    }

    pub fn list_ports(&mut self) -> Result<Vec<PortInfo>, CallError> {
        let v = self.call(Op::ListPorts)?;
        self.decode(v)
    }

    /// Counters of all ports, or of port `port` only.
    pub fn stats(&mut self, port: Option<&str>) -> Result<StatsReply, CallError> {
        let v = self.call(Op::Stats(StatsParams {
            port: port.map(str::to_string),
        }))?;
        self.decode(v)
    }

    /// Decodes a result into the type an operation promises.
    pub fn decode<T: DeserializeOwned>(&self, value: Value) -> Result<T, CallError> {
        serde_json::from_value(value).map_err(|e| self.protocol(format!("unexpected result: {e}")))
    }

    fn read_response(&mut self) -> Result<Response, CallError> {
        let mut line = Vec::new();
        let n = (&mut self.reader)
            .take(MAX_RESPONSE_BYTES)
            .read_until(b'\n', &mut line)
            .map_err(|e| self.io(e))?;
        if n == 0 {
            return Err(self.protocol("vswitchd closed the connection without answering".into()));
        }
        if line.last() != Some(&b'\n') {
            return Err(self.protocol(if n as u64 >= MAX_RESPONSE_BYTES {
                format!("response longer than {MAX_RESPONSE_BYTES} bytes")
            } else {
                "vswitchd closed the connection mid-response".into()
            }));
        }
        serde_json::from_slice(&line).map_err(|e| self.protocol(format!("malformed response: {e}")))
    }

    /// Matches a response to request `id`. A `null` id with an error is the daemon
    /// refusing the connection or the line as a whole, which also answers us.
    fn check(&self, id: u64, resp: Response) -> Result<Value, CallError> {
        if resp.id == id || (resp.id.is_null() && resp.error.is_some()) {
            return resp.into_result().map_err(CallError::Remote);
        }
        Err(self.protocol(format!(
            "response id {} does not match request id {id}",
            resp.id
        )))
    }

    fn io(&self, source: io::Error) -> CallError {
        CallError::Io {
            path: self.path.clone(),
            source,
        }
    }

    fn protocol(&self, message: String) -> CallError {
        CallError::Protocol {
            path: self.path.clone(),
            message,
        }
    }
}

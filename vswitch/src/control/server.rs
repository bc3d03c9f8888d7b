//! The control socket's event loop.
//!
//! Single-threaded and non-blocking: one mio `Poll` watches the listener and every
//! connection. Requests are answered synchronously, in order per connection, which
//! keeps the handler free of concurrency. Everything a client can send is bounded
//! (line length, queued output, connections, read work per wake-up), so no client,
//! however broken or hostile, can stall the loop or grow the daemon's memory.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mio::net::{UnixListener, UnixStream};
use mio::{Events, Interest, Poll, Token};
use serde_json::Value;
use vswitch_proto::{
    ErrorCode, ErrorReply, MAX_LINE_BYTES, Request, Response, decode_request, encode_response,
};

use super::Handler;
use super::auth::{effective_uid, peer_allowed, peer_cred};
use super::conn::{Conn, Io, Next, Phase, send_nosignal};

/// How often [`ControlServer::run`] calls [`Handler::tick`], and so also the longest
/// it takes to notice the shutdown flag.
pub const TICK_INTERVAL: Duration = Duration::from_millis(100);

const LISTENER: Token = Token(0);
/// Bytes taken from a socket per read call.
const READ_CHUNK: usize = 64 * 1024;
/// Read calls per connection per wake-up; past it the connection waits its turn, so
/// one client streaming requests cannot starve the others or the ticks.
const READ_BUDGET: usize = 16;

/// Resource bounds of the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once; one more gets a `failed` error and is closed.
    pub max_connections: usize,
    /// Response bytes queued for a client that is not reading; past it the
    /// connection is closed.
    pub max_pending_output: usize,
    /// How long a connection being closed may take to drain its last responses.
    pub close_linger: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 64,
            max_pending_output: 4 << 20,
            close_linger: Duration::from_secs(1),
        }
    }
}

/// A bound control socket and its open connections.
pub struct ControlServer {
    poll: Poll,
    events: Events,
    listener: UnixListener,
    path: PathBuf,
    /// (device, inode) of the socket file we bound: on drop the file is removed only
    /// if it is still ours, not a successor daemon's.
    file_id: (u64, u64),
    owner_uid: u32,
    limits: Limits,
    conns: HashMap<Token, Conn>,
    next_token: usize,
    chunk: Box<[u8]>,
    /// `accept` failed for lack of resources (EMFILE...): retry on the next pass,
    /// since the edge-triggered listener will not signal the waiting peers again.
    accept_retry: bool,
}

impl ControlServer {
    /// Binds the control socket at `path` with mode 0600, creating its directory if
    /// missing. A socket file left by a dead daemon is replaced; one a live daemon
    /// still answers on is not (`AddrInUse`), nor is a path that is not a socket.
    pub fn bind(path: &Path) -> io::Result<ControlServer> {
        let ctx = |what: &str, e: io::Error| {
            io::Error::new(
                e.kind(),
                format!("control socket {}: {what}: {e}", path.display()),
            )
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(|e| ctx("creating its directory", e))?;
        }
        remove_stale(path)?;
        let mut listener = UnixListener::bind(path).map_err(|e| ctx("bind", e))?;
        // Peers are also checked by uid on accept, which covers the moment between
        // bind (umask mode) and this chmod.
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))
            .map_err(|e| ctx("chmod 0600", e))?;
        let meta = fs::metadata(path).map_err(|e| ctx("stat", e))?;
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        tracing::info!(path = %path.display(), "control socket bound");
        Ok(ControlServer {
            poll,
            events: Events::with_capacity(128),
            listener,
            path: path.to_path_buf(),
            file_id: (meta.dev(), meta.ino()),
            owner_uid: effective_uid(),
            limits: Limits::default(),
            conns: HashMap::new(),
            next_token: 1,
            chunk: vec![0; READ_CHUNK].into_boxed_slice(),
            accept_retry: false,
        })
    }

    /// Replaces the default [`Limits`].
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Connections open right now (including ones draining before close).
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Serves until `shutdown` is set, calling `handler.tick()` about every
    /// [`TICK_INTERVAL`]. Returns only on shutdown or if polling itself fails.
    pub fn run(&mut self, handler: &mut dyn Handler, shutdown: &AtomicBool) -> io::Result<()> {
        let mut next_tick = Instant::now() + TICK_INTERVAL;
        while !shutdown.load(Ordering::Acquire) {
            let now = Instant::now();
            if now >= next_tick {
                handler.tick();
                next_tick = now + TICK_INTERVAL;
            }
            self.poll_once(
                handler,
                Some(next_tick.saturating_duration_since(Instant::now())),
            )?;
        }
        tracing::info!(path = %self.path.display(), "control socket shutting down");
        Ok(())
    }

    /// Waits up to `timeout` (`None`: forever) for socket events and serves them:
    /// accepts, reads and answers complete requests, writes queued responses, closes
    /// finished connections. Returns early, without waiting, when a connection still
    /// has unread input from the previous pass.
    pub fn poll_once(
        &mut self,
        handler: &mut dyn Handler,
        timeout: Option<Duration>,
    ) -> io::Result<()> {
        let backlog = self
            .conns
            .values()
            .any(|c| c.read_pending && c.phase == Phase::Open);
        let timeout = if backlog {
            Some(Duration::ZERO)
        } else {
            timeout
        };
        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e),
        }
        let mut accept = self.accept_retry;
        for event in self.events.iter() {
            if event.token() == LISTENER {
                accept = true;
            } else if let Some(conn) = self.conns.get_mut(&event.token()) {
                // Hang-ups and errors surface as a read result (0 or an error).
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    conn.read_pending = true;
                }
            }
        }
        if accept {
            self.accept_all();
        }

        let now = Instant::now();
        let mut gone = Vec::new();
        for (&token, conn) in self.conns.iter_mut() {
            if !service(conn, handler, &mut self.chunk, &self.limits, now) {
                gone.push(token);
            }
        }
        for token in gone {
            if let Some(mut conn) = self.conns.remove(&token) {
                let _ = self.poll.registry().deregister(&mut conn.stream);
                tracing::debug!(
                    pid = conn.peer.pid,
                    open = self.conns.len(),
                    "control connection closed"
                );
            }
        }
        Ok(())
    }

    fn accept_all(&mut self) {
        let was_retrying = self.accept_retry;
        self.accept_retry = false;
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => self.admit(stream),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) =>
                {
                    continue;
                }
                Err(e) => {
                    if !was_retrying {
                        tracing::warn!(error = %e, "control socket accept failed; will retry");
                    }
                    self.accept_retry = true;
                    break;
                }
            }
        }
    }

    fn admit(&mut self, mut stream: UnixStream) {
        let peer = match peer_cred(stream.as_raw_fd()) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "control connection refused: no peer credentials");
                reject(
                    &stream,
                    ErrorCode::PermissionDenied,
                    "cannot read peer credentials".into(),
                );
                return;
            }
        };
        if !peer_allowed(peer.uid, self.owner_uid) {
            tracing::warn!(
                uid = peer.uid,
                pid = peer.pid,
                "control connection refused: not root or owner"
            );
            let msg = format!(
                "uid {} may not use this socket (only root and uid {})",
                peer.uid, self.owner_uid
            );
            reject(&stream, ErrorCode::PermissionDenied, msg);
            return;
        }
        if self.conns.len() >= self.limits.max_connections {
            tracing::warn!(
                pid = peer.pid,
                limit = self.limits.max_connections,
                "control connection refused: too many"
            );
            let msg = format!(
                "too many control connections (limit {})",
                self.limits.max_connections
            );
            reject(&stream, ErrorCode::Failed, msg);
            return;
        }
        let token = self.fresh_token();
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            token,
            Interest::READABLE | Interest::WRITABLE,
        ) {
            tracing::warn!(error = %e, "control connection dropped: cannot register it");
            return;
        }
        tracing::debug!(
            pid = peer.pid,
            uid = peer.uid,
            open = self.conns.len() + 1,
            "control connection opened"
        );
        self.conns
            .insert(token, Conn::new(stream, peer, MAX_LINE_BYTES));
    }

    fn fresh_token(&mut self) -> Token {
        loop {
            let t = Token(self.next_token);
            self.next_token = self.next_token.wrapping_add(1);
            if t != LISTENER && !self.conns.contains_key(&t) {
                return t;
            }
        }
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        // Leave no stale file behind, but never remove a socket a newer daemon bound
        // at the same path after us.
        let ours =
            fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.file_id);
        if ours {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Replaces a socket file whose daemon is gone; refuses one that still answers.
fn remove_stale(path: &Path) -> io::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("control socket {}: {e}", path.display()),
            ));
        }
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "control socket {}: path exists and is not a socket; refusing to replace it",
                path.display()
            ),
        ));
    }
    // mio's connect is non-blocking, so a live daemon with a full backlog (EAGAIN)
    // cannot hang us here; it counts as live.
    match UnixStream::connect(path) {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "control socket {}: another daemon is already serving on it",
                path.display()
            ),
        )),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "control socket {}: another daemon is already serving on it (busy)",
                path.display()
            ),
        )),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::info!(path = %path.display(), "removing stale control socket");
            match fs::remove_file(path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io::Error::new(
                    e.kind(),
                    format!(
                        "control socket {}: removing stale socket: {e}",
                        path.display()
                    ),
                )),
                _ => Ok(()),
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!(
                "control socket {}: cannot tell whether it is in use: {e}",
                path.display()
            ),
        )),
    }
}

/// Sends one error line to a connection we are about to drop. The socket is fresh,
/// so its send buffer has room; if not, the peer simply sees the close.
fn reject(stream: &UnixStream, code: ErrorCode, message: String) {
    let line = encode_response(&Response::err(Value::Null, ErrorReply::new(code, message)));
    let _ = send_nosignal(stream, &line);
}

/// One pass over a connection: read and answer what arrived, write what is queued,
/// decide whether it stays. Returns false when the connection is to be closed.
fn service(
    conn: &mut Conn,
    handler: &mut dyn Handler,
    chunk: &mut [u8],
    limits: &Limits,
    now: Instant,
) -> bool {
    if conn.phase == Phase::Open
        && conn.read_pending
        && !read_and_answer(conn, handler, chunk, limits, now)
    {
        return false;
    }
    if conn.flush() == Io::Dead {
        return false;
    }
    match conn.phase {
        Phase::Open => true,
        Phase::Closing { deadline } => conn.output.pending() > 0 && now < deadline,
    }
}

/// Reads up to the budget, answering every complete line. False: drop at once.
fn read_and_answer(
    conn: &mut Conn,
    handler: &mut dyn Handler,
    chunk: &mut [u8],
    limits: &Limits,
    now: Instant,
) -> bool {
    for _ in 0..READ_BUDGET {
        match conn.read_some(chunk) {
            Ok(Some(n)) => {
                conn.input.push(&chunk[..n]);
                if !answer_lines(conn, handler, limits, now) {
                    return false;
                }
                if conn.phase != Phase::Open {
                    return true;
                }
            }
            Ok(None) => {
                conn.read_pending = false;
                return true;
            }
            Err(Io::Eof) => {
                if conn.input.partial_len() > 0 {
                    tracing::debug!(
                        pid = conn.peer.pid,
                        bytes = conn.input.partial_len(),
                        "control client hung up mid-request; discarding it"
                    );
                }
                // Still send the answers to the lines it did finish: a client may
                // shut down its write side and then read (socat does).
                conn.phase = Phase::Closing {
                    deadline: now + limits.close_linger,
                };
                return true;
            }
            Err(_) => return false,
        }
    }
    true // budget spent; `read_pending` stays set and the next pass continues
}

/// Answers every complete line in the input buffer. False: drop at once.
fn answer_lines(conn: &mut Conn, handler: &mut dyn Handler, limits: &Limits, now: Instant) -> bool {
    loop {
        let reply = match conn.input.next_line() {
            Next::Pending => return true,
            Next::Line(line) => match answer(line, handler) {
                Some(reply) => reply,
                None => continue,
            },
            Next::TooLarge => {
                tracing::warn!(
                    pid = conn.peer.pid,
                    limit = MAX_LINE_BYTES,
                    "control request too large; closing"
                );
                let e = ErrorReply::new(
                    ErrorCode::TooLarge,
                    format!(
                        "request line exceeds the limit of {MAX_LINE_BYTES} bytes; closing the connection"
                    ),
                );
                handler.note_error(&e);
                conn.output
                    .push(&encode_response(&Response::err(Value::Null, e)));
                conn.phase = Phase::Closing {
                    deadline: now + limits.close_linger,
                };
                return true;
            }
        };
        conn.output.push(&reply);
        if conn.output.pending() > limits.max_pending_output {
            if conn.flush() == Io::Dead {
                return false;
            }
            if conn.output.pending() > limits.max_pending_output {
                tracing::warn!(
                    pid = conn.peer.pid,
                    pending = conn.output.pending(),
                    "control client is not reading its responses; closing"
                );
                return false;
            }
        }
    }
}

/// The response line for one request line; `None` for a blank line.
fn answer(line: &[u8], handler: &mut dyn Handler) -> Option<Vec<u8>> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    let response = match decode_request(line) {
        Ok(Request { id, op }) => {
            let name = op.name();
            tracing::trace!(op = name, "control request");
            match panic::catch_unwind(AssertUnwindSafe(|| handler.handle(op))) {
                Ok(Ok(result)) => Response::ok(id, result),
                Ok(Err(e)) => {
                    handler.note_error(&e);
                    Response::err(id, e)
                }
                Err(payload) => {
                    let msg = panic_message(payload.as_ref());
                    tracing::error!(op = name, panic = msg, "control handler panicked");
                    let e = ErrorReply::new(ErrorCode::Internal, format!("{name} panicked: {msg}"));
                    handler.note_error(&e);
                    Response::err(id, e)
                }
            }
        }
        Err((id, e)) => {
            tracing::debug!(error = %e, "bad control request");
            handler.note_error(&e);
            Response::err(id, e)
        }
    };
    Some(encode_response(&response))
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "unknown panic"
    }
}

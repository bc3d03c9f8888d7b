//! The control server over a real Unix socket: framing, limits, hostile clients.
//! Each test runs its own server thread on a socket in a unique temp directory.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{Value, json};
use vswitch::control::{ControlServer, Handler, Limits, hello_reply};
use vswitch_proto::{ErrorCode, ErrorReply, MAX_LINE_BYTES, Op, PortState, Response};

/// Echoes what it is asked, counts calls and ticks, and misbehaves on cue:
/// `add_port` of "panic" panics, of "big:N" answers with an N-byte string.
struct TestHandler {
    calls: Arc<AtomicUsize>,
    ticks: Arc<AtomicUsize>,
}

impl Handler for TestHandler {
    fn handle(&mut self, op: Op) -> Result<Value, ErrorReply> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        match op {
            Op::Hello => Ok(serde_json::to_value(hello_reply()).expect("hello")),
            Op::AddPort(p) if p.name == "panic" => panic!("test handler asked to panic"),
            Op::AddPort(p) if p.name.starts_with("big:") => {
                let len: usize = p.name[4..].parse().expect("big:N");
                Ok(Value::String("x".repeat(len)))
            }
            Op::AddPort(p) => Ok(json!({"name": p.name, "state": PortState::Up, "n": n})),
            Op::DelPort(p) => Err(ErrorReply::new(
                ErrorCode::NotFound,
                format!("no port named {}", p.name),
            )),
            Op::ListPorts => Ok(json!([])),
            Op::Stats(p) => Ok(json!({"port": p.port, "n": n})),
            other => Err(ErrorReply::new(
                ErrorCode::Failed,
                format!("{} is not handled by the test handler", other.name()),
            )),
        }
    }
    fn tick(&mut self) {
        self.ticks.fetch_add(1, Ordering::SeqCst);
    }
}

struct TestServer {
    dir: PathBuf,
    path: PathBuf,
    shutdown: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    calls: Arc<AtomicUsize>,
    ticks: Arc<AtomicUsize>,
}

fn unique_dir() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    std::env::temp_dir().join(format!("vswitch-ctl-test-{}-{n}", std::process::id()))
}

impl TestServer {
    fn start() -> TestServer {
        Self::start_with(Limits::default())
    }

    fn start_with(limits: Limits) -> TestServer {
        let dir = unique_dir();
        // A nested path also checks that bind creates missing directories.
        let path = dir.join("run").join("vswitchd.sock");
        let mut server = ControlServer::bind(&path).expect("bind");
        server.set_limits(limits);
        let shutdown = Arc::new(AtomicBool::new(false));
        let calls = Arc::new(AtomicUsize::new(0));
        let ticks = Arc::new(AtomicUsize::new(0));
        let mut handler = TestHandler {
            calls: calls.clone(),
            ticks: ticks.clone(),
        };
        let flag = shutdown.clone();
        let thread = std::thread::spawn(move || server.run(&mut handler, &flag).expect("run"));
        TestServer {
            dir,
            path,
            shutdown,
            thread: Some(thread),
            calls,
            ticks,
        }
    }

    fn connect(&self) -> Conn {
        Conn::new(UnixStream::connect(&self.path).expect("connect"))
    }

    /// A fresh client gets served: the server survived whatever came before.
    fn assert_serves(&self) {
        let mut c = self.connect();
        let r = c.call(r#"{"id":"alive","op":"hello"}"#);
        assert_eq!(r.id, json!("alive"));
        assert_eq!(r.result.expect("hello result")["protocol"], json!(1));
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let joined = t.join();
            if !std::thread::panicking() {
                joined.expect("server thread");
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct Conn {
    reader: BufReader<UnixStream>,
}

impl Conn {
    fn new(s: UnixStream) -> Conn {
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        Conn {
            reader: BufReader::new(s),
        }
    }
    fn send(&mut self, bytes: &[u8]) {
        self.reader.get_mut().write_all(bytes).expect("write");
    }
    fn recv(&mut self) -> Response {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).expect("read response");
        assert!(n > 0, "connection closed, expected a response");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad response {line:?}: {e}"))
    }
    fn call(&mut self, line: &str) -> Response {
        self.send(format!("{line}\n").as_bytes());
        self.recv()
    }
    fn error(&mut self, line: &[u8]) -> (Value, ErrorCode) {
        let mut l = line.to_vec();
        l.push(b'\n');
        self.send(&l);
        let r = self.recv();
        (
            r.id.clone(),
            r.error
                .unwrap_or_else(|| panic!("expected an error for {line:?}"))
                .code,
        )
    }
    /// Reads to the end; true if the server closed (EOF or reset) within the timeout.
    fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        match self.reader.read_to_end(&mut rest) {
            Ok(_) => true,
            Err(e) => matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe),
        }
    }
}

#[test]
fn socket_file_is_0600_and_removed_on_drop() {
    let dir = unique_dir();
    let path = dir.join("s.sock");
    let server = ControlServer::bind(&path).expect("bind");
    let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
    drop(server);
    assert!(!path.exists(), "socket file left behind");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn stale_socket_is_replaced_live_one_is_not() {
    let dir = unique_dir();
    std::fs::create_dir_all(&dir).expect("mkdir");
    let path = dir.join("s.sock");
    // A socket file nobody listens on: what a crashed daemon leaves.
    drop(std::os::unix::net::UnixListener::bind(&path).expect("stale bind"));
    assert!(path.exists());
    let live = ControlServer::bind(&path).expect("stale socket replaced");
    let err = ControlServer::bind(&path)
        .err()
        .expect("second daemon refused");
    assert_eq!(err.kind(), ErrorKind::AddrInUse);
    assert!(err.to_string().contains("already serving"), "{err}");
    drop(live);

    let file = dir.join("plain");
    std::fs::write(&file, b"keep me").expect("write");
    assert!(
        ControlServer::bind(&file).is_err(),
        "replaced a regular file"
    );
    assert_eq!(std::fs::read(&file).expect("read"), b"keep me");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn answers_every_op_with_the_request_id() {
    let s = TestServer::start();
    let mut c = s.connect();
    let r = c.call(r#"{"id":7,"op":"hello"}"#);
    assert_eq!(r.id, json!(7));
    assert_eq!(r.result.expect("result")["pid"], json!(std::process::id()));
    let r = c.call(r#"{"id":"x","op":"add_port","params":{"name":"veth1"}}"#);
    assert_eq!(r.id, json!("x"));
    assert_eq!(r.result.expect("result")["name"], json!("veth1"));
    let r = c.call(r#"{"id":8,"op":"del_port","params":{"name":"veth9"}}"#);
    assert_eq!(r.id, json!(8));
    let e = r.error.expect("error");
    assert_eq!(
        (e.code, e.message.as_str()),
        (ErrorCode::NotFound, "no port named veth9")
    );
    assert_eq!(
        c.call(r#"{"id":9,"op":"list_ports"}"#).result,
        Some(json!([]))
    );
    assert_eq!(
        c.call(r#"{"id":10,"op":"stats","params":{"port":"a"}}"#)
            .result
            .expect("stats")["port"],
        json!("a")
    );
}

#[test]
fn malformed_requests_get_errors_and_the_connection_stays_open() {
    let s = TestServer::start();
    let mut c = s.connect();
    assert_eq!(
        c.error(b"\xff\xfe\x00garbage\x80"),
        (Value::Null, ErrorCode::ParseError)
    );
    assert_eq!(c.error(b"{not json"), (Value::Null, ErrorCode::ParseError));
    assert_eq!(
        c.error(br#"{"id":1,"op":"hello""#),
        (Value::Null, ErrorCode::ParseError)
    );
    assert_eq!(
        c.error(b"[1,2,3]"),
        (Value::Null, ErrorCode::InvalidRequest)
    );
    assert_eq!(
        c.error(br#"{"op":"hello"}"#),
        (Value::Null, ErrorCode::InvalidRequest)
    );
    assert_eq!(
        c.error(br#"{"id":2,"op":"frobnicate"}"#),
        (json!(2), ErrorCode::UnknownOp)
    );
    assert_eq!(
        c.error(br#"{"id":3,"op":"add_port"}"#),
        (json!(3), ErrorCode::InvalidParams)
    );
    assert_eq!(
        c.error(br#"{"id":4,"op":"add_port","params":{"name":"a","mode":"turbo"}}"#),
        (json!(4), ErrorCode::InvalidParams)
    );
    // Blank lines (and CRLF endings, as from a terminal) are not requests.
    c.send(b"\n\n   \r\n");
    let r = c.call("{\"id\":5,\"op\":\"hello\"}\r");
    assert_eq!(r.id, json!(5));
    assert!(r.result.is_some());
    s.assert_serves();
}

#[test]
fn garbage_bytes_without_newlines_do_not_hurt() {
    let s = TestServer::start();
    let mut c = s.connect();
    let garbage: Vec<u8> = (0..200_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 | 1)
        .collect();
    let garbage: Vec<u8> = garbage.into_iter().filter(|&b| b != b'\n').collect();
    c.send(&garbage);
    c.send(b"\n");
    assert_eq!(c.recv().error.expect("error").code, ErrorCode::ParseError);
    assert!(c.call(r#"{"id":1,"op":"hello"}"#).result.is_some());
    s.assert_serves();
}

#[test]
fn handler_panic_is_answered_internal_and_the_daemon_lives() {
    let s = TestServer::start();
    let mut c = s.connect();
    let r = c.call(r#"{"id":1,"op":"add_port","params":{"name":"panic"}}"#);
    let e = r.error.expect("error");
    assert_eq!(e.code, ErrorCode::Internal);
    assert!(
        e.message.contains("test handler asked to panic"),
        "{}",
        e.message
    );
    assert!(c.call(r#"{"id":2,"op":"hello"}"#).result.is_some());
    s.assert_serves();
}

#[test]
fn oversized_line_gets_too_large_and_is_closed() {
    let s = TestServer::start();
    let mut c = s.connect();
    let writer = c.reader.get_ref().try_clone().expect("clone");
    // The server closes mid-line, so the write may fail with EPIPE: write from a
    // thread and ignore that.
    let w = std::thread::spawn(move || {
        let mut writer = writer;
        let mut line = vec![b' '; MAX_LINE_BYTES + 1];
        line.push(b'\n');
        let _ = writer.write_all(&line);
    });
    let r = c.recv();
    assert_eq!(r.id, Value::Null);
    assert_eq!(r.error.expect("error").code, ErrorCode::TooLarge);
    assert!(c.closed());
    w.join().expect("writer");
    s.assert_serves();
}

#[test]
fn a_line_of_exactly_the_limit_is_accepted() {
    let s = TestServer::start();
    let mut c = s.connect();
    let head = br#"{"id":1,"op":"hello"}"#;
    let mut line = head.to_vec();
    line.resize(MAX_LINE_BYTES, b' ');
    line.push(b'\n');
    c.send(&line);
    assert_eq!(c.recv().id, json!(1));
}

#[test]
fn half_written_request_then_disconnect_is_discarded() {
    let s = TestServer::start();
    for _ in 0..20 {
        let mut c = s.connect();
        c.send(br#"{"id":1,"op":"hel"#);
        drop(c);
    }
    s.assert_serves();
    assert_eq!(
        s.calls.load(Ordering::SeqCst),
        1,
        "only assert_serves reached the handler"
    );
}

#[test]
fn clients_that_vanish_without_reading_do_not_stall_the_loop() {
    let s = TestServer::start();
    for i in 0..50 {
        let mut c = s.connect();
        // Some close with the answers unread (EPIPE/ECONNRESET on the server's write),
        // some shut down their write side first and leave.
        c.send(b"{\"id\":1,\"op\":\"hello\"}\n{\"id\":2,\"op\":\"add_port\",\"params\":{\"name\":\"big:100000\"}}\n");
        if i % 2 == 0 {
            let _ = c.reader.get_ref().shutdown(std::net::Shutdown::Write);
        }
        drop(c);
    }
    s.assert_serves();
}

#[test]
fn write_side_shutdown_still_gets_its_answers() {
    // socat and `nc -N` half-close after the last request and then read.
    let s = TestServer::start();
    let mut c = s.connect();
    c.send(
        b"{\"id\":1,\"op\":\"hello\"}\n{\"id\":2,\"op\":\"list_ports\"}\n{\"id\":3,\"op\":\"hel",
    );
    c.reader
        .get_ref()
        .shutdown(std::net::Shutdown::Write)
        .expect("shutdown");
    assert_eq!(c.recv().id, json!(1));
    assert_eq!(c.recv().id, json!(2));
    assert!(c.closed());
}

#[test]
fn thousand_pipelined_requests_are_answered_in_order() {
    let s = TestServer::start();
    let mut c = s.connect();
    let mut batch = String::new();
    for i in 0..1000 {
        if i % 3 == 0 {
            batch.push_str(&format!(
                "{{\"id\":{i},\"op\":\"stats\",\"params\":{{\"port\":\"p{i}\"}}}}\n"
            ));
        } else if i % 3 == 1 {
            batch.push_str(&format!("{{\"id\":{i},\"op\":\"bogus\"}}\n"));
        } else {
            batch.push_str(&format!("{{\"id\":\"s{i}\",\"op\":\"hello\"}}\n"));
        }
    }
    c.send(batch.as_bytes());
    for i in 0..1000 {
        let r = c.recv();
        match i % 3 {
            0 => {
                assert_eq!(r.id, json!(i));
                assert_eq!(r.result.expect("stats")["port"], json!(format!("p{i}")));
            }
            1 => {
                assert_eq!(r.id, json!(i));
                assert_eq!(r.error.expect("error").code, ErrorCode::UnknownOp);
            }
            _ => assert_eq!(r.id, json!(format!("s{i}"))),
        }
    }
}

#[test]
fn client_that_does_not_read_is_cut_off() {
    let limits = Limits {
        max_pending_output: 1 << 20,
        ..Limits::default()
    };
    let s = TestServer::start_with(limits);
    let mut c = s.connect();
    // 64 answers of 256 KiB = 16 MiB, far past the 1 MiB cap plus socket buffers.
    let req = "{\"id\":1,\"op\":\"add_port\",\"params\":{\"name\":\"big:262144\"}}\n".repeat(64);
    c.send(req.as_bytes());
    std::thread::sleep(Duration::from_millis(300));
    let mut got = Vec::new();
    let res = c.reader.read_to_end(&mut got);
    assert!(
        res.is_ok() || matches!(res, Err(ref e) if e.kind() == ErrorKind::ConnectionReset),
        "{res:?}"
    );
    assert!(got.len() < 8 << 20, "read {} bytes: not cut off", got.len());
    s.assert_serves();
}

#[test]
fn connections_beyond_the_cap_are_refused_with_an_error() {
    let limits = Limits {
        max_connections: 8,
        ..Limits::default()
    };
    let s = TestServer::start_with(limits);
    let mut held: Vec<Conn> = (0..8).map(|_| s.connect()).collect();
    for (i, c) in held.iter_mut().enumerate() {
        assert_eq!(
            c.call(&format!(r#"{{"id":{i},"op":"hello"}}"#)).id,
            json!(i)
        );
    }
    let mut extra = s.connect();
    let r = extra.recv();
    let e = r.error.expect("error");
    assert_eq!(e.code, ErrorCode::Failed);
    assert!(e.message.contains("too many"), "{}", e.message);
    assert!(extra.closed());
    // A slot freed is a slot available.
    held.pop();
    std::thread::sleep(Duration::from_millis(200));
    s.assert_serves();
}

#[test]
fn handler_ticks_while_idle() {
    let s = TestServer::start();
    std::thread::sleep(Duration::from_millis(550));
    let ticks = s.ticks.load(Ordering::SeqCst);
    assert!((2..=20).contains(&ticks), "{ticks} ticks in 550 ms");
}

#[test]
fn other_users_are_refused_by_peer_credentials() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to act as another uid");
        return;
    }
    let s = TestServer::start();
    // Open the file mode up, so only the SO_PEERCRED check stands in the way (as in
    // the moment between bind and chmod).
    std::fs::set_permissions(&s.path, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    std::fs::set_permissions(
        s.path.parent().expect("dir"),
        std::fs::Permissions::from_mode(0o755),
    )
    .expect("chmod");
    let path: PathBuf = s.path.clone();
    let r = std::thread::spawn(move || {
        // The raw syscall changes this thread's credentials only (glibc's setresuid
        // would change every thread's); the thread ends right after.
        // SAFETY: plain syscall with integer arguments.
        let rc = unsafe { libc::syscall(libc::SYS_setresuid, 65534, 65534, 65534) };
        assert_eq!(rc, 0, "setresuid");
        let mut c = Conn::new(UnixStream::connect(Path::new(&path)).expect("connect as nobody"));
        let r = c.recv();
        assert!(c.closed());
        r
    })
    .join()
    .expect("thread");
    assert_eq!(r.error.expect("error").code, ErrorCode::PermissionDenied);
    s.assert_serves();
}

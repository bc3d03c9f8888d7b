//! One control connection: line framing of what comes in, buffering of what goes out.
//!
//! The framing and buffering parts do no I/O, so the tricky cases (lines split across
//! reads, overflow detected before the newline arrives) are unit-tested here.

use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::time::Instant;

use mio::net::UnixStream;

use super::auth::PeerCred;

/// Splits a byte stream into newline-terminated lines, holding at most `max_line`
/// bytes of an unfinished line (plus one read's worth) before giving up on it.
#[derive(Debug)]
pub(crate) struct LineBuffer {
    buf: Vec<u8>,
    /// Start of the first line not yet handed out.
    start: usize,
    /// Bytes before this index (and after `start`) are known to hold no newline.
    scanned: usize,
    max_line: usize,
}

/// What [`LineBuffer::next_line`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next<'a> {
    /// A complete line, newline stripped.
    Line(&'a [u8]),
    /// No complete line yet; the unfinished part (if any) is within limits.
    Pending,
    /// A line is longer than the limit, finished or not. The stream cannot be
    /// resynchronised (the rest of the line is unknown), so the caller closes it.
    TooLarge,
}

impl LineBuffer {
    pub(crate) fn new(max_line: usize) -> Self {
        LineBuffer {
            buf: Vec::new(),
            start: 0,
            scanned: 0,
            max_line,
        }
    }

    pub(crate) fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes of an unfinished line held (what a disconnect would discard).
    pub(crate) fn partial_len(&self) -> usize {
        self.buf.len() - self.start
    }

    pub(crate) fn next_line(&mut self) -> Next<'_> {
        let from = self.scanned.max(self.start);
        match self.buf[from..].iter().position(|&b| b == b'\n') {
            Some(off) => {
                let end = from + off;
                let line_start = self.start;
                self.start = end + 1;
                self.scanned = self.start;
                if end - line_start > self.max_line {
                    return Next::TooLarge;
                }
                Next::Line(&self.buf[line_start..end])
            }
            None => {
                // Everything handed out is dropped here, so the buffer only ever holds
                // the unfinished line.
                self.buf.drain(..self.start);
                self.start = 0;
                self.scanned = self.buf.len();
                if self.buf.len() > self.max_line {
                    Next::TooLarge
                } else {
                    Next::Pending
                }
            }
        }
    }
}

/// Response bytes waiting for the peer to read them.
#[derive(Debug, Default)]
pub(crate) struct OutBuf {
    buf: Vec<u8>,
    pos: usize,
}

impl OutBuf {
    pub(crate) fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }
    pub(crate) fn pending(&self) -> usize {
        self.buf.len() - self.pos
    }
    pub(crate) fn unsent(&self) -> &[u8] {
        &self.buf[self.pos..]
    }
    pub(crate) fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.buf.len());
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > 64 * 1024 && self.pos * 2 > self.buf.len() {
            // Reclaim the sent prefix once it dominates, so a slow reader does not
            // keep the whole history alive.
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
    }
}

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Reading requests and answering them.
    Open,
    /// No more reading (peer hung up, or we gave up on it); send what is queued,
    /// then close. Closed regardless at the deadline, so a peer that never reads
    /// cannot hold a connection slot.
    Closing { deadline: Instant },
}

pub(crate) struct Conn {
    pub stream: UnixStream,
    pub peer: PeerCred,
    pub input: LineBuffer,
    pub output: OutBuf,
    pub phase: Phase,
    /// Readable data may be left unread: the last read pass stopped at its budget
    /// rather than at `WouldBlock` (mio is edge-triggered, so no new event will come).
    pub read_pending: bool,
}

/// Outcome of an I/O step on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Io {
    Ok,
    /// The peer closed its side cleanly.
    Eof,
    /// Nothing more can be done with this socket (reset, broken pipe, ...).
    Dead,
}

impl Conn {
    pub(crate) fn new(stream: UnixStream, peer: PeerCred, max_line: usize) -> Self {
        Conn {
            stream,
            peer,
            input: LineBuffer::new(max_line),
            output: OutBuf::default(),
            phase: Phase::Open,
            read_pending: true,
        }
    }

    /// Reads once into `chunk`; `Ok(Some(n))` with n > 0 on data, `Ok(None)` when
    /// nothing is available now.
    pub(crate) fn read_some(&mut self, chunk: &mut [u8]) -> Result<Option<usize>, Io> {
        loop {
            match self.stream.read(chunk) {
                Ok(0) => return Err(Io::Eof),
                Ok(n) => return Ok(Some(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::debug!(pid = self.peer.pid, error = %e, "control connection read failed");
                    return Err(Io::Dead);
                }
            }
        }
    }

    /// Writes queued output until it is all sent or the socket is full.
    pub(crate) fn flush(&mut self) -> Io {
        while self.output.pending() > 0 {
            match send_nosignal(&self.stream, self.output.unsent()) {
                Ok(0) => return Io::Dead,
                Ok(n) => self.output.consume(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EPIPE / ECONNRESET: the client went away without reading.
                    tracing::debug!(pid = self.peer.pid, error = %e, "control connection write failed");
                    return Io::Dead;
                }
            }
        }
        Io::Ok
    }
}

/// `send(2)` with `MSG_NOSIGNAL`: a peer that hung up yields `EPIPE` instead of a
/// SIGPIPE that would kill a daemon which did not ignore the signal.
pub(crate) fn send_nosignal(stream: &UnixStream, data: &[u8]) -> io::Result<usize> {
    // SAFETY: the pointer and length describe the live `data` slice, which the kernel
    // only reads; the fd is owned by `stream` and open for the duration of the call.
    let n = unsafe {
        libc::send(
            stream.as_raw_fd(),
            data.as_ptr().cast::<libc::c_void>(),
            data.len(),
            libc::MSG_NOSIGNAL,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(lb: &mut LineBuffer) -> Vec<Result<Vec<u8>, ()>> {
        let mut out = Vec::new();
        loop {
            match lb.next_line() {
                Next::Line(l) => out.push(Ok(l.to_vec())),
                Next::TooLarge => out.push(Err(())),
                Next::Pending => return out,
            }
        }
    }

    #[test]
    fn splits_lines_across_pushes() {
        let mut lb = LineBuffer::new(16);
        lb.push(b"ab");
        assert!(lines(&mut lb).is_empty());
        lb.push(b"c\nde\n\nf");
        assert_eq!(
            lines(&mut lb),
            vec![Ok(b"abc".to_vec()), Ok(b"de".to_vec()), Ok(Vec::new())]
        );
        assert_eq!(lb.partial_len(), 1);
        lb.push(b"g\n");
        assert_eq!(lines(&mut lb), vec![Ok(b"fg".to_vec())]);
        assert_eq!(lb.partial_len(), 0);
    }

    #[test]
    fn a_line_of_exactly_the_limit_passes() {
        let mut lb = LineBuffer::new(4);
        lb.push(b"1234\n");
        assert_eq!(lines(&mut lb), vec![Ok(b"1234".to_vec())]);
    }

    #[test]
    fn overflow_is_seen_before_the_newline() {
        let mut lb = LineBuffer::new(4);
        lb.push(b"1234");
        assert_eq!(lb.next_line(), Next::Pending);
        lb.push(b"5");
        assert_eq!(lb.next_line(), Next::TooLarge);
    }

    #[test]
    fn overflow_of_a_complete_line_in_one_push() {
        let mut lb = LineBuffer::new(4);
        lb.push(b"ok\n12345\n");
        assert_eq!(lines(&mut lb)[..2], [Ok(b"ok".to_vec()), Err(())]);
    }

    #[test]
    fn out_buf_tracks_partial_writes() {
        let mut ob = OutBuf::default();
        ob.push(b"hello\n");
        ob.consume(2);
        assert_eq!(ob.unsent(), b"llo\n");
        ob.push(b"x\n");
        assert_eq!(ob.pending(), 6);
        ob.consume(100);
        assert_eq!(ob.pending(), 0);
    }
}

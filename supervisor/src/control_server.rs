//! The daemon side of the control socket: accepts connections, reads request lines, answers
//! from the shared table and the supervisor's state.
//!
//! Connections are served without blocking the supervisor loop for long: every request but
//! `export` is answered in one step; `export` of millions of leases is written by a forked child
//! process (it shares the table mapping) so the supervisor keeps supervising meanwhile.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;

use prodhcp_proto::{
    encode_export_lease, encode_response, parse_request, Command, ExportDone, Request, Response,
    MAX_REQUEST_LINE,
};

/// Most simultaneous control connections; more are refused at once (F4).
pub const MAX_CONNECTIONS: usize = 64;

/// A control connection being read.
#[derive(Debug)]
pub struct Connection {
    /// The stream (non-blocking while reading).
    pub stream: UnixStream,
    buf: Vec<u8>,
    /// Peer uid (SO_PEERCRED).
    pub peer_uid: Option<u32>,
    /// When the connection was accepted (idle ones are closed).
    pub since: std::time::Instant,
}

/// What the connection produced.
#[derive(Debug)]
pub enum ConnEvent {
    /// A complete request.
    Request(Box<Request>),
    /// A protocol error to answer (then close).
    Error(String),
    /// Nothing complete yet.
    Pending,
    /// The peer closed the connection.
    Closed,
}

impl Connection {
    /// Wraps an accepted stream.
    pub fn new(stream: UnixStream) -> io::Result<Connection> {
        stream.set_nonblocking(true)?;
        let peer_uid = crate::sys::peer_uid(&stream);
        Ok(Connection {
            stream,
            buf: Vec::new(),
            peer_uid,
            since: std::time::Instant::now(),
        })
    }

    /// Reads available bytes; returns the next complete request, if any.
    pub fn poll(&mut self) -> ConnEvent {
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                let text = String::from_utf8_lossy(&line);
                return match parse_request(text.trim_end()) {
                    Ok(r) => ConnEvent::Request(Box::new(r)),
                    Err(e) => ConnEvent::Error(e.to_string()),
                };
            }
            if self.buf.len() > MAX_REQUEST_LINE {
                return ConnEvent::Error(format!(
                    "request line longer than {MAX_REQUEST_LINE} bytes"
                ));
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => return ConnEvent::Closed,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ConnEvent::Pending,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return ConnEvent::Closed,
            }
        }
    }

    /// Writes one response line (blocking, bounded by a send timeout).
    pub fn respond(&mut self, resp: &Response) -> io::Result<()> {
        let line = encode_response(resp)
            .unwrap_or_else(|e| format!("{{\"ok\":false,\"error\":{:?}}}", e.to_string()));
        self.stream.set_nonblocking(false)?;
        self.stream
            .set_write_timeout(Some(std::time::Duration::from_secs(10)))?;
        let r = self.stream.write_all(with_newline(&line).as_bytes());
        self.stream.set_nonblocking(true)?;
        r
    }
}

/// Whether a command changes state (needs a privileged peer).
pub fn is_mutating(cmd: &Command) -> bool {
    matches!(cmd, Command::Import { .. } | Command::ConsumerDrop { .. })
}

/// Writes an export stream (lease lines, then the final response) to `out`. Runs in a forked
/// child.
pub fn write_export(
    out: &mut impl Write,
    leases: impl Iterator<Item = prodhcp_proto::LeaseRecord>,
) -> io::Result<u64> {
    let mut w = io::BufWriter::with_capacity(1 << 20, out);
    let mut count = 0u64;
    for l in leases {
        if let Ok(line) = encode_export_lease(&l) {
            w.write_all(with_newline(&line).as_bytes())?;
            count += 1;
        }
    }
    let done =
        Response::ok(&ExportDone { count }).unwrap_or_else(|e| Response::error(e.to_string()));
    let line = encode_response(&done).unwrap_or_default();
    w.write_all(with_newline(&line).as_bytes())?;
    w.flush()?;
    Ok(count)
}

/// The protocol's encoders end lines with '\n'; make sure exactly one is sent.
fn with_newline(line: &str) -> std::borrow::Cow<'_, str> {
    if line.ends_with('\n') {
        std::borrow::Cow::Borrowed(line)
    } else {
        std::borrow::Cow::Owned(format!("{line}\n"))
    }
}

//! The Prometheus endpoint's HTTP side: a minimal responder on the supervisor's own poll loop.
//!
//! Hand-written rather than an HTTP crate because the supervisor is single-threaded with a mio
//! loop (it starts no thread: see `daemon.rs`), and the kept HTTP servers (hyper, tiny_http,
//! axum) bring a thread pool or an async runtime with them. What is needed is small: one
//! `GET /metrics`, `Connection: close`. Every step is bounded so that no scraper can stall the
//! loop or make the supervisor hold much: non-blocking sockets only, at most
//! [`MAX_CONNECTIONS`] at once (when full, the oldest connection that has not sent its request
//! is closed for the new one; counted), a request of at most
//! [`MAX_REQUEST`] bytes, [`DEADLINE`] from accept to the last byte written (then closed,
//! counted), and the response written as the socket takes it.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};

/// Most scrape connections open at once.
pub const MAX_CONNECTIONS: usize = 16;
/// Longest request head accepted, bytes.
pub const MAX_REQUEST: usize = 8192;
/// Time from accept to the response's last byte.
pub const DEADLINE: Duration = Duration::from_secs(5);

/// Outcome counters, exposed as `prodhcp_metrics_http_requests_total{result}`.
#[derive(Debug, Default, Clone, Copy)]
pub struct HttpCounters {
    /// `GET /metrics` answered.
    pub ok: u64,
    /// Another path (404).
    pub not_found: u64,
    /// Another method (405).
    pub bad_method: u64,
    /// Not HTTP, or a head over [`MAX_REQUEST`] bytes (400).
    pub bad_request: u64,
    /// Closed at [`DEADLINE`] before the response was out.
    pub timeout: u64,
    /// Refused: [`MAX_CONNECTIONS`] were open, all being answered.
    pub refused: u64,
    /// Closed before a request came, to make room for a new connection when
    /// [`MAX_CONNECTIONS`] were open (the oldest silent one goes).
    pub evicted: u64,
    /// Closed by the peer or an I/O error before the response was out.
    pub aborted: u64,
}

impl HttpCounters {
    /// `(result label, count)` pairs.
    pub fn pairs(&self) -> [(&'static str, u64); 8] {
        [
            ("evicted", self.evicted),
            ("ok", self.ok),
            ("not_found", self.not_found),
            ("bad_method", self.bad_method),
            ("bad_request", self.bad_request),
            ("timeout", self.timeout),
            ("refused", self.refused),
            ("aborted", self.aborted),
        ]
    }
}

/// What a complete request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// `GET /metrics`.
    Metrics,
    /// Another path.
    NotFound,
    /// Another method.
    BadMethod,
    /// Not a request line.
    Bad,
}

/// Parses a request head (up to the blank line).
pub fn parse_head(head: &[u8]) -> Ask {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_whitespace();
    let (Some(method), Some(target), Some(version)) = (words.next(), words.next(), words.next())
    else {
        return Ask::Bad;
    };
    if !version.starts_with("HTTP/1.") || words.next().is_some() {
        return Ask::Bad;
    }
    let path = target.split('?').next().unwrap_or_default();
    match (method, path) {
        ("GET", "/metrics") => Ask::Metrics,
        ("GET", _) => Ask::NotFound,
        _ => Ask::BadMethod,
    }
}

/// A full HTTP/1.1 response with `Connection: close`.
pub fn response(status: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// One scrape connection.
#[derive(Debug)]
pub struct HttpConn {
    /// The socket (non-blocking).
    pub stream: TcpStream,
    head: Vec<u8>,
    out: Option<(Vec<u8>, usize)>,
    /// Accept time + [`DEADLINE`].
    pub deadline: Instant,
}

/// What a connection needs next.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Waiting for more bytes or for room to write.
    Wait,
    /// The head is complete: answer this.
    Answer(Ask),
    /// Done (response out, or closed): drop it.
    Close,
    /// Closed by the peer or an error before the response was out.
    Aborted,
}

impl HttpConn {
    /// A just accepted connection.
    pub fn new(stream: TcpStream, now: Instant) -> HttpConn {
        HttpConn {
            stream,
            head: Vec::new(),
            out: None,
            deadline: now + DEADLINE,
        }
    }

    /// Reads what is there (until the head is complete) or writes what the socket takes.
    pub fn advance(&mut self) -> Step {
        if self.out.is_some() {
            return self.write();
        }
        let mut buf = [0u8; 2048];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return Step::Aborted,
                Ok(n) => {
                    self.head.extend_from_slice(&buf[..n]);
                    let end = find_end(&self.head);
                    if let Some(end) = end {
                        return Step::Answer(parse_head(&self.head[..end]));
                    }
                    if self.head.len() > MAX_REQUEST {
                        return Step::Answer(Ask::Bad);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Wait,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Step::Aborted,
            }
        }
    }

    /// Starts writing `bytes` (the whole response).
    pub fn respond(&mut self, bytes: Vec<u8>) -> Step {
        self.head = Vec::new();
        self.out = Some((bytes, 0));
        self.write()
    }

    /// Whether the response is being written (the socket is then watched for room).
    pub fn writing(&self) -> bool {
        self.out.is_some()
    }

    fn write(&mut self) -> Step {
        let Some((bytes, at)) = self.out.as_mut() else {
            return Step::Wait;
        };
        while *at < bytes.len() {
            match self.stream.write(&bytes[*at..]) {
                Ok(0) => return Step::Aborted,
                Ok(n) => *at += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Wait,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Step::Aborted,
            }
        }
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
        Step::Close
    }
}

/// End of the head: after `\r\n\r\n` (or a bare `\n\n`).
fn find_end(b: &[u8]) -> Option<usize> {
    if let Some(i) = b.windows(4).position(|w| w == b"\r\n\r\n") {
        return Some(i + 4);
    }
    b.windows(2).position(|w| w == b"\n\n").map(|i| i + 2)
}

/// Binds the endpoint's listener (non-blocking).
pub fn bind(addr: std::net::SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads() {
        assert_eq!(
            parse_head(b"GET /metrics HTTP/1.1\r\nHost: x\r\n"),
            Ask::Metrics
        );
        assert_eq!(parse_head(b"GET /metrics?x=1 HTTP/1.0\r\n"), Ask::Metrics);
        assert_eq!(parse_head(b"GET / HTTP/1.1\r\n"), Ask::NotFound);
        assert_eq!(parse_head(b"POST /metrics HTTP/1.1\r\n"), Ask::BadMethod);
        assert_eq!(parse_head(b"\x00\x01garbage"), Ask::Bad);
        assert_eq!(parse_head(b"GET /metrics SMTP\r\n"), Ask::Bad);
        assert_eq!(find_end(b"GET / HTTP/1.1\r\n\r\nrest"), Some(18));
    }
}

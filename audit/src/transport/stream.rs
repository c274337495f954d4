//! Reliable targets: `tcp://` (RFC 6587 octet counting) and `tls://` (RFC 5425), with the
//! TCP-acknowledgement tracking and the resend rule of the module docs above.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use prodhcp_config::audit::Endpoint;
use rustls::ClientConnection;
use socket2::{Domain, Protocol, Socket, Type};

use super::tls::TlsSetup;
use super::{Backoff, Counters, MAX_UNWRITTEN, SETTLE};

/// Time for a TCP connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Time from the start of a connect to the end of the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

enum State {
    Idle,
    Connecting { sock: Socket, since: Instant },
    Up(Box<Conn>),
}

struct Conn {
    sock: Socket,
    tls: Option<ClientConnection>,
    since: Instant,
    /// Bytes written to the socket (TLS: ciphertext).
    wire_written: u64,
    /// TLS: (plaintext offset, wire offset) where every record for the plaintext before it had
    /// been written out.
    checkpoints: VecDeque<(u64, u64)>,
    /// Plaintext acknowledged so far (TLS: through the checkpoints).
    plain_acked: u64,
}

impl Conn {
    fn established(&self) -> bool {
        self.tls.as_ref().is_none_or(|t| !t.is_handshaking())
    }
}

/// Writes to a socket without SIGPIPE.
struct NoSigpipe<'a>(&'a Socket);

impl Write for NoSigpipe<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.send_with_flags(buf, libc::MSG_NOSIGNAL)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A tcp or tls sender.
pub(crate) struct Stream {
    endpoint: Endpoint,
    tls: Option<TlsSetup>,
    state: State,
    backoff: Backoff,
    /// Attempts so far, to rotate over a name's addresses.
    addr_turn: usize,
    /// Last seq taken (or the resume point).
    want_after: u64,
    acked: u64,
    settled: u64,
    /// Taken, not yet acknowledged: (seq, plaintext offset at the end of its frame).
    pending: VecDeque<(u64, u64)>,
    /// Acknowledged less than SETTLE ago: (seq, when the acknowledgement was seen).
    recent: VecDeque<(u64, Instant)>,
    /// Framed bytes not yet handed to the socket (TLS: to rustls) are `out[out_pos..]`.
    out: Vec<u8>,
    out_pos: usize,
    /// Plaintext bytes handed on during this connection.
    plain_given: u64,
    pub(crate) counters: Counters,
}

impl Stream {
    pub(crate) fn new(endpoint: Endpoint, tls: Option<TlsSetup>) -> Stream {
        Stream {
            endpoint,
            tls,
            state: State::Idle,
            backoff: Backoff::new(),
            addr_turn: 0,
            want_after: 0,
            acked: 0,
            settled: 0,
            pending: VecDeque::new(),
            recent: VecDeque::new(),
            out: Vec::new(),
            out_pos: 0,
            plain_given: 0,
            counters: Counters::default(),
        }
    }

    pub(crate) fn set_acked(&mut self, seq: u64) {
        self.want_after = seq;
        self.acked = seq;
        self.settled = seq;
        self.pending.clear();
        self.recent.clear();
    }

    pub(crate) fn want_after(&self) -> u64 {
        self.want_after
    }

    pub(crate) fn acked(&self) -> u64 {
        self.acked
    }

    pub(crate) fn settled(&self) -> u64 {
        self.settled
    }

    pub(crate) fn connected(&self) -> bool {
        matches!(&self.state, State::Up(c) if c.established())
    }

    fn unwritten(&self) -> usize {
        self.out.len() - self.out_pos
    }

    pub(crate) fn send(&mut self, entries: &[(u64, &[u8])], now: Instant) -> usize {
        if !self.connected() {
            return 0;
        }
        let mut taken = 0;
        for &(seq, msg) in entries {
            if self.unwritten() >= MAX_UNWRITTEN {
                break;
            }
            taken += 1;
            if seq <= self.want_after {
                continue;
            }
            self.out.extend_from_slice(msg.len().to_string().as_bytes());
            self.out.push(b' ');
            self.out.extend_from_slice(msg);
            let end = self.plain_given + self.unwritten() as u64;
            self.pending.push_back((seq, end));
            self.want_after = seq;
            self.counters.sent_seq = self.counters.sent_seq.max(seq);
        }
        if taken > 0 {
            self.pump(now);
        }
        taken
    }

    pub(crate) fn poll(&mut self, now: Instant) {
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Idle => {
                if self.backoff.due(now) {
                    self.start_connect(now);
                }
            }
            State::Connecting { sock, since } => match connect_result(&sock) {
                Ok(true) => self.up(sock, now),
                Ok(false) if now.duration_since(since) >= CONNECT_TIMEOUT => {
                    self.fail(now, "connect: timed out".into());
                }
                Ok(false) => self.state = State::Connecting { sock, since },
                Err(e) => self.fail(now, format!("connect: {e}")),
            },
            State::Up(conn) => {
                self.state = State::Up(conn);
                self.pump(now);
            }
        }
        self.settle(now);
    }

    fn start_connect(&mut self, now: Instant) {
        self.counters.attempts += 1;
        let addrs = match super::datagram::resolve_all(&self.endpoint) {
            Ok(a) => a,
            Err(e) => return self.fail(now, format!("resolve {}: {e}", self.endpoint.host)),
        };
        let addr = addrs[self.addr_turn % addrs.len()];
        self.addr_turn = self.addr_turn.wrapping_add(1);
        let sock = match new_socket(addr) {
            Ok(s) => s,
            Err(e) => return self.fail(now, format!("socket: {e}")),
        };
        match sock.connect(&addr.into()) {
            Ok(()) => self.up(sock, now),
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {
                self.state = State::Connecting { sock, since: now };
            }
            Err(e) => self.fail(now, format!("connect {addr}: {e}")),
        }
    }

    /// The TCP connection is made: start TLS if needed.
    fn up(&mut self, sock: Socket, now: Instant) {
        let tls = match &mut self.tls {
            None => None,
            Some(setup) => match setup.connection() {
                Ok(c) => Some(c),
                Err(e) => return self.fail(now, e),
            },
        };
        self.counters.connections += 1;
        self.backoff.reset();
        self.out.clear();
        self.out_pos = 0;
        self.plain_given = 0;
        self.state = State::Up(Box::new(Conn {
            sock,
            tls,
            since: now,
            wire_written: 0,
            checkpoints: VecDeque::new(),
            plain_acked: 0,
        }));
        self.pump(now);
    }

    /// A connect attempt failed: wait.
    fn fail(&mut self, now: Instant, why: String) {
        self.counters.last_error = Some(why);
        self.state = State::Idle;
        self.backoff.failed(now);
    }

    /// Reads (to notice a close), writes, and updates the acknowledgement; breaks the
    /// connection on an error.
    fn pump(&mut self, now: Instant) {
        let State::Up(conn) = &mut self.state else {
            return;
        };
        let mut result = pump_conn(conn, &self.out, &mut self.out_pos, &mut self.plain_given);
        if result.is_ok()
            && conn.tls.is_some()
            && !conn.established()
            && now.duration_since(conn.since) >= HANDSHAKE_TIMEOUT
        {
            result = Err("TLS handshake timed out".into());
        }
        // What the peer's TCP acknowledged counts even when the connection just broke.
        match ack_offset(conn) {
            Ok(plain_acked) => {
                while let Some(&(seq, end)) = self.pending.front() {
                    if end > plain_acked {
                        break;
                    }
                    self.pending.pop_front();
                    self.acked = self.acked.max(seq);
                    self.recent.push_back((seq, now));
                }
            }
            Err(e) => {
                if result.is_ok() {
                    result = Err(e);
                }
            }
        }
        if self.out_pos > 0 && self.out_pos * 2 >= self.out.len() {
            self.out.drain(..self.out_pos);
            self.out_pos = 0;
        }
        match result {
            Ok(()) => {}
            Err(why) => self.break_conn(now, why),
        }
    }

    /// Moves entries acknowledged at least SETTLE ago to `settled`.
    fn settle(&mut self, now: Instant) {
        while let Some(&(seq, at)) = self.recent.front() {
            if now.duration_since(at) < SETTLE {
                break;
            }
            self.recent.pop_front();
            self.settled = self.settled.max(seq);
        }
    }

    /// The connection broke: resume after `settled` (see the module docs).
    fn break_conn(&mut self, now: Instant, why: String) {
        self.settle(now);
        self.counters.resent += (self.recent.len() + self.pending.len()) as u64;
        self.recent.clear();
        self.pending.clear();
        self.want_after = self.settled;
        self.out.clear();
        self.out_pos = 0;
        self.plain_given = 0;
        self.counters.last_error = Some(why);
        self.state = State::Idle;
        self.backoff.failed(now);
    }
}

fn new_socket(addr: SocketAddr) -> io::Result<Socket> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sock.set_nonblocking(true)?;
    sock.set_tcp_nodelay(true)?;
    sock.set_keepalive(true)?;
    Ok(sock)
}

/// Whether a non-blocking connect finished (Ok(true)), is still going (Ok(false)), or failed.
fn connect_result(sock: &Socket) -> io::Result<bool> {
    if let Some(e) = sock.take_error()? {
        return Err(e);
    }
    match sock.peer_addr() {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => Ok(false),
        Err(e) => Err(e),
    }
}

fn is_would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted
}

/// One round of reading and writing on an open connection.
fn pump_conn(
    conn: &mut Conn,
    out: &[u8],
    out_pos: &mut usize,
    plain_given: &mut u64,
) -> Result<(), String> {
    read_side(conn)?;
    match &mut conn.tls {
        None => {
            while *out_pos < out.len() {
                match NoSigpipe(&conn.sock).write(&out[*out_pos..]) {
                    Ok(0) => return Err("write: connection closed".into()),
                    Ok(n) => {
                        *out_pos += n;
                        *plain_given += n as u64;
                        conn.wire_written += n as u64;
                    }
                    Err(e) if is_would_block(&e) => break,
                    Err(e) => return Err(format!("write: {e}")),
                }
            }
            Ok(())
        }
        Some(tls) => loop {
            while tls.wants_write() {
                match tls.write_tls(&mut NoSigpipe(&conn.sock)) {
                    Ok(0) => return Err("write: connection closed".into()),
                    Ok(n) => conn.wire_written += n as u64,
                    Err(e) if is_would_block(&e) => return Ok(()),
                    Err(e) => return Err(format!("write: {e}")),
                }
            }
            // Every record for the plaintext given so far is on the wire.
            if conn
                .checkpoints
                .back()
                .is_none_or(|&(p, _)| p < *plain_given)
            {
                conn.checkpoints
                    .push_back((*plain_given, conn.wire_written));
            }
            if tls.is_handshaking() || *out_pos >= out.len() {
                return Ok(());
            }
            match tls.writer().write(&out[*out_pos..]) {
                Ok(0) => return Ok(()),
                Ok(n) => {
                    *out_pos += n;
                    *plain_given += n as u64;
                }
                Err(e) => return Err(format!("TLS write: {e}")),
            }
        },
    }
}

/// Reads whatever the peer sent (a collector sends nothing; TLS: handshake and alerts) and
/// notices a close.
fn read_side(conn: &mut Conn) -> Result<(), String> {
    let mut buf = [0u8; 4096];
    for _ in 0..64 {
        match &mut conn.tls {
            None => match (&conn.sock).read(&mut buf) {
                Ok(0) => return Err("connection closed by the peer".into()),
                Ok(_) => continue,
                Err(e) if is_would_block(&e) => return Ok(()),
                Err(e) => return Err(format!("read: {e}")),
            },
            Some(tls) => {
                match tls.read_tls(&mut &conn.sock) {
                    Ok(0) => return Err("connection closed by the peer".into()),
                    Ok(_) => {}
                    Err(e) if is_would_block(&e) => return Ok(()),
                    Err(e) => return Err(format!("read: {e}")),
                }
                let state = tls.process_new_packets().map_err(|e| format!("TLS: {e}"))?;
                if state.peer_has_closed() {
                    return Err("TLS session closed by the peer".into());
                }
                let mut reader = tls.reader();
                loop {
                    match reader.read(&mut buf) {
                        Ok(0) => return Err("TLS session closed by the peer".into()),
                        Ok(_) => continue,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(format!("TLS read: {e}")),
                    }
                }
            }
        }
    }
    Ok(())
}

/// The plaintext offset the peer's TCP has acknowledged.
fn ack_offset(conn: &mut Conn) -> Result<u64, String> {
    let outq = crate::sys::tcp_outq(conn.sock.as_fd()).map_err(|e| format!("SIOCOUTQ: {e}"))?;
    let wire_acked = conn.wire_written.saturating_sub(outq);
    if conn.tls.is_none() {
        conn.plain_acked = wire_acked;
    } else {
        while let Some(&(plain, wire)) = conn.checkpoints.front() {
            if wire > wire_acked {
                break;
            }
            conn.checkpoints.pop_front();
            conn.plain_acked = plain;
        }
    }
    Ok(conn.plain_acked)
}

//! One peer connection's state machine: set-up (preamble, Noise handshake, hello exchange),
//! heartbeats, silence detection, and the drop of a connection on anything it cannot trust.
//! [`crate::node::Node`] owns the sockets' registrations and the timers' schedule; a `Link`
//! only reads, writes and decides.

use std::fmt;
use std::io::{self, Write as _};
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant};

use mio::net::TcpStream;

use crate::frame::{push_frame, Fill, FrameError, FrameReader, MAX_FRAME_LEN};
use crate::handshake::{self, Preamble, MAX_HANDSHAKE_FRAME, TAG_LEN};
use crate::key::ClusterKey;
use crate::message::{Hello, Message, Position, RefuseCode, PROTOCOL_VERSION};

/// Longest plaintext message that fits in one frame.
pub const MAX_MESSAGE_LEN: usize = MAX_FRAME_LEN - TAG_LEN;
/// Bytes queued for a peer that does not read before the connection is dropped.
const MAX_PENDING_OUT: usize = 16 << 20;

/// Who opened the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// This node dialed (its name sorts lower).
    Initiator,
    /// The peer dialed.
    Responder,
}

/// Who refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// This node.
    Us,
    /// The peer.
    Peer,
}

/// Why a connection ended (or never came up).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownCause {
    /// The peer closed the connection (its process ended or it dropped us).
    ClosedByPeer,
    /// Nothing arrived for the configured `dead_after`.
    HeartbeatTimeout {
        /// How long the peer had been silent.
        silent: Duration,
    },
    /// The connection did not reach the hello exchange within `dead_after`.
    SetupTimeout,
    /// One side refused the other (before or after authentication).
    Refused {
        /// Who refused.
        by: Side,
        /// Why, for programs.
        code: RefuseCode,
        /// Why, for people.
        reason: String,
        /// Whether the refusal was authenticated (sent inside the Noise session).
        authenticated: bool,
    },
    /// The handshake failed: the peer holds another cluster key (or another cluster name
    /// or protocol version bound into the prologue).
    AuthFailure {
        /// What was seen.
        detail: String,
    },
    /// A transport frame failed its AEAD check: altered, replayed, reordered or injected.
    DecryptFailure,
    /// A length field above the limit of the phase.
    Oversize {
        /// The length field.
        len: usize,
    },
    /// Bytes that are not the expected frame or message.
    Malformed {
        /// What was wrong.
        detail: String,
    },
    /// The TCP connection could not be opened.
    ConnectFailed {
        /// The error.
        error: String,
    },
    /// A socket error.
    Io {
        /// The error.
        error: String,
    },
    /// A newer authenticated connection from the same peer took this one's place.
    Replaced,
    /// This node closed it (shutting down).
    Closed,
}

impl DownCause {
    /// A short stable name of the cause (counters, rate-limited logging).
    pub fn kind(&self) -> &'static str {
        match self {
            DownCause::ClosedByPeer => "closed_by_peer",
            DownCause::HeartbeatTimeout { .. } => "heartbeat_timeout",
            DownCause::SetupTimeout => "setup_timeout",
            DownCause::Refused { by: Side::Us, .. } => "refused_by_us",
            DownCause::Refused { by: Side::Peer, .. } => "refused_by_peer",
            DownCause::AuthFailure { .. } => "auth_failure",
            DownCause::DecryptFailure => "decrypt_failure",
            DownCause::Oversize { .. } => "oversize",
            DownCause::Malformed { .. } => "malformed",
            DownCause::ConnectFailed { .. } => "connect_failed",
            DownCause::Io { .. } => "io_error",
            DownCause::Replaced => "replaced",
            DownCause::Closed => "closed",
        }
    }
}

impl fmt::Display for DownCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DownCause::ClosedByPeer => f.write_str("closed by peer"),
            DownCause::HeartbeatTimeout { silent } => {
                write!(
                    f,
                    "heartbeat timeout (silent for {} ms)",
                    silent.as_millis()
                )
            }
            DownCause::SetupTimeout => f.write_str("connection set-up timed out"),
            DownCause::Refused {
                by,
                code,
                reason,
                authenticated,
            } => {
                let who = match by {
                    Side::Us => "refused by this node",
                    Side::Peer => "refused by peer",
                };
                let auth = if *authenticated {
                    ""
                } else {
                    ", unauthenticated"
                };
                write!(f, "{who} ({code}{auth}): {reason}")
            }
            DownCause::AuthFailure { detail } => write!(f, "authentication failed: {detail}"),
            DownCause::DecryptFailure => f.write_str(
                "a frame failed its integrity check (altered, replayed or injected): dropped",
            ),
            DownCause::Oversize { len } => write!(f, "oversize frame ({len} bytes)"),
            DownCause::Malformed { detail } => write!(f, "malformed: {detail}"),
            DownCause::ConnectFailed { error } => write!(f, "connect failed: {error}"),
            DownCause::Io { error } => write!(f, "socket error: {error}"),
            DownCause::Replaced => f.write_str("replaced by a newer connection from the peer"),
            DownCause::Closed => f.write_str("closed by this node"),
        }
    }
}

/// What a link reports to its node.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// The peer's hello was accepted (and ours sent): the link is up.
    Up(Hello),
    /// A message after the hello.
    Received(Message),
    /// A heartbeat was sent.
    HeartbeatSent,
    /// The connection is finished; the node deregisters and drops it.
    Down(DownCause),
}

/// What a link needs to know about its node.
pub(crate) struct Ctx<'a> {
    pub cluster: &'a str,
    pub node: &'a str,
    pub key: &'a ClusterKey,
    pub fingerprint: u64,
    /// Per peer name: the positions this node's hello to that peer carries (what it applied
    /// from that peer's rings).
    pub positions: &'a std::collections::HashMap<String, Vec<Position>>,
    /// Names of the configured peers allowed to dial this node (their names sort lower).
    pub dialers: &'a [String],
    pub epoch: Instant,
}

/// A link's timers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    /// Heartbeat interval.
    pub heartbeat: Duration,
    /// Silence (or set-up time) after which the link is dropped.
    pub dead_after: Duration,
}

enum Phase {
    /// Initiator: the TCP connect is in progress.
    Connecting,
    /// Initiator: preamble and message 1 sent, waiting for message 2.
    AwaitMsg2(Box<snow::HandshakeState>),
    /// Responder: waiting for the preamble.
    AwaitPreamble,
    /// Responder: preamble accepted, waiting for message 1.
    AwaitMsg1(Box<snow::HandshakeState>),
    /// Handshake done, waiting for the peer's hello (the responder trusts nothing before it).
    AwaitHello(Box<snow::TransportState>),
    /// Hellos exchanged.
    Up(Box<snow::TransportState>),
    /// Finished.
    Done,
}

/// One peer connection.
pub(crate) struct Link {
    pub stream: TcpStream,
    pub remote: SocketAddr,
    pub role: Role,
    /// The peer's node name: known when dialing; for an accepted connection the name its
    /// preamble claims (authenticated only once the hello decrypts).
    pub peer: Option<String>,
    phase: Phase,
    finished: bool,
    reader: FrameReader,
    out: Vec<u8>,
    out_start: usize,
    frame: Vec<u8>,
    plain: Vec<u8>,
    sealed: Vec<u8>,
    /// When the last frame that passed its checks arrived.
    pub last_rx: Instant,
    /// When the last frame was queued.
    pub last_tx: Instant,
    /// Set-up must finish by this instant.
    setup_deadline: Instant,
    heartbeat: Duration,
    dead_after: Duration,
    /// Whether the hellos were exchanged (stays true after the link ends).
    pub was_up: bool,
}

impl Link {
    fn new(
        stream: TcpStream,
        remote: SocketAddr,
        role: Role,
        peer: Option<String>,
        phase: Phase,
        now: Instant,
        timing: Timing,
    ) -> Link {
        let Timing {
            heartbeat,
            dead_after,
        } = timing;
        Link {
            stream,
            remote,
            role,
            peer,
            phase,
            finished: false,
            reader: FrameReader::new(),
            out: Vec::new(),
            out_start: 0,
            frame: Vec::new(),
            plain: vec![0; MAX_FRAME_LEN],
            sealed: vec![0; MAX_FRAME_LEN],
            last_rx: now,
            last_tx: now,
            setup_deadline: now + dead_after,
            heartbeat,
            dead_after,
            was_up: false,
        }
    }

    /// A connection being dialed to `peer`.
    pub(crate) fn dialing(
        stream: TcpStream,
        remote: SocketAddr,
        peer: String,
        now: Instant,
        timing: Timing,
    ) -> Link {
        Link::new(
            stream,
            remote,
            Role::Initiator,
            Some(peer),
            Phase::Connecting,
            now,
            timing,
        )
    }

    /// An accepted connection.
    pub(crate) fn accepted(
        stream: TcpStream,
        remote: SocketAddr,
        now: Instant,
        timing: Timing,
    ) -> Link {
        Link::new(
            stream,
            remote,
            Role::Responder,
            None,
            Phase::AwaitPreamble,
            now,
            timing,
        )
    }

    /// Whether the hello exchange is done.
    pub(crate) fn is_up(&self) -> bool {
        matches!(self.phase, Phase::Up(_))
    }

    /// Whether the link is finished.
    pub(crate) fn is_done(&self) -> bool {
        self.finished
    }

    /// Bytes queued and not yet written to the socket.
    pub(crate) fn pending_out(&self) -> usize {
        self.out.len() - self.out_start
    }

    /// The next instant [`Link::on_timer`] has something to do.
    pub(crate) fn next_deadline(&self) -> Instant {
        match self.phase {
            Phase::Up(_) => (self.last_tx + self.heartbeat).min(self.last_rx + self.dead_after),
            Phase::Done => self.last_rx + Duration::from_secs(3600),
            _ => self.setup_deadline,
        }
    }

    fn finish(&mut self, cause: DownCause, out: &mut Vec<Outcome>) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.phase = Phase::Done;
        let _ = self.stream.shutdown(Shutdown::Both);
        out.push(Outcome::Down(cause));
    }

    /// Writes what is queued until the socket would block.
    fn flush(&mut self) -> io::Result<()> {
        while self.out_start < self.out.len() {
            match self.stream.write(&self.out[self.out_start..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.out_start += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        if self.out_start == self.out.len() {
            self.out.clear();
            self.out_start = 0;
        } else if self.out_start > 1 << 20 {
            self.out.drain(..self.out_start);
            self.out_start = 0;
        }
        if self.pending_out() > MAX_PENDING_OUT {
            return Err(io::Error::other(format!(
                "the peer does not read: {} bytes queued",
                self.pending_out()
            )));
        }
        Ok(())
    }

    fn queue_clear(&mut self, body: &[u8], now: Instant) {
        push_frame(&mut self.out, body);
        self.last_tx = now;
    }

    /// Seals `message` into a frame and queues it; the caller flushes.
    fn queue_sealed(&mut self, message: &Message, now: Instant) -> Result<(), SendError> {
        let (Phase::AwaitHello(ts) | Phase::Up(ts)) = &mut self.phase else {
            return Err(SendError::NotUp);
        };
        self.frame.clear();
        message
            .encode(&mut self.frame)
            .map_err(|e| SendError::Encode(e.to_string()))?;
        if self.frame.len() > MAX_MESSAGE_LEN {
            return Err(SendError::TooLarge(self.frame.len()));
        }
        let n = ts
            .write_message(&self.frame, &mut self.sealed)
            .map_err(|e| SendError::Encode(e.to_string()))?;
        push_frame(&mut self.out, &self.sealed[..n]);
        self.last_tx = now;
        Ok(())
    }

    /// Queues and writes `message` on an up link.
    pub(crate) fn send(&mut self, message: &Message, now: Instant) -> Result<(), SendError> {
        if !self.is_up() {
            return Err(SendError::NotUp);
        }
        self.queue_sealed(message, now)?;
        self.flush().map_err(|e| SendError::Io(e.to_string()))
    }

    /// Ends the link from this side.
    pub(crate) fn close(&mut self, cause: DownCause, out: &mut Vec<Outcome>) {
        let _ = self.flush();
        self.finish(cause, out);
    }

    /// Handles a readiness event.
    pub(crate) fn on_ready(
        &mut self,
        ctx: &Ctx<'_>,
        readable: bool,
        writable: bool,
        now: Instant,
        out: &mut Vec<Outcome>,
    ) {
        if matches!(self.phase, Phase::Connecting) {
            if !writable && !readable {
                return;
            }
            match self.stream.take_error() {
                Ok(Some(e)) | Err(e) => {
                    return self.finish(
                        DownCause::ConnectFailed {
                            error: e.to_string(),
                        },
                        out,
                    )
                }
                Ok(None) => {}
            }
            match self.stream.peer_addr() {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) => {
                    return self.finish(
                        DownCause::ConnectFailed {
                            error: e.to_string(),
                        },
                        out,
                    )
                }
            }
            if let Err(cause) = self.start_initiator(ctx, now) {
                return self.finish(cause, out);
            }
        }
        if writable || readable {
            if let Err(e) = self.flush() {
                return self.finish(
                    DownCause::Io {
                        error: e.to_string(),
                    },
                    out,
                );
            }
        }
        if readable {
            self.read_all(ctx, now, out);
        }
    }

    fn start_initiator(&mut self, ctx: &Ctx<'_>, now: Instant) -> Result<(), DownCause> {
        let preamble = Preamble::Dial {
            version: PROTOCOL_VERSION,
            cluster: ctx.cluster.to_string(),
            node: ctx.node.to_string(),
        }
        .encode();
        self.queue_clear(&preamble, now);
        let mut hs = handshake::initiator(ctx.key, ctx.cluster).map_err(|e| DownCause::Io {
            error: format!("noise: {e}"),
        })?;
        let n = hs
            .write_message(&[], &mut self.sealed)
            .map_err(|e| DownCause::Io {
                error: format!("noise: {e}"),
            })?;
        let msg1 = self.sealed[..n].to_vec();
        self.queue_clear(&msg1, now);
        self.phase = Phase::AwaitMsg2(Box::new(hs));
        Ok(())
    }

    /// Reads until the socket would block, handling every whole frame after each chunk, and
    /// acts on end-of-stream only after the frames before it.
    fn read_all(&mut self, ctx: &Ctx<'_>, now: Instant, out: &mut Vec<Outcome>) {
        loop {
            let fill = match self.reader.fill(&mut self.stream) {
                Ok(fill) => fill,
                Err(e) => {
                    let cause = if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
                    ) {
                        self.eof_cause()
                    } else {
                        DownCause::Io {
                            error: e.to_string(),
                        }
                    };
                    return self.finish(cause, out);
                }
            };
            loop {
                let max = match self.phase {
                    Phase::AwaitHello(_) | Phase::Up(_) => MAX_FRAME_LEN,
                    _ => MAX_HANDSHAKE_FRAME,
                };
                let frame = match self.reader.next_frame(max) {
                    Ok(Some(frame)) => frame,
                    Ok(None) => break,
                    Err(FrameError::Oversize { len, .. }) => {
                        return self.finish(DownCause::Oversize { len }, out)
                    }
                    Err(FrameError::Empty) => {
                        return self.finish(
                            DownCause::Malformed {
                                detail: "empty frame".into(),
                            },
                            out,
                        )
                    }
                };
                self.frame.clear();
                self.frame.extend_from_slice(frame);
                let body = std::mem::take(&mut self.frame);
                let result = self.on_frame(ctx, &body, now, out);
                self.frame = body;
                if let Err(cause) = result {
                    let _ = self.flush();
                    return self.finish(cause, out);
                }
                if self.is_done() {
                    return;
                }
            }
            if let Err(e) = self.flush() {
                return self.finish(
                    DownCause::Io {
                        error: e.to_string(),
                    },
                    out,
                );
            }
            match fill {
                Fill::WouldBlock => return,
                Fill::More => continue,
                Fill::Eof => {
                    let cause = self.eof_cause();
                    return self.finish(cause, out);
                }
            }
        }
    }

    fn eof_cause(&self) -> DownCause {
        match self.phase {
            Phase::AwaitMsg2(_) => DownCause::AuthFailure {
                detail: "the peer closed the connection during the handshake: it holds another \
                         cluster key (or another cluster name or protocol version)"
                    .into(),
            },
            _ => DownCause::ClosedByPeer,
        }
    }

    fn on_frame(
        &mut self,
        ctx: &Ctx<'_>,
        body: &[u8],
        now: Instant,
        out: &mut Vec<Outcome>,
    ) -> Result<(), DownCause> {
        match std::mem::replace(&mut self.phase, Phase::Done) {
            Phase::Connecting | Phase::Done => Err(DownCause::Malformed {
                detail: "data before the connection was set up".into(),
            }),
            Phase::AwaitPreamble => self.on_preamble(ctx, body, now),
            Phase::AwaitMsg1(mut hs) => {
                if Preamble::is_preamble(body) {
                    return Err(DownCause::Malformed {
                        detail: "a second preamble".into(),
                    });
                }
                read_empty_handshake(&mut hs, body, &mut self.plain, 1)?;
                let n = hs
                    .write_message(&[], &mut self.sealed)
                    .map_err(|e| DownCause::Io {
                        error: format!("noise: {e}"),
                    })?;
                let msg2 = self.sealed[..n].to_vec();
                self.queue_clear(&msg2, now);
                let ts = hs.into_transport_mode().map_err(|e| DownCause::Io {
                    error: format!("noise: {e}"),
                })?;
                self.last_rx = now;
                self.phase = Phase::AwaitHello(Box::new(ts));
                Ok(())
            }
            Phase::AwaitMsg2(mut hs) => {
                if Preamble::is_preamble(body) {
                    return match Preamble::decode(body) {
                        Ok(Preamble::Refusal { code, reason }) => Err(DownCause::Refused {
                            by: Side::Peer,
                            code,
                            reason,
                            authenticated: false,
                        }),
                        Ok(Preamble::Dial { .. }) => Err(DownCause::Malformed {
                            detail: "a preamble where handshake message 2 belongs".into(),
                        }),
                        Err(e) => Err(DownCause::Malformed {
                            detail: format!("preamble: {e}"),
                        }),
                    };
                }
                read_empty_handshake(&mut hs, body, &mut self.plain, 2)?;
                let ts = hs.into_transport_mode().map_err(|e| DownCause::Io {
                    error: format!("noise: {e}"),
                })?;
                self.last_rx = now;
                self.phase = Phase::AwaitHello(Box::new(ts));
                let hello = own_hello(ctx, self.peer.as_deref());
                self.queue_sealed(&hello, now).map_err(|e| DownCause::Io {
                    error: e.to_string(),
                })?;
                Ok(())
            }
            Phase::AwaitHello(mut ts) => {
                let message = open(&mut ts, body, &mut self.plain)?;
                self.last_rx = now;
                self.phase = Phase::AwaitHello(ts);
                match message {
                    Message::Hello(hello) => {
                        if let Err((code, reason)) = self.check_hello(ctx, &hello) {
                            let refuse = Message::Refuse {
                                code,
                                reason: reason.clone(),
                            };
                            let _ = self.queue_sealed(&refuse, now);
                            return Err(DownCause::Refused {
                                by: Side::Us,
                                code,
                                reason,
                                authenticated: true,
                            });
                        }
                        if self.role == Role::Responder {
                            self.queue_sealed(&own_hello(ctx, self.peer.as_deref()), now)
                                .map_err(|e| DownCause::Io {
                                    error: e.to_string(),
                                })?;
                        }
                        if let Phase::AwaitHello(ts) =
                            std::mem::replace(&mut self.phase, Phase::Done)
                        {
                            self.phase = Phase::Up(ts);
                        }
                        self.was_up = true;
                        out.push(Outcome::Up(hello));
                        Ok(())
                    }
                    Message::Refuse { code, reason } => Err(DownCause::Refused {
                        by: Side::Peer,
                        code,
                        reason,
                        authenticated: true,
                    }),
                    other => Err(DownCause::Malformed {
                        detail: format!("{} before hello", other.kind()),
                    }),
                }
            }
            Phase::Up(mut ts) => {
                let message = open(&mut ts, body, &mut self.plain)?;
                self.last_rx = now;
                self.phase = Phase::Up(ts);
                match message {
                    Message::Hello(_) => Err(DownCause::Malformed {
                        detail: "a second hello".into(),
                    }),
                    Message::Refuse { code, reason } => Err(DownCause::Refused {
                        by: Side::Peer,
                        code,
                        reason,
                        authenticated: true,
                    }),
                    message => {
                        out.push(Outcome::Received(message));
                        Ok(())
                    }
                }
            }
        }
    }

    fn on_preamble(&mut self, ctx: &Ctx<'_>, body: &[u8], now: Instant) -> Result<(), DownCause> {
        let (version, cluster, node) = match Preamble::decode(body) {
            Ok(Preamble::Dial {
                version,
                cluster,
                node,
            }) => (version, cluster, node),
            Ok(Preamble::Refusal { .. }) => {
                return Err(DownCause::Malformed {
                    detail: "a refusal from the dialing side".into(),
                })
            }
            Err(e) => {
                return Err(DownCause::Malformed {
                    detail: format!("not a prodhcp syncd preamble ({e})"),
                })
            }
        };
        if ctx.dialers.contains(&node) {
            self.peer = Some(node.clone());
        }
        let refusal = if version != PROTOCOL_VERSION {
            Some((
                RefuseCode::ProtocolVersion,
                format!(
                    "node `{node}` speaks protocol version {version}; node `{}` speaks {PROTOCOL_VERSION}",
                    ctx.node
                ),
            ))
        } else if cluster != ctx.cluster {
            Some((
                RefuseCode::ClusterName,
                format!(
                    "node `{node}` is in cluster `{cluster}`; node `{}` is in cluster `{}`",
                    ctx.node, ctx.cluster
                ),
            ))
        } else if !ctx.dialers.contains(&node) {
            Some((
                RefuseCode::UnknownNode,
                format!(
                    "node `{node}` is not a peer of node `{}` that dials it (configured, and \
                     sorting before `{}`: the node whose name sorts lower dials)",
                    ctx.node, ctx.node
                ),
            ))
        } else {
            None
        };
        if let Some((code, reason)) = refusal {
            let body = Preamble::Refusal {
                code,
                reason: reason.clone(),
            }
            .encode();
            self.queue_clear(&body, now);
            return Err(DownCause::Refused {
                by: Side::Us,
                code,
                reason,
                authenticated: false,
            });
        }
        let hs = handshake::responder(ctx.key, ctx.cluster).map_err(|e| DownCause::Io {
            error: format!("noise: {e}"),
        })?;
        self.last_rx = now;
        self.phase = Phase::AwaitMsg1(Box::new(hs));
        Ok(())
    }

    fn check_hello(&self, ctx: &Ctx<'_>, hello: &Hello) -> Result<(), (RefuseCode, String)> {
        let peer = self.peer.as_deref().unwrap_or("?");
        check_hello(ctx.cluster, ctx.node, ctx.fingerprint, peer, hello)
    }

    /// Handles time: heartbeats due, silence, set-up deadline.
    pub(crate) fn on_timer(&mut self, ctx: &Ctx<'_>, now: Instant, out: &mut Vec<Outcome>) {
        match self.phase {
            Phase::Done => {}
            Phase::Up(_) => {
                let silent = now.saturating_duration_since(self.last_rx);
                if silent >= self.dead_after {
                    return self.finish(DownCause::HeartbeatTimeout { silent }, out);
                }
                if now.saturating_duration_since(self.last_tx) >= self.heartbeat {
                    let monotonic_ms =
                        u64::try_from(now.duration_since(ctx.epoch).as_millis()).unwrap_or(0);
                    if self
                        .queue_sealed(&Message::Heartbeat { monotonic_ms }, now)
                        .is_ok()
                    {
                        out.push(Outcome::HeartbeatSent);
                    }
                    if let Err(e) = self.flush() {
                        self.finish(
                            DownCause::Io {
                                error: e.to_string(),
                            },
                            out,
                        );
                    }
                }
            }
            _ => {
                if now >= self.setup_deadline {
                    self.finish(DownCause::SetupTimeout, out);
                }
            }
        }
    }
}

/// Why a message could not be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// No up connection to that peer.
    #[error("the peer is not connected")]
    NotUp,
    /// The message does not fit in one frame.
    #[error("message of {0} bytes does not fit in one frame")]
    TooLarge(usize),
    /// The message could not be encoded or sealed.
    #[error("cannot encode: {0}")]
    Encode(String),
    /// The socket failed (the link goes down on its next event).
    #[error("socket error: {0}")]
    Io(String),
}

fn open(
    ts: &mut snow::TransportState,
    body: &[u8],
    plain: &mut [u8],
) -> Result<Message, DownCause> {
    let n = match ts.read_message(body, plain) {
        Ok(n) => n,
        Err(snow::Error::Decrypt) => return Err(DownCause::DecryptFailure),
        Err(e) => {
            return Err(DownCause::Malformed {
                detail: format!("transport frame: {e}"),
            })
        }
    };
    Message::decode(&plain[..n]).map_err(|e| DownCause::Malformed {
        detail: e.to_string(),
    })
}

fn own_hello(ctx: &Ctx<'_>, peer: Option<&str>) -> Message {
    Message::Hello(Hello {
        protocol_version: PROTOCOL_VERSION,
        cluster: ctx.cluster.to_string(),
        node: ctx.node.to_string(),
        layout_fingerprint: ctx.fingerprint,
        positions: peer
            .and_then(|p| ctx.positions.get(p))
            .cloned()
            .unwrap_or_default(),
    })
}

/// Checks an authenticated hello from `expected_peer`: same protocol version, same cluster,
/// the expected node, the same lease-table layout. The error is the refusal to send.
pub fn check_hello(
    cluster: &str,
    node: &str,
    fingerprint: u64,
    expected_peer: &str,
    hello: &Hello,
) -> Result<(), (RefuseCode, String)> {
    if hello.protocol_version != PROTOCOL_VERSION {
        return Err((
            RefuseCode::ProtocolVersion,
            format!(
                "node `{}` speaks protocol version {}; node `{node}` speaks {PROTOCOL_VERSION}",
                hello.node, hello.protocol_version
            ),
        ));
    }
    if hello.cluster != cluster {
        return Err((
            RefuseCode::ClusterName,
            format!(
                "node `{}` is in cluster `{}`; node `{node}` is in cluster `{cluster}`",
                hello.node, hello.cluster
            ),
        ));
    }
    if hello.node != expected_peer {
        return Err((
            RefuseCode::UnknownNode,
            format!(
                "the hello names node `{}`, but this connection is with node `{expected_peer}`",
                hello.node
            ),
        ));
    }
    if hello.layout_fingerprint != fingerprint {
        return Err((
            RefuseCode::LayoutFingerprint,
            format!(
                "lease table layouts differ: node `{}` has fingerprint {:016x}, node `{node}` \
                 has {fingerprint:016x} (pools and reserved addresses must be the same on every \
                 appliance)",
                hello.node, hello.layout_fingerprint
            ),
        ));
    }
    Ok(())
}

/// Reads handshake message `which` (1 or 2) of NNpsk0, which carries no payload: a message
/// that does not decrypt means the peer holds another cluster key; anything else is malformed.
fn read_empty_handshake(
    hs: &mut snow::HandshakeState,
    body: &[u8],
    plain: &mut [u8],
    which: u8,
) -> Result<(), DownCause> {
    match hs.read_message(body, plain) {
        Ok(0) => Ok(()),
        Ok(_) => Err(DownCause::Malformed {
            detail: format!("handshake message {which} carries a payload"),
        }),
        Err(snow::Error::Decrypt) => Err(DownCause::AuthFailure {
            detail: format!(
                "handshake message {which} did not decrypt: the peer holds another cluster key"
            ),
        }),
        Err(e) => Err(DownCause::Malformed {
            detail: format!("handshake message {which}: {e}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(cluster: &str, node: &str, fp: u64, version: u8) -> Hello {
        Hello {
            protocol_version: version,
            cluster: cluster.into(),
            node: node.into(),
            layout_fingerprint: fp,
            positions: vec![],
        }
    }

    #[test]
    fn hello_checks_name_the_mismatch() {
        assert_eq!(
            check_hello("pop1", "b", 7, "a", &hello("pop1", "a", 7, 1)),
            Ok(())
        );
        let (code, reason) =
            check_hello("pop1", "b", 7, "a", &hello("pop2", "a", 7, 1)).unwrap_err();
        assert_eq!(code, RefuseCode::ClusterName);
        assert_eq!(
            reason,
            "node `a` is in cluster `pop2`; node `b` is in cluster `pop1`"
        );
        let (code, reason) =
            check_hello("pop1", "b", 7, "a", &hello("pop1", "a", 7, 2)).unwrap_err();
        assert_eq!(code, RefuseCode::ProtocolVersion);
        assert_eq!(
            reason,
            "node `a` speaks protocol version 2; node `b` speaks 1"
        );
        let (code, _) = check_hello("pop1", "b", 7, "a", &hello("pop1", "c", 7, 1)).unwrap_err();
        assert_eq!(code, RefuseCode::UnknownNode);
        let (code, reason) =
            check_hello("pop1", "b", 7, "a", &hello("pop1", "a", 8, 1)).unwrap_err();
        assert_eq!(code, RefuseCode::LayoutFingerprint);
        assert!(
            reason.starts_with(
                "lease table layouts differ: node `a` has fingerprint 0000000000000008, node `b` has 0000000000000007"
            ),
            "{reason}"
        );
    }
}

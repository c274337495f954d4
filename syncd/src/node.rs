//! syncd's peer loop: one mio poll over the listening socket and one TCP connection per peer.
//!
//! **Who dials**: of two nodes, the one whose name sorts lower (byte order) dials and the other
//! only accepts, so each pair has exactly one connection and there is no simultaneous-open race
//! to resolve. An accepted connection from a node that should be dialed (or is not configured)
//! is refused in its preamble. If an authenticated connection arrives from a peer that already
//! has one (it restarted and the old connection has not timed out yet), the new one replaces
//! the old.
//!
//! **Liveness**: every up connection sends a heartbeat when it sent nothing for
//! `heartbeat_interval`; a connection on which nothing arrived for `dead_after` is declared
//! dead (a peer whose processes die closes the connection and is seen at once). The poll
//! timeout is the earliest deadline of any link, so detection happens within a few
//! milliseconds of `dead_after`.
//!
//! **Drops**: anything a connection cannot trust (a failed handshake, a frame that fails its
//! AEAD tag, an oversize length, bytes that are not a message) drops the connection, counts
//! the cause for the peer, and is logged — the first time per cause and peer at once, later
//! ones at most every [`LOG_EVERY`] with the number suppressed. The dialing side reconnects
//! with backoff ([`MIN_BACKOFF`] doubling to [`MAX_BACKOFF`]).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

use prodhcp_config::Cluster;

use crate::key::ClusterKey;
use crate::link::{Ctx, DownCause, Link, Outcome, SendError, Timing};
use crate::message::{Hello, Message, Position};

/// First reconnect delay after a dialed connection ends.
pub const MIN_BACKOFF: Duration = Duration::from_millis(25);
/// Longest reconnect delay.
pub const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Shortest interval between two log lines of the same cause for the same peer.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

const LISTENER: Token = Token(0);
/// The records doorbell ([`Node::set_wake`]); link tokens count up from 1 and never reach it.
const WAKE: Token = Token(usize::MAX);
/// Most connections not yet up at once; further ones are closed as soon as they are accepted
/// (each pending one is dropped after `dead_after` anyway).
pub const MAX_PENDING_LINKS: usize = 64;

/// What a [`Node`] needs: the `cluster` section resolved, the key loaded, and this node's
/// lease-table layout fingerprint.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Cluster name.
    pub cluster: String,
    /// This node's name.
    pub node: String,
    /// Where to accept peers.
    pub listen: SocketAddr,
    /// The other nodes: name and address.
    pub peers: Vec<(String, SocketAddr)>,
    /// The cluster key.
    pub key: ClusterKey,
    /// Heartbeat interval.
    pub heartbeat_interval: Duration,
    /// Silence after which a peer is declared dead.
    pub dead_after: Duration,
    /// This node's lease-table layout fingerprint (`shm_layout::Table::fingerprint`).
    pub layout_fingerprint: u64,
}

impl NodeConfig {
    /// From the validated `cluster` section: loads the key file (refusing a bad or
    /// group/other-accessible one) and takes this node's table fingerprint.
    pub fn load(
        cluster: &Cluster,
        layout_fingerprint: u64,
    ) -> Result<NodeConfig, crate::key::KeyError> {
        let key = crate::key::load(&cluster.key_file)?;
        Ok(NodeConfig::from_cluster(cluster, key, layout_fingerprint))
    }

    /// From the validated `cluster` section, a loaded key and the table's fingerprint.
    pub fn from_cluster(cluster: &Cluster, key: ClusterKey, layout_fingerprint: u64) -> Self {
        NodeConfig {
            cluster: cluster.name.clone(),
            node: cluster.node.clone(),
            listen: cluster.listen,
            peers: cluster
                .peers
                .iter()
                .map(|p| (p.node.clone(), p.address))
                .collect(),
            key,
            heartbeat_interval: cluster.heartbeat_interval,
            dead_after: cluster.dead_after,
            layout_fingerprint,
        }
    }
}

/// What happened on the peer connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A peer's authenticated hello was accepted and ours sent.
    PeerUp {
        /// The peer.
        peer: String,
        /// Its address (the dialed address, or where its connection came from).
        remote: SocketAddr,
        /// Its hello.
        hello: Hello,
    },
    /// A message from an up peer (heartbeat, records, ack).
    Received {
        /// The peer.
        peer: String,
        /// The message.
        message: Message,
    },
    /// A connection ended: a peer declared dead when `was_up`, else a set-up that failed.
    LinkDown {
        /// The peer, when known (for an accepted connection: the name its preamble claimed).
        peer: Option<String>,
        /// The remote address.
        remote: SocketAddr,
        /// Whether the connection had been up (hellos exchanged).
        was_up: bool,
        /// Why.
        cause: DownCause,
    },
}

/// Per-peer counts of connection events and drops by cause.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkCounters {
    /// Connections that came up.
    pub ups: u64,
    /// Heartbeats received.
    pub heartbeats_in: u64,
    /// Heartbeats sent.
    pub heartbeats_out: u64,
    /// Connections closed by the peer.
    pub closed_by_peer: u64,
    /// Peers declared dead after silence.
    pub heartbeat_timeouts: u64,
    /// Set-ups that did not finish in time.
    pub setup_timeouts: u64,
    /// Connections this node refused.
    pub refused_by_us: u64,
    /// Connections the peer refused.
    pub refused_by_peer: u64,
    /// Handshakes that failed (another key).
    pub auth_failures: u64,
    /// Transport frames that failed their AEAD check (altered, replayed, injected).
    pub decrypt_failures: u64,
    /// Frames with a length above the limit.
    pub oversize: u64,
    /// Frames or messages that could not be read.
    pub malformed: u64,
    /// Dials that failed.
    pub connect_failures: u64,
    /// Socket errors.
    pub io_errors: u64,
    /// Connections replaced by a newer one from the same peer.
    pub replaced: u64,
}

impl LinkCounters {
    fn count(&mut self, cause: &DownCause) {
        let field = match cause {
            DownCause::ClosedByPeer => &mut self.closed_by_peer,
            DownCause::HeartbeatTimeout { .. } => &mut self.heartbeat_timeouts,
            DownCause::SetupTimeout => &mut self.setup_timeouts,
            DownCause::Refused {
                by: crate::link::Side::Us,
                ..
            } => &mut self.refused_by_us,
            DownCause::Refused { .. } => &mut self.refused_by_peer,
            DownCause::AuthFailure { .. } => &mut self.auth_failures,
            DownCause::DecryptFailure => &mut self.decrypt_failures,
            DownCause::Oversize { .. } => &mut self.oversize,
            DownCause::Malformed { .. } => &mut self.malformed,
            DownCause::ConnectFailed { .. } => &mut self.connect_failures,
            DownCause::Io { .. } => &mut self.io_errors,
            DownCause::Replaced => &mut self.replaced,
            DownCause::Closed => return,
        };
        *field += 1;
    }
}

/// The state of a configured peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerState {
    /// No up connection.
    Down,
    /// Hellos exchanged.
    Up,
}

struct PeerSlot {
    name: String,
    address: SocketAddr,
    dials: bool,
    /// The dialing connection (initiator), or the up connection (either role).
    link: Option<Token>,
    next_dial: Instant,
    backoff: Duration,
}

/// Counter bucket for connections no configured peer claimed.
pub const UNKNOWN_PEER: &str = "?";

struct LogLimiter {
    last: HashMap<(String, &'static str), (Instant, u64)>,
}

impl LogLimiter {
    /// Whether to log now; the number suppressed since the last line.
    fn admit(&mut self, peer: &str, kind: &'static str, now: Instant) -> Option<u64> {
        match self.last.get_mut(&(peer.to_string(), kind)) {
            None => {
                self.last.insert((peer.to_string(), kind), (now, 0));
                Some(0)
            }
            Some((at, suppressed)) => {
                if now.saturating_duration_since(*at) >= LOG_EVERY {
                    let n = *suppressed;
                    *at = now;
                    *suppressed = 0;
                    Some(n)
                } else {
                    *suppressed += 1;
                    None
                }
            }
        }
    }
}

/// syncd's peer side: listener, links, timers.
pub struct Node {
    config: NodeConfig,
    poll: Poll,
    events: Events,
    listener: TcpListener,
    links: HashMap<Token, Link>,
    next_token: usize,
    peers: Vec<PeerSlot>,
    dialers: Vec<String>,
    counters: BTreeMap<String, LinkCounters>,
    positions: HashMap<String, Vec<Position>>,
    queue: VecDeque<Event>,
    limiter: LogLimiter,
    epoch: Instant,
    /// An eventfd whose readability ends a turn early (drained when seen).
    wake: Option<std::os::fd::OwnedFd>,
}

impl Node {
    /// Binds the listening socket and prepares to dial the peers this node dials.
    pub fn bind(config: NodeConfig) -> io::Result<Node> {
        let poll = Poll::new()?;
        let mut listener = TcpListener::bind(config.listen)?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let now = Instant::now();
        let peers: Vec<PeerSlot> = config
            .peers
            .iter()
            .map(|(name, address)| PeerSlot {
                name: name.clone(),
                address: *address,
                dials: config.node.as_str() < name.as_str(),
                link: None,
                next_dial: now,
                backoff: MIN_BACKOFF,
            })
            .collect();
        let dialers = peers
            .iter()
            .filter(|p| !p.dials)
            .map(|p| p.name.clone())
            .collect();
        let mut counters: BTreeMap<String, LinkCounters> = peers
            .iter()
            .map(|p| (p.name.clone(), LinkCounters::default()))
            .collect();
        counters.insert(UNKNOWN_PEER.to_string(), LinkCounters::default());
        Ok(Node {
            config,
            poll,
            events: Events::with_capacity(256),
            listener,
            links: HashMap::new(),
            next_token: 1,
            peers,
            dialers,
            counters,
            positions: HashMap::new(),
            queue: VecDeque::new(),
            limiter: LogLimiter {
                last: HashMap::new(),
            },
            epoch: now,
            wake: None,
        })
    }

    /// Polls `fd` (an eventfd: the workers' records doorbell) with the links: when it is
    /// written, [`Node::turn`] returns at once and drains it, so the caller ships the new
    /// records without waiting for its turn's timeout.
    pub fn set_wake(&mut self, fd: std::os::fd::OwnedFd) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let raw = fd.as_raw_fd();
        self.poll
            .registry()
            .register(&mut mio::unix::SourceFd(&raw), WAKE, Interest::READABLE)?;
        self.wake = Some(fd);
        Ok(())
    }

    /// The address the listener is bound to (useful with port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// This node's configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// Sets the positions the next hellos carry, to every peer.
    pub fn set_positions(&mut self, positions: Vec<Position>) {
        self.positions = self
            .peers
            .iter()
            .map(|p| (p.name.clone(), positions.clone()))
            .collect();
    }

    /// Sets the positions the next hello to `peer` carries (what this node applied from that
    /// peer's rings).
    pub fn set_peer_positions(&mut self, peer: &str, positions: Vec<Position>) {
        self.positions.insert(peer.to_string(), positions);
    }

    /// Counters per peer name (and [`UNKNOWN_PEER`]).
    pub fn counters(&self) -> &BTreeMap<String, LinkCounters> {
        &self.counters
    }

    /// One peer's counters (all zero for an unknown name).
    pub fn peer_counters(&self, peer: &str) -> LinkCounters {
        self.counters.get(peer).cloned().unwrap_or_default()
    }

    /// Whether `peer` has an up connection.
    pub fn peer_state(&self, peer: &str) -> PeerState {
        let up = self
            .peers
            .iter()
            .find(|p| p.name == peer)
            .and_then(|p| p.link)
            .and_then(|t| self.links.get(&t))
            .is_some_and(Link::is_up);
        if up {
            PeerState::Up
        } else {
            PeerState::Down
        }
    }

    /// The next event, if any.
    pub fn next_event(&mut self) -> Option<Event> {
        self.queue.pop_front()
    }

    /// Sends `message` to an up peer.
    pub fn send(&mut self, peer: &str, message: &Message) -> Result<(), SendError> {
        let token = self
            .peers
            .iter()
            .find(|p| p.name == peer)
            .and_then(|p| p.link)
            .ok_or(SendError::NotUp)?;
        let link = self.links.get_mut(&token).ok_or(SendError::NotUp)?;
        link.send(message, Instant::now())
    }

    /// Closes every connection (on shutdown).
    pub fn close_all(&mut self) {
        let tokens: Vec<Token> = self.links.keys().copied().collect();
        for token in tokens {
            let mut out = Vec::new();
            if let Some(link) = self.links.get_mut(&token) {
                link.close(DownCause::Closed, &mut out);
            }
            self.handle_outcomes(token, out, Instant::now());
        }
    }

    /// One turn: waits at most `max_wait` (less when a timer is due) for socket events,
    /// handles them, then the timers (dials, heartbeats, silence). Events are queued for
    /// [`Node::next_event`].
    pub fn turn(&mut self, max_wait: Duration) -> io::Result<()> {
        let now = Instant::now();
        let wait = self
            .next_deadline()
            .map_or(max_wait, |d| d.saturating_duration_since(now).min(max_wait));
        match self.poll.poll(&mut self.events, Some(wait)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        let ready: Vec<(Token, bool, bool)> = self
            .events
            .iter()
            .map(|e| {
                (
                    e.token(),
                    e.is_readable() || e.is_read_closed() || e.is_error(),
                    e.is_writable() || e.is_write_closed() || e.is_error(),
                )
            })
            .collect();
        let now = Instant::now();
        for (token, readable, writable) in ready {
            if token == LISTENER {
                self.accept_all(now);
                continue;
            }
            if token == WAKE {
                if let Some(fd) = &self.wake {
                    let mut count = [0u8; 8];
                    let _ = nix::unistd::read(fd, &mut count);
                }
                continue;
            }
            let mut out = Vec::new();
            {
                let ctx = Ctx {
                    cluster: &self.config.cluster,
                    node: &self.config.node,
                    key: &self.config.key,
                    fingerprint: self.config.layout_fingerprint,
                    positions: &self.positions,
                    dialers: &self.dialers,
                    epoch: self.epoch,
                };
                let Some(link) = self.links.get_mut(&token) else {
                    continue;
                };
                link.on_ready(&ctx, readable, writable, now, &mut out);
            }
            self.handle_outcomes(token, out, now);
        }
        self.on_timers(Instant::now())
    }

    fn timing(&self) -> Timing {
        Timing {
            heartbeat: self.config.heartbeat_interval,
            dead_after: self.config.dead_after,
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let links = self.links.values().map(Link::next_deadline);
        let dials = self
            .peers
            .iter()
            .filter(|p| p.dials && p.link.is_none())
            .map(|p| p.next_dial);
        links.chain(dials).min()
    }

    fn accept_all(&mut self, now: Instant) {
        loop {
            match self.listener.accept() {
                Ok((stream, remote)) => {
                    let pending = self.links.values().filter(|l| !l.is_up()).count();
                    if pending >= MAX_PENDING_LINKS {
                        drop(stream);
                        let cause = DownCause::Malformed {
                            detail: format!(
                                "{MAX_PENDING_LINKS} connections are already being set up: closed at once"
                            ),
                        };
                        self.record_down(None, remote, false, cause, now);
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    let link = Link::accepted(stream, remote, now, self.timing());
                    if let Err(e) = self.add_link(link) {
                        tracing::warn!("syncd: cannot register connection from {remote}: {e}");
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // EMFILE and the like: leave the rest queued for the next turn.
                    tracing::warn!("syncd: accept failed: {e}");
                    return;
                }
            }
        }
    }

    fn add_link(&mut self, mut link: Link) -> io::Result<Token> {
        let token = Token(self.next_token);
        self.next_token += 1;
        self.poll.registry().register(
            &mut link.stream,
            token,
            Interest::READABLE | Interest::WRITABLE,
        )?;
        self.links.insert(token, link);
        Ok(token)
    }

    fn on_timers(&mut self, now: Instant) -> io::Result<()> {
        // Dials due.
        for i in 0..self.peers.len() {
            let slot = &self.peers[i];
            if !slot.dials || slot.link.is_some() || now < slot.next_dial {
                continue;
            }
            let (name, address) = (slot.name.clone(), slot.address);
            match TcpStream::connect(address) {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    let link = Link::dialing(stream, address, name, now, self.timing());
                    let token = self.add_link(link)?;
                    self.peers[i].link = Some(token);
                }
                Err(e) => {
                    let cause = DownCause::ConnectFailed {
                        error: e.to_string(),
                    };
                    self.record_down(Some(&name), address, false, cause, now);
                    self.schedule_redial(i, now, false);
                }
            }
        }
        // Link timers.
        let tokens: Vec<Token> = self
            .links
            .iter()
            .filter(|(_, l)| l.next_deadline() <= now)
            .map(|(t, _)| *t)
            .collect();
        for token in tokens {
            let mut out = Vec::new();
            {
                let ctx = Ctx {
                    cluster: &self.config.cluster,
                    node: &self.config.node,
                    key: &self.config.key,
                    fingerprint: self.config.layout_fingerprint,
                    positions: &self.positions,
                    dialers: &self.dialers,
                    epoch: self.epoch,
                };
                if let Some(link) = self.links.get_mut(&token) {
                    link.on_timer(&ctx, now, &mut out);
                }
            }
            self.handle_outcomes(token, out, now);
        }
        Ok(())
    }

    fn schedule_redial(&mut self, slot: usize, now: Instant, reset: bool) {
        let p = &mut self.peers[slot];
        if reset {
            p.backoff = MIN_BACKOFF;
        }
        p.next_dial = now + p.backoff;
        p.backoff = (p.backoff * 2).min(MAX_BACKOFF);
    }

    fn handle_outcomes(&mut self, token: Token, outcomes: Vec<Outcome>, now: Instant) {
        for outcome in outcomes {
            let Some(link) = self.links.get(&token) else {
                return;
            };
            let peer = link.peer.clone();
            let remote = link.remote;
            match outcome {
                Outcome::Up(hello) => {
                    let name = peer.unwrap_or_default();
                    let Some(slot) = self.peers.iter().position(|p| p.name == name) else {
                        continue;
                    };
                    if let Some(old) = self.peers[slot].link.filter(|&t| t != token) {
                        let mut out = Vec::new();
                        if let Some(old_link) = self.links.get_mut(&old) {
                            old_link.close(DownCause::Replaced, &mut out);
                        }
                        self.handle_outcomes(old, out, now);
                    }
                    self.peers[slot].link = Some(token);
                    self.peers[slot].backoff = MIN_BACKOFF;
                    self.counters.entry(name.clone()).or_default().ups += 1;
                    tracing::info!(
                        "syncd: peer `{name}` up ({remote}): layout {:016x}, {} ring positions",
                        hello.layout_fingerprint,
                        hello.positions.len()
                    );
                    self.queue.push_back(Event::PeerUp {
                        peer: name,
                        remote,
                        hello,
                    });
                }
                Outcome::HeartbeatSent => {
                    if let Some(name) = peer {
                        self.counters.entry(name).or_default().heartbeats_out += 1;
                    }
                }
                Outcome::Received(message) => {
                    if let Some(name) = peer {
                        if matches!(message, Message::Heartbeat { .. }) {
                            self.counters.entry(name.clone()).or_default().heartbeats_in += 1;
                        }
                        self.queue.push_back(Event::Received {
                            peer: name,
                            message,
                        });
                    }
                }
                Outcome::Down(cause) => {
                    let Some(link) = self.links.remove(&token) else {
                        return;
                    };
                    let mut link = link;
                    let _ = self.poll.registry().deregister(&mut link.stream);
                    let was_up = link.was_up;
                    let slot = self.peers.iter().position(|p| p.link == Some(token));
                    if let Some(slot) = slot {
                        self.peers[slot].link = None;
                        if self.peers[slot].dials {
                            let give_up_longer = matches!(
                                cause,
                                DownCause::Refused { .. } | DownCause::AuthFailure { .. }
                            );
                            if give_up_longer {
                                self.peers[slot].backoff = MAX_BACKOFF;
                            }
                            self.schedule_redial(slot, now, false);
                        }
                    }
                    self.record_down(peer.as_deref(), remote, was_up, cause, now);
                    return;
                }
            }
        }
    }

    fn record_down(
        &mut self,
        peer: Option<&str>,
        remote: SocketAddr,
        was_up: bool,
        cause: DownCause,
        now: Instant,
    ) {
        let bucket = peer.unwrap_or(UNKNOWN_PEER).to_string();
        self.counters
            .entry(bucket.clone())
            .or_default()
            .count(&cause);
        if let Some(suppressed) = self.limiter.admit(&bucket, cause.kind(), now) {
            let more = if suppressed > 0 {
                format!(" ({suppressed} more like it since the last report)")
            } else {
                String::new()
            };
            let who = peer.map_or_else(
                || format!("connection from {remote}"),
                |p| format!("peer `{p}` ({remote})"),
            );
            if was_up {
                tracing::warn!("syncd: {who} down: {cause}{more}");
            } else {
                tracing::warn!("syncd: {who}: {cause}{more}");
            }
        }
        self.queue.push_back(Event::LinkDown {
            peer: peer.map(str::to_string),
            remote,
            was_up,
            cause,
        });
    }
}

/// Runs a node until `stop` is set: binds, then turns the loop (at most 100 ms per turn, so
/// `stop` is seen promptly), handing every event to `on_event` together with the node (to send
/// messages or read counters). Closes every connection before returning.
pub fn run(
    config: NodeConfig,
    stop: &AtomicBool,
    mut on_event: impl FnMut(&mut Node, Event),
) -> io::Result<()> {
    let mut node = Node::bind(config)?;
    while !stop.load(Ordering::Relaxed) {
        node.turn(Duration::from_millis(100))?;
        while let Some(event) = node.next_event() {
            on_event(&mut node, event);
        }
    }
    node.close_all();
    while let Some(event) = node.next_event() {
        on_event(&mut node, event);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_the_first_of_each_cause_per_peer_then_at_most_every_log_every() {
        let mut limiter = LogLimiter {
            last: HashMap::new(),
        };
        let t0 = Instant::now();
        assert_eq!(limiter.admit("b", "decrypt_failure", t0), Some(0));
        assert_eq!(limiter.admit("b", "auth_failure", t0), Some(0));
        assert_eq!(limiter.admit("c", "decrypt_failure", t0), Some(0));
        for i in 1..=5 {
            let at = t0 + Duration::from_secs(i);
            assert_eq!(limiter.admit("b", "decrypt_failure", at), None);
        }
        assert_eq!(
            limiter.admit("b", "decrypt_failure", t0 + LOG_EVERY),
            Some(5)
        );
        assert_eq!(
            limiter.admit(
                "b",
                "decrypt_failure",
                t0 + LOG_EVERY + Duration::from_secs(1)
            ),
            None
        );
    }
}

//! The peer transport over real TCP sockets on loopback: two nodes, each driven by its own
//! thread, sometimes with a man-in-the-middle proxy between them that tampers with, replays or
//! stops forwarding frames. Every wait is bounded by a deadline.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use prodhcp_syncd::frame::{push_frame, MAX_FRAME_LEN};
use prodhcp_syncd::handshake::{self, Preamble};
use prodhcp_syncd::key::{generate, ClusterKey};
use prodhcp_syncd::message::PROTOCOL_VERSION;
use prodhcp_syncd::{
    DownCause, Event, Hello, LinkCounters, Message, Node, NodeConfig, PeerState, Position,
    RefuseCode, Side,
};

const HB: Duration = Duration::from_millis(50);
const DEAD: Duration = Duration::from_millis(300);

fn config(
    cluster: &str,
    node: &str,
    peer: (&str, SocketAddr),
    key: &ClusterKey,
    fingerprint: u64,
) -> NodeConfig {
    NodeConfig {
        cluster: cluster.into(),
        node: node.into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        peers: vec![(peer.0.into(), peer.1)],
        key: key.clone(),
        heartbeat_interval: HB,
        dead_after: DEAD,
        layout_fingerprint: fingerprint,
    }
}

/// A node driven by its own thread; its events and counters come back to the test.
struct Running {
    name: String,
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    /// While set, the node's thread stops turning its loop (a frozen process: its sockets stay
    /// open and silent).
    paused: Arc<AtomicBool>,
    events: Receiver<(Instant, Event)>,
    seen: Vec<(Instant, Event)>,
    counters: Arc<Mutex<BTreeMap<String, LinkCounters>>>,
    state: Arc<Mutex<BTreeMap<String, PeerState>>>,
    thread: Option<JoinHandle<()>>,
}

fn start(config: NodeConfig, positions: Vec<Position>) -> Running {
    let name = config.node.clone();
    let peers: Vec<String> = config.peers.iter().map(|p| p.0.clone()).collect();
    let mut node = Node::bind(config).unwrap();
    node.set_positions(positions);
    let addr = node.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let paused = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(Mutex::new(BTreeMap::new()));
    let state = Arc::new(Mutex::new(BTreeMap::new()));
    let (tx, rx) = mpsc::channel();
    let thread = {
        let (stop, paused, counters, state) = (
            stop.clone(),
            paused.clone(),
            counters.clone(),
            state.clone(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if paused.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
                node.turn(Duration::from_millis(5)).unwrap();
                while let Some(event) = node.next_event() {
                    let _ = tx.send((Instant::now(), event));
                }
                *counters.lock().unwrap() = node.counters().clone();
                *state.lock().unwrap() = peers
                    .iter()
                    .map(|p| (p.clone(), node.peer_state(p)))
                    .collect();
            }
            node.close_all();
        })
    };
    Running {
        name,
        addr,
        stop,
        paused,
        events: rx,
        seen: Vec::new(),
        counters,
        state,
        thread: Some(thread),
    }
}

impl Running {
    /// Waits (at most `within`) for an event matching `want`; returns it with its time.
    #[track_caller]
    fn wait_for(
        &mut self,
        within: Duration,
        what: &str,
        want: impl Fn(&Event) -> bool,
    ) -> (Instant, Event) {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok((at, event)) => {
                    self.seen.push((at, event.clone()));
                    if want(&event) {
                        return (at, event);
                    }
                }
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => panic!(
                    "node {}: no {what} within {within:?}; events seen: {:#?}",
                    self.name, self.seen
                ),
            }
        }
    }

    /// Every event that arrives in the next `period`.
    fn collect(&mut self, period: Duration) -> Vec<Event> {
        let deadline = Instant::now() + period;
        let mut got = Vec::new();
        while let Ok((at, event)) = self
            .events
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.seen.push((at, event.clone()));
            got.push(event);
        }
        got
    }

    fn counters(&self, peer: &str) -> LinkCounters {
        self.counters
            .lock()
            .unwrap()
            .get(peer)
            .cloned()
            .unwrap_or_default()
    }

    fn peer_state(&self, peer: &str) -> Option<PeerState> {
        self.state.lock().unwrap().get(peer).copied()
    }

    /// Polls `check` on the counters until it holds (at most `within`).
    #[track_caller]
    fn wait_counters(
        &self,
        peer: &str,
        within: Duration,
        what: &str,
        check: impl Fn(&LinkCounters) -> bool,
    ) {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if check(&self.counters(peer)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!(
            "node {}: counters for {peer} never showed {what}: {:?}",
            self.name,
            self.counters(peer)
        );
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn is_up(peer: &str) -> impl Fn(&Event) -> bool + '_ {
    move |e| matches!(e, Event::PeerUp { peer: p, .. } if p == peer)
}

fn is_heartbeat(peer: &str) -> impl Fn(&Event) -> bool + '_ {
    move |e| matches!(e, Event::Received { peer: p, message: Message::Heartbeat { .. } } if p == peer)
}

fn down_cause(event: &Event) -> Option<&DownCause> {
    match event {
        Event::LinkDown { cause, .. } => Some(cause),
        _ => None,
    }
}

/// Starts `b` (the accepting node, name sorting higher) then `a` dialing `b` at `via(b)`.
fn pair(
    a_key: &ClusterKey,
    b_key: &ClusterKey,
    a_cluster: &str,
    b_cluster: &str,
    a_fp: u64,
    b_fp: u64,
    via: impl FnOnce(SocketAddr) -> SocketAddr,
) -> (Running, Running) {
    // b never dials a (a < b), so a's address in b's config is only a name.
    let unused: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let b = start(
        config(b_cluster, "b", ("a", unused), b_key, b_fp),
        vec![Position { ring: 1, seq: 20 }],
    );
    let target = via(b.addr);
    let a = start(
        config(a_cluster, "a", ("b", target), a_key, a_fp),
        vec![
            Position { ring: 1, seq: 10 },
            Position { ring: 100, seq: 3 },
        ],
    );
    (a, b)
}

#[test]
fn good_key_both_sides_see_the_hello_and_heartbeats() {
    let key = generate().unwrap();
    let started = Instant::now();
    let (mut a, mut b) = pair(&key, &key, "pop1", "pop1", 7, 7, |b| b);
    let (at, up) = a.wait_for(Duration::from_secs(5), "b up", is_up("b"));
    println!(
        "start of both nodes to a's PeerUp (connect, preamble, Noise handshake, hellos): {} µs",
        at.duration_since(started).as_micros()
    );
    let Event::PeerUp { hello, .. } = up else {
        unreachable!()
    };
    assert_eq!(
        hello,
        Hello {
            protocol_version: PROTOCOL_VERSION,
            cluster: "pop1".into(),
            node: "b".into(),
            layout_fingerprint: 7,
            positions: vec![Position { ring: 1, seq: 20 }],
        }
    );
    let (_, up) = b.wait_for(Duration::from_secs(5), "a up", is_up("a"));
    let Event::PeerUp { hello, .. } = up else {
        unreachable!()
    };
    assert_eq!(hello.node, "a");
    assert_eq!(
        hello.positions,
        [
            Position { ring: 1, seq: 10 },
            Position { ring: 100, seq: 3 }
        ]
    );
    for _ in 0..3 {
        a.wait_for(
            Duration::from_secs(2),
            "heartbeat from b",
            is_heartbeat("b"),
        );
        b.wait_for(
            Duration::from_secs(2),
            "heartbeat from a",
            is_heartbeat("a"),
        );
    }
    // An idle second: no drop of any kind, still one connection, heartbeats keep coming.
    let later = a.collect(Duration::from_millis(500));
    assert!(later.iter().all(|e| down_cause(e).is_none()), "{later:#?}");
    assert!(
        later.iter().filter(|e| is_heartbeat("b")(e)).count() >= 5,
        "{later:#?}"
    );
    for (node, peer) in [(&a, "b"), (&b, "a")] {
        let c = node.counters(peer);
        assert_eq!(c.ups, 1, "{c:?}");
        assert!(c.heartbeats_in >= 3, "{c:?}");
        assert!(c.heartbeats_out >= 3, "{c:?}");
        assert_eq!(
            (
                c.auth_failures,
                c.decrypt_failures,
                c.malformed,
                c.oversize,
                c.heartbeat_timeouts
            ),
            (0, 0, 0, 0, 0),
            "{c:?}"
        );
        assert_eq!(node.peer_state(peer), Some(PeerState::Up));
    }
}

#[test]
fn wrong_key_is_refused_on_both_sides_as_an_auth_failure() {
    let (mut a, mut b) = pair(
        &generate().unwrap(),
        &generate().unwrap(),
        "pop1",
        "pop1",
        7,
        7,
        |b| b,
    );
    let (_, ev) = a.wait_for(Duration::from_secs(5), "auth failure", |e| {
        matches!(down_cause(e), Some(DownCause::AuthFailure { .. }))
    });
    assert!(
        matches!(ev, Event::LinkDown { peer: Some(ref p), was_up: false, .. } if p == "b"),
        "{ev:?}"
    );
    let (_, ev) = b.wait_for(Duration::from_secs(5), "auth failure", |e| {
        matches!(down_cause(e), Some(DownCause::AuthFailure { .. }))
    });
    assert!(
        matches!(ev, Event::LinkDown { peer: Some(ref p), was_up: false, .. } if p == "a"),
        "{ev:?}"
    );
    let shown = down_cause(&ev).unwrap().to_string();
    assert_eq!(
        shown,
        "authentication failed: handshake message 1 did not decrypt: the peer holds another cluster key"
    );
    a.wait_counters("b", Duration::from_secs(2), "an auth failure", |c| {
        c.auth_failures >= 1
    });
    b.wait_counters("a", Duration::from_secs(2), "an auth failure", |c| {
        c.auth_failures >= 1
    });
    // And it never comes up.
    let later = a.collect(Duration::from_millis(300));
    assert!(!later.iter().any(is_up("b")));
    assert!(!b.seen.iter().any(|(_, e)| is_up("a")(e)));
    assert_eq!(a.counters("b").ups, 0);
}

#[test]
fn layout_fingerprint_mismatch_is_refused_with_its_reason() {
    let key = generate().unwrap();
    let (mut a, mut b) = pair(&key, &key, "pop1", "pop1", 0x11, 0x22, |b| b);
    let (_, ev) = b.wait_for(Duration::from_secs(5), "refusal", |e| {
        matches!(down_cause(e), Some(DownCause::Refused { .. }))
    });
    let Some(DownCause::Refused {
        by,
        code,
        reason,
        authenticated,
    }) = down_cause(&ev)
    else {
        unreachable!()
    };
    assert_eq!(
        (*by, *code, *authenticated),
        (Side::Us, RefuseCode::LayoutFingerprint, true)
    );
    assert_eq!(
        reason,
        "lease table layouts differ: node `a` has fingerprint 0000000000000011, node `b` has \
         0000000000000022 (pools and reserved addresses must be the same on every appliance)"
    );
    let (_, ev) = a.wait_for(Duration::from_secs(5), "refusal", |e| {
        matches!(down_cause(e), Some(DownCause::Refused { .. }))
    });
    let Some(DownCause::Refused {
        by,
        code,
        reason: seen,
        authenticated,
    }) = down_cause(&ev)
    else {
        unreachable!()
    };
    assert_eq!(
        (*by, *code, *authenticated),
        (Side::Peer, RefuseCode::LayoutFingerprint, true)
    );
    assert_eq!(seen, reason);
    a.wait_counters("b", Duration::from_secs(2), "refused_by_peer", |c| {
        c.refused_by_peer >= 1
    });
    b.wait_counters("a", Duration::from_secs(2), "refused_by_us", |c| {
        c.refused_by_us >= 1
    });
    assert_eq!(a.counters("b").ups, 0);
    assert_eq!(b.counters("a").ups, 0);
}

#[test]
fn cluster_name_mismatch_is_refused_in_the_clear_with_its_reason() {
    let key = generate().unwrap();
    let (mut a, mut b) = pair(&key, &key, "pop1", "pop2", 7, 7, |b| b);
    let (_, ev) = a.wait_for(Duration::from_secs(5), "refusal", |e| {
        matches!(down_cause(e), Some(DownCause::Refused { .. }))
    });
    assert_eq!(
        down_cause(&ev),
        Some(&DownCause::Refused {
            by: Side::Peer,
            code: RefuseCode::ClusterName,
            reason: "node `a` is in cluster `pop1`; node `b` is in cluster `pop2`".into(),
            authenticated: false,
        })
    );
    let (_, ev) = b.wait_for(Duration::from_secs(5), "refusal", |e| {
        matches!(down_cause(e), Some(DownCause::Refused { .. }))
    });
    assert!(matches!(
        down_cause(&ev),
        Some(DownCause::Refused {
            by: Side::Us,
            code: RefuseCode::ClusterName,
            authenticated: false,
            ..
        })
    ));
}

// ---- a man in the middle ----

/// What the proxy does to the frames of the first connection, client to server.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Tamper {
    None,
    /// Flip one bit in the middle of frame `n`.
    Flip(usize),
    /// Send frame `n` twice.
    Duplicate(usize),
}

struct Proxy {
    addr: SocketAddr,
    frozen: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    /// Frames of the first connection, client to server, as the client sent them.
    recorded: Arc<Mutex<Vec<Vec<u8>>>>,
    thread: Option<JoinHandle<()>>,
}

impl Proxy {
    fn start(upstream: SocketAddr, tamper: Tamper) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let frozen = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let recorded = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (frozen, stop, recorded) = (frozen.clone(), stop.clone(), recorded.clone());
            std::thread::spawn(move || {
                let mut pumps = Vec::new();
                let mut first = true;
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((client, _)) => {
                            client.set_nonblocking(false).unwrap();
                            let server = TcpStream::connect(upstream).unwrap();
                            let tamper = if first { tamper } else { Tamper::None };
                            let record = first.then(|| recorded.clone());
                            first = false;
                            pumps.push(pump(
                                client.try_clone().unwrap(),
                                server.try_clone().unwrap(),
                                tamper,
                                record,
                                frozen.clone(),
                                stop.clone(),
                            ));
                            pumps.push(pump(
                                server,
                                client,
                                Tamper::None,
                                None,
                                frozen.clone(),
                                stop.clone(),
                            ));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(2)),
                    }
                }
                for p in pumps {
                    let _ = p.join();
                }
            })
        };
        Proxy {
            addr,
            frozen,
            stop,
            recorded,
            thread: Some(thread),
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Copies frames from `from` to `to`, applying `tamper`, recording, stopping while frozen
/// (the sockets stay open).
fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    tamper: Tamper,
    record: Option<Arc<Mutex<Vec<Vec<u8>>>>>,
    frozen: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        from.set_read_timeout(Some(Duration::from_millis(10)))
            .unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 65536];
        let mut index = 0usize;
        while !stop.load(Ordering::Relaxed) {
            if frozen.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            match from.read(&mut chunk) {
                Ok(0) => {
                    let _ = to.shutdown(Shutdown::Write);
                    return;
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(_) => {
                    let _ = to.shutdown(Shutdown::Both);
                    return;
                }
            }
            while buf.len() >= 2 {
                let len = usize::from(u16::from_be_bytes([buf[0], buf[1]]));
                if buf.len() < 2 + len {
                    break;
                }
                let mut frame: Vec<u8> = buf.drain(..2 + len).collect();
                if let Some(r) = &record {
                    r.lock().unwrap().push(frame.clone());
                }
                let mut copies = 1;
                match tamper {
                    Tamper::Flip(n) if n == index => {
                        let mid = 2 + len / 2;
                        frame[mid] ^= 0x01;
                    }
                    Tamper::Duplicate(n) if n == index => copies = 2,
                    _ => {}
                }
                index += 1;
                for _ in 0..copies {
                    if to.write_all(&frame).is_err() {
                        return;
                    }
                }
            }
        }
    })
}

/// Frames client→server: 0 preamble, 1 Noise message 1, 2 hello, 3 the first heartbeat.
const FIRST_HEARTBEAT: usize = 3;

#[test]
fn a_flipped_bit_in_a_transport_frame_drops_the_connection_as_a_decrypt_failure() {
    let key = generate().unwrap();
    let mut proxy = None;
    let (mut a, mut b) = pair(&key, &key, "pop1", "pop1", 7, 7, |b| {
        let p = Proxy::start(b, Tamper::Flip(FIRST_HEARTBEAT));
        let addr = p.addr;
        proxy = Some(p);
        addr
    });
    let (_, ev) = b.wait_for(Duration::from_secs(5), "drop", |e| down_cause(e).is_some());
    assert_eq!(
        ev,
        Event::LinkDown {
            peer: Some("a".into()),
            remote: match &ev {
                Event::LinkDown { remote, .. } => *remote,
                _ => unreachable!(),
            },
            was_up: true,
            cause: DownCause::DecryptFailure,
        }
    );
    let (_, ev) = a.wait_for(Duration::from_secs(5), "drop", |e| down_cause(e).is_some());
    assert_eq!(down_cause(&ev), Some(&DownCause::ClosedByPeer));
    // The dialing side reconnects (the proxy tampers only with the first connection).
    a.wait_for(Duration::from_secs(5), "b up again", is_up("b"));
    b.wait_for(Duration::from_secs(5), "a up again", is_up("a"));
    b.wait_counters("a", Duration::from_secs(2), "two ups", |c| c.ups == 2);
    let c = b.counters("a");
    assert_eq!(c.decrypt_failures, 1, "{c:?}");
    assert_eq!(
        (c.auth_failures, c.malformed, c.oversize),
        (0, 0, 0),
        "{c:?}"
    );
    drop(a);
    drop(b);
    drop(proxy);
}

#[test]
fn replayed_frames_and_replayed_sessions_are_refused() {
    let key = generate().unwrap();
    let mut proxy = None;
    let (mut a, mut b) = pair(&key, &key, "pop1", "pop1", 7, 7, |b| {
        let p = Proxy::start(b, Tamper::Duplicate(FIRST_HEARTBEAT));
        let addr = p.addr;
        proxy = Some(p);
        addr
    });
    // A frame sent twice: the second copy fails its check (the nonce moved on).
    let (_, ev) = b.wait_for(Duration::from_secs(5), "drop", |e| down_cause(e).is_some());
    assert!(
        matches!(&ev, Event::LinkDown { peer: Some(p), was_up: true, cause: DownCause::DecryptFailure, .. } if p == "a"),
        "{ev:?}"
    );
    a.wait_for(Duration::from_secs(5), "b up again", is_up("b"));
    b.wait_for(Duration::from_secs(5), "a up again", is_up("a"));
    b.wait_counters("a", Duration::from_secs(2), "one decrypt failure", |c| {
        c.decrypt_failures == 1
    });

    // A whole recorded session replayed on a new connection straight to b: the preamble and
    // Noise message 1 are accepted (they can be replayed), but the recorded hello does not
    // decrypt under the new session's keys, so the connection never becomes a peer.
    let recorded = proxy.as_ref().unwrap().recorded.lock().unwrap().clone();
    assert!(
        recorded.len() > FIRST_HEARTBEAT,
        "{} frames recorded",
        recorded.len()
    );
    let mut replay = TcpStream::connect(b.addr).unwrap();
    for frame in &recorded[..=FIRST_HEARTBEAT] {
        replay.write_all(frame).unwrap();
    }
    let (_, ev) = b.wait_for(Duration::from_secs(5), "drop of the replay", |e| {
        down_cause(e).is_some()
    });
    assert!(
        matches!(&ev, Event::LinkDown { peer: Some(p), was_up: false, cause: DownCause::DecryptFailure, .. } if p == "a"),
        "{ev:?}"
    );
    b.wait_counters("a", Duration::from_secs(2), "two decrypt failures", |c| {
        c.decrypt_failures == 2
    });
    // The genuine connection was not disturbed: no new up, no down, still up on both sides.
    let later = b.collect(Duration::from_millis(200));
    assert!(
        !later
            .iter()
            .any(|e| is_up("a")(e) || down_cause(e).is_some()),
        "{later:#?}"
    );
    assert_eq!(b.counters("a").ups, 2);
    assert_eq!(b.peer_state("a"), Some(PeerState::Up));
    assert_eq!(a.peer_state("b"), Some(PeerState::Up));
    drop(a);
    drop(b);
    drop(proxy);
}

/// Silence: the proxy stops forwarding but keeps both TCP connections open. Both sides
/// declare the peer dead within `dead_after` of the last frame they received.
fn silence_is_detected(heartbeat: Duration, dead_after: Duration) {
    let key = generate().unwrap();
    let unused: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let mut b_config = config("pop1", "b", ("a", unused), &key, 7);
    b_config.heartbeat_interval = heartbeat;
    b_config.dead_after = dead_after;
    let mut b = start(b_config, vec![]);
    let proxy = Proxy::start(b.addr, Tamper::None);
    let mut a_config = config("pop1", "a", ("b", proxy.addr), &key, 7);
    a_config.heartbeat_interval = heartbeat;
    a_config.dead_after = dead_after;
    let mut a = start(a_config, vec![]);
    a.wait_for(Duration::from_secs(5), "b up", is_up("b"));
    b.wait_for(Duration::from_secs(5), "a up", is_up("a"));
    // Let heartbeats flow a little, then cut.
    a.wait_for(Duration::from_secs(2), "heartbeat", is_heartbeat("b"));
    b.wait_for(Duration::from_secs(2), "heartbeat", is_heartbeat("a"));
    let cut = Instant::now();
    proxy.frozen.store(true, Ordering::Relaxed);
    let bound = dead_after + heartbeat + Duration::from_millis(100);
    for node in [&mut a, &mut b] {
        let peer = if node.name == "a" { "b" } else { "a" };
        let (at, ev) = node.wait_for(bound + Duration::from_secs(2), "heartbeat timeout", |e| {
            matches!(down_cause(e), Some(DownCause::HeartbeatTimeout { .. }))
        });
        let took = at.duration_since(cut);
        println!(
            "node {}: peer {peer} declared dead {} ms after the link went silent \
             (heartbeat {} ms, dead_after {} ms, bound {} ms): {ev:?}",
            node.name,
            took.as_millis(),
            heartbeat.as_millis(),
            dead_after.as_millis(),
            bound.as_millis()
        );
        assert!(took <= bound, "took {took:?}, bound {bound:?}");
        // Not before dead_after minus one heartbeat (the last frame came at most one
        // interval before the cut; 100 ms more for a sender delayed on a loaded machine).
        assert!(
            took + heartbeat + Duration::from_millis(100) >= dead_after,
            "took {took:?}"
        );
        assert!(matches!(&ev, Event::LinkDown { peer: Some(p), was_up: true, .. } if p == peer));
        node.wait_counters(peer, Duration::from_secs(1), "a heartbeat timeout", |c| {
            c.heartbeat_timeouts == 1
        });
    }
}

#[test]
fn heartbeat_silence_is_detected_within_dead_after() {
    silence_is_detected(HB, DEAD);
}

#[test]
fn with_default_timers_a_silent_peer_is_declared_dead_within_one_second() {
    let heartbeat = Duration::from_millis(u64::from(prodhcp_config::cluster::DEFAULT_HEARTBEAT_MS));
    let dead_after =
        Duration::from_millis(u64::from(prodhcp_config::cluster::DEFAULT_DEAD_AFTER_MS));
    assert!(dead_after <= Duration::from_secs(1));
    silence_is_detected(heartbeat, dead_after);
}

// ---- hostile bytes straight at a node, driven in this thread ----

fn drive_until_down(node: &mut Node, within: Duration) -> Option<Event> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        node.turn(Duration::from_millis(5)).unwrap();
        while let Some(e) = node.next_event() {
            if matches!(e, Event::LinkDown { .. }) {
                return Some(e);
            }
        }
    }
    None
}

/// A client that completes a real handshake with `b` as node `a`, returning the socket and
/// its transport state (the node is driven while waiting).
fn authenticated_client(node: &mut Node, key: &ClusterKey) -> (TcpStream, snow::TransportState) {
    let mut s = TcpStream::connect(node.local_addr().unwrap()).unwrap();
    let mut wire = Vec::new();
    push_frame(
        &mut wire,
        &Preamble::Dial {
            version: PROTOCOL_VERSION,
            cluster: "pop1".into(),
            node: "a".into(),
        }
        .encode(),
    );
    let mut hs = handshake::initiator(key, "pop1").unwrap();
    let mut m = vec![0u8; 1024];
    let n = hs.write_message(&[], &mut m).unwrap();
    push_frame(&mut wire, &m[..n]);
    s.write_all(&wire).unwrap();
    s.set_nonblocking(true).unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while got.len() < 2 + 48 {
        assert!(Instant::now() < deadline, "no handshake message 2");
        node.turn(Duration::from_millis(5)).unwrap();
        let mut chunk = [0u8; 256];
        match s.read(&mut chunk) {
            Ok(0) => panic!("closed"),
            Ok(k) => got.extend_from_slice(&chunk[..k]),
            Err(_) => {}
        }
    }
    let mut plain = vec![0u8; 1024];
    hs.read_message(&got[2..50], &mut plain).unwrap();
    let ts = hs.into_transport_mode().unwrap();
    s.set_nonblocking(false).unwrap();
    (s, ts)
}

fn hostile_target() -> (Node, ClusterKey) {
    let key = generate().unwrap();
    let unused: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let node = Node::bind(config("pop1", "b", ("a", unused), &key, 7)).unwrap();
    (node, key)
}

#[test]
fn oversize_garbage_and_forged_frames_are_counted_drops() {
    let (mut node, key) = hostile_target();
    // Garbage instead of a preamble.
    let mut s = TcpStream::connect(node.local_addr().unwrap()).unwrap();
    s.write_all(b"\x00\x05hello").unwrap();
    let ev = drive_until_down(&mut node, Duration::from_secs(3)).expect("drop");
    assert!(
        matches!(down_cause(&ev), Some(DownCause::Malformed { .. })),
        "{ev:?}"
    );
    assert_eq!(node.peer_counters("?").malformed, 1);
    // An oversize length before the handshake (limit 1100).
    let mut s = TcpStream::connect(node.local_addr().unwrap()).unwrap();
    s.write_all(&[0x10, 0x00]).unwrap();
    let ev = drive_until_down(&mut node, Duration::from_secs(3)).expect("drop");
    assert_eq!(down_cause(&ev), Some(&DownCause::Oversize { len: 0x1000 }));
    assert_eq!(node.peer_counters("?").oversize, 1);
    // After a real handshake: an oversize transport frame.
    let (mut s, _ts) = authenticated_client(&mut node, &key);
    s.write_all(&[0xff, 0xff]).unwrap();
    let ev = drive_until_down(&mut node, Duration::from_secs(3)).expect("drop");
    assert_eq!(down_cause(&ev), Some(&DownCause::Oversize { len: 0xffff }));
    const { assert!(0xffff > MAX_FRAME_LEN) };
    assert_eq!(node.peer_counters("a").oversize, 1);
    // After a real handshake: a forged frame (right length, wrong tag).
    let (mut s, _ts) = authenticated_client(&mut node, &key);
    let mut wire = Vec::new();
    push_frame(&mut wire, &[0xab; 40]);
    s.write_all(&wire).unwrap();
    let ev = drive_until_down(&mut node, Duration::from_secs(3)).expect("drop");
    assert_eq!(down_cause(&ev), Some(&DownCause::DecryptFailure));
    assert_eq!(node.peer_counters("a").decrypt_failures, 1);
    // After a real handshake: a sealed message that is not a message.
    let (mut s, mut ts) = authenticated_client(&mut node, &key);
    let mut sealed = vec![0u8; 1024];
    let n = ts.write_message(&[1, 99, 0], &mut sealed).unwrap();
    let mut wire = Vec::new();
    push_frame(&mut wire, &sealed[..n]);
    s.write_all(&wire).unwrap();
    let ev = drive_until_down(&mut node, Duration::from_secs(3)).expect("drop");
    assert_eq!(
        down_cause(&ev),
        Some(&DownCause::Malformed {
            detail: "unknown message type 99".into()
        })
    );
    assert_eq!(node.peer_counters("a").malformed, 1);
    // A sealed heartbeat before the hello.
    let (mut s, mut ts) = authenticated_client(&mut node, &key);
    let hb = Message::Heartbeat { monotonic_ms: 1 }.to_bytes().unwrap();
    let n = ts.write_message(&hb, &mut sealed).unwrap();
    let mut wire = Vec::new();
    push_frame(&mut wire, &sealed[..n]);
    s.write_all(&wire).unwrap();
    let ev = drive_until_down(&mut node, Duration::from_secs(3)).expect("drop");
    assert_eq!(
        down_cause(&ev),
        Some(&DownCause::Malformed {
            detail: "heartbeat before hello".into()
        })
    );
}

#[test]
fn random_bytes_as_frames_never_panic_the_node() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    let (node, key) = hostile_target();
    let node = std::cell::RefCell::new(node);
    let mut runner = TestRunner::new(Config {
        cases: 48,
        ..Config::default()
    });
    let strategy = (
        any::<bool>(),
        proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..4),
        any::<bool>(),
    );
    runner
        .run(&strategy, |(after_handshake, frames, raw)| {
            let mut node = node.borrow_mut();
            let mut s = if after_handshake {
                authenticated_client(&mut node, &key).0
            } else {
                TcpStream::connect(node.local_addr().unwrap()).unwrap()
            };
            let mut wire = Vec::new();
            for f in &frames {
                if raw {
                    wire.extend_from_slice(f);
                } else if !f.is_empty() {
                    push_frame(&mut wire, f);
                }
            }
            let _ = s.write_all(&wire);
            let _ = s.shutdown(Shutdown::Write);
            let ev = drive_until_down(&mut node, Duration::from_secs(3));
            prop_assert!(ev.is_some(), "the connection was not dropped");
            prop_assert!(
                !node.counters().values().any(|c| c.ups > 0),
                "random bytes brought a peer up"
            );
            Ok(())
        })
        .unwrap();
    let totals = node.borrow().counters().clone();
    println!("drops after random input: {totals:?}");
}

#[test]
fn a_new_authenticated_connection_from_a_peer_replaces_its_stale_one() {
    let key = generate().unwrap();
    let (mut a, mut b) = pair(&key, &key, "pop1", "pop1", 7, 7, |b| b);
    a.wait_for(Duration::from_secs(5), "b up", is_up("b"));
    b.wait_for(Duration::from_secs(5), "a up", is_up("a"));
    // `a` freezes (its connection stays open and silent) and comes back as a new process
    // before b's dead_after: the new connection takes the old one's place at once.
    a.paused.store(true, Ordering::Relaxed);
    let mut a2 = start(config("pop1", "a", ("b", b.addr), &key, 7), vec![]);
    a2.wait_for(Duration::from_secs(5), "b up", is_up("b"));
    let (_, ev) = b.wait_for(Duration::from_secs(5), "the old link replaced", |e| {
        down_cause(e).is_some()
    });
    assert!(
        matches!(&ev, Event::LinkDown { peer: Some(p), was_up: true, cause: DownCause::Replaced, .. } if p == "a"),
        "{ev:?}"
    );
    b.wait_for(Duration::from_secs(5), "a up again", is_up("a"));
    b.wait_counters(
        "a",
        Duration::from_secs(2),
        "two ups and one replaced",
        |c| c.ups == 2 && c.replaced == 1,
    );
    // The new link carries heartbeats and stays up past dead_after.
    b.wait_for(Duration::from_secs(2), "heartbeat", is_heartbeat("a"));
    let later = b.collect(DEAD + HB);
    assert!(!later.iter().any(|e| down_cause(e).is_some()), "{later:#?}");
    assert_eq!(b.peer_state("a"), Some(PeerState::Up));
    drop(a);
}

#[test]
fn a_peer_whose_process_ends_is_seen_at_once_as_closed_by_peer() {
    let key = generate().unwrap();
    let (mut a, mut b) = pair(&key, &key, "pop1", "pop1", 7, 7, |b| b);
    a.wait_for(Duration::from_secs(5), "b up", is_up("b"));
    b.wait_for(Duration::from_secs(5), "a up", is_up("a"));
    // b's sockets close (as the kernel closes them when its process is killed).
    let ended = Instant::now();
    drop(b);
    let (at, ev) = a.wait_for(Duration::from_secs(2), "b down", |e| {
        down_cause(e).is_some()
    });
    let took = at.duration_since(ended);
    println!(
        "peer b closed; a saw it after {} µs: {ev:?}",
        took.as_micros()
    );
    assert!(
        matches!(&ev, Event::LinkDown { peer: Some(p), was_up: true, cause: DownCause::ClosedByPeer, .. } if p == "b"),
        "{ev:?}"
    );
    // No timer is involved: the time is b's thread noticing its stop flag (≤ 5 ms) plus a's
    // next turn; 100 ms leaves room for a loaded machine and is half the 200 ms takeover target.
    assert!(took < Duration::from_millis(100), "took {took:?}");
}

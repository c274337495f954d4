//! The pipeline end to end with real change rings and a lease table in a tempdir, the on-disk
//! spool and the JSON-lines file, and a std `TcpListener` on 127.0.0.1 as the syslog collector
//! (reading the RFC 6587 octet-counted frames the trail's TCP sender writes).

use std::collections::BTreeSet;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use prodhcp_config::audit::{Audit, AuditHost, AuditTarget, Endpoint, MIN_SPOOL_MAX_BYTES};
use shm_layout::{
    worker_owner, ChangeReason, ClientKey, ConsumerState, LayoutSpec, LeaseState, RangeSpec,
    RecordInput, Ring, SlotImage, Table,
};

use super::{Trail, TrailRing, AUDIT_CONSUMER};
use crate::event::{ApplianceEvent, AuditEvent, EventKind, Origin};
use crate::jsonl;
use crate::transport::Sender;

/// First address of the table: 198.18.0.0/24, one slot per address.
const FIRST: u32 = 0xc612_0000;
/// Unix ms of the records (2025-12-02T03:00:00Z).
const T0: u64 = 1_764_644_400_000;

/// A table and two worker rings in a tempdir.
struct Fixture {
    dir: tempfile::TempDir,
    table: Table,
    rings: Vec<Ring>,
}

fn fixture(capacity: u64) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let spec = LayoutSpec {
        ranges: vec![RangeSpec {
            first: FIRST,
            last: FIRST + 255,
            in_pool: true,
        }],
    };
    let table = Table::create(&dir.path().join("leases.table"), &spec).unwrap();
    let rings = (0..2)
        .map(|w| {
            let owner = worker_owner(w);
            Ring::open_or_create(&dir.path().join(format!("ring-{owner}")), owner, capacity)
                .unwrap()
        })
        .collect();
    Fixture { dir, table, rings }
}

impl Fixture {
    fn spool_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("spool")
    }

    fn file(&self) -> std::path::PathBuf {
        self.dir.path().join("log").join("audit.jsonl")
    }

    /// The audit section: a TCP target on `port` (if any), the JSON-lines file, the spool.
    fn audit(&self, port: Option<u16>) -> Audit {
        Audit {
            targets: port
                .map(|p| AuditTarget::Tcp(local(p)))
                .into_iter()
                .collect(),
            file: Some(self.file()),
            spool_dir: self.spool_dir(),
            spool_max_bytes: 1 << 30,
            offers: false,
            audit_strict: false,
            tls: None,
        }
    }

    fn open(&self, audit: &Audit) -> Trail<'_> {
        let rings = self
            .rings
            .iter()
            .map(|ring| TrailRing { ring, worker: true })
            .collect();
        let senders = audit.targets.iter().map(|t| Sender::new(t, None)).collect();
        let origin = Origin {
            server: "audit-test".into(),
            node: "n1".into(),
            seq: 0,
        };
        Trail::open(audit, rings, &self.table, origin, senders).unwrap()
    }

    /// The JSON-lines file's events, in file order.
    fn lines(&self) -> Vec<AuditEvent> {
        read_lines(&self.file())
    }

    /// The audit consumer's (state, cursor) on ring `i`.
    fn audit_cursor(&self, i: usize) -> (ConsumerState, u64) {
        let c = self.rings[i]
            .consumers()
            .into_iter()
            .find(|c| c.id == AUDIT_CONSUMER)
            .expect("the audit consumer is registered");
        (c.state, c.cursor)
    }
}

fn read_lines(path: &Path) -> Vec<AuditEvent> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| jsonl::from_line(l).unwrap_or_else(|e| panic!("line {l:?}: {e}")))
        .collect()
}

fn local(port: u16) -> Endpoint {
    Endpoint {
        host: AuditHost::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        port,
    }
}

/// A loopback port nothing listens on (bound, then closed).
fn dead_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// The hardware address of record `n` of ring `ring`: unique per (ring, n).
fn mac_bytes(ring: usize, n: u32) -> [u8; 6] {
    let b = n.to_be_bytes();
    [2, ring as u8, b[0], b[1], b[2], b[3]]
}

fn mac_text(ring: usize, n: u32) -> String {
    mac_bytes(ring, n)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Appends record `n` to ring `ring` of `f`: slot `n % 256`, a lease of a client whose
/// hardware address is [`mac_bytes`]. Returns the ring seq.
fn push(f: &Fixture, ring: usize, n: u32, reason: ChangeReason) -> u64 {
    let mac = mac_bytes(ring, n);
    let mut image = SlotImage {
        version: u64::from(n) + 1,
        state: if reason == ChangeReason::Offer {
            LeaseState::Offered
        } else {
            LeaseState::Leased
        },
        expires: 1_764_648_000,
        updated: 1_764_644_400,
        key: ClientKey::from_hwaddr(1, &mac),
        ..SlotImage::PRISTINE
    };
    image.set_hwaddr(1, &mac);
    f.rings[ring]
        .append(&RecordInput {
            slot: n % 256,
            reason,
            time_ms: T0 + u64::from(n),
            epoch: 1,
            image: &image,
            context: b"",
        })
        .unwrap()
}

/// Appends commits `from..to` to ring `ring`; returns their hardware addresses.
fn push_commits(f: &Fixture, ring: usize, from: u32, to: u32) -> Vec<String> {
    (from..to)
        .map(|n| {
            push(f, ring, n, ChangeReason::Commit);
            mac_text(ring, n)
        })
        .collect()
}

/// A collector: accepts connections one after another and parses their octet-counted frames.
struct Collector {
    frames: Arc<Mutex<Vec<String>>>,
    connections: Arc<Mutex<u64>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Collector {
    fn start(listener: TcpListener) -> Collector {
        listener.set_nonblocking(true).unwrap();
        let frames = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(Mutex::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (fr, co, st) = (frames.clone(), connections.clone(), stop.clone());
        let thread = thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut conn, _)) => {
                        *co.lock().unwrap() += 1;
                        conn.set_nonblocking(false).unwrap();
                        conn.set_read_timeout(Some(Duration::from_millis(20)))
                            .unwrap();
                        read_frames(&mut conn, &fr, &st);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(5));
                    }
                    Err(e) => panic!("accept: {e}"),
                }
            }
        });
        Collector {
            frames,
            connections,
            stop,
            thread: Some(thread),
        }
    }

    fn count(&self) -> usize {
        self.frames.lock().unwrap().len()
    }

    fn frames(&self) -> Vec<String> {
        self.frames.lock().unwrap().clone()
    }

    fn connections(&self) -> u64 {
        *self.connections.lock().unwrap()
    }

    /// Stops the thread (a frame it could not parse panics it: reported here) and returns
    /// every frame received.
    fn finish(mut self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("collector thread");
        }
        self.frames()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads `LEN SP MSG` frames (RFC 6587 octet counting) from `conn` until EOF or `stop`.
fn read_frames(conn: &mut std::net::TcpStream, out: &Mutex<Vec<String>>, stop: &AtomicBool) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        while let Some(sp) = buf.iter().position(|&b| b == b' ') {
            let digits = std::str::from_utf8(&buf[..sp]).expect("frame length is ASCII");
            let len: usize = digits
                .parse()
                .unwrap_or_else(|_| panic!("bad frame length {digits:?}"));
            if buf.len() < sp + 1 + len {
                break;
            }
            let msg = String::from_utf8(buf[sp + 1..sp + 1 + len].to_vec()).expect("UTF-8");
            buf.drain(..sp + 1 + len);
            out.lock().unwrap().push(msg);
        }
        match conn.read(&mut chunk) {
            Ok(0) => {
                assert!(buf.is_empty(), "connection closed inside a frame");
                return;
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}

/// The value of structured-data parameter `name` in an RFC 5424 message.
fn param<'m>(msg: &'m str, name: &str) -> Option<&'m str> {
    let key = format!(" {name}=\"");
    let start = msg.find(&key)? + key.len();
    let end = start + msg[start..].find('"')?;
    Some(&msg[start..end])
}

fn seq_of(msg: &str) -> u64 {
    param(msg, "seq")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no seq in {msg:?}"))
}

/// Calls [`Trail::deliver`] until `done(trail)` or `limit`; returns whether `done` became true.
fn deliver_until(
    trail: &mut Trail<'_>,
    limit: Duration,
    mut done: impl FnMut(&Trail<'_>) -> bool,
) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        trail.deliver(Instant::now()).unwrap();
        if done(trail) {
            return true;
        }
        thread::sleep(Duration::from_millis(2));
    }
    false
}

/// Seqs are exactly `1..=n`, in order.
fn assert_seqs(seqs: &[u64], n: u64, what: &str) {
    let want: Vec<u64> = (1..=n).collect();
    assert_eq!(
        seqs,
        want.as_slice(),
        "{what}: seqs 1..={n}, each once, in order"
    );
}

#[test]
fn ingest_and_deliver_every_record_once_with_seqs_from_one() {
    let f = fixture(1024);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let collector = Collector::start(listener);
    let audit = f.audit(Some(port));
    let mut trail = f.open(&audit);
    assert_eq!(trail.last_seq(), 0);

    // Ring 0: commits with offers among them; ring 1: commits, a renew, a release.
    let mut want: Vec<String> = Vec::new();
    for n in 0..30 {
        if n % 3 == 0 {
            push(&f, 0, 1000 + n, ChangeReason::Offer);
        }
        push(&f, 0, n, ChangeReason::Commit);
        want.push(mac_text(0, n));
    }
    want.extend(push_commits(&f, 1, 0, 25));
    push(&f, 1, 25, ChangeReason::Renew);
    push(&f, 1, 26, ChangeReason::Release);
    // Bookkeeping, never audited.
    push(&f, 1, 27, ChangeReason::Recovery);
    want.push(mac_text(1, 25));
    want.push(mac_text(1, 26));
    let n = want.len() as u64;

    let read = trail.ingest().unwrap();
    assert_eq!(read, 40 + 28, "every ring record is read, audited or not");
    assert_eq!(trail.last_seq(), n);
    assert_eq!(trail.report().events, n);
    for i in 0..2 {
        assert_eq!(
            f.audit_cursor(i),
            (ConsumerState::Registered, f.rings[i].head()),
            "ring {i}: the audit cursor is at the head"
        );
    }
    assert_eq!(trail.ring_lag(), 0);
    // Nothing new: nothing read.
    assert_eq!(trail.ingest().unwrap(), 0);

    // The JSON-lines file: seqs 1..=n, the offers and the recovery left out.
    let lines = f.lines();
    let seqs: Vec<u64> = lines.iter().map(|e| e.seq).collect();
    assert_seqs(&seqs, n, "file");
    let macs: Vec<String> = lines.iter().map(|e| e.mac.clone().unwrap()).collect();
    assert_eq!(macs, want, "file: every audited record once, ring by ring");
    assert!(lines.iter().all(|e| e.kind != EventKind::Offer));
    assert_eq!(lines[0].kind, EventKind::Commit);
    assert_eq!(lines[0].ip, Some(Ipv4Addr::from(FIRST)));
    assert_eq!(lines[n as usize - 2].kind, EventKind::Renew);
    assert_eq!(lines[n as usize - 1].kind, EventKind::Release);
    assert_eq!(lines[n as usize - 1].ip, Some(Ipv4Addr::from(FIRST + 26)));

    // The collector gets them all, then the report says so.
    assert!(
        deliver_until(&mut trail, Duration::from_secs(10), |_| collector.count()
            >= n as usize),
        "delivered {} of {n}",
        collector.count()
    );
    assert!(deliver_until(&mut trail, Duration::from_secs(5), |t| {
        let r = t.report();
        r.targets[0].acked_seq == n
    }));
    let r = trail.report();
    assert_eq!(r.targets.len(), 1);
    assert!(r.targets[0].connected && r.targets[0].reliable);
    assert_eq!((r.targets[0].lag_records, r.targets[0].resent), (0, 0));
    assert_eq!((r.lost_records, r.ring_records_lost), (0, 0));
    drop(trail);
    let frames = collector.finish();
    let seqs: Vec<u64> = frames.iter().map(|m| seq_of(m)).collect();
    assert_seqs(&seqs, n, "collector");
    for (m, ev) in frames.iter().zip(&lines) {
        assert_eq!(param(m, "mac"), ev.mac.as_deref(), "{m}");
        assert_eq!(param(m, "event"), Some(ev.kind.name()), "{m}");
        assert_eq!(param(m, "ip"), ev.ip.map(|a| a.to_string()).as_deref());
        assert_eq!(param(m, "server"), Some("audit-test"));
        assert_eq!(param(m, "node"), Some("n1"));
    }
}

#[test]
fn offers_are_events_only_with_offers_true() {
    let f = fixture(1024);
    let mut audit = f.audit(None);
    audit.offers = true;
    let mut trail = f.open(&audit);
    push(&f, 0, 1, ChangeReason::Offer);
    push(&f, 0, 1, ChangeReason::Commit);
    push(&f, 1, 2, ChangeReason::Offer);
    push(&f, 1, 2, ChangeReason::OfferExpire);
    assert_eq!(trail.ingest().unwrap(), 4);
    let kinds: Vec<EventKind> = f.lines().iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            EventKind::Offer,
            EventKind::Commit,
            EventKind::Offer,
            EventKind::OfferExpire
        ]
    );
    assert_eq!(trail.last_seq(), 4);
}

#[test]
fn a_crash_between_spool_and_cursor_numbers_nothing_twice() {
    let f = fixture(1024);
    let audit = f.audit(None);
    let mut want = Vec::new();
    {
        let mut trail = f.open(&audit);
        want.extend(push_commits(&f, 0, 0, 10));
        want.extend(push_commits(&f, 1, 0, 10));
        assert_eq!(trail.ingest().unwrap(), 20);
        assert_eq!(trail.last_seq(), 20);
        // The crash: the spool and the file have the records, the cursors were not advanced
        // (ring 0's only in part).
        f.rings[0].advance_consumer(AUDIT_CONSUMER, 3).unwrap();
        f.rings[1].advance_consumer(AUDIT_CONSUMER, 0).unwrap();
    }
    // Written while the audit process was down.
    want.extend(push_commits(&f, 0, 10, 15));

    let mut trail = f.open(&audit);
    assert_eq!(trail.last_seq(), 20, "the spool's last seq");
    assert_eq!(
        f.audit_cursor(0),
        (ConsumerState::Registered, 10),
        "ring 0: the spooled records are skipped at open"
    );
    assert_eq!(f.audit_cursor(1), (ConsumerState::Registered, 10));
    assert_eq!(trail.ingest().unwrap(), 5, "only the new records are read");
    assert_eq!(trail.last_seq(), 25);
    assert_eq!(trail.report().events, 5);

    let lines = f.lines();
    let seqs: Vec<u64> = lines.iter().map(|e| e.seq).collect();
    assert_seqs(&seqs, 25, "file");
    let macs: Vec<String> = lines.iter().map(|e| e.mac.clone().unwrap()).collect();
    assert_eq!(macs, want, "no record twice, none missing");
}

#[test]
fn a_restart_keeps_numbering_and_does_not_resend_what_was_acknowledged() {
    let f = fixture(1024);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let collector = Collector::start(listener);
    let audit = f.audit(Some(port));
    {
        let mut trail = f.open(&audit);
        trail
            .appliance(&ApplianceEvent::Start, T0)
            .expect("start event");
        push_commits(&f, 0, 0, 5);
        push_commits(&f, 1, 0, 2);
        assert_eq!(trail.ingest().unwrap(), 7);
        assert_eq!(trail.last_seq(), 8);
        assert!(deliver_until(&mut trail, Duration::from_secs(10), |_| {
            collector.count() == 8
        }));
        assert!(deliver_until(&mut trail, Duration::from_secs(5), |t| {
            t.report().targets[0].acked_seq == 8
        }));
        trail
            .appliance(&ApplianceEvent::Stop, T0 + 10)
            .expect("stop event");
        // The Stop is not delivered before the stop: it waits in the spool.
        trail.store_state().unwrap();
    }
    let mut trail = f.open(&audit);
    assert_eq!(trail.last_seq(), 9);
    trail
        .appliance(&ApplianceEvent::Reload { generation: 7 }, T0 + 20)
        .unwrap();
    assert_eq!(
        trail.last_seq(),
        10,
        "the first event after a restart is last + 1"
    );
    assert_eq!(
        trail.report().resent_at_start,
        1,
        "only the Stop was not acknowledged"
    );
    assert!(deliver_until(&mut trail, Duration::from_secs(10), |_| {
        collector.count() == 10
    }));
    assert!(deliver_until(&mut trail, Duration::from_secs(5), |t| {
        t.report().targets[0].acked_seq == 10
    }));
    drop(trail);
    // A third start numbers on from the state even with every entry acknowledged.
    let trail = f.open(&audit);
    assert_eq!(trail.last_seq(), 10);
    drop(trail);
    assert_eq!(collector.connections(), 2);
    let frames = collector.finish();
    let seqs: Vec<u64> = frames.iter().map(|m| seq_of(m)).collect();
    assert_seqs(&seqs, 10, "collector");
    assert_eq!(param(&frames[0], "event"), Some("start"));
    assert_eq!(param(&frames[8], "event"), Some("stop"));
    assert_eq!(param(&frames[9], "event"), Some("reload"));
    assert_eq!(param(&frames[9], "generation"), Some("7"));
    let lines = f.lines();
    let seqs: Vec<u64> = lines.iter().map(|e| e.seq).collect();
    assert_seqs(&seqs, 10, "file");
}

/// Ingests until a call reads nothing (at most 100 calls); the records read in all.
fn ingest_all(trail: &mut Trail<'_>) -> u64 {
    let mut read = 0;
    for _ in 0..100 {
        match trail.ingest().unwrap() {
            0 => break,
            n => read += n,
        }
    }
    read
}

#[test]
fn a_full_spool_without_strict_loses_the_oldest_counted_and_goes_on() {
    let f = fixture(4096);
    let port = dead_port();
    let mut audit = f.audit(Some(port));
    audit.spool_max_bytes = MIN_SPOOL_MAX_BYTES;
    let mut trail = f.open(&audit);
    let mut total = 0u64;
    let mut n = 0;
    while trail.report().lost_records == 0 && n < 40_000 {
        for ring in 0..2 {
            push_commits(&f, ring, n, n + 1000);
        }
        n += 1000;
        total += 2000;
        // A batch is at most a quarter of the spool: several ingests read the 2000.
        assert_eq!(ingest_all(&mut trail), 2000);
        trail.deliver(Instant::now()).unwrap();
        assert_eq!(trail.ring_lag(), 0, "the rings are drained");
        assert!(!trail.blocking());
    }
    // And a round more after the first loss: ingest keeps going.
    for ring in 0..2 {
        push_commits(&f, ring, n, n + 1000);
    }
    total += 2000;
    assert_eq!(ingest_all(&mut trail), 2000);
    let r = trail.report();
    assert!(r.lost_records > 0, "{r:?}");
    assert_eq!(r.last_seq, total, "every record was numbered");
    assert_eq!(r.ring_lag_records, 0);
    assert!(r.spool_bytes <= MIN_SPOOL_MAX_BYTES, "{r:?}");
    assert!(!r.strict_blocking);
    assert_eq!(
        r.targets[0].acked_seq, 0,
        "no collector: nothing acknowledged"
    );
    assert!(!r.targets[0].connected);
    // The ranges name the oldest seqs, contiguous from 1, and the spool starts after them.
    assert_eq!(r.lost_ranges[0].0, 1, "{:?}", r.lost_ranges);
    let mut next = 1;
    for &(first, last) in &r.lost_ranges {
        assert_eq!(first, next, "{:?}", r.lost_ranges);
        assert!(last >= first);
        next = last + 1;
    }
    assert_eq!(r.lost_records, next - 1);
    assert_eq!(r.spool_first_seq, Some(next));
    // The file is not the spool: it has every event.
    let lines = f.lines();
    assert_eq!(lines.len() as u64, total);
    // The collector comes back: it gets what the spool still holds, from after the loss to
    // the end, each once; the gap at the start is the counted loss.
    let collector = Collector::start(TcpListener::bind(("127.0.0.1", port)).unwrap());
    let want = (total - next + 1) as usize;
    assert!(
        deliver_until(&mut trail, Duration::from_secs(20), |_| collector.count()
            >= want),
        "delivered {} of {want}",
        collector.count()
    );
    assert!(deliver_until(&mut trail, Duration::from_secs(5), |t| {
        t.report().targets[0].acked_seq == total
    }));
    drop(trail);
    let frames = collector.finish();
    let seqs: Vec<u64> = frames.iter().map(|m| seq_of(m)).collect();
    assert_eq!(seqs, (next..=total).collect::<Vec<_>>());
    // The loss is in the state file.
    let trail = f.open(&audit);
    let again = trail.report();
    assert_eq!(
        (again.lost_records, again.lost_ranges.clone()),
        (r.lost_records, r.lost_ranges.clone())
    );
    assert_eq!(again.last_seq, total);
}

#[test]
fn a_full_spool_with_strict_blocks_the_workers_until_the_collector_takes_records() {
    let f = fixture(8192);
    let port = dead_port();
    let mut audit = f.audit(Some(port));
    audit.spool_max_bytes = MIN_SPOOL_MAX_BYTES;
    audit.audit_strict = true;
    let mut trail = f.open(&audit);
    let mut n = 0;
    let mut pushed = 0u64;
    while !trail.blocking() && n < 20_000 {
        for ring in 0..2 {
            push_commits(&f, ring, n, n + 1000);
        }
        n += 1000;
        pushed += 2000;
        trail.ingest().unwrap();
        trail.deliver(Instant::now()).unwrap();
    }
    assert!(trail.blocking(), "the spool never filled");
    for ring in &f.rings {
        assert!(
            ring.audit_blocked(),
            "ring {}: the audit block is set",
            ring.owner()
        );
    }
    let r = trail.report();
    assert!(r.strict_blocking);
    assert_eq!(r.lost_records, 0, "strict: nothing is dropped");
    assert!(r.spool_bytes <= MIN_SPOOL_MAX_BYTES);
    // The rings are not drained while blocked.
    let lag = trail.ring_lag();
    assert!(lag > 0);
    assert_eq!(
        lag + trail.last_seq(),
        pushed,
        "every record is numbered or in a ring"
    );
    push_commits(&f, 0, n, n + 10);
    pushed += 10;
    let cursors = [f.audit_cursor(0), f.audit_cursor(1)];
    assert_eq!(trail.ingest().unwrap(), 0);
    assert_eq!([f.audit_cursor(0), f.audit_cursor(1)], cursors);
    assert_eq!(trail.ring_lag(), lag + 10);
    assert!(trail.blocking());

    // The collector appears; everything spooled is sent, acknowledged, settles, is trimmed,
    // and a later ingest lifts the block.
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let collector = Collector::start(listener);
    let spooled = trail.last_seq();
    assert!(
        deliver_until(&mut trail, Duration::from_secs(20), |_| collector.count()
            >= spooled as usize),
        "delivered {} of {spooled}",
        collector.count()
    );
    assert!(deliver_until(&mut trail, Duration::from_secs(5), |t| {
        t.report().targets[0].acked_seq == spooled
    }));
    // Trimmed once acknowledged more than SETTLE (2 s) ago.
    let full = trail.report().spool_bytes;
    assert!(deliver_until(&mut trail, Duration::from_secs(10), |t| {
        t.report().spool_bytes < full / 2
    }));
    assert!(
        trail.blocking(),
        "the block is lifted by ingest, not by deliver"
    );
    assert!(trail.ingest().unwrap() > 0);
    assert!(!trail.blocking());
    for ring in &f.rings {
        assert!(
            !ring.audit_blocked(),
            "ring {}: the block is cleared",
            ring.owner()
        );
    }
    // The rest drains and is delivered.
    let t0 = Instant::now();
    while (trail.ring_lag() > 0 || collector.count() < pushed as usize)
        && t0.elapsed() < Duration::from_secs(20)
    {
        trail.ingest().unwrap();
        trail.deliver(Instant::now()).unwrap();
        thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(trail.ring_lag(), 0);
    assert_eq!(trail.last_seq(), pushed, "every record has a seq");
    assert_eq!(trail.report().lost_records, 0);
    drop(trail);
    let frames = collector.finish();
    let seqs: Vec<u64> = frames.iter().map(|m| seq_of(m)).collect();
    assert_seqs(&seqs, pushed, "collector");
    let macs: BTreeSet<&str> = frames.iter().filter_map(|m| param(m, "mac")).collect();
    assert_eq!(macs.len() as u64, pushed, "every record once");
}

#[test]
fn an_evicted_reader_counts_the_ring_records_lost_and_goes_on() {
    let f = fixture(64);
    let audit = f.audit(None);
    {
        let mut trail = f.open(&audit);
        // 100 records into a ring of 64 with the trail not reading: evicted at the 65th.
        push_commits(&f, 0, 0, 100);
        assert_eq!(f.audit_cursor(0), (ConsumerState::Evicted, 0));
        assert_eq!(trail.ingest().unwrap(), 0);
        assert_eq!(trail.report().ring_records_lost, 100);
        assert_eq!(f.audit_cursor(0), (ConsumerState::Registered, 100));
        let want = push_commits(&f, 0, 100, 110);
        assert_eq!(trail.ingest().unwrap(), 10);
        assert_eq!(trail.last_seq(), 10, "lost ring records take no seqs");
        let macs: Vec<String> = f.lines().iter().map(|e| e.mac.clone().unwrap()).collect();
        assert_eq!(macs, want);
    }
    // Evicted while the audit process is down: counted at open.
    push_commits(&f, 0, 110, 200);
    assert_eq!(f.audit_cursor(0), (ConsumerState::Evicted, 110));
    let mut trail = f.open(&audit);
    assert_eq!(trail.report().ring_records_lost, 90);
    assert_eq!(f.audit_cursor(0), (ConsumerState::Registered, 200));
    push_commits(&f, 1, 0, 3);
    assert_eq!(trail.ingest().unwrap(), 3);
    assert_eq!(trail.last_seq(), 13);
}

/// The context of a NAK record as the worker writes it: the client's hardware address and
/// the address it asked for.
fn nak_context(mac: &[u8], asked: Ipv4Addr) -> Vec<u8> {
    use shm_layout::ring_context::{self, ContextFields, RequestState};
    let mut buf = [0u8; shm_layout::ring::CONTEXT_BYTES];
    let n = ring_context::encode(
        &ContextFields {
            request_state: Some(RequestState::Selecting),
            client_hwaddr: Some(mac),
            requested_ip: Some(asked),
            ..ContextFields::default()
        },
        &mut buf,
    );
    buf[..n].to_vec()
}

#[test]
fn nak_records_become_nak_events_with_their_own_address_slot_or_not() {
    let f = fixture(64);
    let audit = f.audit(None);
    let mut trail = f.open(&audit);
    // Slot 5 committed to a client; another client NAKed asking for it (the record's image
    // is the holder's, unchanged); a third NAKed asking for an address outside the table.
    let seq = push(&f, 0, 5, ChangeReason::Commit);
    let holder = f.rings[0].read(seq).expect("the commit").image;
    let asked = Ipv4Addr::from(FIRST + 5);
    let outside = Ipv4Addr::new(192, 0, 2, 7);
    for (slot, image, mac, ip) in [
        (5, holder, mac_bytes(0, 1000), asked),
        (
            shm_layout::NO_SLOT,
            SlotImage::PRISTINE,
            mac_bytes(0, 1001),
            outside,
        ),
    ] {
        f.rings[0]
            .append(&RecordInput {
                slot,
                reason: ChangeReason::Nak,
                time_ms: T0 + 10,
                epoch: 1,
                image: &image,
                context: &nak_context(&mac, ip),
            })
            .unwrap();
    }
    assert_eq!(trail.ingest().unwrap(), 3);
    assert_eq!(trail.last_seq(), 3);
    let got: Vec<(EventKind, Option<Ipv4Addr>, Option<String>)> = f
        .lines()
        .into_iter()
        .map(|e| (e.kind, e.ip, e.mac))
        .collect();
    assert_eq!(
        got,
        vec![
            (EventKind::Commit, Some(asked), Some(mac_text(0, 5))),
            (EventKind::Nak, Some(asked), Some(mac_text(0, 1000))),
            (EventKind::Nak, Some(outside), Some(mac_text(0, 1001))),
        ]
    );
    assert_eq!(trail.ring_lag(), 0);
}

#[test]
fn a_commit_of_a_reserved_address_is_reservation_used_and_its_renewal_a_renew() {
    let f = fixture(64);
    let audit = f.audit(None);
    let mut trail = f.open(&audit);
    trail.set_reserved([Ipv4Addr::from(FIRST + 7)]);
    push(&f, 0, 6, ChangeReason::Commit);
    push(&f, 0, 7, ChangeReason::Commit);
    push(&f, 0, 7, ChangeReason::Renew);
    assert_eq!(trail.ingest().unwrap(), 3);
    let kinds: Vec<(EventKind, Option<Ipv4Addr>)> =
        f.lines().into_iter().map(|e| (e.kind, e.ip)).collect();
    assert_eq!(
        kinds,
        vec![
            (EventKind::Commit, Some(Ipv4Addr::from(FIRST + 6))),
            (EventKind::ReservationUsed, Some(Ipv4Addr::from(FIRST + 7))),
            (EventKind::Renew, Some(Ipv4Addr::from(FIRST + 7))),
        ]
    );
}

#[test]
fn with_a_sync_interval_cursors_wait_for_the_sync_and_nothing_is_read_twice() {
    let f = fixture(4096);
    let audit = f.audit(None);
    let mut trail = f.open(&audit);
    trail.set_sync_interval(Duration::from_secs(3600));
    // The interval starts at open: no ingest below syncs, so the cursor stays until the sync.
    push_commits(&f, 0, 0, 10);
    assert_eq!(trail.ingest().unwrap(), 10);
    push_commits(&f, 0, 10, 15);
    assert_eq!(
        trail.ingest().unwrap(),
        5,
        "read ahead of the cursor, not again"
    );
    assert_eq!(trail.ingest().unwrap(), 0);
    assert_eq!(f.audit_cursor(0), (ConsumerState::Registered, 0));
    assert_eq!(trail.last_seq(), 15);
    trail.sync_now().unwrap();
    assert_eq!(f.audit_cursor(0), (ConsumerState::Registered, 15));
    let seqs: Vec<u64> = f.lines().iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=15).collect::<Vec<_>>());
}

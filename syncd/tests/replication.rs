//! Replication over real TCP on loopback: two nodes, each a [`Node`] + [`Replicator`] driven by
//! its own thread over its own table and rings in a tempdir; the test writes lease changes into
//! a node's worker ring as a worker would (through its own mapping of the same files) and
//! compares the two tables slot by slot. Every wait is bounded by a deadline.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use prodhcp_syncd::apply::Applier;
use prodhcp_syncd::key::{generate, ClusterKey};
use prodhcp_syncd::replicate::{drive, PeerReplication, PeerSync, Replicator};
use prodhcp_syncd::{Node, NodeConfig};
use shm_layout::{
    worker_owner, ChangeContext, ChangeReason, ClientKey, LayoutSpec, LeaseState, RangeSpec, Ring,
    SlotImage, Table, Writer, IMPORT_OWNER, SUPERVISOR_OWNER, SYNCD_OWNER,
};

const HB: Duration = Duration::from_millis(50);
const DEAD: Duration = Duration::from_millis(300);
const WITHIN: Duration = Duration::from_secs(10);

fn spec() -> LayoutSpec {
    spec_of(1024) // 198.18.0.0/22
}

fn spec_of(slots: u32) -> LayoutSpec {
    LayoutSpec {
        ranges: vec![RangeSpec {
            first: 0xc612_0000,
            last: 0xc612_0000 + slots - 1,
            in_pool: true,
        }],
    }
}

/// One appliance's files: the table and its rings.
struct Files {
    dir: tempfile::TempDir,
    ring_capacity: u64,
}

impl Files {
    fn new(ring_capacity: u64) -> Files {
        Files::with_spec(ring_capacity, &spec())
    }

    fn with_spec(ring_capacity: u64, spec: &LayoutSpec) -> Files {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        Table::create(&dir.path().join("leases.table"), spec).unwrap();
        // Every ring made before any thread opens it (two creators at once would race).
        for owner in [worker_owner(0), SUPERVISOR_OWNER, IMPORT_OWNER, SYNCD_OWNER] {
            open_ring(dir.path(), owner, ring_capacity);
        }
        Files { dir, ring_capacity }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    fn table(&self) -> Table {
        Table::open(&self.dir.path().join("leases.table")).unwrap()
    }

    fn ring(&self, owner: u8) -> Ring {
        open_ring(self.dir.path(), owner, self.ring_capacity)
    }
}

fn open_ring(dir: &Path, owner: u8, cap: u64) -> Ring {
    Ring::open_or_create(&dir.join(format!("ring-{owner}.dat")), owner, cap).unwrap()
}

/// What the node's thread shows the test.
#[derive(Debug, Clone, Default)]
struct Shown {
    peer: Option<PeerReplication>,
    holding: bool,
}

/// A node and its replicator driven by a thread.
struct Running {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    paused: Arc<AtomicBool>,
    /// Set by the thread while it stands still.
    standing: Arc<AtomicBool>,
    shown: Arc<Mutex<Shown>>,
    thread: Option<JoinHandle<()>>,
}

fn config(
    node: &str,
    listen: SocketAddr,
    peer: (&str, SocketAddr),
    key: &ClusterKey,
) -> NodeConfig {
    NodeConfig {
        cluster: "pop1".into(),
        node: node.into(),
        listen,
        peers: vec![(peer.0.into(), peer.1)],
        key: key.clone(),
        heartbeat_interval: HB,
        dead_after: DEAD,
        layout_fingerprint: 7,
    }
}

fn start(files: &Files, config: NodeConfig, sync: bool) -> Running {
    let peer = config.peers[0].0.clone();
    let node = Node::bind(config).unwrap();
    let addr = node.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let paused = Arc::new(AtomicBool::new(false));
    let standing = Arc::new(AtomicBool::new(false));
    let shown = Arc::new(Mutex::new(Shown::default()));
    let dir = files.path();
    let cap = files.ring_capacity;
    let thread = {
        let (stop, paused, shown, standing) = (
            stop.clone(),
            paused.clone(),
            shown.clone(),
            standing.clone(),
        );
        std::thread::spawn(move || {
            let mut node = node;
            let table = Table::open(&dir.join("leases.table")).unwrap();
            let shipped =
                [worker_owner(0), SUPERVISOR_OWNER, IMPORT_OWNER].map(|o| open_ring(&dir, o, cap));
            let own = open_ring(&dir, SYNCD_OWNER, cap);
            let applier = Applier::new(Writer::new(&table, SYNCD_OWNER, &own), BTreeMap::new());
            let mut rep = Replicator::new(
                &table,
                shipped.iter().collect(),
                applier,
                std::slice::from_ref(&peer),
                sync,
            );
            while !stop.load(Ordering::Relaxed) {
                if paused.load(Ordering::SeqCst) {
                    standing.store(true, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
                standing.store(false, Ordering::SeqCst);
                drive(&mut node, &mut rep, Duration::from_millis(2)).unwrap();
                *shown.lock().unwrap() = Shown {
                    peer: rep.status(&peer),
                    holding: rep.holding(),
                };
            }
            node.close_all();
            while let Some(e) = node.next_event() {
                rep.on_event(&mut node, &e);
            }
        })
    };
    Running {
        addr,
        stop,
        paused,
        standing,
        shown,
        thread: Some(thread),
    }
}

impl Running {
    fn shown(&self) -> Shown {
        self.shown.lock().unwrap().clone()
    }

    #[track_caller]
    fn wait(&self, what: &str, check: impl Fn(&Shown) -> bool) {
        let deadline = Instant::now() + WITHIN;
        while Instant::now() < deadline {
            if check(&self.shown()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        panic!("never {what}: {:?}", self.shown());
    }

    /// Freezes (or thaws) the node's thread; returns once it stands still (a frozen process:
    /// its sockets stay open and silent).
    fn pause(&self, on: bool) {
        self.paused.store(on, Ordering::SeqCst);
        if on {
            let deadline = Instant::now() + WITHIN;
            while !self.standing.load(Ordering::SeqCst) {
                assert!(Instant::now() < deadline, "the node thread never paused");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
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

/// A pair: `a` dials `b` (its name sorts lower).
struct Pair {
    key: ClusterKey,
    fa: Files,
    fb: Files,
    a: Running,
    b: Running,
}

fn pair(ring_capacity: u64, sync: bool) -> Pair {
    let key = generate().unwrap();
    let fa = Files::new(ring_capacity);
    let fb = Files::new(ring_capacity);
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    // b never dials a, so its peer address does not matter.
    let b = start(
        &fb,
        config("b", any, ("a", "127.0.0.1:9".parse().unwrap()), &key),
        sync,
    );
    let a = start(&fa, config("a", any, ("b", b.addr), &key), sync);
    Pair { key, fa, fb, a, b }
}

impl Pair {
    /// Stops b's thread (its sockets close) and starts it again on the same port and files.
    fn restart_b(&mut self, sync: bool) {
        let addr = self.b.addr;
        self.b.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.b.thread.take() {
            t.join().unwrap();
        }
        self.b = start(
            &self.fb,
            config("b", addr, ("a", "127.0.0.1:9".parse().unwrap()), &self.key),
            sync,
        );
    }
}

fn client(n: u32) -> ClientKey {
    ClientKey::from_client_id(format!("client-{n}").as_bytes())
}

/// Commits `slot` to `holder` as worker 0 of the appliance whose files are `f`, preceded by
/// its OFFER (which is not replicated).
fn lease(f: &Files, slot: u32, holder: u32) {
    let table = f.table();
    let ring = f.ring(worker_owner(0));
    let w = Writer::new(&table, worker_owner(0), &ring);
    let ctx = |reason| ChangeContext {
        reason,
        time_ms: now_ms(),
        context: b"relay",
    };
    let cur = table.read(slot).unwrap();
    let offered = SlotImage {
        state: LeaseState::Offered,
        expires: 2_000_000_000,
        key: client(holder),
        ..cur
    };
    w.update(slot, &cur, &offered, &ctx(ChangeReason::Offer))
        .unwrap();
    let offered = table.read(slot).unwrap();
    let leased = SlotImage {
        state: LeaseState::Leased,
        ..offered
    };
    w.update(slot, &offered, &leased, &ctx(ChangeReason::Commit))
        .unwrap();
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Slots whose images differ.
fn differing(x: &Files, y: &Files) -> Vec<u32> {
    let (a, b) = (x.table(), y.table());
    (0..a.slot_count())
        .filter(|&s| a.read(s).unwrap() != b.read(s).unwrap())
        .collect()
}

#[track_caller]
fn wait_equal(x: &Files, y: &Files) {
    let deadline = Instant::now() + WITHIN;
    loop {
        let d = differing(x, y);
        if d.is_empty() {
            let (a, b) = (x.table(), y.table());
            for s in 0..a.slot_count() {
                assert_eq!(a.is_free(s), b.is_free(s), "free bit of slot {s}");
            }
            assert!(b.check().is_clean());
            return;
        }
        assert!(
            Instant::now() < deadline,
            "tables still differ in {} slots: {:?}",
            d.len(),
            &d[..d.len().min(10)]
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn leased(f: &Files) -> usize {
    let t = f.table();
    (0..t.slot_count())
        .filter(|&s| t.read(s).unwrap().state == LeaseState::Leased)
        .count()
}

#[test]
fn records_reach_the_peer_and_a_broken_link_resumes_from_its_position() {
    let p = pair(4096, true);
    p.a.wait("a sees b in sync", |s| {
        s.peer.is_some_and(|x| x.state == PeerSync::InSync)
    });
    for slot in 0..300 {
        lease(&p.fa, slot, slot);
    }
    wait_equal(&p.fa, &p.fb);
    assert_eq!(leased(&p.fb), 300);
    let ring = p.fa.ring(worker_owner(0));
    p.a.wait("everything replicated", |_| {
        ring.replicated() == ring.head()
    });
    assert_eq!(ring.head(), 600, "300 offers + 300 commits");
    assert!(ring.hold_replies(), "sync replication with b in sync holds");
    let st = p.a.shown().peer.unwrap();
    assert_eq!((st.records_sent, st.bulk_syncs_sent), (300, 0));
    p.b.wait("b counted 300 applied", |s| {
        s.peer
            .is_some_and(|x| (x.applied, x.stale, x.rejected) == (300, 0, 0))
    });

    // b freezes: a declares it dead and releases the hold; more leases meanwhile.
    p.b.pause(true);
    p.a.wait("b down", |s| {
        s.peer.is_some_and(|x| x.state == PeerSync::Down)
    });
    assert!(!ring.hold_replies(), "no peer in sync: no hold");
    for slot in 300..400 {
        lease(&p.fa, slot, slot);
    }
    p.b.pause(false);
    p.a.wait("b in sync again", |s| {
        s.peer.is_some_and(|x| x.state == PeerSync::InSync)
    });
    wait_equal(&p.fa, &p.fb);
    let st = p.a.shown().peer.unwrap();
    assert_eq!(
        st.bulk_syncs_sent, 0,
        "resumed from b's position, no bulk sync"
    );
    assert_eq!(
        st.records_sent, 400,
        "only the 100 new commits were sent again"
    );
    p.a.wait("hold again", |s| s.holding);
    assert!(ring.hold_replies());
}

#[test]
fn a_peer_that_missed_more_than_the_ring_holds_gets_a_bulk_sync() {
    let p = pair(64, true);
    p.a.wait("in sync", |s| {
        s.peer.is_some_and(|x| x.state == PeerSync::InSync)
    });
    for slot in 0..10 {
        lease(&p.fa, slot, slot);
    }
    wait_equal(&p.fa, &p.fb);
    p.b.pause(true);
    p.a.wait("b down", |s| {
        s.peer.is_some_and(|x| x.state == PeerSync::Down)
    });
    // 2 × 200 records: the ring (64) laps b's position many times.
    for slot in 10..210 {
        lease(&p.fa, slot, slot + 1000);
    }
    p.b.pause(false);
    p.a.wait("b in sync after a bulk sync", |s| {
        s.peer
            .is_some_and(|x| x.state == PeerSync::InSync && x.bulk_syncs_sent == 1)
    });
    wait_equal(&p.fa, &p.fb);
    assert_eq!(leased(&p.fb), 210);
    p.b.wait("b counts the bulk sync it received", |s| {
        s.peer.is_some_and(|x| x.bulk_syncs_received == 1)
    });
}

#[test]
fn a_peer_started_later_gets_the_existing_table_by_bulk_sync_and_a_restart_too() {
    let key = generate().unwrap();
    let fa = Files::new(4096);
    let fb = Files::new(4096);
    for slot in 0..500 {
        lease(&fa, slot, slot);
    }
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let b = start(
        &fb,
        config("b", any, ("a", "127.0.0.1:9".parse().unwrap()), &key),
        true,
    );
    let a = start(&fa, config("a", any, ("b", b.addr), &key), true);
    let mut p = Pair { key, fa, fb, a, b };
    p.a.wait("b in sync", |s| {
        s.peer
            .is_some_and(|x| x.state == PeerSync::InSync && x.bulk_syncs_sent == 1)
    });
    wait_equal(&p.fa, &p.fb);
    assert_eq!(leased(&p.fb), 500);
    // Leases after the bulk sync come as records.
    lease(&p.fa, 600, 600);
    wait_equal(&p.fa, &p.fb);
    // A restarted syncd on b has no positions in memory: a second bulk sync, all stale.
    p.restart_b(true);
    p.a.wait("b in sync again", |s| {
        s.peer
            .is_some_and(|x| x.state == PeerSync::InSync && x.bulk_syncs_sent == 2)
    });
    wait_equal(&p.fa, &p.fb);
    p.b.wait("b counted 501 stale, 0 applied", |s| {
        s.peer.is_some_and(|x| (x.applied, x.stale) == (0, 501))
    });
}

#[test]
fn both_sides_writing_during_a_partition_merge_both_ways() {
    let p = pair(4096, true);
    p.a.wait("in sync", |s| {
        s.peer.is_some_and(|x| x.state == PeerSync::InSync)
    });
    p.b.wait("in sync", |s| {
        s.peer.is_some_and(|x| x.state == PeerSync::InSync)
    });
    for slot in 0..20 {
        lease(&p.fa, slot, slot);
    }
    wait_equal(&p.fa, &p.fb);
    // Partition: b frozen (a drops the link), both keep serving other slots.
    p.b.pause(true);
    p.a.wait("b down", |s| {
        s.peer.is_some_and(|x| x.state == PeerSync::Down)
    });
    for slot in 100..150 {
        lease(&p.fa, slot, slot);
    }
    for slot in 200..260 {
        lease(&p.fb, slot, slot + 5000);
    }
    // A slot a changed twice during the partition and b once: a's higher version wins.
    lease(&p.fa, 5, 77);
    lease(&p.fa, 5, 78);
    lease(&p.fb, 5, 99);
    assert_eq!(differing(&p.fa, &p.fb).len(), 50 + 60 + 1);
    p.b.pause(false);
    p.a.wait("b in sync", |s| {
        s.peer.is_some_and(|x| x.state == PeerSync::InSync)
    });
    p.b.wait("a in sync", |s| {
        s.peer.is_some_and(|x| x.state == PeerSync::InSync)
    });
    wait_equal(&p.fa, &p.fb);
    assert_eq!(leased(&p.fa), 20 + 50 + 60);
    assert_eq!(p.fb.table().read(5).unwrap().key, client(78));
}

#[test]
fn replicated_moves_only_after_the_peers_ack_and_the_hold_follows_the_link() {
    let p = pair(4096, true);
    let ring = p.fa.ring(worker_owner(0));
    p.a.wait("in sync and holding", |s| {
        s.holding && s.peer.is_some_and(|x| x.state == PeerSync::InSync)
    });
    assert!(ring.hold_replies());
    lease(&p.fa, 1, 1);
    p.a.wait("replicated", |_| ring.replicated() == 2);
    // b frozen with the link still up: a ships, nothing is acknowledged, nothing published.
    p.b.pause(true);
    lease(&p.fa, 2, 2);
    let t = Instant::now();
    while t.elapsed() < DEAD / 2 {
        assert_eq!(ring.replicated(), 2, "published before b acknowledged");
        assert!(ring.hold_replies());
        std::thread::sleep(Duration::from_millis(5));
    }
    // a declares b dead: the hold goes, replicated stays.
    p.a.wait("b down", |s| {
        !s.holding && s.peer.is_some_and(|x| x.state == PeerSync::Down)
    });
    assert!(!ring.hold_replies());
    assert_eq!(ring.replicated(), 2);
    p.b.pause(false);
    p.a.wait("b back in sync", |s| {
        s.holding && s.peer.is_some_and(|x| x.state == PeerSync::InSync)
    });
    p.a.wait("replicated", |_| ring.replicated() == 4);
    assert!(ring.hold_replies());
    wait_equal(&p.fa, &p.fb);
}

#[test]
fn async_replication_never_holds() {
    let p = pair(4096, false);
    p.a.wait("in sync", |s| {
        s.peer.is_some_and(|x| x.state == PeerSync::InSync)
    });
    lease(&p.fa, 3, 3);
    wait_equal(&p.fa, &p.fb);
    let ring = p.fa.ring(worker_owner(0));
    p.a.wait("replicated", |_| ring.replicated() == 2);
    assert!(!ring.hold_replies());
    assert!(!p.a.shown().holding);
}

/// Bulk sync of 2^20 leases over loopback TCP (Noise, AES-GCM), both nodes in this process:
/// from b's start to a showing b in sync. Run by hand:
/// `cargo test --release -p prodhcp-syncd --test replication measure_bulk_sync -- --ignored --nocapture`
#[test]
#[ignore = "a measurement, run by hand"]
fn measure_bulk_sync() {
    let n: u32 = 1 << 20;
    let key = generate().unwrap();
    let fa = Files::with_spec(1 << 16, &spec_of(n));
    let fb = Files::with_spec(1 << 16, &spec_of(n));
    {
        let table = fa.table();
        let ring = fa.ring(worker_owner(0));
        let w = Writer::new(&table, worker_owner(0), &ring);
        let ctx = ChangeContext {
            reason: ChangeReason::Commit,
            time_ms: now_ms(),
            context: b"relay",
        };
        for slot in 0..n {
            let new = SlotImage {
                state: LeaseState::Leased,
                expires: 2_000_000_000,
                key: client(slot),
                ..SlotImage::PRISTINE
            };
            w.update(slot, &SlotImage::PRISTINE, &new, &ctx).unwrap();
        }
    }
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let t = Instant::now();
    let b = start(
        &fb,
        config("b", any, ("a", "127.0.0.1:9".parse().unwrap()), &key),
        true,
    );
    let a = start(&fa, config("a", any, ("b", b.addr), &key), true);
    let deadline = Instant::now() + Duration::from_secs(600);
    while !a
        .shown()
        .peer
        .is_some_and(|x| x.state == PeerSync::InSync && x.bulk_syncs_sent == 1)
    {
        assert!(Instant::now() < deadline, "no bulk sync: {:?}", a.shown());
        std::thread::sleep(Duration::from_millis(1));
    }
    let took = t.elapsed();
    assert!(differing(&fa, &fb).is_empty());
    println!(
        "bulk sync of {n} leases over loopback: {took:?} ({:.0} leases/s)",
        f64::from(n) / took.as_secs_f64()
    );
}

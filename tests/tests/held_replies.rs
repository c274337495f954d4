//! Issue 8, item 2 (worker side): replies held for synchronous replication.
//!
//! The test plays syncd's part on the worker's ring (`shm_layout::Ring`, mapped from the ring
//! file): it sets the hold, runs DORAs through a relay agent and checks that
//! - the OFFER leaves at once, the ACK does not (within 300 ms) while its lease IS in the
//!   table, and the ACK leaves once the test publishes replicated = head (the worker sees it
//!   on its next loop turn: the delay is printed);
//! - with `max_held_replies: 2`, the third REQUEST needing a hold is dropped and counted
//!   (`held_full`); a replicated position covering the first held ACK sends it alone, and
//!   clearing the hold then drops the other one unsent (`held_dropped`): a held reply leaves
//!   only once replicated, since a cleared hold means its change may exist on this appliance
//!   only;
//! - the supervisor clears a hold left in a ring when it starts;
//! - SIGKILL of syncd (a one-appliance cluster whose peer never answers): the supervisor
//!   clears the hold and rings the worker's doorbell, and the held ACK is dropped, never
//!   sent (`held_dropped`).
//!
//! Every wait polls with a deadline.

use std::net::Ipv4Addr;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use prodhcp_systests::client::{ExchangeError, Extras, Identity, TestClient};
use prodhcp_systests::config::{ServerConfig, SubnetConfig};
use prodhcp_systests::daemon::{total, Daemon};
use prodhcp_systests::packet::{opt, test_mac, MessageType, Reply};
use prodhcp_systests::preflight;
use prodhcp_systests::topo::{Topology, NET1, POOL1, RELAY1_IP, SERVER_IP};
use serde_json::Value;
use shm_layout::Ring;

/// How long an ACK that must be held is waited for (it must not come).
const HELD_FOR: Duration = Duration::from_millis(300);
/// The worker's ring: one worker, owner 1, default capacity.
const RING_FILE: &str = "ring-1.dat";
const RING_CAPACITY: u64 = 65_536;

fn config(t: &Topology, extra: &[&str]) -> ServerConfig {
    let mut cfg = ServerConfig::new(t.lab.dir())
        .subnet(SubnetConfig::new(NET1, POOL1).option("routers", "198.18.1.1"));
    for f in extra {
        cfg = cfg.field(f);
    }
    cfg.workers = 1;
    cfg
}

fn ring(cfg: &ServerConfig) -> Ring {
    Ring::open_or_create(&cfg.state_dir.join(RING_FILE), 1, RING_CAPACITY)
        .expect("open the worker's ring")
}

/// DISCOVER → OFFER (never held), then sends the REQUEST; returns its xid and the address.
#[track_caller]
fn offer_then_request(agent: &TestClient, id: &Identity) -> (u32, Ipv4Addr) {
    let offer = agent.discover(id, &Extras::default()).expect("OFFER");
    assert_eq!(offer.msg_type, Some(MessageType::Offer));
    let server = offer.server_id().expect("server id");
    let ex = Extras {
        extra: vec![
            (opt::REQUESTED_IP, offer.yiaddr.octets().to_vec()),
            (opt::SERVER_ID, server.octets().to_vec()),
        ],
        ..Extras::default()
    };
    let p = agent.build(MessageType::Request, id, &ex);
    agent.send(&p).expect("send REQUEST");
    (p.xid, offer.yiaddr)
}

#[track_caller]
fn assert_no_reply(agent: &TestClient, xid: u32, what: &'static str) {
    match agent.await_xid(xid, what, HELD_FOR) {
        Err(ExchangeError::Timeout { .. }) => {}
        other => panic!("{what}: a reply came while it must be held: {other:?}"),
    }
}

/// Polls `prodhcpctl stats` until `done` holds (≤ 5 s); returns the stats that satisfied it.
#[track_caller]
fn poll_stats(d: &Daemon<'_>, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = d.stats();
        if done(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "{what}: not within 5 s: {s}");
        thread::sleep(Duration::from_millis(20));
    }
}

#[track_caller]
fn ack(agent: &TestClient, xid: u32, what: &'static str) -> Reply {
    let r = agent
        .await_xid(xid, what, Duration::from_secs(3))
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(r.msg_type, Some(MessageType::Ack), "{what}");
    r
}

#[test]
fn an_ack_waits_for_replication_and_the_bound_drops_with_a_count() {
    if !preflight("held_replies", &[]) {
        return;
    }
    let t = Topology::new("held");
    let cfg = config(&t, &["max_held_replies: 2"]);
    let d = Daemon::start(&t.lab, &t.srv, &cfg);
    let ring = ring(&cfg);
    assert!(!ring.hold_replies(), "a fresh ring has no hold");
    let agent = TestClient::relay(&t.rly, RELAY1_IP, SERVER_IP).expect("relay agent socket");

    // Hold set: the ACK waits, its lease is in the table.
    ring.set_hold(true);
    let a = Identity::mac(test_mac(0x48, 1));
    let (xid, addr) = offer_then_request(&agent, &a);
    assert_no_reply(&agent, xid, "ACK to A");
    // No reply yet also when the worker has not read the REQUEST: wait until it is held.
    let s = poll_stats(&d, "A's ACK held", |s| {
        total(s, &["events", "held_replies"]) == 1
    });
    let lease = d.lease(addr).expect("A's lease is in the table");
    assert_eq!(lease["state"], "leased", "{lease}");
    assert_eq!(total(&s, &["events", "held_now"]), 1, "{s}");
    assert!(ring.replicated() < ring.head());

    // syncd's part: replicated up to the head. The worker sees it on its next turn.
    let published = Instant::now();
    ring.publish_replicated(ring.head());
    let r = ack(&agent, xid, "ACK to A after replication");
    assert_eq!(r.yiaddr, addr);
    println!(
        "replicated published → held ACK received: {} µs (no doorbell rung: next loop turn)",
        published.elapsed().as_micros()
    );

    // The bound: two held, the third REQUEST is dropped and counted.
    let ids: Vec<Identity> = (2..=4).map(|n| Identity::mac(test_mac(0x48, n))).collect();
    let mut xids = Vec::new();
    let mut heads = Vec::new();
    for (n, id) in ids.iter().enumerate() {
        let (xid, _) = offer_then_request(&agent, id);
        assert_no_reply(&agent, xid, "ACK while the hold is set");
        xids.push(xid);
        // Held or dropped at the bound: then its commit is in the ring.
        let (held, full) = if n < 2 { (n as u64 + 1, 0) } else { (2, 1) };
        let s = poll_stats(&d, "the REQUEST held or dropped at the bound", |s| {
            total(s, &["events", "held_now"]) + total(s, &["drops", "held_full"]) == held + full
        });
        heads.push(ring.head());
        assert_eq!(total(&s, &["events", "held_now"]), held, "after {n}: {s}");
        assert_eq!(total(&s, &["drops", "held_full"]), full, "after {n}: {s}");
    }
    // Replicated up to B's ACK: B's leaves, C's (recorded later) stays held.
    ring.publish_replicated(heads[0]);
    ack(&agent, xids[0], "ACK to B once replicated");
    poll_stats(&d, "B's ACK released, C's held", |s| {
        total(s, &["events", "held_released"]) == 2 && total(s, &["events", "held_now"]) == 1
    });
    assert_no_reply(&agent, xids[1], "ACK to C (not replicated)");
    // Clearing the hold drops C's ACK, never sends it; the one dropped at the bound never
    // comes either.
    ring.set_hold(false);
    let s = poll_stats(&d, "C's ACK dropped", |s| {
        total(s, &["events", "held_dropped"]) == 1
    });
    assert_eq!(total(&s, &["events", "held_replies"]), 3, "{s}");
    assert_eq!(total(&s, &["events", "held_released"]), 2, "{s}");
    assert_eq!(total(&s, &["events", "held_now"]), 0, "{s}");
    assert_eq!(total(&s, &["drops", "held_full"]), 1, "{s}");
    assert_no_reply(&agent, xids[1], "ACK to C (dropped when the hold cleared)");
    assert_no_reply(&agent, xids[2], "ACK to D (dropped at the bound)");
    // C's lease stays committed in this table (the client retries and is served again).
    let c_lease = d
        .leases_by_mac(&ids[1].mac_string())
        .into_iter()
        .next()
        .expect("C's lease is in the table");
    assert_eq!(c_lease["state"], "leased", "{c_lease}");
    // Without a hold, DORA is as before.
    agent
        .dora(&ids[2], &Extras::default())
        .expect("DORA without a hold");

    // A hold left in the ring is cleared by the next supervisor before its workers start.
    ring.set_hold(true);
    let d = d.restart();
    assert!(
        !ring.hold_replies(),
        "the restarted supervisor left the hold set"
    );
    agent
        .dora(&Identity::mac(test_mac(0x48, 9)), &Extras::default())
        .expect("DORA after the restart");
    assert!(d.stop().is_some_and(|s| s.success()));
}

fn syncd_pid(d: &Daemon<'_>) -> u32 {
    let st = d.ctl_json(&["ha", "status"]);
    st["syncd"]["pid"]
        .as_u64()
        .and_then(|p| u32::try_from(p).ok())
        .unwrap_or_else(|| panic!("no syncd pid in {st}"))
}

#[test]
fn a_killed_syncd_drops_the_held_replies_unsent() {
    if !preflight("held_replies_syncd_killed", &[]) {
        return;
    }
    let t = Topology::new("heldk");
    let key = t.lab.path("cluster.key");
    std::fs::write(&key, format!("{}\n", "5".repeat(64))).expect("key");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    let cluster = cluster_section(&key);
    let cfg = config(&t, &[&cluster]);
    let d = Daemon::start(&t.lab, &t.srv, &cfg);
    let ring = ring(&cfg);
    let deadline = Instant::now() + Duration::from_secs(10);
    let pid = loop {
        let st = d.ctl_json(&["ha", "status"]);
        if st["syncd"]["state"] == "running" {
            break syncd_pid(&d);
        }
        assert!(Instant::now() < deadline, "syncd not running: {st}");
        thread::sleep(Duration::from_millis(20));
    };
    // Its peer never answers: the operator confirms it down, syncd opens the gate.
    let out = d.ctl(&["ha", "partner-down"]);
    assert!(
        out.status.success(),
        "partner-down: {} {}",
        out.stdout,
        out.stderr
    );
    assert_eq!(ring.gate(), shm_layout::Gate::Open);
    let agent = TestClient::relay(&t.rly, RELAY1_IP, SERVER_IP).expect("relay agent socket");
    ring.set_hold(true);
    let id = Identity::mac(test_mac(0x4b, 1));
    let (xid, addr) = offer_then_request(&agent, &id);
    assert_no_reply(&agent, xid, "ACK while syncd runs and the hold is set");
    let before = poll_stats(&d, "the ACK held", |s| {
        total(s, &["events", "held_replies"]) == 1
    });
    assert_eq!(total(&before, &["events", "held_now"]), 1, "{before}");

    let killed = Instant::now();
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).expect("kill syncd");
    // The supervisor clears the hold and rings the doorbell: the worker drops the ACK.
    let s = poll_stats(&d, "held ACK dropped after syncd was killed", |s| {
        total(s, &["events", "held_dropped"]) == 1
    });
    println!(
        "SIGKILL of syncd → held ACK dropped (seen in stats): {} µs",
        killed.elapsed().as_micros()
    );
    assert_eq!(total(&s, &["events", "held_now"]), 0, "{s}");
    assert_eq!(
        total(&s, &["events", "held_released"]),
        total(&before, &["events", "held_released"]),
        "{s}"
    );
    assert_no_reply(
        &agent,
        xid,
        "ACK after syncd was killed (dropped, never sent)",
    );
    assert!(!ring.hold_replies(), "the hold is still set");
    // The lease stays committed here; the client's retry is answered under the new role.
    let lease = d.lease(addr).expect("the lease is in the table");
    assert_eq!(lease["state"], "leased", "{lease}");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let err = d.process().stderr();
        if err.contains("held for synchronous replication") && err.contains("syncd is not running")
        {
            break;
        }
        assert!(Instant::now() < deadline, "no log line:\n{err}");
        thread::sleep(Duration::from_millis(20));
    }
    assert!(d.stop().is_some_and(|s| s.success()));
}

/// A cluster whose one peer never answers (nothing listens at its address).
fn cluster_section(key: &Path) -> String {
    format!(
        "cluster: (name: \"pop1\", node: \"a\", listen: \"{SERVER_IP}:647\", \
         peers: [(node: \"a\", address: \"{SERVER_IP}:647\"), \
                 (node: \"b\", address: \"198.18.0.250:647\")], \
         key_file: \"{}\", replication: \"sync\")",
        key.display()
    )
}

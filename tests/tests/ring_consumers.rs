//! Issue 7, defect 7 (policy half): a stalled change-ring consumer no longer halts DHCP.
//!
//! A consumer registers on the worker's change ring (as syncd or an auditor would) and never
//! reads. More DORAs than the ring holds go through: every one is answered, the producer evicts
//! the consumer when its next record would overwrite one the consumer has not read, the eviction
//! is counted and logged, `prodhcpctl consumers` shows it, the consumer learns it when it tries to
//! advance, and an operator can drop a consumer.

use std::thread;
use std::time::{Duration, Instant};

use prodhcp_systests::client::{Extras, Identity, TestClient};
use prodhcp_systests::config::{ServerConfig, SubnetConfig};
use prodhcp_systests::daemon::Daemon;
use prodhcp_systests::packet::test_mac;
use prodhcp_systests::preflight;
use prodhcp_systests::topo::{Topology, NET1, POOL1, RELAY1_IP, SERVER_IP};
use serde_json::Value;
use shm_layout::Ring;

const CAPACITY: u64 = 1024;
/// The stalled consumer's id on the ring.
const STALLED: usize = 3;

fn worker_ring(d: &Daemon) -> Value {
    let v = d.ctl_json(&["consumers"]);
    v["rings"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["ring"] == "worker-0").cloned())
        .unwrap_or_else(|| panic!("no worker-0 ring in {v}"))
}

#[test]
fn a_stalled_ring_consumer_is_evicted_and_dhcp_keeps_answering() {
    if !preflight("ring_consumer_stalled", &[]) {
        return;
    }
    let t = Topology::new("rcons");
    let mut cfg = ServerConfig::new(t.lab.dir())
        .subnet(SubnetConfig::new(NET1, POOL1).option("routers", "198.18.1.1"))
        .field(&format!("ring_capacity: {CAPACITY}"));
    cfg.workers = 1;
    let d = Daemon::start(&t.lab, &t.srv, &cfg);
    let ring = Ring::open_or_create(&cfg.state_dir.join("ring-1.dat"), 1, CAPACITY)
        .expect("open the worker's ring");
    assert_eq!(ring.capacity(), CAPACITY);
    ring.register_consumer(STALLED).expect("register");
    let r = worker_ring(&d);
    assert_eq!(r["evictions"], 0, "{r}");
    assert_eq!(r["consumers"][0]["id"], STALLED as u64, "{r}");
    assert_eq!(r["consumers"][0]["state"], "registered", "{r}");

    // Each DORA + RELEASE appends three records (offer, commit, release): 450 lap the ring.
    let agent = TestClient::relay(&t.rly, RELAY1_IP, SERVER_IP).expect("relay agent socket");
    let head0 = ring.head();
    for n in 0..450u32 {
        let id = Identity::mac(test_mac(0x6c, n % 50));
        let b = agent
            .dora(&id, &Extras::default())
            .unwrap_or_else(|e| panic!("DORA {n} (ring head {}): {e}", ring.head()));
        agent.release(&id, b.address, b.server_id).expect("RELEASE");
    }
    // The last RELEASE is not answered: wait until the worker recorded it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while ring.head() - head0 < 3 * 450 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    assert!(
        ring.head() - head0 > CAPACITY,
        "the load did not lap the ring: {} records",
        ring.head() - head0
    );
    assert_eq!(ring.evictions(), 1);
    let stats = d.stats();
    assert_eq!(stats["total"]["drops"]["ring_full"], 0, "{stats}");

    let r = worker_ring(&d);
    assert_eq!(r["evictions"], 1, "{r}");
    assert_eq!(r["consumers"][0]["state"], "evicted", "{r}");
    assert!(
        ring.advance_consumer(STALLED, 1).is_err(),
        "an evicted consumer cannot advance"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let err = d.process().stderr();
        if err.contains("ring consumer EVICTED") && err.contains("worker-0") {
            break;
        }
        assert!(Instant::now() < deadline, "no eviction log line:\n{err}");
        thread::sleep(Duration::from_millis(100));
    }
    let (ok, text) = d.ctl_text(&["consumers"]);
    assert!(ok && text.contains("worker-0:3  evicted"), "{text}");

    // The operator can drop consumers: the evicted one, and a registered one.
    ring.register_consumer(5).expect("register");
    for target in ["worker-0:3", "worker-0:5"] {
        let out = d.ctl(&["consumers", "drop", target]);
        assert!(
            out.status.success(),
            "{target}: {} {}",
            out.stdout,
            out.stderr
        );
    }
    let r = worker_ring(&d);
    assert_eq!(r["consumers"], Value::Array(vec![]), "{r}");
    let out = d.ctl(&["consumers", "drop", "worker-0:5"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "dropping a missing consumer fails"
    );
    let out = d.ctl(&["consumers", "drop", "nosuchring:0"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(d.process().is_running(), "{}", d.process().stderr());
    assert!(d.stop().is_some_and(|s| s.success()));
}

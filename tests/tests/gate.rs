//! Issue 8, items 4–5 (worker side): the worker honours the gate in its ring.
//!
//! A real daemon without a cluster (its gates are open, as on a standalone appliance) and a
//! real load generator (`dhcpperf dora`, relayed from the load namespace). The test plays
//! syncd's part: it maps every worker's ring file and sets the gate itself.
//! - **Closed**: no client gets an answer; `prodhcpctl stats` counts every DISCOVER under
//!   `drops.not_active` (and `dropped`), none as an offer.
//! - **Open** again: every client is served.
//! - **Share** {index 0 of 2, since now}: every address handed out is in share 0 (the pool is
//!   one table range, so slot = address − pool start, and share 0 = even slots).
//!
//! Every wait polls with a deadline.

use std::net::Ipv4Addr;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prodhcp_systests::config::{ServerConfig, SubnetConfig};
use prodhcp_systests::daemon::{binary, Daemon};
use prodhcp_systests::preflight;
use prodhcp_systests::topo::{Topology, LOAD_IP, SERVER_IP};
use serde_json::Value;
use shm_layout::{worker_owner, Gate, Ring, Share};

/// The one pool (one table range): slot = address − POOL_START.
const NETWORK: &str = "198.19.0.0/16";
const POOL: &str = "198.19.0.1-198.19.0.254";
const POOL_START: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
/// The daemon's default `ring_capacity`.
const RING_CAPACITY: u64 = 65_536;
const WORKERS: u32 = 2;
/// Clients per dhcpperf run.
const CLIENTS: usize = 20;

fn stats_counter(stats: &Value, group: &str, key: &str) -> u64 {
    let v = if group.is_empty() {
        &stats["total"][key]
    } else {
        &stats["total"][group][key]
    };
    v.as_u64()
        .unwrap_or_else(|| panic!("no {group}.{key} in {stats}"))
}

/// Polls `prodhcpctl stats` until `done` holds (≤ 10 s); returns the stats that satisfied it.
#[track_caller]
fn poll_stats(d: &Daemon<'_>, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = d.stats();
        if done(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "{what}: not within 10 s: {s}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `dhcpperf dora` for `CLIENTS` new clients (MACs 02:SEED:..) from the load namespace
/// as a relay agent; returns the addresses it was ACKed (its `--record` file).
fn dhcpperf(t: &Topology, seed: u8) -> Vec<Ipv4Addr> {
    let record = t.lab.path(&format!("record-{seed}.jsonl"));
    let bin = binary("dhcpperf");
    let (server, relay) = (SERVER_IP.to_string(), LOAD_IP.to_string());
    let (count, seed_s) = (CLIENTS.to_string(), seed.to_string());
    let out = t.lab.run_timeout(
        &t.load,
        &[
            bin.to_str().expect("utf-8 path"),
            "dora",
            "--server",
            &server,
            "--relay-ip",
            &relay,
            "--rate",
            "100",
            "--count",
            &count,
            "--duration",
            "1s",
            "--timeout",
            "1s",
            "--give-up",
            "2s",
            "--hard-deadline",
            "20s",
            "--seed",
            &seed_s,
            "--record",
            record.to_str().expect("utf-8 path"),
            "--json",
        ],
        Duration::from_secs(30),
    );
    // 0: the run completed (losses are in its report); 3: cut short (no answers).
    assert!(
        matches!(out.status.code(), Some(0) | Some(3)),
        "dhcpperf exited {:?}: {}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    acked(&record)
}

/// The addresses ACKed in a dhcpperf record file.
fn acked(record: &Path) -> Vec<Ipv4Addr> {
    let text = std::fs::read_to_string(record).unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str::<Value>(l).expect("record line is JSON"))
        .filter(|v| v["event"] == "ack")
        .map(|v| {
            v["address"]
                .as_str()
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("no address in {v}"))
        })
        .collect()
}

fn slot_of(ip: Ipv4Addr) -> u32 {
    u32::from(ip) - u32::from(POOL_START)
}

fn set_gates(rings: &[Ring], gate: Gate) {
    for r in rings {
        r.set_gate(gate);
    }
}

#[test]
fn the_worker_serves_as_its_gate_says() {
    if !preflight("gate", &[]) {
        return;
    }
    let t = Topology::new("gate");
    let mut cfg = ServerConfig::new(t.lab.dir())
        .subnet(SubnetConfig::new(NETWORK, POOL).relay(&LOAD_IP.to_string()));
    cfg.workers = WORKERS;
    let d = Daemon::start(&t.lab, &t.srv, &cfg);
    let rings: Vec<Ring> = (0..WORKERS as usize)
        .map(|i| {
            let owner = worker_owner(i);
            Ring::open_or_create(
                &cfg.state_dir.join(format!("ring-{owner}.dat")),
                owner,
                RING_CAPACITY,
            )
            .expect("open a worker's ring")
        })
        .collect();
    for r in &rings {
        assert_eq!(r.gate(), Gate::Open, "a standalone appliance serves");
    }

    // Closed: nobody is answered, every DISCOVER counted as not_active.
    set_gates(&rings, Gate::Closed);
    let got = dhcpperf(&t, 1);
    assert!(got.is_empty(), "ACKs while the gate is closed: {got:?}");
    let s = poll_stats(&d, "every DISCOVER counted not_active", |s| {
        stats_counter(s, "drops", "not_active") == CLIENTS as u64
    });
    assert_eq!(stats_counter(&s, "", "received"), CLIENTS as u64, "{s}");
    assert_eq!(stats_counter(&s, "", "dropped"), CLIENTS as u64, "{s}");
    assert_eq!(stats_counter(&s, "", "offer"), 0, "{s}");
    assert_eq!(
        stats_counter(&s, "", "discover"),
        0,
        "not even decoded: {s}"
    );
    println!("closed: {CLIENTS} DISCOVERs, 0 answers, not_active = {CLIENTS}");

    // Open again: served.
    set_gates(&rings, Gate::Open);
    let got = dhcpperf(&t, 2);
    assert_eq!(got.len(), CLIENTS, "every client served once open: {got:?}");
    let s = d.stats();
    assert_eq!(
        stats_counter(&s, "drops", "not_active"),
        CLIENTS as u64,
        "{s}"
    );

    // Serving alone with share 0 of 2: every new address is an even slot.
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as u32;
    set_gates(
        &rings,
        Gate::Share(Share {
            index: 0,
            count: 2,
            since,
        }),
    );
    let got = dhcpperf(&t, 3);
    assert_eq!(
        got.len(),
        CLIENTS,
        "every client served in share 0: {got:?}"
    );
    let odd: Vec<_> = got
        .iter()
        .filter(|a| !slot_of(**a).is_multiple_of(2))
        .collect();
    assert!(
        odd.is_empty(),
        "addresses outside share 0: {odd:?} of {got:?}"
    );
    // The table agrees: the leases of these clients (MACs 02:03:..) are all in share 0.
    let leases: Vec<Value> = d
        .export()
        .into_iter()
        .filter(|l| {
            l["hwaddr"]
                .as_str()
                .is_some_and(|m| m.starts_with("02:03:"))
        })
        .collect();
    assert_eq!(leases.len(), CLIENTS, "{leases:?}");
    for l in &leases {
        let a: Ipv4Addr = l["address"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .expect("address");
        assert_eq!(slot_of(a) % 2, 0, "{l}");
        assert_eq!(l["state"], "leased", "{l}");
    }
    println!(
        "share 0 of 2: {CLIENTS} clients, addresses {:?}",
        got.iter().map(|a| slot_of(*a)).collect::<Vec<_>>()
    );
    set_gates(&rings, Gate::Open);
    assert!(d.stop().is_some_and(|s| s.success()));
}

//! SIGKILL of random workers under load: the supervisor restarts them, and every ACK a
//! client received is in the lease table with that client's MAC; no address is held twice.
//!
//! The background load is `dhcpperf dora --record`: every ACK it received is checked against
//! the export with `dhcpperf verify` (leased to that MAC, no address twice, no client with two
//! addresses), and both the load and the scripted client must get a real amount of ACKs
//! through the kills, not just one.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use prodhcp_systests::client::{Extras, Identity, TestClient};
use prodhcp_systests::config::SubnetConfig;
use prodhcp_systests::daemon::{check_table, worker_field, Daemon};
use prodhcp_systests::packet::test_mac;
use prodhcp_systests::preflight;
use prodhcp_systests::tools::{dhcpperf_verify, spawn_dhcpperf_dora};
use prodhcp_systests::topo::{Topology, LOAD_IP, SERVER_IP};

const KILL_PHASE: Duration = Duration::from_secs(20);
/// New clients per second of the background load.
const LOAD_RATE: u32 = 200;
/// Least share of the load's clients that must be ACKed through the kills. A killed worker is
/// restarted with a growing backoff, so under a kill every 0.3–1 s each of the two workers is
/// down much of the time; the clients steered to a dead worker get their OFFER late (from the
/// queue, after the restart) and dhcpperf, which does not retransmit, counts them as failed.
/// Measured here: 2224 and 2230 of 4400 ACKed.
const MIN_LOAD_ACKED: f64 = 0.25;
/// Least ACKs the scripted client (sequential DORAs, 500 ms timeout) must get in the kill phase.
/// Under a kill every 0.3–1 s the restart backoff (100 ms doubling to 5 s, reset only after
/// 30 s of healthy running) keeps each worker down much of the phase, and a DORA whose MAC is
/// steered to a dead worker costs its timeout: measured here (2026-12-02) 52–70 ACKs in 85–100
/// attempts, with the binaries before and after issue 11 alike. That the workers really come
/// back is checked after the phase ([`AGENT_ACKS_AFTER`]).
const MIN_AGENT_ACKS: usize = 40;
/// DORAs the scripted client makes once the kills stopped and every worker runs again: every
/// one must be ACKed (new MACs, so both workers' shares are used).
const AGENT_ACKS_AFTER: u32 = 50;
/// A second address in the load namespace, mapped to its own subnet, for the scripted client.
const AGENT_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 4);

/// The parent PID of `pid`, from /proc.
fn ppid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn killed_workers_are_restarted_and_no_ack_is_lost() {
    if !preflight("kill_workers", &[]) {
        return;
    }
    let t = Topology::new("killw");
    t.lab.add_address("l", "l0", "198.18.0.4/24");
    let cfg = t.standard_config().subnet(
        SubnetConfig::new("198.18.64.0/18", "198.18.64.1-198.18.127.254").relay("198.18.0.4"),
    );
    let d = Daemon::start(&t.lab, &t.srv, &cfg);
    let mut agent = TestClient::relay(&t.load, AGENT_IP, SERVER_IP).expect("agent socket");
    agent.set_timeout(Duration::from_millis(500));

    let secs = KILL_PHASE.as_secs() as u32 + 2;
    let record = t.lab.path("load-acks.jsonl");
    let load = spawn_dhcpperf_dora(
        &t.lab, &t.load, LOAD_IP, SERVER_IP, LOAD_RATE, secs, 0x4b, &record,
    );

    // The scripted client records every ACK while workers die.
    let stop = Arc::new(AtomicBool::new(false));
    let stop_c = Arc::clone(&stop);
    let recorder = thread::spawn(move || {
        let mut acked: Vec<(String, Ipv4Addr)> = Vec::new();
        let mut n = 0u32;
        while !stop_c.load(Ordering::Relaxed) && n < 100_000 {
            let id = Identity::mac(test_mac(0x60, n));
            // A DORA may fail while the worker its MAC is steered to is dead (timeout);
            // counted, and the share is checked below.
            if let Ok(b) = agent.dora(&id, &Extras::default()) {
                acked.push((id.mac_string(), b.address));
            }
            n += 1;
        }
        (acked, n, agent)
    });

    let daemon_pid = d.pid();
    let t0 = Instant::now();
    let mut kills = 0u32;
    let mut rng = u64::from(std::process::id()) | 1;
    while t0.elapsed() < KILL_PHASE {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        thread::sleep(Duration::from_millis(300 + rng % 700));
        let out = d.ctl(&["status"]);
        let Some(st) = out.json.filter(|_| out.status.success()) else {
            continue;
        };
        let pids: Vec<u32> = worker_field(&st, "pid")
            .iter()
            .filter_map(|p| p.as_u64().and_then(|p| u32::try_from(p).ok()))
            .collect();
        let Some(&victim) = pids.get((rng as usize / 7) % pids.len().max(1)) else {
            continue;
        };
        // Only ever a child of our own daemon.
        if ppid(victim) == Some(daemon_pid)
            && kill(Pid::from_raw(victim as i32), Signal::SIGKILL).is_ok()
        {
            kills += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let (mut acked, attempts, mut agent) = recorder.join().expect("recorder thread");
    let acked_during = acked.len();
    let load_exit = load.wait_timeout(Duration::from_secs(90));
    assert!(kills >= 10, "only {kills} kills happened");
    assert!(
        acked_during >= MIN_AGENT_ACKS,
        "the scripted client got only {acked_during} ACKs in {attempts} attempts"
    );
    // dhcpperf exits 0 when the run completed (losses are in its report), 3 when cut short.
    assert!(
        load_exit.is_some_and(|st| st.code() == Some(0)),
        "dhcpperf ended with {load_exit:?}: {}\n{}",
        load.stdout(),
        load.stderr()
    );

    let st = d
        .wait_ready(Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("workers not all running after the kills: {e}"));
    assert_eq!(d.pid(), daemon_pid);
    let restarts: u64 = worker_field(&st, "restarts")
        .iter()
        .filter_map(|r| r.as_u64())
        .sum();
    assert!(
        restarts > 0,
        "no restarts reported after {kills} kills: {st}"
    );
    // Every worker is back: each of these new clients gets its lease at the first try (the
    // client's default 2 s per reply: a loaded 2-core machine can take longer than the 500 ms
    // the kill phase uses).
    agent.set_timeout(prodhcp_systests::client::DEFAULT_TIMEOUT);
    let mut failed_after = Vec::new();
    for n in 0..AGENT_ACKS_AFTER {
        let id = Identity::mac(test_mac(0x61, n));
        match agent.dora(&id, &Extras::default()) {
            Ok(b) => acked.push((id.mac_string(), b.address)),
            Err(e) => failed_after.push(format!("{}: {e}", id.mac_string())),
        }
    }
    assert!(
        failed_after.is_empty(),
        "after the kills, with every worker running, {} of {AGENT_ACKS_AFTER} DORAs failed: {:?}",
        failed_after.len(),
        failed_after
    );

    let export = d.export();
    // Every ACK the background load received is in the export with its MAC; no address is
    // held twice and no client holds two.
    let (passed, report) = dhcpperf_verify(&record, &export, &t.lab.path("export.json"));
    assert!(passed, "dhcpperf verify after {kills} kills: {report:#}");
    let load_report: serde_json::Value = serde_json::from_str(&load.stdout())
        .unwrap_or_else(|e| panic!("dhcpperf report is not JSON ({e}): {}", load.stdout()));
    let phase = &load_report["phases"][0];
    let load_summary = format!(
        "sent {} new clients, missed {}%, counts {}",
        phase["clients"], phase["missed_pct"], phase["counts"]
    );
    let load_acks = report["acks"].as_u64().expect("verify report: acks");
    let checked = report["checked"].as_u64().expect("verify report: checked");
    let wanted = (f64::from(LOAD_RATE) * f64::from(secs) * MIN_LOAD_ACKED) as u64;
    assert!(
        load_acks >= wanted && checked == report["clients"].as_u64().unwrap_or(0),
        "the load got {load_acks} ACKs (want ≥ {wanted}), {checked} checked: {report}; \
         load: {load_summary}"
    );
    eprintln!(
        "kill_workers: {kills} kills, load ACKs {load_acks} (all {checked} in the export), \
         scripted client {acked_during} ACKs of {attempts} during the kills and \
         {AGENT_ACKS_AFTER} of {AGENT_ACKS_AFTER} after; load: {load_summary}"
    );
    let mut by_addr: HashMap<String, String> = HashMap::new();
    let mut seen = HashSet::new();
    for l in &export {
        let addr = l["address"].as_str().expect("address").to_string();
        assert!(
            seen.insert(addr.clone()),
            "{addr} appears twice in the export"
        );
        by_addr.insert(addr, l["hwaddr"].as_str().unwrap_or("").to_string());
    }
    let lost: Vec<_> = acked
        .iter()
        .filter(|(mac, addr)| by_addr.get(&addr.to_string()) != Some(mac))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} ACKed leases are missing or held by another MAC after {kills} kills: {:?}",
        lost.len(),
        acked.len(),
        lost.iter().take(10).collect::<Vec<_>>()
    );

    // Offline, every slot must pass every invariant: no torn or locked slot, the free bitmap
    // agrees with the states, no client holds two addresses, every holder is indexed.
    let cfg = d.config_path().to_path_buf();
    d.stop();
    let out = check_table(&cfg);
    assert!(
        out.status.success(),
        "table check after {kills} kills failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// RELIABILITY B5: a worker that stops answering (SIGSTOP) is detected by its missing heartbeat,
/// killed and replaced within a few seconds, and the clients steered to it are served again.
#[test]
fn a_stopped_worker_is_detected_and_replaced() {
    if !preflight("stopped_worker", &[]) {
        return;
    }
    let t = Topology::new("stopw");
    let d = Daemon::start(&t.lab, &t.srv, &t.standard_config());
    let before = d.worker_pids();
    assert!(before.len() >= 2, "needs two workers: {before:?}");
    let victim = before[0];
    assert!(kill(Pid::from_raw(victim as i32), Signal::SIGSTOP).is_ok());
    let deadline = Instant::now() + Duration::from_secs(8);
    let replaced = loop {
        let now = d.worker_pids();
        if !now.contains(&victim) && now.len() == before.len() {
            break now;
        }
        assert!(
            Instant::now() < deadline,
            "stopped worker {victim} not replaced: {now:?}"
        );
        thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        replaced[1..],
        before[1..],
        "only the stopped worker was replaced"
    );
    // Every client gets a lease, including those steered to the replaced worker's socket.
    let agent = TestClient::relay(&t.load, LOAD_IP, SERVER_IP).expect("relay agent socket");
    for n in 0..24 {
        let id = Identity {
            mac: test_mac(0x61, n),
            client_id: None,
        };
        agent
            .dora(&id, &Extras::default())
            .unwrap_or_else(|e| panic!("client {n} after the replacement: {e}"));
    }
}

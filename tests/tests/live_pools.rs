//! Pools added and removed by SIGHUP while clients arrive (issue 10): the table's range
//! directory changes in place, no request of the running load is lost, no lease moves.
//!
//! The load's relay maps to 198.19.0.0/16 with two pools: B (500 addresses, lowest, filled
//! first) and A (1,000). `dhcpperf dora` brings 200 new clients a second for 12 s (2,400, more
//! than A and B hold); after 2 s a SIGHUP adds pool C (1,500), after 6 s another removes B,
//! whose 500 leases must stay where they are. At the end: every client ACKed (missed 0 %),
//! `dhcpperf verify` finds every ACKed lease at its address in the export, some leases are in
//! C, B's leases are all still there, and both reloads kept the PID.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use prodhcp_systests::config::{ServerConfig, SubnetConfig};
use prodhcp_systests::daemon::Daemon;
use prodhcp_systests::preflight;
use prodhcp_systests::tools::{dhcpperf_verify, spawn_dhcpperf_dora};
use prodhcp_systests::topo::{Topology, LOAD_IP, NET0, POOL0, SERVER_IP};

const RATE: u32 = 200;
const SECS: u32 = 12;
const POOL_B: &str = "198.19.0.1-198.19.1.244";
const POOL_A: &str = "198.19.4.1-198.19.7.232";
const POOL_C: &str = "198.19.16.1-198.19.21.220";

fn config(t: &Topology, pools: &[&str]) -> ServerConfig {
    let mut bulk = SubnetConfig::new("198.19.0.0/16", pools[0]).relay(&LOAD_IP.to_string());
    bulk.pools = pools.iter().map(|p| p.to_string()).collect();
    ServerConfig::new(t.lab.dir())
        .interface("s0")
        .subnet(SubnetConfig::new(NET0, POOL0))
        .subnet(bulk)
}

fn in_range(ip: Ipv4Addr, range: &str) -> bool {
    let (a, b) = range.split_once('-').expect("range");
    let (a, b): (Ipv4Addr, Ipv4Addr) = (a.parse().expect("ip"), b.parse().expect("ip"));
    (u32::from(a)..=u32::from(b)).contains(&u32::from(ip))
}

fn lease_ips(export: &[serde_json::Value]) -> Vec<Ipv4Addr> {
    export
        .iter()
        .filter(|l| l["state"] == "leased")
        .filter_map(|l| l["address"].as_str()?.parse().ok())
        .collect()
}

/// Waits for the `dhcpperf dora` load of `secs` s to end; its phase report and client count
/// (checked: every client of RATE × secs was sent).
#[track_caller]
fn finished_load(load: &prodhcp_systests::lab::Proc, secs: u32) -> (serde_json::Value, u64) {
    assert!(
        load.wait_timeout(Duration::from_secs(u64::from(secs) + 60))
            .is_some(),
        "dhcpperf did not finish"
    );
    let report: serde_json::Value = serde_json::from_str(&load.stdout())
        .unwrap_or_else(|e| panic!("dhcpperf report is not JSON ({e}): {}", load.stdout()));
    let phase = report["phases"][0].clone();
    let clients = phase["clients"].as_u64().expect("clients");
    assert_eq!(clients, u64::from(RATE * secs), "{phase}");
    (phase, clients)
}

#[track_caller]
fn reload_ok(d: &Daemon<'_>, pid: u32, what: &str) -> u64 {
    let t0 = Instant::now();
    let st = d.reload();
    let took = t0.elapsed();
    assert_eq!(st["last_reload"]["ok"], true, "{what}: {st}");
    assert_eq!(st["pid"].as_u64(), Some(u64::from(pid)), "{what}: {st}");
    let applied = st["last_reload"]["applied_in_ms"]
        .as_u64()
        .expect("applied_in_ms");
    eprintln!(
        "live_pools: {what}: applied by every worker in {applied} ms (SIGHUP to status seen: {} ms)",
        took.as_millis()
    );
    applied
}

#[test]
fn pools_added_and_removed_by_sighup_under_load_lose_no_request_and_move_no_lease() {
    if !preflight("live_pools", &[]) {
        return;
    }
    let t = Topology::new("livepool");
    let d = Daemon::start(&t.lab, &t.srv, &config(&t, &[POOL_B, POOL_A]));
    let pid = d.pid();
    let record = t.lab.path("acks.jsonl");
    let load = spawn_dhcpperf_dora(
        &t.lab, &t.load, LOAD_IP, SERVER_IP, RATE, SECS, 0x51, &record,
    );
    let start = Instant::now();
    let wait_until = |s: f64| {
        let at = Duration::from_secs_f64(s);
        if let Some(left) = at.checked_sub(start.elapsed()) {
            std::thread::sleep(left);
        }
    };

    wait_until(2.0);
    config(&t, &[POOL_B, POOL_A, POOL_C]).write(d.config_path());
    let add_ms = reload_ok(&d, pid, "pool C added");

    wait_until(6.0);
    let before_removal = lease_ips(&d.export());
    let in_b: Vec<Ipv4Addr> = before_removal
        .iter()
        .copied()
        .filter(|ip| in_range(*ip, POOL_B))
        .collect();
    assert_eq!(in_b.len(), 500, "pool B should be full by 6 s");
    config(&t, &[POOL_A, POOL_C]).write(d.config_path());
    let remove_ms = reload_ok(&d, pid, "pool B removed");

    let (phase, clients) = finished_load(&load, SECS);
    let phase = &phase;
    assert_eq!(
        phase["missed_pct"].as_f64(),
        Some(0.0),
        "no request may be lost across the reloads: {phase}"
    );

    let export = d.export();
    let (passed, verified) = dhcpperf_verify(&record, &export, &t.lab.path("export.json"));
    assert!(passed, "a lease moved or went missing: {verified:#}");
    assert_eq!(verified["acks"].as_u64(), Some(clients), "{verified}");
    let ips = lease_ips(&export);
    let still_b = ips.iter().filter(|ip| in_b.contains(ip)).count();
    let in_c = ips.iter().filter(|ip| in_range(**ip, POOL_C)).count();
    assert_eq!(still_b, 500, "B's leases stay after B is removed");
    assert!(in_c > 0, "the added pool C was never used");
    assert_eq!(ips.len() as u64, clients, "one lease per client");
    let st = d.status();
    assert!(d.process().is_running(), "{}", d.process().stderr());
    eprintln!(
        "live_pools: {clients} clients, missed {}%, leases {} (B kept {still_b}, C {in_c}); \
         reload add {add_ms} ms, remove {remove_ms} ms; status generation {}",
        phase["missed_pct"],
        ips.len(),
        st["config_generation"]
    );
}

/// The number of workers changed by SIGHUP while clients arrive (issue 10): 2 → 3 → 1, same
/// PID, status lists the new workers running, the load (200 new clients/s for 10 s) misses
/// nothing and every ACKed lease is in the export at its address.
#[test]
fn workers_changed_by_sighup_under_load_lose_no_request() {
    if !preflight("live_workers", &[]) {
        return;
    }
    let t = Topology::new("liveworkers");
    let mut cfg = config(&t, &[POOL_A, POOL_C]);
    let d = Daemon::start(&t.lab, &t.srv, &cfg);
    let pid = d.pid();
    let before = d.worker_pids();
    assert_eq!(before.len(), 2);
    let record = t.lab.path("acks.jsonl");
    let secs = 10;
    let load = spawn_dhcpperf_dora(
        &t.lab, &t.load, LOAD_IP, SERVER_IP, RATE, secs, 0x52, &record,
    );
    let start = Instant::now();
    let wait_until = |s: f64| {
        if let Some(left) = Duration::from_secs_f64(s).checked_sub(start.elapsed()) {
            std::thread::sleep(left);
        }
    };
    let running = |d: &Daemon<'_>, n: usize| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let st = d.status();
            let workers = st["workers"].as_array().cloned().unwrap_or_default();
            if workers.len() == n && workers.iter().all(|w| w["state"] == "running") {
                return st;
            }
            assert!(Instant::now() < deadline, "never {n} running workers: {st}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };

    wait_until(2.5);
    cfg.workers = 3;
    cfg.write(d.config_path());
    reload_ok(&d, pid, "workers 2 -> 3");
    running(&d, 3);
    let three = d.worker_pids();
    assert!(
        before.iter().all(|p| three.contains(p)),
        "the two workers that stay keep running: {before:?} -> {three:?}"
    );

    wait_until(6.0);
    cfg.workers = 1;
    cfg.write(d.config_path());
    reload_ok(&d, pid, "workers 3 -> 1");
    running(&d, 1);
    assert_eq!(d.worker_pids(), vec![three[0]], "worker 0 stays");

    let (phase, clients) = finished_load(&load, secs);
    let phase = &phase;
    let export = d.export();
    let (passed, verified) = dhcpperf_verify(&record, &export, &t.lab.path("export.json"));
    assert!(passed, "a lease moved or went missing: {verified:#}");
    assert_eq!(
        phase["missed_pct"].as_f64(),
        Some(0.0),
        "no request may be lost across the worker changes: {phase}"
    );
    assert_eq!(verified["acks"].as_u64(), Some(clients), "{verified}");
    assert!(d.process().is_running(), "{}", d.process().stderr());
    eprintln!(
        "live_workers: {clients} clients, missed {}%, workers 2 -> 3 -> 1, pid {pid} kept",
        phase["missed_pct"]
    );
}

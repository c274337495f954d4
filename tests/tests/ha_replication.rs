//! Lease replication between two appliances, seen from outside: A and B in their own
//! namespaces on one bridge, a relay agent in a third (relayed DHCP to A only, so only A's
//! workers write), the real daemons with the same cluster file except `node` and `listen`.
//!
//! - leases on A (imported with `prodhcpctl leases import`, and made by relayed DORAs) reach
//!   B, which starts later with an empty table, by bulk sync: A's `ha status` shows B
//!   `in-sync` after one bulk sync, and B's export equals A's, row for row;
//! - leases made on A after that reach B as ring records: `prodhcpctl lease ADDR` on B shows
//!   the same client within a deadline.
//!
//! Prints the bulk-sync time for the imported leases (`HA_REPLICATION_LEASES`, default
//! 100000) and A's bulk-sync log lines. Every wait polls with a deadline.

use std::net::Ipv4Addr;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prodhcp_systests::client::{Extras, Identity, TestClient};
use prodhcp_systests::cluster::{
    self, export_rows, key_file, pair_lab, start, A_IP, B_IP, LOAD_IP, RELAY_IP,
};
use prodhcp_systests::config::ServerConfig;
use prodhcp_systests::daemon::Daemon;
use prodhcp_systests::lab::Lab;
use prodhcp_systests::preflight;
use prodhcp_systests::tools::{dhcpperf_verify, spawn_dhcpperf_dora};
use serde_json::Value;

/// dhcpperf's new clients per second, and for how long.
const LOAD_RATE: u32 = 1000;
const LOAD_SECS: u32 = 5;
/// The daemon's default `ring_capacity`.
const RING_CAPACITY: u64 = 65_536;
/// Time allowed for a link, a bulk sync of the imported leases, a record to show on B.
const DEADLINE: Duration = Duration::from_secs(120);

fn appliance(lab: &Lab, node: &str, ifname: &str, listen_ip: &str, key: &Path) -> ServerConfig {
    cluster::appliance(
        lab,
        node,
        ifname,
        listen_ip,
        key,
        &[("a", A_IP), ("b", B_IP)],
        "",
    )
}

fn peer(st: &Value, node: &str) -> Value {
    st["peers"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["node"] == node))
        .cloned()
        .unwrap_or_else(|| panic!("no peer {node} in {st}"))
}

/// Polls `ha status` of `d` until `ok` holds on peer `node`; returns that peer's entry.
#[track_caller]
fn wait_peer(d: &Daemon<'_>, node: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let until = Instant::now() + DEADLINE;
    loop {
        let p = peer(&d.ctl_json(&["ha", "status"]), node);
        if ok(&p) {
            return p;
        }
        assert!(
            Instant::now() < until,
            "{what}: not within {DEADLINE:?}; peer {node}: {p}\nstderr:\n{}",
            d.process().stderr()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The i-th imported lease's address: 198.18.2.0 onwards (the DORAs get addresses from the
/// start of the pool, 198.18.1.0 onwards, which the import leaves free).
fn imported_addr(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 2, 0)) + i)
}

fn imported_mac(i: u32) -> String {
    let b = i.to_be_bytes();
    format!("02:cc:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3])
}

/// Waits until `lease ADDR` on `d` shows `mac`; returns how long it took.
#[track_caller]
fn wait_lease(d: &Daemon<'_>, addr: Ipv4Addr, mac: &str) -> Duration {
    let t = Instant::now();
    loop {
        if let Some(l) = d.lease(addr) {
            if l.to_string().contains(mac) {
                return t.elapsed();
            }
        }
        assert!(
            t.elapsed() < DEADLINE,
            "lease {addr} of {mac} never showed on {}: {:?}",
            d.ns(),
            d.lease(addr)
        );
        thread::sleep(Duration::from_millis(5));
    }
}

fn mac_string(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[test]
fn leases_on_a_reach_a_later_started_b_by_bulk_sync_then_by_records() {
    if !preflight("ha_replication", &[]) {
        return;
    }
    let n: u32 = std::env::var("HA_REPLICATION_LEASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let lab = pair_lab("harepl");
    let key = key_file(&lab, '5');
    let a = start(&lab, "a", &appliance(&lab, "a", "a0", A_IP, &key));
    // A alone, B not installed yet: A waits for its peer until the operator says it is down.
    let t = Instant::now();
    while a.ctl_json(&["ha", "status"])["role"] != "waiting" {
        assert!(t.elapsed() < DEADLINE, "A never reported `waiting`");
        thread::sleep(Duration::from_millis(10));
    }
    let out = a.ctl(&["ha", "partner-down"]);
    assert!(
        out.status.success(),
        "partner-down: {} {}",
        out.stdout,
        out.stderr
    );
    assert_eq!(a.ctl_json(&["ha", "status"])["role"], "partner-down");

    // N leases imported on A.
    let expires = now() + 86_400;
    let mut csv = String::from(
        "address,hwaddr,client_id,valid_lifetime,expire,subnet_id,fqdn_fwd,fqdn_rev,hostname,state,user_context\n",
    );
    for i in 0..n {
        csv.push_str(&format!(
            "{},{},,86400,{expires},1,0,0,,0,\n",
            imported_addr(i),
            imported_mac(i)
        ));
    }
    let file = lab.path("import.csv");
    std::fs::write(&file, csv).expect("write csv");
    let t = Instant::now();
    let out = a.ctl(&[
        "leases",
        "import",
        "--format",
        "kea-csv",
        file.to_str().expect("utf-8"),
    ]);
    assert!(
        out.status.success(),
        "import: {} {}",
        out.stdout,
        out.stderr
    );
    let sum = out.json.expect("import summary");
    assert_eq!(sum["imported"].as_u64(), Some(u64::from(n)), "{sum}");
    println!("import of {n} leases on A: {:?}", t.elapsed());

    // A few relayed DORAs on A.
    let agent = TestClient::relay(&lab.ns("sr"), RELAY_IP, A_IP.parse().unwrap())
        .expect("relay agent socket");
    let mut bound = Vec::new();
    for k in 0..20u8 {
        let id = Identity::mac([0x02, 0xdd, 0, 0, 0, k]);
        let b = agent.dora(&id, &Extras::default()).expect("DORA on A");
        bound.push((b.address, mac_string(id.mac)));
    }

    // B starts with an empty table: a bulk sync brings it everything.
    let b = start(&lab, "b", &appliance(&lab, "b", "b0", B_IP, &key));
    let t = Instant::now();
    let st = wait_peer(&a, "b", "A sees B in sync after a bulk sync", |p| {
        p["link"] == "up"
            && p["replication"]["state"] == "in-sync"
            && p["replication"]["bulk_syncs_sent"] == 1
    });
    let took = t.elapsed();
    println!(
        "bulk sync of {} leases (from B ready to A showing B in sync): {took:?} ({:.0} leases/s); A's view of B: {}",
        n + 20,
        f64::from(n + 20) / took.as_secs_f64(),
        st["replication"]
    );
    for line in a
        .process()
        .stderr()
        .lines()
        .filter(|l| l.contains("bulk sync"))
    {
        println!("A: {line}");
    }
    let sb = wait_peer(&b, "a", "B counts the bulk sync it received", |p| {
        p["replication"]["bulk_syncs_received"] == 1
    });
    // B in sync: A serves the whole pool as `active`, B is its standby.
    wait_peer(&a, "b", "B standby", |p| p["role"] == "standby");
    assert_eq!(a.ctl_json(&["ha", "status"])["role"], "active");
    assert_eq!(
        sb["replication"]["applied"].as_u64(),
        Some(u64::from(n + 20)),
        "{sb}"
    );
    assert_eq!(sb["replication"]["rejected"], 0, "{sb}");
    for (addr, mac) in &bound {
        wait_lease(&b, *addr, mac);
    }
    wait_lease(&b, imported_addr(n - 1), &imported_mac(n - 1));
    let (rows_a, rows_b) = (export_rows(&a), export_rows(&b));
    assert_eq!(rows_a.len(), (n + 20) as usize);
    assert!(
        rows_a == rows_b,
        "exports differ: A {} rows, B {} rows",
        rows_a.len(),
        rows_b.len()
    );

    // New leases on A reach B as records.
    let mut lags = Vec::new();
    for k in 20..40u8 {
        let id = Identity::mac([0x02, 0xdd, 0, 0, 0, k]);
        let got = agent.dora(&id, &Extras::default()).expect("DORA on A");
        lags.push(wait_lease(&b, got.address, &mac_string(id.mac)));
    }
    lags.sort();
    println!(
        "ACK on A to `prodhcpctl lease` showing it on B (20 leases, includes prodhcpctl's start): \
         min {:?} median {:?} max {:?}",
        lags[0], lags[10], lags[19]
    );
    let (ok, text) = a.ctl_text(&["ha", "status"]);
    assert!(ok, "{text}");
    println!("A: prodhcpctl ha status\n{text}");
    assert!(text.contains("replication: in-sync"), "{text}");
    assert_eq!(export_rows(&a), export_rows(&b));

    // A short relayed dhcpperf load on A: the lag A reports for B while it runs, then every
    // ACK dhcpperf received is in B's table.
    let record = lab.path("load-acks.jsonl");
    let load = spawn_dhcpperf_dora(
        &lab,
        &lab.ns("sr"),
        LOAD_IP,
        A_IP.parse().unwrap(),
        LOAD_RATE,
        LOAD_SECS,
        0x5a,
        &record,
    );
    let (mut max_records, mut max_ms, mut samples) = (0u64, 0u64, 0u32);
    let mut states = std::collections::BTreeSet::new();
    while load.is_running() {
        let p = peer(&a.ctl_json(&["ha", "status"]), "b");
        max_records = max_records.max(p["replication"]["lag_records"].as_u64().unwrap_or(0));
        max_ms = max_ms.max(p["replication"]["lag_ms"].as_u64().unwrap_or(0));
        states.insert(
            p["replication"]["state"]
                .as_str()
                .unwrap_or("?")
                .to_string(),
        );
        samples += 1;
        thread::sleep(Duration::from_millis(50));
    }
    let exit = load.wait_timeout(Duration::from_secs(90));
    assert!(
        exit.is_some_and(|st| st.code() == Some(0)),
        "dhcpperf ended with {exit:?}: {}\n{}",
        load.stdout(),
        load.stderr()
    );
    let report: Value = serde_json::from_str(&load.stdout()).expect("dhcpperf report");
    println!(
        "dhcpperf dora {LOAD_RATE}/s for {LOAD_SECS} s on A: clients {}, missed {}%; \
         A's reported lag for B over {samples} samples (every 50 ms, reports at most every \
         200 ms): max {max_records} records, max {max_ms} ms; states seen {states:?}",
        report["phases"][0]["clients"], report["phases"][0]["missed_pct"]
    );
    assert_eq!(states.len(), 1, "B left sync under load: {states:?}");
    let until = Instant::now() + DEADLINE;
    while export_rows(&a) != export_rows(&b) {
        assert!(
            Instant::now() < until,
            "B's export never caught up with A's"
        );
        thread::sleep(Duration::from_millis(50));
    }
    let (passed, verify) = dhcpperf_verify(&record, &b.export(), &lab.path("export-b.json"));
    assert!(passed, "dhcpperf verify against B's export: {verify:#}");
    println!(
        "dhcpperf verify of A's ACKs against B's export: acks {}, checked {}",
        verify["acks"], verify["checked"]
    );
    assert!(
        verify["acks"].as_u64() > Some(u64::from(LOAD_RATE * LOAD_SECS / 2)),
        "{verify}"
    );
    // While B is in sync A's worker rings hold replies; B stopping releases them.
    let ring = shm_layout::Ring::open_or_create(
        &lab.path("a").join("state").join("ring-1.dat"),
        1,
        RING_CAPACITY,
    )
    .expect("A's ring of worker 0");
    assert!(ring.hold_replies(), "B in sync, replication sync: A holds");
    let t = Instant::now();
    b.stop();
    while ring.hold_replies() {
        assert!(t.elapsed() < DEADLINE, "A kept holding after B stopped");
        thread::sleep(Duration::from_millis(1));
    }
    println!("B stopped to A's hold released: {:?}", t.elapsed());
    let p = wait_peer(&a, "b", "A sees B down", |p| p["link"] == "down");
    assert_eq!(p["replication"]["state"], "down", "{p}");
}

//! `durability` (issue 7, defect 8): with "power" a lease's table page is on disk before its
//! ACK leaves; a SIGKILLed daemon under load keeps every ACK the load generator received, as
//! the table file alone shows.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use prodhcp_systests::client::{Extras, Identity, TestClient};
use prodhcp_systests::daemon::{binary, total, Daemon};
use prodhcp_systests::lab::run_bounded;
use prodhcp_systests::packet::test_mac;
use prodhcp_systests::preflight;
use prodhcp_systests::topo::{Topology, LOAD_IP, SERVER_IP};
use serde_json::Value;

/// Whether the table page holding `addr`'s slot is dirty in the page cache.
fn slot_page_dirty(table_path: &Path, addr: Ipv4Addr) -> bool {
    let table = shm_layout::Table::open(table_path).expect("open the table");
    let slot = table
        .slot_of_addr(u32::from(addr))
        .unwrap_or_else(|| panic!("{addr} has no slot"));
    let offset = (table.geometry().slots_off * 8) as u64 + u64::from(slot) * 64;
    let file = std::fs::File::open(table_path).expect("table file");
    shm_layout::mapping::page_is_dirty(&file, offset).expect("page flags (root)")
}

/// A DORA for client `n` asking for 198.19.200.n. Those slots lie 3.3 MiB into the table,
/// in a 2 MiB stretch that holds nothing but slots: the page cache may keep the file in large
/// folios (dirty state is per folio), and the first 2 MiB also hold the owner records, whose
/// counters the workers bump all the time — a probe there would always see "dirty".
fn dora_at(agent: &TestClient, n: u32) -> prodhcp_systests::client::Bound {
    let want = Ipv4Addr::new(198, 19, 200, n as u8);
    let ex = Extras {
        extra: vec![(50, want.octets().to_vec())],
        ..Extras::default()
    };
    let b = agent
        .dora(&Identity::mac(test_mac(0x61, n)), &ex)
        .unwrap_or_else(|e| panic!("client {n}: {e}"));
    assert_eq!(b.address, want, "the requested address was not given");
    b
}

#[test]
fn power_durability_writes_the_lease_page_before_the_ack() {
    if !preflight("durability", &[]) {
        return;
    }
    let t = Topology::new("durpage");
    let mut cfg = t.standard_config();
    cfg.durability = Some("process".into());
    let table_path = cfg.state_dir.join("leases.table");
    let d = Daemon::start(&t.lab, &t.srv, &cfg);
    // On tmpfs every page stays "dirty" (there is no disk behind it): the probe needs a real one.
    let fs = nix::sys::statfs::statfs(&cfg.state_dir).expect("statfs");
    assert!(
        fs.filesystem_type() != nix::sys::statfs::TMPFS_MAGIC,
        "the lab directory {} is on tmpfs; point TMPDIR at a disk-backed directory",
        cfg.state_dir.display()
    );
    let agent = TestClient::relay(&t.load, LOAD_IP, SERVER_IP).expect("relay agent socket");

    // "process": the ACK goes out with the page still dirty in memory (the kernel writes it
    // back some 30 s later) — which also shows that the probe sees a dirty page.
    let b = dora_at(&agent, 1);
    assert!(
        slot_page_dirty(&table_path, b.address),
        "process mode: the lease page of {} is already clean; the probe proves nothing",
        b.address
    );

    // "power" (reloaded): by the time the ACK arrives the page is on disk.
    cfg.durability = Some("power".into());
    cfg.write(d.config_path());
    let st = d.reload();
    assert_eq!(st["last_reload"]["ok"], true, "{st}");
    for n in 2..6 {
        let b = dora_at(&agent, n);
        assert!(
            !slot_page_dirty(&table_path, b.address),
            "power mode: the ACK for {} arrived before its lease page was written",
            b.address
        );
    }
}

#[test]
fn sigkill_under_load_keeps_every_acked_lease_in_the_table_file() {
    if !preflight("durability", &[]) {
        return;
    }
    let t = Topology::new("durkill");
    let cfg = t.standard_config(); // durability: the default, "power"
    let d = Daemon::start(&t.lab, &t.srv, &cfg);
    let record = t.lab.path("acks.jsonl");
    let perf = binary("dhcpperf");
    let server = SERVER_IP.to_string();
    let relay = LOAD_IP.to_string();
    let load = t.lab.spawn(
        &t.load,
        "dhcpperf",
        &[
            perf.to_str().expect("utf-8 path"),
            "dora",
            "--server",
            &server,
            "--relay-ip",
            &relay,
            "--rate",
            "3000",
            "--count",
            "30000",
            "--duration",
            "10s",
            "--give-up",
            "2s",
            "--hard-deadline",
            "30s",
            "--record",
            record.to_str().expect("utf-8 path"),
        ],
    );
    // Kill in the middle of the load.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let acks = d.stats()["total"]["ack"].as_u64().unwrap_or(0);
        if acks >= 3000 {
            break;
        }
        assert!(Instant::now() < deadline, "only {acks} ACKs after 15 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    let workers = d.worker_pids();
    assert!(d.signal(Signal::SIGKILL));
    assert!(d.process().wait_timeout(Duration::from_secs(5)).is_some());
    assert!(
        load.wait_timeout(Duration::from_secs(40)).is_some(),
        "dhcpperf did not end"
    );
    // The workers die with the supervisor; the table must have no writer left.
    let gone = Instant::now() + Duration::from_secs(5);
    while workers
        .iter()
        .any(|p| Path::new(&format!("/proc/{p}/exe")).exists())
    {
        assert!(Instant::now() < gone, "workers {workers:?} still run");
        std::thread::sleep(Duration::from_millis(20));
    }

    // From the table file alone.
    let prodhcpd = binary("prodhcpd");
    let out = run_bounded(
        &[
            prodhcpd.to_str().expect("utf-8 path"),
            "--config",
            d.config_path().to_str().expect("utf-8 path"),
            "--export-table",
        ],
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "--export-table failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let export_path = t.lab.path("export.json");
    std::fs::write(&export_path, &out.stdout).expect("write export");
    let parsed: Vec<Value> = serde_json::from_slice(&out.stdout).expect("export is JSON");
    let verify = run_bounded(
        &[
            perf.to_str().expect("utf-8 path"),
            "verify",
            "--record",
            record.to_str().expect("utf-8 path"),
            "--export",
            export_path.to_str().expect("utf-8 path"),
            "--json",
        ],
        Duration::from_secs(60),
    );
    let rep: Value = serde_json::from_slice(&verify.stdout).unwrap_or_else(|e| {
        panic!(
            "verify output is not JSON ({e}): {} {}",
            String::from_utf8_lossy(&verify.stdout),
            String::from_utf8_lossy(&verify.stderr)
        )
    });
    let acks = rep["acks"].as_u64().expect("acks");
    assert!(acks >= 3000, "too few ACKs recorded to judge: {rep}");
    assert!(
        verify.status.success(),
        "an ACKed lease is missing from the table file after SIGKILL: {rep}\n({} leases exported)",
        parsed.len()
    );
    drop(d);
}

/// With "power" an OFFER confirms nothing and waits for no disk: DISCOVERs alone make no
/// sync; the REQUESTs that follow make at least one and at most one per ACK, and their time is
/// counted.
#[test]
fn power_durability_syncs_for_acks_not_for_offers() {
    if !preflight("durability", &[]) {
        return;
    }
    let t = Topology::new("dursync");
    let cfg = t.standard_config(); // durability: the default, "power"
    let d = Daemon::start(&t.lab, &t.srv, &cfg);
    let agent = TestClient::relay(&t.load, LOAD_IP, SERVER_IP).expect("relay agent socket");
    let before = d.stats();
    assert_eq!(total(&before, &["events", "disk_syncs"]), 0, "{before}");
    let clients: Vec<Identity> = (1..=20).map(|n| Identity::mac(test_mac(0x62, n))).collect();
    let mut offers = Vec::new();
    for id in &clients {
        let o = agent
            .discover(id, &Extras::default())
            .unwrap_or_else(|e| panic!("DISCOVER of {}: {e}", id.mac_string()));
        offers.push(o);
    }
    let after_offers = d.stats();
    assert_eq!(
        total(&after_offers, &["events", "disk_syncs"]),
        0,
        "20 OFFERs made a disk sync: {after_offers}"
    );
    for (id, o) in clients.iter().zip(&offers) {
        let server_id = o.server_id().expect("the OFFER names its server");
        let ack = agent
            .request_selecting(id, o.yiaddr, server_id, &Extras::default())
            .unwrap_or_else(|e| panic!("REQUEST of {}: {e}", id.mac_string()));
        assert_eq!(ack.yiaddr, o.yiaddr);
    }
    let after_acks = d.stats();
    let syncs = total(&after_acks, &["events", "disk_syncs"]);
    println!(
        "20 OFFERs: 0 disk syncs; 20 ACKs: {syncs} disk syncs, {} µs in them",
        total(&after_acks, &["events", "disk_sync_us"])
    );
    assert!(
        (1..=20).contains(&syncs),
        "20 ACKs made {syncs} disk syncs: {after_acks}"
    );
    assert!(
        total(&after_acks, &["events", "disk_sync_us"]) > 0,
        "{after_acks}"
    );
}

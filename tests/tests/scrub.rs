//! Issue 7, defect 3: damage to a cleanly-closed table is found by the background scrub.
//!
//! A daemon with leases is stopped cleanly, 4 KiB in the middle of the slot region of its table
//! file are overwritten with garbage, and it is started again: it serves at once, and the scrub
//! that runs after every start finds the 64 damaged slots, takes them out of service as
//! `abandoned` (never offered), drops their index entries, logs what it found and reports it in
//! `prodhcpctl status`. A second start finds the table clean.

use std::collections::HashSet;
use std::fs::OpenOptions;
use std::net::Ipv4Addr;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use prodhcp_systests::client::{Extras, Identity, TestClient};
use prodhcp_systests::config::{ServerConfig, SubnetConfig};
use prodhcp_systests::daemon::Daemon;
use prodhcp_systests::packet::test_mac;
use prodhcp_systests::preflight;
use prodhcp_systests::topo::{Topology, NET1, RELAY1_IP, SERVER_IP};
use serde_json::Value;

/// 241 addresses: 241 slots, so the slot region spans about four 4 KiB pages.
const POOL: &str = "198.18.1.10-198.18.1.250";
const POOL_FIRST: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 10);
/// The damaged page: slots 64..128 (the slot region starts on a page boundary).
const PAGE_SLOTS: std::ops::Range<u32> = 64..128;
/// Clients leased before the damage.
const CLIENTS: u8 = 150;

fn addr_of(slot: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(POOL_FIRST) + slot)
}

/// Polls `status` until a scrub pass has finished since this start; returns `status.scrub`.
fn wait_scrub_pass(d: &Daemon, timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let st = d.status();
        if st["scrub"]["passes"].as_u64().is_some_and(|n| n >= 1) {
            return st["scrub"].clone();
        }
        assert!(
            Instant::now() < deadline,
            "no scrub pass reported {timeout:?} after start; status: {st}\nstderr:\n{}",
            d.process().stderr()
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// Overwrites the damaged page with xorshift garbage; returns how many of its slots got a
/// non-zero lock byte (low byte of word 0), i.e. look locked by a writer that does not exist.
fn damage_page(table: &Path) -> u64 {
    let t = shm_layout::Table::open(table).expect("open table");
    let slots_off = t.geometry().slots_off as u64 * 8;
    drop(t);
    assert_eq!(slots_off % 4096, 0, "slot region not page aligned");
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut page = vec![0u8; 4096];
    for chunk in page.chunks_exact_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes());
    }
    let stuck = page.chunks_exact(64).filter(|s| s[0] != 0).count() as u64;
    let f = OpenOptions::new().write(true).open(table).expect("open");
    f.write_all_at(&page, slots_off + u64::from(PAGE_SLOTS.start) * 64)
        .expect("write");
    f.sync_all().expect("fsync");
    stuck
}

#[test]
fn scrub_finds_a_damaged_page_abandons_it_and_reports_it() {
    if !preflight("scrub_damaged_page", &[]) {
        return;
    }
    let t = Topology::new("scrub");
    let cfg = ServerConfig::new(t.lab.dir())
        .subnet(SubnetConfig::new(NET1, POOL).option("routers", "198.18.1.1"));
    let agent = TestClient::relay(&t.rly, RELAY1_IP, SERVER_IP).expect("relay agent socket");
    let mut leased = Vec::new();
    {
        let d = Daemon::start(&t.lab, &t.srv, &cfg);
        for n in 0..CLIENTS {
            let b = agent
                .dora(
                    &Identity::mac(test_mac(0x5c, u32::from(n))),
                    &Extras::default(),
                )
                .expect("DORA");
            leased.push(b.address);
        }
        assert!(d.stop().is_some_and(|s| s.success()), "no clean stop");
    }
    let table = cfg.state_dir.join("leases.table");
    let stuck = damage_page(&table);
    let damaged: HashSet<Ipv4Addr> = PAGE_SLOTS.map(addr_of).collect();
    let leased_in_page = leased.iter().filter(|a| damaged.contains(a)).count();
    assert!(leased_in_page > 0, "test bug: no lease in the damaged page");

    let d = Daemon::start(&t.lab, &t.srv, &cfg);
    let scrub = wait_scrub_pass(&d, Duration::from_secs(20));
    let c = &scrub["last_pass"]["counts"];
    let stats = d.stats();
    let swept = stats["total"]["sweeper"]["abandoned"].as_u64().unwrap_or(0);
    let get = |k: &str| c[k].as_u64().unwrap_or(u64::MAX);
    // Every damaged slot was taken out of service, by the scrub or (if its garbage lock byte
    // happened to be zero) by a worker's sweeper first.
    assert_eq!(
        get("torn_slots") + swept,
        64,
        "scrub {scrub}, sweeper {swept}"
    );
    assert_eq!(get("stuck_locks"), stuck, "{scrub}");
    assert_eq!(get("slots_checked"), 241, "{scrub}");
    assert!(get("damaged") >= 64, "{scrub}");
    assert_eq!(get("repaired"), get("damaged"), "{scrub}");
    assert_eq!(get("stale_index"), leased_in_page as u64, "{scrub}");
    for a in &damaged {
        let l = d
            .lease(*a)
            .unwrap_or_else(|| panic!("no lease record for {a}"));
        assert_eq!(l["state"], "abandoned", "{a}: {l}");
    }
    // Reported: the log names the damaged range, status shows the pass.
    let stderr = d.process().stderr();
    let line = stderr
        .lines()
        .find(|l| l.contains("lease table scrub found damage") && l.contains("198.18.1.74"))
        .unwrap_or_else(|| panic!("no finding line naming 198.18.1.74:\n{stderr}"));
    assert!(line.contains("198.18.1.137"), "{line}");
    assert!(
        stderr.contains("lease table scrub pass finished: damage found"),
        "{stderr}"
    );
    let (ok, text) = d.ctl_text(&["status"]);
    assert!(ok, "{text}");
    let want = format!(
        "slots checked 241, damaged {}, repaired {}",
        get("damaged"),
        get("damaged")
    );
    assert!(
        text.contains("scrub: last pass") && text.contains(&want),
        "status text lacks {want:?}:\n{text}"
    );

    // It keeps serving, and never hands out a damaged address: exhaust the pool.
    let mut handed = Vec::new();
    for n in 0..100u8 {
        match agent.dora(
            &Identity::mac(test_mac(0x5d, u32::from(n))),
            &Extras::default(),
        ) {
            Ok(b) => handed.push(b.address),
            Err(_) => break,
        }
    }
    let free_before = 241 - 64 - (CLIENTS as usize - leased_in_page);
    assert_eq!(
        handed.len(),
        free_before,
        "every good free address is served, nothing more: {handed:?}"
    );
    for a in &handed {
        assert!(!damaged.contains(a), "damaged address {a} handed out");
        assert!(!leased.contains(a), "{a} still leased to another client");
    }
    assert!(d.process().is_running(), "{}", d.process().stderr());
    // No worker stalled on the damaged page's garbage lock bytes (reads of a lock nobody holds
    // return at once): none was killed by the heartbeat watchdog and restarted.
    let restarts = prodhcp_systests::daemon::worker_field(&d.status(), "restarts");
    assert!(
        !restarts.is_empty() && restarts.iter().all(|r| r == 0),
        "workers restarted while the damaged page was served: {restarts:?}\n{}",
        d.process().stderr()
    );

    // The repairs hold: the next start's pass finds nothing.
    let d = d.restart();
    let scrub = wait_scrub_pass(&d, Duration::from_secs(20));
    assert_eq!(scrub["last_pass"]["counts"]["damaged"], 0, "{scrub}");
    assert!(d.stop().is_some_and(|s| s.success()));
}

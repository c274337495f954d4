//! Lease table faults (RELIABILITY.md D2–D5) and pool layout changes.
//!
//! - D2 truncation, D4 bad magic / version, D5 symlink and world-writable table, and a second
//!   prodhcpd on a locked table: `prodhcpd` refuses to start with exit code 3 and a message
//!   naming the table, and leaves the file as it found it;
//! - D3 bit flips in leased slots: the daemon starts normally, never hands the corrupted
//!   addresses to anybody, and the sweeper marks them `abandoned`;
//! - a pool layout change at start is made in place when the table has room, else migrated
//!   (`<table>.prev` kept); every lease carried over either way
//!   and refused on SIGHUP.
//!
//! Faults are injected after a clean stop, straight into the file.

use std::collections::HashSet;
use std::fs::{self, OpenOptions};
use std::net::Ipv4Addr;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use prodhcp_systests::client::{Extras, Identity, TestClient};
use prodhcp_systests::config::{ServerConfig, SubnetConfig};
use prodhcp_systests::daemon::{Daemon, READY_TIMEOUT};
use prodhcp_systests::lab::Lab;
use prodhcp_systests::packet::{test_mac, MessageType};
use prodhcp_systests::preflight;
use prodhcp_systests::topo::{Topology, NET1, RELAY1_IP, SERVER_IP};
use serde_json::Value;

/// A ten-address pool on segment 1 (the scripted relay agent's giaddr selects it).
const SMALL_POOL: &str = "198.18.1.100-198.18.1.109";
/// How long a refusing prodhcpd may take to exit (the lock is retried for 3 s).
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(10);

/// A configuration with one subnet (segment 1) holding `pools`, served through relays only.
fn relay_config(dir: &Path, pools: &[&str]) -> ServerConfig {
    let mut sub = SubnetConfig::new(NET1, pools[0]).option("routers", "198.18.1.1");
    sub.pools = pools.iter().map(|p| p.to_string()).collect();
    ServerConfig::new(dir).subnet(sub)
}

/// The lease table file of `cfg` (no `table_file` is set, so the default name).
fn table_path(cfg: &ServerConfig) -> PathBuf {
    cfg.state_dir.join("leases.table")
}

/// A lab with one namespace and a table created by a daemon that was then stopped cleanly.
fn lab_with_table(tag: &str) -> (Lab, String, ServerConfig) {
    let lab = Lab::new(tag);
    let ns = lab.add_namespace("s");
    let cfg = relay_config(lab.dir(), &[SMALL_POOL]);
    let d = Daemon::start(&lab, &ns, &cfg);
    let st = d.stop();
    assert!(
        st.is_some_and(|s| s.success()),
        "prodhcpd did not stop cleanly: {st:?}"
    );
    assert!(table_path(&cfg).is_file(), "no table after a clean stop");
    (lab, ns, cfg)
}

/// Starts prodhcpd on `cfg` and expects it to refuse the table: exit 3 within
/// [`REFUSAL_TIMEOUT`], stderr naming the table and containing one of `needles`
/// (case-insensitive). Returns stderr.
#[track_caller]
fn expect_refusal(lab: &Lab, ns: &str, cfg: &ServerConfig, what: &str, needles: &[&str]) -> String {
    let d = Daemon::spawn(lab, ns, &lab.path("prodhcp.ron"), cfg.clone());
    let t0 = Instant::now();
    let status = d.process().wait_timeout(REFUSAL_TIMEOUT);
    let stderr = d.process().stderr();
    let Some(status) = status else {
        let serving = d.ctl(&["status"]).status.success();
        drop(d);
        panic!(
            "{what}: prodhcpd still running after {REFUSAL_TIMEOUT:?} (control socket answers: \
             {serving}); stderr:\n{stderr}"
        );
    };
    assert_eq!(
        status.code(),
        Some(3),
        "{what}: prodhcpd exited with {status} after {:?}, wanted code 3; stderr:\n{stderr}",
        t0.elapsed()
    );
    let table = table_path(cfg).display().to_string();
    assert!(
        stderr.contains(&table),
        "{what}: stderr does not name the table {table}:\n{stderr}"
    );
    let lower = stderr.to_lowercase();
    assert!(
        needles.iter().any(|n| lower.contains(&n.to_lowercase())),
        "{what}: stderr mentions none of {needles:?}:\n{stderr}"
    );
    stderr
}

/// Starts prodhcpd and expects it to become ready, then stops it cleanly.
#[track_caller]
fn expect_clean_start(lab: &Lab, ns: &str, cfg: &ServerConfig, what: &str) {
    let d = Daemon::start(lab, ns, cfg);
    let st = d.status();
    assert!(st["pid"].as_u64().is_some(), "{what}: bad status {st}");
    assert!(
        d.stop().is_some_and(|s| s.success()),
        "{what}: no clean stop"
    );
}

fn file_len(p: &Path) -> u64 {
    fs::metadata(p)
        .unwrap_or_else(|e| panic!("stat {}: {e}", p.display()))
        .len()
}

/// Overwrites `bytes` at `offset` of `path`, in place.
fn write_at(path: &Path, offset: u64, bytes: &[u8]) {
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    f.write_all_at(bytes, offset)
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    f.sync_all().expect("fsync");
}

#[test]
fn truncated_table_is_refused_with_exit_3() {
    if !preflight("table_truncated", &[]) {
        return;
    }
    let (lab, ns, cfg) = lab_with_table("ttrunc");
    let table = table_path(&cfg);
    let original = fs::read(&table).expect("read table");
    let size = original.len() as u64;
    assert!(size > 4096 + 8, "table of only {size} bytes");
    for cut in [0, 4095, size - 8] {
        fs::write(&table, &original).expect("restore table");
        OpenOptions::new()
            .write(true)
            .open(&table)
            .and_then(|f| f.set_len(cut))
            .expect("truncate");
        let what = format!("table truncated to {cut} of {size} bytes");
        expect_refusal(&lab, &ns, &cfg, &what, &["truncated", "unusable"]);
        assert_eq!(
            file_len(&table),
            cut,
            "{what}: the refusing daemon changed the file's size"
        );
    }
    // The intact file is still good: the refusals were about the truncation.
    fs::write(&table, &original).expect("restore table");
    expect_clean_start(&lab, &ns, &cfg, "restored table");
}

#[test]
fn bad_magic_or_version_is_refused_with_exit_3() {
    if !preflight("table_bad_magic", &[]) {
        return;
    }
    let (lab, ns, cfg) = lab_with_table("tmagic");
    let table = table_path(&cfg);
    let original = fs::read(&table).expect("read table");

    // Header word 0 is the magic.
    write_at(&table, 0, b"NOTATABL");
    let stderr = expect_refusal(&lab, &ns, &cfg, "bad magic", &["bad magic"]);
    assert!(stderr.contains("unusable"), "{stderr}");
    let after = fs::read(&table).expect("read table");
    assert_eq!(
        after.get(..8),
        Some(&b"NOTATABL"[..]),
        "the refusing daemon rewrote the header"
    );

    // Header word 1 is the layout version.
    fs::write(&table, &original).expect("restore table");
    write_at(&table, 8, &99u64.to_le_bytes());
    expect_refusal(&lab, &ns, &cfg, "layout version 99", &["version"]);

    fs::write(&table, &original).expect("restore table");
    expect_clean_start(&lab, &ns, &cfg, "restored table");
}

#[test]
fn symlinked_table_is_refused_and_its_target_untouched() {
    if !preflight("table_symlink", &[]) {
        return;
    }
    let (lab, ns, cfg) = lab_with_table("tlink");
    let table = table_path(&cfg);
    // The link points at a perfectly good table elsewhere: following it would "work".
    let target = lab.path("elsewhere.table");
    fs::rename(&table, &target).expect("move table");
    std::os::unix::fs::symlink(&target, &table).expect("symlink");
    let before = fs::read(&target).expect("read target");
    expect_refusal(
        &lab,
        &ns,
        &cfg,
        "table is a symlink",
        &["symbolic link", "symlink"],
    );
    assert!(
        table
            .symlink_metadata()
            .is_ok_and(|m| m.file_type().is_symlink()),
        "the refusing daemon replaced the symlink"
    );
    assert!(
        fs::read(&target).expect("read target") == before,
        "the link's target was modified"
    );

    fs::remove_file(&table).expect("remove symlink");
    fs::rename(&target, &table).expect("move table back");
    expect_clean_start(&lab, &ns, &cfg, "table moved back");
}

#[test]
fn world_writable_table_is_refused_with_its_mode() {
    if !preflight("table_mode", &[]) {
        return;
    }
    let (lab, ns, cfg) = lab_with_table("tmode");
    let table = table_path(&cfg);
    fs::set_permissions(&table, fs::Permissions::from_mode(0o666)).expect("chmod 666");
    let stderr = expect_refusal(&lab, &ns, &cfg, "mode 666", &["666"]);
    assert!(
        stderr.to_lowercase().contains("mode") || stderr.contains("writable"),
        "the message should say what is wrong with the permissions: {stderr}"
    );
    let mode = fs::metadata(&table).expect("stat").permissions().mode() & 0o7777;
    assert_eq!(mode, 0o666, "the refusing daemon changed the mode");

    fs::set_permissions(&table, fs::Permissions::from_mode(0o600)).expect("chmod 600");
    expect_clean_start(&lab, &ns, &cfg, "table back to 600");
}

#[test]
fn second_daemon_on_a_locked_table_exits_3_and_the_first_keeps_serving() {
    if !preflight("table_locked", &[]) {
        return;
    }
    let t = Topology::new("tlock");
    let cfg = relay_config(t.lab.dir(), &[SMALL_POOL]);
    let first = Daemon::start(&t.lab, &t.srv, &cfg);
    let pid = first.pid();
    let agent = TestClient::relay(&t.rly, RELAY1_IP, SERVER_IP).expect("relay agent socket");

    expect_refusal(&t.lab, &t.srv, &cfg, "second prodhcpd", &["locked"]);

    assert!(
        first.process().is_running(),
        "the first prodhcpd died: {}",
        first.process().stderr()
    );
    let st = first.status();
    assert_eq!(st["pid"].as_u64(), Some(u64::from(pid)), "{st}");
    let offer = agent
        .discover(&Identity::mac(test_mac(0x70, 1)), &Extras::default())
        .expect("the first daemon must still answer a DISCOVER");
    assert_eq!(offer.msg_type, Some(MessageType::Offer));
    assert_eq!(offer.yiaddr.octets()[..3], [198, 18, 1]);
    assert!(first.stop().is_some_and(|s| s.success()));
}

/// The byte offset of `addr`'s slot in the table file.
fn slot_offset(table: &Path, addr: Ipv4Addr) -> u64 {
    let t = shm_layout::Table::open(table).expect("open table");
    let slot = t
        .slot_of_addr(u32::from(addr))
        .unwrap_or_else(|| panic!("{addr} has no slot"));
    // `slots_off` counts 64-bit words; a slot is 64 bytes.
    (t.geometry().slots_off as u64) * 8 + u64::from(slot) * 64
}

/// Whether the table's checksum rejects `addr`'s slot.
fn slot_is_corrupt(table: &Path, addr: Ipv4Addr) -> bool {
    let t = shm_layout::Table::open(table).expect("open table");
    let slot = t.slot_of_addr(u32::from(addr)).expect("slot");
    t.read(slot).is_err()
}

fn lease_state(d: &Daemon, ip: Ipv4Addr) -> String {
    let out = d.ctl(&["lease", &ip.to_string()]);
    match (&out.json, out.status.success()) {
        (Some(v), true) => v["state"].as_str().unwrap_or("?").to_string(),
        _ => format!(
            "error ({}): {} {}",
            out.status,
            out.stdout.trim(),
            out.stderr.trim()
        ),
    }
}

#[test]
fn bit_flipped_slots_are_never_handed_out_and_become_abandoned() {
    if !preflight("table_bitflip", &[]) {
        return;
    }
    let t = Topology::new("tflip");
    let cfg = relay_config(t.lab.dir(), &[SMALL_POOL]);
    let mut agent = TestClient::relay(&t.rly, RELAY1_IP, SERVER_IP).expect("relay agent socket");
    let ids: Vec<Identity> = (0..4).map(|n| Identity::mac(test_mac(0x71, n))).collect();
    let mut acked = Vec::new();
    {
        let d = Daemon::start(&t.lab, &t.srv, &cfg);
        for id in &ids {
            let b = agent.dora(id, &Extras::default()).expect("DORA");
            acked.push(b.address);
        }
        assert!(d.stop().is_some_and(|s| s.success()), "no clean stop");
    }
    let table = table_path(&cfg);
    // Two leased slots get bit flips: one in the hardware address, one in the checksum.
    let corrupted = [acked[1], acked[2]];
    let off = slot_offset(&table, corrupted[0]);
    let mut chaddr = [0u8; 1];
    fs::File::open(&table)
        .and_then(|f| f.read_exact_at(&mut chaddr, off + 16))
        .expect("read slot");
    write_at(&table, off + 16, &[chaddr[0] ^ 0x04]);
    let off = slot_offset(&table, corrupted[1]);
    let mut crc = [0u8; 1];
    fs::File::open(&table)
        .and_then(|f| f.read_exact_at(&mut crc, off + 56))
        .expect("read slot");
    write_at(&table, off + 56, &[crc[0] ^ 0x81]);
    for a in corrupted {
        assert!(
            slot_is_corrupt(&table, a),
            "test bug: the flip did not break {a}'s checksum"
        );
    }

    let t0 = Instant::now();
    let d = Daemon::start(&t.lab, &t.srv, &cfg);
    assert!(
        t0.elapsed() < READY_TIMEOUT,
        "start took {:?}",
        t0.elapsed()
    );

    // The sweeper takes the corrupted slots out of service within about 2 s.
    let deadline = Instant::now() + Duration::from_secs(3);
    let abandoned = loop {
        let states: Vec<String> = corrupted.iter().map(|a| lease_state(&d, *a)).collect();
        if states.iter().all(|s| s == "abandoned") || Instant::now() >= deadline {
            break states;
        }
        thread::sleep(Duration::from_millis(100));
    };

    // Whatever the sweeper did, the corrupted addresses are never offered: exhaust the pool,
    // starting with the clients that held them.
    agent.set_timeout(Duration::from_millis(1000));
    let mut handed: Vec<Ipv4Addr> = Vec::new();
    for id in [&ids[1], &ids[2]] {
        let b = agent
            .dora(id, &Extras::default())
            .unwrap_or_else(|e| panic!("holder of a corrupted slot got no new lease: {e}"));
        handed.push(b.address);
    }
    let mut exhausted = false;
    for n in 0..12 {
        let id = Identity::mac(test_mac(0x72, n));
        match agent.discover(&id, &Extras::default()) {
            Ok(r) if r.msg_type == Some(MessageType::Offer) => {
                handed.push(r.yiaddr);
                let sid = r.server_id().unwrap_or(SERVER_IP);
                if let Ok(ack) = agent.request_selecting(&id, r.yiaddr, sid, &Extras::default()) {
                    if ack.msg_type == Some(MessageType::Ack) {
                        handed.push(ack.yiaddr);
                    }
                }
            }
            _ => {
                exhausted = true;
                break;
            }
        }
    }
    assert!(exhausted, "the ten-address pool never ran out: {handed:?}");
    for a in &handed {
        assert!(
            !corrupted.contains(a),
            "corrupted address {a} was handed out; everything handed out: {handed:?}"
        );
        assert!(
            ![acked[0], acked[3]].contains(a),
            "{a} is still leased to its first client but was handed out again"
        );
    }
    let distinct: HashSet<_> = handed.iter().collect();
    assert_eq!(
        distinct.len(),
        10 - 4,
        "expected exactly the six good free addresses to be handed out: {handed:?}"
    );
    for a in [acked[0], acked[3]] {
        assert_eq!(lease_state(&d, a), "leased", "intact lease {a}");
    }
    assert!(
        d.process().is_running(),
        "prodhcpd died: {}",
        d.process().stderr()
    );

    assert!(
        abandoned.iter().all(|s| s == "abandoned"),
        "3 s after start the corrupted slots {corrupted:?} are {abandoned:?}, not abandoned; \
         stats: {}",
        d.stats()
    );
}

/// The fields of an exported lease that a migration must keep.
fn lease_key(l: &Value) -> String {
    format!(
        "{} {} {} {} {}",
        l["address"], l["hwaddr"], l["client_id"], l["state"], l["expires"]
    )
}

#[test]
fn pool_layout_change_at_start_is_made_in_place_or_migrated_and_keeps_every_lease() {
    if !preflight("table_migrate", &[]) {
        return;
    }
    let t = Topology::new("tmigr");
    let small = relay_config(t.lab.dir(), &["198.18.1.100-198.18.1.119"]);
    let agent = TestClient::relay(&t.rly, RELAY1_IP, SERVER_IP).expect("relay agent socket");
    let before: Vec<String> = {
        let d = Daemon::start(&t.lab, &t.srv, &small);
        for n in 0..6u32 {
            let mac = test_mac(0x73, n);
            let id = Identity {
                mac,
                client_id: (n % 2 == 0).then(|| [&[1u8][..], &mac[..]].concat()),
            };
            agent.dora(&id, &Extras::default()).expect("DORA");
        }
        let mut keys: Vec<String> = d.export().iter().map(lease_key).collect();
        keys.sort();
        assert!(d.stop().is_some_and(|s| s.success()), "no clean stop");
        keys
    };
    assert_eq!(before.len(), 6, "{before:?}");

    // Bigger pools: a longer first range and a second one. The table was created with room
    // for them: the restart changes its directory in place (no migration, no lease moves).
    let big = relay_config(
        t.lab.dir(),
        &["198.18.1.100-198.18.1.179", "198.18.1.200-198.18.1.219"],
    );
    let table = table_path(&big);
    let prev = PathBuf::from(format!("{}.prev", table.display()));
    let d = Daemon::start(&t.lab, &t.srv, &big);
    let log = d.process().stderr();
    assert!(
        log.contains("updated in place") && !log.contains("migrated"),
        "the table should be changed in place, not migrated:\n{log}"
    );
    assert!(!prev.exists(), "no migration, so no {}", prev.display());
    let mut grown: Vec<String> = d.export().iter().map(lease_key).collect();
    grown.sort();
    assert_eq!(before, grown, "leases changed when the table grew");
    let st = d.status();
    assert_eq!(st["table"]["slots"].as_u64(), Some(80 + 20), "{st}");
    assert_eq!(
        d.stats()["pools"].as_array().map(Vec::len),
        Some(2),
        "stats should list both pools"
    );
    assert!(d.stop().is_some_and(|s| s.success()), "no clean stop");

    // A change beyond the table's room (a /13 more: 524,286 addresses) is migrated to a new
    // table at start, the old file kept.
    let mut huge = big.clone();
    huge.subnets
        .push(SubnetConfig::new("10.0.0.0/13", "10.0.0.1-10.7.255.254"));
    let d = Daemon::start(&t.lab, &t.srv, &huge);
    let log = d.process().stderr();
    assert!(
        log.contains("migrated"),
        "the log does not say the table was migrated:\n{log}"
    );
    assert!(
        prev.is_file(),
        "{} does not exist after the migration (state dir holds {:?})",
        prev.display(),
        fs::read_dir(&huge.state_dir)
            .map(|r| r
                .filter_map(|e| e.ok().map(|e| e.file_name()))
                .collect::<Vec<_>>())
            .unwrap_or_default()
    );
    let old_table = shm_layout::Table::open(&prev)
        .unwrap_or_else(|e| panic!("{} is not a usable table: {e}", prev.display()));
    assert_eq!(
        old_table.slot_count(),
        100,
        "the kept table is not the old one"
    );
    drop(old_table);
    let mut after: Vec<String> = d.export().iter().map(lease_key).collect();
    after.sort();
    assert_eq!(before, after, "leases changed in the migration");
    let st = d.status();
    assert_eq!(
        st["table"]["slots"].as_u64(),
        Some(80 + 20 + 524_286),
        "{st}"
    );
    // Statistics follow the new layout.
    let pools = d.stats()["pools"].clone();
    assert_eq!(
        pools.as_array().map(Vec::len),
        Some(3),
        "stats should list every new pool: {pools}"
    );

    // A further restart opens the migrated table as it is (no second migration).
    let d = d.restart();
    let log = d.process().stderr();
    assert!(
        !log.contains("migrated"),
        "the migrated table was migrated again:\n{log}"
    );
    let mut again: Vec<String> = d.export().iter().map(lease_key).collect();
    again.sort();
    assert_eq!(
        before, again,
        "leases changed across the restart after migration"
    );
}

#[test]
fn sighup_moves_a_pool_live_and_refuses_a_change_beyond_the_tables_room() {
    if !preflight("table_hup_layout", &[]) {
        return;
    }
    let t = Topology::new("thupl");
    let old = relay_config(t.lab.dir(), &["198.18.1.100-198.18.1.119"]);
    let d = Daemon::start(&t.lab, &t.srv, &old);
    let agent = TestClient::relay(&t.rly, RELAY1_IP, SERVER_IP).expect("relay agent socket");
    let pid = d.pid();
    let gen0 = d.status()["config_generation"]
        .as_u64()
        .expect("generation");
    let early = Identity::mac(test_mac(0x74, 99));
    let kept = agent
        .dora(&early, &Extras::default())
        .expect("DORA before the change");

    // The pool moves: applied live, same PID; new clients get the new pool's addresses.
    let new = relay_config(t.lab.dir(), &["198.18.1.200-198.18.1.250"]);
    new.write(d.config_path());
    let st = d.reload();
    assert_eq!(st["last_reload"]["ok"], true, "{st}");
    assert_eq!(st["config_generation"].as_u64(), Some(gen0 + 1), "{st}");
    assert_eq!(st["pid"].as_u64(), Some(u64::from(pid)), "{st}");
    let new_range =
        u32::from(Ipv4Addr::new(198, 18, 1, 200))..=u32::from(Ipv4Addr::new(198, 18, 1, 250));
    for n in 0..3 {
        let b = agent
            .dora(&Identity::mac(test_mac(0x74, n)), &Extras::default())
            .expect("DORA after the live change");
        assert!(
            new_range.contains(&u32::from(b.address)),
            "{} is not from the new pool",
            b.address
        );
    }
    // The lease taken in the removed pool stays where it was (it ends by itself), but it is
    // not renewed: the client is told no, and its next DORA gets a pool address.
    assert!(
        d.export()
            .iter()
            .any(|l| l["address"] == kept.address.to_string() && l["state"] == "leased"),
        "the lease in the removed pool must stay"
    );
    let renewal = agent
        .renew(&early, kept.address, &Extras::default())
        .expect("an answer to the renewal");
    assert_eq!(renewal.msg_type, Some(MessageType::Nak), "{renewal:?}");
    let moved = agent.dora(&early, &Extras::default()).expect("DORA again");
    assert!(
        new_range.contains(&u32::from(moved.address)),
        "{}",
        moved.address
    );

    // A change beyond the table's room (a /13 more: 524,286 addresses) is refused: restart.
    let mut huge = new.clone();
    huge.subnets
        .push(SubnetConfig::new("10.0.0.0/13", "10.0.0.1-10.7.255.254"));
    huge.write(d.config_path());
    let st = d.reload();
    assert_eq!(st["last_reload"]["ok"], false, "{st}");
    let msg = st["last_reload"]["message"].as_str().unwrap_or("");
    assert!(
        msg.contains("room") && msg.to_lowercase().contains("restart"),
        "the refusal should say the table has no room and a restart is needed: {st}"
    );
    assert_eq!(st["config_generation"].as_u64(), Some(gen0 + 1), "{st}");
    assert!(d.process().is_running(), "{}", d.process().stderr());
    let b = agent
        .dora(&Identity::mac(test_mac(0x74, 50)), &Extras::default())
        .expect("DORA after the refused reload");
    assert!(new_range.contains(&u32::from(b.address)), "{}", b.address);
    let pools = d.stats()["pools"].clone();
    assert_eq!(pools[0]["first"], "198.18.1.200", "{pools}");
    assert_eq!(pools[0]["last"], "198.18.1.250", "{pools}");
}

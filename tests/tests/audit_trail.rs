//! The lease audit trail end to end (issue 9): the real daemon with an `audit` section sends
//! RFC 5424 over TCP (octet counting) to a real rsyslog in the lab, which writes every message
//! to a file; dhcpperf (relayed, `mix`: commits, renews, releases) records every ACK it saw and
//! every RELEASE it sent. The comparison (`prodhcp_systests::audit_check::compare`) matches
//! them by ip, mac and event, and checks the sequence numbers for gaps, repeats and order.
//!
//! - `every_ack_and_release_has_exactly_one_record_at_rsyslog`: no fault; exactly one record
//!   per generator event, no duplicate, no gap, in order; the JSON-lines file holds the same
//!   sequence numbers; `prodhcpctl history` answers for an address from that file.
//! - `rsyslog_stopped_for_a_minute_loses_nothing`: rsyslog is stopped (SIGTERM) for
//!   `AUDIT_OUTAGE_SECS` (default 60) in the middle of the load, then started; `audit status`
//!   shows the target disconnected with a growing lag and spool while it is down; afterwards
//!   every event has its record (repeats allowed: at-least-once) and the lag is zero.
//! - `a_killed_audit_process_resumes_without_a_gap`: the audit process is SIGKILLed in the
//!   middle of the load; the supervisor restarts it; every event has its record, no gap, and
//!   repeats are at most what it reports as sent again.
//!
//! Every wait is bounded; the lab removes its namespaces and processes.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use dhcpperf::record::{read_records, RecordEvent};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use prodhcp_systests::audit_check::{compare, AuditComparison};
use prodhcp_systests::config::SubnetConfig;
use prodhcp_systests::daemon::Daemon;
use prodhcp_systests::lab::Proc;
use prodhcp_systests::rsyslog::{AuditRecord, Rsyslog};
use prodhcp_systests::tools::spawn_dhcpperf_mix;
use prodhcp_systests::topo::{Topology, LOAD_IP, SERVER_IP};
use prodhcp_systests::{complete_lines, preflight, unix_ms};
use serde_json::Value;

/// Where rsyslog listens (the load namespace's address).
const COLLECTOR: SocketAddrV4 = SocketAddrV4::new(LOAD_IP, 1514);
/// The relay address dhcpperf binds (an extra address of the load namespace).
const AGENT_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 4);
/// Longest wait for the trail to catch up after the load.
const CATCH_UP: Duration = Duration::from_secs(120);

fn lab_with_audit(tag: &str) -> (Topology, prodhcp_systests::config::ServerConfig) {
    let t = Topology::new(tag);
    t.lab.add_address("l", "l0", &format!("{AGENT_IP}/24"));
    let file = t.lab.path("audit.jsonl");
    let spool = t.lab.path("audit-spool");
    let cfg = t
        .standard_config()
        .subnet(
            SubnetConfig::new("198.18.64.0/18", "198.18.64.1-198.18.127.254")
                .relay(&AGENT_IP.to_string()),
        )
        .field(&format!(
            "audit: (targets: [\"tcp://{COLLECTOR}\"], file: Some(\"{}\"), spool_dir: \"{}\")",
            file.display(),
            spool.display()
        ));
    (t, cfg)
}

fn audit_status(d: &Daemon<'_>) -> Value {
    d.ctl_json(&["audit", "status"])
}

/// Polls `audit status` until `ok` holds; returns it.
#[track_caller]
fn wait_status(d: &Daemon<'_>, what: &str, within: Duration, ok: impl Fn(&Value) -> bool) -> Value {
    let until = Instant::now() + within;
    loop {
        let st = audit_status(d);
        if ok(&st) {
            return st;
        }
        assert!(
            Instant::now() < until,
            "{what}: not within {within:?}; audit status: {st}\nstderr:\n{}",
            d.process().stderr()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

fn target(st: &Value) -> &Value {
    &st["report"]["targets"][0]
}

fn caught_up(st: &Value) -> bool {
    st["running"] == true
        && st["report"]["ring_lag_records"] == 0
        && target(st)["connected"] == true
        && target(st)["lag_records"] == 0
}

/// Waits (≤ [`CATCH_UP`]) until the trail has settled after a load that has just ended (call
/// it right after [`finish_load`]): a report received after this call that is caught up (and passes
/// `also`), and rsyslog's records, which reach that report's `last_seq` and leave no generator
/// event without its record. Returns that status, the records and their comparison.
///
/// `caught_up` alone is not enough: the audit process reports at most every 500 ms, so the
/// report on hand when the load ends can predate its last requests and still read "caught
/// up" (no lag at that moment) with a `last_seq` short of the last records; a RELEASE gets no
/// answer, so the generator may exit before the server has even read its last one. When the
/// deadline passes with a caught-up report, what is on hand is returned, so the assertions
/// say which events have no record; without one, the wait fails with the status.
#[track_caller]
fn settle(
    d: &Daemon<'_>,
    rsyslog: &Rsyslog<'_>,
    events: &[RecordEvent],
    also: impl Fn(&Value) -> bool,
) -> (Value, Vec<AuditRecord>, AuditComparison) {
    let ended_unix_ms = unix_ms();
    let until = Instant::now() + CATCH_UP;
    loop {
        let st = audit_status(d);
        let fresh = st["reported_unix_ms"]
            .as_u64()
            .is_some_and(|t| t > ended_unix_ms);
        if fresh && caught_up(&st) && also(&st) {
            let last = st["report"]["last_seq"].as_u64().expect("last_seq");
            // A half-written last line reads as an error: not there yet.
            let recs = rsyslog.try_records().unwrap_or_default();
            let c = compare(events, &recs);
            if c.missing.is_empty() && recs.iter().any(|r| r.seq >= last) {
                return (st, recs, c);
            }
            if Instant::now() >= until {
                println!("the trail did not settle within {CATCH_UP:?}: {c}");
                return (st, recs, c);
            }
        } else {
            assert!(
                Instant::now() < until,
                "the trail catches up: not within {CATCH_UP:?}; audit status: {st}\nstderr:\n{}",
                d.process().stderr()
            );
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Waits for dhcpperf to end (bounded by its own hard deadline) and reads its record file.
fn finish_load(load: &Proc, record: &Path, secs: u64) -> Vec<RecordEvent> {
    let status = load.wait_timeout(Duration::from_secs(secs + 120));
    assert!(status.is_some(), "dhcpperf did not end");
    println!("dhcpperf: {}", load.stdout().trim());
    read_records(record).expect("dhcpperf record file")
}

fn report(name: &str, c: &AuditComparison, st: &Value) {
    println!("{name}: {c}");
    println!("{name}: audit status {st}");
}

#[test]
fn every_ack_and_release_has_exactly_one_record_at_rsyslog() {
    if !preflight("audit_trail", &["rsyslogd"]) {
        return;
    }
    let (t, cfg) = lab_with_audit("audit1");
    let rsyslog = Rsyslog::start(&t.lab, &t.load, "siem", COLLECTOR);
    let d = Daemon::start(&t.lab, &t.srv, &cfg);
    wait_status(
        &d,
        "the audit process connects",
        Duration::from_secs(30),
        |st| st["running"] == true && target(st)["connected"] == true,
    );
    let record = t.lab.path("load.jsonl");
    let secs = 10;
    let load = spawn_dhcpperf_mix(
        &t.lab,
        &t.load,
        AGENT_IP,
        SERVER_IP,
        (2000, 300, 300, 100),
        secs,
        0x5a,
        &record,
    );
    let events = finish_load(&load, &record, u64::from(secs));
    let (st, recs, c) = settle(&d, &rsyslog, &events, |_| true);
    let last = st["report"]["last_seq"].as_u64().expect("last_seq");
    report("no fault", &c, &st);
    assert!(
        c.acks_seen > 2000 && c.releases_seen > 500,
        "too little load: {c}"
    );
    assert!(c.is_lossless(), "{c}");
    assert!(c.missing.is_empty(), "{c}");
    assert_eq!(c.duplicates.count, 0, "{c}");
    assert!(c.gaps.is_empty(), "{c}");
    assert_eq!(c.out_of_order, 0, "{c}");
    assert!(recs.iter().any(|r| r.seq == last), "{c}");
    // The JSON-lines file holds the same sequence numbers, each once, up to `last` (both
    // were read after the status; a record numbered later may be in one and not yet the
    // other, and the file's last line may be half written).
    let file = std::fs::read_to_string(t.lab.path("audit.jsonl")).expect("audit file");
    let mut file_seqs: Vec<u64> = complete_lines(&file)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).expect("a JSON line")["seq"]
                .as_u64()
                .expect("seq")
        })
        .filter(|&seq| seq <= last)
        .collect();
    let mut syslog_seqs: Vec<u64> = recs.iter().map(|r| r.seq).filter(|&s| s <= last).collect();
    file_seqs.sort_unstable();
    syslog_seqs.sort_unstable();
    assert_eq!(
        file_seqs, syslog_seqs,
        "the file and rsyslog hold the same events"
    );
    // Who held the first address the generator was given?
    let Some(RecordEvent::Ack { address, mac, .. }) =
        events.iter().find(|e| matches!(e, RecordEvent::Ack { .. }))
    else {
        panic!("no ACK in the record");
    };
    let (ok, text) = d.ctl_text(&[
        "history",
        &address.to_string(),
        "--from",
        t.lab.path("audit.jsonl").to_str().expect("utf-8"),
    ]);
    println!("prodhcpctl history {address}:\n{text}");
    assert!(ok, "history failed: {text}");
    assert!(
        text.contains(mac.as_str()),
        "history names the holder {mac}: {text}"
    );
}

#[test]
fn rsyslog_stopped_for_a_minute_loses_nothing() {
    if !preflight("audit_trail", &["rsyslogd"]) {
        return;
    }
    let outage = std::env::var("AUDIT_OUTAGE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60u64);
    let (t, cfg) = lab_with_audit("audit2");
    let mut rsyslog = Rsyslog::start(&t.lab, &t.load, "siem", COLLECTOR);
    let d = Daemon::start(&t.lab, &t.srv, &cfg);
    wait_status(
        &d,
        "the audit process connects",
        Duration::from_secs(30),
        |st| st["running"] == true && target(st)["connected"] == true,
    );
    let record = t.lab.path("load.jsonl");
    let secs = (outage + 20) as u32;
    let load = spawn_dhcpperf_mix(
        &t.lab,
        &t.load,
        AGENT_IP,
        SERVER_IP,
        (2000, 100, 200, 50),
        secs,
        0x5b,
        &record,
    );
    thread::sleep(Duration::from_secs(8));
    rsyslog.stop();
    let down_at = Instant::now();
    let first = wait_status(
        &d,
        "the target shows disconnected",
        Duration::from_secs(10),
        |st| target(st)["connected"] == false,
    );
    thread::sleep(Duration::from_secs(
        outage.saturating_sub(5).min(outage / 2),
    ));
    let mid = audit_status(&d);
    let (ok, text) = d.ctl_text(&["audit", "status"]);
    println!("audit status while rsyslog is down (ok {ok}):\n{text}");
    let lag = target(&mid)["lag_records"].as_u64().unwrap_or(0);
    let lag_ms = target(&mid)["lag_ms"].as_u64().unwrap_or(0);
    let spool = mid["report"]["spool_bytes"].as_u64().unwrap_or(0);
    assert_eq!(target(&mid)["connected"], false, "{mid}");
    assert!(
        lag > 100,
        "the lag grows while the collector is down: {mid} (first {first})"
    );
    assert!(lag_ms > 1000, "the lag in time shows too: {mid}");
    assert!(spool > 0, "records wait in the spool: {mid}");
    let rest = Duration::from_secs(outage).saturating_sub(down_at.elapsed());
    thread::sleep(rest);
    rsyslog.start_again();
    println!("rsyslog was down {:?}", down_at.elapsed());
    let events = finish_load(&load, &record, u64::from(secs));
    let (st, recs, c) = settle(&d, &rsyslog, &events, |_| true);
    let last = st["report"]["last_seq"].as_u64().expect("last_seq");
    report("rsyslog down", &c, &st);
    assert!(c.missing.is_empty(), "{c}");
    assert!(c.gaps.is_empty(), "{c}");
    assert!(c.duplicates.conflicting.is_empty(), "{c}");
    assert_eq!(c.out_of_order_new, 0, "{c}");
    assert!(
        recs.iter().any(|r| r.seq == last),
        "the last record arrived: {c}"
    );
    assert_eq!(st["report"]["lost_records"], 0, "{st}");
    assert!(
        target(&st)["reconnects"].as_u64().unwrap_or(0) >= 1,
        "the sender reconnected: {st}"
    );
}

#[test]
fn a_killed_audit_process_resumes_without_a_gap() {
    if !preflight("audit_trail", &["rsyslogd"]) {
        return;
    }
    let (t, cfg) = lab_with_audit("audit3");
    let rsyslog = Rsyslog::start(&t.lab, &t.load, "siem", COLLECTOR);
    let d = Daemon::start(&t.lab, &t.srv, &cfg);
    let st0 = wait_status(
        &d,
        "the audit process connects",
        Duration::from_secs(30),
        |st| st["running"] == true && target(st)["connected"] == true,
    );
    let pid = st0["pid"].as_u64().expect("audit pid") as u32;
    let record = t.lab.path("load.jsonl");
    let secs = 15;
    let load = spawn_dhcpperf_mix(
        &t.lab,
        &t.load,
        AGENT_IP,
        SERVER_IP,
        (2000, 300, 300, 100),
        secs,
        0x5c,
        &record,
    );
    thread::sleep(Duration::from_secs(6));
    // Only ever a child of our own daemon.
    let ppid = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit(')').next().map(str::to_string))
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u32>().ok())
        });
    assert_eq!(ppid, Some(d.pid()), "the audit pid is the daemon's child");
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).expect("kill the audit process");
    let back = wait_status(
        &d,
        "the audit process is restarted",
        Duration::from_secs(20),
        |st| {
            st["running"] == true
                && st["pid"].as_u64() != Some(u64::from(pid))
                && st["report"].is_object()
        },
    );
    println!("restarted: {back}");
    let events = finish_load(&load, &record, u64::from(secs));
    let (st, recs, c) = settle(&d, &rsyslog, &events, |st| {
        st["restarts"].as_u64().unwrap_or(0) >= 1
    });
    let last = st["report"]["last_seq"].as_u64().expect("last_seq");
    report("audit killed", &c, &st);
    assert!(
        recs.iter().any(|r| r.seq == last),
        "the last record arrived: {c}"
    );
    assert!(c.missing.is_empty(), "{c}");
    assert!(c.gaps.is_empty(), "{c}");
    assert!(c.duplicates.conflicting.is_empty(), "{c}");
    assert_eq!(c.out_of_order_new, 0, "{c}");
    let resent = st["report"]["resent_at_start"].as_u64().unwrap_or(0)
        + target(&st)["resent"].as_u64().unwrap_or(0);
    assert!(
        c.duplicates.count as u64 <= resent,
        "repeats ({}) are at most what the audit process says it sent again ({resent}): {c}",
        c.duplicates.count
    );
}

#[test]
fn audit_strict_stops_answering_while_the_spool_is_full_and_loses_nothing() {
    if !preflight("audit_trail", &["rsyslogd"]) {
        return;
    }
    let t = Topology::new("audit4");
    t.lab.add_address("l", "l0", &format!("{AGENT_IP}/24"));
    let spool = t.lab.path("audit-spool");
    // The smallest spool (1 MiB, about 2,500 records) and no collector yet.
    let cfg = t
        .standard_config()
        .subnet(
            SubnetConfig::new("198.18.64.0/18", "198.18.64.1-198.18.127.254")
                .relay(&AGENT_IP.to_string()),
        )
        .field(&format!(
            "audit: (targets: [\"tcp://{COLLECTOR}\"], spool_dir: \"{}\", spool_max_bytes: 1048576, audit_strict: true)",
            spool.display()
        ));
    let d = Daemon::start(&t.lab, &t.srv, &cfg);
    wait_status(
        &d,
        "the audit process reports",
        Duration::from_secs(30),
        |st| st["running"] == true && st["report"].is_object(),
    );
    let record = t.lab.path("load.jsonl");
    let secs = 25;
    let load = spawn_dhcpperf_mix(
        &t.lab,
        &t.load,
        AGENT_IP,
        SERVER_IP,
        (0, 400, 0, 0),
        secs,
        0x5d,
        &record,
    );
    let blocked = wait_status(&d, "audit_strict blocks", Duration::from_secs(30), |st| {
        st["report"]["strict_blocking"] == true
    });
    let (_, text) = d.ctl_text(&["audit", "status"]);
    println!("audit status while blocked:\n{text}");
    // Blocked: the workers answer nobody; the ACK count stands still.
    let acks_then = d.stats().to_string();
    thread::sleep(Duration::from_secs(3));
    let still = audit_status(&d);
    assert_eq!(still["report"]["strict_blocking"], true, "{still}");
    assert_eq!(
        still["report"]["last_seq"], blocked["report"]["last_seq"],
        "no new record while blocked: {still}"
    );
    println!("stats while blocked: {acks_then}");
    let rsyslog = Rsyslog::start(&t.lab, &t.load, "siem", COLLECTOR);
    wait_status(&d, "the block clears", Duration::from_secs(30), |st| {
        st["report"]["strict_blocking"] == false
    });
    let events = finish_load(&load, &record, u64::from(secs));
    let (st, recs, c) = settle(&d, &rsyslog, &events, |_| true);
    let last = st["report"]["last_seq"].as_u64().expect("last_seq");
    report("audit_strict", &c, &st);
    assert!(c.acks_seen > 2000, "ACKs before and after the block: {c}");
    assert!(
        recs.iter().any(|r| r.seq == last),
        "the last record arrived: {c}"
    );
    assert!(c.missing.is_empty(), "{c}");
    assert!(c.gaps.is_empty(), "{c}");
    assert_eq!(st["report"]["lost_records"], 0, "{st}");
}

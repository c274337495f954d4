//! Command tests of `audit status` (against fake daemons) and `history` (against files).

use std::net::Ipv4Addr;

use clap::Parser;
use prodhcp_audit::jsonl::to_line;
use prodhcp_audit::{AuditEvent, EventKind, Origin};
use prodhcp_proto::{AuditReport, AuditStatusData, AuditTargetStatus, Command, Response};

use super::test_support::*;
use super::*;

fn audit_data() -> AuditStatusData {
    AuditStatusData {
        configured: true,
        running: true,
        pid: Some(77),
        restarts: 1,
        reported_unix_ms: Some(1_764_633_600_000),
        report: Some(AuditReport {
            last_seq: 99,
            lost_records: 2,
            lost_ranges: vec![(50, 51)],
            targets: vec![AuditTargetStatus {
                target: "tcp://198.18.0.53:514".into(),
                reliable: true,
                lag_records: 4,
                lag_ms: 2_500,
                ..AuditTargetStatus::default()
            }],
            ..AuditReport::default()
        }),
    }
}

#[test]
fn audit_status_human_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let (p, h) = canned(
        dir.path(),
        Command::AuditStatus,
        Response::ok(&audit_data()).unwrap(),
    );
    let c = run_args(&["prodhcpctl", "--socket", &p, "audit", "status"]);
    h.join().unwrap();
    assert_eq!(c.status, ExitStatus::Success, "{}", c.err);
    assert!(
        c.out
            .starts_with("audit: configured, running (pid 77, 1 restarts) · last report "),
        "{}",
        c.out
    );
    assert!(
        c.out
            .contains("LOST RECORDS: 2 — the audit trail has gaps; seq 50-51\n"),
        "{}",
        c.out
    );
    assert!(
        c.out.contains(
            "tcp://198.18.0.53:514  reliable  DISCONNECTED  acked 0  sent 0  lag 4 records (2.5 s)"
        ),
        "{}",
        c.out
    );

    let dir = tempfile::tempdir().unwrap();
    let (p, h) = canned(
        dir.path(),
        Command::AuditStatus,
        Response::ok(&audit_data()).unwrap(),
    );
    let c = run_args(&["prodhcpctl", "--socket", &p, "--json", "audit", "status"]);
    h.join().unwrap();
    assert_eq!(c.status, ExitStatus::Success);
    let v: serde_json::Value = serde_json::from_str(&c.out).unwrap();
    assert_eq!(v["report"]["targets"][0]["lag_ms"], 2_500);
    assert_eq!(v["report"]["lost_ranges"][0][1], 51);
}

#[test]
fn audit_status_not_configured_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let (p, h) = canned(
        dir.path(),
        Command::AuditStatus,
        Response::ok(&AuditStatusData::default()).unwrap(),
    );
    let c = run_args(&["prodhcpctl", "--socket", &p, "audit", "status"]);
    h.join().unwrap();
    assert_eq!(c.status, ExitStatus::Success, "{}", c.err);
    assert_eq!(c.out, "no audit section in the configuration\n");
}

fn commit(seq: u64, time_ms: u64, mac: &str) -> String {
    let mut e = AuditEvent::bare(
        EventKind::Commit,
        &Origin {
            server: "dhcp1".into(),
            node: "a".into(),
            seq,
        },
        time_ms,
    );
    e.ip = Some(Ipv4Addr::new(10, 0, 0, 9));
    e.mac = Some(mac.into());
    e.lease_end = Some(time_ms / 1000 + 3600);
    format!("{}\n", to_line(&e))
}

#[test]
fn history_reads_files_without_a_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("audit.jsonl.1");
    let b = dir.path().join("audit.jsonl");
    // 2025-12-02 00:00:00 UTC and two hours later.
    std::fs::write(&a, commit(1, 1_764_633_600_000, "02:00:00:00:00:01")).unwrap();
    std::fs::write(
        &b,
        commit(2, 1_764_640_800_000, "02:00:00:00:00:02") + "not json\n",
    )
    .unwrap();
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
    // The socket does not exist: history never connects.
    let sock = dir.path().join("none.sock");
    let sock = sock.to_str().unwrap();

    // One --from with several files (a shell glob), and a repeated --from.
    for args in [
        vec![
            "prodhcpctl",
            "--socket",
            sock,
            "history",
            "10.0.0.9",
            "--from",
            b,
            a,
        ],
        vec![
            "prodhcpctl",
            "--socket",
            sock,
            "history",
            "10.0.0.9",
            "--from",
            a,
            "--from",
            b,
        ],
    ] {
        let c = run_args(&args);
        assert_eq!(c.status, ExitStatus::Success, "{}", c.err);
        let lines: Vec<&str> = c.out.lines().collect();
        assert_eq!(lines[0], "10.0.0.9 was held by, oldest first:", "{}", c.out);
        assert!(lines[2].contains("02:00:00:00:00:01"), "{}", c.out);
        assert!(lines[3].contains("02:00:00:00:00:02"), "{}", c.out);
        assert_eq!(
            lines[4],
            format!("skipped 1 line that is not an audit event: {b}:2")
        );
    }

    let c = run_args(&[
        "prodhcpctl",
        "--json",
        "history",
        "10.0.0.9",
        "--at",
        "2025-12-02 02:30",
        "--from",
        a,
        "--from",
        b,
    ]);
    assert_eq!(c.status, ExitStatus::Success, "{}", c.err);
    let v: serde_json::Value = serde_json::from_str(&c.out).unwrap();
    let arr = v.as_array().expect("an array");
    assert_eq!(arr.len(), 1);
    assert_eq!(arr[0]["mac"], "02:00:00:00:00:02");
    assert_eq!(arr[0]["from"], "2025-12-02T02:00:00.000Z");
    assert_eq!(arr[0]["to"], "2025-12-02T03:00:00.000Z");
    assert!(arr[0]["ended_by"].is_null());
    assert!(
        c.err.contains(&format!("{b}:2")),
        "notes go to stderr: {}",
        c.err
    );

    let c = run_args(&[
        "prodhcpctl",
        "history",
        "10.0.0.9",
        "--at",
        "2025-12-01T00:00:00Z",
        "--from",
        a,
    ]);
    assert_eq!(
        c.status,
        ExitStatus::Success,
        "nobody is an answer: {}",
        c.err
    );
    assert_eq!(c.out, "nobody held 10.0.0.9 (at 2025-12-01 00:00:00 UTC)\n");
}

#[test]
fn history_missing_file_is_exit_1_and_no_from_is_usage() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("gone.jsonl");
    let m = missing.to_str().unwrap();
    let c = run_args(&["prodhcpctl", "history", "10.0.0.9", "--from", m]);
    assert_eq!(c.status, ExitStatus::Failed);
    assert!(
        c.err.starts_with(&format!("prodhcpctl: {m}: ")),
        "{}",
        c.err
    );
    assert!(c.out.is_empty());

    let c = run_args(&["prodhcpctl", "history", "10.0.0.9"]);
    assert_eq!(c.status, ExitStatus::Usage);
    assert!(c.err.contains("--from FILE"), "{}", c.err);

    for args in [
        &["prodhcpctl", "history"][..],
        &["prodhcpctl", "history", "10.0.0.256", "--from", "f"],
        &[
            "prodhcpctl",
            "history",
            "10.0.0.9",
            "--at",
            "tomorrow",
            "--from",
            "f",
        ],
        &["prodhcpctl", "history", "10.0.0.9", "--from"],
        &["prodhcpctl", "audit"],
    ] {
        let err = Cli::try_parse_from(args).expect_err(&format!("{args:?} should fail"));
        assert_eq!(err.exit_code(), 2, "{args:?}");
    }
}

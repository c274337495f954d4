//! Command tests against fake daemons: connection failures, usage, status, stats, lease.

use std::io;
use std::net::Ipv4Addr;
use std::os::unix::net::UnixListener;

use clap::Parser;
use prodhcp_proto::{Command, HwAddr, Response};

use super::test_support::*;
use super::*;

#[test]
fn missing_socket_exits_3_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.sock");
    let p = path.to_str().unwrap();
    let c = run_args(&["prodhcpctl", "--socket", p, "status"]);
    assert_eq!(c.status, ExitStatus::Unreachable);
    assert_eq!(c.status.code(), 3);
    assert_eq!(
        c.err.trim_end(),
        format!(
            "prodhcpctl: cannot connect to prodhcpd at {p}: no such socket (is prodhcpd running?)"
        )
    );
    assert!(c.out.is_empty());

    let c = run_args(&["prodhcpctl", "--socket", p, "--json", "stats"]);
    assert_eq!(c.status, ExitStatus::Unreachable);
    let v: serde_json::Value = serde_json::from_str(&c.out).unwrap();
    assert!(v["error"].as_str().unwrap().contains("no such socket"));
}

#[test]
fn stale_socket_exits_3_connection_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stale.sock");
    drop(UnixListener::bind(&path).unwrap()); // the file stays, nobody listens
    let c = run_args(&["prodhcpctl", "--socket", path.to_str().unwrap(), "status"]);
    assert_eq!(c.status, ExitStatus::Unreachable);
    assert!(
        c.err
            .contains("connection refused (stale socket; prodhcpd not running)"),
        "{}",
        c.err
    );
}

#[test]
fn connect_errors_are_classified() {
    let e = |n| classify_connect_error(&io::Error::from_raw_os_error(n));
    assert_eq!(e(libc::ENOENT), ConnectFailure::NoSocket);
    assert_eq!(e(libc::EACCES), ConnectFailure::PermissionDenied);
    assert_eq!(e(libc::ECONNREFUSED), ConnectFailure::Refused);
    assert_eq!(e(libc::EAGAIN), ConnectFailure::Busy);
    assert_eq!(
        ConnectFailure::PermissionDenied.to_string(),
        "permission denied (are you root or in the prodhcp group?)"
    );
    let err = CtlError::Connect {
        path: "/run/x".into(),
        reason: ConnectFailure::PermissionDenied,
    };
    assert_eq!(err.exit_status(), ExitStatus::Unreachable);
    assert_eq!(CtlError::Failed("x".into()).exit_status().code(), 1);
    assert_eq!(CtlError::Usage("x".into()).exit_status().code(), 2);
}

#[test]
fn usage_errors_are_exit_2() {
    for args in [
        &["prodhcpctl"][..],
        &["prodhcpctl", "leases"],
        &["prodhcpctl", "leases", "--mac", "zz:zz"],
        &["prodhcpctl", "lease", "10.0.0.256"],
        &["prodhcpctl", "leases", "import", "--format", "csv", "f"],
        &["prodhcpctl", "leases", "import", "--format", "isc"],
        &["prodhcpctl", "leases", "export", "--format", "xml"],
        &["prodhcpctl", "frobnicate"],
    ] {
        let err = Cli::try_parse_from(args).expect_err(&format!("{args:?} should fail"));
        assert_eq!(err.exit_code(), 2, "{args:?}");
    }
    let cli = Cli::try_parse_from(["prodhcpctl", "leases", "--mac", "02-00-00-00-00-0A"]).unwrap();
    match cli.command {
        CtlCommand::Leases(LeasesArgs {
            mac: Some(m),
            action: None,
        }) => {
            assert_eq!(m.to_string(), "02:00:00:00:00:0a")
        }
        other => panic!("{other:?}"),
    }
    let cli = Cli::try_parse_from([
        "prodhcpctl",
        "leases",
        "import",
        "--format",
        "kea-csv",
        "f.csv",
        "--json",
    ])
    .unwrap();
    assert!(cli.json);
}

#[test]
fn mac_parsing() {
    let mac = |s: &str| s.parse::<HwAddr>().map(|m| m.to_string());
    assert_eq!(mac("020000000001").unwrap(), "02:00:00:00:00:01");
    assert_eq!(mac("2:0:0:0:0:1").unwrap(), "02:00:00:00:00:01");
    assert!(mac("").is_err());
    assert!(mac("02:00:").is_err());
    assert!(mac("0200000000011").is_err());
    assert!(mac("é1").is_err());
    let cli = Cli::try_parse_from(["prodhcpctl", "leases", "--mac", "02-00-00-00-00-0A"]).unwrap();
    match cli.command {
        CtlCommand::Leases(LeasesArgs { mac: Some(m), .. }) => {
            assert_eq!(m.to_string(), "02:00:00:00:00:0a")
        }
        other => panic!("{other:?}"),
    }
    let e = Cli::try_parse_from(["prodhcpctl", "leases", "--mac", "zz"]).unwrap_err();
    assert!(e
        .to_string()
        .contains("invalid hardware address 'zz' (expected e.g. 02:00:00:00:00:01)"));
}

#[test]
fn status_human_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let (p, h) = canned(
        dir.path(),
        Command::Status,
        Response::ok(&status_data()).unwrap(),
    );
    let c = run_args(&["prodhcpctl", "--socket", &p, "status"]);
    h.join().unwrap();
    assert_eq!(c.status, ExitStatus::Success, "{}", c.err);
    assert!(
        c.out.contains("prodhcpd: pid 123, running, up 1h 02m"),
        "{}",
        c.out
    );
    assert!(c
        .out
        .contains("config generation: 2 (last reload: ok: reloaded etc/prodhcp.ron)"));
    assert!(c
        .out
        .contains("lease table: /var/lib/prodhcp/leases.table (254 slots, room for 262,144 more addresses, clean start)"));
    assert!(
        c.out
            .contains("client index: 30 of 1,024 entries used, 2 inserts gave up"),
        "{}",
        c.out
    );
    let lines: Vec<&str> = c.out.lines().collect();
    assert!(
        lines.contains(&"  ID  PID  STATE       RESTARTS"),
        "{}",
        c.out
    );
    assert!(lines.contains(&"  1   -    restarting  3"), "{}", c.out);

    let dir = tempfile::tempdir().unwrap();
    let (p, h) = canned(
        dir.path(),
        Command::Status,
        Response::ok(&status_data()).unwrap(),
    );
    let c = run_args(&["prodhcpctl", "--socket", &p, "--json", "status"]);
    h.join().unwrap();
    assert_eq!(c.status, ExitStatus::Success);
    let v: serde_json::Value = serde_json::from_str(&c.out).unwrap();
    assert_eq!(v["pid"], 123);
    assert_eq!(v["workers"][0]["pid"], 124);
    assert!(v["workers"][1]["pid"].is_null());
    assert_eq!(v["table"]["clean_start"], true);
}

#[test]
fn stats_human_shows_totals_workers_and_utilisation() {
    let dir = tempfile::tempdir().unwrap();
    let (p, h) = canned(
        dir.path(),
        Command::Stats,
        Response::ok(&stats_data()).unwrap(),
    );
    let c = run_args(&["prodhcpctl", "--socket", &p, "stats"]);
    h.join().unwrap();
    assert_eq!(c.status, ExitStatus::Success, "{}", c.err);
    let lines: Vec<&str> = c.out.lines().collect();
    assert_eq!(lines[0], "counters:");
    assert_eq!(lines[1], "            total  worker 0  worker 1");
    assert_eq!(lines[2], "  received  2,000  1,000     1,000");
    assert!(lines.contains(&"drops:"));
    assert!(
        lines.contains(&"  too_short  1      1         1"),
        "{}",
        c.out
    );
    let pool = lines.iter().find(|l| l.contains("10.0.0.100")).unwrap();
    assert!(pool.ends_with("25.0 %"), "{pool}");
}

#[test]
fn lease_found_and_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let addr = Ipv4Addr::new(10, 0, 0, 1);
    let (p, h) = canned(
        dir.path(),
        Command::Lease { address: addr },
        Response::ok(&lease(1)).unwrap(),
    );
    let c = run_args(&["prodhcpctl", "--socket", &p, "lease", "10.0.0.1"]);
    h.join().unwrap();
    assert_eq!(c.status, ExitStatus::Success, "{}", c.err);
    let lines: Vec<&str> = c.out.lines().collect();
    assert_eq!(lines[0], "address:    10.0.0.1");
    assert_eq!(lines[1], "state:      leased");
    assert_eq!(lines[3], "client_id:  01020000000001");
    assert!(
        lines[4].starts_with("expires:    1764000000 (2025-11-24 16:00:00 UTC, "),
        "{}",
        lines[4]
    );

    let dir = tempfile::tempdir().unwrap();
    let (p, h) = canned(
        dir.path(),
        Command::Lease { address: addr },
        Response::error("no lease for 10.0.0.1"),
    );
    let c = run_args(&["prodhcpctl", "--socket", &p, "--json", "lease", "10.0.0.1"]);
    h.join().unwrap();
    assert_eq!(c.status, ExitStatus::Failed);
    let v: serde_json::Value = serde_json::from_str(&c.out).unwrap();
    assert_eq!(v, serde_json::json!({"error": "no lease for 10.0.0.1"}));
    assert!(c.err.contains("no lease for 10.0.0.1"));
}

#[test]
fn leases_by_mac_json_is_an_array() {
    let dir = tempfile::tempdir().unwrap();
    let (p, h) = canned(
        dir.path(),
        Command::LeasesByMac {
            mac: "02:00:00:00:00:01".parse().unwrap(),
        },
        Response::ok(&vec![lease(1), lease(2)]).unwrap(),
    );
    let c = run_args(&[
        "prodhcpctl",
        "--socket",
        &p,
        "--json",
        "leases",
        "--mac",
        "02:00:00:00:00:01",
    ]);
    h.join().unwrap();
    assert_eq!(c.status, ExitStatus::Success, "{}", c.err);
    let v: Vec<LeaseRecord> = serde_json::from_str(&c.out).unwrap();
    assert_eq!(v, vec![lease(1), lease(2)]);
}

#[test]
fn malformed_answer_is_exit_1_and_closed_connection_exit_3() {
    let dir = tempfile::tempdir().unwrap();
    let (p, h) = fake_daemon(dir.path(), |r, w| {
        let _ = read_request(r);
        w.write_all(b"{\"ok\":true,\"data\":{\"pid\":\"x\"}}\n")
            .unwrap();
    });
    let c = run_args(&["prodhcpctl", "--socket", &p, "status"]);
    h.join().unwrap();
    assert_eq!(c.status, ExitStatus::Failed);
    assert!(c.err.contains("unexpected"), "{}", c.err);

    let dir = tempfile::tempdir().unwrap();
    let (p, h) = fake_daemon(dir.path(), |r, _w| {
        let _ = read_request(r);
    });
    let c = run_args(&["prodhcpctl", "--socket", &p, "status"]);
    h.join().unwrap();
    assert_eq!(c.status, ExitStatus::Unreachable);
    assert!(c.err.contains("closed the connection"), "{}", c.err);
}

#[test]
fn silent_daemon_times_out_with_exit_3() {
    let dir = tempfile::tempdir().unwrap();
    let (p, h) = fake_daemon(dir.path(), |r, _w| {
        let _ = read_request(r);
        std::thread::sleep(Duration::from_millis(1500));
    });
    let c = run_args(&["prodhcpctl", "--socket", &p, "--timeout", "1", "status"]);
    h.join().unwrap();
    assert_eq!(c.status, ExitStatus::Unreachable);
    assert!(c.err.contains("did not answer within 1 s"), "{}", c.err);
}

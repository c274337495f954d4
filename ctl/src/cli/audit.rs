//! `prodhcpctl audit status`: the audit process, its spool, losses and targets, as the
//! supervisor reports them (`audit_status`).

use std::fmt::Write as _;

use prodhcp_proto::{AuditReport, AuditStatusData, AuditTargetStatus};

use super::format::{format_duration, format_utc, group_digits, table};

/// What `audit status` prints when the configuration has no `audit` section.
pub(crate) const NOT_CONFIGURED: &str = "no audit section in the configuration";

/// How many of the last lost ranges the text shows (the report keeps more, `--json` has all).
const LOST_RANGES_SHOWN: usize = 5;

/// `1234 ms` → `1.2 s`; a minute or more → `2m 05s`.
fn format_lag_ms(ms: u64) -> String {
    if ms < 60_000 {
        format!("{}.{} s", ms / 1000, ms % 1000 / 100)
    } else {
        format_duration(ms / 1000)
    }
}

/// `100-111` (one record: `100`).
fn format_range(&(first, last): &(u64, u64)) -> String {
    if first == last {
        first.to_string()
    } else {
        format!("{first}-{last}")
    }
}

/// The report's process-wide part (events, spool, file, losses, audit_strict).
fn format_report(s: &mut String, r: &AuditReport) {
    let _ = writeln!(
        s,
        "events: last seq {} · {} written since the audit process started · ring lag {} records",
        r.last_seq,
        group_digits(r.events),
        group_digits(r.ring_lag_records)
    );
    let pct = if r.spool_max_bytes == 0 {
        0
    } else {
        u128::from(r.spool_bytes) * 100 / u128::from(r.spool_max_bytes)
    };
    let first = r
        .spool_first_seq
        .map_or_else(|| "empty".to_string(), |q| format!("first seq held {q}"));
    let _ = writeln!(
        s,
        "spool: {} of {} bytes ({pct}%) · {first}",
        group_digits(r.spool_bytes),
        group_digits(r.spool_max_bytes)
    );
    let _ = writeln!(s, "file: {}", r.file.as_deref().unwrap_or("none"));
    if r.resent_at_start > 0 {
        let _ = writeln!(
            s,
            "resent at start: {} (unacknowledged before the restart; collectors drop them by seq)",
            group_digits(r.resent_at_start)
        );
    }
    if r.lost_records == 0 && r.ring_records_lost == 0 {
        let _ = writeln!(s, "lost records: 0");
    } else {
        let skip = r.lost_ranges.len().saturating_sub(LOST_RANGES_SHOWN);
        let ranges: Vec<String> = r.lost_ranges[skip..].iter().map(format_range).collect();
        let _ = writeln!(
            s,
            "LOST RECORDS: {} — the audit trail has gaps{}",
            group_digits(r.lost_records),
            if ranges.is_empty() {
                String::new()
            } else {
                format!(
                    "; {}seq {}",
                    if skip > 0 { "last ranges: " } else { "" },
                    ranges.join(", ")
                )
            }
        );
        if r.ring_records_lost > 0 {
            let _ = writeln!(
                s,
                "  of which {} evicted from a change ring before the audit process read them",
                group_digits(r.ring_records_lost)
            );
        }
    }
    if r.strict_blocking {
        let _ = writeln!(
            s,
            "AUDIT_STRICT IS BLOCKING LEASE COMMITS NOW: the spool is full (no new lease is \
             granted until a target takes records)"
        );
    } else {
        let _ = writeln!(s, "audit_strict: not blocking commits");
    }
}

/// One row of the target table.
fn target_row(t: &AuditTargetStatus) -> Vec<String> {
    vec![
        t.target.clone(),
        if t.reliable {
            "reliable"
        } else {
            "best-effort"
        }
        .to_string(),
        if t.connected {
            "connected"
        } else {
            "DISCONNECTED"
        }
        .to_string(),
        format!("acked {}", t.acked_seq),
        format!("sent {}", t.sent_seq),
        format!(
            "lag {} records ({})",
            group_digits(t.lag_records),
            format_lag_ms(t.lag_ms)
        ),
        format!("reconnects {}", t.reconnects),
        format!("resent {}", t.resent),
        format!("dropped {}", t.dropped),
        t.last_error
            .as_ref()
            .map_or_else(String::new, |e| format!("last error: {e}")),
    ]
}

/// The text form of `audit status` at unix time `now_unix_ms` (milliseconds).
pub fn format_audit_status(st: &AuditStatusData, now_unix_ms: u64) -> String {
    if !st.configured {
        return format!("{NOT_CONFIGURED}\n");
    }
    let mut s = String::new();
    let process = if st.running {
        let pid = st.pid.map_or_else(|| "-".to_string(), |p| p.to_string());
        format!("running (pid {pid}, {} restarts)", st.restarts)
    } else {
        format!("NOT RUNNING ({} restarts)", st.restarts)
    };
    let reported = st.reported_unix_ms.map_or_else(
        || "no report yet".to_string(),
        |ms| {
            format!(
                "last report {} ({} ago)",
                format_utc(ms / 1000),
                format_duration(now_unix_ms.saturating_sub(ms) / 1000)
            )
        },
    );
    let _ = writeln!(s, "audit: configured, {process} · {reported}");
    let Some(r) = &st.report else {
        return s;
    };
    format_report(&mut s, r);
    if r.targets.is_empty() {
        let _ = writeln!(s, "targets: none (only the file)");
    } else {
        let _ = writeln!(s, "targets:");
        let rows: Vec<Vec<String>> = r.targets.iter().map(target_row).collect();
        s.push_str(&table(&rows, "  "));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW_MS: u64 = 1_764_633_660_000; // 2025-12-02 00:01:00 UTC

    fn report(targets: Vec<AuditTargetStatus>) -> AuditStatusData {
        AuditStatusData {
            configured: true,
            running: true,
            pid: Some(4242),
            restarts: 0,
            reported_unix_ms: Some(NOW_MS - 2_000),
            report: Some(AuditReport {
                last_seq: 1234,
                events: 1200,
                ring_lag_records: 0,
                spool_bytes: 4096,
                spool_max_bytes: 1_073_741_824,
                spool_first_seq: Some(1200),
                file: Some("/var/log/prodhcp/audit.jsonl".into()),
                targets,
                ..AuditReport::default()
            }),
        }
    }

    #[test]
    fn a_connected_target_and_no_losses() {
        let st = report(vec![AuditTargetStatus {
            target: "tcp://198.18.0.53:514".into(),
            reliable: true,
            connected: true,
            acked_seq: 1234,
            sent_seq: 1234,
            reconnects: 1,
            ..AuditTargetStatus::default()
        }]);
        assert_eq!(
            format_audit_status(&st, NOW_MS),
            "audit: configured, running (pid 4242, 0 restarts) · last report 2025-12-02 00:00:58 UTC (2s ago)\n\
             events: last seq 1234 · 1,200 written since the audit process started · ring lag 0 records\n\
             spool: 4,096 of 1,073,741,824 bytes (0%) · first seq held 1200\n\
             file: /var/log/prodhcp/audit.jsonl\n\
             lost records: 0\n\
             audit_strict: not blocking commits\n\
             targets:\n\
             \x20 tcp://198.18.0.53:514  reliable  connected  acked 1234  sent 1234  lag 0 records (0.0 s)  reconnects 1  resent 0  dropped 0\n"
        );
    }

    #[test]
    fn a_disconnected_target_shows_its_lag_in_records_and_seconds_and_its_error() {
        let st = report(vec![
            AuditTargetStatus {
                target: "tcp://198.18.0.53:514".into(),
                reliable: true,
                connected: false,
                acked_seq: 1000,
                sent_seq: 1010,
                lag_records: 234,
                lag_ms: 12_345,
                reconnects: 7,
                resent: 10,
                last_error: Some("connection refused".into()),
                ..AuditTargetStatus::default()
            },
            AuditTargetStatus {
                target: "unix:/dev/log".into(),
                reliable: false,
                connected: true,
                acked_seq: 1234,
                sent_seq: 1234,
                lag_ms: 125_000,
                dropped: 3,
                ..AuditTargetStatus::default()
            },
        ]);
        let text = format_audit_status(&st, NOW_MS);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[6], "targets:");
        assert_eq!(
            lines[7],
            "  tcp://198.18.0.53:514  reliable     DISCONNECTED  acked 1000  sent 1010  \
             lag 234 records (12.3 s)  reconnects 7  resent 10  dropped 0  last error: connection refused"
        );
        assert_eq!(
            lines[8],
            "  unix:/dev/log          best-effort  connected     acked 1234  sent 1234  \
             lag 0 records (2m 05s)    reconnects 0  resent 0   dropped 3"
        );
        assert_eq!(lines.len(), 9);
    }

    #[test]
    fn losses_and_a_blocking_audit_strict_are_loud() {
        let mut st = report(vec![]);
        st.restarts = 2;
        st.running = false;
        st.pid = None;
        let r = st.report.as_mut().expect("report");
        r.lost_records = 17;
        r.ring_records_lost = 5;
        r.lost_ranges = vec![(1, 1), (10, 11), (20, 21), (30, 31), (40, 41), (50, 55)];
        r.strict_blocking = true;
        r.spool_bytes = r.spool_max_bytes;
        r.resent_at_start = 4;
        let text = format_audit_status(&st, NOW_MS);
        assert!(
            text.starts_with("audit: configured, NOT RUNNING (2 restarts) · "),
            "{text}"
        );
        assert!(
            text.contains("spool: 1,073,741,824 of 1,073,741,824 bytes (100%)"),
            "{text}"
        );
        assert!(
            text.contains(
                "LOST RECORDS: 17 — the audit trail has gaps; last ranges: seq 10-11, 20-21, \
                 30-31, 40-41, 50-55\n  of which 5 evicted from a change ring"
            ),
            "{text}"
        );
        assert!(
            text.contains("AUDIT_STRICT IS BLOCKING LEASE COMMITS NOW"),
            "{text}"
        );
        assert!(text.contains("resent at start: 4 "), "{text}");
        assert!(text.ends_with("targets: none (only the file)\n"), "{text}");
        assert!(!text.contains("lost records: 0"), "{text}");
    }

    #[test]
    fn a_few_lost_ranges_are_all_shown() {
        let mut st = report(vec![]);
        let r = st.report.as_mut().expect("report");
        r.lost_records = 3;
        r.lost_ranges = vec![(7, 7), (9, 10)];
        assert!(format_audit_status(&st, NOW_MS)
            .contains("LOST RECORDS: 3 — the audit trail has gaps; seq 7, 9-10\n"));
    }

    #[test]
    fn not_configured_says_so_and_nothing_else() {
        let st = AuditStatusData::default();
        assert_eq!(
            format_audit_status(&st, NOW_MS),
            "no audit section in the configuration\n"
        );
    }

    #[test]
    fn configured_without_a_report_yet() {
        let st = AuditStatusData {
            configured: true,
            running: true,
            pid: Some(9),
            ..AuditStatusData::default()
        };
        assert_eq!(
            format_audit_status(&st, NOW_MS),
            "audit: configured, running (pid 9, 0 restarts) · no report yet\n"
        );
    }
}

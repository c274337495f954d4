//! Human output: numbers, times, tables, and the text form of each command's answer.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use prodhcp_proto::{
    Counter, CounterGroup, Counters, ImportResult, LeaseRecord, PoolStats, SkippedRow, StatsData,
    StatusData,
};

/// `1234567` → `1,234,567`
pub fn group_digits(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        let remaining = digits.len() - i;
        if i > 0 && remaining.rem_euclid(3) == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Seconds since the epoch, now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `2025-11-24 16:00:00 UTC`
pub fn format_utc(secs: u64) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
    let rem = secs % 86_400;
    // H. Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `3d 04h`, `2h 05m`, `4m 10s`, `12s`
pub fn format_duration(secs: u64) -> String {
    let (d, h, m, s) = (
        secs / 86_400,
        secs % 86_400 / 3600,
        secs % 3600 / 60,
        secs % 60,
    );
    if d > 0 {
        format!("{d}d {h:02}h")
    } else if h > 0 {
        format!("{h}h {m:02}m")
    } else if m > 0 {
        format!("{m}m {s:02}s")
    } else {
        format!("{s}s")
    }
}

/// Left-aligned columns separated by two spaces.
pub(super) fn table(rows: &[Vec<String>], indent: &str) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::from(indent);
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                let w = widths.get(c).copied().unwrap_or(0);
                let _ = write!(line, "{cell:<w$}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Human form of `status`.
pub fn format_status(s: &StatusData) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "prodhcpd: pid {}, {}, up {}",
        s.pid,
        s.state,
        format_duration(s.uptime_secs)
    );
    let _ = writeln!(
        out,
        "config generation: {} (last reload: {}{})",
        s.config_generation,
        if s.last_reload.ok {
            "ok"
        } else if s.last_reload.pending {
            "pending"
        } else {
            "FAILED"
        },
        if s.last_reload.message.is_empty() {
            String::new()
        } else {
            format!(": {}", s.last_reload.message)
        }
    );
    let _ = writeln!(
        out,
        "lease table: {} ({} slots, room for {} more addresses, {})",
        s.table.path,
        group_digits(s.table.slots),
        group_digits(s.table.slot_capacity.saturating_sub(s.table.slots)),
        if s.table.clean_start {
            "clean start"
        } else {
            "recovered after an unclean stop"
        }
    );
    let _ = writeln!(
        out,
        "client index: {} of {} entries used, {} inserts gave up",
        group_digits(s.table.index.occupied),
        group_digits(s.table.index.capacity),
        group_digits(s.table.index.give_ups)
    );
    let _ = writeln!(out, "workers: {}", s.workers.len());
    let mut rows = vec![vec![
        "ID".to_string(),
        "PID".to_string(),
        "STATE".to_string(),
        "RESTARTS".to_string(),
    ]];
    for w in &s.workers {
        rows.push(vec![
            w.id.to_string(),
            w.pid.map_or_else(|| "-".to_string(), |p| p.to_string()),
            w.state.clone(),
            w.restarts.to_string(),
        ]);
    }
    out.push_str(&table(&rows, "  "));
    out.push_str(&crate::rings::format_scrub(&s.scrub));
    out
}

/// Utilisation of a pool in percent: (size − free) / size.
pub fn pool_utilisation(p: &PoolStats) -> f64 {
    if p.size == 0 {
        0.0
    } else {
        p.size.saturating_sub(p.free) as f64 * 100.0 / p.size as f64
    }
}

/// One titled table of named counters (drop reasons, sweeper events), a column per entry of
/// `columns`; empty when no column has any name.
fn map_section(
    title: &str,
    header: &[String],
    columns: &[&Counters],
    map: impl Fn(&Counters) -> &BTreeMap<String, u64>,
) -> String {
    let mut names: Vec<&String> = columns.iter().flat_map(|c| map(c).keys()).collect();
    names.sort();
    names.dedup();
    if names.is_empty() {
        return String::new();
    }
    let mut rows = vec![header.to_vec()];
    for n in names {
        let mut row = vec![n.clone()];
        row.extend(
            columns
                .iter()
                .map(|c| group_digits(map(c).get(n).copied().unwrap_or(0))),
        );
        rows.push(row);
    }
    format!("{title}:\n{}", table(&rows, "  "))
}

/// Human form of `stats`: counters (total, then each worker), drops, sweeper events, other
/// events, then pools. Every group a [`Counters`] carries is shown, so a counter added to the
/// catalogue ([`Counter::ALL`]) appears here without a change to this function.
pub fn format_stats(s: &StatsData) -> String {
    let mut out = String::from("counters:\n");
    let mut header = vec!["".to_string(), "total".to_string()];
    header.extend(s.workers.iter().map(|w| format!("worker {}", w.id)));
    let columns: Vec<&Counters> = std::iter::once(&s.total)
        .chain(s.workers.iter().map(|w| &w.counters))
        .collect();
    // The packet counts in catalogue order (every one, zeros included), then any name a newer
    // daemon sent that this client's catalogue does not know.
    let mut names: Vec<String> = Counter::ALL
        .iter()
        .filter(|c| c.group() == CounterGroup::Packets)
        .map(|c| c.key().to_string())
        .collect();
    let mut unknown: Vec<&String> = columns
        .iter()
        .flat_map(|c| c.packets.keys())
        .filter(|k| !names.contains(k))
        .collect();
    unknown.sort();
    unknown.dedup();
    names.extend(unknown.into_iter().cloned());
    let mut rows = vec![header.clone()];
    for name in names {
        let mut row = vec![name.clone()];
        row.extend(columns.iter().map(|c| group_digits(c.packet(&name))));
        rows.push(row);
    }
    out.push_str(&table(&rows, "  "));

    out.push_str(&map_section("drops", &header, &columns, |c| &c.drops));
    out.push_str(&map_section("sweeper", &header, &columns, |c| &c.sweeper));
    out.push_str(&map_section("events", &header, &columns, |c| &c.events));

    out.push_str("pools:\n");
    if s.pools.is_empty() {
        out.push_str("  (none)\n");
    } else {
        let mut rows = vec![[
            "FIRST", "LAST", "SIZE", "FREE", "OFFERED", "LEASED", "DECLINED", "RESERVED", "USED",
        ]
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()];
        for p in &s.pools {
            rows.push(vec![
                p.first.to_string(),
                p.last.to_string(),
                group_digits(p.size),
                group_digits(p.free),
                group_digits(p.offered),
                group_digits(p.leased),
                group_digits(p.declined),
                group_digits(p.reserved),
                format!("{:.1} %", pool_utilisation(p)),
            ]);
        }
        out.push_str(&table(&rows, "  "));
    }
    out
}

fn describe_expiry(expires: u64, now: u64) -> String {
    let when = format_utc(expires);
    if expires >= now {
        format!("{expires} ({when}, in {})", format_duration(expires - now))
    } else {
        format!("{expires} ({when}, {} ago)", format_duration(now - expires))
    }
}

/// Human form of one lease (`key: value` lines).
pub fn format_lease(l: &LeaseRecord, now: u64) -> String {
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_string());
    let mut rows = vec![
        vec!["address:".to_string(), l.address.to_string()],
        vec!["state:".to_string(), l.state.to_string()],
        vec![
            "hwaddr:".to_string(),
            dash(&l.hwaddr.map(|h| h.to_string())),
        ],
        vec![
            "client_id:".to_string(),
            dash(&l.client_id.as_ref().map(|c| c.to_string())),
        ],
        vec!["expires:".to_string(), describe_expiry(l.expires, now)],
        vec!["subnet:".to_string(), dash(&l.subnet)],
    ];
    if let Some(h) = &l.hostname {
        rows.push(vec!["hostname:".to_string(), h.clone()]);
    }
    table(&rows, "")
}

/// Human form of a list of leases (a table).
pub fn format_lease_table(leases: &[LeaseRecord]) -> String {
    let mut rows = vec![["ADDRESS", "STATE", "HWADDR", "CLIENT_ID", "EXPIRES"]
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()];
    for l in leases {
        rows.push(vec![
            l.address.to_string(),
            l.state.to_string(),
            l.hwaddr.map_or_else(|| "-".to_string(), |h| h.to_string()),
            l.client_id
                .as_ref()
                .map_or_else(|| "-".to_string(), |c| c.to_string()),
            format_utc(l.expires),
        ]);
    }
    table(&rows, "")
}

/// Human form of an import summary.
pub fn format_import_summary(r: &ImportResult) -> String {
    let mut out = format!(
        "imported: {}\nrejected: {}\nskipped:  {}\n",
        group_digits(r.imported),
        group_digits(r.rejected),
        group_digits(r.skipped)
    );
    if !r.errors.is_empty() {
        out.push_str("errors:\n");
        for e in &r.errors {
            let _ = writeln!(out, "  {e}");
        }
    }
    if !r.skipped_rows.is_empty() {
        out.push_str("skipped rows:\n");
        for row in &r.skipped_rows {
            let _ = writeln!(out, "  {}", format_skipped_row(row));
        }
    }
    out
}

/// `line 12: 10.0.0.5 skipped: the address is reserved (--force overwrites)`
pub(super) fn format_skipped_row(row: &SkippedRow) -> String {
    let line = row.line.map_or_else(
        || format!("record {}", row.index + 1),
        |l| format!("line {l}"),
    );
    format!(
        "{line}: {} skipped: {} (--force overwrites)",
        row.address, row.reason
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::{format_progress, format_rate};
    use super::*;
    use prodhcp_proto::WorkerCounters;

    /// Every counter of the catalogue reaches `prodhcpctl stats`, under its key, with its own
    /// value. The test walks `Counter::ALL`: a row added to the catalogue is checked too, and
    /// fails here if `Counters::from_catalogue` has no place for its group or `format_stats`
    /// does not print that group.
    #[test]
    fn every_catalogue_counter_shows_in_stats_under_its_key_with_its_value() {
        // Distinct values (10_001 + word·7) so a counter shown with another's value is caught.
        let value = |c: Counter| 10_001 + 7 * c.word() as u64;
        let c = Counters::from_catalogue(value);
        let stats = StatsData {
            total: c.clone(),
            workers: vec![WorkerCounters { id: 0, counters: c }],
            pools: vec![],
        };
        // Through the wire, as prodhcpctl receives it.
        let wire = serde_json::to_string(&stats).unwrap();
        let stats: StatsData = serde_json::from_str(&wire).unwrap();
        let out = format_stats(&stats);
        for &counter in Counter::ALL {
            let shown = out.lines().find(|l| {
                l.split_whitespace().next() == Some(counter.key())
                    && l.split_whitespace().nth(1) == Some(&group_digits(value(counter)))
            });
            let line = shown.unwrap_or_else(|| {
                panic!(
                    "{} ({:?}) missing from stats:\n{out}",
                    counter.name(),
                    counter.group()
                )
            });
            let v = group_digits(value(counter));
            assert_eq!(
                line.split_whitespace().collect::<Vec<_>>(),
                [counter.key(), &v, &v],
                "{line}"
            );
        }
    }

    #[test]
    fn formatting_helpers() {
        assert_eq!(group_digits(0), "0");
        assert_eq!(group_digits(999), "999");
        assert_eq!(group_digits(1_200_000), "1,200,000");
        assert_eq!(format_utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_utc(1_709_251_199), "2024-02-29 23:59:59 UTC");
        assert_eq!(format_duration(59), "59s");
        assert_eq!(format_duration(3725), "1h 02m");
        assert_eq!(format_duration(90_000), "1d 01h");
        assert_eq!(format_rate(850_000, Duration::from_secs(1)), "850k/s");
        assert_eq!(format_rate(2_500_000, Duration::from_secs(2)), "1.2M/s");
        assert_eq!(
            format_progress(1_200_000, 12, 100, Duration::from_secs(2)),
            "imported 1,200,000 (12 % of file) 600k/s"
        );
        let summary = format_import_summary(&ImportResult {
            imported: 5,
            rejected: 1,
            skipped: 2,
            errors: vec!["line 7: bad".into()],
            skipped_rows: Vec::new(),
        });
        assert_eq!(
            summary,
            "imported: 5\nrejected: 1\nskipped:  2\nerrors:\n  line 7: bad\n"
        );
    }
}

//! `prodhcpctl history IP [--at TIME] --from FILE...`: who held an address when, read from the
//! JSON-lines audit files (`audit.file` and its rotations) with
//! [`prodhcp_audit::jsonl::read_history`]. No daemon is involved.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use prodhcp_audit::jsonl::{read_history, History, Holding};
use prodhcp_audit::{rfc3339_ms, EventKind};

use super::client::{stdout_error, CtlError};
use super::format::{format_utc, table};
use super::{print_json, Output};

/// How many skipped lines the text names one by one (the rest are counted).
const SKIPPED_SHOWN: usize = 10;

/// Parses `--at`: RFC 3339 with an offset (`2026-12-03T14:02:00Z`, `…+01:00`), or a date and
/// time without one (`2026-12-03 14:02`, `2026-12-03 14:02:30`, `T` also accepted), taken as
/// UTC.
pub fn parse_at(s: &str) -> Result<jiff::Timestamp, String> {
    if let Ok(ts) = s.parse::<jiff::Timestamp>() {
        return Ok(ts);
    }
    let bad = || {
        format!(
            "`{s}` is not a time: give RFC 3339 (2026-12-03T14:02:00Z) or \
             YYYY-MM-DD HH:MM[:SS] (taken as UTC)"
        )
    };
    // Only a date followed by a time: jiff would also take a bare date.
    if s.len() < "YYYY-MM-DD HH:MM".len() {
        return Err(bad());
    }
    let dt: jiff::civil::DateTime = s.parse().map_err(|_| bad())?;
    jiff::tz::Offset::UTC.to_timestamp(dt).map_err(|_| bad())
}

/// One holding as `history --json` prints it (an array of these, oldest first).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HoldingView {
    /// The address.
    pub ip: Ipv4Addr,
    /// When the holding began, RFC 3339 UTC with milliseconds.
    pub from: String,
    /// The same, unix milliseconds.
    pub from_unix_ms: u64,
    /// When it ended (the ending event, or the lease end granted last), RFC 3339; `null`: still
    /// held at the end of the files with no lease end known.
    pub to: Option<String>,
    /// The same, unix milliseconds.
    pub to_unix_ms: Option<u64>,
    /// The event that ended it (`release`, `expire`, `decline`, `abandon`, or another client's
    /// `commit`/`renew`/`import`/`reclaim`); `null`: it ran to its lease end (or is still
    /// held).
    pub ended_by: Option<&'static str>,
    /// The holder's hardware address.
    pub mac: Option<String>,
    /// The holder's client identifier (hex).
    pub client_id: Option<String>,
    /// The host name it sent last.
    pub hostname: Option<String>,
    /// Relay agent circuit-id (hex), the last one seen.
    pub circuit_id: Option<String>,
    /// Relay agent remote-id (hex), the last one seen.
    pub remote_id: Option<String>,
    /// Sequence numbers of the events that opened, extended and ended it.
    pub seqs: Vec<u64>,
}

impl From<&Holding> for HoldingView {
    fn from(h: &Holding) -> HoldingView {
        HoldingView {
            ip: h.ip,
            from: rfc3339_ms(h.start_ms),
            from_unix_ms: h.start_ms,
            to: h.end_ms.map(rfc3339_ms),
            to_unix_ms: h.end_ms,
            ended_by: h.ended_by.map(EventKind::name),
            mac: h.mac.clone(),
            client_id: h.client_id.clone(),
            hostname: h.hostname.clone(),
            circuit_id: h.circuit_id.clone(),
            remote_id: h.remote_id.clone(),
            seqs: h.seqs.clone(),
        }
    }
}

/// The "ended by" column.
fn ended(h: &Holding) -> String {
    match (h.ended_by, h.end_ms) {
        (
            Some(
                k @ (EventKind::Commit
                | EventKind::Renew
                | EventKind::Rebind
                | EventKind::Import
                | EventKind::ReservationUsed
                | EventKind::Reclaim),
            ),
            _,
        ) => format!("next holder's {}", k.name()),
        (Some(k), _) => k.name().to_string(),
        (None, Some(_)) => "lease end".to_string(),
        (None, None) => "-".to_string(),
    }
}

/// What was skipped or ignored while reading, one line each (empty when nothing was).
fn format_notes(s: &mut String, h: &History) {
    if !h.skipped.is_empty() {
        let n = h.skipped.len();
        let named: Vec<String> = h
            .skipped
            .iter()
            .take(SKIPPED_SHOWN)
            .map(|(p, line)| format!("{}:{line}", p.display()))
            .collect();
        let more = if n > SKIPPED_SHOWN {
            format!(" and {} more", n - SKIPPED_SHOWN)
        } else {
            String::new()
        };
        let _ = writeln!(
            s,
            "skipped {n} line{} that {} not an audit event: {}{more}",
            if n == 1 { "" } else { "s" },
            if n == 1 { "is" } else { "are" },
            named.join(", ")
        );
    }
    if h.duplicates > 0 {
        let _ = writeln!(
            s,
            "ignored {} duplicate event{} (the same node and seq read twice)",
            h.duplicates,
            if h.duplicates == 1 { "" } else { "s" }
        );
    }
}

/// The text form of `history IP [--at TIME]`: the holdings oldest first (from, to, what ended
/// it, MAC, client-id, host name, circuit-id, remote-id), then the lines skipped and duplicates
/// ignored; "nobody held IP …" when there is none.
pub fn format_history(ip: Ipv4Addr, at: Option<jiff::Timestamp>, h: &History) -> String {
    let at_text = at.map(|t| format_utc(u64::try_from(t.as_second()).unwrap_or(0)));
    let mut s = String::new();
    if h.holdings.is_empty() {
        let _ = match &at_text {
            Some(t) => writeln!(s, "nobody held {ip} (at {t})"),
            None => writeln!(s, "nobody held {ip} (in the files read)"),
        };
    } else {
        let _ = match &at_text {
            Some(t) => writeln!(s, "at {t}, {ip} was held by:"),
            None => writeln!(s, "{ip} was held by, oldest first:"),
        };
        let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_string());
        let mut rows = vec![[
            "FROM",
            "TO",
            "ENDED BY",
            "MAC",
            "CLIENT-ID",
            "HOSTNAME",
            "CIRCUIT-ID",
            "REMOTE-ID",
        ]
        .map(String::from)
        .to_vec()];
        rows.extend(h.holdings.iter().map(|x| {
            vec![
                format_utc(x.start_ms / 1000),
                x.end_ms
                    .map_or_else(|| "still held".to_string(), |e| format_utc(e / 1000)),
                ended(x),
                opt(&x.mac),
                opt(&x.client_id),
                opt(&x.hostname),
                opt(&x.circuit_id),
                opt(&x.remote_id),
            ]
        }));
        s.push_str(&table(&rows, "  "));
    }
    format_notes(&mut s, h);
    s
}

/// Runs `history`: reads the files, prints the text or (`--json`) the array of
/// [`HoldingView`], with the skipped/duplicate notes on stderr.
pub(super) fn run_history(
    ip: Ipv4Addr,
    at: Option<jiff::Timestamp>,
    from: &[PathBuf],
    json: bool,
    io: &mut Output<'_>,
    stdout_used: &mut bool,
) -> Result<(), CtlError> {
    if from.is_empty() {
        return Err(CtlError::Usage(
            "history: name the audit files with --from FILE (the `audit.file` of the \
             configuration and its rotations, e.g. --from /var/log/prodhcp/audit.jsonl*); \
             prodhcpctl reads no configuration"
                .to_string(),
        ));
    }
    let history = read_history(from, ip, at).map_err(|e| CtlError::Local(e.to_string()))?;
    *stdout_used = true;
    if json {
        let views: Vec<HoldingView> = history.holdings.iter().map(HoldingView::from).collect();
        let mut notes = String::new();
        format_notes(&mut notes, &history);
        let _ = io.err.write_all(notes.as_bytes());
        print_json(io.out, &views)
    } else {
        io.out
            .write_all(format_history(ip, at, &history).as_bytes())
            .map_err(stdout_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prodhcp_audit::jsonl::to_line;
    use prodhcp_audit::{AuditEvent, Origin};
    use std::path::Path;

    const IP: Ipv4Addr = Ipv4Addr::new(10, 3, 7, 9);

    fn ms(s: &str) -> u64 {
        parse_at(s).expect("time").as_millisecond() as u64
    }

    fn ev(kind: EventKind, seq: u64, time: &str, mac: &str, lease_end: Option<&str>) -> AuditEvent {
        let mut e = AuditEvent::bare(
            kind,
            &Origin {
                server: "dhcp1".into(),
                node: "a".into(),
                seq,
            },
            ms(time),
        );
        e.ip = Some(IP);
        e.mac = Some(mac.into());
        e.lease_end = lease_end.map(|t| ms(t) / 1000);
        e
    }

    /// Writes `lines` (events, or raw text for `Err`) to `dir/name`.
    fn write(dir: &Path, name: &str, lines: &[Result<AuditEvent, &str>]) -> PathBuf {
        let text: String = lines
            .iter()
            .map(|l| match l {
                Ok(e) => format!("{}\n", to_line(e)),
                Err(raw) => format!("{raw}\n"),
            })
            .collect();
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write");
        p
    }

    /// Two files: the rotated one with alice's commit (relay data, host name) and renew and a
    /// cut line; the current one with her release (twice: at-least-once), then bob's lease
    /// that runs out, then carol's still-open one.
    fn files(dir: &Path) -> Vec<PathBuf> {
        let mut commit = ev(
            EventKind::Commit,
            3,
            "2025-12-03T13:00:00Z",
            "02:00:00:00:00:01",
            Some("2025-12-03T14:00:00Z"),
        );
        commit.hostname = Some("alice".into());
        commit.circuit_id = Some("0a01".into());
        commit.remote_id = Some("beef".into());
        commit.client_id = Some("01020000000001".into());
        let mut renew = commit.clone();
        renew.kind = EventKind::Renew;
        renew.seq = 5;
        renew.time_ms = ms("2025-12-03T13:30:00Z");
        renew.lease_end = Some(ms("2025-12-03T14:30:00Z") / 1000);
        let mut release = ev(
            EventKind::Release,
            6,
            "2025-12-03T14:10:00Z",
            "02:00:00:00:00:01",
            None,
        );
        release.client_id = commit.client_id.clone();
        let old = write(
            dir,
            "audit.jsonl.1",
            &[
                Ok(commit),
                Ok(renew),
                Err(r#"{"event":"commit","seq":6,"ti"#),
            ],
        );
        let new = write(
            dir,
            "audit.jsonl",
            &[
                Ok(release.clone()),
                Ok(release),
                Ok(ev(
                    EventKind::Commit,
                    7,
                    "2025-12-03T15:00:00Z",
                    "02:00:00:00:00:02",
                    Some("2025-12-03T15:10:00Z"),
                )),
                Ok(ev(
                    EventKind::Import,
                    8,
                    "2025-12-03T16:00:00Z",
                    "02:00:00:00:00:03",
                    None,
                )),
            ],
        );
        vec![new, old]
    }

    #[test]
    fn every_holding_oldest_first_with_skipped_lines_and_duplicates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = files(dir.path());
        let h = read_history(&paths, IP, None).expect("reads");
        let text = format_history(IP, None, &h);
        let skipped = format!("{}:3", paths[1].display());
        assert_eq!(
            text,
            format!(
                "10.3.7.9 was held by, oldest first:\n\
                 \x20 FROM                     TO                       ENDED BY   MAC                CLIENT-ID       HOSTNAME  CIRCUIT-ID  REMOTE-ID\n\
                 \x20 2025-12-03 13:00:00 UTC  2025-12-03 14:10:00 UTC  release    02:00:00:00:00:01  01020000000001  alice     0a01        beef\n\
                 \x20 2025-12-03 15:00:00 UTC  2025-12-03 15:10:00 UTC  lease end  02:00:00:00:00:02  -               -         -           -\n\
                 \x20 2025-12-03 16:00:00 UTC  still held               -          02:00:00:00:00:03  -               -         -           -\n\
                 skipped 1 line that is not an audit event: {skipped}\n\
                 ignored 1 duplicate event (the same node and seq read twice)\n"
            )
        );
    }

    #[test]
    fn at_a_time_names_the_holder_or_nobody() {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = files(dir.path());
        let at = parse_at("2025-12-03 14:02").expect("at");
        let h = read_history(&paths, IP, Some(at)).expect("reads");
        let text = format_history(IP, Some(at), &h);
        assert!(
            text.starts_with("at 2025-12-03 14:02:00 UTC, 10.3.7.9 was held by:\n"),
            "{text}"
        );
        assert_eq!(h.holdings.len(), 1);
        assert!(text.contains("02:00:00:00:00:01"), "{text}");
        assert!(!text.contains("02:00:00:00:00:02"), "{text}");

        let at = parse_at("2025-12-03T15:30:00Z").expect("at");
        let h = read_history(&paths, IP, Some(at)).expect("reads");
        assert!(
            format_history(IP, Some(at), &h)
                .starts_with("nobody held 10.3.7.9 (at 2025-12-03 15:30:00 UTC)\n"),
            "bob's lease ran out at 15:10"
        );
    }

    #[test]
    fn an_address_never_held_is_an_answer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = write(
            dir.path(),
            "audit.jsonl",
            &[Ok(ev(
                EventKind::Commit,
                1,
                "2025-12-03T13:00:00Z",
                "02:00:00:00:00:01",
                None,
            ))],
        );
        let other = Ipv4Addr::new(10, 3, 7, 10);
        let h = read_history(&[p], other, None).expect("reads");
        assert_eq!(
            format_history(other, None, &h),
            "nobody held 10.3.7.10 (in the files read)\n"
        );
    }

    #[test]
    fn another_clients_lease_ends_a_holding_and_says_so() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = write(
            dir.path(),
            "audit.jsonl",
            &[
                Ok(ev(
                    EventKind::Commit,
                    1,
                    "2025-12-03T13:00:00Z",
                    "02:00:00:00:00:01",
                    Some("2025-12-03T14:00:00Z"),
                )),
                Ok(ev(
                    EventKind::Reclaim,
                    2,
                    "2025-12-03T13:20:00Z",
                    "02:00:00:00:00:02",
                    Some("2025-12-03T14:20:00Z"),
                )),
            ],
        );
        let h = read_history(&[p], IP, None).expect("reads");
        let text = format_history(IP, None, &h);
        assert!(
            text.contains(
                "2025-12-03 13:00:00 UTC  2025-12-03 13:20:00 UTC  next holder's reclaim  02:00:00:00:00:01"
            ),
            "{text}"
        );
        let views: Vec<HoldingView> = h.holdings.iter().map(HoldingView::from).collect();
        assert_eq!(views[0].ended_by, Some("reclaim"));
        assert_eq!(views[0].to.as_deref(), Some("2025-12-03T13:20:00.000Z"));
        assert_eq!(views[1].ended_by, None);
        assert_eq!(views[1].to_unix_ms, Some(ms("2025-12-03T14:20:00Z")));
    }

    #[test]
    fn many_skipped_lines_are_counted_past_the_first_ten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let junk: Vec<Result<AuditEvent, &str>> = (0..12).map(|_| Err("garbage")).collect();
        let p = write(dir.path(), "audit.jsonl", &junk);
        let h = read_history(&[&p], IP, None).expect("reads");
        let text = format_history(IP, None, &h);
        assert!(
            text.contains(&format!(
                "skipped 12 lines that are not an audit event: {0}:1, {0}:2,",
                p.display()
            )),
            "{text}"
        );
        assert!(
            text.ends_with(&format!("{}:10 and 2 more\n", p.display())),
            "{text}"
        );
    }

    #[test]
    fn at_accepts_rfc3339_and_a_utc_date_time_and_nothing_else() {
        let want = ms("2026-12-03T14:02:00Z");
        for s in [
            "2026-12-03T14:02:00Z",
            "2026-12-03T15:02:00+01:00",
            "2026-12-03 14:02",
            "2026-12-03 14:02:00",
            "2026-12-03T14:02",
        ] {
            assert_eq!(
                parse_at(s).map(|t| t.as_millisecond() as u64),
                Ok(want),
                "{s}"
            );
        }
        assert_eq!(
            parse_at("2026-12-03 14:02:30").map(|t| t.as_second()),
            Ok(want as i64 / 1000 + 30)
        );
        for s in ["2026-12-03", "yesterday", "14:02", "2026-13-03 14:02", ""] {
            let err = parse_at(s).expect_err(s);
            assert!(
                err.contains("YYYY-MM-DD HH:MM[:SS] (taken as UTC)"),
                "{err}"
            );
        }
    }
}

//! The JSON-lines application log: one [`AuditEvent`] as one JSON object per line, and
//! [`read_history`], which answers "who held this address, and when" from such files.
//!
//! The field names are the JSON column of the crate's field table (stable: readers and SIEM
//! parsers depend on them); `seq`, `lease_seconds` and `generation` are numbers, everything
//! else strings; absent fields are left out. Example:
//!
//! ```text
//! {"event":"commit","seq":42,"time":"2025-12-02T03:00:00.123Z","server":"dhcp1","node":"a","ip":"198.18.1.4","mac":"02:00:00:00:ab:01","lease_start":"2025-12-02T03:00:00Z","lease_end":"2025-12-02T04:00:00Z","lease_seconds":3600}
//! ```

use std::collections::HashSet;
use std::io::BufRead;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::event::{AuditEvent, EventKind};
use crate::{rfc3339_ms, rfc3339_s};

/// One line of the log, as serde sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Line {
    event: String,
    seq: u64,
    time: String,
    server: String,
    node: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ip: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    circuit_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    remote_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    subscriber_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    giaddr: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lease_start: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lease_end: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lease_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    previous_mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    previous_client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    truncated: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    generation: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    role_from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    role_to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cause: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    finding: Option<String>,
}

impl From<&AuditEvent> for Line {
    fn from(ev: &AuditEvent) -> Line {
        Line {
            event: ev.kind.name().to_string(),
            seq: ev.seq,
            time: rfc3339_ms(ev.time_ms),
            server: ev.server.clone(),
            node: ev.node.clone(),
            ip: ev.ip,
            mac: ev.mac.clone(),
            client_id: ev.client_id.clone(),
            hostname: ev.hostname.clone(),
            circuit_id: ev.circuit_id.clone(),
            remote_id: ev.remote_id.clone(),
            subscriber_id: ev.subscriber_id.clone(),
            giaddr: ev.giaddr,
            lease_start: ev.lease_start.map(rfc3339_s),
            lease_end: ev.lease_end.map(rfc3339_s),
            lease_seconds: ev.lease_seconds,
            previous_mac: ev.previous_mac.clone(),
            previous_client_id: ev.previous_client_id.clone(),
            truncated: ev.truncated.clone(),
            generation: ev.generation,
            role_from: ev.role_from.clone(),
            role_to: ev.role_to.clone(),
            cause: ev.cause.clone(),
            finding: ev.finding.clone(),
        }
    }
}

/// Why a line is not an audit event.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    /// Not JSON of the expected shape.
    #[error("not an audit line: {0}")]
    Json(#[from] serde_json::Error),
    /// An unknown `event` name.
    #[error("unknown event {0:?}")]
    Event(String),
    /// A time field that is not RFC 3339 (or before 1970).
    #[error("bad time {0:?}")]
    Time(String),
}

fn parse_time_ms(s: &str) -> Result<u64, LineError> {
    let ts: jiff::Timestamp = s.parse().map_err(|_| LineError::Time(s.to_string()))?;
    u64::try_from(ts.as_millisecond()).map_err(|_| LineError::Time(s.to_string()))
}

impl TryFrom<Line> for AuditEvent {
    type Error = LineError;
    fn try_from(l: Line) -> Result<AuditEvent, LineError> {
        let kind =
            EventKind::from_name(&l.event).ok_or_else(|| LineError::Event(l.event.clone()))?;
        let secs = |s: Option<String>| -> Result<Option<u64>, LineError> {
            s.map(|s| parse_time_ms(&s).map(|ms| ms / 1000)).transpose()
        };
        Ok(AuditEvent {
            kind,
            seq: l.seq,
            time_ms: parse_time_ms(&l.time)?,
            server: l.server,
            node: l.node,
            ip: l.ip,
            mac: l.mac,
            client_id: l.client_id,
            hostname: l.hostname,
            circuit_id: l.circuit_id,
            remote_id: l.remote_id,
            subscriber_id: l.subscriber_id,
            giaddr: l.giaddr,
            lease_start: secs(l.lease_start)?,
            lease_end: secs(l.lease_end)?,
            lease_seconds: l.lease_seconds,
            previous_mac: l.previous_mac,
            previous_client_id: l.previous_client_id,
            truncated: l.truncated,
            generation: l.generation,
            role_from: l.role_from,
            role_to: l.role_to,
            cause: l.cause,
            finding: l.finding,
        })
    }
}

/// One event as one JSON line, without the trailing newline.
pub fn to_line(ev: &AuditEvent) -> String {
    // Serializing a struct of strings and numbers cannot fail.
    serde_json::to_string(&Line::from(ev)).unwrap_or_default()
}

/// Parses one line made by [`to_line`].
pub fn from_line(line: &str) -> Result<AuditEvent, LineError> {
    AuditEvent::try_from(serde_json::from_str::<Line>(line)?)
}

/// One client's holding of an address: from the commit (or import, or reclaim) that gave it to
/// the client until the release, expiry, decline, abandon or another client's lease that ended
/// it — or the lease end last granted, if nothing ended it earlier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holding {
    /// The address.
    pub ip: Ipv4Addr,
    /// The holder's hardware address.
    pub mac: Option<String>,
    /// The holder's client identifier.
    pub client_id: Option<String>,
    /// The holder's host name (the last one it sent).
    pub hostname: Option<String>,
    /// Relay agent circuit-id (the last one seen).
    pub circuit_id: Option<String>,
    /// Relay agent remote-id (the last one seen).
    pub remote_id: Option<String>,
    /// Unix ms the holding began (the event that opened it).
    pub start_ms: u64,
    /// Unix ms it ended: the ending event's time, or the granted lease end if that came first.
    /// `None`: still held at the end of the files, with no lease end known.
    pub end_ms: Option<u64>,
    /// The event that ended it (`None` if it ran to its lease end or is still open).
    pub ended_by: Option<EventKind>,
    /// Sequence numbers of the events that opened, extended and ended it.
    pub seqs: Vec<u64>,
}

impl Holding {
    /// Whether the address was held at `t_ms`.
    pub fn covers(&self, t_ms: u64) -> bool {
        self.start_ms <= t_ms && self.end_ms.is_none_or(|e| t_ms < e)
    }
}

/// What [`read_history`] found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct History {
    /// The holdings of the address, oldest first (only those covering `at` if it was given).
    pub holdings: Vec<Holding>,
    /// Lines that were not audit events (e.g. a line cut by a crash), with file and line number.
    pub skipped: Vec<(PathBuf, usize)>,
    /// Repeated events (the same node and sequence number, sent twice at-least-once) ignored.
    pub duplicates: u64,
}

/// Errors reading history files.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// Whether two events name the same client (client-id if either has one, else the MAC).
fn same_client(h: &Holding, ev: &AuditEvent) -> bool {
    if h.client_id.is_some() || ev.client_id.is_some() {
        h.client_id == ev.client_id
    } else {
        h.mac == ev.mac
    }
}

/// Who held `ip`, from JSON-lines audit files (in any order: events are sorted by time, then
/// node and sequence number; repeats of a node's sequence number are dropped). With `at`, only
/// the holdings covering that time.
///
/// A commit, renew, rebind, import or reclaim opens a holding for its client, or extends the
/// open one if it is the same client's; release, expire, decline and abandon end the open
/// holding; a lease event of another client ends it too. Offers, offer expiries, quarantine
/// ends, reservations and NAKs (a refused REQUEST: nothing changed) hold nothing. A holding
/// never outlasts the lease end it was last granted.
pub fn read_history<P: AsRef<Path>>(
    paths: &[P],
    ip: Ipv4Addr,
    at: Option<jiff::Timestamp>,
) -> Result<History, HistoryError> {
    let mut history = History::default();
    let mut events = Vec::new();
    for path in paths {
        let path = path.as_ref();
        let io = |source| HistoryError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
            let line = line.map_err(io)?;
            if line.trim().is_empty() {
                continue;
            }
            match from_line(&line) {
                Ok(ev) if ev.ip == Some(ip) && ev.kind.is_lease_event() => events.push(ev),
                Ok(_) => {}
                Err(_) => history.skipped.push((path.to_path_buf(), n + 1)),
            }
        }
    }
    events.sort_by(|a, b| (a.time_ms, &a.node, a.seq).cmp(&(b.time_ms, &b.node, b.seq)));
    let mut seen = HashSet::new();
    let mut open: Option<Holding> = None;
    let mut done = Vec::new();
    let close = |h: &mut Holding, t_ms: u64, by: Option<EventKind>| match h.end_ms {
        Some(end) if end <= t_ms => {}
        _ => {
            h.end_ms = Some(t_ms);
            h.ended_by = by;
        }
    };
    for ev in events {
        if !seen.insert((ev.node.clone(), ev.seq)) {
            history.duplicates += 1;
            continue;
        }
        match ev.kind {
            EventKind::Commit
            | EventKind::Renew
            | EventKind::Rebind
            | EventKind::Import
            | EventKind::ReservationUsed
            | EventKind::Reclaim => {
                let lease_end_ms = ev.lease_end.map(|s| s.saturating_mul(1000));
                match open.as_mut() {
                    Some(h) if same_client(h, &ev) && h.covers(ev.time_ms) => {
                        h.end_ms = lease_end_ms;
                        h.ended_by = None;
                        h.seqs.push(ev.seq);
                        if ev.hostname.is_some() {
                            h.hostname = ev.hostname.clone();
                        }
                        if ev.circuit_id.is_some() {
                            h.circuit_id = ev.circuit_id.clone();
                        }
                        if ev.remote_id.is_some() {
                            h.remote_id = ev.remote_id.clone();
                        }
                    }
                    _ => {
                        if let Some(mut h) = open.take() {
                            close(&mut h, ev.time_ms, Some(ev.kind));
                            done.push(h);
                        }
                        open = Some(Holding {
                            ip,
                            mac: ev.mac.clone(),
                            client_id: ev.client_id.clone(),
                            hostname: ev.hostname.clone(),
                            circuit_id: ev.circuit_id.clone(),
                            remote_id: ev.remote_id.clone(),
                            start_ms: ev.time_ms,
                            end_ms: lease_end_ms,
                            ended_by: None,
                            seqs: vec![ev.seq],
                        });
                    }
                }
            }
            EventKind::Release | EventKind::Expire | EventKind::Decline | EventKind::Abandon => {
                if let Some(mut h) = open.take() {
                    close(&mut h, ev.time_ms, Some(ev.kind));
                    if h.ended_by == Some(ev.kind) {
                        h.seqs.push(ev.seq);
                    }
                    done.push(h);
                }
            }
            _ => {}
        }
    }
    done.extend(open);
    if let Some(at) = at {
        let t = u64::try_from(at.as_millisecond()).unwrap_or(0);
        done.retain(|h| h.covers(t));
    }
    history.holdings = done;
    Ok(history)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Origin;
    use std::io::Write;

    #[test]
    fn a_line_has_the_documented_names_and_round_trips() {
        let mut ev = AuditEvent::bare(
            EventKind::Commit,
            &Origin {
                server: "dhcp1".into(),
                node: "a".into(),
                seq: 42,
            },
            1_764_644_400_123,
        );
        ev.ip = Some(Ipv4Addr::new(198, 18, 1, 4));
        ev.mac = Some("02:00:00:00:ab:01".into());
        ev.lease_start = Some(1_764_644_400);
        ev.lease_end = Some(1_764_648_000);
        ev.lease_seconds = Some(3600);
        let line = to_line(&ev);
        assert_eq!(
            line,
            r#"{"event":"commit","seq":42,"time":"2025-12-02T03:00:00.123Z","server":"dhcp1","node":"a","ip":"198.18.1.4","mac":"02:00:00:00:ab:01","lease_start":"2025-12-02T03:00:00Z","lease_end":"2025-12-02T04:00:00Z","lease_seconds":3600}"#
        );
        assert_eq!(from_line(&line).expect("parses"), ev);
        ev.hostname = Some("new\nline \"q\"".into());
        ev.generation = Some(3);
        let line = to_line(&ev);
        assert!(!line.contains('\n'));
        assert_eq!(from_line(&line).expect("parses"), ev);
        assert!(matches!(from_line("{\"event\":\"nope\",\"seq\":1,\"time\":\"2025-12-02T03:00:00Z\",\"server\":\"s\",\"node\":\"n\"}"), Err(LineError::Event(_))));
        assert!(matches!(from_line("{\"event\":\"commit\",\"seq\":1,\"time\":\"yesterday\",\"server\":\"s\",\"node\":\"n\"}"), Err(LineError::Time(_))));
    }

    proptest::proptest! {
        #[test]
        fn any_event_round_trips_through_one_line(ev in crate::test_support::any_event()) {
            let line = to_line(&ev);
            proptest::prop_assert!(!line.contains('\n'));
            proptest::prop_assert_eq!(from_line(&line).map_err(|e| e.to_string()), Ok(ev));
        }
    }

    const FILE_1: &str = r#"{"event":"start","seq":1,"time":"2025-12-03T13:00:00.000Z","server":"dhcp1","node":"a"}
{"event":"offer","seq":2,"time":"2025-12-03T13:00:00.100Z","server":"dhcp1","node":"a","ip":"10.3.7.9","mac":"02:00:00:00:00:01","lease_start":"2025-12-03T13:00:00Z","lease_end":"2025-12-03T13:01:00Z","lease_seconds":60}
{"event":"commit","seq":3,"time":"2025-12-03T13:00:00.200Z","server":"dhcp1","node":"a","ip":"10.3.7.9","mac":"02:00:00:00:00:01","hostname":"alice","circuit_id":"01","lease_start":"2025-12-03T13:00:00Z","lease_end":"2025-12-03T14:00:00Z","lease_seconds":3600}
{"event":"commit","seq":4,"time":"2025-12-03T13:05:00.000Z","server":"dhcp1","node":"a","ip":"10.3.7.10","mac":"02:00:00:00:00:09","lease_start":"2025-12-03T13:05:00Z","lease_end":"2025-12-03T14:05:00Z","lease_seconds":3600}
{"event":"renew","seq":5,"time":"2025-12-03T13:30:00.000Z","server":"dhcp1","node":"a","ip":"10.3.7.9","mac":"02:00:00:00:00:01","hostname":"alice","lease_start":"2025-12-03T13:30:00Z","lease_end":"2025-12-03T14:30:00Z","lease_seconds":3600}
{"event":"commit","seq":6,"time":"2025-12-03T13:
"#;

    const FILE_2: &str = r#"{"event":"release","seq":6,"time":"2025-12-03T14:10:00.000Z","server":"dhcp1","node":"a","ip":"10.3.7.9","mac":"02:00:00:00:00:01","lease_end":"2025-12-03T14:10:00Z"}
{"event":"release","seq":6,"time":"2025-12-03T14:10:00.000Z","server":"dhcp1","node":"a","ip":"10.3.7.9","mac":"02:00:00:00:00:01","lease_end":"2025-12-03T14:10:00Z"}
{"event":"commit","seq":7,"time":"2025-12-03T15:00:00.000Z","server":"dhcp1","node":"a","ip":"10.3.7.9","mac":"02:00:00:00:00:02","lease_start":"2025-12-03T15:00:00Z","lease_end":"2025-12-03T15:10:00Z","lease_seconds":600}
{"event":"reclaim","seq":8,"time":"2025-12-03T16:00:00.000Z","server":"dhcp1","node":"a","ip":"10.3.7.9","mac":"02:00:00:00:00:03","previous_mac":"02:00:00:00:00:02","lease_start":"2025-12-03T16:00:00Z","lease_end":"2025-12-03T17:00:00Z","lease_seconds":3600}
{"event":"expire","seq":9,"time":"2025-12-03T17:00:05.000Z","server":"dhcp1","node":"a","ip":"10.3.7.9","mac":"02:00:00:00:00:03","lease_end":"2025-12-03T17:00:00Z"}
"#;

    fn ms(s: &str) -> u64 {
        parse_time_ms(s).expect("time")
    }

    fn files() -> (tempfile::TempDir, Vec<PathBuf>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut paths = Vec::new();
        // The rotated (older) file is named second: order of the paths does not matter.
        for (name, text) in [("audit.jsonl", FILE_2), ("audit.jsonl.1", FILE_1)] {
            let p = dir.path().join(name);
            std::fs::File::create(&p)
                .and_then(|mut f| f.write_all(text.as_bytes()))
                .expect("write");
            paths.push(p);
        }
        (dir, paths)
    }

    #[test]
    fn a_rebind_extends_the_holding_and_a_nak_ends_nothing() {
        let text = r#"{"event":"commit","seq":1,"time":"2025-12-03T13:00:00.000Z","server":"s","node":"a","ip":"10.3.7.9","mac":"02:00:00:00:00:01","lease_start":"2025-12-03T13:00:00Z","lease_end":"2025-12-03T14:00:00Z","lease_seconds":3600}
{"event":"nak","seq":2,"time":"2025-12-03T13:10:00.000Z","server":"s","node":"a","ip":"10.3.7.9","mac":"02:00:00:00:00:02"}
{"event":"rebind","seq":3,"time":"2025-12-03T13:55:00.000Z","server":"s","node":"a","ip":"10.3.7.9","mac":"02:00:00:00:00:01","lease_start":"2025-12-03T13:55:00Z","lease_end":"2025-12-03T14:55:00Z","lease_seconds":3600}
"#;
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("audit.jsonl");
        std::fs::write(&p, text).expect("write");
        let h = read_history(&[p], Ipv4Addr::new(10, 3, 7, 9), None).expect("reads");
        assert!(h.skipped.is_empty());
        let got: Vec<_> = h
            .holdings
            .iter()
            .map(|h| (h.mac.clone(), h.end_ms, h.ended_by, h.seqs.clone()))
            .collect();
        assert_eq!(
            got,
            vec![(
                Some("02:00:00:00:00:01".to_string()),
                Some(ms("2025-12-03T14:55:00Z")),
                None,
                vec![1, 3],
            )]
        );
    }

    #[test]
    fn history_lists_every_holding_of_the_address() {
        let (_dir, paths) = files();
        let ip = Ipv4Addr::new(10, 3, 7, 9);
        let h = read_history(&paths, ip, None).expect("reads");
        assert_eq!(
            h.skipped,
            vec![(paths[1].clone(), 6)],
            "the cut line is skipped and named"
        );
        assert_eq!(h.duplicates, 1);
        let got: Vec<_> = h
            .holdings
            .iter()
            .map(|h| {
                (
                    h.mac.clone().unwrap_or_default(),
                    h.start_ms,
                    h.end_ms,
                    h.ended_by,
                    h.seqs.clone(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "02:00:00:00:00:01".to_string(),
                    ms("2025-12-03T13:00:00.200Z"),
                    Some(ms("2025-12-03T14:10:00Z")),
                    Some(EventKind::Release),
                    vec![3, 5, 6],
                ),
                (
                    "02:00:00:00:00:02".to_string(),
                    ms("2025-12-03T15:00:00Z"),
                    Some(ms("2025-12-03T15:10:00Z")),
                    None,
                    vec![7],
                ),
                (
                    "02:00:00:00:00:03".to_string(),
                    ms("2025-12-03T16:00:00Z"),
                    Some(ms("2025-12-03T17:00:00Z")),
                    None,
                    vec![8],
                ),
            ]
        );
        assert_eq!(h.holdings[0].hostname.as_deref(), Some("alice"));
        assert_eq!(h.holdings[0].circuit_id.as_deref(), Some("01"));
    }

    #[test]
    fn history_at_a_time_names_the_holder_or_nobody() {
        let (_dir, paths) = files();
        let ip = Ipv4Addr::new(10, 3, 7, 9);
        let at = |t: &str| {
            read_history(&paths, ip, Some(t.parse().expect("ts")))
                .expect("reads")
                .holdings
                .into_iter()
                .map(|h| h.mac.unwrap_or_default())
                .collect::<Vec<_>>()
        };
        assert_eq!(at("2025-12-03T14:02:00Z"), vec!["02:00:00:00:00:01"]);
        assert_eq!(at("2025-12-03T12:59:00Z"), Vec::<String>::new());
        assert_eq!(
            at("2025-12-03T14:10:00Z"),
            Vec::<String>::new(),
            "released at 14:10"
        );
        assert_eq!(at("2025-12-03T15:05:00Z"), vec!["02:00:00:00:00:02"]);
        assert_eq!(
            at("2025-12-03T15:30:00Z"),
            Vec::<String>::new(),
            "lease ran out at 15:10"
        );
        assert_eq!(at("2025-12-03T16:59:59Z"), vec!["02:00:00:00:00:03"]);
        assert_eq!(at("2025-12-03T17:00:01Z"), Vec::<String>::new());
        // Another address in the same files.
        let other = read_history(&paths, Ipv4Addr::new(10, 3, 7, 10), None).expect("reads");
        assert_eq!(other.holdings.len(), 1);
        assert_eq!(other.holdings[0].mac.as_deref(), Some("02:00:00:00:00:09"));
    }

    #[test]
    fn a_missing_file_is_a_clear_error() {
        let err = read_history(&["/nonexistent/audit.jsonl"], Ipv4Addr::LOCALHOST, None)
            .expect_err("missing");
        assert!(
            err.to_string().starts_with("/nonexistent/audit.jsonl: "),
            "{err}"
        );
    }
}

//! `dhcpperf verify`: checks a server's lease export against what the generator was told.
//!
//! Rules: every client whose last event in the record is an ACK that has not expired (lease
//! end later than now + slack) and was not released must appear in the export at the ACKed
//! address, in state `leased`, unexpired, with the same hardware address (and client-id when
//! one was sent). No address may be held by two clients — neither in the export (two
//! unexpired `leased` entries) nor in the record (two live ACKs for one address). No client may
//! hold two addresses — neither in the record (an ACK for another address while an earlier
//! ACK of that client is live and not released) nor in the export (two unexpired `leased`
//! entries of one client). Events are taken in `seq` order (see [`crate::record`]).

use std::collections::HashMap;
use std::fs;
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::record::RecordEvent;

/// One lease of `prodhcpctl --json leases export --format json`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ExportLease {
    /// The address.
    pub address: Ipv4Addr,
    /// Slot state (`leased`, `offered`, `released`, `expired`, ...).
    pub state: String,
    /// `aa:bb:..`, lowercase.
    #[serde(default)]
    pub hwaddr: Option<String>,
    /// Client identifier, hex.
    #[serde(default)]
    pub client_id: Option<String>,
    /// Expiry, unix seconds.
    pub expires: u64,
}

/// Errors of loading the verification inputs.
#[derive(Debug, thiserror::Error)]
pub enum VerifyLoadError {
    /// The export could not be read.
    #[error("cannot read lease export {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The export is not a JSON array of leases.
    #[error("lease export {path} is not a JSON array of leases: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: serde_json::Error,
    },
}

/// Reads a lease export (a JSON array).
pub fn read_export(path: &Path) -> Result<Vec<ExportLease>, VerifyLoadError> {
    let text = fs::read_to_string(path).map_err(|source| VerifyLoadError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| VerifyLoadError::Parse {
        path: path.to_path_buf(),
        source,
    })
}

/// One broken rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Violation {
    /// An ACKed, live lease is not in the export (or not as an unexpired `leased` entry).
    Missing {
        /// The client (`mac` or `mac/client-id`).
        client: String,
        /// The ACKed address.
        address: Ipv4Addr,
        /// State of an export entry at that address, if there is one.
        found_state: Option<String>,
    },
    /// The address is leased, but to another client.
    WrongClient {
        /// The address.
        address: Ipv4Addr,
        /// The client the generator was told holds it.
        expected: String,
        /// The client(s) the export says hold it.
        found: Vec<String>,
    },
    /// One client holding two or more live addresses.
    TwoAddresses {
        /// The client.
        client: String,
        /// Its live addresses, in the order they were ACKed (record) or sorted (export).
        addresses: Vec<Ipv4Addr>,
        /// Where it was seen: `export` or `record`.
        source: String,
    },
    /// One address held by two or more clients.
    DuplicateAddress {
        /// The address.
        address: Ipv4Addr,
        /// Where the duplicate was seen: `export` or `record`.
        source: String,
        /// The clients.
        holders: Vec<String>,
    },
}

/// Counts of a verification, and the violations (all of them; the CLI prints the first few).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Record lines read.
    pub records: u64,
    /// ACK events.
    pub acks: u64,
    /// RELEASE events.
    pub releases: u64,
    /// Distinct clients in the record.
    pub clients: u64,
    /// Export entries read.
    pub export_entries: u64,
    /// Live leases checked.
    pub checked: u64,
    /// Checked leases found as expected.
    pub ok: u64,
    /// Clients skipped because their lease ended (or ends within the slack).
    pub ignored_expired: u64,
    /// Clients skipped because they released their lease.
    pub ignored_released: u64,
    /// Missing leases.
    pub missing: u64,
    /// Addresses leased to another client.
    pub wrong_client: u64,
    /// Addresses held by two clients.
    pub duplicate_address: u64,
    /// Clients holding two addresses.
    pub two_addresses: u64,
    /// Every violation.
    pub violations: Vec<Violation>,
}

impl VerifyReport {
    /// True when no rule was broken.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ClientKey {
    mac: String,
    client_id: Option<String>,
}

impl ClientKey {
    fn new(mac: &str, client_id: Option<&str>) -> Self {
        Self {
            mac: mac.to_ascii_lowercase(),
            client_id: client_id.map(str::to_ascii_lowercase),
        }
    }

    fn label(&self) -> String {
        match &self.client_id {
            Some(c) => format!("{}/{}", self.mac, c),
            None => self.mac.clone(),
        }
    }

    fn matches(&self, e: &ExportLease) -> bool {
        let hw_ok = e
            .hwaddr
            .as_deref()
            .is_some_and(|h| h.eq_ignore_ascii_case(&self.mac));
        let cid_ok = match &self.client_id {
            None => true,
            Some(c) => e
                .client_id
                .as_deref()
                .is_some_and(|x| x.eq_ignore_ascii_case(c)),
        };
        hw_ok && cid_ok
    }
}

fn export_label(e: &ExportLease) -> String {
    let hw = e.hwaddr.as_deref().unwrap_or("-");
    match &e.client_id {
        Some(c) => format!("{hw}/{c}"),
        None => hw.to_string(),
    }
}

#[derive(Debug, Clone)]
struct Held {
    address: Ipv4Addr,
    lease_end: u64,
    released: bool,
    order: usize,
}

/// Addresses the server told one client it holds, live at the time of a later ACK.
#[derive(Debug, Clone, Default)]
struct Moves {
    addresses: Vec<Ipv4Addr>,
}

/// Checks `export` against `records` at unix time `now`; leases ending within `slack` seconds
/// of `now` are not checked.
pub fn verify(
    records: &[RecordEvent],
    export: &[ExportLease],
    now: u64,
    slack: u64,
) -> VerifyReport {
    let mut rep = VerifyReport {
        records: records.len() as u64,
        export_entries: export.len() as u64,
        ..VerifyReport::default()
    };
    let mut held: HashMap<ClientKey, Held> = HashMap::new();
    let mut moves: HashMap<ClientKey, Moves> = HashMap::new();
    // Causal order; a stable sort keeps the given order for events without `seq`.
    let mut ordered: Vec<&RecordEvent> = records.iter().collect();
    ordered.sort_by_key(|e| e.seq());
    for (order, ev) in ordered.into_iter().enumerate() {
        match ev {
            RecordEvent::Ack {
                mac,
                client_id,
                address,
                lease_end,
                t_ms,
                ..
            } => {
                rep.acks += 1;
                let key = ClientKey::new(mac, client_id.as_deref());
                if let Some(prev) = held.get(&key) {
                    // The earlier lease was still live when the server ACKed another address:
                    // the server gave this client a second address.
                    if prev.address != *address && !prev.released && prev.lease_end > t_ms / 1000 {
                        let m = moves.entry(key.clone()).or_default();
                        if m.addresses.is_empty() {
                            m.addresses.push(prev.address);
                        }
                        m.addresses.push(*address);
                    }
                }
                held.insert(
                    key,
                    Held {
                        address: *address,
                        lease_end: *lease_end,
                        released: false,
                        order,
                    },
                );
            }
            RecordEvent::Release {
                mac,
                client_id,
                address,
                ..
            } => {
                rep.releases += 1;
                if let Some(h) = held.get_mut(&ClientKey::new(mac, client_id.as_deref())) {
                    if h.address == *address {
                        h.released = true;
                    }
                }
            }
        }
    }
    rep.clients = held.len() as u64;

    let active = |e: &ExportLease| e.state == "leased" && e.expires > now;
    let mut by_addr: HashMap<Ipv4Addr, Vec<&ExportLease>> = HashMap::new();
    let mut by_hw: HashMap<String, Vec<&ExportLease>> = HashMap::new();
    for e in export {
        by_addr.entry(e.address).or_default().push(e);
        if let (true, Some(hw)) = (active(e), &e.hwaddr) {
            by_hw.entry(hw.to_ascii_lowercase()).or_default().push(e);
        }
    }

    // Deterministic order: the order of the last event of each client.
    let mut clients: Vec<(&ClientKey, &Held)> = held.iter().collect();
    clients.sort_by_key(|(_, h)| h.order);
    let mut live_by_addr: HashMap<Ipv4Addr, Vec<String>> = HashMap::new();
    let mut two: Vec<Violation> = Vec::new();
    for (key, _) in clients.iter().copied() {
        if let Some(m) = moves.get(key) {
            two.push(Violation::TwoAddresses {
                client: key.label(),
                addresses: m.addresses.clone(),
                source: "record".into(),
            });
        }
        let mut in_export: Vec<Ipv4Addr> = by_hw
            .get(&key.mac)
            .map(Vec::as_slice)
            .unwrap_or(&[])
            .iter()
            .filter(|e| key.matches(e))
            .map(|e| e.address)
            .collect();
        in_export.sort();
        in_export.dedup();
        if in_export.len() > 1 {
            two.push(Violation::TwoAddresses {
                client: key.label(),
                addresses: in_export,
                source: "export".into(),
            });
        }
    }
    for (key, h) in clients {
        if h.released {
            rep.ignored_released += 1;
            continue;
        }
        if h.lease_end <= now.saturating_add(slack) {
            rep.ignored_expired += 1;
            continue;
        }
        rep.checked += 1;
        live_by_addr.entry(h.address).or_default().push(key.label());
        let entries = by_addr.get(&h.address).map(Vec::as_slice).unwrap_or(&[]);
        let live: Vec<&&ExportLease> = entries.iter().filter(|e| active(e)).collect();
        if live.iter().any(|e| key.matches(e)) {
            rep.ok += 1;
        } else if !live.is_empty() {
            rep.wrong_client += 1;
            rep.violations.push(Violation::WrongClient {
                address: h.address,
                expected: key.label(),
                found: live.iter().map(|e| export_label(e)).collect(),
            });
        } else {
            rep.missing += 1;
            rep.violations.push(Violation::Missing {
                client: key.label(),
                address: h.address,
                found_state: entries.first().map(|e| e.state.clone()),
            });
        }
    }

    let mut dup_export: Vec<(Ipv4Addr, Vec<String>)> = by_addr
        .iter()
        .filter_map(|(a, es)| {
            let holders: Vec<String> = es
                .iter()
                .filter(|e| active(e))
                .map(|e| export_label(e))
                .collect();
            (holders.len() > 1).then_some((*a, holders))
        })
        .collect();
    dup_export.sort();
    let mut dup_record: Vec<(Ipv4Addr, Vec<String>)> = live_by_addr
        .into_iter()
        .filter(|(_, hs)| hs.len() > 1)
        .collect();
    dup_record.sort();
    for v in two {
        rep.two_addresses += 1;
        rep.violations.push(v);
    }
    for (source, list) in [("export", dup_export), ("record", dup_record)] {
        for (address, holders) in list {
            rep.duplicate_address += 1;
            rep.violations.push(Violation::DuplicateAddress {
                address,
                source: source.to_string(),
                holders,
            });
        }
    }
    rep
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_000_000;

    fn ack(mac: &str, addr: [u8; 4], end: u64) -> RecordEvent {
        RecordEvent::Ack {
            seq: 0,
            t_ms: 0,
            mac: mac.into(),
            client_id: None,
            address: Ipv4Addr::from(addr),
            lease_end: end,
            server_id: None,
        }
    }

    fn release(mac: &str, addr: [u8; 4]) -> RecordEvent {
        RecordEvent::Release {
            seq: 0,
            t_ms: 0,
            mac: mac.into(),
            client_id: None,
            address: Ipv4Addr::from(addr),
        }
    }

    fn lease(addr: [u8; 4], state: &str, hw: &str, expires: u64) -> ExportLease {
        ExportLease {
            address: Ipv4Addr::from(addr),
            state: state.into(),
            hwaddr: Some(hw.into()),
            client_id: None,
            expires,
        }
    }

    const A: &str = "02:01:00:00:00:01";
    const B: &str = "02:01:00:00:00:02";
    const C: &str = "02:01:00:00:00:03";

    #[test]
    fn consistent_export_passes() {
        let rec = vec![
            ack(A, [10, 0, 0, 1], NOW + 100),
            ack(B, [10, 0, 0, 2], NOW + 100),
        ];
        let exp = vec![
            lease([10, 0, 0, 1], "leased", A, NOW + 100),
            lease([10, 0, 0, 2], "leased", &B.to_uppercase(), NOW + 100),
            lease([10, 0, 0, 3], "expired", C, NOW - 1),
        ];
        let r = verify(&rec, &exp, NOW, 0);
        assert!(r.passed(), "{r:?}");
        assert_eq!((r.checked, r.ok, r.acks, r.clients), (2, 2, 2, 2));
    }

    #[test]
    fn missing_lease_is_a_violation() {
        let rec = vec![
            ack(A, [10, 0, 0, 1], NOW + 100),
            ack(B, [10, 0, 0, 2], NOW + 100),
        ];
        let exp = vec![
            lease([10, 0, 0, 1], "leased", A, NOW + 100),
            lease([10, 0, 0, 2], "released", B, NOW + 100),
        ];
        let r = verify(&rec, &exp, NOW, 0);
        assert!(!r.passed());
        assert_eq!(r.missing, 1);
        assert_eq!(
            r.violations,
            vec![Violation::Missing {
                client: B.into(),
                address: Ipv4Addr::new(10, 0, 0, 2),
                found_state: Some("released".into()),
            }]
        );
        // Expired in the export counts as missing too.
        let exp = vec![lease([10, 0, 0, 1], "leased", A, NOW - 5)];
        let r = verify(&rec[..1], &exp, NOW, 0);
        assert_eq!(r.missing, 1);
    }

    #[test]
    fn wrong_client_is_a_violation() {
        let rec = vec![ack(A, [10, 0, 0, 1], NOW + 100)];
        let exp = vec![lease([10, 0, 0, 1], "leased", B, NOW + 100)];
        let r = verify(&rec, &exp, NOW, 0);
        assert_eq!(r.wrong_client, 1);
        assert!(!r.passed());
    }

    #[test]
    fn client_id_must_match_when_sent() {
        let rec = vec![RecordEvent::Ack {
            seq: 0,
            t_ms: 0,
            mac: A.into(),
            client_id: Some("01aa".into()),
            address: Ipv4Addr::new(10, 0, 0, 1),
            lease_end: NOW + 100,
            server_id: None,
        }];
        let mut l = lease([10, 0, 0, 1], "leased", A, NOW + 100);
        l.client_id = Some("01bb".into());
        assert_eq!(verify(&rec, &[l.clone()], NOW, 0).wrong_client, 1);
        l.client_id = Some("01AA".into());
        assert!(verify(&rec, &[l], NOW, 0).passed());
    }

    #[test]
    fn duplicate_addresses_are_violations() {
        // In the export.
        let rec = vec![ack(A, [10, 0, 0, 1], NOW + 100)];
        let exp = vec![
            lease([10, 0, 0, 1], "leased", A, NOW + 100),
            lease([10, 0, 0, 1], "leased", B, NOW + 100),
        ];
        let r = verify(&rec, &exp, NOW, 0);
        assert_eq!(r.duplicate_address, 1);
        assert_eq!(r.ok, 1);
        assert!(!r.passed());
        // In the record: the server told two live clients the same address.
        let rec = vec![
            ack(A, [10, 0, 0, 1], NOW + 100),
            ack(B, [10, 0, 0, 1], NOW + 100),
        ];
        let exp = vec![lease([10, 0, 0, 1], "leased", B, NOW + 100)];
        let r = verify(&rec, &exp, NOW, 0);
        assert_eq!(r.duplicate_address, 1);
        assert_eq!(r.wrong_client, 1);
    }

    #[test]
    fn expired_and_released_are_ignored() {
        let rec = vec![
            ack(A, [10, 0, 0, 1], NOW - 1),
            ack(B, [10, 0, 0, 2], NOW + 100),
            release(B, [10, 0, 0, 2]),
            ack(C, [10, 0, 0, 3], NOW + 3),
        ];
        let r = verify(&rec, &[], NOW, 5);
        assert!(r.passed(), "{r:?}");
        assert_eq!(
            (r.ignored_expired, r.ignored_released, r.checked),
            (2, 1, 0)
        );
        // A release of another address does not cancel the live lease; a later ACK does.
        let rec = vec![
            ack(A, [10, 0, 0, 1], NOW + 100),
            release(A, [10, 0, 0, 9]),
            release(B, [10, 0, 0, 2]),
            ack(B, [10, 0, 0, 2], NOW + 100),
        ];
        let r = verify(&rec, &[], NOW, 0);
        assert_eq!(r.missing, 2);
    }

    /// The server moved a client to a second address while its first lease was live, and the
    /// export shows it holding both. Before: verify kept only the last ACK and passed.
    #[test]
    fn a_client_holding_two_addresses_is_a_violation() {
        let rec = vec![
            ack(A, [10, 0, 0, 1], NOW + 100),
            ack(A, [10, 0, 0, 2], NOW + 100),
        ];
        let exp = vec![
            lease([10, 0, 0, 1], "leased", A, NOW + 100),
            lease([10, 0, 0, 2], "leased", A, NOW + 100),
        ];
        let r = verify(&rec, &exp, NOW, 0);
        assert!(!r.passed(), "{r:?}");
        assert_eq!(r.two_addresses, 2);
        let two = |source: &str| Violation::TwoAddresses {
            client: A.into(),
            addresses: vec![Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)],
            source: source.into(),
        };
        assert_eq!(r.violations, vec![two("record"), two("export")]);
        // Only in the export (the record has one ACK): still a second address.
        let r = verify(&rec[1..], &exp, NOW, 0);
        assert_eq!(r.violations, vec![two("export")]);
        // Only in the record (the server freed the first address later): the client was told
        // it holds both.
        let r = verify(&rec, &exp[1..], NOW, 0);
        assert_eq!(r.violations, vec![two("record")]);
    }

    /// Moving to another address is fine once the first lease was released or had ended.
    #[test]
    fn a_new_address_after_release_or_expiry_is_not_two() {
        let mut first = ack(A, [10, 0, 0, 1], NOW + 100);
        let rec = vec![
            first.clone(),
            release(A, [10, 0, 0, 1]),
            ack(A, [10, 0, 0, 2], NOW + 100),
        ];
        let exp = vec![lease([10, 0, 0, 2], "leased", A, NOW + 100)];
        assert!(verify(&rec, &exp, NOW, 0).passed());
        if let RecordEvent::Ack { lease_end, .. } = &mut first {
            *lease_end = 50;
        }
        let mut second = ack(A, [10, 0, 0, 2], NOW + 100);
        if let RecordEvent::Ack { t_ms, .. } = &mut second {
            *t_ms = 60_000;
        }
        assert!(verify(&[first, second], &exp, NOW, 0).passed());
    }

    /// Events are verified in `seq` order, not in the order given (the record file is written
    /// by several threads).
    #[test]
    fn events_are_taken_in_seq_order() {
        let mut a = ack(A, [10, 0, 0, 1], NOW + 100);
        let mut r = release(A, [10, 0, 0, 1]);
        if let (RecordEvent::Ack { seq: sa, .. }, RecordEvent::Release { seq: sr, .. }) =
            (&mut a, &mut r)
        {
            (*sa, *sr) = (7, 8);
        }
        let rep = verify(&[r, a], &[], NOW, 0);
        assert!(rep.passed(), "{rep:?}");
        assert_eq!((rep.ignored_released, rep.checked), (1, 0));
    }

    #[test]
    fn export_parses_prodhcpctl_json() {
        let text = r#"[
{"address":"10.0.0.1","state":"leased","hwaddr":"02:01:00:00:00:01","client_id":null,"expires":5,"subnet":"10.0.0.0/8"},
{"address":"10.0.0.2","state":"free","expires":0}
]"#;
        let v: Vec<ExportLease> = serde_json::from_str(text).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[1].hwaddr, None);
    }
}

//! Compares what dhcpperf saw (its `--record` file: every ACK received, every RELEASE sent)
//! with the audit records a collector stored ([`AuditRecord`]).
//!
//! # The matching rule
//!
//! 1. Audit records are first reduced to one per `seq`: the first copy in file order counts,
//!    later copies are duplicates (at-least-once delivery: a collector drops repeats by `seq`).
//!    Copies of one `seq` whose parameters differ are reported apart ([`Duplicates::conflicting`]):
//!    that is not a resend but two events numbered alike.
//! 2. Each generator event and each unique audit record gets a key (ip, mac, class):
//!    - generator ACK → class `ack`; audit `commit`, `renew`, `rebind` or `reclaim` → class
//!      `ack`;
//!    - generator RELEASE → class `release`; audit `release` → class `release`;
//!    - MACs are compared in lower case; an audit record without `ip` or `mac`, or with any
//!      other event, has no key.
//! 3. Per key, with `g` generator events and `a` audit records: the first `min(g, a)` match one
//!    to one (counts, not order: a client's commit then renews each need one record, whichever
//!    of commit/renew/rebind/reclaim the server called it). `g − a` generator events are
//!    [`AuditComparison::missing`]; `a − g` records are [`AuditComparison::extra_lease_records`],
//!    as are the lease records without a key (expire, decline, offer, …: may be legitimate).
//!    Appliance records (start, stop, reload, role, scrub) are neither.
//! 4. Sequence checks run over every record, appliance ones included (`seq` numbers them all):
//!    [`AuditComparison::gaps`] are the numbers absent between the smallest and the largest
//!    seen; [`AuditComparison::out_of_order`] counts the records whose `seq` is lower than the
//!    record before it in file order (a resend after a reconnect counts once here);
//!    [`AuditComparison::out_of_order_new`] counts the first copies whose `seq` is lower than
//!    the highest seen before them: real reordering, not repeats.
//!
//! The records must come from one appliance (`seq` is per appliance): filter by `server` /
//! `node` first when a collector receives several.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::Ipv4Addr;

use dhcpperf::record::RecordEvent;
use prodhcp_audit::EventKind;

use crate::rsyslog::AuditRecord;

/// Which generator event an audit record stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Class {
    /// A DHCPACK: audit `commit`, `renew`, `rebind` or `reclaim`.
    Ack,
    /// A DHCPRELEASE: audit `release`.
    Release,
}

impl Class {
    /// The class of an audit event name, `None` for every other event.
    pub fn of_event(event: &str) -> Option<Class> {
        match event {
            "commit" | "renew" | "rebind" | "reclaim" | "reservation-used" => Some(Class::Ack),
            "release" => Some(Class::Release),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Class::Ack => "ack",
            Class::Release => "release",
        }
    }
}

/// Records seen more than once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Duplicates {
    /// Extra copies in all (a `seq` stored three times counts 2).
    pub count: usize,
    /// The `seq`s stored more than once, ascending.
    pub seqs: Vec<u64>,
    /// Among them, the `seq`s whose copies have different parameters (two events, one number).
    pub conflicting: Vec<u64>,
}

/// The result of [`compare`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditComparison {
    /// ACKs in the generator's record.
    pub acks_seen: usize,
    /// RELEASEs in the generator's record.
    pub releases_seen: usize,
    /// Audit records read (every copy, appliance events included).
    pub records: usize,
    /// One line per generator event without its audit record:
    /// `ack ip=10.0.0.7 mac=02:01:00:00:00:05 (2 seen, 1 recorded)`, one line per missing event.
    pub missing: Vec<String>,
    /// Records stored more than once.
    pub duplicates: Duplicates,
    /// Missing `seq` ranges (inclusive) between the smallest and the largest seen.
    pub gaps: Vec<(u64, u64)>,
    /// How many records have a lower `seq` than the record before them, in file order.
    pub out_of_order: usize,
    /// First copies whose `seq` is lower than the highest seen before them (reordering, not
    /// resends).
    pub out_of_order_new: usize,
    /// Lease records no generator event accounts for (first copies only).
    pub extra_lease_records: Vec<AuditRecord>,
}

impl AuditComparison {
    /// True when every generator event has its record, no `seq` is missing, none is reused
    /// for two different events and nothing arrived reordered. Duplicates of the same event,
    /// resends and extra lease records are allowed (check them apart).
    pub fn is_lossless(&self) -> bool {
        self.missing.is_empty()
            && self.gaps.is_empty()
            && self.duplicates.conflicting.is_empty()
            && self.out_of_order_new == 0
    }

    /// How many `seq` numbers the gaps cover.
    pub fn gap_count(&self) -> u64 {
        self.gaps.iter().map(|(a, b)| b - a + 1).sum()
    }
}

impl fmt::Display for AuditComparison {
    /// A summary for assertion messages (at most 10 missing events listed).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "acks {} releases {} records {}; missing {}; duplicates {} (seqs {:?}, conflicting {:?}); \
             gaps {:?}; out of order {} ({} new); extra lease records {}",
            self.acks_seen,
            self.releases_seen,
            self.records,
            self.missing.len(),
            self.duplicates.count,
            truncate(&self.duplicates.seqs),
            truncate(&self.duplicates.conflicting),
            truncate(&self.gaps),
            self.out_of_order,
            self.out_of_order_new,
            self.extra_lease_records.len()
        )?;
        for m in self.missing.iter().take(10) {
            write!(f, "\n  missing {m}")?;
        }
        Ok(())
    }
}

fn truncate<T: Clone>(v: &[T]) -> Vec<T> {
    v.iter().take(20).cloned().collect()
}

type Key = (Ipv4Addr, String, Class);

fn generator_key(ev: &RecordEvent) -> Key {
    match ev {
        RecordEvent::Ack { address, mac, .. } => (*address, mac.to_ascii_lowercase(), Class::Ack),
        RecordEvent::Release { address, mac, .. } => {
            (*address, mac.to_ascii_lowercase(), Class::Release)
        }
    }
}

fn is_lease_record(r: &AuditRecord) -> bool {
    // An unknown event name is treated as a lease event: better reported than hidden.
    EventKind::from_name(&r.event).is_none_or(EventKind::is_lease_event)
}

/// Compares the generator's events with the stored audit records (see the module docs for
/// the exact rule).
pub fn compare(generator: &[RecordEvent], audit: &[AuditRecord]) -> AuditComparison {
    let mut out = AuditComparison {
        records: audit.len(),
        ..AuditComparison::default()
    };

    // 1. First copy per seq; duplicates; order.
    let mut first: HashMap<u64, &AuditRecord> = HashMap::new();
    let mut copies: BTreeMap<u64, usize> = BTreeMap::new();
    let mut conflicting = BTreeSet::new();
    let mut unique: Vec<&AuditRecord> = Vec::new();
    let mut prev: Option<u64> = None;
    let mut max: Option<u64> = None;
    for r in audit {
        let is_new = match first.get(&r.seq) {
            Some(f) => {
                *copies.entry(r.seq).or_insert(1) += 1;
                if f.params != r.params {
                    conflicting.insert(r.seq);
                }
                false
            }
            None => {
                first.insert(r.seq, r);
                unique.push(r);
                true
            }
        };
        if prev.is_some_and(|p| r.seq < p) {
            out.out_of_order += 1;
        }
        if is_new && max.is_some_and(|m| r.seq < m) {
            out.out_of_order_new += 1;
        }
        prev = Some(r.seq);
        max = max.max(Some(r.seq));
    }
    out.duplicates = Duplicates {
        count: copies.values().map(|c| c - 1).sum(),
        seqs: copies.keys().copied().collect(),
        conflicting: conflicting.into_iter().collect(),
    };

    // Gaps between the smallest and largest seq.
    let mut seqs: Vec<u64> = first.keys().copied().collect();
    seqs.sort_unstable();
    for w in seqs.windows(2) {
        if w[1] > w[0] + 1 {
            out.gaps.push((w[0] + 1, w[1] - 1));
        }
    }

    // 2–3. Counts per key.
    let mut want: BTreeMap<Key, usize> = BTreeMap::new();
    for ev in generator {
        match ev {
            RecordEvent::Ack { .. } => out.acks_seen += 1,
            RecordEvent::Release { .. } => out.releases_seen += 1,
        }
        *want.entry(generator_key(ev)).or_default() += 1;
    }
    let mut have: BTreeMap<Key, Vec<&AuditRecord>> = BTreeMap::new();
    for r in unique {
        let key = match (Class::of_event(&r.event), r.ip, r.mac.as_deref()) {
            (Some(c), Some(ip), Some(mac)) => (ip, mac.to_ascii_lowercase(), c),
            _ => {
                if is_lease_record(r) {
                    out.extra_lease_records.push(r.clone());
                }
                continue;
            }
        };
        have.entry(key).or_default().push(r);
    }
    for (key, &g) in &want {
        let a = have.get(key).map_or(0, Vec::len);
        for _ in a..g {
            out.missing.push(format!(
                "{} ip={} mac={} ({g} seen, {a} recorded)",
                key.2.name(),
                key.0,
                key.1
            ));
        }
    }
    for (key, recs) in &have {
        let g = want.get(key).copied().unwrap_or(0);
        out.extra_lease_records
            .extend(recs.iter().skip(g).map(|r| (*r).clone()));
    }
    out.extra_lease_records.sort_by_key(|r| r.seq);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(seq: u64, ip: [u8; 4], mac: &str) -> RecordEvent {
        RecordEvent::Ack {
            seq,
            t_ms: 0,
            mac: mac.into(),
            client_id: None,
            address: ip.into(),
            lease_end: 0,
            server_id: None,
        }
    }

    fn release(seq: u64, ip: [u8; 4], mac: &str) -> RecordEvent {
        RecordEvent::Release {
            seq,
            t_ms: 0,
            mac: mac.into(),
            client_id: None,
            address: ip.into(),
        }
    }

    fn rec(seq: u64, event: &str, ip: Option<[u8; 4]>, mac: Option<&str>) -> AuditRecord {
        let mut params = BTreeMap::new();
        params.insert("seq".to_string(), seq.to_string());
        params.insert("event".to_string(), event.to_string());
        if let Some(ip) = ip {
            params.insert("ip".into(), Ipv4Addr::from(ip).to_string());
        }
        if let Some(m) = mac {
            params.insert("mac".into(), m.into());
        }
        AuditRecord {
            seq,
            event: event.into(),
            ip: ip.map(Ipv4Addr::from),
            mac: mac.map(str::to_string),
            raw: format!("seq {seq}"),
            params,
        }
    }

    const A: &str = "02:01:00:00:00:0a";
    const B: &str = "02:01:00:00:00:0b";

    #[test]
    fn a_rebind_answers_an_ack_and_a_nak_is_an_extra_lease_record() {
        assert_eq!(Class::of_event("rebind"), Some(Class::Ack));
        assert_eq!(Class::of_event("nak"), None);
        let gen = [ack(1, [10, 0, 0, 1], A), ack(2, [10, 0, 0, 1], A)];
        let audit = [
            rec(1, "commit", Some([10, 0, 0, 1]), Some(A)),
            rec(2, "nak", Some([10, 0, 0, 9]), Some(B)),
            rec(3, "rebind", Some([10, 0, 0, 1]), Some(A)),
        ];
        let c = compare(&gen, &audit);
        assert!(c.missing.is_empty(), "{c:?}");
        assert_eq!(c.extra_lease_records.len(), 1);
        assert_eq!(c.extra_lease_records[0].event, "nak");
        assert!(c.gaps.is_empty());
    }

    #[test]
    fn every_event_with_its_record_is_lossless() {
        let gen = [
            ack(1, [10, 0, 0, 1], A),
            ack(2, [10, 0, 0, 2], B),
            ack(3, [10, 0, 0, 1], A),
            release(4, [10, 0, 0, 2], B),
        ];
        let audit = [
            rec(1, "start", None, None),
            rec(2, "commit", Some([10, 0, 0, 1]), Some(A)),
            // The server may call the first ACK of B a reclaim; MACs in upper case still match.
            rec(3, "reclaim", Some([10, 0, 0, 2]), Some(&B.to_uppercase())),
            rec(4, "renew", Some([10, 0, 0, 1]), Some(A)),
            rec(5, "release", Some([10, 0, 0, 2]), Some(B)),
            rec(6, "expire", Some([10, 0, 0, 1]), Some(A)),
        ];
        let c = compare(&gen, &audit);
        assert!(c.is_lossless(), "{c}");
        assert_eq!((c.acks_seen, c.releases_seen, c.records), (3, 1, 6));
        assert!(c.missing.is_empty() && c.gaps.is_empty());
        assert_eq!(c.duplicates, Duplicates::default());
        assert_eq!((c.out_of_order, c.out_of_order_new), (0, 0));
        // The expiry has no generator event: extra, not an error.
        assert_eq!(
            c.extra_lease_records
                .iter()
                .map(|r| r.seq)
                .collect::<Vec<_>>(),
            [6]
        );
    }

    #[test]
    fn a_renew_without_its_record_is_missing_and_counted_per_key() {
        let gen = [
            ack(1, [10, 0, 0, 1], A),
            ack(2, [10, 0, 0, 1], A),
            ack(3, [10, 0, 0, 1], A),
            release(4, [10, 0, 0, 1], A),
        ];
        let audit = [
            rec(1, "commit", Some([10, 0, 0, 1]), Some(A)),
            rec(2, "renew", Some([10, 0, 0, 1]), Some(A)),
            // A release recorded for the wrong address does not count for this one.
            rec(3, "release", Some([10, 0, 0, 9]), Some(A)),
        ];
        let c = compare(&gen, &audit);
        assert!(!c.is_lossless());
        assert_eq!(
            c.missing,
            [
                "ack ip=10.0.0.1 mac=02:01:00:00:00:0a (3 seen, 2 recorded)",
                "release ip=10.0.0.1 mac=02:01:00:00:00:0a (1 seen, 0 recorded)",
            ]
        );
        assert_eq!(c.extra_lease_records.len(), 1);
        assert_eq!(c.extra_lease_records[0].seq, 3);
    }

    #[test]
    fn gaps_duplicates_and_order() {
        let audit = [
            rec(1, "start", None, None),
            rec(2, "commit", Some([10, 0, 0, 1]), Some(A)),
            rec(5, "commit", Some([10, 0, 0, 2]), Some(B)),
            // A resend after a reconnect: 2 again (same event), then 4 for the first time.
            rec(2, "commit", Some([10, 0, 0, 1]), Some(A)),
            rec(4, "commit", Some([10, 0, 0, 3]), Some(A)),
            rec(5, "commit", Some([10, 0, 0, 2]), Some(B)),
            rec(5, "commit", Some([10, 0, 0, 2]), Some(B)),
            // Seq 9 used for two different events.
            rec(9, "renew", Some([10, 0, 0, 1]), Some(A)),
            rec(9, "release", Some([10, 0, 0, 1]), Some(A)),
        ];
        let gen = [
            ack(1, [10, 0, 0, 1], A),
            ack(2, [10, 0, 0, 2], B),
            ack(3, [10, 0, 0, 3], A),
            ack(4, [10, 0, 0, 1], A),
        ];
        let c = compare(&gen, &audit);
        assert_eq!(c.gaps, [(3, 3), (6, 8)]);
        assert_eq!(c.gap_count(), 4);
        assert_eq!(c.duplicates.count, 4);
        assert_eq!(c.duplicates.seqs, [2, 5, 9]);
        assert_eq!(c.duplicates.conflicting, [9]);
        // 5 → 2 is the one drop in file order (a resend); 4 after 5 is a first copy late.
        assert_eq!((c.out_of_order, c.out_of_order_new), (1, 1));
        // Duplicates are not double-counted against the generator: each ACK has one record.
        assert!(c.missing.is_empty(), "{c}");
        assert!(c.extra_lease_records.is_empty(), "{c}");
        assert!(!c.is_lossless());
        assert!(c.to_string().contains("gaps [(3, 3), (6, 8)]"), "{c}");
    }

    #[test]
    fn records_without_ip_or_mac_and_unknown_events_are_extra() {
        let audit = [
            rec(1, "commit", Some([10, 0, 0, 1]), None),
            rec(2, "decline", Some([10, 0, 0, 2]), Some(B)),
            rec(3, "reload", None, None),
            rec(4, "something-new", None, None),
        ];
        let c = compare(&[ack(1, [10, 0, 0, 1], A)], &audit);
        assert_eq!(c.missing.len(), 1);
        assert_eq!(
            c.extra_lease_records
                .iter()
                .map(|r| r.seq)
                .collect::<Vec<_>>(),
            [1, 2, 4]
        );
        assert!(c.gaps.is_empty());
    }

    #[test]
    fn nothing_against_nothing() {
        let c = compare(&[], &[]);
        assert!(c.is_lossless());
        assert_eq!(c, AuditComparison::default());
    }
}

//! `prodhcpctl` output for the lease table's scrub (part of `status`) and for `consumers`.

use std::fmt::Write as _;

use crate::cli::{format_utc, group_digits};
use prodhcp_proto::{ConsumersData, ScrubCounts, ScrubStatus};

fn counts_line(c: &ScrubCounts) -> String {
    let mut s = format!(
        "slots checked {}, damaged {}, repaired {}",
        group_digits(c.slots_checked),
        group_digits(c.damaged),
        group_digits(c.repaired)
    );
    if c.damaged > 0 {
        let _ = write!(
            s,
            " (stuck locks {}, torn slots {}, bitmap bits {}, summary bits {}, unindexed {}, stale index entries {})",
            c.stuck_locks, c.torn_slots, c.bitmap_wrong, c.summary_wrong, c.unindexed, c.stale_index
        );
    }
    if c.busy_skipped > 0 {
        let _ = write!(s, ", busy skipped {}", c.busy_skipped);
    }
    s
}

/// The `scrub:` lines of `status`.
pub fn format_scrub(s: &ScrubStatus) -> String {
    let mut out = String::new();
    match &s.last_pass {
        Some(p) => {
            let _ = writeln!(
                out,
                "scrub: last pass {} ({:.1} s), {}",
                format_utc(p.finished),
                p.duration_ms as f64 / 1000.0,
                counts_line(&p.counts)
            );
        }
        None => {
            let _ = writeln!(out, "scrub: no pass finished yet");
        }
    }
    if s.state == "running" {
        let _ = writeln!(
            out,
            "scrub: in progress ({} {}%), so far {}",
            s.phase.as_deref().unwrap_or("?"),
            s.progress_percent.unwrap_or(0),
            s.current.as_ref().map(counts_line).unwrap_or_default()
        );
    } else if let Some(n) = s.next_pass_in_secs {
        let _ = writeln!(
            out,
            "scrub: next pass in {}",
            crate::cli::format_duration(n)
        );
    }
    out
}

/// Human form of `consumers`.
pub fn format_consumers(d: &ConsumersData) -> String {
    let mut out = String::new();
    let mut any = false;
    for r in &d.rings {
        if r.consumers.is_empty() && r.evictions == 0 {
            continue;
        }
        any = true;
        let _ = writeln!(
            out,
            "ring {} (owner {}): head {}, capacity {}, evictions {}",
            r.ring, r.owner, r.head, r.capacity, r.evictions
        );
        for c in &r.consumers {
            let _ = writeln!(
                out,
                "  {}:{}  {}  cursor {}  lag {}",
                r.ring, c.id, c.state, c.cursor, c.lag
            );
        }
    }
    if !any {
        let _ = writeln!(
            out,
            "no ring consumers ({} rings, no evictions)",
            d.rings.len()
        );
    }
    out
}

/// Parses `RING:ID` (e.g. `worker-0:1`).
pub fn parse_consumer_target(s: &str) -> Result<(String, u32), String> {
    let (ring, id) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("{s:?}: give RING:ID, e.g. worker-0:0"))?;
    let id = id
        .parse::<u32>()
        .map_err(|_| format!("{s:?}: the consumer id must be a number"))?;
    if ring.is_empty() {
        return Err(format!("{s:?}: the ring name is empty"));
    }
    Ok((ring.to_string(), id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use prodhcp_proto::{ConsumerEntry, RingConsumers, ScrubPass};

    #[test]
    fn scrub_lines_show_the_last_pass_and_progress() {
        let s = ScrubStatus {
            state: "running".into(),
            phase: Some("slots".into()),
            progress_percent: Some(40),
            current: Some(ScrubCounts {
                slots_checked: 1000,
                ..Default::default()
            }),
            last_pass: Some(ScrubPass {
                started: 0,
                finished: 60,
                duration_ms: 1500,
                counts: ScrubCounts {
                    slots_checked: 254,
                    damaged: 65,
                    repaired: 65,
                    torn_slots: 64,
                    stale_index: 1,
                    ..Default::default()
                },
            }),
            passes: 1,
            next_pass_in_secs: None,
        };
        let text = format_scrub(&s);
        assert!(
            text.contains("scrub: last pass 1970-01-01 00:01:00 UTC (1.5 s), slots checked 254, damaged 65, repaired 65 (stuck locks 0, torn slots 64,"),
            "{text}"
        );
        assert!(
            text.contains(
                "scrub: in progress (slots 40%), so far slots checked 1,000, damaged 0, repaired 0"
            ),
            "{text}"
        );
        assert_eq!(
            format_scrub(&ScrubStatus::default()),
            "scrub: no pass finished yet\n"
        );
    }

    #[test]
    fn consumers_are_listed_and_targets_parsed() {
        let d = ConsumersData {
            rings: vec![RingConsumers {
                ring: "worker-0".into(),
                owner: 1,
                head: 3000,
                capacity: 1024,
                evictions: 1,
                consumers: vec![ConsumerEntry {
                    id: 2,
                    state: "evicted".into(),
                    cursor: 0,
                    lag: 3000,
                }],
            }],
        };
        let text = format_consumers(&d);
        assert!(
            text.contains("ring worker-0 (owner 1): head 3000, capacity 1024, evictions 1"),
            "{text}"
        );
        assert!(
            text.contains("worker-0:2  evicted  cursor 0  lag 3000"),
            "{text}"
        );
        assert_eq!(
            parse_consumer_target("worker-1:3"),
            Ok(("worker-1".into(), 3))
        );
        assert!(parse_consumer_target("worker-1").is_err());
        assert!(parse_consumer_target("worker-1:x").is_err());
        assert!(parse_consumer_target(":1").is_err());
    }
}

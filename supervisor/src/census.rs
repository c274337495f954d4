//! Per-state counts of every pool (offered, leased, declined, reserved) for the metrics
//! endpoint. Counting reads every slot: at 10M leases that takes seconds, so it never runs on
//! a scrape. The supervisor runs a pass in slices of [`SLICE`] slots per loop turn and the
//! endpoint serves the last finished pass.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::ops::Range;
use std::time::{Duration, Instant};

use prodhcp_config::Config;
use shm_layout::{LeaseState, Table};

/// Slots read per loop turn.
pub const SLICE: u32 = 65_536;
/// Loop turn while a pass runs.
pub const TURN: Duration = Duration::from_millis(10);

/// One pool's counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateCounts {
    /// Offered (held for a client).
    pub offered: u64,
    /// Leased.
    pub leased: u64,
    /// Declined (quarantined).
    pub declined: u64,
    /// Reserved.
    pub reserved: u64,
}

impl StateCounts {
    /// Counts one slot in `state` (free, expired and abandoned slots count nowhere).
    pub fn add(&mut self, state: LeaseState) {
        match state {
            LeaseState::Offered => self.offered += 1,
            LeaseState::Leased => self.leased += 1,
            LeaseState::Declined => self.declined += 1,
            LeaseState::Reserved => self.reserved += 1,
            _ => {}
        }
    }
}

/// A pool (first, last address) and its slot spans.
type PoolSpans = ((Ipv4Addr, Ipv4Addr), Vec<Range<u32>>);

#[derive(Debug)]
struct Pass {
    pools: Vec<PoolSpans>,
    pool: usize,
    span: usize,
    at: u32,
    counts: HashMap<(Ipv4Addr, Ipv4Addr), StateCounts>,
    started: Instant,
}

/// The census: the last finished pass and the one in progress.
#[derive(Debug, Default)]
pub struct Census {
    done: HashMap<(Ipv4Addr, Ipv4Addr), StateCounts>,
    finished: Option<Instant>,
    /// How long the last pass took.
    pub last_duration: Option<Duration>,
    running: Option<Pass>,
}

impl Census {
    /// Counts of the pool `first..=last` from the last finished pass.
    pub fn get(&self, first: Ipv4Addr, last: Ipv4Addr) -> Option<StateCounts> {
        self.done.get(&(first, last)).copied()
    }

    /// When the loop should turn next for the census.
    pub fn wake_in(&self, every: Duration, now: Instant) -> Duration {
        if self.running.is_some() {
            return TURN;
        }
        self.finished.map_or(Duration::ZERO, |f| {
            (f + every).saturating_duration_since(now)
        })
    }

    /// Starts a pass when `every` has passed since the last, or reads one more slice.
    pub fn step(&mut self, table: &Table, config: &Config, every: Duration, now: Instant) {
        if self.running.is_none() {
            if !self.wake_in(every, now).is_zero() {
                return;
            }
            let pools = config
                .subnets
                .iter()
                .flat_map(|s| s.pools.iter())
                .map(|p| {
                    (
                        (p.first, p.last),
                        table.slot_spans(u32::from(p.first), u32::from(p.last)),
                    )
                })
                .collect();
            self.running = Some(Pass {
                pools,
                pool: 0,
                span: 0,
                at: 0,
                counts: HashMap::new(),
                started: now,
            });
        }
        let Some(pass) = self.running.as_mut() else {
            return;
        };
        let mut budget = SLICE;
        while budget > 0 {
            let Some((key, spans)) = pass.pools.get(pass.pool) else {
                break;
            };
            let key = *key;
            let Some(span) = spans.get(pass.span) else {
                pass.counts.entry(key).or_default();
                pass.pool += 1;
                pass.span = 0;
                pass.at = 0;
                continue;
            };
            let from = span.start + pass.at;
            let to = span.end.min(from.saturating_add(budget));
            let c = pass.counts.entry(key).or_default();
            for slot in from..to {
                if let Ok(info) = table.read(slot) {
                    c.add(info.state);
                }
            }
            budget -= to - from;
            if to >= span.end {
                pass.span += 1;
                pass.at = 0;
            } else {
                pass.at = to - span.start;
            }
        }
        if pass.pool >= pass.pools.len() {
            if let Some(pass) = self.running.take() {
                self.done = pass.counts;
                self.finished = Some(Instant::now());
                self.last_duration = Some(pass.started.elapsed());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shm_layout::{Ring, SUPERVISOR_OWNER};

    #[test]
    fn a_pass_runs_in_slices_and_counts_each_pool() {
        let dir = tempfile::tempdir().unwrap();
        let config = prodhcp_config::parse(&format!(
            r#"(state_dir: "{}", subnets: [
                (network: "10.0.0.0/8", pools: ["10.0.0.1-10.1.134.160"],
                 reservations: [(mac: "02:00:00:00:00:01", address: "10.0.0.5"),
                                (mac: "02:00:00:00:00:02", address: "10.1.0.5"),
                                (mac: "02:00:00:00:00:03", address: "10.1.134.160")]),
                (network: "192.168.0.0/24", pools: ["192.168.0.10-192.168.0.59"],
                 reservations: [(mac: "02:00:00:00:00:04", address: "192.168.0.20")]),
            ])"#,
            dir.path().display()
        ))
        .unwrap();
        let table =
            Table::create(&dir.path().join("t"), &crate::daemon::table_spec(&config)).unwrap();
        let ring = Ring::open_or_create(&dir.path().join("r"), SUPERVISOR_OWNER, 1024).unwrap();
        crate::leases::apply_reservations(&table, &ring, SUPERVISOR_OWNER, &config, None);
        let a = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 1, 134, 160));
        let b = (
            Ipv4Addr::new(192, 168, 0, 10),
            Ipv4Addr::new(192, 168, 0, 59),
        );
        let every = Duration::from_secs(10);
        let t0 = Instant::now();
        let mut c = Census::default();
        assert_eq!(c.wake_in(every, t0), Duration::ZERO);
        // Pool A has 100,000 addresses: more than one slice.
        c.step(&table, &config, every, t0);
        assert_eq!(c.get(a.0, a.1), None, "finished in one slice");
        assert_eq!(c.wake_in(every, t0), TURN);
        c.step(&table, &config, every, t0);
        let got_a = c.get(a.0, a.1).expect("pool A counted");
        assert_eq!(got_a.reserved, 3);
        assert_eq!(got_a.leased, 0);
        assert_eq!(c.get(b.0, b.1).map(|s| s.reserved), Some(1));
        // The next pass waits for `every`.
        assert!(c.wake_in(every, Instant::now()) > Duration::from_secs(9));
        c.step(&table, &config, every, Instant::now());
        assert_eq!(c.get(a.0, a.1), Some(got_a));
    }
}

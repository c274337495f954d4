//! Pool utilisation alarms (issue 11): every `pool_alarms.interval` the supervisor counts each
//! pool's free addresses (a popcount of the table's free bitmap over the pool's slot spans,
//! cheap even for millions of addresses), raises a level when the utilisation crosses a
//! threshold upwards and clears it only below the threshold minus the hysteresis, and estimates
//! the time to exhaustion from the recent rate at which free addresses decrease.
//!
//! The state is keyed by pool range, so it survives reloads that keep the pool.

use std::collections::{HashMap, VecDeque};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use prodhcp_config::alarms::LEVEL_NAMES;
use prodhcp_config::Config;
use prodhcp_proto::{AlarmsData, PoolAlarmStatus};

/// Samples of the free count kept per pool over the rate window (one every window / this).
const SAMPLES_PER_WINDOW: u32 = 8;

/// The level a pool at `utilisation` percent goes to from `current`: up to the highest
/// threshold reached; down only while below the current level's threshold minus `hysteresis`.
pub fn next_level(current: u8, utilisation: f64, thresholds: [u8; 3], hysteresis: u8) -> u8 {
    let reached = thresholds
        .iter()
        .filter(|&&t| utilisation >= f64::from(t))
        .count() as u8;
    if reached > current {
        return reached;
    }
    let mut level = current.min(3);
    while level > 0
        && utilisation < f64::from(thresholds[usize::from(level) - 1]) - f64::from(hysteresis)
    {
        level -= 1;
    }
    level.max(reached)
}

/// One pool's alarm state.
#[derive(Debug, Clone)]
pub struct PoolAlarm {
    /// The pool's subnet, as text.
    pub subnet: String,
    /// First address.
    pub first: Ipv4Addr,
    /// Last address.
    pub last: Ipv4Addr,
    /// Addresses in the pool.
    pub size: u64,
    /// Free addresses at the last evaluation.
    pub free: u64,
    /// Percent in use at the last evaluation.
    pub utilisation: f64,
    /// 0 none .. 3 critical.
    pub level: u8,
    /// Thresholds in force for this pool.
    pub thresholds: [u8; 3],
    /// Unix time (s) the current level was reached.
    pub raised_at: Option<u64>,
    /// Seconds to exhaustion at the recent rate, while the free count decreases.
    pub estimate: Option<u64>,
    samples: VecDeque<(Instant, u64)>,
}

impl PoolAlarm {
    /// `first-last`, the pool label.
    pub fn range(&self) -> String {
        format!("{}-{}", self.first, self.last)
    }
}

/// A level change, for the log, the audit trail and the metrics.
#[derive(Debug, Clone)]
pub struct Transition {
    /// The pool after the change.
    pub pool: PoolAlarm,
    /// Its level before.
    pub from: u8,
}

impl Transition {
    /// `raised` or `cleared`.
    pub fn change(&self) -> &'static str {
        if self.pool.level > self.from {
            "raised"
        } else {
            "cleared"
        }
    }

    /// The `key=value` words of the audit event's `finding`.
    pub fn detail(&self) -> String {
        let p = &self.pool;
        format!(
            "subnet={} pool={} level={} previous={} utilisation={:.1}% free={} estimate={}",
            p.subnet,
            p.range(),
            LEVEL_NAMES[usize::from(p.level)],
            LEVEL_NAMES[usize::from(self.from)],
            p.utilisation,
            p.free,
            p.estimate.map_or_else(|| "-".into(), |s| format!("{s}s"))
        )
    }
}

/// Every pool's alarm state.
#[derive(Debug, Default)]
pub struct Alarms {
    pools: Vec<PoolAlarm>,
    last_eval: Option<Instant>,
    evaluated_at: Option<u64>,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Alarms {
    /// When the next evaluation is due.
    pub fn due_in(&self, config: &Config, now: Instant) -> Duration {
        let every = Duration::from_secs(u64::from(config.pool_alarms.interval));
        self.last_eval.map_or(Duration::ZERO, |t| {
            (t + every).saturating_duration_since(now)
        })
    }

    /// Evaluates every pool of `config` if an interval has passed; `free_of(first, last)` is
    /// the pool's free count. Returns the level changes.
    pub fn tick(
        &mut self,
        config: &Config,
        now: Instant,
        free_of: impl Fn(u32, u32) -> u64,
    ) -> Vec<Transition> {
        if !self.due_in(config, now).is_zero() {
            return Vec::new();
        }
        self.last_eval = Some(now);
        let unix = unix_now();
        self.evaluated_at = Some(unix);
        let a = config.pool_alarms;
        let window = Duration::from_secs(u64::from(a.rate_window));
        let spacing = window / SAMPLES_PER_WINDOW;
        let mut old: HashMap<(Ipv4Addr, Ipv4Addr), PoolAlarm> = std::mem::take(&mut self.pools)
            .into_iter()
            .map(|p| ((p.first, p.last), p))
            .collect();
        let mut changes = Vec::new();
        for s in &config.subnets {
            let thresholds = config.alarm_thresholds(s).0;
            for r in &s.pools {
                let size = r.len();
                let free = free_of(u32::from(r.first), u32::from(r.last)).min(size);
                let utilisation = if size == 0 {
                    0.0
                } else {
                    (size - free) as f64 * 100.0 / size as f64
                };
                let mut p = old.remove(&(r.first, r.last)).unwrap_or_else(|| PoolAlarm {
                    subnet: s.network.to_string(),
                    first: r.first,
                    last: r.last,
                    size,
                    free,
                    utilisation,
                    level: 0,
                    thresholds,
                    raised_at: None,
                    estimate: None,
                    samples: VecDeque::new(),
                });
                let previous_free = p.free;
                p.subnet = s.network.to_string();
                p.size = size;
                p.free = free;
                p.utilisation = utilisation;
                p.thresholds = thresholds;
                // The rate over the window: from the oldest sample still inside it.
                while p.samples.len() > 1
                    && p.samples
                        .get(1)
                        .is_some_and(|&(t, _)| now.duration_since(t) >= window)
                {
                    p.samples.pop_front();
                }
                p.estimate = match p.samples.front() {
                    Some(&(t, f)) if f > free && free <= previous_free => {
                        let secs = now.duration_since(t).as_secs_f64();
                        let rate = (f - free) as f64 / secs.max(0.001);
                        Some((free as f64 / rate).round() as u64)
                    }
                    _ => None,
                };
                if p.samples
                    .back()
                    .is_none_or(|&(t, _)| now.duration_since(t) >= spacing)
                {
                    p.samples.push_back((now, free));
                }
                let from = p.level;
                p.level = next_level(from, utilisation, thresholds, a.hysteresis);
                if p.level != from {
                    p.raised_at = (p.level > 0).then_some(unix);
                    changes.push(Transition {
                        pool: p.clone(),
                        from,
                    });
                }
                self.pools.push(p);
            }
        }
        changes
    }

    /// Every pool's state, in configuration order (as of the last evaluation).
    pub fn pools(&self) -> &[PoolAlarm] {
        &self.pools
    }

    /// The `alarms` answer.
    pub fn data(&self, config: &Config) -> AlarmsData {
        AlarmsData {
            interval_secs: config.pool_alarms.interval,
            hysteresis: config.pool_alarms.hysteresis,
            evaluated_at: self.evaluated_at,
            pools: self
                .pools
                .iter()
                .map(|p| PoolAlarmStatus {
                    subnet: p.subnet.clone(),
                    first: p.first,
                    last: p.last,
                    size: p.size,
                    free: p.free,
                    utilisation: (p.utilisation * 10.0).round() / 10.0,
                    level: p.level,
                    level_name: LEVEL_NAMES[usize::from(p.level)].into(),
                    thresholds: p.thresholds,
                    exhaustion_secs: p.estimate,
                    raised_at: p.raised_at,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: [u8; 3] = [80, 90, 95];

    #[test]
    fn levels_rise_at_thresholds_and_clear_below_hysteresis() {
        assert_eq!(next_level(0, 79.9, T, 5), 0);
        assert_eq!(next_level(0, 80.0, T, 5), 1);
        assert_eq!(next_level(0, 96.0, T, 5), 3);
        // Raised at 90: stays above 85, clears to warning below 85, to none below 75.
        assert_eq!(next_level(2, 86.0, T, 5), 2);
        assert_eq!(next_level(2, 84.9, T, 5), 1);
        assert_eq!(next_level(2, 74.0, T, 5), 0);
        assert_eq!(next_level(3, 10.0, T, 5), 0);
        assert_eq!(next_level(3, 91.0, T, 5), 3);
        assert_eq!(next_level(1, 92.0, T, 0), 2);
    }

    #[test]
    fn tick_raises_clears_and_estimates() {
        let config = prodhcp_config::parse(
            r#"(state_dir: "/x", pool_alarms: (interval: 1, rate_window: 8),
                subnets: [(network: "10.0.0.0/24", pools: ["10.0.0.10-10.0.0.29"])])"#,
        )
        .unwrap();
        let mut a = Alarms::default();
        let t0 = Instant::now();
        assert!(a.tick(&config, t0, |_, _| 20).is_empty());
        assert_eq!(a.pools()[0].estimate, None);
        // Half a second later: not due.
        assert!(a
            .tick(&config, t0 + Duration::from_millis(500), |_, _| 0)
            .is_empty());
        let ch = a.tick(&config, t0 + Duration::from_secs(2), |_, _| 1);
        assert_eq!(ch.len(), 1);
        assert_eq!(ch[0].change(), "raised");
        assert_eq!(a.pools()[0].level, 3);
        // 19 addresses in 2 s: the last one in about 0.1 s.
        assert_eq!(a.pools()[0].estimate, Some(0));
        let ch = a.tick(&config, t0 + Duration::from_secs(4), |_, _| 20);
        assert_eq!(ch[0].change(), "cleared");
        assert_eq!(a.pools()[0].level, 0);
        assert_eq!(a.pools()[0].estimate, None);
        assert!(ch[0]
            .detail()
            .contains("pool=10.0.0.10-10.0.0.29 level=none"));
    }
}

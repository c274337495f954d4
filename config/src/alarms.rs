//! `metrics_listen` and the `pool_alarms` section (issue 11): where the Prometheus endpoint
//! listens, and when a pool's utilisation raises an alarm.
//!
//! Pools are plain address ranges, so thresholds are set for all pools (`pool_alarms`) and
//! may be overridden per subnet (`alarm_thresholds` in a subnet), which applies to every pool
//! of that subnet.

use serde::Deserialize;

use crate::path::FieldPath;
use crate::validate::{fail, Check};

/// Default thresholds, percent of a pool in use: warning, major, critical.
pub const DEFAULT_THRESHOLDS: [u8; 3] = [80, 90, 95];
/// Default hysteresis, percentage points: a level raised at 90 % clears below 85 %.
pub const DEFAULT_HYSTERESIS: u8 = 5;
/// Default evaluation interval, seconds.
pub const DEFAULT_INTERVAL: u32 = 10;
/// Default rate window for the time-to-exhaustion estimate, seconds.
pub const DEFAULT_RATE_WINDOW: u32 = 300;
/// Longest evaluation interval, seconds.
pub const MAX_INTERVAL: u32 = 3_600;
/// Longest rate window, seconds (one day).
pub const MAX_RATE_WINDOW: u32 = 86_400;

/// Names of the alarm levels 1, 2 and 3 (0 is `none`).
pub const LEVEL_NAMES: [&str; 4] = ["none", "warning", "major", "critical"];

/// Pool utilisation thresholds in percent: `[warning, major, critical]`, strictly increasing,
/// each 1 to 100.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Thresholds(pub [u8; 3]);

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds(DEFAULT_THRESHOLDS)
    }
}

/// The validated `pool_alarms` section (defaults when absent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PoolAlarms {
    /// Thresholds of every pool whose subnet sets none of its own.
    pub thresholds: Thresholds,
    /// Percentage points below a level's threshold the utilisation must fall before that
    /// level clears (less than the lowest threshold of every pool).
    pub hysteresis: u8,
    /// Seconds between two evaluations (1 to [`MAX_INTERVAL`]).
    pub interval: u32,
    /// Seconds of history the rate of allocation (and so the time-to-exhaustion estimate) is
    /// taken over (at least `interval`, at most [`MAX_RATE_WINDOW`]).
    pub rate_window: u32,
}

impl Default for PoolAlarms {
    fn default() -> Self {
        PoolAlarms {
            thresholds: Thresholds::default(),
            hysteresis: DEFAULT_HYSTERESIS,
            interval: DEFAULT_INTERVAL,
            rate_window: DEFAULT_RATE_WINDOW,
        }
    }
}

fn default_thresholds() -> Vec<u8> {
    DEFAULT_THRESHOLDS.to_vec()
}
fn default_hysteresis() -> u8 {
    DEFAULT_HYSTERESIS
}
fn default_interval() -> u32 {
    DEFAULT_INTERVAL
}
fn default_rate_window() -> u32 {
    DEFAULT_RATE_WINDOW
}

/// The `pool_alarms` section as the file has it.
#[derive(Debug, Deserialize)]
#[serde(rename = "PoolAlarms", deny_unknown_fields)]
pub(crate) struct WirePoolAlarms {
    #[serde(default = "default_thresholds")]
    pub thresholds: Vec<u8>,
    #[serde(default = "default_hysteresis")]
    pub hysteresis: u8,
    #[serde(default = "default_interval")]
    pub interval: u32,
    #[serde(default = "default_rate_window")]
    pub rate_window: u32,
}

/// Checks a threshold list: three percentages, strictly increasing, 1 to 100.
pub(crate) fn validate_thresholds(list: &[u8], path: FieldPath) -> Check<Thresholds> {
    let Ok(t) = <[u8; 3]>::try_from(list) else {
        return fail(
            path,
            format!(
                "{} values given; exactly three are needed: [warning, major, critical] in percent, e.g. [80, 90, 95]",
                list.len()
            ),
        );
    };
    if t.iter().any(|&v| v == 0 || v > 100) {
        return fail(
            path,
            format!("{t:?}: every threshold is a percentage from 1 to 100"),
        );
    }
    if !(t[0] < t[1] && t[1] < t[2]) {
        return fail(
            path,
            format!("{t:?}: the thresholds must increase strictly (warning < major < critical)"),
        );
    }
    Ok(Thresholds(t))
}

/// Checks the section (`None`: the defaults).
pub(crate) fn validate_pool_alarms(wire: Option<WirePoolAlarms>) -> Check<PoolAlarms> {
    let Some(wire) = wire else {
        return Ok(PoolAlarms::default());
    };
    let path = |f: &str| FieldPath::field("pool_alarms").at(f);
    let thresholds = validate_thresholds(&wire.thresholds, path("thresholds"))?;
    if !(1..=MAX_INTERVAL).contains(&wire.interval) {
        return fail(
            path("interval"),
            format!(
                "{} is not between 1 and {MAX_INTERVAL} seconds",
                wire.interval
            ),
        );
    }
    if wire.rate_window < wire.interval || wire.rate_window > MAX_RATE_WINDOW {
        return fail(
            path("rate_window"),
            format!(
                "{} is not between the interval ({} s) and {MAX_RATE_WINDOW} seconds",
                wire.rate_window, wire.interval
            ),
        );
    }
    let alarms = PoolAlarms {
        thresholds,
        hysteresis: wire.hysteresis,
        interval: wire.interval,
        rate_window: wire.rate_window,
    };
    check_hysteresis(alarms.hysteresis, thresholds, path("hysteresis"))?;
    Ok(alarms)
}

/// The hysteresis must leave a level room to clear: below the lowest threshold.
pub(crate) fn check_hysteresis(hysteresis: u8, t: Thresholds, path: FieldPath) -> Check<()> {
    if hysteresis >= t.0[0] {
        return fail(
            path,
            format!(
                "a hysteresis of {hysteresis} points leaves the warning level (raised at {} %) no \
                 room to clear; give less than the lowest threshold",
                t.0[0]
            ),
        );
    }
    Ok(())
}

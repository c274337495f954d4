//! Data of the `alarms` response: every pool's utilisation alarm (issue 11).

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// One pool's alarm state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolAlarmStatus {
    /// The pool's subnet (`10.0.0.0/8`).
    pub subnet: String,
    /// First address of the pool.
    pub first: Ipv4Addr,
    /// Last address of the pool.
    pub last: Ipv4Addr,
    /// Addresses in the pool.
    pub size: u64,
    /// Addresses the allocator may still hand out.
    pub free: u64,
    /// Percent of the pool not free.
    pub utilisation: f64,
    /// 0 none, 1 warning, 2 major, 3 critical.
    pub level: u8,
    /// `none`, `warning`, `major` or `critical`.
    pub level_name: String,
    /// The pool's thresholds, percent: warning, major, critical.
    pub thresholds: [u8; 3],
    /// Seconds until the pool runs out at the recent rate; only while free addresses decrease.
    #[serde(default)]
    pub exhaustion_secs: Option<u64>,
    /// Unix time (s) the current level was raised (absent at level 0).
    #[serde(default)]
    pub raised_at: Option<u64>,
}

/// Data of the `alarms` response.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AlarmsData {
    /// Seconds between evaluations (`pool_alarms.interval`).
    pub interval_secs: u32,
    /// Percentage points below a threshold before its level clears.
    pub hysteresis: u8,
    /// Unix time (s) of the last evaluation (absent before the first).
    #[serde(default)]
    pub evaluated_at: Option<u64>,
    /// Every pool, in configuration order.
    pub pools: Vec<PoolAlarmStatus>,
}

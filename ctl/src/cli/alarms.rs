//! `prodhcpctl alarms`: every pool's utilisation alarm (the supervisor's `alarms` answer).

use prodhcp_proto::AlarmsData;

use super::format::{format_duration, format_utc, table};

/// The text of `prodhcpctl alarms`: one row per pool.
pub fn format_alarms(d: &AlarmsData) -> String {
    let mut out = format!(
        "pool alarms: evaluated every {} s, hysteresis {} points, last {}\n",
        d.interval_secs,
        d.hysteresis,
        d.evaluated_at.map_or_else(|| "not yet".into(), format_utc)
    );
    if d.pools.is_empty() {
        out.push_str("no pools\n");
        return out;
    }
    let mut rows = vec![[
        "SUBNET",
        "POOL",
        "LEVEL",
        "USED",
        "FREE",
        "SIZE",
        "THRESHOLDS",
        "EXHAUSTED IN",
        "SINCE",
    ]
    .map(String::from)
    .to_vec()];
    for p in &d.pools {
        rows.push(vec![
            p.subnet.clone(),
            format!("{}-{}", p.first, p.last),
            p.level_name.clone(),
            format!("{:.1}%", p.utilisation),
            p.free.to_string(),
            p.size.to_string(),
            format!(
                "{}/{}/{}",
                p.thresholds[0], p.thresholds[1], p.thresholds[2]
            ),
            p.exhaustion_secs
                .map_or_else(|| "-".into(), format_duration),
            p.raised_at.map_or_else(|| "-".into(), format_utc),
        ]);
    }
    out.push_str(&table(&rows, ""));
    out
}

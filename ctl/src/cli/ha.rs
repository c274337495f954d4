//! `prodhcpctl ha status`: the cluster state the supervisor keeps from syncd's reports.

use prodhcp_proto::{HaStatusData, LinkState};

use super::format::{format_duration, format_utc};

/// The text form of `ha status` at unix time `now` (seconds).
pub fn format_ha_status(st: &HaStatusData, now: u64) -> String {
    use std::fmt::Write as _;
    if st.standalone {
        return format!("{}\n", st.role);
    }
    let mut s = String::new();
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "?".into());
    let _ = writeln!(
        s,
        "cluster {} · node {} · replication {}",
        opt(&st.cluster),
        opt(&st.node),
        opt(&st.replication)
    );
    let _ = writeln!(s, "role: {}", st.role);
    if let Some(p) = &st.syncd {
        let pid = p.pid.map_or_else(|| "-".to_string(), |p| p.to_string());
        let _ = writeln!(s, "syncd: {} (pid {pid}, {} restarts)", p.state, p.restarts);
    }
    for p in &st.peers {
        let since = p.since_unix_ms.map_or_else(
            || "never connected".to_string(),
            |ms| {
                let secs = ms / 1000;
                format!(
                    "since {} ({} ago)",
                    format_utc(secs),
                    format_duration(now.saturating_sub(secs))
                )
            },
        );
        let _ = writeln!(
            s,
            "peer {} ({}): {} {since}",
            p.node,
            p.address,
            p.link.as_str()
        );
        if p.link == LinkState::Down {
            if let Some(cause) = &p.last_cause {
                let _ = writeln!(s, "  last cause: {cause}");
            }
        } else if let Some(remote) = &p.remote {
            let _ = writeln!(s, "  connection: {remote}");
        }
        let c = &p.counters;
        let _ = writeln!(
            s,
            "  ups {} · auth failures {} · decrypt failures {} · malformed {} · oversize {} · \
             heartbeat timeouts {} · connect failures {}",
            c.ups,
            c.auth_failures,
            c.decrypt_failures,
            c.malformed,
            c.oversize,
            c.heartbeat_timeouts,
            c.connect_failures
        );
        let r = &p.replication;
        if !r.state.is_empty() {
            let state = match r.bulk_percent {
                Some(pct) if r.state == "bulk-sync" => format!("bulk-sync {pct}%"),
                _ => r.state.clone(),
            };
            let _ = writeln!(
                s,
                "  replication: {state} · lag {} records ({} ms) · sent {} · applied {} · \
                 stale {} · rejected {} · bulk syncs sent {} received {}",
                r.lag_records,
                r.lag_ms,
                r.records_sent,
                r.applied,
                r.stale,
                r.rejected,
                r.bulk_syncs_sent,
                r.bulk_syncs_received
            );
        }
        let _ = writeln!(s, "  role: {}", p.role);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use prodhcp_proto::{
        HaPeerStatus, PeerLinkCounters, PeerReplicationStatus, SyncdProcessStatus, ROLE_NOT_BUILT,
        ROLE_STANDALONE,
    };

    #[test]
    fn standalone_says_so_in_one_line() {
        let st = HaStatusData {
            standalone: true,
            role: ROLE_STANDALONE.into(),
            ..HaStatusData::default()
        };
        assert_eq!(
            format_ha_status(&st, 0),
            "standalone (no cluster section)\n"
        );
    }

    #[test]
    fn a_cluster_member_shows_syncd_and_each_peer_with_cause_and_counters() {
        let st = HaStatusData {
            standalone: false,
            cluster: Some("pop1".into()),
            node: Some("a".into()),
            replication: Some("sync".into()),
            role: ROLE_NOT_BUILT.into(),
            syncd: Some(SyncdProcessStatus {
                pid: Some(42),
                state: "running".into(),
                restarts: 1,
            }),
            peers: vec![HaPeerStatus {
                node: "b".into(),
                address: "198.18.0.4:647".into(),
                link: LinkState::Down,
                since_unix_ms: Some(1_764_633_600_000),
                last_cause: Some("authentication failed: another key".into()),
                last_cause_kind: Some("auth_failure".into()),
                remote: None,
                role: ROLE_NOT_BUILT.into(),
                counters: PeerLinkCounters {
                    auth_failures: 3,
                    ..PeerLinkCounters::default()
                },
                replication: PeerReplicationStatus::default(),
            }],
        };
        let text = format_ha_status(&st, 1_764_633_660);
        assert_eq!(
            text,
            "cluster pop1 · node a · replication sync\n\
             role: none (roles are not built yet)\n\
             syncd: running (pid 42, 1 restarts)\n\
             peer b (198.18.0.4:647): down since 2025-12-02 00:00:00 UTC (1m 00s ago)\n\
             \x20 last cause: authentication failed: another key\n\
             \x20 ups 0 · auth failures 3 · decrypt failures 0 · malformed 0 · oversize 0 · \
             heartbeat timeouts 0 · connect failures 0\n\
             \x20 role: none (roles are not built yet)\n"
        );
    }

    #[test]
    fn an_up_peer_shows_its_replication_state_lag_and_counts() {
        let st = HaStatusData {
            standalone: false,
            cluster: Some("pop1".into()),
            node: Some("a".into()),
            replication: Some("sync".into()),
            role: ROLE_NOT_BUILT.into(),
            syncd: None,
            peers: vec![HaPeerStatus {
                node: "b".into(),
                address: "198.18.0.4:647".into(),
                link: LinkState::Up,
                since_unix_ms: Some(1_764_633_600_000),
                remote: Some("198.18.0.4:647".into()),
                role: ROLE_NOT_BUILT.into(),
                replication: PeerReplicationStatus {
                    state: "bulk-sync".into(),
                    bulk_percent: Some(40),
                    lag_records: 12,
                    lag_ms: 3,
                    records_sent: 100,
                    bulk_syncs_sent: 1,
                    ..PeerReplicationStatus::default()
                },
                ..HaPeerStatus::default()
            }],
        };
        let text = format_ha_status(&st, 1_764_633_660);
        assert!(
            text.contains(
                "  replication: bulk-sync 40% · lag 12 records (3 ms) · sent 100 · applied 0 · \
                 stale 0 · rejected 0 · bulk syncs sent 1 received 0\n"
            ),
            "{text}"
        );
    }
}

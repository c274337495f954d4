//! `prodhcpctl ha status`: the cluster state the supervisor keeps from syncd's reports.

use std::time::{Duration, Instant};

use prodhcp_proto::{
    Command, HaCommand, HaCommandAccepted, HaCommandOutcome, HaStatusData, LinkState,
};

use super::client::{ControlClient, CtlError};
use super::format::{format_duration, format_utc};
use super::{decode, failed};

/// How long `prodhcpctl switchover` waits for the new active (the handover itself times out
/// after 5 s on the active).
const SWITCHOVER_WAIT: Duration = Duration::from_secs(10);
/// Interval between two looks at `ha_status` while waiting.
const POLL: Duration = Duration::from_millis(20);

/// What `switchover` and `ha partner-down` print (`--json`: this object).
#[derive(Debug, Clone, serde::Serialize)]
pub(super) struct HaCommandReport {
    /// The command's outcome as syncd gave it.
    pub(super) outcome: HaCommandOutcome,
    /// The node that is active at the end (when known).
    pub(super) active: Option<String>,
    /// Milliseconds from the request to the end of the wait.
    pub(super) elapsed_ms: u64,
    /// One line for people.
    pub(super) message: String,
}

fn status(connect: &dyn Fn() -> Result<ControlClient, CtlError>) -> Result<HaStatusData, CtlError> {
    decode(failed(connect()?.call(Command::HaStatus)?)?)
}

/// Sends `command` and waits for syncd's outcome of it.
fn send(
    connect: &dyn Fn() -> Result<ControlClient, CtlError>,
    command: HaCommand,
    timeout: Duration,
) -> Result<(HaCommandOutcome, Instant), CtlError> {
    let started = Instant::now();
    let accepted: HaCommandAccepted = decode(failed(connect()?.call(Command::Ha { command })?)?)?;
    loop {
        let st = status(connect)?;
        if let Some(o) = st.last_command.filter(|o| o.id == accepted.id) {
            if !o.ok {
                return Err(CtlError::Failed(o.message));
            }
            return Ok((o, started));
        }
        if started.elapsed() > timeout.min(Duration::from_secs(5)) {
            return Err(CtlError::Failed(format!(
                "syncd did not report on command {} in time",
                accepted.id
            )));
        }
        std::thread::sleep(POLL);
    }
}

/// The node that serves, as this node sees it: itself or an up peer announcing a serving role.
fn serving_node(st: &HaStatusData) -> Option<String> {
    let serving = |r: &str| matches!(r, "active" | "active-alone" | "partner-down");
    if serving(&st.role) {
        return st.node.clone();
    }
    st.peers
        .iter()
        .find(|p| p.link == LinkState::Up && serving(&p.role))
        .map(|p| p.node.clone())
}

/// `prodhcpctl switchover [--to NODE]`: requests it, then waits until another node than the one
/// serving before serves (or the target, when named), or fails.
pub(super) fn run_switchover(
    connect: &dyn Fn() -> Result<ControlClient, CtlError>,
    command: HaCommand,
    timeout: Duration,
) -> Result<HaCommandReport, CtlError> {
    let before = serving_node(&status(connect)?);
    let wanted = match &command {
        HaCommand::Switchover { to } => to.clone(),
        HaCommand::PartnerDown => None,
    };
    let (outcome, started) = send(connect, command, timeout)?;
    loop {
        let st = status(connect)?;
        let now = serving_node(&st);
        let handing_over =
            st.role == "handing-over" || st.peers.iter().any(|p| p.role == "handing-over");
        let done = match (&now, &wanted) {
            (Some(n), Some(w)) => n == w,
            (Some(n), None) => Some(n) != before.as_ref(),
            (None, _) => false,
        };
        if done && !handing_over {
            let active = now.unwrap_or_default();
            return Ok(HaCommandReport {
                message: format!(
                    "switchover done: `{active}` serves ({} ms)",
                    started.elapsed().as_millis()
                ),
                elapsed_ms: started.elapsed().as_millis() as u64,
                active: Some(active),
                outcome,
            });
        }
        if !handing_over && now.is_some() && now == before && started.elapsed() > POLL * 50 {
            // The active took its role back (the handover timed out or the target was lost).
            return Err(CtlError::Failed(format!(
                "switchover failed: `{}` still serves ({})",
                before.unwrap_or_default(),
                st.role_detail.map(|d| d.cause).unwrap_or_default()
            )));
        }
        if started.elapsed() > SWITCHOVER_WAIT {
            return Err(CtlError::Failed(format!(
                "switchover not done after {} s (this node is {})",
                SWITCHOVER_WAIT.as_secs(),
                st.role
            )));
        }
        std::thread::sleep(POLL);
    }
}

/// `prodhcpctl ha partner-down`.
pub(super) fn run_partner_down(
    connect: &dyn Fn() -> Result<ControlClient, CtlError>,
    timeout: Duration,
) -> Result<HaCommandReport, CtlError> {
    let (outcome, started) = send(connect, HaCommand::PartnerDown, timeout)?;
    let st = status(connect)?;
    Ok(HaCommandReport {
        message: format!("partner-down: this node is {}", st.role),
        active: serving_node(&st),
        elapsed_ms: started.elapsed().as_millis() as u64,
        outcome,
    })
}

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
    if let Some(d) = &st.role_detail {
        if d.since_unix_ms > 0 {
            let secs = d.since_unix_ms / 1000;
            let _ = writeln!(
                s,
                "  since {} ({} ago), from {}: {}",
                format_utc(secs),
                format_duration(now.saturating_sub(secs)),
                d.previous,
                d.cause
            );
        }
        let _ = writeln!(
            s,
            "  serving: {} · service address: {}",
            d.serving, d.service_address
        );
    }
    if let Some(c) = &st.last_command {
        let _ = writeln!(
            s,
            "last command ({}): {}{}",
            c.id,
            if c.ok { "" } else { "refused: " },
            c.message
        );
    }
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
        HaPeerStatus, PeerLinkCounters, PeerReplicationStatus, SyncdProcessStatus, ROLE_STANDALONE,
        ROLE_UNKNOWN,
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
            role: "active-alone".into(),
            role_detail: Some(prodhcp_proto::RoleStatus {
                since_unix_ms: 1_764_633_650_000,
                cause: "peer `b` was lost (closed by peer)".into(),
                previous: "active".into(),
                serving: "share 0 of 2 (no address freed since unix 1764633649 re-used)".into(),
                service_address: "held".into(),
            }),
            last_command: Some(HaCommandOutcome {
                id: 3,
                ok: false,
                message: "switchover refused: no peer is in sync".into(),
            }),
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
                role: ROLE_UNKNOWN.into(),
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
             role: active-alone\n\
             \x20 since 2025-12-02 00:00:50 UTC (10s ago), from active: peer `b` was lost (closed by peer)\n\
             \x20 serving: share 0 of 2 (no address freed since unix 1764633649 re-used) · service address: held\n\
             last command (3): refused: switchover refused: no peer is in sync\n\
             syncd: running (pid 42, 1 restarts)\n\
             peer b (198.18.0.4:647): down since 2025-12-02 00:00:00 UTC (1m 00s ago)\n\
             \x20 last cause: authentication failed: another key\n\
             \x20 ups 0 · auth failures 3 · decrypt failures 0 · malformed 0 · oversize 0 · \
             heartbeat timeouts 0 · connect failures 0\n\
             \x20 role: unknown\n"
        );
    }

    #[test]
    fn an_up_peer_shows_its_replication_state_lag_and_counts() {
        let st = HaStatusData {
            standalone: false,
            cluster: Some("pop1".into()),
            node: Some("a".into()),
            replication: Some("sync".into()),
            role: ROLE_UNKNOWN.into(),
            role_detail: None,
            last_command: None,
            syncd: None,
            peers: vec![HaPeerStatus {
                node: "b".into(),
                address: "198.18.0.4:647".into(),
                link: LinkState::Up,
                since_unix_ms: Some(1_764_633_600_000),
                remote: Some("198.18.0.4:647".into()),
                role: ROLE_UNKNOWN.into(),
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

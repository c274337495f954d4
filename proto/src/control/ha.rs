//! Data of the `ha_status` response: the role, syncd and each peer's link and replication.

use serde::{Deserialize, Serialize};

/// What `role` says while syncd has not reported a role (starting, or not running).
pub const ROLE_UNKNOWN: &str = "unknown";
/// What `role` says on an appliance without a `cluster` section.
pub const ROLE_STANDALONE: &str = "standalone (no cluster section)";

/// Data of the `ha_status` response.
///
/// JSON shape (a cluster member; `standalone: true` and empty `peers`, every optional field
/// `null`, without a `cluster` section):
/// ```text
/// {"standalone": false, "cluster": "pop1", "node": "a", "replication": "sync",
///  "role": "active",
///  "role_detail": {"since_unix_ms": 1764633600123, "cause": "...", "serving": "whole pool",
///                  "service_address": "held"},
///  "last_command": null,
///  "syncd": {"pid": 4242, "state": "running", "restarts": 0},
///  "peers": [{"node": "b", "address": "198.18.0.4:647", "link": "up",
///             "since_unix_ms": 1764633600123, "last_cause": null, "last_cause_kind": null,
///             "remote": "198.18.0.4:647", "role": "standby",
///             "counters": {"ups": 1, "auth_failures": 0, "decrypt_failures": 0,
///                          "malformed": 0, "oversize": 0, ...}}]}
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaStatusData {
    /// True when the configuration has no `cluster` section (nothing else is filled in).
    pub standalone: bool,
    /// Cluster name.
    #[serde(default)]
    pub cluster: Option<String>,
    /// This appliance's node name.
    #[serde(default)]
    pub node: Option<String>,
    /// `cluster.replication`: `sync` or `async`.
    #[serde(default)]
    pub replication: Option<String>,
    /// This node's role (`waiting`, `syncing`, `standby`, `active`, `active-alone`,
    /// `partner-down`, `handing-over`); [`ROLE_UNKNOWN`] while syncd does not report,
    /// [`ROLE_STANDALONE`] without a cluster.
    pub role: String,
    /// Since when, why, and what the workers do in it (absent while syncd does not report).
    #[serde(default)]
    pub role_detail: Option<RoleStatus>,
    /// The outcome of the last HA command syncd handled.
    #[serde(default)]
    pub last_command: Option<HaCommandOutcome>,
    /// The syncd process (absent when standalone).
    #[serde(default)]
    pub syncd: Option<SyncdProcessStatus>,
    /// One entry per configured peer, in configuration order.
    #[serde(default)]
    pub peers: Vec<HaPeerStatus>,
}

/// The syncd process, as the supervisor sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncdProcessStatus {
    /// Process id; `null` while it is not running (being restarted).
    pub pid: Option<u32>,
    /// `starting` (no report yet), `running`, `restarting` or `stopped`.
    pub state: String,
    /// How many times the supervisor restarted it.
    pub restarts: u64,
}

/// Link state of a peer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkState {
    /// Authenticated and hellos exchanged.
    Up,
    /// No up connection.
    #[default]
    Down,
}

impl LinkState {
    /// The wire name (`up`, `down`).
    pub fn as_str(self) -> &'static str {
        match self {
            LinkState::Up => "up",
            LinkState::Down => "down",
        }
    }
}

/// One configured peer, as syncd last reported it (syncd sends the same object to the
/// supervisor over its channel; `prodhcp_proto::launch::SyncdReport`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaPeerStatus {
    /// The peer's node name.
    pub node: String,
    /// Its configured syncd address.
    pub address: String,
    /// `up` or `down`.
    pub link: LinkState,
    /// When the link last changed state, or the cause while down last changed (unix ms);
    /// `null` before the first event.
    #[serde(default)]
    pub since_unix_ms: Option<u64>,
    /// Why the last connection ended or failed, for people (`authentication failed: ...`).
    #[serde(default)]
    pub last_cause: Option<String>,
    /// The same cause's stable name (`auth_failure`, `closed_by_peer`, `heartbeat_timeout`,
    /// `connect_failed`, `syncd_exited`, ...).
    #[serde(default)]
    pub last_cause_kind: Option<String>,
    /// Where the up connection goes to or comes from.
    #[serde(default)]
    pub remote: Option<String>,
    /// The role the peer last announced on its current connection ([`ROLE_UNKNOWN`] while
    /// down or before its announcement).
    pub role: String,
    /// Counts of link events and drops since syncd started.
    #[serde(default)]
    pub counters: PeerLinkCounters,
    /// Replication to and from the peer.
    #[serde(default)]
    pub replication: PeerReplicationStatus,
}

/// Replication with one peer, as syncd reports it (since the current syncd process started).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PeerReplicationStatus {
    /// `down`, `connecting` (shipping what the peer missed), `bulk-sync` or `in-sync`.
    pub state: String,
    /// While `bulk-sync`: slots of the table walked and acknowledged, percent.
    pub bulk_percent: Option<u8>,
    /// Records on this node's rings the peer has not acknowledged (max over the rings).
    pub lag_records: u64,
    /// Age of the oldest record the peer has not acknowledged, ms.
    pub lag_ms: u64,
    /// Records sent to the peer.
    pub records_sent: u64,
    /// Records and bulk images from the peer written to this node's table.
    pub applied: u64,
    /// Records and bulk images from the peer that this table already had (same or later
    /// version).
    pub stale: u64,
    /// Records and images from the peer refused (slot out of range, undecodable).
    pub rejected: u64,
    /// Bulk syncs sent to the peer.
    pub bulk_syncs_sent: u64,
    /// Bulk syncs received from the peer.
    pub bulk_syncs_received: u64,
}

/// Per-peer link counters (since the current syncd process started).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PeerLinkCounters {
    /// Connections that came up.
    pub ups: u64,
    /// Handshakes that failed (the peer holds another key, cluster name or version).
    pub auth_failures: u64,
    /// Frames that failed their AEAD check (altered, replayed, injected).
    pub decrypt_failures: u64,
    /// Frames or messages that could not be read.
    pub malformed: u64,
    /// Frames above the length limit.
    pub oversize: u64,
    /// Up connections declared dead after silence.
    pub heartbeat_timeouts: u64,
    /// Connections the peer closed.
    pub closed_by_peer: u64,
    /// Set-ups that did not finish in time.
    pub setup_timeouts: u64,
    /// Connections this node refused (cluster, node or layout mismatch).
    pub refused_by_us: u64,
    /// Connections the peer refused.
    pub refused_by_peer: u64,
    /// Dials that failed.
    pub connect_failures: u64,
    /// Socket errors.
    pub io_errors: u64,
    /// Connections replaced by a newer one from the same peer.
    pub replaced: u64,
}

/// This node's role in detail.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleStatus {
    /// When the node entered the role (unix ms).
    pub since_unix_ms: u64,
    /// Why (the transition's cause).
    pub cause: String,
    /// The role before.
    pub previous: String,
    /// What the workers do: `nothing (gate closed)`, `whole pool`, or `share I of N (...)`.
    pub serving: String,
    /// The service address: `held`, `not held`, `not configured`, or the last error.
    pub service_address: String,
}

/// An HA command (`prodhcpctl switchover`, `prodhcpctl ha partner-down`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HaCommand {
    /// Hand the active role to `to` (default: the one in-sync standby). On a node that does not
    /// serve, the request is forwarded to the serving peer.
    Switchover {
        /// The node to become active.
        #[serde(default)]
        to: Option<String>,
    },
    /// The operator confirms the unreachable peer down: serve the whole pool.
    PartnerDown,
}

/// The answer to an `ha` command: handed to syncd under `id`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaCommandAccepted {
    /// The command's id; its outcome appears in [`HaStatusData::last_command`] under it.
    pub id: u64,
}

/// What syncd did with an HA command.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaCommandOutcome {
    /// The command's id ([`HaCommandAccepted::id`]).
    pub id: u64,
    /// Whether syncd started it (a switchover then completes or times out: watch `role`).
    pub ok: bool,
    /// What happened, for people.
    pub message: String,
}

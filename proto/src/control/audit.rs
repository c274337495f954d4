//! Data of the `audit_status` response, and the audit process's report to the supervisor
//! (`crate::launch::FrameKind::AuditReport`), which is the same [`AuditReport`].

use serde::{Deserialize, Serialize};

/// The `audit_status` answer: the audit process as the supervisor sees it, and its last report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditStatusData {
    /// Whether the configuration has an `audit` section.
    pub configured: bool,
    /// Whether the audit process runs now.
    pub running: bool,
    /// Its process id, while it runs.
    #[serde(default)]
    pub pid: Option<u32>,
    /// How often it was restarted since the supervisor started.
    pub restarts: u64,
    /// Unix time (ms) of its last report.
    #[serde(default)]
    pub reported_unix_ms: Option<u64>,
    /// Its last report.
    #[serde(default)]
    pub report: Option<AuditReport>,
}

/// What the audit process reports, about every [`crate::launch::AUDIT_REPORT_EVERY_MS`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditReport {
    /// The last sequence number given to an event (survives restarts).
    pub last_seq: u64,
    /// Events written since this audit process started.
    pub events: u64,
    /// Ring records not read yet, over every ring (lag before the spool).
    pub ring_lag_records: u64,
    /// Bytes in the on-disk spool.
    pub spool_bytes: u64,
    /// The spool's bound (`audit.spool_max_bytes`).
    pub spool_max_bytes: u64,
    /// The oldest sequence number the spool still holds.
    #[serde(default)]
    pub spool_first_seq: Option<u64>,
    /// The JSON-lines file, if configured.
    #[serde(default)]
    pub file: Option<String>,
    /// Records lost (spool full without `audit_strict`, or a ring consumer evicted), ever.
    pub lost_records: u64,
    /// The last ranges of sequence numbers lost (first, last), newest last.
    #[serde(default)]
    pub lost_ranges: Vec<(u64, u64)>,
    /// Records a ring evicted the audit reader from before it read them (ever, this process).
    #[serde(default)]
    pub ring_records_lost: u64,
    /// Whether `audit_strict` is stopping new lease commits now (the spool is full).
    pub strict_blocking: bool,
    /// Events sent again at start because their acknowledgement was not on disk yet (the
    /// last unacknowledged batch before a restart; the collector drops them by `seq`).
    #[serde(default)]
    pub resent_at_start: u64,
    /// Every configured target.
    pub targets: Vec<AuditTargetStatus>,
}

/// One syslog target in an [`AuditReport`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditTargetStatus {
    /// The target as configured (`tcp://198.18.0.53:514`).
    pub target: String,
    /// Whether records wait in the spool for it (TCP, TLS) or are sent best effort (UDP, unix).
    pub reliable: bool,
    /// Whether it is connected now.
    pub connected: bool,
    /// The last sequence number it acknowledged (TCP: acknowledged by the peer's TCP).
    pub acked_seq: u64,
    /// The last sequence number written to it.
    pub sent_seq: u64,
    /// Records not acknowledged yet (`last_seq - acked_seq`).
    pub lag_records: u64,
    /// Age in ms of the oldest record it has not acknowledged (0 when none).
    pub lag_ms: u64,
    /// Reconnections since the audit process started.
    pub reconnects: u64,
    /// Records sent again after a broken connection.
    pub resent: u64,
    /// Records dropped (best-effort targets only).
    pub dropped: u64,
    /// The last error, if any.
    #[serde(default)]
    pub last_error: Option<String>,
}

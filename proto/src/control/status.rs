//! Data of the `status` response: reload, workers, table, index and scrub.

use serde::{Deserialize, Serialize};

/// Result of the last configuration reload.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadStatus {
    /// Whether it succeeded: every worker applied it. False while it is pending.
    pub ok: bool,
    /// What happened (the error when it failed).
    pub message: String,
    /// Sent to the workers, not yet applied by all of them.
    #[serde(default)]
    pub pending: bool,
    /// When the last worker applied it (unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_at: Option<u64>,
    /// Milliseconds from the reload to the last worker's answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_in_ms: Option<u64>,
}

/// One worker process, as reported by `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerStatus {
    /// Worker index (0-based).
    pub id: u32,
    /// Process id; `null` while the worker is not running (e.g. being respawned).
    pub pid: Option<u32>,
    /// Lifecycle state (`running`, `starting`, `restarting`, ...).
    pub state: String,
    /// How many times it was respawned.
    pub restarts: u64,
}

/// The lease table, as reported by `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableStatus {
    /// Path of the table file.
    pub path: String,
    /// Number of slots.
    pub slots: u64,
    /// Slots the table file has room for: live pool changes (SIGHUP) may add addresses up to
    /// it (0 in replies of older daemons).
    #[serde(default)]
    pub slot_capacity: u64,
    /// Whether the previous run shut down cleanly.
    pub clean_start: bool,
    /// The client index (absent in replies of older daemons).
    #[serde(default)]
    pub index: IndexStatus,
}

/// The lease table's client index, as reported by `status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexStatus {
    /// Entries ever filled and not yet emptied again (live, stale and tombstones).
    pub occupied: u64,
    /// Entries in all.
    pub capacity: u64,
    /// Inserts that gave up since the table was created: each is a client that lookups by
    /// identity cannot find, so its next DISCOVER may get a new address.
    pub give_ups: u64,
}

/// Data of the `status` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusData {
    /// Supervisor process id.
    pub pid: u32,
    /// Supervisor lifecycle state (`running`, `reloading`, `stopping`, ...).
    pub state: String,
    /// Incremented on each successful reload (1 after start).
    pub config_generation: u64,
    /// Seconds since start.
    pub uptime_secs: u64,
    /// The last reload attempt.
    pub last_reload: ReloadStatus,
    /// One entry per worker.
    pub workers: Vec<WorkerStatus>,
    /// The lease table.
    pub table: TableStatus,
    /// The background scrub of the lease table (absent from daemons that predate it).
    #[serde(default)]
    pub scrub: ScrubStatus,
}

/// Counts of one scrub pass (finished or so far).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ScrubCounts {
    /// Slots read.
    pub slots_checked: u64,
    /// Every finding (torn slots, wrong bitmap/summary bits, missing/stale index entries).
    pub damaged: u64,
    /// Findings repaired.
    pub repaired: u64,
    /// Slots skipped because a writer held them at that moment.
    pub busy_skipped: u64,
    /// Slots locked by no live writer (a damaged lock byte), unlocked.
    pub stuck_locks: u64,
    /// Slots failing their checksum (taken out of service as `abandoned`).
    pub torn_slots: u64,
    /// Free-bitmap bits that disagreed with their slot.
    pub bitmap_wrong: u64,
    /// Missing summary bits.
    pub summary_wrong: u64,
    /// Keyed slots missing from the client index.
    pub unindexed: u64,
    /// Index entries naming no slot or a slot with another key.
    pub stale_index: u64,
}

/// A finished scrub pass.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ScrubPass {
    /// Unix time the pass started.
    pub started: u64,
    /// Unix time the pass finished.
    pub finished: u64,
    /// Wall time the pass took, milliseconds.
    pub duration_ms: u64,
    /// What it found.
    pub counts: ScrubCounts,
}

/// The scrub's state, as reported by `status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ScrubStatus {
    /// `running` while a pass is in progress, `idle` between passes.
    pub state: String,
    /// Phase of the pass in progress (`slots`, `summary`, `index`).
    pub phase: Option<String>,
    /// Progress of the pass in progress, percent of the current phase.
    pub progress_percent: Option<u8>,
    /// Counts of the pass in progress so far.
    pub current: Option<ScrubCounts>,
    /// The last finished pass.
    pub last_pass: Option<ScrubPass>,
    /// Passes finished since start.
    pub passes: u64,
    /// Seconds until the next periodic pass (`null`: none planned, `scrub_interval: 0`).
    pub next_pass_in_secs: Option<u64>,
}

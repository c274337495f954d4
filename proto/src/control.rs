//! Control protocol v1: the wire types spoken between `prodhcpd` (server) and `prodhcpctl` (client).
//!
//! API Boundary: this is a versioned format. Changing a field's meaning needs a new version number.
//!
//! # Transport
//! A Unix stream socket (default [`DEFAULT_SOCKET_PATH`]). Every message is one JSON object on one
//! line, terminated by `'\n'` (a trailing `'\r'` is tolerated). The server enforces a maximum request
//! line of [`MAX_REQUEST_LINE`] bytes (16 MiB); a longer line is answered with an error response and
//! the connection is closed. The client never sends more: imports go in batches of at most
//! [`IMPORT_BATCH_MAX`] leases.
//!
//! A client may send several requests one after the other on the same connection; the server
//! answers them in order. Import batches use this (and a client may have one batch in flight while
//! it parses the next).
//!
//! # Requests
//! ```text
//! {"v": 1, "cmd": "status"}
//! {"v": 1, "cmd": "stats"}
//! {"v": 1, "cmd": "lease", "address": "10.0.0.5"}
//! {"v": 1, "cmd": "leases_by_mac", "mac": "02:00:00:00:00:01"}
//! {"v": 1, "cmd": "export"}
//! {"v": 1, "cmd": "import", "leases": [LeaseRecord, ...]}
//! {"v": 1, "cmd": "consumers"}
//! {"v": 1, "cmd": "consumer_drop", "ring": "worker-0", "id": 0}
//! {"v": 1, "cmd": "ha_status"}
//! ```
//! The version is checked before anything else ([`parse_request`]): a request with a different
//! `v` is refused with "unsupported control protocol version N (this daemon speaks 1)".
//!
//! # Responses
//! Every request is answered by exactly one response line:
//! `{"ok": true, "data": <json>}` or `{"ok": false, "error": "message"}`.
//! `export` is the one exception: the server first writes zero or more lease lines
//! `{"lease": LeaseRecord}` (one per non-free slot) and then the final response line, whose data is
//! [`ExportDone`] `{"count": n}` (the number of lease lines sent before it).
//!
//! | cmd             | data on success                          |
//! |-----------------|------------------------------------------|
//! | `status`        | [`StatusData`]                           |
//! | `stats`         | [`StatsData`]                            |
//! | `lease`         | [`LeaseRecord`] (not found: `ok: false`) |
//! | `leases_by_mac` | array of [`LeaseRecord`] (may be empty)  |
//! | `export`        | [`ExportDone`] after the lease lines     |
//! | `import`        | [`ImportResult`]                         |
//! | `consumers`     | [`ConsumersData`]                        |
//! | `consumer_drop` | [`ConsumerDropped`]                      |
//! | `ha_status`     | [`HaStatusData`]                         |
//!
//! Import semantics: the server applies the records of a batch in order, so when the same address
//! appears more than once (Kea memfile and dhcpd.leases are append-only logs) the last record wins.
//! Each message in [`ImportResult::errors`] should start with the record's address, since the
//! server does not know the file's line numbers.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::client_id::ClientId;
use crate::counter::{Counter, CounterGroup};
use crate::hwaddr::HwAddr;

/// The protocol version this code speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// Default path of the control socket.
pub const DEFAULT_SOCKET_PATH: &str = "/run/prodhcp/control.sock";

/// Maximum length of one request line (bytes, without the newline), enforced by the server.
pub const MAX_REQUEST_LINE: usize = 16 << 20;

/// Maximum length of one response line the client accepts.
pub const MAX_RESPONSE_LINE: usize = 64 << 20;

/// Maximum number of leases in one `import` request.
pub const IMPORT_BATCH_MAX: usize = 10_000;

/// One request: the protocol version plus the command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Protocol version; must be [`PROTOCOL_VERSION`].
    pub v: u32,
    /// The command and its arguments.
    #[serde(flatten)]
    pub command: Command,
}

impl Request {
    /// A request of the current protocol version.
    pub fn new(command: Command) -> Self {
        Request {
            v: PROTOCOL_VERSION,
            command,
        }
    }
}

/// The commands of protocol v1 (`"cmd"` field).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    /// Supervisor and worker state.
    Status,
    /// Packet counters and pool usage.
    Stats,
    /// The lease of one address.
    Lease {
        /// The address asked about.
        address: Ipv4Addr,
    },
    /// Every non-free lease held by a hardware address.
    LeasesByMac {
        /// Hardware address, lowercase hex octets separated by ':'.
        mac: HwAddr,
    },
    /// Stream every non-free slot (see the module documentation).
    Export,
    /// Apply a batch of lease records in order.
    Import {
        /// At most [`IMPORT_BATCH_MAX`] records.
        leases: Vec<LeaseRecord>,
        /// Overwrite reserved addresses and leases another client still holds (by default such
        /// records are skipped and reported in [`ImportResult::skipped_rows`]).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        force: bool,
    },
    /// Every registered or evicted consumer of the change rings the supervisor knows.
    Consumers,
    /// Drop (unregister) one ring consumer: the producer no longer keeps records for it.
    ConsumerDrop {
        /// Ring name as listed by `consumers` (`worker-0`, `supervisor`, `import`).
        ring: String,
        /// Consumer id within the ring.
        id: u32,
    },
    /// The cluster (replication) state: this node, syncd's process, each peer's link.
    HaStatus,
}

impl Command {
    /// The wire name of the command (the `cmd` field).
    pub fn name(&self) -> &'static str {
        match self {
            Command::Status => "status",
            Command::Stats => "stats",
            Command::Lease { .. } => "lease",
            Command::LeasesByMac { .. } => "leases_by_mac",
            Command::Export => "export",
            Command::Import { .. } => "import",
            Command::Consumers => "consumers",
            Command::ConsumerDrop { .. } => "consumer_drop",
            Command::HaStatus => "ha_status",
        }
    }
}

/// State of a lease slot, as reported over the control socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LeaseState {
    /// Not in use.
    Free,
    /// Offered, not yet requested.
    Offered,
    /// Bound to a client.
    Leased,
    /// Released by the client.
    Released,
    /// Lifetime ran out.
    Expired,
    /// A client declined it (address conflict).
    Declined,
    /// Reserved by configuration.
    Reserved,
    /// Abandoned (e.g. ping check failed).
    Abandoned,
}

impl LeaseState {
    /// Every state, in the order of the lease table's state codes (`shm_layout::LeaseState`
    /// lists the same states in the same order; the supervisor converts by position and a test
    /// there checks the names agree).
    pub const ALL: [LeaseState; 8] = [
        LeaseState::Free,
        LeaseState::Offered,
        LeaseState::Leased,
        LeaseState::Released,
        LeaseState::Expired,
        LeaseState::Declined,
        LeaseState::Reserved,
        LeaseState::Abandoned,
    ];

    /// The wire name (`"leased"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            LeaseState::Free => "free",
            LeaseState::Offered => "offered",
            LeaseState::Leased => "leased",
            LeaseState::Released => "released",
            LeaseState::Expired => "expired",
            LeaseState::Declined => "declined",
            LeaseState::Reserved => "reserved",
            LeaseState::Abandoned => "abandoned",
        }
    }
}

impl std::fmt::Display for LeaseState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One lease, as exchanged by `lease`, `leases_by_mac`, `export` and `import`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// The leased address.
    pub address: Ipv4Addr,
    /// Slot state.
    pub state: LeaseState,
    /// Hardware address, lowercase hex octets separated by ':' (`02:00:00:00:00:01`).
    #[serde(default)]
    pub hwaddr: Option<HwAddr>,
    /// Client identifier (option 61), lowercase hex without separators (`01020000000001`).
    #[serde(default)]
    pub client_id: Option<ClientId>,
    /// Expiry time, unix seconds (UTC).
    pub expires: u64,
    /// Subnet in CIDR notation, when known.
    #[serde(default)]
    pub subnet: Option<String>,
    /// Client host name, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
}

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

/// One consumer of a change ring.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerEntry {
    /// Consumer id within the ring.
    pub id: u32,
    /// `registered` or `evicted`.
    pub state: String,
    /// Last sequence number it consumed.
    pub cursor: u64,
    /// Records published after its cursor.
    pub lag: u64,
}

/// One change ring and its consumers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingConsumers {
    /// Ring name (`worker-0`, `supervisor`, `import`).
    pub ring: String,
    /// Owner id of the ring's producer.
    pub owner: u8,
    /// Sequence number of the last published record.
    pub head: u64,
    /// Records the ring holds.
    pub capacity: u64,
    /// Consumers the producer has evicted from this ring for lagging a whole ring (ever).
    pub evictions: u64,
    /// Registered and evicted consumers.
    pub consumers: Vec<ConsumerEntry>,
}

/// Data of the `consumers` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumersData {
    /// One entry per ring.
    pub rings: Vec<RingConsumers>,
}

/// Data of the `consumer_drop` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerDropped {
    /// The ring.
    pub ring: String,
    /// The consumer id.
    pub id: u32,
}

/// What `role` says until roles exist (issue 8 builds them later): no role is claimed.
pub const ROLE_NOT_BUILT: &str = "none (roles are not built yet)";
/// What `role` says on an appliance without a `cluster` section.
pub const ROLE_STANDALONE: &str = "standalone (no cluster section)";

/// Data of the `ha_status` response.
///
/// JSON shape (a cluster member; `standalone: true` and empty `peers`, every optional field
/// `null`, without a `cluster` section):
/// ```text
/// {"standalone": false, "cluster": "pop1", "node": "a", "replication": "sync",
///  "role": "none (roles are not built yet)",
///  "syncd": {"pid": 4242, "state": "running", "restarts": 0},
///  "peers": [{"node": "b", "address": "198.18.0.4:647", "link": "up",
///             "since_unix_ms": 1764633600123, "last_cause": null, "last_cause_kind": null,
///             "remote": "198.18.0.4:647", "role": "none (roles are not built yet)",
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
    /// This node's role: [`ROLE_NOT_BUILT`] in a cluster, [`ROLE_STANDALONE`] without one.
    pub role: String,
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
    /// The peer's role: [`ROLE_NOT_BUILT`].
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

/// Counters of one worker, or the total, grouped as the catalogue ([`Counter::ALL`]) says.
///
/// Wire form: the [`CounterGroup::Packets`] counters are top-level fields (`"received": 9`),
/// the other groups are maps by [`Counter::key`]. Built only by [`Counters::from_catalogue`],
/// so a counter added to the catalogue appears here without further code.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Counters {
    /// Packet counts by name (`received`, `discover`, ..., `dropped`), flattened into the
    /// object.
    #[serde(flatten)]
    pub packets: BTreeMap<String, u64>,
    /// Drops by reason (`too_short`, `busy`, ...); their sum is `dropped`.
    pub drops: BTreeMap<String, u64>,
    /// Lease-table maintenance by the workers' sweepers: `expired` leases, `offer_expired`,
    /// `quarantine_ended` (declined addresses back in the pool), `abandoned` (slots failing
    /// their checksum taken out of service).
    pub sweeper: BTreeMap<String, u64>,
    /// Other events (`malformed_options`, `clock_step`); absent from older daemons' replies.
    pub events: BTreeMap<String, u64>,
}

impl Counters {
    /// Every counter of the catalogue with its value from `value`.
    pub fn from_catalogue(value: impl Fn(Counter) -> u64) -> Counters {
        let mut c = Counters::default();
        for &counter in Counter::ALL {
            c.group_mut(counter.group())
                .insert(counter.key().to_string(), value(counter));
        }
        c
    }

    /// The map of one group.
    pub fn group(&self, group: CounterGroup) -> &BTreeMap<String, u64> {
        match group {
            CounterGroup::Packets => &self.packets,
            CounterGroup::Drops => &self.drops,
            CounterGroup::Sweeper => &self.sweeper,
            CounterGroup::Events => &self.events,
        }
    }

    fn group_mut(&mut self, group: CounterGroup) -> &mut BTreeMap<String, u64> {
        match group {
            CounterGroup::Packets => &mut self.packets,
            CounterGroup::Drops => &mut self.drops,
            CounterGroup::Sweeper => &mut self.sweeper,
            CounterGroup::Events => &mut self.events,
        }
    }

    /// A packet count by name (`received`, ...); 0 when absent.
    pub fn packet(&self, name: &str) -> u64 {
        self.packets.get(name).copied().unwrap_or(0)
    }

    /// Adds every value of `other` (for totals).
    pub fn add(&mut self, other: &Counters) {
        for (mine, theirs) in [
            (&mut self.packets, &other.packets),
            (&mut self.drops, &other.drops),
            (&mut self.sweeper, &other.sweeper),
            (&mut self.events, &other.events),
        ] {
            for (k, v) in theirs {
                *mine.entry(k.clone()).or_default() += v;
            }
        }
    }
}

/// Counters of one worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerCounters {
    /// Worker index.
    pub id: u32,
    /// Its counters (flattened into the same object).
    #[serde(flatten)]
    pub counters: Counters,
}

/// Usage of one address pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolStats {
    /// First address of the pool.
    pub first: Ipv4Addr,
    /// Last address of the pool.
    pub last: Ipv4Addr,
    /// Number of addresses.
    pub size: u64,
    /// Free slots.
    pub free: u64,
    /// Offered slots.
    pub offered: u64,
    /// Leased slots.
    pub leased: u64,
    /// Declined slots.
    pub declined: u64,
    /// Reserved slots.
    pub reserved: u64,
}

/// Data of the `stats` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsData {
    /// Sum over all workers.
    pub total: Counters,
    /// Per worker.
    pub workers: Vec<WorkerCounters>,
    /// Per pool.
    pub pools: Vec<PoolStats>,
}

/// Data of the `import` response (and of `prodhcpctl leases import --json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportResult {
    /// Records applied.
    pub imported: u64,
    /// Records refused.
    pub rejected: u64,
    /// Records deliberately not imported (e.g. dhcpd `free`/`backup` leases); not errors.
    #[serde(default)]
    pub skipped: u64,
    /// Why records were refused (bounded; the first messages).
    #[serde(default)]
    pub errors: Vec<String>,
    /// Records not imported because they would overwrite a reserved address or a lease that
    /// another client still holds (each is also counted in `skipped`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped_rows: Vec<SkippedRow>,
}

/// A record `import` left alone to protect what the table holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedRow {
    /// Position of the record in its `import` batch (0-based), as the daemon reports it.
    pub index: u32,
    /// Line of the record in the imported file (filled in by prodhcpctl).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    /// The record's address.
    pub address: Ipv4Addr,
    /// Why it was skipped.
    pub reason: String,
}

/// Data of the final `export` response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportDone {
    /// Number of lease lines sent before the final response.
    pub count: u64,
}

/// One response line.
#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    /// `{"ok": true, "data": ...}`
    Ok(serde_json::Value),
    /// `{"ok": false, "error": "..."}`
    Err(String),
}

/// The JSON shape of a response line (and, with `lease`, of an export lease line).
#[derive(Debug, Serialize, Deserialize)]
struct ResponseWire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ok: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    data: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lease: Option<LeaseRecord>,
}

impl Response {
    /// A success response carrying `data`.
    pub fn ok<T: Serialize>(data: &T) -> Result<Self, ProtoError> {
        serde_json::to_value(data)
            .map(Response::Ok)
            .map_err(|e| ProtoError::Encode(e.to_string()))
    }

    /// A failure response.
    pub fn error(message: impl Into<String>) -> Self {
        Response::Err(message.into())
    }

    /// Decode the success data into `T`, or turn `ok: false` into [`ProtoError::Failed`].
    pub fn into_data<T: serde::de::DeserializeOwned>(self) -> Result<T, ProtoError> {
        match self {
            Response::Ok(v) => serde_json::from_value(v)
                .map_err(|e| ProtoError::Malformed(format!("unexpected response data: {e}"))),
            Response::Err(msg) => Err(ProtoError::Failed(msg)),
        }
    }
}

/// One line the client reads while an `export` is running.
#[derive(Debug, Clone, PartialEq)]
pub enum ExportFrame {
    /// `{"lease": {...}}`
    Lease(LeaseRecord),
    /// The final response line.
    Done(Response),
}

/// Errors of encoding or parsing protocol lines.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtoError {
    /// The line is not valid JSON, or not an object of the expected shape.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The request has no `v` field.
    #[error("request has no protocol version field \"v\" (this daemon speaks {PROTOCOL_VERSION})")]
    MissingVersion,
    /// The request's `v` is not [`PROTOCOL_VERSION`].
    #[error("unsupported control protocol version {0} (this daemon speaks {PROTOCOL_VERSION})")]
    UnsupportedVersion(u64),
    /// The version is right but the command or its arguments are not.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// Serialization failed (should not happen for these types).
    #[error("cannot encode message: {0}")]
    Encode(String),
    /// The server answered `{"ok": false, "error": ...}`.
    #[error("{0}")]
    Failed(String),
}

/// Errors of [`read_line_bounded`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadLineError {
    /// The underlying read failed (includes timeouts: `WouldBlock`/`TimedOut`).
    #[error("read failed: {0}")]
    Io(#[from] std::io::Error),
    /// The line is longer than the limit; the rest of it was not consumed.
    #[error("line longer than {max} bytes")]
    TooLong {
        /// The limit.
        max: usize,
    },
    /// The line is not UTF-8.
    #[error("line is not valid UTF-8")]
    NotUtf8,
}

/// Read one `'\n'`-terminated line of at most `max` bytes (newline excluded) from `reader`.
///
/// Returns `Ok(None)` at a clean end of stream (no bytes before EOF). A final line without a
/// newline is returned as is. A trailing `"\r"` is removed. When the line exceeds `max`, returns
/// [`ReadLineError::TooLong`] without consuming the rest of the line (the caller should close the
/// connection). Never allocates more than `max` + one buffer's worth.
pub fn read_line_bounded<R: BufRead + ?Sized>(
    reader: &mut R,
    max: usize,
) -> Result<Option<String>, ReadLineError> {
    let mut line: Vec<u8> = Vec::new();
    let mut saw_any = false;
    loop {
        let available = match reader.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ReadLineError::Io(e)),
        };
        if available.is_empty() {
            if !saw_any {
                return Ok(None);
            }
            break;
        }
        saw_any = true;
        match available.iter().position(|&b| b == b'\n') {
            Some(i) => {
                // One byte of slack for the '\r' of a CRLF pair; checked again below.
                if line.len() + i > max.saturating_add(1) {
                    return Err(ReadLineError::TooLong { max });
                }
                line.extend_from_slice(&available[..i]);
                reader.consume(i + 1);
                break;
            }
            None => {
                let n = available.len();
                // Allow one '\r' past the limit: it may be the CR of a CRLF pair.
                if line.len() + n > max.saturating_add(1) {
                    return Err(ReadLineError::TooLong { max });
                }
                line.extend_from_slice(available);
                reader.consume(n);
            }
        }
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    if line.len() > max {
        return Err(ReadLineError::TooLong { max });
    }
    String::from_utf8(line)
        .map(Some)
        .map_err(|_| ReadLineError::NotUtf8)
}

/// Encode a request as one line, newline included.
pub fn encode_request(request: &Request) -> Result<String, ProtoError> {
    let mut s = serde_json::to_string(request).map_err(|e| ProtoError::Encode(e.to_string()))?;
    s.push('\n');
    Ok(s)
}

/// Only the version field, read first so a wrong version gets its own error.
#[derive(Deserialize)]
struct VersionProbe {
    v: Option<serde_json::Value>,
}

/// Parse one request line (without or with its newline). The version is checked first.
pub fn parse_request(line: &str) -> Result<Request, ProtoError> {
    if !line.trim_start().starts_with('{') {
        return Err(ProtoError::Malformed(
            "a request must be a JSON object".to_string(),
        ));
    }
    let probe: VersionProbe =
        serde_json::from_str(line).map_err(|e| ProtoError::Malformed(e.to_string()))?;
    match probe.v {
        None => return Err(ProtoError::MissingVersion),
        Some(serde_json::Value::Number(n)) => match n.as_u64() {
            Some(v) if v == u64::from(PROTOCOL_VERSION) => {}
            Some(v) => return Err(ProtoError::UnsupportedVersion(v)),
            None => {
                return Err(ProtoError::InvalidRequest(format!(
                    "protocol version must be a non-negative integer, got {n}"
                )))
            }
        },
        Some(other) => {
            return Err(ProtoError::InvalidRequest(format!(
                "protocol version must be an integer, got {other}"
            )))
        }
    }
    serde_json::from_str(line).map_err(|e| ProtoError::InvalidRequest(e.to_string()))
}

/// Encode a response as one line, newline included.
pub fn encode_response(response: &Response) -> Result<String, ProtoError> {
    let wire = match response {
        Response::Ok(data) => ResponseWire {
            ok: Some(true),
            data: Some(data.clone()),
            error: None,
            lease: None,
        },
        Response::Err(msg) => ResponseWire {
            ok: Some(false),
            data: None,
            error: Some(msg.clone()),
            lease: None,
        },
    };
    let mut s = serde_json::to_string(&wire).map_err(|e| ProtoError::Encode(e.to_string()))?;
    s.push('\n');
    Ok(s)
}

/// Turn a decoded wire object into a response.
fn wire_to_response(wire: ResponseWire) -> Result<Response, ProtoError> {
    match wire.ok {
        Some(true) => Ok(Response::Ok(wire.data.unwrap_or(serde_json::Value::Null))),
        Some(false) => Ok(Response::Err(wire.error.unwrap_or_else(|| {
            "daemon reported an error without a message".to_string()
        }))),
        None => Err(ProtoError::Malformed(
            "response has no \"ok\" field".to_string(),
        )),
    }
}

/// Parse one response line.
pub fn parse_response(line: &str) -> Result<Response, ProtoError> {
    let wire: ResponseWire =
        serde_json::from_str(line).map_err(|e| ProtoError::Malformed(e.to_string()))?;
    wire_to_response(wire)
}

/// Encode one export lease line `{"lease": {...}}`, newline included.
pub fn encode_export_lease(lease: &LeaseRecord) -> Result<String, ProtoError> {
    #[derive(Serialize)]
    struct LeaseLine<'a> {
        lease: &'a LeaseRecord,
    }
    let mut s = serde_json::to_string(&LeaseLine { lease })
        .map_err(|e| ProtoError::Encode(e.to_string()))?;
    s.push('\n');
    Ok(s)
}

/// Parse one line of an export stream: a lease line or the final response.
pub fn parse_export_frame(line: &str) -> Result<ExportFrame, ProtoError> {
    let mut wire: ResponseWire =
        serde_json::from_str(line).map_err(|e| ProtoError::Malformed(e.to_string()))?;
    match wire.lease.take() {
        Some(lease) if wire.ok.is_none() => Ok(ExportFrame::Lease(lease)),
        Some(_) => Err(ProtoError::Malformed(
            "export line has both \"lease\" and \"ok\"".to_string(),
        )),
        None => wire_to_response(wire).map(ExportFrame::Done),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::{BufReader, Cursor};

    fn sample_lease() -> LeaseRecord {
        LeaseRecord {
            address: Ipv4Addr::new(10, 0, 0, 5),
            state: LeaseState::Leased,
            hwaddr: Some("02:00:00:00:00:01".parse().unwrap()),
            client_id: Some("01020000000001".parse().unwrap()),
            expires: 1_764_000_000,
            subnet: Some("10.0.0.0/8".into()),
            hostname: None,
        }
    }

    #[test]
    fn requests_have_the_documented_wire_shape() {
        let cases = [
            (Command::Status, r#"{"v":1,"cmd":"status"}"#),
            (Command::Stats, r#"{"v":1,"cmd":"stats"}"#),
            (
                Command::Lease {
                    address: Ipv4Addr::new(10, 0, 0, 5),
                },
                r#"{"v":1,"cmd":"lease","address":"10.0.0.5"}"#,
            ),
            (
                Command::LeasesByMac {
                    mac: "02:00:00:00:00:01".parse().unwrap(),
                },
                r#"{"v":1,"cmd":"leases_by_mac","mac":"02:00:00:00:00:01"}"#,
            ),
            (Command::Export, r#"{"v":1,"cmd":"export"}"#),
            (Command::HaStatus, r#"{"v":1,"cmd":"ha_status"}"#),
        ];
        for (cmd, expected) in cases {
            let line = encode_request(&Request::new(cmd.clone())).unwrap();
            assert_eq!(line, format!("{expected}\n"));
            assert_eq!(parse_request(&line).unwrap(), Request::new(cmd));
        }
    }

    #[test]
    fn import_request_round_trips() {
        let req = Request::new(Command::Import {
            leases: vec![sample_lease(), sample_lease()],
            force: false,
        });
        let line = encode_request(&req).unwrap();
        assert!(line.starts_with(r#"{"v":1,"cmd":"import","leases":[{"address":"10.0.0.5""#));
        assert_eq!(line.matches('\n').count(), 1);
        assert_eq!(parse_request(&line).unwrap(), req);
    }

    #[test]
    fn wrong_version_is_refused_with_a_clear_message() {
        let err = parse_request(r#"{"v":2,"cmd":"status"}"#).unwrap_err();
        assert_eq!(err, ProtoError::UnsupportedVersion(2));
        assert_eq!(
            err.to_string(),
            "unsupported control protocol version 2 (this daemon speaks 1)"
        );
        // Version is checked before the command: an unknown v2 command still reports the version.
        assert_eq!(
            parse_request(r#"{"v":2,"cmd":"frobnicate"}"#).unwrap_err(),
            ProtoError::UnsupportedVersion(2)
        );
        assert_eq!(
            parse_request(r#"{"cmd":"status"}"#).unwrap_err(),
            ProtoError::MissingVersion
        );
        assert!(matches!(
            parse_request(r#"{"v":"1","cmd":"status"}"#),
            Err(ProtoError::InvalidRequest(_))
        ));
        assert!(matches!(
            parse_request(r#"{"v":-1,"cmd":"status"}"#),
            Err(ProtoError::InvalidRequest(_))
        ));
    }

    #[test]
    fn bad_requests_are_errors_not_panics() {
        assert!(matches!(
            parse_request("not json"),
            Err(ProtoError::Malformed(_))
        ));
        assert!(matches!(
            parse_request("[1]"),
            Err(ProtoError::Malformed(_))
        ));
        assert!(matches!(
            parse_request(r#"{"v":1,"cmd":"frobnicate"}"#),
            Err(ProtoError::InvalidRequest(_))
        ));
        assert!(matches!(
            parse_request(r#"{"v":1,"cmd":"lease","address":"10.0.0.256"}"#),
            Err(ProtoError::InvalidRequest(_))
        ));
        assert!(matches!(
            parse_request(r#"{"v":1}"#),
            Err(ProtoError::InvalidRequest(_))
        ));
    }

    #[test]
    fn responses_round_trip() {
        let ok = Response::ok(&ExportDone { count: 3 }).unwrap();
        let line = encode_response(&ok).unwrap();
        assert_eq!(line, "{\"ok\":true,\"data\":{\"count\":3}}\n");
        assert_eq!(parse_response(&line).unwrap(), ok);
        let done: ExportDone = parse_response(&line).unwrap().into_data().unwrap();
        assert_eq!(done.count, 3);

        let err = Response::error("no lease for 10.0.0.5");
        let line = encode_response(&err).unwrap();
        assert_eq!(line, "{\"ok\":false,\"error\":\"no lease for 10.0.0.5\"}\n");
        assert_eq!(parse_response(&line).unwrap(), err);
        assert_eq!(
            parse_response(&line)
                .unwrap()
                .into_data::<ExportDone>()
                .unwrap_err(),
            ProtoError::Failed("no lease for 10.0.0.5".into())
        );
        assert!(parse_response(r#"{"data":1}"#).is_err());
    }

    #[test]
    fn export_frames_parse() {
        let line = encode_export_lease(&sample_lease()).unwrap();
        assert!(line.starts_with("{\"lease\":{"));
        assert_eq!(
            parse_export_frame(&line).unwrap(),
            ExportFrame::Lease(sample_lease())
        );
        let done = encode_response(&Response::ok(&ExportDone { count: 1 }).unwrap()).unwrap();
        assert!(matches!(
            parse_export_frame(&done).unwrap(),
            ExportFrame::Done(Response::Ok(_))
        ));
    }

    #[test]
    fn status_and_stats_match_the_cli_contract() {
        let status = r#"{"pid": 123, "state": "running", "config_generation": 1, "uptime_secs": 5,
            "last_reload": {"ok": true, "message": "loaded"},
            "workers": [{"id": 0, "pid": 124, "state": "running", "restarts": 0}],
            "table": {"path": "/var/lib/prodhcp/leases.table", "slots": 254, "clean_start": true}}"#;
        let s: StatusData = serde_json::from_str(status).unwrap();
        assert_eq!(s.workers[0].pid, Some(124));
        assert_eq!(s.table.slots, 254);

        let stats = r#"{"total": {"received": 9, "discover": 1, "request": 1, "decline": 0, "release": 0,
            "inform": 0, "offer": 1, "ack": 1, "nak": 0, "dropped": 2, "drops": {"too_short": 2}},
            "workers": [{"id": 0, "received": 9, "discover": 1, "request": 1, "decline": 0, "release": 0,
            "inform": 0, "offer": 1, "ack": 1, "nak": 0, "dropped": 2, "drops": {"too_short": 2}}],
            "pools": [{"first": "10.0.0.100", "last": "10.0.0.200", "size": 101, "free": 100,
            "offered": 0, "leased": 1, "declined": 0, "reserved": 0}]}"#;
        let st: StatsData = serde_json::from_str(stats).unwrap();
        assert_eq!(st.workers[0].counters.packet("received"), 9);
        assert_eq!(st.total.packet("ack"), 1);
        assert!(st.total.events.is_empty());
        assert_eq!(st.total.drops.get("too_short"), Some(&2));
        let re = serde_json::to_value(&st).unwrap();
        assert_eq!(re["workers"][0]["id"], 0);
        assert_eq!(re["workers"][0]["dropped"], 2);
        assert_eq!(re["pools"][0]["first"], "10.0.0.100");
    }

    #[test]
    fn lease_record_json_shape() {
        let v = serde_json::to_value(sample_lease()).unwrap();
        assert_eq!(v["address"], "10.0.0.5");
        assert_eq!(v["state"], "leased");
        assert_eq!(v["expires"], 1_764_000_000u64);
        assert!(v.get("hostname").is_none());
        let mut l = sample_lease();
        l.client_id = None;
        let v = serde_json::to_value(&l).unwrap();
        assert!(v["client_id"].is_null());
    }

    #[test]
    fn read_line_bounded_behaviour() {
        let mut r = BufReader::with_capacity(4, Cursor::new(b"abc\r\ndefgh\nlast".to_vec()));
        assert_eq!(
            read_line_bounded(&mut r, 10).unwrap().as_deref(),
            Some("abc")
        );
        assert_eq!(
            read_line_bounded(&mut r, 10).unwrap().as_deref(),
            Some("defgh")
        );
        assert_eq!(
            read_line_bounded(&mut r, 10).unwrap().as_deref(),
            Some("last")
        );
        assert!(read_line_bounded(&mut r, 10).unwrap().is_none());

        let mut r = BufReader::with_capacity(4, Cursor::new(b"0123456789A\n".to_vec()));
        assert!(matches!(
            read_line_bounded(&mut r, 10),
            Err(ReadLineError::TooLong { max: 10 })
        ));
        // Exactly at the limit, with CRLF, is fine.
        let mut r = BufReader::with_capacity(3, Cursor::new(b"0123456789\r\n".to_vec()));
        assert_eq!(
            read_line_bounded(&mut r, 10).unwrap().as_deref(),
            Some("0123456789")
        );
        let mut r = Cursor::new(b"\xff\xfe\n".to_vec());
        assert!(matches!(
            read_line_bounded(&mut r, 10),
            Err(ReadLineError::NotUtf8)
        ));
    }

    fn arb_lease() -> impl Strategy<Value = LeaseRecord> {
        (
            any::<u32>(),
            prop::sample::select(vec![
                LeaseState::Leased,
                LeaseState::Declined,
                LeaseState::Expired,
                LeaseState::Released,
            ]),
            prop::option::of(prop::collection::vec(any::<u8>(), 1..=16)),
            prop::option::of(prop::collection::vec(any::<u8>(), 1..=20)),
            any::<u64>(),
            prop::option::of(".{0,20}"),
        )
            .prop_map(
                |(a, state, hwaddr, client_id, expires, hostname)| LeaseRecord {
                    address: Ipv4Addr::from(a),
                    state,
                    hwaddr: hwaddr.map(|h| HwAddr::new(&h).unwrap()),
                    client_id: client_id.and_then(|c| ClientId::new(&c)),
                    expires,
                    subnet: None,
                    hostname,
                },
            )
    }

    proptest! {
        #[test]
        fn import_requests_round_trip(leases in prop::collection::vec(arb_lease(), 0..20)) {
            let req = Request::new(Command::Import {
                leases,
                force: false,
            });
            let line = encode_request(&req).unwrap();
            prop_assert_eq!(line.matches('\n').count(), 1);
            prop_assert_eq!(parse_request(&line).unwrap(), req);
        }

        #[test]
        fn parsing_arbitrary_lines_never_panics(s in ".{0,200}") {
            let _ = parse_request(&s);
            let _ = parse_response(&s);
            let _ = parse_export_frame(&s);
        }
    }
}

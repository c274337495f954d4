//! Lease records, and the data of the `lease`, `leases_by_mac`, `import` and `export` responses.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::client_id::ClientId;
use crate::hwaddr::HwAddr;

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

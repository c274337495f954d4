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
//! {"v": 1, "cmd": "audit_status"}
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
//! | `ha`            | [`HaCommandAccepted`]                    |
//! | `audit_status`  | [`AuditStatusData`]                      |
//! | `alarms`        | [`AlarmsData`]                           |
//!
//! Import semantics: the server applies the records of a batch in order, so when the same address
//! appears more than once (Kea memfile and dhcpd.leases are append-only logs) the last record wins.
//! Each message in [`ImportResult::errors`] should start with the record's address, since the
//! server does not know the file's line numbers.

use std::io::BufRead;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::hwaddr::HwAddr;

mod alarms;
mod audit;
mod consumers;
mod ha;
mod leases;
mod stats;
mod status;
#[cfg(test)]
mod tests;

pub use alarms::*;
pub use audit::*;
pub use consumers::*;
pub use ha::*;
pub use leases::*;
pub use stats::*;
pub use status::*;

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
    /// An HA command for syncd (`switchover`, `partner-down`); answered with
    /// [`HaCommandAccepted`] once handed to syncd, its outcome shows in `ha_status`
    /// (`last_command`).
    Ha {
        /// The command.
        command: HaCommand,
    },
    /// The audit trail: the audit process, its targets, spool and losses.
    AuditStatus,
    /// Every pool's utilisation alarm: level, utilisation, free, time-to-exhaustion estimate.
    Alarms,
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
            Command::Ha { .. } => "ha",
            Command::AuditStatus => "audit_status",
            Command::Alarms => "alarms",
        }
    }
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

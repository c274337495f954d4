//! prodhcp's configuration: one RON file, read in two stages.
//!
//! 1. `wire.rs` reads the text with serde into a form that mirrors the file (unknown fields
//!    are errors); ron's line and column and the serde path of the field go into the error.
//! 2. `validate.rs` checks every rule (pools inside subnets, nothing overlapping, no duplicate
//!    reservations, …), encodes the DHCP options once, and builds [`Config`]. Its errors name
//!    the field path and, found by `scan.rs`, the line.
//!
//! Before either, the raw text is checked for size, NUL bytes and nesting depth, so hostile
//! input is refused cheaply and can never exhaust the stack.
//!
//! Architecture Invariant: this crate does no I/O besides reading the one file in [`load`],
//! and nothing in a configuration text can make it panic.

pub mod alarms;
pub mod audit;
pub mod cluster;
mod error;
pub mod handoff;
mod lookup;
mod model;
pub mod options;
mod path;
mod range;
mod scan;
mod validate;
mod wire;

use std::io::Read as _;
use std::path::Path;

pub use alarms::{PoolAlarms, Thresholds};
pub use audit::{Audit, AuditHost, AuditTarget, AuditTls, Endpoint};
pub use cluster::{Cluster, Peer, Replication, ServiceAddress};
pub use error::ConfigError;
pub use lookup::SubnetLookup;
pub use model::{Config, Durability, Reservation, Subnet, TableRange, MAX_WORKERS};
pub use options::OptionBlock;
pub use range::{AddressRange, RangeParseError};
pub use validate::{
    MAX_DECLINE_QUARANTINE, MAX_LEASE_TIME, MAX_OFFER_HOLD, MAX_RING_CAPACITY, MAX_TABLE_ADDRESSES,
    MAX_TABLE_RANGES, MAX_USER_NAME, MIN_RING_CAPACITY,
};
pub use wire::{
    DEFAULT_CONTROL_SOCKET, DEFAULT_DECLINE_QUARANTINE, DEFAULT_LEASE_TIME, DEFAULT_LISTEN_PORT,
    DEFAULT_LOG_LEVEL, DEFAULT_OFFER_HOLD, DEFAULT_RING_CAPACITY, DEFAULT_STATE_DIR,
};

/// Largest configuration accepted, in bytes (256 MiB): room for carrier configurations of
/// 100,000 subnets and more (about 20 MB), still a bound on what a hostile file can make the
/// parser hold. The supervisor→worker channel (`prodhcp_proto::launch::MAX_FRAME`) carries a
/// text of this size; the supervisor checks that at compile time.
pub const MAX_FILE_SIZE: u64 = 256 << 20;
/// Deepest bracket nesting accepted. A real configuration nests about 6 deep.
pub const MAX_NESTING: usize = 64;

/// Parses and validates a configuration text.
pub fn parse(text: &str) -> Result<Config, ConfigError> {
    precheck(text)?;
    let wire = wire::read(text)?;
    validate::validate(wire).map_err(|invalid| {
        let at = scan::locate(text, &invalid.path);
        ConfigError::Invalid {
            line: at.map(|p| p.line),
            column: at.map(|p| p.column),
            field: invalid.path.to_string(),
            message: invalid.message,
        }
    })
}

/// Parses and validates a configuration given as bytes (which must be UTF-8).
pub fn parse_bytes(bytes: &[u8]) -> Result<Config, ConfigError> {
    check_size(bytes.len() as u64)?;
    match std::str::from_utf8(bytes) {
        Ok(text) => parse(text),
        Err(e) => {
            let valid = bytes.get(..e.valid_up_to()).unwrap_or_default();
            let valid = String::from_utf8_lossy(valid);
            let (line, column) = line_column(&valid, valid.len());
            Err(ConfigError::Syntax {
                line,
                column,
                field: None,
                message: "the file is not valid UTF-8".to_string(),
            })
        }
    }
}

/// Reads, parses and validates the configuration file at `path`. Errors name the file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let in_file = |source: ConfigError| ConfigError::InFile {
        path: path.to_path_buf(),
        source: Box::new(source),
    };
    let read_error = |source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let size = file.metadata().map_err(read_error)?.len();
    check_size(size).map_err(in_file)?;
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    file.take(MAX_FILE_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    parse_bytes(&bytes).map_err(in_file)
}

fn check_size(size: u64) -> Result<(), ConfigError> {
    if size > MAX_FILE_SIZE {
        return Err(ConfigError::TooLarge {
            size,
            limit: MAX_FILE_SIZE,
        });
    }
    Ok(())
}

/// Refuses what must never reach the parser: oversized text, NUL bytes, deep nesting.
fn precheck(text: &str) -> Result<(), ConfigError> {
    check_size(text.len() as u64)?;
    if let Some(offset) = text.find('\0') {
        let (line, column) = line_column(text, offset);
        return Err(ConfigError::Syntax {
            line,
            column,
            field: None,
            message: "the file contains a NUL byte".to_string(),
        });
    }
    if let Some(at) = scan::first_too_deep(text, MAX_NESTING) {
        return Err(ConfigError::Syntax {
            line: at.line,
            column: at.column,
            field: None,
            message: format!("brackets nest more than {MAX_NESTING} deep"),
        });
    }
    Ok(())
}

/// Line and column (1-based, columns in characters) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = 1 + before.matches('\n').count();
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = 1 + before.get(line_start..).unwrap_or("").chars().count();
    (line, column)
}

#[cfg(test)]
mod tests;

//! Lease file parsers for `prodhcpctl leases import`: Kea memfile CSV (lease4) and ISC
//! `dhcpd.leases`.
//!
//! Both parsers stream: they read through a fixed buffer and yield one [`ImportItem`] at a time, so a
//! 10-million-row file never sits in memory. Input is untrusted: nothing here panics, every line and
//! token is bounded ([`MAX_LINE`], [`MAX_TOKEN`]), and a bad record is rejected on its own with the
//! line number where the problem is ([`RowError`]); only an unreadable file or an unusable Kea header
//! stops the whole import ([`ImportReadError`]).
//!
//! Records come out in file order. Both formats are append-only logs in which a later record for an
//! address supersedes an earlier one; the daemon applies import records in order, so the last one
//! wins without the parser keeping any per-address state.
//!
//! State mapping:
//! - Kea `state` 0 → `leased`, 1 → `declined`, 2 (expired-reclaimed) → `expired`, 3 → `released`.
//! - dhcpd `binding state active` → `leased`, `abandoned` → `declined`; `free`, `backup`, `expired`,
//!   `released`, `reset` → skipped (counted, not an error); anything else is rejected.
//!
//! A record needs a hardware address or a client identifier, except a declined one (Kea itself
//! writes declined leases with a blank hardware address, and an abandoned dhcpd lease may have
//! neither). Infinite lifetimes (Kea `valid_lifetime` 4294967295, dhcpd `ends never`) are rejected:
//! the lease table has no "never expires" slot.

mod dhcpd;
mod dhcpd_lexer;
mod fields;
mod input;
mod kea;
#[cfg(test)]
mod test_support;

use std::fmt;
use std::io::{self, Read};

use prodhcp_proto::{HwAddr, LeaseRecord};

pub use dhcpd::IscLeasesParser;
pub use kea::KeaCsvParser;

/// Longest Kea CSV line accepted (bytes); a longer line is rejected (and skipped) on its own.
pub const MAX_LINE: usize = 1 << 20;
/// Longest dhcpd.leases token (word or quoted string) kept; a longer one makes its record rejected.
pub const MAX_TOKEN: usize = 64 << 10;
/// Most octets in a hardware address (`chaddr` is 16 octets).
pub const MAX_HWADDR_OCTETS: usize = HwAddr::MAX_LEN;
/// Most octets in a client identifier (a DHCP option carries at most 255).
pub const MAX_CLIENT_ID_OCTETS: usize = 255;
/// Longest host name accepted (a DHCP option carries at most 255 octets).
pub const MAX_HOSTNAME: usize = 255;
/// How many error messages an [`ErrorLog`] keeps; the rest are only counted.
pub const MAX_ERROR_MESSAGES: usize = 100;

/// Input formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportFormat {
    /// Kea memfile lease4 CSV.
    KeaCsv,
    /// ISC dhcpd.leases.
    Isc,
}

/// A record rejected on its own; the import goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    /// 1-based line number where the problem is.
    pub line: u64,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// One result of a parser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportItem {
    /// A lease to import.
    Lease {
        /// Line where the record starts.
        line: u64,
        /// The record.
        record: LeaseRecord,
    },
    /// A record that cannot be imported.
    Rejected(RowError),
    /// A record deliberately not imported (dhcpd free/backup/expired/released leases).
    Skipped {
        /// Line where the record starts.
        line: u64,
    },
}

/// Errors that stop the whole import.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportReadError {
    /// Reading the file failed.
    #[error("reading line {line}: {source}")]
    Io {
        /// Line being read.
        line: u64,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The Kea CSV header is missing or lacks a required column.
    #[error("line {line}: {message}")]
    BadHeader {
        /// Line of the header.
        line: u64,
        /// What is wrong.
        message: String,
    },
}

/// A streaming lease parser.
pub trait LeaseSource {
    /// The next item, or `None` at the end of the file.
    fn next_item(&mut self) -> Result<Option<ImportItem>, ImportReadError>;
    /// Bytes consumed from the input so far (for progress).
    fn bytes_read(&self) -> u64;
}

/// A parser for `format` reading from `reader` (which need not be buffered).
pub fn lease_source<'a, R: Read + 'a>(
    format: ImportFormat,
    reader: R,
) -> Box<dyn LeaseSource + 'a> {
    match format {
        ImportFormat::KeaCsv => Box::new(KeaCsvParser::new(reader)),
        ImportFormat::Isc => Box::new(IscLeasesParser::new(reader)),
    }
}

/// A bounded list of error messages: keeps the first [`MAX_ERROR_MESSAGES`], counts the rest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorLog {
    messages: Vec<String>,
    omitted: u64,
}

impl ErrorLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Record one message (kept only while fewer than the limit are kept).
    pub fn push(&mut self, message: impl Into<String>) {
        if self.messages.len() < MAX_ERROR_MESSAGES {
            self.messages.push(message.into());
        } else {
            self.omitted += 1;
        }
    }

    /// The kept messages.
    pub fn messages(&self) -> &[String] {
        &self.messages
    }

    /// How many messages were counted but not kept.
    pub fn omitted(&self) -> u64 {
        self.omitted
    }

    /// The kept messages, followed by "... and N more errors" when some were omitted.
    pub fn into_messages(mut self) -> Vec<String> {
        if self.omitted > 0 {
            self.messages
                .push(format!("... and {} more errors not shown", self.omitted));
        }
        self.messages
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn error_log_is_bounded() {
        let mut log = ErrorLog::new();
        for i in 0..250 {
            log.push(format!("line {i}: bad"));
        }
        assert_eq!(log.messages().len(), MAX_ERROR_MESSAGES);
        assert_eq!(log.omitted(), 150);
        let v = log.into_messages();
        assert_eq!(v.len(), MAX_ERROR_MESSAGES + 1);
        assert_eq!(v[0], "line 0: bad");
        assert_eq!(v[100], "... and 150 more errors not shown");
    }

    /// Parse speed on generated data. Prints numbers, asserts nothing about time:
    /// `cargo test -p prodhcp-supervisor --release -- --ignored parse_speed --nocapture`
    #[test]
    #[ignore = "a measurement that prints parse speed, not a test; run by hand with --ignored"]
    fn parse_speed() {
        let n = 1_000_000;
        for (format, data) in [
            (ImportFormat::KeaCsv, gen_kea(n, 1_764_000_000)),
            (ImportFormat::Isc, gen_isc(n)),
        ] {
            let t = std::time::Instant::now();
            let mut src = lease_source(format, data.as_bytes());
            let mut count = 0u64;
            while let Some(item) = src.next_item().unwrap() {
                if matches!(item, ImportItem::Lease { .. }) {
                    count += 1;
                }
            }
            let secs = t.elapsed().as_secs_f64();
            assert_eq!(count, n);
            println!(
                "{format:?}: {n} leases, {} MB in {secs:.2} s = {:.2} M leases/s",
                data.len() >> 20,
                n as f64 / secs / 1e6
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..2000)) {
            let _ = parse(ImportFormat::KeaCsv, &data);
            let _ = parse(ImportFormat::Isc, &data);
        }

        #[test]
        fn lease_like_text_never_panics(words in prop::collection::vec(
            prop::sample::select(vec!["lease", "10.0.0.1", "{", "}", ";", "\"", "\\", "ends", "never",
                "epoch", "binding", "state", "active", "abandoned", "hardware", "ethernet", "uid",
                "02:00:00", "#", "\n", "\r\n", "3", "2025/01/08", "10:00:00", ",", "0", "ff:ff"]),
            0..200,
        )) {
            let text = words.join(" ");
            let _ = parse(ImportFormat::Isc, text.as_bytes());
            let kea_text = format!("{KEA_HEADER}{}", words.join(","));
            let _ = parse(ImportFormat::KeaCsv, kea_text.as_bytes());
        }
    }
}

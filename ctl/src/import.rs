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

use std::fmt;
use std::io::{self, Read};
use std::net::Ipv4Addr;

use prodhcp_proto::{ClientId, HwAddr, LeaseRecord, LeaseState};

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

const READ_BUFFER: usize = 256 << 10;
const MAX_ARGS: usize = 32;

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

// ---------------------------------------------------------------------------------------------
// Buffered byte input with a consumed-bytes count.

struct ByteReader<R> {
    inner: R,
    buf: Box<[u8]>,
    pos: usize,
    len: usize,
    consumed: u64,
}

enum LineStatus {
    Eof,
    Line,
    TooLong,
}

impl<R: Read> ByteReader<R> {
    fn new(inner: R) -> Self {
        ByteReader {
            inner,
            buf: vec![0u8; READ_BUFFER].into_boxed_slice(),
            pos: 0,
            len: 0,
            consumed: 0,
        }
    }

    /// Make at least one byte available; false at end of input.
    #[inline]
    fn fill(&mut self) -> io::Result<bool> {
        if self.pos < self.len {
            return Ok(true);
        }
        loop {
            match self.inner.read(&mut self.buf) {
                Ok(n) => {
                    self.pos = 0;
                    self.len = n;
                    return Ok(n > 0);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    #[inline]
    fn available(&self) -> &[u8] {
        self.buf.get(self.pos..self.len).unwrap_or(&[])
    }

    #[inline]
    fn advance(&mut self, n: usize) {
        let n = n.min(self.len - self.pos);
        self.pos += n;
        self.consumed += n as u64;
    }

    #[inline]
    fn peek(&mut self) -> io::Result<Option<u8>> {
        if !self.fill()? {
            return Ok(None);
        }
        Ok(self.available().first().copied())
    }

    /// Read one line (without '\n') into `out`, keeping at most `max` bytes; the rest of an
    /// over-long line is consumed and dropped.
    fn read_line(&mut self, out: &mut Vec<u8>, max: usize) -> io::Result<LineStatus> {
        out.clear();
        let mut any = false;
        let mut too_long = false;
        loop {
            if !self.fill()? {
                break;
            }
            any = true;
            let avail = self.available();
            match avail.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    if !too_long {
                        if out.len() + i > max + 1 {
                            too_long = true;
                        } else {
                            out.extend_from_slice(&avail[..i]);
                        }
                    }
                    self.advance(i + 1);
                    break;
                }
                None => {
                    let n = avail.len();
                    if !too_long {
                        if out.len() + n > max + 1 {
                            too_long = true;
                        } else {
                            out.extend_from_slice(avail);
                        }
                    }
                    self.advance(n);
                }
            }
        }
        if !any {
            return Ok(LineStatus::Eof);
        }
        if out.last() == Some(&b'\r') {
            out.pop();
        }
        if too_long || out.len() > max {
            out.clear();
            return Ok(LineStatus::TooLong);
        }
        Ok(LineStatus::Line)
    }
}

// ---------------------------------------------------------------------------------------------
// Shared field helpers.

/// A short, printable rendering of untrusted bytes for error messages.
fn shown(bytes: &[u8]) -> String {
    const LIMIT: usize = 40;
    let s = String::from_utf8_lossy(&bytes[..bytes.len().min(LIMIT)]);
    let mut out: String = s
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if bytes.len() > LIMIT {
        out.push_str("...");
    }
    out
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Parse hex octets: `aa:bb:c` (1–2 digits per group, ':' separated) or contiguous `aabbcc`.
fn parse_hex_octets(s: &[u8], what: &str, max: usize) -> Result<Vec<u8>, String> {
    let bad = || format!("invalid {what} '{}'", shown(s));
    if s.is_empty() {
        return Err(bad());
    }
    let mut out = Vec::with_capacity(s.len().div_ceil(2).min(max + 1));
    if s.contains(&b':') {
        for group in s.split(|&b| b == b':') {
            let v = match group {
                [a] => hex_val(*a).ok_or_else(bad)?,
                [a, b] => (hex_val(*a).ok_or_else(bad)? << 4) | hex_val(*b).ok_or_else(bad)?,
                _ => return Err(bad()),
            };
            if out.len() == max {
                return Err(format!("{what} longer than {max} octets"));
            }
            out.push(v);
        }
    } else {
        let digits = s
            .strip_prefix(b"0x")
            .or_else(|| s.strip_prefix(b"0X"))
            .unwrap_or(s);
        if digits.is_empty() || digits.len() & 1 == 1 {
            return Err(bad());
        }
        if digits.len() / 2 > max {
            return Err(format!("{what} longer than {max} octets"));
        }
        for pair in digits.chunks_exact(2) {
            let (a, b) = match pair {
                [a, b] => (*a, *b),
                _ => return Err(bad()),
            };
            out.push((hex_val(a).ok_or_else(bad)? << 4) | hex_val(b).ok_or_else(bad)?);
        }
    }
    Ok(out)
}

fn parse_u64(s: &[u8]) -> Option<u64> {
    let s = s.trim_ascii();
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    let mut v: u64 = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(v)
}

fn parse_ipv4(s: &[u8]) -> Option<Ipv4Addr> {
    std::str::from_utf8(s.trim_ascii()).ok()?.parse().ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ => {
            if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 {
                29
            } else {
                28
            }
        }
    }
}

/// Unix seconds of a dhcpd UTC time `YYYY/MM/DD` `HH:MM:SS`.
fn parse_isc_time(date: &[u8], time: &[u8]) -> Option<u64> {
    let mut d = date.split(|&b| b == b'/');
    let year = parse_u64(d.next()?)?;
    let month = parse_u64(d.next()?)?;
    let day = parse_u64(d.next()?)?;
    if d.next().is_some() {
        return None;
    }
    let mut t = time.split(|&b| b == b':');
    let hour = parse_u64(t.next()?)?;
    let minute = parse_u64(t.next()?)?;
    let second = parse_u64(t.next()?)?;
    if t.next().is_some() {
        return None;
    }
    let year = i64::try_from(year).ok()?;
    let month = u32::try_from(month).ok()?;
    let day = u32::try_from(day).ok()?;
    if !(1970..=9999).contains(&year)
        || !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + i64::try_from(hour * 3600 + minute * 60 + second).ok()?;
    u64::try_from(secs).ok()
}

/// Undo Kea's CSV escaping (`&#xHH`, used for ',' in host names and user contexts).
fn kea_unescape(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while let Some(&b) = s.get(i) {
        if b == b'&' {
            if let Some([b'#', b'x', h, l]) = s.get(i + 1..i + 5) {
                if let (Some(h), Some(l)) = (hex_val(*h), hex_val(*l)) {
                    out.push((h << 4) | l);
                    i += 5;
                    continue;
                }
            }
        }
        out.push(b);
        i += 1;
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Kea memfile CSV.

/// Column positions found in a Kea lease4 header.
#[derive(Debug, Clone)]
struct KeaColumns {
    address: usize,
    hwaddr: usize,
    client_id: usize,
    valid_lifetime: usize,
    expire: usize,
    subnet_id: Option<usize>,
    hostname: Option<usize>,
    state: Option<usize>,
    /// Number of header columns.
    count: usize,
    /// Fields a row must have (the highest required column + 1).
    min_fields: usize,
}

const KEA_REQUIRED: [&str; 5] = ["address", "hwaddr", "client_id", "valid_lifetime", "expire"];

impl KeaColumns {
    fn from_header(line: &[u8], line_no: u64) -> Result<Self, ImportReadError> {
        let bad = |message: String| ImportReadError::BadHeader {
            line: line_no,
            message,
        };
        let line = line.strip_prefix(b"\xef\xbb\xbf").unwrap_or(line);
        let names: Vec<&[u8]> = line.split(|&b| b == b',').map(|n| n.trim_ascii()).collect();
        let find = |name: &str| names.iter().position(|n| *n == name.as_bytes());
        if find("duid").is_some() || find("iaid").is_some() {
            return Err(bad(
                "this is a Kea lease6 file; only lease4 files can be imported".to_string(),
            ));
        }
        let mut required = [0usize; KEA_REQUIRED.len()];
        let mut missing = Vec::new();
        for (slot, name) in required.iter_mut().zip(KEA_REQUIRED) {
            match find(name) {
                Some(i) => *slot = i,
                None => missing.push(name),
            }
        }
        if !missing.is_empty() {
            return Err(bad(format!(
                "not a Kea lease4 CSV header: missing column(s) {} (header is '{}')",
                missing.join(", "),
                shown(line)
            )));
        }
        let [address, hwaddr, client_id, valid_lifetime, expire] = required;
        let min_fields = required.iter().copied().max().unwrap_or(0) + 1;
        Ok(KeaColumns {
            address,
            hwaddr,
            client_id,
            valid_lifetime,
            expire,
            subnet_id: find("subnet_id"),
            hostname: find("hostname"),
            state: find("state"),
            count: names.len(),
            min_fields,
        })
    }
}

/// Streaming parser of a Kea memfile lease4 CSV file (schema 2.x and later; columns by name).
pub struct KeaCsvParser<R> {
    input: ByteReader<R>,
    line_no: u64,
    line: Vec<u8>,
    header: Vec<u8>,
    columns: Option<KeaColumns>,
    fields: Vec<(usize, usize)>,
}

impl<R: Read> KeaCsvParser<R> {
    /// A parser reading `reader`.
    pub fn new(reader: R) -> Self {
        KeaCsvParser {
            input: ByteReader::new(reader),
            line_no: 0,
            line: Vec::with_capacity(256),
            header: Vec::new(),
            columns: None,
            fields: Vec::with_capacity(16),
        }
    }

    fn parse_row(&mut self, cols: &KeaColumns) -> Result<LeaseRecord, String> {
        let line = &self.line;
        self.fields.clear();
        let mut start = 0;
        for (i, &b) in line.iter().enumerate() {
            if b == b',' {
                self.fields.push((start, i));
                start = i + 1;
            }
        }
        self.fields.push((start, line.len()));
        let n = self.fields.len();
        if n > cols.count {
            return Err(format!("row has {n} fields, the header has {}", cols.count));
        }
        if n < cols.min_fields {
            return Err(format!(
                "row has {n} fields, at least {} are needed",
                cols.min_fields
            ));
        }
        let fields = &self.fields;
        let field = |i: usize| -> &[u8] {
            fields
                .get(i)
                .and_then(|&(a, b)| line.get(a..b))
                .unwrap_or(&[])
        };

        let addr_s = field(cols.address);
        let address =
            parse_ipv4(addr_s).ok_or_else(|| format!("invalid address '{}'", shown(addr_s)))?;

        let state = match cols.state.map(field) {
            None | Some(b"") => LeaseState::Leased,
            Some(s) => match parse_u64(s) {
                Some(0) => LeaseState::Leased,
                Some(1) => LeaseState::Declined,
                Some(2) => LeaseState::Expired,
                Some(3) => LeaseState::Released,
                _ => return Err(format!("{address}: unknown lease state '{}'", shown(s))),
            },
        };

        let hw_s = field(cols.hwaddr).trim_ascii();
        let hwaddr = if hw_s.is_empty() {
            None
        } else {
            let octets = parse_hex_octets(hw_s, "hwaddr", MAX_HWADDR_OCTETS)
                .and_then(|o| HwAddr::new(&o).map_err(|e| e.to_string()))
                .map_err(|e| format!("{address}: {e}"))?;
            Some(octets)
        };
        let cid_s = field(cols.client_id).trim_ascii();
        let client_id = if cid_s.is_empty() {
            None
        } else {
            let octets = parse_hex_octets(cid_s, "client_id", MAX_CLIENT_ID_OCTETS)
                .map_err(|e| format!("{address}: {e}"))?;
            // Not empty: parse_hex_octets refuses empty text.
            ClientId::new(&octets)
        };
        if hwaddr.is_none() && client_id.is_none() && state != LeaseState::Declined {
            return Err(format!("{address}: no hwaddr and no client_id"));
        }

        let vl_s = field(cols.valid_lifetime);
        let valid_lifetime = parse_u64(vl_s)
            .filter(|&v| v <= u64::from(u32::MAX))
            .ok_or_else(|| format!("{address}: invalid valid_lifetime '{}'", shown(vl_s)))?;
        if valid_lifetime == u64::from(u32::MAX) {
            return Err(format!(
                "{address}: infinite valid_lifetime (4294967295) is not supported"
            ));
        }
        let exp_s = field(cols.expire);
        let expires = parse_u64(exp_s)
            .ok_or_else(|| format!("{address}: invalid expire '{}'", shown(exp_s)))?;

        if let Some(i) = cols.subnet_id {
            let s = field(i);
            if !s.trim_ascii().is_empty() && parse_u64(s).is_none_or(|v| v > u64::from(u32::MAX)) {
                return Err(format!("{address}: invalid subnet_id '{}'", shown(s)));
            }
        }

        let hostname = match cols.hostname.map(field) {
            None | Some(b"") => None,
            Some(h) => {
                let h = kea_unescape(h);
                if h.len() > MAX_HOSTNAME {
                    return Err(format!(
                        "{address}: hostname longer than {MAX_HOSTNAME} bytes"
                    ));
                }
                Some(String::from_utf8_lossy(&h).into_owned())
            }
        };

        Ok(LeaseRecord {
            address,
            state,
            hwaddr,
            client_id,
            expires,
            subnet: None,
            hostname,
        })
    }
}

impl<R: Read> LeaseSource for KeaCsvParser<R> {
    fn next_item(&mut self) -> Result<Option<ImportItem>, ImportReadError> {
        loop {
            let line_no = self.line_no + 1;
            let status = self
                .input
                .read_line(&mut self.line, MAX_LINE)
                .map_err(|source| ImportReadError::Io {
                    line: line_no,
                    source,
                })?;
            match status {
                LineStatus::Eof => return Ok(None),
                LineStatus::TooLong => {
                    self.line_no = line_no;
                    if self.columns.is_none() {
                        return Err(ImportReadError::BadHeader {
                            line: line_no,
                            message: format!("header line longer than {MAX_LINE} bytes"),
                        });
                    }
                    return Ok(Some(ImportItem::Rejected(RowError {
                        line: line_no,
                        message: format!("line longer than {MAX_LINE} bytes"),
                    })));
                }
                LineStatus::Line => {}
            }
            self.line_no = line_no;
            if self.line.trim_ascii().is_empty() {
                continue;
            }
            let Some(cols) = self.columns.clone() else {
                self.columns = Some(KeaColumns::from_header(&self.line, line_no)?);
                self.header.clone_from(&self.line);
                continue;
            };
            if self.line == self.header {
                continue; // a repeated header (concatenated files)
            }
            return Ok(Some(match self.parse_row(&cols) {
                Ok(record) => ImportItem::Lease {
                    line: line_no,
                    record,
                },
                Err(message) => ImportItem::Rejected(RowError {
                    line: line_no,
                    message,
                }),
            }));
        }
    }

    fn bytes_read(&self) -> u64 {
        self.input.consumed
    }
}

// ---------------------------------------------------------------------------------------------
// ISC dhcpd.leases: lexer.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    Word,
    Str,
    Open,
    Close,
    Semi,
    /// A word or string longer than MAX_TOKEN (its text is dropped).
    TooLong,
    /// End of file inside a quoted string.
    Unterminated,
    Eof,
}

/// Bytes that end a word.
const fn word_delimiters() -> [bool; 256] {
    let mut t = [false; 256];
    let delims = b" \t\r\n\x0b\x0c{};\"#";
    let mut i = 0;
    while i < delims.len() {
        t[delims[i] as usize] = true;
        i += 1;
    }
    t
}
static WORD_DELIMITER: [bool; 256] = word_delimiters();

struct Lexer<R> {
    input: ByteReader<R>,
    line: u64,
    tok: Vec<u8>,
    tok_line: u64,
}

impl<R: Read> Lexer<R> {
    fn new(reader: R) -> Self {
        Lexer {
            input: ByteReader::new(reader),
            line: 1,
            tok: Vec::with_capacity(64),
            tok_line: 1,
        }
    }

    fn next(&mut self) -> io::Result<Tok> {
        loop {
            if !self.input.fill()? {
                self.tok_line = self.line;
                return Ok(Tok::Eof);
            }
            // Skip a run of white space within the buffer, counting newlines.
            let avail = self.input.available();
            let mut i = 0;
            let mut newlines = 0;
            let mut next = None;
            while let Some(&b) = avail.get(i) {
                match b {
                    b'\n' => newlines += 1,
                    b' ' | b'\t' | b'\r' | 0x0b | 0x0c => {}
                    _ => {
                        next = Some(b);
                        break;
                    }
                }
                i += 1;
            }
            self.line += newlines;
            self.input.advance(i);
            let Some(b) = next else {
                continue; // buffer exhausted: refill
            };
            self.tok_line = self.line;
            match b {
                b'#' => self.skip_comment()?,
                b'{' => {
                    self.input.advance(1);
                    return Ok(Tok::Open);
                }
                b'}' => {
                    self.input.advance(1);
                    return Ok(Tok::Close);
                }
                b';' => {
                    self.input.advance(1);
                    return Ok(Tok::Semi);
                }
                b'"' => {
                    self.input.advance(1);
                    return self.string();
                }
                _ => return self.word(),
            }
        }
    }

    /// Fast path for statements whose arguments are not needed: consume up to and including the
    /// next ';' if no quote, brace or comment comes first. Returns false (nothing special
    /// consumed past plain bytes) when the normal tokenizer must take over.
    fn skip_plain_statement(&mut self) -> io::Result<bool> {
        while self.input.fill()? {
            let avail = self.input.available();
            let mut newlines = 0;
            let mut stop = None;
            for (i, &b) in avail.iter().enumerate() {
                match b {
                    b'\n' => newlines += 1,
                    b';' | b'"' | b'{' | b'}' | b'#' => {
                        stop = Some((i, b));
                        break;
                    }
                    _ => {}
                }
            }
            self.line += newlines;
            match stop {
                Some((i, b';')) => {
                    self.input.advance(i + 1);
                    return Ok(true);
                }
                Some((i, _)) => {
                    self.input.advance(i);
                    return Ok(false);
                }
                None => {
                    let n = avail.len();
                    self.input.advance(n);
                }
            }
        }
        Ok(false)
    }

    fn skip_comment(&mut self) -> io::Result<()> {
        while self.input.fill()? {
            let avail = self.input.available();
            match avail.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.input.advance(i);
                    return Ok(());
                }
                None => {
                    let n = avail.len();
                    self.input.advance(n);
                }
            }
        }
        Ok(())
    }

    fn word(&mut self) -> io::Result<Tok> {
        self.tok.clear();
        let mut too_long = false;
        while self.input.fill()? {
            let avail = self.input.available();
            let end = avail
                .iter()
                .position(|&b| WORD_DELIMITER[usize::from(b)])
                .unwrap_or(avail.len());
            if !too_long {
                if self.tok.len() + end > MAX_TOKEN {
                    too_long = true;
                    self.tok.clear();
                } else {
                    self.tok.extend_from_slice(&avail[..end]);
                }
            }
            let done = end < avail.len();
            self.input.advance(end);
            if done {
                break;
            }
        }
        Ok(if too_long { Tok::TooLong } else { Tok::Word })
    }

    fn push_str_byte(&mut self, b: u8, too_long: &mut bool) {
        if *too_long {
            return;
        }
        if self.tok.len() >= MAX_TOKEN {
            *too_long = true;
            self.tok.clear();
        } else {
            self.tok.push(b);
        }
    }

    /// A quoted string (opening quote consumed); escapes: `\ooo` octal, `\n`, `\t`, `\r`, `\x`.
    fn string(&mut self) -> io::Result<Tok> {
        self.tok.clear();
        let mut too_long = false;
        loop {
            let Some(b) = self.input.peek()? else {
                return Ok(Tok::Unterminated);
            };
            self.input.advance(1);
            match b {
                b'"' => break,
                b'\\' => {
                    let Some(e) = self.input.peek()? else {
                        return Ok(Tok::Unterminated);
                    };
                    self.input.advance(1);
                    let v = match e {
                        b'0'..=b'7' => {
                            let mut v = u32::from(e - b'0');
                            for _ in 0..2 {
                                match self.input.peek()? {
                                    Some(d @ b'0'..=b'7') => {
                                        self.input.advance(1);
                                        v = v * 8 + u32::from(d - b'0');
                                    }
                                    _ => break,
                                }
                            }
                            (v & 0xff) as u8
                        }
                        b'n' => b'\n',
                        b't' => b'\t',
                        b'r' => b'\r',
                        b'\n' => {
                            self.line += 1;
                            b'\n'
                        }
                        other => other,
                    };
                    self.push_str_byte(v, &mut too_long);
                }
                b'\n' => {
                    self.line += 1;
                    self.push_str_byte(b, &mut too_long);
                }
                _ => self.push_str_byte(b, &mut too_long),
            }
        }
        Ok(if too_long { Tok::TooLong } else { Tok::Str })
    }
}

// ---------------------------------------------------------------------------------------------
// ISC dhcpd.leases: statements and lease blocks.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ArgKind {
    Word,
    Str,
    TooLong,
}

#[derive(Debug, Clone, Copy)]
struct Arg {
    kind: ArgKind,
    start: usize,
    end: usize,
    line: u64,
}

/// Statements whose arguments are never needed (skipped without tokenizing when plain).
const IGNORED_STATEMENTS: [&[u8]; 7] = [
    b"starts", b"cltt", b"tstp", b"tsfp", b"atsfp", b"next", b"rewind",
];

/// How a statement's token run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StmtEnd {
    Semi,
    Open,
    Close,
    Eof,
    Unterminated,
}

/// "lease A.B.C.D" (or "lease" when the address is bad), formatted only for error messages.
#[derive(Clone, Copy)]
struct LeaseLabel(Option<Ipv4Addr>);

impl fmt::Display for LeaseLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(a) => write!(f, "lease {a}"),
            None => f.write_str("lease"),
        }
    }
}

/// What the fields of one lease block said.
#[derive(Default)]
struct LeaseFields {
    ends: Option<u64>,
    binding_state: Option<Vec<u8>>,
    hwaddr: Option<HwAddr>,
    uid: Option<ClientId>,
    hostname: Option<String>,
    first_error: Option<RowError>,
}

/// Streaming parser of an ISC `dhcpd.leases` file.
///
/// Only `lease A.B.C.D { ... }` blocks produce items; every other top-level statement or block
/// (`server-duid`, `authoring-byte-order`, `failover peer ... { }`, `host`, `lease6`, ...) and every
/// unknown statement inside a lease (`starts`, `cltt`, `set x = ...`, `on expiry { ... }`) is
/// skipped. Times are UTC (`ends W YYYY/MM/DD HH:MM:SS;`) or `ends epoch N;`.
pub struct IscLeasesParser<R> {
    lex: Lexer<R>,
    args: Vec<Arg>,
    arena: Vec<u8>,
    done: bool,
}

impl<R: Read> IscLeasesParser<R> {
    /// A parser reading `reader`.
    pub fn new(reader: R) -> Self {
        IscLeasesParser {
            lex: Lexer::new(reader),
            args: Vec::with_capacity(MAX_ARGS),
            arena: Vec::with_capacity(256),
            done: false,
        }
    }

    fn io_err(&self, source: io::Error) -> ImportReadError {
        ImportReadError::Io {
            line: self.lex.line,
            source,
        }
    }

    /// Collect the words and strings of one statement (at most [`MAX_ARGS`]) up to its end.
    fn read_args(&mut self) -> Result<StmtEnd, ImportReadError> {
        self.args.clear();
        self.arena.clear();
        loop {
            let tok = self.lex.next().map_err(|e| self.io_err(e))?;
            let kind = match tok {
                Tok::Word => ArgKind::Word,
                Tok::Str => ArgKind::Str,
                Tok::TooLong => ArgKind::TooLong,
                Tok::Semi => return Ok(StmtEnd::Semi),
                Tok::Open => return Ok(StmtEnd::Open),
                Tok::Close => return Ok(StmtEnd::Close),
                Tok::Eof => return Ok(StmtEnd::Eof),
                Tok::Unterminated => return Ok(StmtEnd::Unterminated),
            };
            if self.args.len() < MAX_ARGS {
                let start = self.arena.len();
                if kind != ArgKind::TooLong {
                    self.arena.extend_from_slice(&self.lex.tok);
                }
                self.args.push(Arg {
                    kind,
                    start,
                    end: self.arena.len(),
                    line: self.lex.tok_line,
                });
            }
            if self.args.len() == 1
                && kind == ArgKind::Word
                && IGNORED_STATEMENTS.contains(&self.lex.tok.as_slice())
                && self
                    .lex
                    .skip_plain_statement()
                    .map_err(|e| self.io_err(e))?
            {
                return Ok(StmtEnd::Semi);
            }
        }
    }

    fn arg(&self, i: usize) -> Option<(ArgKind, &[u8])> {
        let a = self.args.get(i)?;
        Some((a.kind, self.arena.get(a.start..a.end).unwrap_or(&[])))
    }

    fn word(&self, i: usize) -> Option<&[u8]> {
        match self.arg(i)? {
            (ArgKind::Word, w) => Some(w),
            _ => None,
        }
    }

    /// Skip to the `}` closing an already opened block; false if the file ends first.
    fn skip_block(&mut self) -> Result<bool, ImportReadError> {
        let mut depth: u64 = 1;
        loop {
            match self.lex.next().map_err(|e| self.io_err(e))? {
                Tok::Open => depth += 1,
                Tok::Close => {
                    depth -= 1;
                    if depth == 0 {
                        return Ok(true);
                    }
                }
                Tok::Eof | Tok::Unterminated => return Ok(false),
                Tok::Word | Tok::Str | Tok::Semi | Tok::TooLong => {}
            }
        }
    }

    /// Interpret one `;`-terminated statement inside a lease block.
    fn lease_statement(&self, f: &mut LeaseFields) -> Result<(), String> {
        let Some(keyword) = self.word(0) else {
            return Ok(()); // e.g. a stray string: ignored like any unknown statement
        };
        let too_long = self.args.iter().any(|a| a.kind == ArgKind::TooLong);
        match keyword {
            b"ends" => {
                if too_long {
                    return Err("ends: value too long".to_string());
                }
                f.ends = Some(self.ends_time()?);
            }
            b"binding" => match (self.word(1), self.word(2), self.args.len()) {
                (Some(b"state"), Some(state), 3) => f.binding_state = Some(state.to_vec()),
                _ => return Err("invalid 'binding state' statement".to_string()),
            },
            b"hardware" => {
                if too_long {
                    return Err(format!(
                        "hardware address longer than {MAX_HWADDR_OCTETS} octets"
                    ));
                }
                let (Some(_htype), Some(addr), 3) = (self.word(1), self.word(2), self.args.len())
                else {
                    return Err("invalid 'hardware' statement".to_string());
                };
                let octets = parse_hex_octets(addr, "hardware address", MAX_HWADDR_OCTETS)?;
                f.hwaddr = Some(HwAddr::new(&octets).map_err(|e| e.to_string())?);
            }
            b"uid" => {
                let octets = match (self.arg(1), self.args.len()) {
                    (Some((ArgKind::TooLong, _)), _) => {
                        return Err(format!("uid longer than {MAX_CLIENT_ID_OCTETS} octets"))
                    }
                    (Some((ArgKind::Str, s)), 2) => {
                        if s.len() > MAX_CLIENT_ID_OCTETS {
                            return Err(format!("uid longer than {MAX_CLIENT_ID_OCTETS} octets"));
                        }
                        s.to_vec()
                    }
                    (Some((ArgKind::Word, w)), 2) => {
                        parse_hex_octets(w, "uid", MAX_CLIENT_ID_OCTETS)?
                    }
                    _ => return Err("invalid 'uid' statement".to_string()),
                };
                f.uid = Some(ClientId::new(&octets).ok_or("empty uid")?);
            }
            b"client-hostname" => match (self.arg(1), self.args.len()) {
                (Some((ArgKind::Str, s)), 2) if s.len() <= MAX_HOSTNAME => {
                    f.hostname = Some(String::from_utf8_lossy(s).into_owned());
                }
                (Some((ArgKind::Str | ArgKind::TooLong, _)), 2) => {
                    return Err(format!("client-hostname longer than {MAX_HOSTNAME} bytes"))
                }
                _ => return Err("invalid 'client-hostname' statement".to_string()),
            },
            _ => {} // starts, cltt, tstp, next binding state, set, ...: not needed
        }
        Ok(())
    }

    /// `ends W YYYY/MM/DD HH:MM:SS` | `ends epoch N` | `ends never`
    fn ends_time(&self) -> Result<u64, String> {
        match (self.word(1), self.word(2), self.word(3), self.args.len()) {
            (Some(b"never"), None, None, 2) => {
                Err("'ends never' (infinite lease) is not supported".to_string())
            }
            (Some(b"epoch"), Some(n), None, 3) => {
                parse_u64(n).ok_or_else(|| format!("invalid ends time 'epoch {}'", shown(n)))
            }
            (Some(_weekday), Some(date), Some(time), 4) => parse_isc_time(date, time)
                .ok_or_else(|| format!("invalid ends time '{} {}'", shown(date), shown(time))),
            _ => Err("invalid ends time".to_string()),
        }
    }

    /// Parse the body of `lease ADDR {` (the brace already read) up to its `}`.
    fn lease_block(&mut self, start_line: u64) -> Result<ImportItem, ImportReadError> {
        let addr_word = self.word(1);
        let address = match (addr_word.and_then(parse_ipv4), self.args.len()) {
            (Some(a), 2) => Ok(a),
            _ => Err(format!(
                "invalid lease address '{}'",
                addr_word.map(shown).unwrap_or_default()
            )),
        };
        let label = LeaseLabel(address.as_ref().ok().copied());
        let mut f = LeaseFields::default();
        if let Err(message) = &address {
            f.first_error = Some(RowError {
                line: start_line,
                message: message.clone(),
            });
        }
        loop {
            let end = self.read_args()?;
            let stmt_line = self.args.first().map_or(self.lex.tok_line, |a| a.line);
            match end {
                StmtEnd::Eof | StmtEnd::Unterminated => {
                    self.done = true;
                    return Ok(ImportItem::Rejected(RowError {
                        line: start_line,
                        message: format!(
                            "{label}: truncated record (end of file before its closing '}}')"
                        ),
                    }));
                }
                StmtEnd::Close => {
                    if !self.args.is_empty() && f.first_error.is_none() {
                        f.first_error = Some(RowError {
                            line: stmt_line,
                            message: format!("{label}: statement not terminated by ';'"),
                        });
                    }
                    break;
                }
                StmtEnd::Open => {
                    if !self.skip_block()? {
                        self.done = true;
                        return Ok(ImportItem::Rejected(RowError {
                            line: start_line,
                            message: format!(
                                "{label}: truncated record (end of file before its closing '}}')"
                            ),
                        }));
                    }
                }
                StmtEnd::Semi => {
                    if let Err(message) = self.lease_statement(&mut f) {
                        if f.first_error.is_none() {
                            f.first_error = Some(RowError {
                                line: stmt_line,
                                message: format!("{label}: {message}"),
                            });
                        }
                    }
                }
            }
        }

        let state = match f.binding_state.as_deref() {
            Some(b"active") => Some(LeaseState::Leased),
            Some(b"abandoned") => Some(LeaseState::Declined),
            Some(b"free" | b"backup" | b"expired" | b"released" | b"reset") => {
                return Ok(ImportItem::Skipped { line: start_line });
            }
            Some(other) => {
                return Ok(ImportItem::Rejected(f.first_error.unwrap_or(RowError {
                    line: start_line,
                    message: format!("{label}: unsupported binding state '{}'", shown(other)),
                })));
            }
            None => None,
        };
        if let Some(e) = f.first_error {
            return Ok(ImportItem::Rejected(e));
        }
        let reject = |message: String| {
            Ok(ImportItem::Rejected(RowError {
                line: start_line,
                message: format!("{label}: {message}"),
            }))
        };
        let Ok(address) = address else {
            return reject("invalid address".to_string()); // unreachable: first_error is set
        };
        let Some(state) = state else {
            return reject("no 'binding state'".to_string());
        };
        let Some(expires) = f.ends else {
            return reject("no 'ends' time".to_string());
        };
        if f.hwaddr.is_none() && f.uid.is_none() && state != LeaseState::Declined {
            return reject("no hardware address and no uid".to_string());
        }
        Ok(ImportItem::Lease {
            line: start_line,
            record: LeaseRecord {
                address,
                state,
                hwaddr: f.hwaddr,
                client_id: f.uid,
                expires,
                subnet: None,
                hostname: f.hostname,
            },
        })
    }
}

impl<R: Read> LeaseSource for IscLeasesParser<R> {
    fn next_item(&mut self) -> Result<Option<ImportItem>, ImportReadError> {
        loop {
            if self.done {
                return Ok(None);
            }
            let end = self.read_args()?;
            let start_line = self.args.first().map_or(self.lex.tok_line, |a| a.line);
            match end {
                StmtEnd::Semi => {} // server-duid, authoring-byte-order, ...
                StmtEnd::Eof | StmtEnd::Unterminated => {
                    self.done = true;
                    if self.args.is_empty() && end == StmtEnd::Eof {
                        return Ok(None);
                    }
                    return Ok(Some(ImportItem::Rejected(RowError {
                        line: start_line,
                        message: "truncated statement at end of file".to_string(),
                    })));
                }
                StmtEnd::Close => {
                    return Ok(Some(ImportItem::Rejected(RowError {
                        line: self.lex.tok_line,
                        message: "unexpected '}'".to_string(),
                    })));
                }
                StmtEnd::Open => {
                    if self.word(0) == Some(b"lease") {
                        return self.lease_block(start_line).map(Some);
                    }
                    if !self.skip_block()? {
                        self.done = true;
                        let what = self.word(0).map(shown).unwrap_or_default();
                        return Ok(Some(ImportItem::Rejected(RowError {
                            line: start_line,
                            message: format!(
                                "truncated '{what}' block (end of file before its closing '}}')"
                            ),
                        })));
                    }
                }
            }
        }
    }

    fn bytes_read(&self) -> u64 {
        self.lex.input.consumed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Everything a parser yields.
    #[derive(Debug, Default)]
    struct Parsed {
        leases: Vec<(u64, LeaseRecord)>,
        rejected: Vec<RowError>,
        skipped: u64,
    }

    fn parse(format: ImportFormat, input: &[u8]) -> Result<Parsed, ImportReadError> {
        let mut src = lease_source(format, input);
        let mut p = Parsed::default();
        let mut guard = 0usize;
        while let Some(item) = src.next_item()? {
            guard += 1;
            assert!(guard <= input.len() + 10, "parser does not terminate");
            match item {
                ImportItem::Lease { line, record } => p.leases.push((line, record)),
                ImportItem::Rejected(e) => p.rejected.push(e),
                ImportItem::Skipped { .. } => p.skipped += 1,
            }
        }
        assert_eq!(src.bytes_read(), input.len() as u64);
        Ok(p)
    }

    fn kea(input: &str) -> Parsed {
        parse(ImportFormat::KeaCsv, input.as_bytes()).unwrap()
    }

    fn isc(input: &str) -> Parsed {
        parse(ImportFormat::Isc, input.as_bytes()).unwrap()
    }

    const KEA_HEADER: &str = "address,hwaddr,client_id,valid_lifetime,expire,subnet_id,fqdn_fwd,fqdn_rev,hostname,state,user_context\n";

    /// Same shape as /work/shared/anchors/gen_leases.py --format kea.
    fn gen_kea(n: u64, expire: u64) -> String {
        let mut s = String::from(KEA_HEADER);
        for i in 0..n {
            let v = (10u32 << 24) + 1 + i as u32 * 3;
            let m = format!(
                "02:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                (i >> 32) & 255,
                (i >> 24) & 255,
                (i >> 16) & 255,
                (i >> 8) & 255,
                i & 255
            );
            s.push_str(&format!(
                "{},{m},01:{m},86400,{expire},1,0,0,,0,\n",
                Ipv4Addr::from(v)
            ));
        }
        s
    }

    /// Same shape as gen_leases.py --format dhcpd.
    fn gen_isc(n: u64) -> String {
        let mut s =
            String::from("# generated by gen_leases.py\nauthoring-byte-order little-endian;\n\n");
        for i in 0..n {
            let v = (10u32 << 24) + 1 + i as u32 * 3;
            s.push_str(&format!(
                "lease {} {{\n  starts 2 2025/01/07 10:00:00;\n  ends 3 2025/01/08 10:00:00;\n  cltt 2 2025/01/07 10:00:00;\n  binding state active;\n  next binding state free;\n  rewind binding state free;\n  hardware ethernet 02:00:00:00:{:02x}:{:02x};\n}}\n",
                Ipv4Addr::from(v),
                (i >> 8) & 255,
                i & 255
            ));
        }
        s
    }

    #[test]
    fn dates_convert_to_unix_seconds() {
        assert_eq!(parse_isc_time(b"1970/01/01", b"00:00:00"), Some(0));
        assert_eq!(
            parse_isc_time(b"2025/01/08", b"10:00:00"),
            Some(1_736_330_400)
        );
        assert_eq!(
            parse_isc_time(b"2024/02/29", b"23:59:59"),
            Some(1_709_251_199)
        );
        assert_eq!(parse_isc_time(b"2023/02/29", b"00:00:00"), None);
        assert_eq!(parse_isc_time(b"2025/13/01", b"00:00:00"), None);
        assert_eq!(parse_isc_time(b"2025/01/01", b"24:00:00"), None);
        assert_eq!(parse_isc_time(b"1969/12/31", b"23:59:59"), None);
        assert_eq!(parse_isc_time(b"2025/01", b"00:00:00"), None);
    }

    #[test]
    fn hex_octets() {
        assert_eq!(
            parse_hex_octets(b"02:0a:b", "x", 16).unwrap(),
            vec![2, 10, 11]
        );
        assert_eq!(
            parse_hex_octets(b"0xAABB", "x", 16).unwrap(),
            vec![0xaa, 0xbb]
        );
        assert!(parse_hex_octets(b"02::03", "x", 16).is_err());
        assert!(parse_hex_octets(b"123", "x", 16).is_err());
        assert!(parse_hex_octets(b"zz", "x", 16).is_err());
        let long = vec!["ab"; 17].join(":");
        assert_eq!(
            parse_hex_octets(long.as_bytes(), "hwaddr", 16).unwrap_err(),
            "hwaddr longer than 16 octets"
        );
    }

    #[test]
    fn kea_generated_file_parses() {
        let p = kea(&gen_kea(1000, 1_764_000_000));
        assert!(p.rejected.is_empty(), "{:?}", p.rejected);
        assert_eq!(p.leases.len(), 1000);
        let (line, first) = &p.leases[0];
        assert_eq!(*line, 2);
        assert_eq!(first.address, Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(first.state, LeaseState::Leased);
        assert_eq!(
            first.hwaddr.map(|h| h.to_string()).as_deref(),
            Some("02:00:00:00:00:00")
        );
        assert_eq!(
            first.client_id.as_ref().map(|c| c.to_string()).as_deref(),
            Some("01020000000000")
        );
        assert_eq!(first.expires, 1_764_000_000);
        assert_eq!(first.hostname, None);
        assert_eq!(p.leases[999].0, 1001);
        assert_eq!(
            p.leases[999].1.hwaddr.map(|h| h.to_string()).as_deref(),
            Some("02:00:00:00:03:e7")
        );
    }

    #[test]
    fn kea_states_hostnames_columns_by_name_and_crlf() {
        // Columns reordered, pool_id present, CRLF line ends, escaped comma in the host name.
        let input = "hwaddr,address,client_id,valid_lifetime,expire,subnet_id,fqdn_fwd,fqdn_rev,hostname,state,user_context,pool_id\r\n\
            aa:bb:cc:dd:ee:ff,10.0.0.1,,3600,1700000000,1,0,0,host&#x2ca,0,,0\r\n\
            ,10.0.0.2,,3600,1700000000,1,0,0,,1,,0\r\n\
            aa:bb:cc:dd:ee:01,10.0.0.3,,3600,1700000000,1,0,0,,2,,0\r\n\
            aa:bb:cc:dd:ee:02,10.0.0.4,,3600,1700000000,1,0,0,,3,,0\r\n\
            \r\n\
            aa:bb:cc:dd:ee:03,10.0.0.1,,3600,1700000900,1,0,0,,0,,0\r\n";
        let p = kea(input);
        assert!(p.rejected.is_empty(), "{:?}", p.rejected);
        let states: Vec<_> = p.leases.iter().map(|(_, l)| l.state).collect();
        assert_eq!(
            states,
            [
                LeaseState::Leased,
                LeaseState::Declined,
                LeaseState::Expired,
                LeaseState::Released,
                LeaseState::Leased
            ]
        );
        assert_eq!(p.leases[0].1.hostname.as_deref(), Some("host,a"));
        assert_eq!(p.leases[1].1.hwaddr, None);
        // Same address twice: both stream out in file order (the daemon's last write wins).
        assert_eq!(p.leases[4].1.address, Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(p.leases[4].1.expires, 1_700_000_900);
        assert_eq!(p.leases[4].0, 7);
    }

    #[test]
    fn kea_old_schema_without_state_defaults_to_leased() {
        let p = kea(
            "address,hwaddr,client_id,valid_lifetime,expire,subnet_id,fqdn_fwd,fqdn_rev,hostname\n\
                     10.0.0.9,01:02:03:04:05:06,,60,100,1,0,0,\n",
        );
        assert_eq!(p.leases.len(), 1);
        assert_eq!(p.leases[0].1.state, LeaseState::Leased);
    }

    #[test]
    fn kea_every_row_error_has_its_line_number() {
        let input = format!(
            "{KEA_HEADER}\
             10.0.0.1,02:00:00:00:00:01,,86400,1700000000,1,0,0,,0,\n\
             10.0.0.256,02:00:00:00:00:01,,86400,1700000000,1,0,0,,0,\n\
             10.0.0.3,,,86400,1700000000,1,0,0,,0,\n\
             10.0.0.4,02:00:00:00:00:01,,4294967295,1700000000,1,0,0,,0,\n\
             10.0.0.5,02:00:00:00:00:zz,,86400,1700000000,1,0,0,,0,\n\
             10.0.0.6,02:00:00:00:00:01,,86400,soon,1,0,0,,0,\n\
             10.0.0.7,02:00:00:00:00:01,,86400,1700000000,1,0,0,,9,\n\
             10.0.0.8,02:00:00:00:00:01\n\
             10.0.0.9,02:00:00:00:00:01,,86400,1700000000,1,0,0,,0,,,,\n\
             10.0.0.10,02:00:00:00:00:01,0g,86400,1700000000,1,0,0,,0,\n\
             10.0.0.11,02:00:00:00:00:01,,-5,1700000000,1,0,0,,0,\n\
             10.0.0.12,02:00:00:00:00:01,,86400,1700000000,x,0,0,,0,\n\
             10.0.0.13,02:00:00:00:00:01,,86400,1700000000,1,0,0,,0,\n"
        );
        let p = kea(&input);
        assert_eq!(p.leases.len(), 2);
        assert_eq!(p.leases[0].0, 2);
        assert_eq!(p.leases[1].0, 14);
        let got: Vec<String> = p.rejected.iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            [
                "line 3: invalid address '10.0.0.256'",
                "line 4: 10.0.0.3: no hwaddr and no client_id",
                "line 5: 10.0.0.4: infinite valid_lifetime (4294967295) is not supported",
                "line 6: 10.0.0.5: invalid hwaddr '02:00:00:00:00:zz'",
                "line 7: 10.0.0.6: invalid expire 'soon'",
                "line 8: 10.0.0.7: unknown lease state '9'",
                "line 9: row has 2 fields, at least 5 are needed",
                "line 10: row has 14 fields, the header has 11",
                "line 11: 10.0.0.10: invalid client_id '0g'",
                "line 12: 10.0.0.11: invalid valid_lifetime '-5'",
                "line 13: 10.0.0.12: invalid subnet_id 'x'",
            ]
        );
    }

    #[test]
    fn kea_bad_headers_stop_the_import() {
        for (input, needle) in [
            ("10.0.0.1,02:00:00:00:00:01,,86400,1700000000,1,0,0,,0,\n", "missing column"),
            ("address,duid,valid_lifetime,expire,subnet_id,pref_lifetime,lease_type,iaid,prefix_len\n", "lease6"),
            ("address,hwaddr,valid_lifetime\n", "client_id, expire"),
        ] {
            match parse(ImportFormat::KeaCsv, input.as_bytes()) {
                Err(ImportReadError::BadHeader { line: 1, message }) => {
                    assert!(message.contains(needle), "{message}")
                }
                other => panic!("expected a header error, got {other:?}"),
            }
        }
        // An empty file has no leases and no error.
        assert!(kea("").leases.is_empty());
    }

    #[test]
    fn kea_huge_line_is_rejected_alone() {
        let mut input = String::from(KEA_HEADER);
        input.push_str("10.0.0.1,02:00:00:00:00:01,,86400,1700000000,1,0,0,");
        input.push_str(&"h".repeat(MAX_LINE + 10));
        input.push_str(",0,\n10.0.0.2,02:00:00:00:00:01,,86400,1700000000,1,0,0,,0,\n");
        let p = kea(&input);
        assert_eq!(p.rejected.len(), 1);
        assert_eq!(
            p.rejected[0].to_string(),
            format!("line 2: line longer than {MAX_LINE} bytes")
        );
        assert_eq!(p.leases.len(), 1);
        assert_eq!(p.leases[0].0, 3);
    }

    #[test]
    fn kea_truncated_last_row_is_rejected() {
        let p = kea(&format!("{KEA_HEADER}10.0.0.1,02:00:00:00:00:01,,86400,1700000000,1,0,0,,0,\n10.0.0.2,02:00:00:00:00:0"));
        assert_eq!(p.leases.len(), 1);
        assert_eq!(p.rejected.len(), 1);
        assert_eq!(p.rejected[0].line, 3);
        // Truncated without the last field: the row is incomplete but has all needed columns.
        let p = kea(&format!(
            "{KEA_HEADER}10.0.0.2,02:00:00:00:00:01,,86400,17000"
        ));
        assert_eq!(p.leases.len(), 1);
        assert_eq!(p.leases[0].1.expires, 17000);
    }

    #[test]
    fn isc_generated_file_parses() {
        let p = isc(&gen_isc(300));
        assert!(p.rejected.is_empty(), "{:?}", p.rejected);
        assert_eq!(p.leases.len(), 300);
        let (line, l) = &p.leases[0];
        assert_eq!(*line, 4);
        assert_eq!(l.address, Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(l.state, LeaseState::Leased);
        assert_eq!(l.expires, 1_736_330_400);
        assert_eq!(
            l.hwaddr.map(|h| h.to_string()).as_deref(),
            Some("02:00:00:00:00:00")
        );
        assert_eq!(l.client_id, None);
        assert_eq!(p.leases[1].0, 13);
    }

    #[test]
    fn isc_full_featured_file() {
        let input = "# The format of this file is documented in the dhcpd.leases(5) manual page.\r\n\
server-duid \"\\000\\001\\000\\001#\\306\\207\";\r\n\
failover peer \"dhcp\" state {\r\n  my state normal at 1 2025/01/06 10:00:00;\r\n  partner state normal at 1 2025/01/06 10:00:00;\r\n}\r\n\
lease 10.0.0.5 {\r\n\
  starts 2 2025/01/07 10:00:00;\r\n\
  ends epoch 1736330400; # Wed Jan 08 10:00:00 2025\r\n\
  tstp 3 2025/01/08 10:00:00;\r\n\
  binding state active;\r\n\
  hardware ethernet 02:00:00:00:00:05;\r\n\
  uid \"\\001\\002\\000\\000\\000\\000\\005\";\r\n\
  set vendor-class-identifier = \"MSFT 5.0\";\r\n\
  client-hostname \"pc-5\";\r\n\
  on expiry { set x = \"}\"; }\r\n\
}\r\n\
lease 10.0.0.6 { binding state free; ends 3 2025/01/08 10:00:00; hardware ethernet 02:00:00:00:00:06; }\r\n\
lease 10.0.0.7 {\n  ends 3 2025/01/08 10:00:00;\n  binding state abandoned;\n}\n\
lease 10.0.0.8 {\n  ends 3 2025/01/08 10:00:00;\n  binding state active;\n  uid 01:02:00:00:00:00:08;\n}\n\
lease 10.0.0.9 { binding state backup; }\n\
host fixed { hardware ethernet 02:00:00:00:00:99; fixed-address 10.0.0.99; }\n";
        let p = isc(input);
        assert!(p.rejected.is_empty(), "{:?}", p.rejected);
        assert_eq!(p.skipped, 2);
        assert_eq!(p.leases.len(), 3);
        let (line, l) = &p.leases[0];
        assert_eq!(*line, 7);
        assert_eq!(l.expires, 1_736_330_400);
        assert_eq!(
            l.client_id.as_ref().map(|c| c.to_string()).as_deref(),
            Some("01020000000005")
        );
        assert_eq!(l.hostname.as_deref(), Some("pc-5"));
        assert_eq!(p.leases[1].1.state, LeaseState::Declined);
        assert_eq!(p.leases[1].1.hwaddr, None);
        assert_eq!(
            p.leases[2]
                .1
                .client_id
                .as_ref()
                .map(|c| c.to_string())
                .as_deref(),
            Some("01020000000008")
        );
    }

    #[test]
    fn isc_errors_carry_line_numbers() {
        let input = "lease 10.0.0.1 {\n  ends never;\n  binding state active;\n  hardware ethernet 02:00:00:00:00:01;\n}\n\
lease 10.0.0.2 {\n  ends 3 2025/02/30 10:00:00;\n  binding state active;\n  hardware ethernet 02:00:00:00:00:02;\n}\n\
lease 10.0.0.3 {\n  ends 3 2025/01/08 10:00:00;\n  binding state active;\n}\n\
lease 10.0.0.4 {\n  ends 3 2025/01/08 10:00:00;\n  binding state weird;\n  hardware ethernet 02:00:00:00:00:04;\n}\n\
lease 10.0.0.300 {\n  ends 3 2025/01/08 10:00:00;\n  binding state active;\n}\n\
lease 10.0.0.6 {\n  binding state active;\n  hardware ethernet 02:00:00:00:00:06;\n}\n\
lease 10.0.0.7 {\n  ends 3 2025/01/08 10:00:00;\n  binding state active;\n  hardware ethernet 02:00:00:00:00:gg;\n}\n\
lease 10.0.0.8 {\n  ends 3 2025/01/08 10:00:00;\n  binding state active;\n  hardware ethernet 02:00:00:00:00:08\n}\n\
}\n\
lease 10.0.0.9 {\n  ends 3 2025/01/08 10:00:00;\n  binding state active;\n  uid \"\";\n}\n\
lease 10.0.0.10 {\n  ends 3 2025/01/08 10:00:00;\n  binding state active;\n  hardware ethernet 02:00:00:00:00:0a;\n}\n";
        let p = isc(input);
        let got: Vec<String> = p.rejected.iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            [
                "line 2: lease 10.0.0.1: 'ends never' (infinite lease) is not supported",
                "line 7: lease 10.0.0.2: invalid ends time '2025/02/30 10:00:00'",
                "line 11: lease 10.0.0.3: no hardware address and no uid",
                "line 15: lease 10.0.0.4: unsupported binding state 'weird'",
                "line 20: invalid lease address '10.0.0.300'",
                "line 24: lease 10.0.0.6: no 'ends' time",
                "line 31: lease 10.0.0.7: invalid hardware address '02:00:00:00:00:gg'",
                "line 36: lease 10.0.0.8: statement not terminated by ';'",
                "line 38: unexpected '}'",
                "line 42: lease 10.0.0.9: empty uid",
            ]
        );
        assert_eq!(p.leases.len(), 1);
        assert_eq!(p.leases[0].0, 44);
    }

    #[test]
    fn isc_truncated_last_record_is_reported() {
        let mut input = gen_isc(2);
        input.push_str("lease 10.0.0.99 {\n  starts 2 2025/01/07 10:00:00;\n  ends 3 2025/01/08 10:00:00;\n  binding sta");
        let p = isc(&input);
        assert_eq!(p.leases.len(), 2);
        assert_eq!(p.rejected.len(), 1);
        assert_eq!(
            p.rejected[0].to_string(),
            "line 22: lease 10.0.0.99: truncated record (end of file before its closing '}')"
        );
        // Truncated inside a quoted string and inside a nested block.
        let p = isc("lease 10.0.0.1 {\n client-hostname \"abc");
        assert_eq!(p.rejected.len(), 1);
        assert_eq!(p.rejected[0].line, 1);
        let p = isc("lease 10.0.0.1 {\n on expiry { set x = 1;\n");
        assert_eq!(p.rejected.len(), 1);
        let p = isc("failover peer \"x\" state {\n my state normal");
        assert_eq!(p.rejected.len(), 1);
        assert!(p.rejected[0].message.contains("truncated 'failover' block"));
        let p = isc("authoring-byte-order little-endian");
        assert_eq!(p.rejected.len(), 1);
    }

    #[test]
    fn isc_oversized_literals_are_rejected_without_harm() {
        // A hex uid of 1025 octets (CVE-2021-25217 shape), a 2 MiB host name line, a long hardware.
        let uid = vec!["ab"; 1025].join(":");
        let input = format!(
            "lease 10.0.0.1 {{\n  ends 3 2025/01/08 10:00:00;\n  binding state active;\n  uid {uid};\n}}\n\
             lease 10.0.0.2 {{\n  ends 3 2025/01/08 10:00:00;\n  binding state active;\n  hardware ethernet 02:00:00:00:00:02;\n  client-hostname \"{}\";\n}}\n\
             lease 10.0.0.3 {{\n  ends 3 2025/01/08 10:00:00;\n  binding state active;\n  hardware ethernet {};\n}}\n\
             lease 10.0.0.4 {{\n  ends 3 2025/01/08 10:00:00;\n  binding state active;\n  set junk = {};\n  hardware ethernet 02:00:00:00:00:04;\n}}\n\
             lease 10.0.0.5 {{\n  ends 3 2025/01/08 10:00:00;\n  binding state active;\n  hardware ethernet 02:00:00:00:00:05;\n}}\n",
            "x".repeat(2 << 20),
            vec!["01"; 2000].join(":"),
            "y".repeat(3 << 20),
        );
        let p = isc(&input);
        let got: Vec<String> = p.rejected.iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            [
                "line 4: lease 10.0.0.1: uid longer than 255 octets",
                "line 10: lease 10.0.0.2: client-hostname longer than 255 bytes",
                "line 15: lease 10.0.0.3: hardware address longer than 16 octets",
            ]
        );
        // Unknown statements may hold anything; the record itself is fine.
        let addrs: Vec<_> = p.leases.iter().map(|(_, l)| l.address).collect();
        assert_eq!(
            addrs,
            [Ipv4Addr::new(10, 0, 0, 4), Ipv4Addr::new(10, 0, 0, 5)]
        );
        assert_eq!(p.leases[1].0, 23);
    }

    #[test]
    fn isc_octal_escapes_and_hex_uid() {
        let p = isc(
            "lease 10.0.0.1 { ends epoch 5; binding state active; uid \"\\001AB\\\"\\\\\\7\"; }",
        );
        assert_eq!(p.leases.len(), 1, "{:?}", p.rejected);
        assert_eq!(
            p.leases[0]
                .1
                .client_id
                .as_ref()
                .map(|c| c.to_string())
                .as_deref(),
            Some("014142225c07")
        );
        assert_eq!(p.leases[0].1.expires, 5);
    }

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

//! ISC dhcpd.leases: statements and lease blocks (the tokens come from [`super::dhcpd_lexer`]).

use std::fmt;
use std::io::{self, Read};
use std::net::Ipv4Addr;

use prodhcp_proto::{ClientId, HwAddr, LeaseRecord, LeaseState};

use super::dhcpd_lexer::{Lexer, Tok};
use super::fields::{parse_hex_octets, parse_ipv4, parse_u64, shown};
use super::{
    ImportItem, ImportReadError, LeaseSource, RowError, MAX_CLIENT_ID_OCTETS, MAX_HOSTNAME,
    MAX_HWADDR_OCTETS,
};

/// Most words and strings of one statement that are kept (the rest are read and dropped).
const MAX_ARGS: usize = 32;

/// Unix seconds of a dhcpd UTC time `YYYY/MM/DD` `HH:MM:SS` (dhcpd writes UTC), from 1970 on.
///
/// The calendar (month lengths, leap years, the range of each field) is `jiff`'s; the numbers
/// are read here. A second of 60 is taken as the first second of the next minute, as before
/// (jiff has no leap seconds; dhcpd, writing `gmtime`, never writes one).
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
    let leap_second = u64::from(second == 60);
    let datetime = jiff::civil::DateTime::new(
        i16::try_from(year).ok()?,
        i8::try_from(month).ok()?,
        i8::try_from(day).ok()?,
        i8::try_from(hour).ok()?,
        i8::try_from(minute).ok()?,
        i8::try_from(second - leap_second).ok()?,
        0,
    )
    .ok()?;
    // Civil time difference, not `Timestamp` (whose range stops a day short of year 9999's end).
    const UNIX_EPOCH: jiff::civil::DateTime = jiff::civil::datetime(1970, 1, 1, 0, 0, 0, 0);
    let seconds = datetime.duration_since(UNIX_EPOCH).as_secs();
    // Before 1970 is negative: refused.
    Some(u64::try_from(seconds).ok()? + leap_second)
}

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
    use super::super::test_support::*;
    use super::*;

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
        // The calendar's edges: centuries, the last year, a leap second as the next second.
        assert_eq!(
            parse_isc_time(b"2000/02/29", b"12:00:00"),
            Some(951_825_600)
        );
        assert_eq!(parse_isc_time(b"2100/02/29", b"00:00:00"), None);
        assert_eq!(parse_isc_time(b"2025/04/31", b"00:00:00"), None);
        assert_eq!(
            parse_isc_time(b"9999/12/31", b"23:59:59"),
            Some(253_402_300_799)
        );
        assert_eq!(parse_isc_time(b"10000/01/01", b"00:00:00"), None);
        assert_eq!(
            parse_isc_time(b"2016/12/31", b"23:59:60"),
            Some(1_483_228_800)
        );
        assert_eq!(parse_isc_time(b"2016/12/31", b"23:59:61"), None);
        assert_eq!(
            parse_isc_time(b"2026/11/30", b"12:00:00"),
            Some(1_796_040_000)
        );
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
}

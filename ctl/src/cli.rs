//! `prodhcpctl`: command line, control-socket client and output formatting.
//!
//! Exit codes (the CLI contract): 0 success; 1 the command failed (the daemon answered
//! `ok: false`, a bad answer, a local file problem); 2 usage; 3 the daemon cannot be reached
//! (socket missing, permission denied, connection refused, no answer in time, connection lost).
//! With `--json`, stdout carries exactly one JSON document: the result, or `{"error": "..."}`.
//! An import that completes exits 0 even when records were rejected; the rejections are in the
//! summary (`rejected`, `errors`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, BufReader, BufWriter, Write};
use std::net::Ipv4Addr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::import::{lease_source, ErrorLog, ImportFormat, ImportItem, LeaseSource};
use prodhcp_proto::{
    encode_request, parse_export_frame, parse_response, read_line_bounded, Command, Counter,
    CounterGroup, Counters, ExportDone, ExportFrame, HwAddr, ImportResult, LeaseRecord, PoolStats,
    ReadLineError, Request, Response, SkippedRow, StatsData, StatusData, DEFAULT_SOCKET_PATH,
    IMPORT_BATCH_MAX, MAX_RESPONSE_LINE,
};

/// Default connect and per-read timeout (seconds).
pub const DEFAULT_TIMEOUT_SECS: u64 = 30;
/// Minimum interval between two progress lines on a terminal.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(250);

/// Command line of `prodhcpctl`.
#[derive(Debug, Parser)]
#[command(
    name = "prodhcpctl",
    version,
    about = "Query and control a running prodhcpd"
)]
pub struct Cli {
    /// Control socket of prodhcpd.
    #[arg(long, global = true, value_name = "PATH", default_value = DEFAULT_SOCKET_PATH)]
    pub socket: PathBuf,
    /// Print exactly one JSON document on stdout instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Connect and per-answer timeout in seconds (bulk import/export reads wait twice as long).
    #[arg(long, global = true, value_name = "SECS", default_value_t = DEFAULT_TIMEOUT_SECS,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub timeout: u64,
    /// What to do.
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// Supervisor state, configuration generation, workers and the lease table.
    Status,
    /// Packet counters (total and per worker) and pool usage.
    Stats,
    /// Show the lease of one address.
    Lease {
        /// The address.
        address: Ipv4Addr,
    },
    /// Find leases by hardware address, or export/import the lease table.
    Leases(LeasesArgs),
    /// List the change rings' consumers (ring, id, state, cursor, lag), or drop one.
    Consumers {
        /// Drop a consumer instead of listing.
        #[command(subcommand)]
        action: Option<ConsumersAction>,
    },
}

/// `prodhcpctl consumers drop RING:ID`.
#[derive(Debug, Subcommand)]
pub enum ConsumersAction {
    /// Unregister a consumer (the ring's producer stops keeping records for it).
    Drop {
        /// `RING:ID` as listed, e.g. `worker-0:0`.
        #[arg(value_parser = crate::rings::parse_consumer_target)]
        target: (String, u32),
    },
}

/// `prodhcpctl leases (--mac MAC | export | import)`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct LeasesArgs {
    /// Hardware address (e.g. 02:00:00:00:00:01): list every lease it holds.
    #[arg(long, value_name = "MAC", required = true)]
    pub mac: Option<HwAddr>,
    /// Export or import instead.
    #[command(subcommand)]
    pub action: Option<LeasesAction>,
}

/// Bulk lease operations.
#[derive(Debug, Subcommand)]
pub enum LeasesAction {
    /// Write every non-free lease to stdout.
    Export {
        /// Output format.
        #[arg(long, value_enum, default_value_t = ExportFormat::Json)]
        format: ExportFormat,
    },
    /// Load leases from a Kea memfile CSV or an ISC dhcpd.leases file.
    Import {
        /// Input format.
        #[arg(long, value_enum)]
        format: ImportFormatArg,
        /// Overwrite reserved addresses and leases another client still holds. Without it
        /// such rows are skipped, and each is reported with its line.
        #[arg(long)]
        force: bool,
        /// The lease file.
        file: PathBuf,
    },
}

/// `leases export --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// A JSON array of lease objects.
    Json,
    /// CSV with header `address,hwaddr,client_id,state,expires`.
    Csv,
}

/// `leases import --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ImportFormatArg {
    /// Kea memfile lease4 CSV.
    KeaCsv,
    /// ISC dhcpd.leases.
    Isc,
}

impl From<ImportFormatArg> for ImportFormat {
    fn from(f: ImportFormatArg) -> Self {
        match f {
            ImportFormatArg::KeaCsv => ImportFormat::KeaCsv,
            ImportFormatArg::Isc => ImportFormat::Isc,
        }
    }
}

/// Process exit status of `prodhcpctl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// 0
    Success,
    /// 1: the command failed.
    Failed,
    /// 2: usage error.
    Usage,
    /// 3: the daemon cannot be reached.
    Unreachable,
}

impl ExitStatus {
    /// The numeric exit code.
    pub fn code(self) -> u8 {
        match self {
            ExitStatus::Success => 0,
            ExitStatus::Failed => 1,
            ExitStatus::Usage => 2,
            ExitStatus::Unreachable => 3,
        }
    }
}

/// Why connecting to the socket failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectFailure {
    /// ENOENT / ENOTDIR.
    NoSocket,
    /// EACCES / EPERM.
    PermissionDenied,
    /// ECONNREFUSED (socket file without a listener).
    Refused,
    /// The connection was not accepted in time (backlog full).
    Busy,
    /// Anything else.
    Other(String),
}

impl std::fmt::Display for ConnectFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectFailure::NoSocket => f.write_str("no such socket (is prodhcpd running?)"),
            ConnectFailure::PermissionDenied => {
                f.write_str("permission denied (are you root or in the prodhcp group?)")
            }
            ConnectFailure::Refused => {
                f.write_str("connection refused (stale socket; prodhcpd not running)")
            }
            ConnectFailure::Busy => {
                f.write_str("the daemon did not accept the connection in time (busy?)")
            }
            ConnectFailure::Other(e) => f.write_str(e),
        }
    }
}

/// Classify a `connect()` error.
pub fn classify_connect_error(e: &io::Error) -> ConnectFailure {
    match e.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ENOTDIR) => ConnectFailure::NoSocket,
        Some(libc::EACCES) | Some(libc::EPERM) => ConnectFailure::PermissionDenied,
        Some(libc::ECONNREFUSED) => ConnectFailure::Refused,
        Some(libc::EAGAIN) | Some(libc::ETIMEDOUT) | Some(libc::EINPROGRESS) => {
            ConnectFailure::Busy
        }
        _ => match e.kind() {
            io::ErrorKind::NotFound => ConnectFailure::NoSocket,
            io::ErrorKind::PermissionDenied => ConnectFailure::PermissionDenied,
            io::ErrorKind::ConnectionRefused => ConnectFailure::Refused,
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ConnectFailure::Busy,
            _ => ConnectFailure::Other(e.to_string()),
        },
    }
}

/// Errors of a `prodhcpctl` command.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CtlError {
    /// The socket could not be connected.
    #[error("cannot connect to prodhcpd at {path}: {reason}")]
    Connect {
        /// Socket path.
        path: String,
        /// Why.
        reason: ConnectFailure,
    },
    /// No answer within the timeout.
    #[error("prodhcpd at {path} did not answer within {secs} s")]
    Timeout {
        /// Socket path.
        path: String,
        /// The timeout.
        secs: u64,
    },
    /// The connection broke mid-conversation.
    #[error("connection to prodhcpd at {path} lost: {detail}")]
    ConnectionLost {
        /// Socket path.
        path: String,
        /// What happened.
        detail: String,
    },
    /// The daemon's answer did not follow the protocol.
    #[error("unexpected answer from prodhcpd: {0}")]
    Protocol(String),
    /// The daemon answered `ok: false`.
    #[error("{0}")]
    Failed(String),
    /// Bad arguments found after parsing.
    #[error("{0}")]
    Usage(String),
    /// A local problem (input file, stdout).
    #[error("{0}")]
    Local(String),
}

impl CtlError {
    /// The exit status this error maps to.
    pub fn exit_status(&self) -> ExitStatus {
        match self {
            CtlError::Connect { .. }
            | CtlError::Timeout { .. }
            | CtlError::ConnectionLost { .. } => ExitStatus::Unreachable,
            CtlError::Usage(_) => ExitStatus::Usage,
            CtlError::Protocol(_) | CtlError::Failed(_) | CtlError::Local(_) => ExitStatus::Failed,
        }
    }
}

fn stdout_error(e: io::Error) -> CtlError {
    CtlError::Local(format!("cannot write to stdout: {e}"))
}

/// A connection to the control socket.
pub struct ControlClient {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    path: String,
    read_timeout: Duration,
}

impl ControlClient {
    /// Connect to `path`, waiting at most `timeout` for the daemon to accept; reads and writes
    /// time out after `timeout` too (see [`ControlClient::set_timeout`]).
    pub fn connect(path: &Path, timeout: Duration) -> Result<Self, CtlError> {
        let shown = path.display().to_string();
        let connect_err = |e: &io::Error| CtlError::Connect {
            path: shown.clone(),
            reason: classify_connect_error(e),
        };
        let addr = socket2::SockAddr::unix(path)
            .map_err(|e| CtlError::Usage(format!("invalid socket path {shown}: {e}")))?;
        let socket = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)
            .map_err(|e| connect_err(&e))?;
        // For AF_UNIX, a blocking connect() to a full backlog waits up to SO_SNDTIMEO.
        socket
            .set_write_timeout(Some(timeout))
            .map_err(|e| connect_err(&e))?;
        socket.connect(&addr).map_err(|e| connect_err(&e))?;
        let stream = UnixStream::from(socket);
        let writer = stream.try_clone().map_err(|e| connect_err(&e))?;
        let mut client = ControlClient {
            reader: BufReader::with_capacity(256 << 10, stream),
            writer,
            path: shown,
            read_timeout: timeout,
        };
        client.set_timeout(timeout)?;
        Ok(client)
    }

    /// Change the per-read and per-write timeout.
    pub fn set_timeout(&mut self, timeout: Duration) -> Result<(), CtlError> {
        self.read_timeout = timeout;
        let set = |s: &UnixStream| -> io::Result<()> {
            s.set_read_timeout(Some(timeout))?;
            s.set_write_timeout(Some(timeout))
        };
        set(self.reader.get_ref())
            .and_then(|()| set(&self.writer))
            .map_err(|e| self.lost(&e))
    }

    fn lost(&self, e: &io::Error) -> CtlError {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => CtlError::Timeout {
                path: self.path.clone(),
                secs: self.read_timeout.as_secs(),
            },
            _ => CtlError::ConnectionLost {
                path: self.path.clone(),
                detail: e.to_string(),
            },
        }
    }

    /// Send one request.
    pub fn send(&mut self, request: &Request) -> Result<(), CtlError> {
        let line = encode_request(request).map_err(|e| CtlError::Local(e.to_string()))?;
        self.writer
            .write_all(line.as_bytes())
            .map_err(|e| self.lost(&e))
    }

    fn read_line(&mut self) -> Result<String, CtlError> {
        match read_line_bounded(&mut self.reader, MAX_RESPONSE_LINE) {
            Ok(Some(line)) => Ok(line),
            Ok(None) => Err(CtlError::ConnectionLost {
                path: self.path.clone(),
                detail: "prodhcpd closed the connection without answering".to_string(),
            }),
            Err(ReadLineError::Io(e)) => Err(self.lost(&e)),
            Err(e) => Err(CtlError::Protocol(e.to_string())),
        }
    }

    /// Read one response line.
    pub fn recv(&mut self) -> Result<Response, CtlError> {
        let line = self.read_line()?;
        parse_response(&line).map_err(|e| CtlError::Protocol(e.to_string()))
    }

    /// Read one line of an export stream.
    pub fn recv_export_frame(&mut self) -> Result<ExportFrame, CtlError> {
        let line = self.read_line()?;
        parse_export_frame(&line).map_err(|e| CtlError::Protocol(e.to_string()))
    }

    /// Send a request and read its response.
    pub fn call(&mut self, command: Command) -> Result<Response, CtlError> {
        self.send(&Request::new(command))?;
        self.recv()
    }
}

/// Where `run` writes.
pub struct Output<'a> {
    /// Standard output.
    pub out: &'a mut dyn Write,
    /// Standard error.
    pub err: &'a mut dyn Write,
    /// Whether stderr is a terminal (live progress lines).
    pub stderr_is_tty: bool,
}

/// Run a parsed command line; returns the exit status.
pub fn run(cli: &Cli, io: &mut Output<'_>) -> ExitStatus {
    let mut stdout_used = false;
    match run_command(cli, io, &mut stdout_used) {
        Ok(()) => ExitStatus::Success,
        Err(e) => {
            let _ = writeln!(io.err, "prodhcpctl: {e}");
            if cli.json && !stdout_used {
                let doc = serde_json::json!({ "error": e.to_string() });
                let _ = writeln!(io.out, "{doc}");
            }
            let _ = io.out.flush();
            e.exit_status()
        }
    }
}

fn failed(response: Response) -> Result<serde_json::Value, CtlError> {
    match response {
        Response::Ok(v) => Ok(v),
        Response::Err(msg) => Err(CtlError::Failed(msg)),
    }
}

fn decode<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T, CtlError> {
    serde_json::from_value(v).map_err(|e| CtlError::Protocol(format!("unexpected data: {e}")))
}

fn print_json(out: &mut dyn Write, v: &impl serde::Serialize) -> Result<(), CtlError> {
    let s = serde_json::to_string_pretty(v).map_err(|e| CtlError::Local(e.to_string()))?;
    writeln!(out, "{s}").map_err(stdout_error)
}

fn run_command(cli: &Cli, io: &mut Output<'_>, stdout_used: &mut bool) -> Result<(), CtlError> {
    let timeout = Duration::from_secs(cli.timeout);
    let connect = || ControlClient::connect(&cli.socket, timeout);
    match &cli.command {
        CtlCommand::Status => {
            let data = failed(connect()?.call(Command::Status)?)?;
            let status: StatusData = decode(data.clone())?;
            *stdout_used = true;
            if cli.json {
                print_json(io.out, &data)
            } else {
                io.out
                    .write_all(format_status(&status).as_bytes())
                    .map_err(stdout_error)
            }
        }
        CtlCommand::Stats => {
            let data = failed(connect()?.call(Command::Stats)?)?;
            let stats: StatsData = decode(data.clone())?;
            *stdout_used = true;
            if cli.json {
                print_json(io.out, &data)
            } else {
                io.out
                    .write_all(format_stats(&stats).as_bytes())
                    .map_err(stdout_error)
            }
        }
        CtlCommand::Lease { address } => {
            let data = failed(connect()?.call(Command::Lease { address: *address })?)?;
            let lease: LeaseRecord = decode(data.clone())?;
            *stdout_used = true;
            if cli.json {
                print_json(io.out, &data)
            } else {
                io.out
                    .write_all(format_lease(&lease, unix_now()).as_bytes())
                    .map_err(stdout_error)
            }
        }
        CtlCommand::Consumers { action: None } => {
            let data = failed(connect()?.call(Command::Consumers)?)?;
            let list: prodhcp_proto::ConsumersData = decode(data.clone())?;
            *stdout_used = true;
            if cli.json {
                print_json(io.out, &data)
            } else {
                io.out
                    .write_all(crate::rings::format_consumers(&list).as_bytes())
                    .map_err(stdout_error)
            }
        }
        CtlCommand::Consumers {
            action: Some(ConsumersAction::Drop { target }),
        } => {
            let (ring, id) = target.clone();
            let data = failed(connect()?.call(Command::ConsumerDrop { ring, id })?)?;
            *stdout_used = true;
            if cli.json {
                print_json(io.out, &data)
            } else {
                writeln!(io.out, "dropped consumer {}:{}", target.0, target.1).map_err(stdout_error)
            }
        }
        CtlCommand::Leases(args) => match (&args.action, &args.mac) {
            (Some(LeasesAction::Export { format }), _) => {
                let mut client = connect()?;
                client.set_timeout(timeout * 2)?;
                export(&mut client, *format, io, stdout_used)
            }
            (
                Some(LeasesAction::Import {
                    format,
                    force,
                    file,
                }),
                _,
            ) => import(
                cli,
                ImportOptions {
                    format: (*format).into(),
                    force: *force,
                },
                file,
                timeout,
                io,
                stdout_used,
            ),
            (None, Some(mac)) => {
                let data = failed(connect()?.call(Command::LeasesByMac { mac: *mac })?)?;
                let leases: Vec<LeaseRecord> = decode(data.clone())?;
                *stdout_used = true;
                if cli.json {
                    print_json(io.out, &data)
                } else if leases.is_empty() {
                    writeln!(io.out, "no leases held by {mac}").map_err(stdout_error)
                } else {
                    io.out
                        .write_all(format_lease_table(&leases).as_bytes())
                        .map_err(stdout_error)
                }
            }
            (None, None) => Err(CtlError::Usage(
                "leases: give --mac MAC, or the export or import subcommand".to_string(),
            )),
        },
    }
}

/// CSV header of `leases export --format csv`.
pub const CSV_HEADER: &str = "address,hwaddr,client_id,state,expires";

/// One CSV row (no newline) in [`CSV_HEADER`] order; absent values are empty fields.
pub fn csv_row(lease: &LeaseRecord) -> String {
    format!(
        "{},{},{},{},{}",
        lease.address,
        csv_field(lease.hwaddr.map(|h| h.to_string()).as_deref()),
        csv_field(lease.client_id.as_ref().map(|c| c.to_string()).as_deref()),
        lease.state,
        lease.expires
    )
}

/// Quote a CSV field when it contains a separator, quote or newline (RFC 4180).
fn csv_field(v: Option<&str>) -> String {
    match v {
        None => String::new(),
        Some(s) if s.contains([',', '"', '\n', '\r']) => format!("\"{}\"", s.replace('"', "\"\"")),
        Some(s) => s.to_string(),
    }
}

fn export(
    client: &mut ControlClient,
    format: ExportFormat,
    io: &mut Output<'_>,
    stdout_used: &mut bool,
) -> Result<(), CtlError> {
    client.send(&Request::new(Command::Export))?;
    let mut count: u64 = 0;
    let mut out = BufWriter::with_capacity(256 << 10, &mut *io.out);
    let result = loop {
        let frame = match client.recv_export_frame() {
            Ok(f) => f,
            Err(e) => break Err(e),
        };
        match frame {
            ExportFrame::Lease(lease) => {
                *stdout_used = true;
                let written = match format {
                    ExportFormat::Json => {
                        let sep: &[u8] = if count == 0 { b"[\n" } else { b",\n" };
                        out.write_all(sep).and_then(|()| {
                            serde_json::to_writer(&mut out, &lease).map_err(io::Error::from)
                        })
                    }
                    ExportFormat::Csv => {
                        let header = if count == 0 {
                            writeln!(out, "{CSV_HEADER}")
                        } else {
                            Ok(())
                        };
                        header.and_then(|()| writeln!(out, "{}", csv_row(&lease)))
                    }
                };
                if let Err(e) = written {
                    break Err(stdout_error(e));
                }
                count += 1;
            }
            ExportFrame::Done(Response::Err(msg)) => {
                break Err(CtlError::Failed(format!(
                    "export failed after {count} leases: {msg}"
                )))
            }
            ExportFrame::Done(Response::Ok(v)) => {
                let done: ExportDone = match decode(v) {
                    Ok(d) => d,
                    Err(e) => break Err(e),
                };
                if done.count != count {
                    break Err(CtlError::Protocol(format!(
                        "export announced {} leases but sent {count}",
                        done.count
                    )));
                }
                break Ok(());
            }
        }
    };
    if result.is_ok() {
        *stdout_used = true;
        let tail = match (format, count) {
            (ExportFormat::Json, 0) => writeln!(out, "[]"),
            (ExportFormat::Json, _) => writeln!(out, "\n]"),
            (ExportFormat::Csv, 0) => writeln!(out, "{CSV_HEADER}"),
            (ExportFormat::Csv, _) => Ok(()),
        };
        tail.map_err(stdout_error)?;
    }
    let flushed = out.flush().map_err(stdout_error);
    drop(out);
    result?;
    flushed?;
    let _ = writeln!(io.err, "exported {} leases", group_digits(count));
    Ok(())
}

/// Running totals of an import.
#[derive(Default)]
struct ImportTotals {
    imported: u64,
    rejected: u64,
    skipped: u64,
    errors: ErrorLog,
    skipped_rows: Vec<SkippedRow>,
}

/// How `leases import` runs.
#[derive(Debug, Clone, Copy)]
struct ImportOptions {
    format: ImportFormat,
    force: bool,
}

impl ImportTotals {
    /// Adds a batch's result; `lines[i]` is the file line of the batch's record `i`. Each
    /// skipped row is reported on `err` as it comes.
    fn apply(&mut self, r: ImportResult, lines: &[u64], err: &mut dyn Write) {
        self.imported += r.imported;
        self.rejected += r.rejected;
        self.skipped += r.skipped;
        for e in r.errors {
            self.errors.push(e);
        }
        for mut row in r.skipped_rows {
            row.line = lines.get(row.index as usize).copied();
            let _ = writeln!(err, "{}", format_skipped_row(&row));
            self.skipped_rows.push(row);
        }
    }

    fn into_result(self) -> ImportResult {
        ImportResult {
            imported: self.imported,
            rejected: self.rejected,
            skipped: self.skipped,
            errors: self.errors.into_messages(),
            skipped_rows: self.skipped_rows,
        }
    }
}

/// `line 12: 10.0.0.5 skipped: the address is reserved (--force overwrites)`
fn format_skipped_row(row: &SkippedRow) -> String {
    let line = row.line.map_or_else(
        || format!("record {}", row.index + 1),
        |l| format!("line {l}"),
    );
    format!(
        "{line}: {} skipped: {} (--force overwrites)",
        row.address, row.reason
    )
}

/// Parse up to [`IMPORT_BATCH_MAX`] leases into `batch`; local rejections go to `totals`.
/// Returns true at the end of the file.
fn fill_batch(
    src: &mut dyn LeaseSource,
    batch: &mut Vec<LeaseRecord>,
    lines: &mut Vec<u64>,
    totals: &mut ImportTotals,
) -> Result<bool, crate::import::ImportReadError> {
    while batch.len() < IMPORT_BATCH_MAX {
        match src.next_item()? {
            None => return Ok(true),
            Some(ImportItem::Lease { record, line }) => {
                batch.push(record);
                lines.push(line);
            }
            Some(ImportItem::Rejected(e)) => {
                totals.rejected += 1;
                totals.errors.push(e.to_string());
            }
            Some(ImportItem::Skipped { .. }) => totals.skipped += 1,
        }
    }
    Ok(false)
}

/// Live progress on stderr.
struct Progress {
    start: Instant,
    last: Option<Instant>,
    tty: bool,
    file_size: u64,
}

impl Progress {
    fn tick(&mut self, err: &mut dyn Write, imported: u64, bytes: u64) {
        if !self.tty {
            return;
        }
        let now = Instant::now();
        if self
            .last
            .is_some_and(|l| now.duration_since(l) < PROGRESS_INTERVAL)
        {
            return;
        }
        self.last = Some(now);
        let line = format_progress(imported, bytes, self.file_size, now - self.start);
        let _ = write!(err, "\r{line}\x1b[K");
        let _ = err.flush();
    }
}

/// `imported 1,200,000 (12 % of file) 850k/s`
pub fn format_progress(imported: u64, bytes: u64, file_size: u64, elapsed: Duration) -> String {
    let pct = if file_size == 0 {
        100
    } else {
        (u128::from(bytes) * 100 / u128::from(file_size)).min(100)
    };
    format!(
        "imported {} ({pct} % of file) {}",
        group_digits(imported),
        format_rate(imported, elapsed)
    )
}

/// `850k/s`, `1.2M/s`, `950/s`
pub fn format_rate(count: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(1e-3);
    let rate = count as f64 / secs;
    if rate >= 1e6 {
        format!("{:.1}M/s", rate / 1e6)
    } else if rate >= 1e3 {
        format!("{:.0}k/s", rate / 1e3)
    } else {
        format!("{rate:.0}/s")
    }
}

fn import(
    cli: &Cli,
    opts: ImportOptions,
    file: &Path,
    timeout: Duration,
    io: &mut Output<'_>,
    stdout_used: &mut bool,
) -> Result<(), CtlError> {
    let f = std::fs::File::open(file)
        .map_err(|e| CtlError::Local(format!("cannot open {}: {e}", file.display())))?;
    let file_size = f.metadata().map(|m| m.len()).unwrap_or(0);
    let mut src = lease_source(opts.format, f);
    let mut client = ControlClient::connect(&cli.socket, timeout)?;
    client.set_timeout(timeout * 2)?;

    let mut progress = Progress {
        start: Instant::now(),
        last: None,
        tty: io.stderr_is_tty,
        file_size,
    };
    let mut totals = ImportTotals::default();
    let mut batch: Vec<LeaseRecord> = Vec::with_capacity(IMPORT_BATCH_MAX);
    // File lines of the batch being filled and of the batch in flight.
    let mut lines: Vec<u64> = Vec::with_capacity(IMPORT_BATCH_MAX);
    let mut sent_lines: Vec<u64> = Vec::new();
    let mut in_flight = false;
    let mut eof = false;
    // One batch in flight: parse batch k+1 while the daemon applies batch k.
    let outcome: Result<(), CtlError> = loop {
        if !eof {
            match fill_batch(src.as_mut(), &mut batch, &mut lines, &mut totals) {
                Ok(e) => eof = e,
                Err(e) => {
                    if in_flight {
                        if let Ok(Response::Ok(v)) = client.recv() {
                            if let Ok(r) = decode::<ImportResult>(v) {
                                totals.apply(r, &sent_lines, io.err);
                            }
                        }
                    }
                    break Err(CtlError::Local(format!(
                        "{}: {e} (import stopped; {} leases were imported before)",
                        file.display(),
                        group_digits(totals.imported)
                    )));
                }
            }
        }
        if in_flight {
            match client.recv() {
                Ok(Response::Ok(v)) => match decode::<ImportResult>(v) {
                    Ok(r) => totals.apply(r, &sent_lines, io.err),
                    Err(e) => break Err(e),
                },
                Ok(Response::Err(msg)) => {
                    break Err(CtlError::Failed(format!(
                        "import failed: {msg} ({} leases were imported before)",
                        group_digits(totals.imported)
                    )))
                }
                Err(e) => break Err(e),
            }
        }
        progress.tick(io.err, totals.imported, src.bytes_read());
        if batch.is_empty() {
            break Ok(());
        }
        let leases = std::mem::replace(&mut batch, Vec::with_capacity(IMPORT_BATCH_MAX));
        sent_lines = std::mem::replace(&mut lines, Vec::with_capacity(IMPORT_BATCH_MAX));
        if let Err(e) = client.send(&Request::new(Command::Import {
            leases,
            force: opts.force,
        })) {
            break Err(e);
        }
        in_flight = true;
    };
    let elapsed = progress.start.elapsed();
    if io.stderr_is_tty && progress.last.is_some() {
        let _ = write!(io.err, "\r\x1b[K");
    }
    let _ = writeln!(
        io.err,
        "imported {} leases in {:.1} s ({}); {} rejected, {} skipped",
        group_digits(totals.imported),
        elapsed.as_secs_f64(),
        format_rate(totals.imported, elapsed),
        group_digits(totals.rejected),
        group_digits(totals.skipped)
    );
    outcome?;
    let result = totals.into_result();
    *stdout_used = true;
    if cli.json {
        print_json(io.out, &result)
    } else {
        io.out
            .write_all(format_import_summary(&result).as_bytes())
            .map_err(stdout_error)
    }
}

// ---------------------------------------------------------------------------------------------
// Human output.

/// `1234567` → `1,234,567`
pub fn group_digits(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        let remaining = digits.len() - i;
        if i > 0 && remaining.rem_euclid(3) == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Seconds since the epoch, now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `2025-11-24 16:00:00 UTC`
pub fn format_utc(secs: u64) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
    let rem = secs % 86_400;
    // H. Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `3d 04h`, `2h 05m`, `4m 10s`, `12s`
pub fn format_duration(secs: u64) -> String {
    let (d, h, m, s) = (
        secs / 86_400,
        secs % 86_400 / 3600,
        secs % 3600 / 60,
        secs % 60,
    );
    if d > 0 {
        format!("{d}d {h:02}h")
    } else if h > 0 {
        format!("{h}h {m:02}m")
    } else if m > 0 {
        format!("{m}m {s:02}s")
    } else {
        format!("{s}s")
    }
}

/// Left-aligned columns separated by two spaces.
fn table(rows: &[Vec<String>], indent: &str) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::from(indent);
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                let w = widths.get(c).copied().unwrap_or(0);
                let _ = write!(line, "{cell:<w$}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Human form of `status`.
pub fn format_status(s: &StatusData) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "prodhcpd: pid {}, {}, up {}",
        s.pid,
        s.state,
        format_duration(s.uptime_secs)
    );
    let _ = writeln!(
        out,
        "config generation: {} (last reload: {}{})",
        s.config_generation,
        if s.last_reload.ok {
            "ok"
        } else if s.last_reload.pending {
            "pending"
        } else {
            "FAILED"
        },
        if s.last_reload.message.is_empty() {
            String::new()
        } else {
            format!(": {}", s.last_reload.message)
        }
    );
    let _ = writeln!(
        out,
        "lease table: {} ({} slots, {})",
        s.table.path,
        group_digits(s.table.slots),
        if s.table.clean_start {
            "clean start"
        } else {
            "recovered after an unclean stop"
        }
    );
    let _ = writeln!(
        out,
        "client index: {} of {} entries used, {} inserts gave up",
        group_digits(s.table.index.occupied),
        group_digits(s.table.index.capacity),
        group_digits(s.table.index.give_ups)
    );
    let _ = writeln!(out, "workers: {}", s.workers.len());
    let mut rows = vec![vec![
        "ID".to_string(),
        "PID".to_string(),
        "STATE".to_string(),
        "RESTARTS".to_string(),
    ]];
    for w in &s.workers {
        rows.push(vec![
            w.id.to_string(),
            w.pid.map_or_else(|| "-".to_string(), |p| p.to_string()),
            w.state.clone(),
            w.restarts.to_string(),
        ]);
    }
    out.push_str(&table(&rows, "  "));
    out.push_str(&crate::rings::format_scrub(&s.scrub));
    out
}

/// Utilisation of a pool in percent: (size − free) / size.
pub fn pool_utilisation(p: &PoolStats) -> f64 {
    if p.size == 0 {
        0.0
    } else {
        p.size.saturating_sub(p.free) as f64 * 100.0 / p.size as f64
    }
}

/// One titled table of named counters (drop reasons, sweeper events), a column per entry of
/// `columns`; empty when no column has any name.
fn map_section(
    title: &str,
    header: &[String],
    columns: &[&Counters],
    map: impl Fn(&Counters) -> &BTreeMap<String, u64>,
) -> String {
    let mut names: Vec<&String> = columns.iter().flat_map(|c| map(c).keys()).collect();
    names.sort();
    names.dedup();
    if names.is_empty() {
        return String::new();
    }
    let mut rows = vec![header.to_vec()];
    for n in names {
        let mut row = vec![n.clone()];
        row.extend(
            columns
                .iter()
                .map(|c| group_digits(map(c).get(n).copied().unwrap_or(0))),
        );
        rows.push(row);
    }
    format!("{title}:\n{}", table(&rows, "  "))
}

/// Human form of `stats`: counters (total, then each worker), drops, sweeper events, other
/// events, then pools. Every group a [`Counters`] carries is shown, so a counter added to the
/// catalogue ([`Counter::ALL`]) appears here without a change to this function.
pub fn format_stats(s: &StatsData) -> String {
    let mut out = String::from("counters:\n");
    let mut header = vec!["".to_string(), "total".to_string()];
    header.extend(s.workers.iter().map(|w| format!("worker {}", w.id)));
    let columns: Vec<&Counters> = std::iter::once(&s.total)
        .chain(s.workers.iter().map(|w| &w.counters))
        .collect();
    // The packet counts in catalogue order (every one, zeros included), then any name a newer
    // daemon sent that this client's catalogue does not know.
    let mut names: Vec<String> = Counter::ALL
        .iter()
        .filter(|c| c.group() == CounterGroup::Packets)
        .map(|c| c.key().to_string())
        .collect();
    let mut unknown: Vec<&String> = columns
        .iter()
        .flat_map(|c| c.packets.keys())
        .filter(|k| !names.contains(k))
        .collect();
    unknown.sort();
    unknown.dedup();
    names.extend(unknown.into_iter().cloned());
    let mut rows = vec![header.clone()];
    for name in names {
        let mut row = vec![name.clone()];
        row.extend(columns.iter().map(|c| group_digits(c.packet(&name))));
        rows.push(row);
    }
    out.push_str(&table(&rows, "  "));

    out.push_str(&map_section("drops", &header, &columns, |c| &c.drops));
    out.push_str(&map_section("sweeper", &header, &columns, |c| &c.sweeper));
    out.push_str(&map_section("events", &header, &columns, |c| &c.events));

    out.push_str("pools:\n");
    if s.pools.is_empty() {
        out.push_str("  (none)\n");
    } else {
        let mut rows = vec![[
            "FIRST", "LAST", "SIZE", "FREE", "OFFERED", "LEASED", "DECLINED", "RESERVED", "USED",
        ]
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()];
        for p in &s.pools {
            rows.push(vec![
                p.first.to_string(),
                p.last.to_string(),
                group_digits(p.size),
                group_digits(p.free),
                group_digits(p.offered),
                group_digits(p.leased),
                group_digits(p.declined),
                group_digits(p.reserved),
                format!("{:.1} %", pool_utilisation(p)),
            ]);
        }
        out.push_str(&table(&rows, "  "));
    }
    out
}

fn describe_expiry(expires: u64, now: u64) -> String {
    let when = format_utc(expires);
    if expires >= now {
        format!("{expires} ({when}, in {})", format_duration(expires - now))
    } else {
        format!("{expires} ({when}, {} ago)", format_duration(now - expires))
    }
}

/// Human form of one lease (`key: value` lines).
pub fn format_lease(l: &LeaseRecord, now: u64) -> String {
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_string());
    let mut rows = vec![
        vec!["address:".to_string(), l.address.to_string()],
        vec!["state:".to_string(), l.state.to_string()],
        vec![
            "hwaddr:".to_string(),
            dash(&l.hwaddr.map(|h| h.to_string())),
        ],
        vec![
            "client_id:".to_string(),
            dash(&l.client_id.as_ref().map(|c| c.to_string())),
        ],
        vec!["expires:".to_string(), describe_expiry(l.expires, now)],
        vec!["subnet:".to_string(), dash(&l.subnet)],
    ];
    if let Some(h) = &l.hostname {
        rows.push(vec!["hostname:".to_string(), h.clone()]);
    }
    table(&rows, "")
}

/// Human form of a list of leases (a table).
pub fn format_lease_table(leases: &[LeaseRecord]) -> String {
    let mut rows = vec![["ADDRESS", "STATE", "HWADDR", "CLIENT_ID", "EXPIRES"]
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()];
    for l in leases {
        rows.push(vec![
            l.address.to_string(),
            l.state.to_string(),
            l.hwaddr.map_or_else(|| "-".to_string(), |h| h.to_string()),
            l.client_id
                .as_ref()
                .map_or_else(|| "-".to_string(), |c| c.to_string()),
            format_utc(l.expires),
        ]);
    }
    table(&rows, "")
}

/// Human form of an import summary.
pub fn format_import_summary(r: &ImportResult) -> String {
    let mut out = format!(
        "imported: {}\nrejected: {}\nskipped:  {}\n",
        group_digits(r.imported),
        group_digits(r.rejected),
        group_digits(r.skipped)
    );
    if !r.errors.is_empty() {
        out.push_str("errors:\n");
        for e in &r.errors {
            let _ = writeln!(out, "  {e}");
        }
    }
    if !r.skipped_rows.is_empty() {
        out.push_str("skipped rows:\n");
        for row in &r.skipped_rows {
            let _ = writeln!(out, "  {}", format_skipped_row(row));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use prodhcp_proto::{
        encode_export_lease, encode_response, parse_request, ClientId, IndexStatus, LeaseState,
        PoolStats, ReloadStatus, TableStatus, WorkerCounters, WorkerStatus,
    };
    use std::os::unix::net::UnixListener;
    use std::thread::JoinHandle;

    struct Captured {
        status: ExitStatus,
        out: String,
        err: String,
    }

    fn run_args(args: &[&str]) -> Captured {
        let cli = Cli::try_parse_from(args).expect("valid command line");
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let status = run(
            &cli,
            &mut Output {
                out: &mut out,
                err: &mut err,
                stderr_is_tty: false,
            },
        );
        Captured {
            status,
            out: String::from_utf8(out).unwrap(),
            err: String::from_utf8(err).unwrap(),
        }
    }

    /// A fake daemon on a socket in `dir`: accepts one connection and runs `serve` on it.
    fn fake_daemon<F>(dir: &Path, serve: F) -> (String, JoinHandle<()>)
    where
        F: FnOnce(&mut BufReader<UnixStream>, &mut UnixStream) + Send + 'static,
    {
        let path = dir.join("control.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let handle = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut writer = stream.try_clone().unwrap();
            let mut reader = BufReader::new(stream);
            serve(&mut reader, &mut writer);
        });
        (path.to_str().unwrap().to_string(), handle)
    }

    fn read_request(r: &mut BufReader<UnixStream>) -> Request {
        let line = read_line_bounded(r, 16 << 20).unwrap().unwrap();
        parse_request(&line).unwrap()
    }

    fn answer(w: &mut UnixStream, resp: &Response) {
        w.write_all(encode_response(resp).unwrap().as_bytes())
            .unwrap();
    }

    /// Answer one request with `resp`, asserting its command.
    fn canned(dir: &Path, expect: Command, resp: Response) -> (String, JoinHandle<()>) {
        fake_daemon(dir, move |r, w| {
            assert_eq!(read_request(r).command, expect);
            answer(w, &resp);
        })
    }

    fn lease(n: u8) -> LeaseRecord {
        LeaseRecord {
            address: Ipv4Addr::new(10, 0, 0, n),
            state: LeaseState::Leased,
            hwaddr: Some(HwAddr::new(&[2, 0, 0, 0, 0, n]).unwrap()),
            client_id: if n & 1 == 0 {
                None
            } else {
                ClientId::new(&[1, 2, 0, 0, 0, 0, n])
            },
            expires: 1_764_000_000,
            subnet: Some("10.0.0.0/8".into()),
            hostname: None,
        }
    }

    fn status_data() -> StatusData {
        StatusData {
            pid: 123,
            state: "running".into(),
            config_generation: 2,
            uptime_secs: 3725,
            last_reload: ReloadStatus {
                ok: true,
                message: "reloaded etc/prodhcp.ron".into(),
                ..ReloadStatus::default()
            },
            workers: vec![
                WorkerStatus {
                    id: 0,
                    pid: Some(124),
                    state: "running".into(),
                    restarts: 0,
                },
                WorkerStatus {
                    id: 1,
                    pid: None,
                    state: "restarting".into(),
                    restarts: 3,
                },
            ],
            table: TableStatus {
                path: "/var/lib/prodhcp/leases.table".into(),
                slots: 254,
                clean_start: true,
                index: IndexStatus {
                    occupied: 30,
                    capacity: 1024,
                    give_ups: 2,
                },
            },
            scrub: Default::default(),
        }
    }

    fn stats_data() -> StatsData {
        let c = |r| Counters {
            packets: [
                ("received", r),
                ("discover", 10),
                ("request", 10),
                ("ack", 10),
                ("dropped", 1),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
            drops: [("too_short".to_string(), 1)].into_iter().collect(),
            ..Counters::default()
        };
        StatsData {
            total: c(2000),
            workers: vec![
                WorkerCounters {
                    id: 0,
                    counters: c(1000),
                },
                WorkerCounters {
                    id: 1,
                    counters: c(1000),
                },
            ],
            pools: vec![PoolStats {
                first: Ipv4Addr::new(10, 0, 0, 100),
                last: Ipv4Addr::new(10, 0, 0, 199),
                size: 100,
                free: 75,
                offered: 5,
                leased: 18,
                declined: 1,
                reserved: 1,
            }],
        }
    }

    #[test]
    fn missing_socket_exits_3_with_a_clear_message() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope.sock");
        let p = path.to_str().unwrap();
        let c = run_args(&["prodhcpctl", "--socket", p, "status"]);
        assert_eq!(c.status, ExitStatus::Unreachable);
        assert_eq!(c.status.code(), 3);
        assert_eq!(
            c.err.trim_end(),
            format!("prodhcpctl: cannot connect to prodhcpd at {p}: no such socket (is prodhcpd running?)")
        );
        assert!(c.out.is_empty());

        let c = run_args(&["prodhcpctl", "--socket", p, "--json", "stats"]);
        assert_eq!(c.status, ExitStatus::Unreachable);
        let v: serde_json::Value = serde_json::from_str(&c.out).unwrap();
        assert!(v["error"].as_str().unwrap().contains("no such socket"));
    }

    #[test]
    fn stale_socket_exits_3_connection_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stale.sock");
        drop(UnixListener::bind(&path).unwrap()); // the file stays, nobody listens
        let c = run_args(&["prodhcpctl", "--socket", path.to_str().unwrap(), "status"]);
        assert_eq!(c.status, ExitStatus::Unreachable);
        assert!(
            c.err
                .contains("connection refused (stale socket; prodhcpd not running)"),
            "{}",
            c.err
        );
    }

    #[test]
    fn connect_errors_are_classified() {
        let e = |n| classify_connect_error(&io::Error::from_raw_os_error(n));
        assert_eq!(e(libc::ENOENT), ConnectFailure::NoSocket);
        assert_eq!(e(libc::EACCES), ConnectFailure::PermissionDenied);
        assert_eq!(e(libc::ECONNREFUSED), ConnectFailure::Refused);
        assert_eq!(e(libc::EAGAIN), ConnectFailure::Busy);
        assert_eq!(
            ConnectFailure::PermissionDenied.to_string(),
            "permission denied (are you root or in the prodhcp group?)"
        );
        let err = CtlError::Connect {
            path: "/run/x".into(),
            reason: ConnectFailure::PermissionDenied,
        };
        assert_eq!(err.exit_status(), ExitStatus::Unreachable);
        assert_eq!(CtlError::Failed("x".into()).exit_status().code(), 1);
        assert_eq!(CtlError::Usage("x".into()).exit_status().code(), 2);
    }

    #[test]
    fn usage_errors_are_exit_2() {
        for args in [
            &["prodhcpctl"][..],
            &["prodhcpctl", "leases"],
            &["prodhcpctl", "leases", "--mac", "zz:zz"],
            &["prodhcpctl", "lease", "10.0.0.256"],
            &["prodhcpctl", "leases", "import", "--format", "csv", "f"],
            &["prodhcpctl", "leases", "import", "--format", "isc"],
            &["prodhcpctl", "leases", "export", "--format", "xml"],
            &["prodhcpctl", "frobnicate"],
        ] {
            let err = Cli::try_parse_from(args).expect_err(&format!("{args:?} should fail"));
            assert_eq!(err.exit_code(), 2, "{args:?}");
        }
        let cli =
            Cli::try_parse_from(["prodhcpctl", "leases", "--mac", "02-00-00-00-00-0A"]).unwrap();
        match cli.command {
            CtlCommand::Leases(LeasesArgs {
                mac: Some(m),
                action: None,
            }) => {
                assert_eq!(m.to_string(), "02:00:00:00:00:0a")
            }
            other => panic!("{other:?}"),
        }
        let cli = Cli::try_parse_from([
            "prodhcpctl",
            "leases",
            "import",
            "--format",
            "kea-csv",
            "f.csv",
            "--json",
        ])
        .unwrap();
        assert!(cli.json);
    }

    #[test]
    fn mac_parsing() {
        let mac = |s: &str| s.parse::<HwAddr>().map(|m| m.to_string());
        assert_eq!(mac("020000000001").unwrap(), "02:00:00:00:00:01");
        assert_eq!(mac("2:0:0:0:0:1").unwrap(), "02:00:00:00:00:01");
        assert!(mac("").is_err());
        assert!(mac("02:00:").is_err());
        assert!(mac("0200000000011").is_err());
        assert!(mac("é1").is_err());
        let cli =
            Cli::try_parse_from(["prodhcpctl", "leases", "--mac", "02-00-00-00-00-0A"]).unwrap();
        match cli.command {
            CtlCommand::Leases(LeasesArgs { mac: Some(m), .. }) => {
                assert_eq!(m.to_string(), "02:00:00:00:00:0a")
            }
            other => panic!("{other:?}"),
        }
        let e = Cli::try_parse_from(["prodhcpctl", "leases", "--mac", "zz"]).unwrap_err();
        assert!(e
            .to_string()
            .contains("invalid hardware address 'zz' (expected e.g. 02:00:00:00:00:01)"));
    }

    #[test]
    fn status_human_and_json() {
        let dir = tempfile::tempdir().unwrap();
        let (p, h) = canned(
            dir.path(),
            Command::Status,
            Response::ok(&status_data()).unwrap(),
        );
        let c = run_args(&["prodhcpctl", "--socket", &p, "status"]);
        h.join().unwrap();
        assert_eq!(c.status, ExitStatus::Success, "{}", c.err);
        assert!(
            c.out.contains("prodhcpd: pid 123, running, up 1h 02m"),
            "{}",
            c.out
        );
        assert!(c
            .out
            .contains("config generation: 2 (last reload: ok: reloaded etc/prodhcp.ron)"));
        assert!(c
            .out
            .contains("lease table: /var/lib/prodhcp/leases.table (254 slots, clean start)"));
        assert!(
            c.out
                .contains("client index: 30 of 1,024 entries used, 2 inserts gave up"),
            "{}",
            c.out
        );
        let lines: Vec<&str> = c.out.lines().collect();
        assert!(
            lines.contains(&"  ID  PID  STATE       RESTARTS"),
            "{}",
            c.out
        );
        assert!(lines.contains(&"  1   -    restarting  3"), "{}", c.out);

        let dir = tempfile::tempdir().unwrap();
        let (p, h) = canned(
            dir.path(),
            Command::Status,
            Response::ok(&status_data()).unwrap(),
        );
        let c = run_args(&["prodhcpctl", "--socket", &p, "--json", "status"]);
        h.join().unwrap();
        assert_eq!(c.status, ExitStatus::Success);
        let v: serde_json::Value = serde_json::from_str(&c.out).unwrap();
        assert_eq!(v["pid"], 123);
        assert_eq!(v["workers"][0]["pid"], 124);
        assert!(v["workers"][1]["pid"].is_null());
        assert_eq!(v["table"]["clean_start"], true);
    }

    #[test]
    fn stats_human_shows_totals_workers_and_utilisation() {
        let dir = tempfile::tempdir().unwrap();
        let (p, h) = canned(
            dir.path(),
            Command::Stats,
            Response::ok(&stats_data()).unwrap(),
        );
        let c = run_args(&["prodhcpctl", "--socket", &p, "stats"]);
        h.join().unwrap();
        assert_eq!(c.status, ExitStatus::Success, "{}", c.err);
        let lines: Vec<&str> = c.out.lines().collect();
        assert_eq!(lines[0], "counters:");
        assert_eq!(lines[1], "            total  worker 0  worker 1");
        assert_eq!(lines[2], "  received  2,000  1,000     1,000");
        assert!(lines.contains(&"drops:"));
        assert!(
            lines.contains(&"  too_short  1      1         1"),
            "{}",
            c.out
        );
        let pool = lines.iter().find(|l| l.contains("10.0.0.100")).unwrap();
        assert!(pool.ends_with("25.0 %"), "{pool}");
    }

    /// Every counter of the catalogue reaches `prodhcpctl stats`, under its key, with its own
    /// value. The test walks `Counter::ALL`: a row added to the catalogue is checked too, and
    /// fails here if `Counters::from_catalogue` has no place for its group or `format_stats`
    /// does not print that group.
    #[test]
    fn every_catalogue_counter_shows_in_stats_under_its_key_with_its_value() {
        // Distinct values (10_001 + word·7) so a counter shown with another's value is caught.
        let value = |c: Counter| 10_001 + 7 * c.word() as u64;
        let c = Counters::from_catalogue(value);
        let stats = StatsData {
            total: c.clone(),
            workers: vec![WorkerCounters { id: 0, counters: c }],
            pools: vec![],
        };
        // Through the wire, as prodhcpctl receives it.
        let wire = serde_json::to_string(&stats).unwrap();
        let stats: StatsData = serde_json::from_str(&wire).unwrap();
        let out = format_stats(&stats);
        for &counter in Counter::ALL {
            let shown = out.lines().find(|l| {
                l.split_whitespace().next() == Some(counter.key())
                    && l.split_whitespace().nth(1) == Some(&group_digits(value(counter)))
            });
            let line = shown.unwrap_or_else(|| {
                panic!(
                    "{} ({:?}) missing from stats:\n{out}",
                    counter.name(),
                    counter.group()
                )
            });
            let v = group_digits(value(counter));
            assert_eq!(
                line.split_whitespace().collect::<Vec<_>>(),
                [counter.key(), &v, &v],
                "{line}"
            );
        }
    }

    #[test]
    fn lease_found_and_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let addr = Ipv4Addr::new(10, 0, 0, 1);
        let (p, h) = canned(
            dir.path(),
            Command::Lease { address: addr },
            Response::ok(&lease(1)).unwrap(),
        );
        let c = run_args(&["prodhcpctl", "--socket", &p, "lease", "10.0.0.1"]);
        h.join().unwrap();
        assert_eq!(c.status, ExitStatus::Success, "{}", c.err);
        let lines: Vec<&str> = c.out.lines().collect();
        assert_eq!(lines[0], "address:    10.0.0.1");
        assert_eq!(lines[1], "state:      leased");
        assert_eq!(lines[3], "client_id:  01020000000001");
        assert!(
            lines[4].starts_with("expires:    1764000000 (2025-11-24 16:00:00 UTC, "),
            "{}",
            lines[4]
        );

        let dir = tempfile::tempdir().unwrap();
        let (p, h) = canned(
            dir.path(),
            Command::Lease { address: addr },
            Response::error("no lease for 10.0.0.1"),
        );
        let c = run_args(&["prodhcpctl", "--socket", &p, "--json", "lease", "10.0.0.1"]);
        h.join().unwrap();
        assert_eq!(c.status, ExitStatus::Failed);
        let v: serde_json::Value = serde_json::from_str(&c.out).unwrap();
        assert_eq!(v, serde_json::json!({"error": "no lease for 10.0.0.1"}));
        assert!(c.err.contains("no lease for 10.0.0.1"));
    }

    #[test]
    fn leases_by_mac_json_is_an_array() {
        let dir = tempfile::tempdir().unwrap();
        let (p, h) = canned(
            dir.path(),
            Command::LeasesByMac {
                mac: "02:00:00:00:00:01".parse().unwrap(),
            },
            Response::ok(&vec![lease(1), lease(2)]).unwrap(),
        );
        let c = run_args(&[
            "prodhcpctl",
            "--socket",
            &p,
            "--json",
            "leases",
            "--mac",
            "02:00:00:00:00:01",
        ]);
        h.join().unwrap();
        assert_eq!(c.status, ExitStatus::Success, "{}", c.err);
        let v: Vec<LeaseRecord> = serde_json::from_str(&c.out).unwrap();
        assert_eq!(v, vec![lease(1), lease(2)]);
    }

    #[test]
    fn malformed_answer_is_exit_1_and_closed_connection_exit_3() {
        let dir = tempfile::tempdir().unwrap();
        let (p, h) = fake_daemon(dir.path(), |r, w| {
            let _ = read_request(r);
            w.write_all(b"{\"ok\":true,\"data\":{\"pid\":\"x\"}}\n")
                .unwrap();
        });
        let c = run_args(&["prodhcpctl", "--socket", &p, "status"]);
        h.join().unwrap();
        assert_eq!(c.status, ExitStatus::Failed);
        assert!(c.err.contains("unexpected"), "{}", c.err);

        let dir = tempfile::tempdir().unwrap();
        let (p, h) = fake_daemon(dir.path(), |r, _w| {
            let _ = read_request(r);
        });
        let c = run_args(&["prodhcpctl", "--socket", &p, "status"]);
        h.join().unwrap();
        assert_eq!(c.status, ExitStatus::Unreachable);
        assert!(c.err.contains("closed the connection"), "{}", c.err);
    }

    #[test]
    fn silent_daemon_times_out_with_exit_3() {
        let dir = tempfile::tempdir().unwrap();
        let (p, h) = fake_daemon(dir.path(), |r, _w| {
            let _ = read_request(r);
            std::thread::sleep(Duration::from_millis(1500));
        });
        let c = run_args(&["prodhcpctl", "--socket", &p, "--timeout", "1", "status"]);
        h.join().unwrap();
        assert_eq!(c.status, ExitStatus::Unreachable);
        assert!(c.err.contains("did not answer within 1 s"), "{}", c.err);
    }

    fn export_daemon(
        dir: &Path,
        leases: Vec<LeaseRecord>,
        announced: u64,
    ) -> (String, JoinHandle<()>) {
        fake_daemon(dir, move |r, w| {
            assert_eq!(read_request(r).command, Command::Export);
            for l in &leases {
                w.write_all(encode_export_lease(l).unwrap().as_bytes())
                    .unwrap();
            }
            answer(w, &Response::ok(&ExportDone { count: announced }).unwrap());
        })
    }

    #[test]
    fn export_csv_and_json() {
        let dir = tempfile::tempdir().unwrap();
        let (p, h) = export_daemon(dir.path(), vec![lease(1), lease(2)], 2);
        let c = run_args(&[
            "prodhcpctl",
            "--socket",
            &p,
            "leases",
            "export",
            "--format",
            "csv",
        ]);
        h.join().unwrap();
        assert_eq!(c.status, ExitStatus::Success, "{}", c.err);
        assert_eq!(
            c.out,
            "address,hwaddr,client_id,state,expires\n\
             10.0.0.1,02:00:00:00:00:01,01020000000001,leased,1764000000\n\
             10.0.0.2,02:00:00:00:00:02,,leased,1764000000\n"
        );
        assert!(c.err.contains("exported 2 leases"));

        let dir = tempfile::tempdir().unwrap();
        let (p, h) = export_daemon(dir.path(), vec![lease(1), lease(2), lease(3)], 3);
        let c = run_args(&[
            "prodhcpctl",
            "--socket",
            &p,
            "--json",
            "leases",
            "export",
            "--format",
            "json",
        ]);
        h.join().unwrap();
        assert_eq!(c.status, ExitStatus::Success, "{}", c.err);
        let v: Vec<LeaseRecord> = serde_json::from_str(&c.out).unwrap();
        assert_eq!(v, vec![lease(1), lease(2), lease(3)]);

        // Empty table: still a valid document.
        for (format, expected) in [
            ("json", "[]\n"),
            ("csv", "address,hwaddr,client_id,state,expires\n"),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let (p, h) = export_daemon(dir.path(), vec![], 0);
            let c = run_args(&[
                "prodhcpctl",
                "--socket",
                &p,
                "leases",
                "export",
                "--format",
                format,
            ]);
            h.join().unwrap();
            assert_eq!(c.status, ExitStatus::Success);
            assert_eq!(c.out, expected);
        }

        // A count mismatch is a failure.
        let dir = tempfile::tempdir().unwrap();
        let (p, h) = export_daemon(dir.path(), vec![lease(1)], 5);
        let c = run_args(&["prodhcpctl", "--socket", &p, "leases", "export"]);
        h.join().unwrap();
        assert_eq!(c.status, ExitStatus::Failed);
        assert!(c.err.contains("announced 5 leases but sent 1"), "{}", c.err);
    }

    #[test]
    fn csv_fields_are_quoted_when_needed() {
        assert_eq!(csv_field(Some("a,b")), "\"a,b\"");
        assert_eq!(csv_field(Some("a\"b")), "\"a\"\"b\"");
        assert_eq!(csv_field(None), "");
    }

    /// A daemon that accepts import batches, rejecting addresses ending in .13, and records the
    /// batch sizes it saw.
    fn import_daemon(
        dir: &Path,
        batches: std::sync::mpsc::Sender<usize>,
    ) -> (String, JoinHandle<()>) {
        fake_daemon(dir, move |r, w| loop {
            let Some(line) = read_line_bounded(r, 16 << 20).unwrap() else {
                return;
            };
            let Command::Import { leases, .. } = parse_request(&line).unwrap().command else {
                panic!("not an import");
            };
            batches.send(leases.len()).unwrap();
            let bad: Vec<_> = leases
                .iter()
                .filter(|l| l.address.octets()[3] == 13)
                .collect();
            let result = ImportResult {
                imported: (leases.len() - bad.len()) as u64,
                rejected: bad.len() as u64,
                skipped: 0,
                errors: bad
                    .iter()
                    .map(|l| format!("{}: not in any pool", l.address))
                    .collect(),
                skipped_rows: Vec::new(),
            };
            answer(w, &Response::ok(&result).unwrap());
        })
    }

    #[test]
    fn import_sends_batches_and_merges_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("kea-leases4.csv");
        let mut text = String::from("address,hwaddr,client_id,valid_lifetime,expire,subnet_id,fqdn_fwd,fqdn_rev,hostname,state,user_context\n");
        let n: u32 = 25_000;
        for i in 0..n {
            let a = Ipv4Addr::from((10u32 << 24) + 1 + i);
            if i == 7 {
                text.push_str(&format!("{a},,,86400,1764000000,1,0,0,,0,\n"));
            } else {
                text.push_str(&format!(
                    "{a},02:00:00:{:02x}:{:02x}:{:02x},,86400,1764000000,1,0,0,,0,\n",
                    i >> 16 & 255,
                    i >> 8 & 255,
                    i & 255
                ));
            }
        }
        std::fs::write(&file, text).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let (p, h) = import_daemon(dir.path(), tx);
        let c = run_args(&[
            "prodhcpctl",
            "--socket",
            &p,
            "--json",
            "leases",
            "import",
            "--format",
            "kea-csv",
            file.to_str().unwrap(),
        ]);
        h.join().unwrap();
        assert_eq!(c.status, ExitStatus::Success, "{}", c.err);
        let sizes: Vec<usize> = rx.try_iter().collect();
        assert_eq!(sizes, [10_000, 10_000, 4_999]);
        let r: ImportResult = serde_json::from_str(&c.out).unwrap();
        // Addresses ending in .13 among 10.0.0.1 .. 10.0.97.168: one per /24 (98 of them).
        let bad_server = (0..n).filter(|i| (1 + i) % 256 == 13).count() as u64;
        assert_eq!(r.rejected, 1 + bad_server);
        assert_eq!(r.imported, u64::from(n) - 1 - bad_server);
        assert_eq!(r.errors[0], "line 9: 10.0.0.8: no hwaddr and no client_id");
        assert_eq!(r.errors.len(), 99);
        assert!(r.errors[1].ends_with(": not in any pool"));
        assert!(c.err.contains("imported 24,901 leases"), "{}", c.err);
        assert!(c.err.contains("99 rejected"), "{}", c.err);
    }

    #[test]
    fn import_of_a_missing_file_is_exit_1() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("missing.leases");
        let c = run_args(&[
            "prodhcpctl",
            "--socket",
            "/nonexistent/sock",
            "leases",
            "import",
            "--format",
            "isc",
            file.to_str().unwrap(),
        ]);
        assert_eq!(c.status, ExitStatus::Failed);
        assert!(c.err.contains("cannot open"), "{}", c.err);
    }

    #[test]
    fn import_batch_refused_is_exit_1() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("dhcpd.leases");
        std::fs::write(&file, "lease 10.0.0.1 { ends epoch 100; binding state active; hardware ethernet 02:00:00:00:00:01; }\n").unwrap();
        let (p, h) = canned(
            dir.path(),
            Command::Import {
                leases: vec![LeaseRecord {
                    subnet: None,
                    client_id: None,
                    expires: 100,
                    address: Ipv4Addr::new(10, 0, 0, 1),
                    ..lease(1)
                }],
                force: false,
            },
            Response::error("lease table is read-only (standby)"),
        );
        let c = run_args(&[
            "prodhcpctl",
            "--socket",
            &p,
            "leases",
            "import",
            "--format",
            "isc",
            file.to_str().unwrap(),
        ]);
        h.join().unwrap();
        assert_eq!(c.status, ExitStatus::Failed);
        assert!(
            c.err
                .contains("import failed: lease table is read-only (standby)"),
            "{}",
            c.err
        );
    }

    #[test]
    fn formatting_helpers() {
        assert_eq!(group_digits(0), "0");
        assert_eq!(group_digits(999), "999");
        assert_eq!(group_digits(1_200_000), "1,200,000");
        assert_eq!(format_utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_utc(1_709_251_199), "2024-02-29 23:59:59 UTC");
        assert_eq!(format_duration(59), "59s");
        assert_eq!(format_duration(3725), "1h 02m");
        assert_eq!(format_duration(90_000), "1d 01h");
        assert_eq!(format_rate(850_000, Duration::from_secs(1)), "850k/s");
        assert_eq!(format_rate(2_500_000, Duration::from_secs(2)), "1.2M/s");
        assert_eq!(
            format_progress(1_200_000, 12, 100, Duration::from_secs(2)),
            "imported 1,200,000 (12 % of file) 600k/s"
        );
        let summary = format_import_summary(&ImportResult {
            imported: 5,
            rejected: 1,
            skipped: 2,
            errors: vec!["line 7: bad".into()],
            skipped_rows: Vec::new(),
        });
        assert_eq!(
            summary,
            "imported: 5\nrejected: 1\nskipped:  2\nerrors:\n  line 7: bad\n"
        );
    }
}

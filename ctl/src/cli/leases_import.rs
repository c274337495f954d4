//! `prodhcpctl leases import`: parse a lease file client-side and send it in batches.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use prodhcp_proto::{
    Command, ImportResult, LeaseRecord, Request, Response, SkippedRow, IMPORT_BATCH_MAX,
};

use super::client::stdout_error;
use super::format::{format_import_summary, format_skipped_row, group_digits};
use super::{decode, print_json, Cli, ControlClient, CtlError, Output};
use crate::import::{lease_source, ErrorLog, ImportFormat, ImportItem, LeaseSource};

/// Minimum interval between two progress lines on a terminal.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(250);

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
pub(super) struct ImportOptions {
    pub(super) format: ImportFormat,
    pub(super) force: bool,
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

pub(super) fn import(
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

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::thread::JoinHandle;

    use prodhcp_proto::{parse_request, read_line_bounded};

    use super::super::test_support::*;
    use super::super::*;
    use super::*;

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
}

//! `prodhcpctl leases export`: every lease, streamed from the daemon to stdout as JSON or CSV.

use std::io::{self, BufWriter, Write};

use prodhcp_proto::{Command, ExportDone, ExportFrame, LeaseRecord, Request, Response};

use super::client::stdout_error;
use super::format::group_digits;
use super::{decode, ControlClient, CtlError, ExportFormat, Output};

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

pub(super) fn export(
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

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::thread::JoinHandle;

    use prodhcp_proto::encode_export_lease;

    use super::super::test_support::*;
    use super::super::*;
    use super::*;

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
}

//! `prodhcpctl`: command line, control-socket client and output formatting.
//!
//! Exit codes (the CLI contract): 0 success; 1 the command failed (the daemon answered
//! `ok: false`, a bad answer, a local file problem); 2 usage; 3 the daemon cannot be reached
//! (socket missing, permission denied, connection refused, no answer in time, connection lost).
//! With `--json`, stdout carries exactly one JSON document: the result, or `{"error": "..."}`.
//! An import that completes exits 0 even when records were rejected; the rejections are in the
//! summary (`rejected`, `errors`).

//!
//! Modules: `args` (the command line), `client` (the control-socket connection and the
//! exit-status contract), `format` (human output of each command), `leases_export` and
//! `leases_import` (the bulk commands), `ha` and `audit` (their status texts), `history` (who
//! held an address, from the audit files; no daemon); this file runs a parsed command.

mod alarms;
mod args;
mod audit;
mod client;
mod format;
mod ha;
mod history;
mod leases_export;
mod leases_import;
#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_audit;

use std::io::Write;
use std::time::Duration;

use prodhcp_proto::{Command, LeaseRecord, Response, StatsData, StatusData};

pub use alarms::format_alarms;
pub use args::{
    AuditAction, Cli, ConsumersAction, CtlCommand, ExportFormat, HaAction, HistoryArgs,
    ImportFormatArg, LeasesAction, LeasesArgs, DEFAULT_TIMEOUT_SECS,
};
pub use audit::format_audit_status;
pub use client::{classify_connect_error, ConnectFailure, ControlClient, CtlError, ExitStatus};
pub use format::{
    format_duration, format_import_summary, format_lease, format_lease_table, format_stats,
    format_status, format_utc, group_digits, pool_utilisation, unix_now,
};
pub use ha::format_ha_status;
pub use history::{format_history, parse_at, HoldingView};
pub use leases_export::{csv_row, CSV_HEADER};
pub use leases_import::{format_progress, format_rate};

use client::stdout_error;
use leases_export::export;
use leases_import::{import, ImportOptions};

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

pub(super) fn failed(response: Response) -> Result<serde_json::Value, CtlError> {
    match response {
        Response::Ok(v) => Ok(v),
        Response::Err(msg) => Err(CtlError::Failed(msg)),
    }
}

pub(super) fn decode<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T, CtlError> {
    serde_json::from_value(v).map_err(|e| CtlError::Protocol(format!("unexpected data: {e}")))
}

pub(super) fn print_json(out: &mut dyn Write, v: &impl serde::Serialize) -> Result<(), CtlError> {
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
        CtlCommand::Alarms => {
            let data = failed(connect()?.call(Command::Alarms)?)?;
            let d: prodhcp_proto::AlarmsData = decode(data.clone())?;
            *stdout_used = true;
            if cli.json {
                print_json(io.out, &data)
            } else {
                io.out
                    .write_all(format_alarms(&d).as_bytes())
                    .map_err(stdout_error)
            }
        }
        CtlCommand::Switchover { to } => {
            let command = prodhcp_proto::HaCommand::Switchover { to: to.clone() };
            let report = ha::run_switchover(&connect, command, timeout)?;
            *stdout_used = true;
            if cli.json {
                print_json(io.out, &report)
            } else {
                writeln!(io.out, "{}", report.message).map_err(stdout_error)
            }
        }
        CtlCommand::Ha {
            action: HaAction::PartnerDown,
        } => {
            let report = ha::run_partner_down(&connect, timeout)?;
            *stdout_used = true;
            if cli.json {
                print_json(io.out, &report)
            } else {
                writeln!(io.out, "{}", report.message).map_err(stdout_error)
            }
        }
        CtlCommand::Ha {
            action: HaAction::Status,
        } => {
            let data = failed(connect()?.call(Command::HaStatus)?)?;
            let st: prodhcp_proto::HaStatusData = decode(data.clone())?;
            *stdout_used = true;
            if cli.json {
                print_json(io.out, &data)
            } else {
                io.out
                    .write_all(format_ha_status(&st, unix_now()).as_bytes())
                    .map_err(stdout_error)
            }
        }
        CtlCommand::Audit {
            action: AuditAction::Status,
        } => {
            let data = failed(connect()?.call(Command::AuditStatus)?)?;
            let st: prodhcp_proto::AuditStatusData = decode(data.clone())?;
            *stdout_used = true;
            if cli.json {
                print_json(io.out, &data)
            } else {
                let now_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
                io.out
                    .write_all(format_audit_status(&st, now_ms).as_bytes())
                    .map_err(stdout_error)
            }
        }
        CtlCommand::History(args) => {
            history::run_history(args.address, args.at, &args.from, cli.json, io, stdout_used)
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

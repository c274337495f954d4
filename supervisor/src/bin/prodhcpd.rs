//! `prodhcpd`: the prodhcp supervisor (and, as `prodhcpd worker`, one worker process; as
//! `prodhcpd syncd`, the replication daemon).
//!
//! Exit codes: 0 clean stop, 1 runtime failure, 2 bad configuration or usage, 3 lease table
//! unusable (corrupt, truncated, locked by another prodhcpd, unsafe permissions).

use std::process::ExitCode;

use clap::Parser;
use prodhcp_supervisor::cli::{Args, Sub};
use prodhcp_supervisor::daemon::{exit, load_config, Supervisor};

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PRODHCP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

/// A child narrows its capabilities to its role's first thing after exec
/// (`prodhcp_supervisor::privileges`); `Err` is the exit code when it cannot.
fn enter_child(role: prodhcp_supervisor::privileges::Role) -> Result<(), ExitCode> {
    prodhcp_supervisor::privileges::enter_child(role).map_err(|e| {
        eprintln!("prodhcpd: {e}");
        code(e.exit_code())
    })
}

fn code(c: i32) -> ExitCode {
    ExitCode::from(c.clamp(0, 255) as u8)
}

/// Loads the configuration and opens its lease table for an offline command (the daemon must
/// be stopped: the table is locked exclusively). On failure prints why and returns the exit code.
fn open_stopped_table(
    config: &std::path::Path,
) -> Result<(prodhcp_config::Config, shm_layout::Table), i32> {
    let config = load_config(config)
        .map_err(|e| {
            eprintln!("{e}");
            e.exit_code()
        })?
        .0;
    let layout = prodhcp_supervisor::daemon::table_spec(&config);
    let table = shm_layout::Table::open_for(&config.table_file, &layout)
        .and_then(|t| t.lock_exclusive().map(|_| t))
        .map_err(|e| {
            eprintln!("prodhcpd: {e}");
            exit::TABLE
        })?;
    Ok((config, table))
}

fn check_table(config: &std::path::Path) -> i32 {
    let (config, table) = match open_stopped_table(config) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let t0 = std::time::Instant::now();
    let r = table.check();
    println!(
        "{}: {} slots checked in {} ms",
        config.table_file.display(),
        r.slots,
        t0.elapsed().as_millis()
    );
    for s in shm_layout::LeaseState::ALL {
        println!("  {:<10} {}", s.name(), r.by_state[s as usize]);
    }
    println!(
        "  corrupt {} · locked {} · bitmap mismatches {} · duplicate holders {} · unindexed {}",
        r.corrupt.len(),
        r.locked.len(),
        r.bitmap_mismatch.len(),
        r.duplicate_holders.len(),
        r.unindexed.len()
    );
    if r.is_clean() {
        println!("clean");
        exit::OK
    } else {
        println!("NOT clean: see ARCHITECTURE.md (recovery); corrupt slots are taken out of service by the sweeper");
        exit::TABLE
    }
}

fn export_table(config: &std::path::Path) -> i32 {
    use std::io::Write;
    let (config, table) = match open_stopped_table(config) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let lookup = prodhcp_config::SubnetLookup::build(&config);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut unreadable = 0u64;
    let mut first = true;
    let mut write = |out: &mut std::io::BufWriter<_>| -> std::io::Result<()> {
        out.write_all(b"[")?;
        for slot in 0..table.slot_count() {
            let Ok(img) = table.read(slot) else {
                unreadable += 1;
                continue;
            };
            if !prodhcp_supervisor::leases::exported(&img) {
                continue;
            }
            let Some(rec) =
                prodhcp_supervisor::leases::record_of(&table, &config, &lookup, slot, &img)
            else {
                continue;
            };
            out.write_all(if first { b"\n" } else { b",\n" })?;
            first = false;
            serde_json::to_writer(&mut *out, &rec)?;
        }
        out.write_all(b"\n]\n")?;
        out.flush()
    };
    if let Err(e) = write(&mut out) {
        eprintln!("prodhcpd: writing the export: {e}");
        return exit::RUNTIME;
    }
    if unreadable > 0 {
        eprintln!("prodhcpd: {unreadable} slots were locked or torn and are not listed");
    }
    exit::OK
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return code(if e.use_stderr() {
                exit::CONFIG
            } else {
                exit::OK
            });
        }
    };
    use prodhcp_supervisor::privileges::Role;
    if let Some(Sub::Worker(launch)) = args.command {
        if let Err(c) = enter_child(Role::Worker) {
            return c;
        }
        init_logging("info");
        let id = launch.id;
        let r = prodhcp_worker::run::run_worker(launch);
        return match r {
            Ok(()) => code(exit::OK),
            Err(e) => {
                eprintln!("prodhcpd worker {id}: {e}");
                code(exit::RUNTIME)
            }
        };
    }
    if let Some(Sub::Syncd(launch)) = args.command {
        if let Err(c) = enter_child(Role::Syncd) {
            return c;
        }
        init_logging("info");
        return match prodhcp_syncd::run_process(launch) {
            Ok(()) => code(exit::OK),
            Err(e) => {
                eprintln!("prodhcpd syncd: {e}");
                code(e.exit_code())
            }
        };
    }
    if let Some(Sub::Audit(launch)) = args.command {
        if let Err(c) = enter_child(Role::Audit) {
            return c;
        }
        init_logging("info");
        return match prodhcp_audit::process::run_process(launch) {
            Ok(()) => code(exit::OK),
            Err(e) => {
                eprintln!("prodhcpd audit: {e}");
                code(e.exit_code())
            }
        };
    }
    if args.check_config {
        return match load_config(&args.config) {
            Ok((c, _)) => {
                println!(
                    "{}: OK ({} subnets, {} table slots, {} workers)",
                    args.config.display(),
                    c.subnets.len(),
                    c.table_size(),
                    c.effective_workers()
                );
                code(exit::OK)
            }
            Err(e) => {
                eprintln!("{e}");
                code(e.exit_code())
            }
        };
    }
    if args.check_table {
        return code(check_table(&args.config));
    }
    if args.export_table {
        return code(export_table(&args.config));
    }
    let level = load_config(&args.config)
        .map(|(c, _)| c.log_level)
        .unwrap_or_else(|_| "info".into());
    init_logging(&level);
    match Supervisor::start(&args.config) {
        Ok(s) => code(s.run()),
        Err(e) => {
            eprintln!("prodhcpd: {e}");
            code(e.exit_code())
        }
    }
}

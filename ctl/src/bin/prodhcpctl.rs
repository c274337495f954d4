//! `prodhcpctl`: query and control a running prodhcpd over its control socket.
//!
//! Exit codes: 0 success, 1 command failed, 2 usage, 3 daemon unreachable.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use prodhcp_ctl::cli::{run, Cli, Output};

fn main() -> ExitCode {
    // Usage errors exit 2 inside clap (--help/--version exit 0).
    let cli = Cli::parse();
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    let stderr_is_tty = stderr.is_terminal();
    let status = run(
        &cli,
        &mut Output {
            out: &mut stdout.lock(),
            err: &mut stderr.lock(),
            stderr_is_tty,
        },
    );
    ExitCode::from(status.code())
}

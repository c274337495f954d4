//! The command line of `prodhcpd` (clap derive), in the library so that the man page and
//! shell completions can be generated from it (tools/gen-docs) as well as parsed by the binary.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Command line of `prodhcpd`.
#[derive(Parser, Debug)]
#[command(
    name = "prodhcpd",
    version,
    about = "prodhcp DHCPv4 server (supervisor)"
)]
pub struct Args {
    /// Configuration file (RON).
    #[arg(long, short = 'c', default_value = "/etc/prodhcp/prodhcp.ron")]
    pub config: PathBuf,
    /// Validate the configuration and exit (0 = valid, 2 = invalid).
    #[arg(long)]
    pub check_config: bool,
    /// Check every slot of the lease table (checksums, locks, free bitmap, client index,
    /// duplicate holders) while the daemon is stopped, print a report and exit (0 = clean,
    /// 3 = problems found or the table cannot be opened).
    #[arg(long)]
    pub check_table: bool,
    /// Print every lease of the lease table as a JSON array (the format of `prodhcpctl leases
    /// export --format json`) while the daemon is stopped, reading the table file alone (no
    /// recovery, nothing written), and exit (0, or 3 when the table cannot be opened).
    #[arg(long)]
    pub export_table: bool,
    /// An internal process role (hidden; see [`Sub`]).
    #[command(subcommand)]
    pub command: Option<Sub>,
}

/// The internal subcommands: the supervisor starts its own processes with them (hidden from
/// `--help` and the man page).
#[derive(Subcommand, Debug)]
pub enum Sub {
    /// Internal: run one worker process (started by the supervisor with the descriptors of
    /// `prodhcp_proto::launch::INHERITED`).
    #[command(hide = true)]
    Worker(prodhcp_proto::launch::LaunchArgs),
    /// Internal: run the replication daemon (started by the supervisor when the configuration
    /// has a `cluster` section, with the descriptors of `prodhcp_proto::launch::SYNCD_INHERITED`).
    #[command(hide = true)]
    Syncd(prodhcp_proto::launch::SyncdLaunchArgs),
    /// Internal: run the audit process (started by the supervisor when the configuration has
    /// an `audit` section, with the descriptors of `prodhcp_proto::launch::AUDIT_INHERITED`).
    #[command(hide = true)]
    Audit(prodhcp_proto::launch::AuditLaunchArgs),
}

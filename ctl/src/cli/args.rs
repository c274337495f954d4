//! The command line of `prodhcpctl` (clap derive).

use std::net::Ipv4Addr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use prodhcp_proto::{HwAddr, DEFAULT_SOCKET_PATH};

use crate::import::ImportFormat;

/// Default connect and per-read timeout (seconds).
pub const DEFAULT_TIMEOUT_SECS: u64 = 30;

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
    /// Every pool's utilisation alarm: level (none, warning, major, critical), utilisation,
    /// free and total addresses, thresholds, estimated time to exhaustion (while free
    /// addresses decrease) and since when the level is raised.
    Alarms,
    /// Hand the active role to another appliance of the cluster (planned: the active stops
    /// taking requests, drains held replies, hands over once the target has every record; the
    /// target takes the service address and answers). Waits until it is done or failed.
    Switchover {
        /// The node to become active (default: the single in-sync standby). May be run on any
        /// appliance of the cluster.
        #[arg(long, value_name = "NODE")]
        to: Option<String>,
    },
    /// High availability: the cluster's state.
    Ha {
        /// What to show.
        #[command(subcommand)]
        action: HaAction,
    },
    /// The audit trail (needs an `audit` section in the configuration).
    Audit {
        /// What to show.
        #[command(subcommand)]
        action: AuditAction,
    },
    /// Who held an address when, read from the JSON-lines audit files (`audit.file` and its
    /// rotations); needs no running daemon.
    History(HistoryArgs),
}

/// `prodhcpctl audit ...`.
#[derive(Debug, Subcommand)]
pub enum AuditAction {
    /// The audit process (running, pid, restarts), last sequence number, events, ring lag,
    /// spool use, the JSON-lines file, lost records and ranges, whether `audit_strict` blocks
    /// commits now, and per target: reliable or best-effort, connected, acknowledged sequence,
    /// lag in records and seconds, reconnects, resent, dropped, last error. Without an `audit`
    /// section: "no audit section in the configuration".
    Status,
}

/// `prodhcpctl history IP [--at TIME] --from FILE...`.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// The address.
    #[arg(value_name = "IP")]
    pub address: Ipv4Addr,
    /// Only the holding at this time: RFC 3339 (`2026-12-03T14:02:00Z`, `...+01:00`), or
    /// `YYYY-MM-DD HH:MM[:SS]` without an offset, which is taken as UTC (not local time).
    #[arg(long, value_name = "TIME", value_parser = super::history::parse_at)]
    pub at: Option<jiff::Timestamp>,
    /// A JSON-lines audit file (required; prodhcpctl reads no configuration). Repeat it, or
    /// give several after one `--from` (a shell glob: `--from /var/log/prodhcp/audit.jsonl*`),
    /// in any order. Compressed rotations must be uncompressed first.
    #[arg(long = "from", value_name = "FILE", num_args = 1.., action = clap::ArgAction::Append)]
    pub from: Vec<PathBuf>,
}

/// `prodhcpctl ha ...`.
#[derive(Debug, Subcommand)]
pub enum HaAction {
    /// Cluster, this node, its role, the syncd process and every peer's link (state,
    /// last cause and since when, counters). Without a `cluster` section: "standalone".
    Status,
    /// Confirm that the unreachable peer is down: this node (serving its share, or waiting)
    /// serves the whole pool. Use only when the peer is known to be off: if it is in fact
    /// serving, both may give one address to two clients.
    PartnerDown,
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

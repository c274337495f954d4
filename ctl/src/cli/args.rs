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

//! The `dhcpperf` binary: see the library's documentation and `dhcpperf --help`.

#![forbid(unsafe_code)]

use clap::Parser;

fn main() {
    let cli = dhcpperf::cli::Cli::parse();
    std::process::exit(dhcpperf::cli::run(cli));
}

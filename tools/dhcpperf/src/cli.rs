//! Command line: scenarios, responder and verify, and their exit codes.
//!
//! Exit codes: 0 done (a load run exits 0 even with losses: they are results), 1 verification
//! found violations, 2 bad usage or setup (bind failed, unreadable file), 3 the run was cut
//! short (no answers within `--give-up`, or the hard deadline).

use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Args, Parser, Subcommand};

use crate::engine::{
    Backoff, Cycle, EngineOptions, Generator, PhaseReport, Plan, StopReason, Target,
};
use crate::record::{read_records, Recorder};
use crate::report::{print_run, print_verify, RunReport, SweepStep, SweepSummary};
use crate::responder::{self, ResponderConfig};
use crate::spread::LinkSelection;
use crate::verify::{read_export, verify};

/// Exit code: success.
pub const EXIT_OK: i32 = 0;
/// Exit code: verification found violations.
pub const EXIT_VIOLATIONS: i32 = 1;
/// Exit code: bad usage or setup.
pub const EXIT_SETUP: i32 = 2;
/// Exit code: run cut short (no answers, hard deadline).
pub const EXIT_CUT_SHORT: i32 = 3;

/// Longest duration accepted (about 115 days): keeps `Instant + duration` far from overflow.
const MAX_DURATION_S: f64 = 1e7;

/// Parses a duration: a number with units as [`humantime`] reads them (`250ms`, `1.5s`, `2m`,
/// `100us`, `1h 30m`), or a bare number of seconds (`1.5`), which humantime does not take.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let d = match s.parse::<f64>() {
        Ok(secs) if secs.is_finite() && (0.0..=MAX_DURATION_S).contains(&secs) => {
            Duration::from_secs_f64(secs)
        }
        Ok(_) => return Err(format!("duration out of range: {s:?}")),
        Err(_) => humantime::parse_duration(s)
            .map_err(|e| format!("not a duration: {s:?}: {e} (examples: 1s, 250ms, 1.5, 2m)"))?,
    };
    if d.as_secs_f64() > MAX_DURATION_S {
        return Err(format!("duration out of range: {s:?}"));
    }
    Ok(d)
}

/// Parses `IP` or `IP:PORT` (default port 67).
pub fn parse_server(s: &str) -> Result<SocketAddrV4, String> {
    if let Ok(a) = s.parse::<SocketAddrV4>() {
        return Ok(a);
    }
    s.parse::<Ipv4Addr>()
        .map(|ip| SocketAddrV4::new(ip, 67))
        .map_err(|_| format!("not an IPv4 address or IPv4:port: {s:?}"))
}

/// dhcpperf: DHCPv4 load generator (relay mode) and lease verifier.
#[derive(Debug, Parser)]
#[command(name = "dhcpperf", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Full DORA for new clients at a fixed rate.
    Dora(LoadArgs),
    /// DORA, then a renewing REQUEST (ciaddr set) for every bound client.
    Renew(LoadArgs),
    /// DORA, then a RELEASE for every bound client.
    Release(LoadArgs),
    /// New clients, renewals and releases at given rates.
    Mix(MixArgs),
    /// N clients at once, retransmitting with back-off until all are bound.
    Avalanche(AvalancheArgs),
    /// Fixed-rate steps until the loss passes the threshold.
    Sweep(SweepArgs),
    /// The no-logic responder (canned OFFER/ACK): the ceiling of the harness.
    Responder(ResponderArgs),
    /// Check a lease export against a `--record` file.
    Verify(VerifyArgs),
}

/// Options of every load scenario.
#[derive(Debug, Args)]
pub struct CommonArgs {
    /// The server: IP or IP:PORT (port 67 by default).
    #[arg(long, value_parser = parse_server)]
    pub server: SocketAddrV4,
    /// Relay address to bind (port 67) and put in giaddr; must be configured here.
    #[arg(long, required_unless_present = "direct", conflicts_with = "direct")]
    pub relay_ip: Option<Ipv4Addr>,
    /// Direct clients instead of a relay, on this interface: bind 0.0.0.0:68 with
    /// SO_BINDTODEVICE, broadcast DISCOVER and REQUEST (broadcast flag set) to
    /// 255.255.255.255, match replies by xid and chaddr; RELEASEs go to --server. Broadcasts on
    /// a real link: use only on a lab link (a network namespace). Not with renew (the server
    /// answers a renewal at its ciaddr, which is not configured here).
    #[arg(long, value_name = "IFACE")]
    pub direct: Option<String>,
    /// Port to bind on the relay address.
    #[arg(long, default_value_t = 67)]
    pub relay_port: u16,
    /// A request unanswered within this time is lost.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Stop when no answer arrived for this long while requests are outstanding.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub give_up: Duration,
    /// Overall limit on the run, whatever else is set.
    #[arg(long, default_value = "900s", value_parser = parse_duration)]
    pub hard_deadline: Duration,
    /// Seed of the client MACs (02:SEED:i:i:i:i).
    #[arg(long, default_value_t = 1)]
    pub seed: u8,
    /// Send a client-id option (type 1 + MAC).
    #[arg(long)]
    pub client_id: bool,
    /// Datagrams per sendmmsg/recvmmsg.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub batch: u16,
    /// Write every ACK (and RELEASE) as JSON lines to this file.
    #[arg(long)]
    pub record: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Print a line per second (sent, answered, failed) to stderr while running.
    #[arg(long)]
    pub timeline: bool,
    /// Upper bound on simulated clients (about 20 bytes each).
    #[arg(long, default_value_t = 5_000_000)]
    pub max_clients: u64,
    /// Spread clients over many subnets: every request of client i carries option 82
    /// sub-option 5 (link selection, RFC 3527) = BASE + (i % COUNT) × STEP; giaddr stays the
    /// relay address, so replies still come back here.
    #[arg(long, value_name = "IP")]
    pub link_selection_base: Option<Ipv4Addr>,
    /// Addresses between consecutive link-selection addresses (64: one per /26).
    #[arg(long, default_value_t = 64, requires = "link_selection_base")]
    pub link_selection_step: u32,
    /// Number of link-selection addresses (subnets) the clients are spread over.
    #[arg(long, default_value_t = 1, requires = "link_selection_base")]
    pub link_selection_count: u32,
}

/// Options of dora, renew and release.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Common options.
    #[command(flatten)]
    pub common: CommonArgs,
    /// New clients (or renewals/releases) per second; 0 = unlimited (bounded by --window).
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Number of clients (default: rate × duration).
    #[arg(long)]
    pub count: Option<u64>,
    /// Sending time of each phase.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Most exchanges in flight with --rate 0.
    #[arg(long, default_value_t = 1000)]
    pub window: u64,
    /// Returning clients (dora, sweep, mix): client i uses MAC i % N, and each client whose
    /// MAC is used again releases its address right after its ACK (see the crate docs).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub clients: Option<u32>,
    /// New clients that release: every client (new MAC) sends a RELEASE right after its ACK,
    /// so a small pool never runs dry and every DORA allocates for a client the server has
    /// not seen. Not with --clients.
    #[arg(long, conflicts_with = "clients")]
    pub release_after_ack: bool,
}

/// Options of mix.
#[derive(Debug, Args)]
pub struct MixArgs {
    /// Common options.
    #[command(flatten)]
    pub common: CommonArgs,
    /// New clients (DORA) per second (0 = none).
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Renewals per second, cycling over bound clients (0 = none).
    #[arg(long, default_value_t = 0.0)]
    pub renew_rate: f64,
    /// Releases per second, oldest bound clients first (0 = none).
    #[arg(long, default_value_t = 0.0)]
    pub release_rate: f64,
    /// Clients bound (DORA at --prebind-rate) before the mix starts.
    #[arg(long, default_value_t = 0)]
    pub prebind: u64,
    /// Rate of the pre-binding phase.
    #[arg(long, default_value_t = 2000.0)]
    pub prebind_rate: f64,
    /// Sending time of the mix.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Returning clients (the mix's new clients; pre-bound ones keep their own
    /// MACs): new client k uses the k % N-th of N MACs, and each client whose
    /// MAC is used again releases its address right after its ACK (see the crate docs).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub clients: Option<u32>,
    /// New clients that release: every client (new MAC) sends a RELEASE right after its ACK,
    /// so a small pool never runs dry and every DORA allocates for a client the server has
    /// not seen. Not with --clients.
    #[arg(long, conflicts_with = "clients")]
    pub release_after_ack: bool,
}

/// Options of avalanche.
#[derive(Debug, Args)]
pub struct AvalancheArgs {
    /// Common options.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Clients.
    #[arg(long, default_value_t = 1000)]
    pub count: u64,
    /// First DISCOVERs per second; 0 = all at once.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// First retransmission delay (doubles each try).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub backoff_initial: Duration,
    /// Largest retransmission delay.
    #[arg(long, default_value = "64s", value_parser = parse_duration)]
    pub backoff_max: Duration,
    /// Give up on clients not bound after this long.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub deadline: Duration,
    /// Randomise every retransmission delay by a uniform offset within ± this (RFC 2131 4.1:
    /// ±1 s); 0 disables. Reproducible: drawn from --seed. A delay never drops below 1 ms.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub jitter: Duration,
}

/// Options of sweep.
#[derive(Debug, Args)]
pub struct SweepArgs {
    /// Common options.
    #[command(flatten)]
    pub common: CommonArgs,
    /// First rate.
    #[arg(long, default_value_t = 1000.0)]
    pub start_rate: f64,
    /// Added to the rate each step.
    #[arg(long, default_value_t = 1000.0)]
    pub step_rate: f64,
    /// Multiply the rate by this each step instead (e.g. 1.25).
    #[arg(long)]
    pub step_factor: Option<f64>,
    /// Highest rate tried.
    #[arg(long, default_value_t = 1_000_000.0)]
    pub max_rate: f64,
    /// Sending time of each step.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub step_duration: Duration,
    /// Stop after the first step with more than this percentage of requests missed.
    #[arg(long, default_value_t = 2.5)]
    pub loss_threshold: f64,
    /// Most steps.
    #[arg(long, default_value_t = 40)]
    pub max_steps: u32,
    /// Returning clients (dora, sweep, mix): client i uses MAC i % N, and every client (all steps
    /// reuse the same N MACs) releases its address right after its ACK (see the crate docs).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub clients: Option<u32>,
    /// New clients that release: every client (new MAC) sends a RELEASE right after its ACK,
    /// so a small pool never runs dry and every DORA allocates for a client the server has
    /// not seen. Not with --clients.
    #[arg(long, conflicts_with = "clients")]
    pub release_after_ack: bool,
}

/// Options of the responder.
#[derive(Debug, Args)]
pub struct ResponderArgs {
    /// Address to listen on.
    #[arg(long)]
    pub listen: Ipv4Addr,
    /// Port to listen on.
    #[arg(long, default_value_t = 67)]
    pub port: u16,
    /// Server identifier in replies (default: the listen address).
    #[arg(long)]
    pub server_id: Option<Ipv4Addr>,
    /// Lease time in replies, seconds.
    #[arg(long, default_value_t = 3600)]
    pub lease_time: u32,
    /// Threads, all on one socket (so one relay's flow is spread over all of them).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Datagrams per recvmmsg/sendmmsg.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub batch: u16,
    /// Stop after this long.
    #[arg(long, default_value = "600s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Print the final counts as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Options of verify.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The `--record` file of one or more runs.
    #[arg(long)]
    pub record: PathBuf,
    /// Lease export: JSON array from `prodhcpctl --json leases export --format json`.
    #[arg(long)]
    pub export: PathBuf,
    /// "Now" as unix seconds (default: the current time).
    #[arg(long)]
    pub now: Option<u64>,
    /// Leases ending within this many seconds of now are not checked.
    #[arg(long, default_value_t = 2)]
    pub slack: u64,
    /// Violations to print.
    #[arg(long, default_value_t = 20)]
    pub show: usize,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs the command line; returns the exit code.
pub fn run(cli: Cli) -> i32 {
    match cli.command {
        Command::Dora(a) => load(LoadKind::Dora(a)),
        Command::Renew(a) => load(LoadKind::Renew(a)),
        Command::Release(a) => load(LoadKind::Release(a)),
        Command::Mix(a) => load(LoadKind::Mix(a)),
        Command::Avalanche(a) => load(LoadKind::Avalanche(a)),
        Command::Sweep(a) => load(LoadKind::Sweep(a)),
        Command::Responder(a) => run_responder(&a),
        Command::Verify(a) => run_verify(&a),
    }
}

enum LoadKind {
    Dora(LoadArgs),
    Renew(LoadArgs),
    Release(LoadArgs),
    Mix(MixArgs),
    Avalanche(AvalancheArgs),
    Sweep(SweepArgs),
}

impl LoadKind {
    fn common(&self) -> &CommonArgs {
        match self {
            Self::Dora(a) | Self::Renew(a) | Self::Release(a) => &a.common,
            Self::Mix(a) => &a.common,
            Self::Avalanche(a) => &a.common,
            Self::Sweep(a) => &a.common,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Self::Dora(_) => "dora",
            Self::Renew(_) => "renew",
            Self::Release(_) => "release",
            Self::Mix(_) => "mix",
            Self::Avalanche(_) => "avalanche",
            Self::Sweep(_) => "sweep",
        }
    }
}

fn clients_for(rate: f64, duration: Duration, count: Option<u64>, max: u64) -> u64 {
    match count {
        Some(c) => c,
        None if rate > 0.0 => (rate * duration.as_secs_f64()).ceil() as u64,
        None => ((duration.as_secs_f64() * 200_000.0) as u64).min(max),
    }
}

/// The returning-client plan of `count` clients from index `first`: `--clients N` cycles
/// over N identities (each reused one releases), `--release-after-ack` releases every new
/// client.
fn cycle_of(
    clients: Option<u32>,
    release_after_ack: bool,
    first: u32,
    count: u32,
) -> Option<Cycle> {
    match clients {
        Some(clients) => Some(Cycle {
            first,
            clients,
            reuse_end: first.saturating_add(count),
            release_all: false,
        }),
        None => release_after_ack.then(|| Cycle::new_clients_release(first)),
    }
}

fn load(kind: LoadKind) -> i32 {
    if let LoadKind::Renew(a) | LoadKind::Release(a) = &kind {
        if a.clients.is_some() || a.release_after_ack {
            eprintln!(
                "dhcpperf: --clients and --release-after-ack apply to dora, sweep and mix only"
            );
            return EXIT_SETUP;
        }
    }
    let c = kind.common();
    let recorder = match &c.record {
        Some(p) => match Recorder::create(p) {
            Ok(r) => Some(Arc::new(r)),
            Err(e) => {
                eprintln!("dhcpperf: {e}");
                return EXIT_SETUP;
            }
        },
        None => None,
    };
    let link_selection = match c.link_selection_base {
        Some(base) => match LinkSelection::new(base, c.link_selection_step, c.link_selection_count)
        {
            Ok(l) => Some(l),
            Err(e) => {
                eprintln!("dhcpperf: {e}");
                return EXIT_SETUP;
            }
        },
        None => None,
    };
    let opts = EngineOptions {
        timeout: c.timeout,
        give_up: c.give_up,
        hard_deadline: Instant::now() + c.hard_deadline,
        batch: usize::from(c.batch),
        seed: c.seed,
        client_id: c.client_id,
        print_timeline: c.timeline,
        link_selection,
    };
    let renews = match &kind {
        LoadKind::Renew(_) => true,
        LoadKind::Mix(a) => a.renew_rate > 0.0,
        _ => false,
    };
    if c.direct.is_some() && renews {
        eprintln!("dhcpperf: --direct does not renew (the server answers a renewal at its ciaddr, not configured here)");
        return EXIT_SETUP;
    }
    let target = Target {
        server: c.server,
        relay: c.relay_ip.unwrap_or(Ipv4Addr::UNSPECIFIED),
        relay_port: c.relay_port,
        direct: c.direct.clone(),
    };
    let via = match (&c.direct, c.relay_ip) {
        (Some(iface), _) => format!("direct on {iface}"),
        (None, Some(ip)) => ip.to_string(),
        (None, None) => String::new(),
    };
    let mut gen = match Generator::new(target, opts, recorder, c.max_clients) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("dhcpperf: {e}");
            return EXIT_SETUP;
        }
    };
    let mut report = RunReport {
        scenario: kind.name().to_string(),
        server: c.server.to_string(),
        relay: via.clone(),
        phases: Vec::new(),
        sweep: None,
        completed: true,
        message: None,
    };
    let json = c.json;
    let res = run_phases(&mut gen, &kind, &mut report);
    if let Err(e) = res {
        eprintln!("dhcpperf: {e}");
        return EXIT_SETUP;
    }
    if let Some(p) = report
        .phases
        .iter()
        .find(|p| p.stop != StopReason::Completed)
    {
        report.completed = false;
        report.message = Some(match p.stop {
            StopReason::NoAnswers => format!(
                "no answers from {} for {:.1} s in phase {} (ICMP errors {}{}): is the server running, and does it serve {}?",
                c.server,
                c.give_up.as_secs_f64(),
                p.phase,
                p.counts.icmp_errors,
                p.last_error.as_ref().map_or(String::new(), |e| format!(", last: {e}")),
                if c.direct.is_some() { via.clone() } else { format!("relay {via}") }
            ),
            _ => format!("hard deadline of {:.0} s reached in phase {}", c.hard_deadline.as_secs_f64(), p.phase),
        });
    }
    let out = io::stdout();
    let mut w = out.lock();
    let printed = if json {
        serde_json::to_writer_pretty(&mut w, &report)
            .map_err(io::Error::from)
            .and_then(|()| writeln!(w))
    } else {
        print_run(&mut w, &report)
    };
    if let Err(e) = printed {
        eprintln!("dhcpperf: cannot write the report: {e}");
    }
    if let Some(m) = &report.message {
        if json {
            eprintln!("dhcpperf: {m}");
        }
        return EXIT_CUT_SHORT;
    }
    EXIT_OK
}

fn cut_short(p: &PhaseReport) -> bool {
    p.stop != StopReason::Completed
}

fn run_phases(
    gen: &mut Generator,
    kind: &LoadKind,
    report: &mut RunReport,
) -> Result<(), crate::engine::SetupError> {
    let max = kind.common().max_clients;
    match kind {
        LoadKind::Dora(a) | LoadKind::Renew(a) | LoadKind::Release(a) => {
            let n = clients_for(a.rate, a.duration, a.count, max);
            let table = gen.new_table(n)?;
            let cycle = cycle_of(a.clients, a.release_after_ack, table.base(), n as u32);
            let p = gen.run(
                "dora",
                &table,
                Plan::Dora {
                    rate: a.rate,
                    count: n,
                    duration: a.duration,
                    window: a.window,
                    cycle,
                },
            );
            let stop = cut_short(&p);
            report.phases.push(p);
            if stop {
                return Ok(());
            }
            let second = match kind {
                LoadKind::Renew(_) => Some((
                    "renew",
                    Plan::Renew {
                        rate: a.rate,
                        duration: a.duration,
                        window: a.window,
                    },
                )),
                LoadKind::Release(_) => Some((
                    "release",
                    Plan::Release {
                        rate: a.rate,
                        duration: a.duration,
                    },
                )),
                _ => None,
            };
            if let Some((name, plan)) = second {
                report.phases.push(gen.run(name, &table, plan));
            }
        }
        LoadKind::Mix(a) => {
            let n = a.prebind + clients_for(a.rate, a.duration, None, max).max(1);
            let table = gen.new_table(n)?;
            if a.prebind > 0 {
                let p = gen.run(
                    "prebind",
                    &table,
                    Plan::Dora {
                        rate: a.prebind_rate,
                        count: a.prebind,
                        duration: Duration::from_secs(3600),
                        window: 1000,
                        cycle: None,
                    },
                );
                let stop = cut_short(&p);
                report.phases.push(p);
                if stop {
                    return Ok(());
                }
            }
            report.phases.push(gen.run(
                "mix",
                &table,
                Plan::Mix {
                    dora_rate: a.rate,
                    renew_rate: a.renew_rate,
                    release_rate: a.release_rate,
                    duration: a.duration,
                    first_new: a.prebind,
                    cycle: cycle_of(
                        a.clients,
                        a.release_after_ack,
                        table.base() + a.prebind as u32,
                        (n - a.prebind) as u32,
                    ),
                },
            ));
        }
        LoadKind::Avalanche(a) => {
            let table = gen.new_table(a.count)?;
            report.phases.push(gen.run(
                "avalanche",
                &table,
                Plan::Avalanche {
                    rate: a.rate,
                    backoff: Backoff {
                        initial: a.backoff_initial,
                        max: a.backoff_max,
                    },
                    deadline: a.deadline,
                    jitter: a.jitter,
                },
            ));
        }
        LoadKind::Sweep(a) => {
            let mut steps = Vec::new();
            let mut rate = a.start_rate.max(1.0);
            // Every step reuses the same N identities, so every client releases.
            let mut cycle: Option<Cycle> = None;
            for step in 0..a.max_steps {
                if rate > a.max_rate {
                    break;
                }
                let n = clients_for(rate, a.step_duration, None, max);
                let table = gen.new_table(n)?;
                if cycle.is_none() {
                    cycle =
                        cycle_of(a.clients, a.release_after_ack, table.base(), u32::MAX).map(|c| {
                            Cycle {
                                release_all: true,
                                ..c
                            }
                        });
                }
                let p = gen.run(
                    &format!("sweep-{}", step + 1),
                    &table,
                    Plan::Dora {
                        rate,
                        count: n,
                        duration: a.step_duration,
                        window: 1000,
                        cycle,
                    },
                );
                if gen.options().print_timeline {
                    eprintln!(
                        "sweep step {}: rate {rate:.0}/s -> {:.1} leases/s, missed {:.3} %",
                        step + 1,
                        p.leases_per_s,
                        p.missed_pct
                    );
                }
                steps.push(SweepStep {
                    rate,
                    sent_rate: p.sent_rate,
                    leases_per_s: p.leases_per_s,
                    missed_pct: p.missed_pct,
                    p99_discover_offer_ms: p.latency.discover_offer.p99_ms,
                    p99_request_ack_ms: p.latency.request_ack.p99_ms,
                    cpu_us_per_exchange: p.cpu.us_per_exchange,
                });
                let over = p.missed_pct > a.loss_threshold;
                let stop = cut_short(&p);
                report.phases.push(p);
                if over || stop {
                    break;
                }
                rate = match a.step_factor {
                    Some(f) if f > 1.0 => rate * f,
                    _ => rate + a.step_rate.max(1.0),
                };
            }
            report.sweep = Some(summarize_sweep(steps, a.loss_threshold));
        }
    }
    Ok(())
}

/// The highest zero-loss rate and the highest rate within `threshold` percent missed.
pub fn summarize_sweep(steps: Vec<SweepStep>, threshold: f64) -> SweepSummary {
    let zero = steps
        .iter()
        .filter(|s| s.missed_pct == 0.0)
        .max_by(|a, b| a.rate.total_cmp(&b.rate));
    let isc = steps
        .iter()
        .filter(|s| s.missed_pct <= threshold)
        .max_by(|a, b| a.rate.total_cmp(&b.rate));
    SweepSummary {
        max_zero_loss_rate: zero.map(|s| s.rate),
        max_zero_loss_leases_per_s: zero.map(|s| s.leases_per_s),
        isc_rate: isc.map(|s| s.rate),
        isc_leases_per_s: isc.map(|s| s.leases_per_s),
        threshold_pct: threshold,
        steps,
    }
}

fn run_responder(a: &ResponderArgs) -> i32 {
    let cfg = ResponderConfig {
        listen: SocketAddrV4::new(a.listen, a.port),
        server_id: a.server_id.unwrap_or(a.listen),
        lease_time: a.lease_time,
        threads: a.threads,
        batch: usize::from(a.batch),
        duration: a.duration,
    };
    eprintln!(
        "dhcpperf responder on {} ({} threads) for at most {:.0} s",
        cfg.listen,
        cfg.threads,
        cfg.duration.as_secs_f64()
    );
    match responder::run(&cfg, Arc::new(AtomicBool::new(false))) {
        Ok(s) => {
            if a.json {
                println!("{}", serde_json::to_string(&s).unwrap_or_default());
            } else {
                println!(
                    "received {} offers {} acks {} ignored {} bad {} send_errors {} per_thread {:?}",
                    s.received, s.offers, s.acks, s.ignored, s.bad, s.send_errors, s.per_thread
                );
            }
            EXIT_OK
        }
        Err(e) => {
            eprintln!("dhcpperf: {e}");
            EXIT_SETUP
        }
    }
}

fn run_verify(a: &VerifyArgs) -> i32 {
    let records = match read_records(&a.record) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("dhcpperf: {e}");
            return EXIT_SETUP;
        }
    };
    let export = match read_export(&a.export) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("dhcpperf: {e}");
            return EXIT_SETUP;
        }
    };
    let now = a.now.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    });
    let rep = verify(&records, &export, now, a.slack);
    let out = io::stdout();
    let mut w = out.lock();
    let printed = if a.json {
        serde_json::to_writer_pretty(&mut w, &rep)
            .map_err(io::Error::from)
            .and_then(|()| writeln!(w))
    } else {
        print_verify(&mut w, &rep, a.show)
    };
    if let Err(e) = printed {
        eprintln!("dhcpperf: cannot write the report: {e}");
    }
    if rep.passed() {
        EXIT_OK
    } else {
        EXIT_VIOLATIONS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("100us"), Ok(Duration::from_micros(100)));
        assert_eq!(parse_duration("5min"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1.5m"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2 s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("3µs"), Ok(Duration::from_micros(3)));
        assert_eq!(parse_duration(" 900s "), Ok(Duration::from_secs(900)));
        assert!(parse_duration("1e8").is_err());
        assert!(parse_duration("200d").is_err());
        assert!(parse_duration("NaN").is_err());
    }

    #[test]
    fn servers_parse() {
        assert_eq!(
            parse_server("198.18.0.1"),
            Ok(SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 1), 67))
        );
        assert_eq!(
            parse_server("198.18.0.1:1067"),
            Ok(SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 1), 1067))
        );
        assert!(parse_server("host").is_err());
    }

    fn step(rate: f64, missed: f64) -> SweepStep {
        SweepStep {
            rate,
            sent_rate: rate,
            leases_per_s: rate * (1.0 - missed / 100.0),
            missed_pct: missed,
            p99_discover_offer_ms: None,
            p99_request_ack_ms: None,
            cpu_us_per_exchange: None,
        }
    }

    #[test]
    fn sweep_summary_picks_zero_loss_and_isc_rates() {
        let s = summarize_sweep(
            vec![
                step(1000.0, 0.0),
                step(2000.0, 0.0),
                step(3000.0, 1.0),
                step(4000.0, 9.0),
            ],
            2.5,
        );
        assert_eq!(s.max_zero_loss_rate, Some(2000.0));
        assert_eq!(s.isc_rate, Some(3000.0));
        let s = summarize_sweep(vec![step(1000.0, 5.0)], 2.5);
        assert_eq!((s.max_zero_loss_rate, s.isc_rate), (None, None));
    }

    #[test]
    fn cli_parses_scenarios() {
        let c = Cli::try_parse_from([
            "dhcpperf",
            "dora",
            "--server",
            "198.18.0.1",
            "--relay-ip",
            "198.18.0.2",
            "--rate",
            "500",
            "--count",
            "10",
            "--timeout",
            "200ms",
        ])
        .unwrap();
        let Command::Dora(a) = c.command else {
            panic!("not dora")
        };
        assert_eq!(a.count, Some(10));
        assert_eq!(a.common.timeout, Duration::from_millis(200));
        assert_eq!(a.common.server.port(), 67);
        assert!(Cli::try_parse_from(["dhcpperf", "dora", "--server", "x"]).is_err());
        assert_eq!(a.common.link_selection_base, None);
        let c = Cli::try_parse_from([
            "dhcpperf",
            "sweep",
            "--server",
            "198.18.0.1",
            "--relay-ip",
            "198.18.0.2",
            "--link-selection-base",
            "10.0.0.1",
            "--link-selection-count",
            "100000",
        ])
        .unwrap();
        let Command::Sweep(a) = c.command else {
            panic!("not sweep")
        };
        assert_eq!(
            a.common.link_selection_base,
            Some(Ipv4Addr::new(10, 0, 0, 1))
        );
        assert_eq!(
            (a.common.link_selection_step, a.common.link_selection_count),
            (64, 100_000)
        );
        // Step and count without a base are a usage error.
        assert!(Cli::try_parse_from([
            "dhcpperf",
            "dora",
            "--server",
            "198.18.0.1",
            "--relay-ip",
            "198.18.0.2",
            "--link-selection-count",
            "5",
        ])
        .is_err());
        // --direct replaces --relay-ip; one of them is required, not both.
        let c = Cli::try_parse_from([
            "dhcpperf",
            "dora",
            "--server",
            "198.18.0.1",
            "--direct",
            "veth1",
        ])
        .unwrap();
        let Command::Dora(a) = c.command else {
            panic!("not dora")
        };
        assert_eq!(
            (a.common.direct.as_deref(), a.common.relay_ip),
            (Some("veth1"), None)
        );
        assert!(Cli::try_parse_from(["dhcpperf", "dora", "--server", "198.18.0.1"]).is_err());
        assert!(Cli::try_parse_from([
            "dhcpperf",
            "dora",
            "--server",
            "198.18.0.1",
            "--direct",
            "veth1",
            "--relay-ip",
            "198.18.0.2",
        ])
        .is_err());
        assert_eq!(clients_for(100.0, Duration::from_secs(3), None, 10), 300);
        assert_eq!(clients_for(0.0, Duration::from_secs(3), None, 10), 10);
    }
}

//! The result of one phase: counters, latencies, CPU, timeline and why it stopped (the
//! `--json` output is their serde form).

use std::time::Duration;

use serde::Serialize;

use super::shared::{get, Counters, Shared};
use super::Plan;
use crate::histogram::{Histogram, LatencySummary};

/// Snapshot of a phase's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// DISCOVERs sent (first transmissions).
    pub sent_discover: u64,
    /// SELECTING REQUESTs sent (first transmissions).
    pub sent_request: u64,
    /// Renewing REQUESTs sent (first transmissions).
    pub sent_renew: u64,
    /// RELEASEs sent.
    pub sent_release: u64,
    /// Retransmissions (avalanche).
    pub retransmits: u64,
    /// OFFERs accepted.
    pub offers: u64,
    /// ACKs to SELECTING REQUESTs (completed DORA).
    pub acks: u64,
    /// ACKs to renewals.
    pub renew_acks: u64,
    /// NAKs.
    pub naks: u64,
    /// DISCOVERs with no OFFER within the timeout.
    pub failed_discover: u64,
    /// REQUESTs with no ACK/NAK within the timeout.
    pub failed_request: u64,
    /// Renewals with no ACK/NAK within the timeout.
    pub failed_renew: u64,
    /// Answers that came after the timeout (already counted as failed).
    pub late: u64,
    /// Datagrams that are not a sensible reply (unparsable, wrong op/type, MAC mismatch, no
    /// server id, zero yiaddr, ...).
    pub bad_reply: u64,
    /// Replies whose xid belongs to no client of this phase.
    pub stray: u64,
    /// Replies for a client not waiting for that message (duplicates, answers to a try
    /// already answered).
    pub unexpected: u64,
    /// ICMP errors reported by the kernel (unreachable server).
    pub icmp_errors: u64,
    /// Datagrams the kernel refused to send.
    pub send_errors: u64,
}

impl Counts {
    pub(super) fn of(c: &Counters) -> Self {
        Self {
            sent_discover: get(&c.sent_discover),
            sent_request: get(&c.sent_request),
            sent_renew: get(&c.sent_renew),
            sent_release: get(&c.sent_release),
            retransmits: get(&c.retransmits),
            offers: get(&c.offers),
            acks: get(&c.acks),
            renew_acks: get(&c.renew_acks),
            naks: get(&c.naks),
            failed_discover: get(&c.failed_discover),
            failed_request: get(&c.failed_request),
            failed_renew: get(&c.failed_renew),
            late: get(&c.late),
            bad_reply: get(&c.bad_reply),
            stray: get(&c.stray),
            unexpected: get(&c.unexpected),
            icmp_errors: get(&c.icmp_errors),
            send_errors: get(&c.send_errors),
        }
    }

    /// Requests sent that expect an answer (first transmissions).
    pub fn requests(&self) -> u64 {
        self.sent_discover + self.sent_request + self.sent_renew
    }

    /// Requests that got no answer within the timeout.
    pub fn missed(&self) -> u64 {
        self.failed_discover + self.failed_request + self.failed_renew
    }

    /// Answers of any kind that were accepted.
    pub fn answered(&self) -> u64 {
        self.offers + self.acks + self.renew_acks + self.naks
    }

    /// Datagrams sent, all kinds.
    pub fn sent(&self) -> u64 {
        self.requests() + self.sent_release + self.retransmits
    }
}

/// One second of the timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TimelinePoint {
    /// Seconds since the phase started (end of the interval).
    pub t_s: u64,
    /// Datagrams sent in the interval.
    pub sent: u64,
    /// Answers accepted in the interval.
    pub answered: u64,
    /// Requests declared lost in the interval.
    pub failed: u64,
    /// Exchanges in flight at the end of the interval.
    pub in_flight: i64,
}

/// Latencies of one phase, per message type.
#[derive(Debug, Clone, Serialize)]
pub struct Latencies {
    /// DISCOVER → OFFER.
    pub discover_offer: LatencySummary,
    /// REQUEST → ACK (SELECTING).
    pub request_ack: LatencySummary,
    /// Renewing REQUEST → ACK.
    pub renew_ack: LatencySummary,
    /// First DISCOVER → ACK, including retransmissions (time to bind).
    pub dora: LatencySummary,
}

/// CPU used by the generator process during a phase.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CpuUse {
    /// User time, seconds.
    pub user_s: f64,
    /// System time, seconds.
    pub sys_s: f64,
    /// (user + sys) / wall time.
    pub cores: f64,
    /// CPU microseconds per completed exchange (DORA, renew or release).
    pub us_per_exchange: Option<f64>,
}

/// Why a phase ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// Everything sent and answered or timed out.
    Completed,
    /// No answer for `--give-up` seconds while requests were outstanding.
    NoAnswers,
    /// The overall hard deadline passed.
    HardDeadline,
}

/// The result of one phase.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseReport {
    /// Phase name (`dora`, `renew`, ...).
    pub phase: String,
    /// Rate asked for (per second; 0 = unlimited), for the main kind of the phase.
    pub offered_rate: f64,
    /// Rate actually sent (first transmissions per second over the sending time).
    pub sent_rate: f64,
    /// Wall time of the phase including the wait for the last answers, seconds.
    pub elapsed_s: f64,
    /// Time spent sending, seconds.
    pub send_s: f64,
    /// Completed DORA exchanges per second (ACKs over the time to the last ACK).
    pub leases_per_s: f64,
    /// Renewal ACKs per second.
    pub renews_per_s: f64,
    /// Requests missed / requests sent, percent.
    pub missed_pct: f64,
    /// Counters.
    pub counts: Counts,
    /// Latency percentiles per message type.
    pub latency: Latencies,
    /// Generator CPU.
    pub cpu: CpuUse,
    /// Per-second timeline.
    pub timeline: Vec<TimelinePoint>,
    /// Clients bound at the end (avalanche) — `None` for other phases.
    pub bound_at_end: Option<u64>,
    /// When the last DORA completed (its ACK arrived), seconds since the phase started; `None`
    /// if no DORA completed. In an avalanche where every client bound: the time until all
    /// were bound.
    pub last_ack_s: Option<f64>,
    /// Clients in the phase's table.
    pub clients: u64,
    /// Why the phase ended.
    pub stop: StopReason,
    /// The last socket error seen, if any.
    pub last_error: Option<String>,
    /// Record events written during the phase.
    pub recorded: u64,
}

#[derive(Debug, Default)]
pub(super) struct Hists {
    pub(super) discover_offer: Histogram,
    pub(super) request_ack: Histogram,
    pub(super) renew_ack: Histogram,
    pub(super) dora: Histogram,
}

/// What a finished phase measured, handed to [`PhaseReport::assemble`].
pub(super) struct PhaseEnd<'a, 't> {
    /// Phase name.
    pub(super) name: &'a str,
    /// The plan it ran.
    pub(super) plan: Plan,
    /// The state its threads shared.
    pub(super) shared: &'a Shared<'t>,
    /// The receiver's latency histograms.
    pub(super) hists: Hists,
    /// Time spent sending (µs since the phase started).
    pub(super) send_us: u64,
    /// Wall time of the phase.
    pub(super) elapsed: Duration,
    /// Process CPU (user, system) when the phase started.
    pub(super) cpu_before: (Duration, Duration),
    /// Process CPU (user, system) when it ended.
    pub(super) cpu_after: (Duration, Duration),
    /// The per-second timeline.
    pub(super) timeline: Vec<TimelinePoint>,
    /// Why it ended.
    pub(super) stop: StopReason,
    /// Record events written during the phase.
    pub(super) recorded: u64,
}

impl PhaseReport {
    /// Rates, loss, latencies and CPU of a finished phase.
    pub(super) fn assemble(end: PhaseEnd<'_, '_>) -> Self {
        let PhaseEnd {
            name,
            plan,
            shared,
            hists,
            send_us,
            elapsed,
            cpu_before: cpu0,
            cpu_after: cpu1,
            timeline,
            stop,
            recorded,
        } = end;
        let counts = Counts::of(&shared.counters);
        let secs = |us: u64| us as f64 / 1e6;
        let send_s = secs(send_us).max(1e-6);
        let per_s = |n: u64, until_us: u64| {
            if n == 0 {
                0.0
            } else {
                n as f64 / secs(until_us).max(1e-6)
            }
        };
        let user_s = cpu1.0.saturating_sub(cpu0.0).as_secs_f64();
        let sys_s = cpu1.1.saturating_sub(cpu0.1).as_secs_f64();
        let exchanges = counts.acks + counts.renew_acks + counts.sent_release;
        let (main_sent, offered_rate) = match plan {
            Plan::Dora { rate, .. } => (counts.sent_discover, rate),
            Plan::Renew { rate, .. } => (counts.sent_renew, rate),
            Plan::Release { rate, .. } => (counts.sent_release, rate),
            Plan::Mix { dora_rate, .. } => (counts.sent_discover, dora_rate),
            Plan::Avalanche { rate, .. } => (counts.sent_discover, rate),
        };
        let requests = counts.requests();
        let last_ack_s = (counts.acks > 0).then(|| secs(get(&shared.last_ack_us)));
        let last_error = shared
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        PhaseReport {
            phase: name.to_string(),
            offered_rate,
            sent_rate: main_sent as f64 / send_s,
            elapsed_s: elapsed.as_secs_f64(),
            send_s,
            leases_per_s: per_s(counts.acks, get(&shared.last_ack_us)),
            renews_per_s: per_s(counts.renew_acks, get(&shared.last_renew_us)),
            missed_pct: if requests == 0 {
                0.0
            } else {
                100.0 * counts.missed() as f64 / requests as f64
            },
            latency: Latencies {
                discover_offer: hists.discover_offer.summary(),
                request_ack: hists.request_ack.summary(),
                renew_ack: hists.renew_ack.summary(),
                dora: hists.dora.summary(),
            },
            cpu: CpuUse {
                user_s,
                sys_s,
                cores: (user_s + sys_s) / elapsed.as_secs_f64().max(1e-6),
                us_per_exchange: (exchanges > 0).then(|| (user_s + sys_s) * 1e6 / exchanges as f64),
            },
            counts,
            timeline,
            bound_at_end: matches!(plan, Plan::Avalanche { .. }).then(|| shared.table.bound()),
            last_ack_s,
            clients: shared.table.len() as u64,
            stop,
            last_error,
            recorded,
        }
    }
}

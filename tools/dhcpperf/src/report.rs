//! Human-readable output of phases, sweeps and verifications (the `--json` output is the
//! serde form of the same structs).

use std::io::{self, Write};
use std::net::Ipv4Addr;

use serde::Serialize;

use crate::engine::{PhaseReport, StopReason};
use crate::histogram::LatencySummary;
use crate::verify::{VerifyReport, Violation};

/// The whole result of a load run.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// Scenario name.
    pub scenario: String,
    /// Server address.
    pub server: String,
    /// Relay address.
    pub relay: String,
    /// Every phase, in order.
    pub phases: Vec<PhaseReport>,
    /// Sweep result (sweep only).
    pub sweep: Option<SweepSummary>,
    /// True when every phase completed (no give-up, no hard deadline).
    pub completed: bool,
    /// Why the run stopped early, if it did.
    pub message: Option<String>,
}

/// One step of a sweep.
#[derive(Debug, Clone, Serialize)]
pub struct SweepStep {
    /// Offered new clients per second.
    pub rate: f64,
    /// Actually sent DISCOVERs per second.
    pub sent_rate: f64,
    /// Completed DORA per second.
    pub leases_per_s: f64,
    /// Requests missed, percent.
    pub missed_pct: f64,
    /// DISCOVER→OFFER p99, ms.
    pub p99_discover_offer_ms: Option<f64>,
    /// REQUEST→ACK p99, ms.
    pub p99_request_ack_ms: Option<f64>,
    /// Generator CPU µs per exchange.
    pub cpu_us_per_exchange: Option<f64>,
}

/// Result of a sweep.
#[derive(Debug, Clone, Serialize)]
pub struct SweepSummary {
    /// Steps run.
    pub steps: Vec<SweepStep>,
    /// Highest offered rate with no missed request.
    pub max_zero_loss_rate: Option<f64>,
    /// Completed DORA/s at that rate.
    pub max_zero_loss_leases_per_s: Option<f64>,
    /// Highest offered rate with at most `threshold_pct` missed (ISC's method).
    pub isc_rate: Option<f64>,
    /// Completed DORA/s at that rate.
    pub isc_leases_per_s: Option<f64>,
    /// The loss threshold, percent.
    pub threshold_pct: f64,
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |x| format!("{x:.3}"))
}

fn lat_row(w: &mut dyn Write, name: &str, s: &LatencySummary) -> io::Result<()> {
    if s.count == 0 {
        return Ok(());
    }
    writeln!(
        w,
        "    {name:<16} {:>10} {:>9} {:>9} {:>9}",
        s.count,
        ms(s.p50_ms),
        ms(s.p99_ms),
        ms(s.max_ms)
    )
}

/// How the first transmissions went out: a rate over the sending time, or — when they all left
/// within 0.1 s (an avalanche at --rate 0), where a rate would read as millions per second
/// "for 0.00 s" — the count and the milliseconds it took.
fn sending_text(sent_rate: f64, send_s: f64) -> String {
    if send_s < 0.1 {
        format!(
            "sent {:.0} within {:.1} ms",
            (sent_rate * send_s).round(),
            send_s * 1e3
        )
    } else {
        format!("sent {sent_rate:.0}/s for {send_s:.2} s")
    }
}

/// Prints one phase.
pub fn print_phase(w: &mut dyn Write, p: &PhaseReport) -> io::Result<()> {
    let c = &p.counts;
    let rate = if p.offered_rate > 0.0 {
        format!("{:.0}/s", p.offered_rate)
    } else {
        "unlimited".to_string()
    };
    writeln!(
        w,
        "phase {}: {} clients, offered {rate}, {}, finished after {:.2} s",
        p.phase,
        p.clients,
        sending_text(p.sent_rate, p.send_s),
        p.elapsed_s
    )?;
    writeln!(
        w,
        "  sent      discover {} request {} renew {} release {} retransmit {}",
        c.sent_discover, c.sent_request, c.sent_renew, c.sent_release, c.retransmits
    )?;
    writeln!(
        w,
        "  answered  offer {} ack {} renew-ack {} nak {}",
        c.offers, c.acks, c.renew_acks, c.naks
    )?;
    writeln!(
        w,
        "  missed    discover {} request {} renew {} = {:.3} % of {} requests (late answers: {})",
        c.failed_discover,
        c.failed_request,
        c.failed_renew,
        p.missed_pct,
        c.requests(),
        c.late
    )?;
    writeln!(
        w,
        "  other     bad_reply {} stray {} unexpected {} icmp_errors {} send_errors {}",
        c.bad_reply, c.stray, c.unexpected, c.icmp_errors, c.send_errors
    )?;
    if c.acks > 0 {
        writeln!(w, "  leases/s  {:.1} (completed DORA)", p.leases_per_s)?;
    }
    if c.renew_acks > 0 {
        writeln!(w, "  renews/s  {:.1}", p.renews_per_s)?;
    }
    if let Some(b) = p.bound_at_end {
        let last = p
            .last_ack_s
            .map_or(String::new(), |t| format!(" (last ACK at {t:.3} s)"));
        writeln!(
            w,
            "  bound     {b} of {} clients at the end{last}",
            p.clients
        )?;
    }
    let l = &p.latency;
    if l.discover_offer.count + l.request_ack.count + l.renew_ack.count > 0 {
        writeln!(
            w,
            "  latency ms       {:>10} {:>9} {:>9} {:>9}",
            "count", "p50", "p99", "max"
        )?;
        lat_row(w, "DISCOVER→OFFER", &l.discover_offer)?;
        lat_row(w, "REQUEST→ACK", &l.request_ack)?;
        lat_row(w, "RENEW→ACK", &l.renew_ack)?;
        lat_row(w, "DORA (to bound)", &l.dora)?;
    }
    writeln!(
        w,
        "  generator CPU user {:.2} s sys {:.2} s = {:.2} cores{}",
        p.cpu.user_s,
        p.cpu.sys_s,
        p.cpu.cores,
        p.cpu
            .us_per_exchange
            .map_or(String::new(), |u| format!(", {u:.1} µs per exchange"))
    )?;
    if p.recorded > 0 {
        writeln!(w, "  recorded  {} events", p.recorded)?;
    }
    match p.stop {
        StopReason::Completed => {}
        StopReason::NoAnswers => writeln!(w, "  STOPPED: no answers within --give-up")?,
        StopReason::HardDeadline => writeln!(w, "  STOPPED: hard deadline reached")?,
    }
    if let Some(e) = &p.last_error {
        writeln!(w, "  last socket error: {e}")?;
    }
    Ok(())
}

/// Prints a whole run.
pub fn print_run(w: &mut dyn Write, r: &RunReport) -> io::Result<()> {
    writeln!(
        w,
        "dhcpperf {}: server {} relay {}",
        r.scenario, r.server, r.relay
    )?;
    for p in &r.phases {
        print_phase(w, p)?;
    }
    if let Some(s) = &r.sweep {
        writeln!(
            w,
            "sweep: {:>9} {:>9} {:>10} {:>8} {:>9} {:>9} {:>8}",
            "rate", "sent/s", "leases/s", "missed%", "p99 DO", "p99 RA", "cpu µs"
        )?;
        for st in &s.steps {
            writeln!(
                w,
                "       {:>9.0} {:>9.0} {:>10.1} {:>8.3} {:>9} {:>9} {:>8}",
                st.rate,
                st.sent_rate,
                st.leases_per_s,
                st.missed_pct,
                ms(st.p99_discover_offer_ms),
                ms(st.p99_request_ack_ms),
                st.cpu_us_per_exchange
                    .map_or("-".to_string(), |u| format!("{u:.1}"))
            )?;
        }
        let f = |v: Option<f64>| v.map_or("none".to_string(), |x| format!("{x:.0}"));
        writeln!(
            w,
            "highest rate with zero loss: {} (leases/s {})",
            f(s.max_zero_loss_rate),
            f(s.max_zero_loss_leases_per_s)
        )?;
        writeln!(
            w,
            "highest rate with ≤ {} % missing the timeout (ISC method): {} (leases/s {})",
            s.threshold_pct,
            f(s.isc_rate),
            f(s.isc_leases_per_s)
        )?;
    }
    if let Some(m) = &r.message {
        writeln!(w, "{m}")?;
    }
    Ok(())
}

/// Prints a verification; shows at most `show` violations.
pub fn print_verify(w: &mut dyn Write, r: &VerifyReport, show: usize) -> io::Result<()> {
    writeln!(
        w,
        "records {} (acks {}, releases {}), clients {}, export entries {}",
        r.records, r.acks, r.releases, r.clients, r.export_entries
    )?;
    writeln!(
        w,
        "checked {} live leases: ok {}, missing {}, wrong client {}; duplicate addresses {}; clients with two addresses {}; ignored: expired {}, released {}",
        r.checked,
        r.ok,
        r.missing,
        r.wrong_client,
        r.duplicate_address,
        r.two_addresses,
        r.ignored_expired,
        r.ignored_released
    )?;
    for v in r.violations.iter().take(show) {
        match v {
            Violation::Missing {
                client,
                address,
                found_state,
            } => writeln!(
                w,
                "  MISSING    {address} acked to {client}; export: {}",
                found_state.as_deref().unwrap_or("no entry")
            )?,
            Violation::WrongClient {
                address,
                expected,
                found,
            } => writeln!(
                w,
                "  WRONG      {address} acked to {expected}; export holder: {}",
                found.join(", ")
            )?,
            Violation::TwoAddresses {
                client,
                addresses,
                source,
            } => writeln!(
                w,
                "  TWO        {client} holds {} (in the {source})",
                addresses
                    .iter()
                    .map(Ipv4Addr::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )?,
            Violation::DuplicateAddress {
                address,
                source,
                holders,
            } => writeln!(
                w,
                "  DUPLICATE  {address} held by {} (in the {source})",
                holders.join(", ")
            )?,
        }
    }
    if r.violations.len() > show {
        writeln!(w, "  ... and {} more", r.violations.len() - show)?;
    }
    writeln!(w, "{}", if r.passed() { "PASS" } else { "FAIL" })
}

#[cfg(test)]
mod tests {
    use super::sending_text;

    #[test]
    fn sending_all_at_once_shows_count_and_milliseconds() {
        // 10,000 DISCOVERs queued in 3.2 ms (what an avalanche at --rate 0 reports).
        assert_eq!(
            sending_text(10_000.0 / 0.0032, 0.0032),
            "sent 10000 within 3.2 ms"
        );
    }

    #[test]
    fn paced_sending_shows_rate_and_seconds() {
        assert_eq!(sending_text(2000.0, 10.0), "sent 2000/s for 10.00 s");
    }
}

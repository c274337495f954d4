//! prodhcp's lease audit trail: the audit process ([`process`], `prodhcpd audit`) and its
//! pipeline ([`trail::Trail`]: rings → spool and file → syslog targets), the audit event, its RFC 5424 syslog form,
//! its JSON-lines form, the reader that answers "who held this address at that time" from the
//! JSON-lines files, and the syslog senders ([`transport::Sender`]: unix, udp, tcp, tls).
//! [`AuditEvent`] is made from a change-ring record ([`AuditEvent::from_record`]) or
//! an appliance event ([`AuditEvent::appliance`]),
//! [`rfc5424::Rfc5424::format`] and [`jsonl::to_line`] turn it into text, and
//! [`jsonl::read_history`] reads the files back. The audit process's storage is here too:
//! [`spool::Spool`], the bounded on-disk spool records wait in for their syslog targets, and
//! [`state::AuditState`], the small state file (acknowledged seqs per target, losses).
//!
//! # Fields
//!
//! The same fields in both formats, in this order; a field without a value is left out of both.
//! Times: `time` is RFC 3339 UTC with milliseconds; `lease-start` / `lease-end` RFC 3339 UTC in
//! seconds. Byte identifiers are lower-case hex without separators.
//!
//! | field | RFC 5424 PARAM-NAME | JSON name | meaning | Splunk CIM (Network_Sessions.DHCP) / Microsoft ASIM (DHCP) |
//! |---|---|---|---|---|
//! | event | `event` | `event` | the event kind ([`EventKind::name`]), also the MSGID | CIM `signature` / ASIM `EventType` |
//! | seq | `seq` | `seq` (number) | per-appliance sequence number; a gap is a loss | ASIM `EventOriginalUid` |
//! | time | `time` | `time` | when (the ring record's time), also the TIMESTAMP | `_time` / `TimeGenerated` |
//! | server | `server` | `server` | the server's host name, also the HOSTNAME | CIM `dvc` / ASIM `DvcHostname` |
//! | node | `node` | `node` | the appliance's node name in its cluster | — |
//! | ip | `ip` | `ip` | the leased address (nak: the address the client asked for) | CIM `dest_ip` / ASIM `SrcIpAddr` |
//! | mac | `mac` | `mac` | the client's hardware address, `aa:bb:…` (nak: the refused client's) | CIM `dest_mac` / ASIM `SrcMacAddr` |
//! | client-id | `client-id` | `client_id` | option 61, hex (`hash:<hex>` for one over 23 bytes: the table keeps only its hash) | ASIM `DhcpSrcDHCId` |
//! | hostname | `hostname` | `hostname` | option 12, the client's host name | CIM `dest_nt_host` / ASIM `SrcHostname` |
//! | circuit-id | `circuit-id` | `circuit_id` | option 82.1, hex | ASIM `DhcpCircuitId` |
//! | remote-id | `remote-id` | `remote_id` | option 82.2, hex | — |
//! | subscriber-id | `subscriber-id` | `subscriber_id` | option 82.6 (RFC 3993), hex | ASIM `DhcpSubscriberId` |
//! | giaddr | `giaddr` | `giaddr` | the relay's address (giaddr), dotted quad; only when relayed | — |
//! | lease-start | `lease-start` | `lease_start` | when the lease (or this extension) began | — |
//! | lease-end | `lease-end` | `lease_end` | when it ends / ended | — |
//! | lease-seconds | `lease-seconds` | `lease_seconds` (number) | lease-end − lease-start | CIM `lease_duration` / ASIM `DhcpLeaseDuration` |
//! | previous-mac | `previous-mac` | `previous_mac` | reclaim: the previous holder's hardware address | — |
//! | previous-client-id | `previous-client-id` | `previous_client_id` | reclaim: the previous holder's client-id | — |
//! | truncated | `truncated` | `truncated` | names of fields cut to fit the ring record, `circuit-id,hostname` | — |
//! | generation | `generation` | `generation` (number) | reload: the configuration generation | — |
//! | role-from | `role-from` | `role_from` | role change: before | — |
//! | role-to | `role-to` | `role_to` | role change: after | — |
//! | cause | `cause` | `cause` | role change: why; pool-alarm: `raised` or `cleared` | — |
//! | finding | `finding` | `finding` | scrub: what was found; pool-alarm: `subnet=… pool=… level=… utilisation=…% free=… estimate=…` | — |
//!
//! Events (`event`): offer, commit, renew, rebind (a REBINDING client's renewal; an
//! INIT-REBOOT client's is a renew), release, decline, expire, offer-expire, quarantine-end,
//! reclaim (only when the caller passes the previous image: the audit process does not, so a
//! new client on a former client's address is a commit, after the former holder's expire or
//! release), import, reservation (reserved or unreserved by configuration), reservation-used
//! (a `reservations` address committed to its client), abandon, nak (a refused REQUEST: `ip`
//! and `mac` as above, no lease fields, no client-id), and the appliance's start, stop, reload,
//! role, scrub, pool-alarm (a pool's utilisation alarm raised or cleared).
//!
//! The CIM / ASIM column is a mapping hint for whoever writes the SIEM's parser, from the
//! schemas' published field names (ASIM checked against Microsoft's DHCP schema reference:
//! `SrcIpAddr`, `SrcMacAddr`, `SrcHostname`, `DhcpSrcDHCId`, `DhcpCircuitId`,
//! `DhcpSubscriberId`, `DhcpLeaseDuration`, `DvcHostname`, `EventType`; CIM's `dest_mac` is
//! "the MAC address of the client acquiring an IP address lease", lower case with colons, as
//! `mac` is written here); it is not a claim that a SIEM maps them without a parser.
//!
//! # The SD-ID
//!
//! `lease@32473`: the private form `name@PEN` of RFC 5424 §7.2.2, with the Private Enterprise
//! Number 32473 that RFC 5612 reserves for documentation and examples. prodhcp has no
//! registered PEN; a deployment with its own sets [`rfc5424::Rfc5424::pen`].

pub mod event;
pub mod jsonl;
pub mod process;
pub mod rfc5424;
pub mod spool;
pub mod state;
mod sys;
#[cfg(test)]
mod test_support;
pub mod trail;
pub mod transport;

pub use event::{is_audited, ApplianceEvent, AuditEvent, EventKind, Origin};
pub use transport::{Sender, TargetStatus, TlsSettings};

/// Last second of year 9999 (`9999-12-31T23:59:59Z`): later times are clamped to it.
const MAX_UNIX_SECS: u64 = 253_402_300_799;

/// Year, month, day of the proleptic Gregorian calendar for `days` since 1970-01-01 (H.
/// Hinnant's `civil_from_days`, for non-negative days). Written out because it runs for every
/// audited event, several times: a formatter through a general-purpose date library cost
/// more than the rest of an event's formatting.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// Appends `YYYY-MM-DDTHH:MM:SS` for `secs` (clamped to year 9999) to `out`.
fn push_date_time(secs: u64, out: &mut String) {
    use std::fmt::Write;
    let secs = secs.min(MAX_UNIX_SECS);
    let (y, m, d) = civil_from_days(secs / 86_400);
    let t = secs % 86_400;
    let _ = write!(
        out,
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        t / 3600,
        t / 60 % 60,
        t % 60
    );
}

/// RFC 3339 UTC with milliseconds: `2025-12-02T03:00:00.123Z`. Times past year 9999 (which no
/// clock here produces) are clamped to its end.
pub fn rfc3339_ms(ms: u64) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(24);
    if ms / 1000 > MAX_UNIX_SECS {
        push_date_time(MAX_UNIX_SECS, &mut out);
        out.push_str(".999Z");
        return out;
    }
    push_date_time(ms / 1000, &mut out);
    let _ = write!(out, ".{:03}Z", ms % 1000);
    out
}

/// RFC 3339 UTC in whole seconds: `2025-12-02T04:00:00Z`.
pub fn rfc3339_s(secs: u64) -> String {
    let mut out = String::with_capacity(20);
    push_date_time(secs, &mut out);
    out.push('Z');
    out
}

/// The fields of an event as (RFC 5424 PARAM-NAME, value) in table order, absent ones left out.
pub(crate) fn sd_params(ev: &AuditEvent) -> Vec<(&'static str, String)> {
    let mut p: Vec<(&'static str, String)> = vec![
        ("event", ev.kind.name().to_string()),
        ("seq", ev.seq.to_string()),
        ("time", rfc3339_ms(ev.time_ms)),
        ("server", ev.server.clone()),
        ("node", ev.node.clone()),
    ];
    let mut opt = |name: &'static str, v: Option<String>| {
        if let Some(v) = v {
            p.push((name, v));
        }
    };
    opt("ip", ev.ip.map(|a| a.to_string()));
    opt("mac", ev.mac.clone());
    opt("client-id", ev.client_id.clone());
    opt("hostname", ev.hostname.clone());
    opt("circuit-id", ev.circuit_id.clone());
    opt("remote-id", ev.remote_id.clone());
    opt("subscriber-id", ev.subscriber_id.clone());
    opt("giaddr", ev.giaddr.map(|a| a.to_string()));
    opt("lease-start", ev.lease_start.map(rfc3339_s));
    opt("lease-end", ev.lease_end.map(rfc3339_s));
    opt("lease-seconds", ev.lease_seconds.map(|s| s.to_string()));
    opt("previous-mac", ev.previous_mac.clone());
    opt("previous-client-id", ev.previous_client_id.clone());
    opt("truncated", ev.truncated.clone());
    opt("generation", ev.generation.map(|g| g.to_string()));
    opt("role-from", ev.role_from.clone());
    opt("role-to", ev.role_to.clone());
    opt("cause", ev.cause.clone());
    opt("finding", ev.finding.clone());
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn the_fast_formatter_agrees_with_jiff(ms in 0u64..253_402_300_800_000) {
            let ts = jiff::Timestamp::from_millisecond(ms as i64).unwrap();
            proptest::prop_assert_eq!(
                rfc3339_ms(ms),
                ts.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
            );
            proptest::prop_assert_eq!(
                rfc3339_s(ms / 1000),
                jiff::Timestamp::from_second((ms / 1000) as i64)
                    .unwrap()
                    .strftime("%Y-%m-%dT%H:%M:%SZ")
                    .to_string()
            );
        }
    }

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339_ms(u64::MAX), "9999-12-31T23:59:59.999Z");
        assert_eq!(rfc3339_s(u64::MAX), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339_s(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_ms(1_764_644_400_123), "2025-12-02T03:00:00.123Z");
        assert_eq!(rfc3339_ms(5), "1970-01-01T00:00:00.005Z");
        assert_eq!(rfc3339_s(1_764_648_000), "2025-12-02T04:00:00Z");
    }

    #[test]
    fn param_names_are_short_printable_and_unique() {
        let mut ev = AuditEvent::bare(
            EventKind::Commit,
            &Origin {
                server: "s".into(),
                node: "n".into(),
                seq: 1,
            },
            0,
        );
        ev.ip = Some(std::net::Ipv4Addr::LOCALHOST);
        ev.mac = Some(String::new());
        ev.client_id = Some(String::new());
        ev.hostname = Some(String::new());
        ev.circuit_id = Some(String::new());
        ev.remote_id = Some(String::new());
        ev.subscriber_id = Some(String::new());
        ev.giaddr = Some(std::net::Ipv4Addr::LOCALHOST);
        ev.lease_start = Some(0);
        ev.lease_end = Some(0);
        ev.lease_seconds = Some(0);
        ev.previous_mac = Some(String::new());
        ev.previous_client_id = Some(String::new());
        ev.truncated = Some(String::new());
        ev.generation = Some(0);
        ev.role_from = Some(String::new());
        ev.role_to = Some(String::new());
        ev.cause = Some(String::new());
        ev.finding = Some(String::new());
        let names: Vec<_> = sd_params(&ev).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names.len(), 24);
        let mut uniq = names.clone();
        uniq.sort_unstable();
        uniq.dedup();
        assert_eq!(uniq.len(), names.len());
        for n in names {
            assert!(
                n.len() <= 32
                    && n.bytes()
                        .all(|b| (33..=126).contains(&b) && b != b'=' && b != b']' && b != b'"')
            );
        }
    }
}

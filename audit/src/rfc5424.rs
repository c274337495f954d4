//! RFC 5424 syslog messages of [`AuditEvent`]s, and RFC 6587 octet-counting framing.
//!
//! One message:
//!
//! ```text
//! <PRI>1 TIMESTAMP HOSTNAME prodhcp PROCID MSGID [lease@32473 event="…" seq="…" …] MSG
//! ```
//!
//! - PRI = facility × 8 + severity; facility local0 (16) unless configured; the severity per
//!   event kind is [`severity`].
//! - TIMESTAMP: the event's time, RFC 3339 in UTC with milliseconds.
//! - HOSTNAME: the server name (printable ASCII, else `-`); APP-NAME `prodhcp`; PROCID the
//!   writer's pid (or `-`); MSGID the event name ([`EventKind::name`]).
//! - STRUCTURED-DATA: one element, SD-ID `lease@32473`. 32473 is the IANA Private Enterprise
//!   Number reserved for documentation and examples (RFC 5612); prodhcp has no PEN of its
//!   own, so this is the documented private form `name@PEN`. An operator who registers a PEN
//!   sets it with [`Rfc5424::pen`]. PARAM-NAMEs are the names in the crate's field table (all
//!   ≤ 32 printable ASCII characters); a field without a value is left out. PARAM-VALUEs escape
//!   `"`, `\` and `]` with a backslash (RFC 5424 §6.3.3); control characters (which would break
//!   line-based collectors) are replaced with `?` — the JSON-lines log keeps them.
//! - MSG: a short human summary in ASCII (no BOM: MSG-ANY).

use crate::event::{AuditEvent, EventKind};
use crate::{rfc3339_ms, sd_params};

/// The documentation/example Private Enterprise Number (RFC 5612).
pub const EXAMPLE_PEN: u32 = 32473;

/// Syslog facility `local0`.
pub const LOCAL0: u8 = 16;

/// The severity (RFC 5424 §6.2.1) of an event kind: warning (4) for a decline, an abandoned
/// slot, a scrub finding and a pool alarm; notice (5) for the appliance's start, stop, reload and role
/// changes; informational (6) for the lease transitions.
pub fn severity(kind: EventKind) -> u8 {
    match kind {
        EventKind::Decline | EventKind::Abandon | EventKind::Scrub | EventKind::PoolAlarm => 4,
        EventKind::Start | EventKind::Stop | EventKind::Reload | EventKind::Role => 5,
        _ => 6,
    }
}

/// The header fields that do not come from the event, and the formatter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rfc5424 {
    /// Syslog facility (0–23); [`LOCAL0`] by default.
    pub facility: u8,
    /// Private Enterprise Number of the SD-ID; [`EXAMPLE_PEN`] by default.
    pub pen: u32,
    /// PROCID: the writer's process id, or `None` for `-`.
    pub procid: Option<u32>,
}

impl Default for Rfc5424 {
    fn default() -> Self {
        Rfc5424 {
            facility: LOCAL0,
            pen: EXAMPLE_PEN,
            procid: None,
        }
    }
}

/// The APP-NAME of every message.
pub const APP_NAME: &str = "prodhcp";

/// `s` if it is a valid header field (1..=max printable ASCII, no space), else `-`.
fn header_field(s: &str, max: usize) -> &str {
    if !s.is_empty() && s.len() <= max && s.bytes().all(|b| (33..=126).contains(&b)) {
        s
    } else {
        "-"
    }
}

/// Appends `value` escaped as an RFC 5424 PARAM-VALUE (without the quotes).
pub fn escape_param_value(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '"' | '\\' | ']' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.push('?'),
            c => out.push(c),
        }
    }
}

impl Rfc5424 {
    /// The SD-ID, `lease@<pen>`.
    pub fn sd_id(&self) -> String {
        format!("lease@{}", self.pen)
    }

    /// The PRI value of an event.
    pub fn pri(&self, kind: EventKind) -> u8 {
        self.facility.min(23) * 8 + severity(kind)
    }

    /// Formats one event as an RFC 5424 message (no trailing newline, no framing).
    pub fn format(&self, ev: &AuditEvent) -> String {
        use std::fmt::Write;
        let mut m = String::with_capacity(512);
        let procid = self.procid.map(|p| p.to_string());
        let _ = write!(
            m,
            "<{}>1 {} {} {} {} {} [{}",
            self.pri(ev.kind),
            rfc3339_ms(ev.time_ms),
            header_field(&ev.server, 255),
            APP_NAME,
            header_field(procid.as_deref().unwrap_or("-"), 128),
            ev.kind.name(),
            self.sd_id()
        );
        for (name, value) in sd_params(ev) {
            m.push(' ');
            m.push_str(name);
            m.push_str("=\"");
            escape_param_value(&value, &mut m);
            m.push('"');
        }
        m.push_str("] ");
        m.push_str(&summary(ev));
        m
    }
}

/// A short human line: `commit 198.18.1.4 to 02:00:00:00:ab:01 until 2025-12-02T04:00:00Z`.
fn summary(ev: &AuditEvent) -> String {
    let mut s = ev.kind.name().to_string();
    if let Some(ip) = ev.ip {
        s.push_str(&format!(" {ip}"));
    }
    let who = ev.mac.as_deref().or(ev.client_id.as_deref());
    match ev.kind {
        EventKind::Commit
        | EventKind::Renew
        | EventKind::Rebind
        | EventKind::Reclaim
        | EventKind::Import
        | EventKind::Nak => {
            if let Some(w) = who {
                s.push_str(&format!(" to {w}"));
            }
            if let Some(end) = ev.lease_end {
                s.push_str(&format!(" until {}", crate::rfc3339_s(end)));
            }
            if let Some(prev) = ev
                .previous_mac
                .as_deref()
                .or(ev.previous_client_id.as_deref())
            {
                s.push_str(&format!(" (was {prev})"));
            }
        }
        EventKind::Reload => {
            if let Some(g) = ev.generation {
                s.push_str(&format!(" generation {g}"));
            }
        }
        EventKind::Role => {
            s.push_str(&format!(
                " {} -> {}",
                ev.role_from.as_deref().unwrap_or("?"),
                ev.role_to.as_deref().unwrap_or("?")
            ));
        }
        EventKind::PoolAlarm => {
            s.push_str(&format!(
                " {} {}",
                ev.cause.as_deref().unwrap_or("?"),
                ev.finding.as_deref().unwrap_or("")
            ));
        }
        _ => {
            if let Some(w) = who {
                s.push_str(&format!(" by {w}"));
            }
        }
    }
    // MSG is ASCII: nothing a client chose reaches it except through hex or the formats above.
    s.chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// RFC 6587 §3.4.1 octet-counting framing: `"{len} {msg}"`, len in bytes.
pub fn octet_counted(msg: &str) -> String {
    format!("{} {}", msg.len(), msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{ApplianceEvent, Origin};
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    fn origin(seq: u64) -> Origin {
        Origin {
            server: "dhcp1".into(),
            node: "a".into(),
            seq,
        }
    }

    fn commit() -> AuditEvent {
        let mut ev = AuditEvent::bare(EventKind::Commit, &origin(42), 1_764_644_400_123);
        ev.ip = Some(Ipv4Addr::new(198, 18, 1, 4));
        ev.mac = Some("02:00:00:00:ab:01".into());
        ev.hostname = Some("laptop".into());
        ev.circuit_id = Some("657468302f31".into());
        ev.lease_start = Some(1_764_644_400);
        ev.lease_end = Some(1_764_648_000);
        ev.lease_seconds = Some(3600);
        ev
    }

    #[test]
    fn commit_formats_exactly() {
        let f = Rfc5424 {
            procid: Some(1234),
            ..Rfc5424::default()
        };
        assert_eq!(
            f.format(&commit()),
            "<134>1 2025-12-02T03:00:00.123Z dhcp1 prodhcp 1234 commit [lease@32473 \
             event=\"commit\" seq=\"42\" time=\"2025-12-02T03:00:00.123Z\" server=\"dhcp1\" \
             node=\"a\" ip=\"198.18.1.4\" mac=\"02:00:00:00:ab:01\" hostname=\"laptop\" \
             circuit-id=\"657468302f31\" lease-start=\"2025-12-02T03:00:00Z\" \
             lease-end=\"2025-12-02T04:00:00Z\" lease-seconds=\"3600\"] \
             commit 198.18.1.4 to 02:00:00:00:ab:01 until 2025-12-02T04:00:00Z"
        );
    }

    #[test]
    fn appliance_events_format_exactly() {
        let f = Rfc5424::default();
        let ev = AuditEvent::appliance(&ApplianceEvent::Reload { generation: 7 }, &origin(1), 0);
        assert_eq!(
            f.format(&ev),
            "<133>1 1970-01-01T00:00:00.000Z dhcp1 prodhcp - reload [lease@32473 \
             event=\"reload\" seq=\"1\" time=\"1970-01-01T00:00:00.000Z\" server=\"dhcp1\" \
             node=\"a\" generation=\"7\"] reload generation 7"
        );
        let alarm = ApplianceEvent::PoolAlarm {
            change: "raised".into(),
            detail: "subnet=10.0.0.0/24 pool=10.0.0.10-10.0.0.29 level=critical".into(),
        };
        let ev = AuditEvent::appliance(&alarm, &origin(3), 0);
        assert_eq!(
            f.format(&ev),
            "<132>1 1970-01-01T00:00:00.000Z dhcp1 prodhcp - pool-alarm [lease@32473 \
             event=\"pool-alarm\" seq=\"3\" time=\"1970-01-01T00:00:00.000Z\" server=\"dhcp1\" \
             node=\"a\" cause=\"raised\" \
             finding=\"subnet=10.0.0.0/24 pool=10.0.0.10-10.0.0.29 level=critical\"] \
             pool-alarm raised subnet=10.0.0.0/24 pool=10.0.0.10-10.0.0.29 level=critical"
        );
        let mut ev = AuditEvent::bare(EventKind::Decline, &origin(2), 1000);
        ev.server = "has space".into();
        let f = Rfc5424 {
            facility: 3,
            pen: 99999,
            procid: None,
        };
        assert_eq!(
            f.format(&ev),
            "<28>1 1970-01-01T00:00:01.000Z - prodhcp - decline [lease@99999 \
             event=\"decline\" seq=\"2\" time=\"1970-01-01T00:00:01.000Z\" \
             server=\"has space\" node=\"a\"] decline"
        );
    }

    #[test]
    fn param_values_are_escaped() {
        let mut ev = commit();
        ev.hostname = Some("a\"b\\c]d\ne".into());
        let m = Rfc5424::default().format(&ev);
        assert!(
            m.contains(r#"hostname="a\"b\\c\]d?e""#),
            "escaped hostname missing in {m}"
        );
        let mut out = String::new();
        escape_param_value("]]\"", &mut out);
        assert_eq!(out, r#"\]\]\""#);
    }

    #[test]
    fn octet_counting_counts_bytes() {
        assert_eq!(octet_counted("abc"), "3 abc");
        assert_eq!(octet_counted("é"), "2 é");
    }

    /// A small RFC 5424 parser (ABNF of §6): returns the SD params, or why it refuses.
    /// PRI, MSGID, SD params, MSG.
    type Parsed = (u8, String, Vec<(String, String)>, String);

    fn parse(msg: &str) -> Result<Parsed, String> {
        let b = msg.as_bytes();
        let mut i = 0;
        let err = |what: &str, at: usize| Err(format!("{what} at {at}"));
        if b.first() != Some(&b'<') {
            return err("no <", 0);
        }
        i += 1;
        let s = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == s || i - s > 3 || b.get(i) != Some(&b'>') {
            return err("bad PRI", i);
        }
        let pri: u16 = msg[s..i].parse().map_err(|_| "PRI".to_string())?;
        if pri > 191 {
            return err("PRI > 191", s);
        }
        i += 1;
        if !msg[i..].starts_with("1 ") {
            return err("VERSION", i);
        }
        i += 2;
        let mut header = Vec::new();
        for max in [64usize, 255, 48, 128, 32] {
            let s = i;
            while i < b.len() && b[i] != b' ' {
                if !(33..=126).contains(&b[i]) {
                    return err("non-printable header", i);
                }
                i += 1;
            }
            if i == s || i - s > max || i >= b.len() {
                return err("header field length", s);
            }
            header.push(msg[s..i].to_string());
            i += 1;
        }
        header[0]
            .parse::<jiff::Timestamp>()
            .map_err(|e| format!("TIMESTAMP: {e}"))?;
        let mut params = Vec::new();
        if b.get(i) != Some(&b'[') {
            return err("no SD element", i);
        }
        while b.get(i) == Some(&b'[') {
            i += 1;
            let s = i;
            while i < b.len() && !matches!(b[i], b' ' | b']' | b'=' | b'"') {
                i += 1;
            }
            if i == s || i - s > 32 {
                return err("SD-ID", s);
            }
            loop {
                match b.get(i) {
                    Some(b']') => {
                        i += 1;
                        break;
                    }
                    Some(b' ') => i += 1,
                    _ => return err("SD-PARAM separator", i),
                }
                let s = i;
                while i < b.len() && !matches!(b[i], b' ' | b']' | b'=' | b'"') {
                    if !(33..=126).contains(&b[i]) {
                        return err("PARAM-NAME char", i);
                    }
                    i += 1;
                }
                if i == s || i - s > 32 {
                    return err("PARAM-NAME length", s);
                }
                let name = msg[s..i].to_string();
                if !msg[i..].starts_with("=\"") {
                    return err("=\"", i);
                }
                i += 2;
                let mut value = String::new();
                let mut chars = msg[i..].char_indices();
                loop {
                    let Some((o, c)) = chars.next() else {
                        return err("unterminated PARAM-VALUE", i);
                    };
                    match c {
                        '\\' => match chars.next() {
                            Some((_, e @ ('"' | '\\' | ']'))) => value.push(e),
                            Some((_, e)) => {
                                value.push('\\');
                                value.push(e);
                            }
                            None => return err("trailing backslash", i),
                        },
                        '"' => {
                            i += o + 1;
                            break;
                        }
                        ']' => return err("unescaped ]", i + o),
                        c => value.push(c),
                    }
                }
                params.push((name, value));
            }
        }
        let rest = &msg[i..];
        let text = match rest.strip_prefix(' ') {
            Some(t) => t.to_string(),
            None if rest.is_empty() => String::new(),
            None => return err("no space before MSG", i),
        };
        Ok((pri as u8, header[4].clone(), params, text))
    }

    #[test]
    fn the_test_parser_refuses_broken_messages() {
        let good = Rfc5424::default().format(&commit());
        assert!(parse(&good).is_ok());
        for bad in [
            good.replacen("<134>", "<192>", 1),
            good.replacen(">1 ", ">2 ", 1),
            good.replacen("hostname=\"laptop\"", "hostname=\"lap]top\"", 1),
            good.replacen("hostname=\"laptop\"", "hostname=\"lap\"top\"", 1),
            good.replacen("2025-12-02T03:00:00.123Z", "yesterday", 1),
            good.replacen("lease@32473", "lease@32473-this-sd-id-is-longer-than-32", 1),
            good.replacen("] commit", "]commit", 1),
        ] {
            assert!(parse(&bad).is_err(), "accepted {bad}");
        }
    }

    proptest! {
        #[test]
        fn any_event_formats_to_a_message_the_parser_accepts(ev in crate::test_support::any_event(), pid in proptest::option::of(any::<u32>())) {
            let f = Rfc5424 { procid: pid, ..Rfc5424::default() };
            let m = f.format(&ev);
            let (pri, msgid, params, _text) = parse(&m).map_err(|e| TestCaseError::fail(format!("{e}: {m}")))?;
            prop_assert_eq!(pri, f.pri(ev.kind));
            prop_assert_eq!(msgid, ev.kind.name());
            // Every value survives escaping, except control characters (replaced).
            let clean = |s: &str| s.chars().map(|c| if c.is_control() { '?' } else { c }).collect::<String>();
            let want: Vec<(String, String)> = sd_params(&ev).into_iter().map(|(n, v)| (n.to_string(), clean(&v))).collect();
            prop_assert_eq!(params, want);
            prop_assert!(!m.contains('\n'));
        }
    }
}

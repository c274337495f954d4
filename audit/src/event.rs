//! [`AuditEvent`]: one lease state transition or appliance event, with every field a SIEM maps.
//!
//! A lease event is made from a change-ring record ([`AuditEvent::from_record`]); the appliance's
//! own events (start, stop, reload, role change, scrub finding) from [`AuditEvent::appliance`].

use std::net::Ipv4Addr;

use shm_layout::ring::{ChangeReason, ChangeRecord};
use shm_layout::ring_context::{self, RequestState};
use shm_layout::slot::{KeyKind, LeaseState, SlotImage};

/// What happened: the event's name is the RFC 5424 MSGID and the JSON `event` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// An address was offered (DHCPOFFER).
    Offer,
    /// A new lease was committed (DHCPACK to a new binding).
    Commit,
    /// A lease was extended (DHCPACK to a RENEWING or INIT-REBOOT client's REQUEST for its own
    /// binding; a REBINDING one is [`EventKind::Rebind`]). A record written before the worker
    /// recorded the request state (ring context tag 6) is a renew whatever the state was.
    Renew,
    /// A lease was extended for a REBINDING client (RFC 2131 §4.3.2: `ciaddr`, no server
    /// identifier, broadcast or relayed: its server did not answer its renewals).
    Rebind,
    /// The client released its lease.
    Release,
    /// The client declined the address; it is quarantined.
    Decline,
    /// A lease ran out.
    Expire,
    /// An offer ran out without a request.
    OfferExpire,
    /// A decline quarantine ended.
    QuarantineEnd,
    /// A new lease on an address whose last binding belonged to another client: the previous
    /// holder's identity is in `previous_mac` / `previous_client_id`.
    Reclaim,
    /// A lease was imported by an operator.
    Import,
    /// A slot was reserved or unreserved by configuration.
    Reservation,
    /// A reserved address was committed to its client (a new binding of a `reservations`
    /// address; the audit process knows the configuration's reservations, the ring record
    /// does not). Its renewals are `renew` / `rebind`.
    ReservationUsed,
    /// A slot was taken out of service (damaged).
    Abandon,
    /// A REQUEST was refused (DHCPNAK): `ip` is the address the client asked for, `mac` the
    /// client's; no lease changed.
    Nak,
    /// The appliance started.
    Start,
    /// The appliance stopped.
    Stop,
    /// The configuration was reloaded (`generation`).
    Reload,
    /// The replication role changed (`role_from`, `role_to`, `cause`).
    Role,
    /// The table scrub found something (`finding`).
    Scrub,
    /// A pool's utilisation alarm was raised or cleared (`cause`: `raised` or `cleared`;
    /// `finding`: `subnet=… pool=… level=… utilisation=…% free=… estimate=…s`).
    PoolAlarm,
}

impl EventKind {
    /// All kinds, in declaration order.
    pub const ALL: [EventKind; 21] = [
        EventKind::Offer,
        EventKind::Commit,
        EventKind::Renew,
        EventKind::Rebind,
        EventKind::Release,
        EventKind::Decline,
        EventKind::Expire,
        EventKind::OfferExpire,
        EventKind::QuarantineEnd,
        EventKind::Reclaim,
        EventKind::Import,
        EventKind::Reservation,
        EventKind::ReservationUsed,
        EventKind::Abandon,
        EventKind::Nak,
        EventKind::Start,
        EventKind::Stop,
        EventKind::Reload,
        EventKind::Role,
        EventKind::Scrub,
        EventKind::PoolAlarm,
    ];

    /// Stable lower-case name (RFC 5424 MSGID, JSON `event`).
    pub fn name(self) -> &'static str {
        match self {
            EventKind::Offer => "offer",
            EventKind::Commit => "commit",
            EventKind::Renew => "renew",
            EventKind::Rebind => "rebind",
            EventKind::Release => "release",
            EventKind::Decline => "decline",
            EventKind::Expire => "expire",
            EventKind::OfferExpire => "offer-expire",
            EventKind::QuarantineEnd => "quarantine-end",
            EventKind::Reclaim => "reclaim",
            EventKind::Import => "import",
            EventKind::Reservation => "reservation",
            EventKind::ReservationUsed => "reservation-used",
            EventKind::Abandon => "abandon",
            EventKind::Nak => "nak",
            EventKind::Start => "start",
            EventKind::Stop => "stop",
            EventKind::Reload => "reload",
            EventKind::Role => "role",
            EventKind::Scrub => "scrub",
            EventKind::PoolAlarm => "pool-alarm",
        }
    }

    /// The kind named `name` (the inverse of [`EventKind::name`]).
    pub fn from_name(name: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Whether this is an event about a client's lease (as opposed to the appliance's own).
    pub fn is_lease_event(self) -> bool {
        !matches!(
            self,
            EventKind::Start
                | EventKind::Stop
                | EventKind::Reload
                | EventKind::Role
                | EventKind::Scrub
                | EventKind::PoolAlarm
        )
    }
}

/// Whether a ring record with this reason becomes an audit event.
///
/// `Recovery` (a crashed writer's half-done change rolled back or forward), `Migrate` (a slot
/// carried into a table with another pool layout) and `Replicated` (a standby applying the
/// active's image: the active audits the transition itself, so a standby would only repeat it)
/// are bookkeeping, not client transitions: the writer skips them. A NAK record (`Nak`)
/// changes no slot but is a client transition refused, and is audited ([`EventKind::Nak`]).
pub fn is_audited(reason: ChangeReason) -> bool {
    !matches!(
        reason,
        ChangeReason::Recovery | ChangeReason::Migrate | ChangeReason::Replicated
    )
}

/// An appliance event (not tied to a lease).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplianceEvent {
    /// The appliance started.
    Start,
    /// The appliance stopped.
    Stop,
    /// The configuration was reloaded; its generation number.
    Reload {
        /// Configuration generation now in force.
        generation: u64,
    },
    /// The replication role changed.
    Role {
        /// Role before.
        from: String,
        /// Role after.
        to: String,
        /// Why (e.g. "peer-lost", "operator").
        cause: String,
    },
    /// The table scrub found something.
    Scrub {
        /// What it found, in words.
        finding: String,
    },
    /// A pool's utilisation alarm changed level.
    PoolAlarm {
        /// `raised` or `cleared`.
        change: String,
        /// The pool, its level, utilisation, free count and estimate, as `key=value` words.
        detail: String,
    },
}

/// Where and when: the fields every event carries that the caller knows, not the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The server's host name.
    pub server: String,
    /// The appliance's node name in its cluster.
    pub node: String,
    /// The per-appliance audit sequence number (survives restarts; a gap is a loss).
    pub seq: u64,
}

/// One audit event: every field is optional except the kind, sequence, time, server and node.
///
/// Times are Unix times: `time_ms` in milliseconds, the lease bounds in seconds (the slot's
/// resolution). The byte identifiers (`client_id`, `circuit_id`, `remote_id`, …) are lower-case
/// hex without separators, so they survive any bytes a client sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// What happened.
    pub kind: EventKind,
    /// Per-appliance sequence number.
    pub seq: u64,
    /// Unix time of the event in milliseconds (the ring record's `time_ms`).
    pub time_ms: u64,
    /// The server's host name.
    pub server: String,
    /// The appliance's node name.
    pub node: String,
    /// The leased address.
    pub ip: Option<Ipv4Addr>,
    /// The client's hardware address, `aa:bb:cc:dd:ee:ff` (any length, colon-separated).
    pub mac: Option<String>,
    /// The client identifier (option 61), hex; for a long one only its 128-bit hash is stored
    /// in the table, and this is then `hash:` followed by the hash in hex.
    pub client_id: Option<String>,
    /// The client's host name (option 12), lossily decoded as UTF-8.
    pub hostname: Option<String>,
    /// Option 82 sub-option 1 (circuit-id), hex.
    pub circuit_id: Option<String>,
    /// Option 82 sub-option 2 (remote-id), hex.
    pub remote_id: Option<String>,
    /// Option 82 sub-option 6 (subscriber-id, RFC 3993), hex.
    pub subscriber_id: Option<String>,
    /// The relay agent's address (giaddr); `None` when the request was not relayed.
    pub giaddr: Option<Ipv4Addr>,
    /// Unix seconds the lease (or this extension of it) started.
    pub lease_start: Option<u64>,
    /// Unix seconds the lease ends (or ended).
    pub lease_end: Option<u64>,
    /// `lease_end - lease_start`.
    pub lease_seconds: Option<u64>,
    /// For [`EventKind::Reclaim`]: the previous holder's hardware address.
    pub previous_mac: Option<String>,
    /// For [`EventKind::Reclaim`]: the previous holder's client identifier.
    pub previous_client_id: Option<String>,
    /// Names of the fields whose value is only a prefix (the ring record had no room for all),
    /// comma-separated: e.g. `circuit-id,hostname`.
    pub truncated: Option<String>,
    /// [`EventKind::Reload`]: the configuration generation.
    pub generation: Option<u64>,
    /// [`EventKind::Role`]: role before.
    pub role_from: Option<String>,
    /// [`EventKind::Role`]: role after.
    pub role_to: Option<String>,
    /// [`EventKind::Role`]: why.
    pub cause: Option<String>,
    /// [`EventKind::Scrub`]: what was found.
    pub finding: Option<String>,
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// `aa:bb:cc` form of a hardware address.
fn mac_string(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The client identifier of a slot image, as [`AuditEvent::client_id`] shows it.
fn client_id_of(img: &SlotImage) -> Option<String> {
    match img.key.kind() {
        KeyKind::ClientId => Some(hex(img.key.as_bytes())),
        KeyKind::ClientIdHash => Some(format!("hash:{}", hex(img.key.as_bytes()))),
        KeyKind::None | KeyKind::HwAddr => None,
    }
}

/// The hardware address of a slot image, if it has one.
fn mac_of(img: &SlotImage) -> Option<String> {
    (img.hlen > 0).then(|| mac_string(img.hwaddr()))
}

impl AuditEvent {
    /// An event with only the fields every event has.
    pub fn bare(kind: EventKind, origin: &Origin, time_ms: u64) -> AuditEvent {
        AuditEvent {
            kind,
            seq: origin.seq,
            time_ms,
            server: origin.server.clone(),
            node: origin.node.clone(),
            ip: None,
            mac: None,
            client_id: None,
            hostname: None,
            circuit_id: None,
            remote_id: None,
            subscriber_id: None,
            giaddr: None,
            lease_start: None,
            lease_end: None,
            lease_seconds: None,
            previous_mac: None,
            previous_client_id: None,
            truncated: None,
            generation: None,
            role_from: None,
            role_to: None,
            cause: None,
            finding: None,
        }
    }

    /// The audit event of a change-ring record, or `None` if the reason is not audited
    /// ([`is_audited`]).
    ///
    /// `ip` is the slot's address (`Table::addr_of_slot(rec.slot)`; `None` when the record
    /// names no slot, [`shm_layout::NO_SLOT`]): the record has only the slot index. A NAK
    /// record ([`EventKind::Nak`]) carries its own: `ip` is then the requested address and
    /// `mac` the client's, both from the record's context (ring context tags 8 and 7), never
    /// from its image, which is the slot's as it was (often another client's); a NAK event has
    /// no client-id and no lease times. A Renew record whose context says the client was
    /// REBINDING (tag 6) is [`EventKind::Rebind`]; one of an INIT-REBOOT or RENEWING client, or
    /// without the tag, stays [`EventKind::Renew`]. The request state itself is not an output
    /// field. `previous` is the slot's image from the last audited record before this one
    /// that was not an offer or offer expiry (the slot's last binding), if the caller knows it:
    /// a commit whose previous binding had another client is reported as
    /// [`EventKind::Reclaim`]; without `previous` it stays a commit.
    ///
    /// The record's context carries the relay agent's circuit-id, remote-id and subscriber-id,
    /// the giaddr and the client's host name (the variable ones possibly truncated, then named
    /// in `truncated`). A context the decoder cannot frame is ignored (the lease fields still
    /// come from the image; a NAK then has no ip nor mac).
    pub fn from_record(
        rec: &ChangeRecord,
        previous: Option<&SlotImage>,
        ip: Option<Ipv4Addr>,
        origin: &Origin,
    ) -> Option<AuditEvent> {
        if !is_audited(rec.reason) {
            return None;
        }
        let img = &rec.image;
        let fields = ring_context::decode(&rec.context).unwrap_or_default();
        let field = |tag: u8| fields.iter().find(|f| f.tag == tag).map(|f| f.value);
        let mut kind = match rec.reason {
            ChangeReason::Offer => EventKind::Offer,
            ChangeReason::Commit => EventKind::Commit,
            ChangeReason::Renew => {
                match field(ring_context::TAG_REQUEST_STATE).and_then(RequestState::from_value) {
                    Some(RequestState::Rebinding) => EventKind::Rebind,
                    _ => EventKind::Renew,
                }
            }
            ChangeReason::Nak => {
                let mut ev = AuditEvent::bare(EventKind::Nak, origin, rec.time_ms);
                ev.ip = field(ring_context::TAG_REQUESTED_IP)
                    .and_then(|v| <[u8; 4]>::try_from(v).ok())
                    .map(Ipv4Addr::from);
                ev.mac = field(ring_context::TAG_CLIENT_HWADDR)
                    .filter(|h| !h.is_empty())
                    .map(mac_string);
                ev.apply_context(&rec.context);
                return Some(ev);
            }
            ChangeReason::Release => EventKind::Release,
            ChangeReason::Decline => EventKind::Decline,
            ChangeReason::Expire => EventKind::Expire,
            ChangeReason::OfferExpire => EventKind::OfferExpire,
            ChangeReason::QuarantineEnd => EventKind::QuarantineEnd,
            ChangeReason::Import => EventKind::Import,
            ChangeReason::Reservation => EventKind::Reservation,
            ChangeReason::Abandon => EventKind::Abandon,
            ChangeReason::Recovery | ChangeReason::Migrate | ChangeReason::Replicated => {
                return None
            }
        };
        let mut ev = AuditEvent::bare(kind, origin, rec.time_ms);
        ev.ip = ip;
        ev.mac = mac_of(img);
        ev.client_id = client_id_of(img);
        if kind == EventKind::Commit {
            if let Some(prev) = previous {
                if !prev.key.is_none() && prev.key != img.key {
                    kind = EventKind::Reclaim;
                    ev.kind = kind;
                    ev.previous_mac = mac_of(prev);
                    ev.previous_client_id = client_id_of(prev);
                }
            }
        }
        let now_s = rec.time_ms / 1000;
        match kind {
            EventKind::Offer
            | EventKind::Commit
            | EventKind::Renew
            | EventKind::Rebind
            | EventKind::Reclaim
            | EventKind::ReservationUsed
            | EventKind::Import
                if img.expires != 0 =>
            {
                // `updated` is the slot's own clock for the change (seconds); fall back to the
                // record's time if it is unset.
                let start = if img.updated != 0 {
                    u64::from(img.updated)
                } else {
                    now_s
                };
                let end = u64::from(img.expires);
                ev.lease_start = Some(start);
                ev.lease_end = Some(end);
                ev.lease_seconds = Some(end.saturating_sub(start));
            }
            EventKind::Release | EventKind::Expire => {
                ev.lease_end = Some(if kind == EventKind::Expire && img.expires != 0 {
                    u64::from(img.expires)
                } else {
                    now_s
                });
            }
            _ => {}
        }
        ev.apply_context(&rec.context);
        Some(ev)
    }

    /// Fills circuit-id, remote-id, hostname, giaddr, subscriber-id and `truncated` from a
    /// record's context bytes (the request state, the NAK's hardware address and requested
    /// address are read by [`AuditEvent::from_record`] itself).
    fn apply_context(&mut self, ctx: &[u8]) {
        // A context that is not well framed (a bug or damage) adds nothing.
        let fields: Vec<(u8, &[u8], bool)> = ring_context::decode(ctx)
            .unwrap_or_default()
            .into_iter()
            .map(|f| (f.tag, f.value, f.truncated))
            .collect();
        let mut truncated = Vec::new();
        for (tag, value, cut) in fields {
            let name = match tag {
                ring_context::TAG_CIRCUIT_ID => {
                    self.circuit_id = Some(hex(value));
                    "circuit-id"
                }
                ring_context::TAG_REMOTE_ID => {
                    self.remote_id = Some(hex(value));
                    "remote-id"
                }
                ring_context::TAG_HOSTNAME => {
                    self.hostname = Some(String::from_utf8_lossy(value).into_owned());
                    "hostname"
                }
                ring_context::TAG_GIADDR => {
                    // Always 4 bytes when written by ring_context; anything else is ignored.
                    let Ok(octets) = <[u8; 4]>::try_from(value) else {
                        continue;
                    };
                    self.giaddr = Some(Ipv4Addr::from(octets));
                    "giaddr"
                }
                ring_context::TAG_SUBSCRIBER_ID => {
                    self.subscriber_id = Some(hex(value));
                    "subscriber-id"
                }
                _ => continue,
            };
            if cut {
                truncated.push(name);
            }
        }
        if !truncated.is_empty() {
            self.truncated = Some(truncated.join(","));
        }
    }

    /// An appliance event at `time_ms`.
    pub fn appliance(event: &ApplianceEvent, origin: &Origin, time_ms: u64) -> AuditEvent {
        let kind = match event {
            ApplianceEvent::Start => EventKind::Start,
            ApplianceEvent::Stop => EventKind::Stop,
            ApplianceEvent::Reload { .. } => EventKind::Reload,
            ApplianceEvent::Role { .. } => EventKind::Role,
            ApplianceEvent::Scrub { .. } => EventKind::Scrub,
            ApplianceEvent::PoolAlarm { .. } => EventKind::PoolAlarm,
        };
        let mut ev = AuditEvent::bare(kind, origin, time_ms);
        match event {
            ApplianceEvent::Start | ApplianceEvent::Stop => {}
            ApplianceEvent::Reload { generation } => ev.generation = Some(*generation),
            ApplianceEvent::Role { from, to, cause } => {
                ev.role_from = Some(from.clone());
                ev.role_to = Some(to.clone());
                ev.cause = Some(cause.clone());
            }
            ApplianceEvent::Scrub { finding } => ev.finding = Some(finding.clone()),
            ApplianceEvent::PoolAlarm { change, detail } => {
                ev.cause = Some(change.clone());
                ev.finding = Some(detail.clone());
            }
        }
        ev
    }

    /// The state a lease event leaves the address in, for readers that want it (`None` for an
    /// appliance event, and for a NAK, which changes no address).
    pub fn resulting_state(&self) -> Option<LeaseState> {
        Some(match self.kind {
            EventKind::Offer => LeaseState::Offered,
            EventKind::Commit
            | EventKind::Renew
            | EventKind::Rebind
            | EventKind::Reclaim
            | EventKind::ReservationUsed
            | EventKind::Import => LeaseState::Leased,
            EventKind::Release => LeaseState::Released,
            EventKind::Decline => LeaseState::Declined,
            EventKind::Expire => LeaseState::Expired,
            EventKind::OfferExpire | EventKind::QuarantineEnd => LeaseState::Free,
            EventKind::Reservation => LeaseState::Reserved,
            EventKind::Abandon => LeaseState::Abandoned,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shm_layout::ring::CONTEXT_BYTES;
    use shm_layout::ring_context::ContextFields;
    use shm_layout::slot::ClientKey;

    pub(crate) fn origin(seq: u64) -> Origin {
        Origin {
            server: "dhcp1.example.net".into(),
            node: "a".into(),
            seq,
        }
    }

    fn image(mac: [u8; 6], state: LeaseState, updated: u32, expires: u32) -> SlotImage {
        let mut img = SlotImage::PRISTINE;
        img.version = 3;
        img.state = state;
        img.updated = updated;
        img.expires = expires;
        img.set_hwaddr(1, &mac);
        img.key = ClientKey::from_hwaddr(1, &mac);
        img
    }

    fn record(reason: ChangeReason, image: SlotImage, context: Vec<u8>) -> ChangeRecord {
        ChangeRecord {
            seq: 9,
            slot: 4,
            reason,
            owner: 1,
            time_ms: 1_764_644_400_123,
            epoch: 1,
            image,
            context,
        }
    }

    const MAC: [u8; 6] = [0x02, 0, 0, 0, 0xab, 0x01];
    const IP: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 4);

    #[test]
    fn commit_carries_lease_bounds_and_the_worker_context() {
        let mut buf = [0u8; CONTEXT_BYTES];
        let n = shm_layout::ring_context::encode(
            &ContextFields {
                circuit_id: Some(b"eth0/1"),
                remote_id: Some(&[0xde, 0xad]),
                hostname: Some(b"laptop"),
                giaddr: None,
                subscriber_id: None,
                ..ContextFields::default()
            },
            &mut buf,
        );
        let img = image(MAC, LeaseState::Leased, 1_764_644_400, 1_764_648_000);
        let rec = record(ChangeReason::Commit, img, buf[..n].to_vec());
        let ev = AuditEvent::from_record(&rec, None, Some(IP), &origin(77)).expect("audited");
        assert_eq!(ev.kind, EventKind::Commit);
        assert_eq!(ev.seq, 77);
        assert_eq!(ev.time_ms, 1_764_644_400_123);
        assert_eq!(ev.ip, Some(IP));
        assert_eq!(ev.mac.as_deref(), Some("02:00:00:00:ab:01"));
        assert_eq!(ev.client_id, None);
        assert_eq!(ev.circuit_id.as_deref(), Some("657468302f31"));
        assert_eq!(ev.remote_id.as_deref(), Some("dead"));
        assert_eq!(ev.hostname.as_deref(), Some("laptop"));
        assert_eq!(ev.truncated, None);
        assert_eq!(ev.subscriber_id, None);
        assert_eq!(ev.giaddr, None);
        assert_eq!(ev.lease_start, Some(1_764_644_400));
        assert_eq!(ev.lease_end, Some(1_764_648_000));
        assert_eq!(ev.lease_seconds, Some(3600));
    }

    #[test]
    fn truncated_context_fields_are_named() {
        let mut buf = [0u8; CONTEXT_BYTES];
        let long = vec![b'x'; 255];
        let n = shm_layout::ring_context::encode(
            &ContextFields {
                circuit_id: Some(&long),
                hostname: Some(&long),
                ..ContextFields::default()
            },
            &mut buf,
        );
        let img = image(MAC, LeaseState::Leased, 1, 2);
        let rec = record(ChangeReason::Renew, img, buf[..n].to_vec());
        let ev = AuditEvent::from_record(&rec, None, Some(IP), &origin(1)).expect("audited");
        assert_eq!(ev.truncated.as_deref(), Some("circuit-id,hostname"));
        assert!(ev.hostname.as_deref().is_some_and(|h| h.len() < 255));
    }

    #[test]
    fn relayed_context_carries_giaddr_and_subscriber_id() {
        let mut buf = [0u8; CONTEXT_BYTES];
        let long = vec![b'x'; 255];
        let n = shm_layout::ring_context::encode(
            &ContextFields {
                circuit_id: Some(b"eth0/1"),
                remote_id: Some(&long),
                hostname: Some(&long),
                giaddr: Some(Ipv4Addr::new(198, 18, 9, 1)),
                subscriber_id: Some(b"sub-42"),
                ..ContextFields::default()
            },
            &mut buf,
        );
        let img = image(MAC, LeaseState::Leased, 1_764_644_400, 1_764_648_000);
        let rec = record(ChangeReason::Commit, img, buf[..n].to_vec());
        let ev = AuditEvent::from_record(&rec, None, Some(IP), &origin(5)).expect("audited");
        assert_eq!(ev.giaddr, Some(Ipv4Addr::new(198, 18, 9, 1)));
        assert_eq!(ev.subscriber_id.as_deref(), Some("7375622d3432"));
        assert_eq!(ev.circuit_id.as_deref(), Some("657468302f31"));
        assert_eq!(ev.truncated.as_deref(), Some("remote-id,hostname"));
        // The JSON-lines form carries them.
        let line = crate::jsonl::to_line(&ev);
        assert!(line.contains(r#""giaddr":"198.18.9.1""#), "{line}");
        assert!(line.contains(r#""subscriber_id":"7375622d3432""#), "{line}");
    }

    #[test]
    fn broken_context_is_ignored_not_a_panic() {
        let img = image(MAC, LeaseState::Leased, 1, 2);
        let rec = record(ChangeReason::Commit, img, vec![1, 9, b'a']);
        let ev = AuditEvent::from_record(&rec, None, Some(IP), &origin(1)).expect("audited");
        assert_eq!(ev.circuit_id, None);
        assert_eq!(ev.mac.as_deref(), Some("02:00:00:00:ab:01"));
    }

    #[test]
    fn commit_over_another_clients_binding_is_a_reclaim() {
        let other = [0x02, 0, 0, 0, 0xab, 0x02];
        let prev = image(other, LeaseState::Expired, 1000, 2000);
        let img = image(MAC, LeaseState::Leased, 3000, 6600);
        let rec = record(ChangeReason::Commit, img, vec![]);
        let ev = AuditEvent::from_record(&rec, Some(&prev), Some(IP), &origin(1)).expect("audited");
        assert_eq!(ev.kind, EventKind::Reclaim);
        assert_eq!(ev.previous_mac.as_deref(), Some("02:00:00:00:ab:02"));
        assert_eq!(ev.mac.as_deref(), Some("02:00:00:00:ab:01"));
        // The same client's old binding, or a pristine slot, is a plain commit.
        let same = image(MAC, LeaseState::Released, 1000, 2000);
        let ev = AuditEvent::from_record(&rec, Some(&same), Some(IP), &origin(1)).expect("audited");
        assert_eq!(ev.kind, EventKind::Commit);
        let ev = AuditEvent::from_record(&rec, Some(&SlotImage::PRISTINE), Some(IP), &origin(1))
            .expect("audited");
        assert_eq!(ev.kind, EventKind::Commit);
    }

    #[test]
    fn client_id_keys_are_hex_and_long_ones_are_marked_hashes() {
        let mut img = image(MAC, LeaseState::Leased, 1, 2);
        img.key = ClientKey::from_client_id(&[1, 2, 3]);
        let rec = record(ChangeReason::Commit, img, vec![]);
        let ev = AuditEvent::from_record(&rec, None, Some(IP), &origin(1)).expect("audited");
        assert_eq!(ev.client_id.as_deref(), Some("010203"));
        img.key = ClientKey::from_client_id(&[7u8; 40]);
        let rec = record(ChangeReason::Commit, img, vec![]);
        let ev = AuditEvent::from_record(&rec, None, Some(IP), &origin(1)).expect("audited");
        assert!(ev
            .client_id
            .as_deref()
            .is_some_and(|c| c.starts_with("hash:")));
    }

    #[test]
    fn bookkeeping_reasons_are_not_audited() {
        let img = image(MAC, LeaseState::Leased, 1, 2);
        for reason in [
            ChangeReason::Recovery,
            ChangeReason::Migrate,
            ChangeReason::Replicated,
        ] {
            assert!(!is_audited(reason));
            let rec = record(reason, img, vec![]);
            assert_eq!(
                AuditEvent::from_record(&rec, None, Some(IP), &origin(1)),
                None
            );
        }
        assert!(is_audited(ChangeReason::Commit));
        assert!(is_audited(ChangeReason::Nak));
    }

    /// A context as the worker writes it for a REQUEST.
    fn request_context(fields: ContextFields<'_>) -> Vec<u8> {
        let mut buf = [0u8; CONTEXT_BYTES];
        let n = shm_layout::ring_context::encode(&fields, &mut buf);
        buf[..n].to_vec()
    }

    #[test]
    fn a_nak_names_the_asked_address_and_the_refused_client_not_the_slots_holder() {
        const ASKED: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 9);
        let client = [0x02, 0, 0, 0, 0xcd, 0x07];
        let ctx = request_context(ContextFields {
            circuit_id: Some(b"eth0/1"),
            giaddr: Some(Ipv4Addr::new(198, 18, 9, 1)),
            request_state: Some(RequestState::InitReboot),
            client_hwaddr: Some(&client),
            requested_ip: Some(ASKED),
            ..ContextFields::default()
        });
        // The slot's image is another client's live lease (MAC), unchanged by the NAK.
        let mut holder = image(MAC, LeaseState::Leased, 1_764_644_400, 1_764_648_000);
        holder.key = ClientKey::from_client_id(&[9, 9]);
        let rec = record(ChangeReason::Nak, holder, ctx.clone());
        let ev = AuditEvent::from_record(&rec, Some(&holder), Some(IP), &origin(3)).expect("nak");
        assert_eq!(ev.kind, EventKind::Nak);
        assert_eq!(ev.kind.name(), "nak");
        assert_eq!(ev.ip, Some(ASKED), "the address asked for, from the record");
        assert_eq!(
            ev.mac.as_deref(),
            Some("02:00:00:00:cd:07"),
            "the refused client"
        );
        assert_eq!(ev.client_id, None, "nothing of the holder's");
        assert_eq!(ev.previous_mac, None);
        assert_eq!(
            (ev.lease_start, ev.lease_end, ev.lease_seconds),
            (None, None, None)
        );
        assert_eq!(ev.circuit_id.as_deref(), Some("657468302f31"));
        assert_eq!(ev.giaddr, Some(Ipv4Addr::new(198, 18, 9, 1)));
        assert_eq!(ev.resulting_state(), None, "a NAK changes no address");
        // No slot (an address outside the table), so no slot address either: the same event.
        let rec = ChangeRecord {
            slot: shm_layout::ring::NO_SLOT,
            ..record(ChangeReason::Nak, SlotImage::PRISTINE, ctx)
        };
        let ev2 = AuditEvent::from_record(&rec, None, None, &origin(3)).expect("nak");
        assert_eq!(ev2, ev);
        let line = crate::jsonl::to_line(&ev);
        assert!(line.starts_with(r#"{"event":"nak""#), "{line}");
        assert!(
            line.contains(r#""ip":"198.18.1.9","mac":"02:00:00:00:cd:07""#),
            "{line}"
        );
        assert_eq!(
            crate::jsonl::from_line(&line).ok().map(|e| e.kind),
            Some(EventKind::Nak)
        );
        // A NAK record whose context cannot be framed has neither (never a panic).
        let rec = record(ChangeReason::Nak, holder, vec![8, 9, 1]);
        let ev = AuditEvent::from_record(&rec, None, Some(IP), &origin(4)).expect("nak");
        assert_eq!((ev.ip, ev.mac), (None, None));
    }

    #[test]
    fn a_rebinding_clients_renewal_is_a_rebind_and_init_reboot_stays_a_renew() {
        let img = image(MAC, LeaseState::Leased, 1_764_644_400, 1_764_648_000);
        let ev_in = |state: Option<RequestState>| {
            let ctx = request_context(ContextFields {
                hostname: Some(b"laptop"),
                request_state: state,
                ..ContextFields::default()
            });
            let rec = record(ChangeReason::Renew, img, ctx);
            AuditEvent::from_record(&rec, None, Some(IP), &origin(8)).expect("audited")
        };
        let renew = ev_in(None);
        assert_eq!(renew.kind, EventKind::Renew);
        let rebind = ev_in(Some(RequestState::Rebinding));
        assert_eq!(rebind.kind, EventKind::Rebind);
        assert_eq!(rebind.kind.name(), "rebind");
        // Nothing else differs: the same lease fields, and the state is no output field.
        assert_eq!(
            AuditEvent {
                kind: EventKind::Renew,
                ..rebind.clone()
            },
            renew
        );
        assert_eq!(rebind.lease_seconds, Some(3600));
        assert_eq!(rebind.resulting_state(), Some(LeaseState::Leased));
        for state in [
            RequestState::Renewing,
            RequestState::InitReboot,
            RequestState::Selecting,
        ] {
            assert_eq!(ev_in(Some(state)), renew, "{state:?} is a renew");
        }
        // A Commit of a rebinding client (a lease it did not hold here) stays a commit.
        let ctx = request_context(ContextFields {
            request_state: Some(RequestState::Rebinding),
            ..ContextFields::default()
        });
        let rec = record(ChangeReason::Commit, img, ctx);
        let ev = AuditEvent::from_record(&rec, None, Some(IP), &origin(9)).expect("audited");
        assert_eq!(ev.kind, EventKind::Commit);
        let line = crate::jsonl::to_line(&rebind);
        assert!(line.starts_with(r#"{"event":"rebind""#), "{line}");
    }

    #[test]
    fn release_ends_at_its_time_and_appliance_events_carry_their_fields() {
        let img = image(MAC, LeaseState::Released, 1_764_644_400, 1_764_648_000);
        let rec = record(ChangeReason::Release, img, vec![]);
        let ev = AuditEvent::from_record(&rec, None, Some(IP), &origin(1)).expect("audited");
        assert_eq!(ev.lease_end, Some(1_764_644_400));
        let ev = AuditEvent::appliance(
            &ApplianceEvent::Role {
                from: "standby".into(),
                to: "active".into(),
                cause: "peer-lost".into(),
            },
            &origin(5),
            10,
        );
        assert_eq!(ev.kind, EventKind::Role);
        assert_eq!(ev.role_to.as_deref(), Some("active"));
        assert!(!ev.kind.is_lease_event());
        for k in EventKind::ALL {
            assert_eq!(EventKind::from_name(k.name()), Some(k));
        }
    }
}

//! The context bytes of a change-ring record written by the worker's engine: who asked, as the
//! relay agent and the client named it. Here, beside the record, because the worker writes
//! them and the audit writer (and any ring consumer) reads them.
//!
//! Format (at most [`CONTEXT_BYTES`] bytes, so the ring never cuts it): a
//! sequence of fields, each `tag · len · len bytes`, in tag order.
//!
//! | tag (low 7 bits) | field                                             |
//! |------------------|---------------------------------------------------|
//! | 1                | option 82 sub-option 1, circuit-id                |
//! | 2                | option 82 sub-option 2, remote-id                 |
//! | 3                | option 12, host name                              |
//! | 4                | giaddr, 4 bytes, only when relayed (≠ 0.0.0.0)    |
//! | 5                | option 82 sub-option 6, subscriber-id (RFC 3993)  |
//! | 6                | request state, 1 byte ([`RequestState`]), REQUESTs |
//! | 7                | client hardware address, ≤ 16 bytes, NAK records  |
//! | 8                | requested address, 4 bytes, NAK records           |
//!
//! Tag 6 is written in the records of a DHCPREQUEST (the worker's Commit and Renew records, and
//! its NAK records): the client's RFC 2131 §4.3.2 state as the worker classified it. Tags 7 and
//! 8 are written in every NAK record ([`crate::ChangeReason::Nak`]): a NAK changes no slot, the
//! record's image is the slot's image as it was (often another client's) or empty, so the
//! client and the address it asked for are carried here, always, whatever the image holds.
//!
//! Bit 7 of the tag ([`TRUNCATED`]) says the value is a prefix of a longer one: the variable
//! values may together be up to 1020 bytes, the record has room for fewer. Absent fields are
//! not written. Every field is whole: a reader never sees a length that runs past the context.
//!
//! Room allocation: the fixed fields come first — giaddr (6 bytes: tag, len, 4 bytes), the
//! request state (3), the client's hardware address (at most 18) and the requested address (6),
//! at most 33 bytes together, are taken before anything else, so they are never truncated nor
//! left out (a hardware address longer than 16 bytes, which no DHCP packet carries, is cut to
//! 16 and marked). The remaining room is shared by the variable fields (1, 2, 3, 5): when values
//! must be cut, each first gets an equal share and what a short one leaves is given to the
//! others in tag order.

use std::net::Ipv4Addr;

use crate::ring::CONTEXT_BYTES;

/// Tag bit: the value was truncated to fit.
pub const TRUNCATED: u8 = 0x80;
/// Tag of the relay agent circuit-id.
pub const TAG_CIRCUIT_ID: u8 = 1;
/// Tag of the relay agent remote-id.
pub const TAG_REMOTE_ID: u8 = 2;
/// Tag of the client's host name.
pub const TAG_HOSTNAME: u8 = 3;
/// Tag of the relay agent address (giaddr), 4 bytes in network order.
pub const TAG_GIADDR: u8 = 4;
/// Tag of the relay agent subscriber-id (option 82 sub-option 6).
pub const TAG_SUBSCRIBER_ID: u8 = 5;
/// Tag of the request state ([`RequestState`], one byte).
pub const TAG_REQUEST_STATE: u8 = 6;
/// Tag of the client's hardware address (NAK records).
pub const TAG_CLIENT_HWADDR: u8 = 7;
/// Tag of the address the client asked for, 4 bytes in network order (NAK records).
pub const TAG_REQUESTED_IP: u8 = 8;
/// Longest hardware address written whole (the size of BOOTP's `chaddr`).
pub const MAX_HWADDR: usize = 16;

/// The client's state when it sent a DHCPREQUEST (RFC 2131 §4.3.2), as the worker tells it from
/// the packet: option 54 (server identifier), option 50 (requested address), `ciaddr`, and how
/// the packet arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RequestState {
    /// SELECTING: option 54 and option 50, `ciaddr` 0 (the answer to an offer).
    Selecting = 1,
    /// INIT-REBOOT: option 50 without option 54, `ciaddr` 0 (a client verifying its address
    /// after a restart).
    InitReboot = 2,
    /// RENEWING: `ciaddr` set, no option 54, unicast from the client itself (not relayed).
    Renewing = 3,
    /// REBINDING: `ciaddr` set, no option 54, broadcast (or relayed: a relay agent forwards
    /// only broadcasts, and a unicast renewal reaches the server without one).
    Rebinding = 4,
}

impl RequestState {
    /// Decodes the state byte.
    pub fn from_u8(v: u8) -> Option<RequestState> {
        match v {
            1 => Some(RequestState::Selecting),
            2 => Some(RequestState::InitReboot),
            3 => Some(RequestState::Renewing),
            4 => Some(RequestState::Rebinding),
            _ => None,
        }
    }

    /// The state of a decoded tag-6 field value (`None` unless exactly one known byte).
    pub fn from_value(value: &[u8]) -> Option<RequestState> {
        match value {
            [b] => RequestState::from_u8(*b),
            _ => None,
        }
    }
}

/// The request's identifying fields to record; `None` = absent (not written).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ContextFields<'a> {
    /// Option 82 sub-option 1.
    pub circuit_id: Option<&'a [u8]>,
    /// Option 82 sub-option 2.
    pub remote_id: Option<&'a [u8]>,
    /// Option 12.
    pub hostname: Option<&'a [u8]>,
    /// The relay agent's address; `None` (or 0.0.0.0, treated alike) when not relayed.
    pub giaddr: Option<Ipv4Addr>,
    /// Option 82 sub-option 6.
    pub subscriber_id: Option<&'a [u8]>,
    /// The client's RFC 2131 §4.3.2 state (REQUESTs).
    pub request_state: Option<RequestState>,
    /// The client's hardware address (NAK records; at most [`MAX_HWADDR`] bytes kept).
    pub client_hwaddr: Option<&'a [u8]>,
    /// The address the client asked for (NAK records).
    pub requested_ip: Option<Ipv4Addr>,
}

/// Encodes the fields into `buf`; returns the length used (≤ [`CONTEXT_BYTES`]).
pub fn encode(fields: &ContextFields<'_>, buf: &mut [u8; CONTEXT_BYTES]) -> usize {
    let giaddr = fields.giaddr.filter(|a| !a.is_unspecified());
    let hwaddr = fields.client_hwaddr.map(|h| &h[..h.len().min(MAX_HWADDR)]);
    // The fixed fields' room is reserved first: they are never cut (at most 33 bytes).
    let reserved = giaddr.map_or(0, |_| 2 + 4)
        + fields.request_state.map_or(0, |_| 2 + 1)
        + hwaddr.map_or(0, |h| 2 + h.len())
        + fields.requested_ip.map_or(0, |_| 2 + 4);
    let variable = [
        (TAG_CIRCUIT_ID, fields.circuit_id),
        (TAG_REMOTE_ID, fields.remote_id),
        (TAG_HOSTNAME, fields.hostname),
        (TAG_SUBSCRIBER_ID, fields.subscriber_id),
    ];
    let present = variable.iter().filter(|(_, v)| v.is_some()).count();
    let mut take = [0usize; 4];
    let want = variable.map(|(_, v)| v.map_or(0, |v| v.len().min(255)));
    if present > 0 {
        let room = CONTEXT_BYTES - reserved - 2 * present;
        // Values longer than 255 cannot be framed with a one-byte length anyway.
        let share = room / present;
        take = want.map(|w| w.min(share));
        let mut left = room - take.iter().sum::<usize>();
        for (t, w) in take.iter_mut().zip(want) {
            let more = (w - *t).min(left);
            *t += more;
            left -= more;
        }
    }
    let mut n = 0;
    let mut put = |buf: &mut [u8; CONTEXT_BYTES], tag: u8, value: &[u8], truncated: bool| {
        buf[n] = tag | if truncated { TRUNCATED } else { 0 };
        buf[n + 1] = value.len() as u8;
        buf[n + 2..n + 2 + value.len()].copy_from_slice(value);
        n += 2 + value.len();
    };
    for (((tag, value), t), w) in variable.iter().zip(take).zip(want) {
        if *tag == TAG_SUBSCRIBER_ID {
            // Tag order: the giaddr (4) goes before the subscriber-id (5).
            if let Some(a) = giaddr {
                put(buf, TAG_GIADDR, &a.octets(), false);
            }
        }
        let Some(value) = value else { continue };
        let truncated = t < value.len() || w < value.len();
        put(buf, *tag, &value[..t], truncated);
    }
    // Tags 6, 7 and 8 follow the subscriber-id (5), in tag order.
    if let Some(state) = fields.request_state {
        put(buf, TAG_REQUEST_STATE, &[state as u8], false);
    }
    if let (Some(h), Some(full)) = (hwaddr, fields.client_hwaddr) {
        put(buf, TAG_CLIENT_HWADDR, h, h.len() < full.len());
    }
    if let Some(a) = fields.requested_ip {
        put(buf, TAG_REQUESTED_IP, &a.octets(), false);
    }
    n
}

/// One decoded field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field<'a> {
    /// One of the `TAG_*` constants (or an unknown tag).
    pub tag: u8,
    /// The value, or its prefix when `truncated`.
    pub value: &'a [u8],
    /// Whether `value` is only a prefix.
    pub truncated: bool,
}

/// Decodes a record's context; `None` if the framing is broken (a record not written by this
/// module).
pub fn decode(ctx: &[u8]) -> Option<Vec<Field<'_>>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < ctx.len() {
        let tag = ctx[at];
        let len = usize::from(*ctx.get(at + 1)?);
        let value = ctx.get(at + 2..at + 2 + len)?;
        out.push(Field {
            tag: tag & !TRUNCATED,
            value,
            truncated: tag & TRUNCATED != 0,
        });
        at += 2 + len;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(c: Option<&[u8]>, r: Option<&[u8]>, h: Option<&[u8]>) -> Vec<(u8, Vec<u8>, bool)> {
        roundtrip_fields(&ContextFields {
            circuit_id: c,
            remote_id: r,
            hostname: h,
            ..ContextFields::default()
        })
    }

    fn roundtrip_fields(fields: &ContextFields<'_>) -> Vec<(u8, Vec<u8>, bool)> {
        let mut buf = [0u8; CONTEXT_BYTES];
        let n = encode(fields, &mut buf);
        assert!(n <= CONTEXT_BYTES);
        decode(&buf[..n])
            .expect("well framed")
            .into_iter()
            .map(|f| (f.tag, f.value.to_vec(), f.truncated))
            .collect()
    }

    #[test]
    fn short_fields_are_kept_whole() {
        assert_eq!(roundtrip(None, None, None), vec![]);
        assert_eq!(
            roundtrip(Some(b"eth0/1"), None, Some(b"host")),
            vec![(1, b"eth0/1".to_vec(), false), (3, b"host".to_vec(), false)]
        );
        // 80 + 60 + 2·2 = 144 bytes fit whole (the old code cut each at 60 bytes).
        let c = vec![7u8; 80];
        let r = vec![9u8; 60];
        assert_eq!(
            roundtrip(Some(&c), Some(&r), None),
            vec![(1, c.clone(), false), (2, r.clone(), false)]
        );
    }

    #[test]
    fn long_fields_are_truncated_with_a_marker_never_cut_mid_field() {
        let c = vec![1u8; 200];
        let r = vec![2u8; 10];
        let h = vec![3u8; 255];
        let got = roundtrip(Some(&c), Some(&r), Some(&h));
        assert_eq!(got.len(), 3, "every field is there");
        assert_eq!(got[1], (2, r.clone(), false), "the short one stays whole");
        assert!(got[0].2 && got[2].2, "the long ones are marked");
        assert!(got[0].1.iter().all(|&b| b == 1) && got[2].1.iter().all(|&b| b == 3));
        let used: usize = got.iter().map(|f| 2 + f.1.len()).sum();
        assert_eq!(used, CONTEXT_BYTES, "the room is used fully");
        // A value over 255 bytes (an RFC 3396 option) is marked, not misframed.
        let big = vec![4u8; 300];
        let got = roundtrip(None, None, Some(&big));
        assert_eq!(got, vec![(3, vec![4u8; CONTEXT_BYTES - 2], true)]);
    }

    #[test]
    fn all_five_fields_round_trip_in_tag_order() {
        let got = roundtrip_fields(&ContextFields {
            circuit_id: Some(b"eth0/1"),
            remote_id: Some(&[0xaa, 0xbb]),
            hostname: Some(b"alice"),
            giaddr: Some(Ipv4Addr::new(198, 18, 9, 1)),
            subscriber_id: Some(b"sub-0042"),
            ..ContextFields::default()
        });
        assert_eq!(
            got,
            vec![
                (TAG_CIRCUIT_ID, b"eth0/1".to_vec(), false),
                (TAG_REMOTE_ID, vec![0xaa, 0xbb], false),
                (TAG_HOSTNAME, b"alice".to_vec(), false),
                (TAG_GIADDR, vec![198, 18, 9, 1], false),
                (TAG_SUBSCRIBER_ID, b"sub-0042".to_vec(), false),
            ]
        );
        // Not relayed: 0.0.0.0 is not written.
        let got = roundtrip_fields(&ContextFields {
            giaddr: Some(Ipv4Addr::UNSPECIFIED),
            hostname: Some(b"h"),
            ..ContextFields::default()
        });
        assert_eq!(got, vec![(TAG_HOSTNAME, b"h".to_vec(), false)]);
        // giaddr alone
        let got = roundtrip_fields(&ContextFields {
            giaddr: Some(Ipv4Addr::new(10, 0, 0, 1)),
            ..ContextFields::default()
        });
        assert_eq!(got, vec![(TAG_GIADDR, vec![10, 0, 0, 1], false)]);
    }

    #[test]
    fn truncation_keeps_the_giaddr_whole() {
        let long = [
            vec![1u8; 255],
            vec![2u8; 255],
            vec![3u8; 255],
            vec![5u8; 255],
        ];
        let got = roundtrip_fields(&ContextFields {
            circuit_id: Some(&long[0]),
            remote_id: Some(&long[1]),
            hostname: Some(&long[2]),
            giaddr: Some(Ipv4Addr::new(198, 18, 9, 1)),
            subscriber_id: Some(&long[3]),
            ..ContextFields::default()
        });
        let tags: Vec<u8> = got.iter().map(|f| f.0).collect();
        assert_eq!(tags, [1, 2, 3, 4, 5], "every field is there, in tag order");
        assert_eq!(got[3], (TAG_GIADDR, vec![198, 18, 9, 1], false));
        for (i, f) in got.iter().enumerate().filter(|(i, _)| *i != 3) {
            assert!(f.2, "field {i} is marked truncated");
            assert!(
                f.1.iter().all(|&b| b == f.0),
                "field {i} is a prefix of its value"
            );
        }
        let used: usize = got.iter().map(|f| 2 + f.1.len()).sum();
        assert_eq!(used, CONTEXT_BYTES, "the room is used fully");
        // The same with a single huge value: the giaddr still fits whole.
        let big = vec![4u8; 300];
        let got = roundtrip_fields(&ContextFields {
            hostname: Some(&big),
            giaddr: Some(Ipv4Addr::new(198, 18, 9, 1)),
            ..ContextFields::default()
        });
        assert_eq!(
            got,
            vec![
                (TAG_HOSTNAME, vec![4u8; CONTEXT_BYTES - 2 - 6], true),
                (TAG_GIADDR, vec![198, 18, 9, 1], false),
            ]
        );
    }

    #[test]
    fn all_eight_fields_round_trip_in_tag_order() {
        let mac = [0x02, 0, 0, 0, 0xab, 0x01];
        let got = roundtrip_fields(&ContextFields {
            circuit_id: Some(b"eth0/1"),
            remote_id: Some(&[0xaa, 0xbb]),
            hostname: Some(b"alice"),
            giaddr: Some(Ipv4Addr::new(198, 18, 9, 1)),
            subscriber_id: Some(b"sub-0042"),
            request_state: Some(RequestState::Rebinding),
            client_hwaddr: Some(&mac),
            requested_ip: Some(Ipv4Addr::new(10, 0, 0, 77)),
        });
        assert_eq!(
            got,
            vec![
                (TAG_CIRCUIT_ID, b"eth0/1".to_vec(), false),
                (TAG_REMOTE_ID, vec![0xaa, 0xbb], false),
                (TAG_HOSTNAME, b"alice".to_vec(), false),
                (TAG_GIADDR, vec![198, 18, 9, 1], false),
                (TAG_SUBSCRIBER_ID, b"sub-0042".to_vec(), false),
                (TAG_REQUEST_STATE, vec![4], false),
                (TAG_CLIENT_HWADDR, mac.to_vec(), false),
                (TAG_REQUESTED_IP, vec![10, 0, 0, 77], false),
            ]
        );
        // Each state byte decodes back; anything else is no state.
        for s in [
            RequestState::Selecting,
            RequestState::InitReboot,
            RequestState::Renewing,
            RequestState::Rebinding,
        ] {
            let got = roundtrip_fields(&ContextFields {
                request_state: Some(s),
                ..ContextFields::default()
            });
            assert_eq!(got, vec![(TAG_REQUEST_STATE, vec![s as u8], false)]);
            assert_eq!(RequestState::from_value(&got[0].1), Some(s));
        }
        assert_eq!(RequestState::from_value(&[0]), None);
        assert_eq!(RequestState::from_value(&[5]), None);
        assert_eq!(RequestState::from_value(&[3, 3]), None);
        assert_eq!(RequestState::from_value(&[]), None);
    }

    #[test]
    fn truncation_keeps_the_fixed_fields_whole() {
        let long = [
            vec![1u8; 255],
            vec![2u8; 255],
            vec![3u8; 255],
            vec![5u8; 255],
        ];
        let mac = [0x11u8; MAX_HWADDR];
        let got = roundtrip_fields(&ContextFields {
            circuit_id: Some(&long[0]),
            remote_id: Some(&long[1]),
            hostname: Some(&long[2]),
            giaddr: Some(Ipv4Addr::new(198, 18, 9, 1)),
            subscriber_id: Some(&long[3]),
            request_state: Some(RequestState::InitReboot),
            client_hwaddr: Some(&mac),
            requested_ip: Some(Ipv4Addr::new(10, 0, 0, 77)),
        });
        let tags: Vec<u8> = got.iter().map(|f| f.0).collect();
        assert_eq!(tags, [1, 2, 3, 4, 5, 6, 7, 8], "every field, in tag order");
        assert_eq!(got[3], (TAG_GIADDR, vec![198, 18, 9, 1], false));
        assert_eq!(got[5], (TAG_REQUEST_STATE, vec![2], false));
        assert_eq!(got[6], (TAG_CLIENT_HWADDR, mac.to_vec(), false));
        assert_eq!(got[7], (TAG_REQUESTED_IP, vec![10, 0, 0, 77], false));
        for i in [0, 1, 2, 4] {
            assert!(got[i].2, "variable field {i} is marked truncated");
        }
        let used: usize = got.iter().map(|f| 2 + f.1.len()).sum();
        assert_eq!(used, CONTEXT_BYTES, "the room is used fully");
        // A hardware address longer than chaddr (never decoded from a packet) is cut to 16
        // bytes and marked, so the reservation stays bounded.
        let big = [0x22u8; 40];
        let got = roundtrip_fields(&ContextFields {
            client_hwaddr: Some(&big),
            hostname: Some(&long[2]),
            ..ContextFields::default()
        });
        assert_eq!(got[1], (TAG_CLIENT_HWADDR, vec![0x22; MAX_HWADDR], true));
        assert_eq!(got[0].1.len(), CONTEXT_BYTES - 2 - 2 - MAX_HWADDR);
    }

    #[test]
    fn broken_framing_is_refused() {
        assert_eq!(decode(&[1, 5, 0]), None);
        assert_eq!(decode(&[1]), None);
    }
}

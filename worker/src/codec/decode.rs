//! Decoding of client requests (BOOTREQUEST) into a borrowed [`Request`].
//!
//! See the parent module's documentation for the rules; this file implements them.

use std::borrow::Cow;
use std::net::Ipv4Addr;
use std::ops::Range;

use dhcproto::v4::borrowed::Message;

use super::{code, HEADER_LEN, MAGIC_COOKIE};

/// Offset of the `sname` field (64 bytes) in the BOOTP header.
const SNAME: std::ops::Range<usize> = 44..108;
/// Offset of the `file` field (128 bytes) in the BOOTP header.
const FILE: std::ops::Range<usize> = 108..236;
/// Offset of the magic cookie.
const COOKIE: std::ops::Range<usize> = 236..240;
/// Largest `hlen` whose hardware address fits the 16-byte `chaddr` field.
const MAX_HLEN: u8 = 16;
/// Largest `hops` value accepted (RFC 1542 suggests 16 as the relay limit).
const MAX_HOPS: u8 = 16;

/// DHCP message type (option 53, RFC 2132 §9.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MessageType {
    /// DHCPDISCOVER (client).
    Discover = 1,
    /// DHCPOFFER (server).
    Offer = 2,
    /// DHCPREQUEST (client).
    Request = 3,
    /// DHCPDECLINE (client).
    Decline = 4,
    /// DHCPACK (server).
    Ack = 5,
    /// DHCPNAK (server).
    Nak = 6,
    /// DHCPRELEASE (client).
    Release = 7,
    /// DHCPINFORM (client).
    Inform = 8,
}

impl MessageType {
    /// The type for an option-53 value, if it is one of the eight RFC 2132 types.
    pub fn from_u8(value: u8) -> Option<Self> {
        Some(match value {
            1 => Self::Discover,
            2 => Self::Offer,
            3 => Self::Request,
            4 => Self::Decline,
            5 => Self::Ack,
            6 => Self::Nak,
            7 => Self::Release,
            8 => Self::Inform,
            _ => return None,
        })
    }

    /// The option-53 value.
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// Whether a client sends this type (DISCOVER, REQUEST, DECLINE, RELEASE, INFORM).
    pub fn is_client(self) -> bool {
        matches!(
            self,
            Self::Discover | Self::Request | Self::Decline | Self::Release | Self::Inform
        )
    }
}

/// Why a received packet was dropped without a reply. Each reason is one counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum DropReason {
    /// Shorter than the 240-byte BOOTP header plus cookie.
    #[error("packet shorter than 240 bytes")]
    TooShort,
    /// The magic cookie is not 99.130.83.99.
    #[error("bad magic cookie")]
    BadCookie,
    /// `op` is not 1 (BOOTREQUEST).
    #[error("op is not BOOTREQUEST")]
    NotRequest,
    /// `hlen` > 16, or `hlen` = 0 without a client identifier.
    #[error("bad hardware address length")]
    BadHlen,
    /// `hops` > 16.
    #[error("too many relay hops")]
    TooManyHops,
    /// No option 53.
    #[error("no DHCP message type")]
    NoMessageType,
    /// Option 53 is not one byte, or not a client message type (1, 3, 4, 7, 8).
    #[error("bad DHCP message type")]
    BadMessageType,
    /// An option's length byte is missing or runs past the end of its field.
    #[error("option length runs past the end of its field")]
    BadOptionFraming,
    /// Option 52 found inside an overloaded `file`/`sname` field.
    #[error("option overload inside an overloaded field")]
    OverloadLoop,
}

impl DropReason {
    /// Every reason, in [`DropReason::index`] order.
    pub const ALL: [DropReason; 9] = [
        Self::TooShort,
        Self::BadCookie,
        Self::NotRequest,
        Self::BadHlen,
        Self::TooManyHops,
        Self::NoMessageType,
        Self::BadMessageType,
        Self::BadOptionFraming,
        Self::OverloadLoop,
    ];

    /// Stable snake_case name, used as the counter name. Never change an existing name.
    pub fn name(self) -> &'static str {
        match self {
            Self::TooShort => "too_short",
            Self::BadCookie => "bad_cookie",
            Self::NotRequest => "not_request",
            Self::BadHlen => "bad_hlen",
            Self::TooManyHops => "too_many_hops",
            Self::NoMessageType => "no_message_type",
            Self::BadMessageType => "bad_message_type",
            Self::BadOptionFraming => "bad_option_framing",
            Self::OverloadLoop => "overload_loop",
        }
    }

    /// Dense index in `0..ALL.len()`, for counter arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A decoded client request. Borrowed from the receive buffer; owns data only when an option
/// was split into several instances (RFC 3396).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    /// Hardware address type.
    pub htype: u8,
    /// Hardware address length, ≤ 16.
    pub hlen: u8,
    /// Relay hops, ≤ 16.
    pub hops: u8,
    /// Transaction id.
    pub xid: u32,
    /// Seconds since the client started.
    pub secs: u16,
    /// Flags (bit 15 = broadcast).
    pub flags: u16,
    /// Client address (RENEW/REBIND/INFORM).
    pub ciaddr: Ipv4Addr,
    /// `yiaddr` as sent (normally 0).
    pub yiaddr: Ipv4Addr,
    /// Relay agent address, 0 when not relayed.
    pub giaddr: Ipv4Addr,
    /// Hardware address: exactly `hlen` bytes.
    pub chaddr: &'a [u8],
    /// Option 53: always a client type.
    pub msg_type: MessageType,
    /// Option 50.
    pub requested_ip: Option<Ipv4Addr>,
    /// Option 54.
    pub server_id: Option<Ipv4Addr>,
    /// Option 51.
    pub lease_time: Option<u32>,
    /// Option 61 (at least one byte), split instances concatenated.
    pub client_id: Option<Cow<'a, [u8]>>,
    /// Option 12, raw bytes (not validated as text), at least one byte.
    pub hostname: Option<&'a [u8]>,
    /// Option 55 (at least one byte), split instances concatenated.
    pub param_request_list: Option<Cow<'a, [u8]>>,
    /// Option 57.
    pub max_message_size: Option<u16>,
    /// Option 118 (RFC 3011).
    pub subnet_selection: Option<Ipv4Addr>,
    /// Option 82 payload, raw, to echo unchanged; split instances concatenated (RFC 3396).
    pub relay_agent_info: Option<Cow<'a, [u8]>>,
    /// Option 82 sub-option 1.
    pub circuit_id: Option<Cow<'a, [u8]>>,
    /// Option 82 sub-option 2.
    pub remote_id: Option<Cow<'a, [u8]>>,
    /// Option 82 sub-option 5 (RFC 3527).
    pub link_selection: Option<Ipv4Addr>,
    /// Option 82 sub-option 6, subscriber-id (RFC 3993).
    pub subscriber_id: Option<Cow<'a, [u8]>>,
    /// Number of options ignored because of a bad length or value (including a malformed 82
    /// sub-option framing and an invalid 52).
    pub malformed_options: u16,
}

/// Decodes a client request. Never panics; returns why the packet must be dropped otherwise.
pub fn decode(buf: &[u8]) -> Result<Request<'_>, DropReason> {
    if buf.len() < HEADER_LEN {
        return Err(DropReason::TooShort);
    }
    // Compared as an integer, not as a slice: a `bcmp` call would hide the constant from
    // libFuzzer's comparison tracing when it runs without a sanitizer (`-s none`).
    let cookie = buf.get(COOKIE).and_then(|c| <[u8; 4]>::try_from(c).ok());
    if cookie.map(u32::from_be_bytes) != Some(u32::from_be_bytes(MAGIC_COOKIE)) {
        return Err(DropReason::BadCookie);
    }
    let msg = Message::new(buf).map_err(|_| DropReason::TooShort)?;
    // `op`, `htype`, `hlen`, `hops` are single bytes; read them as raw numbers.
    let byte = |at: usize| buf.get(at).copied().unwrap_or(0);
    let (op, htype, hlen, hops) = (byte(0), byte(1), byte(2), byte(3));
    if op != 1 {
        return Err(DropReason::NotRequest);
    }
    if hlen > MAX_HLEN {
        return Err(DropReason::BadHlen);
    }
    if hops > MAX_HOPS {
        return Err(DropReason::TooManyHops);
    }

    let mut acc = Accumulator::default();
    let options = buf.get(HEADER_LEN..).unwrap_or(&[]);
    acc.walk_field(options, Field::Options)?;
    if let Some(overload) = acc.overload {
        if overload & 1 != 0 {
            acc.walk_field(buf.get(FILE).unwrap_or(&[]), Field::Overloaded)?;
        }
        if overload & 2 != 0 {
            acc.walk_field(buf.get(SNAME).unwrap_or(&[]), Field::Overloaded)?;
        }
    }

    let msg_type = match acc.msg_type {
        None => return Err(DropReason::NoMessageType),
        Some(&[value]) => MessageType::from_u8(value)
            .filter(|t| t.is_client())
            .ok_or(DropReason::BadMessageType)?,
        Some(_) => return Err(DropReason::BadMessageType),
    };
    let client_id = acc.client_id.take().and_then(|id| acc.non_empty(id));
    if hlen == 0 && client_id.is_none() {
        return Err(DropReason::BadHlen);
    }
    let param_request_list = acc.param_request_list.take().and_then(|l| acc.non_empty(l));
    let relay_agent_info = acc.relay_agent_info.take();
    let relay = match &relay_agent_info {
        None => RelaySubOptions::default(),
        Some(payload) => match parse_relay_agent_info(payload) {
            Some(relay) => relay,
            None => {
                acc.count_malformed();
                RelaySubOptions::default()
            }
        },
    };

    // `hlen` ≤ 16 and the length ≥ 240 were checked above, so `chaddr()` cannot panic; the
    // checked slice below keeps that true even if dhcproto changed.
    let chaddr = buf.get(28..28 + usize::from(hlen)).unwrap_or(&[]);
    debug_assert_eq!(chaddr, msg.chaddr());

    Ok(Request {
        htype,
        hlen,
        hops,
        xid: msg.xid(),
        secs: msg.secs(),
        flags: msg.flags().into(),
        ciaddr: msg.ciaddr(),
        yiaddr: msg.yiaddr(),
        giaddr: msg.giaddr(),
        chaddr,
        msg_type,
        requested_ip: acc.requested_ip,
        server_id: acc.server_id,
        lease_time: acc.lease_time,
        client_id,
        hostname: acc.hostname,
        param_request_list,
        max_message_size: acc.max_message_size,
        subnet_selection: acc.subnet_selection,
        circuit_id: relay.circuit_id,
        remote_id: relay.remote_id,
        link_selection: relay.link_selection,
        subscriber_id: relay.subscriber_id,
        relay_agent_info,
        malformed_options: acc.malformed,
    })
}

/// Which part of the packet an option field is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    /// The options field after the cookie.
    Options,
    /// `file` or `sname`, used for options because of option 52.
    Overloaded,
}

/// Decoded sub-options of option 82.
#[derive(Debug, Default, Clone)]
struct RelaySubOptions<'a> {
    circuit_id: Option<Cow<'a, [u8]>>,
    remote_id: Option<Cow<'a, [u8]>>,
    link_selection: Option<Ipv4Addr>,
    subscriber_id: Option<Cow<'a, [u8]>>,
}

/// Option values collected while walking the option fields.
#[derive(Debug, Default)]
struct Accumulator<'a> {
    /// One bit per option code already seen (first occurrence wins).
    seen: [u64; 4],
    /// The previous option of the current field and whether it was taken (not a duplicate):
    /// an adjacent instance of a taken option continues it (RFC 3396).
    previous: Option<(u8, bool)>,
    msg_type: Option<&'a [u8]>,
    overload: Option<u8>,
    requested_ip: Option<Ipv4Addr>,
    server_id: Option<Ipv4Addr>,
    lease_time: Option<u32>,
    client_id: Option<Cow<'a, [u8]>>,
    hostname: Option<&'a [u8]>,
    param_request_list: Option<Cow<'a, [u8]>>,
    max_message_size: Option<u16>,
    subnet_selection: Option<Ipv4Addr>,
    relay_agent_info: Option<Cow<'a, [u8]>>,
    malformed: u16,
}

impl<'a> Accumulator<'a> {
    /// Walks one option field: PAD skipped, END (or the end of the field) stops.
    fn walk_field(&mut self, field: &'a [u8], kind: Field) -> Result<(), DropReason> {
        self.previous = None;
        let mut at = 0usize;
        while let Some(&option) = field.get(at) {
            match option {
                code::PAD => at += 1,
                code::END => break,
                _ => {
                    let len = *field.get(at + 1).ok_or(DropReason::BadOptionFraming)?;
                    let start = at + 2;
                    let end = start + usize::from(len);
                    let data = field.get(start..end).ok_or(DropReason::BadOptionFraming)?;
                    self.option(option, data, kind)?;
                    at = end;
                }
            }
        }
        Ok(())
    }

    /// Handles one option instance.
    fn option(&mut self, option: u8, data: &'a [u8], kind: Field) -> Result<(), DropReason> {
        if option == code::OVERLOAD && kind == Field::Overloaded {
            return Err(DropReason::OverloadLoop);
        }
        if self.previous == Some((option, true)) {
            // RFC 3396 continuation of the option just taken.
            match option {
                code::CLIENT_ID => append(&mut self.client_id, data),
                code::PARAM_REQUEST_LIST => append(&mut self.param_request_list, data),
                code::RELAY_AGENT_INFO => append(&mut self.relay_agent_info, data),
                _ => {}
            }
            return Ok(());
        }
        let word = usize::from(option / 64);
        let bit = 1u64 << (option % 64);
        let Some(seen) = self.seen.get_mut(word) else {
            return Ok(());
        };
        let first = *seen & bit == 0;
        *seen |= bit;
        self.previous = Some((option, first));
        if !first {
            return Ok(());
        }
        match option {
            code::MESSAGE_TYPE => self.msg_type = Some(data),
            code::OVERLOAD => match data {
                &[value @ 1..=3] => self.overload = Some(value),
                _ => self.count_malformed(),
            },
            code::REQUESTED_IP => self.requested_ip = self.ipv4(data),
            code::SERVER_ID => self.server_id = self.ipv4(data),
            code::SUBNET_SELECTION => self.subnet_selection = self.ipv4(data),
            code::LEASE_TIME => self.lease_time = self.fixed::<4>(data).map(u32::from_be_bytes),
            code::MAX_MESSAGE_SIZE => {
                self.max_message_size = self.fixed::<2>(data).map(u16::from_be_bytes)
            }
            code::CLIENT_ID => self.client_id = Some(Cow::Borrowed(data)),
            code::PARAM_REQUEST_LIST => self.param_request_list = Some(Cow::Borrowed(data)),
            code::HOSTNAME => {
                if data.is_empty() {
                    self.count_malformed();
                } else {
                    self.hostname = Some(data);
                }
            }
            // Sub-options are parsed after the walk, from the whole (concatenated) payload.
            code::RELAY_AGENT_INFO => self.relay_agent_info = Some(Cow::Borrowed(data)),
            _ => {}
        }
        Ok(())
    }

    fn count_malformed(&mut self) {
        self.malformed = self.malformed.saturating_add(1);
    }

    /// `data` as exactly `N` bytes, or `None` (counted as malformed).
    fn fixed<const N: usize>(&mut self, data: &[u8]) -> Option<[u8; N]> {
        let value = <[u8; N]>::try_from(data).ok();
        if value.is_none() {
            self.count_malformed();
        }
        value
    }

    fn ipv4(&mut self, data: &[u8]) -> Option<Ipv4Addr> {
        self.fixed::<4>(data).map(Ipv4Addr::from)
    }

    /// `Some(value)` if non-empty, else `None` (counted as malformed).
    fn non_empty(&mut self, value: Cow<'a, [u8]>) -> Option<Cow<'a, [u8]>> {
        if value.is_empty() {
            self.count_malformed();
            None
        } else {
            Some(value)
        }
    }
}

/// Appends an RFC 3396 continuation; allocates (once) only here.
fn append(value: &mut Option<Cow<'_, [u8]>>, data: &[u8]) {
    if let Some(value) = value {
        if !data.is_empty() {
            value.to_mut().extend_from_slice(data);
        }
    }
}

/// Parses the sub-options of an option 82 payload (RFC 3046 §2.0: code, length, value; no PAD
/// or END). `None` when the framing is broken or sub-option 5 is not 4 bytes. Duplicate
/// sub-options: the first one wins. Values borrow from the packet when the 82 was one instance
/// and are copied from a concatenated (RFC 3396) payload.
fn parse_relay_agent_info<'a>(payload: &Cow<'a, [u8]>) -> Option<RelaySubOptions<'a>> {
    let mut circuit_id: Option<Range<usize>> = None;
    let mut remote_id: Option<Range<usize>> = None;
    let mut link_selection = None;
    let mut subscriber_id: Option<Range<usize>> = None;
    let bytes: &[u8] = payload;
    let mut at = 0usize;
    while let Some(&sub) = bytes.get(at) {
        let len = *bytes.get(at + 1)?;
        let start = at + 2;
        let end = start + usize::from(len);
        let data = bytes.get(start..end)?;
        match sub {
            code::RAI_CIRCUIT_ID if circuit_id.is_none() => circuit_id = Some(start..end),
            code::RAI_REMOTE_ID if remote_id.is_none() => remote_id = Some(start..end),
            code::RAI_SUBSCRIBER_ID if subscriber_id.is_none() => {
                subscriber_id = Some(start..end);
            }
            code::RAI_LINK_SELECTION if link_selection.is_none() => {
                link_selection = Some(Ipv4Addr::from(<[u8; 4]>::try_from(data).ok()?));
            }
            _ => {}
        }
        at = end;
    }
    let value = |r: Range<usize>| -> Cow<'a, [u8]> {
        match payload {
            Cow::Borrowed(whole) => Cow::Borrowed(&whole[r]),
            Cow::Owned(whole) => Cow::Owned(whole[r].to_vec()),
        }
    };
    Some(RelaySubOptions {
        circuit_id: circuit_id.map(value),
        remote_id: remote_id.map(value),
        link_selection,
        subscriber_id: subscriber_id.map(value),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A BOOTREQUEST header (240 bytes, cookie included) with Ethernet chaddr 02:00:5e:10:00:01.
    pub(crate) fn header() -> Vec<u8> {
        let mut p = vec![0u8; HEADER_LEN];
        p[0] = 1;
        p[1] = 1;
        p[2] = 6;
        p[4..8].copy_from_slice(&0x3903_f326u32.to_be_bytes());
        p[8..10].copy_from_slice(&7u16.to_be_bytes());
        p[10..12].copy_from_slice(&0x8000u16.to_be_bytes());
        p[28..34].copy_from_slice(&[0x02, 0x00, 0x5e, 0x10, 0x00, 0x01]);
        p[236..240].copy_from_slice(&MAGIC_COOKIE);
        p
    }

    /// A DISCOVER laid out like ISC dhclient 4.4 sends it (53, 50, 12, 55, END, no 61) followed
    /// by padding, plus the given extra options before END.
    pub(crate) fn dhclient_discover(extra: &[u8]) -> Vec<u8> {
        let mut p = header();
        p.extend_from_slice(&[53, 1, 1]);
        p.extend_from_slice(&[50, 4, 198, 18, 0, 77]);
        p.extend_from_slice(&[12, 4, b'h', b'o', b's', b't']);
        p.extend_from_slice(&[55, 13, 1, 28, 2, 3, 15, 6, 119, 12, 44, 47, 26, 121, 42]);
        p.extend_from_slice(extra);
        p.push(255);
        p.resize(300, 0);
        p
    }

    /// A DISCOVER laid out like busybox udhcpc sends it (53, 61, 57, 55, 60, 12, END).
    fn udhcpc_discover() -> Vec<u8> {
        let mut p = header();
        p[10] = 0;
        p.extend_from_slice(&[53, 1, 1]);
        p.extend_from_slice(&[61, 7, 1, 0x02, 0x00, 0x5e, 0x10, 0x00, 0x01]);
        p.extend_from_slice(&[57, 2, 0x02, 0x40]);
        p.extend_from_slice(&[55, 7, 1, 3, 6, 12, 15, 28, 42]);
        p.extend_from_slice(&[60, 12]);
        p.extend_from_slice(b"udhcp 1.36.1");
        p.extend_from_slice(&[12, 3, b'b', b'o', b'x']);
        p.push(255);
        p.resize(548, 0);
        p
    }

    /// A header followed by `options`.
    fn with_options(options: &[u8]) -> Vec<u8> {
        let mut p = header();
        p.extend_from_slice(options);
        p
    }

    /// Decodes a header followed by `options` (the packet is leaked: tests only).
    fn parsed(options: &[u8]) -> Result<Request<'static>, DropReason> {
        decode(Vec::leak(with_options(options)))
    }

    #[test]
    fn dhclient_discover_decodes_fully() {
        let p = dhclient_discover(&[]);
        let r = decode(&p).unwrap();
        assert_eq!(r.htype, 1);
        assert_eq!(r.hlen, 6);
        assert_eq!(r.hops, 0);
        assert_eq!(r.xid, 0x3903_f326);
        assert_eq!(r.secs, 7);
        assert_eq!(r.flags, 0x8000);
        assert_eq!(r.ciaddr, Ipv4Addr::UNSPECIFIED);
        assert_eq!(r.giaddr, Ipv4Addr::UNSPECIFIED);
        assert_eq!(r.chaddr, &[0x02, 0x00, 0x5e, 0x10, 0x00, 0x01]);
        assert_eq!(r.msg_type, MessageType::Discover);
        assert_eq!(r.requested_ip, Some(Ipv4Addr::new(198, 18, 0, 77)));
        assert_eq!(r.hostname, Some(&b"host"[..]));
        assert_eq!(
            r.param_request_list.as_deref(),
            Some(&[1, 28, 2, 3, 15, 6, 119, 12, 44, 47, 26, 121, 42][..])
        );
        assert!(matches!(r.param_request_list, Some(Cow::Borrowed(_))));
        assert_eq!(r.client_id, None);
        assert_eq!(r.server_id, None);
        assert_eq!(r.relay_agent_info, None);
        assert_eq!(r.malformed_options, 0);
    }

    #[test]
    fn udhcpc_discover_decodes_fully() {
        let p = udhcpc_discover();
        let r = decode(&p).unwrap();
        assert_eq!(r.msg_type, MessageType::Discover);
        assert_eq!(
            r.client_id.as_deref(),
            Some(&[1, 0x02, 0x00, 0x5e, 0x10, 0x00, 0x01][..])
        );
        assert_eq!(r.max_message_size, Some(576));
        assert_eq!(r.hostname, Some(&b"box"[..]));
        assert_eq!(r.flags, 0);
        assert_eq!(r.malformed_options, 0);
    }

    #[test]
    fn request_fields() {
        let p = with_options(&[
            53, 1, 3, 54, 4, 198, 18, 0, 1, 51, 4, 0, 0, 0x0e, 0x10, 118, 4, 198, 18, 4, 0, 255,
        ]);
        let r = decode(&p).unwrap();
        assert_eq!(r.msg_type, MessageType::Request);
        assert_eq!(r.server_id, Some(Ipv4Addr::new(198, 18, 0, 1)));
        assert_eq!(r.lease_time, Some(3600));
        assert_eq!(r.subnet_selection, Some(Ipv4Addr::new(198, 18, 4, 0)));
    }

    #[test]
    fn drop_too_short_and_cookie() {
        let p = dhclient_discover(&[]);
        assert_eq!(decode(&p[..239]), Err(DropReason::TooShort));
        assert_eq!(decode(&[]), Err(DropReason::TooShort));
        assert_eq!(decode(&p[..236]), Err(DropReason::TooShort));
        let mut bad = p.clone();
        bad[239] = 0x62;
        assert_eq!(decode(&bad), Err(DropReason::BadCookie));
        // exactly 240 bytes: a cookie but no options at all
        assert_eq!(decode(&p[..240]), Err(DropReason::NoMessageType));
    }

    #[test]
    fn drop_not_request() {
        let mut p = dhclient_discover(&[]);
        p[0] = 2;
        assert_eq!(decode(&p), Err(DropReason::NotRequest));
        p[0] = 0;
        assert_eq!(decode(&p), Err(DropReason::NotRequest));
    }

    #[test]
    fn drop_bad_hlen_and_hops() {
        let mut p = dhclient_discover(&[]);
        p[2] = 17;
        assert_eq!(decode(&p), Err(DropReason::BadHlen));
        p[2] = 16;
        assert_eq!(decode(&p).unwrap().chaddr.len(), 16);
        p[2] = 0;
        assert_eq!(decode(&p), Err(DropReason::BadHlen), "hlen 0 without 61");
        p[3] = 17;
        p[2] = 6;
        assert_eq!(decode(&p), Err(DropReason::TooManyHops));
        p[3] = 16;
        assert!(decode(&p).is_ok());
    }

    #[test]
    fn hlen_zero_accepted_with_client_id() {
        let mut p = with_options(&[53, 1, 1, 61, 3, 0, b'i', b'd', 255]);
        p[2] = 0;
        let r = decode(&p).unwrap();
        assert_eq!(r.chaddr, &[] as &[u8]);
        assert_eq!(r.client_id.as_deref(), Some(&[0, b'i', b'd'][..]));
        // an empty 61 does not count as present
        let mut p = with_options(&[53, 1, 1, 61, 0, 255]);
        p[2] = 0;
        assert_eq!(decode(&p), Err(DropReason::BadHlen));
    }

    #[test]
    fn drop_message_type() {
        assert_eq!(parsed(&[12, 1, b'x', 255]), Err(DropReason::NoMessageType));
        for t in [0u8, 2, 5, 6, 9, 255] {
            assert_eq!(
                parsed(&[53, 1, t, 255]),
                Err(DropReason::BadMessageType),
                "type {t}"
            );
        }
        for t in [1u8, 3, 4, 7, 8] {
            assert!(parsed(&[53, 1, t, 255]).is_ok(), "type {t}");
        }
        assert_eq!(parsed(&[53, 0, 255]), Err(DropReason::BadMessageType));
        assert_eq!(parsed(&[53, 2, 1, 1, 255]), Err(DropReason::BadMessageType));
        // 53 after END is not seen
        assert_eq!(parsed(&[255, 53, 1, 1]), Err(DropReason::NoMessageType));
    }

    #[test]
    fn drop_bad_option_framing() {
        // length past the end
        assert_eq!(
            parsed(&[53, 1, 1, 12, 10, b'a']),
            Err(DropReason::BadOptionFraming)
        );
        // code byte without a length
        assert_eq!(parsed(&[53, 1, 1, 12]), Err(DropReason::BadOptionFraming));
        // no END is fine, PAD-only tail is fine, garbage after END is ignored
        assert!(parsed(&[53, 1, 1]).is_ok());
        assert!(parsed(&[0, 0, 53, 1, 1, 0, 0]).is_ok());
        assert!(parsed(&[53, 1, 1, 255, 12, 200]).is_ok());
    }

    #[test]
    fn overload_parses_file_then_sname() {
        let mut p = with_options(&[53, 1, 1, 52, 1, 3, 255]);
        // file: 61 then END; sname: 12, PAD, END
        p[FILE.start..FILE.start + 6].copy_from_slice(&[61, 3, 1, 2, 3, 255]);
        p[SNAME.start..SNAME.start + 5].copy_from_slice(&[12, 2, b'h', b'i', 0]);
        let r = decode(&p).unwrap();
        assert_eq!(r.client_id.as_deref(), Some(&[1, 2, 3][..]));
        assert_eq!(r.hostname, Some(&b"hi"[..]));

        // value 1: only `file`
        p[HEADER_LEN + 5] = 1;
        let r = decode(&p).unwrap();
        assert!(r.client_id.is_some());
        assert_eq!(r.hostname, None);
        // value 2: only `sname`
        p[HEADER_LEN + 5] = 2;
        let r = decode(&p).unwrap();
        assert_eq!(r.client_id, None);
        assert!(r.hostname.is_some());
        // value 0 / 4: ignored and counted
        for bad in [0u8, 4, 255] {
            p[HEADER_LEN + 5] = bad;
            let r = decode(&p).unwrap();
            assert_eq!(
                (r.client_id.is_some(), r.hostname.is_some()),
                (false, false)
            );
            assert_eq!(r.malformed_options, 1);
        }
        // without 52 the fields are ignored
        let mut plain = with_options(&[53, 1, 1, 255]);
        plain[FILE.start..FILE.start + 3].copy_from_slice(&[12, 9, 9]);
        assert!(decode(&plain).is_ok());
    }

    #[test]
    fn overload_can_carry_the_message_type_and_framing_is_checked() {
        let mut p = with_options(&[52, 1, 2]);
        p[SNAME.start..SNAME.start + 3].copy_from_slice(&[53, 1, 3]);
        assert_eq!(decode(&p).unwrap().msg_type, MessageType::Request);
        // a length running past the end of sname (64 bytes) is a framing error
        p[SNAME.end - 2] = 12;
        p[SNAME.end - 1] = 5;
        assert_eq!(decode(&p), Err(DropReason::BadOptionFraming));
    }

    #[test]
    fn drop_overload_loop() {
        let mut p = with_options(&[53, 1, 1, 52, 1, 1, 255]);
        p[FILE.start..FILE.start + 3].copy_from_slice(&[52, 1, 3]);
        assert_eq!(decode(&p), Err(DropReason::OverloadLoop));
    }

    #[test]
    fn a_relay_agent_option_longer_than_255_bytes_is_concatenated() {
        // circuit-id of 200 bytes, remote-id of 150 bytes, link selection: 360 bytes of 82,
        // split by the relay into instances of 255 and 105 bytes (RFC 3396).
        let mut rai = vec![1, 200];
        rai.extend(std::iter::repeat_n(b'c', 200));
        rai.extend([2, 150]);
        rai.extend(std::iter::repeat_n(b'r', 150));
        rai.extend([5, 4, 10, 1, 0, 1]);
        assert_eq!(rai.len(), 360);
        let mut opts = vec![53, 1, 1, 82, 255];
        opts.extend_from_slice(&rai[..255]);
        opts.extend([82, 105]);
        opts.extend_from_slice(&rai[255..]);
        let r = parsed(&opts).unwrap();
        assert_eq!(
            r.relay_agent_info.as_deref(),
            Some(&rai[..]),
            "echoed whole"
        );
        assert_eq!(r.circuit_id.as_deref(), Some(&rai[2..202]));
        assert_eq!(r.remote_id.as_deref(), Some(&rai[204..354]));
        assert_eq!(r.link_selection, Some(Ipv4Addr::new(10, 1, 0, 1)));
        assert_eq!(r.malformed_options, 0);
    }

    #[test]
    fn rfc3396_concatenation_of_adjacent_instances() {
        let mut opts = vec![53, 1, 1];
        // 10 instances of 61 with PAD between two of them: 300 bytes in total
        for i in 0..10u8 {
            opts.extend_from_slice(&[61, 30]);
            opts.extend(std::iter::repeat_n(i, 30));
            if i == 4 {
                opts.push(0);
            }
        }
        opts.extend_from_slice(&[55, 2, 1, 3, 55, 1, 6]);
        opts.push(255);
        let r = parsed(&opts).unwrap();
        let id = r.client_id.unwrap();
        assert_eq!(id.len(), 300);
        assert!(matches!(id, Cow::Owned(_)));
        assert_eq!(&id[30..60], &[1u8; 30]);
        assert_eq!(&id[270..], &[9u8; 30]);
        assert_eq!(r.param_request_list.as_deref(), Some(&[1, 3, 6][..]));
    }

    #[test]
    fn first_non_adjacent_instance_wins() {
        let r = parsed(&[
            53, 1, 1, 61, 2, 1, 1, 12, 1, b'a', 61, 2, 2, 2, 50, 4, 10, 0, 0, 1, 53, 1, 7, 12, 1,
            b'b', 50, 4, 10, 0, 0, 2, 255,
        ])
        .unwrap();
        assert_eq!(r.msg_type, MessageType::Discover);
        assert_eq!(r.client_id.as_deref(), Some(&[1, 1][..]));
        assert_eq!(r.hostname, Some(&b"a"[..]));
        assert_eq!(r.requested_ip, Some(Ipv4Addr::new(10, 0, 0, 1)));
        // a run of ignored duplicates does not reopen the first instance
        let r = parsed(&[61, 1, 1, 53, 1, 1, 61, 1, 2, 61, 1, 3, 255]).unwrap();
        assert_eq!(r.client_id.as_deref(), Some(&[1][..]));
    }

    #[test]
    fn wrong_length_fixed_options_are_absent_and_counted() {
        let r = parsed(&[
            53, 1, 1, 50, 3, 1, 2, 3, 54, 5, 1, 2, 3, 4, 5, 51, 0, 57, 1, 2, 118, 2, 1, 1, 12, 0,
            55, 0, 255,
        ])
        .unwrap();
        assert_eq!(r.requested_ip, None);
        assert_eq!(r.server_id, None);
        assert_eq!(r.lease_time, None);
        assert_eq!(r.max_message_size, None);
        assert_eq!(r.subnet_selection, None);
        assert_eq!(r.hostname, None);
        assert_eq!(r.param_request_list, None);
        assert_eq!(r.malformed_options, 7);
    }

    #[test]
    fn relay_agent_info_with_link_selection() {
        let rai = [
            1, 6, b'e', b't', b'h', b'0', b'/', b'1', 2, 3, 0xaa, 0xbb, 0xcc, 5, 4, 198, 18, 9, 0,
            9, 4, 0, 0, 0, 9,
        ];
        let mut opts = vec![53, 1, 1, 82, rai.len() as u8];
        opts.extend_from_slice(&rai);
        opts.push(255);
        let mut p = with_options(&opts);
        p[3] = 1;
        p[24..28].copy_from_slice(&[198, 18, 9, 1]);
        let r = decode(&p).unwrap();
        assert_eq!(r.giaddr, Ipv4Addr::new(198, 18, 9, 1));
        assert_eq!(r.relay_agent_info.as_deref(), Some(&rai[..]));
        assert_eq!(r.circuit_id.as_deref(), Some(&b"eth0/1"[..]));
        assert_eq!(r.remote_id.as_deref(), Some(&[0xaa, 0xbb, 0xcc][..]));
        assert_eq!(r.link_selection, Some(Ipv4Addr::new(198, 18, 9, 0)));
        assert_eq!(r.malformed_options, 0);
    }

    #[test]
    fn relay_agent_info_subscriber_id_first_one_wins() {
        // 82.6 (RFC 3993) after 82.1; a duplicate 82.6 is ignored.
        let rai = [
            1, 2, b'c', b'1', 6, 8, b's', b'u', b'b', b'-', b'0', b'0', b'4', b'2', 6, 1, b'x',
        ];
        let mut opts = vec![53, 1, 1, 82, rai.len() as u8];
        opts.extend_from_slice(&rai);
        opts.push(255);
        let r = parsed(&opts).unwrap();
        assert_eq!(r.circuit_id.as_deref(), Some(&b"c1"[..]));
        assert_eq!(r.subscriber_id.as_deref(), Some(&b"sub-0042"[..]));
        assert_eq!(r.remote_id, None);
        assert_eq!(r.malformed_options, 0);
        // split 82 (RFC 3396): the sub-option is copied from the concatenated payload
        let mut opts = vec![53, 1, 1, 82, 5];
        opts.extend_from_slice(&rai[..5]);
        opts.extend_from_slice(&[82, (rai.len() - 5) as u8]);
        opts.extend_from_slice(&rai[5..]);
        opts.push(255);
        let r = parsed(&opts).unwrap();
        assert_eq!(r.subscriber_id.as_deref(), Some(&b"sub-0042"[..]));
        // absent without an 82
        assert_eq!(parsed(&[53, 1, 1, 255]).unwrap().subscriber_id, None);
    }

    #[test]
    fn malformed_relay_sub_options_keep_raw_payload() {
        // circuit id fine, remote id overruns the 82 payload
        let rai = [1, 2, b'x', b'y', 2, 9, 1];
        let mut opts = vec![53, 1, 1, 82, rai.len() as u8];
        opts.extend_from_slice(&rai);
        let r = parsed(&opts).unwrap();
        assert_eq!(r.relay_agent_info.as_deref(), Some(&rai[..]));
        assert_eq!(
            (r.circuit_id, r.remote_id, r.link_selection),
            (None, None, None)
        );
        assert_eq!(r.malformed_options, 1);
        // link selection of the wrong length
        let rai = [1, 1, b'x', 5, 3, 1, 2, 3];
        let mut opts = vec![53, 1, 1, 82, rai.len() as u8];
        opts.extend_from_slice(&rai);
        let r = parsed(&opts).unwrap();
        assert_eq!(r.relay_agent_info.as_deref(), Some(&rai[..]));
        assert_eq!((r.circuit_id, r.link_selection), (None, None));
        assert_eq!(r.malformed_options, 1);
        // empty 82, zero-length and duplicate sub-options
        let r = parsed(&[53, 1, 1, 82, 0]).unwrap();
        assert_eq!(r.relay_agent_info.as_deref(), Some(&[][..]));
        let r = parsed(&[53, 1, 1, 82, 7, 1, 0, 1, 1, b'z', 2, 0]).unwrap();
        assert_eq!(r.circuit_id.as_deref(), Some(&[][..]));
        assert_eq!(r.remote_id.as_deref(), Some(&[][..]));
        assert_eq!(r.malformed_options, 0);
    }

    #[test]
    fn drop_reason_table_is_consistent() {
        for (i, reason) in DropReason::ALL.iter().enumerate() {
            assert_eq!(reason.index(), i);
            assert!(reason
                .name()
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_'));
        }
        let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DropReason::ALL.len());
    }

    #[test]
    fn hlen_sweep_never_panics() {
        for htype in [1u8, 6, 32, 255] {
            for hlen in 0..=255u8 {
                let mut p = dhclient_discover(&[]);
                p[1] = htype;
                p[2] = hlen;
                let result = decode(&p);
                match hlen {
                    1..=16 => assert_eq!(result.unwrap().chaddr.len(), usize::from(hlen)),
                    _ => assert_eq!(result, Err(DropReason::BadHlen)),
                }
                // a short packet with a large hlen (dhcproto's borrowed chaddr() panic case)
                assert!(decode(&p[..HEADER_LEN]).is_err());
            }
        }
    }

    #[test]
    fn truncation_sweep_never_panics() {
        let mut rai = vec![82, 12, 1, 4, 1, 2, 3, 4, 2, 2, 9, 9, 5, 0];
        rai[13] = 0; // sub-option 5 with length 0: malformed when complete
        for p in [dhclient_discover(&rai), udhcpc_discover()] {
            for len in 0..=p.len() {
                let result = decode(&p[..len]);
                if len < HEADER_LEN {
                    assert_eq!(result, Err(DropReason::TooShort));
                }
            }
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn arbitrary_options_after_a_valid_header_never_panic(
            options in proptest::collection::vec(any::<u8>(), 0..600),
            sname in proptest::collection::vec(any::<u8>(), 64),
            file in proptest::collection::vec(any::<u8>(), 128),
            hlen in 0u8..=20,
        ) {
            let mut p = header();
            p[2] = hlen;
            p[SNAME].copy_from_slice(&sname);
            p[FILE].copy_from_slice(&file);
            p.extend_from_slice(&[52, 1, 3]);
            p.extend_from_slice(&options);
            if let Ok(r) = decode(&p) {
                prop_assert!(r.chaddr.len() == usize::from(r.hlen) && r.hlen <= 16);
                prop_assert!(r.msg_type.is_client());
                prop_assert!(r.client_id.as_ref().is_none_or(|id| !id.is_empty()));
            }
        }
    }
}

//! DHCPv4 packets, built and parsed by hand (RFC 2131/2132), independent of prodhcp's codec.
//!
//! Requests are written from precomputed [`Template`]s: the fixed part of each message kind is
//! built once, and each send copies it and patches xid, chaddr, client-id, ciaddr, requested
//! address and server id at known offsets. Replies are parsed by [`parse`], which never panics
//! on any input.

use std::net::Ipv4Addr;

/// The BOOTP fixed header length (up to and including `file`).
pub const HEADER_LEN: usize = 236;
/// The DHCP magic cookie.
pub const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
/// Minimum BOOTP message size; shorter messages are padded.
pub const BOOTP_MIN_LEN: usize = 300;

const OFF_OP: usize = 0;
const OFF_HOPS: usize = 3;
const OFF_XID: usize = 4;
const OFF_FLAGS: usize = 10;
const OFF_CIADDR: usize = 12;
const OFF_YIADDR: usize = 16;
const OFF_GIADDR: usize = 24;
const OFF_CHADDR: usize = 28;
const OFF_OPTIONS: usize = HEADER_LEN + 4;

/// Option codes used here.
pub mod opt {
    /// Subnet mask.
    pub const SUBNET_MASK: u8 = 1;
    /// Routers.
    pub const ROUTERS: u8 = 3;
    /// DNS servers.
    pub const DNS: u8 = 6;
    /// Requested IP address.
    pub const REQUESTED_IP: u8 = 50;
    /// Lease time.
    pub const LEASE_TIME: u8 = 51;
    /// Option overload.
    pub const OVERLOAD: u8 = 52;
    /// DHCP message type.
    pub const MESSAGE_TYPE: u8 = 53;
    /// Server identifier.
    pub const SERVER_ID: u8 = 54;
    /// Parameter request list.
    pub const PARAM_LIST: u8 = 55;
    /// Client identifier.
    pub const CLIENT_ID: u8 = 61;
    /// Relay agent information (RFC 3046).
    pub const RELAY_AGENT_INFO: u8 = 82;
    /// Sub-option of 82: agent circuit id.
    pub const RAI_CIRCUIT_ID: u8 = 1;
    /// Sub-option of 82: agent remote id.
    pub const RAI_REMOTE_ID: u8 = 2;
    /// Sub-option of 82: link selection (RFC 3527).
    pub const RAI_LINK_SELECTION: u8 = 5;
    /// Padding.
    pub const PAD: u8 = 0;
    /// End of options.
    pub const END: u8 = 255;
}

/// DHCP message types (option 53).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum MessageType {
    /// DHCPDISCOVER
    Discover = 1,
    /// DHCPOFFER
    Offer = 2,
    /// DHCPREQUEST
    Request = 3,
    /// DHCPDECLINE
    Decline = 4,
    /// DHCPACK
    Ack = 5,
    /// DHCPNAK
    Nak = 6,
    /// DHCPRELEASE
    Release = 7,
    /// DHCPINFORM
    Inform = 8,
}

impl MessageType {
    /// The type for an option-53 value, `None` for unknown values.
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
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
}

/// The kinds of client message the generator sends (as a relay agent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// DHCPDISCOVER of a new client.
    Discover,
    /// DHCPREQUEST in SELECTING state: requested address (50) and server id (54).
    Select,
    /// DHCPREQUEST in RENEWING state: ciaddr set, no 50/54.
    Renew,
    /// DHCPRELEASE: ciaddr and server id.
    Release,
}

/// Per-packet values patched into a [`Template`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fields {
    /// Transaction id.
    pub xid: u32,
    /// Client hardware address.
    pub mac: [u8; 6],
    /// Client address (renew, release).
    pub ciaddr: Ipv4Addr,
    /// Requested address (select).
    pub requested: Ipv4Addr,
    /// Server identifier (select, release).
    pub server_id: Ipv4Addr,
    /// Link-selection address (option 82 sub-option 5), written when the template has one
    /// ([`Template::add_link_selection`]).
    pub link_selection: Ipv4Addr,
}

/// A precomputed request: the bytes of one message kind with the offsets to patch.
#[derive(Debug, Clone)]
pub struct Template {
    kind: RequestKind,
    bytes: Vec<u8>,
    client_id_at: Option<usize>,
    requested_at: Option<usize>,
    server_id_at: Option<usize>,
    link_selection_at: Option<usize>,
}

/// Why a relay-agent sub-option cannot be added to a template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubOptionError {
    /// Option 82 would exceed 255 bytes.
    #[error("option 82 would be longer than 255 bytes")]
    TooLong,
    /// The template has no END option (never the case for templates built here).
    #[error("the template has no end option")]
    NoEnd,
}

impl Template {
    /// Builds the template of `kind`, relayed by `relay` (giaddr, hops 1), with a client-id
    /// option (type 1 + MAC) when `with_client_id`.
    pub fn new(kind: RequestKind, relay: Ipv4Addr, with_client_id: bool) -> Self {
        let mut b = vec![0u8; OFF_OPTIONS];
        b[OFF_OP] = 1; // BOOTREQUEST
        b[1] = 1; // htype ethernet
        b[2] = 6; // hlen
        b[OFF_HOPS] = 1;
        b[OFF_GIADDR..OFF_GIADDR + 4].copy_from_slice(&relay.octets());
        b[HEADER_LEN..OFF_OPTIONS].copy_from_slice(&MAGIC_COOKIE);
        let msg_type = match kind {
            RequestKind::Discover => MessageType::Discover,
            RequestKind::Select | RequestKind::Renew => MessageType::Request,
            RequestKind::Release => MessageType::Release,
        };
        b.extend_from_slice(&[opt::MESSAGE_TYPE, 1, msg_type as u8]);
        let mut client_id_at = None;
        if with_client_id {
            b.extend_from_slice(&[opt::CLIENT_ID, 7, 1]);
            client_id_at = Some(b.len());
            b.extend_from_slice(&[0; 6]);
        }
        let mut requested_at = None;
        let mut server_id_at = None;
        if kind == RequestKind::Select {
            b.extend_from_slice(&[opt::REQUESTED_IP, 4]);
            requested_at = Some(b.len());
            b.extend_from_slice(&[0; 4]);
        }
        if matches!(kind, RequestKind::Select | RequestKind::Release) {
            b.extend_from_slice(&[opt::SERVER_ID, 4]);
            server_id_at = Some(b.len());
            b.extend_from_slice(&[0; 4]);
        }
        if kind != RequestKind::Release {
            b.extend_from_slice(&[
                opt::PARAM_LIST,
                4,
                opt::SUBNET_MASK,
                opt::ROUTERS,
                opt::DNS,
                opt::LEASE_TIME,
            ]);
        }
        b.push(opt::END);
        if b.len() < BOOTP_MIN_LEN {
            b.resize(BOOTP_MIN_LEN, opt::PAD);
        }
        Self {
            kind,
            bytes: b,
            client_id_at,
            requested_at,
            server_id_at,
            link_selection_at: None,
        }
    }

    /// Makes the template a direct client's (no relay): hops 0, giaddr 0, and the broadcast
    /// flag set on DISCOVER and SELECTING REQUEST (the client has no address yet, so the
    /// server must broadcast its reply, RFC 2131 4.1).
    pub fn set_direct(&mut self) {
        self.bytes[OFF_HOPS] = 0;
        self.bytes[OFF_GIADDR..OFF_GIADDR + 4].fill(0);
        if matches!(self.kind, RequestKind::Discover | RequestKind::Select) {
            self.bytes[OFF_FLAGS..OFF_FLAGS + 2].copy_from_slice(&0x8000u16.to_be_bytes());
        }
    }

    /// Adds sub-option `code` with `value` to the relay agent information option (82): inside
    /// the template's option 82 when it has one, else as a new option 82 placed last, before
    /// END (RFC 3046 2.1). Returns the offset of the value in every written packet.
    pub fn add_relay_sub_option(
        &mut self,
        code: u8,
        value: &[u8],
    ) -> Result<usize, SubOptionError> {
        let sub_len = u8::try_from(value.len()).map_err(|_| SubOptionError::TooLong)?;
        let mut sub = Vec::with_capacity(2 + value.len());
        sub.extend_from_slice(&[code, sub_len]);
        sub.extend_from_slice(value);
        let (insert_at, len_at) = match self.find_option(opt::RELAY_AGENT_INFO) {
            Some(at) => {
                let len = usize::from(self.bytes[at + 1]);
                (at + 2 + len, Some(at + 1))
            }
            None => (
                self.find_option(opt::END).ok_or(SubOptionError::NoEnd)?,
                None,
            ),
        };
        let mut added = sub;
        match len_at {
            Some(l) => {
                let new_len = usize::from(self.bytes[l]) + added.len();
                self.bytes[l] = u8::try_from(new_len).map_err(|_| SubOptionError::TooLong)?;
            }
            None => {
                let len = u8::try_from(added.len()).map_err(|_| SubOptionError::TooLong)?;
                let mut whole = vec![opt::RELAY_AGENT_INFO, len];
                whole.append(&mut added);
                added = whole;
            }
        }
        let value_at = insert_at + added.len() - value.len();
        // Padding after END absorbs the growth; the packet grows only when there is none left.
        let end = self.bytes.iter().rposition(|&b| b == opt::END).unwrap_or(0);
        let pad_after_end = self.bytes.len() - end - 1;
        let grow = added.len().saturating_sub(pad_after_end);
        self.bytes
            .splice(insert_at..insert_at, added.iter().copied());
        self.bytes.truncate(self.bytes.len() - (added.len() - grow));
        for at in [
            &mut self.client_id_at,
            &mut self.requested_at,
            &mut self.server_id_at,
            &mut self.link_selection_at,
        ]
        .into_iter()
        .flatten()
        {
            if *at >= insert_at {
                *at += added.len();
            }
        }
        Ok(value_at)
    }

    /// Adds option 82 sub-option 5 (link selection, RFC 3527); every packet written then
    /// carries [`Fields::link_selection`] there.
    pub fn add_link_selection(&mut self) -> Result<(), SubOptionError> {
        let at = self.add_relay_sub_option(opt::RAI_LINK_SELECTION, &[0; 4])?;
        self.link_selection_at = Some(at);
        Ok(())
    }

    /// The offset of option `code` in the template (options area only), `None` if absent.
    fn find_option(&self, code: u8) -> Option<usize> {
        let mut i = OFF_OPTIONS;
        while let Some(&c) = self.bytes.get(i) {
            if c == code {
                return Some(i);
            }
            match c {
                opt::PAD => i += 1,
                opt::END => return None,
                _ => i += 2 + usize::from(*self.bytes.get(i + 1)?),
            }
        }
        None
    }

    /// The message kind.
    pub fn kind(&self) -> RequestKind {
        self.kind
    }

    /// Length of every packet written from this template.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Always false (a template is never empty); for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Writes one packet into `out` and returns its length (0 if `out` is too small).
    pub fn write(&self, out: &mut [u8], f: &Fields) -> usize {
        let n = self.bytes.len();
        let Some(dst) = out.get_mut(..n) else {
            return 0;
        };
        dst.copy_from_slice(&self.bytes);
        dst[OFF_XID..OFF_XID + 4].copy_from_slice(&f.xid.to_be_bytes());
        dst[OFF_CHADDR..OFF_CHADDR + 6].copy_from_slice(&f.mac);
        if matches!(self.kind, RequestKind::Renew | RequestKind::Release) {
            dst[OFF_CIADDR..OFF_CIADDR + 4].copy_from_slice(&f.ciaddr.octets());
        }
        if let Some(at) = self.client_id_at {
            dst[at..at + 6].copy_from_slice(&f.mac);
        }
        if let Some(at) = self.requested_at {
            dst[at..at + 4].copy_from_slice(&f.requested.octets());
        }
        if let Some(at) = self.server_id_at {
            dst[at..at + 4].copy_from_slice(&f.server_id.octets());
        }
        if let Some(at) = self.link_selection_at {
            dst[at..at + 4].copy_from_slice(&f.link_selection.octets());
        }
        n
    }
}

/// Why a datagram is not a usable DHCP message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Shorter than the fixed header plus cookie.
    #[error("packet too short ({0} bytes)")]
    TooShort(usize),
    /// The magic cookie is wrong.
    #[error("bad magic cookie")]
    BadCookie,
    /// An option runs past the end of the packet.
    #[error("option {0} truncated")]
    TruncatedOption(u8),
    /// An option has a length its type does not allow.
    #[error("option {0} has bad length {1}")]
    BadOptionLength(u8, u8),
    /// No message-type option, or an unknown value.
    #[error("missing or unknown message type")]
    NoMessageType,
}

/// The fields of a parsed DHCP message that the generator and responder look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<'a> {
    /// 1 = BOOTREQUEST, 2 = BOOTREPLY.
    pub op: u8,
    /// Hardware address length.
    pub hlen: u8,
    /// Transaction id.
    pub xid: u32,
    /// Client address.
    pub ciaddr: Ipv4Addr,
    /// "Your" address.
    pub yiaddr: Ipv4Addr,
    /// Relay address.
    pub giaddr: Ipv4Addr,
    /// First 6 bytes of chaddr.
    pub mac: [u8; 6],
    /// Message type (option 53).
    pub msg_type: MessageType,
    /// Server identifier (option 54).
    pub server_id: Option<Ipv4Addr>,
    /// Lease time in seconds (option 51).
    pub lease_time: Option<u32>,
    /// Requested address (option 50).
    pub requested: Option<Ipv4Addr>,
    /// Client identifier (option 61).
    pub client_id: Option<&'a [u8]>,
    /// Option 82 sub-option 5 (link selection), when present and 4 bytes long.
    pub link_selection: Option<Ipv4Addr>,
}

fn ip_at(buf: &[u8], at: usize) -> Ipv4Addr {
    match buf.get(at..at + 4) {
        Some(&[a, b, c, d]) => Ipv4Addr::new(a, b, c, d),
        _ => Ipv4Addr::UNSPECIFIED,
    }
}

fn ip_value(code: u8, v: &[u8]) -> Result<Ipv4Addr, ParseError> {
    match *v {
        [a, b, c, d] => Ok(Ipv4Addr::new(a, b, c, d)),
        _ => Err(ParseError::BadOptionLength(code, v.len() as u8)),
    }
}

/// Parses a DHCP message (request or reply). Options in `sname`/`file` (overload) are not
/// read; the fields the generator needs are always in the options area.
pub fn parse(buf: &[u8]) -> Result<Packet<'_>, ParseError> {
    if buf.len() < OFF_OPTIONS {
        return Err(ParseError::TooShort(buf.len()));
    }
    if buf.get(HEADER_LEN..OFF_OPTIONS) != Some(&MAGIC_COOKIE[..]) {
        return Err(ParseError::BadCookie);
    }
    let mut mac = [0u8; 6];
    mac.copy_from_slice(buf.get(OFF_CHADDR..OFF_CHADDR + 6).unwrap_or(&[0; 6]));
    let xid = match buf.get(OFF_XID..OFF_XID + 4) {
        Some(&[a, b, c, d]) => u32::from_be_bytes([a, b, c, d]),
        _ => 0,
    };
    let mut msg_type = None;
    let mut server_id = None;
    let mut lease_time = None;
    let mut requested = None;
    let mut client_id = None;
    let mut link_selection = None;
    let mut i = OFF_OPTIONS;
    while let Some(&code) = buf.get(i) {
        match code {
            opt::PAD => {
                i += 1;
                continue;
            }
            opt::END => break,
            _ => {}
        }
        let len = *buf.get(i + 1).ok_or(ParseError::TruncatedOption(code))? as usize;
        let v = buf
            .get(i + 2..i + 2 + len)
            .ok_or(ParseError::TruncatedOption(code))?;
        match code {
            opt::MESSAGE_TYPE => {
                let &[t] = v else {
                    return Err(ParseError::BadOptionLength(code, len as u8));
                };
                msg_type = MessageType::from_u8(t);
            }
            opt::SERVER_ID => server_id = Some(ip_value(code, v)?),
            opt::REQUESTED_IP => requested = Some(ip_value(code, v)?),
            opt::LEASE_TIME => {
                let &[a, b, c, d] = v else {
                    return Err(ParseError::BadOptionLength(code, len as u8));
                };
                lease_time = Some(u32::from_be_bytes([a, b, c, d]));
            }
            opt::CLIENT_ID => client_id = Some(v),
            opt::RELAY_AGENT_INFO => link_selection = relay_link_selection(v),
            _ => {}
        }
        i += 2 + len;
    }
    Ok(Packet {
        op: buf[OFF_OP],
        hlen: buf[2],
        xid,
        ciaddr: ip_at(buf, OFF_CIADDR),
        yiaddr: ip_at(buf, OFF_YIADDR),
        giaddr: ip_at(buf, OFF_GIADDR),
        mac,
        msg_type: msg_type.ok_or(ParseError::NoMessageType)?,
        server_id,
        lease_time,
        requested,
        client_id,
        link_selection,
    })
}

/// Sub-option 5 of an option-82 value, when present with 4 bytes.
fn relay_link_selection(v: &[u8]) -> Option<Ipv4Addr> {
    let mut i = 0;
    while let (Some(&code), Some(&len)) = (v.get(i), v.get(i + 1)) {
        let data = v.get(i + 2..i + 2 + usize::from(len))?;
        if code == opt::RAI_LINK_SELECTION {
            return ip_value(code, data).ok();
        }
        i += 2 + usize::from(len);
    }
    None
}

/// What a canned reply carries (used by the responder).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplySpec {
    /// OFFER or ACK (or NAK).
    pub msg_type: MessageType,
    /// Address handed out.
    pub yiaddr: Ipv4Addr,
    /// Server identifier.
    pub server_id: Ipv4Addr,
    /// Lease time in seconds.
    pub lease_time: u32,
}

/// Writes a reply to the request `req` (its first `HEADER_LEN` bytes are copied: xid, flags,
/// giaddr, chaddr) into `out`; returns the length, 0 if `req` or `out` is too short.
pub fn write_reply(req: &[u8], spec: &ReplySpec, out: &mut [u8]) -> usize {
    let (Some(head), Some(dst)) = (req.get(..HEADER_LEN), out.get_mut(..BOOTP_MIN_LEN)) else {
        return 0;
    };
    dst.fill(0);
    dst[..HEADER_LEN].copy_from_slice(head);
    dst[OFF_OP] = 2;
    dst[OFF_YIADDR..OFF_YIADDR + 4].copy_from_slice(&spec.yiaddr.octets());
    // sname and file are not echoed.
    dst[44..HEADER_LEN].fill(0);
    dst[HEADER_LEN..OFF_OPTIONS].copy_from_slice(&MAGIC_COOKIE);
    let mut i = OFF_OPTIONS;
    let mut put = |bytes: &[u8]| {
        dst[i..i + bytes.len()].copy_from_slice(bytes);
        i += bytes.len();
    };
    put(&[opt::MESSAGE_TYPE, 1, spec.msg_type as u8]);
    put(&[opt::SERVER_ID, 4]);
    put(&spec.server_id.octets());
    if spec.msg_type != MessageType::Nak {
        put(&[opt::LEASE_TIME, 4]);
        put(&spec.lease_time.to_be_bytes());
        put(&[opt::SUBNET_MASK, 4, 255, 0, 0, 0]);
    }
    put(&[opt::END]);
    BOOTP_MIN_LEN
}

#[cfg(test)]
mod tests {
    use super::*;

    const RELAY: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

    fn fields() -> Fields {
        Fields {
            xid: 0xdead_beef,
            mac: [2, 1, 2, 3, 4, 5],
            ciaddr: Ipv4Addr::new(10, 0, 0, 9),
            requested: Ipv4Addr::new(10, 0, 0, 7),
            server_id: Ipv4Addr::new(198, 18, 0, 1),
            link_selection: Ipv4Addr::new(10, 64, 0, 1),
        }
    }

    #[test]
    fn discover_template_parses_back() {
        let t = Template::new(RequestKind::Discover, RELAY, true);
        let mut buf = [0u8; 1500];
        let n = t.write(&mut buf, &fields());
        assert_eq!(n, BOOTP_MIN_LEN);
        let p = parse(&buf[..n]).unwrap();
        assert_eq!(p.op, 1);
        assert_eq!(p.msg_type, MessageType::Discover);
        assert_eq!(p.xid, 0xdead_beef);
        assert_eq!(p.mac, [2, 1, 2, 3, 4, 5]);
        assert_eq!(p.giaddr, RELAY);
        assert_eq!(buf[OFF_HOPS], 1);
        assert_eq!(p.ciaddr, Ipv4Addr::UNSPECIFIED);
        assert_eq!(p.client_id, Some(&[1, 2, 1, 2, 3, 4, 5][..]));
        assert_eq!(p.requested, None);
        assert_eq!(p.server_id, None);
    }

    #[test]
    fn select_renew_release_carry_their_fields() {
        let mut buf = [0u8; 1500];
        let f = fields();
        let n = Template::new(RequestKind::Select, RELAY, false).write(&mut buf, &f);
        let p = parse(&buf[..n]).unwrap();
        assert_eq!(p.msg_type, MessageType::Request);
        assert_eq!(p.requested, Some(f.requested));
        assert_eq!(p.server_id, Some(f.server_id));
        assert_eq!(p.ciaddr, Ipv4Addr::UNSPECIFIED);
        assert_eq!(p.client_id, None);

        let n = Template::new(RequestKind::Renew, RELAY, false).write(&mut buf, &f);
        let p = parse(&buf[..n]).unwrap();
        assert_eq!(p.msg_type, MessageType::Request);
        assert_eq!(p.ciaddr, f.ciaddr);
        assert_eq!(p.requested, None);
        assert_eq!(p.server_id, None);

        let n = Template::new(RequestKind::Release, RELAY, true).write(&mut buf, &f);
        let p = parse(&buf[..n]).unwrap();
        assert_eq!(p.msg_type, MessageType::Release);
        assert_eq!(p.ciaddr, f.ciaddr);
        assert_eq!(p.server_id, Some(f.server_id));
    }

    #[test]
    fn link_selection_is_patched_per_packet() {
        let mut buf = [0u8; 1500];
        for kind in [
            RequestKind::Discover,
            RequestKind::Select,
            RequestKind::Renew,
            RequestKind::Release,
        ] {
            let mut t = Template::new(kind, RELAY, true);
            t.add_link_selection().unwrap();
            assert_eq!(t.len(), BOOTP_MIN_LEN, "the padding absorbs option 82");
            let f = fields();
            let n = t.write(&mut buf, &f);
            let p = parse(&buf[..n]).unwrap();
            assert_eq!(p.link_selection, Some(f.link_selection), "{kind:?}");
            assert_eq!(p.client_id, Some(&[1, 2, 1, 2, 3, 4, 5][..]));
            assert_eq!(p.giaddr, RELAY);
            if kind == RequestKind::Select {
                assert_eq!(p.requested, Some(f.requested));
                assert_eq!(p.server_id, Some(f.server_id));
            }
            // Option 82 is the last option: 82, 6, 5, 4, a.b.c.d, END.
            let end = OFF_OPTIONS + buf[OFF_OPTIONS..n].iter().position(|&b| b == 255).unwrap();
            assert_eq!(&buf[end - 8..=end], &[82, 6, 5, 4, 10, 64, 0, 1, 255]);
        }
        // Without the sub-option nothing is written there.
        let n = Template::new(RequestKind::Discover, RELAY, false).write(&mut buf, &fields());
        assert_eq!(parse(&buf[..n]).unwrap().link_selection, None);
    }

    #[test]
    fn link_selection_goes_inside_an_existing_option_82() {
        let mut t = Template::new(RequestKind::Discover, RELAY, false);
        t.add_relay_sub_option(opt::RAI_CIRCUIT_ID, b"eth0/1")
            .unwrap();
        t.add_link_selection().unwrap();
        let mut buf = [0u8; 1500];
        let n = t.write(&mut buf, &fields());
        let at = (OFF_OPTIONS..n).find(|&i| buf[i] == 82).unwrap();
        assert_eq!(
            &buf[at..at + 16],
            &[82, 14, 1, 6, b'e', b't', b'h', b'0', b'/', b'1', 5, 4, 10, 64, 0, 1]
        );
        assert_eq!(buf[at + 16], opt::END);
        assert_eq!(buf.iter().filter(|&&b| b == 82).count(), 1);
        assert_eq!(
            parse(&buf[..n]).unwrap().link_selection,
            Some(fields().link_selection)
        );
        // A template grows past 300 bytes only when the padding runs out.
        let mut big = Template::new(RequestKind::Select, RELAY, true);
        big.add_relay_sub_option(opt::RAI_REMOTE_ID, &[7; 200])
            .unwrap();
        big.add_link_selection().unwrap();
        assert!(big.len() > BOOTP_MIN_LEN);
        let n = big.write(&mut buf, &fields());
        let p = parse(&buf[..n]).unwrap();
        assert_eq!(p.link_selection, Some(fields().link_selection));
        assert_eq!(p.requested, Some(fields().requested));
        assert_eq!(
            big.add_relay_sub_option(opt::RAI_REMOTE_ID, &[7; 60]),
            Err(SubOptionError::TooLong)
        );
    }

    #[test]
    fn direct_templates_have_no_relay_and_ask_for_broadcast() {
        let mut buf = [0u8; 1500];
        for (kind, flag) in [
            (RequestKind::Discover, 0x80),
            (RequestKind::Select, 0x80),
            (RequestKind::Release, 0),
        ] {
            let mut t = Template::new(kind, RELAY, false);
            t.set_direct();
            let n = t.write(&mut buf, &fields());
            let p = parse(&buf[..n]).unwrap();
            assert_eq!(p.giaddr, Ipv4Addr::UNSPECIFIED, "{kind:?}");
            assert_eq!(buf[OFF_HOPS], 0);
            assert_eq!(&buf[OFF_FLAGS..OFF_FLAGS + 2], &[flag, 0], "{kind:?}");
        }
        // Relayed templates never set the flag.
        let n = Template::new(RequestKind::Discover, RELAY, false).write(&mut buf, &fields());
        assert_eq!(&buf[OFF_FLAGS..OFF_FLAGS + 2], &[0, 0]);
        assert_eq!(parse(&buf[..n]).unwrap().giaddr, RELAY);
    }

    #[test]
    fn template_write_refuses_short_buffer() {
        let t = Template::new(RequestKind::Discover, RELAY, false);
        let mut small = [0u8; 100];
        assert_eq!(t.write(&mut small, &fields()), 0);
    }

    #[test]
    fn reply_roundtrip() {
        let mut req = [0u8; 1500];
        let n = Template::new(RequestKind::Discover, RELAY, false).write(&mut req, &fields());
        let spec = ReplySpec {
            msg_type: MessageType::Offer,
            yiaddr: Ipv4Addr::new(10, 1, 2, 3),
            server_id: Ipv4Addr::new(198, 18, 0, 1),
            lease_time: 3600,
        };
        let mut out = [0u8; 1500];
        let m = write_reply(&req[..n], &spec, &mut out);
        assert_eq!(m, BOOTP_MIN_LEN);
        let p = parse(&out[..m]).unwrap();
        assert_eq!(p.op, 2);
        assert_eq!(p.msg_type, MessageType::Offer);
        assert_eq!(p.xid, 0xdead_beef);
        assert_eq!(p.giaddr, RELAY);
        assert_eq!(p.yiaddr, spec.yiaddr);
        assert_eq!(p.server_id, Some(spec.server_id));
        assert_eq!(p.lease_time, Some(3600));
        assert_eq!(write_reply(&req[..100], &spec, &mut out), 0);
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        assert_eq!(parse(&[]), Err(ParseError::TooShort(0)));
        let mut buf = vec![0u8; 300];
        assert_eq!(parse(&buf), Err(ParseError::BadCookie));
        buf[HEADER_LEN..OFF_OPTIONS].copy_from_slice(&MAGIC_COOKIE);
        assert_eq!(parse(&buf), Err(ParseError::NoMessageType));
        // Option length running past the end.
        let mut short = buf[..OFF_OPTIONS].to_vec();
        short.extend_from_slice(&[opt::MESSAGE_TYPE, 5, 2]);
        assert_eq!(parse(&short), Err(ParseError::TruncatedOption(53)));
        // Bad length for a fixed-size option.
        let mut bad = buf[..OFF_OPTIONS].to_vec();
        bad.extend_from_slice(&[opt::SERVER_ID, 3, 1, 2, 3, 255]);
        assert_eq!(parse(&bad), Err(ParseError::BadOptionLength(54, 3)));
        // Unknown message type value.
        let mut unk = buf[..OFF_OPTIONS].to_vec();
        unk.extend_from_slice(&[opt::MESSAGE_TYPE, 1, 99, 255]);
        assert_eq!(parse(&unk), Err(ParseError::NoMessageType));
        // Every prefix of a valid packet, and every single-byte corruption, parses or errors.
        let mut good = [0u8; 1500];
        let n = Template::new(RequestKind::Select, RELAY, true).write(&mut good, &fields());
        for k in 0..=n {
            let _ = parse(&good[..k]);
        }
        for k in OFF_OPTIONS..n {
            let mut c = good[..n].to_vec();
            c[k] = c[k].wrapping_add(77);
            let _ = parse(&c);
        }
    }
}

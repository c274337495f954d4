//! A small, hand-written DHCPv4 codec for the scripted test client.
//!
//! It builds well-formed messages (and, through [`Packet::encode`] plus byte edits, malformed
//! ones) and parses replies without ever panicking on what a server sends back. Options are
//! kept in wire order so a test can compare an option byte for byte (option 82 echo).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// The magic cookie that starts the options field (RFC 2131 §3).
pub const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
/// Length of the fixed BOOTP header, before the cookie.
pub const FIXED_HEADER_LEN: usize = 236;
/// BOOTP minimum message size; shorter messages are padded with zeros.
pub const MIN_MESSAGE_LEN: usize = 300;

/// Option codes the tests use by name.
pub mod opt {
    /// Subnet mask.
    pub const SUBNET_MASK: u8 = 1;
    /// Routers.
    pub const ROUTERS: u8 = 3;
    /// Domain name servers.
    pub const DNS_SERVERS: u8 = 6;
    /// Host name.
    pub const HOST_NAME: u8 = 12;
    /// Domain name.
    pub const DOMAIN_NAME: u8 = 15;
    /// Requested IP address.
    pub const REQUESTED_IP: u8 = 50;
    /// IP address lease time.
    pub const LEASE_TIME: u8 = 51;
    /// DHCP message type.
    pub const MESSAGE_TYPE: u8 = 53;
    /// Server identifier.
    pub const SERVER_ID: u8 = 54;
    /// Parameter request list.
    pub const PARAMETER_REQUEST_LIST: u8 = 55;
    /// Maximum DHCP message size.
    pub const MAX_MESSAGE_SIZE: u8 = 57;
    /// Renewal (T1) time.
    pub const RENEWAL_TIME: u8 = 58;
    /// Rebinding (T2) time.
    pub const REBINDING_TIME: u8 = 59;
    /// Client identifier.
    pub const CLIENT_ID: u8 = 61;
    /// Relay agent information (RFC 3046).
    pub const RELAY_AGENT_INFO: u8 = 82;
    /// Subnet selection (RFC 3011).
    pub const SUBNET_SELECTION: u8 = 118;
    /// Pad.
    pub const PAD: u8 = 0;
    /// End.
    pub const END: u8 = 255;
}

/// DHCP message types (option 53).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
    /// The message type for an option-53 value, if it is one of RFC 2131's eight.
    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
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

/// A DHCPv4 message as the test client builds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// 1 = BOOTREQUEST, 2 = BOOTREPLY.
    pub op: u8,
    /// Hardware type (1 = Ethernet).
    pub htype: u8,
    /// Hardware address length as sent (may lie, for the hlen sweep).
    pub hlen: u8,
    /// Relay hops.
    pub hops: u8,
    /// Transaction id.
    pub xid: u32,
    /// Seconds since the client began.
    pub secs: u16,
    /// Flags (0x8000 = broadcast).
    pub flags: u16,
    /// Client address (RENEWING/REBINDING/INFORM).
    pub ciaddr: Ipv4Addr,
    /// "Your" address.
    pub yiaddr: Ipv4Addr,
    /// Next server address.
    pub siaddr: Ipv4Addr,
    /// Relay agent address.
    pub giaddr: Ipv4Addr,
    /// Client hardware address field (16 bytes on the wire).
    pub chaddr: [u8; 16],
    /// Options in wire order, without PAD/END. Repeated codes are kept as sent.
    pub options: Vec<(u8, Vec<u8>)>,
}

impl Packet {
    /// A BOOTREQUEST with the given message type, transaction id and Ethernet MAC.
    pub fn request(msg: MessageType, xid: u32, mac: [u8; 6]) -> Self {
        let mut chaddr = [0u8; 16];
        chaddr[..6].copy_from_slice(&mac);
        Self {
            op: 1,
            htype: 1,
            hlen: 6,
            hops: 0,
            xid,
            secs: 0,
            flags: 0,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: Ipv4Addr::UNSPECIFIED,
            siaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: Ipv4Addr::UNSPECIFIED,
            chaddr,
            options: vec![(opt::MESSAGE_TYPE, vec![msg as u8])],
        }
    }

    /// Appends an option (no splitting: values over 255 bytes are truncated to 255).
    pub fn push_option(&mut self, code: u8, value: &[u8]) -> &mut Self {
        let len = value.len().min(255);
        self.options
            .push((code, value.get(..len).unwrap_or(value).to_vec()));
        self
    }

    /// The first instance of an option, if present.
    pub fn option(&self, code: u8) -> Option<&[u8]> {
        self.options
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, v)| v.as_slice())
    }

    /// Encodes the message: header, cookie, options, END, zero padding to 300 bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MIN_MESSAGE_LEN + 64);
        out.extend_from_slice(&[self.op, self.htype, self.hlen, self.hops]);
        out.extend_from_slice(&self.xid.to_be_bytes());
        out.extend_from_slice(&self.secs.to_be_bytes());
        out.extend_from_slice(&self.flags.to_be_bytes());
        for addr in [self.ciaddr, self.yiaddr, self.siaddr, self.giaddr] {
            out.extend_from_slice(&addr.octets());
        }
        out.extend_from_slice(&self.chaddr);
        out.extend_from_slice(&[0u8; 64 + 128]); // sname + file
        out.extend_from_slice(&MAGIC_COOKIE);
        for (code, value) in &self.options {
            out.push(*code);
            out.push(u8::try_from(value.len()).unwrap_or(u8::MAX));
            out.extend_from_slice(value.get(..255).unwrap_or(value));
        }
        out.push(opt::END);
        if out.len() < MIN_MESSAGE_LEN {
            out.resize(MIN_MESSAGE_LEN, 0);
        }
        out
    }
}

/// Why a received datagram is not a DHCP message.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ParseReplyError {
    /// Shorter than the fixed header plus cookie.
    #[error("datagram of {0} bytes is shorter than a DHCP header")]
    TooShort(usize),
    /// Cookie missing or wrong.
    #[error("bad magic cookie")]
    BadCookie,
    /// An option's length runs past the end of the datagram.
    #[error("option {code} at offset {offset} overruns the datagram")]
    OptionOverrun {
        /// The option code.
        code: u8,
        /// Offset of the code byte.
        offset: usize,
    },
}

/// A parsed DHCP message received from the server.
#[derive(Debug, Clone)]
pub struct Reply {
    /// 1 = BOOTREQUEST, 2 = BOOTREPLY.
    pub op: u8,
    /// Hardware address length.
    pub hlen: u8,
    /// Relay hops.
    pub hops: u8,
    /// Transaction id.
    pub xid: u32,
    /// Flags.
    pub flags: u16,
    /// Client address.
    pub ciaddr: Ipv4Addr,
    /// Offered/acknowledged address.
    pub yiaddr: Ipv4Addr,
    /// Next server.
    pub siaddr: Ipv4Addr,
    /// Relay agent address.
    pub giaddr: Ipv4Addr,
    /// Client hardware address field.
    pub chaddr: [u8; 16],
    /// Option 53, if present and known.
    pub msg_type: Option<MessageType>,
    /// Options in wire order (repeated instances kept separately).
    pub options_in_order: Vec<(u8, Vec<u8>)>,
    /// Options by code; repeated instances concatenated (RFC 3396).
    pub options: BTreeMap<u8, Vec<u8>>,
    /// The datagram as received.
    pub raw: Vec<u8>,
}

impl Reply {
    /// Parses a datagram. Never panics, whatever the bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, ParseReplyError> {
        let header = bytes
            .get(..FIXED_HEADER_LEN + 4)
            .ok_or(ParseReplyError::TooShort(bytes.len()))?;
        if header.get(FIXED_HEADER_LEN..) != Some(&MAGIC_COOKIE[..]) {
            return Err(ParseReplyError::BadCookie);
        }
        let u32_at = |o: usize| {
            let mut b = [0u8; 4];
            b.copy_from_slice(&header[o..o + 4]);
            b
        };
        let mut chaddr = [0u8; 16];
        chaddr.copy_from_slice(&header[28..44]);
        let mut options_in_order = Vec::new();
        let mut at = FIXED_HEADER_LEN + 4;
        while let Some(&code) = bytes.get(at) {
            match code {
                opt::PAD => at += 1,
                opt::END => break,
                _ => {
                    let overrun = ParseReplyError::OptionOverrun { code, offset: at };
                    let len = usize::from(*bytes.get(at + 1).ok_or(overrun.clone())?);
                    let value = bytes.get(at + 2..at + 2 + len).ok_or(overrun)?;
                    options_in_order.push((code, value.to_vec()));
                    at += 2 + len;
                }
            }
        }
        let mut options: BTreeMap<u8, Vec<u8>> = BTreeMap::new();
        for (code, value) in &options_in_order {
            options.entry(*code).or_default().extend_from_slice(value);
        }
        let msg_type = options
            .get(&opt::MESSAGE_TYPE)
            .and_then(|v| v.first())
            .and_then(|c| MessageType::from_code(*c));
        Ok(Self {
            op: header[0],
            hlen: header[2],
            hops: header[3],
            xid: u32::from_be_bytes(u32_at(4)),
            flags: u16::from_be_bytes([header[10], header[11]]),
            ciaddr: Ipv4Addr::from(u32_at(12)),
            yiaddr: Ipv4Addr::from(u32_at(16)),
            siaddr: Ipv4Addr::from(u32_at(20)),
            giaddr: Ipv4Addr::from(u32_at(24)),
            chaddr,
            msg_type,
            options_in_order,
            options,
            raw: bytes.to_vec(),
        })
    }

    /// An option's value (instances concatenated).
    pub fn option(&self, code: u8) -> Option<&[u8]> {
        self.options.get(&code).map(Vec::as_slice)
    }

    /// An option read as one IPv4 address (exactly 4 bytes).
    pub fn option_addr(&self, code: u8) -> Option<Ipv4Addr> {
        let v = self.option(code)?;
        let b: [u8; 4] = v.try_into().ok()?;
        Some(Ipv4Addr::from(b))
    }

    /// An option read as a list of IPv4 addresses (length a multiple of 4).
    pub fn option_addrs(&self, code: u8) -> Option<Vec<Ipv4Addr>> {
        let v = self.option(code)?;
        if v.is_empty() || v.len() % 4 != 0 {
            return None;
        }
        Some(
            v.chunks_exact(4)
                .map(|c| Ipv4Addr::new(c[0], c[1], c[2], c[3]))
                .collect(),
        )
    }

    /// An option read as a big-endian u32 (lease time, T1, T2).
    pub fn option_u32(&self, code: u8) -> Option<u32> {
        let b: [u8; 4] = self.option(code)?.try_into().ok()?;
        Some(u32::from_be_bytes(b))
    }

    /// The server identifier (option 54).
    pub fn server_id(&self) -> Option<Ipv4Addr> {
        self.option_addr(opt::SERVER_ID)
    }

    /// The first six bytes of chaddr.
    pub fn mac(&self) -> [u8; 6] {
        let mut m = [0u8; 6];
        m.copy_from_slice(&self.chaddr[..6]);
        m
    }
}

/// Relay agent information (option 82) sub-options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayAgentInfo {
    /// Sub-option 1.
    pub circuit_id: Option<Vec<u8>>,
    /// Sub-option 2.
    pub remote_id: Option<Vec<u8>>,
    /// Sub-option 5 (RFC 3527).
    pub link_selection: Option<Ipv4Addr>,
}

impl RelayAgentInfo {
    /// The option-82 value: sub-options 1, 2, 5 in that order.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut sub = |code: u8, v: &[u8]| {
            out.push(code);
            out.push(u8::try_from(v.len()).unwrap_or(u8::MAX));
            out.extend_from_slice(v.get(..255).unwrap_or(v));
        };
        if let Some(c) = &self.circuit_id {
            sub(1, c);
        }
        if let Some(r) = &self.remote_id {
            sub(2, r);
        }
        if let Some(l) = self.link_selection {
            sub(5, &l.octets());
        }
        out
    }
}

/// Formats a MAC as `02:00:00:00:00:01`, the form prodhcpctl prints.
pub fn mac_string(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A locally administered test MAC `02:<tag>:<n as 4 bytes>`.
pub fn test_mac(tag: u8, n: u32) -> [u8; 6] {
    let b = n.to_be_bytes();
    [0x02, tag, b[0], b[1], b[2], b[3]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_then_parse_round_trips_header_and_options() {
        let mut p = Packet::request(MessageType::Discover, 0xdead_beef, test_mac(7, 9));
        p.giaddr = Ipv4Addr::new(198, 18, 1, 1);
        p.push_option(opt::CLIENT_ID, &[1, 2, 0, 0, 0, 0, 9]);
        p.push_option(opt::PARAMETER_REQUEST_LIST, &[1, 3, 6]);
        let bytes = p.encode();
        assert_eq!(bytes.len(), MIN_MESSAGE_LEN);
        let r = Reply::parse(&bytes).unwrap();
        assert_eq!(r.xid, 0xdead_beef);
        assert_eq!(r.giaddr, Ipv4Addr::new(198, 18, 1, 1));
        assert_eq!(r.msg_type, Some(MessageType::Discover));
        assert_eq!(r.mac(), test_mac(7, 9));
        assert_eq!(
            r.option(opt::PARAMETER_REQUEST_LIST),
            Some(&[1u8, 3, 6][..])
        );
        assert_eq!(r.options_in_order.len(), 3);
    }

    #[test]
    fn parse_rejects_short_bad_cookie_and_overrun_without_panicking() {
        let good = Packet::request(MessageType::Discover, 1, test_mac(1, 1)).encode();
        for len in 0..good.len() {
            let _ = Reply::parse(&good[..len]);
        }
        assert_eq!(
            Reply::parse(&good[..100]).unwrap_err(),
            ParseReplyError::TooShort(100)
        );
        let mut bad = good.clone();
        bad[FIXED_HEADER_LEN] = 0;
        assert_eq!(Reply::parse(&bad).unwrap_err(), ParseReplyError::BadCookie);
        let mut overrun = good[..FIXED_HEADER_LEN + 4].to_vec();
        overrun.extend_from_slice(&[12, 10, b'a']);
        assert!(matches!(
            Reply::parse(&overrun),
            Err(ParseReplyError::OptionOverrun { code: 12, .. })
        ));
    }

    #[test]
    fn repeated_options_are_concatenated_by_code_but_kept_in_order() {
        let mut p = Packet::request(MessageType::Ack, 1, test_mac(1, 1));
        p.push_option(opt::CLIENT_ID, &[1, 2]);
        p.push_option(opt::CLIENT_ID, &[3]);
        let r = Reply::parse(&p.encode()).unwrap();
        assert_eq!(r.option(opt::CLIENT_ID), Some(&[1u8, 2, 3][..]));
        assert_eq!(r.options_in_order.len(), 3);
    }

    #[test]
    fn relay_info_encodes_sub_options_in_order() {
        let info = RelayAgentInfo {
            circuit_id: Some(b"eth0".to_vec()),
            remote_id: Some(vec![9]),
            link_selection: Some(Ipv4Addr::new(198, 18, 3, 0)),
        };
        assert_eq!(
            info.encode(),
            vec![1, 4, b'e', b't', b'h', b'0', 2, 1, 9, 5, 4, 198, 18, 3, 0]
        );
        assert_eq!(mac_string(&test_mac(0xab, 1)), "02:ab:00:00:00:01");
    }
}

//! Hand assembly of server replies (BOOTREPLY) into a caller-provided buffer.
//!
//! Option order: 53, 54, then (not for NAK) 51, 58, 59 and 1 (subnet mask, when configured with
//! 4 bytes; any other length is never sent), then the configured options, then 61 (echo,
//! RFC 6842), 56 (NAK only), 82 (echo, RFC 3046), END. A NAK carries only 53, 54, 61, 56, 82.
//!
//! Configured options: with a parameter request list (55), only the options it lists, in its
//! order, each once (RFC 2131 §4.3.1); without one, every configured option in code order. Codes
//! the encoder writes itself (0, 1, 51–54, 56, 58, 59, 61, 82, 255) are never copied from the
//! block.
//!
//! Size: the DHCP payload never exceeds `min(MAX_REPLY, max(576, option 57) − 28 + the echoed
//! 82's encoded length)`: the relay strips the 82 (RFC 3046 §2.2), so the client gets at most
//! its limit, and an 82 of any length (RFC 3396, split into 255-byte instances) fits. Room for the
//! mandatory options (53, 54, 51, 58, 59, 1, 61, 82 and END) is reserved first; the configured
//! options are then added in priority order and **the first one that does not fit ends the list**
//! (lower-priority options are omitted before higher-priority ones). A 56 that does not fit is
//! omitted. The mandatory options other than 61 always fit (at most 36 bytes besides the 82,
//! which brings its own room); a 61 longer than the room left is omitted (at 576 that needs a
//! 61 over 270 bytes: a client sending that must also send option 57 to get it echoed). Values
//! longer than 255 bytes are split into consecutive instances (RFC 3396). The packet is
//! zero-padded after END to 300 bytes (the BOOTP minimum, as ISC does).

use std::net::Ipv4Addr;

use prodhcp_config::options::OptionBlock;

use super::{code, MessageType, Request, HEADER_LEN, MAGIC_COOKIE};

/// Largest reply: 1500-byte MTU − 20 (IPv4) − 8 (UDP).
pub const MAX_REPLY: usize = 1472;

/// Size a reply is padded to (BOOTP minimum message, RFC 951).
const MIN_REPLY: usize = 300;

/// Default and minimum maximum message size a client must accept (RFC 2131 §2), IP+UDP included.
const MIN_MAX_MESSAGE_SIZE: usize = 576;

/// IPv4 + UDP header bytes counted in option 57.
const IP_UDP_HEADERS: usize = 28;

/// Codes the encoder writes itself and never copies from the configured block.
const OWN_CODES: [u8; 12] = [
    code::PAD,
    code::SUBNET_MASK,
    code::LEASE_TIME,
    code::OVERLOAD,
    code::MESSAGE_TYPE,
    code::SERVER_ID,
    code::MESSAGE,
    code::RENEWAL_TIME,
    code::REBINDING_TIME,
    code::CLIENT_ID,
    code::RELAY_AGENT_INFO,
    code::END,
];

/// What the allocation engine decided; everything else is echoed from the request.
#[derive(Clone, Copy)]
pub struct ReplyParams<'a> {
    /// Offer, Ack or Nak.
    pub msg_type: MessageType,
    /// The address offered or acknowledged; 0 for NAK and for the ACK to an INFORM.
    pub yiaddr: Ipv4Addr,
    /// The request's ciaddr for an ACK to INFORM/RENEW; 0 otherwise.
    pub ciaddr: Ipv4Addr,
    /// Option 54, always sent.
    pub server_id: Ipv4Addr,
    /// Option 51.
    pub lease_time: Option<u32>,
    /// Option 58 (T1).
    pub renewal_time: Option<u32>,
    /// Option 59 (T2).
    pub rebinding_time: Option<u32>,
    /// The subnet's configured options, pre-encoded at config load (values without code and
    /// length bytes, ascending code order).
    pub options: &'a OptionBlock,
    /// Option 56 (NAK reason); only sent in a NAK.
    pub message: Option<&'a str>,
}

/// Writes the reply to `req` into `out` and returns its length (≥ 300, ≤ the size limit).
pub fn encode_reply(
    req: &Request<'_>,
    params: &ReplyParams<'_>,
    out: &mut [u8; MAX_REPLY],
) -> usize {
    let relay = req.relay_agent_info.as_deref();
    // The relay agent removes the 82 before it forwards the reply (RFC 3046 §2.2), so the
    // client's size limit applies to the reply without it: an 82 of any length is echoed whole.
    let limit = (reply_limit(req.max_message_size) + relay.map_or(0, |r| encoded_len(r.len())))
        .min(MAX_REPLY);
    write_header(req, params, out);

    let nak = params.msg_type == MessageType::Nak;
    let times: [(u8, Option<u32>); 3] = if nak {
        [
            (code::LEASE_TIME, None),
            (code::RENEWAL_TIME, None),
            (code::REBINDING_TIME, None),
        ]
    } else {
        [
            (code::LEASE_TIME, params.lease_time),
            (code::RENEWAL_TIME, params.renewal_time),
            (code::REBINDING_TIME, params.rebinding_time),
        ]
    };
    // A subnet mask that is not 4 bytes is a configuration error; it is never sent.
    let mask = params
        .options
        .get(code::SUBNET_MASK)
        .filter(|m| !nak && m.len() == 4);

    // Room for the options that always go in, END included.
    let mut mandatory = encoded_len(1) + encoded_len(4) + 1;
    mandatory += times.iter().filter(|(_, v)| v.is_some()).count() * encoded_len(4);
    mandatory += mask.map_or(0, |m| encoded_len(m.len()));
    mandatory += relay.map_or(0, |r| encoded_len(r.len()));
    let room = limit - HEADER_LEN;
    let client_id = req
        .client_id
        .as_deref()
        .filter(|id| mandatory + encoded_len(id.len()) <= room);
    mandatory += client_id.map_or(0, |id| encoded_len(id.len()));

    let mut w = Writer {
        out,
        at: HEADER_LEN,
        end: limit - 1, // the END byte is always reserved
    };
    w.option(code::MESSAGE_TYPE, &[params.msg_type.as_u8()]);
    w.option(code::SERVER_ID, &params.server_id.octets());
    for (option, value) in times {
        if let Some(value) = value {
            w.option(option, &value.to_be_bytes());
        }
    }
    if let Some(mask) = mask {
        w.option(code::SUBNET_MASK, mask);
    }

    // Optional options must leave `mandatory − written` bytes free.
    let optional_end = (HEADER_LEN + room).saturating_sub(mandatory - (w.at - HEADER_LEN));
    if !nak {
        write_configured(&mut w, req, params.options, optional_end);
    }
    let message = if nak { params.message } else { None };
    let message_len = message.map_or(0, |m| encoded_len(m.len()));
    let after_message = w.at + message_len;

    if let Some(id) = client_id {
        w.option(code::CLIENT_ID, id);
    }
    if let Some(message) = message.filter(|_| after_message <= optional_end) {
        w.option(code::MESSAGE, message.as_bytes());
    }
    if let Some(relay) = relay {
        w.option(code::RELAY_AGENT_INFO, relay);
    }
    w.finish()
}

/// The largest DHCP payload the client accepts: `min(MAX_REPLY, max(576, option 57) − 28)`.
fn reply_limit(max_message_size: Option<u16>) -> usize {
    let accepted = usize::from(max_message_size.unwrap_or(0)).max(MIN_MAX_MESSAGE_SIZE);
    (accepted - IP_UDP_HEADERS).min(MAX_REPLY)
}

/// Bytes an option of `len` value bytes takes, split into 255-byte instances (RFC 3396).
fn encoded_len(len: usize) -> usize {
    if len == 0 {
        2
    } else {
        len + 2 * len.div_ceil(255)
    }
}

fn write_header(req: &Request<'_>, params: &ReplyParams<'_>, out: &mut [u8; MAX_REPLY]) {
    let header = &mut out[..HEADER_LEN];
    header.fill(0);
    header[0] = 2; // BOOTREPLY
    header[1] = req.htype;
    header[2] = req.hlen;
    header[4..8].copy_from_slice(&req.xid.to_be_bytes());
    header[10..12].copy_from_slice(&req.flags.to_be_bytes());
    header[12..16].copy_from_slice(&params.ciaddr.octets());
    header[16..20].copy_from_slice(&params.yiaddr.octets());
    header[24..28].copy_from_slice(&req.giaddr.octets());
    let chaddr_len = req.chaddr.len().min(16);
    if let (Some(to), Some(from)) = (
        header.get_mut(28..28 + chaddr_len),
        req.chaddr.get(..chaddr_len),
    ) {
        to.copy_from_slice(from);
    }
    header[236..240].copy_from_slice(&MAGIC_COOKIE);
}

/// Copies the configured options (PRL order, or code order without a PRL) while they fit
/// before `end`; the first that does not fit ends the list.
fn write_configured(w: &mut Writer<'_>, req: &Request<'_>, options: &OptionBlock, end: usize) {
    let fits = |w: &mut Writer<'_>, option: u8, value: &[u8]| -> bool {
        if w.at + encoded_len(value.len()) > end {
            return false;
        }
        w.option(option, value);
        true
    };
    match req.param_request_list.as_deref() {
        Some(prl) => {
            let mut done = [0u64; 4];
            for &option in prl {
                let (word, bit) = (usize::from(option / 64), 1u64 << (option % 64));
                let Some(seen) = done.get_mut(word) else {
                    continue;
                };
                if *seen & bit != 0 || OWN_CODES.contains(&option) {
                    continue;
                }
                *seen |= bit;
                if let Some(value) = options.get(option) {
                    if !fits(w, option, value) {
                        break;
                    }
                }
            }
        }
        None => {
            for (option, value) in options.iter() {
                if !OWN_CODES.contains(&option) && !fits(w, option, value) {
                    break;
                }
            }
        }
    }
}

/// Bounded option writer over the reply buffer.
struct Writer<'o> {
    out: &'o mut [u8; MAX_REPLY],
    /// Next byte to write.
    at: usize,
    /// Options may not extend past this offset (END goes at or before it).
    end: usize,
}

impl Writer<'_> {
    /// Writes one option, split into 255-byte instances; writes nothing if it does not fit.
    fn option(&mut self, option: u8, value: &[u8]) {
        if self.at + encoded_len(value.len()) > self.end {
            return;
        }
        if value.is_empty() {
            self.put(&[option, 0]);
            return;
        }
        for chunk in value.chunks(255) {
            // `chunks(255)` yields at most 255 bytes, so the length fits a u8.
            self.put(&[option, chunk.len() as u8]);
            self.put(chunk);
        }
    }

    fn put(&mut self, bytes: &[u8]) {
        if let Some(to) = self.out.get_mut(self.at..self.at + bytes.len()) {
            to.copy_from_slice(bytes);
            self.at += bytes.len();
        }
    }

    /// Writes END and the zero padding; returns the reply length.
    fn finish(mut self) -> usize {
        self.put(&[code::END]);
        if self.at < MIN_REPLY {
            if let Some(pad) = self.out.get_mut(self.at..MIN_REPLY) {
                pad.fill(0);
            }
            self.at = MIN_REPLY;
        }
        self.at
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::decode::tests::{dhclient_discover, header};
    use crate::codec::{decode, MessageType};
    use dhcproto::v4::{self, DhcpOption, OptionCode};
    use dhcproto::{Decodable, Decoder};
    use proptest::prelude::*;

    /// An option block holding `options`.
    fn block(options: Vec<(u8, Vec<u8>)>) -> OptionBlock {
        let mut block = OptionBlock::new();
        for (code, value) in options {
            block.insert(code, value);
        }
        block
    }

    fn subnet_options() -> OptionBlock {
        block(vec![
            (1, vec![255, 255, 255, 0]),
            (3, vec![198, 18, 0, 1]),
            (6, vec![198, 18, 0, 53, 198, 18, 0, 54]),
            (15, b"lab.example".to_vec()),
            (42, vec![198, 18, 0, 123]),
        ])
    }

    fn offer<'a>(options: &'a OptionBlock) -> ReplyParams<'a> {
        ReplyParams {
            msg_type: MessageType::Offer,
            yiaddr: Ipv4Addr::new(198, 18, 0, 77),
            ciaddr: Ipv4Addr::UNSPECIFIED,
            server_id: Ipv4Addr::new(198, 18, 0, 10),
            lease_time: Some(3600),
            renewal_time: Some(1800),
            rebinding_time: Some(3150),
            options,
            message: None,
        }
    }

    /// The (code, concatenated value) list of a reply's options field, in wire order.
    fn reply_options(reply: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut list: Vec<(u8, Vec<u8>)> = Vec::new();
        let mut at = HEADER_LEN;
        let mut previous = None;
        loop {
            let option = reply[at];
            if option == code::END {
                break;
            }
            let len = usize::from(reply[at + 1]);
            let value = &reply[at + 2..at + 2 + len];
            match list.last_mut() {
                Some((c, v)) if previous == Some(option) && *c == option => {
                    v.extend_from_slice(value)
                }
                _ => list.push((option, value.to_vec())),
            }
            previous = Some(option);
            at += 2 + len;
        }
        assert!(
            reply[at + 1..].iter().all(|&b| b == 0),
            "padding after END is zero"
        );
        list
    }

    fn codes(reply: &[u8]) -> Vec<u8> {
        reply_options(reply).into_iter().map(|(c, _)| c).collect()
    }

    fn relayed_request(prl: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let rai = vec![
            1, 4, b'p', b'o', b'r', b't', 2, 2, 0xab, 0xcd, 5, 4, 198, 18, 9, 0,
        ];
        let mut extra = vec![61, 7, 1, 2, 0, 0x5e, 0x10, 0, 1];
        if !prl.is_empty() {
            extra.extend_from_slice(&[55, prl.len() as u8]);
            extra.extend_from_slice(prl);
        }
        extra.extend_from_slice(&[82, rai.len() as u8]);
        extra.extend_from_slice(&rai);
        let mut p = header();
        p[24..28].copy_from_slice(&[198, 18, 9, 1]);
        p.extend_from_slice(&[53, 1, 1]);
        p.extend_from_slice(&extra);
        p.push(255);
        (p, rai)
    }

    #[test]
    fn offer_round_trips_through_dhcproto() {
        let (packet, rai) = relayed_request(&[1, 3, 6, 15, 42]);
        let req = decode(&packet).unwrap();
        let options = subnet_options();
        let mut out = [0xa5u8; MAX_REPLY];
        let n = encode_reply(&req, &offer(&options), &mut out);
        assert_eq!(n, 336);

        let reply = v4::Message::decode(&mut Decoder::new(&out[..n])).unwrap();
        assert_eq!(reply.opcode(), v4::Opcode::BootReply);
        assert_eq!(reply.xid(), req.xid);
        assert_eq!(u16::from(reply.flags()), req.flags);
        assert_eq!(reply.yiaddr(), Ipv4Addr::new(198, 18, 0, 77));
        assert_eq!(reply.giaddr(), Ipv4Addr::new(198, 18, 9, 1));
        assert_eq!(reply.chaddr(), req.chaddr);
        assert_eq!(reply.hops(), 0);
        assert_eq!(reply.secs(), 0);
        let opts = reply.opts();
        assert_eq!(opts.msg_type(), Some(v4::MessageType::Offer));
        assert_eq!(
            opts.get(OptionCode::ServerIdentifier),
            Some(&DhcpOption::ServerIdentifier(Ipv4Addr::new(198, 18, 0, 10)))
        );
        assert_eq!(
            opts.get(OptionCode::AddressLeaseTime),
            Some(&DhcpOption::AddressLeaseTime(3600))
        );
        assert_eq!(
            opts.get(OptionCode::Renewal),
            Some(&DhcpOption::Renewal(1800))
        );
        assert_eq!(
            opts.get(OptionCode::Rebinding),
            Some(&DhcpOption::Rebinding(3150))
        );
        assert_eq!(
            opts.get(OptionCode::SubnetMask),
            Some(&DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)))
        );
        assert_eq!(
            opts.get(OptionCode::Router),
            Some(&DhcpOption::Router(vec![Ipv4Addr::new(198, 18, 0, 1)]))
        );
        assert!(opts.get(OptionCode::DomainNameServer).is_some());
        assert!(opts.get(OptionCode::DomainName).is_some());
        assert!(opts.get(OptionCode::NtpServers).is_some());
        assert!(opts.get(OptionCode::ClientIdentifier).is_some());
        // 82 decoded by dhcproto the same way from request and reply ...
        let request = v4::Message::decode(&mut Decoder::new(&packet)).unwrap();
        assert_eq!(
            opts.get(OptionCode::RelayAgentInformation),
            request.opts().get(OptionCode::RelayAgentInformation)
        );
        // ... and byte-for-byte identical, last before END.
        let list = reply_options(&out[..n]);
        assert_eq!(list.last(), Some(&(82, rai)));
        assert_eq!(
            codes(&out[..n]),
            [53, 54, 51, 58, 59, 1, 3, 6, 15, 42, 61, 82]
        );
    }

    #[test]
    fn prl_order_is_followed_and_unlisted_options_omitted() {
        let (packet, _) = relayed_request(&[42, 6, 3, 1, 6, 99, 53, 61]);
        let req = decode(&packet).unwrap();
        let options = subnet_options();
        let mut out = [0u8; MAX_REPLY];
        let n = encode_reply(&req, &offer(&options), &mut out);
        assert_eq!(codes(&out[..n]), [53, 54, 51, 58, 59, 1, 42, 6, 3, 61, 82]);
    }

    #[test]
    fn without_prl_all_configured_options_in_code_order() {
        let p = with_prl_removed();
        let req = decode(&p).unwrap();
        assert!(req.param_request_list.is_none());
        let options = subnet_options();
        let mut out = [0u8; MAX_REPLY];
        let n = encode_reply(&req, &offer(&options), &mut out);
        assert_eq!(codes(&out[..n]), [53, 54, 51, 58, 59, 1, 3, 6, 15, 42]);
    }

    fn with_prl_removed() -> Vec<u8> {
        let mut p = header();
        p.extend_from_slice(&[53, 1, 1, 255]);
        p
    }

    #[test]
    fn nak_carries_only_its_options() {
        let (packet, rai) = relayed_request(&[1, 3, 6]);
        let req = decode(&packet).unwrap();
        let options = subnet_options();
        let params = ReplyParams {
            msg_type: MessageType::Nak,
            yiaddr: Ipv4Addr::UNSPECIFIED,
            message: Some("address not available"),
            ..offer(&options)
        };
        let mut out = [0u8; MAX_REPLY];
        let n = encode_reply(&req, &params, &mut out);
        let list = reply_options(&out[..n]);
        assert_eq!(codes(&out[..n]), [53, 54, 61, 56, 82]);
        assert_eq!(list[0].1, [6]);
        assert_eq!(list[3].1, b"address not available");
        assert_eq!(list[4].1, rai);
        let reply = v4::Message::decode(&mut Decoder::new(&out[..n])).unwrap();
        assert_eq!(reply.opts().msg_type(), Some(v4::MessageType::Nak));
        assert_eq!(reply.yiaddr(), Ipv4Addr::UNSPECIFIED);
    }

    #[test]
    fn inform_ack_echoes_ciaddr_without_lease_times() {
        let mut p = header();
        p[12..16].copy_from_slice(&[198, 18, 0, 99]);
        p.extend_from_slice(&[53, 1, 8, 255]);
        let req = decode(&p).unwrap();
        let options = subnet_options();
        let params = ReplyParams {
            msg_type: MessageType::Ack,
            yiaddr: Ipv4Addr::UNSPECIFIED,
            ciaddr: req.ciaddr,
            lease_time: None,
            renewal_time: None,
            rebinding_time: None,
            ..offer(&options)
        };
        let mut out = [0u8; MAX_REPLY];
        let n = encode_reply(&req, &params, &mut out);
        assert_eq!(codes(&out[..n]), [53, 54, 1, 3, 6, 15, 42]);
        let reply = v4::Message::decode(&mut Decoder::new(&out[..n])).unwrap();
        assert_eq!(reply.ciaddr(), Ipv4Addr::new(198, 18, 0, 99));
        assert_eq!(reply.yiaddr(), Ipv4Addr::UNSPECIFIED);
    }

    fn huge_block() -> OptionBlock {
        let mut list: Vec<(u8, Vec<u8>)> = (2..=250u8)
            .filter(|c| !OWN_CODES.contains(c))
            .map(|c| (c, vec![c; 100]))
            .collect();
        list.push((1, vec![255, 255, 0, 0]));
        block(list)
    }

    #[test]
    fn size_limit_with_576_and_a_huge_block() {
        let (mut packet, rai) = relayed_request(&[]);
        packet.pop();
        packet.extend_from_slice(&[57, 2, 0x02, 0x40, 255]);
        let req = decode(&packet).unwrap();
        assert_eq!(req.max_message_size, Some(576));
        let options = huge_block();
        let mut out = [0u8; MAX_REPLY];
        let n = encode_reply(&req, &offer(&options), &mut out);
        assert!(n <= 576 - 28, "{n}");
        let list = reply_options(&out[..n]);
        let c: Vec<u8> = list.iter().map(|(c, _)| *c).collect();
        // mandatory all there, configured a prefix in code order (2 and 3 fit, 4 does not)
        assert_eq!(c, [53, 54, 51, 58, 59, 1, 2, 3, 61, 82]);
        assert_eq!(list.last().unwrap().1, rai);
        assert!(v4::Message::decode(&mut Decoder::new(&out[..n])).is_ok());

        // no 57: the 576 default; a large 57: capped at MAX_REPLY; in between: its value
        for (mms, limit) in [
            (None, 548),
            (Some(0), 548),
            (Some(1000), 972),
            (Some(65535), 1472),
        ] {
            let req = Request {
                max_message_size: mms,
                ..req.clone()
            };
            let n = encode_reply(&req, &offer(&options), &mut out);
            assert!(n <= limit && n + 100 + 2 > limit, "{mms:?}: {n}");
            assert_eq!(reply_options(&out[..n]).last().unwrap().0, 82);
        }
    }

    #[test]
    fn long_values_are_split_and_an_oversized_client_id_is_dropped() {
        let options = block(vec![(43, (0..600u32).map(|i| i as u8).collect())]);
        let mut p = header();
        p.extend_from_slice(&[53, 1, 1, 57, 2, 0x05, 0xdc, 255]);
        let req = decode(&p).unwrap();
        let mut out = [0u8; MAX_REPLY];
        let n = encode_reply(&req, &offer(&options), &mut out);
        let list = reply_options(&out[..n]);
        assert_eq!(list.last().unwrap().0, 43);
        assert_eq!(list.last().unwrap().1.len(), 600);
        // three instances on the wire: 255 + 255 + 90
        let at = HEADER_LEN + 3 + 6 * 4;
        assert_eq!(out[at..at + 2], [43, 255]);
        assert_eq!(out[at + 257..at + 259], [43, 255]);
        assert_eq!(out[at + 514..at + 516], [43, 90]);

        // a client id that cannot fit the 548-byte reply is left out, nothing overflows
        let req = Request {
            client_id: Some(vec![7u8; 2000].into()),
            max_message_size: None,
            ..req
        };
        let n = encode_reply(&req, &offer(&options), &mut out);
        assert!(n <= 548);
        assert!(!codes(&out[..n]).contains(&61));
    }

    #[test]
    fn stale_buffer_contents_never_leak() {
        let req_bytes = dhclient_discover(&[]);
        let req = decode(&req_bytes).unwrap();
        let options = subnet_options();
        let mut dirty = [0xffu8; MAX_REPLY];
        let mut clean = [0u8; MAX_REPLY];
        let n = encode_reply(&req, &offer(&options), &mut dirty);
        assert_eq!(n, encode_reply(&req, &offer(&options), &mut clean));
        assert_eq!(dirty[..n], clean[..n]);
    }

    proptest! {
        #[test]
        fn any_reply_respects_limits_and_decodes(
            prl in proptest::option::of(proptest::collection::vec(any::<u8>(), 1..40)),
            mms in proptest::option::of(any::<u16>()),
            client_id in proptest::option::of(proptest::collection::vec(any::<u8>(), 1..400)),
            rai in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..=700)),
            configured in proptest::collection::btree_map(any::<u8>(), proptest::collection::vec(any::<u8>(), 0..300), 0..30),
            kind in 0u8..3,
        ) {
            let base = dhclient_discover(&[]);
            let mut req = decode(&base).unwrap();
            req.param_request_list = prl.map(Into::into);
            req.max_message_size = mms;
            req.client_id = client_id.map(Into::into);
            req.relay_agent_info = rai.clone().map(Into::into);
            let options = block(configured.into_iter().collect());
            let msg_type = [MessageType::Offer, MessageType::Ack, MessageType::Nak][usize::from(kind)];
            let params = ReplyParams { msg_type, message: Some("no"), ..offer(&options) };
            let mut out = [0u8; MAX_REPLY];
            let n = encode_reply(&req, &params, &mut out);
            let relay_room = rai.as_ref().map_or(0, |r| encoded_len(r.len()));
            prop_assert!(n >= MIN_REPLY && n <= (reply_limit(mms) + relay_room).min(MAX_REPLY));
            // What the client gets once the relay strips the 82 fits its limit.
            prop_assert!(n - relay_room <= reply_limit(mms));
            let list = reply_options(&out[..n]);
            prop_assert_eq!(list[0].0, 53);
            prop_assert_eq!(list[1].0, 54);
            if let Some(rai) = &rai {
                // Echoed whole, split into 255-byte instances (RFC 3396): they concatenate.
                let echoed: Vec<u8> = list.iter().filter(|(c, _)| *c == 82).flat_map(|(_, v)| v.clone()).collect();
                prop_assert_eq!(&echoed, rai);
                prop_assert_eq!(list.last().map(|(c, _)| *c), Some(82));
            }
            let sent = |c: u8| list.iter().any(|(code, _)| *code == c);
            prop_assert_eq!(sent(code::LEASE_TIME), msg_type != MessageType::Nak);
            if let Some(id) = &req.client_id {
                // at most 36 mandatory bytes besides 61 and 82 (which brings its own room),
                // 308 bytes of room at 576
                prop_assert!(sent(code::CLIENT_ID) || id.len() > 270 || relay_room + 576 - 28 > MAX_REPLY);
            }
            let mut order = list.iter().map(|(c, _)| *c).filter(|c| !OWN_CODES.contains(c));
            if let Some(prl) = &req.param_request_list {
                // configured options: a subsequence of the PRL, in PRL order
                let mut rest = prl.iter();
                prop_assert!(order.all(|c| rest.any(|&p| p == c)));
            } else {
                let codes: Vec<u8> = order.collect();
                prop_assert!(codes.windows(2).all(|w| w[0] < w[1]));
            }
            let mut borrowed = dhcproto::v4::borrowed::Message::new(&out[..n]).unwrap().opts();
            prop_assert_eq!(borrowed.next().map(|o| o.data().to_vec()), Some(vec![msg_type.as_u8()]));
        }
    }
}

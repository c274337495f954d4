//! Decodes arbitrary bytes; when they are a valid request, encodes a reply (OFFER, ACK or NAK,
//! chosen from the input) and decodes that reply with dhcproto's owned decoder. Nothing may
//! panic, and the reply must keep the encoder's promises.
#![no_main]

use std::net::Ipv4Addr;
use std::sync::OnceLock;

use dhcproto::v4::{self, OptionCode};
use dhcproto::{Decodable, Decoder};
use libfuzzer_sys::fuzz_target;
use prodhcp_config::options::OptionBlock;
use prodhcp_worker::codec::{decode, encode_reply, MessageType, ReplyParams, MAX_REPLY};

/// A subnet's options: typical ones, plus a long one (split in two) and a vendor blob.
fn options() -> &'static OptionBlock {
    static BLOCK: OnceLock<OptionBlock> = OnceLock::new();
    BLOCK.get_or_init(|| {
        let mut block = OptionBlock::new();
        block.insert(1, vec![255, 255, 255, 0]);
        block.insert(3, vec![198, 18, 0, 1]);
        block.insert(6, vec![198, 18, 0, 53, 198, 18, 0, 54]);
        block.insert(15, b"fuzz.example".to_vec());
        block.insert(42, vec![198, 18, 0, 123]);
        block.insert(43, (0..=255u8).cycle().take(300).collect());
        block.insert(119, vec![4, b'f', b'u', b'z', b'z', 0]);
        block
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(req) = decode(data) else {
        return;
    };
    let msg_type = match data.last().copied().unwrap_or(0) % 3 {
        0 => MessageType::Offer,
        1 => MessageType::Ack,
        _ => MessageType::Nak,
    };
    let nak = msg_type == MessageType::Nak;
    let yiaddr = if nak {
        Ipv4Addr::UNSPECIFIED
    } else {
        Ipv4Addr::new(198, 18, 0, 77)
    };
    let params = ReplyParams {
        msg_type,
        yiaddr,
        ciaddr: req.ciaddr,
        server_id: Ipv4Addr::new(198, 18, 0, 10),
        lease_time: Some(3600),
        renewal_time: Some(1800),
        rebinding_time: Some(3150),
        options: options(),
        message: Some("no address for you"),
    };
    let mut out = [0u8; MAX_REPLY];
    let n = encode_reply(&req, &params, &mut out);
    // The relay strips the echoed 82 (RFC 3046 §2.2), so it brings its own room.
    let relay = req.relay_agent_info.as_deref();
    let relay_room = relay.map_or(0, |r| {
        if r.is_empty() {
            2
        } else {
            r.len() + 2 * r.len().div_ceil(255)
        }
    });
    let limit =
        (usize::from(req.max_message_size.unwrap_or(0)).max(576) - 28 + relay_room).min(MAX_REPLY);
    assert!(
        (300..=limit).contains(&n),
        "reply length {n}, limit {limit}"
    );
    let reply = &out[..n];

    let owned = v4::Message::decode(&mut Decoder::new(reply)).expect("dhcproto decodes the reply");
    assert_eq!(owned.opcode(), v4::Opcode::BootReply);
    assert_eq!(owned.xid(), req.xid);
    assert_eq!(owned.yiaddr(), yiaddr);
    assert_eq!(owned.chaddr(), req.chaddr);
    assert_eq!(
        owned.opts().msg_type().map(u8::from),
        Some(msg_type.as_u8())
    );
    assert!(owned.opts().get(OptionCode::ServerIdentifier).is_some());

    // 82 is echoed byte for byte as the last option, split into 255-byte instances when
    // longer (RFC 3396; the borrowed iterator gives raw instances), whenever it fits a
    // 1472-byte reply besides the 34 bytes of mandatory options.
    let message = v4::borrowed::Message::new(reply).expect("at least 240 bytes");
    let last = message.opts().last().map(|o| u8::from(o.code()));
    if let Some(rai) = relay.filter(|_| 240 + 34 + relay_room <= MAX_REPLY) {
        let echoed: Vec<u8> = message
            .opts()
            .filter(|o| u8::from(o.code()) == 82)
            .flat_map(|o| o.data().to_vec())
            .collect();
        assert_eq!(echoed, rai);
        assert_eq!(last, Some(82));
    }
});

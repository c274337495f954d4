//! Decodes arbitrary bytes as a DHCPv4 request: must never panic, and what it accepts must
//! satisfy the decoder's documented guarantees.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prodhcp_worker::codec::decode;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = decode(data) {
        assert!(req.hlen <= 16 && req.chaddr.len() == usize::from(req.hlen));
        assert!(req.hops <= 16);
        assert!(req.msg_type.is_client());
        assert!(req.client_id.as_ref().is_none_or(|id| !id.is_empty()));
        assert!(req.hlen > 0 || req.client_id.is_some());
        assert!(req
            .param_request_list
            .as_ref()
            .is_none_or(|l| !l.is_empty()));
        assert!(req.hostname.is_none_or(|h| !h.is_empty()));
    }
});

//! The control protocol's request parser on arbitrary lines: never panics, and an accepted
//! request re-encodes to a line that parses to the same request.
#![no_main]
use libfuzzer_sys::fuzz_target;
use prodhcp_proto::{encode_request, parse_request};

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else { return };
    if let Ok(req) = parse_request(line) {
        let again = encode_request(&req).expect("an accepted request encodes");
        assert_eq!(parse_request(again.trim_end()).ok(), Some(req));
    }
});

//! What a replication peer sends, after decryption, on arbitrary bytes: syncd's message decoder,
//! the clear-text preamble, a bulk entry and a ring record never panic; an accepted message
//! re-encodes to bytes that decode to the same message, and so does an accepted ring record
//! (its decoder ignores bits no field uses, so the re-encoding is the canonical form, not
//! always the input's bytes — the first run of this target found that); the raft message
//! decoder (the payload of `Message::Raft`) returns an error, never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;
use prodhcp_syncd::apply::bulk_entry_from_bytes;
use prodhcp_syncd::consensus::decode_raft_message;
use prodhcp_syncd::handshake::Preamble;
use prodhcp_syncd::Message;
use shm_layout::ChangeRecord;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Message::decode(data) {
        let again = m.to_bytes().expect("an accepted message encodes");
        assert_eq!(Message::decode(&again).ok(), Some(m));
    }
    let _ = Preamble::decode(data);
    let _ = decode_raft_message(data);
    let _ = bulk_entry_from_bytes(data);
    if let Ok(r) = ChangeRecord::from_bytes(data) {
        let again = r.to_bytes();
        assert_eq!(ChangeRecord::from_bytes(&again).ok(), Some(r));
    }
});

//! Simulated client identities: each client is a seed and an index, from which its MAC,
//! client-id and transaction id are derived, so a run can be reproduced and a record read back.

/// The MAC of client `index` in run `seed`: locally administered (02), then the seed byte, then
/// the index (big-endian). Unique for 2^32 indices per seed.
pub fn mac_for(seed: u8, index: u32) -> [u8; 6] {
    let i = index.to_be_bytes();
    [0x02, seed, i[0], i[1], i[2], i[3]]
}

/// The client-id option value a client sends when client-ids are on: type 1 (Ethernet) + MAC.
pub fn client_id_for(mac: &[u8; 6]) -> [u8; 7] {
    [1, mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]]
}

/// `aa:bb:cc:dd:ee:ff`, lowercase.
pub fn hex_colon(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            s.push(':');
        }
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Lowercase hex without separators.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_are_unique_and_reproducible() {
        assert_eq!(mac_for(7, 0x0102_0304), [2, 7, 1, 2, 3, 4]);
        assert_ne!(mac_for(7, 1), mac_for(7, 2));
        assert_ne!(mac_for(7, 1), mac_for(8, 1));
        assert_eq!(client_id_for(&mac_for(1, 5)), [1, 2, 1, 0, 0, 0, 5]);
        assert_eq!(hex_colon(&[2, 0xab, 0]), "02:ab:00");
        assert_eq!(hex(&[1, 0xab]), "01ab");
    }
}

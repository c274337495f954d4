//! Small, dependency-free hashing for the client index and the layout fingerprint.
//!
//! Not cryptographic: DHCP has no client authentication, so a client that wants another's lease
//! can simply send that client's identifier; collision resistance buys nothing here.

/// 64-bit hash of a byte string (FNV-1a over the bytes, then a murmur3 finaliser for avalanche).
pub fn hash64(seed: u64, bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    fmix64(h)
}

/// The murmur3 64-bit finaliser.
pub fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn different_inputs_and_seeds_give_different_hashes() {
        assert_ne!(hash64(0, b"a"), hash64(0, b"b"));
        assert_ne!(hash64(0, b"a"), hash64(1, b"a"));
        assert_ne!(hash64(0, b""), hash64(0, b"\0"));
        assert_eq!(hash64(7, b"same"), hash64(7, b"same"));
    }
}

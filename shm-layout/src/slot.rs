//! One lease slot: the fixed 64-byte image stored for every address of every pool.
//!
//! A slot is eight 64-bit words:
//!
//! | word | contents |
//! |------|----------|
//! | 0 | lock/version: bits 0–7 the owner holding the write lock (0 = unlocked), bits 8–63 the version |
//! | 1 | expires (u32, unix seconds) · state (u8) · key kind (u8) · htype (u8) · hlen (u8) |
//! | 2–3 | hardware address (16 bytes) |
//! | 4–6 | client identifier: length byte + 23 bytes inline, or 16 bytes of hash when longer |
//! | 7 | crc32 (low half) · last change time (u32 unix seconds, high half) |
//!
//! The version increases by one on every committed change; replication orders images of a slot by
//! it. The crc32 covers the version and every other field, so a torn write (power loss in the
//! middle of a page) is detected. An all-zero slot is "pristine": free, never used, valid.

use crate::hash::hash64;

/// Number of 64-bit words in a slot.
pub const SLOT_WORDS: usize = 8;

/// Longest client identifier stored inline; longer ones are stored as a 128-bit hash.
pub const INLINE_CLIENT_ID: usize = 23;

/// Owner value meaning "unlocked" in word 0.
pub const UNLOCKED: u8 = 0;

/// The lease state of a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum LeaseState {
    /// Never used, or returned to the pool after an offer or a quarantine ended.
    Free = 0,
    /// Offered to a client (soft state, held for a short time).
    Offered = 1,
    /// Bound to a client until `expires`.
    Leased = 2,
    /// Released by its client; allocatable, but the client's identity is kept so it gets it back.
    Released = 3,
    /// The lease ran out; allocatable, identity kept.
    Expired = 4,
    /// Declined by a client (address in use on the wire); quarantined until `expires`.
    Declined = 5,
    /// Reserved for one client by configuration and not currently leased.
    Reserved = 6,
    /// Taken out of service (e.g. failed its checksum); never handed out.
    Abandoned = 7,
}

impl LeaseState {
    /// All states, in code order.
    pub const ALL: [LeaseState; 8] = [
        LeaseState::Free,
        LeaseState::Offered,
        LeaseState::Leased,
        LeaseState::Released,
        LeaseState::Expired,
        LeaseState::Declined,
        LeaseState::Reserved,
        LeaseState::Abandoned,
    ];

    /// Decodes a state byte; unknown values are `None`.
    pub fn from_u8(v: u8) -> Option<LeaseState> {
        LeaseState::ALL.get(usize::from(v)).copied()
    }

    /// Stable lower-case name (used by the control protocol and the audit stream).
    pub fn name(self) -> &'static str {
        match self {
            LeaseState::Free => "free",
            LeaseState::Offered => "offered",
            LeaseState::Leased => "leased",
            LeaseState::Released => "released",
            LeaseState::Expired => "expired",
            LeaseState::Declined => "declined",
            LeaseState::Reserved => "reserved",
            LeaseState::Abandoned => "abandoned",
        }
    }

    /// Parses a name produced by [`LeaseState::name`].
    pub fn from_name(name: &str) -> Option<LeaseState> {
        LeaseState::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Whether the allocator may hand this slot to a new client (the free bitmap bit is set
    /// exactly for pool slots in these states).
    pub fn is_allocatable(self) -> bool {
        matches!(
            self,
            LeaseState::Free | LeaseState::Released | LeaseState::Expired
        )
    }
}

/// How a client is identified (RFC 2131 §4.2: the client identifier if sent, else chaddr).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum KeyKind {
    /// No client (pristine slot).
    None = 0,
    /// Identified by htype + chaddr.
    HwAddr = 1,
    /// Identified by a client identifier of at most 23 bytes, stored inline.
    ClientId = 2,
    /// Identified by a longer client identifier, stored as a 128-bit hash.
    ClientIdHash = 3,
}

impl KeyKind {
    fn from_u8(v: u8) -> Option<KeyKind> {
        match v {
            0 => Some(KeyKind::None),
            1 => Some(KeyKind::HwAddr),
            2 => Some(KeyKind::ClientId),
            3 => Some(KeyKind::ClientIdHash),
            _ => None,
        }
    }
}

/// A client's identity as the table stores and indexes it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientKey {
    kind: KeyKind,
    len: u8,
    bytes: [u8; 24],
}

impl std::fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClientKey({:?}, ", self.kind)?;
        for b in self.as_bytes() {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

impl ClientKey {
    /// The empty key of a pristine slot.
    pub const NONE: ClientKey = ClientKey {
        kind: KeyKind::None,
        len: 0,
        bytes: [0; 24],
    };

    /// A key made of the hardware type and address (at most 16 bytes are used).
    pub fn from_hwaddr(htype: u8, chaddr: &[u8]) -> ClientKey {
        let n = chaddr.len().min(16);
        let mut bytes = [0u8; 24];
        bytes[0] = htype;
        bytes[1..1 + n].copy_from_slice(&chaddr[..n]);
        ClientKey {
            kind: KeyKind::HwAddr,
            len: (n + 1) as u8,
            bytes,
        }
    }

    /// The keys a reservation is found by, most specific first: its client identifier, then
    /// its Ethernet (htype 1) hardware address, each if the reservation names one.
    pub fn reservation_keys(client_id: Option<&[u8]>, mac: Option<&[u8]>) -> Vec<ClientKey> {
        client_id
            .map(ClientKey::from_client_id)
            .into_iter()
            .chain(mac.map(|m| ClientKey::from_hwaddr(1, m)))
            .collect()
    }

    /// A key made of a client identifier (option 61).
    pub fn from_client_id(id: &[u8]) -> ClientKey {
        let mut bytes = [0u8; 24];
        if id.len() <= INLINE_CLIENT_ID {
            bytes[..id.len()].copy_from_slice(id);
            ClientKey {
                kind: KeyKind::ClientId,
                len: id.len() as u8,
                bytes,
            }
        } else {
            bytes[..8].copy_from_slice(&hash64(0x61, id).to_le_bytes());
            bytes[8..16].copy_from_slice(&hash64(0x6161, id).to_le_bytes());
            ClientKey {
                kind: KeyKind::ClientIdHash,
                len: 16,
                bytes,
            }
        }
    }

    /// The kind of identity.
    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    /// The identity bytes (htype + chaddr, the client id, or its hash).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// Whether this is the empty key.
    pub fn is_none(&self) -> bool {
        self.kind == KeyKind::None
    }

    /// The index hash of this key.
    pub fn hash(&self) -> u64 {
        hash64(self.kind as u64, self.as_bytes())
    }
}

/// The decoded contents of a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotImage {
    /// Committed version (56 bits); 0 for a pristine slot.
    pub version: u64,
    /// Lease state.
    pub state: LeaseState,
    /// Unix seconds when the lease, offer or quarantine ends (0 = not applicable).
    pub expires: u32,
    /// Unix seconds of the last change.
    pub updated: u32,
    /// Hardware type (RFC 1700; 1 = Ethernet).
    pub htype: u8,
    /// Hardware address length (≤ 16).
    pub hlen: u8,
    /// Hardware address; bytes past `hlen` are zero.
    pub hwaddr: [u8; 16],
    /// The client's identity.
    pub key: ClientKey,
}

/// Why slot words could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SlotDecodeError {
    /// The checksum does not match the contents (torn write or bit flip).
    #[error("slot checksum mismatch")]
    Checksum,
    /// A field holds a value no writer produces.
    #[error("slot holds an invalid field value")]
    InvalidField,
}

impl SlotImage {
    /// A pristine (never used) slot.
    pub const PRISTINE: SlotImage = SlotImage {
        version: 0,
        state: LeaseState::Free,
        expires: 0,
        updated: 0,
        htype: 0,
        hlen: 0,
        hwaddr: [0; 16],
        key: ClientKey::NONE,
    };

    /// The hardware address bytes (`hlen` long).
    pub fn hwaddr(&self) -> &[u8] {
        &self.hwaddr[..usize::from(self.hlen.min(16))]
    }

    /// Sets the hardware address fields from a packet's htype/chaddr.
    pub fn set_hwaddr(&mut self, htype: u8, chaddr: &[u8]) {
        let n = chaddr.len().min(16);
        self.htype = htype;
        self.hlen = n as u8;
        self.hwaddr = [0; 16];
        self.hwaddr[..n].copy_from_slice(&chaddr[..n]);
    }

    /// Encodes words 1–7 (word 0, the lock/version word, is managed by the table).
    pub fn encode(&self) -> [u64; SLOT_WORDS] {
        let mut w = [0u64; SLOT_WORDS];
        w[0] = self.version << 8;
        w[1] = u64::from(self.expires)
            | (u64::from(self.state as u8) << 32)
            | (u64::from(self.key.kind as u8) << 40)
            | (u64::from(self.htype) << 48)
            | (u64::from(self.hlen) << 56);
        w[2] = u64::from_le_bytes(self.hwaddr[..8].try_into().unwrap_or([0; 8]));
        w[3] = u64::from_le_bytes(self.hwaddr[8..].try_into().unwrap_or([0; 8]));
        let mut kb = [0u8; 24];
        if matches!(self.key.kind, KeyKind::ClientId | KeyKind::ClientIdHash) {
            kb[0] = self.key.len;
            let n = usize::from(self.key.len).min(INLINE_CLIENT_ID);
            kb[1..1 + n].copy_from_slice(&self.key.bytes[..n]);
        }
        for (i, chunk) in kb.chunks_exact(8).enumerate() {
            w[4 + i] = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
        }
        let crc = checksum(&w, self.updated);
        w[7] = u64::from(crc) | (u64::from(self.updated) << 32);
        w
    }

    /// Decodes the eight words of a slot (word 0 with the lock bits cleared or not).
    pub fn decode(w: &[u64; SLOT_WORDS]) -> Result<SlotImage, SlotDecodeError> {
        if w.iter().all(|&x| x & !0xff == 0) && w[1..].iter().all(|&x| x == 0) {
            return Ok(SlotImage::PRISTINE);
        }
        let updated = (w[7] >> 32) as u32;
        let mut unlocked = *w;
        unlocked[0] &= !0xff;
        if checksum(&unlocked, updated) != w[7] as u32 {
            return Err(SlotDecodeError::Checksum);
        }
        let state = LeaseState::from_u8((w[1] >> 32) as u8).ok_or(SlotDecodeError::InvalidField)?;
        let kind = KeyKind::from_u8((w[1] >> 40) as u8).ok_or(SlotDecodeError::InvalidField)?;
        let htype = (w[1] >> 48) as u8;
        let hlen = (w[1] >> 56) as u8;
        if hlen > 16 {
            return Err(SlotDecodeError::InvalidField);
        }
        let mut hwaddr = [0u8; 16];
        hwaddr[..8].copy_from_slice(&w[2].to_le_bytes());
        hwaddr[8..].copy_from_slice(&w[3].to_le_bytes());
        let mut kb = [0u8; 24];
        for i in 0..3 {
            kb[i * 8..i * 8 + 8].copy_from_slice(&w[4 + i].to_le_bytes());
        }
        let key = match kind {
            KeyKind::None => ClientKey::NONE,
            KeyKind::HwAddr => ClientKey::from_hwaddr(htype, &hwaddr[..usize::from(hlen)]),
            KeyKind::ClientId | KeyKind::ClientIdHash => {
                let len = kb[0];
                if usize::from(len) > INLINE_CLIENT_ID
                    || (kind == KeyKind::ClientIdHash && len != 16)
                {
                    return Err(SlotDecodeError::InvalidField);
                }
                let mut bytes = [0u8; 24];
                bytes[..usize::from(len)].copy_from_slice(&kb[1..1 + usize::from(len)]);
                ClientKey { kind, len, bytes }
            }
        };
        Ok(SlotImage {
            version: w[0] >> 8,
            state,
            expires: w[1] as u32,
            updated,
            htype,
            hlen,
            hwaddr,
            key,
        })
    }
}

fn checksum(w: &[u64; SLOT_WORDS], updated: u32) -> u32 {
    let mut h = crc32fast::Hasher::new();
    for x in &w[..7] {
        h.update(&x.to_le_bytes());
    }
    h.update(&updated.to_le_bytes());
    h.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_reservation_is_found_by_client_id_first_then_mac() {
        let mac = [2u8, 0, 0, 0, 0, 9];
        assert_eq!(
            ClientKey::reservation_keys(Some(b"abc"), Some(&mac)),
            vec![
                ClientKey::from_client_id(b"abc"),
                ClientKey::from_hwaddr(1, &mac)
            ]
        );
        assert_eq!(
            ClientKey::reservation_keys(None, Some(&mac)),
            vec![ClientKey::from_hwaddr(1, &mac)]
        );
        assert!(ClientKey::reservation_keys(None, None).is_empty());
    }

    fn sample() -> SlotImage {
        let mut s = SlotImage {
            version: 42,
            state: LeaseState::Leased,
            expires: 1_800_000_000,
            updated: 1_700_000_000,
            key: ClientKey::from_client_id(&[1, 2, 0, 0, 0, 0, 1]),
            ..SlotImage::PRISTINE
        };
        s.set_hwaddr(1, &[2, 0, 0, 0, 0, 1]);
        s
    }

    #[test]
    fn encode_decode_round_trip() {
        let s = sample();
        assert_eq!(SlotImage::decode(&s.encode()), Ok(s));
    }

    #[test]
    fn pristine_is_all_zero_and_valid() {
        assert_eq!(SlotImage::decode(&[0; 8]), Ok(SlotImage::PRISTINE));
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let w = sample().encode();
        for word in 0..8 {
            for bit in 0..64 {
                if word == 0 && bit < 8 {
                    continue; // lock bits are not part of the image
                }
                let mut x = w;
                x[word] ^= 1 << bit;
                assert_ne!(SlotImage::decode(&x), Ok(sample()), "word {word} bit {bit}");
            }
        }
    }

    #[test]
    fn long_client_ids_are_hashed_and_distinct() {
        let a = ClientKey::from_client_id(&[7u8; 40]);
        let b = ClientKey::from_client_id(&[8u8; 40]);
        assert_eq!(a.kind(), KeyKind::ClientIdHash);
        assert_ne!(a, b);
        let s = SlotImage { key: a, ..sample() };
        assert_eq!(SlotImage::decode(&s.encode()).map(|d| d.key), Ok(a));
    }

    #[test]
    fn state_names_round_trip() {
        for s in LeaseState::ALL {
            assert_eq!(LeaseState::from_name(s.name()), Some(s));
            assert_eq!(LeaseState::from_u8(s as u8), Some(s));
        }
        assert_eq!(LeaseState::from_u8(8), None);
    }

    proptest! {
        #[test]
        fn arbitrary_words_never_panic(w in proptest::array::uniform8(any::<u64>())) {
            let _ = SlotImage::decode(&w);
        }

        #[test]
        fn round_trip_any_image(version in 0u64..(1 << 56), state in 0u8..8, expires: u32, updated: u32,
                                htype: u8, hw in proptest::collection::vec(any::<u8>(), 0..=16),
                                cid in proptest::collection::vec(any::<u8>(), 1..80), use_cid: bool) {
            let mut s = SlotImage { version, state: LeaseState::from_u8(state).unwrap_or(LeaseState::Free),
                expires, updated, ..SlotImage::PRISTINE };
            s.set_hwaddr(htype, &hw);
            s.key = if use_cid { ClientKey::from_client_id(&cid) } else { ClientKey::from_hwaddr(htype, &hw) };
            let d = SlotImage::decode(&s.encode());
            if s.encode().iter().all(|&x| x == 0) {
                prop_assert_eq!(d, Ok(SlotImage::PRISTINE));
            } else {
                prop_assert_eq!(d, Ok(s));
            }
        }
    }
}

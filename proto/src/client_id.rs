//! [`ClientId`]: a DHCP client identifier (option 61) carried as bytes, written as plain
//! lowercase hex.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A client identifier: one or more octets.
///
/// Text form (`Display`, JSON): lowercase hex without separators (`01020000000001`). Parsing
/// also accepts `:` or `-` between the digits (`01:02:00:00:00:00:01`); an empty or odd
/// number of digits is refused.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ClientId(Vec<u8>);

/// Why text is not a client identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid client identifier '{0}' (expected hex octets, e.g. 01020000000001)")]
pub struct ClientIdError(pub String);

impl ClientId {
    /// The identifier made of `octets`; `None` when there are none.
    pub fn new(octets: &[u8]) -> Option<ClientId> {
        (!octets.is_empty()).then(|| ClientId(octets.to_vec()))
    }

    /// The octets.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|o| write!(f, "{o:02x}"))
    }
}

impl fmt::Debug for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientId({self})")
    }
}

impl FromStr for ClientId {
    type Err = ClientIdError;

    fn from_str(s: &str) -> Result<ClientId, ClientIdError> {
        let bad = || ClientIdError(s.to_string());
        let digits: Vec<u8> = s.bytes().filter(|b| *b != b':' && *b != b'-').collect();
        if digits.is_empty() || digits.len() % 2 == 1 {
            return Err(bad());
        }
        let hex = |b: u8| char::from(b).to_digit(16).map(|d| d as u8);
        digits
            .chunks_exact(2)
            .map(|p| Some(hex(p[0])? << 4 | hex(p[1])?))
            .collect::<Option<Vec<u8>>>()
            .map(ClientId)
            .ok_or_else(bad)
    }
}

impl Serialize for ClientId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ClientId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ClientId, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn text_forms() {
        let c: ClientId = "01:02-AB0c".parse().unwrap();
        assert_eq!(c.as_bytes(), [1, 2, 0xab, 0x0c]);
        assert_eq!(c.to_string(), "0102ab0c");
        for bad in ["", ":", "0", "zz", "012", "0g", "é1"] {
            assert_eq!(
                bad.parse::<ClientId>(),
                Err(ClientIdError(bad.to_string())),
                "{bad}"
            );
        }
        assert_eq!(ClientId::new(&[]), None);
        assert_eq!(
            serde_json::to_string(&ClientId::new(&[1, 2]).unwrap()).unwrap(),
            "\"0102\""
        );
        assert!(serde_json::from_str::<ClientId>("\"01x2\"").is_err());
    }

    proptest! {
        #[test]
        fn display_and_parse_round_trip(octets in prop::collection::vec(any::<u8>(), 1..64)) {
            let c = ClientId::new(&octets).unwrap();
            prop_assert_eq!(c.to_string().parse::<ClientId>().unwrap(), c);
        }

        #[test]
        fn parsing_any_text_never_panics(s in ".{0,80}") {
            let _ = s.parse::<ClientId>();
        }
    }
}

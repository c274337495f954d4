//! [`HwAddr`]: a hardware address of 1 to 16 octets, the one text form of it (lowercase hex
//! octets separated by `:`) and the one parser of what operators type.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A hardware address (chaddr): 1 to [`HwAddr::MAX_LEN`] octets, kept as bytes.
///
/// Text form (`Display`, JSON): lowercase hex octets separated by `:` (`02:00:00:00:00:01`).
/// Parsing (`FromStr`, JSON) accepts octets of one or two hex digits separated by `:` or `-`
/// (`2:0:0:0:0:1`, `02-00-00-00-00-01`), or an even number of hex digits without separators
/// (`020000000001`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct HwAddr {
    len: u8,
    octets: [u8; HwAddr::MAX_LEN],
}

/// Why bytes or text are not a hardware address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HwAddrError {
    /// No octets, or more than [`HwAddr::MAX_LEN`].
    #[error("a hardware address has 1 to 16 octets, not {0}")]
    Length(usize),
    /// Text that is not hex octets.
    #[error("invalid hardware address '{0}' (expected e.g. 02:00:00:00:00:01)")]
    Syntax(String),
}

impl HwAddr {
    /// Longest hardware address (the size of BOOTP's `chaddr` field).
    pub const MAX_LEN: usize = 16;

    /// The address made of `octets` (1 to [`HwAddr::MAX_LEN`] of them).
    pub fn new(octets: &[u8]) -> Result<HwAddr, HwAddrError> {
        if octets.is_empty() || octets.len() > Self::MAX_LEN {
            return Err(HwAddrError::Length(octets.len()));
        }
        let mut a = HwAddr {
            len: octets.len() as u8,
            octets: [0; Self::MAX_LEN],
        };
        a.octets[..octets.len()].copy_from_slice(octets);
        Ok(a)
    }

    /// The octets.
    pub fn as_bytes(&self) -> &[u8] {
        &self.octets[..usize::from(self.len)]
    }
}

impl fmt::Display for HwAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, o) in self.as_bytes().iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{o:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for HwAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HwAddr({self})")
    }
}

impl FromStr for HwAddr {
    type Err = HwAddrError;

    fn from_str(s: &str) -> Result<HwAddr, HwAddrError> {
        let bad = || HwAddrError::Syntax(s.to_string());
        let hex = |g: &str| {
            (!g.is_empty() && g.len() <= 2 && g.bytes().all(|b| b.is_ascii_hexdigit()))
                .then(|| u8::from_str_radix(g, 16).ok())
                .flatten()
        };
        let mut octets = [0u8; Self::MAX_LEN];
        let mut n = 0usize;
        let mut push = |o: u8| -> Result<(), HwAddrError> {
            *octets.get_mut(n).ok_or_else(bad)? = o;
            n += 1;
            Ok(())
        };
        if s.contains([':', '-']) {
            for g in s.split([':', '-']) {
                push(hex(g).ok_or_else(bad)?)?;
            }
        } else {
            if s.is_empty() || s.len() % 2 == 1 || !s.is_ascii() {
                return Err(bad());
            }
            for i in (0..s.len()).step_by(2) {
                push(s.get(i..i + 2).and_then(hex).ok_or_else(bad)?)?;
            }
        }
        HwAddr::new(&octets[..n]).map_err(|_| bad())
    }
}

impl Serialize for HwAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HwAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<HwAddr, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn forms_operators_type_parse_to_the_same_bytes() {
        let want = [2, 0, 0, 0, 0, 1];
        for s in [
            "02:00:00:00:00:01",
            "2:0:0:0:0:1",
            "02-00-00-00-00-01",
            "020000000001",
            "02:00:00:00:00:01".to_uppercase().as_str(),
        ] {
            let a: HwAddr = s.parse().unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(a.as_bytes(), want, "{s}");
            assert_eq!(a.to_string(), "02:00:00:00:00:01");
        }
    }

    #[test]
    fn malformed_text_is_an_error_with_the_text() {
        for s in [
            "",
            ":",
            "02::01",
            "123",
            "zz",
            "002:01",
            "02:00:",
            "g2",
            "é1",
            "00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00",
            "0000000000000000000000000000000000",
        ] {
            let e = s.parse::<HwAddr>().unwrap_err();
            assert_eq!(e, HwAddrError::Syntax(s.to_string()), "{s}");
        }
        assert_eq!(
            "zz".parse::<HwAddr>().unwrap_err().to_string(),
            "invalid hardware address 'zz' (expected e.g. 02:00:00:00:00:01)"
        );
        assert_eq!(HwAddr::new(&[]), Err(HwAddrError::Length(0)));
        assert_eq!(HwAddr::new(&[0; 17]), Err(HwAddrError::Length(17)));
    }

    #[test]
    fn json_is_the_text_form() {
        let a = HwAddr::new(&[0xaa, 0xbb, 0x0c]).unwrap();
        assert_eq!(serde_json::to_string(&a).unwrap(), "\"aa:bb:0c\"");
        assert_eq!(serde_json::from_str::<HwAddr>("\"AA-BB-0C\"").unwrap(), a);
        assert!(serde_json::from_str::<HwAddr>("\"aa:bb:\"").is_err());
        assert!(serde_json::from_str::<HwAddr>("12").is_err());
    }

    proptest! {
        #[test]
        fn display_and_parse_round_trip(octets in prop::collection::vec(any::<u8>(), 1..=16)) {
            let a = HwAddr::new(&octets).unwrap();
            prop_assert_eq!(a.as_bytes(), &octets[..]);
            prop_assert_eq!(a.to_string().parse::<HwAddr>().unwrap(), a);
        }

        #[test]
        fn parsing_any_text_never_panics(s in ".{0,60}") {
            let _ = s.parse::<HwAddr>();
        }
    }
}

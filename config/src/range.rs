//! Inclusive IPv4 address ranges (`"10.0.0.100-10.0.0.200"`).

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An inclusive range of IPv4 addresses, `first <= last` always holds.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct AddressRange {
    /// First address of the range (inclusive).
    pub first: Ipv4Addr,
    /// Last address of the range (inclusive).
    pub last: Ipv4Addr,
}

/// Why a pool string is not an address range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RangeParseError {
    /// No `-` between the two addresses.
    #[error("expected a range written \"first-last\", such as \"10.0.0.100-10.0.0.200\"")]
    MissingDash,
    /// One of the two ends is not an IPv4 address.
    #[error("`{0}` is not an IPv4 address")]
    BadAddress(String),
    /// The first address is above the last.
    #[error("the first address {first} is above the last address {last}")]
    Reversed {
        /// The first address as written.
        first: Ipv4Addr,
        /// The last address as written.
        last: Ipv4Addr,
    },
}

impl AddressRange {
    /// The range `first..=last`, or `None` when `first > last`.
    pub fn new(first: Ipv4Addr, last: Ipv4Addr) -> Option<Self> {
        (first <= last).then_some(Self { first, last })
    }

    /// The range holding just `address`.
    pub fn single(address: Ipv4Addr) -> Self {
        Self {
            first: address,
            last: address,
        }
    }

    /// Number of addresses in the range (1 ..= 2^32).
    #[allow(clippy::len_without_is_empty)] // a range always holds at least one address
    pub fn len(&self) -> u64 {
        u64::from(u32::from(self.last)) - u64::from(u32::from(self.first)) + 1
    }

    /// Whether `address` lies in the range.
    pub fn contains(&self, address: Ipv4Addr) -> bool {
        self.first <= address && address <= self.last
    }

    /// Whether the two ranges share at least one address.
    pub fn overlaps(&self, other: &AddressRange) -> bool {
        self.first <= other.last && other.first <= self.last
    }

    /// Whether `other` starts right after `self` ends.
    pub fn is_followed_by(&self, other: &AddressRange) -> bool {
        u32::from(self.last).checked_add(1) == Some(u32::from(other.first))
    }
}

impl fmt::Display for AddressRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

impl FromStr for AddressRange {
    type Err = RangeParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (first, last) = s.split_once('-').ok_or(RangeParseError::MissingDash)?;
        let parse = |part: &str| {
            let part = part.trim();
            part.parse::<Ipv4Addr>()
                .map_err(|_| RangeParseError::BadAddress(part.to_string()))
        };
        let first = parse(first)?;
        let last = parse(last)?;
        AddressRange::new(first, last).ok_or(RangeParseError::Reversed { first, last })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_measures() {
        let r: AddressRange = "10.0.0.100 - 10.0.0.199".parse().unwrap();
        assert_eq!(r.first, ip("10.0.0.100"));
        assert_eq!(r.last, ip("10.0.0.199"));
        assert_eq!(r.len(), 100);
        assert!(r.contains(ip("10.0.0.150")));
        assert!(!r.contains(ip("10.0.0.200")));
        assert_eq!(r.to_string(), "10.0.0.100-10.0.0.199");
        let all = AddressRange::new(ip("0.0.0.0"), ip("255.255.255.255")).unwrap();
        assert_eq!(all.len(), 1 << 32);
    }

    #[test]
    fn rejects_bad_ranges() {
        assert_eq!(
            "10.0.0.1".parse::<AddressRange>(),
            Err(RangeParseError::MissingDash)
        );
        assert_eq!(
            "10.0.0.1-10.0.0.300".parse::<AddressRange>(),
            Err(RangeParseError::BadAddress("10.0.0.300".into()))
        );
        assert!(matches!(
            "10.0.0.9-10.0.0.1".parse::<AddressRange>(),
            Err(RangeParseError::Reversed { .. })
        ));
    }

    #[test]
    fn adjacency_and_overlap() {
        let a = AddressRange::new(ip("10.0.0.1"), ip("10.0.0.5")).unwrap();
        let b = AddressRange::new(ip("10.0.0.6"), ip("10.0.0.9")).unwrap();
        let c = AddressRange::new(ip("10.0.0.5"), ip("10.0.0.6")).unwrap();
        assert!(a.is_followed_by(&b));
        assert!(!b.is_followed_by(&a));
        assert!(!a.overlaps(&b));
        assert!(a.overlaps(&c) && b.overlaps(&c));
        let top = AddressRange::single(ip("255.255.255.255"));
        assert!(!top.is_followed_by(&a));
    }
}

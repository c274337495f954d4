//! Spreading the load over many subnets: each client's relayed requests carry a link-selection
//! address (option 82 sub-option 5, RFC 3527) chosen from an arithmetic series, so a server
//! selects a different subnet per client while every reply still goes to the one relay address
//! (giaddr) the generator binds.

use std::net::Ipv4Addr;

/// The link-selection addresses: client `i` gets `base + (i % count) × step`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkSelection {
    base: u32,
    step: u32,
    count: u32,
}

/// Why a link-selection series is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SpreadError {
    /// `count` is zero.
    #[error("--link-selection-count must be at least 1")]
    ZeroCount,
    /// The last address of the series is past 255.255.255.255.
    #[error("link selection {base} + ({count} - 1) x {step} is past 255.255.255.255")]
    Overflow {
        /// The first address.
        base: Ipv4Addr,
        /// Addresses between consecutive links.
        step: u32,
        /// Links.
        count: u32,
    },
}

impl LinkSelection {
    /// The series `base`, `base + step`, … (`count` addresses); an error when it runs past the
    /// end of the address space or `count` is 0.
    pub fn new(base: Ipv4Addr, step: u32, count: u32) -> Result<Self, SpreadError> {
        if count == 0 {
            return Err(SpreadError::ZeroCount);
        }
        u32::from(base)
            .checked_add((count - 1).checked_mul(step).ok_or(SpreadError::Overflow {
                base,
                step,
                count,
            })?)
            .ok_or(SpreadError::Overflow { base, step, count })?;
        Ok(Self {
            base: u32::from(base),
            step,
            count,
        })
    }

    /// The link-selection address of client `identity` (the index its MAC is made from).
    pub fn address(&self, identity: u32) -> Ipv4Addr {
        // Cannot overflow: (count - 1) × step + base was checked in `new`.
        Ipv4Addr::from(self.base + (identity % self.count) * self.step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_cycle_over_count_links() {
        let l = LinkSelection::new(Ipv4Addr::new(10, 0, 0, 1), 64, 1000).unwrap();
        assert_eq!(l.address(0), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(l.address(1), Ipv4Addr::new(10, 0, 0, 65));
        assert_eq!(l.address(4), Ipv4Addr::new(10, 0, 1, 1));
        assert_eq!(l.address(999), Ipv4Addr::new(10, 0, 249, 193));
        assert_eq!(l.address(1000), l.address(0));
        assert_eq!(l.address(1001), l.address(1));
        let one = LinkSelection::new(Ipv4Addr::new(10, 9, 0, 1), 64, 1).unwrap();
        assert_eq!(one.address(12345), Ipv4Addr::new(10, 9, 0, 1));
    }

    #[test]
    fn series_past_the_address_space_is_refused() {
        assert_eq!(
            LinkSelection::new(Ipv4Addr::new(10, 0, 0, 1), 64, 0),
            Err(SpreadError::ZeroCount)
        );
        assert!(LinkSelection::new(Ipv4Addr::new(255, 255, 255, 0), 64, 5).is_err());
        assert!(LinkSelection::new(Ipv4Addr::new(10, 0, 0, 0), u32::MAX, 3).is_err());
        assert!(LinkSelection::new(Ipv4Addr::new(255, 255, 255, 0), 64, 4).is_ok());
    }
}

//! The directed-broadcast addresses of this host's interfaces, to tell a datagram sent to a
//! broadcast address from one sent to a unicast address that happens to end in `.255` (a
//! valid host in a /23 or wider) — and a `.127` broadcast of a /25 from a host address.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// How long a snapshot of the interface addresses is trusted before it is read again.
const REFRESH_EVERY: Duration = Duration::from_secs(10);

/// Broadcast addresses per interface index, from `getifaddrs`.
#[derive(Debug, Default)]
pub struct InterfaceBroadcasts {
    by_ifindex: HashMap<u32, Vec<Ipv4Addr>>,
    loaded: Option<Instant>,
}

impl InterfaceBroadcasts {
    /// Reads the interface addresses now.
    pub fn load() -> InterfaceBroadcasts {
        let mut by_ifindex: HashMap<u32, Vec<Ipv4Addr>> = HashMap::new();
        if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
            for a in addrs {
                let (Some(addr), Some(mask)) = (
                    a.address.as_ref().and_then(|s| s.as_sockaddr_in()),
                    a.netmask.as_ref().and_then(|s| s.as_sockaddr_in()),
                ) else {
                    continue;
                };
                let Ok(ifindex) = nix::net::if_::if_nametoindex(a.interface_name.as_str()) else {
                    continue;
                };
                let b = subnet_broadcast(addr.ip(), mask.ip());
                by_ifindex.entry(ifindex).or_default().push(b);
            }
        }
        InterfaceBroadcasts {
            by_ifindex,
            loaded: Some(Instant::now()),
        }
    }

    /// Builds the table from known (ifindex, address, netmask) triples (tests).
    pub fn from_entries(entries: &[(u32, Ipv4Addr, Ipv4Addr)]) -> InterfaceBroadcasts {
        let mut by_ifindex: HashMap<u32, Vec<Ipv4Addr>> = HashMap::new();
        for &(ifindex, addr, mask) in entries {
            by_ifindex
                .entry(ifindex)
                .or_default()
                .push(subnet_broadcast(addr, mask));
        }
        InterfaceBroadcasts {
            by_ifindex,
            loaded: None,
        }
    }

    /// Re-reads the interfaces when the snapshot is older than 10 s (`REFRESH_EVERY`; addresses
    /// come and go while the daemon runs). Cheap to call every loop turn.
    pub fn refresh_if_stale(&mut self) {
        if self.loaded.is_some_and(|t| t.elapsed() >= REFRESH_EVERY) {
            *self = InterfaceBroadcasts::load();
        }
    }

    /// Whether a datagram that arrived on `ifindex` for destination `dst` was a broadcast:
    /// the limited broadcast, or the directed broadcast of a subnet of that interface.
    pub fn is_broadcast(&self, dst: Ipv4Addr, ifindex: u32) -> bool {
        dst.is_broadcast()
            || self
                .by_ifindex
                .get(&ifindex)
                .is_some_and(|b| b.contains(&dst))
    }
}

/// The directed broadcast of the subnet `addr`/`mask` (a /31 or /32 has none: its own
/// "broadcast" is a host, so none is returned as broadcast there).
fn subnet_broadcast(addr: Ipv4Addr, mask: Ipv4Addr) -> Ipv4Addr {
    let m = u32::from(mask);
    if m >= 0xffff_fffe {
        return Ipv4Addr::BROADCAST;
    }
    Ipv4Addr::from(u32::from(addr) | !m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().expect("address")
    }

    #[test]
    fn broadcast_follows_the_interface_prefix_not_the_last_octet() {
        let b = InterfaceBroadcasts::from_entries(&[
            (2, ip("10.0.0.1"), ip("255.255.254.0")), // /23: .0.255 is a host
            (3, ip("10.9.0.1"), ip("255.255.255.128")), // /25: .127 is the broadcast
            (4, ip("10.7.0.1"), ip("255.255.255.254")), // /31: no broadcast
        ]);
        assert!(!b.is_broadcast(ip("10.0.0.255"), 2), "a host of a /23");
        assert!(b.is_broadcast(ip("10.0.1.255"), 2));
        assert!(b.is_broadcast(ip("10.9.0.127"), 3));
        assert!(
            !b.is_broadcast(ip("10.9.0.255"), 3),
            "not this interface's subnet"
        );
        assert!(!b.is_broadcast(ip("10.7.0.1"), 4));
        assert!(
            b.is_broadcast(Ipv4Addr::BROADCAST, 9),
            "limited broadcast anywhere"
        );
        assert!(
            !b.is_broadcast(ip("10.0.1.255"), 3),
            "another interface's broadcast"
        );
    }

    #[test]
    fn loopback_is_found_by_load() {
        let b = InterfaceBroadcasts::load();
        let lo = nix::net::if_::if_nametoindex("lo").expect("lo exists");
        assert!(b.is_broadcast(ip("127.255.255.255"), lo));
        assert!(!b.is_broadcast(ip("127.0.0.1"), lo));
    }
}

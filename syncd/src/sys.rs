//! The system-call corner of syncd: the only place in this crate with `unsafe` code.

use socket2::{SockAddr, SockAddrStorage};

/// The Ethernet broadcast address.
pub(crate) const ETHERNET_BROADCAST: [u8; 6] = [0xff; 6];

/// A `sockaddr_ll` for sending a frame of EtherType `protocol` (host byte order) to the
/// link-layer address `destination` out of the interface with index `ifindex`, as an AF_PACKET
/// `SOCK_DGRAM` socket's `sendto` takes it (the kernel builds the Ethernet header from it).
pub(crate) fn link_layer_address(ifindex: u32, protocol: u16, destination: [u8; 6]) -> SockAddr {
    let mut storage = SockAddrStorage::zeroed();
    // SAFETY: `sockaddr_ll` is a socket address type of this platform (Linux) and is smaller
    // than `sockaddr_storage` (socket2 asserts the size); the storage is zeroed, so every
    // field we do not set below is a valid zero.
    let ll = unsafe { storage.view_as::<libc::sockaddr_ll>() };
    ll.sll_family = libc::AF_PACKET as libc::c_ushort;
    ll.sll_protocol = protocol.to_be();
    // Interface indexes are positive `int`s in the kernel; netlink reports them as u32.
    ll.sll_ifindex = ifindex as libc::c_int;
    ll.sll_halen = destination.len() as libc::c_uchar;
    ll.sll_addr[..destination.len()].copy_from_slice(&destination);
    let len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: the family is AF_PACKET and the storage was initialised as a `sockaddr_ll` of
    // exactly `len` bytes just above, which is what `SockAddr::new` requires.
    unsafe { SockAddr::new(storage, len) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_layer_address_holds_family_protocol_index_and_destination() {
        let addr = link_layer_address(7, 0x0806, ETHERNET_BROADCAST);
        assert_eq!(addr.family(), libc::AF_PACKET as libc::sa_family_t);
        assert_eq!(
            addr.len() as usize,
            std::mem::size_of::<libc::sockaddr_ll>()
        );
        // sockaddr_ll: family (2), protocol (2, network order), ifindex (4), hatype (2),
        // pkttype (1), halen (1), addr (8).
        let ptr = addr.as_ptr().cast::<u8>();
        let len = addr.len() as usize;
        let bytes: Vec<u8> = (0..len)
            // SAFETY: `ptr` points at the SockAddr's storage, which holds at least `len`
            // initialised bytes (the length it was created with), and `addr` outlives this
            // read.
            .map(|i| unsafe { ptr.add(i).read() })
            .collect();
        assert_eq!(&bytes[2..4], &[0x08, 0x06]);
        assert_eq!(&bytes[4..8], &7i32.to_ne_bytes());
        assert_eq!(bytes[11], 6);
        assert_eq!(&bytes[12..18], &[0xff; 6]);
        assert_eq!(&bytes[18..20], &[0, 0]);
    }
}

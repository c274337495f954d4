//! The system-call corner of syncd: the only place in this crate with `unsafe` code.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use socket2::{SockAddr, SockAddrStorage};

/// Makes the kernel SIGKILL this process when its parent (the supervisor) dies, then checks
/// that the parent is still `expected_parent` (the supervisor may have died before the
/// `prctl`). The same rule as the worker's (`prodhcp_worker::sys::die_with_parent`): syncd must
/// not outlive the supervisor that started it and go on talking to peers for it.
pub(crate) fn die_with_parent(expected_parent: Option<u32>) -> io::Result<()> {
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).map_err(io::Error::from)?;
    check_parent(expected_parent, nix::unistd::getppid().as_raw())
}

/// The check after `PR_SET_PDEATHSIG`.
fn check_parent(expected_parent: Option<u32>, actual: i32) -> io::Result<()> {
    match expected_parent {
        Some(p) if i64::from(p) != i64::from(actual) => Err(io::Error::new(
            io::ErrorKind::NotConnected,
            format!("supervisor {p} is gone (parent is now {actual}); not starting"),
        )),
        _ => Ok(()),
    }
}

/// Takes ownership of descriptor `fd`, which the supervisor placed for this process at exec
/// (the launch contract); an error if it is not open.
pub(crate) fn inherited_fd(fd: RawFd) -> io::Result<OwnedFd> {
    if fd < 0
        || nix::fcntl::fcntl(
            // SAFETY: only used to ask whether the descriptor is open; no ownership taken.
            unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
            nix::fcntl::FcntlArg::F_GETFD,
        )
        .is_err()
    {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("inherited descriptor {fd} is not open"),
        ));
    }
    // SAFETY: the supervisor placed this descriptor for this process alone (dup2 before exec)
    // and nothing else in syncd owns it; it was just checked to be open.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

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
    fn syncd_whose_supervisor_already_died_does_not_start() {
        assert!(check_parent(Some(4242), 4242).is_ok());
        assert!(check_parent(None, 1).is_ok());
        let e = check_parent(Some(4242), 1).expect_err("re-parented to init");
        assert_eq!(e.kind(), io::ErrorKind::NotConnected);
        let e = inherited_fd(1_000_000).expect_err("not open");
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }

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

//! The crate's only `unsafe`: the `SIOCOUTQ` ioctl the TCP/TLS transports use to learn how
//! much of what they wrote the peer's TCP has acknowledged.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Bytes in a TCP socket's send queue: written by us but not yet acknowledged by the peer
/// (unsent plus sent-but-unacknowledged), the `SIOCOUTQ` ioctl (same number as `TIOCOUTQ`,
/// tcp(7)).
pub(crate) fn tcp_outq(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let mut n: libc::c_int = 0;
    // SAFETY: `fd` is a borrowed, open descriptor for the whole call; TIOCOUTQ (= SIOCOUTQ on
    // Linux) writes exactly one `int` through the pointer, which points at `n`, a live,
    // properly aligned local.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCOUTQ, &mut n as *mut libc::c_int) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(u64::try_from(n).unwrap_or(0))
}

//! The system-call corner of proto: adopting a descriptor the supervisor placed at exec. The
//! only `unsafe` in this crate.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

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
    // SAFETY: the supervisor placed this descriptor for this process alone (dup2 before exec),
    // the launch contract gives each number one owner, and the caller takes it once; it was
    // just checked to be open.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

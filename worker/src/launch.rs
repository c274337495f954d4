//! The worker's side of the launch contract (`prodhcp_proto::launch`): taking the descriptors
//! the supervisor placed. Arguments, descriptor numbers and channel frames are defined once, in
//! `prodhcp_proto::launch`, for both sides.

use std::io;
use std::os::fd::OwnedFd;

use prodhcp_proto::launch::InheritedFd;

/// Takes ownership of an inherited descriptor; an error naming it if it is not open (a worker
/// started by hand without it).
pub fn take_inherited(which: InheritedFd) -> io::Result<OwnedFd> {
    crate::sys::inherited_fd(which.fd)
        .map_err(|e| io::Error::new(e.kind(), format!("{} (fd {}): {e}", which.name, which.fd)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_inherited_descriptor_is_an_error_naming_it() {
        let absent = InheritedFd {
            name: "test descriptor",
            fd: 1_000_000,
        };
        let e = take_inherited(absent).expect_err("not open");
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(e.to_string().contains("test descriptor"), "{e}");
    }
}

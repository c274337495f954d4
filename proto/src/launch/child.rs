//! The child's side of the launch contract, shared by the worker, syncd and the audit process: tie the process's
//! life to the supervisor's, and take the descriptors the supervisor placed.

use std::io;
use std::os::fd::OwnedFd;

use super::{FrameKind, FrameReader, InheritedFd, ReadOutcome};

/// A child's channel to the supervisor, as [`take_channel_and_config`] leaves it.
#[derive(Debug)]
pub struct Channel {
    /// The socket (blocking; the caller makes it non-blocking for its loop).
    pub stream: std::os::unix::net::UnixStream,
    /// The frame reader, holding whatever followed the configuration.
    pub reader: FrameReader,
}

/// Takes the channel at [`super::CHANNEL`] and reads until the supervisor's first
/// [`FrameKind::Config`] (syncd and the audit process start this way). `None` for the
/// configuration when the supervisor said stop, or closed the channel, first.
pub fn take_channel_and_config() -> io::Result<(Channel, Option<Vec<u8>>)> {
    let fd = take_inherited(super::CHANNEL)?;
    let mut stream = std::os::unix::net::UnixStream::from(fd);
    let mut reader = FrameReader::default();
    let config = loop {
        match reader.poll(&mut stream)? {
            ReadOutcome::Frame(FrameKind::Config, text) => break Some(text),
            ReadOutcome::Frame(FrameKind::Stop, _) | ReadOutcome::Closed => break None,
            _ => continue,
        }
    };
    Ok((Channel { stream, reader }, config))
}

/// Takes ownership of an inherited descriptor; an error naming it if it is not open (a child
/// started by hand without it).
pub fn take_inherited(which: InheritedFd) -> io::Result<OwnedFd> {
    crate::sys::inherited_fd(which.fd)
        .map_err(|e| io::Error::new(e.kind(), format!("{} (fd {}): {e}", which.name, which.fd)))
}

/// Makes the kernel SIGKILL this process when its parent (the supervisor) dies, then checks
/// that the parent is still `expected_parent`: if the supervisor died before the `prctl`, the
/// child was already re-parented and no signal will ever come, so it must not start.
///
/// SIGKILL, not SIGTERM: a stopped child (SIGSTOP, a debugger) never acts on SIGTERM and would
/// outlive the supervisor, and a SIGTERMed worker still serves a batch turn while a new
/// supervisor may already be recovering its owner (a change half done is recovered from its
/// intent record like any other writer death); syncd must not go on talking to peers for a
/// supervisor that is gone.
pub fn die_with_parent(expected_parent: Option<u32>) -> io::Result<()> {
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).map_err(io::Error::from)?;
    check_parent(expected_parent, nix::unistd::getppid().as_raw())
}

/// The check after `PR_SET_PDEATHSIG` (split out so a test can run it with any parent).
fn check_parent(expected_parent: Option<u32>, actual: i32) -> io::Result<()> {
    match expected_parent {
        Some(p) if i64::from(p) != i64::from(actual) => Err(io::Error::new(
            io::ErrorKind::NotConnected,
            format!("supervisor {p} is gone (parent is now {actual}); not starting"),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_whose_supervisor_already_died_does_not_start() {
        assert!(check_parent(Some(4242), 4242).is_ok());
        assert!(
            check_parent(None, 1).is_ok(),
            "started by hand: nothing to compare"
        );
        let e = check_parent(Some(4242), 1).expect_err("re-parented to init");
        assert_eq!(e.kind(), io::ErrorKind::NotConnected);
    }

    #[test]
    fn die_with_parent_accepts_the_real_parent() {
        let parent = nix::unistd::getppid().as_raw() as u32;
        die_with_parent(Some(parent)).expect("parent unchanged");
        // Leave the test harness's process as it was.
        nix::sys::prctl::set_pdeathsig(None).expect("clear pdeathsig");
    }

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

    #[test]
    fn an_open_inherited_descriptor_is_taken() {
        let file = std::fs::File::open("/dev/null").expect("open /dev/null");
        let raw = std::os::fd::IntoRawFd::into_raw_fd(file);
        let fd = take_inherited(InheritedFd {
            name: "test descriptor",
            fd: raw,
        })
        .expect("open descriptor taken");
        assert_eq!(std::os::fd::AsRawFd::as_raw_fd(&fd), raw);
    }
}

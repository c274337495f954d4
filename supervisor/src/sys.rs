//! The supervisor's small system layer: starting a worker process with its inherited
//! descriptors, and forking a short-lived child for a long control-socket answer.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};

use prodhcp_proto::launch::InheritedFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

/// Most descriptors a child can inherit: syncd's channel and one doorbell per worker (at most
/// `prodhcp_config::MAX_WORKERS`), with room to spare.
const MAX_INHERITED: usize = 80;

/// Starts `exe args...` with every descriptor of `fds` placed at its contract number
/// (`prodhcp_proto::launch::INHERITED`) and stdin from /dev/null.
pub fn spawn_worker(
    exe: &std::path::Path,
    args: &[std::ffi::OsString],
    fds: &[(InheritedFd, BorrowedFd<'_>)],
) -> io::Result<Child> {
    if fds.len() > MAX_INHERITED {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "too many inherited descriptors",
        ));
    }
    // (source, target) pairs, fixed-size so the child allocates nothing between fork and exec.
    let mut pairs = [(-1 as RawFd, -1 as RawFd); MAX_INHERITED];
    for (pair, (which, fd)) in pairs.iter_mut().zip(fds) {
        *pair = (fd.as_raw_fd(), which.fd);
    }
    let n = fds.len();
    // Spare copies go above every target, so placing one cannot clobber another's source.
    let spare_floor = pairs[..n].iter().map(|p| p.1).max().unwrap_or(2) + 1;
    let mut cmd = Command::new(exe);
    cmd.args(args).stdin(Stdio::null());
    // Only the supervisor talks to the service manager (crate::notify).
    for var in crate::notify::CHILD_ENV_REMOVED {
        cmd.env_remove(var);
    }
    // SAFETY: the closure runs in the forked child before exec and only calls fcntl/dup2/close,
    // which are async-signal-safe, on a fixed-size array it owns; it allocates nothing and
    // touches no memory shared with the parent. Every source is first copied above every
    // target number, so dup2 onto a target never clobbers a source still to be placed.
    unsafe {
        cmd.pre_exec(move || {
            let mut spares = [-1 as RawFd; MAX_INHERITED];
            for i in 0..n {
                spares[i] = libc::fcntl(pairs[i].0, libc::F_DUPFD_CLOEXEC, spare_floor);
                if spares[i] < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            for i in 0..n {
                if libc::dup2(spares[i], pairs[i].1) < 0 {
                    return Err(io::Error::last_os_error());
                }
                libc::close(spares[i]);
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// Forks a child that runs `f` and exits; returns the child's pid to the parent.
///
/// Only call while the process is single-threaded (the supervisor always is).
pub fn fork_child(f: impl FnOnce() -> i32) -> io::Result<nix::unistd::Pid> {
    // SAFETY: the supervisor is single-threaded (it starts no threads, see ARCHITECTURE.md), so
    // the child inherits no lock held by another thread; the child runs `f` and leaves with
    // `_exit`, never returning into the parent's code.
    match unsafe { nix::unistd::fork() }.map_err(io::Error::from)? {
        nix::unistd::ForkResult::Parent { child } => Ok(child),
        nix::unistd::ForkResult::Child => {
            let code = f();
            // SAFETY: _exit ends the child immediately without running the parent's atexit
            // handlers or destructors (which belong to the parent).
            unsafe { libc::_exit(code) }
        }
    }
}

/// A connected Unix stream socketpair (close-on-exec on both ends).
pub fn socketpair() -> io::Result<(OwnedFd, OwnedFd)> {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(io::Error::from)
}

/// The uid of the peer of a Unix stream.
pub fn peer_uid(stream: &std::os::unix::net::UnixStream) -> Option<u32> {
    nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials)
        .ok()
        .map(|c| c.uid())
}

/// Gives the C allocator's free memory back to the kernel (`malloc_trim(0)`), after a reload
/// dropped the previous configuration (100,000 subnets: ~100 MiB).
pub fn trim_heap() {
    // SAFETY: malloc_trim only walks and releases the allocator's own free lists; it takes no
    // pointer from us and is safe to call at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    /// Every descriptor lands at its number, whichever numbers the sources had (here placed
    /// crosswise: the file meant for 3 and the one meant for 4 swapped), and stdin is empty.
    #[test]
    fn spawn_worker_places_each_descriptor_at_its_number() {
        let dir = tempfile::tempdir().expect("tempdir");
        let open = |name: &str| std::fs::File::create(dir.path().join(name)).expect("create");
        let (three, four, five) = (open("three"), open("four"), open("five"));
        let at = |fd: RawFd| InheritedFd { name: "test", fd };
        let script = "echo three >&3; echo four >&4; echo five >&5; cat; echo done >&3";
        let mut child = spawn_worker(
            std::path::Path::new("/bin/sh"),
            &["-c".into(), script.into()],
            &[
                (at(4), four.as_fd()),
                (at(3), three.as_fd()),
                (at(5), five.as_fd()),
            ],
        )
        .expect("spawn");
        assert!(child.wait().expect("wait").success());
        let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).expect("read");
        assert_eq!(read("three"), "three\ndone\n");
        assert_eq!(read("four"), "four\n");
        assert_eq!(read("five"), "five\n");
    }
}

//! The supervisor's small system layer: starting a worker process with its inherited
//! descriptors, and forking a short-lived child for a long control-socket answer.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

/// The descriptor number a worker finds its UDP socket at.
pub const WORKER_UDP_FD: RawFd = 3;
/// The descriptor number a worker finds its supervisor channel at.
pub const WORKER_CHANNEL_FD: RawFd = 4;

/// Starts `exe worker --id ID --workers N --supervisor-pid PID` with `udp` as fd 3 and `channel` as fd 4.
pub fn spawn_worker(
    exe: &std::path::Path,
    id: usize,
    workers: usize,
    udp: &OwnedFd,
    channel: &OwnedFd,
) -> io::Result<Child> {
    let udp_fd = udp.as_raw_fd();
    let ch_fd = channel.as_raw_fd();
    let mut cmd = Command::new(exe);
    cmd.arg("worker")
        .arg("--id")
        .arg(id.to_string())
        .arg("--workers")
        .arg(workers.to_string())
        .arg("--supervisor-pid")
        .arg(std::process::id().to_string())
        .stdin(Stdio::null());
    // SAFETY: the closure runs in the forked child before exec and only calls dup2/fcntl, which
    // are async-signal-safe; it touches no memory shared with the parent. Moving the channel to
    // a spare number first keeps dup2(udp, 3) from clobbering it when it already sits at 3.
    unsafe {
        cmd.pre_exec(move || {
            let spare = libc::fcntl(ch_fd, libc::F_DUPFD, 10);
            if spare < 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::dup2(udp_fd, WORKER_UDP_FD) < 0 || libc::dup2(spare, WORKER_CHANNEL_FD) < 0 {
                return Err(io::Error::last_os_error());
            }
            libc::close(spare);
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

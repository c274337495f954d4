//! The tool's system layer: batched UDP send and receive (`sendmmsg`/`recvmmsg`), the socket
//! error queue (`IP_RECVERR`), and process CPU time (`getrusage`).
//!
//! This is the only module of dhcpperf that contains `unsafe`. Every buffer handed to the
//! kernel is owned by the batch struct, never reallocated after construction, and the
//! pointer tables (`iovec`, `mmsghdr`) are rebuilt right before each call, so they always
//! point into live memory of the same struct.

use std::io;
use std::mem;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Duration;

/// Size of every packet buffer (an Ethernet MTU; DHCP replies from relays fit).
pub const PACKET_CAP: usize = 1500;

fn to_sockaddr(addr: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*addr.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

fn from_sockaddr(sa: &libc::sockaddr_in) -> SocketAddrV4 {
    SocketAddrV4::new(
        Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr)),
        u16::from_be(sa.sin_port),
    )
}

fn zero_sockaddr() -> libc::sockaddr_in {
    to_sockaddr(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))
}

fn empty_iovec() -> libc::iovec {
    libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }
}

fn empty_mmsghdr() -> libc::mmsghdr {
    // SAFETY: mmsghdr is a plain C struct of integers and raw pointers; all-zero is a valid
    // value (null pointers, zero lengths) and is what the kernel expects for unused fields.
    unsafe { mem::zeroed() }
}

/// True for the errors the kernel reports after an ICMP error for this socket
/// (port/host/network unreachable), which are worth counting, not fatal.
pub fn is_icmp_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ECONNREFUSED | libc::EHOSTUNREACH | libc::ENETUNREACH | libc::EHOSTDOWN)
    )
}

/// Outcome of [`SendBatch::flush`].
#[derive(Debug, Default)]
pub struct SendOutcome {
    /// Datagrams the kernel accepted.
    pub sent: usize,
    /// Datagrams dropped after an error.
    pub dropped: usize,
    /// ICMP-caused errors seen (each retried once).
    pub icmp_errors: usize,
    /// The last error, if any.
    pub last_error: Option<io::Error>,
}

/// A batch of outgoing datagrams, sent with one `sendmmsg` call.
pub struct SendBatch {
    bufs: Vec<[u8; PACKET_CAP]>,
    lens: Vec<usize>,
    addrs: Vec<libc::sockaddr_in>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    len: usize,
}

impl SendBatch {
    /// A batch holding up to `capacity` datagrams (at least 1).
    pub fn new(capacity: usize) -> Self {
        let cap = capacity.max(1);
        Self {
            bufs: vec![[0u8; PACKET_CAP]; cap],
            lens: vec![0; cap],
            addrs: vec![zero_sockaddr(); cap],
            iovs: vec![empty_iovec(); cap],
            hdrs: (0..cap).map(|_| empty_mmsghdr()).collect(),
            len: 0,
        }
    }

    /// Datagrams queued.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True when no more datagrams fit.
    pub fn is_full(&self) -> bool {
        self.len == self.bufs.len()
    }

    /// Queues one datagram to `dst`, written by `fill` (which returns its length). Returns
    /// false (and queues nothing) when the batch is full.
    pub fn push_with(&mut self, dst: SocketAddrV4, fill: impl FnOnce(&mut [u8]) -> usize) -> bool {
        let i = self.len;
        let (Some(buf), Some(len), Some(addr)) = (
            self.bufs.get_mut(i),
            self.lens.get_mut(i),
            self.addrs.get_mut(i),
        ) else {
            return false;
        };
        *len = fill(&mut buf[..]).min(PACKET_CAP);
        *addr = to_sockaddr(dst);
        self.len += 1;
        true
    }

    /// Sends everything queued (one `sendmmsg`, more if the kernel takes part of the batch)
    /// and empties the batch. After an ICMP-caused error the failed datagram is retried once;
    /// after any other error the rest of the batch is dropped.
    pub fn flush(&mut self, fd: BorrowedFd<'_>) -> SendOutcome {
        let n = self.len;
        self.len = 0;
        let mut out = SendOutcome::default();
        for i in 0..n {
            self.iovs[i] = libc::iovec {
                iov_base: self.bufs[i].as_mut_ptr().cast(),
                iov_len: self.lens[i],
            };
            let mut h = empty_mmsghdr();
            h.msg_hdr.msg_name = std::ptr::addr_of_mut!(self.addrs[i]).cast();
            h.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            h.msg_hdr.msg_iov = std::ptr::addr_of_mut!(self.iovs[i]);
            h.msg_hdr.msg_iovlen = 1;
            self.hdrs[i] = h;
        }
        let mut done = 0usize;
        let mut retried_at = usize::MAX;
        while done < n {
            let rest = &mut self.hdrs[done..n];
            // SAFETY: `rest` is a live slice of initialised mmsghdr whose name/iov pointers were
            // set above to elements of self.addrs / self.iovs / self.bufs, which are not moved or
            // resized while this call runs; the length passed is the slice length.
            let r = unsafe {
                libc::sendmmsg(
                    fd.as_raw_fd(),
                    rest.as_mut_ptr(),
                    rest.len() as libc::c_uint,
                    0,
                )
            };
            if r >= 0 {
                done += r as usize;
                out.sent += r as usize;
                continue;
            }
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            if is_icmp_error(&e) && retried_at != done {
                out.icmp_errors += 1;
                retried_at = done;
                out.last_error = Some(e);
                continue;
            }
            out.dropped += n - done;
            out.last_error = Some(e);
            break;
        }
        out
    }
}

/// A batch of incoming datagrams, filled by one `recvmmsg` call.
pub struct RecvBatch {
    bufs: Vec<[u8; PACKET_CAP]>,
    addrs: Vec<libc::sockaddr_in>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    received: usize,
}

impl RecvBatch {
    /// A batch with room for `capacity` datagrams (at least 1).
    pub fn new(capacity: usize) -> Self {
        let cap = capacity.max(1);
        Self {
            bufs: vec![[0u8; PACKET_CAP]; cap],
            addrs: vec![zero_sockaddr(); cap],
            iovs: vec![empty_iovec(); cap],
            hdrs: (0..cap).map(|_| empty_mmsghdr()).collect(),
            received: 0,
        }
    }

    /// Waits for at least one datagram (up to the socket's receive timeout) and takes every
    /// datagram already queued, up to the capacity. Returns how many were received.
    pub fn recv(&mut self, fd: BorrowedFd<'_>) -> io::Result<usize> {
        self.received = 0;
        let cap = self.bufs.len();
        for i in 0..cap {
            self.iovs[i] = libc::iovec {
                iov_base: self.bufs[i].as_mut_ptr().cast(),
                iov_len: PACKET_CAP,
            };
            let mut h = empty_mmsghdr();
            h.msg_hdr.msg_name = std::ptr::addr_of_mut!(self.addrs[i]).cast();
            h.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            h.msg_hdr.msg_iov = std::ptr::addr_of_mut!(self.iovs[i]);
            h.msg_hdr.msg_iovlen = 1;
            self.hdrs[i] = h;
        }
        // SAFETY: self.hdrs holds `cap` initialised mmsghdr pointing at buffers, addresses and
        // iovecs owned by self that stay in place during the call; a null timeout is allowed
        // (the socket's SO_RCVTIMEO bounds the wait).
        let r = unsafe {
            libc::recvmmsg(
                fd.as_raw_fd(),
                self.hdrs.as_mut_ptr(),
                cap as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        self.received = r as usize;
        Ok(self.received)
    }

    /// Datagrams received by the last [`RecvBatch::recv`].
    pub fn len(&self) -> usize {
        self.received
    }

    /// True when the last receive returned nothing.
    pub fn is_empty(&self) -> bool {
        self.received == 0
    }

    /// Datagram `i` of the last receive: payload, source address, and whether the kernel
    /// truncated it.
    pub fn get(&self, i: usize) -> Option<(&[u8], SocketAddrV4, bool)> {
        if i >= self.received {
            return None;
        }
        let h = self.hdrs.get(i)?;
        let len = (h.msg_len as usize).min(PACKET_CAP);
        let truncated = h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        let buf = self.bufs.get(i)?.get(..len)?;
        Some((buf, from_sockaddr(self.addrs.get(i)?), truncated))
    }
}

/// Enables `IP_RECVERR`, so ICMP errors for this unconnected socket are reported (as errors
/// of later calls, and on the error queue, which [`drain_error_queue`] must empty).
pub fn enable_recv_err(fd: BorrowedFd<'_>) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: passes a pointer to a live c_int and its exact size, as IP_RECVERR expects.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_RECVERR,
            std::ptr::addr_of!(on).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Reads and discards up to `max` entries of the socket's error queue without blocking.
/// Returns how many were read.
pub fn drain_error_queue(fd: BorrowedFd<'_>, max: usize) -> usize {
    let mut n = 0;
    let mut data = [0u8; 64];
    let mut control = [0u64; 64];
    while n < max {
        let mut iov = libc::iovec {
            iov_base: data.as_mut_ptr().cast(),
            iov_len: data.len(),
        };
        // SAFETY: msghdr is a plain C struct; all-zero is a valid starting value.
        let mut msg: libc::msghdr = unsafe { mem::zeroed() };
        msg.msg_iov = std::ptr::addr_of_mut!(iov);
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = mem::size_of_val(&control) as _;
        // SAFETY: msg points at the local iovec, data and control buffers, all live for the
        // call and described with their exact sizes; MSG_DONTWAIT keeps it from blocking.
        let r = unsafe {
            libc::recvmsg(
                fd.as_raw_fd(),
                std::ptr::addr_of_mut!(msg),
                libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT,
            )
        };
        if r < 0 {
            break;
        }
        n += 1;
    }
    n
}

/// User and system CPU time of this process (all threads) so far.
pub fn process_cpu_time() -> io::Result<(Duration, Duration)> {
    // SAFETY: rusage is a plain C struct; all-zero is valid and getrusage overwrites it.
    let mut ru: libc::rusage = unsafe { mem::zeroed() };
    // SAFETY: passes a pointer to the live local `ru`, as getrusage requires.
    let r = unsafe { libc::getrusage(libc::RUSAGE_SELF, std::ptr::addr_of_mut!(ru)) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    Ok((tv(ru.ru_utime), tv(ru.ru_stime)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsFd;

    #[test]
    fn batch_roundtrip_on_loopback() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        b.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let SocketAddr4(dst) = SocketAddr4::of(&b);
        let mut sb = SendBatch::new(4);
        for i in 0..4u8 {
            assert!(sb.push_with(dst, |buf| {
                buf[..3].copy_from_slice(&[i, i, i]);
                3
            }));
        }
        assert!(sb.is_full());
        assert!(!sb.push_with(dst, |_| 1));
        let out = sb.flush(a.as_fd());
        assert_eq!(out.sent, 4, "{out:?}");
        assert!(sb.is_empty());
        let mut rb = RecvBatch::new(8);
        let mut got = Vec::new();
        for _ in 0..10 {
            let n = rb.recv(b.as_fd()).unwrap();
            for i in 0..n {
                let (p, src, trunc) = rb.get(i).unwrap();
                assert!(!trunc);
                assert_eq!(src.port(), a.local_addr().unwrap().port());
                got.push(p.to_vec());
            }
            if got.len() == 4 {
                break;
            }
        }
        assert_eq!(got, vec![vec![0; 3], vec![1; 3], vec![2; 3], vec![3; 3]]);
        assert!(rb.get(n_past(&rb)).is_none());
    }

    fn n_past(rb: &RecvBatch) -> usize {
        rb.len()
    }

    struct SocketAddr4(SocketAddrV4);
    impl SocketAddr4 {
        fn of(s: &UdpSocket) -> Self {
            match s.local_addr().unwrap() {
                std::net::SocketAddr::V4(a) => Self(a),
                std::net::SocketAddr::V6(_) => unreachable!(),
            }
        }
    }

    #[test]
    fn cpu_time_is_monotonic() {
        let (u1, s1) = process_cpu_time().unwrap();
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let (u2, s2) = process_cpu_time().unwrap();
        assert!(u2 + s2 >= u1 + s1);
    }

    #[test]
    fn icmp_errors_are_recognised() {
        assert!(is_icmp_error(&io::Error::from_raw_os_error(
            libc::ECONNREFUSED
        )));
        assert!(!is_icmp_error(&io::Error::from_raw_os_error(libc::EBADF)));
    }
}

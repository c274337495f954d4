//! The tool's system layer: batched UDP send and receive (`sendmmsg`/`recvmmsg`), the socket
//! error queue (`IP_RECVERR`), and process CPU time (`getrusage`), all through [`nix`] (as the
//! worker does), so dhcpperf has no `unsafe` of its own.
//!
//! Every buffer handed to the kernel is owned by the batch struct and allocated once, at
//! construction; the message headers are nix's preallocated [`MultiHeaders`].

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::resource::{getrusage, UsageWho};
use nix::sys::socket::{self, sockopt, ControlMessage, MsgFlags, MultiHeaders, SockaddrIn};
use nix::sys::time::TimeValLike;

/// Size of every packet buffer (an Ethernet MTU; DHCP replies from relays fit).
pub const PACKET_CAP: usize = 1500;

/// True for the errors the kernel reports after an ICMP error for this socket
/// (port/host/network unreachable), which are worth counting, not fatal.
pub fn is_icmp_error(e: &io::Error) -> bool {
    e.raw_os_error().map(Errno::from_raw).is_some_and(|errno| {
        matches!(
            errno,
            Errno::ECONNREFUSED | Errno::EHOSTUNREACH | Errno::ENETUNREACH | Errno::EHOSTDOWN
        )
    })
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
    headers: MultiHeaders<SockaddrIn>,
    bufs: Vec<[u8; PACKET_CAP]>,
    lens: Vec<usize>,
    addrs: Vec<Option<SockaddrIn>>,
    len: usize,
}

impl SendBatch {
    /// A batch holding up to `capacity` datagrams (at least 1).
    pub fn new(capacity: usize) -> Self {
        let cap = capacity.max(1);
        Self {
            headers: MultiHeaders::preallocate(cap, None),
            bufs: vec![[0u8; PACKET_CAP]; cap],
            lens: vec![0; cap],
            addrs: vec![None; cap],
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
        *addr = Some(SockaddrIn::from(dst));
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
        let iovs: Vec<[IoSlice<'_>; 1]> = self.bufs[..n]
            .iter()
            .zip(&self.lens[..n])
            .map(|(b, &l)| [IoSlice::new(&b[..l])])
            .collect();
        let no_cmsgs: [ControlMessage<'_>; 0] = [];
        let mut done = 0usize;
        let mut retried_at = usize::MAX;
        while done < n {
            let r = socket::sendmmsg(
                fd.as_raw_fd(),
                &mut self.headers,
                &iovs[done..n],
                &self.addrs[done..n],
                no_cmsgs,
                MsgFlags::empty(),
            )
            .map(|res| res.count());
            let e = match r {
                Ok(sent) => {
                    done += sent;
                    out.sent += sent;
                    continue;
                }
                Err(Errno::EINTR) => continue,
                Err(errno) => io::Error::from(errno),
            };
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

/// Length, source and truncation flag of one received datagram.
#[derive(Debug, Clone, Copy)]
struct Received {
    len: usize,
    src: SocketAddrV4,
    truncated: bool,
}

/// A batch of incoming datagrams, filled by one `recvmmsg` call.
pub struct RecvBatch {
    headers: MultiHeaders<SockaddrIn>,
    bufs: Vec<[u8; PACKET_CAP]>,
    received: Vec<Received>,
}

impl RecvBatch {
    /// A batch with room for `capacity` datagrams (at least 1).
    pub fn new(capacity: usize) -> Self {
        let cap = capacity.max(1);
        Self {
            headers: MultiHeaders::preallocate(cap, None),
            bufs: vec![[0u8; PACKET_CAP]; cap],
            received: Vec::with_capacity(cap),
        }
    }

    /// Waits for at least one datagram (up to the socket's receive timeout) and takes every
    /// datagram already queued, up to the capacity. Returns how many were received.
    pub fn recv(&mut self, fd: BorrowedFd<'_>) -> io::Result<usize> {
        self.received.clear();
        let mut iovs: Vec<[IoSliceMut<'_>; 1]> = self
            .bufs
            .iter_mut()
            .map(|b| [IoSliceMut::new(&mut b[..])])
            .collect();
        // No timeout: the socket's SO_RCVTIMEO bounds the wait for the first datagram.
        let msgs = socket::recvmmsg(
            fd.as_raw_fd(),
            &mut self.headers,
            iovs.iter_mut(),
            MsgFlags::MSG_WAITFORONE,
            None,
        )?;
        for m in msgs {
            let src = m
                .address
                .map_or(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0), |a| {
                    SocketAddrV4::new(a.ip(), a.port())
                });
            self.received.push(Received {
                len: m.bytes.min(PACKET_CAP),
                src,
                truncated: m.flags.contains(MsgFlags::MSG_TRUNC),
            });
        }
        Ok(self.received.len())
    }

    /// Datagrams received by the last [`RecvBatch::recv`].
    pub fn len(&self) -> usize {
        self.received.len()
    }

    /// True when the last receive returned nothing.
    pub fn is_empty(&self) -> bool {
        self.received.is_empty()
    }

    /// Datagram `i` of the last receive: payload, source address, and whether the kernel
    /// truncated it.
    pub fn get(&self, i: usize) -> Option<(&[u8], SocketAddrV4, bool)> {
        let r = self.received.get(i)?;
        let buf = self.bufs.get(i)?.get(..r.len)?;
        Some((buf, r.src, r.truncated))
    }
}

/// Enables `IP_RECVERR`, so ICMP errors for this unconnected socket are reported (as errors
/// of later calls, and on the error queue, which [`drain_error_queue`] must empty).
pub fn enable_recv_err(fd: BorrowedFd<'_>) -> io::Result<()> {
    socket::setsockopt(&fd, sockopt::Ipv4RecvErr, &true)?;
    Ok(())
}

/// Reads and discards up to `max` entries of the socket's error queue without blocking.
/// Returns how many were read.
pub fn drain_error_queue(fd: BorrowedFd<'_>, max: usize) -> usize {
    let mut n = 0;
    let mut data = [0u8; 64];
    let mut control = [0u8; 512];
    while n < max {
        let mut iov = [IoSliceMut::new(&mut data)];
        let r = socket::recvmsg::<()>(
            fd.as_raw_fd(),
            &mut iov,
            Some(&mut control[..]),
            MsgFlags::MSG_ERRQUEUE | MsgFlags::MSG_DONTWAIT,
        );
        if r.is_err() {
            break;
        }
        n += 1;
    }
    n
}

/// User and system CPU time of this process (all threads) so far.
pub fn process_cpu_time() -> io::Result<(Duration, Duration)> {
    let ru = getrusage(UsageWho::RUSAGE_SELF)?;
    let tv = |t: nix::sys::time::TimeVal| Duration::from_micros(t.num_microseconds().max(0) as u64);
    Ok((tv(ru.user_time()), tv(ru.system_time())))
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
    fn oversized_datagram_is_flagged_truncated() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        b.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        a.send_to(&[7u8; PACKET_CAP + 100], b.local_addr().unwrap())
            .unwrap();
        a.send_to(&[8u8; 10], b.local_addr().unwrap()).unwrap();
        let mut rb = RecvBatch::new(4);
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while got.len() < 2 && std::time::Instant::now() < deadline {
            let n = rb.recv(b.as_fd()).unwrap();
            for i in 0..n {
                let (p, _, trunc) = rb.get(i).unwrap();
                got.push((p.len(), p[0], trunc));
            }
        }
        assert_eq!(got, vec![(PACKET_CAP, 7, true), (10, 8, false)]);
    }

    #[test]
    fn icmp_unreachable_lands_on_the_error_queue() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        enable_recv_err(a.as_fd()).unwrap();
        // A port nobody listens on: bind one, note it, close it.
        let closed = SocketAddr4::of(&UdpSocket::bind("127.0.0.1:0").unwrap()).0;
        let mut sb = SendBatch::new(1);
        assert!(sb.push_with(closed, |buf| {
            buf[0] = 1;
            1
        }));
        let out = sb.flush(a.as_fd());
        assert_eq!(out.sent, 1, "{out:?}");
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        let mut drained = 0;
        while drained == 0 && std::time::Instant::now() < deadline {
            drained = drain_error_queue(a.as_fd(), 8);
        }
        assert_eq!(drained, 1);
        assert_eq!(drain_error_queue(a.as_fd(), 8), 0);
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
        for errno in [
            Errno::ECONNREFUSED,
            Errno::EHOSTUNREACH,
            Errno::ENETUNREACH,
            Errno::EHOSTDOWN,
        ] {
            assert!(is_icmp_error(&io::Error::from(errno)), "{errno}");
        }
        assert!(!is_icmp_error(&io::Error::from(Errno::EBADF)));
        assert!(!is_icmp_error(&io::Error::other("no errno")));
    }
}

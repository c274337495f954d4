//! The small system layer of the worker: batched receive/send with IP_PKTINFO, the parent-death
//! signal, and taking inherited descriptors. Kept here so the rest of the worker stays free of
//! socket options and raw file descriptors. (The sockets themselves, their options and the
//! steering program are made by the supervisor, which owns them: its `sockets` module.)

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsFd, AsRawFd, RawFd};

use nix::sys::socket::{self, ControlMessage, ControlMessageOwned, MsgFlags, SockaddrIn};

/// One received datagram's metadata.
#[derive(Debug, Clone, Copy)]
pub struct Received {
    /// Bytes in the buffer.
    pub len: usize,
    /// Source.
    pub src: SocketAddrV4,
    /// Arrival interface.
    pub ifindex: u32,
    /// Local address to answer from (IP_PKTINFO `ipi_spec_dst`).
    pub local: Ipv4Addr,
    /// Destination address of the datagram.
    pub dst: Ipv4Addr,
}

/// Batch size of recvmmsg/sendmmsg.
pub const BATCH: usize = 32;
/// Receive buffer per datagram (larger datagrams are truncated and dropped by the codec's
/// option framing check).
pub const RECV_BUF: usize = 2048;

/// Preallocated state for batched receives.
#[derive(Debug)]
pub struct RecvBatch {
    headers: socket::MultiHeaders<SockaddrIn>,
    /// Datagram buffers.
    pub bufs: Vec<[u8; RECV_BUF]>,
    /// Metadata of the datagrams received by the last call.
    pub meta: Vec<Received>,
    /// The socket's count of datagrams the kernel dropped because its receive buffer was full
    /// (`SO_RXQ_OVFL`, set by the supervisor), as of the last datagram received; `None` until
    /// a datagram brought it.
    pub kernel_dropped: Option<u32>,
}

/// Headers for one `recvmmsg` with room for each datagram's control messages (IP_PKTINFO and
/// the `SO_RXQ_OVFL` drop count).
///
/// Made afresh for every call: the kernel shrinks each header's `msg_controllen` to what it
/// used, and nix's `recvmmsg` does not restore it, so headers kept from one call to the next
/// have room for IP_PKTINFO alone; a datagram that also carries the drop count then comes back
/// truncated (`MSG_CTRUNC`) and nix hands out none of its control messages.
fn recv_headers() -> socket::MultiHeaders<SockaddrIn> {
    socket::MultiHeaders::preallocate(BATCH, Some(nix::cmsg_space!(libc::in_pktinfo, u32)))
}

impl Default for RecvBatch {
    fn default() -> Self {
        RecvBatch {
            headers: recv_headers(),
            bufs: vec![[0u8; RECV_BUF]; BATCH],
            meta: Vec::with_capacity(BATCH),
            kernel_dropped: None,
        }
    }
}

impl RecvBatch {
    /// Receives up to [`BATCH`] datagrams without blocking. Returns how many (0 = would block).
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        self.meta.clear();
        self.headers = recv_headers();
        let mut iovs: Vec<[io::IoSliceMut<'_>; 1]> = self
            .bufs
            .iter_mut()
            .map(|b| [io::IoSliceMut::new(&mut b[..])])
            .collect();
        let res = match socket::recvmmsg(
            fd,
            &mut self.headers,
            iovs.iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        ) {
            Ok(r) => r,
            Err(nix::errno::Errno::EAGAIN) => return Ok(0),
            Err(e) => return Err(e.into()),
        };
        for msg in res {
            let mut ifindex = 0;
            let mut local = Ipv4Addr::UNSPECIFIED;
            let mut dst = Ipv4Addr::UNSPECIFIED;
            if let Ok(cmsgs) = msg.cmsgs() {
                for c in cmsgs {
                    match c {
                        ControlMessageOwned::Ipv4PacketInfo(pi) => {
                            ifindex = pi.ipi_ifindex as u32;
                            local = Ipv4Addr::from(u32::from_be(pi.ipi_spec_dst.s_addr));
                            dst = Ipv4Addr::from(u32::from_be(pi.ipi_addr.s_addr));
                        }
                        ControlMessageOwned::RxqOvfl(n) => self.kernel_dropped = Some(n),
                        _ => {}
                    }
                }
            }
            let src = msg
                .address
                .map(|a| SocketAddrV4::new(a.ip(), a.port()))
                .unwrap_or(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));
            let truncated = msg.flags.contains(MsgFlags::MSG_TRUNC);
            self.meta.push(Received {
                len: if truncated { 0 } else { msg.bytes },
                src,
                ifindex,
                local,
                dst,
            });
        }
        Ok(self.meta.len())
    }
}

/// Replies waiting to be sent with one `sendmmsg`.
#[derive(Debug)]
pub struct SendBatch {
    headers: socket::MultiHeaders<SockaddrIn>,
    bufs: Vec<[u8; crate::codec::MAX_REPLY]>,
    lens: Vec<usize>,
    addrs: Vec<Option<SockaddrIn>>,
}

impl Default for SendBatch {
    fn default() -> Self {
        SendBatch {
            headers: socket::MultiHeaders::preallocate(BATCH, None),
            bufs: vec![[0u8; crate::codec::MAX_REPLY]; BATCH],
            lens: Vec::with_capacity(BATCH),
            addrs: Vec::with_capacity(BATCH),
        }
    }
}

impl SendBatch {
    /// The buffer the next reply should be written into, if the batch has room.
    pub fn next_buf(&mut self) -> Option<&mut [u8; crate::codec::MAX_REPLY]> {
        let i = self.lens.len();
        self.bufs.get_mut(i)
    }

    /// Queues the reply written into [`SendBatch::next_buf`].
    pub fn push(&mut self, len: usize, dst: SocketAddrV4) {
        self.lens.push(len);
        self.addrs.push(Some(SockaddrIn::from(dst)));
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.lens.is_empty()
    }

    /// How many replies are queued.
    pub fn len(&self) -> usize {
        self.lens.len()
    }

    /// Forgets the queued replies without sending them.
    pub fn clear(&mut self) {
        self.lens.clear();
        self.addrs.clear();
    }

    /// Sends everything queued; returns how many datagrams the kernel did not take.
    ///
    /// `sendmmsg` stops at the first message the kernel refuses (an unreachable relay, a full
    /// buffer) and reports only how many went before it; that one is counted as failed and the
    /// rest of the batch is sent on, so one bad destination costs one reply, not the batch.
    pub fn flush(&mut self, fd: impl AsFd) -> usize {
        let n = self.lens.len();
        let raw = fd.as_fd().as_raw_fd();
        let no_cmsgs: [ControlMessage<'_>; 0] = [];
        let mut failed = 0;
        let mut from = 0;
        while from < n {
            let iovs: Vec<[io::IoSlice<'_>; 1]> = self.bufs[from..n]
                .iter()
                .zip(&self.lens[from..])
                .map(|(b, &l)| [io::IoSlice::new(&b[..l])])
                .collect();
            match socket::sendmmsg(
                raw,
                &mut self.headers,
                iovs.iter(),
                &self.addrs[from..],
                no_cmsgs,
                MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(r) => from += r.count(),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => {}
            }
            if from < n {
                // The message at `from` was refused: count it and go on with the next.
                failed += 1;
                from += 1;
            }
        }
        self.lens.clear();
        self.addrs.clear();
        failed
    }
}

/// Sends one datagram, through interface `ifindex` with source `src` when given (replies to
/// clients that have no address yet), else routed normally.
pub fn send_to(
    fd: impl AsFd,
    buf: &[u8],
    dst: SocketAddrV4,
    ifindex: Option<u32>,
    src: Ipv4Addr,
) -> io::Result<()> {
    let addr = SockaddrIn::from(dst);
    let iov = [io::IoSlice::new(buf)];
    let pi;
    let cmsgs: Vec<ControlMessage<'_>> = match ifindex {
        Some(ifi) => {
            pi = libc::in_pktinfo {
                ipi_ifindex: ifi as i32,
                ipi_spec_dst: libc::in_addr {
                    s_addr: u32::from(src).to_be(),
                },
                ipi_addr: libc::in_addr { s_addr: 0 },
            };
            vec![ControlMessage::Ipv4PacketInfo(&pi)]
        }
        None => Vec::new(),
    };
    socket::sendmsg(
        fd.as_fd().as_raw_fd(),
        &iov,
        &cmsgs,
        MsgFlags::MSG_DONTWAIT,
        Some(&addr),
    )
    .map(|_| ())
    .map_err(io::Error::from)
}

/// Gives the C allocator's free memory back to the kernel (`malloc_trim(0)`): after a reload
/// replaced a large configuration (100,000 subnets: ~100 MiB of views, built on another thread,
/// hence in another allocator arena), the freed memory otherwise stays in the process.
pub fn trim_heap() {
    // SAFETY: malloc_trim only walks and releases the allocator's own free lists; it takes no
    // pointer from us and is safe to call at any time from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    #[test]
    fn one_refused_message_does_not_drop_the_rest_of_the_batch() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").expect("receiver");
        rx.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .expect("timeout");
        let SocketAddr::V4(to) = rx.local_addr().expect("addr") else {
            panic!("not v4")
        };
        // No SO_BROADCAST: the kernel refuses a datagram to 255.255.255.255 (EACCES, or
        // ENETUNREACH without a route), and sendmmsg stops there.
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").expect("sender");
        let refused = SocketAddrV4::new(Ipv4Addr::BROADCAST, to.port());
        let mut batch = SendBatch::default();
        for (i, dst) in [to, refused, to, to, refused, to].into_iter().enumerate() {
            let buf = batch.next_buf().expect("room");
            buf[0] = i as u8;
            batch.push(1, dst);
        }
        assert_eq!(
            batch.flush(&tx),
            2,
            "exactly the two refused datagrams fail"
        );
        assert!(batch.is_empty());
        let mut got = Vec::new();
        let mut buf = [0u8; 16];
        for _ in 0..4 {
            let (len, _) = rx.recv_from(&mut buf).expect("a datagram of the batch");
            assert_eq!(len, 1);
            got.push(buf[0]);
        }
        assert_eq!(
            got,
            vec![0, 2, 3, 5],
            "every datagram after a refused one is sent"
        );
    }
}

//! The small system layer of the worker: socket setup (SO_REUSEPORT group, IP_PKTINFO, the
//! classic-BPF steering program) and batched receive/send. Kept here so the rest of the worker
//! stays free of socket options and raw file descriptors.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{self, sockopt, ControlMessage, ControlMessageOwned, MsgFlags, SockaddrIn};
use socket2::{Domain, Protocol, Socket, Type};

/// Creates the `n` UDP sockets of one SO_REUSEPORT group on `0.0.0.0:port`, in order, and
/// attaches the steering program that spreads clients over them by a hash of chaddr (the kernel
/// hashes on the source address otherwise, which puts everything from one relay on one socket).
/// The supervisor creates them once and keeps them across worker restarts, so a restarted
/// worker finds the datagrams queued meanwhile and client→worker steering never changes.
pub fn reuseport_group(port: u16, n: usize) -> io::Result<Vec<OwnedFd>> {
    reuseport_group_on(Ipv4Addr::UNSPECIFIED, port, n)
}

/// [`reuseport_group`] on `addr:port`; port 0 binds the first socket to a free port and the
/// others to the same one (tests use 127.0.0.1 and port 0).
fn reuseport_group_on(addr: Ipv4Addr, port: u16, n: usize) -> io::Result<Vec<OwnedFd>> {
    let mut socks = Vec::with_capacity(n);
    let mut port = port;
    for _ in 0..n {
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        s.set_reuse_port(true)?;
        s.set_reuse_address(true)?;
        s.set_broadcast(true)?;
        s.set_nonblocking(true)?;
        s.set_recv_buffer_size(8 << 20)?;
        s.set_send_buffer_size(8 << 20)?;
        socket::setsockopt(&s, sockopt::Ipv4PacketInfo, &true).map_err(io::Error::from)?;
        s.bind(&SocketAddrV4::new(addr, port).into())?;
        if port == 0 {
            port = s
                .local_addr()?
                .as_socket_ipv4()
                .map(|a| a.port())
                .ok_or_else(|| io::Error::other("bound socket has no IPv4 address"))?;
        }
        socks.push(OwnedFd::from(s));
    }
    if n > 1 {
        attach_steering(&socks[0], n as u32)?;
    }
    Ok(socks)
}

/// The classic BPF program run by the kernel for every datagram of the group, with the data
/// pointer at the UDP payload: A = bytes 30..34 (the last four octets of a 6-byte chaddr),
/// multiplied by a golden-ratio constant, shifted, modulo the group size. A packet too short to
/// load from lands on socket 0 (the program aborts with 0).
pub fn steering_program(n: u32) -> [libc::sock_filter; 5] {
    let ins = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    [
        ins(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 30),
        ins(libc::BPF_ALU | libc::BPF_MUL | libc::BPF_K, 0x9E37_79B1),
        ins(libc::BPF_ALU | libc::BPF_RSH | libc::BPF_K, 16),
        ins(libc::BPF_ALU | libc::BPF_MOD | libc::BPF_K, n.max(1)),
        ins(libc::BPF_RET | libc::BPF_A, 0),
    ]
}

fn attach_steering(fd: &OwnedFd, n: u32) -> io::Result<()> {
    let mut prog = steering_program(n);
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_mut_ptr(),
    };
    socket::setsockopt(fd, sockopt::AttachReusePortCbpf, &fprog).map_err(io::Error::from)
}

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
}

impl Default for RecvBatch {
    fn default() -> Self {
        let cmsg = nix::cmsg_space!(libc::in_pktinfo);
        RecvBatch {
            headers: socket::MultiHeaders::preallocate(BATCH, Some(cmsg)),
            bufs: vec![[0u8; RECV_BUF]; BATCH],
            meta: Vec::with_capacity(BATCH),
        }
    }
}

impl RecvBatch {
    /// Receives up to [`BATCH`] datagrams without blocking. Returns how many (0 = would block).
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        self.meta.clear();
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
                    if let ControlMessageOwned::Ipv4PacketInfo(pi) = c {
                        ifindex = pi.ipi_ifindex as u32;
                        local = Ipv4Addr::from(u32::from_be(pi.ipi_spec_dst.s_addr));
                        dst = Ipv4Addr::from(u32::from_be(pi.ipi_addr.s_addr));
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

/// Makes the kernel SIGKILL this process when its parent (the supervisor) dies, then checks
/// that the parent is still `expected_parent`: if the supervisor died before the `prctl`, the
/// worker was already re-parented and no signal will ever come, so it must not start.
///
/// SIGKILL, not SIGTERM: a stopped worker (SIGSTOP, a debugger) never acts on SIGTERM and would
/// outlive the supervisor, and a SIGTERMed one still serves a batch turn while a new supervisor
/// may already be recovering its owner. A change half done is recovered from its intent record
/// like any other writer death.
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

/// Takes ownership of descriptor `fd`, which the supervisor placed for this process at exec
/// (the launch contract); an error if it is not open.
pub fn inherited_fd(fd: RawFd) -> io::Result<OwnedFd> {
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
    // and nothing else in the worker owns it; it was just checked to be open.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::net::{SocketAddr, UdpSocket};
    use std::time::{Duration, Instant};

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

    #[test]
    fn a_worker_whose_supervisor_already_died_does_not_start() {
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
    fn steering_program_is_bounded() {
        let p = steering_program(4);
        assert_eq!(p[3].k, 4);
        assert_eq!(steering_program(0)[3].k, 1, "never modulo zero");
    }

    /// A BOOTP-sized datagram with `chaddr` at its place (payload offset 28).
    fn datagram(chaddr: [u8; 6], tag: u16) -> Vec<u8> {
        let mut d = vec![0u8; 300];
        d[0] = 1;
        d[1] = 1;
        d[2] = 6;
        d[28..34].copy_from_slice(&chaddr);
        d[236..238].copy_from_slice(&tag.to_be_bytes());
        d
    }

    /// What the program computes for a chaddr (32-bit BPF arithmetic on the big-endian word
    /// at payload offset 30): used only to check the kernel ran *this* program.
    fn expected_socket(chaddr: [u8; 6], n: u32) -> usize {
        let a = u32::from_be_bytes([chaddr[2], chaddr[3], chaddr[4], chaddr[5]]);
        ((a.wrapping_mul(0x9E37_79B1) >> 16) % n) as usize
    }

    /// The port a group is bound to.
    fn group_port(group: &[OwnedFd]) -> u16 {
        socket::getsockname::<SockaddrIn>(group[0].as_raw_fd())
            .expect("getsockname")
            .port()
    }

    /// Receives from every socket of the group until `want` datagrams arrived or 5 s passed;
    /// returns (socket index, payload) pairs.
    fn drain(group: &[OwnedFd], want: usize) -> Vec<(usize, Vec<u8>)> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        while got.len() < want && Instant::now() < deadline {
            let mut idle = true;
            for (i, fd) in group.iter().enumerate() {
                loop {
                    match socket::recv(fd.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
                        Ok(n) => {
                            got.push((i, buf[..n].to_vec()));
                            idle = false;
                        }
                        Err(nix::errno::Errno::EAGAIN) => break,
                        Err(e) => panic!("recv on socket {i}: {e}"),
                    }
                }
            }
            if idle {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        got
    }

    /// Runs the real program: a SO_REUSEPORT group of real UDP sockets on 127.0.0.1 with the
    /// CBPF attached, datagrams with chosen chaddrs sent to it from one source (like a relay).
    /// Every chaddr must always land on the same socket, the one the program selects, and many
    /// chaddrs must spread over all sockets (the kernel's own hash would put every datagram of
    /// one source on one socket).
    #[test]
    fn the_attached_program_steers_by_chaddr_over_real_sockets() {
        const N: usize = 4;
        const CLIENTS: u16 = 400;
        const REPEAT: usize = 3;
        let group = reuseport_group_on(Ipv4Addr::LOCALHOST, 0, N).expect("reuseport group");
        let dst = SocketAddrV4::new(Ipv4Addr::LOCALHOST, group_port(&group));
        let tx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("sender");
        let mac = |c: u16| [0x02, 0x00, 0x5e, (c >> 8) as u8, c as u8, (c as u8) ^ 0x5a];
        let mut sent = 0usize;
        for _ in 0..REPEAT {
            for c in 0..CLIENTS {
                tx.send_to(&datagram(mac(c), c), dst).expect("send");
                sent += 1;
            }
        }
        let got = drain(&group, sent);
        assert_eq!(got.len(), sent, "every datagram arrives on some socket");
        let mut landed: HashMap<[u8; 6], Vec<usize>> = HashMap::new();
        let mut per_socket = [0usize; N];
        for (i, d) in &got {
            let chaddr: [u8; 6] = d[28..34].try_into().expect("chaddr");
            landed.entry(chaddr).or_default().push(*i);
            per_socket[*i] += 1;
        }
        assert_eq!(landed.len(), usize::from(CLIENTS));
        for (chaddr, socks) in &landed {
            assert_eq!(socks.len(), REPEAT, "{chaddr:02x?}");
            assert!(
                socks.iter().all(|&s| s == socks[0]),
                "chaddr {chaddr:02x?} landed on sockets {socks:?}"
            );
            assert_eq!(
                socks[0],
                expected_socket(*chaddr, N as u32),
                "chaddr {chaddr:02x?}: not the socket the program selects"
            );
        }
        // 400 clients over 4 sockets: each gets a fair share (300 datagrams expected).
        for (i, &c) in per_socket.iter().enumerate() {
            assert!(
                c >= sent / N / 2,
                "socket {i} got {c} of {sent}: {per_socket:?}"
            );
        }
    }

    /// A datagram too short to hold chaddr makes the program abort with 0: socket 0.
    #[test]
    fn a_datagram_too_short_for_the_program_lands_on_socket_zero() {
        let group = reuseport_group_on(Ipv4Addr::LOCALHOST, 0, 3).expect("reuseport group");
        let port = group_port(&group);
        let tx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("sender");
        // Several sources, so the kernel's own hash would not pick one socket for all.
        let tx2 = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("sender");
        let tx3 = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("sender");
        for i in 0..30u8 {
            let s = [&tx, &tx2, &tx3][usize::from(i % 3)];
            s.send_to(&[i; 20], (Ipv4Addr::LOCALHOST, port))
                .expect("send");
        }
        let got = drain(&group, 30);
        assert_eq!(got.len(), 30);
        assert!(got.iter().all(|(i, _)| *i == 0), "{got:?}");
    }
}

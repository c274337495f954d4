//! The supervisor's UDP socket group: the `n` sockets of one SO_REUSEPORT group, one per
//! worker, with the classic-BPF program that steers each client to one of them.
//!
//! The supervisor creates them once and keeps them across worker restarts, so a restarted
//! worker finds the datagrams queued meanwhile and client→worker steering never changes. Each
//! worker inherits its socket at exec (`prodhcp_proto::launch::UDP_SOCKET`).

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::OwnedFd;

use nix::sys::socket::{self, sockopt};
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
        let s = group_socket(addr, port)?;
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

/// One UDP socket of the group on `addr:port` (joins the group of sockets already bound there:
/// the kernel appends it after them).
fn group_socket(addr: Ipv4Addr, port: u16) -> io::Result<Socket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_port(true)?;
    s.set_reuse_address(true)?;
    s.set_broadcast(true)?;
    s.set_nonblocking(true)?;
    s.set_recv_buffer_size(8 << 20)?;
    s.set_send_buffer_size(8 << 20)?;
    socket::setsockopt(&s, sockopt::Ipv4PacketInfo, &true).map_err(io::Error::from)?;
    // Every received datagram carries the socket's count of datagrams the kernel dropped for
    // a full receive buffer: the worker reports it (`kernel_dropped`).
    socket::setsockopt(&s, sockopt::RxqOvfl, &1).map_err(io::Error::from)?;
    s.bind(&SocketAddrV4::new(addr, port).into())?;
    Ok(s)
}

/// Adds `more` sockets to the group on `0.0.0.0:port` (more workers on reload). The caller
/// then steers over the larger group with [`steer`].
pub fn join_group(port: u16, more: usize) -> io::Result<Vec<OwnedFd>> {
    (0..more)
        .map(|_| group_socket(Ipv4Addr::UNSPECIFIED, port).map(OwnedFd::from))
        .collect()
}

/// Steers the group (any of its sockets, `member`) over its first `n` sockets: every client
/// from then on lands on one of them (fewer workers: the sockets after them get nothing new
/// and can be closed; more: the new ones get their share).
pub fn steer(member: &OwnedFd, n: usize) -> io::Result<()> {
    attach_steering(member, n.max(1) as u32)
}

/// The classic BPF program run by the kernel for every datagram of the group, with the data
/// pointer at the UDP payload: A = bytes 30..34 (the last four octets of a 6-byte chaddr),
/// multiplied by a golden-ratio constant, shifted, modulo the group size. A packet too short to
/// load from lands on socket 0 (the program aborts with 0).
fn steering_program(n: u32) -> [libc::sock_filter; 5] {
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

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{MsgFlags, SockaddrIn};
    use std::collections::HashMap;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;
    use std::time::{Duration, Instant};

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

//! Capturing the DHCP replies a namespace receives, whatever program receives them.
//!
//! perfdhcp cannot list the clients it got ACKs for, so a test that must check every ACKed
//! client captures the ACKs itself: a thread enters the lab namespace (setns) and reads copies of
//! every incoming UDP datagram with a raw IPv4 socket (`SOCK_RAW`, `IPPROTO_UDP`; the kernel
//! hands raw sockets a copy of each datagram before UDP delivers it to its socket). No tcpdump
//! or libpcap is needed. Stays inside the lab namespace; needs root, as the labs do.

use std::fs::File;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use nix::sched::{setns, CloneFlags};
use nix::sys::socket::{self, AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType};

use crate::packet::{MessageType, Reply};

/// One DHCP reply seen on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturedReply {
    /// Message type (option 53).
    pub msg_type: Option<MessageType>,
    /// Transaction id.
    pub xid: u32,
    /// `yiaddr`.
    pub yiaddr: Ipv4Addr,
    /// The first `hlen` bytes of chaddr, as `aa:bb:..` (lowercase).
    pub mac: String,
    /// Source address of the IP packet.
    pub from: Ipv4Addr,
}

/// A running capture; [`ReplyCapture::finish`] stops it and returns what it saw.
#[derive(Debug)]
pub struct ReplyCapture {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<io::Result<Vec<CapturedReply>>>>,
}

/// Parses one raw IPv4 packet: UDP from `server` to port `port`, carrying a DHCP reply.
pub fn parse_ipv4_dhcp_reply(pkt: &[u8], server: Ipv4Addr, port: u16) -> Option<CapturedReply> {
    let ihl = usize::from(*pkt.first()? & 0x0f) * 4;
    if pkt.first()? >> 4 != 4 || ihl < 20 || *pkt.get(9)? != 17 {
        return None;
    }
    let src = Ipv4Addr::new(*pkt.get(12)?, *pkt.get(13)?, *pkt.get(14)?, *pkt.get(15)?);
    if src != server {
        return None;
    }
    let udp = pkt.get(ihl..)?;
    let dport = u16::from_be_bytes([*udp.get(2)?, *udp.get(3)?]);
    if dport != port {
        return None;
    }
    let payload = udp.get(8..)?;
    let r = Reply::parse(payload).ok()?;
    if r.op != 2 {
        return None;
    }
    let hlen = usize::from(*payload.get(2)?).min(16);
    let mac = payload
        .get(28..28 + hlen)?
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    Some(CapturedReply {
        msg_type: r.msg_type,
        xid: r.xid,
        yiaddr: r.yiaddr,
        mac,
        from: src,
    })
}

fn open_raw_in(ns: &str) -> io::Result<OwnedFd> {
    let f = File::open(format!("/run/netns/{ns}"))?;
    // Only this (capture) thread moves into the namespace.
    setns(&f, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
    let fd = socket::socket(
        AddressFamily::Inet,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::Udp,
    )
    .map_err(io::Error::from)?;
    socket::setsockopt(&fd, socket::sockopt::RcvBuf, &(16 << 20)).map_err(io::Error::from)?;
    let tv = nix::sys::time::TimeVal::new(0, 50_000);
    socket::setsockopt(&fd, socket::sockopt::ReceiveTimeout, &tv).map_err(io::Error::from)?;
    Ok(fd)
}

impl ReplyCapture {
    /// Starts capturing, in namespace `ns`, the DHCP replies that `server` sends to UDP port
    /// `port` (67 for a relay agent). Returns once the socket is open, so nothing sent after
    /// this returns is missed.
    pub fn start(ns: &str, server: Ipv4Addr, port: u16) -> io::Result<ReplyCapture> {
        let stop = Arc::new(AtomicBool::new(false));
        let stop_t = Arc::clone(&stop);
        let ns = ns.to_string();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<io::Result<()>>();
        let handle = thread::Builder::new()
            .name(format!("capture-{ns}"))
            .spawn(move || {
                let fd = match open_raw_in(&ns) {
                    Ok(fd) => {
                        let _ = ready_tx.send(Ok(()));
                        fd
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(io::Error::new(e.kind(), e.to_string())));
                        return Err(e);
                    }
                };
                let mut out = Vec::new();
                let mut buf = vec![0u8; 65536];
                loop {
                    match socket::recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                        Ok(n) => {
                            if let Some(r) = parse_ipv4_dhcp_reply(&buf[..n], server, port) {
                                out.push(r);
                            }
                        }
                        Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => {
                            // Stop only once the queue is drained.
                            if stop_t.load(Ordering::Acquire) {
                                return Ok(out);
                            }
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            })?;
        match ready_rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Ok(())) => Ok(ReplyCapture {
                stop,
                handle: Some(handle),
            }),
            Ok(Err(e)) => {
                let _ = handle.join();
                Err(e)
            }
            Err(_) => Err(io::Error::other("capture thread did not start within 5 s")),
        }
    }

    /// Stops the capture (after draining what is queued) and returns every reply seen.
    pub fn finish(mut self) -> io::Result<Vec<CapturedReply>> {
        self.stop.store(true, Ordering::Release);
        match self.handle.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(io::Error::other("capture thread panicked")),
            None => Ok(Vec::new()),
        }
    }
}

impl Drop for ReplyCapture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{opt, Packet};

    fn ip_udp(src: Ipv4Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0];
        p.extend_from_slice(&src.octets());
        p.extend_from_slice(&[198, 18, 0, 3]);
        p.extend_from_slice(&67u16.to_be_bytes());
        p.extend_from_slice(&dport.to_be_bytes());
        p.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        p.extend_from_slice(&[0, 0]);
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn parses_an_ack_and_ignores_everything_else() {
        let server = Ipv4Addr::new(198, 18, 0, 1);
        let mut reply = Packet::request(MessageType::Ack, 0x1234, [2, 1, 2, 3, 4, 5]);
        reply.op = 2;
        reply.yiaddr = Ipv4Addr::new(198, 19, 0, 9);
        reply.options[0] = (opt::MESSAGE_TYPE, vec![MessageType::Ack as u8]);
        let bytes = reply.encode();
        let got = parse_ipv4_dhcp_reply(&ip_udp(server, 67, &bytes), server, 67).expect("ACK");
        assert_eq!(got.msg_type, Some(MessageType::Ack));
        assert_eq!(got.xid, 0x1234);
        assert_eq!(got.yiaddr, Ipv4Addr::new(198, 19, 0, 9));
        assert_eq!(got.mac, "02:01:02:03:04:05");
        // Another source, another port, a request (op 1), garbage: not a reply of the server.
        let other = Ipv4Addr::new(198, 18, 0, 7);
        assert!(parse_ipv4_dhcp_reply(&ip_udp(other, 67, &bytes), server, 67).is_none());
        assert!(parse_ipv4_dhcp_reply(&ip_udp(server, 68, &bytes), server, 67).is_none());
        reply.op = 1;
        let req = reply.encode();
        assert!(parse_ipv4_dhcp_reply(&ip_udp(server, 67, &req), server, 67).is_none());
        assert!(parse_ipv4_dhcp_reply(&[0x45, 0, 0], server, 67).is_none());
    }
}

//! The no-logic responder: answers every DISCOVER with an OFFER and every REQUEST with an ACK,
//! canned, without state — the ceiling of the harness on a machine.
//!
//! Replies go to giaddr:67 when giaddr is set, else back to the source address. The offered
//! address is derived from the client's MAC (10.m3.m4.m5); an ACK confirms the requested
//! address (option 50), else ciaddr, else the derived one.
//!
//! All `threads` threads receive and send on ONE socket (each its own recvmmsg/sendmmsg
//! batches on the same descriptor; the kernel wakes one waiting thread per arriving datagram),
//! so a single relay's flow — one 4-tuple — is spread over every thread. (With one
//! `SO_REUSEPORT` socket per thread, as before, the kernel hashed that one flow to one socket
//! and the responder used one core however many threads it had.)

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use serde::Serialize;
use socket2::{Domain, Protocol, Socket, Type};

use crate::packet::{self, MessageType, ReplySpec};
use crate::sys::{RecvBatch, SendBatch};

/// Responder settings.
#[derive(Debug, Clone)]
pub struct ResponderConfig {
    /// Address and port to listen on.
    pub listen: SocketAddrV4,
    /// Server identifier put in replies.
    pub server_id: Ipv4Addr,
    /// Lease time put in replies.
    pub lease_time: u32,
    /// Threads, all serving the one socket.
    pub threads: usize,
    /// Datagrams per recvmmsg/sendmmsg.
    pub batch: usize,
    /// Stop after this long.
    pub duration: Duration,
}

/// Errors of starting the responder.
#[derive(Debug, thiserror::Error)]
pub enum ResponderError {
    /// A socket could not be created, configured or bound.
    #[error("cannot open a socket on {addr}: {source}")]
    Socket {
        /// The address.
        addr: SocketAddrV4,
        /// The cause.
        source: io::Error,
    },
}

/// What the responder did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ResponderStats {
    /// Datagrams received.
    pub received: u64,
    /// OFFERs sent.
    pub offers: u64,
    /// ACKs sent.
    pub acks: u64,
    /// Valid requests not answered (RELEASE, DECLINE, INFORM, replies).
    pub ignored: u64,
    /// Unparsable datagrams.
    pub bad: u64,
    /// Replies the kernel refused.
    pub send_errors: u64,
    /// Datagrams received by each thread (how the one socket's load was shared).
    pub per_thread: Vec<u64>,
}

#[derive(Default)]
struct Shared {
    received: AtomicU64,
    offers: AtomicU64,
    acks: AtomicU64,
    ignored: AtomicU64,
    bad: AtomicU64,
    send_errors: AtomicU64,
}

fn open_socket(addr: SocketAddrV4) -> Result<Socket, ResponderError> {
    let err = |source| ResponderError::Socket { addr, source };
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).map_err(err)?;
    s.set_reuse_address(true).map_err(err)?;
    let _ = s.set_recv_buffer_size(16 << 20);
    let _ = s.set_send_buffer_size(8 << 20);
    s.set_read_timeout(Some(Duration::from_millis(50)))
        .map_err(err)?;
    s.bind(&addr.into()).map_err(err)?;
    Ok(s)
}

/// The reply to one request datagram, or `None` when it gets none.
pub fn reply_for(
    req: &[u8],
    src: SocketAddrV4,
    cfg: &ResponderConfig,
) -> Result<Option<(ReplySpec, SocketAddrV4)>, packet::ParseError> {
    let p = packet::parse(req)?;
    if p.op != 1 {
        return Ok(None);
    }
    let derived = Ipv4Addr::new(10, p.mac[3], p.mac[4], p.mac[5]);
    let (msg_type, yiaddr) = match p.msg_type {
        MessageType::Discover => (MessageType::Offer, derived),
        MessageType::Request => {
            let a = p
                .requested
                .or((!p.ciaddr.is_unspecified()).then_some(p.ciaddr))
                .unwrap_or(derived);
            (MessageType::Ack, a)
        }
        _ => return Ok(None),
    };
    let dst = if p.giaddr.is_unspecified() {
        src
    } else {
        SocketAddrV4::new(p.giaddr, 67)
    };
    Ok(Some((
        ReplySpec {
            msg_type,
            yiaddr,
            server_id: cfg.server_id,
            lease_time: cfg.lease_time,
        },
        dst,
    )))
}

/// Serves `sock` until `stop`; returns the datagrams this thread received.
fn serve(sock: &Socket, cfg: &ResponderConfig, sh: &Shared, stop: &AtomicBool) -> u64 {
    let mut mine = 0u64;
    let mut rx = RecvBatch::new(cfg.batch);
    let mut tx = SendBatch::new(cfg.batch);
    let fd = sock.as_fd();
    while !stop.load(Ordering::Relaxed) {
        let n = match rx.recv(fd) {
            Ok(n) => n,
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut =>
            {
                continue
            }
            Err(_) => {
                crate::sys::drain_error_queue(fd, 1024);
                thread::sleep(Duration::from_millis(1));
                continue;
            }
        };
        sh.received.fetch_add(n as u64, Ordering::Relaxed);
        mine += n as u64;
        let (mut offers, mut acks, mut ignored, mut bad) = (0, 0, 0, 0);
        for i in 0..n {
            let Some((req, src, _)) = rx.get(i) else {
                continue;
            };
            match reply_for(req, src, cfg) {
                Err(_) => bad += 1,
                Ok(None) => ignored += 1,
                Ok(Some((spec, dst))) => {
                    if spec.msg_type == MessageType::Offer {
                        offers += 1;
                    } else {
                        acks += 1;
                    }
                    tx.push_with(dst, |b| packet::write_reply(req, &spec, b));
                }
            }
        }
        if !tx.is_empty() {
            let o = tx.flush(fd);
            sh.send_errors
                .fetch_add(o.dropped as u64, Ordering::Relaxed);
        }
        sh.offers.fetch_add(offers, Ordering::Relaxed);
        sh.acks.fetch_add(acks, Ordering::Relaxed);
        sh.ignored.fetch_add(ignored, Ordering::Relaxed);
        sh.bad.fetch_add(bad, Ordering::Relaxed);
    }
    mine
}

/// Runs the responder until `cfg.duration` passes or `stop` is set.
pub fn run(cfg: &ResponderConfig, stop: Arc<AtomicBool>) -> Result<ResponderStats, ResponderError> {
    let sock = open_socket(cfg.listen)?;
    let sh = Shared::default();
    let started = Instant::now();
    let per_thread = thread::scope(|s| {
        let handles: Vec<_> = (0..cfg.threads.max(1))
            .map(|_| {
                let (sock, sh, stop) = (&sock, &sh, &*stop);
                s.spawn(move || serve(sock, cfg, sh, stop))
            })
            .collect();
        while !stop.load(Ordering::Relaxed) && started.elapsed() < cfg.duration {
            thread::sleep(Duration::from_millis(50));
        }
        stop.store(true, Ordering::Relaxed);
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(0))
            .collect::<Vec<u64>>()
    });
    let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
    Ok(ResponderStats {
        received: g(&sh.received),
        offers: g(&sh.offers),
        acks: g(&sh.acks),
        ignored: g(&sh.ignored),
        bad: g(&sh.bad),
        send_errors: g(&sh.send_errors),
        per_thread,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{Fields, RequestKind, Template};

    fn cfg() -> ResponderConfig {
        ResponderConfig {
            listen: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0),
            server_id: Ipv4Addr::new(198, 18, 0, 1),
            lease_time: 600,
            threads: 1,
            batch: 8,
            duration: Duration::from_secs(1),
        }
    }

    fn req(kind: RequestKind, giaddr: Ipv4Addr) -> Vec<u8> {
        let mut b = vec![0u8; 1500];
        let n = Template::new(kind, giaddr, false).write(
            &mut b,
            &Fields {
                xid: 9,
                mac: [2, 0, 0, 1, 2, 3],
                ciaddr: Ipv4Addr::new(10, 9, 9, 9),
                requested: Ipv4Addr::new(10, 7, 7, 7),
                server_id: Ipv4Addr::new(198, 18, 0, 1),
                link_selection: Ipv4Addr::UNSPECIFIED,
            },
        );
        b.truncate(n);
        b
    }

    #[test]
    fn answers_discover_and_request_to_the_relay() {
        let relay = Ipv4Addr::new(198, 18, 0, 2);
        let src = SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 2), 67);
        let (spec, dst) = reply_for(&req(RequestKind::Discover, relay), src, &cfg())
            .unwrap()
            .unwrap();
        assert_eq!(spec.msg_type, MessageType::Offer);
        assert_eq!(spec.yiaddr, Ipv4Addr::new(10, 1, 2, 3));
        assert_eq!(dst, SocketAddrV4::new(relay, 67));
        let (spec, _) = reply_for(&req(RequestKind::Select, relay), src, &cfg())
            .unwrap()
            .unwrap();
        assert_eq!(
            (spec.msg_type, spec.yiaddr),
            (MessageType::Ack, Ipv4Addr::new(10, 7, 7, 7))
        );
        let (spec, _) = reply_for(&req(RequestKind::Renew, relay), src, &cfg())
            .unwrap()
            .unwrap();
        assert_eq!(spec.yiaddr, Ipv4Addr::new(10, 9, 9, 9));
        assert_eq!(
            reply_for(&req(RequestKind::Release, relay), src, &cfg()).unwrap(),
            None
        );
        // No giaddr: back to the sender.
        let (_, dst) = reply_for(
            &req(RequestKind::Discover, Ipv4Addr::UNSPECIFIED),
            src,
            &cfg(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(dst, src);
        assert!(reply_for(&[1, 2, 3], src, &cfg()).is_err());
    }

    #[test]
    fn threads_share_one_socket_and_answer_one_flow() {
        // A free loopback port: bind one, note it, close it.
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cfg = ResponderConfig {
            listen: SocketAddrV4::new(Ipv4Addr::LOCALHOST, port),
            threads: 2,
            duration: Duration::from_secs(20),
            ..cfg()
        };
        let stop = Arc::new(AtomicBool::new(false));
        let (c2, s2) = (cfg.clone(), stop.clone());
        let server = thread::spawn(move || run(&c2, s2));
        // One client socket: one flow. Requests without giaddr are answered to the sender.
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let discover = req(RequestKind::Discover, Ipv4Addr::UNSPECIFIED);
        let mut answered = 0;
        let mut buf = [0u8; 1500];
        let deadline = Instant::now() + Duration::from_secs(10);
        while answered < 2000 && Instant::now() < deadline {
            for _ in 0..50 {
                client.send_to(&discover, cfg.listen).unwrap();
            }
            while let Ok(n) = client.recv(&mut buf) {
                assert_eq!(
                    packet::parse(&buf[..n]).unwrap().msg_type,
                    MessageType::Offer
                );
                answered += 1;
                if answered % 50 == 0 {
                    break;
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
        let stats = server.join().unwrap().unwrap();
        assert!(answered >= 2000, "answered {answered}");
        assert_eq!(stats.per_thread.len(), 2);
        assert_eq!(stats.per_thread.iter().sum::<u64>(), stats.received);
        assert_eq!(stats.offers, stats.received);
    }
}

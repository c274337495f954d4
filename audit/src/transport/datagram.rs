//! Best-effort targets: `unix:/path` (a Unix datagram socket) and `udp://host:port`
//! (RFC 5426), one message per datagram, nothing retried.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::Instant;

use prodhcp_config::audit::{AuditHost, Endpoint};

use super::{Backoff, Counters};

enum Dest {
    Unix(PathBuf),
    Udp(Endpoint),
}

enum Sock {
    Unix(UnixDatagram),
    Udp(UdpSocket),
}

/// A unix or udp sender.
pub(crate) struct Datagram {
    dest: Dest,
    sock: Option<Sock>,
    backoff: Backoff,
    last: u64,
    pub(crate) counters: Counters,
}

impl Datagram {
    pub(crate) fn unix(path: PathBuf) -> Datagram {
        Datagram::with(Dest::Unix(path))
    }

    pub(crate) fn udp(endpoint: Endpoint) -> Datagram {
        Datagram::with(Dest::Udp(endpoint))
    }

    fn with(dest: Dest) -> Datagram {
        Datagram {
            dest,
            sock: None,
            backoff: Backoff::new(),
            last: 0,
            counters: Counters::default(),
        }
    }

    pub(crate) fn set_acked(&mut self, seq: u64) {
        self.last = seq;
    }

    /// The last seq taken.
    pub(crate) fn last(&self) -> u64 {
        self.last
    }

    pub(crate) fn connected(&self) -> bool {
        self.sock.is_some()
    }

    pub(crate) fn poll(&mut self, now: Instant) {
        if self.sock.is_some() || !self.backoff.due(now) {
            return;
        }
        self.counters.attempts += 1;
        match self.open() {
            Ok(sock) => {
                self.sock = Some(sock);
                self.backoff.reset();
                self.counters.connections += 1;
            }
            Err(e) => {
                self.counters.last_error = Some(format!("connect: {e}"));
                self.backoff.failed(now);
            }
        }
    }

    fn open(&self) -> io::Result<Sock> {
        match &self.dest {
            Dest::Unix(path) => {
                let s = UnixDatagram::unbound()?;
                s.connect(path)?;
                s.set_nonblocking(true)?;
                Ok(Sock::Unix(s))
            }
            Dest::Udp(endpoint) => {
                let addr = resolve(endpoint)?;
                let local: IpAddr = match addr {
                    SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
                    SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
                };
                let s = UdpSocket::bind((local, 0))?;
                s.connect(addr)?;
                s.set_nonblocking(true)?;
                Ok(Sock::Udp(s))
            }
        }
    }

    pub(crate) fn send(&mut self, entries: &[(u64, &[u8])], now: Instant) -> usize {
        if entries.is_empty() {
            return 0;
        }
        self.poll(now);
        for &(seq, msg) in entries {
            if seq <= self.last {
                continue;
            }
            self.last = seq;
            let result = match &self.sock {
                None => {
                    self.counters.dropped += 1;
                    continue;
                }
                Some(Sock::Unix(s)) => s.send(msg),
                Some(Sock::Udp(s)) => s.send(msg),
            };
            match result {
                Ok(_) => self.counters.sent_seq = seq,
                Err(e) => {
                    self.counters.dropped += 1;
                    self.counters.last_error = Some(format!("send: {e}"));
                    // A Unix receiver that went away (syslog restarted, a new socket at the
                    // path) needs a new connect; a full buffer does not. UDP keeps its socket:
                    // an ICMP error says nothing about the next datagram.
                    let is_unix = matches!(self.sock, Some(Sock::Unix(_)));
                    if is_unix && e.kind() != io::ErrorKind::WouldBlock {
                        self.sock = None;
                        self.backoff.failed(now);
                    }
                }
            }
        }
        entries.len()
    }
}

/// The addresses of an endpoint (a name through the system resolver, which may block).
pub(crate) fn resolve_all(endpoint: &Endpoint) -> io::Result<Vec<SocketAddr>> {
    match &endpoint.host {
        AuditHost::Ip(ip) => Ok(vec![SocketAddr::new(*ip, endpoint.port)]),
        AuditHost::Name(name) => {
            let addrs: Vec<SocketAddr> =
                (name.as_str(), endpoint.port).to_socket_addrs()?.collect();
            if addrs.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{name}: no address"),
                ));
            }
            Ok(addrs)
        }
    }
}

fn resolve(endpoint: &Endpoint) -> io::Result<SocketAddr> {
    resolve_all(endpoint)?
        .into_iter()
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"))
}

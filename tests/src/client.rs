//! The scripted DHCPv4 test client.
//!
//! It speaks from inside a lab namespace in one of two roles:
//! - **relay agent** ([`TestClient::relay`]): a UDP socket bound to `RELAY_IP:67`; every
//!   message carries `giaddr = RELAY_IP`, `hops = 1` and optionally option 82, and is sent
//!   unicast to the server's port 67; replies come back to `RELAY_IP:67`;
//! - **bound client** ([`TestClient::unicast`]): a socket bound to the client's own
//!   address on port 68, sending unicast to the server (RENEWING, INFORM, RELEASE).
//!
//! Every wait is bounded by the client's timeout; replies are parsed, never trusted.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::lab::udp_socket_in;
use crate::packet::{opt, MessageType, Packet, RelayAgentInfo, Reply};

/// Default reply timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// Who the client claims to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Ethernet hardware address (chaddr).
    pub mac: [u8; 6],
    /// Option 61, if sent.
    pub client_id: Option<Vec<u8>>,
}

impl Identity {
    /// A client known by its MAC only.
    pub fn mac(mac: [u8; 6]) -> Self {
        Self {
            mac,
            client_id: None,
        }
    }

    /// The MAC as prodhcpctl prints it.
    pub fn mac_string(&self) -> String {
        crate::packet::mac_string(&self.mac)
    }
}

/// Optional parts of a message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extras {
    /// Option 82 (relay mode only; appended last, as a relay does).
    pub relay_info: Option<RelayAgentInfo>,
    /// Option 118 subnet selection.
    pub subnet_selection: Option<Ipv4Addr>,
    /// Option 57 maximum message size.
    pub max_message_size: Option<u16>,
    /// Option 55 parameter request list.
    pub params: Option<Vec<u8>>,
    /// Any further options, in order, before 82.
    pub extra: Vec<(u8, Vec<u8>)>,
}

/// Why an exchange produced no usable reply.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// Socket error.
    #[error("socket: {0}")]
    Io(#[from] io::Error),
    /// No reply with our xid before the deadline.
    #[error("no reply to {what} within {timeout:?}")]
    Timeout {
        /// The message sent.
        what: &'static str,
        /// The bound waited.
        timeout: Duration,
    },
    /// A reply of the wrong type.
    #[error("expected {expected:?} to {what}, got {got:?} (yiaddr {yiaddr})")]
    Unexpected {
        /// The message sent.
        what: &'static str,
        /// The type wanted.
        expected: MessageType,
        /// The type received.
        got: Option<MessageType>,
        /// yiaddr of the reply.
        yiaddr: Ipv4Addr,
    },
}

/// A completed DORA.
#[derive(Debug, Clone)]
pub struct Bound {
    /// The acknowledged address.
    pub address: Ipv4Addr,
    /// Option 54 of the ACK.
    pub server_id: Ipv4Addr,
    /// The OFFER.
    pub offer: Reply,
    /// The ACK.
    pub ack: Reply,
}

#[derive(Debug, Clone, Copy)]
enum Role {
    Relay { giaddr: Ipv4Addr },
    Client { ciaddr: Ipv4Addr },
}

/// The scripted client (see the module docs).
#[derive(Debug)]
pub struct TestClient {
    sock: UdpSocket,
    server: SocketAddrV4,
    role: Role,
    timeout: Duration,
    xid: AtomicU32,
    /// Datagrams received that did not match the awaited xid.
    pub stray_replies: AtomicU32,
}

impl TestClient {
    /// A relay agent at `giaddr` (an address of namespace `ns`) talking to `server:67`.
    pub fn relay(ns: &str, giaddr: Ipv4Addr, server: Ipv4Addr) -> io::Result<Self> {
        let sock = udp_socket_in(ns, SocketAddrV4::new(giaddr, 67))?;
        Ok(Self::with_socket(sock, server, Role::Relay { giaddr }))
    }

    /// A bound client at `ciaddr` (an address of namespace `ns`) talking to `server:67`.
    pub fn unicast(ns: &str, ciaddr: Ipv4Addr, server: Ipv4Addr) -> io::Result<Self> {
        let sock = udp_socket_in(ns, SocketAddrV4::new(ciaddr, 68))?;
        Ok(Self::with_socket(sock, server, Role::Client { ciaddr }))
    }

    fn with_socket(sock: UdpSocket, server: Ipv4Addr, role: Role) -> Self {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
            ^ std::process::id().rotate_left(16);
        Self {
            sock,
            server: SocketAddrV4::new(server, 67),
            role,
            timeout: DEFAULT_TIMEOUT,
            xid: AtomicU32::new(seed),
            stray_replies: AtomicU32::new(0),
        }
    }

    /// Sets the reply timeout.
    pub fn set_timeout(&mut self, t: Duration) {
        self.timeout = t;
    }

    /// The reply timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The relay address (giaddr) in relay mode.
    pub fn giaddr(&self) -> Option<Ipv4Addr> {
        match self.role {
            Role::Relay { giaddr } => Some(giaddr),
            Role::Client { .. } => None,
        }
    }

    /// The client's own address (ciaddr) in unicast mode.
    pub fn ciaddr(&self) -> Option<Ipv4Addr> {
        match self.role {
            Role::Client { ciaddr } => Some(ciaddr),
            Role::Relay { .. } => None,
        }
    }

    fn next_xid(&self) -> u32 {
        self.xid.fetch_add(0x9e37_79b9, Ordering::Relaxed)
    }

    /// Builds a message of type `msg` for `id` with `extras`, addressed for this role.
    pub fn build(&self, msg: MessageType, id: &Identity, extras: &Extras) -> Packet {
        let mut p = Packet::request(msg, self.next_xid(), id.mac);
        if let Some(cid) = &id.client_id {
            p.push_option(opt::CLIENT_ID, cid);
        }
        if let Some(max) = extras.max_message_size {
            p.push_option(opt::MAX_MESSAGE_SIZE, &max.to_be_bytes());
        }
        if let Some(prl) = &extras.params {
            p.push_option(opt::PARAMETER_REQUEST_LIST, prl);
        }
        if let Some(net) = extras.subnet_selection {
            p.push_option(opt::SUBNET_SELECTION, &net.octets());
        }
        for (code, value) in &extras.extra {
            p.push_option(*code, value);
        }
        if let Role::Relay { giaddr } = self.role {
            p.giaddr = giaddr;
            p.hops = 1;
            if let Some(info) = &extras.relay_info {
                p.push_option(opt::RELAY_AGENT_INFO, &info.encode());
            }
        }
        p
    }

    /// Sends raw bytes to the server.
    pub fn send_raw(&self, bytes: &[u8]) -> io::Result<()> {
        self.sock.send_to(bytes, self.server).map(|_| ())
    }

    /// Sends a packet without waiting.
    pub fn send(&self, p: &Packet) -> io::Result<()> {
        self.send_raw(&p.encode())
    }

    /// Sends `p` and waits (≤ timeout) for a reply with its xid.
    pub fn exchange(&self, p: &Packet, what: &'static str) -> Result<Reply, ExchangeError> {
        self.drain();
        self.send(p)?;
        self.await_xid(p.xid, what, self.timeout)
    }

    /// Waits up to `timeout` for a BOOTREPLY carrying `xid`; other datagrams are counted
    /// in `stray_replies` and skipped.
    pub fn await_xid(
        &self,
        xid: u32,
        what: &'static str,
        timeout: Duration,
    ) -> Result<Reply, ExchangeError> {
        self.await_any(&[xid], what, timeout)
    }

    /// Waits up to `timeout` for a BOOTREPLY carrying any of `xids` (a late answer to an
    /// earlier probe counts); other datagrams are counted in `stray_replies` and skipped.
    pub fn await_any(
        &self,
        xids: &[u32],
        what: &'static str,
        timeout: Duration,
    ) -> Result<Reply, ExchangeError> {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 2048];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ExchangeError::Timeout { what, timeout });
            }
            self.sock.set_read_timeout(Some(left))?;
            match self.sock.recv_from(&mut buf) {
                Ok((n, _from)) => match Reply::parse(buf.get(..n).unwrap_or(&[])) {
                    Ok(r) if xids.contains(&r.xid) && r.op == 2 => return Ok(r),
                    _ => {
                        self.stray_replies.fetch_add(1, Ordering::Relaxed);
                    }
                },
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::TimedOut =>
                {
                    return Err(ExchangeError::Timeout { what, timeout })
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Discards anything already queued on the socket (late replies to earlier probes).
    pub fn drain(&self) {
        let mut buf = [0u8; 2048];
        if self.sock.set_nonblocking(true).is_ok() {
            for _ in 0..10_000 {
                if self.sock.recv_from(&mut buf).is_err() {
                    break;
                }
            }
            let _ = self.sock.set_nonblocking(false);
        }
    }

    /// DISCOVER → the reply (normally an OFFER).
    pub fn discover(&self, id: &Identity, ex: &Extras) -> Result<Reply, ExchangeError> {
        let p = self.build(MessageType::Discover, id, ex);
        self.exchange(&p, "DISCOVER")
    }

    /// REQUEST in SELECTING state: options 50 = `addr` and 54 = `server_id`.
    pub fn request_selecting(
        &self,
        id: &Identity,
        addr: Ipv4Addr,
        server_id: Ipv4Addr,
        ex: &Extras,
    ) -> Result<Reply, ExchangeError> {
        let mut p = self.build(MessageType::Request, id, ex);
        insert_before_82(&mut p, opt::REQUESTED_IP, &addr.octets());
        insert_before_82(&mut p, opt::SERVER_ID, &server_id.octets());
        self.exchange(&p, "REQUEST(selecting)")
    }

    /// REQUEST in INIT-REBOOT state: option 50 = `addr`, no 54, ciaddr 0.
    pub fn init_reboot(
        &self,
        id: &Identity,
        addr: Ipv4Addr,
        ex: &Extras,
    ) -> Result<Reply, ExchangeError> {
        let mut p = self.build(MessageType::Request, id, ex);
        insert_before_82(&mut p, opt::REQUESTED_IP, &addr.octets());
        self.exchange(&p, "REQUEST(init-reboot)")
    }

    /// REQUEST in RENEWING state: ciaddr = `addr`, no 50/54 (normally sent in unicast mode).
    pub fn renew(
        &self,
        id: &Identity,
        addr: Ipv4Addr,
        ex: &Extras,
    ) -> Result<Reply, ExchangeError> {
        let mut p = self.build(MessageType::Request, id, ex);
        p.ciaddr = addr;
        self.exchange(&p, "REQUEST(renewing)")
    }

    /// REQUEST in REBINDING state: ciaddr = `addr`, no 50/54. On the wire it is the same
    /// message as RENEWING; it differs in how it travels (broadcast, hence relayed: use a
    /// relay-mode client).
    pub fn rebind(
        &self,
        id: &Identity,
        addr: Ipv4Addr,
        ex: &Extras,
    ) -> Result<Reply, ExchangeError> {
        let mut p = self.build(MessageType::Request, id, ex);
        p.ciaddr = addr;
        self.exchange(&p, "REQUEST(rebinding)")
    }

    /// RELEASE of `addr` (ciaddr) to `server_id`; no reply is expected.
    pub fn release(&self, id: &Identity, addr: Ipv4Addr, server_id: Ipv4Addr) -> io::Result<()> {
        let mut p = self.build(MessageType::Release, id, &Extras::default());
        p.ciaddr = addr;
        insert_before_82(&mut p, opt::SERVER_ID, &server_id.octets());
        self.send(&p)
    }

    /// DECLINE of `addr` (option 50) to `server_id`; no reply is expected.
    pub fn decline(&self, id: &Identity, addr: Ipv4Addr, server_id: Ipv4Addr) -> io::Result<()> {
        let mut p = self.build(MessageType::Decline, id, &Extras::default());
        insert_before_82(&mut p, opt::REQUESTED_IP, &addr.octets());
        insert_before_82(&mut p, opt::SERVER_ID, &server_id.octets());
        self.send(&p)
    }

    /// INFORM from `ciaddr` → the reply (normally an ACK without yiaddr).
    pub fn inform(
        &self,
        id: &Identity,
        ciaddr: Ipv4Addr,
        ex: &Extras,
    ) -> Result<Reply, ExchangeError> {
        let mut p = self.build(MessageType::Inform, id, ex);
        p.ciaddr = ciaddr;
        self.exchange(&p, "INFORM")
    }

    /// DISCOVER → OFFER → REQUEST(selecting) → ACK, with the same extras on both messages.
    pub fn dora(&self, id: &Identity, ex: &Extras) -> Result<Bound, ExchangeError> {
        let offer = self.discover(id, ex)?;
        expect(&offer, MessageType::Offer, "DISCOVER")?;
        let server_id = offer.server_id().unwrap_or(self.server.ip().to_owned());
        let ack = self.request_selecting(id, offer.yiaddr, server_id, ex)?;
        expect(&ack, MessageType::Ack, "REQUEST(selecting)")?;
        Ok(Bound {
            address: ack.yiaddr,
            server_id: ack.server_id().unwrap_or(server_id),
            offer,
            ack,
        })
    }
}

/// Checks a reply's type.
pub fn expect(r: &Reply, t: MessageType, what: &'static str) -> Result<(), ExchangeError> {
    if r.msg_type == Some(t) {
        Ok(())
    } else {
        Err(ExchangeError::Unexpected {
            what,
            expected: t,
            got: r.msg_type,
            yiaddr: r.yiaddr,
        })
    }
}

/// Inserts an option before a trailing option 82 (relay agents append 82 last).
fn insert_before_82(p: &mut Packet, code: u8, value: &[u8]) {
    let at = p
        .options
        .iter()
        .position(|(c, _)| *c == opt::RELAY_AGENT_INFO)
        .unwrap_or(p.options.len());
    p.options.insert(at, (code, value.to_vec()));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback_client() -> (TestClient, UdpSocket) {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut c = TestClient::with_socket(
            sock,
            Ipv4Addr::LOCALHOST,
            Role::Relay {
                giaddr: Ipv4Addr::new(198, 18, 1, 1),
            },
        );
        c.server = match server.local_addr().unwrap() {
            std::net::SocketAddr::V4(a) => a,
            other => panic!("{other}"),
        };
        c.set_timeout(Duration::from_millis(300));
        (c, server)
    }

    #[test]
    fn relay_role_sets_giaddr_hops_and_puts_82_last() {
        let (c, _srv) = loopback_client();
        let ex = Extras {
            relay_info: Some(RelayAgentInfo {
                circuit_id: Some(vec![1]),
                ..Default::default()
            }),
            params: Some(vec![1, 3]),
            ..Default::default()
        };
        let id = Identity {
            mac: [2, 0, 0, 0, 0, 1],
            client_id: Some(vec![1, 2, 0, 0, 0, 0, 1]),
        };
        let mut p = c.build(MessageType::Request, &id, &ex);
        insert_before_82(&mut p, opt::REQUESTED_IP, &[198, 18, 1, 100]);
        assert_eq!(p.giaddr, Ipv4Addr::new(198, 18, 1, 1));
        assert_eq!(p.hops, 1);
        let codes: Vec<u8> = p.options.iter().map(|(c, _)| *c).collect();
        assert_eq!(codes, vec![53, 61, 55, 50, 82]);
    }

    #[test]
    fn exchange_matches_xid_and_times_out_otherwise() {
        let (c, srv) = loopback_client();
        let id = Identity::mac([2, 0, 0, 0, 0, 2]);
        // Nobody answers: bounded timeout.
        let t0 = Instant::now();
        assert!(matches!(
            c.discover(&id, &Extras::default()),
            Err(ExchangeError::Timeout { .. })
        ));
        assert!(t0.elapsed() < Duration::from_secs(2));
        // A fake server answers first with a wrong xid, then with the right one.
        let p = c.build(MessageType::Discover, &id, &Extras::default());
        let want = p.xid;
        let server = std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            // Skip the DISCOVER that timed out above.
            let (req, from) = (0..5)
                .find_map(|_| {
                    let (n, from) = srv.recv_from(&mut buf).unwrap();
                    let req = Reply::parse(&buf[..n]).unwrap();
                    (req.xid == want).then_some((req, from))
                })
                .unwrap();
            let mut offer = Packet::request(MessageType::Offer, req.xid ^ 1, req.mac());
            offer.op = 2;
            srv.send_to(&offer.encode(), from).unwrap();
            offer.xid = req.xid;
            offer.yiaddr = Ipv4Addr::new(198, 18, 1, 100);
            srv.send_to(&offer.encode(), from).unwrap();
        });
        let r = c.exchange(&p, "DISCOVER").unwrap();
        server.join().unwrap();
        assert_eq!(r.msg_type, Some(MessageType::Offer));
        assert_eq!(r.yiaddr, Ipv4Addr::new(198, 18, 1, 100));
        assert_eq!(c.stray_replies.load(Ordering::Relaxed), 1);
    }
}

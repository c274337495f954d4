//! The service address: the floating IPv4 address relays send to, held by the active appliance.
//!
//! [`ServiceAddress::take`] adds the address to the configured interface by rtnetlink
//! (`RTM_NEWADDR`, create-exclusive, acknowledged; "already there" counts as success) and
//! returns a [`GarpSender`] that announces the address by gratuitous ARP: [`GARP_ROUNDS`]
//! rounds [`GARP_INTERVAL`] apart, each a request-type and a reply-type GARP. Nothing here
//! sleeps or starts a thread: syncd's mio loop asks the sender for its
//! [`next_deadline`](GarpSender::next_deadline), bounds its poll timeout by it, and calls
//! [`send_due`](GarpSender::send_due) after every wake-up.
//! [`ServiceAddress::release`] removes the address (`RTM_DELADDR`; "not there" counts as
//! success) and [`ServiceAddress::is_present`] looks for it (`RTM_GETADDR` dump).
//!
//! Every netlink exchange is synchronous: the kernel answers an rtnetlink request before
//! `send` returns, so each operation costs a few system calls and microseconds. A receive
//! timeout ([`NETLINK_TIMEOUT`]) bounds the wait all the same.
//!
//! Capabilities: adding and removing addresses needs `CAP_NET_ADMIN`, the GARP socket
//! (`AF_PACKET`) `CAP_NET_RAW`. Without them the operations fail with
//! [`ServiceAddressError::PermissionDenied`], naming the capability.
//!
//! What peers do with a GARP: a neighbour that already holds an entry for the address (a relay
//! that has been sending to it) replaces the old MAC with ours, even a REACHABLE entry; a
//! neighbour without an entry creates none (unless its `arp_accept` says so), and a PERMANENT
//! entry is kept. This is the same mechanism keepalived uses.

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use netlink_packet_route::link::{LinkAttribute, LinkLayerType, LinkMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::protocols::NETLINK_ROUTE;
use socket2::{Domain, SockAddr, Socket, Type};

use crate::sys;

/// How many rounds of gratuitous ARP [`ServiceAddress::take`] schedules.
pub const GARP_ROUNDS: u32 = 5;
/// Time between two rounds of gratuitous ARP.
pub const GARP_INTERVAL: Duration = Duration::from_millis(200);
/// Longest wait for the kernel's answer to one netlink request.
pub const NETLINK_TIMEOUT: Duration = Duration::from_secs(2);

/// EtherType of ARP.
const ETH_P_ARP: u16 = 0x0806;
/// EtherType of IPv4 (the ARP protocol type).
const ETH_P_IP: u16 = 0x0800;
/// ARP hardware type of Ethernet.
const ARPHRD_ETHER: u16 = 1;
/// ARP operation codes.
const ARPOP_REQUEST: u16 = 1;
const ARPOP_REPLY: u16 = 2;
/// Length of an Ethernet/IPv4 ARP packet.
pub const ARP_PACKET_LEN: usize = 28;
/// Longest interface name the kernel accepts (`IFNAMSIZ` − 1).
const IFNAME_MAX: usize = 15;

/// The floating service address and the interface it lives on
/// (`cluster.service_address` in the configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAddress {
    /// The address and prefix length to add (`198.18.0.10/24`).
    pub address: Ipv4Net,
    /// The interface to add it to (`lan0`).
    pub interface: String,
}

/// What [`ServiceAddress::take`] did.
#[derive(Debug)]
pub struct Takeover {
    /// The address was on the interface already (the kernel answered EEXIST).
    pub was_present: bool,
    /// The gratuitous ARP schedule that announces the address; drive it from the loop.
    pub garp: GarpSender,
}

/// What [`ServiceAddress::release`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// The address was on the interface and is now gone.
    Removed,
    /// The address was not on the interface (the kernel answered EADDRNOTAVAIL).
    WasAbsent,
}

/// The step of a service-address operation that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Opening the rtnetlink socket.
    OpenNetlink,
    /// Looking up the interface (`RTM_GETLINK`).
    LookUpInterface,
    /// Adding the address (`RTM_NEWADDR`).
    AddAddress,
    /// Removing the address (`RTM_DELADDR`).
    RemoveAddress,
    /// Listing the interface's addresses (`RTM_GETADDR`).
    ListAddresses,
    /// Opening the AF_PACKET socket for gratuitous ARP.
    OpenPacketSocket,
    /// Sending a gratuitous ARP.
    SendGarp,
}

impl Operation {
    /// The capability this step needs beyond an ordinary process's.
    pub fn capability(self) -> &'static str {
        match self {
            Operation::OpenPacketSocket | Operation::SendGarp => "CAP_NET_RAW",
            _ => "CAP_NET_ADMIN",
        }
    }
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Operation::OpenNetlink => "opening the rtnetlink socket",
            Operation::LookUpInterface => "looking up the interface",
            Operation::AddAddress => "adding the address",
            Operation::RemoveAddress => "removing the address",
            Operation::ListAddresses => "listing the addresses",
            Operation::OpenPacketSocket => "opening the gratuitous-ARP socket",
            Operation::SendGarp => "sending a gratuitous ARP",
        })
    }
}

/// Why a service-address operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceAddressError {
    /// The interface name cannot name any interface (empty, longer than 15 bytes, or holding
    /// `/`, whitespace or NUL).
    #[error("service address {address}: {interface:?} is not a valid interface name")]
    InvalidInterfaceName {
        /// The service address.
        address: Ipv4Net,
        /// The name as configured.
        interface: String,
    },
    /// No interface of that name exists (in this network namespace).
    #[error("service address {address}: interface {interface:?} does not exist")]
    NoSuchInterface {
        /// The service address.
        address: Ipv4Net,
        /// The name as configured.
        interface: String,
    },
    /// The interface has no Ethernet address, so it cannot carry gratuitous ARP.
    #[error(
        "service address {address}: interface {interface:?} is not an Ethernet interface \
         (link type {link_type}); gratuitous ARP needs one"
    )]
    NotEthernet {
        /// The service address.
        address: Ipv4Net,
        /// The name as configured.
        interface: String,
        /// The kernel's link type (`ARPHRD_*` name).
        link_type: String,
    },
    /// The kernel refused for lack of a capability.
    #[error(
        "service address {address} on {interface:?}: {operation} was refused: permission \
         denied (the process needs {})",
        operation.capability()
    )]
    PermissionDenied {
        /// The step that was refused.
        operation: Operation,
        /// The service address.
        address: Ipv4Net,
        /// The name as configured.
        interface: String,
    },
    /// Any other system error.
    #[error("service address {address} on {interface:?}: {operation} failed: {source}")]
    System {
        /// The step that failed.
        operation: Operation,
        /// The service address.
        address: Ipv4Net,
        /// The name as configured.
        interface: String,
        /// The error the kernel reported.
        source: io::Error,
    },
    /// The kernel's netlink answer could not be understood.
    #[error(
        "service address {address} on {interface:?}: {operation}: bad netlink answer: {detail}"
    )]
    Protocol {
        /// The step whose answer was bad.
        operation: Operation,
        /// The service address.
        address: Ipv4Net,
        /// The name as configured.
        interface: String,
        /// What was wrong with it.
        detail: String,
    },
}

/// The interface facts a take needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Link {
    index: u32,
    mac: Option<[u8; 6]>,
    link_type: LinkLayerType,
}

impl ServiceAddress {
    /// Adds the address to the interface and returns the gratuitous ARP schedule announcing
    /// it (first round due at once). Taking an address that is already there succeeds
    /// ([`Takeover::was_present`]) and announces it again. The GARP socket is opened before
    /// the address is added, so a missing `CAP_NET_RAW` changes nothing.
    pub fn take(&self) -> Result<Takeover, ServiceAddressError> {
        let mut nl = self.netlink()?;
        let link = self.link(&mut nl)?;
        let garp = self.garp_sender(&link, GARP_ROUNDS, GARP_INTERVAL, Instant::now())?;
        let msg = self.address_message(link.index, true);
        let was_present = match nl.request(
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK,
        ) {
            Ok(_) => false,
            Err(NetlinkError::Kernel(e)) if e.raw_os_error() == Some(libc::EEXIST) => true,
            Err(e) => return Err(self.error(Operation::AddAddress, e)),
        };
        Ok(Takeover { was_present, garp })
    }

    /// A gratuitous ARP schedule for the address without touching the interface's addresses
    /// (to announce again, e.g. when keepalived owns the address).
    pub fn announce(&self) -> Result<GarpSender, ServiceAddressError> {
        let mut nl = self.netlink()?;
        let link = self.link(&mut nl)?;
        self.garp_sender(&link, GARP_ROUNDS, GARP_INTERVAL, Instant::now())
    }

    /// Removes the address from the interface, whatever prefix length it was added with.
    /// Removing an address that is not there succeeds ([`Release::WasAbsent`]).
    pub fn release(&self) -> Result<Release, ServiceAddressError> {
        let mut nl = self.netlink()?;
        let link = self.link(&mut nl)?;
        // Only IFA_LOCAL: the kernel then matches the address alone, not its prefix length.
        let msg = self.address_message(link.index, false);
        match nl.request(RouteNetlinkMessage::DelAddress(msg), NLM_F_ACK) {
            Ok(_) => Ok(Release::Removed),
            Err(NetlinkError::Kernel(e))
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EADDRNOTAVAIL) | Some(libc::ENOENT)
                ) =>
            {
                Ok(Release::WasAbsent)
            }
            Err(e) => Err(self.error(Operation::RemoveAddress, e)),
        }
    }

    /// Whether the address (with any prefix length) is on the interface.
    pub fn is_present(&self) -> Result<bool, ServiceAddressError> {
        let mut nl = self.netlink()?;
        let link = self.link(&mut nl)?;
        let mut query = AddressMessage::default();
        query.header.family = AddressFamily::Inet;
        let answers = nl
            .request(RouteNetlinkMessage::GetAddress(query), NLM_F_DUMP)
            .map_err(|e| self.error(Operation::ListAddresses, e))?;
        let vip = IpAddr::V4(self.address.addr());
        Ok(answers.iter().any(|m| match m {
            RouteNetlinkMessage::NewAddress(a) => {
                a.header.index == link.index
                    && a.header.family == AddressFamily::Inet
                    && local_address(a) == Some(vip)
            }
            _ => false,
        }))
    }

    fn netlink(&self) -> Result<Rtnl, ServiceAddressError> {
        if !valid_interface_name(&self.interface) {
            return Err(ServiceAddressError::InvalidInterfaceName {
                address: self.address,
                interface: self.interface.clone(),
            });
        }
        Rtnl::open().map_err(|e| self.error(Operation::OpenNetlink, NetlinkError::Io(e)))
    }

    /// Looks the interface up by name (`RTM_GETLINK` with `IFLA_IFNAME`).
    fn link(&self, nl: &mut Rtnl) -> Result<Link, ServiceAddressError> {
        let mut query = LinkMessage::default();
        query
            .attributes
            .push(LinkAttribute::IfName(self.interface.clone()));
        let answers = nl
            .request(RouteNetlinkMessage::GetLink(query), NLM_F_ACK)
            .map_err(|e| self.error(Operation::LookUpInterface, e))?;
        let link = answers
            .iter()
            .find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(l),
                _ => None,
            })
            .ok_or_else(|| ServiceAddressError::Protocol {
                operation: Operation::LookUpInterface,
                address: self.address,
                interface: self.interface.clone(),
                detail: "no link in the answer".into(),
            })?;
        let mac = link.attributes.iter().find_map(|a| match a {
            LinkAttribute::Address(bytes) => <[u8; 6]>::try_from(bytes.as_slice()).ok(),
            _ => None,
        });
        Ok(Link {
            index: link.header.index,
            mac,
            link_type: link.header.link_layer_type,
        })
    }

    fn garp_sender(
        &self,
        link: &Link,
        rounds: u32,
        interval: Duration,
        first: Instant,
    ) -> Result<GarpSender, ServiceAddressError> {
        let mac = match (link.link_type, link.mac) {
            (LinkLayerType::Ether, Some(mac)) => mac,
            (other, _) => {
                return Err(ServiceAddressError::NotEthernet {
                    address: self.address,
                    interface: self.interface.clone(),
                    link_type: other.to_string(),
                })
            }
        };
        GarpSender::open(
            link.index,
            mac,
            self.address.addr(),
            rounds,
            interval,
            first,
        )
        .map_err(|e| self.error(Operation::OpenPacketSocket, NetlinkError::Io(e)))
    }

    /// An `ifaddrmsg` for the address on interface `index`; `with_prefix` adds IFA_ADDRESS,
    /// which makes a delete match the prefix length too (wanted for adding only).
    fn address_message(&self, index: u32, with_prefix: bool) -> AddressMessage {
        let ip = IpAddr::V4(self.address.addr());
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.prefix_len = self.address.prefix_len();
        msg.header.scope = AddressScope::Universe;
        msg.header.index = index;
        msg.attributes.push(AddressAttribute::Local(ip));
        if with_prefix {
            msg.attributes.push(AddressAttribute::Address(ip));
        }
        msg
    }

    fn error(&self, operation: Operation, e: NetlinkError) -> ServiceAddressError {
        let address = self.address;
        let interface = self.interface.clone();
        match e {
            NetlinkError::Kernel(e) | NetlinkError::Io(e) => match e.raw_os_error() {
                Some(libc::EPERM) | Some(libc::EACCES) => ServiceAddressError::PermissionDenied {
                    operation,
                    address,
                    interface,
                },
                Some(libc::ENODEV) => ServiceAddressError::NoSuchInterface { address, interface },
                _ => ServiceAddressError::System {
                    operation,
                    address,
                    interface,
                    source: e,
                },
            },
            NetlinkError::Protocol(detail) => ServiceAddressError::Protocol {
                operation,
                address,
                interface,
                detail,
            },
        }
    }
}

/// The IPv4 address an `RTM_NEWADDR` reports for the interface (IFA_LOCAL, or IFA_ADDRESS
/// when there is no IFA_LOCAL).
fn local_address(a: &AddressMessage) -> Option<IpAddr> {
    let local = a.attributes.iter().find_map(|x| match x {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    local.or_else(|| {
        a.attributes.iter().find_map(|x| match x {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        })
    })
}

/// Whether `name` can name a Linux interface.
fn valid_interface_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= IFNAME_MAX
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace())
}

/// A gratuitous ARP schedule for one address on one interface: rounds of a request-type and a
/// reply-type GARP, the first due when it was made, the next ones an interval after the
/// previous round was sent. Never blocks: the socket is non-blocking and the caller's loop
/// decides when to call [`send_due`](GarpSender::send_due).
#[derive(Debug)]
pub struct GarpSender {
    socket: Socket,
    destination: SockAddr,
    frames: [[u8; ARP_PACKET_LEN]; 2],
    rounds_left: u32,
    interval: Duration,
    next: Instant,
    frames_sent: u32,
}

impl GarpSender {
    /// Opens the AF_PACKET socket (`SOCK_DGRAM`, close-on-exec, non-blocking). Protocol 0: the
    /// socket only sends (the EtherType goes in each destination address), so the kernel
    /// queues no received ARP traffic to it.
    fn open(
        ifindex: u32,
        mac: [u8; 6],
        ip: Ipv4Addr,
        rounds: u32,
        interval: Duration,
        first: Instant,
    ) -> io::Result<GarpSender> {
        // socket2's `Socket::new` sets SOCK_CLOEXEC.
        let socket = Socket::new(Domain::PACKET, Type::DGRAM, None)?;
        socket.set_nonblocking(true)?;
        Ok(GarpSender {
            socket,
            destination: sys::link_layer_address(ifindex, ETH_P_ARP, sys::ETHERNET_BROADCAST),
            frames: [
                garp_packet(mac, ip, GarpKind::Request),
                garp_packet(mac, ip, GarpKind::Reply),
            ],
            rounds_left: rounds,
            interval,
            next: first,
            frames_sent: 0,
        })
    }

    /// When the next round is due, or `None` when every round was sent.
    pub fn next_deadline(&self) -> Option<Instant> {
        (self.rounds_left > 0).then_some(self.next)
    }

    /// Whether every round was sent.
    pub fn is_done(&self) -> bool {
        self.rounds_left == 0
    }

    /// Frames sent successfully so far.
    pub fn frames_sent(&self) -> u32 {
        self.frames_sent
    }

    /// Sends the round due at `now`, if any, and schedules the next one; returns the number
    /// of frames sent (0 when nothing was due). A failed send still uses up its round (the
    /// next round is a retry), so a broken interface cannot make the loop spin; the error is
    /// returned for the caller to log.
    pub fn send_due(&mut self, now: Instant) -> io::Result<u32> {
        if self.rounds_left == 0 || now < self.next {
            return Ok(0);
        }
        self.rounds_left -= 1;
        self.next = now + self.interval;
        let mut sent = 0;
        let mut failure = None;
        for frame in &self.frames {
            match self.socket.send_to(frame, &self.destination) {
                Ok(n) if n == frame.len() => sent += 1,
                Ok(n) => {
                    failure = Some(io::Error::other(format!(
                        "short send: {n} of {} bytes",
                        frame.len()
                    )))
                }
                Err(e) => failure = Some(e),
            }
        }
        self.frames_sent += sent;
        match failure {
            None => Ok(sent),
            Some(e) => Err(e),
        }
    }
}

/// Which ARP operation a gratuitous ARP uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GarpKind {
    /// An ARP request "who-has IP tell IP", target hardware address zero (RFC 5227 §3).
    Request,
    /// An ARP reply whose target addresses repeat the sender's.
    Reply,
}

/// The 28-byte Ethernet/IPv4 ARP packet of a gratuitous ARP for `ip` at `mac` (the kernel
/// adds the Ethernet header: broadcast destination, EtherType ARP).
pub fn garp_packet(mac: [u8; 6], ip: Ipv4Addr, kind: GarpKind) -> [u8; ARP_PACKET_LEN] {
    let (op, target_mac) = match kind {
        GarpKind::Request => (ARPOP_REQUEST, [0u8; 6]),
        GarpKind::Reply => (ARPOP_REPLY, mac),
    };
    let mut p = [0u8; ARP_PACKET_LEN];
    p[0..2].copy_from_slice(&ARPHRD_ETHER.to_be_bytes());
    p[2..4].copy_from_slice(&ETH_P_IP.to_be_bytes());
    p[4] = 6;
    p[5] = 4;
    p[6..8].copy_from_slice(&op.to_be_bytes());
    p[8..14].copy_from_slice(&mac);
    p[14..18].copy_from_slice(&ip.octets());
    p[18..24].copy_from_slice(&target_mac);
    p[24..28].copy_from_slice(&ip.octets());
    p
}

/// Why a netlink request failed.
#[derive(Debug)]
enum NetlinkError {
    /// The kernel answered with an error code.
    Kernel(io::Error),
    /// The socket failed (or the answer timed out).
    Io(io::Error),
    /// The answer could not be parsed.
    Protocol(String),
}

/// A route netlink socket for synchronous requests.
struct Rtnl {
    socket: netlink_sys::Socket,
    seq: u32,
}

impl Rtnl {
    fn open() -> io::Result<Rtnl> {
        let mut socket = netlink_sys::Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&netlink_sys::SocketAddr::new(0, 0))?;
        socket2::SockRef::from(&socket).set_read_timeout(Some(NETLINK_TIMEOUT))?;
        Ok(Rtnl { socket, seq: 0 })
    }

    /// Sends `msg` with `flags` (besides NLM_F_REQUEST) and collects the answers to it until
    /// the ACK, the end of the dump, or an error.
    fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        packet.finalize();
        let mut buf = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.socket.send(&buf, 0).map_err(NetlinkError::Io)?;
        let mut answers = Vec::new();
        loop {
            let (datagram, _) = self.socket.recv_from_full().map_err(NetlinkError::Io)?;
            if datagram.is_empty() {
                return Err(NetlinkError::Protocol("empty datagram".into()));
            }
            let mut rest = datagram.as_slice();
            while !rest.is_empty() {
                let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(rest)
                    .map_err(|e| NetlinkError::Protocol(e.to_string()))?;
                let len = m.header.length as usize;
                if len < 16 || len > rest.len() {
                    return Err(NetlinkError::Protocol(format!(
                        "message length {len} with {} bytes left",
                        rest.len()
                    )));
                }
                // Messages are 4-byte aligned within a datagram.
                rest = &rest[len.next_multiple_of(4).min(rest.len())..];
                if m.header.sequence_number != seq {
                    continue;
                }
                match m.payload {
                    NetlinkPayload::InnerMessage(inner) => answers.push(inner),
                    NetlinkPayload::Done(_) => return Ok(answers),
                    NetlinkPayload::Error(e) => match e.code {
                        None => return Ok(answers),
                        Some(code) => {
                            return Err(NetlinkError::Kernel(io::Error::from_raw_os_error(
                                code.get().saturating_abs(),
                            )))
                        }
                    },
                    NetlinkPayload::Noop => {}
                    NetlinkPayload::Overrun(_) => {
                        return Err(NetlinkError::Protocol("overrun".into()))
                    }
                    // NetlinkPayload is non-exhaustive.
                    _ => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garp_request_bytes() {
        let mac = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];
        let p = garp_packet(mac, Ipv4Addr::new(198, 18, 0, 10), GarpKind::Request);
        #[rustfmt::skip]
        let expected: [u8; 28] = [
            0x00, 0x01,                         // hardware type: Ethernet
            0x08, 0x00,                         // protocol type: IPv4
            6, 4,                               // hardware, protocol address lengths
            0x00, 0x01,                         // operation: request
            0x02, 0x11, 0x22, 0x33, 0x44, 0x55, // sender MAC
            198, 18, 0, 10,                     // sender IP = the service address
            0, 0, 0, 0, 0, 0,                   // target MAC: zero (RFC 5227)
            198, 18, 0, 10,                     // target IP = the service address
        ];
        assert_eq!(p, expected);
    }

    #[test]
    fn garp_reply_bytes() {
        let mac = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];
        let p = garp_packet(mac, Ipv4Addr::new(198, 19, 255, 1), GarpKind::Reply);
        #[rustfmt::skip]
        let expected: [u8; 28] = [
            0x00, 0x01, 0x08, 0x00, 6, 4,
            0x00, 0x02,                         // operation: reply
            0x02, 0x11, 0x22, 0x33, 0x44, 0x55,
            198, 19, 255, 1,
            0x02, 0x11, 0x22, 0x33, 0x44, 0x55, // target MAC = sender MAC
            198, 19, 255, 1,
        ];
        assert_eq!(p, expected);
    }

    #[test]
    fn interface_names_the_kernel_would_refuse_are_refused_before_any_request() {
        for bad in ["", "a/b", "a b", "lan0:1", "0123456789abcdef", ".", ".."] {
            assert!(!valid_interface_name(bad), "{bad:?}");
            let sa = ServiceAddress {
                address: "198.18.0.10/24".parse().unwrap(),
                interface: bad.to_string(),
            };
            for r in [
                sa.take().map(|_| ()),
                sa.release().map(|_| ()),
                sa.is_present().map(|_| ()),
            ] {
                let e = r.expect_err("an invalid name must be refused");
                assert!(
                    matches!(e, ServiceAddressError::InvalidInterfaceName { .. }),
                    "{bad:?}: {e}"
                );
            }
        }
        for good in ["lan0", "eth0.100", "0123456789abcde", "br-lan"] {
            assert!(valid_interface_name(good), "{good:?}");
        }
    }

    #[test]
    fn permission_errors_name_the_capability() {
        let sa = ServiceAddress {
            address: "198.18.0.10/32".parse().unwrap(),
            interface: "lan0".into(),
        };
        let e = sa.error(
            Operation::AddAddress,
            NetlinkError::Kernel(io::Error::from_raw_os_error(libc::EPERM)),
        );
        assert_eq!(
            e.to_string(),
            "service address 198.18.0.10/32 on \"lan0\": adding the address was refused: \
             permission denied (the process needs CAP_NET_ADMIN)"
        );
        let e = sa.error(
            Operation::OpenPacketSocket,
            NetlinkError::Io(io::Error::from_raw_os_error(libc::EPERM)),
        );
        assert!(e.to_string().contains("CAP_NET_RAW"), "{e}");
        let e = sa.error(
            Operation::LookUpInterface,
            NetlinkError::Kernel(io::Error::from_raw_os_error(libc::ENODEV)),
        );
        assert_eq!(
            e.to_string(),
            "service address 198.18.0.10/32: interface \"lan0\" does not exist"
        );
    }
}

//! The standard lab topology the system tests share.
//!
//! ```text
//!  ns s (server)   s0 198.18.0.1/24 ─┐
//!  ns r (router)   u0 198.18.0.2/24 ─┼─ br0 (upstream)        routes in s:
//!  ns l (load)     l0 198.18.0.3/24 ─┘                          198.18.1.0/24 via .0.2
//!  ns r            d1 198.18.1.1/24 ─── br1 (downstream 1)      198.18.2.0/24 via .0.2
//!  ns r            d2 198.18.2.1/24 ─── br2 (downstream 2)
//!  ns c<n>         e<…> (clients, on any bridge, addressed or not)
//! ```
//!
//! `r` forwards between its segments, so a client on br1 holding 198.18.1.x can unicast to
//! the server and the server can answer ciaddr. Clients on br0 are on the server's own
//! segment (direct, broadcast). Everything is 198.18.0.0/15; pools the tests never send to
//! (perfdhcp's) come from 198.19.0.0/16.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::config::{ServerConfig, SubnetConfig};
use crate::lab::Lab;

/// The server's address (br0).
pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// The router's upstream address (br0).
pub const ROUTER_UP_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// The load namespace's address (br0): perfdhcp's and relay-mapped scripted agents' giaddr.
pub const LOAD_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 3);
/// The router's address on downstream segment 1 (giaddr for clients on br1).
pub const RELAY1_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
/// The router's address on downstream segment 2 (giaddr for clients on br2).
pub const RELAY2_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 1);
/// The direct segment (br0).
pub const NET0: &str = "198.18.0.0/24";
/// Downstream segment 1 (br1).
pub const NET1: &str = "198.18.1.0/24";
/// Downstream segment 2 (br2).
pub const NET2: &str = "198.18.2.0/24";
/// Pool of the direct segment.
pub const POOL0: &str = "198.18.0.100-198.18.0.199";
/// Pool of segment 1.
pub const POOL1: &str = "198.18.1.100-198.18.1.199";
/// Pool of segment 2.
pub const POOL2: &str = "198.18.2.100-198.18.2.199";
/// A large subnet reached only through relay mapping (perfdhcp); never sent to.
pub const NET_BULK: &str = "198.19.0.0/16";
/// Pool of the bulk subnet.
pub const POOL_BULK: &str = "198.19.0.1-198.19.255.254";

static CLIENT_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A client namespace attached to a bridge.
#[derive(Debug, Clone)]
pub struct ClientNs {
    /// Full namespace name.
    pub ns: String,
    /// Interface name, unique on the host (dhcpcd keys /run/dhcpcd files by it).
    pub ifname: String,
    /// The interface's MAC.
    pub mac: [u8; 6],
}

impl ClientNs {
    /// The MAC as prodhcpctl prints it.
    pub fn mac_string(&self) -> String {
        crate::packet::mac_string(&self.mac)
    }
}

/// The standard topology inside a [`Lab`].
#[derive(Debug)]
pub struct Topology {
    /// The lab (namespaces, processes, scratch dir).
    pub lab: Lab,
    /// Server namespace.
    pub srv: String,
    /// Router/relay namespace.
    pub rly: String,
    /// Load-generator namespace.
    pub load: String,
}

impl Topology {
    /// Builds the topology for test `tag`.
    pub fn new(tag: &str) -> Self {
        let lab = Lab::new(tag);
        for br in ["br0", "br1", "br2"] {
            lab.add_bridge(br);
        }
        let srv = lab.add_namespace("s");
        lab.connect("s", "s0", "br0", Some("198.18.0.1/24"));
        let rly = lab.add_namespace("r");
        lab.connect("r", "u0", "br0", Some("198.18.0.2/24"));
        lab.connect("r", "d1", "br1", Some("198.18.1.1/24"));
        lab.connect("r", "d2", "br2", Some("198.18.2.1/24"));
        lab.enable_forwarding("r");
        let load = lab.add_namespace("l");
        lab.connect("l", "l0", "br0", Some("198.18.0.3/24"));
        lab.add_route("s", NET1, "198.18.0.2");
        lab.add_route("s", NET2, "198.18.0.2");
        lab.add_route("l", NET1, "198.18.0.2");
        lab.add_route("l", NET2, "198.18.0.2");
        Self {
            lab,
            srv,
            rly,
            load,
        }
    }

    /// The usual server configuration for this topology: the direct segment on `s0`
    /// (routers 198.18.0.1), segments 1 and 2 behind the router (routers = the router's
    /// address there), and the bulk subnet mapped from relay [`LOAD_IP`]. Two workers.
    pub fn standard_config(&self) -> ServerConfig {
        ServerConfig::new(self.lab.dir())
            .interface("s0")
            .subnet(SubnetConfig::new(NET0, POOL0).option("routers", "198.18.0.1"))
            .subnet(SubnetConfig::new(NET1, POOL1).option("routers", "198.18.1.1"))
            .subnet(SubnetConfig::new(NET2, POOL2).option("routers", "198.18.2.1"))
            .subnet(SubnetConfig::new(NET_BULK, POOL_BULK).relay("198.18.0.3"))
    }

    /// Adds client namespace `c<n>` on `bridge` with a host-unique interface name and the
    /// MAC `02:cc:<pid>:<n>`; `addr` ("198.18.1.50/24") is optional, and so is a default
    /// route via `gateway`.
    pub fn add_client(
        &self,
        bridge: &str,
        addr: Option<&str>,
        gateway: Option<Ipv4Addr>,
    ) -> ClientNs {
        let n = CLIENT_COUNTER.fetch_add(1, Ordering::Relaxed);
        let role = format!("c{n}");
        let pid = std::process::id();
        // "e" + up to 7 pid digits + "x" + counter: ≤ 15 bytes, unique among live processes.
        let ifname = format!("e{}x{}", pid % 10_000_000, n % 100_000);
        self.lab.add_namespace(&role);
        let ns = self.lab.connect(&role, &ifname, bridge, addr);
        let p = pid.to_be_bytes();
        let mac = [0x02, 0xcc, p[2], p[3], (n >> 8) as u8, n as u8];
        let mac_s = crate::packet::mac_string(&mac);
        crate::lab::sh(&[
            "ip", "-n", &ns, "link", "set", "dev", &ifname, "address", &mac_s,
        ]);
        if let Some(gw) = gateway {
            self.lab.add_route(&role, "default", &gw.to_string());
        }
        ClientNs { ns, ifname, mac }
    }
}

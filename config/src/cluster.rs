//! The optional `cluster` section: this appliance's place in a replicated group (issue 8).
//! Absent means a standalone appliance, exactly as before.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::Ipv4Net;

use crate::path::FieldPath;
use crate::validate::{check_absolute, check_interface_name, check_unicast, fail, Check};
use crate::wire::WireCluster;

/// Most peers besides this appliance (a cluster has at most 16 appliances).
pub const MAX_PEERS: usize = 15;
/// Longest cluster or node name, bytes.
pub const MAX_NAME_LEN: usize = 32;
/// Default of `cluster.heartbeat_ms`.
pub const DEFAULT_HEARTBEAT_MS: u32 = 200;
/// Default of `cluster.dead_after_ms`: a silent peer is declared dead this long after its last
/// frame, so a frozen host or cut link is detected within 1 s with no tuning (issue 8).
pub const DEFAULT_DEAD_AFTER_MS: u32 = 800;
/// Smallest `cluster.heartbeat_ms`.
pub const MIN_HEARTBEAT_MS: u32 = 10;
/// Largest `cluster.heartbeat_ms`.
pub const MAX_HEARTBEAT_MS: u32 = 10_000;
/// Largest `cluster.dead_after_ms`.
pub const MAX_DEAD_AFTER_MS: u32 = 60_000;

/// A validated `cluster` section.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Cluster {
    /// Name of the cluster; peers with another name are refused.
    pub name: String,
    /// This appliance's node name.
    pub node: String,
    /// Where this appliance's syncd accepts peers.
    pub listen: SocketAddr,
    /// The other appliances, in file order (an entry naming this node is left out: one list
    /// of every appliance may be shared by all of them). At least 1, at most [`MAX_PEERS`].
    pub peers: Vec<Peer>,
    /// File holding the cluster key (64 hex characters; not group/other readable).
    pub key_file: PathBuf,
    /// The floating address the active appliance holds, if any.
    pub service_address: Option<ServiceAddress>,
    /// When a lease change reaches the client relative to its replication.
    pub replication: Replication,
    /// Interval between heartbeats on an idle peer connection.
    pub heartbeat_interval: Duration,
    /// Silence after which a connected peer is declared dead.
    pub dead_after: Duration,
}

/// Another appliance of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Peer {
    /// Its node name.
    pub node: String,
    /// Where its syncd listens.
    pub address: SocketAddr,
}

/// The floating service address (`cluster.service_address`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ServiceAddress {
    /// The address with its prefix length, as it is added to the interface
    /// (`198.18.0.10/24`: host bits are the address itself).
    pub address: Ipv4Net,
    /// Interface the address is added to.
    pub interface: String,
}

/// `cluster.replication`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Replication {
    /// `"sync"`: a lease change reaches the client only after every in-sync standby applied it.
    #[default]
    Sync,
    /// `"async"`: the reply goes out first, the change is shipped after.
    Async,
}

impl Replication {
    /// The name used in the file.
    pub fn name(self) -> &'static str {
        match self {
            Replication::Sync => "sync",
            Replication::Async => "async",
        }
    }
}

impl Cluster {
    /// Whether this node dials `peer` (rather than waiting for it to connect): the node whose
    /// name sorts lower (byte order) dials, so each pair has exactly one connection.
    pub fn dials(&self, peer: &str) -> bool {
        self.node.as_str() < peer
    }
}

/// Checks a cluster or node name: 1 to [`MAX_NAME_LEN`] ASCII letters, digits, `-`, `_`, `.`.
fn check_name(name: &str, what: &str, field: FieldPath) -> Check<()> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return fail(
            field,
            format!("{what} `{name}` must have 1 to {MAX_NAME_LEN} characters"),
        );
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return fail(
            field,
            format!("{what} `{name}` contains {c:?}; use ASCII letters, digits, '-', '_' and '.'"),
        );
    }
    Ok(())
}

fn parse_socket(text: &str, field: FieldPath, listen: bool) -> Check<SocketAddr> {
    let address: SocketAddr = match text.trim().parse() {
        Ok(a) => a,
        Err(_) => {
            return fail(
                field,
                format!("`{text}` is not \"address:port\" (e.g. \"198.18.0.1:647\")"),
            )
        }
    };
    if address.port() == 0 {
        return fail(field, format!("`{text}`: the port must be 1..=65535"));
    }
    match address.ip() {
        IpAddr::V4(v4) if !(listen && v4.is_unspecified()) => check_unicast(v4, field)?,
        IpAddr::V4(_) => {}
        IpAddr::V6(v6) => {
            if v6.is_multicast() || (!listen && v6.is_unspecified()) {
                return fail(field, format!("{v6} is not a unicast address"));
            }
        }
    }
    Ok(address)
}

/// Checks the `cluster` section.
pub(crate) fn validate_cluster(wire: WireCluster) -> Check<Cluster> {
    let path = FieldPath::field("cluster");
    check_name(&wire.name, "cluster name", path.at("name"))?;
    check_name(&wire.node, "node name", path.at("node"))?;
    let listen = parse_socket(&wire.listen, path.at("listen"), true)?;

    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut addresses: HashMap<SocketAddr, usize> = HashMap::new();
    let mut peers = Vec::with_capacity(wire.peers.len());
    for (i, peer) in wire.peers.iter().enumerate() {
        let peer_path = path.at("peers").index(i);
        check_name(&peer.node, "node name", peer_path.at("node"))?;
        let address = parse_socket(&peer.address, peer_path.at("address"), false)?;
        if let Some(first) = names.insert(&peer.node, i) {
            return fail(
                peer_path.at("node"),
                format!(
                    "node `{}` is already listed at cluster.peers[{first}]",
                    peer.node
                ),
            );
        }
        if let Some(first) = addresses.insert(address, i) {
            return fail(
                peer_path.at("address"),
                format!("{address} is already the address of cluster.peers[{first}]"),
            );
        }
        if peer.node == wire.node {
            // This appliance's own entry in a shared list of every appliance.
            continue;
        }
        if address == listen {
            return fail(
                peer_path.at("address"),
                format!(
                    "{address} is this node's own `listen` address, but the entry names node `{}` (this node is `{}`)",
                    peer.node, wire.node
                ),
            );
        }
        peers.push(Peer {
            node: peer.node.clone(),
            address,
        });
    }
    if peers.is_empty() {
        return fail(
            path.at("peers"),
            format!(
                "no peer besides this node `{}`: a cluster needs at least one other appliance",
                wire.node
            ),
        );
    }
    if peers.len() > MAX_PEERS {
        return fail(
            path.at("peers"),
            format!(
                "{} peers besides this node; a cluster has at most {} appliances ({MAX_PEERS} peers)",
                peers.len(),
                MAX_PEERS + 1
            ),
        );
    }

    check_absolute(&wire.key_file, path.at("key_file"))?;

    let service_address = match wire.service_address {
        None => None,
        Some(service) => {
            let service_path = path.at("service_address");
            let address = parse_service_address(&service.address, service_path.at("address"))?;
            check_interface_name(&service.interface, service_path.at("interface"))?;
            Some(ServiceAddress {
                address,
                interface: service.interface,
            })
        }
    };

    let replication = match wire.replication.as_deref().map(str::trim) {
        None | Some("sync") => Replication::Sync,
        Some("async") => Replication::Async,
        Some(other) => {
            return fail(
                path.at("replication"),
                format!("`{other}` is not \"sync\" or \"async\""),
            )
        }
    };

    let heartbeat = wire.heartbeat_ms;
    if !(MIN_HEARTBEAT_MS..=MAX_HEARTBEAT_MS).contains(&heartbeat) {
        return fail(
            path.at("heartbeat_ms"),
            format!("{heartbeat} ms: the heartbeat interval must be {MIN_HEARTBEAT_MS} to {MAX_HEARTBEAT_MS} ms"),
        );
    }
    let dead_after = wire.dead_after_ms;
    if dead_after < 2 * heartbeat || dead_after > MAX_DEAD_AFTER_MS {
        return fail(
            path.at("dead_after_ms"),
            format!(
                "{dead_after} ms: must be at least twice heartbeat_ms ({} ms) and at most {MAX_DEAD_AFTER_MS} ms",
                2 * heartbeat
            ),
        );
    }

    Ok(Cluster {
        name: wire.name,
        node: wire.node,
        listen,
        peers,
        key_file: wire.key_file,
        service_address,
        replication,
        heartbeat_interval: Duration::from_millis(u64::from(heartbeat)),
        dead_after: Duration::from_millis(u64::from(dead_after)),
    })
}

fn parse_service_address(text: &str, field: FieldPath) -> Check<Ipv4Net> {
    let net: Ipv4Net = match text.trim().parse() {
        Ok(net) => net,
        Err(_) => {
            return fail(
                field,
                format!("`{text}` is not \"address/prefix\" (e.g. \"198.18.0.10/24\")"),
            )
        }
    };
    let address = net.addr();
    if net.prefix_len() == 0 {
        return fail(field, format!("`{text}`: the prefix must be /1 to /32"));
    }
    check_unicast(address, field.clone())?;
    if net.prefix_len() <= 30 && (address == net.network() || address == net.broadcast()) {
        return fail(
            field,
            format!(
                "{address} is the network or broadcast address of {}",
                net.trunc()
            ),
        );
    }
    Ok(net)
}

//! The configuration as the engine uses it on the hot path: subnets with their slot spans,
//! reservations indexed both ways, served interfaces resolved to indexes, and the subnet
//! lookup ([`SubnetLookup`], from `prodhcp_config`).

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::ops::Range;

use prodhcp_config::{Config, Subnet, SubnetLookup};
use shm_layout::{ClientKey, Table};

/// One subnet, ready to serve.
#[derive(Debug, Clone)]
pub struct ServeSubnet {
    /// The configured subnet.
    pub subnet: Subnet,
    /// Slots of this subnet's addresses in the table, in address order: one run, or more
    /// when live pool changes added some of its addresses after others ([`Table::slot_spans`]).
    pub spans: Vec<Range<u32>>,
}

impl ServeSubnet {
    /// Whether `slot` holds one of this subnet's addresses.
    pub fn contains_slot(&self, slot: u32) -> bool {
        self.spans.iter().any(|s| s.contains(&slot))
    }

    /// Slots of this subnet's addresses.
    pub fn slot_total(&self) -> u64 {
        self.spans.iter().map(|s| u64::from(s.end - s.start)).sum()
    }
}

/// A reservation as the engine looks it up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReservedFor {
    /// Subnet index.
    pub subnet: usize,
    /// The reserved address.
    pub address: Ipv4Addr,
}

/// Hot-path view of a validated [`Config`].
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The source configuration.
    pub config: Config,
    /// Subnets in configuration order.
    pub subnets: Vec<ServeSubnet>,
    /// Client key → reservation (a reservation with both MAC and client-id has two keys).
    pub reservation_by_key: HashMap<ClientKey, ReservedFor>,
    /// Reserved address → the keys it is reserved for.
    pub reserved_addrs: HashMap<u32, Vec<ClientKey>>,
    /// Interface indexes where direct clients are served.
    pub served_ifindexes: HashSet<u32>,
    /// Subnet selection without a scan over every subnet (issue 10).
    pub lookup: SubnetLookup,
}

impl ServeConfig {
    /// Builds the view against `table` (for slot spans). Interfaces that do not exist (yet) are
    /// skipped; they are resolved again on the next reload.
    pub fn build(config: Config, table: &Table) -> ServeConfig {
        let subnets = config
            .subnets
            .iter()
            .map(|s| ServeSubnet {
                spans: table.slot_spans(
                    u32::from(s.network.network()),
                    u32::from(s.network.broadcast()),
                ),
                subnet: s.clone(),
            })
            .collect();
        let mut reservation_by_key = HashMap::new();
        let mut reserved_addrs: HashMap<u32, Vec<ClientKey>> = HashMap::new();
        for s in &config.subnets {
            for r in &s.reservations {
                for k in ClientKey::reservation_keys(r.client_id.as_deref(), r.mac.as_deref()) {
                    reservation_by_key.insert(
                        k,
                        ReservedFor {
                            subnet: s.index,
                            address: r.address,
                        },
                    );
                    reserved_addrs
                        .entry(u32::from(r.address))
                        .or_default()
                        .push(k);
                }
            }
        }
        let served_ifindexes = config
            .interfaces
            .iter()
            .filter_map(|name| nix::net::if_::if_nametoindex(name.as_str()).ok())
            .collect();
        let lookup = SubnetLookup::build(&config);
        ServeConfig {
            lookup,
            config,
            subnets,
            reservation_by_key,
            reserved_addrs,
            served_ifindexes,
        }
    }

    /// The subnet whose network contains `a`.
    pub fn subnet_for_addr(&self, a: Ipv4Addr) -> Option<usize> {
        self.lookup.for_addr(a)
    }

    /// The subnet for a relay's giaddr.
    pub fn subnet_for_relay(&self, giaddr: Ipv4Addr) -> Option<usize> {
        self.lookup.for_relay(giaddr)
    }

    /// Whether address `a` is reserved for somebody other than `key`.
    pub fn reserved_for_other(&self, a: u32, key: &ClientKey, alt: &ClientKey) -> bool {
        self.reserved_addrs
            .get(&a)
            .is_some_and(|keys| !keys.iter().any(|k| k == key || k == alt))
    }
}

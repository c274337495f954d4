//! The validated configuration and the questions the other components ask of it.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use ipnet::Ipv4Net;

use crate::options::OptionBlock;
use crate::range::AddressRange;

/// Most workers a configuration may ask for (the lease table tracks 64 writers).
pub const MAX_WORKERS: usize = 64;

/// A validated configuration. Build it with [`crate::parse`] or [`crate::load`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Config {
    /// Directory for the lease table and other state.
    pub state_dir: PathBuf,
    /// Unix socket `prodhcpctl` talks to.
    pub control_socket: PathBuf,
    /// Interfaces where direct (broadcast, relay-less) clients are served.
    pub interfaces: Vec<String>,
    /// Worker processes as configured; 0 means one per online CPU (see
    /// [`Config::effective_workers`]).
    pub workers: usize,
    /// The subnets, in file order; `subnets[i].index == i`.
    pub subnets: Vec<Subnet>,
    /// Override for the server identifier (option 54); see [`Config::effective_server_id`]
    /// for the one replies use.
    pub server_id: Option<Ipv4Addr>,
    /// Seconds a DECLINEd address stays unusable.
    pub decline_quarantine: u32,
    /// Seconds an OFFERed address is held for the client.
    pub offer_hold: u32,
    /// Log filter: a level (`info`) or `target=level` directives.
    pub log_level: String,
    /// UDP port the server listens on.
    pub listen_port: u16,
    /// The lease table file (resolved: `<state_dir>/leases.table` unless configured).
    pub table_file: PathBuf,
    /// Records per worker change ring (a power of two).
    pub ring_capacity: u32,
    /// Most replies a worker holds while they wait for synchronous replication (see
    /// etc/prodhcp.ron); a request whose reply would need holding past it is dropped.
    pub max_held_replies: u32,
    /// Seconds between background scrubs of the lease table (one always runs after start);
    /// 0 turns the periodic scrubs off.
    pub scrub_interval: u32,
    /// What a lease must survive before its ACK goes out.
    pub durability: Durability,
    /// This appliance's replication group; `None` = a standalone appliance.
    pub cluster: Option<crate::cluster::Cluster>,
    /// The lease audit trail's destinations; `None` = no audit trail (the supervisor starts
    /// the audit process only with one).
    pub audit: Option<crate::audit::Audit>,
    /// The user `prodhcpd` drops to when started as root (`None`: it keeps the user it was
    /// started as). A valid name (see [`crate::MAX_USER_NAME`]), never `root`; whether it
    /// exists is the supervisor's question. Read at start only: a reload that changes it is
    /// refused.
    pub user: Option<String>,
    /// Where the Prometheus endpoint listens (`GET /metrics`); `None` = no endpoint.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// When pool utilisation raises an alarm (the defaults when the section is absent).
    pub pool_alarms: crate::alarms::PoolAlarms,
}

/// What an acknowledged lease survives (`durability` in the file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Durability {
    /// `"power"`: the pages a receive batch changed are written to stable storage before that
    /// batch's replies are sent (group commit, one sync per batch). An ACKed lease survives a
    /// power cut. The default, for a single appliance.
    #[default]
    Power,
    /// `"process"`: replies go out as soon as the change is in the shared mapping; it survives
    /// the death of any process, and reaches the disk by the kernel's writeback (about 30 s).
    /// For a replicated pair, where the standby holds the lease.
    Process,
}

impl Durability {
    /// The name used in the file.
    pub fn name(self) -> &'static str {
        match self {
            Durability::Power => "power",
            Durability::Process => "process",
        }
    }
}

/// One subnet.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Subnet {
    /// Position in [`Config::subnets`].
    pub index: usize,
    /// The subnet's network (no host bits set).
    pub network: Ipv4Net,
    /// Dynamic pools, in file order; inside `network`, disjoint from every other pool.
    pub pools: Vec<AddressRange>,
    /// Lease time, seconds (option 51).
    pub lease_time: u32,
    /// T1, seconds (option 58); resolved, `lease_time / 2` unless configured.
    pub renew_time: u32,
    /// T2, seconds (option 59); resolved, `lease_time * 7 / 8` unless configured.
    pub rebind_time: u32,
    /// Options sent to this subnet's clients, pre-encoded; includes the subnet mask (1) and
    /// broadcast address (28) derived from `network` unless configured.
    pub options: OptionBlock,
    /// Fixed addresses for known clients.
    pub reservations: Vec<Reservation>,
    /// Relay agent addresses (giaddr) that map to this subnet even when outside `network`.
    pub relays: Vec<Ipv4Addr>,
    /// ISC dhcpd's `authoritative`: when true the server NAKs requests (INIT-REBOOT, RENEW,
    /// REBIND) on this subnet for addresses it has no record of the client holding, and for
    /// addresses outside this subnet's network or pools. When false (the default) it stays
    /// silent in those cases (RFC 2131 §4.3.2), so that other servers on the same link or
    /// behind the same relay (split scopes) can answer. NAKs for a client whose known binding
    /// differs from what it asks for are sent either way.
    pub authoritative: bool,
    /// This subnet's pool alarm thresholds (applies to each of its pools); `None` = the
    /// `pool_alarms` ones.
    pub alarm_thresholds: Option<crate::alarms::Thresholds>,
}

/// A fixed address for a client known by MAC address, client identifier, or both.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Reservation {
    /// Hardware address (chaddr), 1 to 16 octets.
    pub mac: Option<Vec<u8>>,
    /// Client identifier (option 61) bytes, type octet included.
    pub client_id: Option<Vec<u8>>,
    /// The reserved address, inside the subnet's network.
    pub address: Ipv4Addr,
    /// Host name to give the client (option 12).
    pub hostname: Option<String>,
}

/// One run of lease-table slots: see [`Config::table_layout`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableRange {
    /// The addresses.
    pub range: AddressRange,
    /// Index of the subnet the addresses belong to.
    pub subnet: usize,
    /// True for pool addresses (the allocator may hand them out), false for reserved
    /// addresses outside every pool (they exist only for their reservation).
    pub in_pool: bool,
}

impl Subnet {
    /// Whether `address` is in this subnet's network.
    pub fn contains(&self, address: Ipv4Addr) -> bool {
        self.network.contains(&address)
    }

    /// Whether `address` is in one of this subnet's pools.
    pub fn in_pool(&self, address: Ipv4Addr) -> bool {
        self.pools.iter().any(|p| p.contains(address))
    }

    /// Number of pool addresses.
    pub fn pool_size(&self) -> u64 {
        self.pools.iter().map(AddressRange::len).sum()
    }
}

impl Config {
    /// The pool alarm thresholds of `subnet`'s pools: its own, else `pool_alarms`'.
    pub fn alarm_thresholds(&self, subnet: &Subnet) -> crate::alarms::Thresholds {
        subnet
            .alarm_thresholds
            .unwrap_or(self.pool_alarms.thresholds)
    }

    /// The server identifier (option 54) replies carry and requests are checked against,
    /// when the configuration fixes one: the top-level `server_id`, else the cluster's
    /// `service_address` (so renewing clients follow the active appliance wherever the
    /// address moves), else `None` (the address each request arrived on).
    pub fn effective_server_id(&self) -> Option<Ipv4Addr> {
        self.server_id.or_else(|| {
            self.cluster
                .as_ref()
                .and_then(|c| c.service_address.as_ref())
                .map(|s| s.address.addr())
        })
    }

    /// The change-ring file of writer `owner` (a worker, the supervisor, the importer, syncd)
    /// under the state directory: `ring-<owner>.dat`.
    pub fn ring_file(&self, owner: u8) -> PathBuf {
        self.state_dir.join(format!("ring-{owner}.dat"))
    }

    /// The runs of addresses the lease table needs a slot for, sorted ascending and
    /// disjoint: every pool, plus every reserved address outside all pools. Adjacent runs are
    /// merged only when they belong to the same subnet and are of the same kind (both pool or
    /// both reservation-only), so each run maps to one table range with one `in_pool` flag.
    pub fn table_layout(&self) -> Vec<TableRange> {
        let mut runs: Vec<TableRange> = Vec::new();
        for subnet in &self.subnets {
            runs.extend(subnet.pools.iter().map(|&range| TableRange {
                range,
                subnet: subnet.index,
                in_pool: true,
            }));
            runs.extend(
                subnet
                    .reservations
                    .iter()
                    .filter(|r| !subnet.in_pool(r.address))
                    .map(|r| TableRange {
                        range: AddressRange::single(r.address),
                        subnet: subnet.index,
                        in_pool: false,
                    }),
            );
        }
        runs.sort_by_key(|run| run.range.first);
        let mut merged: Vec<TableRange> = Vec::with_capacity(runs.len());
        for run in runs {
            match merged.last_mut() {
                Some(last)
                    if last.subnet == run.subnet
                        && last.in_pool == run.in_pool
                        && last.range.is_followed_by(&run.range) =>
                {
                    last.range.last = run.range.last;
                }
                _ => merged.push(run),
            }
        }
        merged
    }

    /// The address ranges of [`Config::table_layout`], without subnet and kind.
    pub fn table_ranges(&self) -> Vec<AddressRange> {
        self.table_layout().into_iter().map(|t| t.range).collect()
    }

    /// Number of slots the lease table needs.
    pub fn table_size(&self) -> u64 {
        self.table_layout().iter().map(|t| t.range.len()).sum()
    }

    /// Worker processes to run: `workers`, or when it is 0 the number of online CPUs
    /// (at least 1, at most [`MAX_WORKERS`]).
    pub fn effective_workers(&self) -> usize {
        if self.workers > 0 {
            return self.workers;
        }
        std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(1)
            .clamp(1, MAX_WORKERS)
    }

    /// The subnet whose network contains `address`.
    pub fn subnet_for_addr(&self, address: Ipv4Addr) -> Option<&Subnet> {
        self.subnets.iter().find(|s| s.contains(address))
    }

    /// The subnet a relayed request with this `giaddr` belongs to: the subnet listing it in
    /// `relays`, else the subnet whose network contains it.
    pub fn subnet_for_relay(&self, giaddr: Ipv4Addr) -> Option<&Subnet> {
        self.subnets
            .iter()
            .find(|s| s.relays.contains(&giaddr))
            .or_else(|| self.subnet_for_addr(giaddr))
    }

    /// True when `other` keeps what a reload cannot change about the lease table and its rings:
    /// the table file and the ring capacity. The number of workers (one ring each) and the pool
    /// layout may change on reload (issue 10): the supervisor changes the table's range
    /// directory in place when the table has room (`shm_layout::Table::plan_layout`).
    pub fn same_table_files(&self, other: &Config) -> bool {
        self.table_file == other.table_file && self.ring_capacity == other.ring_capacity
    }

    /// True when `other` differs from `self` only in things that need no change to the lease
    /// table file: options, lease times, reservations that leave the ranges and kinds of
    /// [`Config::table_layout`] unchanged, subnet order and networks, relays, interfaces, log level, timers, port. False when the table layout,
    /// the table file, the ring capacity or the number of workers (one ring each) differ.
    pub fn same_table_layout(&self, other: &Config) -> bool {
        let shape = |c: &Config| -> Vec<(AddressRange, bool)> {
            c.table_layout()
                .into_iter()
                .map(|t| (t.range, t.in_pool))
                .collect()
        };
        shape(self) == shape(other)
            && self.table_file == other.table_file
            && self.ring_capacity == other.ring_capacity
            && self.effective_workers() == other.effective_workers()
    }
}

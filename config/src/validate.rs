//! Semantic validation: from the wire form to [`Config`]. Every error names the path of the
//! offending value; [`crate::parse`] adds its line.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::Path;

use crate::model::{Config, Durability, Reservation, Subnet, TableRange, MAX_WORKERS};
use crate::options::{self, OptionBlock, MAX_OPTIONS_WIRE_LEN};
use crate::path::FieldPath;
use crate::range::AddressRange;
use crate::wire::{WireConfig, WireReservation, WireSubnet};

/// Longest lease time accepted: 10 years, in seconds.
pub const MAX_LEASE_TIME: u32 = 10 * 365 * 86_400;
/// Longest `offer_hold` accepted, seconds.
pub const MAX_OFFER_HOLD: u32 = 3_600;
/// Longest `decline_quarantine` accepted, seconds (same bound as leases).
pub const MAX_DECLINE_QUARANTINE: u32 = MAX_LEASE_TIME;
/// Smallest `ring_capacity` accepted.
pub const MIN_RING_CAPACITY: u32 = 1 << 10;
/// Largest `ring_capacity` accepted.
pub const MAX_RING_CAPACITY: u32 = 1 << 24;
/// Largest `max_held_replies` accepted (per worker; each held reply keeps its bytes).
pub(crate) const MAX_HELD_REPLIES: u32 = 1 << 20;
/// Most addresses the lease table holds (pools plus reserved addresses outside pools).
pub const MAX_TABLE_ADDRESSES: u64 = 1 << 26;
/// Most separate address runs the lease table holds.
pub const MAX_TABLE_RANGES: usize = 1 << 20;
/// Longest Unix socket path (`sun_path` is 108 bytes with its terminating NUL).
pub(crate) const MAX_SOCKET_PATH: usize = 107;
/// Longest `user` name accepted (useradd's limit).
pub const MAX_USER_NAME: usize = 32;
/// Longest interface name (`IFNAMSIZ` - 1).
const MAX_INTERFACE_NAME: usize = 15;

/// A rule a value breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Invalid {
    pub path: FieldPath,
    pub message: String,
}

pub(crate) type Check<T> = Result<T, Invalid>;

pub(crate) fn fail<T>(path: FieldPath, message: impl Into<String>) -> Check<T> {
    Err(Invalid {
        path,
        message: message.into(),
    })
}

/// Identities already claimed by a reservation or relay, with where.
#[derive(Default)]
struct Seen {
    macs: HashMap<Vec<u8>, FieldPath>,
    client_ids: HashMap<Vec<u8>, FieldPath>,
    addresses: HashMap<Ipv4Addr, FieldPath>,
    relays: HashMap<Ipv4Addr, FieldPath>,
}

/// Checks every rule and builds the configuration.
pub(crate) fn validate(wire: WireConfig) -> Check<Config> {
    let root = FieldPath::field;

    check_absolute(&wire.state_dir, root("state_dir"))?;
    check_absolute(&wire.control_socket, root("control_socket"))?;
    if wire.control_socket.as_os_str().len() > MAX_SOCKET_PATH {
        return fail(
            root("control_socket"),
            format!("a Unix socket path has at most {MAX_SOCKET_PATH} bytes"),
        );
    }
    let table_file = match wire.table_file {
        Some(path) => {
            check_absolute(&path, root("table_file"))?;
            path
        }
        None => wire.state_dir.join("leases.table"),
    };

    let mut interfaces_seen: HashMap<&str, usize> = HashMap::new();
    for (i, name) in wire.interfaces.iter().enumerate() {
        let path = root("interfaces").index(i);
        check_interface_name(name, path.clone())?;
        if let Some(first) = interfaces_seen.insert(name, i) {
            return fail(
                path,
                format!("interface `{name}` is already listed at interfaces[{first}]"),
            );
        }
    }

    let workers = usize::try_from(wire.workers).unwrap_or(usize::MAX);
    if workers > MAX_WORKERS {
        return fail(
            root("workers"),
            format!("{workers} workers requested; at most {MAX_WORKERS} (0 = one per CPU)"),
        );
    }
    if let Some(server_id) = wire.server_id {
        check_unicast(server_id, root("server_id"))?;
    }
    check_seconds(
        wire.decline_quarantine,
        MAX_DECLINE_QUARANTINE,
        root("decline_quarantine"),
    )?;
    check_seconds(wire.offer_hold, MAX_OFFER_HOLD, root("offer_hold"))?;
    if wire.scrub_interval != 0 {
        check_seconds(wire.scrub_interval, MAX_LEASE_TIME, root("scrub_interval"))?;
    }
    check_log_level(&wire.log_level, root("log_level"))?;
    if wire.listen_port == 0 {
        return fail(root("listen_port"), "the port must be 1..=65535");
    }
    let ring = wire.ring_capacity;
    if !ring.is_power_of_two() || !(MIN_RING_CAPACITY..=MAX_RING_CAPACITY).contains(&ring) {
        return fail(
            root("ring_capacity"),
            format!(
                "{ring} is not a power of two between {MIN_RING_CAPACITY} and {MAX_RING_CAPACITY}"
            ),
        );
    }

    if !(1..=MAX_HELD_REPLIES).contains(&wire.max_held_replies) {
        return fail(
            root("max_held_replies"),
            format!(
                "{} is not between 1 and {MAX_HELD_REPLIES}",
                wire.max_held_replies
            ),
        );
    }

    let durability = match wire.durability.as_deref().map(str::trim) {
        None | Some("power") => Durability::Power,
        Some("process") => Durability::Process,
        Some(other) => {
            return fail(
                root("durability"),
                format!("`{other}` is not \"power\" or \"process\""),
            )
        }
    };

    if wire.subnets.is_empty() {
        return fail(root("subnets"), "at least one subnet is needed");
    }
    let mut seen = Seen::default();
    let mut subnets = Vec::with_capacity(wire.subnets.len());
    for (i, subnet) in wire.subnets.into_iter().enumerate() {
        subnets.push(validate_subnet(i, subnet, &mut seen)?);
    }
    check_subnets_disjoint(&subnets)?;
    check_pools_disjoint(&subnets)?;
    let cluster = match wire.cluster {
        Some(cluster) => Some(crate::cluster::validate_cluster(cluster)?),
        None => None,
    };
    let audit = match wire.audit {
        Some(audit) => Some(crate::audit::validate_audit(audit, &wire.state_dir)?),
        None => None,
    };

    if let Some(user) = &wire.user {
        check_user_name(user, root("user"))?;
    }
    let pool_alarms = crate::alarms::validate_pool_alarms(wire.pool_alarms)?;
    for s in &subnets {
        if let Some(t) = s.alarm_thresholds {
            let path = FieldPath::field("subnets")
                .index(s.index)
                .at("alarm_thresholds");
            crate::alarms::check_hysteresis(pool_alarms.hysteresis, t, path)?;
        }
    }

    let config = Config {
        state_dir: wire.state_dir,
        control_socket: wire.control_socket,
        interfaces: wire.interfaces,
        workers,
        subnets,
        server_id: wire.server_id,
        decline_quarantine: wire.decline_quarantine,
        offer_hold: wire.offer_hold,
        log_level: wire.log_level.trim().to_string(),
        listen_port: wire.listen_port,
        table_file,
        ring_capacity: ring,
        max_held_replies: wire.max_held_replies,
        scrub_interval: wire.scrub_interval,
        durability,
        cluster,
        audit,
        user: wire.user,
        metrics_listen: wire.metrics_listen,
        pool_alarms,
    };
    check_table_size(&config)?;
    Ok(config)
}

fn validate_subnet(index: usize, wire: WireSubnet, seen: &mut Seen) -> Check<Subnet> {
    let path = || FieldPath::field("subnets").index(index);
    let network = wire.network;
    if network.trunc() != network {
        return fail(
            path().at("network"),
            format!(
                "`{network}` has host bits set; the network is {}",
                network.trunc()
            ),
        );
    }
    // RFC 3021: /31 and /32 have no network and broadcast addresses to keep free.
    let has_special = network.prefix_len() <= 30;
    let special = |a: Ipv4Addr| has_special && (a == network.network() || a == network.broadcast());

    let lease_time = wire.lease_time;
    if lease_time == u32::MAX {
        return fail(
            path().at("lease_time"),
            "infinite leases (0xffffffff) are not supported; give a finite time of at most 10 years",
        );
    }
    if lease_time == 0 || lease_time > MAX_LEASE_TIME {
        check_seconds(lease_time, MAX_LEASE_TIME, path().at("lease_time"))?;
    }
    let (renew_time, rebind_time) = resolve_timers(&wire, &path)?;

    let mut pools = Vec::with_capacity(wire.pools.len());
    for (j, text) in wire.pools.iter().enumerate() {
        // Paths are built only for an error: 100,000 subnets must not cost 100,000s of
        // allocations on every load and reload.
        let pool_path = || path().at("pools").index(j);
        let pool: AddressRange = match text.parse() {
            Ok(pool) => pool,
            Err(e) => return fail(pool_path(), format!("`{text}`: {e}")),
        };
        if !network.contains(&pool.first) || !network.contains(&pool.last) {
            return fail(
                pool_path(),
                format!("pool {pool} is not inside the subnet's network {network}"),
            );
        }
        if special(pool.first) || special(pool.last) {
            return fail(
                pool_path(),
                format!(
                    "pool {pool} includes the network address {} or the broadcast address {}",
                    network.network(),
                    network.broadcast()
                ),
            );
        }
        pools.push(pool);
    }

    let options = validate_options(&wire, &path)?;

    let mut reservations = Vec::with_capacity(wire.reservations.len());
    for (k, reservation) in wire.reservations.into_iter().enumerate() {
        let r_path = path().at("reservations").index(k);
        let reservation = validate_reservation(reservation, &r_path, seen)?;
        if !network.contains(&reservation.address) {
            return fail(
                r_path.at("address"),
                format!(
                    "{} is not inside the subnet's network {network}",
                    reservation.address
                ),
            );
        }
        if special(reservation.address) {
            return fail(
                r_path.at("address"),
                format!(
                    "{} is the network or broadcast address of {network}",
                    reservation.address
                ),
            );
        }
        reservations.push(reservation);
    }

    for (k, &relay) in wire.relays.iter().enumerate() {
        let relay_path = path().at("relays").index(k);
        check_unicast(relay, relay_path.clone())?;
        if let Some(first) = seen.relays.insert(relay, relay_path) {
            return fail(
                path().at("relays").index(k),
                format!("relay {relay} is already listed at {first}; a relay maps to one subnet"),
            );
        }
    }

    let alarm_thresholds = match &wire.alarm_thresholds {
        Some(list) => Some(crate::alarms::validate_thresholds(
            list,
            path().at("alarm_thresholds"),
        )?),
        None => None,
    };

    Ok(Subnet {
        alarm_thresholds,
        index,
        network,
        pools,
        lease_time,
        renew_time,
        rebind_time,
        options,
        reservations,
        relays: wire.relays,
        authoritative: wire.authoritative,
    })
}

/// T1 and T2: configured or derived from the lease time; `T1 <= T2 <= lease_time`.
fn resolve_timers(wire: &WireSubnet, path: &impl Fn() -> FieldPath) -> Check<(u32, u32)> {
    let lease = u64::from(wire.lease_time);
    let default_renew = u32::try_from(lease / 2).unwrap_or(u32::MAX);
    let default_rebind = u32::try_from(lease * 7 / 8).unwrap_or(u32::MAX);
    let renew = wire.renew_time.unwrap_or(default_renew);
    let rebind = wire.rebind_time.unwrap_or(default_rebind);
    if wire.renew_time == Some(0) {
        return fail(
            path().at("renew_time"),
            "renew_time must be at least 1 second",
        );
    }
    if wire.rebind_time == Some(0) {
        return fail(
            path().at("rebind_time"),
            "rebind_time must be at least 1 second",
        );
    }
    let describe = |configured: Option<u32>, name: &str, rule: &str| match configured {
        Some(v) => format!("{name} ({v} s)"),
        None => format!("the default {name} ({rule})"),
    };
    if rebind > wire.lease_time {
        return fail(
            path().at("rebind_time"),
            format!(
                "{} must not exceed lease_time ({} s)",
                describe(wire.rebind_time, "rebind_time", "lease_time * 7 / 8"),
                wire.lease_time
            ),
        );
    }
    if renew > rebind {
        let at = if wire.renew_time.is_some() {
            "renew_time"
        } else {
            "rebind_time"
        };
        return fail(
            path().at(at),
            format!(
                "{} must not exceed {}",
                describe(wire.renew_time, "renew_time", "lease_time / 2"),
                describe(wire.rebind_time, "rebind_time", "lease_time * 7 / 8")
            ),
        );
    }
    Ok((renew, rebind))
}

fn validate_options(wire: &WireSubnet, path: &impl Fn() -> FieldPath) -> Check<OptionBlock> {
    // Paths only for an error (see validate_subnet); codes seen in a bit set, the earlier
    // key of a duplicate found again only then.
    let options_path = || path().at("options");
    let mut block = OptionBlock::new();
    let mut codes_seen = [0u64; 4];
    for (i, (key, value)) in wire.options.0.iter().enumerate() {
        let (code, bytes) = match options::encode_option(key, value) {
            Ok(encoded) => encoded,
            Err(e) => return fail(options_path().key(key), e.to_string()),
        };
        let (word, bit) = (usize::from(code / 64), 1u64 << (code % 64));
        if codes_seen[word] & bit != 0 {
            let first = wire.options.0[..i]
                .iter()
                .find(|(k, v)| options::encode_option(k, v).is_ok_and(|(c, _)| c == code))
                .map_or("", |(k, _)| k.as_str());
            return fail(
                options_path().key(key),
                format!("option {code} is already given as `{first}`"),
            );
        }
        codes_seen[word] |= bit;
        block.insert(code, bytes);
    }
    if !block.contains(options::SUBNET_MASK) {
        block.insert(
            options::SUBNET_MASK,
            wire.network.netmask().octets().to_vec(),
        );
    }
    if !block.contains(options::BROADCAST_ADDRESS) {
        block.insert(
            options::BROADCAST_ADDRESS,
            wire.network.broadcast().octets().to_vec(),
        );
    }
    let wire_len = block.wire_len();
    if wire_len > MAX_OPTIONS_WIRE_LEN {
        return fail(
            options_path(),
            format!(
                "the options take {wire_len} bytes in a packet; at most {MAX_OPTIONS_WIRE_LEN} fit beside the server's own options"
            ),
        );
    }
    Ok(block)
}

fn validate_reservation(
    wire: WireReservation,
    path: &FieldPath,
    seen: &mut Seen,
) -> Check<Reservation> {
    let mac = match &wire.mac {
        Some(text) => Some(parse_mac(text).or_else(|e| fail(path.at("mac"), e))?),
        None => None,
    };
    let client_id = match &wire.client_id {
        Some(text) => {
            let bytes = options::parse_hex(text).or_else(|e| fail(path.at("client_id"), e))?;
            if bytes.is_empty() || bytes.len() > 255 {
                return fail(
                    path.at("client_id"),
                    "a client identifier has 1 to 255 bytes",
                );
            }
            Some(bytes)
        }
        None => None,
    };
    if mac.is_none() && client_id.is_none() {
        return fail(
            path.clone(),
            "a reservation needs `mac`, `client_id`, or both",
        );
    }
    if let Some(hostname) = &wire.hostname {
        check_hostname(hostname, path.at("hostname"))?;
    }
    if let Some(mac) = &mac {
        if let Some(first) = seen.macs.insert(mac.clone(), path.at("mac")) {
            return fail(
                path.at("mac"),
                format!("this MAC is already reserved at {first}"),
            );
        }
    }
    if let Some(id) = &client_id {
        if let Some(first) = seen.client_ids.insert(id.clone(), path.at("client_id")) {
            return fail(
                path.at("client_id"),
                format!("this client identifier is already reserved at {first}"),
            );
        }
    }
    if let Some(first) = seen.addresses.insert(wire.address, path.at("address")) {
        return fail(
            path.at("address"),
            format!("{} is already reserved at {first}", wire.address),
        );
    }
    Ok(Reservation {
        mac,
        client_id,
        address: wire.address,
        hostname: wire.hostname,
    })
}

/// A MAC address: 1 to 16 octets of two hex digits, separated by `:` (or `-`).
///
/// Why config has its own parser and does not use `prodhcp_proto::HwAddr` (the one hardware
/// address type of the daemon, prodhcpctl and the importers): config depends on no other
/// prodhcp crate (ARCHITECTURE.md), and a dependency on the control protocol (serde_json, the
/// protocol types) for 20 lines would invert that. Its syntax is also deliberately stricter
/// than what an operator may type on the prodhcpctl command line (exactly two digits per
/// octet, a separator required), and a configuration that loads today must keep loading. The
/// supervisor hands the parsed bytes on unchanged, so both meet as bytes, never as text.
pub(crate) fn parse_mac(text: &str) -> Result<Vec<u8>, String> {
    let text = text.trim();
    let separator = if text.contains('-') { '-' } else { ':' };
    let octets: Option<Vec<u8>> = text
        .split(separator)
        .map(|group| {
            (group.len() == 2 && group.bytes().all(|b| b.is_ascii_hexdigit()))
                .then(|| u8::from_str_radix(group, 16).ok())
                .flatten()
        })
        .collect();
    match octets {
        Some(octets) if (1..=16).contains(&octets.len()) => Ok(octets),
        _ => Err(format!(
            "`{text}` is not a MAC address: expected 1 to 16 octets like \"02:00:00:00:00:01\""
        )),
    }
}

pub(crate) fn check_absolute(path: &Path, field: FieldPath) -> Check<()> {
    if path.as_os_str().is_empty() || !path.is_absolute() {
        return fail(
            field,
            format!("`{}` must be an absolute path", path.display()),
        );
    }
    Ok(())
}

/// Linux's rules for interface names (`dev_valid_name`).
pub(crate) fn check_interface_name(name: &str, field: FieldPath) -> Check<()> {
    if name.is_empty() || name.len() > MAX_INTERFACE_NAME {
        return fail(
            field,
            format!("interface name `{name}` must have 1 to {MAX_INTERFACE_NAME} bytes"),
        );
    }
    if name == "." || name == ".." {
        return fail(field, format!("`{name}` is not an interface name"));
    }
    if let Some(c) = name
        .chars()
        .find(|&c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        return fail(
            field,
            format!("interface name `{name}` contains {c:?}, which Linux does not allow"),
        );
    }
    Ok(())
}

/// A user name `prodhcpd` can drop to: 1 to [`MAX_USER_NAME`] bytes of ASCII letters, digits,
/// `_`, `.` and `-`, starting with a letter or `_` (what useradd and adduser accept by default,
/// and never a number, which could be taken for a uid), and not `root` (leave `user` out to
/// run as root).
pub(crate) fn check_user_name(name: &str, field: FieldPath) -> Check<()> {
    if name.is_empty() || name.len() > MAX_USER_NAME {
        return fail(
            field,
            format!("user name `{name}` must have 1 to {MAX_USER_NAME} bytes"),
        );
    }
    let first = name.as_bytes()[0];
    if !(first.is_ascii_alphabetic() || first == b'_') {
        return fail(
            field,
            format!("user name `{name}` must start with a letter or `_`"),
        );
    }
    if let Some(c) = name
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return fail(
            field,
            format!("user name `{name}` contains {c:?}; allowed are ASCII letters, digits, `_`, `.` and `-`"),
        );
    }
    if name == "root" {
        return fail(
            field,
            "`root` is not a user to drop to; leave `user` out to run as root",
        );
    }
    Ok(())
}

/// An address a host or relay can have: not 0.0.0.0, broadcast, multicast or 240/4.
pub(crate) fn check_unicast(address: Ipv4Addr, field: FieldPath) -> Check<()> {
    let [first_octet, ..] = address.octets();
    if address.is_unspecified()
        || address.is_broadcast()
        || address.is_multicast()
        || first_octet >= 240
    {
        return fail(field, format!("{address} is not a unicast address"));
    }
    Ok(())
}

fn check_seconds(value: u32, max: u32, field: FieldPath) -> Check<()> {
    if value == 0 || value > max {
        return fail(
            field,
            format!("{value} s is out of range: give 1 to {max} seconds"),
        );
    }
    Ok(())
}

const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// A level (`info`) or comma separated `target=level` directives (`info,prodhcp_worker=debug`).
fn check_log_level(text: &str, field: FieldPath) -> Check<()> {
    let is_level = |l: &str| {
        LEVELS
            .iter()
            .any(|level| level.eq_ignore_ascii_case(l.trim()))
    };
    let is_target = |t: &str| {
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':' || b == b'-')
    };
    let ok = !text.trim().is_empty()
        && text
            .split(',')
            .all(|directive| match directive.split_once('=') {
                Some((target, level)) => is_target(target.trim()) && is_level(level),
                None => is_level(directive),
            });
    if !ok {
        return fail(
            field,
            format!(
                "`{text}` is not a log level: use one of off, error, warn, info, debug, trace, or directives like \"info,prodhcp_worker=debug\""
            ),
        );
    }
    Ok(())
}

/// Letters, digits, `-` and `_` in dot separated labels of 1 to 63, 253 characters at most.
fn check_hostname(name: &str, field: FieldPath) -> Check<()> {
    let valid_label = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    let bare = name.strip_suffix('.').unwrap_or(name);
    if bare.is_empty() || bare.len() > 253 || !bare.split('.').all(valid_label) {
        return fail(
            field,
            format!("`{name}` is not a host name: use letters, digits and '-' in dot separated labels of 1 to 63 characters"),
        );
    }
    Ok(())
}

fn check_subnets_disjoint(subnets: &[Subnet]) -> Check<()> {
    let mut order: Vec<&Subnet> = subnets.iter().collect();
    order.sort_by_key(|s| (s.network.network(), s.index));
    let mut widest: Option<&Subnet> = None;
    for subnet in order {
        if let Some(previous) = widest {
            if subnet.network.network() <= previous.network.broadcast() {
                let (earlier, later) = if previous.index < subnet.index {
                    (previous, subnet)
                } else {
                    (subnet, previous)
                };
                return fail(
                    FieldPath::field("subnets").index(later.index).at("network"),
                    format!(
                        "{} overlaps subnets[{}].network ({})",
                        later.network, earlier.index, earlier.network
                    ),
                );
            }
        }
        if widest.is_none_or(|w| subnet.network.broadcast() > w.network.broadcast()) {
            widest = Some(subnet);
        }
    }
    Ok(())
}

fn check_pools_disjoint(subnets: &[Subnet]) -> Check<()> {
    let mut pools: Vec<(AddressRange, usize, usize)> = subnets
        .iter()
        .flat_map(|s| {
            s.pools
                .iter()
                .enumerate()
                .map(move |(j, p)| (*p, s.index, j))
        })
        .collect();
    pools.sort_by_key(|(p, i, j)| (p.first, *i, *j));
    let path = |i: usize, j: usize| FieldPath::field("subnets").index(i).at("pools").index(j);
    let mut reaching: Option<(AddressRange, usize, usize)> = None;
    for (pool, i, j) in pools {
        if let Some((other, oi, oj)) = reaching {
            if pool.overlaps(&other) {
                let ((a, ai, aj), (b, bi, bj)) = if (oi, oj) < (i, j) {
                    ((other, oi, oj), (pool, i, j))
                } else {
                    ((pool, i, j), (other, oi, oj))
                };
                return fail(
                    path(bi, bj),
                    format!("pool {b} overlaps {} ({a})", path(ai, aj)),
                );
            }
        }
        if reaching.is_none_or(|(r, _, _)| pool.last > r.last) {
            reaching = Some((pool, i, j));
        }
    }
    Ok(())
}

fn check_table_size(config: &Config) -> Check<()> {
    let limit = MAX_TABLE_ADDRESSES;
    let mut total = 0u64;
    for subnet in &config.subnets {
        for (j, pool) in subnet.pools.iter().enumerate() {
            total += pool.len();
            if total > limit {
                return fail(
                    FieldPath::field("subnets").index(subnet.index).at("pools").index(j),
                    format!(
                        "the pools up to this one hold {total} addresses; the lease table holds at most {limit} (2^26)"
                    ),
                );
            }
        }
    }
    let layout: Vec<TableRange> = config.table_layout();
    let slots: u64 = layout.iter().map(|t| t.range.len()).sum();
    if slots > limit {
        return fail(
            FieldPath::field("subnets"),
            format!(
                "the pools and the reserved addresses outside them need {slots} lease-table slots; the table holds at most {limit} (2^26)"
            ),
        );
    }
    if layout.len() > MAX_TABLE_RANGES {
        return fail(
            FieldPath::field("subnets"),
            format!(
                "the pools and the reserved addresses outside them form {} separate address runs; the lease table holds at most {MAX_TABLE_RANGES} (2^20): put reservations inside pools or next to each other",
                layout.len()
            ),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs() {
        assert_eq!(parse_mac("02:00:00:00:00:01").unwrap(), [2, 0, 0, 0, 0, 1]);
        assert_eq!(
            parse_mac("AA-bb-CC-dd-EE-ff").unwrap(),
            [0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff]
        );
        assert_eq!(parse_mac("0a").unwrap(), [0x0a]);
        assert_eq!(parse_mac(&vec!["01"; 16].join(":")).unwrap().len(), 16);
        for bad in [
            "",
            "02:00:00:00:00:1",
            "02:00:00:00:00:0g",
            "02:00-00:00:00:01",
            "0200.0000.0001",
            &vec!["01"; 17].join(":"),
            "02:00:00:00:00:01:",
        ] {
            assert!(parse_mac(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn paths_are_absolute() {
        assert!(check_absolute(Path::new("/var/lib/x"), FieldPath::field("a")).is_ok());
        assert!(check_absolute(Path::new("var/lib/x"), FieldPath::field("a")).is_err());
        assert!(check_absolute(Path::new(""), FieldPath::field("a")).is_err());
    }

    #[test]
    fn log_levels() {
        for good in [
            "info",
            "DEBUG",
            "warn,prodhcp_worker=trace",
            " info , mio=off",
        ] {
            assert!(
                check_log_level(good, FieldPath::field("l")).is_ok(),
                "{good}"
            );
        }
        for bad in ["", "verbose", "info,=debug", "a b=info", "info,"] {
            assert!(
                check_log_level(bad, FieldPath::field("l")).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn hostnames() {
        for good in ["host", "host-1.example.", "a_b.example"] {
            assert!(
                check_hostname(good, FieldPath::field("h")).is_ok(),
                "{good}"
            );
        }
        for bad in ["", ".", "a..b", "a b", &"x".repeat(64)] {
            assert!(check_hostname(bad, FieldPath::field("h")).is_err(), "{bad}");
        }
    }

    #[test]
    fn unicast() {
        for good in ["10.0.0.1", "198.18.0.2", "127.0.0.1"] {
            assert!(check_unicast(good.parse().unwrap(), FieldPath::field("r")).is_ok());
        }
        for bad in ["0.0.0.0", "255.255.255.255", "224.0.0.1", "240.0.0.1"] {
            assert!(check_unicast(bad.parse().unwrap(), FieldPath::field("r")).is_err());
        }
    }
}

//! Server configurations for the tests, rendered as the RON file `prodhcpd --config` reads.
//!
//! The field names follow the contract (`state_dir`, `control_socket`, `interfaces`,
//! `workers`, `listen_port`, `subnets`, `offer_hold`, `decline_quarantine`; per subnet
//! `network`, `pools`, `lease_time`, `renew_time`, `rebind_time`, `options`,
//! `reservations`, `relays`). Times are whole seconds. If the daemon's format changes, this
//! file is the one place to adapt.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// One subnet of the server configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetConfig {
    /// CIDR, e.g. `198.18.1.0/24`.
    pub network: String,
    /// Ranges `first-last`.
    pub pools: Vec<String>,
    /// Lease time (option 51), seconds.
    pub lease_time: u32,
    /// T1 (option 58), seconds.
    pub renew_time: u32,
    /// T2 (option 59), seconds.
    pub rebind_time: u32,
    /// Named options, e.g. `("routers", "198.18.1.1")`.
    pub options: Vec<(String, String)>,
    /// Reservations `(mac, address)`.
    pub reservations: Vec<(String, String)>,
    /// Relay addresses (giaddr) mapped to this subnet although outside it.
    pub relays: Vec<String>,
    /// ISC dhcpd's `authoritative` (NAK instead of silence for unknown clients/addresses).
    pub authoritative: bool,
}

impl SubnetConfig {
    /// A subnet with one pool, lease 3600 s (T1 1800, T2 3150), no options.
    pub fn new(network: &str, pool: &str) -> Self {
        Self {
            network: network.to_string(),
            pools: vec![pool.to_string()],
            lease_time: 3600,
            renew_time: 1800,
            rebind_time: 3150,
            options: Vec::new(),
            reservations: Vec::new(),
            relays: Vec::new(),
            authoritative: false,
        }
    }

    /// Sets `authoritative`.
    pub fn authoritative(mut self, on: bool) -> Self {
        self.authoritative = on;
        self
    }

    /// Adds a named option.
    pub fn option(mut self, name: &str, value: &str) -> Self {
        self.options.push((name.to_string(), value.to_string()));
        self
    }

    /// Adds a reservation.
    pub fn reserve(mut self, mac: &str, address: &str) -> Self {
        self.reservations
            .push((mac.to_string(), address.to_string()));
        self
    }

    /// Maps a relay address to this subnet.
    pub fn relay(mut self, addr: &str) -> Self {
        self.relays.push(addr.to_string());
        self
    }

    /// Sets lease, renew and rebind times.
    pub fn times(mut self, lease: u32, renew: u32, rebind: u32) -> Self {
        self.lease_time = lease;
        self.renew_time = renew;
        self.rebind_time = rebind;
        self
    }
}

/// The whole server configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Directory for the lease table.
    pub state_dir: PathBuf,
    /// Unix socket for prodhcpctl.
    pub control_socket: PathBuf,
    /// Interfaces to serve directly connected (broadcast) clients on.
    pub interfaces: Vec<String>,
    /// Worker processes (0 = one per core).
    pub workers: u32,
    /// UDP port the workers bind.
    pub listen_port: u16,
    /// Subnets.
    pub subnets: Vec<SubnetConfig>,
    /// How long an OFFER holds its address, seconds.
    pub offer_hold: u32,
    /// How long a declined address stays out of use, seconds.
    pub decline_quarantine: u32,
    /// More top-level fields, verbatim (`"ring_capacity: 1024"`).
    pub extra: Vec<String>,
    /// `durability` ("power" or "process"); the server's default when `None`.
    pub durability: Option<String>,
}

impl ServerConfig {
    /// A configuration whose state and socket live in `dir`, two workers, port 67.
    pub fn new(dir: &Path) -> Self {
        Self {
            state_dir: dir.join("state"),
            control_socket: dir.join("ctl.sock"),
            interfaces: Vec::new(),
            workers: 2,
            listen_port: 67,
            subnets: Vec::new(),
            offer_hold: 30,
            decline_quarantine: 600,
            extra: Vec::new(),
            durability: None,
        }
    }

    /// Adds a subnet.
    pub fn subnet(mut self, s: SubnetConfig) -> Self {
        self.subnets.push(s);
        self
    }

    /// Adds a top-level field, verbatim (`"ring_capacity: 1024"`).
    pub fn field(mut self, line: &str) -> Self {
        self.extra.push(line.to_string());
        self
    }

    /// Adds an interface to serve directly.
    pub fn interface(mut self, name: &str) -> Self {
        self.interfaces.push(name.to_string());
        self
    }

    /// Renders the RON text.
    pub fn to_ron(&self) -> String {
        let mut s = String::from("(\n");
        let _ = writeln!(
            s,
            "    state_dir: {},",
            quote(&self.state_dir.to_string_lossy())
        );
        let _ = writeln!(
            s,
            "    control_socket: {},",
            quote(&self.control_socket.to_string_lossy())
        );
        let _ = writeln!(s, "    interfaces: {},", list(&self.interfaces));
        let _ = writeln!(s, "    workers: {},", self.workers);
        let _ = writeln!(s, "    listen_port: {},", self.listen_port);
        let _ = writeln!(s, "    offer_hold: {},", self.offer_hold);
        let _ = writeln!(s, "    decline_quarantine: {},", self.decline_quarantine);
        for line in &self.extra {
            let _ = writeln!(s, "    {line},");
        }
        if let Some(user) = crate::test_user() {
            if !self
                .extra
                .iter()
                .any(|l| l.trim_start().starts_with("user:"))
            {
                let _ = writeln!(s, "    user: {},", quote(&user));
            }
        }
        if let Some(d) = &self.durability {
            let _ = writeln!(s, "    durability: {},", quote(d));
        }
        s.push_str("    subnets: [\n");
        for sub in &self.subnets {
            s.push_str("        (\n");
            let _ = writeln!(s, "            network: {},", quote(&sub.network));
            let _ = writeln!(s, "            pools: {},", list(&sub.pools));
            let _ = writeln!(s, "            lease_time: {},", sub.lease_time);
            let _ = writeln!(s, "            renew_time: {},", sub.renew_time);
            let _ = writeln!(s, "            rebind_time: {},", sub.rebind_time);
            let opts: Vec<String> = sub
                .options
                .iter()
                .map(|(k, v)| format!("{}: {}", quote(k), quote(v)))
                .collect();
            let _ = writeln!(s, "            options: {{{}}},", opts.join(", "));
            let res: Vec<String> = sub
                .reservations
                .iter()
                .map(|(m, a)| format!("(mac: {}, address: {})", quote(m), quote(a)))
                .collect();
            let _ = writeln!(s, "            reservations: [{}],", res.join(", "));
            let _ = writeln!(s, "            authoritative: {},", sub.authoritative);
            let _ = writeln!(s, "            relays: {},", list(&sub.relays));
            s.push_str("        ),\n");
        }
        s.push_str("    ],\n)\n");
        s
    }

    /// Writes the RON text to `path` (and creates the state directory).
    pub fn write(&self, path: &Path) {
        std::fs::create_dir_all(&self.state_dir)
            .unwrap_or_else(|e| panic!("create {}: {e}", self.state_dir.display()));
        std::fs::write(path, self.to_ron())
            .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }
}

fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            _ => out.push(c),
        }
    }
    out.push('"');
    out
}

fn list(items: &[String]) -> String {
    let q: Vec<String> = items.iter().map(|i| quote(i)).collect();
    format!("[{}]", q.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_contract_field() {
        let cfg = ServerConfig::new(Path::new("/tmp/x"))
            .interface("s0")
            .subnet(
                SubnetConfig::new("198.18.1.0/24", "198.18.1.100-198.18.1.199")
                    .option("routers", "198.18.1.1")
                    .reserve("02:00:00:00:00:01", "198.18.1.50")
                    .relay("198.18.0.2"),
            );
        let ron = cfg.to_ron();
        for needle in [
            "state_dir: \"/tmp/x/state\"",
            "control_socket: \"/tmp/x/ctl.sock\"",
            "interfaces: [\"s0\"]",
            "workers: 2",
            "listen_port: 67",
            "offer_hold: 30",
            "decline_quarantine: 600",
            "network: \"198.18.1.0/24\"",
            "pools: [\"198.18.1.100-198.18.1.199\"]",
            "options: {\"routers\": \"198.18.1.1\"}",
            "reservations: [(mac: \"02:00:00:00:00:01\", address: \"198.18.1.50\")]",
            "relays: [\"198.18.0.2\"]",
        ] {
            assert!(ron.contains(needle), "missing {needle} in\n{ron}");
        }
        assert_eq!(quote("a\"b\\"), "\"a\\\"b\\\\\"");
    }

    #[test]
    fn rendered_config_is_accepted_by_the_daemons_parser() {
        let cfg = ServerConfig::new(Path::new("/tmp/x"))
            .interface("s0")
            .subnet(
                SubnetConfig::new("198.18.1.0/24", "198.18.1.100-198.18.1.199")
                    .option("routers", "198.18.1.1")
                    .option("domain-name-servers", "198.18.0.53")
                    .reserve("02:00:00:00:00:01", "198.18.1.150"),
            )
            .subnet(
                SubnetConfig::new("198.19.0.0/16", "198.19.0.1-198.19.255.254").relay("198.18.0.3"),
            );
        if let Err(e) = prodhcp_config::parse(&cfg.to_ron()) {
            panic!("{e}\n{}", cfg.to_ron());
        }
    }
}

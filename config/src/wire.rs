//! The configuration file as serde reads it, before validation. Every struct denies unknown
//! fields; values with their own syntax (pools, MACs, client ids, option values) stay strings
//! here and are checked in [`crate::validate`], where errors can name the exact field.

use std::fmt;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use ipnet::Ipv4Net;
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::error::ConfigError;
use crate::path::FieldPath;

/// Default of `state_dir`.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/prodhcp";
/// Default of `control_socket`.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/prodhcp/control.sock";
/// Default of `decline_quarantine`, seconds.
pub const DEFAULT_DECLINE_QUARANTINE: u32 = 86_400;
/// Default of `offer_hold`, seconds.
pub const DEFAULT_OFFER_HOLD: u32 = 30;
/// Default of `log_level`.
pub const DEFAULT_LOG_LEVEL: &str = "info";
/// Default of `listen_port`.
pub const DEFAULT_LISTEN_PORT: u16 = 67;
/// Default of `ring_capacity`, records.
pub const DEFAULT_RING_CAPACITY: u32 = 65_536;
/// Default of `max_held_replies`, replies per worker.
pub(crate) const DEFAULT_MAX_HELD_REPLIES: u32 = 16_384;
/// Default of `scrub_interval`, seconds (one day).
pub(crate) const DEFAULT_SCRUB_INTERVAL: u32 = 86_400;
/// Default of a subnet's `lease_time`, seconds.
pub const DEFAULT_LEASE_TIME: u32 = 3_600;

fn default_state_dir() -> PathBuf {
    PathBuf::from(DEFAULT_STATE_DIR)
}
fn default_control_socket() -> PathBuf {
    PathBuf::from(DEFAULT_CONTROL_SOCKET)
}
fn default_decline_quarantine() -> u32 {
    DEFAULT_DECLINE_QUARANTINE
}
fn default_offer_hold() -> u32 {
    DEFAULT_OFFER_HOLD
}
fn default_log_level() -> String {
    DEFAULT_LOG_LEVEL.to_string()
}
fn default_listen_port() -> u16 {
    DEFAULT_LISTEN_PORT
}
fn default_ring_capacity() -> u32 {
    DEFAULT_RING_CAPACITY
}
fn default_max_held_replies() -> u32 {
    DEFAULT_MAX_HELD_REPLIES
}
fn default_scrub_interval() -> u32 {
    DEFAULT_SCRUB_INTERVAL
}
fn default_lease_time() -> u32 {
    DEFAULT_LEASE_TIME
}

/// The top level of the file.
#[derive(Debug, Deserialize)]
#[serde(rename = "Config", deny_unknown_fields)]
pub(crate) struct WireConfig {
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    #[serde(default = "default_control_socket")]
    pub control_socket: PathBuf,
    #[serde(default)]
    pub interfaces: Vec<String>,
    #[serde(default)]
    pub workers: u32,
    pub subnets: Vec<WireSubnet>,
    #[serde(default)]
    pub server_id: Option<Ipv4Addr>,
    #[serde(default = "default_decline_quarantine")]
    pub decline_quarantine: u32,
    #[serde(default = "default_offer_hold")]
    pub offer_hold: u32,
    #[serde(default = "default_log_level")]
    pub log_level: String,
    #[serde(default = "default_listen_port")]
    pub listen_port: u16,
    #[serde(default)]
    pub table_file: Option<PathBuf>,
    #[serde(default = "default_ring_capacity")]
    pub ring_capacity: u32,
    #[serde(default = "default_max_held_replies")]
    pub max_held_replies: u32,
    #[serde(default = "default_scrub_interval")]
    pub scrub_interval: u32,
    #[serde(default)]
    pub durability: Option<String>,
    #[serde(default)]
    pub cluster: Option<WireCluster>,
    #[serde(default)]
    pub audit: Option<WireAudit>,
    #[serde(default)]
    pub user: Option<String>,
    pub metrics_listen: Option<std::net::SocketAddr>,
    #[serde(default)]
    pub pool_alarms: Option<crate::alarms::WirePoolAlarms>,
}

fn default_spool_max_bytes() -> u64 {
    crate::audit::DEFAULT_SPOOL_MAX_BYTES
}

/// The `audit` section; targets stay strings here and are parsed in [`crate::audit`].
#[derive(Debug, Deserialize)]
#[serde(rename = "Audit", deny_unknown_fields)]
pub(crate) struct WireAudit {
    #[serde(default)]
    pub targets: Vec<String>,
    #[serde(default)]
    pub file: Option<PathBuf>,
    #[serde(default)]
    pub spool_dir: Option<PathBuf>,
    #[serde(default = "default_spool_max_bytes")]
    pub spool_max_bytes: u64,
    #[serde(default)]
    pub offers: bool,
    #[serde(default)]
    pub audit_strict: bool,
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
}

fn default_heartbeat_ms() -> u32 {
    crate::cluster::DEFAULT_HEARTBEAT_MS
}
fn default_dead_after_ms() -> u32 {
    crate::cluster::DEFAULT_DEAD_AFTER_MS
}

/// The `cluster` section.
#[derive(Debug, Deserialize)]
#[serde(rename = "Cluster", deny_unknown_fields)]
pub(crate) struct WireCluster {
    pub name: String,
    pub node: String,
    pub listen: String,
    pub peers: Vec<WirePeer>,
    pub key_file: PathBuf,
    #[serde(default)]
    pub service_address: Option<WireServiceAddress>,
    #[serde(default)]
    pub replication: Option<String>,
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u32,
    #[serde(default = "default_dead_after_ms")]
    pub dead_after_ms: u32,
}

/// One entry of `cluster.peers`.
#[derive(Debug, Deserialize)]
#[serde(rename = "Peer", deny_unknown_fields)]
pub(crate) struct WirePeer {
    pub node: String,
    pub address: String,
}

/// `cluster.service_address`.
#[derive(Debug, Deserialize)]
#[serde(rename = "ServiceAddress", deny_unknown_fields)]
pub(crate) struct WireServiceAddress {
    pub address: String,
    pub interface: String,
}

/// One entry of `subnets`.
#[derive(Debug, Deserialize)]
#[serde(rename = "Subnet", deny_unknown_fields)]
pub(crate) struct WireSubnet {
    pub network: Ipv4Net,
    #[serde(default)]
    pub pools: Vec<String>,
    #[serde(default = "default_lease_time")]
    pub lease_time: u32,
    #[serde(default)]
    pub renew_time: Option<u32>,
    #[serde(default)]
    pub rebind_time: Option<u32>,
    #[serde(default)]
    pub options: WireOptions,
    #[serde(default)]
    pub reservations: Vec<WireReservation>,
    #[serde(default)]
    pub relays: Vec<Ipv4Addr>,
    #[serde(default)]
    pub authoritative: bool,
    #[serde(default)]
    pub alarm_thresholds: Option<Vec<u8>>,
}

/// One entry of `reservations`.
#[derive(Debug, Deserialize)]
#[serde(rename = "Reservation", deny_unknown_fields)]
pub(crate) struct WireReservation {
    #[serde(default)]
    pub mac: Option<String>,
    #[serde(default)]
    pub client_id: Option<String>,
    pub address: Ipv4Addr,
    #[serde(default)]
    pub hostname: Option<String>,
}

/// The `options` map, in file order; a key given twice is an error.
#[derive(Debug, Default)]
pub(crate) struct WireOptions(pub Vec<(String, String)>);

impl<'de> Deserialize<'de> for WireOptions {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OptionsVisitor;

        impl<'de> Visitor<'de> for OptionsVisitor {
            type Value = WireOptions;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map from option name or code to a string value")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<WireOptions, A::Error> {
                let mut entries: Vec<(String, String)> = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    let value = map.next_value::<String>()?;
                    if entries.iter().any(|(k, _)| *k == key) {
                        return Err(de::Error::custom(format!("option `{key}` is given twice")));
                    }
                    entries.push((key, value));
                }
                Ok(WireOptions(entries))
            }
        }

        deserializer.deserialize_map(OptionsVisitor)
    }
}

/// ron's options for reading the file: `implicit_some` is on, so optional fields are written
/// plainly (`server_id: "198.18.0.10"`; `Some("198.18.0.10")` works too).
fn ron_options() -> ron::Options {
    ron::Options::default()
        .with_default_extension(ron::extensions::Extensions::IMPLICIT_SOME)
        .with_recursion_limit(crate::MAX_NESTING)
}

fn syntax_error(error: ron::error::SpannedError, field: Option<FieldPath>) -> ConfigError {
    ConfigError::Syntax {
        line: error.span.start.line,
        column: error.span.start.col,
        field: field.map(|f| f.to_string()),
        message: error.code.to_string(),
    }
}

/// Reads `text` into the wire form; errors carry ron's position and the field path.
pub(crate) fn read(text: &str) -> Result<WireConfig, ConfigError> {
    let mut deserializer = ron::Deserializer::from_str_with_options(text, &ron_options())
        .map_err(|e| syntax_error(e, None))?;
    let mut track = serde_path_to_error::Track::new();
    let result = WireConfig::deserialize(serde_path_to_error::Deserializer::new(
        &mut deserializer,
        &mut track,
    ));
    match result {
        Ok(wire) => {
            deserializer
                .end()
                .map_err(|e| syntax_error(deserializer.span_error(e), None))?;
            Ok(wire)
        }
        Err(e) => {
            let spanned = deserializer.span_error(e);
            Err(syntax_error(
                spanned,
                FieldPath::from_tracked(&track.path()),
            ))
        }
    }
}

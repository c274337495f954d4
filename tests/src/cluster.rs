//! Cluster labs shared by the HA system tests: appliances A (198.18.0.1), B (198.18.0.4) and C
//! (198.18.0.5) and a relay namespace (198.18.0.9, dhcpperf's relay 198.18.0.10) on one bridge,
//! the cluster key file, each appliance's configuration (the same `cluster` section except
//! `node`, `listen` and the interface) and starting one.

use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::config::{ServerConfig, SubnetConfig};
use crate::daemon::{Daemon, READY_TIMEOUT};
use crate::lab::Lab;

/// Appliance A's lab address (its syncd listens here).
pub const A_IP: &str = "198.18.0.1";
/// Appliance B's.
pub const B_IP: &str = "198.18.0.4";
/// Appliance C's (three-appliance tests).
pub const C_IP: &str = "198.18.0.5";
/// The relay agent's address in namespace `sr`.
pub const RELAY_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 9);
/// dhcpperf's relay address in namespace `sr`.
pub const LOAD_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
/// syncd's port.
pub const SYNCD_PORT: u16 = 647;

/// A lab with appliances A (`sa`, `a0`) and B (`sb`, `b0`) and the relay namespace `sr`
/// (`r0`, with [`RELAY_IP`] and [`LOAD_IP`]) on bridge `br0`.
pub fn pair_lab(tag: &str) -> Lab {
    let lab = Lab::new(tag);
    lab.add_bridge("br0");
    lab.add_namespace("sa");
    lab.connect("sa", "a0", "br0", Some(&format!("{A_IP}/15")));
    lab.add_namespace("sb");
    lab.connect("sb", "b0", "br0", Some(&format!("{B_IP}/15")));
    lab.add_namespace("sr");
    lab.connect("sr", "r0", "br0", Some(&format!("{RELAY_IP}/15")));
    lab.add_address("sr", "r0", &format!("{LOAD_IP}/15"));
    lab
}

/// Adds appliance C (`sc`, `c0`) to a [`pair_lab`].
pub fn add_third(lab: &Lab) {
    lab.add_namespace("sc");
    lab.connect("sc", "c0", "br0", Some(&format!("{C_IP}/15")));
}

/// Writes a cluster key of 64 × `digit` to the lab's `cluster.key` (mode 0600).
pub fn key_file(lab: &Lab, digit: char) -> PathBuf {
    let path = lab.path("cluster.key");
    std::fs::write(&path, format!("{}\n", digit.to_string().repeat(64))).expect("write key");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    crate::give_to_test_user(&path);
    path
}

/// Appliance `node`'s configuration (directory `lab/<node>`, serving 198.18.0.0/15 on
/// `ifname`) with a cluster of `nodes` (name, syncd address) and `extra` appended to the
/// `cluster` section (e.g. `service_address: ...`).
pub fn appliance(
    lab: &Lab,
    node: &str,
    ifname: &str,
    listen_ip: &str,
    key: &Path,
    nodes: &[(&str, &str)],
    extra: &str,
) -> ServerConfig {
    let dir = lab.path(node);
    std::fs::create_dir_all(&dir).expect("appliance dir");
    let peers: Vec<String> = nodes
        .iter()
        .map(|(n, ip)| format!("(node: \"{n}\", address: \"{ip}:{SYNCD_PORT}\")"))
        .collect();
    ServerConfig::new(&dir)
        .interface(ifname)
        .subnet(SubnetConfig::new(
            "198.18.0.0/15",
            "198.18.1.0-198.19.255.254",
        ))
        .field(&format!(
            "cluster: (name: \"pop1\", node: \"{node}\", listen: \"{listen_ip}:{SYNCD_PORT}\", \
             peers: [{}], key_file: \"{}\", replication: \"sync\"{extra})",
            peers.join(", "),
            key.display()
        ))
}

/// Writes `config` to `lab/<node>/prodhcp.ron` and starts prodhcpd in namespace `s<node>`;
/// panics with its stderr if it is not ready in time.
#[track_caller]
pub fn start<'l>(lab: &'l Lab, node: &str, config: &ServerConfig) -> Daemon<'l> {
    let path = lab.path(node).join("prodhcp.ron");
    config.write(&path);
    let d = Daemon::spawn(lab, &lab.ns(&format!("s{node}")), &path, config.clone());
    if let Err(why) = d.wait_ready(READY_TIMEOUT) {
        panic!(
            "prodhcpd {node} not ready: {why}\nstderr:\n{}",
            d.process().stderr()
        );
    }
    d
}

/// The sorted CSV rows of `d`'s lease export.
#[track_caller]
pub fn export_rows(d: &Daemon<'_>) -> Vec<String> {
    let out = d.ctl(&["leases", "export", "--format", "csv"]);
    assert!(out.status.success(), "export: {}", out.stderr);
    let mut rows: Vec<String> = out.stdout.lines().skip(1).map(str::to_string).collect();
    rows.sort();
    rows
}

//! System tests for prodhcp: network-namespace labs that run the real `prodhcpd`, real DHCP
//! clients, a real relay, perfdhcp, and a scripted client.
//!
//! - [`lab`]: RAII namespaces, bridges, veths, processes, scratch dir;
//! - [`cluster`]: the HA tests' appliances, key file and cluster configuration;
//! - [`topo`]: the standard topology (server, router/relay, load, clients);
//! - [`config`]: server configurations rendered as RON;
//! - [`daemon`]: prodhcpd and prodhcpctl;
//! - [`packet`] and [`client`]: the scripted DHCPv4 client;
//! - [`tools`]: dhclient, udhcpc, dhcpcd, dhcrelay, perfdhcp;
//! - [`rsyslog`]: a private rsyslog collector and the audit records it stored ([`rfc5424`]
//!   reads them), [`audit_check`] compares them with dhcpperf's record.
//!
//! Every test starts with [`preflight`]: without root or a needed program it fails with a
//! clear message, unless `PRODHCP_SKIP_SYSTEM_TESTS=1`, which skips with a printed reason.

pub mod audit_check;
pub mod capture;
pub mod client;
pub mod cluster;
pub mod config;
pub mod daemon;
pub mod lab;
pub mod packet;
pub mod rfc5424;
pub mod rsyslog;
pub mod tools;
pub mod topo;

use std::path::Path;

/// Environment variable that makes every system test skip (with a printed reason).
pub const SKIP_ENV: &str = "PRODHCP_SKIP_SYSTEM_TESTS";

/// Checks what test `test` needs: root (for namespaces), the programs in `programs` on
/// PATH, and the prodhcp binaries. Returns false when the test must be skipped
/// (`PRODHCP_SKIP_SYSTEM_TESTS=1`); panics with the reason when something is missing.
#[track_caller]
pub fn preflight(test: &str, programs: &[&str]) -> bool {
    if !preflight_lab(test, programs) {
        return false;
    }
    daemon::binary("prodhcpd");
    daemon::binary("prodhcpctl");
    true
}

/// The environment variable that runs the system tests under the privilege drop: with
/// `PRODHCP_TEST_USER=nobody`, every [`config::ServerConfig`] gets `user: "nobody"` (unless it
/// sets `user` itself), lab directories are made traversable and the cluster key is given to
/// that user, so any system test checks its area with prodhcpd dropped to that user.
pub const TEST_USER_ENV: &str = "PRODHCP_TEST_USER";

/// The user of [`TEST_USER_ENV`], when set.
pub fn test_user() -> Option<String> {
    std::env::var(TEST_USER_ENV).ok().filter(|u| !u.is_empty())
}

/// Gives `path` to the [`TEST_USER_ENV`] user when one is set (a cluster key it must read).
pub fn give_to_test_user(path: &std::path::Path) {
    if let Some(user) = test_user() {
        let u = nix::unistd::User::from_name(&user)
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("{TEST_USER_ENV}={user}: no such user"));
        std::os::unix::fs::chown(path, Some(u.uid.as_raw()), Some(u.gid.as_raw()))
            .unwrap_or_else(|e| panic!("chown {} to {user}: {e}", path.display()));
    }
}

/// Like [`preflight`] for lab tests that do not run prodhcp: root and `programs`, no binaries.
#[track_caller]
pub fn preflight_lab(test: &str, programs: &[&str]) -> bool {
    if std::env::var_os(SKIP_ENV).is_some_and(|v| v == "1") {
        eprintln!("SKIPPED {test}: {SKIP_ENV}=1");
        return false;
    }
    assert!(
        nix::unistd::geteuid().is_root(),
        "{test}: system tests need root (network namespaces, port 67); run them as root, \
         or set {SKIP_ENV}=1 to skip them"
    );
    for p in ["ip"].iter().chain(programs) {
        assert!(
            on_path(p),
            "{test}: `{p}` is not installed (or not on PATH); install it, or set {SKIP_ENV}=1 \
             to skip the system tests"
        );
    }
    true
}

/// Like [`preflight`] for tests that only run the binaries (no namespaces, no root).
#[track_caller]
pub fn preflight_binaries(test: &str) -> bool {
    if std::env::var_os(SKIP_ENV).is_some_and(|v| v == "1") {
        eprintln!("SKIPPED {test}: {SKIP_ENV}=1");
        return false;
    }
    daemon::binary("prodhcpd");
    daemon::binary("prodhcpctl");
    true
}

/// True if `program` is an executable file in a PATH directory (or the sbin directories,
/// which a non-login root shell may lack).
pub fn on_path(program: &str) -> bool {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .any(|dir| is_executable(&Path::new(dir).join(program)));
    found
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Milliseconds since the Unix epoch (the clock the daemon's `*_unix_ms` fields use).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `text` up to and including its last newline: the complete lines of a file another process
/// is still appending to (its last line may be half written).
pub fn complete_lines(text: &str) -> &str {
    text.rfind('\n').map_or("", |i| &text[..=i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_path_finds_sh_and_not_nonsense() {
        assert!(on_path("sh"));
        assert!(!on_path("definitely-not-a-program-xyz"));
    }
}

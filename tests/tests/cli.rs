//! `prodhcpd --check-config` exit codes and messages, and prodhcpctl against a daemon that
//! is not there. No namespaces needed.

use prodhcp_systests::config::{ServerConfig, SubnetConfig};
use prodhcp_systests::daemon::{check_config, ctl_at};
use prodhcp_systests::preflight_binaries;

fn good_config(dir: &std::path::Path) -> ServerConfig {
    ServerConfig::new(dir).subnet(
        SubnetConfig::new("198.18.1.0/24", "198.18.1.100-198.18.1.199")
            .option("routers", "198.18.1.1"),
    )
}

#[test]
fn check_config_accepts_a_good_file() {
    if !preflight_binaries("check_config_good") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("good.ron");
    good_config(dir.path()).write(&path);
    let out = check_config(&path);
    assert!(
        out.status.success(),
        "good config refused ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn check_config_names_the_line_or_field_of_an_error() {
    if !preflight_binaries("check_config_bad") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let good = good_config(dir.path()).to_ron();
    let cases: Vec<(&str, String, &str)> = vec![
        // A syntax error on line 3.
        ("syntax", good.replacen(",\n", ",\n    ]]]\n", 2), "line 3"),
        // An unknown field.
        (
            "unknown field",
            good.replace("workers:", "wrokers:"),
            "wrokers",
        ),
        // A pool outside its network.
        (
            "pool outside network",
            good.replace("198.18.1.100-198.18.1.199", "198.18.7.100-198.18.7.199"),
            "pools",
        ),
        // A bad option value.
        (
            "bad option",
            good.replace("\"198.18.1.1\"", "\"not-an-ip\""),
            "routers",
        ),
    ];
    for (what, text, needle) in cases {
        let path = dir.path().join("bad.ron");
        std::fs::write(&path, &text).expect("write");
        let out = check_config(&path);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{what}: exit {} stderr {stderr}\n{text}",
            out.status
        );
        assert!(
            stderr.contains(needle),
            "{what}: stderr does not mention {needle:?}: {stderr}"
        );
    }
}

#[test]
fn prodhcpctl_without_a_daemon_exits_3_with_a_clear_message() {
    if !preflight_binaries("ctl_missing_socket") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("nobody-here.sock");
    let out = ctl_at(&sock, &["status"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "stdout {} stderr {}",
        out.stdout,
        out.stderr
    );
    assert!(
        out.stderr.contains(&sock.display().to_string())
            || out.stderr.to_lowercase().contains("socket"),
        "the message should name the socket: {}",
        out.stderr
    );
}

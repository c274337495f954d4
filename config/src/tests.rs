//! Tests of the whole pipeline: text in, [`Config`] or [`ConfigError`] out.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use proptest::prelude::*;

use super::*;

const EXAMPLE: &str = include_str!("../../etc/prodhcp.ron");

/// The example from the design brief.
const MINIMAL: &str = r#"(
    state_dir: "/var/lib/prodhcp",
    control_socket: "/run/prodhcp/control.sock",
    interfaces: ["eth0"],
    workers: 0,
    subnets: [
        (
            network: "10.0.0.0/8",
            pools: ["10.0.0.100-10.255.255.250"],
            lease_time: 3600,
            options: { "routers": "10.0.0.1", "domain-name-servers": "192.0.2.53" },
            reservations: [(mac: "02:00:00:00:00:01", address: "10.0.0.5")],
        ),
    ],
)
"#;

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn range(first: &str, last: &str) -> AddressRange {
    AddressRange::new(ip(first), ip(last)).unwrap()
}

/// A config with `top` added to the top level and `subnets` as the subnets list body.
fn config_text(top: &str, subnets: &str) -> String {
    format!(
        "(\n    state_dir: \"/var/lib/prodhcp\",\n{top}\n    subnets: [\n{subnets}\n    ],\n)\n"
    )
}

/// One subnet 10.0.0.0/24 with `extra` fields.
fn subnet(extra: &str) -> String {
    format!("        (\n            network: \"10.0.0.0/24\",\n{extra}\n        ),")
}

fn ok(text: &str) -> Config {
    match parse(text) {
        Ok(config) => config,
        Err(e) => panic!("expected a valid config, got: {e}\n{text}"),
    }
}

/// Parses `text`, expecting an error about `field` whose message contains `needle`, and
/// pointing at a line.
#[track_caller]
fn rejects(text: &str, field: &str, needle: &str) -> ConfigError {
    let err = match parse(text) {
        Ok(_) => panic!("expected an error about {field}\n{text}"),
        Err(e) => e,
    };
    assert_eq!(err.field(), Some(field), "wrong field in: {err}\n{text}");
    assert!(err.to_string().contains(needle), "`{needle}` not in: {err}");
    assert!(err.line().is_some(), "no line in: {err}");
    err
}

/// The 1-based line of the first occurrence of `needle` in `text`.
fn line_of(text: &str, needle: &str) -> usize {
    let offset = text.find(needle).unwrap();
    1 + text[..offset].matches('\n').count()
}

#[test]
fn example_file_parses() {
    let config = ok(EXAMPLE);
    assert_eq!(config.subnets.len(), 2);
    assert_eq!(config.server_id, Some(ip("198.18.0.10")));
    assert_eq!(config.interfaces, ["eth1"]);
    let carrier = &config.subnets[0];
    assert_eq!(carrier.network.to_string(), "10.0.0.0/8");
    assert_eq!(carrier.relays, [ip("198.18.0.2"), ip("198.18.0.3")]);
    assert_eq!(carrier.options.get(224), Some(&[0, 0, 0, 7][..]));
    assert_eq!(carrier.options.get(1), Some(&[255, 0, 0, 0][..]));
    assert_eq!(carrier.options.get(28), Some(&[10, 255, 255, 255][..]));
    assert_eq!(carrier.reservations.len(), 3);
    assert_eq!(
        carrier.reservations[1].client_id.as_deref(),
        Some(&[1, 2, 0, 0, 0, 0, 2][..])
    );
    let direct = &config.subnets[1];
    assert_eq!(direct.renew_time, 1800);
    assert_eq!(direct.rebind_time, 3150);
    assert_eq!(
        direct.options.get(252),
        Some(&b"http://wpad.lab.example/wpad.dat"[..])
    );
    // 10.0.0.5 and .6 lie outside the pools and get their own slots
    let ranges = config.table_ranges();
    assert_eq!(ranges[0], range("10.0.0.5", "10.0.0.6"));
    assert!(config.table_size() < MAX_TABLE_ADDRESSES);
}

#[test]
fn example_file_loads_from_disk() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../etc/prodhcp.ron");
    assert_eq!(load(&path).unwrap(), ok(EXAMPLE));
}

#[test]
fn minimal_config_gets_defaults() {
    let config = ok(MINIMAL);
    assert_eq!(config.workers, 0);
    assert!(config.effective_workers() >= 1);
    assert!(config.effective_workers() <= MAX_WORKERS);
    assert_eq!(config.decline_quarantine, 86_400);
    assert_eq!(config.offer_hold, 30);
    assert_eq!(config.log_level, "info");
    assert_eq!(config.listen_port, 67);
    assert_eq!(config.ring_capacity, 65_536);
    assert_eq!(config.max_held_replies, 16_384);
    assert_eq!(config.scrub_interval, 86_400);
    assert_eq!(config.durability, crate::Durability::Power);
    assert_eq!(config.server_id, None);
    assert_eq!(
        config.table_file,
        PathBuf::from("/var/lib/prodhcp/leases.table")
    );
    let s = &config.subnets[0];
    assert_eq!(s.index, 0);
    assert_eq!(
        (s.lease_time, s.renew_time, s.rebind_time),
        (3600, 1800, 3150)
    );
    assert_eq!(s.pools, [range("10.0.0.100", "10.255.255.250")]);
    assert_eq!(s.options.get(3), Some(&[10, 0, 0, 1][..]));
    assert_eq!(s.options.get(6), Some(&[192, 0, 2, 53][..]));
    let codes: Vec<u8> = s.options.iter().map(|(c, _)| c).collect();
    assert_eq!(codes, [1, 3, 6, 28]);
    assert_eq!(
        s.reservations,
        [Reservation {
            mac: Some(vec![2, 0, 0, 0, 0, 1]),
            client_id: None,
            address: ip("10.0.0.5"),
            hostname: None,
        }]
    );
}

#[test]
fn only_subnets_is_required() {
    let config = ok("(subnets: [(network: \"10.0.0.0/24\")])");
    assert_eq!(config.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
    assert_eq!(config.control_socket, PathBuf::from(DEFAULT_CONTROL_SOCKET));
    assert!(config.interfaces.is_empty());
    assert!(config.subnets[0].pools.is_empty());
    assert_eq!(config.subnets[0].lease_time, DEFAULT_LEASE_TIME);
    let err = parse("(state_dir: \"/x\")").unwrap_err();
    assert!(
        err.to_string().contains("missing field named `subnets`"),
        "{err}"
    );
    assert_eq!(err.line(), Some(1));
}

#[test]
fn optional_fields_take_plain_or_some() {
    for form in ["\"198.18.0.10\"", "Some(\"198.18.0.10\")"] {
        let text = config_text(&format!("    server_id: {form},"), &subnet(""));
        assert_eq!(ok(&text).server_id, Some(ip("198.18.0.10")));
    }
    let text = config_text("    server_id: None,", &subnet(""));
    assert_eq!(ok(&text).server_id, None);
    let text = config_text(
        "    table_file: \"/srv/t.table\", decline_quarantine: 60, offer_hold: 5, \
         log_level: \"debug\", listen_port: 6767, ring_capacity: 1024, workers: 4,",
        &subnet("renew_time: 100, rebind_time: 200, lease_time: 300,"),
    );
    let c = ok(&text);
    assert_eq!(c.table_file, PathBuf::from("/srv/t.table"));
    assert_eq!((c.decline_quarantine, c.offer_hold), (60, 5));
    assert_eq!((c.listen_port, c.ring_capacity, c.workers), (6767, 1024, 4));
    assert_eq!(c.effective_workers(), 4);
    assert_eq!(c.log_level, "debug");
    let s = &c.subnets[0];
    assert_eq!((s.lease_time, s.renew_time, s.rebind_time), (300, 100, 200));
    for (text, want) in [
        ("    durability: \"process\",", crate::Durability::Process),
        ("    durability: \"power\",", crate::Durability::Power),
    ] {
        assert_eq!(ok(&config_text(text, &subnet(""))).durability, want);
    }
}

// ---- errors from the first stage carry ron's line and the serde path ----

#[test]
fn syntax_errors_name_line_and_field() {
    let text = config_text("", &subnet("            lease_tim: 60,"));
    let err = rejects(&text, "subnets[0].lease_tim", "expected one of `network`");
    assert_eq!(err.line(), Some(line_of(&text, "lease_tim")));
    assert!(err.to_string().starts_with(&format!(
        "line {}, column 13: field `subnets[0].lease_tim`: Unexpected field named `lease_tim` in `Subnet`",
        line_of(&text, "lease_tim")
    )));

    let text = config_text("    workers: \"two\",", &subnet(""));
    let err = rejects(&text, "workers", "");
    assert_eq!(err.line(), Some(line_of(&text, "\"two\"")));

    let text = config_text(
        "",
        &subnet(
            "            reservations: [(mac: \"02:00:00:00:00:01\", address: \"10.0.0.300\")],",
        ),
    );
    let err = rejects(&text, "subnets[0].reservations[0].address", "IPv4");
    assert_eq!(err.line(), Some(line_of(&text, "10.0.0.300")));

    let text = config_text("", "        (network: \"10.0.0.0/33\"),");
    rejects(&text, "subnets[0].network", "");

    let text = config_text("    server_id: 198.18.0.10,", &subnet(""));
    rejects(&text, "server_id", "");

    let text = config_text(
        "",
        &subnet("            options: { \"routers\": \"10.0.0.1\", \"routers\": \"10.0.0.2\" },"),
    );
    rejects(&text, "subnets[0].options", "given twice");

    let text = config_text(
        "",
        &subnet("            options: { \"routers\": [\"10.0.0.1\"] },"),
    );
    rejects(&text, "subnets[0].options[\"routers\"]", "");

    // an error between entries has no field, never a placeholder
    let text = config_text("    offer_hold: 30.5,", &subnet(""));
    let err = parse(&text).unwrap_err();
    assert_eq!(err.line(), Some(3));
    assert!(!err.to_string().contains('?'), "{err}");

    let err = parse("(subnets: [(network: \"10.0.0.0/24\")]) trailing").unwrap_err();
    assert_eq!(err.line(), Some(1));
    let err = parse("(subnets: [(network: \"10.0.0.0/24\")").unwrap_err();
    assert!(err.line().is_some(), "{err}");
}

// ---- hostile input ----

#[test]
fn nul_bytes_are_refused_with_position() {
    let text = config_text("    log_level: \"in\0fo\",", &subnet(""));
    let err = parse(&text).unwrap_err();
    assert!(err.to_string().contains("NUL"), "{err}");
    assert_eq!(err.line(), Some(line_of(&text, "log_level")));
    assert_eq!(err.column(), Some(19));
}

#[test]
fn oversized_text_is_refused_before_parsing() {
    assert_eq!(MAX_FILE_SIZE, 256 << 20);
    let mut text = config_text("", &subnet(""));
    text.push_str(&" ".repeat(MAX_FILE_SIZE as usize));
    let err = parse(&text).unwrap_err();
    assert!(matches!(err, ConfigError::TooLarge { .. }), "{err}");
    assert!(err.to_string().contains("256 MiB"), "{err}");
    drop(text);

    // A file over the limit is refused by its size, before any of it is read (a sparse file:
    // no 256 MiB written to disk).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.ron");
    let file = std::fs::File::create(&path).unwrap();
    file.set_len(MAX_FILE_SIZE + 1).unwrap();
    let err = load(&path).unwrap_err();
    assert!(err.to_string().contains("big.ron"), "{err}");
    assert!(
        err.to_string().contains(&format!(
            "{} bytes; at most {MAX_FILE_SIZE} bytes (256 MiB)",
            MAX_FILE_SIZE + 1
        )),
        "{err}"
    );
}

/// The old 16 MiB limit refused carrier configurations (100,000 subnets are about 20 MB): a
/// file of many subnets and a comment, together just over 16 MiB, loads, and every subnet is
/// in it.
#[test]
fn a_file_just_over_16_mib_loads() {
    let n: u32 = 2_000;
    let mut subnets = String::new();
    for i in 0..n {
        let net = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 0, 0)) + i * 64);
        let first = Ipv4Addr::from(u32::from(net) + 10);
        let last = Ipv4Addr::from(u32::from(net) + 61);
        subnets.push_str(&format!(
            "        (network: \"{net}/26\", pools: [\"{first}-{last}\"], lease_time: 3600),\n"
        ));
    }
    let mut text = config_text("", &subnets);
    let padding = (16usize << 20) + 1 - text.len();
    text.push_str("// ");
    text.push_str(&"x".repeat(padding));
    text.push('\n');
    assert!(text.len() > 16 << 20);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("carrier.ron");
    std::fs::write(&path, &text).unwrap();
    let config = match load(&path) {
        Ok(c) => c,
        Err(e) => panic!("a {} byte file must load: {e}", text.len()),
    };
    assert_eq!(config.subnets.len(), n as usize);
    assert_eq!(config.table_size(), u64::from(n) * 52);
}

#[test]
fn deep_nesting_is_refused_without_recursion() {
    let deep = |open: &str, close: &str| {
        format!("(subnets: {}{})", open.repeat(10_000), close.repeat(10_000))
    };
    for (open, close) in [("[", "]"), ("(", ")"), ("{", "}"), ("Some(", ")")] {
        let text = deep(open, close);
        let err = parse(&text).unwrap_err();
        assert!(err.to_string().contains("nest"), "{err}");
        assert_eq!(err.line(), Some(1));
        // ron alone, without the pre-scan, also stops (typed schema, recursion limit)
        assert!(wire::read(&text).is_err());
    }
    // brackets inside strings and comments do not count
    let text = format!(
        "// {}\n(subnets: [(network: \"10.0.0.0/24\", options: {{ \"252\": \"str:{}\" }})])",
        "[".repeat(200),
        "(".repeat(200)
    );
    ok(&text);
}

#[test]
fn invalid_utf8_is_refused_with_position() {
    let mut bytes = b"(subnets: [\n  (network: \"10.0.0.0/24\"".to_vec();
    bytes.extend_from_slice(&[0xff, 0xfe]);
    let err = parse_bytes(&bytes).unwrap_err();
    assert!(err.to_string().contains("UTF-8"), "{err}");
    assert_eq!(err.line(), Some(2));
}

#[test]
fn load_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("prodhcp.ron");
    std::fs::write(&path, config_text("    workers: 65,", &subnet(""))).unwrap();
    let err = load(&path).unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with(&path.display().to_string()), "{text}");
    assert!(text.contains("field `workers`"), "{text}");
    assert_eq!(err.line(), Some(3));
    let missing = load(&dir.path().join("missing.ron")).unwrap_err();
    assert!(matches!(missing, ConfigError::Read { .. }));
    assert!(missing.to_string().contains("missing.ron"));
}

// ---- top-level rules ----

#[test]
fn top_level_rules() {
    let s = subnet("");
    let cases: &[(&str, &str, &str)] = &[
        ("workers: 65,", "workers", "at most 64"),
        ("server_id: \"224.0.0.1\",", "server_id", "unicast"),
        ("server_id: \"0.0.0.0\",", "server_id", "unicast"),
        (
            "decline_quarantine: 0,",
            "decline_quarantine",
            "out of range",
        ),
        (
            "decline_quarantine: 4000000000,",
            "decline_quarantine",
            "out of range",
        ),
        ("offer_hold: 0,", "offer_hold", "out of range"),
        ("offer_hold: 3601,", "offer_hold", "1 to 3600"),
        ("log_level: \"loud\",", "log_level", "not a log level"),
        ("listen_port: 0,", "listen_port", "1..=65535"),
        ("ring_capacity: 1000,", "ring_capacity", "power of two"),
        ("ring_capacity: 512,", "ring_capacity", "power of two"),
        ("ring_capacity: 33554432,", "ring_capacity", "power of two"),
        ("max_held_replies: 0,", "max_held_replies", "between 1 and"),
        (
            "max_held_replies: 1048577,",
            "max_held_replies",
            "between 1 and",
        ),
        (
            "scrub_interval: 315360001,",
            "scrub_interval",
            "out of range",
        ),
        (
            "durability: \"disk\",",
            "durability",
            "not \"power\" or \"process\"",
        ),
        (
            "control_socket: \"run/x.sock\",",
            "control_socket",
            "absolute",
        ),
        ("table_file: \"leases.table\",", "table_file", "absolute"),
        (
            "interfaces: [\"eth0\", \"eth0\"],",
            "interfaces[1]",
            "already listed",
        ),
        (
            "interfaces: [\"a-very-long-name0\"],",
            "interfaces[0]",
            "1 to 15 bytes",
        ),
        ("interfaces: [\"\"],", "interfaces[0]", "1 to 15 bytes"),
        ("interfaces: [\"eth/0\"],", "interfaces[0]", "'/'"),
        ("interfaces: [\"eth0:1\"],", "interfaces[0]", "':'"),
        ("interfaces: [\"..\"],", "interfaces[0]", "not an interface"),
    ];
    for (top, field, needle) in cases {
        let text = config_text(&format!("    {top}"), &s);
        let err = rejects(&text, field, needle);
        assert_eq!(err.line(), Some(3), "{err}");
    }
    let long_socket = format!("    control_socket: \"/{}\",", "s".repeat(107));
    rejects(&config_text(&long_socket, &s), "control_socket", "107");
    let relative_state = "(state_dir: \"state\", subnets: [(network: \"10.0.0.0/24\")])";
    rejects(relative_state, "state_dir", "absolute");
    rejects("(subnets: [])", "subnets", "at least one subnet");
    ok(&config_text(
        "    workers: 64, ring_capacity: 16777216,",
        &s,
    ));
}

// ---- subnet rules ----

#[test]
fn network_must_not_have_host_bits() {
    let text = config_text("", "        (network: \"10.0.0.1/8\"),");
    rejects(&text, "subnets[0].network", "the network is 10.0.0.0/8");
    ok(&config_text("", "        (network: \"0.0.0.0/0\"),"));
    ok(&config_text(
        "",
        "        (network: \"10.0.0.7/32\", pools: [\"10.0.0.7-10.0.0.7\"]),",
    ));
}

#[test]
fn subnets_must_not_overlap() {
    let text = config_text(
        "",
        "        (network: \"10.0.0.0/8\"),\n        (network: \"192.0.2.0/24\"),\n        (network: \"10.20.0.0/16\"),",
    );
    let err = rejects(
        &text,
        "subnets[2].network",
        "overlaps subnets[0].network (10.0.0.0/8)",
    );
    assert_eq!(err.line(), Some(line_of(&text, "10.20.0.0/16")));
    // reported on the later subnet even when the earlier one is the narrower
    let text = config_text(
        "",
        "        (network: \"10.20.0.0/16\"),\n        (network: \"10.0.0.0/8\"),",
    );
    rejects(&text, "subnets[1].network", "overlaps subnets[0].network");
    let text = config_text(
        "",
        "        (network: \"10.0.0.0/24\"),\n        (network: \"10.0.0.0/24\"),",
    );
    rejects(&text, "subnets[1].network", "overlaps");
}

#[test]
fn pool_rules() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "pools: [\"10.0.0.10\"],",
            "subnets[0].pools[0]",
            "first-last",
        ),
        (
            "pools: [\"10.0.0.10-10.0.0.x\"],",
            "subnets[0].pools[0]",
            "not an IPv4 address",
        ),
        (
            "pools: [\"10.0.0.20-10.0.0.10\"],",
            "subnets[0].pools[0]",
            "is above the last",
        ),
        (
            "pools: [\"10.0.0.10-10.0.1.10\"],",
            "subnets[0].pools[0]",
            "not inside the subnet's network",
        ),
        (
            "pools: [\"9.255.255.255-10.0.0.10\"],",
            "subnets[0].pools[0]",
            "not inside",
        ),
        (
            "pools: [\"10.0.0.0-10.0.0.10\"],",
            "subnets[0].pools[0]",
            "network address",
        ),
        (
            "pools: [\"10.0.0.10-10.0.0.255\"],",
            "subnets[0].pools[0]",
            "broadcast address",
        ),
        (
            "pools: [\"10.0.0.10-10.0.0.20\", \"10.0.0.30-10.0.0.40\", \"10.0.0.20-10.0.0.25\"],",
            "subnets[0].pools[2]",
            "overlaps subnets[0].pools[0] (10.0.0.10-10.0.0.20)",
        ),
        (
            "pools: [\"10.0.0.50-10.0.0.60\", \"10.0.0.10-10.0.0.200\"],",
            "subnets[0].pools[1]",
            "overlaps subnets[0].pools[0]",
        ),
    ];
    for (extra, field, needle) in cases {
        let text = config_text("", &subnet(&format!("            {extra}")));
        let err = rejects(&text, field, needle);
        assert_eq!(err.line(), Some(line_of(&text, "pools")), "{err}");
    }
    // the error names the exact line of a pool on its own line
    let text = config_text(
        "",
        &subnet("            pools: [\n                \"10.0.0.10-10.0.0.20\",\n                \"10.0.0.15-10.0.0.16\",\n            ],"),
    );
    let err = rejects(&text, "subnets[0].pools[1]", "overlaps");
    assert_eq!(err.line(), Some(line_of(&text, "10.0.0.15")));
    assert_eq!(err.column(), Some(17));
    assert!(err.to_string().starts_with(&format!(
        "line {}, column 17: field `subnets[0].pools[1]`: pool 10.0.0.15-10.0.0.16 overlaps",
        line_of(&text, "10.0.0.15")
    )));
    // /31: both addresses are usable
    ok(&config_text(
        "",
        "        (network: \"10.0.0.0/31\", pools: [\"10.0.0.0-10.0.0.1\"]),",
    ));
}

#[test]
fn table_limit_is_enforced() {
    let exactly = config_text(
        "",
        "        (network: \"64.0.0.0/2\", pools: [\"64.0.0.1-68.0.0.0\"]),",
    );
    let config = ok(&exactly);
    assert_eq!(config.table_size(), MAX_TABLE_ADDRESSES);
    let over = config_text(
        "",
        "        (network: \"64.0.0.0/2\", pools: [\"64.0.0.1-68.0.0.0\"]),\n        (network: \"10.0.0.0/24\", pools: [\"10.0.0.1-10.0.0.1\"]),",
    );
    rejects(&over, "subnets[1].pools[0]", "2^26");
    // a /0 pool is far over
    let huge = config_text(
        "",
        "        (network: \"0.0.0.0/0\", pools: [\"0.0.0.1-255.255.255.254\"]),",
    );
    rejects(&huge, "subnets[0].pools[0]", "at most 67108864 (2^26)");
    // a reservation outside the pools needs a slot too
    let with_reservation = config_text(
        "",
        "        (network: \"64.0.0.0/2\", pools: [\"64.0.0.1-68.0.0.0\"], reservations: [(mac: \"02:00:00:00:00:01\", address: \"100.0.0.1\")]),",
    );
    rejects(&with_reservation, "subnets", "lease-table slots");
}

#[test]
fn lease_time_rules() {
    let cases: &[(&str, &str, &str)] = &[
        ("lease_time: 0,", "subnets[0].lease_time", "out of range"),
        (
            "lease_time: 315360001,",
            "subnets[0].lease_time",
            "315360000",
        ),
        (
            "lease_time: 4294967295,",
            "subnets[0].lease_time",
            "infinite leases",
        ),
        (
            "lease_time: 100, renew_time: 0,",
            "subnets[0].renew_time",
            "at least 1",
        ),
        (
            "lease_time: 100, rebind_time: 0,",
            "subnets[0].rebind_time",
            "at least 1",
        ),
        (
            "lease_time: 100, rebind_time: 101,",
            "subnets[0].rebind_time",
            "must not exceed lease_time",
        ),
        (
            "lease_time: 100, renew_time: 90, rebind_time: 80,",
            "subnets[0].renew_time",
            "renew_time (90 s) must not exceed rebind_time (80 s)",
        ),
        (
            "lease_time: 100, renew_time: 90,",
            "subnets[0].renew_time",
            "the default rebind_time",
        ),
        (
            "lease_time: 100, rebind_time: 40,",
            "subnets[0].rebind_time",
            "the default renew_time",
        ),
    ];
    for (extra, field, needle) in cases {
        let text = config_text("", &subnet(&format!("            {extra}")));
        rejects(&text, field, needle);
    }
    ok(&config_text(
        "",
        &subnet("            lease_time: 315360000,"),
    ));
    let c = ok(&config_text("", &subnet("            lease_time: 1,")));
    assert_eq!((c.subnets[0].renew_time, c.subnets[0].rebind_time), (0, 0));
}

#[test]
fn reservation_rules() {
    let r = |body: &str| {
        config_text(
            "",
            &subnet(&format!(
                "            pools: [\"10.0.0.100-10.0.0.200\"], reservations: [{body}],"
            )),
        )
    };
    let cases: &[(&str, &str, &str)] = &[
        ("(address: \"10.0.0.5\")", "subnets[0].reservations[0]", "needs `mac`, `client_id`, or both"),
        ("(mac: \"02:00:00:00:00:01\", address: \"10.0.1.5\")", "subnets[0].reservations[0].address", "not inside the subnet's network"),
        ("(mac: \"02:00:00:00:00:01\", address: \"10.0.0.0\")", "subnets[0].reservations[0].address", "network or broadcast"),
        ("(mac: \"02:00:00:00:00:01\", address: \"10.0.0.255\")", "subnets[0].reservations[0].address", "network or broadcast"),
        ("(mac: \"02:00:00:00:00:1\", address: \"10.0.0.5\")", "subnets[0].reservations[0].mac", "not a MAC address"),
        ("(mac: \"01:01:01:01:01:01:01:01:01:01:01:01:01:01:01:01:01\", address: \"10.0.0.5\")", "subnets[0].reservations[0].mac", "1 to 16 octets"),
        ("(client_id: \"\", address: \"10.0.0.5\")", "subnets[0].reservations[0].client_id", "1 to 255 bytes"),
        ("(client_id: \"010\", address: \"10.0.0.5\")", "subnets[0].reservations[0].client_id", "not hex"),
        ("(mac: \"02:00:00:00:00:01\", address: \"10.0.0.5\", hostname: \"bad name\")", "subnets[0].reservations[0].hostname", "not a host name"),
        (
            "(mac: \"02:00:00:00:00:01\", address: \"10.0.0.5\"), (mac: \"02:00:00:00:00:01\", address: \"10.0.0.6\")",
            "subnets[0].reservations[1].mac",
            "already reserved at subnets[0].reservations[0].mac",
        ),
        (
            "(client_id: \"01:02\", address: \"10.0.0.5\"), (client_id: \"0102\", address: \"10.0.0.6\")",
            "subnets[0].reservations[1].client_id",
            "already reserved",
        ),
        (
            "(mac: \"02:00:00:00:00:01\", address: \"10.0.0.5\"), (mac: \"02:00:00:00:00:02\", address: \"10.0.0.5\")",
            "subnets[0].reservations[1].address",
            "10.0.0.5 is already reserved",
        ),
        ("(mac: \"02:00:00:00:00:01\", adress: \"10.0.0.5\")", "subnets[0].reservations[0].adress", "Unexpected field"),
    ];
    for (body, field, needle) in cases {
        rejects(&r(body), field, needle);
    }
    // a duplicate MAC in another subnet is refused too
    let text = config_text(
        "",
        "        (network: \"10.0.0.0/24\", reservations: [(mac: \"02:00:00:00:00:01\", address: \"10.0.0.5\")]),\n        (network: \"10.0.1.0/24\", reservations: [(mac: \"02-00-00-00-00-01\", address: \"10.0.1.5\")]),",
    );
    let err = rejects(
        &text,
        "subnets[1].reservations[0].mac",
        "subnets[0].reservations[0].mac",
    );
    assert_eq!(err.line(), Some(line_of(&text, "02-00")));
    // both identifiers, a hostname, /31 edges
    let c = ok(&r("(mac: \"02:00:00:00:00:01\", client_id: \"ff0001\", address: \"10.0.0.150\", hostname: \"cpe-1.example\")"));
    let res = &c.subnets[0].reservations[0];
    assert_eq!(res.client_id.as_deref(), Some(&[0xff, 0, 1][..]));
    assert_eq!(res.hostname.as_deref(), Some("cpe-1.example"));
    ok(&config_text("", "        (network: \"10.0.0.0/31\", reservations: [(mac: \"02:00:00:00:00:01\", address: \"10.0.0.0\")]),"));
}

#[test]
fn relay_rules() {
    let text = config_text(
        "",
        &subnet("            relays: [\"198.18.0.2\", \"255.255.255.255\"],"),
    );
    rejects(&text, "subnets[0].relays[1]", "not a unicast address");
    let text = config_text("", &subnet("            relays: [\"0.0.0.0\"],"));
    rejects(&text, "subnets[0].relays[0]", "unicast");
    let text = config_text(
        "",
        "        (network: \"10.0.0.0/24\", relays: [\"198.18.0.2\"]),\n        (network: \"10.0.1.0/24\", relays: [\"198.18.0.2\"]),",
    );
    rejects(
        &text,
        "subnets[1].relays[0]",
        "already listed at subnets[0].relays[0]",
    );
}

#[test]
fn option_rules() {
    let o = |body: &str| config_text("", &subnet(&format!("            options: {{ {body} }},")));
    let cases: &[(&str, &str, &str)] = &[
        (
            "\"rooters\": \"10.0.0.1\"",
            "subnets[0].options[\"rooters\"]",
            "unknown option name",
        ),
        (
            "\"51\": \"u32:600\"",
            "subnets[0].options[\"51\"]",
            "lease_time",
        ),
        (
            "\"dhcp-server-identifier\": \"10.0.0.1\"",
            "subnets[0].options[\"dhcp-server-identifier\"]",
            "server_id",
        ),
        (
            "\"82\": \"hex:01\"",
            "subnets[0].options[\"82\"]",
            "cannot be configured",
        ),
        ("\"0\": \"u8:1\"", "subnets[0].options[\"0\"]", "pad"),
        ("\"255\": \"u8:1\"", "subnets[0].options[\"255\"]", "end"),
        (
            "\"300\": \"u8:1\"",
            "subnets[0].options[\"300\"]",
            "not an option code",
        ),
        (
            "\"200\": \"5\"",
            "subnets[0].options[\"200\"]",
            "prefix the value with its type",
        ),
        (
            "\"routers\": \"10.0.0.1\", \"3\": \"10.0.0.2\"",
            "subnets[0].options[\"3\"]",
            "already given as `routers`",
        ),
        (
            "\"interface-mtu\": \"20\"",
            "subnets[0].options[\"interface-mtu\"]",
            "minimum of 68",
        ),
        (
            "\"routers\": \"10.0.0.1 10.0.0.2\"",
            "subnets[0].options[\"routers\"]",
            "not an IPv4 address",
        ),
    ];
    for (body, field, needle) in cases {
        let text = o(body);
        let err = rejects(&text, field, needle);
        assert_eq!(err.line(), Some(line_of(&text, "options")), "{err}");
    }
    let big = format!("\"200\": \"hex:{}\"", "ab".repeat(1100));
    rejects(&o(&big), "subnets[0].options", "at most 1024");
    // a long value (> 255 bytes) is fine and kept whole
    let long = format!("\"200\": \"hex:{}\"", "ab".repeat(400));
    let c = ok(&o(&long));
    assert_eq!(c.subnets[0].options.get(200).map(<[u8]>::len), Some(400));
    // configured mask and broadcast replace the derived ones
    let c = ok(&o(
        "\"subnet-mask\": \"255.255.0.0\", \"28\": \"10.0.255.255\"",
    ));
    assert_eq!(c.subnets[0].options.get(1), Some(&[255, 255, 0, 0][..]));
    assert_eq!(c.subnets[0].options.get(28), Some(&[10, 0, 255, 255][..]));
    let c = ok(&o(""));
    assert_eq!(c.subnets[0].options.get(1), Some(&[255, 255, 255, 0][..]));
    assert_eq!(c.subnets[0].options.get(28), Some(&[10, 0, 0, 255][..]));
}

// ---- queries ----

#[test]
fn table_ranges_merge_only_within_a_subnet_and_kind() {
    let text = config_text(
        "",
        "        (network: \"10.0.1.0/31\", pools: [\"10.0.1.0-10.0.1.1\"]),
        (network: \"10.0.1.2/31\", pools: [\"10.0.1.2-10.0.1.3\"]),
        (network: \"10.0.0.0/24\",
         pools: [\"10.0.0.20-10.0.0.29\", \"10.0.0.10-10.0.0.19\", \"10.0.0.40-10.0.0.49\"],
         reservations: [
            (mac: \"02:00:00:00:00:01\", address: \"10.0.0.30\"),
            (mac: \"02:00:00:00:00:02\", address: \"10.0.0.31\"),
            (mac: \"02:00:00:00:00:03\", address: \"10.0.0.45\"),
            (mac: \"02:00:00:00:00:04\", address: \"10.0.0.5\"),
         ]),",
    );
    let c = ok(&text);
    assert_eq!(
        c.table_ranges(),
        [
            range("10.0.0.5", "10.0.0.5"),
            range("10.0.0.10", "10.0.0.29"),
            range("10.0.0.30", "10.0.0.31"),
            range("10.0.0.40", "10.0.0.49"),
            range("10.0.1.0", "10.0.1.1"),
            range("10.0.1.2", "10.0.1.3"),
        ]
    );
    let kinds: Vec<(usize, bool)> = c
        .table_layout()
        .iter()
        .map(|t| (t.subnet, t.in_pool))
        .collect();
    assert_eq!(
        kinds,
        [
            (2, false),
            (2, true),
            (2, false),
            (2, true),
            (0, true),
            (1, true)
        ]
    );
    assert_eq!(c.table_size(), 1 + 20 + 2 + 10 + 2 + 2);
}

#[test]
fn subnet_lookup() {
    let text = config_text(
        "",
        "        (network: \"10.0.0.0/8\", relays: [\"198.18.0.2\", \"192.168.1.1\"]),\n        (network: \"192.168.1.0/24\"),",
    );
    let c = ok(&text);
    let index = |s: Option<&Subnet>| s.map(|s| s.index);
    assert_eq!(index(c.subnet_for_addr(ip("10.1.2.3"))), Some(0));
    assert_eq!(index(c.subnet_for_addr(ip("192.168.1.1"))), Some(1));
    assert_eq!(index(c.subnet_for_addr(ip("198.18.0.2"))), None);
    assert_eq!(index(c.subnet_for_relay(ip("198.18.0.2"))), Some(0));
    // the relays list wins over the network
    assert_eq!(index(c.subnet_for_relay(ip("192.168.1.1"))), Some(0));
    assert_eq!(index(c.subnet_for_relay(ip("192.168.1.2"))), Some(1));
    assert_eq!(index(c.subnet_for_relay(ip("172.16.0.1"))), None);
    assert!(c.subnets[0].contains(ip("10.0.0.1")));
}

#[test]
fn same_table_layout_tells_reloadable_changes() {
    let base = ok(EXAMPLE);
    let change = |from: &str, to: &str| {
        assert!(EXAMPLE.contains(from), "{from}");
        ok(&EXAMPLE.replacen(from, to, 1))
    };
    assert!(base.same_table_layout(&base.clone()));
    let reloadable = [
        change("\"routers\": \"10.0.0.1\"", "\"routers\": \"10.0.0.2\""),
        change("lease_time: 3600", "lease_time: 7200"),
        change("log_level: \"info\"", "log_level: \"debug\""),
        change("offer_hold: 30", "offer_hold: 10"),
        change("durability: \"power\"", "durability: \"process\""),
        // a reservation inside a pool needs no slot of its own
        change("address: \"10.128.0.20\"", "address: \"10.128.0.21\""),
        change("relays: [\"198.18.0.2\", \"198.18.0.3\"]", "relays: []"),
    ];
    for other in &reloadable {
        assert!(base.same_table_layout(other));
        assert_ne!(&base, other);
    }
    let other_workers = if base.effective_workers() == 1 { 2 } else { 1 };
    let restart = [
        change(
            "\"192.168.10.100-192.168.10.199\"",
            "\"192.168.10.100-192.168.10.198\"",
        ),
        // a reservation moved out of the pool needs its own slot
        change("address: \"192.168.10.150\"", "address: \"192.168.10.250\""),
        change("ring_capacity: 65536", "ring_capacity: 131072"),
        change(
            "table_file: \"/var/lib/prodhcp/leases.table\"",
            "table_file: \"/srv/leases.table\"",
        ),
        change("workers: 0", &format!("workers: {other_workers}")),
    ];
    for other in &restart {
        assert!(!base.same_table_layout(other));
    }
}

// ---- properties ----

/// A valid configuration holding `pools` (sorted, disjoint, inside 10.0.0.0/8 and away from
/// its network and broadcast addresses) split over subnets of 10.0.0.0/8 by /16, plus a
/// reservation at each of `reserved`.
fn pools_config(pools: &[(u32, u32)], reserved: &[u32]) -> String {
    let mut by_subnet: std::collections::BTreeMap<u32, (Vec<String>, Vec<String>)> =
        Default::default();
    for &(first, last) in pools {
        let entry = by_subnet.entry(first >> 16).or_default();
        entry.0.push(format!(
            "\"{}-{}\"",
            Ipv4Addr::from(first),
            Ipv4Addr::from(last)
        ));
    }
    for (k, &address) in reserved.iter().enumerate() {
        let entry = by_subnet.entry(address >> 16).or_default();
        entry.1.push(format!(
            "(mac: \"02:00:00:00:{:02x}:{:02x}\", address: \"{}\")",
            k >> 8,
            k & 0xff,
            Ipv4Addr::from(address)
        ));
    }
    let subnets: Vec<String> = by_subnet
        .iter()
        .map(|(net, (pools, reservations))| {
            format!(
                "        (network: \"{}/16\", pools: [{}], reservations: [{}]),",
                Ipv4Addr::from(net << 16),
                pools.join(", "),
                reservations.join(", ")
            )
        })
        .collect();
    config_text("", &subnets.join("\n"))
}

/// Sorted, disjoint ranges that each stay inside one /16 of 10.0.0.0/8, never touching the
/// /16's first or last address.
fn disjoint_pools() -> impl Strategy<Value = Vec<(u32, u32)>> {
    proptest::collection::vec((0u32..4, 1u32..300, 0u32..300), 1..12).prop_map(|steps| {
        let base = u32::from(Ipv4Addr::new(10, 0, 0, 0));
        let mut pools = Vec::new();
        let mut cursor = base + 1;
        for (subnet_jump, gap, len) in steps {
            if subnet_jump == 0 {
                cursor = ((cursor >> 16) + 1) << 16 | 1;
            }
            let first = cursor + gap - 1;
            let last = first + len;
            if first >> 16 != last >> 16 || last & 0xffff == 0xffff {
                continue;
            }
            pools.push((first, last));
            cursor = last + 1;
        }
        pools
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_text_never_panics(text in ".{0,400}") {
        let _ = parse(&text);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = parse_bytes(&bytes);
    }

    #[test]
    fn mutated_example_never_panics(
        at in 0usize..EXAMPLE.len(),
        cut in 0usize..40,
        insert in "[\\[\\](){}:,\"'/*#a-z0-9. -]{0,12}",
    ) {
        let start = (0..=at).rev().find(|&i| EXAMPLE.is_char_boundary(i)).unwrap_or(0);
        let end = (start + cut..=EXAMPLE.len()).find(|&i| EXAMPLE.is_char_boundary(i)).unwrap_or(EXAMPLE.len());
        let text = format!("{}{}{}", &EXAMPLE[..start], insert, &EXAMPLE[end..]);
        if let Err(e) = parse(&text) {
            // every error that is not about the size points at a line
            prop_assert!(e.line().is_some() || e.field().is_some(), "{}", e);
        }
    }

    #[test]
    fn table_ranges_are_sorted_disjoint_and_covering(
        pools in disjoint_pools(),
        picks in proptest::collection::vec(any::<u16>(), 0..8),
    ) {
        // reserve some pool addresses and some addresses just outside pools
        let mut reserved: Vec<u32> = Vec::new();
        for (k, pick) in picks.iter().enumerate() {
            if let Some(&(first, last)) = pools.get(usize::from(*pick) % pools.len().max(1)) {
                let candidate = if k % 2 == 0 {
                    first + u32::from(*pick) % (last - first + 1)
                } else {
                    last + 1
                };
                let outside_all = !pools.iter().any(|&(f, l)| f <= candidate && candidate <= l);
                let special = candidate & 0xffff == 0 || candidate & 0xffff == 0xffff;
                if !reserved.contains(&candidate) && !special && (k % 2 == 0 || outside_all) {
                    reserved.push(candidate);
                }
            }
        }
        let text = pools_config(&pools, &reserved);
        let config = match parse(&text) {
            Ok(config) => config,
            Err(e) => return Err(TestCaseError::fail(format!("{e}\n{text}"))),
        };
        let ranges = config.table_ranges();
        for pair in ranges.windows(2) {
            prop_assert!(pair[0].last < pair[1].first, "not sorted/disjoint: {:?}", pair);
        }
        let mut expected: Vec<u32> = pools.iter().flat_map(|&(f, l)| f..=l).collect();
        expected.extend(reserved.iter().copied().filter(|a| !pools.iter().any(|&(f, l)| f <= *a && *a <= l)));
        expected.sort_unstable();
        let covered: Vec<u32> = ranges.iter().flat_map(|r| u32::from(r.first)..=u32::from(r.last)).collect();
        prop_assert_eq!(covered, expected);
        prop_assert_eq!(config.table_size(), ranges.iter().map(AddressRange::len).sum::<u64>());
        // adjacent runs are never both of one subnet and one kind
        for pair in config.table_layout().windows(2) {
            if pair[0].range.is_followed_by(&pair[1].range) {
                prop_assert!(pair[0].subnet != pair[1].subnet || pair[0].in_pool != pair[1].in_pool);
            }
        }
    }
}

#[test]
fn authoritative_is_a_per_subnet_bool_defaulting_to_false() {
    let config = ok(&config_text(
        "",
        "        (network: \"10.0.0.0/24\", authoritative: true),\n        (network: \"10.0.1.0/24\"),",
    ));
    assert!(config.subnets[0].authoritative);
    assert!(!config.subnets[1].authoritative, "default is false");
    assert!(!ok(EXAMPLE).subnets[0].authoritative);
    let text = config_text("", &subnet("            authoritative: \"yes\","));
    rejects(&text, "subnets[0].authoritative", "boolean");
    // Changing it is a plain reload: the table layout does not depend on it.
    let a = ok(&config_text(
        "",
        "        (network: \"10.0.0.0/24\", pools: [\"10.0.0.10-10.0.0.20\"]),",
    ));
    let b = ok(&config_text(
        "",
        "        (network: \"10.0.0.0/24\", pools: [\"10.0.0.10-10.0.0.20\"], authoritative: true),",
    ));
    assert!(a.same_table_layout(&b));
}

#[test]
fn scrub_interval_zero_turns_periodic_scrubs_off() {
    let c = ok(&config_text("    scrub_interval: 0,", &subnet("")));
    assert_eq!(c.scrub_interval, 0);
    let c = ok(&config_text("    scrub_interval: 3600,", &subnet("")));
    assert_eq!(c.scrub_interval, 3600);
}

#[test]
fn ring_files_live_in_the_state_dir_one_per_owner() {
    let c = ok(&config_text("", &subnet("")));
    assert_eq!(
        c.ring_file(7),
        std::path::PathBuf::from("/var/lib/prodhcp/ring-7.dat")
    );
    assert_ne!(c.ring_file(1), c.ring_file(100));
}

// ---- the `cluster` section (issue 8) ----

/// A config whose `cluster` section is `cluster` (the body between the parentheses).
fn with_cluster(cluster: &str) -> String {
    config_text(&format!("    cluster: (\n{cluster}\n    ),"), &subnet(""))
}

/// A valid cluster body with `field` lines replaced by `replace` (or only `extra` added).
fn cluster_body(extra: &str) -> String {
    let mut fields = vec![
        ("name", "        name: \"pop1\","),
        ("node", "        node: \"a\","),
        ("listen", "        listen: \"198.18.0.1:647\","),
        (
            "peers",
            "        peers: [(node: \"b\", address: \"198.18.0.4:647\")],",
        ),
        (
            "key_file",
            "        key_file: \"/etc/prodhcp/cluster.key\",",
        ),
    ];
    let mut lines = String::new();
    for line in extra.lines() {
        let name = line.trim().split(':').next().unwrap_or("");
        fields.retain(|(f, _)| *f != name);
    }
    for (_, line) in fields {
        lines.push_str(line);
        lines.push('\n');
    }
    for line in extra.lines() {
        lines.push_str("        ");
        lines.push_str(line.trim());
        lines.push('\n');
    }
    lines
}

#[test]
fn example_file_has_the_pinned_cluster_section() {
    let config = ok(EXAMPLE);
    let cluster = config.cluster.expect("the example documents `cluster`");
    assert_eq!(cluster.name, "pop1");
    assert_eq!(cluster.node, "a");
    assert_eq!(cluster.listen, "198.18.0.1:647".parse().unwrap());
    assert_eq!(
        cluster.peers,
        [crate::Peer {
            node: "b".into(),
            address: "198.18.0.4:647".parse().unwrap()
        }]
    );
    assert_eq!(cluster.key_file, PathBuf::from("/etc/prodhcp/cluster.key"));
    let service = cluster.service_address.unwrap();
    assert_eq!(service.address.to_string(), "198.18.0.10/24");
    assert_eq!(service.address.addr(), ip("198.18.0.10"));
    assert_eq!(service.interface, "eth1");
    assert_eq!(cluster.replication, crate::Replication::Sync);
    assert_eq!(cluster.heartbeat_interval.as_millis(), 200);
    assert_eq!(cluster.dead_after.as_millis(), 800);
}

#[test]
fn cluster_is_optional_and_takes_defaults() {
    assert_eq!(ok(MINIMAL).cluster, None);
    let cluster = ok(&with_cluster(&cluster_body(""))).cluster.unwrap();
    assert_eq!(cluster.service_address, None);
    assert_eq!(cluster.replication, crate::Replication::Sync);
    assert_eq!(
        cluster.heartbeat_interval.as_millis(),
        u128::from(crate::cluster::DEFAULT_HEARTBEAT_MS)
    );
    assert_eq!(
        cluster.dead_after.as_millis(),
        u128::from(crate::cluster::DEFAULT_DEAD_AFTER_MS)
    );
    // Detection of a silent peer within 1 s needs no tuning.
    assert!(cluster.dead_after.as_millis() <= 1000);
    assert!(cluster.dials("b"));
    let text = with_cluster(&cluster_body(
        "replication: \"async\",\nheartbeat_ms: 50,\ndead_after_ms: 100,\n\
         service_address: (address: \"198.18.0.10/32\", interface: \"lan0\"),\n\
         listen: \"0.0.0.0:647\",",
    ));
    let cluster = ok(&text).cluster.unwrap();
    assert_eq!(cluster.replication, crate::Replication::Async);
    assert_eq!(cluster.heartbeat_interval.as_millis(), 50);
    assert_eq!(cluster.dead_after.as_millis(), 100);
    assert_eq!(cluster.listen, "0.0.0.0:647".parse().unwrap());
    assert_eq!(
        cluster.service_address.unwrap().address.to_string(),
        "198.18.0.10/32"
    );
}

#[test]
fn the_server_id_is_server_id_else_the_service_address_else_none() {
    assert_eq!(ok(MINIMAL).effective_server_id(), None);
    // A cluster without a service address: nothing fixed.
    assert_eq!(
        ok(&with_cluster(&cluster_body(""))).effective_server_id(),
        None
    );
    let service = "service_address: (address: \"198.18.0.10/24\", interface: \"lan0\"),";
    let text = with_cluster(&cluster_body(service));
    assert_eq!(ok(&text).server_id, None);
    assert_eq!(ok(&text).effective_server_id(), Some(ip("198.18.0.10")));
    // The top-level `server_id` wins over the service address.
    let text = config_text(
        &format!(
            "    server_id: \"198.18.0.20\",\n    cluster: (\n{}\n    ),",
            cluster_body(service)
        ),
        &subnet(""),
    );
    assert_eq!(ok(&text).effective_server_id(), Some(ip("198.18.0.20")));
    // The example sets both to the same address.
    assert_eq!(ok(EXAMPLE).effective_server_id(), Some(ip("198.18.0.10")));
}

#[test]
fn one_peer_list_can_be_shared_by_every_node() {
    let peers = "peers: [(node: \"a\", address: \"198.18.0.1:647\"), \
                 (node: \"b\", address: \"198.18.0.4:647\"), (node: \"c\", address: \"[fd00::3]:647\")],";
    let on_b = ok(&with_cluster(&cluster_body(&format!(
        "node: \"b\",\nlisten: \"198.18.0.4:647\",\n{peers}"
    ))))
    .cluster
    .unwrap();
    let names: Vec<&str> = on_b.peers.iter().map(|p| p.node.as_str()).collect();
    assert_eq!(names, ["a", "c"]);
    // b dials c (b < c) and waits for a.
    assert!(!on_b.dials("a"));
    assert!(on_b.dials("c"));
}

#[test]
fn cluster_rules() {
    let sixteen: String = (0..16)
        .map(|i| format!("(node: \"n{i:02}\", address: \"198.18.1.{i}:647\"),"))
        .collect();
    let fifteen: String = (0..15)
        .map(|i| format!("(node: \"n{i:02}\", address: \"198.18.1.{i}:647\"),"))
        .collect();
    // 15 peers (16 appliances) are fine.
    let c = ok(&with_cluster(&cluster_body(&format!(
        "peers: [{fifteen}],"
    ))));
    assert_eq!(c.cluster.unwrap().peers.len(), 15);
    let cases: Vec<(String, &str, &str)> = vec![
        (
            "name: \"\",".into(),
            "cluster.name",
            "cluster name `` must have 1 to 32 characters",
        ),
        (
            "name: \"pop 1\",".into(),
            "cluster.name",
            "cluster name `pop 1` contains ' '; use ASCII letters, digits, '-', '_' and '.'",
        ),
        (
            format!("node: \"{}\",", "x".repeat(33)),
            "cluster.node",
            "must have 1 to 32 characters",
        ),
        (
            "node: \"b\\u{e9}\",".into(),
            "cluster.node",
            "node name `b\u{e9}` contains 'é'",
        ),
        (
            "listen: \"198.18.0.1\",".into(),
            "cluster.listen",
            "`198.18.0.1` is not \"address:port\" (e.g. \"198.18.0.1:647\")",
        ),
        (
            "listen: \"198.18.0.1:0\",".into(),
            "cluster.listen",
            "`198.18.0.1:0`: the port must be 1..=65535",
        ),
        (
            "listen: \"224.0.0.1:647\",".into(),
            "cluster.listen",
            "224.0.0.1 is not a unicast address",
        ),
        (
            "peers: [(node: \"b\", address: \"peer-b:647\")],".into(),
            "cluster.peers[0].address",
            "`peer-b:647` is not \"address:port\"",
        ),
        (
            "peers: [(node: \"b\", address: \"0.0.0.0:647\")],".into(),
            "cluster.peers[0].address",
            "0.0.0.0 is not a unicast address",
        ),
        (
            "peers: [(node: \"b\", address: \"198.18.0.4:647\"), (node: \"b\", address: \"198.18.0.5:647\")],".into(),
            "cluster.peers[1].node",
            "node `b` is already listed at cluster.peers[0]",
        ),
        (
            "peers: [(node: \"b\", address: \"198.18.0.4:647\"), (node: \"c\", address: \"198.18.0.4:647\")],".into(),
            "cluster.peers[1].address",
            "198.18.0.4:647 is already the address of cluster.peers[0]",
        ),
        (
            "peers: [(node: \"b\", address: \"198.18.0.1:647\")],".into(),
            "cluster.peers[0].address",
            "198.18.0.1:647 is this node's own `listen` address, but the entry names node `b` (this node is `a`)",
        ),
        (
            "peers: [(node: \"b_ \", address: \"198.18.0.4:647\")],".into(),
            "cluster.peers[0].node",
            "node name `b_ ` contains ' '",
        ),
        (
            "peers: [],".into(),
            "cluster.peers",
            "no peer besides this node `a`: a cluster needs at least one other appliance",
        ),
        (
            "peers: [(node: \"a\", address: \"198.18.0.1:647\")],".into(),
            "cluster.peers",
            "no peer besides this node `a`",
        ),
        (
            format!("peers: [{sixteen}],"),
            "cluster.peers",
            "16 peers besides this node; a cluster has at most 16 appliances (15 peers)",
        ),
        (
            "key_file: \"cluster.key\",".into(),
            "cluster.key_file",
            "`cluster.key` must be an absolute path",
        ),
        (
            "service_address: (address: \"198.18.0.10\", interface: \"eth1\"),".into(),
            "cluster.service_address.address",
            "`198.18.0.10` is not \"address/prefix\" (e.g. \"198.18.0.10/24\")",
        ),
        (
            "service_address: (address: \"198.18.0.10/33\", interface: \"eth1\"),".into(),
            "cluster.service_address.address",
            "is not \"address/prefix\"",
        ),
        (
            "service_address: (address: \"198.18.0.0/24\", interface: \"eth1\"),".into(),
            "cluster.service_address.address",
            "198.18.0.0 is the network or broadcast address of 198.18.0.0/24",
        ),
        (
            "service_address: Some((address: \"198.18.0.255/24\", interface: \"eth1\")),".into(),
            "cluster.service_address.address",
            "198.18.0.255 is the network or broadcast address of 198.18.0.0/24",
        ),
        (
            "service_address: (address: \"0.0.0.0/8\", interface: \"eth1\"),".into(),
            "cluster.service_address.address",
            "0.0.0.0 is not a unicast address",
        ),
        (
            "service_address: (address: \"198.18.0.10/0\", interface: \"eth1\"),".into(),
            "cluster.service_address.address",
            "the prefix must be /1 to /32",
        ),
        (
            "service_address: (address: \"198.18.0.10/24\", interface: \"a/b\"),".into(),
            "cluster.service_address.interface",
            "contains '/'",
        ),
        (
            "replication: \"semi\",".into(),
            "cluster.replication",
            "`semi` is not \"sync\" or \"async\"",
        ),
        (
            "heartbeat_ms: 5,".into(),
            "cluster.heartbeat_ms",
            "5 ms: the heartbeat interval must be 10 to 10000 ms",
        ),
        (
            "heartbeat_ms: 500,\ndead_after_ms: 900,".into(),
            "cluster.dead_after_ms",
            "900 ms: must be at least twice heartbeat_ms (1000 ms) and at most 60000 ms",
        ),
        (
            "dead_after_ms: 60001,".into(),
            "cluster.dead_after_ms",
            "at most 60000 ms",
        ),
    ];
    for (extra, field, needle) in &cases {
        let text = with_cluster(&cluster_body(extra));
        rejects(&text, field, needle);
    }
}

#[test]
fn cluster_structure_errors_name_the_field() {
    // A missing required field, an unknown field, a wrong type: first-stage errors.
    let text = config_text(
        "    cluster: (name: \"pop1\", node: \"a\", listen: \"198.18.0.1:647\", peers: []),",
        &subnet(""),
    );
    let err = parse(&text).unwrap_err();
    assert!(
        err.to_string().contains("missing field named `key_file`"),
        "{err}"
    );
    let err = parse(&with_cluster(&cluster_body("heartbeat: 200,"))).unwrap_err();
    assert!(
        err.to_string()
            .contains("Unexpected field named `heartbeat` in `Cluster`"),
        "{err}"
    );
    assert_eq!(err.field(), Some("cluster.heartbeat"), "{err}");
    let err = parse(&with_cluster(&cluster_body("replication: sync,"))).unwrap_err();
    assert_eq!(err.field(), Some("cluster.replication"), "{err}");
}

// ---- the `audit` section (issue 9) ----

/// The configuration block of issue 9, verbatim.
const ISSUE9_AUDIT: &str = r#"audit: (
    targets: ["unix:/dev/log", "tcp://198.18.0.53:514", "tls://siem.example.net:6514"],
    file: Some("/var/log/prodhcp/audit.jsonl"),
    spool_dir: "/var/lib/prodhcp/audit-spool",
    spool_max_bytes: 1073741824,
    offers: false,
    audit_strict: false,
),"#;

/// A config whose `audit` section is `audit` (the body between the parentheses).
fn with_audit(audit: &str) -> String {
    config_text(&format!("    audit: (\n{audit}\n    ),"), &subnet(""))
}

/// A config with one audit target `target` (and nothing else in the section).
fn with_target(target: &str) -> String {
    with_audit(&format!("        targets: [{target:?}],"))
}

fn endpoint(host: crate::AuditHost, port: u16) -> crate::Endpoint {
    crate::Endpoint { host, port }
}

fn name(n: &str) -> crate::AuditHost {
    crate::AuditHost::Name(n.to_string())
}

fn pinned_audit() -> crate::Audit {
    crate::Audit {
        targets: vec![
            AuditTarget::Unix(PathBuf::from("/dev/log")),
            AuditTarget::Tcp(endpoint(
                crate::AuditHost::Ip("198.18.0.53".parse().unwrap()),
                514,
            )),
            AuditTarget::Tls(endpoint(name("siem.example.net"), 6514)),
        ],
        file: Some(PathBuf::from("/var/log/prodhcp/audit.jsonl")),
        spool_dir: PathBuf::from("/var/lib/prodhcp/audit-spool"),
        spool_max_bytes: 1 << 30,
        offers: false,
        audit_strict: false,
        tls: Some(crate::audit::AuditTls {
            ca_file: PathBuf::from(crate::audit::SYSTEM_CA_FILE),
            cert_file: None,
            key_file: None,
        }),
    }
}

#[test]
fn the_issue9_audit_block_parses_exactly() {
    let text = config_text(ISSUE9_AUDIT, &subnet(""));
    let audit = ok(&text).audit.expect("the section is there");
    assert_eq!(audit, pinned_audit());
    let shown: Vec<String> = audit.targets.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            "unix:/dev/log",
            "tcp://198.18.0.53:514",
            "tls://siem.example.net:6514"
        ]
    );
}

#[test]
fn example_file_has_the_pinned_audit_section() {
    assert_eq!(ok(EXAMPLE).audit, Some(pinned_audit()));
}

#[test]
fn audit_is_optional_and_takes_defaults() {
    assert_eq!(ok(MINIMAL).audit, None);
    let text = config_text(
        "    state_dir: \"/srv/dhcp\",\n    audit: (targets: [\"udp://[2001:db8::53]:514\"]),",
        &subnet(""),
    )
    .replacen("    state_dir: \"/var/lib/prodhcp\",\n", "", 1);
    let audit = ok(&text).audit.unwrap();
    assert_eq!(
        audit,
        crate::Audit {
            targets: vec![AuditTarget::Udp(endpoint(
                crate::AuditHost::Ip("2001:db8::53".parse().unwrap()),
                514
            ))],
            file: None,
            spool_dir: PathBuf::from("/srv/dhcp/audit-spool"),
            spool_max_bytes: crate::audit::DEFAULT_SPOOL_MAX_BYTES,
            offers: false,
            audit_strict: false,
            tls: None,
        }
    );
    assert_eq!(audit.targets[0].to_string(), "udp://[2001:db8::53]:514");
    // A file alone is enough; the bools and the smallest spool are taken as written.
    let audit = ok(&with_audit(
        "        file: \"/var/log/a.jsonl\",\n        spool_max_bytes: 1048576,\n        offers: true,\n        audit_strict: true,",
    ))
    .audit
    .unwrap();
    assert!(audit.targets.is_empty());
    assert_eq!(audit.file, Some(PathBuf::from("/var/log/a.jsonl")));
    assert_eq!(
        audit.spool_dir,
        PathBuf::from("/var/lib/prodhcp/audit-spool")
    );
    assert_eq!(audit.spool_max_bytes, 1 << 20);
    assert!(audit.offers);
    assert!(audit.audit_strict);
}

#[test]
fn audit_targets_parse_into_their_kinds() {
    let one = |t: &str| ok(&with_target(t)).audit.unwrap().targets.remove(0);
    assert_eq!(
        one("unix:/run/systemd/journal/syslog"),
        AuditTarget::Unix(PathBuf::from("/run/systemd/journal/syslog"))
    );
    assert_eq!(
        one("udp://198.18.0.53:514"),
        AuditTarget::Udp(endpoint(
            crate::AuditHost::Ip("198.18.0.53".parse().unwrap()),
            514
        ))
    );
    assert_eq!(
        one("TCP://Log-1.Example.NET.:601"),
        AuditTarget::Tcp(endpoint(name("log-1.example.net"), 601))
    );
    assert_eq!(
        one("tls://[::1]:6514"),
        AuditTarget::Tls(endpoint(crate::AuditHost::Ip("::1".parse().unwrap()), 6514))
    );
    assert_eq!(
        one("tcp://localhost:65535"),
        AuditTarget::Tcp(endpoint(name("localhost"), 65535))
    );
    assert_eq!(one("udp://239.1.2.3:514").scheme(), "udp");
    assert_eq!(
        one("tls://siem:6514").endpoint(),
        Some(&endpoint(name("siem"), 6514))
    );
}

#[test]
fn audit_rules() {
    let field0 = "audit.targets[0]";
    let cases: &[(&str, &str, &str)] = &[
        // unknown or missing scheme
        ("relp://198.18.0.53:2514", field0, "unknown scheme `relp`"),
        ("syslog.example.net", field0, "no scheme"),
        ("http://siem:80", field0, "unknown scheme `http`"),
        ("tcp:198.18.0.53:514", field0, "the `//` is missing"),
        // missing port
        ("tcp://198.18.0.53", field0, "the port is missing"),
        ("tls://siem.example.net:", field0, "the port is missing"),
        ("udp://[2001:db8::1]", field0, "the port is missing"),
        // port 0 and bad ports
        ("tcp://198.18.0.53:0", field0, "port 0"),
        ("udp://[2001:db8::1]:0", field0, "port 0"),
        ("tcp://198.18.0.53:65536", field0, "`65536` is not a port"),
        ("tcp://198.18.0.53:http", field0, "`http` is not a port"),
        // unix paths
        ("unix:dev/log", field0, "must be absolute"),
        ("unix:", field0, "must be absolute"),
        ("unix://dev/log", field0, "one slash"),
        // hosts
        ("tcp://:514", field0, "the host is missing"),
        ("tcp://2001:db8::1:514", field0, "must be in brackets"),
        ("tcp://[2001:db8::zz]:514", field0, "is not an IPv6 address"),
        ("tcp://[2001:db8::1:514", field0, "without `]`"),
        ("tcp://[2001:db8::1]x:514", field0, "unexpected `x:514`"),
        ("tcp://10.0.0.256:514", field0, "not a valid IPv4 address"),
        (
            "tcp://under_score.example:514",
            field0,
            "neither an IP address",
        ),
        ("tcp://-bad.example:514", field0, "neither an IP address"),
        ("tcp://a..b:514", field0, "neither an IP address"),
        ("tcp://0.0.0.0:514", field0, "not a collector's address"),
        ("tcp://[::]:514", field0, "not a collector's address"),
        ("tls://239.1.2.3:6514", field0, "multicast"),
        ("tcp://user@siem:514", field0, "'@' is not allowed"),
        ("tcp://siem:514/path", field0, "'/' is not allowed"),
    ];
    for &(target, field, needle) in cases {
        rejects(&with_target(target), field, needle);
    }
    let long = format!("unix:/{}", "a".repeat(107));
    rejects(&with_target(&long), field0, "at most 107 bytes");
    let long_label = format!("tcp://{}.example:514", "a".repeat(64));
    rejects(&with_target(&long_label), field0, "neither an IP address");

    // duplicates, also when written differently
    let dup = |a: &str, b: &str| with_audit(&format!("        targets: [{a:?}, {b:?}],"));
    rejects(
        &dup("tcp://siem.example.net:514", "tcp://SIEM.example.net.:514"),
        "audit.targets[1]",
        "same target as audit.targets[0] (tcp://siem.example.net:514)",
    );
    rejects(
        &dup("unix:/dev/log", "unix:/dev//log"),
        "audit.targets[1]",
        "same target as audit.targets[0]",
    );
    rejects(
        &dup("udp://[2001:db8::1]:514", "udp://[2001:db8:0::1]:514"),
        "audit.targets[1]",
        "same target as audit.targets[0]",
    );
    // the same host and port over two transports are two targets
    let two = ok(&dup("tcp://198.18.0.53:514", "udp://198.18.0.53:514"));
    assert_eq!(two.audit.unwrap().targets.len(), 2);

    let many: Vec<String> = (1..=17)
        .map(|p| format!("\"udp://198.18.0.53:{p}\""))
        .collect();
    rejects(
        &with_audit(&format!("        targets: [{}],", many.join(", "))),
        "audit.targets",
        "17 targets; at most 16",
    );

    // nowhere to audit to
    rejects(&with_audit(""), "audit", "would go nowhere");
    rejects(
        &with_audit("        targets: [],\n        offers: true,"),
        "audit",
        "would go nowhere",
    );

    // paths
    rejects(
        &with_audit("        file: \"audit.jsonl\","),
        "audit.file",
        "must be an absolute path",
    );
    rejects(
        &with_audit("        file: \"/\","),
        "audit.file",
        "names no file",
    );
    rejects(
        &with_audit("        targets: [\"unix:/dev/log\"],\n        spool_dir: \"spool\","),
        "audit.spool_dir",
        "must be an absolute path",
    );
    rejects(
        &with_audit("        targets: [\"unix:/dev/log\"],\n        spool_dir: \"\","),
        "audit.spool_dir",
        "must be an absolute path",
    );

    // spool size
    rejects(
        &with_audit("        targets: [\"unix:/dev/log\"],\n        spool_max_bytes: 1048575,"),
        "audit.spool_max_bytes",
        "at least 1048576",
    );
    rejects(
        &with_audit("        targets: [\"unix:/dev/log\"],\n        spool_max_bytes: 0,"),
        "audit.spool_max_bytes",
        "at least 1048576",
    );
}

#[test]
fn audit_errors_point_at_the_offending_line() {
    let text = with_audit(
        "        targets: [\n            \"unix:/dev/log\",\n            \"tcp://198.18.0.53\",\n        ],",
    );
    let err = rejects(&text, "audit.targets[1]", "the port is missing");
    assert_eq!(err.line(), Some(line_of(&text, "\"tcp://198.18.0.53\"")));
    assert_eq!(
        err.to_string(),
        format!(
            "line {}, column 13: field `audit.targets[1]`: `tcp://198.18.0.53`: the port is missing (`tcp://host:port`; syslog uses 514, TLS 6514)",
            line_of(&text, "\"tcp://198.18.0.53\"")
        )
    );
}

#[test]
fn audit_structure_errors_name_the_field() {
    // unknown field (a typo is never silently ignored)
    let err = parse(&with_audit(
        "        targets: [\"unix:/dev/log\"],\n        strict: true,",
    ))
    .unwrap_err();
    assert!(err.to_string().contains("strict"), "{err}");
    assert_eq!(err.field(), Some("audit.strict"), "{err}");
    // wrong types
    let err = parse(&with_audit("        targets: \"unix:/dev/log\",")).unwrap_err();
    assert_eq!(err.field(), Some("audit.targets"), "{err}");
    let err = parse(&with_audit(
        "        targets: [\"unix:/dev/log\"],\n        spool_max_bytes: -1,",
    ))
    .unwrap_err();
    assert_eq!(err.field(), Some("audit.spool_max_bytes"), "{err}");
    let err = parse(&with_audit(
        "        targets: [\"unix:/dev/log\"],\n        offers: \"yes\",",
    ))
    .unwrap_err();
    assert_eq!(err.field(), Some("audit.offers"), "{err}");
}

#[test]
fn an_audit_change_keeps_the_table_layout() {
    let before = ok(MINIMAL);
    let mut after = before.clone();
    after.audit = Some(pinned_audit());
    assert!(before.same_table_layout(&after));
}

#[test]
fn audit_tls_files_are_checked() {
    let with = |extra: &str| {
        config_text(
            &format!("audit: (\n        targets: [\"tls://198.18.0.53:6514\"],\n{extra}\n    ),\n"),
            &subnet(""),
        )
    };
    let audit = ok(&with(
        "        tls_ca_file: Some(\"/etc/prodhcp/siem-ca.pem\"),",
    ))
    .audit
    .unwrap();
    assert_eq!(
        audit.tls.unwrap().ca_file,
        PathBuf::from("/etc/prodhcp/siem-ca.pem")
    );
    let err = crate::parse(&with(
        "        tls_cert_file: Some(\"/etc/prodhcp/c.pem\"),",
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("tls_key_file"), "{err}");
    let err = crate::parse(&with("        tls_ca_file: Some(\"relative.pem\"),"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("tls_ca_file"), "{err}");
}

#[test]
fn user_is_optional_checked_for_syntax_and_never_root() {
    assert_eq!(ok(&config_text("", &subnet(""))).user, None);
    for good in ["prodhcp", "_prodhcp", "nobody", "svc.dhcp-1", "a"] {
        let c = ok(&config_text(&format!("    user: \"{good}\","), &subnet("")));
        assert_eq!(c.user.as_deref(), Some(good));
    }
    let c = ok(&config_text("    user: Some(\"prodhcp\"),", &subnet("")));
    assert_eq!(c.user.as_deref(), Some("prodhcp"));
    let long = "a".repeat(MAX_USER_NAME + 1);
    for (bad, needle) in [
        ("", "1 to 32 bytes"),
        (long.as_str(), "1 to 32 bytes"),
        ("1000", "start with a letter"),
        ("-x", "start with a letter"),
        ("pro dhcp", "contains ' '"),
        ("pro/dhcp", "contains '/'"),
        ("pro:dhcp", "contains ':'"),
        ("root", "leave `user` out"),
    ] {
        rejects(
            &config_text(&format!("    user: \"{bad}\","), &subnet("")),
            "user",
            needle,
        );
    }
}

#[test]
fn metrics_listen_and_pool_alarms() {
    let c = ok(&config_text("", &subnet("")));
    assert_eq!(c.metrics_listen, None);
    assert_eq!(c.pool_alarms, alarms::PoolAlarms::default());
    assert_eq!(c.alarm_thresholds(&c.subnets[0]).0, [80, 90, 95]);
    let c = ok(&config_text(
        "    metrics_listen: Some(\"127.0.0.1:9967\"),\n    pool_alarms: (thresholds: [50, 60, 70], hysteresis: 2, interval: 1, rate_window: 30),",
        &subnet("            alarm_thresholds: Some([10, 20, 30]),"),
    ));
    assert_eq!(c.metrics_listen, Some("127.0.0.1:9967".parse().unwrap()));
    assert_eq!(c.pool_alarms.thresholds.0, [50, 60, 70]);
    assert_eq!(c.pool_alarms.interval, 1);
    assert_eq!(c.alarm_thresholds(&c.subnets[0]).0, [10, 20, 30]);
    // The binary form the workers get keeps the new fields.
    assert_eq!(handoff::decode(&handoff::encode(&c)).unwrap(), c);

    rejects(
        &config_text("    metrics_listen: Some(\"localhost\"),", &subnet("")),
        "metrics_listen",
        "",
    );
    rejects(
        &config_text("    pool_alarms: (thresholds: [90, 80, 95]),", &subnet("")),
        "pool_alarms.thresholds",
        "increase strictly",
    );
    rejects(
        &config_text("    pool_alarms: (thresholds: [80, 90]),", &subnet("")),
        "pool_alarms.thresholds",
        "exactly three",
    );
    rejects(
        &config_text("    pool_alarms: (thresholds: [80, 90, 101]),", &subnet("")),
        "pool_alarms.thresholds",
        "1 to 100",
    );
    rejects(
        &config_text("    pool_alarms: (interval: 0),", &subnet("")),
        "pool_alarms.interval",
        "between 1 and",
    );
    rejects(
        &config_text(
            "    pool_alarms: (interval: 60, rate_window: 30),",
            &subnet(""),
        ),
        "pool_alarms.rate_window",
        "between the interval",
    );
    rejects(
        &config_text("    pool_alarms: (hysteresis: 80),", &subnet("")),
        "pool_alarms.hysteresis",
        "no room to clear",
    );
    rejects(
        &config_text(
            "",
            &subnet("            alarm_thresholds: Some([3, 20, 30]),"),
        ),
        "subnets[0].alarm_thresholds",
        "no room to clear",
    );
}

//! The control socket under real use and abuse:
//!
//! - `prodhcpctl leases import` of a Kea memfile CSV and of an ISC dhcpd.leases file into a
//!   running daemon: counts, states, hardware addresses and expiries as imported, `leases
//!   --mac` and both export formats list them, and an imported client gets its address back;
//! - garbage files are refused with a clear error and leave the daemon as it was;
//! - control socket abuse (RELIABILITY.md F4, light): more idle connections than the cap, a
//!   20 MiB line without a newline, a request of another protocol version.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::Ipv4Addr;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prodhcp_systests::client::{Extras, Identity, TestClient};
use prodhcp_systests::config::{ServerConfig, SubnetConfig};
use prodhcp_systests::daemon::{CtlOutput, Daemon};
use prodhcp_systests::packet::{test_mac, MessageType};
use prodhcp_systests::preflight;
use prodhcp_systests::topo::{Topology, NET1, RELAY1_IP, SERVER_IP};
use serde_json::Value;

/// Segment 1's pool in these tests.
const POOL: &str = "198.18.1.100-198.18.1.149";

fn config(dir: &Path) -> ServerConfig {
    ServerConfig::new(dir).subnet(SubnetConfig::new(NET1, POOL).option("routers", "198.18.1.1"))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().expect("test address")
}

/// Runs `prodhcpctl --json leases import --format FORMAT FILE`.
fn import(d: &Daemon, format: &str, file: &Path) -> CtlOutput {
    d.ctl(&[
        "leases",
        "import",
        "--format",
        format,
        file.to_str().expect("utf-8 path"),
    ])
}

/// The import summary; panics unless prodhcpctl succeeded with JSON.
#[track_caller]
fn import_ok(d: &Daemon, format: &str, file: &Path) -> Value {
    let out = import(d, format, file);
    match (&out.json, out.status.success()) {
        (Some(v), true) => v.clone(),
        _ => panic!(
            "import --format {format} failed ({}): stdout {} stderr {}",
            out.status, out.stdout, out.stderr
        ),
    }
}

#[track_caller]
fn lease(d: &Daemon, addr: &str) -> Value {
    d.lease(ip(addr))
        .unwrap_or_else(|| panic!("prodhcpctl lease {addr} found nothing"))
}

/// Checks one lease object: state, hwaddr, client_id (plain hex, `None` = null) and expiry.
#[track_caller]
fn check_lease(
    l: &Value,
    state: &str,
    hwaddr: Option<&str>,
    client_id: Option<&str>,
    expires: u64,
) {
    assert_eq!(l["state"], state, "{l}");
    match hwaddr {
        Some(h) => assert_eq!(l["hwaddr"], h, "{l}"),
        None => assert!(l["hwaddr"].is_null(), "expected no hwaddr: {l}"),
    }
    if let Some(c) = client_id {
        let got = l["client_id"].as_str().unwrap_or("").replace(':', "");
        assert_eq!(got.to_lowercase(), c, "{l}");
    }
    assert_eq!(l["expires"].as_u64(), Some(expires), "{l}");
}

/// The OFFER's address for `id`.
#[track_caller]
fn offered(agent: &TestClient, id: &Identity) -> Ipv4Addr {
    let r = agent
        .discover(id, &Extras::default())
        .unwrap_or_else(|e| panic!("DISCOVER from {}: {e}", id.mac_string()));
    assert_eq!(r.msg_type, Some(MessageType::Offer), "{r:?}");
    r.yiaddr
}

/// The raw export in CSV form.
#[track_caller]
fn export_csv(d: &Daemon) -> String {
    let out = d.ctl(&["leases", "export", "--format", "csv"]);
    assert!(
        out.status.success(),
        "export csv: {} {}",
        out.status,
        out.stderr
    );
    out.stdout
}

fn export_addresses(d: &Daemon) -> Vec<String> {
    d.export()
        .iter()
        .filter_map(|l| l["address"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn kea_csv_import_lands_in_the_table_and_clients_get_their_address_back() {
    if !preflight("import_kea", &[]) {
        return;
    }
    let t = Topology::new("impkea");
    let d = Daemon::start(&t.lab, &t.srv, &config(t.lab.dir()));
    let agent = TestClient::relay(&t.rly, RELAY1_IP, SERVER_IP).expect("relay agent socket");
    let n = now();
    let (e1, e2, e3, past) = (n + 3000, n + 2000, n + 500, n - 100);
    let csv = format!(
        "address,hwaddr,client_id,valid_lifetime,expire,subnet_id,fqdn_fwd,fqdn_rev,hostname,state,user_context\n\
         198.18.1.110,02:aa:00:00:00:01,,3600,{e1},1,0,0,host-1,0,\n\
         198.18.1.111,02:aa:00:00:00:02,01:02:aa:00:00:00:02,3600,{e2},1,0,0,,0,\n\
         198.18.1.112,,,3600,{e3},1,0,0,,1,\n\
         198.18.1.113,02:aa:00:00:00:04,,3600,{past},1,0,0,,2,\n\
         198.18.7.5,02:aa:00:00:00:05,,3600,{e1},1,0,0,,0,\n"
    );
    let file = t.lab.path("kea-leases4.csv");
    std::fs::write(&file, csv).expect("write csv");

    let sum = import_ok(&d, "kea-csv", &file);
    assert_eq!(sum["imported"].as_u64(), Some(4), "{sum}");
    assert_eq!(sum["rejected"].as_u64(), Some(1), "{sum}");
    let errors = sum["errors"].as_array().cloned().unwrap_or_default();
    assert_eq!(errors.len(), 1, "{sum}");
    assert!(
        errors[0].as_str().is_some_and(|e| e.contains("198.18.7.5")),
        "the rejection should name the address outside every pool: {sum}"
    );

    check_lease(
        &lease(&d, "198.18.1.110"),
        "leased",
        Some("02:aa:00:00:00:01"),
        None,
        e1,
    );
    check_lease(
        &lease(&d, "198.18.1.111"),
        "leased",
        Some("02:aa:00:00:00:02"),
        Some("0102aa00000002"),
        e2,
    );
    check_lease(&lease(&d, "198.18.1.112"), "declined", None, None, e3);
    check_lease(
        &lease(&d, "198.18.1.113"),
        "expired",
        Some("02:aa:00:00:00:04"),
        None,
        past,
    );
    assert!(
        d.lease(ip("198.18.7.5")).is_none(),
        "an address outside every pool has a lease"
    );

    let by_mac = d.leases_by_mac("02:aa:00:00:00:01");
    assert!(
        by_mac.iter().any(|l| l["address"] == "198.18.1.110"),
        "leases --mac does not find the imported lease: {by_mac:?}"
    );
    let by_mac = d.leases_by_mac("02:aa:00:00:00:02");
    assert!(
        by_mac.iter().any(|l| l["address"] == "198.18.1.111"),
        "leases --mac does not find the imported client-id lease: {by_mac:?}"
    );

    let exported = export_addresses(&d);
    for a in [
        "198.18.1.110",
        "198.18.1.111",
        "198.18.1.112",
        "198.18.1.113",
    ] {
        assert!(
            exported.iter().any(|e| e == a),
            "{a} missing from export json: {exported:?}"
        );
    }
    let csv_out = export_csv(&d);
    assert!(
        csv_out.lines().next() == Some("address,hwaddr,client_id,state,expires"),
        "{csv_out}"
    );
    for row in [
        format!("198.18.1.110,02:aa:00:00:00:01,,leased,{e1}"),
        format!("198.18.1.111,02:aa:00:00:00:02,0102aa00000002,leased,{e2}"),
        format!("198.18.1.112,,,declined,{e3}"),
        format!("198.18.1.113,02:aa:00:00:00:04,,expired,{past}"),
    ] {
        assert!(
            csv_out.lines().any(|l| l == row),
            "no row {row} in export csv:\n{csv_out}"
        );
    }

    // Imported clients are known: each gets its own address back.
    let by_hw = Identity::mac([0x02, 0xaa, 0, 0, 0, 1]);
    assert_eq!(offered(&agent, &by_hw), ip("198.18.1.110"));
    let by_cid = Identity {
        mac: [0x02, 0xaa, 0, 0, 0, 2],
        client_id: Some(vec![1, 2, 0xaa, 0, 0, 0, 2]),
    };
    assert_eq!(offered(&agent, &by_cid), ip("198.18.1.111"));
    let expired = Identity::mac([0x02, 0xaa, 0, 0, 0, 4]);
    assert_eq!(offered(&agent, &expired), ip("198.18.1.113"));
    // A stranger gets neither those nor the declined address.
    let stranger = offered(&agent, &Identity::mac(test_mac(0x80, 1)));
    assert!(
        ![
            "198.18.1.110",
            "198.18.1.111",
            "198.18.1.112",
            "198.18.1.113"
        ]
        .contains(&stranger.to_string().as_str()),
        "a new client was offered imported address {stranger}"
    );
}

#[test]
fn isc_dhcpd_leases_import_lands_in_the_table_and_clients_get_their_address_back() {
    if !preflight("import_isc", &[]) {
        return;
    }
    let t = Topology::new("impisc");
    let d = Daemon::start(&t.lab, &t.srv, &config(t.lab.dir()));
    let agent = TestClient::relay(&t.rly, RELAY1_IP, SERVER_IP).expect("relay agent socket");
    let n = now();
    let (e1, e2, past) = (n + 3000, n + 600, n - 100);
    // 2030/01/08 10:00:00 UTC (dhcpd writes UTC).
    let e4 = 1_894_096_800u64;
    let leases = format!(
        "# The format of this file is documented in the dhcpd.leases(5) manual page.\n\
         authoring-byte-order little-endian;\n\
         lease 198.18.1.120 {{\n  starts 3 2025/01/08 10:00:00;\n  ends epoch {e1};\n  \
         binding state active;\n  next binding state free;\n  hardware ethernet 02:bb:00:00:00:01;\n  \
         uid \"\\001\\002\\273\\000\\000\\000\\001\";\n  client-hostname \"pc-1\";\n}}\n\
         lease 198.18.1.121 {{\n  ends epoch {e2};\n  binding state abandoned;\n}}\n\
         lease 198.18.1.122 {{\n  ends epoch {past};\n  binding state expired;\n  \
         hardware ethernet 02:bb:00:00:00:03;\n}}\n\
         lease 198.18.9.9 {{\n  ends epoch {e1};\n  binding state active;\n  \
         hardware ethernet 02:bb:00:00:00:09;\n}}\n\
         lease 198.18.1.123 {{\n  starts 2 2030/01/07 10:00:00;\n  ends 3 2030/01/08 10:00:00;\n  \
         binding state active;\n  hardware ethernet 02:bb:00:00:00:04;\n}}\n"
    );
    let file = t.lab.path("dhcpd.leases");
    std::fs::write(&file, leases).expect("write leases");

    let sum = import_ok(&d, "isc", &file);
    assert_eq!(sum["imported"].as_u64(), Some(3), "{sum}");
    assert_eq!(sum["rejected"].as_u64(), Some(1), "{sum}");
    assert_eq!(
        sum["skipped"].as_u64(),
        Some(1),
        "expired lease not skipped: {sum}"
    );
    assert!(
        sum["errors"].as_array().is_some_and(|e| e
            .iter()
            .any(|m| m.as_str().is_some_and(|m| m.contains("198.18.9.9")))),
        "the rejection should name the address outside every pool: {sum}"
    );

    check_lease(
        &lease(&d, "198.18.1.120"),
        "leased",
        Some("02:bb:00:00:00:01"),
        Some("0102bb00000001"),
        e1,
    );
    check_lease(&lease(&d, "198.18.1.121"), "declined", None, None, e2);
    check_lease(
        &lease(&d, "198.18.1.123"),
        "leased",
        Some("02:bb:00:00:00:04"),
        None,
        e4,
    );
    let skipped = d.lease(ip("198.18.1.122"));
    assert!(
        skipped.as_ref().is_none_or(|l| l["state"] == "free"),
        "a skipped (expired) dhcpd lease was imported: {skipped:?}"
    );

    let by_mac = d.leases_by_mac("02:bb:00:00:00:04");
    assert!(
        by_mac.iter().any(|l| l["address"] == "198.18.1.123"),
        "leases --mac does not find the imported lease: {by_mac:?}"
    );
    let exported = export_addresses(&d);
    for a in ["198.18.1.120", "198.18.1.121", "198.18.1.123"] {
        assert!(
            exported.iter().any(|e| e == a),
            "{a} missing from export json: {exported:?}"
        );
    }
    let csv_out = export_csv(&d);
    let row = format!("198.18.1.120,02:bb:00:00:00:01,0102bb00000001,leased,{e1}");
    assert!(
        csv_out.lines().any(|l| l == row),
        "no row {row} in export csv:\n{csv_out}"
    );

    let by_uid = Identity {
        mac: [0x02, 0xbb, 0, 0, 0, 1],
        client_id: Some(vec![1, 2, 0xbb, 0, 0, 0, 1]),
    };
    assert_eq!(offered(&agent, &by_uid), ip("198.18.1.120"));
    assert_eq!(
        offered(&agent, &Identity::mac([0x02, 0xbb, 0, 0, 0, 4])),
        ip("198.18.1.123")
    );
}

/// Deterministic junk: xorshift bytes, no newline in the first 4 KiB.
fn junk(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let b = (x >> 24) as u8;
            if i < 4096 && b == b'\n' {
                0
            } else {
                b
            }
        })
        .collect()
}

#[test]
fn garbage_import_files_fail_clearly_and_leave_the_daemon_alone() {
    if !preflight("import_garbage", &[]) {
        return;
    }
    let t = Topology::new("impjnk");
    let d = Daemon::start(&t.lab, &t.srv, &config(t.lab.dir()));
    let agent = TestClient::relay(&t.rly, RELAY1_IP, SERVER_IP).expect("relay agent socket");
    agent
        .dora(&Identity::mac(test_mac(0x81, 1)), &Extras::default())
        .expect("DORA");
    let before = d.export();
    let pid = d.pid();
    let file = t.lab.path("junk.bin");
    std::fs::write(&file, junk(256 << 10)).expect("write junk");

    // Kea CSV: the header is unusable, so the import stops with an error naming the line.
    let out = import(&d, "kea-csv", &file);
    assert_eq!(
        out.status.code(),
        Some(1),
        "kea-csv junk: {} stdout {} stderr {}",
        out.status,
        out.stdout,
        out.stderr
    );
    let err = out
        .json
        .as_ref()
        .and_then(|j| j["error"].as_str())
        .unwrap_or_else(|| panic!("kea-csv junk: no JSON error: {} {}", out.stdout, out.stderr))
        .to_string();
    assert!(
        err.contains("line 1") && err.contains("junk.bin"),
        "kea-csv junk: the error should name the file and the header line: {err}"
    );

    // dhcpd.leases: nothing in the junk is a lease. Either the import fails, or it completes
    // with nothing imported and the junk reported as rejected records with their lines (never
    // a silent "0 imported" as for an empty file).
    let out = import(&d, "isc", &file);
    let j = out.json.clone().unwrap_or_else(|| {
        panic!(
            "isc junk: stdout is not JSON: {} / {}",
            out.stdout, out.stderr
        )
    });
    if out.status.success() {
        assert_eq!(j["imported"].as_u64(), Some(0), "isc junk: {j}");
        assert!(
            j["rejected"].as_u64().is_some_and(|r| r > 0),
            "isc junk: nothing rejected: {j}"
        );
        assert!(
            j["errors"].as_array().is_some_and(|e| e
                .first()
                .and_then(Value::as_str)
                .is_some_and(|m| m.starts_with("line "))),
            "isc junk: the errors should carry line numbers: {j}"
        );
    } else {
        assert_eq!(out.status.code(), Some(1), "isc junk: {} {j}", out.status);
        assert!(
            j["error"].as_str().is_some_and(|e| !e.is_empty()),
            "isc junk: {j}"
        );
    }

    // An empty file and a header-only Kea file import nothing and are not errors.
    let header_only = t.lab.path("header.csv");
    std::fs::write(
        &header_only,
        "address,hwaddr,client_id,valid_lifetime,expire,subnet_id,fqdn_fwd,fqdn_rev,hostname,state,user_context\n",
    )
    .expect("write header");
    let sum = import_ok(&d, "kea-csv", &header_only);
    assert_eq!(sum["imported"].as_u64(), Some(0), "{sum}");

    // The daemon is as it was.
    assert!(d.process().is_running(), "{}", d.process().stderr());
    assert_eq!(d.status()["pid"].as_u64(), Some(u64::from(pid)));
    assert_eq!(
        d.export(),
        before,
        "the table changed after garbage imports"
    );
    let r = agent
        .discover(&Identity::mac(test_mac(0x81, 2)), &Extras::default())
        .expect("DISCOVER after garbage imports");
    assert_eq!(r.msg_type, Some(MessageType::Offer));
}

/// Connects to the control socket with read/write timeouts.
fn connect(sock: &Path) -> UnixStream {
    let s = UnixStream::connect(sock).unwrap_or_else(|e| panic!("connect {}: {e}", sock.display()));
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.set_write_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s
}

/// Sends one raw request line and reads one response line.
fn raw_exchange(s: &UnixStream, line: &str) -> Value {
    let mut w = s;
    w.write_all(line.as_bytes()).expect("write request");
    let mut resp = String::new();
    BufReader::new(s)
        .read_line(&mut resp)
        .expect("read response");
    serde_json::from_str(resp.trim()).unwrap_or_else(|e| panic!("response {resp:?}: {e}"))
}

#[test]
fn idle_connections_past_the_cap_are_closed_and_dhcp_keeps_going() {
    if !preflight("ctl_idle_conns", &[]) {
        return;
    }
    let t = Topology::new("ctlidl");
    let cfg = config(t.lab.dir());
    let d = Daemon::start(&t.lab, &t.srv, &cfg);
    let agent = TestClient::relay(&t.rly, RELAY1_IP, SERVER_IP).expect("relay agent socket");
    let pid = d.pid();

    let streams: Vec<UnixStream> = (0..70).map(|_| connect(&cfg.control_socket)).collect();
    for s in &streams {
        s.set_nonblocking(true).expect("nonblocking");
    }
    // Connections past the cap (64) are closed at once; the others stay open.
    let mut closed = vec![false; streams.len()];
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline && closed.iter().filter(|c| **c).count() < 6 {
        for (i, mut s) in streams.iter().enumerate() {
            let mut buf = [0u8; 256];
            if !closed[i] && matches!(s.read(&mut buf), Ok(0)) {
                closed[i] = true;
            }
        }
        thread::sleep(Duration::from_millis(50));
    }
    let n_closed = closed.iter().filter(|c| **c).count();
    assert!(
        n_closed >= 70 - 64,
        "only {n_closed} of 70 idle connections were closed; the cap is 64"
    );

    // DHCP is served meanwhile.
    let b = agent
        .dora(&Identity::mac(test_mac(0x82, 1)), &Extras::default())
        .expect("DORA while the control socket is full");
    assert_eq!(b.address.octets()[..3], [198, 18, 1]);

    // A connection that was kept is still served.
    let kept = closed
        .iter()
        .position(|c| !c)
        .expect("some connection kept");
    streams[kept].set_nonblocking(false).expect("blocking");
    let resp = raw_exchange(&streams[kept], "{\"v\": 1, \"cmd\": \"status\"}\n");
    assert_eq!(resp["ok"], true, "{resp}");

    drop(streams);
    // Once they are gone, prodhcpctl gets in again.
    let deadline = Instant::now() + Duration::from_secs(5);
    let st = loop {
        let out = d.ctl(&["status"]);
        if out.status.success() {
            break out.json.expect("status JSON");
        }
        assert!(
            Instant::now() < deadline,
            "prodhcpctl status still fails 5 s after the idle connections closed: {} {}",
            out.status,
            out.stderr
        );
        thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(st["pid"].as_u64(), Some(u64::from(pid)), "{st}");
    assert!(d.process().is_running(), "{}", d.process().stderr());
}

#[test]
fn a_20_mib_line_gets_an_error_and_the_connection_closed() {
    if !preflight("ctl_huge_line", &[]) {
        return;
    }
    let t = Topology::new("ctlbig");
    let cfg = config(t.lab.dir());
    let d = Daemon::start(&t.lab, &t.srv, &cfg);
    let agent = TestClient::relay(&t.rly, RELAY1_IP, SERVER_IP).expect("relay agent socket");
    let pid = d.pid();

    let mut s = connect(&cfg.control_socket);
    let chunk = vec![b'a'; 1 << 20];
    let mut sent_mib = 0;
    let mut write_error = None;
    for _ in 0..20 {
        match s.write_all(&chunk) {
            Ok(()) => sent_mib += 1,
            Err(e) => {
                write_error = Some(e);
                break;
            }
        }
    }
    // The daemon answers with an error line and closes: read to the end (bounded).
    let mut resp = Vec::new();
    let read = s.read_to_end(&mut resp);
    let text = String::from_utf8_lossy(&resp).into_owned();
    // Closed means EOF or a reset: a Unix stream socket closed while its receive queue still
    // holds unread bytes (ours: the rest of the 20 MiB) resets the peer, whose read then fails
    // with ECONNRESET after the data queued before the close. Which one happens depends on
    // timing (the test flaked on it); the error line must have arrived either way (below).
    let closed = match &read {
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    };
    assert!(
        closed,
        "the connection was not closed after {sent_mib} MiB (write error {write_error:?}): \
         {read:?}, got {text:?}"
    );
    let first = text.lines().next().unwrap_or("");
    let v: Value = serde_json::from_str(first)
        .unwrap_or_else(|e| panic!("no JSON error line ({e}) after {sent_mib} MiB: {text:?}"));
    assert_eq!(v["ok"], false, "{v}");
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("longer") || e.contains("too long")),
        "the error should say the line is too long: {v}"
    );

    assert!(d.process().is_running(), "{}", d.process().stderr());
    assert_eq!(d.status()["pid"].as_u64(), Some(u64::from(pid)));
    let r = agent
        .discover(&Identity::mac(test_mac(0x83, 1)), &Extras::default())
        .expect("DISCOVER after the huge line");
    assert_eq!(r.msg_type, Some(MessageType::Offer));
}

#[test]
fn a_request_of_another_protocol_version_is_refused_by_name() {
    if !preflight("ctl_version", &[]) {
        return;
    }
    let t = Topology::new("ctlver");
    let cfg = config(t.lab.dir());
    let d = Daemon::start(&t.lab, &t.srv, &cfg);

    // The same request with v 1 works, so the refusal is about the version.
    let ok = raw_exchange(
        &connect(&cfg.control_socket),
        "{\"v\": 1, \"cmd\": \"status\"}\n",
    );
    assert_eq!(ok["ok"], true, "{ok}");
    let resp = raw_exchange(
        &connect(&cfg.control_socket),
        "{\"v\": 2, \"cmd\": \"status\"}\n",
    );
    assert_eq!(resp["ok"], false, "{resp}");
    let err = resp["error"].as_str().unwrap_or("");
    assert!(
        err.contains("version") && err.contains('2'),
        "the error should name the unsupported version: {resp}"
    );
    assert!(resp.get("data").is_none_or(Value::is_null), "{resp}");
    assert!(d.process().is_running(), "{}", d.process().stderr());
    assert!(d.ctl(&["status"]).status.success());
}

#[test]
fn import_skips_reserved_and_held_addresses_unless_forced() {
    if !preflight("import_protect", &[]) {
        return;
    }
    let t = Topology::new("impprot");
    let cfg = ServerConfig::new(t.lab.dir()).subnet(
        SubnetConfig::new(NET1, POOL)
            .option("routers", "198.18.1.1")
            .reserve("02:00:00:00:00:77", "198.18.1.120"),
    );
    let d = Daemon::start(&t.lab, &t.srv, &cfg);
    let agent = TestClient::relay(&t.rly, RELAY1_IP, SERVER_IP).expect("relay agent socket");
    let holder = Identity::mac(test_mac(0x71, 1));
    let held = agent
        .dora(&holder, &Extras::default())
        .expect("a client holds an address")
        .address;
    assert_eq!(lease(&d, "198.18.1.120")["state"], "reserved");

    let e = now() + 3000;
    let csv = format!(
        "address,hwaddr,client_id,valid_lifetime,expire,subnet_id,fqdn_fwd,fqdn_rev,hostname,state,user_context\n\
         198.18.1.120,02:bb:00:00:00:01,,3600,{e},1,0,0,,0,\n\
         {held},02:bb:00:00:00:02,,3600,{e},1,0,0,,0,\n\
         198.18.1.140,02:bb:00:00:00:03,,3600,{e},1,0,0,,0,\n"
    );
    let file = t.lab.path("kea-leases4.csv");
    std::fs::write(&file, csv).expect("write csv");

    let out = import(&d, "kea-csv", &file);
    let sum = out
        .json
        .clone()
        .unwrap_or_else(|| panic!("no JSON: {} {}", out.stdout, out.stderr));
    assert!(out.status.success(), "{sum} {}", out.stderr);
    assert_eq!(sum["imported"].as_u64(), Some(1), "{sum}");
    assert_eq!(sum["skipped"].as_u64(), Some(2), "{sum}");
    assert_eq!(sum["rejected"].as_u64(), Some(0), "{sum}");
    let rows = sum["skipped_rows"].as_array().cloned().unwrap_or_default();
    let got: Vec<(u64, String)> = rows
        .iter()
        .map(|r| {
            (
                r["line"].as_u64().expect("line"),
                r["address"].as_str().expect("address").to_string(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![(2, "198.18.1.120".to_string()), (3, held.to_string())],
        "{sum}"
    );
    for line in [
        "line 2: 198.18.1.120 skipped: the address is reserved".to_string(),
        format!("line 3: {held} skipped: the address is leased to another client"),
    ] {
        assert!(
            out.stderr.contains(&line),
            "no {line:?} in:\n{}",
            out.stderr
        );
    }
    // Nothing was taken from the reservation or the holder.
    assert_eq!(lease(&d, "198.18.1.120")["state"], "reserved");
    let l = lease(&d, &held.to_string());
    assert_eq!(l["state"], "leased");
    assert_eq!(l["hwaddr"], holder.mac_string().as_str());
    assert_eq!(lease(&d, "198.18.1.140")["hwaddr"], "02:bb:00:00:00:03");

    // --force overwrites both.
    let out = d.ctl(&[
        "leases",
        "import",
        "--force",
        "--format",
        "kea-csv",
        file.to_str().expect("utf-8 path"),
    ]);
    let sum = out.json.clone().expect("JSON");
    assert!(out.status.success(), "{sum} {}", out.stderr);
    assert_eq!(sum["imported"].as_u64(), Some(3), "{sum}");
    assert_eq!(sum["skipped"].as_u64(), Some(0), "{sum}");
    assert_eq!(lease(&d, &held.to_string())["hwaddr"], "02:bb:00:00:00:02");
    assert_eq!(lease(&d, "198.18.1.120")["hwaddr"], "02:bb:00:00:00:01");
}

//! Issue 9: the rsyslog lab harness proven against the real rsyslog, without prodhcp.
//!
//! 1. 1,000 octet-counted RFC 5424 audit messages (prodhcp's own formatter) over one TCP
//!    connection, with an rsyslog restart in the middle: the collector's log gives back every
//!    message byte for byte, seq 1..1000 in order, fields unescaped, and the comparator finds
//!    every generator event.
//! 2. The packaged drop-in (packaging/rsyslog/30-prodhcp.conf) passes `rsyslogd -N1` alone and
//!    inside Debian's rsyslog.conf, and run for real (paths and SIEM address rewritten into the
//!    lab) it writes prodhcp's records to its file, drops other senders' messages, and forwards
//!    the records octet-counted to a "SIEM" (a second collector) that was down when they arrived.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use dhcpperf::record::RecordEvent;
use prodhcp_audit::rfc5424::{octet_counted, Rfc5424};
use prodhcp_audit::{AuditEvent, EventKind, Origin};
use prodhcp_systests::audit_check::compare;
use prodhcp_systests::lab::{run_bounded, tcp_connect_in, Lab};
use prodhcp_systests::preflight_lab;
use prodhcp_systests::rsyslog::{wait_tcp_listening, Rsyslog};

const COLLECTOR: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 10514);

/// Event `seq` (1-based): commits, renews and releases over 200 clients; every 7th has a
/// host name with the characters RFC 5424 escapes.
fn event(seq: u64) -> AuditEvent {
    let kind = match seq % 3 {
        1 => EventKind::Commit,
        2 => EventKind::Renew,
        _ => EventKind::Release,
    };
    let origin = Origin {
        server: "dhcp1".into(),
        node: "a".into(),
        seq,
    };
    let mut ev = AuditEvent::bare(kind, &origin, 1_764_644_400_000 + seq);
    let n = (seq % 200) as u8;
    ev.ip = Some(Ipv4Addr::new(198, 18, 1, n));
    ev.mac = Some(format!("02:00:00:00:01:{n:02x}"));
    if seq.is_multiple_of(7) {
        ev.hostname = Some(format!("h\"{seq}\\x]y"));
    }
    if kind != EventKind::Release {
        ev.lease_start = Some(1_764_644_400);
        ev.lease_end = Some(1_764_648_000);
        ev.lease_seconds = Some(3600);
    }
    ev
}

fn formatter() -> Rfc5424 {
    Rfc5424 {
        procid: Some(4242),
        ..Rfc5424::default()
    }
}

/// Sends events `seqs` octet-counted on one new connection (one write per frame) and closes it.
fn send(ns: &str, to: SocketAddrV4, seqs: std::ops::RangeInclusive<u64>) {
    let mut s: TcpStream =
        tcp_connect_in(ns, to, Duration::from_secs(5)).expect("connect to the collector");
    let f = formatter();
    for seq in seqs {
        s.write_all(octet_counted(&f.format(&event(seq))).as_bytes())
            .expect("send a frame");
    }
    s.flush().expect("flush");
}

/// What dhcpperf would have recorded for event `seq` (commit/renew → ACK, release → RELEASE).
fn generator_event(seq: u64) -> RecordEvent {
    let ev = event(seq);
    let (mac, address) = (ev.mac.clone().unwrap_or_default(), ev.ip.unwrap());
    if ev.kind == EventKind::Release {
        RecordEvent::Release {
            seq,
            t_ms: 0,
            mac,
            client_id: None,
            address,
        }
    } else {
        RecordEvent::Ack {
            seq,
            t_ms: 0,
            mac,
            client_id: None,
            address,
            lease_end: 0,
            server_id: None,
        }
    }
}

#[test]
fn rsyslog_stores_every_octet_counted_audit_message_intact_and_in_order() {
    if !preflight_lab("rsyslog_lab", &["rsyslogd"]) {
        return;
    }
    let lab = Lab::new("rsyslg");
    let ns = lab.add_namespace("s");
    let mut r = Rsyslog::start(&lab, &ns, "collector", COLLECTOR);
    send(&ns, COLLECTOR, 1..=500);
    // rsyslog drops what it has not read from a connection when it stops: wait for the file.
    assert_eq!(r.wait_for_records(500, Duration::from_secs(10)).len(), 500);
    r.stop();
    assert!(!r.is_running());
    assert_eq!(r.records().len(), 500, "{}", r.log_path().display());
    // The restart appends to the same file.
    r.start_again();
    send(&ns, COLLECTOR, 501..=1000);
    assert_eq!(
        r.wait_for_records(1000, Duration::from_secs(10)).len(),
        1000
    );
    r.stop();

    let recs = r.records();
    let seqs: Vec<u64> = recs.iter().map(|x| x.seq).collect();
    assert_eq!(seqs, (1..=1000).collect::<Vec<u64>>());
    let f = formatter();
    for rec in &recs {
        let ev = event(rec.seq);
        assert_eq!(rec.raw, f.format(&ev), "seq {} not intact", rec.seq);
        assert_eq!(rec.event, ev.kind.name());
        assert_eq!(rec.ip, ev.ip);
        assert_eq!(rec.mac, ev.mac);
        assert_eq!(rec.params.get("hostname"), ev.hostname.as_ref());
        assert_eq!(rec.params["server"], "dhcp1");
    }
    assert_eq!(recs[6].params["hostname"], "h\"7\\x]y");

    // The comparator over the same data: lossless; with one record taken out, it says which.
    let gen: Vec<RecordEvent> = (1..=1000).map(generator_event).collect();
    let c = compare(&gen, &recs);
    assert!(c.is_lossless(), "{c}");
    assert_eq!((c.acks_seen, c.releases_seen), (667, 333));
    assert!(c.extra_lease_records.is_empty(), "{c}");
    let mut fewer = recs.clone();
    fewer.remove(499);
    let c = compare(&gen, &fewer);
    assert_eq!(c.gaps, [(500, 500)], "{c}");
    assert_eq!(c.missing.len(), 1, "{c}");
}

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

/// `rsyslogd -N1 -f conf`: passes, and says nothing about errors or warnings.
#[track_caller]
fn validate(conf: &Path) {
    let out = run_bounded(
        &["rsyslogd", "-N1", "-f", conf.to_str().unwrap()],
        Duration::from_secs(30),
    );
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success()
            && !text.to_lowercase().contains("error")
            && !text.to_lowercase().contains("warning"),
        "rsyslogd -N1 -f {}: {text}",
        conf.display()
    );
}

#[test]
fn the_packaged_drop_in_validates_keeps_and_forwards_the_records() {
    if !preflight_lab("rsyslog_drop_in", &["rsyslogd"]) {
        return;
    }
    let drop_in = repo_file("packaging/rsyslog/30-prodhcp.conf");
    let text = std::fs::read_to_string(&drop_in).expect("read the drop-in");
    let lab = Lab::new("rsdrop");

    // -N1 alone (with the workDirectory its disk queue needs) and inside Debian's master file.
    let work = lab.path("drop.work");
    std::fs::create_dir_all(&work).unwrap();
    let wrapper = lab.path("wrapper.conf");
    std::fs::write(
        &wrapper,
        format!(
            "global(workDirectory=\"{}\")\ninclude(file=\"{}\")\n",
            work.display(),
            drop_in.display()
        ),
    )
    .unwrap();
    validate(&wrapper);
    if let Ok(master) = std::fs::read_to_string("/etc/rsyslog.conf") {
        assert!(master.contains("$IncludeConfig /etc/rsyslog.d/*.conf"));
        let debian = lab.path("debian.conf");
        let master = master.replace(
            "$IncludeConfig /etc/rsyslog.d/*.conf",
            &format!("$IncludeConfig {}", drop_in.display()),
        );
        std::fs::write(&debian, master).unwrap();
        validate(&debian);
    } else {
        eprintln!("no /etc/rsyslog.conf: validated the drop-in with a wrapper only");
    }

    // Run it: the file and the SIEM address rewritten into the lab, retries every second.
    let ns = lab.add_namespace("s");
    let audit_file = lab.path("var-log-prodhcp/audit-syslog.log");
    let siem_addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 10515);
    let intake = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 6514);
    let mut n_replaced = 0;
    let mut sub = |t: String, from: &str, to: &str| {
        assert!(t.contains(from), "{from} not in the drop-in");
        n_replaced += 1;
        t.replace(from, to)
    };
    let run_text = sub(
        text,
        "/var/log/prodhcp/audit-syslog.log",
        audit_file.to_str().unwrap(),
    );
    let run_text = sub(
        run_text,
        "target=\"198.18.0.53\" port=\"514\"",
        "target=\"127.0.0.1\" port=\"10515\"",
    );
    let run_text = sub(
        run_text,
        "action.resumeInterval=\"10\"",
        "action.resumeInterval=\"1\"",
    );
    assert_eq!(n_replaced, 3);
    let run_conf = lab.path("drop-in-run.conf");
    std::fs::write(
        &run_conf,
        format!(
            "global(workDirectory=\"{}\" net.enableDNS=\"off\")\n{run_text}",
            work.display()
        ),
    )
    .unwrap();
    validate(&run_conf);
    let relay = lab.spawn(
        &ns,
        "rsyslogd-dropin",
        &[
            "rsyslogd",
            "-n",
            "-f",
            run_conf.to_str().unwrap(),
            "-i",
            lab.path("drop-in.pid").to_str().unwrap(),
        ],
    );
    wait_tcp_listening(&ns, intake, Duration::from_secs(10), || relay.is_running())
        .unwrap_or_else(|e| panic!("drop-in rsyslogd: {e}: {}", relay.stderr()));

    // The SIEM is down: 100 records and one message from another sender arrive.
    send(&ns, intake, 1..=100);
    let mut s = tcp_connect_in(&ns, intake, Duration::from_secs(5)).unwrap();
    let other = "<13>1 2025-12-02T03:00:00Z host other - - - not an audit record";
    s.write_all(octet_counted(other).as_bytes()).unwrap();
    drop(s);
    let f = formatter();
    let want: Vec<String> = (1..=100).map(|q| f.format(&event(q))).collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    let kept = loop {
        let t = std::fs::read_to_string(&audit_file).unwrap_or_default();
        if t.lines().count() >= 101 || Instant::now() >= deadline {
            break t;
        }
        if t.lines().count() == 100 {
            // Give the other sender's message a moment to (wrongly) arrive.
            thread::sleep(Duration::from_millis(500));
            break std::fs::read_to_string(&audit_file).unwrap_or_default();
        }
        thread::sleep(Duration::from_millis(100));
    };
    assert!(
        kept.lines().eq(want.iter().map(String::as_str)),
        "the drop-in's file {} is not exactly the 100 records",
        audit_file.display()
    );

    // The SIEM comes up: the queued records arrive, octet-counted, intact and in order
    // (omfwd may send one again when it resumes: at-least-once, told apart by seq).
    let siem = Rsyslog::start(&lab, &ns, "siem", siem_addr);
    let got = siem.wait_for_records(100, Duration::from_secs(30));
    let mut seen = std::collections::HashSet::new();
    let first_copies: Vec<&str> = got
        .iter()
        .filter(|r| seen.insert(r.seq))
        .map(|r| r.raw.as_str())
        .collect();
    assert!(
        first_copies == want.iter().map(String::as_str).collect::<Vec<_>>(),
        "the SIEM got {} records, {} distinct, not seq 1..=100 intact in order; drop-in stderr: {}",
        got.len(),
        first_copies.len(),
        relay.stderr()
    );
    let gen: Vec<RecordEvent> = (1..=100).map(generator_event).collect();
    let c = compare(&gen, &got);
    assert!(
        c.is_lossless() && c.duplicates.conflicting.is_empty(),
        "{c}"
    );
    eprintln!("SIEM: {c}");
    assert!(
        !std::fs::read_to_string(siem.log_path())
            .unwrap_or_default()
            .contains("not an audit record"),
        "the other sender's message was forwarded"
    );
}

//! A private rsyslog collector inside a lab namespace, and the audit records it wrote.
//!
//! [`Rsyslog::start`] writes `<name>.conf` in the lab directory and runs
//! `rsyslogd -n -f <name>.conf -i <name>.pid` in the namespace with [`Lab::spawn`] (so the lab
//! stops it on drop). The configuration ([`render_config`]):
//!
//! - `global(workDirectory=<lab dir>/<name>.work)`: no use of /var/spool/rsyslog; no
//!   `privilege.dropToUser` / `dropToGroup`, so it stays root (nothing to drop in a lab);
//!   `net.enableDNS="off"` (no reverse lookups of the sender);
//! - no `imuxsock`, no `imklog`, no `imjournal`: it never touches the host's /dev/log, kernel
//!   log or journal; its only inputs are `imtcp` on the given address and port (RFC 6587
//!   octet-counted and LF-framed messages) and, with [`Rsyslog::start_with_udp`], `imudp`;
//! - every received message goes to `<lab dir>/<name>.log` with the template `%rawmsg%\n`:
//!   the message exactly as received (the octet count of a TCP frame removed), one per line;
//!   rsyslog's own messages go to `<name>.internal.log` instead;
//! - the main queue gets 10 s to drain on shutdown, so a SIGTERM never drops what was received.
//!
//! [`Rsyslog::records`] reads the log back as [`AuditRecord`]s: every line whose structured
//! data has the SD-ID [`AUDIT_SD_ID`], parsed with [`crate::rfc5424::parse`].

use std::collections::BTreeMap;
use std::fs;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::lab::{tcp_connect_in, Lab, Proc};
use crate::rfc5424::{self, ParseError};

/// The SD-ID of prodhcp's audit records (the documentation PEN 32473).
pub const AUDIT_SD_ID: &str = "lease@32473";
/// How long [`Rsyslog::start`] waits for the TCP listener.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`Rsyslog::stop`] waits after SIGTERM (longer than the 10 s queue drain).
pub const STOP_GRACE: Duration = Duration::from_secs(20);

/// One audit record as the collector stored it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// The `seq` parameter.
    pub seq: u64,
    /// The `event` parameter (`commit`, `renew`, `release`, …).
    pub event: String,
    /// The `ip` parameter, if present.
    pub ip: Option<Ipv4Addr>,
    /// The `mac` parameter, if present.
    pub mac: Option<String>,
    /// The whole stored line (without its newline).
    pub raw: String,
    /// Every parameter of the `lease@32473` element, unescaped.
    pub params: BTreeMap<String, String>,
}

/// Why a stored line is not a valid audit record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The line is not RFC 5424.
    #[error("line {line}: {source}: {raw}")]
    Syntax {
        /// 1-based line number in the log.
        line: usize,
        /// The parser's reason.
        source: ParseError,
        /// The line.
        raw: String,
    },
    /// The `lease@32473` element lacks a field or has a bad one.
    #[error("line {line}: {what}: {raw}")]
    Field {
        /// 1-based line number in the log.
        line: usize,
        /// What is wrong.
        what: String,
        /// The line.
        raw: String,
    },
}

impl AuditRecord {
    /// The record in `line` (line number `n`, for errors): `Ok(None)` when its structured data
    /// has no [`AUDIT_SD_ID`] element; an error when it is not RFC 5424, when `seq` or `event`
    /// is missing, `seq` is not a number, `ip` not an IPv4 address, or a parameter repeats.
    pub fn from_line(line: &str, n: usize) -> Result<Option<AuditRecord>, RecordError> {
        let raw = line.strip_suffix('\n').unwrap_or(line);
        let raw = raw.strip_suffix('\r').unwrap_or(raw).to_string();
        let msg = rfc5424::parse(&raw).map_err(|source| RecordError::Syntax {
            line: n,
            source,
            raw: raw.clone(),
        })?;
        let Some(el) = msg.element(AUDIT_SD_ID) else {
            return Ok(None);
        };
        let field = |what: String| RecordError::Field {
            line: n,
            what,
            raw: raw.clone(),
        };
        let mut params = BTreeMap::new();
        for (k, v) in &el.params {
            if params.insert(k.clone(), v.clone()).is_some() {
                return Err(field(format!("parameter {k} repeats")));
            }
        }
        let seq = params
            .get("seq")
            .ok_or_else(|| field("no seq".into()))?
            .parse::<u64>()
            .map_err(|e| field(format!("seq: {e}")))?;
        let event = params
            .get("event")
            .ok_or_else(|| field("no event".into()))?
            .clone();
        let ip = match params.get("ip") {
            Some(s) => Some(
                s.parse::<Ipv4Addr>()
                    .map_err(|e| field(format!("ip {s:?}: {e}")))?,
            ),
            None => None,
        };
        let mac = params.get("mac").cloned();
        Ok(Some(AuditRecord {
            seq,
            event,
            ip,
            mac,
            raw,
            params,
        }))
    }
}

/// Every audit record in `text` (a collector's log), in file order. Lines that do not mention
/// [`AUDIT_SD_ID`] are skipped without parsing (other senders' messages); a line that does
/// must be a valid record.
pub fn parse_log(text: &str) -> Result<Vec<AuditRecord>, RecordError> {
    let marker = format!("[{AUDIT_SD_ID}");
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if !line.contains(&marker) {
            continue;
        }
        if let Some(r) = AuditRecord::from_line(line, i + 1)? {
            out.push(r);
        }
    }
    Ok(out)
}

/// rsyslog's configuration for a collector (see the module docs). `work_dir` must exist.
pub fn render_config(
    work_dir: &Path,
    log: &Path,
    internal_log: &Path,
    tcp: SocketAddrV4,
    udp: Option<SocketAddrV4>,
) -> String {
    let mut c = format!(
        "# Test collector written by prodhcp-systests (rsyslog.rs): network inputs only.\n\
         global(workDirectory=\"{work}\" net.enableDNS=\"off\" maxMessageSize=\"64k\")\n\
         main_queue(queue.timeoutShutdown=\"10000\")\n\
         module(load=\"imtcp\")\n\
         input(type=\"imtcp\" address=\"{ta}\" port=\"{tp}\")\n",
        work = work_dir.display(),
        ta = tcp.ip(),
        tp = tcp.port(),
    );
    if let Some(u) = udp {
        c.push_str(&format!(
            "module(load=\"imudp\")\ninput(type=\"imudp\" address=\"{}\" port=\"{}\")\n",
            u.ip(),
            u.port()
        ));
    }
    c.push_str(&format!(
        "template(name=\"rawline\" type=\"string\" string=\"%rawmsg%\\n\")\n\
         if $inputname == \"rsyslogd\" then {{\n\
         \x20   action(type=\"omfile\" file=\"{internal}\")\n\
         \x20   stop\n\
         }}\n\
         action(type=\"omfile\" file=\"{log}\" template=\"rawline\")\n",
        internal = internal_log.display(),
        log = log.display(),
    ));
    c
}

/// Waits (≤ `timeout`) until something accepts TCP connections on `addr` in `ns`, while
/// `alive` says the server still runs. Returns the last connect error on failure.
pub fn wait_tcp_listening(
    ns: &str,
    addr: SocketAddrV4,
    timeout: Duration,
    alive: impl Fn() -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        match tcp_connect_in(ns, addr, Duration::from_millis(500)) {
            Ok(_) => return Ok(()),
            Err(e) if !alive() => return Err(format!("the server exited ({e})")),
            Err(e) if Instant::now() >= deadline => {
                return Err(format!("nothing accepts on {addr} after {timeout:?}: {e}"))
            }
            Err(_) => thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// A private rsyslogd in a lab namespace (see the module docs).
#[derive(Debug)]
pub struct Rsyslog<'lab> {
    lab: &'lab Lab,
    ns: String,
    name: String,
    listen: SocketAddrV4,
    conf: PathBuf,
    pidfile: PathBuf,
    log: PathBuf,
    internal_log: PathBuf,
    proc: Option<Proc>,
}

impl<'lab> Rsyslog<'lab> {
    /// Starts a collector named `name` in namespace `ns` listening on TCP `listen`; waits
    /// (≤ [`START_TIMEOUT`]) until it accepts connections. Panics with rsyslogd's output
    /// when it does not come up.
    #[track_caller]
    pub fn start(lab: &'lab Lab, ns: &str, name: &str, listen: SocketAddrV4) -> Self {
        Self::start_opts(lab, ns, name, listen, None)
    }

    /// As [`Rsyslog::start`], also receiving UDP on `udp`.
    #[track_caller]
    pub fn start_with_udp(
        lab: &'lab Lab,
        ns: &str,
        name: &str,
        listen: SocketAddrV4,
        udp: SocketAddrV4,
    ) -> Self {
        Self::start_opts(lab, ns, name, listen, Some(udp))
    }

    #[track_caller]
    fn start_opts(
        lab: &'lab Lab,
        ns: &str,
        name: &str,
        listen: SocketAddrV4,
        udp: Option<SocketAddrV4>,
    ) -> Self {
        let work = lab.path(&format!("{name}.work"));
        fs::create_dir_all(&work).expect("create rsyslog work dir");
        let mut r = Rsyslog {
            lab,
            ns: ns.to_string(),
            name: name.to_string(),
            listen,
            conf: lab.path(&format!("{name}.conf")),
            pidfile: lab.path(&format!("{name}.pid")),
            log: lab.path(&format!("{name}.log")),
            internal_log: lab.path(&format!("{name}.internal.log")),
            proc: None,
        };
        let text = render_config(&work, &r.log, &r.internal_log, listen, udp);
        fs::write(&r.conf, text).expect("write rsyslog config");
        r.start_again();
        r
    }

    /// Starts rsyslogd again after [`Rsyslog::stop`]: same configuration, same log file
    /// (appended to). Waits as [`Rsyslog::start`] does. Panics if it is still running.
    #[track_caller]
    pub fn start_again(&mut self) {
        assert!(
            !self.is_running(),
            "rsyslog {}: start_again while it runs",
            self.name
        );
        let (conf, pid) = (
            self.conf.to_string_lossy().into_owned(),
            self.pidfile.to_string_lossy().into_owned(),
        );
        let p = self.lab.spawn(
            &self.ns,
            &format!("rsyslogd-{}", self.name),
            &["rsyslogd", "-n", "-f", &conf, "-i", &pid],
        );
        let ready = wait_tcp_listening(&self.ns, self.listen, START_TIMEOUT, || p.is_running());
        if let Err(e) = ready {
            let _ = p.stop(Duration::from_secs(2));
            panic!(
                "rsyslog {} not ready: {e}\nstderr: {}\nstdout: {}\ninternal log: {}",
                self.name,
                p.stderr(),
                p.stdout(),
                fs::read_to_string(&self.internal_log).unwrap_or_default()
            );
        }
        self.proc = Some(p);
    }

    /// Stops rsyslogd: SIGTERM, then waits (≤ [`STOP_GRACE`]) for it to drain its queue and
    /// exit. Panics if it needed SIGKILL (what it had received may then be lost, which must not
    /// be blamed on the sender). No-op when it is not running.
    ///
    /// What rsyslogd has not yet read from a TCP connection when it gets SIGTERM is lost
    /// although the sender's writes succeeded (plain TCP syslog has no acknowledgement; seen
    /// here: 500 frames written just before the stop, none stored). Wait for the records
    /// ([`Rsyslog::wait_for_records`]) before stopping when they must all be there.
    #[track_caller]
    pub fn stop(&mut self) {
        let Some(p) = self.proc.take() else {
            return;
        };
        p.signal(Signal::SIGTERM);
        if p.wait_timeout(STOP_GRACE).is_none() {
            p.stop(Duration::from_millis(1));
            panic!(
                "rsyslog {} did not exit within {STOP_GRACE:?} of SIGTERM (killed)",
                self.name
            );
        }
    }

    /// True while rsyslogd runs.
    pub fn is_running(&self) -> bool {
        self.proc.as_ref().is_some_and(Proc::is_running)
    }

    /// The running process, if any.
    pub fn process(&self) -> Option<&Proc> {
        self.proc.as_ref()
    }

    /// The TCP address it listens on (inside its namespace).
    pub fn listen(&self) -> SocketAddrV4 {
        self.listen
    }

    /// The file every received message is written to, `<lab dir>/<name>.log`.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// rsyslogd's own messages, `<lab dir>/<name>.internal.log`.
    pub fn internal_log_path(&self) -> &Path {
        &self.internal_log
    }

    /// The configuration file.
    pub fn config_path(&self) -> &Path {
        &self.conf
    }

    /// Every audit record in the log so far, in file order, or the first bad one (see
    /// [`parse_log`]). A missing log reads as empty. Only complete lines are read: rsyslog
    /// writes its file in buffer-sized pieces, so the last line may be half written.
    pub fn try_records(&self) -> Result<Vec<AuditRecord>, RecordError> {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        parse_log(crate::complete_lines(&text))
    }

    /// Waits (≤ `timeout`) until the log holds at least `count` distinct audit records (by
    /// `seq`: a resent copy does not count twice) and returns every record (fewer on
    /// timeout: the caller's assertion says what is missing). Panics on a bad record, as
    /// [`Rsyslog::records`].
    #[track_caller]
    pub fn wait_for_records(&self, count: usize, timeout: Duration) -> Vec<AuditRecord> {
        let deadline = Instant::now() + timeout;
        loop {
            let recs = self.records();
            let distinct: std::collections::HashSet<u64> = recs.iter().map(|r| r.seq).collect();
            if distinct.len() >= count || Instant::now() >= deadline {
                return recs;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// As [`Rsyslog::try_records`]; panics with the bad line (a test failure: the collector
    /// stored something that is not a valid audit record).
    #[track_caller]
    pub fn records(&self) -> Vec<AuditRecord> {
        self.try_records()
            .unwrap_or_else(|e| panic!("rsyslog {}: {e}", self.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = "<134>1 2025-12-02T03:00:00.123Z dhcp1 prodhcp 1234 commit \
        [lease@32473 event=\"commit\" seq=\"42\" ip=\"198.18.1.4\" mac=\"02:00:00:00:ab:01\" \
        hostname=\"a\\\"b\\\\c\\]d\"] commit 198.18.1.4 to 02:00:00:00:ab:01";

    #[test]
    fn a_line_becomes_a_record() {
        let r = AuditRecord::from_line(&format!("{LINE}\n"), 1)
            .unwrap()
            .unwrap();
        assert_eq!((r.seq, r.event.as_str()), (42, "commit"));
        assert_eq!(r.ip, Some(Ipv4Addr::new(198, 18, 1, 4)));
        assert_eq!(r.mac.as_deref(), Some("02:00:00:00:ab:01"));
        assert_eq!(r.params["hostname"], r#"a"b\c]d"#);
        assert_eq!(r.params.len(), 5);
        assert_eq!(r.raw, LINE);
    }

    #[test]
    fn a_log_yields_only_audit_records_and_refuses_bad_ones() {
        let other = "<13>1 2025-12-02T03:00:00Z h other - - [x@1 a=\"b\"] not ours";
        let mentions = "<13>1 - h other - - - talks about [lease@32473 in its MSG";
        let second = LINE.replace("seq=\"42\"", "seq=\"43\"");
        let text = format!("{other}\n{LINE}\nfree text\n{mentions}\n{second}\n");
        let recs = parse_log(&text).unwrap();
        assert_eq!(recs.iter().map(|r| r.seq).collect::<Vec<_>>(), [42, 43]);

        let bad = |from: &str, to: &str| {
            let text = format!("{other}\n{}\n", LINE.replace(from, to));
            parse_log(&text).unwrap_err()
        };
        assert!(matches!(
            bad("seq=\"42\"", "seq=\"x\""),
            RecordError::Field { line: 2, .. }
        ));
        assert!(matches!(
            bad("seq=\"42\" ", ""),
            RecordError::Field { line: 2, ref what, .. } if what == "no seq"
        ));
        assert!(matches!(
            bad("event=\"commit\" ", ""),
            RecordError::Field { ref what, .. } if what == "no event"
        ));
        assert!(matches!(
            bad("198.18.1.4\"", "198.18.1.400\""),
            RecordError::Field { .. }
        ));
        assert!(matches!(
            bad("seq=\"42\"", "seq=\"42\" seq=\"42\""),
            RecordError::Field { ref what, .. } if what == "parameter seq repeats"
        ));
        assert!(matches!(
            bad("c\\]d", "c]d"),
            RecordError::Syntax { line: 2, .. }
        ));
    }

    #[test]
    fn the_config_has_only_network_inputs_and_a_private_work_dir() {
        let c = render_config(
            Path::new("/tmp/lab/c.work"),
            Path::new("/tmp/lab/c.log"),
            Path::new("/tmp/lab/c.internal.log"),
            SocketAddrV4::new(Ipv4Addr::LOCALHOST, 10514),
            None,
        );
        assert!(
            c.contains("global(workDirectory=\"/tmp/lab/c.work\""),
            "{c}"
        );
        assert!(c.contains("address=\"127.0.0.1\" port=\"10514\""), "{c}");
        assert!(c.contains("string=\"%rawmsg%\\n\""), "{c}");
        for absent in [
            "imuxsock",
            "imklog",
            "imjournal",
            "imudp",
            "dropTo",
            "/var/",
        ] {
            assert!(!c.contains(absent), "{absent} in {c}");
        }
        let u = render_config(
            Path::new("/w"),
            Path::new("/l"),
            Path::new("/i"),
            SocketAddrV4::new(Ipv4Addr::LOCALHOST, 1),
            Some(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 2)),
        );
        assert!(u.contains("input(type=\"imudp\" address=\"127.0.0.1\" port=\"2\")"));
    }
}

//! Syslog senders: one [`Sender`] per configured [`AuditTarget`], fed formatted RFC 5424
//! messages (no framing, no newline) in sequence order by the audit process, which keeps every
//! record in its on-disk spool until the target has taken (best effort) or acknowledged
//! (reliable) it.
//!
//! Nothing here blocks for more than a few milliseconds, and nothing starts a thread: the
//! caller calls [`Sender::poll`] at least every 50 ms and [`Sender::send`] when it has
//! records. The one exception: a target given by host name is resolved with the system
//! resolver (`ToSocketAddrs`) at each connect attempt, which blocks for as long as the
//! resolver takes; give collectors as IP addresses where that matters.
//!
//! # Targets
//!
//! | target | transport | delivery |
//! |---|---|---|
//! | `unix:/path` | Unix datagram socket connected to the path (e.g. `/dev/log`), one message per datagram | best effort |
//! | `udp://host:port` | one message per UDP datagram (RFC 5426) | best effort: a lost datagram is not seen |
//! | `tcp://host:port` | RFC 6587 octet counting (`LEN SP MSG`) on a non-blocking TCP socket, `TCP_NODELAY`, `SO_KEEPALIVE` | at least once |
//! | `tls://host:port` | RFC 5425 (octet counting over TLS, rustls, TLS 1.2/1.3) | at least once |
//!
//! **Best effort** (unix, udp; [`Sender::reliable`] is false): every entry handed to
//! [`Sender::send`] is taken; one that cannot be sent (socket missing or not connected, the
//! receiver's buffer full, a send error) is counted in [`TargetStatus::dropped`] and not
//! retried. [`Sender::acked`] is the last seq taken. A missing Unix socket path is retried
//! with the backoff below; UDP cannot see a lost datagram at all (an ICMP port unreachable that
//! comes back makes the next send fail, counted as a drop).
//!
//! **At least once** (tcp, tls; [`Sender::reliable`] is true): [`Sender::send`] takes nothing
//! while not connected, and takes entries while less than [`MAX_UNWRITTEN`] (1 MiB) of framed
//! bytes wait to be written. Connecting is non-blocking and finished in [`Sender::poll`]
//! (2 s to connect, and for TLS 5 s from the start to finish the handshake); a failed attempt
//! waits 200 ms before the next, doubling to 5 s, back to 200 ms once connected.
//!
//! # Acknowledgement and the resend rule
//!
//! Syslog over TCP has no application acknowledgement, so the sender uses the peer's TCP one:
//! each taken entry remembers the stream offset at the end of its frame; `SIOCOUTQ` on the
//! socket gives the bytes written but not yet acknowledged, so the peer's TCP has acknowledged
//! `bytes_written − SIOCOUTQ`, and [`Sender::acked`] is the last seq whose frame ends at or
//! before that. For TLS the offsets are those of the plaintext, mapped to the TCP stream at
//! the points where rustls had written out every TLS record for the plaintext given so far: an
//! entry counts as acknowledged when the TCP bytes up to such a point after it are
//! (conservative, approximate: a TLS record's bytes, not the collector's application, were
//! acknowledged).
//!
//! A TCP acknowledgement means the collector's kernel has the bytes, not that the collector
//! read them: a collector that dies loses what sat in its socket buffer. So on a break (EOF,
//! an error or RST, a TLS alert, a write that fails) the sender does **not** resume after
//! [`Sender::acked`] but after the last seq that was acknowledged **more than 2 s
//! ([`SETTLE`]) before the break was noticed** ([`Sender::settled`]); everything after it is
//! sent again on the next connection and counted in [`TargetStatus::resent`]. That is the
//! promise: *at least once, in seq order on each connection; the seq in every record lets the
//! collector drop repeats.* A caller that trims its spool must therefore keep every entry
//! after [`Sender::settled`], not only those after [`Sender::acked`]. A peer that closes while
//! nothing is being sent is noticed by a non-blocking read in [`Sender::poll`].

use std::path::PathBuf;
use std::time::{Duration, Instant};

use prodhcp_config::audit::AuditTarget;

mod datagram;
mod stream;
#[cfg(test)]
mod tests;
mod tls;

/// Most framed bytes a reliable sender buffers unwritten before [`Sender::send`] takes no more.
pub const MAX_UNWRITTEN: usize = 1 << 20;
/// How long an acknowledged entry stays at risk: on a break the sender resumes after the last
/// seq acknowledged at least this long before.
pub const SETTLE: Duration = Duration::from_secs(2);
/// First wait after a failed connect attempt (doubling up to [`BACKOFF_MAX`]).
pub const BACKOFF_MIN: Duration = Duration::from_millis(200);
/// Longest wait between connect attempts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// One target's state for `prodhcpctl audit status`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TargetStatus {
    /// The target, canonical (`AuditTarget`'s `Display`).
    pub target: String,
    /// Whether the target acknowledges (tcp, tls) or is best effort (unix, udp).
    pub reliable: bool,
    /// Whether it is connected now (TLS: handshake done).
    pub connected: bool,
    /// [`Sender::acked`].
    pub acked_seq: u64,
    /// Highest seq taken for sending so far (reliable: framed into the output buffer).
    pub sent_seq: u64,
    /// Connections made after the first.
    pub reconnects: u64,
    /// Entries sent again after a break (the resend rule in the module docs).
    pub resent: u64,
    /// Entries taken but not sent (best-effort targets only).
    pub dropped: u64,
    /// The last error seen (connect, send, TLS), if any.
    pub last_error: Option<String>,
}

/// Where a `tls://` target's trust and client identity come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM file of the CA certificates the collector's certificate must chain to.
    pub ca_file: PathBuf,
    /// PEM certificate chain presented to the collector (with `key_file`), if it asks.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
}

/// Connect attempt pacing: 200 ms doubling to 5 s, reset on success.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    wait: Duration,
    next: Option<Instant>,
}

impl Backoff {
    pub(crate) fn new() -> Backoff {
        Backoff {
            wait: BACKOFF_MIN,
            next: None,
        }
    }

    /// Whether an attempt may start now.
    pub(crate) fn due(&self, now: Instant) -> bool {
        self.next.is_none_or(|t| now >= t)
    }

    /// An attempt failed (or a connection broke) at `now`.
    pub(crate) fn failed(&mut self, now: Instant) {
        self.next = Some(now + self.wait);
        self.wait = (self.wait * 2).min(BACKOFF_MAX);
    }

    /// Connected.
    pub(crate) fn reset(&mut self) {
        self.wait = BACKOFF_MIN;
        self.next = None;
    }
}

/// Counters common to every kind of sender.
#[derive(Debug, Clone, Default)]
pub(crate) struct Counters {
    pub(crate) sent_seq: u64,
    pub(crate) connections: u64,
    pub(crate) attempts: u64,
    pub(crate) resent: u64,
    pub(crate) dropped: u64,
    pub(crate) last_error: Option<String>,
}

enum Kind {
    Datagram(datagram::Datagram),
    Stream(Box<stream::Stream>),
}

/// A sender to one configured syslog target (see the module docs for what each kind promises).
pub struct Sender {
    target: String,
    kind: Kind,
}

impl Sender {
    /// A sender for `target`; it does not connect until [`Sender::poll`] (or, for a datagram
    /// target, the first [`Sender::send`]). `tls` is needed by a `tls://` target only: without
    /// it that sender never connects and says why in `last_error`.
    pub fn new(target: &AuditTarget, tls: Option<TlsSettings>) -> Sender {
        let kind = match target {
            AuditTarget::Unix(path) => Kind::Datagram(datagram::Datagram::unix(path.clone())),
            AuditTarget::Udp(e) => Kind::Datagram(datagram::Datagram::udp(e.clone())),
            AuditTarget::Tcp(e) => Kind::Stream(Box::new(stream::Stream::new(e.clone(), None))),
            AuditTarget::Tls(e) => Kind::Stream(Box::new(stream::Stream::new(
                e.clone(),
                Some(tls::TlsSetup::new(e, tls)),
            ))),
        };
        Sender {
            target: target.to_string(),
            kind,
        }
    }

    /// The target, canonical (`AuditTarget`'s `Display`).
    pub fn target(&self) -> String {
        self.target.clone()
    }

    /// True for tcp and tls (the caller keeps records until [`Sender::settled`]); false for
    /// unix and udp (best effort).
    pub fn reliable(&self) -> bool {
        matches!(self.kind, Kind::Stream(_))
    }

    /// At start, from the caller's state file: everything up to `seq` is done; resume after it.
    pub fn set_acked(&mut self, seq: u64) {
        match &mut self.kind {
            Kind::Datagram(d) => d.set_acked(seq),
            Kind::Stream(s) => s.set_acked(seq),
        }
    }

    /// The caller hands entries with seq greater than this next. After a break of a reliable
    /// connection this goes back to [`Sender::settled`].
    pub fn want_after(&self) -> u64 {
        match &self.kind {
            Kind::Datagram(d) => d.last(),
            Kind::Stream(s) => s.want_after(),
        }
    }

    /// Offers `entries` (`(seq, message)`, increasing seq, gaps allowed, the first after
    /// [`Sender::want_after`]; an entry at or before it is taken and skipped) and returns how
    /// many were taken, a prefix. Reliable: none while not connected, and only while less than
    /// [`MAX_UNWRITTEN`] bytes wait. Best effort: all, a failed send counted in `dropped`.
    pub fn send(&mut self, entries: &[(u64, &[u8])], now: Instant) -> usize {
        match &mut self.kind {
            Kind::Datagram(d) => d.send(entries, now),
            Kind::Stream(s) => s.send(entries, now),
        }
    }

    /// Connects or reconnects (with backoff), finishes a connect or TLS handshake, writes out
    /// buffered bytes, notices a closed peer, and updates the acknowledgement.
    pub fn poll(&mut self, now: Instant) {
        match &mut self.kind {
            Kind::Datagram(d) => d.poll(now),
            Kind::Stream(s) => s.poll(now),
        }
    }

    /// Reliable: the highest seq whose frame the peer's TCP acknowledged (module docs: it can
    /// still be resent after a break). Best effort: the last seq taken.
    pub fn acked(&self) -> u64 {
        match &self.kind {
            Kind::Datagram(d) => d.last(),
            Kind::Stream(s) => s.acked(),
        }
    }

    /// The seq a break would resume after: reliable, the highest seq acknowledged at least
    /// [`SETTLE`] ago (as of the last `send`/`poll`); best effort, the last seq taken. The
    /// caller may drop spool entries up to this, never past it.
    pub fn settled(&self) -> u64 {
        match &self.kind {
            Kind::Datagram(d) => d.last(),
            Kind::Stream(s) => s.settled(),
        }
    }

    /// Whether the target is connected now (TLS: with the handshake done).
    pub fn connected(&self) -> bool {
        match &self.kind {
            Kind::Datagram(d) => d.connected(),
            Kind::Stream(s) => s.connected(),
        }
    }

    /// The target's state for `prodhcpctl audit status`.
    pub fn status(&self) -> TargetStatus {
        let c = self.counters();
        TargetStatus {
            target: self.target(),
            reliable: self.reliable(),
            connected: self.connected(),
            acked_seq: self.acked(),
            sent_seq: c.sent_seq,
            reconnects: c.connections.saturating_sub(1),
            resent: c.resent,
            dropped: c.dropped,
            last_error: c.last_error.clone(),
        }
    }

    fn counters(&self) -> &Counters {
        match &self.kind {
            Kind::Datagram(d) => &d.counters,
            Kind::Stream(s) => &s.counters,
        }
    }

    /// Connect attempts so far (tests: the backoff).
    #[cfg(test)]
    pub(crate) fn attempts(&self) -> u64 {
        self.counters().attempts
    }
}

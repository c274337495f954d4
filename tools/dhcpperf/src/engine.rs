//! The load engine: a sender thread (pacing, timeouts, retransmissions) and a receiver thread
//! (replies, REQUESTs sent straight after each OFFER, the record), sharing one UDP socket bound
//! to the relay address and a table of client slots updated with atomics.
//!
//! Each client slot holds a state word — phase (8 bits), tries (8 bits), exchange sequence
//! (16 bits) — so a timeout entry only acts on the exact exchange and try it was queued for
//! (compare-and-swap), and a reply only on the phase it answers.
//!
//! Timeouts live in FIFO queues, one per retransmission level (each level has one delay, so
//! each queue is ordered by due time); the receiver hands its entries to the sender per batch.

use std::collections::VecDeque;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use socket2::{Domain, Protocol, Socket, Type};

use crate::histogram::{Histogram, LatencySummary};
use crate::identity::{client_id_for, hex, hex_colon, mac_for};
use crate::packet::{self, Fields, MessageType, RequestKind, Template};
use crate::record::{RecordEvent, Recorder};
use crate::sys::{self, RecvBatch, SendBatch};

/// Where the load goes.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// The server's address and port (67).
    pub server: SocketAddrV4,
    /// The relay address the generator binds and puts in giaddr.
    pub relay: Ipv4Addr,
    /// The port the generator binds (67, where servers answer relays).
    pub relay_port: u16,
}

/// Options shared by every phase.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// A request unanswered after this long is lost (and answers after it are "late").
    pub timeout: Duration,
    /// Stop a phase after this long without any answer while requests are outstanding.
    pub give_up: Duration,
    /// Nothing runs past this instant.
    pub hard_deadline: Instant,
    /// Datagrams per sendmmsg/recvmmsg.
    pub batch: usize,
    /// Seed of the client MACs.
    pub seed: u8,
    /// Send a client-id option (type 1 + MAC).
    pub client_id: bool,
    /// Print the per-second timeline to stderr while running.
    pub print_timeline: bool,
}

/// Retransmission back-off (RFC 2131 4.1 style: the delay doubles up to a cap).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// First delay.
    pub initial: Duration,
    /// Largest delay.
    pub max: Duration,
}

/// What one phase does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Plan {
    /// Full DORA for every client of the table, at `rate` new clients/s (0 = as fast as the
    /// window allows), for at most `duration`.
    Dora {
        /// New clients per second; 0 = unlimited.
        rate: f64,
        /// At most this many clients (the first ones of the table).
        count: u64,
        /// Sending stops after this long.
        duration: Duration,
        /// Most exchanges in flight when `rate` is 0.
        window: u64,
    },
    /// A renewing REQUEST (ciaddr set) for every bound client, once, at `rate`/s.
    Renew {
        /// Renewals per second; 0 = unlimited.
        rate: f64,
        /// Sending stops after this long.
        duration: Duration,
        /// Most in flight when `rate` is 0.
        window: u64,
    },
    /// A RELEASE for every bound client, once, at `rate`/s.
    Release {
        /// Releases per second; 0 = unlimited.
        rate: f64,
        /// Sending stops after this long.
        duration: Duration,
    },
    /// New clients, renewals of bound clients and releases, each at its own rate.
    Mix {
        /// New clients (DORA) per second.
        dora_rate: f64,
        /// Renewals per second (cycling over bound clients).
        renew_rate: f64,
        /// Releases per second (oldest bound clients first).
        release_rate: f64,
        /// Sending stops after this long.
        duration: Duration,
        /// Slots below this index are already bound (pre-bound clients); new clients start here.
        first_new: u64,
    },
    /// Every client of the table at once (or at `rate`), retransmitting with back-off until
    /// all are bound or `deadline` passes.
    Avalanche {
        /// DISCOVERs per second for the first transmission; 0 = all at once.
        rate: f64,
        /// Retransmission delays.
        backoff: Backoff,
        /// Give up on unbound clients after this long.
        deadline: Duration,
    },
}

/// Errors of setting up the generator.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The socket could not be created or configured.
    #[error("cannot create the UDP socket: {0}")]
    Socket(io::Error),
    /// The relay address could not be bound.
    #[error("cannot bind {addr} (is the relay address configured on an interface here, and is nothing else on that port?): {source}")]
    Bind {
        /// The address.
        addr: SocketAddrV4,
        /// The cause.
        source: io::Error,
    },
    /// The client table would be too large.
    #[error("{0} clients requested; the limit is {1} (use --max-clients)")]
    TooManyClients(u64, u64),
}

/// Client phases (low byte of the state word); a zeroed slot (0) is idle.
mod phase {
    pub const DISCOVER_SENT: u32 = 1;
    pub const REQUEST_SENT: u32 = 2;
    pub const BOUND: u32 = 3;
    pub const NAKED: u32 = 4;
    pub const FAILED: u32 = 5;
    pub const RENEW_SENT: u32 = 6;
    pub const RELEASED: u32 = 7;
}

fn word(phase: u32, tries: u32, seq: u32) -> u32 {
    (phase & 0xff) | ((tries & 0xff) << 8) | ((seq & 0xffff) << 16)
}
fn phase_of(w: u32) -> u32 {
    w & 0xff
}
fn tries_of(w: u32) -> u32 {
    (w >> 8) & 0xff
}
fn seq_of(w: u32) -> u32 {
    w >> 16
}

#[derive(Debug, Default)]
struct Slot {
    state: AtomicU32,
    sent_us: AtomicU32,
    first_us: AtomicU32,
    addr: AtomicU32,
    server: AtomicU32,
}

impl Slot {
    /// Moves the client from state word `cur` to `phase` (same sequence, tries reset); false
    /// when another thread changed it first.
    fn advance(&self, cur: u32, phase: u32) -> bool {
        self.state
            .compare_exchange(
                cur,
                word(phase, 0, seq_of(cur)),
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_ok()
    }
}

/// The simulated clients of one or more phases: a contiguous range of client indices.
#[derive(Debug)]
pub struct ClientTable {
    base: u32,
    slots: Box<[Slot]>,
}

impl ClientTable {
    /// Clients in the table.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True when the table has no clients.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Clients currently bound.
    pub fn bound(&self) -> u64 {
        self.slots
            .iter()
            .filter(|s| phase_of(s.state.load(Ordering::Relaxed)) == phase::BOUND)
            .count() as u64
    }
}

/// The cumulative counters of a phase.
#[derive(Debug, Default)]
struct Counters {
    sent_discover: AtomicU64,
    sent_request: AtomicU64,
    sent_renew: AtomicU64,
    sent_release: AtomicU64,
    retransmits: AtomicU64,
    offers: AtomicU64,
    acks: AtomicU64,
    renew_acks: AtomicU64,
    naks: AtomicU64,
    failed_discover: AtomicU64,
    failed_request: AtomicU64,
    failed_renew: AtomicU64,
    late: AtomicU64,
    bad_reply: AtomicU64,
    stray: AtomicU64,
    unexpected: AtomicU64,
    icmp_errors: AtomicU64,
    send_errors: AtomicU64,
}

fn inc(c: &AtomicU64, n: u64) {
    if n > 0 {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// Snapshot of a phase's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// DISCOVERs sent (first transmissions).
    pub sent_discover: u64,
    /// SELECTING REQUESTs sent (first transmissions).
    pub sent_request: u64,
    /// Renewing REQUESTs sent (first transmissions).
    pub sent_renew: u64,
    /// RELEASEs sent.
    pub sent_release: u64,
    /// Retransmissions (avalanche).
    pub retransmits: u64,
    /// OFFERs accepted.
    pub offers: u64,
    /// ACKs to SELECTING REQUESTs (completed DORA).
    pub acks: u64,
    /// ACKs to renewals.
    pub renew_acks: u64,
    /// NAKs.
    pub naks: u64,
    /// DISCOVERs with no OFFER within the timeout.
    pub failed_discover: u64,
    /// REQUESTs with no ACK/NAK within the timeout.
    pub failed_request: u64,
    /// Renewals with no ACK/NAK within the timeout.
    pub failed_renew: u64,
    /// Answers that came after the timeout (already counted as failed).
    pub late: u64,
    /// Datagrams that are not a sensible reply (unparsable, wrong op/type, MAC mismatch, no
    /// server id, zero yiaddr, ...).
    pub bad_reply: u64,
    /// Replies whose xid belongs to no client of this phase.
    pub stray: u64,
    /// Replies for a client not waiting for that message (duplicates, answers to a try
    /// already answered).
    pub unexpected: u64,
    /// ICMP errors reported by the kernel (unreachable server).
    pub icmp_errors: u64,
    /// Datagrams the kernel refused to send.
    pub send_errors: u64,
}

impl Counts {
    fn of(c: &Counters) -> Self {
        Self {
            sent_discover: get(&c.sent_discover),
            sent_request: get(&c.sent_request),
            sent_renew: get(&c.sent_renew),
            sent_release: get(&c.sent_release),
            retransmits: get(&c.retransmits),
            offers: get(&c.offers),
            acks: get(&c.acks),
            renew_acks: get(&c.renew_acks),
            naks: get(&c.naks),
            failed_discover: get(&c.failed_discover),
            failed_request: get(&c.failed_request),
            failed_renew: get(&c.failed_renew),
            late: get(&c.late),
            bad_reply: get(&c.bad_reply),
            stray: get(&c.stray),
            unexpected: get(&c.unexpected),
            icmp_errors: get(&c.icmp_errors),
            send_errors: get(&c.send_errors),
        }
    }

    /// Requests sent that expect an answer (first transmissions).
    pub fn requests(&self) -> u64 {
        self.sent_discover + self.sent_request + self.sent_renew
    }

    /// Requests that got no answer within the timeout.
    pub fn missed(&self) -> u64 {
        self.failed_discover + self.failed_request + self.failed_renew
    }

    /// Answers of any kind that were accepted.
    pub fn answered(&self) -> u64 {
        self.offers + self.acks + self.renew_acks + self.naks
    }

    /// Datagrams sent, all kinds.
    pub fn sent(&self) -> u64 {
        self.requests() + self.sent_release + self.retransmits
    }
}

/// One second of the timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TimelinePoint {
    /// Seconds since the phase started (end of the interval).
    pub t_s: u64,
    /// Datagrams sent in the interval.
    pub sent: u64,
    /// Answers accepted in the interval.
    pub answered: u64,
    /// Requests declared lost in the interval.
    pub failed: u64,
    /// Exchanges in flight at the end of the interval.
    pub in_flight: i64,
}

/// Latencies of one phase, per message type.
#[derive(Debug, Clone, Serialize)]
pub struct Latencies {
    /// DISCOVER → OFFER.
    pub discover_offer: LatencySummary,
    /// REQUEST → ACK (SELECTING).
    pub request_ack: LatencySummary,
    /// Renewing REQUEST → ACK.
    pub renew_ack: LatencySummary,
    /// First DISCOVER → ACK, including retransmissions (time to bind).
    pub dora: LatencySummary,
}

/// CPU used by the generator process during a phase.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CpuUse {
    /// User time, seconds.
    pub user_s: f64,
    /// System time, seconds.
    pub sys_s: f64,
    /// (user + sys) / wall time.
    pub cores: f64,
    /// CPU microseconds per completed exchange (DORA, renew or release).
    pub us_per_exchange: Option<f64>,
}

/// Why a phase ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// Everything sent and answered or timed out.
    Completed,
    /// No answer for `--give-up` seconds while requests were outstanding.
    NoAnswers,
    /// The overall hard deadline passed.
    HardDeadline,
}

/// The result of one phase.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseReport {
    /// Phase name (`dora`, `renew`, ...).
    pub phase: String,
    /// Rate asked for (per second; 0 = unlimited), for the main kind of the phase.
    pub offered_rate: f64,
    /// Rate actually sent (first transmissions per second over the sending time).
    pub sent_rate: f64,
    /// Wall time of the phase including the wait for the last answers, seconds.
    pub elapsed_s: f64,
    /// Time spent sending, seconds.
    pub send_s: f64,
    /// Completed DORA exchanges per second (ACKs over the time to the last ACK).
    pub leases_per_s: f64,
    /// Renewal ACKs per second.
    pub renews_per_s: f64,
    /// Requests missed / requests sent, percent.
    pub missed_pct: f64,
    /// Counters.
    pub counts: Counts,
    /// Latency percentiles per message type.
    pub latency: Latencies,
    /// Generator CPU.
    pub cpu: CpuUse,
    /// Per-second timeline.
    pub timeline: Vec<TimelinePoint>,
    /// Clients bound at the end (avalanche) — `None` for other phases.
    pub bound_at_end: Option<u64>,
    /// Clients in the phase's table.
    pub clients: u64,
    /// Why the phase ended.
    pub stop: StopReason,
    /// The last socket error seen, if any.
    pub last_error: Option<String>,
    /// Record events written during the phase.
    pub recorded: u64,
}

struct Templates {
    discover: Template,
    select: Template,
    renew: Template,
    release: Template,
}

/// The generator: a socket bound to the relay address and the settings of the run.
pub struct Generator {
    sock: Socket,
    target: Target,
    opts: EngineOptions,
    templates: Templates,
    recorder: Option<Arc<Recorder>>,
    salt: u32,
    next_index: u32,
    max_clients: u64,
}

/// A timeout entry: client slot, the state word it was queued for, and when it is due.
#[derive(Debug, Clone, Copy)]
struct Entry {
    idx: u32,
    word: u32,
    due_us: u64,
}

struct Shared<'a> {
    table: &'a ClientTable,
    counters: Counters,
    stop: AtomicBool,
    sender_done: AtomicBool,
    start: Instant,
    timeout_us: u64,
    retransmit: bool,
    rx_entries: Mutex<Vec<Entry>>,
    in_flight: AtomicI64,
    last_ack_us: AtomicU64,
    last_renew_us: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Shared<'_> {
    fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    fn note_error(&self, e: &io::Error) {
        let mut le = self.last_error.lock().unwrap_or_else(|p| p.into_inner());
        *le = Some(e.to_string());
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Generator {
    /// Binds `relay:relay_port` and prepares the templates. `max_clients` bounds the memory of
    /// client tables (about 20 bytes per client).
    pub fn new(
        target: Target,
        opts: EngineOptions,
        recorder: Option<Arc<Recorder>>,
        max_clients: u64,
    ) -> Result<Self, SetupError> {
        let sock = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
            .map_err(SetupError::Socket)?;
        sock.set_reuse_address(true).map_err(SetupError::Socket)?;
        // Large buffers: a burst of replies must not be dropped by our own socket.
        let _ = sock.set_recv_buffer_size(16 << 20);
        let _ = sock.set_send_buffer_size(8 << 20);
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .map_err(SetupError::Socket)?;
        sys::enable_recv_err(sock.as_fd()).map_err(SetupError::Socket)?;
        let addr = SocketAddrV4::new(target.relay, target.relay_port);
        sock.bind(&addr.into())
            .map_err(|source| SetupError::Bind { addr, source })?;
        let templates = Templates {
            discover: Template::new(RequestKind::Discover, target.relay, opts.client_id),
            select: Template::new(RequestKind::Select, target.relay, opts.client_id),
            renew: Template::new(RequestKind::Renew, target.relay, opts.client_id),
            release: Template::new(RequestKind::Release, target.relay, opts.client_id),
        };
        let salt = (unix_ms() as u32).wrapping_mul(0x9e37_79b9) ^ std::process::id();
        Ok(Self {
            sock,
            target,
            opts,
            templates,
            recorder,
            salt,
            next_index: 0,
            max_clients,
        })
    }

    /// The options.
    pub fn options(&self) -> &EngineOptions {
        &self.opts
    }

    /// A table of `n` new clients (indices never used before in this run).
    pub fn new_table(&mut self, n: u64) -> Result<ClientTable, SetupError> {
        let room = u64::from(u32::MAX - self.next_index);
        if n > self.max_clients || n > room {
            return Err(SetupError::TooManyClients(n, self.max_clients.min(room)));
        }
        let base = self.next_index;
        self.next_index += n as u32;
        let slots: Box<[Slot]> = (0..n).map(|_| Slot::default()).collect();
        Ok(ClientTable { base, slots })
    }

    /// Runs one phase over `table` and reports it.
    pub fn run(&self, name: &str, table: &ClientTable, plan: Plan) -> PhaseReport {
        let timeout_us = match plan {
            Plan::Avalanche { backoff, .. } => backoff.initial.as_micros() as u64,
            _ => self.opts.timeout.as_micros() as u64,
        };
        let shared = Shared {
            table,
            counters: Counters::default(),
            stop: AtomicBool::new(false),
            sender_done: AtomicBool::new(false),
            start: Instant::now(),
            timeout_us: timeout_us.max(1),
            retransmit: matches!(plan, Plan::Avalanche { .. }),
            rx_entries: Mutex::new(Vec::new()),
            in_flight: AtomicI64::new(0),
            last_ack_us: AtomicU64::new(0),
            last_renew_us: AtomicU64::new(0),
            last_error: Mutex::new(None),
        };
        let cpu0 = sys::process_cpu_time().unwrap_or_default();
        let recorded0 = self.recorder.as_ref().map_or(0, |r| r.written());
        let mut timeline = Vec::new();
        let mut stop = StopReason::Completed;
        let (hists, send_us) = thread::scope(|s| {
            let rx = s.spawn(|| self.receiver(&shared));
            let tx = s.spawn(|| self.sender(&shared, plan));
            // In an avalanche, silence between retransmissions is normal once the server has
            // answered something: then only a gap longer than the largest back-off gives up.
            let give_up_later = match plan {
                Plan::Avalanche { backoff, .. } => {
                    self.opts.give_up.max(backoff.max + backoff.initial)
                }
                _ => self.opts.give_up,
            };
            stop = self.monitor(&shared, name, give_up_later, &mut timeline);
            shared.stop.store(true, Ordering::Relaxed);
            let send_us = tx.join().unwrap_or(0);
            let hists = rx.join().unwrap_or_default();
            (hists, send_us)
        });
        let elapsed = shared.start.elapsed();
        let cpu1 = sys::process_cpu_time().unwrap_or_default();
        if let Some(r) = &self.recorder {
            if let Err(e) = r.flush() {
                shared.note_error(&io::Error::other(e.to_string()));
            }
        }
        let counts = Counts::of(&shared.counters);
        let secs = |us: u64| us as f64 / 1e6;
        let send_s = secs(send_us).max(1e-6);
        let per_s = |n: u64, until_us: u64| {
            if n == 0 {
                0.0
            } else {
                n as f64 / secs(until_us).max(1e-6)
            }
        };
        let user_s = cpu1.0.saturating_sub(cpu0.0).as_secs_f64();
        let sys_s = cpu1.1.saturating_sub(cpu0.1).as_secs_f64();
        let exchanges = counts.acks + counts.renew_acks + counts.sent_release;
        let (main_sent, offered_rate) = match plan {
            Plan::Dora { rate, .. } => (counts.sent_discover, rate),
            Plan::Renew { rate, .. } => (counts.sent_renew, rate),
            Plan::Release { rate, .. } => (counts.sent_release, rate),
            Plan::Mix { dora_rate, .. } => (counts.sent_discover, dora_rate),
            Plan::Avalanche { rate, .. } => (counts.sent_discover, rate),
        };
        let requests = counts.requests();
        let last_error = shared
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        PhaseReport {
            phase: name.to_string(),
            offered_rate,
            sent_rate: main_sent as f64 / send_s,
            elapsed_s: elapsed.as_secs_f64(),
            send_s,
            leases_per_s: per_s(counts.acks, get(&shared.last_ack_us)),
            renews_per_s: per_s(counts.renew_acks, get(&shared.last_renew_us)),
            missed_pct: if requests == 0 {
                0.0
            } else {
                100.0 * counts.missed() as f64 / requests as f64
            },
            latency: Latencies {
                discover_offer: hists.discover_offer.summary(),
                request_ack: hists.request_ack.summary(),
                renew_ack: hists.renew_ack.summary(),
                dora: hists.dora.summary(),
            },
            cpu: CpuUse {
                user_s,
                sys_s,
                cores: (user_s + sys_s) / elapsed.as_secs_f64().max(1e-6),
                us_per_exchange: (exchanges > 0).then(|| (user_s + sys_s) * 1e6 / exchanges as f64),
            },
            counts,
            timeline,
            bound_at_end: matches!(plan, Plan::Avalanche { .. }).then(|| table.bound()),
            clients: table.len() as u64,
            stop,
            last_error,
            recorded: self.recorder.as_ref().map_or(0, |r| r.written()) - recorded0,
        }
    }

    /// Main thread of a phase: timeline, give-up and hard-deadline checks.
    fn monitor(
        &self,
        sh: &Shared<'_>,
        name: &str,
        give_up_later: Duration,
        timeline: &mut Vec<TimelinePoint>,
    ) -> StopReason {
        let tick = Duration::from_millis(20);
        let mut next_second = Duration::from_secs(1);
        let mut prev = Counts::default();
        let mut last_answered = 0u64;
        let mut last_answer_at = Instant::now();
        loop {
            if sh.sender_done.load(Ordering::Relaxed) {
                return StopReason::Completed;
            }
            let now = Instant::now();
            if now >= self.opts.hard_deadline {
                return StopReason::HardDeadline;
            }
            let answered = {
                let c = &sh.counters;
                get(&c.offers) + get(&c.acks) + get(&c.renew_acks) + get(&c.naks)
            };
            if answered != last_answered {
                last_answered = answered;
                last_answer_at = now;
            } else if sh.in_flight.load(Ordering::Relaxed) > 0
                && now.duration_since(last_answer_at)
                    >= if answered == 0 {
                        self.opts.give_up
                    } else {
                        give_up_later
                    }
            {
                return StopReason::NoAnswers;
            }
            let elapsed = sh.start.elapsed();
            if elapsed >= next_second {
                let cur = Counts::of(&sh.counters);
                let p = TimelinePoint {
                    t_s: next_second.as_secs(),
                    sent: cur.sent() - prev.sent(),
                    answered: cur.answered() - prev.answered(),
                    failed: cur.missed() - prev.missed(),
                    in_flight: sh.in_flight.load(Ordering::Relaxed),
                };
                if self.opts.print_timeline {
                    eprintln!(
                        "{name} t={:>4}s sent {:>8} answered {:>8} failed {:>7} in-flight {:>7}",
                        p.t_s, p.sent, p.answered, p.failed, p.in_flight
                    );
                }
                timeline.push(p);
                prev = cur;
                next_second += Duration::from_secs(1);
            }
            thread::sleep(tick);
        }
    }

    fn fields(&self, index: u32, slot: &Slot) -> Fields {
        let mac = mac_for(self.opts.seed, index);
        let addr = Ipv4Addr::from(slot.addr.load(Ordering::Relaxed));
        Fields {
            xid: index ^ self.salt,
            mac,
            ciaddr: addr,
            requested: addr,
            server_id: Ipv4Addr::from(slot.server.load(Ordering::Relaxed)),
        }
    }

    fn template(&self, phase: u32) -> &Template {
        match phase {
            phase::REQUEST_SENT => &self.templates.select,
            phase::RENEW_SENT => &self.templates.renew,
            _ => &self.templates.discover,
        }
    }

    fn client_id_hex(&self, mac: &[u8; 6]) -> Option<String> {
        self.opts.client_id.then(|| hex(&client_id_for(mac)))
    }

    /// Sender thread; returns the time spent sending (µs since phase start).
    fn sender(&self, sh: &Shared<'_>, plan: Plan) -> u64 {
        let mut tx = Tx {
            gen: self,
            sh,
            batch: SendBatch::new(self.opts.batch),
            levels: vec![VecDeque::new()],
            spare: Vec::new(),
        };
        let table = sh.table;
        let n = match plan {
            Plan::Dora { count, .. } => count.min(table.len() as u64),
            _ => table.len() as u64,
        };
        let (rate, duration, window) = match plan {
            Plan::Dora {
                rate,
                duration,
                window,
                ..
            }
            | Plan::Renew {
                rate,
                duration,
                window,
            } => (rate, duration, window),
            Plan::Release { rate, duration } => (rate, duration, u64::MAX),
            Plan::Mix {
                dora_rate,
                duration,
                ..
            } => (dora_rate, duration, u64::MAX),
            Plan::Avalanche { rate, deadline, .. } => (rate, deadline, u64::MAX),
        };
        let backoff = match plan {
            Plan::Avalanche { backoff, .. } => Some(backoff),
            _ => None,
        };
        let deadline_us = match plan {
            Plan::Avalanche { deadline, .. } => deadline.as_micros() as u64,
            _ => u64::MAX,
        };
        let duration_us = duration.as_micros() as u64;
        let end_target = if rate > 0.0 {
            (rate * duration.as_secs_f64()) as u64
        } else {
            0
        };
        let mut main_done = 0u64; // first transmissions of the main kind
        let mut cursor = match plan {
            Plan::Mix { first_new, .. } => first_new.min(n),
            _ => 0,
        }; // next slot for the main kind
        let mut renew_done = 0u64;
        let mut renew_cursor = 0u64;
        let mut release_done = 0u64;
        let mut release_cursor = 0u64;
        let mut send_end: Option<u64> = None;
        let per_iter = (self.opts.batch as u64 * 16).max(64);
        loop {
            if sh.stop.load(Ordering::Relaxed) {
                break;
            }
            let now = sh.now_us();
            let in_window = now < duration_us;
            // Paced sends are computed at min(now, end of window), so the last iteration after
            // the window tops up to exactly rate × duration.
            let now_eff = now.min(duration_us);
            let caught_up = rate <= 0.0 || main_done >= end_target;
            // 1. The plan's sends.
            let mut plan_finished = !in_window && caught_up;
            match plan {
                Plan::Dora { .. } | Plan::Avalanche { .. } => {
                    let mut due =
                        due_count(rate, now_eff, main_done, n - cursor, window, sh, per_iter);
                    if !in_window && rate <= 0.0 {
                        due = 0;
                    }
                    while due > 0 && cursor < n {
                        tx.start_discover(cursor as u32, now, backoff);
                        cursor += 1;
                        main_done += 1;
                        due -= 1;
                    }
                    plan_finished |= cursor >= n;
                }
                Plan::Renew { .. } | Plan::Release { .. } => {
                    let is_renew = matches!(plan, Plan::Renew { .. });
                    let mut due =
                        due_count(rate, now_eff, main_done, n - cursor, window, sh, per_iter);
                    if !in_window && rate <= 0.0 {
                        due = 0;
                    }
                    while due > 0 && cursor < n {
                        let i = cursor as u32;
                        cursor += 1;
                        let started = if is_renew {
                            tx.start_renew(i, now)
                        } else {
                            tx.release(i, now)
                        };
                        if started {
                            main_done += 1;
                            due -= 1;
                        }
                    }
                    plan_finished |= cursor >= n;
                }
                Plan::Mix {
                    renew_rate,
                    release_rate,
                    ..
                } => {
                    plan_finished = !in_window;
                    {
                        // In a mix a rate of 0 means "none of this kind".
                        let paced = |r: f64, done: u64| {
                            if r > 0.0 {
                                due_count(r, now_eff, done, u64::MAX, u64::MAX, sh, per_iter)
                            } else {
                                0
                            }
                        };
                        let due = paced(rate, main_done).min(n - cursor);
                        for _ in 0..due {
                            if cursor >= n {
                                break;
                            }
                            tx.start_discover(cursor as u32, now, None);
                            cursor += 1;
                            main_done += 1;
                        }
                        // Renewals cycle over clients that have had a DISCOVER; releases take
                        // the oldest bound clients. Probes per iteration are bounded.
                        let due = paced(renew_rate, renew_done);
                        let mut probes = due * 4;
                        let mut left = due;
                        while left > 0 && probes > 0 && cursor > 0 {
                            probes -= 1;
                            if renew_cursor < release_cursor || renew_cursor >= cursor {
                                renew_cursor = release_cursor;
                                if renew_cursor >= cursor {
                                    break;
                                }
                            }
                            let i = renew_cursor as u32;
                            renew_cursor += 1;
                            if tx.start_renew(i, now) {
                                renew_done += 1;
                                left -= 1;
                            }
                        }
                        let due = paced(release_rate, release_done);
                        let mut probes = due * 4;
                        let mut left = due;
                        while left > 0 && probes > 0 && release_cursor < cursor {
                            probes -= 1;
                            let i = release_cursor as u32;
                            release_cursor += 1;
                            if tx.release(i, now) {
                                release_done += 1;
                                left -= 1;
                            }
                        }
                    }
                }
            }
            // 2. Timeouts and retransmissions.
            tx.take_rx_entries();
            tx.expire(now, backoff, deadline_us);
            tx.flush();
            // 3. Done?
            if plan_finished {
                let end = *send_end.get_or_insert(now);
                let drained = sh.in_flight.load(Ordering::Relaxed) <= 0;
                let drain_limit = if backoff.is_some() {
                    deadline_us
                } else {
                    end + sh.timeout_us + 200_000
                };
                if drained || now >= drain_limit {
                    if !drained {
                        // Whatever is still pending now has missed its timeout.
                        tx.expire(u64::MAX, None, 0);
                    }
                    break;
                }
            }
            // 4. Sleep until about half a millisecond of sends is due (at most 1 ms).
            let sleep_us = if rate > 0.0 && !plan_finished {
                let k = (rate * 0.0005).clamp(1.0, self.opts.batch as f64);
                let next_due = ((main_done as f64 + k) / rate * 1e6) as u64;
                next_due.saturating_sub(sh.now_us()).clamp(20, 1000)
            } else if rate <= 0.0 && !plan_finished {
                100
            } else {
                1000
            };
            thread::sleep(Duration::from_micros(sleep_us));
        }
        tx.flush();
        sh.sender_done.store(true, Ordering::Relaxed);
        send_end.unwrap_or_else(|| sh.now_us())
    }

    /// Receiver thread; returns its latency histograms.
    fn receiver(&self, sh: &Shared<'_>) -> Hists {
        let mut rx = RecvBatch::new(self.opts.batch);
        let mut out = SendBatch::new(self.opts.batch);
        let mut hists = Hists::default();
        let mut entries: Vec<Entry> = Vec::with_capacity(self.opts.batch);
        let mut events: Vec<RecordEvent> = Vec::new();
        let fd = self.sock.as_fd();
        while !sh.stop.load(Ordering::Relaxed) {
            let n = match rx.recv(fd) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) =>
                {
                    sys::drain_error_queue(fd, 4096);
                    continue;
                }
                Err(e) => {
                    if sys::is_icmp_error(&e) {
                        inc(&sh.counters.icmp_errors, 1);
                    }
                    sh.note_error(&e);
                    sys::drain_error_queue(fd, 4096);
                    thread::sleep(Duration::from_millis(1));
                    continue;
                }
            };
            let now = sh.now_us();
            let now_unix_ms = if self.recorder.is_some() {
                unix_ms()
            } else {
                0
            };
            for i in 0..n {
                let Some((buf, _src, truncated)) = rx.get(i) else {
                    continue;
                };
                if truncated {
                    inc(&sh.counters.bad_reply, 1);
                    continue;
                }
                self.handle_reply(
                    sh,
                    buf,
                    now,
                    now_unix_ms,
                    &mut hists,
                    &mut out,
                    &mut entries,
                    &mut events,
                );
            }
            if !out.is_empty() {
                let o = out.flush(fd);
                account_send(sh, &o);
            }
            if !entries.is_empty() {
                let mut q = sh.rx_entries.lock().unwrap_or_else(|p| p.into_inner());
                q.append(&mut entries);
            }
            if let Some(r) = &self.recorder {
                r.write_all(&events);
                events.clear();
            }
        }
        hists
    }

    #[allow(clippy::too_many_arguments)]
    fn handle_reply(
        &self,
        sh: &Shared<'_>,
        buf: &[u8],
        now: u64,
        now_unix_ms: u64,
        hists: &mut Hists,
        out: &mut SendBatch,
        entries: &mut Vec<Entry>,
        events: &mut Vec<RecordEvent>,
    ) {
        let c = &sh.counters;
        let Ok(p) = packet::parse(buf) else {
            inc(&c.bad_reply, 1);
            return;
        };
        if p.op != 2 {
            // Our own requests never come back here; anything else is nonsense.
            inc(&c.bad_reply, 1);
            return;
        }
        let index = p.xid ^ self.salt;
        let Some(i) = index.checked_sub(sh.table.base) else {
            inc(&c.stray, 1);
            return;
        };
        let Some(slot) = sh.table.slots.get(i as usize) else {
            inc(&c.stray, 1);
            return;
        };
        if p.mac != mac_for(self.opts.seed, index) {
            inc(&c.bad_reply, 1);
            return;
        }
        let cur = slot.state.load(Ordering::Acquire);
        let ph = phase_of(cur);
        let lat = u64::from((now as u32).wrapping_sub(slot.sent_us.load(Ordering::Relaxed)));
        let late = !sh.retransmit && lat > sh.timeout_us;
        let fail_late = |failed: &AtomicU64| {
            if slot.advance(cur, phase::FAILED) {
                inc(failed, 1);
                inc(&c.late, 1);
                sh.in_flight.fetch_sub(1, Ordering::Relaxed);
            } else {
                inc(&c.late, 1);
            }
        };
        match p.msg_type {
            MessageType::Offer => {
                if ph != phase::DISCOVER_SENT {
                    inc(&c.unexpected, 1);
                    return;
                }
                if late {
                    fail_late(&c.failed_discover);
                    return;
                }
                let (Some(sid), false) = (p.server_id, p.yiaddr.is_unspecified()) else {
                    inc(&c.bad_reply, 1);
                    return;
                };
                slot.addr.store(u32::from(p.yiaddr), Ordering::Relaxed);
                slot.server.store(u32::from(sid), Ordering::Relaxed);
                slot.sent_us.store(now as u32, Ordering::Relaxed);
                let next = word(phase::REQUEST_SENT, 0, seq_of(cur));
                if slot
                    .state
                    .compare_exchange(cur, next, Ordering::AcqRel, Ordering::Relaxed)
                    .is_err()
                {
                    inc(&c.unexpected, 1);
                    return;
                }
                inc(&c.offers, 1);
                hists.discover_offer.record(lat);
                let f = self.fields(index, slot);
                if out.is_full() {
                    let o = out.flush(self.sock.as_fd());
                    account_send(sh, &o);
                }
                let tpl = &self.templates.select;
                out.push_with(self.target.server, |b| tpl.write(b, &f));
                inc(&c.sent_request, 1);
                entries.push(Entry {
                    idx: i,
                    word: next,
                    due_us: now + sh.timeout_us,
                });
            }
            MessageType::Ack | MessageType::Nak => {
                let (failed, acked, hist, last) = match ph {
                    phase::REQUEST_SENT => (
                        &c.failed_request,
                        &c.acks,
                        &mut hists.request_ack,
                        &sh.last_ack_us,
                    ),
                    phase::RENEW_SENT => (
                        &c.failed_renew,
                        &c.renew_acks,
                        &mut hists.renew_ack,
                        &sh.last_renew_us,
                    ),
                    _ => {
                        inc(&c.unexpected, 1);
                        return;
                    }
                };
                if late {
                    fail_late(failed);
                    return;
                }
                if p.msg_type == MessageType::Nak {
                    if slot.advance(cur, phase::NAKED) {
                        inc(&c.naks, 1);
                        sh.in_flight.fetch_sub(1, Ordering::Relaxed);
                    } else {
                        inc(&c.unexpected, 1);
                    }
                    return;
                }
                let expected = Ipv4Addr::from(slot.addr.load(Ordering::Relaxed));
                let (Some(lease_time), true) = (p.lease_time, p.yiaddr == expected) else {
                    inc(&c.bad_reply, 1);
                    return;
                };
                // The record's sequence number is taken before the client becomes BOUND (and
                // so releasable by the sender thread): its RELEASE always gets a larger one.
                let seq = self.recorder.as_ref().map_or(0, |r| r.next_seq());
                if !slot.advance(cur, phase::BOUND) {
                    inc(&c.unexpected, 1);
                    return;
                }
                inc(acked, 1);
                sh.in_flight.fetch_sub(1, Ordering::Relaxed);
                last.fetch_max(now, Ordering::Relaxed);
                hist.record(lat);
                if ph == phase::REQUEST_SENT {
                    let first = slot.first_us.load(Ordering::Relaxed);
                    hists
                        .dora
                        .record(u64::from((now as u32).wrapping_sub(first)));
                }
                if self.recorder.is_some() {
                    let mac = mac_for(self.opts.seed, index);
                    events.push(RecordEvent::Ack {
                        seq,
                        t_ms: now_unix_ms,
                        mac: hex_colon(&mac),
                        client_id: self.client_id_hex(&mac),
                        address: p.yiaddr,
                        lease_end: now_unix_ms / 1000 + u64::from(lease_time),
                        server_id: p.server_id,
                    });
                }
            }
            _ => inc(&c.bad_reply, 1),
        }
    }
}

#[derive(Debug, Default)]
struct Hists {
    discover_offer: Histogram,
    request_ack: Histogram,
    renew_ack: Histogram,
    dora: Histogram,
}

fn account_send(sh: &Shared<'_>, o: &sys::SendOutcome) {
    inc(&sh.counters.send_errors, o.dropped as u64);
    inc(&sh.counters.icmp_errors, o.icmp_errors as u64);
    if let Some(e) = &o.last_error {
        sh.note_error(e);
    }
}

/// How many first transmissions are due now: paced by `rate` (0 = by the window), never more
/// than `left`, and at most `per_iter` in one loop iteration.
fn due_count(
    rate: f64,
    now_us: u64,
    done: u64,
    left: u64,
    window: u64,
    sh: &Shared<'_>,
    per_iter: u64,
) -> u64 {
    let due = if rate > 0.0 {
        let target = (rate * now_us as f64 / 1e6) as u64;
        target.saturating_sub(done)
    } else {
        let inflight = sh.in_flight.load(Ordering::Relaxed).max(0) as u64;
        window.saturating_sub(inflight)
    };
    due.min(left).min(per_iter)
}

/// The sender thread's working state.
struct Tx<'g, 's, 't> {
    gen: &'g Generator,
    sh: &'s Shared<'t>,
    batch: SendBatch,
    levels: Vec<VecDeque<Entry>>,
    spare: Vec<Entry>,
}

impl Tx<'_, '_, '_> {
    fn push(&mut self, phase: u32, index: u32, slot: &Slot) {
        if self.batch.is_full() {
            self.flush();
        }
        let f = self.gen.fields(index, slot);
        let tpl = self.gen.template(phase);
        self.batch
            .push_with(self.gen.target.server, |b| tpl.write(b, &f));
    }

    fn flush(&mut self) {
        if !self.batch.is_empty() {
            let o = self.batch.flush(self.gen.sock.as_fd());
            account_send(self.sh, &o);
        }
    }

    fn queue(&mut self, level: usize, e: Entry) {
        while self.levels.len() <= level {
            self.levels.push(VecDeque::new());
        }
        if let Some(q) = self.levels.get_mut(level) {
            q.push_back(e);
        }
    }

    fn start_discover(&mut self, i: u32, now: u64, backoff: Option<Backoff>) {
        let Some(slot) = self.sh.table.slots.get(i as usize) else {
            return;
        };
        let old = slot.state.load(Ordering::Relaxed);
        let w = word(phase::DISCOVER_SENT, 0, seq_of(old).wrapping_add(1));
        slot.sent_us.store(now as u32, Ordering::Relaxed);
        slot.first_us.store(now as u32, Ordering::Relaxed);
        slot.state.store(w, Ordering::Release);
        self.sh.in_flight.fetch_add(1, Ordering::Relaxed);
        inc(&self.sh.counters.sent_discover, 1);
        self.push(phase::DISCOVER_SENT, self.sh.table.base + i, slot);
        let delay = backoff.map_or(self.sh.timeout_us, |b| b.initial.as_micros() as u64);
        self.queue(
            0,
            Entry {
                idx: i,
                word: w,
                due_us: now + delay,
            },
        );
    }

    /// Starts a renewal if client `i` is bound; false otherwise.
    fn start_renew(&mut self, i: u32, now: u64) -> bool {
        let Some(slot) = self.sh.table.slots.get(i as usize) else {
            return false;
        };
        let old = slot.state.load(Ordering::Acquire);
        if phase_of(old) != phase::BOUND {
            return false;
        }
        let w = word(phase::RENEW_SENT, 0, seq_of(old).wrapping_add(1));
        slot.sent_us.store(now as u32, Ordering::Relaxed);
        if slot
            .state
            .compare_exchange(old, w, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        self.sh.in_flight.fetch_add(1, Ordering::Relaxed);
        inc(&self.sh.counters.sent_renew, 1);
        self.push(phase::RENEW_SENT, self.sh.table.base + i, slot);
        self.queue(
            0,
            Entry {
                idx: i,
                word: w,
                due_us: now + self.sh.timeout_us,
            },
        );
        true
    }

    /// Releases client `i` if it is bound; false otherwise.
    fn release(&mut self, i: u32, _now: u64) -> bool {
        let Some(slot) = self.sh.table.slots.get(i as usize) else {
            return false;
        };
        let old = slot.state.load(Ordering::Acquire);
        if phase_of(old) != phase::BOUND {
            return false;
        }
        let w = word(phase::RELEASED, 0, seq_of(old).wrapping_add(1));
        if slot
            .state
            .compare_exchange(old, w, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        inc(&self.sh.counters.sent_release, 1);
        let index = self.sh.table.base + i;
        let f = self.gen.fields(index, slot);
        if self.batch.is_full() {
            self.flush();
        }
        let tpl = &self.gen.templates.release;
        self.batch
            .push_with(self.gen.target.server, |b| tpl.write(b, &f));
        if let Some(r) = &self.gen.recorder {
            r.write_all(&[RecordEvent::Release {
                seq: r.next_seq(),
                t_ms: unix_ms(),
                mac: hex_colon(&f.mac),
                client_id: self.gen.client_id_hex(&f.mac),
                address: f.ciaddr,
            }]);
        }
        true
    }

    fn take_rx_entries(&mut self) {
        {
            let mut q = self.sh.rx_entries.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::swap(&mut *q, &mut self.spare);
        }
        let mut taken = std::mem::take(&mut self.spare);
        for e in taken.drain(..) {
            self.queue(0, e);
        }
        self.spare = taken;
    }

    /// Handles every entry due at `now`: retransmits (with `backoff`, before `deadline_us`) or
    /// declares the request lost.
    fn expire(&mut self, now: u64, backoff: Option<Backoff>, deadline_us: u64) {
        for level in 0..self.levels.len() {
            while let Some(e) = self.levels.get(level).and_then(|q| q.front()).copied() {
                if e.due_us > now {
                    break;
                }
                if let Some(q) = self.levels.get_mut(level) {
                    q.pop_front();
                }
                self.expire_one(e, now, backoff, deadline_us);
            }
        }
    }

    fn expire_one(&mut self, e: Entry, now: u64, backoff: Option<Backoff>, deadline_us: u64) {
        let sh = self.sh;
        let Some(slot) = sh.table.slots.get(e.idx as usize) else {
            return;
        };
        if slot.state.load(Ordering::Acquire) != e.word {
            return; // answered (or superseded) meanwhile
        }
        let ph = phase_of(e.word);
        if let Some(b) = backoff.filter(|_| now < deadline_us) {
            let tries = (tries_of(e.word) + 1).min(255);
            let next = word(ph, tries, seq_of(e.word));
            slot.sent_us.store(now as u32, Ordering::Relaxed);
            if slot
                .state
                .compare_exchange(e.word, next, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
            {
                return;
            }
            inc(&sh.counters.retransmits, 1);
            self.push(ph, sh.table.base + e.idx, slot);
            let (level, delay) = backoff_level(b, tries);
            self.queue(
                level,
                Entry {
                    idx: e.idx,
                    word: next,
                    due_us: now + delay,
                },
            );
            return;
        }
        let failed = match ph {
            phase::DISCOVER_SENT => &sh.counters.failed_discover,
            phase::REQUEST_SENT => &sh.counters.failed_request,
            phase::RENEW_SENT => &sh.counters.failed_renew,
            _ => return,
        };
        if slot.advance(e.word, phase::FAILED) {
            inc(failed, 1);
            sh.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// The queue level and delay of retransmission `tries` (1 = first retransmission): the delay
/// doubles from `initial` up to `max`; every delay has its own level so each queue stays
/// ordered by due time.
fn backoff_level(b: Backoff, tries: u32) -> (usize, u64) {
    let initial = b.initial.as_micros().max(1) as u64;
    let max = (b.max.as_micros() as u64).max(initial);
    let mut delay = initial;
    let mut level = 0usize;
    while level < tries as usize && delay < max {
        delay = delay.saturating_mul(2).min(max);
        level += 1;
    }
    (level, delay)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_word_packs_fields() {
        let w = word(phase::REQUEST_SENT, 3, 0xabcd);
        assert_eq!(phase_of(w), phase::REQUEST_SENT);
        assert_eq!(tries_of(w), 3);
        assert_eq!(seq_of(w), 0xabcd);
        assert_eq!(seq_of(word(1, 0, 0x1_0001)), 1);
    }

    #[test]
    fn backoff_doubles_to_the_cap() {
        let b = Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(8),
        };
        let d = |t| backoff_level(b, t);
        assert_eq!(d(0), (0, 1_000_000));
        assert_eq!(d(1), (1, 2_000_000));
        assert_eq!(d(2), (2, 4_000_000));
        assert_eq!(d(3), (3, 8_000_000));
        assert_eq!(d(4), (3, 8_000_000));
        assert_eq!(d(200), (3, 8_000_000));
    }
}

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
//!
//! Modules: `table` (client slots and their state word), `shared` (what both threads of a
//! phase share: counters, timeout entries), `sender` (the plan loop: pacing and the end of a
//! phase), `tx` (the send path: starting exchanges, timeouts, retransmissions),
//! `receiver` (replies), `monitor` (timeline, give-up) and `phase_report` (the result
//! of a phase).

mod monitor;
mod phase_report;
mod receiver;
mod sender;
mod shared;
mod table;
mod tx;

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use crate::identity::{client_id_for, hex, mac_for};
use crate::packet::{Fields, RequestKind, SubOptionError, Template};
use crate::record::Recorder;
use crate::spread::LinkSelection;
use crate::sys;

pub use phase_report::{Counts, CpuUse, Latencies, PhaseReport, StopReason, TimelinePoint};
pub use table::ClientTable;

use phase_report::PhaseEnd;
use shared::{unix_ms, Counters, Shared};
use table::{phase, Slot};

/// Where the load goes.
#[derive(Debug, Clone)]
pub struct Target {
    /// The server's address and port (67).
    pub server: SocketAddrV4,
    /// The relay address the generator binds and puts in giaddr.
    pub relay: Ipv4Addr,
    /// The port the generator binds (67, where servers answer relays).
    pub relay_port: u16,
    /// Direct-client mode on this interface instead of a relay: bind 0.0.0.0:68 with
    /// SO_BINDTODEVICE, broadcast DISCOVER and REQUEST (broadcast flag set, giaddr 0) to
    /// 255.255.255.255 on the server's port, RELEASE unicast to the server. `relay` and
    /// `relay_port` are then unused.
    pub direct: Option<String>,
}

/// The DHCP client port a direct client binds.
pub const CLIENT_PORT: u16 = 68;

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
    /// Option 82 sub-option 5 in every request, per client (none: no option 82).
    pub link_selection: Option<LinkSelection>,
}

/// Retransmission back-off (RFC 2131 4.1 style: the delay doubles up to a cap).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// First delay.
    pub initial: Duration,
    /// Largest delay.
    pub max: Duration,
}

/// Returning clients: client indices from `first` on take their MAC from `clients`
/// identities in turn (index `first + k` is identity `first + k % clients`), and a client whose
/// identity is used again before `reuse_end` releases its address right after its ACK; with
/// `release_all` every client from `first` on releases after its ACK (new clients that
/// release: `clients` = `u32::MAX`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cycle {
    /// The first client index that cycles (its identity is itself).
    pub first: u32,
    /// Identities cycled over (at least 1).
    pub clients: u32,
    /// Client indices below this one exist (or may, in later phases): a client whose
    /// `index + clients` is below it is reused, so it releases.
    pub reuse_end: u32,
    /// Every client from `first` on releases right after its ACK.
    pub release_all: bool,
}

impl Cycle {
    /// The identity (MAC index) of client `index`.
    pub fn identity(&self, index: u32) -> u32 {
        match index.checked_sub(self.first) {
            Some(k) => self.first + k % self.clients.max(1),
            None => index,
        }
    }

    /// True when client `index` releases right after its ACK: its identity is used again
    /// later, or every client releases.
    pub fn releases(&self, index: u32) -> bool {
        index >= self.first
            && (self.release_all
                || u64::from(index) + u64::from(self.clients) < u64::from(self.reuse_end))
    }

    /// New clients (unique MACs from `first` on) that each release right after their ACK.
    pub fn new_clients_release(first: u32) -> Self {
        Self {
            first,
            clients: u32::MAX,
            reuse_end: u32::MAX,
            release_all: true,
        }
    }

    /// The client that used `index`'s identity before it, if any.
    pub fn previous(&self, index: u32) -> Option<u32> {
        index
            .checked_sub(self.clients.max(1))
            .filter(|&p| p >= self.first)
    }
}

/// The identity (MAC index) of client `index` under an optional cycle.
pub(crate) fn identity_of(cycle: Option<Cycle>, index: u32) -> u32 {
    cycle.map_or(index, |c| c.identity(index))
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
        /// Returning clients (identities reused, each followed by a RELEASE), or none.
        cycle: Option<Cycle>,
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
        /// New clients cycle over identities (renewals and releases then only take
        /// pre-bound clients), or none.
        cycle: Option<Cycle>,
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
        /// Each retransmission delay (and the first timeout) randomised by a uniform offset
        /// within ± this (RFC 2131 4.1); zero = exact doubling.
        jitter: Duration,
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
    /// The request templates could not take option 82.
    #[error("cannot build the request templates: {0}")]
    Template(#[from] SubOptionError),
    /// SO_BINDTODEVICE failed (no such interface, or no privilege).
    #[error("cannot bind to interface {iface:?}: {source}")]
    Device {
        /// The interface.
        iface: String,
        /// The cause.
        source: io::Error,
    },
    /// The client table would be too large.
    #[error("{0} clients requested; the limit is {1} (use --max-clients)")]
    TooManyClients(u64, u64),
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
        let addr = match &target.direct {
            Some(iface) => {
                sock.set_broadcast(true).map_err(SetupError::Socket)?;
                sock.bind_device(Some(iface.as_bytes()))
                    .map_err(|source| SetupError::Device {
                        iface: iface.clone(),
                        source,
                    })?;
                SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, CLIENT_PORT)
            }
            None => SocketAddrV4::new(target.relay, target.relay_port),
        };
        sock.bind(&addr.into())
            .map_err(|source| SetupError::Bind { addr, source })?;
        let template = |kind| -> Result<Template, SetupError> {
            let mut t = Template::new(kind, target.relay, opts.client_id);
            if target.direct.is_some() {
                t.set_direct();
            }
            if opts.link_selection.is_some() {
                t.add_link_selection()?;
            }
            Ok(t)
        };
        let templates = Templates {
            discover: template(RequestKind::Discover)?,
            select: template(RequestKind::Select)?,
            renew: template(RequestKind::Renew)?,
            release: template(RequestKind::Release)?,
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
            cycle: match plan {
                Plan::Dora { cycle, .. } | Plan::Mix { cycle, .. } => cycle,
                _ => None,
            },
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
                Plan::Avalanche {
                    backoff, jitter, ..
                } => self
                    .opts
                    .give_up
                    .max(backoff.max + backoff.initial + jitter),
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
        PhaseReport::assemble(PhaseEnd {
            name,
            plan,
            shared: &shared,
            hists,
            send_us,
            elapsed,
            cpu_before: cpu0,
            cpu_after: cpu1,
            timeline,
            stop,
            recorded: self.recorder.as_ref().map_or(0, |r| r.written()) - recorded0,
        })
    }

    /// The fields of client `index` (its xid) with identity `identity` (its MAC and link).
    fn fields(&self, index: u32, identity: u32, slot: &Slot) -> Fields {
        let mac = mac_for(self.opts.seed, identity);
        let addr = Ipv4Addr::from(slot.addr.load(Ordering::Relaxed));
        Fields {
            xid: index ^ self.salt,
            mac,
            ciaddr: addr,
            requested: addr,
            server_id: Ipv4Addr::from(slot.server.load(Ordering::Relaxed)),
            link_selection: self
                .opts
                .link_selection
                .map_or(Ipv4Addr::UNSPECIFIED, |l| l.address(identity)),
        }
    }

    /// Where a request of `kind` goes: the server; a direct client broadcasts DISCOVER and
    /// REQUEST to 255.255.255.255 on the server's port.
    fn destination(&self, kind: RequestKind) -> SocketAddrV4 {
        match (&self.target.direct, kind) {
            (Some(_), RequestKind::Discover | RequestKind::Select) => {
                SocketAddrV4::new(Ipv4Addr::BROADCAST, self.target.server.port())
            }
            _ => self.target.server,
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::parse;

    /// A generator bound to an ephemeral loopback port (nothing is sent).
    fn generator(link_selection: Option<LinkSelection>) -> Generator {
        let target = Target {
            server: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9),
            relay: Ipv4Addr::LOCALHOST,
            relay_port: 0,
            direct: None,
        };
        let opts = EngineOptions {
            timeout: Duration::from_secs(1),
            give_up: Duration::from_secs(1),
            hard_deadline: Instant::now() + Duration::from_secs(10),
            batch: 4,
            seed: 1,
            client_id: false,
            print_timeline: false,
            link_selection,
        };
        Generator::new(target, opts, None, 1000).unwrap()
    }

    fn written(g: &Generator, phase: u32, index: u32) -> Vec<u8> {
        let slot = Slot::default();
        slot.addr
            .store(u32::from(Ipv4Addr::new(10, 0, 0, 9)), Ordering::Relaxed);
        slot.server
            .store(u32::from(Ipv4Addr::new(198, 18, 0, 1)), Ordering::Relaxed);
        let mut buf = vec![0u8; 1500];
        let n = g
            .template(phase)
            .write(&mut buf, &g.fields(index, index, &slot));
        buf.truncate(n);
        buf
    }

    #[test]
    fn cycle_maps_clients_to_identities_and_releases_the_reused() {
        // 10 clients from index 100 over 3 identities.
        let c = Cycle {
            first: 100,
            clients: 3,
            reuse_end: 110,
            release_all: false,
        };
        let ids: Vec<u32> = (100..110).map(|i| c.identity(i)).collect();
        assert_eq!(ids, [100, 101, 102, 100, 101, 102, 100, 101, 102, 100]);
        assert_eq!(c.identity(7), 7, "clients before `first` keep their own");
        // 100..=106 are used again (by 103..=109); 107, 108, 109 are the last users.
        let reused: Vec<u32> = (100..110).filter(|&i| c.releases(i)).collect();
        assert_eq!(reused, (100..=106).collect::<Vec<_>>());
        assert!(!c.releases(99));
        assert_eq!(c.previous(100), None);
        assert_eq!(c.previous(102), None);
        assert_eq!(c.previous(103), Some(100));
        assert_eq!(c.previous(109), Some(106));
        // Every reused client's identity is the identity of the one that takes it over.
        for i in reused {
            assert_eq!(c.identity(i), c.identity(i + 3));
            assert_eq!(c.previous(i + 3), Some(i));
        }
        let endless = Cycle {
            first: 0,
            clients: 5,
            reuse_end: 10,
            release_all: true,
        };
        assert!(endless.releases(1_000_000));
        // New clients that release: unique identities, no previous user, all release.
        let fresh = Cycle::new_clients_release(10);
        for i in [10, 11, 5_000_000, u32::MAX - 1] {
            assert_eq!(fresh.identity(i), i);
            assert_eq!(fresh.previous(i), None);
            assert!(fresh.releases(i));
        }
        assert!(!fresh.releases(9));
        assert_eq!(identity_of(None, 42), 42);
        assert_eq!(identity_of(Some(endless), 42), 2);
    }

    #[test]
    fn clients_carry_their_link_selection_address() {
        let count = 1000;
        let l = LinkSelection::new(Ipv4Addr::new(10, 128, 0, 1), 64, count).unwrap();
        let g = generator(Some(l));
        for (index, want) in [
            (0, Ipv4Addr::new(10, 128, 0, 1)),
            (1, Ipv4Addr::new(10, 128, 0, 65)),
            (count, Ipv4Addr::new(10, 128, 0, 1)),
            (count + 1, Ipv4Addr::new(10, 128, 0, 65)),
        ] {
            for ph in [phase::DISCOVER_SENT, phase::REQUEST_SENT, phase::RENEW_SENT] {
                let b = written(&g, ph, index);
                let p = parse(&b).unwrap();
                assert_eq!(p.link_selection, Some(want), "client {index} phase {ph}");
                assert_eq!(p.giaddr, Ipv4Addr::LOCALHOST, "giaddr stays the relay");
                assert_eq!(p.mac, mac_for(1, index));
                // The raw bytes: 82, 6, 5, 4, address, then END.
                let at = b.windows(4).position(|w| w == [82, 6, 5, 4]).unwrap();
                assert_eq!(
                    &b[at + 4..at + 9],
                    &[want.octets().as_slice(), &[255]].concat()[..]
                );
            }
        }
        let plain = written(&generator(None), phase::DISCOVER_SENT, 1);
        assert_eq!(parse(&plain).unwrap().link_selection, None);
        assert!(!plain.windows(2).any(|w| w == [82, 6]));
    }
}

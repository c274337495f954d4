//! The worker process: one mio loop over this worker's UDP socket and its channel to the
//! supervisor, plus a periodic sweep of its share of the table.

use std::io;
use std::net::SocketAddrV4;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use prodhcp_config::{Config, Durability};
use prodhcp_proto::launch::{self, write_frame, FrameKind, FrameReader, LaunchArgs, ReadOutcome};
use shm_layout::{worker_owner, Gate, LayoutSpec, Ring, Table};

use crate::codec::MAX_REPLY;
use crate::config_parse::{parse_config, BackgroundParse};
use crate::counters::{Counter, DropCounts};
use crate::engine::{Engine, Incoming};
use crate::held::{client_of, HeldReplies};
use crate::interfaces::InterfaceBroadcasts;
use crate::serve_config::ServeConfig;
use crate::sys::{self, RecvBatch, SendBatch};

const UDP: Token = Token(0);
const CHANNEL: Token = Token(1);
/// The replication doorbell (syncd published a replicated position, or the hold changed).
const DOORBELL: Token = Token(2);
/// A configuration parsed off the loop is ready ([`crate::config_parse`]).
const PARSED: Token = Token(3);
/// How often the sweeper runs, and how many slots it visits per run.
/// Small, frequent steps keep each pause short (≈ 0.1–0.2 ms for a /8 on 2 workers), so the
/// sweeper does not show in reply latency, and still cover the whole table every
/// [`SWEEP_STEPS_PER_PASS`] × 20 ms = 30 s.
const SWEEP_EVERY: Duration = Duration::from_millis(20);
/// Steps per full pass of a worker's share of the table.
const SWEEP_STEPS_PER_PASS: u32 = 1500;
/// Receive batches served before the loop looks at its channel, heartbeat and sweeper again.
const MAX_BATCHES_PER_TURN: usize = 64;

/// Errors that end a worker.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// I/O on the socket, channel or poll.
    #[error("worker i/o: {0}")]
    Io(#[from] io::Error),
    /// The first configuration could not be used.
    #[error("worker configuration: {0}")]
    Config(String),
    /// The table could not be opened.
    #[error(transparent)]
    Table(#[from] shm_layout::TableOpenError),
    /// The ring could not be opened.
    #[error(transparent)]
    Ring(#[from] shm_layout::RingOpenError),
}

/// The lease table layout `config` needs: its runs ([`Config::table_layout`]) in the table's
/// form. The supervisor builds it the same way (`prodhcp_supervisor::daemon::table_spec`); a
/// worker whose layout differed would fail to open the table (fingerprint).
pub(crate) fn table_spec(config: &Config) -> LayoutSpec {
    LayoutSpec::from_ranges(
        config
            .table_layout()
            .iter()
            .map(|t| (t.range.first, t.range.last, t.in_pool)),
    )
}

/// Runs a worker until told to stop, SIGTERM, or the supervisor goes away. Its descriptors are
/// the ones the launch contract places ([`launch::INHERITED`]).
pub fn run_worker(args: LaunchArgs) -> Result<(), WorkerError> {
    launch::die_with_parent(args.supervisor_pid)?;
    let term = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::clone(&term))?;
    signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&term))?;

    // Placed by the supervisor for this process alone (the launch contract).
    let udp: OwnedFd = launch::take_inherited(launch::UDP_SOCKET)?;
    let mut channel = UnixStream::from(launch::take_inherited(launch::CHANNEL)?);
    let doorbell: OwnedFd = launch::take_inherited(launch::REPLICATED_DOORBELL)?;
    let records_doorbell: OwnedFd = launch::take_inherited(launch::RECORDS_DOORBELL)?;

    // The first frame is the configuration (blocking read).
    let mut reader = FrameReader::default();
    let first = loop {
        match reader.poll(&mut channel)? {
            ReadOutcome::Frame(FrameKind::Config, text) => break text,
            ReadOutcome::Frame(FrameKind::Stop, _) | ReadOutcome::Closed => return Ok(()),
            _ => continue,
        }
    };
    let config = parse_config(&first).map_err(WorkerError::Config)?;
    let owner = worker_owner(args.id);
    let table = Table::open_for(&config.table_file, &table_spec(&config))?;
    // Record who writes as this owner before the first write, so that a supervisor starting
    // after this one died can tell whether this process still lives (and end it).
    if let Some(me) = shm_layout::OwnerProcess::current() {
        table.set_owner_process(owner, me);
    }
    let ring = Ring::open_or_create(
        &config.ring_file(owner),
        owner,
        u64::from(config.ring_capacity),
    )?;
    let durability = config.durability;
    let mut held = HeldReplies::new(config.max_held_replies as usize);
    let serve = ServeConfig::build(config, &table);
    let mut engine = Engine::new(table, ring, owner, serve, args.id, args.workers);
    let mut durable = DurableSends::new(durability, engine.ring().head());
    // Replies a previous process of this worker held died with it.
    engine.counters().set(Counter::HeldNow, 0);
    write_frame(&mut channel, FrameKind::Applied, b"started")?;
    channel.set_nonblocking(true)?;

    let mut poll = Poll::new()?;
    let udp_raw = udp.as_raw_fd();
    poll.registry()
        .register(&mut SourceFd(&udp_raw), UDP, Interest::READABLE)?;
    let ch_raw = channel.as_raw_fd();
    poll.registry()
        .register(&mut SourceFd(&ch_raw), CHANNEL, Interest::READABLE)?;
    let bell_raw = doorbell.as_raw_fd();
    poll.registry()
        .register(&mut SourceFd(&bell_raw), DOORBELL, Interest::READABLE)?;
    let mut parser = BackgroundParse::new(Arc::new(mio::Waker::new(poll.registry(), PARSED)?));
    // Frames that came with the first one (a reload sent right after this worker's start) sit
    // in the reader's buffer: the edge-triggered channel will not report them.
    if !drain_channel(&mut reader, &mut channel, &mut parser)? {
        return Ok(());
    }
    let mut events = Events::with_capacity(16);
    let mut batch = RecvBatch::default();
    let mut sends = SendBatch::default();
    let mut direct = DirectReplies::default();
    let mut broadcasts = InterfaceBroadcasts::load();
    let sweep_budget =
        (engine.table().slot_count() / args.workers.max(1) as u32 / SWEEP_STEPS_PER_PASS).max(256);
    let mut next_sweep = Instant::now() + SWEEP_EVERY;

    // Edge-triggered: a socket not drained in one turn (bounded so the loop keeps its
    // heartbeat under flood) is served again on the next turn without waiting for an event.
    let mut udp_pending = false;
    while !term.load(Ordering::Relaxed) {
        let timeout = if udp_pending {
            Duration::ZERO
        } else {
            next_sweep.saturating_duration_since(Instant::now())
        };
        match poll.poll(&mut events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        }
        let mut udp_ready = udp_pending;
        for ev in events.iter() {
            match ev.token() {
                UDP => udp_ready = true,
                // Drained here; the release below looks at the ring whatever woke the loop.
                DOORBELL => {
                    let mut count = [0u8; 8];
                    let _ = nix::unistd::read(&doorbell, &mut count);
                }
                CHANNEL if !drain_channel(&mut reader, &mut channel, &mut parser)? => return Ok(()),
                // A parse finished: applied below.
                PARSED => {}
                _ => {}
            }
        }
        if udp_ready {
            udp_pending = !serve_udp(
                &mut engine,
                &udp,
                &broadcasts,
                &mut durable,
                &mut batch,
                &mut sends,
                &mut direct,
                &mut held,
                &records_doorbell,
            )?;
        }
        while let Some((prepared, parse_time)) = parser.take_done() {
            let t_apply = Instant::now();
            let reply = match prepared.and_then(|serve| {
                // A live pool change (issue 10): the supervisor changed the table's directory
                // before sending this configuration; the view was built and checked against it
                // off the loop (`config_parse::prepare`), this handle only re-reads it.
                engine.refresh_layout()?;
                Ok(serve)
            }) {
                Ok(serve) => {
                    durable.mode = serve.config.durability;
                    held.set_max(serve.config.max_held_replies as usize);
                    engine.reconfigure(serve);
                    sys::trim_heap();
                    tracing::info!(
                        worker = args.id,
                        prepare_us = parse_time.as_micros() as u64,
                        apply_us = t_apply.elapsed().as_micros() as u64,
                        "configuration applied"
                    );
                    (FrameKind::Applied, "applied".to_string())
                }
                Err(e) => (FrameKind::Rejected, e),
            };
            channel.set_nonblocking(false)?;
            write_frame(&mut channel, reply.0, reply.1.as_bytes())?;
            channel.set_nonblocking(true)?;
        }
        release_held(&engine, &udp, &mut held, &mut sends);
        if Instant::now() >= next_sweep {
            engine.table().beat(owner);
            engine.sweep(sweep_budget);
            broadcasts.refresh_if_stale();
            next_sweep = Instant::now() + SWEEP_EVERY;
        }
    }
    Ok(())
}

/// Reads every frame the channel has, the reader's buffered ones first: configurations go to
/// the parser (parsed off the loop, `config_parse`, while serving goes on). False when the
/// supervisor said stop or went away.
fn drain_channel(
    reader: &mut FrameReader,
    channel: &mut UnixStream,
    parser: &mut BackgroundParse,
) -> io::Result<bool> {
    loop {
        match reader.poll(channel)? {
            ReadOutcome::Frame(FrameKind::Config, text) => parser.submit(text),
            ReadOutcome::Frame(FrameKind::Stop, _) | ReadOutcome::Closed => return Ok(false),
            ReadOutcome::Frame(..) => {}
            ReadOutcome::Pending => return Ok(true),
        }
    }
}

/// The send batch has as many buffers as the receive batch has datagrams, and it is flushed
/// after every receive batch, so it cannot overflow.
fn unreachable_batch_overflow() {
    debug_assert!(false, "send batch overflow");
}

/// Replies that must leave through a given interface with a given source (broadcasts to
/// clients without an address), held until their batch is durable.
struct DirectReplies {
    bufs: Vec<[u8; MAX_REPLY]>,
    items: Vec<(usize, SocketAddrV4, Option<u32>, std::net::Ipv4Addr)>,
}

impl Default for DirectReplies {
    fn default() -> Self {
        DirectReplies {
            bufs: vec![[0u8; MAX_REPLY]; sys::BATCH],
            items: Vec::with_capacity(sys::BATCH),
        }
    }
}

/// What the receive path needs for `durability`: with `"power"` only a reply that confirms a
/// lease (an ACK to a REQUEST) waits for its batch's sync; a reply that confirms nothing
/// (OFFER, NAK, ACK to INFORM) leaves before it, and a batch with no confirming reply makes no
/// sync at all. The next sync covers every ring record since the last one, so the records on
/// disk stay contiguous.
struct DurableSends {
    mode: Durability,
    /// Ring head whose changes (slots and records) are on stable storage, as far as this
    /// process synced them.
    synced_upto: u64,
    /// Routed replies that confirm nothing, sent before the batch's sync.
    early: SendBatch,
    /// Clients (chaddr) with a confirming reply in this batch: their later replies in the
    /// batch wait behind it, so a client's replies keep their order.
    waiting: Vec<[u8; 16]>,
}

impl DurableSends {
    fn new(mode: Durability, ring_head: u64) -> Self {
        DurableSends {
            mode,
            synced_upto: ring_head,
            early: SendBatch::default(),
            waiting: Vec::with_capacity(sys::BATCH),
        }
    }
}

/// Serves up to [`MAX_BATCHES_PER_TURN`] batches; returns whether the socket was drained.
///
/// Per receive batch: every request is handled (each table change committed, its ring record
/// published). With `durability: "power"`, replies that confirm nothing (OFFER, NAK, ACK to
/// INFORM) are sent at once; then, if the batch has a reply that confirms a lease, the slots
/// and ring records changed since the last sync are written to stable storage
/// ([`shm_layout::durable::sync_changes`], one sync per batch: group commit), and only then are
/// the confirming replies sent. See `shm_layout::durable` for why that order makes every ACK
/// that leaves the machine survive a power cut. If the sync fails, the confirming replies are
/// not sent (counted as send errors; the clients retry).
#[allow(clippy::too_many_arguments)]
fn serve_udp(
    engine: &mut Engine,
    udp: &OwnedFd,
    broadcasts: &InterfaceBroadcasts,
    durable: &mut DurableSends,
    batch: &mut RecvBatch,
    sends: &mut SendBatch,
    direct: &mut DirectReplies,
    held: &mut HeldReplies,
    records_doorbell: &OwnedFd,
) -> Result<bool, WorkerError> {
    for _ in 0..MAX_BATCHES_PER_TURN {
        let n = match batch.recv(udp.as_raw_fd()) {
            Ok(0) => return Ok(true),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        if let Some(dropped) = batch.kernel_dropped.take() {
            engine
                .counters()
                .set(Counter::KernelDropped, u64::from(dropped));
        }
        // The gate (the node's role, set by syncd) is read once per batch: every request of
        // the batch is served under the same role. Closed: nobody is answered, and nothing is
        // decoded (a standby's table is a replica; it changes only by replication).
        if engine.refresh_gate() == Gate::Closed {
            let counters = engine.counters();
            counters.add(Counter::Received, n as u64);
            counters.add(Counter::Dropped, n as u64);
            counters.add(Counter::DropNotActive, n as u64);
            continue;
        }
        let head_before = engine.ring().head();
        let held_before = held.len();
        let mut held_full = 0u64;
        let power = durable.mode == Durability::Power;
        // Replies of this batch that confirm a lease (queued or held): they need the sync.
        let mut confirming = 0usize;
        let mut early_failed = 0usize;
        durable.waiting.clear();
        for i in 0..n {
            let m = batch.meta[i];
            let inc = Incoming {
                src: m.src,
                ifindex: m.ifindex,
                local: m.local,
                broadcast: broadcasts.is_broadcast(m.dst, m.ifindex),
            };
            // Replies routed normally (to relays and renewing clients) are batched into one
            // sendmmsg; broadcasts to clients without an address need a per-packet interface.
            let Some(buf) = sends.next_buf() else {
                unreachable_batch_overflow();
                continue;
            };
            let Some(reply) = engine.handle(&batch.bufs[i][..m.len], &inc, buf) else {
                continue;
            };
            let dst: SocketAddrV4 = reply.dst;
            // Synchronous replication: a reply confirming a lease waits until its change is
            // replicated (read after this request's table writes), and so does any later reply
            // to a client that has one waiting. See `crate::held`.
            let bytes = &buf[..reply.len];
            let ring = engine.ring();
            let client = client_of(bytes);
            let client_waits = !held.is_empty() && held.holds_client(&client);
            if client_waits || (reply.confirms_lease && ring.hold_replies()) {
                let head = ring.head();
                if client_waits || ring.replicated() < head {
                    if held
                        .hold(head, bytes, dst, reply.ifindex, reply.src)
                        .is_err()
                    {
                        held_full += 1;
                    } else if reply.confirms_lease {
                        confirming += 1;
                    }
                    continue;
                }
            }
            if power {
                if reply.confirms_lease {
                    confirming += 1;
                    durable.waiting.push(client);
                } else if !durable.waiting.contains(&client) {
                    // Confirms nothing: it does not wait for the disk.
                    if reply.ifindex.is_none() {
                        if let Some(out) = durable.early.next_buf() {
                            out[..reply.len].copy_from_slice(bytes);
                            durable.early.push(reply.len, dst);
                        } else {
                            unreachable_batch_overflow();
                        }
                    } else if sys::send_to(udp, bytes, dst, reply.ifindex, reply.src).is_err() {
                        early_failed += 1;
                    }
                    continue;
                }
            }
            if reply.ifindex.is_none() {
                sends.push(reply.len, dst);
            } else if let Some(held) = direct.bufs.get_mut(direct.items.len()) {
                held[..reply.len].copy_from_slice(&buf[..reply.len]);
                direct
                    .items
                    .push((reply.len, dst, reply.ifindex, reply.src));
            } else {
                unreachable_batch_overflow();
            }
        }
        // The first replies to wait for replication (nothing was held before this batch):
        // wake syncd to ship now. While replies are already held syncd is shipping and turns
        // every millisecond anyway; a write per held batch woke syncd per batch and, measured at
        // 5,000 leases/s, gave REQUEST→ACK p50 0.38–0.43 ms / p99 8.1–9.8 ms against 0.22 ms /
        // 2.6–3.0 ms this way (BENCHMARKS.md, "Replication"). EAGAIN: a wake is pending anyway.
        if held_before == 0 && !held.is_empty() && engine.ring().head() != head_before {
            let _ = nix::unistd::write(records_doorbell, &1u64.to_ne_bytes());
        }
        if !durable.early.is_empty() {
            early_failed += durable.early.flush(udp);
        }
        let is_durable = if power && confirming > 0 {
            let t_sync = Instant::now();
            let synced = shm_layout::durable::sync_changes(
                engine.table(),
                engine.ring(),
                durable.synced_upto,
            );
            let counters = engine.counters();
            counters.inc(Counter::DiskSyncs);
            counters.add(Counter::DiskSyncMicros, t_sync.elapsed().as_micros() as u64);
            match synced {
                Ok(upto) => {
                    durable.synced_upto = upto;
                    true
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not write the batch's lease changes to disk; its confirming replies are not sent");
                    false
                }
            }
        } else {
            true
        };
        let counters = engine.counters();
        for _ in 0..early_failed {
            counters.drop_for(Counter::DropSendError);
        }
        for _ in 0..held_full {
            counters.drop_for(Counter::DropHeldFull);
        }
        let newly_held = if is_durable {
            held.len() - held_before
        } else {
            // Its changes are not on disk: its held replies must not leave either.
            let n = held.truncate(held_before);
            counters.add(Counter::Dropped, n as u64);
            counters.add(Counter::DropSendError, n as u64);
            0
        };
        if newly_held > 0 {
            counters.add(Counter::HeldReplies, newly_held as u64);
        }
        if newly_held > 0 || held_before != held.len() {
            counters.set(Counter::HeldNow, held.len() as u64);
        }
        let unsent = if is_durable {
            let mut failed = sends.flush(udp);
            for (k, &(len, dst, ifindex, src)) in direct.items.iter().enumerate() {
                if sys::send_to(udp, &direct.bufs[k][..len], dst, ifindex, src).is_err() {
                    failed += 1;
                }
            }
            failed
        } else {
            let n = sends.len() + direct.items.len();
            sends.clear();
            n
        };
        direct.items.clear();
        for _ in 0..unsent {
            engine.counters().drop_for(Counter::DropSendError);
        }
        release_held(engine, udp, held, sends);
    }
    Ok(false)
}

/// Sends every held reply the ring's replicated position now covers, through the same paths
/// as a batch's replies: `sendmmsg` batches for routed replies, one `sendmsg` with its
/// interface for a broadcast; when the hold is clear, drops the rest unsent (counted
/// `held_dropped`, see `crate::held`). Cheap when nothing is held.
fn release_held(engine: &Engine, udp: &OwnedFd, held: &mut HeldReplies, sends: &mut SendBatch) {
    if held.is_empty() {
        return;
    }
    let ring = engine.ring();
    let hold = ring.hold_replies();
    let replicated = ring.replicated();
    let mut failed = 0;
    let done = held.release(replicated, hold, |r| {
        if r.ifindex.is_some() {
            // Whatever is batched before it leaves first: a client's replies keep their order.
            failed += sends.flush(udp);
            if sys::send_to(udp, &r.bytes, r.dst, r.ifindex, r.src).is_err() {
                failed += 1;
            }
            return;
        }
        if sends.next_buf().is_none() {
            failed += sends.flush(udp);
        }
        if let Some(buf) = sends.next_buf() {
            buf[..r.bytes.len()].copy_from_slice(&r.bytes);
            sends.push(r.bytes.len(), r.dst);
        }
    });
    failed += sends.flush(udp);
    let counters = engine.counters();
    counters.add(Counter::HeldReleased, done.sent as u64);
    if done.dropped > 0 {
        counters.add(Counter::HeldDropped, done.dropped as u64);
    }
    counters.set(Counter::HeldNow, held.len() as u64);
    for _ in 0..failed {
        counters.drop_for(Counter::DropSendError);
    }
}

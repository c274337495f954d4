//! Replication over the peer links: [`Replicator`] ships this node's ring records (and, when
//! a peer needs it, a bulk sync of the whole table) to every up peer, applies what peers send,
//! acknowledges, and publishes "replicated up to" in the rings.
//!
//! # Symmetric, by version
//!
//! Replication does not depend on the roles ([`crate::role`]): every node ships the records of its own
//! producer rings — the workers', the supervisor's (100) and the importer's (101), never
//! syncd's own 102, whose records are the changes it applied from peers (shipping those would
//! loop) — to every peer whose link is up, and applies what the peers send through
//! [`crate::apply::Applier`] (`Writer::apply_replica` as owner 102: the incoming version is
//! kept, an older or equal one is a stale no-op). In active/standby operation only the active's
//! workers write, so only the active ships; after a partition both ship and the tables merge by
//! slot version.
//!
//! **Two different images with the same version** (both sides changed a slot from the same
//! version during a partition) are settled by `shm_layout::replica_wins`, alike on both sides:
//! the later lease end wins, then the higher encoded words. With the partition shares (see
//! [`crate::role`]) only renewals of one client's binding on both sides can tie, so the rule
//! only picks which renewal's lease end both keep.
//!
//! # Per peer
//!
//! - **Hello positions**: each node's hello to a peer carries, per ring of that peer, the last
//!   sequence number it applied from it ([`Replicator::hello_positions`]). On link up the
//!   shipper resumes a ring after the peer's position `P` when `0 < P <= head` and record
//!   `P + 1` is still in the ring (or `P == head`); a position of 0 with records in the ring
//!   means "nothing from you yet", and the ring may not hold the table's whole history, so that
//!   is a bulk sync too.
//! - **Bulk sync** otherwise: the ring heads are noted, the table is walked with
//!   [`BulkReader`] in chunks ([`Message::Bulk`], at most [`BULK_ENTRIES`] images each) while
//!   the workers keep serving, and the ring records after the noted heads are shipped *at the
//!   same time* (each slot ends at its highest version whichever arrives first, and the tail is
//!   read before the ring can lap it). [`Message::BulkDone`] carries the noted heads; the
//!   receiver clears its positions for that peer at the first chunk and takes the heads (or
//!   the tail records it applied since, if later) at `BulkDone`, so a link that drops
//!   mid-walk means a new bulk sync, never a resume over a partial table.
//! - **In sync**: after a resume, when the peer acknowledged every ring up to the heads seen at
//!   link up; after a bulk sync, when every chunk is acknowledged and every ring up to the heads
//!   seen when the last chunk's acknowledgement arrived.
//! - **Group commit**: a [`Message::Records`] frame carries up to [`RECORDS_PER_FRAME`]
//!   records of one ring (OFFERs and NAKs skipped, see [`crate::ship`]); the peer acknowledges each frame
//!   once ([`Message::Ack`]: the last record's sequence); up to [`WINDOW`] frames per ring and
//!   peer are in flight.
//!
//! # Hold and "replicated"
//!
//! With `replication: "sync"` and at least one peer in sync, every shipped ring's hold word is
//! set ([`Ring::set_hold`]); `replicated` ([`Ring::publish_replicated`]) is the lowest
//! acknowledged position over the in-sync peers, followed by a wake of that ring's worker
//! ([`Replicator::set_doorbells`]; the worker would otherwise see it on its next loop turn). When
//! the last in-sync peer goes down the hold is cleared on every ring *first* (the workers then
//! release what they hold), then the transition is logged. `"async"` never holds.
//!
//! The rings are read here directly rather than through [`crate::ship::Shipper`], which keeps
//! one sent/acknowledged pair per ring (one standby): each peer needs its own.
//!
//! syncd's consumer cursor ([`crate::SYNCD_CONSUMER`]) follows the lowest acknowledged position
//! over the up peers; a peer down for longer than the ring holds gets a bulk sync when it
//! returns instead of holding the ring (the producer evicts the cursor; syncd registers again).

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use shm_layout::{ChangeRecord, ConsumerState, Ring, Table};

use crate::apply::{bulk_entry_from_bytes, bulk_entry_to_bytes, Applier, BulkReader};
use crate::doorbell::Doorbells;
use crate::message::{Message, Position, BULK_ACK_RING, BULK_ENTRY_BYTES, RECORD_BYTES};
use crate::node::{Event, Node};
use crate::SYNCD_CONSUMER;

/// Records per [`Message::Records`] frame (each 256 bytes; a frame holds at most 32 KiB).
pub const RECORDS_PER_FRAME: usize = 120;
/// Images per [`Message::Bulk`] chunk (72 bytes each).
pub const BULK_ENTRIES: usize = 448;
/// Most slots one bulk chunk walks (a chunk of a mostly empty table ends here).
pub const BULK_SLOTS_PER_CHUNK: u32 = 1 << 16;
/// Frames in flight to one peer over all its rings and the bulk walk: 256 × 32 KiB = 8 MiB,
/// under the link's 16 MiB limit of unread bytes (many workers × [`WINDOW`] would exceed it).
pub const PEER_WINDOW: usize = 256;
/// How long after the bulk walk slots that were locked during it are waited for (a killed
/// writer's slot stays locked until the supervisor recovers it).
pub const BUSY_GIVE_UP: Duration = Duration::from_secs(5);
/// Frames in flight per ring and peer (records), and chunks in flight per peer (bulk).
pub const WINDOW: usize = 16;

/// A peer's replication state, as `prodhcpctl ha status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerSync {
    /// No up link.
    Down,
    /// Up, shipping what the peer misses since its position (not yet acknowledged).
    CatchingUp,
    /// Up, receiving a bulk sync.
    BulkSync {
        /// Slots walked, percent.
        percent: u8,
    },
    /// Up, and everything up to the head seen after its catch-up is acknowledged.
    InSync,
}

impl PeerSync {
    /// The state's name (`down`, `connecting`, `bulk-sync`, `in-sync`).
    pub fn name(self) -> &'static str {
        match self {
            PeerSync::Down => "down",
            PeerSync::CatchingUp => "connecting",
            PeerSync::BulkSync { .. } => "bulk-sync",
            PeerSync::InSync => "in-sync",
        }
    }
}

/// Per-peer replication figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerReplication {
    /// The state.
    pub state: PeerSync,
    /// Records published on this node's rings and not acknowledged by the peer (max over the
    /// rings); 0 while down.
    pub lag_records: u64,
    /// Age of the oldest record not acknowledged (ms; by the record's time stamp).
    pub lag_ms: u64,
    /// Records sent to the peer.
    pub records_sent: u64,
    /// Records and bulk images from the peer written to the table.
    pub applied: u64,
    /// Records and bulk images from the peer that were stale (the table had that version).
    pub stale: u64,
    /// Records and images from the peer refused (slot out of range, undecodable).
    pub rejected: u64,
    /// Bulk syncs this node completed to the peer.
    pub bulk_syncs_sent: u64,
    /// Bulk syncs this node received from the peer.
    pub bulk_syncs_received: u64,
}

/// One frame of records in flight.
#[derive(Debug, Clone, Copy)]
struct Inflight {
    /// Sequence of its last record (what the peer acknowledges).
    last_record: u64,
    /// Last sequence it covers (OFFERs skipped after the last record included).
    last_covered: u64,
}

/// One ring's shipping state towards one peer.
#[derive(Debug, Clone, Default)]
struct RingTrack {
    sent: u64,
    acked: u64,
    inflight: VecDeque<Inflight>,
}

/// A bulk walk towards one peer.
struct BulkOut<'t> {
    walk: BulkReader<'t>,
    /// Ring heads noted before the walk (sent in `BulkDone`).
    heads: Vec<Position>,
    chunks_in_flight: usize,
    acked_slot: u32,
    done_sent: bool,
    started: Instant,
    /// When the walk reached the end of the table.
    walked: Option<Instant>,
    images: u64,
    logged_tenth: u32,
}

/// What arrived from a peer and is not applied yet (a busy slot stopped it).
#[derive(Debug)]
enum Incoming {
    Records {
        ring: u8,
        records: Vec<ChangeRecord>,
        /// Sequence to acknowledge when applied (the frame's last record).
        ack: u64,
    },
    Bulk {
        images: Vec<(u32, shm_layout::SlotImage)>,
        next_slot: u32,
        slot_count: u32,
    },
    BulkDone(Vec<Position>),
}

struct Peer<'t> {
    name: String,
    up: bool,
    in_sync: bool,
    /// Heads to reach for in sync (set after a resume, or when the bulk walk is acknowledged).
    target: Option<Vec<u64>>,
    rings: Vec<RingTrack>,
    bulk: Option<BulkOut<'t>>,
    inbox: VecDeque<Incoming>,
    /// Last applied sequence per ring of this peer (its hello positions).
    positions: BTreeMap<u8, u64>,
    /// A bulk sync from this peer is under way (positions are kept in `shadow` until done).
    receiving_bulk: bool,
    shadow: BTreeMap<u8, u64>,
    stats: PeerReplication,
}

/// Ships and applies for every peer. See the module docs.
pub struct Replicator<'a> {
    table: &'a Table,
    rings: Vec<&'a Ring>,
    applier: Applier<'a>,
    peers: Vec<Peer<'a>>,
    sync: bool,
    hold: bool,
    doorbells: Option<&'a Doorbells>,
}

impl<'a> Replicator<'a> {
    /// Replication of `table` to `peers` (names), shipping `rings` (the producer rings: workers,
    /// supervisor, importer — never syncd's own) and applying through `applier` (syncd's
    /// writer). `sync`: `replication: "sync"` (hold replies while a peer is in sync).
    pub fn new(
        table: &'a Table,
        rings: Vec<&'a Ring>,
        applier: Applier<'a>,
        peers: &[String],
        sync: bool,
    ) -> Replicator<'a> {
        for r in &rings {
            r.register_consumer(SYNCD_CONSUMER);
            // A hold left by a previous syncd that died: nobody is in sync now.
            r.set_hold(false);
        }
        Replicator {
            table,
            peers: peers
                .iter()
                .map(|name| Peer {
                    name: name.clone(),
                    up: false,
                    in_sync: false,
                    target: None,
                    rings: vec![RingTrack::default(); rings.len()],
                    bulk: None,
                    inbox: VecDeque::new(),
                    positions: BTreeMap::new(),
                    receiving_bulk: false,
                    shadow: BTreeMap::new(),
                    stats: PeerReplication {
                        state: PeerSync::Down,
                        lag_records: 0,
                        lag_ms: 0,
                        records_sent: 0,
                        applied: 0,
                        stale: 0,
                        rejected: 0,
                        bulk_syncs_sent: 0,
                        bulk_syncs_received: 0,
                    },
                })
                .collect(),
            rings,
            applier,
            sync,
            doorbells: None,
            hold: false,
        }
    }

    /// The workers' replication doorbells: after a ring's `replicated` moves, its worker is
    /// woken, and after the hold clears every worker is, so held replies leave at once rather
    /// than on the worker's next loop turn.
    pub fn set_doorbells(&mut self, doorbells: &'a Doorbells) {
        self.doorbells = Some(doorbells);
    }

    /// The positions this node's hello to `peer` carries: what it applied from each of the
    /// peer's rings (empty while a bulk sync from it is unfinished).
    pub fn hello_positions(&self, peer: &str) -> Vec<Position> {
        self.peers
            .iter()
            .find(|p| p.name == peer)
            .map(|p| {
                p.positions
                    .iter()
                    .map(|(&ring, &seq)| Position { ring, seq })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Sets every peer's hello positions on `node` (call after each turn's events).
    pub fn update_hello_positions(&self, node: &mut Node) {
        for p in &self.peers {
            node.set_peer_positions(&p.name, self.hello_positions(&p.name));
        }
    }

    /// Whether any peer's link is up (records may need shipping at any moment).
    pub fn any_up(&self) -> bool {
        self.peers.iter().any(|p| p.up)
    }

    /// Whether the hold is set on the rings.
    pub fn holding(&self) -> bool {
        self.hold
    }

    /// Whether `peer` is in sync.
    pub fn in_sync(&self, peer: &str) -> bool {
        self.peers.iter().any(|p| p.name == peer && p.in_sync)
    }

    /// Whether `peer` is up, not receiving a bulk sync, and has acknowledged every record of
    /// every ring up to its current head (a switchover's condition for `Handover`).
    pub fn acked_all(&self, peer: &str) -> bool {
        self.peers.iter().any(|p| {
            p.name == peer
                && p.up
                && p.bulk.is_none()
                && self
                    .rings
                    .iter()
                    .zip(&p.rings)
                    .all(|(r, t)| t.acked >= r.head())
        })
    }

    /// The head of every shipped ring (what a `Handover` carries).
    pub fn heads(&self) -> Vec<Position> {
        self.rings
            .iter()
            .map(|r| Position {
                ring: r.owner(),
                seq: r.head(),
            })
            .collect()
    }

    /// Whether everything received from `peer` is applied (nothing waits in its inbox, no bulk
    /// sync from it is unfinished). A `Handover` is sent only after this node acknowledged
    /// every record up to the sender's heads, and an acknowledgement leaves only after its
    /// records were applied, so on a `Handover` this is the last check.
    pub fn applied_everything_from(&self, peer: &str) -> bool {
        self.peers
            .iter()
            .any(|p| p.name == peer && !p.receiving_bulk && p.inbox.is_empty())
    }

    /// The figures of `peer`.
    pub fn status(&self, peer: &str) -> Option<PeerReplication> {
        let p = self.peers.iter().find(|p| p.name == peer)?;
        let mut s = p.stats;
        s.state = if !p.up {
            PeerSync::Down
        } else if p.in_sync {
            PeerSync::InSync
        } else if let Some(b) = &p.bulk {
            let (done, total) = b.walk.progress();
            PeerSync::BulkSync {
                percent: percent(done.min(b.acked_slot), total),
            }
        } else {
            PeerSync::CatchingUp
        };
        if p.up {
            let now_ms = unix_ms();
            for (r, t) in self.rings.iter().zip(&p.rings) {
                let head = r.head();
                s.lag_records = s.lag_records.max(head.saturating_sub(t.acked));
                if head > t.acked {
                    if let Some(rec) = r.read(t.acked + 1) {
                        s.lag_ms = s.lag_ms.max(now_ms.saturating_sub(rec.time_ms));
                    }
                }
            }
        }
        Some(s)
    }

    /// Handles one node event (link up or down, a replication message).
    pub fn on_event(&mut self, node: &mut Node, event: &Event) {
        match event {
            Event::PeerUp { peer, hello, .. } => self.peer_up(peer, &hello.positions),
            Event::LinkDown {
                peer: Some(peer), ..
            } if node.peer_state(peer) == crate::PeerState::Down => {
                self.peer_down(peer, "link down");
            }
            Event::Received { peer, message } => self.received(node, peer, message),
            _ => {}
        }
    }

    fn peer_up(&mut self, name: &str, positions: &[Position]) {
        let Some(i) = self.peers.iter().position(|p| p.name == name) else {
            return;
        };
        // A new connection replacing an old one: start over (the peer's hello says where).
        self.peer_down(name, "its connection was replaced");
        let rings = &self.rings;
        let peer = &mut self.peers[i];
        peer.up = true;
        peer.inbox.clear();
        let pos = |ring: u8| {
            positions
                .iter()
                .find(|p| p.ring == ring)
                .map_or(0, |p| p.seq)
        };
        let resumable = rings.iter().all(|r| {
            let p = pos(r.owner());
            let head = r.head();
            p == head || (p > 0 && p < head && r.read(p + 1).is_some())
        });
        if resumable {
            for (t, r) in peer.rings.iter_mut().zip(rings) {
                let p = pos(r.owner());
                *t = RingTrack {
                    sent: p,
                    acked: p,
                    inflight: VecDeque::new(),
                };
            }
            peer.target = Some(rings.iter().map(|r| r.head()).collect());
            tracing::info!(
                "syncd: peer `{name}`: resuming from its positions ({})",
                fmt_positions(positions)
            );
        } else {
            let heads: Vec<Position> = rings
                .iter()
                .map(|r| Position {
                    ring: r.owner(),
                    seq: r.head(),
                })
                .collect();
            for (t, h) in peer.rings.iter_mut().zip(&heads) {
                *t = RingTrack {
                    sent: h.seq,
                    acked: h.seq,
                    inflight: VecDeque::new(),
                };
            }
            tracing::info!(
                "syncd: peer `{name}`: bulk sync of {} slots starting (its positions: {}; heads: {})",
                self.table.slot_count(),
                fmt_positions(positions),
                fmt_positions(&heads)
            );
            peer.target = None;
            peer.bulk = Some(BulkOut {
                walk: BulkReader::new(self.table),
                heads,
                chunks_in_flight: 0,
                acked_slot: 0,
                done_sent: false,
                started: Instant::now(),
                walked: None,
                images: 0,
                logged_tenth: 0,
            });
        }
    }

    fn peer_down(&mut self, name: &str, cause: &str) {
        let Some(peer) = self.peers.iter_mut().find(|p| p.name == name) else {
            return;
        };
        if !peer.up {
            return;
        }
        let was_in_sync = peer.in_sync;
        peer.up = false;
        peer.in_sync = false;
        peer.target = None;
        peer.inbox.clear();
        if let Some(b) = peer.bulk.take() {
            let (done, total) = b.walk.progress();
            tracing::warn!(
                "syncd: peer `{name}`: bulk sync abandoned at {}% ({cause})",
                percent(done, total)
            );
        }
        for t in &mut peer.rings {
            t.inflight.clear();
        }
        if was_in_sync {
            let still = self.peers.iter().any(|p| p.in_sync);
            if !still && self.hold {
                // Release first: the workers must not wait for acknowledgements that cannot come.
                self.set_hold(false);
            }
            tracing::warn!(
                "syncd: peer `{name}` left sync ({cause}){}",
                if still {
                    ""
                } else {
                    ": no peer in sync, replies no longer held"
                }
            );
        }
    }

    fn received(&mut self, node: &mut Node, name: &str, message: &Message) {
        let Some(i) = self.peers.iter().position(|p| p.name == name) else {
            return;
        };
        match message {
            Message::Records { ring, data, .. } => {
                let mut records = Vec::with_capacity(data.len() / RECORD_BYTES);
                for chunk in data.chunks_exact(RECORD_BYTES) {
                    match ChangeRecord::from_bytes(chunk) {
                        Ok(r) => records.push(r),
                        Err(_) => self.peers[i].stats.rejected += 1,
                    }
                }
                let Some(ack) = records.iter().map(|r| r.seq).max() else {
                    return;
                };
                self.peers[i].inbox.push_back(Incoming::Records {
                    ring: *ring,
                    records,
                    ack,
                });
            }
            Message::Bulk {
                next_slot,
                slot_count,
                data,
            } => {
                let mut images = Vec::with_capacity(data.len() / BULK_ENTRY_BYTES);
                for e in data.chunks_exact(BULK_ENTRY_BYTES) {
                    match bulk_entry_from_bytes(e) {
                        Ok(x) => images.push(x),
                        Err(_) => self.peers[i].stats.rejected += 1,
                    }
                }
                self.peers[i].inbox.push_back(Incoming::Bulk {
                    images,
                    next_slot: *next_slot,
                    slot_count: *slot_count,
                });
            }
            Message::BulkDone { positions } => {
                self.peers[i]
                    .inbox
                    .push_back(Incoming::BulkDone(positions.clone()));
            }
            Message::Ack { ring, seq } => self.acked(i, *ring, *seq),
            _ => {}
        }
        // Apply at once (the acknowledgement goes out in the same turn).
        self.apply_inbox(node, i);
    }

    fn acked(&mut self, i: usize, ring: u8, seq: u64) {
        let peer = &mut self.peers[i];
        if ring == BULK_ACK_RING {
            if let Some(b) = &mut peer.bulk {
                b.chunks_in_flight = b.chunks_in_flight.saturating_sub(1);
                b.acked_slot = b.acked_slot.max(seq.min(u64::from(u32::MAX)) as u32);
            }
            return;
        }
        let Some(k) = self.rings.iter().position(|r| r.owner() == ring) else {
            return;
        };
        let t = &mut peer.rings[k];
        while let Some(f) = t.inflight.front() {
            if f.last_record > seq {
                break;
            }
            t.acked = t.acked.max(f.last_covered);
            t.inflight.pop_front();
        }
    }

    fn apply_inbox(&mut self, node: &mut Node, i: usize) {
        let peer = &mut self.peers[i];
        while let Some(item) = peer.inbox.front_mut() {
            match item {
                Incoming::Records { ring, records, ack } => {
                    let done = self.applier.apply_records(*ring, records);
                    peer.stats.applied += done.applied;
                    peer.stats.stale += done.stale;
                    peer.stats.rejected += done.rejected;
                    if let Some(at) = done.stopped_at {
                        records.drain(..at);
                        return; // a busy slot: again next turn
                    }
                    let positions = if peer.receiving_bulk {
                        &mut peer.shadow
                    } else {
                        &mut peer.positions
                    };
                    let pos = positions.entry(*ring).or_insert(0);
                    *pos = (*pos).max(*ack);
                    let _ = node.send(
                        &peer.name,
                        &Message::Ack {
                            ring: *ring,
                            seq: *ack,
                        },
                    );
                }
                Incoming::Bulk {
                    images,
                    next_slot,
                    slot_count,
                } => {
                    if !peer.receiving_bulk {
                        peer.receiving_bulk = true;
                        peer.shadow.clear();
                        peer.positions.clear();
                        tracing::info!(
                            "syncd: receiving a bulk sync of {slot_count} slots from `{}`",
                            peer.name
                        );
                    }
                    let done = self.applier.apply_images(images);
                    peer.stats.applied += done.applied;
                    peer.stats.stale += done.stale;
                    peer.stats.rejected += done.rejected;
                    if let Some(at) = done.stopped_at {
                        images.drain(..at);
                        return;
                    }
                    let _ = node.send(
                        &peer.name,
                        &Message::Ack {
                            ring: BULK_ACK_RING,
                            seq: u64::from(*next_slot),
                        },
                    );
                }
                Incoming::BulkDone(heads) => {
                    let mut positions = std::mem::take(&mut peer.shadow);
                    for h in heads.iter() {
                        let p = positions.entry(h.ring).or_insert(0);
                        *p = (*p).max(h.seq);
                    }
                    peer.positions = positions;
                    peer.receiving_bulk = false;
                    peer.stats.bulk_syncs_received += 1;
                    tracing::info!(
                        "syncd: bulk sync from `{}` received ({} positions)",
                        peer.name,
                        heads.len()
                    );
                }
            }
            peer.inbox.pop_front();
        }
    }

    /// One round of work: applies what waits, sends what the windows allow to every up peer,
    /// moves peers into sync, publishes `replicated` and sets the hold.
    pub fn pump(&mut self, node: &mut Node) {
        for i in 0..self.peers.len() {
            if !self.peers[i].inbox.is_empty() {
                self.apply_inbox(node, i);
            }
            if self.peers[i].up {
                self.send_bulk(node, i);
                self.send_records(node, i);
                self.check_in_sync(i);
            }
        }
        self.publish();
    }

    fn send_bulk(&mut self, node: &mut Node, i: usize) {
        let peer = &mut self.peers[i];
        let Some(b) = &mut peer.bulk else {
            return;
        };
        let total = self.table.slot_count();
        while b.chunks_in_flight < WINDOW && b.walk.progress().0 < total {
            let start = b.walk.progress().0;
            let mut data = Vec::with_capacity(BULK_ENTRIES * BULK_ENTRY_BYTES);
            let mut n = 0;
            while n < BULK_ENTRIES
                && b.walk.progress().0 < total
                && b.walk.progress().0 - start < BULK_SLOTS_PER_CHUNK
            {
                let chunk = b.walk.next_chunk((BULK_ENTRIES - n) as u32);
                for (slot, img) in &chunk.images {
                    data.extend_from_slice(&bulk_entry_to_bytes(*slot, img));
                }
                n += chunk.images.len();
            }
            let next_slot = b.walk.progress().0;
            let msg = Message::Bulk {
                next_slot,
                slot_count: total,
                data,
            };
            if node.send(&peer.name, &msg).is_err() {
                return;
            }
            b.images += n as u64;
            b.chunks_in_flight += 1;
        }
        let tenth = u32::from(percent(b.acked_slot, total)) / 10;
        if tenth > b.logged_tenth && tenth < 10 {
            b.logged_tenth = tenth;
            tracing::info!(
                "syncd: peer `{}`: bulk sync {}% ({} of {total} slots, {:.1} s)",
                peer.name,
                tenth * 10,
                b.acked_slot,
                b.started.elapsed().as_secs_f64()
            );
        }
        if b.walk.progress().0 >= total && !b.done_sent {
            // Slots that were busy during the walk are read again, until none is (a writer
            // holds a slot for microseconds; a killed one until the supervisor recovers it).
            if b.chunks_in_flight >= WINDOW {
                return;
            }
            let (images, left) = b.walk.retry_busy();
            for part in images.chunks(BULK_ENTRIES) {
                let mut data = Vec::with_capacity(part.len() * BULK_ENTRY_BYTES);
                for (slot, img) in part {
                    data.extend_from_slice(&bulk_entry_to_bytes(*slot, img));
                }
                let msg = Message::Bulk {
                    next_slot: total,
                    slot_count: total,
                    data,
                };
                if node.send(&peer.name, &msg).is_err() {
                    return;
                }
                b.images += part.len() as u64;
                b.chunks_in_flight += 1;
            }
            let walked = *b.walked.get_or_insert_with(Instant::now);
            if left > 0 {
                if walked.elapsed() < BUSY_GIVE_UP {
                    return;
                }
                tracing::warn!(
                    "syncd: peer `{}`: {left} slots stayed locked for {BUSY_GIVE_UP:?} after the bulk walk: left out",
                    peer.name
                );
            }
            let msg = Message::BulkDone {
                positions: b.heads.clone(),
            };
            if node.send(&peer.name, &msg).is_err() {
                return;
            }
            b.done_sent = true;
        }
        if b.done_sent && b.acked_slot >= total {
            let b = peer.bulk.take().expect("bulk is some");
            let took = b.started.elapsed();
            peer.stats.bulk_syncs_sent += 1;
            peer.target = Some(self.rings.iter().map(|r| r.head()).collect());
            let (busy, corrupt) = b.walk.skipped();
            tracing::info!(
                "syncd: peer `{}`: bulk sync done: {total} slots, {} images in {:.3} s ({:.0} images/s; {busy} slots busy during the walk, read again after it; {corrupt} failing their checksum, skipped)",
                peer.name,
                b.images,
                took.as_secs_f64(),
                b.images as f64 / took.as_secs_f64().max(1e-9)
            );
        }
    }

    fn send_records(&mut self, node: &mut Node, i: usize) {
        let peer = &mut self.peers[i];
        if peer
            .bulk
            .as_ref()
            .is_some_and(|b| b.chunks_in_flight == 0 && b.walk.progress().0 == 0)
        {
            // The first bulk chunk goes first: the peer clears its positions for this node
            // when it arrives, so no record can make it report a position over a table it
            // has not received yet.
            return;
        }
        let mut lost_at = None;
        let mut in_flight: usize = peer.rings.iter().map(|t| t.inflight.len()).sum::<usize>()
            + peer.bulk.as_ref().map_or(0, |b| b.chunks_in_flight);
        'rings: for (k, ring) in self.rings.iter().enumerate() {
            let t = &mut peer.rings[k];
            while t.inflight.len() < WINDOW && in_flight < PEER_WINDOW {
                let head = ring.head();
                if t.sent >= head {
                    break;
                }
                let first = t.sent + 1;
                let mut data = Vec::with_capacity(RECORDS_PER_FRAME * RECORD_BYTES);
                let mut seq = first;
                let mut last_record = 0;
                let mut lost = false;
                while seq <= head && data.len() < RECORDS_PER_FRAME * RECORD_BYTES {
                    let Some(rec) = ring.read(seq) else {
                        lost = true;
                        break;
                    };
                    if crate::ship::ships(rec.reason) {
                        data.extend_from_slice(&rec.to_bytes());
                        last_record = seq;
                    }
                    seq += 1;
                }
                if lost {
                    lost_at = Some((ring.owner(), seq));
                    break 'rings;
                }
                let covered = seq - 1;
                if data.is_empty() {
                    // Only OFFERs (or NAKs): nothing to send. Covered at once if nothing is in flight,
                    // else with the last frame in flight.
                    match t.inflight.back_mut() {
                        Some(f) => f.last_covered = covered,
                        None => t.acked = covered,
                    }
                    t.sent = covered;
                    continue;
                }
                let n = (data.len() / RECORD_BYTES) as u64;
                let msg = Message::Records {
                    ring: ring.owner(),
                    first_seq: first,
                    data,
                };
                if node.send(&peer.name, &msg).is_err() {
                    return;
                }
                peer.stats.records_sent += n;
                t.sent = covered;
                t.inflight.push_back(Inflight {
                    last_record,
                    last_covered: covered,
                });
                in_flight += 1;
            }
        }
        if let Some((ring, seq)) = lost_at {
            // The ring lapped what this peer still needs: start over with a bulk sync, as for
            // a new link whose peer has no positions.
            let name = peer.name.clone();
            self.peer_down(&name, "a record it needs left the ring");
            tracing::warn!(
                "syncd: peer `{name}`: ring {ring} record {seq} was overwritten before it was sent: bulk sync"
            );
            self.peer_up(&name, &[]);
        }
    }

    fn check_in_sync(&mut self, i: usize) {
        let peer = &mut self.peers[i];
        if peer.in_sync || peer.bulk.is_some() {
            return;
        }
        let Some(target) = &peer.target else {
            return;
        };
        if peer.rings.iter().zip(target).all(|(t, &h)| t.acked >= h) {
            peer.in_sync = true;
            tracing::info!("syncd: peer `{}` in sync", peer.name);
        }
    }

    fn set_hold(&mut self, hold: bool) {
        for r in &self.rings {
            r.set_hold(hold);
        }
        self.hold = hold;
        // The hold is published first; a worker woken now releases everything it held.
        if !hold {
            if let Some(d) = self.doorbells {
                d.wake_all();
            }
        }
    }

    fn publish(&mut self) {
        let any_in_sync = self.peers.iter().any(|p| p.in_sync);
        for (k, ring) in self.rings.iter().enumerate() {
            // Replicated: the lowest acknowledged position over the in-sync peers.
            if any_in_sync {
                let min = self
                    .peers
                    .iter()
                    .filter(|p| p.in_sync)
                    .map(|p| p.rings[k].acked)
                    .min()
                    .unwrap_or(0);
                if min > ring.replicated() {
                    ring.publish_replicated(min);
                    // Published first: the woken worker reads the new position.
                    if let Some(d) = self.doorbells {
                        d.wake(ring.owner());
                    }
                }
            }
            // The consumer cursor: the lowest acknowledged position over the up peers.
            let cursor = self
                .peers
                .iter()
                .filter(|p| p.up && p.bulk.is_none())
                .map(|p| p.rings[k].acked)
                .min();
            if let Some(c) = cursor {
                let info = ring
                    .consumers()
                    .into_iter()
                    .find(|c| c.id == SYNCD_CONSUMER);
                match info.map(|c| (c.state, c.cursor)) {
                    Some((ConsumerState::Registered, cur)) if c > cur => {
                        let _ = ring.advance_consumer(SYNCD_CONSUMER, c);
                    }
                    Some((ConsumerState::Registered, _)) => {}
                    _ => {
                        // Evicted (a peer lagged a whole ring) or dropped: register again at
                        // the head; peers that need older records get a bulk sync.
                        ring.unregister_consumer(SYNCD_CONSUMER);
                        ring.register_consumer(SYNCD_CONSUMER);
                    }
                }
            }
        }
        let want = self.sync && any_in_sync;
        if want != self.hold {
            self.set_hold(want);
            if want {
                tracing::info!("syncd: a peer is in sync: replies held until it acknowledges");
            }
        }
    }
}

fn percent(done: u32, total: u32) -> u8 {
    if total == 0 {
        return 100;
    }
    (u64::from(done) * 100 / u64::from(total)).min(100) as u8
}

fn fmt_positions(p: &[Position]) -> String {
    if p.is_empty() {
        return "none".into();
    }
    p.iter()
        .map(|p| format!("{}:{}", p.ring, p.seq))
        .collect::<Vec<_>>()
        .join(" ")
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// How long [`drive`] may wait for socket events in one turn.
pub const PUMP_EVERY: Duration = Duration::from_millis(5);

/// One turn of a node and its replicator: socket events, replication messages, the windows.
/// Returns the node's events (link transitions included) for the caller's own bookkeeping.
pub fn drive(
    node: &mut Node,
    replicator: &mut Replicator<'_>,
    max_wait: Duration,
) -> std::io::Result<Vec<Event>> {
    node.turn(max_wait)?;
    let mut events = Vec::new();
    while let Some(event) = node.next_event() {
        replicator.on_event(node, &event);
        events.push(event);
    }
    replicator.pump(node);
    replicator.update_hello_positions(node);
    Ok(events)
}

//! Per-producer change rings: every committed slot change is appended here, in its own file.
//!
//! Each writer (a worker, the supervisor, an importer) owns one ring file and is its only producer.
//! Consumers (the replication daemon, the auditor) each own a cursor in the ring's header. Records
//! are fixed-size (256 bytes) and carry the full new slot image, so applying one is idempotent and
//! ordered per slot by the image's version.
//!
//! File layout (64-bit words): a 64-word header, then `capacity` records of [`RECORD_WORDS`] words.
//!
//! | header word | meaning |
//! |---|---|
//! | 0 | magic |
//! | 1 | ring layout version |
//! | 2 | capacity (records, a power of two) |
//! | 3 | owner id |
//! | 4 | head: sequence number of the last published record (records are numbered from 1) |
//! | 5 | evictions: how many consumers the producer has evicted from this ring (ever) |
//! | 6 | replicated: highest sequence of this ring every in-sync standby has applied (syncd publishes it, [`Ring::publish_replicated`]) |
//! | 7 | hold: non-zero = the producer holds replies until `replicated` covers their records (syncd sets it, [`Ring::set_hold`]) |
//! | 8..8+[`MAX_CONSUMERS`] | consumer cursors: bit 63 = registered, bit 62 = evicted, low bits = last sequence consumed |
//! | 16 | gate: whether the producer (a worker) serves, [`Gate`] (syncd sets it with the node's role, [`Ring::set_gate`]) |
//! | 17 | the share of a [`Gate::Share`]: index, count, since (written before word 16) |
//! | 18 | syncd's ring only: unix seconds of the last message from a peer ([`Ring::peer_contact`]) |
//! | 19 | syncd's ring only: the node's last role, as syncd's role code ([`Ring::last_role`]) |
//! | 20 | audit block: non-zero = the audit trail cannot take more records (`audit_strict` with a full spool): the producer (a worker) answers nobody and sweeps nothing, as with [`Gate::Closed`], until it clears ([`Ring::set_audit_block`]) |
//! | 21..63 | unused (zero) |
//!
//! A record is published by writing all its words and then storing its sequence number into `head`
//! with release ordering. With no registered consumer the ring keeps the most recent `capacity`
//! records as history.
//!
//! # Lagging consumers: eviction, never a halt
//!
//! A consumer (syncd, an auditor) that stops reading must not stop DHCP. The policy:
//!
//! - **Bound**: a registered consumer may lag its producer by at most the whole ring
//!   (`capacity` records). That is the most a ring can hold; nothing smaller is needed, because
//!   up to that point lagging costs nothing.
//! - **Who evicts**: the producer itself, in [`Ring::append`], at the moment its next record
//!   would overwrite one the consumer has not read. It compares-and-swaps the consumer's cursor
//!   word from "registered at C" to "evicted at C" (bit 62) and counts the eviction in header
//!   word 5 ([`Ring::evictions`]); then it appends as if the consumer were not there. So a write
//!   never fails for a consumer's sake, and no other process has to be alive for DHCP to go on.
//! - **Loud**: the producer (a worker on the hot path) does not log; the supervisor watches the
//!   eviction counters of every ring it knows and logs one error line per eviction (ring,
//!   consumer id, cursor) within half a second, and `prodhcpctl consumers` lists every consumer
//!   with its state, cursor and lag, and the eviction counter.
//! - **The evicted consumer** finds out on its next [`Ring::advance_consumer`] (it fails with
//!   [`ConsumerEvicted`], and the cursor word is never silently re-registered by an advance). It
//!   has lost records, so it must resynchronise from the table (e.g. a full export or a bulk sync)
//!   and then [`Ring::register_consumer`] again, which starts it at the current head.
//! - **Operators** can drop any consumer by hand (`prodhcpctl consumers drop RING:ID`, which calls
//!   [`Ring::unregister_consumer`]); a registration otherwise survives restarts.
//!
//! # Synchronous commit: `replicated` and `hold`
//!
//! With `replication: "sync"` a worker holds the reply to a change until every in-sync standby
//! has applied the change's record. syncd, the consumer that ships the records, publishes the
//! highest sequence every in-sync standby acknowledged in header word 6 (release ordering,
//! never moving backwards: [`Ring::publish_replicated`]); the worker reads it with acquire
//! ordering ([`Ring::replicated`]) and sends the held replies whose records it covers. Header
//! word 7 ([`Ring::hold_replies`]) tells the worker whether to hold at all: syncd sets it while at
//! least one standby is in sync and replication is `"sync"`, and clears it when it goes
//! active-alone (then nobody would ever acknowledge) or replication is `"async"`.
//!
//! Both words were unused (zero) in ring files made before they existed, and zero means "no
//! hold, nothing replicated": such a ring behaves exactly as before, so the words need no ring
//! layout version bump (as the table's index key words needed none).
//!
//! # The gate: whether the producer serves
//!
//! In a cluster only the active appliance answers clients. Header word 16 ([`Ring::gate`]) is
//! the worker's side of the node's role: [`Gate::Open`] (zero: no cluster, or active — serve
//! everything, as ring files made before the word existed do), [`Gate::Closed`] (standby,
//! syncing, handing over, or syncd not running: answer nobody, sweep nothing) and
//! [`Gate::Share`] (active alone while the peer is unreachable and not confirmed down: allocate
//! new addresses only from this node's share, word 17). syncd sets it on every worker ring; the
//! supervisor closes it before the workers start and whenever syncd exits.
//!
//! # NAK records: a record that changes nothing
//!
//! A DHCPNAK changes no slot, yet the audit trail must show it (issue 9). The worker appends a
//! [`ChangeReason::Nak`] record when it sends one (only then: never on the allocation path):
//!
//! - `slot`: the slot of the address the client asked for if the table holds it, else
//!   [`NO_SLOT`] (`u32::MAX`, never a slot index: a table has fewer slots);
//! - `image`: that slot's image as read, unchanged (often another client's binding), or the
//!   empty image [`SlotImage::PRISTINE`] with [`NO_SLOT`] (also when the slot could not be read);
//! - `context`: the usual relay context plus, always, the client's hardware address and the
//!   requested address ([`crate::ring_context`] tags 7 and 8), so a reader never takes the
//!   client from the image.
//!
//! Consumers: [`ChangeReason::changes_slot`] is false for it. Replication neither ships nor
//! applies it (it carries no change; syncd's applier skips one it is given all the same); a
//! durable sync ([`crate::durable`]) syncs its record and ignores [`NO_SLOT`] (out of range);
//! recovery never meets one at an intent's planned sequence (no intent is open while a worker
//! appends it); the scrub and the supervisor do not read records. The audit trail turns it
//! into a `nak` event with the address and the client from the context.
//!
//! A NAK flood (a client sending bad REQUESTs over and over) writes one record per NAK. That is
//! bounded as every record is: the ring keeps `capacity` records, and a consumer that falls a
//! whole ring behind is evicted (above), never a halt of the producer. A NAK's reply is sent at
//! once: it confirms no lease, so it is never held for replication (it waits only behind an
//! earlier held reply to the same client, to keep that client's replies in order).
//!
//! # Records on the wire
//!
//! The 256-byte record is also the replication wire unit: [`ChangeRecord::to_bytes`] gives the
//! exact words [`Ring::append`] stores (little-endian), and [`ChangeRecord::from_bytes`] checks
//! and decodes them as [`Ring::read`] does.
//!
//! API Boundary: the ring file layout is versioned by [`RING_LAYOUT_VERSION`].

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::mapping::{preallocate, write_zeros, WordMapping};
use crate::slot::{SlotDecodeError, SlotImage, SLOT_WORDS};

const RING_MAGIC: u64 = u64::from_le_bytes(*b"PDHCPRNG");
/// Version of the ring file layout.
pub const RING_LAYOUT_VERSION: u64 = 1;
pub(crate) const HEADER_WORDS: usize = 64;
const W_MAGIC: usize = 0;
const W_VERSION: usize = 1;
const W_CAPACITY: usize = 2;
const W_OWNER: usize = 3;
const W_HEAD: usize = 4;
const W_EVICTIONS: usize = 5;
const W_REPLICATED: usize = 6;
const W_HOLD: usize = 7;
const W_CURSORS: usize = 8;
const W_GATE: usize = 16;
const W_SHARE: usize = 17;
const W_PEER_CONTACT: usize = 18;
const W_LAST_ROLE: usize = 19;
const W_AUDIT_BLOCK: usize = 20;
/// Most consumers a ring can have.
pub const MAX_CONSUMERS: usize = 8;
/// The consumer slot syncd reads every ring with.
pub const SYNCD_CONSUMER: usize = 0;
/// The consumer slot the audit process reads every ring with.
pub const AUDIT_CONSUMER: usize = 1;
const REGISTERED: u64 = 1 << 63;
const EVICTED: u64 = 1 << 62;
const CURSOR_MASK: u64 = EVICTED - 1;

/// Words per record (256 bytes).
pub const RECORD_WORDS: usize = 32;
const CONTEXT_WORDS: usize = RECORD_WORDS - 4 - SLOT_WORDS;
/// Bytes of free-form context (e.g. relay agent circuit-id/remote-id) a record can carry.
pub const CONTEXT_BYTES: usize = CONTEXT_WORDS * 8 - 1;

/// Why a slot changed: the vocabulary of lease-table transitions shared by producers and consumers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ChangeReason {
    /// An address was offered to a client.
    Offer = 1,
    /// A lease was committed (ACK to a new binding).
    Commit = 2,
    /// A lease was extended (ACK to a renewal/rebind/init-reboot of the same binding).
    Renew = 3,
    /// The client released its lease.
    Release = 4,
    /// The client declined the address; it is quarantined.
    Decline = 5,
    /// A lease ran out.
    Expire = 6,
    /// An offer ran out without a request.
    OfferExpire = 7,
    /// The decline quarantine ended.
    QuarantineEnd = 8,
    /// The lease was imported by an operator.
    Import = 9,
    /// The slot was reserved or unreserved by configuration.
    Reservation = 10,
    /// The slot was taken out of service (checksum failure).
    Abandon = 11,
    /// A crashed writer's half-done change was rolled back or forward by recovery.
    Recovery = 12,
    /// The slot was carried over from a table with another pool layout.
    Migrate = 13,
    /// A standby applied the active's image of the slot (replication: a ring record or a bulk
    /// sync), keeping the active's version.
    Replicated = 14,
    /// A DHCPNAK was sent to a REQUEST: nothing changed (see "NAK records" in the module docs).
    /// The slot is that of the requested address, or [`NO_SLOT`]; the image is unchanged.
    Nak = 15,
}

impl ChangeReason {
    /// Decodes a reason byte.
    pub fn from_u8(v: u8) -> Option<ChangeReason> {
        use ChangeReason::*;
        [
            Offer,
            Commit,
            Renew,
            Release,
            Decline,
            Expire,
            OfferExpire,
            QuarantineEnd,
            Import,
            Reservation,
            Abandon,
            Recovery,
            Migrate,
            Replicated,
            Nak,
        ]
        .into_iter()
        .find(|r| *r as u8 == v)
    }

    /// Stable upper-case name (the audit stream's MSGID).
    pub fn name(self) -> &'static str {
        match self {
            ChangeReason::Offer => "LEASE-OFFER",
            ChangeReason::Commit => "LEASE-COMMIT",
            ChangeReason::Renew => "LEASE-RENEW",
            ChangeReason::Release => "LEASE-RELEASE",
            ChangeReason::Decline => "LEASE-DECLINE",
            ChangeReason::Expire => "LEASE-EXPIRE",
            ChangeReason::OfferExpire => "OFFER-EXPIRE",
            ChangeReason::QuarantineEnd => "QUARANTINE-END",
            ChangeReason::Import => "LEASE-IMPORT",
            ChangeReason::Reservation => "LEASE-RESERVATION",
            ChangeReason::Abandon => "LEASE-ABANDON",
            ChangeReason::Recovery => "LEASE-RECOVERY",
            ChangeReason::Migrate => "LEASE-MIGRATE",
            ChangeReason::Replicated => "LEASE-REPLICATED",
            ChangeReason::Nak => "LEASE-NAK",
        }
    }

    /// Whether a record with this reason records a change of its slot. False only for
    /// [`ChangeReason::Nak`]: its image is the slot's as it was (or empty, with [`NO_SLOT`]),
    /// so a consumer that applies images (replication) must skip it.
    pub fn changes_slot(self) -> bool {
        self != ChangeReason::Nak
    }
}

/// The slot index of a record that concerns no slot of the table: a [`ChangeReason::Nak`]
/// for an address the table does not hold (its image is empty).
pub const NO_SLOT: u32 = u32::MAX;

/// One change record as read back from a ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeRecord {
    /// Sequence number within the producer's ring (from 1).
    pub seq: u64,
    /// Slot index in the table; [`NO_SLOT`] for a NAK record of an address outside it.
    pub slot: u32,
    /// Why it changed.
    pub reason: ChangeReason,
    /// Producer (owner id).
    pub owner: u8,
    /// Unix time of the change in milliseconds.
    pub time_ms: u64,
    /// Table epoch when written (for replication fencing).
    pub epoch: u64,
    /// The full new slot image.
    pub image: SlotImage,
    /// Free-form context bytes (at most [`CONTEXT_BYTES`]).
    pub context: Vec<u8>,
}

/// Bytes of one record, in a ring file and on the replication wire.
pub const RECORD_BYTES: usize = RECORD_WORDS * 8;

/// Why bytes are not a valid change record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecordDecodeError {
    /// Not exactly [`RECORD_BYTES`] long.
    #[error("a change record is {RECORD_BYTES} bytes, got {0}")]
    Length(usize),
    /// Sequence number 0 (records are numbered from 1).
    #[error("change record with sequence number 0")]
    Sequence,
    /// Unknown reason byte.
    #[error("change record with unknown reason {0}")]
    Reason(u8),
    /// The slot image fails its checksum or holds an invalid field.
    #[error("change record image: {0}")]
    Image(#[from] SlotDecodeError),
    /// The context length exceeds [`CONTEXT_BYTES`].
    #[error("change record context length {0} exceeds {CONTEXT_BYTES}")]
    Context(usize),
}

/// The words of record `seq` as the ring stores them.
fn encode_record(seq: u64, owner: u8, rec: &RecordInput<'_>) -> [u64; RECORD_WORDS] {
    let mut w = [0u64; RECORD_WORDS];
    let ctx_len = rec.context.len().min(CONTEXT_BYTES);
    w[0] = seq;
    w[1] = u64::from(rec.slot)
        | (u64::from(rec.reason as u8) << 32)
        | (u64::from(owner) << 40)
        | ((ctx_len as u64) << 48);
    w[2] = rec.time_ms;
    w[3] = rec.epoch;
    w[4..4 + SLOT_WORDS].copy_from_slice(&rec.image.encode());
    let mut ctx = [0u8; CONTEXT_WORDS * 8];
    ctx[..ctx_len].copy_from_slice(&rec.context[..ctx_len]);
    for (d, chunk) in w[4 + SLOT_WORDS..].iter_mut().zip(ctx.chunks_exact(8)) {
        *d = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
    }
    w
}

/// Decodes the words of one record (the inverse of [`encode_record`]).
fn decode_record(words: &[u64; RECORD_WORDS]) -> Result<ChangeRecord, RecordDecodeError> {
    let seq = words[0];
    if seq == 0 {
        return Err(RecordDecodeError::Sequence);
    }
    let mut img = [0u64; SLOT_WORDS];
    img.copy_from_slice(&words[4..4 + SLOT_WORDS]);
    let image = SlotImage::decode(&img)?;
    let reason_byte = (words[1] >> 32) as u8;
    let reason =
        ChangeReason::from_u8(reason_byte).ok_or(RecordDecodeError::Reason(reason_byte))?;
    let ctx_len = ((words[1] >> 48) & 0xff) as usize;
    if ctx_len > CONTEXT_BYTES {
        return Err(RecordDecodeError::Context(ctx_len));
    }
    let mut ctx = Vec::with_capacity(CONTEXT_WORDS * 8);
    for w in &words[4 + SLOT_WORDS..] {
        ctx.extend_from_slice(&w.to_le_bytes());
    }
    ctx.truncate(ctx_len);
    Ok(ChangeRecord {
        seq,
        slot: words[1] as u32,
        reason,
        owner: (words[1] >> 40) as u8,
        time_ms: words[2],
        epoch: words[3],
        image,
        context: ctx,
    })
}

impl ChangeRecord {
    /// The record as the 256 bytes a ring stores (words little-endian): the replication wire
    /// unit. A context longer than [`CONTEXT_BYTES`] is truncated, as [`Ring::append`] does.
    pub fn to_bytes(&self) -> [u8; RECORD_BYTES] {
        let words = encode_record(
            self.seq,
            self.owner,
            &RecordInput {
                slot: self.slot,
                reason: self.reason,
                time_ms: self.time_ms,
                epoch: self.epoch,
                image: &self.image,
                context: &self.context,
            },
        );
        let mut out = [0u8; RECORD_BYTES];
        for (d, w) in out.chunks_exact_mut(8).zip(words) {
            d.copy_from_slice(&w.to_le_bytes());
        }
        out
    }

    /// Decodes and checks bytes made by [`ChangeRecord::to_bytes`] (e.g. received from a peer):
    /// a wrong length, sequence 0, an unknown reason, an image failing its checksum or a context
    /// length out of range is an error, never a panic.
    pub fn from_bytes(bytes: &[u8]) -> Result<ChangeRecord, RecordDecodeError> {
        if bytes.len() != RECORD_BYTES {
            return Err(RecordDecodeError::Length(bytes.len()));
        }
        let mut words = [0u64; RECORD_WORDS];
        for (d, chunk) in words.iter_mut().zip(bytes.chunks_exact(8)) {
            *d = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
        }
        decode_record(&words)
    }
}

/// Errors opening or creating a ring file.
#[derive(Debug, thiserror::Error)]
pub enum RingOpenError {
    /// I/O error on the ring file.
    #[error("ring file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a ring of this layout version or is truncated.
    #[error("ring file {path} is not a valid ring: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// The producer would overwrite records a registered consumer has not read yet. Since lagging
/// consumers are evicted (see the module docs), [`Ring::append`] no longer returns it; the type
/// stays so that writers keep (and test) their rollback of a change that could not be recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("change ring full: a consumer lags by the whole ring")]
pub struct RingFullError;

/// The consumer was evicted by the producer for lagging a whole ring behind (or dropped by an
/// operator): it has missed records and must resynchronise, then register again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("ring consumer {id} was evicted (or dropped): it must resynchronise and register again")]
pub struct ConsumerEvicted {
    /// The consumer id.
    pub id: usize,
}

/// State of one consumer slot of a ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumerState {
    /// Registered: the producer keeps records for it (up to a whole ring).
    Registered,
    /// Evicted for lagging a whole ring behind; it keeps the cursor it had.
    Evicted,
}

/// One consumer slot in use, as listed by [`Ring::consumers`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumerInfo {
    /// Consumer id (0..[`MAX_CONSUMERS`]).
    pub id: usize,
    /// Registered or evicted.
    pub state: ConsumerState,
    /// Last sequence number it consumed.
    pub cursor: u64,
    /// Records published after its cursor.
    pub lag: u64,
}

/// Whether and how a ring's producer serves clients (ring header word 16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Serve everything (no cluster, or this node is active with the whole pool).
    Open,
    /// Answer nobody and change nothing on its own (standby, syncing, syncd not running).
    Closed,
    /// Serve while the peer is unreachable and not confirmed down: see [`Share`].
    Share(Share),
}

/// This node's share of the free space while it serves without its peer (issue 8 item 5).
///
/// A slot belongs to share `index` of `count` when `slot % count == index` (alternate
/// addresses of every pool). New addresses come only from this node's share; an address that
/// became free at or after `since` (unix seconds: the last contact with the peer, less a
/// margin) goes to no other client; a binding in another node's share is served only to its
/// own client, only if it was last changed before `since`, and without changing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    /// This node's share (0-based).
    pub index: u8,
    /// How many shares (the nodes of the cluster); at least 1.
    pub count: u8,
    /// Unix seconds from which a freed address is not re-used for another client.
    pub since: u32,
}

impl Share {
    /// Whether `slot` is in this share.
    pub fn owns(&self, slot: u32) -> bool {
        let count = u32::from(self.count.max(1));
        slot % count == u32::from(self.index)
    }

    fn to_word(self) -> u64 {
        u64::from(self.index) | u64::from(self.count) << 8 | u64::from(self.since) << 32
    }

    fn from_word(w: u64) -> Share {
        Share {
            index: w as u8,
            count: (w >> 8) as u8,
            since: (w >> 32) as u32,
        }
    }
}

/// A mapped ring file.
#[derive(Debug)]
pub struct Ring {
    map: WordMapping,
    _file: File,
    capacity: u64,
    /// Test hook: makes [`Ring::append`] fail, to exercise the writers' rollback path.
    #[cfg(test)]
    pub(crate) refuse_appends: std::sync::atomic::AtomicBool,
}

/// A record to append.
#[derive(Debug, Clone, Copy)]
pub struct RecordInput<'a> {
    /// Slot index ([`NO_SLOT`]: a NAK record of an address outside the table).
    pub slot: u32,
    /// Why.
    pub reason: ChangeReason,
    /// Unix ms.
    pub time_ms: u64,
    /// Table epoch.
    pub epoch: u64,
    /// The new image.
    pub image: &'a SlotImage,
    /// Context bytes (truncated to [`CONTEXT_BYTES`]).
    pub context: &'a [u8],
}

impl Ring {
    /// Opens the ring at `path`, creating it with `capacity` records (a power of two ≥ 16) if it
    /// does not exist. An existing ring keeps its own capacity.
    pub fn open_or_create(path: &Path, owner: u8, capacity: u64) -> Result<Ring, RingOpenError> {
        let io_err = |source| RingOpenError::Io {
            path: path.display().to_string(),
            source,
        };
        let invalid = |reason: String| RingOpenError::Invalid {
            path: path.display().to_string(),
            reason,
        };
        if !capacity.is_power_of_two() || capacity < 16 {
            return Err(invalid(format!(
                "capacity {capacity} is not a power of two ≥ 16"
            )));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .map_err(io_err)?;
        let len = file.metadata().map_err(io_err)?.len();
        if len == 0 {
            let bytes = ((HEADER_WORDS as u64) + capacity * RECORD_WORDS as u64) * 8;
            preallocate(&file, bytes).map_err(io_err)?;
            write_zeros(&file, 0, bytes).map_err(io_err)?;
            let map = WordMapping::map(&file, bytes as usize).map_err(io_err)?;
            let w = map.words();
            w[W_VERSION].store(RING_LAYOUT_VERSION, Ordering::Relaxed);
            w[W_CAPACITY].store(capacity, Ordering::Relaxed);
            w[W_OWNER].store(u64::from(owner), Ordering::Relaxed);
            w[W_MAGIC].store(RING_MAGIC, Ordering::Release);
            return Ok(Ring {
                map,
                _file: file,
                capacity,
                #[cfg(test)]
                refuse_appends: Default::default(),
            });
        }
        if len < (HEADER_WORDS * 8) as u64 {
            return Err(invalid(format!(
                "file is {len} bytes, shorter than its header"
            )));
        }
        let header = WordMapping::map(&file, HEADER_WORDS * 8).map_err(io_err)?;
        let h = header.words();
        if h[W_MAGIC].load(Ordering::Acquire) != RING_MAGIC {
            return Err(invalid("bad magic".into()));
        }
        if h[W_VERSION].load(Ordering::Relaxed) != RING_LAYOUT_VERSION {
            return Err(invalid(format!(
                "ring layout version {} (this build reads {RING_LAYOUT_VERSION})",
                h[W_VERSION].load(Ordering::Relaxed)
            )));
        }
        let cap = h[W_CAPACITY].load(Ordering::Relaxed);
        if !cap.is_power_of_two() || !(16..=(1 << 24)).contains(&cap) {
            return Err(invalid(format!("bad capacity {cap}")));
        }
        let bytes = ((HEADER_WORDS as u64) + cap * RECORD_WORDS as u64) * 8;
        if len < bytes {
            return Err(invalid(format!("file is {len} bytes, needs {bytes}")));
        }
        drop(header);
        let map = WordMapping::map(&file, bytes as usize).map_err(io_err)?;
        Ok(Ring {
            map,
            _file: file,
            capacity: cap,
            #[cfg(test)]
            refuse_appends: Default::default(),
        })
    }

    fn w(&self) -> &[AtomicU64] {
        self.map.words()
    }

    /// The mapping (for [`crate::durable`]).
    pub(crate) fn mapping(&self) -> &WordMapping {
        &self.map
    }

    /// The owner id of the ring's producer (header word 3): the ring's id in replication.
    pub fn owner(&self) -> u8 {
        (self.w()[W_OWNER].load(Ordering::Relaxed) & 0xff) as u8
    }

    /// Capacity in records.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Sequence number of the last published record (0 when none).
    pub fn head(&self) -> u64 {
        self.w()[W_HEAD].load(Ordering::Acquire)
    }

    fn record_words(&self, seq: u64) -> &[AtomicU64] {
        let i = ((seq - 1) & (self.capacity - 1)) as usize;
        let start = HEADER_WORDS + i * RECORD_WORDS;
        &self.w()[start..start + RECORD_WORDS]
    }

    fn cursor_word(&self, id: usize) -> Option<&AtomicU64> {
        self.w().get(W_CURSORS + id).filter(|_| id < MAX_CONSUMERS)
    }

    /// Evicts every registered consumer that has not read record `seq - capacity`, the one that
    /// record `seq` overwrites (see the module docs). Only the producer calls this.
    fn evict_laggards(&self, seq: u64) {
        for c in &self.w()[W_CURSORS..W_CURSORS + MAX_CONSUMERS] {
            let mut cur = c.load(Ordering::Acquire);
            while cur & REGISTERED != 0 && seq - (cur & CURSOR_MASK) > self.capacity {
                match c.compare_exchange(
                    cur,
                    EVICTED | (cur & CURSOR_MASK),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => {
                        self.w()[W_EVICTIONS].fetch_add(1, Ordering::AcqRel);
                        break;
                    }
                    // The consumer advanced (or was dropped) meanwhile: judge it again.
                    Err(now) => cur = now,
                }
            }
        }
    }

    /// How many consumers the producer has evicted from this ring, ever.
    pub fn evictions(&self) -> u64 {
        self.w()[W_EVICTIONS].load(Ordering::Acquire)
    }

    /// The highest sequence of this ring that every in-sync standby has applied (0: none), as
    /// syncd last published it. Acquire ordering: a worker that sees `n` here may send every
    /// reply it held for records up to `n`. See the module docs.
    pub fn replicated(&self) -> u64 {
        self.w()[W_REPLICATED].load(Ordering::Acquire)
    }

    /// Publishes that every in-sync standby has applied the records up to `seq` (syncd only,
    /// release ordering). Never moves backwards: a lower `seq` than the published one changes
    /// nothing. Returns the value now published.
    pub fn publish_replicated(&self, seq: u64) -> u64 {
        self.w()[W_REPLICATED]
            .fetch_max(seq, Ordering::AcqRel)
            .max(seq)
    }

    /// Whether the producer must hold a change's reply until [`Ring::replicated`] covers its
    /// record (synchronous replication with at least one standby in sync).
    pub fn hold_replies(&self) -> bool {
        self.w()[W_HOLD].load(Ordering::Acquire) != 0
    }

    /// Sets or clears the hold (syncd only): set while at least one standby is in sync and
    /// replication is `"sync"`, cleared when syncd goes active-alone or replication is async.
    pub fn set_hold(&self, hold: bool) {
        self.w()[W_HOLD].store(u64::from(hold), Ordering::Release);
    }

    /// Whether and how the producer serves (header word 16; see the module docs).
    pub fn gate(&self) -> Gate {
        match self.w()[W_GATE].load(Ordering::Acquire) {
            0 => Gate::Open,
            2 => Gate::Share(Share::from_word(self.w()[W_SHARE].load(Ordering::Relaxed))),
            _ => Gate::Closed,
        }
    }

    /// Sets the gate (syncd with the node's role; the supervisor closes it). A share is
    /// written before the gate word (release), so a producer that reads [`Gate::Share`] reads
    /// its share.
    pub fn set_gate(&self, gate: Gate) {
        let code = match gate {
            Gate::Open => 0,
            Gate::Closed => 1,
            Gate::Share(share) => {
                self.w()[W_SHARE].store(share.to_word(), Ordering::Relaxed);
                2
            }
        };
        self.w()[W_GATE].store(code, Ordering::Release);
    }

    /// Whether the audit trail blocks this producer (header word 20): set by the audit process
    /// with `audit_strict` while its spool is full. A worker treats it as [`Gate::Closed`].
    pub fn audit_blocked(&self) -> bool {
        self.w()[W_AUDIT_BLOCK].load(Ordering::Acquire) != 0
    }

    /// Sets or clears the audit block (the audit process; the supervisor clears it when the
    /// audit process is not running or not configured).
    pub fn set_audit_block(&self, block: bool) {
        self.w()[W_AUDIT_BLOCK].store(u64::from(block), Ordering::Release);
    }

    /// The gate as the producer must obey it: [`Ring::gate`], or [`Gate::Closed`] while the
    /// audit trail blocks it ([`Ring::audit_blocked`]).
    pub fn serving_gate(&self) -> Gate {
        if self.audit_blocked() {
            Gate::Closed
        } else {
            self.gate()
        }
    }

    /// syncd's ring: unix seconds of the last message received from any peer (0: never).
    pub fn peer_contact(&self) -> u64 {
        self.w()[W_PEER_CONTACT].load(Ordering::Acquire)
    }

    /// syncd's ring: notes the last message from a peer (unix seconds).
    pub fn set_peer_contact(&self, secs: u64) {
        self.w()[W_PEER_CONTACT].store(secs, Ordering::Release);
    }

    /// syncd's ring: the node's last role as syncd's role code (0: none recorded).
    pub fn last_role(&self) -> u64 {
        self.w()[W_LAST_ROLE].load(Ordering::Acquire)
    }

    /// syncd's ring: records the node's role (survives restarts with the ring file).
    pub fn set_last_role(&self, code: u64) {
        self.w()[W_LAST_ROLE].store(code, Ordering::Release);
    }

    /// Every consumer slot in use (registered or evicted), with its cursor and lag.
    pub fn consumers(&self) -> Vec<ConsumerInfo> {
        let head = self.head();
        (0..MAX_CONSUMERS)
            .filter_map(|id| {
                let c = self.cursor_word(id)?.load(Ordering::Acquire);
                let state = if c & REGISTERED != 0 {
                    ConsumerState::Registered
                } else if c & EVICTED != 0 {
                    ConsumerState::Evicted
                } else {
                    return None;
                };
                let cursor = c & CURSOR_MASK;
                Some(ConsumerInfo {
                    id,
                    state,
                    cursor,
                    lag: head.saturating_sub(cursor),
                })
            })
            .collect()
    }

    /// Appends and publishes one record. Only the ring's single producer may call this. A
    /// registered consumer that has not read the record this one overwrites is evicted first
    /// (see the module docs), so this never fails today.
    pub fn append(&self, rec: &RecordInput<'_>) -> Result<u64, RingFullError> {
        #[cfg(test)]
        if self.refuse_appends.load(Ordering::Relaxed) {
            return Err(RingFullError);
        }
        let seq = self.w()[W_HEAD].load(Ordering::Relaxed) + 1;
        if seq > self.capacity {
            self.evict_laggards(seq);
        }
        let words = encode_record(seq, self.owner(), rec);
        let r = self.record_words(seq);
        // Invalidate the old record first so a concurrent reader of the overwritten sequence
        // notices (it re-checks word 0 after reading).
        r[0].store(0, Ordering::Relaxed);
        std::sync::atomic::fence(Ordering::Release);
        for (d, x) in r.iter().zip(words).skip(1) {
            d.store(x, Ordering::Relaxed);
        }
        r[0].store(seq, Ordering::Release);
        self.w()[W_HEAD].store(seq, Ordering::Release);
        Ok(seq)
    }

    /// Reads record `seq`; `None` if it is not published yet or was already overwritten.
    pub fn read(&self, seq: u64) -> Option<ChangeRecord> {
        if seq == 0 || seq > self.head() || self.head() - seq >= self.capacity {
            return None;
        }
        let r = self.record_words(seq);
        if r[0].load(Ordering::Acquire) != seq {
            return None;
        }
        let mut words = [0u64; RECORD_WORDS];
        for (d, s) in words.iter_mut().zip(r) {
            *d = s.load(Ordering::Relaxed);
        }
        std::sync::atomic::fence(Ordering::Acquire);
        if r[0].load(Ordering::Relaxed) != seq {
            return None;
        }
        decode_record(&words).ok()
    }

    /// Registers consumer `id` (0..MAX_CONSUMERS) starting after the current head, unless it is
    /// already registered (then its cursor is kept). An evicted consumer is registered afresh at
    /// the head. Returns its cursor.
    pub fn register_consumer(&self, id: usize) -> Option<u64> {
        let c = self.cursor_word(id)?;
        let cur = c.load(Ordering::Acquire);
        if cur & REGISTERED != 0 {
            return Some(cur & CURSOR_MASK);
        }
        let head = self.head();
        c.store(head | REGISTERED, Ordering::Release);
        Some(head)
    }

    /// Removes consumer `id`'s registration or eviction mark (the producer no longer keeps
    /// records for it). Returns whether the slot was in use.
    pub fn unregister_consumer(&self, id: usize) -> bool {
        self.cursor_word(id)
            .is_some_and(|c| c.swap(0, Ordering::AcqRel) & (REGISTERED | EVICTED) != 0)
    }

    /// Records that consumer `id` has consumed every record up to `seq`. Fails when the consumer
    /// is no longer registered (evicted by the producer, or dropped by an operator): an advance
    /// never re-registers it.
    pub fn advance_consumer(&self, id: usize, seq: u64) -> Result<(), ConsumerEvicted> {
        let c = self.cursor_word(id).ok_or(ConsumerEvicted { id })?;
        let mut cur = c.load(Ordering::Acquire);
        loop {
            if cur & REGISTERED == 0 {
                return Err(ConsumerEvicted { id });
            }
            match c.compare_exchange(
                cur,
                (seq & CURSOR_MASK) | REGISTERED,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(()),
                Err(now) => cur = now,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slot::LeaseState;

    fn image(v: u64) -> SlotImage {
        SlotImage {
            version: v,
            state: LeaseState::Leased,
            expires: 100,
            ..SlotImage::PRISTINE
        }
    }

    fn append(ring: &Ring, v: u64) -> Result<u64, RingFullError> {
        let img = image(v);
        ring.append(&RecordInput {
            slot: v as u32,
            reason: ChangeReason::Commit,
            time_ms: 5,
            epoch: 1,
            image: &img,
            context: b"circuit",
        })
    }

    #[test]
    fn append_read_and_wrap_without_consumers() {
        let dir = tempfile::tempdir().unwrap();
        let ring = Ring::open_or_create(&dir.path().join("r"), 3, 16).unwrap();
        for v in 1..=40 {
            assert_eq!(append(&ring, v), Ok(v));
        }
        assert_eq!(ring.head(), 40);
        assert!(ring.read(24).is_none(), "overwritten");
        let r = ring.read(40).unwrap();
        assert_eq!((r.slot, r.owner, r.image.version), (40, 3, 40));
        assert_eq!(ring.owner(), 3);
        assert_eq!(r.context, b"circuit");
        assert!(ring.read(41).is_none());
    }

    #[test]
    fn a_consumer_lagging_a_whole_ring_is_evicted_and_writes_go_on() {
        let dir = tempfile::tempdir().unwrap();
        let ring = Ring::open_or_create(&dir.path().join("r"), 1, 16).unwrap();
        assert_eq!(ring.register_consumer(0), Some(0));
        assert_eq!(ring.register_consumer(3), Some(0));
        for v in 1..=16 {
            append(&ring, v).unwrap();
        }
        // Lagging by exactly the ring is allowed: nothing was overwritten yet.
        assert_eq!(ring.evictions(), 0);
        ring.advance_consumer(3, 16).unwrap();
        // Record 17 overwrites record 1, which consumer 0 never read: it is evicted, consumer
        // 3 (up to date) is not, and the append succeeds.
        assert_eq!(append(&ring, 17), Ok(17));
        assert_eq!(ring.evictions(), 1);
        let list = ring.consumers();
        assert_eq!(
            list,
            vec![
                ConsumerInfo {
                    id: 0,
                    state: ConsumerState::Evicted,
                    cursor: 0,
                    lag: 17
                },
                ConsumerInfo {
                    id: 3,
                    state: ConsumerState::Registered,
                    cursor: 16,
                    lag: 1
                },
            ]
        );
        // The evicted consumer learns it on its next advance, which does not re-register it.
        assert_eq!(ring.advance_consumer(0, 1), Err(ConsumerEvicted { id: 0 }));
        assert_eq!(ring.consumers()[0].state, ConsumerState::Evicted);
        for v in 18..=100 {
            append(&ring, v).unwrap();
        }
        // Consumer 3 stopped at 16 and is evicted at record 33; counted once each.
        assert_eq!(ring.evictions(), 2);
        // Registering again starts at the head.
        assert_eq!(ring.register_consumer(0), Some(100));
        assert_eq!(ring.consumers()[0].state, ConsumerState::Registered);
        // An operator drop frees the slot; a dropped consumer cannot advance either.
        assert!(ring.unregister_consumer(0));
        assert!(!ring.unregister_consumer(5));
        assert_eq!(
            ring.advance_consumer(0, 100),
            Err(ConsumerEvicted { id: 0 })
        );
        assert_eq!(ring.consumers().len(), 1);
        assert_eq!(ring.consumers()[0].id, 3);
    }

    #[test]
    fn a_consumer_that_keeps_up_is_never_evicted() {
        let dir = tempfile::tempdir().unwrap();
        let ring = Ring::open_or_create(&dir.path().join("r"), 1, 16).unwrap();
        ring.register_consumer(1).unwrap();
        for v in 1..=1000 {
            append(&ring, v).unwrap();
            if v.is_multiple_of(10) {
                ring.advance_consumer(1, v).unwrap();
            }
        }
        assert_eq!(ring.evictions(), 0);
        assert_eq!(ring.consumers()[0].state, ConsumerState::Registered);
    }

    #[test]
    fn reopen_keeps_records_and_rejects_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r");
        {
            let ring = Ring::open_or_create(&p, 2, 32).unwrap();
            append(&ring, 7).unwrap();
        }
        let ring = Ring::open_or_create(&p, 2, 64).unwrap();
        assert_eq!(ring.capacity(), 32);
        assert_eq!(ring.read(1).unwrap().image.version, 7);
        std::fs::write(dir.path().join("bad"), vec![0xAAu8; 4096]).unwrap();
        assert!(matches!(
            Ring::open_or_create(&dir.path().join("bad"), 2, 32),
            Err(RingOpenError::Invalid { .. })
        ));
        std::fs::write(dir.path().join("short"), b"xx").unwrap();
        assert!(Ring::open_or_create(&dir.path().join("short"), 2, 32).is_err());
    }

    #[test]
    fn replicated_is_published_monotonically_and_hold_is_a_flag() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r");
        let ring = Ring::open_or_create(&p, 1, 16).unwrap();
        // A new ring (like one made before these words existed: they were zero) holds nothing.
        assert_eq!(ring.replicated(), 0);
        assert!(!ring.hold_replies());
        assert_eq!(ring.publish_replicated(5), 5);
        assert_eq!(ring.replicated(), 5);
        // Never backwards: a late acknowledgement of an older position changes nothing.
        assert_eq!(ring.publish_replicated(3), 5);
        assert_eq!(ring.replicated(), 5);
        assert_eq!(ring.publish_replicated(9), 9);
        ring.set_hold(true);
        assert!(ring.hold_replies());
        // Both words live in the file: another mapping (the worker's) sees them.
        let other = Ring::open_or_create(&p, 1, 16).unwrap();
        assert_eq!(other.replicated(), 9);
        assert!(other.hold_replies());
        ring.set_hold(false);
        assert!(!other.hold_replies());
        // They are header words 6 and 7, outside the cursors and the records: appends and
        // consumers do not touch them.
        other.register_consumer(0).unwrap();
        for v in 1..=40 {
            append(&other, v).unwrap();
        }
        assert_eq!(ring.replicated(), 9);
        assert!(!ring.hold_replies());
        assert_eq!(ring.consumers().len(), 1);
        assert_eq!(ring.evictions(), 1);
    }

    #[test]
    fn the_audit_block_closes_the_serving_gate_without_touching_the_gate() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r");
        let ring = Ring::open_or_create(&p, 1, 16).unwrap();
        let other = Ring::open_or_create(&p, 1, 16).unwrap();
        assert!(!ring.audit_blocked());
        assert_eq!(ring.serving_gate(), Gate::Open);
        ring.set_audit_block(true);
        assert!(other.audit_blocked());
        assert_eq!(other.serving_gate(), Gate::Closed);
        // syncd's word is its own: the role's gate is unchanged underneath.
        assert_eq!(other.gate(), Gate::Open);
        ring.set_audit_block(false);
        assert_eq!(other.serving_gate(), Gate::Open);
    }

    #[test]
    fn the_gate_is_open_on_a_new_ring_and_every_mapping_sees_its_share() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r");
        let ring = Ring::open_or_create(&p, 1, 16).unwrap();
        // Zero (a ring from before the word) is Open: a node without a cluster serves.
        assert_eq!(ring.gate(), Gate::Open);
        let other = Ring::open_or_create(&p, 1, 16).unwrap();
        ring.set_gate(Gate::Closed);
        assert_eq!(other.gate(), Gate::Closed);
        let share = Share {
            index: 1,
            count: 2,
            since: 1_790_000_000,
        };
        ring.set_gate(Gate::Share(share));
        assert_eq!(other.gate(), Gate::Share(share));
        assert!(share.owns(7) && !share.owns(8));
        ring.set_gate(Gate::Open);
        assert_eq!(other.gate(), Gate::Open);
        // A zero count (never written) owns every slot rather than dividing by zero.
        let none = Share {
            index: 0,
            count: 0,
            since: 0,
        };
        assert!(none.owns(0) && none.owns(5));
        // syncd's persisted words, outside everything else.
        other.set_peer_contact(1234);
        other.set_last_role(3);
        append(&other, 1).unwrap();
        assert_eq!((ring.peer_contact(), ring.last_role()), (1234, 3));
        assert_eq!(ring.gate(), Gate::Open);
    }

    #[test]
    fn a_ring_file_from_before_the_replication_words_opens_with_no_hold() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r");
        {
            let ring = Ring::open_or_create(&p, 1, 16).unwrap();
            append(&ring, 1).unwrap();
        }
        // An old file: words 6 and 7 zero (they were never written), same layout version.
        let mut bytes = std::fs::read(&p).unwrap();
        assert!(bytes[6 * 8..8 * 8].iter().all(|&b| b == 0));
        bytes[6 * 8..8 * 8].fill(0);
        std::fs::write(&p, &bytes).unwrap();
        let ring = Ring::open_or_create(&p, 1, 16).unwrap();
        assert_eq!((ring.replicated(), ring.hold_replies()), (0, false));
        assert_eq!(ring.read(1).unwrap().image.version, 1);
    }

    #[test]
    fn a_record_round_trips_through_bytes_exactly_as_the_ring_stores_it() {
        let dir = tempfile::tempdir().unwrap();
        let ring = Ring::open_or_create(&dir.path().join("r"), 9, 16).unwrap();
        let mut img = image(77);
        img.set_hwaddr(1, &[2, 0, 0, 0, 0, 7]);
        img.key = crate::slot::ClientKey::from_client_id(b"client-7");
        let long_ctx = [0xabu8; CONTEXT_BYTES + 10];
        for ctx in [&b""[..], &b"circuit-id"[..], &long_ctx[..]] {
            let seq = ring
                .append(&RecordInput {
                    slot: 123_456,
                    reason: ChangeReason::Release,
                    time_ms: 1_700_000_000_123,
                    epoch: 42,
                    image: &img,
                    context: ctx,
                })
                .unwrap();
            let rec = ring.read(seq).unwrap();
            assert_eq!(rec.context.len(), ctx.len().min(CONTEXT_BYTES));
            let bytes = rec.to_bytes();
            // The wire bytes are the ring's record words, little-endian.
            let file = std::fs::read(dir.path().join("r")).unwrap();
            let at = (HEADER_WORDS + (seq as usize - 1) * RECORD_WORDS) * 8;
            assert_eq!(&file[at..at + RECORD_BYTES], &bytes[..]);
            assert_eq!(ChangeRecord::from_bytes(&bytes), Ok(rec));
        }
        // Every reason survives the trip.
        for code in 1..=u8::MAX {
            let Some(reason) = ChangeReason::from_u8(code) else {
                continue;
            };
            let rec = ChangeRecord {
                seq: 1,
                slot: 0,
                reason,
                owner: 3,
                time_ms: 0,
                epoch: 0,
                image: img,
                context: vec![],
            };
            assert_eq!(ChangeRecord::from_bytes(&rec.to_bytes()), Ok(rec));
        }
    }

    #[test]
    fn a_nak_record_without_a_slot_round_trips_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let ring = Ring::open_or_create(&dir.path().join("r"), 1, 16).unwrap();
        let seq = ring
            .append(&RecordInput {
                slot: NO_SLOT,
                reason: ChangeReason::Nak,
                time_ms: 9,
                epoch: 1,
                image: &SlotImage::PRISTINE,
                context: b"",
            })
            .unwrap();
        let rec = ring.read(seq).unwrap();
        assert_eq!(
            (rec.slot, rec.reason, rec.image),
            (NO_SLOT, ChangeReason::Nak, SlotImage::PRISTINE)
        );
        assert_eq!(ChangeRecord::from_bytes(&rec.to_bytes()), Ok(rec));
        assert_eq!(ChangeReason::from_u8(15), Some(ChangeReason::Nak));
        assert_eq!(ChangeReason::Nak.name(), "LEASE-NAK");
        assert!(!ChangeReason::Nak.changes_slot());
        assert!(ChangeReason::Commit.changes_slot() && ChangeReason::Replicated.changes_slot());
    }

    #[test]
    fn malformed_record_bytes_are_an_error_not_a_panic() {
        let rec = ChangeRecord {
            seq: 5,
            slot: 1,
            reason: ChangeReason::Commit,
            owner: 1,
            time_ms: 1,
            epoch: 1,
            image: image(3),
            context: b"x".to_vec(),
        };
        let good = rec.to_bytes();
        assert_eq!(
            ChangeRecord::from_bytes(&good[..255]),
            Err(RecordDecodeError::Length(255))
        );
        let mut b = good;
        b[0..8].fill(0);
        assert_eq!(
            ChangeRecord::from_bytes(&b),
            Err(RecordDecodeError::Sequence)
        );
        let mut b = good;
        b[12] = 0xee; // reason byte (word 1, bits 32..40)
        assert_eq!(
            ChangeRecord::from_bytes(&b),
            Err(RecordDecodeError::Reason(0xee))
        );
        let mut b = good;
        b[4 * 8 + 9] ^= 1; // a bit of the image
        assert!(matches!(
            ChangeRecord::from_bytes(&b),
            Err(RecordDecodeError::Image(_))
        ));
        let mut b = good;
        b[14] = 200; // context length (word 1, bits 48..56)
        assert_eq!(
            ChangeRecord::from_bytes(&b),
            Err(RecordDecodeError::Context(200))
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_record_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let _ = ChangeRecord::from_bytes(&bytes);
        }
    }
}

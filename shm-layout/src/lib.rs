//! prodhcp's lease table in file-backed shared memory.
//!
//! One file under the state directory holds one fixed-size slot per address of every pool
//! (direct index, no search), free bitmaps with a summary level, a client index, and per-owner
//! intent records and counters. Each writer also owns a change ring in a file of its own. Every
//! process maps the files `MAP_SHARED`; nothing is parsed at start, and the contents survive the
//! death of any process.
//!
//! Architecture Invariant: this crate does no network I/O and knows nothing of DHCP packets; it
//! is the only crate that turns raw memory into typed data (in [`mapping`], its only `unsafe`).

pub mod durable;
pub mod hash;
pub mod layout;
pub mod mapping;
pub mod owner_process;
pub mod ring;
pub mod ring_context;
pub mod scrub;
pub mod slot;
pub mod table;
pub mod writer;

pub use layout::{default_capacity, Geometry, LayoutError, LayoutSpec, RangeSpec, LAYOUT_VERSION};
pub use owner_process::{process_start_time, OwnerProcess};
pub use ring::{
    ChangeReason, ChangeRecord, ConsumerEvicted, ConsumerInfo, ConsumerState, Gate,
    RecordDecodeError, RecordInput, Ring, RingFullError, RingOpenError, Share, NO_SLOT,
    RECORD_BYTES,
};
pub use scrub::{Scrub, ScrubCounts, ScrubPhase, ScrubStep};
pub use slot::{ClientKey, KeyKind, LeaseState, SlotImage};
pub use table::{
    worker_owner, ApplyError, ApplyOutcome, ChangeContext, CheckReport, LayoutPlan, RangeEntry,
    ReadError, Recovery, RelayoutError, ReplicaContext, Table, TableOpenError, UpdateError,
    IMPORT_OWNER, SUPERVISOR_OWNER, SYNCD_OWNER,
};
pub use writer::Writer;

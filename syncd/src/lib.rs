//! prodhcp's replication daemon.
//!
//! Built so far:
//! - the consumer side of the change rings ([`RingCursor`]): a registered cursor per ring,
//!   draining records in order, advancing only after the records were handled, so nothing is
//!   skipped across a crash of the consumer;
//! - the authenticated peer transport ([`node`]): one TCP connection per pair of appliances
//!   (the node whose name sorts lower dials), a Noise `NNpsk0` handshake under the cluster key
//!   ([`key`], [`handshake`]), `u16`-length frames each holding one AES-GCM sealed message
//!   ([`frame`]), the messages ([`message`]: hello, refuse, heartbeat, records, ack),
//!   heartbeats and silence detection, and every untrusted input counted and dropped
//!   ([`link`]);
//! - the floating service address ([`service_address`]: add/remove by netlink, gratuitous
//!   ARP).
//! - shipping ring records on the active ([`ship`]: a registered cursor per worker ring, OFFERs
//!   skipped, `replicated` published on acknowledgement) and applying them by slot version on
//!   the standby ([`apply`]), plus the bulk-sync walk of the whole table;
//! - replication over the links ([`replicate`]): every node ships its producer rings (workers,
//!   supervisor, importer — never syncd's own) to every up peer, with per-peer and per-ring
//!   sent/acknowledged positions, windows of frames in flight (group commit), resume from the
//!   peer's hello positions or a bulk sync while serving, "in sync" per peer, the rings' hold
//!   and `replicated` words, and the worker's doorbell rung after each;
//! - the process the supervisor starts ([`process`]): peer links and replication state reported
//!   to the supervisor;
//! - roles ([`role`]): who serves (a pair: by the links and shares; three or more: by a
//!   majority through [`consensus`], raft-rs), the workers' gate, the service address moving
//!   with the role, switchover and partner-down.
//!
//! ## Why Noise (snow) and not TLS
//!
//! The appliances share one configured secret, so a pre-shared-key handshake is the natural
//! fit: `Noise_NNpsk0_25519_AESGCM_SHA256` authenticates both sides by the 32-byte cluster key,
//! gives every connection fresh ephemeral keys (forward secrecy) and seals every frame with
//! AES-256-GCM (ring's implementation: ~65 ns per 256-byte record in batches of 64, measured on
//! this machine kind). snow's buffer-in/buffer-out API drops straight into a mio loop. rustls
//! has no external-PSK support (rustls#174); pinned certificates would need a key pair per
//! appliance and a custom verifier. HMAC-only framing would mean hand-building a handshake and
//! replay protection. Caveats: snow has one maintainer and no formal audit.
//!
//! ## How it runs
//!
//! When `Config::cluster` is `Some`, the supervisor fork+execs `prodhcpd syncd` like a
//! worker (the launch contract: `prodhcp_proto::launch::SyncdLaunchArgs`, its channel at
//! descriptor 4) and restarts it with the workers' backoff when it dies. [`process`] is that
//! process: it dies with the supervisor (PDEATHSIG + parent check), takes the configuration
//! from the first channel frame, loads the key ([`NodeConfig::load`]; an unusable key exits 2,
//! and the supervisor already refuses it at start), uses the table's layout fingerprint the
//! supervisor passes (`--layout-fingerprint`, from the table it opened), turns [`Node`] until
//! SIGTERM or a `Stop` frame, and reports every configured peer's link to the supervisor
//! (`FrameKind::PeerReport`), which keeps it for `prodhcpctl ha status` and logs each
//! transition with its cause. The listening socket uses `SO_REUSEADDR`, so a restarted syncd
//! binds again at once; a peer that restarts reconnects and its new authenticated connection
//! replaces its stale one.
//!
//! Architecture Invariant: only syncd talks to the peer.

pub mod apply;
pub mod consensus;
pub mod doorbell;
pub mod frame;
pub mod handshake;
pub mod key;
pub mod link;
pub mod message;
pub mod node;
pub mod process;
pub mod replicate;
pub mod role;
pub mod service_address;
pub mod ship;
mod sys;

pub use link::{DownCause, SendError, Side};
pub use message::{Hello, Message, Position, RefuseCode};
pub use node::{run, Event, LinkCounters, Node, NodeConfig, PeerState};
pub use process::{run_process, ProcessError};

use shm_layout::{ChangeRecord, Ring};

pub use shm_layout::ring::SYNCD_CONSUMER;

/// A registered consumer of one producer's ring.
#[derive(Debug)]
pub struct RingCursor<'r> {
    ring: &'r Ring,
    consumer: usize,
    next: u64,
}

/// Why a drain stopped with records lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Gap {
    /// Records the consumer can no longer read (overwritten before it registered or while it was
    /// not registered).
    #[error("records {from}..={to} were overwritten before they were consumed")]
    Overwritten {
        /// First missing sequence number.
        from: u64,
        /// Last missing sequence number.
        to: u64,
    },
    /// The producer evicted this consumer for lagging a whole ring (or an operator dropped it):
    /// resynchronise from the table and register again.
    #[error(transparent)]
    Evicted(#[from] shm_layout::ConsumerEvicted),
}

impl<'r> RingCursor<'r> {
    /// Registers (or resumes) consumer `consumer` on `ring`.
    pub fn register(ring: &'r Ring, consumer: usize) -> Option<RingCursor<'r>> {
        let last = ring.register_consumer(consumer)?;
        Some(RingCursor {
            ring,
            consumer,
            next: last + 1,
        })
    }

    /// Hands every published record after the cursor to `handle`, in order, at most `max`, and
    /// advances the cursor past the records `handle` accepted (returns `true` for). Stops at the
    /// first record `handle` refuses (to be retried later).
    pub fn drain(
        &mut self,
        max: usize,
        mut handle: impl FnMut(&ChangeRecord) -> bool,
    ) -> Result<usize, Gap> {
        let head = self.ring.head();
        let mut done = 0;
        while self.next <= head && done < max {
            let Some(rec) = self.ring.read(self.next) else {
                let evicted = self.ring.consumers().iter().any(|c| {
                    c.id == self.consumer && c.state == shm_layout::ConsumerState::Evicted
                });
                if evicted {
                    return Err(shm_layout::ConsumerEvicted { id: self.consumer }.into());
                }
                let gap = Gap::Overwritten {
                    from: self.next,
                    to: head.saturating_sub(self.ring.capacity()),
                };
                self.next = head
                    .saturating_sub(self.ring.capacity() - 1)
                    .max(self.next + 1);
                return Err(gap);
            };
            if !handle(&rec) {
                break;
            }
            self.ring.advance_consumer(self.consumer, self.next)?;
            self.next += 1;
            done += 1;
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shm_layout::{ChangeReason, LeaseState, RecordInput, SlotImage};

    fn push(ring: &Ring, v: u64) -> Result<u64, shm_layout::RingFullError> {
        let img = SlotImage {
            version: v,
            state: LeaseState::Leased,
            ..SlotImage::PRISTINE
        };
        ring.append(&RecordInput {
            slot: v as u32,
            reason: ChangeReason::Commit,
            time_ms: 0,
            epoch: 1,
            image: &img,
            context: b"",
        })
    }

    #[test]
    fn drains_in_order_resumes_after_restart_and_is_evicted_when_it_lags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ring");
        let ring = Ring::open_or_create(&path, 1, 16).unwrap();
        let mut c = RingCursor::register(&ring, SYNCD_CONSUMER).unwrap();
        for v in 1..=10 {
            push(&ring, v).unwrap();
        }
        let mut seen = Vec::new();
        // Handle 4, refuse the 5th.
        let n = c
            .drain(100, |r| {
                if seen.len() == 4 {
                    return false;
                }
                seen.push(r.image.version);
                true
            })
            .unwrap();
        assert_eq!(n, 4);
        assert_eq!(seen, vec![1, 2, 3, 4]);
        // A new consumer process resumes where the last one acknowledged.
        let _ = c;
        let ring2 = Ring::open_or_create(&path, 1, 16).unwrap();
        let mut c2 = RingCursor::register(&ring2, SYNCD_CONSUMER).unwrap();
        let mut rest = Vec::new();
        c2.drain(100, |r| {
            rest.push(r.image.version);
            true
        })
        .unwrap();
        assert_eq!(rest, (5..=10).collect::<Vec<_>>());
        // A producer that laps a registered consumer evicts it instead of stopping; the consumer
        // learns it when it next advances.
        for v in 11..=27 {
            push(&ring, v).unwrap();
        }
        assert_eq!(ring.evictions(), 1);
        assert!(matches!(c2.drain(100, |_| true), Err(Gap::Evicted(_))));
    }
}

//! The expiry sweeper: walks this worker's share of the table a budget at a time and ends
//! leases, offers and quarantines whose time has run out; abandons slots that fail their
//! checksum; returns slots reserved only by an earlier configuration to the pool.

use shm_layout::{ChangeContext, ChangeReason, Gate, LeaseState, ReadError, SlotImage};

use super::Engine;
use crate::counters::Counter;

impl Engine {
    /// Sweeps up to `budget` slots of this worker's share of the table: expired leases become
    /// expired (allocatable), expired offers free, ended quarantines free. Returns slots visited.
    ///
    /// The gate (read here, from the ring) decides whether it writes: closed, it visits
    /// nothing (a standby's table is a replica: the active's expiries arrive by replication);
    /// serving alone ([`Gate::Share`]), it passes over the other share's slots, which are the
    /// peer's to change.
    pub fn sweep(&mut self, budget: u32) -> u32 {
        let share = match self.ring.serving_gate() {
            Gate::Closed => return 0,
            Gate::Open => None,
            Gate::Share(s) => Some(s),
        };
        let now = self.tick();
        let span = self.sweep_span.clone();
        if span.is_empty() {
            return 0;
        }
        let mut visited = 0;
        while visited < budget {
            let slot = self.sweep_pos;
            self.sweep_pos = if slot + 1 >= span.end {
                span.start
            } else {
                slot + 1
            };
            visited += 1;
            if share.is_some_and(|s| !s.owns(slot)) {
                continue;
            }
            let cur = match self.table.read(slot) {
                Ok(c) => c,
                Err(ReadError::Corrupt(_)) => {
                    if self.writer().abandon_corrupt(slot) {
                        self.counters().inc(Counter::SweepAbandoned);
                    }
                    continue;
                }
                Err(_) => continue,
            };
            if cur.state == LeaseState::Reserved {
                let addr = self.table.addr_of_slot(slot).unwrap_or(0);
                if !self.cfg.reserved_addrs.contains_key(&addr) {
                    // Reserved by an earlier configuration only: back to the pool.
                    let new = SlotImage {
                        state: LeaseState::Free,
                        updated: now as u32,
                        ..cur
                    };
                    let _ = self.writer().update(
                        slot,
                        &cur,
                        &new,
                        &ChangeContext {
                            reason: ChangeReason::Reservation,
                            time_ms: now * 1000,
                            context: b"",
                        },
                    );
                }
                continue;
            }
            if cur.expires == 0 || u64::from(cur.expires) > now {
                continue;
            }
            let (state, reason, counter) = match cur.state {
                LeaseState::Leased => (
                    LeaseState::Expired,
                    ChangeReason::Expire,
                    Counter::SweepExpired,
                ),
                LeaseState::Offered => (
                    LeaseState::Free,
                    ChangeReason::OfferExpire,
                    Counter::SweepOfferExpired,
                ),
                LeaseState::Declined => (
                    LeaseState::Free,
                    ChangeReason::QuarantineEnd,
                    Counter::SweepQuarantineEnded,
                ),
                _ => continue,
            };
            let new = SlotImage {
                state,
                updated: now as u32,
                ..cur
            };
            let ok = self
                .writer()
                .update(
                    slot,
                    &cur,
                    &new,
                    &ChangeContext {
                        reason,
                        time_ms: now * 1000,
                        context: b"",
                    },
                )
                .is_ok();
            if ok {
                self.counters().inc(counter);
            }
        }
        visited
    }
}

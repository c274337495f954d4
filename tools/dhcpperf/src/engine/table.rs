//! The client table: one slot per simulated client, its state in one atomic word.

use std::sync::atomic::{AtomicU32, Ordering};

/// Client phases (low byte of the state word); a zeroed slot (0) is idle.
pub(super) mod phase {
    pub(crate) const DISCOVER_SENT: u32 = 1;
    pub(crate) const REQUEST_SENT: u32 = 2;
    pub(crate) const BOUND: u32 = 3;
    pub(crate) const NAKED: u32 = 4;
    pub(crate) const FAILED: u32 = 5;
    pub(crate) const RENEW_SENT: u32 = 6;
    pub(crate) const RELEASED: u32 = 7;
}

pub(super) fn word(phase: u32, tries: u32, seq: u32) -> u32 {
    (phase & 0xff) | ((tries & 0xff) << 8) | ((seq & 0xffff) << 16)
}
pub(super) fn phase_of(w: u32) -> u32 {
    w & 0xff
}
pub(super) fn tries_of(w: u32) -> u32 {
    (w >> 8) & 0xff
}
pub(super) fn seq_of(w: u32) -> u32 {
    w >> 16
}

#[derive(Debug, Default)]
pub(super) struct Slot {
    pub(super) state: AtomicU32,
    pub(super) sent_us: AtomicU32,
    pub(super) first_us: AtomicU32,
    pub(super) addr: AtomicU32,
    pub(super) server: AtomicU32,
}

impl Slot {
    /// Moves the client from state word `cur` to `phase` (same sequence, tries reset); false
    /// when another thread changed it first.
    pub(super) fn advance(&self, cur: u32, phase: u32) -> bool {
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
    pub(super) base: u32,
    pub(super) slots: Box<[Slot]>,
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

    /// The client index of the table's first slot (indices are unique in a run).
    pub fn base(&self) -> u32 {
        self.base
    }

    /// Clients currently bound.
    pub fn bound(&self) -> u64 {
        self.slots
            .iter()
            .filter(|s| phase_of(s.state.load(Ordering::Relaxed)) == phase::BOUND)
            .count() as u64
    }
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
}

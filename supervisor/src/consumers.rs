//! Change-ring consumers as the operator sees them: listing, dropping, and the loud log line
//! when a producer evicts a consumer that lagged a whole ring behind (the policy is in
//! [`shm_layout::ring`]'s module docs: the producer evicts, the supervisor reports).

use std::collections::HashMap;

use shm_layout::{ConsumerState, Ring};
use tracing::{error, warn};

use prodhcp_proto::{ConsumerDropped, ConsumerEntry, ConsumersData, RingConsumers};

/// A ring the supervisor has mapped, with the name operators use for it.
#[derive(Debug, Clone, Copy)]
pub struct NamedRing<'a> {
    /// Display name (`worker-0`, `supervisor`, `import`).
    pub name: &'a str,
    /// Owner id of its producer.
    pub owner: u8,
    /// The ring.
    pub ring: &'a Ring,
}

fn state_name(s: ConsumerState) -> &'static str {
    match s {
        ConsumerState::Registered => "registered",
        ConsumerState::Evicted => "evicted",
    }
}

/// The `consumers` answer.
pub fn list(rings: &[NamedRing<'_>]) -> ConsumersData {
    ConsumersData {
        rings: rings
            .iter()
            .map(|r| RingConsumers {
                ring: r.name.to_string(),
                owner: r.owner,
                head: r.ring.head(),
                capacity: r.ring.capacity(),
                evictions: r.ring.evictions(),
                consumers: r
                    .ring
                    .consumers()
                    .into_iter()
                    .map(|c| ConsumerEntry {
                        id: c.id as u32,
                        state: state_name(c.state).into(),
                        cursor: c.cursor,
                        lag: c.lag,
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// The `consumer_drop` answer: unregisters consumer `id` of ring `name`.
pub fn drop_consumer(
    rings: &[NamedRing<'_>],
    name: &str,
    id: u32,
) -> Result<ConsumerDropped, String> {
    let r = rings.iter().find(|r| r.name == name).ok_or_else(|| {
        let names: Vec<&str> = rings.iter().map(|r| r.name).collect();
        format!("no ring {name:?} (rings: {})", names.join(", "))
    })?;
    if !r.ring.unregister_consumer(id as usize) {
        return Err(format!("ring {name} has no consumer {id}"));
    }
    warn!(
        ring = name,
        consumer = id,
        "ring consumer dropped by the operator"
    );
    Ok(ConsumerDropped {
        ring: name.to_string(),
        id,
    })
}

/// Watches the rings' eviction counters and logs each new eviction.
#[derive(Debug, Default)]
pub struct EvictionWatch {
    seen: HashMap<u8, u64>,
}

impl EvictionWatch {
    /// Logs (as errors) evictions that happened since the last call. The first call per ring
    /// only notes the counter (earlier evictions were logged by an earlier run), with a warning
    /// when it is not zero.
    pub fn check(&mut self, rings: &[NamedRing<'_>]) {
        for r in rings {
            let now = r.ring.evictions();
            let Some(before) = self.seen.insert(r.owner, now) else {
                if now > 0 {
                    warn!(
                        ring = r.name,
                        evictions = now,
                        "ring consumers were evicted before this start"
                    );
                }
                continue;
            };
            if now == before {
                continue;
            }
            let evicted: Vec<String> = r
                .ring
                .consumers()
                .into_iter()
                .filter(|c| c.state == ConsumerState::Evicted)
                .map(|c| format!("{} (cursor {}, lag {})", c.id, c.cursor, c.lag))
                .collect();
            error!(
                ring = r.name,
                new_evictions = now - before,
                evictions = now,
                evicted = %evicted.join(", "),
                capacity = r.ring.capacity(),
                "ring consumer EVICTED: it lagged a whole ring behind; it has lost records and must resynchronise and register again"
            );
        }
    }
}

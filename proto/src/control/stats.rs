//! Data of the `stats` response: counters per worker and total, built from the catalogue.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::counter::{Counter, CounterGroup};

/// Counters of one worker, or the total, grouped as the catalogue ([`Counter::ALL`]) says.
///
/// Wire form: the [`CounterGroup::Packets`] counters are top-level fields (`"received": 9`),
/// the other groups are maps by [`Counter::key`]. Built only by [`Counters::from_catalogue`],
/// so a counter added to the catalogue appears here without further code.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Counters {
    /// Packet counts by name (`received`, `discover`, ..., `dropped`), flattened into the
    /// object.
    #[serde(flatten)]
    pub packets: BTreeMap<String, u64>,
    /// Drops by reason (`too_short`, `busy`, ...); their sum is `dropped`.
    pub drops: BTreeMap<String, u64>,
    /// Lease-table maintenance by the workers' sweepers: `expired` leases, `offer_expired`,
    /// `quarantine_ended` (declined addresses back in the pool), `abandoned` (slots failing
    /// their checksum taken out of service).
    pub sweeper: BTreeMap<String, u64>,
    /// Other events (`malformed_options`, `clock_step`); absent from older daemons' replies.
    pub events: BTreeMap<String, u64>,
}

impl Counters {
    /// Every counter of the catalogue with its value from `value`.
    pub fn from_catalogue(value: impl Fn(Counter) -> u64) -> Counters {
        let mut c = Counters::default();
        for &counter in Counter::ALL {
            c.group_mut(counter.group())
                .insert(counter.key().to_string(), value(counter));
        }
        c
    }

    /// The map of one group.
    pub fn group(&self, group: CounterGroup) -> &BTreeMap<String, u64> {
        match group {
            CounterGroup::Packets => &self.packets,
            CounterGroup::Drops => &self.drops,
            CounterGroup::Sweeper => &self.sweeper,
            CounterGroup::Events => &self.events,
        }
    }

    fn group_mut(&mut self, group: CounterGroup) -> &mut BTreeMap<String, u64> {
        match group {
            CounterGroup::Packets => &mut self.packets,
            CounterGroup::Drops => &mut self.drops,
            CounterGroup::Sweeper => &mut self.sweeper,
            CounterGroup::Events => &mut self.events,
        }
    }

    /// A packet count by name (`received`, ...); 0 when absent.
    pub fn packet(&self, name: &str) -> u64 {
        self.packets.get(name).copied().unwrap_or(0)
    }

    /// Adds every value of `other` (for totals).
    pub fn add(&mut self, other: &Counters) {
        for (mine, theirs) in [
            (&mut self.packets, &other.packets),
            (&mut self.drops, &other.drops),
            (&mut self.sweeper, &other.sweeper),
            (&mut self.events, &other.events),
        ] {
            for (k, v) in theirs {
                *mine.entry(k.clone()).or_default() += v;
            }
        }
    }
}

/// Counters of one worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerCounters {
    /// Worker index.
    pub id: u32,
    /// Its counters (flattened into the same object).
    #[serde(flatten)]
    pub counters: Counters,
}

/// Usage of one address pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolStats {
    /// First address of the pool.
    pub first: Ipv4Addr,
    /// Last address of the pool.
    pub last: Ipv4Addr,
    /// Number of addresses.
    pub size: u64,
    /// Free slots.
    pub free: u64,
    /// Offered slots.
    pub offered: u64,
    /// Leased slots.
    pub leased: u64,
    /// Declined slots.
    pub declined: u64,
    /// Reserved slots.
    pub reserved: u64,
}

/// Data of the `stats` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsData {
    /// Sum over all workers.
    pub total: Counters,
    /// Per worker.
    pub workers: Vec<WorkerCounters>,
    /// Per pool.
    pub pools: Vec<PoolStats>,
}

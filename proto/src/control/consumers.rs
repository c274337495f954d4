//! Data of the `consumers` and `consumer_drop` responses.

use serde::{Deserialize, Serialize};

/// One consumer of a change ring.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerEntry {
    /// Consumer id within the ring.
    pub id: u32,
    /// `registered` or `evicted`.
    pub state: String,
    /// Last sequence number it consumed.
    pub cursor: u64,
    /// Records published after its cursor.
    pub lag: u64,
}

/// One change ring and its consumers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingConsumers {
    /// Ring name (`worker-0`, `supervisor`, `import`).
    pub ring: String,
    /// Owner id of the ring's producer.
    pub owner: u8,
    /// Sequence number of the last published record.
    pub head: u64,
    /// Records the ring holds.
    pub capacity: u64,
    /// Consumers the producer has evicted from this ring for lagging a whole ring (ever).
    pub evictions: u64,
    /// Registered and evicted consumers.
    pub consumers: Vec<ConsumerEntry>,
}

/// Data of the `consumers` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumersData {
    /// One entry per ring.
    pub rings: Vec<RingConsumers>,
}

/// Data of the `consumer_drop` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerDropped {
    /// The ring.
    pub ring: String,
    /// The consumer id.
    pub id: u32,
}

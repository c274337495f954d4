//! The messages peers exchange, and their byte encoding (the plaintext inside one Noise
//! transport message).
//!
//! Encoding, hand-rolled: `version u8 · type u8 · fields`, integers big-endian, strings as
//! `u8 length · UTF-8 bytes`, lists as a count then the items. Why not serde + bincode (or
//! postcard): five small messages with fixed fields need ~150 lines here, every length is
//! checked against what is left before it is used (so random bytes are a [`DecodeError`],
//! never a panic or a large allocation), `Records` carries its ring records as one opaque
//! byte run that is copied once, and the format is explicit enough that a peer of another
//! build (another serde version, another field order) cannot silently misread it. The version
//! byte comes first so a future format can be recognised and refused cleanly.

use std::fmt;

/// Version of the peer protocol: the first byte of every message, of the handshake prologue
/// and of the clear-text preamble.
pub const PROTOCOL_VERSION: u8 = 1;
/// Bytes of one change-ring record as shipped in [`Message::Records`].
pub const RECORD_BYTES: usize = shm_layout::ring::RECORD_WORDS * 8;
/// Longest cluster or node name on the wire.
pub const MAX_NAME: usize = 255;
/// Longest refusal text on the wire.
pub const MAX_REASON: usize = 1024;

const T_HELLO: u8 = 1;
const T_REFUSE: u8 = 2;
const T_HEARTBEAT: u8 = 3;
const T_RECORDS: u8 = 4;
const T_ACK: u8 = 5;
const T_BULK: u8 = 6;
const T_BULK_DONE: u8 = 7;
const T_ROLE: u8 = 8;
const T_HANDOVER: u8 = 9;
const T_SWITCHOVER: u8 = 10;
const T_RAFT: u8 = 11;
/// Bytes of one bulk-sync entry in [`Message::Bulk`] (`crate::apply::BULK_ENTRY_BYTES`).
pub const BULK_ENTRY_BYTES: usize = 8 + 64;
/// The ring id acknowledgements of [`Message::Bulk`] chunks carry in [`Message::Ack`] (no
/// producer ring has id 0); their `seq` is the chunk's `next_slot`.
pub const BULK_ACK_RING: u8 = 0;

/// A ring's replication position: the last sequence number applied from ring `ring`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// The ring (its writer's owner id: workers 1..=64, supervisor 100, importer 101, syncd 102).
    pub ring: u8,
    /// Last applied sequence number (0: none).
    pub seq: u64,
}

/// What a node says about itself first on a new connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// [`PROTOCOL_VERSION`] of the sender.
    pub protocol_version: u8,
    /// The sender's cluster name.
    pub cluster: String,
    /// The sender's node name.
    pub node: String,
    /// Fingerprint of the sender's lease-table layout (`shm_layout::Table::fingerprint`).
    pub layout_fingerprint: u64,
    /// Last applied position per ring.
    pub positions: Vec<Position>,
}

/// Why a peer refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefuseCode {
    /// Another protocol version.
    ProtocolVersion,
    /// Another cluster name.
    ClusterName,
    /// A node name that is not a configured peer, or one that should not dial this node.
    UnknownNode,
    /// Another lease-table layout (pools differ): replication would write wrong slots.
    LayoutFingerprint,
    /// A message that does not belong at this point of the conversation.
    Protocol,
    /// A code this build does not know.
    Other(u8),
}

impl RefuseCode {
    pub(crate) fn to_byte(self) -> u8 {
        match self {
            RefuseCode::ProtocolVersion => 1,
            RefuseCode::ClusterName => 2,
            RefuseCode::UnknownNode => 3,
            RefuseCode::LayoutFingerprint => 4,
            RefuseCode::Protocol => 5,
            RefuseCode::Other(code) => code,
        }
    }

    pub(crate) fn from_byte(code: u8) -> RefuseCode {
        match code {
            1 => RefuseCode::ProtocolVersion,
            2 => RefuseCode::ClusterName,
            3 => RefuseCode::UnknownNode,
            4 => RefuseCode::LayoutFingerprint,
            5 => RefuseCode::Protocol,
            other => RefuseCode::Other(other),
        }
    }
}

impl fmt::Display for RefuseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RefuseCode::ProtocolVersion => f.write_str("protocol version mismatch"),
            RefuseCode::ClusterName => f.write_str("cluster name mismatch"),
            RefuseCode::UnknownNode => f.write_str("unknown or unexpected node"),
            RefuseCode::LayoutFingerprint => f.write_str("lease table layout mismatch"),
            RefuseCode::Protocol => f.write_str("protocol error"),
            RefuseCode::Other(code) => write!(f, "refusal code {code}"),
        }
    }
}

/// One message between peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// The first message each side sends on an authenticated connection.
    Hello(Hello),
    /// The connection is refused; the sender closes it.
    Refuse {
        /// Why, for programs.
        code: RefuseCode,
        /// Why, for people.
        reason: String,
    },
    /// Liveness, sent when nothing else was sent for a heartbeat interval.
    Heartbeat {
        /// The sender's monotonic clock, milliseconds since its syncd started.
        monotonic_ms: u64,
    },
    /// Change-ring records, in order, from one ring.
    Records {
        /// The ring.
        ring: u8,
        /// Sequence number of the first record.
        first_seq: u64,
        /// The records, [`RECORD_BYTES`] each, uninterpreted here.
        data: Vec<u8>,
    },
    /// One chunk of a bulk sync: the non-pristine slots of a run of the sender's table, in
    /// slot order, [`BULK_ENTRY_BYTES`] each (`crate::apply::bulk_entry_to_bytes`). Answered by
    /// an [`Message::Ack`] of ring [`BULK_ACK_RING`] and seq `next_slot`.
    Bulk {
        /// The first slot after this chunk (progress; `slot_count` on the last chunk).
        next_slot: u32,
        /// The sender's table slot count.
        slot_count: u32,
        /// The entries (may be empty: a run of pristine slots).
        data: Vec<u8>,
    },
    /// The bulk walk is finished; the ring records after `positions` follow (the heads of the
    /// sender's rings noted before the walk started). The receiver takes them as its
    /// positions for the sender's rings.
    BulkDone {
        /// Per ring of the sender: the head noted before the walk.
        positions: Vec<Position>,
    },
    /// The sender's role, sent when a link comes up and whenever its role or its view of
    /// the receiver changes.
    Role {
        /// The sender's role.
        role: crate::role::Role,
        /// The sender's replicator says the receiver has everything the sender has.
        you_in_sync: bool,
    },
    /// Switchover: the active hands its role to the receiver, which becomes active once it
    /// applied the sender's rings up to `positions` (the sender's heads, every one of them
    /// already acknowledged by the receiver).
    Handover {
        /// Per ring of the sender: its head.
        positions: Vec<Position>,
    },
    /// The operator asked a non-serving node for a switchover: it asks the serving node to
    /// hand over to `to`.
    SwitchoverRequest {
        /// The target node.
        to: String,
    },
    /// One message of the cluster's Raft group ([`crate::consensus`]): the encoded raft
    /// message, at most [`crate::consensus::MAX_RAFT_MESSAGE`] bytes, uninterpreted here.
    Raft {
        /// The encoded raft message.
        data: Vec<u8>,
    },
    /// Everything of `ring` up to `seq` was applied.
    Ack {
        /// The ring.
        ring: u8,
        /// Last applied sequence number.
        seq: u64,
    },
}

/// Why bytes are not a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The message ends before a field.
    #[error("message truncated in {0}")]
    Truncated(&'static str),
    /// The first byte is another protocol version.
    #[error("message of protocol version {0} (this node speaks {PROTOCOL_VERSION})")]
    Version(u8),
    /// An unknown message type.
    #[error("unknown message type {0}")]
    UnknownType(u8),
    /// Bytes after the last field.
    #[error("{0} bytes after the end of the message")]
    Trailing(usize),
    /// A string that is not UTF-8.
    #[error("{0} is not UTF-8")]
    NotUtf8(&'static str),
    /// A `Records` payload that is empty or not whole records.
    #[error("records payload of {0} bytes is not a positive multiple of {RECORD_BYTES}")]
    RecordsLength(usize),
    /// A length field above its limit.
    #[error("{0} is longer than allowed")]
    TooLong(&'static str),
    /// A `Bulk` payload that is not whole entries.
    #[error("bulk payload of {0} bytes is not a multiple of {BULK_ENTRY_BYTES}")]
    BulkLength(usize),
    /// A `Raft` payload that is empty or larger than a raft message may be.
    #[error("raft payload of {0} bytes is empty or too long")]
    RaftLength(usize),
    /// A role code no role has, or an in-sync flag that is not 0 or 1.
    #[error("role message with unknown value {0}")]
    BadRole(u8),
}

/// Why a message cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A string or list longer than its length field allows.
    #[error("{0} is too long for the wire")]
    TooLong(&'static str),
    /// A `Records` payload that is empty or not whole records.
    #[error("records payload of {0} bytes is not a positive multiple of {RECORD_BYTES}")]
    RecordsLength(usize),
    /// A `Bulk` payload that is not whole entries.
    #[error("bulk payload of {0} bytes is not a multiple of {BULK_ENTRY_BYTES}")]
    BulkLength(usize),
    /// A `Raft` payload that is empty or larger than a raft message may be.
    #[error("raft payload of {0} bytes is empty or too long")]
    RaftLength(usize),
}

/// A raft payload is never empty (raft messages always carry a type and a term) and at most
/// [`crate::consensus::MAX_RAFT_MESSAGE`] bytes.
fn raft_length_ok(len: usize) -> bool {
    (1..=crate::consensus::MAX_RAFT_MESSAGE).contains(&len)
}

fn put_positions(out: &mut Vec<u8>, positions: &[Position]) -> Result<(), EncodeError> {
    let count = u8::try_from(positions.len()).map_err(|_| EncodeError::TooLong("position list"))?;
    out.push(count);
    for p in positions {
        out.push(p.ring);
        out.extend_from_slice(&p.seq.to_be_bytes());
    }
    Ok(())
}

fn put_str(out: &mut Vec<u8>, s: &str, max: usize, what: &'static str) -> Result<(), EncodeError> {
    if s.len() > max {
        return Err(EncodeError::TooLong(what));
    }
    if max <= usize::from(u8::MAX) {
        out.push(s.len() as u8);
    } else {
        out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    }
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

impl Message {
    /// Appends the encoded message to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        out.push(PROTOCOL_VERSION);
        match self {
            Message::Hello(hello) => {
                out.push(T_HELLO);
                out.push(hello.protocol_version);
                put_str(out, &hello.cluster, MAX_NAME, "cluster name")?;
                put_str(out, &hello.node, MAX_NAME, "node name")?;
                out.extend_from_slice(&hello.layout_fingerprint.to_be_bytes());
                put_positions(out, &hello.positions)?;
            }
            Message::Refuse { code, reason } => {
                out.push(T_REFUSE);
                out.push(code.to_byte());
                put_str(out, reason, MAX_REASON, "refusal reason")?;
            }
            Message::Heartbeat { monotonic_ms } => {
                out.push(T_HEARTBEAT);
                out.extend_from_slice(&monotonic_ms.to_be_bytes());
            }
            Message::Records {
                ring,
                first_seq,
                data,
            } => {
                if data.is_empty() || !data.len().is_multiple_of(RECORD_BYTES) {
                    return Err(EncodeError::RecordsLength(data.len()));
                }
                out.push(T_RECORDS);
                out.push(*ring);
                out.extend_from_slice(&first_seq.to_be_bytes());
                out.extend_from_slice(data);
            }
            Message::Bulk {
                next_slot,
                slot_count,
                data,
            } => {
                if !data.len().is_multiple_of(BULK_ENTRY_BYTES) {
                    return Err(EncodeError::BulkLength(data.len()));
                }
                out.push(T_BULK);
                out.extend_from_slice(&next_slot.to_be_bytes());
                out.extend_from_slice(&slot_count.to_be_bytes());
                out.extend_from_slice(data);
            }
            Message::BulkDone { positions } => {
                out.push(T_BULK_DONE);
                put_positions(out, positions)?;
            }
            Message::Role { role, you_in_sync } => {
                out.push(T_ROLE);
                out.push(role.code());
                out.push(u8::from(*you_in_sync));
            }
            Message::Handover { positions } => {
                out.push(T_HANDOVER);
                put_positions(out, positions)?;
            }
            Message::SwitchoverRequest { to } => {
                out.push(T_SWITCHOVER);
                put_str(out, to, MAX_NAME, "node name")?;
            }
            Message::Raft { data } => {
                if !raft_length_ok(data.len()) {
                    return Err(EncodeError::RaftLength(data.len()));
                }
                out.push(T_RAFT);
                out.extend_from_slice(data);
            }
            Message::Ack { ring, seq } => {
                out.push(T_ACK);
                out.push(*ring);
                out.extend_from_slice(&seq.to_be_bytes());
            }
        }
        Ok(())
    }

    /// The encoded message.
    pub fn to_bytes(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::new();
        self.encode(&mut out)?;
        Ok(out)
    }

    /// Reads one message; every byte must belong to it.
    pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
        let mut r = Reader { bytes };
        let version = r.u8("version")?;
        if version != PROTOCOL_VERSION {
            return Err(DecodeError::Version(version));
        }
        let message = match r.u8("type")? {
            T_HELLO => {
                let protocol_version = r.u8("hello")?;
                let cluster = r.str8("cluster name")?;
                let node = r.str8("node name")?;
                let layout_fingerprint = r.u64("hello")?;
                let positions = r.positions("hello")?;
                Message::Hello(Hello {
                    protocol_version,
                    cluster,
                    node,
                    layout_fingerprint,
                    positions,
                })
            }
            T_REFUSE => {
                let code = RefuseCode::from_byte(r.u8("refuse")?);
                let len = usize::from(r.u16("refuse")?);
                if len > MAX_REASON {
                    return Err(DecodeError::TooLong("refusal reason"));
                }
                let reason = r.utf8(len, "refusal reason")?;
                Message::Refuse { code, reason }
            }
            T_HEARTBEAT => Message::Heartbeat {
                monotonic_ms: r.u64("heartbeat")?,
            },
            T_RECORDS => {
                let ring = r.u8("records")?;
                let first_seq = r.u64("records")?;
                let data = std::mem::take(&mut r.bytes);
                if data.is_empty() || !data.len().is_multiple_of(RECORD_BYTES) {
                    return Err(DecodeError::RecordsLength(data.len()));
                }
                Message::Records {
                    ring,
                    first_seq,
                    data: data.to_vec(),
                }
            }
            T_BULK => {
                let next_slot = r.u32("bulk")?;
                let slot_count = r.u32("bulk")?;
                let data = std::mem::take(&mut r.bytes);
                if !data.len().is_multiple_of(BULK_ENTRY_BYTES) {
                    return Err(DecodeError::BulkLength(data.len()));
                }
                Message::Bulk {
                    next_slot,
                    slot_count,
                    data: data.to_vec(),
                }
            }
            T_BULK_DONE => {
                let positions = r.positions("bulk done")?;
                Message::BulkDone { positions }
            }
            T_ROLE => {
                let code = r.u8("role")?;
                let role = crate::role::Role::from_code(code).ok_or(DecodeError::BadRole(code))?;
                let you_in_sync = match r.u8("role")? {
                    0 => false,
                    1 => true,
                    other => return Err(DecodeError::BadRole(other)),
                };
                Message::Role { role, you_in_sync }
            }
            T_HANDOVER => {
                let positions = r.positions("handover")?;
                Message::Handover { positions }
            }
            T_SWITCHOVER => Message::SwitchoverRequest {
                to: r.str8("node name")?,
            },
            T_RAFT => {
                let data = std::mem::take(&mut r.bytes);
                if !raft_length_ok(data.len()) {
                    return Err(DecodeError::RaftLength(data.len()));
                }
                Message::Raft {
                    data: data.to_vec(),
                }
            }
            T_ACK => Message::Ack {
                ring: r.u8("ack")?,
                seq: r.u64("ack")?,
            },
            other => return Err(DecodeError::UnknownType(other)),
        };
        if !r.bytes.is_empty() {
            return Err(DecodeError::Trailing(r.bytes.len()));
        }
        Ok(message)
    }

    /// The message's name, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Hello(_) => "hello",
            Message::Refuse { .. } => "refuse",
            Message::Heartbeat { .. } => "heartbeat",
            Message::Records { .. } => "records",
            Message::Bulk { .. } => "bulk",
            Message::BulkDone { .. } => "bulk-done",
            Message::Ack { .. } => "ack",
            Message::Role { .. } => "role",
            Message::Handover { .. } => "handover",
            Message::SwitchoverRequest { .. } => "switchover-request",
            Message::Raft { .. } => "raft",
        }
    }
}

/// A cursor over the bytes of one message; every read is bounds-checked.
pub(crate) struct Reader<'a> {
    pub(crate) bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A count byte, then that many positions.
    fn positions(&mut self, what: &'static str) -> Result<Vec<Position>, DecodeError> {
        let count = self.u8(what)?;
        let mut positions = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            let ring = self.u8("position")?;
            let seq = self.u64("position")?;
            positions.push(Position { ring, seq });
        }
        Ok(positions)
    }

    pub(crate) fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.bytes.len() < n {
            return Err(DecodeError::Truncated(what));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8, what)?);
        Ok(u64::from_be_bytes(a))
    }

    fn utf8(&mut self, len: usize, what: &'static str) -> Result<String, DecodeError> {
        let b = self.take(len, what)?;
        std::str::from_utf8(b)
            .map(str::to_string)
            .map_err(|_| DecodeError::NotUtf8(what))
    }

    pub(crate) fn str8(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let len = usize::from(self.u8(what)?);
        self.utf8(len, what)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn samples() -> Vec<Message> {
        vec![
            Message::Hello(Hello {
                protocol_version: PROTOCOL_VERSION,
                cluster: "pop1".into(),
                node: "a".into(),
                layout_fingerprint: 0x0123_4567_89ab_cdef,
                positions: vec![
                    Position { ring: 1, seq: 7 },
                    Position {
                        ring: 100,
                        seq: u64::MAX,
                    },
                ],
            }),
            Message::Hello(Hello {
                protocol_version: 9,
                cluster: String::new(),
                node: "n".repeat(255),
                layout_fingerprint: 0,
                positions: vec![],
            }),
            Message::Refuse {
                code: RefuseCode::LayoutFingerprint,
                reason: "lease table layout 1 differs from 2 — é".into(),
            },
            Message::Refuse {
                code: RefuseCode::Other(200),
                reason: String::new(),
            },
            Message::Heartbeat { monotonic_ms: 0 },
            Message::Heartbeat {
                monotonic_ms: 1 << 40,
            },
            Message::Records {
                ring: 3,
                first_seq: 42,
                data: (0..RECORD_BYTES * 3).map(|i| i as u8).collect(),
            },
            Message::Ack { ring: 102, seq: 99 },
            Message::Bulk {
                next_slot: 448,
                slot_count: 1 << 20,
                data: (0..BULK_ENTRY_BYTES * 2).map(|i| i as u8).collect(),
            },
            Message::Bulk {
                next_slot: 7,
                slot_count: 7,
                data: vec![],
            },
            Message::BulkDone {
                positions: vec![Position { ring: 1, seq: 9 }, Position { ring: 101, seq: 0 }],
            },
            Message::BulkDone { positions: vec![] },
            Message::Role {
                role: crate::role::Role::ActiveAlone,
                you_in_sync: true,
            },
            Message::Role {
                role: crate::role::Role::Waiting,
                you_in_sync: false,
            },
            Message::Handover {
                positions: vec![
                    Position { ring: 1, seq: 77 },
                    Position { ring: 100, seq: 3 },
                ],
            },
            Message::SwitchoverRequest { to: "b".into() },
            Message::Raft {
                data: vec![8, 1, 16, 2, 24, 1],
            },
            Message::Raft {
                data: vec![0xa5; crate::consensus::MAX_RAFT_MESSAGE],
            },
        ]
    }

    #[test]
    fn every_message_round_trips() {
        for message in samples() {
            let bytes = message.to_bytes().unwrap();
            assert_eq!(bytes[0], PROTOCOL_VERSION);
            assert_eq!(Message::decode(&bytes), Ok(message.clone()), "{message:?}");
        }
    }

    #[test]
    fn the_encoding_is_pinned() {
        let ack = Message::Ack { ring: 7, seq: 258 }.to_bytes().unwrap();
        assert_eq!(ack, [1, 5, 7, 0, 0, 0, 0, 0, 0, 1, 2]);
        let hb = Message::Heartbeat { monotonic_ms: 5 }.to_bytes().unwrap();
        assert_eq!(hb, [1, 3, 0, 0, 0, 0, 0, 0, 0, 5]);
    }

    #[test]
    fn malformed_messages_are_errors() {
        let records = Message::Records {
            ring: 1,
            first_seq: 1,
            data: vec![0; RECORD_BYTES],
        }
        .to_bytes()
        .unwrap();
        assert_eq!(
            Message::decode(&records[..records.len() - 1]),
            Err(DecodeError::RecordsLength(RECORD_BYTES - 1))
        );
        assert_eq!(
            Message::decode(&records[..12]),
            Err(DecodeError::RecordsLength(1))
        );
        assert_eq!(
            Message::decode(&records[..11]),
            Err(DecodeError::RecordsLength(0))
        );
        assert_eq!(Message::decode(&[]), Err(DecodeError::Truncated("version")));
        assert_eq!(Message::decode(&[2, 3]), Err(DecodeError::Version(2)));
        assert_eq!(Message::decode(&[1, 77]), Err(DecodeError::UnknownType(77)));
        assert_eq!(Message::decode(&[1, 8, 0, 0]), Err(DecodeError::BadRole(0)));
        assert_eq!(Message::decode(&[1, 8, 4, 2]), Err(DecodeError::BadRole(2)));
        assert_eq!(
            Message::decode(&[1, 8, 4]),
            Err(DecodeError::Truncated("role"))
        );
        assert_eq!(
            Message::decode(&[1, 3, 0, 0]),
            Err(DecodeError::Truncated("heartbeat"))
        );
        let mut hb = Message::Heartbeat { monotonic_ms: 1 }.to_bytes().unwrap();
        hb.push(0);
        assert_eq!(Message::decode(&hb), Err(DecodeError::Trailing(1)));
        assert_eq!(
            Message::decode(&[1, 2, 4, 0, 2, 0xff, 0xfe]),
            Err(DecodeError::NotUtf8("refusal reason"))
        );
        let mut long = vec![1, 2, 4, 0x04, 0x01];
        long.extend_from_slice(&[b'x'; MAX_REASON + 1]);
        assert_eq!(
            Message::decode(&long),
            Err(DecodeError::TooLong("refusal reason"))
        );
        assert_eq!(
            Message::Records {
                ring: 1,
                first_seq: 1,
                data: vec![]
            }
            .to_bytes(),
            Err(EncodeError::RecordsLength(0))
        );
        assert_eq!(
            Message::Refuse {
                code: RefuseCode::Protocol,
                reason: "x".repeat(MAX_REASON + 1)
            }
            .to_bytes(),
            Err(EncodeError::TooLong("refusal reason"))
        );
    }

    #[test]
    fn raft_messages_are_pinned_and_bounded() {
        let raft = Message::Raft {
            data: vec![8, 1, 16, 2],
        };
        assert_eq!(raft.to_bytes().unwrap(), [1, 11, 8, 1, 16, 2]);
        assert_eq!(raft.kind(), "raft");
        assert_eq!(Message::decode(&[1, 11]), Err(DecodeError::RaftLength(0)));
        let max = crate::consensus::MAX_RAFT_MESSAGE;
        let mut long = vec![1, 11];
        long.extend(std::iter::repeat_n(0u8, max + 1));
        assert_eq!(
            Message::decode(&long),
            Err(DecodeError::RaftLength(max + 1))
        );
        assert_eq!(
            Message::Raft { data: vec![] }.to_bytes(),
            Err(EncodeError::RaftLength(0))
        );
        assert_eq!(
            Message::Raft {
                data: vec![0; max + 1]
            }
            .to_bytes(),
            Err(EncodeError::RaftLength(max + 1))
        );
        // The largest fits in one sealed frame.
        let largest = Message::Raft { data: vec![0; max] }.to_bytes().unwrap();
        assert!(largest.len() <= crate::link::MAX_MESSAGE_LEN);
    }

    #[test]
    fn malformed_bulk_messages_are_errors() {
        let bulk = Message::Bulk {
            next_slot: 1,
            slot_count: 2,
            data: vec![0; BULK_ENTRY_BYTES],
        }
        .to_bytes()
        .unwrap();
        assert_eq!(
            Message::decode(&bulk[..bulk.len() - 1]),
            Err(DecodeError::BulkLength(BULK_ENTRY_BYTES - 1))
        );
        assert_eq!(
            Message::decode(&bulk[..6]),
            Err(DecodeError::Truncated("bulk"))
        );
        assert_eq!(
            Message::decode(&[1, 7, 2, 1, 0, 0]),
            Err(DecodeError::Truncated("position"))
        );
        assert_eq!(
            Message::Bulk {
                next_slot: 0,
                slot_count: 0,
                data: vec![0; 5]
            }
            .to_bytes(),
            Err(EncodeError::BulkLength(5))
        );
        assert_eq!(
            crate::apply::BULK_ENTRY_BYTES,
            BULK_ENTRY_BYTES,
            "one entry size"
        );
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = Message::decode(&bytes);
        }

        #[test]
        fn mutated_messages_never_panic(
            which in 0usize..18,
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
            cut in any::<usize>(),
        ) {
            let mut bytes = samples()[which].to_bytes().unwrap();
            for (at, x) in flips {
                let n = bytes.len();
                bytes[at % n] ^= x;
            }
            let keep = cut % (bytes.len() + 1);
            bytes.truncate(keep);
            if let Ok(m) = Message::decode(&bytes) {
                // Whatever decodes re-encodes to the same bytes.
                prop_assert_eq!(m.to_bytes().unwrap(), bytes);
            }
        }
    }
}

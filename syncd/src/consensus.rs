//! Who may be active in a cluster of three or more appliances: a Raft group of every configured
//! node, driven from syncd's loop (issue 8 item 5, the majority side).
//!
//! [`Consensus`] wraps `raft::RawNode` (tikv/raft-rs). It elects one leader among the nodes
//! that can reach a majority and fences a stale one: a leader that stops hearing a majority
//! steps down (raft's `check_quorum`), and [`Consensus::leader_has_quorum`] tells the role logic
//! sooner, from the acknowledgements themselves, so a minority side stops serving before the
//! majority can have elected another leader. `pre_vote` keeps a node that was cut off from
//! raising the term when it comes back, so a healed partition does not depose the majority's
//! leader. Nothing is ever proposed: the log holds only the empty entry each new leader
//! appends; the lease records keep flowing over syncd's own ring shipping
//! ([`crate::replicate`]).
//!
//! # Why raft-rs
//!
//! The issue asks not to hand-roll majority logic. raft-rs is the Raft TiKV runs in production
//! (ported from etcd's raft, with its test suite); it is synchronous and tick-driven — no
//! threads, no timers, no I/O of its own: the caller ticks it, steps received messages into
//! it and sends what its `Ready` hands out — so it drops into syncd's mio loop the way snow did
//! for the transport. Built as version 0.7 with the `protobuf-codec` feature (rust-protobuf 2,
//! whose generated code ships in the crate): the `prost-codec` feature needs a `protoc` binary
//! at build time, which the build machines do not have, and raft-rs depends on rust-protobuf
//! either way. Caveat: rust-protobuf 2 is no longer developed (3.x is); its parser limits
//! message nesting to 100 and does not recurse into unknown groups, and only authenticated
//! peers reach this parser at all.
//!
//! Use it with three or more nodes: a pair has no majority once one side is lost, which is why
//! a pair serves by shares instead ([`crate::role`]).
//!
//! # Node ids
//!
//! Raft ids are the 1-based position of the node's name in the sorted list of every
//! configured node (this node and its peers), so every node derives the same ids from the same
//! cluster file.
//!
//! # Timing
//!
//! The loop calls [`Consensus::tick`] every [`TICK`]. With [`ELECTION_TICKS`] and
//! [`HEARTBEAT_TICKS`] a silent leader is replaced within `2 × ELECTION_TICKS` ticks (raft's
//! randomised election timeout is drawn from `[election, 2 × election)` ticks after the last
//! heartbeat): under 1 s; the simulated 3-node cluster in the tests measured a mean of 12.3
//! ticks (615 ms) and a maximum of 19 (950 ms) over 300 losses. When the link to
//! the leader closes (its processes died), [`Consensus::peer_link_down`] ends the leader's
//! lease at once and the lowest-id survivor campaigns at its next tick: a new leader within a
//! tick or two.
//!
//! # Untrusted input
//!
//! raft-rs trusts what its peers send: a well-formed message with inconsistent fields (a commit
//! past the log's end, a response acknowledging entries the leader never had) makes it panic.
//! Peers are authenticated by the cluster key and every frame is sealed, so such a message can
//! only come from a bug; still, [`Consensus::step`] accepts only what raft-rs itself sends
//! between peers (the types below, sender and receiver ids matching the link, no snapshot, log
//! entries empty and consecutive, indexes within this node's log) and returns a
//! [`ConsensusError`] for anything else. Raft tolerates crashed and cut-off nodes, not lying
//! ones: a node holding the cluster key that fabricates a consistent but false history is
//! outside its model.
//!
//! # Restarts
//!
//! Raft's safety needs each node's term, vote and log to survive a restart (a node that forgets
//! its vote can vote twice in one term; one that forgets its log can elect a leader missing
//! entries a majority acknowledged, which raft-rs meets with a panic later). With a state file
//! ([`Consensus::open`]) every change is written there (temporary file, fsync, rename) before
//! any message that depends on it leaves [`Consensus::outbox`]. The log is raft's empty entries
//! only: 8 bytes per election in the file. [`Consensus::new`] keeps everything in memory (tests,
//! and a node that restarts as if new — safe only while no election is under way).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, EntryType, HardState, Message as RaftMessage, MessageType};
use raft::storage::MemStorage;
use raft::{Config, RawNode, StateRole, Storage};

/// How often syncd's loop calls [`Consensus::tick`].
pub const TICK: Duration = Duration::from_millis(50);
/// Default election timeout in ticks (raft randomises it within `[this, 2 × this)`).
pub const ELECTION_TICKS: usize = 10;
/// Default leader heartbeat interval in ticks.
pub const HEARTBEAT_TICKS: usize = 2;
/// Largest encoded raft message accepted or sent: one [`crate::Message::Raft`] travels in one
/// syncd frame ([`crate::link::MAX_MESSAGE_LEN`]); raft's `max_size_per_msg` keeps appends
/// well below it.
pub const MAX_RAFT_MESSAGE: usize = 16 * 1024;
/// Bytes of log entries per append message (raft's `max_size_per_msg`).
const MAX_APPEND_BYTES: u64 = 8 * 1024;
/// Most append messages in flight per follower (raft's `max_inflight_msgs`).
const MAX_INFLIGHT: usize = 16;
/// Most `Ready` rounds handled by one [`Consensus::outbox`] call.
const MAX_READY_ROUNDS: usize = 8;

/// Why a [`Consensus`] call failed.
#[derive(Debug, thiserror::Error)]
pub enum ConsensusError {
    /// A node name that is not in the cluster.
    #[error("node {0:?} is not a node of the cluster")]
    UnknownNode(String),
    /// The same node name twice in the cluster list.
    #[error("node {0:?} is listed twice")]
    DuplicateNode(String),
    /// Timing that raft refuses (e.g. an election timeout not above the heartbeat interval).
    #[error("consensus configuration: {0}")]
    Config(raft::Error),
    /// Bytes from a peer that are not a raft message, or a message raft-rs would not send.
    #[error("raft message from {from}: {reason}")]
    Malformed {
        /// The sending peer.
        from: String,
        /// What is wrong with it.
        reason: String,
    },
    /// raft refused a well-formed message.
    #[error("raft refused the message from {from}: {source}")]
    Step {
        /// The sending peer.
        from: String,
        /// raft's reason.
        source: raft::Error,
    },
    /// A leader-only operation on a node that is not the leader.
    #[error("this node is not the leader")]
    NotLeader,
    /// The state file cannot be read or written.
    #[error("consensus state file {}: {source}", path.display())]
    StateIo {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The state file is damaged.
    #[error("consensus state file {} is damaged: {reason}", path.display())]
    StateCorrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Message types raft-rs sends between peers that this cluster uses. Snapshots (never needed:
/// the log is never compacted), proposals and read-index requests (never used) and leader
/// transfer requests (only [`Consensus::transfer_leader`] on the leader starts one) are refused.
const NETWORK_TYPES: [MessageType; 9] = [
    MessageType::MsgAppend,
    MessageType::MsgAppendResponse,
    MessageType::MsgRequestVote,
    MessageType::MsgRequestVoteResponse,
    MessageType::MsgRequestPreVote,
    MessageType::MsgRequestPreVoteResponse,
    MessageType::MsgHeartbeat,
    MessageType::MsgHeartbeatResponse,
    MessageType::MsgTimeoutNow,
];

/// Decodes one raft message as carried by [`crate::Message::Raft`], with the size limit; no
/// check of its fields (that is [`Consensus::step`]'s).
pub fn decode_raft_message(bytes: &[u8]) -> Result<RaftMessage, String> {
    if bytes.len() > MAX_RAFT_MESSAGE {
        return Err(format!(
            "{} bytes, more than {MAX_RAFT_MESSAGE}",
            bytes.len()
        ));
    }
    RaftMessage::parse_from_bytes(bytes).map_err(|e| format!("not a raft message: {e}"))
}

/// One node's part in the cluster's Raft group. See the module docs.
pub struct Consensus {
    raw: RawNode<MemStorage>,
    /// Every node's name, sorted: raft id `i` is `names[i - 1]`.
    names: Vec<String>,
    me: u64,
    election_ticks: usize,
    heartbeat_ticks: usize,
    /// Ticks since start.
    ticks: u64,
    /// Per peer: (term, tick) of its last append or heartbeat response to this node as leader.
    last_ack: HashMap<u64, (u64, u64)>,
    state_file: Option<PathBuf>,
}

impl std::fmt::Debug for Consensus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consensus")
            .field("me", &self.names[self.me as usize - 1])
            .field("term", &self.term())
            .field("role", &self.raw.raft.state)
            .field("leader", &self.leader())
            .finish()
    }
}

impl Consensus {
    /// A node `me` of the cluster `all_nodes` (`me` included or not, any order), its state in
    /// memory only (see "Restarts" in the module docs).
    pub fn new(
        me: &str,
        all_nodes: &[String],
        election_ticks: usize,
        heartbeat_ticks: usize,
    ) -> Result<Consensus, ConsensusError> {
        Consensus::build(me, all_nodes, election_ticks, heartbeat_ticks, None)
    }

    /// Like [`Consensus::new`], with term, vote and log kept in `state_file` (created if
    /// missing; written before any message that depends on it is handed out). A file written
    /// for another set of node names is set aside (renamed `*.stale`) and the node starts new.
    pub fn open(
        me: &str,
        all_nodes: &[String],
        election_ticks: usize,
        heartbeat_ticks: usize,
        state_file: &Path,
    ) -> Result<Consensus, ConsensusError> {
        Consensus::build(
            me,
            all_nodes,
            election_ticks,
            heartbeat_ticks,
            Some(state_file),
        )
    }

    fn build(
        me: &str,
        all_nodes: &[String],
        election_ticks: usize,
        heartbeat_ticks: usize,
        state_file: Option<&Path>,
    ) -> Result<Consensus, ConsensusError> {
        let mut names: Vec<String> = all_nodes.to_vec();
        if !names.iter().any(|n| n == me) {
            names.push(me.to_string());
        }
        names.sort();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(ConsensusError::DuplicateNode(w[0].clone()));
        }
        let id = names.iter().position(|n| n == me).expect("me was added") as u64 + 1;
        let voters: Vec<u64> = (1..=names.len() as u64).collect();
        let storage = MemStorage::new_with_conf_state(ConfState::from((voters, vec![])));
        let mut applied = 0;
        if let Some(path) = state_file {
            if let Some(saved) = state_file::load(path, &names)? {
                let entries: Vec<Entry> = saved
                    .entry_terms
                    .iter()
                    .enumerate()
                    .map(|(i, &term)| Entry {
                        index: i as u64 + 1,
                        term,
                        ..Default::default()
                    })
                    .collect();
                let mut store = storage.wl();
                store
                    .append(&entries)
                    .map_err(|e| ConsensusError::StateCorrupt {
                        path: path.to_path_buf(),
                        reason: e.to_string(),
                    })?;
                store.set_hardstate(saved.hard_state.clone());
                applied = saved.hard_state.commit;
            }
        }
        let mut config = Config::new(id);
        config.election_tick = election_ticks;
        config.heartbeat_tick = heartbeat_ticks;
        config.check_quorum = true;
        config.pre_vote = true;
        config.max_size_per_msg = MAX_APPEND_BYTES;
        config.max_inflight_msgs = MAX_INFLIGHT;
        config.applied = applied;
        config.validate().map_err(ConsensusError::Config)?;
        let logger = slog::Logger::root(TracingDrain, slog::o!("raft_node" => me.to_string()));
        let raw = RawNode::new(&config, storage, &logger).map_err(ConsensusError::Config)?;
        Ok(Consensus {
            raw,
            names,
            me: id,
            election_ticks,
            heartbeat_ticks,
            ticks: 0,
            last_ack: HashMap::new(),
            state_file: state_file.map(Path::to_path_buf),
        })
    }

    /// Every node's name, sorted (raft id `i` is element `i - 1`).
    pub fn nodes(&self) -> &[String] {
        &self.names
    }

    fn id_of(&self, name: &str) -> Option<u64> {
        self.names
            .iter()
            .position(|n| n == name)
            .map(|i| i as u64 + 1)
    }

    fn name_of(&self, id: u64) -> Option<&str> {
        let i = usize::try_from(id.checked_sub(1)?).ok()?;
        self.names.get(i).map(String::as_str)
    }

    /// Advances raft's clock by one [`TICK`] (elections, heartbeats, the leader's quorum check).
    pub fn tick(&mut self) {
        self.ticks += 1;
        self.raw.tick();
    }

    /// Hands raft one message `bytes` (an encoded raft message, the payload of
    /// [`crate::Message::Raft`]) received from peer `from`. Anything raft-rs would not have sent
    /// is an error and changes nothing.
    pub fn step(&mut self, from: &str, bytes: &[u8]) -> Result<(), ConsensusError> {
        let from_id = self
            .id_of(from)
            .filter(|&id| id != self.me)
            .ok_or_else(|| ConsensusError::UnknownNode(from.to_string()))?;
        let malformed = |reason: String| ConsensusError::Malformed {
            from: from.to_string(),
            reason,
        };
        let mut m = decode_raft_message(bytes).map_err(malformed)?;
        self.check_incoming(from_id, &mut m).map_err(malformed)?;
        let (msg_type, term) = (m.get_msg_type(), m.term);
        self.raw.step(m).map_err(|source| ConsensusError::Step {
            from: from.to_string(),
            source,
        })?;
        if self.is_leader()
            && term == self.term()
            && matches!(
                msg_type,
                MessageType::MsgAppendResponse | MessageType::MsgHeartbeatResponse
            )
        {
            self.last_ack.insert(from_id, (term, self.ticks));
        }
        Ok(())
    }

    /// Accepts only what raft-rs sends between peers (see "Untrusted input" in the module
    /// docs); lowers a heartbeat's commit index to this node's (raft-rs would otherwise trust
    /// it to lie within this node's log).
    fn check_incoming(&self, from_id: u64, m: &mut RaftMessage) -> Result<(), String> {
        let t = m.get_msg_type();
        if !NETWORK_TYPES.contains(&t) {
            return Err(format!("{t:?} is not accepted from peers"));
        }
        if m.from != from_id || m.to != self.me {
            return Err(format!(
                "{t:?} addressed from {} to {}, but the link is from {from_id} to {}",
                m.from, m.to, self.me
            ));
        }
        if m.term == 0 {
            return Err(format!("{t:?} without a term"));
        }
        if m.has_snapshot() || m.request_snapshot != 0 {
            return Err(format!("{t:?} with a snapshot (never used here)"));
        }
        let last_index = self.raw.raft.raft_log.last_index();
        match t {
            MessageType::MsgAppend => {
                // Every entry has a term from 1 on (raft-rs reads the term of an index past its
                // log as 0, so a zero term there would "match" and commit past the log's end).
                if (m.index == 0) != (m.log_term == 0) {
                    return Err(format!(
                        "previous entry {} with term {}",
                        m.index, m.log_term
                    ));
                }
                let mut prev_term = m.log_term.max(1);
                for (i, e) in m.entries.iter().enumerate() {
                    let want = m
                        .index
                        .checked_add(i as u64 + 1)
                        .ok_or("entry index overflows")?;
                    if e.get_entry_type() != EntryType::EntryNormal
                        || !e.data.is_empty()
                        || !e.context.is_empty()
                    {
                        return Err("an entry that is not one of raft's empty entries".into());
                    }
                    if e.index != want || e.term < prev_term || e.term > m.term {
                        return Err(format!(
                            "entry {i} has index {} term {} after term {prev_term} \
                             (want index {want}, terms rising up to {})",
                            e.index, e.term, m.term
                        ));
                    }
                    prev_term = e.term;
                }
                if m.log_term > m.term {
                    return Err("previous entry's term after the message's".into());
                }
            }
            MessageType::MsgAppendResponse
                if m.index > last_index || m.reject_hint > last_index =>
            {
                return Err(format!(
                    "append response for index {} (hint {}) past this log's end {last_index}",
                    m.index, m.reject_hint
                ));
            }
            MessageType::MsgHeartbeat => {
                m.commit = m.commit.min(self.raw.raft.raft_log.committed);
            }
            // raft-rs campaigns on any `MsgTimeoutNow`, past pre-vote and leases; only the
            // current leader sends one (for a transfer to this node, after acknowledgements).
            MessageType::MsgTimeoutNow
                if m.from != self.raw.raft.leader_id || m.term != self.term() =>
            {
                return Err("leader transfer from a node that is not this term's leader".into());
            }
            _ => {}
        }
        if t != MessageType::MsgAppend && !m.entries.is_empty() {
            return Err(format!("{t:?} with log entries"));
        }
        Ok(())
    }

    /// Handles raft's `Ready` (persists the term, vote and new entries, skips committed entries
    /// — nothing is proposed, so there is nothing to apply) and returns the messages to send:
    /// `(peer name, encoded raft message)`, each to go in one [`crate::Message::Raft`]. Call
    /// after every [`Consensus::tick`], [`Consensus::step`] batch and operation.
    ///
    /// If the state file cannot be written, the messages that depend on it (votes, append
    /// acknowledgements) are dropped and the error returned.
    pub fn outbox(&mut self) -> Result<Vec<(String, Vec<u8>)>, ConsensusError> {
        let mut out = Vec::new();
        let mut failed = None;
        for _ in 0..MAX_READY_ROUNDS {
            if !self.raw.has_ready() {
                break;
            }
            let mut ready = self.raw.ready();
            // A leader's own messages may leave before its log is persisted (raft's contract).
            let early = ready.take_messages();
            self.encode_into(early, &mut out);
            let _nothing_to_apply = ready.take_committed_entries();
            let store = self.raw.store().clone();
            let mut dirty = false;
            if !ready.entries().is_empty() {
                if let Err(e) = store.wl().append(ready.entries()) {
                    tracing::error!(error = %e, "raft: appending to the in-memory log failed");
                }
                dirty = true;
            }
            if let Some(hs) = ready.hs() {
                store.wl().set_hardstate(hs.clone());
                dirty = true;
            }
            let persisted = ready.take_persisted_messages();
            let saved = if dirty { self.persist(&store) } else { Ok(()) };
            match saved {
                Ok(()) => self.encode_into(persisted, &mut out),
                Err(e) => failed = Some(e),
            }
            let mut light = self.raw.advance(ready);
            if let Some(commit) = light.commit_index() {
                store.wl().mut_hard_state().set_commit(commit);
            }
            let later = light.take_messages();
            self.encode_into(later, &mut out);
            let _nothing_to_apply = light.take_committed_entries();
            self.raw.advance_apply();
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    fn encode_into(&self, messages: Vec<RaftMessage>, out: &mut Vec<(String, Vec<u8>)>) {
        for m in messages {
            let Some(to) = self.name_of(m.to) else {
                tracing::error!(to = m.to, "raft: a message to an unknown id, dropped");
                continue;
            };
            match m.write_to_bytes() {
                Ok(bytes) if bytes.len() <= MAX_RAFT_MESSAGE => out.push((to.to_string(), bytes)),
                Ok(bytes) => tracing::error!(
                    to,
                    len = bytes.len(),
                    "raft: message larger than a frame, dropped"
                ),
                Err(e) => tracing::error!(to, error = %e, "raft: cannot encode a message"),
            }
        }
    }

    fn persist(&self, store: &MemStorage) -> Result<(), ConsensusError> {
        let Some(path) = &self.state_file else {
            return Ok(());
        };
        let (hard_state, entry_terms) = {
            let core = store.rl();
            let hs = core.hard_state().clone();
            drop(core);
            let last = store.last_index().unwrap_or(0);
            let terms = (1..=last)
                .map(|i| store.term(i).unwrap_or(0))
                .collect::<Vec<u64>>();
            (hs, terms)
        };
        state_file::save(
            path,
            &self.names,
            &state_file::Saved {
                hard_state,
                entry_terms,
            },
        )
    }

    /// The leader this node knows of, if any (itself included).
    pub fn leader(&self) -> Option<String> {
        match self.raw.raft.leader_id {
            0 => None,
            id => self.name_of(id).map(str::to_string),
        }
    }

    /// The current term.
    pub fn term(&self) -> u64 {
        self.raw.raft.term
    }

    /// raft's state of this node, for status and logs: `leader`, `follower`, `candidate` or
    /// `pre-candidate`.
    pub fn state_name(&self) -> &'static str {
        match self.raw.raft.state {
            StateRole::Leader => "leader",
            StateRole::Follower => "follower",
            StateRole::Candidate => "candidate",
            StateRole::PreCandidate => "pre-candidate",
        }
    }

    /// Whether this node is raft's leader. A leader cut off from the majority stays leader
    /// until raft's quorum check (every election timeout) steps it down; act on
    /// [`Consensus::leader_has_quorum`] to stop serving sooner.
    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    /// Whether this node is the leader and a majority of the cluster (itself included)
    /// acknowledged its appends or heartbeats in this term within the last
    /// `election_ticks − heartbeat_ticks` ticks. A follower does not vote for another candidate
    /// until `election_ticks` after it last heard from the leader, so while this holds (and
    /// messages take less than `heartbeat_ticks` to arrive) no other leader can have been
    /// elected: the leader's lease. False right after an election until the first
    /// acknowledgements arrive.
    pub fn leader_has_quorum(&self) -> bool {
        if !self.is_leader() {
            return false;
        }
        let window = self.election_ticks.saturating_sub(self.heartbeat_ticks) as u64;
        let term = self.term();
        let fresh = self
            .last_ack
            .iter()
            .filter(|(&id, &(t, at))| {
                id != self.me && t == term && self.ticks.saturating_sub(at) <= window
            })
            .count();
        fresh + 1 >= raft::majority(self.names.len())
    }

    /// Starts raft's leader transfer to `to` (switchover): the leader brings `to` up to date and
    /// tells it to campaign at once; the transfer is abandoned after an election timeout.
    /// Only the leader can start one ([`ConsensusError::NotLeader`] elsewhere: forward it).
    pub fn transfer_leader(&mut self, to: &str) -> Result<(), ConsensusError> {
        let id = self
            .id_of(to)
            .ok_or_else(|| ConsensusError::UnknownNode(to.to_string()))?;
        if !self.is_leader() {
            return Err(ConsensusError::NotLeader);
        }
        if id != self.me {
            self.raw.transfer_leader(id);
        }
        Ok(())
    }

    /// The link to `peer` closed (its processes died, or the connection broke). Tells raft
    /// the peer is unreachable and, if it was the leader, forgets it here at once: this node
    /// grants votes from now on, and the lowest-id node other than the lost leader campaigns
    /// at its next tick (the others' randomised timeouts are the fallback if that node is gone
    /// too, or its pre-vote reached a node that had not yet seen the link close). A leader that
    /// is alive and still heard by a majority is not deposed: the others refuse the pre-vote
    /// while they hear from it.
    pub fn peer_link_down(&mut self, peer: &str) -> Result<(), ConsensusError> {
        let id = self
            .id_of(peer)
            .filter(|&id| id != self.me)
            .ok_or_else(|| ConsensusError::UnknownNode(peer.to_string()))?;
        self.raw.report_unreachable(id);
        if self.raw.raft.leader_id == id && !self.is_leader() {
            // No known leader: no lease to honour, votes are granted (raft's state after a
            // restart). This node's own election timer keeps running as the fallback.
            self.raw.raft.leader_id = raft::INVALID_ID;
            let first_survivor = if id == 1 { 2 } else { 1 };
            if self.me == first_survivor {
                let raft = &mut self.raw.raft;
                raft.election_elapsed = raft.randomized_election_timeout().saturating_sub(1);
            }
        }
        Ok(())
    }
}

/// Forwards raft-rs's slog records to `tracing` (target `prodhcp_syncd::raft`); raft's info
/// lines (every election step) go to debug: syncd logs the role transitions they cause.
struct TracingDrain;

/// The key-value pairs of a slog record as ` key=value` text.
struct KvText(String);

impl slog::Serializer for KvText {
    fn emit_arguments(&mut self, key: slog::Key, val: &std::fmt::Arguments<'_>) -> slog::Result {
        let _ = write!(self.0, " {key}={val}");
        Ok(())
    }
}

macro_rules! forward {
    ($level:ident, $record:expr, $values:expr) => {
        if tracing::enabled!(target: "prodhcp_syncd::raft", tracing::Level::$level) {
            let mut kv = KvText(String::new());
            let _ = slog::KV::serialize(&$record.kv(), $record, &mut kv);
            let _ = slog::KV::serialize($values, $record, &mut kv);
            tracing::event!(target: "prodhcp_syncd::raft", tracing::Level::$level,
                "raft: {}{}", $record.msg(), kv.0);
        }
    };
}

impl slog::Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(
        &self,
        record: &slog::Record<'_>,
        values: &slog::OwnedKVList,
    ) -> Result<(), slog::Never> {
        match record.level() {
            slog::Level::Critical | slog::Level::Error => forward!(ERROR, record, values),
            slog::Level::Warning => forward!(WARN, record, values),
            slog::Level::Info => forward!(DEBUG, record, values),
            slog::Level::Debug | slog::Level::Trace => forward!(TRACE, record, values),
        }
        Ok(())
    }
}

/// The state file: `magic · names crc32 · term · vote · commit · entry count · entry terms ·
/// crc32`, integers big-endian (`u64`, the crcs `u32`).
mod state_file {
    use super::*;

    const MAGIC: &[u8; 8] = b"PRDRAFT1";

    /// What survives a restart.
    pub(super) struct Saved {
        pub(super) hard_state: HardState,
        /// Term of log entry `i + 1`.
        pub(super) entry_terms: Vec<u64>,
    }

    fn names_crc(names: &[String]) -> u32 {
        let mut h = crc32fast::Hasher::new();
        for n in names {
            h.update(n.as_bytes());
            h.update(&[0]);
        }
        h.finalize()
    }

    pub(super) fn save(path: &Path, names: &[String], saved: &Saved) -> Result<(), ConsensusError> {
        let io_err = |source| ConsensusError::StateIo {
            path: path.to_path_buf(),
            source,
        };
        let mut b = Vec::with_capacity(48 + saved.entry_terms.len() * 8);
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&names_crc(names).to_be_bytes());
        for v in [
            saved.hard_state.term,
            saved.hard_state.vote,
            saved.hard_state.commit,
            saved.entry_terms.len() as u64,
        ] {
            b.extend_from_slice(&v.to_be_bytes());
        }
        for t in &saved.entry_terms {
            b.extend_from_slice(&t.to_be_bytes());
        }
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_be_bytes());
        let tmp = path.with_extension("tmp");
        let mut f = fs::File::create(&tmp).map_err(io_err)?;
        f.write_all(&b).map_err(io_err)?;
        f.sync_all().map_err(io_err)?;
        drop(f);
        fs::rename(&tmp, path).map_err(io_err)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io_err)?;
        }
        Ok(())
    }

    /// The saved state, `None` when there is none (or it belongs to another set of nodes: then
    /// set aside as `*.stale`).
    pub(super) fn load(path: &Path, names: &[String]) -> Result<Option<Saved>, ConsensusError> {
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(ConsensusError::StateIo {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        let corrupt = |reason: &str| ConsensusError::StateCorrupt {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        };
        if bytes.len() < 48 || &bytes[..8] != MAGIC {
            return Err(corrupt("not a consensus state file"));
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        if crc32fast::hash(body).to_be_bytes() != crc {
            return Err(corrupt("checksum mismatch"));
        }
        let u64_at = |at: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&body[at..at + 8]);
            u64::from_be_bytes(a)
        };
        let crc_names = u32::from_be_bytes([body[8], body[9], body[10], body[11]]);
        if crc_names != names_crc(names) {
            let stale = path.with_extension("stale");
            tracing::warn!(
                path = %path.display(),
                "consensus state was written for another set of nodes: set aside, starting new"
            );
            fs::rename(path, &stale).map_err(|source| ConsensusError::StateIo {
                path: path.to_path_buf(),
                source,
            })?;
            return Ok(None);
        }
        let (term, vote, commit, count) = (u64_at(12), u64_at(20), u64_at(28), u64_at(36));
        let count = usize::try_from(count).map_err(|_| corrupt("entry count"))?;
        if body.len() != 44 + count.checked_mul(8).ok_or_else(|| corrupt("entry count"))? {
            return Err(corrupt("length does not match the entry count"));
        }
        let entry_terms: Vec<u64> = (0..count).map(|i| u64_at(44 + i * 8)).collect();
        if entry_terms.windows(2).any(|w| w[0] > w[1]) || entry_terms.last() > Some(&term) {
            return Err(corrupt("entry terms out of order"));
        }
        if commit > count as u64 || vote > names.len() as u64 {
            return Err(corrupt("commit or vote out of range"));
        }
        let hard_state = HardState {
            term,
            vote,
            commit,
            ..Default::default()
        };
        Ok(Some(Saved {
            hard_state,
            entry_terms,
        }))
    }
}

#[cfg(test)]
mod tests;

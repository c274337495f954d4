//! What a role means on this machine: [`RoleDriver`] feeds [`Roles`] from syncd's loop and
//! carries out each transition — the workers' gate, the service address and its gratuitous
//! ARP, the announcement to the peers, the log line, the role kept in syncd's ring file.
//!
//! Order on a transition: into a serving role the service address is taken first, then the
//! gate opens (relays reach the node only once it answers on the address anyway); out of one
//! the gate closes first (the workers stop answering), then the address is released.

use std::collections::BTreeMap;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use prodhcp_config::Cluster;
use prodhcp_proto::{HaCommand, HaCommandOutcome, RoleStatus};
use shm_layout::{Gate, Ring, Share};

use super::{Role, Roles, Serving, Transition};
use crate::consensus::{Consensus, ConsensusError, ELECTION_TICKS, HEARTBEAT_TICKS, TICK};
use crate::doorbell::Doorbells;
use crate::message::{Message, Position};
use crate::node::{Event, Node, PeerState};
use crate::replicate::Replicator;
use crate::service_address::{GarpSender, Release, ServiceAddress};

/// How long a node that served before it stopped waits for a peer at start before serving its
/// share alone.
pub const STARTUP_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Seconds subtracted from the last contact with the peer for a share's `since` (clock
/// granularity and skew between the appliances).
pub const SINCE_MARGIN_SECS: u64 = 1;

/// Drives the roles of this node. See the module docs.
pub struct RoleDriver<'a> {
    roles: Roles,
    workers: Vec<&'a Ring>,
    own_ring: &'a Ring,
    doorbells: &'a Doorbells,
    service_address: Option<ServiceAddress>,
    address_state: String,
    garp: Option<GarpSender>,
    share_index: u8,
    share_count: u8,
    /// Per peer: the (role, in-sync view) it was last told on its current connection.
    announced: BTreeMap<String, (Role, bool)>,
    /// A `Handover` received from this peer, waiting for its records to be applied.
    handover_from: Option<String>,
    last: Option<(Transition, u64)>,
    last_command: Option<HaCommandOutcome>,
    /// Something the report shows changed.
    changed: bool,
    last_contact_secs: u64,
    /// Three or more appliances: the Raft group that elects the active.
    consensus: Option<Consensus>,
    next_tick: Instant,
}

impl<'a> RoleDriver<'a> {
    /// Starts `waiting`: every worker's gate closed, the service address released (a previous
    /// syncd may have died holding it), the remembered role read from syncd's ring. With three
    /// or more appliances the Raft state lives in `raft_state` (term, vote, log).
    pub fn new(
        cluster: &Cluster,
        workers: Vec<&'a Ring>,
        own_ring: &'a Ring,
        doorbells: &'a Doorbells,
        raft_state: &std::path::Path,
        now: Instant,
    ) -> Result<RoleDriver<'a>, ConsensusError> {
        let remembered = Role::from_code(own_ring.last_role() as u8);
        let peers: Vec<String> = cluster.peers.iter().map(|p| p.node.clone()).collect();
        let mut names: Vec<&str> = peers.iter().map(String::as_str).collect();
        names.push(&cluster.node);
        names.sort_unstable();
        let share_index = names.iter().position(|n| *n == cluster.node).unwrap_or(0) as u8;
        let service_address = cluster.service_address.as_ref().map(|s| ServiceAddress {
            address: s.address,
            interface: s.interface.clone(),
        });
        let all: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let consensus = if peers.len() >= 2 {
            Some(Consensus::open(
                &cluster.node,
                &all,
                ELECTION_TICKS,
                HEARTBEAT_TICKS,
                raft_state,
            )?)
        } else {
            None
        };
        let mut driver = RoleDriver {
            roles: Roles::new(&cluster.node, &peers, remembered, STARTUP_WAIT, now),
            workers,
            own_ring,
            doorbells,
            address_state: if service_address.is_some() {
                "not held".into()
            } else {
                "not configured".into()
            },
            service_address,
            garp: None,
            share_index,
            share_count: names.len() as u8,
            announced: BTreeMap::new(),
            handover_from: None,
            last: None,
            last_command: None,
            changed: true,
            last_contact_secs: own_ring.peer_contact(),
            consensus,
            next_tick: now + TICK,
        };
        driver.set_gate(Gate::Closed);
        driver.release_address("syncd started: not serving until its role says so");
        tracing::info!(
            "syncd: role waiting (last role before this start: {}); {}",
            remembered.map_or("none", Role::name),
            if driver.consensus.is_some() {
                format!(
                    "{} appliances: the active is elected by a majority (raft)",
                    names.len()
                )
            } else {
                format!(
                    "share {} of {} when serving alone",
                    share_index, driver.share_count
                )
            }
        );
        Ok(driver)
    }

    /// The current role.
    pub fn role(&self) -> Role {
        self.roles.role()
    }

    /// Handles one node event (call for every event, after the replicator).
    pub fn on_event(&mut self, node: &mut Node, event: &Event) {
        let now = Instant::now();
        match event {
            Event::PeerUp { peer, .. } => {
                self.announced.remove(peer);
                if self.handover_from.as_deref() == Some(peer) {
                    self.handover_from = None;
                }
                self.roles.peer_up(peer, now);
                self.note_contact();
            }
            Event::LinkDown {
                peer: Some(peer),
                cause,
                ..
            } if node.peer_state(peer) == PeerState::Down => {
                self.announced.remove(peer);
                if self.handover_from.as_deref() == Some(peer) {
                    self.handover_from = None;
                }
                if let Some(c) = &mut self.consensus {
                    let _ = c.peer_link_down(peer);
                }
                self.roles.peer_down(peer, &cause.to_string(), now);
            }
            Event::Received { peer, message } => {
                self.note_contact();
                match message {
                    Message::Role { role, you_in_sync } => {
                        self.roles.peer_announced(peer, *role, *you_in_sync, now);
                        self.changed = true;
                    }
                    Message::Handover { positions } => {
                        tracing::info!(
                            "syncd: `{peer}` hands over its role (its heads: {})",
                            fmt_positions(positions)
                        );
                        self.handover_from = Some(peer.clone());
                    }
                    Message::Raft { data } => {
                        if let Some(c) = &mut self.consensus {
                            if let Err(e) = c.step(peer, data) {
                                tracing::debug!("syncd: {e}");
                            }
                        }
                    }
                    Message::SwitchoverRequest { to } => {
                        let outcome = self.roles.switchover(Some(to), now);
                        match outcome {
                            Ok(t) => {
                                tracing::info!("syncd: switchover to `{t}` requested by `{peer}`")
                            }
                            Err(e) => tracing::warn!(
                                "syncd: switchover to `{to}` requested by `{peer}`: {e}"
                            ),
                        }
                    }
                    _ => {}
                }
            }
            _ => {}
        }
        self.apply_transitions();
    }

    /// After each loop turn's events and the replicator's pump: in-sync views, a handover due
    /// or applied, timers, announcements, gratuitous ARP.
    pub fn after_turn(&mut self, node: &mut Node, replicator: &Replicator<'_>) {
        let now = Instant::now();
        for peer in self.peer_names() {
            self.roles
                .set_in_sync_view(&peer, replicator.in_sync(&peer), now);
        }
        if let Some(from) = self.handover_from.clone() {
            if replicator.applied_everything_from(&from) {
                self.handover_from = None;
                self.roles.handover_applied(&from, now);
            }
        }
        self.drive_consensus(node, now);
        if let Some(to) = self.roles.handover_due().map(str::to_string) {
            if replicator.acked_all(&to) && self.consensus.is_some() {
                if let Some(c) = &mut self.consensus {
                    match c.transfer_leader(&to) {
                        Ok(()) => tracing::info!(
                            "syncd: switchover: `{to}` acknowledged every record; raft leadership transferred to it"
                        ),
                        Err(e) => tracing::warn!("syncd: switchover to `{to}`: {e}"),
                    }
                }
                self.roles.handover_sent();
                self.drive_consensus(node, now);
            } else if replicator.acked_all(&to) {
                let positions = replicator.heads();
                if node
                    .send(
                        &to,
                        &Message::Handover {
                            positions: positions.clone(),
                        },
                    )
                    .is_ok()
                {
                    tracing::info!(
                        "syncd: switchover: `{to}` acknowledged every record; handing over at {}",
                        fmt_positions(&positions)
                    );
                    self.roles.handover_sent();
                }
            }
        }
        self.roles.tick(now);
        self.apply_transitions();
        self.announce(node);
        if let Some(g) = &mut self.garp {
            if let Err(e) = g.send_due(now) {
                tracing::warn!("syncd: gratuitous ARP for the service address: {e}");
                self.garp = None;
            } else if g.is_done() {
                self.garp = None;
            }
        }
    }

    /// When the loop must turn at the latest (the next gratuitous ARP, the next raft tick).
    pub fn next_deadline(&self) -> Option<Instant> {
        let garp = self.garp.as_ref().and_then(GarpSender::next_deadline);
        let tick = self.consensus.as_ref().map(|_| self.next_tick);
        match (garp, tick) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Three or more appliances: ticks raft when due (only while this node may lead: a node
    /// that is behind never campaigns), sends what it hands out, and gives the roles its view.
    fn drive_consensus(&mut self, node: &mut Node, now: Instant) {
        let may_lead = self.roles.may_lead();
        let Some(c) = &mut self.consensus else {
            return;
        };
        while now >= self.next_tick {
            if may_lead {
                c.tick();
            }
            self.next_tick += TICK;
        }
        match c.outbox() {
            Ok(out) => {
                for (peer, data) in out {
                    if node.peer_state(&peer) == PeerState::Up {
                        let _ = node.send(&peer, &Message::Raft { data });
                    }
                }
            }
            Err(e) => tracing::error!("syncd: consensus: {e}"),
        }
        let (leader, quorum, term) = (c.leader(), c.leader_has_quorum(), c.term());
        self.roles.set_consensus(leader, quorum, term, now);
    }

    /// An operator's command (from the supervisor's channel).
    pub fn command(&mut self, node: &mut Node, id: u64, command: &HaCommand) {
        let now = Instant::now();
        let (ok, message) = match command {
            HaCommand::Switchover { to } if self.roles.role().serves() => {
                match self.roles.switchover(to.as_deref(), now) {
                    Ok(t) => (true, format!("switchover to `{t}` started")),
                    Err(e) => (false, e.to_string()),
                }
            }
            HaCommand::Switchover { to } => {
                let me = self.roles.me().to_string();
                let target = to.clone().unwrap_or(me);
                match self.roles.serving_peer().map(str::to_string) {
                    Some(active) => {
                        let msg = Message::SwitchoverRequest { to: target.clone() };
                        match node.send(&active, &msg) {
                            Ok(()) => (
                                true,
                                format!(
                                    "switchover to `{target}` requested from the active `{active}`"
                                ),
                            ),
                            Err(e) => (false, format!("cannot reach the active `{active}`: {e}")),
                        }
                    }
                    None => (
                        false,
                        format!(
                            "switchover refused: this node is {} and no connected peer serves",
                            self.roles.role().name()
                        ),
                    ),
                }
            }
            HaCommand::PartnerDown => match self.roles.partner_down(now) {
                Ok(()) => (true, format!("role {}", self.roles.role().name())),
                Err(e) => (false, e.to_string()),
            },
        };
        if ok {
            tracing::info!("syncd: command {id}: {message}");
        } else {
            tracing::warn!("syncd: command {id}: {message}");
        }
        self.last_command = Some(HaCommandOutcome { id, ok, message });
        self.changed = true;
        self.apply_transitions();
        self.announce(node);
    }

    /// Whether the report changed since the last call (role, peers' roles, a command).
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// The role in detail, for the report.
    pub fn status(&self) -> RoleStatus {
        let (since_unix_ms, cause, previous) = match &self.last {
            Some((t, ms)) => (*ms, t.cause.clone(), t.from.name().to_string()),
            None => (0, "syncd started".into(), String::new()),
        };
        RoleStatus {
            since_unix_ms,
            cause,
            previous,
            serving: match self.gate() {
                Gate::Open => "whole pool".into(),
                Gate::Closed => "nothing (gate closed)".into(),
                Gate::Share(s) => format!(
                    "share {} of {} (no address freed since unix {} re-used)",
                    s.index, s.count, s.since
                ),
            },
            service_address: self.address_state.clone(),
        }
    }

    /// The outcome of the last operator command.
    pub fn last_command(&self) -> Option<&HaCommandOutcome> {
        self.last_command.as_ref()
    }

    /// The role `peer` announced, by name.
    pub fn peer_role(&self, peer: &str) -> Option<&'static str> {
        self.roles.peer_role(peer).map(Role::name)
    }

    /// syncd is stopping: close the gate and release the address (the supervisor does the
    /// same when syncd dies without this).
    pub fn stop(&mut self) {
        self.set_gate(Gate::Closed);
        self.release_address("syncd stopping");
    }

    fn peer_names(&self) -> Vec<String> {
        self.roles.peer_names()
    }

    fn note_contact(&mut self) {
        let secs = unix_secs();
        if secs != self.last_contact_secs {
            self.last_contact_secs = secs;
            self.own_ring.set_peer_contact(secs);
        }
    }

    /// The gate the current role asks for.
    fn gate(&self) -> Gate {
        match self.roles.role().serving() {
            Serving::Closed => Gate::Closed,
            Serving::Whole => Gate::Open,
            Serving::Share => Gate::Share(Share {
                index: self.share_index,
                count: self.share_count,
                since: self.share_since(),
            }),
        }
    }

    fn share_since(&self) -> u32 {
        let contact = if self.last_contact_secs == 0 {
            unix_secs()
        } else {
            self.last_contact_secs
        };
        contact.saturating_sub(SINCE_MARGIN_SECS) as u32
    }

    fn apply_transitions(&mut self) {
        for t in self.roles.take_transitions() {
            let serving_before = t.from.serves();
            let serving_now = t.to.serves();
            if serving_now {
                self.take_address(&t);
                self.set_gate(self.gate());
            } else {
                self.set_gate(Gate::Closed);
                if serving_before {
                    self.release_address(&format!("role {}", t.to.name()));
                }
            }
            self.own_ring.set_last_role(u64::from(t.to.code()));
            // Losing the role or serving alone is a warning; the rest is information.
            if t.to == Role::ActiveAlone
                || (t.from.serves() && !t.to.serves() && t.to != Role::HandingOver)
            {
                tracing::warn!(
                    "syncd: role {} -> {}: {}",
                    t.from.name(),
                    t.to.name(),
                    t.cause
                );
            } else {
                tracing::info!(
                    "syncd: role {} -> {}: {}",
                    t.from.name(),
                    t.to.name(),
                    t.cause
                );
            }
            self.last = Some((t, unix_ms()));
            self.changed = true;
        }
    }

    /// Tells every up peer this node's role and whether it has that peer in sync, when either
    /// changed since it was last told.
    fn announce(&mut self, node: &mut Node) {
        let role = self.roles.role();
        for peer in self.peer_names() {
            if node.peer_state(&peer) != PeerState::Up {
                continue;
            }
            let view = (role, self.roles.sees_in_sync(&peer));
            if self.announced.get(&peer) == Some(&view) {
                continue;
            }
            let msg = Message::Role {
                role: view.0,
                you_in_sync: view.1,
            };
            if node.send(&peer, &msg).is_ok() {
                self.announced.insert(peer, view);
            }
        }
    }

    fn set_gate(&self, gate: Gate) {
        for r in &self.workers {
            r.set_gate(gate);
        }
        // A worker holding replies looks at its ring when woken.
        self.doorbells.wake_all();
    }

    fn take_address(&mut self, t: &Transition) {
        let Some(sa) = &self.service_address else {
            return;
        };
        let started = Instant::now();
        match sa.take() {
            Ok(taken) => {
                tracing::info!(
                    "syncd: service address {} on {} taken{} in {} µs ({}); announcing it by gratuitous ARP",
                    sa.address,
                    sa.interface,
                    if taken.was_present { " (it was already there)" } else { "" },
                    started.elapsed().as_micros(),
                    t.to.name()
                );
                self.garp = Some(taken.garp);
                self.address_state = "held".into();
            }
            Err(e) => {
                tracing::error!(
                    "syncd: cannot take the service address {} on {}: {e}; serving without it",
                    sa.address,
                    sa.interface
                );
                self.address_state = format!("error: {e}");
            }
        }
    }

    fn release_address(&mut self, why: &str) {
        let Some(sa) = &self.service_address else {
            return;
        };
        self.garp = None;
        match sa.release() {
            Ok(Release::Removed) => {
                tracing::info!(
                    "syncd: service address {} removed from {} ({why})",
                    sa.address,
                    sa.interface
                );
                self.address_state = "not held".into();
            }
            Ok(Release::WasAbsent) => self.address_state = "not held".into(),
            Err(e) => {
                tracing::error!(
                    "syncd: cannot remove the service address {} from {}: {e} ({why})",
                    sa.address,
                    sa.interface
                );
                self.address_state = format!("error: {e}");
            }
        }
    }
}

fn fmt_positions(p: &[Position]) -> String {
    p.iter()
        .map(|p| format!("{}:{}", p.ring, p.seq))
        .collect::<Vec<_>>()
        .join(" ")
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

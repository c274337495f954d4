//! The node's role in the cluster: who serves, decided from the links, what the peers say about
//! themselves, and the replication state (issue 8 items 4, 5 and 7).
//!
//! [`Roles`] is a state machine without I/O: syncd's loop feeds it link events, the peers'
//! [`Message::Role`](crate::message::Message::Role) announcements, its own view of which peers
//! are in sync, operator commands and time, and applies each [`Transition`] it takes: the
//! workers' gate ([`Role::serving`]), the service address, the announcement to the peers, the
//! log line with its cause.
//!
//! # Roles
//!
//! | role | serves | enters when |
//! |---|---|---|
//! | `waiting` | no | syncd starts; the active peer was lost before this node was in sync |
//! | `syncing` | no | a serving peer is up: receiving its table (bulk sync or ring tail) |
//! | `standby` | no | the serving peer says this node has everything it has |
//! | `active` | whole pool | elected at start (every peer up, none serving, lowest name, tables merged); a handover; a lost peer back in sync |
//! | `active-alone` | own share | the peer was lost (closed connection or silence) while this node was active or standby; restarted alone after serving |
//! | `partner-down` | whole pool | the operator confirmed the peer down (`prodhcpctl ha partner-down`) |
//! | `handing-over` | no | `prodhcpctl switchover`: draining toward the target |
//!
//! # Why a lost peer means a share, not the whole pool
//!
//! A pair cannot tell a dead peer from a cut link: the peer may be serving too. So a node that
//! loses its peer serves in [`Serving::Share`] (allocates new addresses only from its own half
//! of every pool, never gives an address freed since the last contact to another client; see
//! `shm_layout::Share`) until the operator confirms the peer down or the peer is back in
//! sync. Both sides may then serve at once without ever giving one address to two clients.
//!
//! # Two serving nodes meet
//!
//! After a partition heals both nodes serve. The node whose name sorts lower keeps serving; the
//! other goes `syncing` at once (its workers stop answering), receives the table, and becomes
//! `standby`. The tables merge by slot version (`shm_layout::Table::apply_replica`).
//!
//! # Switchover
//!
//! `switchover(to)` on the active (or forwarded to it): the active goes `handing-over` (its
//! workers stop taking requests, the service address is released), waits until the target has
//! acknowledged every record of every ring (held replies leave as the acknowledgements come),
//! then sends `Handover` with its ring heads. The target, once it has applied up to those heads,
//! becomes `active` (takes the address, announces it by gratuitous ARP, opens its gate) and
//! says so; the old active becomes `standby`. If the target does not become active within
//! [`HANDOVER_TIMEOUT`], or its link drops, the old active takes its role back.
//!
//! # At start
//!
//! A node starts `waiting` and never serves on its own with a table that may be behind: if no
//! peer answers within the startup wait, it serves alone (`active-alone`, its share) only when
//! it was serving before it stopped (its last role is kept in syncd's ring file); a node that
//! was standby waits for its peer or for `prodhcpctl ha partner-down`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How long a switchover waits for the target to become active before the old active takes
/// its role back.
pub const HANDOVER_TIMEOUT: Duration = Duration::from_secs(5);

/// A node's role. See the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Started, no serving peer seen yet.
    Waiting,
    /// Receiving the table from a serving peer.
    Syncing,
    /// In sync with the serving peer; takes over when it is lost.
    Standby,
    /// Serving the whole pool.
    Active,
    /// Serving this node's share: the peer is unreachable and not confirmed down.
    ActiveAlone,
    /// Serving the whole pool: the operator confirmed the peer down.
    PartnerDown,
    /// Handing the active role to a peer (switchover): answering nobody.
    HandingOver,
}

/// What the workers do in a role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serving {
    /// Answer nobody (gate closed).
    Closed,
    /// Serve the whole pool.
    Whole,
    /// Serve, allocating only from this node's share.
    Share,
}

impl Role {
    /// Every role, in code order.
    pub const ALL: [Role; 7] = [
        Role::Waiting,
        Role::Syncing,
        Role::Standby,
        Role::Active,
        Role::ActiveAlone,
        Role::PartnerDown,
        Role::HandingOver,
    ];

    /// The role's code on the wire and in syncd's ring file (1..=7; 0 is "none").
    pub fn code(self) -> u8 {
        match self {
            Role::Waiting => 1,
            Role::Syncing => 2,
            Role::Standby => 3,
            Role::Active => 4,
            Role::ActiveAlone => 5,
            Role::PartnerDown => 6,
            Role::HandingOver => 7,
        }
    }

    /// The role of a code, if it is one.
    pub fn from_code(code: u8) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.code() == code)
    }

    /// The role's name (`waiting`, `syncing`, `standby`, `active`, `active-alone`,
    /// `partner-down`, `handing-over`).
    pub fn name(self) -> &'static str {
        match self {
            Role::Waiting => "waiting",
            Role::Syncing => "syncing",
            Role::Standby => "standby",
            Role::Active => "active",
            Role::ActiveAlone => "active-alone",
            Role::PartnerDown => "partner-down",
            Role::HandingOver => "handing-over",
        }
    }

    /// What the workers do.
    pub fn serving(self) -> Serving {
        match self {
            Role::Active | Role::PartnerDown => Serving::Whole,
            Role::ActiveAlone => Serving::Share,
            Role::Waiting | Role::Syncing | Role::Standby | Role::HandingOver => Serving::Closed,
        }
    }

    /// Whether the node answers clients (and holds the service address).
    pub fn serves(self) -> bool {
        self.serving() != Serving::Closed
    }
}

/// One change of role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The role before.
    pub from: Role,
    /// The role after.
    pub to: Role,
    /// Why, for the log and `prodhcpctl ha status`.
    pub cause: String,
}

/// What this node knows of one peer.
#[derive(Debug, Clone, Default)]
struct PeerFacts {
    up: bool,
    /// Its last announced role on the current connection.
    role: Option<Role>,
    /// It says this node has everything it has (its in-sync view of this node).
    says_me_in_sync: bool,
    /// This node's replicator says the peer has everything this node has.
    i_see_in_sync: bool,
}

/// A switchover under way on the active.
#[derive(Debug, Clone)]
struct Switchover {
    to: String,
    deadline: Instant,
    handover_sent: bool,
}

/// Why a command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// Switchover needs a serving node with an in-sync target.
    #[error("switchover refused: {0}")]
    Switchover(String),
    /// Partner-down needs the peer to be unreachable.
    #[error("partner-down refused: {0}")]
    PartnerDown(String),
}

/// The role state machine. See the module docs.
#[derive(Debug)]
pub struct Roles {
    me: String,
    role: Role,
    peers: BTreeMap<String, PeerFacts>,
    started: Instant,
    startup_wait: Duration,
    remembered: Option<Role>,
    switchover: Option<Switchover>,
    transitions: Vec<Transition>,
    /// Three or more appliances: the consensus's view (see "Three or more appliances").
    quorum: Option<QuorumFacts>,
}

/// What the consensus says, with three or more appliances.
#[derive(Debug, Clone, Default)]
struct QuorumFacts {
    /// The leader this node knows (itself included), if any.
    leader: Option<String>,
    /// This node leads and a majority acknowledged it within its lease.
    leading_with_quorum: bool,
    /// The raft term, for the log.
    term: u64,
}

impl Roles {
    /// A node `me` with `peers`, starting `waiting`. `remembered`: its role when it last
    /// stopped (syncd's ring file); `startup_wait`: how long to wait for a peer before serving
    /// alone (only when `remembered` is a serving role).
    pub fn new(
        me: &str,
        peers: &[String],
        remembered: Option<Role>,
        startup_wait: Duration,
        now: Instant,
    ) -> Roles {
        Roles {
            me: me.to_string(),
            role: Role::Waiting,
            peers: peers
                .iter()
                .map(|p| (p.clone(), PeerFacts::default()))
                .collect(),
            started: now,
            startup_wait,
            remembered,
            switchover: None,
            transitions: Vec::new(),
            quorum: (peers.len() >= 2).then(QuorumFacts::default),
        }
    }

    /// Whether roles follow a majority (three or more appliances) rather than a pair's rules.
    pub fn is_quorum(&self) -> bool {
        self.quorum.is_some()
    }

    /// Three or more appliances: whether this node may campaign to lead (it ticks its
    /// consensus only then). A node that is behind — syncing, or waiting while a connected
    /// peer says it lacks that peer's leases — never leads; it still votes.
    pub fn may_lead(&self) -> bool {
        match self.role {
            Role::Standby | Role::Active | Role::HandingOver | Role::PartnerDown => true,
            Role::Waiting => {
                let up: Vec<&PeerFacts> = self.peers.values().filter(|p| p.up).collect();
                let nodes = self.peers.len() + 1;
                // This node and the connected peers are a majority (nodes / 2 + 1).
                up.len() >= nodes / 2 && up.iter().all(|p| p.role.is_some() && p.says_me_in_sync)
            }
            Role::Syncing | Role::ActiveAlone => false,
        }
    }

    /// Three or more appliances: the consensus's leader (`None`: none known), whether this
    /// node leads with a majority's acknowledgement, and the term.
    pub fn set_consensus(
        &mut self,
        leader: Option<String>,
        leading_with_quorum: bool,
        term: u64,
        now: Instant,
    ) {
        let Some(q) = &mut self.quorum else {
            return;
        };
        if q.leader != leader || q.leading_with_quorum != leading_with_quorum || q.term != term {
            q.leader = leader;
            q.leading_with_quorum = leading_with_quorum;
            q.term = term;
            self.evaluate(now);
        }
    }

    /// Three or more appliances, switchover: the target raft should hand leadership to once
    /// every record is acknowledged ([`Roles::handover_due`] gives it too).
    pub fn quorum_leader(&self) -> Option<&str> {
        self.quorum.as_ref().and_then(|q| q.leader.as_deref())
    }

    /// The current role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// This node's name.
    pub fn me(&self) -> &str {
        &self.me
    }

    /// The configured peers' names.
    pub fn peer_names(&self) -> Vec<String> {
        self.peers.keys().cloned().collect()
    }

    /// The transitions taken since the last call, oldest first.
    pub fn take_transitions(&mut self) -> Vec<Transition> {
        std::mem::take(&mut self.transitions)
    }

    /// The role `peer` last announced on its current connection.
    pub fn peer_role(&self, peer: &str) -> Option<Role> {
        self.peers.get(peer).filter(|p| p.up).and_then(|p| p.role)
    }

    /// The up peer that serves, if any (the one a non-active node forwards a switchover to).
    pub fn serving_peer(&self) -> Option<&str> {
        self.peers
            .iter()
            .find(|(_, p)| p.up && p.role.is_some_and(Role::serves))
            .map(|(n, _)| n.as_str())
    }

    /// Whether this node tells `peer` that it has everything this node has.
    pub fn sees_in_sync(&self, peer: &str) -> bool {
        self.peers.get(peer).is_some_and(|p| p.i_see_in_sync)
    }

    /// The target of a switchover whose `Handover` is due: every record acknowledged by the
    /// target is the caller's check; then call [`Roles::handover_sent`].
    pub fn handover_due(&self) -> Option<&str> {
        match &self.switchover {
            Some(s) if self.role == Role::HandingOver && !s.handover_sent => Some(&s.to),
            _ => None,
        }
    }

    /// The `Handover` message went to the target.
    pub fn handover_sent(&mut self) {
        if let Some(s) = &mut self.switchover {
            s.handover_sent = true;
        }
    }

    /// A peer's connection came up (its role is unknown until it announces it).
    pub fn peer_up(&mut self, peer: &str, now: Instant) {
        if let Some(p) = self.peers.get_mut(peer) {
            *p = PeerFacts {
                up: true,
                ..PeerFacts::default()
            };
        }
        self.evaluate(now);
    }

    /// A peer's connection is gone (`cause`: closed, silent, replaced ...).
    pub fn peer_down(&mut self, peer: &str, cause: &str, now: Instant) {
        let Some(p) = self.peers.get_mut(peer) else {
            return;
        };
        if !p.up {
            return;
        }
        let was_serving = p.role.is_some_and(Role::serves);
        *p = PeerFacts::default();
        let any_up = self.peers.values().any(|p| p.up);
        if self.quorum.is_some() {
            // The majority decides (set_consensus); a lost switchover target ends it.
            if self.role == Role::HandingOver
                && self.switchover.as_ref().is_some_and(|s| s.to == peer)
            {
                self.switchover = None;
                self.go(
                    Role::Active,
                    format!("switchover target `{peer}` was lost ({cause}); keeping the role"),
                );
            }
            self.evaluate(now);
            return;
        }
        match self.role {
            Role::Standby if !self.serving_peer_up() => self.go(
                Role::ActiveAlone,
                format!("the active peer `{peer}` was lost ({cause})"),
            ),
            Role::Syncing if was_serving => self.go(
                Role::Waiting,
                format!(
                    "the serving peer `{peer}` was lost before this node was in sync ({cause})"
                ),
            ),
            Role::Active if !any_up => self.go(
                Role::ActiveAlone,
                format!("peer `{peer}` was lost ({cause}); serving this node's share"),
            ),
            Role::HandingOver if self.switchover.as_ref().is_some_and(|s| s.to == peer) => {
                self.switchover = None;
                self.go(
                    Role::ActiveAlone,
                    format!(
                        "switchover target `{peer}` was lost ({cause}); serving this node's share"
                    ),
                );
            }
            _ => {}
        }
        self.evaluate(now);
    }

    /// `peer` announced `role`, and whether it has this node in sync.
    pub fn peer_announced(&mut self, peer: &str, role: Role, says_me_in_sync: bool, now: Instant) {
        let Some(p) = self.peers.get_mut(peer) else {
            return;
        };
        if !p.up {
            return;
        }
        p.role = Some(role);
        p.says_me_in_sync = says_me_in_sync;
        self.evaluate(now);
    }

    /// This node's replicator's view: `peer` has everything this node has.
    pub fn set_in_sync_view(&mut self, peer: &str, in_sync: bool, now: Instant) {
        if let Some(p) = self.peers.get_mut(peer) {
            if p.i_see_in_sync != in_sync {
                p.i_see_in_sync = in_sync;
                self.evaluate(now);
            }
        }
    }

    /// The active handed over to this node and everything up to its heads is applied.
    pub fn handover_applied(&mut self, from: &str, now: Instant) {
        if matches!(self.role, Role::Standby | Role::Syncing) {
            self.go(Role::Active, format!("switchover: `{from}` handed over"));
        }
        self.evaluate(now);
    }

    /// `prodhcpctl switchover [--to NODE]` arriving on this node (the active). `to` defaults to
    /// the single in-sync peer.
    pub fn switchover(&mut self, to: Option<&str>, now: Instant) -> Result<String, CommandError> {
        if !self.role.serves() {
            return Err(CommandError::Switchover(format!(
                "this node is {}, not serving",
                self.role.name()
            )));
        }
        let target = match to {
            Some(t) if t == self.me => {
                return Err(CommandError::Switchover(format!(
                    "`{t}` is already serving"
                )))
            }
            Some(t) => t.to_string(),
            None => {
                let mut in_sync = self.peers.iter().filter(|(_, p)| p.up && p.i_see_in_sync);
                match (in_sync.next(), in_sync.next()) {
                    (Some((n, _)), None) => n.clone(),
                    (None, _) => return Err(CommandError::Switchover("no peer is in sync".into())),
                    (Some(_), Some(_)) => {
                        return Err(CommandError::Switchover(
                            "several peers are in sync: name one with --to".into(),
                        ))
                    }
                }
            }
        };
        match self.peers.get(&target) {
            None => {
                return Err(CommandError::Switchover(format!(
                    "`{target}` is not a peer of this node"
                )))
            }
            Some(p) if !p.up => {
                return Err(CommandError::Switchover(format!(
                    "`{target}` is not connected"
                )))
            }
            Some(p) if !p.i_see_in_sync || p.role != Some(Role::Standby) => {
                return Err(CommandError::Switchover(format!(
                    "`{target}` is not an in-sync standby (it is {})",
                    p.role.map_or("unannounced", Role::name)
                )))
            }
            Some(_) => {}
        }
        self.switchover = Some(Switchover {
            to: target.clone(),
            deadline: now + HANDOVER_TIMEOUT,
            handover_sent: false,
        });
        self.go(
            Role::HandingOver,
            format!("switchover to `{target}` requested by the operator"),
        );
        Ok(target)
    }

    /// `prodhcpctl ha partner-down`: the operator confirms every unreachable peer down; a node
    /// serving its share (or waiting) serves the whole pool.
    pub fn partner_down(&mut self, now: Instant) -> Result<(), CommandError> {
        if let Some(l) = self.quorum.as_ref().and_then(|q| q.leader.clone()) {
            return Err(CommandError::PartnerDown(format!(
                "the majority has a leader (`{l}`); partner-down is for a node left without one"
            )));
        }
        if self.quorum.is_none() {
            if let Some((n, _)) = self.peers.iter().find(|(_, p)| p.up) {
                return Err(CommandError::PartnerDown(format!(
                    "peer `{n}` is connected; partner-down is for a peer that is unreachable"
                )));
            }
        }
        match self.role {
            Role::ActiveAlone | Role::Waiting | Role::Syncing | Role::Standby => {
                let from = self.role;
                self.go(
                    Role::PartnerDown,
                    format!(
                        "the operator confirmed the peer down (was {}); serving the whole pool",
                        from.name()
                    ),
                );
                self.evaluate(now);
                Ok(())
            }
            Role::PartnerDown => Ok(()),
            r => Err(CommandError::PartnerDown(format!(
                "this node is {}",
                r.name()
            ))),
        }
    }

    /// Timers: the startup wait, the switchover deadline.
    pub fn tick(&mut self, now: Instant) {
        if self.role == Role::HandingOver {
            if let Some(s) = &self.switchover {
                if now >= s.deadline {
                    let to = s.to.clone();
                    self.switchover = None;
                    self.go(
                        Role::Active,
                        format!(
                            "switchover to `{to}` timed out after {} ms; keeping the role",
                            HANDOVER_TIMEOUT.as_millis()
                        ),
                    );
                }
            }
        }
        self.evaluate(now);
    }

    fn serving_peer_up(&self) -> bool {
        self.serving_peer().is_some()
    }

    fn all_peers_up(&self) -> bool {
        self.peers.values().all(|p| p.up)
    }

    /// The rules that depend on the facts rather than on one event.
    fn evaluate(&mut self, now: Instant) {
        // A few rounds: one fact can allow two steps (e.g. waiting → syncing → standby).
        for _ in 0..4 {
            if !self.evaluate_once(now) {
                break;
            }
        }
    }

    fn evaluate_once(&mut self, now: Instant) -> bool {
        if self.quorum.is_some() {
            return self.evaluate_quorum();
        }
        let serving_peer = self
            .peers
            .iter()
            .find(|(_, p)| p.up && p.role.is_some_and(Role::serves))
            .map(|(n, p)| (n.clone(), p.clone()));
        match self.role {
            Role::Waiting => {
                if let Some((n, p)) = serving_peer {
                    self.go(
                        Role::Syncing,
                        format!("peer `{n}` is {}", p.role.map_or("", Role::name)),
                    );
                    return true;
                }
                let announced_all = self.peers.values().all(|p| p.up && p.role.is_some());
                if announced_all {
                    // Nobody serves and everybody is here: the lowest name serves once it
                    // has everything every peer has.
                    let lowest = self.peers.keys().all(|n| self.me < *n);
                    let merged = self.peers.values().all(|p| p.says_me_in_sync);
                    if lowest && merged {
                        self.go(
                            Role::Active,
                            "every peer is up and none serves: this node's name sorts lowest \
                             and it has every peer's leases"
                                .into(),
                        );
                        return true;
                    }
                    return false;
                }
                let nobody_up = self.peers.values().all(|p| !p.up);
                if nobody_up && now.duration_since(self.started) >= self.startup_wait {
                    match self.remembered {
                        Some(r @ (Role::Active | Role::ActiveAlone | Role::HandingOver)) => {
                            self.go(
                                Role::ActiveAlone,
                                format!(
                                    "no peer within {} ms of start and this node was {} before \
                                     it stopped: serving this node's share",
                                    self.startup_wait.as_millis(),
                                    r.name()
                                ),
                            );
                            return true;
                        }
                        Some(Role::PartnerDown) => {
                            self.go(
                                Role::PartnerDown,
                                format!(
                                    "no peer within {} ms of start and the operator had \
                                     confirmed it down before this node stopped",
                                    self.startup_wait.as_millis()
                                ),
                            );
                            return true;
                        }
                        _ => {}
                    }
                }
                false
            }
            Role::Syncing => match serving_peer {
                Some((n, p)) if p.says_me_in_sync => {
                    self.go(
                        Role::Standby,
                        format!("in sync with `{n}` (it says this node has all its leases)"),
                    );
                    true
                }
                None if self.peers.values().any(|p| p.up && p.role.is_some()) => {
                    // The peer we synced from stopped serving without a handover to us.
                    self.go(Role::Waiting, "no peer serves any more".into());
                    true
                }
                _ => false,
            },
            Role::Standby => {
                if serving_peer.is_none()
                    && self.all_peers_up()
                    && self.peers.values().all(|p| p.role.is_some())
                    && !self
                        .peers
                        .values()
                        .any(|p| p.role == Some(Role::HandingOver))
                {
                    // Everybody is here and nobody serves (the active restarted faster than its
                    // link was declared dead): elect again.
                    self.go(Role::Waiting, "no peer serves any more".into());
                    return true;
                }
                false
            }
            Role::Active | Role::ActiveAlone | Role::PartnerDown => {
                if let Some((n, p)) = serving_peer {
                    if n < self.me {
                        self.go(
                            Role::Syncing,
                            format!(
                                "peer `{n}` also serves ({}): the lower name keeps the role",
                                p.role.map_or("", Role::name)
                            ),
                        );
                        return true;
                    }
                    return false;
                }
                if self.role != Role::Active && self.all_peers_up() {
                    let merged = self
                        .peers
                        .values()
                        .all(|p| p.says_me_in_sync && p.i_see_in_sync);
                    if merged {
                        let from = self.role;
                        self.go(
                            Role::Active,
                            format!(
                                "every peer is back and in sync (was {}): serving the whole pool",
                                from.name()
                            ),
                        );
                        return true;
                    }
                }
                false
            }
            Role::HandingOver => {
                let Some(s) = &self.switchover else {
                    return false;
                };
                let to = s.to.clone();
                if self.peer_role(&to) == Some(Role::Active) {
                    self.switchover = None;
                    self.go(Role::Standby, format!("switchover: `{to}` is active"));
                    return true;
                }
                false
            }
        }
    }

    /// The rules with three or more appliances: the consensus's leader serves the whole pool
    /// while a majority acknowledges it; everyone else follows it (syncing, then standby) or
    /// waits; a node that loses its majority stops serving at once.
    fn evaluate_quorum(&mut self) -> bool {
        let q = self.quorum.clone().unwrap_or_default();
        let me_leads = q.leader.as_deref() == Some(self.me.as_str());
        match self.role {
            Role::HandingOver => {
                let Some(to) = self.switchover.as_ref().map(|s| s.to.clone()) else {
                    return false;
                };
                if q.leader.as_deref() == Some(to.as_str()) {
                    self.switchover = None;
                    self.go(
                        Role::Standby,
                        format!("switchover: `{to}` leads (term {})", q.term),
                    );
                    return true;
                }
                false
            }
            Role::Active | Role::PartnerDown if me_leads && q.leading_with_quorum => {
                if self.role == Role::PartnerDown {
                    self.go(
                        Role::Active,
                        format!("elected by a majority (term {})", q.term),
                    );
                    return true;
                }
                false
            }
            Role::Active => {
                let cause = match &q.leader {
                    Some(l) if *l != self.me => {
                        format!("`{l}` leads (term {}): this node stops serving", q.term)
                    }
                    _ => format!(
                        "no majority acknowledges this node (term {}): it stops serving",
                        q.term
                    ),
                };
                let to = if q.leader.as_deref().is_some_and(|l| l != self.me) {
                    Role::Syncing
                } else {
                    Role::Waiting
                };
                self.go(to, cause);
                true
            }
            Role::PartnerDown => {
                // Forced by the operator without a majority: kept until a leader appears.
                match &q.leader {
                    Some(l) if *l != self.me => {
                        let cause =
                            format!("`{l}` leads (term {}): this node stops serving", q.term);
                        self.go(Role::Syncing, cause);
                        true
                    }
                    _ => false,
                }
            }
            Role::Waiting | Role::Standby | Role::Syncing | Role::ActiveAlone
                if me_leads && q.leading_with_quorum =>
            {
                let from = self.role;
                self.go(
                    Role::Active,
                    format!(
                        "elected by a majority (term {}; was {})",
                        q.term,
                        from.name()
                    ),
                );
                true
            }
            Role::Waiting => match &q.leader {
                Some(l) if *l != self.me && self.peer_role(l).is_some_and(Role::serves) => {
                    self.go(Role::Syncing, format!("`{l}` leads (term {})", q.term));
                    true
                }
                _ => false,
            },
            Role::Syncing => match &q.leader {
                Some(l) if *l != self.me => {
                    let in_sync = self.peers.get(l).is_some_and(|p| p.up && p.says_me_in_sync);
                    if in_sync && self.peer_role(l).is_some_and(Role::serves) {
                        self.go(
                            Role::Standby,
                            format!("in sync with the leader `{l}` (term {})", q.term),
                        );
                        return true;
                    }
                    false
                }
                _ => false,
            },
            Role::Standby => false,
            Role::ActiveAlone => {
                self.go(
                    Role::Waiting,
                    "three or more appliances: the majority decides".into(),
                );
                true
            }
        }
    }

    fn go(&mut self, to: Role, cause: String) {
        if to == self.role {
            return;
        }
        if to != Role::HandingOver {
            self.switchover = None;
        }
        self.transitions.push(Transition {
            from: self.role,
            to,
            cause,
        });
        self.role = to;
    }
}

pub mod driver;

#[cfg(test)]
mod tests;

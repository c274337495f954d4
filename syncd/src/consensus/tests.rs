//! A simulated network of [`Consensus`] nodes in one process: every tick each live node in
//! turn ticks and the outboxes are delivered (through [`crate::Message::Raft`]'s encoding)
//! until none is left, skipping dead nodes and cut links. So the nodes tick at different phases
//! of the tick (as separate appliances do) and a message arrives before the next node ticks
//! (a LAN round trip is far below a 50 ms tick). The figures in ticks are raft's own timing; a
//! real network adds its round trips.

use std::collections::HashSet;

use proptest::prelude::*;
use protobuf::ProtobufEnum as _;

use super::*;
use crate::Message;

const E: usize = ELECTION_TICKS;
const H: usize = HEARTBEAT_TICKS;

struct Sim {
    names: Vec<String>,
    nodes: Vec<Consensus>,
    dead: Vec<bool>,
    /// Unordered pairs (lower index first) that cannot reach each other.
    cut: HashSet<(usize, usize)>,
    ticks: u64,
}

impl Sim {
    /// `n` nodes named in an order that is not sorted, so the id mapping is exercised.
    fn new(n: usize) -> Sim {
        let names: Vec<String> = (0..n).rev().map(|i| format!("node-{i}")).collect();
        let nodes = names
            .iter()
            .map(|me| Consensus::new(me, &names, E, H).unwrap())
            .collect();
        Sim {
            names,
            nodes,
            dead: vec![false; n],
            cut: HashSet::new(),
            ticks: 0,
        }
    }

    fn index(&self, name: &str) -> usize {
        self.names.iter().position(|n| n == name).unwrap()
    }

    fn can_talk(&self, a: usize, b: usize) -> bool {
        !self.dead[a] && !self.dead[b] && !self.cut.contains(&(a.min(b), a.max(b)))
    }

    fn partition(&mut self, side: &[usize]) {
        for &a in side {
            for b in 0..self.nodes.len() {
                if !side.contains(&b) {
                    self.cut.insert((a.min(b), a.max(b)));
                }
            }
        }
    }

    fn deliver(&mut self) {
        for _round in 0..1000 {
            let mut queue = Vec::new();
            for i in 0..self.nodes.len() {
                if self.dead[i] {
                    continue;
                }
                for (to, data) in self.nodes[i].outbox().unwrap() {
                    let j = self.index(&to);
                    assert_ne!(i, j, "a message to itself");
                    if self.can_talk(i, j) {
                        // Through syncd's peer message encoding, as on the wire.
                        let wire = Message::Raft { data }.to_bytes().unwrap();
                        let Message::Raft { data } = Message::decode(&wire).unwrap() else {
                            panic!("not a raft message");
                        };
                        queue.push((i, j, data));
                    }
                }
            }
            if queue.is_empty() {
                return;
            }
            for (i, j, data) in queue {
                let from = self.names[i].clone();
                self.nodes[j].step(&from, &data).unwrap();
            }
        }
        panic!("messages still flowing after 1000 rounds");
    }

    fn tick(&mut self) {
        self.ticks += 1;
        for i in 0..self.nodes.len() {
            if !self.dead[i] {
                self.nodes[i].tick();
                self.deliver();
                self.assert_one_lease();
            }
        }
    }

    /// Never two nodes that both believe they lead with a majority's acknowledgement.
    fn assert_one_lease(&self) {
        let with_quorum: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| !self.dead[i] && self.nodes[i].leader_has_quorum())
            .collect();
        assert!(
            with_quorum.len() <= 1,
            "tick {}: two leaders with a quorum: {with_quorum:?}",
            self.ticks
        );
    }

    /// The leader every node of `group` (live) agrees on, with one term, if there is one.
    fn agreed_leader(&self, group: &[usize]) -> Option<usize> {
        let leaders: Vec<usize> = group
            .iter()
            .copied()
            .filter(|&i| self.nodes[i].is_leader())
            .collect();
        let [l] = leaders[..] else { return None };
        let name = &self.names[l];
        let term = self.nodes[l].term();
        group
            .iter()
            .all(|&i| self.nodes[i].leader().as_ref() == Some(name) && self.nodes[i].term() == term)
            .then_some(l)
    }

    fn live(&self) -> Vec<usize> {
        (0..self.nodes.len()).filter(|&i| !self.dead[i]).collect()
    }

    /// Ticks until `group` agrees on a leader; the number of ticks it took.
    fn tick_until_leader(&mut self, group: &[usize], max: u64) -> Option<(usize, u64)> {
        for t in 1..=max {
            self.tick();
            if let Some(l) = self.agreed_leader(group) {
                return Some((l, t));
            }
        }
        None
    }

    fn elect(&mut self) -> usize {
        let live = self.live();
        self.tick_until_leader(&live, 100).expect("a leader").0
    }
}

#[test]
fn exactly_one_leader_emerges_and_stays_with_three_and_five_nodes() {
    for n in [3, 5] {
        let mut sim = Sim::new(n);
        let leader = sim.elect();
        let term = sim.nodes[leader].term();
        // Nobody loses it while the network is whole.
        for _ in 0..200 {
            sim.tick();
            assert_eq!(sim.agreed_leader(&sim.live()), Some(leader), "{n} nodes");
        }
        assert_eq!(sim.nodes[leader].term(), term);
        assert!(sim.nodes[leader].leader_has_quorum());
        for (i, node) in sim.nodes.iter().enumerate() {
            assert_eq!(node.is_leader(), i == leader);
            assert_eq!(node.nodes().len(), n);
        }
    }
}

/// The distribution of ticks from the leader's silent loss (no closed link: frozen host, cut
/// cable) until the survivors agree on a new one.
fn silent_loss_ticks(n: usize, trials: usize) -> Vec<u64> {
    let mut took = Vec::new();
    for trial in 0..trials {
        let mut sim = Sim::new(n);
        sim.elect();
        // Lose it anywhere in the heartbeat cycle.
        for _ in 0..(trial % (H + 1)) {
            sim.tick();
        }
        let old = sim.agreed_leader(&sim.live()).unwrap();
        sim.dead[old] = true;
        let live = sim.live();
        let (new, ticks) = sim
            .tick_until_leader(&live, 10 * E as u64)
            .expect("a new leader");
        assert_ne!(new, old);
        took.push(ticks);
    }
    took
}

#[test]
fn a_silent_leader_is_replaced_within_one_second() {
    for (n, trials) in [(3, 300), (5, 100)] {
        let took = silent_loss_ticks(n, trials);
        let max = *took.iter().max().unwrap();
        let mean = took.iter().sum::<u64>() as f64 / took.len() as f64;
        let ms = |t: f64| t * TICK.as_millis() as f64;
        eprintln!(
            "{n} nodes, {trials} silent leader losses: new leader after mean {mean:.1} ticks \
             ({:.0} ms), max {max} ticks ({:.0} ms), tick {} ms",
            ms(mean),
            ms(max as f64),
            TICK.as_millis()
        );
        // Randomised timeout < 2 × election ticks after the last heartbeat.
        assert!(max < 2 * E as u64, "{n} nodes: {max} ticks");
        assert!(ms(max as f64) < 1000.0);
    }
}

#[test]
fn a_closed_link_to_the_leader_elects_a_new_one_within_two_ticks() {
    for n in [3, 5] {
        let mut worst = 0;
        for trial in 0..50 {
            let mut sim = Sim::new(n);
            sim.elect();
            for _ in 0..(trial % (H + 1)) {
                sim.tick();
            }
            let old = sim.agreed_leader(&sim.live()).unwrap();
            sim.dead[old] = true;
            let old_name = sim.names[old].clone();
            for i in sim.live() {
                sim.nodes[i].peer_link_down(&old_name).unwrap();
            }
            let live = sim.live();
            let (new, ticks) = sim.tick_until_leader(&live, 10 * E as u64).unwrap();
            assert_ne!(new, old);
            worst = worst.max(ticks);
        }
        eprintln!("{n} nodes, link to the leader closed: new leader within {worst} ticks");
        assert!(worst <= 2, "{n} nodes: {worst} ticks");
    }
}

#[test]
fn a_link_down_while_the_leader_is_alive_deposes_nobody() {
    let mut sim = Sim::new(3);
    let leader = sim.elect();
    let term = sim.nodes[leader].term();
    let follower = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    // Only the link leader–follower breaks; the follower still reaches the other node.
    sim.cut.insert((leader.min(follower), leader.max(follower)));
    let leader_name = sim.names[leader].clone();
    sim.nodes[follower].peer_link_down(&leader_name).unwrap();
    for _ in 0..(20 * E) {
        sim.tick();
        assert!(sim.nodes[leader].is_leader());
        assert_eq!(
            sim.nodes[leader].term(),
            term,
            "pre-vote: no term inflation"
        );
        assert_eq!(sim.nodes[other].leader(), Some(leader_name.clone()));
        assert!(!sim.nodes[follower].is_leader());
    }
    assert_eq!(sim.nodes[follower].term(), term);
    sim.cut.clear();
    for _ in 0..(2 * E) {
        sim.tick();
    }
    assert_eq!(sim.agreed_leader(&[0, 1, 2]), Some(leader));
    assert_eq!(sim.nodes[leader].term(), term);
}

/// `minority` holds the old leader: it loses its lease, then its leadership, never elects
/// anyone; the majority elects a new leader; after healing there is one leader, the
/// majority's, and the terms agree.
fn partition_with_the_leader_in_the_minority(n: usize, minority_size: usize) {
    let mut sim = Sim::new(n);
    let old = sim.elect();
    let old_term = sim.nodes[old].term();
    let mut minority = vec![old];
    minority.extend((0..n).filter(|&i| i != old).take(minority_size - 1));
    let majority: Vec<usize> = (0..n).filter(|i| !minority.contains(i)).collect();
    sim.partition(&minority);

    let mut lease_lost = None;
    let mut stepped_down = None;
    let mut majority_leader = None;
    for t in 1..=(6 * E as u64) {
        sim.tick();
        if lease_lost.is_none() && !sim.nodes[old].leader_has_quorum() {
            lease_lost = Some(t);
        }
        if stepped_down.is_none() && !sim.nodes[old].is_leader() {
            stepped_down = Some(t);
        }
        if majority_leader.is_none() {
            if let Some(l) = sim.agreed_leader(&majority) {
                // The old leader's lease ended before the majority could elect anyone.
                assert!(
                    lease_lost.is_some(),
                    "new leader at tick {t} while the old has a lease"
                );
                majority_leader = Some((l, t));
            }
        }
        for &i in &minority {
            if lease_lost.is_some() {
                assert!(
                    !sim.nodes[i].leader_has_quorum(),
                    "tick {t}: minority node {i}"
                );
            }
            if stepped_down.is_some() {
                assert!(
                    !sim.nodes[i].is_leader(),
                    "tick {t}: minority node {i} leads"
                );
                assert_eq!(
                    sim.nodes[i].term(),
                    old_term,
                    "pre-vote: minority term stays"
                );
            }
        }
    }
    let lease_lost = lease_lost.expect("the old leader's lease ends");
    let stepped_down = stepped_down.expect("the old leader steps down");
    let (new, elected) = majority_leader.expect("the majority elects a leader");
    eprintln!(
        "{n} nodes, leader cut off with {} others: lease lost after {lease_lost} ticks, \
         stepped down after {stepped_down}, majority leader after {elected}",
        minority_size - 1
    );
    assert!(
        lease_lost <= (E - H + 1) as u64,
        "lease lost after {lease_lost} ticks"
    );
    assert!(
        stepped_down <= 2 * E as u64,
        "stepped down after {stepped_down} ticks"
    );
    assert!(elected <= 3 * E as u64, "elected after {elected} ticks");
    assert!(!minority.contains(&new));
    let new_term = sim.nodes[new].term();
    assert!(new_term > old_term);

    sim.cut.clear();
    for _ in 0..(4 * E) {
        sim.tick();
        let leaders: Vec<usize> = (0..n).filter(|&i| sim.nodes[i].is_leader()).collect();
        assert_eq!(
            leaders,
            vec![new],
            "after healing: one leader, the majority's"
        );
    }
    assert_eq!(sim.agreed_leader(&sim.live()), Some(new));
    assert_eq!(sim.nodes[new].term(), new_term);
    assert!(sim.nodes[new].leader_has_quorum());
}

#[test]
fn a_partition_fences_the_old_leader_in_the_minority_three_nodes() {
    partition_with_the_leader_in_the_minority(3, 1);
}

#[test]
fn a_partition_fences_the_old_leader_in_the_minority_five_nodes() {
    partition_with_the_leader_in_the_minority(5, 1);
    partition_with_the_leader_in_the_minority(5, 2);
}

#[test]
fn a_follower_cut_off_alone_leaves_the_leader_in_place() {
    let mut sim = Sim::new(3);
    let leader = sim.elect();
    let term = sim.nodes[leader].term();
    let lone = (leader + 1) % 3;
    sim.partition(&[lone]);
    for _ in 0..(10 * E) {
        sim.tick();
        assert!(sim.nodes[leader].is_leader());
        assert!(sim.nodes[leader].leader_has_quorum());
        assert!(!sim.nodes[lone].is_leader());
        assert!(!sim.nodes[lone].leader_has_quorum());
    }
    // The lone node forgot the leader (it campaigns by pre-vote) without raising its term.
    assert_eq!(sim.nodes[lone].leader(), None);
    assert_eq!(sim.nodes[lone].term(), term);
    sim.cut.clear();
    let (back, _) = sim.tick_until_leader(&[0, 1, 2], 4 * E as u64).unwrap();
    assert_eq!(back, leader);
    assert_eq!(sim.nodes[leader].term(), term);
}

#[test]
fn transfer_leader_moves_leadership_to_the_named_node() {
    let mut sim = Sim::new(3);
    let leader = sim.elect();
    let target = (leader + 2) % 3;
    let target_name = sim.names[target].clone();
    let follower = (leader + 1) % 3;
    assert!(matches!(
        sim.nodes[follower].transfer_leader(&target_name),
        Err(ConsensusError::NotLeader)
    ));
    assert!(matches!(
        sim.nodes[leader].transfer_leader("nobody"),
        Err(ConsensusError::UnknownNode(_))
    ));
    sim.nodes[leader].transfer_leader(&target_name).unwrap();
    // The target is up to date: it is told to campaign at once and wins without a tick.
    sim.deliver();
    assert_eq!(sim.agreed_leader(&[0, 1, 2]), Some(target));
    // And back, then to itself (a no-op).
    let back = sim.names[leader].clone();
    sim.nodes[target].transfer_leader(&back).unwrap();
    sim.deliver();
    assert_eq!(sim.agreed_leader(&[0, 1, 2]), Some(leader));
    sim.nodes[leader].transfer_leader(&back).unwrap();
    sim.deliver();
    assert_eq!(sim.agreed_leader(&[0, 1, 2]), Some(leader));
}

#[test]
fn a_follower_restarted_with_an_empty_log_rejoins_without_a_panic() {
    let mut sim = Sim::new(3);
    let leader = sim.elect();
    // Some elections so the log has several entries.
    for round in 0..3 {
        let cur = sim.agreed_leader(&[0, 1, 2]).unwrap();
        let to = sim.names[(cur + 1 + round % 2) % 3].clone();
        sim.nodes[cur].transfer_leader(&to).unwrap();
        sim.deliver();
    }
    let _ = leader;
    let leader = sim.agreed_leader(&[0, 1, 2]).unwrap();
    let follower = (leader + 1) % 3;
    // The follower's syncd restarts, in memory only: term, vote and log are gone, while the
    // leader still believes it holds the log (raft-rs would panic on the leader's heartbeat
    // commit without the clamp in `check_incoming`).
    let name = sim.names[follower].clone();
    sim.nodes[follower] = Consensus::new(&name, &sim.names, E, H).unwrap();
    for _ in 0..(4 * E) {
        sim.tick();
    }
    assert_eq!(sim.agreed_leader(&[0, 1, 2]), Some(leader));
}

#[test]
fn a_node_restarted_from_its_state_file_rejoins_a_running_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let mut sim = Sim::new(3);
    let names = sim.names.clone();
    let path = |i: usize| dir.path().join(format!("{i}.raft"));
    for (i, n) in names.iter().enumerate() {
        sim.nodes[i] = Consensus::open(n, &names, E, H, &path(i)).unwrap();
    }
    let leader = sim.elect();
    assert_eq!(sim.nodes[leader].state_name(), "leader");
    let term = sim.nodes[leader].term();
    // A follower restarts: same leader, same term afterwards.
    let follower = (leader + 1) % 3;
    sim.nodes[follower] = Consensus::open(&names[follower], &names, E, H, &path(follower)).unwrap();
    assert_eq!(sim.nodes[follower].state_name(), "follower");
    assert_eq!(sim.nodes[follower].term(), term);
    for _ in 0..(4 * E) {
        sim.tick();
    }
    assert_eq!(sim.agreed_leader(&[0, 1, 2]), Some(leader));
    assert_eq!(sim.nodes[leader].term(), term);
    // The leader restarts (down for a while): the others elect one of themselves; it rejoins
    // as a follower of that one.
    sim.dead[leader] = true;
    let live = sim.live();
    let (new, _) = sim.tick_until_leader(&live, 4 * E as u64).unwrap();
    sim.nodes[leader] = Consensus::open(&names[leader], &names, E, H, &path(leader)).unwrap();
    sim.dead[leader] = false;
    for _ in 0..(4 * E) {
        sim.tick();
    }
    assert_eq!(sim.agreed_leader(&[0, 1, 2]), Some(new));
}

#[test]
fn configuration_errors_are_errors() {
    let names: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
    assert!(matches!(
        Consensus::new("a", &names, 2, 2),
        Err(ConsensusError::Config(_))
    ));
    let twice: Vec<String> = ["a", "b", "b"].map(String::from).to_vec();
    assert!(matches!(
        Consensus::new("a", &twice, E, H),
        Err(ConsensusError::DuplicateNode(n)) if n == "b"
    ));
    // `me` need not be in the list; ids follow the sorted names.
    let c = Consensus::new("0", &names, E, H).unwrap();
    assert_eq!(c.nodes(), ["0", "a", "b", "c"]);
    let mut c = Consensus::new("b", &names, E, H).unwrap();
    assert!(matches!(
        c.step("zz", &[8, 1]),
        Err(ConsensusError::UnknownNode(_))
    ));
    assert!(matches!(
        c.step("b", &[8, 1]),
        Err(ConsensusError::UnknownNode(_))
    ));
    assert!(matches!(
        c.peer_link_down("zz"),
        Err(ConsensusError::UnknownNode(_))
    ));
}

fn raft_message(t: MessageType, from: u64, to: u64, term: u64) -> RaftMessage {
    let mut m = RaftMessage::default();
    m.set_msg_type(t);
    m.from = from;
    m.to = to;
    m.term = term;
    m
}

#[test]
fn messages_raft_would_not_send_are_refused() {
    let mut sim = Sim::new(3);
    let leader = sim.elect();
    let follower = (leader + 1) % 3;
    // Names are node-2, node-1, node-0 in the sim: ids follow the sorted names.
    let lid = sim.nodes[leader].id_of(&sim.names[leader]).unwrap();
    let fid = sim.nodes[leader].id_of(&sim.names[follower]).unwrap();
    let term = sim.nodes[leader].term();
    let leader_name = sim.names[leader].clone();
    let follower_name = sim.names[follower].clone();
    let refused = |c: &mut Consensus, from: &str, m: &RaftMessage| {
        let bytes = m.write_to_bytes().unwrap();
        let before = (c.term(), c.leader(), c.is_leader());
        let r = c.step(from, &bytes);
        assert!(
            matches!(r, Err(ConsensusError::Malformed { .. })),
            "{m:?}: {r:?}"
        );
        assert_eq!((c.term(), c.leader(), c.is_leader()), before);
    };
    let f = &mut sim.nodes[follower];
    // Not bytes of a raft message; too long.
    assert!(matches!(
        f.step(&leader_name, &[0xff; 7]),
        Err(ConsensusError::Malformed { .. })
    ));
    let big = vec![0u8; MAX_RAFT_MESSAGE + 1];
    assert!(matches!(
        f.step(&leader_name, &big),
        Err(ConsensusError::Malformed { .. })
    ));
    // A local or unused type; wrong sender or receiver; no term.
    refused(
        f,
        &leader_name,
        &raft_message(MessageType::MsgHup, lid, fid, term),
    );
    refused(
        f,
        &leader_name,
        &raft_message(MessageType::MsgPropose, lid, fid, term),
    );
    refused(
        f,
        &leader_name,
        &raft_message(MessageType::MsgSnapshot, lid, fid, term),
    );
    refused(
        f,
        &leader_name,
        &raft_message(MessageType::MsgTransferLeader, lid, fid, term),
    );
    refused(
        f,
        &leader_name,
        &raft_message(MessageType::MsgHeartbeat, fid, fid, term),
    );
    refused(
        f,
        &leader_name,
        &raft_message(MessageType::MsgHeartbeat, lid, lid, term),
    );
    refused(
        f,
        &leader_name,
        &raft_message(MessageType::MsgHeartbeat, lid, fid, 0),
    );
    // Entries that are not raft's empty ones, or not consecutive.
    let mut app = raft_message(MessageType::MsgAppend, lid, fid, term + 1);
    app.index = 100;
    app.log_term = term;
    let mut e = Entry {
        index: 101,
        term: term + 1,
        data: b"lease".to_vec().into(),
        ..Default::default()
    };
    app.mut_entries().push(e.clone());
    refused(f, &leader_name, &app);
    e.data = Default::default();
    e.index = 103;
    app.mut_entries()[0] = e.clone();
    refused(f, &leader_name, &app);
    e.index = 101;
    e.term = term + 2;
    app.mut_entries()[0] = e;
    refused(f, &leader_name, &app);
    let mut hb = raft_message(MessageType::MsgHeartbeat, lid, fid, term);
    hb.mut_entries().push(Entry::default());
    refused(f, &leader_name, &hb);
    // A leader transfer order from a node that is not the leader.
    let other = 3 - leader - follower;
    let oid = sim.nodes[leader].id_of(&sim.names[other]).unwrap();
    let other_name = sim.names[other].clone();
    let f = &mut sim.nodes[follower];
    refused(
        f,
        &other_name,
        &raft_message(MessageType::MsgTimeoutNow, oid, fid, term),
    );
    refused(
        f,
        &leader_name,
        &raft_message(MessageType::MsgTimeoutNow, lid, fid, term + 1),
    );
    // A response acknowledging entries the leader never had.
    let l = &mut sim.nodes[leader];
    let mut resp = raft_message(MessageType::MsgAppendResponse, fid, lid, term);
    resp.index = 1_000_000;
    refused(l, &follower_name, &resp);
    // A heartbeat whose commit lies past this log is accepted with the commit lowered.
    let f = &mut sim.nodes[follower];
    let mut hb = raft_message(MessageType::MsgHeartbeat, lid, fid, term);
    hb.commit = 1 << 40;
    f.step(&leader_name, &hb.write_to_bytes().unwrap()).unwrap();
    assert_eq!(f.leader(), Some(leader_name));
}

#[test]
fn the_state_file_keeps_term_vote_and_log_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let names: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
    let paths: Vec<PathBuf> = names
        .iter()
        .map(|n| dir.path().join(format!("{n}.raft")))
        .collect();
    let mut sim = Sim::new(3);
    sim.names = names.clone();
    sim.nodes = names
        .iter()
        .zip(&paths)
        .map(|(n, p)| Consensus::open(n, &names, E, H, p).unwrap())
        .collect();
    let leader = sim.elect();
    let term = sim.nodes[leader].term();
    // Restart every node from its file: same term, votes, log; the same leader is re-elected
    // only through a new election (leadership itself is not kept).
    let before: Vec<(u64, u64, u64)> = sim
        .nodes
        .iter()
        .map(|c| (c.term(), c.raw.raft.vote, c.raw.raft.raft_log.last_index()))
        .collect();
    for (i, (n, p)) in names.iter().zip(&paths).enumerate() {
        sim.nodes[i] = Consensus::open(n, &names, E, H, p).unwrap();
    }
    let after: Vec<(u64, u64, u64)> = sim
        .nodes
        .iter()
        .map(|c| (c.term(), c.raw.raft.vote, c.raw.raft.raft_log.last_index()))
        .collect();
    assert_eq!(before, after);
    let leader_id = leader as u64 + 1;
    assert!(after.iter().all(|&(t, _, last)| t == term && last >= 1));
    assert_eq!(after[leader].1, leader_id);
    assert!(after.iter().filter(|&&(_, v, _)| v == leader_id).count() >= 2);
    let again = sim.elect();
    assert!(sim.nodes[again].term() > term);

    // A damaged file is an error, not a fresh start.
    let mut bytes = fs::read(&paths[0]).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 1;
    fs::write(&paths[0], &bytes).unwrap();
    assert!(matches!(
        Consensus::open("a", &names, E, H, &paths[0]),
        Err(ConsensusError::StateCorrupt { .. })
    ));
    fs::write(&paths[0], b"short").unwrap();
    assert!(matches!(
        Consensus::open("a", &names, E, H, &paths[0]),
        Err(ConsensusError::StateCorrupt { .. })
    ));
    // A file of another set of nodes is set aside; the node starts new.
    let four: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
    let c = Consensus::open("b", &four, E, H, &paths[1]).unwrap();
    assert_eq!(c.term(), 0);
    assert!(paths[1].with_extension("stale").exists());
    assert!(!paths[1].exists());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_to_step_are_an_error_never_a_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let names: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let mut c = Consensus::new("a", &names, E, H).unwrap();
        let _ = c.step("b", &bytes);
        c.outbox().unwrap();
        let _ = decode_raft_message(&bytes);
    }

    /// Well-formed raft messages with random fields, addressed correctly, into a follower and
    /// the leader of a running cluster: refused or handled, never a panic.
    #[test]
    fn random_raft_messages_are_refused_or_handled_never_a_panic(
        t in 0i32..20,
        term_delta in 0u64..3,
        index in prop_oneof![0u64..8, any::<u64>()],
        log_term in 0u64..6,
        commit in prop_oneof![0u64..8, any::<u64>()],
        reject in any::<bool>(),
        reject_hint in prop_oneof![0u64..8, any::<u64>()],
        entries in proptest::collection::vec((0u64..10, 0u64..6), 0..4),
        into_leader in any::<bool>(),
    ) {
        let mut sim = Sim::new(3);
        let leader = sim.elect();
        let target = if into_leader { leader } else { (leader + 1) % 3 };
        let sender = (target + 2) % 3;
        let (tid, sid) = (
            sim.nodes[target].id_of(&sim.names[target]).unwrap(),
            sim.nodes[target].id_of(&sim.names[sender]).unwrap(),
        );
        let Some(msg_type) = MessageType::from_i32(t) else { return Ok(()) };
        let mut m = raft_message(msg_type, sid, tid, sim.nodes[target].term() + term_delta);
        m.index = index;
        m.log_term = log_term;
        m.commit = commit;
        m.reject = reject;
        m.reject_hint = reject_hint;
        for (i, t) in entries {
            m.mut_entries().push(Entry {
                index: i,
                term: t,
                ..Default::default()
            });
        }
        let from = sim.names[sender].clone();
        let _ = sim.nodes[target].step(&from, &m.write_to_bytes().unwrap());
        sim.nodes[target].outbox().unwrap();
        sim.nodes[target].tick();
        sim.nodes[target].outbox().unwrap();
    }
}

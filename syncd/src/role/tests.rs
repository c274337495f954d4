use super::*;

fn t0() -> Instant {
    Instant::now()
}

fn node(me: &str, remembered: Option<Role>, now: Instant) -> Roles {
    Roles::new(
        me,
        &[other(me).to_string()],
        remembered,
        Duration::from_secs(3),
        now,
    )
}

fn other(me: &str) -> &'static str {
    if me == "a" {
        "b"
    } else {
        "a"
    }
}

/// Drives a (lower name) and b through start until a is active and b standby.
fn pair(now: Instant) -> (Roles, Roles) {
    let mut a = node("a", None, now);
    let mut b = node("b", None, now);
    a.peer_up("b", now);
    b.peer_up("a", now);
    exchange(&mut a, &mut b, now);
    (a, b)
}

/// Lets both nodes announce their role and in-sync view to each other until nothing changes
/// (syncd announces after every transition and every change of its in-sync view).
fn exchange(a: &mut Roles, b: &mut Roles, now: Instant) {
    for _ in 0..6 {
        let (ra, rb) = (a.role(), b.role());
        a.peer_announced("b", rb, b.sees_in_sync("a"), now);
        b.peer_announced("a", ra, a.sees_in_sync("b"), now);
        if a.role() == ra && b.role() == rb {
            break;
        }
    }
}

/// The replicators: both sides have each other's leases.
fn synced(a: &mut Roles, b: &mut Roles, now: Instant) {
    a.set_in_sync_view("b", true, now);
    b.set_in_sync_view("a", true, now);
    exchange(a, b, now);
}

#[test]
fn codes_round_trip_and_only_serving_roles_open_the_gate() {
    for r in Role::ALL {
        assert_eq!(Role::from_code(r.code()), Some(r));
    }
    assert_eq!(Role::from_code(0), None);
    assert_eq!(Role::from_code(8), None);
    let serving: Vec<_> = Role::ALL.into_iter().filter(|r| r.serves()).collect();
    assert_eq!(
        serving,
        vec![Role::Active, Role::ActiveAlone, Role::PartnerDown]
    );
    assert_eq!(Role::ActiveAlone.serving(), Serving::Share);
}

#[test]
fn at_start_the_lower_name_becomes_active_only_once_it_has_the_peers_leases() {
    let now = t0();
    let (mut a, mut b) = pair(now);
    // Both up and announced, nobody in sync yet: nobody serves.
    assert_eq!((a.role(), b.role()), (Role::Waiting, Role::Waiting));
    synced(&mut a, &mut b, now);
    assert_eq!(a.role(), Role::Active);
    assert_eq!(b.role(), Role::Standby);
    let t = a.take_transitions();
    assert_eq!(t.len(), 1);
    assert!(t[0].cause.contains("sorts lowest"), "{}", t[0].cause);
    let t = b.take_transitions();
    assert_eq!(
        t.iter().map(|t| t.to).collect::<Vec<_>>(),
        vec![Role::Syncing, Role::Standby]
    );
}

#[test]
fn the_standby_takes_over_its_share_when_the_active_is_lost_and_the_whole_pool_on_partner_down() {
    let now = t0();
    let (mut a, mut b) = pair(now);
    synced(&mut a, &mut b, now);
    b.take_transitions();
    b.peer_down("a", "closed by peer", now);
    assert_eq!(b.role(), Role::ActiveAlone);
    let t = b.take_transitions();
    assert!(t[0].cause.contains("closed by peer"), "{}", t[0].cause);
    // The active side of a cut link: its share too.
    a.peer_down("b", "heartbeat timeout", now);
    assert_eq!(a.role(), Role::ActiveAlone);
    // Partner-down is refused while the peer is connected, taken when it is not.
    b.peer_up("a", now);
    assert!(b.partner_down(now).is_err());
    b.peer_down("a", "closed by peer", now);
    b.partner_down(now).unwrap();
    assert_eq!(b.role(), Role::PartnerDown);
    assert_eq!(b.role().serving(), Serving::Whole);
}

#[test]
fn a_healed_partition_leaves_the_lower_name_serving_and_the_other_resyncs() {
    let now = t0();
    let (mut a, mut b) = pair(now);
    synced(&mut a, &mut b, now);
    a.peer_down("b", "heartbeat timeout", now);
    b.peer_down("a", "heartbeat timeout", now);
    assert_eq!((a.role(), b.role()), (Role::ActiveAlone, Role::ActiveAlone));
    a.take_transitions();
    b.take_transitions();
    a.peer_up("b", now);
    b.peer_up("a", now);
    exchange(&mut a, &mut b, now);
    // b yields at once; a keeps its share until both have each other's leases.
    assert_eq!(b.role(), Role::Syncing);
    assert_eq!(a.role(), Role::ActiveAlone);
    synced(&mut a, &mut b, now);
    assert_eq!((a.role(), b.role()), (Role::Active, Role::Standby));
}

#[test]
fn switchover_hands_over_only_to_an_in_sync_standby_and_swaps_the_roles() {
    let now = t0();
    let (mut a, mut b) = pair(now);
    // Not in sync yet: refused (a is not even serving).
    assert!(a.switchover(None, now).is_err());
    synced(&mut a, &mut b, now);
    assert!(
        b.switchover(None, now).is_err(),
        "the standby does not serve"
    );
    assert!(a.switchover(Some("zz"), now).is_err());
    assert_eq!(a.switchover(None, now).unwrap(), "b");
    assert_eq!(a.role(), Role::HandingOver);
    assert_eq!(a.handover_due(), Some("b"));
    a.handover_sent();
    assert_eq!(a.handover_due(), None);
    exchange(&mut a, &mut b, now);
    // b does not serve until it applied everything up to a's heads.
    assert_eq!(b.role(), Role::Standby);
    b.handover_applied("a", now);
    assert_eq!(b.role(), Role::Active);
    exchange(&mut a, &mut b, now);
    assert_eq!(a.role(), Role::Standby);
    // And back.
    assert_eq!(b.switchover(Some("a"), now).unwrap(), "a");
    a.handover_applied("b", now);
    exchange(&mut a, &mut b, now);
    assert_eq!((a.role(), b.role()), (Role::Active, Role::Standby));
}

#[test]
fn a_switchover_that_does_not_complete_gives_the_role_back() {
    let now = t0();
    let (mut a, mut b) = pair(now);
    synced(&mut a, &mut b, now);
    a.switchover(Some("b"), now).unwrap();
    a.tick(now + HANDOVER_TIMEOUT / 2);
    assert_eq!(a.role(), Role::HandingOver);
    a.tick(now + HANDOVER_TIMEOUT);
    assert_eq!(a.role(), Role::Active);
    // The target lost mid-switchover: serve alone.
    a.switchover(Some("b"), now).unwrap();
    a.peer_down("b", "closed by peer", now);
    assert_eq!(a.role(), Role::ActiveAlone);
}

#[test]
fn a_node_alone_at_start_serves_only_if_it_served_before_it_stopped() {
    let now = t0();
    let wait = Duration::from_secs(3);
    for (remembered, expected) in [
        (None, Role::Waiting),
        (Some(Role::Standby), Role::Waiting),
        (Some(Role::Syncing), Role::Waiting),
        (Some(Role::Active), Role::ActiveAlone),
        (Some(Role::ActiveAlone), Role::ActiveAlone),
        (Some(Role::PartnerDown), Role::PartnerDown),
    ] {
        let mut n = node("a", remembered, now);
        n.tick(now + wait / 2);
        assert_eq!(n.role(), Role::Waiting, "{remembered:?} before the wait");
        n.tick(now + wait);
        assert_eq!(n.role(), expected, "{remembered:?}");
    }
}

#[test]
fn a_syncing_node_never_takes_over_with_a_partial_table() {
    let now = t0();
    let mut b = node("b", None, now);
    b.peer_up("a", now);
    b.peer_announced("a", Role::ActiveAlone, false, now);
    assert_eq!(b.role(), Role::Syncing);
    b.peer_down("a", "closed by peer", now);
    assert_eq!(b.role(), Role::Waiting);
    b.tick(now + Duration::from_secs(60));
    assert_eq!(b.role(), Role::Waiting);
    // Unless the operator says so.
    b.partner_down(now).unwrap();
    assert_eq!(b.role(), Role::PartnerDown);
}

fn trio(me: &str, now: Instant) -> Roles {
    let peers: Vec<String> = ["a", "b", "c"]
        .iter()
        .filter(|n| **n != me)
        .map(|n| n.to_string())
        .collect();
    Roles::new(me, &peers, None, Duration::from_secs(3), now)
}

#[test]
fn with_three_nodes_the_majoritys_leader_serves_and_the_others_follow() {
    let now = t0();
    let mut a = trio("a", now);
    assert!(a.is_quorum());
    // Waiting with nobody connected: may not lead (no majority up).
    assert!(!a.may_lead());
    for p in ["b", "c"] {
        a.peer_up(p, now);
        a.peer_announced(p, Role::Waiting, true, now);
    }
    assert!(a.may_lead(), "every connected peer says a has its leases");
    // Elected, but serving only once a majority acknowledged it.
    a.set_consensus(Some("a".into()), false, 2, now);
    assert_eq!(a.role(), Role::Waiting);
    a.set_consensus(Some("a".into()), true, 2, now);
    assert_eq!(a.role(), Role::Active);
    assert!(a.take_transitions()[0].cause.contains("majority"));
    // A follower: syncing under the leader, standby once the leader says it is in sync.
    let mut b = trio("b", now);
    b.peer_up("a", now);
    b.peer_up("c", now);
    b.peer_announced("c", Role::Waiting, true, now);
    b.peer_announced("a", Role::Active, false, now);
    b.set_consensus(Some("a".into()), false, 2, now);
    assert_eq!(b.role(), Role::Syncing);
    assert!(!b.may_lead(), "a syncing node never campaigns");
    b.peer_announced("a", Role::Active, true, now);
    assert_eq!(b.role(), Role::Standby);
    assert!(b.may_lead());
    // A lost link is not a takeover with three nodes: the majority decides.
    b.peer_down("a", "closed by peer", now);
    assert_eq!(b.role(), Role::Standby);
    b.set_consensus(Some("b".into()), true, 3, now);
    assert_eq!(b.role(), Role::Active);
}

#[test]
fn with_three_nodes_a_leader_without_its_majority_stops_serving() {
    let now = t0();
    let mut a = trio("a", now);
    for p in ["b", "c"] {
        a.peer_up(p, now);
        a.peer_announced(p, Role::Waiting, true, now);
    }
    a.set_consensus(Some("a".into()), true, 2, now);
    assert_eq!(a.role(), Role::Active);
    // Cut off: its lease runs out before anyone else can be elected.
    a.set_consensus(Some("a".into()), false, 2, now);
    assert_eq!(a.role(), Role::Waiting);
    assert!(!a.role().serves());
    // Partner-down is refused while a leader is known, accepted without one.
    a.set_consensus(Some("b".into()), false, 3, now);
    assert!(a.partner_down(now).is_err());
    a.set_consensus(None, false, 3, now);
    // (peers still marked up here: with three nodes only the missing leader matters)
    a.partner_down(now).unwrap();
    assert_eq!(a.role(), Role::PartnerDown);
    // A leader appears: the forced role ends.
    a.set_consensus(Some("c".into()), false, 4, now);
    assert_eq!(a.role(), Role::Syncing);
    // Another node leads while this one is active: it steps back at once.
    let mut c = trio("c", now);
    for p in ["a", "b"] {
        c.peer_up(p, now);
        c.peer_announced(p, Role::Waiting, true, now);
    }
    c.set_consensus(Some("c".into()), true, 4, now);
    assert_eq!(c.role(), Role::Active);
    c.set_consensus(Some("a".into()), false, 5, now);
    assert_eq!(c.role(), Role::Syncing);
}

#[test]
fn with_three_nodes_switchover_ends_when_the_target_leads() {
    let now = t0();
    let mut a = trio("a", now);
    for p in ["b", "c"] {
        a.peer_up(p, now);
        a.peer_announced(p, Role::Waiting, true, now);
    }
    a.set_consensus(Some("a".into()), true, 2, now);
    a.peer_announced("b", Role::Standby, true, now);
    a.set_in_sync_view("b", true, now);
    assert_eq!(a.switchover(Some("b"), now).unwrap(), "b");
    assert_eq!(a.role(), Role::HandingOver);
    assert_eq!(a.handover_due(), Some("b"));
    a.handover_sent();
    // Still the raft leader while the transfer runs: no change.
    a.set_consensus(Some("a".into()), true, 2, now);
    assert_eq!(a.role(), Role::HandingOver);
    a.set_consensus(Some("b".into()), false, 3, now);
    assert_eq!(a.role(), Role::Standby);
}

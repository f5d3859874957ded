//! The group state machine driven by a made-up clock: `t(ms)` is `ms` after an origin.

use super::describe::decode_subscription;
use super::*;

const SESSION: Duration = Duration::from_millis(6_000);
const REBALANCE: Duration = Duration::from_millis(10_000);

struct Clock(Instant);

impl Clock {
    fn new() -> Clock {
        Clock(Instant::now())
    }
    fn at(&self, ms: u64) -> Instant {
        self.0 + Duration::from_millis(ms)
    }
}

fn protocols(names: &[&str]) -> Vec<Protocol> {
    names
        .iter()
        .map(|n| Protocol { name: n.to_string(), metadata: Bytes::from(format!("meta-{n}")) })
        .collect()
}

fn join_req(member_id: &str) -> JoinRequest {
    JoinRequest {
        member_id: member_id.to_string(),
        group_instance_id: None,
        client_id: "client".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout: SESSION,
        rebalance_timeout: REBALANCE,
        protocol_type: "consumer".into(),
        protocols: protocols(&["range", "roundrobin"]),
        require_known_member_id: true,
        supports_skip_assignment: true,
        max_size: i32::MAX as usize,
    }
}

fn static_req(member_id: &str, instance: &str) -> JoinRequest {
    JoinRequest { group_instance_id: Some(instance.to_string()), ..join_req(member_id) }
}

fn sync_req(member_id: &str, generation: i32, assignments: &[(&str, &str)]) -> SyncRequest {
    SyncRequest {
        member_id: member_id.to_string(),
        group_instance_id: None,
        generation,
        protocol_type: Some("consumer".into()),
        protocol_name: None,
        assignments: assignments
            .iter()
            .map(|(m, a)| (m.to_string(), Bytes::from(a.to_string())))
            .collect(),
    }
}

/// Join replies among the effects, by member id.
fn join_replies(effects: &[Effect]) -> HashMap<String, JoinReply> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Join { member_id, reply } => Some((member_id.clone(), reply.clone())),
            _ => None,
        })
        .collect()
}

fn sync_replies(effects: &[Effect]) -> HashMap<String, SyncReply> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Sync { member_id, reply } => Some((member_id.clone(), reply.clone())),
            _ => None,
        })
        .collect()
}

fn persists(effects: &[Effect]) -> Vec<Snapshot> {
    effects
        .iter()
        .filter_map(|e| if let Effect::Persist(s) = e { Some(s.clone()) } else { None })
        .collect()
}

/// KIP-394 first round trip: returns the minted member id.
fn member_id_required(g: &mut Group, now: Instant) -> String {
    match g.join(join_req(""), now) {
        JoinOutcome::Reply(r) => {
            assert_eq!(r.error, Some(ResponseError::MemberIdRequired));
            assert_eq!(r.generation, NO_GENERATION);
            assert!(r.member_id.starts_with("client-"), "{}", r.member_id);
            r.member_id
        }
        other => panic!("expected MEMBER_ID_REQUIRED, got {other:?}"),
    }
}

/// Join with a known id; the outcome must be parked.
fn join_waits(g: &mut Group, req: JoinRequest, now: Instant) -> String {
    match g.join(req, now) {
        JoinOutcome::Wait { member_id } => member_id,
        other => panic!("expected to wait, got {other:?}"),
    }
}

/// Leader syncs; the snapshot is "persisted"; returns the sync replies.
fn leader_syncs(
    g: &mut Group,
    leader: &str,
    generation: i32,
    assignments: &[(&str, &str)],
    now: Instant,
) -> HashMap<String, SyncReply> {
    match g.sync(sync_req(leader, generation, assignments), now) {
        SyncOutcome::Persist(snapshot) => {
            assert_eq!(snapshot.generation, generation);
            g.assignment_persisted(generation, Ok(()), now);
        }
        other => panic!("leader sync should persist, got {other:?}"),
    }
    sync_replies(&g.take_effects())
}

/// One member joins an empty group and gets generation 1 with itself as leader.
fn single_member_group(c: &Clock) -> (Group, String) {
    let mut g = Group::new();
    let id = member_id_required(&mut g, c.at(0));
    join_waits(&mut g, join_req(&id), c.at(0));
    let replies = join_replies(&g.take_effects());
    let r = &replies[&id];
    assert_eq!(r.error, None);
    assert_eq!(r.generation, 1);
    assert_eq!(r.leader, id);
    assert_eq!(r.protocol_name.as_deref(), Some("range"));
    assert_eq!(r.members.len(), 1);
    let synced = leader_syncs(&mut g, &id, 1, &[(&id, "all")], c.at(0));
    assert_eq!(synced[&id].assignment, Bytes::from("all"));
    assert_eq!(g.state(), GroupState::Stable);
    (g, id)
}

/// Two members in a Stable generation 2 (a joined alone in gen 1, b's join forced gen 2).
fn two_member_group(c: &Clock) -> (Group, String, String) {
    let (mut g, a) = single_member_group(c);
    let b = member_id_required(&mut g, c.at(100));
    join_waits(&mut g, join_req(&b), c.at(100));
    assert_eq!(g.state(), GroupState::PreparingRebalance);
    assert!(g.take_effects().is_empty(), "b waits for a to rejoin");
    assert_eq!(g.heartbeat(&a, None, 1, c.at(200)), Err(ResponseError::RebalanceInProgress));
    join_waits(&mut g, join_req(&a), c.at(300));
    let replies = join_replies(&g.take_effects());
    assert_eq!(replies.len(), 2);
    assert_eq!(replies[&a].generation, 2);
    assert_eq!(replies[&a].leader, a, "the first member stays leader");
    assert_eq!(replies[&a].members.len(), 2, "leader gets the member list");
    assert!(replies[&b].members.is_empty(), "followers do not");
    assert_eq!(g.sync(sync_req(&b, 2, &[]), c.at(400)), SyncOutcome::Wait);
    let synced = leader_syncs(&mut g, &a, 2, &[(&a, "p0,p1"), (&b, "p2,p3")], c.at(400));
    assert_eq!(synced[&a].assignment, Bytes::from("p0,p1"));
    assert_eq!(synced[&b].assignment, Bytes::from("p2,p3"));
    assert_eq!(g.state(), GroupState::Stable);
    (g, a, b)
}

/// A static member ("pod-1", the leader) and a dynamic one, both in generation 1 (an
/// initial delay gathers them), not yet synced.
fn static_and_dynamic(c: &Clock) -> (Group, String, String) {
    let mut g = Group::new().with_initial_rebalance_delay(Duration::from_millis(100));
    let s = join_waits(&mut g, static_req("", "pod-1"), c.at(0));
    assert!(s.starts_with("pod-1-"), "{s}");
    let d = member_id_required(&mut g, c.at(0));
    join_waits(&mut g, join_req(&d), c.at(0));
    g.tick(c.at(100));
    let replies = join_replies(&g.take_effects());
    assert_eq!(replies.len(), 2);
    assert_eq!(replies[&s].leader, s);
    (g, s, d)
}

#[test]
fn unknown_member_gets_member_id_required_then_joins_with_it() {
    let c = Clock::new();
    let (g, id) = single_member_group(&c);
    assert_eq!(g.generation(), 1);
    assert_eq!(g.member_ids(), vec![id]);
}

#[test]
fn before_v4_a_new_member_joins_at_once() {
    let c = Clock::new();
    let mut g = Group::new();
    let req = JoinRequest { require_known_member_id: false, ..join_req("") };
    let id = join_waits(&mut g, req, c.at(0));
    assert_eq!(join_replies(&g.take_effects())[&id].generation, 1);
}

#[test]
fn pending_member_holds_the_join_phase_until_it_expires() {
    let c = Clock::new();
    let (mut g, a) = single_member_group(&c);
    let _pending = member_id_required(&mut g, c.at(0));
    // a rejoins (as the leader it forces a rebalance); the pending member never comes back.
    join_waits(&mut g, join_req(&a), c.at(10));
    assert!(g.take_effects().is_empty(), "waits for the pending member");
    g.tick(c.at(5_000));
    assert!(g.take_effects().is_empty());
    g.tick(c.at(6_001));
    let replies = join_replies(&g.take_effects());
    assert_eq!(replies[&a].generation, 2, "pending member expired after its session timeout");
}

#[test]
fn second_member_join_triggers_rebalance_and_two_members_split() {
    let c = Clock::new();
    let (g, a, b) = two_member_group(&c);
    assert_eq!(g.generation(), 2);
    let d = g.describe();
    assert_eq!(d.state, GroupState::Stable);
    assert_eq!(d.protocol_name, "range");
    assert_eq!(d.members.iter().map(|m| m.member_id.clone()).collect::<Vec<_>>(), vec![a, b]);
}

#[test]
fn heartbeat_errors_follow_kafka() {
    let c = Clock::new();
    let (mut g, a, _b) = two_member_group(&c);
    assert_eq!(g.heartbeat(&a, None, 2, c.at(500)), Ok(()));
    assert_eq!(g.heartbeat(&a, None, 1, c.at(500)), Err(ResponseError::IllegalGeneration));
    assert_eq!(g.heartbeat("nobody", None, 2, c.at(500)), Err(ResponseError::UnknownMemberId));
}

#[test]
fn sync_errors_follow_kafka() {
    let c = Clock::new();
    let (mut g, a, b) = two_member_group(&c);
    let err = |o: SyncOutcome| match o {
        SyncOutcome::Reply(r) => r.error,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        err(g.sync(sync_req(&a, 1, &[]), c.at(500))),
        Some(ResponseError::IllegalGeneration)
    );
    assert_eq!(
        err(g.sync(sync_req("nobody", 2, &[]), c.at(500))),
        Some(ResponseError::UnknownMemberId)
    );
    let wrong_type = SyncRequest { protocol_type: Some("connect".into()), ..sync_req(&a, 2, &[]) };
    assert_eq!(err(g.sync(wrong_type, c.at(500))), Some(ResponseError::InconsistentGroupProtocol));
    // Stable: a repeated sync returns the member's assignment again.
    match g.sync(sync_req(&b, 2, &[]), c.at(500)) {
        SyncOutcome::Reply(r) => assert_eq!(r.assignment, Bytes::from("p2,p3")),
        other => panic!("{other:?}"),
    }
    // During a rebalance: REBALANCE_IN_PROGRESS.
    join_waits(&mut g, join_req(&a), c.at(600));
    assert_eq!(
        err(g.sync(sync_req(&b, 2, &[]), c.at(600))),
        Some(ResponseError::RebalanceInProgress)
    );
}

#[test]
fn member_session_expiry_triggers_rebalance_and_the_other_gets_everything() {
    let c = Clock::new();
    let (mut g, a, b) = two_member_group(&c);
    // a keeps heartbeating, b goes silent.
    for ms in (1_000..=6_000).step_by(1_000) {
        assert_eq!(g.heartbeat(&a, None, 2, c.at(ms)), Ok(()), "at {ms}");
        g.tick(c.at(ms));
    }
    assert!(g.has_member(&b), "b's session (6 s from its sync at 0.4 s) has not ended yet");
    g.tick(c.at(6_401));
    assert!(!g.has_member(&b), "b expired");
    assert_eq!(g.state(), GroupState::PreparingRebalance);
    assert_eq!(g.heartbeat(&a, None, 2, c.at(6_500)), Err(ResponseError::RebalanceInProgress));
    join_waits(&mut g, join_req(&a), c.at(6_600));
    let replies = join_replies(&g.take_effects());
    assert_eq!(replies[&a].generation, 3);
    assert_eq!(replies[&a].members.len(), 1);
    let synced = leader_syncs(&mut g, &a, 3, &[(&a, "p0,p1,p2,p3")], c.at(6_700));
    assert_eq!(synced[&a].assignment, Bytes::from("p0,p1,p2,p3"));
}

#[test]
fn leader_leaving_hands_leadership_to_the_next_member() {
    let c = Clock::new();
    let (mut g, a, b) = two_member_group(&c);
    let r = g.leave(&[(a.clone(), None)], c.at(500)).unwrap();
    assert_eq!(r, vec![Ok(())]);
    assert_eq!(g.state(), GroupState::PreparingRebalance);
    assert_eq!(g.leader(), Some(b.as_str()));
    join_waits(&mut g, join_req(&b), c.at(600));
    let replies = join_replies(&g.take_effects());
    assert_eq!(replies[&b].leader, b);
    assert_eq!(replies[&b].generation, 3);
}

#[test]
fn last_member_leaving_empties_the_group_and_persists_it() {
    let c = Clock::new();
    let (mut g, a) = single_member_group(&c);
    assert_eq!(g.leave(&[(a.clone(), None)], c.at(500)), Ok(vec![Ok(())]));
    assert_eq!(g.state(), GroupState::Empty);
    assert_eq!(g.generation(), 2, "an empty rebalance still opens a generation");
    let p = persists(&g.take_effects());
    assert_eq!(p.len(), 1);
    assert!(p[0].members.is_empty());
    assert_eq!(p[0].generation, 2);
    assert_eq!(g.leave(&[(a, None)], c.at(600)), Ok(vec![Err(ResponseError::UnknownMemberId)]));
}

#[test]
fn batched_leave_by_member_and_instance_id() {
    let c = Clock::new();
    let (mut g, s, d) = static_and_dynamic(&c);
    let r = g
        .leave(
            &[
                (String::new(), Some("pod-1".into())),
                (d.clone(), None),
                ("ghost".into(), None),
                (String::new(), Some("pod-9".into())),
            ],
            c.at(100),
        )
        .unwrap();
    assert_eq!(
        r,
        vec![
            Ok(()),
            Ok(()),
            Err(ResponseError::UnknownMemberId),
            Err(ResponseError::UnknownMemberId)
        ]
    );
    assert!(!g.has_member(&s) && !g.has_member(&d));
    assert_eq!(g.state(), GroupState::Empty);
}

#[test]
fn members_that_do_not_rejoin_in_time_are_removed() {
    let c = Clock::new();
    let (mut g, a, b) = two_member_group(&c);
    // b's metadata changes: rebalance. a keeps heartbeating but never rejoins.
    let mut changed = join_req(&b);
    changed.protocols =
        vec![Protocol { name: "range".into(), metadata: Bytes::from("new-subscription") }];
    join_waits(&mut g, changed, c.at(1_000));
    for ms in (2_000..11_000).step_by(1_000) {
        assert_eq!(g.heartbeat(&a, None, 2, c.at(ms)), Err(ResponseError::RebalanceInProgress));
        g.tick(c.at(ms));
        assert!(g.take_effects().is_empty(), "still waiting at {ms}");
    }
    g.tick(c.at(11_000));
    let replies = join_replies(&g.take_effects());
    assert_eq!(replies[&b].generation, 3, "rebalance timeout (10 s) passed");
    assert_eq!(replies[&b].leader, b, "leadership moves to a member that rejoined");
    assert!(!g.has_member(&a));
    assert_eq!(g.heartbeat(&a, None, 2, c.at(11_100)), Err(ResponseError::UnknownMemberId));
}

#[test]
fn a_member_that_rejoins_keeps_its_membership_and_completes_the_join_phase() {
    // Cooperative rebalancing: after a generation every member rejoins at once with new
    // "owned partitions" metadata; each rejoin keeps its id and the phase completes as soon
    // as all of them are back.
    let c = Clock::new();
    let (mut g, a, b) = two_member_group(&c);
    let mut ra = join_req(&a);
    ra.protocols = vec![
        Protocol { name: "cooperative-sticky".into(), metadata: Bytes::from("owned a") },
        Protocol { name: "range".into(), metadata: Bytes::from("x") },
    ];
    let mut rb = join_req(&b);
    rb.protocols = ra.protocols.clone();
    join_waits(&mut g, ra, c.at(1_000));
    assert!(g.take_effects().is_empty());
    join_waits(&mut g, rb, c.at(1_100));
    let replies = join_replies(&g.take_effects());
    assert_eq!(replies.len(), 2);
    assert_eq!(replies[&a].generation, 3);
    assert_eq!(replies[&a].protocol_name.as_deref(), Some("cooperative-sticky"), "both prefer it");
    assert_eq!(g.member_ids(), vec![a, b]);
}

#[test]
fn follower_rejoining_with_same_metadata_in_stable_gets_current_generation() {
    let c = Clock::new();
    let (mut g, _a, b) = two_member_group(&c);
    match g.join(join_req(&b), c.at(1_000)) {
        JoinOutcome::Reply(r) => {
            assert_eq!(r.error, None);
            assert_eq!(r.generation, 2);
            assert!(r.members.is_empty());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(g.state(), GroupState::Stable);
}

#[test]
fn protocol_selection_needs_a_protocol_every_member_supports() {
    let c = Clock::new();
    let (mut g, _a) = single_member_group(&c);
    let mut other = join_req("");
    other.require_known_member_id = false;
    other.protocols = protocols(&["sticky"]);
    match g.join(other.clone(), c.at(100)) {
        JoinOutcome::Reply(r) => {
            assert_eq!(r.error, Some(ResponseError::InconsistentGroupProtocol))
        }
        o => panic!("{o:?}"),
    }
    other.protocol_type = "connect".into();
    other.protocols = protocols(&["range"]);
    match g.join(other, c.at(100)) {
        JoinOutcome::Reply(r) => {
            assert_eq!(r.error, Some(ResponseError::InconsistentGroupProtocol))
        }
        o => panic!("{o:?}"),
    }
}

#[test]
fn protocol_selection_counts_votes() {
    let c = Clock::new();
    // All three join before the phase completes: use an initial delay.
    let mut g = Group::new().with_initial_rebalance_delay(Duration::from_millis(100));
    for prefs in [&["a", "b"][..], &["b", "a"], &["b", "a"]] {
        let mut r = join_req("");
        r.require_known_member_id = false;
        r.protocols = protocols(prefs);
        join_waits(&mut g, r, c.at(0));
    }
    g.tick(c.at(100));
    let replies = join_replies(&g.take_effects());
    assert_eq!(replies.len(), 3);
    assert!(replies.values().all(|r| r.protocol_name.as_deref() == Some("b")), "{replies:?}");
}

#[test]
fn initial_rebalance_delay_gathers_members_into_one_generation() {
    let c = Clock::new();
    let mut g = Group::new().with_initial_rebalance_delay(Duration::from_millis(3_000));
    let a = member_id_required(&mut g, c.at(0));
    join_waits(&mut g, join_req(&a), c.at(0));
    let b = member_id_required(&mut g, c.at(1_000));
    join_waits(&mut g, join_req(&b), c.at(1_000));
    g.tick(c.at(3_500));
    assert!(g.take_effects().is_empty(), "b's arrival pushed the end to 4 s");
    g.tick(c.at(4_000));
    let replies = join_replies(&g.take_effects());
    assert_eq!(replies.len(), 2);
    assert_eq!(replies[&a].generation, 1);
}

#[test]
fn static_member_rejoining_replaces_its_old_id_without_rebalance() {
    let c = Clock::new();
    let (mut g, s1, d) = static_and_dynamic(&c);
    leader_syncs(&mut g, &s1, 1, &[(&s1, "p0"), (&d, "p1")], c.at(100));

    // pod-1 restarts and rejoins with the same instance id and no member id.
    let s2 = match g.join(static_req("", "pod-1"), c.at(2_000)) {
        JoinOutcome::Reply(r) => {
            assert_eq!(r.error, None);
            assert_eq!(r.generation, 1, "no new generation");
            assert!(r.skip_assignment, "v9+: the leader is told to skip the assignment");
            assert_eq!(r.leader, r.member_id);
            r.member_id
        }
        o => panic!("{o:?}"),
    };
    assert_ne!(s1, s2);
    assert_eq!(g.state(), GroupState::Stable);
    let p = persists(&g.take_effects());
    assert_eq!(p.len(), 1, "the new member id is persisted");
    assert!(p[0].members.iter().any(|m| m.member_id == s2));
    // Its assignment survived.
    let mut sync = sync_req(&s2, 1, &[]);
    sync.group_instance_id = Some("pod-1".into());
    match g.sync(sync, c.at(2_100)) {
        SyncOutcome::Reply(r) => assert_eq!(r.assignment, Bytes::from("p0")),
        o => panic!("{o:?}"),
    }
    // The old incarnation is fenced.
    assert_eq!(
        g.heartbeat(&s1, Some("pod-1"), 1, c.at(2_200)),
        Err(ResponseError::FencedInstanceId)
    );
    assert_eq!(g.heartbeat(&s2, Some("pod-1"), 1, c.at(2_200)), Ok(()));
    assert_eq!(g.heartbeat(&d, None, 1, c.at(2_200)), Ok(()), "the other member is not disturbed");
}

#[test]
fn static_follower_rejoin_before_v9_names_the_old_leader() {
    let c = Clock::new();
    let mut g = Group::new();
    let s1 = join_waits(&mut g, static_req("", "pod-1"), c.at(0));
    g.take_effects();
    leader_syncs(&mut g, &s1, 1, &[(&s1, "p0")], c.at(0));
    let req = JoinRequest { supports_skip_assignment: false, ..static_req("", "pod-1") };
    match g.join(req, c.at(100)) {
        JoinOutcome::Reply(r) => {
            assert_eq!(r.leader, s1, "old leader id, so the member does not run the assignor");
            assert_ne!(r.member_id, s1);
            assert!(!r.skip_assignment);
        }
        o => panic!("{o:?}"),
    }
}

#[test]
fn static_member_that_misses_a_rebalance_stays_until_its_session_ends() {
    let c = Clock::new();
    let (mut g, s, d) = static_and_dynamic(&c);
    leader_syncs(&mut g, &s, 1, &[(&s, "p0"), (&d, "p1")], c.at(100));
    // d's metadata changes; s is down and never rejoins.
    let mut changed = join_req(&d);
    changed.protocols = vec![Protocol { name: "range".into(), metadata: Bytes::from("v2") }];
    join_waits(&mut g, changed, c.at(1_000));
    g.tick(c.at(5_000));
    assert!(g.take_effects().is_empty());
    assert!(g.has_member(&s), "a static member survives a rebalance it misses");
    // s's session (6 s from its sync at 0.1 s) ends: it is removed and the phase completes.
    g.tick(c.at(6_100));
    let replies = join_replies(&g.take_effects());
    assert_eq!(replies[&d].generation, 2);
    assert!(!g.has_member(&s));
}

#[test]
fn static_member_with_a_stale_member_id_is_fenced() {
    let c = Clock::new();
    let mut g = Group::new();
    let s1 = join_waits(&mut g, static_req("", "pod-1"), c.at(0));
    g.take_effects();
    leader_syncs(&mut g, &s1, 1, &[(&s1, "p0")], c.at(0));
    let JoinOutcome::Reply(r) = g.join(static_req("", "pod-1"), c.at(100)) else { panic!() };
    let s2 = r.member_id;
    // The old process is still alive and tries to rejoin with its old id.
    match g.join(static_req(&s1, "pod-1"), c.at(200)) {
        JoinOutcome::Reply(r) => assert_eq!(r.error, Some(ResponseError::FencedInstanceId)),
        o => panic!("{o:?}"),
    }
    assert_eq!(
        g.leave(&[(s1, Some("pod-1".into()))], c.at(300)),
        Ok(vec![Err(ResponseError::FencedInstanceId)])
    );
    assert!(g.has_member(&s2));
}

#[test]
fn static_member_rejoin_during_completing_rebalance_restarts_it() {
    let c = Clock::new();
    let mut g = Group::new();
    let s1 = join_waits(&mut g, static_req("", "pod-1"), c.at(0));
    g.take_effects();
    assert_eq!(g.state(), GroupState::CompletingRebalance);
    assert_eq!(
        g.sync(sync_req(&s1, 1, &[]), c.at(0)),
        SyncOutcome::Persist(g.snapshot_with(Some(&HashMap::from([(s1.clone(), Bytes::new())]))))
    );
    // Persisting takes a while; meanwhile pod-1 restarts.
    let s2 = join_waits(&mut g, static_req("", "pod-1"), c.at(100));
    let effects = g.take_effects();
    assert_eq!(sync_replies(&effects)[&s1].error, Some(ResponseError::FencedInstanceId));
    assert_eq!(
        join_replies(&effects)[&s2].generation,
        2,
        "restarted rebalance completes with the new id"
    );
    g.assignment_persisted(1, Ok(()), c.at(200));
    assert_eq!(
        g.state(),
        GroupState::CompletingRebalance,
        "the late persist of generation 1 is ignored"
    );
}

#[test]
fn illegal_generation_and_unknown_member_on_commit() {
    let c = Clock::new();
    let (mut g, a, _b) = two_member_group(&c);
    assert_eq!(g.validate_commit(&a, None, 2, c.at(500)), Ok(()));
    assert_eq!(g.validate_commit(&a, None, 1, c.at(500)), Err(ResponseError::IllegalGeneration));
    assert_eq!(g.validate_commit("x", None, 2, c.at(500)), Err(ResponseError::UnknownMemberId));
    assert_eq!(
        g.validate_commit("", None, -1, c.at(500)),
        Err(ResponseError::UnknownMemberId),
        "standalone commit to a live group"
    );
    let mut empty = Group::new();
    assert_eq!(empty.validate_commit("", None, -1, c.at(0)), Ok(()), "simple consumer");
}

#[test]
fn commit_while_completing_rebalance_says_rebalance_in_progress() {
    let c = Clock::new();
    let mut g = Group::new();
    let a = member_id_required(&mut g, c.at(0));
    join_waits(&mut g, join_req(&a), c.at(0));
    g.take_effects();
    assert_eq!(g.validate_commit(&a, None, 1, c.at(10)), Err(ResponseError::RebalanceInProgress));
}

#[test]
fn failed_persist_answers_syncs_with_the_error_and_rebalances() {
    let c = Clock::new();
    let (mut g, a) = single_member_group(&c);
    let b = member_id_required(&mut g, c.at(100));
    join_waits(&mut g, join_req(&b), c.at(100));
    join_waits(&mut g, join_req(&a), c.at(100));
    g.take_effects();
    assert_eq!(g.sync(sync_req(&b, 2, &[]), c.at(200)), SyncOutcome::Wait);
    let SyncOutcome::Persist(_) = g.sync(sync_req(&a, 2, &[(&a, "x"), (&b, "y")]), c.at(200))
    else {
        panic!()
    };
    g.assignment_persisted(2, Err(ResponseError::CoordinatorNotAvailable), c.at(300));
    let replies = sync_replies(&g.take_effects());
    assert_eq!(replies[&a].error, Some(ResponseError::CoordinatorNotAvailable));
    assert_eq!(replies[&b].error, Some(ResponseError::CoordinatorNotAvailable));
    assert_eq!(g.state(), GroupState::PreparingRebalance);
}

#[test]
fn members_that_never_sync_are_removed_after_the_rebalance_timeout() {
    let c = Clock::new();
    let (mut g, a) = single_member_group(&c);
    let b = member_id_required(&mut g, c.at(0));
    join_waits(&mut g, join_req(&b), c.at(0));
    join_waits(&mut g, join_req(&a), c.at(0));
    g.take_effects();
    leader_syncs(&mut g, &a, 2, &[(&a, "x"), (&b, "y")], c.at(0));
    // b heartbeats but never syncs.
    for ms in (1_000..10_000).step_by(1_000) {
        let _ = g.heartbeat(&b, None, 2, c.at(ms));
        let _ = g.heartbeat(&a, None, 2, c.at(ms));
        g.tick(c.at(ms));
    }
    assert!(g.has_member(&b));
    g.tick(c.at(10_000));
    assert!(!g.has_member(&b));
    assert_eq!(g.state(), GroupState::PreparingRebalance);
}

#[test]
fn a_parked_join_of_an_expiring_new_member_is_answered() {
    let c = Clock::new();
    let (mut g, a) = single_member_group(&c);
    // a is the only member and stops heartbeating; b joins and waits for a.
    let b = member_id_required(&mut g, c.at(100));
    join_waits(&mut g, join_req(&b), c.at(100));
    g.tick(c.at(6_000));
    let replies = join_replies(&g.take_effects());
    assert!(!g.has_member(&a), "a's session ended");
    assert_eq!(replies[&b].generation, 2, "b gets a generation of its own");
    assert_eq!(replies[&b].leader, b);
}

#[test]
fn snapshot_round_trip_resumes_generation_and_members() {
    let c = Clock::new();
    let (g, a, b) = two_member_group(&c);
    let snap = g.snapshot();
    assert_eq!(snap.generation, 2);
    assert_eq!(snap.members.len(), 2);
    let mut resumed = Group::from_snapshot(snap, c.at(10_000));
    assert_eq!(resumed.state(), GroupState::Stable);
    assert_eq!(resumed.generation(), 2);
    assert_eq!(resumed.leader(), Some(a.as_str()));
    assert_eq!(resumed.heartbeat(&b, None, 2, c.at(10_100)), Ok(()), "members keep going");
    assert_eq!(resumed.validate_commit(&a, None, 2, c.at(10_100)), Ok(()));
    match resumed.sync(sync_req(&b, 2, &[]), c.at(10_200)) {
        SyncOutcome::Reply(r) => assert_eq!(r.assignment, Bytes::from("p2,p3")),
        o => panic!("{o:?}"),
    }
    // Members that do not come back expire and the group empties.
    resumed.tick(c.at(17_000));
    assert!(!resumed.has_member(&a) && !resumed.has_member(&b));
    assert_eq!(resumed.state(), GroupState::Empty);
    assert_eq!(resumed.generation(), 3);
}

#[test]
fn empty_snapshot_resumes_an_empty_group() {
    let snap = Snapshot {
        generation: 7,
        protocol_type: Some("consumer".into()),
        protocol_name: None,
        leader: None,
        members: vec![],
    };
    let g = Group::from_snapshot(snap, Instant::now());
    assert_eq!(g.state(), GroupState::Empty);
    assert_eq!(g.generation(), 7);
}

#[test]
fn subscribed_topics_come_from_consumer_metadata() {
    use kafka_protocol::messages::ConsumerProtocolSubscription;
    use kafka_protocol::protocol::{Encodable, StrBytes};
    let mut buf = bytes::BytesMut::new();
    buf.extend_from_slice(&1i16.to_be_bytes());
    ConsumerProtocolSubscription::default()
        .with_topics(vec![
            StrBytes::from_static_str("orders"),
            StrBytes::from_static_str("payments"),
        ])
        .encode(&mut buf, 1)
        .unwrap();
    let c = Clock::new();
    let mut g = Group::new();
    let mut r = join_req("");
    r.require_known_member_id = false;
    r.protocols = vec![Protocol { name: "range".into(), metadata: buf.freeze() }];
    join_waits(&mut g, r, c.at(0));
    let topics = g.subscribed_topics().unwrap();
    assert!(topics.contains("orders") && topics.contains("payments") && topics.len() == 2);
    // Undecodable metadata: cannot tell.
    let (g2, _) = single_member_group(&c);
    assert_eq!(g2.subscribed_topics(), None);
}

#[test]
fn subscription_decoding_survives_hostile_metadata() {
    use kafka_protocol::messages::ConsumerProtocolSubscription;
    use kafka_protocol::protocol::{Encodable, StrBytes};
    // Every version the library knows encodes topics first; newer fields after them are
    // not read.
    for version in 0..=3i16 {
        let mut buf = bytes::BytesMut::new();
        buf.extend_from_slice(&version.to_be_bytes());
        let mut s = ConsumerProtocolSubscription::default()
            .with_topics(vec![StrBytes::from_static_str("t1")]);
        if version >= 2 {
            s = s.with_generation_id(7);
        }
        s.encode(&mut buf, version).unwrap();
        assert_eq!(decode_subscription(&buf), Some(vec!["t1".to_string()]), "v{version}");
    }
    // A count of 2^31-1 topics in a few bytes, negative lengths, truncation, bad UTF-8.
    for bad in [
        &[0, 1, 0x7f, 0xff, 0xff, 0xff][..],
        &[0, 1, 0, 0, 0, 1, 0xff, 0xff],
        &[0, 1, 0, 0, 0, 1, 0, 5, b'a'],
        &[0, 1, 0, 0, 0, 1, 0, 1, 0xff],
        &[0, 1, 0xff, 0xff, 0xff, 0xff],
        &[0xff, 0xff, 0, 0, 0, 0],
        &[0],
        &[],
    ] {
        assert_eq!(decode_subscription(bad), None, "{bad:?}");
    }
}

#[test]
fn dead_group_sends_clients_to_find_the_coordinator() {
    let c = Clock::new();
    let mut g = Group::new();
    g.mark_dead();
    match g.join(join_req(""), c.at(0)) {
        JoinOutcome::Reply(r) => assert_eq!(r.error, Some(ResponseError::CoordinatorNotAvailable)),
        o => panic!("{o:?}"),
    }
    assert_eq!(g.heartbeat("x", None, 1, c.at(0)), Err(ResponseError::CoordinatorNotAvailable));
}

#[test]
fn state_names_parse_case_insensitively() {
    for s in GroupState::ALL {
        assert_eq!(GroupState::parse(&s.name().to_lowercase()), Some(s));
    }
    assert_eq!(GroupState::parse("Stable"), Some(GroupState::Stable));
    assert_eq!(GroupState::parse("bogus"), None);
}

#[test]
fn a_join_beyond_the_max_size_gets_group_max_size_reached() {
    let c = Clock::new();
    let (mut g, a) = single_member_group(&c);
    let full = |id: &str| JoinRequest { max_size: 1, ..join_req(id) };
    // Stable and full: a new member is refused, before any id is handed out.
    match g.join(full(""), c.at(100)) {
        JoinOutcome::Reply(r) => assert_eq!(r.error, Some(ResponseError::GroupMaxSizeReached)),
        other => panic!("expected GROUP_MAX_SIZE_REACHED, got {other:?}"),
    }
    assert_eq!(g.state(), GroupState::Stable, "no rebalance for a refused member");
    // The member already in it rejoins as before.
    match g.join(full(&a), c.at(200)) {
        JoinOutcome::Reply(r) => assert_eq!(r.error, None),
        JoinOutcome::Wait { .. } => {}
    }
    // With room for two, the second member gets in.
    let (mut g, _) = single_member_group(&c);
    let two = |id: &str| JoinRequest { max_size: 2, ..join_req(id) };
    match g.join(two(""), c.at(100)) {
        JoinOutcome::Reply(r) => assert_eq!(r.error, Some(ResponseError::MemberIdRequired)),
        other => panic!("expected MEMBER_ID_REQUIRED, got {other:?}"),
    }
}

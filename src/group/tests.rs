//! The coordinator against a filer that refuses connections: retriable answers, the lease
//! fence, and the timer, without SeaweedFS.

use super::*;
use crate::group::state::{JoinOutcome, SyncOutcome};
use crate::seaweed::SeaweedOptions;

/// A coordinator whose filer refuses connections.
async fn unreachable() -> (Coordinator, CancellationToken) {
    unreachable_with(Settings::default()).await
}

/// Like [`unreachable`], with the given settings.
async fn unreachable_with(settings: Settings) -> (Coordinator, CancellationToken) {
    let seaweed = Seaweed::connect(SeaweedOptions {
        master: "127.0.0.1:1".into(),
        filer: Some("127.0.0.1:1".into()),
        namespace: "kafka".into(),
        call_timeout: Duration::from_millis(500),
    })
    .await
    .expect("options are valid");
    let cancel = CancellationToken::new();
    let c =
        Coordinator::start(seaweed, "/kelp".into(), settings, cancel.clone(), &TaskTracker::new());
    (c, cancel)
}

fn join_req() -> JoinRequest {
    JoinRequest {
        member_id: String::new(),
        group_instance_id: None,
        client_id: "c".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout: Duration::from_secs(6),
        rebalance_timeout: Duration::from_secs(6),
        protocol_type: "consumer".into(),
        protocols: vec![Protocol { name: "range".into(), metadata: bytes::Bytes::new() }],
        require_known_member_id: true,
        supports_skip_assignment: true,
        max_size: i32::MAX as usize,
    }
}

#[tokio::test]
async fn filer_unreachable_is_retriable_never_no_offset() {
    let (c, cancel) = unreachable().await;
    let r = c.join("g", join_req()).await;
    assert_eq!(r.error, Some(ResponseError::CoordinatorNotAvailable));
    let fetched = c
        .fetch_offsets("g", Some(vec![("t".into(), vec![0])]))
        .await
        .expect("per-partition errors");
    let (_, parts) = &fetched[0];
    let err = parts[0].1.as_ref().expect_err("a read failure is not 'no offset'");
    assert!(err.code(ApiKind::Group).is_retriable());
    assert!(
        c.fetch_offsets("g", None).await.is_err(),
        "listing failed: an error, not an empty answer"
    );
    let committed =
        Committed { offset: 1, leader_epoch: -1, metadata: String::new(), commit_timestamp_ms: 0 };
    let r = c.commit_offsets("g", "", None, -1, vec![("t".into(), 0, committed)]).await;
    assert_eq!(r, vec![Err(ResponseError::CoordinatorNotAvailable)]);
    assert_eq!(c.heartbeat("g", "m", None, 1).await, Err(ResponseError::CoordinatorNotAvailable));
    assert!(c.list().await.is_err());
    cancel.cancel();
}

#[tokio::test]
async fn a_shared_kelp_serves_a_group_only_while_its_lease_is_valid() {
    let ownership = Ownership {
        owner_id: crate::lease::owner_id("127.0.0.1:9093", "me"),
        lease: Duration::from_secs(2),
    };
    let (c, cancel) =
        unreachable_with(Settings { ownership: Some(ownership), ..Settings::default() }).await;

    // The filer cannot be asked who owns the group: retriable, and nothing is served
    // from this kelp's memory meanwhile.
    assert_eq!(c.route("g").await, Err(ResponseError::CoordinatorNotAvailable));
    assert_eq!(c.heartbeat("g", "m", None, 1).await, Err(ResponseError::NotCoordinator));
    let r = c.join("g", join_req()).await;
    assert_eq!(r.error, Some(ResponseError::NotCoordinator));

    // Owned (a lease granted now, 2 s): a member joins and waits in a rebalance; the
    // lease cannot be renewed (no filer), so at 2 s − 0.4 s margin the kelp stops: the
    // parked request is released with a retriable code and the group answers
    // NOT_COORDINATOR from then on.
    let granted = now();
    c.inner.leases.as_ref().unwrap().hold("g", "t", granted);
    assert_eq!(c.route("g").await, Ok(Route::Local));
    // In memory already (the filer cannot load it).
    c.inner.groups.lock().insert("g".into(), Entry::new(Group::new()));
    let first = c.join("g", JoinRequest { require_known_member_id: false, ..join_req() }).await;
    assert_eq!(first.error, None, "alone in the group: its generation at once");
    let second = tokio::spawn({
        let c = c.clone();
        async move { c.join("g", JoinRequest { require_known_member_id: false, ..join_req() }).await }
    });
    let r = tokio::time::timeout(Duration::from_secs(5), second)
        .await
        .expect("released when ownership ended")
        .unwrap();
    let released_after = granted.elapsed();
    assert_eq!(r.error, Some(ResponseError::CoordinatorNotAvailable));
    assert!(
        released_after >= Duration::from_millis(1_550)
            && released_after < Duration::from_millis(2_000),
        "{released_after:?}"
    );
    assert_eq!(
        c.heartbeat("g", &first.member_id, None, first.generation).await,
        Err(ResponseError::NotCoordinator)
    );
    assert!(c.inner.groups.lock().is_empty(), "the lost group's state is gone");
    cancel.cancel();
}

#[tokio::test]
async fn parked_join_is_answered_by_the_timer_and_cancel_releases_waiters() {
    // A group in memory only (no filer involved): member a is Stable with a short session
    // and goes silent; b's JoinGroup parks until the timer expires a, then b gets a
    // generation of its own.
    let (c, cancel) = unreachable().await;
    let short = |r: JoinRequest| JoinRequest {
        require_known_member_id: false,
        session_timeout: Duration::from_millis(300),
        rebalance_timeout: Duration::from_millis(300),
        ..r
    };
    let t0 = now();
    let mut g = Group::new();
    let JoinOutcome::Wait { member_id: a } = g.join(short(join_req()), t0) else { panic!() };
    let _ = g.take_effects();
    let sync = SyncRequest {
        member_id: a.clone(),
        group_instance_id: None,
        generation: 1,
        protocol_type: None,
        protocol_name: None,
        assignments: vec![],
    };
    let SyncOutcome::Persist(_) = g.sync(sync, t0) else { panic!() };
    g.assignment_persisted(1, Ok(()), t0);
    let _ = g.take_effects();
    c.inner.groups.lock().insert("g".into(), Entry::new(g));

    let started = Instant::now();
    let r = c.join("g", short(join_req())).await;
    assert_eq!(r.error, None);
    assert_eq!(r.generation, 2);
    assert_eq!(r.leader, r.member_id);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "answered when a's session ended: {:?}",
        started.elapsed()
    );

    // A parked request is released (its waiter dropped) when kelp stops.
    let rx = c
        .with_group("g", |e| {
            let (tx, rx) = oneshot::channel::<SyncReply>();
            e.syncs.insert(r.member_id.clone(), tx);
            rx
        })
        .unwrap();
    cancel.cancel();
    let released =
        tokio::time::timeout(Duration::from_secs(2), rx).await.expect("released promptly");
    assert!(released.is_err(), "the waiter was dropped");
}

#[tokio::test]
async fn idle_empty_groups_leave_memory_and_the_live_map_is_bounded() {
    let (c, cancel) = unreachable().await;
    let long_ago = std::time::Instant::now().checked_sub(IDLE_GROUP_EVICT).expect("uptime");
    let insert = |id: &str, touched| {
        let mut entry = Entry::new(Group::new());
        entry.touched = touched;
        c.inner.groups.lock().insert(id.into(), entry);
    };
    insert("idle", long_ago);
    insert("recent", std::time::Instant::now());
    // The timer's next tick drops the idle Empty group, never the recently used one.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while c.inner.groups.lock().contains_key("idle") && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ids: Vec<String> = c.inner.groups.lock().keys().cloned().collect();
    assert_eq!(ids, vec!["recent".to_string()]);

    // Full of groups in use: a new group is refused with a retriable code, not added.
    for i in 0..MAX_LIVE_GROUPS {
        insert(&format!("busy-{i}"), std::time::Instant::now());
    }
    let r = c.join("new", join_req()).await;
    assert_eq!(r.error, Some(ResponseError::CoordinatorLoadInProgress));
    assert!(!c.inner.groups.lock().contains_key("new"));
    cancel.cancel();
}

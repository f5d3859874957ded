//! Consumer groups with real clients against kelp and a real SeaweedFS: members split the
//! partitions of a topic and take them over when one leaves or dies, committed offsets are
//! resumed exactly (also after a kelp restart), and librdkafka and kafka-python share a group.
//!
//! Consumers run on their own threads (librdkafka's API blocks), polling continuously so
//! that rebalances are served; the test thread only watches what they report.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use common::kelp::Kelp;
use common::python::PythonConsumer;

const PARTITIONS: i32 = 4;
/// Kept small so that a member that vanishes is noticed quickly (Kafka's minimum is 6 s).
const SESSION_TIMEOUT_MS: &str = "6000";
const HEARTBEAT_MS: &str = "1000";
/// Also the rebalance timeout: how long a join phase waits for slow members.
const MAX_POLL_INTERVAL_MS: &str = "10000";

/// Create a topic, retrying while SeaweedFS answers with a retriable error (a fresh broker
/// takes a few seconds to become the balancer that places partitions).
async fn create_topic(bootstrap: &str, name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", bootstrap).create().expect("admin client");
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    common::eventually(|| async {
        let results = admin
            .create_topics(&[NewTopic::new(name, partitions, TopicReplication::Fixed(1))], &opts)
            .await
            .map_err(|e| e.to_string())?;
        match results.into_iter().next().expect("one result") {
            Ok(_) | Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => Ok(()),
            Err((_, code)) => Err(format!("create {name}: {code:?}")),
        }
    })
    .await
}

/// Produce `per_partition` records to each partition; values are `"<tag>-p<partition>-<i>"`.
async fn produce(bootstrap: &str, topic: &str, per_partition: usize, tag: &str) {
    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "60000")
        .create()
        .expect("producer");
    let mut pending = Vec::new();
    for partition in 0..PARTITIONS {
        for i in 0..per_partition {
            let value = format!("{tag}-p{partition}-{i}");
            let p = p.clone();
            let topic = topic.to_string();
            pending.push(async move {
                p.send(
                    FutureRecord::<(), _>::to(&topic).partition(partition).payload(&value),
                    Duration::from_secs(60),
                )
                .await
                .expect("delivered");
            });
        }
    }
    futures::future::join_all(pending).await;
}

fn consumer_config(bootstrap: &str, group: &str, strategy: &str) -> ClientConfig {
    consumer_config_from(bootstrap, group, strategy, "earliest")
}

/// `reset` is `auto.offset.reset`: where a member starts in a partition without a committed
/// offset.
fn consumer_config_from(bootstrap: &str, group: &str, strategy: &str, reset: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("session.timeout.ms", SESSION_TIMEOUT_MS)
        .set("heartbeat.interval.ms", HEARTBEAT_MS)
        .set("max.poll.interval.ms", MAX_POLL_INTERVAL_MS)
        .set("partition.assignment.strategy", strategy)
        .set("auto.offset.reset", reset)
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "100");
    c
}

/// What a consumer thread has seen so far.
#[derive(Default)]
struct Seen {
    assignment: BTreeSet<i32>,
    /// (partition, offset, value) in arrival order.
    records: Vec<(i32, i64, String)>,
}

/// A librdkafka consumer polling on its own thread until stopped; dropping it at the end
/// closes it (LeaveGroup).
struct Member {
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Member {
    fn start(config: ClientConfig, topic: &str) -> Member {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st, topic) = (Arc::clone(&seen), Arc::clone(&stop), topic.to_string());
        let thread = std::thread::spawn(move || {
            let consumer: BaseConsumer = config.create().expect("consumer");
            consumer.subscribe(&[&topic]).expect("subscribe");
            while !st.load(Ordering::Relaxed) {
                if let Some(m) = consumer.poll(Duration::from_millis(100)) {
                    match m {
                        Ok(m) => {
                            let value = String::from_utf8_lossy(m.payload().unwrap_or_default())
                                .into_owned();
                            s.lock().records.push((m.partition(), m.offset(), value));
                        }
                        // Transient errors are reported by librdkafka and retried by it.
                        Err(e) => eprintln!("consumer error: {e}"),
                    }
                }
                let assignment = consumer
                    .assignment()
                    .map(|tpl| tpl.elements().iter().map(|e| e.partition()).collect())
                    .unwrap_or_default();
                s.lock().assignment = assignment;
            }
        });
        Member { seen, stop, thread: Some(thread) }
    }

    fn assignment(&self) -> BTreeSet<i32> {
        self.seen.lock().assignment.clone()
    }

    fn records(&self) -> Vec<(i32, i64, String)> {
        self.seen.lock().records.clone()
    }

    /// Stop polling and close the consumer (it leaves the group).
    async fn close(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let t = self.thread.take().expect("running");
        tokio::task::spawn_blocking(move || t.join().expect("consumer thread")).await.unwrap();
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn all_partitions() -> BTreeSet<i32> {
    (0..PARTITIONS).collect()
}

/// Wait until the assignments are disjoint, non-empty, and cover every partition.
async fn wait_for_split(
    what: &str,
    assignments: impl Fn() -> Vec<BTreeSet<i32>>,
) -> Vec<BTreeSet<i32>> {
    common::eventually(|| {
        let a = assignments();
        async move {
            let union: BTreeSet<i32> = a.iter().flatten().copied().collect();
            let total: usize = a.iter().map(BTreeSet::len).sum();
            if a.iter().all(|s| !s.is_empty())
                && union == all_partitions()
                && total == PARTITIONS as usize
            {
                Ok(a)
            } else {
                Err(format!("{what}: assignments {a:?}"))
            }
        }
    })
    .await
}

/// Wait until `member` owns every partition; returns how long it took.
async fn wait_for_all(what: &str, member: &Member) -> Duration {
    let start = Instant::now();
    common::eventually(|| {
        let a = member.assignment();
        async move {
            if a == all_partitions() { Ok(()) } else { Err(format!("{what}: assignment {a:?}")) }
        }
    })
    .await;
    start.elapsed()
}

/// Records by partition, offsets ascending.
fn by_partition(records: &[(i32, i64, String)]) -> BTreeMap<i32, Vec<(i64, String)>> {
    let mut out: BTreeMap<i32, Vec<(i64, String)>> = BTreeMap::new();
    for (p, o, v) in records {
        out.entry(*p).or_default().push((*o, v.clone()));
    }
    for v in out.values_mut() {
        v.sort();
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_consumers_split_partitions_and_the_survivor_takes_over_when_one_leaves() {
    let seaweedfs = common::seaweedfs().await;
    let kelp = Kelp::start(&seaweedfs, &[]).await;
    let topic = common::unique_name("split");
    create_topic(&kelp.bootstrap(), &topic, PARTITIONS).await;
    produce(&kelp.bootstrap(), &topic, 5, "before").await;

    // The eager protocol (range) and the cooperative one use the same broker protocol.
    for strategy in ["range", "cooperative-sticky"] {
        let group = common::unique_name("g");
        let a = Member::start(consumer_config(&kelp.bootstrap(), &group, strategy), &topic);
        let b = Member::start(consumer_config(&kelp.bootstrap(), &group, strategy), &topic);
        let started = Instant::now();
        let split = wait_for_split(strategy, || vec![a.assignment(), b.assignment()]).await;
        eprintln!(
            "{strategy}: two members split the partitions {split:?} {:?} after start",
            started.elapsed()
        );

        // Records produced now go to the owner of their partition, each to one member once.
        // (Records read before the split settled are not checked: a member may have owned
        // other partitions in an earlier generation.)
        let tag = format!("after-split-{strategy}");
        produce(&kelp.bootstrap(), &topic, 5, &tag).await;
        let tagged = |m: &Member| {
            m.records().into_iter().filter(|(_, _, v)| v.starts_with(&tag)).collect::<Vec<_>>()
        };
        common::eventually(|| {
            let n = tagged(&a).len() + tagged(&b).len();
            async move { if n >= 20 { Ok(()) } else { Err(format!("{n} of 20 records")) } }
        })
        .await;
        assert_eq!(tagged(&a).len() + tagged(&b).len(), 20, "{strategy}: no record read twice");
        for (m, mine) in [(&a, &split[0]), (&b, &split[1])] {
            let got = by_partition(&tagged(m));
            assert_eq!(
                got.keys().copied().collect::<BTreeSet<i32>>(),
                *mine,
                "{strategy}: partitions read vs owned"
            );
        }

        // b leaves: a gets every partition.
        b.close().await;
        let took = wait_for_all(strategy, &a).await;
        eprintln!("{strategy}: after a member left, the other owned all partitions in {took:?}");
        assert!(
            took < Duration::from_secs(5),
            "{strategy}: rebalance after LeaveGroup took {took:?}"
        );
        a.close().await;
    }
    assert!(kelp.stop().await);
}

/// What to commit after reading: partition → the next offset to read.
type CommitPlan = fn(&BTreeMap<i32, Vec<(i64, String)>>) -> BTreeMap<i32, i64>;

/// Consume with a fresh consumer of `group` until `want` records arrived (failing on any
/// record beyond them), commit what `plan` says while still a member, close. `reset` is
/// where to start without a committed offset: "earliest" for the first member; later ones use
/// "latest", so that a commit that went missing shows up as records never arriving, and one
/// that went back as records arriving twice.
async fn consume_then_commit(
    bootstrap: String,
    topic: String,
    group: String,
    reset: &'static str,
    want: usize,
    plan: CommitPlan,
) -> Vec<(i32, i64, String)> {
    let deadline = Instant::now() + common::patience();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer =
            consumer_config_from(&bootstrap, &group, "range", reset).create().expect("consumer");
        consumer.subscribe(&[&topic]).expect("subscribe");
        let mut got = Vec::new();
        while got.len() < want {
            assert!(Instant::now() < deadline, "only {} of {want} records: {got:?}", got.len());
            if let Some(m) = consumer.poll(Duration::from_millis(100)) {
                let m = m.expect("consume without error");
                got.push((
                    m.partition(),
                    m.offset(),
                    String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
                ));
            }
        }
        // Nothing more arrives: no record was delivered twice.
        let quiet = Instant::now() + Duration::from_millis(1_500);
        while Instant::now() < quiet {
            if let Some(m) = consumer.poll(Duration::from_millis(100)) {
                let m = m.expect("consume without error");
                panic!(
                    "unexpected extra record p{} o{} {:?} after {want}: {got:?}",
                    m.partition(),
                    m.offset(),
                    String::from_utf8_lossy(m.payload().unwrap_or_default())
                );
            }
        }
        let commit = plan(&by_partition(&got));
        if !commit.is_empty() {
            let mut tpl = TopicPartitionList::new();
            for (p, o) in &commit {
                tpl.add_partition_offset(&topic, *p, Offset::Offset(*o)).expect("tpl");
            }
            consumer.commit(&tpl, CommitMode::Sync).expect("commit acknowledged");
            let committed = consumer.committed(Duration::from_secs(10)).expect("committed offsets");
            for e in committed.elements() {
                assert_eq!(
                    e.offset(),
                    Offset::Offset(commit[&e.partition()]),
                    "read back partition {}",
                    e.partition()
                );
            }
        }
        got
    })
    .await
    .unwrap()
}

/// The group's committed offsets of every partition of `topic` (OffsetFetch, no joining).
async fn committed_offsets(bootstrap: String, topic: String, group: String) -> BTreeMap<i32, i64> {
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer =
            consumer_config(&bootstrap, &group, "range").create().expect("consumer");
        let mut tpl = TopicPartitionList::new();
        for p in 0..PARTITIONS {
            tpl.add_partition(&topic, p);
        }
        let got = consumer.committed_offsets(tpl, Duration::from_secs(30)).expect("OffsetFetch");
        got.elements()
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(o) => (e.partition(), o),
                other => panic!("partition {}: {other:?}", e.partition()),
            })
            .collect()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_offsets_resume_exactly_and_survive_a_kelp_restart() {
    let seaweedfs = common::seaweedfs().await;
    let kelp = Kelp::start(&seaweedfs, &[]).await;
    let topic = common::unique_name("resume");
    let group = common::unique_name("g");
    create_topic(&kelp.bootstrap(), &topic, PARTITIONS).await;
    produce(&kelp.bootstrap(), &topic, 10, "first").await;

    // First consumer reads all 40 and commits "the 6th record of each partition is next".
    let sixth: CommitPlan = |got| got.iter().map(|(p, recs)| (*p, recs[5].0)).collect();
    let end: CommitPlan =
        |got| got.iter().map(|(p, recs)| (*p, recs.last().expect("records").0 + 1)).collect();
    let nothing: CommitPlan = |_| BTreeMap::new();
    let all = by_partition(
        &consume_then_commit(kelp.bootstrap(), topic.clone(), group.clone(), "earliest", 40, sixth)
            .await,
    );
    assert_eq!(all.len(), PARTITIONS as usize);
    let cut = sixth(&all);

    // A new member of the group starts exactly at the commit: records 5..10 of each
    // partition, nothing before (no re-delivery), nothing missing (no skip). It then commits
    // the end of each partition.
    let second = by_partition(
        &consume_then_commit(kelp.bootstrap(), topic.clone(), group.clone(), "latest", 20, end)
            .await,
    );
    for (p, recs) in &all {
        assert_eq!(second[p], recs[5..].to_vec(), "partition {p} resumed at {}", cut[p]);
    }
    let end = end(&all);
    assert!(kelp.stop().await);

    // A new kelp on the same SeaweedFS: the commits are in the filer.
    let kelp = Kelp::start(&seaweedfs, &[]).await;
    assert_eq!(
        committed_offsets(kelp.bootstrap(), topic.clone(), group.clone()).await,
        end,
        "OffsetFetch through the new kelp"
    );
    produce(&kelp.bootstrap(), &topic, 3, "after-restart").await;
    let third = by_partition(
        &consume_then_commit(kelp.bootstrap(), topic.clone(), group.clone(), "latest", 12, nothing)
            .await,
    );
    for p in 0..PARTITIONS {
        let values: Vec<&str> = third[&p].iter().map(|(_, v)| v.as_str()).collect();
        assert_eq!(
            values,
            (0..3).map(|i| format!("after-restart-p{p}-{i}")).collect::<Vec<_>>(),
            "partition {p}"
        );
        assert!(
            third[&p][0].0 >= end[&p],
            "partition {p} resumed at the committed offset {}: {:?}",
            end[&p],
            third[&p]
        );
    }
    assert!(kelp.stop().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_python_and_librdkafka_share_a_group_and_a_crashed_member_is_replaced() {
    let seaweedfs = common::seaweedfs().await;
    let kelp = Kelp::start(&seaweedfs, &[]).await;
    let topic = common::unique_name("mixed");
    let group = common::unique_name("g");
    create_topic(&kelp.bootstrap(), &topic, PARTITIONS).await;

    let python = Arc::new(PythonConsumer::start(&kelp.bootstrap(), &topic, &group));
    let rd = Member::start(consumer_config(&kelp.bootstrap(), &group, "range"), &topic);
    let started = Instant::now();
    let py = Arc::clone(&python);
    let split =
        wait_for_split("kafka-python + librdkafka", || vec![py.assignment(), rd.assignment()])
            .await;
    eprintln!(
        "kafka-python {:?} and librdkafka {:?} split the partitions after {:?}",
        split[0],
        split[1],
        started.elapsed()
    );

    // kafka-python dies without leaving: its session (6 s) must run out first.
    python.kill();
    let took = wait_for_all("after kafka-python was killed", &rd).await;
    eprintln!("after a member was killed, the survivor owned all partitions in {took:?}");
    assert!(took >= Duration::from_secs(5), "the dead member's session is honoured: {took:?}");
    assert!(took < Duration::from_secs(15), "session timeout + one rebalance: {took:?}");
    rd.close().await;
    assert!(kelp.stop().await);
}

mod wire {
    //! Every group API at every advertised version, on the wire, one member driven by hand.

    use bytes::{BufMut, Bytes, BytesMut};
    use kafka_protocol::ResponseError;
    use kafka_protocol::messages::delete_groups_request::DeleteGroupsRequest;
    use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
    use kafka_protocol::messages::leave_group_request::MemberIdentity;
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::offset_delete_request::{
        OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
    };
    use kafka_protocol::messages::offset_fetch_request::{
        OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
    };
    use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::StrBytes;
    use kelp::protocol::versions::supported;

    use super::common::kelp::Kelp;
    use super::common::raw::Raw;
    use super::common::wire::{Body, Reader};

    fn range(key: ApiKey) -> std::ops::RangeInclusive<i16> {
        let s = supported(key).expect("advertised");
        s.min..=s.max
    }
    fn s(v: &str) -> StrBytes {
        StrBytes::from_string(v.to_string())
    }
    fn gid(v: &str) -> GroupId {
        GroupId(s(v))
    }
    fn code(e: ResponseError) -> i16 {
        e.code()
    }

    /// A ConsumerProtocolSubscription v0 for one topic.
    fn subscription(topic: &str) -> Bytes {
        let mut b = BytesMut::new();
        b.put_i16(0);
        b.put_i32(1);
        b.put_i16(topic.len() as i16);
        b.put_slice(topic.as_bytes());
        b.put_i32(-1);
        b.freeze()
    }

    /// Join `group` alone at JoinGroup `v` (KIP-394 round trip from v4); returns the member id
    /// and generation.
    async fn join(c: &mut Raw, v: i16, group: &str, topic: &str) -> (String, i32) {
        let req = |member: &str| {
            JoinGroupRequest::default()
                .with_group_id(gid(group))
                .with_session_timeout_ms(6000)
                .with_rebalance_timeout_ms(if v >= 1 { 6000 } else { -1 })
                .with_member_id(s(member))
                .with_protocol_type(s("consumer"))
                .with_protocols(vec![
                    JoinGroupRequestProtocol::default()
                        .with_name(s("range"))
                        .with_metadata(subscription(topic)),
                ])
        };
        let ResponseKind::JoinGroup(r) =
            c.call(ApiKey::JoinGroup, v, RequestKind::JoinGroup(req(""))).await
        else {
            panic!()
        };
        let r = if v >= 4 {
            assert_eq!(r.error_code, code(ResponseError::MemberIdRequired), "JoinGroup v{v}");
            assert!(!r.member_id.is_empty());
            let ResponseKind::JoinGroup(r) =
                c.call(ApiKey::JoinGroup, v, RequestKind::JoinGroup(req(&r.member_id))).await
            else {
                panic!()
            };
            r
        } else {
            r
        };
        assert_eq!(r.error_code, 0, "JoinGroup v{v}");
        assert_eq!(r.leader, r.member_id, "JoinGroup v{v}: the only member leads");
        assert_eq!(r.members.len(), 1, "JoinGroup v{v}");
        assert_eq!(r.protocol_name.as_deref(), Some("range"), "JoinGroup v{v}");
        (r.member_id.to_string(), r.generation_id)
    }

    async fn sync(c: &mut Raw, v: i16, group: &str, member: &str, generation: i32) -> Bytes {
        let assignment = Bytes::from(format!("assignment-{group}"));
        let req = SyncGroupRequest::default()
            .with_group_id(gid(group))
            .with_generation_id(generation)
            .with_member_id(s(member))
            .with_protocol_type(if v >= 5 { Some(s("consumer")) } else { None })
            .with_protocol_name(if v >= 5 { Some(s("range")) } else { None })
            .with_assignments(vec![
                SyncGroupRequestAssignment::default()
                    .with_member_id(s(member))
                    .with_assignment(assignment.clone()),
            ]);
        let ResponseKind::SyncGroup(r) =
            c.call(ApiKey::SyncGroup, v, RequestKind::SyncGroup(req)).await
        else {
            panic!()
        };
        assert_eq!(r.error_code, 0, "SyncGroup v{v}");
        assert_eq!(r.assignment, assignment, "SyncGroup v{v}");
        r.assignment
    }

    async fn leave(c: &mut Raw, v: i16, group: &str, member: &str) -> i16 {
        let req = if v >= 3 {
            LeaveGroupRequest::default()
                .with_group_id(gid(group))
                .with_members(vec![MemberIdentity::default().with_member_id(s(member))])
        } else {
            LeaveGroupRequest::default().with_group_id(gid(group)).with_member_id(s(member))
        };
        let ResponseKind::LeaveGroup(r) =
            c.call(ApiKey::LeaveGroup, v, RequestKind::LeaveGroup(req)).await
        else {
            panic!()
        };
        if v >= 3 {
            assert_eq!(r.error_code, 0);
            r.members[0].error_code
        } else {
            r.error_code
        }
    }

    /// OffsetCommit v0/v1 (Kafka 4.0 dropped them) of `offset` for partition 1 of `topic` and
    /// 1 for partition 7 (which does not exist): the two partitions' codes.
    async fn commit_old(
        c: &mut Raw,
        v: i16,
        group: &str,
        generation: i32,
        member: &str,
        topic: &str,
        offset: i64,
    ) -> [i16; 2] {
        let mut body = Body::default().str(group);
        if v >= 1 {
            body = body.i32(generation).str(member);
        }
        body = body.i32(1).str(topic).i32(2);
        for (p, o) in [(1, offset), (7, 1)] {
            body = body.i32(p).i64(o);
            if v >= 1 {
                body = body.i64(1_600_000_000_000);
            }
            body = body.null_str();
        }
        let mut r = Reader(c.call_body(ApiKey::OffsetCommit, v, &body.0).await);
        assert_eq!((r.i32(), r.str().as_deref(), r.i32()), (1, Some(topic), 2));
        let codes = [(r.i32(), r.i16()), (r.i32(), r.i16())];
        r.done();
        assert_eq!((codes[0].0, codes[1].0), (1, 7));
        [codes[0].1, codes[1].1]
    }

    async fn fetch_offset(
        c: &mut Raw,
        v: i16,
        group: &str,
        topic: &str,
        partition: i32,
    ) -> (i64, i16) {
        if v < ApiKey::OffsetFetch.valid_versions().min {
            // v0 (Kafka 4.0 dropped it): group, [topic, [partition]] →
            // [topic, [partition, offset, metadata, error]]
            let body = Body::default().str(group).i32(1).str(topic).i32(1).i32(partition);
            let mut r = Reader(c.call_body(ApiKey::OffsetFetch, v, &body.0).await);
            assert_eq!((r.i32(), r.str().as_deref(), r.i32()), (1, Some(topic), 1));
            assert_eq!(r.i32(), partition);
            let (offset, _metadata, code) = (r.i64(), r.str(), r.i16());
            r.done();
            (offset, code)
        } else if v >= 8 {
            let req = OffsetFetchRequest::default().with_groups(vec![
                OffsetFetchRequestGroup::default().with_group_id(gid(group)).with_topics(Some(
                    vec![
                        OffsetFetchRequestTopics::default()
                            .with_name(TopicName(s(topic)))
                            .with_partition_indexes(vec![partition]),
                    ],
                )),
            ]);
            let ResponseKind::OffsetFetch(r) =
                c.call(ApiKey::OffsetFetch, v, RequestKind::OffsetFetch(req)).await
            else {
                panic!()
            };
            assert_eq!(r.groups[0].error_code, 0, "OffsetFetch v{v}");
            let p = &r.groups[0].topics[0].partitions[0];
            (p.committed_offset, p.error_code)
        } else {
            let req =
                OffsetFetchRequest::default().with_group_id(gid(group)).with_topics(Some(vec![
                    OffsetFetchRequestTopic::default()
                        .with_name(TopicName(s(topic)))
                        .with_partition_indexes(vec![partition]),
                ]));
            let ResponseKind::OffsetFetch(r) =
                c.call(ApiKey::OffsetFetch, v, RequestKind::OffsetFetch(req)).await
            else {
                panic!()
            };
            assert_eq!(r.error_code, 0, "OffsetFetch v{v}");
            let p = &r.topics[0].partitions[0];
            (p.committed_offset, p.error_code)
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_group_api_answers_at_every_advertised_version() {
        let seaweedfs = super::common::seaweedfs().await;
        let kelp = Kelp::start(&seaweedfs, &[]).await;
        let topic = super::common::unique_name("wire");
        super::create_topic(&kelp.bootstrap(), &topic, 2).await;
        let prefix = super::common::unique_name("wire");
        let mut c = Raw::connect(kelp.addr).await;

        // FindCoordinator: kelp itself, for one key (v0-3) or a batch (v4+).
        for v in range(ApiKey::FindCoordinator) {
            let req = if v >= 4 {
                FindCoordinatorRequest::default().with_coordinator_keys(vec![s("g1"), s("g2")])
            } else {
                FindCoordinatorRequest::default().with_key(s("g1"))
            };
            let ResponseKind::FindCoordinator(r) =
                c.call(ApiKey::FindCoordinator, v, RequestKind::FindCoordinator(req)).await
            else {
                panic!()
            };
            if v >= 4 {
                assert_eq!(r.coordinators.len(), 2, "FindCoordinator v{v}");
                assert!(
                    r.coordinators
                        .iter()
                        .all(|k| k.error_code == 0 && k.port == i32::from(kelp.addr.port())),
                    "FindCoordinator v{v}"
                );
            } else {
                assert_eq!(
                    (r.error_code, r.port),
                    (0, i32::from(kelp.addr.port())),
                    "FindCoordinator v{v}"
                );
            }
        }
        let req = FindCoordinatorRequest::default().with_key(s("txn")).with_key_type(1);
        let ResponseKind::FindCoordinator(r) =
            c.call(ApiKey::FindCoordinator, 3, RequestKind::FindCoordinator(req)).await
        else {
            panic!()
        };
        assert_eq!(
            r.error_code,
            code(ResponseError::TransactionalIdAuthorizationFailed),
            "no transaction coordinator: a fatal error for a transactional producer"
        );

        // JoinGroup at every version, each in its own group, then SyncGroup, Heartbeat and
        // LeaveGroup at a matching version.
        for v in range(ApiKey::JoinGroup) {
            let group = format!("{prefix}-join{v}");
            let (member, generation) = join(&mut c, v, &group, &topic).await;
            assert_eq!(generation, 1);
            sync(&mut c, v.min(5), &group, &member, generation).await;
            let hb = HeartbeatRequest::default()
                .with_group_id(gid(&group))
                .with_generation_id(generation)
                .with_member_id(s(&member));
            let ResponseKind::Heartbeat(r) =
                c.call(ApiKey::Heartbeat, v.min(4), RequestKind::Heartbeat(hb)).await
            else {
                panic!()
            };
            assert_eq!(r.error_code, 0, "Heartbeat v{}", v.min(4));
            assert_eq!(
                leave(&mut c, v.min(5), &group, &member).await,
                0,
                "LeaveGroup v{}",
                v.min(5)
            );
        }

        // One Stable group for the remaining versions.
        let group = format!("{prefix}-stable");
        let (member, generation) = join(&mut c, 9, &group, &topic).await;
        for v in range(ApiKey::SyncGroup) {
            sync(&mut c, v, &group, &member, generation).await;
        }
        for v in range(ApiKey::Heartbeat) {
            let hb = |generation: i32| {
                HeartbeatRequest::default()
                    .with_group_id(gid(&group))
                    .with_generation_id(generation)
                    .with_member_id(s(&member))
            };
            let ResponseKind::Heartbeat(r) =
                c.call(ApiKey::Heartbeat, v, RequestKind::Heartbeat(hb(generation))).await
            else {
                panic!()
            };
            assert_eq!(r.error_code, 0, "Heartbeat v{v}");
            let ResponseKind::Heartbeat(r) =
                c.call(ApiKey::Heartbeat, v, RequestKind::Heartbeat(hb(generation + 1))).await
            else {
                panic!()
            };
            assert_eq!(r.error_code, code(ResponseError::IllegalGeneration), "Heartbeat v{v}");
        }

        // Nothing committed yet: -1 and no error.
        assert_eq!(fetch_offset(&mut c, 9, &group, &topic, 1).await, (-1, 0));
        for v in range(ApiKey::OffsetCommit) {
            if v < ApiKey::OffsetCommit.valid_versions().min {
                // v0 has no member: a standalone commit, refused in a group with members and
                // kept in an empty one. v1 is the member's commit with a per-partition time.
                let unknown = code(ResponseError::UnknownTopicOrPartition);
                let committed_to = if v == 0 {
                    let standalone = format!("{prefix}-standalone-v0");
                    let codes = commit_old(&mut c, v, &group, -1, "", &topic, 100).await;
                    assert_eq!(codes[0], code(ResponseError::UnknownMemberId), "OffsetCommit v0");
                    let codes = commit_old(&mut c, v, &standalone, -1, "", &topic, 100).await;
                    assert_eq!(codes, [0, unknown], "OffsetCommit v0");
                    standalone
                } else {
                    let codes = commit_old(
                        &mut c,
                        v,
                        &group,
                        generation,
                        &member,
                        &topic,
                        100 + i64::from(v),
                    )
                    .await;
                    assert_eq!(codes, [0, unknown], "OffsetCommit v{v}");
                    let codes =
                        commit_old(&mut c, v, &group, generation + 5, &member, &topic, 100).await;
                    assert_eq!(
                        codes[0],
                        code(ResponseError::IllegalGeneration),
                        "OffsetCommit v{v}"
                    );
                    group.clone()
                };
                for fv in range(ApiKey::OffsetFetch) {
                    assert_eq!(
                        fetch_offset(&mut c, fv, &committed_to, &topic, 1).await,
                        (100 + i64::from(v), 0),
                        "OffsetFetch v{fv} after OffsetCommit v{v}"
                    );
                }
                continue;
            }
            let req = OffsetCommitRequest::default()
                .with_group_id(gid(&group))
                .with_generation_id_or_member_epoch(generation)
                .with_member_id(s(&member))
                .with_topics(vec![
                    OffsetCommitRequestTopic::default()
                        .with_name(TopicName(s(&topic)))
                        .with_partitions(vec![
                            OffsetCommitRequestPartition::default()
                                .with_partition_index(1)
                                .with_committed_offset(100 + i64::from(v)),
                            OffsetCommitRequestPartition::default()
                                .with_partition_index(7)
                                .with_committed_offset(1),
                        ]),
                ]);
            let ResponseKind::OffsetCommit(r) =
                c.call(ApiKey::OffsetCommit, v, RequestKind::OffsetCommit(req.clone())).await
            else {
                panic!()
            };
            let codes: Vec<i16> = r.topics[0].partitions.iter().map(|p| p.error_code).collect();
            assert_eq!(
                codes,
                vec![0, code(ResponseError::UnknownTopicOrPartition)],
                "OffsetCommit v{v}"
            );
            let stale = req.with_generation_id_or_member_epoch(generation + 5);
            let ResponseKind::OffsetCommit(r) =
                c.call(ApiKey::OffsetCommit, v, RequestKind::OffsetCommit(stale)).await
            else {
                panic!()
            };
            assert_eq!(
                r.topics[0].partitions[0].error_code,
                code(ResponseError::IllegalGeneration),
                "OffsetCommit v{v}"
            );
            for fv in range(ApiKey::OffsetFetch) {
                assert_eq!(
                    fetch_offset(&mut c, fv, &group, &topic, 1).await,
                    (100 + i64::from(v), 0),
                    "OffsetFetch v{fv} after OffsetCommit v{v}"
                );
            }
        }
        // A null topic list (v2+) returns every committed offset.
        let req = OffsetFetchRequest::default().with_group_id(gid(&group)).with_topics(None);
        let ResponseKind::OffsetFetch(r) =
            c.call(ApiKey::OffsetFetch, 7, RequestKind::OffsetFetch(req)).await
        else {
            panic!()
        };
        assert_eq!(r.topics.len(), 1);
        assert_eq!(
            (r.topics[0].partitions[0].partition_index, r.topics[0].partitions[0].committed_offset),
            (1, 109)
        );

        for v in range(ApiKey::DescribeGroups) {
            let req = DescribeGroupsRequest::default()
                .with_groups(vec![gid(&group), gid(&format!("{prefix}-nobody"))]);
            let ResponseKind::DescribeGroups(r) =
                c.call(ApiKey::DescribeGroups, v, RequestKind::DescribeGroups(req)).await
            else {
                panic!()
            };
            let g = &r.groups[0];
            assert_eq!(
                (
                    g.error_code,
                    g.group_state.as_str(),
                    g.protocol_type.as_str(),
                    g.protocol_data.as_str()
                ),
                (0, "Stable", "consumer", "range"),
                "DescribeGroups v{v}"
            );
            assert_eq!(g.members.len(), 1);
            assert_eq!(g.members[0].member_id.as_str(), member);
            assert_eq!(g.members[0].member_assignment, Bytes::from(format!("assignment-{group}")));
            let missing = &r.groups[1];
            assert_eq!(missing.group_state.as_str(), "Dead", "DescribeGroups v{v}");
            assert_eq!(
                missing.error_code,
                if v >= 6 { code(ResponseError::GroupIdNotFound) } else { 0 },
                "DescribeGroups v{v}"
            );
        }

        for v in range(ApiKey::ListGroups) {
            let list = |states: Vec<&str>| {
                ListGroupsRequest::default().with_states_filter(states.into_iter().map(s).collect())
            };
            let ResponseKind::ListGroups(r) =
                c.call(ApiKey::ListGroups, v, RequestKind::ListGroups(list(vec![]))).await
            else {
                panic!()
            };
            assert_eq!(r.error_code, 0);
            let mine = r
                .groups
                .iter()
                .find(|g| g.group_id.0.as_str() == group)
                .unwrap_or_else(|| panic!("ListGroups v{v}: {:?}", r.groups));
            assert_eq!(mine.protocol_type.as_str(), "consumer");
            if v >= 4 {
                assert_eq!(mine.group_state.as_str(), "Stable");
                let ResponseKind::ListGroups(r) = c
                    .call(ApiKey::ListGroups, v, RequestKind::ListGroups(list(vec!["empty"])))
                    .await
                else {
                    panic!()
                };
                assert!(
                    r.groups.iter().all(|g| g.group_id.0.as_str() != group),
                    "ListGroups v{v} state filter"
                );
                assert!(
                    r.groups.iter().any(|g| g.group_id.0.as_str() == format!("{prefix}-join0")),
                    "left groups are Empty"
                );
            }
        }

        // OffsetDelete: refused while the live member subscribes to the topic; fine once Empty.
        let del = OffsetDeleteRequest::default().with_group_id(gid(&group)).with_topics(vec![
            OffsetDeleteRequestTopic::default().with_name(TopicName(s(&topic))).with_partitions(
                vec![OffsetDeleteRequestPartition::default().with_partition_index(1)],
            ),
        ]);
        for v in range(ApiKey::OffsetDelete) {
            let ResponseKind::OffsetDelete(r) =
                c.call(ApiKey::OffsetDelete, v, RequestKind::OffsetDelete(del.clone())).await
            else {
                panic!()
            };
            assert_eq!(
                r.topics[0].partitions[0].error_code,
                code(ResponseError::GroupSubscribedToTopic),
                "OffsetDelete v{v}"
            );
        }
        // A non-empty group cannot be deleted.
        let ResponseKind::DeleteGroups(r) = c
            .call(
                ApiKey::DeleteGroups,
                2,
                RequestKind::DeleteGroups(
                    DeleteGroupsRequest::default().with_groups_names(vec![gid(&group)]),
                ),
            )
            .await
        else {
            panic!()
        };
        assert_eq!(r.results[0].error_code, code(ResponseError::NonEmptyGroup));
        assert_eq!(leave(&mut c, 5, &group, &member).await, 0);
        let ResponseKind::OffsetDelete(r) =
            c.call(ApiKey::OffsetDelete, 0, RequestKind::OffsetDelete(del)).await
        else {
            panic!()
        };
        assert_eq!((r.error_code, r.topics[0].partitions[0].error_code), (0, 0));
        assert_eq!(fetch_offset(&mut c, 9, &group, &topic, 1).await, (-1, 0), "offset deleted");

        // DeleteGroups at every version, each on an Empty group from the JoinGroup loop.
        for v in range(ApiKey::DeleteGroups) {
            let g = format!("{prefix}-join{v}");
            let req = DeleteGroupsRequest::default().with_groups_names(vec![gid(&g)]);
            let ResponseKind::DeleteGroups(r) =
                c.call(ApiKey::DeleteGroups, v, RequestKind::DeleteGroups(req.clone())).await
            else {
                panic!()
            };
            assert_eq!(r.results[0].error_code, 0, "DeleteGroups v{v}");
            let ResponseKind::DeleteGroups(r) =
                c.call(ApiKey::DeleteGroups, v, RequestKind::DeleteGroups(req)).await
            else {
                panic!()
            };
            assert_eq!(
                r.results[0].error_code,
                code(ResponseError::GroupIdNotFound),
                "DeleteGroups v{v} twice"
            );
        }
        assert!(kelp.stop().await);
    }
}

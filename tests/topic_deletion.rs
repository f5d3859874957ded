//! Deleting a topic and creating it again, with two kelps in front of one SeaweedFS: the
//! deleted topic's committed offsets are gone from every group, the new topic has a new topic
//! id (every kelp reports the same one), and a consumer starting from the committed position
//! reads the new topic's records from offset 0 instead of resuming at the old offset.

mod common;

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use uuid::Uuid;

use common::kelp::Kelp;
use common::raw::{self, Raw};

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// The topic id `kelp` reports for `topic` (Metadata v12).
async fn topic_id(kelp: &Kelp, topic: &str) -> Uuid {
    let mut c = Raw::connect(kelp.addr).await;
    let req = MetadataRequest::default()
        .with_topics(Some(vec![
            metadata_request::MetadataRequestTopic::default().with_name(Some(TopicName(s(topic)))),
        ]))
        .with_allow_auto_topic_creation(false);
    let ResponseKind::Metadata(r) = c.call(ApiKey::Metadata, 12, RequestKind::Metadata(req)).await
    else {
        panic!("not a Metadata response")
    };
    assert_eq!(r.topics[0].error_code, 0, "metadata of {topic}");
    r.topics[0].topic_id
}

/// A standalone commit (no generation) of `offset` for partition 0.
async fn commit(kelp: &Kelp, group: &str, topic: &str, offset: i64) {
    let mut c = Raw::connect(kelp.addr).await;
    let req = OffsetCommitRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![
            OffsetCommitRequestTopic::default().with_name(TopicName(s(topic))).with_partitions(
                vec![
                    OffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(offset),
                ],
            ),
        ]);
    let ResponseKind::OffsetCommit(r) =
        c.call(ApiKey::OffsetCommit, 8, RequestKind::OffsetCommit(req)).await
    else {
        panic!("not an OffsetCommit response")
    };
    assert_eq!(r.topics[0].partitions[0].error_code, 0, "commit through {}", kelp.addr);
}

/// The group's committed offset of partition 0 (-1: none).
async fn committed(kelp: &Kelp, group: &str, topic: &str) -> i64 {
    let mut c = Raw::connect(kelp.addr).await;
    let req =
        OffsetFetchRequest::default().with_group_id(GroupId(s(group))).with_topics(Some(vec![
            OffsetFetchRequestTopic::default()
                .with_name(TopicName(s(topic)))
                .with_partition_indexes(vec![0]),
        ]));
    let ResponseKind::OffsetFetch(r) =
        c.call(ApiKey::OffsetFetch, 5, RequestKind::OffsetFetch(req)).await
    else {
        panic!("not an OffsetFetch response")
    };
    assert_eq!(r.error_code, 0);
    assert_eq!(r.topics[0].partitions[0].error_code, 0);
    r.topics[0].partitions[0].committed_offset
}

/// Every topic the group has offsets for (OffsetFetch with no topics).
async fn committed_topics(kelp: &Kelp, group: &str) -> Vec<String> {
    let mut c = Raw::connect(kelp.addr).await;
    let req = OffsetFetchRequest::default().with_group_id(GroupId(s(group))).with_topics(None);
    let ResponseKind::OffsetFetch(r) =
        c.call(ApiKey::OffsetFetch, 5, RequestKind::OffsetFetch(req)).await
    else {
        panic!("not an OffsetFetch response")
    };
    assert_eq!(r.error_code, 0);
    r.topics.iter().map(|t| t.name.0.to_string()).collect()
}

async fn delete_topic(kelp: &Kelp, topic: &str) {
    let mut c = Raw::connect(kelp.addr).await;
    let req = DeleteTopicsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(vec![DeleteTopicState::default().with_name(Some(TopicName(s(topic))))]);
    let ResponseKind::DeleteTopics(r) =
        c.call(ApiKey::DeleteTopics, 6, RequestKind::DeleteTopics(req)).await
    else {
        panic!("not a DeleteTopics response")
    };
    assert_eq!(r.responses[0].error_code, 0, "delete {topic}");
}

async fn produce(kelp: &Kelp, topic: &str, values: &[&str]) -> i64 {
    let records = values.iter().map(|v| (None, Bytes::from(v.to_string()), 0)).collect();
    let answer = raw::produce(kelp.addr, topic, vec![(0, raw::batch_of(records))]).await;
    assert_eq!(answer[0].error_code, 0, "produce to {topic}");
    answer[0].base_offset
}

/// Values read by a consumer of `group` that starts at the committed offset of partition 0
/// (the earliest offset when none is committed), with their offsets; stops at `n`.
async fn consume_from_committed(
    bootstrap: String,
    group: String,
    topic: String,
    n: usize,
) -> Vec<(i64, String)> {
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .create()
            .expect("consumer");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&topic, 0, Offset::Stored).expect("partition");
        consumer.assign(&tpl).expect("assign");
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while got.len() < n && std::time::Instant::now() < deadline {
            if let Some(m) = consumer.poll(Duration::from_millis(200)) {
                let m = m.expect("consume without error");
                let v = String::from_utf8(m.payload().expect("a value").to_vec()).expect("utf-8");
                got.push((m.offset(), v));
            }
        }
        got
    })
    .await
    .expect("consumer task")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreated_topic_has_a_new_id_and_no_committed_offsets() {
    common::init_tracing();
    let seaweedfs = common::seaweedfs::seaweedfs().await;
    let peer = ["--peer-listen", "127.0.0.1:0"];
    let a = Kelp::start(&seaweedfs, &peer).await;
    let b = Kelp::start(&seaweedfs, &peer).await;
    let topic = common::unique_name("recreated");
    let group = common::unique_name("g");
    let other_group = common::unique_name("g2");

    raw::create_topic_raw(a.addr, &topic, 1).await;
    assert_eq!(produce(&a, &topic, &["old-0", "old-1", "old-2", "old-3"]).await, 0);
    commit(&a, &group, &topic, 3).await;
    commit(&b, &other_group, &topic, 4).await;
    assert_eq!(committed(&b, &group, &topic).await, 3);
    assert_eq!(committed_topics(&a, &other_group).await, vec![topic.clone()]);
    let first_id = topic_id(&a, &topic).await;
    assert_eq!(topic_id(&b, &topic).await, first_id, "every kelp reports the same id");

    delete_topic(&b, &topic).await;
    // Deleted: no offsets left in either group, seen through either kelp.
    assert_eq!(committed(&a, &group, &topic).await, -1);
    assert_eq!(committed(&b, &other_group, &topic).await, -1);
    assert!(committed_topics(&b, &other_group).await.is_empty());

    raw::create_topic_raw(a.addr, &topic, 1).await;
    assert_eq!(produce(&a, &topic, &["new-0", "new-1"]).await, 0);
    let second_id = topic_id(&a, &topic).await;
    assert_ne!(second_id, first_id, "a re-created topic has a new id");
    // Kelp B learns of the new incarnation when its cached layout expires.
    let b_id = common::eventually(|| async {
        let id = topic_id(&b, &topic).await;
        if id == second_id { Ok(id) } else { Err(format!("kelp B still reports {id}")) }
    })
    .await;
    assert_eq!(b_id, second_id);
    assert_eq!(committed(&a, &group, &topic).await, -1);
    assert_eq!(committed(&b, &group, &topic).await, -1);

    let got = consume_from_committed(b.bootstrap(), group.clone(), topic.clone(), 2).await;
    assert_eq!(got, vec![(0, "new-0".to_string()), (1, "new-1".to_string())]);

    // Offsets committed now belong to the new topic.
    commit(&b, &group, &topic, 1).await;
    assert_eq!(committed(&a, &group, &topic).await, 1);
    assert!(a.stop().await);
    assert!(b.stop().await);
}

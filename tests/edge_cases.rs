//! Edge cases answered exactly as a Kafka broker answers them, with real clients and on a raw
//! socket: transactions fail fast, and the validation Kafka does on Produce, ListOffsets,
//! Metadata and the group APIs.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ListOffsetsRequest, ProduceRequest, RequestKind, ResponseKind, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, Producer};

use common::kelp::Kelp;
use common::raw::{self, Raw};

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

/// Produce (v9, acks=all) `records` to partition `partition` of `topic`; the response.
async fn produce(
    c: &mut Raw,
    version: i16,
    acks: i16,
    parts: Vec<(&str, i32, Option<Bytes>)>,
) -> Option<kafka_protocol::messages::ProduceResponse> {
    let topic_data = parts
        .into_iter()
        .map(|(t, p, records)| {
            TopicProduceData::default().with_name(name(t)).with_partition_data(vec![
                PartitionProduceData::default().with_index(p).with_records(records),
            ])
        })
        .collect();
    let req = ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(10_000)
        .with_topic_data(topic_data);
    if acks == 0 {
        let frame = c.frame(ApiKey::Produce, version, &RequestKind::Produce(req));
        c.send_bytes(&frame).await;
        return None;
    }
    match c.call(ApiKey::Produce, version, RequestKind::Produce(req)).await {
        ResponseKind::Produce(r) => Some(r),
        other => panic!("unexpected {other:?}"),
    }
}

/// ListOffsets v9 for one partition: (error code, timestamp, offset).
async fn list_offset(c: &mut Raw, topic: &str, timestamp: i64) -> (i16, i64, i64) {
    let req = ListOffsetsRequest::default().with_replica_id((-1).into()).with_topics(vec![
        ListOffsetsTopic::default().with_name(name(topic)).with_partitions(vec![
            ListOffsetsPartition::default().with_partition_index(0).with_timestamp(timestamp),
        ]),
    ]);
    match c.call(ApiKey::ListOffsets, 9, RequestKind::ListOffsets(req)).await {
        ResponseKind::ListOffsets(r) => {
            let p = &r.topics[0].partitions[0];
            (p.error_code, p.timestamp, p.offset)
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_offsets_max_timestamp_and_tiered_answer_as_kafka() {
    let seaweedfs = common::seaweedfs().await;
    let kelp = Kelp::start(&seaweedfs, &[]).await;
    let topic = common::unique_name("max-ts");
    raw::create_topic_raw(kelp.addr, &topic, 1).await;
    let mut c = Raw::connect(kelp.addr).await;

    // Empty partition: no record, so -1/-1.
    assert_eq!(list_offset(&mut c, &topic, -3).await, (0, -1, -1));

    let v = |s: &str| Bytes::from(s.to_string());
    let ts = [1_000, 5_000, 2_000, 5_000, 4_000];
    let records = ts.iter().map(|t| (None, v("x"), *t)).collect();
    let r = produce(&mut c, 9, -1, vec![(&topic, 0, Some(raw::batch_of(records)))]).await.unwrap();
    assert_eq!(r.responses[0].partition_responses[0].error_code, 0);

    // The largest timestamp (the first of the two 5000s), not the last record.
    assert_eq!(list_offset(&mut c, &topic, -3).await, (0, 5_000, 1));
    // No tiered storage: -1/-1, as Kafka with remote storage off.
    assert_eq!(list_offset(&mut c, &topic, -5).await, (0, -1, -1));
    // Earliest local is the earliest; latest is the end.
    assert_eq!(list_offset(&mut c, &topic, -4).await, (0, -1, 0));
    assert_eq!(list_offset(&mut c, &topic, -1).await, (0, -1, 5));
    kelp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transactional_producer_fails_at_once_not_after_its_timeout() {
    let seaweedfs = common::seaweedfs().await;
    let kelp = Kelp::start(&seaweedfs, &[]).await;
    let bootstrap = kelp.bootstrap();
    let (elapsed, result) = tokio::task::spawn_blocking(move || {
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("transactional.id", "edge-txn")
            .create()
            .expect("producer");
        let start = Instant::now();
        let r = producer.init_transactions(Duration::from_secs(60));
        (start.elapsed(), r)
    })
    .await
    .unwrap();
    let Err(KafkaError::Transaction(e)) = result else {
        panic!("init_transactions must fail with a transaction error, got {result:?}");
    };
    assert!(e.is_fatal(), "a fatal error, not one to retry: {e}");
    assert_eq!(e.code(), rdkafka::types::RDKafkaErrorCode::TransactionalIdAuthorizationFailed);
    assert!(elapsed < Duration::from_secs(10), "failed after {elapsed:?}");
    kelp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_is_validated_as_kafka_validates_it() {
    use kafka_protocol::ResponseError;
    use kafka_protocol::records::Compression;
    let seaweedfs = common::seaweedfs().await;
    let kelp = Kelp::start(&seaweedfs, &[]).await;
    let topic = common::unique_name("validate");
    raw::create_topic_raw(kelp.addr, &topic, 1).await;
    let one = || raw::batch_of(vec![(None, Bytes::from_static(b"v"), 1)]);
    let code = |r: Option<kafka_protocol::messages::ProduceResponse>| {
        r.unwrap().responses[0].partition_responses[0].error_code
    };
    let mut c = Raw::connect(kelp.addr).await;

    // acks outside -1/0/1: INVALID_REQUIRED_ACKS, answered even though acks is not -1 or 1.
    for acks in [2, -2] {
        let r = produce(&mut c, 9, acks, vec![(&topic, 0, Some(one()))]).await;
        assert_eq!(code(r), ResponseError::InvalidRequiredAcks.code(), "acks {acks}");
    }
    // Two batches in one partition: INVALID_RECORD.
    let two = Bytes::from([one(), one()].concat());
    let r = produce(&mut c, 9, -1, vec![(&topic, 0, Some(two))]).await;
    assert_eq!(code(r), ResponseError::InvalidRecord.code());
    // zstd before Produce v7: UNSUPPORTED_COMPRESSION_TYPE; from v7 it is stored.
    let zstd =
        || raw::compressed_batch_of(vec![(None, Bytes::from_static(b"z"), 1)], Compression::Zstd);
    let r = produce(&mut c, 6, -1, vec![(&topic, 0, Some(zstd()))]).await;
    assert_eq!(code(r), ResponseError::UnsupportedCompressionType.code());
    let r = produce(&mut c, 7, -1, vec![(&topic, 0, Some(zstd()))]).await;
    assert_eq!(code(r), 0);
    // A last offset delta that disagrees with the record count: INVALID_RECORD.
    let mut bad = one().to_vec();
    bad[23..27].copy_from_slice(&3i32.to_be_bytes());
    let crc = crc32c::crc32c(&bad[21..]);
    bad[17..21].copy_from_slice(&crc.to_be_bytes());
    let r = produce(&mut c, 9, -1, vec![(&topic, 0, Some(Bytes::from(bad)))]).await;
    assert_eq!(code(r), ResponseError::InvalidRecord.code());

    // acks=0: a request that worked keeps the connection; one that failed closes it.
    produce(&mut c, 9, 0, vec![(&topic, 0, Some(one()))]).await;
    let r = produce(&mut c, 9, -1, vec![(&topic, 0, Some(one()))]).await;
    assert_eq!(code(r), 0, "the connection is still usable after a good acks=0 request");
    produce(&mut c, 9, 0, vec![("no-such-topic-edge", 0, Some(one()))]).await;
    assert!(c.closed().await, "a failed acks=0 request closes the connection");
    // An unknown partition of a known topic, likewise.
    let mut c = Raw::connect(kelp.addr).await;
    produce(&mut c, 9, 0, vec![(&topic, 5, Some(one()))]).await;
    assert!(c.closed().await, "an unknown partition with acks=0 closes the connection");
    kelp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_topic_listing_is_no_empty_topic_list() {
    use kafka_protocol::messages::MetadataRequest;
    let mut seaweedfs = common::seaweedfs().await;
    let kelp = Kelp::start(&seaweedfs, &["--upstream-timeout-ms", "2000"]).await;
    let topic = common::unique_name("listed");
    raw::create_topic_raw(kelp.addr, &topic, 1).await;
    let all = || RequestKind::Metadata(MetadataRequest::default().with_topics(None));

    seaweedfs.stop_broker().await.expect("broker stops");
    for version in [1, 9, 12] {
        let mut c = Raw::connect(kelp.addr).await;
        let frame = c.frame(ApiKey::Metadata, version, &all());
        c.send_bytes(&frame).await;
        assert!(
            c.closed().await,
            "v{version}: no answer that says 'no topics'; the connection closes"
        );
    }

    seaweedfs.start_broker(Duration::from_secs(60)).await.expect("broker restarts");
    common::eventually(|| async {
        let mut c = Raw::connect(kelp.addr).await;
        let frame = c.frame(ApiKey::Metadata, 12, &all());
        c.send_bytes(&frame).await;
        c.read_frame().await.map(|_| ()).ok_or("closed")
    })
    .await;
    let mut c = Raw::connect(kelp.addr).await;
    let ResponseKind::Metadata(r) = c.call(ApiKey::Metadata, 12, all()).await else { panic!() };
    assert!(r.topics.iter().any(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == topic)));
    kelp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_ids_and_group_size_are_checked_as_kafka_checks_them() {
    use kafka_protocol::ResponseError;
    use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
    use kafka_protocol::messages::{
        GroupId, HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest, OffsetDeleteRequest,
        SyncGroupRequest,
    };
    let seaweedfs = common::seaweedfs().await;
    let kelp = Kelp::start(&seaweedfs, &["--group-max-size", "1"]).await;
    let mut c = Raw::connect(kelp.addr).await;
    let gid = |s: &str| GroupId(StrBytes::from_string(s.to_string()));
    let join = |group: &str, member: &str| {
        RequestKind::JoinGroup(
            JoinGroupRequest::default()
                .with_group_id(gid(group))
                .with_member_id(StrBytes::from_string(member.to_string()))
                .with_session_timeout_ms(10_000)
                .with_rebalance_timeout_ms(10_000)
                .with_protocol_type(StrBytes::from_static_str("consumer"))
                .with_protocols(vec![
                    JoinGroupRequestProtocol::default()
                        .with_name(StrBytes::from_static_str("range"))
                        .with_metadata(Bytes::new()),
                ]),
        )
    };
    let invalid = ResponseError::InvalidGroupId.code();

    // An empty group id, on every API where Kafka refuses one.
    let ResponseKind::JoinGroup(r) = c.call(ApiKey::JoinGroup, 5, join("", "")).await else {
        panic!()
    };
    assert_eq!(r.error_code, invalid, "JoinGroup");
    let sync = RequestKind::SyncGroup(SyncGroupRequest::default().with_group_id(gid("")));
    let ResponseKind::SyncGroup(r) = c.call(ApiKey::SyncGroup, 3, sync).await else { panic!() };
    assert_eq!(r.error_code, invalid, "SyncGroup");
    let hb = RequestKind::Heartbeat(HeartbeatRequest::default().with_group_id(gid("")));
    let ResponseKind::Heartbeat(r) = c.call(ApiKey::Heartbeat, 3, hb).await else { panic!() };
    assert_eq!(r.error_code, invalid, "Heartbeat");
    let leave = RequestKind::LeaveGroup(LeaveGroupRequest::default().with_group_id(gid("")));
    let ResponseKind::LeaveGroup(r) = c.call(ApiKey::LeaveGroup, 2, leave).await else { panic!() };
    assert_eq!(r.error_code, invalid, "LeaveGroup");
    let del = RequestKind::OffsetDelete(OffsetDeleteRequest::default().with_group_id(gid("")));
    let ResponseKind::OffsetDelete(r) = c.call(ApiKey::OffsetDelete, 0, del).await else {
        panic!()
    };
    assert_eq!(r.error_code, invalid, "OffsetDelete");

    // group.max.size 1: the first member joins (v3: no member id round trip), the second is
    // refused.
    let group = common::unique_name("full");
    let ResponseKind::JoinGroup(first) = c.call(ApiKey::JoinGroup, 3, join(&group, "")).await
    else {
        panic!()
    };
    assert_eq!(first.error_code, 0);
    let mut other = Raw::connect(kelp.addr).await;
    let ResponseKind::JoinGroup(second) = other.call(ApiKey::JoinGroup, 3, join(&group, "")).await
    else {
        panic!()
    };
    assert_eq!(second.error_code, ResponseError::GroupMaxSizeReached.code());
    kelp.stop().await;
}

//! Every advertised API at every advertised version, on the wire against real SeaweedFS.

mod common;

use bytes::{Bytes, BytesMut};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::RecordBatchDecoder;
use kelp::protocol::versions::{SUPPORTED, supported};

use common::kelp::Kelp;
use common::raw::Raw;
use common::wire::{self, Body, Reader};

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

fn range(key: ApiKey) -> std::ops::RangeInclusive<i16> {
    let s = supported(key).expect("advertised");
    s.min..=s.max
}

/// Whether the wire library cannot encode `key` at `version` (Kafka 4.0 dropped it): the test
/// then speaks the old layout itself.
fn old(key: ApiKey, version: i16) -> bool {
    version < key.valid_versions().min
}

fn v2_batch(value: &str, timestamp: i64) -> Bytes {
    common::raw::batch_of(vec![(
        Some(Bytes::from_static(b"k")),
        Bytes::copy_from_slice(value.as_bytes()),
        timestamp,
    )])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_advertised_version_of_every_api_answers_correctly() {
    let seaweedfs = common::seaweedfs().await;
    let kelp = Kelp::start(&seaweedfs, &["--auto-create-topics", "false"]).await;
    let mut c = Raw::connect(kelp.addr).await;

    // ApiVersions: the table equals protocol::versions at every version.
    for v in range(ApiKey::ApiVersions) {
        let ResponseKind::ApiVersions(r) = c
            .call(ApiKey::ApiVersions, v, RequestKind::ApiVersions(ApiVersionsRequest::default()))
            .await
        else {
            panic!()
        };
        assert_eq!(r.error_code, 0);
        let got: Vec<(i16, i16, i16)> =
            r.api_keys.iter().map(|k| (k.api_key, k.min_version, k.max_version)).collect();
        let want: Vec<(i16, i16, i16)> =
            SUPPORTED.iter().map(|s| (s.key as i16, s.min, s.max)).collect();
        assert_eq!(got, want, "ApiVersions v{v}");
    }

    // CreateTopics at every version; a second create says TOPIC_ALREADY_EXISTS.
    let mut topics = Vec::new();
    for v in range(ApiKey::CreateTopics) {
        let t = common::unique_name(&format!("ct{v}"));
        if old(ApiKey::CreateTopics, v) {
            // [name, partitions, replication, [assignments], [configs]], timeout (v1: validate_only)
            let mut body = Body::default().i32(1).str(&t).i32(2).i16(1).i32(0).i32(0).i32(30_000);
            if v >= 1 {
                body = body.i8(0);
            }
            for want in [0, ResponseError::TopicAlreadyExists.code()] {
                let mut r = Reader(c.call_body(ApiKey::CreateTopics, v, &body.0).await);
                assert_eq!(r.i32(), 1);
                assert_eq!(r.str().as_deref(), Some(t.as_str()));
                assert_eq!(r.i16(), want, "CreateTopics v{v}");
                if v >= 1 {
                    let message = r.str();
                    assert_eq!(message.is_some(), want != 0, "CreateTopics v{v}: {message:?}");
                }
                r.done();
            }
            topics.push(t);
            continue;
        }
        let req = CreateTopicsRequest::default().with_timeout_ms(30_000).with_topics(vec![
            CreatableTopic::default()
                .with_name(name(&t))
                .with_num_partitions(2)
                .with_replication_factor(1),
        ]);
        let ResponseKind::CreateTopics(r) =
            c.call(ApiKey::CreateTopics, v, RequestKind::CreateTopics(req.clone())).await
        else {
            panic!()
        };
        assert_eq!(r.topics[0].error_code, 0, "CreateTopics v{v}: {:?}", r.topics[0].error_message);
        let ResponseKind::CreateTopics(r) =
            c.call(ApiKey::CreateTopics, v, RequestKind::CreateTopics(req)).await
        else {
            panic!()
        };
        assert_eq!(
            r.topics[0].error_code,
            ResponseError::TopicAlreadyExists.code(),
            "CreateTopics v{v} twice"
        );
        topics.push(t);
    }
    let bad = CreateTopicsRequest::default().with_topics(vec![
        CreatableTopic::default()
            .with_name(name("bad name!"))
            .with_num_partitions(1)
            .with_replication_factor(1),
    ]);
    let ResponseKind::CreateTopics(r) =
        c.call(ApiKey::CreateTopics, 7, RequestKind::CreateTopics(bad)).await
    else {
        panic!()
    };
    assert_eq!(r.topics[0].error_code, ResponseError::InvalidTopicException.code());

    // Metadata at every version: kelp leads both partitions of the topic.
    let t = &topics[0];
    for v in range(ApiKey::Metadata) {
        let mut topic = MetadataRequestTopic::default().with_name(Some(name(t)));
        if v >= 10 {
            topic = topic.with_topic_id(uuid::Uuid::nil());
        }
        let req = MetadataRequest::default()
            .with_topics(Some(vec![topic]))
            .with_allow_auto_topic_creation(v < 4);
        let ResponseKind::Metadata(r) =
            c.call(ApiKey::Metadata, v, RequestKind::Metadata(req)).await
        else {
            panic!()
        };
        assert_eq!(r.brokers.len(), 1, "Metadata v{v}");
        assert_eq!(r.brokers[0].port, i32::from(kelp.addr.port()));
        assert_eq!(r.topics.len(), 1);
        assert_eq!(r.topics[0].error_code, 0, "Metadata v{v}");
        assert_eq!(r.topics[0].partitions.len(), 2, "Metadata v{v}");
        assert!(r.topics[0].partitions.iter().all(|p| p.leader_id == r.brokers[0].node_id));
    }
    // Unknown topic with auto-creation off.
    let req = MetadataRequest::default().with_topics(Some(vec![
        MetadataRequestTopic::default().with_name(Some(name("never-created"))),
    ]));
    let ResponseKind::Metadata(r) = c.call(ApiKey::Metadata, 12, RequestKind::Metadata(req)).await
    else {
        panic!()
    };
    assert_eq!(r.topics[0].error_code, ResponseError::UnknownTopicOrPartition.code());

    // Produce at every version, one record each, to partition 1 of `t`.
    let topic_id = {
        let req = MetadataRequest::default()
            .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(name(t)))]));
        let ResponseKind::Metadata(r) =
            c.call(ApiKey::Metadata, 12, RequestKind::Metadata(req)).await
        else {
            panic!()
        };
        r.topics[0].topic_id
    };
    let mut expected = Vec::new();
    for v in range(ApiKey::Produce) {
        let value = format!("produced-with-v{v}");
        let ts = 1_600_000_000_000 + i64::from(v);
        let offset = if v < 3 {
            let mut set = Vec::new();
            kelp::records::legacy::encode_message(
                &mut set,
                if v == 0 { 0 } else { 1 },
                ts,
                Some(b"k"),
                Some(value.as_bytes()),
            );
            let req = kelp::protocol::legacy_produce::ProduceRequest {
                acks: -1,
                timeout_ms: 10_000,
                topics: vec![kelp::protocol::legacy_produce::TopicData {
                    name: t.clone(),
                    partitions: vec![(1, Some(Bytes::from(set)))],
                }],
            };
            legacy_produce(&mut c, v, &req).await
        } else {
            let mut td = TopicProduceData::default().with_partition_data(vec![
                PartitionProduceData::default()
                    .with_index(1)
                    .with_records(Some(v2_batch(&value, ts))),
            ]);
            td = if v >= 13 { td.with_topic_id(topic_id) } else { td.with_name(name(t)) };
            let req = ProduceRequest::default()
                .with_acks(-1)
                .with_timeout_ms(10_000)
                .with_topic_data(vec![td]);
            let ResponseKind::Produce(r) =
                c.call(ApiKey::Produce, v, RequestKind::Produce(req)).await
            else {
                panic!()
            };
            let p = &r.responses[0].partition_responses[0];
            assert_eq!(p.error_code, 0, "Produce v{v}: {:?}", p.error_message);
            p.base_offset
        };
        assert_eq!(offset, expected.len() as i64, "Produce v{v} offset");
        expected.push((value, if v == 0 { -1 } else { ts }));
    }

    // Fetch at every version from offset 0 returns every record with its offset.
    for v in range(ApiKey::Fetch) {
        if old(ApiKey::Fetch, v) {
            // replica, max_wait, min_bytes, (v3: max_bytes), [topic, [partition, offset, max]]
            let mut body = Body::default().i32(-1).i32(100).i32(1);
            if v >= 3 {
                body = body.i32(1 << 20);
            }
            let body = body.i32(1).str(t).i32(1).i32(1).i64(0).i32(1 << 20);
            let mut r = Reader(c.call_body(ApiKey::Fetch, v, &body.0).await);
            if v >= 1 {
                assert_eq!(r.i32(), 0, "throttle");
            }
            assert_eq!((r.i32(), r.str().as_deref()), (1, Some(t.as_str())));
            assert_eq!((r.i32(), r.i32()), (1, 1), "one partition, index 1");
            assert_eq!(r.i16(), 0, "Fetch v{v}");
            assert_eq!(r.i64(), expected.len() as i64, "Fetch v{v} hwm");
            let set = r.bytes().expect("a message set");
            r.done();
            // v0-v1 get magic 0 (no timestamps), v2-v3 magic 1.
            let magic = if v >= 2 { 1 } else { 0 };
            let got: Vec<(i64, i8, i64, Option<Bytes>, String)> = wire::message_set(set)
                .into_iter()
                .map(|(o, m, ts, k, val)| {
                    (o, m, ts, k, String::from_utf8(val.unwrap().to_vec()).unwrap())
                })
                .collect();
            let want: Vec<(i64, i8, i64, Option<Bytes>, String)> = expected
                .iter()
                .enumerate()
                .map(|(i, (val, ts))| {
                    let ts = if magic == 1 { *ts } else { -1 };
                    (i as i64, magic, ts, Some(Bytes::from_static(b"k")), val.clone())
                })
                .collect();
            assert_eq!(got, want, "Fetch v{v}");
            continue;
        }
        let mut ft = FetchTopic::default().with_partitions(vec![
            FetchPartition::default()
                .with_partition(1)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20),
        ]);
        ft = if v >= 13 { ft.with_topic_id(topic_id) } else { ft.with_topic(name(t)) };
        let req = FetchRequest::default()
            .with_max_wait_ms(100)
            .with_min_bytes(1)
            .with_max_bytes(1 << 20)
            .with_session_epoch(-1)
            .with_topics(vec![ft]);
        let ResponseKind::Fetch(r) = c.call(ApiKey::Fetch, v, RequestKind::Fetch(req)).await else {
            panic!()
        };
        let p = &r.responses[0].partitions[0];
        assert_eq!(p.error_code, 0, "Fetch v{v}");
        assert_eq!(p.high_watermark, expected.len() as i64, "Fetch v{v} hwm");
        let mut records = p.records.clone().expect("records");
        let sets = RecordBatchDecoder::decode_all(&mut records).expect("batches decode");
        let got: Vec<(i64, String, i64)> = sets
            .iter()
            .flat_map(|s| s.records.iter())
            .map(|r| {
                (
                    r.offset,
                    String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap(),
                    r.timestamp,
                )
            })
            .collect();
        let want: Vec<(i64, String, i64)> =
            expected.iter().enumerate().map(|(i, (v, ts))| (i as i64, v.clone(), *ts)).collect();
        assert_eq!(got, want, "Fetch v{v}");
    }
    // Fetch beyond the end: OFFSET_OUT_OF_RANGE.
    let req = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default().with_topic(name(t)).with_partitions(vec![
                FetchPartition::default()
                    .with_partition(1)
                    .with_fetch_offset(1000)
                    .with_partition_max_bytes(1 << 20),
            ])]);
    let ResponseKind::Fetch(r) = c.call(ApiKey::Fetch, 12, RequestKind::Fetch(req)).await else {
        panic!()
    };
    assert_eq!(r.responses[0].partitions[0].error_code, ResponseError::OffsetOutOfRange.code());

    // ListOffsets at every version: earliest, latest, by timestamp.
    let n = expected.len() as i64;
    for v in range(ApiKey::ListOffsets) {
        for (ts, want) in [(-2i64, 0i64), (-1, n), (1_600_000_000_005, 5), (1_700_000_000_000, -1)]
        {
            if old(ApiKey::ListOffsets, v) {
                // replica, [topic, [partition, timestamp, max_num_offsets]]
                let body = Body::default().i32(-1).i32(1).str(t).i32(1).i32(1).i64(ts).i32(1);
                let mut r = Reader(c.call_body(ApiKey::ListOffsets, v, &body.0).await);
                assert_eq!((r.i32(), r.str().as_deref()), (1, Some(t.as_str())));
                assert_eq!((r.i32(), r.i32(), r.i16()), (1, 1, 0), "ListOffsets v{v} ts {ts}");
                let offsets: Vec<i64> = (0..r.i32()).map(|_| r.i64()).collect();
                r.done();
                let want: Vec<i64> = if want < 0 { vec![] } else { vec![want] };
                assert_eq!(offsets, want, "ListOffsets v{v} ts {ts}");
                continue;
            }
            let req =
                ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(vec![
                    ListOffsetsTopic::default().with_name(name(t)).with_partitions(vec![
                        ListOffsetsPartition::default().with_partition_index(1).with_timestamp(ts),
                    ]),
                ]);
            let ResponseKind::ListOffsets(r) =
                c.call(ApiKey::ListOffsets, v, RequestKind::ListOffsets(req)).await
            else {
                panic!()
            };
            let p = &r.topics[0].partitions[0];
            assert_eq!(p.error_code, 0, "ListOffsets v{v} ts {ts}");
            assert_eq!(p.offset, want, "ListOffsets v{v} ts {ts}");
        }
    }

    // DescribeConfigs at every version.
    for v in range(ApiKey::DescribeConfigs) {
        if old(ApiKey::DescribeConfigs, v) {
            // [resource_type, name, null config names]
            let body = Body::default().i32(2).i8(2).str(t).i32(-1).i8(2).str("nope-nope").i32(-1);
            let mut r = Reader(c.call_body(ApiKey::DescribeConfigs, v, &body.0).await);
            assert_eq!((r.i32(), r.i32()), (0, 2), "throttle, two results");
            let mut results = Vec::new();
            for _ in 0..2 {
                let (code, _message, kind, name) = (r.i16(), r.str(), r.i8(), r.str().unwrap());
                // name, value, read_only, is_default, is_sensitive
                let configs: Vec<(String, Option<String>, i8, i8, i8)> = (0..r.i32())
                    .map(|_| (r.str().unwrap(), r.str(), r.i8(), r.i8(), r.i8()))
                    .collect();
                results.push((code, kind, name, configs));
            }
            r.done();
            assert_eq!((results[0].0, results[0].1, results[0].2.as_str()), (0, 2, t.as_str()));
            assert!(
                results[0].3.iter().any(|c| c.0 == "max.message.bytes" && c.1.is_some()),
                "DescribeConfigs v{v}: {:?}",
                results[0].3
            );
            assert_eq!(results[1].0, ResponseError::UnknownTopicOrPartition.code());
            continue;
        }
        let req = DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_string(t.clone())),
            DescribeConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_static_str("nope-nope")),
        ]);
        let ResponseKind::DescribeConfigs(r) =
            c.call(ApiKey::DescribeConfigs, v, RequestKind::DescribeConfigs(req)).await
        else {
            panic!()
        };
        assert_eq!(r.results[0].error_code, 0, "DescribeConfigs v{v}");
        assert!(r.results[0].configs.iter().any(|c| c.name.as_str() == "max.message.bytes"));
        assert_eq!(r.results[1].error_code, ResponseError::UnknownTopicOrPartition.code());
    }

    // DescribeCluster at every version.
    for v in range(ApiKey::DescribeCluster) {
        let ResponseKind::DescribeCluster(r) = c
            .call(
                ApiKey::DescribeCluster,
                v,
                RequestKind::DescribeCluster(DescribeClusterRequest::default()),
            )
            .await
        else {
            panic!()
        };
        assert_eq!(r.error_code, 0);
        assert_eq!(r.brokers.len(), 1);
        assert_eq!(r.brokers[0].port, i32::from(kelp.addr.port()));
    }

    // InitProducerId at every version.
    for v in range(ApiKey::InitProducerId) {
        let req = InitProducerIdRequest::default()
            .with_transaction_timeout_ms(60_000)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
        let ResponseKind::InitProducerId(r) =
            c.call(ApiKey::InitProducerId, v, RequestKind::InitProducerId(req)).await
        else {
            panic!()
        };
        assert_eq!(r.error_code, 0);
        assert!(r.producer_id.0 > 0, "InitProducerId v{v}");
    }

    // CreatePartitions at every version: either SeaweedFS grows the topic or kelp says clearly why not.
    for v in range(ApiKey::CreatePartitions) {
        let t = &topics[v as usize % topics.len()];
        let req = CreatePartitionsRequest::default()
            .with_timeout_ms(30_000)
            .with_topics(vec![CreatePartitionsTopic::default().with_name(name(t)).with_count(4)]);
        let ResponseKind::CreatePartitions(r) =
            c.call(ApiKey::CreatePartitions, v, RequestKind::CreatePartitions(req)).await
        else {
            panic!()
        };
        let res = &r.results[0];
        assert!(
            res.error_code == 0
                || (res.error_code == ResponseError::InvalidRequest.code()
                    && res.error_message.is_some()),
            "CreatePartitions v{v}: {} {:?}",
            res.error_code,
            res.error_message
        );
        // Shrinking is always refused.
        let req = CreatePartitionsRequest::default()
            .with_topics(vec![CreatePartitionsTopic::default().with_name(name(t)).with_count(1)]);
        let ResponseKind::CreatePartitions(r) =
            c.call(ApiKey::CreatePartitions, v, RequestKind::CreatePartitions(req)).await
        else {
            panic!()
        };
        assert_eq!(r.results[0].error_code, ResponseError::InvalidPartitions.code());
    }

    // DeleteTopics at every version (by name; by id from v6).
    for (i, v) in range(ApiKey::DeleteTopics).enumerate() {
        let t = &topics[i];
        if old(ApiKey::DeleteTopics, v) {
            let body = Body::default().i32(1).str(t).i32(30_000);
            for first in [true, false] {
                let mut r = Reader(c.call_body(ApiKey::DeleteTopics, v, &body.0).await);
                assert_eq!((r.i32(), r.str().as_deref()), (1, Some(t.as_str())));
                let code = r.i16();
                r.done();
                assert_eq!(code == 0, first, "DeleteTopics v{v}: {code}");
            }
        } else {
            let req = if v >= 6 {
                let id = kelp::topics::topic_id("kafka", t, 0);
                DeleteTopicsRequest::default()
                    .with_topics(vec![DeleteTopicState::default().with_topic_id(id)])
            } else {
                DeleteTopicsRequest::default().with_topic_names(vec![name(t)])
            };
            let ResponseKind::DeleteTopics(r) =
                c.call(ApiKey::DeleteTopics, v, RequestKind::DeleteTopics(req.clone())).await
            else {
                panic!()
            };
            assert_eq!(r.responses[0].error_code, 0, "DeleteTopics v{v}");
            let ResponseKind::DeleteTopics(r) =
                c.call(ApiKey::DeleteTopics, v, RequestKind::DeleteTopics(req)).await
            else {
                panic!()
            };
            assert_ne!(r.responses[0].error_code, 0, "DeleteTopics v{v} twice");
        }
        let req = MetadataRequest::default()
            .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(name(t)))]));
        let ResponseKind::Metadata(r) =
            c.call(ApiKey::Metadata, 12, RequestKind::Metadata(req)).await
        else {
            panic!()
        };
        assert_eq!(
            r.topics[0].error_code,
            ResponseError::UnknownTopicOrPartition.code(),
            "deleted by DeleteTopics v{v}"
        );
    }
    assert!(kelp.stop().await);
}

async fn legacy_produce(
    c: &mut Raw,
    version: i16,
    req: &kelp::protocol::legacy_produce::ProduceRequest,
) -> i64 {
    use bytes::{Buf, BufMut};
    let mut body = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(ApiKey::Produce as i16)
        .with_request_api_version(version)
        .with_correlation_id(99)
        .with_client_id(Some(StrBytes::from_static_str("legacy")))
        .encode(&mut body, 1)
        .unwrap();
    req.encode(&mut body);
    let mut frame = BytesMut::new();
    frame.put_i32(body.len() as i32);
    frame.extend_from_slice(&body);
    c.send_bytes(&frame).await;
    let mut r = c.read_frame().await.expect("legacy produce answered");
    assert_eq!(r.get_i32(), 99);
    assert_eq!(r.get_i32(), 1, "one topic");
    let n = r.get_i16() as usize;
    r.advance(n);
    assert_eq!(r.get_i32(), 1, "one partition");
    assert_eq!(r.get_i32(), 1, "partition index");
    assert_eq!(r.get_i16(), 0, "Produce v{version} error code");
    r.get_i64()
}

use kafka_protocol::protocol::Encodable;

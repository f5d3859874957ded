//! SeaweedFS trouble: a broker restart is survived by a producing client (retriable errors,
//! nothing acknowledged and flushed is lost), and an unreachable SeaweedFS gives retriable
//! Kafka error codes, never UNKNOWN_SERVER_ERROR.

mod common;

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

use common::kelp::Kelp;
use common::raw::Raw;

fn producer(bootstrap: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("linger.ms", "2")
        .set("message.timeout.ms", "120000")
        .set("retry.backoff.ms", "200")
        .create()
        .expect("producer")
}

async fn send(p: &FutureProducer, topic: &str, range: std::ops::Range<usize>) -> Vec<i64> {
    let futures: Vec<_> = range
        .map(|i| {
            let v = format!("value-{i}");
            p.send_result(FutureRecord::<(), _>::to(topic).partition(0).payload(&v))
                .map_err(|(e, _)| e)
                .expect("queued")
        })
        .collect();
    let mut offsets = Vec::new();
    for f in futures {
        let d =
            f.await.expect("report").map_err(|(e, _)| e).expect("delivered despite the restart");
        offsets.push(d.offset);
    }
    offsets
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_is_survived_by_a_producing_client() {
    let mut seaweedfs = common::seaweedfs().await;
    let kelp = Kelp::start(&seaweedfs, &["--upstream-timeout-ms", "3000"]).await;
    let topic = common::unique_name("restart");
    common::create_topic_raw(kelp.addr, &topic, 1).await;
    let p = producer(&kelp.bootstrap());

    let before = send(&p, &topic, 0..500).await;
    // Let the broker flush what it acknowledged (SeaweedFS keeps acknowledged records in
    // memory until its flush; see docs/limitations.md).
    tokio::time::sleep(Duration::from_secs(3 * kelp::embedded::BROKER_FLUSH_SECONDS)).await;
    seaweedfs.stop_broker().await.expect("broker stops");

    // Records sent while the broker is down are retried by the client until it is back.
    let during = tokio::spawn({
        let p = p.clone();
        let topic = topic.clone();
        async move { send(&p, &topic, 500..1000).await }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    seaweedfs.start_broker(Duration::from_secs(60)).await.expect("broker restarts");
    let after = tokio::time::timeout(Duration::from_secs(120), during)
        .await
        .expect("delivered in time")
        .unwrap();

    let mut all: Vec<i64> = before.iter().chain(after.iter()).copied().collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 1000, "every record has its own offset");

    let seen =
        common::clients::read_values(&kelp.bootstrap(), &topic, 1, |seen| seen.len() >= 1000);
    let missing: Vec<usize> = (0..1000).filter(|i| !seen.contains(&format!("value-{i}"))).collect();
    assert!(missing.is_empty(), "acknowledged records missing after the restart: {missing:?}");
    assert!(kelp.stop().await);
}

fn batch() -> Bytes {
    common::raw::batch_of(vec![(None, Bytes::from_static(b"v"), 1)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_seaweedfs_gives_retriable_codes() {
    // Nothing listens on these ports.
    let dead = |p: u16| format!("127.0.0.1:{p}.{}", p + 1);
    let config = kelp::config::Config::from_args([
        "--listen",
        "127.0.0.1:0",
        "--master",
        &dead(9),
        "--filer",
        &dead(11),
        "--upstream-timeout-ms",
        "1000",
    ])
    .unwrap();
    let running = kelp::start(config).await.expect("kelp starts without SeaweedFS");
    let mut c = Raw::connect(running.kafka_addr).await;
    let name = TopicName(StrBytes::from_static_str("t"));

    let req = MetadataRequest::default()
        .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(name.clone()))]));
    let ResponseKind::Metadata(r) = c.call(ApiKey::Metadata, 12, RequestKind::Metadata(req)).await
    else {
        panic!()
    };
    let code = ResponseError::try_from_code(r.topics[0].error_code).expect("an error");
    assert!(code.is_retriable(), "Metadata: {code:?}");

    let req = ProduceRequest::default().with_acks(-1).with_timeout_ms(5000).with_topic_data(vec![
        TopicProduceData::default().with_name(name.clone()).with_partition_data(vec![
            PartitionProduceData::default().with_index(0).with_records(Some(batch())),
        ]),
    ]);
    let ResponseKind::Produce(r) = c.call(ApiKey::Produce, 9, RequestKind::Produce(req)).await
    else {
        panic!()
    };
    let code = ResponseError::try_from_code(r.responses[0].partition_responses[0].error_code)
        .expect("an error");
    assert!(code.is_retriable(), "Produce: {code:?}");

    let req = CreateTopicsRequest::default().with_timeout_ms(5000).with_topics(vec![
        CreatableTopic::default()
            .with_name(name.clone())
            .with_num_partitions(1)
            .with_replication_factor(1),
    ]);
    let ResponseKind::CreateTopics(r) =
        c.call(ApiKey::CreateTopics, 7, RequestKind::CreateTopics(req)).await
    else {
        panic!()
    };
    let code = ResponseError::try_from_code(r.topics[0].error_code).expect("an error");
    assert!(code.is_retriable(), "CreateTopics: {code:?}");
    assert_ne!(code, ResponseError::UnknownServerError);

    // Producer ids come from the filer: without it, a retriable coordinator code, no id.
    let req = InitProducerIdRequest::default()
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    let ResponseKind::InitProducerId(r) =
        c.call(ApiKey::InitProducerId, 4, RequestKind::InitProducerId(req)).await
    else {
        panic!()
    };
    assert_eq!(r.error_code, ResponseError::CoordinatorNotAvailable.code());
    assert_eq!((r.producer_id.0, r.producer_epoch), (-1, -1));

    assert!(running.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_continue_in_order_across_a_kelp_restart() {
    let seaweedfs = common::seaweedfs().await;
    let topic = common::unique_name("krestart");
    let kelp = Kelp::start(&seaweedfs, &[]).await;
    common::create_topic_raw(kelp.addr, &topic, 1).await;
    let p = producer(&kelp.bootstrap());
    assert_eq!(send(&p, &topic, 0..10).await, (0..10).collect::<Vec<i64>>());
    drop(p);
    assert!(kelp.stop().await);

    let kelp = Kelp::start(&seaweedfs, &[]).await;
    let mut c = Raw::connect(kelp.addr).await;
    let name = TopicName(StrBytes::from_string(topic.clone()));
    // A fetch at the end is no error: the consumer just waits for more.
    let fetch = |offset: i64| {
        use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
        FetchRequest::default()
            .with_max_wait_ms(0)
            .with_max_bytes(1 << 20)
            .with_session_epoch(-1)
            .with_topics(vec![FetchTopic::default().with_topic(name.clone()).with_partitions(
                vec![
                    FetchPartition::default()
                        .with_partition(0)
                        .with_fetch_offset(offset)
                        .with_partition_max_bytes(1 << 20),
                ],
            )])
    };
    let ResponseKind::Fetch(r) = c.call(ApiKey::Fetch, 12, RequestKind::Fetch(fetch(10))).await
    else {
        panic!()
    };
    assert_eq!(r.responses[0].partitions[0].error_code, 0, "fetch at the end after a restart");
    assert_eq!(r.responses[0].partitions[0].high_watermark, 10);

    let p = producer(&kelp.bootstrap());
    let after = send(&p, &topic, 10..15).await;
    let ResponseKind::Fetch(r) = c.call(ApiKey::Fetch, 12, RequestKind::Fetch(fetch(0))).await
    else {
        panic!()
    };
    let mut records = r.responses[0].partitions[0].records.clone().unwrap();
    let got: Vec<(i64, Bytes)> =
        kafka_protocol::records::RecordBatchDecoder::decode_all(&mut records)
            .unwrap()
            .into_iter()
            .flat_map(|s| s.records)
            .map(|r| (r.offset, r.value.unwrap()))
            .collect();
    // Values come back in order, each at the offset its producer was told.
    let values: Vec<Bytes> = got.iter().map(|(_, v)| v.clone()).collect();
    let want: Vec<Bytes> = (0..15).map(|i| Bytes::from(format!("value-{i}"))).collect();
    assert_eq!(values, want);
    let offsets: Vec<i64> = got.iter().map(|(o, _)| *o).collect();
    assert_eq!(&offsets[..10], &(0..10).collect::<Vec<i64>>()[..]);
    assert_eq!(&offsets[10..], &after[..], "fetched offsets are the acknowledged ones");
    // SeaweedFS 4.48 may skip one offset when it reloads a partition whose publishers all
    // left (docs/limitations.md); offsets stay increasing and nothing is lost or renumbered.
    assert!(after[0] == 10 || after[0] == 11, "{after:?}");
    assert!(after.windows(2).all(|w| w[1] == w[0] + 1), "{after:?}");
    assert!(kelp.stop().await);
}

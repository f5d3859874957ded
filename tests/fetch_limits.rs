//! Fetch waits for data up to max_wait_ms and respects partition_max_bytes and max_bytes
//! (always returning at least one record so a large record cannot stall a consumer), answers
//! at once with min_bytes 0, and with a larger min_bytes waits until that many bytes arrived,
//! also when they are produced through another kelp (the partition's writer wakes the kelp
//! that waits, src/tail.rs).

mod common;

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::RecordBatchDecoder;

use common::kelp::Kelp;
use common::raw::Raw;

fn batch(n: usize, size: usize) -> Bytes {
    common::raw::batch_of(
        (0..n).map(|i| (None, Bytes::from(vec![b'a' + (i % 26) as u8; size]), 1)).collect(),
    )
}

async fn produce(c: &mut Raw, topic: &str, records: Bytes) {
    let req =
        ProduceRequest::default().with_acks(-1).with_timeout_ms(10_000).with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partition_data(vec![
                    PartitionProduceData::default().with_index(0).with_records(Some(records)),
                ]),
        ]);
    let ResponseKind::Produce(r) = c.call(ApiKey::Produce, 9, RequestKind::Produce(req)).await
    else {
        panic!()
    };
    assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
}

fn fetch(topic: &str, offset: i64, max_wait: i32, partition_max: i32, max: i32) -> RequestKind {
    fetch_min(topic, offset, max_wait, 1, partition_max, max)
}

fn fetch_min(
    topic: &str,
    offset: i64,
    max_wait: i32,
    min_bytes: i32,
    partition_max: i32,
    max: i32,
) -> RequestKind {
    RequestKind::Fetch(
        FetchRequest::default()
            .with_max_wait_ms(max_wait)
            .with_min_bytes(min_bytes)
            .with_max_bytes(max)
            .with_session_epoch(-1)
            .with_topics(vec![
                FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                    .with_partitions(vec![
                        FetchPartition::default()
                            .with_partition(0)
                            .with_fetch_offset(offset)
                            .with_partition_max_bytes(partition_max),
                    ]),
            ]),
    )
}

fn offsets(r: &ResponseKind) -> Vec<i64> {
    records(r).into_iter().map(|(o, _)| o).collect()
}

/// (offset, value length) of every record of partition 0 in a Fetch answer.
fn records(r: &ResponseKind) -> Vec<(i64, usize)> {
    let ResponseKind::Fetch(r) = r else { panic!() };
    let p = &r.responses[0].partitions[0];
    assert_eq!(p.error_code, 0);
    let mut records = p.records.clone().unwrap_or_default();
    RecordBatchDecoder::decode_all(&mut records)
        .unwrap()
        .into_iter()
        .flat_map(|s| s.records)
        .map(|r| (r.offset, r.value.map_or(0, |v| v.len())))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_waits_for_new_records_and_respects_byte_limits() {
    let seaweedfs = common::seaweedfs().await;
    let kelp = Kelp::start(&seaweedfs, &[]).await;
    let topic = common::unique_name("limits");
    common::create_topic_raw(kelp.addr, &topic, 1).await;

    // A fetch waiting on an empty partition is answered with the record produced meanwhile.
    let waiter = tokio::spawn({
        let addr = kelp.addr;
        let topic = topic.clone();
        async move {
            let mut c = Raw::connect(addr).await;
            c.call(ApiKey::Fetch, 12, fetch(&topic, 0, 20_000, 1 << 20, 1 << 20)).await
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let mut c = Raw::connect(kelp.addr).await;
    produce(&mut c, &topic, batch(1, 10)).await;
    let r = waiter.await.unwrap();
    assert_eq!(offsets(&r), vec![0], "the waiting fetch got the new record");

    // 100 records of 1 KiB.
    produce(&mut c, &topic, batch(100, 1024)).await;
    let all = offsets(&c.call(ApiKey::Fetch, 12, fetch(&topic, 1, 0, 1 << 20, 1 << 20)).await);
    assert_eq!(all, (1..101).collect::<Vec<i64>>());
    let part = offsets(&c.call(ApiKey::Fetch, 12, fetch(&topic, 1, 0, 5_000, 1 << 20)).await);
    assert!(
        !part.is_empty() && part.len() < 10,
        "partition_max_bytes 5000 gave {} records",
        part.len()
    );
    assert_eq!(part[0], 1);
    let one = offsets(&c.call(ApiKey::Fetch, 12, fetch(&topic, 1, 0, 1 << 20, 1)).await);
    assert_eq!(one, vec![1], "max_bytes smaller than a record still returns the first record");
    assert!(kelp.stop().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_bytes_zero_answers_at_once_and_larger_waits_for_records_from_another_kelp() {
    let seaweedfs = common::seaweedfs().await;
    let peer = ["--peer-listen", "127.0.0.1:0"];
    let a = Kelp::start(&seaweedfs, &peer).await;
    let b = Kelp::start(&seaweedfs, &peer).await;
    let topic = common::unique_name("min-bytes");
    common::create_topic_raw(a.addr, &topic, 1).await;

    // min_bytes 0 on an empty partition: answered with no records although max_wait is 30 s
    // (the test gives it 5 s).
    let mut c = Raw::connect(b.addr).await;
    let answer = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        c.call(ApiKey::Fetch, 12, fetch_min(&topic, 0, 30_000, 0, 1 << 20, 1 << 20)),
    )
    .await
    .expect("min_bytes 0 does not wait");
    assert!(records(&answer).is_empty());
    let ResponseKind::Fetch(r) = &answer else { panic!() };
    assert_eq!(r.responses[0].partitions[0].high_watermark, 0);

    // Kelp A writes the partition (it produced first); a fetch waiting at kelp B for more
    // bytes than one record holds gets records only once enough arrived.
    let mut via_a = Raw::connect(a.addr).await;
    produce(&mut via_a, &topic, batch(1, 10)).await;
    let waiter = tokio::spawn({
        let addr = b.addr;
        let topic = topic.clone();
        async move {
            let mut c = Raw::connect(addr).await;
            c.call(ApiKey::Fetch, 12, fetch_min(&topic, 1, 20_000, 3_000, 1 << 20, 1 << 20)).await
        }
    });
    for _ in 0..4 {
        produce(&mut via_a, &topic, batch(1, 1_000)).await;
    }
    let got = records(&waiter.await.expect("the waiting fetch"));
    let bytes: usize = got.iter().map(|(_, n)| n).sum();
    assert!(got.len() >= 3, "min_bytes 3000 answered with {} records of 1000 bytes", got.len());
    assert!(bytes >= 3_000);
    assert_eq!(
        got.iter().map(|(o, _)| *o).collect::<Vec<_>>(),
        (1..=got.len() as i64).collect::<Vec<_>>()
    );
    assert!(a.stop().await);
    assert!(b.stop().await);
}

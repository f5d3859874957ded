//! librdkafka producer and consumer against kelp and a real SeaweedFS: records come back
//! exactly as produced, in order, with contiguous offsets from 0, for every codec.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use common::kelp::Kelp;

const CODECS: &[&str] = &["none", "gzip", "snappy", "lz4", "zstd"];
const PER_CODEC: usize = 2_000;
const PARTITIONS: i32 = 3;

#[derive(Debug, Clone, PartialEq)]
struct Sent {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
    timestamp: i64,
}

fn record(i: usize) -> Sent {
    let key = match i % 7 {
        0 => None,
        1 => Some(Vec::new()),
        _ => Some(format!("key-{i}").into_bytes()),
    };
    let value = match i % 11 {
        0 => None,
        1 => Some(Vec::new()),
        _ => Some(format!("value-{i}-{}", "x".repeat(i % 300)).into_bytes()),
    };
    let headers = match i % 4 {
        0 => vec![],
        1 => vec![("trace".to_string(), Some(format!("t{i}").into_bytes()))],
        2 => vec![
            ("dup".to_string(), Some(b"a".to_vec())),
            ("dup".to_string(), Some(b"b".to_vec())),
            ("null".to_string(), None),
        ],
        _ => vec![("empty".to_string(), Some(Vec::new()))],
    };
    Sent { key, value, headers, timestamp: 1_700_000_000_000 + i as i64 }
}

pub async fn create_topic(bootstrap: &str, name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", bootstrap).create().expect("admin client");
    let res = admin
        .create_topics(
            &[NewTopic::new(name, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await
        .expect("create_topics call");
    for r in res {
        r.expect("topic created");
    }
}

fn producer(bootstrap: &str, codec: &str, acks: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("compression.codec", codec)
        .set("acks", acks)
        .set("linger.ms", "5")
        .set("message.timeout.ms", "60000")
        .create()
        .expect("producer")
}

/// Produce `records` to `topic`, partition chosen round-robin by index; returns (partition, offset) per record.
async fn produce_all(
    p: &FutureProducer,
    topic: &str,
    records: &[Sent],
    first_index: usize,
) -> Vec<(i32, i64)> {
    let futures: Vec<_> = records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut headers = OwnedHeaders::new();
            for (k, v) in &r.headers {
                headers = headers.insert(Header { key: k, value: v.as_deref() });
            }
            let mut fr: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic)
                .partition(((first_index + i) % PARTITIONS as usize) as i32)
                .timestamp(r.timestamp)
                .headers(headers);
            if let Some(k) = &r.key {
                fr = fr.key(k.as_slice());
            }
            if let Some(v) = &r.value {
                fr = fr.payload(v.as_slice());
            }
            // send_result enqueues now; `send` would only enqueue when awaited, one by one.
            p.send_result(fr).map_err(|(e, _)| e).expect("queued")
        })
        .collect();
    let mut out = Vec::with_capacity(futures.len());
    for f in futures {
        let d = f.await.expect("delivery report").map_err(|(e, _)| e).expect("delivered");
        out.push((d.partition, d.offset));
    }
    out
}

/// Consume every partition of `topic` from offset 0 until `expected` records arrived.
fn consume_all(bootstrap: &str, topic: &str, expected: usize) -> HashMap<i32, Vec<(i64, Sent)>> {
    let config = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("fetch.wait.max.ms", "100")
        .clone();
    let consumer = common::clients::from_beginning(&config, topic, PARTITIONS);
    let mut got: HashMap<i32, Vec<(i64, Sent)>> = HashMap::new();
    let mut n = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while n < expected {
        assert!(std::time::Instant::now() < deadline, "only {n} of {expected} records consumed");
        let Some(m) = consumer.poll(Duration::from_millis(500)) else { continue };
        let m = m.expect("consume without error");
        let headers = m
            .headers()
            .map(|h| h.iter().map(|h| (h.key.to_string(), h.value.map(|v| v.to_vec()))).collect())
            .unwrap_or_default();
        let sent = Sent {
            key: m.key().map(|k| k.to_vec()),
            value: m.payload().map(|v| v.to_vec()),
            headers,
            timestamp: m.timestamp().to_millis().expect("timestamp"),
        };
        got.entry(m.partition()).or_default().push((m.offset(), sent));
        n += 1;
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn librdkafka_round_trip_with_every_codec_keeps_records_offsets_and_order() {
    let seaweedfs = common::seaweedfs().await;
    let kelp = Kelp::start(&seaweedfs, &[]).await;
    let topic = common::unique_name("roundtrip");
    create_topic(&kelp.bootstrap(), &topic, PARTITIONS).await;

    let mut all = Vec::new();
    let mut acked = Vec::new();
    for (c, codec) in CODECS.iter().enumerate() {
        let records: Vec<Sent> = (0..PER_CODEC).map(|i| record(c * PER_CODEC + i)).collect();
        let p = producer(&kelp.bootstrap(), codec, "all");
        acked.extend(produce_all(&p, &topic, &records, c * PER_CODEC).await);
        all.extend(records);
    }
    let total = all.len();
    assert_eq!(total, CODECS.len() * PER_CODEC);

    // Expected per partition: records in production order (round-robin assignment).
    let mut want: HashMap<i32, Vec<Sent>> = HashMap::new();
    for (i, r) in all.iter().enumerate() {
        want.entry((i % PARTITIONS as usize) as i32).or_default().push(r.clone());
    }
    // Acknowledged offsets are contiguous from 0 in each partition.
    let mut acked_by_partition: HashMap<i32, Vec<i64>> = HashMap::new();
    for (p, o) in &acked {
        acked_by_partition.entry(*p).or_default().push(*o);
    }
    for (p, offsets) in &acked_by_partition {
        let mut sorted = offsets.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            (0..offsets.len() as i64).collect::<Vec<_>>(),
            "acked offsets of partition {p}"
        );
    }

    let got = consume_all(&kelp.bootstrap(), &topic, total);
    for p in 0..PARTITIONS {
        let got = &got[&p];
        let want = &want[&p];
        assert_eq!(got.len(), want.len(), "partition {p} count");
        for (i, ((offset, g), w)) in got.iter().zip(want).enumerate() {
            assert_eq!(*offset, i as i64, "partition {p} offset");
            assert_eq!(g, w, "partition {p} record at offset {offset}");
        }
    }
    assert!(kelp.stop().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_zero_and_one_records_are_all_stored() {
    let seaweedfs = common::seaweedfs().await;
    let kelp = Kelp::start(&seaweedfs, &[]).await;
    let topic = common::unique_name("acks");
    create_topic(&kelp.bootstrap(), &topic, PARTITIONS).await;
    let n = 300;
    let records: Vec<Sent> = (0..n).map(record).collect();
    let p0 = producer(&kelp.bootstrap(), "none", "0");
    produce_all(&p0, &topic, &records[..n / 2], 0).await;
    let p1 = producer(&kelp.bootstrap(), "lz4", "1");
    produce_all(&p1, &topic, &records[n / 2..], n / 2).await;
    let got = consume_all(&kelp.bootstrap(), &topic, n);
    let count: usize = got.values().map(|v| v.len()).sum();
    assert_eq!(count, n);
    for (p, recs) in &got {
        let offsets: Vec<i64> = recs.iter().map(|(o, _)| *o).collect();
        assert_eq!(offsets, (0..recs.len() as i64).collect::<Vec<_>>(), "partition {p}");
    }
    assert!(kelp.stop().await);
}

//! acks=all survives a SeaweedFS broker crash: records acknowledged with acks=all are read
//! back, each exactly once and at its acknowledged offset, after the broker was SIGKILLed and
//! restarted; and no offset acknowledged before the crash (acks=all or acks=1) is handed out
//! again afterwards (docs/writers.md, "What an acknowledgement means").

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};

use common::kelp::Kelp;

fn producer(bootstrap: &str, acks: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", acks)
        .set("linger.ms", "5")
        .set("message.timeout.ms", "120000")
        .set("retry.backoff.ms", "200")
        .create()
        .expect("producer")
}

/// Send `prefix-i` for every `i` in `range` to partition 0; the acknowledged offset of each.
async fn send(
    p: &FutureProducer,
    topic: &str,
    prefix: &str,
    range: std::ops::Range<usize>,
) -> BTreeMap<String, i64> {
    let futures: Vec<_> = range
        .map(|i| {
            let v = format!("{prefix}-{i}");
            let f = p
                .send_result(FutureRecord::<(), _>::to(topic).partition(0).payload(&v))
                .map_err(|(e, _)| e)
                .expect("queued");
            (v, f)
        })
        .collect();
    let mut offsets = BTreeMap::new();
    for (v, f) in futures {
        let d = f.await.expect("report").map_err(|(e, _)| e).expect("delivered");
        offsets.insert(v, d.offset);
    }
    offsets
}

/// Partition 0 of `topic` from the beginning up to `end`: offset → value, failing on an
/// offset read twice.
fn read_through(bootstrap: &str, topic: &str, end: i64) -> BTreeMap<i64, String> {
    let config = ClientConfig::new().set("bootstrap.servers", bootstrap).clone();
    let consumer = common::clients::from_beginning(&config, topic, 1);
    let mut seen = BTreeMap::new();
    let mut next = 0;
    let deadline = Instant::now() + common::patience();
    while next < end && Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(300)) {
            let m = m.expect("consume without error");
            let value = String::from_utf8(m.payload().expect("a value").to_vec()).expect("utf-8");
            assert!(seen.insert(m.offset(), value).is_none(), "offset {} read twice", m.offset());
            next = m.offset() + 1;
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_all_records_survive_a_broker_crash_and_no_offset_is_reused() {
    let mut seaweedfs = common::seaweedfs().await;
    let kelp =
        Kelp::start(&seaweedfs, &["--upstream-timeout-ms", "3000", "--acks-all-flushed", "true"])
            .await;
    let topic = common::unique_name("durable");
    common::create_topic_raw(kelp.addr, &topic, 1).await;
    let all = producer(&kelp.bootstrap(), "all");
    let one = producer(&kelp.bootstrap(), "1");

    // acks=all: answered once flushed and checkpointed, so the crash cannot take them.
    let before = send(&all, &topic, "before", 0..200).await;
    // acks=1: answered from the broker's memory; the crash right after usually loses them.
    let fast = send(&one, &topic, "fast", 0..100).await;
    seaweedfs.kill_broker().await.expect("broker killed");

    // Written while the broker is down: the client retries until it is back.
    let during = tokio::spawn({
        let all = all.clone();
        let topic = topic.clone();
        async move { send(&all, &topic, "after", 0..200).await }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    seaweedfs.start_broker(Duration::from_secs(60)).await.expect("broker restarts");
    let after = tokio::time::timeout(Duration::from_secs(120), during)
        .await
        .expect("delivered in time")
        .unwrap();

    // No offset was acknowledged twice, whatever the crash lost.
    let mut offsets = HashSet::new();
    for (v, o) in before.iter().chain(&fast).chain(&after) {
        assert!(offsets.insert(*o), "offset {o} of {v} was acknowledged before");
    }

    // Every acks=all record is read back exactly once, at its acknowledged offset.
    let end = *after.values().max().expect("records") + 1;
    let seen = read_through(&kelp.bootstrap(), &topic, end);
    for (v, o) in before.iter().chain(&after) {
        assert_eq!(seen.get(o), Some(v), "acks=all record {v} at offset {o}");
    }
    let values: Vec<&String> = seen.values().collect();
    let unique: HashSet<&String> = values.iter().copied().collect();
    assert_eq!(values.len(), unique.len(), "a record was stored twice");
    // An acks=1 record the broker kept is at its own offset; one it lost left a gap.
    for (v, o) in &fast {
        if let Some(found) = seen.get(o) {
            assert_eq!(found, v, "offset {o} holds another record than acks=1 {v}");
        }
    }
    assert!(kelp.stop().await);
}

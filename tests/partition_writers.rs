//! Several kelps writing the same partitions: one writer per partition (the holder of the
//! partition's lease in the filer), the others forward to it. Real SeaweedFS, real librdkafka
//! producers (acks=all, idempotent), one per kelp, all producing into the same two partitions
//! at once; then one consumer reads every partition from offset 0 and checks that every
//! acknowledged record is there exactly once, at exactly the offset its delivery report
//! gave, and that each producer's records are in its order.
//!
//! With one publish stream per kelp the broker stores records of concurrent streams in an
//! order other than the offsets it assigned (src/seaweed/SEAWEEDFS.md), and these checks
//! fail; with one writer per partition they hold, also when the writer is killed mid-produce.
//! Producer ids handed out by different kelps, and by a kelp started later, never repeat.
//! A last test splits one request across two writers (Produce v9 and v2) and hands a
//! partition over on a clean stop.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};

use common::kelp::{Kelp, KelpProcess};

const PARTITIONS: i32 = 2;
const PER_PRODUCER: usize = 3000;
const LEASE_MS: &str = "3000";
const KELP_BIN: &str = env!("CARGO_BIN_EXE_kelp");

/// Where a producer's delivery report put one record: value → (partition, offset).
type Acked = Arc<Mutex<HashMap<String, (i32, i64)>>>;

fn producer(bootstrap: &str, message_timeout_ms: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("message.timeout.ms", message_timeout_ms)
        .create()
        .expect("producer")
}

/// Records a producer hands to librdkafka at a time; then it pauses for the pace.
const CHUNK: usize = 10;

/// Producer `id` sends `n` records alternating between the partitions, values
/// `"p<id>-<seq>"`, in order, `CHUNK` records every `pace`, and notes each acknowledged one in
/// `acked`. Returns how many failed.
async fn produce(
    p: FutureProducer,
    topic: String,
    id: usize,
    n: usize,
    pace: Duration,
    acked: Acked,
) -> usize {
    let mut deliveries = Vec::with_capacity(n);
    for seq in 0..n {
        let value = format!("p{id}-{seq:06}");
        let partition = (seq % PARTITIONS as usize) as i32;
        let mut record = FutureRecord::<(), _>::to(&topic).partition(partition).payload(&value);
        let delivery = loop {
            match p.send_result(record) {
                Ok(d) => break d,
                Err((_, r)) => {
                    // The producer's queue is full: wait for it to drain.
                    record = r;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        };
        let acked = Arc::clone(&acked);
        deliveries.push(tokio::spawn(async move {
            match delivery.await {
                Ok(Ok(d)) => {
                    assert_eq!(d.partition, partition);
                    acked.lock().insert(value, (d.partition, d.offset));
                    true
                }
                _ => false,
            }
        }));
        if seq % CHUNK == CHUNK - 1 {
            tokio::time::sleep(pace).await;
        }
    }
    let mut failed = 0;
    for d in deliveries {
        if !d.await.expect("delivery task") {
            failed += 1;
        }
    }
    failed
}

/// Every record of every partition from offset 0 up to `ends` (partition → end offset):
/// (partition, offset) → value.
fn read_all(
    bootstrap: &str,
    topic: &str,
    ends: &BTreeMap<i32, i64>,
) -> BTreeMap<(i32, i64), String> {
    let config = ClientConfig::new().set("bootstrap.servers", bootstrap).clone();
    let consumer = common::clients::from_beginning(&config, topic, PARTITIONS);
    let mut seen = BTreeMap::new();
    let mut next: BTreeMap<i32, i64> = (0..PARTITIONS).map(|p| (p, 0)).collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    while next.iter().any(|(p, n)| *n < ends[p]) && Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(300)) {
            let m = m.expect("consume without error");
            let value = String::from_utf8(m.payload().expect("a value").to_vec()).expect("utf-8");
            assert!(
                seen.insert((m.partition(), m.offset()), value).is_none(),
                "offset {} of partition {} read twice",
                m.offset(),
                m.partition()
            );
            next.insert(m.partition(), m.offset() + 1);
        }
    }
    seen
}

/// The end offset of each partition as ListOffsets (latest) reports it through `bootstrap`.
fn high_water_marks(bootstrap: &str, topic: &str) -> BTreeMap<i32, i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "unused-assign-only")
        .create()
        .expect("consumer");
    (0..PARTITIONS)
        .map(|p| {
            let (_, high) =
                consumer.fetch_watermarks(topic, p, Duration::from_secs(30)).expect("watermarks");
            (p, high)
        })
        .collect()
}

/// The checks of this file: every acknowledged record exactly once at its acknowledged
/// offset, each producer's records in its order within a partition, no offset holding a
/// record nobody produced. Returns a description of every violation (empty: all hold).
fn violations(
    acked: &HashMap<String, (i32, i64)>,
    log: &BTreeMap<(i32, i64), String>,
) -> Vec<String> {
    let mut out = Vec::new();
    let mut where_stored: HashMap<&str, Vec<(i32, i64)>> = HashMap::new();
    for (at, value) in log {
        where_stored.entry(value.as_str()).or_default().push(*at);
    }
    let mut wrong = 0;
    for (value, at) in acked {
        match where_stored.get(value.as_str()) {
            Some(places) if places == &vec![*at] => {}
            Some(places) => {
                wrong += 1;
                if wrong <= 10 {
                    out.push(format!("{value}: acknowledged at {at:?}, stored at {places:?}"));
                }
            }
            None => {
                wrong += 1;
                if wrong <= 10 {
                    out.push(format!("{value}: acknowledged at {at:?}, not stored"));
                }
            }
        }
    }
    if wrong > 0 {
        out.push(format!("{wrong} of {} acknowledged records not where acknowledged", acked.len()));
    }
    // Each producer's records, in offset order within each partition, in its own order.
    let mut last: HashMap<(&str, i32), (&str, i64)> = HashMap::new();
    for ((p, offset), value) in log {
        let Some((producer, seq)) = value.split_once('-') else {
            out.push(format!("{value:?} at {p}/{offset} was not produced by this test"));
            continue;
        };
        if let Some((before, at)) = last.insert((producer, *p), (seq, *offset))
            && before >= seq
        {
            out.push(format!("{producer}: {before} at {p}/{at} before {seq} at {p}/{offset}"));
        }
    }
    out
}

async fn create_topic(kelp: &str, topic: &str) {
    common::create_topic_raw(kelp.parse().expect("socket address"), topic, PARTITIONS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_kelps_writing_the_same_partitions_keep_every_acknowledged_offset() {
    let seaweedfs = common::seaweedfs().await;
    let args = ["--peer-listen", "127.0.0.1:0", "--partition-lease-ms", LEASE_MS];
    let kelps = [
        Kelp::start(&seaweedfs, &args).await,
        Kelp::start(&seaweedfs, &args).await,
        Kelp::start(&seaweedfs, &args).await,
    ];
    let topic = common::unique_name("writers");
    create_topic(&kelps[0].bootstrap(), &topic).await;
    let acked: Acked = Arc::default();
    let started = Instant::now();
    let runs = kelps.iter().enumerate().map(|(id, k)| {
        let p = producer(&k.bootstrap(), "120000");
        let pace = Duration::ZERO;
        tokio::spawn(produce(p, topic.clone(), id, PER_PRODUCER, pace, Arc::clone(&acked)))
    });
    let failed: usize = futures::future::join_all(runs).await.into_iter().map(|r| r.unwrap()).sum();
    let took = started.elapsed();
    assert_eq!(failed, 0, "every record is acknowledged");
    let acked = acked.lock().clone();
    eprintln!("{} records acknowledged in {took:?}", acked.len());

    let bootstrap = kelps[0].bootstrap();
    let ends = tokio::task::block_in_place(|| high_water_marks(&bootstrap, &topic));
    let log = tokio::task::block_in_place(|| read_all(&bootstrap, &topic, &ends));
    let mut bad = violations(&acked, &log);
    if ends.values().sum::<i64>() != (3 * PER_PRODUCER) as i64 {
        bad.push(format!("{ends:?}: not {} records in all", 3 * PER_PRODUCER));
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    for k in kelps {
        assert!(k.stop().await, "kelp drains in time");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_writer_mid_produce_loses_and_repeats_no_acknowledged_record() {
    let seaweedfs = common::seaweedfs().await;
    let args = ["--partition-lease-ms", LEASE_MS];
    let mut kelps = Vec::new();
    for _ in 0..3 {
        kelps.push(KelpProcess::start(KELP_BIN, &seaweedfs, true, &args).await);
    }
    let topic = common::unique_name("writers-kill");
    create_topic(&kelps[0].bootstrap(), &topic).await;
    let acked: Acked = Arc::default();
    let started = Instant::now();
    // Producers whose kelp dies give up on their records after 20 s; the others keep going.
    let runs: Vec<_> = kelps
        .iter()
        .enumerate()
        .map(|(id, k)| {
            let p = producer(&k.bootstrap(), "20000");
            // About 3 s of producing, so the kill lands mid-produce.
            let pace = Duration::from_millis(10);
            tokio::spawn(produce(p, topic.clone(), id, PER_PRODUCER, pace, Arc::clone(&acked)))
        })
        .collect();
    // Once a third of the records are acknowledged, kill the writer of partition 0.
    common::eventually(|| async {
        let n = acked.lock().len();
        if n >= PER_PRODUCER { Ok(()) } else { Err(n) }
    })
    .await;
    let sw = writers_view(&seaweedfs).await;
    let writer = writer_of(&sw, &topic, 0).await.expect("partition 0 has a writer");
    let victim = kelps
        .iter()
        .position(|k| k.peer.map(|a| a.to_string()) == Some(writer.clone()))
        .expect("the writer is one of the kelps");
    let mut ids = Vec::new();
    for k in &kelps {
        ids.extend(producer_ids(k.addr, 3).await);
    }
    let before_kill = acked.lock().len();
    kelps[victim].kill();
    eprintln!("killed kelp {victim} (writer of partition 0) after {before_kill} acknowledgements");
    let mut failed = 0;
    for r in futures::future::join_all(runs).await {
        failed += r.unwrap();
    }
    let acked = acked.lock().clone();
    eprintln!(
        "{} records acknowledged ({} after the kill), {failed} not, in {:?}",
        acked.len(),
        acked.len() - before_kill,
        started.elapsed()
    );
    // Two kelps survive; each producer on them finished every record.
    assert!(acked.len() >= 2 * PER_PRODUCER, "the producers of the surviving kelps got through");
    let survivor = &kelps[(victim + 1) % 3];
    let bootstrap = survivor.bootstrap();
    let ends = tokio::task::block_in_place(|| high_water_marks(&bootstrap, &topic));
    let log = tokio::task::block_in_place(|| read_all(&bootstrap, &topic, &ends));
    let bad = violations(&acked, &log);
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    let stored = log.len();
    eprintln!("{stored} records stored, {} of them never acknowledged", stored - acked.len());

    // Producer ids are unique across kelps, and a kelp started afterwards (as after a crash)
    // never hands out one of a block claimed before.
    let late = KelpProcess::start(KELP_BIN, &seaweedfs, true, &args).await;
    ids.extend(producer_ids(late.addr, 3).await);
    let distinct: std::collections::BTreeSet<i64> = ids.iter().copied().collect();
    assert_eq!(distinct.len(), ids.len(), "producer ids handed out twice: {ids:?}");
    assert!(ids.iter().all(|id| *id > 0), "{ids:?}");
}

/// `n` producer ids from InitProducerId at `kelp`. Each request names the previous id and an
/// epoch, which a request without a transactional id ignores: a fresh id, epoch 0 (as Kafka).
async fn producer_ids(kelp: std::net::SocketAddr, n: usize) -> Vec<i64> {
    use kafka_protocol::messages::{
        ApiKey, InitProducerIdRequest, ProducerId, RequestKind, ResponseKind,
    };
    let mut c = common::raw::Raw::connect(kelp).await;
    let mut ids: Vec<i64> = Vec::with_capacity(n);
    for _ in 0..n {
        let req = InitProducerIdRequest::default()
            .with_transaction_timeout_ms(60_000)
            .with_producer_id(ProducerId(ids.last().copied().unwrap_or(-1)))
            .with_producer_epoch(if ids.is_empty() { -1 } else { 3 });
        let ResponseKind::InitProducerId(r) =
            c.call(ApiKey::InitProducerId, 4, RequestKind::InitProducerId(req)).await
        else {
            panic!("an InitProducerId answer")
        };
        assert_eq!((r.error_code, r.producer_epoch), (0, 0));
        ids.push(r.producer_id.0);
    }
    ids
}

/// kelp's own filer client, to see partition leases the way kelp sees them.
async fn writers_view(seaweedfs: &kelp::embedded::SeaweedFs) -> kelp::seaweed::Seaweed {
    let a = seaweedfs.addrs();
    let opts = kelp::seaweed::SeaweedOptions {
        master: a.master.clone(),
        filer: Some(a.filer.clone()),
        namespace: "kafka".into(),
        call_timeout: Duration::from_secs(5),
    };
    kelp::seaweed::Seaweed::connect(opts).await.expect("options are valid")
}

/// The peer address of the kelp writing `topic`'s `partition` now, if any.
async fn writer_of(sw: &kelp::seaweed::Seaweed, topic: &str, partition: i32) -> Option<String> {
    let lock = kelp::seaweed::layout::partition_writer_lock(
        kelp::seaweed::layout::DEFAULT_FILER_ROOT,
        topic,
        partition,
    );
    let owner = sw.filer_lock_owner(&lock).await.expect("the filer answers");
    owner.map(|o| o.split(' ').next().expect("peer address").to_string())
}

/// Produce `values` (one record each) with Produce v9, one partition per value, in the order
/// given; returns (partition, error code, base offset) in the order answered.
async fn produce_raw(
    kelp: std::net::SocketAddr,
    topic: &str,
    values: &[(i32, &str)],
) -> Vec<(i32, i16, i64)> {
    let parts = values
        .iter()
        .map(|(p, v)| {
            (*p, common::raw::batch_of(vec![(None, bytes::Bytes::from(v.to_string()), 1)]))
        })
        .collect();
    let answers = common::raw::produce(kelp, topic, parts).await;
    answers.iter().map(|p| (p.index, p.error_code, p.base_offset)).collect()
}

/// The same with Produce v2 (a v1 message set per partition), encoded by kelp's own codec.
async fn produce_legacy(
    kelp: std::net::SocketAddr,
    topic: &str,
    values: &[(i32, &str)],
) -> Vec<(i32, i16, i64)> {
    use bytes::{Buf, BufMut, BytesMut};
    use kafka_protocol::messages::{ApiKey, RequestHeader};
    use kafka_protocol::protocol::{Encodable, StrBytes};
    use kelp::protocol::legacy_produce as legacy;
    let partitions = values
        .iter()
        .map(|(p, v)| {
            let mut set = Vec::new();
            kelp::records::legacy::encode_message(&mut set, 1, 1, None, Some(v.as_bytes()));
            (*p, Some(bytes::Bytes::from(set)))
        })
        .collect();
    let req = legacy::ProduceRequest {
        acks: -1,
        timeout_ms: 10_000,
        topics: vec![legacy::TopicData { name: topic.to_string(), partitions }],
    };
    let mut body = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(ApiKey::Produce as i16)
        .with_request_api_version(2)
        .with_correlation_id(7)
        .with_client_id(Some(StrBytes::from_static_str("legacy")))
        .encode(&mut body, 1)
        .unwrap();
    req.encode(&mut body);
    let mut frame = BytesMut::new();
    frame.put_i32(body.len() as i32);
    frame.extend_from_slice(&body);
    let mut c = common::raw::Raw::connect(kelp).await;
    c.send_bytes(&frame).await;
    let mut r = c.read_frame().await.expect("answered");
    assert_eq!(r.get_i32(), 7, "correlation id");
    let r = legacy::ProduceResponse::decode(&mut r, 2).expect("a Produce v2 answer");
    r.topics[0].partitions.iter().map(|p| (p.index, p.error_code, p.base_offset)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_naming_partitions_of_two_writers_is_split_and_answered_in_order() {
    let seaweedfs = common::seaweedfs().await;
    let args = ["--peer-listen", "127.0.0.1:0", "--partition-lease-ms", LEASE_MS];
    let (a, b) = (Kelp::start(&seaweedfs, &args).await, Kelp::start(&seaweedfs, &args).await);
    let topic = common::unique_name("writers-split");
    create_topic(&a.bootstrap(), &topic).await;
    // The first kelp to write a partition becomes its writer: a writes 0, b writes 1.
    assert_eq!(produce_raw(a.addr, &topic, &[(0, "a0")]).await, vec![(0, 0, 0)]);
    assert_eq!(produce_raw(b.addr, &topic, &[(1, "b1")]).await, vec![(1, 0, 0)]);
    let sw = writers_view(&seaweedfs).await;
    let peer = |k: &Kelp| Some(k.peer.unwrap().to_string());
    assert_eq!(writer_of(&sw, &topic, 0).await, peer(&a));
    assert_eq!(writer_of(&sw, &topic, 1).await, peer(&b));

    // Through a, partition 1 first: it is forwarded to b, partition 0 written at a, and the
    // answers come back in the request's order.
    let got = produce_raw(a.addr, &topic, &[(1, "a1"), (0, "a0-2")]).await;
    assert_eq!(got, vec![(1, 0, 1), (0, 0, 1)]);
    // Produce v2 through b: partition 0 forwarded to a in kelp's own encoding.
    let got = produce_legacy(b.addr, &topic, &[(0, "b0"), (1, "b1-2")]).await;
    assert_eq!(got, vec![(0, 0, 2), (1, 0, 2)]);
    // Nothing moved: each partition still has its one writer.
    assert_eq!(writer_of(&sw, &topic, 0).await, peer(&a));
    assert_eq!(writer_of(&sw, &topic, 1).await, peer(&b));

    let ends: BTreeMap<i32, i64> = [(0, 3), (1, 3)].into();
    let bootstrap = b.bootstrap();
    let log = tokio::task::block_in_place(|| read_all(&bootstrap, &topic, &ends));
    let values: Vec<(i32, i64, &str)> =
        log.iter().map(|((p, o), v)| (*p, *o, v.as_str())).collect();
    assert_eq!(
        values,
        vec![
            (0, 0, "a0"),
            (0, 1, "a0-2"),
            (0, 2, "b0"),
            (1, 0, "b1"),
            (1, 1, "a1"),
            (1, 2, "b1-2")
        ]
    );

    // a stops (SIGTERM's path): it releases its lease, so b writes partition 0 at once,
    // without waiting for the lease to expire, and carries on at the next offset.
    assert!(a.stop().await, "a drains in time");
    let stopped = Instant::now();
    let got = common::eventually(|| async {
        match produce_raw(b.addr, &topic, &[(0, "after-a")]).await[..] {
            [(0, 0, offset)] => Ok(offset),
            ref other => Err(format!("{other:?}")),
        }
    })
    .await;
    let took = stopped.elapsed();
    assert_eq!(got, 3);
    assert_eq!(writer_of(&sw, &topic, 0).await, peer(&b));
    assert!(took < Duration::from_millis(3000), "b wrote partition 0 after {took:?}");
    eprintln!("after a stopped, b wrote its partition after {took:?}");
    assert!(b.stop().await);
}

/// One idempotent batch of `n` one-byte records: producer `pid`, epoch 0, first sequence
/// `seq`.
fn idempotent_batch(pid: i64, seq: i32, n: i32) -> bytes::Bytes {
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };
    let records: Vec<Record> = (0..n)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: pid,
            producer_epoch: 0,
            timestamp_type: TimestampType::Creation,
            offset: i64::from(i),
            sequence: seq + i,
            timestamp: 1,
            key: None,
            value: Some(bytes::Bytes::from(format!("{pid}-{}", seq + i))),
            headers: Default::default(),
        })
        .collect();
    let mut buf = bytes::BytesMut::new();
    let options = RecordEncodeOptions { version: 2, compression: Compression::None };
    RecordBatchEncoder::encode(&mut buf, records.iter(), &options).expect("encodes");
    buf.freeze()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_racing_its_original_through_another_kelp_is_stored_once() {
    let seaweedfs = common::seaweedfs().await;
    let args = ["--peer-listen", "127.0.0.1:0", "--partition-lease-ms", LEASE_MS];
    let (a, b) = (Kelp::start(&seaweedfs, &args).await, Kelp::start(&seaweedfs, &args).await);
    let topic = common::unique_name("writers-race");
    create_topic(&a.bootstrap(), &topic).await;
    let pid = producer_ids(a.addr, 1).await[0];
    // Each batch goes to both kelps at once (one forwards it to the other, the partition's
    // writer): one of the two is stored, the other answered as its duplicate, with the same
    // offset.
    const BATCHES: i32 = 20;
    const PER_BATCH: i32 = 5;
    for i in 0..BATCHES {
        let batch = idempotent_batch(pid, i * PER_BATCH, PER_BATCH);
        let (x, y) = tokio::join!(
            common::raw::produce(a.addr, &topic, vec![(0, batch.clone())]),
            common::raw::produce(b.addr, &topic, vec![(0, batch)]),
        );
        let got = [(x[0].error_code, x[0].base_offset), (y[0].error_code, y[0].base_offset)];
        let want = (0, i64::from(i * PER_BATCH));
        assert_eq!(got, [want, want], "batch {i}");
    }
    let bootstrap = a.bootstrap();
    let ends = tokio::task::block_in_place(|| high_water_marks(&bootstrap, &topic));
    assert_eq!(ends[&0], i64::from(BATCHES * PER_BATCH), "every batch stored once");
    let log = tokio::task::block_in_place(|| read_all(&bootstrap, &topic, &ends));
    let values: Vec<&String> = log.values().collect();
    let want: Vec<String> = (0..BATCHES * PER_BATCH).map(|s| format!("{pid}-{s}")).collect();
    assert_eq!(values, want.iter().collect::<Vec<_>>());
    assert!(b.stop().await);
    assert!(a.stop().await);
}

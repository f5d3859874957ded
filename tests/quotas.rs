//! Client quotas and SASL against a real SeaweedFS: librdkafka held to its byte rate while
//! another client id runs free, throttle_time_ms on the wire (and the delayed answer for
//! clients older than KIP-219), a client that ignores throttling held anyway, quotas altered on
//! one kelp applied by another, the quotas file re-read, and SASL logins (PLAIN, SCRAM) with
//! librdkafka and at every advertised version on the wire.

mod common;

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::alter_client_quotas_request::{EntityData, EntryData, OpData};
use kafka_protocol::messages::describe_client_quotas_request::ComponentData;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};
use kelp::sasl::scram::Hash;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::kelp::Kelp;
use common::raw::{Raw, batch_of};

fn s(x: &str) -> StrBytes {
    StrBytes::from_string(x.to_string())
}

/// A temporary file holding `text` (kept alive by the returned handle).
fn file_with(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().expect("temp file");
    f.write_all(text.as_bytes()).expect("write temp file");
    f.flush().expect("flush");
    f
}

fn path_of(f: &tempfile::NamedTempFile) -> String {
    f.path().to_str().expect("utf-8 temp path").to_string()
}

/// A Produce request for partition 0 of `topic` with one record of `value_len` bytes.
fn produce_req(topic: &str, value_len: usize, acks: i16) -> ProduceRequest {
    let batch = batch_of(vec![(None, Bytes::from(vec![b'x'; value_len]), 1_700_000_000_000)]);
    ProduceRequest::default().with_acks(acks).with_timeout_ms(30_000).with_topic_data(vec![
        TopicProduceData::default().with_name(TopicName(s(topic))).with_partition_data(vec![
            PartitionProduceData::default().with_index(0).with_records(Some(batch)),
        ]),
    ])
}

fn fetch_req(topic: &str) -> FetchRequest {
    FetchRequest::default()
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(10 * 1024 * 1024)
        .with_topics(vec![FetchTopic::default().with_topic(TopicName(s(topic))).with_partitions(
            vec![
                FetchPartition::default()
                    .with_partition(0)
                    .with_fetch_offset(0)
                    .with_partition_max_bytes(10 * 1024 * 1024),
            ],
        )])
}

async fn produce(c: &mut Raw, version: i16, req: ProduceRequest) -> ProduceResponse {
    match c.call(ApiKey::Produce, version, RequestKind::Produce(req)).await {
        ResponseKind::Produce(r) => {
            for t in &r.responses {
                for p in &t.partition_responses {
                    assert_eq!(p.error_code, 0, "produce v{version}: {:?}", p.error_message);
                }
            }
            r
        }
        other => panic!("unexpected {other:?}"),
    }
}

async fn connect_as(kelp: &Kelp, client_id: &str) -> Raw {
    let mut c = Raw::connect(kelp.addr).await;
    c.client_id = client_id.to_string();
    c
}

// === librdkafka held to its rate ===

/// librdkafka producer with `client.id`, batches of at most 64 KiB.
fn rd_producer(bootstrap: &str, client_id: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("client.id", client_id)
        .set("acks", "1")
        .set("linger.ms", "5")
        .set("batch.size", "65536")
        .set("message.timeout.ms", "60000")
        .create()
        .expect("producer")
}

/// Keep `p` busy with `value_len`-byte records until `until`, with at most `window` records
/// awaiting delivery; returns the time (since `t0`) and size of every delivered record.
async fn produce_flat_out(
    p: FutureProducer,
    topic: String,
    value_len: usize,
    window: usize,
    t0: Instant,
    until: Instant,
) -> Vec<(Duration, usize)> {
    let permits = Arc::new(tokio::sync::Semaphore::new(window));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let value = vec![b'v'; value_len];
    while Instant::now() < until {
        let permit = permits.clone().acquire_owned().await.expect("semaphore open");
        let record: FutureRecord<'_, (), [u8]> =
            FutureRecord::to(&topic).partition(0).payload(&value);
        let delivery = match p.send_result(record) {
            Ok(d) => d,
            Err((e, _)) => panic!("enqueue: {e}"),
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            let r = delivery.await.expect("delivery report");
            r.map_err(|(e, _)| e).expect("delivered");
            let _ = tx.send((t0.elapsed(), value_len));
            drop(permit);
        });
    }
    drop(tx);
    let mut got = Vec::new();
    while let Some(d) = rx.recv().await {
        got.push(d);
    }
    got.sort();
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn librdkafka_producer_is_held_to_its_byte_rate_and_other_clients_are_not() {
    const RATE: f64 = 256.0 * 1024.0;
    let seaweedfs = common::seaweedfs().await;
    let quotas =
        file_with(&format!("quotas:\n  - client-id: limited\n    producer_byte_rate: {RATE}\n"));
    let kelp = Kelp::start(&seaweedfs, &["--quotas-file", &path_of(&quotas)]).await;
    let topic = common::unique_name("rate");
    common::create_topic_raw(kelp.addr, &topic, 1).await;

    let t0 = Instant::now();
    let limited = tokio::spawn(produce_flat_out(
        rd_producer(&kelp.bootstrap(), "limited"),
        topic.clone(),
        1000,
        256,
        t0,
        t0 + Duration::from_secs(13),
    ));
    // Four seconds in, an unlimited client sends 8 MB through the same kelp.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let free_start = Instant::now();
    let p = rd_producer(&kelp.bootstrap(), "free");
    let value = vec![b'f'; 1000];
    let deliveries: Vec<_> = (0..8000)
        .map(|_| {
            p.send_result(FutureRecord::<(), [u8]>::to(&topic).partition(0).payload(&value))
                .map_err(|(e, _)| e)
                .expect("queued")
        })
        .collect();
    for d in deliveries {
        d.await.expect("report").map_err(|(e, _)| e).expect("delivered");
    }
    let free_rate = 8_000_000.0 / free_start.elapsed().as_secs_f64();

    let got = limited.await.expect("limited producer task");
    // Steady state: skip the first bucket (one second of rate) and the start-up.
    let window: Vec<_> = got
        .iter()
        .filter(|(t, _)| *t >= Duration::from_millis(2500) && *t <= Duration::from_secs(13))
        .collect();
    let (first, last) =
        (window.first().expect("deliveries").0, window.last().expect("deliveries").0);
    let bytes: usize = window.iter().skip(1).map(|(_, n)| n).sum();
    let sustained = bytes as f64 / (last - first).as_secs_f64();
    eprintln!(
        "limited: {:.0} B/s sustained over {:.1} s (limit {RATE} B/s, {:.1}%); unlimited: {:.0} B/s",
        sustained,
        (last - first).as_secs_f64(),
        100.0 * sustained / RATE,
        free_rate
    );
    assert!((last - first) >= Duration::from_secs(10), "measured over {:?}", last - first);
    assert!(
        (sustained - RATE).abs() <= 0.15 * RATE,
        "sustained {sustained:.0} B/s against a limit of {RATE}"
    );
    assert!(free_rate >= 4.0 * RATE, "the unlimited client ran at {free_rate:.0} B/s");
    kelp.stop().await;
}

// === throttle_time_ms on the wire ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttle_time_is_in_responses_and_old_versions_wait_for_theirs() {
    let seaweedfs = common::seaweedfs().await;
    let quotas = file_with(
        "quotas:\n  - client-id: producer\n    producer_byte_rate: 65536\n  - client-id: consumer\n    consumer_byte_rate: 16384\n  - client-id: chatty\n    request_rate: 5\n",
    );
    let kelp = Kelp::start(&seaweedfs, &["--quotas-file", &path_of(&quotas)]).await;
    let topic = common::unique_name("throttle");
    common::create_topic_raw(kelp.addr, &topic, 1).await;

    // Produce v9: a first 48 KiB request fits the bucket; the second is answered at once with
    // the time the bucket needs.
    let mut c = connect_as(&kelp, "producer").await;
    // A small first record opens the partition's publish stream, so the timing below is kelp's.
    produce(&mut c, 9, produce_req(&topic, 10, 1)).await;
    let r = produce(&mut c, 9, produce_req(&topic, 48 * 1024, 1)).await;
    assert_eq!(r.throttle_time_ms, 0);
    let sent = Instant::now();
    let r = produce(&mut c, 9, produce_req(&topic, 48 * 1024, 1)).await;
    let answered = sent.elapsed();
    assert!((200..=800).contains(&r.throttle_time_ms), "throttle {} ms", r.throttle_time_ms);
    assert!(
        answered < Duration::from_millis(r.throttle_time_ms as u64),
        "v9 answered after {answered:?}"
    );
    // Produce v5 predates KIP-219: the same overdraft is answered only after the throttle
    // (kelp first waits out the previous one before reading this request).
    let sent = Instant::now();
    let r = produce(&mut c, 5, produce_req(&topic, 48 * 1024, 1)).await;
    let answered = sent.elapsed();
    assert!(r.throttle_time_ms > 0);
    assert!(
        answered >= Duration::from_millis(r.throttle_time_ms as u64).mul_f64(0.9),
        "v5 answered after {answered:?}, throttle {} ms",
        r.throttle_time_ms
    );

    // Fetch v12 at 16 KiB/s from a topic of 1 KiB records: data first (capped to the bucket),
    // then an empty answer carrying the throttle.
    let small = common::unique_name("small");
    common::create_topic_raw(kelp.addr, &small, 1).await;
    let mut c = connect_as(&kelp, "filler").await;
    for _ in 0..40 {
        produce(&mut c, 9, produce_req(&small, 1024, 1)).await;
    }
    let topic = small;
    let mut c = connect_as(&kelp, "consumer").await;
    let mut saw_empty_throttled = false;
    let mut fetched = 0usize;
    let started = Instant::now();
    for _ in 0..4 {
        let ResponseKind::Fetch(r) =
            c.call(ApiKey::Fetch, 12, RequestKind::Fetch(fetch_req(&topic))).await
        else {
            panic!()
        };
        let size: usize = r
            .responses
            .iter()
            .flat_map(|t| &t.partitions)
            .map(|p| p.records.as_ref().map_or(0, |b| b.len()))
            .sum();
        assert!(size <= 16 * 1024, "a response fits the consumer's bucket ({size} bytes)");
        fetched += size;
        if r.throttle_time_ms > 0 && r.responses.is_empty() {
            saw_empty_throttled = true;
        }
    }
    assert!(saw_empty_throttled, "no throttled empty fetch");
    assert!(fetched > 0, "the consumer got data");
    let took = started.elapsed().as_secs_f64();
    assert!(fetched as f64 <= 16384.0 * (took + 1.0) * 1.1, "{fetched} bytes in {took:.1} s");

    // Request rate 5/s: a bucket of five, then one every 200 ms.
    let mut c = connect_as(&kelp, "chatty").await;
    let started = Instant::now();
    let mut throttled = 0;
    for _ in 0..10 {
        let ResponseKind::Metadata(r) = c
            .call(
                ApiKey::Metadata,
                12,
                RequestKind::Metadata(MetadataRequest::default().with_topics(Some(vec![]))),
            )
            .await
        else {
            panic!()
        };
        throttled += usize::from(r.throttle_time_ms > 0);
    }
    assert!(throttled >= 3, "{throttled} of 10 metadata requests throttled");
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "10 requests in {:?}",
        started.elapsed()
    );
    // ApiVersions is exempt and an unlimited client id is not held.
    let mut c = connect_as(&kelp, "someone-else").await;
    let ResponseKind::Produce(r) =
        c.call(ApiKey::Produce, 9, RequestKind::Produce(produce_req(&topic, 200 * 1024, 1))).await
    else {
        panic!()
    };
    assert_eq!(r.throttle_time_ms, 0);
    kelp.stop().await;
}

// === a client that ignores throttling ===

/// One request frame with the header `client_id`.
fn frame(
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    client_id: &str,
    req: &RequestKind,
) -> Bytes {
    let mut body = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(s(client_id)))
        .encode(&mut body, key.request_header_version(version))
        .expect("header encodes");
    req.encode(&mut body, version).expect("request encodes");
    let mut out = BytesMut::new();
    out.put_i32(body.len() as i32);
    out.extend_from_slice(&body);
    out.freeze()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_ignores_throttling_is_held_to_the_rate() {
    const RATE: f64 = 128.0 * 1024.0;
    let seaweedfs = common::seaweedfs().await;
    let quotas =
        file_with(&format!("quotas:\n  - client-id: greedy\n    producer_byte_rate: {RATE}\n"));
    let kelp = Kelp::start(&seaweedfs, &["--quotas-file", &path_of(&quotas)]).await;
    let topic = common::unique_name("greedy");
    common::create_topic_raw(kelp.addr, &topic, 1).await;

    // acks=0: no answers to wait for; 24 requests of 32 KiB written back to back, then a
    // Metadata request whose answer can only come once kelp has read everything before it.
    let stream = tokio::net::TcpStream::connect(kelp.addr).await.expect("connect");
    let (mut rd, mut wr) = stream.into_split();
    let requests = 24;
    let mut total = 0usize;
    let mut frames = Vec::new();
    for i in 0..requests {
        let f = frame(
            ApiKey::Produce,
            9,
            i,
            "greedy",
            &RequestKind::Produce(produce_req(&topic, 32 * 1024, 0)),
        );
        total += f.len();
        frames.push(f);
    }
    frames.push(frame(
        ApiKey::Metadata,
        12,
        1000,
        "greedy",
        &RequestKind::Metadata(MetadataRequest::default().with_topics(Some(vec![]))),
    ));
    let started = Instant::now();
    let writer = tokio::spawn(async move {
        for f in frames {
            wr.write_all(&f).await.expect("kelp keeps the connection open");
        }
        wr
    });
    let mut len = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(30), rd.read_exact(&mut len))
        .await
        .expect("metadata in time")
        .expect("read");
    let took = started.elapsed();
    let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
    rd.read_exact(&mut body).await.expect("read body");
    assert_eq!(Bytes::from(body).get_i32(), 1000, "the metadata answer");
    let _wr = writer.await.expect("writer");
    // The first bucket (one second of rate) is free; the rest arrives at the rate.
    let expected = (total as f64 - RATE) / RATE;
    eprintln!("acks=0: {total} bytes held for {took:?}, {expected:.2} s expected at the limit");
    // Held to the rate: never faster than the limit allows (15% slack for the burst bucket).
    // Slower only means a busy machine, so the upper bound just proves progress.
    let took_s = took.as_secs_f64();
    assert!(
        took_s >= 0.85 * expected && took_s <= 3.0 * expected,
        "{total} bytes took {took:?}, expected {expected:.2} s"
    );

    // acks=1, pipelined without reading: every answer beyond the bucket carries a throttle,
    // and the whole lot still takes as long as the rate says.
    let stream = tokio::net::TcpStream::connect(kelp.addr).await.expect("connect");
    let (mut rd, mut wr) = stream.into_split();
    let mut frames = Vec::new();
    let mut total = 0usize;
    for i in 0..16 {
        let f = frame(
            ApiKey::Produce,
            9,
            i,
            "greedy",
            &RequestKind::Produce(produce_req(&topic, 32 * 1024, 1)),
        );
        total += f.len();
        frames.push(f);
    }
    // The acks=0 run used the bucket up; let it refill.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let started = Instant::now();
    let writer = tokio::spawn(async move {
        for f in frames {
            wr.write_all(&f).await.expect("write");
        }
        wr
    });
    let mut throttles = Vec::new();
    for i in 0..16 {
        let mut len = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(30), rd.read_exact(&mut len))
            .await
            .expect("answer in time")
            .expect("read");
        let mut body = Bytes::from({
            let mut b = vec![0u8; i32::from_be_bytes(len) as usize];
            rd.read_exact(&mut b).await.expect("read body");
            b
        });
        let header = <ResponseHeader as kafka_protocol::protocol::Decodable>::decode(
            &mut body,
            ApiKey::Produce.response_header_version(9),
        )
        .expect("header");
        assert_eq!(header.correlation_id, i);
        let r = <ProduceResponse as kafka_protocol::protocol::Decodable>::decode(&mut body, 9)
            .expect("produce response");
        throttles.push(r.throttle_time_ms);
    }
    let took = started.elapsed();
    let _wr = writer.await.expect("writer");
    let expected = (total as f64 - RATE) / RATE;
    eprintln!(
        "acks=1 pipelined: {total} bytes in {took:?} ({expected:.2} s expected); throttles {throttles:?}"
    );
    assert!(throttles.iter().filter(|t| **t > 0).count() >= 10, "{throttles:?}");
    // The last answer is written before its own hold: a little under the full time.
    let last_hold = f64::from(*throttles.last().unwrap()) / 1000.0;
    let held = took.as_secs_f64() + last_hold;
    assert!(
        held >= 0.85 * expected && held <= 3.0 * expected,
        "took {took:?}, expected {expected:.2} s"
    );
    kelp.stop().await;
}

// === AlterClientQuotas on one kelp, applied by another ===

fn alter_entry(client_id: Option<&str>, ops: Vec<(&str, f64, bool)>) -> EntryData {
    EntryData::default()
        .with_entity(vec![
            EntityData::default()
                .with_entity_type(s("client-id"))
                .with_entity_name(client_id.map(s)),
        ])
        .with_ops(
            ops.into_iter()
                .map(|(k, v, r)| OpData::default().with_key(s(k)).with_value(v).with_remove(r))
                .collect(),
        )
}

async fn alter(c: &mut Raw, version: i16, req: AlterClientQuotasRequest) -> Vec<i16> {
    let ResponseKind::AlterClientQuotas(r) =
        c.call(ApiKey::AlterClientQuotas, version, RequestKind::AlterClientQuotas(req)).await
    else {
        panic!()
    };
    r.entries.iter().map(|e| e.error_code).collect()
}

/// The quotas DescribeClientQuotas reports for client id `name` (exact match).
async fn described(c: &mut Raw, version: i16, name: &str) -> Vec<(String, f64)> {
    let req = DescribeClientQuotasRequest::default().with_components(vec![
        ComponentData::default()
            .with_entity_type(s("client-id"))
            .with_match_type(0)
            .with_match(Some(s(name))),
    ]);
    let ResponseKind::DescribeClientQuotas(r) =
        c.call(ApiKey::DescribeClientQuotas, version, RequestKind::DescribeClientQuotas(req)).await
    else {
        panic!()
    };
    assert_eq!(r.error_code, 0, "{:?}", r.error_message);
    r.entries
        .unwrap_or_default()
        .into_iter()
        .flat_map(|e| e.values)
        .map(|v| (v.key.to_string(), v.value))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_altered_on_one_kelp_applies_on_another() {
    let seaweedfs = common::seaweedfs().await;
    let a = Kelp::start(&seaweedfs, &[]).await;
    let b = Kelp::start(&seaweedfs, &[]).await;
    let topic = common::unique_name("shared");
    common::create_topic_raw(a.addr, &topic, 1).await;
    let client = common::unique_name("shared-client");
    let mut ca = Raw::connect(a.addr).await;
    let mut cb = Raw::connect(b.addr).await;

    // Validation (v0), then the real change (v1).
    let codes = alter(
        &mut ca,
        0,
        AlterClientQuotasRequest::default().with_validate_only(true).with_entries(vec![
            alter_entry(Some(&client), vec![("producer_byte_rate", 32768.0, false)]),
            alter_entry(Some(&client), vec![("request_percentage", 50.0, false)]),
        ]),
    )
    .await;
    assert_eq!(codes, vec![0, ResponseError::InvalidRequest.code()]);
    assert!(described(&mut ca, 1, &client).await.is_empty(), "validate_only stores nothing");
    let codes = alter(
        &mut ca,
        1,
        AlterClientQuotasRequest::default().with_entries(vec![alter_entry(
            Some(&client),
            vec![("producer_byte_rate", 32768.0, false)],
        )]),
    )
    .await;
    assert_eq!(codes, vec![0]);
    assert_eq!(
        described(&mut ca, 1, &client).await,
        vec![("producer_byte_rate".to_string(), 32768.0)],
        "applied at once where altered"
    );

    // Kelp b reads it from the filer within its refresh period.
    let seen = Instant::now();
    let b_addr = b.addr;
    common::eventually(|| {
        let client = client.clone();
        async move {
            let q = described(&mut Raw::connect(b_addr).await, 0, &client).await;
            if q.is_empty() { Err("not yet on the second kelp") } else { Ok(q) }
        }
    })
    .await;
    eprintln!("second kelp applied the quota after {:?}", seen.elapsed());

    // ...and meters the client by it.
    let mut p = connect_as(&b, &client).await;
    let r = produce(&mut p, 9, produce_req(&topic, 24 * 1024, 1)).await;
    assert_eq!(r.throttle_time_ms, 0);
    let r = produce(&mut p, 9, produce_req(&topic, 24 * 1024, 1)).await;
    assert!(r.throttle_time_ms > 0, "second kelp did not throttle");

    // Removing it on b (v0) reaches a.
    let codes = alter(
        &mut cb,
        0,
        AlterClientQuotasRequest::default().with_entries(vec![alter_entry(
            Some(&client),
            vec![("producer_byte_rate", 0.0, true)],
        )]),
    )
    .await;
    assert_eq!(codes, vec![0]);
    let a_addr = a.addr;
    common::eventually(|| {
        let client = client.clone();
        async move {
            if described(&mut Raw::connect(a_addr).await, 1, &client).await.is_empty() {
                Ok(())
            } else {
                Err("still on the first kelp")
            }
        }
    })
    .await;

    // Without SASL, the SASL APIs say so.
    let ResponseKind::SaslHandshake(r) = ca
        .call(
            ApiKey::SaslHandshake,
            1,
            RequestKind::SaslHandshake(SaslHandshakeRequest::default().with_mechanism(s("PLAIN"))),
        )
        .await
    else {
        panic!()
    };
    assert_eq!(r.error_code, ResponseError::IllegalSaslState.code());
    a.stop().await;
    b.stop().await;
}

// === the quotas file ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quotas_file_is_reread_and_a_bad_version_keeps_the_rules() {
    let seaweedfs = common::seaweedfs().await;
    let mut quotas = file_with("quotas:\n  - client-id: app\n    request_rate: 100\n");
    let kelp = Kelp::start(&seaweedfs, &["--quotas-file", &path_of(&quotas)]).await;
    let mut c = Raw::connect(kelp.addr).await;
    assert_eq!(described(&mut c, 1, "app").await, vec![("request_rate".to_string(), 100.0)]);

    let rewrite = |f: &mut tempfile::NamedTempFile, text: &str| {
        let file = f.as_file_mut();
        file.set_len(0).unwrap();
        std::io::Seek::seek(file, std::io::SeekFrom::Start(0)).unwrap();
        file.write_all(text.as_bytes()).unwrap();
        file.flush().unwrap();
    };
    rewrite(&mut quotas, "quotas:\n  - client-id: app\n    producer_byte_rate: 2048\n");
    let addr = kelp.addr;
    common::eventually(|| async move {
        let q = described(&mut Raw::connect(addr).await, 1, "app").await;
        if q == vec![("producer_byte_rate".to_string(), 2048.0)] { Ok(()) } else { Err(q) }
    })
    .await;
    // An invalid file is ignored: the rules stay as they were.
    rewrite(&mut quotas, "quotas:\n  - client-id: app\n    producer_byte_rate: -5\n");
    tokio::time::sleep(kelp::quota::FILE_POLL * 2).await;
    assert_eq!(described(&mut c, 1, "app").await, vec![("producer_byte_rate".to_string(), 2048.0)]);
    kelp.stop().await;
}

// === SASL ===

/// bob is a super-user: he creates the topics (docs/security.md; tests/authz.rs).
const USERS: &str = "users:\n  alice:\n    password: alice-secret\n  bob:\n    password: bob-secret\n    super-user: true\n";

fn rd_sasl(bootstrap: &str, mechanism: &str, user: &str, password: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("security.protocol", "SASL_PLAINTEXT")
        .set("sasl.mechanism", mechanism)
        .set("sasl.username", user)
        .set("sasl.password", password)
        .set("message.timeout.ms", "15000");
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn librdkafka_logs_in_with_plain_and_scram_and_a_wrong_password_is_refused() {
    let seaweedfs = common::seaweedfs().await;
    let users = file_with(USERS);
    let kelp = Kelp::start(&seaweedfs, &["--sasl-users-file", &path_of(&users)]).await;
    let topic = common::unique_name("sasl");
    create_topic_as(kelp.addr, &topic, "bob", "bob-secret").await;

    for (mechanism, user, password) in [
        ("PLAIN", "alice", "alice-secret"),
        ("SCRAM-SHA-256", "bob", "bob-secret"),
        ("SCRAM-SHA-512", "alice", "alice-secret"),
    ] {
        let p: FutureProducer =
            rd_sasl(&kelp.bootstrap(), mechanism, user, password).create().expect("producer");
        let d = p
            .send(FutureRecord::<(), str>::to(&topic).payload(mechanism), Duration::from_secs(15))
            .await
            .map_err(|(e, _)| e)
            .unwrap_or_else(|e| panic!("{mechanism} as {user}: {e}"));
        assert!(d.offset >= 0);
        p.flush(Duration::from_secs(5)).expect("flush");
    }
    for (mechanism, user, password) in [
        ("PLAIN", "alice", "wrong"),
        ("SCRAM-SHA-256", "bob", "wrong"),
        ("SCRAM-SHA-512", "mallory", "x"),
    ] {
        let consumer: BaseConsumer =
            rd_sasl(&kelp.bootstrap(), mechanism, user, password).create().expect("consumer");
        let r = consumer.fetch_metadata(None, Duration::from_secs(3));
        eprintln!("{mechanism} as {user} with a wrong password: {:?}", r.as_ref().err());
        assert!(r.is_err(), "{mechanism} as {user} with a wrong password got metadata");
    }
    // A client without SASL gets nothing either.
    let consumer: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", kelp.bootstrap()).create().expect("consumer");
    let r = consumer.fetch_metadata(None, Duration::from_secs(3));
    eprintln!("without SASL: {:?}", r.as_ref().err());
    assert!(r.is_err(), "metadata without logging in");
    // The failures were kelp's refusals, not time-outs.
    let scraped = kelp::metrics::global().render();
    for m in ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] {
        assert!(
            scraped.contains(&format!(
                "kelp_sasl_authentications_total{{mechanism=\"{m}\",outcome=\"failed\"}}"
            )),
            "{m}: {scraped}"
        );
        assert!(
            scraped.contains(&format!(
                "kelp_sasl_authentications_total{{mechanism=\"{m}\",outcome=\"ok\"}}"
            )),
            "{m}: {scraped}"
        );
    }
    kelp.stop().await;
}

/// A SCRAM client's final message and the server signature it expects.
fn scram_final(
    hash: Hash,
    password: &str,
    client_first_bare: &str,
    server_first: &str,
) -> (String, Vec<u8>) {
    let fields: Vec<&str> = server_first.split(',').collect();
    let nonce = fields[0].strip_prefix("r=").expect("r=");
    let salt = B64.decode(fields[1].strip_prefix("s=").expect("s=")).expect("salt");
    let iterations: u32 = fields[2].strip_prefix("i=").expect("i=").parse().expect("iterations");
    let salted = hash.salted_password(password.as_bytes(), &salt, iterations);
    let client_key = hash.hmac(&salted, b"Client Key");
    let without_proof = format!("c=biws,r={nonce}");
    let auth = format!("{client_first_bare},{server_first},{without_proof}");
    let signature = hash.hmac(&hash.digest(&client_key), auth.as_bytes());
    let proof: Vec<u8> = client_key.iter().zip(&signature).map(|(a, b)| a ^ b).collect();
    let server_signature = hash.hmac(&hash.hmac(&salted, b"Server Key"), auth.as_bytes());
    (format!("{without_proof},p={}", B64.encode(proof)), server_signature)
}

async fn handshake(c: &mut Raw, version: i16, mechanism: &str) -> SaslHandshakeResponse {
    match c
        .call(
            ApiKey::SaslHandshake,
            version,
            RequestKind::SaslHandshake(
                SaslHandshakeRequest::default().with_mechanism(s(mechanism)),
            ),
        )
        .await
    {
        ResponseKind::SaslHandshake(r) => r,
        other => panic!("unexpected {other:?}"),
    }
}

async fn authenticate(c: &mut Raw, version: i16, bytes: &[u8]) -> SaslAuthenticateResponse {
    let req = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::copy_from_slice(bytes));
    match c.call(ApiKey::SaslAuthenticate, version, RequestKind::SaslAuthenticate(req)).await {
        ResponseKind::SaslAuthenticate(r) => r,
        other => panic!("unexpected {other:?}"),
    }
}

/// CreateTopics v7 on a connection logged in with PLAIN.
async fn create_topic_as(addr: std::net::SocketAddr, topic: &str, user: &str, password: &str) {
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    let mut c = Raw::connect(addr).await;
    assert_eq!(handshake(&mut c, 1, "PLAIN").await.error_code, 0);
    assert_eq!(
        authenticate(&mut c, 1, format!("\0{user}\0{password}").as_bytes()).await.error_code,
        0
    );
    let req = CreateTopicsRequest::default().with_timeout_ms(30_000).with_topics(vec![
        CreatableTopic::default()
            .with_name(TopicName(s(topic)))
            .with_num_partitions(1)
            .with_replication_factor(-1),
    ]);
    let ResponseKind::CreateTopics(r) =
        c.call(ApiKey::CreateTopics, 7, RequestKind::CreateTopics(req)).await
    else {
        panic!()
    };
    assert_eq!(r.topics[0].error_code, 0, "{:?}", r.topics[0].error_message);
}

async fn metadata_ok(c: &mut Raw) {
    let ResponseKind::Metadata(_) = c
        .call(
            ApiKey::Metadata,
            12,
            RequestKind::Metadata(MetadataRequest::default().with_topics(Some(vec![]))),
        )
        .await
    else {
        panic!()
    };
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_at_every_advertised_version_and_user_quotas() {
    let seaweedfs = common::seaweedfs().await;
    let users = file_with(USERS);
    let quotas = file_with("quotas:\n  - user: alice\n    producer_byte_rate: 32768\n");
    let kelp = Kelp::start(
        &seaweedfs,
        &["--sasl-users-file", &path_of(&users), "--quotas-file", &path_of(&quotas)],
    )
    .await;
    let topic = common::unique_name("sasl-raw");
    let mechanisms =
        |r: &SaslHandshakeResponse| r.mechanisms.iter().map(|m| m.to_string()).collect::<Vec<_>>();

    // Before logging in: ApiVersions yes, anything else closes the connection.
    let mut c = Raw::connect(kelp.addr).await;
    let ResponseKind::ApiVersions(v) = c
        .call(ApiKey::ApiVersions, 3, RequestKind::ApiVersions(ApiVersionsRequest::default()))
        .await
    else {
        panic!()
    };
    assert_eq!(v.error_code, 0);
    let f = c.frame(ApiKey::Metadata, 12, &RequestKind::Metadata(MetadataRequest::default()));
    c.send_bytes(&f).await;
    assert!(c.closed().await, "metadata before authentication");

    // SaslHandshake v0, then bare PLAIN token.
    let mut c = Raw::connect(kelp.addr).await;
    let r = handshake(&mut c, 0, "PLAIN").await;
    assert_eq!(
        (r.error_code, mechanisms(&r)),
        (0, vec!["PLAIN".to_string(), "SCRAM-SHA-256".into(), "SCRAM-SHA-512".into()])
    );
    let token = b"\0alice\0alice-secret";
    let mut f = BytesMut::new();
    f.put_i32(token.len() as i32);
    f.extend_from_slice(token);
    c.send_bytes(&f).await;
    assert_eq!(
        c.read_frame().await.expect("token reply"),
        Bytes::new(),
        "PLAIN answers an empty token"
    );
    metadata_ok(&mut c).await;

    // v0 with a wrong password: the connection closes without a token.
    let mut c = Raw::connect(kelp.addr).await;
    assert_eq!(handshake(&mut c, 0, "PLAIN").await.error_code, 0);
    let token = b"\0alice\0nope";
    let mut f = BytesMut::new();
    f.put_i32(token.len() as i32);
    f.extend_from_slice(token);
    c.send_bytes(&f).await;
    assert!(c.closed().await);

    // Unknown mechanism.
    let mut c = Raw::connect(kelp.addr).await;
    let r = handshake(&mut c, 1, "GSSAPI").await;
    assert_eq!(r.error_code, ResponseError::UnsupportedSaslMechanism.code());
    assert_eq!(mechanisms(&r).len(), 3);

    // SaslHandshake v1 + SaslAuthenticate v0 with PLAIN; a second handshake is refused.
    let mut c = Raw::connect(kelp.addr).await;
    assert_eq!(handshake(&mut c, 1, "PLAIN").await.error_code, 0);
    let r = authenticate(&mut c, 0, b"\0bob\0bob-secret").await;
    assert_eq!(r.error_code, 0, "{:?}", r.error_message);
    metadata_ok(&mut c).await;
    assert_eq!(
        handshake(&mut c, 1, "PLAIN").await.error_code,
        ResponseError::IllegalSaslState.code()
    );

    // SaslAuthenticate v1 (SCRAM-SHA-256) and v2 (SCRAM-SHA-512), checking the server's proof.
    for (version, mechanism, hash) in
        [(1, "SCRAM-SHA-256", Hash::Sha256), (2, "SCRAM-SHA-512", Hash::Sha512)]
    {
        let mut c = Raw::connect(kelp.addr).await;
        assert_eq!(handshake(&mut c, 1, mechanism).await.error_code, 0);
        let first_bare = "n=bob,r=clientnonce123";
        let r = authenticate(&mut c, version, format!("n,,{first_bare}").as_bytes()).await;
        assert_eq!(r.error_code, 0, "{mechanism}: {:?}", r.error_message);
        let server_first = String::from_utf8(r.auth_bytes.to_vec()).expect("utf-8");
        assert!(server_first.starts_with("r=clientnonce123"), "{server_first}");
        let (last, server_signature) = scram_final(hash, "bob-secret", first_bare, &server_first);
        let r = authenticate(&mut c, version, last.as_bytes()).await;
        assert_eq!(r.error_code, 0, "{mechanism}: {:?}", r.error_message);
        assert_eq!(r.auth_bytes, Bytes::from(format!("v={}", B64.encode(server_signature))));
        assert_eq!(r.session_lifetime_ms, 0);
        metadata_ok(&mut c).await;
    }

    // A wrong SCRAM password: SASL_AUTHENTICATION_FAILED, then the connection closes.
    let mut c = Raw::connect(kelp.addr).await;
    assert_eq!(handshake(&mut c, 1, "SCRAM-SHA-256").await.error_code, 0);
    let r = authenticate(&mut c, 2, b"n,,n=bob,r=abc").await;
    let (last, _) = scram_final(
        Hash::Sha256,
        "not-bobs",
        "n=bob,r=abc",
        std::str::from_utf8(&r.auth_bytes).unwrap(),
    );
    let r = authenticate(&mut c, 2, last.as_bytes()).await;
    assert_eq!(r.error_code, ResponseError::SaslAuthenticationFailed.code());
    assert!(c.closed().await);

    // The authenticated user is the quota's user: alice is limited, bob is not.
    create_topic_as(kelp.addr, &topic, "bob", "bob-secret").await;
    for (user, password, limited) in [("alice", "alice-secret", true), ("bob", "bob-secret", false)]
    {
        let mut c = Raw::connect(kelp.addr).await;
        assert_eq!(handshake(&mut c, 1, "PLAIN").await.error_code, 0);
        assert_eq!(
            authenticate(&mut c, 2, format!("\0{user}\0{password}").as_bytes()).await.error_code,
            0
        );
        produce(&mut c, 9, produce_req(&topic, 24 * 1024, 1)).await;
        let r = produce(&mut c, 9, produce_req(&topic, 24 * 1024, 1)).await;
        assert_eq!(r.throttle_time_ms > 0, limited, "{user}: throttle {}", r.throttle_time_ms);
    }
    let scraped = kelp::metrics::global().render();
    assert!(
        scraped.contains(
            "kelp_sasl_authentications_total{mechanism=\"SCRAM-SHA-512\",outcome=\"ok\"}"
        ),
        "{scraped}"
    );
    assert!(
        scraped.contains("kelp_quota_throttle_seconds_count{quota=\"produce\",entity=\"user\"}"),
        "{scraped}"
    );
    kelp.stop().await;
}

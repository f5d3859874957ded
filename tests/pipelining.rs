//! One connection, many requests in flight: kelp reads and starts the next requests while
//! earlier ones wait for SeaweedFS, and answers strictly in request order. Real SeaweedFS;
//! raw sockets that write many requests before reading any answer, and an idempotent
//! librdkafka producer with five requests in flight.

mod common;

use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, BrokerId, ListOffsetsRequest, MetadataRequest, ProduceRequest,
    RequestKind, ResponseHeader, ResponseKind, SaslAuthenticateRequest, SaslHandshakeRequest,
    TopicName,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use rdkafka::config::ClientConfig;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};

use common::kelp::Kelp;
use common::raw::{Raw, batch_of};

fn name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_string()))
}

/// Produce v9 of one record `value` to `partition`.
fn produce(topic: &str, partition: i32, acks: i16, value: &str) -> RequestKind {
    let batch = batch_of(vec![(None, Bytes::from(value.to_string()), 1_700_000_000_000)]);
    let data = PartitionProduceData::default().with_index(partition).with_records(Some(batch));
    RequestKind::Produce(
        ProduceRequest::default().with_acks(acks).with_timeout_ms(10_000).with_topic_data(vec![
            TopicProduceData::default().with_name(name(topic)).with_partition_data(vec![data]),
        ]),
    )
}

fn metadata(topic: &str) -> RequestKind {
    RequestKind::Metadata(
        MetadataRequest::default()
            .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(name(topic)))])),
    )
}

fn earliest(topic: &str, partition: i32) -> RequestKind {
    let p = ListOffsetsPartition::default().with_partition_index(partition).with_timestamp(-2);
    RequestKind::ListOffsets(
        ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(vec![
            ListOffsetsTopic::default().with_name(name(topic)).with_partitions(vec![p]),
        ]),
    )
}

/// The next response frame: its correlation id and decoded body, given which request (by
/// correlation id) it must answer.
async fn read_answer(c: &mut Raw, sent: &[(i32, ApiKey, i16)]) -> (i32, ResponseKind) {
    let mut frame = c.read_frame().await.expect("an answer, not a closed connection");
    let correlation_id = (&frame[..4]).get_i32();
    let &(_, key, version) = sent
        .iter()
        .find(|(id, _, _)| *id == correlation_id)
        .unwrap_or_else(|| panic!("answer to unknown correlation id {correlation_id}"));
    let header_version =
        if key == ApiKey::ApiVersions { 0 } else { key.response_header_version(version) };
    ResponseHeader::decode(&mut frame, header_version).expect("response header");
    let body = ResponseKind::decode(key, &mut frame, version).expect("response body");
    assert_eq!(frame.remaining(), 0, "{key:?}: trailing bytes");
    (correlation_id, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_mixed_requests_on_one_connection_are_answered_in_order() {
    common::init_tracing();
    let seaweedfs = common::seaweedfs().await;
    let kelp = Kelp::start(&seaweedfs, &[]).await;
    let topic = common::unique_name("pipelined");
    common::create_topic_raw(kelp.addr, &topic, 2).await;

    // 50 requests written at once, then read: per partition, the records must be stored in
    // request order, so the n-th Produce to a partition gets offset n. Request 23 is an
    // acks=0 Produce: no answer, but its record keeps its place.
    const N: usize = 50;
    const ACKS0: usize = 23;
    let mut c = Raw::connect(kelp.addr).await;
    let mut out = BytesMut::new();
    let mut sent = Vec::new();
    // (correlation id, partition, expected offset, value) of every Produce.
    let mut produced = Vec::new();
    let mut next_offset = [0i64; 2];
    for i in 0..N {
        let (key, version, req) = match i % 5 {
            0 => (ApiKey::ApiVersions, 3, RequestKind::ApiVersions(ApiVersionsRequest::default())),
            1 => (ApiKey::Metadata, 12, metadata(&topic)),
            4 => (ApiKey::ListOffsets, 7, earliest(&topic, (i % 2) as i32)),
            _ => {
                let p = (i % 2) as i32;
                let value = format!("r{i:02}");
                let acks = if i == ACKS0 { 0 } else { -1 };
                produced.push((i, p, next_offset[p as usize], value.clone()));
                next_offset[p as usize] += 1;
                (ApiKey::Produce, 9, produce(&topic, p, acks, &value))
            }
        };
        out.extend_from_slice(&c.frame(key, version, &req));
        if i != ACKS0 {
            sent.push(((i + 1) as i32, key, version));
        }
    }
    c.send_bytes(&out).await;

    let mut ids = Vec::new();
    for _ in 0..sent.len() {
        let (id, body) = read_answer(&mut c, &sent).await;
        let i = (id - 1) as usize;
        match body {
            ResponseKind::ApiVersions(r) => {
                assert_eq!(r.error_code, 0);
                assert!(r.api_keys.iter().any(|k| k.api_key == ApiKey::Produce as i16));
            }
            ResponseKind::Metadata(r) => {
                assert_eq!(r.topics.len(), 1);
                assert_eq!((r.topics[0].error_code, r.topics[0].partitions.len()), (0, 2));
            }
            ResponseKind::ListOffsets(r) => {
                let p = &r.topics[0].partitions[0];
                assert_eq!((p.error_code, p.offset), (0, 0), "request {i}");
            }
            ResponseKind::Produce(r) => {
                let p = &r.responses[0].partition_responses[0];
                let &(_, partition, offset, _) =
                    produced.iter().find(|(j, ..)| *j == i).expect("a produce request");
                assert_eq!(
                    (p.index, p.error_code, p.base_offset),
                    (partition, 0, offset),
                    "request {i}: records reach the partition in request order"
                );
            }
            other => panic!("unexpected answer {other:?}"),
        }
        ids.push(id);
    }
    let expected: Vec<i32> = sent.iter().map(|(id, _, _)| *id).collect();
    assert_eq!(ids, expected, "answers in request order, none for the acks=0 produce");

    // Every record, the acks=0 one included, at the offset its place gave it.
    let config = ClientConfig::new().set("bootstrap.servers", kelp.bootstrap()).clone();
    let consumer = common::clients::from_beginning(&config, &topic, 2);
    let mut stored = Vec::new();
    let deadline = Instant::now() + common::patience();
    while stored.len() < produced.len() && Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(300)) {
            let m = m.expect("consume");
            let value = String::from_utf8(m.payload().expect("value").to_vec()).expect("utf-8");
            stored.push((m.partition(), m.offset(), value));
        }
    }
    stored.sort();
    let mut want: Vec<(i32, i64, String)> =
        produced.iter().map(|(_, p, o, v)| (*p, *o, v.clone())).collect();
    want.sort();
    assert_eq!(stored, want);
    assert!(kelp.stop().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_producer_with_five_requests_in_flight_keeps_order_and_offsets() {
    common::init_tracing();
    let seaweedfs = common::seaweedfs().await;
    let kelp = Kelp::start(&seaweedfs, &[]).await;
    let topic = common::unique_name("idempotent-pipelined");
    common::create_topic_raw(kelp.addr, &topic, 1).await;

    // Small batches and no linger: librdkafka keeps up to five Produce requests in flight.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", kelp.bootstrap())
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("max.in.flight.requests.per.connection", "5")
        .set("linger.ms", "0")
        .set("batch.num.messages", "20")
        .set("message.timeout.ms", "60000")
        .create()
        .expect("producer");
    const N: usize = 3000;
    let mut deliveries = Vec::with_capacity(N);
    for i in 0..N {
        let value = format!("v{i:05}");
        let record = FutureRecord::<(), _>::to(&topic).partition(0).payload(&value);
        deliveries.push(producer.send_result(record).map_err(|(e, _)| e).expect("queued"));
    }
    for (i, d) in deliveries.into_iter().enumerate() {
        let d = d.await.expect("delivery report").unwrap_or_else(|(e, _)| {
            panic!("record {i} failed (no OUT_OF_ORDER_SEQUENCE expected): {e}")
        });
        assert_eq!((d.partition, d.offset), (0, i as i64), "record {i}");
    }

    let config = ClientConfig::new().set("bootstrap.servers", kelp.bootstrap()).clone();
    let consumer = common::clients::from_beginning(&config, &topic, 1);
    let mut next = 0usize;
    let deadline = Instant::now() + common::patience();
    while next < N && Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(300)) {
            let m = m.expect("consume");
            assert_eq!(m.offset(), next as i64, "contiguous offsets");
            assert_eq!(m.payload(), Some(format!("v{next:05}").as_bytes()), "offset {next}");
            next += 1;
        }
    }
    assert_eq!(next, N, "every record read back");
    assert!(kelp.stop().await);
}

/// A super-user: Metadata may create the topic it names.
const USERS: &str = "users:
  app:
    password: app-secret
    super-user: true
";

fn plain(user: &str, password: &str) -> RequestKind {
    let token = format!("\0{user}\0{password}");
    RequestKind::SaslAuthenticate(
        SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(token.into_bytes())),
    )
}

fn handshake() -> RequestKind {
    RequestKind::SaslHandshake(
        SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN")),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelined_login_is_finished_before_the_requests_behind_it() {
    use std::io::Write;
    common::init_tracing();
    let seaweedfs = common::seaweedfs().await;
    let mut users = tempfile::NamedTempFile::new().expect("temp file");
    users.write_all(USERS.as_bytes()).expect("write users");
    let path = users.path().to_str().expect("utf-8 path").to_string();
    let kelp = Kelp::start(&seaweedfs, &["--sasl-users-file", &path]).await;
    let topic = common::unique_name("pipelined-login");

    // Login and requests written at once: each request after the login is served as the
    // logged-in user, in order.
    let mut c = Raw::connect(kelp.addr).await;
    let mut out = BytesMut::new();
    let reqs = [
        (ApiKey::ApiVersions, 3, RequestKind::ApiVersions(ApiVersionsRequest::default())),
        (ApiKey::SaslHandshake, 1, handshake()),
        (ApiKey::SaslAuthenticate, 2, plain("app", "app-secret")),
        (ApiKey::Metadata, 12, metadata(&topic)),
        (ApiKey::Metadata, 12, metadata(&topic)),
    ];
    let mut sent = Vec::new();
    for (i, (key, version, req)) in reqs.iter().enumerate() {
        out.extend_from_slice(&c.frame(*key, *version, req));
        sent.push(((i + 1) as i32, *key, *version));
    }
    c.send_bytes(&out).await;
    for want in 1..=reqs.len() as i32 {
        let (id, body) = read_answer(&mut c, &sent).await;
        assert_eq!(id, want, "answers in request order");
        match body {
            ResponseKind::ApiVersions(r) => assert_eq!(r.error_code, 0),
            ResponseKind::SaslHandshake(r) => assert_eq!(r.error_code, 0),
            ResponseKind::SaslAuthenticate(r) => assert_eq!(r.error_code, 0),
            // Auto-creation makes the topic: the request ran as an authenticated client.
            ResponseKind::Metadata(r) => assert_eq!(r.topics[0].error_code, 0),
            other => panic!("unexpected answer {other:?}"),
        }
    }

    // A failed login pipelined with a request: the failure is answered, the connection
    // closes, and the request behind it is never served.
    let mut c = Raw::connect(kelp.addr).await;
    let mut out = BytesMut::new();
    out.extend_from_slice(&c.frame(ApiKey::SaslHandshake, 1, &handshake()));
    out.extend_from_slice(&c.frame(ApiKey::SaslAuthenticate, 2, &plain("app", "wrong")));
    out.extend_from_slice(&c.frame(ApiKey::Metadata, 12, &metadata(&topic)));
    c.send_bytes(&out).await;
    let sent = [(1, ApiKey::SaslHandshake, 1), (2, ApiKey::SaslAuthenticate, 2)];
    let (_, body) = read_answer(&mut c, &sent).await;
    assert!(matches!(body, ResponseKind::SaslHandshake(r) if r.error_code == 0));
    let (_, body) = read_answer(&mut c, &sent).await;
    let ResponseKind::SaslAuthenticate(r) = body else { panic!("{body:?}") };
    assert_eq!(r.error_code, 58, "SASL_AUTHENTICATION_FAILED");
    assert!(c.closed().await, "closed after the failed login, the Metadata unanswered");
    assert!(kelp.stop().await);
}

//! Malformed and hostile input on a raw socket: each case gets an error code or a closed
//! connection, and kelp keeps serving other connections.

mod common;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, RequestKind, ResponseKind, TopicName};
use kafka_protocol::protocol::StrBytes;

use common::kelp::Kelp;
use common::raw::Raw;

/// A healthy connection still gets ApiVersions answered.
async fn still_serving(kelp: &Kelp) {
    let mut c = Raw::connect(kelp.addr).await;
    match c
        .call(ApiKey::ApiVersions, 3, RequestKind::ApiVersions(ApiVersionsRequest::default()))
        .await
    {
        ResponseKind::ApiVersions(r) => assert_eq!(r.error_code, 0),
        other => panic!("unexpected {other:?}"),
    }
}

fn batch(value_len: usize) -> Bytes {
    common::raw::batch_of(vec![(None, Bytes::from(vec![b'v'; value_len]), 1)])
}

async fn produce_code(kelp: &Kelp, topic: &str, records: Bytes) -> i16 {
    produce_codes(kelp, topic, vec![(0, records)]).await[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_class_of_bad_input_gets_an_error_or_a_closed_connection() {
    let seaweedfs = common::seaweedfs().await;
    let kelp = Kelp::start(&seaweedfs, &["--max-message-bytes", "10000"]).await;

    // Garbage bytes: a length prefix followed by nonsense that is no request header.
    let mut c = Raw::connect(kelp.addr).await;
    c.send_bytes(&[0, 0, 0, 10, 0x7f, 0x7f, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4]).await;
    assert!(c.closed().await, "garbage closes the connection");
    still_serving(&kelp).await;

    // A length prefix of 2 GB: closed at once, no 2 GB buffer.
    let mut c = Raw::connect(kelp.addr).await;
    c.send_bytes(&0x7fff_fff0u32.to_be_bytes()).await;
    assert!(c.closed().await, "oversize frame closes the connection");
    still_serving(&kelp).await;

    // A negative length.
    let mut c = Raw::connect(kelp.addr).await;
    c.send_bytes(&(-5i32).to_be_bytes()).await;
    assert!(c.closed().await);

    // A truncated frame: the peer half-closes in the middle of a request.
    let mut c = Raw::connect(kelp.addr).await;
    let frame =
        c.frame(ApiKey::ApiVersions, 3, &RequestKind::ApiVersions(ApiVersionsRequest::default()));
    c.send_bytes(&frame[..frame.len() - 3]).await;
    c.stream.shutdown().await.unwrap();
    assert!(c.closed().await, "truncated frame closes the connection");
    still_serving(&kelp).await;

    // A frame whose body is cut short inside the declared length.
    let mut c = Raw::connect(kelp.addr).await;
    let mut short = BytesMut::new();
    short.put_i32(6);
    short.put_slice(&[0, 18, 0, 3, 0, 0]);
    c.send_bytes(&short).await;
    assert!(c.closed().await, "header shorter than a request header closes the connection");

    // An unknown API key.
    let mut c = Raw::connect(kelp.addr).await;
    let mut f = BytesMut::new();
    f.put_i32(10);
    f.put_i16(999);
    f.put_i16(0);
    f.put_i32(7);
    f.put_i16(-1);
    c.send_bytes(&f).await;
    assert!(c.closed().await, "unknown api key closes the connection");

    // A known API at a version kelp does not serve (one past Fetch's newest).
    let mut c = Raw::connect(kelp.addr).await;
    let mut f = BytesMut::new();
    f.put_i32(10);
    f.put_i16(ApiKey::Fetch as i16);
    f.put_i16(kelp::protocol::versions::supported(ApiKey::Fetch).unwrap().max + 1);
    f.put_i32(7);
    f.put_i16(-1);
    c.send_bytes(&f).await;
    assert!(c.closed().await, "unsupported version closes the connection");

    // ApiVersions at a version from the future: a v0-format answer with UNSUPPORTED_VERSION.
    let mut c = Raw::connect(kelp.addr).await;
    let mut f = BytesMut::new();
    f.put_i32(12);
    f.put_i16(ApiKey::ApiVersions as i16);
    f.put_i16(99);
    f.put_i32(4242);
    f.put_i16(-1);
    f.put_u8(0);
    f.put_u8(0);
    c.send_bytes(&f).await;
    let mut resp = c.read_frame().await.expect("an answer");
    use bytes::Buf;
    assert_eq!(resp.get_i32(), 4242, "correlation id");
    assert_eq!(resp.get_i16(), ResponseError::UnsupportedVersion.code());
    let n = resp.get_i32();
    assert_eq!(n as usize, kelp::protocol::versions::SUPPORTED.len());

    // A corrupt batch (one flipped byte): CORRUPT_MESSAGE, connection stays usable.
    let topic = common::unique_name("bad");
    common::create_topic_raw(kelp.addr, &topic, 1).await;
    let good = batch(10);
    let mut bad = good.to_vec();
    let last = bad.len() - 1;
    bad[last] ^= 0x55;
    assert_eq!(
        produce_code(&kelp, &topic, Bytes::from(bad)).await,
        ResponseError::CorruptMessage.code()
    );
    // Bytes that are no batch at all: an old magic byte, then garbage behind a v2 magic.
    assert_eq!(
        produce_code(&kelp, &topic, Bytes::from_static(&[0u8; 70])).await,
        ResponseError::InvalidRecord.code()
    );
    let mut garbage = vec![0xabu8; 70];
    garbage[8..12].copy_from_slice(&58i32.to_be_bytes());
    garbage[16] = 2;
    assert_eq!(
        produce_code(&kelp, &topic, Bytes::from(garbage)).await,
        ResponseError::CorruptMessage.code()
    );
    // A batch over the configured maximum.
    assert_eq!(
        produce_code(&kelp, &topic, batch(20_000)).await,
        ResponseError::MessageTooLarge.code()
    );
    // A good batch after all that is stored at offset 0: nothing bad was stored.
    assert_eq!(produce_code(&kelp, &topic, good).await, 0);
    // An unknown topic.
    assert_eq!(
        produce_code(&kelp, "no-such-topic-here", batch(1)).await,
        ResponseError::UnknownTopicOrPartition.code()
    );

    still_serving(&kelp).await;
    assert!(kelp.stop().await);
}

/// One Produce request: `parts` are (partition, records), all to `topic`; the error code of
/// each part, in order.
async fn produce_codes(kelp: &Kelp, topic: &str, parts: Vec<(i32, Bytes)>) -> Vec<i16> {
    let answers = common::raw::produce(kelp.addr, topic, parts).await;
    answers.iter().map(|p| p.error_code).collect()
}

/// Small compressed batches that expand a lot: the request's decompressed bytes are bounded
/// all together, not per batch, and a partition named twice in one request is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_cannot_expand_beyond_its_limit_or_name_a_partition_twice() {
    let seaweedfs = common::seaweedfs().await;
    let limit = 1024 * 1024;
    let kelp = Kelp::start(&seaweedfs, &["--max-uncompressed-bytes", &limit.to_string()]).await;
    let topic = common::unique_name("bomb");
    common::create_topic_raw(kelp.addr, &topic, 4).await;
    // 600 KB of zeros compresses to a few hundred bytes.
    let bomb = common::raw::compressed_batch_of(
        vec![(None, Bytes::from(vec![0u8; 600 * 1024]), 1)],
        kafka_protocol::records::Compression::Zstd,
    );
    assert!(bomb.len() < 10_000, "{}", bomb.len());
    let parts = (0..4).map(|p| (p, bomb.clone())).collect();
    let too_large = ResponseError::MessageTooLarge.code();
    assert_eq!(
        produce_codes(&kelp, &topic, parts).await,
        vec![0, too_large, too_large, too_large],
        "the first part fits in the request's 1 MiB, the rest would go beyond it"
    );
    let invalid = ResponseError::InvalidRequest.code();
    let twice = vec![(1, batch(10)), (2, batch(10)), (1, batch(10))];
    assert_eq!(produce_codes(&kelp, &topic, twice).await, vec![invalid, 0, invalid]);
    // Partition 1 holds nothing from the refused parts: its first record lands at offset 0.
    let again = vec![(1, batch(10))];
    assert_eq!(produce_codes(&kelp, &topic, again).await, vec![0]);
    let mut c = Raw::connect(kelp.addr).await;
    let offsets = kafka_protocol::messages::ListOffsetsRequest::default().with_topics(vec![
        kafka_protocol::messages::list_offsets_request::ListOffsetsTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.clone())))
            .with_partitions(vec![
                kafka_protocol::messages::list_offsets_request::ListOffsetsPartition::default()
                    .with_partition_index(1)
                    .with_timestamp(-1),
            ]),
    ]);
    match c.call(ApiKey::ListOffsets, 7, RequestKind::ListOffsets(offsets)).await {
        ResponseKind::ListOffsets(r) => assert_eq!(r.topics[0].partitions[0].offset, 1),
        other => panic!("unexpected {other:?}"),
    }
    still_serving(&kelp).await;
    assert!(kelp.stop().await);
}

use tokio::io::AsyncWriteExt;

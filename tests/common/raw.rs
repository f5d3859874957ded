//! A raw Kafka client over a TcpStream for exact-version and malformed-input tests: encode a
//! request with the wire library at a chosen version, read the response frame, decode it.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const TIMEOUT: Duration = Duration::from_secs(30);

pub struct Raw {
    pub stream: TcpStream,
    correlation_id: i32,
    /// The client id put in every request header ("raw-test" unless changed).
    pub client_id: String,
}

impl Raw {
    pub async fn connect(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr).await.expect("connect to kelp");
        Raw { stream, correlation_id: 0, client_id: "raw-test".into() }
    }

    /// A connection to a peer listener that has passed the peer handshake with `secret`, as
    /// another kelp's would.
    pub async fn connect_peer(addr: SocketAddr, secret: &kelp::peer::handshake::Secret) -> Raw {
        let mut raw = Raw::connect(addr).await;
        tokio::time::timeout(TIMEOUT, kelp::peer::handshake::connect(&mut raw.stream, secret))
            .await
            .expect("handshake in time")
            .expect("the peer listener accepts the secret");
        raw
    }

    /// Encode `req` at `version` with the right header, without sending it.
    pub fn frame(&mut self, key: ApiKey, version: i16, req: &RequestKind) -> BytesMut {
        self.correlation_id += 1;
        let mut body = BytesMut::new();
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(StrBytes::from_string(self.client_id.clone())));
        header.encode(&mut body, key.request_header_version(version)).expect("header encodes");
        req.encode(&mut body, version).expect("request encodes");
        let mut out = BytesMut::new();
        out.put_i32(body.len() as i32);
        out.extend_from_slice(&body);
        out
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// Read one response frame (without the length prefix); `None` if the connection closed.
    pub async fn read_frame(&mut self) -> Option<Bytes> {
        let mut len = [0u8; 4];
        match tokio::time::timeout(TIMEOUT, self.stream.read_exact(&mut len))
            .await
            .expect("response in time")
        {
            Ok(_) => {}
            Err(_) => return None,
        }
        let n = i32::from_be_bytes(len) as usize;
        let mut buf = vec![0u8; n];
        tokio::time::timeout(TIMEOUT, self.stream.read_exact(&mut buf))
            .await
            .expect("response body in time")
            .ok()?;
        Some(Bytes::from(buf))
    }

    /// Whether the peer closed the connection (EOF or reset) within the timeout.
    pub async fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(
            tokio::time::timeout(TIMEOUT, self.stream.read(&mut b)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }

    /// Send `body` as `key` at `version` behind a request header v1 (the non-flexible one
    /// every version the wire library dropped uses) and return the response body after its
    /// header v0.
    pub async fn call_body(&mut self, key: ApiKey, version: i16, body: &[u8]) -> Bytes {
        self.correlation_id += 1;
        let mut frame = BytesMut::new();
        frame.put_i32(0);
        frame.put_i16(key as i16);
        frame.put_i16(version);
        frame.put_i32(self.correlation_id);
        frame.put_i16(self.client_id.len() as i16);
        frame.put_slice(self.client_id.as_bytes());
        frame.put_slice(body);
        let len = (frame.len() - 4) as i32;
        frame[..4].copy_from_slice(&len.to_be_bytes());
        self.send_bytes(&frame).await;
        let mut resp = self
            .read_frame()
            .await
            .unwrap_or_else(|| panic!("{key:?} v{version}: connection closed"));
        assert_eq!(resp.get_i32(), self.correlation_id, "correlation id");
        resp
    }

    /// Send a request and decode its response.
    pub async fn call(&mut self, key: ApiKey, version: i16, req: RequestKind) -> ResponseKind {
        let frame = self.frame(key, version, &req);
        self.send_bytes(&frame).await;
        let mut resp = self
            .read_frame()
            .await
            .unwrap_or_else(|| panic!("{key:?} v{version}: connection closed"));
        let header_version =
            if key == ApiKey::ApiVersions { 0 } else { key.response_header_version(version) };
        let header = ResponseHeader::decode(&mut resp, header_version).expect("response header");
        assert_eq!(header.correlation_id, self.correlation_id, "correlation id");
        let r = ResponseKind::decode(key, &mut resp, version)
            .unwrap_or_else(|e| panic!("{key:?} v{version} response: {e}"));
        assert_eq!(resp.remaining(), 0, "{key:?} v{version}: trailing bytes in response");
        r
    }
}

/// Create a topic through kelp with CreateTopics v7 and assert it worked.
/// One Produce v9 request (acks=all) to `topic` with `parts` as (partition, records), on a
/// fresh connection: each partition's answer, in the order answered.
pub async fn produce(
    addr: SocketAddr,
    topic: &str,
    parts: Vec<(i32, Bytes)>,
) -> Vec<kafka_protocol::messages::produce_response::PartitionProduceResponse> {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ProduceRequest, TopicName};
    let data = parts
        .into_iter()
        .map(|(i, r)| PartitionProduceData::default().with_index(i).with_records(Some(r)))
        .collect();
    let name = TopicName(StrBytes::from_string(topic.to_string()));
    let req =
        ProduceRequest::default().with_acks(-1).with_timeout_ms(10_000).with_topic_data(vec![
            TopicProduceData::default().with_name(name).with_partition_data(data),
        ]);
    let mut c = Raw::connect(addr).await;
    match c.call(ApiKey::Produce, 9, RequestKind::Produce(req)).await {
        ResponseKind::Produce(mut r) => r.responses.swap_remove(0).partition_responses,
        other => panic!("unexpected {other:?}"),
    }
}

pub async fn create_topic_raw(addr: SocketAddr, name: &str, partitions: i32) {
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    use kafka_protocol::messages::{CreateTopicsRequest, TopicName};
    let mut c = Raw::connect(addr).await;
    let req = CreateTopicsRequest::default().with_timeout_ms(30_000).with_topics(vec![
        CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_string(name.to_string())))
            .with_num_partitions(partitions)
            .with_replication_factor(-1),
    ]);
    match c.call(ApiKey::CreateTopics, 7, RequestKind::CreateTopics(req)).await {
        ResponseKind::CreateTopics(r) => {
            assert_eq!(r.topics[0].error_code, 0, "create {name}: {:?}", r.topics[0].error_message)
        }
        other => panic!("unexpected {other:?}"),
    }
}

/// One uncompressed magic-2 record batch (exactly one, as Produce v3+ requires), encoded by the
/// wire library, holding a record per `(key, value, timestamp)`.
pub fn batch_of(records: Vec<(Option<Bytes>, Bytes, i64)>) -> Bytes {
    compressed_batch_of(records, kafka_protocol::records::Compression::None)
}

/// [`batch_of`] with the records compressed by `compression`.
pub fn compressed_batch_of(
    records: Vec<(Option<Bytes>, Bytes, i64)>,
    compression: kafka_protocol::records::Compression,
) -> Bytes {
    use kafka_protocol::records::{Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};
    let recs: Vec<Record> = records
        .into_iter()
        .enumerate()
        .map(|(i, (key, value, timestamp))| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // The library starts a new batch wherever offset - sequence changes; this keeps
            // every record in one batch (as a producer sends them) with base sequence -1.
            sequence: i as i32 - 1,
            timestamp,
            key,
            value: Some(value),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(&mut buf, &recs, &RecordEncodeOptions { version: 2, compression })
        .expect("batch encodes");
    buf.freeze()
}

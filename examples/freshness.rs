//! How long a record produced through one kelp takes to reach a consumer waiting on another.
//!
//! Starts a throw-away SeaweedFS and two (or `--kelps N`) kelps sharing it over the peer link,
//! creates a one-partition topic, then `--records` times (default 300): a consumer on the last
//! kelp sends a Fetch that waits (min_bytes 1, max_wait 5 s) at the partition's end, a
//! producer on the first kelp sends one small record (acks=all) 30-300 ms later, and the time
//! from sending the Produce to receiving the Fetch answer holding that record is noted.
//! Prints p50/p90/p99/max in milliseconds. At low load (one record at a time), so the figure
//! is the freshness of a waiting consumer, not throughput.
//!
//! ```text
//! cargo run --release --example freshness -- --records 300 --kelps 3
//! ```

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use kelp::config::Config;
use kelp::embedded::SeaweedFs;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One Kafka connection, one request at a time.
struct Conn {
    stream: TcpStream,
    correlation: i32,
}

impl Conn {
    async fn connect(addr: SocketAddr) -> anyhow::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn { stream, correlation: 0 })
    }

    async fn call(
        &mut self,
        key: ApiKey,
        version: i16,
        req: RequestKind,
    ) -> anyhow::Result<ResponseKind> {
        self.correlation += 1;
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_static_str("freshness")));
        let mut body = BytesMut::new();
        header.encode(&mut body, key.request_header_version(version))?;
        req.encode(&mut body, version)?;
        self.stream.write_all(&(body.len() as u32).to_be_bytes()).await?;
        self.stream.write_all(&body).await?;
        let len = self.stream.read_u32().await? as usize;
        let mut buf = vec![0u8; len];
        self.stream.read_exact(&mut buf).await?;
        let mut buf = Bytes::from(buf);
        let h = ResponseHeader::decode(&mut buf, key.response_header_version(version))?;
        if h.correlation_id != self.correlation {
            bail!("answer to another request");
        }
        ResponseKind::decode(key, &mut buf, version)
    }
}

fn name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_string()))
}

fn one_record(value: &str) -> anyhow::Result<Bytes> {
    let record = Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: 0,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp: 0,
        key: None,
        value: Some(Bytes::from(value.to_string())),
        headers: Default::default(),
    };
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions { version: 2, compression: Compression::None };
    RecordBatchEncoder::encode(&mut buf, [&record], &options)?;
    Ok(buf.freeze())
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut records = 300usize;
    let mut kelps = 2usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--records" => records = args.next().context("--records N")?.parse()?,
            "--kelps" => kelps = args.next().context("--kelps N")?.parse()?,
            other => bail!("unknown argument {other} (--records N, --kelps N)"),
        }
    }
    if kelps < 2 {
        bail!("--kelps must be at least 2");
    }
    let seaweedfs = SeaweedFs::start(Duration::from_secs(90)).await?;
    let a = seaweedfs.addrs();
    let mut running = Vec::new();
    for _ in 0..kelps {
        let config = Config::from_args([
            "--listen",
            "127.0.0.1:0",
            "--master",
            &a.master,
            "--filer",
            &a.filer,
            "--peer-listen",
            "127.0.0.1:0",
            "--peer-allow-unauthenticated",
            "true",
        ])?;
        kelp::wait_for_seaweedfs(&config, Duration::from_secs(60)).await?;
        running.push(kelp::start(config).await?);
    }
    let producer_addr = running[0].kafka_addr;
    let consumer_addr = running[kelps - 1].kafka_addr;
    let topic = format!("freshness-{}", std::process::id());
    let mut producer = Conn::connect(producer_addr).await?;
    let create = CreateTopicsRequest::default().with_timeout_ms(30_000).with_topics(vec![
        CreatableTopic::default()
            .with_name(name(&topic))
            .with_num_partitions(1)
            .with_replication_factor(-1),
    ]);
    producer.call(ApiKey::CreateTopics, 7, RequestKind::CreateTopics(create)).await?;

    let produce = |value: String| -> anyhow::Result<RequestKind> {
        Ok(RequestKind::Produce(
            ProduceRequest::default().with_acks(-1).with_timeout_ms(10_000).with_topic_data(vec![
                TopicProduceData::default().with_name(name(&topic)).with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(one_record(&value)?)),
                ]),
            ]),
        ))
    };
    let fetch = |offset: i64| {
        RequestKind::Fetch(
            FetchRequest::default()
                .with_max_wait_ms(5_000)
                .with_min_bytes(1)
                .with_max_bytes(1 << 20)
                .with_session_epoch(-1)
                .with_topics(vec![FetchTopic::default().with_topic(name(&topic)).with_partitions(
                    vec![
                        FetchPartition::default()
                            .with_partition(0)
                            .with_fetch_offset(offset)
                            .with_partition_max_bytes(1 << 20),
                    ],
                )]),
        )
    };
    // The first record makes the first kelp the partition's writer.
    producer.call(ApiKey::Produce, 9, produce("warm-up".into())?).await?;
    let mut next = 1i64;
    let mut took = Vec::with_capacity(records);
    for i in 0..records {
        let mut consumer = Conn::connect(consumer_addr).await?;
        let req = fetch(next);
        let waiting = tokio::spawn(async move { consumer.call(ApiKey::Fetch, 12, req).await });
        // Let the Fetch reach its wait, then produce at a varying point of it (as a record
        // arrives at any moment of a real consumer's wait): 30-300 ms in.
        tokio::time::sleep(Duration::from_millis(30 + (i as u64 * 7919) % 271)).await;
        let sent = Instant::now();
        producer.call(ApiKey::Produce, 9, produce(format!("r{i}"))?).await?;
        let ResponseKind::Fetch(answer) = waiting.await?? else { bail!("not a Fetch answer") };
        let arrived = sent.elapsed();
        let mut bytes = answer.responses[0].partitions[0].records.clone().unwrap_or_default();
        let offsets: Vec<i64> = RecordBatchDecoder::decode_all(&mut bytes)?
            .into_iter()
            .flat_map(|s| s.records)
            .map(|r| r.offset)
            .collect();
        if offsets.first() != Some(&next) {
            bail!("record {i}: expected offset {next}, the fetch answered {offsets:?}");
        }
        next += offsets.len() as i64;
        took.push(arrived);
    }
    took.sort();
    println!(
        "{records} records, {kelps} kelps, produce on the first, fetch waiting on the last: \
         p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&took, 0.5),
        percentile(&took, 0.9),
        percentile(&took, 0.99),
        percentile(&took, 1.0),
    );
    for k in running {
        k.shutdown().await;
    }
    Ok(())
}

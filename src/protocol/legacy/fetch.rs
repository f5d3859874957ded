//! Fetch v0-v3.
//!
//! request  v0-v2: replica_id i32, max_wait_ms i32, min_bytes i32,
//!                 [topic string, [partition i32, fetch_offset i64, partition_max_bytes i32]]
//! request  v3:    v0 + max_bytes i32 after min_bytes
//! response v0:    [topic string, [partition i32, error_code i16, high_watermark i64, records]]
//! response v1-v3: throttle_time_ms i32, then v0
//! The records are message sets: magic 0 for v0-v1, magic 1 (with timestamps) for v2-v3;
//! `api::fetch` writes them in that format for these versions.

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse, TopicName};

use super::wire;

pub fn decode(buf: &mut Bytes, version: i16) -> anyhow::Result<FetchRequest> {
    let replica_id = wire::i32(buf)?;
    let max_wait_ms = wire::i32(buf)?;
    let min_bytes = wire::i32(buf)?;
    // v0-v2 have no response-wide limit; Kafka reads them as the largest one.
    let max_bytes = if version >= 3 { wire::i32(buf)? } else { i32::MAX };
    let mut topics = Vec::new();
    for _ in 0..wire::count(buf, 6)? {
        let topic = TopicName(wire::string(buf)?);
        let mut partitions = Vec::new();
        for _ in 0..wire::count(buf, 16)? {
            partitions.push(
                FetchPartition::default()
                    .with_partition(wire::i32(buf)?)
                    .with_fetch_offset(wire::i64(buf)?)
                    .with_partition_max_bytes(wire::i32(buf)?),
            );
        }
        topics.push(FetchTopic::default().with_topic(topic).with_partitions(partitions));
    }
    wire::end(buf)?;
    Ok(FetchRequest::default()
        .with_replica_id(BrokerId(replica_id))
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(min_bytes)
        .with_max_bytes(max_bytes)
        .with_topics(topics))
}

pub fn encode_response(r: &FetchResponse, version: i16, buf: &mut BytesMut) -> anyhow::Result<()> {
    use bytes::BufMut;
    if version >= 1 {
        buf.put_i32(r.throttle_time_ms);
    }
    wire::put_count(buf, r.responses.len())?;
    for t in &r.responses {
        wire::put_string(buf, &t.topic.0)?;
        wire::put_count(buf, t.partitions.len())?;
        for p in &t.partitions {
            buf.put_i32(p.partition_index);
            buf.put_i16(p.error_code);
            buf.put_i64(p.high_watermark);
            // An empty message set rather than null: some old clients cannot read null.
            wire::put_bytes(buf, Some(p.records.as_deref().unwrap_or_default()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};

    fn request(version: i16) -> Bytes {
        let mut b = BytesMut::new();
        b.put_i32(-1);
        b.put_i32(500);
        b.put_i32(1);
        if version >= 3 {
            b.put_i32(1 << 20);
        }
        b.put_i32(1);
        wire::put_string(&mut b, "t").unwrap();
        b.put_i32(2);
        for p in 0..2 {
            b.put_i32(p);
            b.put_i64(7 + i64::from(p));
            b.put_i32(4096);
        }
        b.freeze()
    }

    #[test]
    fn every_version_decodes_and_truncation_is_an_error() {
        for v in 0..=3 {
            let bytes = request(v);
            let r = decode(&mut bytes.clone(), v).unwrap();
            assert_eq!(r.max_wait_ms, 500);
            assert_eq!(r.max_bytes, if v >= 3 { 1 << 20 } else { i32::MAX });
            assert_eq!(&*r.topics[0].topic.0, "t");
            let p = &r.topics[0].partitions[1];
            assert_eq!((p.partition, p.fetch_offset, p.partition_max_bytes), (1, 8, 4096));
            for cut in 0..bytes.len() {
                assert!(decode(&mut bytes.slice(..cut), v).is_err(), "v{v} cut {cut}");
            }
        }
    }

    #[test]
    fn responses_carry_throttle_from_v1_and_records_as_given() {
        let p = PartitionData::default()
            .with_partition_index(3)
            .with_high_watermark(9)
            .with_records(Some(Bytes::from_static(b"set")));
        let r = FetchResponse::default().with_throttle_time_ms(5).with_responses(vec![
            FetchableTopicResponse::default()
                .with_topic(TopicName(kafka_protocol::protocol::StrBytes::from_static_str("t")))
                .with_partitions(vec![p]),
        ]);
        let mut v0 = BytesMut::new();
        encode_response(&r, 0, &mut v0).unwrap();
        let want: &[u8] = &[
            0, 0, 0, 1, 0, 1, b't', 0, 0, 0, 1, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0,
            3, b's', b'e', b't',
        ];
        assert_eq!(&v0[..], want);
        let mut v2 = BytesMut::new();
        encode_response(&r, 2, &mut v2).unwrap();
        assert_eq!(&v2[..4], &[0, 0, 0, 5]);
        assert_eq!(&v2[4..], want);
    }
}

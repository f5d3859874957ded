//! ListOffsets v0.
//!
//! request:  replica_id i32, [topic string, [partition i32, timestamp i64, max_num_offsets i32]]
//! response: [topic string, [partition i32, error_code i16, old_style_offsets [i64]]]
//! v0 asked for up to `max_num_offsets` segment start offsets before `timestamp`. kelp has
//! no segments: it answers the one offset v1 would (earliest, latest, or the first at or
//! after the timestamp), or none when there is no such offset.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{BrokerId, ListOffsetsRequest, ListOffsetsResponse, TopicName};

use super::wire;

pub fn decode(buf: &mut Bytes) -> anyhow::Result<ListOffsetsRequest> {
    let replica_id = wire::i32(buf)?;
    let mut topics = Vec::new();
    for _ in 0..wire::count(buf, 6)? {
        let name = TopicName(wire::string(buf)?);
        let mut partitions = Vec::new();
        for _ in 0..wire::count(buf, 16)? {
            let index = wire::i32(buf)?;
            let timestamp = wire::i64(buf)?;
            let _max_num_offsets = wire::i32(buf)?;
            partitions.push(
                ListOffsetsPartition::default()
                    .with_partition_index(index)
                    .with_timestamp(timestamp),
            );
        }
        topics.push(ListOffsetsTopic::default().with_name(name).with_partitions(partitions));
    }
    wire::end(buf)?;
    Ok(ListOffsetsRequest::default().with_replica_id(BrokerId(replica_id)).with_topics(topics))
}

pub fn encode_response(r: &ListOffsetsResponse, buf: &mut BytesMut) -> anyhow::Result<()> {
    wire::put_count(buf, r.topics.len())?;
    for t in &r.topics {
        wire::put_string(buf, &t.name.0)?;
        wire::put_count(buf, t.partitions.len())?;
        for p in &t.partitions {
            buf.put_i32(p.partition_index);
            buf.put_i16(p.error_code);
            if p.error_code == 0 && p.offset >= 0 {
                buf.put_i32(1);
                buf.put_i64(p.offset);
            } else {
                buf.put_i32(0);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::list_offsets_response::{
        ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
    };
    use kafka_protocol::protocol::StrBytes;

    #[test]
    fn a_v0_request_decodes_and_truncation_is_an_error() {
        let mut b = BytesMut::new();
        b.put_i32(-1);
        b.put_i32(1);
        wire::put_string(&mut b, "t").unwrap();
        b.put_i32(1);
        b.put_i32(2);
        b.put_i64(-2);
        b.put_i32(1);
        let bytes = b.freeze();
        let r = decode(&mut bytes.clone()).unwrap();
        assert_eq!(r.topics[0].partitions[0].partition_index, 2);
        assert_eq!(r.topics[0].partitions[0].timestamp, -2);
        for cut in 0..bytes.len() {
            assert!(decode(&mut bytes.slice(..cut)).is_err());
        }
    }

    #[test]
    fn an_offset_becomes_a_one_element_array_and_none_an_empty_one() {
        let part = |i, offset| {
            ListOffsetsPartitionResponse::default().with_partition_index(i).with_offset(offset)
        };
        let r = ListOffsetsResponse::default().with_topics(vec![
            ListOffsetsTopicResponse::default()
                .with_name(TopicName(StrBytes::from_static_str("t")))
                .with_partitions(vec![part(0, 42), part(1, -1)]),
        ]);
        let mut out = BytesMut::new();
        encode_response(&r, &mut out).unwrap();
        let mut want = vec![0, 0, 0, 1, 0, 1, b't', 0, 0, 0, 2];
        want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        want.extend_from_slice(&42i64.to_be_bytes());
        want.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&out[..], &want[..]);
    }
}

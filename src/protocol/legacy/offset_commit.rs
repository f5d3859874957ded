//! OffsetCommit v0-v1 requests (their responses are v2's layout, which the library writes).
//!
//! v0: group_id string, [topic string, [partition i32, offset i64, metadata nullable string]]
//! v1: group_id string, generation_id i32, member_id string,
//!     [topic string, [partition i32, offset i64, commit_timestamp i64, metadata]]
//! Kafka kept v0 commits in ZooKeeper; kelp treats them as standalone commits (generation -1,
//! no member), which is what they were. v1's per-partition timestamp is dropped: kelp stamps
//! every commit with its own clock, as v2+ does.

use bytes::Bytes;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::{GroupId, OffsetCommitRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::wire;

pub fn decode(buf: &mut Bytes, version: i16) -> anyhow::Result<OffsetCommitRequest> {
    let group_id = GroupId(wire::string(buf)?);
    let (generation, member_id) = if version >= 1 {
        (wire::i32(buf)?, wire::string(buf)?)
    } else {
        (-1, StrBytes::default())
    };
    let partition_len = if version >= 1 { 22 } else { 14 };
    let mut topics = Vec::new();
    for _ in 0..wire::count(buf, 6)? {
        let name = TopicName(wire::string(buf)?);
        let mut partitions = Vec::new();
        for _ in 0..wire::count(buf, partition_len)? {
            let index = wire::i32(buf)?;
            let offset = wire::i64(buf)?;
            if version >= 1 {
                let _commit_timestamp = wire::i64(buf)?;
            }
            partitions.push(
                OffsetCommitRequestPartition::default()
                    .with_partition_index(index)
                    .with_committed_offset(offset)
                    .with_committed_leader_epoch(-1)
                    .with_committed_metadata(wire::nullable_string(buf)?),
            );
        }
        topics
            .push(OffsetCommitRequestTopic::default().with_name(name).with_partitions(partitions));
    }
    wire::end(buf)?;
    Ok(OffsetCommitRequest::default()
        .with_group_id(group_id)
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(member_id)
        .with_retention_time_ms(-1)
        .with_topics(topics))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, BytesMut};

    fn request(version: i16) -> Bytes {
        let mut b = BytesMut::new();
        wire::put_string(&mut b, "g").unwrap();
        if version >= 1 {
            b.put_i32(3);
            wire::put_string(&mut b, "m").unwrap();
        }
        b.put_i32(1);
        wire::put_string(&mut b, "t").unwrap();
        b.put_i32(1);
        b.put_i32(0);
        b.put_i64(17);
        if version >= 1 {
            b.put_i64(123);
        }
        wire::put_string(&mut b, "meta").unwrap();
        b.freeze()
    }

    #[test]
    fn v0_is_a_standalone_commit_and_v1_carries_the_member() {
        for v in 0..=1 {
            let bytes = request(v);
            let r = decode(&mut bytes.clone(), v).unwrap();
            assert_eq!(&*r.group_id.0, "g");
            let want = if v == 0 { (-1, "") } else { (3, "m") };
            assert_eq!((r.generation_id_or_member_epoch, &*r.member_id), want);
            let p = &r.topics[0].partitions[0];
            assert_eq!(p.committed_offset, 17);
            assert_eq!(p.committed_metadata.as_deref(), Some("meta"));
            for cut in 0..bytes.len() {
                assert!(decode(&mut bytes.slice(..cut), v).is_err(), "v{v} cut {cut}");
            }
        }
    }
}

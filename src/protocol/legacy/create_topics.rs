//! CreateTopics v0 requests and v0-v1 responses (v1 requests are v2's layout).
//!
//! request  v0: [name string, num_partitions i32, replication_factor i16,
//!               [partition i32, [broker_id i32]], [config_name string, value nullable string]],
//!              timeout_ms i32 (v1 adds validate_only bool)
//! response v0: [name string, error_code i16]
//! response v1: [name string, error_code i16, error_message nullable string]
//! (v2 adds throttle_time_ms in front.)

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::{
    CreatableReplicaAssignment, CreatableTopic, CreatableTopicConfig,
};
use kafka_protocol::messages::{BrokerId, CreateTopicsRequest, CreateTopicsResponse, TopicName};

use super::wire;

pub fn decode_v0(buf: &mut Bytes) -> anyhow::Result<CreateTopicsRequest> {
    let mut topics = Vec::new();
    for _ in 0..wire::count(buf, 16)? {
        let name = TopicName(wire::string(buf)?);
        let num_partitions = wire::i32(buf)?;
        let replication_factor = wire::i16(buf)?;
        let mut assignments = Vec::new();
        for _ in 0..wire::count(buf, 8)? {
            let index = wire::i32(buf)?;
            let mut brokers = Vec::new();
            for _ in 0..wire::count(buf, 4)? {
                brokers.push(BrokerId(wire::i32(buf)?));
            }
            assignments.push(
                CreatableReplicaAssignment::default()
                    .with_partition_index(index)
                    .with_broker_ids(brokers),
            );
        }
        let mut configs = Vec::new();
        for _ in 0..wire::count(buf, 4)? {
            configs.push(
                CreatableTopicConfig::default()
                    .with_name(wire::string(buf)?)
                    .with_value(wire::nullable_string(buf)?),
            );
        }
        topics.push(
            CreatableTopic::default()
                .with_name(name)
                .with_num_partitions(num_partitions)
                .with_replication_factor(replication_factor)
                .with_assignments(assignments)
                .with_configs(configs),
        );
    }
    let timeout_ms = wire::i32(buf)?;
    wire::end(buf)?;
    Ok(CreateTopicsRequest::default().with_topics(topics).with_timeout_ms(timeout_ms))
}

pub fn encode_response(
    r: &CreateTopicsResponse,
    version: i16,
    buf: &mut BytesMut,
) -> anyhow::Result<()> {
    wire::put_count(buf, r.topics.len())?;
    for t in &r.topics {
        wire::put_string(buf, &t.name.0)?;
        buf.put_i16(t.error_code);
        if version >= 1 {
            wire::put_nullable_string(buf, t.error_message.as_deref())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
    use kafka_protocol::protocol::StrBytes;

    #[test]
    fn a_v0_request_decodes_and_truncation_is_an_error() {
        let mut b = BytesMut::new();
        b.put_i32(1);
        wire::put_string(&mut b, "t").unwrap();
        b.put_i32(3);
        b.put_i16(1);
        b.put_i32(0);
        b.put_i32(1);
        wire::put_string(&mut b, "retention.ms").unwrap();
        wire::put_string(&mut b, "1000").unwrap();
        b.put_i32(5000);
        let bytes = b.freeze();
        let r = decode_v0(&mut bytes.clone()).unwrap();
        assert_eq!((r.topics[0].num_partitions, r.timeout_ms, r.validate_only), (3, 5000, false));
        assert_eq!(r.topics[0].configs[0].value.as_deref(), Some("1000"));
        for cut in 0..bytes.len() {
            assert!(decode_v0(&mut bytes.slice(..cut)).is_err());
        }
    }

    #[test]
    fn v1_adds_the_message() {
        let r = CreateTopicsResponse::default().with_topics(vec![
            CreatableTopicResult::default()
                .with_name(TopicName(StrBytes::from_static_str("t")))
                .with_error_code(36)
                .with_error_message(Some(StrBytes::from_static_str("x"))),
        ]);
        let mut v0 = BytesMut::new();
        encode_response(&r, 0, &mut v0).unwrap();
        assert_eq!(&v0[..], &[0, 0, 0, 1, 0, 1, b't', 0, 36]);
        let mut v1 = BytesMut::new();
        encode_response(&r, 1, &mut v1).unwrap();
        assert_eq!(&v1[..], &[0, 0, 0, 1, 0, 1, b't', 0, 36, 0, 1, b'x']);
    }
}

//! DeleteTopics v0 responses (v0 requests are v1's layout, which the library reads).
//!
//! response v0: [name string, error_code i16]; v1 adds throttle_time_ms in front.

use bytes::{BufMut, BytesMut};
use kafka_protocol::messages::DeleteTopicsResponse;

use super::wire;

pub fn encode_response(r: &DeleteTopicsResponse, buf: &mut BytesMut) -> anyhow::Result<()> {
    wire::put_count(buf, r.responses.len())?;
    for t in &r.responses {
        wire::put_string(buf, t.name.as_ref().map_or("", |n| &n.0))?;
        buf.put_i16(t.error_code);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::TopicName;
    use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
    use kafka_protocol::protocol::StrBytes;

    #[test]
    fn names_and_codes_without_throttle() {
        let r = DeleteTopicsResponse::default().with_throttle_time_ms(9).with_responses(vec![
            DeletableTopicResult::default()
                .with_name(Some(TopicName(StrBytes::from_static_str("t"))))
                .with_error_code(3),
        ]);
        let mut out = BytesMut::new();
        encode_response(&r, &mut out).unwrap();
        assert_eq!(&out[..], &[0, 0, 0, 1, 0, 1, b't', 0, 3]);
    }
}

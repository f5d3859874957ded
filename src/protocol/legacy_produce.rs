//! Produce v0-v2, which the wire library no longer decodes.
//!
//! kelp advertises Produce from v0 (see `versions.rs`), so it must serve these versions. The
//! request and response layouts are fixed-width and non-flexible:
//! request  v0-v2: acks i16, timeout_ms i32, [topic string, [partition i32, records bytes]]
//! response v0:    [topic, [partition, error_code i16, base_offset i64]]
//! response v1:    v0 + throttle_time_ms i32 at the end
//! response v2:    v1 + log_append_time_ms i64 after base_offset
//! The records inside are message sets v0/v1, decoded by `records::legacy`.

use bytes::{Buf, BufMut, Bytes, BytesMut};

#[derive(Debug, Clone, PartialEq)]
pub struct ProduceRequest {
    pub acks: i16,
    pub timeout_ms: i32,
    pub topics: Vec<TopicData>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TopicData {
    pub name: String,
    pub partitions: Vec<(i32, Option<Bytes>)>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProduceResponse {
    pub topics: Vec<TopicResponse>,
    pub throttle_time_ms: i32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TopicResponse {
    pub name: String,
    pub partitions: Vec<PartitionResponse>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PartitionResponse {
    pub index: i32,
    pub error_code: i16,
    pub base_offset: i64,
}

fn need(buf: &Bytes, n: usize) -> anyhow::Result<()> {
    anyhow::ensure!(buf.remaining() >= n, "truncated produce request");
    Ok(())
}

fn get_i16(buf: &mut Bytes) -> anyhow::Result<i16> {
    need(buf, 2)?;
    Ok(buf.get_i16())
}

fn get_i32(buf: &mut Bytes) -> anyhow::Result<i32> {
    need(buf, 4)?;
    Ok(buf.get_i32())
}

fn get_count(buf: &mut Bytes) -> anyhow::Result<usize> {
    let n = get_i32(buf)?;
    // Each element takes at least 4 bytes, so a count larger than that is a lie.
    anyhow::ensure!(n >= 0 && (n as usize) <= buf.remaining() / 4 + 1, "bad array length {n}");
    Ok(n as usize)
}

fn get_string(buf: &mut Bytes) -> anyhow::Result<String> {
    let n = get_i16(buf)?;
    anyhow::ensure!(n >= 0, "null topic name");
    need(buf, n as usize)?;
    Ok(String::from_utf8(buf.split_to(n as usize).to_vec())?)
}

impl ProduceRequest {
    pub fn decode(buf: &mut Bytes, _version: i16) -> anyhow::Result<Self> {
        let acks = get_i16(buf)?;
        let timeout_ms = get_i32(buf)?;
        let mut topics = Vec::new();
        for _ in 0..get_count(buf)? {
            let name = get_string(buf)?;
            let mut partitions = Vec::new();
            for _ in 0..get_count(buf)? {
                let index = get_i32(buf)?;
                let len = get_i32(buf)?;
                let records = if len < 0 {
                    None
                } else {
                    need(buf, len as usize)?;
                    Some(buf.split_to(len as usize))
                };
                partitions.push((index, records));
            }
            topics.push(TopicData { name, partitions });
        }
        anyhow::ensure!(!buf.has_remaining(), "trailing bytes after produce request");
        Ok(ProduceRequest { acks, timeout_ms, topics })
    }

    /// Encode (a forwarded request; tests that speak v0-v2 on the wire).
    pub fn encode(&self, buf: &mut BytesMut) {
        buf.put_i16(self.acks);
        buf.put_i32(self.timeout_ms);
        buf.put_i32(self.topics.len() as i32);
        for t in &self.topics {
            buf.put_i16(t.name.len() as i16);
            buf.put_slice(t.name.as_bytes());
            buf.put_i32(t.partitions.len() as i32);
            for (index, records) in &t.partitions {
                buf.put_i32(*index);
                match records {
                    None => buf.put_i32(-1),
                    Some(r) => {
                        buf.put_i32(r.len() as i32);
                        buf.put_slice(r);
                    }
                }
            }
        }
    }
}

impl ProduceResponse {
    /// Decode a response of `version` (a writer's answer to a forwarded request).
    pub fn decode(buf: &mut Bytes, version: i16) -> anyhow::Result<Self> {
        let mut topics = Vec::new();
        for _ in 0..get_count(buf)? {
            let name = get_string(buf)?;
            let mut partitions = Vec::new();
            for _ in 0..get_count(buf)? {
                let index = get_i32(buf)?;
                let error_code = get_i16(buf)?;
                need(buf, 8)?;
                let base_offset = buf.get_i64();
                if version >= 2 {
                    need(buf, 8)?;
                    buf.advance(8);
                }
                partitions.push(PartitionResponse { index, error_code, base_offset });
            }
            topics.push(TopicResponse { name, partitions });
        }
        let throttle_time_ms = if version >= 1 { get_i32(buf)? } else { 0 };
        anyhow::ensure!(!buf.has_remaining(), "trailing bytes after produce response");
        Ok(ProduceResponse { topics, throttle_time_ms })
    }

    pub fn encode(&self, buf: &mut BytesMut, version: i16) {
        buf.put_i32(self.topics.len() as i32);
        for t in &self.topics {
            buf.put_i16(t.name.len() as i16);
            buf.put_slice(t.name.as_bytes());
            buf.put_i32(t.partitions.len() as i32);
            for p in &t.partitions {
                buf.put_i32(p.index);
                buf.put_i16(p.error_code);
                buf.put_i64(p.base_offset);
                if version >= 2 {
                    buf.put_i64(-1); // log_append_time_ms: kelp keeps CreateTime
                }
            }
        }
        if version >= 1 {
            buf.put_i32(self.throttle_time_ms);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trips_and_rejects_truncation() {
        let req = ProduceRequest {
            acks: -1,
            timeout_ms: 1000,
            topics: vec![TopicData {
                name: "t".into(),
                partitions: vec![(0, Some(Bytes::from_static(b"abc"))), (1, None)],
            }],
        };
        let mut buf = BytesMut::new();
        req.encode(&mut buf);
        let bytes = buf.freeze();
        assert_eq!(ProduceRequest::decode(&mut bytes.clone(), 0).unwrap(), req);
        for cut in 0..bytes.len() {
            assert!(ProduceRequest::decode(&mut bytes.slice(..cut), 0).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn response_layout_grows_with_version() {
        let resp = ProduceResponse {
            topics: vec![TopicResponse {
                name: "t".into(),
                partitions: vec![PartitionResponse { index: 0, error_code: 0, base_offset: 7 }],
            }],
            throttle_time_ms: 0,
        };
        let len = |v| {
            let mut b = BytesMut::new();
            resp.encode(&mut b, v);
            b.len()
        };
        assert_eq!(len(0), 4 + 2 + 1 + 4 + 4 + 2 + 8);
        assert_eq!(len(1), len(0) + 4);
        assert_eq!(len(2), len(1) + 8);
        for v in 0..=2 {
            let mut b = BytesMut::new();
            resp.encode(&mut b, v);
            assert_eq!(ProduceResponse::decode(&mut b.freeze(), v).unwrap(), resp, "v{v}");
        }
    }
}

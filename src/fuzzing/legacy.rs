//! Fuzz targets for Produce v0-v2's message sets (magic 0 and 1): structured ones with the
//! CRC-32 of every message recomputed after mutating, and raw bytes with the CRCs fixed up;
//! and for the other versions only Kafka 3.9 still served (`protocol::legacy`): raw bodies
//! behind a valid header of each.

use super::records::{BIG_FIELDS, codec, compress, field, mutate};
use super::{DECOMPRESSION_LIMIT, Gen, Target, some_bytes};
use crate::protocol::versions::SUPPORTED;
use crate::protocol::{self, Body, legacy_produce};
use crate::records::{Record, legacy};
use arbitrary::Unstructured;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::ApiKey;
use std::io::Write;

pub const LEGACY: Target = Target {
    name: "legacy",
    about: "valid v0/v1 message sets (wrappers in every codec) with mutated messages and recomputed CRC-32, alone and inside Produce v0-v2",
    run: legacy_target,
    seeds: legacy_seeds,
    max_len: 8192,
    weight: 15,
    memory_base: 24 * DECOMPRESSION_LIMIT,
    memory_per_byte: 256,
};

pub const LEGACY_REQUEST: Target = Target {
    name: "legacy-request",
    about: "raw bytes as the body of every old (api key, version) protocol::legacy decodes, behind a valid header",
    run: legacy_request,
    seeds: legacy_request_seeds,
    max_len: 4096,
    weight: 10,
    memory_base: 256 * 1024,
    memory_per_byte: 192,
};

pub const LEGACY_BYTES: Target = Target {
    name: "legacy-bytes",
    about: "raw bytes as a Produce v0-v2 body and as a message set with each CRC-32 fixed up",
    run: legacy_bytes,
    seeds: legacy_bytes_seeds,
    max_len: 8192,
    weight: 10,
    memory_base: 12 * DECOMPRESSION_LIMIT,
    memory_per_byte: 64,
};

// === legacy ===

fn put_field(out: &mut Vec<u8>, f: Option<&[u8]>) {
    match f {
        None => out.extend_from_slice(&(-1i32).to_be_bytes()),
        Some(f) => {
            out.extend_from_slice(&(f.len() as i32).to_be_bytes());
            out.extend_from_slice(f);
        }
    }
}

/// One message: `offset, size, crc, body`, the CRC-32 computed over `body` as given.
fn put_message(out: &mut Vec<u8>, body: &[u8], size_delta: i32) {
    out.extend_from_slice(&0i64.to_be_bytes());
    out.extend_from_slice(&((body.len() + 4) as i32 + size_delta).to_be_bytes());
    out.extend_from_slice(&crc32fast::hash(body).to_be_bytes());
    out.extend_from_slice(body);
}

/// A message set of up to four messages (magic 0 or 1), some of them compressed wrappers
/// around an inner set; `expected` gets the records it must decode to. Whether anything
/// was corrupted (then nothing is expected).
fn message_set(
    u: &mut Unstructured,
    depth: u8,
    out: &mut Vec<u8>,
    expected: &mut Vec<Record>,
    decompressed: &mut usize,
    big: &mut usize,
) -> Gen<bool> {
    let mut corrupt = false;
    for _ in 0..u.int_in_range(0..=4u8)? {
        let magic = u.int_in_range(0..=1i8)?;
        let timestamp_ms: i64 = if magic == 1 { u.arbitrary()? } else { -1 };
        let mut body = vec![magic as u8, 0];
        if magic == 1 {
            body.extend_from_slice(&timestamp_ms.to_be_bytes());
        }
        if (depth == 0 || u.ratio(1u8, 16)?) && u.ratio(1u8, 3)? {
            // A wrapper: its value is a compressed message set.
            let mut inner = Vec::new();
            let mut inner_expected = Vec::new();
            corrupt |=
                message_set(u, depth + 1, &mut inner, &mut inner_expected, decompressed, big)?;
            corrupt |= depth > 0; // nested wrappers are refused
            let c = codec(u, false)?;
            *decompressed += inner.len();
            let log_append_time = magic == 1 && u.arbitrary()?;
            body[1] = c.bits() as u8 | if log_append_time { 0x08 } else { 0 };
            put_field(&mut body, None);
            put_field(&mut body, Some(&compress(u, c, &inner)?));
            if log_append_time {
                inner_expected.iter_mut().for_each(|r| r.timestamp_ms = timestamp_ms);
            }
            expected.extend(inner_expected);
        } else {
            let key = field(u, big)?;
            let value = field(u, big)?;
            put_field(&mut body, key.as_deref());
            put_field(&mut body, value.as_deref());
            expected.push(Record { timestamp_ms, key, value, headers: Vec::new() });
        }
        if u.ratio(1u8, 4)? {
            corrupt |= mutate(u, &mut body)?;
        }
        let size_delta = if u.ratio(1u8, 32)? { u.int_in_range(-20..=20)? } else { 0 };
        corrupt |= size_delta != 0;
        put_message(out, &body, size_delta);
    }
    Ok(corrupt)
}

/// Input (through `Unstructured`): a message set, then a Produce v0-v2 request around it
/// (topics, partitions, request-level edits).
fn legacy_target(data: &[u8]) {
    let _ = legacy_gen(&mut Unstructured::new(data));
}

fn legacy_gen(u: &mut Unstructured) -> Gen<()> {
    let mut set = Vec::new();
    let mut expected = Vec::new();
    let mut decompressed = 0;
    let mut big = BIG_FIELDS;
    let corrupt = message_set(u, 0, &mut set, &mut expected, &mut decompressed, &mut big)?;
    let set = Bytes::from(set);
    let result = legacy::decode(set.clone(), &mut { DECOMPRESSION_LIMIT });
    if !corrupt && decompressed <= DECOMPRESSION_LIMIT {
        assert_eq!(result.as_ref().expect("an intact message set decodes"), &expected);
    }
    // The same set inside a Produce v0-v2 request, decoded as the connection and the
    // Produce handler do.
    let version = u.int_in_range(0..=2i16)?;
    // One partition carries the set; the others are short, empty or null.
    let mut topics = Vec::new();
    let mut carried = false;
    for t in 0..u.int_in_range(1..=2u8)? {
        let mut partitions = Vec::new();
        for p in 0..u.int_in_range(1..=2i32)? {
            let records = match u.int_in_range(0..=3u8)? {
                0 => None,
                1 => Some(Bytes::copy_from_slice(some_bytes(u, 16)?)),
                _ if carried => Some(Bytes::new()),
                _ => {
                    carried = true;
                    Some(set.clone())
                }
            };
            partitions.push((p, records));
        }
        topics.push(legacy_produce::TopicData { name: format!("t{t}"), partitions });
    }
    let req =
        legacy_produce::ProduceRequest { acks: u.arbitrary()?, timeout_ms: u.arbitrary()?, topics };
    let mut body = BytesMut::new();
    req.encode(&mut body);
    let mut body = body.to_vec();
    let edited = u.ratio(1u8, 4)? && mutate(u, &mut body)?;
    let mut frame = BytesMut::new();
    frame.put_i16(0); // Produce
    frame.put_i16(version);
    frame.put_i32(1);
    frame.put_i16(-1); // null client id
    frame.put_slice(&body);
    match protocol::decode_request(frame.freeze()) {
        Ok(r) => match r.body {
            Body::LegacyProduce(p) => {
                if !edited {
                    assert_eq!(p, req);
                }
                for t in &p.topics {
                    for (_, records) in &t.partitions {
                        if let Some(records) = records {
                            let _ = legacy::decode(records.clone(), &mut { DECOMPRESSION_LIMIT });
                        }
                    }
                }
            }
            other => panic!("Produce v{version} decoded as {other:?}"),
        },
        Err(e) => assert!(edited, "an intact Produce v{version} request: {e}"),
    }
    Ok(())
}

fn legacy_seeds() -> Vec<Vec<u8>> {
    (0..3u8)
        .map(|v| vec![2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 5, 40, 1, b'k', 40, 1, b'v', 0, 0, v, 0, 1, 2])
        .collect()
}

// === legacy-bytes ===

/// Fix up the CRC-32 of every message whose size fits in `data`.
fn fix_message_crcs(data: &mut [u8]) {
    let mut at = 0;
    while data.len() - at >= 16 {
        let size = i32::from_be_bytes(data[at + 8..at + 12].try_into().expect("4 bytes"));
        let Some(end) = usize::try_from(size).ok().map(|s| at + 12 + s) else { return };
        if size < 4 || end > data.len() {
            return;
        }
        let crc = crc32fast::hash(&data[at + 16..end]);
        data[at + 12..at + 16].copy_from_slice(&crc.to_be_bytes());
        at = end;
    }
}

fn legacy_bytes(data: &[u8]) {
    let mut bytes = Bytes::copy_from_slice(data);
    if let Ok(req) = legacy_produce::ProduceRequest::decode(&mut bytes, 0) {
        for t in &req.topics {
            for (_, records) in &t.partitions {
                if let Some(records) = records {
                    let _ = legacy::decode(records.clone(), &mut { DECOMPRESSION_LIMIT });
                }
            }
        }
    }
    let mut set = data.to_vec();
    fix_message_crcs(&mut set);
    let _ = legacy::decode(Bytes::from(set), &mut { DECOMPRESSION_LIMIT });
}

fn legacy_bytes_seeds() -> Vec<Vec<u8>> {
    let mut set = Vec::new();
    legacy::encode_message(&mut set, 0, 0, None, Some(b"a"));
    legacy::encode_message(&mut set, 1, 1234, Some(b"k"), Some(b""));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&set).expect("writing to a Vec");
    let mut wrapper = vec![1u8, 1];
    wrapper.extend_from_slice(&5i64.to_be_bytes());
    put_field(&mut wrapper, None);
    put_field(&mut wrapper, Some(&gz.finish().expect("writing to a Vec")));
    let mut wrapped = Vec::new();
    put_message(&mut wrapped, &wrapper, 0);
    let req = legacy_produce::ProduceRequest {
        acks: -1,
        timeout_ms: 100,
        topics: vec![legacy_produce::TopicData {
            name: "t".into(),
            partitions: vec![(0, Some(set.clone().into())), (1, None)],
        }],
    };
    let mut body = BytesMut::new();
    req.encode(&mut body);
    vec![set, wrapped, body.to_vec()]
}

// === legacy-request ===

/// Every (api key, version) that `protocol::legacy` decodes, in a fixed order.
fn legacy_versions() -> Vec<(ApiKey, i16)> {
    SUPPORTED
        .iter()
        .filter(|s| s.key != ApiKey::Produce)
        .flat_map(|s| (s.min..=s.max).map(move |v| (s.key, v)))
        .filter(|(k, v)| protocol::legacy::is_legacy(*k, *v))
        .collect()
}

/// The first byte picks the (key, version), the rest is the body. What decodes must survive a
/// round trip at the library's version, as `request` checks.
fn legacy_request(data: &[u8]) {
    let [pick, body @ ..] = data else { return };
    let versions = legacy_versions();
    let (key, version) = versions[*pick as usize % versions.len()];
    let mut frame = BytesMut::new();
    frame.put_i16(key as i16);
    frame.put_i16(version);
    frame.put_i32(1);
    frame.put_i16(-1); // null client id (header v1)
    frame.put_slice(body);
    super::request::check_decoded(frame.freeze());
}

fn legacy_request_seeds() -> Vec<Vec<u8>> {
    legacy_versions()
        .into_iter()
        .enumerate()
        .map(|(i, (key, version))| {
            let mut input = vec![i as u8];
            input.extend(legacy_body(key, version));
            input
        })
        .collect()
}

fn put_str(b: &mut BytesMut, s: &str) {
    b.put_i16(s.len() as i16);
    b.put_slice(s.as_bytes());
}

/// A valid body of `key` at legacy `version`, naming topic "t" and group "g".
pub(super) fn legacy_body(key: ApiKey, version: i16) -> Vec<u8> {
    let mut b = BytesMut::new();
    match key {
        ApiKey::Fetch => {
            b.put_slice(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 100, 0, 0, 0, 1]);
            if version >= 3 {
                b.put_i32(1 << 20);
            }
            b.put_i32(1);
            put_str(&mut b, "t");
            b.put_i32(1);
            b.put_i32(0);
            b.put_i64(0);
            b.put_i32(1 << 16);
        }
        ApiKey::ListOffsets => {
            b.put_i32(-1);
            b.put_i32(1);
            put_str(&mut b, "t");
            b.put_i32(1);
            b.put_i32(0);
            b.put_i64(-1);
            b.put_i32(1);
        }
        ApiKey::OffsetCommit => {
            put_str(&mut b, "g");
            if version >= 1 {
                b.put_i32(1);
                put_str(&mut b, "m");
            }
            b.put_i32(1);
            put_str(&mut b, "t");
            b.put_i32(1);
            b.put_i32(0);
            b.put_i64(5);
            if version >= 1 {
                b.put_i64(-1);
            }
            b.put_i16(-1);
        }
        ApiKey::OffsetFetch => {
            put_str(&mut b, "g");
            b.put_i32(1);
            put_str(&mut b, "t");
            b.put_i32(1);
            b.put_i32(0);
        }
        ApiKey::DescribeConfigs => {
            b.put_i32(1);
            b.put_i8(2);
            put_str(&mut b, "t");
            b.put_i32(-1);
        }
        ApiKey::CreateTopics => {
            b.put_i32(1);
            put_str(&mut b, "t");
            b.put_i32(1);
            b.put_i16(1);
            b.put_i32(0);
            b.put_i32(1);
            put_str(&mut b, "cleanup.policy");
            put_str(&mut b, "delete");
            b.put_i32(1000);
            if version >= 1 {
                b.put_i8(1);
            }
        }
        ApiKey::DeleteTopics => {
            b.put_i32(1);
            put_str(&mut b, "t");
            b.put_i32(1000);
        }
        _ => {}
    }
    b.to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_legacy_seed_decodes() {
        for (key, version) in legacy_versions() {
            let mut frame = BytesMut::new();
            frame.put_i16(key as i16);
            frame.put_i16(version);
            frame.put_i32(1);
            frame.put_i16(-1);
            frame.put_slice(&legacy_body(key, version));
            let r = protocol::decode_request(frame.freeze())
                .unwrap_or_else(|e| panic!("{key:?} v{version}: {e}"));
            assert!(matches!(r.body, Body::Kind(_)), "{key:?} v{version}");
        }
    }
}

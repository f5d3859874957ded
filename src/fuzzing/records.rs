//! Record batches (magic 2) and message sets (magic 0/1), as a Produce request carries them.
//!
//! The structured targets build valid batches and message sets from their input, mutate the
//! record bytes, compress them with the real codec, and recompute every length and checksum
//! after mutating, so the decoders see corrupt *contents* behind a valid envelope. The
//! `-bytes` targets take raw bytes and only fix up the checksums.

use std::io::Write;

use arbitrary::Unstructured;
use bytes::{BufMut, Bytes, BytesMut};

use super::{DECOMPRESSION_LIMIT, Gen, Target, some_bytes};
use crate::records::{Record, batch, envelope};
use crate::seaweed::Message;

pub const BATCH: Target = Target {
    name: "batch",
    about: "valid v2 batches (every codec) with mutated records and recomputed CRC-32C into batch::decode_all",
    run: batch_target,
    seeds: batch_seeds,
    max_len: 8192,
    weight: 20,
    memory_base: 24 * DECOMPRESSION_LIMIT,
    memory_per_byte: 256,
};

pub const BATCH_BYTES: Target = Target {
    name: "batch-bytes",
    about: "raw bytes with each batch's CRC-32C fixed up into batch::decode_all",
    run: batch_bytes,
    seeds: batch_bytes_seeds,
    max_len: 8192,
    weight: 10,
    memory_base: 12 * DECOMPRESSION_LIMIT,
    memory_per_byte: 64,
};

pub const STORED: Target = Target {
    name: "stored",
    about: "messages as SeaweedFS holds them (kelp's envelope, or another publisher's bytes) into envelope::from_message",
    run: stored,
    seeds: stored_seeds,
    max_len: 4096,
    weight: 5,
    memory_base: 64 * 1024,
    memory_per_byte: 16,
};

// === shared generators ===

/// Up to three byte-level edits of `bytes`; whether any was made.
pub(super) fn mutate(u: &mut Unstructured, bytes: &mut Vec<u8>) -> Gen<bool> {
    let n = u.int_in_range(0..=3u8)?;
    for _ in 0..n {
        let len = bytes.len();
        let at = if len == 0 { 0 } else { u.choose_index(len)? };
        match u.int_in_range(0..=6u8)? {
            0 if len > 0 => bytes[at] ^= 1 << u.int_in_range(0..=7u8)?,
            1 if len > 0 => bytes[at] = u.arbitrary()?,
            // A varint of a value that a length or count field should never hold.
            2 if len > 0 => {
                let v = *u.choose(&[
                    -1i64,
                    -2,
                    0,
                    1,
                    63,
                    64,
                    i64::from(i32::MAX),
                    i64::from(i32::MIN),
                    i64::MAX,
                    i64::MIN,
                    len as i64,
                ])?;
                let mut varint = BytesMut::new();
                crate::records::envelope::put_varlong(&mut varint, v);
                bytes.splice(at..at + 1, varint);
            }
            3 => bytes.truncate(at),
            4 => {
                let ins = some_bytes(u, 8)?.to_vec();
                bytes.splice(at..at, ins);
            }
            5 if len > 0 => {
                let end = at + u.int_in_range(0..=(len - at).min(16))?;
                bytes.drain(at..end);
            }
            6 if len >= 4 => {
                let at = at.min(len - 4);
                let v = *u.choose(&[0i32, -1, 1, i32::MAX, i32::MIN, 0x7fff, len as i32])?;
                bytes[at..at + 4].copy_from_slice(&v.to_be_bytes());
            }
            _ => {}
        }
    }
    Ok(n > 0)
}

/// Bytes for a key or value: usually short, sometimes one repeated byte long enough to reach
/// the decompression limit (cheap to compress, large to decompress), sometimes null. Long
/// fields draw on `big`, what one input may still spend on them.
pub(super) fn field(u: &mut Unstructured, big: &mut usize) -> Gen<Option<Bytes>> {
    let long = |u: &mut Unstructured, big: &mut usize, max: usize| -> Gen<Option<Bytes>> {
        let n = u.int_in_range(0..=max)?.min(*big);
        *big -= n;
        Ok(Some(Bytes::from(vec![u.arbitrary::<u8>()?; n])))
    };
    match u.int_in_range(0..=63u8)? {
        0..=7 => Ok(None),
        8..=11 => long(u, big, 70_000),
        12 => long(u, big, DECOMPRESSION_LIMIT + 4096),
        _ => Ok(Some(Bytes::copy_from_slice(some_bytes(u, 24)?))),
    }
}

/// What one input may spend on long fields: enough to pass the decompression limit.
pub(super) const BIG_FIELDS: usize = 2 * DECOMPRESSION_LIMIT;

pub(super) fn record(u: &mut Unstructured, big: &mut usize) -> Gen<Record> {
    let timestamp_ms = u.arbitrary()?;
    let key = field(u, big)?;
    let value = field(u, big)?;
    let mut headers = Vec::new();
    for _ in 0..u.int_in_range(0..=3u8)? {
        let k = field(u, big)?.unwrap_or_default();
        headers.push((k, field(u, big)?));
    }
    Ok(Record { timestamp_ms, key, value, headers })
}

/// A codec as the batch attributes name it, plus the snappy framing.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Codec {
    None,
    Gzip,
    Snappy,
    SnappyXerial,
    Lz4,
    Zstd,
}

impl Codec {
    pub(super) fn bits(self) -> i16 {
        match self {
            Codec::None => 0,
            Codec::Gzip => 1,
            Codec::Snappy | Codec::SnappyXerial => 2,
            Codec::Lz4 => 3,
            Codec::Zstd => 4,
        }
    }
}

pub(super) fn codec(u: &mut Unstructured, none: bool) -> Gen<Codec> {
    let all =
        [Codec::None, Codec::Gzip, Codec::Snappy, Codec::SnappyXerial, Codec::Lz4, Codec::Zstd];
    Ok(*u.choose(if none { &all } else { &all[1..] })?)
}

/// `data` compressed with `codec` by the codec's own library, with encoder settings the
/// input picks (gzip level, xerial block split, lz4 checksums, zstd with or without a
/// content size).
pub(super) fn compress(u: &mut Unstructured, codec: Codec, data: &[u8]) -> Gen<Vec<u8>> {
    Ok(match codec {
        Codec::None => data.to_vec(),
        Codec::Gzip => {
            let level = flate2::Compression::new(u.int_in_range(1..=9)?);
            let mut e = flate2::write::GzEncoder::new(Vec::new(), level);
            e.write_all(data).expect("writing to a Vec");
            e.finish().expect("writing to a Vec")
        }
        Codec::Snappy => snap::raw::Encoder::new().compress_vec(data).expect("snappy input size"),
        Codec::SnappyXerial => {
            let mut out = b"\x82SNAPPY\x00".to_vec();
            out.extend_from_slice(&1i32.to_be_bytes());
            out.extend_from_slice(&1i32.to_be_bytes());
            // At most 16 blocks: tiny blocks of a long input would expand it.
            let block = u.int_in_range(1..=64 * 1024usize)?.max(data.len() / 16);
            for chunk in data.chunks(block) {
                let c = snap::raw::Encoder::new().compress_vec(chunk).expect("snappy input size");
                out.extend_from_slice(&(c.len() as i32).to_be_bytes());
                out.extend_from_slice(&c);
            }
            out
        }
        Codec::Lz4 => {
            let info = lz4_flex::frame::FrameInfo::new()
                .block_checksums(u.arbitrary()?)
                .content_checksum(u.arbitrary()?);
            let mut e = lz4_flex::frame::FrameEncoder::with_frame_info(info, Vec::new());
            e.write_all(data).expect("writing to a Vec");
            e.finish().expect("writing to a Vec")
        }
        Codec::Zstd => {
            let level = u.int_in_range(1..=3)?;
            if u.arbitrary()? {
                zstd::bulk::compress(data, level).expect("zstd")
            } else {
                zstd::stream::encode_all(data, level).expect("zstd")
            }
        }
    })
}

// === batch ===

/// The record bytes `batch::encode` writes for `records` (offsets from 0), without the header.
fn record_bytes(records: &[Record]) -> Vec<u8> {
    if records.is_empty() {
        return Vec::new();
    }
    let numbered: Vec<(i64, Record)> =
        records.iter().cloned().enumerate().map(|(i, r)| (i as i64, r)).collect();
    let mut buf = BytesMut::new();
    batch::encode(&mut buf, &numbered);
    buf[batch::HEADER_LEN..].to_vec()
}

/// Wrap `body` (already compressed) in a v2 batch header and recompute the CRC-32C.
struct Header {
    base_offset: i64,
    /// The first record's timestamp: the records' deltas are relative to it.
    base_timestamp: i64,
    attributes: i16,
    count: i32,
    magic: i8,
    length_delta: i32,
}

fn wrap_batch(out: &mut Vec<u8>, h: &Header, body: &[u8]) {
    let start = out.len();
    let mut b = BytesMut::new();
    b.put_i64(h.base_offset);
    b.put_i32((batch::HEADER_LEN - 12 + body.len()) as i32 + h.length_delta);
    b.put_i32(-1); // partition leader epoch
    b.put_i8(h.magic);
    b.put_u32(0); // crc, below
    b.put_i16(h.attributes);
    b.put_i32(h.count.wrapping_sub(1)); // last offset delta
    b.put_i64(h.base_timestamp);
    b.put_i64(h.base_timestamp);
    b.put_i64(7); // producer id
    b.put_i16(0);
    b.put_i32(0);
    b.put_i32(h.count);
    out.extend_from_slice(&b);
    out.extend_from_slice(body);
    let crc = crc32c::crc32c(&out[start + 21..]);
    out[start + 17..start + 21].copy_from_slice(&crc.to_be_bytes());
}

/// Input (through `Unstructured`): up to four batches, or many small compressed ones; each
/// with its records, edits to the record bytes, a codec and header fields.
fn batch_target(data: &[u8]) {
    let _ = batch_gen(&mut Unstructured::new(data));
}

fn batch_gen(u: &mut Unstructured) -> Gen<()> {
    let mut stream = Vec::new();
    // The records each batch must decode to, while nothing was corrupted.
    let mut expected: Option<Vec<Vec<Record>>> = Some(Vec::new());
    let mut decompressed = 0usize;
    let mut big = BIG_FIELDS;
    if u.ratio(1u8, 16)? {
        // Many tiny batches, each expanding a lot: the limit is for all of them together.
        let value = vec![0u8; u.int_in_range(1..=256 * 1024usize)?];
        let body = record_bytes(&[Record {
            timestamp_ms: 0,
            key: None,
            value: Some(value.into()),
            headers: Vec::new(),
        }]);
        let c = codec(u, false)?;
        let compressed = compress(u, c, &body)?;
        let header = Header {
            base_offset: 0,
            base_timestamp: 0,
            attributes: c.bits(),
            count: 1,
            magic: 2,
            length_delta: 0,
        };
        for _ in 0..u.int_in_range(1..=64u8)? {
            wrap_batch(&mut stream, &header, &compressed);
        }
        expected = None;
    } else {
        for _ in 0..u.int_in_range(1..=4u8)? {
            let mut records = Vec::new();
            for _ in 0..u.int_in_range(0..=6u8)? {
                records.push(record(u, &mut big)?);
            }
            let mut body = record_bytes(&records);
            let mut corrupt = u.ratio(1u8, 2)? && mutate(u, &mut body)?;
            let c = codec(u, true)?;
            if c != Codec::None {
                decompressed += body.len();
            }
            let mut compressed = compress(u, c, &body)?;
            if u.ratio(1u8, 8)? {
                corrupt |= mutate(u, &mut compressed)?;
            }
            let mut header = Header {
                base_offset: u.arbitrary()?,
                base_timestamp: records.first().map_or(0, |r| r.timestamp_ms),
                attributes: c.bits(),
                count: records.len() as i32,
                magic: 2,
                length_delta: 0,
            };
            if u.ratio(1u8, 8)? {
                // Transactional, control and timestamp-type bits, or a codec beyond the five.
                header.attributes = u.arbitrary::<i16>()? & !0x7 | c.bits();
                if u.ratio(1u8, 4)? {
                    header.attributes |= u.int_in_range(5..=7)?;
                    corrupt = true;
                }
            }
            if u.ratio(1u8, 8)? {
                header.count = u.arbitrary()?;
                corrupt |= header.count != records.len() as i32;
            }
            if u.ratio(1u8, 32)? {
                header.magic = u.arbitrary()?;
                corrupt |= header.magic != 2;
            }
            if u.ratio(1u8, 32)? {
                header.length_delta = u.int_in_range(-70..=70)?;
                corrupt |= header.length_delta != 0;
            }
            wrap_batch(&mut stream, &header, &compressed);
            match &mut expected {
                // A batch of no records is refused, as Kafka refuses it (INVALID_RECORD).
                Some(e) if !corrupt && !records.is_empty() => e.push(records),
                _ => expected = None,
            }
        }
    }
    let result = batch::decode_all(Bytes::from(stream), &mut { DECOMPRESSION_LIMIT });
    if let Some(expected) = expected
        && decompressed <= DECOMPRESSION_LIMIT
    {
        let got = result.as_ref().expect("an intact batch decodes");
        let got: Vec<&Vec<Record>> = got.iter().map(|b| &b.records).collect();
        assert!(got.iter().copied().eq(expected.iter()), "records differ from those encoded");
    }
    if let Ok(batches) = result {
        re_encodes(&batches);
    }
    Ok(())
}

/// Records that decoded are encoded again and decode to themselves.
fn re_encodes(batches: &[batch::Batch]) {
    for b in batches.iter().filter(|b| !b.records.is_empty()) {
        let numbered: Vec<(i64, Record)> =
            b.records.iter().cloned().enumerate().map(|(i, r)| (i as i64, r)).collect();
        let mut buf = BytesMut::new();
        batch::encode(&mut buf, &numbered);
        let again =
            batch::decode_all(buf.freeze(), &mut { usize::MAX }).expect("re-encoded batch decodes");
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].records, b.records);
    }
}

fn batch_seeds() -> Vec<Vec<u8>> {
    // Unstructured reads these as: one batch, one record with short fields, no edits, and
    // the codec the last-but-one byte picks.
    (0..6u8)
        .map(|c| {
            vec![
                1, 0, 1, 5, 0, 0, 0, 0, 0, 0, 0, 0, 40, 3, b'k', b'e', b'y', 40, 1, b'v', 0, 0, c,
                0, 1,
            ]
        })
        .collect()
}

// === batch-bytes ===

/// Fix up the CRC-32C of every batch whose length fits in `data`.
fn fix_batch_crcs(data: &mut [u8]) {
    let mut at = 0;
    while data.len() - at >= batch::HEADER_LEN {
        let len = i32::from_be_bytes(data[at + 8..at + 12].try_into().expect("4 bytes"));
        let Some(end) = usize::try_from(len).ok().map(|l| at + 12 + l) else { return };
        if len < (batch::HEADER_LEN - 12) as i32 || end > data.len() {
            return;
        }
        let crc = crc32c::crc32c(&data[at + 21..end]);
        data[at + 17..at + 21].copy_from_slice(&crc.to_be_bytes());
        at = end;
    }
}

fn batch_bytes(data: &[u8]) {
    let mut data = data.to_vec();
    fix_batch_crcs(&mut data);
    if let Ok(batches) = batch::decode_all(Bytes::from(data), &mut { DECOMPRESSION_LIMIT }) {
        re_encodes(&batches);
    }
}

/// Two records, as a Produce seed carries them.
pub(super) fn sample_batch() -> Bytes {
    let r = |i: i64| Record {
        timestamp_ms: 1_700_000_000_000 + i,
        key: Some(Bytes::from(format!("k{i}"))),
        value: Some(Bytes::from(format!("value {i}"))),
        headers: vec![(Bytes::from_static(b"h"), Some(Bytes::from_static(b"x")))],
    };
    let mut buf = BytesMut::new();
    batch::encode(&mut buf, &[(0, r(0)), (1, r(1))]);
    buf.freeze()
}

/// The sample records in a batch written by the wire library, in every codec.
fn batch_bytes_seeds() -> Vec<Vec<u8>> {
    use kafka_protocol::records::{
        Compression, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
    };
    let records = RecordBatchDecoder::decode(&mut sample_batch()).expect("sample decodes").records;
    let mut out = vec![sample_batch().to_vec()];
    for compression in [Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd]
    {
        let mut buf = BytesMut::new();
        let options = RecordEncodeOptions { version: 2, compression };
        RecordBatchEncoder::encode(&mut buf, &records, &options).expect("library encodes");
        out.push(buf.to_vec());
    }
    out
}

// === stored ===

/// Input: byte 0 is the key's length, then the key, then the value; what a Fetch reads back
/// from SeaweedFS, where any publisher may have written it.
fn stored(data: &[u8]) {
    let Some((&key_len, rest)) = data.split_first() else { return };
    let key_len = (key_len as usize).min(rest.len());
    let m = Message {
        key: Bytes::copy_from_slice(&rest[..key_len]),
        value: Bytes::copy_from_slice(&rest[key_len..]),
        ts_ns: 1_700_000_000_000_000_000,
    };
    let r = envelope::from_message(&m);
    assert_eq!(envelope::from_message(&envelope::to_message(&r)), r, "stored again, read again");
}

fn stored_seeds() -> Vec<Vec<u8>> {
    let mut records = batch::decode_all(sample_batch(), &mut { DECOMPRESSION_LIMIT })
        .expect("the sample decodes")
        .remove(0)
        .records;
    records.push(Record { timestamp_ms: -1, key: None, value: None, headers: Vec::new() });
    let mut out: Vec<Vec<u8>> = records
        .iter()
        .map(|r| {
            let m = envelope::to_message(r);
            let mut input = vec![m.key.len() as u8];
            input.extend_from_slice(&m.key);
            input.extend_from_slice(&m.value);
            input
        })
        .collect();
    out.push(b"\x03keyplain value from another publisher".to_vec());
    out
}

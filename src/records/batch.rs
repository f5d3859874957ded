//! Kafka record batches (magic 2): decode what producers send, encode what consumers fetch.
//!
//! Written by hand because the wire library keeps headers in a map, which loses repeated
//! header keys; everything here follows the "Record Batch" layout of the Kafka protocol guide.
//! Fetch responses are always written uncompressed with CreateTime timestamps.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::compression::{self, Codec};
use super::envelope::{get_varlong, put_varlong, varlong_len};
use super::{BatchError, Record};

/// Bytes before the first record: base_offset .. records_count.
pub const HEADER_LEN: usize = 61;
/// Offset of the magic byte within a batch.
pub const MAGIC_OFFSET: usize = 16;
const CRC_START: usize = 21;
const ATTR_TRANSACTIONAL: i16 = 1 << 4;
const ATTR_CONTROL: i16 = 1 << 5;

/// One decoded producer batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub transactional: bool,
    pub control: bool,
    pub records: Vec<Record>,
}

/// Decode every batch in a Produce partition's `records` field.
///
/// `budget` is what compressed batches may still expand to (bytes); each decompression takes
/// its output from it, so one budget can bound a whole request.
pub fn decode_all(mut buf: Bytes, budget: &mut usize) -> Result<Vec<Batch>, BatchError> {
    let mut out = Vec::new();
    while buf.has_remaining() {
        if buf.len() < 12 {
            return Err(BatchError::malformed("trailing bytes shorter than a batch header"));
        }
        let batch_len = i32::from_be_bytes(buf[8..12].try_into().expect("4 bytes"));
        if batch_len < (HEADER_LEN - 12) as i32 || buf.len() - 12 < batch_len as usize {
            return Err(BatchError::malformed(format!("batch length {batch_len} out of bounds")));
        }
        let one = buf.split_to(12 + batch_len as usize);
        out.push(decode_one(one, budget)?);
    }
    Ok(out)
}

/// Whether any batch in `buf` says it is compressed (attribute bits 0-2). Reads only the
/// batch headers, stopping at a length that does not fit: decoding refuses that later.
pub fn any_compressed(buf: &[u8]) -> bool {
    let mut rest = buf;
    while rest.len() >= HEADER_LEN {
        if i16::from_be_bytes([rest[CRC_START], rest[CRC_START + 1]]) & 0x7 != 0 {
            return true;
        }
        let len = i32::from_be_bytes([rest[8], rest[9], rest[10], rest[11]]);
        match usize::try_from(len).ok().and_then(|l| l.checked_add(12)) {
            Some(whole) if whole <= rest.len() && whole >= HEADER_LEN => rest = &rest[whole..],
            _ => return false,
        }
    }
    false
}

/// The magic byte of the first batch, if there is one.
pub fn magic(buf: &[u8]) -> Option<i8> {
    buf.get(MAGIC_OFFSET).map(|m| *m as i8)
}

/// The smallest record: its length, attributes, timestamp and offset deltas, key and value
/// lengths and header count, one byte each. Bounds what a claimed record count may reserve.
const MIN_RECORD_BYTES: usize = 7;

fn decode_one(b: Bytes, budget: &mut usize) -> Result<Batch, BatchError> {
    let magic = b[MAGIC_OFFSET] as i8;
    if magic != 2 {
        return Err(BatchError::malformed(format!("magic {magic} in a v2 batch stream")));
    }
    let crc = u32::from_be_bytes(b[17..21].try_into().expect("4 bytes"));
    if crc32c::crc32c(&b[CRC_START..]) != crc {
        return Err(BatchError::Crc);
    }
    let mut h = &b[CRC_START..HEADER_LEN];
    let attributes = h.get_i16();
    let last_offset_delta = h.get_i32();
    let base_timestamp = h.get_i64();
    let _max_timestamp = h.get_i64();
    let producer_id = h.get_i64();
    let producer_epoch = h.get_i16();
    let base_sequence = h.get_i32();
    let count = h.get_i32();
    // Kafka's check on an intact batch (LogValidator): it holds at least one record, and its
    // offset range matches its record count.
    if count <= 0 || i64::from(last_offset_delta) + 1 != i64::from(count) {
        return Err(BatchError::Invalid(format!(
            "last offset delta {last_offset_delta} does not match the record count {count}"
        )));
    }
    let codec = Codec::from_attributes(attributes)?;
    let body = b.slice(HEADER_LEN..);
    let body = compression::decompress_within(codec, body, budget)?;
    let mut records = Vec::with_capacity((count as usize).min(body.len() / MIN_RECORD_BYTES));
    let mut pos = 0;
    for _ in 0..count {
        records.push(decode_record(&body, &mut pos, base_timestamp)?);
    }
    if pos != body.len() {
        return Err(BatchError::malformed("bytes left after the last record"));
    }
    Ok(Batch {
        producer_id,
        producer_epoch,
        base_sequence,
        transactional: attributes & ATTR_TRANSACTIONAL != 0,
        control: attributes & ATTR_CONTROL != 0,
        records,
    })
}

fn varint(b: &[u8], pos: &mut usize) -> Result<i64, BatchError> {
    get_varlong(b, pos).ok_or_else(|| BatchError::malformed("truncated varint"))
}

fn bytes_field(body: &Bytes, pos: &mut usize, end: usize) -> Result<Option<Bytes>, BatchError> {
    let len = varint(body, pos)?;
    if len < 0 {
        return Ok(None);
    }
    let stop = pos
        .checked_add(len as usize)
        .filter(|s| *s <= end)
        .ok_or_else(|| BatchError::malformed("field runs past its record"))?;
    let s = body.slice(*pos..stop);
    *pos = stop;
    Ok(Some(s))
}

fn decode_record(body: &Bytes, pos: &mut usize, base_ts: i64) -> Result<Record, BatchError> {
    let len = varint(body, pos)?;
    let end = usize::try_from(len)
        .ok()
        .and_then(|l| pos.checked_add(l))
        .filter(|e| *e <= body.len())
        .ok_or_else(|| BatchError::malformed("record length out of bounds"))?;
    // Every field is read from the record's own bytes, so a field cannot reach past them
    // whatever the lengths inside claim.
    let rec = body.slice(*pos..end);
    *pos = end;
    let mut at = 1; // attributes (unused)
    if rec.is_empty() {
        return Err(BatchError::malformed("empty record"));
    }
    let ts_delta = varint(&rec, &mut at)?;
    let _offset_delta = varint(&rec, &mut at)?;
    let key = bytes_field(&rec, &mut at, rec.len())?;
    let value = bytes_field(&rec, &mut at, rec.len())?;
    let n = varint(&rec, &mut at)?;
    // A header takes at least two bytes (its key's and its value's lengths).
    if n < 0 || n as u64 > (rec.len() - at) as u64 / 2 {
        return Err(BatchError::malformed("header count out of bounds"));
    }
    let mut headers = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let k = bytes_field(&rec, &mut at, rec.len())?
            .ok_or_else(|| BatchError::malformed("null header key"))?;
        let v = bytes_field(&rec, &mut at, rec.len())?;
        headers.push((k, v));
    }
    if at != rec.len() {
        return Err(BatchError::malformed("record length disagrees with its fields"));
    }
    Ok(Record { timestamp_ms: base_ts.wrapping_add(ts_delta), key, value, headers })
}

fn put_bytes_field(buf: &mut BytesMut, v: Option<&Bytes>) {
    match v {
        None => put_varlong(buf, -1),
        Some(v) => {
            put_varlong(buf, v.len() as i64);
            buf.put_slice(v);
        }
    }
}

fn field_len(v: Option<&Bytes>) -> usize {
    v.map_or(1, |v| varlong_len(v.len() as i64) + v.len())
}

/// Append one uncompressed batch holding `records` (offset, record), which must be in
/// ascending offset order and non-empty.
pub fn encode(buf: &mut BytesMut, records: &[(i64, Record)]) {
    let Some((base_offset, first)) = records.first() else { return };
    let base_offset = *base_offset;
    let base_ts = first.timestamp_ms;
    let max_ts = records.iter().map(|(_, r)| r.timestamp_ms).max().unwrap_or(base_ts);
    let last_delta = records.last().map_or(0, |(o, _)| o - base_offset);
    let start = buf.len();
    buf.put_i64(base_offset);
    buf.put_i32(0); // batch length, below
    buf.put_i32(-1); // partition leader epoch
    buf.put_i8(2);
    buf.put_u32(0); // crc, below
    buf.put_i16(0); // attributes: no compression, CreateTime
    buf.put_i32(last_delta as i32);
    buf.put_i64(base_ts);
    buf.put_i64(max_ts);
    buf.put_i64(-1); // producer id
    buf.put_i16(-1); // producer epoch
    buf.put_i32(-1); // base sequence
    buf.put_i32(records.len() as i32);
    for (offset, r) in records {
        let ts_delta = r.timestamp_ms.wrapping_sub(base_ts);
        let off_delta = offset - base_offset;
        let headers_len: usize =
            r.headers.iter().map(|(k, v)| field_len(Some(k)) + field_len(v.as_ref())).sum();
        let body_len = 1
            + varlong_len(ts_delta)
            + varlong_len(off_delta)
            + field_len(r.key.as_ref())
            + field_len(r.value.as_ref())
            + varlong_len(r.headers.len() as i64)
            + headers_len;
        put_varlong(buf, body_len as i64);
        buf.put_i8(0);
        put_varlong(buf, ts_delta);
        put_varlong(buf, off_delta);
        put_bytes_field(buf, r.key.as_ref());
        put_bytes_field(buf, r.value.as_ref());
        put_varlong(buf, r.headers.len() as i64);
        for (k, v) in &r.headers {
            put_bytes_field(buf, Some(k));
            put_bytes_field(buf, v.as_ref());
        }
    }
    let batch_len = (buf.len() - start - 12) as i32;
    buf[start + 8..start + 12].copy_from_slice(&batch_len.to_be_bytes());
    let crc = crc32c::crc32c(&buf[start + CRC_START..]);
    buf[start + 17..start + 21].copy_from_slice(&crc.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::indexmap::IndexMap;
    use kafka_protocol::protocol::StrBytes;
    use kafka_protocol::records::{
        Compression, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn sample() -> Vec<Record> {
        (0..50)
            .map(|i| Record {
                timestamp_ms: 1_700_000_000_000 + i * 7 - 100,
                key: (i % 3 != 0).then(|| b(&format!("key-{i}"))),
                value: (i % 5 != 0).then(|| b(&"v".repeat(i as usize))),
                headers: if i % 2 == 0 {
                    vec![(b("h"), Some(b("x"))), (b("n"), None)]
                } else {
                    vec![]
                },
            })
            .collect()
    }

    /// Encode with the wire library (a second, independent encoder) in the given codec.
    fn library_batch(records: &[Record], compression: Compression) -> Bytes {
        let lib: Vec<kafka_protocol::records::Record> = records
            .iter()
            .enumerate()
            .map(|(i, r)| kafka_protocol::records::Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: 77,
                producer_epoch: 1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: i as i32,
                timestamp: r.timestamp_ms,
                key: r.key.clone(),
                value: r.value.clone(),
                headers: r
                    .headers
                    .iter()
                    .map(|(k, v)| (StrBytes::from_utf8(k.clone()).unwrap(), v.clone()))
                    .collect::<IndexMap<_, _>>(),
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &lib,
            &RecordEncodeOptions { version: 2, compression },
        )
        .unwrap();
        buf.freeze()
    }

    #[test]
    fn batches_from_an_independent_encoder_decode_in_every_codec() {
        let records = sample();
        for c in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let batches = decode_all(library_batch(&records, c), &mut (1 << 20)).unwrap();
            let got: Vec<Record> = batches.into_iter().flat_map(|b| b.records).collect();
            assert_eq!(got, records, "{c:?}");
        }
    }

    #[test]
    fn encoded_batches_decode_with_the_library_and_with_ourselves() {
        let records: Vec<(i64, Record)> =
            sample().into_iter().enumerate().map(|(i, r)| (100 + i as i64, r)).collect();
        let mut buf = BytesMut::new();
        encode(&mut buf, &records);
        let bytes = buf.freeze();
        let ours = decode_all(bytes.clone(), &mut (1 << 20)).unwrap();
        assert_eq!(ours[0].records, records.iter().map(|(_, r)| r.clone()).collect::<Vec<_>>());
        let lib = RecordBatchDecoder::decode(&mut bytes.clone()).unwrap();
        let offsets: Vec<i64> = lib.records.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, (100..150).collect::<Vec<_>>());
    }

    #[test]
    fn repeated_header_keys_survive() {
        let r = Record {
            timestamp_ms: 1,
            key: None,
            value: Some(b("v")),
            headers: vec![(b("dup"), Some(b("1"))), (b("dup"), Some(b("2"))), (b("dup"), None)],
        };
        let mut buf = BytesMut::new();
        encode(&mut buf, &[(0, r.clone())]);
        assert_eq!(decode_all(buf.freeze(), &mut (1 << 20)).unwrap()[0].records, vec![r]);
    }

    #[test]
    fn a_flipped_bit_is_a_crc_error() {
        let bytes = library_batch(&sample(), Compression::None);
        let mut bad = bytes.to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(decode_all(Bytes::from(bad), &mut (1 << 20)), Err(BatchError::Crc));
    }

    #[test]
    fn truncations_and_bad_lengths_are_errors_not_panics() {
        let bytes = library_batch(&sample(), Compression::Gzip);
        for cut in 1..bytes.len() {
            assert!(decode_all(bytes.slice(..cut), &mut (1 << 20)).is_err(), "cut {cut}");
        }
        let mut huge = bytes.to_vec();
        huge[8..12].copy_from_slice(&i32::MAX.to_be_bytes());
        assert!(decode_all(Bytes::from(huge), &mut (1 << 20)).is_err());
    }

    /// A batch with a correct CRC whose one record claims length 0, then null key and value
    /// and 2^50 headers: the fields must be read from the record's bytes only, never past
    /// them (reading on used to reserve 2^56 bytes and abort the process).
    #[test]
    fn a_record_claiming_more_than_its_length_is_an_error_not_an_abort() {
        // attributes, timestamp delta, offset delta, null key, null value, header count
        let records = [0u8, 0, 0, 1, 1, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x04];
        for claimed_len in [0u8, 2, 4, 10] {
            let mut body = vec![claimed_len];
            body.extend_from_slice(&records);
            let batch = raw_batch(&body, 1);
            let err = decode_all(batch, &mut (1 << 20)).unwrap_err();
            assert!(matches!(err, BatchError::Malformed(_)), "{claimed_len}: {err:?}");
        }
        // A count far above what the bytes can hold reserves nothing for it.
        let err = decode_all(raw_batch(&[0], i32::MAX / 2), &mut (1 << 30)).unwrap_err();
        assert!(matches!(err, BatchError::Malformed(_)), "{err:?}");
    }

    #[test]
    fn an_offset_range_that_disagrees_with_the_count_is_invalid() {
        let one = [12u8, 0, 0, 0, 1, 1, 0]; // one record (length 6): null key and value, no headers
        assert_eq!(decode_all(raw_batch(&one, 1), &mut (1 << 20)).unwrap()[0].records.len(), 1);
        for (count, last_delta) in [(1, 1), (1, -1), (0, -1), (2, 0)] {
            let mut b = raw_batch(&one, count).to_vec();
            b[23..27].copy_from_slice(&i32::to_be_bytes(last_delta));
            let crc = crc32c::crc32c(&b[CRC_START..]);
            b[17..21].copy_from_slice(&crc.to_be_bytes());
            let err = decode_all(Bytes::from(b), &mut (1 << 20)).unwrap_err();
            assert!(matches!(err, BatchError::Invalid(_)), "{count}/{last_delta}: {err:?}");
        }
    }

    /// An uncompressed v2 batch around `records` claiming `count` records, with a correct CRC.
    fn raw_batch(records: &[u8], count: i32) -> Bytes {
        let mut b = BytesMut::new();
        b.put_i64(0); // base offset
        b.put_i32((HEADER_LEN - 12 + records.len()) as i32);
        b.put_i32(0); // partition leader epoch
        b.put_i8(2); // magic
        b.put_u32(0); // crc, below
        b.put_i16(0); // attributes
        b.put_i32(count - 1);
        b.put_i64(0);
        b.put_i64(0);
        b.put_i64(-1);
        b.put_i16(-1);
        b.put_i32(-1);
        b.put_i32(count);
        b.put_slice(records);
        let crc = crc32c::crc32c(&b[CRC_START..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        b.freeze()
    }

    /// Each batch expands to 6 KB: one fits a 10 KB limit, two together do not, however
    /// small each is compressed (small batches each just under the limit used to add up to
    /// any multiple of it).
    #[test]
    fn the_decompression_limit_is_shared_by_every_batch_of_a_partition() {
        let big = vec![Record {
            timestamp_ms: 0,
            key: None,
            value: Some(Bytes::from(vec![0u8; 6_000])),
            headers: vec![],
        }];
        for c in [Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd] {
            let one = library_batch(&big, c);
            assert_eq!(decode_all(one.clone(), &mut (10_000)).unwrap().len(), 1, "{c:?}");
            let many: Vec<u8> = (0..64).flat_map(|_| one.to_vec()).collect();
            let err = decode_all(Bytes::from(many), &mut (10_000)).unwrap_err();
            assert!(matches!(err, BatchError::TooLarge(_)), "{c:?}: {err:?}");
        }
        // Uncompressed batches are bounded by the request's own size, not by this limit.
        let plain = library_batch(&big, Compression::None);
        let two: Vec<u8> = [plain.to_vec(), plain.to_vec()].concat();
        assert_eq!(decode_all(Bytes::from(two), &mut (10_000)).unwrap().len(), 2);
    }

    /// The partitions of one Produce request are decoded before any is published, so they
    /// share one budget too.
    #[test]
    fn a_budget_is_shared_by_every_partition_it_is_passed_to() {
        let big = vec![Record {
            timestamp_ms: 0,
            key: None,
            value: Some(Bytes::from(vec![0u8; 6_000])),
            headers: vec![],
        }];
        let one = library_batch(&big, Compression::Zstd);
        let mut budget = 10_000;
        assert!(decode_all(one.clone(), &mut budget).is_ok());
        assert!(budget <= 4_000, "what the first expanded to is taken from the budget: {budget}");
        let err = decode_all(one, &mut budget).unwrap_err();
        assert!(matches!(err, BatchError::TooLarge(_)), "{err:?}");
    }

    #[test]
    fn compressed_batches_are_told_from_plain_ones_by_their_headers() {
        let plain = library_batch(&sample(), Compression::None);
        let zstd = library_batch(&sample(), Compression::Zstd);
        assert!(!any_compressed(&plain));
        assert!(any_compressed(&zstd));
        assert!(any_compressed(&[plain.clone(), zstd].concat()), "the second batch counts");
        assert!(!any_compressed(&plain[..HEADER_LEN - 1]), "too short to tell");
    }

    #[test]
    fn decompression_is_bounded() {
        let big = vec![Record {
            timestamp_ms: 0,
            key: None,
            value: Some(Bytes::from(vec![0u8; 100_000])),
            headers: vec![],
        }];
        for c in [Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd] {
            let err = decode_all(library_batch(&big, c), &mut (10_000)).unwrap_err();
            assert_eq!(err, BatchError::TooLarge(10_000), "{c:?}");
        }
    }
}

//! Message sets v0 and v1 (magic 0/1), which Produce v0-v2 and Fetch v0-v3 carry.
//!
//! Layout: repeated `offset i64, size i32, crc u32, magic i8, attributes i8,
//! [timestamp i64 if magic 1], key bytes, value bytes` (bytes = i32 length, -1 = null). A
//! compressed message's value is itself a message set. CRC is CRC-32 (IEEE) over magic..end.
//! Messages have no headers; magic 0 has no timestamp (stored as -1).

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::compression::{self, Codec};
use super::{BatchError, Record};

/// Decode a whole message set into records, decompressing wrapper messages; `budget` is
/// what they may still expand to (bytes), taken from as they do.
pub fn decode(buf: Bytes, budget: &mut usize) -> Result<Vec<Record>, BatchError> {
    let mut out = Vec::new();
    decode_into(buf, budget, 0, &mut out)?;
    Ok(out)
}

fn decode_into(
    mut buf: Bytes,
    budget: &mut usize,
    depth: u8,
    out: &mut Vec<Record>,
) -> Result<(), BatchError> {
    while buf.has_remaining() {
        if buf.remaining() < 12 {
            return Err(BatchError::malformed("short message set entry"));
        }
        let _offset = buf.get_i64();
        let size = buf.get_i32();
        if size < 14 || size as usize > buf.remaining() {
            return Err(BatchError::malformed(format!("message size {size}")));
        }
        let mut m = buf.split_to(size as usize);
        let crc = m.get_u32();
        if crc32fast::hash(&m) != crc {
            return Err(BatchError::Crc);
        }
        let magic = m.get_i8();
        let attributes = m.get_i8();
        let timestamp_ms = match magic {
            0 => -1,
            1 if m.remaining() >= 8 => m.get_i64(),
            _ => return Err(BatchError::malformed(format!("message magic {magic}"))),
        };
        let key = bytes(&mut m)?;
        let value = bytes(&mut m)?;
        if m.has_remaining() {
            return Err(BatchError::malformed("bytes after message value"));
        }
        let codec = Codec::from_attributes(i16::from(attributes))?;
        if codec == Codec::None {
            out.push(Record { timestamp_ms, key, value, headers: Vec::new() });
            continue;
        }
        if depth > 0 {
            return Err(BatchError::malformed("nested compressed message"));
        }
        let inner =
            value.ok_or_else(|| BatchError::malformed("compressed message without value"))?;
        let inner = compression::decompress_within(codec, inner, budget)?;
        let first = out.len();
        decode_into(inner, budget, depth + 1, out)?;
        if magic == 1 {
            // v1 inner messages inherit the wrapper's timestamp when it is LogAppendTime;
            // with CreateTime they keep their own.
            if attributes & 0x08 != 0 {
                out[first..].iter_mut().for_each(|r| r.timestamp_ms = timestamp_ms);
            }
        }
    }
    Ok(())
}

fn bytes(m: &mut Bytes) -> Result<Option<Bytes>, BatchError> {
    if m.remaining() < 4 {
        return Err(BatchError::malformed("short length"));
    }
    let len = m.get_i32();
    if len < 0 {
        return Ok(None);
    }
    if len as usize > m.remaining() {
        return Err(BatchError::malformed("field past end of message"));
    }
    Ok(Some(m.split_to(len as usize)))
}

/// Append `records` (offset, record) as uncompressed messages of `magic` 0 or 1, as Fetch
/// v0-v1 (magic 0) and v2-v3 (magic 1) answer. Magic 0 has no timestamp and headers have no
/// place in either; a record without a timestamp (-1) keeps it in magic 1.
pub fn encode_set(buf: &mut BytesMut, records: &[(i64, Record)], magic: i8) {
    for (offset, r) in records {
        put_message(buf, *offset, magic, r.timestamp_ms, r.key.as_deref(), r.value.as_deref());
    }
}

/// Bytes `records` take as a message set of `magic` (to size the buffer up front).
pub fn set_len(records: &[(i64, Record)], magic: i8) -> usize {
    let field = |f: Option<&Bytes>| 4 + f.map_or(0, |f| f.len());
    let fixed = 8 + 4 + 4 + 2 + if magic == 1 { 8 } else { 0 };
    records.iter().map(|(_, r)| fixed + field(r.key.as_ref()) + field(r.value.as_ref())).sum()
}

fn put_message(
    buf: &mut BytesMut,
    offset: i64,
    magic: i8,
    timestamp_ms: i64,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) {
    buf.put_i64(offset);
    let size_at = buf.len();
    buf.put_i32(0); // size, below
    buf.put_u32(0); // crc, below
    let body_at = buf.len();
    buf.put_i8(magic);
    buf.put_i8(0); // attributes: no compression, CreateTime
    if magic == 1 {
        buf.put_i64(timestamp_ms);
    }
    for f in [key, value] {
        match f {
            None => buf.put_i32(-1),
            Some(f) => {
                // A record's key or value came in a frame, so its length fits an i32.
                buf.put_i32(f.len() as i32);
                buf.put_slice(f);
            }
        }
    }
    let size = (buf.len() - size_at - 4) as i32;
    buf[size_at..size_at + 4].copy_from_slice(&size.to_be_bytes());
    let crc = crc32fast::hash(&buf[body_at..]);
    buf[body_at - 4..body_at].copy_from_slice(&crc.to_be_bytes());
}

/// Encode one uncompressed message at offset 0 (used by tests that speak Produce v0-v2).
pub fn encode_message(
    buf: &mut Vec<u8>,
    magic: i8,
    timestamp_ms: i64,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) {
    let mut out = BytesMut::new();
    put_message(&mut out, 0, magic, timestamp_ms, key, value);
    buf.extend_from_slice(&out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v0_and_v1_messages_decode_with_null_and_empty_fields() {
        let mut set = Vec::new();
        encode_message(&mut set, 0, 0, None, Some(b"a"));
        encode_message(&mut set, 1, 1234, Some(b"k"), Some(b""));
        encode_message(&mut set, 1, 99, Some(b""), None);
        let got = decode(set.into(), &mut (1 << 20)).unwrap();
        let want = [
            Record {
                timestamp_ms: -1,
                key: None,
                value: Some(Bytes::from_static(b"a")),
                headers: vec![],
            },
            Record {
                timestamp_ms: 1234,
                key: Some(Bytes::new()),
                value: Some(Bytes::new()),
                headers: vec![],
            },
            Record { timestamp_ms: 99, key: Some(Bytes::new()), value: None, headers: vec![] },
        ];
        assert_eq!(got[1].key.as_deref(), Some(&b"k"[..]));
        assert_eq!(got[0], want[0]);
        assert_eq!(got[2], want[2]);
    }

    #[test]
    fn gzip_wrapper_messages_unwrap() {
        use std::io::Write;
        let mut inner = Vec::new();
        encode_message(&mut inner, 1, 5, Some(b"k1"), Some(b"v1"));
        encode_message(&mut inner, 1, 6, Some(b"k2"), Some(b"v2"));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&inner).unwrap();
        let compressed = gz.finish().unwrap();
        let mut body = vec![1u8, 1];
        body.extend_from_slice(&5i64.to_be_bytes());
        body.extend_from_slice(&(-1i32).to_be_bytes());
        body.extend_from_slice(&(compressed.len() as i32).to_be_bytes());
        body.extend_from_slice(&compressed);
        let mut set = Vec::new();
        set.extend_from_slice(&0i64.to_be_bytes());
        set.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        set.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
        set.extend_from_slice(&body);
        let got = decode(set.into(), &mut (1 << 20)).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].value.as_deref(), Some(&b"v2"[..]));
        assert_eq!(got[1].timestamp_ms, 6);
    }

    /// A gzip wrapper around `inner` (a message set), as a v1 message.
    fn gzip_wrapper(out: &mut Vec<u8>, inner: &[u8]) {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(inner).unwrap();
        let compressed = gz.finish().unwrap();
        let mut body = vec![1u8, 1];
        body.extend_from_slice(&5i64.to_be_bytes());
        body.extend_from_slice(&(-1i32).to_be_bytes());
        body.extend_from_slice(&(compressed.len() as i32).to_be_bytes());
        body.extend_from_slice(&compressed);
        out.extend_from_slice(&0i64.to_be_bytes());
        out.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        out.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
        out.extend_from_slice(&body);
    }

    /// Wrappers each expanding to 6 KB: one fits a 10 KB limit, many together do not.
    #[test]
    fn the_decompression_limit_is_shared_by_every_wrapper() {
        let mut inner = Vec::new();
        encode_message(&mut inner, 1, 5, None, Some(&[0u8; 6_000]));
        let mut one = Vec::new();
        gzip_wrapper(&mut one, &inner);
        assert_eq!(decode(Bytes::from(one.clone()), &mut 10_000).unwrap().len(), 1);
        let many: Vec<u8> = (0..64).flat_map(|_| one.clone()).collect();
        let err = decode(Bytes::from(many), &mut 10_000).unwrap_err();
        assert!(matches!(err, BatchError::TooLarge(_)), "{err:?}");
    }

    #[test]
    fn fetched_sets_decode_to_the_records_with_their_offsets() {
        let rec = |ts, key: Option<&'static [u8]>, value: Option<&'static [u8]>| Record {
            timestamp_ms: ts,
            key: key.map(Bytes::from_static),
            value: value.map(Bytes::from_static),
            headers: vec![(Bytes::from_static(b"h"), None)],
        };
        let records = vec![(5, rec(1000, Some(b"k"), Some(b"v"))), (6, rec(-1, None, Some(b"")))];
        for magic in [0, 1] {
            let mut set = BytesMut::new();
            encode_set(&mut set, &records, magic);
            assert_eq!(set.len(), set_len(&records, magic));
            assert_eq!(i64::from_be_bytes(set[..8].try_into().unwrap()), 5);
            let got = decode(set.freeze(), &mut 0).unwrap();
            assert_eq!(got.len(), 2);
            for (g, (_, want)) in got.iter().zip(&records) {
                let ts = if magic == 0 { -1 } else { want.timestamp_ms };
                assert_eq!((g.timestamp_ms, &g.key, &g.value), (ts, &want.key, &want.value));
                assert!(g.headers.is_empty());
            }
        }
    }

    #[test]
    fn corrupt_crc_and_truncation_are_refused() {
        let mut set = Vec::new();
        encode_message(&mut set, 1, 7, Some(b"k"), Some(b"v"));
        let mut bad = set.clone();
        *bad.last_mut().unwrap() ^= 0xff;
        assert_eq!(decode(bad.into(), &mut (100)), Err(BatchError::Crc));
        for cut in 1..set.len() {
            assert!(decode(Bytes::copy_from_slice(&set[..cut]), &mut (100)).is_err());
        }
    }
}

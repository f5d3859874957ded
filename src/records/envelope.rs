//! The envelope that carries what a SeaweedFS `DataMessage` cannot: null-ness of key and
//! value, the exact timestamp, headers, and for a record of an idempotent producer the batch
//! it came in.
//!
//! Layout of `DataMessage.value`, all integers as Kafka-style zigzag varints. Format 1:
//! ```text
//! u8      format   = 1
//! u8      flags    bit 0: key is null, bit 1: value is null
//! varlong timestamp_ms
//! varint  header_count
//!   repeated: varint key_len, key bytes, varint value_len (-1 = null), value bytes
//! bytes   the record value (to the end)
//! ```
//! Format 2 (records of idempotent producers) is format 1 with the batch's identity after the
//! flags: `varlong producer_id, varint producer_epoch, varint base_sequence, varint
//! record_count`. A partition's new writer reads it back from the partition's tail
//! (`writers`) to recognise a retried batch that its predecessor stored but never answered.
//!
//! This is persisted data: a change needs a new format number and a reader for the old ones.

use bytes::{BufMut, BytesMut};

use super::Record;
use crate::seaweed::Message;

pub const FORMAT: u8 = 1;
/// [`FORMAT`] with the producer batch section.
pub const FORMAT_PRODUCED: u8 = 2;
const KEY_NULL: u8 = 1;
const VALUE_NULL: u8 = 2;

/// The idempotent-producer batch a record was written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Produced {
    pub producer_id: i64,
    pub epoch: i16,
    pub base_sequence: i32,
    /// Records in the batch.
    pub count: i32,
}

/// Build the SeaweedFS message for one Kafka record.
pub fn to_message(r: &Record) -> Message {
    to_message_from(r, None)
}

/// Build the SeaweedFS message for one Kafka record, written in the idempotent batch
/// `produced` when given.
pub fn to_message_from(r: &Record, produced: Option<&Produced>) -> Message {
    let value = r.value.as_deref().unwrap_or_default();
    let mut buf = BytesMut::with_capacity(40 + value.len() + headers_len(r));
    buf.put_u8(if produced.is_some() { FORMAT_PRODUCED } else { FORMAT });
    let mut flags = 0;
    if r.key.is_none() {
        flags |= KEY_NULL;
    }
    if r.value.is_none() {
        flags |= VALUE_NULL;
    }
    buf.put_u8(flags);
    if let Some(p) = produced {
        put_varlong(&mut buf, p.producer_id);
        put_varlong(&mut buf, i64::from(p.epoch));
        put_varlong(&mut buf, i64::from(p.base_sequence));
        put_varlong(&mut buf, i64::from(p.count));
    }
    put_varlong(&mut buf, r.timestamp_ms);
    put_varlong(&mut buf, r.headers.len() as i64);
    for (k, v) in &r.headers {
        put_varlong(&mut buf, k.len() as i64);
        buf.put_slice(k);
        match v {
            None => put_varlong(&mut buf, -1),
            Some(v) => {
                put_varlong(&mut buf, v.len() as i64);
                buf.put_slice(v);
            }
        }
    }
    buf.put_slice(value);
    Message {
        key: r.key.clone().unwrap_or_default(),
        value: buf.freeze(),
        // The broker's clock: it keeps a partition's stored timestamps strictly increasing, so
        // a client-chosen timestamp would drag later records' timestamps (and log file names)
        // along. The exact Kafka timestamp is in the envelope.
        ts_ns: 0,
    }
}

/// Recover the Kafka record from a stored message. A message without a kelp envelope (written
/// by another SeaweedFS publisher) is served as key/value with the broker's timestamp.
pub fn from_message(m: &Message) -> Record {
    decode(m).unwrap_or_else(|| Record {
        timestamp_ms: m.ts_ns / 1_000_000,
        key: Some(m.key.clone()),
        value: Some(m.value.clone()),
        headers: Vec::new(),
    })
}

/// The idempotent batch a stored message was written in; `None` for any other message.
pub fn produced(m: &Message) -> Option<Produced> {
    let v = &m.value;
    if v.len() < 2 || v[0] != FORMAT_PRODUCED {
        return None;
    }
    let mut pos = 2;
    produced_at(v, &mut pos)
}

fn produced_at(v: &[u8], pos: &mut usize) -> Option<Produced> {
    Some(Produced {
        producer_id: get_varlong(v, pos)?,
        epoch: i16::try_from(get_varlong(v, pos)?).ok()?,
        base_sequence: i32::try_from(get_varlong(v, pos)?).ok()?,
        count: i32::try_from(get_varlong(v, pos)?).ok()?,
    })
}

fn decode(m: &Message) -> Option<Record> {
    let v = &m.value;
    if v.len() < 2 || !matches!(v[0], FORMAT | FORMAT_PRODUCED) {
        return None;
    }
    let flags = v[1];
    let mut pos = 2;
    if v[0] == FORMAT_PRODUCED {
        produced_at(v, &mut pos)?;
    }
    let timestamp_ms = get_varlong(v, &mut pos)?;
    let count = get_varlong(v, &mut pos)?;
    // A header takes at least two bytes (its key's and its value's lengths): a count beyond
    // that is not kelp's envelope, and reserving for it would cost 64 bytes of memory per
    // byte of the message.
    if count < 0 || count as usize > (v.len() - pos) / 2 {
        return None;
    }
    let mut headers = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let klen = usize::try_from(get_varlong(v, &mut pos)?).ok()?;
        let key = v.slice(pos..pos.checked_add(klen).filter(|e| *e <= v.len())?);
        pos += klen;
        let vlen = get_varlong(v, &mut pos)?;
        let value = if vlen < 0 {
            None
        } else {
            let vlen = vlen as usize;
            let s = v.slice(pos..pos.checked_add(vlen).filter(|e| *e <= v.len())?);
            pos += vlen;
            Some(s)
        };
        headers.push((key, value));
    }
    Some(Record {
        timestamp_ms,
        key: (flags & KEY_NULL == 0).then(|| m.key.clone()),
        value: (flags & VALUE_NULL == 0).then(|| v.slice(pos..)),
        headers,
    })
}

fn headers_len(r: &Record) -> usize {
    r.headers.iter().map(|(k, v)| 10 + k.len() + v.as_ref().map_or(0, |v| v.len())).sum()
}

/// Kafka's zigzag varlong.
pub fn put_varlong(buf: &mut impl BufMut, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        buf.put_u8((z as u8) | 0x80);
        z >>= 7;
    }
    buf.put_u8(z as u8);
}

/// Read a zigzag varlong at `*pos`, advancing it; `None` if truncated or over 10 bytes.
pub fn get_varlong(b: &[u8], pos: &mut usize) -> Option<i64> {
    let mut z: u64 = 0;
    for shift in (0..70).step_by(7) {
        let byte = *b.get(*pos)?;
        *pos += 1;
        z |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(((z >> 1) as i64) ^ -((z & 1) as i64));
        }
    }
    None
}

/// Bytes a varlong takes on the wire.
pub fn varlong_len(v: i64) -> usize {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    let mut n = 1;
    while z >= 0x80 {
        z >>= 7;
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    /// A stored value claiming more headers than its bytes can hold (one per byte, here) is
    /// served as another publisher's message. The count used to be checked against the whole
    /// length only, reserving 64 bytes per claimed header first (the fuzz corpus,
    /// `tests/fuzz-corpus/stored/`, replays such inputs within a memory bound).
    #[test]
    fn a_header_count_the_bytes_cannot_hold_is_not_an_envelope() {
        let mut value = BytesMut::new();
        value.put_u8(FORMAT);
        value.put_u8(0);
        put_varlong(&mut value, 5); // timestamp
        put_varlong(&mut value, 1000); // header count
        value.put_slice(&[0; 1000]);
        let m = Message { key: b("k"), value: value.freeze(), ts_ns: 3_000_000 };
        let r = from_message(&m);
        assert_eq!(r.value.as_ref(), Some(&m.value), "served as it is stored");
        assert_eq!(r.timestamp_ms, 3);
        assert!(r.headers.is_empty());
    }

    #[test]
    fn every_shape_of_record_round_trips() {
        let cases = vec![
            Record {
                timestamp_ms: 1_700_000_000_123,
                key: Some(b("k")),
                value: Some(b("v")),
                headers: vec![],
            },
            Record { timestamp_ms: 0, key: None, value: None, headers: vec![] },
            Record { timestamp_ms: -1, key: Some(b("")), value: Some(b("")), headers: vec![] },
            Record {
                timestamp_ms: 42,
                key: None,
                value: Some(b("payload")),
                headers: vec![
                    (b("h"), Some(b("1"))),
                    (b("h"), Some(b("2"))),
                    (b("n"), None),
                    (b(""), Some(b(""))),
                ],
            },
        ];
        let batch = Produced { producer_id: 1 << 40, epoch: 3, base_sequence: 7, count: 2 };
        for r in cases {
            let m = to_message(&r);
            assert_eq!(from_message(&m), r);
            assert_eq!(m.ts_ns, 0, "the broker's clock stamps the message");
            assert_eq!(produced(&m), None);
            let m = to_message_from(&r, Some(&batch));
            assert_eq!(from_message(&m), r, "format 2 reads back the same record");
            assert_eq!(produced(&m), Some(batch));
        }
    }

    #[test]
    fn value_is_the_suffix_of_the_stored_message() {
        let r =
            Record { timestamp_ms: 5, key: Some(b("k")), value: Some(b("hello")), headers: vec![] };
        let m = to_message(&r);
        assert!(m.value.ends_with(b"hello"));
        assert_eq!(m.key, b("k"));
    }

    #[test]
    fn foreign_messages_are_served_as_plain_key_value() {
        let m = Message { key: b("k"), value: b("plain"), ts_ns: 3_000_000 };
        let r = from_message(&m);
        assert_eq!(
            r,
            Record { timestamp_ms: 3, key: Some(b("k")), value: Some(b("plain")), headers: vec![] }
        );
    }

    #[test]
    fn truncated_envelopes_never_panic() {
        let r = Record {
            timestamp_ms: 9,
            key: None,
            value: Some(b("v")),
            headers: vec![(b("a"), Some(b("bb")))],
        };
        let batch = Produced { producer_id: 5, epoch: 0, base_sequence: 0, count: 1 };
        for m in [to_message(&r), to_message_from(&r, Some(&batch))] {
            for cut in 0..m.value.len() {
                let t = Message { key: m.key.clone(), value: m.value.slice(..cut), ts_ns: 0 };
                let _ = from_message(&t);
                let _ = produced(&t);
            }
        }
    }

    #[test]
    fn varlong_matches_kafka_zigzag() {
        for (v, bytes) in
            [(0i64, vec![0u8]), (-1, vec![1]), (1, vec![2]), (63, vec![126]), (64, vec![128, 1])]
        {
            let mut buf = Vec::new();
            put_varlong(&mut buf, v);
            assert_eq!(buf, bytes);
            assert_eq!(varlong_len(v), bytes.len());
            let mut pos = 0;
            assert_eq!(get_varlong(&buf, &mut pos), Some(v));
        }
        for v in [i64::MIN, i64::MAX, 1 << 40] {
            let mut buf = Vec::new();
            put_varlong(&mut buf, v);
            let mut pos = 0;
            assert_eq!(get_varlong(&buf, &mut pos), Some(v));
        }
    }
}

//! Checked reads and plain writes of the non-flexible Kafka primitives the old layouts use.
//!
//! Every read checks the bytes left first; every array count is checked against the bytes
//! left and the smallest size one element can take, so a claimed count can never reserve
//! more than the frame holds.

use anyhow::{Context, ensure};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::protocol::StrBytes;

fn need(buf: &Bytes, n: usize) -> anyhow::Result<()> {
    ensure!(buf.remaining() >= n, "truncated: {n} bytes wanted, {} left", buf.remaining());
    Ok(())
}

pub fn i8(buf: &mut Bytes) -> anyhow::Result<i8> {
    need(buf, 1)?;
    Ok(buf.get_i8())
}

pub fn bool(buf: &mut Bytes) -> anyhow::Result<bool> {
    Ok(i8(buf)? != 0)
}

pub fn i16(buf: &mut Bytes) -> anyhow::Result<i16> {
    need(buf, 2)?;
    Ok(buf.get_i16())
}

pub fn i32(buf: &mut Bytes) -> anyhow::Result<i32> {
    need(buf, 4)?;
    Ok(buf.get_i32())
}

pub fn i64(buf: &mut Bytes) -> anyhow::Result<i64> {
    need(buf, 8)?;
    Ok(buf.get_i64())
}

/// An array's element count, each element taking at least `min_len` bytes (at least 1).
/// A null array (-1) reads as `None`.
pub fn nullable_count(buf: &mut Bytes, min_len: usize) -> anyhow::Result<Option<usize>> {
    let n = i32(buf)?;
    if n < 0 {
        ensure!(n == -1, "array length {n}");
        return Ok(None);
    }
    let n = n as usize;
    ensure!(n <= buf.remaining() / min_len.max(1), "array of {n} in {} bytes", buf.remaining());
    Ok(Some(n))
}

/// A non-null array's element count (see [`nullable_count`]).
pub fn count(buf: &mut Bytes, min_len: usize) -> anyhow::Result<usize> {
    nullable_count(buf, min_len)?.context("null array")
}

/// A nullable string (i16 length, -1 = null).
pub fn nullable_string(buf: &mut Bytes) -> anyhow::Result<Option<StrBytes>> {
    let n = i16(buf)?;
    if n < 0 {
        ensure!(n == -1, "string length {n}");
        return Ok(None);
    }
    need(buf, n as usize)?;
    Ok(Some(StrBytes::from_utf8(buf.split_to(n as usize))?))
}

/// A non-null string.
pub fn string(buf: &mut Bytes) -> anyhow::Result<StrBytes> {
    nullable_string(buf)?.context("null string")
}

/// Nothing may follow the last field.
pub fn end(buf: &Bytes) -> anyhow::Result<()> {
    ensure!(!buf.has_remaining(), "{} trailing bytes", buf.remaining());
    Ok(())
}

/// Write an array count.
pub fn put_count(buf: &mut BytesMut, n: usize) -> anyhow::Result<()> {
    buf.put_i32(i32::try_from(n).context("array too long")?);
    Ok(())
}

/// Write a nullable string (i16 length, -1 = null).
pub fn put_nullable_string(buf: &mut BytesMut, s: Option<&str>) -> anyhow::Result<()> {
    match s {
        None => buf.put_i16(-1),
        Some(s) => {
            buf.put_i16(i16::try_from(s.len()).context("string too long")?);
            buf.put_slice(s.as_bytes());
        }
    }
    Ok(())
}

/// Write a non-null string.
pub fn put_string(buf: &mut BytesMut, s: &str) -> anyhow::Result<()> {
    put_nullable_string(buf, Some(s))
}

/// Write nullable bytes (i32 length, -1 = null).
pub fn put_bytes(buf: &mut BytesMut, b: Option<&[u8]>) -> anyhow::Result<()> {
    match b {
        None => buf.put_i32(-1),
        Some(b) => {
            buf.put_i32(i32::try_from(b.len()).context("bytes too long")?);
            buf.put_slice(b);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_checked_against_the_bytes_left() {
        let mut b = Bytes::from_static(&[0, 0, 0, 3, 1, 2, 3]);
        assert!(count(&mut b, 2).is_err());
        let mut b = Bytes::from_static(&[0, 0, 0, 3, 1, 2, 3]);
        assert_eq!(count(&mut b, 1).unwrap(), 3);
        let mut b = Bytes::from_static(&[0xff, 0xff, 0xff, 0xff]);
        assert_eq!(nullable_count(&mut b, 1).unwrap(), None);
        let mut b = Bytes::from_static(&[0xff, 0xff, 0xff, 0xfe]);
        assert!(nullable_count(&mut b, 1).is_err());
    }

    #[test]
    fn strings_round_trip_and_truncation_is_an_error() {
        let mut out = BytesMut::new();
        put_string(&mut out, "topic").unwrap();
        put_nullable_string(&mut out, None).unwrap();
        let mut b = out.clone().freeze();
        assert_eq!(&*string(&mut b).unwrap(), "topic");
        assert_eq!(nullable_string(&mut b).unwrap(), None);
        end(&b).unwrap();
        for cut in 0..7 {
            assert!(string(&mut Bytes::copy_from_slice(&out[..cut])).is_err());
        }
        assert!(string(&mut Bytes::from_static(&[0xff, 0xff])).is_err());
    }
}

//! Decompression of produced batches, bounded in output size.
//!
//! Every codec stops at `limit` decompressed bytes so a small "zip bomb" batch cannot take
//! a connection's memory with it. Snappy is accepted in both framings clients use: the raw
//! block format (librdkafka) and the xerial stream format (the Java client).

use std::io::Read;

use bytes::Bytes;

use super::BatchError;

/// The compression codec named by a batch's attributes (bits 0-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Codec {
    pub fn from_attributes(attributes: i16) -> Result<Codec, BatchError> {
        match attributes & 0x7 {
            0 => Ok(Codec::None),
            1 => Ok(Codec::Gzip),
            2 => Ok(Codec::Snappy),
            3 => Ok(Codec::Lz4),
            4 => Ok(Codec::Zstd),
            other => Err(BatchError::UnsupportedCodec(other)),
        }
    }
}

/// The 8-byte magic that starts a xerial (snappy-java) stream, followed by two i32s
/// (version, compatible version) and then length-prefixed raw snappy blocks.
const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER_LEN: usize = 16;

/// Decompress `body` with `codec` into at most `budget` bytes, taking what it produced from
/// `budget`; an uncompressed body costs nothing (it already sits in the request).
pub fn decompress_within(
    codec: Codec,
    body: Bytes,
    budget: &mut usize,
) -> Result<Bytes, BatchError> {
    if codec == Codec::None {
        return Ok(body);
    }
    let out = decompress(codec, body, *budget)?;
    *budget -= out.len();
    Ok(out)
}

/// Decompress `body` with `codec`, failing with `TooLarge(limit)` beyond `limit` bytes.
pub fn decompress(codec: Codec, body: Bytes, limit: usize) -> Result<Bytes, BatchError> {
    match codec {
        Codec::None => Ok(body),
        Codec::Gzip => read_bounded(flate2::read::MultiGzDecoder::new(&body[..]), limit),
        Codec::Lz4 => read_bounded(lz4_flex::frame::FrameDecoder::new(&body[..]), limit),
        Codec::Zstd => {
            let d = zstd::stream::read::Decoder::new(&body[..])
                .map_err(|e| BatchError::malformed(format!("zstd: {e}")))?;
            read_bounded(d, limit)
        }
        Codec::Snappy if body.starts_with(XERIAL_MAGIC) => xerial(&body, limit),
        Codec::Snappy => {
            let mut out = Vec::new();
            snappy_block(&body, limit, &mut out)?;
            Ok(out.into())
        }
    }
}

fn read_bounded(r: impl Read, limit: usize) -> Result<Bytes, BatchError> {
    let mut out = Vec::new();
    r.take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| BatchError::malformed(format!("decompression: {e}")))?;
    if out.len() > limit {
        return Err(BatchError::TooLarge(limit));
    }
    Ok(out.into())
}

fn snappy_block(block: &[u8], limit: usize, out: &mut Vec<u8>) -> Result<(), BatchError> {
    let n = snap::raw::decompress_len(block)
        .map_err(|e| BatchError::malformed(format!("snappy: {e}")))?;
    if out.len() + n > limit {
        return Err(BatchError::TooLarge(limit));
    }
    let start = out.len();
    out.resize(start + n, 0);
    snap::raw::Decoder::new()
        .decompress(block, &mut out[start..])
        .map_err(|e| BatchError::malformed(format!("snappy: {e}")))?;
    Ok(())
}

fn xerial(body: &[u8], limit: usize) -> Result<Bytes, BatchError> {
    let mut rest = body
        .get(XERIAL_HEADER_LEN..)
        .ok_or_else(|| BatchError::malformed("short xerial header"))?;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let len = rest
            .get(..4)
            .map(|l| i32::from_be_bytes(l.try_into().expect("4 bytes")))
            .filter(|l| *l >= 0 && (*l as usize) <= rest.len() - 4)
            .ok_or_else(|| BatchError::malformed("bad xerial block length"))?
            as usize;
        snappy_block(&rest[4..4 + len], limit, &mut out)?;
        rest = &rest[4 + len..];
    }
    Ok(out.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xerial_framing_with_several_blocks_decodes() {
        let a = snap::raw::Encoder::new().compress_vec(b"hello ").unwrap();
        let b = snap::raw::Encoder::new().compress_vec(b"world").unwrap();
        let mut body = Vec::from(XERIAL_MAGIC);
        body.extend_from_slice(&1i32.to_be_bytes());
        body.extend_from_slice(&1i32.to_be_bytes());
        for blk in [&a, &b] {
            body.extend_from_slice(&(blk.len() as i32).to_be_bytes());
            body.extend_from_slice(blk);
        }
        let out = decompress(Codec::Snappy, body.into(), 100).unwrap();
        assert_eq!(&out[..], b"hello world");
    }

    #[test]
    fn unknown_codec_bits_are_refused() {
        assert_eq!(Codec::from_attributes(5), Err(BatchError::UnsupportedCodec(5)));
        assert_eq!(Codec::from_attributes(0x10 | 4), Ok(Codec::Zstd));
    }

    #[test]
    fn garbage_is_malformed_in_every_codec() {
        for c in [Codec::Gzip, Codec::Snappy, Codec::Lz4, Codec::Zstd] {
            assert!(
                matches!(
                    decompress(c, Bytes::from_static(b"\x01\x02garbage"), 100),
                    Err(BatchError::Malformed(_))
                ),
                "{c:?}"
            );
        }
    }
}

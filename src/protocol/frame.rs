//! Frames: the 4-byte big-endian length prefix in front of every Kafka request and response,
//! on an application's connection and on the peer link between kelps alike.
//!
//! Owns: reading one frame from any byte stream (bounded, cancellation-safe), writing one
//! (bounded in time) and building a length-prefixed buffer. Does not own what a frame holds
//! (`protocol::decode_request`, `protocol::encode_response`) or when a connection closes.

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Size of the length prefix.
pub const PREFIX: usize = 4;

/// Read growth step: a frame buffer never grows by more than this before bytes arrive. Large
/// enough that a typical 1 MB produce batch needs few reallocations, small enough that a
/// peer announcing a huge frame and sending nothing holds little memory.
const READ_CHUNK: usize = 256 * 1024;

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame length {0} outside 0..={1}")]
    Size(i64, u32),
    #[error("writing a frame took longer than {0:?}")]
    WriteTimeout(Duration),
}

/// Reads frames from one stream. Bytes read but not yet part of a whole frame stay here, so
/// [`FrameReader::read`] is cancellation-safe: a `select!` that drops a read loses nothing,
/// and the next call continues where it stopped.
pub struct FrameReader {
    buf: BytesMut,
    max: u32,
}

impl FrameReader {
    /// A reader refusing frames longer than `max` bytes (not counting the prefix).
    pub fn new(max: u32) -> FrameReader {
        FrameReader { buf: BytesMut::new(), max }
    }

    /// Bytes received towards the next frame (0: between frames).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next frame, without its prefix; `None` when the stream ended cleanly between
    /// frames. A stream that ends inside a frame is `UnexpectedEof`. Memory grows only as
    /// bytes arrive, so a huge length prefix alone costs nothing.
    pub async fn read(
        &mut self,
        stream: &mut (impl AsyncRead + Unpin),
    ) -> Result<Option<Bytes>, FrameError> {
        loop {
            if let Some(frame) = self.split_frame()? {
                return Ok(Some(frame));
            }
            let want = self.missing();
            self.buf.reserve(want.min(READ_CHUNK));
            let room = want.min(self.buf.capacity() - self.buf.len());
            if (&mut *stream).take(room as u64).read_buf(&mut self.buf).await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into())
                };
            }
        }
    }

    /// Bytes still needed before the next frame (or its prefix) is whole; at least 1.
    fn missing(&self) -> usize {
        match self.announced() {
            Some(n) => PREFIX + n - self.buf.len(),
            None => PREFIX - self.buf.len(),
        }
    }

    /// The length the buffered prefix announces, once the prefix is whole and valid.
    fn announced(&self) -> Option<usize> {
        let prefix: [u8; PREFIX] = self.buf.get(..PREFIX)?.try_into().ok()?;
        let n = i32::from_be_bytes(prefix);
        (n >= 0 && n as u32 <= self.max).then_some(n as usize)
    }

    fn split_frame(&mut self) -> Result<Option<Bytes>, FrameError> {
        if self.buf.len() < PREFIX {
            return Ok(None);
        }
        let Some(n) = self.announced() else {
            let n = (&self.buf[..PREFIX]).get_i32();
            return Err(FrameError::Size(i64::from(n), self.max));
        };
        if self.buf.len() < PREFIX + n {
            return Ok(None);
        }
        let mut frame = self.buf.split_to(PREFIX + n);
        frame.advance(PREFIX);
        Ok(Some(frame.freeze()))
    }
}

/// A buffer holding a placeholder prefix; write the frame's contents after it, then
/// [`finish`] it.
pub fn start(capacity: usize) -> BytesMut {
    let mut buf = BytesMut::with_capacity(PREFIX + capacity);
    buf.put_i32(0);
    buf
}

/// Fill in the prefix of a buffer made by [`start`].
pub fn finish(buf: &mut BytesMut) -> Result<(), FrameError> {
    let len = buf.len() - PREFIX;
    let n = i32::try_from(len).map_err(|_| FrameError::Size(len as i64, i32::MAX as u32))?;
    buf[..PREFIX].copy_from_slice(&n.to_be_bytes());
    Ok(())
}

/// `payload` as a whole frame.
pub fn wrap(payload: &[u8]) -> Result<BytesMut, FrameError> {
    let mut buf = start(payload.len());
    buf.extend_from_slice(payload);
    finish(&mut buf)?;
    Ok(buf)
}

/// Write a whole frame (prefix included) and flush it; a peer that stops reading for
/// `within` is given up on rather than holding the connection's task and buffers forever.
///
/// The flush is a no-op on a TCP stream; on a TLS stream it sends what the TLS layer still
/// holds when the socket was full at the end of the write, which would otherwise wait for
/// the next write while the client waits for this response.
pub async fn write(
    stream: &mut (impl AsyncWrite + Unpin),
    frame: &[u8],
    within: Duration,
) -> Result<(), FrameError> {
    let written = async {
        stream.write_all(frame).await?;
        stream.flush().await
    };
    tokio::time::timeout(within, written).await.map_err(|_| FrameError::WriteTimeout(within))??;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_written_frame_leaves_a_buffering_stream() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut buffered = tokio::io::BufWriter::new(a);
        write(&mut buffered, &[0, 0, 0, 1, 7], Duration::from_secs(1)).await.unwrap();
        let mut r = FrameReader::new(100);
        let frame = tokio::time::timeout(Duration::from_secs(1), r.read(&mut b)).await;
        assert_eq!(frame.expect("sent without another write").unwrap().unwrap(), &[7][..]);
    }

    #[tokio::test]
    async fn frames_are_split_bounded_and_eof_is_told_apart() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&[0, 0, 0, 3, 1, 2, 3, 0, 0, 0, 0, 0, 0, 1, 0]).await.unwrap();
        let mut r = FrameReader::new(100);
        assert_eq!(r.read(&mut b).await.unwrap().unwrap(), Bytes::from_static(&[1, 2, 3]));
        assert_eq!(r.read(&mut b).await.unwrap().unwrap(), Bytes::new(), "an empty frame");
        assert!(matches!(r.read(&mut b).await, Err(FrameError::Size(256, 100))));

        let (a, mut b) = tokio::io::duplex(64);
        drop(a);
        assert!(FrameReader::new(100).read(&mut b).await.unwrap().is_none(), "clean end");

        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&[0, 0, 0, 9, 1]).await.unwrap();
        drop(a);
        let err = FrameReader::new(100).read(&mut b).await.unwrap_err();
        assert!(matches!(err, FrameError::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof));

        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&(-1i32).to_be_bytes()).await.unwrap();
        assert!(matches!(FrameReader::new(100).read(&mut b).await, Err(FrameError::Size(-1, _))));
    }

    #[tokio::test]
    async fn a_huge_announced_frame_holds_memory_only_for_bytes_that_arrived() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        a.write_all(&(1i32 << 30).to_be_bytes()).await.unwrap();
        a.write_all(&[7; 10]).await.unwrap();
        let mut r = FrameReader::new(u32::MAX);
        let read = tokio::time::timeout(Duration::from_millis(50), r.read(&mut b)).await;
        assert!(read.is_err(), "still waiting for the rest");
        assert_eq!(r.buffered(), 14);
        // At most one growth step beyond what arrived (the allocator may round it up to double).
        assert!(r.buf.capacity() <= 2 * (PREFIX + READ_CHUNK), "{}", r.buf.capacity());
    }

    #[tokio::test]
    async fn a_read_dropped_midway_loses_no_bytes() {
        let (mut a, mut b) = tokio::io::duplex(64);
        let mut r = FrameReader::new(100);
        a.write_all(&[0, 0, 0, 4, 9, 9]).await.unwrap();
        let first = tokio::time::timeout(Duration::from_millis(20), r.read(&mut b)).await;
        assert!(first.is_err());
        a.write_all(&[8, 8]).await.unwrap();
        assert_eq!(r.read(&mut b).await.unwrap().unwrap(), Bytes::from_static(&[9, 9, 8, 8]));
    }

    #[test]
    fn wrap_prefixes_the_length() {
        assert_eq!(&wrap(b"abc").unwrap()[..], &[0, 0, 0, 3, b'a', b'b', b'c']);
        let mut buf = start(0);
        buf.put_u8(1);
        finish(&mut buf).unwrap();
        assert_eq!(&buf[..], &[0, 0, 0, 1, 1]);
    }
}

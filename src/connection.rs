//! One Kafka connection: read length-prefixed frames, answer them in order, close on anything
//! that is not a well-formed request.
//!
//! Requests are handled one at a time, so responses leave in request order by construction
//! (clients pipeline; Kafka requires in-order answers per connection). A frame's buffer grows
//! as its bytes arrive, so a huge length prefix with nothing behind it costs no memory.
//! This is the only place that closes a connection.
//!
//! A connection over a client quota is held here: not read again until the throttle has
//! passed (and, for clients older than KIP-219, not even answered until then). With SASL on,
//! a connection that has not logged in may only send the login APIs (`session.rs`).

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{Instrument, debug, debug_span};

use crate::api;
use crate::ctx::Ctx;
use crate::protocol::{self, DecodeError};
use crate::session::{SaslFailed, Session};
use crate::shutdown::CancellationToken;

/// Why a connection ended other than by the peer closing it.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame length {0} outside 0..={1}")]
    FrameSize(i32, u32),
    #[error("decode: {0}")]
    Decode(#[from] DecodeError),
    #[error("encode: {0}")]
    Encode(anyhow::Error),
    #[error("idle for longer than the idle timeout")]
    Idle,
    #[error("{0:?} before SASL authentication")]
    Unauthenticated(kafka_protocol::messages::ApiKey),
    #[error(transparent)]
    Sasl(#[from] SaslFailed),
    #[error("closed after a failed SASL authentication")]
    AuthenticationFailed,
}

/// Read growth step: a frame buffer never grows by more than this before bytes arrive. Large
/// enough that a typical 1 MB produce batch needs few reallocations, small enough that a
/// peer announcing a huge frame and sending nothing holds little memory.
const READ_CHUNK: usize = 256 * 1024;

/// Serve one connection until the peer closes it, it breaks the protocol, it idles out, or
/// kelp shuts down (the request in progress is answered first).
pub async fn serve(
    ctx: &Ctx,
    stream: TcpStream,
    cancel: &CancellationToken,
) -> Result<(), ConnError> {
    let metrics = crate::metrics::global();
    metrics.connections.inc();
    metrics.connections_active.inc();
    let r = serve_frames(ctx, stream, cancel).await;
    metrics.connections_active.dec();
    r
}

async fn serve_frames(
    ctx: &Ctx,
    mut stream: TcpStream,
    cancel: &CancellationToken,
) -> Result<(), ConnError> {
    let metrics = crate::metrics::global();
    let max = ctx.config.max_frame_bytes;
    let mut session = Session::new(ctx);
    loop {
        let mut len = [0u8; 4];
        let first = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            r = tokio::time::timeout(ctx.config.idle_timeout(), stream.read(&mut len[..1])) => r.map_err(|_| ConnError::Idle)??,
        };
        if first == 0 {
            return Ok(());
        }
        let frame = tokio::time::timeout(ctx.config.idle_timeout(), async {
            stream.read_exact(&mut len[1..]).await?;
            let n = i32::from_be_bytes(len);
            if n < 0 || n as u32 > max {
                return Err(ConnError::FrameSize(n, max));
            }
            let n = n as usize;
            let mut buf = BytesMut::with_capacity(n.min(READ_CHUNK));
            while buf.len() < n {
                buf.reserve((n - buf.len()).min(READ_CHUNK));
                let want = (n - buf.len()).min(buf.capacity() - buf.len());
                let got = (&mut stream).take(want as u64).read_buf(&mut buf).await?;
                if got == 0 {
                    return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
                }
            }
            Ok(buf.freeze())
        })
        .await
        .map_err(|_| ConnError::Idle)??;

        metrics.bytes_received.inc_by(4 + frame.len() as u64);
        // After SaslHandshake v0 the client sends bare SASL tokens, answered the same way.
        if session.awaits_raw_token() {
            let token = session.raw_token(ctx, &frame)?;
            let mut out = BytesMut::with_capacity(4 + token.len());
            out.put_u32(token.len() as u32);
            out.extend_from_slice(&token);
            write(&mut stream, &out, ctx.config.idle_timeout()).await?;
            metrics.bytes_sent.inc_by(out.len() as u64);
            continue;
        }
        let request = match protocol::decode_request(frame.clone()) {
            Ok(r) => r,
            Err(e) => {
                debug!(correlation_id = protocol::peek_correlation_id(&frame), error = %e, "undecodable request");
                return Err(e.into());
            }
        };
        if !session.may_send(request.api_key) {
            return Err(ConnError::Unauthenticated(request.api_key));
        }
        let (key, version, correlation_id) =
            (request.api_key, request.version, request.header.correlation_id);
        let span = debug_span!("request", api = ?key, version, correlation_id);
        let answer = api::dispatch_client(ctx, &mut session, request, 4 + frame.len())
            .instrument(span)
            .await;
        if answer.hold_before_reply {
            hold(&mut session, cancel).await;
        }
        if let Some(reply) = answer.reply {
            let out = protocol::encode_response(key, version, correlation_id, &reply)
                .map_err(ConnError::Encode)?;
            write(&mut stream, &out, ctx.config.idle_timeout()).await?;
            metrics.bytes_sent.inc_by(out.len() as u64);
        }
        if session.closing() {
            return Err(ConnError::AuthenticationFailed);
        }
        hold(&mut session, cancel).await;
    }
}

/// Write a whole response; a client that stops reading for the idle timeout is dropped rather
/// than holding the connection's task and buffers forever.
async fn write(
    stream: &mut TcpStream,
    out: &[u8],
    within: std::time::Duration,
) -> Result<(), ConnError> {
    tokio::time::timeout(within, stream.write_all(out)).await.map_err(|_| ConnError::Idle)??;
    Ok(())
}

/// Wait out what the last request cost over quota (nothing to wait for when it was within);
/// shutdown cuts the wait short, and the loop then ends the connection.
async fn hold(session: &mut Session, cancel: &CancellationToken) {
    tokio::select! {
        _ = cancel.cancelled() => {}
        _ = session.hold() => {}
    }
}

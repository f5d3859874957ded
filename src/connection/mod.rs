//! One Kafka connection from an application: read frames, answer them in order, close on
//! anything that is not a well-formed request.
//!
//! Requests are handled one at a time, so responses leave in request order by construction
//! (clients pipeline; Kafka requires in-order answers per connection). This layer and
//! `peer` (the peer link's connections) are the only places that close a connection.
//!
//! Around each request: the `Session` (SASL state: with SASL on, a connection that has not
//! logged in may only send the login APIs), the client's quotas (charged here; a connection
//! over quota is not read again until the throttle has passed, and for clients older than
//! KIP-219 not even answered until then), what the client may do to the cluster (an
//! `authz::Authority`, handed down with the request), then `routing` decides where it is
//! answered.
//!
//! Owns: the request loop of a connection, its timeouts and its metrics. Does not own
//! accepting (`listener`), framing (`protocol::frame`) or what a request does (`api`).

pub mod peer;

use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{Instrument, debug, debug_span};

use crate::ctx::Ctx;
use crate::protocol::frame::{self, FrameError, FrameReader};
use crate::protocol::{self, DecodeError, versions};
use crate::routing;
use crate::session::{SaslFailed, Session};
use crate::shutdown::CancellationToken;

/// Why a connection ended other than by the peer closing it.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("frame: {0}")]
    Frame(#[from] FrameError),
    #[error("decode: {0}")]
    Decode(#[from] DecodeError),
    #[error("encode: {0}")]
    Encode(anyhow::Error),
    #[error("idle for longer than the idle timeout")]
    Idle,
    #[error("peer handshake: {0}")]
    PeerHandshake(#[from] crate::peer::handshake::HandshakeError),
    #[error("{0:?} is not a forwarded group api")]
    NotForwarded(kafka_protocol::messages::ApiKey),
    #[error("{0:?} before SASL authentication")]
    Unauthenticated(kafka_protocol::messages::ApiKey),
    #[error(transparent)]
    Sasl(#[from] SaslFailed),
    #[error("closed after {0}")]
    Closing(&'static str),
}

/// Serve one connection until the peer closes it, it breaks the protocol, it idles out, or
/// kelp shuts down (the request in progress is answered first). The stream is a plain TCP
/// connection or a TLS one over it (`tls`), read and written in place.
pub async fn serve<S>(ctx: &Ctx, stream: S, cancel: &CancellationToken)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let metrics = crate::metrics::global();
    metrics.connections.inc();
    metrics.connections_active.inc();
    if let Err(e) = serve_frames(ctx, stream, cancel).await {
        debug!(error = %e, "connection closed");
    }
    metrics.connections_active.dec();
}

async fn serve_frames(
    ctx: &Ctx,
    mut stream: impl AsyncRead + AsyncWrite + Unpin + Send,
    cancel: &CancellationToken,
) -> Result<(), ConnError> {
    let metrics = crate::metrics::global();
    let idle = ctx.config.idle_timeout();
    let mut frames = FrameReader::new(ctx.config.max_frame_bytes);
    let mut session = Session::new(ctx.sasl.as_ref());
    loop {
        let Some(frame) = next_frame(&mut frames, &mut stream, idle, cancel).await? else {
            return Ok(());
        };
        let request_bytes = frame::PREFIX + frame.len();
        metrics.bytes_received.inc_by(request_bytes as u64);
        // After SaslHandshake v0 the client sends bare SASL tokens, answered the same way.
        if session.awaits_raw_token() {
            let token = session.raw_token(ctx.sasl.as_ref(), frame).await?;
            let out = frame::wrap(&token)?;
            frame::write(&mut stream, &out, idle).await?;
            metrics.bytes_sent.inc_by(out.len() as u64);
            continue;
        }
        let mut request = match protocol::decode_request(frame.clone()) {
            Ok(r) => r,
            Err(e) => {
                let correlation_id = protocol::peek_correlation_id(&frame);
                debug!(correlation_id, error = %e, "undecodable request");
                return Err(e.into());
            }
        };
        if !session.may_send(request.api_key) {
            return Err(ConnError::Unauthenticated(request.api_key));
        }
        let (key, version) = (request.api_key, request.version);
        let correlation_id = request.header.correlation_id;
        let span = debug_span!("request", api = ?key, version, correlation_id);
        let started = Instant::now();
        let authority = session.authority(ctx.config.admin_apis, ctx.sasl.as_ref());
        let (conn, user) = session.quota_and_user();
        let governing = ctx.quotas.prepare(conn, user, &mut request);
        let reply = routing::answer(ctx, &mut session, authority, request).instrument(span).await;
        let (reply, hold_before_reply) =
            ctx.quotas.settle(&mut session.quota, &governing, key, version, request_bytes, reply);
        metrics.observe_request(versions::name(key), started.elapsed());
        if hold_before_reply {
            hold(&mut session, cancel).await;
        }
        if let Some(reply) = reply {
            let out = protocol::encode_response(key, version, correlation_id, &reply)
                .map_err(ConnError::Encode)?;
            frame::write(&mut stream, &out, idle).await?;
            metrics.bytes_sent.inc_by(out.len() as u64);
        }
        if let Some(why) = session.closing() {
            return Err(ConnError::Closing(why));
        }
        hold(&mut session, cancel).await;
    }
}

/// The next request frame; `None` when the client closed the connection or kelp is shutting
/// down between requests. Waiting for a request is bounded by `idle`; once a frame has begun
/// its rest must arrive within another `idle`, and shutdown no longer interrupts it.
pub(crate) async fn next_frame(
    frames: &mut FrameReader,
    stream: &mut (impl AsyncRead + Unpin),
    idle: Duration,
    cancel: &CancellationToken,
) -> Result<Option<Bytes>, ConnError> {
    let mut begun = false;
    loop {
        let between_frames = frames.buffered() == 0;
        let read = tokio::time::timeout(idle, frames.read(stream));
        let r = if between_frames {
            tokio::select! {
                _ = cancel.cancelled() => return Ok(None),
                r = read => r,
            }
        } else {
            read.await
        };
        match r {
            Ok(frame) => return Ok(frame?),
            // The frame began during this wait: it gets one more period to complete.
            Err(_) if !begun && frames.buffered() > 0 => begun = true,
            Err(_) => return Err(ConnError::Idle),
        }
    }
}

/// Wait out what the last request cost over quota (nothing to wait for when it was within);
/// shutdown cuts the wait short, and the loop then ends the connection.
async fn hold(session: &mut Session, cancel: &CancellationToken) {
    tokio::select! {
        _ = cancel.cancelled() => {}
        _ = session.hold() => {}
    }
}

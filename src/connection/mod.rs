//! One Kafka connection from an application: read frames, answer them in request order,
//! close on anything that is not a well-formed request.
//!
//! Clients pipeline (librdkafka keeps up to five Produce requests in flight), so a connection
//! handles up to `KELP_MAX_IN_FLIGHT_REQUESTS` requests (and `KELP_MAX_IN_FLIGHT_BYTES` of
//! them) at once: the next request is read and started while earlier ones wait for
//! SeaweedFS, and the answers are written strictly in request order, as Kafka requires. A
//! request started beside others holds its size of the process's memory budget; when the
//! budget has no room it waits until the requests before it are answered. Produce requests
//! keep their order per partition through their turns (`produce_order`): each queues its
//! records only after the connection's earlier Produce requests queued theirs. An acks=0
//! Produce has no answer but keeps its place: the answers after it wait for it.
//!
//! Some requests are handled alone, with nothing else in flight and nothing read after them
//! until they are answered: SaslHandshake, SaslAuthenticate, the bare tokens after
//! SaslHandshake v0, and every request of a connection that has not logged in yet (with
//! SASL on), because they change what the next request may do. This layer and `peer` (the
//! peer link's connections) are the only places that close a connection.
//!
//! Around each request: the `Session` (SASL state: with SASL on, a connection that has not
//! logged in may only send the login APIs), the client's quotas (charged when the request is
//! read and when it is answered, in request order; a connection over quota is not read
//! again until the throttle has passed, and for clients older than KIP-219 not even answered
//! until then), what the client may do to the cluster (an `authz::Authority`, handed down
//! with the request), then `routing` decides where it is answered.
//!
//! Owns: the request loop of a connection, its pipelining bounds, its timeouts and its
//! metrics. Does not own: accepting (`listener`), framing (`protocol::frame`) or what a
//! request does (`api`).

pub mod peer;

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use kafka_protocol::messages::ApiKey;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{Instrument, debug, debug_span};

use crate::authz::Authority;
use crate::ctx::Ctx;
use crate::memory::Share;
use crate::produce_order::{ProduceOrder, Turn};
use crate::protocol::frame::{self, FrameError, FrameReader};
use crate::protocol::{self, DecodeError, Reply, Request, versions};
use crate::quota::Governing;
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
    let idle = ctx.config.idle_timeout();
    let max_requests = ctx.config.max_in_flight_requests.max(1) as usize;
    let max_bytes = ctx.config.max_in_flight_bytes as usize;
    let mut frames = FrameReader::new(ctx.config.max_frame_bytes);
    let mut session = Session::new(ctx.sasl.as_ref());
    let mut order = ProduceOrder::default();
    let mut in_flight: FuturesOrdered<BoxFuture<'_, Answered>> = FuturesOrdered::new();
    let mut in_flight_bytes = 0usize;
    let mut reading = true;
    loop {
        let may_read = reading && in_flight.len() < max_requests && in_flight_bytes < max_bytes;
        if !may_read && in_flight.is_empty() {
            return Ok(());
        }
        // Only a connection with nothing in flight is idle.
        let wait = if in_flight.is_empty() { idle } else { Duration::MAX };
        tokio::select! {
            // Answers first: they free room for the next requests.
            biased;
            Some(done) = in_flight.next(), if !in_flight.is_empty() => {
                in_flight_bytes -= done.request_bytes;
                answer(ctx, &mut stream, &mut session, done, cancel).await?;
            }
            frame = next_frame(&mut frames, &mut stream, wait, cancel), if may_read => {
                let Some(frame) = frame? else {
                    // The client closed, or kelp is stopping: answer what was read, then end.
                    reading = false;
                    continue;
                };
                let request_bytes = frame::PREFIX + frame.len();
                crate::metrics::global().bytes_received.inc_by(request_bytes as u64);
                if session.awaits_raw_token() {
                    drain(ctx, &mut stream, &mut session, &mut in_flight, cancel).await?;
                    in_flight_bytes = 0;
                    let token = session.raw_token(ctx.sasl.as_ref(), frame).await?;
                    let out = frame::wrap(&token)?;
                    frame::write(&mut stream, &out, idle).await?;
                    crate::metrics::global().bytes_sent.inc_by(out.len() as u64);
                    continue;
                }
                let mut started = start(ctx, &mut session, frame, request_bytes)?;
                if alone(&session, started.key) {
                    drain(ctx, &mut stream, &mut session, &mut in_flight, cancel).await?;
                    in_flight_bytes = 0;
                    let done = started.run(ctx, &mut session).await;
                    answer(ctx, &mut stream, &mut session, done, cancel).await?;
                    continue;
                }
                // Beside other requests, a request holds its size of the memory budget;
                // without room, it waits until the requests before it are answered.
                if !in_flight.is_empty() {
                    match ctx.memory.try_take(request_bytes) {
                        Some(share) => started.share = Some(share),
                        None => {
                            drain(ctx, &mut stream, &mut session, &mut in_flight, cancel).await?;
                            in_flight_bytes = 0;
                        }
                    }
                }
                if started.key == ApiKey::Produce {
                    started.turn = Some(order.next());
                }
                in_flight_bytes += request_bytes;
                in_flight.push_back(Box::pin(started.run_beside(ctx)));
            }
        }
    }
}

/// A request read and admitted, not yet answered.
struct Started {
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    request_bytes: usize,
    request: Request,
    authority: Authority,
    governing: Governing,
    span: tracing::Span,
    started: Instant,
    /// Its share of the memory budget, when it runs beside other requests.
    share: Option<Share>,
    /// Its place among the connection's Produce requests.
    turn: Option<Turn>,
}

/// A request's answer, to be written in its place.
struct Answered {
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    request_bytes: usize,
    governing: Governing,
    reply: Option<Reply>,
    started: Instant,
    /// Why the connection must close once this request is answered.
    close: Option<&'static str>,
}

/// Decode a frame and admit it under the session: logged in (or a login API), its quotas
/// resolved.
fn start(
    ctx: &Ctx,
    session: &mut Session,
    frame: Bytes,
    request_bytes: usize,
) -> Result<Started, ConnError> {
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
    let authority = session.authority(ctx.config.admin_apis, ctx.sasl.as_ref());
    let (conn, user) = session.quota_and_user();
    let governing = ctx.quotas.prepare(conn, user, &mut request);
    Ok(Started {
        key,
        version,
        correlation_id,
        request_bytes,
        request,
        authority,
        governing,
        span,
        started: Instant::now(),
        share: None,
        turn: None,
    })
}

impl Started {
    /// Handle the request with the connection's own session (a request handled alone).
    async fn run(self, ctx: &Ctx, session: &mut Session) -> Answered {
        let Started { request, authority, span, .. } = self;
        let reply = routing::answer(ctx, session, authority, request).instrument(span).await;
        Answered {
            key: self.key,
            version: self.version,
            correlation_id: self.correlation_id,
            request_bytes: self.request_bytes,
            governing: self.governing,
            reply,
            started: self.started,
            close: None,
        }
    }

    /// Handle the request beside others, with a session of its own.
    async fn run_beside(self, ctx: &Ctx) -> Answered {
        let Started { request, authority, span, share, turn, .. } = self;
        let mut session = Session::for_request(turn);
        let reply = routing::answer(ctx, &mut session, authority, request).instrument(span).await;
        drop(share);
        Answered {
            key: self.key,
            version: self.version,
            correlation_id: self.correlation_id,
            request_bytes: self.request_bytes,
            governing: self.governing,
            reply,
            started: self.started,
            close: session.closing(),
        }
    }
}

/// Whether a request must be handled alone: it changes the login state, or the login state
/// may still change.
fn alone(session: &Session, key: ApiKey) -> bool {
    matches!(key, ApiKey::SaslHandshake | ApiKey::SaslAuthenticate) || !session.logged_in()
}

/// Answer every request in flight, in order.
async fn drain(
    ctx: &Ctx,
    stream: &mut (impl AsyncWrite + Unpin),
    session: &mut Session,
    in_flight: &mut FuturesOrdered<BoxFuture<'_, Answered>>,
    cancel: &CancellationToken,
) -> Result<(), ConnError> {
    while let Some(done) = in_flight.next().await {
        answer(ctx, stream, session, done, cancel).await?;
    }
    Ok(())
}

/// Charge a handled request to its quotas, write its answer (if it has one), then close the
/// connection if it must, or wait out the client's quota debt before reading on.
async fn answer(
    ctx: &Ctx,
    stream: &mut (impl AsyncWrite + Unpin),
    session: &mut Session,
    done: Answered,
    cancel: &CancellationToken,
) -> Result<(), ConnError> {
    let metrics = crate::metrics::global();
    let Answered { key, version, correlation_id, request_bytes, governing, reply, started, close } =
        done;
    let (reply, hold_before_reply) =
        ctx.quotas.settle(&mut session.quota, &governing, key, version, request_bytes, reply);
    metrics.observe_request(versions::name(key), started.elapsed());
    if let Some(why) = close {
        session.close_after_reply(why);
    }
    if hold_before_reply {
        hold(session, cancel).await;
    }
    if let Some(reply) = reply {
        let out = protocol::encode_response(key, version, correlation_id, &reply)
            .map_err(ConnError::Encode)?;
        frame::write(stream, &out, ctx.config.idle_timeout()).await?;
        metrics.bytes_sent.inc_by(out.len() as u64);
    }
    if let Some(why) = session.closing() {
        return Err(ConnError::Closing(why));
    }
    hold(session, cancel).await;
    Ok(())
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

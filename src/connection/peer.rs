//! One connection from another kelp's peer client: group requests that kelp forwards here
//! because this kelp owns (or may own) their group, and Produce requests for partitions this
//! kelp writes (or wrote when the other kelp looked), and Fetch requests from kelps waiting
//! for records of partitions this kelp writes (`tail`).
//!
//! A different door from an application's connection: it accepts only the forwarded group
//! APIs, Produce and Fetch (`routing::served_to_peers`; anything else closes the connection,
//! so the rest of the data path is not exposed on the pod network where the Kafka listener
//! stays on loopback; a Fetch from a peer is a wait, answered here and never sent on). A forwarded Produce is published only into partitions this kelp writes; the
//! others are answered NOT_LEADER_OR_FOLLOWER (`api::produce`). What applies
//! to application connections (client quotas, authentication, the right to delete groups and
//! offsets) was already applied by the kelp the application talks to. A request is answered
//! here, whoever owns its group (the handlers answer NOT_COORDINATOR unless this kelp does):
//! it is never forwarded again.
//!
//! Before anything else, the connecting kelp must pass the handshake (`peer::handshake`):
//! prove it knows the peer secret, within `HANDSHAKE_TIMEOUT`. One that does not is closed
//! having been sent nothing but the handshake's hello, and counted in
//! `kelp_peer_handshakes_total`. Without a secret (`KELP_PEER_ALLOW_UNAUTHENTICATED`) there is
//! no handshake. Frames are bounded by the peer link's limit (`Config::peer_frame_limit`:
//! a forwarded Produce is as large as the client's) and
//! every answer must be written within `peer::WRITE_TIMEOUT`.
//!
//! Owns: the request loop of a peer connection. Does not own framing (`protocol::frame`),
//! the handshake (`peer::handshake`) or what a group request does (`api`).

use std::time::Instant;

use tokio::net::TcpStream;
use tracing::{Instrument, debug, debug_span};

use super::{ConnError, next_frame};
use crate::api;
use crate::authz::Authority;
use crate::ctx::Ctx;
use crate::peer::{WRITE_TIMEOUT, handshake};
use crate::protocol::frame::{self, FrameReader};
use crate::protocol::{self, versions};
use crate::routing::served_to_peers;
use crate::session::Session;
use crate::shutdown::CancellationToken;

/// Serve one peer connection until the other kelp closes it, it fails the handshake, it sends
/// something other than a forwarded group request, it idles out, or this kelp shuts down.
pub async fn serve(ctx: &Ctx, stream: TcpStream, cancel: &CancellationToken) {
    if let Err(e) = serve_frames(ctx, stream, cancel).await {
        debug!(error = %e, "peer connection closed");
    }
}

async fn serve_frames(
    ctx: &Ctx,
    mut stream: TcpStream,
    cancel: &CancellationToken,
) -> Result<(), ConnError> {
    if let Some(secret) = ctx.peers.secret() {
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            shook = handshake::accept(&mut stream, secret) => shook?,
        }
    }
    let idle = ctx.config.idle_timeout();
    let mut frames = FrameReader::new(ctx.config.peer_frame_limit());
    let mut trusted = Session::new(None);
    loop {
        let Some(frame) = next_frame(&mut frames, &mut stream, idle, cancel).await? else {
            return Ok(());
        };
        let request = protocol::decode_request(frame)?;
        if !served_to_peers(request.api_key) {
            return Err(ConnError::NotForwarded(request.api_key));
        }
        let (key, version) = (request.api_key, request.version);
        let correlation_id = request.header.correlation_id;
        let span = debug_span!("forwarded", api = ?key, version, correlation_id);
        let started = Instant::now();
        let reply =
            api::dispatch(ctx, &mut trusted, Authority::Forwarded, request).instrument(span).await;
        crate::metrics::global().observe_request(versions::name(key), started.elapsed());
        if let Some(reply) = reply {
            let out = protocol::encode_response(key, version, correlation_id, &reply)
                .map_err(ConnError::Encode)?;
            frame::write(&mut stream, &out, WRITE_TIMEOUT).await?;
        }
    }
}

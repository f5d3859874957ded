//! The admin HTTP server: `/livez`, `/readyz` and `/metrics`.
//!
//! It shares no limiter or semaphore with the Kafka path, so a flood of Kafka connections
//! cannot starve the probes. `/livez` checks nothing but the process itself: a SeaweedFS
//! outage must not get the sidecar restarted.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tracing::debug;

use crate::shutdown::CancellationToken;

pub const PATH_LIVE: &str = "/livez";
pub const PATH_READY: &str = "/readyz";
pub const PATH_METRICS: &str = "/metrics";

/// Set once kelp's listener is bound and SeaweedFS has answered a call.
/// Once it is true it stays true: a later SeaweedFS outage shows as retriable Kafka errors
/// and in the upstream metrics, not as an unready pod that loses its traffic.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self) {
        self.0.store(true, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Connections the admin server serves at once. Probes and a Prometheus scraper need a
/// handful; the cap only bounds what a misbehaving client can hold.
pub const MAX_CONNECTIONS: usize = 64;

/// A request's headers taking longer than this close the connection (a client that opens a
/// connection and sends nothing holds no task for long).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serve one admin HTTP connection until the client closes it or kelp shuts down.
pub async fn serve(stream: TcpStream, ready: Readiness, cancel: CancellationToken) {
    let service = hyper::service::service_fn(move |req| {
        let ready = ready.clone();
        async move { Ok::<_, Infallible>(route(&req, &ready)) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => if let Err(e) = r { debug!(error = %e, "admin connection ended") },
        _ = cancel.cancelled() => conn.as_mut().graceful_shutdown(),
    }
}

fn route(req: &Request<Incoming>, ready: &Readiness) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    match req.uri().path() {
        PATH_LIVE => text(StatusCode::OK, "ok\n"),
        PATH_READY if ready.is_ready() => text(StatusCode::OK, "ready\n"),
        PATH_READY => text(StatusCode::SERVICE_UNAVAILABLE, "waiting for SeaweedFS\n"),
        PATH_METRICS => {
            let mut r = Response::new(Full::new(Bytes::from(crate::metrics::global().render())));
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r
}

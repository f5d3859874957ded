//! `kelp webhook`: the Kubernetes mutating admission webhook that adds kelp to pods which opt
//! in. This file owns the HTTPS server (accept loop, routes, shutdown); what gets added to a
//! pod is decided in `inject.rs`, and the certificate handling lives in `tls.rs`.
//!
//! Routes: `POST /mutate` (AdmissionReview v1 in, AdmissionReview out), `GET /livez` and
//! `GET /readyz` (both 200 once the server runs: the webhook has no dependency to wait for).

mod inject;
mod tls;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

pub use inject::{
    CONTAINER_NAME, HOST_NETWORK_REFUSAL, INJECT_ANNOTATION, INJECTED_ANNOTATION, InjectSettings,
    NATIVE_SIDECAR_MIN_MINOR, Outcome, SIDECAR_LABEL, escape_pointer, mutate, native_sidecar,
    parse_kube_version, review,
};
pub use tls::{ReloadingCert, provider as tls_provider};

use crate::config::WebhookConfig;
use crate::listener::{self, Door};
use crate::shutdown::{self, CancellationToken, TaskTracker};

/// The path the MutatingWebhookConfiguration points the API server at.
pub const MUTATE_PATH: &str = "/mutate";
/// Largest AdmissionReview accepted. A pod object is bounded by etcd's 1.5 MiB request limit;
/// the review wraps it (and, for updates, an old copy), so this leaves ample room.
const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
/// Concurrent connections. Only API servers call the webhook and they keep a few pooled
/// connections each, so this is a safety bound rather than a tuning knob (hence no setting).
const MAX_CONNECTIONS: usize = 256;
/// A TLS handshake or a request's headers taking longer than this close the connection.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A request's body taking longer than this is treated as unreadable (the API server sends a
/// review at once; a client trickling bytes must not hold a connection).
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// After SIGTERM the webhook keeps answering this long before it stops accepting: endpoint
/// removal takes a moment to reach the API servers, and a call refused in that window would
/// admit the pod without kelp (failurePolicy Ignore).
const DRAIN_DELAY: Duration = Duration::from_secs(5);
/// How long in-flight reviews may take once accepting has stopped.
const GRACE: Duration = Duration::from_secs(10);

/// A running webhook server; stop it with [`RunningWebhook::shutdown`].
pub struct RunningWebhook {
    /// The address the HTTPS listener is bound to.
    pub addr: SocketAddr,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl RunningWebhook {
    /// Stop accepting, let in-flight reviews finish (bounded), return whether all did.
    pub async fn shutdown(self) -> bool {
        self.cancel.cancel();
        shutdown::drain(&self.tracker, GRACE).await
    }
}

/// `kelp webhook`: serve until `stop` resolves, then drain.
pub async fn run(config: WebhookConfig, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
    let running = start(config).await?;
    stop.await;
    info!(delay = ?DRAIN_DELAY, "shutting down after a drain delay");
    tokio::time::sleep(DRAIN_DELAY).await;
    if !running.shutdown().await {
        warn!("grace period ended with reviews still in flight");
    }
    Ok(())
}

/// Read the sidecar file and the certificate, bind, and start serving. Everything that can be
/// wrong with the configuration fails here, before the listener accepts anything.
pub async fn start(config: WebhookConfig) -> anyhow::Result<RunningWebhook> {
    let settings = Arc::new(InjectSettings::from_config(&config)?);
    let cert = ReloadingCert::load(&config.tls_cert, &config.tls_key)
        .context("loading the webhook certificate")?;
    let acceptor = TlsAcceptor::from(Arc::new(tls::server_config(cert.clone())?));
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    tracker.spawn(cert.watch(cancel.clone()));
    info!(%addr, native_sidecar = settings.native_sidecar, kube_version = config.kube_version.as_deref().unwrap_or(""), "serving webhook");
    let door = Door { name: "webhook", max_connections: MAX_CONNECTIONS };
    let stop = cancel.clone();
    tracker.spawn(listener::serve(listener, door, cancel.clone(), tracker.clone(), move |s, _| {
        connection(s, acceptor.clone(), settings.clone(), stop.clone())
    }));
    Ok(RunningWebhook { addr, cancel, tracker })
}

async fn connection(
    stream: tokio::net::TcpStream,
    acceptor: TlsAcceptor,
    settings: Arc<InjectSettings>,
    cancel: CancellationToken,
) {
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => return debug!(error = %e, "tls handshake failed"),
        Err(_) => return debug!("tls handshake timed out"),
    };
    let service = service_fn(move |req| handle(req, settings.clone()));
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HANDSHAKE_TIMEOUT)
        .serve_connection(TokioIo::new(tls), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = cancel.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        debug!(error = %e, "connection closed");
    }
}

async fn handle(
    req: Request<Incoming>,
    settings: Arc<InjectSettings>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(match (req.method(), req.uri().path()) {
        (&Method::GET, "/livez" | "/readyz") => plain(StatusCode::OK, "ok\n"),
        (&Method::POST, MUTATE_PATH) => {
            let body = Limited::new(req.into_body(), MAX_BODY_BYTES).collect();
            let review = match tokio::time::timeout(BODY_READ_TIMEOUT, body).await {
                Ok(Ok(body)) => serde_json::from_slice(&body.to_bytes()).unwrap_or(Value::Null),
                Ok(Err(e)) => {
                    debug!(error = %e, "admission review body unreadable");
                    Value::Null
                }
                Err(_) => {
                    debug!("admission review body not sent in time");
                    Value::Null
                }
            };
            let (response, _) = review_and_log(&review, &settings);
            let body = serde_json::to_vec(&response).expect("a JSON value always serializes");
            Response::builder()
                .status(StatusCode::OK)
                .header(hyper::header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(body)))
                .expect("a response with a known status and header is valid")
        }
        (_, MUTATE_PATH | "/livez" | "/readyz") => {
            plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        }
        _ => plain(StatusCode::NOT_FOUND, "not found\n"),
    })
}

/// [`review`] plus one log line: injections at info, refusals at warn (a pod that asked for
/// kelp runs without it), everything else at debug.
fn review_and_log(request: &Value, settings: &InjectSettings) -> (Value, Outcome) {
    let (response, outcome) = review(request, settings);
    let field = |p: &str| request.pointer(p).and_then(Value::as_str).unwrap_or("").to_string();
    let namespace = field("/request/namespace");
    let name = Some(field("/request/object/metadata/name"))
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| field("/request/object/metadata/generateName"));
    match &outcome {
        Outcome::Injected { native } => info!(namespace, pod = name, native, "kelp injected"),
        Outcome::Skipped(reason) => debug!(namespace, pod = name, reason, "pod left alone"),
        Outcome::Refused(why) => {
            warn!(namespace, pod = name, reason = why, "pod admitted without kelp")
        }
        Outcome::Failed(why) => {
            warn!(namespace, pod = name, error = why.as_str(), "pod admitted without kelp")
        }
    }
    (response, outcome)
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, "text/plain")
        .body(Full::new(Bytes::from_static(text.as_bytes())))
        .expect("a response with a known status and header is valid")
}

//! kelp: a per-pod sidecar that speaks the Kafka wire protocol to the application in its pod
//! and stores and serves records through SeaweedFS's message-queue (MQ) gRPC API.
//!
//! How a Produce request flows:
//! `server` accepts → `connection` reads one length-prefixed frame → `protocol::decode_request`
//! → `api::dispatch` → `api::produce::handle` → `records::batch::decode_all` and
//! `records::envelope::to_message` turn the batch into SeaweedFS messages →
//! `seaweed::Seaweed::publish` (a shared long-lived publish stream per partition) → the
//! broker-assigned offsets → response encoded by `protocol::encode_response`.
//!
//! Around every request: `session` (per connection) keeps the SASL state, refusing all but
//! the login APIs until the client has logged in (`sasl`), and what the client owes its
//! quotas; `api::dispatch_client` charges the request to `quota::Quotas`, and `connection`
//! holds a client over quota before reading its next request (KIP-219).
//!
//! How a Fetch request flows: `api::fetch::handle` → `seaweed::Seaweed::fetch` (which polls
//! the broker: it does not long-poll) → `records::envelope::from_message` →
//! `records::batch::encode` → response.
//!
//! Owns: the module list, and [`start`]: building every service in order, and the one
//! cancellation token and task tracker that shutdown cancels and drains. Does not own: what
//! any service does, or reading configuration (`config`).

pub(crate) mod admin;
pub(crate) mod api;
pub mod config;
pub(crate) mod connection;
pub(crate) mod ctx;
pub mod embedded;
pub mod error;
#[cfg(any(test, feature = "fuzz"))]
#[doc(hidden)]
pub mod fuzzing;
pub(crate) mod group;
pub(crate) mod listener;
pub mod metrics;
pub(crate) mod peer;
pub(crate) mod producers;
pub mod protocol;
pub mod quota;
pub mod records;
pub(crate) mod routing;
pub mod sasl;
pub mod seaweed;
pub(crate) mod session;
pub mod shutdown;
pub mod topics;
pub(crate) mod watch;
pub mod webhook;

/// The unit tests count allocations, so that the fuzz corpus replay can hold each input to
/// the fuzzer's memory bound (in a process of its own, where no other test allocates).
#[cfg(test)]
#[global_allocator]
static TEST_ALLOC: cap::Cap<std::alloc::System> = cap::Cap::new(std::alloc::System, usize::MAX);

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::net::TcpListener;

pub use crate::admin::Readiness;
use crate::config::Config;
use crate::ctx::Ctx;
use crate::listener::Door;
use crate::seaweed::{Seaweed, SeaweedOptions};
use crate::shutdown::{CancellationToken, TaskTracker};

/// A kelp serving Kafka clients; stop it with [`Running::shutdown`].
pub struct Running {
    /// The address the Kafka listener is bound to.
    pub kafka_addr: SocketAddr,
    /// The address the admin HTTP server is bound to, when one is configured.
    pub admin_addr: Option<SocketAddr>,
    /// The address the peer listener is bound to, when one is configured.
    pub peer_addr: Option<SocketAddr>,
    /// Released once the listener is bound and SeaweedFS answered a call.
    pub readiness: admin::Readiness,
    cancel: CancellationToken,
    tracker: TaskTracker,
    grace: Duration,
}

impl Running {
    /// Stop accepting, let in-flight requests finish (bounded by the grace period), return
    /// whether every connection ended in time.
    pub async fn shutdown(self) -> bool {
        self.cancel.cancel();
        shutdown::drain(&self.tracker, self.grace).await
    }
}

/// Connect to SeaweedFS, bind the Kafka listener and start serving.
///
/// Returns once the listener is bound; SeaweedFS is contacted lazily by requests (and by
/// [`wait_for_seaweedfs`] when a caller wants to know it answers).
pub async fn start(config: Config) -> anyhow::Result<Running> {
    // The tracker exists before anything that spawns: SeaweedFS's publish streams run on it,
    // so the drain waits for them as it does for connections.
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let seaweed = Seaweed::connect_tracked(
        SeaweedOptions {
            master: config.master.clone(),
            filer: config.filer.clone(),
            namespace: config.namespace.clone(),
            call_timeout: config.upstream_timeout(),
        },
        cancel.clone(),
        &tracker,
    )
    .await
    .context("connecting to SeaweedFS")?;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let kafka_addr = listener.local_addr()?;
    let (advertised_host, advertised_port) = advertised(&config, kafka_addr)?;
    // Every listener is bound before any task is spawned, so a failed bind leaves nothing
    // running behind.
    let admin_listener = match config.admin_listen {
        None => None,
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {} ({})", addr, config::ENV_ADMIN_LISTEN))?,
        ),
    };
    let peer = peer::bind(&config).await?;
    let grace = config.shutdown_grace();
    // With a peer listener, groups are owned through leases shared with other kelps.
    let ownership = peer.as_ref().map(|(_, advertised)| group::Ownership {
        owner_id: group::lease::owner_id(advertised, &uuid::Uuid::new_v4().simple().to_string()),
        lease: config.group_lease(),
    });
    let group_settings = group::Settings { ownership, ..group::Settings::default() };
    let sasl = match &config.sasl_users_file {
        Some(path) => Some(sasl::Sasl::start(path.clone(), cancel.clone(), &tracker)?),
        None => None,
    };
    let quotas = quota::Quotas::start(
        quota::Options {
            seaweed: seaweed.clone(),
            filer_root: config.filer_root.clone(),
            file: config.quotas_file.clone(),
        },
        cancel.clone(),
        &tracker,
    )
    .inspect_err(|_| cancel.cancel())?;
    let ctx = Arc::new(Ctx {
        topics: topics::Topics::new(seaweed.clone(), config.namespace.clone()),
        producers: producers::Producers::default(),
        groups: group::Coordinator::start(
            seaweed.clone(),
            config.filer_root.clone(),
            group_settings,
            cancel.clone(),
            &tracker,
        ),
        peers: peer::Peers::new(&config, cancel.clone()),
        quotas,
        sasl,
        cluster_id: format!("kelp-{}", topics::topic_id(&config.namespace, "").simple()),
        seaweed,
        advertised_host,
        advertised_port,
        config,
    });
    let readiness = admin::Readiness::default();
    let max_connections = ctx.config.max_connections as usize;
    let admin_addr = match admin_listener {
        None => None,
        Some(l) => {
            let bound = l.local_addr()?;
            let door = Door { name: "admin", max_connections: admin::MAX_CONNECTIONS };
            let (ready, stop) = (readiness.clone(), cancel.clone());
            tracker.spawn(listener::serve(
                l,
                door,
                cancel.clone(),
                tracker.clone(),
                move |s, _| admin::serve(s, ready.clone(), stop.clone()),
            ));
            Some(bound)
        }
    };
    tracker.spawn(become_ready(ctx.seaweed.clone(), readiness.clone(), cancel.clone()));
    let peer_addr = match peer {
        None => None,
        Some((l, advertised)) => {
            let bound = l.local_addr()?;
            tracing::info!(%bound, %advertised, "serving peer kelps");
            let door = Door { name: "peer", max_connections };
            let (ctx, stop) = (ctx.clone(), cancel.clone());
            tracker.spawn(listener::serve(
                l,
                door,
                cancel.clone(),
                tracker.clone(),
                move |s, _| {
                    let (ctx, stop) = (ctx.clone(), stop.clone());
                    async move { connection::peer::serve(&ctx, s, &stop).await }
                },
            ));
            Some(bound)
        }
    };
    let door = Door { name: "kafka", max_connections };
    let stop = cancel.clone();
    tracker.spawn(listener::serve(listener, door, cancel.clone(), tracker.clone(), move |s, _| {
        let (ctx, stop) = (ctx.clone(), stop.clone());
        async move { connection::serve(&ctx, s, &stop).await }
    }));
    tracing::info!(%kafka_addr, ?admin_addr, "serving kafka");
    Ok(Running { kafka_addr, admin_addr, peer_addr, readiness, cancel, tracker, grace })
}

/// Pause between SeaweedFS probes before readiness: often enough that a pod turns ready
/// within a second of SeaweedFS answering, rarely enough to be no load on it.
const READY_PROBE_INTERVAL: Duration = Duration::from_millis(500);

/// Pause between probes of [`wait_for_seaweedfs`] (start-up of `kelp dev` and of tests).
const WAIT_PROBE_INTERVAL: Duration = Duration::from_millis(250);

/// Longest single probe of [`wait_for_seaweedfs`]: a probe that hangs must not use up the
/// whole deadline.
const WAIT_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Release the readiness latch after the first successful SeaweedFS round trip.
async fn become_ready(seaweed: Seaweed, readiness: admin::Readiness, cancel: CancellationToken) {
    loop {
        match seaweed.ping().await {
            Ok(()) => {
                readiness.set();
                tracing::info!("SeaweedFS answered; ready");
                return;
            }
            Err(e) => tracing::debug!(error = %e, "SeaweedFS not answering yet"),
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(READY_PROBE_INTERVAL) => {}
        }
    }
}

/// Poll SeaweedFS until the broker and filer answer, or `deadline` passes.
pub async fn wait_for_seaweedfs(config: &Config, deadline: Duration) -> anyhow::Result<()> {
    let seaweed = Seaweed::connect(SeaweedOptions {
        master: config.master.clone(),
        filer: config.filer.clone(),
        namespace: config.namespace.clone(),
        call_timeout: config.upstream_timeout().min(WAIT_PROBE_TIMEOUT),
    })
    .await?;
    let start = Instant::now();
    loop {
        match seaweed.ping().await {
            Ok(()) => return Ok(()),
            Err(e) if start.elapsed() >= deadline => {
                return Err(anyhow::anyhow!("SeaweedFS did not answer within {deadline:?}: {e}"));
            }
            Err(_) => tokio::time::sleep(WAIT_PROBE_INTERVAL).await,
        }
    }
}

fn advertised(config: &Config, bound: SocketAddr) -> anyhow::Result<(String, i32)> {
    match &config.advertised_listener {
        None => Ok((bound.ip().to_string(), i32::from(bound.port()))),
        Some(s) => {
            let (host, port) = s.rsplit_once(':').with_context(|| {
                format!("{}: expected host:port, got {s:?}", config::ENV_ADVERTISED_LISTENER)
            })?;
            let port: u16 = port.parse().with_context(|| {
                format!("{}: bad port in {s:?}", config::ENV_ADVERTISED_LISTENER)
            })?;
            Ok((host.to_string(), i32::from(port)))
        }
    }
}

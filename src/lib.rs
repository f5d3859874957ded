//! kelp: a per-pod sidecar that speaks the Kafka wire protocol to the application in its pod
//! and stores and serves records through SeaweedFS's message-queue (MQ) gRPC API.
//!
//! The layers, each calling only down (docs/architecture.md draws them):
//! `listener` → `connection` (frames, session, quota hold) → `routing` (here, or forward to
//! the group's owner or the partition's writer over `peer`) → `api/<one file per API>` →
//! `group` / `writers` / `quota` / `records` / `topics` / `topic_config` / `producers` /
//! `producer_ids` →
//! `lease` → `seaweed`;
//! with `ctx`, `protocol`, `error`, `config` at the bottom.
//!
//! How a Produce request flows:
//! `listener::serve` accepts → `connection::serve` reads one frame (`protocol::frame`),
//! decodes it (`protocol::decode_request`), checks the `session`, charges the client's
//! quotas (`quota::Quotas::prepare`) and gives it its turn among the connection's Produce
//! requests (`produce_order`); up to `KELP_MAX_IN_FLIGHT_REQUESTS` requests of a connection
//! run at once, answered in request order → `routing::answer`: with a peer listener,
//! `routing::produce` splits the request by partition writer (`writers`: the holder of the
//! partition's lease, `lease`) and sends the partitions written elsewhere to their writer's
//! peer listener (`peer::Peers::call` → `connection::peer` there); the partitions written here
//! go on → `api::dispatch` → `api::produce::handle`: partitions checked (`topics`), batches
//! decoded off the runtime within the request's limit and the process `memory` budget
//! (`records::batch::decode_all`), the lease checked (`writers::Writers::begin`), idempotence
//! checked (the writer's `producers`), records turned into SeaweedFS messages
//! (`records::envelope::to_message_from`), in the request's turn → `seaweed::Seaweed::enqueue`
//! (one long-lived publish stream per partition, `seaweed/publisher.rs`), the turn passed →
//! broker-assigned offsets (for acks=all, once flushed and checkpointed in the filer:
//! `seaweed::Seaweed::wait_flushed`) → the
//! response (put back together in request order when parts were forwarded), encoded by
//! `protocol::encode_response` and written by `connection`, which then holds a client over
//! quota before reading on (`quota::Quotas::settle`, KIP-219).
//!
//! How a JoinGroup request flows:
//! `listener::serve` → `connection::serve` (as above) → `routing::answer`: JoinGroup is a
//! forwarded API, so `group::Coordinator::route` names the group's owner (a filer lease,
//! `group/ownership.rs`). Owned here (or no peer listener): `api::dispatch` →
//! `api::join_group::handle` validates and calls `group::Coordinator::join`
//! (`group/membership.rs`), which runs the pure state machine (`group/state/join.rs`) and
//! parks the request until the join phase ends; the generation is stored in the filer
//! (`group/generations.rs` → `group/store.rs` → `seaweed`) before SyncGroup answers. Owned by
//! another kelp: `peer::Peers::call` sends the request to the owner's peer listener, where
//! `connection::peer` hands it to the same `api::dispatch`, and the answer is relayed back.
//!
//! Authorisation: the session also says whether the client may change the cluster
//! (`authz::Authority`); `api::dispatch` and `routing` refuse the cluster-wide APIs to a client
//! that may not (docs/security.md).
//!
//! How a Fetch request flows: `api::fetch::handle` reads partitions in request order within
//! `max_bytes` → `seaweed::Seaweed::fetch` (`seaweed/reader.rs`; the broker does not
//! long-poll) → `records::envelope::from_message` → `records::batch::encode`. When it must
//! wait (`min_bytes`), a partition written here is woken by this kelp's publishes, and one
//! written by another kelp (`writers`) waits at that writer over the peer link (`tail`).
//!
//! Owns: the module list, and [`start`]: building every service in order, and the one
//! cancellation token and task tracker that shutdown cancels and drains. Does not own: what
//! any service does, or reading configuration (`config`).

pub(crate) mod admin;
pub(crate) mod api;
pub mod authz;
pub mod config;
pub(crate) mod connection;
pub(crate) mod ctx;
pub mod embedded;
pub mod error;
#[cfg(any(test, feature = "fuzz"))]
#[doc(hidden)]
pub mod fuzzing;
pub(crate) mod group;
pub(crate) mod lease;
pub(crate) mod listener;
pub(crate) mod memory;
pub mod metrics;
pub mod peer;
pub(crate) mod produce_order;
pub(crate) mod producer_ids;
pub(crate) mod producers;
pub mod protocol;
pub mod quota;
pub mod records;
pub(crate) mod routing;
pub mod sasl;
pub mod seaweed;
pub(crate) mod session;
pub mod shutdown;
pub(crate) mod tail;
pub(crate) mod tls;
pub mod topic_config;
pub mod topics;
pub(crate) mod watch;
pub mod webhook;
pub(crate) mod writers;

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
    // Settings are checked (and the peer secret read) before anything connects or binds; the
    // errors are `ConfigError`s, on which `kelp serve` exits 64.
    let peer_secret = peer::load_secret(&config)?;
    // The tracker exists before anything that spawns: SeaweedFS's publish streams run on it,
    // so the drain waits for them as it does for connections.
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    // TLS files are read before anything is bound: unusable ones fail the start first.
    let tls = tls::KafkaTls::start(config.listener_tls()?, cancel.clone(), &tracker)?;
    let seaweed = Seaweed::connect_tracked(
        SeaweedOptions {
            master: config.master.clone(),
            filer: config.filer.clone(),
            namespace: config.namespace.clone(),
            call_timeout: config.upstream_timeout(),
        },
        config.seaweedfs_tls().as_ref(),
        cancel.clone(),
        &tracker,
    )
    .await
    .context("connecting to SeaweedFS")?;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let kafka_addr = listener.local_addr()?;
    let (advertised_host, advertised_port) = advertised(&config, kafka_addr).await?;
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
    // With a peer listener, groups and partitions are owned through leases shared with
    // other kelps; one owner string per process names this kelp in all of them.
    let owner_id = peer.as_ref().map(|(_, advertised)| {
        lease::owner_id(advertised, &uuid::Uuid::new_v4().simple().to_string())
    });
    let ownership =
        owner_id.clone().map(|owner_id| group::Ownership { owner_id, lease: config.group_lease() });
    let sharing = owner_id.map(|owner_id| writers::Sharing {
        owner_id,
        lease: config.partition_lease(),
        publish_bound: seaweed::publish_bound(config.upstream_timeout()),
    });
    let group_settings = group::Settings {
        ownership,
        max_size: config.group_max_size as usize,
        ..group::Settings::default()
    };
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
        topic_configs: topic_config::store::TopicConfigs::new(
            seaweed.clone(),
            config.filer_root.clone(),
        ),
        writers: writers::Writers::start(
            seaweed.clone(),
            config.filer_root.clone(),
            sharing,
            cancel.clone(),
            &tracker,
        ),
        producer_ids: producer_ids::ProducerIds::new(seaweed.clone(), config.filer_root.clone()),
        groups: group::Coordinator::start(
            seaweed.clone(),
            config.filer_root.clone(),
            group_settings,
            cancel.clone(),
            &tracker,
        ),
        peers: peer::Peers::new(&config, peer_secret, cancel.clone()),
        memory: memory::Memory::new(config.memory_budget_bytes),
        quotas,
        sasl,
        cluster_id: format!("kelp-{}", topics::topic_id(&config.namespace, "", 0).simple()),
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
            let authenticated = ctx.peers.secret().is_some();
            tracing::info!(%bound, %advertised, authenticated, "serving peer kelps");
            if !authenticated {
                tracing::warn!(
                    setting = config::ENV_PEER_ALLOW_UNAUTHENTICATED,
                    "the peer listener accepts group requests from anyone who reaches it"
                );
            }
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
    let (stop, tls_on) = (cancel.clone(), tls.is_some());
    tracker.spawn(listener::serve(listener, door, cancel.clone(), tracker.clone(), move |s, _| {
        let (ctx, stop, tls) = (ctx.clone(), stop.clone(), tls.clone());
        async move {
            match tls {
                None => connection::serve(&ctx, s, &stop).await,
                Some(tls) => {
                    if let Some(s) = tls.accept(s, &stop).await {
                        connection::serve(&ctx, s, &stop).await
                    }
                }
            }
        }
    }));
    tracing::info!(%kafka_addr, ?admin_addr, tls = tls_on, "serving kafka");
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
    let seaweed = Seaweed::connect_with(
        SeaweedOptions {
            master: config.master.clone(),
            filer: config.filer.clone(),
            namespace: config.namespace.clone(),
            call_timeout: config.upstream_timeout().min(WAIT_PROBE_TIMEOUT),
        },
        config.seaweedfs_tls().as_ref(),
    )
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

/// The host and port clients are told to use (Metadata, FindCoordinator). Without
/// `KELP_ADVERTISED_LISTENER`, the bound address; a wildcard bind (`0.0.0.0`, `::`) is not an
/// address a client can connect to (Kafka refuses to advertise one), so the local address
/// that routes to SeaweedFS's master is used instead: in a pod, the pod IP.
async fn advertised(config: &Config, bound: SocketAddr) -> anyhow::Result<(String, i32)> {
    match &config.advertised_listener {
        None if bound.ip().is_unspecified() => {
            let ip = peer::local_ip_towards(&config.master).await.with_context(|| {
                format!(
                    "{} binds {bound}; set {} to the address clients reach it at",
                    config::ENV_LISTEN,
                    config::ENV_ADVERTISED_LISTENER
                )
            })?;
            Ok((ip.to_string(), i32::from(bound.port())))
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_wildcard_listen_advertises_the_address_that_reaches_seaweedfs() {
        let config =
            Config::from_args(["--listen", "0.0.0.0:9092", "--master", "127.0.0.1:9333"]).unwrap();
        let bound: SocketAddr = "0.0.0.0:9092".parse().unwrap();
        let (host, port) = advertised(&config, bound).await.unwrap();
        assert_eq!((host.as_str(), port), ("127.0.0.1", 9092));
        let bound: SocketAddr = "[::]:9092".parse().unwrap();
        let (host, _) = advertised(&config, bound).await.unwrap();
        assert_ne!(host, "::");
        assert_ne!(host, "0.0.0.0");
    }

    #[tokio::test]
    async fn a_named_bind_or_advertised_listener_is_used_as_given() {
        let config = Config::from_args(["--listen", "127.0.0.1:9092"]).unwrap();
        let bound: SocketAddr = "127.0.0.1:9092".parse().unwrap();
        assert_eq!(advertised(&config, bound).await.unwrap(), ("127.0.0.1".to_string(), 9092));
        let config = Config::from_args([
            "--listen",
            "0.0.0.0:9092",
            "--advertised-listener",
            "kelp.example:19092",
        ])
        .unwrap();
        let bound: SocketAddr = "0.0.0.0:9092".parse().unwrap();
        assert_eq!(advertised(&config, bound).await.unwrap(), ("kelp.example".to_string(), 19092));
    }
}

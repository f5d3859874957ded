//! Everything kelp does with SeaweedFS: the MQ broker (topics, publishing, fetching) and the
//! filer (kelp's own small entries).
//!
//! Owns: the gRPC clients generated from `proto/` (no `tonic::Status` or generated type
//! leaves this module), and a deadline on every call (the configured call timeout), both on
//! the wire (`grpc-timeout`) and on this side. Inside: `catalog` (topics and their layouts,
//! the one topic cache), `reader` (fetching and offset ranges), `publisher` (publish
//! streams), `progress` (acknowledged and flushed offsets per partition), `filer` (kelp's
//! own entries), `rpc` (channels, discovery, status conversion),
//! `tls` (TLS to SeaweedFS's gRPC, on its `security.toml` terms), `layout` (names and
//! paths), `address` (SeaweedFS address formats).
//!
//! Does not own: record encoding (`records`), Kafka error codes (`error`), Kafka's rules for
//! topic names and ids (`topics`).
//!
//! What follows is how SeaweedFS itself behaves, as measured; the text lives in
//! `SEAWEEDFS.md` beside this file.
//!
#![doc = include_str!("SEAWEEDFS.md")]

mod address;
mod catalog;
mod filer;
pub mod layout;
mod pb;
mod progress;
mod publisher;
mod reader;
mod rpc;
mod tls;

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;

use crate::error::{Error, UpstreamCode};
use crate::shutdown::{CancellationToken, TaskTracker};
use catalog::Catalog;
use progress::{FLUSH_POLL, Progress};
use publisher::{Outcome, Publisher, Target};

pub(crate) use tls::Connector as TlsConnector;
pub use tls::SeaweedTls;

/// One Kafka record's worth of data as SeaweedFS stores it (a `DataMessage`): no headers, no
/// null key or value; `records` carries those inside `value`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Message {
    pub key: Bytes,
    pub value: Bytes,
    /// Nanoseconds since the epoch; 0 lets the broker stamp it. The broker keeps each
    /// partition's stored timestamps strictly increasing (see the module docs), so send the
    /// current time, not a client-chosen one.
    pub ts_ns: i64,
}

/// The answer to [`Seaweed::fetch`].
#[derive(Debug, Default)]
pub struct Fetched {
    /// Records with their offsets, ascending and contiguous except where kelp's partition
    /// markers were left out.
    pub messages: Vec<(i64, Message)>,
    /// The next offset to be assigned.
    pub high_water_mark: i64,
    /// The first offset a consumer can read (after kelp's partition markers).
    pub log_start_offset: i64,
}

/// The filer lock manager's answer to taking or renewing a lock ([`Seaweed::filer_lock`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LockAnswer {
    /// The caller holds the lock until it expires; renew with this token (each grant and
    /// renewal hands out a new one).
    Granted { token: String },
    /// Another holder has a live lock; its owner string.
    HeldBy(String),
    /// Refused without a live holder to name: the token is no longer valid (the lock expired,
    /// or the filer restarted and forgot it), or the filer could not decide (its lock ring is
    /// not formed yet). The filer's message, for logs only.
    Refused(String),
}

/// How to reach SeaweedFS.
#[derive(Clone, Debug)]
pub struct SeaweedOptions {
    /// The master, as SeaweedFS writes addresses: `host:port` (gRPC on port + 10000) or
    /// `host:port.grpcPort`.
    pub master: String,
    /// The filer, same convention; `None` asks the master for one.
    pub filer: Option<String>,
    /// The MQ namespace holding kelp's topics (`/topics/<namespace>/` in the filer).
    pub namespace: String,
    /// Deadline of every SeaweedFS call.
    pub call_timeout: Duration,
}

/// Handle to SeaweedFS, shared by all connections; cloning is cheap.
#[derive(Clone)]
pub struct Seaweed {
    inner: Arc<Inner>,
}

struct Inner {
    clients: Arc<rpc::Clients>,
    catalog: Catalog,
    /// The shared publish stream of each (Kafka topic, partition).
    publishers: Mutex<HashMap<(String, u32), Publisher>>,
    /// Woken when records of a (Kafka topic, partition) were acknowledged in this process.
    wakers: Mutex<HashMap<(String, u32), Arc<Notify>>>,
    /// What this process acknowledged and saw flushed, per (Kafka topic, partition); replaced
    /// when the partition's log directory changes (topic re-created). Keyed, like the maps
    /// above, only by partitions of existing topics.
    progress: Mutex<HashMap<(String, u32), Arc<Progress>>>,
    /// Where publish stream tasks run, so the process's drain waits for them.
    tracker: TaskTracker,
    /// Tells publish stream tasks the process is stopping.
    cancel: CancellationToken,
}

/// Fresh publish streams tried per publish when a stream closed before taking the batch.
const PUBLISH_ATTEMPTS: usize = 3;

/// Batches of a publish still queued this many call timeouts after it started are withdrawn
/// (one to open a stream, one for the acks).
const PUBLISH_CALL_TIMEOUTS: u32 = 2;

/// The longest a publish may take: [`PUBLISH_CALL_TIMEOUTS`], then one more call timeout for
/// the answer about a batch already on the stream, and a second of slack.
pub(crate) fn publish_bound(call_timeout: Duration) -> Duration {
    call_timeout * (PUBLISH_CALL_TIMEOUTS + 1) + Duration::from_secs(1)
}

impl Seaweed {
    /// Set up clients. Connections are made lazily on first use, so this does not wait for
    /// SeaweedFS; it fails only on malformed options. Publish streams run on a task tracker
    /// of their own that nothing waits for: fine for probes and tools, while a serving kelp
    /// uses [`connect_tracked`](Self::connect_tracked) so its shutdown waits for them.
    pub async fn connect(opts: SeaweedOptions) -> Result<Seaweed, Error> {
        Seaweed::connect_with(opts, None).await
    }

    /// Like [`connect`](Self::connect), over TLS when `tls` is given; this also fails when
    /// its files cannot be read or do not parse.
    pub async fn connect_with(
        opts: SeaweedOptions,
        tls: Option<&SeaweedTls>,
    ) -> Result<Seaweed, Error> {
        Seaweed::connect_tracked(opts, tls, CancellationToken::new(), &TaskTracker::new()).await
    }

    /// Like [`connect_with`](Self::connect_with), with every publish stream task (and the
    /// re-reading of TLS files) spawned on `tracker`.
    /// Once `cancel` fires, each stream closes as soon as nothing is in flight on it (the
    /// broker then drops the publisher and, when it was the partition's last, flushes the
    /// partition), so draining `tracker` waits for that and never cuts off a publish in
    /// progress.
    pub async fn connect_tracked(
        opts: SeaweedOptions,
        tls: Option<&SeaweedTls>,
        cancel: CancellationToken,
        tracker: &TaskTracker,
    ) -> Result<Seaweed, Error> {
        let invalid = |why: String| Error::Broker {
            op: "connect",
            code: UpstreamCode::InvalidArgument,
            message: why,
        };
        if opts.namespace.is_empty() || opts.namespace.contains(['/', '.']) {
            // '.' joins namespace and topic in the broker's in-memory keys.
            return Err(invalid(format!(
                "namespace {:?} must be non-empty without '/' or '.'",
                opts.namespace
            )));
        }
        if opts.call_timeout.is_zero() {
            return Err(invalid("call timeout must be positive".into()));
        }
        let tls = match tls {
            None => None,
            Some(settings) => {
                let connector = tls::Connector::load(settings)
                    .map_err(|e| invalid(format!("SeaweedFS TLS: {e:#}")))?;
                tracker.spawn(connector.clone().watch(cancel.clone()));
                Some(connector)
            }
        };
        let clients = Arc::new(
            rpc::Clients::new(&opts.master, opts.filer.as_deref(), opts.call_timeout, tls)
                .map_err(invalid)?,
        );
        Ok(Seaweed {
            inner: Arc::new(Inner {
                catalog: Catalog::new(Arc::clone(&clients), opts.namespace),
                clients,
                publishers: Mutex::new(HashMap::new()),
                wakers: Mutex::new(HashMap::new()),
                progress: Mutex::new(HashMap::new()),
                tracker: tracker.clone(),
                cancel,
            }),
        })
    }

    /// The MQ namespace kelp's topics live in.
    fn namespace(&self) -> &str {
        self.inner.catalog.namespace()
    }

    /// One real round trip to a broker (which must have elected its balancer) and one to the
    /// filer: what readiness waits for.
    pub async fn ping(&self) -> Result<(), Error> {
        self.inner.catalog.ping().await?;
        filer::ping(&self.inner.clients).await
    }

    /// Kafka topics in the namespace with their partition counts, sorted by name.
    pub async fn list_topics(&self) -> Result<Vec<(String, u32)>, Error> {
        self.inner.catalog.list().await
    }

    /// Partition count of `topic`; `Ok(None)` when it definitely does not exist, `Err` when
    /// SeaweedFS could not tell. Served from the catalog's layout cache while it is fresh.
    pub async fn partition_count(&self, topic: &str) -> Result<Option<u32>, Error> {
        Ok(self.inner.catalog.layout(topic).await?.map(|l| l.slots.len() as u32))
    }

    /// Create `topic` with `partitions` (1..=2520) partitions. TOPIC_ALREADY_EXISTS if it
    /// exists, INVALID_PARTITIONS for a bad count, INVALID_TOPIC_EXCEPTION for an illegal name.
    /// The next lookup of `topic` in this process sees it.
    pub async fn create_topic(&self, topic: &str, partitions: u32) -> Result<(), Error> {
        self.inner.catalog.create(topic, partitions).await
    }

    /// Delete `topic` and its records; UNKNOWN_TOPIC_OR_PARTITION if it does not exist.
    /// Other kelps notice within a few seconds (their cached layout expires). Returns the
    /// incarnation that was deleted (see [`Seaweed::topic_incarnation`]).
    pub async fn delete_topic(&self, topic: &str) -> Result<u32, Error> {
        let incarnation = self.inner.catalog.delete(topic).await?;
        self.inner.publishers.lock().retain(|(t, _), _| t != topic);
        self.inner.wakers.lock().retain(|(t, _), _| t != topic);
        Ok(incarnation)
    }

    /// Which incarnation of `topic` exists now (`layout::mq_topic_name`): 0 for a topic
    /// created once, one more each time it was deleted and created again. Every kelp reads
    /// the same number from the filer, so it identifies one life of a topic across kelps and
    /// restarts. `Ok(None)` when the topic does not exist. Served from the layout cache.
    pub async fn topic_incarnation(&self, topic: &str) -> Result<Option<u32>, Error> {
        Ok(self.inner.catalog.layout(topic).await?.map(|l| l.incarnation()))
    }

    /// Grow `topic` to `new_total` partitions. SeaweedFS cannot: a new partition count makes
    /// the broker allocate a new generation of ring slices, and the existing partitions'
    /// records and offsets do not carry over, which would silently empty every partition.
    /// So this always fails: INVALID_PARTITIONS when `new_total` is not larger than the
    /// current count (as Kafka answers), otherwise INVALID_REQUEST.
    pub async fn add_partitions(&self, topic: &str, new_total: u32) -> Result<(), Error> {
        self.inner.catalog.add_partitions(topic, new_total).await
    }

    /// Append `messages` to one partition and return their offsets, in order. Returns only
    /// once the broker acknowledged every message; on any failure nothing is known about the
    /// batch (some messages may be stored) and the error is retriable unless it is a Kafka
    /// outcome such as UNKNOWN_TOPIC_OR_PARTITION. All callers share one stream per partition.
    pub async fn publish(
        &self,
        topic: &str,
        partition: u32,
        messages: Vec<Message>,
    ) -> Result<Vec<i64>, Error> {
        self.enqueue(topic, partition, messages).await.offsets().await
    }

    /// Queue `messages` on the partition's stream and return at once, without waiting for
    /// the broker: batches queued one after another (by one task, or by tasks that take
    /// turns) are published in that order. [`Queued::offsets`] then waits as
    /// [`Seaweed::publish`] does. The whole publish, queueing included, is bounded: batches
    /// still queued [`PUBLISH_CALL_TIMEOUTS`] call timeouts after it started are withdrawn,
    /// and one already on a stream is answered within a call timeout after
    /// ([`publish_bound`]).
    pub async fn enqueue(&self, topic: &str, partition: u32, messages: Vec<Message>) -> Queued<'_> {
        let call_timeout = self.inner.clients.call_timeout;
        let overall = call_timeout * PUBLISH_CALL_TIMEOUTS;
        let started = tokio::time::Instant::now();
        let deadline = started + overall;
        let bound = publish_bound(call_timeout);
        let first = if messages.is_empty() {
            None
        } else {
            let queue = async {
                let publisher = match self.publisher(topic, partition).await {
                    Ok(p) => p,
                    Err(e) => return First::Failed(e),
                };
                match publisher.enqueue(messages.clone(), deadline).await {
                    Ok(acks) => First::Queued(publisher, acks),
                    Err(e) => {
                        self.forget_publisher(topic, partition, &publisher);
                        First::NotQueued(e)
                    }
                }
            };
            Some(match tokio::time::timeout_at(deadline, queue).await {
                Ok(first) => first,
                Err(_) => First::Failed(Error::Timeout { op: "publish", after: overall }),
            })
        };
        Queued {
            seaweed: self,
            topic: topic.to_string(),
            partition,
            messages,
            first,
            deadline,
            bound_at: started + bound,
            bound,
        }
    }

    /// The live publisher for a partition, replacing one that ended or targets an outdated
    /// layout (topic re-created, partition moved).
    async fn publisher(&self, topic: &str, partition: u32) -> Result<Publisher, Error> {
        let l = self.inner.catalog.existing(topic).await?;
        let slot = l.slot(partition)?;
        if slot.leader.is_empty() {
            return Err(Error::NoBroker { op: "publish" });
        }
        let target = Target {
            namespace: self.namespace().to_string(),
            mq_topic: l.mq_topic.clone(),
            partition: slot.partition,
            leader: slot.leader.clone(),
        };
        let key = (topic.to_string(), partition);
        let progress = self.progress(topic, partition, &target);
        let mut publishers = self.inner.publishers.lock();
        if let Some(p) = publishers.get(&key)
            && !p.is_closed()
            && *p.target() == target
        {
            return Ok(p.clone());
        }
        let p = Publisher::spawn(
            Arc::clone(&self.inner.clients),
            target,
            progress,
            self.waker(topic, partition),
            &self.inner.tracker,
            self.inner.cancel.clone(),
        );
        publishers.insert(key, p.clone());
        Ok(p)
    }

    fn forget_publisher(&self, topic: &str, partition: u32, which: &Publisher) {
        let mut publishers = self.inner.publishers.lock();
        let key = (topic.to_string(), partition);
        if publishers.get(&key).is_some_and(|p| p.target() == which.target()) {
            publishers.remove(&key);
        }
    }

    /// The progress record of the partition `target` writes, a fresh one when the partition's
    /// log directory changed.
    fn progress(&self, topic: &str, partition: u32, target: &Target) -> Arc<Progress> {
        let p = &target.partition;
        let dir = layout::mq_partition_dir(
            &target.namespace,
            &target.mq_topic,
            p.unix_time_ns,
            p.range_start,
            p.range_stop,
        );
        let mut all = self.inner.progress.lock();
        let slot = all
            .entry((topic.to_string(), partition))
            .or_insert_with(|| Arc::new(Progress::new(dir.clone())));
        if slot.dir() != dir {
            *slot = Arc::new(Progress::new(dir));
        }
        Arc::clone(slot)
    }

    /// Wait until the broker has flushed the partition's records up to Kafka offset `last` to
    /// the filer, where a broker restart finds them again. Polls the partition's log files
    /// (see `progress`); REQUEST_TIMED_OUT-mapped [`Error::Timeout`] after `within`. Failed
    /// looks at the filer are retried until then.
    pub async fn wait_flushed(
        &self,
        topic: &str,
        partition: u32,
        last: i64,
        within: Duration,
    ) -> Result<(), Error> {
        let clients = &self.inner.clients;
        let catalog = &self.inner.catalog;
        let wait = async {
            let l = catalog.existing(topic).await?;
            let slot = l.slot(partition)?;
            let target = Target {
                namespace: self.namespace().to_string(),
                mq_topic: l.mq_topic.clone(),
                partition: slot.partition,
                leader: slot.leader.clone(),
            };
            let progress = self.progress(topic, partition, &target);
            let broker_offset = last + reader::data_offset(catalog, topic, partition).await?;
            loop {
                match progress.covers(clients, broker_offset).await {
                    Ok(true) => return Ok(()),
                    Ok(false) => {}
                    Err(e) => tracing::debug!(error = %e, "could not read the flushed position"),
                }
                tokio::time::sleep(FLUSH_POLL).await;
            }
        };
        match tokio::time::timeout(within, wait).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout { op: "flush", after: within }),
        }
    }

    /// Whether the record this process was acknowledged at Kafka `offset` was lost since: the
    /// broker restarted without it and its offset was filled (see `publisher`).
    pub async fn was_lost(&self, topic: &str, partition: u32, offset: i64) -> Result<bool, Error> {
        let progress = self.inner.progress.lock().get(&(topic.to_string(), partition)).cloned();
        let Some(progress) = progress else { return Ok(false) };
        let shift = reader::data_offset(&self.inner.catalog, topic, partition).await?;
        Ok(progress.was_lost(offset + shift))
    }

    fn waker(&self, topic: &str, partition: u32) -> Arc<Notify> {
        let mut wakers = self.inner.wakers.lock();
        Arc::clone(wakers.entry((topic.to_string(), partition)).or_default())
    }

    /// Records of one partition from `start_offset` on, up to about `max_bytes` (of keys and
    /// values; at least one record when any is there, as Kafka's KIP-74 asks). When fewer
    /// than `min_bytes` are available it waits up to `max_wait` for more — by polling the
    /// broker, which does not long-poll, and waking early for records published through this
    /// process. OFFSET_OUT_OF_RANGE when `start_offset` is negative or past the high-water
    /// mark.
    pub async fn fetch(
        &self,
        topic: &str,
        partition: u32,
        start_offset: i64,
        max_bytes: i32,
        max_wait: Duration,
        min_bytes: i32,
    ) -> Result<Fetched, Error> {
        let want = reader::Want {
            offset: start_offset,
            max_bytes,
            max_wait,
            min_bytes,
            poll_max: reader::POLL_MAX,
        };
        self.fetch_with(topic, partition, want).await
    }

    /// [`fetch`](Self::fetch) on the kelp that writes the partition (`writers`): every record
    /// of it is acknowledged in this process and wakes the wait, so the broker is asked again
    /// only about once a second, as a backstop.
    pub async fn fetch_as_writer(
        &self,
        topic: &str,
        partition: u32,
        start_offset: i64,
        max_bytes: i32,
        max_wait: Duration,
        min_bytes: i32,
    ) -> Result<Fetched, Error> {
        let want = reader::Want {
            offset: start_offset,
            max_bytes,
            max_wait,
            min_bytes,
            poll_max: reader::POLL_BACKSTOP,
        };
        self.fetch_with(topic, partition, want).await
    }

    async fn fetch_with(
        &self,
        topic: &str,
        partition: u32,
        want: reader::Want,
    ) -> Result<Fetched, Error> {
        // Check the topic first so clients cannot grow the waker map with made-up names.
        self.inner.catalog.existing(topic).await?.slot(partition)?;
        let wake = self.waker(topic, partition);
        reader::fetch(&self.inner.catalog, topic, partition, want, wake).await
    }

    /// `(earliest, latest)` offsets of a partition: the first readable offset (after kelp's
    /// markers) and the next offset to be assigned.
    pub async fn offset_range(&self, topic: &str, partition: u32) -> Result<(i64, i64), Error> {
        reader::offset_range(&self.inner.catalog, topic, partition).await
    }

    /// Content of the filer file at absolute `path`; `Ok(None)` only when it definitely does
    /// not exist.
    pub async fn filer_get(&self, path: &str) -> Result<Option<Bytes>, Error> {
        filer::get(&self.inner.clients, path).await
    }

    /// Create or overwrite the file at `path` (parent directories are created as needed).
    pub async fn filer_put(&self, path: &str, content: &[u8]) -> Result<(), Error> {
        filer::put(&self.inner.clients, path, content, false).await.map(|_| ())
    }

    /// Create the file at `path` only if nothing is there; `Ok(false)` when it already
    /// existed (and was left alone). The filer checks and writes atomically.
    pub async fn filer_create(&self, path: &str, content: &[u8]) -> Result<bool, Error> {
        filer::put(&self.inner.clients, path, content, true).await
    }

    /// Delete the entry at `path` (a directory with everything in it). Succeeds when there
    /// is nothing to delete.
    pub async fn filer_delete(&self, path: &str) -> Result<(), Error> {
        filer::delete(&self.inner.clients, path).await
    }

    /// Names of the entries in directory `dir`; empty when the directory does not exist.
    pub async fn filer_list(&self, dir: &str) -> Result<Vec<String>, Error> {
        filer::list(&self.inner.clients, dir).await
    }

    /// Take (with an empty `token`) or renew the filer lock `name` for `seconds`, recording
    /// `owner` as its holder. The lock expires on the filer `seconds` after the call arrives
    /// there, unless renewed with the token of the last grant.
    pub async fn filer_lock(
        &self,
        name: &str,
        seconds: i64,
        token: &str,
        owner: &str,
    ) -> Result<LockAnswer, Error> {
        filer::lock(&self.inner.clients, name, seconds, token, owner).await
    }

    /// Release the filer lock `name` held with `token`.
    pub async fn filer_unlock(&self, name: &str, token: &str) -> Result<(), Error> {
        filer::unlock(&self.inner.clients, name, token).await
    }

    /// The owner string of the live filer lock `name`; `Ok(None)` when nobody holds it.
    pub async fn filer_lock_owner(&self, name: &str) -> Result<Option<String>, Error> {
        filer::lock_owner(&self.inner.clients, name).await
    }
}

/// A batch queued on its partition's stream ([`Seaweed::enqueue`]).
pub struct Queued<'a> {
    seaweed: &'a Seaweed,
    topic: String,
    partition: u32,
    messages: Vec<Message>,
    /// `None` when there was nothing to publish.
    first: Option<First>,
    /// When batches still queued are withdrawn.
    deadline: tokio::time::Instant,
    /// When the whole publish gives up ([`publish_bound`] after it started).
    bound_at: tokio::time::Instant,
    bound: Duration,
}

/// What became of the first attempt to queue a batch.
enum First {
    Queued(Publisher, publisher::Acks),
    /// The stream had closed: another attempt may queue it on a fresh one.
    NotQueued(Error),
    Failed(Error),
}

impl Queued<'_> {
    /// The offsets of the batch, in order, once the broker acknowledged every message. A
    /// batch that never reached a stream (it broke first) is sent again on a fresh stream, up
    /// to [`PUBLISH_ATTEMPTS`] times in all; such a retry may land behind batches queued
    /// after it.
    pub async fn offsets(self) -> Result<Vec<i64>, Error> {
        let Queued { seaweed, topic, partition, messages, first, deadline, bound_at, bound } = self;
        let Some(first) = first else {
            return Ok(Vec::new());
        };
        let (topic, catalog) = (topic.as_str(), &seaweed.inner.catalog);
        let attempt = async {
            let mut queued = Some(first);
            let mut last = None;
            for _ in 0..PUBLISH_ATTEMPTS {
                let (publisher, acks) = match queued.take() {
                    Some(First::Queued(publisher, acks)) => (publisher, acks),
                    Some(First::Failed(e)) => return Err(e),
                    Some(First::NotQueued(e)) => {
                        last = Some(e);
                        continue;
                    }
                    None => {
                        let publisher = seaweed.publisher(topic, partition).await?;
                        match publisher.enqueue(messages.clone(), deadline).await {
                            Ok(acks) => (publisher, acks),
                            Err(e) => {
                                seaweed.forget_publisher(topic, partition, &publisher);
                                last = Some(e);
                                continue;
                            }
                        }
                    }
                };
                match acks.outcome().await {
                    Outcome::Acked(offsets) => {
                        // The records are stored, so the partition's markers exist and the
                        // shift is final (and cached after the first time).
                        let shift = reader::data_offset(catalog, topic, partition).await?;
                        return Ok(offsets.into_iter().map(|o| o - shift).collect());
                    }
                    Outcome::NotSent(e) => {
                        seaweed.forget_publisher(topic, partition, &publisher);
                        if !matches!(e, Error::Broker { code: UpstreamCode::Unavailable, .. }) {
                            catalog.invalidate(topic);
                        }
                        last = Some(e);
                    }
                    Outcome::Failed(e) => {
                        seaweed.forget_publisher(topic, partition, &publisher);
                        catalog.invalidate(topic);
                        return Err(e);
                    }
                }
            }
            Err(last.unwrap_or(Error::Timeout { op: "publish", after: bound }))
        };
        match tokio::time::timeout_at(bound_at, attempt).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout { op: "publish", after: bound }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every public future must be usable from a spawned connection task that borrows the
    /// handle (the shape `server.rs` uses). Only type-checked, never run.
    #[test]
    fn futures_can_live_in_spawned_tasks() {
        fn spawnable<F: std::future::Future + Send + 'static>(_: F) {}
        let sw: Option<Seaweed> = None;
        spawnable(async move {
            let Some(sw) = sw else { return };
            let sw = &sw;
            let _ = sw.ping().await;
            let _ = sw.list_topics().await;
            let _ = sw.partition_count("t").await;
            let _ = sw.create_topic("t", 1).await;
            let _ = sw.delete_topic("t").await;
            let _ = sw.add_partitions("t", 2).await;
            let _ = sw.publish("t", 0, vec![Message::default()]).await;
            let _ = sw.fetch("t", 0, 0, 1, Duration::ZERO, 0).await;
            let _ = sw.fetch_as_writer("t", 0, 0, 1, Duration::ZERO, 0).await;
            let _ = sw.offset_range("t", 0).await;
            let _ = sw.filer_get("/a").await;
            let _ = sw.filer_put("/a", b"").await;
            let _ = sw.filer_create("/a", b"").await;
            let _ = sw.filer_delete("/a").await;
            let _ = sw.filer_list("/").await;
            let _ = sw.filer_lock("l", 1, "", "o").await;
            let _ = sw.filer_unlock("l", "t").await;
            let _ = sw.filer_lock_owner("l").await;
        });
    }

    #[tokio::test]
    async fn bad_options_are_refused_without_io() {
        let opts = |master: &str, namespace: &str| SeaweedOptions {
            master: master.into(),
            filer: None,
            namespace: namespace.into(),
            call_timeout: Duration::from_secs(1),
        };
        assert!(Seaweed::connect(opts("127.0.0.1:9333", "kafka")).await.is_ok());
        assert!(Seaweed::connect(opts("no-port", "kafka")).await.is_err());
        assert!(Seaweed::connect(opts("127.0.0.1:9333", "")).await.is_err());
        assert!(Seaweed::connect(opts("127.0.0.1:9333", "a.b")).await.is_err());
    }
}

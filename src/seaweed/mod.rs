//! Everything kelp does with SeaweedFS: the MQ broker (topics, publishing, fetching) and the
//! filer (kelp's own small entries). This module owns the gRPC clients generated from
//! `proto/`; no `tonic::Status` or generated type leaves it, and every call carries a deadline
//! (the configured call timeout) both on the wire (`grpc-timeout`) and on this side.
//!
//! It does not own record encoding (`records`), Kafka error codes (`error`) or where kelp's
//! entries live in the filer (`layout` does, below).
//!
//! # How SeaweedFS 4.48 MQ behaves (checked against the running server)
//!
//! Each point was observed on `weed` 4.48 (master + volume + filer + `weed mq.broker`) and
//! matches the upstream sources of that release line (`weed/mq/broker`, `weed/util/log_buffer`).
//!
//! * **Finding the broker.** Brokers register with the master; `ListClusterNodes` with
//!   `client_type = "broker"` lists them as `host:port`, which is their gRPC address (no
//!   +10000). Filers register as `host:httpPort.grpcPort`. Any broker answers control-plane
//!   calls (non-balancer brokers forward them to the balancer, the holder of the filer lock
//!   `broker_balancer`, which `FindBrokerLeader` reports). Publish and fetch must go to the
//!   partition's `leader_broker` from the topic configuration.
//! * **A broker that dies.** Partitions it led lose their leader (`GetTopicConfiguration`
//!   reports it empty; kelp answers [`Error::NoBroker`], retriable). The balancer picks a new
//!   leader only among brokers other than the partition's follower, and with two brokers the
//!   follower is the survivor: the partitions stayed leaderless (36 s observed) until the dead
//!   broker came back at its address, which then led them again. A broker killed mid-stream
//!   fails every waiting publish with a retriable error; none hung (each call returned within
//!   0.3 s while the broker was away).
//! * **A fresh broker is not ready at once.** For about 5–20 s after a broker (re)starts,
//!   control calls fail with UNAVAILABLE "no broker available", NOT_FOUND "lock
//!   broker_balancer not found" or UNAVAILABLE "dial tcp: missing address", until it holds
//!   the balancer lock and has registered itself. All of these surface as retriable
//!   [`Error::Broker`]; [`Seaweed::ping`] fails until then, so readiness waits for it.
//! * **Topic names.** The broker accepts every legal Kafka name (`.`, `_`, `-` anywhere,
//!   upper case, 249 characters; records publish, flush and read back). kelp still maps names
//!   (`layout::mq_topic_name`) because of deletion, below.
//! * **Partitions.** `ConfigureTopic { partition_count }` splits a ring of 2520 slots into
//!   equal slices (the last takes the remainder); each slice carries the generation time
//!   `unix_time_ns`. Kafka partition `p` is the `p`-th slice by ring position, which every
//!   kelp computes the same way from `GetTopicConfiguration`. At most 2520 partitions.
//!   Configuring an existing topic with the same count returns it unchanged; with another
//!   count the broker allocates a new generation of slices and the old partitions' records
//!   are no longer reachable through the new ones, so kelp refuses to add partitions.
//! * **No delete RPC.** A topic is `/topics/<namespace>/<name>/` in the filer (`topic.conf`
//!   plus `v<generation>/<slice>/` log files). Removing it works for every kelp at once, but a
//!   running broker keeps the partition's offset counter and buffered records in memory keyed
//!   by name and slice (not generation): re-creating the same name resumed the old offsets and
//!   `FetchMessage` served the deleted records. Hence incarnations: a re-created topic gets a
//!   new MQ name (`layout::mq_topic_name`). `ClosePublishers` does not help either: it only
//!   flags publishers and then waits, forever, for their streams to end.
//! * **Offsets.** Assigned by the broker per partition, starting at 0, contiguous, one per
//!   message (12 000 records from 4 concurrent streams got 12 000 distinct offsets). They
//!   survive a broker restart (checkpoint in the filer) — up to the last flush: see the next
//!   point. Through one stream, records are stored in offset order (50 000 records from 8
//!   tasks sharing kelp's stream all read back at their acked offsets). With several streams
//!   into one partition at once (several kelps producing to it), the broker assigns the
//!   offset and appends the record in two steps, so now and then two neighbours are stored
//!   swapped (21 of 12 000 with 4 streams). `FetchMessage` returns records without offsets,
//!   so kelp labels them by position and the two swap offsets too; and a consumer resuming
//!   exactly between them gets one twice and skips the other. Nothing client-side can tell.
//! * **Publishing.** After the init request the broker sends one empty response, then exactly
//!   one response per data message, in order, with `assigned_offset`; `ack_interval` is
//!   ignored. An init the broker refuses (not the leader, no such topic) is answered with
//!   `error` set and the stream ends. A record is acknowledged once it is in the broker's
//!   memory; it reaches the filer at the next flush (every 5 s by default, `weed mq.broker
//!   -logFlushInterval`, or when the buffer fills). Stopping the broker, even with SIGTERM,
//!   does not flush: acknowledged records of the last interval were lost, and after the
//!   restart the broker handed their offsets to new records (acked 12 and 13, restart, the
//!   next publish was acked 12 again). Consumers that had read the lost records see
//!   different records at those offsets. Nothing on the client side can prevent this; a
//!   shorter flush interval narrows it.
//! * **Timestamps.** The broker stores `ts_ns` as sent, except that each partition's stored
//!   timestamps are forced strictly increasing: a `ts_ns` not greater than the previous
//!   record's becomes previous + 1 (sent now−20 s after now−10 s → stored now−10 s + 1 ns),
//!   and 0 means "the broker's clock". The ack's `ack_ts_ns` echoes the value sent, not the
//!   stored one. Log files are named and flushed by these timestamps, so a record from the
//!   future drags every later record's `ts_ns` with it: keep `ts_ns` at (about) the current
//!   time and carry the Kafka timestamp inside the value.
//! * **Fetching.** `FetchMessage` does not long-poll: `max_wait_ms` and `min_bytes` are
//!   ignored (an empty answer came back in under 1 ms with `max_wait_ms = 2000`), so
//!   [`Seaweed::fetch`] polls. It answers from one buffer at a time (a fetch from 0 could stop
//!   at 2 of 1006 records with `end_of_partition` set), so kelp keeps fetching while below
//!   the high-water mark, and retries briefly when it answers nothing below it (it did, for
//!   an instant, while the buffer holding the records was being flushed). Records come
//!   without offsets: they run from the first one at or after `start_offset` up to
//!   `next_offset`, contiguous. An offset past the end is not an error (empty answer,
//!   `next_offset` = the requested offset); `error_code` 1 means the partition could not be
//!   loaded and 2 that reading at the offset failed. Its `log_start_offset` is the start of
//!   the in-memory buffer, not of the log, and is not used.
//! * **`GetPartitionRangeInfo`.** `offset_range.earliest_offset` (0 unless retention removed
//!   data), `latest_offset` (last assigned; −1 when empty), `high_water_mark` (next offset);
//!   `timestamp_range` is always zero in 4.48.
//! * **Reload bug, and kelp's markers.** When all publishers of a partition leave, the broker
//!   flushes and unloads it; on reload (or after a restart) it rebuilds the high-water mark
//!   from per-file offset ranges, which it does not record for a file starting at offset 0.
//!   A partition whose records were all in that first file then fetched as empty (50 acked
//!   records, `FetchMessage` high-water mark 0). kelp therefore starts every empty partition
//!   with two hidden marker records (`layout::PARTITION_MARKER`), which fixes it.
//!
//! # Durability of kelp's own entries
//! Filer entries are written inline (content in the metadata store), so they are durable
//! once `filer_put` returns.

mod address;
mod broker;
mod filer;
pub mod layout;
pub(crate) mod pb;
mod publisher;
mod rpc;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use tokio::sync::Notify;

use crate::error::Error;
use publisher::{Outcome, Publisher, Target};

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
    topics: broker::Topics,
    /// The shared publish stream of each (Kafka topic, partition).
    publishers: Mutex<HashMap<(String, u32), Publisher>>,
    /// Woken when records of a (Kafka topic, partition) were acknowledged in this process.
    wakers: Mutex<HashMap<(String, u32), Arc<Notify>>>,
}

/// Fresh publish streams tried per publish when a stream closed before taking the batch.
const PUBLISH_ATTEMPTS: usize = 3;

impl Seaweed {
    /// Set up clients. Connections are made lazily on first use, so this does not wait for
    /// SeaweedFS; it fails only on malformed options.
    pub async fn connect(opts: SeaweedOptions) -> Result<Seaweed, Error> {
        let invalid = |why: String| Error::Broker {
            op: "connect",
            code: tonic::Code::InvalidArgument,
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
        let clients = Arc::new(
            rpc::Clients::new(&opts.master, opts.filer.as_deref(), opts.call_timeout)
                .map_err(invalid)?,
        );
        Ok(Seaweed {
            inner: Arc::new(Inner {
                topics: broker::Topics::new(Arc::clone(&clients), opts.namespace),
                clients,
                publishers: Mutex::new(HashMap::new()),
                wakers: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The MQ namespace kelp's topics live in.
    pub fn namespace(&self) -> &str {
        self.inner.topics.namespace()
    }

    /// One real round trip to a broker (which must have elected its balancer) and one to the
    /// filer: what readiness waits for.
    pub async fn ping(&self) -> Result<(), Error> {
        self.inner.topics.ping().await?;
        filer::ping(&self.inner.clients).await
    }

    /// Kafka topics in the namespace with their partition counts, sorted by name.
    pub async fn list_topics(&self) -> Result<Vec<(String, u32)>, Error> {
        self.inner.topics.list().await
    }

    /// Partition count of `topic`; `Ok(None)` when it definitely does not exist, `Err` when
    /// SeaweedFS could not tell.
    pub async fn partition_count(&self, topic: &str) -> Result<Option<u32>, Error> {
        Ok(self.inner.topics.layout(topic).await?.map(|l| l.slots.len() as u32))
    }

    /// Create `topic` with `partitions` (1..=2520) partitions. TOPIC_ALREADY_EXISTS if it
    /// exists, INVALID_PARTITIONS for a bad count, INVALID_TOPIC_EXCEPTION for an illegal name.
    pub async fn create_topic(&self, topic: &str, partitions: u32) -> Result<(), Error> {
        self.inner.topics.create(topic, partitions).await
    }

    /// Delete `topic` and its records; UNKNOWN_TOPIC_OR_PARTITION if it does not exist.
    /// Other kelps notice within a few seconds (their cached layout expires).
    pub async fn delete_topic(&self, topic: &str) -> Result<(), Error> {
        self.inner.topics.delete(topic).await?;
        self.inner.publishers.lock().expect("publishers lock").retain(|(t, _), _| t != topic);
        self.inner.wakers.lock().expect("wakers lock").retain(|(t, _), _| t != topic);
        Ok(())
    }

    /// Grow `topic` to `new_total` partitions. SeaweedFS cannot: a new partition count makes
    /// the broker allocate a new generation of ring slices, and the existing partitions'
    /// records and offsets do not carry over, which would silently empty every partition.
    /// So this always fails: INVALID_PARTITIONS when `new_total` is not larger than the
    /// current count (as Kafka answers), otherwise INVALID_REQUEST.
    pub async fn add_partitions(&self, topic: &str, new_total: u32) -> Result<(), Error> {
        let l = self.inner.topics.existing(topic).await?;
        if new_total as usize <= l.slots.len() || new_total > layout::MAX_PARTITIONS {
            return Err(Error::Kafka(ResponseError::InvalidPartitions));
        }
        Err(Error::Kafka(ResponseError::InvalidRequest))
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
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let timeout = self.inner.clients.call_timeout;
        // Opening a stream, then the acks, each bounded by the call timeout.
        let overall = timeout * 2;
        let attempt = async {
            let mut last = None;
            for _ in 0..PUBLISH_ATTEMPTS {
                let publisher = self.publisher(topic, partition).await?;
                match publisher.publish(messages.clone()).await {
                    Outcome::Acked(offsets) => {
                        // The records are stored, so the partition's markers exist and the
                        // shift is final (and cached after the first time).
                        let shift = self.inner.topics.data_offset(topic, partition).await?;
                        return Ok(offsets.into_iter().map(|o| o - shift).collect());
                    }
                    Outcome::NotSent(e) => {
                        self.forget_publisher(topic, partition, &publisher);
                        if !matches!(e, Error::Broker { code: tonic::Code::Unavailable, .. }) {
                            self.inner.topics.invalidate(topic);
                        }
                        last = Some(e);
                    }
                    Outcome::Failed(e) => {
                        self.forget_publisher(topic, partition, &publisher);
                        self.inner.topics.invalidate(topic);
                        return Err(e);
                    }
                }
            }
            Err(last.expect("at least one attempt"))
        };
        match tokio::time::timeout(overall, attempt).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout { op: "publish", after: overall }),
        }
    }

    /// The live publisher for a partition, replacing one that ended or targets an outdated
    /// layout (topic re-created, partition moved).
    async fn publisher(&self, topic: &str, partition: u32) -> Result<Publisher, Error> {
        let l = self.inner.topics.existing(topic).await?;
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
        let mut publishers = self.inner.publishers.lock().expect("publishers lock");
        if let Some(p) = publishers.get(&key)
            && !p.is_closed()
            && *p.target() == target
        {
            return Ok(p.clone());
        }
        let p =
            Publisher::spawn(Arc::clone(&self.inner.clients), target, self.waker(topic, partition));
        publishers.insert(key, p.clone());
        Ok(p)
    }

    fn forget_publisher(&self, topic: &str, partition: u32, which: &Publisher) {
        let mut publishers = self.inner.publishers.lock().expect("publishers lock");
        let key = (topic.to_string(), partition);
        if publishers.get(&key).is_some_and(|p| p.target() == which.target()) {
            publishers.remove(&key);
        }
    }

    fn waker(&self, topic: &str, partition: u32) -> Arc<Notify> {
        let mut wakers = self.inner.wakers.lock().expect("wakers lock");
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
        // Check the topic first so clients cannot grow the waker map with made-up names.
        self.inner.topics.existing(topic).await?.slot(partition)?;
        let wake = self.waker(topic, partition);
        if start_offset < 0 {
            return Err(Error::Kafka(kafka_protocol::ResponseError::OffsetOutOfRange));
        }
        // Kafka offsets are broker offsets minus the partition's markers. While the partition
        // is empty the shift is 0 and the only valid offset is 0, which the markers (skipped by
        // the read) then precede; the answer is labelled with the shift known afterwards.
        let before = self.inner.topics.data_offset(topic, partition).await?;
        let f = self
            .inner
            .topics
            .fetch(topic, partition, start_offset + before, max_bytes, max_wait, min_bytes, wake)
            .await?;
        let shift = if f.high_water_mark > 0 {
            self.inner.topics.data_offset(topic, partition).await?
        } else {
            before
        };
        Ok(Fetched {
            messages: f.messages.into_iter().map(|(o, m)| (o - shift, m)).collect(),
            high_water_mark: (f.high_water_mark - shift).max(0),
            log_start_offset: (f.log_start_offset - shift).max(0),
        })
    }

    /// `(earliest, latest)` offsets of a partition: the first readable offset (after kelp's
    /// markers) and the next offset to be assigned.
    pub async fn offset_range(&self, topic: &str, partition: u32) -> Result<(i64, i64), Error> {
        let (earliest, hwm, shift) = self.inner.topics.offset_range(topic, partition).await?;
        Ok(((earliest - shift).max(0), (hwm - shift).max(0)))
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

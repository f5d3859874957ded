//! Which kelp writes which partition, when several kelps front one SeaweedFS (DESIGN.md,
//! "Writing a partition from many sidecars"; docs/writers.md).
//!
//! The SeaweedFS broker stores the records of several publish streams into one partition in
//! an order other than the offsets it assigned, so exactly one kelp publishes into each
//! partition: the holder of the partition's lease in the filer (`lease`, the same machinery
//! as group ownership). The first kelp that needs to write a partition nobody holds takes its
//! lease (locality, never by force); the others forward that partition's records to it
//! (`routing::produce`). A kelp without a peer listener writes every partition itself.
//!
//! Owns: routing a partition (here or the holder's peer address), the fence every publish
//! passes ([`Writers::begin`]: the lease is held now, and the write is counted so the lease
//! is not released under it), the idempotent-producer state of the partitions written here
//! (`producers`; it is only right while the lease is held without a break, so it is dropped
//! when a lease ends and rebuilt from the partition's tail when one is taken), and the lease
//! task. Does not own: forwarding (`routing`, `peer`), publishing (`seaweed`), lease timing
//! (`lease`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::ResponseError;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tracing::{Instrument, debug, debug_span};

use crate::error::{ApiKind, Error};
use crate::lease::{self, Holder, Kind, Leases, Route};
use crate::producers::{BatchId, Producers};
use crate::records::envelope::{self, Produced};
use crate::seaweed::{Seaweed, layout};
use crate::shutdown::{CancellationToken, TaskTracker};

/// How often the lease task looks at the leases (renewals, expiry, idle release).
const TICK: Duration = Duration::from_millis(100);

/// The leases of partitions, as `lease::Leases` sees them: keyed by [`key`].
const KIND: Kind = Kind { what: "partition", lock_name: lock_of };

/// How this kelp takes part in partition writing across kelps.
#[derive(Debug, Clone)]
pub struct Sharing {
    /// Recorded in each lease this kelp holds: `lease::owner_id(peer address, instance)`.
    pub owner_id: String,
    /// Lease lifetime (`KELP_PARTITION_LEASE_MS`).
    pub lease: Duration,
    /// Longest a publish may take; shutdown waits this long for publishes in flight before
    /// releasing the leases they were started under.
    pub publish_bound: Duration,
}

/// Partition writing for one kelp; cloning is cheap and every clone is the same.
#[derive(Clone)]
pub struct Writers {
    inner: Arc<Inner>,
}

struct Inner {
    seaweed: Seaweed,
    /// The idempotent-producer state of the partitions this kelp writes.
    producers: Producers,
    /// `None`: this kelp writes every partition itself.
    leases: Option<Arc<Leases>>,
    /// Publishes in flight per partition key. Counted under this lock together with the
    /// lease check, so an idle lease is never released under a publish.
    writing: Mutex<HashMap<String, usize>>,
    /// Woken when a publish ends (shutdown waits for the last one).
    written: Notify,
    /// Cancelled on shutdown: no lease is taken any more.
    stopping: CancellationToken,
    publish_bound: Duration,
}

/// A publish under a partition's lease; dropping it ends the publish.
pub struct Writing {
    writers: Option<(Writers, String)>,
}

impl Drop for Writing {
    fn drop(&mut self) {
        if let Some((w, key)) = self.writers.take() {
            let mut writing = w.inner.writing.lock();
            if let Some(n) = writing.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    writing.remove(&key);
                }
            }
            drop(writing);
            w.inner.written.notify_waiters();
        }
    }
}

/// The lease key of a partition: `<partition>/<topic>` (Kafka topic names have no '/').
fn key(topic: &str, partition: i32) -> String {
    format!("{partition}/{topic}")
}

fn parse_key(key: &str) -> Option<(&str, i32)> {
    let (p, topic) = key.split_once('/')?;
    Some((topic, p.parse().ok()?))
}

fn lock_of(root: &str, key: &str) -> String {
    let (topic, partition) = parse_key(key).unwrap_or((key, -1));
    layout::partition_writer_lock(root, topic, partition)
}

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Records at the end of a partition read back when its lease is taken. A retried batch that
/// the previous writer stored without answering is among the partition's last records: the
/// producer retries it within its delivery timeout, with at most five batches in flight.
const TAIL_RECORDS: i64 = 10_000;

/// The producer id whose turn serialises the read-backs of one partition (real ids are
/// never negative).
const SETTLING: i64 = -1;

/// Bytes read back per call while reading a partition's tail.
const TAIL_READ_BYTES: i32 = 1024 * 1024;

/// Rebuild the idempotent-producer state of a partition: learn the batches at the
/// partition's end from the records themselves (`records::envelope`, format 2). With
/// `forget` (the lease was just taken: another kelp may have written since) what this kelp
/// knew is dropped first; without it (a publish of unknown outcome) the tail is merged into
/// it. A batch stored only in part (its writer died mid-publish) is not remembered: a retry
/// of it is stored again, whole.
async fn recover(
    seaweed: &Seaweed,
    producers: &Producers,
    topic: &str,
    partition: i32,
    forget: bool,
) -> Result<(), Error> {
    if forget {
        producers.forget_partition(topic, partition);
    }
    let (earliest, end) = seaweed.offset_range(topic, partition as u32).await?;
    let mut next = earliest.max(end - TAIL_RECORDS);
    // The batch being read: its identity, first offset and records seen so far.
    let mut run: Option<(Produced, i64, i32)> = None;
    let mut batches = 0usize;
    let mut remember = |run: Option<(Produced, i64, i32)>| {
        if let Some((p, first, seen)) = run
            && seen == p.count
        {
            let id = BatchId {
                producer_id: p.producer_id,
                epoch: p.epoch,
                topic,
                partition,
                first_seq: p.base_sequence,
                count: p.count,
            };
            producers.record(id, first);
            batches += 1;
        }
    };
    while next < end {
        let fetched = seaweed
            .fetch(topic, partition as u32, next, TAIL_READ_BYTES, Duration::ZERO, 0)
            .await?;
        let Some((last, _)) = fetched.messages.last() else { break };
        next = last + 1;
        for (offset, m) in &fetched.messages {
            let produced = envelope::produced(m);
            match (&mut run, produced) {
                (Some((p, first, seen)), Some(q))
                    if *p == q && *seen < q.count && *first + i64::from(*seen) == *offset =>
                {
                    *seen += 1
                }
                (current, q) => {
                    remember(current.take());
                    *current = q.map(|q| (q, *offset, 1));
                }
            }
        }
    }
    remember(run);
    debug!(topic, partition, batches, "producer state read back from the partition's end");
    Ok(())
}

impl Writers {
    /// Partition writing for this kelp; with `sharing`, through leases kept by a task on
    /// `tracker` until `cancel` (which then releases them all).
    pub fn start(
        seaweed: Seaweed,
        root: String,
        sharing: Option<Sharing>,
        cancel: CancellationToken,
        tracker: &TaskTracker,
    ) -> Writers {
        let publish_bound = sharing.as_ref().map_or(Duration::ZERO, |s| s.publish_bound);
        let leases = sharing
            .map(|s| Arc::new(Leases::new(seaweed.clone(), root, KIND, s.owner_id, s.lease)));
        let w = Writers {
            inner: Arc::new(Inner {
                seaweed,
                producers: Producers::default(),
                leases,
                writing: Mutex::new(HashMap::new()),
                written: Notify::new(),
                stopping: cancel.clone(),
                publish_bound,
            }),
        };
        if let Some(leases) = &w.inner.leases {
            let task = lease::run(Arc::clone(leases), w.clone(), TICK, cancel, tracker.clone());
            tracker.spawn(task.instrument(debug_span!("partition_leases")));
        }
        w
    }

    /// Whether partitions are shared with other kelps through leases.
    pub fn is_shared(&self) -> bool {
        self.inner.leases.is_some()
    }

    /// The idempotent-producer state of the partitions written here.
    pub fn producers(&self) -> &Producers {
        &self.inner.producers
    }

    /// Where records of `topic`'s `partition` (which exists) are written: here, taking the
    /// partition's lease when nobody holds it, or at the holder's peer address. `Err` is a
    /// retriable code for the partition.
    pub async fn route(&self, topic: &str, partition: i32) -> Result<Route, ResponseError> {
        let Some(leases) = &self.inner.leases else {
            return Ok(Route::Local);
        };
        if self.inner.stopping.is_cancelled() {
            // Leases are being released; taking one now would outlive this process.
            return Err(ResponseError::NotLeaderOrFollower);
        }
        let key = key(topic, partition);
        let recover =
            || recover(&self.inner.seaweed, &self.inner.producers, topic, partition, true);
        match leases.route_prepared(&key, now, recover).await {
            Ok(Some((route, fresh))) => {
                if fresh && self.inner.stopping.is_cancelled() {
                    if let Some(token) = leases.give_up(&key) {
                        let _ = leases.release(&key, &token).await;
                    }
                    return Err(ResponseError::NotLeaderOrFollower);
                }
                Ok(route)
            }
            Ok(None) => Err(ResponseError::NotLeaderOrFollower),
            Err(e) => {
                debug!(topic, partition, error = %e, "finding the partition's writer failed");
                Err(e.code(ApiKind::Data))
            }
        }
    }

    /// Make the partition's idempotent-producer state whole again after a publish of unknown
    /// outcome (`Producers::unsettle`): read the partition's tail back, once for every
    /// publish that waits on it. Waits at most `within`; `Err` is a retriable code.
    pub async fn settle(
        &self,
        topic: &str,
        partition: i32,
        within: Duration,
    ) -> Result<(), ResponseError> {
        let producers = &self.inner.producers;
        // One read-back at a time per partition: the turn of a producer id no producer has.
        let gate =
            BatchId { producer_id: SETTLING, epoch: 0, topic, partition, first_seq: 0, count: 1 };
        let _one_at_a_time =
            producers.turn(gate, within).await.ok_or(ResponseError::RequestTimedOut)?;
        let Some(mark) = producers.unsettled(topic, partition) else {
            return Ok(());
        };
        let read = recover(&self.inner.seaweed, producers, topic, partition, false);
        match tokio::time::timeout(within, read).await {
            Ok(Ok(())) => {
                producers.settled(topic, partition, mark);
                Ok(())
            }
            Ok(Err(e)) => {
                debug!(topic, partition, error = %e, "reading back the partition's end failed");
                Err(e.code(ApiKind::Data))
            }
            Err(_) => Err(ResponseError::RequestTimedOut),
        }
    }

    /// Who writes `topic`'s `partition` now, without taking its lease: `Route::Local` when
    /// this kelp does (or writes everything), the writer's peer address when another kelp
    /// does, `None` when nobody does or the filer could not say. For fetches that wait: the
    /// writer sees every record of its partition the moment the broker acknowledges it.
    pub async fn writer(&self, topic: &str, partition: i32) -> Option<Route> {
        let Some(leases) = &self.inner.leases else {
            return Some(Route::Local);
        };
        match leases.holder(&key(topic, partition), now()).await {
            Ok(route) => route,
            Err(e) => {
                debug!(topic, partition, error = %e, "finding the partition's writer failed");
                None
            }
        }
    }

    /// The holder named for a partition did not answer or said it does not write it: look
    /// again on the next request.
    pub fn forget_writer(&self, topic: &str, partition: i32) {
        if let Some(leases) = &self.inner.leases {
            leases.forget_remote(&key(topic, partition));
        }
    }

    /// Start a publish into `topic`'s `partition`: only while this kelp holds its lease
    /// (NOT_LEADER_OR_FOLLOWER otherwise, so the forwarder looks for the writer again). The
    /// lease is not released while the returned guard lives.
    pub fn begin(&self, topic: &str, partition: i32) -> Result<Writing, ResponseError> {
        let Some(leases) = &self.inner.leases else {
            return Ok(Writing { writers: None });
        };
        let key = key(topic, partition);
        let mut writing = self.inner.writing.lock();
        if !leases.owns(&key, now()) {
            return Err(ResponseError::NotLeaderOrFollower);
        }
        *writing.entry(key.clone()).or_default() += 1;
        Ok(Writing { writers: Some((self.clone(), key)) })
    }
}

impl Holder for Writers {
    fn ended(&self, key: &str) {
        if let Some((topic, partition)) = parse_key(key) {
            self.inner.producers.forget_partition(topic, partition);
        }
    }

    fn release_if_quiet(&self, key: &str, give_up: &dyn Fn() -> Option<String>) -> Option<String> {
        let writing = self.inner.writing.lock();
        if writing.contains_key(key) {
            return None;
        }
        let token = give_up();
        drop(writing);
        self.ended(key);
        token
    }

    fn quiesce(&self) -> impl std::future::Future<Output = ()> + Send {
        let inner = Arc::clone(&self.inner);
        async move {
            let idle = async {
                loop {
                    let woken = inner.written.notified();
                    if inner.writing.lock().is_empty() {
                        return;
                    }
                    woken.await;
                }
            };
            if tokio::time::timeout(inner.publish_bound, idle).await.is_err() {
                debug!("publishes still in flight when releasing partition leases");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_keys_round_trip() {
        assert_eq!(parse_key(&key("orders.v1", 7)), Some(("orders.v1", 7)));
        assert_eq!(parse_key("x"), None);
    }
}

//! Idempotent producers: the per-partition sequence check that turns a retried batch into its
//! earlier answer instead of a duplicate. Producer ids themselves come from `producer_ids`.
//!
//! The state lives in memory at the kelp that writes the partition (`writers`): a batch
//! forwarded from another kelp is checked here, where it is published. It is only right while
//! this kelp writes the partition without a break, so `writers` drops a partition's state when
//! its lease ends and rebuilds it from the partition's tail when it is taken again. The
//! records themselves carry what the rebuild needs (envelope format 2), so nothing else is
//! persisted. Transactions are not supported.
//!
//! The rules are Kafka's (ProducerStateManager / ProducerAppendInfo): a batch is a duplicate
//! when one of the last five batches of its producer had the same epoch, first *and* last
//! sequence; an older epoch is fenced (INVALID_PRODUCER_EPOCH); a newer epoch starts at
//! sequence 0; within an epoch the next batch starts right after the last one (sequences wrap
//! from i32::MAX to 0); a producer nothing is known of may start anywhere (its state was
//! forgotten or aged out of the tail that was read back).
//!
//! Check and record are one step per (producer, partition): a publish holds that pair's
//! [`Turn`] from its check until it records the batch, so a retry racing its original waits
//! and then sees it as a duplicate. A publish whose outcome is unknown (it failed or timed out
//! after reaching the broker) marks the partition unsettled: its state is read back from the
//! tail before another idempotent batch is checked there ([`Producers::unsettled`]).

use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::ResponseError;

/// Batches remembered per producer and partition (Kafka keeps five, matching
/// max.in.flight.requests.per.connection ≤ 5 for idempotent producers).
const REMEMBERED_BATCHES: usize = 5;
/// Producer state not used for this long may be forgotten when the table is full.
const IDLE_EXPIRY: Duration = Duration::from_secs(15 * 60);
/// Most (producer, partition) entries kept.
const MAX_ENTRIES: usize = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Appended {
    first_seq: i32,
    last_seq: i32,
    base_offset: i64,
}

struct State {
    epoch: i16,
    /// Oldest first, by offset.
    recent: VecDeque<Appended>,
    used: Instant,
}

/// What to do with an incoming idempotent batch.
#[derive(Debug, PartialEq, Eq)]
pub enum Check {
    /// Publish it, then call [`Producers::record`].
    Append,
    /// Already stored: answer with this base offset and publish nothing.
    Duplicate(i64),
    /// Refuse with this code.
    Reject(ResponseError),
}

type Key = (i64, String, i32);

/// Who wrote an idempotent batch and where it goes: the fields of a check and a record.
#[derive(Debug, Clone, Copy)]
pub struct BatchId<'a> {
    pub producer_id: i64,
    pub epoch: i16,
    pub topic: &'a str,
    pub partition: i32,
    pub first_seq: i32,
    /// Records in the batch (at least one).
    pub count: i32,
}

impl BatchId<'_> {
    /// The batch's last sequence, wrapping as Kafka does (DefaultRecordBatch.incrementSequence).
    pub fn last_seq(&self) -> i32 {
        increment(self.first_seq, self.count.max(1) - 1)
    }
}

/// `seq + by`, wrapping from i32::MAX to 0 (Kafka's sequences are non-negative).
fn increment(seq: i32, by: i32) -> i32 {
    if seq > i32::MAX - by { by - (i32::MAX - seq) - 1 } else { seq + by }
}

#[derive(Default)]
pub struct Producers {
    table: Mutex<HashMap<Key, State>>,
    /// The (producer, partition) pairs with a publish between check and record, each with
    /// the lock later publishes of the pair wait on. An entry leaves with its last user.
    turns: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<()>>>>,
    /// Partitions with a publish of unknown outcome, each with the mark of the last such
    /// publish: read back before the next check.
    unsettled: Mutex<HashMap<(String, i32), u64>>,
    /// Where the next unsettled mark comes from.
    marks: std::sync::atomic::AtomicU64,
}

/// One (producer, partition)'s turn to check, publish and record; dropping it lets the next
/// publish of the pair go.
pub struct Turn<'a> {
    producers: &'a Producers,
    key: Key,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut turns = self.producers.turns.lock();
        // Only this map and guards hold the lock: two references mean nobody waits.
        if turns.get(&self.key).is_some_and(|l| Arc::strong_count(l) == 1) {
            turns.remove(&self.key);
        }
    }
}

impl Producers {
    /// Wait (at most `within`) for `batch`'s producer and partition to be free, so its check,
    /// publish and record happen as one step. `None` when the wait timed out.
    pub async fn turn(&self, batch: BatchId<'_>, within: Duration) -> Option<Turn<'_>> {
        let key = (batch.producer_id, batch.topic.to_string(), batch.partition);
        let lock = Arc::clone(self.turns.lock().entry(key.clone()).or_default());
        let mut turn = Turn { producers: self, key, guard: None };
        turn.guard = Some(tokio::time::timeout(within, lock.lock_owned()).await.ok()?);
        Some(turn)
    }

    pub fn check(&self, batch: BatchId<'_>) -> Check {
        let BatchId { producer_id: pid, epoch, topic, partition, first_seq, .. } = batch;
        let table = self.table.lock();
        let Some(state) = table.get(&(pid, topic.to_string(), partition)) else {
            return Check::Append;
        };
        if epoch < state.epoch {
            return Check::Reject(ResponseError::InvalidProducerEpoch);
        }
        if epoch > state.epoch {
            // A bumped epoch starts again at 0 (ProducerAppendInfo.checkSequence).
            return if first_seq == 0 {
                Check::Append
            } else {
                Check::Reject(ResponseError::OutOfOrderSequenceNumber)
            };
        }
        let last_seq = batch.last_seq();
        if let Some(a) =
            state.recent.iter().find(|a| a.first_seq == first_seq && a.last_seq == last_seq)
        {
            return Check::Duplicate(a.base_offset);
        }
        let next = state.recent.back().map_or(0, |a| increment(a.last_seq, 1));
        if first_seq != next {
            return Check::Reject(ResponseError::OutOfOrderSequenceNumber);
        }
        Check::Append
    }

    /// Forget every producer's state for one partition (its lease ended or was just taken).
    pub fn forget_partition(&self, topic: &str, partition: i32) {
        self.table.lock().retain(|(_, t, p), _| !(*p == partition && t == topic));
        self.unsettled.lock().remove(&(topic.to_string(), partition));
    }

    /// A publish into the partition failed after it may have reached the broker: what is
    /// stored there is unknown until the tail is read back.
    pub fn unsettle(&self, topic: &str, partition: i32) {
        let mark = self.marks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut unsettled = self.unsettled.lock();
        // Bounded by the partitions this kelp writes; the cap only guards against a bug.
        if unsettled.len() < MAX_ENTRIES {
            unsettled.insert((topic.to_string(), partition), mark);
        }
    }

    /// `Some(mark)` when the partition's state must be read back before the next idempotent
    /// batch; hand the mark to [`Producers::settled`] once it was.
    pub fn unsettled(&self, topic: &str, partition: i32) -> Option<u64> {
        self.unsettled.lock().get(&(topic.to_string(), partition)).copied()
    }

    /// The partition's tail was read back after `mark`: settled, unless another publish
    /// failed meanwhile.
    pub fn settled(&self, topic: &str, partition: i32, mark: u64) {
        let mut unsettled = self.unsettled.lock();
        let key = (topic.to_string(), partition);
        if unsettled.get(&key) == Some(&mark) {
            unsettled.remove(&key);
        }
    }

    /// Remember a stored batch. Recording the same batch twice, or batches out of offset
    /// order (a read-back of the tail racing publishes), gives the same state as recording
    /// each once in order; a batch of an older epoch than the one known is ignored.
    pub fn record(&self, batch: BatchId<'_>, base_offset: i64) {
        let BatchId { producer_id: pid, epoch, topic, partition, first_seq, .. } = batch;
        let appended = Appended { first_seq, last_seq: batch.last_seq(), base_offset };
        let now = Instant::now();
        let mut table = self.table.lock();
        if table.len() >= MAX_ENTRIES {
            table.retain(|_, s| now.duration_since(s.used) < IDLE_EXPIRY);
            if table.len() >= MAX_ENTRIES {
                return;
            }
        }
        let state = table.entry((pid, topic.to_string(), partition)).or_insert_with(|| State {
            epoch,
            recent: VecDeque::new(),
            used: now,
        });
        if epoch < state.epoch {
            return;
        }
        if epoch > state.epoch {
            state.epoch = epoch;
            state.recent.clear();
        }
        state.used = now;
        if state.recent.iter().any(|a| a.base_offset == base_offset) {
            return;
        }
        let at = state.recent.partition_point(|a| a.base_offset < base_offset);
        state.recent.insert(at, appended);
        if state.recent.len() > REMEMBERED_BATCHES {
            state.recent.pop_front();
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    fn id(producer_id: i64, epoch: i16, partition: i32, first_seq: i32) -> BatchId<'static> {
        sized(producer_id, epoch, partition, first_seq, 1)
    }

    fn sized(pid: i64, epoch: i16, partition: i32, first_seq: i32, count: i32) -> BatchId<'static> {
        BatchId { producer_id: pid, epoch, topic: "t", partition, first_seq, count }
    }

    #[test]
    fn a_retried_batch_is_answered_with_its_first_offset() {
        let p = Producers::default();
        assert_eq!(p.check(sized(7, 0, 0, 0, 10)), Check::Append);
        p.record(sized(7, 0, 0, 0, 10), 100);
        assert_eq!(p.check(sized(7, 0, 0, 0, 10)), Check::Duplicate(100));
        assert_eq!(p.check(sized(7, 0, 0, 10, 5)), Check::Append);
        p.record(sized(7, 0, 0, 10, 5), 110);
        assert_eq!(p.check(sized(7, 0, 0, 10, 5)), Check::Duplicate(110));
        assert_eq!(p.check(sized(7, 0, 0, 0, 10)), Check::Duplicate(100));
    }

    #[test]
    fn a_duplicate_matches_first_and_last_sequence() {
        let p = Producers::default();
        p.record(sized(7, 0, 0, 0, 10), 100);
        assert_eq!(
            p.check(sized(7, 0, 0, 0, 4)),
            Check::Reject(ResponseError::OutOfOrderSequenceNumber),
            "same first sequence, other last sequence: not the stored batch"
        );
    }

    #[test]
    fn gaps_and_old_epochs_are_refused() {
        let p = Producers::default();
        p.record(sized(7, 1, 0, 0, 10), 0);
        assert_eq!(
            p.check(id(7, 1, 0, 11)),
            Check::Reject(ResponseError::OutOfOrderSequenceNumber)
        );
        assert_eq!(p.check(id(7, 0, 0, 10)), Check::Reject(ResponseError::InvalidProducerEpoch));
        assert_eq!(p.check(id(7, 2, 0, 0)), Check::Append);
        assert_eq!(p.check(id(7, 1, 1, 55)), Check::Append, "other partitions are independent");
    }

    #[test]
    fn a_new_epoch_starts_at_sequence_zero() {
        let p = Producers::default();
        p.record(sized(7, 1, 0, 0, 10), 0);
        assert_eq!(
            p.check(id(7, 2, 0, 10)),
            Check::Reject(ResponseError::OutOfOrderSequenceNumber)
        );
        assert_eq!(p.check(id(7, 2, 0, 0)), Check::Append);
        assert_eq!(
            p.check(id(8, 0, 0, 42)),
            Check::Append,
            "an unknown producer may start anywhere"
        );
    }

    #[test]
    fn sequences_wrap_to_zero() {
        let p = Producers::default();
        let batch = sized(7, 0, 0, i32::MAX - 1, 4);
        assert_eq!(batch.last_seq(), 1);
        p.record(batch, 50);
        assert_eq!(p.check(batch), Check::Duplicate(50));
        assert_eq!(p.check(id(7, 0, 0, 2)), Check::Append);
        p.record(sized(7, 0, 0, i32::MAX, 1), 60);
        let q = Producers::default();
        q.record(sized(7, 0, 0, i32::MAX, 1), 60);
        assert_eq!(q.check(id(7, 0, 0, 0)), Check::Append);
    }

    #[test]
    fn recording_is_idempotent_and_keeps_offset_order() {
        let p = Producers::default();
        p.record(sized(7, 0, 0, 0, 2), 10);
        p.record(sized(7, 0, 0, 2, 2), 12);
        // A read-back of the tail records what is already known, oldest last.
        p.record(sized(7, 0, 0, 0, 2), 10);
        p.record(sized(7, 0, 0, 2, 2), 12);
        assert_eq!(p.check(id(7, 0, 0, 4)), Check::Append);
        p.record(sized(7, 1, 0, 0, 1), 20);
        p.record(sized(7, 0, 0, 4, 1), 14);
        assert_eq!(p.check(id(7, 1, 0, 1)), Check::Append, "an older epoch read back is ignored");
    }

    #[test]
    fn a_partition_can_be_forgotten_alone() {
        let p = Producers::default();
        p.record(sized(7, 0, 0, 0, 10), 100);
        p.record(sized(7, 0, 1, 0, 10), 100);
        p.unsettle("t", 0);
        p.forget_partition("t", 0);
        assert_eq!(p.unsettled("t", 0), None);
        assert_eq!(p.check(id(7, 0, 0, 3)), Check::Append, "nothing known of partition 0");
        assert_eq!(p.check(sized(7, 0, 1, 0, 10)), Check::Duplicate(100));
    }

    #[test]
    fn only_five_batches_are_remembered() {
        let p = Producers::default();
        for i in 0..6 {
            p.record(sized(1, 0, 0, i * 2, 2), i64::from(i) * 2);
        }
        assert_eq!(
            p.check(sized(1, 0, 0, 0, 2)),
            Check::Reject(ResponseError::OutOfOrderSequenceNumber)
        );
        assert_eq!(p.check(sized(1, 0, 0, 2, 2)), Check::Duplicate(2));
    }

    #[tokio::test]
    async fn a_retry_racing_its_original_waits_for_it() {
        let p = Producers::default();
        let batch = sized(7, 0, 0, 0, 3);
        let within = Duration::from_secs(5);
        let first = p.turn(batch, within).await.expect("free");
        assert_eq!(p.check(batch), Check::Append);
        // The retry cannot check while the original is between check and record.
        assert!(p.turn(batch, Duration::ZERO).await.is_none());
        assert!(p.turn(sized(8, 0, 0, 0, 3), Duration::ZERO).await.is_some(), "other producers go");
        p.record(batch, 40);
        drop(first);
        let _second = p.turn(batch, within).await.expect("free again");
        assert_eq!(p.check(batch), Check::Duplicate(40));
        assert_eq!(p.turns.lock().len(), 1, "finished turns leave the table");
    }

    #[test]
    fn unsettled_partitions_are_remembered_until_read_back() {
        let p = Producers::default();
        p.unsettle("t", 3);
        let mark = p.unsettled("t", 3).expect("unsettled");
        assert_eq!(p.unsettled("t", 2), None);
        p.unsettle("t", 3);
        p.settled("t", 3, mark);
        let again = p.unsettled("t", 3).expect("a later failure is not settled by an earlier read");
        p.settled("t", 3, again);
        assert_eq!(p.unsettled("t", 3), None);
    }
}

//! Idempotent producers: producer ids and the per-partition sequence check that turns a
//! retried batch into its earlier answer instead of a duplicate.
//!
//! The state lives in memory at the kelp that writes the partition (`writers`): a batch
//! forwarded from another kelp is checked here, where it is published. It is only right while
//! this kelp writes the partition without a break, so `writers` drops a partition's state when
//! its lease ends and when it is taken again. Transactions are not supported.

use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
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
}

#[derive(Default)]
pub struct Producers {
    table: Mutex<HashMap<Key, State>>,
}

/// A fresh producer id: random in 1..2^62 so kelps need not coordinate. Two producers
/// sharing an id would need to collide within 2^62 draws.
pub fn new_producer_id() -> i64 {
    let bits = uuid::Uuid::new_v4().as_u64_pair().0;
    ((bits >> 2) as i64).max(1)
}

impl Producers {
    pub fn check(&self, batch: BatchId<'_>) -> Check {
        let BatchId { producer_id: pid, epoch, topic, partition, first_seq } = batch;
        let table = self.table.lock();
        let Some(state) = table.get(&(pid, topic.to_string(), partition)) else {
            return Check::Append;
        };
        if epoch < state.epoch {
            return Check::Reject(ResponseError::InvalidProducerEpoch);
        }
        if epoch > state.epoch {
            return Check::Append;
        }
        if let Some(a) = state.recent.iter().find(|a| a.first_seq == first_seq) {
            return Check::Duplicate(a.base_offset);
        }
        let next = state.recent.back().map_or(0, |a| a.last_seq.wrapping_add(1));
        if first_seq != next {
            return Check::Reject(ResponseError::OutOfOrderSequenceNumber);
        }
        Check::Append
    }

    /// Forget every producer's state for one partition (its lease ended or was just taken).
    pub fn forget_partition(&self, topic: &str, partition: i32) {
        self.table.lock().retain(|(_, t, p), _| !(*p == partition && t == topic));
    }

    pub fn record(&self, batch: BatchId<'_>, count: i32, base_offset: i64) {
        let BatchId { producer_id: pid, epoch, topic, partition, first_seq } = batch;
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
        if epoch != state.epoch {
            state.epoch = epoch;
            state.recent.clear();
        }
        state.used = now;
        if state.recent.len() == REMEMBERED_BATCHES {
            state.recent.pop_front();
        }
        state.recent.push_back(Appended {
            first_seq,
            last_seq: first_seq.wrapping_add(count - 1),
            base_offset,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(producer_id: i64, epoch: i16, partition: i32, first_seq: i32) -> BatchId<'static> {
        BatchId { producer_id, epoch, topic: "t", partition, first_seq }
    }

    #[test]
    fn a_retried_batch_is_answered_with_its_first_offset() {
        let p = Producers::default();
        assert_eq!(p.check(id(7, 0, 0, 0)), Check::Append);
        p.record(id(7, 0, 0, 0), 10, 100);
        assert_eq!(p.check(id(7, 0, 0, 0)), Check::Duplicate(100));
        assert_eq!(p.check(id(7, 0, 0, 10)), Check::Append);
        p.record(id(7, 0, 0, 10), 5, 110);
        assert_eq!(p.check(id(7, 0, 0, 10)), Check::Duplicate(110));
        assert_eq!(p.check(id(7, 0, 0, 0)), Check::Duplicate(100));
    }

    #[test]
    fn gaps_and_old_epochs_are_refused() {
        let p = Producers::default();
        p.record(id(7, 1, 0, 0), 10, 0);
        assert_eq!(
            p.check(id(7, 1, 0, 11)),
            Check::Reject(ResponseError::OutOfOrderSequenceNumber)
        );
        assert_eq!(p.check(id(7, 0, 0, 10)), Check::Reject(ResponseError::InvalidProducerEpoch));
        assert_eq!(p.check(id(7, 2, 0, 0)), Check::Append);
        assert_eq!(p.check(id(7, 1, 1, 55)), Check::Append, "other partitions are independent");
    }

    #[test]
    fn a_partition_can_be_forgotten_alone() {
        let p = Producers::default();
        p.record(id(7, 0, 0, 0), 10, 100);
        p.record(id(7, 0, 1, 0), 10, 100);
        p.forget_partition("t", 0);
        assert_eq!(p.check(id(7, 0, 0, 3)), Check::Append, "nothing known of partition 0");
        assert_eq!(p.check(id(7, 0, 1, 0)), Check::Duplicate(100));
    }

    #[test]
    fn only_five_batches_are_remembered() {
        let p = Producers::default();
        for i in 0..6 {
            p.record(id(1, 0, 0, i * 2), 2, i64::from(i) * 2);
        }
        assert_eq!(p.check(id(1, 0, 0, 0)), Check::Reject(ResponseError::OutOfOrderSequenceNumber));
        assert_eq!(p.check(id(1, 0, 0, 2)), Check::Duplicate(2));
    }

    #[test]
    fn producer_ids_are_positive_and_differ() {
        let a = new_producer_id();
        let b = new_producer_id();
        assert!(a > 0 && b > 0);
        assert_ne!(a, b);
    }
}

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
    /// Batches admitted and being published, oldest first: (first_seq, last_seq). A later
    /// batch of a pipelining producer follows on from these (`produce_order` keeps them in
    /// the client's order).
    in_flight: VecDeque<(i32, i32)>,
    used: Instant,
}

impl State {
    fn new(epoch: i16, now: Instant) -> State {
        State { epoch, recent: VecDeque::new(), in_flight: VecDeque::new(), used: now }
    }
}

/// What [`Producers::admit`] decided.
pub enum Admit<'a> {
    /// Publish it, then [`InFlight::record`] its offset (dropping it unrecorded forgets it).
    Append(InFlight<'a>),
    /// Already stored: answer with this base offset and publish nothing.
    Duplicate(i64),
    /// Refuse with this code.
    Reject(ResponseError),
}

/// An admitted idempotent batch being published: the next batch of its producer is checked
/// against it. Dropped without [`InFlight::record`] (publishing failed), it is forgotten.
pub struct InFlight<'a> {
    producers: &'a Producers,
    key: Key,
    epoch: i16,
    seqs: (i32, i32),
    done: bool,
}

impl InFlight<'_> {
    /// The batch is stored from `base_offset` on.
    pub fn record(mut self, base_offset: i64) {
        self.done = true;
        let (first_seq, last_seq) = self.seqs;
        let (pid, topic, partition) = (self.key.0, self.key.1.as_str(), self.key.2);
        let id = BatchId { producer_id: pid, epoch: self.epoch, topic, partition, first_seq };
        self.producers.record(id, last_seq.wrapping_sub(first_seq).wrapping_add(1), base_offset);
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut table = self.producers.table.lock();
        if let Some(state) = table.get_mut(&self.key)
            && state.epoch == self.epoch
        {
            state.in_flight.retain(|f| *f != self.seqs);
        }
    }
}

/// What to do with an incoming idempotent batch.
#[derive(Debug, PartialEq, Eq)]
pub enum Check {
    /// Publish it.
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
    /// What [`Producers::admit`] would decide, without admitting anything.
    #[cfg(test)]
    pub fn check(&self, batch: BatchId<'_>) -> Check {
        let BatchId { producer_id: pid, topic, partition, .. } = batch;
        let table = self.table.lock();
        check_state(table.get(&(pid, topic.to_string(), partition)), &batch)
    }

    /// Check a batch of `count` records and, when it is to be appended, hold it as in flight
    /// until it is recorded or dropped, so that the producer's next batch may follow it
    /// before it is acknowledged (as a Kafka broker appends pipelined batches in order).
    pub fn admit(&self, batch: BatchId<'_>, count: i32) -> Admit<'_> {
        let BatchId { producer_id: pid, epoch, topic, partition, first_seq } = batch;
        let key = (pid, topic.to_string(), partition);
        let now = Instant::now();
        let mut table = self.table.lock();
        match check_state(table.get(&key), &batch) {
            Check::Append => {}
            Check::Duplicate(offset) => return Admit::Duplicate(offset),
            Check::Reject(code) => return Admit::Reject(code),
        }
        if !table.contains_key(&key) && !make_room(&mut table, now) {
            // Full of live producers: this one goes unchecked, as `record` cannot keep it.
            return Admit::Append(InFlight {
                producers: self,
                key,
                epoch,
                seqs: (first_seq, first_seq),
                done: true,
            });
        }
        let state = table.entry(key.clone()).or_insert_with(|| State::new(epoch, now));
        if epoch != state.epoch {
            *state = State::new(epoch, now);
        }
        state.used = now;
        let seqs = (first_seq, first_seq.wrapping_add(count.max(1) - 1));
        state.in_flight.push_back(seqs);
        Admit::Append(InFlight { producers: self, key, epoch, seqs, done: false })
    }

    /// Forget every producer's state for one partition (its lease ended or was just taken).
    pub fn forget_partition(&self, topic: &str, partition: i32) {
        self.table.lock().retain(|(_, t, p), _| !(*p == partition && t == topic));
    }

    pub fn record(&self, batch: BatchId<'_>, count: i32, base_offset: i64) {
        let BatchId { producer_id: pid, epoch, topic, partition, first_seq } = batch;
        let now = Instant::now();
        let mut table = self.table.lock();
        let key = (pid, topic.to_string(), partition);
        if !table.contains_key(&key) && !make_room(&mut table, now) {
            return;
        }
        let state = table.entry(key).or_insert_with(|| State::new(epoch, now));
        if epoch < state.epoch {
            // A batch of a fenced epoch finished after the new epoch began.
            return;
        }
        if epoch > state.epoch {
            *state = State::new(epoch, now);
        }
        state.used = now;
        state.in_flight.retain(|f| f.0 != first_seq);
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

/// The decision for `batch` given its producer's state on the partition.
fn check_state(state: Option<&State>, batch: &BatchId<'_>) -> Check {
    let Some(state) = state else {
        return Check::Append;
    };
    let (epoch, first_seq) = (batch.epoch, batch.first_seq);
    if epoch < state.epoch {
        return Check::Reject(ResponseError::InvalidProducerEpoch);
    }
    if epoch > state.epoch {
        return Check::Append;
    }
    if let Some(a) = state.recent.iter().find(|a| a.first_seq == first_seq) {
        return Check::Duplicate(a.base_offset);
    }
    if state.in_flight.iter().any(|f| f.0 == first_seq) {
        // A retry of a batch still being published: its answer is not known yet. Retriable;
        // once the first copy is stored, the next retry is answered as a duplicate.
        return Check::Reject(ResponseError::RequestTimedOut);
    }
    let last = state.in_flight.back().map(|f| f.1).or(state.recent.back().map(|a| a.last_seq));
    match last {
        Some(last) if first_seq != last.wrapping_add(1) => {
            Check::Reject(ResponseError::OutOfOrderSequenceNumber)
        }
        _ => Check::Append,
    }
}

/// Whether the table may take one more entry, after forgetting idle ones when it is full.
fn make_room(table: &mut HashMap<Key, State>, now: Instant) -> bool {
    if table.len() >= MAX_ENTRIES {
        table.retain(|_, s| now.duration_since(s.used) < IDLE_EXPIRY);
    }
    table.len() < MAX_ENTRIES
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
    fn pipelined_batches_follow_the_ones_in_flight() {
        let p = Producers::default();
        let Admit::Append(first) = p.admit(id(7, 0, 0, 0), 5) else { panic!() };
        let Admit::Append(second) = p.admit(id(7, 0, 0, 5), 5) else { panic!("follows the first") };
        assert!(matches!(
            p.admit(id(7, 0, 0, 20), 1),
            Admit::Reject(ResponseError::OutOfOrderSequenceNumber)
        ));
        assert!(
            matches!(p.admit(id(7, 0, 0, 5), 5), Admit::Reject(ResponseError::RequestTimedOut)),
            "a retry of a batch in flight waits for its answer"
        );
        first.record(100);
        second.record(105);
        assert!(matches!(p.admit(id(7, 0, 0, 5), 5), Admit::Duplicate(105)));
        // A batch whose publish failed is forgotten: its retry is appended.
        let Admit::Append(failed) = p.admit(id(7, 0, 0, 10), 2) else { panic!() };
        drop(failed);
        assert_eq!(p.check(id(7, 0, 0, 10)), Check::Append);
        assert_eq!(
            p.check(id(7, 0, 0, 12)),
            Check::Reject(ResponseError::OutOfOrderSequenceNumber)
        );
    }

    #[test]
    fn producer_ids_are_positive_and_differ() {
        let a = new_producer_id();
        let b = new_producer_id();
        assert!(a > 0 && b > 0);
        assert_ne!(a, b);
    }
}

//! The order in which one connection's Produce requests reach their partitions.
//!
//! A connection handles several requests at once (`connection`), but two Produce requests
//! for one partition must be published in the order the client sent them: an idempotent
//! producer numbers its batches, and any client expects its records in send order. So each
//! Produce request of a connection takes a [`Turn`] when it is read. Its handler does what
//! it can at once (checks, decompression), then [`Turn::wait`]s until every earlier Produce
//! request of the connection has passed, queues its records on the partitions' publish
//! streams (which keep that order), [`Turn::pass`]es, and only then waits for SeaweedFS's
//! acknowledgements, alongside the later requests.
//!
//! A turn that is dropped (its request failed early or was cancelled) passes; passing early
//! never lets a later turn overtake an earlier one still waiting.
//!
//! Owns: the turns of one connection. Does not own what happens inside a turn (`api::produce`,
//! `routing`).

use parking_lot::Mutex;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

/// How long a request waits for its turn before it is answered REQUEST_TIMED_OUT (nothing of
/// it published, so a retry is safe). Every earlier request passes within its own deadlines:
/// its topic lookups, its memory share, an idempotent batch's wait for its (producer,
/// partition) turn and the read-back of an unsettled partition (`producers`), and opening its
/// partitions' streams each take at most the upstream timeout, and one whose partitions are
/// written by another kelp holds its turn until the writer answered, which is bounded by two
/// forwards.
pub fn wait_limit(ctx: &crate::ctx::Ctx) -> Duration {
    let upstream = ctx.config.upstream_timeout();
    (ctx.peers.request_timeout() + upstream * 5) * 2
}

/// One connection's turns; hands them out in request order.
#[derive(Default)]
pub struct ProduceOrder {
    shared: Arc<Shared>,
    issued: u64,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    moved: Notify,
}

#[derive(Default)]
struct State {
    /// The oldest turn that has not passed.
    current: u64,
    /// Later turns that passed before `current` did (at most the requests in flight).
    passed_early: BTreeSet<u64>,
}

impl ProduceOrder {
    /// The turn of the next Produce request read on the connection.
    pub fn next(&mut self) -> Turn {
        let n = self.issued;
        self.issued += 1;
        Turn { n, shared: Arc::clone(&self.shared), passed: false }
    }
}

/// One Produce request's place in its connection's order.
pub struct Turn {
    n: u64,
    shared: Arc<Shared>,
    passed: bool,
}

impl Turn {
    /// Wait until every earlier turn has passed. Bounded by the earlier requests themselves:
    /// each passes when it has queued its records or failed, both within its own deadlines.
    pub async fn wait(&self) {
        loop {
            let moved = self.shared.moved.notified();
            tokio::pin!(moved);
            moved.as_mut().enable();
            if self.passed || self.shared.state.lock().current >= self.n {
                return;
            }
            moved.await;
        }
    }

    /// Let the next turn go (once every earlier one has passed too).
    pub fn pass(&mut self) {
        if std::mem::replace(&mut self.passed, true) {
            return;
        }
        let mut state = self.shared.state.lock();
        if state.current != self.n {
            state.passed_early.insert(self.n);
            return;
        }
        state.current += 1;
        loop {
            let next = state.current;
            if !state.passed_early.remove(&next) {
                break;
            }
            state.current += 1;
        }
        drop(state);
        self.shared.moved.notify_waiters();
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.pass();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn goes(turn: &Turn) -> bool {
        tokio::time::timeout(Duration::from_millis(20), turn.wait()).await.is_ok()
    }

    #[tokio::test]
    async fn a_turn_goes_only_after_every_earlier_one_passed() {
        let mut order = ProduceOrder::default();
        let (mut a, b, mut c) = (order.next(), order.next(), order.next());
        assert!(goes(&a).await, "the first turn never waits");
        assert!(!goes(&c).await);
        // `b` fails early: dropping it passes it, but `c` still waits for `a`.
        drop(b);
        assert!(!goes(&c).await, "a turn dropped early does not let later ones overtake");
        a.pass();
        assert!(goes(&c).await);
        c.pass();
        let d = order.next();
        assert!(goes(&d).await);
    }

    #[tokio::test]
    async fn a_waiting_turn_wakes_when_its_predecessor_passes() {
        let mut order = ProduceOrder::default();
        let mut a = order.next();
        let b = order.next();
        let waiter = tokio::spawn(async move {
            b.wait().await;
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        a.pass();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .expect("no panic");
    }
}

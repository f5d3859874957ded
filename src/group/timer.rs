//! The coordinator's clock: one task that, every `Settings::tick`, applies the deadlines of
//! every live group (sessions, the end of a join phase, members that never sent SyncGroup),
//! answers the requests those deadlines release and drops idle Empty groups from memory; on
//! shutdown it releases every parked request.
//!
//! Owns: that loop. Does not own: what a deadline does (`state`, `Group::tick`) or storing
//! what a deadline completes (`generations`).

use super::{Coordinator, now};
use crate::shutdown::CancellationToken;

impl Coordinator {
    /// Runs until `cancel`; then drops every parked request (its client gets
    /// COORDINATOR_NOT_AVAILABLE and looks for the coordinator again).
    pub(super) async fn run_timer(&self, cancel: CancellationToken) {
        let mut interval = tokio::time::interval(self.inner.settings.tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = interval.tick() => {}
            }
            let now = now();
            let mut persist = Vec::new();
            {
                let mut groups = self.inner.groups.lock();
                for (id, entry) in groups.iter_mut() {
                    entry.group.tick(now);
                    let effects = entry.group.take_effects();
                    if !effects.is_empty() {
                        entry.touched = std::time::Instant::now();
                        persist.extend(entry.deliver(effects).into_iter().map(|s| (id.clone(), s)));
                    }
                }
                groups.retain(|_, entry| !entry.is_idle());
            }
            for (id, snapshot) in persist {
                self.persist_in_background(id, snapshot);
            }
        }
        let mut groups = self.inner.groups.lock();
        for entry in groups.values_mut() {
            entry.joins.clear();
            entry.syncs.clear();
        }
    }
}

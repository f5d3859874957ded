//! Which kelp runs which consumer group, when several kelps front one SeaweedFS: the
//! coordinator's side of group leases (`lease`): routing a group's requests, the "is this kelp
//! the owner right now" check, and dropping the state of a group whose lease ended.
//!
//! Owns: the first kelp asked about a group nobody owns becomes its owner; a group whose
//! lease ended is forgotten (its parked requests answered COORDINATOR_NOT_AVAILABLE); an idle
//! group's lease is released only when nothing is going on in it. Does not own: the leases
//! themselves and their task (`lease`), the group state it drops (`group`), or forwarding
//! (`peer`).

use kafka_protocol::ResponseError;
use tracing::debug;

use super::state::GroupState;
use super::{Coordinator, group_code, now};
use crate::lease::{self, Holder};
use crate::shutdown::CancellationToken;

pub use crate::lease::Route;

/// Group leases: one lock per group, `<root>/groups/<group>#owner`.
pub(super) const KIND: lease::Kind =
    lease::Kind { what: "group", lock_name: crate::seaweed::layout::group_owner_lock };

// === impl Coordinator: ownership ===

impl Coordinator {
    /// Whether groups are shared with other kelps through leases (a peer listener is set).
    pub fn is_shared(&self) -> bool {
        self.inner.leases.is_some()
    }

    /// Where `group_id`'s requests are answered. A group nobody owns becomes this kelp's
    /// (whatever was in memory about it is dropped: the filer has the truth). A kelp without
    /// leases answers `Local` at once. `Err` is a retriable code for the whole request.
    pub async fn route(&self, group_id: &str) -> Result<Route, ResponseError> {
        let Some(leases) = &self.inner.leases else {
            return Ok(Route::Local);
        };
        if self.inner.stopping.is_cancelled() {
            // Leases are being released; taking one now would outlive this process.
            return Err(ResponseError::CoordinatorNotAvailable);
        }
        match leases.route(group_id, now).await {
            Ok(None) => Err(ResponseError::CoordinatorNotAvailable),
            Ok(Some((route, fresh))) => {
                if fresh {
                    if self.inner.stopping.is_cancelled() {
                        // Granted while the lease task was releasing everything: let it go too.
                        if let Some(token) = leases.give_up(group_id) {
                            let _ = leases.release(group_id, &token).await;
                        }
                        return Err(ResponseError::CoordinatorNotAvailable);
                    }
                    self.inner.groups.lock().remove(group_id);
                }
                Ok(route)
            }
            Err(e) => {
                debug!(group = group_id, error = %e, "finding the group's owner failed");
                Err(group_code(&e))
            }
        }
    }

    /// Whether `group_id` can be answered as a group that does not exist without taking its
    /// lease: no kelp owns it and nothing of it is stored. A lookup (DescribeGroups,
    /// DeleteGroups, OffsetDelete) of a made-up id must not make this kelp its owner; a
    /// group that is stored or owned is routed as usual. Always `false` for a kelp without
    /// leases (its handlers answer every group). `Err` is a retriable code.
    pub async fn is_unknown(&self, group_id: &str) -> Result<bool, ResponseError> {
        let Some(leases) = &self.inner.leases else {
            return Ok(false);
        };
        let free = leases.is_free(group_id, now()).await.map_err(|e| group_code(&e))?;
        if !free || self.inner.groups.lock().contains_key(group_id) {
            return Ok(false);
        }
        let dir = crate::seaweed::layout::group_path(&self.inner.root, group_id);
        let stored = self.inner.seaweed.filer_list(&dir).await.map_err(|e| group_code(&e))?;
        Ok(stored.is_empty())
    }

    /// The owner another kelp named could not be reached or said it is not the owner: look
    /// again on the next request.
    pub fn forget_owner(&self, group_id: &str) {
        if let Some(leases) = &self.inner.leases {
            leases.forget_remote(group_id);
        }
    }

    /// Whether this kelp may run `group_id` now.
    pub(super) fn owns(&self, group_id: &str) -> bool {
        self.inner.leases.as_ref().is_none_or(|l| l.owns(group_id, now()))
    }

    /// Forget a group this kelp no longer owns; its parked requests are answered
    /// COORDINATOR_NOT_AVAILABLE (their waiters are dropped) and its members rejoin at the
    /// new owner.
    fn drop_group(&self, group_id: &str) {
        self.inner.groups.lock().remove(group_id);
    }

    /// Keep this kelp's group leases until `cancel` (`lease::run`), which then releases them.
    pub(super) async fn run_leases(&self, cancel: CancellationToken) {
        let Some(leases) = self.inner.leases.clone() else { return };
        let tick = self.inner.settings.tick;
        lease::run(leases, self.clone(), tick, cancel, self.inner.tracker.clone()).await;
    }
}

impl Holder for Coordinator {
    fn ended(&self, group_id: &str) {
        self.drop_group(group_id);
    }

    /// Release a group's lease only when nothing is going on in it (no member, nothing
    /// parked, the last generation stored): another kelp may then take it without waiting.
    fn release_if_quiet(
        &self,
        group: &str,
        give_up: &dyn Fn() -> Option<String>,
    ) -> Option<String> {
        let mut groups = self.inner.groups.lock();
        let quiet = match groups.get(group) {
            None => true,
            Some(e) => {
                matches!(e.group.state(), GroupState::Empty | GroupState::Dead)
                    && e.joins.is_empty()
                    && e.syncs.is_empty()
                    && e.written.try_lock().is_ok_and(|w| *w == e.group.generation())
            }
        };
        if !quiet {
            return None;
        }
        groups.remove(group);
        give_up()
    }

    async fn quiesce(&self) {}
}

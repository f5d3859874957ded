//! Which kelp runs which consumer group, when several kelps front one SeaweedFS: the leases
//! this kelp holds in the filer's lock manager and what it last learned about groups other
//! kelps own.
//!
//! Owns: taking a group's lease (the first kelp asked about a group nobody owns becomes its
//! owner), renewing and releasing leases, the "is this kelp the owner right now" check, a
//! cache of other owners' peer addresses ([`Leases`]), and the coordinator's side of
//! ownership: routing a group's requests, the lease task, and dropping the state of a group
//! whose lease ended. Does not own: the timing rules (`lease`, pure), the group state it drops
//! (`group`), or forwarding (`peer`).
//!
//! Locking: two non-async `Mutex`es (held leases, remote owners), each held only for map
//! operations, never across `.await`. Taking a lease is serialised by one async mutex, so two
//! requests for a new group on this kelp never race each other for the same lock.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use kafka_protocol::ResponseError;
use tracing::{debug, info, warn};

use super::lease::{Decision, Held, Timing, decide};
use super::state::GroupState;
use super::{Coordinator, group_code, now};
use crate::error::Error;
use crate::seaweed::{LockAnswer, Seaweed, layout};
use crate::shutdown::CancellationToken;

/// Where a group's requests are answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// This kelp owns the group (or runs every group itself).
    Local,
    /// The owner's peer address.
    Remote(String),
}

// === impl Leases ===

/// The leases of one kelp.
pub struct Leases {
    seaweed: Seaweed,
    root: String,
    /// This kelp's owner string (`lease::owner_id`).
    me: String,
    timing: Timing,
    held: Mutex<HashMap<String, Held>>,
    /// Group → (owner's peer address, trusted until). A forward that fails or is answered
    /// NOT_COORDINATOR forgets the entry, so the next request looks again.
    remote: Mutex<HashMap<String, (String, Instant)>>,
    acquiring: tokio::sync::Mutex<()>,
}

impl Leases {
    pub fn new(seaweed: Seaweed, root: String, me: String, lease: Duration) -> Leases {
        Leases {
            seaweed,
            root,
            me,
            timing: Timing::new(lease),
            held: Mutex::new(HashMap::new()),
            remote: Mutex::new(HashMap::new()),
            acquiring: tokio::sync::Mutex::new(()),
        }
    }

    /// Whether this kelp may act as `group`'s owner at `now` (and note that it was used).
    pub fn owns(&self, group: &str, now: Instant) -> bool {
        let mut held = self.held.lock();
        match held.get_mut(group) {
            Some(h) if h.is_valid(now) => {
                h.touch(now);
                true
            }
            _ => false,
        }
    }

    /// Where `group`'s requests go, taking its lease when nobody holds it. The flag is true
    /// when the lease was just taken: whatever this kelp remembered of the group is stale.
    pub async fn route(
        &self,
        group: &str,
        now: impl Fn() -> Instant,
    ) -> Result<(Route, bool), Error> {
        if let Some(r) = self.known(group, now()) {
            return Ok((r, false));
        }
        let _one_at_a_time = self.acquiring.lock().await;
        if let Some(r) = self.known(group, now()) {
            return Ok((r, false));
        }
        let sent_at = now();
        let answer = self.lock(group, "").await?;
        Ok(match decide(answer, &self.me) {
            Decision::Mine(token) => {
                info!(group, "took ownership of the group");
                let now = now();
                self.held
                    .lock()
                    .insert(group.to_string(), Held::granted(token, sent_at, now, &self.timing));
                (Route::Local, true)
            }
            Decision::Elsewhere(peer) => {
                debug!(group, owner = %peer, "group owned by another kelp");
                let until = now() + self.timing.lease();
                self.remote.lock().insert(group.to_string(), (peer.clone(), until));
                (Route::Remote(peer), false)
            }
            Decision::Unavailable => {
                return Err(Error::Kafka(ResponseError::CoordinatorNotAvailable));
            }
        })
    }

    /// What this kelp knows without asking the filer.
    fn known(&self, group: &str, now: Instant) -> Option<Route> {
        if self.owns(group, now) {
            return Some(Route::Local);
        }
        let mut remote = self.remote.lock();
        match remote.get(group) {
            Some((peer, until)) if now < *until => Some(Route::Remote(peer.clone())),
            Some(_) => {
                remote.remove(group);
                None
            }
            None => None,
        }
    }

    /// Forget who owns `group` elsewhere (its owner did not answer, or said it is not).
    pub fn forget_remote(&self, group: &str) {
        self.remote.lock().remove(group);
    }

    /// Leases due for renewal at `now`, marked as being renewed: (group, token).
    pub fn start_renewals(&self, now: Instant) -> Vec<(String, String)> {
        let mut held = self.held.lock();
        held.iter_mut()
            .filter_map(|(g, h)| h.start_renewal(now).map(|token| (g.clone(), token)))
            .collect()
    }

    /// Renew `group`'s lease (a call to the filer); the caller reports the outcome.
    pub async fn renew(&self, group: &str, token: &str) -> Result<LockAnswer, Error> {
        self.lock(group, token).await
    }

    /// The renewal sent at `sent_at` was granted. `false` when the lease is no longer held
    /// here (given up meanwhile): the caller must release the lock it just renewed.
    pub fn renewed(&self, group: &str, token: String, sent_at: Instant) -> bool {
        match self.held.lock().get_mut(group) {
            Some(h) if h.is_renewing() => {
                h.renewed(token, sent_at, &self.timing);
                true
            }
            _ => false,
        }
    }

    /// The renewal got no answer; it is retried until the lease's stop time.
    pub fn renewal_failed(&self, group: &str, now: Instant) {
        if let Some(h) = self.held.lock().get_mut(group) {
            h.renewal_failed(now, &self.timing);
        }
    }

    /// Stop holding `group`'s lease; its token, to release it with.
    pub fn give_up(&self, group: &str) -> Option<String> {
        self.held.lock().remove(group).map(|h| h.token().to_string())
    }

    /// Leases past their stop time (renewals failed for too long), no longer held.
    pub fn take_expired(&self, now: Instant) -> Vec<String> {
        let mut held = self.held.lock();
        let expired: Vec<String> =
            held.iter().filter(|(_, h)| !h.is_valid(now)).map(|(g, _)| g.clone()).collect();
        for g in &expired {
            held.remove(g);
        }
        expired
    }

    /// Groups no request used for a whole lease: candidates for release.
    pub fn idle(&self, now: Instant) -> Vec<String> {
        let lease = self.timing.lease();
        let held = self.held.lock();
        held.iter()
            .filter(|(_, h)| !h.is_renewing() && h.idle_for(now) >= lease)
            .map(|(g, _)| g.clone())
            .collect()
    }

    /// Every lease, no longer held: (group, token). For shutdown.
    pub fn take_all(&self) -> Vec<(String, String)> {
        self.held.lock().drain().map(|(g, h)| (g, h.token().to_string())).collect()
    }

    /// Release `group`'s lock held with `token`, so another kelp can take it at once.
    pub async fn release(&self, group: &str, token: &str) -> Result<(), Error> {
        self.seaweed.filer_unlock(&layout::group_owner_lock(&self.root, group), token).await
    }

    /// Pretend a grant sent at `sent_at` succeeded (tests without a filer).
    #[cfg(test)]
    pub(crate) fn hold(&self, group: &str, token: &str, sent_at: Instant) {
        self.held.lock().insert(
            group.to_string(),
            Held::granted(token.to_string(), sent_at, sent_at, &self.timing),
        );
    }

    async fn lock(&self, group: &str, token: &str) -> Result<LockAnswer, Error> {
        let name = layout::group_owner_lock(&self.root, group);
        self.seaweed.filer_lock(&name, self.timing.lock_seconds, token, &self.me).await
    }
}

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
            Ok((route, fresh)) => {
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

    /// Renew leases when due, end those whose renewals failed until their stop time, release
    /// idle ones; on cancel, release them all.
    pub(super) async fn run_leases(&self, cancel: CancellationToken) {
        let Some(leases) = self.inner.leases.clone() else { return };
        let mut interval = tokio::time::interval(self.inner.settings.tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = interval.tick() => {}
            }
            for group in leases.take_expired(now()) {
                warn!(group = %group, "group lease could not be renewed in time; no longer coordinating the group");
                self.drop_group(&group);
            }
            self.release_idle(&leases);
            for (group, token) in leases.start_renewals(now()) {
                let (c, leases) = (self.clone(), Arc::clone(&leases));
                self.inner.tracker.spawn(async move { c.renew(&leases, group, token).await });
            }
        }
        let all = leases.take_all();
        for (group, _) in &all {
            self.drop_group(group);
        }
        let released = futures::future::join_all(
            all.iter().map(|(group, token)| leases.release(group, token)),
        )
        .await;
        for ((group, _), r) in all.iter().zip(released) {
            match r {
                Ok(()) => debug!(group = %group, "group lease released"),
                Err(e) => {
                    warn!(group = %group, error = %e, "releasing the group lease failed; it expires on its own")
                }
            }
        }
    }

    async fn renew(&self, leases: &Leases, group: String, token: String) {
        let sent_at = now();
        match leases.renew(&group, &token).await {
            Ok(LockAnswer::Granted { token }) => {
                if !leases.renewed(&group, token.clone(), sent_at) {
                    // Given up meanwhile (shutdown, or its stop time passed): let it go.
                    let _ = leases.release(&group, &token).await;
                }
            }
            Ok(other) => {
                info!(group = %group, answer = ?other, "group lease lost; no longer coordinating the group");
                leases.give_up(&group);
                self.drop_group(&group);
            }
            Err(e) => {
                debug!(group = %group, error = %e, "renewing the group lease failed; retrying");
                leases.renewal_failed(&group, now());
            }
        }
    }

    /// Release leases of groups no request used for a whole lease and with nothing going on
    /// (no member, nothing parked, the last generation stored): another kelp may then take
    /// them without waiting.
    fn release_idle(&self, leases: &Arc<Leases>) {
        for group in leases.idle(now()) {
            let token = {
                let mut groups = self.inner.groups.lock();
                let quiet = match groups.get(&group) {
                    None => true,
                    Some(e) => {
                        matches!(e.group.state(), GroupState::Empty | GroupState::Dead)
                            && e.joins.is_empty()
                            && e.syncs.is_empty()
                            && e.written.try_lock().is_ok_and(|w| *w == e.group.generation())
                    }
                };
                if !quiet {
                    continue;
                }
                groups.remove(&group);
                leases.give_up(&group)
            };
            if let Some(token) = token {
                let leases = Arc::clone(leases);
                self.inner.tracker.spawn(async move {
                    match leases.release(&group, &token).await {
                        Ok(()) => debug!(group = %group, "idle group lease released"),
                        Err(e) => debug!(group = %group, error = %e, "releasing an idle group lease failed; it expires on its own"),
                    }
                });
            }
        }
    }
}

//! The membership requests of the classic group protocol: JoinGroup, SyncGroup, Heartbeat
//! and LeaveGroup. A JoinGroup or SyncGroup that must wait for the rest of the group is parked
//! on a oneshot channel, bounded by the rebalance timeout, and answered from the group's
//! effects.
//!
//! Owns: loading the group, running the transition, parking and the waits. Does not own: the
//! rules (`state`), storing the generation a SyncGroup completes (`generations`), or the
//! deadlines that end a wait early (`timer`).

use std::time::Duration;

use kafka_protocol::ResponseError;
use tokio::sync::oneshot;
use tracing::{debug, warn};

use super::state::{JoinOutcome, SyncOutcome};
use super::{Coordinator, JoinReply, JoinRequest, SyncReply, SyncRequest, group_code, now};

impl Coordinator {
    /// JoinGroup: parks until the join phase completes (bounded by the rebalance timeout).
    pub async fn join(&self, group_id: &str, req: JoinRequest) -> JoinReply {
        let member_id = req.member_id.clone();
        if let Err(e) = self.load(group_id, true).await {
            debug!(group = group_id, error = %e, "loading group failed");
            return JoinReply::error(&member_id, group_code(&e));
        }
        let own_timeout = req.rebalance_timeout;
        let parked = self.with_group(group_id, |entry| {
            match self.not_stopping(|| entry.group.join(req, now())) {
                None => Err(Box::new(JoinReply::error(
                    &member_id,
                    ResponseError::CoordinatorNotAvailable,
                ))),
                Some(JoinOutcome::Reply(r)) => Err(Box::new(r)),
                Some(JoinOutcome::Wait { member_id }) => {
                    // The join phase lasts up to the largest rebalance timeout in the group.
                    let wait = self.parked_wait(entry.group.rebalance_timeout().max(own_timeout));
                    let (tx, rx) = oneshot::channel();
                    if let Some(old) = entry.joins.insert(member_id.clone(), tx) {
                        // The same member sent JoinGroup again; the older request is abandoned.
                        let _ = old
                            .send(JoinReply::error(&member_id, ResponseError::RebalanceInProgress));
                    }
                    Ok((member_id, rx, wait))
                }
            }
        });
        let (parked_id, rx, wait) = match parked {
            None => return JoinReply::error(&member_id, ResponseError::CoordinatorNotAvailable),
            Some(Err(reply)) => return *reply,
            Some(Ok(p)) => p,
        };
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(reply)) => reply,
            // The group was dropped (deleted, or kelp is stopping).
            Ok(Err(_)) => JoinReply::error(&parked_id, ResponseError::CoordinatorNotAvailable),
            Err(_) => {
                warn!(group = group_id, member = %parked_id, "join wait outlived the rebalance timeout");
                JoinReply::error(&parked_id, ResponseError::RebalanceInProgress)
            }
        }
    }

    /// SyncGroup: the leader's assignment is persisted before anyone gets theirs; followers
    /// park until then.
    pub async fn sync(&self, group_id: &str, req: SyncRequest) -> SyncReply {
        match self.load(group_id, false).await {
            Ok(true) => {}
            Ok(false) => return SyncReply::error(ResponseError::UnknownMemberId),
            Err(e) => return SyncReply::error(group_code(&e)),
        }
        let member_id = req.member_id.clone();
        let parked = self.with_group(group_id, |entry| {
            let wait = entry.group.rebalance_timeout();
            match self.not_stopping(|| entry.group.sync(req, now())) {
                None => Err(SyncReply::error(ResponseError::CoordinatorNotAvailable)),
                Some(SyncOutcome::Reply(r)) => Err(r),
                Some(outcome) => {
                    let (tx, rx) = oneshot::channel();
                    if let Some(old) = entry.syncs.insert(member_id.clone(), tx) {
                        let _ = old.send(SyncReply::error(ResponseError::RebalanceInProgress));
                    }
                    let persist = match outcome {
                        SyncOutcome::Persist(s) => Some(s),
                        _ => None,
                    };
                    Ok((rx, persist, wait))
                }
            }
        });
        let (rx, persist, wait) = match parked {
            None => return SyncReply::error(ResponseError::CoordinatorNotAvailable),
            Some(Err(reply)) => return reply,
            Some(Ok(p)) => p,
        };
        if let Some(snapshot) = persist {
            self.complete_sync_in_background(group_id, snapshot);
        }
        match tokio::time::timeout(self.parked_wait(wait), rx).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => SyncReply::error(ResponseError::CoordinatorNotAvailable),
            Err(_) => {
                warn!(group = group_id, member = %member_id, "sync wait outlived the rebalance timeout");
                SyncReply::error(ResponseError::RebalanceInProgress)
            }
        }
    }

    /// Heartbeat.
    pub async fn heartbeat(
        &self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), ResponseError> {
        match self.load(group_id, false).await {
            Ok(true) => {}
            Ok(false) => return Err(ResponseError::UnknownMemberId),
            Err(e) => return Err(group_code(&e)),
        }
        self.with_group(group_id, |entry| {
            entry.group.heartbeat(member_id, instance_id, generation, now())
        })
        .unwrap_or(Err(ResponseError::CoordinatorNotAvailable))
    }

    /// LeaveGroup for (member id, instance id) pairs; `Err` is a group-level error.
    pub async fn leave(
        &self,
        group_id: &str,
        leaving: &[(String, Option<String>)],
    ) -> Result<Vec<Result<(), ResponseError>>, ResponseError> {
        match self.load(group_id, false).await {
            Ok(true) => {}
            Ok(false) => return Ok(vec![Err(ResponseError::UnknownMemberId); leaving.len()]),
            Err(e) => return Err(group_code(&e)),
        }
        self.with_group(group_id, |entry| entry.group.leave(leaving, now()))
            .unwrap_or(Err(ResponseError::CoordinatorNotAvailable))
    }

    /// Run a transition that may park a request, unless kelp is stopping. Called under the
    /// lock: the timer clears parked requests under it after the stop signal, so a request
    /// either sees the signal here or is parked in time to be cleared.
    fn not_stopping<T>(&self, f: impl FnOnce() -> T) -> Option<T> {
        (!self.inner.stopping.is_cancelled()).then(f)
    }

    /// How long a parked request waits: the group's own deadline, plus one tick for the timer
    /// to act on it, plus the slack.
    fn parked_wait(&self, rebalance_timeout: Duration) -> Duration {
        rebalance_timeout
            .saturating_add(self.inner.settings.tick)
            .saturating_add(self.inner.settings.wait_slack)
    }
}

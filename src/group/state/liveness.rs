//! A member's signs of life and its departure: Heartbeat (which also tells a member to rejoin),
//! LeaveGroup (batched from v3, by member id or instance id), and the member check of an
//! OffsetCommit (a commit from a member counts as a heartbeat).
//!
//! Owns: those transitions. Does not own: removing a member and rebalancing (`rebalance`) or
//! a silent member's expiry (`expiry`).

use std::time::Instant;

use kafka_protocol::ResponseError;

use super::{Group, GroupState, UNKNOWN_MEMBER_ID};

// === impl Group: Heartbeat, LeaveGroup, OffsetCommit ===

impl Group {
    /// A Heartbeat arrives. REBALANCE_IN_PROGRESS tells the member to rejoin.
    pub fn heartbeat(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now: Instant,
    ) -> Result<(), ResponseError> {
        if self.state == GroupState::Dead {
            return Err(ResponseError::CoordinatorNotAvailable);
        }
        self.validate_member(member_id, instance_id)?;
        if generation != self.generation {
            return Err(ResponseError::IllegalGeneration);
        }
        let state = self.state;
        let m = self.members.get_mut(member_id).expect("validated above");
        match state {
            GroupState::Empty | GroupState::Dead => Err(ResponseError::UnknownMemberId),
            // Members may heartbeat between their JoinGroup and SyncGroup answers.
            GroupState::CompletingRebalance | GroupState::Stable => {
                m.touch(now);
                Ok(())
            }
            GroupState::PreparingRebalance => {
                m.touch(now);
                Err(ResponseError::RebalanceInProgress)
            }
        }
    }

    /// A LeaveGroup for `leaving` = (member id, instance id) pairs (v3+ may batch them; an
    /// empty member id with an instance id removes that static member, as admin tools do).
    /// `Err` is a group-level error; otherwise one result per pair.
    pub fn leave(
        &mut self,
        leaving: &[(String, Option<String>)],
        now: Instant,
    ) -> Result<Vec<Result<(), ResponseError>>, ResponseError> {
        if self.state == GroupState::Dead {
            return Err(ResponseError::CoordinatorNotAvailable);
        }
        let mut results = Vec::with_capacity(leaving.len());
        for (member_id, instance_id) in leaving {
            let r = if member_id == UNKNOWN_MEMBER_ID {
                match instance_id.as_ref().and_then(|i| self.static_members.get(i)).cloned() {
                    Some(current) => {
                        self.remove_member_and_update_group(&current, now);
                        Ok(())
                    }
                    None => Err(ResponseError::UnknownMemberId),
                }
            } else if self.pending_members.remove(member_id).is_some() {
                self.try_complete_join(now);
                Ok(())
            } else {
                self.validate_member(member_id, instance_id.as_deref())
                    .map(|()| self.remove_member_and_update_group(member_id, now))
            };
            results.push(r);
        }
        Ok(results)
    }

    /// May this OffsetCommit go ahead? Generation -1 with no member is a standalone consumer
    /// (or admin tool) and may commit only while the group is Empty. A commit from a member
    /// also counts as a sign of life.
    pub fn validate_commit(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now: Instant,
    ) -> Result<(), ResponseError> {
        if self.state == GroupState::Dead {
            return Err(ResponseError::CoordinatorNotAvailable);
        }
        if generation < 0 && self.state == GroupState::Empty {
            return Ok(());
        }
        if generation >= 0 || member_id != UNKNOWN_MEMBER_ID || instance_id.is_some() {
            self.validate_member(member_id, instance_id)?;
            if generation != self.generation {
                return Err(ResponseError::IllegalGeneration);
            }
        } else if self.state != GroupState::Empty {
            return Err(ResponseError::UnknownMemberId);
        } else {
            return Ok(());
        }
        match self.state {
            GroupState::Empty => Ok(()),
            GroupState::Stable | GroupState::PreparingRebalance => {
                if let Some(m) = self.members.get_mut(member_id) {
                    m.touch(now);
                }
                Ok(())
            }
            // It has the new generation but not its assignment yet.
            GroupState::CompletingRebalance => Err(ResponseError::RebalanceInProgress),
            GroupState::Dead => Err(ResponseError::CoordinatorNotAvailable),
        }
    }
}

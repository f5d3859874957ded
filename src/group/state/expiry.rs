//! Deadlines, applied at an explicit `now`: KIP-394 pending members that never came back,
//! sessions without a heartbeat, the end of a join phase, and members that never sent
//! SyncGroup for their generation.
//!
//! Owns: when a member counts as gone and [`Group::tick`]. Does not own: the clock (the
//! coordinator's timer calls `tick`) or what removing a member does (`rebalance`).

use std::time::Instant;

use kafka_protocol::ResponseError;

use super::{Effect, Group, GroupState, JoinReply, Member, UNKNOWN_MEMBER_ID};

impl Member {
    /// Kafka's `hasSatisfiedHeartbeat`, inverted: a new member is bounded by
    /// [`NEW_MEMBER_JOIN_TIMEOUT`]; a known member with a parked request is alive; anyone else
    /// must have heartbeat within its session timeout.
    pub(super) fn expired(&self, now: Instant) -> bool {
        if self.is_new {
            now >= self.expires_at
        } else if self.awaiting_join || self.awaiting_sync {
            false
        } else {
            now >= self.expires_at
        }
    }
}

// === impl Group: deadlines ===

impl Group {
    /// Apply every deadline that has passed by `now`: pending members (KIP-394), sessions,
    /// the end of the join phase, members that never sent SyncGroup.
    pub fn tick(&mut self, now: Instant) {
        if self.state == GroupState::Dead {
            return;
        }
        let before = self.pending_members.len();
        self.pending_members.retain(|_, deadline| now < *deadline);
        if self.pending_members.len() != before {
            self.try_complete_join(now);
        }

        let expired: Vec<String> =
            self.members.values().filter(|m| m.expired(now)).map(|m| m.id.clone()).collect();
        for id in expired {
            self.remove_member_and_update_group(&id, now);
        }

        if self.state == GroupState::PreparingRebalance {
            if self.join_deadline.is_some_and(|d| now >= d) {
                self.complete_join(now);
            } else {
                self.try_complete_join(now);
            }
        }

        if matches!(self.state, GroupState::CompletingRebalance | GroupState::Stable)
            && self.sync_deadline.is_some_and(|d| now >= d)
        {
            self.sync_deadline = None;
            if !self.pending_sync.is_empty() {
                let late: Vec<String> = self.pending_sync.drain().collect();
                for id in late {
                    if self.members.get(&id).is_some_and(|m| m.awaiting_join) {
                        self.effects.push(Effect::Join {
                            member_id: id.clone(),
                            reply: JoinReply::error(
                                UNKNOWN_MEMBER_ID,
                                ResponseError::UnknownMemberId,
                            ),
                        });
                    }
                    self.remove(&id);
                }
                self.prepare_rebalance(now);
            }
        }
    }
}

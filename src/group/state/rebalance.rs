//! Rebalancing: opening a join phase (PreparingRebalance), completing it into a new
//! generation (CompletingRebalance) once everyone known has rejoined, and taking members out.
//!
//! Owns: those transitions and the leader's election among rejoined members. Does not own:
//! what starts a rebalance (`join`, `liveness`, `expiry`) or the assignment that follows
//! (`sync`).

use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::ResponseError;

use super::{Effect, Group, GroupState, JoinReply, SyncReply, UNKNOWN_MEMBER_ID};

// === impl Group: rebalancing ===

impl Group {
    pub(super) fn maybe_prepare_rebalance(&mut self, now: Instant) {
        if matches!(
            self.state,
            GroupState::Stable | GroupState::CompletingRebalance | GroupState::Empty
        ) {
            self.prepare_rebalance(now);
        }
    }

    pub(super) fn prepare_rebalance(&mut self, now: Instant) {
        if self.state == GroupState::CompletingRebalance {
            // Members parked in SyncGroup must rejoin.
            self.reset_and_propagate_assignment_error(ResponseError::RebalanceInProgress, now);
        }
        self.pending_sync.clear();
        self.sync_deadline = None;
        let timeout = self.rebalance_timeout();
        self.join_not_before = (self.state == GroupState::Empty
            && !self.initial_rebalance_delay.is_zero())
        .then(|| now + self.initial_rebalance_delay.min(timeout));
        self.join_deadline = Some(now + timeout);
        self.state = GroupState::PreparingRebalance;
        self.try_complete_join(now);
    }

    /// The largest rebalance timeout among members: how long the join phase may take.
    pub fn rebalance_timeout(&self) -> Duration {
        self.members.values().map(|m| m.rebalance_timeout).max().unwrap_or(Duration::ZERO)
    }

    fn all_members_joined(&self) -> bool {
        self.pending_members.is_empty() && self.members.values().all(|m| m.awaiting_join)
    }

    pub(super) fn try_complete_join(&mut self, now: Instant) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        if self.join_not_before.is_some_and(|t| now < t) {
            return;
        }
        if self.all_members_joined() {
            self.complete_join(now);
        }
    }

    /// End the join phase: drop dynamic members that did not rejoin, open the next
    /// generation and answer every parked JoinGroup.
    pub(super) fn complete_join(&mut self, now: Instant) {
        let gone: Vec<String> = self
            .members
            .values()
            .filter(|m| !m.awaiting_join && m.instance_id.is_none())
            .map(|m| m.id.clone())
            .collect();
        for id in gone {
            self.remove(&id);
        }
        if !self.elect_joined_leader() && !self.members.is_empty() {
            // Only static members that have not rejoined are left: wait for them (or for
            // their sessions to end) another rebalance timeout.
            self.join_deadline = Some(now + self.rebalance_timeout());
            return;
        }
        self.join_deadline = None;
        self.join_not_before = None;
        self.generation += 1;
        if self.members.is_empty() {
            self.protocol_name = None;
            self.leader = None;
            self.state = GroupState::Empty;
            self.effects.push(Effect::Persist(self.snapshot()));
            return;
        }
        self.protocol_name = Some(self.select_protocol());
        self.state = GroupState::CompletingRebalance;
        let leader = self.leader.clone().unwrap_or_default();
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let reply = self.join_reply(&id, id == leader);
            let m = self.members.get_mut(&id).expect("id taken from members");
            if m.awaiting_join {
                m.awaiting_join = false;
                self.effects.push(Effect::Join { member_id: id.clone(), reply });
            }
            m.is_new = false;
            m.touch(now);
            self.pending_sync.insert(id);
        }
        self.sync_deadline = Some(now + self.rebalance_timeout());
    }

    /// Make sure the leader is a member that rejoined; false when nobody rejoined.
    fn elect_joined_leader(&mut self) -> bool {
        let Some(leader) = self.leader.clone() else {
            return false;
        };
        if self.members.get(&leader).is_some_and(|m| m.awaiting_join) {
            return true;
        }
        match self.members.values().find(|m| m.awaiting_join) {
            Some(m) => {
                self.leader = Some(m.id.clone());
                true
            }
            None => false,
        }
    }

    /// Take a member out (no answers, no rebalance): the bookkeeping half of a removal.
    pub(super) fn remove(&mut self, id: &str) {
        if let Some(iid) = self.members.shift_remove(id).and_then(|m| m.instance_id)
            && self.static_members.get(&iid).map(String::as_str) == Some(id)
        {
            self.static_members.remove(&iid);
        }
        if self.leader.as_deref() == Some(id) {
            self.leader = self.members.keys().next().cloned();
        }
        self.pending_members.remove(id);
        self.pending_sync.remove(id);
    }

    /// A member leaves or expires: answer its parked requests, remove it and rebalance.
    pub(super) fn remove_member_and_update_group(&mut self, id: &str, now: Instant) {
        if let Some(m) = self.members.get(id) {
            if m.awaiting_join {
                self.effects.push(Effect::Join {
                    member_id: id.to_string(),
                    reply: JoinReply::error(UNKNOWN_MEMBER_ID, ResponseError::UnknownMemberId),
                });
            }
            if m.awaiting_sync {
                self.effects.push(Effect::Sync {
                    member_id: id.to_string(),
                    reply: SyncReply::error(ResponseError::UnknownMemberId),
                });
            }
        }
        self.remove(id);
        match self.state {
            GroupState::Dead | GroupState::Empty => {}
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.maybe_prepare_rebalance(now)
            }
            GroupState::PreparingRebalance => self.try_complete_join(now),
        }
    }

    pub(super) fn reset_and_propagate_assignment_error(
        &mut self,
        code: ResponseError,
        now: Instant,
    ) {
        self.proposed = None;
        for m in self.members.values_mut() {
            m.assignment = Bytes::new();
            if m.awaiting_sync {
                m.awaiting_sync = false;
                m.touch(now);
                self.effects
                    .push(Effect::Sync { member_id: m.id.clone(), reply: SyncReply::error(code) });
            }
        }
    }
}

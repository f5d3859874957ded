//! SyncGroup: the leader's assignment becomes a snapshot to persist; once it is stored, every
//! member parked in SyncGroup gets its part and the group is Stable.
//!
//! Owns: the SyncGroup request and reply types and those transitions. Does not own: storing
//! the snapshot (the coordinator's `generations`).

use std::collections::HashMap;
use std::time::Instant;

use bytes::Bytes;
use kafka_protocol::ResponseError;

use super::{Effect, Group, GroupState, Snapshot};

/// A SyncGroup request, stripped of wire details.
#[derive(Debug, Clone)]
pub struct SyncRequest {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub generation: i32,
    /// v5+: checked against the group's when present.
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    /// Only the leader's request carries assignments.
    pub assignments: Vec<(String, Bytes)>,
}

/// The answer to one SyncGroup.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncReply {
    pub error: Option<ResponseError>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncReply {
    pub fn error(code: ResponseError) -> SyncReply {
        SyncReply {
            error: Some(code),
            protocol_type: None,
            protocol_name: None,
            assignment: Bytes::new(),
        }
    }
}

/// What happens to a SyncGroup right after it arrives.
#[derive(Debug, Clone, PartialEq)]
pub enum SyncOutcome {
    /// Answer now.
    Reply(SyncReply),
    /// Park it until the leader's assignment is persisted ([`Effect::Sync`]).
    Wait,
    /// The leader's assignment: persist this snapshot, then call
    /// [`Group::assignment_persisted`]; the leader's own answer arrives as [`Effect::Sync`].
    Persist(Snapshot),
}

// === impl Group: SyncGroup ===

impl Group {
    /// A SyncGroup arrives.
    pub fn sync(&mut self, req: SyncRequest, now: Instant) -> SyncOutcome {
        if self.state == GroupState::Dead {
            return SyncOutcome::Reply(SyncReply::error(ResponseError::CoordinatorNotAvailable));
        }
        if let Err(code) = self.validate_member(&req.member_id, req.group_instance_id.as_deref()) {
            return SyncOutcome::Reply(SyncReply::error(code));
        }
        if req.generation != self.generation {
            return SyncOutcome::Reply(SyncReply::error(ResponseError::IllegalGeneration));
        }
        let type_differs =
            req.protocol_type.as_ref().is_some_and(|t| self.protocol_type.as_ref() != Some(t));
        let name_differs =
            req.protocol_name.as_ref().is_some_and(|n| self.protocol_name.as_ref() != Some(n));
        if type_differs || name_differs {
            return SyncOutcome::Reply(SyncReply::error(ResponseError::InconsistentGroupProtocol));
        }
        match self.state {
            GroupState::Empty | GroupState::Dead => {
                SyncOutcome::Reply(SyncReply::error(ResponseError::UnknownMemberId))
            }
            GroupState::PreparingRebalance => {
                SyncOutcome::Reply(SyncReply::error(ResponseError::RebalanceInProgress))
            }
            GroupState::CompletingRebalance => {
                self.members[&req.member_id].awaiting_sync = true;
                self.pending_sync.remove(&req.member_id);
                if self.leader.as_deref() != Some(req.member_id.as_str()) || self.proposed.is_some()
                {
                    return SyncOutcome::Wait;
                }
                // Members the leader left out get an empty assignment; unknown ids are ignored.
                let mut assignment: HashMap<String, Bytes> = req
                    .assignments
                    .into_iter()
                    .filter(|(id, _)| self.members.contains_key(id))
                    .collect();
                for id in self.members.keys() {
                    assignment.entry(id.clone()).or_default();
                }
                let snapshot = self.snapshot_with(Some(&assignment));
                self.proposed = Some((self.generation, assignment));
                SyncOutcome::Persist(snapshot)
            }
            GroupState::Stable => {
                self.pending_sync.remove(&req.member_id);
                let m = self.members.get_mut(&req.member_id).expect("validated above");
                m.touch(now);
                SyncOutcome::Reply(SyncReply {
                    error: None,
                    protocol_type: self.protocol_type.clone(),
                    protocol_name: self.protocol_name.clone(),
                    assignment: m.assignment.clone(),
                })
            }
        }
    }

    /// The leader's assignment for `generation` was persisted (`Ok`) or could not be
    /// (`Err(code)`, answered to every parked SyncGroup before a new rebalance). Ignored when
    /// the group has moved on meanwhile.
    pub fn assignment_persisted(
        &mut self,
        generation: i32,
        result: Result<(), ResponseError>,
        now: Instant,
    ) {
        let proposed = match self.proposed.take() {
            Some((g, a)) if g == generation => a,
            other => {
                self.proposed = other;
                return;
            }
        };
        if self.state != GroupState::CompletingRebalance || self.generation != generation {
            return;
        }
        if let Err(code) = result {
            self.reset_and_propagate_assignment_error(code, now);
            self.maybe_prepare_rebalance(now);
            return;
        }
        for m in self.members.values_mut() {
            m.assignment = proposed.get(&m.id).cloned().unwrap_or_default();
            if m.awaiting_sync {
                m.awaiting_sync = false;
                m.touch(now);
                self.effects.push(Effect::Sync {
                    member_id: m.id.clone(),
                    reply: SyncReply {
                        error: None,
                        protocol_type: self.protocol_type.clone(),
                        protocol_name: self.protocol_name.clone(),
                        assignment: m.assignment.clone(),
                    },
                });
            }
        }
        self.state = GroupState::Stable;
        if self.pending_sync.is_empty() {
            self.sync_deadline = None;
        }
    }
}

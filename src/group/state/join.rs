//! JoinGroup: new members (KIP-394's MEMBER_ID_REQUIRED first, from v4), known members
//! rejoining, static members coming back under a new id (KIP-345), and the choice of the
//! group's protocol.
//!
//! Owns: the JoinGroup request and reply types and the transitions a JoinGroup causes up to
//! parking it. Does not own: when the join phase ends (`rebalance`, `expiry`).

use std::time::{Duration, Instant};

use bytes::Bytes;
use indexmap::IndexMap;
use kafka_protocol::ResponseError;

use super::{
    Effect, Group, GroupState, Member, NEW_MEMBER_JOIN_TIMEOUT, NO_GENERATION, Protocol, SyncReply,
    UNKNOWN_MEMBER_ID,
};

/// A JoinGroup request, stripped of wire details.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    /// Empty for a member joining for the first time.
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocol_type: String,
    /// In the member's order of preference.
    pub protocols: Vec<Protocol>,
    /// KIP-394 (JoinGroup v4+): a member without an id gets MEMBER_ID_REQUIRED first.
    pub require_known_member_id: bool,
    /// JoinGroup v9+: a rejoining static leader may be told to skip the assignment.
    pub supports_skip_assignment: bool,
    /// Most members the group may have (Kafka's `group.max.size`).
    pub max_size: usize,
}

/// One member as the leader sees it in its JoinGroup response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub metadata: Bytes,
}

/// The answer to one JoinGroup.
#[derive(Debug, Clone, PartialEq)]
pub struct JoinReply {
    pub error: Option<ResponseError>,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub skip_assignment: bool,
    pub member_id: String,
    /// Only for the leader: every member with its metadata for the chosen protocol.
    pub members: Vec<JoinedMember>,
}

impl JoinReply {
    /// A reply carrying only an error (and, for MEMBER_ID_REQUIRED, the id to rejoin with).
    pub fn error(member_id: &str, code: ResponseError) -> JoinReply {
        JoinReply {
            error: Some(code),
            generation: NO_GENERATION,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            skip_assignment: false,
            member_id: member_id.to_string(),
            members: Vec::new(),
        }
    }
}

/// What happens to a JoinGroup right after it arrives.
#[derive(Debug, Clone, PartialEq)]
pub enum JoinOutcome {
    /// Answer now.
    Reply(JoinReply),
    /// Park it: the answer comes later as [`Effect::Join`] for `member_id` (which, for a new
    /// member, is the id just minted). It may already be among the effects of this call.
    Wait { member_id: String },
}

// === impl Group: JoinGroup ===

impl Group {
    /// A JoinGroup arrives.
    pub fn join(&mut self, req: JoinRequest, now: Instant) -> JoinOutcome {
        if self.state == GroupState::Dead {
            return JoinOutcome::Reply(JoinReply::error(
                &req.member_id,
                ResponseError::CoordinatorNotAvailable,
            ));
        }
        if !self.supports_protocols(&req.protocol_type, &req.protocols) {
            return JoinOutcome::Reply(JoinReply::error(
                &req.member_id,
                ResponseError::InconsistentGroupProtocol,
            ));
        }
        if !self.accepts_joining(&req.member_id, req.max_size) {
            return JoinOutcome::Reply(JoinReply::error(
                &req.member_id,
                ResponseError::GroupMaxSizeReached,
            ));
        }
        let outcome = if req.member_id == UNKNOWN_MEMBER_ID {
            self.join_new(req, now)
        } else {
            self.join_known(req, now)
        };
        if self.state == GroupState::PreparingRebalance {
            self.try_complete_join(now);
        }
        outcome
    }

    /// Whether `member_id` may join with the group at most `max_size` strong, as Kafka's
    /// classic coordinator decides: an empty group takes anyone; while members rejoin, a
    /// member already rejoining is taken and others only while fewer than `max_size` have
    /// rejoined (so a group over a lowered limit sheds its last rejoiners); otherwise a known
    /// member is taken and a new one only below the limit.
    fn accepts_joining(&self, member_id: &str, max_size: usize) -> bool {
        let known = self.members.get(member_id);
        match self.state {
            GroupState::Empty | GroupState::Dead => true,
            GroupState::PreparingRebalance => {
                known.is_some_and(|m| m.awaiting_join)
                    || self.members.values().filter(|m| m.awaiting_join).count() < max_size
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                known.is_some() || self.members.len() < max_size
            }
        }
    }

    /// An empty group accepts any non-empty protocol set; otherwise the type must match and
    /// at least one offered protocol must be supported by every member.
    fn supports_protocols(&self, protocol_type: &str, protocols: &[Protocol]) -> bool {
        if self.members.is_empty() {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        self.protocol_type.as_deref() == Some(protocol_type)
            && protocols.iter().any(|p| self.members.values().all(|m| m.supports(&p.name)))
    }

    fn join_new(&mut self, req: JoinRequest, now: Instant) -> JoinOutcome {
        // Kafka's id format: "<group.instance.id or client.id>-<uuid>".
        let prefix = req.group_instance_id.as_deref().unwrap_or(&req.client_id);
        let new_id = format!("{prefix}-{}", uuid::Uuid::new_v4());
        if let Some(instance_id) = req.group_instance_id.clone() {
            return match self.static_members.get(&instance_id).cloned() {
                Some(old_id) => self.replace_static_member(&old_id, new_id, req, now),
                None => self.add_member_and_rebalance(new_id, req, now),
            };
        }
        if req.require_known_member_id {
            // KIP-394 (v4+): hand out the id and expect the member back with it; until it
            // returns (or its session passes), the join phase waits for it.
            self.pending_members.insert(new_id.clone(), now + req.session_timeout);
            return JoinOutcome::Reply(JoinReply::error(&new_id, ResponseError::MemberIdRequired));
        }
        self.add_member_and_rebalance(new_id, req, now)
    }

    fn join_known(&mut self, req: JoinRequest, now: Instant) -> JoinOutcome {
        let id = req.member_id.clone();
        if self.pending_members.contains_key(&id) {
            if req.group_instance_id.is_some() {
                // Pending ids are only handed to dynamic members.
                return JoinOutcome::Reply(JoinReply::error(&id, ResponseError::UnknownMemberId));
            }
            return self.add_member_and_rebalance(id, req, now);
        }
        if let Err(code) = self.validate_member(&id, req.group_instance_id.as_deref()) {
            return JoinOutcome::Reply(JoinReply::error(&id, code));
        }
        let matches = self.members[&id].protocols == req.protocols;
        match self.state {
            GroupState::PreparingRebalance => self.update_member_and_rebalance(&id, req, now),
            GroupState::CompletingRebalance if matches => {
                // It probably missed the JoinGroup response: repeat it.
                let is_leader = self.leader.as_deref() == Some(id.as_str());
                JoinOutcome::Reply(self.join_reply(&id, is_leader))
            }
            GroupState::CompletingRebalance => self.update_member_and_rebalance(&id, req, now),
            GroupState::Stable => {
                // The leader rejoining forces a rebalance: that is how it reacts to changes
                // the metadata does not show (new partitions of a subscribed topic).
                if self.leader.as_deref() == Some(id.as_str()) || !matches {
                    self.update_member_and_rebalance(&id, req, now)
                } else {
                    JoinOutcome::Reply(self.join_reply(&id, false))
                }
            }
            GroupState::Empty | GroupState::Dead => {
                JoinOutcome::Reply(JoinReply::error(&id, ResponseError::UnknownMemberId))
            }
        }
    }

    fn add_member_and_rebalance(
        &mut self,
        id: String,
        req: JoinRequest,
        now: Instant,
    ) -> JoinOutcome {
        self.pending_members.remove(&id);
        if self.members.is_empty() {
            self.protocol_type = Some(req.protocol_type.clone());
        }
        if self.leader.is_none() {
            self.leader = Some(id.clone());
        }
        if let Some(iid) = &req.group_instance_id {
            self.static_members.insert(iid.clone(), id.clone());
        }
        self.members.insert(
            id.clone(),
            Member {
                id: id.clone(),
                instance_id: req.group_instance_id,
                client_id: req.client_id,
                client_host: req.client_host,
                session_timeout: req.session_timeout,
                rebalance_timeout: req.rebalance_timeout,
                protocols: req.protocols,
                assignment: Bytes::new(),
                awaiting_join: true,
                awaiting_sync: false,
                is_new: true,
                expires_at: now + NEW_MEMBER_JOIN_TIMEOUT,
            },
        );
        if self.state == GroupState::PreparingRebalance {
            // During the initial delay every newcomer buys the others a little more time.
            if let (Some(nb), Some(deadline)) = (self.join_not_before, self.join_deadline) {
                self.join_not_before =
                    Some(nb.max(now + self.initial_rebalance_delay).min(deadline));
            }
        }
        self.maybe_prepare_rebalance(now);
        JoinOutcome::Wait { member_id: id }
    }

    fn update_member_and_rebalance(
        &mut self,
        id: &str,
        req: JoinRequest,
        now: Instant,
    ) -> JoinOutcome {
        let m = self.members.get_mut(id).expect("caller checked the member exists");
        m.protocols = req.protocols;
        m.session_timeout = req.session_timeout;
        m.rebalance_timeout = req.rebalance_timeout;
        m.awaiting_join = true;
        self.maybe_prepare_rebalance(now);
        JoinOutcome::Wait { member_id: id.to_string() }
    }

    /// KIP-345: a static member came back without its member id. The new id replaces the old
    /// one (whose requests are fenced); in a Stable group whose protocol choice does not change
    /// it keeps its assignment and nobody rebalances.
    fn replace_static_member(
        &mut self,
        old_id: &str,
        new_id: String,
        req: JoinRequest,
        now: Instant,
    ) -> JoinOutcome {
        let previous_leader = self.leader.clone().unwrap_or_default();
        let Some((index, _, mut m)) = self.members.shift_remove_full(old_id) else {
            // The mapping always points at a member; if not, treat it as a new static member.
            return self.add_member_and_rebalance(new_id, req, now);
        };
        if m.awaiting_join {
            self.effects.push(Effect::Join {
                member_id: old_id.to_string(),
                reply: JoinReply::error(old_id, ResponseError::FencedInstanceId),
            });
        }
        if m.awaiting_sync {
            self.effects.push(Effect::Sync {
                member_id: old_id.to_string(),
                reply: SyncReply::error(ResponseError::FencedInstanceId),
            });
            m.awaiting_sync = false;
        }
        m.id = new_id.clone();
        m.client_id = req.client_id;
        m.client_host = req.client_host;
        m.protocols = req.protocols;
        m.session_timeout = req.session_timeout;
        m.rebalance_timeout = req.rebalance_timeout;
        m.awaiting_join = true;
        m.touch(now);
        self.members.insert(new_id.clone(), m);
        let last = self.members.len() - 1;
        self.members.move_index(last, index);
        if self.leader.as_deref() == Some(old_id) {
            self.leader = Some(new_id.clone());
        }
        if let Some(iid) = &req.group_instance_id {
            self.static_members.insert(iid.clone(), new_id.clone());
        }
        if self.pending_sync.remove(old_id) {
            self.pending_sync.insert(new_id.clone());
        }
        match self.state {
            GroupState::Stable => {
                let next = self.select_protocol();
                if self.protocol_name.as_deref() != Some(next.as_str()) {
                    self.maybe_prepare_rebalance(now);
                    return JoinOutcome::Wait { member_id: new_id };
                }
                self.members[&new_id].awaiting_join = false;
                self.effects.push(Effect::Persist(self.snapshot()));
                let is_leader = self.leader.as_deref() == Some(new_id.as_str());
                let reply = if req.supports_skip_assignment {
                    // v9+: the leader learns it leads but must not compute a new assignment,
                    // which a Stable group would not distribute.
                    JoinReply { skip_assignment: is_leader, ..self.join_reply(&new_id, is_leader) }
                } else {
                    // Before v9: name the old leader id so that the member does not assign.
                    JoinReply { leader: previous_leader, ..self.join_reply(&new_id, false) }
                };
                JoinOutcome::Reply(reply)
            }
            // The leader may already be assigning with the old id: start over.
            GroupState::CompletingRebalance => {
                self.prepare_rebalance(now);
                JoinOutcome::Wait { member_id: new_id }
            }
            GroupState::PreparingRebalance => JoinOutcome::Wait { member_id: new_id },
            GroupState::Empty | GroupState::Dead => {
                self.maybe_prepare_rebalance(now);
                JoinOutcome::Wait { member_id: new_id }
            }
        }
    }

    /// The current generation's JoinGroup answer for `member_id`.
    pub(super) fn join_reply(&self, member_id: &str, with_members: bool) -> JoinReply {
        JoinReply {
            error: None,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            skip_assignment: false,
            member_id: member_id.to_string(),
            members: if with_members { self.joined_members() } else { Vec::new() },
        }
    }

    fn joined_members(&self) -> Vec<JoinedMember> {
        let protocol = self.protocol_name.clone().unwrap_or_default();
        self.members
            .values()
            .map(|m| JoinedMember {
                member_id: m.id.clone(),
                group_instance_id: m.instance_id.clone(),
                metadata: m.metadata_for(&protocol),
            })
            .collect()
    }

    /// The protocol every member supports that most members prefer; ties go to the one
    /// preferred by the earliest member.
    pub(super) fn select_protocol(&self) -> String {
        let Some(first) = self.members.values().next() else {
            return String::new();
        };
        let candidates: Vec<&str> = first
            .protocols
            .iter()
            .map(|p| p.name.as_str())
            .filter(|p| self.members.values().all(|m| m.supports(p)))
            .collect();
        let mut votes: IndexMap<&str, usize> = IndexMap::new();
        for m in self.members.values() {
            if let Some(v) = m.vote(&candidates) {
                *votes.entry(v).or_default() += 1;
            }
        }
        let best = votes.values().copied().max().unwrap_or(0);
        votes
            .into_iter()
            .find(|(_, n)| *n == best)
            .map(|(p, _)| p.to_string())
            .or_else(|| first.protocols.first().map(|p| p.name.clone()))
            .unwrap_or_default()
    }
}

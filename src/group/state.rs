//! The state machine of one consumer group under Kafka's classic group protocol
//! (JoinGroup / SyncGroup / Heartbeat / LeaveGroup), as pure transitions.
//!
//! Owns: membership (dynamic and static, KIP-345), pending members (KIP-394), protocol
//! selection, generations, the leader, assignments, session and rebalance deadlines.
//! Does not own: waiting (the coordinator parks requests and wakes them from [`Effect`]s),
//! storage (a [`Snapshot`] is handed out to be persisted), clocks (every transition takes an
//! explicit `now`), or wire types. No tokio and no I/O here, so every rule is unit-tested with
//! a made-up clock.
//!
//! The rules follow Kafka's `GroupCoordinator` so clients see the outcomes they expect:
//! - `Empty → PreparingRebalance` when a member joins; the join phase completes when every
//!   known member has rejoined and no KIP-394 pending member is outstanding, or when the
//!   rebalance timeout passes (dynamic members that did not rejoin are then removed; static
//!   members stay until their session expires).
//! - `PreparingRebalance → CompletingRebalance` with a new generation; each parked JoinGroup is
//!   answered, the leader gets the member list.
//! - `CompletingRebalance → Stable` once the leader's assignment is persisted; parked
//!   SyncGroups are answered with their part.
//! - Any membership change in `Stable`/`CompletingRebalance` starts a new rebalance; members
//!   learn it from REBALANCE_IN_PROGRESS on Heartbeat (or SyncGroup) and rejoin.
//! - The last member leaving completes a rebalance with nobody: `Empty`, generation + 1.
//!
//! This file holds the group, its members and the queries; the transitions are split along
//! the protocol's own seams: `join` (JoinGroup and protocol selection), `rebalance` (opening
//! and completing a join phase, removing members), `sync` (SyncGroup and the stored
//! assignment), `liveness` (Heartbeat, LeaveGroup and a commit's member check), `expiry`
//! (deadlines), `snapshot` (what is persisted and resuming from it) and `describe`
//! (DescribeGroups and the subscribed topics).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use indexmap::IndexMap;
use kafka_protocol::ResponseError;

mod describe;
mod expiry;
mod join;
mod liveness;
mod rebalance;
mod snapshot;
mod sync;

pub use describe::Description;
pub use join::{JoinOutcome, JoinReply, JoinRequest};
pub use snapshot::{Snapshot, SnapshotMember};
pub use sync::{SyncOutcome, SyncReply, SyncRequest};

/// The member id a client sends before it has one.
pub const UNKNOWN_MEMBER_ID: &str = "";

/// The generation reported when there is none (errors, MEMBER_ID_REQUIRED).
pub const NO_GENERATION: i32 = -1;

/// A new member's JoinGroup is dropped after this long (Kafka's `NewMemberJoinTimeoutMs`):
/// its socket may be gone and it cannot heartbeat before it has an id.
pub const NEW_MEMBER_JOIN_TIMEOUT: Duration = Duration::from_secs(300);

/// The protocol type of groups whose member metadata is a `ConsumerProtocolSubscription`.
pub const CONSUMER_PROTOCOL_TYPE: &str = "consumer";

/// Kafka's group states, with the names DescribeGroups and ListGroups report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GroupState {
    /// No members. Offsets may still exist.
    Empty,
    /// Waiting for members to (re)join.
    PreparingRebalance,
    /// Generation chosen; waiting for the leader's assignment.
    CompletingRebalance,
    /// Assignment distributed; members heartbeat.
    Stable,
    /// Deleted; requests should go find the coordinator again.
    Dead,
}

impl GroupState {
    pub const ALL: [GroupState; 5] = [
        GroupState::Empty,
        GroupState::PreparingRebalance,
        GroupState::CompletingRebalance,
        GroupState::Stable,
        GroupState::Dead,
    ];

    /// The name on the wire (DescribeGroups `group_state`, ListGroups filter).
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }

    /// Parse a state name case-insensitively, as Kafka's ListGroups filter does.
    pub fn parse(name: &str) -> Option<GroupState> {
        GroupState::ALL.into_iter().find(|s| s.name().eq_ignore_ascii_case(name))
    }
}

/// One protocol a member supports (for consumers: an assignor name and its subscription).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protocol {
    pub name: String,
    pub metadata: Bytes,
}

/// Something the coordinator must do after a transition, outside the group lock.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Answer the parked JoinGroup of `member_id`.
    Join { member_id: String, reply: JoinReply },
    /// Answer the parked SyncGroup of `member_id`.
    Sync { member_id: String, reply: SyncReply },
    /// Store this snapshot (best effort: the group became empty, or a static member was
    /// replaced without a rebalance).
    Persist(Snapshot),
}

#[derive(Debug, Clone)]
struct Member {
    id: String,
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocols: Vec<Protocol>,
    assignment: Bytes,
    /// Its JoinGroup is parked.
    awaiting_join: bool,
    /// Its SyncGroup is parked.
    awaiting_sync: bool,
    /// Joined in the current rebalance and not yet answered.
    is_new: bool,
    /// When the member is removed unless it heartbeats (see [`Member::expired`]).
    expires_at: Instant,
}

impl Member {
    fn touch(&mut self, now: Instant) {
        self.expires_at = now + self.session_timeout;
    }

    fn supports(&self, protocol: &str) -> bool {
        self.protocols.iter().any(|p| p.name == protocol)
    }

    fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|p| p.name == protocol)
            .map(|p| p.metadata.clone())
            .unwrap_or_default()
    }

    /// Its first choice among `candidates`.
    fn vote<'a>(&'a self, candidates: &[&str]) -> Option<&'a str> {
        self.protocols.iter().map(|p| p.name.as_str()).find(|p| candidates.contains(p))
    }
}

/// One consumer group's live state. See the module docs for the rules.
#[derive(Debug)]
pub struct Group {
    state: GroupState,
    generation: i32,
    protocol_type: Option<String>,
    protocol_name: Option<String>,
    leader: Option<String>,
    /// In join order; the order picks the next leader when the leader goes.
    members: IndexMap<String, Member>,
    /// group.instance.id → member id (KIP-345).
    static_members: HashMap<String, String>,
    /// KIP-394: ids handed out with MEMBER_ID_REQUIRED, with the deadline to come back.
    pending_members: HashMap<String, Instant>,
    /// Members that have not sent SyncGroup for the current generation.
    pending_sync: HashSet<String>,
    /// PreparingRebalance: the join phase ends at this time whoever has rejoined.
    join_deadline: Option<Instant>,
    /// PreparingRebalance from Empty: the join phase does not end before this (Kafka's
    /// group.initial.rebalance.delay.ms), so members starting together land in one generation.
    join_not_before: Option<Instant>,
    /// CompletingRebalance/Stable: members in `pending_sync` are removed at this time.
    sync_deadline: Option<Instant>,
    initial_rebalance_delay: Duration,
    /// The leader's assignment while it is being persisted, with its generation.
    proposed: Option<(i32, HashMap<String, Bytes>)>,
    effects: Vec<Effect>,
}

// === impl Group: construction and queries ===

impl Group {
    /// A group nobody has joined yet: Empty, generation 0.
    pub fn new() -> Group {
        Group {
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol_name: None,
            leader: None,
            members: IndexMap::new(),
            static_members: HashMap::new(),
            pending_members: HashMap::new(),
            pending_sync: HashSet::new(),
            join_deadline: None,
            join_not_before: None,
            sync_deadline: None,
            initial_rebalance_delay: Duration::ZERO,
            proposed: None,
            effects: Vec::new(),
        }
    }

    /// How long the first rebalance of an empty group waits for more members (Kafka's
    /// `group.initial.rebalance.delay.ms`). Zero completes it as soon as everyone known joined.
    pub fn with_initial_rebalance_delay(mut self, delay: Duration) -> Group {
        self.initial_rebalance_delay = delay;
        self
    }

    pub fn state(&self) -> GroupState {
        self.state
    }

    pub fn generation(&self) -> i32 {
        self.generation
    }

    pub fn protocol_type(&self) -> Option<&str> {
        self.protocol_type.as_deref()
    }

    #[cfg(test)]
    pub fn leader(&self) -> Option<&str> {
        self.leader.as_deref()
    }

    #[cfg(test)]
    pub fn member_ids(&self) -> Vec<String> {
        self.members.keys().cloned().collect()
    }

    #[cfg(test)]
    pub fn has_member(&self, member_id: &str) -> bool {
        self.members.contains_key(member_id)
    }

    /// Everything that must be done outside the lock since the last call.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    /// Deleted: every later request is told to look for the coordinator again.
    pub fn mark_dead(&mut self) {
        self.state = GroupState::Dead;
    }

    /// Is `member_id` (with `instance_id`, if given) a current member? FENCED_INSTANCE_ID when
    /// the instance id now belongs to another member id (an older copy of a static member).
    fn validate_member(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<(), ResponseError> {
        if let Some(iid) = instance_id {
            match self.static_members.get(iid) {
                Some(current) if current != member_id => {
                    return Err(ResponseError::FencedInstanceId);
                }
                Some(_) => {}
                None => return Err(ResponseError::UnknownMemberId),
            }
        }
        if !self.members.contains_key(member_id) {
            return Err(ResponseError::UnknownMemberId);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;

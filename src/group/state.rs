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

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use indexmap::IndexMap;
use kafka_protocol::ResponseError;

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

/// What is persisted of a group: its last completed generation. Enough for a new owner to
/// resume (generation numbers continue, members keep heartbeating and committing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: Option<String>,
    pub members: Vec<SnapshotMember>,
}

/// One member of a [`Snapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: u64,
    pub rebalance_timeout_ms: u64,
    /// The member's metadata for the chosen protocol.
    pub subscription: Bytes,
    pub assignment: Bytes,
}

/// One member as DescribeGroups reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// Empty unless the group is Stable (as Kafka).
    pub metadata: Bytes,
    pub assignment: Bytes,
}

/// A group as DescribeGroups reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Description {
    pub state: GroupState,
    pub protocol_type: String,
    /// The chosen protocol, only when Stable (as Kafka).
    pub protocol_name: String,
    pub members: Vec<MemberDescription>,
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
    /// Kafka's `hasSatisfiedHeartbeat`, inverted: a new member is bounded by
    /// [`NEW_MEMBER_JOIN_TIMEOUT`]; a known member with a parked request is alive; anyone else
    /// must have heartbeat within its session timeout.
    fn expired(&self, now: Instant) -> bool {
        if self.is_new {
            now >= self.expires_at
        } else if self.awaiting_join || self.awaiting_sync {
            false
        } else {
            now >= self.expires_at
        }
    }

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
    id: String,
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
    pub fn new(id: &str) -> Group {
        Group {
            id: id.to_string(),
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

    /// A group resumed from its last persisted generation: Stable with those members (each
    /// gets a fresh session from `now`, as Kafka does when it loads a group), or Empty.
    pub fn from_snapshot(id: &str, snapshot: Snapshot, now: Instant) -> Group {
        let mut g = Group::new(id);
        g.generation = snapshot.generation;
        g.protocol_type = snapshot.protocol_type;
        let Some(protocol) = snapshot.protocol_name.filter(|_| !snapshot.members.is_empty()) else {
            return g;
        };
        for m in snapshot.members {
            let session_timeout = Duration::from_millis(m.session_timeout_ms);
            if let Some(iid) = &m.group_instance_id {
                g.static_members.insert(iid.clone(), m.member_id.clone());
            }
            g.members.insert(
                m.member_id.clone(),
                Member {
                    id: m.member_id,
                    instance_id: m.group_instance_id,
                    client_id: m.client_id,
                    client_host: m.client_host,
                    session_timeout,
                    rebalance_timeout: Duration::from_millis(m.rebalance_timeout_ms),
                    protocols: vec![Protocol { name: protocol.clone(), metadata: m.subscription }],
                    assignment: m.assignment,
                    awaiting_join: false,
                    awaiting_sync: false,
                    is_new: false,
                    expires_at: now + session_timeout,
                },
            );
        }
        g.leader = snapshot
            .leader
            .filter(|l| g.members.contains_key(l))
            .or_else(|| g.members.keys().next().cloned());
        g.protocol_name = Some(protocol);
        g.state = GroupState::Stable;
        g
    }

    pub fn id(&self) -> &str {
        &self.id
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

    pub fn protocol_name(&self) -> Option<&str> {
        self.protocol_name.as_deref()
    }

    pub fn leader(&self) -> Option<&str> {
        self.leader.as_deref()
    }

    pub fn member_ids(&self) -> Vec<String> {
        self.members.keys().cloned().collect()
    }

    pub fn has_member(&self, member_id: &str) -> bool {
        self.members.contains_key(member_id)
    }

    /// Everything that must be done outside the lock since the last call.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    /// The current generation as it would be persisted.
    pub fn snapshot(&self) -> Snapshot {
        self.snapshot_with(None)
    }

    fn snapshot_with(&self, assignment: Option<&HashMap<String, Bytes>>) -> Snapshot {
        let protocol = self.protocol_name.clone().unwrap_or_default();
        Snapshot {
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader: self.leader.clone(),
            members: self
                .members
                .values()
                .map(|m| SnapshotMember {
                    member_id: m.id.clone(),
                    group_instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    session_timeout_ms: m.session_timeout.as_millis() as u64,
                    rebalance_timeout_ms: m.rebalance_timeout.as_millis() as u64,
                    subscription: m.metadata_for(&protocol),
                    assignment: match assignment {
                        Some(a) => a.get(&m.id).cloned().unwrap_or_default(),
                        None => m.assignment.clone(),
                    },
                })
                .collect(),
        }
    }

    /// The group as DescribeGroups shows it (metadata and assignments only when Stable).
    pub fn describe(&self) -> Description {
        let stable = self.state == GroupState::Stable;
        let protocol = self.protocol_name.clone().unwrap_or_default();
        Description {
            state: self.state,
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            protocol_name: if stable { protocol.clone() } else { String::new() },
            members: self
                .members
                .values()
                .map(|m| MemberDescription {
                    member_id: m.id.clone(),
                    group_instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: if stable { m.metadata_for(&protocol) } else { Bytes::new() },
                    assignment: if stable { m.assignment.clone() } else { Bytes::new() },
                })
                .collect(),
        }
    }

    /// Topics the members subscribe to, for OffsetDelete. `None` means "cannot tell" (not a
    /// consumer group, or metadata that does not decode): treat every topic as subscribed.
    pub fn subscribed_topics(&self) -> Option<HashSet<String>> {
        if self.protocol_type.as_deref() != Some(CONSUMER_PROTOCOL_TYPE) {
            return None;
        }
        let mut topics = HashSet::new();
        for m in self.members.values() {
            let chosen: Vec<&Protocol> = match &self.protocol_name {
                Some(name) => m.protocols.iter().filter(|p| &p.name == name).collect(),
                None => m.protocols.iter().collect(),
            };
            for p in chosen {
                topics.extend(decode_subscription(&p.metadata)?);
            }
        }
        Some(topics)
    }

    /// Deleted: every later request is told to look for the coordinator again.
    pub fn mark_dead(&mut self) {
        self.state = GroupState::Dead;
    }
}

/// The topics of a `ConsumerProtocolSubscription`: an `i16` version, then (in every version,
/// none of them flexible) an `i32` count of `i16`-length-prefixed topic names. Read by hand
/// with bounds checks: the metadata comes from clients, and the wire library sizes its
/// vectors from the claimed count before reading, so a bogus count would abort the process.
pub fn decode_subscription(metadata: &[u8]) -> Option<Vec<String>> {
    let mut rest = metadata;
    let mut take = |n: usize| -> Option<&[u8]> {
        let (head, tail) = rest.split_at_checked(n)?;
        rest = tail;
        Some(head)
    };
    let version = i16::from_be_bytes(take(2)?.try_into().ok()?);
    if version < 0 {
        return None;
    }
    let count = i32::from_be_bytes(take(4)?.try_into().ok()?);
    let count = usize::try_from(count).ok()?;
    let mut topics = Vec::with_capacity(count.min(metadata.len() / 2));
    for _ in 0..count {
        let len = i16::from_be_bytes(take(2)?.try_into().ok()?);
        let name = take(usize::try_from(len).ok()?)?;
        topics.push(String::from_utf8(name.to_vec()).ok()?);
    }
    Some(topics)
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
    fn join_reply(&self, member_id: &str, with_members: bool) -> JoinReply {
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
    fn select_protocol(&self) -> String {
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

// === impl Group: rebalancing ===

impl Group {
    fn maybe_prepare_rebalance(&mut self, now: Instant) {
        if matches!(
            self.state,
            GroupState::Stable | GroupState::CompletingRebalance | GroupState::Empty
        ) {
            self.prepare_rebalance(now);
        }
    }

    fn prepare_rebalance(&mut self, now: Instant) {
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

    fn try_complete_join(&mut self, now: Instant) {
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
    fn complete_join(&mut self, now: Instant) {
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
    fn remove(&mut self, id: &str) {
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
    fn remove_member_and_update_group(&mut self, id: &str, now: Instant) {
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

    fn reset_and_propagate_assignment_error(&mut self, code: ResponseError, now: Instant) {
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

// === impl Group: SyncGroup, Heartbeat, LeaveGroup, OffsetCommit, timers ===

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

#[cfg(test)]
mod tests;

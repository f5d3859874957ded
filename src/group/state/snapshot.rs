//! What is persisted of a group — its last completed generation — and resuming a group from
//! it (as Kafka does when a coordinator loads a group).
//!
//! Owns: [`Snapshot`] and the conversions between it and a live [`Group`]. Does not own: the
//! file format or the filer (`group::store`), or when to persist (the coordinator follows
//! [`Effect::Persist`](super::Effect) and [`SyncOutcome::Persist`](super::SyncOutcome)).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{Group, GroupState, Member, Protocol};

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

// === impl Group: snapshots ===

impl Group {
    /// A group resumed from its last persisted generation: Stable with those members (each
    /// gets a fresh session from `now`, as Kafka does when it loads a group), or Empty.
    pub fn from_snapshot(snapshot: Snapshot, now: Instant) -> Group {
        let mut g = Group::new();
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

    /// The current generation as it would be persisted.
    pub fn snapshot(&self) -> Snapshot {
        self.snapshot_with(None)
    }

    pub(super) fn snapshot_with(&self, assignment: Option<&HashMap<String, Bytes>>) -> Snapshot {
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
}

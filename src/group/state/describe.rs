//! The group as others see it: DescribeGroups' view (metadata and assignments only when
//! Stable, as Kafka), and the topics its consumers subscribe to (for OffsetDelete).
//!
//! Owns: [`Description`] and decoding a `ConsumerProtocolSubscription`'s topics. Does not own:
//! wire types (`api::describe_groups`).

use std::collections::HashSet;

use bytes::Bytes;

use super::{CONSUMER_PROTOCOL_TYPE, Group, GroupState, Protocol};

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

// === impl Group: description ===

impl Group {
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
}

/// The topics of a `ConsumerProtocolSubscription`: an `i16` version, then (in every version,
/// none of them flexible) an `i32` count of `i16`-length-prefixed topic names. Read by hand
/// with bounds checks: the metadata comes from clients, and the wire library sizes its
/// vectors from the claimed count before reading, so a bogus count would abort the process.
pub(super) fn decode_subscription(metadata: &[u8]) -> Option<Vec<String>> {
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

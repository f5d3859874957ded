//! OffsetCommit (v0-9; `protocol::legacy` decodes v0-1): checks each partition exists, lets
//! `group::Coordinator` validate the committer (generation and member, or a standalone commit)
//! and answers each partition only after its offset is in the filer.
//!
//! v10 addresses topics by id; kafka-protocol 0.18 cannot decode v10 requests, so kelp stops
//! at v9 (clients negotiate down).

use kafka_protocol::ResponseError;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};

use crate::ctx::Ctx;
use crate::error::ApiKind;
use crate::group::{Committed, unix_millis};
use crate::protocol::topic_name;

/// Longest commit metadata accepted (Kafka's `offset.metadata.max.bytes` default).
pub const MAX_METADATA_BYTES: usize = 4096;

pub async fn handle(ctx: &Ctx, version: i16, req: OffsetCommitRequest) -> OffsetCommitResponse {
    let group_id = req.group_id.0.to_string();
    let now = unix_millis();
    // Per topic, per partition: an early error, or the index of its commit in `commits`.
    let mut slots = Vec::with_capacity(req.topics.len());
    let mut commits = Vec::new();
    for t in req.topics {
        let name = t.name.0.to_string();
        let known = if topic_name::is_valid(&name) {
            ctx.topics.partitions(&name).await.map_err(|e| e.code(ApiKind::Group))
        } else {
            Ok(None)
        };
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            let metadata = p.committed_metadata.map(|m| m.to_string()).unwrap_or_default();
            let slot = match known {
                Err(code) => Err(code),
                Ok(Some(n)) if p.partition_index >= 0 && (p.partition_index as u32) < n => {
                    if metadata.len() > MAX_METADATA_BYTES {
                        Err(ResponseError::OffsetMetadataTooLarge)
                    } else {
                        let leader_epoch = if version >= 6 { p.committed_leader_epoch } else { -1 };
                        commits.push((
                            name.clone(),
                            p.partition_index,
                            Committed {
                                offset: p.committed_offset,
                                leader_epoch,
                                metadata,
                                commit_timestamp_ms: now,
                            },
                        ));
                        Ok(commits.len() - 1)
                    }
                }
                Ok(_) => Err(ResponseError::UnknownTopicOrPartition),
            };
            partitions.push((p.partition_index, slot));
        }
        slots.push((t.name, partitions));
    }
    let results = if commits.is_empty() {
        Vec::new()
    } else {
        let member_id = req.member_id.to_string();
        let instance = req.group_instance_id.as_ref().map(|s| s.to_string());
        ctx.groups
            .commit_offsets(
                &group_id,
                &member_id,
                instance.as_deref(),
                req.generation_id_or_member_epoch,
                commits,
            )
            .await
    };
    let topics = slots
        .into_iter()
        .map(|(name, partitions)| {
            let partitions = partitions
                .into_iter()
                .map(|(index, slot)| {
                    let r = slot.and_then(|i| results[i]);
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(index)
                        .with_error_code(r.err().map_or(0, |e| e.code()))
                })
                .collect();
            OffsetCommitResponseTopic::default().with_name(name).with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

/// The whole request failed with `code` (it could not reach the group's owner, say): every
/// partition of the request carries it.
pub fn error(req: &OffsetCommitRequest, code: ResponseError) -> OffsetCommitResponse {
    let topics = req
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code.code())
                })
                .collect();
            OffsetCommitResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

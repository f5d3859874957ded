//! OffsetFetch: v1-7 one group, v8-9 a batch of groups; a null topic list means every topic
//! the group has offsets for.
//!
//! An offset that was never committed is -1. An offset that could not be *read* is never
//! -1 with no error: the partition carries the error code, and so does the group (top-level
//! `error_code` v2-7, group `error_code` v8+), which clients retry (COORDINATOR_NOT_AVAILABLE
//! or COORDINATOR_LOAD_IN_PROGRESS). v10 (topic ids) cannot be decoded by kafka-protocol 0.18.

use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{GroupId, OffsetFetchRequest, OffsetFetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::ctx::Ctx;
use crate::error::ApiKind;

/// One partition's answer.
struct Partition {
    index: i32,
    offset: i64,
    leader_epoch: i32,
    metadata: String,
    error: i16,
}

/// One group's answer: group-level error code and per-topic partitions.
async fn fetch_group(
    ctx: &Ctx,
    group_id: &str,
    topics: Option<Vec<(String, Vec<i32>)>>,
) -> (i16, Vec<(String, Vec<Partition>)>) {
    let fetched = match ctx.groups.fetch_offsets(group_id, topics).await {
        Ok(f) => f,
        Err(e) => {
            tracing::debug!(group = group_id, error = %e, "listing committed offsets failed");
            return (e.code(ApiKind::Group).code(), Vec::new());
        }
    };
    let mut group_error = 0;
    let topics = fetched
        .into_iter()
        .map(|(topic, partitions)| {
            let partitions = partitions
                .into_iter()
                .map(|(index, r)| match r {
                    Ok(Some(c)) => Partition { index, offset: c.offset, leader_epoch: c.leader_epoch, metadata: c.metadata, error: 0 },
                    Ok(None) => Partition { index, offset: -1, leader_epoch: -1, metadata: String::new(), error: 0 },
                    Err(e) => {
                        tracing::debug!(group = group_id, topic = %topic, partition = index, error = %e, "reading committed offset failed");
                        let code = e.code(ApiKind::Group).code();
                        group_error = code;
                        Partition { index, offset: -1, leader_epoch: -1, metadata: String::new(), error: code }
                    }
                })
                .collect();
            (topic, partitions)
        })
        .collect();
    (group_error, topics)
}

pub async fn handle(ctx: &Ctx, version: i16, req: OffsetFetchRequest) -> OffsetFetchResponse {
    let name = |s: String| TopicName(StrBytes::from_string(s));
    if version < 8 {
        let topics = req.topics.map(|ts| {
            ts.into_iter().map(|t| (t.name.0.to_string(), t.partition_indexes)).collect()
        });
        let (error, topics) = fetch_group(ctx, &req.group_id.0, topics).await;
        let topics = topics
            .into_iter()
            .map(|(t, ps)| {
                let partitions = ps
                    .into_iter()
                    .map(|p| {
                        OffsetFetchResponsePartition::default()
                            .with_partition_index(p.index)
                            .with_committed_offset(p.offset)
                            .with_committed_leader_epoch(p.leader_epoch)
                            .with_metadata(Some(StrBytes::from_string(p.metadata)))
                            .with_error_code(p.error)
                    })
                    .collect();
                OffsetFetchResponseTopic::default().with_name(name(t)).with_partitions(partitions)
            })
            .collect();
        // v1 has no top-level error code; the partitions carry it.
        let error = if version >= 2 { error } else { 0 };
        return OffsetFetchResponse::default().with_topics(topics).with_error_code(error);
    }
    let mut groups = Vec::with_capacity(req.groups.len());
    for g in req.groups {
        let topics = g.topics.map(|ts| {
            ts.into_iter().map(|t| (t.name.0.to_string(), t.partition_indexes)).collect()
        });
        let (error, topics) = fetch_group(ctx, &g.group_id.0, topics).await;
        let topics = topics
            .into_iter()
            .map(|(t, ps)| {
                let partitions = ps
                    .into_iter()
                    .map(|p| {
                        OffsetFetchResponsePartitions::default()
                            .with_partition_index(p.index)
                            .with_committed_offset(p.offset)
                            .with_committed_leader_epoch(p.leader_epoch)
                            .with_metadata(Some(StrBytes::from_string(p.metadata)))
                            .with_error_code(p.error)
                    })
                    .collect();
                OffsetFetchResponseTopics::default().with_name(name(t)).with_partitions(partitions)
            })
            .collect();
        groups.push(
            OffsetFetchResponseGroup::default()
                .with_group_id(GroupId(g.group_id.0))
                .with_topics(topics)
                .with_error_code(error),
        );
    }
    OffsetFetchResponse::default().with_groups(groups)
}

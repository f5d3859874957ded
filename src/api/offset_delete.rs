//! OffsetDelete: remove committed offsets of a group. Allowed for every topic of an Empty
//! group; for a live consumer group only for topics no member subscribes to
//! (GROUP_SUBSCRIBED_TO_TOPIC otherwise, read from each member's ConsumerProtocolSubscription).

use kafka_protocol::ResponseError;
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse};

use crate::ctx::Ctx;

pub async fn handle(ctx: &Ctx, req: OffsetDeleteRequest) -> OffsetDeleteResponse {
    // As JoinGroup, SyncGroup, Heartbeat and LeaveGroup (Kafka's group coordinator refuses an
    // empty id there); OffsetCommit, OffsetFetch, DescribeGroups and DeleteGroups accept one.
    if req.group_id.0.is_empty() {
        return error(ResponseError::InvalidGroupId);
    }
    let topics: Vec<(String, Vec<i32>)> = req
        .topics
        .iter()
        .map(|t| (t.name.0.to_string(), t.partitions.iter().map(|p| p.partition_index).collect()))
        .collect();
    let results = match ctx.groups.delete_offsets(&req.group_id.0, topics).await {
        Err(code) => return error(code),
        Ok(r) => r,
    };
    let topics = req
        .topics
        .into_iter()
        .zip(results)
        .map(|(t, (_, partitions))| {
            let partitions = partitions
                .into_iter()
                .map(|(index, r)| {
                    OffsetDeleteResponsePartition::default()
                        .with_partition_index(index)
                        .with_error_code(r.err().map_or(0, |e| e.code()))
                })
                .collect();
            OffsetDeleteResponseTopic::default().with_name(t.name).with_partitions(partitions)
        })
        .collect();
    OffsetDeleteResponse::default().with_topics(topics)
}

/// The whole request failed with `code` (it could not reach the group's owner, or the client
/// may not delete offsets, say): OffsetDelete names one group, so Kafka puts a group-level
/// error in the top-level code.
pub fn error(code: ResponseError) -> OffsetDeleteResponse {
    OffsetDeleteResponse::default().with_error_code(code.code())
}

//! ListOffsets: earliest, latest, max-timestamp and by-timestamp offsets.
//!
//! By timestamp: the first offset whose record timestamp is at or after the target, found by
//! binary search over the partition (log₂ n reads of one record each). This is exact when a
//! partition's timestamps never decrease, which holds for CreateTime from one producer per
//! partition; Kafka makes the same assumption through its time index.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use crate::ctx::Ctx;
use crate::error::{ApiKind, Error};
use crate::records::envelope;

/// Special timestamps of the request (KIP-734 for MAX, KIP-405 for the local/tiered ones).
pub const LATEST: i64 = -1;
pub const EARLIEST: i64 = -2;
pub const MAX_TIMESTAMP: i64 = -3;
pub const EARLIEST_LOCAL: i64 = -4;
pub const LATEST_TIERED: i64 = -5;

pub async fn handle(ctx: &Ctx, _version: i16, req: ListOffsetsRequest) -> ListOffsetsResponse {
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let name = t.name.0.to_string();
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            let resp =
                ListOffsetsPartitionResponse::default().with_partition_index(p.partition_index);
            let resp = match lookup(ctx, &name, p.partition_index, p.timestamp).await {
                Ok((timestamp, offset)) => resp.with_timestamp(timestamp).with_offset(offset),
                Err(code) => resp.with_error_code(code.code()).with_timestamp(-1).with_offset(-1),
            };
            partitions.push(resp);
        }
        topics.push(
            ListOffsetsTopicResponse::default().with_name(t.name).with_partitions(partitions),
        );
    }
    ListOffsetsResponse::default().with_topics(topics)
}

/// (timestamp, offset) for one partition.
async fn lookup(
    ctx: &Ctx,
    topic: &str,
    partition: i32,
    timestamp: i64,
) -> Result<(i64, i64), ResponseError> {
    match ctx.topics.partitions(topic).await {
        Ok(Some(n)) if partition >= 0 && (partition as u32) < n => {}
        Ok(_) => return Err(ResponseError::UnknownTopicOrPartition),
        Err(e) => return Err(e.code(ApiKind::Data)),
    }
    let p = partition as u32;
    let data = |e: Error| e.code(ApiKind::Data);
    let (earliest, latest) = ctx.seaweed.offset_range(topic, p).await.map_err(data)?;
    match timestamp {
        LATEST | LATEST_TIERED => Ok((-1, latest)),
        EARLIEST | EARLIEST_LOCAL => Ok((-1, earliest)),
        MAX_TIMESTAMP => {
            if latest <= earliest {
                return Ok((-1, -1));
            }
            let ts = timestamp_at(ctx, topic, p, latest - 1).await.map_err(data)?;
            Ok((ts.unwrap_or(-1), latest - 1))
        }
        t if t >= 0 => {
            // Find the first offset in [earliest, latest) whose timestamp is >= t.
            let (mut lo, mut hi) = (earliest, latest);
            let mut found_ts = -1;
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                match timestamp_at(ctx, topic, p, mid).await.map_err(data)? {
                    Some(ts) if ts >= t => {
                        hi = mid;
                        found_ts = ts;
                    }
                    _ => lo = mid + 1,
                }
            }
            if lo >= latest { Ok((-1, -1)) } else { Ok((found_ts, lo)) }
        }
        _ => Err(ResponseError::InvalidRequest),
    }
}

/// The timestamp of the record at `offset`, `None` if there is none there.
async fn timestamp_at(
    ctx: &Ctx,
    topic: &str,
    partition: u32,
    offset: i64,
) -> Result<Option<i64>, Error> {
    let f = ctx.seaweed.fetch(topic, partition, offset, 1, std::time::Duration::ZERO, 1).await?;
    Ok(f.messages
        .iter()
        .find(|(o, _)| *o >= offset)
        .map(|(_, m)| envelope::from_message(m).timestamp_ms))
}

//! ListOffsets: earliest, latest, max-timestamp and by-timestamp offsets.
//!
//! Max timestamp (-3, KIP-734): the offset and timestamp of the record with the largest
//! timestamp (the first such record when several share it), found by reading the partition
//! through, as kelp keeps no time index. Latest tiered (-5, KIP-1005): there is no tiered
//! storage, so offset and timestamp -1, as Kafka answers when remote storage is off; earliest
//! local (-4, KIP-405) is the earliest offset, everything being "local".
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
        LATEST => Ok((-1, latest)),
        LATEST_TIERED => Ok((-1, -1)),
        EARLIEST | EARLIEST_LOCAL => Ok((-1, earliest)),
        MAX_TIMESTAMP => {
            let max = max_timestamp(ctx, topic, p, earliest, latest).await.map_err(data)?;
            Ok(max.map_or((-1, -1), |(ts, offset)| (ts, offset)))
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

/// Bytes read from SeaweedFS at a time while looking for the largest timestamp.
const SCAN_CHUNK_BYTES: i32 = 1 << 20;

/// (timestamp, offset) of the record with the largest timestamp in `[earliest, latest)`,
/// `None` for an empty partition.
async fn max_timestamp(
    ctx: &Ctx,
    topic: &str,
    partition: u32,
    earliest: i64,
    latest: i64,
) -> Result<Option<(i64, i64)>, Error> {
    let mut best = None;
    let mut next = earliest;
    while next < latest {
        let f = ctx
            .seaweed
            .fetch(topic, partition, next, SCAN_CHUNK_BYTES, std::time::Duration::ZERO, 1)
            .await?;
        let Some(&(last, _)) = f.messages.last() else { break };
        best = f
            .messages
            .iter()
            .filter(|(o, _)| *o >= next && *o < latest)
            .fold(best, |b, (o, m)| keep_max(b, (envelope::from_message(m).timestamp_ms, *o)));
        next = last + 1;
    }
    Ok(best)
}

/// The larger of two (timestamp, offset); on a tie the one seen first (the lower offset), as
/// Kafka answers.
fn keep_max(best: Option<(i64, i64)>, candidate: (i64, i64)) -> Option<(i64, i64)> {
    match best {
        Some(b) if b.0 >= candidate.0 => Some(b),
        _ => Some(candidate),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_largest_timestamp_wins_and_the_first_of_equals() {
        let records = [(5, 0), (9, 1), (3, 2), (9, 3), (7, 4)];
        let best = records.iter().fold(None, |b, r| keep_max(b, *r));
        assert_eq!(best, Some((9, 1)));
        assert_eq!(keep_max(None, (-1, 0)), Some((-1, 0)));
    }
}

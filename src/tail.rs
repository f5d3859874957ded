//! Waiting for new records of partitions another kelp writes (docs/writers.md, "Fetches that
//! wait").
//!
//! The SeaweedFS broker does not long-poll (`FetchMessage` ignores `max_wait_ms` and
//! `min_bytes`, src/seaweed/SEAWEEDFS.md), so a kelp learns of new records either from its own
//! publishes or by asking the broker again. Every record of a partition goes through the
//! partition's one writer (`writers`), which wakes its waiting fetches the moment the broker
//! acknowledges a record. A kelp whose client waits on a partition written elsewhere
//! therefore registers its interest with the writer: it sends the writer, over the peer link,
//! a Fetch of those partitions from the offsets it waits at, asking for one byte, and the
//! writer answers as soon as a record is there (or when the wait is over). The waiting kelp
//! then reads the records from the broker itself, so offsets and bytes come from the one
//! place every kelp reads them from.
//!
//! Cost: nothing while no fetch waits. A waiting fetch holds one peer connection per writer
//! it waits on (each client connection waits in one Fetch at a time, so these never outnumber
//! client connections times kelps), and the writer answers it from memory.
//!
//! Owns: the shape of that request (a Fetch v12 with `min_bytes` 1) and how long one such wait
//! may take. Does not own: finding the writer (`writers`), the peer link (`peer`), or reading
//! and waiting locally (`api::fetch`, `seaweed`).

use std::time::Duration;

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{
    ApiKey, BrokerId, FetchRequest, RequestHeader, RequestKind, ResponseKind, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use crate::ctx::Ctx;
use crate::peer::PeerError;

/// The Fetch version a waiting kelp sends a writer: the last one that names topics (v13+ use
/// topic ids, which would make the writer look names up).
const WAIT_VERSION: i16 = 12;

/// Longest one wait at a writer lasts; a client's longer `max_wait_ms` is served by several
/// in a row, so no peer connection is held longer than this without an answer.
pub const MAX_WAIT_AT_WRITER: Duration = Duration::from_secs(5);

/// Client id of the requests a waiting kelp sends (the writer's logs show it).
const CLIENT_ID: &str = "kelp-fetch-wait";

/// One partition to wait on: topic, partition, the offset the client waits at.
pub type Waiting = (String, i32, i64);

/// Ask the kelp at `writer` to answer once any of `parts` has a record at or after its offset,
/// or after `wait` (at most [`MAX_WAIT_AT_WRITER`]). `Ok` when it answered, with or without
/// records: the caller reads what is there itself. `Err` when it did not, or could not wait
/// on one of the partitions: the caller waits by itself.
pub async fn wait_at_writer(
    ctx: &Ctx,
    writer: &str,
    parts: &[Waiting],
    wait: Duration,
) -> Result<(), PeerError> {
    let wait = wait.min(MAX_WAIT_AT_WRITER);
    let mut topics: Vec<FetchTopic> = Vec::new();
    for (topic, partition, offset) in parts {
        let p = FetchPartition::default()
            .with_partition(*partition)
            .with_fetch_offset(*offset)
            .with_current_leader_epoch(-1)
            .with_log_start_offset(-1)
            .with_partition_max_bytes(1);
        match topics.iter_mut().find(|t| t.topic.0.as_str() == topic) {
            Some(t) => t.partitions.push(p),
            None => topics.push(
                FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(topic.clone())))
                    .with_partitions(vec![p]),
            ),
        }
    }
    let req = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(i32::try_from(wait.as_millis()).unwrap_or(i32::MAX))
        .with_min_bytes(1)
        .with_max_bytes(1)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(topics);
    let header = RequestHeader::default()
        .with_request_api_key(ApiKey::Fetch as i16)
        .with_request_api_version(WAIT_VERSION)
        .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
    let timeout = wait + ctx.peers.request_timeout();
    let body = RequestKind::Fetch(req);
    let ResponseKind::Fetch(answer) =
        ctx.peers.call(writer, &header, ApiKey::Fetch, WAIT_VERSION, &body, timeout).await?
    else {
        return Err(PeerError::Protocol("not a Fetch answer".into()));
    };
    // A partition the writer could not read (it does not know the topic yet, say) would
    // answer at once every time: wait here instead.
    let failed = answer.error_code != 0
        || answer.responses.iter().flat_map(|t| &t.partitions).any(|p| p.error_code != 0);
    if failed {
        return Err(PeerError::Protocol("the writer could not wait on every partition".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::versions;

    #[test]
    fn the_wait_request_uses_a_version_kelp_serves() {
        assert!(versions::supported(ApiKey::Fetch).is_some_and(|s| s.contains(WAIT_VERSION)));
    }
}

//! Produce: decode each partition's batches, publish the records to SeaweedFS, answer with
//! the broker-assigned base offset. acks=0 gets no response (the records are still published
//! before the next request on the connection is read).
//!
//! Errors are per partition: one bad partition never fails its neighbours.

use std::sync::Mutex;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;
use tracing::debug;

use crate::ctx::Ctx;
use crate::error::ApiKind;
use crate::producers::{BatchId, Check};
use crate::protocol::legacy_produce as legacy;
use crate::records::batch::Budget;
use crate::records::{BatchError, batch, envelope};

/// The records of one partition, as the request version framed them.
enum Framing {
    V2,
    Legacy,
}

pub async fn handle(ctx: &Ctx, _version: i16, req: ProduceRequest) -> Option<ProduceResponse> {
    // Partitions are independent: publish them all at once. Order within a partition holds
    // because each partition's records go out in one publish, and requests on a connection
    // are handled one after another.
    let mut topics = Vec::with_capacity(req.topic_data.len());
    let mut work = Vec::new();
    for t in req.topic_data {
        // v13+ names topics by id.
        let name = if t.name.0.is_empty() && !t.topic_id.is_nil() {
            ctx.topics.name_of(t.topic_id).await.ok().flatten()
        } else {
            Some(t.name.0.to_string())
        };
        let n = t.partition_data.len();
        for p in t.partition_data {
            work.push((topics.len(), name.clone(), p.index, p.records));
        }
        topics.push((
            TopicProduceResponse::default().with_name(t.name).with_topic_id(t.topic_id),
            Vec::with_capacity(n),
        ));
    }
    // Every partition is decoded before any publish answers, so all of them are held at
    // once: the decompression limit is the request's, not each partition's.
    let budget = Mutex::new(Budget::new(ctx.config.max_uncompressed_bytes as usize));
    let budget = &budget;
    let results =
        futures::future::join_all(work.into_iter().map(|(t, name, index, records)| async move {
            let r = match &name {
                Some(name) => partition(ctx, name, index, records, Framing::V2, budget).await,
                None => Err(ResponseError::UnknownTopicId),
            };
            (t, partition_response(index, r))
        }))
        .await;
    for (t, r) in results {
        topics[t].1.push(r);
    }
    let responses =
        topics.into_iter().map(|(t, parts)| t.with_partition_responses(parts)).collect();
    (req.acks != 0).then(|| ProduceResponse::default().with_responses(responses))
}

/// Produce v0-v2 (message sets v0/v1).
pub async fn handle_legacy(
    ctx: &Ctx,
    _version: i16,
    req: legacy::ProduceRequest,
) -> Option<legacy::ProduceResponse> {
    let mut topics = Vec::with_capacity(req.topics.len());
    let budget = Mutex::new(Budget::new(ctx.config.max_uncompressed_bytes as usize));
    for t in req.topics {
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for (index, records) in t.partitions {
            let r = partition(ctx, &t.name, index, records, Framing::Legacy, &budget).await;
            partitions.push(legacy::PartitionResponse {
                index,
                error_code: r.err().map_or(0, |e| e.code()),
                base_offset: r.unwrap_or(-1),
            });
        }
        topics.push(legacy::TopicResponse { name: t.name, partitions });
    }
    (req.acks != 0).then_some(legacy::ProduceResponse { topics, throttle_time_ms: 0 })
}

fn partition_response(index: i32, r: Result<i64, ResponseError>) -> PartitionProduceResponse {
    let resp = PartitionProduceResponse::default()
        .with_index(index)
        .with_log_append_time_ms(-1)
        .with_log_start_offset(-1);
    match r {
        Ok(base) => resp.with_base_offset(base),
        Err(code) => resp
            .with_base_offset(-1)
            .with_error_code(code.code())
            .with_error_message(Some(StrBytes::from_static_str(message(code)))),
    }
}

fn message(code: ResponseError) -> &'static str {
    match code {
        ResponseError::CorruptMessage => "record batch failed its checksum or could not be parsed",
        ResponseError::MessageTooLarge => "record batch larger than the configured maximum",
        ResponseError::UnsupportedCompressionType => "unknown compression codec",
        ResponseError::UnknownTopicOrPartition => "topic or partition does not exist",
        _ => "",
    }
}

/// One partition's batches (for v0-v2, its message set as one batch), decompressed within
/// what is left of the request's budget. Not async: the lock is never held across an await.
fn decode(
    records: Bytes,
    framing: Framing,
    budget: &Mutex<Budget>,
) -> Result<Vec<batch::Batch>, ResponseError> {
    let mut budget = budget.lock().unwrap_or_else(|e| e.into_inner());
    match framing {
        Framing::V2 => {
            // Produce v3+ may only carry magic-2 batches (as a Kafka broker insists).
            if batch::magic(&records).is_some_and(|m| m != 2) {
                return Err(ResponseError::InvalidRecord);
            }
            batch::decode_all_within(records, &mut budget).map_err(|e| batch_code(&e))
        }
        Framing::Legacy => {
            let records = crate::records::legacy::decode_within(records, &mut budget)
                .map_err(|e| batch_code(&e))?;
            Ok(vec![batch::Batch {
                producer_id: -1,
                producer_epoch: -1,
                base_sequence: -1,
                transactional: false,
                control: false,
                records,
            }])
        }
    }
}

fn batch_code(e: &BatchError) -> ResponseError {
    match e {
        BatchError::Crc | BatchError::Malformed(_) => ResponseError::CorruptMessage,
        BatchError::TooLarge(_) => ResponseError::MessageTooLarge,
        BatchError::UnsupportedCodec(_) => ResponseError::UnsupportedCompressionType,
    }
}

/// Store one partition's records; the base offset on success. Decompression is charged to
/// the request's `budget`.
async fn partition(
    ctx: &Ctx,
    topic: &str,
    index: i32,
    records: Option<Bytes>,
    framing: Framing,
    budget: &Mutex<Budget>,
) -> Result<i64, ResponseError> {
    let count = match ctx.topics.partitions(topic).await {
        Ok(Some(n)) => n,
        Ok(None) => return Err(ResponseError::UnknownTopicOrPartition),
        Err(e) => {
            debug!(error = %e, "topic lookup failed");
            return Err(e.code(ApiKind::Data));
        }
    };
    if index < 0 || index as u32 >= count {
        return Err(ResponseError::UnknownTopicOrPartition);
    }
    let records = records.ok_or(ResponseError::CorruptMessage)?;
    if records.len() > ctx.config.max_message_bytes as usize {
        return Err(ResponseError::MessageTooLarge);
    }
    let batches = decode(records, framing, budget)?;
    if batches.iter().all(|b| b.records.is_empty()) {
        return Err(ResponseError::CorruptMessage);
    }
    let mut base = None;
    for b in batches {
        if b.transactional || b.control {
            return Err(ResponseError::InvalidRecord);
        }
        if b.records.is_empty() {
            continue;
        }
        let idempotent = b.producer_id >= 0 && b.base_sequence >= 0;
        let id = BatchId {
            producer_id: b.producer_id,
            epoch: b.producer_epoch,
            topic,
            partition: index,
            first_seq: b.base_sequence,
        };
        if idempotent {
            match ctx.producers.check(id) {
                Check::Append => {}
                Check::Duplicate(offset) => {
                    base.get_or_insert(offset);
                    continue;
                }
                Check::Reject(code) => return Err(code),
            }
        }
        let n = b.records.len() as i32;
        let messages = b.records.iter().map(envelope::to_message).collect();
        let offsets = ctx.seaweed.publish(topic, index as u32, messages).await.map_err(|e| {
            debug!(error = %e, "publish failed");
            e.code(ApiKind::Data)
        })?;
        crate::metrics::global().records_produced.inc_by(offsets.len() as u64);
        let first = *offsets.first().ok_or(ResponseError::CorruptMessage)?;
        if idempotent {
            ctx.producers.record(id, n, first);
        }
        base.get_or_insert(first);
    }
    Ok(base.expect("at least one non-empty batch was handled"))
}

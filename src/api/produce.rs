//! Produce: decode each partition's batches, publish the records to SeaweedFS, answer with
//! the broker-assigned base offset. acks=0 gets no response (the records are still published
//! before the next request on the connection is read).
//!
//! Only the partition's writer publishes (`writers`): `routing` sends each partition here
//! only when this kelp writes it, and a kelp that does not (it lost the lease meanwhile, or
//! a peer forwarded to it after the lease moved) answers NOT_LEADER_OR_FOLLOWER for that
//! partition and publishes nothing. This handler never forwards.
//!
//! acks=all is answered only once the broker has flushed the partition's records to the filer
//! (unless `KELP_ACKS_ALL_FLUSHED` is off), so they survive a broker restart; the wait is
//! bounded by the request's timeout_ms and `KELP_FLUSH_WAIT_MS` and ends in
//! REQUEST_TIMED_OUT. acks=1 and acks=0 are answered once the broker holds the records.
//!
//! Errors are per partition: one bad partition never fails its neighbours.

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;
use tracing::debug;

use crate::ctx::Ctx;
use crate::error::ApiKind;
use crate::produce_order::Turn as ProduceTurn;
use crate::producers::{BatchId, Check, Turn};
use crate::protocol::legacy_produce as legacy;
use crate::records::{BatchError, batch, envelope};
use crate::session::Session;
use crate::writers::Writing;

use std::collections::HashMap;
use std::time::Duration;

use futures::future::join_all;

/// The records of one partition, as the request version framed them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// Produce v3+ (record batches, magic 2), with the request's version.
    V2(i16),
    Legacy,
}

/// The `acks` Kafka accepts: all in-sync replicas (-1), none (0), the leader (1).
fn valid_acks(acks: i16) -> bool {
    matches!(acks, -1..=1)
}

/// The compression codec number of zstd in a batch's attributes (KIP-110).
const CODEC_ZSTD: i16 = 4;
/// The first Produce version that may carry zstd batches (KIP-110).
const ZSTD_MIN_VERSION: i16 = 7;

/// One partition of a request on its way through: checked, decoded, published.
struct Part {
    /// `None`: the request named the topic by an id kelp does not know.
    topic: Option<String>,
    index: i32,
    records: Option<Bytes>,
}

pub async fn handle(
    ctx: &Ctx,
    session: &mut Session,
    version: i16,
    req: ProduceRequest,
) -> Option<ProduceResponse> {
    if !valid_acks(req.acks) {
        // Kafka appends nothing and answers every partition INVALID_REQUIRED_ACKS
        // (ReplicaManager.appendRecords); acks is not 0, so there is a response.
        let responses = req
            .topic_data
            .into_iter()
            .map(|t| {
                let parts = t
                    .partition_data
                    .iter()
                    .map(|p| partition_response(p.index, Err(ResponseError::InvalidRequiredAcks)))
                    .collect();
                TopicProduceResponse::default()
                    .with_name(t.name)
                    .with_topic_id(t.topic_id)
                    .with_partition_responses(parts)
            })
            .collect();
        return Some(ProduceResponse::default().with_responses(responses));
    }
    let mut topics = Vec::with_capacity(req.topic_data.len());
    let mut parts = Vec::new();
    for t in req.topic_data {
        // v13+ names topics by id.
        let name = if t.name.0.is_empty() && !t.topic_id.is_nil() {
            ctx.topics.name_of(t.topic_id).await.ok().flatten()
        } else {
            Some(t.name.0.to_string())
        };
        let n = t.partition_data.len();
        for p in t.partition_data {
            parts.push(Part { topic: name.clone(), index: p.index, records: p.records });
        }
        topics
            .push((TopicProduceResponse::default().with_name(t.name).with_topic_id(t.topic_id), n));
    }
    let durable = ctx.config.flush_wait(req.acks, req.timeout_ms);
    let results = produce(ctx, parts, Framing::V2(version), durable, session.take_turn()).await;
    if req.acks == 0 {
        close_if_failed(session, results.iter().map(|r| r.error_code));
        return None;
    }
    let mut results = results.into_iter();
    let responses = topics
        .into_iter()
        .map(|(t, n)| {
            let parts = results.by_ref().take(n).collect();
            t.with_partition_responses(parts)
        })
        .collect();
    Some(ProduceResponse::default().with_responses(responses))
}

/// An acks=0 request gets no response, so a failed partition would go unnoticed: Kafka closes
/// the connection instead (KafkaApis.handleProduceRequest), and the client sees the error
/// through the closed connection and refreshes its metadata.
fn close_if_failed(session: &mut Session, codes: impl IntoIterator<Item = i16>) {
    if codes.into_iter().any(|c| c != 0) {
        debug!("an acks=0 produce request failed; closing the connection");
        session.close_after_reply("a failed acks=0 produce request");
    }
}

/// Produce v0-v2 (message sets v0/v1).
pub async fn handle_legacy(
    ctx: &Ctx,
    session: &mut Session,
    _version: i16,
    req: legacy::ProduceRequest,
) -> Option<legacy::ProduceResponse> {
    if !valid_acks(req.acks) {
        let code = ResponseError::InvalidRequiredAcks.code();
        let topics = req
            .topics
            .into_iter()
            .map(|t| legacy::TopicResponse {
                name: t.name,
                partitions: t
                    .partitions
                    .iter()
                    .map(|(index, _)| legacy::PartitionResponse {
                        index: *index,
                        error_code: code,
                        base_offset: -1,
                    })
                    .collect(),
            })
            .collect();
        return Some(legacy::ProduceResponse { topics, throttle_time_ms: 0 });
    }
    let mut shape = Vec::with_capacity(req.topics.len());
    let mut parts = Vec::new();
    for t in req.topics {
        shape.push((t.name.clone(), t.partitions.len()));
        for (index, records) in t.partitions {
            parts.push(Part { topic: Some(t.name.clone()), index, records });
        }
    }
    let durable = ctx.config.flush_wait(req.acks, req.timeout_ms);
    let results = produce(ctx, parts, Framing::Legacy, durable, session.take_turn()).await;
    if req.acks == 0 {
        close_if_failed(session, results.iter().map(|r| r.error_code));
        return None;
    }
    let mut results = results.into_iter();
    let topics = shape
        .into_iter()
        .map(|(name, n)| {
            let partitions = results
                .by_ref()
                .take(n)
                .map(|r| legacy::PartitionResponse {
                    index: r.index,
                    error_code: r.error_code,
                    base_offset: r.base_offset,
                })
                .collect();
            legacy::TopicResponse { name, partitions }
        })
        .collect();
    Some(legacy::ProduceResponse { topics, throttle_time_ms: 0 })
}

/// Every part's answer, in the request's order. Parts are independent: one bad partition
/// never fails its neighbours.
///
/// Checks run first (topic and partition exist, size, no partition twice), then every
/// part's batches are decoded together, off the async runtime and within the request's
/// decompression limit and a share of the process's memory budget. Then, in the request's
/// `turn` among its connection's Produce requests (`produce_order`), every part is checked
/// against its idempotent producers and queued on its partition's stream; the turn passes,
/// and the acknowledgements (and, with `durable`, the flush) are awaited while the
/// connection's next request queues its own. So a connection's requests reach each
/// partition in the order the client sent them.
async fn produce(
    ctx: &Ctx,
    parts: Vec<Part>,
    framing: Framing,
    durable: Option<Duration>,
    turn: Option<ProduceTurn>,
) -> Vec<PartitionProduceResponse> {
    let checks = join_all(parts.iter().map(|p| check(ctx, p))).await;
    let mut results: Vec<Result<i64, ResponseError>> =
        checks.into_iter().map(|c| c.map(|()| -1)).collect();
    for i in repeated(&parts) {
        results[i] = Err(ResponseError::InvalidRequest);
    }
    let to_decode: Vec<(usize, Bytes)> = parts
        .iter()
        .enumerate()
        .filter(|(i, _)| results[*i].is_ok())
        .filter_map(|(i, p)| Some((i, p.records.clone()?)))
        .collect();
    let limit = ctx.config.max_uncompressed_bytes as usize;
    // Only compressed batches expand beyond the frame they arrived in; a request of plain
    // batches needs no share of the memory budget.
    let expands = framing == Framing::Legacy
        || to_decode.iter().any(|(_, records)| batch::any_compressed(records));
    let need = if expands { limit } else { 0 };
    let within = ctx.config.upstream_timeout();
    let Some(mut share) = ctx.memory.take(need, within).await else {
        debug!("no memory share for a produce request in time");
        for (i, _) in &to_decode {
            results[*i] = Err(ResponseError::RequestTimedOut);
        }
        return responses(&parts, results);
    };
    let decoded = match tokio::task::spawn_blocking(move || decode(to_decode, framing, limit)).await
    {
        Ok(decoded) => decoded,
        Err(e) => {
            // A panic in a decoder is a kelp bug; the request fails, the process does not.
            tracing::error!(error = %e, "decoding a produce request failed");
            return responses(&parts, parts.iter().map(|_| Err(E_BUG)).collect());
        }
    };
    share.keep(limit - decoded.budget_left);
    if let Some(turn) = &turn {
        let within = crate::produce_order::wait_limit(ctx);
        if tokio::time::timeout(within, turn.wait()).await.is_err() {
            // An earlier request of the connection is stuck before queueing its records;
            // nothing of this one was published, so the client may safely retry it.
            debug!("an earlier produce request of the connection did not queue in time");
            for (i, _) in &decoded.parts {
                results[*i] = Err(ResponseError::RequestTimedOut);
            }
            return responses(&parts, results);
        }
    }
    // Partitions differ within a request (`repeated`), so they may be queued side by side.
    let queueing = decoded.parts.into_iter().map(|(i, batches)| {
        let p = &parts[i];
        async move {
            let r = match (batches, p.topic.as_deref()) {
                (Ok(batches), Some(topic)) => enqueue(ctx, topic, p.index, batches, durable).await,
                (Err(code), _) => Err(code),
                (Ok(_), None) => Err(ResponseError::UnknownTopicId),
            };
            (i, r)
        }
    });
    let queued = join_all(queueing).await;
    drop(turn);
    let acks = queued.into_iter().map(|(i, r)| async move {
        match r {
            Ok(queued) => (i, queued.offsets(ctx).await),
            Err(code) => (i, Err(code)),
        }
    });
    for (i, r) in join_all(acks).await {
        results[i] = r;
    }
    drop(share);
    responses(&parts, results)
}

/// What a part gets when kelp itself failed (a bug, logged where it happened).
const E_BUG: ResponseError = ResponseError::UnknownServerError;

fn responses(
    parts: &[Part],
    results: Vec<Result<i64, ResponseError>>,
) -> Vec<PartitionProduceResponse> {
    parts.iter().zip(results).map(|(p, r)| partition_response(p.index, r)).collect()
}

/// The parts whose partition the request names more than once: all of them are refused, as
/// no order between them could be right.
fn repeated(parts: &[Part]) -> Vec<usize> {
    let mut seen: HashMap<(&Option<String>, i32), usize> = HashMap::with_capacity(parts.len());
    for p in parts {
        *seen.entry((&p.topic, p.index)).or_default() += 1;
    }
    (0..parts.len()).filter(|i| seen[&(&parts[*i].topic, parts[*i].index)] > 1).collect()
}

/// What can be refused before decoding: the topic, the partition, the size.
async fn check(ctx: &Ctx, p: &Part) -> Result<(), ResponseError> {
    let topic = p.topic.as_deref().ok_or(ResponseError::UnknownTopicId)?;
    let count = match ctx.topics.partitions(topic).await {
        Ok(Some(n)) => n,
        Ok(None) => return Err(ResponseError::UnknownTopicOrPartition),
        Err(e) => {
            debug!(error = %e, "topic lookup failed");
            return Err(e.code(ApiKind::Data));
        }
    };
    if p.index < 0 || p.index as u32 >= count {
        return Err(ResponseError::UnknownTopicOrPartition);
    }
    let records = p.records.as_ref().ok_or(ResponseError::CorruptMessage)?;
    if records.len() > max_message_bytes(ctx, topic).await? {
        return Err(ResponseError::MessageTooLarge);
    }
    Ok(())
}

/// The largest batch `topic` accepts: its `max.message.bytes`, or the broker's
/// (`KELP_MAX_MESSAGE_BYTES`). Also checked by `routing` before records are forwarded to the
/// partition's writer.
pub async fn max_message_bytes(ctx: &Ctx, topic: &str) -> Result<usize, ResponseError> {
    match ctx.topic_configs.cached(topic).await {
        Ok(stored) => {
            Ok(crate::topic_config::max_message_bytes(&stored, ctx.config.max_message_bytes)
                as usize)
        }
        Err(e) => {
            debug!(error = %e, "reading topic configs failed");
            Err(e.code(ApiKind::Data))
        }
    }
}

/// Every part's batches, decoded in request order from one budget of decompressed bytes.
struct Decoded {
    parts: Vec<(usize, Result<Vec<batch::Batch>, ResponseError>)>,
    budget_left: usize,
}

/// Runs on the blocking pool: decompression and CRC checks are CPU work.
fn decode(parts: Vec<(usize, Bytes)>, framing: Framing, limit: usize) -> Decoded {
    let mut budget = limit;
    let parts = parts.into_iter().map(|(i, b)| (i, decode_part(b, framing, &mut budget))).collect();
    Decoded { parts, budget_left: budget }
}

fn decode_part(
    records: Bytes,
    framing: Framing,
    budget: &mut usize,
) -> Result<Vec<batch::Batch>, ResponseError> {
    let batches = match framing {
        Framing::V2(version) => {
            v2_framing(&records, version)?;
            batch::decode_all(records, budget).map_err(|e| batch_code(&e))?
        }
        Framing::Legacy => {
            let records =
                crate::records::legacy::decode(records, budget).map_err(|e| batch_code(&e))?;
            vec![batch::Batch {
                producer_id: -1,
                producer_epoch: -1,
                base_sequence: -1,
                transactional: false,
                control: false,
                records,
            }]
        }
    };
    if batches.iter().all(|b| b.records.is_empty()) {
        return Err(ResponseError::CorruptMessage);
    }
    Ok(batches)
}

/// What Kafka checks of a v3+ partition's records before appending them
/// (ProduceRequest.validateRecords), in its order: there is a batch, it is magic 2, zstd only
/// from v7, and it is the only one. Bytes too short or lengths that do not add up are left to
/// the decoder, which calls them corrupt.
fn v2_framing(records: &[u8], version: i16) -> Result<(), ResponseError> {
    if records.is_empty() {
        return Err(ResponseError::InvalidRecord);
    }
    if batch::magic(records).is_some_and(|m| m != 2) {
        return Err(ResponseError::InvalidRecord);
    }
    let attributes = records.get(21..23).map(|a| i16::from_be_bytes([a[0], a[1]]));
    if version < ZSTD_MIN_VERSION && attributes.is_some_and(|a| a & 0x07 == CODEC_ZSTD) {
        return Err(ResponseError::UnsupportedCompressionType);
    }
    let whole = |b: &[u8]| -> Option<usize> {
        let len = usize::try_from(i32::from_be_bytes(b.get(8..12)?.try_into().ok()?)).ok()?;
        (b.len() > batch::MAGIC_OFFSET && 12 + len <= b.len()).then_some(12 + len)
    };
    match whole(records) {
        Some(first) if whole(&records[first..]).is_some() => Err(ResponseError::InvalidRecord),
        _ => Ok(()),
    }
}

/// The first offset of every partition: kelp deletes nothing (`topic_config` refuses
/// retention), so a partition's log starts at 0, as ListOffsets' earliest offset says.
const LOG_START_OFFSET: i64 = 0;

/// One partition's answer. `log_start_offset` (v5+) is the partition's on success and -1 on
/// an error, as Kafka answers (ProduceResponse.PartitionResponse); `log_append_time_ms` is -1
/// because records keep their CreateTime.
fn partition_response(index: i32, r: Result<i64, ResponseError>) -> PartitionProduceResponse {
    let resp = PartitionProduceResponse::default().with_index(index).with_log_append_time_ms(-1);
    match r {
        Ok(base) => resp.with_base_offset(base).with_log_start_offset(LOG_START_OFFSET),
        Err(code) => resp
            .with_log_start_offset(-1)
            .with_base_offset(-1)
            .with_error_code(code.code())
            .with_error_message(Some(StrBytes::from_static_str(message(code)))),
    }
}

fn message(code: ResponseError) -> &'static str {
    match code {
        ResponseError::CorruptMessage => "record batch failed its checksum or could not be parsed",
        ResponseError::MessageTooLarge => {
            "record batch larger than the topic's max.message.bytes (or the broker's message.max.bytes)"
        }
        ResponseError::UnsupportedCompressionType => "unknown compression codec",
        ResponseError::UnknownTopicOrPartition => "topic or partition does not exist",
        ResponseError::InvalidRequiredAcks => "acks must be -1 (all), 0 (none) or 1 (leader)",
        ResponseError::InvalidRecord => {
            "a partition's records must be exactly one magic-2 batch whose offset range matches its record count"
        }
        _ => "",
    }
}

fn batch_code(e: &BatchError) -> ResponseError {
    match e {
        BatchError::Crc | BatchError::Malformed(_) => ResponseError::CorruptMessage,
        BatchError::TooLarge(_) => ResponseError::MessageTooLarge,
        BatchError::UnsupportedCodec(_) => ResponseError::UnsupportedCompressionType,
        BatchError::Invalid(_) => ResponseError::InvalidRecord,
    }
}

/// One partition's batches, each answered from the producer's memory or queued on the
/// partition's stream.
struct Queued<'a> {
    /// The lease is not let go before the last batch is acknowledged.
    _writing: Writing,
    topic: &'a str,
    index: i32,
    /// With acks=all, how long the answer may wait for the records to be flushed.
    durable: Option<Duration>,
    batches: Vec<QueuedBatch<'a>>,
    /// Why the batch after the last one queued was refused, if one was.
    refused: Option<ResponseError>,
}

enum QueuedBatch<'a> {
    /// Stored (a duplicate answered from the producer's memory, or acknowledged), at these
    /// offsets.
    Stored { base: i64, last: i64 },
    Published {
        queued: Box<crate::seaweed::Queued<'a>>,
        /// An idempotent batch holds its (producer, partition) turn until it is recorded.
        producer: Option<(BatchId<'a>, Turn<'a>)>,
    },
}

/// Queue one partition's decoded batches on its stream, after checking their producers.
/// Nothing is checked or queued unless this kelp writes the partition. Each idempotent batch
/// holds its (producer, partition) turn from its check until its offsets are recorded
/// ([`Queued::offsets`]), so a retry racing it, or the producer's next batch in a later
/// pipelined request, is checked only once it is recorded or the partition marked unsettled.
async fn enqueue<'a>(
    ctx: &'a Ctx,
    topic: &'a str,
    index: i32,
    batches: Vec<batch::Batch>,
    durable: Option<Duration>,
) -> Result<Queued<'a>, ResponseError> {
    let writing = ctx.writers.begin(topic, index)?;
    let mut queued =
        Queued { _writing: writing, topic, index, durable, batches: Vec::new(), refused: None };
    for b in batches {
        if b.transactional || b.control {
            queued.refused = Some(ResponseError::InvalidRecord);
            break;
        }
        if b.records.is_empty() {
            continue;
        }
        let idempotent = b.producer_id >= 0 && b.base_sequence >= 0;
        let n = b.records.len() as i32;
        let id = BatchId {
            producer_id: b.producer_id,
            epoch: b.producer_epoch,
            topic,
            partition: index,
            first_seq: b.base_sequence,
            count: n,
        };
        let producer = if idempotent {
            if queued.holds_turn_of(id.producer_id)
                && let Err(code) = queued.await_published(ctx).await
            {
                // An earlier batch of this producer in the request holds its turn: it is
                // recorded first (rare: clients send one batch per partition and request).
                queued.refused = Some(code);
                break;
            }
            match admit(ctx, id).await {
                Ok(Admitted::Append(turn)) => Some((id, turn)),
                Ok(Admitted::Duplicate(offset)) => {
                    let last = offset.saturating_add(i64::from(n) - 1);
                    queued.batches.push(QueuedBatch::Stored { base: offset, last });
                    continue;
                }
                Err(code) => {
                    queued.refused = Some(code);
                    break;
                }
            }
        } else {
            None
        };
        // An idempotent batch says so in every record, so that a later writer of the
        // partition can recognise a retry of it (`writers`).
        let produced = idempotent.then_some(envelope::Produced {
            producer_id: b.producer_id,
            epoch: b.producer_epoch,
            base_sequence: b.base_sequence,
            count: n,
        });
        let messages =
            b.records.iter().map(|r| envelope::to_message_from(r, produced.as_ref())).collect();
        let q = ctx.seaweed.enqueue(topic, index as u32, messages).await;
        queued.batches.push(QueuedBatch::Published { queued: Box::new(q), producer });
    }
    Ok(queued)
}

/// What [`admit`] decided for an idempotent batch.
enum Admitted<'a> {
    /// Publish it, holding this turn until it is recorded.
    Append(Turn<'a>),
    /// Already stored (and not lost since) from this offset: publish nothing.
    Duplicate(i64),
}

/// Take the batch's (producer, partition) turn, read the partition's tail back when a publish
/// of unknown outcome left it unsettled, and check the batch's sequence.
async fn admit<'a>(ctx: &'a Ctx, id: BatchId<'_>) -> Result<Admitted<'a>, ResponseError> {
    let producers = ctx.writers.producers();
    let (topic, index) = (id.topic, id.partition);
    // Check, publish and record are one step per (producer, partition): a retry racing its
    // original waits here, then finds it stored.
    let within = ctx.config.upstream_timeout();
    let turn = producers.turn(id, within).await.ok_or(ResponseError::RequestTimedOut)?;
    if producers.unsettled(topic, index).is_some() {
        ctx.writers.settle(topic, index, within).await?;
    }
    match producers.check(id) {
        Check::Append => {}
        Check::Duplicate(offset) => {
            let lost = ctx.seaweed.was_lost(topic, index as u32, offset).await;
            if !lost.map_err(|e| e.code(ApiKind::Data))? {
                return Ok(Admitted::Duplicate(offset));
            }
            // The broker lost the first attempt after acknowledging it (a crash before its
            // flush): store the batch again. The partition's producer state points at lost
            // offsets, so it starts over.
            debug!(offset, "retried batch was lost by the broker; storing it again");
            producers.forget_partition(topic, index);
        }
        Check::Reject(code) => return Err(code),
    }
    Ok(Admitted::Append(turn))
}

impl<'a> Queued<'a> {
    /// Whether a batch of `producer_id` queued here still holds its turn.
    fn holds_turn_of(&self, producer_id: i64) -> bool {
        self.batches.iter().any(|b| {
            matches!(b, QueuedBatch::Published { producer: Some((id, _)), .. }
                if id.producer_id == producer_id)
        })
    }

    /// Wait for every batch queued so far, in order, recording idempotent ones. On a failure,
    /// every idempotent batch not known stored leaves the partition unsettled (it may be
    /// stored all the same), and the batches after it are given up.
    async fn await_published(&mut self, ctx: &'a Ctx) -> Result<(), ResponseError> {
        let producers = ctx.writers.producers();
        let (topic, index) = (self.topic, self.index);
        let mut batches = std::mem::take(&mut self.batches).into_iter();
        let mut failed = None;
        for b in batches.by_ref() {
            let (queued, producer) = match b {
                QueuedBatch::Published { queued, producer } => (queued, producer),
                stored => {
                    self.batches.push(stored);
                    continue;
                }
            };
            let offsets = match queued.offsets().await {
                Ok(offsets) if !offsets.is_empty() => offsets,
                Ok(_) => {
                    failed = Some(ResponseError::CorruptMessage);
                    break;
                }
                Err(e) => {
                    debug!(error = %e, "publish failed");
                    if producer.is_some() {
                        // It may be stored all the same (it timed out after reaching the
                        // broker): the retry is checked against the partition's tail, read
                        // back first.
                        producers.unsettle(topic, index);
                    }
                    failed = Some(e.code(ApiKind::Data));
                    break;
                }
            };
            crate::metrics::global().records_produced.inc_by(offsets.len() as u64);
            let first = offsets[0];
            let last = offsets.iter().copied().max().unwrap_or(first);
            if let Some((id, turn)) = producer {
                producers.record(id, first);
                drop(turn);
            }
            self.batches.push(QueuedBatch::Stored { base: first, last });
        }
        for b in batches {
            if let QueuedBatch::Published { producer: Some(_), .. } = b {
                // Given up while queued: it may still reach the broker.
                producers.unsettle(topic, index);
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// The base offset once every queued batch is acknowledged, in order (and, with acks=all,
    /// flushed).
    async fn offsets(mut self, ctx: &'a Ctx) -> Result<i64, ResponseError> {
        self.await_published(ctx).await?;
        if let Some(code) = self.refused {
            return Err(code);
        }
        let (mut base, mut last) = (None, -1i64);
        for b in &self.batches {
            if let QueuedBatch::Stored { base: first, last: end } = b {
                base.get_or_insert(*first);
                last = last.max(*end);
            }
        }
        let base = base.expect("at least one non-empty batch was handled");
        if let Some(within) = self.durable {
            let started = std::time::Instant::now();
            let flushed =
                ctx.seaweed.wait_flushed(self.topic, self.index as u32, last, within).await;
            crate::metrics::global().flush_wait.observe(started.elapsed().as_secs_f64());
            flushed.map_err(|e| {
                debug!(error = %e, last, "records not flushed in time");
                e.code(ApiKind::Data)
            })?;
        }
        Ok(base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch_bytes(compression: kafka_protocol::records::Compression) -> Vec<u8> {
        use kafka_protocol::records::{
            Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
        };
        let r = Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: 0,
            sequence: -1,
            timestamp: 1,
            key: None,
            value: Some(Bytes::from_static(b"v")),
            headers: Default::default(),
        };
        let mut buf = bytes::BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            [&r],
            &RecordEncodeOptions { version: 2, compression },
        )
        .unwrap();
        buf.to_vec()
    }

    #[test]
    fn only_kafkas_three_acks_are_valid() {
        assert!([-1, 0, 1].into_iter().all(valid_acks));
        assert!(![-2, 2, 3, i16::MAX, i16::MIN].into_iter().any(valid_acks));
    }

    #[test]
    fn a_v3_partition_carries_exactly_one_magic_2_batch() {
        use kafka_protocol::records::Compression;
        let one = batch_bytes(Compression::None);
        assert_eq!(v2_framing(&one, 3), Ok(()));
        assert_eq!(v2_framing(&[], 9), Err(ResponseError::InvalidRecord));
        let two = [one.clone(), one.clone()].concat();
        assert_eq!(v2_framing(&two, 9), Err(ResponseError::InvalidRecord));
        // A short tail is no second batch: the decoder calls it corrupt.
        assert_eq!(v2_framing(&[one.clone(), vec![0; 5]].concat(), 9), Ok(()));
        let mut old = one.clone();
        old[batch::MAGIC_OFFSET] = 1;
        assert_eq!(v2_framing(&old, 9), Err(ResponseError::InvalidRecord));
    }

    #[test]
    fn zstd_needs_produce_v7() {
        let zstd = batch_bytes(kafka_protocol::records::Compression::Zstd);
        assert_eq!(v2_framing(&zstd, 6), Err(ResponseError::UnsupportedCompressionType));
        assert_eq!(v2_framing(&zstd, 7), Ok(()));
        let gzip = batch_bytes(kafka_protocol::records::Compression::Gzip);
        assert_eq!(v2_framing(&gzip, 3), Ok(()));
    }
}

//! Fetch: read each partition from SeaweedFS and re-encode the records as one uncompressed
//! Kafka batch per partition (v4+), or as an uncompressed message set for v0-v3: magic 0
//! (no timestamps) for v0-v1, magic 1 for v2-v3. Message sets have no headers.
//!
//! Waiting (max_wait_ms / min_bytes): a first pass reads every partition without waiting. If
//! that is not enough, every partition long-polls the broker at once and the first one that
//! gets data ends the wait; the others answer empty and are read by the client's next Fetch.
//! Size: `partition_max_bytes` bounds each partition and `max_bytes` the whole response,
//! except that the first record is always returned so a large record cannot stall a consumer.

use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures::stream::{FuturesOrdered, FuturesUnordered, StreamExt};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse, TopicName};
use uuid::Uuid;

use crate::ctx::Ctx;
use crate::error::ApiKind;
use crate::records::{Record, batch, envelope, legacy};
use crate::seaweed::Fetched;

/// One partition the client asked for, resolved to a topic name.
struct Want {
    topic: Option<String>,
    partition: i32,
    offset: i64,
    max_bytes: i32,
}

/// What one partition read produced.
struct Got {
    code: Option<ResponseError>,
    high_watermark: i64,
    log_start: i64,
    records: Vec<(i64, Record)>,
    bytes: usize,
}

impl Got {
    fn error(code: ResponseError) -> Got {
        Got { code: Some(code), high_watermark: -1, log_start: -1, records: Vec::new(), bytes: 0 }
    }
}

pub async fn handle(ctx: &Ctx, version: i16, req: FetchRequest) -> FetchResponse {
    let started = Instant::now();
    let max_wait = Duration::from_millis(req.max_wait_ms.max(0) as u64);
    let mut topics: Vec<(TopicName, Uuid, Vec<usize>)> = Vec::new();
    let mut wants = Vec::new();
    for t in req.topics {
        let topic = if version >= 13 {
            ctx.topics.name_of(t.topic_id).await.ok().flatten()
        } else {
            Some(t.topic.0.to_string())
        };
        let mut idx = Vec::new();
        for p in t.partitions {
            idx.push(wants.len());
            wants.push(Want {
                topic: topic.clone(),
                partition: p.partition,
                offset: p.fetch_offset,
                max_bytes: p.partition_max_bytes,
            });
        }
        topics.push((t.topic, t.topic_id, idx));
    }

    let budget = req.max_bytes.max(0) as usize;
    let mut got = first_pass(ctx, &wants, budget).await;
    let enough =
        |got: &[Got]| got.iter().map(|g| g.bytes).sum::<usize>() >= req.min_bytes.max(1) as usize;
    let any_error = |got: &[Got]| got.iter().any(|g| g.code.is_some());
    if !enough(&got) && !any_error(&got) && !max_wait.is_zero() {
        let remaining = max_wait.saturating_sub(started.elapsed());
        // Each poll may bring up to its partition's cap; the first with data ends the wait and
        // drops the others, so one poll's worth is what this pass adds.
        let cap = budget.max(1);
        let mut polls: FuturesUnordered<_> = wants
            .iter()
            .enumerate()
            .filter(|(i, _)| got[*i].records.is_empty() && got[*i].code.is_none())
            .map(|(i, w)| async move { (i, read(ctx, w, cap, remaining).await) })
            .collect();
        while let Some((i, g)) = polls.next().await {
            let has_data = !g.records.is_empty() || g.code.is_some();
            got[i] = g;
            if has_data {
                break;
            }
        }
    }

    // Apply the response-wide byte budget in request order.
    let mut budget = budget;
    let mut first = true;
    for g in got.iter_mut() {
        let (mut keep, mut kept_bytes) = (0, 0);
        for (_, r) in &g.records {
            let size = record_size(r);
            if size > budget && !first {
                break;
            }
            budget = budget.saturating_sub(size);
            (keep, kept_bytes) = (keep + 1, kept_bytes + size);
            first = false;
        }
        g.records.truncate(keep);
        g.bytes = kept_bytes;
    }

    // What the response holds counts against the process's memory budget until it is
    // encoded; without a share in time the client gets the offsets and fetches again.
    let held: usize = got.iter().map(|g| g.bytes).sum();
    let _share = match ctx.memory.take(held, MEMORY_WAIT).await {
        Some(share) => Some(share),
        None => {
            tracing::debug!(held, "no memory share for a fetch response; answering empty");
            got.iter_mut().for_each(|g| {
                g.records.clear();
                g.bytes = 0;
            });
            None
        }
    };
    let mut got: Vec<Option<Got>> = got.into_iter().map(Some).collect();
    let responses = topics
        .into_iter()
        .map(|(name, id, idx)| {
            let partitions = idx
                .into_iter()
                .map(|i| {
                    partition_data(
                        version,
                        wants[i].partition,
                        got[i].take().expect("each partition answered once"),
                    )
                })
                .collect();
            FetchableTopicResponse::default()
                .with_topic(name)
                .with_topic_id(id)
                .with_partitions(partitions)
        })
        .collect();
    FetchResponse::default().with_responses(responses)
}

fn partition_data(version: i16, partition: i32, g: Got) -> PartitionData {
    crate::metrics::global().records_fetched.inc_by(g.records.len() as u64);
    let records = if version >= 4 {
        // Sized up front (`record_size` counts per-record framing too) so encoding does not
        // regrow.
        let size: usize = g.records.iter().map(|(_, r)| record_size(r)).sum();
        let mut records = BytesMut::with_capacity(batch::HEADER_LEN + size);
        batch::encode(&mut records, &g.records);
        records
    } else {
        let magic = if version >= 2 { 1 } else { 0 };
        let mut records = BytesMut::with_capacity(legacy::set_len(&g.records, magic));
        legacy::encode_set(&mut records, &g.records, magic);
        records
    };
    PartitionData::default()
        .with_partition_index(partition)
        .with_error_code(g.code.map_or(0, |c| c.code()))
        .with_high_watermark(g.high_watermark)
        .with_last_stable_offset(g.high_watermark)
        .with_log_start_offset(g.log_start)
        .with_aborted_transactions(Some(Vec::new()))
        .with_preferred_read_replica(kafka_protocol::messages::BrokerId(-1))
        .with_records(Some(records.freeze()))
}

fn record_size(r: &Record) -> usize {
    let h: usize =
        r.headers.iter().map(|(k, v)| k.len() + v.as_ref().map_or(0, |v| v.len()) + 4).sum();
    r.key.as_ref().map_or(0, |k| k.len()) + r.value.as_ref().map_or(0, |v| v.len()) + h + 16
}

/// How long a fetch response waits for its share of the memory budget before it answers
/// without records (short: the records are already read; the client just asks again).
const MEMORY_WAIT: Duration = Duration::from_millis(100);

/// Partitions read at once by the first pass. Each read is capped by what the response may
/// still hold when it starts, so a request holds at most its `max_bytes` plus this many
/// partitions' caps, however many partitions it names.
const READ_WINDOW: usize = 8;

/// Read every partition without waiting, in request order, [`READ_WINDOW`] at a time, each
/// capped by its `partition_max_bytes` and by what is left of the response's `max_bytes`
/// (the first partition always gets at least one record). Partitions past the budget are
/// not read: they answer their offsets and no records.
async fn first_pass(ctx: &Ctx, wants: &[Want], budget: usize) -> Vec<Got> {
    let mut reading = FuturesOrdered::new();
    let mut out = Vec::with_capacity(wants.len());
    let (mut used, mut next) = (0usize, 0);
    while out.len() < wants.len() {
        while next < wants.len() && reading.len() < READ_WINDOW {
            let left = budget.saturating_sub(used);
            reading.push_back(read_within(ctx, &wants[next], next == 0, left));
            next += 1;
        }
        if let Some(got) = reading.next().await {
            used += got.bytes;
            out.push(got);
        }
    }
    out
}

async fn read_within(ctx: &Ctx, w: &Want, first: bool, left: usize) -> Got {
    if left == 0 && !first {
        offsets_only(ctx, w).await
    } else {
        read(ctx, w, left.max(1), Duration::ZERO).await
    }
}

/// A partition the response has no room for: its offsets, so the client still sees them.
async fn offsets_only(ctx: &Ctx, w: &Want) -> Got {
    let topic = match known(ctx, w).await {
        Ok(topic) => topic,
        Err(code) => return Got::error(code),
    };
    match ctx.seaweed.offset_range(topic, w.partition as u32).await {
        Ok((log_start, high_watermark)) => {
            Got { code: None, high_watermark, log_start, records: Vec::new(), bytes: 0 }
        }
        Err(e) => Got::error(e.code(ApiKind::Data)),
    }
}

/// The partition's topic, once it is known to exist with that partition.
async fn known<'w>(ctx: &Ctx, w: &'w Want) -> Result<&'w str, ResponseError> {
    let Some(topic) = &w.topic else {
        return Err(ResponseError::UnknownTopicId);
    };
    match ctx.topics.partitions(topic).await {
        Ok(Some(n)) if w.partition >= 0 && (w.partition as u32) < n => Ok(topic),
        Ok(_) => Err(ResponseError::UnknownTopicOrPartition),
        Err(e) => Err(e.code(ApiKind::Data)),
    }
}

/// Read one partition, at most `cap` bytes (and its `partition_max_bytes`), waiting up to
/// `wait` for data.
async fn read(ctx: &Ctx, w: &Want, cap: usize, wait: Duration) -> Got {
    let topic = match known(ctx, w).await {
        Ok(topic) => topic,
        Err(code) => return Got::error(code),
    };
    let cap = i32::try_from(cap).unwrap_or(i32::MAX);
    let max_bytes = w.max_bytes.min(cap).max(1);
    let fetched = ctx.seaweed.fetch(topic, w.partition as u32, w.offset, max_bytes, wait, 1).await;
    match fetched {
        Ok(Fetched { messages, high_water_mark, log_start_offset }) => {
            if w.offset > high_water_mark || w.offset < log_start_offset {
                return Got {
                    code: Some(ResponseError::OffsetOutOfRange),
                    high_watermark: high_water_mark,
                    log_start: log_start_offset,
                    records: Vec::new(),
                    bytes: 0,
                };
            }
            let records: Vec<(i64, Record)> = messages
                .iter()
                .filter(|(o, _)| *o >= w.offset)
                .map(|(o, m)| (*o, envelope::from_message(m)))
                .collect();
            let bytes = records.iter().map(|(_, r)| record_size(r)).sum();
            Got {
                code: None,
                high_watermark: high_water_mark,
                log_start: log_start_offset,
                records,
                bytes,
            }
        }
        Err(e) => {
            tracing::debug!(error = %e, "fetch failed");
            Got::error(e.code(ApiKind::Data))
        }
    }
}

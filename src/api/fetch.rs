//! Fetch: read each partition from SeaweedFS and re-encode the records as one uncompressed
//! Kafka batch per partition (v4+), or as an uncompressed message set for v0-v3: magic 0
//! (no timestamps) for v0-v1, magic 1 for v2-v3. Message sets have no headers.
//!
//! Waiting (max_wait_ms / min_bytes): a first pass reads every partition without waiting.
//! `min_bytes` 0 answers with that. Otherwise, while the response holds fewer than
//! `min_bytes` bytes and `max_wait_ms` has not passed, every partition waits for records at
//! once: a partition written here (or by nobody) waits in `seaweed` (woken by this kelp's own
//! publishes, polling the broker otherwise); the partitions written by another kelp wait at
//! that writer, which sees every record of them the moment it is acknowledged (`tail`), and
//! are then read here. Records that arrive are added to their partition and its wait starts
//! again from the next offset.
//! Size: `partition_max_bytes` bounds each partition and `max_bytes` the whole response,
//! except that the first record is always returned so a large record cannot stall a consumer.

use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures::future::BoxFuture;
use futures::stream::{FuturesOrdered, FuturesUnordered, StreamExt};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse, TopicName};
use uuid::Uuid;

use crate::ctx::Ctx;
use crate::error::ApiKind;
use crate::lease::Route;
use crate::memory::Share;
use crate::records::{Record, batch, envelope, legacy};
use crate::seaweed::Fetched;
use crate::tail;

/// One partition the client asked for, resolved to a topic name.
#[derive(Clone)]
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

/// `from_peer`: the request is another kelp waiting on partitions this kelp writes (`tail`);
/// it is answered here, never sent on to a writer again.
pub async fn handle(ctx: &Ctx, version: i16, req: FetchRequest, from_peer: bool) -> FetchResponse {
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

    // The records read count against the process's memory budget from before they are read
    // until the response is encoded: the share is taken first and bounds what the first pass
    // reads; without a share in time the client gets the offsets and fetches again.
    let asked: usize = wants.iter().map(|w| w.max_bytes.max(0) as usize).sum();
    let mut share = ctx.memory.take(asked.min(req.max_bytes.max(0) as usize), MEMORY_WAIT).await;
    if share.is_none() {
        tracing::debug!(asked, "no memory share for a fetch; answering without records");
    }
    let budget = share.as_ref().map_or(0, Share::bytes);
    let mut got = first_pass(ctx, &wants, budget).await;
    // A fetch that waits does not hold more of the budget than it read: records that arrive
    // while it waits are few, and bounded by `budget` all the same.
    if let Some(share) = share.as_mut() {
        share.keep(got.iter().map(|g| g.bytes).sum());
    }
    // min_bytes 0 answers at once with what there is; otherwise wait for that many bytes.
    let need = req.min_bytes.max(0) as usize;
    if need > 0 && !max_wait.is_zero() {
        let deadline = started + max_wait;
        wait_for_more(ctx, &wants, &mut got, need, budget, deadline, from_peer).await;
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

    // The share shrinks to what the response holds.
    let held: usize = got.iter().map(|g| g.bytes).sum();
    match share.as_mut() {
        Some(share) => share.keep(held),
        None => got.iter_mut().for_each(|g| {
            g.records.clear();
            g.bytes = 0;
        }),
    }
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

/// What one wait brought: records (or an error) per partition index, and the partitions whose
/// writer could not be waited at, to wait on here instead.
type Waited = (Vec<(usize, Got)>, Vec<usize>);

/// Wait until the partitions hold `need` bytes in all, an error comes, or `deadline`.
async fn wait_for_more(
    ctx: &Ctx,
    wants: &[Want],
    got: &mut [Got],
    need: usize,
    budget: usize,
    deadline: Instant,
    from_peer: bool,
) {
    let have = |got: &[Got]| got.iter().map(|g| g.bytes).sum::<usize>();
    if have(got) >= need || got.iter().any(|g| g.code.is_some()) {
        return;
    }
    // Each wait may bring up to what the response still has room for.
    let cap = |got: &[Got]| budget.saturating_sub(have(got)).max(1);
    let mut waits: FuturesUnordered<BoxFuture<'_, Waited>> = FuturesUnordered::new();
    let all: Vec<usize> = (0..wants.len()).filter(|i| wants[*i].topic.is_some()).collect();
    arm(ctx, wants, got, &all, cap(got), deadline, from_peer, &mut waits).await;
    while let Some((answered, stuck)) = waits.next().await {
        let mut again = Vec::new();
        for (i, g) in answered {
            // A partition whose read failed is not waited on again (it would fail at once).
            let failed = g.code.is_some();
            merge(&mut got[i], g);
            if !failed {
                again.push(i);
            }
        }
        if have(got) >= need || got.iter().any(|g| g.code.is_some() && g.records.is_empty()) {
            break;
        }
        if Instant::now() >= deadline {
            break;
        }
        for i in stuck {
            waits.push(Box::pin(wait_here(
                ctx,
                next_want(&wants[i], &got[i]),
                i,
                cap(got),
                deadline,
            )));
        }
        arm(ctx, wants, got, &again, cap(got), deadline, from_peer, &mut waits).await;
    }
}

/// Start waiting on partitions `idx`: here, or at their writer (one wait per writer).
#[allow(clippy::too_many_arguments)]
async fn arm<'a>(
    ctx: &'a Ctx,
    wants: &[Want],
    got: &[Got],
    idx: &[usize],
    cap: usize,
    deadline: Instant,
    from_peer: bool,
    waits: &mut FuturesUnordered<BoxFuture<'a, Waited>>,
) {
    let mut elsewhere: Vec<(String, Vec<(usize, Want)>)> = Vec::new();
    for &i in idx {
        let want = next_want(&wants[i], &got[i]);
        let writer = match (&want.topic, from_peer) {
            (Some(topic), false) => ctx.writers.writer(topic, want.partition).await,
            _ => None,
        };
        match writer {
            Some(Route::Remote(peer)) => match elsewhere.iter_mut().find(|(p, _)| *p == peer) {
                Some((_, list)) => list.push((i, want)),
                None => elsewhere.push((peer, vec![(i, want)])),
            },
            _ => waits.push(Box::pin(wait_here(ctx, want, i, cap, deadline))),
        }
    }
    for (peer, list) in elsewhere {
        waits.push(Box::pin(wait_at_writer(ctx, peer, list, cap, deadline)));
    }
}

/// The partition as it is to be read next: from after the records it already has.
fn next_want(w: &Want, g: &Got) -> Want {
    let offset = g.records.last().map_or(w.offset, |(o, _)| o + 1);
    Want { offset, ..w.clone() }
}

/// Add what a wait brought to what a partition has. An error after records is dropped: the
/// client gets the records and meets the error on its next Fetch.
fn merge(into: &mut Got, g: Got) {
    if g.code.is_some() {
        if into.records.is_empty() {
            *into = g;
        }
        return;
    }
    into.records.extend(g.records);
    into.bytes += g.bytes;
    into.high_watermark = g.high_watermark;
    into.log_start = g.log_start;
}

async fn wait_here(ctx: &Ctx, w: Want, i: usize, cap: usize, deadline: Instant) -> Waited {
    // Where this kelp writes the partition, its own publishes wake the wait for every record.
    let as_writer = match (&w.topic, ctx.writers.is_shared()) {
        (Some(topic), true) => {
            matches!(ctx.writers.writer(topic, w.partition).await, Some(Route::Local))
        }
        _ => false,
    };
    let wait = deadline.saturating_duration_since(Instant::now());
    (vec![(i, read_as(ctx, &w, cap, wait, as_writer).await)], Vec::new())
}

/// Wait at the kelp that writes these partitions, then read them here.
async fn wait_at_writer(
    ctx: &Ctx,
    writer: String,
    list: Vec<(usize, Want)>,
    cap: usize,
    deadline: Instant,
) -> Waited {
    let parts: Vec<tail::Waiting> = list
        .iter()
        .filter_map(|(_, w)| w.topic.clone().map(|t| (t, w.partition, w.offset)))
        .collect();
    let wait = deadline.saturating_duration_since(Instant::now());
    if let Err(e) = tail::wait_at_writer(ctx, &writer, &parts, wait).await {
        tracing::debug!(writer, error = %e, "waiting at the partitions' writer failed");
        for (topic, partition, _) in &parts {
            ctx.writers.forget_writer(topic, *partition);
        }
        return (Vec::new(), list.into_iter().map(|(i, _)| i).collect());
    }
    let mut answered = Vec::with_capacity(list.len());
    for (i, w) in list {
        answered.push((i, read(ctx, &w, cap, Duration::ZERO).await));
    }
    (answered, Vec::new())
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
    read_as(ctx, w, cap, wait, false).await
}

/// [`read`]; `as_writer` when this kelp writes the partition (`Seaweed::fetch_as_writer`).
async fn read_as(ctx: &Ctx, w: &Want, cap: usize, wait: Duration, as_writer: bool) -> Got {
    let topic = match known(ctx, w).await {
        Ok(topic) => topic,
        Err(code) => return Got::error(code),
    };
    let cap = i32::try_from(cap).unwrap_or(i32::MAX);
    let max_bytes = w.max_bytes.min(cap).max(1);
    let p = w.partition as u32;
    let fetched = if as_writer {
        ctx.seaweed.fetch_as_writer(topic, p, w.offset, max_bytes, wait, 1).await
    } else {
        ctx.seaweed.fetch(topic, p, w.offset, max_bytes, wait, 1).await
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    fn got(offsets: &[i64], hwm: i64) -> Got {
        let records: Vec<(i64, Record)> = offsets
            .iter()
            .map(|o| {
                let r = Record {
                    timestamp_ms: -1,
                    key: None,
                    value: Some(bytes::Bytes::from_static(b"v")),
                    headers: Vec::new(),
                };
                (*o, r)
            })
            .collect();
        let bytes = records.iter().map(|(_, r)| record_size(r)).sum();
        Got { code: None, high_watermark: hwm, log_start: 0, records, bytes }
    }

    #[test]
    fn waits_add_records_after_the_ones_a_partition_has() {
        let want = Want { topic: Some("t".into()), partition: 0, offset: 5, max_bytes: 1 << 20 };
        let mut have = got(&[], 5);
        assert_eq!(next_want(&want, &have).offset, 5);
        merge(&mut have, got(&[5, 6], 7));
        assert_eq!(next_want(&want, &have).offset, 7);
        merge(&mut have, got(&[7], 8));
        assert_eq!(have.records.iter().map(|(o, _)| *o).collect::<Vec<_>>(), vec![5, 6, 7]);
        assert_eq!((have.high_watermark, have.bytes), (8, 3 * (1 + 16)));
        // An error after records keeps the records; on an empty partition it is the answer.
        merge(&mut have, Got::error(ResponseError::NotLeaderOrFollower));
        assert_eq!((have.code, have.records.len()), (None, 3));
        let mut empty = got(&[], 5);
        merge(&mut empty, Got::error(ResponseError::NotLeaderOrFollower));
        assert_eq!(empty.code, Some(ResponseError::NotLeaderOrFollower));
    }
}

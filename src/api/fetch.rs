//! Fetch: read each partition from SeaweedFS and re-encode the records as one uncompressed
//! Kafka batch per partition.
//!
//! Waiting (max_wait_ms / min_bytes): a first pass reads every partition without waiting. If
//! that is not enough, every partition long-polls the broker at once and the first one that
//! gets data ends the wait; the others answer empty and are read by the client's next Fetch.
//! Size: `partition_max_bytes` bounds each partition and `max_bytes` the whole response,
//! except that the first record is always returned so a large record cannot stall a consumer.

use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures::future::join_all;
use futures::stream::{FuturesUnordered, StreamExt};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse, TopicName};
use uuid::Uuid;

use crate::ctx::Ctx;
use crate::error::ApiKind;
use crate::records::{Record, batch, envelope};
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

    let mut got: Vec<Got> = join_all(wants.iter().map(|w| read(ctx, w, Duration::ZERO))).await;
    let enough =
        |got: &[Got]| got.iter().map(|g| g.bytes).sum::<usize>() >= req.min_bytes.max(1) as usize;
    let any_error = |got: &[Got]| got.iter().any(|g| g.code.is_some());
    if !enough(&got) && !any_error(&got) && !max_wait.is_zero() {
        let remaining = max_wait.saturating_sub(started.elapsed());
        let mut polls: FuturesUnordered<_> = wants
            .iter()
            .enumerate()
            .filter(|(i, _)| got[*i].records.is_empty())
            .map(|(i, w)| async move { (i, read(ctx, w, remaining).await) })
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
    let mut budget = req.max_bytes.max(0) as usize;
    let mut first = true;
    for g in got.iter_mut() {
        let mut keep = 0;
        for (_, r) in &g.records {
            let size = record_size(r);
            if size > budget && !first {
                break;
            }
            budget = budget.saturating_sub(size);
            keep += 1;
            first = false;
        }
        g.records.truncate(keep);
    }

    let mut got: Vec<Option<Got>> = got.into_iter().map(Some).collect();
    let responses = topics
        .into_iter()
        .map(|(name, id, idx)| {
            let partitions = idx
                .into_iter()
                .map(|i| {
                    partition_data(
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

fn partition_data(partition: i32, g: Got) -> PartitionData {
    crate::metrics::global().records_fetched.inc_by(g.records.len() as u64);
    // Sized up front (`record_size` counts per-record framing too) so encoding does not regrow.
    let size: usize = g.records.iter().map(|(_, r)| record_size(r)).sum();
    let mut records = BytesMut::with_capacity(batch::HEADER_LEN + size);
    batch::encode(&mut records, &g.records);
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

async fn read(ctx: &Ctx, w: &Want, wait: Duration) -> Got {
    let Some(topic) = &w.topic else {
        return Got::error(ResponseError::UnknownTopicId);
    };
    match ctx.topics.partitions(topic).await {
        Ok(Some(n)) if w.partition >= 0 && (w.partition as u32) < n => {}
        Ok(_) => return Got::error(ResponseError::UnknownTopicOrPartition),
        Err(e) => return Got::error(e.code(ApiKind::Data)),
    }
    let max_bytes = w.max_bytes.max(1);
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

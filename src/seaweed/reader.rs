//! The read side of a partition: fetching records (the broker does not long-poll, so this
//! polls, waking early for records published through this kelp), offset ranges, and the shift between broker offsets and Kafka offsets that kelp's
//! partition markers cause.
//!
//! Owns: the fetch loop, `GetPartitionRangeInfo`, and finding where a partition's data starts
//! after the markers (cached on the topic's layout). Everything it returns is in Kafka offsets.
//!
//! Does not own: which broker leads a partition or when a layout is outdated (`catalog`, which
//! this module tells about errors), or writing the markers (`publisher`).

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::ResponseError;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::catalog::{Catalog, Layout, Slot};
use super::pb::messaging_pb::{
    FetchMessageRequest, FetchMessageResponse, GetPartitionRangeInfoRequest,
};
use super::rpc::{BrokerClient, Failure, call, request};
use super::{Fetched, Message, layout};
use crate::error::Error;

/// Fetch polling while waiting for records (the broker does not long-poll, see
/// `Seaweed::fetch`): first retry after `POLL_MIN`, doubling up to `POLL_MAX`. Publishes
/// through this kelp wake waiting fetches at once.
const POLL_MIN: Duration = Duration::from_millis(10);
pub(super) const POLL_MAX: Duration = Duration::from_millis(100);

/// `POLL_MAX` of a fetch on the kelp that writes the partition: every record of it is
/// published here and wakes the fetch, so the broker is asked again only as a backstop (the
/// lease could move mid-wait).
pub(super) const POLL_BACKSTOP: Duration = Duration::from_secs(1);

/// Quick retries when the broker returns nothing below its high-water mark.
const MAX_STALLS: u32 = 5;

/// Most records the broker returns per `FetchMessage` (its own cap).
const FETCH_MAX_MESSAGES: i32 = 10_000;

/// Bytes asked for when reading the head of a partition to look for kelp's markers: enough
/// for the first marker (its value is [`layout::PARTITION_MARKER`]).
const HEAD_READ_BYTES: i32 = 1024;

/// `FetchMessage` error codes (broker_grpc_fetch.go): the partition could not be loaded, or
/// reading at the offset failed (too old, or a disk read error).
const FETCH_PARTITION_NOT_FOUND: i32 = 1;

/// What one fetch asks for, in Kafka offsets.
pub(super) struct Want {
    pub(super) offset: i64,
    pub(super) max_bytes: i32,
    pub(super) max_wait: Duration,
    pub(super) min_bytes: i32,
    /// Longest pause between two reads while waiting (`POLL_MAX`, or `POLL_BACKSTOP`).
    pub(super) poll_max: Duration,
}

/// Records of one partition from `want.offset` on; see `Seaweed::fetch`. `wake` is notified
/// when records of this partition were acknowledged in this process.
pub(super) async fn fetch(
    catalog: &Catalog,
    topic: &str,
    partition: u32,
    want: Want,
    wake: Arc<Notify>,
) -> Result<Fetched, Error> {
    if want.offset < 0 {
        return Err(Error::Kafka(ResponseError::OffsetOutOfRange));
    }
    // Kafka offsets are broker offsets minus the partition's markers. While the partition
    // is empty the shift is 0 and the only valid offset is 0, which the markers (skipped by
    // the read) then precede; the answer is labelled with the shift known afterwards.
    let before = data_offset(catalog, topic, partition).await?;
    let want = Want { offset: want.offset + before, ..want };
    let f = fetch_broker_offsets(catalog, topic, partition, want, wake).await?;
    let shift =
        if f.high_water_mark > 0 { data_offset(catalog, topic, partition).await? } else { before };
    Ok(Fetched {
        messages: f.messages.into_iter().map(|(o, m)| (o - shift, m)).collect(),
        high_water_mark: (f.high_water_mark - shift).max(0),
        log_start_offset: (f.log_start_offset - shift).max(0),
    })
}

/// `(earliest, latest)` Kafka offsets of a partition: the first readable offset (after kelp's
/// markers) and the next offset to be assigned.
pub(super) async fn offset_range(
    catalog: &Catalog,
    topic: &str,
    partition: u32,
) -> Result<(i64, i64), Error> {
    let l = catalog.existing(topic).await?;
    let slot = l.slot(partition)?.clone();
    let (earliest, hwm) = range(catalog, topic, &l, &slot).await?;
    let start = data_start(catalog, topic, &l, partition, &slot, hwm).await?;
    let earliest = earliest.max(start).min(hwm);
    Ok(((earliest - start).max(0), (hwm - start).max(0)))
}

/// The broker offset of the partition's first record after kelp's markers: the amount
/// every broker offset is shifted by to give the Kafka offset. 0 while the partition is
/// empty (markers are written with its first records).
pub(super) async fn data_offset(
    catalog: &Catalog,
    topic: &str,
    partition: u32,
) -> Result<i64, Error> {
    let l = catalog.existing(topic).await?;
    let slot = l.slot(partition)?.clone();
    if let Some(s) = l.data_start(partition) {
        return Ok(s);
    }
    let (_, hwm) = range(catalog, topic, &l, &slot).await?;
    data_start(catalog, topic, &l, partition, &slot, hwm).await
}

/// A client for the broker leading `slot`.
fn leader(catalog: &Catalog, slot: &Slot) -> Result<BrokerClient, Error> {
    if slot.leader.is_empty() {
        return Err(Error::NoBroker { op: "leader" });
    }
    catalog.clients().broker(&slot.leader)
}

/// A failed call to a partition's leader: the layout may be outdated, and a leader that
/// could not be reached is forgotten.
fn fail(catalog: &Catalog, topic: &str, slot: &Slot, failure: Failure, op: &'static str) -> Error {
    catalog.invalidate(topic);
    if failure.is_transport() {
        catalog.clients().forget_broker(&slot.leader);
    }
    failure.into_broker(op)
}

async fn fetch_once(
    catalog: &Catalog,
    topic: &str,
    l: &Layout,
    slot: &Slot,
    offset: i64,
    max_bytes: i32,
) -> Result<FetchMessageResponse, Error> {
    let op = "fetch";
    let timeout = catalog.clients().call_timeout;
    let mut client = leader(catalog, slot)?;
    let req = FetchMessageRequest {
        topic: Some(catalog.topic(&l.mq_topic)),
        partition: Some(slot.partition),
        start_offset: offset,
        max_bytes,
        max_messages: FETCH_MAX_MESSAGES,
        max_wait_ms: 0,
        min_bytes: 0,
        consumer_group: String::new(),
        consumer_id: String::new(),
    };
    call(timeout, client.fetch_message(request(req, timeout)))
        .await
        .map_err(|f| fail(catalog, topic, slot, f, op))
}

/// `(earliest, high_water_mark)` as the broker reports them, before marker adjustment.
async fn range(
    catalog: &Catalog,
    topic: &str,
    l: &Layout,
    slot: &Slot,
) -> Result<(i64, i64), Error> {
    let op = "offset_range";
    let timeout = catalog.clients().call_timeout;
    let mut client = leader(catalog, slot)?;
    let req = GetPartitionRangeInfoRequest {
        topic: Some(catalog.topic(&l.mq_topic)),
        partition: Some(slot.partition),
    };
    let resp = call(timeout, client.get_partition_range_info(request(req, timeout)))
        .await
        .map_err(|f| fail(catalog, topic, slot, f, op))?;
    if !resp.error.is_empty() {
        catalog.invalidate(topic);
        return Err(Error::BrokerReply { op, message: resp.error });
    }
    let r = resp.offset_range.unwrap_or_default();
    Ok((r.earliest_offset.max(0), r.high_water_mark.max(0)))
}

/// First offset after the leading partition markers (0 for a partition without them),
/// cached per layout once the partition has records. `hwm` 0 means nothing to look at.
async fn data_start(
    catalog: &Catalog,
    topic: &str,
    l: &Layout,
    partition: u32,
    slot: &Slot,
    hwm: i64,
) -> Result<i64, Error> {
    if let Some(s) = l.data_start(partition) {
        return Ok(s);
    }
    if hwm <= 0 {
        return Ok(0);
    }
    // Kelp writes its markers as a pair at the head of every partition before any record,
    // so the head decides: a marker there means the data starts after the pair. The head
    // read can come back empty while the broker flushes the buffer holding it; retry a
    // little rather than guess (a wrong shift would renumber every offset).
    // Right after the markers were written this takes the broker's flush (~0.1-1 s).
    let give_up = Instant::now() + catalog.clients().call_timeout;
    let mut pause = POLL_MIN;
    let resp = loop {
        let resp = fetch_once(catalog, topic, l, slot, 0, HEAD_READ_BYTES).await?;
        if !resp.messages.is_empty() {
            break resp;
        }
        if Instant::now() + pause >= give_up {
            return Err(Error::BrokerReply {
                op: "data_start",
                message: "the head of a non-empty partition could not be read".into(),
            });
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(POLL_MAX);
    };
    let base = resp.next_offset - resp.messages.len() as i64;
    let head_is_marker =
        resp.messages.first().is_some_and(|m| layout::is_partition_marker(&m.key, &m.value));
    let start = if base > 0 || head_is_marker {
        // base > 0: the head was removed (retention); kelp's partitions always began with
        // the pair.
        layout::PARTITION_MARKER_TS_NS.len() as i64
    } else {
        0
    };
    l.set_data_start(partition, start);
    Ok(start)
}

/// The fetch loop, in broker offsets (markers left out, their offsets included).
async fn fetch_broker_offsets(
    catalog: &Catalog,
    topic: &str,
    partition: u32,
    want: Want,
    wake: Arc<Notify>,
) -> Result<Fetched, Error> {
    let l = catalog.existing(topic).await?;
    let slot = l.slot(partition)?.clone();
    let max_bytes = want.max_bytes.max(1) as usize;
    let min_bytes = want.min_bytes.max(0) as usize;
    let deadline = Instant::now() + want.max_wait;
    let mut poll = POLL_MIN;
    let mut messages: Vec<(i64, Message)> = Vec::new();
    let mut bytes = 0usize;
    let mut next = want.offset;
    let mut first = true;
    let mut stalls = 0;
    let mut hwm;
    loop {
        // Register for wake-ups before asking, so a publish between the answer and the
        // wait is not missed.
        let woken = wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();

        let budget = (max_bytes - bytes.min(max_bytes - 1)) as i32;
        let resp = fetch_once(catalog, topic, &l, &slot, next, budget).await?;
        hwm = resp.high_water_mark;
        if !resp.error.is_empty() {
            if resp.error_code == FETCH_PARTITION_NOT_FOUND {
                catalog.invalidate(topic);
                return Err(Error::BrokerReply { op: "fetch", message: resp.error });
            }
            let (earliest, range_hwm) = range(catalog, topic, &l, &slot).await?;
            if next < earliest || next > range_hwm {
                return Err(Error::Kafka(ResponseError::OffsetOutOfRange));
            }
            return Err(Error::BrokerReply {
                op: "fetch",
                message: format!("{} (code {})", resp.error, resp.error_code),
            });
        }
        let n = resp.messages.len() as i64;
        if n == 0 && first && next > hwm {
            // The broker answers an offset past the end with an empty success; its
            // in-memory high-water mark can lag, so ask the authoritative range first.
            let (_, range_hwm) = range(catalog, topic, &l, &slot).await?;
            if next > range_hwm {
                return Err(Error::Kafka(ResponseError::OffsetOutOfRange));
            }
            hwm = range_hwm;
        }
        first = false;
        if n > 0 {
            // The broker does not return offsets; records come contiguously up to
            // `next_offset` (offsets are assigned one by one, verified against 4.48).
            let base = resp.next_offset - n;
            for (i, m) in resp.messages.into_iter().enumerate() {
                let offset = base + i as i64;
                if offset < next || layout::is_partition_marker(&m.key, &m.value) {
                    continue;
                }
                bytes += m.key.len() + m.value.len();
                messages.push((offset, Message { key: m.key, value: m.value, ts_ns: m.ts_ns }));
            }
            next = next.max(resp.next_offset);
            hwm = hwm.max(next);
        }
        if bytes >= max_bytes {
            break;
        }
        if n > 0 && next < hwm {
            // More is already there (the broker answers one buffer at a time).
            continue;
        }
        if n == 0 && next < hwm && stalls < MAX_STALLS {
            // Records exist below the high-water mark but the broker returned none: it
            // does that while the buffer holding them is being flushed. Retry shortly
            // even when the client asked not to wait.
            stalls += 1;
            tokio::time::sleep(POLL_MIN).await;
            continue;
        }
        if bytes >= min_bytes && (min_bytes == 0 || !messages.is_empty()) {
            break;
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let wait = poll.min(deadline - now);
        tokio::select! {
            _ = &mut woken => {}
            _ = tokio::time::sleep(wait) => {}
        }
        poll = (poll * 2).min(want.poll_max);
    }
    let start = data_start(catalog, topic, &l, partition, &slot, hwm).await.unwrap_or(0);
    Ok(Fetched { messages, high_water_mark: hwm, log_start_offset: start.min(hwm) })
}

//! Topics on the MQ broker: which MQ topic serves a Kafka topic, its partition layout (cached
//! per topic), create/delete/list, and the read side (fetch and offset ranges).
//!
//! A topic's layout comes from `GetTopicConfiguration`, which reads `topic.conf` from the
//! filer on every call (`LookupTopicBrokers` answers from a 30 s broker-side cache instead).
//! The broker reports a missing topic only as an error message, so when that call fails kelp
//! asks the filer whether `topic.conf` exists to tell "no such topic" from "couldn't tell".

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_protocol::ResponseError;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::pb::messaging_pb::{
    ConfigureTopicRequest, FetchMessageRequest, FetchMessageResponse, FindBrokerLeaderRequest,
    GetPartitionRangeInfoRequest, GetTopicConfigurationRequest,
};
use super::pb::schema_pb::{Partition, Topic};
use super::rpc::{BrokerClient, Clients, Failure, call, request};
use super::{Fetched, Message, filer, layout};
use crate::error::Error;

/// How long a topic layout is trusted before the broker is asked again. Bounds how long a
/// kelp keeps serving a topic another kelp deleted, or a partition that moved without an
/// error telling us.
const LAYOUT_TTL: Duration = Duration::from_secs(5);

/// Fetch polling while waiting for records (the broker does not long-poll, see
/// `Seaweed::fetch`): first retry after `POLL_MIN`, doubling up to `POLL_MAX`. Publishes
/// through this kelp wake waiting fetches at once.
const POLL_MIN: Duration = Duration::from_millis(10);
const POLL_MAX: Duration = Duration::from_millis(100);

/// Quick retries when the broker returns nothing below its high-water mark.
const MAX_STALLS: u32 = 5;

/// Most records the broker returns per `FetchMessage` (its own cap).
const FETCH_MAX_MESSAGES: i32 = 10_000;

/// Concurrent `GetTopicConfiguration` calls when listing topics.
const LIST_CONCURRENCY: usize = 16;

/// `FetchMessage` error codes (broker_grpc_fetch.go): the partition could not be loaded, or
/// reading at the offset failed (too old, or a disk read error).
const FETCH_PARTITION_NOT_FOUND: i32 = 1;

/// One Kafka partition: its ring slice (with generation) and the broker leading it.
#[derive(Clone, Debug)]
pub(crate) struct Slot {
    pub(crate) partition: Partition,
    pub(crate) leader: String,
}

/// What kelp knows about one Kafka topic.
#[derive(Debug)]
pub(crate) struct Layout {
    pub(crate) mq_topic: String,
    /// Indexed by Kafka partition number.
    pub(crate) slots: Vec<Slot>,
    fetched_at: Instant,
    /// First offset after the partition markers, per partition, once known.
    data_start: Mutex<Vec<Option<i64>>>,
}

impl Layout {
    pub(crate) fn slot(&self, partition: u32) -> Result<&Slot, Error> {
        self.slots
            .get(partition as usize)
            .ok_or(Error::Kafka(ResponseError::UnknownTopicOrPartition))
    }
}

/// Topic operations against the broker, with the per-topic layout cache.
pub(crate) struct Topics {
    clients: Arc<Clients>,
    namespace: String,
    cache: Mutex<HashMap<String, Arc<Layout>>>,
}

impl Topics {
    pub(crate) fn new(clients: Arc<Clients>, namespace: String) -> Topics {
        Topics { clients, namespace, cache: Mutex::new(HashMap::new()) }
    }

    pub(crate) fn namespace(&self) -> &str {
        &self.namespace
    }

    fn topic(&self, mq_topic: &str) -> Topic {
        Topic { namespace: self.namespace.clone(), name: mq_topic.to_string() }
    }

    /// Forget the cached layout of `topic` (after an error, or a change made here).
    pub(crate) fn invalidate(&self, topic: &str) {
        self.cache.lock().expect("layout cache lock").remove(topic);
    }

    /// The layout of `topic`, from the cache while it is fresh.
    pub(crate) async fn layout(&self, topic: &str) -> Result<Option<Arc<Layout>>, Error> {
        if let Some(l) = self.cache.lock().expect("layout cache lock").get(topic)
            && l.fetched_at.elapsed() < LAYOUT_TTL
        {
            return Ok(Some(Arc::clone(l)));
        }
        self.resolve(topic).await
    }

    /// Like [`layout`](Self::layout), with a missing topic as UNKNOWN_TOPIC_OR_PARTITION.
    pub(crate) async fn existing(&self, topic: &str) -> Result<Arc<Layout>, Error> {
        self.layout(topic).await?.ok_or(Error::Kafka(ResponseError::UnknownTopicOrPartition))
    }

    /// Look `topic` up afresh: find its newest incarnation and read that one's configuration.
    async fn resolve(&self, topic: &str) -> Result<Option<Arc<Layout>>, Error> {
        if !layout::is_kafka_topic_name(topic) {
            return Ok(None);
        }
        let incarnations = self.incarnations(topic).await?;
        let Some(&newest) = incarnations.last() else {
            self.invalidate(topic);
            return Ok(None);
        };
        self.read_layout(topic, newest).await
    }

    /// Incarnation numbers of `topic` that have a directory (live or tombstone), ascending.
    async fn incarnations(&self, topic: &str) -> Result<Vec<u32>, Error> {
        let dir = layout::mq_namespace_dir(&self.namespace);
        let mut found = Vec::new();
        if filer::lookup(&self.clients, "topic.lookup", &dir, topic).await?.is_some() {
            found.push(0);
        }
        let prefix = layout::mq_topic_name(topic, 1);
        let prefix = &prefix[..prefix.len() - 1]; // "<topic>~"
        for entry in filer::list_all(&self.clients, "topic.lookup", &dir, prefix).await? {
            if let Some((t, n)) = layout::parse_mq_topic_name(&entry.name)
                && t == topic
                && n > 0
            {
                found.push(n);
            }
        }
        found.sort_unstable();
        Ok(found)
    }

    /// Read the configuration of one incarnation; `Ok(None)` when it has no `topic.conf`.
    async fn read_layout(
        &self,
        topic: &str,
        incarnation: u32,
    ) -> Result<Option<Arc<Layout>>, Error> {
        let op = "get_topic_configuration";
        let mq_topic = layout::mq_topic_name(topic, incarnation);
        let timeout = self.clients.call_timeout;
        let (addr, mut client) = self.clients.control_broker().await?;
        let req =
            request(GetTopicConfigurationRequest { topic: Some(self.topic(&mq_topic)) }, timeout);
        let conf = match call(timeout, client.get_topic_configuration(req)).await {
            Ok(conf) => conf,
            Err(failure) => {
                if failure.is_transport() {
                    self.clients.forget_broker(&addr);
                    return Err(failure.into_broker(op));
                }
                let dir = layout::mq_topic_dir(&self.namespace, &mq_topic);
                if filer::lookup(&self.clients, op, &dir, layout::MQ_TOPIC_CONF).await?.is_none() {
                    self.invalidate(topic);
                    return Ok(None);
                }
                return Err(failure.into_broker(op));
            }
        };
        let mut slots = Vec::with_capacity(conf.broker_partition_assignments.len());
        let mut ring = Vec::with_capacity(conf.broker_partition_assignments.len());
        for a in conf.broker_partition_assignments {
            let p = a.partition.unwrap_or_default();
            ring.push((p.ring_size, p.range_start, p.range_stop));
            slots.push(Slot { partition: p, leader: a.leader_broker });
        }
        let order = layout::kafka_partition_order(&ring).map_err(|why| Error::BrokerReply {
            op,
            message: format!("topic {mq_topic} has an unusable partition layout: {why}"),
        })?;
        let slots: Vec<Slot> = order.into_iter().map(|i| slots[i].clone()).collect();
        let l = Arc::new(Layout {
            mq_topic,
            data_start: Mutex::new(vec![None; slots.len()]),
            slots,
            fetched_at: Instant::now(),
        });
        self.cache.lock().expect("layout cache lock").insert(topic.to_string(), Arc::clone(&l));
        Ok(Some(l))
    }

    /// Every Kafka topic in the namespace with its partition count, sorted by name.
    pub(crate) async fn list(&self) -> Result<Vec<(String, u32)>, Error> {
        let dir = layout::mq_namespace_dir(&self.namespace);
        let mut newest: BTreeMap<String, u32> = BTreeMap::new();
        for entry in filer::list_all(&self.clients, "list_topics", &dir, "").await? {
            if !entry.is_directory {
                continue;
            }
            if let Some((topic, n)) = layout::parse_mq_topic_name(&entry.name) {
                let k = newest.entry(topic.to_string()).or_insert(n);
                *k = (*k).max(n);
            }
        }
        // In chunks with `join_all` rather than a stream of closures: the latter's futures
        // make callers' futures fail the `Send` check (a known rustc limitation).
        let newest: Vec<(String, u32)> = newest.into_iter().collect();
        let mut out = Vec::new();
        for chunk in newest.chunks(LIST_CONCURRENCY) {
            let mut lookups = Vec::with_capacity(chunk.len());
            for (topic, n) in chunk {
                lookups.push(self.read_layout(topic, *n));
            }
            for ((topic, _), l) in chunk.iter().zip(futures::future::join_all(lookups).await) {
                if let Some(l) = l? {
                    out.push((topic.clone(), l.slots.len() as u32));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Create `topic` with `partitions` partitions (a new incarnation if it existed before).
    pub(crate) async fn create(&self, topic: &str, partitions: u32) -> Result<(), Error> {
        if !layout::is_kafka_topic_name(topic) {
            return Err(Error::Kafka(ResponseError::InvalidTopicException));
        }
        if !(1..=layout::MAX_PARTITIONS).contains(&partitions) {
            return Err(Error::Kafka(ResponseError::InvalidPartitions));
        }
        let incarnations = self.incarnations(topic).await?;
        if let Some(&newest) = incarnations.last()
            && self.read_layout(topic, newest).await?.is_some()
        {
            return Err(Error::Kafka(ResponseError::TopicAlreadyExists));
        }
        let incarnation = incarnations.last().map_or(0, |n| n + 1);
        let mq_topic = layout::mq_topic_name(topic, incarnation);
        let op = "configure_topic";
        let timeout = self.clients.call_timeout;
        // A broker that just (re)started answers UNAVAILABLE/NOT_FOUND to topic configuration
        // for a few seconds ("no broker available", "missing address", balancer lock not
        // found) although it already answers other calls. Configuring the same MQ topic again
        // is harmless, so retry within the call timeout rather than fail a client's
        // CreateTopics (which admin clients do not retry by themselves).
        let give_up = Instant::now() + timeout;
        let mut pause = Duration::from_millis(100);
        let resp = loop {
            let (addr, mut client) = self.clients.control_broker().await?;
            let req = ConfigureTopicRequest {
                topic: Some(self.topic(&mq_topic)),
                partition_count: partitions as i32,
                retention: None,
            };
            let r =
                call(timeout, client.configure_topic(request(req, timeout))).await.map_err(|f| {
                    if f.is_transport() {
                        self.clients.forget_broker(&addr);
                    }
                    f.into_broker(op)
                });
            match r {
                Ok(resp) => break resp,
                Err(Error::Broker {
                    code: tonic::Code::Unavailable | tonic::Code::NotFound,
                    ..
                }) if Instant::now() + pause < give_up => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                Err(e) => return Err(e),
            }
        };
        self.invalidate(topic);
        if resp.broker_partition_assignments.len() != partitions as usize {
            // Someone configured the same MQ topic concurrently with another count.
            return Err(Error::Kafka(ResponseError::TopicAlreadyExists));
        }
        tracing::debug!(topic, mq_topic, partitions, "created topic");
        Ok(())
    }

    /// Delete `topic`: its `topic.conf` goes first (from then on every kelp sees no topic),
    /// then its data. The emptied directory stays as a tombstone so a later create picks a
    /// new incarnation (see [`layout::mq_topic_name`]).
    pub(crate) async fn delete(&self, topic: &str) -> Result<(), Error> {
        self.invalidate(topic);
        let l = self.existing(topic).await?;
        self.invalidate(topic);
        let dir = layout::mq_topic_dir(&self.namespace, &l.mq_topic);
        filer::delete_in(&self.clients, "delete_topic", &dir, layout::MQ_TOPIC_CONF).await?;
        for entry in filer::list_all(&self.clients, "delete_topic", &dir, "").await? {
            filer::delete_in(&self.clients, "delete_topic", &dir, &entry.name).await?;
        }
        tracing::debug!(topic, mq_topic = %l.mq_topic, "deleted topic");
        Ok(())
    }

    /// A client for the broker leading `slot`.
    fn leader(&self, slot: &Slot) -> Result<BrokerClient, Error> {
        if slot.leader.is_empty() {
            return Err(Error::NoBroker { op: "leader" });
        }
        self.clients.broker(&slot.leader)
    }

    fn fail(&self, topic: &str, slot: &Slot, failure: Failure, op: &'static str) -> Error {
        self.invalidate(topic);
        if failure.is_transport() {
            self.clients.forget_broker(&slot.leader);
        }
        failure.into_broker(op)
    }

    async fn fetch_once(
        &self,
        topic: &str,
        l: &Layout,
        slot: &Slot,
        offset: i64,
        max_bytes: i32,
    ) -> Result<FetchMessageResponse, Error> {
        let op = "fetch";
        let timeout = self.clients.call_timeout;
        let mut client = self.leader(slot)?;
        let req = FetchMessageRequest {
            topic: Some(self.topic(&l.mq_topic)),
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
            .map_err(|f| self.fail(topic, slot, f, op))
    }

    /// `(earliest, high_water_mark)` as the broker reports them, before marker adjustment.
    async fn range(&self, topic: &str, l: &Layout, slot: &Slot) -> Result<(i64, i64), Error> {
        let op = "offset_range";
        let timeout = self.clients.call_timeout;
        let mut client = self.leader(slot)?;
        let req = GetPartitionRangeInfoRequest {
            topic: Some(self.topic(&l.mq_topic)),
            partition: Some(slot.partition),
        };
        let resp = call(timeout, client.get_partition_range_info(request(req, timeout)))
            .await
            .map_err(|f| self.fail(topic, slot, f, op))?;
        if !resp.error.is_empty() {
            self.invalidate(topic);
            return Err(Error::BrokerReply { op, message: resp.error });
        }
        let r = resp.offset_range.unwrap_or_default();
        Ok((r.earliest_offset.max(0), r.high_water_mark.max(0)))
    }

    /// First offset after the leading partition markers (0 for a partition without them),
    /// cached per layout once the partition has records. `hwm` 0 means nothing to look at.
    async fn data_start(
        &self,
        topic: &str,
        l: &Layout,
        partition: u32,
        slot: &Slot,
        hwm: i64,
    ) -> Result<i64, Error> {
        if let Some(s) = l.data_start.lock().expect("data_start lock")[partition as usize] {
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
        let give_up = Instant::now() + self.clients.call_timeout;
        let mut pause = POLL_MIN;
        let resp = loop {
            let resp = self.fetch_once(topic, l, slot, 0, 1024).await?;
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
        l.data_start.lock().expect("data_start lock")[partition as usize] = Some(start);
        Ok(start)
    }

    /// `(earliest, high_water_mark, data_start)` in broker offsets.
    pub(crate) async fn offset_range(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<(i64, i64, i64), Error> {
        let l = self.existing(topic).await?;
        let slot = l.slot(partition)?.clone();
        let (earliest, hwm) = self.range(topic, &l, &slot).await?;
        let start = self.data_start(topic, &l, partition, &slot, hwm).await?;
        Ok((earliest.max(start).min(hwm), hwm, start))
    }

    /// The broker offset of the partition's first record after kelp's markers: the amount
    /// every broker offset is shifted by to give the Kafka offset. 0 while the partition is
    /// empty (markers are written with its first records).
    pub(crate) async fn data_offset(&self, topic: &str, partition: u32) -> Result<i64, Error> {
        let l = self.existing(topic).await?;
        if let Some(s) = l.data_start.lock().expect("data_start lock")[partition as usize] {
            return Ok(s);
        }
        let slot = l.slot(partition)?.clone();
        let (_, hwm) = self.range(topic, &l, &slot).await?;
        self.data_start(topic, &l, partition, &slot, hwm).await
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn fetch(
        &self,
        topic: &str,
        partition: u32,
        start_offset: i64,
        max_bytes: i32,
        max_wait: Duration,
        min_bytes: i32,
        wake: Arc<Notify>,
    ) -> Result<Fetched, Error> {
        let l = self.existing(topic).await?;
        let slot = l.slot(partition)?.clone();
        if start_offset < 0 {
            return Err(Error::Kafka(ResponseError::OffsetOutOfRange));
        }
        let max_bytes = max_bytes.max(1) as usize;
        let min_bytes = min_bytes.max(0) as usize;
        let deadline = Instant::now() + max_wait;
        let mut poll = POLL_MIN;
        let mut messages: Vec<(i64, Message)> = Vec::new();
        let mut bytes = 0usize;
        let mut next = start_offset;
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
            let resp = self.fetch_once(topic, &l, &slot, next, budget).await?;
            hwm = resp.high_water_mark;
            if !resp.error.is_empty() {
                if resp.error_code == FETCH_PARTITION_NOT_FOUND {
                    self.invalidate(topic);
                    return Err(Error::BrokerReply { op: "fetch", message: resp.error });
                }
                let (earliest, range_hwm) = self.range(topic, &l, &slot).await?;
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
                let (_, range_hwm) = self.range(topic, &l, &slot).await?;
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
            poll = (poll * 2).min(POLL_MAX);
        }
        let start = self.data_start(topic, &l, partition, &slot, hwm).await.unwrap_or(0);
        Ok(Fetched { messages, high_water_mark: hwm, log_start_offset: start.min(hwm) })
    }

    /// One real round trip to a broker: who holds the balancer lock. Fails while no broker
    /// has taken it (a freshly started cluster), when control calls would fail too.
    pub(crate) async fn ping(&self) -> Result<(), Error> {
        let op = "ping";
        let timeout = self.clients.call_timeout;
        let (addr, mut client) = self.clients.control_broker().await?;
        let resp = call(
            timeout,
            client.find_broker_leader(request(FindBrokerLeaderRequest::default(), timeout)),
        )
        .await
        .map_err(|f| {
            if f.is_transport() {
                self.clients.forget_broker(&addr);
            }
            f.into_broker(op)
        })?;
        if resp.broker.is_empty() {
            return Err(Error::NoBroker { op });
        }
        // Configuring an existing topic with its own partition count changes nothing.
        let req = ConfigureTopicRequest {
            topic: Some(Topic {
                namespace: layout::HEALTH_NAMESPACE.to_string(),
                name: layout::HEALTH_TOPIC.to_string(),
            }),
            partition_count: 1,
            retention: None,
        };
        call(timeout, client.configure_topic(request(req, timeout)))
            .await
            .map_err(|f| f.into_broker(op))?;
        Ok(())
    }
}

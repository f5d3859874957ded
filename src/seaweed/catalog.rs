//! The topic catalog on the MQ broker: which MQ topic (incarnation) serves a Kafka topic, its
//! partition layout, and creating, listing and deleting topics.
//!
//! Owns: the layout cache, the only topic cache in kelp. A layout is trusted for
//! [`LAYOUT_TTL`]; every change made through the catalog (create, delete) and every error that
//! suggests the layout is outdated forgets it here, so a topic created through this kelp is
//! seen by the next lookup. Missing topics are never cached.
//!
//! Does not own: reading records or offsets (`reader`), publishing (`publisher`), or the names
//! and paths themselves (`layout`).
//!
//! A topic's layout comes from `GetTopicConfiguration`, which reads `topic.conf` from the
//! filer on every call (`LookupTopicBrokers` answers from a 30 s broker-side cache instead).
//! The broker reports a missing topic only as an error message, so when that call fails kelp
//! asks the filer whether `topic.conf` exists to tell "no such topic" from "couldn't tell".

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use kafka_protocol::ResponseError;
use tokio::time::Instant;

use super::pb::messaging_pb::{
    ConfigureTopicRequest, ConfigureTopicResponse, FindBrokerLeaderRequest,
    GetTopicConfigurationRequest,
};
use super::pb::schema_pb::{Partition, Topic};
use super::rpc::{Clients, call, request};
use super::{filer, layout};
use crate::error::{Error, UpstreamCode};
use crate::protocol::topic_name;

/// How long a topic layout is trusted before the broker is asked again. Bounds how long a
/// kelp keeps serving a topic another kelp deleted, or a partition that moved without an
/// error telling us.
const LAYOUT_TTL: Duration = Duration::from_secs(5);

/// Concurrent `GetTopicConfiguration` calls when listing topics.
const LIST_CONCURRENCY: usize = 16;

/// Retries of `ConfigureTopic` while a freshly started broker is not ready for it: first
/// after `CONFIGURE_RETRY_MIN`, doubling up to `CONFIGURE_RETRY_MAX`, within the call timeout.
const CONFIGURE_RETRY_MIN: Duration = Duration::from_millis(100);
const CONFIGURE_RETRY_MAX: Duration = Duration::from_secs(1);

/// One Kafka partition: its ring slice (with generation) and the broker leading it.
#[derive(Clone, Debug)]
pub(super) struct Slot {
    pub(super) partition: Partition,
    pub(super) leader: String,
}

/// What kelp knows about one Kafka topic.
#[derive(Debug)]
pub(super) struct Layout {
    pub(super) mq_topic: String,
    /// Indexed by Kafka partition number.
    pub(super) slots: Vec<Slot>,
    fetched_at: Instant,
    /// First offset after the partition markers, per partition, once known (see `reader`).
    data_start: Mutex<Vec<Option<i64>>>,
}

impl Layout {
    /// The incarnation this layout belongs to (0 for a name without one).
    pub(super) fn incarnation(&self) -> u32 {
        layout::parse_mq_topic_name(&self.mq_topic).map_or(0, |(_, n)| n)
    }

    pub(super) fn slot(&self, partition: u32) -> Result<&Slot, Error> {
        self.slots
            .get(partition as usize)
            .ok_or(Error::Kafka(ResponseError::UnknownTopicOrPartition))
    }

    /// The first offset after kelp's markers in `partition`, when already known. It lives
    /// with the layout because a re-created topic (a new layout) starts over.
    pub(super) fn data_start(&self, partition: u32) -> Option<i64> {
        self.data_start.lock().get(partition as usize).copied().flatten()
    }

    pub(super) fn set_data_start(&self, partition: u32, start: i64) {
        if let Some(s) = self.data_start.lock().get_mut(partition as usize) {
            *s = Some(start);
        }
    }
}

/// Topic operations against the broker, with the per-topic layout cache.
pub(super) struct Catalog {
    clients: Arc<Clients>,
    namespace: String,
    cache: Mutex<HashMap<String, Arc<Layout>>>,
}

impl Catalog {
    pub(super) fn new(clients: Arc<Clients>, namespace: String) -> Catalog {
        Catalog { clients, namespace, cache: Mutex::new(HashMap::new()) }
    }

    pub(super) fn namespace(&self) -> &str {
        &self.namespace
    }

    pub(super) fn clients(&self) -> &Clients {
        &self.clients
    }

    /// The MQ topic `mq_topic` in kelp's namespace, as the broker's requests name it.
    pub(super) fn topic(&self, mq_topic: &str) -> Topic {
        Topic { namespace: self.namespace.clone(), name: mq_topic.to_string() }
    }

    /// Forget the cached layout of `topic` (after an error, or a change made here).
    pub(super) fn invalidate(&self, topic: &str) {
        self.cache.lock().remove(topic);
    }

    /// The layout of `topic`, from the cache while it is fresh.
    pub(super) async fn layout(&self, topic: &str) -> Result<Option<Arc<Layout>>, Error> {
        if let Some(l) = self.cache.lock().get(topic)
            && l.fetched_at.elapsed() < LAYOUT_TTL
        {
            return Ok(Some(Arc::clone(l)));
        }
        self.resolve(topic).await
    }

    /// Like [`layout`](Self::layout), with a missing topic as UNKNOWN_TOPIC_OR_PARTITION.
    pub(super) async fn existing(&self, topic: &str) -> Result<Arc<Layout>, Error> {
        self.layout(topic).await?.ok_or(Error::Kafka(ResponseError::UnknownTopicOrPartition))
    }

    /// Look `topic` up afresh: find its newest incarnation and read that one's configuration.
    async fn resolve(&self, topic: &str) -> Result<Option<Arc<Layout>>, Error> {
        if !topic_name::is_valid(topic) {
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

    /// Read the configuration of one incarnation and cache it; `Ok(None)` when it has no
    /// `topic.conf`.
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
        self.cache.lock().insert(topic.to_string(), Arc::clone(&l));
        Ok(Some(l))
    }

    /// Every Kafka topic in the namespace with its partition count, sorted by name. Caches
    /// the layout of each.
    pub(super) async fn list(&self) -> Result<Vec<(String, u32)>, Error> {
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
    pub(super) async fn create(&self, topic: &str, partitions: u32) -> Result<(), Error> {
        if !topic_name::is_valid(topic) {
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
        let configured = self.configure(&mq_topic, partitions).await;
        // Whatever the answer, the topic may exist now: the next lookup reads it afresh.
        self.invalidate(topic);
        if configured?.broker_partition_assignments.len() != partitions as usize {
            // Someone configured the same MQ topic concurrently with another count.
            return Err(Error::Kafka(ResponseError::TopicAlreadyExists));
        }
        tracing::debug!(topic, mq_topic, partitions, "created topic");
        Ok(())
    }

    /// `ConfigureTopic` for `mq_topic`, retried while the broker is not ready for it.
    async fn configure(
        &self,
        mq_topic: &str,
        partitions: u32,
    ) -> Result<ConfigureTopicResponse, Error> {
        let op = "configure_topic";
        let timeout = self.clients.call_timeout;
        // A broker that just (re)started answers UNAVAILABLE/NOT_FOUND to topic configuration
        // for a few seconds ("no broker available", "missing address", balancer lock not
        // found) although it already answers other calls. Configuring the same MQ topic again
        // is harmless, so retry within the call timeout rather than fail a client's
        // CreateTopics (which admin clients do not retry by themselves).
        let give_up = Instant::now() + timeout;
        let mut pause = CONFIGURE_RETRY_MIN;
        loop {
            let (addr, mut client) = self.clients.control_broker().await?;
            let req = ConfigureTopicRequest {
                topic: Some(self.topic(mq_topic)),
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
                Ok(resp) => return Ok(resp),
                Err(Error::Broker {
                    code: UpstreamCode::Unavailable | UpstreamCode::NotFound,
                    ..
                }) if Instant::now() + pause < give_up => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(CONFIGURE_RETRY_MAX);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Delete `topic`: its `topic.conf` goes first (from then on every kelp sees no topic),
    /// then its data. The emptied directory stays as a tombstone so a later create picks a
    /// new incarnation (see [`layout::mq_topic_name`]). Returns the deleted incarnation.
    pub(super) async fn delete(&self, topic: &str) -> Result<u32, Error> {
        self.invalidate(topic);
        let l = self.existing(topic).await?;
        self.invalidate(topic);
        let dir = layout::mq_topic_dir(&self.namespace, &l.mq_topic);
        filer::delete_in(&self.clients, "delete_topic", &dir, layout::MQ_TOPIC_CONF).await?;
        for entry in filer::list_all(&self.clients, "delete_topic", &dir, "").await? {
            filer::delete_in(&self.clients, "delete_topic", &dir, &entry.name).await?;
        }
        tracing::debug!(topic, mq_topic = %l.mq_topic, "deleted topic");
        Ok(l.incarnation())
    }

    /// Refuse to grow `topic` to `new_total` partitions (see `Seaweed::add_partitions` for
    /// why SeaweedFS cannot). Nothing is changed, so the cached layout stays valid.
    pub(super) async fn add_partitions(&self, topic: &str, new_total: u32) -> Result<(), Error> {
        let l = self.existing(topic).await?;
        if new_total as usize <= l.slots.len() || new_total > layout::MAX_PARTITIONS {
            return Err(Error::Kafka(ResponseError::InvalidPartitions));
        }
        Err(Error::Kafka(ResponseError::InvalidRequest))
    }

    /// One real round trip to a broker: who holds the balancer lock. Fails while no broker
    /// has taken it (a freshly started cluster), when control calls would fail too.
    pub(super) async fn ping(&self) -> Result<(), Error> {
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

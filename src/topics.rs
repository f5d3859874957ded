//! The Kafka side of topics: stable topic ids, auto-creation, and finding a topic by the id a
//! client sent (the rule for legal names is `protocol::topic_name`).
//!
//! Owns: what Kafka says about topic ids. Does not own: where a topic lives in
//! SeaweedFS or how many partitions it has. Partition counts come from the SeaweedFS catalog
//! (`seaweed::Seaweed::partition_count`), whose layout cache is the only topic cache in kelp;
//! creating or deleting a topic through `seaweed` refreshes that cache there, so nothing here
//! has to be invalidated.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::error::Error;
use crate::seaweed::{Seaweed, layout};

/// The topic id reported to clients: a name-based UUID (v5) of namespace, topic and the
/// topic's incarnation (`seaweed::Seaweed::topic_incarnation`), so every kelp reports the same
/// id without storing one, and a topic deleted and created again gets a new id, as in Kafka
/// (its incarnation is one more). Incarnation 0 hashes the bare name, as kelp did before
/// incarnations took part, so ids already handed out stay valid.
pub fn topic_id(namespace: &str, topic: &str, incarnation: u32) -> Uuid {
    let name = format!("kelp/{namespace}/{}", layout::mq_topic_name(topic, incarnation));
    Uuid::new_v5(&Uuid::NAMESPACE_URL, name.as_bytes())
}

/// An id no known topic has is looked up in a fresh topic listing at most this often: a
/// client sending made-up ids cannot turn each request into a listing of every topic, and a
/// topic created on another kelp is found within this long (UNKNOWN_TOPIC_ID is retriable).
const RELIST_AFTER: Duration = Duration::from_secs(1);

/// Topic ids and auto-creation for one kelp; shared by every connection.
pub struct Topics {
    seaweed: Seaweed,
    namespace: String,
    ids: Mutex<Ids>,
}

/// Names of topics that exist (seen in a listing or looked up), by id: never more entries
/// than topics, whatever names clients send.
#[derive(Default)]
struct Ids {
    names: HashMap<Uuid, String>,
    listed: Option<Instant>,
}

impl Topics {
    pub fn new(seaweed: Seaweed, namespace: String) -> Self {
        Topics { seaweed, namespace, ids: Mutex::default() }
    }

    /// The id of `topic` as it exists now. A topic that does not exist (or could not be
    /// looked up) is named by the id its first incarnation has: responses that carry it
    /// also carry an error code for the topic.
    pub async fn id(&self, topic: &str) -> Uuid {
        let incarnation = self.seaweed.topic_incarnation(topic).await.ok().flatten();
        topic_id(&self.namespace, topic, incarnation.unwrap_or(0))
    }

    async fn remember(&self, topic: &str) {
        let id = self.id(topic).await;
        self.ids.lock().names.entry(id).or_insert_with(|| topic.to_string());
    }

    /// Partition count of `topic`; `Ok(None)` when it does not exist.
    pub async fn partitions(&self, topic: &str) -> Result<Option<u32>, Error> {
        self.seaweed.partition_count(topic).await
    }

    /// Like [`partitions`](Self::partitions), creating the topic with `default` partitions
    /// when it is missing and `create` is set. Another kelp creating it first is fine.
    pub async fn ensure(
        &self,
        topic: &str,
        create: bool,
        default: u32,
    ) -> Result<Option<u32>, Error> {
        if let Some(n) = self.partitions(topic).await? {
            self.remember(topic).await;
            return Ok(Some(n));
        }
        if !create || !crate::protocol::topic_name::is_valid(topic) {
            return Ok(None);
        }
        match self.seaweed.create_topic(topic, default).await {
            Ok(()) => {}
            Err(Error::Kafka(kafka_protocol::ResponseError::TopicAlreadyExists)) => {}
            Err(e) => return Err(e),
        }
        let n = self.partitions(topic).await?;
        if n.is_some() {
            self.remember(topic).await;
        }
        Ok(n)
    }

    /// All topics with their partition counts (this refreshes the catalog's cache of each).
    pub async fn list(&self) -> Result<Vec<(String, u32)>, Error> {
        let all = self.seaweed.list_topics().await?;
        // The listing just cached every topic's layout, so these ids need no further call.
        let mut names = HashMap::with_capacity(all.len());
        for (name, _) in &all {
            names.insert(self.id(name).await, name.clone());
        }
        *self.ids.lock() = Ids { names, listed: Some(Instant::now()) };
        Ok(all)
    }

    /// The topic a client named by id, `Ok(None)` if no topic has that id.
    /// An id of a deleted incarnation names no topic, even when the name exists again.
    pub async fn name_of(&self, id: Uuid) -> Result<Option<String>, Error> {
        let (known, fresh) = {
            let ids = self.ids.lock();
            let fresh = ids.listed.is_some_and(|at| at.elapsed() < RELIST_AFTER);
            (ids.names.get(&id).cloned(), fresh)
        };
        if let Some(name) = known {
            if self.id(&name).await == id {
                return Ok(Some(name));
            }
            self.ids.lock().names.remove(&id);
        } else if fresh {
            return Ok(None);
        }
        self.list().await?;
        Ok(self.ids.lock().names.get(&id).cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_ids_are_stable_and_distinct() {
        assert_eq!(topic_id("kafka", "t", 0), topic_id("kafka", "t", 0));
        assert_ne!(topic_id("kafka", "t", 0), topic_id("kafka", "u", 0));
        assert_ne!(topic_id("kafka", "t", 0), topic_id("other", "t", 0));
        assert_ne!(topic_id("kafka", "t", 0), topic_id("kafka", "t", 1));
        assert_ne!(topic_id("kafka", "t", 1), topic_id("kafka", "t", 2));
        assert!(!topic_id("kafka", "t", 0).is_nil());
        // Golden values: ids are visible to clients and must not change between releases.
        assert_eq!(
            topic_id("kafka", "t", 0).to_string(),
            Uuid::new_v5(&Uuid::NAMESPACE_URL, b"kelp/kafka/t").to_string()
        );
        assert_eq!(
            topic_id("kafka", "t", 3).to_string(),
            Uuid::new_v5(&Uuid::NAMESPACE_URL, b"kelp/kafka/t~3").to_string()
        );
    }
}

//! The Kafka side of topics: stable topic ids, auto-creation, and finding a topic by the id a
//! client sent (the rule for legal names is `protocol::topic_name`).
//!
//! Owns: what Kafka says about topic ids. Does not own: where a topic lives in
//! SeaweedFS or how many partitions it has. Partition counts come from the SeaweedFS catalog
//! (`seaweed::Seaweed::partition_count`), whose layout cache is the only topic cache in kelp;
//! creating or deleting a topic through `seaweed` refreshes that cache there, so nothing here
//! has to be invalidated.

use std::collections::HashMap;
use std::sync::Mutex;

use uuid::Uuid;

use crate::error::Error;
use crate::seaweed::Seaweed;

/// The topic id reported to clients: a name-based UUID (v5) of namespace and topic, so every
/// kelp reports the same id without storing one. A topic deleted and created again keeps its
/// id (Kafka would mint a new one); clients only use ids to address topics, which still works.
pub fn topic_id(namespace: &str, topic: &str) -> Uuid {
    let name = format!("kelp/{namespace}/{topic}");
    Uuid::new_v5(&Uuid::NAMESPACE_URL, name.as_bytes())
}

/// Topic ids and auto-creation for one kelp; shared by every connection.
pub struct Topics {
    seaweed: Seaweed,
    namespace: String,
    /// Every id handed out or listed so far, to answer requests that name topics by id.
    ids: Mutex<HashMap<Uuid, String>>,
}

impl Topics {
    pub fn new(seaweed: Seaweed, namespace: String) -> Self {
        Topics { seaweed, namespace, ids: Mutex::default() }
    }

    /// The id of `topic` (see [`topic_id`]), remembered so [`name_of`](Self::name_of) finds it.
    pub fn id(&self, topic: &str) -> Uuid {
        let id = topic_id(&self.namespace, topic);
        self.ids.lock().expect("ids lock").entry(id).or_insert_with(|| topic.to_string());
        id
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
        self.partitions(topic).await
    }

    /// All topics with their partition counts (this refreshes the catalog's cache of each).
    pub async fn list(&self) -> Result<Vec<(String, u32)>, Error> {
        let all = self.seaweed.list_topics().await?;
        for (name, _) in &all {
            self.id(name);
        }
        Ok(all)
    }

    /// The topic a client named by id, `Ok(None)` if no topic has that id.
    pub async fn name_of(&self, id: Uuid) -> Result<Option<String>, Error> {
        if let Some(n) = self.ids.lock().expect("ids lock").get(&id) {
            return Ok(Some(n.clone()));
        }
        self.list().await?;
        Ok(self.ids.lock().expect("ids lock").get(&id).cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_ids_are_stable_and_distinct() {
        assert_eq!(topic_id("kafka", "t"), topic_id("kafka", "t"));
        assert_ne!(topic_id("kafka", "t"), topic_id("kafka", "u"));
        assert_ne!(topic_id("kafka", "t"), topic_id("other", "t"));
        assert!(!topic_id("kafka", "t").is_nil());
        // Golden value: ids are visible to clients and must not change between releases.
        assert_eq!(
            topic_id("kafka", "t").to_string(),
            Uuid::new_v5(&Uuid::NAMESPACE_URL, b"kelp/kafka/t").to_string()
        );
    }
}

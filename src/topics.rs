//! What kelp knows about topics: legal names, stable topic ids, and a short-lived cache of
//! partition counts so that a Produce or Fetch does not cost a SeaweedFS lookup each time.
//!
//! The cache is only an optimisation: any error from SeaweedFS about a topic invalidates its
//! entry, and create/delete through kelp update it at once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::error::Error;
use crate::seaweed::Seaweed;

/// How long a partition count is trusted before SeaweedFS is asked again.
const TTL: Duration = Duration::from_secs(5);

/// Kafka's longest legal topic name.
pub const MAX_NAME_LEN: usize = 249;

/// Kafka's rule for topic names: 1-249 of `[a-zA-Z0-9._-]`, and not `.` or `..`.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name != "."
        && name != ".."
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// The topic id reported to clients: a name-based UUID (v5) of namespace and topic, so every
/// kelp reports the same id without storing one. A topic deleted and created again keeps its
/// id (Kafka would mint a new one); clients only use ids to address topics, which still works.
pub fn topic_id(namespace: &str, topic: &str) -> Uuid {
    let name = format!("kelp/{namespace}/{topic}");
    Uuid::new_v5(&Uuid::NAMESPACE_URL, name.as_bytes())
}

pub struct Topics {
    seaweed: Seaweed,
    namespace: String,
    counts: Mutex<HashMap<String, (u32, Instant)>>,
    ids: Mutex<HashMap<Uuid, String>>,
}

impl Topics {
    pub fn new(seaweed: Seaweed, namespace: String) -> Self {
        Topics { seaweed, namespace, counts: Mutex::default(), ids: Mutex::default() }
    }

    pub fn id(&self, topic: &str) -> Uuid {
        let id = topic_id(&self.namespace, topic);
        self.ids.lock().expect("ids lock").entry(id).or_insert_with(|| topic.to_string());
        id
    }

    /// Partition count of `topic`; `Ok(None)` when it does not exist.
    pub async fn partitions(&self, topic: &str) -> Result<Option<u32>, Error> {
        if let Some((n, at)) = self.counts.lock().expect("counts lock").get(topic) {
            if at.elapsed() < TTL {
                return Ok(Some(*n));
            }
        }
        let n = self.seaweed.partition_count(topic).await?;
        self.remember(topic, n);
        Ok(n)
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
        if !create || !is_valid_name(topic) {
            return Ok(None);
        }
        match self.seaweed.create_topic(topic, default).await {
            Ok(()) => {}
            Err(Error::Kafka(kafka_protocol::ResponseError::TopicAlreadyExists)) => {}
            Err(e) => return Err(e),
        }
        self.invalidate(topic);
        self.partitions(topic).await
    }

    /// All topics with their partition counts (refreshes the cache).
    pub async fn list(&self) -> Result<Vec<(String, u32)>, Error> {
        let all = self.seaweed.list_topics().await?;
        for (name, n) in &all {
            self.remember(name, Some(*n));
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

    pub fn invalidate(&self, topic: &str) {
        self.counts.lock().expect("counts lock").remove(topic);
    }

    fn remember(&self, topic: &str, n: Option<u32>) {
        let mut counts = self.counts.lock().expect("counts lock");
        match n {
            Some(n) => {
                counts.insert(topic.to_string(), (n, Instant::now()));
            }
            None => {
                counts.remove(topic);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_topic_name_rules() {
        for ok in ["a", "orders.v1", "A_b-c.9", &"x".repeat(249)] {
            assert!(is_valid_name(ok), "{ok}");
        }
        for bad in ["", ".", "..", "a b", "a/b", "ü", &"x".repeat(250)] {
            assert!(!is_valid_name(bad), "{bad}");
        }
    }

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

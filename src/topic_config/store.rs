//! Topic configs in the filer, so every kelp in front of the same SeaweedFS applies the same
//! ones: one small JSON file per topic that has any (`{"max.message.bytes": "2000"}`) at
//! `seaweed::layout::topic_config_path`, and a short-lived cache for the Produce path.
//!
//! Writes go straight to the filer and drop this kelp's cached copy; other kelps see a change
//! within [`FRESH_FOR`]. An alteration reads, changes and writes the file: two kelps altering
//! the same topic at the same instant can lose one update (as with client quotas).
//!
//! Owns: the stored form, its filer I/O and the cache. Does not own: which configs exist or
//! are valid (`topic_config`) or filer paths (`seaweed::layout`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::Configs;
use crate::error::Error;
use crate::seaweed::{Seaweed, layout};

/// How long a cached topic's configs are used before they are read again: the longest a
/// change made through another kelp goes unseen here.
pub const FRESH_FOR: Duration = Duration::from_secs(2);

/// Most topics whose configs are cached. The cache is filled only for topics that exist, but
/// is bounded all the same; when full, expired entries go, then everything.
const MAX_CACHED: usize = 10_000;

struct Cached {
    at: Instant,
    configs: Arc<Configs>,
}

/// The topic configs every handler reads and writes; one per kelp.
pub struct TopicConfigs {
    seaweed: Seaweed,
    root: String,
    cache: Mutex<HashMap<String, Cached>>,
}

fn decode(path: &str, bytes: &[u8]) -> Result<Configs, Error> {
    serde_json::from_slice(bytes)
        .map_err(|e| Error::Corrupt { path: path.to_string(), why: e.to_string() })
}

impl TopicConfigs {
    pub fn new(seaweed: Seaweed, root: String) -> Self {
        TopicConfigs { seaweed, root, cache: Mutex::default() }
    }

    /// `topic`'s stored configs, read from the filer now (an empty set when it has none).
    pub async fn read(&self, topic: &str) -> Result<Configs, Error> {
        let path = layout::topic_config_path(&self.root, topic);
        let configs = match self.seaweed.filer_get(&path).await? {
            Some(bytes) => decode(&path, &bytes)?,
            None => Configs::new(),
        };
        self.remember(topic, Arc::new(configs.clone()));
        Ok(configs)
    }

    /// `topic`'s stored configs, as read at most [`FRESH_FOR`] ago. When the filer cannot be
    /// read, the last copy read is used, however old; without one, the error.
    pub async fn cached(&self, topic: &str) -> Result<Arc<Configs>, Error> {
        let stale = {
            let cache = self.cache.lock();
            match cache.get(topic) {
                Some(c) if c.at.elapsed() < FRESH_FOR => return Ok(c.configs.clone()),
                Some(c) => Some(c.configs.clone()),
                None => None,
            }
        };
        match self.read(topic).await {
            Ok(configs) => Ok(Arc::new(configs)),
            Err(e) => match stale {
                Some(configs) => {
                    tracing::debug!(error = %e, topic, "using the last topic configs read");
                    Ok(configs)
                }
                None => Err(e),
            },
        }
    }

    /// Store `configs` as `topic`'s whole set (none: the file is removed).
    pub async fn write(&self, topic: &str, configs: &Configs) -> Result<(), Error> {
        let path = layout::topic_config_path(&self.root, topic);
        self.cache.lock().remove(topic);
        if configs.is_empty() {
            return self.seaweed.filer_delete(&path).await;
        }
        let bytes = serde_json::to_vec(configs).expect("a map of strings serializes");
        self.seaweed.filer_put(&path, &bytes).await?;
        self.cache.lock().remove(topic);
        Ok(())
    }

    /// Forget `topic`'s configs (it was deleted).
    pub async fn delete(&self, topic: &str) -> Result<(), Error> {
        self.write(topic, &Configs::new()).await
    }

    fn remember(&self, topic: &str, configs: Arc<Configs>) {
        let mut cache = self.cache.lock();
        if cache.len() >= MAX_CACHED && !cache.contains_key(topic) {
            cache.retain(|_, c| c.at.elapsed() < FRESH_FOR);
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
        }
        cache.insert(topic.to_string(), Cached { at: Instant::now(), configs });
    }
}

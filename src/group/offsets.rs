//! Committed offsets in the filer: one small file per (group, topic, partition) at
//! `seaweed::layout::offsets_path`.
//!
//! Why one file per partition (and not one per group or topic): a commit then never reads
//! before it writes, so two members committing different partitions of one topic at the same
//! time cannot overwrite each other, whichever kelp they talk to; a commit of n partitions is
//! n independent writes, issued concurrently.
//!
//! Owns: the file format, the reads and writes, and the coordinator's OffsetCommit,
//! OffsetFetch and OffsetDelete (which check the group first: a commit's generation and
//! member, a deletion's subscriptions). Does not own: the membership rules those checks apply
//! (`state`).
//!
//! Format (readable with `curl http://<filer>/kelp/groups/<group>/offsets/<topic>/<p>`):
//! ```text
//! kelp-offset 1
//! offset 42
//! leader_epoch -1
//! commit_timestamp_ms 1732560000000
//! metadata some%20client%20text
//! ```
//! The line rules are those of `group::store` (percent-escaped strings, unknown keys ignored).
//!
//! The `<topic>` directory is named after the topic's incarnation: its MQ name
//! (`seaweed::layout::mq_topic_name`), which is the bare topic name for a topic created once
//! (so offsets stored before incarnations took part are still found) and `<topic>~<n>` after
//! it was deleted and created again. A re-created topic therefore starts with no committed
//! offsets in any group, even where the sweep at deletion ([`forget_topic`]) missed some.

use std::collections::HashSet;

use futures::StreamExt;
use kafka_protocol::ResponseError;
use tracing::debug;

use super::state::{self, GroupState};
use super::store::{Lines, escape, number, unescape};
use super::{Coordinator, group_code, now};
use crate::error::Error;
use crate::seaweed::{Seaweed, layout};

/// A commit of one partition: (topic, partition, what to store).
pub type OffsetCommit = (String, i32, Committed);

/// Per topic, per partition: the committed offset (`None`: none committed) or why it could
/// not be read.
pub type FetchedOffsets = Vec<(String, Vec<(i32, Result<Option<Committed>, Error>)>)>;

const OFFSET_HEADER: &str = "kelp-offset";
const OFFSET_VERSION: u32 = 1;

/// One committed offset as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// The next offset the group will consume.
    pub offset: i64,
    /// -1 when the client did not send one.
    pub leader_epoch: i32,
    /// The client's free-form text ("" when it sent none).
    pub metadata: String,
    /// When kelp stored it, milliseconds since the epoch.
    pub commit_timestamp_ms: i64,
}

pub fn encode(c: &Committed) -> String {
    let metadata = escape(&c.metadata);
    format!(
        "{OFFSET_HEADER} {OFFSET_VERSION}\noffset {}\nleader_epoch {}\ncommit_timestamp_ms {}\nmetadata{}{metadata}\n",
        c.offset,
        c.leader_epoch,
        c.commit_timestamp_ms,
        if metadata.is_empty() { "" } else { " " },
    )
}

pub fn decode(bytes: &[u8]) -> Result<Committed, String> {
    let mut lines = Lines::new(bytes, OFFSET_HEADER, OFFSET_VERSION)?;
    let mut offset = None;
    let mut c =
        Committed { offset: -1, leader_epoch: -1, metadata: String::new(), commit_timestamp_ms: 0 };
    while let Some((_, key, value)) = lines.next()? {
        match key {
            "offset" => offset = Some(number(key, value)?),
            "leader_epoch" => c.leader_epoch = number(key, value)?,
            "commit_timestamp_ms" => c.commit_timestamp_ms = number(key, value)?,
            "metadata" => c.metadata = unescape(value)?,
            _ => {}
        }
    }
    c.offset = offset.ok_or("no offset line")?;
    Ok(c)
}

/// The directory name `topic`'s offsets live under: its current incarnation's MQ name (the
/// first incarnation's for a topic that does not exist).
async fn stored_name(seaweed: &Seaweed, topic: &str) -> Result<String, Error> {
    let incarnation = seaweed.topic_incarnation(topic).await?.unwrap_or(0);
    Ok(layout::mq_topic_name(topic, incarnation))
}

/// Store one committed offset; returns once the filer has it.
pub async fn commit(
    seaweed: &Seaweed,
    root: &str,
    group: &str,
    topic: &str,
    partition: u32,
    c: &Committed,
) -> Result<(), Error> {
    let topic = stored_name(seaweed, topic).await?;
    seaweed
        .filer_put(&layout::offsets_path(root, group, &topic, partition), encode(c).as_bytes())
        .await
}

/// The committed offset of one partition; `Ok(None)` only when the filer definitely has none.
pub async fn fetch(
    seaweed: &Seaweed,
    root: &str,
    group: &str,
    topic: &str,
    partition: u32,
) -> Result<Option<Committed>, Error> {
    let topic = stored_name(seaweed, topic).await?;
    let path = layout::offsets_path(root, group, &topic, partition);
    match seaweed.filer_get(&path).await? {
        None => Ok(None),
        Some(bytes) => decode(&bytes).map(Some).map_err(|why| Error::Corrupt { path, why }),
    }
}

/// Every (topic, partition) with a committed offset in `group`, sorted. Offsets left from an
/// earlier incarnation of a topic are not listed.
pub async fn list(
    seaweed: &Seaweed,
    root: &str,
    group: &str,
    concurrency: usize,
) -> Result<Vec<(String, Vec<u32>)>, Error> {
    let stored: Vec<String> = seaweed
        .filer_list(&layout::group_offsets_dir(root, group))
        .await?
        .into_iter()
        .filter_map(|name| layout::parse_path_segment(&name))
        .collect();
    // (directory, Kafka topic) of the current incarnations only.
    let mut dirs: Vec<(String, String)> = Vec::with_capacity(stored.len());
    for name in stored {
        // A name that is no MQ name (offsets committed for a topic name Kafka would refuse)
        // stands for itself.
        let (topic, incarnation) = layout::parse_mq_topic_name(&name).unwrap_or((name.as_str(), 0));
        let current = seaweed.topic_incarnation(topic).await?.unwrap_or(0);
        if current == incarnation {
            dirs.push((layout::topic_offsets_dir(root, group, &name), topic.to_string()));
        }
    }
    // Owned copies in each future: borrowed captures in buffered streams trip rustc's
    // `Send` inference for the connection task.
    let listed: Vec<Result<(String, Vec<u32>), Error>> = futures::stream::iter(dirs)
        .map(|(dir, topic)| {
            let seaweed = seaweed.clone();
            async move {
                let names = seaweed.filer_list(&dir).await?;
                let mut partitions: Vec<u32> =
                    names.iter().filter_map(|n| n.parse().ok()).collect();
                partitions.sort_unstable();
                Ok((topic, partitions))
            }
        })
        .buffered(concurrency.max(1))
        .collect()
        .await;
    let mut out = listed.into_iter().collect::<Result<Vec<_>, Error>>()?;
    out.retain(|(_, p)| !p.is_empty());
    out.sort();
    Ok(out)
}

/// Remove one committed offset (nothing to remove is fine).
pub async fn delete(
    seaweed: &Seaweed,
    root: &str,
    group: &str,
    topic: &str,
    partition: u32,
) -> Result<(), Error> {
    let topic = stored_name(seaweed, topic).await?;
    seaweed.filer_delete(&layout::offsets_path(root, group, &topic, partition)).await
}

/// Remove every group's committed offsets of incarnation `incarnation` of `topic` (just
/// deleted): one filer delete per group, `concurrency` at a time. Returns how many groups
/// were looked at. A delete that fails leaves those offsets behind, harmlessly: a
/// re-created topic is a new incarnation whose offsets live elsewhere (see the module docs).
pub async fn forget_topic(
    seaweed: &Seaweed,
    root: &str,
    topic: &str,
    incarnation: u32,
    concurrency: usize,
) -> Result<usize, Error> {
    let stored = layout::mq_topic_name(topic, incarnation);
    let groups: Vec<String> = seaweed
        .filer_list(&layout::groups_dir(root))
        .await?
        .into_iter()
        .filter_map(|name| layout::parse_path_segment(&name))
        .collect();
    let n = groups.len();
    let dirs: Vec<String> =
        groups.iter().map(|g| layout::topic_offsets_dir(root, g, &stored)).collect();
    let failed = futures::stream::iter(dirs)
        .map(|dir| {
            let seaweed = seaweed.clone();
            async move { seaweed.filer_delete(&dir).await.err() }
        })
        .buffer_unordered(concurrency.max(1))
        .filter_map(|e| async move { e })
        .collect::<Vec<Error>>()
        .await;
    match failed.into_iter().next() {
        Some(e) => Err(e),
        None => Ok(n),
    }
}

// === impl Coordinator: offsets ===

impl Coordinator {
    /// OffsetCommit: validate the committer, then write every partition; each result says
    /// whether that partition's offset is durably stored.
    pub async fn commit_offsets(
        &self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        commits: Vec<OffsetCommit>,
    ) -> Vec<Result<(), ResponseError>> {
        let fail_all = |code: ResponseError| vec![Err(code); commits.len()];
        // Kafka: a commit with a generation for a group nobody knows comes from an old
        // generation; a standalone commit (generation < 0) creates the group.
        match self.load(group_id, generation < 0).await {
            Ok(true) => {}
            Ok(false) => return fail_all(ResponseError::IllegalGeneration),
            Err(e) => return fail_all(group_code(&e)),
        }
        let valid = self
            .with_group(group_id, |entry| {
                entry.group.validate_commit(member_id, instance_id, generation, now())
            })
            .unwrap_or(Err(ResponseError::CoordinatorNotAvailable));
        if let Err(code) = valid {
            return fail_all(code);
        }
        // Each future owns what it uses (see `offsets::list`).
        futures::stream::iter(commits)
            .map(|(topic, partition, committed)| {
                let (c, group_id) = (self.clone(), group_id.to_string());
                async move {
                    let Ok(p) = u32::try_from(partition) else {
                        return Err(ResponseError::UnknownTopicOrPartition);
                    };
                    commit(&c.inner.seaweed, &c.inner.root, &group_id, &topic, p, &committed).await.map_err(|e| {
                        debug!(group = %group_id, topic = %topic, partition, error = %e, "offset commit failed");
                        group_code(&e)
                    })
                }
            })
            .buffered(self.inner.settings.io_concurrency.max(1))
            .collect()
            .await
    }

    /// OffsetFetch: `topics = None` means every topic the group has offsets for. A partition
    /// whose offset could not be read carries the error; it is never reported as absent.
    pub async fn fetch_offsets(
        &self,
        group_id: &str,
        topics: Option<Vec<(String, Vec<i32>)>>,
    ) -> Result<FetchedOffsets, Error> {
        let seaweed = &self.inner.seaweed;
        let root = &self.inner.root;
        let concurrency = self.inner.settings.io_concurrency.max(1);
        let wanted: Vec<(String, Vec<i32>)> = match topics {
            Some(t) => t,
            None => list(seaweed, root, group_id, concurrency)
                .await?
                .into_iter()
                .map(|(t, ps)| (t, ps.into_iter().map(|p| p as i32).collect()))
                .collect(),
        };
        let mut out = Vec::with_capacity(wanted.len());
        for (topic, partitions) in wanted {
            let fetched: Vec<(i32, Result<Option<Committed>, Error>)> =
                futures::stream::iter(partitions)
                    .map(|p| {
                        let (c, group_id, topic) =
                            (self.clone(), group_id.to_string(), topic.clone());
                        async move {
                            let r = match u32::try_from(p) {
                                Ok(up) => {
                                    fetch(&c.inner.seaweed, &c.inner.root, &group_id, &topic, up)
                                        .await
                                }
                                Err(_) => Ok(None),
                            };
                            (p, r)
                        }
                    })
                    .buffered(concurrency)
                    .collect()
                    .await;
            out.push((topic, fetched));
        }
        Ok(out)
    }

    /// A topic was deleted: drop every group's committed offsets of the incarnation that was
    /// deleted ([`forget_topic`]). Best effort: what is left behind is never read again.
    pub async fn forget_topic(&self, topic: &str, incarnation: u32) {
        let (seaweed, root) = (&self.inner.seaweed, &self.inner.root);
        let concurrency = self.inner.settings.io_concurrency;
        match forget_topic(seaweed, root, topic, incarnation, concurrency).await {
            Ok(groups) => debug!(topic, incarnation, groups, "committed offsets removed"),
            Err(e) => {
                debug!(topic, incarnation, error = %e, "committed offsets of a deleted topic left behind")
            }
        }
    }

    /// OffsetDelete: `Err` is a group-level error; otherwise one result per partition
    /// (GROUP_SUBSCRIBED_TO_TOPIC for topics a live consumer subscribes to).
    pub async fn delete_offsets(
        &self,
        group_id: &str,
        topics: Vec<(String, Vec<i32>)>,
    ) -> Result<Vec<(String, Vec<(i32, Result<(), ResponseError>)>)>, ResponseError> {
        match self.load(group_id, false).await {
            Ok(true) => {}
            Ok(false) => return Err(ResponseError::GroupIdNotFound),
            Err(e) => return Err(group_code(&e)),
        }
        // Which topics may lose their offsets: all when Empty; for a live consumer group, the
        // ones nobody subscribes to (all are "subscribed" when the metadata cannot be read).
        enum Allowed {
            All,
            Except(Option<HashSet<String>>),
        }
        let allowed = self
            .with_group(group_id, |entry| {
                let g = &entry.group;
                match g.state() {
                    GroupState::Dead => Err(ResponseError::GroupIdNotFound),
                    GroupState::Empty => Ok(Allowed::All),
                    _ if g.protocol_type() == Some(state::CONSUMER_PROTOCOL_TYPE) => {
                        Ok(Allowed::Except(g.subscribed_topics()))
                    }
                    _ => Err(ResponseError::NonEmptyGroup),
                }
            })
            .unwrap_or(Err(ResponseError::GroupIdNotFound))?;
        let mut out = Vec::with_capacity(topics.len());
        for (topic, partitions) in topics {
            let subscribed = match &allowed {
                Allowed::All => false,
                Allowed::Except(None) => true,
                Allowed::Except(Some(set)) => set.contains(&topic),
            };
            let mut results = Vec::with_capacity(partitions.len());
            for p in partitions {
                let r = if subscribed {
                    Err(ResponseError::GroupSubscribedToTopic)
                } else {
                    match u32::try_from(p) {
                        Err(_) => Ok(()),
                        Ok(up) => {
                            delete(&self.inner.seaweed, &self.inner.root, group_id, &topic, up)
                                .await
                                .map_err(|e| group_code(&e))
                        }
                    }
                };
                results.push((p, r));
            }
            out.push((topic, results));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_file_is_golden() {
        let c = Committed {
            offset: 42,
            leader_epoch: -1,
            metadata: "hello world".into(),
            commit_timestamp_ms: 1_732_560_000_000,
        };
        assert_eq!(
            encode(&c),
            "kelp-offset 1\noffset 42\nleader_epoch -1\ncommit_timestamp_ms 1732560000000\nmetadata hello%20world\n"
        );
        let empty = Committed { metadata: String::new(), ..c };
        assert_eq!(
            encode(&empty),
            "kelp-offset 1\noffset 42\nleader_epoch -1\ncommit_timestamp_ms 1732560000000\nmetadata\n"
        );
    }

    #[test]
    fn offsets_round_trip() {
        for metadata in ["", "x", "multi\nline %", "ü"] {
            let c = Committed {
                offset: 7,
                leader_epoch: 3,
                metadata: metadata.into(),
                commit_timestamp_ms: 1,
            };
            assert_eq!(decode(encode(&c).as_bytes()).unwrap(), c);
        }
    }

    #[test]
    fn damaged_offsets_are_errors_not_absent() {
        for bad in [
            "",
            "kelp-offset 1\n",
            "kelp-offset 1\noffset nope\n",
            "kelp-offset 9\noffset 1\n",
            "garbage",
        ] {
            assert!(decode(bad.as_bytes()).is_err(), "{bad:?}");
        }
    }
}

//! Committed offsets in the filer: one small file per (group, topic, partition) at
//! `seaweed::layout::offsets_path`.
//!
//! Why one file per partition (and not one per group or topic): a commit then never reads
//! before it writes, so two members committing different partitions of one topic at the same
//! time cannot overwrite each other, whichever kelp they talk to; a commit of n partitions is
//! n independent writes, issued concurrently.
//!
//! Owns: the file format and the reads and writes. Does not own: whether a commit is allowed
//! (`group::Coordinator` validates generation and member first).
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

use futures::StreamExt;

use super::store::{Lines, escape, number, unescape};
use crate::error::Error;
use crate::seaweed::{Seaweed, layout};

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

/// Store one committed offset; returns once the filer has it.
pub async fn commit(
    seaweed: &Seaweed,
    root: &str,
    group: &str,
    topic: &str,
    partition: u32,
    c: &Committed,
) -> Result<(), Error> {
    seaweed
        .filer_put(&layout::offsets_path(root, group, topic, partition), encode(c).as_bytes())
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
    let path = layout::offsets_path(root, group, topic, partition);
    match seaweed.filer_get(&path).await? {
        None => Ok(None),
        Some(bytes) => decode(&bytes).map(Some).map_err(|why| Error::Corrupt { path, why }),
    }
}

/// Every (topic, partition) with a committed offset in `group`, sorted.
pub async fn list(
    seaweed: &Seaweed,
    root: &str,
    group: &str,
    concurrency: usize,
) -> Result<Vec<(String, Vec<u32>)>, Error> {
    let topics: Vec<String> = seaweed
        .filer_list(&layout::group_offsets_dir(root, group))
        .await?
        .into_iter()
        .filter_map(|name| layout::parse_path_segment(&name))
        .collect();
    // Owned copies in each future: borrowed captures in buffered streams trip rustc's
    // `Send` inference for the connection task.
    let dirs: Vec<(String, String)> =
        topics.into_iter().map(|t| (layout::topic_offsets_dir(root, group, &t), t)).collect();
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
    seaweed.filer_delete(&layout::offsets_path(root, group, topic, partition)).await
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

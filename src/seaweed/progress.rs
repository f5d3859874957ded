//! How far one partition has got: the highest offset this process acknowledged to a
//! producer, and the highest offset a restarted broker would find again in the filer.
//!
//! Owns: reading the flushed position (one filer listing at a time per partition, shared by
//! every waiter), and the acknowledged high mark that a restarted broker must not fall below.
//! Does not own: waiting with a deadline (`Seaweed::wait_flushed`), or what a publish stream
//! does when the broker fell back (`publisher`).
//!
//! Where the flushed position comes from (SeaweedFS 4.48, `broker_write.go`): the broker
//! flushes a partition's in-memory log into files named after their first timestamp in
//! `layout::mq_partition_dir`, and records each file's lowest and highest offset in the
//! entry's extended attributes `offset_min` / `offset_max` (8 bytes, big endian). Files are
//! only ever added or appended to, in time order, so the highest `offset_max` seen only grows,
//! and a listing can resume at the last file that carried one (it may have been appended to).
//! The broker leaves the attributes out for a file whose lowest offset is 0; in a partition
//! kelp created that file holds only the first marker (`layout::PARTITION_MARKER`).
//!
//! Flushed is not enough. A restarted broker takes its next offset from the partition's
//! `checkpoint.offset` (the last assigned offset, 8 bytes big endian, rewritten every 2 s
//! when it changed: `mq/offset/manager.go`, `filer_storage.go`), not from the log files, so
//! an offset above the checkpoint is assigned again after a restart even when its record was
//! flushed (seen: records at 6..10 flushed, broker SIGKILLed with the checkpoint at 5, the
//! next records got 6, 7, 8). An offset survives a restart once both the log files and the
//! checkpoint cover it.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::layout;
use super::pb::filer_pb::Entry;
use super::rpc::Clients;
use crate::error::Error;

/// A waiter looks at the filer at most this often per partition; it is also the most a
/// flush can go unnoticed.
pub(super) const FLUSH_POLL: Duration = Duration::from_millis(100);

/// Entries listed per look at the filer.
const LIST_LIMIT: u32 = 256;

/// Lost-and-filled offset ranges remembered per partition (the newest).
const LOST_RANGES: usize = 8;

/// One partition's progress, shared by its publish stream and every acks=all waiter. Which
/// partition: one generation of one MQ topic ([`Progress::dir`]); a re-created topic gets a
/// new one.
pub(super) struct Progress {
    /// The partition's log directory in the filer.
    dir: String,
    /// Highest broker offset acknowledged to a producer through this process; -1 for none.
    acked: AtomicI64,
    /// Highest broker offset known to be in the filer's log files; -1 for none.
    flushed: AtomicI64,
    /// The partition's checkpoint (last assigned offset) as last read; -1 for none.
    checkpoint: AtomicI64,
    /// The last publish stream of the partition failed (the broker may have restarted), so
    /// the next one checks where the broker's offsets stand before publishing.
    broken: std::sync::atomic::AtomicBool,
    /// Broker offset ranges (inclusive) the broker had acknowledged, then lost in a restart,
    /// and kelp filled; the newest [`LOST_RANGES`].
    lost: parking_lot::Mutex<std::collections::VecDeque<(i64, i64)>>,
    /// Where the next listing starts, and when the last one ran. Held across the listing so
    /// only one runs at a time; the waiters behind it use its result.
    look: tokio::sync::Mutex<Look>,
}

#[derive(Default)]
struct Look {
    resume_from: String,
    at: Option<Instant>,
}

impl Progress {
    pub(super) fn new(dir: String) -> Progress {
        Progress {
            dir,
            acked: AtomicI64::new(-1),
            flushed: AtomicI64::new(-1),
            checkpoint: AtomicI64::new(-1),
            broken: std::sync::atomic::AtomicBool::new(false),
            lost: parking_lot::Mutex::new(std::collections::VecDeque::new()),
            look: tokio::sync::Mutex::new(Look::default()),
        }
    }

    pub(super) fn dir(&self) -> &str {
        &self.dir
    }

    /// Record that the broker acknowledged `offset` to this process.
    pub(super) fn note_acked(&self, offset: i64) {
        self.acked.fetch_max(offset, Ordering::Relaxed);
    }

    /// Highest broker offset acknowledged through this process (-1: none).
    pub(super) fn acked(&self) -> i64 {
        self.acked.load(Ordering::Relaxed)
    }

    /// Highest broker offset a broker restart keeps (-1: none seen yet): in the log files
    /// and at or below the checkpoint.
    pub(super) fn durable(&self) -> i64 {
        self.flushed.load(Ordering::Relaxed).min(self.checkpoint.load(Ordering::Relaxed))
    }

    /// Mark whether the partition's last publish stream failed.
    pub(super) fn set_broken(&self, broken: bool) {
        self.broken.store(broken, Ordering::Relaxed);
    }

    pub(super) fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Relaxed)
    }

    /// Record that the broker lost broker offsets `from..=through` after acknowledging them.
    pub(super) fn note_lost(&self, from: i64, through: i64) {
        let mut lost = self.lost.lock();
        if lost.len() == LOST_RANGES {
            lost.pop_front();
        }
        lost.push_back((from, through));
    }

    /// Whether the record once acknowledged at broker offset `offset` was lost since.
    pub(super) fn was_lost(&self, offset: i64) -> bool {
        self.lost.lock().iter().any(|(from, through)| (*from..=*through).contains(&offset))
    }

    /// Whether broker offset `offset` survives a broker restart, looking at the filer again
    /// when the last look is older than [`FLUSH_POLL`].
    pub(super) async fn covers(&self, clients: &Clients, offset: i64) -> Result<bool, Error> {
        if self.durable() >= offset {
            return Ok(true);
        }
        let mut look = self.look.lock().await;
        if self.durable() >= offset {
            return Ok(true);
        }
        if look.at.is_some_and(|at| at.elapsed() < FLUSH_POLL) {
            return Ok(false);
        }
        look.at = Some(Instant::now());
        let entries = super::filer::list_from(
            clients,
            "filer.list_log_files",
            &self.dir,
            &look.resume_from,
            LIST_LIMIT,
        )
        .await?;
        if let Some(at) = checkpoint(&entries) {
            self.checkpoint.fetch_max(at, Ordering::Relaxed);
        }
        if let Some((highest, name)) = highest_flushed(&entries) {
            self.flushed.fetch_max(highest, Ordering::Relaxed);
            look.resume_from = name.to_string();
        } else if entries.len() as u32 >= LIST_LIMIT
            && let Some(last) = entries.last()
        {
            // A full page without any log file: skip past it next time.
            look.resume_from = last.name.clone();
        }
        Ok(self.durable() >= offset)
    }
}

/// The checkpoint's offset, when `entries` hold a well-formed one. It sorts after every log
/// file (digits before letters), so every listing from a log file on reaches it.
fn checkpoint(entries: &[Entry]) -> Option<i64> {
    let e = entries.iter().find(|e| e.name == layout::PARTITION_CHECKPOINT)?;
    let bytes = <[u8; 8]>::try_from(e.content.as_ref()).ok()?;
    i64::try_from(u64::from_be_bytes(bytes)).ok()
}

/// The highest `offset_max` among `entries` and the name of the last entry carrying one
/// (entries come in name order, which for log files is time order).
fn highest_flushed(entries: &[Entry]) -> Option<(i64, &str)> {
    let mut found: Option<(i64, &str)> = None;
    for e in entries {
        let Some(raw) = e.extended.get(layout::LOG_FILE_OFFSET_MAX) else { continue };
        let Ok(bytes) = <[u8; 8]>::try_from(raw.as_ref()) else { continue };
        let Ok(max) = i64::try_from(u64::from_be_bytes(bytes)) else { continue };
        let highest = found.map_or(max, |(h, _)| h.max(max));
        found = Some((highest, e.name.as_str()));
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, max: Option<&[u8]>) -> Entry {
        let mut e = Entry { name: name.into(), ..Default::default() };
        if let Some(m) = max {
            e.extended.insert(layout::LOG_FILE_OFFSET_MAX.into(), m.to_vec());
        }
        e
    }

    #[test]
    fn the_highest_offset_max_wins_and_the_listing_resumes_at_the_last_log_file() {
        let entries = [
            file("1970-01-01-00-00-00", None),
            file("1970-01-01-01-00-00", Some(&2u64.to_be_bytes())),
            file("2026-12-07-22-53-35", Some(&21u64.to_be_bytes())),
            file("2026-12-07-22-53-40", Some(&20u64.to_be_bytes())),
            file("checkpoint.offset", None),
        ];
        assert_eq!(highest_flushed(&entries), Some((21, "2026-12-07-22-53-40")));
    }

    #[test]
    fn the_checkpoint_is_read_from_its_inline_content() {
        let mut c = file(layout::PARTITION_CHECKPOINT, None);
        c.content = bytes::Bytes::copy_from_slice(&21u64.to_be_bytes());
        assert_eq!(checkpoint(&[file("2026-12-07-22-53-35", None), c.clone()]), Some(21));
        c.content = bytes::Bytes::from_static(b"short");
        assert_eq!(checkpoint(&[c]), None);
        assert_eq!(checkpoint(&[]), None);
    }

    #[test]
    fn malformed_or_missing_attributes_are_ignored() {
        assert_eq!(highest_flushed(&[]), None);
        let entries = [
            file("a", Some(&[1, 2, 3])),
            file("b", Some(&u64::MAX.to_be_bytes())),
            file("c", None),
        ];
        assert_eq!(highest_flushed(&entries), None);
    }

    #[test]
    fn acknowledgements_only_raise_the_mark() {
        let p = Progress::new("/d".into());
        assert_eq!((p.acked(), p.durable()), (-1, -1));
        p.note_acked(7);
        p.note_acked(3);
        assert_eq!(p.acked(), 7);
    }

    #[test]
    fn lost_ranges_are_remembered_up_to_a_bound() {
        let p = Progress::new("/d".into());
        assert!(!p.was_lost(5));
        p.note_lost(5, 9);
        assert!(p.was_lost(5) && p.was_lost(9) && !p.was_lost(10) && !p.was_lost(4));
        for i in 0..LOST_RANGES as i64 {
            p.note_lost(100 + i, 100 + i);
        }
        assert!(!p.was_lost(5), "the oldest range makes room");
        assert!(p.was_lost(100));
    }
}

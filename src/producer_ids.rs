//! Producer ids, unique across every kelp in front of one filer (docs/writers.md,
//! "Idempotent producers").
//!
//! Ids are handed out from blocks of [`BLOCK_SIZE`], as Kafka's ProducerIdManager does. Block
//! `b` holds the ids `b * BLOCK_SIZE ..< (b + 1) * BLOCK_SIZE`; a kelp owns a block once it
//! created the block's claim entry in the filer (`layout::producer_id_block`). The filer
//! creates an entry only when nothing is there, atomically, so two kelps never own one block,
//! and claims are never deleted, so no block is handed out twice, across restarts too. A
//! counter entry (`layout::producer_id_counter`) names the next block to try; it only saves
//! steps (a stale counter costs a failed create per block already claimed), so it is written
//! after the claim and a failed write is harmless.
//!
//! Owns: the block this kelp hands ids from and claiming the next one. Does not own: what an
//! id is used for (`producers`, `api::init_producer_id`) or the paths (`seaweed::layout`).
//! The filer holds one small entry per block ever claimed: one per kelp start, plus one per
//! [`BLOCK_SIZE`] producers.

use parking_lot::Mutex;

use crate::error::Error;
use crate::seaweed::{Seaweed, layout};

/// Ids per block (Kafka's ProducerIdManager hands out blocks of 1000 too).
pub const BLOCK_SIZE: i64 = 1000;

/// Claims tried per allocation before giving up (a retriable error): each failed one means
/// another kelp claimed that block since the counter was read.
const CLAIM_ATTEMPTS: usize = 32;

/// The last block that fits ids in an i64.
const LAST_BLOCK: i64 = i64::MAX / BLOCK_SIZE - 1;

pub struct ProducerIds {
    seaweed: Seaweed,
    root: String,
    /// The next id to hand out and the end of the block it is from; `None` before the first
    /// block.
    block: Mutex<Option<(i64, i64)>>,
    /// One claim at a time: callers arriving meanwhile take ids from the block it claims.
    claiming: tokio::sync::Mutex<()>,
}

impl ProducerIds {
    pub fn new(seaweed: Seaweed, root: String) -> ProducerIds {
        ProducerIds {
            seaweed,
            root,
            block: Mutex::new(None),
            claiming: tokio::sync::Mutex::new(()),
        }
    }

    /// A producer id no other kelp has handed out or will hand out. Claims a block in the
    /// filer when this kelp's is used up; the caller bounds the wait.
    pub async fn next(&self) -> Result<i64, Error> {
        if let Some(id) = self.take() {
            return Ok(id);
        }
        let _one_at_a_time = self.claiming.lock().await;
        loop {
            if let Some(id) = self.take() {
                return Ok(id);
            }
            let b = self.claim().await?;
            *self.block.lock() = Some((b * BLOCK_SIZE, (b + 1) * BLOCK_SIZE));
        }
    }

    /// The next id of this kelp's block. Id 0 is never handed out (ids are positive, as
    /// they always were from kelp).
    fn take(&self) -> Option<i64> {
        let mut block = self.block.lock();
        let (next, end) = block.as_mut()?;
        *next = (*next).max(1);
        if *next >= *end {
            return None;
        }
        *next += 1;
        Some(*next - 1)
    }

    /// Claim the next free block: create its claim entry, then move the counter past it.
    async fn claim(&self) -> Result<i64, Error> {
        let counter = layout::producer_id_counter(&self.root);
        let mut b = self.counter(&counter).await?;
        for _ in 0..CLAIM_ATTEMPTS {
            if !(0..=LAST_BLOCK).contains(&b) {
                return Err(Error::Corrupt {
                    path: counter,
                    why: format!("block {b} out of range"),
                });
            }
            let claim = layout::producer_id_block(&self.root, b);
            if self.seaweed.filer_create(&claim, b"").await? {
                if let Err(e) =
                    self.seaweed.filer_put(&counter, (b + 1).to_string().as_bytes()).await
                {
                    tracing::debug!(error = %e, "moving the producer id counter failed");
                }
                tracing::debug!(block = b, "claimed a block of producer ids");
                return Ok(b);
            }
            b = (b + 1).max(self.counter(&counter).await?);
        }
        Err(Error::Kafka(kafka_protocol::ResponseError::CoordinatorLoadInProgress))
    }

    /// The block the counter names; 0 when there is no counter yet.
    async fn counter(&self, path: &str) -> Result<i64, Error> {
        match self.seaweed.filer_get(path).await? {
            None => Ok(0),
            Some(bytes) => {
                std::str::from_utf8(&bytes).ok().and_then(|s| s.trim().parse().ok()).ok_or_else(
                    || Error::Corrupt { path: path.to_string(), why: "not a number".into() },
                )
            }
        }
    }
}

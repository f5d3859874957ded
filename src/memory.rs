//! The process-wide budget for request data kelp holds beyond the frames it read: records
//! decompressed from Produce requests and records read from SeaweedFS for Fetch responses.
//!
//! Frames are bounded by `KELP_MAX_FRAME_BYTES` and connections by `KELP_MAX_CONNECTIONS`;
//! what a request expands into is bounded here, so that many clients at once (or one hostile
//! request of small zstd batches) cannot take more than `KELP_MEMORY_BUDGET_BYTES` together.
//! A request waits for its share; past its deadline it is answered without the data
//! (a retriable error for Produce, an empty Fetch).
//!
//! Owns: the budget and the shares held. Does not own: how much a request needs (its handler
//! decides) or the limits of one request (`config`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The budget; one per process.
pub struct Memory {
    bytes: Arc<Semaphore>,
    total: u32,
}

/// A share of the budget, given back when dropped.
#[must_use = "the share is given back when dropped"]
pub struct Share {
    permit: OwnedSemaphorePermit,
}

impl Memory {
    /// A budget of `total` bytes.
    pub fn new(total: u32) -> Memory {
        Memory { bytes: Arc::new(Semaphore::new(total as usize)), total }
    }

    /// A share of `bytes` (at most the whole budget), or `None` when it could not be had
    /// within `within`.
    pub async fn take(&self, bytes: usize, within: Duration) -> Option<Share> {
        let n = u32::try_from(bytes).unwrap_or(u32::MAX).min(self.total);
        let acquire = self.bytes.clone().acquire_many_owned(n);
        match tokio::time::timeout(within, acquire).await {
            Ok(Ok(permit)) => Some(Share { permit }),
            // Timed out, or the semaphore was closed (it never is).
            _ => None,
        }
    }

    /// A share of `bytes` if the budget has room for it now.
    pub fn try_take(&self, bytes: usize) -> Option<Share> {
        let n = u32::try_from(bytes).ok()?;
        let permit = self.bytes.clone().try_acquire_many_owned(n).ok()?;
        Some(Share { permit })
    }

    /// Bytes not held by any request now.
    #[cfg(test)]
    fn available(&self) -> usize {
        self.bytes.available_permits()
    }
}

impl Share {
    /// Bytes this share holds.
    pub fn bytes(&self) -> usize {
        self.permit.num_permits()
    }

    /// Keep only `bytes` of the share (what the request turned out to need) and give the
    /// rest back at once.
    pub fn keep(&mut self, bytes: usize) {
        let held = self.permit.num_permits();
        if bytes < held {
            drop(self.permit.split(held - bytes));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn shares_wait_for_each_other_and_unused_bytes_come_back_at_once() {
        let memory = Memory::new(100);
        let mut a = memory.take(80, Duration::from_millis(10)).await.expect("free");
        assert!(memory.take(30, Duration::from_millis(10)).await.is_none(), "80 + 30 > 100");
        a.keep(50);
        let b = memory.take(30, Duration::from_millis(10)).await.expect("50 + 30 <= 100");
        assert_eq!(memory.available(), 20);
        drop((a, b));
        assert_eq!(memory.available(), 100);
        let whole = memory.take(usize::MAX, Duration::from_millis(10)).await;
        assert!(whole.is_some(), "a request larger than the budget gets all of it");
        assert!(memory.try_take(1).is_none(), "no room while the whole budget is held");
        drop(whole);
        let now = memory.try_take(60).expect("room");
        assert!(memory.try_take(41).is_none());
        drop(now);
        assert_eq!(memory.available(), 100);
    }
}

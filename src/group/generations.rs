//! Making a completed generation durable: the leader's assignment is stored in the filer
//! before any member gets its part, and best-effort writes (a group became empty, a static
//! member was replaced) follow the live state.
//!
//! Owns: ordering the writes of one group (an older generation never overwrites a newer
//! one), refusing to write a group this kelp no longer owns, settling SyncGroup once its
//! write is done, and running those writes as tracked tasks. Does not own: the file format
//! (`store`) or what a stored generation means to the group (`state`).

use std::sync::Arc;

use kafka_protocol::ResponseError;
use tracing::{info, warn};

use super::state::Snapshot;
use super::{Coordinator, group_code, now, store};
use crate::error::Error;

impl Coordinator {
    /// Write `snapshot` unless a newer generation of the group has been written already.
    async fn persist(&self, group_id: &str, snapshot: &Snapshot) -> Result<(), Error> {
        let written = {
            let groups = self.inner.groups.lock();
            match groups.get(group_id) {
                Some(e) => Arc::clone(&e.written),
                None => return Ok(()),
            }
        };
        let mut written = written.lock().await;
        if snapshot.generation < *written {
            return Ok(());
        }
        // A kelp that lost the group must not overwrite what its new owner stores.
        if !self.owns(group_id) {
            return Err(Error::Kafka(ResponseError::NotCoordinator));
        }
        store::save(&self.inner.seaweed, &self.inner.root, group_id, snapshot).await?;
        *written = snapshot.generation;
        Ok(())
    }

    /// Best-effort writes (a group became empty, a static member was replaced): failures are
    /// logged; the live state stays authoritative while this kelp runs the group.
    pub(super) fn persist_in_background(&self, group_id: String, snapshot: Snapshot) {
        let c = self.clone();
        self.inner.tracker.spawn(async move {
            if let Err(e) = c.persist(&group_id, &snapshot).await {
                warn!(group = %group_id, generation = snapshot.generation, error = %e, "storing group generation failed");
            }
        });
    }

    /// Store the leader's assignment, then answer the group's parked SyncGroups. In its own
    /// tracked task: the generation must be settled even if the leader's request future is
    /// dropped, and shutdown waits for it.
    pub(super) fn complete_sync_in_background(&self, group_id: &str, snapshot: Snapshot) {
        let c = self.clone();
        let group_id = group_id.to_string();
        self.inner.tracker.spawn(async move { c.complete_sync(&group_id, snapshot).await });
    }

    async fn complete_sync(&self, group_id: &str, snapshot: Snapshot) {
        let generation = snapshot.generation;
        let result = self.persist(group_id, &snapshot).await;
        match &result {
            Ok(()) => info!(
                group = group_id,
                generation,
                members = snapshot.members.len(),
                "group generation stored"
            ),
            Err(e) => {
                warn!(group = group_id, generation, error = %e, "storing group generation failed")
            }
        }
        let result = result.map_err(|e| group_code(&e));
        self.with_group(group_id, |entry| {
            entry.group.assignment_persisted(generation, result, now())
        });
    }
}

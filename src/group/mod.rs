//! The group coordinator: every consumer group this kelp runs and the requests parked on
//! them.
//!
//! Owns: the map group id → live group (an `Entry`: the pure `state::Group` and its parked
//! requests), loading a group from the filer the first time it is touched, running a
//! transition under the lock and handing out its effects, and the administrative calls
//! (DescribeGroups, ListGroups, DeleteGroups). The rest of the coordinator lives beside it:
//! - `membership`: JoinGroup, SyncGroup, Heartbeat and LeaveGroup, parked with timeouts;
//! - `generations`: storing a completed generation before any client hears of it;
//! - `timer`: the loop that applies deadlines (sessions, rebalance timeouts);
//! - `ownership`: which kelp runs which group, and the lease task;
//! - `offsets`: committing, fetching and deleting offsets.
//!
//! Does not own: the group rules (`state`, pure), the file formats (`store`, `offsets`), lease
//! timing and keeping (`crate::lease`), or wire types (the handlers in `api/` translate).
//!
//! Locking (mini-redis's rule): one non-async `Mutex` around the map, held only for a pure
//! transition and for handing its `Effect`s to the parked requests — never across `.await`.
//! Filer I/O happens after the lock is released.
//!
//! Tasks: the timer, the lease task, generation writes and lease renewals and releases all run
//! on the `TaskTracker` given to [`Coordinator::start`], so shutdown waits for every one.
//!
//! Ownership (DESIGN.md, "Consumer groups across sidecars"): with a peer listener
//! configured, this kelp runs a group only while it holds the group's lease in the filer
//! (`ownership`, `crate::lease`). [`Coordinator::route`] says where a group's requests go and takes
//! the lease of a group nobody owns; every operation that touches a group's state checks
//! ownership first (in `load`) and answers NOT_COORDINATOR when this kelp is not the owner,
//! so a request forwarded to a kelp that just lost the group is never served from stale
//! state. The lease task renews leases, drops the state of a group whose lease ended (its
//! parked requests get COORDINATOR_NOT_AVAILABLE), releases idle leases, and releases every
//! lease on shutdown. Without a peer listener this kelp runs every group itself and none of
//! this happens. Forwarding itself is `peer`'s.

mod generations;
mod membership;
mod offsets;
mod ownership;
mod state;
mod store;
mod timer;

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use kafka_protocol::ResponseError;
use tokio::sync::oneshot;
use tracing::{Instrument, debug, debug_span, warn};

use crate::error::{ApiKind, Error};
use crate::seaweed::{Seaweed, layout};
use crate::shutdown::{CancellationToken, TaskTracker};
pub use offsets::Committed;
pub use ownership::Route;
pub use state::{
    Description, GroupState, JoinReply, JoinRequest, Protocol, SyncReply, SyncRequest,
};
use state::{Effect, Group, Snapshot};

/// Limits and timers of the coordinator. Defaults follow Kafka's broker defaults where Kafka
/// has one.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Smallest session timeout a member may ask for (Kafka's `group.min.session.timeout.ms`).
    pub min_session_timeout: Duration,
    /// Largest session timeout (Kafka's `group.max.session.timeout.ms`).
    pub max_session_timeout: Duration,
    /// How long the first rebalance of an empty group waits for more members (Kafka's
    /// `group.initial.rebalance.delay.ms` is 3 s; a sidecar usually fronts one member, so 0).
    pub initial_rebalance_delay: Duration,
    /// How often deadlines (sessions, rebalance timeouts) are checked; bounds how late a
    /// deadline is acted on.
    pub tick: Duration,
    /// Extra time a parked request waits beyond the deadline the group enforces itself; it
    /// only matters if a deadline were missed, and then answers REBALANCE_IN_PROGRESS.
    pub wait_slack: Duration,
    /// Filer calls in flight for one OffsetCommit / OffsetFetch / ListGroups.
    pub io_concurrency: usize,
    /// Most members a group may have (Kafka's `group.max.size`, `KELP_GROUP_MAX_SIZE`).
    pub max_size: usize,
    /// Group ownership across kelps; `None`: this kelp runs every group it is asked about.
    pub ownership: Option<Ownership>,
}

/// How this kelp takes part in group ownership.
#[derive(Debug, Clone)]
pub struct Ownership {
    /// Recorded in each lease this kelp holds: `lease::owner_id(peer address, instance)`.
    pub owner_id: String,
    /// Lease lifetime (`KELP_GROUP_LEASE_MS`).
    pub lease: Duration,
}

/// Kafka's broker default for `group.min.session.timeout.ms`, so a client tuned for Kafka is
/// accepted here as it is there.
/// An Empty group nobody has used for this long leaves memory (its state is in the filer).
/// Long next to the background write that follows a group becoming Empty.
const IDLE_GROUP_EVICT: Duration = Duration::from_secs(300);

/// Most groups kept in memory at once. A request that would load one more, while every one
/// in memory is in use, gets COORDINATOR_LOAD_IN_PROGRESS (retriable): made-up group ids
/// cannot grow the map without bound.
const MAX_LIVE_GROUPS: usize = 20_000;

const DEFAULT_MIN_SESSION_TIMEOUT: Duration = Duration::from_millis(6_000);
/// Kafka's broker default for `group.max.session.timeout.ms` (30 minutes), for the same reason.
const DEFAULT_MAX_SESSION_TIMEOUT: Duration = Duration::from_millis(1_800_000);
/// A deadline is acted on at most this late: small beside the smallest session timeout
/// allowed (6 s), and cheap, since a tick only walks the groups in memory.
const DEFAULT_TICK: Duration = Duration::from_millis(100);
/// Only matters if a deadline were missed; generous, so that a late tick on a loaded machine
/// never turns into a spurious REBALANCE_IN_PROGRESS.
const DEFAULT_WAIT_SLACK: Duration = Duration::from_secs(5);
/// Bounds the filer calls one request keeps in flight, so one large commit or listing cannot
/// crowd out every other request's filer calls.
const DEFAULT_IO_CONCURRENCY: usize = 16;

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            min_session_timeout: DEFAULT_MIN_SESSION_TIMEOUT,
            max_session_timeout: DEFAULT_MAX_SESSION_TIMEOUT,
            initial_rebalance_delay: Duration::ZERO,
            tick: DEFAULT_TICK,
            wait_slack: DEFAULT_WAIT_SLACK,
            io_concurrency: DEFAULT_IO_CONCURRENCY,
            max_size: i32::MAX as usize,
            ownership: None,
        }
    }
}

/// The group coordinator; cloning is cheap and every clone is the same coordinator.
#[derive(Clone)]
pub struct Coordinator {
    inner: Arc<Inner>,
}

struct Inner {
    seaweed: Seaweed,
    root: String,
    settings: Settings,
    groups: Mutex<HashMap<String, Entry>>,
    /// Once cancelled, nothing parks any more (the timer that ends waits has stopped).
    stopping: CancellationToken,
    /// The leases of this kelp; `None` when it runs every group itself.
    leases: Option<Arc<crate::lease::Leases>>,
    /// Every task started after `start` (generation writes, lease renewals and releases) runs
    /// here, so shutdown waits for it: a generation write is not cut off halfway, and a
    /// renewal answered after the shutdown release lets go of what it renewed.
    tracker: TaskTracker,
}

/// One live group and the requests parked on it.
struct Entry {
    group: Group,
    /// Parked JoinGroups by member id; the answer comes from an [`Effect::Join`].
    joins: HashMap<String, oneshot::Sender<JoinReply>>,
    /// Parked SyncGroups by member id.
    syncs: HashMap<String, oneshot::Sender<SyncReply>>,
    /// Serialises this group's generation writes and remembers the newest one written, so a
    /// slow older write can never overwrite a newer generation.
    written: Arc<tokio::sync::Mutex<i32>>,
    /// When a request last ran on the group (for dropping idle Empty groups from memory).
    touched: std::time::Instant,
}

impl Entry {
    fn new(group: Group) -> Entry {
        let written = Arc::new(tokio::sync::Mutex::new(group.generation()));
        let touched = std::time::Instant::now();
        Entry { group, joins: HashMap::new(), syncs: HashMap::new(), written, touched }
    }

    /// Whether the entry can leave memory: Empty, nothing parked on it, no generation write
    /// in flight, and untouched for [`IDLE_GROUP_EVICT`]. Its state is in the filer; the next
    /// request loads it again.
    fn is_idle(&self) -> bool {
        self.group.state() == GroupState::Empty
            && self.joins.is_empty()
            && self.syncs.is_empty()
            && Arc::strong_count(&self.written) == 1
            && self.touched.elapsed() >= IDLE_GROUP_EVICT
    }

    /// Answer the parked requests the effects name; return the snapshots to persist.
    fn deliver(&mut self, effects: Vec<Effect>) -> Vec<Snapshot> {
        let mut persist = Vec::new();
        for e in effects {
            match e {
                Effect::Join { member_id, reply } => {
                    if let Some(tx) = self.joins.remove(&member_id) {
                        let _ = tx.send(reply);
                    }
                }
                Effect::Sync { member_id, reply } => {
                    if let Some(tx) = self.syncs.remove(&member_id) {
                        let _ = tx.send(reply);
                    }
                }
                Effect::Persist(s) => persist.push(s),
            }
        }
        persist
    }
}

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

fn group_code(e: &Error) -> ResponseError {
    e.code(ApiKind::Group)
}

// === impl Coordinator: lifecycle and loading ===

impl Coordinator {
    /// A coordinator whose timer runs on `tracker` until `cancel` fires. On cancel, parked
    /// requests are answered COORDINATOR_NOT_AVAILABLE (their clients look for the
    /// coordinator again) so that draining connections does not wait for rebalances.
    /// With `settings.ownership`, a lease task runs on `tracker` too; on cancel it releases
    /// every lease this kelp holds.
    pub fn start(
        seaweed: Seaweed,
        root: String,
        settings: Settings,
        cancel: CancellationToken,
        tracker: &TaskTracker,
    ) -> Coordinator {
        let leases = settings.ownership.as_ref().map(|o| {
            Arc::new(crate::lease::Leases::new(
                seaweed.clone(),
                root.clone(),
                ownership::KIND,
                o.owner_id.clone(),
                o.lease,
            ))
        });
        let inner = Inner {
            seaweed,
            root,
            settings,
            groups: Mutex::new(HashMap::new()),
            stopping: cancel.clone(),
            leases,
            tracker: tracker.clone(),
        };
        let c = Coordinator { inner: Arc::new(inner) };
        let timer = c.clone();
        let timer_cancel = cancel.clone();
        tracker.spawn(async move {
            timer.run_timer(timer_cancel).instrument(debug_span!("group_timer")).await
        });
        if c.inner.leases.is_some() {
            let leases = c.clone();
            tracker.spawn(async move {
                leases.run_leases(cancel).instrument(debug_span!("group_leases")).await
            });
        }
        c
    }

    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// Make sure `group_id` is in memory, loading its stored generation the first time.
    /// Returns whether the group exists; with `create`, a group nobody knows is created Empty.
    /// A group "exists" when it is in memory, has a stored generation, or has offsets.
    /// NOT_COORDINATOR when another kelp owns the group (or nobody has given it to this one).
    async fn load(&self, group_id: &str, create: bool) -> Result<bool, Error> {
        if !self.owns(group_id) {
            return Err(Error::Kafka(ResponseError::NotCoordinator));
        }
        {
            let mut groups = self.inner.groups.lock();
            if groups.contains_key(group_id) {
                return Ok(true);
            }
            if groups.len() >= MAX_LIVE_GROUPS {
                groups.retain(|_, e| !e.is_idle());
                if groups.len() >= MAX_LIVE_GROUPS {
                    return Err(Error::Kafka(ResponseError::CoordinatorLoadInProgress));
                }
            }
        }
        let seaweed = &self.inner.seaweed;
        let root = &self.inner.root;
        let group = match store::load(seaweed, root, group_id).await? {
            Some(snapshot) => {
                debug!(
                    group = group_id,
                    generation = snapshot.generation,
                    members = snapshot.members.len(),
                    "group loaded"
                );
                Group::from_snapshot(snapshot, now())
            }
            None if create => Group::new(),
            None => {
                if seaweed.filer_list(&layout::group_offsets_dir(root, group_id)).await?.is_empty()
                {
                    return Ok(false);
                }
                Group::new()
            }
        };
        let group = group.with_initial_rebalance_delay(self.inner.settings.initial_rebalance_delay);
        self.inner.groups.lock().entry(group_id.to_string()).or_insert_with(|| Entry::new(group));
        Ok(true)
    }

    /// Run `f` on the live group under the lock, deliver its effects, and start persisting
    /// what it asks to persist. `None` when the group is not in memory (deleted meanwhile).
    fn with_group<T>(&self, group_id: &str, f: impl FnOnce(&mut Entry) -> T) -> Option<T> {
        let (out, persist) = {
            let mut groups = self.inner.groups.lock();
            let entry = groups.get_mut(group_id)?;
            entry.touched = std::time::Instant::now();
            let out = f(entry);
            let effects = entry.group.take_effects();
            (out, entry.deliver(effects))
        };
        for snapshot in persist {
            self.persist_in_background(group_id.to_string(), snapshot);
        }
        Some(out)
    }
}

// === impl Coordinator: administration ===

impl Coordinator {
    /// DescribeGroups for one group; `Ok(None)` when the group does not exist.
    pub async fn describe(&self, group_id: &str) -> Result<Option<Description>, Error> {
        if !self.load(group_id, false).await? {
            return Ok(None);
        }
        Ok(self.with_group(group_id, |entry| entry.group.describe()))
    }

    /// ListGroups: every group in memory or in the filer, with its state and protocol type.
    /// A group another kelp owns is listed from its stored generation: `Stable` when it has
    /// members, `Empty` otherwise (its owner may be between generations; ListGroups is a
    /// listing, not a description).
    pub async fn list(&self) -> Result<Vec<(String, GroupState, String)>, Error> {
        let mut ids: Vec<String> = self
            .inner
            .seaweed
            .filer_list(&layout::groups_dir(&self.inner.root))
            .await?
            .into_iter()
            .filter_map(|name| layout::parse_path_segment(&name))
            .collect();
        ids.extend(self.inner.groups.lock().keys().cloned());
        ids.sort();
        ids.dedup();
        let listed: Vec<Result<Option<(GroupState, String)>, Error>> =
            futures::stream::iter(ids.clone())
                .map(|id| {
                    let c = self.clone();
                    async move { c.list_one(&id).await }
                })
                .buffered(self.inner.settings.io_concurrency.max(1))
                .collect()
                .await;
        let mut out = Vec::new();
        for (id, listed) in ids.into_iter().zip(listed) {
            if let Some((state, protocol_type)) =
                listed?.filter(|(state, _)| *state != GroupState::Dead)
            {
                out.push((id, state, protocol_type));
            }
        }
        Ok(out)
    }

    /// One group's (state, protocol type) for ListGroups; `None` when it does not exist.
    async fn list_one(&self, group_id: &str) -> Result<Option<(GroupState, String)>, Error> {
        if self.owns(group_id) {
            if !self.load(group_id, false).await? {
                return Ok(None);
            }
            return Ok(self.with_group(group_id, |e| {
                (e.group.state(), e.group.protocol_type().unwrap_or_default().to_string())
            }));
        }
        let seaweed = &self.inner.seaweed;
        let root = &self.inner.root;
        Ok(match store::load(seaweed, root, group_id).await? {
            Some(s) => {
                let state =
                    if s.members.is_empty() { GroupState::Empty } else { GroupState::Stable };
                Some((state, s.protocol_type.unwrap_or_default()))
            }
            None if seaweed
                .filer_list(&layout::group_offsets_dir(root, group_id))
                .await?
                .is_empty() =>
            {
                None
            }
            None => Some((GroupState::Empty, String::new())),
        })
    }

    /// DeleteGroups for one group: only an Empty group can go; its generation and offsets are
    /// removed from the filer.
    pub async fn delete(&self, group_id: &str) -> Result<(), ResponseError> {
        match self.load(group_id, false).await {
            Ok(true) => {}
            Ok(false) => return Err(ResponseError::GroupIdNotFound),
            Err(e) => return Err(group_code(&e)),
        }
        self.with_group(group_id, |entry| match entry.group.state() {
            GroupState::Empty => {
                entry.group.mark_dead();
                Ok(())
            }
            GroupState::Dead => Err(ResponseError::GroupIdNotFound),
            _ => Err(ResponseError::NonEmptyGroup),
        })
        .unwrap_or(Err(ResponseError::GroupIdNotFound))?;
        // Requests arriving while the files go are told to retry (the group is Dead); the
        // entry leaves memory afterwards, so the next touch starts from what is stored.
        let r =
            self.inner.seaweed.filer_delete(&layout::group_path(&self.inner.root, group_id)).await;
        self.inner.groups.lock().remove(group_id);
        r.map_err(|e| {
            warn!(group = group_id, error = %e, "deleting group failed");
            group_code(&e)
        })
    }
}

/// Milliseconds since the epoch, for commit timestamps.
pub fn unix_millis() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests;

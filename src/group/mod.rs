//! The group coordinator: every consumer group this kelp runs, the requests parked in
//! JoinGroup and SyncGroup, the timer that expires sessions and ends rebalances, and the
//! filer writes that make a generation or an offset durable before the client hears of it.
//!
//! Owns: the map group id → live group, the waits (each with a timeout), loading a group from
//! the filer the first time it is touched, persisting completed generations, and committing
//! and fetching offsets. Does not own: the group rules (`state`, pure), the file formats
//! (`store`, `offsets`), or wire types (the handlers in `api/` translate).
//!
//! Locking (mini-redis's rule): one `std::sync::Mutex` around the map, held only for a pure
//! transition and for handing its [`Effect`]s to the parked requests — never across `.await`.
//! Filer I/O happens after the lock is released.
//!
//! Ownership (DESIGN.md, "Consumer groups across sidecars"): with a peer listener
//! configured, this kelp runs a group only while it holds the group's lease in the filer
//! (`ownership`, `lease`). [`Coordinator::route`] says where a group's requests go and takes
//! the lease of a group nobody owns; every operation that touches a group's state checks
//! ownership first (in `load`) and answers NOT_COORDINATOR when this kelp is not the owner,
//! so a request forwarded to a kelp that just lost the group is never served from stale
//! state. The lease task renews leases, drops the state of a group whose lease ended (its
//! parked requests get COORDINATOR_NOT_AVAILABLE), releases idle leases, and releases every
//! lease on shutdown. Without a peer listener this kelp runs every group itself and none of
//! this happens. Forwarding itself is `peer`'s.

pub mod lease;
pub mod offsets;
pub mod ownership;
pub mod state;
pub mod store;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use kafka_protocol::ResponseError;
use tokio::sync::oneshot;
use tracing::{Instrument, debug, debug_span, info, warn};

use crate::error::{ApiKind, Error};
use crate::seaweed::{LockAnswer, Seaweed, layout};
use crate::shutdown::{CancellationToken, TaskTracker};
pub use offsets::Committed;
pub use ownership::Route;
pub use state::{
    Description, Effect, Group, GroupState, JoinOutcome, JoinReply, JoinRequest, Protocol,
    Snapshot, SyncOutcome, SyncReply, SyncRequest,
};

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

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            min_session_timeout: Duration::from_millis(6_000),
            max_session_timeout: Duration::from_millis(1_800_000),
            initial_rebalance_delay: Duration::ZERO,
            tick: Duration::from_millis(100),
            wait_slack: Duration::from_secs(5),
            io_concurrency: 16,
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
    leases: Option<Arc<ownership::Leases>>,
    /// Lease renewals and releases run as tracked tasks, so shutdown waits for them (a
    /// renewal answered after the shutdown release lets go of what it renewed).
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
}

impl Entry {
    fn new(group: Group) -> Entry {
        let written = Arc::new(tokio::sync::Mutex::new(group.generation()));
        Entry { group, joins: HashMap::new(), syncs: HashMap::new(), written }
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

/// A commit of one partition: (topic, partition, what to store).
pub type OffsetCommit = (String, i32, Committed);

/// Per topic, per partition: the committed offset (`None`: none committed) or why it could
/// not be read.
pub type FetchedOffsets = Vec<(String, Vec<(i32, Result<Option<Committed>, Error>)>)>;

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
            Arc::new(ownership::Leases::new(
                seaweed.clone(),
                root.clone(),
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

    async fn run_timer(&self, cancel: CancellationToken) {
        let mut interval = tokio::time::interval(self.inner.settings.tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = interval.tick() => {}
            }
            let now = now();
            let mut persist = Vec::new();
            {
                let mut groups = self.inner.groups.lock().expect("groups lock");
                for (id, entry) in groups.iter_mut() {
                    entry.group.tick(now);
                    let effects = entry.group.take_effects();
                    if !effects.is_empty() {
                        persist.extend(entry.deliver(effects).into_iter().map(|s| (id.clone(), s)));
                    }
                }
            }
            for (id, snapshot) in persist {
                self.persist_in_background(id, snapshot);
            }
        }
        let mut groups = self.inner.groups.lock().expect("groups lock");
        for entry in groups.values_mut() {
            entry.joins.clear();
            entry.syncs.clear();
        }
    }

    /// Make sure `group_id` is in memory, loading its stored generation the first time.
    /// Returns whether the group exists; with `create`, a group nobody knows is created Empty.
    /// A group "exists" when it is in memory, has a stored generation, or has offsets.
    /// NOT_COORDINATOR when another kelp owns the group (or nobody has given it to this one).
    async fn load(&self, group_id: &str, create: bool) -> Result<bool, Error> {
        if !self.owns(group_id) {
            return Err(Error::Kafka(ResponseError::NotCoordinator));
        }
        if self.inner.groups.lock().expect("groups lock").contains_key(group_id) {
            return Ok(true);
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
                Group::from_snapshot(group_id, snapshot, now())
            }
            None if create => Group::new(group_id),
            None => {
                if seaweed.filer_list(&layout::group_offsets_dir(root, group_id)).await?.is_empty()
                {
                    return Ok(false);
                }
                Group::new(group_id)
            }
        };
        let group = group.with_initial_rebalance_delay(self.inner.settings.initial_rebalance_delay);
        self.inner
            .groups
            .lock()
            .expect("groups lock")
            .entry(group_id.to_string())
            .or_insert_with(|| Entry::new(group));
        Ok(true)
    }

    /// Run `f` on the live group under the lock, deliver its effects, and start persisting
    /// what it asks to persist. `None` when the group is not in memory (deleted meanwhile).
    fn with_group<T>(&self, group_id: &str, f: impl FnOnce(&mut Entry) -> T) -> Option<T> {
        let (out, persist) = {
            let mut groups = self.inner.groups.lock().expect("groups lock");
            let entry = groups.get_mut(group_id)?;
            let out = f(entry);
            let effects = entry.group.take_effects();
            (out, entry.deliver(effects))
        };
        for snapshot in persist {
            self.persist_in_background(group_id.to_string(), snapshot);
        }
        Some(out)
    }

    /// Write `snapshot` unless a newer generation of the group has been written already.
    async fn persist(&self, group_id: &str, snapshot: &Snapshot) -> Result<(), Error> {
        let written = {
            let groups = self.inner.groups.lock().expect("groups lock");
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
    fn persist_in_background(&self, group_id: String, snapshot: Snapshot) {
        let c = self.clone();
        tokio::spawn(async move {
            if let Err(e) = c.persist(&group_id, &snapshot).await {
                warn!(group = %group_id, generation = snapshot.generation, error = %e, "storing group generation failed");
            }
        });
    }

    /// Run a transition that may park a request, unless kelp is stopping. Called under the
    /// lock: the timer clears parked requests under it after the stop signal, so a request
    /// either sees the signal here or is parked in time to be cleared.
    fn not_stopping<T>(&self, f: impl FnOnce() -> T) -> Option<T> {
        (!self.inner.stopping.is_cancelled()).then(f)
    }

    fn parked_wait(&self, rebalance_timeout: Duration) -> Duration {
        rebalance_timeout
            .saturating_add(self.inner.settings.tick)
            .saturating_add(self.inner.settings.wait_slack)
    }
}

// === impl Coordinator: ownership ===

impl Coordinator {
    /// Whether groups are shared with other kelps through leases (a peer listener is set).
    pub fn is_shared(&self) -> bool {
        self.inner.leases.is_some()
    }

    /// Where `group_id`'s requests are answered. A group nobody owns becomes this kelp's
    /// (whatever was in memory about it is dropped: the filer has the truth). A kelp without
    /// leases answers `Local` at once. `Err` is a retriable code for the whole request.
    pub async fn route(&self, group_id: &str) -> Result<Route, ResponseError> {
        let Some(leases) = &self.inner.leases else {
            return Ok(Route::Local);
        };
        if self.inner.stopping.is_cancelled() {
            // Leases are being released; taking one now would outlive this process.
            return Err(ResponseError::CoordinatorNotAvailable);
        }
        match leases.route(group_id, now).await {
            Ok((route, fresh)) => {
                if fresh {
                    if self.inner.stopping.is_cancelled() {
                        // Granted while the lease task was releasing everything: let it go too.
                        if let Some(token) = leases.give_up(group_id) {
                            let _ = leases.release(group_id, &token).await;
                        }
                        return Err(ResponseError::CoordinatorNotAvailable);
                    }
                    self.inner.groups.lock().expect("groups lock").remove(group_id);
                }
                Ok(route)
            }
            Err(e) => {
                debug!(group = group_id, error = %e, "finding the group's owner failed");
                Err(group_code(&e))
            }
        }
    }

    /// The owner another kelp named could not be reached or said it is not the owner: look
    /// again on the next request.
    pub fn forget_owner(&self, group_id: &str) {
        if let Some(leases) = &self.inner.leases {
            leases.forget_remote(group_id);
        }
    }

    /// Whether this kelp may run `group_id` now.
    fn owns(&self, group_id: &str) -> bool {
        self.inner.leases.as_ref().is_none_or(|l| l.owns(group_id, now()))
    }

    /// Forget a group this kelp no longer owns; its parked requests are answered
    /// COORDINATOR_NOT_AVAILABLE (their waiters are dropped) and its members rejoin at the
    /// new owner.
    fn drop_group(&self, group_id: &str) {
        self.inner.groups.lock().expect("groups lock").remove(group_id);
    }

    /// Renew leases when due, end those whose renewals failed until their stop time, release
    /// idle ones; on cancel, release them all.
    async fn run_leases(&self, cancel: CancellationToken) {
        let Some(leases) = self.inner.leases.clone() else { return };
        let mut interval = tokio::time::interval(self.inner.settings.tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = interval.tick() => {}
            }
            for group in leases.take_expired(now()) {
                warn!(group = %group, "group lease could not be renewed in time; no longer coordinating the group");
                self.drop_group(&group);
            }
            self.release_idle(&leases);
            for (group, token) in leases.start_renewals(now()) {
                let (c, leases) = (self.clone(), Arc::clone(&leases));
                self.inner.tracker.spawn(async move { c.renew(&leases, group, token).await });
            }
        }
        let all = leases.take_all();
        for (group, _) in &all {
            self.drop_group(group);
        }
        let released = futures::future::join_all(
            all.iter().map(|(group, token)| leases.release(group, token)),
        )
        .await;
        for ((group, _), r) in all.iter().zip(released) {
            match r {
                Ok(()) => debug!(group = %group, "group lease released"),
                Err(e) => {
                    warn!(group = %group, error = %e, "releasing the group lease failed; it expires on its own")
                }
            }
        }
    }

    async fn renew(&self, leases: &ownership::Leases, group: String, token: String) {
        let sent_at = now();
        match leases.renew(&group, &token).await {
            Ok(LockAnswer::Granted { token }) => {
                if !leases.renewed(&group, token.clone(), sent_at) {
                    // Given up meanwhile (shutdown, or its stop time passed): let it go.
                    let _ = leases.release(&group, &token).await;
                }
            }
            Ok(other) => {
                info!(group = %group, answer = ?other, "group lease lost; no longer coordinating the group");
                leases.give_up(&group);
                self.drop_group(&group);
            }
            Err(e) => {
                debug!(group = %group, error = %e, "renewing the group lease failed; retrying");
                leases.renewal_failed(&group, now());
            }
        }
    }

    /// Release leases of groups no request used for a whole lease and with nothing going on
    /// (no member, nothing parked, the last generation stored): another kelp may then take
    /// them without waiting.
    fn release_idle(&self, leases: &Arc<ownership::Leases>) {
        for group in leases.idle(now()) {
            let token = {
                let mut groups = self.inner.groups.lock().expect("groups lock");
                let quiet = match groups.get(&group) {
                    None => true,
                    Some(e) => {
                        matches!(e.group.state(), GroupState::Empty | GroupState::Dead)
                            && e.joins.is_empty()
                            && e.syncs.is_empty()
                            && e.written.try_lock().is_ok_and(|w| *w == e.group.generation())
                    }
                };
                if !quiet {
                    continue;
                }
                groups.remove(&group);
                leases.give_up(&group)
            };
            if let Some(token) = token {
                let leases = Arc::clone(leases);
                self.inner.tracker.spawn(async move {
                    match leases.release(&group, &token).await {
                        Ok(()) => debug!(group = %group, "idle group lease released"),
                        Err(e) => debug!(group = %group, error = %e, "releasing an idle group lease failed; it expires on its own"),
                    }
                });
            }
        }
    }
}

// === impl Coordinator: membership ===

impl Coordinator {
    /// JoinGroup: parks until the join phase completes (bounded by the rebalance timeout).
    pub async fn join(&self, group_id: &str, req: JoinRequest) -> JoinReply {
        let member_id = req.member_id.clone();
        if let Err(e) = self.load(group_id, true).await {
            debug!(group = group_id, error = %e, "loading group failed");
            return JoinReply::error(&member_id, group_code(&e));
        }
        let own_timeout = req.rebalance_timeout;
        let parked = self.with_group(group_id, |entry| {
            match self.not_stopping(|| entry.group.join(req, now())) {
                None => Err(Box::new(JoinReply::error(
                    &member_id,
                    ResponseError::CoordinatorNotAvailable,
                ))),
                Some(JoinOutcome::Reply(r)) => Err(Box::new(r)),
                Some(JoinOutcome::Wait { member_id }) => {
                    // The join phase lasts up to the largest rebalance timeout in the group.
                    let wait = self.parked_wait(entry.group.rebalance_timeout().max(own_timeout));
                    let (tx, rx) = oneshot::channel();
                    if let Some(old) = entry.joins.insert(member_id.clone(), tx) {
                        // The same member sent JoinGroup again; the older request is abandoned.
                        let _ = old
                            .send(JoinReply::error(&member_id, ResponseError::RebalanceInProgress));
                    }
                    Ok((member_id, rx, wait))
                }
            }
        });
        let (parked_id, rx, wait) = match parked {
            None => return JoinReply::error(&member_id, ResponseError::CoordinatorNotAvailable),
            Some(Err(reply)) => return *reply,
            Some(Ok(p)) => p,
        };
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(reply)) => reply,
            // The group was dropped (deleted, or kelp is stopping).
            Ok(Err(_)) => JoinReply::error(&parked_id, ResponseError::CoordinatorNotAvailable),
            Err(_) => {
                warn!(group = group_id, member = %parked_id, "join wait outlived the rebalance timeout");
                JoinReply::error(&parked_id, ResponseError::RebalanceInProgress)
            }
        }
    }

    /// SyncGroup: the leader's assignment is persisted before anyone gets theirs; followers
    /// park until then.
    pub async fn sync(&self, group_id: &str, req: SyncRequest) -> SyncReply {
        match self.load(group_id, false).await {
            Ok(true) => {}
            Ok(false) => return SyncReply::error(ResponseError::UnknownMemberId),
            Err(e) => return SyncReply::error(group_code(&e)),
        }
        let member_id = req.member_id.clone();
        let parked = self.with_group(group_id, |entry| {
            let wait = entry.group.rebalance_timeout();
            match self.not_stopping(|| entry.group.sync(req, now())) {
                None => Err(SyncReply::error(ResponseError::CoordinatorNotAvailable)),
                Some(SyncOutcome::Reply(r)) => Err(r),
                Some(outcome) => {
                    let (tx, rx) = oneshot::channel();
                    if let Some(old) = entry.syncs.insert(member_id.clone(), tx) {
                        let _ = old.send(SyncReply::error(ResponseError::RebalanceInProgress));
                    }
                    let persist = match outcome {
                        SyncOutcome::Persist(s) => Some(s),
                        _ => None,
                    };
                    Ok((rx, persist, wait))
                }
            }
        });
        let (rx, persist, wait) = match parked {
            None => return SyncReply::error(ResponseError::CoordinatorNotAvailable),
            Some(Err(reply)) => return reply,
            Some(Ok(p)) => p,
        };
        if let Some(snapshot) = persist {
            // In its own task: the generation must be settled even if this request's future
            // is dropped.
            let c = self.clone();
            let group_id = group_id.to_string();
            tokio::spawn(async move { c.complete_sync(&group_id, snapshot).await });
        }
        match tokio::time::timeout(self.parked_wait(wait), rx).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => SyncReply::error(ResponseError::CoordinatorNotAvailable),
            Err(_) => {
                warn!(group = group_id, member = %member_id, "sync wait outlived the rebalance timeout");
                SyncReply::error(ResponseError::RebalanceInProgress)
            }
        }
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

    /// Heartbeat.
    pub async fn heartbeat(
        &self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), ResponseError> {
        match self.load(group_id, false).await {
            Ok(true) => {}
            Ok(false) => return Err(ResponseError::UnknownMemberId),
            Err(e) => return Err(group_code(&e)),
        }
        self.with_group(group_id, |entry| {
            entry.group.heartbeat(member_id, instance_id, generation, now())
        })
        .unwrap_or(Err(ResponseError::CoordinatorNotAvailable))
    }

    /// LeaveGroup for (member id, instance id) pairs; `Err` is a group-level error.
    pub async fn leave(
        &self,
        group_id: &str,
        leaving: &[(String, Option<String>)],
    ) -> Result<Vec<Result<(), ResponseError>>, ResponseError> {
        match self.load(group_id, false).await {
            Ok(true) => {}
            Ok(false) => return Ok(vec![Err(ResponseError::UnknownMemberId); leaving.len()]),
            Err(e) => return Err(group_code(&e)),
        }
        self.with_group(group_id, |entry| entry.group.leave(leaving, now()))
            .unwrap_or(Err(ResponseError::CoordinatorNotAvailable))
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
                    offsets::commit(&c.inner.seaweed, &c.inner.root, &group_id, &topic, p, &committed).await.map_err(|e| {
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
            None => offsets::list(seaweed, root, group_id, concurrency)
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
                                    offsets::fetch(
                                        &c.inner.seaweed,
                                        &c.inner.root,
                                        &group_id,
                                        &topic,
                                        up,
                                    )
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
                        Ok(up) => offsets::delete(
                            &self.inner.seaweed,
                            &self.inner.root,
                            group_id,
                            &topic,
                            up,
                        )
                        .await
                        .map_err(|e| group_code(&e)),
                    }
                };
                results.push((p, r));
            }
            out.push((topic, results));
        }
        Ok(out)
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
        ids.extend(self.inner.groups.lock().expect("groups lock").keys().cloned());
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
        self.inner.groups.lock().expect("groups lock").remove(group_id);
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
mod tests {
    use super::*;
    use crate::seaweed::SeaweedOptions;

    /// A coordinator whose filer refuses connections.
    async fn unreachable() -> (Coordinator, CancellationToken) {
        unreachable_with(Settings::default()).await
    }

    /// Like [`unreachable`], with the given settings.
    async fn unreachable_with(settings: Settings) -> (Coordinator, CancellationToken) {
        let seaweed = Seaweed::connect(SeaweedOptions {
            master: "127.0.0.1:1".into(),
            filer: Some("127.0.0.1:1".into()),
            namespace: "kafka".into(),
            call_timeout: Duration::from_millis(500),
        })
        .await
        .expect("options are valid");
        let cancel = CancellationToken::new();
        let c = Coordinator::start(
            seaweed,
            "/kelp".into(),
            settings,
            cancel.clone(),
            &TaskTracker::new(),
        );
        (c, cancel)
    }

    fn join_req() -> JoinRequest {
        JoinRequest {
            member_id: String::new(),
            group_instance_id: None,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout: Duration::from_secs(6),
            rebalance_timeout: Duration::from_secs(6),
            protocol_type: "consumer".into(),
            protocols: vec![Protocol { name: "range".into(), metadata: bytes::Bytes::new() }],
            require_known_member_id: true,
            supports_skip_assignment: true,
        }
    }

    #[tokio::test]
    async fn filer_unreachable_is_retriable_never_no_offset() {
        let (c, cancel) = unreachable().await;
        let r = c.join("g", join_req()).await;
        assert_eq!(r.error, Some(ResponseError::CoordinatorNotAvailable));
        let fetched = c
            .fetch_offsets("g", Some(vec![("t".into(), vec![0])]))
            .await
            .expect("per-partition errors");
        let (_, parts) = &fetched[0];
        let err = parts[0].1.as_ref().expect_err("a read failure is not 'no offset'");
        assert!(err.code(ApiKind::Group).is_retriable());
        assert!(
            c.fetch_offsets("g", None).await.is_err(),
            "listing failed: an error, not an empty answer"
        );
        let committed = Committed {
            offset: 1,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp_ms: 0,
        };
        let r = c.commit_offsets("g", "", None, -1, vec![("t".into(), 0, committed)]).await;
        assert_eq!(r, vec![Err(ResponseError::CoordinatorNotAvailable)]);
        assert_eq!(
            c.heartbeat("g", "m", None, 1).await,
            Err(ResponseError::CoordinatorNotAvailable)
        );
        assert!(c.list().await.is_err());
        cancel.cancel();
    }

    #[tokio::test]
    async fn a_shared_kelp_serves_a_group_only_while_its_lease_is_valid() {
        let ownership = Ownership {
            owner_id: lease::owner_id("127.0.0.1:9093", "me"),
            lease: Duration::from_secs(2),
        };
        let (c, cancel) =
            unreachable_with(Settings { ownership: Some(ownership), ..Settings::default() }).await;

        // The filer cannot be asked who owns the group: retriable, and nothing is served
        // from this kelp's memory meanwhile.
        assert_eq!(c.route("g").await, Err(ResponseError::CoordinatorNotAvailable));
        assert_eq!(c.heartbeat("g", "m", None, 1).await, Err(ResponseError::NotCoordinator));
        let r = c.join("g", join_req()).await;
        assert_eq!(r.error, Some(ResponseError::NotCoordinator));

        // Owned (a lease granted now, 2 s): a member joins and waits in a rebalance; the
        // lease cannot be renewed (no filer), so at 2 s − 0.4 s margin the kelp stops: the
        // parked request is released with a retriable code and the group answers
        // NOT_COORDINATOR from then on.
        let granted = now();
        c.inner.leases.as_ref().unwrap().hold("g", "t", granted);
        assert_eq!(c.route("g").await, Ok(Route::Local));
        // In memory already (the filer cannot load it).
        c.inner.groups.lock().unwrap().insert("g".into(), Entry::new(Group::new("g")));
        let first = c.join("g", JoinRequest { require_known_member_id: false, ..join_req() }).await;
        assert_eq!(first.error, None, "alone in the group: its generation at once");
        let second = tokio::spawn({
            let c = c.clone();
            async move {
                c.join("g", JoinRequest { require_known_member_id: false, ..join_req() }).await
            }
        });
        let r = tokio::time::timeout(Duration::from_secs(5), second)
            .await
            .expect("released when ownership ended")
            .unwrap();
        let released_after = granted.elapsed();
        assert_eq!(r.error, Some(ResponseError::CoordinatorNotAvailable));
        assert!(
            released_after >= Duration::from_millis(1_550)
                && released_after < Duration::from_millis(2_000),
            "{released_after:?}"
        );
        assert_eq!(
            c.heartbeat("g", &first.member_id, None, first.generation).await,
            Err(ResponseError::NotCoordinator)
        );
        assert!(c.inner.groups.lock().unwrap().is_empty(), "the lost group's state is gone");
        cancel.cancel();
    }

    #[tokio::test]
    async fn parked_join_is_answered_by_the_timer_and_cancel_releases_waiters() {
        // A group in memory only (no filer involved): member a is Stable with a short session
        // and goes silent; b's JoinGroup parks until the timer expires a, then b gets a
        // generation of its own.
        let (c, cancel) = unreachable().await;
        let short = |r: JoinRequest| JoinRequest {
            require_known_member_id: false,
            session_timeout: Duration::from_millis(300),
            rebalance_timeout: Duration::from_millis(300),
            ..r
        };
        let t0 = now();
        let mut g = Group::new("g");
        let JoinOutcome::Wait { member_id: a } = g.join(short(join_req()), t0) else { panic!() };
        let _ = g.take_effects();
        let sync = SyncRequest {
            member_id: a.clone(),
            group_instance_id: None,
            generation: 1,
            protocol_type: None,
            protocol_name: None,
            assignments: vec![],
        };
        let SyncOutcome::Persist(_) = g.sync(sync, t0) else { panic!() };
        g.assignment_persisted(1, Ok(()), t0);
        let _ = g.take_effects();
        c.inner.groups.lock().unwrap().insert("g".into(), Entry::new(g));

        let started = Instant::now();
        let r = c.join("g", short(join_req())).await;
        assert_eq!(r.error, None);
        assert_eq!(r.generation, 2);
        assert_eq!(r.leader, r.member_id);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "answered when a's session ended: {:?}",
            started.elapsed()
        );

        // A parked request is released (its waiter dropped) when kelp stops.
        let rx = c
            .with_group("g", |e| {
                let (tx, rx) = oneshot::channel::<SyncReply>();
                e.syncs.insert(r.member_id.clone(), tx);
                rx
            })
            .unwrap();
        cancel.cancel();
        let released =
            tokio::time::timeout(Duration::from_secs(2), rx).await.expect("released promptly");
        assert!(released.is_err(), "the waiter was dropped");
    }
}

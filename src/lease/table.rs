//! The leases of one kelp on one kind of thing (groups, partitions), and the task that keeps
//! them: renewing when due, ending those whose renewals failed until their stop time,
//! releasing idle ones, releasing all of them on shutdown.
//!
//! Locking: two non-async `Mutex`es (held leases, remote holders), each held only for map
//! operations, never across `.await`. Taking a lease is serialised by one async mutex, so two
//! requests for a new key on this kelp never race each other for the same lock.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tracing::{Instrument, debug, debug_span, info, warn};

use super::{Decision, Held, Timing, decide, peer_of};
use crate::error::Error;
use crate::seaweed::{LockAnswer, Seaweed};
use crate::shutdown::{CancellationToken, TaskTracker};

/// Where a key's requests are answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// This kelp holds the lease (or does everything itself).
    Local,
    /// The holder's peer address.
    Remote(String),
}

/// Remote holders remembered at most; past it, expired entries are dropped and, if it is
/// still full, the holder is not remembered (the next request asks the filer again). Keys are
/// validated before they get here (a group id, an existing partition), but the ids are still
/// chosen by clients.
const MAX_REMOTE: usize = 100_000;

/// What one kind of lease is called and where its locks live.
#[derive(Clone, Copy)]
pub struct Kind {
    /// For logs: "group", "partition".
    pub what: &'static str,
    /// The filer lock of a key, under a filer root (`seaweed::layout`).
    pub lock_name: fn(&str, &str) -> String,
}

/// The leases of one kind held by one kelp, and what it learned of other holders.
pub struct Leases {
    seaweed: Seaweed,
    root: String,
    kind: Kind,
    /// This kelp's owner string (`lease::owner_id`).
    me: String,
    timing: Timing,
    held: Mutex<HashMap<String, Held>>,
    /// Key → (holder's peer address, trusted until). A forward that fails or is refused
    /// by the named holder forgets the entry, so the next request looks again.
    remote: Mutex<HashMap<String, (String, Instant)>>,
    /// One gate per key being acquired right now: a second request for the same key waits for
    /// the first (and then finds the answer known), while acquisitions of different keys, and
    /// the preparation a new lease may need, run side by side. Entries leave with their last
    /// waiter, so the map never holds more keys than requests in flight.
    acquiring: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Keys [`Leases::holder`] found held by nobody, until when that answer is trusted
    /// ([`VACANT_FOR`]); bounded like `remote`.
    vacant: Mutex<HashMap<String, Instant>>,
}

/// How long [`Leases::holder`] trusts "nobody holds it" before asking the filer again.
const VACANT_FOR: Duration = Duration::from_secs(1);

/// A key's acquisition gate, removed from [`Leases::acquiring`] when its last user drops it.
struct Gate<'a> {
    leases: &'a Leases,
    key: &'a str,
    gate: Arc<tokio::sync::Mutex<()>>,
}

impl<'a> Gate<'a> {
    fn enter(leases: &'a Leases, key: &'a str) -> Gate<'a> {
        let gate = leases.acquiring.lock().entry(key.to_string()).or_default().clone();
        Gate { leases, key, gate }
    }
}

impl Drop for Gate<'_> {
    fn drop(&mut self) {
        let mut acquiring = self.leases.acquiring.lock();
        // The map's reference and this one: nobody else waits on the key.
        if Arc::strong_count(&self.gate) == 2 {
            acquiring.remove(self.key);
        }
    }
}

impl Leases {
    pub fn new(seaweed: Seaweed, root: String, kind: Kind, me: String, lease: Duration) -> Leases {
        Leases {
            seaweed,
            root,
            kind,
            me,
            timing: Timing::new(lease),
            held: Mutex::new(HashMap::new()),
            remote: Mutex::new(HashMap::new()),
            acquiring: Mutex::new(HashMap::new()),
            vacant: Mutex::new(HashMap::new()),
        }
    }

    /// Whether this kelp may act as `key`'s holder at `now` (and note that it was used).
    pub fn owns(&self, key: &str, now: Instant) -> bool {
        let mut held = self.held.lock();
        match held.get_mut(key) {
            Some(h) if h.is_valid(now) => {
                h.touch(now);
                true
            }
            _ => false,
        }
    }

    /// Where `key`'s requests go, taking its lease when nobody holds it (never by force).
    /// The flag is true when the lease was just taken: whatever this kelp remembered of the
    /// key is stale. `Ok(None)`: nobody can serve the key right now (retriable).
    pub async fn route(
        &self,
        key: &str,
        now: impl Fn() -> Instant,
    ) -> Result<Option<(Route, bool)>, Error> {
        self.route_prepared(key, now, || async { Ok(()) }).await
    }

    /// [`Leases::route`], running `prepare` when the lease was just taken, before anyone on
    /// this kelp acts under it (others asking meanwhile wait for it). If `prepare` fails the
    /// lease is released again and the error returned.
    pub async fn route_prepared<F, Fut>(
        &self,
        key: &str,
        now: impl Fn() -> Instant,
        prepare: F,
    ) -> Result<Option<(Route, bool)>, Error>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(), Error>>,
    {
        if let Some(r) = self.known(key, now()) {
            return Ok(Some((r, false)));
        }
        let gate = Gate::enter(self, key);
        let _one_at_a_time = gate.gate.lock().await;
        if let Some(r) = self.known(key, now()) {
            return Ok(Some((r, false)));
        }
        let sent_at = now();
        let answer = self.lock(key, "").await?;
        let what = self.kind.what;
        Ok(match decide(answer, &self.me) {
            Decision::Mine(token) => {
                if let Err(e) = prepare().await {
                    debug!(what, key, error = %e, "could not prepare to act under a new lease");
                    let _ = self.release(key, &token).await;
                    return Err(e);
                }
                info!(what, key, "took the lease");
                crate::metrics::global().observe_lease_taken(what);
                let now = now();
                self.held
                    .lock()
                    .insert(key.to_string(), Held::granted(token, sent_at, now, &self.timing));
                Some((Route::Local, true))
            }
            Decision::Elsewhere(peer) => {
                debug!(what, key, holder = %peer, "held by another kelp");
                let now = now();
                let mut remote = self.remote.lock();
                if remote.len() >= MAX_REMOTE {
                    remote.retain(|_, (_, until)| now < *until);
                }
                if remote.len() < MAX_REMOTE {
                    remote.insert(key.to_string(), (peer.clone(), now + self.timing.lease()));
                }
                Some((Route::Remote(peer), false))
            }
            Decision::Unavailable => None,
        })
    }

    /// Whether nobody holds `key`'s lease: not this kelp, and the filer names no holder.
    /// Takes nothing, so a lookup of something nobody owns leaves no lease behind.
    pub async fn is_free(&self, key: &str, now: Instant) -> Result<bool, Error> {
        if self.known(key, now).is_some() {
            return Ok(false);
        }
        let name = (self.kind.lock_name)(&self.root, key);
        Ok(self.seaweed.filer_lock_owner(&name).await?.is_none())
    }

    /// Who holds `key` now, without taking its lease or marking it used: `Ok(None)` when
    /// nobody does (or nobody that can be forwarded to). Asks the filer at most once per
    /// [`VACANT_FOR`] for a key nobody holds, and not at all while a holder is known.
    pub async fn holder(&self, key: &str, now: Instant) -> Result<Option<Route>, Error> {
        if self.held.lock().get(key).is_some_and(|h| h.is_valid(now)) {
            return Ok(Some(Route::Local));
        }
        if let Some((peer, until)) = self.remote.lock().get(key)
            && now < *until
        {
            return Ok(Some(Route::Remote(peer.clone())));
        }
        if self.vacant.lock().get(key).is_some_and(|until| now < *until) {
            return Ok(None);
        }
        let owner = self.seaweed.filer_lock_owner(&(self.kind.lock_name)(&self.root, key)).await?;
        let peer = owner.as_deref().and_then(peer_of).filter(|p| Some(*p) != peer_of(&self.me));
        match peer {
            Some(peer) => {
                let mut remote = self.remote.lock();
                if remote.len() >= MAX_REMOTE {
                    remote.retain(|_, (_, until)| now < *until);
                }
                if remote.len() < MAX_REMOTE {
                    remote.insert(key.to_string(), (peer.to_string(), now + self.timing.lease()));
                }
                Ok(Some(Route::Remote(peer.to_string())))
            }
            None => {
                let mut vacant = self.vacant.lock();
                if vacant.len() >= MAX_REMOTE {
                    vacant.retain(|_, until| now < *until);
                }
                if vacant.len() < MAX_REMOTE {
                    vacant.insert(key.to_string(), now + VACANT_FOR);
                }
                Ok(None)
            }
        }
    }

    /// What this kelp knows without asking the filer.
    fn known(&self, key: &str, now: Instant) -> Option<Route> {
        if self.owns(key, now) {
            return Some(Route::Local);
        }
        let mut remote = self.remote.lock();
        match remote.get(key) {
            Some((peer, until)) if now < *until => Some(Route::Remote(peer.clone())),
            Some(_) => {
                remote.remove(key);
                None
            }
            None => None,
        }
    }

    /// Forget who holds `key` elsewhere (the holder did not answer, or said it does not).
    pub fn forget_remote(&self, key: &str) {
        self.remote.lock().remove(key);
    }

    /// Leases due for renewal at `now`, marked as being renewed: (key, token).
    fn start_renewals(&self, now: Instant) -> Vec<(String, String)> {
        let mut held = self.held.lock();
        held.iter_mut()
            .filter_map(|(k, h)| h.start_renewal(now).map(|token| (k.clone(), token)))
            .collect()
    }

    /// The renewal sent at `sent_at` was granted. `false` when the lease is no longer held
    /// here (given up meanwhile): the caller must release the lock it just renewed.
    fn renewed(&self, key: &str, token: String, sent_at: Instant) -> bool {
        match self.held.lock().get_mut(key) {
            Some(h) if h.is_renewing() => {
                h.renewed(token, sent_at, &self.timing);
                true
            }
            _ => false,
        }
    }

    /// The renewal got no answer; it is retried until the lease's stop time.
    fn renewal_failed(&self, key: &str, now: Instant) {
        if let Some(h) = self.held.lock().get_mut(key) {
            h.renewal_failed(now, &self.timing);
        }
    }

    /// Stop holding `key`'s lease; its token, to release it with.
    pub fn give_up(&self, key: &str) -> Option<String> {
        self.held.lock().remove(key).map(|h| h.token().to_string())
    }

    /// Leases past their stop time (renewals failed for too long), no longer held.
    fn take_expired(&self, now: Instant) -> Vec<String> {
        let mut held = self.held.lock();
        let expired: Vec<String> =
            held.iter().filter(|(_, h)| !h.is_valid(now)).map(|(k, _)| k.clone()).collect();
        for k in &expired {
            held.remove(k);
        }
        expired
    }

    /// Keys no request used for a whole lease: candidates for release.
    fn idle(&self, now: Instant) -> Vec<String> {
        let lease = self.timing.lease();
        let held = self.held.lock();
        held.iter()
            .filter(|(_, h)| !h.is_renewing() && h.idle_for(now) >= lease)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Every lease, no longer held: (key, token). For shutdown.
    fn take_all(&self) -> Vec<(String, String)> {
        self.held.lock().drain().map(|(k, h)| (k, h.token().to_string())).collect()
    }

    /// Release `key`'s lock held with `token`, so another kelp can take it at once.
    pub async fn release(&self, key: &str, token: &str) -> Result<(), Error> {
        self.seaweed.filer_unlock(&(self.kind.lock_name)(&self.root, key), token).await
    }

    /// Pretend a grant sent at `sent_at` succeeded (tests without a filer).
    #[cfg(test)]
    pub(crate) fn hold(&self, key: &str, token: &str, sent_at: Instant) {
        self.held.lock().insert(
            key.to_string(),
            Held::granted(token.to_string(), sent_at, sent_at, &self.timing),
        );
    }

    async fn lock(&self, key: &str, token: &str) -> Result<LockAnswer, Error> {
        let name = (self.kind.lock_name)(&self.root, key);
        self.seaweed.filer_lock(&name, self.timing.lock_seconds, token, &self.me).await
    }
}

/// What holds the leases of one kind: told when one ends, asked before an idle one is let go.
pub trait Holder: Clone + Send + Sync + 'static {
    /// `key`'s lease ended while this kelp still held it (lost to another kelp, expired after
    /// failed renewals, or taken back on shutdown): stop acting on `key`.
    fn ended(&self, key: &str);

    /// `key` was not used for a whole lease. If nothing is going on with it, forget it and
    /// call `give_up` (which ends the lease here and returns the token to release it with),
    /// under whatever lock keeps new work off `key` meanwhile; `None` keeps the lease.
    fn release_if_quiet(&self, key: &str, give_up: &dyn Fn() -> Option<String>) -> Option<String>;

    /// Before the leases are released on shutdown (each already given up here): wait,
    /// bounded, for work that began while they were held.
    fn quiesce(&self) -> impl Future<Output = ()> + Send;
}

/// Keep `leases` until `cancel`: renew when due, end those whose renewals failed until their
/// stop time, release idle ones; on cancel, give them all up, let `holder` finish what it
/// started under them, and release them. Renewals and releases run on `tracker`.
pub async fn run<H: Holder>(
    leases: Arc<Leases>,
    holder: H,
    tick: Duration,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let what = leases.kind.what;
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = interval.tick() => {}
        }
        for key in leases.take_expired(now()) {
            warn!(what, key = %key, "lease could not be renewed in time; no longer acting on it");
            holder.ended(&key);
        }
        for key in leases.idle(now()) {
            let give_up = || leases.give_up(&key);
            if let Some(token) = holder.release_if_quiet(&key, &give_up) {
                let leases = Arc::clone(&leases);
                tracker.spawn(
                    async move {
                        match leases.release(&key, &token).await {
                            Ok(()) => debug!(what, key = %key, "idle lease released"),
                            Err(e) => {
                                debug!(what, key = %key, error = %e, "releasing an idle lease failed; it expires on its own")
                            }
                        }
                    }
                    .instrument(debug_span!("lease_release")),
                );
            }
        }
        for (key, token) in leases.start_renewals(now()) {
            let (h, leases) = (holder.clone(), Arc::clone(&leases));
            tracker.spawn(
                async move { renew(&leases, &h, key, token).await }
                    .instrument(debug_span!("lease_renewal")),
            );
        }
    }
    let all = leases.take_all();
    for (key, _) in &all {
        holder.ended(key);
    }
    holder.quiesce().await;
    let released =
        futures::future::join_all(all.iter().map(|(key, token)| leases.release(key, token))).await;
    for ((key, _), r) in all.iter().zip(released) {
        match r {
            Ok(()) => debug!(what, key = %key, "lease released"),
            Err(e) => {
                warn!(what, key = %key, error = %e, "releasing the lease failed; it expires on its own")
            }
        }
    }
}

async fn renew<H: Holder>(leases: &Leases, holder: &H, key: String, token: String) {
    let what = leases.kind.what;
    let sent_at = now();
    match leases.lock(&key, &token).await {
        Ok(LockAnswer::Granted { token }) => {
            if !leases.renewed(&key, token.clone(), sent_at) {
                // Given up meanwhile (shutdown, or its stop time passed): let it go.
                let _ = leases.release(&key, &token).await;
            }
        }
        Ok(other) => {
            info!(what, key = %key, answer = ?other, "lease lost; no longer acting on it");
            leases.give_up(&key);
            holder.ended(&key);
        }
        Err(e) => {
            debug!(what, key = %key, error = %e, "renewing the lease failed; retrying");
            leases.renewal_failed(&key, now());
        }
    }
}

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seaweed::SeaweedOptions;

    /// Leases held as `me`, with a filer that cannot be reached.
    async fn unreachable_leases(me: String) -> Leases {
        let seaweed = Seaweed::connect(SeaweedOptions {
            master: "127.0.0.1:1".into(),
            filer: Some("127.0.0.1:1".into()),
            namespace: "kafka".into(),
            call_timeout: Duration::from_millis(200),
        })
        .await
        .expect("options are valid");
        let kind = Kind { what: "test", lock_name: |root, key| format!("{root}/{key}") };
        Leases::new(seaweed, "/kelp".into(), kind, me, Duration::from_secs(3))
    }

    #[tokio::test]
    async fn acquisitions_wait_per_key_and_their_gates_leave_with_them() {
        let leases = unreachable_leases("me".into()).await;
        let a = Gate::enter(&leases, "a");
        let held = a.gate.try_lock().expect("free");
        let again = Gate::enter(&leases, "a");
        assert!(again.gate.try_lock().is_err(), "the same key waits");
        let b = Gate::enter(&leases, "b");
        assert!(b.gate.try_lock().is_ok(), "another key does not");
        drop((held, again, b));
        assert_eq!(leases.acquiring.lock().len(), 1, "a's first user still holds its gate");
        drop(a);
        assert!(leases.acquiring.lock().is_empty());
    }

    #[tokio::test]
    async fn holder_answers_from_what_is_known_and_never_takes_the_lease() {
        // An unreachable filer: every answer below must come without asking it, except the
        // last, which must fail rather than claim the key is free.
        let leases = unreachable_leases(super::super::owner_id("10.0.0.1:9093", "i1")).await;
        let now = Instant::now();
        leases.hold("mine", "t", now);
        assert_eq!(leases.holder("mine", now).await.unwrap(), Some(Route::Local));
        leases
            .remote
            .lock()
            .insert("theirs".into(), ("10.0.0.2:9093".into(), now + Duration::from_secs(3)));
        assert_eq!(
            leases.holder("theirs", now).await.unwrap(),
            Some(Route::Remote("10.0.0.2:9093".into()))
        );
        leases.vacant.lock().insert("free".into(), now + VACANT_FOR);
        assert_eq!(leases.holder("free", now).await.unwrap(), None);
        assert!(leases.holder("free", now + VACANT_FOR).await.is_err(), "asked the filer again");
        assert!(leases.holder("unknown", now).await.is_err());
        assert!(!leases.held.lock().contains_key("unknown"), "nothing was taken");
    }
}

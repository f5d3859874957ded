//! Leases: how a kelp comes to own something (a consumer group, the writing of a partition)
//! when several kelps front one SeaweedFS. Groups and partitions are both "things a kelp
//! owns" (DESIGN.md); this module is what they share.
//!
//! A kelp owns a key while it holds the key's lock in the filer's lock manager
//! (`Seaweed::filer_lock`, named by `seaweed::layout`). The filer expires that lock
//! `lock_seconds` after a grant or renewal *arrives* there, on the filer's own clock. The
//! owner cannot read that clock, so it measures from when it *sent* the call, on its own
//! monotonic clock: the filer's expiry is no earlier than send time + lease, so an owner that
//! stops acting at send time + lease − margin has stopped before any other kelp can be
//! granted the lock (fencing by time). The margin absorbs clocks that tick at slightly
//! different rates and the time between a request's ownership check and its effect. No wall
//! clocks are compared, so kelps need no clock synchronisation.
//!
//! One lease, L = the configured lease (10 s by default), t0 = when the grant was sent:
//! ```text
//! t0 ── grant ── t0+L/3 renew ── t0+2L/3 renew ── t0+L−L/5: stop unless renewed ── t0+L: earliest filer expiry
//! ```
//! A failed renewal is retried every `retry` until the stop time.
//!
//! Owns: [`Timing`], the state of one held lease ([`Held`]), the owner string recorded in the
//! lock, [`decide`] (what a lock answer means for this kelp), all pure and driven by an
//! explicit clock; and, in `table`, the leases of one kind ([`Leases`]: taking, renewing,
//! releasing, the cache of other holders) and the task that keeps them ([`run`], telling a
//! [`Holder`] when a lease ends). Does not own: what is done under a lease (`group`,
//! `writers`) or forwarding (`routing`, `peer`).

mod table;

pub use table::{Holder, Kind, Leases, Route, run};

use std::time::{Duration, Instant};

use crate::seaweed::LockAnswer;

/// The shortest pause between failed renewals: for short leases L/20 would retry a filer that
/// is down many times a second without any better chance of an answer.
const SHORTEST_RETRY: Duration = Duration::from_millis(100);

/// The timing of every lease of one kelp, derived from the configured lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// What the filer is asked for; its lock API counts whole seconds.
    pub lock_seconds: i64,
    /// Renew this long after the last grant or renewal was sent.
    pub renew_every: Duration,
    /// Stop acting as owner this long before the earliest moment the filer could expire the
    /// lock.
    pub margin: Duration,
    /// Pause before retrying a renewal that failed without an answer.
    pub retry: Duration,
}

impl Timing {
    /// Timing for a lease of `lease`, rounded up to whole seconds (at least one).
    pub fn new(lease: Duration) -> Timing {
        let lock_seconds = lease.as_millis().div_ceil(1000).max(1) as i64;
        let lease = Duration::from_secs(lock_seconds as u64);
        Timing {
            lock_seconds,
            renew_every: lease / 3,
            margin: lease / 5,
            retry: (lease / 20).max(SHORTEST_RETRY),
        }
    }

    /// The lease as the filer applies it.
    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.lock_seconds as u64)
    }
}

/// A lease this kelp holds on one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// The token of the last grant or renewal; the next renewal must present it.
    token: String,
    /// This kelp acts as owner only before this instant (see the module docs).
    valid_until: Instant,
    /// When to renew next.
    renew_at: Instant,
    /// When a request last used the key here; a lease idle for a whole lease on a key with
    /// nothing going on is released.
    last_used: Instant,
    /// A renewal call is in flight (so no second one is started).
    renewing: bool,
}

impl Held {
    /// A lease just granted for a lock call sent at `sent_at`.
    pub fn granted(token: String, sent_at: Instant, now: Instant, t: &Timing) -> Held {
        Held {
            token,
            valid_until: sent_at + t.lease() - t.margin,
            renew_at: sent_at + t.renew_every,
            last_used: now,
            renewing: false,
        }
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    #[cfg(test)]
    pub fn valid_until(&self) -> Instant {
        self.valid_until
    }

    /// Whether this kelp may act as the key's owner at `now`.
    pub fn is_valid(&self, now: Instant) -> bool {
        now < self.valid_until
    }

    /// A request used the key.
    pub fn touch(&mut self, now: Instant) {
        self.last_used = now;
    }

    /// How long no request used the key.
    pub fn idle_for(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.last_used)
    }

    pub fn is_renewing(&self) -> bool {
        self.renewing
    }

    /// If a renewal is due at `now` and none is in flight, mark one in flight and return the
    /// token to renew with. A lease past its stop time is not renewed: it is over.
    pub fn start_renewal(&mut self, now: Instant) -> Option<String> {
        if self.renewing || now < self.renew_at || !self.is_valid(now) {
            return None;
        }
        self.renewing = true;
        Some(self.token.clone())
    }

    /// The renewal sent at `sent_at` was granted with `token`: the lease now runs from that
    /// send time (not from when the answer came back).
    pub fn renewed(&mut self, token: String, sent_at: Instant, t: &Timing) {
        self.token = token;
        self.valid_until = sent_at + t.lease() - t.margin;
        self.renew_at = sent_at + t.renew_every;
        self.renewing = false;
    }

    /// The renewal got no answer (filer unreachable, timeout): try again soon. The lease
    /// stays valid until its stop time, no longer.
    pub fn renewal_failed(&mut self, now: Instant, t: &Timing) {
        self.renewing = false;
        self.renew_at = now + t.retry;
    }
}

/// The owner string recorded in a lease's lock: `<peer address> <instance>`. The peer address
/// is where other kelps forward the key's requests; the instance (random per process) tells
/// a kelp restarted at the same address from its previous life, whose lease it must wait out
/// like anyone else's.
pub fn owner_id(peer: &str, instance: &str) -> String {
    format!("{peer} {instance}")
}

/// The peer address in an owner string; `None` for a string kelp did not write.
pub fn peer_of(owner: &str) -> Option<&str> {
    let (peer, instance) = owner.split_once(' ')?;
    (!peer.is_empty() && !instance.is_empty() && peer.contains(':')).then_some(peer)
}

/// What taking a lock meant for this kelp (`me` is its owner string).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// This kelp now owns the key; renew with this token.
    Mine(String),
    /// Another kelp owns it; forward to this peer address.
    Elsewhere(String),
    /// Nobody can serve the key right now: the filer refused without naming a holder, the
    /// holder is this process under a token it no longer knows (a renewal whose answer was
    /// lost) or a previous process at this kelp's address, or the holder's owner string is
    /// not kelp's. Retriable; the lock expires on its own.
    Unavailable,
}

pub fn decide(answer: LockAnswer, me: &str) -> Decision {
    match answer {
        LockAnswer::Granted { token } => Decision::Mine(token),
        LockAnswer::HeldBy(owner) => match peer_of(&owner) {
            // This process under a lost token, or this kelp's previous life at the same
            // address: forwarding would only come back here.
            Some(peer) if Some(peer) == peer_of(me) => Decision::Unavailable,
            Some(peer) => Decision::Elsewhere(peer.to_string()),
            None => Decision::Unavailable,
        },
        LockAnswer::Refused(_) => Decision::Unavailable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn timing_rounds_up_to_whole_seconds_and_renews_three_times_per_lease() {
        let t = Timing::new(ms(10_000));
        assert_eq!(
            (t.lock_seconds, t.renew_every.as_millis(), t.margin, t.retry),
            (10, 3_333, ms(2_000), ms(500))
        );
        assert_eq!(
            Timing::new(ms(2_500)).lock_seconds,
            3,
            "the filer counts seconds: rounded up, never down"
        );
        assert_eq!(Timing::new(ms(1)).lock_seconds, 1);
        let t = Timing::new(ms(3_000));
        // Two renewals fit before the stop time, so one lost call never ends ownership.
        assert!(t.renew_every * 2 < t.lease() - t.margin);
    }

    #[test]
    fn an_owner_stops_before_the_filer_could_grant_the_lock_to_anyone_else() {
        let t = Timing::new(ms(10_000));
        let t0 = Instant::now();
        // The grant took 3 s to come back; the filer started counting somewhere in between.
        let h = Held::granted("a".into(), t0, t0 + ms(3_000), &t);
        let earliest_filer_expiry = t0 + t.lease();
        assert!(h.is_valid(t0 + ms(7_999)));
        assert!(!h.is_valid(t0 + ms(8_000)));
        assert_eq!(earliest_filer_expiry - h.valid_until(), t.margin);
    }

    #[test]
    fn a_renewal_extends_the_lease_from_its_send_time() {
        let t = Timing::new(ms(9_000));
        let t0 = Instant::now();
        let mut h = Held::granted("a".into(), t0, t0, &t);
        assert_eq!(h.start_renewal(t0 + ms(2_999)), None, "not due yet");
        let sent = t0 + ms(3_000);
        assert_eq!(h.start_renewal(sent), Some("a".into()));
        assert_eq!(h.start_renewal(sent + ms(10)), None, "one renewal in flight at a time");
        // The answer is slow; the lease counts from the send.
        h.renewed("b".into(), sent, &t);
        assert_eq!(h.token(), "b");
        assert_eq!(h.valid_until(), sent + ms(9_000) - ms(1_800));
        assert_eq!(h.start_renewal(sent + ms(2_999)), None);
        assert_eq!(h.start_renewal(sent + ms(3_000)), Some("b".into()));
    }

    #[test]
    fn failed_renewals_are_retried_until_the_stop_time_and_then_the_lease_is_over() {
        let t = Timing::new(ms(10_000));
        let t0 = Instant::now();
        let mut h = Held::granted("a".into(), t0, t0, &t);
        let mut now = t0 + t.renew_every;
        let mut attempts = 0;
        while let Some(token) = h.start_renewal(now) {
            assert_eq!(token, "a");
            attempts += 1;
            h.renewal_failed(now, &t);
            now += t.retry;
        }
        // From 3.33 s to 8 s every 0.5 s: ownership ends on time however often it fails.
        assert_eq!(attempts, 10);
        assert!(!h.is_valid(now));
        assert!(now >= t0 + t.lease() - t.margin);
    }

    #[test]
    fn idle_time_counts_from_the_last_use() {
        let t = Timing::new(ms(10_000));
        let t0 = Instant::now();
        let mut h = Held::granted("a".into(), t0, t0, &t);
        h.touch(t0 + ms(4_000));
        assert_eq!(h.idle_for(t0 + ms(5_000)), ms(1_000));
        assert_eq!(h.idle_for(t0), Duration::ZERO);
    }

    #[test]
    fn owner_strings_carry_the_peer_address() {
        assert_eq!(owner_id("10.0.0.7:9093", "3f2a"), "10.0.0.7:9093 3f2a");
        assert_eq!(peer_of("10.0.0.7:9093 3f2a"), Some("10.0.0.7:9093"));
        assert_eq!(peer_of("[::1]:9093 3f2a"), Some("[::1]:9093"));
        for foreign in ["", "10.0.0.7:9093", " 3f2a", "10.0.0.7:9093 ", "broker-1 x"] {
            assert_eq!(peer_of(foreign), None, "{foreign:?}");
        }
    }

    #[test]
    fn what_a_lock_answer_means() {
        let me = owner_id("10.0.0.7:9093", "me");
        let granted = LockAnswer::Granted { token: "t".into() };
        assert_eq!(decide(granted, &me), Decision::Mine("t".into()));
        let other = LockAnswer::HeldBy(owner_id("10.0.0.8:9093", "x"));
        assert_eq!(decide(other, &me), Decision::Elsewhere("10.0.0.8:9093".into()));
        // Our own lock under a token we lost: wait for it to expire like anyone else.
        assert_eq!(decide(LockAnswer::HeldBy(me.clone()), &me), Decision::Unavailable);
        // A kelp restarted at the same address waits out its previous life's lease too.
        let previous_life = LockAnswer::HeldBy(owner_id("10.0.0.7:9093", "before"));
        assert_eq!(decide(previous_life, &me), Decision::Unavailable);
        assert_eq!(
            decide(LockAnswer::HeldBy("broker_balancer".into()), &me),
            Decision::Unavailable
        );
        assert_eq!(
            decide(LockAnswer::Refused("lock: non-empty token on a new lock".into()), &me),
            Decision::Unavailable
        );
    }
}

//! One quota's meter: a `governor` GCRA limiter (a token bucket holding one second of the
//! rate) that answers "within quota" or "over quota by this long" — never an error.
//!
//! Kafka records what a client sent even when it is over quota and then makes it wait. A
//! governor limiter only admits or refuses, so kelp turns a refusal into a debt: the amount is
//! not admitted now, the client is told how long to wait, and the connection is not read again
//! until the debt has been admitted ([`Meter::try_pay`], driven by `quota::conn`'s hold). Over time
//! the client gets exactly the rate, whether or not it honours `throttle_time_ms`.
//!
//! Owns: one rate's bucket, its charge and debt-payment arithmetic, and the conversion of a
//! throttle to milliseconds. Does not own: which meter governs a client (`quota`, `rules`)
//! or who waits and when (`quota::conn`).

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

/// How much a client may send at once after being idle: one second of its rate (Kafka
/// measures over 11 one-second windows; one second keeps bursts short for a sidecar).
pub const BURST: Duration = Duration::from_secs(1);

/// Finest cell period: above a million units per second one cell stands for several units,
/// so governor's nanosecond arithmetic stays exact to well under 0.1 %.
const MIN_PERIOD: Duration = Duration::from_micros(1);

/// Bounds every meter's rate stays in whatever it is given: the validated range of request
/// rates at the bottom, the validated maximum at the top (`rules::validate_value`).
const MIN_RATE: f64 = super::rules::MIN_REQUEST_RATE;
const MAX_RATE: f64 = super::rules::MAX_RATE;

/// governor refuses a zero cell period; float rounding of `unit / rate` must not produce one.
const SHORTEST_PERIOD: Duration = Duration::from_nanos(1);

/// The shortest wait ever reported: `throttle_time_ms` 0 would tell the client it is not
/// throttled, and a debt retried sooner than this would only spin.
const SHORTEST_WAIT: Duration = Duration::from_millis(1);

/// The answer to one charge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charge {
    /// Admitted.
    Within,
    /// Not admitted: the client is over quota and would be within it after `throttle`.
    Over { throttle: Duration },
}

type Limiter<C> = RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// A rate of `rate` units (bytes or requests) per second.
pub struct Meter<C: Clock + Clone = DefaultClock> {
    limiter: Limiter<C>,
    clock: C,
    rate: f64,
    /// Units per cell.
    unit: u64,
    /// Cells in a full bucket.
    burst: u32,
    period: Duration,
}

impl Meter<DefaultClock> {
    pub fn new(rate: f64) -> Meter {
        Meter::with_clock(rate, DefaultClock::default())
    }
}

impl<C: Clock + Clone> Meter<C> {
    /// A meter on `clock` (a fake clock in tests). Rates are validated where they are read
    /// (`rules::validate_value`); a rate outside that range anyway (not finite, or beyond it)
    /// is clamped into it rather than allowed to panic.
    pub fn with_clock(rate: f64, clock: C) -> Meter<C> {
        let rate = if rate.is_nan() { MAX_RATE } else { rate.clamp(MIN_RATE, MAX_RATE) };
        let unit = (rate * MIN_PERIOD.as_secs_f64()).ceil().max(1.0) as u64;
        let period = Duration::try_from_secs_f64(unit as f64 / rate)
            .unwrap_or(Duration::MAX)
            .max(SHORTEST_PERIOD);
        let burst = (rate * BURST.as_secs_f64() / unit as f64)
            .ceil()
            .clamp(1.0, f64::from(u32::MAX)) as u32;
        let quota = Quota::with_period(period)
            .expect("period is at least 1 ns")
            .allow_burst(NonZeroU32::new(burst).expect("burst is at least 1"));
        Meter {
            limiter: RateLimiter::direct_with_clock(quota, clock.clone()),
            clock,
            rate,
            unit,
            burst,
            period,
        }
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// The most units one charge can be admitted in (a full bucket).
    pub fn burst_units(&self) -> u64 {
        u64::from(self.burst) * self.unit
    }

    fn cells(&self, units: u64) -> u64 {
        units.div_ceil(self.unit).max(1)
    }

    /// Admit `units` now if the bucket holds them; otherwise say how long until it would.
    /// Amounts larger than a full bucket are never admitted here (they are paid in parts
    /// through [`Meter::try_pay`]); their throttle is the time the excess takes to refill.
    pub fn charge(&self, units: u64) -> Charge {
        let cells = self.cells(units);
        if cells > u64::from(self.burst) {
            return Charge::Over {
                throttle: self.period.saturating_mul(
                    u32::try_from(cells - u64::from(self.burst)).unwrap_or(u32::MAX),
                ),
            };
        }
        let n = NonZeroU32::new(cells as u32).expect("at least one cell");
        match self.limiter.check_n(n) {
            Ok(Ok(())) => Charge::Within,
            Ok(Err(not_until)) => Charge::Over {
                throttle: not_until.wait_time_from(self.clock.now()).max(SHORTEST_WAIT),
            },
            Err(_) => unreachable!("cells were checked against the burst"),
        }
    }

    /// Pay part of a debt of `units`: admit as much as a slice of the bucket allows and return
    /// what remains, or the time to wait before trying again. Paying in slices lets the
    /// connections sharing one meter take turns instead of one waiting for a full bucket.
    pub fn try_pay(&self, units: u64) -> Result<u64, Duration> {
        if units == 0 {
            return Ok(0);
        }
        let slice = (u64::from(self.burst) / 8).max(1);
        let cells = self.cells(units).min(slice);
        let n = NonZeroU32::new(cells as u32).expect("at least one cell");
        match self.limiter.check_n(n) {
            Ok(Ok(())) => Ok(units.saturating_sub(cells * self.unit)),
            Ok(Err(not_until)) => {
                Err(not_until.wait_time_from(self.clock.now()).max(SHORTEST_WAIT))
            }
            Err(_) => unreachable!("a slice fits the bucket"),
        }
    }
}

/// Milliseconds of `d` for `throttle_time_ms`, rounded up (a throttled response never says 0).
pub fn throttle_ms(d: Duration) -> i32 {
    let ms = d.as_nanos().div_ceil(1_000_000);
    i32::try_from(ms).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    #[test]
    fn rates_outside_the_validated_range_make_a_meter_instead_of_a_panic() {
        for rate in [1e-20, 0.0, -5.0, f64::NAN, f64::INFINITY, 1e300, f64::MIN_POSITIVE] {
            let (m, _) = meter(rate);
            assert!(m.rate() >= MIN_RATE && m.rate() <= MAX_RATE, "{rate}");
            let _ = m.charge(u64::MAX);
        }
    }

    fn meter(rate: f64) -> (Meter<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        (Meter::with_clock(rate, clock.clone()), clock)
    }

    #[test]
    fn within_then_over_with_the_time_the_bucket_needs() {
        // 1000 B/s, bucket of 1000 B.
        let (m, clock) = meter(1000.0);
        assert_eq!(m.burst_units(), 1000);
        assert_eq!(m.charge(600), Charge::Within);
        // 400 left; 600 more need 200 ms.
        assert_eq!(m.charge(600), Charge::Over { throttle: Duration::from_millis(200) });
        clock.advance(Duration::from_millis(199));
        assert!(matches!(m.charge(600), Charge::Over { .. }));
        clock.advance(Duration::from_millis(1));
        assert_eq!(m.charge(600), Charge::Within);
    }

    #[test]
    fn over_quota_is_never_an_error_even_beyond_the_bucket() {
        let (m, _) = meter(100.0);
        // Ten buckets' worth: 9 s of refill beyond the first bucket.
        assert_eq!(m.charge(1000), Charge::Over { throttle: Duration::from_secs(9) });
        assert_eq!(
            m.charge(u64::MAX),
            Charge::Over { throttle: Duration::from_nanos(10_000_000).saturating_mul(u32::MAX) }
        );
    }

    #[test]
    fn a_debt_is_paid_in_slices_at_the_rate() {
        let (m, clock) = meter(1000.0);
        let mut owed = 3000u64;
        let mut waited = Duration::ZERO;
        while owed > 0 {
            match m.try_pay(owed) {
                Ok(rest) => owed = rest,
                Err(wait) => {
                    clock.advance(wait);
                    waited += wait;
                }
            }
        }
        // The first 1000 come from the full bucket, the other 2000 take 2 s.
        assert_eq!(waited, Duration::from_secs(2));
        assert!(matches!(m.charge(1), Charge::Over { .. }), "the debt used the bucket up");
    }

    #[test]
    fn sustained_rate_is_the_quota() {
        // Charge 100-unit requests as fast as allowed for 10 simulated seconds.
        let (m, clock) = meter(5000.0);
        let mut admitted = 0u64;
        let end = Duration::from_secs(10);
        let mut now = Duration::ZERO;
        while now < end {
            match m.charge(100) {
                Charge::Within => admitted += 100,
                Charge::Over { throttle } => {
                    clock.advance(throttle);
                    now += throttle;
                }
            }
        }
        // One bucket plus ten seconds of refill.
        let expected = 5000 + 50_000;
        assert!(admitted.abs_diff(expected) <= 200, "admitted {admitted}");
    }

    #[test]
    fn large_and_small_rates_keep_their_precision() {
        for rate in [0.5, 3.0, 1_000_000.0, 3_000_000.0, 750_000_000.0, 5e10] {
            let (m, clock) = meter(rate);
            // Use up the bucket, then wait one second and count what one second admits.
            while m.try_pay(u64::MAX).is_ok() {}
            clock.advance(Duration::from_secs(1));
            let mut got = 0u64;
            let mut owed = u64::MAX;
            while let Ok(rest) = m.try_pay(owed) {
                got += owed - rest;
                owed = rest;
            }
            let expected = rate.max(1.0);
            assert!(
                (got as f64 - expected).abs() <= expected * 0.001 + 1.0 + m.unit as f64,
                "rate {rate}: {got}"
            );
        }
    }

    #[test]
    fn throttle_ms_rounds_up() {
        assert_eq!(throttle_ms(Duration::from_micros(1)), 1);
        assert_eq!(throttle_ms(Duration::from_millis(250)), 250);
        assert_eq!(throttle_ms(Duration::from_secs(u64::MAX / 4)), i32::MAX);
    }
}

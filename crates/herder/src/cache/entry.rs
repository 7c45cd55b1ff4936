//! A cached entry and its timeline: fresh → stale → kept (fail-safe only) → gone.
//!
//! ```text
//! stored       fresh_until        stale_until         keep_until
//!   |── fresh ──────|── stale ─────────|── kept ───────────|── gone
//!   hit             serve + refresh    load; on failure    absent
//!                   in background      serve (fail-safe)
//! ```

use std::time::Duration;

use super::clock::{NEVER, after, nanos};
use super::config::{Config, EarlyRefresh};

/// What a loader found, and for how long to keep it.
///
/// ```
/// use herder::cache::Loaded;
/// use std::time::Duration;
///
/// let row = Loaded::found("alice").ttl(Duration::from_secs(60));
/// let missing: Loaded<&str> = Loaded::not_found().ttl(Duration::from_secs(5));
/// assert_eq!(row.value(), Some(&"alice"));
/// assert!(missing.value().is_none());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loaded<V> {
    pub(crate) value: Option<V>,
    pub(crate) ttl: Option<Duration>,
}

impl<V> Loaded<V> {
    /// The loader found `value`; it is kept for the cache's `time_to_live`.
    pub fn found(value: V) -> Self {
        Loaded {
            value: Some(value),
            ttl: None,
        }
    }

    /// The loader found nothing. The absence is cached for the cache's `negative_ttl` (not at
    /// all if none is set), so that a missing row does not turn into a stampede.
    pub fn not_found() -> Self {
        Loaded {
            value: None,
            ttl: None,
        }
    }

    /// Keeps this entry for `ttl` instead of the cache's default (a TTL from the backend, such as
    /// an HTTP `max-age`).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// The value, if one was found.
    pub fn value(&self) -> Option<&V> {
        self.value.as_ref()
    }

    /// The TTL this answer carries, if it set one.
    pub fn expires_after(&self) -> Option<Duration> {
        self.ttl
    }
}

/// A stored entry. `value: None` is a cached "not found".
///
/// Kept small (24 bytes besides the value): the stale and fail-safe deadlines of an ordinary
/// entry follow from its expiry and the cache's settings, so only the expiry is stored.
#[derive(Clone, Debug)]
pub(crate) struct Entry<V> {
    pub(crate) value: Option<V>,
    pub(crate) fresh_until: u64,
    /// Ordinary entries: the early refresh point of `EarlyRefresh::Fraction` (`NEVER` if none).
    /// Degraded entries: until when the fail-safe value may still be served.
    aux: u64,
    /// How long the load that produced the entry took (XFetch's δ), in microseconds.
    load_micros: u32,
    /// The value is a stale one re-served by fail-safe after a failed load.
    pub(crate) degraded: bool,
}

/// Where an entry stands at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Freshness {
    /// Serve it; `refresh` asks for an early background refresh.
    Fresh { refresh: bool },
    /// Serve it and refresh in the background.
    Stale,
    /// Too old to serve, but kept as the fail-safe fallback of a load.
    Kept,
    /// Past every window: absent.
    Gone,
}

impl<V> Entry<V> {
    /// An entry loaded (or inserted) at `now`.
    pub(crate) fn new(
        value: Option<V>,
        ttl: Option<Duration>,
        now: u64,
        load_time: Duration,
        config: &Config,
    ) -> Self {
        let ttl = match (&value, ttl) {
            (_, Some(ttl)) => Some(ttl),
            (Some(_), None) => config.ttl,
            (None, None) => config.negative_ttl,
        };
        let fresh_until = ttl.map_or(NEVER, |ttl| after(now, ttl));
        let aux = match (config.tti, config.early_refresh, ttl) {
            // With a time to idle, `aux` keeps the TTL's deadline, and `fresh_until` is the
            // earlier of it and the idle deadline (`Config::invalid` refuses a fraction with it).
            (Some(_), _, _) => fresh_until,
            (None, EarlyRefresh::Fraction(f), Some(ttl)) if value.is_some() => {
                after(now, ttl.mul_f64(f))
            }
            _ => NEVER,
        };
        let fresh_until = match config.tti {
            Some(tti) => fresh_until.min(after(now, tti)),
            None => fresh_until,
        };
        Entry {
            value,
            fresh_until,
            aux,
            load_micros: u32::try_from(load_time.as_micros()).unwrap_or(u32::MAX),
            degraded: false,
        }
    }

    /// The fail-safe re-store of a stale `value` after a failed load: served for `throttle`
    /// without asking the backend again, keeping its original fallback deadline.
    pub(crate) fn throttled(value: V, now: u64, throttle: Duration, keep_until: u64) -> Self {
        let fresh_until = after(now, throttle);
        Entry {
            value: Some(value),
            fresh_until,
            aux: keep_until.max(fresh_until),
            load_micros: 0,
            degraded: true,
        }
    }

    /// With a time to idle: the new deadline of this entry read at `now`, if it moved by more
    /// than a sixteenth of `tti` (so that hot keys are not rewritten at every read; an entry may
    /// therefore expire up to `tti / 16` early). Never past the TTL's deadline (`aux`).
    pub(crate) fn touched(&self, now: u64, tti: Duration) -> Option<u64> {
        if self.degraded {
            return None;
        }
        let target = after(now, tti).min(self.aux);
        (target > self.fresh_until.saturating_add(nanos(tti) / 16)).then_some(target)
    }

    /// The same entry with its deadline moved to `fresh_until` (a read within its idle time).
    pub(crate) fn with_deadline(mut self, fresh_until: u64) -> Self {
        self.fresh_until = fresh_until;
        self
    }

    /// `true` when classifying this entry needs the time (it expires or refreshes early).
    pub(crate) fn needs_clock(&self) -> bool {
        self.fresh_until != NEVER || (!self.degraded && self.aux != NEVER)
    }

    /// The end of the stale window (served while refreshed in the background).
    fn stale_until(&self, config: &Config) -> u64 {
        if self.degraded || self.value.is_none() {
            self.fresh_until
        } else {
            after(self.fresh_until, config.stale_window)
        }
    }

    /// Until when the value may stand in for a failed load (fail-safe).
    pub(crate) fn keep_until(&self, config: &Config) -> u64 {
        match (self.degraded, &self.value, config.fail_safe) {
            (true, _, _) => self.aux,
            (false, None, _) | (false, Some(_), None) => self.stale_until(config),
            (false, Some(_), Some(fail_safe)) => {
                after(self.fresh_until, fail_safe.max_stale).max(self.stale_until(config))
            }
        }
    }

    pub(crate) fn freshness(&self, now: u64, config: &Config) -> Freshness {
        if now < self.fresh_until {
            let refresh = !self.degraded
                && self.value.is_some()
                && match config.early_refresh {
                    EarlyRefresh::Off => false,
                    EarlyRefresh::Fraction(_) => now >= self.aux,
                    EarlyRefresh::Probabilistic { beta } => xfetch(
                        self.fresh_until - now,
                        u64::from(self.load_micros) * 1000,
                        beta,
                    ),
                };
            Freshness::Fresh { refresh }
        } else if now < self.stale_until(config) {
            Freshness::Stale
        } else if now < self.keep_until(config) {
            Freshness::Kept
        } else {
            Freshness::Gone
        }
    }
}

/// XFetch (Vattani, Chierichetti, Lowenstein, VLDB 2015): refresh early when
/// `now − δ·β·ln(rand) ≥ expiry`, i.e. when `δ·β·(−ln rand) ≥ time left`. `rand` is uniform on
/// (0, 1], so `−ln rand` never exceeds 53·ln 2 ≈ 36.8: when the time left is beyond that bound,
/// no draw can trigger and none is made.
fn xfetch(left: u64, load_nanos: u64, beta: f64) -> bool {
    let scale = load_nanos as f64 * beta;
    if scale <= 0.0 || left as f64 > scale * 36.8 {
        return false;
    }
    let rand = 1.0 - fastrand::f64(); // (0, 1]
    scale * -rand.ln() >= left as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xfetch_never_fires_far_from_expiry_and_always_at_it() {
        assert!(!xfetch(1_000_000_000, 1_000, 1.0));
        assert!(xfetch(0, 1_000, 1.0));
        assert!(
            !xfetch(0, 0, 1.0),
            "no measured load time, no early refresh"
        );
    }

    #[test]
    fn xfetch_fires_more_often_closer_to_expiry() {
        let fired = |left| (0..20_000).filter(|_| xfetch(left, 1_000, 1.0)).count();
        // P(fire) = exp(-left/δβ): ≈ 0.37 at one δ, ≈ 0.05 at three.
        let (near, far) = (fired(1_000), fired(3_000));
        assert!((6_000..9_000).contains(&near), "{near}");
        assert!((500..1_600).contains(&far), "{far}");
    }
}

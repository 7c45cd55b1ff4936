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
use super::span::{LoadTime, Span};

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

/// A stored entry: its expiry and what it holds.
///
/// Kept small (24 bytes for a `u64` value, 16 besides it): the stale and fail-safe deadlines of
/// an ordinary entry follow from its expiry and the cache's settings, and the one other time an
/// entry may need is packed into 32 bits, relative to its expiry ([`Span`]), next to the tag.
#[derive(Clone, Debug)]
pub(crate) struct Entry<V> {
    pub(crate) fresh_until: u64,
    body: Body<V>,
}

#[derive(Clone, Debug)]
enum Body<V> {
    /// A loaded (or inserted) value. `aux`: with a time to idle, how long after `fresh_until`
    /// the TTL's deadline comes; with `EarlyRefresh::Fraction`, how long before `fresh_until`
    /// the early refresh point comes (zero: none). `load`: how long its load took (XFetch's δ).
    Value { value: V, aux: Span, load: LoadTime },
    /// A cached "not found"; `aux` as for a value (only its time-to-idle meaning applies).
    Absent { aux: Span },
    /// A stale value re-served by fail-safe after a failed load, which may stand in until
    /// `keep` after `fresh_until`.
    Degraded { value: V, keep: Span },
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
    /// An entry loaded (or inserted) at `now`; `value: None` is a cached "not found".
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
        let expiry = ttl.map_or(NEVER, |ttl| after(now, ttl));
        let fresh_until = match config.tti {
            Some(tti) => expiry.min(after(now, tti)),
            None => expiry,
        };
        let aux = match (config.tti, config.early_refresh, ttl) {
            // With a time to idle, `fresh_until` is the earlier of the TTL's deadline and the
            // idle deadline (`Config::invalid` refuses a fraction with it).
            (Some(_), _, _) if expiry == NEVER => Span::NEVER,
            (Some(_), _, _) => Span::down(expiry - fresh_until),
            (None, EarlyRefresh::Fraction(f), Some(ttl))
                if value.is_some() && fresh_until != NEVER =>
            {
                let refresh = after(now, ttl.mul_f64(f));
                Span::down(fresh_until.saturating_sub(refresh))
            }
            _ => Span::ZERO,
        };
        let body = match value {
            Some(value) => Body::Value {
                value,
                aux,
                load: LoadTime::from_micros(load_time.as_micros()),
            },
            None => Body::Absent { aux },
        };
        Entry { fresh_until, body }
    }

    /// The fail-safe re-store of a stale `value` after a failed load: served for `throttle`
    /// without asking the backend again, keeping its original fallback deadline.
    pub(crate) fn throttled(value: V, now: u64, throttle: Duration, keep_until: u64) -> Self {
        let fresh_until = after(now, throttle);
        let keep = match keep_until {
            NEVER => Span::NEVER,
            _ => Span::down(keep_until.saturating_sub(fresh_until)),
        };
        Entry {
            fresh_until,
            body: Body::Degraded { value, keep },
        }
    }

    /// The value, unless this is a cached "not found".
    pub(crate) fn value(&self) -> Option<&V> {
        match &self.body {
            Body::Value { value, .. } | Body::Degraded { value, .. } => Some(value),
            Body::Absent { .. } => None,
        }
    }

    /// The value, unless this is a cached "not found".
    pub(crate) fn into_value(self) -> Option<V> {
        match self.body {
            Body::Value { value, .. } | Body::Degraded { value, .. } => Some(value),
            Body::Absent { .. } => None,
        }
    }

    /// A stale value re-served by fail-safe after a failed load.
    pub(crate) fn is_degraded(&self) -> bool {
        matches!(self.body, Body::Degraded { .. })
    }

    /// With a time to idle, the TTL's deadline (`NEVER` for a degraded entry: it is not kept
    /// alive by reads).
    fn ttl_deadline(&self) -> Option<u64> {
        match self.body {
            Body::Value { aux, .. } | Body::Absent { aux } => Some(aux.after(self.fresh_until)),
            Body::Degraded { .. } => None,
        }
    }

    /// With a time to idle: the new deadline of this entry read at `now`, if it moved by more
    /// than a sixteenth of `tti` (so that hot keys are not rewritten at every read; an entry may
    /// therefore expire up to `tti / 16` early). Never past the TTL's deadline.
    pub(crate) fn touched(&self, now: u64, tti: Duration) -> Option<u64> {
        let target = after(now, tti).min(self.ttl_deadline()?);
        (target > self.fresh_until.saturating_add(nanos(tti) / 16)).then_some(target)
    }

    /// The same entry with its deadline moved to `fresh_until` (a read within its idle time;
    /// never past the TTL's deadline).
    pub(crate) fn with_deadline(mut self, fresh_until: u64) -> Self {
        if let Some(ttl_deadline) = self.ttl_deadline() {
            let tail = match ttl_deadline {
                NEVER => Span::NEVER,
                _ => Span::down(ttl_deadline.saturating_sub(fresh_until)),
            };
            match &mut self.body {
                Body::Value { aux, .. } | Body::Absent { aux } => *aux = tail,
                Body::Degraded { .. } => {}
            }
        }
        self.fresh_until = fresh_until;
        self
    }

    /// `true` when classifying this entry needs the time (it expires or refreshes early).
    #[inline]
    pub(crate) fn needs_clock(&self) -> bool {
        self.fresh_until != NEVER
    }

    /// The end of the stale window (served while refreshed in the background).
    fn stale_until(&self, config: &Config) -> u64 {
        match self.body {
            Body::Value { .. } => after(self.fresh_until, config.stale_window),
            Body::Absent { .. } | Body::Degraded { .. } => self.fresh_until,
        }
    }

    /// Until when the value may stand in for a failed load (fail-safe).
    pub(crate) fn keep_until(&self, config: &Config) -> u64 {
        match (&self.body, config.fail_safe) {
            (Body::Degraded { keep, .. }, _) => keep.after(self.fresh_until),
            (Body::Absent { .. }, _) | (Body::Value { .. }, None) => self.stale_until(config),
            (Body::Value { .. }, Some(fail_safe)) => {
                after(self.fresh_until, fail_safe.max_stale).max(self.stale_until(config))
            }
        }
    }

    pub(crate) fn freshness(&self, now: u64, config: &Config) -> Freshness {
        if now < self.fresh_until {
            let refresh = match (&self.body, config.early_refresh) {
                (Body::Value { aux, .. }, EarlyRefresh::Fraction(_)) => {
                    *aux != Span::ZERO && now >= self.fresh_until.saturating_sub(aux.nanos())
                }
                (Body::Value { load, .. }, EarlyRefresh::Probabilistic { beta }) => {
                    xfetch(self.fresh_until - now, load.nanos(), beta)
                }
                _ => false,
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
    fn an_entry_of_a_u64_takes_24_bytes() {
        // The tag, the packed span and the load time share the value's first word.
        assert_eq!(std::mem::size_of::<Entry<u64>>(), 24);
    }

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

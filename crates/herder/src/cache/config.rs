//! Validated cache settings.

use std::time::Duration;

/// When a still-fresh entry is refreshed ahead of its expiry, so that hot keys never expire
/// under load.
///
/// ```
/// use herder::Cache;
/// use herder::cache::EarlyRefresh;
/// use std::time::Duration;
///
/// let cache: Cache<u64, String> = Cache::builder()
///     .max_capacity(10_000)
///     .time_to_live(Duration::from_secs(60))
///     .early_refresh(EarlyRefresh::Probabilistic { beta: 1.0 })
///     .build()
///     .unwrap();
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[non_exhaustive]
pub enum EarlyRefresh {
    /// Never: entries are refreshed once stale (if a stale window is set) or reloaded once gone.
    #[default]
    Off,
    /// Refresh in the background on the first read after this fraction of the TTL (in `(0, 1)`;
    /// `0.8` refreshes a 60 s entry after 48 s).
    Fraction(f64),
    /// XFetch (Vattani et al., VLDB 2015): each read refreshes with a probability that rises as
    /// expiry nears, scaled by how long the entry took to load (δ) and `beta` (`> 0`, 1.0 is the
    /// paper's default; larger refreshes earlier). Many readers, one refresh, no synchronised
    /// expiry.
    Probabilistic {
        /// The eagerness factor β.
        beta: f64,
    },
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct FailSafe {
    /// How long past its TTL a value may still be served when a load fails.
    pub(crate) max_stale: Duration,
    /// How long a value served by fail-safe is reused before the backend is asked again.
    pub(crate) throttle: Duration,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Config {
    pub(crate) ttl: Option<Duration>,
    pub(crate) negative_ttl: Option<Duration>,
    pub(crate) stale_window: Duration,
    pub(crate) fail_safe: Option<FailSafe>,
    pub(crate) early_refresh: EarlyRefresh,
    /// An entry not read for this long expires (its TTL still applies).
    pub(crate) tti: Option<Duration>,
    pub(crate) wait_timeout: Option<Duration>,
    pub(crate) load_timeout: Option<Duration>,
    pub(crate) soft_load_timeout: Option<Duration>,
    /// Tick of the clock kept by a ticker on a multi-thread runtime; zero: read the clock at
    /// every use.
    pub(crate) clock_resolution: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            ttl: None,
            negative_ttl: None,
            stale_window: Duration::ZERO,
            fail_safe: None,
            early_refresh: EarlyRefresh::Off,
            tti: None,
            wait_timeout: None,
            load_timeout: None,
            soft_load_timeout: None,
            clock_resolution: super::clock::DEFAULT_RESOLUTION,
        }
    }
}

impl Config {
    /// How long what was loaded stays fresh: its own TTL, else the cache's (for a value) or the
    /// negative TTL (for an absence).
    pub(crate) fn fresh_ttl<V>(&self, loaded: &super::Loaded<V>) -> Option<Duration> {
        loaded.ttl.or(if loaded.value.is_some() {
            self.ttl
        } else {
            self.negative_ttl
        })
    }

    /// How long a shared tier keeps what was loaded: the entry's TTL plus the stale window (so
    /// that other instances can serve it stale), the negative TTL for an absence. `None`: no
    /// expiry; `Some(ZERO)`: do not share (an absence with no negative TTL).
    pub(crate) fn shared_ttl<V>(&self, loaded: &super::Loaded<V>) -> Option<Duration> {
        match (&loaded.value, loaded.ttl) {
            (Some(_), ttl) => ttl
                .or(self.ttl)
                .map(|ttl| ttl.saturating_add(self.stale_window)),
            (None, Some(ttl)) => Some(ttl),
            (None, None) => Some(self.negative_ttl.unwrap_or(Duration::ZERO)),
        }
    }

    /// Why these settings cannot work together, if they cannot.
    pub(crate) fn invalid(&self) -> Option<&'static str> {
        match self.early_refresh {
            EarlyRefresh::Fraction(f) if !(f > 0.0 && f < 1.0) => {
                return Some("early_refresh fraction must be in (0, 1)");
            }
            EarlyRefresh::Probabilistic { beta } if !(beta > 0.0 && beta.is_finite()) => {
                return Some("early_refresh beta must be positive and finite");
            }
            EarlyRefresh::Fraction(_) | EarlyRefresh::Probabilistic { .. }
                if self.ttl.is_none() =>
            {
                return Some("early_refresh needs a time_to_live");
            }
            _ => {}
        }
        if self.tti.is_some_and(|tti| tti.is_zero()) {
            return Some("time_to_idle must be positive");
        }
        if self.tti.is_some() && matches!(self.early_refresh, EarlyRefresh::Fraction(_)) {
            return Some("time_to_idle cannot be combined with early_refresh(Fraction)");
        }
        if self.ttl.is_some_and(|ttl| ttl.is_zero()) {
            return Some("time_to_live must be positive");
        }
        if self.fail_safe.is_some_and(|fs| fs.throttle.is_zero()) {
            return Some("fail_safe throttle must be positive");
        }
        if [self.wait_timeout, self.load_timeout, self.soft_load_timeout]
            .iter()
            .any(|t| t.is_some_and(|t| t.is_zero()))
        {
            return Some("timeouts must be positive");
        }
        if self.clock_resolution > super::clock::MAX_RESOLUTION {
            return Some("clock_resolution must be at most 1 s");
        }
        if let (Some(soft), Some(hard)) = (self.soft_load_timeout, self.load_timeout)
            && soft >= hard
        {
            return Some("soft_load_timeout must be shorter than load_timeout");
        }
        None
    }
}

//! What a lease's fill writes to Redis (the leases themselves, extended, filled and released
//! together per batch, are in `group.rs`).

use std::time::Duration;

use herder::cache::Loaded;

use crate::codec;

/// The fresh time stored for a value that never expires (about 142,000 years in ms).
const NEVER_MS: u64 = 1 << 52;

/// What a fill writes: the envelope (empty: store nothing), the fresh time and the expiry.
pub(crate) struct Sealed {
    pub(crate) body: Vec<u8>,
    pub(crate) fresh_ms: u64,
    pub(crate) px: u64,
}

/// Encodes a fill: `loaded` for `ttl` (see [`Lease::fill`](herder::cache::Lease::fill)).
pub(crate) fn seal<V: 'static>(
    codec: &dyn codec::Codec<V>,
    loaded: &Loaded<V>,
    ttl: Option<Duration>,
) -> Sealed {
    // An absence that is not to be cached, or a value the codec cannot encode: release the
    // lease (waiters then load for themselves) without storing anything.
    let body = match ttl {
        Some(ttl) if ttl.is_zero() => Vec::new(),
        _ => codec::seal(codec, loaded.value()).unwrap_or_default(),
    };
    // Durations saturate: one too long for Redis is "never" (no expiry), not an error.
    let millis = |ttl: Duration| u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    let fresh_ms = loaded
        .expires_after()
        .map_or(NEVER_MS, |ttl| millis(ttl).min(NEVER_MS));
    let px = match ttl.map(millis) {
        Some(ms) if ms < NEVER_MS => ms.max(1),
        _ => 0,
    };
    Sealed { body, fresh_ms, px }
}

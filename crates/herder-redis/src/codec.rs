//! Values to bytes and back, inside a small versioned envelope.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Turns values into bytes for Redis and back.
///
/// A value that cannot be encoded is not shared (the instance keeps it in L1 only); a value that
/// cannot be decoded (another version of the type, corrupted bytes) is a miss, never an error.
///
/// ```
/// use herder_redis::{Codec, Postcard};
///
/// let bytes = Codec::<(u32, String)>::encode(&Postcard, &(7, "seven".to_string())).unwrap();
/// assert_eq!(Codec::<(u32, String)>::decode(&Postcard, &bytes), Some((7, "seven".to_string())));
/// assert_eq!(Codec::<(u32, String)>::decode(&Postcard, b"\xff\xff"), None);
/// ```
pub trait Codec<V>: Send + Sync + 'static {
    /// The value's bytes, or `None` if it cannot be encoded.
    fn encode(&self, value: &V) -> Option<Vec<u8>>;
    /// The value, or `None` if the bytes are not one.
    fn decode(&self, bytes: &[u8]) -> Option<V>;
}

/// The default codec: serde with postcard (compact, no schema).
#[derive(Clone, Copy, Debug, Default)]
pub struct Postcard;

impl<V: Serialize + DeserializeOwned> Codec<V> for Postcard {
    fn encode(&self, value: &V) -> Option<Vec<u8>> {
        postcard::to_stdvec(value).ok()
    }

    fn decode(&self, bytes: &[u8]) -> Option<V> {
        postcard::from_bytes(bytes).ok()
    }
}

/// The envelope format; bumped when the layout changes (the namespace carries it too).
pub(crate) const FORMAT: u8 = 1;
const FOUND: u8 = 0;
const ABSENT: u8 = 1;

/// `[FORMAT][FOUND][value]` or `[FORMAT][ABSENT]`.
pub(crate) fn seal<V: 'static>(codec: &dyn Codec<V>, value: Option<&V>) -> Option<Vec<u8>> {
    match value {
        Some(value) => {
            let payload = codec.encode(value)?;
            let mut sealed = Vec::with_capacity(payload.len() + 2);
            sealed.extend_from_slice(&[FORMAT, FOUND]);
            sealed.extend_from_slice(&payload);
            Some(sealed)
        }
        None => Some(vec![FORMAT, ABSENT]),
    }
}

/// `Some(Some(v))` found, `Some(None)` a cached absence, `None` undecodable.
pub(crate) fn open<V: 'static>(codec: &dyn Codec<V>, bytes: &[u8]) -> Option<Option<V>> {
    match bytes {
        [FORMAT, FOUND, payload @ ..] => codec.decode(payload).map(Some),
        [FORMAT, ABSENT] => Some(None),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_envelope_round_trips_and_rejects_what_it_did_not_seal() {
        let codec: &dyn Codec<String> = &Postcard;
        let sealed = seal(codec, Some(&"v".to_string())).unwrap();
        assert_eq!(open(codec, &sealed), Some(Some("v".to_string())));
        assert_eq!(open(codec, &seal(codec, None).unwrap()), Some(None));
        assert_eq!(open::<String>(codec, &[FORMAT + 1, FOUND, 1, b'v']), None);
        assert_eq!(open::<String>(codec, b""), None);
        assert_eq!(open::<String>(codec, &[FORMAT, FOUND, 200]), None);
    }
}

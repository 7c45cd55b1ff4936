//! The messages instances exchange on the namespace's pub/sub channel:
//! `[kind][origin instance, 8 bytes LE][key bytes]`.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A lease holder filled the key: waiters read it.
    Filled,
    /// A lease holder gave up: waiters try for the lease.
    Released,
    /// The key was invalidated: instances evict it.
    Invalidated,
    /// Everything was invalidated.
    All,
}

impl Kind {
    fn byte(self) -> u8 {
        match self {
            Kind::Filled => b'F',
            Kind::Released => b'R',
            Kind::Invalidated => b'I',
            Kind::All => b'A',
        }
    }
}

pub(crate) fn encode(kind: Kind, origin: u64, key: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(9 + key.len());
    message.push(kind.byte());
    message.extend_from_slice(&origin.to_le_bytes());
    message.extend_from_slice(key);
    message
}

pub(crate) fn decode(message: &[u8]) -> Option<(Kind, u64, &[u8])> {
    let (&kind, rest) = message.split_first()?;
    let kind = match kind {
        b'F' => Kind::Filled,
        b'R' => Kind::Released,
        b'I' => Kind::Invalidated,
        b'A' => Kind::All,
        _ => return None,
    };
    let (origin, key) = rest.split_at_checked(8)?;
    Some((kind, u64::from_le_bytes(origin.try_into().ok()?), key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_garbage_is_ignored() {
        let message = encode(Kind::Invalidated, 42, b"key");
        assert_eq!(decode(&message), Some((Kind::Invalidated, 42, &b"key"[..])));
        assert_eq!(
            decode(&encode(Kind::All, 1, b"")),
            Some((Kind::All, 1, &b""[..]))
        );
        assert_eq!(decode(b"X12345678k"), None);
        assert_eq!(decode(b"F123"), None);
    }
}

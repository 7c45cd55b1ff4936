//! Which node of a cluster serves which hash slot, so that a batch sends one script per node
//! (its keys of several slots, which Redis 7 allows a script flagged `allow-cross-slot-keys` to
//! touch as long as one node serves them all) rather than one per bucket.
//!
//! The map comes from `CLUSTER SLOTS`, read on first use and again after a batch script failed
//! (the slots may have moved). Without a map (a single server, the read failed, or cross-slot
//! scripts keep failing, as on a cluster older than Redis 7), keys group by their bucket's hash
//! tag, which is always correct, only more scripts.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use redis::Value;

use crate::connection::Commands;
use crate::tier::lock;

/// Where a Redis key's script goes: a node, or (without a map) its own hash tag.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Route {
    Node(usize),
    Tag(Vec<u8>),
}

/// Cross-slot scripts that failed in a row before batches stop sending them for a while (a
/// cluster older than Redis 7 refuses them every time).
const FAILURES: u32 = 3;
/// How long batches group keys by hash tag after that.
const PAUSE: Duration = Duration::from_secs(60);

#[derive(Default)]
pub(crate) struct Nodes {
    /// Slot ranges `(first, last, node)`; `None` until read (or after a failure).
    map: Mutex<Option<Arc<Vec<(u16, u16, usize)>>>>,
    /// Failed cross-slot scripts in a row, and until when none are sent.
    failures: Mutex<(u32, Option<Instant>)>,
}

impl Nodes {
    /// The route of `key` (a Redis key name) with the map as it is (`None`: no map).
    pub(crate) fn route(map: Option<&[(u16, u16, usize)]>, key: &[u8]) -> Route {
        let tag = hash_tag(key);
        let node = map.and_then(|map| {
            let slot = slot(tag);
            map.iter()
                .find(|(first, last, _)| (*first..=*last).contains(&slot))
                .map(|(_, _, node)| *node)
        });
        match node {
            Some(node) => Route::Node(node),
            None => Route::Tag(tag.to_vec()),
        }
    }

    /// The map, read from the cluster if there is none yet (`None` if that fails).
    pub(crate) async fn map(&self, commands: &Commands) -> Option<Arc<Vec<(u16, u16, usize)>>> {
        if let (_, Some(until)) = *lock(&self.failures)
            && Instant::now() < until
        {
            return None;
        }
        if let Some(map) = lock(&self.map).clone() {
            return Some(map);
        }
        let reply = commands
            .query::<Value>(redis::cmd("CLUSTER").arg("SLOTS"))
            .await
            .ok()?;
        let map = Arc::new(parse(reply)?);
        *lock(&self.map) = Some(map.clone());
        Some(map)
    }

    /// A batch script failed: forget the map (slots may have moved); after [`FAILURES`] in a
    /// row, send none that span slots for [`PAUSE`].
    pub(crate) fn failed(&self) {
        lock(&self.map).take();
        let mut failures = lock(&self.failures);
        failures.0 += 1;
        if failures.0 >= FAILURES {
            *failures = (0, Some(Instant::now() + PAUSE));
        }
    }

    /// A batch script succeeded.
    pub(crate) fn succeeded(&self) {
        let mut failures = lock(&self.failures);
        if failures.0 > 0 {
            failures.0 = 0;
        }
    }
}

/// `CLUSTER SLOTS`: `[[first, last, [host, port, id], replicas...], ...]`.
fn parse(reply: Value) -> Option<Vec<(u16, u16, usize)>> {
    let Value::Array(ranges) = reply else {
        return None;
    };
    let mut nodes: Vec<(Vec<u8>, i64)> = Vec::new();
    let mut map = Vec::new();
    for range in ranges {
        let Value::Array(fields) = range else {
            return None;
        };
        let mut fields = fields.into_iter();
        let (Some(Value::Int(first)), Some(Value::Int(last)), Some(Value::Array(primary))) =
            (fields.next(), fields.next(), fields.next())
        else {
            return None;
        };
        let mut primary = primary.into_iter();
        let host = match primary.next()? {
            Value::BulkString(host) => host,
            Value::SimpleString(host) => host.into_bytes(),
            _ => return None,
        };
        let Value::Int(port) = primary.next()? else {
            return None;
        };
        let node = match nodes.iter().position(|n| n.0 == host && n.1 == port) {
            Some(node) => node,
            None => {
                nodes.push((host, port));
                nodes.len() - 1
            }
        };
        map.push((u16::try_from(first).ok()?, u16::try_from(last).ok()?, node));
    }
    Some(map)
}

/// The part of a key that decides its slot: the first `{...}` if not empty, else the key.
fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{')
        && let Some(close) = key[open + 1..].iter().position(|&b| b == b'}')
        && close > 0
    {
        return &key[open + 1..open + 1 + close];
    }
    key
}

/// The cluster's hash slot of a hash tag: CRC16 (XMODEM) mod 16384.
fn slot(tag: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in tag {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_and_hash_tags_are_the_clusters() {
        // Known values (`CLUSTER KEYSLOT`).
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"123456789"), 12739);
        assert_eq!(hash_tag(b"a{user1000}.following"), b"user1000");
        assert_eq!(hash_tag(b"foo{}{bar}"), b"foo{}{bar}");
        assert_eq!(hash_tag(b"plain"), b"plain");
        let map = [(0, 8191, 0), (8192, 16383, 1)];
        assert_eq!(Nodes::route(Some(&map), b"x{foo}y"), Route::Node(1));
        assert_eq!(Nodes::route(None, b"x{foo}y"), Route::Tag(b"foo".to_vec()));
    }
}

//! Where a namespace's keys live in Redis.
//!
//! Every key of a namespace starts with its prefix, `{namespace}:h{FORMAT}:`. Each user key has
//! four Redis keys, which its scripts declare (`KEYS`): its value `v:`, its lease `l:`, its epoch
//! `e:` (how many times it was invalidated), and the generation `gen` of its bucket (how many
//! times the namespace was invalidated as a whole).
//!
//! On a single server there is one bucket: `{prefix}gen`, `{prefix}v:{key}`, ...
//!
//! On a cluster, the keys are spread over [`CLUSTER_BUCKETS`] buckets by a hash of the key, and a
//! bucket's keys share a hash tag, `{prefix}{{{prefix}{bucket}}}:...`, so that they live in one
//! slot: a script sees a key's value, lease, epoch and generation on one node. A single
//! generation key for the namespace, read by every script, would live in one slot only, and a
//! script cannot read a key of another slot; one per key would need a scan to invalidate them all.
//! One per bucket makes `invalidate_all` [`CLUSTER_BUCKETS`] `INCR`s, sent concurrently, and
//! spreads the namespace over that many slots (about evenly over the masters).

/// The number of buckets of a namespace on a cluster. Every instance must agree on it: it is
/// part of the key layout, never a setting.
pub(crate) const CLUSTER_BUCKETS: u32 = 1024;

/// The Redis keys of one user key, in the order the scripts declare them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Keys {
    pub(crate) generation: Vec<u8>,
    pub(crate) value: Vec<u8>,
    pub(crate) lease: Vec<u8>,
    pub(crate) epoch: Vec<u8>,
}

#[derive(Debug, Clone)]
pub(crate) struct Layout {
    prefix: String,
    buckets: u32,
}

impl Layout {
    pub(crate) fn new(prefix: String, cluster: bool) -> Self {
        let buckets = if cluster { CLUSTER_BUCKETS } else { 1 };
        Layout { prefix, buckets }
    }

    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    fn base(&self, bucket: u32) -> String {
        if self.buckets == 1 {
            self.prefix.clone()
        } else {
            format!("{}{{{}{bucket}}}:", self.prefix, self.prefix)
        }
    }

    fn bucket(&self, key: &[u8]) -> u32 {
        // FNV-1a: stable across processes, versions and platforms (unlike std's hasher).
        let hash = key.iter().fold(0x811c_9dc5_u32, |hash, &byte| {
            (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
        });
        hash % self.buckets
    }

    pub(crate) fn keys(&self, key: &[u8]) -> Keys {
        let base = self.base(self.bucket(key));
        let name = |kind: &str| {
            let mut name = Vec::with_capacity(base.len() + kind.len() + key.len());
            name.extend_from_slice(base.as_bytes());
            name.extend_from_slice(kind.as_bytes());
            name.extend_from_slice(key);
            name
        };
        Keys {
            generation: format!("{base}gen").into_bytes(),
            value: name("v:"),
            lease: name("l:"),
            epoch: name("e:"),
        }
    }

    /// The generation key of every bucket, for `invalidate_all`.
    pub(crate) fn generations(&self) -> impl Iterator<Item = String> + '_ {
        (0..self.buckets).map(|bucket| format!("{}gen", self.base(bucket)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_server_has_one_bucket_and_plain_names() {
        let layout = Layout::new("ns:h1:".into(), false);
        let keys = layout.keys(b"k");
        assert_eq!(keys.generation, b"ns:h1:gen");
        assert_eq!(keys.value, b"ns:h1:v:k");
        assert_eq!(keys.lease, b"ns:h1:l:k");
        assert_eq!(keys.epoch, b"ns:h1:e:k");
        assert_eq!(layout.generations().collect::<Vec<_>>(), ["ns:h1:gen"]);
    }

    #[test]
    fn on_a_cluster_a_keys_names_share_one_hash_tag() {
        let layout = Layout::new("ns:h1:".into(), true);
        let keys = layout.keys(b"k");
        let tag = |name: &[u8]| {
            let name = String::from_utf8(name.to_vec()).unwrap();
            let open = name.find('{').unwrap();
            let close = open + name[open..].find('}').unwrap();
            name[open + 1..close].to_owned()
        };
        let tags = [&keys.generation, &keys.value, &keys.lease, &keys.epoch].map(|k| tag(k));
        assert!(tags.iter().all(|t| *t == tags[0]), "{tags:?}");
        assert!(keys.value.starts_with(b"ns:h1:{ns:h1:"));
        // Keys spread over the buckets, and every bucket's generation is listed once.
        let buckets: std::collections::HashSet<_> = (0..10_000u32)
            .map(|k| tag(&layout.keys(&k.to_le_bytes()).generation))
            .collect();
        assert!(buckets.len() > 1000 * 9 / 10, "{}", buckets.len());
        assert_eq!(layout.generations().count(), CLUSTER_BUCKETS as usize);
    }
}

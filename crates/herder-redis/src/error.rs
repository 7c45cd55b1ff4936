use std::fmt;

/// Why a [`RedisTier`](crate::RedisTier) could not be built.
///
/// Once built, the tier never fails a request: Redis errors are counted in
/// [`RedisStats`](crate::RedisStats) and the cache goes on without Redis.
#[derive(Debug)]
pub struct Error {
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Redis(redis::RedisError),
    Setting(&'static str),
    NoRuntime,
}

impl Error {
    pub(crate) fn redis(error: redis::RedisError) -> Self {
        Error {
            kind: Kind::Redis(error),
        }
    }

    pub(crate) fn setting(reason: &'static str) -> Self {
        Error {
            kind: Kind::Setting(reason),
        }
    }

    pub(crate) fn no_runtime() -> Self {
        Error {
            kind: Kind::NoRuntime,
        }
    }

    /// `true` if a setting is invalid.
    pub fn is_setting(&self) -> bool {
        matches!(self.kind, Kind::Setting(_))
    }

    /// `true` if the Redis URL was refused by the client.
    pub fn is_redis(&self) -> bool {
        matches!(self.kind, Kind::Redis(_))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Redis(error) => write!(f, "invalid redis connection: {error}"),
            Kind::Setting(reason) => write!(f, "invalid RedisTier setting: {reason}"),
            Kind::NoRuntime => {
                f.write_str("RedisTier::build must be called within a Tokio runtime")
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            Kind::Redis(error) => Some(error),
            _ => None,
        }
    }
}

use std::fmt;
use std::time::Duration;

/// Why a [`RedisTier`](crate::RedisTier) or a [`RedisConnection`](crate::RedisConnection) could
/// not be built or connected, or why Redis did not answer a
/// [`ping`](crate::RedisTier::ping).
///
/// Once built, the tier never fails a request: Redis errors are counted in
/// [`RedisStats`](crate::RedisStats) and the cache goes on without Redis.
#[derive(Debug)]
pub struct Error {
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    /// The client refused the URL or the cluster's nodes.
    Invalid(redis::RedisError),
    /// Redis could not be reached, refused the credentials, or answered with an error.
    Connect(redis::RedisError),
    Timeout(Duration),
    Setting(&'static str),
    NoRuntime,
}

impl Error {
    pub(crate) fn redis(error: redis::RedisError) -> Self {
        Error {
            kind: Kind::Invalid(error),
        }
    }

    pub(crate) fn connect(error: redis::RedisError) -> Self {
        Error {
            kind: Kind::Connect(error),
        }
    }

    pub(crate) fn timeout(after: Duration) -> Self {
        Error {
            kind: Kind::Timeout(after),
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

    /// `true` if the Redis client refused the URL (or a cluster node's URL).
    pub fn is_redis(&self) -> bool {
        matches!(self.kind, Kind::Invalid(_))
    }

    /// `true` if Redis could not be reached or answered with an error (refused credentials
    /// included: see [`is_auth`](Self::is_auth)).
    pub fn is_connect(&self) -> bool {
        matches!(self.kind, Kind::Connect(_))
    }

    /// `true` if Redis refused the credentials (a wrong password or user, or a server that
    /// requires a password none was given for).
    pub fn is_auth(&self) -> bool {
        match &self.kind {
            Kind::Connect(error) => {
                error.kind() == redis::ErrorKind::AuthenticationFailed
                    || error.code() == Some("NOAUTH")
                    || error.code() == Some("WRONGPASS")
            }
            _ => false,
        }
    }

    /// `true` if Redis did not answer in time.
    pub fn is_timeout(&self) -> bool {
        match &self.kind {
            Kind::Timeout(_) => true,
            Kind::Connect(error) => error.is_timeout(),
            _ => false,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Invalid(error) => write!(f, "invalid redis connection: {error}"),
            Kind::Connect(error) if self.is_auth() => {
                write!(f, "redis refused the credentials: {error}")
            }
            Kind::Connect(error) => write!(f, "redis cannot be reached: {error}"),
            Kind::Timeout(after) => write!(f, "redis did not answer within {after:?}"),
            Kind::Setting(reason) => write!(f, "invalid RedisTier setting: {reason}"),
            Kind::NoRuntime => {
                f.write_str("herder-redis must be started within a Tokio runtime (it spawns its background tasks)")
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            Kind::Invalid(error) | Kind::Connect(error) => Some(error),
            _ => None,
        }
    }
}

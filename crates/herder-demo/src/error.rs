//! [`DemoError`]: what the demo reports when it cannot go on, always as one line.

use std::error::Error;
use std::fmt;

/// Why the demo stopped: bad input (an unreachable database, a port in use...) or a failure on
/// the way. Its `Display` is one line, lowercase, meant for stderr.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DemoError {
    message: String,
}

impl DemoError {
    /// An error with this message (newlines become spaces, so it stays one line).
    pub fn new(message: impl Into<String>) -> Self {
        let message: String = message.into();
        let message = message.split_whitespace().collect::<Vec<_>>().join(" ");
        DemoError { message }
    }

    /// `context: cause`, for an error from a library.
    pub fn with_cause(context: impl fmt::Display, cause: impl fmt::Display) -> Self {
        DemoError::new(format!("{context}: {cause}"))
    }
}

impl fmt::Display for DemoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl Error for DemoError {}

/// Hides the password of a URL (`postgres://user:secret@host` → `postgres://user:***@host`).
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((credentials, host)) = rest.split_once('@') else {
        return url.to_owned();
    };
    match credentials.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line() {
        let err = DemoError::with_cause("cannot connect", "refused\n  at line 2");
        assert_eq!(err.to_string(), "cannot connect: refused at line 2");
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact("postgres://u:p@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("sqlite::memory:"), "sqlite::memory:");
    }
}

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use super::handle::Line;
use crate::error::BuildError;

/// Configures a [`Line`] (made by [`Line::builder`]).
///
/// ```
/// use herder::Line;
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let auth: Line<String> = Line::builder()
///     .recovery_timeout(Duration::from_secs(10)) // a login that hangs frees the line
///     .build()
///     .expect("valid settings");
/// assert!(!auth.is_recovering());
///
/// let err = Line::<String>::builder().recovery_timeout(Duration::ZERO).build().unwrap_err();
/// assert_eq!(err.to_string(), "invalid Line setting: recovery_timeout must be more than zero");
/// # }
/// ```
#[must_use = "a builder does nothing until `build` is called"]
pub struct Builder<O> {
    recovery_timeout: Option<Duration>,
    name: Option<Arc<str>>,
    _outcome: PhantomData<fn() -> O>,
}

impl<O> Builder<O>
where
    O: Clone + Send + 'static,
{
    pub(super) fn new() -> Self {
        Builder {
            recovery_timeout: None,
            name: None,
            _outcome: PhantomData,
        }
    }

    /// Gives up on a recovery that runs longer than `timeout` (default: none): the recovery is
    /// dropped, the leader and every joiner get an error that
    /// [`is_timeout`](crate::TaskError::is_timeout), the epoch goes up as for any finished
    /// recovery, and the line is free again (so queues paused on it resume). Must be more than
    /// zero; a timeout of 30 years or more (`Duration::MAX`) never fires.
    pub fn recovery_timeout(mut self, timeout: Duration) -> Self {
        self.recovery_timeout = Some(timeout);
        self
    }

    /// The name of this line in its metrics (the label `name`, as in
    /// `herder_line_recoveries_total{name="auth"}`) and in its `Debug` output. Without the
    /// `metrics` feature it is only shown by `Debug`.
    ///
    /// ```
    /// let auth: herder::Line<String> = herder::Line::builder().name("auth").build().unwrap();
    /// assert!(format!("{auth:?}").contains("auth"));
    /// ```
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Builds the line, or says which setting is invalid.
    pub fn build(self) -> Result<Line<O>, BuildError> {
        if self.recovery_timeout == Some(Duration::ZERO) {
            return Err(BuildError::new(
                "Line",
                "recovery_timeout must be more than zero",
            ));
        }
        Ok(Line::with_settings(
            self.recovery_timeout.and_then(crate::time::finite),
            self.name,
        ))
    }
}

impl<O> fmt::Debug for Builder<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("recovery_timeout", &self.recovery_timeout)
            .field("name", &self.name)
            .finish()
    }
}

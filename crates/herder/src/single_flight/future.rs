use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::mem;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::handle::SingleFlight;
use super::stats::Counters;
use crate::error::{Origin, TaskError};
use crate::flight::{Failure, FlightId, Join, Waiter, task};

/// The future returned by [`SingleFlight::run`].
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct Run<'a, K, V, F> {
    flight: &'a SingleFlight<K, V>,
    state: State<K, V, F>,
}

enum State<K, V, F> {
    Start {
        key: K,
        work: F,
    },
    // `leave` is kept only when the flight aborts unused work.
    Wait {
        waiter: Waiter<V>,
        id: FlightId,
        leave: Option<Leave<K, V>>,
    },
    Done,
}

/// How a dropped caller leaves an abortable flight: the key and a function pointer, made where the
/// `Hash + Eq` bounds are known (`Drop` cannot require them).
type Leave<K, V> = (K, fn(&SingleFlight<K, V>, &K, FlightId, &Waiter<V>));

fn leave<K, V>(flight: &SingleFlight<K, V>, key: &K, id: FlightId, waiter: &Waiter<V>)
where
    K: Hash + Eq + Clone,
    V: Clone,
{
    flight.inner.flights.leave(key, id, waiter.slot());
}

// The key and the work are moved out before anything is polled; nothing is ever pinned in place.
impl<K, V, F> Unpin for Run<'_, K, V, F> {}

impl<'a, K, V, F, Fut> Run<'a, K, V, F>
where
    K: Hash + Eq + Clone + Send + 'static,
    V: Clone + Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = V> + Send + 'static,
{
    pub(super) fn new(flight: &'a SingleFlight<K, V>, key: K, work: F) -> Self {
        Run {
            flight,
            state: State::Start { key, work },
        }
    }

    fn start(&self, key: K, work: F) -> State<K, V, F> {
        let inner = &self.flight.inner;
        let runtime = task::runtime("SingleFlight::run");
        let abort = inner.abort_unused;
        match inner.flights.join(&key, abort, || None::<()>) {
            Join::Lead(ticket, waiter) => {
                Counters::bump(&inner.counters.started);
                let id = ticket.id();
                let owner = inner.clone();
                #[cfg(feature = "metrics")]
                let started = tokio::time::Instant::now();
                let handle = task::spawn(&runtime, work, move |outcome: Result<V, Failure>| {
                    #[cfg(feature = "metrics")]
                    owner.metrics.ran(started.elapsed());
                    match &outcome {
                        Err(Failure::Panicked(_)) => Counters::bump(&owner.counters.panicked),
                        Err(Failure::Cancelled) => Counters::bump(&owner.counters.cancelled),
                        Ok(_) => {}
                    }
                    owner.flights.finish(ticket, outcome, |_, _| {});
                });
                if abort {
                    waiter
                        .slot()
                        .set_canceller(Box::new(move || handle.abort()));
                }
                State::Wait {
                    waiter,
                    id,
                    leave: abort.then_some((key, leave::<K, V>)),
                }
            }
            Join::Follow(waiter, id) => {
                Counters::bump(&inner.counters.joined);
                State::Wait {
                    waiter,
                    id,
                    leave: abort.then_some((key, leave::<K, V>)),
                }
            }
            Join::Found(()) => unreachable!("SingleFlight never rechecks"),
        }
    }
}

impl<K, V, F, Fut> Future for Run<'_, K, V, F>
where
    K: Hash + Eq + Clone + Send + 'static,
    V: Clone + Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = V> + Send + 'static,
{
    type Output = Result<V, TaskError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let State::Start { .. } = this.state {
            let State::Start { key, work } = mem::replace(&mut this.state, State::Done) else {
                unreachable!()
            };
            this.state = this.start(key, work);
        }
        match &mut this.state {
            State::Wait { waiter, .. } => match Pin::new(waiter).poll(cx) {
                Poll::Ready(outcome) => {
                    this.state = State::Done;
                    Poll::Ready(
                        outcome.map_err(|failure| TaskError::failed(Origin::Flight, failure)),
                    )
                }
                Poll::Pending => Poll::Pending,
            },
            State::Start { .. } => unreachable!("started above"),
            State::Done => panic!("`Run` polled after completion"),
        }
    }
}

impl<K, V, F> Drop for Run<'_, K, V, F> {
    fn drop(&mut self) {
        if let State::Wait {
            waiter,
            id,
            leave: Some((key, leave)),
        } = &self.state
        {
            leave(self.flight, key, *id, waiter);
        }
    }
}

impl<K, V, F> fmt::Debug for Run<'_, K, V, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Start { .. } => "start",
            State::Wait { .. } => "waiting",
            State::Done => "done",
        };
        f.debug_struct("Run")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

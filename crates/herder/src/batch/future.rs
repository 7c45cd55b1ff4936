use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::mem;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::dispatch::{self, SlotOf};
use super::error::LoadError;
use super::handle::{DataLoader, Moved, Shared};
use super::loader::Loader;
use super::state::{Found, Landed, Pass};
use crate::cache::{JoinedFailure, JoinedLoad};
use crate::flight::{Outcome, Waiter};
use crate::sync::{Arc, lock};
use std::sync::Arc as StdArc;

type ResultOf<L> = Landed<<L as Loader>::Value, <L as Loader>::Error>;

/// Reads the value at `position` out of a batch's outcome.
fn read<L: Loader>(
    outcome: Outcome<ResultOf<L>>,
    position: usize,
) -> Result<Option<L::Value>, LoadError<L::Error>> {
    match outcome {
        Ok(Landed::Done(Ok(values))) => Ok(values[position].clone()),
        Ok(Landed::Done(Err(error))) => Err(LoadError::loader(error)),
        Ok(Landed::TimedOut(after)) => Err(LoadError::timed_out(after)),
        Err(failure) => Err(LoadError::failed(failure)),
    }
}

/// What a caller makes of a cache load it joined (with a cache in front).
enum Joined<L: Loader> {
    /// The answer: the value, the absence, or this loader's kind of error.
    Answer(Result<Option<L::Value>, LoadError<L::Error>>),
    /// The load failed with another call site's error, which a `LoadError` cannot carry: this
    /// loader loads the key itself (see `State::find`).
    Again,
}

/// Polls a cache load this call joined.
fn poll_flight<L: Loader>(
    flight: &mut JoinedLoad<L::Value>,
    cx: &mut Context<'_>,
) -> Poll<Joined<L>> {
    flight.poll_joined::<L::Error>(cx).map(|joined| {
        Joined::Answer(match joined {
            Ok(value) => Ok(value),
            Err(JoinedFailure::Loader(error)) => Err(LoadError::loader(error)),
            Err(JoinedFailure::Failed(failure)) => Err(LoadError::failed(failure)),
            Err(JoinedFailure::TimedOut(after)) => Err(LoadError::timed_out(after)),
            Err(JoinedFailure::Foreign) => return Joined::Again,
        })
    })
}

/// One scheduler pass: `tokio::task::yield_now`, boxed because its type cannot be named.
type PassFuture = Pin<Box<dyn Future<Output = ()> + Send + Sync>>;

/// The yield window of a batch that a `load` or `load_many` opened, driven from the caller's
/// own task: yield to the scheduler, look (`State::window_pass`), and again while keys arrive;
/// at a quiet pass, close the window and start the batch, both from this poll
/// (`dispatch::close`).
///
/// The yield is `tokio::task::yield_now`: on a worker it comes back after the worker has run
/// the tasks that were ready; on the `block_on` thread of a multi-thread runtime it wakes its
/// own task at once, so the look comes after the sibling futures of the same poll. Either way
/// it is this task's own wake-up, which cannot be lost.
///
/// A pass that added keys → one more pass. A quiet pass closes the window, unless the runtime's
/// global queue still holds tasks it has not run (loads spawned faster than the workers run
/// them): then up to [`QUIET_PASSES_WHILE_QUEUED`] more passes. A future dropped before that
/// closes the window and spawns the batch ([`Driving::close`], from the future's `Drop`);
/// parked, the loader's janitor closes it (see `dispatch`).
///
/// Kept small (no handle to the loader or the runtime: the future has the one, the poll the
/// other): it is part of every `Load`, and a spawned fan-out holds 100,000 of them.
pub(crate) struct Driving<L: Loader> {
    slot: SlotOf<L>,
    pass: PassFuture,
    /// Quiet passes in a row so far.
    quiet: u32,
    /// The loader's landed batches at the last look (`Landings`).
    landed: u32,
}

/// How many quiet passes in a row a window waits while the runtime still has queued work, or
/// while batches of the loader land (their callers, woken, may load again).
const QUIET_PASSES_WHILE_QUEUED: u32 = 3;

/// What the opener is to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Drive {
    /// Yield once more, then look again.
    Again,
    /// The window is closed: stop driving.
    Done,
}

impl<L: Loader> Driving<L> {
    pub(super) fn new(slot: SlotOf<L>, landed: u32) -> Self {
        Driving {
            slot,
            pass: Box::pin(tokio::task::yield_now()),
            quiet: 0,
            landed,
        }
    }

    /// Polls the current pass; after each completed pass, looks. [`Drive::Done`] once the
    /// window is closed (by this look or by anyone else).
    fn poll(&mut self, shared: &StdArc<Shared<L>>, cx: &mut Context<'_>) -> Drive {
        loop {
            if self.pass.as_mut().poll(cx).is_pending() {
                return Drive::Again;
            }
            // Bound first: the lock is released before a close takes it again.
            let pass = lock(&shared.state).window_pass(&self.slot);
            // A batch of this loader landing during the pass (waking callers, on this thread
            // or another, that have not all been polled yet) or work queued on the runtime:
            // the pass was quiet, but the keys may not have stopped coming.
            // While one is waking its callers (a loop of wake-ups, microseconds), a pass does
            // not count: passes on the `block_on` thread take nanoseconds.
            let moved = shared.landings.moved(&mut self.landed);
            match pass {
                Pass::Grew => self.quiet = 0,
                Pass::Quiet if moved == Moved::Landing => {}
                Pass::Quiet
                    if self.quiet < QUIET_PASSES_WHILE_QUEUED
                        && (moved == Moved::Landed || dispatch::runtime_has_queued_work()) =>
                {
                    self.quiet += 1;
                }
                Pass::Quiet => {
                    dispatch::close(shared, &self.slot, Some(cx));
                    return Drive::Done;
                }
                Pass::Gone => return Drive::Done,
            }
            self.pass = Box::pin(tokio::task::yield_now());
        }
    }

    /// The future that drives this window is dropped before the window closed: close it now
    /// and spawn the batch, for the others.
    fn close(self, shared: &StdArc<Shared<L>>) {
        dispatch::close(shared, &self.slot, None);
    }

    /// The future that opened this window has its answer already (a stale value whose refresh
    /// opened the window): the window goes on in a task of its own, which drives it as the
    /// opener would have, so that the keys read together are refreshed together. Off any
    /// runtime, it closes now.
    fn detach(self, shared: &StdArc<Shared<L>>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return self.close(shared);
        };
        let mut detached = Detached {
            shared: shared.clone(),
            driving: Some(self),
        };
        runtime.spawn(std::future::poll_fn(move |cx| {
            drive(&detached.shared, &mut detached.driving, cx);
            match detached.driving {
                Some(_) => Poll::Pending,
                None => Poll::Ready(()),
            }
        }));
    }
}

/// A window driven by a task of its own ([`Driving::detach`]); the task dropped before the
/// window closed (its runtime shut down) closes it.
struct Detached<L: Loader> {
    shared: StdArc<Shared<L>>,
    driving: Option<Driving<L>>,
}

impl<L: Loader> Drop for Detached<L> {
    fn drop(&mut self) {
        if let Some(driving) = self.driving.take() {
            driving.close(&self.shared);
        }
    }
}

/// Drives the window a future opened, if any (see [`Driving`]).
fn drive<L: Loader>(
    shared: &StdArc<Shared<L>>,
    driving: &mut Option<Driving<L>>,
    cx: &mut Context<'_>,
) {
    if let Some(d) = driving
        && d.poll(shared, cx) == Drive::Done
    {
        *driving = None;
    }
}

/// The future returned by [`DataLoader::load`].
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct Load<'a, L: Loader> {
    loader: &'a DataLoader<L>,
    state: LoadState<L>,
    /// The batch this load opened, whose yield window it drives from its own task.
    driving: Option<Driving<L>>,
}

enum LoadState<L: Loader> {
    Start(L::Key),
    /// The key's position in its batch, and the wait for the batch.
    Wait(usize, Waiter<ResultOf<L>>),
    /// The wait for a cache load another reader started, for the key.
    Flight(L::Key, JoinedLoad<L::Value>),
    /// That load failed with another call site's error: look the key up again.
    Again(L::Key),
    Done,
}

// Nothing is pinned in place: the key is moved, the waiter is `Unpin`.
impl<L: Loader> Unpin for Load<'_, L> {}

impl<'a, L: Loader> Load<'a, L> {
    pub(super) fn new(loader: &'a DataLoader<L>, key: L::Key) -> Self {
        Load {
            loader,
            state: LoadState::Start(key),
            driving: None,
        }
    }
}

impl<L: Loader> Future for Load<'_, L> {
    type Output = Result<Option<L::Value>, LoadError<L::Error>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        // A memoized key: answered without the loader's lock (see `memo`).
        if let LoadState::Start(key) = &this.state
            && let Some(memo) = &this.loader.shared.memo
            && let Some(value) = memo.hit(key)
        {
            this.state = LoadState::Done;
            return Poll::Ready(Ok(value));
        }
        loop {
            let again = matches!(this.state, LoadState::Again(_));
            if let LoadState::Start(key) | LoadState::Again(key) = &this.state {
                let mut found = None;
                let driving = this
                    .loader
                    .find_all(std::iter::once(key), again, |_, f| found = Some(f));
                // A key looked up again had no batch of its own before (it waited for a load);
                // were it driving one still, that one closes now.
                match (driving, this.driving.take()) {
                    (Some(new), Some(old)) => {
                        old.close(&this.loader.shared);
                        this.driving = Some(new);
                    }
                    (new, old) => this.driving = new.or(old),
                }
                this.state = match found.expect("one key looked up") {
                    Found::Memo(value) => {
                        this.state = LoadState::Done;
                        if let Some(driving) = this.driving.take() {
                            driving.detach(&this.loader.shared);
                        }
                        return Poll::Ready(Ok(value));
                    }
                    Found::Batch(slot, position) => LoadState::Wait(position, Waiter::new(slot)),
                    Found::Flight(waiter) => {
                        let (LoadState::Start(key) | LoadState::Again(key)) =
                            mem::replace(&mut this.state, LoadState::Done)
                        else {
                            unreachable!("matched above")
                        };
                        LoadState::Flight(key, waiter)
                    }
                };
            }
            drive(&this.loader.shared, &mut this.driving, cx);
            if this.driving.is_some() {
                // A pass is under way, and its yield wakes this future: the wait is polled
                // once the window is closed. Registered before, the waiter would be woken by
                // the batch this future completes in its own poll (a loader that answers at
                // once), and a future woken in its own poll is polled again before its
                // siblings: in a `join_all` of resolvers (load, then load again), that made
                // the first resolver's next window pass before the others had run, and close
                // with one key.
                return Poll::Pending;
            }
            match &mut this.state {
                LoadState::Wait(position, waiter) => {
                    return match Pin::new(waiter).poll(cx) {
                        Poll::Ready(outcome) => {
                            let result = read::<L>(outcome, *position);
                            this.state = LoadState::Done;
                            Poll::Ready(result)
                        }
                        Poll::Pending => Poll::Pending,
                    };
                }
                LoadState::Flight(_, waiter) => match poll_flight::<L>(waiter, cx) {
                    Poll::Ready(Joined::Answer(result)) => {
                        this.state = LoadState::Done;
                        return Poll::Ready(result);
                    }
                    Poll::Ready(Joined::Again) => {
                        let LoadState::Flight(key, _) =
                            mem::replace(&mut this.state, LoadState::Done)
                        else {
                            unreachable!("matched above")
                        };
                        this.state = LoadState::Again(key);
                    }
                    Poll::Pending => return Poll::Pending,
                },
                LoadState::Start(_) | LoadState::Again(_) => unreachable!("looked up above"),
                LoadState::Done => panic!("`Load` polled after completion"),
            }
        }
    }
}

impl<L: Loader> Drop for Load<'_, L> {
    /// Dropped while driving the window it opened: the window closes, its batch runs.
    fn drop(&mut self) {
        if let Some(driving) = self.driving.take() {
            driving.close(&self.loader.shared);
        }
    }
}

impl<L: Loader> fmt::Debug for Load<'_, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            LoadState::Start(_) | LoadState::Again(_) => "start",
            LoadState::Wait(..) | LoadState::Flight(..) => "waiting",
            LoadState::Done => "done",
        };
        f.debug_struct("Load")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

/// The future returned by [`DataLoader::load_many`].
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct LoadMany<'a, L: Loader> {
    loader: &'a DataLoader<L>,
    state: ManyState<L>,
    /// The batch this call opened, whose yield window it drives from its own task.
    driving: Option<Driving<L>>,
}

/// Keys with their positions in one batch.
type Positions<L> = Vec<(<L as Loader>::Key, usize)>;

/// A key waiting for another reader's cache load (`None` once read).
type FlightWait<L> = (<L as Loader>::Key, Option<JoinedLoad<<L as Loader>::Value>>);

/// The keys that went to one batch, and the wait for it (`None` once read).
type Group<L> = (Option<Waiter<ResultOf<L>>>, Positions<L>);

enum ManyState<L: Loader> {
    Start(Vec<L::Key>),
    Wait {
        values: HashMap<L::Key, L::Value>,
        groups: Vec<Group<L>>,
        /// Keys waiting for a cache load another reader started (`None` once read).
        flights: Vec<FlightWait<L>>,
        left: usize,
    },
    Done,
}

impl<L: Loader> Unpin for LoadMany<'_, L> {}

impl<'a, L: Loader> LoadMany<'a, L> {
    pub(super) fn new(loader: &'a DataLoader<L>, keys: Vec<L::Key>) -> Self {
        LoadMany {
            loader,
            state: ManyState::Start(keys),
            driving: None,
        }
    }

    /// Looks the keys up; returns the wait, and the batch this call opened (to drive), if any.
    fn start(&self, mut keys: Vec<L::Key>) -> (ManyState<L>, Option<Driving<L>>) {
        let mut distinct = std::collections::HashSet::with_capacity(keys.len());
        keys.retain(|key| distinct.insert(key.clone()));
        drop(distinct);
        let mut values = HashMap::new();
        // Memoized keys: answered without the loader's lock (see `memo`); the rest are looked
        // up under it (and in the memo again).
        if let Some(memo) = &self.loader.shared.memo {
            keys.retain(|key| match memo.hit(key) {
                Some(Some(value)) => {
                    values.insert(key.clone(), value);
                    false
                }
                Some(None) => false,
                None => true,
            });
            if keys.is_empty() {
                let done = ManyState::Wait {
                    values,
                    groups: Vec::new(),
                    flights: Vec::new(),
                    left: 0,
                };
                return (done, None);
            }
        }
        let mut slots: Vec<(SlotOf<L>, Positions<L>)> = Vec::new();
        let mut flights = Vec::new();
        let opened = self
            .loader
            .find_all(keys.iter(), false, |key, found| match found {
                Found::Flight(waiter) => flights.push((key.clone(), Some(waiter))),
                Found::Memo(Some(value)) => {
                    values.insert(key.clone(), value);
                }
                Found::Memo(None) => {}
                Found::Batch(slot, position) => {
                    // Keys tend to arrive batch by batch: look at the latest group first.
                    match slots.iter_mut().rev().find(|(s, _)| Arc::ptr_eq(s, &slot)) {
                        Some((_, group)) => group.push((key.clone(), position)),
                        None => slots.push((slot, vec![(key.clone(), position)])),
                    }
                }
            });
        let groups: Vec<Group<L>> = slots
            .into_iter()
            .map(|(slot, keys)| (Some(Waiter::new(slot)), keys))
            .collect();
        let wait = ManyState::Wait {
            values,
            left: groups.len() + flights.len(),
            groups,
            flights,
        };
        (wait, opened)
    }
}

impl<L: Loader> Future for LoadMany<'_, L> {
    type Output = Result<HashMap<L::Key, L::Value>, LoadError<L::Error>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let ManyState::Start(_) = this.state {
            let ManyState::Start(keys) = mem::replace(&mut this.state, ManyState::Done) else {
                unreachable!()
            };
            let (wait, opened) = this.start(keys);
            this.state = wait;
            this.driving = opened;
        }
        loop {
            drive(&this.loader.shared, &mut this.driving, cx);
            if this.driving.is_some() {
                if matches!(this.state, ManyState::Wait { left: 0, .. }) {
                    // Answered already (stale values whose refreshes opened the window): the
                    // window goes on without this call.
                    if let Some(driving) = this.driving.take() {
                        driving.detach(&this.loader.shared);
                    }
                } else {
                    // A pass is under way and its yield wakes this future: the waits are
                    // polled once the window is closed (see `Load`).
                    return Poll::Pending;
                }
            }
            let ManyState::Wait {
                values,
                groups,
                flights,
                left,
            } = &mut this.state
            else {
                panic!("`LoadMany` polled after completion");
            };
            for (waiter, keys) in groups.iter_mut() {
                let Some(w) = waiter else { continue };
                let Poll::Ready(outcome) = Pin::new(w).poll(cx) else {
                    continue;
                };
                *waiter = None;
                *left -= 1;
                match outcome {
                    Ok(Landed::Done(Ok(found))) => {
                        for (key, position) in keys.drain(..) {
                            if let Some(value) = &found[position] {
                                values.insert(key, value.clone());
                            }
                        }
                    }
                    Ok(Landed::Done(Err(error))) => {
                        this.state = ManyState::Done;
                        return Poll::Ready(Err(LoadError::loader(error)));
                    }
                    Ok(Landed::TimedOut(after)) => {
                        this.state = ManyState::Done;
                        return Poll::Ready(Err(LoadError::timed_out(after)));
                    }
                    Err(failure) => {
                        this.state = ManyState::Done;
                        return Poll::Ready(Err(LoadError::failed(failure)));
                    }
                }
            }
            let mut again = Vec::new();
            for (key, waiter) in flights.iter_mut() {
                let Some(w) = waiter else { continue };
                let Poll::Ready(joined) = poll_flight::<L>(w, cx) else {
                    continue;
                };
                *waiter = None;
                *left -= 1;
                match joined {
                    Joined::Answer(Ok(Some(value))) => {
                        values.insert(key.clone(), value);
                    }
                    Joined::Answer(Ok(None)) => {}
                    Joined::Answer(Err(error)) => {
                        this.state = ManyState::Done;
                        return Poll::Ready(Err(error));
                    }
                    Joined::Again => again.push(key.clone()),
                }
            }
            if again.is_empty() {
                if *left > 0 {
                    return Poll::Pending;
                }
                let values = mem::take(values);
                this.state = ManyState::Done;
                return Poll::Ready(Ok(values));
            }
            // Keys whose joined load failed with another call site's error: this loader loads
            // them itself (see `State::find`), then the new waits are polled.
            let opened = this
                .loader
                .find_all(again.iter(), true, |key, found| match found {
                    Found::Memo(Some(value)) => {
                        values.insert(key.clone(), value);
                    }
                    Found::Memo(None) => {}
                    Found::Batch(slot, position) => {
                        groups.push((Some(Waiter::new(slot)), vec![(key.clone(), position)]));
                        *left += 1;
                    }
                    Found::Flight(waiter) => {
                        flights.push((key.clone(), Some(waiter)));
                        *left += 1;
                    }
                });
            // Driving a window already: the new one closes at once, its batch runs.
            match (&this.driving, opened) {
                (None, opened) => this.driving = opened,
                (Some(_), Some(opened)) => opened.close(&this.loader.shared),
                (Some(_), None) => {}
            }
        }
    }
}

impl<L: Loader> Drop for LoadMany<'_, L> {
    /// Dropped while driving the window it opened: the window closes, its batch runs.
    fn drop(&mut self) {
        if let Some(driving) = self.driving.take() {
            driving.close(&self.loader.shared);
        }
    }
}

impl<L: Loader> fmt::Debug for LoadMany<'_, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            ManyState::Start(keys) => format!("start ({} keys)", keys.len()),
            ManyState::Wait { left, .. } => format!("waiting for {left} loads"),
            ManyState::Done => "done".to_owned(),
        };
        f.debug_struct("LoadMany")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

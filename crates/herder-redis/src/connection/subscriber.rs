//! One pub/sub connection for every tier of a process: it subscribes to each tier's channel,
//! hands each message to the tiers of its channel, checks the connection with a heartbeat, and
//! after a lost connection resubscribes (each tier then flushes its L1: pub/sub is at most once).
//!
//! On a cluster it subscribes on one node: a `PUBLISH` reaches the subscribers of every node
//! (classic pub/sub is broadcast over the cluster bus); a lost node means the next one.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures_util::StreamExt as _;
use redis::aio::PubSubSink;
use tokio::sync::Notify;

use super::Inner;
use crate::tier::lock;

/// The longest pause between two attempts to resubscribe: with Redis back, the tiers hear from
/// it again within this.
pub(crate) const MAX_RETRY: Duration = Duration::from_millis(250);

/// How often the subscriber checks that its connection still answers.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// What a tier hears from the subscriber.
pub(crate) trait Listener: Send + Sync {
    /// A message on the tier's channel.
    fn receive(&self, message: &[u8]);
    /// The tier's channel is subscribed (again, after a lost connection, if not the first time);
    /// invalidations published before may have been missed.
    fn subscribed(&self);
    /// The connection did not answer its heartbeat: it is given up, and a new one made.
    fn heartbeat_missed(&self);
}

/// The tiers listening, each with its channel.
#[derive(Default)]
pub(crate) struct Registry {
    next: u64,
    listeners: Vec<(u64, String, Weak<dyn Listener>)>,
}

impl Registry {
    pub(crate) fn add(&mut self, channel: String, listener: Weak<dyn Listener>) {
        self.next += 1;
        self.listeners.push((self.next, channel, listener));
    }

    fn live(&mut self) -> Vec<(u64, String, Arc<dyn Listener>)> {
        self.listeners.retain(|(_, _, l)| l.strong_count() > 0);
        self.listeners
            .iter()
            .filter_map(|(id, channel, l)| Some((*id, channel.clone(), l.upgrade()?)))
            .collect()
    }

    fn on(&self, channel: &[u8]) -> Vec<Arc<dyn Listener>> {
        self.listeners
            .iter()
            .filter(|(_, c, _)| c.as_bytes() == channel)
            .filter_map(|(_, _, l)| l.upgrade())
            .collect()
    }
}

/// The subscriber's half of the connection: runs until every handle on it is dropped.
pub(crate) struct Subscriber {
    pub(crate) inner: Weak<Inner>,
    pub(crate) wake: Arc<Notify>,
}

/// What one connection has subscribed so far.
#[derive(Default)]
struct Session {
    channels: HashSet<String>,
    listeners: HashSet<u64>,
}

impl Subscriber {
    pub(crate) async fn run(self) {
        let Subscriber { inner, wake } = self;
        let mut backoff = Duration::from_millis(50);
        let mut node = 0usize;
        loop {
            let Some((client, timeout, registry)) = inner.upgrade().map(|inner| {
                let client = inner.pubsub[node % inner.pubsub.len()].clone();
                (client, inner.timeout, inner.registry.clone())
            }) else {
                return;
            };
            let connect = tokio::time::timeout(timeout, client.get_async_pubsub());
            if let Ok(Ok(pubsub)) = connect.await {
                let (mut sink, mut messages) = pubsub.split();
                let mut session = Session::default();
                if subscribe_new(&registry, &mut sink, &mut session, timeout).await {
                    backoff = Duration::from_millis(50);
                    // A connection can die without a word (a half-open socket, a paused
                    // server): a PING that does not come back in time ends it like a lost
                    // connection, so that the next subscription flushes every L1.
                    let mut heartbeat = tokio::time::interval(HEARTBEAT);
                    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    heartbeat.tick().await;
                    loop {
                        tokio::select! {
                            message = messages.next() => {
                                let Some(message) = message else { break };
                                let listeners = lock(&registry).on(message.get_channel_name().as_bytes());
                                for listener in listeners {
                                    listener.receive(message.get_payload_bytes());
                                }
                            }
                            _ = heartbeat.tick() => {
                                let ping = tokio::time::timeout(timeout, sink.ping::<redis::Value>());
                                if !matches!(ping.await, Ok(Ok(_))) {
                                    let listeners = lock(&registry).live();
                                    for (_, _, listener) in listeners {
                                        listener.heartbeat_missed();
                                    }
                                    break;
                                }
                            }
                            () = wake.notified() => {
                                if inner.strong_count() == 0 {
                                    return;
                                }
                                if !subscribe_new(&registry, &mut sink, &mut session, timeout).await {
                                    break;
                                }
                            }
                        }
                    }
                }
            }
            if inner.strong_count() == 0 {
                return;
            }
            node = node.wrapping_add(1);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_RETRY);
        }
    }
}

/// Subscribes the channels of the tiers this connection does not serve yet, and tells those
/// tiers; unsubscribes the channels no tier listens to any more. `false` if the connection
/// failed.
async fn subscribe_new(
    registry: &Mutex<Registry>,
    sink: &mut PubSubSink,
    session: &mut Session,
    timeout: Duration,
) -> bool {
    let live = lock(registry).live();
    let listened: HashSet<&String> = live.iter().map(|(_, channel, _)| channel).collect();
    let gone: Vec<String> = session
        .channels
        .iter()
        .filter(|channel| !listened.contains(channel))
        .cloned()
        .collect();
    if !gone.is_empty() {
        let unsubscribe = tokio::time::timeout(timeout, sink.unsubscribe(&gone));
        if !matches!(unsubscribe.await, Ok(Ok(()))) {
            return false;
        }
        for channel in &gone {
            session.channels.remove(channel);
        }
    }
    session
        .listeners
        .retain(|id| live.iter().any(|(live, _, _)| live == id));
    let fresh: Vec<_> = live
        .iter()
        .filter(|(id, _, _)| !session.listeners.contains(id))
        .cloned()
        .collect();
    let channels: Vec<String> = fresh
        .iter()
        .map(|(_, channel, _)| channel.clone())
        .filter(|channel| !session.channels.contains(channel))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    if !channels.is_empty() {
        let subscribe = tokio::time::timeout(timeout, sink.subscribe(&channels));
        if !matches!(subscribe.await, Ok(Ok(()))) {
            return false;
        }
        session.channels.extend(channels);
    }
    for (id, _, listener) in fresh {
        session.listeners.insert(id);
        listener.subscribed();
    }
    true
}

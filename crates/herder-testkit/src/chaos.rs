//! Random faults against a [`RedisServer`] behind a [`FaultProxy`], each recorded as a fault
//! window in a [`History`].

use std::time::{Duration, Instant};

use crate::{FaultProxy, History, RedisServer};

/// A fault [`Chaos`] can inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The proxy delays every chunk by 5 to 40 ms.
    Latency,
    /// The proxy holds every byte.
    Stall,
    /// The proxy discards every byte, then cuts the connections that lost some.
    Drop,
    /// The proxy cuts every connection.
    Reset,
    /// The proxy refuses new connections and cuts the open ones.
    Refuse,
    /// `redis-server` is stopped (SIGSTOP), then continued.
    Pause,
    /// `redis-server` is killed and a fresh, empty one started.
    Restart,
}

impl Fault {
    /// Every fault.
    pub const ALL: [Fault; 7] = [
        Fault::Latency,
        Fault::Stall,
        Fault::Drop,
        Fault::Reset,
        Fault::Refuse,
        Fault::Pause,
        Fault::Restart,
    ];
}

/// What [`Chaos::run`] injected.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Injected {
    /// Each fault with how many times it was injected.
    pub counts: Vec<(Fault, u64)>,
}

impl Injected {
    /// Faults injected in all.
    pub fn total(&self) -> u64 {
        self.counts.iter().map(|(_, n)| n).sum()
    }
}

/// Injects random faults for a while: a healthy gap, a fault held for a while, and so on.
#[derive(Clone, Copy, Debug)]
pub struct Chaos {
    /// The RNG seed.
    pub seed: u64,
    /// The longest healthy gap between faults (uniform from a tenth of it).
    pub gap: Duration,
    /// The longest a fault is held (uniform from a tenth of it).
    pub hold: Duration,
}

impl Chaos {
    /// Gaps of up to 600 ms and faults held up to 400 ms.
    pub fn new(seed: u64) -> Self {
        Chaos {
            seed,
            gap: Duration::from_millis(600),
            hold: Duration::from_millis(400),
        }
    }

    /// Injects faults for `duration` on the calling thread (it blocks: run it on a thread of its
    /// own or in `spawn_blocking`), recording each in `history`. Ends healthy: the proxy
    /// forwards and the server runs.
    pub fn run(
        self,
        proxy: &FaultProxy,
        redis: &mut RedisServer,
        history: &History,
        duration: Duration,
        faults: &[Fault],
    ) -> Injected {
        let mut rng = fastrand::Rng::with_seed(self.seed);
        let mut counts: Vec<(Fault, u64)> = faults.iter().map(|f| (*f, 0)).collect();
        let until = Instant::now() + duration;
        let between = |rng: &mut fastrand::Rng, most: Duration| {
            let most = most.as_millis() as u64;
            Duration::from_millis(rng.u64(most / 10..=most.max(1)))
        };
        loop {
            std::thread::sleep(between(&mut rng, self.gap));
            if Instant::now() >= until || faults.is_empty() {
                break;
            }
            let pick = rng.usize(..faults.len());
            let fault = faults[pick];
            counts[pick].1 += 1;
            let hold = between(&mut rng, self.hold);
            let start = Instant::now();
            match fault {
                Fault::Latency => {
                    proxy.set_latency(Duration::from_millis(rng.u64(5..=40)));
                    std::thread::sleep(hold);
                    proxy.resume();
                }
                Fault::Stall => {
                    proxy.stall();
                    std::thread::sleep(hold);
                    proxy.resume();
                }
                Fault::Drop => {
                    proxy.drop_traffic();
                    std::thread::sleep(hold);
                    proxy.resume();
                }
                Fault::Reset => proxy.reset(),
                Fault::Refuse => {
                    proxy.refuse();
                    proxy.reset();
                    std::thread::sleep(hold);
                    proxy.resume();
                }
                Fault::Pause => {
                    redis.pause();
                    std::thread::sleep(hold);
                    redis.resume();
                }
                Fault::Restart => {
                    redis.kill();
                    std::thread::sleep(hold);
                    redis.restart();
                }
            }
            history.fault(format!("{fault:?}"), start, Instant::now());
        }
        Injected { counts }
    }
}

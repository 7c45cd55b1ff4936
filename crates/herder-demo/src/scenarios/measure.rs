//! Bursts of concurrent requests and their latency percentiles.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// Latencies of a burst, sorted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Latencies {
    sorted: Vec<Duration>,
}

impl Latencies {
    /// From samples in any order.
    pub fn new(mut samples: Vec<Duration>) -> Self {
        samples.sort_unstable();
        Latencies { sorted: samples }
    }

    /// The `q` quantile (0 to 1), nearest rank; zero without samples.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.sorted.is_empty() {
            return Duration::ZERO;
        }
        let rank = (q * self.sorted.len() as f64).ceil() as usize;
        self.sorted[rank.clamp(1, self.sorted.len()) - 1]
    }

    /// The median.
    pub fn p50(&self) -> Duration {
        self.quantile(0.50)
    }

    /// The 99th percentile.
    pub fn p99(&self) -> Duration {
        self.quantile(0.99)
    }

    /// How many samples.
    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    /// `true` without samples.
    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }
}

/// What a burst gave: each request's output, their latencies, the burst's wall time.
#[derive(Debug)]
pub struct Burst<T> {
    /// Outputs, in request order.
    pub outputs: Vec<T>,
    /// Each request's time from the burst's start to its answer.
    pub latencies: Latencies,
    /// From the start to the last answer.
    pub wall: Duration,
}

/// Runs `n` requests as concurrent tasks, all released at the same instant; each request's
/// latency runs from that instant to its answer (time spent waiting for a thread counts, as
/// it would for a client).
pub async fn burst<F, Fut, T>(n: usize, request: F) -> Burst<T>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let (start, started) = watch::channel(None::<Instant>);
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let mut started = started.clone();
            let request = request(i);
            tokio::spawn(async move {
                let at = match started.wait_for(Option::is_some).await {
                    Ok(at) => at.expect("checked"),
                    Err(_) => Instant::now(),
                };
                let output = request.await;
                (output, at.elapsed())
            })
        })
        .collect();
    let at = Instant::now();
    let _ = start.send(Some(at));
    let mut outputs = Vec::with_capacity(n);
    let mut latencies = Vec::with_capacity(n);
    for task in tasks {
        match task.await {
            Ok((output, latency)) => {
                outputs.push(output);
                latencies.push(latency);
            }
            Err(err) => std::panic::resume_unwind(err.into_panic()),
        }
    }
    Burst {
        outputs,
        latencies: Latencies::new(latencies),
        wall: at.elapsed(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let l = Latencies::new((1..=100).rev().map(Duration::from_millis).collect());
        assert_eq!(l.p50(), Duration::from_millis(50));
        assert_eq!(l.p99(), Duration::from_millis(99));
        assert_eq!(l.quantile(1.0), Duration::from_millis(100));
        assert_eq!(Latencies::default().p99(), Duration::ZERO);
    }
}

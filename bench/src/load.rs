//! The closed-loop load driver and its latency statistics.
//!
//! Each of N clients owns one [`Writer`] (and so one connection) and issues
//! one write at a time: the next write starts as soon as the previous one is
//! acknowledged. Writes that complete during the warm-up are not counted;
//! writes that complete during the measurement window are counted and their
//! latencies recorded; writes still in flight when the window closes are
//! awaited but not counted.

use std::future::Future;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// One client's connection to a store, able to make one durable write.
pub trait Writer: Send + 'static {
    /// Makes write number `seq` of this client (unique per client) and returns
    /// once the store acknowledges it as durable.
    fn write(&mut self, seq: u64) -> impl Future<Output = Result<()>> + Send;
}

/// When to measure, relative to the moment every client starts.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// Time spent writing before measurement starts.
    pub warmup: Duration,
    /// Length of the measurement window.
    pub measure: Duration,
}

/// What one phase (one store, one concurrency) measured.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Writes acknowledged within the measurement window.
    pub ok: u64,
    /// Writes acknowledged at any time, warm-up and stragglers included.
    pub acked: u64,
    /// Failed writes, during warm-up or measurement.
    pub errors: u64,
    /// The first failure's message, if any.
    pub first_error: Option<String>,
    /// Length of the measurement window.
    pub measured: Duration,
    /// Latencies of the counted writes, sorted ascending.
    pub latencies: Vec<Duration>,
}

impl Summary {
    /// Acknowledged writes per second over the measurement window.
    pub fn throughput(&self) -> f64 {
        self.ok as f64 / self.measured.as_secs_f64()
    }

    /// The `p`-th percentile latency (nearest rank), if anything was counted.
    pub fn percentile(&self, p: f64) -> Option<Duration> {
        percentile(&self.latencies, p)
    }

    /// Mean latency, if anything was counted.
    pub fn mean(&self) -> Option<Duration> {
        let n = u32::try_from(self.latencies.len()).ok().filter(|&n| n > 0)?;
        Some(self.latencies.iter().sum::<Duration>() / n)
    }
}

/// The `p`-th percentile (0 < p <= 100) of `sorted` by the nearest-rank
/// method: the smallest value with at least p% of the values at or below it.
pub fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// What one client saw.
#[derive(Default)]
struct Tally {
    ok: u64,
    acked: u64,
    errors: u64,
    first_error: Option<String>,
    latencies: Vec<Duration>,
}

/// Runs every writer in its own task, closed loop, for `window`; returns the
/// merged results.
pub async fn run<W: Writer>(writers: Vec<W>, window: Window) -> Result<Summary> {
    let start = Instant::now();
    let measure_from = start + window.warmup;
    let stop_at = measure_from + window.measure;
    let mut tasks = JoinSet::new();
    for w in writers {
        tasks.spawn(drive(w, measure_from, stop_at));
    }
    let mut total = Tally::default();
    while let Some(res) = tasks.join_next().await {
        let t = res.context("a load task panicked")?;
        total.ok += t.ok;
        total.acked += t.acked;
        total.errors += t.errors;
        if total.first_error.is_none() {
            total.first_error = t.first_error;
        }
        total.latencies.extend(t.latencies);
    }
    total.latencies.sort_unstable();
    Ok(Summary {
        ok: total.ok,
        acked: total.acked,
        errors: total.errors,
        first_error: total.first_error,
        measured: window.measure,
        latencies: total.latencies,
    })
}

/// One client's loop.
async fn drive<W: Writer>(mut w: W, measure_from: Instant, stop_at: Instant) -> Tally {
    let mut t = Tally::default();
    let mut seq = 0u64;
    loop {
        let began = Instant::now();
        if began >= stop_at {
            break;
        }
        let res = w.write(seq).await;
        let done = Instant::now();
        seq += 1;
        match res {
            Ok(()) => {
                t.acked += 1;
                if done >= measure_from && done <= stop_at {
                    t.ok += 1;
                    t.latencies.push(done - began);
                }
            }
            Err(e) => {
                t.errors += 1;
                if t.first_error.is_none() {
                    t.first_error = Some(format!("{e:#}"));
                }
                // Should not happen; if the server is gone, do not spin.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let sorted: Vec<Duration> = (1..=100).map(ms).collect();
        assert_eq!(percentile(&sorted, 50.0), Some(ms(50)));
        assert_eq!(percentile(&sorted, 99.0), Some(ms(99)));
        assert_eq!(percentile(&sorted, 100.0), Some(ms(100)));

        let sorted: Vec<Duration> = (1..=1000).map(ms).collect();
        assert_eq!(percentile(&sorted, 50.0), Some(ms(500)));
        assert_eq!(percentile(&sorted, 99.0), Some(ms(990)));

        // Rounds up: the 99th percentile of 10 values is the largest.
        let sorted: Vec<Duration> = (1..=10).map(ms).collect();
        assert_eq!(percentile(&sorted, 50.0), Some(ms(5)));
        assert_eq!(percentile(&sorted, 99.0), Some(ms(10)));
    }

    #[test]
    fn percentile_edges() {
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[ms(7)], 50.0), Some(ms(7)));
        assert_eq!(percentile(&[ms(7)], 99.0), Some(ms(7)));
        assert_eq!(percentile(&[ms(1), ms(2)], 0.1), Some(ms(1)));
    }

    struct Fixed(Duration);

    impl Writer for Fixed {
        async fn write(&mut self, _seq: u64) -> Result<()> {
            tokio::time::sleep(self.0).await;
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn closed_loop_counts_only_the_window() {
        let window = Window {
            warmup: ms(100),
            measure: ms(1000),
        };
        let s = run(vec![Fixed(ms(10)), Fixed(ms(10))], window).await.unwrap();
        assert_eq!(s.errors, 0);
        // Each client completes one write every 10ms: 100 in the window, so
        // 200 for both; completions exactly on the boundaries may add one each.
        assert!((200..=204).contains(&s.ok), "ok = {}", s.ok);
        assert_eq!(s.percentile(50.0), Some(ms(10)));
        assert!((199.0..=205.0).contains(&s.throughput()));
    }
}

//! Workers: each keeps one call in flight on its channel, records the
//! latency of every correct reply in its own histogram (no shared lock on
//! the hot path), and the histograms are merged at the end.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hdrhistogram::Histogram;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

use crate::caller::Caller;
use crate::scenarios::Scenario;
use crate::seed::{Fixtures, SessionMinter};

/// Distinct error descriptions kept per worker; the rest are only counted.
const MAX_ERROR_KINDS: usize = 16;
/// Latencies are recorded in microseconds, 1 µs to 60 s, 3 significant digits.
const MAX_LATENCY_US: u64 = 60_000_000;
/// How late tokio's millisecond timer may wake a paced worker before the
/// delay is blamed on the server.
const TIMER_SLACK: Duration = Duration::from_millis(2);

pub struct Load {
    pub concurrency: usize,
    pub warmup: Duration,
    pub duration: Duration,
    /// Offered requests per second over all workers; `None` is closed-loop.
    pub rate: Option<f64>,
}

pub struct Outcome {
    /// Calls completed in the measured window, correct or not.
    pub calls: u64,
    pub errors: u64,
    /// Latencies of the correct replies, in microseconds.
    pub latency: Histogram<u64>,
    pub measured: Duration,
    pub error_kinds: BTreeMap<String, u64>,
}

/// One HTTP/2 connection per channel; tonic multiplexes the workers'
/// calls over it, as a real client service would.
pub async fn connect(url: &str, connections: usize) -> anyhow::Result<Vec<Channel>> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .with_context(|| format!("bad target URL {url}"))?
        .tcp_nodelay(true);
    let mut channels = Vec::with_capacity(connections);
    for _ in 0..connections {
        // `connect` (not `connect_lazy`) so each channel is its own TCP
        // connection, established before the clock starts.
        channels.push(
            endpoint
                .connect()
                .await
                .with_context(|| format!("cannot connect to {url}"))?,
        );
    }
    Ok(channels)
}

pub async fn run(
    scenario: Scenario,
    channels: &[Channel],
    fixtures: &Arc<Fixtures>,
    minter: &SessionMinter,
    load: &Load,
) -> anyhow::Result<Outcome> {
    let interval = load
        .rate
        .map(|rate| Duration::from_secs_f64(load.concurrency as f64 / rate));
    let start = Instant::now();
    let window = Window {
        measure_from: start + load.warmup,
        end: start + load.warmup + load.duration,
    };
    let mut workers = Vec::with_capacity(load.concurrency);
    for index in 0..load.concurrency {
        let channel = channels[index % channels.len()].clone();
        let caller = Caller::new(scenario, channel, Arc::clone(fixtures), minter)?;
        // Stagger paced workers so the offered load is smooth, not bursts.
        let first =
            interval.map(|every| start + every.mul_f64(index as f64 / load.concurrency as f64));
        workers.push(tokio::spawn(worker(caller, window, interval, first)));
    }
    let mut outcome = Outcome {
        calls: 0,
        errors: 0,
        latency: new_histogram()?,
        measured: load.duration,
        error_kinds: BTreeMap::new(),
    };
    for worker in workers {
        let stats = worker.await.context("a worker panicked")??;
        outcome.calls += stats.calls;
        outcome.errors += stats.errors;
        outcome
            .latency
            .add(&stats.latency)
            .context("merging histograms")?;
        for (kind, count) in stats.error_kinds {
            *outcome.error_kinds.entry(kind).or_default() += count;
        }
    }
    Ok(outcome)
}

#[derive(Clone, Copy)]
struct Window {
    measure_from: Instant,
    end: Instant,
}

struct WorkerStats {
    calls: u64,
    errors: u64,
    latency: Histogram<u64>,
    error_kinds: BTreeMap<String, u64>,
}

async fn worker(
    mut caller: Caller,
    window: Window,
    interval: Option<Duration>,
    first: Option<Instant>,
) -> anyhow::Result<WorkerStats> {
    let mut stats = WorkerStats {
        calls: 0,
        errors: 0,
        latency: new_histogram()?,
        error_kinds: BTreeMap::new(),
    };
    let mut next = first;
    loop {
        // Paced: when a slow reply made this worker late, latency runs from
        // when the call was due, so a server that falls behind is charged
        // for the queue it causes (no coordinated omission). Closed loop,
        // or a wake-up merely late by the timer's millisecond granularity:
        // from when it was sent.
        let due = match (next, interval) {
            (Some(due), Some(every)) => {
                tokio::time::sleep_until(due).await;
                next = Some(due + every);
                due
            }
            _ => Instant::now(),
        };
        if due >= window.end {
            break;
        }
        let sent = Instant::now();
        let origin = if sent.duration_since(due) <= TIMER_SLACK {
            sent
        } else {
            due
        };
        let result = caller.call().await;
        let done = Instant::now();
        if due < window.measure_from {
            continue;
        }
        stats.calls += 1;
        match result {
            Ok(()) => {
                let micros =
                    u64::try_from(done.duration_since(origin).as_micros()).unwrap_or(u64::MAX);
                stats.latency.saturating_record(micros.max(1));
            }
            Err(kind) => {
                stats.errors += 1;
                if stats.error_kinds.len() < MAX_ERROR_KINDS
                    || stats.error_kinds.contains_key(&kind)
                {
                    *stats.error_kinds.entry(kind).or_default() += 1;
                }
            }
        }
    }
    Ok(stats)
}

fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).context("histogram bounds")
}

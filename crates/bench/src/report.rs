//! Results: a table for people, the same numbers as JSON for scripts and
//! for comparing commits.

use std::fmt::Write as _;

use serde::Serialize;

use crate::drive::Outcome;
use crate::scenarios::Scenario;

#[derive(Serialize)]
pub struct Report {
    pub version: &'static str,
    pub backend: String,
    pub target: String,
    pub in_process: bool,
    pub keys: usize,
    pub cold_sample: usize,
    pub seed_secs: f64,
    pub concurrency: usize,
    pub connections: usize,
    pub rate: Option<f64>,
    pub warmup_secs: u64,
    pub duration_secs: u64,
    pub scenarios: Vec<ScenarioResult>,
}

#[derive(Serialize)]
pub struct ScenarioResult {
    pub scenario: Scenario,
    pub calls: u64,
    pub errors: u64,
    /// Correct replies per second.
    pub throughput: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    /// Throughput over health's: how far below the transport's ceiling.
    pub throughput_vs_health: Option<f64>,
    /// p99 over health's p99.
    pub p99_vs_health: Option<f64>,
    /// In-process only: Authenticate's trips to storage during the scenario
    /// (warm-up included), counted by the server.
    pub storage_lookups: Option<i64>,
}

impl ScenarioResult {
    pub fn new(scenario: Scenario, outcome: &Outcome, health: Option<&ScenarioResult>) -> Self {
        let ok = outcome.calls.saturating_sub(outcome.errors);
        let throughput = ok as f64 / outcome.measured.as_secs_f64().max(f64::EPSILON);
        let quantile = |q: f64| {
            if outcome.latency.is_empty() {
                0
            } else {
                outcome.latency.value_at_quantile(q)
            }
        };
        let p99_us = quantile(0.99);
        let ratio = |num: f64, den: f64| (den > 0.0).then(|| num / den);
        // Health is its own reference: 1.00, not blank.
        let (health_throughput, health_p99) = match health {
            Some(h) => (h.throughput, h.p99_us),
            None if scenario == Scenario::Health => (throughput, p99_us),
            None => (0.0, 0),
        };
        ScenarioResult {
            scenario,
            calls: outcome.calls,
            errors: outcome.errors,
            throughput,
            p50_us: quantile(0.50),
            p90_us: quantile(0.90),
            p99_us,
            max_us: outcome.latency.max(),
            throughput_vs_health: ratio(throughput, health_throughput),
            p99_vs_health: ratio(p99_us as f64, health_p99 as f64),
            storage_lookups: None,
        }
    }
}

impl Report {
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "velocity-auth {}", self.version);
        let _ = writeln!(
            out,
            "backend {} ({}), {} seeded keys (sample {}, seeded in {:.1}s), concurrency {} over {} connection(s), {}, warm-up {}s, measured {}s",
            self.backend,
            if self.in_process {
                "in-process"
            } else {
                self.target.as_str()
            },
            self.keys,
            self.cold_sample,
            self.seed_secs,
            self.concurrency,
            self.connections,
            match self.rate {
                Some(rate) => format!("offered {rate:.0} req/s"),
                None => "closed loop".to_owned(),
            },
            self.warmup_secs,
            self.duration_secs,
        );
        let _ = writeln!(
            out,
            "{:<18} {:>10} {:>7} {:>11} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8}",
            "scenario",
            "calls",
            "errors",
            "req/s",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "max ms",
            "x thru",
            "x p99"
        );
        let lookups = |r: &ScenarioResult| {
            r.storage_lookups
                .map_or_else(|| "-".to_owned(), |n| n.to_string())
        };
        for r in &self.scenarios {
            let _ = writeln!(
                out,
                "{:<18} {:>10} {:>7} {:>11.0} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8}   db lookups {}",
                r.scenario.name(),
                r.calls,
                r.errors,
                r.throughput,
                ms(r.p50_us),
                ms(r.p90_us),
                ms(r.p99_us),
                ms(r.max_us),
                times(r.throughput_vs_health),
                times(r.p99_vs_health),
                lookups(r),
            );
        }
        let _ = writeln!(
            out,
            "req/s counts correct replies only; x thru and x p99 are relative to health"
        );
        out
    }
}

fn ms(micros: u64) -> String {
    format!("{:.3}", micros as f64 / 1000.0)
}

fn times(ratio: Option<f64>) -> String {
    ratio.map_or_else(|| "-".to_owned(), |r| format!("{r:.2}"))
}

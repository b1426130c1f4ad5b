//! Command-line flags. Defaults give a useful run with no arguments: an
//! in-process server over a fresh SQLite file, every wired scenario.

use std::path::PathBuf;

use clap::Parser;

use crate::scenarios::Scenario;

/// Admin token and JWT secret the in-process server is started with. Not
/// secrets: they only ever protect a throwaway benchmark database.
pub const DEFAULT_ADMIN_TOKEN: &str = "velocity-bench-admin-token-0123456789";
pub const DEFAULT_JWT_SECRET: &str = "velocity-bench-supabase-jwt-secret-at-least-32-bytes";
pub const DEFAULT_JWT_ISSUER: &str = "https://velocity-bench.supabase.co/auth/v1";

#[derive(Parser, Debug)]
#[command(
    name = "velocity-bench",
    version = velocity_auth::VERSION,
    about = "Load generator for Velocity Auth: throughput and latency of each authentication path, against grpc.health as the ceiling"
)]
pub struct Cli {
    /// Drive an already-running server (`http://host:port`) instead of
    /// starting one in-process. It must accept `--admin-token` and
    /// `--jwt-secret`; for `session_es256` start it with the JWKS from
    /// `--print-jwks`; for `cold_keys` pass its `--database-url`.
    #[arg(long)]
    pub target: Option<String>,

    /// `sqlite://path` or `postgres://user@host:port/db` (created if
    /// missing). Default: a fresh temporary SQLite file, removed afterwards.
    #[arg(long)]
    pub database_url: Option<String>,

    /// Pool size of the in-process server (the server's default is 16).
    #[arg(long, default_value_t = 16)]
    pub db_max_connections: u32,

    /// Bearer token for DirectoryService.
    #[arg(long, default_value = DEFAULT_ADMIN_TOKEN)]
    pub admin_token: String,

    /// HS256 secret session tokens are signed with.
    #[arg(long, default_value = DEFAULT_JWT_SECRET)]
    pub jwt_secret: String,

    /// `iss` of minted session tokens (the in-process server requires it).
    #[arg(long, default_value = DEFAULT_JWT_ISSUER)]
    pub jwt_issuer: String,

    /// How often the in-process server flushes `last_used_at`, in ms.
    #[arg(long, default_value_t = 5000)]
    pub usage_flush_ms: u64,

    /// Workspace keys to insert straight into storage for `cold_keys`
    /// (0 disables that scenario).
    #[arg(long, default_value_t = 10_000)]
    pub keys: usize,

    /// How many of the seeded secrets to keep as the `cold_keys` workload.
    #[arg(long, default_value_t = 100_000)]
    pub sample: usize,

    /// Inserts in flight while seeding `--keys`.
    #[arg(long, default_value_t = 64)]
    pub seed_concurrency: usize,

    /// Authorization codes minted ahead for `token_endpoint` (each call
    /// exchanges one, then refreshes the tokens it got), and for
    /// `code_exchange` unless `consent_approve` runs before it to mint them.
    #[arg(long, default_value_t = 30_000)]
    pub codes: usize,

    /// Where the cold-key sample is saved after seeding, and read from when
    /// `--keys 0`: seed a million keys once, measure many times.
    #[arg(long)]
    pub sample_file: Option<std::path::PathBuf>,

    /// Scenarios to run, comma-separated; `health` always runs first.
    /// Default: every wired scenario.
    #[arg(long, value_delimiter = ',', value_enum)]
    pub scenarios: Vec<Scenario>,

    /// Concurrent workers, each with one call in flight.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,

    /// HTTP/2 connections the workers are spread over, round-robin.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,

    /// Measured seconds per scenario.
    #[arg(long, default_value_t = 10)]
    pub duration_secs: u64,

    /// Unmeasured seconds before each scenario (connections, caches, JIT of
    /// the pools).
    #[arg(long, default_value_t = 2)]
    pub warmup_secs: u64,

    /// Offered load in requests per second across all workers (e.g. half
    /// of a closed-loop run's req/s, for "p99 at 50% of peak"). A worker
    /// kept late by a slow reply is charged from the call's scheduled time.
    /// Default: closed loop, as fast as replies come.
    #[arg(long)]
    pub rate: Option<f64>,

    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,

    /// Print the JWKS (ES256 fixture key, kid `es256-test`) that a
    /// `--target` server needs for `session_es256`, and exit.
    #[arg(long)]
    pub print_jwks: bool,
}

impl Cli {
    /// Rejects combinations that could only fail later, after seeding.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.concurrency > 0, "--concurrency must be at least 1");
        anyhow::ensure!(self.connections > 0, "--connections must be at least 1");
        anyhow::ensure!(self.duration_secs > 0, "--duration-secs must be at least 1");
        // Checked here so that signing and request building cannot fail later.
        anyhow::ensure!(
            !self.jwt_secret.is_empty(),
            "--jwt-secret must not be empty"
        );
        anyhow::ensure!(
            format!("Bearer {}", self.admin_token)
                .parse::<tonic::metadata::AsciiMetadataValue>()
                .is_ok(),
            "--admin-token must be printable ASCII"
        );
        if let Some(rate) = self.rate {
            anyhow::ensure!(
                rate.is_finite() && rate > 0.0,
                "--rate must be a positive number"
            );
        }
        Ok(())
    }
}

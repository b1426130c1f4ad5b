//! `velocity-bench`: seeds a Velocity Auth server, drives each scenario
//! for a fixed time after a warm-up, and reports throughput and latency
//! next to grpc.health's, the ceiling of the same transport on the same
//! machine. Progress goes to stderr; the table and a JSON line to stdout.

mod caller;
mod cli;
mod drive;
mod grant_fixtures;
mod http_grants;
mod oauth;
mod report;
mod scenarios;
mod seed;
mod server;

use std::sync::Arc;

/// The same allocator as the `velocity-auth` binary, so the in-process
/// server is measured as it runs in production.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;

use crate::cli::Cli;
use crate::drive::Load;
use crate::grant_fixtures::{GrantPlan, Grantor};
use crate::report::{Report, ScenarioResult};
use crate::scenarios::Scenario;
use crate::seed::{Fixtures, SessionMinter};
use crate::server::Target;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // The in-process server logs through tracing; keep it to warnings so
    // per-request logging does not become part of what is measured.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();

    let cli = Cli::parse();
    cli.validate()?;
    let order = scenarios::run_order(&cli.scenarios);
    let run_time = Duration::from_secs((cli.warmup_secs + cli.duration_secs) * order.len() as u64);
    let minter = SessionMinter::new(&cli.jwt_secret, &cli.jwt_issuer, run_time);
    if cli.print_jwks {
        println!("{}", serde_json::to_string_pretty(&minter.jwks())?);
        return Ok(());
    }

    let target = Target::start(&cli, &minter).await?;
    let result = bench(&cli, &order, &minter, &target).await;
    target.stop().await;
    let report = result?;

    print!("{}", report.table());
    let json = serde_json::to_string(&report)?;
    if let Some(path) = &cli.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    println!("{json}");
    Ok(())
}

async fn bench(
    cli: &Cli,
    order: &[Scenario],
    minter: &SessionMinter,
    target: &Target,
) -> anyhow::Result<Report> {
    let channels = drive::connect(&target.url, cli.connections).await?;

    let seeding = Instant::now();
    let directory = seed::directory(channels[0].clone(), &cli.admin_token, minter).await?;
    let mut cold_slug = directory.slug.clone();
    let cold_sample = match (&target.database, cli.keys) {
        (_, 0) => match &cli.sample_file {
            Some(path) if path.exists() => {
                let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(path)?)?;
                cold_slug = saved["slug"].as_str().unwrap_or_default().to_owned();
                let sample: Vec<String> = serde_json::from_value(saved["secrets"].clone())?;
                eprintln!(
                    "read {} cold keys of workspace {cold_slug} from {}",
                    sample.len(),
                    path.display()
                );
                sample
            }
            _ => Vec::new(),
        },
        (Some(database), count) => {
            eprintln!("seeding {count} keys into {} ...", target.backend);
            seed::bulk_keys(
                database.store(),
                &directory,
                count,
                cli.sample,
                cli.seed_concurrency,
            )
            .await?
        }
        (None, _) => {
            eprintln!("not seeding --keys: a --target run needs its --database-url for that");
            Vec::new()
        }
    };
    if cli.keys > 0
        && let Some(path) = &cli.sample_file
    {
        let saved = serde_json::json!({ "slug": cold_slug, "secrets": cold_sample });
        std::fs::write(path, serde_json::to_vec(&saved)?)?;
    }
    let keys = if cold_sample.is_empty() { 0 } else { cli.keys };
    eprintln!(
        "seeding took {:.2}s ({keys} bulk keys)",
        seeding.elapsed().as_secs_f64()
    );

    let wants_oauth = order
        .iter()
        .any(|s| matches!(s, Scenario::OauthAccessToken | Scenario::TokenEndpoint));
    let oauth = match (&target.service, wants_oauth) {
        (Some((service, http_url)), true) => {
            eprintln!(
                "seeding an OAuth app and {} authorization codes ...",
                cli.codes
            );
            Some(
                oauth::seed(
                    service,
                    http_url.clone(),
                    &directory.user_id,
                    &directory.slug,
                    cli.codes,
                    cli.seed_concurrency,
                )
                .await?,
            )
        }
        (None, true) => {
            eprintln!("OAuth scenarios need the in-process server (no --target)");
            None
        }
        _ => None,
    };
    let grants = match (
        &target.service,
        GrantPlan::for_run(order, cli.concurrency, cli.codes),
    ) {
        (Some((service, http_url)), Some(plan)) => {
            eprintln!(
                "seeding a confidential app, its consent form, {} refresh-token chains and {} codes ...",
                plan.chains, plan.codes_ahead
            );
            let grantor = Grantor {
                service,
                http_url,
                user_id: &directory.user_id,
                slug: &directory.slug,
            };
            Some(grant_fixtures::seed(&grantor, minter, &plan, cli.seed_concurrency).await?)
        }
        (None, Some(_)) => {
            eprintln!("HTTP grant scenarios need the in-process server (no --target)");
            None
        }
        (_, None) => None,
    };
    let seed_secs = seeding.elapsed().as_secs_f64();
    let fixtures = Arc::new(Fixtures {
        oauth,
        grants,
        cold_slug,
        user_id: directory.user_id,
        slug: directory.slug,
        workspace_key: directory.workspace_key,
        personal_key: directory.personal_key,
        cold_sample,
    });
    let load = Load {
        concurrency: cli.concurrency,
        warmup: Duration::from_secs(cli.warmup_secs),
        duration: Duration::from_secs(cli.duration_secs),
        rate: cli.rate,
    };

    let mut results: Vec<ScenarioResult> = Vec::new();
    for &scenario in order {
        if let Some(why) = scenario.unavailable(&fixtures) {
            eprintln!("skipping {}: {why}", scenario.name());
            continue;
        }
        eprintln!(
            "running {} ({}s warm-up + {}s) ...",
            scenario.name(),
            cli.warmup_secs,
            cli.duration_secs
        );
        let before = storage_lookups(target).await;
        let outcome = drive::run(scenario, &channels, &fixtures, minter, &load).await?;
        let after = storage_lookups(target).await;
        for (kind, count) in &outcome.error_kinds {
            eprintln!("  {count} x {kind}");
        }
        let health = results.first().filter(|r| r.scenario == Scenario::Health);
        let mut result = ScenarioResult::new(scenario, &outcome, health);
        result.storage_lookups = before.zip(after).map(|(b, a)| a - b);
        results.push(result);
    }

    Ok(Report {
        version: velocity_auth::VERSION,
        backend: target.backend.clone(),
        target: target.url.clone(),
        in_process: cli.target.is_none(),
        keys,
        cold_sample: fixtures.cold_sample.len(),
        seed_secs,
        concurrency: cli.concurrency,
        connections: cli.connections,
        rate: cli.rate,
        warmup_secs: cli.warmup_secs,
        duration_secs: cli.duration_secs,
        scenarios: results,
    })
}

/// Authenticate's trips to storage so far, as the in-process server counts
/// them (keys, tokens, memberships, workspaces; not usage flushes).
async fn storage_lookups(target: &Target) -> Option<i64> {
    let (service, _) = target.service.as_ref()?;
    i64::try_from(service.storage_lookups()).ok()
}

use std::sync::Arc;

/// glibc's allocator serialises on arena locks under this many small
/// allocations (h2 frames, prost messages): a profile of the load generator
/// showed ~20% of CPU in malloc/free and futex waits. mimalloc keeps
/// per-thread heaps.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use tracing_subscriber::EnvFilter;
use velocity_auth::cli::{self, Command};
use velocity_auth::{ServeConfig, VERSION};
use velocity_domain::SystemClock;

/// Velocity Auth: decides who is calling, in which workspace, with what scopes.
#[derive(Parser, Debug)]
#[command(name = "velocity-auth", version = VERSION)]
struct Cli {
    #[command(flatten)]
    serve: ServeConfig,
    #[command(subcommand)]
    command: Option<Command>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match cli.command {
        None | Some(Command::Serve) => {
            let server = velocity_auth::start(cli.serve, Arc::new(SystemClock)).await?;
            let stopped = server.shutdown_token();
            let failed = tokio::select! {
                _ = velocity_auth::shutdown_signal() => false,
                _ = stopped.cancelled() => true,
            };
            tracing::info!("shutting down");
            server.shutdown().await;
            if failed {
                anyhow::bail!("a listener stopped unexpectedly; see the log above");
            }
            Ok(())
        }
        Some(Command::Admin(command)) => cli::run(command, &cli.serve.database).await,
    }
}

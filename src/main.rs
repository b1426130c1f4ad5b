use std::sync::Arc;

/// glibc's allocator serialises on arena locks under this many small
/// allocations (h2 frames, prost messages): a profile of the load generator
/// showed ~20% of CPU in malloc/free and futex waits. mimalloc keeps
/// per-thread heaps.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use velocity_auth::cli::{self, Command};
use velocity_auth::logging::{self, LogFormat};
use velocity_auth::{ServeConfig, VERSION};
use velocity_domain::SystemClock;

/// Velocity Auth: decides who is calling, in which workspace, with what scopes.
#[derive(Parser, Debug)]
#[command(name = "velocity-auth", version = VERSION)]
struct Cli {
    /// Log lines as text, or as one JSON object each (with the request id
    /// of the request they belong to); RUST_LOG filters them.
    #[arg(long, env = "VELOCITY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(flatten)]
    serve: ServeConfig,
    #[command(subcommand)]
    command: Option<Command>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let logging = logging::init(cli.log_format);
    let result = run(cli).await;
    logging.shutdown();
    result
}

async fn run(cli: Cli) -> anyhow::Result<()> {
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

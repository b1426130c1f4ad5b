//! The server under test: started in-process (the default, so one command
//! measures a given commit) or an already-running one at `--target`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use sqlx::Connection;
use sqlx::postgres::PgConnection;
use velocity_auth::{RunningServer, ServeConfig};
use velocity_domain::SystemClock;
use velocity_storage::{Database, StorageOptions};

use crate::cli::Cli;
use crate::seed::SessionMinter;

/// Where the load goes, and what to clean up afterwards.
pub struct Target {
    pub url: String,
    pub backend: String,
    /// Storage for bulk seeding: the in-process server's own pool, or one
    /// opened on `--database-url` next to a remote server.
    pub database: Option<Database>,
    /// The in-process server's use-cases and HTTP address, for OAuth seeding.
    pub service: Option<(velocity_domain::Service, String)>,
    server: Option<RunningServer>,
    temp_files: Vec<PathBuf>,
}

impl Target {
    pub async fn start(cli: &Cli, minter: &SessionMinter) -> anyhow::Result<Target> {
        match &cli.target {
            Some(url) => Self::remote(cli, url).await,
            None => Self::in_process(cli, minter).await,
        }
    }

    async fn remote(cli: &Cli, url: &str) -> anyhow::Result<Target> {
        let database = match &cli.database_url {
            Some(db_url) => Some(
                Database::open(db_url, &StorageOptions::default())
                    .await
                    .context("cannot open --database-url for seeding")?,
            ),
            None => None,
        };
        Ok(Target {
            url: url.to_owned(),
            backend: database
                .as_ref()
                .map_or("remote", |db| db.backend())
                .to_owned(),
            database,
            service: None,
            server: None,
            temp_files: Vec::new(),
        })
    }

    async fn in_process(cli: &Cli, minter: &SessionMinter) -> anyhow::Result<Target> {
        let unique = format!("{}-{}", std::process::id(), uuid::Uuid::now_v7().simple());
        let mut temp_files = Vec::new();
        let database_url = match &cli.database_url {
            Some(url) => {
                if is_postgres(url) {
                    ensure_postgres_database(url).await?;
                }
                url.clone()
            }
            None => {
                let path = std::env::temp_dir().join(format!("velocity-bench-{unique}.db"));
                for suffix in ["", "-wal", "-shm"] {
                    let mut file = path.clone().into_os_string();
                    file.push(suffix);
                    temp_files.push(PathBuf::from(file));
                }
                format!("sqlite://{}", path.display())
            }
        };
        let jwks_path = std::env::temp_dir().join(format!("velocity-bench-jwks-{unique}.json"));
        std::fs::write(&jwks_path, serde_json::to_vec(&minter.jwks())?)
            .with_context(|| format!("cannot write {}", jwks_path.display()))?;
        temp_files.push(jwks_path.clone());

        let mut config = ServeConfig::for_tests(&database_url);
        config.database.db_max_connections = cli.db_max_connections;
        config.admin_token = Some(cli.admin_token.clone());
        config.jwt_secret = Some(cli.jwt_secret.clone());
        config.jwks_file = Some(jwks_path);
        config.jwt_issuer = Some(cli.jwt_issuer.clone());
        config.usage_flush_ms = cli.usage_flush_ms;
        // Rate limits on (every call is counted, as in production) but out
        // of reach: the load is far beyond the published figures, and what
        // is measured is the cost of counting, not of refusing.
        config.rate_limits.rate_limit_per_credential = u32::MAX;
        config.rate_limits.rate_limit_per_session = u32::MAX;
        config.rate_limits.rate_limit_per_address = u32::MAX;
        config.rate_limits.rate_limit_per_client = u32::MAX;
        let server = velocity_auth::start(config, Arc::new(SystemClock))
            .await
            .context("cannot start the in-process server")?;
        // Measured with the known-credential filter in place, as in service.
        server.ready().await;
        Ok(Target {
            url: format!("http://{}", server.grpc_addr),
            backend: server.database.backend().to_owned(),
            database: Some(server.database.clone()),
            service: Some((
                server.service.clone(),
                format!("http://{}", server.http_addr),
            )),
            server: Some(server),
            temp_files,
        })
    }

    /// Stops the in-process server (flushing usage) and removes temp files.
    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        } else if let Some(database) = self.database.take() {
            database.close().await;
        }
        for file in &self.temp_files {
            let _ = std::fs::remove_file(file);
        }
    }
}

fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// Creates the database named in `url` if it does not exist, connecting to
/// the server's `postgres` database to do it.
async fn ensure_postgres_database(url: &str) -> anyhow::Result<()> {
    let (without_query, query) = match url.split_once('?') {
        Some((head, query)) => (head, Some(query)),
        None => (url, None),
    };
    let (base, name) = without_query
        .rsplit_once('/')
        .filter(|(base, _)| base.contains("//") && !base.ends_with('/'))
        .context("--database-url must name a database: postgres://user@host:port/name")?;
    // The name is spliced into SQL: allow only plain identifiers.
    anyhow::ensure!(
        !name.is_empty()
            && name.len() <= 63
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
        "database name {name:?} must be lowercase letters, digits and '_'"
    );
    let admin_url = match query {
        Some(query) => format!("{base}/postgres?{query}"),
        None => format!("{base}/postgres"),
    };
    let mut conn = PgConnection::connect(&admin_url)
        .await
        .with_context(|| format!("cannot connect to PostgreSQL at {base}/postgres"))?;
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(name)
        .fetch_optional(&mut conn)
        .await
        .context("cannot list databases")?;
    if exists.is_none() {
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .with_context(|| format!("cannot create database {name}"))?;
        eprintln!("created PostgreSQL database {name}");
    }
    let _ = conn.close().await;
    Ok(())
}

//! The harness every end-to-end test uses: a real server on ephemeral
//! ports over a throwaway database, and real tonic clients.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::sync::Arc;

use tonic::transport::Channel;
use tonic::{Request, Status};
use tonic_types::StatusExt;
use velocity_auth::{RunningServer, ServeConfig};
use velocity_domain::{Clock, ManualClock};
use velocity_proto::pb;
use velocity_proto::pb::auth_service_client::AuthServiceClient;
use velocity_proto::pb::directory_service_client::DirectoryServiceClient;
use velocity_testkit::{
    FixtureKey, SESSION_LIFETIME_SECS, TestDatabase, bearer, jwks, sign_hs256, supabase_claims,
};

pub mod oauth;

pub const JWT_SECRET: &str = "test-only-supabase-jwt-secret-at-least-32-bytes";
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
pub const ISSUER: &str = "https://velocity-test.supabase.co/auth/v1";

#[derive(Clone, Copy, Debug)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct Harness {
    pub server: Option<RunningServer>,
    pub clock: Arc<ManualClock>,
    pub channel: Channel,
    pub db: TestDatabase,
    pub http: String,
    jwks_path: PathBuf,
}

/// A failed test still removes its JWKS file (its database guard drops too).
impl Drop for Harness {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.jwks_path);
    }
}

impl Harness {
    pub async fn start(backend: Backend) -> Harness {
        Self::start_with(backend, |_| {}).await
    }

    pub async fn start_with(backend: Backend, tweak: impl FnOnce(&mut ServeConfig)) -> Harness {
        Self::start_with_clock(backend, Arc::new(ManualClock::starting_now()), tweak).await
    }

    /// On a clock shared with other harnesses (replicas that must agree on
    /// the time, as real ones do).
    pub async fn start_with_clock(
        backend: Backend,
        clock: Arc<ManualClock>,
        tweak: impl FnOnce(&mut ServeConfig),
    ) -> Harness {
        let db = match backend {
            Backend::Sqlite => TestDatabase::sqlite(),
            Backend::Postgres => TestDatabase::postgres().await,
        };
        let jwks_path =
            std::env::temp_dir().join(format!("velocity-jwks-{}.json", uuid::Uuid::now_v7()));
        std::fs::write(
            &jwks_path,
            serde_json::to_vec(&jwks(&FixtureKey::ALL)).unwrap(),
        )
        .unwrap();
        let mut config = ServeConfig::for_tests(&db.url);
        config.admin_token = Some(ADMIN_TOKEN.into());
        config.jwt_secret = Some(JWT_SECRET.into());
        config.jwks_file = Some(jwks_path.clone());
        config.jwt_issuer = Some(ISSUER.into());
        config.usage_flush_ms = 50;
        config.health_interval_ms = 100;
        tweak(&mut config);
        let server = velocity_auth::start(config, clock.clone()).await.unwrap();
        // Tests see a replica as a load balancer would: once ready.
        server.ready().await;
        let channel = Channel::from_shared(format!("http://{}", server.grpc_addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let http = format!("http://{}", server.http_addr);
        Harness {
            server: Some(server),
            clock,
            channel,
            db,
            http,
            jwks_path,
        }
    }

    pub fn server(&self) -> &RunningServer {
        self.server.as_ref().unwrap()
    }

    pub fn auth(&self) -> AuthServiceClient<Channel> {
        AuthServiceClient::new(self.channel.clone())
    }

    pub fn directory(&self) -> DirectoryServiceClient<Channel> {
        DirectoryServiceClient::new(self.channel.clone())
    }

    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
        let _ = std::fs::remove_file(&self.jwks_path);
    }

    /// A user, a workspace and a membership, through DirectoryService.
    pub async fn member(&self, slug: &str, role: &str) -> String {
        let mut dir = self.directory();
        let user = dir
            .create_user(admin(pb::CreateUserRequest {
                id: String::new(),
                email: format!("{role}-{}@example.com", uuid::Uuid::now_v7()),
                name: role.into(),
            }))
            .await
            .unwrap()
            .into_inner();
        self.ensure_workspace(slug).await;
        dir.set_membership(admin(pb::SetMembershipRequest {
            workspace_slug: slug.into(),
            user_id: user.id.clone(),
            role: role.into(),
        }))
        .await
        .unwrap();
        user.id
    }

    pub async fn ensure_workspace(&self, slug: &str) {
        let result = self
            .directory()
            .create_workspace(admin(pb::CreateWorkspaceRequest {
                slug: slug.into(),
                name: slug.into(),
            }))
            .await;
        match result {
            Ok(_) => {}
            Err(status) if status.code() == tonic::Code::AlreadyExists => {}
            Err(status) => panic!("create workspace: {status:?}"),
        }
    }

    /// A Supabase-style HS256 session token for `user`.
    pub fn session(&self, user: &str) -> String {
        self.session_with(user, |_| {})
    }

    pub fn session_with(&self, user: &str, tweak: impl FnOnce(&mut serde_json::Value)) -> String {
        let mut claims = self.claims(user);
        tweak(&mut claims);
        sign_hs256(JWT_SECRET, &claims)
    }

    /// An ES256 session token signed by the fixture key the JWKS publishes.
    pub fn es256_session(&self, user: &str) -> String {
        FixtureKey::Es256.sign(&self.claims(user))
    }

    pub fn rs256_session(&self, user: &str) -> String {
        FixtureKey::Rs256.sign(&self.claims(user))
    }

    /// Supabase claims for `user`, issued now by the harness clock.
    pub fn claims(&self, user: &str) -> serde_json::Value {
        supabase_claims(
            ISSUER,
            user,
            self.clock.now().as_secs(),
            SESSION_LIFETIME_SECS,
        )
    }

    pub async fn authenticate(
        &self,
        credential: &str,
        slug: &str,
        scopes: &[&str],
    ) -> Result<pb::Principal, Status> {
        self.auth()
            .authenticate(pb::AuthenticateRequest {
                credential: credential.into(),
                workspace_slug: slug.into(),
                required_scopes: scopes.iter().map(|s| s.to_string()).collect(),
            })
            .await
            .map(|r| r.into_inner().principal.unwrap())
    }

    /// Creates a key as the holder of `caller`; returns (id, secret).
    pub async fn create_key(
        &self,
        caller: &str,
        kind: pb::KeyKind,
        slug: &str,
        scopes: &[&str],
    ) -> Result<(String, String), Status> {
        let response = self
            .auth()
            .create_key(bearer(
                caller,
                pb::CreateKeyRequest {
                    kind: kind as i32,
                    workspace_slug: slug.into(),
                    name: "test key".into(),
                    scopes: scopes.iter().map(|s| s.to_string()).collect(),
                    expires_at: None,
                },
            ))
            .await?
            .into_inner();
        Ok((response.key.unwrap().id, response.secret))
    }

    /// A new owner of `slug` and a workspace key they made there with
    /// `scopes`: (owner's user id, key id, key secret).
    pub async fn owner_and_workspace_key(
        &self,
        slug: &str,
        scopes: &[&str],
    ) -> (String, String, String) {
        let owner = self.member(slug, "owner").await;
        let (id, secret) = self
            .create_key(&self.session(&owner), pb::KeyKind::Workspace, slug, scopes)
            .await
            .unwrap();
        (owner, id, secret)
    }
}

/// A PostgreSQL harness with a small pool, for outage stories, and the
/// secret of a workspace key of `acme` with `issues:read` that nothing has
/// authenticated yet (so nothing has cached it).
pub async fn postgres_with_cold_key() -> (Harness, String) {
    let h = Harness::start_with(Backend::Postgres, |c| c.database.db_max_connections = 2).await;
    let (_, _, cold) = h.owner_and_workspace_key("acme", &["issues:read"]).await;
    (h, cold)
}

/// A PostgreSQL outage for one harness's database: new connections are
/// refused and the open ones cut, until `end`.
pub struct PostgresOutage {
    admin: sqlx::PgPool,
    name: String,
}

impl PostgresOutage {
    pub async fn begin(h: &Harness) -> PostgresOutage {
        let name = h.db.url.rsplit('/').next().unwrap().to_owned();
        let admin = sqlx::PgPool::connect(&velocity_testkit::postgres_admin_url())
            .await
            .unwrap();
        let outage = PostgresOutage { admin, name };
        outage.allow_connections(false).await;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}'",
            outage.name
        )))
        .execute(&outage.admin)
        .await
        .unwrap();
        outage
    }

    pub async fn end(self) {
        self.allow_connections(true).await;
        self.admin.close().await;
    }

    async fn allow_connections(&self, allow: bool) {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "ALTER DATABASE {} WITH ALLOW_CONNECTIONS {allow}",
            self.name
        )))
        .execute(&self.admin)
        .await
        .unwrap();
    }
}

pub fn admin<T>(message: T) -> Request<T> {
    bearer(ADMIN_TOKEN, message)
}

/// The machine-readable reason of a refusal.
pub fn reason(status: &Status) -> String {
    status
        .get_details_error_info()
        .map(|info| info.reason)
        .unwrap_or_else(|| format!("<no ErrorInfo: {status:?}>"))
}

#[track_caller]
pub fn assert_refused<T: std::fmt::Debug>(result: Result<T, Status>, code: tonic::Code, why: &str) {
    match result {
        Err(status) => {
            assert_eq!(status.code(), code, "{status:?}");
            assert_eq!(reason(&status), why, "{status:?}");
        }
        Ok(value) => panic!("expected {code:?}/{why}, got {value:?}"),
    }
}

/// Instantiates a test story for every backend.
#[macro_export]
macro_rules! for_each_backend {
    ($($story:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $story() {
                    super::$story($crate::common::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $story() {
                    super::$story($crate::common::Backend::Postgres).await;
                }
            )*
        }
    };
}

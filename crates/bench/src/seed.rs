//! The data the scenarios need: a user, a workspace, an owner membership
//! and two keys made through the public API (so they are exactly what
//! callers create), plus bulk keys written straight to storage, because
//! a million CreateKey calls would benchmark CreateKey, not lookups.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tonic::transport::Channel;
use velocity_domain::api_key::KeyOwner;
use velocity_domain::{
    ApiKey, ApiKeyId, Clock, CredentialKind, Scope, ScopeSet, Secret, Store, SystemClock, UserId,
    WorkspaceId,
};
use velocity_proto::pb;
use velocity_proto::pb::auth_service_client::AuthServiceClient;
use velocity_proto::pb::directory_service_client::DirectoryServiceClient;
use velocity_testkit::{FixtureKey, bearer};

/// What the scenarios authenticate with and check replies against.
pub struct Fixtures {
    pub user_id: String,
    pub slug: String,
    pub workspace_key: String,
    pub personal_key: String,
    /// Secrets of bulk-seeded keys (all in `slug`'s workspace).
    pub cold_sample: Vec<String>,
    /// The workspace the cold keys belong to.
    pub cold_slug: String,
    /// Present when an OAuth scenario was asked for (in-process runs only).
    pub oauth: Option<crate::oauth::OAuthFixtures>,
    /// Present when an HTTP grant scenario was asked for (in-process only).
    pub grants: Option<crate::grant_fixtures::GrantFixtures>,
}

/// Mints Supabase-style session tokens, as Supabase Auth would issue them:
/// HS256 with the project secret, or ES256 with the fixture key.
pub struct SessionMinter {
    jwt_secret: String,
    issuer: String,
    /// Tokens outlive the whole run, so none expires mid-measurement.
    lifetime_secs: i64,
}

impl SessionMinter {
    /// `jwt_secret` must not be empty (`Cli::validate` checks it).
    pub fn new(jwt_secret: &str, issuer: &str, lifetime: Duration) -> Self {
        SessionMinter {
            jwt_secret: jwt_secret.to_owned(),
            issuer: issuer.to_owned(),
            lifetime_secs: i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX / 2) + 3600,
        }
    }

    pub fn hs256(&self, user: &str) -> String {
        velocity_testkit::sign_hs256(&self.jwt_secret, &self.claims(user))
    }

    pub fn es256(&self, user: &str) -> String {
        FixtureKey::Es256.sign(&self.claims(user))
    }

    /// The JWKS a Supabase project would publish for the ES256 key, the
    /// only asymmetric key the scenarios sign with.
    pub fn jwks(&self) -> serde_json::Value {
        velocity_testkit::jwks(&[FixtureKey::Es256])
    }

    fn claims(&self, user: &str) -> serde_json::Value {
        let now = SystemClock.now().as_secs();
        velocity_testkit::supabase_claims(&self.issuer, user, now, self.lifetime_secs)
    }
}

/// Ids of what `directory` created, for bulk seeding.
pub struct Directory {
    pub user_id: String,
    pub workspace_id: String,
    pub slug: String,
    pub workspace_key: String,
    pub personal_key: String,
}

/// User, workspace and owner membership via DirectoryService; one
/// workspace key and one personal key via CreateKey as that user.
pub async fn directory(
    channel: Channel,
    admin_token: &str,
    minter: &SessionMinter,
) -> anyhow::Result<Directory> {
    let mut dir = DirectoryServiceClient::new(channel.clone());
    // A fresh slug per run, so a reused database never collides.
    let run = uuid::Uuid::now_v7().simple().to_string();
    let slug = format!("bench-{}", &run[run.len() - 12..]);
    let user = dir
        .create_user(bearer(
            admin_token,
            pb::CreateUserRequest {
                id: String::new(),
                email: format!("bench-{run}@example.com"),
                name: "velocity-bench".into(),
            },
        ))
        .await
        .context("DirectoryService.CreateUser")?
        .into_inner();
    let workspace = dir
        .create_workspace(bearer(
            admin_token,
            pb::CreateWorkspaceRequest {
                slug: slug.clone(),
                name: "velocity-bench".into(),
            },
        ))
        .await
        .context("DirectoryService.CreateWorkspace")?
        .into_inner();
    dir.set_membership(bearer(
        admin_token,
        pb::SetMembershipRequest {
            workspace_slug: slug.clone(),
            user_id: user.id.clone(),
            role: "owner".into(),
        },
    ))
    .await
    .context("DirectoryService.SetMembership")?;

    let session = minter.hs256(&user.id);
    let mut auth = AuthServiceClient::new(channel);
    let mut create = async |kind: pb::KeyKind, slug: &str, scopes: &[&str]| {
        let reply = auth
            .create_key(bearer(
                &session,
                pb::CreateKeyRequest {
                    kind: kind as i32,
                    workspace_slug: slug.into(),
                    name: "velocity-bench".into(),
                    scopes: scopes.iter().map(|s| s.to_string()).collect(),
                    expires_at: None,
                },
            ))
            .await
            .with_context(|| format!("AuthService.CreateKey ({})", kind.as_str_name()))?;
        anyhow::Ok(reply.into_inner().secret)
    };
    let workspace_key = create(pb::KeyKind::Workspace, &slug, &["issues:read"]).await?;
    // Not read-only, so with a slug it carries the owner's write scopes.
    let personal_key = create(pb::KeyKind::Personal, "", &["user:read", "user:write"]).await?;
    Ok(Directory {
        user_id: user.id,
        workspace_id: workspace.id,
        slug,
        workspace_key,
        personal_key,
    })
}

/// Inserts `count` workspace keys with `in_flight` inserts at a time and
/// returns a uniform random sample of at most `sample` of their secrets
/// (reservoir sampling, so a sample of the first rows written, which sit
/// together in the table, cannot flatter the lookups).
pub async fn bulk_keys(
    store: Arc<dyn Store>,
    directory: &Directory,
    count: usize,
    sample: usize,
    in_flight: usize,
) -> anyhow::Result<Vec<String>> {
    let workspace_id = WorkspaceId(directory.workspace_id.clone());
    let created_by = UserId(directory.user_id.clone());
    let scopes = ScopeSet::parse([Scope::IssuesRead.as_str()])
        .map_err(|err| anyhow::anyhow!("bench scope set: {err}"))?;
    let mut reservoir: Vec<String> = Vec::with_capacity(sample.min(count));
    let mut rng = StdRng::from_os_rng();
    let started = Instant::now();
    let mut last_progress = Instant::now();

    let keys = (0..count).map(|index| {
        let secret = Secret::generate(CredentialKind::WorkspaceKey);
        if reservoir.len() < sample {
            reservoir.push(secret.expose().to_owned());
        } else {
            let slot = rng.random_range(0..=index);
            if slot < sample {
                reservoir[slot] = secret.expose().to_owned();
            }
        }
        ApiKey {
            id: ApiKeyId::generate(),
            hash: secret.hash(),
            display: secret.display_form(),
            name: format!("bench-{index}"),
            scopes,
            owner: KeyOwner::Workspace(workspace_id.clone()),
            created_by: Some(created_by.clone()),
            created_at: SystemClock.now(),
            expires_at: None,
            revoked_at: None,
            last_used_at: None,
        }
    });
    let mut inserted = 0usize;
    let mut results = futures::stream::iter(keys)
        .map(|key| {
            let store = Arc::clone(&store);
            async move { store.insert_api_key(&key).await }
        })
        .buffer_unordered(in_flight.max(1))
        .map_err(|err| anyhow::anyhow!("inserting a seeded key: {err}"));
    while let Some(()) = results.try_next().await? {
        inserted += 1;
        // Large seeds take minutes; show they are moving.
        if last_progress.elapsed() >= Duration::from_secs(5) {
            last_progress = Instant::now();
            let rate = inserted as f64 / started.elapsed().as_secs_f64();
            eprintln!("  seeded {inserted}/{count} keys ({rate:.0}/s)");
        }
    }
    drop(results);
    Ok(reservoir)
}

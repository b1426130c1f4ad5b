//! A service over a throwaway SQLite store and a clock that moves only when
//! told to: the use-cases end to end, without a transport in between.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use velocity_domain::api_key::KeyOwner;
use velocity_domain::oauth::{AuthorizationRequest, ClientType, OAuthApp, pkce};
use velocity_domain::service::{AppManager, ClientAuth, KeySpec, NewApp};
use velocity_domain::{
    Clock, ManualClock, Principal, ScopeSet, Service, ServiceConfig, Timestamp, User, Workspace,
};
use velocity_storage::{Database, StorageOptions};
use velocity_testkit::TestDatabase;

pub const REDIRECT_URI: &str = "https://tt.example.com/callback";
pub const VERIFIER: &str = "dBjftJeZ4CVP-mJ0anRfWkxB2Tw0jA7pvD2xKbP4uF2s";

pub struct World {
    pub service: Service,
    pub clock: Arc<ManualClock>,
    pub owner: User,
    pub acme: Workspace,
    _db: TestDatabase,
    database: Database,
}

impl World {
    pub async fn new() -> World {
        Self::with_config(ServiceConfig::default()).await
    }

    pub async fn with_config(config: ServiceConfig) -> World {
        let db = TestDatabase::sqlite();
        let database = Database::open(&db.url, &StorageOptions::default())
            .await
            .unwrap();
        let clock = Arc::new(ManualClock::starting_now());
        let service = Service::new(database.store(), clock.clone(), None, config);
        let owner = service
            .create_user(None, "ada@example.com", "Ada")
            .await
            .unwrap();
        let acme = service.create_workspace("acme", "Acme").await.unwrap();
        service
            .set_membership("acme", &owner.id, "owner")
            .await
            .unwrap();
        World {
            service,
            clock,
            owner,
            acme,
            _db: db,
            database,
        }
    }

    /// A user with `role` in acme.
    pub async fn member(&self, email: &str, role: &str) -> User {
        let user = self.service.create_user(None, email, email).await.unwrap();
        self.service
            .set_membership("acme", &user.id, role)
            .await
            .unwrap();
        user
    }

    /// The principal a management call would see for `user`: a personal key
    /// holding `admin`, issued with authorisation settled.
    pub async fn caller(&self, user: &User) -> (Principal, String) {
        let (_, secret) = self
            .service
            .issue_key(KeySpec {
                owner: KeyOwner::User(user.id.clone()),
                created_by: None,
                name: "admin".into(),
                scopes: ScopeSet::parse(["admin"]).unwrap(),
                expires_at: None,
            })
            .await
            .unwrap();
        let credential = secret.expose().to_owned();
        (self.service.caller(&credential).await.unwrap(), credential)
    }

    pub async fn app(&self, client_type: ClientType) -> (OAuthApp, ClientAuth) {
        let (app, secret) = self
            .service
            .register_app(
                &AppManager::Operator,
                NewApp {
                    workspace_slug: None,
                    name: "Timetracker".into(),
                    redirect_uris: vec![REDIRECT_URI.into()],
                    scopes: vec![
                        "issues:read".into(),
                        "issues:write".into(),
                        "user:read".into(),
                    ],
                    client_type,
                },
            )
            .await
            .unwrap();
        // Public apps authenticate as the docs' token requests do: by
        // client_id alone.
        let client = ClientAuth {
            client_id: app.client_id.clone(),
            client_secret: (client_type == ClientType::Confidential)
                .then(|| secret.expose().to_owned()),
            address: None,
        };
        (app, client)
    }

    /// Runs the consent page's approve for `user` and returns the code.
    pub async fn code_for(&self, app: &OAuthApp, user: &User, scope: &str) -> String {
        let request = AuthorizationRequest {
            client_id: Some(app.client_id.0.clone()),
            redirect_uri: Some(REDIRECT_URI.into()),
            response_type: Some("code".into()),
            scope: Some(scope.into()),
            state: Some("s1".into()),
            code_challenge: Some(pkce::challenge_of(VERIFIER)),
            code_challenge_method: Some("S256".into()),
        };
        let validated = self
            .service
            .check_authorization(&request)
            .await
            .unwrap()
            .unwrap();
        let location = self
            .service
            .approve(&user.id, &validated, "acme")
            .await
            .unwrap();
        let url = url::Url::parse(&location).unwrap();
        url.query_pairs()
            .find(|(k, _)| k == "code")
            .map(|(_, v)| v.into_owned())
            .unwrap()
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    pub async fn close(self) {
        self.database.close().await;
    }
}

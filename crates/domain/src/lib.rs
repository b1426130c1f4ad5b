//! Velocity Auth's domain: credentials, scopes, the resolution rules that
//! turn a credential into a [`Principal`], session-token verification and the
//! use-cases built on them. Pure logic; storage is reached through [`Store`].

pub mod admin;
pub mod api_key;
pub mod authorization;
pub mod cache;
pub mod clock;
pub mod credential;
pub mod directory;
pub mod error;
pub mod invalidation;
mod issued;
pub mod oauth;
pub mod page;
pub mod principal;
pub mod rate_limit;
pub mod request_id;
mod resolve;
pub mod routes;
pub mod scope;
pub mod service;
pub mod session;
pub mod stats;
pub mod store;
pub mod throttle;
mod usage;

pub use api_key::{ApiKey, ApiKeyId, KeyKind};
pub use authorization::Authorization;
pub use clock::{Clock, ManualClock, SystemClock, Timestamp};
pub use credential::{CredentialKind, Secret, SecretHash};
pub use directory::{Membership, Role, User, UserId, Workspace, WorkspaceId};
pub use error::{Error, ErrorClass, Reason, StoreError};
pub use principal::{Principal, PrincipalKind};
pub use scope::{Scope, ScopeSet};
pub use service::{Service, ServiceConfig};
pub use session::{SessionClaims, SessionVerifier, SessionVerifierConfig};
pub use store::Store;

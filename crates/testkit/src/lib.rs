//! Test support shared by Velocity Auth's tests and its load generator:
//! throwaway SQLite and PostgreSQL databases, Supabase-style session tokens
//! signed with the fixture keys, PKCE pairs and bearer metadata. Never a
//! dependency of production code: tests take it under `[dev-dependencies]`,
//! and only the unpublished `velocity-bench` tool as a normal dependency.

mod database;
mod grpc;
mod oauth;
mod session;

pub use database::{TestDatabase, postgres_admin_url};
pub use grpc::bearer;
pub use oauth::pkce_pair;
pub use session::{FixtureKey, SESSION_LIFETIME_SECS, jwks, sign_hs256, supabase_claims};

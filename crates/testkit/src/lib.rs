//! Test support shared by Velocity Auth's crates. Never a dependency of
//! production code: add it under `[dev-dependencies]`.

mod database;

pub use database::{TestDatabase, postgres_admin_url};

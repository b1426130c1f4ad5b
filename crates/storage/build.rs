//! `sqlx::migrate!` embeds the migrations when this crate compiles, but
//! cargo does not know to compile it again when a migration is *added*
//! (only edits to files it read are tracked): without this, a new
//! migration is silently missing from a build that reuses the old one.

fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}

//! Compiles the protos with protox (pure Rust) so no `protoc` is needed,
//! and keeps the file descriptor set for server reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        root.join("velocity/auth/v1/auth.proto"),
        root.join("velocity/auth/v1/admin.proto"),
        root.join("velocity/auth/v1/apps.proto"),
    ];
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let descriptors = protox::compile(&files, [&root])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("velocity_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure()
        .compile_well_known_types(false)
        .codec_path("crate::codec::VelocityCodec")
        .compile_fds(descriptors)?;
    Ok(())
}

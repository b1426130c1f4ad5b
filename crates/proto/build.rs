//! Compiles the protos with protox (pure Rust) so no `protoc` is needed,
//! and keeps the file descriptor set for server reflection and the HTTP
//! gateway: encoded with its extension options (the `google.api.http`
//! rules the gateway's routes come from) and source comments (the
//! descriptions of /openapi.json).

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        root.join("velocity/auth/v1/auth.proto"),
        root.join("velocity/auth/v1/admin.proto"),
        root.join("velocity/auth/v1/apps.proto"),
        root.join("google/api/http.proto"),
        root.join("google/api/annotations.proto"),
    ];
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let mut compiler = protox::Compiler::new([&root])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(&files)?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    // Not `encode_to_vec` of `file_descriptor_set()`: prost's descriptor
    // types drop extension options, and with them the HTTP rules.
    std::fs::write(
        out_dir.join("velocity_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;
    let descriptors = compiler.file_descriptor_set();
    tonic_prost_build::configure()
        .compile_well_known_types(false)
        .codec_path("crate::codec::VelocityCodec")
        .compile_fds(descriptors)?;
    Ok(())
}

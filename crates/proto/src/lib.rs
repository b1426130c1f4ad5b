//! Generated types for `velocity.auth.v1`, and the descriptor set that
//! server reflection serves.

pub mod velocity {
    pub mod auth {
        pub mod v1 {
            tonic::include_proto!("velocity.auth.v1");
        }
    }
}

pub use velocity::auth::v1 as pb;

/// Encoded `FileDescriptorSet` of every Velocity proto and its imports,
/// with extension options and source comments: for reflection, and for
/// the HTTP gateway's routes and OpenAPI document.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/velocity_descriptor.bin"));

pub mod codec;
pub mod convert;

/// `google.rpc.ErrorInfo.domain` of every error the service sends.
pub const ERROR_DOMAIN: &str = "auth.velocity.dev";

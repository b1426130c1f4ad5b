//! Joins the two adapters for the HTTP gateway, which may see neither the
//! other: the HTTP adapter's [`UnaryCall`] over the gRPC adapter's
//! in-process services, turning a `tonic::Status` into the plain
//! [`RpcFailure`] the HTTP side maps through the error table.

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::HeaderValue;
use tonic::metadata::AsciiMetadataValue;
use tonic_types::StatusExt;
use velocity_domain::admin::AdminToken;
use velocity_domain::{Error, Reason, Service};
use velocity_http::gateway::{CallFuture, RpcFailure, SetupError, UnaryCall};
use velocity_server::{ERROR_METADATA_KEY, LocalGrpc};

struct InProcess(LocalGrpc);

impl UnaryCall for InProcess {
    fn call(&self, path: String, authorization: Option<HeaderValue>, message: Bytes) -> CallFuture {
        let grpc = self.0.clone();
        Box::pin(async move {
            let metadata = match authorization {
                None => None,
                Some(value) => {
                    Some(AsciiMetadataValue::try_from(value.as_bytes()).map_err(|_| {
                        failure(Error::Unauthenticated(Reason::CredentialMalformed))
                    })?)
                }
            };
            grpc.unary(&path, metadata, message)
                .await
                .map_err(|status| from_status(&status))
        })
    }
}

/// The gateway over the services of `service`, with the routes of the
/// compiled-in descriptor set.
pub fn gateway(
    service: Service,
    admin_token: AdminToken,
) -> Result<velocity_http::Gateway, SetupError> {
    let caller = Arc::new(InProcess(LocalGrpc::new(service, admin_token)));
    velocity_http::Gateway::new(velocity_server::FILE_DESCRIPTOR_SET, caller)
}

fn from_status(status: &tonic::Status) -> RpcFailure {
    let info = status.get_details_error_info();
    RpcFailure {
        code: status.code() as i32,
        message: status.message().to_owned(),
        error: info
            .as_ref()
            .and_then(|i| i.metadata.get(ERROR_METADATA_KEY).cloned()),
        reason: info.map(|i| i.reason),
        retry_after_secs: status
            .get_details_retry_info()
            .and_then(|r| r.retry_delay)
            .map(|d| d.as_secs()),
    }
}

/// A refusal made here, before any RPC, in the same shape.
fn failure(err: Error) -> RpcFailure {
    let class = err.class();
    RpcFailure {
        code: class.grpc_code(),
        message: err.public_message(),
        reason: Some(err.reason().as_str().to_owned()),
        error: Some(class.error_code().to_owned()),
        retry_after_secs: None,
    }
}

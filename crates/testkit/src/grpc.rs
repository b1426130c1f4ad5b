//! gRPC request helpers.

use tonic::Request;
use tonic::metadata::AsciiMetadataValue;

/// `message` with `authorization: Bearer <token>`. Panics if the token
/// cannot be a header value (not printable ASCII).
#[expect(
    clippy::expect_used,
    reason = "test support: tokens are ASCII; callers taking one from outside check it first"
)]
pub fn bearer<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    let value: AsciiMetadataValue = format!("Bearer {token}")
        .parse()
        .expect("a bearer token is a valid header value");
    request.metadata_mut().insert("authorization", value);
    request
}

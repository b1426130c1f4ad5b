//! A span per request carrying its request id (from the `x-request-id`
//! header, or made), so every log line of the request has it, and the id
//! echoed on the response. The span names the path, never the query: the
//! consent URL's query is the caller's business.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;
use velocity_domain::request_id::{REQUEST_ID_HEADER, RequestId};

pub(crate) async fn request_id(request: Request, next: Next) -> Response {
    let id = RequestId::from_header(
        request
            .headers()
            .get(REQUEST_ID_HEADER)
            .map(|v| v.as_bytes()),
    );
    let span = tracing::info_span!(
        "http",
        request_id = %id,
        method = %request.method(),
        path = %request.uri().path(),
    );
    async move {
        let mut response = next.run(request).await;
        tracing::debug!(status = response.status().as_u16(), "http request answered");
        // Visible ASCII only (RequestId's rule), so this cannot fail.
        if let Ok(echo) = HeaderValue::from_str(id.as_str()) {
            response.headers_mut().insert(REQUEST_ID_HEADER, echo);
        }
        response
    }
    .instrument(span)
    .await
}

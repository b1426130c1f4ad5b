//! A span per call carrying its request id (from `x-request-id` metadata,
//! or made), so every log line of the call has it, and the id echoed in the
//! response metadata (trailers-only error responses included).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::codegen::http;
use tower::{Layer, Service};
use tracing::Instrument;
use velocity_domain::request_id::{REQUEST_ID_HEADER, RequestId};

#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RequestIdLayer;

impl<S> Layer<S> for RequestIdLayer {
    type Service = RequestIdService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestIdService { inner }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct RequestIdService<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, R> Service<http::Request<B>> for RequestIdService<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let id = RequestId::from_header(
            request
                .headers()
                .get(REQUEST_ID_HEADER)
                .map(|v| v.as_bytes()),
        );
        // Visible ASCII only (RequestId's rule), so this cannot fail.
        let echo = http::HeaderValue::from_str(id.as_str()).ok();
        let span = tracing::info_span!(
            "grpc",
            request_id = %id,
            rpc = %request.uri().path(),
        );
        let call = self.inner.call(request);
        Box::pin(
            async move {
                let mut response = call.await?;
                // Unary errors are trailers-only responses, so their status is
                // in the headers; a success's travels in the trailers.
                let grpc_status = response
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("0")
                    .to_owned();
                tracing::debug!(grpc_status, "grpc call answered");
                if let Some(echo) = echo {
                    response.headers_mut().insert(REQUEST_ID_HEADER, echo);
                }
                Ok(response)
            }
            .instrument(span),
        )
    }
}

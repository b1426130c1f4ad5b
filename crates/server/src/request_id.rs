//! A span per call carrying its request id (from `x-request-id` metadata,
//! or made), so every log line of the call has it, and the id echoed in the
//! response metadata (trailers-only error responses included).
//!
//! Every RPC, Health/Check included, passes through here, so the per-call
//! cost is kept to the id and the span: the future is not boxed, and the
//! status is read for the debug line only when that line is logged.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::codegen::http;
use tower::{Layer, Service};
use tracing::Instrument;
use tracing::instrument::Instrumented;
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

impl<S, B, R> Service<http::Request<B>> for RequestIdService<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

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
        // Sensitive, so HPACK sends it as a literal: an id is new on every
        // response, and indexing it would only churn the connection's
        // table (evicting the entries that do repeat) for nothing.
        let echo = http::HeaderValue::from_str(id.as_str())
            .ok()
            .map(|mut value| {
                value.set_sensitive(true);
                value
            });
        let span = tracing::info_span!(
            "grpc",
            request_id = %id,
            rpc = %request.uri().path(),
        );
        ResponseFuture {
            inner: self.inner.call(request).instrument(span),
            echo,
        }
    }
}

pin_project_lite::pin_project! {
    /// The inner call in its span; the id goes on the response.
    pub(crate) struct ResponseFuture<F> {
        #[pin]
        inner: Instrumented<F>,
        echo: Option<http::HeaderValue>,
    }
}

impl<F, R, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<http::Response<R>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let mut response = std::task::ready!(this.inner.as_mut().poll(cx))?;
        if tracing::enabled!(tracing::Level::DEBUG) {
            // Unary errors are trailers-only responses, so their status is
            // in the headers; a success's travels in the trailers.
            let grpc_status = response
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("0");
            this.inner
                .span()
                .in_scope(|| tracing::debug!(grpc_status, "grpc call answered"));
        }
        if let Some(echo) = this.echo.take() {
            response.headers_mut().insert(REQUEST_ID_HEADER, echo);
        }
        Poll::Ready(Ok(response))
    }
}

//! A span per request carrying its request id (from the `x-request-id`
//! header, or made), so every log line of the request has it, and the id
//! echoed on the response. The span names the path, never the query: the
//! consent URL's query is the caller's business.
//!
//! A tower layer of our own, not `middleware::from_fn`, which boxes a
//! clone of the service, its `Next` and its future on every request: this
//! one wraps the service's future in place.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::response::Response;
use tower::{Layer, Service};
use tracing::Span;
use velocity_domain::request_id::{REQUEST_ID_HEADER, RequestId};

#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RequestIdLayer;

impl<S> Layer<S> for RequestIdLayer {
    type Service = WithRequestId<S>;

    fn layer(&self, inner: S) -> WithRequestId<S> {
        WithRequestId { inner }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct WithRequestId<S> {
    inner: S,
}

impl<S> Service<Request> for WithRequestId<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = RequestIdFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
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
        // The service runs its call inside the span too: a handler's
        // synchronous part logs with the id.
        let answer = span.in_scope(|| self.inner.call(request));
        RequestIdFuture { answer, span, id }
    }
}

pin_project_lite::pin_project! {
    pub(crate) struct RequestIdFuture<F> {
        #[pin]
        answer: F,
        span: Span,
        id: RequestId,
    }
}

impl<F> Future for RequestIdFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        let Ok(mut response) = std::task::ready!(this.answer.poll(cx));
        tracing::debug!(status = response.status().as_u16(), "http request answered");
        // Visible ASCII only (RequestId's rule), so this cannot fail.
        if let Ok(echo) = HeaderValue::from_str(this.id.as_str()) {
            response.headers_mut().insert(REQUEST_ID_HEADER, echo);
        }
        Poll::Ready(Ok(response))
    }
}

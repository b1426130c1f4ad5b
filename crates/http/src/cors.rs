//! CORS on the token, revocation, introspection and metadata URLs, never on
//! the consent form. An `Origin` is allowed when it is the origin of a
//! registered app's redirect URI (`Service::is_registered_origin`, cached
//! briefly) or one of the configured `VELOCITY_CORS_ORIGINS`. Allowed
//! origins are echoed exactly (never `*`), without credentials mode;
//! others get no CORS headers.
//!
//! The /v1 JSON routes answer CORS for the web app's origins alone
//! (`VELOCITY_WEB_ORIGINS`), in credentials mode, so its Settings pages may
//! send the session cookie from another origin of the same site; no app's
//! origin is allowed there.
//!
//! A hand-written tower layer rather than `middleware::from_fn`: that boxes
//! a clone of the route, the `Next` and the future on every request. Here a
//! request without an `Origin` (every server-to-server call) only has its
//! headers set once the route answers; only one with an `Origin`, which
//! may need storage to decide, is boxed.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tower::{Layer, Service};

use crate::{AppState, Shared, token};

const ALLOW_HEADERS: &str = "Authorization, Content-Type";
/// How long a browser may reuse a preflight answer, in seconds.
const MAX_AGE: &str = "600";

/// Whose origins a group of routes answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Origins {
    /// Registered apps' and the configured ones, without credentials.
    Apps,
    /// The web app's, with credentials.
    Web,
}

/// CORS for one group of routes; see the module's documentation.
#[derive(Clone)]
pub(crate) struct CorsLayer {
    state: Shared,
    methods: &'static str,
    origins: Origins,
    /// The token routes' answers are never to be stored (`token::no_store`):
    /// set here, so those routes pay for one layer, not two.
    uncacheable: bool,
}

impl CorsLayer {
    /// The POST routes that carry tokens (token, revoke, introspect).
    pub(crate) fn token_routes(state: Shared) -> Self {
        CorsLayer {
            state,
            methods: "POST, OPTIONS",
            origins: Origins::Apps,
            uncacheable: true,
        }
    }

    /// The metadata document.
    pub(crate) fn metadata(state: Shared) -> Self {
        CorsLayer {
            state,
            methods: "GET, OPTIONS",
            origins: Origins::Apps,
            uncacheable: false,
        }
    }

    /// The /v1 JSON routes: the web app's origins, with credentials.
    pub(crate) fn web_routes(state: Shared) -> Self {
        CorsLayer {
            state,
            methods: "GET, POST, PUT, PATCH, DELETE, OPTIONS",
            origins: Origins::Web,
            uncacheable: false,
        }
    }
}

impl<S> Layer<S> for CorsLayer {
    type Service = Cors<S>;

    fn layer(&self, inner: S) -> Cors<S> {
        Cors {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct Cors<S> {
    inner: S,
    layer: CorsLayer,
}

impl<S> Service<Request> for Cors<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = CorsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let Some(origin) = request.headers().get(header::ORIGIN).cloned() else {
            return CorsFuture::Plain {
                route: self.inner.call(request),
                uncacheable: self.layer.uncacheable,
            };
        };
        // The service made ready goes into the future; a clone stays
        // behind for the next call (tower's contract).
        let clone = self.inner.clone();
        let route = std::mem::replace(&mut self.inner, clone);
        CorsFuture::Origin {
            answer: Box::pin(with_origin(self.layer.clone(), origin, request, route)),
        }
    }
}

pin_project_lite::pin_project! {
    #[project = CorsFutureProj]
    pub(crate) enum CorsFuture<F> {
        /// No `Origin`: the route's answer, with `Vary` (and `no-store`).
        Plain { #[pin] route: F, uncacheable: bool },
        Origin { answer: Pin<Box<dyn Future<Output = Response> + Send>> },
    }
}

impl<F> Future for CorsFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            CorsFutureProj::Plain { route, uncacheable } => {
                let Ok(mut response) = std::task::ready!(route.poll(cx));
                let headers = response.headers_mut();
                if *uncacheable {
                    token::no_store(headers);
                }
                vary(headers);
                Poll::Ready(Ok(response))
            }
            CorsFutureProj::Origin { answer } => answer.as_mut().poll(cx).map(Ok),
        }
    }
}

async fn with_origin<S>(
    layer: CorsLayer,
    origin: HeaderValue,
    request: Request,
    mut route: S,
) -> Response
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    let allowed = match layer.origins {
        Origins::Apps => is_allowed(&layer.state, &origin).await,
        Origins::Web => origin
            .to_str()
            .is_ok_and(|o| layer.state.web_origins.iter().any(|w| w == o)),
    };
    let preflight = request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut response = if preflight {
        preflight_answer(layer.methods, allowed)
    } else {
        let Ok(mut response) = route.call(request).await;
        if layer.uncacheable {
            token::no_store(response.headers_mut());
        }
        response
    };
    let headers = response.headers_mut();
    vary(headers);
    if allowed {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        if layer.origins == Origins::Web {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
    }
    response
}

/// A preflight's answer, allowed or not: the route itself never sees one.
fn preflight_answer(methods: &'static str, allowed: bool) -> Response {
    let mut response = (StatusCode::NO_CONTENT, Body::empty()).into_response();
    if allowed {
        let headers = response.headers_mut();
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(methods),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(ALLOW_HEADERS),
        );
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static(MAX_AGE),
        );
    }
    response
}

/// Every answer depends on the `Origin`, present or not, for caches.
fn vary(headers: &mut HeaderMap) {
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
}

async fn is_allowed(state: &AppState, origin: &HeaderValue) -> bool {
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    if state.cors_origins.iter().any(|o| o == origin) {
        return true;
    }
    match state.service.is_registered_origin(origin).await {
        Ok(found) => found,
        Err(err) => {
            crate::error::log_if_internal(&err);
            false
        }
    }
}

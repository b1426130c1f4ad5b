//! The HTTP adapter: the public OAuth URLs (CONTRACT §6), translated to the
//! same use-cases the gRPC API calls; the HTTP/JSON face of the RPCs under
//! /v1 (`gateway`); and /openapi.json describing all of them (`openapi`).
//! Errors are mapped in `error` only.

mod authorization;
mod consent;
mod cors;
mod csrf;
mod discovery;
mod error;
pub mod gateway;
mod health;
mod listener;
mod metrics;
mod openapi;
mod page;
mod params;
mod peer;
mod rate_limit;
mod request_id;
mod routes;
mod token;
mod verify;
mod web_session;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::extract::Request;
use axum::extract::connect_info::Connected;
use axum::response::Response;
use axum::serve::{IncomingStream, Listener};
use axum::{Router, ServiceExt};
use tokio::sync::watch;
use tower::{Layer, Service as TowerService};
use velocity_domain::Service;
use velocity_domain::admin::AdminToken;
use velocity_domain::routes::RouteScopes;

pub use csrf::CsrfKey;
use error::HttpError;
pub use gateway::Gateway;
pub use listener::AcceptedListener;
pub use metrics::{Exposition, HttpStats, MethodStats, RouteStats, UNMATCHED_ROUTE, serve_metrics};
pub use peer::PeerSocket;
use routes::Group;
pub use web_session::{DEFAULT_RETURN_PARAM, SignIn, WebSession};

/// Every form and token request fits in far less.
const MAX_BODY_BYTES: usize = 16 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub service: Service,
    pub csrf: CsrfKey,
    pub admin: AdminToken,
    /// Origins allowed CORS besides those of registered redirect URIs
    /// (`VELOCITY_CORS_ORIGINS`), as browsers send them: `scheme://host[:port]`.
    pub cors_origins: Arc<Vec<String>>,
    /// Where a browser's session is read from; where a signed-out one goes.
    pub web: WebSession,
    /// `true` once start-up work is done; `/readyz` answers 503 until then.
    pub ready: watch::Receiver<bool>,
    /// Scopes per route, for forward-auth checks whose proxy does not say.
    pub route_scopes: Arc<RouteScopes>,
    /// The RPCs served as JSON under /v1, and how to call them.
    pub gateway: Arc<Gateway>,
    /// Origins of the web app (`VELOCITY_WEB_ORIGINS`) besides the
    /// service's own, from which a cookie-authenticated /v1 request may
    /// change state.
    pub web_origins: Arc<Vec<String>>,
    /// Latency and statuses per route are counted here when set.
    pub metrics: Option<Arc<HttpStats>>,
    /// When set, `/metrics` is served on this listener too.
    pub metrics_endpoint: Option<Arc<dyn Exposition>>,
}

/// The router's state: axum clones it for every extractor and middleware
/// of every request, so it is one reference count, not a copy of the
/// service and keys.
pub(crate) type Shared = Arc<AppState>;

fn router(state: AppState) -> Router {
    let document = routes::Document::default();
    let table = routes::table(document.clone(), state.metrics_endpoint.clone());
    let cookie = state
        .web
        .cookie
        .clone()
        .unwrap_or_else(|| web_session::LEGACY_COOKIE.to_owned());
    let spec = openapi::document(&table, &state.gateway, &cookie);
    // Built from the table it describes; set before the first request.
    let _ = document.set(axum::body::Bytes::from(spec.to_string()));
    let gateway = state.gateway.router();
    let metrics = state.metrics.clone();
    let state: Shared = Arc::new(state);
    let gateway = gateway.layer(cors::CorsLayer::web_routes(state.clone()));
    let mut by_path: Vec<(Group, &'static str, axum::routing::MethodRouter<Shared>)> = Vec::new();
    for route in table {
        match by_path
            .iter_mut()
            .find(|(g, p, _)| *p == route.path && *g == route.group)
        {
            Some((_, _, methods)) => *methods = methods.clone().merge(route.handler),
            None => by_path.push((route.group, route.path, route.handler)),
        }
    }
    // Every response of the routes that carry tokens is uncacheable; they
    // and the metadata document answer CORS (`cors`), the consent form not.
    // Their layer goes around each route's methods as it is routed, not on
    // the routes afterwards (`Router::layer`), which would box each again.
    let mut routes = Router::new();
    for (group, path, methods) in by_path {
        let layer = match group {
            Group::Plain => {
                routes = routes.route(path, methods);
                continue;
            }
            Group::Token => cors::CorsLayer::token_routes(state.clone()),
            Group::Metadata => cors::CorsLayer::metadata(state.clone()),
        };
        routes = routes.route_service(path, layer.layer(methods.with_state(state.clone())));
    }
    let mut routes = routes.merge(gateway).fallback(not_found);
    if let Some(stats) = metrics {
        // Inside the request-id span (`serve_http`), outside every route's
        // own layers: it labels by the matched route, so it is a route
        // layer. It wraps only what is routed above: every route is in the
        // table.
        routes = routes.layer(metrics::ObserveLayer(stats));
    }
    routes.with_state(state)
}

/// The router inside the layers that need no route: around it once,
/// rather than with `Router::layer`, which wraps every route apart and
/// then costs a boxed clone and a boxed future per layer on every request.
/// The order is unchanged: the request id outermost, so the framework's
/// own errors carry it too; then those errors (405, 413, rejections) in our
/// shape; then the body limit.
fn app(
    state: AppState,
) -> impl TowerService<Request, Response = Response, Error = Infallible, Future: Send>
+ Clone
+ Send
+ Sync
+ 'static {
    tower::ServiceBuilder::new()
        .layer(request_id::RequestIdLayer)
        .map_response(error::framework_errors)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .service(router(state))
}

async fn not_found() -> HttpError {
    HttpError::from(velocity_domain::Error::NotFound("route"))
}

/// Serves HTTP on the connections of `listener` (a `TcpListener`, or one
/// yielding TLS streams) until `shutdown` resolves.
pub async fn serve_http<L>(
    state: AppState,
    listener: L,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: Listener<Addr = SocketAddr>,
    PeerSocket: for<'a> Connected<IncomingStream<'a, L>>,
{
    // Connect info: the peer address the token endpoint throttles by.
    let app = app(state).into_make_service_with_connect_info::<PeerSocket>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

//! The HTTP adapter: the public OAuth URLs (CONTRACT §6), translated to the
//! same use-cases the gRPC API calls. Errors are mapped in `error` only.

mod authorization;
mod consent;
mod cors;
mod csrf;
mod discovery;
mod error;
mod health;
mod listener;
mod page;
mod params;
mod peer;
mod rate_limit;
mod request_id;
mod token;
mod verify;
mod web_session;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::extract::connect_info::Connected;
use axum::routing::{get, post};
use axum::serve::{IncomingStream, Listener};
use tokio::sync::watch;
use velocity_domain::Service;
use velocity_domain::admin::AdminToken;
use velocity_domain::routes::RouteScopes;

pub use csrf::CsrfKey;
use error::HttpError;
pub use listener::AcceptedListener;
pub use peer::PeerSocket;
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
}

/// The router's state: axum clones it for every extractor and middleware
/// of every request, so it is one reference count, not a copy of the
/// service and keys.
pub(crate) type Shared = Arc<AppState>;

fn router(state: AppState) -> Router {
    let state: Shared = Arc::new(state);
    // Every response of the routes that carry tokens is uncacheable; they
    // and the metadata document answer CORS (`cors`), the consent form not.
    let token_routes = Router::new()
        .route("/api/oauth/token", post(token::token))
        .route("/api/oauth/revoke", post(token::revoke))
        .route("/api/oauth/introspect", post(token::introspect))
        .layer(axum::middleware::map_response(token::no_store))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            cors::post_routes,
        ));
    let metadata_routes = Router::new()
        .route(
            "/.well-known/oauth-authorization-server",
            get(discovery::metadata),
        )
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            cors::get_routes,
        ));
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/oauth/consent", get(consent::show).post(consent::submit))
        .route("/api/auth/verify", get(verify::verify))
        .merge(token_routes)
        .merge(metadata_routes)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        // Errors the framework makes (405, 413, rejections) in our shape.
        .layer(axum::middleware::map_response(error::framework_errors))
        // Outermost, so the framework's own errors carry the id too.
        .layer(axum::middleware::from_fn(request_id::request_id))
        .with_state(state)
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
    let app = router(state).into_make_service_with_connect_info::<PeerSocket>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

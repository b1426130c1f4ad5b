//! The HTTP adapter: the public OAuth URLs (CONTRACT §6), translated to the
//! same use-cases the gRPC API calls. Errors are mapped in `error` only.

mod authorization;
mod consent;
mod cors;
mod csrf;
mod discovery;
mod error;
mod page;
mod params;
mod peer;
mod token;
mod web_session;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::routing::{get, post};
use tokio::net::TcpListener;
use velocity_domain::Service;
use velocity_domain::admin::AdminToken;

pub use csrf::CsrfKey;
use error::HttpError;
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
        .route("/healthz", get(healthz))
        .route("/oauth/consent", get(consent::show).post(consent::submit))
        .merge(token_routes)
        .merge(metadata_routes)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        // Errors the framework makes (405, 413, rejections) in our shape.
        .layer(axum::middleware::map_response(error::framework_errors))
        .with_state(state)
}

async fn healthz(State(state): State<Shared>) -> Result<&'static str, HttpError> {
    state
        .service
        .store()
        .ping()
        .await
        .map_err(velocity_domain::Error::from)?;
    Ok("ok")
}

async fn not_found() -> HttpError {
    HttpError::from(velocity_domain::Error::NotFound("route"))
}

pub async fn serve_http(
    state: AppState,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Connect info: the peer address the token endpoint throttles by.
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

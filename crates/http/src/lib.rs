//! The HTTP adapter: the public OAuth URLs (CONTRACT §6), translated to the
//! same use-cases the gRPC API calls. Errors are mapped in `error` only.

mod authorization;
mod consent;
mod csrf;
mod error;
mod page;
mod params;
mod peer;
mod token;
mod web_session;

use std::future::Future;
use std::net::SocketAddr;

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
    /// Where a browser's session is read from; where a signed-out one goes.
    pub web: WebSession,
}

fn router(state: AppState) -> Router {
    // Every response of the routes that carry tokens is uncacheable.
    let token_routes = Router::new()
        .route("/api/oauth/token", post(token::token))
        .route("/api/oauth/revoke", post(token::revoke))
        .route("/api/oauth/introspect", post(token::introspect))
        .layer(axum::middleware::map_response(token::no_store));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/oauth/consent", get(consent::show).post(consent::submit))
        .merge(token_routes)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

async fn healthz(State(state): State<AppState>) -> Result<&'static str, HttpError> {
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

//! The HTTP adapter: the public OAuth URLs, translated to the same
//! use-cases the gRPC API calls.

mod error;

use std::future::Future;

use axum::Router;
use axum::routing::get;
use tokio::net::TcpListener;
use velocity_domain::Service;

pub use error::HttpError;

#[derive(Clone)]
pub struct AppState {
    pub service: Service,
}

pub fn router(service: Service) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .fallback(not_found)
        .with_state(AppState { service })
}

async fn healthz(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> Result<&'static str, HttpError> {
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
    service: Service,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(service))
        .with_graceful_shutdown(shutdown)
        .await
}

//! Probes for orchestrators. `/healthz` is liveness: the process answers
//! HTTP, nothing more, so a slow or down database never gets a healthy
//! replica restarted. `/readyz` is readiness: start-up work is done (the
//! known-credential filter is loaded) and storage answers a ping; a load
//! balancer sends traffic only while it is 200.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use velocity_domain::{ErrorClass, Reason};

use crate::Shared;
use crate::error::{HttpError, status_of};

pub(crate) async fn healthz() -> &'static str {
    "ok"
}

pub(crate) async fn readyz(State(state): State<Shared>) -> Result<&'static str, Response> {
    if !*state.ready.borrow() {
        return Err(starting());
    }
    state
        .service
        .store()
        .ping()
        .await
        .map_err(|err| HttpError::from(velocity_domain::Error::from(err)).into_response())?;
    Ok("ok")
}

/// 503 in the house shape while start-up work runs. The reason is the one
/// every 503 of this service carries (retry later); the description says
/// why, as no `FailureReason` names a start in progress.
fn starting() -> Response {
    let class = ErrorClass::Unavailable;
    let body = serde_json::json!({
        "error": class.error_code(),
        "error_description": "starting: the known-credential filter is loading; retry",
        "reason": Reason::StorageUnavailable.as_str(),
    });
    let mut response = (status_of(class), Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

//! The HTTP/JSON face of the RPCs, grpc-gateway style: the routes come from
//! the `google.api.http` options in the descriptor set (`rules`), a JSON
//! request becomes the protobuf request (`transcode`), and the RPC is
//! called in-process through [`UnaryCall`], so the gRPC services' own
//! authorization runs unchanged and nothing is decided twice. The caller is
//! the same as over gRPC: `Authorization` passes through as the
//! `authorization` metadata; without it, the web app's session cookie
//! stands in as `Bearer <session token>`, for state-changing requests only
//! from an allowed `Origin` (`csrf_origin`). Failures come back as gRPC
//! statuses and leave through the domain's one table (`error`).

mod rules;
mod transcode;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter};
use prost_reflect::DescriptorPool;
use velocity_domain::{Error, Reason};

pub use rules::{Binding, PREFIX};

use crate::error::{HttpError, rpc_failure};
use crate::{AppState, Shared};

/// A refusal as an RPC returned it: the gRPC code and message, and from
/// `google.rpc.ErrorInfo` the reason and the table's `error` string
/// (metadata `error`), and from `google.rpc.RetryInfo` the wait.
#[derive(Clone, Debug, Default)]
pub struct RpcFailure {
    pub code: i32,
    pub message: String,
    pub reason: Option<String>,
    pub error: Option<String>,
    pub retry_after_secs: Option<u64>,
}

pub type CallFuture = Pin<Box<dyn Future<Output = Result<Bytes, RpcFailure>> + Send>>;

/// Calls a unary RPC by its gRPC path (`/velocity.auth.v1.AuthService/
/// CreateKey`) with an encoded request and the `authorization` metadata.
/// The binary supplies it over the tonic services, so this crate knows
/// nothing of tonic.
pub trait UnaryCall: Send + Sync + 'static {
    fn call(&self, path: String, authorization: Option<HeaderValue>, message: Bytes) -> CallFuture;
}

/// Why the gateway cannot be set up: a build or annotation bug.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("the descriptor set does not load: {0}")]
    Descriptors(String),
    #[error("google.api.http on {rpc}: {problem}")]
    Rule { rpc: String, problem: String },
}

/// The route table and the way to call the RPCs behind it.
#[derive(Clone)]
pub struct Gateway {
    pool: DescriptorPool,
    bindings: Vec<Arc<Binding>>,
    caller: Arc<dyn UnaryCall>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("routes", &self.bindings.len())
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// Reads the HTTP rules of every service in `descriptor_set` (an
    /// encoded `FileDescriptorSet` with extension options kept).
    pub fn new(descriptor_set: &[u8], caller: Arc<dyn UnaryCall>) -> Result<Gateway, SetupError> {
        let pool = DescriptorPool::decode(descriptor_set)
            .map_err(|e| SetupError::Descriptors(e.to_string()))?;
        let bindings = rules::bindings(&pool)?.into_iter().map(Arc::new).collect();
        Ok(Gateway {
            pool,
            bindings,
            caller,
        })
    }

    pub fn bindings(&self) -> impl Iterator<Item = &Binding> {
        self.bindings.iter().map(|b| b.as_ref())
    }

    pub fn pool(&self) -> &DescriptorPool {
        &self.pool
    }

    /// One axum route per annotated path, its methods merged.
    pub(crate) fn router(&self) -> Router<Shared> {
        let mut by_path: BTreeMap<&str, MethodRouter<Shared>> = BTreeMap::new();
        for binding in &self.bindings {
            let Ok(filter) = MethodFilter::try_from(binding.method.clone()) else {
                continue;
            };
            let handler = {
                let binding = binding.clone();
                move |state: State<Shared>,
                      path: Path<Vec<(String, String)>>,
                      query: RawQuery,
                      headers: HeaderMap,
                      body: Bytes| {
                    serve(binding.clone(), state, path, query, headers, body)
                }
            };
            let entry = by_path.remove(binding.path.as_str()).unwrap_or_default();
            by_path.insert(binding.path.as_str(), entry.on(filter, handler));
        }
        by_path
            .into_iter()
            .fold(Router::new(), |router, (path, methods)| {
                router.route(path, methods)
            })
    }
}

async fn serve(
    binding: Arc<Binding>,
    State(state): State<Shared>,
    Path(path): Path<Vec<(String, String)>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match call(&state, &binding, &path, query.as_deref(), &headers, &body).await {
        Ok(Ok(json)) => {
            let mut response = (StatusCode::OK, json).into_response();
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            // Some answers carry a secret shown once (CreateKey,
            // RegisterApp, RotateAppSecret); none is worth caching.
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Ok(Err(failure)) => rpc_failure(failure),
        Err(err) => HttpError(err).into_response(),
    }
}

/// `Err` for what the gateway refuses itself; `Ok(Err)` for what the RPC
/// refused.
async fn call(
    state: &AppState,
    binding: &Binding,
    path: &[(String, String)],
    query: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Result<Bytes, RpcFailure>, Error> {
    if binding.body && !body.iter().all(u8::is_ascii_whitespace) && !is_json(headers) {
        return Err(Error::invalid("send the body as application/json"));
    }
    let authorization = credential(state, &binding.method, headers)?;
    let request = transcode::request(binding, path, query, body)?;
    let answer = state
        .gateway
        .caller
        .call(binding.grpc_path(), authorization, Bytes::from(request))
        .await;
    Ok(match answer {
        Ok(bytes) => Ok(Bytes::from(transcode::response(&binding.output(), &bytes)?)),
        Err(failure) => Err(failure),
    })
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}

/// The `authorization` metadata of the call: the request's own header as
/// sent (the RPC parses it, as over gRPC), else the session cookie's token.
fn credential(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Option<HeaderValue>, Error> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        return Ok(Some(value.clone()));
    }
    let Some(token) = state.web.token(headers) else {
        return Ok(None);
    };
    if !matches!(*method, Method::GET | Method::HEAD) {
        csrf_origin(state, headers)?;
    }
    HeaderValue::try_from(format!("Bearer {token}"))
        .map(Some)
        .map_err(|_| Error::Unauthenticated(Reason::SessionInvalid))
}

/// A browser attaches the cookie to any site's request, so a state-changing
/// request that the cookie authenticates must come from the service's own
/// origin or one of `VELOCITY_WEB_ORIGINS`. Browsers send `Origin` on every
/// such request and pages cannot forge it.
fn csrf_origin(state: &AppState, headers: &HeaderMap) -> Result<(), Error> {
    let origin = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .ok_or(Error::PermissionDenied(Reason::OriginNotAllowed))?;
    let own = url::Url::parse(state.service.issuer())
        .ok()
        .map(|u| u.origin().ascii_serialization());
    if own.as_deref() == Some(origin) || state.web_origins.iter().any(|o| o == origin) {
        Ok(())
    } else {
        Err(Error::PermissionDenied(Reason::OriginNotAllowed))
    }
}

//! Envoy / Istio external authorization
//! (`envoy.service.auth.v3.Authorization/Check`) on the gRPC port: the
//! request Envoy is about to route is authenticated like any other call,
//! and the answer tells Envoy what to add, remove or refuse.
//!
//! - The credential is the request's `authorization` header, the workspace
//!   its `x-workspace-slug`; the scopes a route needs come from the route's
//!   `context_extensions` (`required_scopes: "issues:write,projects:read"`).
//! - Allowed: `x-velocity-*` headers for the upstream, the credential
//!   header removed (unless configured to keep it), and the principal as
//!   `dynamic_metadata` for Envoy's other filters and access logs.
//! - Denied: 401 (with `WWW-Authenticate`) or 403, with the same JSON body
//!   as every HTTP error.
//! - A storage outage is a gRPC UNAVAILABLE, so Envoy's
//!   `failure_mode_allow` decides, as its operators configured it.
//! - Budgets (docs/limits.md): an allowed request spends its credential's,
//!   one without a valid credential its client address's (Envoy's
//!   `source` peer). `x-ratelimit-*` go on the client's response, allowed
//!   (`response_headers_to_add`) or denied; over the budget the denial is
//!   429 with `retry-after`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use envoy_types::ext_authz::v3::pb::{
    Authorization, CheckRequest, CheckResponse, HeaderAppendAction, HttpStatusCode,
};
use envoy_types::ext_authz::v3::{
    CheckRequestExt, CheckResponseExt, DeniedHttpResponseBuilder, OkHttpResponseBuilder,
};
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use tonic::{Request, Response, Status};
use velocity_domain::authorization::Authorization as AuthorizationHeader;
use velocity_domain::principal::{UPSTREAM_FIELDS, upstream_header};
use velocity_domain::rate_limit::Budget;
use velocity_domain::routes::RouteScopes;
use velocity_domain::{Error, ErrorClass, Principal, Reason, Service};

use crate::status::to_status;

/// The `context_extensions` key holding a route's required scopes.
pub const REQUIRED_SCOPES_KEY: &str = "required_scopes";

/// The namespace of the principal in `dynamic_metadata`.
const METADATA_KEY: &str = "velocity";

pub struct ExtAuthzApi {
    service: Service,
    /// Pass the `authorization` header upstream instead of removing it.
    keep_credential: bool,
    /// For routes whose context_extensions name no scopes.
    routes: Arc<RouteScopes>,
}

impl ExtAuthzApi {
    pub fn new(service: Service, keep_credential: bool, routes: Arc<RouteScopes>) -> Self {
        ExtAuthzApi {
            service,
            keep_credential,
            routes,
        }
    }
}

#[tonic::async_trait]
impl Authorization for ExtAuthzApi {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let request = request.into_inner();
        let empty = HashMap::new();
        let headers = request.get_client_headers().unwrap_or(&empty);
        let attributes = request.attributes.as_ref();
        let extensions = attributes.map_or(&empty, |a| &a.context_extensions);
        let http = attributes
            .and_then(|a| a.request.as_ref())
            .and_then(|r| r.http.as_ref());
        let route = http.map_or(("", ""), |h| (h.method.as_str(), h.path.as_str()));
        let outcome = match required_scopes(extensions, &self.routes, route) {
            Ok(scopes) => self.authenticate(headers, &scopes).await,
            Err(err) => Err(err),
        };
        match outcome {
            Ok((principal, budget)) => Ok(Response::new(self.allowed(&principal, budget))),
            // An outage (or a bug) is not an answer about the caller:
            // Envoy's failure_mode_allow decides, as its operator chose.
            Err(err) if matches!(err.class(), ErrorClass::Unavailable | ErrorClass::Internal) => {
                Err(to_status(err))
            }
            Err(err) if err.class() == ErrorClass::Unauthenticated => {
                let address = request
                    .get_client_address()
                    .and_then(|a| a.parse::<IpAddr>().ok());
                Ok(Response::new(
                    match self.service.count_anonymous(address).await {
                        Ok(budget) => denied(&err, budget),
                        Err(over) => denied(&over, None),
                    },
                ))
            }
            Err(err) => Ok(Response::new(denied(&err, None))),
        }
    }
}

impl ExtAuthzApi {
    async fn authenticate(
        &self,
        headers: &HashMap<String, String>,
        scopes: &[String],
    ) -> Result<(Principal, Option<Budget>), Error> {
        let credential = match headers.get("authorization") {
            Some(value) => AuthorizationHeader::bearer_or_bare(value)?,
            None => "",
        };
        let slug = headers
            .get("x-workspace-slug")
            .map(|s| s.trim())
            .filter(|s| !s.is_empty());
        self.service
            .authenticate_counted(credential, slug, scopes)
            .await
    }

    fn allowed(&self, principal: &Principal, budget: Option<Budget>) -> CheckResponse {
        let fields = principal.upstream_fields();
        let mut upstream = OkHttpResponseBuilder::new();
        if let Some(budget) = budget {
            for (name, value) in budget_headers(&budget) {
                upstream.add_response_header(
                    name,
                    value,
                    Some(HeaderAppendAction::OverwriteIfExistsOrAdd),
                    false,
                );
            }
        }
        for (name, value) in &fields {
            // Overwrite: a caller must not smuggle in headers of its own.
            upstream.add_header(
                upstream_header(name),
                value.clone(),
                Some(HeaderAppendAction::OverwriteIfExistsOrAdd),
                false,
            );
        }
        for name in UPSTREAM_FIELDS {
            if !fields.iter().any(|(present, _)| *present == name) {
                upstream.remove_header(upstream_header(name));
            }
        }
        if !self.keep_credential {
            upstream.remove_header("authorization");
        }
        let metadata = Struct {
            fields: HashMap::from([(
                METADATA_KEY.to_owned(),
                Value {
                    kind: Some(Kind::StructValue(Struct {
                        fields: fields
                            .into_iter()
                            .map(|(name, value)| {
                                (
                                    name.to_owned(),
                                    Value {
                                        kind: Some(Kind::StringValue(value)),
                                    },
                                )
                            })
                            .collect(),
                    })),
                },
            )]),
        };
        let mut response = CheckResponse::with_status(Status::ok("allowed"));
        response
            .set_http_response(upstream)
            .set_dynamic_metadata(Some(metadata));
        response
    }
}

/// The route's own `required_scopes`, else the route table's entry for
/// the request's method and path.
fn required_scopes(
    extensions: &HashMap<String, String>,
    routes: &RouteScopes,
    (method, path): (&str, &str),
) -> Result<Vec<String>, Error> {
    let Some(value) = extensions.get(REQUIRED_SCOPES_KEY) else {
        return Ok(routes.scopes_for(method, path).to_vec());
    };
    if value.len() > 1024 {
        return Err(Error::invalid("required_scopes is too long"));
    }
    Ok(value
        .split([',', ' '])
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect())
}

/// `x-ratelimit-*` (as forward-auth sends them).
fn budget_headers(budget: &Budget) -> [(&'static str, String); 3] {
    [
        ("x-ratelimit-limit", budget.limit.to_string()),
        ("x-ratelimit-remaining", budget.remaining.to_string()),
        ("x-ratelimit-reset", budget.reset_secs.to_string()),
    ]
}

/// A refusal Envoy sends to the client as is: the table's HTTP status, a
/// challenge on 401 (and on a missing scope), the JSON body; the budget
/// when one was counted, `retry-after` when over it.
fn denied(err: &Error, budget: Option<Budget>) -> CheckResponse {
    let class = err.class();
    let status = match class.http_status() {
        401 => HttpStatusCode::Unauthorized,
        403 => HttpStatusCode::Forbidden,
        429 => HttpStatusCode::TooManyRequests,
        404 => HttpStatusCode::NotFound,
        _ => HttpStatusCode::BadRequest,
    };
    let mut http = DeniedHttpResponseBuilder::new();
    http.set_http_status(status)
        .add_header("content-type", "application/json", None, false)
        .add_header("cache-control", "no-store", None, false)
        .set_body(err.json_body().to_string());
    if let Some(secs) = err.retry_after_secs() {
        http.add_header("retry-after", secs.to_string(), None, false);
    }
    let budget = match err {
        Error::RateLimited(refused) => Some(refused.budget()),
        _ => budget,
    };
    for (name, value) in budget.as_ref().map(budget_headers).into_iter().flatten() {
        http.add_header(name, value, None, false);
    }
    if status == HttpStatusCode::Unauthorized {
        http.add_header("www-authenticate", "Bearer", None, false);
    } else if err.reason() == Reason::ScopeMissing {
        http.add_header(
            "www-authenticate",
            "Bearer error=\"insufficient_scope\"",
            None,
            false,
        );
    }
    let code = match status {
        HttpStatusCode::Unauthorized => tonic::Code::Unauthenticated,
        HttpStatusCode::Forbidden => tonic::Code::PermissionDenied,
        HttpStatusCode::TooManyRequests => tonic::Code::ResourceExhausted,
        _ => tonic::Code::InvalidArgument,
    };
    let mut response = CheckResponse::with_status(Status::new(code, err.reason().as_str()));
    response.set_http_response(http);
    response
}

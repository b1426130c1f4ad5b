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

use std::collections::HashMap;
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
            Ok(principal) => Ok(Response::new(self.allowed(&principal))),
            // An outage (or a bug) is not an answer about the caller:
            // Envoy's failure_mode_allow decides, as its operator chose.
            Err(err) if matches!(err.class(), ErrorClass::Unavailable | ErrorClass::Internal) => {
                Err(to_status(err))
            }
            Err(err) => Ok(Response::new(denied(&err))),
        }
    }
}

impl ExtAuthzApi {
    async fn authenticate(
        &self,
        headers: &HashMap<String, String>,
        scopes: &[String],
    ) -> Result<Principal, Error> {
        let credential = match headers.get("authorization") {
            Some(value) => AuthorizationHeader::bearer_or_bare(value)?,
            None => "",
        };
        let slug = headers
            .get("x-workspace-slug")
            .map(|s| s.trim())
            .filter(|s| !s.is_empty());
        self.service.authenticate(credential, slug, scopes).await
    }

    fn allowed(&self, principal: &Principal) -> CheckResponse {
        let fields = principal.upstream_fields();
        let mut upstream = OkHttpResponseBuilder::new();
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

/// A refusal Envoy sends to the client as is: the table's HTTP status, a
/// challenge on 401 (and on a missing scope), the JSON body.
fn denied(err: &Error) -> CheckResponse {
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

//! Envoy external authorization end to end: an independent client built
//! from Envoy's own protos (the envoy-types crate) calls
//! `envoy.service.auth.v3.Authorization/Check` on the gRPC port, as Envoy's
//! ext_authz filter would: allowed with headers for the upstream and the
//! credential removed, each refusal with its HTTP status and JSON body,
//! scopes from the route's context_extensions, and a storage outage as
//! UNAVAILABLE for Envoy's failure_mode_allow to decide.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;

use common::{Backend, Harness};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{
    AttributeContext, CheckRequest, CheckResponse, DeniedHttpResponse, OkHttpResponse,
};
use envoy_types::pb::google::protobuf::value::Kind;

/// What Envoy sends for a request with these headers on a route whose
/// context_extensions carry `required_scopes`.
fn check_request(headers: &[(&str, &str)], required_scopes: Option<&str>) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    method: "GET".into(),
                    path: "/api/issues/42".into(),
                    headers: headers
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            context_extensions: required_scopes
                .map(|s| HashMap::from([("required_scopes".to_owned(), s.to_owned())]))
                .unwrap_or_default(),
            ..Default::default()
        }),
    }
}

async fn check(
    h: &Harness,
    headers: &[(&str, &str)],
    required_scopes: Option<&str>,
) -> Result<CheckResponse, tonic::Status> {
    AuthorizationClient::new(h.channel.clone())
        .check(check_request(headers, required_scopes))
        .await
        .map(|r| r.into_inner())
}

fn ok_response(response: &CheckResponse) -> &OkHttpResponse {
    assert_eq!(response.status.as_ref().unwrap().code, 0, "{response:?}");
    match &response.http_response {
        Some(HttpResponse::OkResponse(ok)) => ok,
        other => panic!("not an OK response: {other:?}"),
    }
}

fn denied_response(response: &CheckResponse) -> (u16, HashMap<String, String>, serde_json::Value) {
    assert_ne!(response.status.as_ref().unwrap().code, 0, "{response:?}");
    let denied: &DeniedHttpResponse = match &response.http_response {
        Some(HttpResponse::DeniedResponse(denied)) => denied,
        other => panic!("not a denied response: {other:?}"),
    };
    let headers = denied
        .headers
        .iter()
        .map(|h| {
            let h = h.header.as_ref().unwrap();
            (h.key.clone(), h.value.clone())
        })
        .collect();
    let status = u16::try_from(denied.status.as_ref().unwrap().code).unwrap();
    (status, headers, serde_json::from_str(&denied.body).unwrap())
}

fn added_headers(ok: &OkHttpResponse) -> HashMap<String, String> {
    ok.headers
        .iter()
        .map(|h| {
            let h = h.header.as_ref().unwrap();
            (h.key.clone(), h.value.clone())
        })
        .collect()
}

async fn envoy_checks_allow_and_deny(backend: Backend) {
    let h = Harness::start(backend).await;
    let (owner, key_id, key) = h.owner_and_workspace_key("acme", &["issues:read"]).await;
    let bearer = format!("Bearer {key}");

    // Allowed: headers for the upstream, the credential removed, and a
    // header the caller forged for a field this principal lacks removed too.
    let response = check(
        &h,
        &[("authorization", &bearer), ("x-velocity-user-id", "forged")],
        Some("issues:read"),
    )
    .await
    .unwrap();
    let ok = ok_response(&response);
    let headers = added_headers(ok);
    assert_eq!(headers["x-velocity-workspace-slug"], "acme");
    assert_eq!(headers["x-velocity-credential-id"], key_id);
    assert_eq!(headers["x-velocity-credential-kind"], "workspace_key");
    assert_eq!(headers["x-velocity-scopes"], "issues:read");
    assert!(!headers.contains_key("x-velocity-user-id"));
    assert!(ok.headers_to_remove.contains(&"authorization".to_owned()));
    assert!(
        ok.headers_to_remove
            .contains(&"x-velocity-user-id".to_owned())
    );
    // The principal for Envoy's other filters and access logs.
    let metadata = response.dynamic_metadata.as_ref().unwrap();
    let Some(Kind::StructValue(velocity)) = &metadata.fields["velocity"].kind else {
        panic!("no velocity metadata: {metadata:?}");
    };
    assert_eq!(
        velocity.fields["workspace_slug"].kind,
        Some(Kind::StringValue("acme".into()))
    );

    // A session with the workspace header: the user and the role's scopes.
    let session = format!("Bearer {}", h.session(&owner));
    let response = check(
        &h,
        &[("authorization", &session), ("x-workspace-slug", "acme")],
        Some("issues:write"),
    )
    .await
    .unwrap();
    let headers = added_headers(ok_response(&response));
    assert_eq!(headers["x-velocity-user-id"], owner);
    assert_eq!(headers["x-velocity-credential-kind"], "session");

    // Denied: the HTTP status, the challenge, the JSON body of every route.
    let response = check(&h, &[], None).await.unwrap();
    let (status, headers, body) = denied_response(&response);
    assert_eq!(status, 401);
    assert_eq!(headers["www-authenticate"], "Bearer");
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(body["reason"], "CREDENTIAL_MISSING");
    assert_eq!(body["error"], "unauthenticated");
    assert_eq!(
        response.status.as_ref().unwrap().code,
        16,
        "UNAUTHENTICATED"
    );

    let response = check(&h, &[("authorization", &bearer)], Some("issues:write"))
        .await
        .unwrap();
    let (status, headers, body) = denied_response(&response);
    assert_eq!(status, 403);
    assert_eq!(
        headers["www-authenticate"],
        "Bearer error=\"insufficient_scope\""
    );
    assert_eq!(body["reason"], "SCOPE_MISSING");
    assert_eq!(
        response.status.as_ref().unwrap().code,
        7,
        "PERMISSION_DENIED"
    );

    let response = check(
        &h,
        &[("authorization", &bearer), ("x-workspace-slug", "globex")],
        None,
    )
    .await
    .unwrap();
    let (status, _, body) = denied_response(&response);
    assert_eq!(
        (status, body["reason"].as_str()),
        (403, Some("WORKSPACE_MISMATCH"))
    );

    let response = check(&h, &[("authorization", "Bearer vel_forged")], None)
        .await
        .unwrap();
    let (status, _, _) = denied_response(&response);
    assert_eq!(status, 401);

    let response = check(&h, &[("authorization", &bearer)], Some("issues:fly"))
        .await
        .unwrap();
    let (status, _, body) = denied_response(&response);
    assert_eq!(
        (status, body["reason"].as_str()),
        (400, Some("SCOPE_UNKNOWN"))
    );
    h.stop().await;
}

/// A route without `required_scopes` gets the route table's: here
/// issues:write to POST under /api/issues.
#[tokio::test]
async fn the_route_table_decides_when_the_route_does_not_say() {
    let path = std::env::temp_dir().join(format!("velocity-routes-{}.json", uuid::Uuid::now_v7()));
    std::fs::write(
        &path,
        r#"[{"method": "GET", "path": "/api/issues", "scopes": ["issues:write"]}]"#,
    )
    .unwrap();
    let h = Harness::start_with(Backend::Sqlite, |c| c.route_scopes = Some(path.clone())).await;
    std::fs::remove_file(&path).unwrap();
    let (_, _, key) = h.owner_and_workspace_key("acme", &["issues:read"]).await;
    let bearer = format!("Bearer {key}");
    // check_request sends GET /api/issues/42.
    let response = check(&h, &[("authorization", &bearer)], None)
        .await
        .unwrap();
    let (status, _, body) = denied_response(&response);
    assert_eq!(
        (status, body["reason"].as_str()),
        (403, Some("SCOPE_MISSING"))
    );
    // The route's own context_extensions win over the table.
    let response = check(&h, &[("authorization", &bearer)], Some("issues:read"))
        .await
        .unwrap();
    ok_response(&response);
    h.stop().await;
}

/// Configured to keep it, the credential header goes upstream.
#[tokio::test]
async fn the_credential_can_be_kept() {
    let h = Harness::start_with(Backend::Sqlite, |c| c.ext_authz_keep_credential = true).await;
    let (_, _, key) = h.owner_and_workspace_key("acme", &["issues:read"]).await;
    let response = check(&h, &[("authorization", &format!("Bearer {key}"))], None)
        .await
        .unwrap();
    assert!(
        !ok_response(&response)
            .headers_to_remove
            .contains(&"authorization".to_owned())
    );
    h.stop().await;
}

/// Storage down and nothing cached: UNAVAILABLE, so Envoy's
/// failure_mode_allow decides, never a made-up allow or deny.
#[tokio::test]
async fn postgres_outage_is_unavailable_for_envoy() {
    let (h, cold) = common::postgres_with_cold_key().await;
    let outage = common::PostgresOutage::begin(&h).await;
    let bearer = format!("Bearer {cold}");
    let mut outcome = None;
    for _ in 0..5 {
        outcome = Some(check(&h, &[("authorization", &bearer)], None).await);
        if outcome.as_ref().is_some_and(Result::is_err) {
            break;
        }
    }
    let status = outcome.unwrap().unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    outage.end().await;
    h.stop().await;
}

fn response_headers(ok: &OkHttpResponse) -> HashMap<String, String> {
    ok.response_headers_to_add
        .iter()
        .map(|h| {
            let h = h.header.as_ref().unwrap();
            (h.key.clone(), h.value.clone())
        })
        .collect()
}

/// `check_request` from a client at `address` (Envoy's source peer).
fn from_address(mut request: CheckRequest, address: &str) -> CheckRequest {
    use envoy_types::pb::envoy::config::core::v3::{SocketAddress, address};
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::Peer;
    request.attributes.as_mut().unwrap().source = Some(Peer {
        address: Some(envoy_types::pb::envoy::config::core::v3::Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: address.into(),
                ..Default::default()
            })),
        }),
        ..Default::default()
    });
    request
}

/// Budgets: allowed requests carry the credential's for the client's
/// response; over it, a 429 with retry-after and the same JSON body as the
/// HTTP API; calls without a credential spend their address's.
async fn envoy_passes_on_rate_limits(backend: Backend) {
    let h = Harness::start_with(backend, |c| {
        c.rate_limits.rate_limit_per_credential = 2;
        c.rate_limits.rate_limit_per_address = 1;
    })
    .await;
    let (_, _, key) = h.owner_and_workspace_key("acme", &["issues:read"]).await;
    let bearer = format!("Bearer {key}");
    for remaining in ["1", "0"] {
        let response = check(&h, &[("authorization", &bearer)], Some("issues:read"))
            .await
            .unwrap();
        let added = response_headers(ok_response(&response));
        assert_eq!(added["x-ratelimit-limit"], "2");
        assert_eq!(added["x-ratelimit-remaining"], remaining);
        assert!(!added_headers(ok_response(&response)).contains_key("x-ratelimit-limit"));
    }
    let response = check(&h, &[("authorization", &bearer)], Some("issues:read"))
        .await
        .unwrap();
    assert_eq!(
        response.status.as_ref().unwrap().code,
        tonic::Code::ResourceExhausted as i32
    );
    let (status, headers, body) = denied_response(&response);
    assert_eq!(status, 429);
    assert_eq!(body["reason"], "RATE_LIMITED");
    assert_eq!(body["error"], "rate_limited");
    assert_eq!(headers["retry-after"], "30");
    assert_eq!(headers["x-ratelimit-limit"], "2");
    assert_eq!(headers["x-ratelimit-remaining"], "0");
    assert_eq!(headers["content-type"], "application/json");
    // Retry-After honoured.
    h.clock.advance_secs(30);
    ok_response(
        &check(&h, &[("authorization", &bearer)], Some("issues:read"))
            .await
            .unwrap(),
    );

    // No credential: one 401 from this address, then 429; another address
    // is untouched.
    let anonymous = async |address: &str| {
        AuthorizationClient::new(h.channel.clone())
            .check(from_address(check_request(&[], None), address))
            .await
            .unwrap()
            .into_inner()
    };
    let (status, headers, _) = denied_response(&anonymous("192.0.2.7").await);
    assert_eq!(status, 401);
    assert_eq!(headers["x-ratelimit-remaining"], "0");
    let (status, headers, body) = denied_response(&anonymous("192.0.2.7").await);
    assert_eq!(status, 429);
    assert_eq!(body["reason"], "RATE_LIMITED");
    assert_eq!(headers["retry-after"], "60");
    let (status, _, _) = denied_response(&anonymous("192.0.2.8").await);
    assert_eq!(status, 401);
    h.stop().await;
}

for_each_backend!(envoy_checks_allow_and_deny, envoy_passes_on_rate_limits);

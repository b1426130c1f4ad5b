//! Forward-auth end to end: `GET /api/auth/verify` called directly, and a
//! real nginx (`auth_request`) in front of a small upstream, as a platform
//! team would deploy it: allowed calls reach the upstream with the
//! principal in `X-Velocity-*` headers and without the credential; refused
//! ones never reach it; a storage outage fails closed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::HeaderMap;
use common::oauth::http;
use common::{Backend, Harness};
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use velocity_proto::pb;

/// Requests the upstream saw: their path and headers.
type Seen = Arc<Mutex<Vec<(String, HeaderMap)>>>;

/// An upstream that records what reached it and answers 200 "upstream".
async fn upstream() -> (String, Seen) {
    let seen: Seen = Arc::default();
    let record = seen.clone();
    let app = Router::new().fallback(move |uri: axum::http::Uri, headers: HeaderMap| {
        let record = record.clone();
        async move {
            record
                .lock()
                .unwrap()
                .push((uri.path().to_owned(), headers));
            "upstream"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("127.0.0.1:{}", addr.port()), seen)
}

/// nginx in the foreground on a free port, with its own prefix directory;
/// stopped (and its directory removed) on drop, even when a test fails.
struct Nginx {
    child: Child,
    dir: PathBuf,
    url: String,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn nginx_binary() -> PathBuf {
    let path =
        std::env::var_os("NGINX").map_or_else(|| PathBuf::from("/usr/sbin/nginx"), PathBuf::from);
    assert!(
        path.exists(),
        "{} is missing: run .ci/run, or `apt-get install nginx` (Debian's has auth_request)",
        path.display()
    );
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// auth_request takes any answer but 2xx, 401 and 403 for a failure of the
/// check (500): this turns the check's 429 back into a 429 for the client,
/// with its Retry-After and budget (as docs/forward-auth.md has it).
const RATE_LIMITED_LOCATION: &str = r#"location @velocity_auth_failed {
                    default_type application/json;
                    if ($velocity_auth_status = 429) {
                        add_header Retry-After $velocity_retry_after always;
                        add_header X-RateLimit-Limit $velocity_limit always;
                        add_header X-RateLimit-Remaining 0 always;
                        add_header X-RateLimit-Reset $velocity_reset always;
                        return 429 '{"error":"rate_limited","error_description":"too many requests; retry later","reason":"RATE_LIMITED"}';
                    }
                    return 500;
                }"#;

/// The configuration a deployment would write: one internal location per
/// set of required scopes, the principal copied from the check's answer,
/// the credential not passed upstream, the challenge relayed on refusals.
fn nginx_config(dir: &Path, port: u16, auth: &str, upstream: &str) -> String {
    let d = dir.display();
    let check = |name: &str, query: &str| {
        format!(
            "location = /_auth/{name} {{
                internal;
                proxy_pass http://{auth}/api/auth/verify{query};
                proxy_pass_request_body off;
                proxy_set_header Content-Length \"\";
                proxy_set_header X-Original-URI $request_uri;
                proxy_set_header X-Forwarded-Method $request_method;
                proxy_set_header X-Real-IP $remote_addr;
            }}"
        )
    };
    let protected = |path: &str, name: &str| {
        format!(
            "location {path} {{
                auth_request /_auth/{name};
                auth_request_set $velocity_user $upstream_http_x_velocity_user_id;
                auth_request_set $velocity_workspace $upstream_http_x_velocity_workspace_id;
                auth_request_set $velocity_slug $upstream_http_x_velocity_workspace_slug;
                auth_request_set $velocity_scopes $upstream_http_x_velocity_scopes;
                auth_request_set $velocity_kind $upstream_http_x_velocity_credential_kind;
                auth_request_set $velocity_credential $upstream_http_x_velocity_credential_id;
                auth_request_set $velocity_challenge $upstream_http_www_authenticate;
                add_header WWW-Authenticate $velocity_challenge always;
                auth_request_set $velocity_auth_status $upstream_status;
                auth_request_set $velocity_retry_after $upstream_http_retry_after;
                auth_request_set $velocity_limit $upstream_http_x_ratelimit_limit;
                auth_request_set $velocity_remaining $upstream_http_x_ratelimit_remaining;
                auth_request_set $velocity_reset $upstream_http_x_ratelimit_reset;
                add_header X-RateLimit-Limit $velocity_limit always;
                add_header X-RateLimit-Remaining $velocity_remaining always;
                add_header X-RateLimit-Reset $velocity_reset always;
                error_page 500 = @velocity_auth_failed;
                proxy_set_header Authorization \"\";
                proxy_set_header X-Velocity-User-Id $velocity_user;
                proxy_set_header X-Velocity-Workspace-Id $velocity_workspace;
                proxy_set_header X-Velocity-Workspace-Slug $velocity_slug;
                proxy_set_header X-Velocity-Scopes $velocity_scopes;
                proxy_set_header X-Velocity-Credential-Kind $velocity_kind;
                proxy_set_header X-Velocity-Credential-Id $velocity_credential;
                proxy_pass http://{upstream};
            }}"
        )
    };
    format!(
        "daemon off;
        worker_processes 1;
        pid {d}/nginx.pid;
        error_log {d}/error.log info;
        events {{ worker_connections 64; }}
        http {{
            access_log off;
            client_body_temp_path {d}/body;
            proxy_temp_path {d}/proxy;
            fastcgi_temp_path {d}/fastcgi;
            uwsgi_temp_path {d}/uwsgi;
            scgi_temp_path {d}/scgi;
            server {{
                listen 127.0.0.1:{port};
                {RATE_LIMITED_LOCATION}
                {}
                {}
                {}
                {}
                {}
                {}
            }}
        }}",
        check("read", "?scopes=issues:read"),
        check("write", "?scopes=issues:write"),
        check("table", ""),
        protected("/issues/", "read"),
        protected("/write/", "write"),
        protected("/table/", "table"),
    )
}

async fn start_nginx(auth: &str, upstream: &str) -> Nginx {
    let binary = nginx_binary();
    let dir = std::env::temp_dir().join(format!("velocity-nginx-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let config = dir.join("nginx.conf");
    std::fs::write(&config, nginx_config(&dir, port, auth, upstream)).unwrap();
    let child = Command::new(binary)
        .arg("-p")
        .arg(&dir)
        .arg("-c")
        .arg(&config)
        .arg("-e")
        .arg(dir.join("error.log"))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let nginx = Nginx {
        child,
        dir,
        url: format!("http://127.0.0.1:{port}"),
    };
    // Up when it answers; nginx has no readiness signal of its own.
    for _ in 0..100 {
        if http().get(&nginx.url).send().await.is_ok() {
            return nginx;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "nginx did not start: {}",
        std::fs::read_to_string(nginx.dir.join("error.log")).unwrap_or_default()
    );
}

async fn verify(
    h: &Harness,
    credential: Option<&str>,
    slug: Option<&str>,
    query: &str,
) -> (StatusCode, reqwest::header::HeaderMap, serde_json::Value) {
    let mut request = http().get(format!("{}/api/auth/verify{query}", h.http));
    if let Some(credential) = credential {
        request = request.header(AUTHORIZATION, format!("Bearer {credential}"));
    }
    if let Some(slug) = slug {
        request = request.header("x-workspace-slug", slug);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap_or(serde_json::Value::Null);
    (status, headers, body)
}

/// A route table: `/table/issues` needs issues:read, and issues:write to POST.
const ROUTES: &str = r#"[
    {"path": "/table/issues", "scopes": ["issues:read"]},
    {"method": "POST", "path": "/table/issues", "scopes": ["issues:write"]}
]"#;

async fn with_route_table(backend: Backend) -> Harness {
    let path = std::env::temp_dir().join(format!("velocity-routes-{}.json", uuid::Uuid::now_v7()));
    std::fs::write(&path, ROUTES).unwrap();
    let h = Harness::start_with(backend, |c| c.route_scopes = Some(path.clone())).await;
    std::fs::remove_file(&path).unwrap();
    h
}

/// Without `?scopes=`, the route table decides from the original method and
/// URI, directly and behind nginx.
async fn the_route_table_decides_when_the_proxy_does_not_say(backend: Backend) {
    let h = with_route_table(backend).await;
    let (_, _, key) = h.owner_and_workspace_key("acme", &["issues:read"]).await;
    let direct = async |method: &str, uri: &str| {
        http()
            .get(format!("{}/api/auth/verify", h.http))
            .header(AUTHORIZATION, format!("Bearer {key}"))
            .header("x-forwarded-method", method)
            .header("x-original-uri", uri)
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(direct("GET", "/table/issues/1").await, StatusCode::OK);
    assert_eq!(
        direct("POST", "/table/issues/1").await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        direct("GET", "/elsewhere").await,
        StatusCode::OK,
        "no entry: no scope"
    );

    let (upstream_addr, seen) = upstream().await;
    let auth = h.http.trim_start_matches("http://").to_owned();
    let nginx = start_nginx(&auth, &upstream_addr).await;
    let through = async |method: reqwest::Method| {
        http()
            .request(method, format!("{}/table/issues/7", nginx.url))
            .header(AUTHORIZATION, format!("Bearer {key}"))
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(through(reqwest::Method::GET).await, StatusCode::OK);
    assert_eq!(through(reqwest::Method::POST).await, StatusCode::FORBIDDEN);
    assert_eq!(seen.lock().unwrap().len(), 1);
    drop(nginx);
    h.stop().await;
}

async fn verify_answers_with_headers_or_json(backend: Backend) {
    let h = Harness::start(backend).await;
    let (owner, key_id, key) = h.owner_and_workspace_key("acme", &["issues:read"]).await;

    let (status, headers, _) = verify(&h, Some(&key), None, "?scopes=issues:read").await;
    assert_eq!(status, StatusCode::OK);
    let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(header("x-velocity-workspace-slug").as_deref(), Some("acme"));
    assert_eq!(
        header("x-velocity-credential-kind").as_deref(),
        Some("workspace_key")
    );
    assert_eq!(header("x-velocity-credential-id"), Some(key_id));
    assert_eq!(header("x-velocity-scopes").as_deref(), Some("issues:read"));
    assert_eq!(
        header("x-velocity-user-id"),
        None,
        "a workspace key has no user"
    );
    assert_eq!(
        header("cache-control").as_deref(),
        Some("private, no-store")
    );

    // A session with the workspace header: the user, the role's scopes.
    let (status, headers, _) = verify(
        &h,
        Some(&h.session(&owner)),
        Some("acme"),
        "?scopes=issues:write",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-velocity-user-id"], owner.as_str());
    assert_eq!(headers["x-velocity-credential-kind"], "session");

    // Refusals: the table's status and JSON, with a challenge.
    let (status, headers, body) = verify(&h, None, None, "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["reason"], "CREDENTIAL_MISSING");
    assert!(headers.contains_key(WWW_AUTHENTICATE));
    let (status, headers, body) = verify(&h, Some(&key), None, "?scopes=issues:write").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["reason"], "SCOPE_MISSING");
    assert_eq!(
        headers[WWW_AUTHENTICATE],
        "Bearer error=\"insufficient_scope\""
    );
    let (status, _, body) = verify(&h, Some(&key), Some("globex"), "").await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (StatusCode::FORBIDDEN, Some("WORKSPACE_MISMATCH"))
    );
    let (status, _, body) = verify(&h, Some(&key), None, "?scopes=issues:fly").await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (StatusCode::BAD_REQUEST, Some("SCOPE_UNKNOWN"))
    );
    let (status, _, body) = verify(&h, Some(&key), None, "?scopes=a&scopes=b").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request"))
    );
    h.stop().await;
}

async fn nginx_in_front_of_an_upstream(backend: Backend) {
    let h = Harness::start(backend).await;
    let (owner, key_id, key) = h.owner_and_workspace_key("acme", &["issues:read"]).await;
    let (upstream_addr, seen) = upstream().await;
    let auth = h.http.trim_start_matches("http://").to_owned();
    let nginx = start_nginx(&auth, &upstream_addr).await;

    // Allowed: the upstream gets the principal, not the credential.
    let response = http()
        .get(format!("{}/issues/42", nginx.url))
        .header(AUTHORIZATION, format!("Bearer {key}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.unwrap(), "upstream");
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        let (path, headers) = &seen[0];
        assert_eq!(path, "/issues/42");
        assert!(
            !headers.contains_key("authorization"),
            "the credential stays at the edge"
        );
        assert_eq!(headers["x-velocity-credential-id"], key_id.as_str());
        assert_eq!(headers["x-velocity-workspace-slug"], "acme");
        assert_eq!(headers["x-velocity-credential-kind"], "workspace_key");
        assert_eq!(headers["x-velocity-scopes"], "issues:read");
    }

    // Refused: nothing reaches the upstream; nginx relays status and challenge.
    let response = http()
        .get(format!("{}/issues/42", nginx.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(response.headers().contains_key(WWW_AUTHENTICATE));
    let response = http()
        .get(format!("{}/write/42", nginx.url))
        .header(AUTHORIZATION, format!("Bearer {key}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        response.headers()[WWW_AUTHENTICATE],
        "Bearer error=\"insufficient_scope\""
    );
    let response = http()
        .get(format!("{}/issues/42", nginx.url))
        .header(AUTHORIZATION, "Bearer vel_forged")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "refused calls never reach the upstream"
    );

    // Revoked: refused at once.
    h.auth()
        .revoke_key(velocity_testkit::bearer(
            &h.session(&owner),
            pb::RevokeKeyRequest { key_id },
        ))
        .await
        .unwrap();
    let response = http()
        .get(format!("{}/issues/42", nginx.url))
        .header(AUTHORIZATION, format!("Bearer {key}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(seen.lock().unwrap().len(), 1);
    drop(nginx);
    h.stop().await;
}

/// Over the budget behind nginx: the client gets 429 with Retry-After and
/// the budget headers (not nginx's 500), the upstream is not reached, and
/// after Retry-After the key works again. Calls without a credential spend
/// their address's budget (nginx's X-Real-IP).
async fn nginx_passes_on_rate_limits(backend: Backend) {
    let h = Harness::start_with(backend, |c| {
        c.rate_limits.rate_limit_per_credential = 3;
        c.rate_limits.rate_limit_per_address = 2;
    })
    .await;
    let (_, _, key) = h.owner_and_workspace_key("acme", &["issues:read"]).await;
    let (upstream_addr, seen) = upstream().await;
    let auth = h.http.trim_start_matches("http://").to_owned();
    let nginx = start_nginx(&auth, &upstream_addr).await;
    let call = |credential: Option<&str>| {
        let mut request = http().get(format!("{}/issues/7", nginx.url));
        if let Some(credential) = credential {
            request = request.header(AUTHORIZATION, format!("Bearer {credential}"));
        }
        request.send()
    };
    let header = |response: &reqwest::Response, name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };

    for remaining in ["2", "1", "0"] {
        let response = call(Some(&key)).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(header(&response, "x-ratelimit-limit").as_deref(), Some("3"));
        assert_eq!(
            header(&response, "x-ratelimit-remaining").as_deref(),
            Some(remaining)
        );
    }
    let response = call(Some(&key)).await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    // 60 s / 3: one request's worth refills in 20 s.
    assert_eq!(header(&response, "retry-after").as_deref(), Some("20"));
    assert_eq!(header(&response, "x-ratelimit-limit").as_deref(), Some("3"));
    assert_eq!(
        header(&response, "x-ratelimit-remaining").as_deref(),
        Some("0")
    );
    assert!(
        header(&response, "content-type")
            .unwrap()
            .starts_with("application/json")
    );
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["reason"], "RATE_LIMITED");
    assert_eq!(body["error"], "rate_limited");
    assert_eq!(
        seen.lock().unwrap().len(),
        3,
        "a refused call never reaches the upstream"
    );

    // Retry-After honoured: one more call passes.
    h.clock.advance_secs(20);
    let response = call(Some(&key)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        header(&response, "x-ratelimit-remaining").as_deref(),
        Some("0")
    );

    // No credential: the address's budget, two 401s then a 429.
    for remaining in ["1", "0"] {
        let response = call(None).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            header(&response, "x-ratelimit-remaining").as_deref(),
            Some(remaining)
        );
    }
    let response = call(None).await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&response, "retry-after").as_deref(), Some("30"));
    assert_eq!(seen.lock().unwrap().len(), 4);
    drop(nginx);
    h.stop().await;
}

/// Storage down: the check is a 503, which nginx turns into a 500: the
/// upstream is never reached (fail closed).
#[tokio::test]
async fn postgres_outage_fails_closed_behind_nginx() {
    let (h, cold) = common::postgres_with_cold_key().await;
    let (upstream_addr, seen) = upstream().await;
    let auth = h.http.trim_start_matches("http://").to_owned();
    let nginx = start_nginx(&auth, &upstream_addr).await;

    let outage = common::PostgresOutage::begin(&h).await;

    // The key was never looked up, so no cache can answer for it.
    let mut direct = None;
    for _ in 0..5 {
        let (status, _, body) = verify(&h, Some(&cold), None, "").await;
        direct = Some((status, body));
        if status != StatusCode::OK {
            break;
        }
    }
    let (status, body) = direct.unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["reason"], "STORAGE_UNAVAILABLE");
    let response = http()
        .get(format!("{}/issues/1", nginx.url))
        .header(AUTHORIZATION, format!("Bearer {cold}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        seen.lock().unwrap().is_empty(),
        "an outage never lets a call through"
    );

    outage.end().await;
    drop(nginx);
    h.stop().await;
}

for_each_backend!(
    verify_answers_with_headers_or_json,
    nginx_in_front_of_an_upstream,
    nginx_passes_on_rate_limits,
    the_route_table_decides_when_the_proxy_does_not_say,
);

//! /openapi.json against the live server: every documented route is one
//! the router serves (the router is built from the same table and
//! bindings, so it serves no route the document lacks), the document is
//! valid OpenAPI 3.1 by openapi-spec-validator, and schemathesis finds the
//! live answers to generated requests where the document says they are
//! (status, content type, schema) and never a server error. Both tools come
//! from PyPI (.ci/run installs them); a missing tool fails the test.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::Command;

use common::oauth::http;
use common::{Backend, Harness};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use velocity_proto::pb;

async fn document(h: &Harness) -> Value {
    let response = http()
        .get(format!("{}/openapi.json", h.http))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json");
    response.json().await.unwrap()
}

/// Runs a Python tool in `dir` (schemathesis leaves a cache where it
/// runs), failing (never skipping) when it is missing. Off the runtime's
/// thread: the server under test answers on it meanwhile.
async fn python(dir: &Path, args: &[&str]) -> std::process::Output {
    let owned: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let dir = dir.to_owned();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args(&owned)
            .current_dir(&dir)
            .output()
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("python3 is needed for this test: {e}"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("No module named"),
        "{} is not installed (.ci/run installs it with pip): {stderr}",
        args[1]
    );
    output
}

#[tokio::test]
async fn every_documented_route_is_served() {
    let h = Harness::start(Backend::Sqlite).await;
    let doc = document(&h).await;
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    let mut operations = 0;
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            operations += 1;
            let concrete = path.replace(['{', '}'], "");
            let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap();
            let response = http()
                .request(method.clone(), format!("{}{concrete}", h.http))
                .send()
                .await
                .unwrap();
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            assert!(
                !(status == StatusCode::NOT_FOUND && body.contains("route not found")),
                "{method} {path} is documented but not routed"
            );
        }
    }
    // Eleven hand-written routes (`/metrics` among them: it is on this
    // listener) and eleven annotated RPCs.
    assert_eq!(
        operations,
        22,
        "{}",
        serde_json::to_string_pretty(paths).unwrap()
    );
    for rpc in [
        "AuthService_CreateKey",
        "OAuthAppService_RotateAppSecret",
        "AuthService_Authenticate",
    ] {
        assert!(doc.to_string().contains(rpc), "{rpc}");
    }
    for absent in ["DirectoryService", "ExchangeCode", "RefreshToken"] {
        assert!(
            !doc["paths"].to_string().contains(absent),
            "{absent} has no HTTP face"
        );
    }
    // And an undocumented route is not served.
    let response = http()
        .get(format!("{}/v1/users", h.http))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    h.stop().await;
}

#[tokio::test]
async fn the_document_is_valid_openapi_and_matches_the_live_server() {
    let h = Harness::start_with(Backend::Sqlite, |config| {
        config.session_cookie = Some("sb-testref-auth-token".into());
    })
    .await;
    let ada = h.member("acme", "owner").await;
    let (_, personal) = h
        .create_key(&h.session(&ada), pb::KeyKind::Personal, "", &["admin"])
        .await
        .unwrap();
    let doc = document(&h).await;
    let dir = std::env::temp_dir().join(format!("velocity-openapi-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("openapi.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();

    let validated = python(
        &dir,
        &[
            "-m",
            "openapi_spec_validator",
            "--schema",
            "3.1",
            file.to_str().unwrap(),
        ],
    )
    .await;
    assert!(
        validated.status.success(),
        "openapi-spec-validator: {}{}",
        String::from_utf8_lossy(&validated.stdout),
        String::from_utf8_lossy(&validated.stderr)
    );

    // Bounded and seeded, so the run is short and repeatable; the header
    // is a personal admin key, so the /v1 routes run past authentication.
    let authorization = format!("Authorization: Bearer {personal}");
    let url = format!("{}/openapi.json", h.http);
    let checked = python(&dir, &[
        "-m",
        "schemathesis.cli",
        "run",
        &url,
        "--checks",
        "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        "15",
        "--seed",
        "20261130",
        // One worker: CPython 3.11 can fail compiling in two threads at
        // once ("AST constructor recursion depth mismatch").
        "--workers",
        "1",
        "--no-shrink",
        "--generation-database",
        "none",
        "--max-redirects",
        "0",
        "--header",
        &authorization,
        "--report-dir",
        dir.to_str().unwrap(),
        "--no-color",
    ])
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    let report = String::from_utf8_lossy(&checked.stdout);
    // Its summary, for the log: operations and cases tested.
    eprintln!("{report}");
    assert!(
        report.contains("Test cases:") && report.contains(" generated, "),
        "schemathesis ran no test case: {report}"
    );
    assert!(
        checked.status.success(),
        "schemathesis found answers the document does not describe:\n{}\n{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    h.stop().await;
}

//! What an adversarial caller found, each checked from outside: requests
//! that do not decode are the caller's fault, on every RPC; listings page
//! instead of stopping silently at 1,000.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use bytes::{Buf, BufMut};
use common::{Backend, Harness, reason};
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use velocity_proto::pb;
use velocity_storage::{Database, StorageOptions};

/// Sends bytes as they are, as a client with a broken encoder would.
#[derive(Clone, Default)]
struct RawCodec;

struct RawEncoder;
struct RawDecoder;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

async fn raw_call(h: &Harness, path: &'static str, body: Vec<u8>) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(h.channel.clone());
    grpc.ready().await.unwrap();
    // The admin token, so admin RPCs get as far as decoding.
    grpc.unary(
        common::admin(body),
        http::uri::PathAndQuery::from_static(path),
        RawCodec,
    )
    .await
    .expect_err("a message that does not decode must be refused")
}

/// A length-delimited field 1 holding bytes that are not UTF-8.
const NOT_UTF8: &[u8] = &[0x0a, 0x07, b'v', b'e', b'l', b'_', 0xff, 0xfe, 0x80];

#[tokio::test]
async fn requests_that_do_not_decode_are_invalid_argument_on_every_rpc() {
    let h = Harness::start(Backend::Sqlite).await;
    for path in [
        "/velocity.auth.v1.AuthService/Authenticate",
        "/velocity.auth.v1.AuthService/CreateKey",
        "/velocity.auth.v1.AuthService/RevokeKey",
        "/velocity.auth.v1.AuthService/ExchangeCode",
        "/velocity.auth.v1.AuthService/RefreshToken",
        "/velocity.auth.v1.AuthService/ListKeys",
        "/velocity.auth.v1.DirectoryService/CreateUser",
        "/velocity.auth.v1.DirectoryService/ListMemberships",
        "/velocity.auth.v1.OAuthAppService/RegisterApp",
        "/velocity.auth.v1.OAuthAppService/DeleteApp",
    ] {
        let status = raw_call(&h, path, NOT_UTF8.to_vec()).await;
        assert_eq!(status.code(), Code::InvalidArgument, "{path}: {status:?}");
        assert_eq!(reason(&status), "INVALID_ARGUMENT", "{path}");
        // Truncated: a length prefix longer than the message.
        let status = raw_call(&h, path, vec![0x0a, 0x40, b'x']).await;
        assert_eq!(status.code(), Code::InvalidArgument, "{path}: {status:?}");
    }
    h.stop().await;
}

#[tokio::test]
async fn authorization_metadata_that_is_not_utf8_is_malformed_not_missing() {
    let h = Harness::start(Backend::Sqlite).await;
    let mut request = tonic::Request::new(pb::ListKeysRequest::default());
    let value =
        tonic::metadata::MetadataValue::try_from(b"Bearer velu_\xff\xfe".as_slice()).unwrap();
    request.metadata_mut().insert("authorization", value);
    let status = h.auth().list_keys(request).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(reason(&status), "CREDENTIAL_MALFORMED");
    h.stop().await;
}

/// Inserts `count` workspace keys straight into storage, in one statement:
/// through the API each would be its own fsynced transaction.
async fn seed_keys(h: &Harness, backend: Backend, workspace_slug: &str, count: usize) {
    let db = Database::open(&h.db.url, &StorageOptions::default())
        .await
        .unwrap();
    let workspace = db
        .store()
        .workspace_by_slug(workspace_slug)
        .await
        .unwrap()
        .unwrap();
    let hash = |n: usize| {
        let hex = format!("{n:064x}");
        match backend {
            Backend::Sqlite => format!("X'{hex}'"),
            Backend::Postgres => format!("decode('{hex}', 'hex')"),
        }
    };
    let rows: Vec<String> = (0..count)
        .map(|n| {
            format!(
                "('seeded-{n:05}', 'workspace', {}, 'vel_seed…{n:04}', 'seeded {n}', 1, '{}', {})",
                hash(n),
                workspace.id,
                1_000_000 + n
            )
        })
        .collect();
    let sql = format!(
        "INSERT INTO api_keys (id, kind, key_hash, display, name, scopes, workspace_id, created_at) VALUES {}",
        rows.join(", ")
    );
    match &db {
        // The store's SQLite pool only reads (its writes go through one
        // writer), so a connection of our own writes the seed.
        Database::Sqlite(_) => {
            let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&h.db.url)
                .await
                .unwrap();
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut conn)
                .await
                .unwrap();
        }
        Database::Postgres(store) => {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(store.pool())
                .await
                .unwrap();
        }
    }
    db.close().await;
}

/// Every key of a workspace over ListKeys, following page tokens.
async fn list_every_key(h: &Harness, session: &str, page_size: i32) -> (Vec<String>, usize) {
    let mut ids = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = h
            .auth()
            .list_keys(velocity_testkit::bearer(
                session,
                pb::ListKeysRequest {
                    workspace_slug: "acme".into(),
                    include_revoked: false,
                    page_size,
                    page_token: token.clone(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        assert!(page.keys.len() <= usize::try_from(page_size).unwrap());
        ids.extend(page.keys.into_iter().map(|k| k.id));
        if page.next_page_token.is_empty() {
            return (ids, pages);
        }
        token = page.next_page_token;
    }
}

async fn listings_page_past_the_old_limit(backend: Backend) {
    let h = Harness::start(backend).await;
    let owner = h.member("acme", "owner").await;
    let session = h.session(&owner);
    seed_keys(&h, backend, "acme", 2_345).await;

    let (ids, pages) = list_every_key(&h, &session, 1_000).await;
    assert_eq!(pages, 3);
    assert_eq!(ids.len(), 2_345, "nothing is cut off at 1,000");
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "no key appears twice");
    assert_eq!(ids[0], "seeded-02344", "newest first");

    // Page sizes past the maximum are capped, and a token we did not issue
    // is refused.
    let (_, pages) = list_every_key(&h, &session, 5_000).await;
    assert_eq!(pages, 3);
    let refused = h
        .auth()
        .list_keys(velocity_testkit::bearer(
            &session,
            pb::ListKeysRequest {
                workspace_slug: "acme".into(),
                page_token: "not-ours".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);

    // The CLI follows the pages too.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_velocity-auth"))
        .args(["key", "list", "--workspace", "acme"])
        .env("DATABASE_URL", &h.db.url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().lines().count(),
        2_345
    );
    h.stop().await;
}

for_each_backend!(listings_page_past_the_old_limit);

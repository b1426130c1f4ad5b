//! Supabase-style session tokens: the claims Supabase Auth puts in an
//! access token, signed with a project's HS256 secret or with one of the two
//! fixture keys in `tests/fixtures/` (ES256 and RS256), and the JWKS a
//! project would publish for those keys.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// Supabase Auth's default access-token lifetime, one hour.
pub const SESSION_LIFETIME_SECS: i64 = 3600;

/// The claims Supabase Auth puts in an access token for `user`: issued by
/// `issuer` at `now` (Unix seconds), expiring `lifetime_secs` later.
pub fn supabase_claims(issuer: &str, user: &str, now: i64, lifetime_secs: i64) -> Value {
    json!({
        "iss": issuer,
        "aud": "authenticated",
        "exp": now + lifetime_secs,
        "iat": now,
        "sub": user,
        "role": "authenticated",
        "aal": "aal1",
        "session_id": uuid::Uuid::now_v7().to_string(),
        "email": format!("{user}@example.com"),
        "phone": "",
        "app_metadata": {"provider": "email", "providers": ["email"]},
        "user_metadata": {"email_verified": true},
        "amr": [{"method": "password", "timestamp": now}],
        "is_anonymous": false,
    })
}

/// `claims` signed as a project with the HS256 `secret` signs them.
/// Panics if `secret` is empty.
#[expect(
    clippy::expect_used,
    reason = "test support: an unusable secret is a bug in the caller"
)]
pub fn sign_hs256(secret: &str, claims: &Value) -> String {
    let key = EncodingKey::from_secret(secret.as_bytes()).expect("an HS256 secret is not empty");
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &key)
        .expect("HS256 signs any JSON claims")
}

/// The test-only signing keys in `tests/fixtures/`, compiled in, standing
/// in for a Supabase project's asymmetric keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FixtureKey {
    Es256,
    Rs256,
}

impl FixtureKey {
    pub const ALL: [FixtureKey; 2] = [FixtureKey::Es256, FixtureKey::Rs256];

    /// The `kid` tokens carry and the JWKS publishes.
    pub fn kid(self) -> &'static str {
        match self {
            FixtureKey::Es256 => "es256-test",
            FixtureKey::Rs256 => "rs256-test",
        }
    }

    fn algorithm(self) -> Algorithm {
        match self {
            FixtureKey::Es256 => Algorithm::ES256,
            FixtureKey::Rs256 => Algorithm::RS256,
        }
    }

    /// The private key, for tokens signed in ways `sign` does not cover.
    #[expect(
        clippy::expect_used,
        reason = "test support: the fixture files are checked in and known good"
    )]
    pub fn encoding_key(self) -> EncodingKey {
        match self {
            FixtureKey::Es256 => EncodingKey::from_ec_pem(include_bytes!(
                "../../../tests/fixtures/es256-private.pem"
            ))
            .expect("the ES256 fixture is a PEM EC key"),
            FixtureKey::Rs256 => EncodingKey::from_rsa_pem(include_bytes!(
                "../../../tests/fixtures/rs256-private.pem"
            ))
            .expect("the RS256 fixture is a PEM RSA key"),
        }
    }

    /// `claims` signed with this key, its `kid` in the header.
    #[expect(
        clippy::expect_used,
        reason = "test support: a fixture key signs any JSON claims"
    )]
    pub fn sign(self, claims: &Value) -> String {
        let mut header = Header::new(self.algorithm());
        header.kid = Some(self.kid().into());
        jsonwebtoken::encode(&header, claims, &self.encoding_key())
            .expect("a fixture key signs any JSON claims")
    }

    /// The public half as a JWK with its `kid`. The ES256 key also says
    /// `"use": "sig"`; the RS256 key leaves `use` out, which RFC 7517 allows,
    /// so the server is shown a JWKS with both forms.
    #[expect(
        clippy::expect_used,
        reason = "test support: the fixture keys are known good"
    )]
    pub fn jwk(self) -> Value {
        let jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&self.encoding_key(), self.algorithm())
            .expect("a fixture key has a public JWK");
        let mut jwk = serde_json::to_value(jwk).expect("a JWK serializes");
        jwk["kid"] = json!(self.kid());
        if self == FixtureKey::Es256 {
            jwk["use"] = json!("sig");
        }
        jwk
    }
}

/// The JWKS a Supabase project would publish for `keys`.
pub fn jwks(keys: &[FixtureKey]) -> Value {
    json!({ "keys": keys.iter().map(|key| key.jwk()).collect::<Vec<_>>() })
}

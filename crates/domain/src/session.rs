//! Supabase session tokens (CONTRACT §4): JWTs signed with the project's
//! HS256 secret, or with ES256/RS256 keys published as a JWKS document.
//!
//! The key decides the algorithm, never the token: an HS256 token is checked
//! only against the shared secret, an asymmetric one only against a JWKS key
//! of the matching type, so a public key can never be used as an HMAC secret.

use std::fmt;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde::Deserialize;

use crate::clock::Timestamp;
use crate::credential::MAX_CREDENTIAL_LEN;
use crate::error::Reason;

/// The claims we read from a Supabase access token.
#[derive(Clone, Debug, Deserialize)]
pub struct SessionClaims {
    pub sub: String,
    pub exp: i64,
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub session_id: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
}

impl SessionClaims {
    pub fn expires_at(&self) -> Timestamp {
        Timestamp::from_secs(self.exp)
    }
}

pub struct SessionVerifierConfig {
    /// The project's JWT secret (HS256), if HS256 tokens are accepted.
    pub hs256_secret: Option<Vec<u8>>,
    /// Public keys (ES256, RS256), if asymmetric tokens are accepted.
    pub jwks: Option<JwkSet>,
    /// Accepted `aud`; Supabase uses `authenticated`.
    pub audience: String,
    /// Required `iss`, when configured.
    pub issuer: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
}

impl fmt::Debug for SessionVerifierConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionVerifierConfig")
            .field(
                "hs256_secret",
                &self.hs256_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("jwks_keys", &self.jwks.as_ref().map(|s| s.keys.len()))
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .field("leeway_secs", &self.leeway_secs)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SessionConfigError {
    #[error("JWKS key {index} is not usable: {detail}")]
    UnusableJwk { index: usize, detail: String },
    #[error("HS256 secret is unusable: {0}")]
    BadSecret(String),
}

struct AsymmetricKey {
    kid: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
}

pub struct SessionVerifier {
    hmac: Option<DecodingKey>,
    keys: Vec<AsymmetricKey>,
    audience: String,
    issuer: Option<String>,
    leeway_secs: u64,
}

impl fmt::Debug for SessionVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionVerifier")
            .field("hs256", &self.hmac.is_some())
            .field("asymmetric_keys", &self.keys.len())
            .field("audience", &self.audience)
            .finish()
    }
}

impl SessionVerifier {
    pub fn new(config: SessionVerifierConfig) -> Result<Self, SessionConfigError> {
        let hmac = match &config.hs256_secret {
            Some(secret) if secret.len() < 32 => {
                return Err(SessionConfigError::BadSecret(
                    "must be at least 32 bytes".to_owned(),
                ));
            }
            Some(secret) => Some(
                DecodingKey::from_secret(secret)
                    .map_err(|e| SessionConfigError::BadSecret(e.to_string()))?,
            ),
            None => None,
        };
        let mut keys = Vec::new();
        for (index, jwk) in config
            .jwks
            .iter()
            .flat_map(|set| set.keys.iter())
            .enumerate()
        {
            let unusable = |detail: String| SessionConfigError::UnusableJwk { index, detail };
            let algorithm = algorithm_for(jwk).map_err(|d| unusable(d.to_owned()))?;
            let key = DecodingKey::from_jwk(jwk).map_err(|e| unusable(e.to_string()))?;
            keys.push(AsymmetricKey {
                kid: jwk.common.key_id.clone(),
                algorithm,
                key,
            });
        }
        Ok(SessionVerifier {
            hmac,
            keys,
            audience: config.audience,
            issuer: config.issuer,
            leeway_secs: config.leeway_secs,
        })
    }

    pub fn leeway_secs(&self) -> u64 {
        self.leeway_secs
    }

    /// Whether `text` has the shape of a JWT: three base64url parts.
    pub(crate) fn looks_like_jwt(text: &str) -> bool {
        let mut parts = text.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        let base64url = |part: &str| {
            part.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        !header.is_empty()
            && !payload.is_empty()
            && base64url(header)
            && base64url(payload)
            && base64url(signature)
    }

    /// Verifies a session token and returns its claims.
    pub fn verify(&self, token: &str) -> Result<SessionClaims, Reason> {
        if token.len() > MAX_CREDENTIAL_LEN || !Self::looks_like_jwt(token) {
            return Err(Reason::CredentialMalformed);
        }
        let header = decode_header(token).map_err(|_| Reason::SessionInvalid)?;
        let (key, algorithm) = match header.alg {
            Algorithm::HS256 => (
                self.hmac.as_ref().ok_or(Reason::SessionInvalid)?,
                Algorithm::HS256,
            ),
            Algorithm::ES256 | Algorithm::RS256 => {
                let found = self
                    .keys
                    .iter()
                    .filter(|k| k.algorithm == header.alg)
                    .find(|k| match (&header.kid, &k.kid) {
                        (Some(wanted), Some(have)) => wanted == have,
                        (Some(_), None) => false,
                        (None, _) => true,
                    })
                    .ok_or(Reason::SessionInvalid)?;
                (&found.key, found.algorithm)
            }
            _ => return Err(Reason::SessionInvalid),
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = self.leeway_secs;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.set_audience(&[&self.audience]);
        let mut required = vec!["exp", "sub", "aud"];
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        let claims = decode::<SessionClaims>(token, key, &validation)
            .map_err(|err| match err.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => Reason::CredentialExpired,
                _ => Reason::SessionInvalid,
            })?
            .claims;
        match claims.role.as_deref() {
            Some("anon") => return Err(Reason::SessionAnonymous),
            None => return Err(Reason::SessionInvalid),
            Some(_) => {}
        }
        if claims.sub.is_empty() || claims.sub.len() > 128 {
            return Err(Reason::SessionInvalid);
        }
        Ok(claims)
    }
}

/// The one algorithm a JWKS key may verify, from its type and curve.
fn algorithm_for(jwk: &Jwk) -> Result<Algorithm, &'static str> {
    let by_type = match &jwk.algorithm {
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
            Algorithm::ES256
        }
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        _ => return Err("only EC P-256 (ES256) and RSA (RS256) keys are accepted"),
    };
    if let Some(declared) = jwk.common.key_algorithm {
        let declared = Algorithm::try_from(declared)
            .map_err(|_| "the key's `alg` is not a signature algorithm")?;
        if declared != by_type {
            return Err("the key's `alg` does not match its type");
        }
    }
    Ok(by_type)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    const SECRET: &[u8] = b"super-secret-jwt-token-with-at-least-32-characters-long";

    fn now() -> i64 {
        crate::clock::Clock::now(&crate::clock::SystemClock).as_secs()
    }

    fn verifier() -> SessionVerifier {
        SessionVerifier::new(SessionVerifierConfig {
            hs256_secret: Some(SECRET.to_vec()),
            jwks: None,
            audience: "authenticated".into(),
            issuer: Some("https://example.supabase.co/auth/v1".into()),
            leeway_secs: 5,
        })
        .unwrap()
    }

    fn claims() -> serde_json::Value {
        json!({
            "iss": "https://example.supabase.co/auth/v1",
            "aud": "authenticated",
            "exp": now() + 3600,
            "iat": now(),
            "sub": "0b9f2b1e-5a8c-4c7e-9a6e-1f2d3c4b5a69",
            "role": "authenticated",
            "aal": "aal1",
            "session_id": "1b2c3d4e-0000-4000-8000-000000000001",
            "email": "ada@example.com",
            "app_metadata": {"provider": "email", "providers": ["email"]},
            "user_metadata": {},
            "amr": [{"method": "password", "timestamp": now()}],
            "is_anonymous": false,
        })
    }

    fn hs256(claims: &serde_json::Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(SECRET).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn accepts_a_supabase_token() {
        let claims = verifier().verify(&hs256(&claims())).unwrap();
        assert_eq!(claims.sub, "0b9f2b1e-5a8c-4c7e-9a6e-1f2d3c4b5a69");
    }

    #[test]
    fn refuses_wrong_audience_issuer_anon_and_expired() {
        let v = verifier();
        let mut c = claims();
        c["aud"] = json!("somebody-else");
        assert!(matches!(v.verify(&hs256(&c)), Err(Reason::SessionInvalid)));
        let mut c = claims();
        c["iss"] = json!("https://evil.example/auth/v1");
        assert!(matches!(v.verify(&hs256(&c)), Err(Reason::SessionInvalid)));
        let mut c = claims();
        c["role"] = json!("anon");
        assert!(matches!(
            v.verify(&hs256(&c)),
            Err(Reason::SessionAnonymous)
        ));
        let mut c = claims();
        c["exp"] = json!(now() - 60);
        assert!(matches!(
            v.verify(&hs256(&c)),
            Err(Reason::CredentialExpired)
        ));
        let mut c = claims();
        c["nbf"] = json!(now() + 600);
        assert!(matches!(v.verify(&hs256(&c)), Err(Reason::SessionInvalid)));
        let mut c = claims();
        c["exp"] = json!((now() + 3600).to_string());
        assert!(v.verify(&hs256(&c)).is_err(), "exp as a string");
        let mut c = claims();
        c.as_object_mut().unwrap().remove("exp");
        assert!(v.verify(&hs256(&c)).is_err(), "no exp");
    }

    #[test]
    fn leeway_tolerates_small_skew() {
        let mut c = claims();
        c["exp"] = json!(now() - 2);
        assert!(verifier().verify(&hs256(&c)).is_ok());
    }

    #[test]
    fn refuses_alg_none_and_wrong_secret() {
        let v = verifier();
        let token = hs256(&claims());
        let mut parts = token.split('.');
        let (_, payload) = (parts.next(), parts.next().unwrap());
        let none_header = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            br#"{"alg":"none","typ":"JWT"}"#,
        );
        assert!(v.verify(&format!("{none_header}.{payload}.")).is_err());
        let forged = encode(
            &Header::new(Algorithm::HS256),
            &claims(),
            &EncodingKey::from_secret(b"another-secret-another-secret-another-secret").unwrap(),
        )
        .unwrap();
        assert!(matches!(v.verify(&forged), Err(Reason::SessionInvalid)));
    }

    #[test]
    fn shape() {
        assert!(SessionVerifier::looks_like_jwt("a.b.c"));
        assert!(SessionVerifier::looks_like_jwt("a.b."));
        assert!(!SessionVerifier::looks_like_jwt("a.b"));
        assert!(!SessionVerifier::looks_like_jwt("a b.c.d"));
        assert!(matches!(
            verifier().verify("nope"),
            Err(Reason::CredentialMalformed)
        ));
    }
}

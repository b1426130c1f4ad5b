//! Supabase session tokens (CONTRACT §4): JWTs signed with the project's
//! HS256 secret, or with ES256/RS256 keys published as a JWKS document.
//!
//! The key decides the algorithm, never the token: an HS256 token is checked
//! only against the shared secret, an asymmetric one only against a JWKS key
//! of the matching type, so a public key can never be used as an HMAC secret.
//!
//! Asymmetric keys come from two places: the configuration (a JWKS file),
//! fixed for the life of the process, and a set the edge fetches and replaces
//! at run time ([`SessionVerifier::replace_jwks`]). Both are searched, the
//! replaceable set first. The domain does no I/O: it only tells the edge,
//! through a hook, that a token named a key it does not have.

use std::fmt;
use std::sync::{Arc, RwLock};

use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyOperations, PublicKeyUse,
};
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
    #[error("JWKS has no usable ES256/RS256 signature key ({skipped} skipped)")]
    NoUsableKeys { skipped: usize },
}

/// What [`SessionVerifier::replace_jwks`] kept of a key set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JwksReplaced {
    /// Keys now used to verify session tokens.
    pub usable: usize,
    /// Keys left out (wrong type, curve, `use` or `alg`), each logged.
    pub skipped: usize,
}

struct AsymmetricKey {
    kid: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
}

impl AsymmetricKey {
    /// Whether this key may verify a token with `header`'s `alg` and `kid`.
    fn matches(&self, algorithm: Algorithm, kid: Option<&str>) -> bool {
        self.algorithm == algorithm
            && match (kid, &self.kid) {
                (Some(wanted), Some(have)) => wanted == have,
                (Some(_), None) => false,
                (None, _) => true,
            }
    }
}

type UnknownKidHook = Arc<dyn Fn() + Send + Sync>;

pub struct SessionVerifier {
    hmac: Option<DecodingKey>,
    /// Keys from the configuration (a JWKS file), fixed for the process.
    configured: Vec<AsymmetricKey>,
    /// Keys the edge replaces at run time (a JWKS URL). Readers hold the
    /// lock only to clone the `Arc`; a writer only to swap it.
    fetched: RwLock<Arc<[AsymmetricKey]>>,
    /// Called when an ES256/RS256 token names a key we do not have.
    on_unknown_kid: Option<UnknownKidHook>,
    audience: String,
    issuer: Option<String>,
    leeway_secs: u64,
}

impl fmt::Debug for SessionVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionVerifier")
            .field("hs256", &self.hmac.is_some())
            .field("configured_keys", &self.configured.len())
            .field("fetched_keys", &self.fetched_keys().len())
            .field("unknown_kid_hook", &self.on_unknown_kid.is_some())
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
        // A configured set is checked strictly: a key we cannot use there is
        // a mistake to fix before start, not one to skip.
        let mut configured = Vec::new();
        for (index, jwk) in config
            .jwks
            .iter()
            .flat_map(|set| set.keys.iter())
            .enumerate()
        {
            configured.push(
                usable_key(jwk)
                    .map_err(|detail| SessionConfigError::UnusableJwk { index, detail })?,
            );
        }
        Ok(SessionVerifier {
            hmac,
            configured,
            fetched: RwLock::new(Arc::from(Vec::new())),
            on_unknown_kid: None,
            audience: config.audience,
            issuer: config.issuer,
            leeway_secs: config.leeway_secs,
        })
    }

    /// Replaces the run-time key set (the keys of an earlier call; the
    /// configured keys stay). Keys that cannot verify ES256/RS256
    /// signatures are skipped with a warning; a set with no usable key is
    /// refused and the current set kept.
    pub fn replace_jwks(&self, set: &JwkSet) -> Result<JwksReplaced, SessionConfigError> {
        let mut keys = Vec::with_capacity(set.keys.len());
        let mut skipped = 0;
        for (index, jwk) in set.keys.iter().enumerate() {
            match usable_key(jwk) {
                Ok(key) => keys.push(key),
                Err(reason) => {
                    skipped += 1;
                    tracing::warn!(
                        index,
                        kid = jwk.common.key_id.as_deref().unwrap_or("-"),
                        %reason,
                        "JWKS key skipped"
                    );
                }
            }
        }
        if keys.is_empty() {
            return Err(SessionConfigError::NoUsableKeys { skipped });
        }
        let usable = keys.len();
        let keys: Arc<[AsymmetricKey]> = Arc::from(keys);
        match self.fetched.write() {
            Ok(mut current) => *current = keys,
            Err(poisoned) => *poisoned.into_inner() = keys,
        }
        Ok(JwksReplaced { usable, skipped })
    }

    /// Sets what to call when an ES256/RS256 token names a key that neither
    /// the configured nor the fetched set has (the token is refused as
    /// SESSION_INVALID all the same). The edge uses it to refetch; the hook
    /// must be cheap and must not block.
    pub fn set_unknown_kid_hook(&mut self, hook: impl Fn() + Send + Sync + 'static) {
        self.on_unknown_kid = Some(Arc::new(hook));
    }

    /// How many keys the last [`replace_jwks`](Self::replace_jwks) installed.
    pub fn fetched_key_count(&self) -> usize {
        self.fetched_keys().len()
    }

    fn fetched_keys(&self) -> Arc<[AsymmetricKey]> {
        match self.fetched.read() {
            Ok(keys) => Arc::clone(&keys),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
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
        let fetched = self.fetched_keys();
        let (key, algorithm) = match header.alg {
            Algorithm::HS256 => (
                self.hmac.as_ref().ok_or(Reason::SessionInvalid)?,
                Algorithm::HS256,
            ),
            Algorithm::ES256 | Algorithm::RS256 => {
                let kid = header.kid.as_deref();
                let found = fetched
                    .iter()
                    .chain(self.configured.iter())
                    .find(|k| k.matches(header.alg, kid));
                let Some(found) = found else {
                    if let Some(hook) = &self.on_unknown_kid {
                        hook();
                    }
                    return Err(Reason::SessionInvalid);
                };
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

/// A JWKS key ready to verify, or why it cannot: only public ES256 (P-256)
/// and RS256 keys meant for signatures.
fn usable_key(jwk: &Jwk) -> Result<AsymmetricKey, String> {
    match &jwk.common.public_key_use {
        None | Some(PublicKeyUse::Signature) => {}
        Some(_) => return Err("the key's `use` is not `sig`".to_owned()),
    }
    if let Some(ops) = &jwk.common.key_operations
        && !ops.contains(&KeyOperations::Verify)
    {
        return Err("the key's `key_ops` do not include `verify`".to_owned());
    }
    let algorithm = algorithm_for(jwk).map_err(str::to_owned)?;
    let key = DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
    Ok(AsymmetricKey {
        kid: jwk.common.key_id.clone(),
        algorithm,
        key,
    })
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

    // The end-to-end suites' test-only keys (tests/fixtures at the root).
    const ES256_PEM: &[u8] = include_bytes!("../../../tests/fixtures/es256-private.pem");
    const RS256_PEM: &[u8] = include_bytes!("../../../tests/fixtures/rs256-private.pem");

    fn jwk(key: &EncodingKey, alg: Algorithm, kid: &str) -> serde_json::Value {
        let mut jwk = serde_json::to_value(Jwk::from_encoding_key(key, alg).unwrap()).unwrap();
        jwk["kid"] = json!(kid);
        jwk
    }

    fn es256_jwk(kid: &str) -> serde_json::Value {
        jwk(
            &EncodingKey::from_ec_pem(ES256_PEM).unwrap(),
            Algorithm::ES256,
            kid,
        )
    }

    fn rs256_jwk(kid: &str) -> serde_json::Value {
        jwk(
            &EncodingKey::from_rsa_pem(RS256_PEM).unwrap(),
            Algorithm::RS256,
            kid,
        )
    }

    fn set(keys: Vec<serde_json::Value>) -> JwkSet {
        serde_json::from_value(json!({ "keys": keys })).unwrap()
    }

    fn es256(kid: &str) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid.into());
        encode(
            &header,
            &claims(),
            &EncodingKey::from_ec_pem(ES256_PEM).unwrap(),
        )
        .unwrap()
    }

    fn rs256(kid: &str) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(kid.into());
        encode(
            &header,
            &claims(),
            &EncodingKey::from_rsa_pem(RS256_PEM).unwrap(),
        )
        .unwrap()
    }

    fn counting(v: &mut SessionVerifier) -> Arc<std::sync::atomic::AtomicUsize> {
        let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = seen.clone();
        v.set_unknown_kid_hook(move || {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        });
        seen
    }

    #[test]
    fn replaced_keys_verify_and_the_unknown_kid_hook_fires() {
        let mut v = verifier();
        let unknown = counting(&mut v);
        assert!(matches!(
            v.verify(&es256("k1")),
            Err(Reason::SessionInvalid)
        ));
        assert_eq!(unknown.load(std::sync::atomic::Ordering::SeqCst), 1);

        let done = v.replace_jwks(&set(vec![es256_jwk("k1")])).unwrap();
        assert_eq!(
            done,
            JwksReplaced {
                usable: 1,
                skipped: 0
            }
        );
        assert!(v.verify(&es256("k1")).is_ok());
        // Rotation: the new set replaces the old one entirely.
        v.replace_jwks(&set(vec![rs256_jwk("k2")])).unwrap();
        assert!(v.verify(&rs256("k2")).is_ok());
        assert!(matches!(
            v.verify(&es256("k1")),
            Err(Reason::SessionInvalid)
        ));
        assert_eq!(unknown.load(std::sync::atomic::Ordering::SeqCst), 2);
        // HS256 and the hook: a known key or the secret never fires it.
        assert!(v.verify(&hs256(&claims())).is_ok());
        assert_eq!(unknown.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[test]
    fn replace_skips_unusable_keys_and_refuses_an_empty_set() {
        let v = verifier();
        let mut enc = es256_jwk("enc");
        enc["use"] = json!("enc");
        let mut sign_only = es256_jwk("sign-only");
        sign_only["key_ops"] = json!(["sign"]);
        let mut wrong_alg = rs256_jwk("wrong-alg");
        wrong_alg["alg"] = json!("ES256");
        let hmac = json!({"kty": "oct", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA", "kid": "oct"});
        let p384 = json!({
            "kty": "EC", "crv": "P-384", "kid": "p384",
            "x": "iA7lWQLzVrKGEFjfGMfMHfTEZ2KnLiKU7JuNT3E7ygsfE7ygsfE7ygsfE7ygsfE7",
            "y": "iA7lWQLzVrKGEFjfGMfMHfTEZ2KnLiKU7JuNT3E7ygsfE7ygsfE7ygsfE7ygsfE7",
        });
        let unusable = vec![enc, sign_only, wrong_alg, hmac, p384];

        v.replace_jwks(&set(vec![es256_jwk("good")])).unwrap();
        let err = v.replace_jwks(&set(unusable.clone())).unwrap_err();
        assert!(matches!(
            err,
            SessionConfigError::NoUsableKeys { skipped: 5 }
        ));
        let err = v.replace_jwks(&set(vec![])).unwrap_err();
        assert!(matches!(
            err,
            SessionConfigError::NoUsableKeys { skipped: 0 }
        ));
        // A refused set leaves the last good one in place.
        assert_eq!(v.fetched_key_count(), 1);
        assert!(v.verify(&es256("good")).is_ok());

        let mut mixed = unusable;
        mixed.push(rs256_jwk("rs"));
        let done = v.replace_jwks(&set(mixed)).unwrap();
        assert_eq!(
            done,
            JwksReplaced {
                usable: 1,
                skipped: 5
            }
        );
        assert!(v.verify(&rs256("rs")).is_ok());
        assert!(matches!(
            v.verify(&es256("enc")),
            Err(Reason::SessionInvalid)
        ));
        assert!(matches!(
            v.verify(&es256("sign-only")),
            Err(Reason::SessionInvalid)
        ));
    }

    #[test]
    fn configured_and_fetched_keys_are_both_searched() {
        let mut v = SessionVerifier::new(SessionVerifierConfig {
            hs256_secret: None,
            jwks: Some(set(vec![es256_jwk("from-file")])),
            audience: "authenticated".into(),
            issuer: Some("https://example.supabase.co/auth/v1".into()),
            leeway_secs: 5,
        })
        .unwrap();
        let unknown = counting(&mut v);
        assert!(v.verify(&es256("from-file")).is_ok());
        v.replace_jwks(&set(vec![rs256_jwk("from-url")])).unwrap();
        v.replace_jwks(&set(vec![rs256_jwk("from-url-2")])).unwrap();
        assert!(v.verify(&es256("from-file")).is_ok(), "file keys stay");
        assert!(v.verify(&rs256("from-url-2")).is_ok());
        assert!(matches!(
            v.verify(&rs256("from-url")),
            Err(Reason::SessionInvalid)
        ));
        assert_eq!(unknown.load(std::sync::atomic::Ordering::SeqCst), 1);
        // No secret: HS256 is refused without asking for keys.
        assert!(matches!(
            v.verify(&hs256(&claims())),
            Err(Reason::SessionInvalid)
        ));
        assert_eq!(unknown.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[test]
    fn a_configured_set_is_checked_strictly() {
        let mut enc = es256_jwk("enc");
        enc["use"] = json!("enc");
        let err = SessionVerifier::new(SessionVerifierConfig {
            hs256_secret: None,
            jwks: Some(set(vec![es256_jwk("ok"), enc])),
            audience: "authenticated".into(),
            issuer: None,
            leeway_secs: 5,
        })
        .unwrap_err();
        assert!(matches!(
            err,
            SessionConfigError::UnusableJwk { index: 1, .. }
        ));
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

//! CSRF tokens for the consent form, bound to the signed-in session:
//! `base64url(issued_at || HMAC-SHA256(key, user || session || issued_at))`.
//! The key is shared by every replica through storage.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::digest::InvalidLength;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How long a consent page may stay open before its form is refused.
pub const CSRF_LIFETIME_SECS: i64 = 3600;

/// The keyed HMAC state, built once: each token starts from a clone of it.
#[derive(Clone)]
pub struct CsrfKey(Hmac<Sha256>);

impl std::fmt::Debug for CsrfKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CsrfKey(<redacted>)")
    }
}

impl CsrfKey {
    /// Keys the HMAC at start-up, so a key it refused would stop the server
    /// there rather than fail a request. (HMAC takes keys of any length, so
    /// in practice this succeeds.)
    pub fn new(key: [u8; 32]) -> Result<Self, InvalidLength> {
        Hmac::<Sha256>::new_from_slice(&key).map(CsrfKey)
    }

    fn mac(&self, user: &str, session: &str, issued_at: i64) -> Hmac<Sha256> {
        let mut mac = self.0.clone();
        for part in [user.as_bytes(), session.as_bytes()] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac.update(&issued_at.to_be_bytes());
        mac
    }

    pub fn issue(&self, user: &str, session: &str, now_secs: i64) -> String {
        let tag = self.mac(user, session, now_secs).finalize().into_bytes();
        let mut raw = now_secs.to_be_bytes().to_vec();
        raw.extend_from_slice(&tag);
        URL_SAFE_NO_PAD.encode(raw)
    }

    pub fn verify(&self, token: &str, user: &str, session: &str, now_secs: i64) -> bool {
        let Ok(raw) = URL_SAFE_NO_PAD.decode(token.as_bytes()) else {
            return false;
        };
        if raw.len() != 8 + 32 {
            return false;
        }
        let mut issued = [0u8; 8];
        issued.copy_from_slice(&raw[..8]);
        let issued_at = i64::from_be_bytes(issued);
        if now_secs < issued_at - 60 || now_secs - issued_at > CSRF_LIFETIME_SECS {
            return false;
        }
        // verify_slice compares in constant time.
        self.mac(user, session, issued_at)
            .verify_slice(&raw[8..])
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_bound_to_user_session_and_time() {
        let key = CsrfKey::new([7; 32]).unwrap();
        let token = key.issue("ada", "sess-1", 1000);
        assert!(key.verify(&token, "ada", "sess-1", 1000));
        assert!(key.verify(&token, "ada", "sess-1", 1000 + CSRF_LIFETIME_SECS));
        assert!(!key.verify(&token, "ada", "sess-1", 1001 + CSRF_LIFETIME_SECS));
        assert!(!key.verify(&token, "bob", "sess-1", 1000));
        assert!(!key.verify(&token, "ada", "sess-2", 1000));
        assert!(
            !CsrfKey::new([8; 32])
                .unwrap()
                .verify(&token, "ada", "sess-1", 1000)
        );
        assert!(!key.verify("garbage", "ada", "sess-1", 1000));
        let mut raw = URL_SAFE_NO_PAD.decode(&token).unwrap();
        raw[0..8].copy_from_slice(&900i64.to_be_bytes());
        assert!(
            !key.verify(&URL_SAFE_NO_PAD.encode(raw), "ada", "sess-1", 1000),
            "issued_at is signed"
        );
    }
}

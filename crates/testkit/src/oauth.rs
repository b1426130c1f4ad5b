//! What an OAuth client app brings to the flow.

use base64::Engine;
use sha2::{Digest, Sha256};

/// A fresh PKCE pair: (verifier, S256 challenge), the challenge computed
/// here rather than by the code under test.
pub fn pkce_pair() -> (String, String) {
    let verifier = format!(
        "{}{}",
        uuid::Uuid::now_v7().simple(),
        uuid::Uuid::now_v7().simple()
    );
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

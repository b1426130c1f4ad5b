//! The admin token that guards directory and app management, and internal
//! introspection. Kept only as a digest and compared in constant time.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::{Error, Reason};

#[derive(Clone)]
pub struct AdminToken(Option<[u8; 32]>);

impl AdminToken {
    /// `None` disables every admin call.
    pub fn new(token: Option<&str>) -> Self {
        AdminToken(
            token
                .filter(|t| !t.is_empty())
                .map(|t| Sha256::digest(t.as_bytes()).into()),
        )
    }

    /// Checks a token already taken out of its `Authorization: Bearer`
    /// value; every failure looks the same.
    pub fn check(&self, presented: &str) -> Result<(), Error> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        match &self.0 {
            Some(expected) if bool::from(expected.ct_eq(&digest)) => Ok(()),
            _ => Err(Error::Unauthenticated(Reason::AdminTokenInvalid)),
        }
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "AdminToken(<redacted>)"
        } else {
            "AdminToken(disabled)"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_token_checks() {
        let token = AdminToken::new(Some("s3cret-admin-token"));
        assert!(token.check("s3cret-admin-token").is_ok());
        assert!(
            token.check("Bearer s3cret-admin-token").is_err(),
            "the scheme is the header parser's business"
        );
        assert!(token.check("s3cret-admin-tokeN").is_err());
        assert!(token.check("").is_err());
        assert!(!format!("{token:?}").contains("s3cret"));
        let disabled = AdminToken::new(None);
        assert!(disabled.check("").is_err());
        assert!(disabled.check("anything").is_err());
    }
}

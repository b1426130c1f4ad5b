//! `authorization` metadata, read through the domain's one header parser,
//! so gRPC callers and HTTP callers may spell it the same ways.

use tonic::metadata::MetadataMap;
use velocity_domain::{Authorization, Error, Reason};

/// The bearer token in `authorization` metadata, with or without its
/// `Bearer` scheme. Missing, another scheme or a malformed value is
/// `Unauthenticated`, with the parser's reason.
pub fn bearer_token(metadata: &MetadataMap) -> Result<&str, Error> {
    let value = metadata
        .get("authorization")
        .ok_or(Error::Unauthenticated(Reason::CredentialMissing))?;
    let value = std::str::from_utf8(value.as_bytes())
        .map_err(|_| Error::Unauthenticated(Reason::CredentialMalformed))?;
    Authorization::bearer_or_bare(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(value: &str) -> MetadataMap {
        let mut map = MetadataMap::new();
        map.insert("authorization", value.parse().unwrap());
        map
    }

    #[test]
    fn bearer_tokens_in_any_spelling() {
        for value in ["Bearer abc", "BEARER abc", "bearer\tabc", "Bearer   abc"] {
            assert_eq!(
                bearer_token(&metadata(value)).ok(),
                Some("abc"),
                "{value:?}"
            );
        }
    }

    #[test]
    fn anything_else_is_refused_with_a_reason() {
        fn reason(map: &MetadataMap) -> Result<&str, Reason> {
            bearer_token(map).map_err(|e| e.reason())
        }
        assert_eq!(reason(&MetadataMap::new()), Err(Reason::CredentialMissing));
        assert_eq!(reason(&metadata("Bearer")), Err(Reason::CredentialMissing));
        assert_eq!(
            reason(&metadata("Basic YTpi")),
            Err(Reason::CredentialKindNotAccepted)
        );
        assert_eq!(
            bearer_token(&metadata("vel_bare_credential")).ok(),
            Some("vel_bare_credential")
        );
        assert_eq!(
            reason(&metadata("Bearer a b")),
            Err(Reason::CredentialMalformed)
        );
    }
}

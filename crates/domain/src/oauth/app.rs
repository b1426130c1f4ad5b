//! Registered third-party apps.

use std::fmt;

use crate::clock::Timestamp;
use crate::credential::SecretHash;
use crate::directory::{UserId, WorkspaceId, id_type};
use crate::scope::ScopeSet;

id_type!(
    /// An OAuth app's public `client_id`.
    ClientId
);

/// Whether the token endpoint requires the app's secret. PKCE is required
/// of every app either way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientType {
    /// May not keep a secret (SPA, native app): `client_id` and PKCE are
    /// enough. A secret, when sent, must be right.
    Public,
    /// A server-side app: must authenticate with its `vels_` secret.
    Confidential,
}

impl ClientType {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientType::Public => "public",
            ClientType::Confidential => "confidential",
        }
    }

    pub fn parse(s: &str) -> Option<ClientType> {
        match s {
            "public" => Some(ClientType::Public),
            "confidential" => Some(ClientType::Confidential),
            _ => None,
        }
    }
}

impl fmt::Display for ClientType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OAuthApp {
    pub client_id: ClientId,
    pub name: String,
    pub client_type: ClientType,
    /// `None` only for public apps the operator registered before every
    /// app got a secret.
    pub secret_hash: Option<SecretHash>,
    /// The secret the last rotation replaced, while it is still accepted.
    pub previous_secret: Option<RetiringSecret>,
    /// Matched exactly, as strings.
    pub redirect_uris: Vec<String>,
    pub allowed_scopes: ScopeSet,
    /// The workspace whose owners and admins manage the app; `None` for
    /// apps the operator registered.
    pub workspace_id: Option<WorkspaceId>,
    pub created_by: Option<UserId>,
    pub created_at: Timestamp,
}

/// A replaced secret that keeps working until `until`, so a rotation can
/// roll out without downtime.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetiringSecret {
    pub hash: SecretHash,
    pub until: Timestamp,
}

impl OAuthApp {
    pub(crate) fn has_redirect_uri(&self, uri: &str) -> bool {
        self.redirect_uris
            .iter()
            .any(|registered| registered == uri)
    }

    /// Whether `presented` is the app's secret, or its previous one still
    /// inside the overlap. Both digests are compared, in constant time, so
    /// the answer's timing does not tell which matched.
    pub(crate) fn accepts_secret(&self, presented: &str, now: Timestamp) -> bool {
        let digest = SecretHash::of(presented);
        let current = self.secret_hash.as_ref().is_some_and(|h| h.ct_eq(&digest));
        let previous = self
            .previous_secret
            .as_ref()
            .is_some_and(|p| p.hash.ct_eq(&digest) & (now < p.until));
        current | previous
    }
}

pub(crate) const MAX_REDIRECT_URIS: usize = 10;
pub(crate) const MAX_REDIRECT_URI_LEN: usize = 2048;

/// Registration rules (RFC 9700 §2.1, RFC 8252 §7): absolute, no fragment;
/// `https`, or `http` only on loopback; or a private-use scheme with a dot
/// (reverse domain name) for native apps.
pub(crate) fn validate_redirect_uri(uri: &str) -> Result<(), &'static str> {
    if uri.len() > MAX_REDIRECT_URI_LEN {
        return Err("redirect URI too long");
    }
    // The URL parser would silently drop these; exact matching must not.
    if uri.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("redirect URI must not contain whitespace");
    }
    let parsed = url::Url::parse(uri).map_err(|_| "redirect URI must be an absolute URL")?;
    if parsed.fragment().is_some() {
        return Err("redirect URI must not have a fragment");
    }
    match parsed.scheme() {
        "https" => {
            if parsed.host_str().is_none_or(str::is_empty) {
                return Err("redirect URI needs a host");
            }
        }
        "http" => {
            let loopback = match parsed.host() {
                Some(url::Host::Domain(d)) => d == "localhost",
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                None => false,
            };
            if !loopback {
                return Err("http redirect URIs are allowed only on loopback");
            }
        }
        scheme if scheme.contains('.') => {}
        _ => {
            return Err(
                "redirect URI must be https, loopback http, or a reverse-domain private scheme",
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credential::{CredentialKind, Secret};

    #[test]
    fn a_rotated_secret_works_until_its_overlap_ends() {
        let old = Secret::generate(CredentialKind::ClientSecret);
        let new = Secret::generate(CredentialKind::ClientSecret);
        let app = OAuthApp {
            client_id: ClientId("c".into()),
            name: "App".into(),
            client_type: ClientType::Confidential,
            secret_hash: Some(new.hash()),
            previous_secret: Some(RetiringSecret {
                hash: old.hash(),
                until: Timestamp(1_000),
            }),
            redirect_uris: vec![],
            allowed_scopes: ScopeSet::default(),
            workspace_id: None,
            created_by: None,
            created_at: Timestamp(0),
        };
        assert!(app.accepts_secret(new.expose(), Timestamp(999)));
        assert!(app.accepts_secret(new.expose(), Timestamp(5_000)));
        assert!(app.accepts_secret(old.expose(), Timestamp(999)));
        assert!(!app.accepts_secret(old.expose(), Timestamp(1_000)));
        assert!(!app.accepts_secret("vels_wrong", Timestamp(0)));
        let no_secret = OAuthApp {
            secret_hash: None,
            previous_secret: None,
            ..app
        };
        assert!(!no_secret.accepts_secret(new.expose(), Timestamp(0)));
    }

    #[test]
    fn redirect_uri_rules() {
        for ok in [
            "https://app.example.com/callback",
            "https://app.example.com/cb?tenant=1",
            "http://127.0.0.1:8765/callback",
            "http://localhost/cb",
            "http://[::1]:9000/cb",
            "com.example.app:/oauth2redirect",
        ] {
            assert_eq!(validate_redirect_uri(ok), Ok(()), "{ok}");
        }
        for bad in [
            "/callback",
            "http://app.example.com/callback",
            "https://app.example.com/cb#frag",
            "javascript:alert(1)",
            "data:text/html,hi",
            "ftp://example.com/x",
            "https://app.example.com/c\nb",
        ] {
            assert!(validate_redirect_uri(bad).is_err(), "{bad}");
        }
    }
}

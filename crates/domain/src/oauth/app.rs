//! Registered third-party apps.

use std::fmt;

use crate::clock::Timestamp;
use crate::credential::SecretHash;
use crate::directory::id_type;
use crate::scope::ScopeSet;

id_type!(
    /// An OAuth app's public `client_id`.
    ClientId
);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientType {
    /// Cannot keep a secret (SPA, native app): PKCE alone.
    Public,
    /// Authenticates with a `vels_` secret at the token endpoint.
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
    /// Only for confidential clients.
    pub secret_hash: Option<SecretHash>,
    /// Matched exactly, as strings.
    pub redirect_uris: Vec<String>,
    pub allowed_scopes: ScopeSet,
    pub created_at: Timestamp,
}

impl OAuthApp {
    pub(crate) fn has_redirect_uri(&self, uri: &str) -> bool {
        self.redirect_uris
            .iter()
            .any(|registered| registered == uri)
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

//! Request parameters as RFC 6749 wants them: form-encoded (or JSON on the
//! token endpoint), each at most once, client credentials by body or HTTP
//! Basic but not both.

use std::borrow::Cow;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use velocity_domain::Error;
use velocity_domain::error::OAuthErrorCode;
use velocity_domain::oauth::ClientId;
use velocity_domain::service::ClientAuth;

use crate::authorization::AuthorizationHeader;

/// The request's `Content-Type` alone: what the token endpoints need of
/// the headers, without the copy of them all that `HeaderMap` extracts.
pub struct ContentType(Option<HeaderValue>);

impl<S: Send + Sync> FromRequestParts<S> for ContentType {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ContentType(
            parts.headers.get(header::CONTENT_TYPE).cloned(),
        ))
    }
}

/// Borrowed from the body or query where no decoding was needed (what
/// generated tokens and ids are), so parsing a request copies nothing.
#[derive(Debug, Default)]
pub struct Params<'a>(HashMap<Cow<'a, str>, Cow<'a, str>>);

fn invalid_request(message: &str) -> Error {
    Error::OAuth(OAuthErrorCode::InvalidRequest, message.to_owned())
}

impl<'a> Params<'a> {
    /// `application/x-www-form-urlencoded` pairs; a repeated name is refused.
    pub fn from_form(body: &'a [u8]) -> Result<Params<'a>, Error> {
        let mut map = HashMap::new();
        for (name, value) in url::form_urlencoded::parse(body) {
            if map.insert(name, value).is_some() {
                return Err(invalid_request("a parameter was repeated"));
            }
        }
        Ok(Params(map))
    }

    /// A flat JSON object of strings (numbers are taken as their text).
    pub fn from_json(body: &[u8]) -> Result<Params<'a>, Error> {
        let value: serde_json::Value = serde_json::from_slice(body)
            .map_err(|_| invalid_request("the body is not valid JSON"))?;
        let object = value
            .as_object()
            .ok_or_else(|| invalid_request("the body must be a JSON object"))?;
        let mut map = HashMap::new();
        for (name, value) in object {
            let text = match value {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Null => continue,
                _ => return Err(invalid_request("parameters must be strings")),
            };
            map.insert(Cow::Owned(name.clone()), Cow::Owned(text));
        }
        Ok(Params(map))
    }

    /// Picks the parser from `Content-Type` (its type compared without
    /// regard to case, as media types are).
    pub fn from_body(content_type: &ContentType, body: &'a [u8]) -> Result<Params<'a>, Error> {
        let content_type = content_type
            .0
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .split(';')
            .next()
            .unwrap_or_default()
            .trim();
        if content_type.eq_ignore_ascii_case("application/json") {
            Self::from_json(body)
        } else if content_type.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
            Self::from_form(body)
        } else {
            Err(invalid_request(
                "send application/x-www-form-urlencoded or application/json",
            ))
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(|value| &**value)
    }

    pub fn take(&mut self, name: &str) -> Option<String> {
        self.0.remove(name).map(Cow::into_owned)
    }

    /// Client credentials from HTTP Basic or the body, never both, from
    /// the caller at `address`.
    pub fn client_auth(
        &mut self,
        header: &AuthorizationHeader,
        address: Option<IpAddr>,
    ) -> Result<ClientAuth, Error> {
        self.client_auth_with(header.client_credentials()?, address)
    }

    /// As [`Self::client_auth`], with the Basic credentials already taken
    /// from the header ([`crate::authorization::client_credentials_of`]).
    pub fn client_auth_with(
        &mut self,
        basic: Option<(String, String)>,
        address: Option<IpAddr>,
    ) -> Result<ClientAuth, Error> {
        let body_id = self.take("client_id");
        let body_secret = self.take("client_secret");
        match basic {
            Some((id, secret)) => {
                if body_secret.is_some() {
                    return Err(invalid_request(
                        "use one client authentication method, not two",
                    ));
                }
                if body_id.as_deref().is_some_and(|b| b != id) {
                    return Err(invalid_request(
                        "client_id differs from the Basic credentials",
                    ));
                }
                Ok(ClientAuth {
                    client_id: ClientId(id),
                    client_secret: Some(secret),
                    address,
                })
            }
            None => Ok(ClientAuth {
                client_id: ClientId(
                    body_id.ok_or_else(|| invalid_request("client_id is required"))?,
                ),
                client_secret: body_secret,
                address,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;

    #[test]
    fn repeated_form_parameters_are_refused() {
        assert!(Params::from_form(b"a=1&a=2").is_err());
        assert_eq!(
            Params::from_form(b"a=1&b=x%20y").unwrap().get("b"),
            Some("x y")
        );
    }

    #[test]
    fn basic_or_body_credentials_but_not_both() {
        let mut headers = HeaderMap::new();
        let encoded = STANDARD.encode("my%20app:s%3Acret");
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {encoded}")).unwrap(),
        );
        let basic = AuthorizationHeader::from_headers(&headers);
        let auth = Params::default().client_auth(&basic, None).unwrap();
        assert_eq!(auth.client_id.as_str(), "my app");
        assert_eq!(auth.client_secret.as_deref(), Some("s:cret"));
        let mut both = Params::from_form(b"client_secret=x").unwrap();
        assert!(both.client_auth(&basic, None).is_err());
        let mut other = Params::from_form(b"client_id=other").unwrap();
        assert!(other.client_auth(&basic, None).is_err());
        let none = AuthorizationHeader::from_headers(&HeaderMap::new());
        let mut body = Params::from_form(b"client_id=app&client_secret=s").unwrap();
        let auth = body.client_auth(&none, None).unwrap();
        assert_eq!(
            (auth.client_id.as_str(), auth.client_secret.as_deref()),
            ("app", Some("s"))
        );
    }
}

//! The `Authorization` header as every handler reads it: through the
//! domain's one parser, so `BEARER x` means the same here as over gRPC.

use std::convert::Infallible;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use velocity_domain::error::OAuthErrorCode;
use velocity_domain::{Authorization, Error, Reason};

/// The request's `Authorization` header, if any. Extracting it never fails:
/// what a missing or unusable header means is each handler's call. (No
/// `Debug`: the value is a secret.)
pub struct AuthorizationHeader(Option<HeaderValue>);

impl<S: Send + Sync> FromRequestParts<S> for AuthorizationHeader {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(AuthorizationHeader::from_headers(&parts.headers))
    }
}

impl AuthorizationHeader {
    pub fn from_headers(headers: &HeaderMap) -> Self {
        AuthorizationHeader(headers.get(header::AUTHORIZATION).cloned())
    }

    /// `None` without the header; else what the domain's parser makes of it.
    pub fn parsed(&self) -> Option<Result<Authorization<'_>, Error>> {
        let value = self.0.as_ref()?;
        Some(Authorization::from_bytes(value.as_bytes()))
    }

    /// The bearer token, when the header holds a well-formed one.
    pub fn bearer(&self) -> Option<&str> {
        match self.parsed()? {
            Ok(Authorization::Bearer(token)) => Some(token),
            _ => None,
        }
    }

    /// Client credentials by HTTP Basic (RFC 6749 §2.3.1): `None` without
    /// the header or with a bearer token, which is not client
    /// authentication. Any other header fails client authentication.
    pub fn client_credentials(&self) -> Result<Option<(String, String)>, Error> {
        client_credentials_of(self.parsed())
    }
}

/// [`AuthorizationHeader::client_credentials`] of a header already parsed,
/// for handlers that look at the parse for a bearer token first: the
/// header is decoded (base64, form-decoding) once per request.
pub fn client_credentials_of(
    parsed: Option<Result<Authorization<'_>, Error>>,
) -> Result<Option<(String, String)>, Error> {
    match parsed {
        None | Some(Ok(Authorization::Bearer(_))) => Ok(None),
        Some(Ok(Authorization::Basic { user, password })) => Ok(Some((user, password))),
        Some(Err(err)) => {
            let message = match err.reason() {
                Reason::CredentialKindNotAccepted => {
                    "authenticate the client by HTTP Basic or in the body"
                }
                _ => "malformed Basic credentials",
            };
            Err(Error::OAuth(
                OAuthErrorCode::InvalidClient,
                message.to_owned(),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(value: &'static [u8]) -> AuthorizationHeader {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_bytes(value).unwrap(),
        );
        AuthorizationHeader::from_headers(&headers)
    }

    #[test]
    fn bearer_tokens_in_any_spelling() {
        for value in [
            &b"Bearer abc"[..],
            b"BEARER abc",
            b"bearer\tabc",
            b"Bearer   abc",
        ] {
            assert_eq!(header(value).bearer(), Some("abc"));
        }
        for value in [
            &b"Basic YTpi"[..],
            b"Token abc",
            b"Bearer",
            b"Bearer \xffabc",
        ] {
            assert_eq!(header(value).bearer(), None);
        }
        assert_eq!(
            AuthorizationHeader::from_headers(&HeaderMap::new()).bearer(),
            None
        );
    }

    #[test]
    fn client_credentials_come_from_basic_only() {
        assert_eq!(
            header(b"basic YTpi").client_credentials().unwrap(),
            Some(("a".to_owned(), "b".to_owned()))
        );
        assert_eq!(header(b"Bearer abc").client_credentials().unwrap(), None);
        for value in [&b"Basic !!"[..], b"Basic", b"Token abc"] {
            let err = header(value).client_credentials().unwrap_err();
            assert_eq!(err.reason(), Reason::InvalidClient);
        }
    }
}

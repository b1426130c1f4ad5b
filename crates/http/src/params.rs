//! Request parameters as RFC 6749 wants them: form-encoded (or JSON on the
//! token endpoint), each at most once, client credentials by body or HTTP
//! Basic but not both.

use std::borrow::Cow;
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

/// At most this many parameters in one request. The token endpoint reads
/// seven at most and the consent form about a dozen; the cap keeps the
/// search for a repeated name short, whatever the body holds.
pub const MAX_PARAMS: usize = 32;

/// Borrowed from the body or query where no decoding was needed (what
/// generated tokens and ids are), so parsing a request copies nothing.
/// A list, not a map: a handful of names is found faster by comparing
/// them than by hashing each.
#[derive(Debug, Default)]
pub struct Params<'a>(Vec<(Cow<'a, str>, Cow<'a, str>)>);

fn invalid_request(message: &str) -> Error {
    Error::OAuth(OAuthErrorCode::InvalidRequest, message.to_owned())
}

/// One name or value of a form (`+` a space, `%XX` a byte, text that is
/// not UTF-8 taken with U+FFFD as the WHATWG form parser does). Text
/// holding neither `+` nor `%` is borrowed as it is.
fn form_decode(raw: &[u8]) -> Cow<'_, str> {
    if memchr::memchr2(b'+', b'%', raw).is_none() {
        return match std::str::from_utf8(raw) {
            Ok(text) => Cow::Borrowed(text),
            Err(_) => String::from_utf8_lossy(raw),
        };
    }
    let spaced: Vec<u8> = raw
        .iter()
        .map(|&b| if b == b'+' { b' ' } else { b })
        .collect();
    let bytes: Vec<u8> = percent_encoding::percent_decode(&spaced).collect();
    match String::from_utf8(bytes) {
        Ok(text) => Cow::Owned(text),
        Err(err) => Cow::Owned(String::from_utf8_lossy(err.as_bytes()).into_owned()),
    }
}

impl<'a> Params<'a> {
    /// `application/x-www-form-urlencoded` pairs; a repeated name is
    /// refused, and so are more than [`MAX_PARAMS`] pairs.
    pub fn from_form(body: &'a [u8]) -> Result<Params<'a>, Error> {
        let mut pairs = Params(Vec::with_capacity(8));
        for piece in body.split(|&b| b == b'&').filter(|piece| !piece.is_empty()) {
            let (name, value) = match memchr::memchr(b'=', piece) {
                Some(at) => (&piece[..at], &piece[at + 1..]),
                None => (piece, &[][..]),
            };
            pairs.push(form_decode(name), form_decode(value))?;
        }
        Ok(pairs)
    }

    fn push(&mut self, name: Cow<'a, str>, value: Cow<'a, str>) -> Result<(), Error> {
        if self.0.iter().any(|(seen, _)| *seen == name) {
            return Err(invalid_request("a parameter was repeated"));
        }
        if self.0.len() == MAX_PARAMS {
            return Err(invalid_request("too many parameters"));
        }
        self.0.push((name, value));
        Ok(())
    }

    /// A flat JSON object of strings (numbers are taken as their text).
    pub fn from_json(body: &[u8]) -> Result<Params<'a>, Error> {
        let value: serde_json::Value = serde_json::from_slice(body)
            .map_err(|_| invalid_request("the body is not valid JSON"))?;
        let object = value
            .as_object()
            .ok_or_else(|| invalid_request("the body must be a JSON object"))?;
        let mut params = Params(Vec::with_capacity(object.len().min(MAX_PARAMS)));
        for (name, value) in object {
            let text = match value {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Null => continue,
                _ => return Err(invalid_request("parameters must be strings")),
            };
            params.push(Cow::Owned(name.clone()), Cow::Owned(text))?;
        }
        Ok(params)
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
        self.0
            .iter()
            .find(|(seen, _)| seen == name)
            .map(|(_, value)| &**value)
    }

    pub fn take(&mut self, name: &str) -> Option<String> {
        let at = self.0.iter().position(|(seen, _)| seen == name)?;
        Some(self.0.swap_remove(at).1.into_owned())
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

    /// The same pairs as the `url` crate's WHATWG parser, which this one
    /// replaces on the hot path.
    #[test]
    fn forms_decode_as_the_whatwg_parser_does() {
        let bodies: [&[u8]; 12] = [
            b"grant_type=authorization_code&code=vel_oc_abc&redirect_uri=http%3A%2F%2F127.0.0.1%3A9%2Fcb",
            b"a=x+y&b=x%2By&c=%zz&d=%&e=%4&f=100%25",
            b"&&a=1&&b=&c&=v&",
            b"a==b&b=c=d",
            b"name=%FF%FE&other=%C3%A9t%C3%A9",
            b"raw=\xff\xfe",
            b"",
            b"=",
            b"+%20+=+",
            b"k%3Dv=1",
            b"emoji=%F0%9F%94%91&x=%F0%9F",
            b"scope=issues%3Aread+issues%3Awrite",
        ];
        for body in bodies {
            let ours = Params::from_form(body).unwrap();
            let theirs: Vec<(String, String)> = url::form_urlencoded::parse(body)
                .map(|(n, v)| (n.into_owned(), v.into_owned()))
                .collect();
            let ours: Vec<(String, String)> = ours
                .0
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect();
            assert_eq!(ours, theirs, "{}", String::from_utf8_lossy(body));
        }
        let invalid = [b'a', b'=', 0xff, b'&', b'b', b'=', 0xc3];
        let ours = Params::from_form(&invalid).unwrap();
        assert_eq!(ours.get("a"), Some("\u{fffd}"));
        assert_eq!(ours.get("b"), Some("\u{fffd}"));
    }

    #[test]
    fn plain_text_is_borrowed_and_taken_once() {
        let mut params = Params::from_form(b"code=vel_oc_1&state=x%20y").unwrap();
        assert!(matches!(params.0[0].1, Cow::Borrowed("vel_oc_1")));
        assert!(matches!(params.0[1].1, Cow::Owned(_)));
        assert_eq!(params.take("code").as_deref(), Some("vel_oc_1"));
        assert_eq!(params.take("code"), None);
        assert_eq!(params.get("state"), Some("x y"));
    }

    #[test]
    fn too_many_parameters_are_refused() {
        let at_cap: Vec<String> = (0..MAX_PARAMS).map(|i| format!("p{i}=v")).collect();
        let body = at_cap.join("&");
        let params = Params::from_form(body.as_bytes()).unwrap();
        assert_eq!(params.get("p0"), Some("v"));
        let over = format!("{}&one=more", at_cap.join("&"));
        let err = Params::from_form(over.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("too many parameters"), "{err}");
        let json: serde_json::Map<String, serde_json::Value> = (0..=MAX_PARAMS)
            .map(|i| (format!("p{i}"), serde_json::Value::from("v")))
            .collect();
        let json = serde_json::to_vec(&json).unwrap();
        assert!(Params::from_json(&json).is_err());
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

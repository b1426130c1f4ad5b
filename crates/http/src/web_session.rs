//! Where the signed-in user's session comes from over HTTP, without I/O:
//! the `@supabase/ssr` cookie (chunked, `base64-` prefixed or raw JSON),
//! the legacy `sb-access-token` cookie, and the sign-in redirect for a
//! signed-out browser with its same-origin return path. Query strings are
//! never read for sessions.

use axum::http::{HeaderMap, header};
use base64::Engine;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use url::Url;

/// The cookie older versions of the Velocity web app kept the token in.
pub const LEGACY_COOKIE: &str = "sb-access-token";
/// Most chunks `<name>.0` … read; a session needing more is refused.
pub const MAX_CHUNKS: usize = 32;
/// Largest joined cookie value read, in bytes.
pub const MAX_SESSION_BYTES: usize = 64 * 1024;
/// The sign-in URL's return parameter unless configured otherwise.
pub const DEFAULT_RETURN_PARAM: &str = "redirect_to";

/// The `@supabase/ssr` cookie name: `sb-<project-ref>-auth-token`, the
/// project ref being the first DNS label of SUPABASE_URL's host.
pub fn cookie_name_for(supabase_url: &str) -> Option<String> {
    let url = Url::parse(supabase_url.trim()).ok()?;
    let host = url.host_str()?;
    let label = host.split('.').next().filter(|l| !l.is_empty())?;
    Some(format!("sb-{label}-auth-token"))
}

/// How a browser's session is found and where a signed-out one is sent.
#[derive(Clone, Debug, Default)]
pub struct WebSession {
    /// The `@supabase/ssr` cookie name; `None` reads the legacy cookie only.
    pub cookie: Option<String>,
    pub sign_in: Option<SignIn>,
}

/// Where a signed-out browser signs in, and the parameter it returns by.
#[derive(Clone, Debug)]
pub struct SignIn {
    pub url: Url,
    pub return_param: String,
}

impl WebSession {
    /// The cookie named explicitly, else the one derived from SUPABASE_URL.
    pub fn new(
        explicit: Option<&str>,
        supabase_url: Option<&str>,
        sign_in: Option<SignIn>,
    ) -> Self {
        let explicit = explicit.map(str::trim).filter(|n| !n.is_empty());
        let cookie = match explicit {
            Some(name) => Some(name.to_owned()),
            None => supabase_url.and_then(cookie_name_for),
        };
        WebSession { cookie, sign_in }
    }

    /// The session token the request's cookies carry, if any well-formed.
    pub fn token(&self, headers: &HeaderMap) -> Option<String> {
        let jar = Jar::from_headers(headers);
        self.cookie
            .as_deref()
            .and_then(|name| ssr_token(&jar, name))
            .or_else(|| jar.get(LEGACY_COOKIE).and_then(plain_token))
    }
}

/// The request's cookies; the first of a repeated name wins.
struct Jar<'a> {
    pairs: Vec<(&'a str, &'a str)>,
}

impl<'a> Jar<'a> {
    fn from_headers(headers: &'a HeaderMap) -> Jar<'a> {
        let pairs = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .map(|(k, v)| (k.trim(), v.trim()))
            .collect();
        Jar { pairs }
    }

    fn get(&self, name: &str) -> Option<&'a str> {
        self.pairs
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.trim_matches('"'))
    }
}

/// The `@supabase/ssr` cookie: whole, or chunks `.0`, `.1`, … joined.
fn ssr_token(jar: &Jar<'_>, name: &str) -> Option<String> {
    let joined = match jar.get(name) {
        Some(value) => value.to_owned(),
        None => {
            let mut joined = String::new();
            let mut index = 0;
            while let Some(chunk) = jar.get(&format!("{name}.{index}")) {
                if index == MAX_CHUNKS {
                    return None;
                }
                joined.push_str(chunk);
                if joined.len() > MAX_SESSION_BYTES {
                    return None;
                }
                index += 1;
            }
            joined
        }
    };
    if joined.is_empty() || joined.len() > MAX_SESSION_BYTES {
        return None;
    }
    access_token_of(&joined)
}

/// The access token in a cookie value: `base64-` + base64url JSON, or JSON
/// (percent-encoded as browsers store it, or not).
fn access_token_of(value: &str) -> Option<String> {
    let json = if let Some(encoded) = value.strip_prefix("base64-") {
        let encoded = percent_decode(encoded)?;
        let bytes = URL_SAFE_NO_PAD
            .decode(encoded.trim_end_matches('='))
            .or_else(|_| URL_SAFE.decode(&encoded))
            .ok()?;
        String::from_utf8(bytes).ok()?
    } else {
        percent_decode(value)?
    };
    let session: serde_json::Value = serde_json::from_str(&json).ok()?;
    let token = match &session {
        serde_json::Value::Object(fields) => fields.get("access_token")?.as_str()?,
        serde_json::Value::Array(items) => items.first()?.as_str()?,
        _ => return None,
    };
    plain_token(token)
}

/// A bare token: non-empty, printable ASCII without spaces.
fn plain_token(token: &str) -> Option<String> {
    (!token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic())).then(|| token.to_owned())
}

/// `%XX` decoding; `None` on a broken escape or invalid UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    if !text.contains('%') {
        return Some(text.to_owned());
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A return path we built is same-origin: one leading `/`, never `//`, no
/// backslash, no control or non-ASCII characters, no fragment.
pub fn is_same_origin_path(path: &str) -> bool {
    path.starts_with('/')
        && !path.starts_with("//")
        && path
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'\\' && b != b'#')
}

/// The return path for a request to `path` with `query`: the query's
/// unsafe bytes percent-encoded; `None` when the path is not same-origin.
pub fn return_path(path: &str, query: Option<&str>) -> Option<String> {
    let mut out = path.to_owned();
    if let Some(query) = query.filter(|q| !q.is_empty()) {
        out.push('?');
        for b in query.bytes() {
            if b.is_ascii_graphic() && b != b'\\' && b != b'#' {
                out.push(char::from(b));
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    is_same_origin_path(&out).then_some(out)
}

impl SignIn {
    /// The sign-in URL carrying `return_to` in its return parameter.
    pub fn location(&self, return_to: &str) -> Url {
        let mut url = self.url.clone();
        url.query_pairs_mut()
            .append_pair(&self.return_param, return_to);
        url
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const NAME: &str = "sb-abcdefgh-auth-token";
    const JWT: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1In0.c2ln";

    fn session() -> WebSession {
        WebSession::new(None, Some("https://abcdefgh.supabase.co"), None)
    }

    fn headers(cookies: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for cookie in cookies {
            headers.append(header::COOKIE, HeaderValue::from_str(cookie).unwrap());
        }
        headers
    }

    fn token(cookie: &str) -> Option<String> {
        session().token(&headers(&[cookie]))
    }

    fn json() -> String {
        format!(r#"{{"access_token":"{JWT}","refresh_token":"r","expires_at":1}}"#)
    }

    fn b64(text: &str) -> String {
        format!("base64-{}", URL_SAFE_NO_PAD.encode(text))
    }

    fn encode_component(text: &str) -> String {
        text.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b) {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    }

    #[test]
    fn cookie_name_comes_from_the_project_ref_or_is_explicit() {
        assert_eq!(
            cookie_name_for("https://abcdefgh.supabase.co").as_deref(),
            Some(NAME)
        );
        assert_eq!(
            cookie_name_for("https://abcdefgh.supabase.co/").as_deref(),
            Some(NAME)
        );
        assert_eq!(cookie_name_for("not a url"), None);
        let explicit = WebSession::new(Some("my-cookie"), Some("https://x.supabase.co"), None);
        assert_eq!(explicit.cookie.as_deref(), Some("my-cookie"));
        let derived = WebSession::new(Some(" "), Some("https://x.supabase.co"), None);
        assert_eq!(derived.cookie.as_deref(), Some("sb-x-auth-token"));
        assert_eq!(WebSession::new(None, None, None).cookie, None);
    }

    #[test]
    fn every_format_yields_the_access_token() {
        let padded = format!("base64-{}", URL_SAFE.encode(json()));
        let array = format!(r#"["{JWT}","refresh",null,null,null]"#);
        for value in [
            b64(&json()),
            padded,
            json(),
            encode_component(&json()),
            encode_component(&array),
            array,
        ] {
            assert_eq!(
                token(&format!("theme=dark; {NAME}={value}; x=1")).as_deref(),
                Some(JWT),
                "{value}"
            );
        }
        assert_eq!(
            token(&format!("sb-access-token={JWT}")).as_deref(),
            Some(JWT)
        );
    }

    #[test]
    fn chunks_are_joined_in_order_until_one_is_missing() {
        let value = b64(&json());
        let (a, rest) = value.split_at(10);
        let (b, c) = rest.split_at(20);
        // Out of order in the header, and in two headers.
        let found = session().token(&headers(&[
            &format!("{NAME}.2={c}; {NAME}.0={a}"),
            &format!("{NAME}.1={b}; {NAME}.4=junk"),
        ]));
        assert_eq!(found.as_deref(), Some(JWT));
        // A gap ends the chunks: .0 and .2 alone are not a session.
        assert_eq!(token(&format!("{NAME}.0={a}; {NAME}.2={c}")), None);
        // Raw JSON, percent-encoded, chunked.
        let raw = encode_component(&json());
        let (a, b) = raw.split_at(raw.len() / 2);
        assert_eq!(
            token(&format!("{NAME}.0={a}; {NAME}.1={b}")).as_deref(),
            Some(JWT)
        );
    }

    #[test]
    fn chunk_count_and_total_size_are_capped() {
        let value = b64(&json());
        let pieces: Vec<String> = value.chars().map(String::from).collect();
        assert!(pieces.len() > MAX_CHUNKS);
        let many: Vec<String> = pieces
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{NAME}.{i}={p}"))
            .collect();
        assert_eq!(token(&many.join("; ")), None);
        let within: Vec<String> = value
            .as_bytes()
            .chunks(value.len().div_ceil(MAX_CHUNKS))
            .enumerate()
            .map(|(i, p)| format!("{NAME}.{i}={}", std::str::from_utf8(p).unwrap()))
            .collect();
        assert!(within.len() <= MAX_CHUNKS);
        assert_eq!(token(&within.join("; ")).as_deref(), Some(JWT));

        let padding = "x".repeat(MAX_SESSION_BYTES);
        let big = format!(r#"{{"access_token":"{JWT}","pad":"{padding}"}}"#);
        assert_eq!(token(&format!("{NAME}={}", b64(&big))), None);
        let half = b64(&big);
        let (a, b) = half.split_at(half.len() / 2);
        assert_eq!(token(&format!("{NAME}.0={a}; {NAME}.1={b}")), None);
    }

    #[test]
    fn malformed_values_are_signed_out() {
        for value in [
            "",
            "base64-",
            "base64-!!!!",
            "base64-e30", // {}
            &b64("not json"),
            &b64(r#"{"access_token":42}"#),
            &b64(r#"{"access_token":""}"#),
            &b64(r#"{"access_token":"a b"}"#),
            &b64(r#"{"refresh_token":"r"}"#),
            &b64("[]"),
            &b64("[1]"),
            &b64("\"jwt\""),
            "%7B%22access_token",
            "%ZZ",
            "%",
            "%FF%FE",
            "{\"access_token\":",
            "null",
        ] {
            assert_eq!(token(&format!("{NAME}={value}")), None, "{value:?}");
        }
        assert_eq!(token("sb-access-token="), None);
    }

    #[test]
    fn another_projects_cookie_is_not_ours() {
        let value = b64(&json());
        assert_eq!(token(&format!("sb-otherref-auth-token={value}")), None);
        assert_eq!(token(&format!("sb-otherref-auth-token.0={value}")), None);
    }

    #[test]
    fn the_legacy_cookie_still_works_beside_the_new_one() {
        let new_wins = token(&format!("sb-access-token=legacy; {NAME}={}", b64(&json())));
        assert_eq!(new_wins.as_deref(), Some(JWT));
        let broken_new = token(&format!("sb-access-token={JWT}; {NAME}=garbage"));
        assert_eq!(broken_new.as_deref(), Some(JWT));
    }

    #[test]
    fn return_paths_stay_on_our_origin() {
        assert_eq!(
            return_path("/oauth/consent", Some("client_id=a&state=b")).as_deref(),
            Some("/oauth/consent?client_id=a&state=b")
        );
        assert_eq!(
            return_path("/oauth/consent", None).as_deref(),
            Some("/oauth/consent")
        );
        for path in [
            "//evil.com",
            "/\\evil.com",
            "https://evil.com",
            "evil.com",
            "",
            "/\t/evil.com",
            "/é",
        ] {
            assert_eq!(return_path(path, None), None, "{path:?}");
        }
        for query in [
            "redirect_uri=https://evil.com",
            "x=//evil.com",
            "x=\\\\evil.com",
            "x=a#https://evil.com",
            "x=\u{7f}",
        ] {
            let path = return_path("/oauth/consent", Some(query)).unwrap();
            assert!(is_same_origin_path(&path), "{path}");
            assert!(path.starts_with("/oauth/consent?"), "{path}");
            let base = Url::parse("https://auth.velocity.dev").unwrap();
            let resolved = base.join(&path).unwrap();
            assert_eq!(resolved.origin(), base.origin(), "{path}");
            assert_eq!(resolved.path(), "/oauth/consent", "{path}");
        }
    }

    #[test]
    fn sign_in_location_carries_the_return_path() {
        let sign_in = SignIn {
            url: Url::parse("https://app.velocity.dev/login?from=auth").unwrap(),
            return_param: DEFAULT_RETURN_PARAM.into(),
        };
        let back = "/oauth/consent?client_id=a&scope=issues%3Aread";
        let location = sign_in.location(back);
        assert_eq!(location.host_str(), Some("app.velocity.dev"));
        let pairs: Vec<(String, String)> = location.query_pairs().into_owned().collect();
        assert_eq!(
            pairs,
            [
                ("from".to_owned(), "auth".to_owned()),
                ("redirect_to".to_owned(), back.to_owned())
            ]
        );
    }
}

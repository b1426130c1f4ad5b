//! The one parser of `Authorization` header values (RFC 7235 §4.2), used by
//! the HTTP headers and gRPC metadata alike, so every edge accepts the same
//! spellings: the scheme in any case, then one or more spaces or tabs.
//!
//! Authenticate's credential field is not a header; it goes through
//! `credential::strip_bearer` (crate-private), which tolerates a bare credential.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::error::{Error, Reason};

/// A parsed `Authorization` value. `Debug` never shows a secret.
#[derive(Clone, PartialEq, Eq)]
pub enum Authorization<'a> {
    /// RFC 6750 §2.1: the token as presented.
    Bearer(&'a str),
    /// RFC 6749 §2.3.1: client credentials, each form-urlencoded before
    /// being joined by `:` and base64-encoded; decoded here.
    Basic { user: String, password: String },
}

impl<'a> Authorization<'a> {
    /// Parses a header value. Refusals are `Unauthenticated`: missing (empty,
    /// or a scheme with nothing after it), kind not accepted (a scheme other
    /// than Bearer or Basic), or malformed.
    pub fn parse(value: &'a str) -> Result<Self, Error> {
        let value = value.trim_matches(is_whitespace);
        if value.is_empty() {
            return Err(missing());
        }
        let (scheme, credentials) = match value.split_once(is_whitespace) {
            Some((scheme, rest)) => (scheme, rest.trim_start_matches(is_whitespace)),
            None => (value, ""),
        };
        let bearer = scheme.eq_ignore_ascii_case("bearer");
        if !bearer && !scheme.eq_ignore_ascii_case("basic") {
            return Err(Error::Unauthenticated(Reason::CredentialKindNotAccepted));
        }
        if credentials.is_empty() {
            return Err(missing());
        }
        // Both schemes take a single token68, never a list of parameters.
        if credentials.contains(is_whitespace) {
            return Err(malformed());
        }
        if bearer {
            Ok(Authorization::Bearer(credentials))
        } else {
            parse_basic(credentials)
        }
    }

    /// The token of `Bearer <token>` or, as gRPC metadata and Authenticate's
    /// credential field have always allowed, of the bare token itself (a
    /// value with no space or tab has no scheme). Basic and other schemes
    /// are `CredentialKindNotAccepted`; the rest as [`Authorization::parse`].
    pub fn bearer_or_bare(value: &'a str) -> Result<&'a str, Error> {
        let bare = !value.is_empty()
            && !has_whitespace(value)
            && !value.eq_ignore_ascii_case("bearer")
            && !value.eq_ignore_ascii_case("basic");
        if bare {
            return Ok(value);
        }
        match Self::parse(value)? {
            Authorization::Bearer(token) => Ok(token),
            Authorization::Basic { .. } => {
                Err(Error::Unauthenticated(Reason::CredentialKindNotAccepted))
            }
        }
    }

    /// [`Authorization::parse`] for a raw header value, which need not be
    /// UTF-8; a value that is not is malformed.
    pub fn from_bytes(value: &'a [u8]) -> Result<Self, Error> {
        std::str::from_utf8(value)
            .map_err(|_| malformed())
            .and_then(Self::parse)
    }
}

/// The OWS of RFC 7230 §3.2.3.
fn is_whitespace(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// Whether `value` holds OWS anywhere: every Authenticate asks this of its
/// credential. By bytes, since neither character can be part of a longer
/// UTF-8 sequence, and with the slice search, which goes a word at a time
/// (a tenth of the instructions of a char-by-char walk).
fn has_whitespace(value: &str) -> bool {
    let bytes = value.as_bytes();
    bytes.contains(&b' ') || bytes.contains(&b'\t')
}

fn missing() -> Error {
    Error::Unauthenticated(Reason::CredentialMissing)
}

fn malformed() -> Error {
    Error::Unauthenticated(Reason::CredentialMalformed)
}

fn parse_basic(encoded: &str) -> Result<Authorization<'static>, Error> {
    let decoded = STANDARD.decode(encoded).map_err(|_| malformed())?;
    let text = String::from_utf8(decoded).map_err(|_| malformed())?;
    // The id is urlencoded, so the first colon is the separator.
    let (user, password) = text.split_once(':').ok_or_else(malformed)?;
    Ok(Authorization::Basic {
        user: form_urldecode(user)?,
        password: form_urldecode(password)?,
    })
}

/// `application/x-www-form-urlencoded` decoding of one value: `+` is a
/// space, `%XX` a byte. A stray `%` stays as it is, as form parsers do.
fn form_urldecode(text: &str) -> Result<String, Error> {
    let bytes = text.as_bytes();
    // Generated ids and secrets need no decoding: one copy, no byte loop.
    if !bytes.iter().any(|&b| b == b'+' || b == b'%') {
        return Ok(text.to_owned());
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match bytes.get(i + 1..i + 3).and_then(hex_byte) {
                Some(byte) => {
                    out.push(byte);
                    i += 2;
                }
                None => out.push(b'%'),
            },
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| malformed())
}

fn hex_byte(pair: &[u8]) -> Option<u8> {
    let digit = |b: u8| (b as char).to_digit(16);
    Some((digit(pair[0])? * 16 + digit(pair[1])?) as u8)
}

impl fmt::Debug for Authorization<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Authorization::Bearer(_) => f.write_str("Bearer(<redacted>)"),
            Authorization::Basic { user, .. } => f
                .debug_struct("Basic")
                .field("user", user)
                .field("password", &format_args!("<redacted>"))
                .finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(value: &str) -> Reason {
        match Authorization::parse(value) {
            Err(err) => err.reason(),
            Ok(parsed) => panic!("{value:?} parsed as {parsed:?}"),
        }
    }

    fn parsed(value: &str) -> Authorization<'_> {
        Authorization::parse(value).unwrap()
    }

    fn basic(raw: &str) -> String {
        format!("Basic {}", STANDARD.encode(raw))
    }

    #[test]
    fn bearer_in_any_case_with_any_spaces_and_tabs() {
        for value in [
            "Bearer abc.def",
            "bearer abc.def",
            "BEARER abc.def",
            "bEaReR abc.def",
            "Bearer   abc.def",
            "Bearer\tabc.def",
            "bearer \t abc.def",
            "  Bearer abc.def \t",
        ] {
            assert_eq!(parsed(value), Authorization::Bearer("abc.def"), "{value:?}");
        }
    }

    #[test]
    fn empty_or_scheme_only_is_missing() {
        for value in ["", "   ", "\t", "Bearer", "bearer   ", "Basic", "Basic \t"] {
            assert_eq!(reason(value), Reason::CredentialMissing, "{value:?}");
        }
    }

    #[test]
    fn other_schemes_and_bare_credentials_are_not_accepted() {
        for value in [
            "Token abc",
            "Digest username=\"a\"",
            "Bearerabc",
            "vel_0123456789abcdefghijABCDEFGHIJ01abcdef",
            "eyJhbGciOiJIUzI1NiJ9.e30.sig",
        ] {
            assert_eq!(
                reason(value),
                Reason::CredentialKindNotAccepted,
                "{value:?}"
            );
        }
    }

    #[test]
    fn more_than_one_token_is_malformed() {
        assert_eq!(reason("Bearer abc def"), Reason::CredentialMalformed);
        assert_eq!(reason("Basic YTpi YTpi"), Reason::CredentialMalformed);
    }

    #[test]
    fn basic_is_base64_of_urlencoded_id_and_secret() {
        assert_eq!(
            parsed(&basic("my%20app:s%3Acret+x")),
            Authorization::Basic {
                user: "my app".into(),
                password: "s:cret x".into(),
            }
        );
        let value = format!("BASIC\t {}", STANDARD.encode("id:"));
        assert_eq!(
            parsed(&value),
            Authorization::Basic {
                user: "id".into(),
                password: String::new(),
            },
            "scheme in any case; an empty secret is the client's business"
        );
        assert_eq!(
            parsed(&basic("a:b:c")),
            Authorization::Basic {
                user: "a".into(),
                password: "b:c".into(),
            },
            "the first colon separates"
        );
        assert_eq!(
            parsed(&basic("100%:x%2")),
            Authorization::Basic {
                user: "100%".into(),
                password: "x%2".into(),
            },
            "a stray percent sign is kept"
        );
    }

    #[test]
    fn bad_basic_credentials_are_malformed() {
        assert_eq!(reason("Basic !!!not-base64"), Reason::CredentialMalformed);
        assert_eq!(reason(&basic("no-colon")), Reason::CredentialMalformed);
        let not_utf8 = format!("Basic {}", STANDARD.encode([b'a', b':', 0xff, 0xfe]));
        assert_eq!(reason(&not_utf8), Reason::CredentialMalformed);
        assert_eq!(
            reason(&basic("id:%FF%FE")),
            Reason::CredentialMalformed,
            "percent-decoding to invalid UTF-8"
        );
    }

    #[test]
    fn bearer_or_bare_takes_the_token_with_or_without_its_scheme() {
        let token = |v| Authorization::bearer_or_bare(v).map_err(|e| e.reason());
        assert_eq!(token("vel_abc"), Ok("vel_abc"));
        assert_eq!(token("BEARER\tvel_abc"), Ok("vel_abc"));
        assert_eq!(token("Basic YTpi"), Err(Reason::CredentialKindNotAccepted));
        assert_eq!(
            token("Token vel_abc"),
            Err(Reason::CredentialKindNotAccepted)
        );
        assert_eq!(token("bearer"), Err(Reason::CredentialMissing));
        assert_eq!(token(""), Err(Reason::CredentialMissing));
    }

    #[test]
    fn raw_values_must_be_utf8() {
        assert_eq!(
            Authorization::from_bytes(b"Bearer abc").ok(),
            Some(Authorization::Bearer("abc"))
        );
        assert_eq!(
            Authorization::from_bytes(b"Bearer \xffabc").map_err(|e| e.reason()),
            Err(Reason::CredentialMalformed)
        );
    }

    #[test]
    fn debug_never_shows_a_secret() {
        let bearer = parsed("Bearer s3cret-token");
        assert!(!format!("{bearer:?}").contains("s3cret"));
        let value = basic("app:s3cret");
        let basic = parsed(&value);
        let shown = format!("{basic:?}");
        assert!(
            shown.contains("app") && !shown.contains("s3cret"),
            "{shown}"
        );
    }
}

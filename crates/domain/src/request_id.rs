//! The id that ties a request's log lines together: the caller's
//! `x-request-id` when it is one we can log safely, else a fresh UUID v7
//! (time-ordered, so ids sort like the log). Both adapters read and echo
//! it under the same header.

use std::fmt;

/// The header (and gRPC metadata key) carrying the id, both ways.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Longer ids are replaced: a header is not a place to store documents,
/// and every log line repeats it.
pub const MAX_REQUEST_ID_LEN: usize = 128;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestId(String);

impl RequestId {
    /// The caller's id when it is 1 to [`MAX_REQUEST_ID_LEN`] visible ASCII
    /// characters (no spaces or controls, so it cannot forge log lines or
    /// fields); otherwise a new one.
    pub fn from_header(value: Option<&[u8]>) -> RequestId {
        match value {
            Some(bytes)
                if !bytes.is_empty()
                    && bytes.len() <= MAX_REQUEST_ID_LEN
                    && bytes.iter().all(|b| b.is_ascii_graphic()) =>
            {
                RequestId(bytes.iter().map(|&b| char::from(b)).collect())
            }
            _ => RequestId::generate(),
        }
    }

    pub fn generate() -> RequestId {
        // Encoded into a buffer and copied once, rather than through
        // `Display` and the formatting machinery: one per request.
        let mut buffer = uuid::Uuid::encode_buffer();
        RequestId(
            uuid::Uuid::now_v7()
                .hyphenated()
                .encode_lower(&mut buffer)
                .to_owned(),
        )
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_a_safe_id_and_replaces_anything_else() {
        assert_eq!(
            RequestId::from_header(Some(b"req-42_a.b:c/d")).as_str(),
            "req-42_a.b:c/d"
        );
        let long = vec![b'a'; MAX_REQUEST_ID_LEN];
        assert_eq!(
            RequestId::from_header(Some(&long)).as_str().len(),
            MAX_REQUEST_ID_LEN
        );
        let too_long = vec![b'a'; MAX_REQUEST_ID_LEN + 1];
        for bad in [
            &b""[..],
            b"has space",
            b"line\nbreak",
            b"tab\t",
            "caf\u{e9}".as_bytes(),
            b"\x1b[31m",
            &too_long,
        ] {
            let id = RequestId::from_header(Some(bad));
            assert_ne!(id.as_str().as_bytes(), bad);
            assert!(uuid::Uuid::parse_str(id.as_str()).is_ok(), "{id}");
        }
        let made = RequestId::from_header(None);
        assert_eq!(
            uuid::Uuid::parse_str(made.as_str())
                .unwrap()
                .get_version_num(),
            7
        );
    }
}

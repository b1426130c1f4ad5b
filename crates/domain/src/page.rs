//! Listings come in pages: a caller asks for up to `page_size` items after
//! an opaque `page_token`, and gets a token for the next page whenever more
//! remain, so no listing is ever cut short without saying so.
//!
//! A token is the sort key of the last item returned (keyset paging), not an
//! offset: items inserted while a caller pages through never shift a later
//! page, so nothing is skipped or repeated.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::error::Error;
use crate::service::limits::MAX_ID_LEN;

/// Items per page when the caller does not say.
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// The most items one page may hold.
pub const MAX_PAGE_SIZE: usize = 1000;

/// Where a listing resumes: after the item with this sort key. Listings
/// ordered by a time then an id use both; those ordered by a name alone
/// leave `at` at zero.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageCursor {
    pub at: i64,
    pub key: String,
}

impl PageCursor {
    pub fn new(at: i64, key: impl Into<String>) -> Self {
        PageCursor {
            at,
            key: key.into(),
        }
    }

    /// The opaque page token callers pass back.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}:{}", self.at, self.key))
    }

    pub fn decode(token: &str) -> Result<Self, Error> {
        let invalid = || Error::invalid("page_token is not one this service issued");
        if token.len() > 4 * MAX_ID_LEN {
            return Err(invalid());
        }
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
        let text = String::from_utf8(bytes).map_err(|_| invalid())?;
        let (at, key) = text.split_once(':').ok_or_else(invalid)?;
        let at = at.parse().map_err(|_| invalid())?;
        if key.is_empty() || key.len() > MAX_ID_LEN {
            return Err(invalid());
        }
        Ok(PageCursor::new(at, key))
    }
}

/// Which page a caller wants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageRequest {
    pub size: usize,
    pub after: Option<PageCursor>,
}

impl PageRequest {
    /// The first page of the default size.
    pub fn first() -> Self {
        PageRequest {
            size: DEFAULT_PAGE_SIZE,
            after: None,
        }
    }

    /// From a caller's `page_size` (0: the default; above the maximum: the
    /// maximum) and `page_token` (empty: the first page).
    pub fn parse(page_size: i64, page_token: &str) -> Result<Self, Error> {
        let size = match page_size {
            0 => DEFAULT_PAGE_SIZE,
            n if n < 0 => return Err(Error::invalid("page_size must not be negative")),
            n => usize::try_from(n)
                .unwrap_or(MAX_PAGE_SIZE)
                .min(MAX_PAGE_SIZE),
        };
        let after = match page_token.trim() {
            "" => None,
            token => Some(PageCursor::decode(token)?),
        };
        Ok(PageRequest { size, after })
    }

    /// How many rows storage should return: one more than the page, to
    /// tell whether another page follows.
    pub fn fetch_limit(&self) -> i64 {
        i64::try_from(self.size)
            .unwrap_or(i64::MAX)
            .saturating_add(1)
    }
}

/// One page of a listing, and where the next one starts if there is one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<PageCursor>,
}

impl<T> Page<T> {
    /// From up to `request.fetch_limit()` rows in listing order.
    pub fn from_rows(
        mut rows: Vec<T>,
        request: &PageRequest,
        cursor_of: impl Fn(&T) -> PageCursor,
    ) -> Self {
        let more = rows.len() > request.size;
        rows.truncate(request.size);
        let next = if more {
            rows.last().map(cursor_of)
        } else {
            None
        };
        Page { items: rows, next }
    }

    /// The token for the next page; empty on the last one.
    pub fn next_page_token(&self) -> String {
        self.next
            .as_ref()
            .map(PageCursor::encode)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_refuse_forgeries() {
        let cursor = PageCursor::new(1_700_000_000_000, "0199a3f2-key");
        assert_eq!(PageCursor::decode(&cursor.encode()).unwrap(), cursor);
        for bad in ["%%%", "bm90LWEtY3Vyc29y", "OmtleQ", "eDprZXk", "MTI6"] {
            assert!(PageCursor::decode(bad).is_err(), "{bad}");
        }
        assert!(PageCursor::decode(&"A".repeat(10_000)).is_err());
    }

    #[test]
    fn sizes_default_and_cap() {
        assert_eq!(PageRequest::parse(0, "").unwrap().size, DEFAULT_PAGE_SIZE);
        assert_eq!(PageRequest::parse(5, "").unwrap().size, 5);
        assert_eq!(
            PageRequest::parse(1_000_000, "").unwrap().size,
            MAX_PAGE_SIZE
        );
        assert!(PageRequest::parse(-1, "").is_err());
        assert!(PageRequest::parse(10, "garbage!").is_err());
    }

    #[test]
    fn a_page_says_whether_more_follow() {
        let request = PageRequest::parse(2, "").unwrap();
        let cursor = |n: &i64| PageCursor::new(*n, n.to_string());
        let full = Page::from_rows(vec![1, 2, 3], &request, cursor);
        assert_eq!(full.items, vec![1, 2]);
        assert_eq!(full.next, Some(PageCursor::new(2, "2")));
        let last = Page::from_rows(vec![1, 2], &request, cursor);
        assert_eq!(last.next, None);
        assert_eq!(last.next_page_token(), "");
    }
}

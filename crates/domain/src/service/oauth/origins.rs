//! Browser origins of registered redirect URIs, for CORS on the token,
//! revocation and metadata URLs. A redirect URI's origin is
//! `scheme://host[:port]` of an `https` or loopback `http` URI; private-use
//! schemes (native apps) have none. The set is read from storage at most once
//! per `ORIGIN_CACHE_SECS` (by the service's clock), and dropped at once when
//! this process registers or deletes an app; another replica's change shows
//! within that time.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use crate::clock::Timestamp;
use crate::error::Error;
use crate::oauth::OAuthApp;
use crate::page::{MAX_PAGE_SIZE, PageRequest};
use crate::service::Service;

/// How long the origin set is served before storage is asked again.
pub const ORIGIN_CACHE_SECS: i64 = 30;

#[derive(Default)]
pub(crate) struct OriginCache {
    loaded: Mutex<Option<(Timestamp, Arc<HashSet<String>>)>>,
}

impl OriginCache {
    fn fresh(&self, now: Timestamp) -> Option<Arc<HashSet<String>>> {
        let guard = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        match &*guard {
            Some((at, set)) if now.as_secs() < at.as_secs() + ORIGIN_CACHE_SECS => {
                Some(set.clone())
            }
            _ => None,
        }
    }

    fn store(&self, now: Timestamp, set: Arc<HashSet<String>>) {
        *self.loaded.lock().unwrap_or_else(|e| e.into_inner()) = Some((now, set));
    }

    pub(crate) fn clear(&self) {
        *self.loaded.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// The browser origin of a redirect URI, if it has one a page can run in.
pub fn redirect_uri_origin(uri: &str) -> Option<String> {
    let url = url::Url::parse(uri).ok()?;
    match url.scheme() {
        "https" | "http" => Some(url.origin().ascii_serialization()),
        _ => None,
    }
}

impl Service {
    /// Whether `origin` (as a browser sends it in `Origin`) is the origin of
    /// some registered app's redirect URI.
    pub async fn is_registered_origin(&self, origin: &str) -> Result<bool, Error> {
        let now = self.clock.now();
        let set = match self.origin_cache.fresh(now) {
            Some(set) => set,
            None => {
                let set = Arc::new(self.load_registered_origins().await?);
                self.origin_cache.store(now, set.clone());
                set
            }
        };
        Ok(set.contains(origin))
    }

    async fn load_registered_origins(&self) -> Result<HashSet<String>, Error> {
        let mut origins = HashSet::new();
        let mut page = PageRequest {
            size: MAX_PAGE_SIZE,
            after: None,
        };
        loop {
            let found = self.list_apps_unchecked(None, &page).await?;
            origins.extend(
                found
                    .items
                    .iter()
                    .flat_map(|app: &OAuthApp| app.redirect_uris.iter())
                    .filter_map(|uri| redirect_uri_origin(uri)),
            );
            match found.next {
                Some(next) => page.after = Some(next),
                None => return Ok(origins),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::redirect_uri_origin;

    #[test]
    fn origins_of_redirect_uris() {
        let cases = [
            (
                "https://app.example.com/cb?x=1",
                Some("https://app.example.com"),
            ),
            (
                "https://app.example.com:8443/cb",
                Some("https://app.example.com:8443"),
            ),
            (
                "https://app.example.com:443/cb",
                Some("https://app.example.com"),
            ),
            ("http://127.0.0.1:5173/cb", Some("http://127.0.0.1:5173")),
            ("com.example.app:/cb", None),
            ("not a url", None),
        ];
        for (uri, origin) in cases {
            assert_eq!(redirect_uri_origin(uri).as_deref(), origin, "{uri}");
        }
    }
}

//! Registered apps through the verification cache: every grant, consent
//! and introspection authenticates its client, and apps rarely change.
//! Changes reach every replica through the invalidation log
//! ([`Invalidation::App`](crate::invalidation::Invalidation::App), written
//! with the change), the cache's TTL bounding a late one.

use std::sync::Arc;

use crate::error::Error;
use crate::oauth::{ClientId, OAuthApp};
use crate::service::Service;

impl Service {
    /// The app, cached; unknown ids are not cached, so registering an app
    /// needs no invalidation (and a flood of unknown ids is the client
    /// throttle's business).
    pub(super) async fn cached_app(
        &self,
        client_id: &ClientId,
    ) -> Result<Option<Arc<OAuthApp>>, Error> {
        if let Some(hit) = self.cache.app(client_id) {
            return Ok(Some(hit));
        }
        self.count_lookup();
        let generation = self.cache.app_generation();
        let found = self.store.app(client_id).await?.map(Arc::new);
        if let Some(app) = &found {
            self.cache.put_app(app.clone(), generation);
        }
        Ok(found)
    }
}

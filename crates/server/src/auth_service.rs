//! `velocity.auth.v1.AuthService` over the domain's use-cases.

use tonic::{Request, Response, Status};
use tracing::instrument;
use velocity_domain::oauth::{ClientId, FamilyId};
use velocity_domain::page::PageRequest;
use velocity_domain::service::{ClientAuth, NewKey};
use velocity_domain::{ApiKeyId, KeyKind, Principal, Service};
use velocity_proto::convert::{from_timestamp, timestamp};
use velocity_proto::pb;

use crate::metadata::bearer_token;
use crate::status::to_status;

pub struct AuthApi {
    service: Service,
}

impl AuthApi {
    pub fn new(service: Service) -> Self {
        AuthApi { service }
    }

    /// The signed-in user behind a management call, from `authorization`.
    async fn caller<T>(&self, request: &Request<T>) -> Result<Principal, Status> {
        let token = bearer_token(request.metadata()).map_err(to_status)?;
        self.service.caller(token).await.map_err(to_status)
    }
}

#[tonic::async_trait]
impl pb::auth_service_server::AuthService for AuthApi {
    // Debug level: no span on the hot path at the default log level.
    #[instrument(level = "debug", skip_all)]
    async fn authenticate(
        &self,
        request: Request<pb::AuthenticateRequest>,
    ) -> Result<Response<pb::AuthenticateResponse>, Status> {
        let req = request.into_inner();
        let slug = (!req.workspace_slug.is_empty()).then_some(req.workspace_slug.as_str());
        // Counted against the credential's budget: over it, the status is
        // RESOURCE_EXHAUSTED with RetryInfo.
        let (principal, budget) = self
            .service
            .authenticate_counted(&req.credential, slug, &req.required_scopes)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::AuthenticateResponse {
            principal: Some(principal.into()),
            rate_limit: budget.map(Into::into),
        }))
    }

    #[instrument(skip_all)]
    async fn create_key(
        &self,
        request: Request<pb::CreateKeyRequest>,
    ) -> Result<Response<pb::CreateKeyResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let kind = pb::KeyKind::try_from(req.kind)
            .ok()
            .and_then(|k| KeyKind::try_from(k).ok())
            .ok_or_else(|| {
                to_status(velocity_domain::Error::invalid(
                    "kind must be WORKSPACE or PERSONAL",
                ))
            })?;
        let (key, secret) = self
            .service
            .create_key(
                &caller,
                NewKey {
                    kind,
                    workspace_slug: Some(req.workspace_slug),
                    name: req.name,
                    scopes: req.scopes,
                    expires_at: req.expires_at.as_ref().map(from_timestamp),
                },
            )
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::CreateKeyResponse {
            key: Some(key.into()),
            secret: secret.expose().to_owned(),
        }))
    }

    #[instrument(skip_all)]
    async fn revoke_key(
        &self,
        request: Request<pb::RevokeKeyRequest>,
    ) -> Result<Response<pb::RevokeKeyResponse>, Status> {
        let caller = self.caller(&request).await?;
        let key_id = ApiKeyId(request.into_inner().key_id);
        let revoked_at = self
            .service
            .revoke_key(&caller, &key_id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::RevokeKeyResponse {
            revoked_at: Some(timestamp(revoked_at)),
        }))
    }

    #[instrument(skip_all)]
    async fn list_keys(
        &self,
        request: Request<pb::ListKeysRequest>,
    ) -> Result<Response<pb::ListKeysResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let page = PageRequest::parse(req.page_size.into(), &req.page_token).map_err(to_status)?;
        let keys = self
            .service
            .list_keys(
                &caller,
                Some(&req.workspace_slug),
                req.include_revoked,
                &page,
            )
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::ListKeysResponse {
            next_page_token: keys.next_page_token(),
            keys: keys.items.into_iter().map(Into::into).collect(),
        }))
    }

    #[instrument(skip_all)]
    async fn list_grants(
        &self,
        request: Request<pb::ListGrantsRequest>,
    ) -> Result<Response<pb::ListGrantsResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let page = PageRequest::parse(req.page_size.into(), &req.page_token).map_err(to_status)?;
        let grants = self
            .service
            .list_grants(&caller, Some(&req.workspace_slug), &page)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::ListGrantsResponse {
            next_page_token: grants.next_page_token(),
            grants: grants.items.into_iter().map(Into::into).collect(),
        }))
    }

    #[instrument(skip_all)]
    async fn revoke_grant(
        &self,
        request: Request<pb::RevokeGrantRequest>,
    ) -> Result<Response<pb::RevokeGrantResponse>, Status> {
        let caller = self.caller(&request).await?;
        let grant_id = FamilyId(request.into_inner().grant_id);
        let revoked_at = self
            .service
            .revoke_grant(&caller, &grant_id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::RevokeGrantResponse {
            revoked_at: Some(timestamp(revoked_at)),
        }))
    }

    #[instrument(skip_all)]
    async fn exchange_code(
        &self,
        request: Request<pb::ExchangeCodeRequest>,
    ) -> Result<Response<pb::TokenResponse>, Status> {
        // The connection's peer: failed client authentications count by it.
        let address = request.remote_addr().map(|a| a.ip());
        let req = request.into_inner();
        let client = ClientAuth {
            client_id: ClientId(req.client_id),
            client_secret: req.client_secret,
            address,
        };
        let tokens = self
            .service
            .exchange_code(&client, &req.code, &req.redirect_uri, &req.code_verifier)
            .await
            .map_err(to_status)?;
        Ok(Response::new(tokens.into()))
    }

    #[instrument(skip_all)]
    async fn refresh_token(
        &self,
        request: Request<pb::RefreshTokenRequest>,
    ) -> Result<Response<pb::TokenResponse>, Status> {
        let address = request.remote_addr().map(|a| a.ip());
        let req = request.into_inner();
        let client = ClientAuth {
            client_id: ClientId(req.client_id),
            client_secret: req.client_secret,
            address,
        };
        let tokens = self
            .service
            .refresh(&client, &req.refresh_token, None)
            .await
            .map_err(to_status)?;
        Ok(Response::new(tokens.into()))
    }
}

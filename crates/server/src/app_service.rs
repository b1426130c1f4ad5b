//! `velocity.auth.v1.OAuthAppService`: third-party apps, managed by the
//! operator (the admin token) or by a workspace's owners and admins (a
//! session, or a personal key holding `admin`). Which one is calling is
//! settled once per call, in [`OAuthAppApi::manager`]; what each may do is
//! the domain's business.

use tonic::{Request, Response, Status};
use tracing::instrument;
use velocity_domain::admin::AdminToken;
use velocity_domain::oauth::{ClientId, ClientType};
use velocity_domain::page::PageRequest;
use velocity_domain::service::{AppChanges, AppManager, NewApp};
use velocity_domain::{Error, Service};
use velocity_proto::convert::timestamp;
use velocity_proto::pb;

use crate::metadata::bearer_token;
use crate::status::to_status;

pub struct OAuthAppApi {
    service: Service,
    admin_token: AdminToken,
}

impl OAuthAppApi {
    pub fn new(service: Service, admin_token: AdminToken) -> Self {
        OAuthAppApi {
            service,
            admin_token,
        }
    }

    /// The operator when the bearer token is the admin token (compared in
    /// constant time); otherwise the signed-in user it stands for.
    async fn manager<T>(&self, request: &Request<T>) -> Result<AppManager, Status> {
        let token = bearer_token(request.metadata()).map_err(to_status)?;
        if self.admin_token.check(token).is_ok() {
            return Ok(AppManager::Operator);
        }
        let caller = self.service.caller(token).await.map_err(to_status)?;
        Ok(AppManager::Member(caller))
    }
}

/// A request's client type: unspecified means `unspecified`'s answer.
fn client_type(value: i32, unspecified: Option<ClientType>) -> Result<Option<ClientType>, Status> {
    match pb::ClientType::try_from(value) {
        Ok(pb::ClientType::Unspecified) => Ok(unspecified),
        Ok(pb::ClientType::Public) => Ok(Some(ClientType::Public)),
        Ok(pb::ClientType::Confidential) => Ok(Some(ClientType::Confidential)),
        Err(_) => Err(to_status(Error::invalid(
            "client_type must be PUBLIC or CONFIDENTIAL",
        ))),
    }
}

#[tonic::async_trait]
impl pb::o_auth_app_service_server::OAuthAppService for OAuthAppApi {
    #[instrument(skip_all)]
    async fn register_app(
        &self,
        request: Request<pb::RegisterAppRequest>,
    ) -> Result<Response<pb::RegisterAppResponse>, Status> {
        let manager = self.manager(&request).await?;
        let req = request.into_inner();
        let client_type =
            client_type(req.client_type, Some(ClientType::Public))?.unwrap_or(ClientType::Public);
        let (app, secret) = self
            .service
            .register_app(
                &manager,
                NewApp {
                    workspace_slug: Some(req.workspace_slug),
                    name: req.name,
                    redirect_uris: req.redirect_uris,
                    scopes: req.allowed_scopes,
                    client_type,
                },
            )
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::RegisterAppResponse {
            app: Some(app.into()),
            client_secret: secret.expose().to_owned(),
        }))
    }

    #[instrument(skip_all)]
    async fn list_apps(
        &self,
        request: Request<pb::ListAppsRequest>,
    ) -> Result<Response<pb::ListAppsResponse>, Status> {
        let manager = self.manager(&request).await?;
        let req = request.into_inner();
        let page = PageRequest::parse(req.page_size.into(), &req.page_token).map_err(to_status)?;
        let apps = self
            .service
            .list_apps(&manager, Some(&req.workspace_slug), &page)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::ListAppsResponse {
            next_page_token: apps.next_page_token(),
            apps: apps.items.into_iter().map(Into::into).collect(),
        }))
    }

    #[instrument(skip_all)]
    async fn update_app(
        &self,
        request: Request<pb::UpdateAppRequest>,
    ) -> Result<Response<pb::OAuthApp>, Status> {
        let manager = self.manager(&request).await?;
        let req = request.into_inner();
        let changes = AppChanges {
            name: req.name,
            redirect_uris: (!req.redirect_uris.is_empty()).then_some(req.redirect_uris),
            scopes: (!req.allowed_scopes.is_empty()).then_some(req.allowed_scopes),
            client_type: client_type(req.client_type, None)?,
        };
        let app = self
            .service
            .update_app(&manager, &ClientId(req.client_id), changes)
            .await
            .map_err(to_status)?;
        Ok(Response::new(app.into()))
    }

    #[instrument(skip_all)]
    async fn rotate_app_secret(
        &self,
        request: Request<pb::RotateAppSecretRequest>,
    ) -> Result<Response<pb::RotateAppSecretResponse>, Status> {
        let manager = self.manager(&request).await?;
        let req = request.into_inner();
        let (secret, previous) = self
            .service
            .rotate_app_secret(
                &manager,
                &ClientId(req.client_id),
                req.overlap_seconds.into(),
            )
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::RotateAppSecretResponse {
            client_secret: secret.expose().to_owned(),
            previous_secret_expires_at: previous.map(|p| timestamp(p.until)),
        }))
    }

    #[instrument(skip_all)]
    async fn delete_app(
        &self,
        request: Request<pb::DeleteAppRequest>,
    ) -> Result<Response<pb::DeleteAppResponse>, Status> {
        let manager = self.manager(&request).await?;
        self.service
            .delete_app(&manager, &ClientId(request.into_inner().client_id))
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::DeleteAppResponse {}))
    }
}

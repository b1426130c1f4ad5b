//! `velocity.auth.v1.OAuthAppService`: registering third-party apps, with
//! the admin token (checked by [`crate::admin::RequireAdmin`] before any
//! handler runs).

use tonic::{Request, Response, Status};
use tracing::instrument;
use velocity_domain::oauth::{ClientId, ClientType};
use velocity_domain::page::PageRequest;
use velocity_domain::{Error, Service};
use velocity_proto::pb;

use crate::status::to_status;

pub struct OAuthAppApi {
    service: Service,
}

impl OAuthAppApi {
    pub fn new(service: Service) -> Self {
        OAuthAppApi { service }
    }
}

#[tonic::async_trait]
impl pb::o_auth_app_service_server::OAuthAppService for OAuthAppApi {
    #[instrument(skip_all)]
    async fn register_app(
        &self,
        request: Request<pb::RegisterAppRequest>,
    ) -> Result<Response<pb::RegisterAppResponse>, Status> {
        let req = request.into_inner();
        let client_type = match pb::ClientType::try_from(req.client_type) {
            Ok(pb::ClientType::Public) => ClientType::Public,
            Ok(pb::ClientType::Confidential) => ClientType::Confidential,
            _ => {
                return Err(to_status(Error::invalid(
                    "client_type must be PUBLIC or CONFIDENTIAL",
                )));
            }
        };
        let (app, secret) = self
            .service
            .register_app(
                &req.name,
                req.redirect_uris,
                &req.allowed_scopes,
                client_type,
            )
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::RegisterAppResponse {
            app: Some(app.into()),
            client_secret: secret.map(|s| s.expose().to_owned()).unwrap_or_default(),
        }))
    }

    #[instrument(skip_all)]
    async fn list_apps(
        &self,
        request: Request<pb::ListAppsRequest>,
    ) -> Result<Response<pb::ListAppsResponse>, Status> {
        let req = request.into_inner();
        let page = PageRequest::parse(req.page_size.into(), &req.page_token).map_err(to_status)?;
        let apps = self.service.list_apps(&page).await.map_err(to_status)?;
        Ok(Response::new(pb::ListAppsResponse {
            next_page_token: apps.next_page_token(),
            apps: apps.items.into_iter().map(Into::into).collect(),
        }))
    }

    #[instrument(skip_all)]
    async fn rotate_app_secret(
        &self,
        request: Request<pb::RotateAppSecretRequest>,
    ) -> Result<Response<pb::RotateAppSecretResponse>, Status> {
        let secret = self
            .service
            .rotate_app_secret(&ClientId(request.into_inner().client_id))
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::RotateAppSecretResponse {
            client_secret: secret.expose().to_owned(),
        }))
    }

    #[instrument(skip_all)]
    async fn delete_app(
        &self,
        request: Request<pb::DeleteAppRequest>,
    ) -> Result<Response<pb::DeleteAppResponse>, Status> {
        self.service
            .delete_app(&ClientId(request.into_inner().client_id))
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::DeleteAppResponse {}))
    }
}

//! `velocity.auth.v1.DirectoryService`: the main app keeps users, workspaces
//! and memberships in sync through it, with the configured admin token
//! (checked by [`crate::admin::RequireAdmin`] before any handler runs).

use tonic::{Request, Response, Status};
use tracing::instrument;
use velocity_domain::page::PageRequest;
use velocity_domain::{Error, Membership, Service, UserId};
use velocity_proto::convert::timestamp;
use velocity_proto::pb;

use crate::status::to_status;

pub struct DirectoryApi {
    service: Service,
}

impl DirectoryApi {
    pub fn new(service: Service) -> Self {
        DirectoryApi { service }
    }
}

fn membership(m: Membership) -> pb::Membership {
    pb::Membership {
        workspace_id: m.workspace.id.0,
        workspace_slug: m.workspace.slug,
        user_id: m.user_id.0,
        role: m.role.as_str().to_owned(),
    }
}

#[tonic::async_trait]
impl pb::directory_service_server::DirectoryService for DirectoryApi {
    #[instrument(skip_all)]
    async fn create_user(
        &self,
        request: Request<pb::CreateUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let req = request.into_inner();
        let user = self
            .service
            .create_user(Some(req.id), &req.email, &req.name)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::User {
            id: user.id.0,
            email: user.email,
            name: user.name,
            created_at: Some(timestamp(user.created_at)),
        }))
    }

    #[instrument(skip_all)]
    async fn create_workspace(
        &self,
        request: Request<pb::CreateWorkspaceRequest>,
    ) -> Result<Response<pb::Workspace>, Status> {
        let req = request.into_inner();
        let ws = self
            .service
            .create_workspace(&req.slug, &req.name)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::Workspace {
            id: ws.id.0,
            slug: ws.slug,
            name: ws.name,
            created_at: Some(timestamp(ws.created_at)),
        }))
    }

    #[instrument(skip_all)]
    async fn set_membership(
        &self,
        request: Request<pb::SetMembershipRequest>,
    ) -> Result<Response<pb::Membership>, Status> {
        let req = request.into_inner();
        let m = self
            .service
            .set_membership(&req.workspace_slug, &UserId(req.user_id), &req.role)
            .await
            .map_err(to_status)?;
        Ok(Response::new(membership(m)))
    }

    #[instrument(skip_all)]
    async fn remove_membership(
        &self,
        request: Request<pb::RemoveMembershipRequest>,
    ) -> Result<Response<pb::RemoveMembershipResponse>, Status> {
        let req = request.into_inner();
        self.service
            .remove_membership(&req.workspace_slug, &UserId(req.user_id))
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::RemoveMembershipResponse {}))
    }

    #[instrument(skip_all)]
    async fn list_memberships(
        &self,
        request: Request<pb::ListMembershipsRequest>,
    ) -> Result<Response<pb::ListMembershipsResponse>, Status> {
        let req = request.into_inner();
        let page = PageRequest::parse(req.page_size.into(), &req.page_token).map_err(to_status)?;
        let list = match (req.workspace_slug.is_empty(), req.user_id.is_empty()) {
            (false, true) => {
                self.service
                    .memberships_of_workspace(&req.workspace_slug, &page)
                    .await
            }
            (true, false) => {
                self.service
                    .memberships_of_user(&UserId(req.user_id), &page)
                    .await
            }
            _ => Err(Error::invalid(
                "give exactly one of workspace_slug and user_id",
            )),
        }
        .map_err(to_status)?;
        Ok(Response::new(pb::ListMembershipsResponse {
            next_page_token: list.next_page_token(),
            memberships: list.items.into_iter().map(membership).collect(),
        }))
    }
}

//! `velocity.auth.v1.DirectoryService`: the main app keeps users, workspaces
//! and memberships in sync through it, with the configured admin token.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::{Request, Response, Status};
use tracing::instrument;
use velocity_domain::{Error, Membership, Reason, Service, UserId};
use velocity_proto::convert::timestamp;
use velocity_proto::pb;

use crate::status::to_status;

/// The admin token, kept only as a digest and compared in constant time.
#[derive(Clone)]
pub struct AdminToken(Option<[u8; 32]>);

impl AdminToken {
    /// `None` disables every admin call.
    pub fn new(token: Option<&str>) -> Self {
        AdminToken(
            token
                .filter(|t| !t.is_empty())
                .map(|t| Sha256::digest(t.as_bytes()).into()),
        )
    }

    pub fn check(&self, presented: &str) -> Result<(), Error> {
        let presented = presented.trim();
        let presented = presented
            .strip_prefix("Bearer ")
            .or_else(|| presented.strip_prefix("bearer "))
            .unwrap_or(presented);
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        match &self.0 {
            Some(expected) if bool::from(expected.ct_eq(&digest)) => Ok(()),
            _ => Err(Error::Unauthenticated(Reason::AdminTokenInvalid)),
        }
    }

    pub fn check_request<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        self.check(presented).map_err(to_status)
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "AdminToken(<redacted>)"
        } else {
            "AdminToken(disabled)"
        })
    }
}

pub struct DirectoryApi {
    service: Service,
    admin: AdminToken,
}

impl DirectoryApi {
    pub fn new(service: Service, admin: AdminToken) -> Self {
        DirectoryApi { service, admin }
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
        self.admin.check_request(&request)?;
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
        self.admin.check_request(&request)?;
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
        self.admin.check_request(&request)?;
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
        self.admin.check_request(&request)?;
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
        self.admin.check_request(&request)?;
        let req = request.into_inner();
        let list = match (req.workspace_slug.is_empty(), req.user_id.is_empty()) {
            (false, true) => {
                self.service
                    .memberships_of_workspace(&req.workspace_slug)
                    .await
            }
            (true, false) => self.service.memberships_of_user(&UserId(req.user_id)).await,
            _ => Err(Error::invalid(
                "give exactly one of workspace_slug and user_id",
            )),
        }
        .map_err(to_status)?;
        Ok(Response::new(pb::ListMembershipsResponse {
            memberships: list.into_iter().map(membership).collect(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_token_checks() {
        let token = AdminToken::new(Some("s3cret-admin-token"));
        assert!(token.check("s3cret-admin-token").is_ok());
        assert!(token.check("Bearer s3cret-admin-token").is_ok());
        assert!(token.check("s3cret-admin-tokeN").is_err());
        assert!(token.check("").is_err());
        assert!(!format!("{token:?}").contains("s3cret"));
        let disabled = AdminToken::new(None);
        assert!(disabled.check("").is_err());
        assert!(disabled.check("anything").is_err());
    }
}

use crate::directory::{Membership, Role, User, UserId, Workspace, WorkspaceId, is_valid_slug};
use crate::error::{Error, Reason};
use crate::page::{Page, PageCursor, PageRequest};

use super::{Service, check_name, limits};

impl Service {
    /// The user's membership in the workspace `slug` if they own or
    /// administer it: who manages its keys, apps and grants.
    pub(crate) async fn administered_workspace(
        &self,
        user: &UserId,
        slug: &str,
    ) -> Result<Membership, Error> {
        let membership = self
            .store
            .membership_by_slug(user, slug)
            .await?
            .ok_or(Error::PermissionDenied(Reason::NotAMember))?;
        if !membership.role.manages_keys() {
            return Err(Error::PermissionDenied(Reason::RoleInsufficient));
        }
        Ok(membership)
    }

    pub async fn create_user(
        &self,
        id: Option<String>,
        email: &str,
        name: &str,
    ) -> Result<User, Error> {
        let id = match id.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()) {
            Some(id)
                if id.len() > limits::MAX_ID_LEN
                    || id.chars().any(|c| c.is_control() || c.is_whitespace()) =>
            {
                return Err(Error::invalid(
                    "user id must be at most 128 printable characters",
                ));
            }
            Some(id) => UserId(id),
            None => UserId::generate(),
        };
        let email = email.trim();
        if email.len() > limits::MAX_EMAIL_LEN || !email.contains('@') {
            return Err(Error::invalid("email must be an address"));
        }
        let name = if name.trim().is_empty() {
            email
        } else {
            check_name(name)?
        };
        let user = User {
            id,
            email: email.to_owned(),
            name: name.to_owned(),
            created_at: self.clock.now(),
        };
        self.store.insert_user(&user).await?;
        Ok(user)
    }

    pub async fn create_workspace(&self, slug: &str, name: &str) -> Result<Workspace, Error> {
        let slug = slug.trim();
        if !is_valid_slug(slug) {
            return Err(Error::invalid(
                "slug must be 1 to 64 of a-z, 0-9 and '-', not starting or ending with '-'",
            ));
        }
        let name = if name.trim().is_empty() {
            slug
        } else {
            check_name(name)?
        };
        let workspace = Workspace {
            id: WorkspaceId::generate(),
            slug: slug.to_owned(),
            name: name.to_owned(),
            created_at: self.clock.now(),
        };
        self.store.insert_workspace(&workspace).await?;
        Ok(workspace)
    }

    pub async fn set_membership(
        &self,
        slug: &str,
        user: &UserId,
        role: &str,
    ) -> Result<Membership, Error> {
        let role: Role = role
            .parse()
            .map_err(|e: crate::directory::UnknownRole| Error::invalid(e.to_string()))?;
        let workspace = self.workspace(slug).await?;
        if self.store.user(user).await?.is_none() {
            return Err(Error::NotFound("user"));
        }
        self.store
            .upsert_membership(&workspace.id, user, role)
            .await?;
        self.after_change().await;
        Ok(Membership {
            workspace,
            user_id: user.clone(),
            role,
        })
    }

    pub async fn remove_membership(&self, slug: &str, user: &UserId) -> Result<(), Error> {
        let workspace = self.workspace(slug).await?;
        if !self.store.delete_membership(&workspace.id, user).await? {
            return Err(Error::NotFound("membership"));
        }
        self.after_change().await;
        Ok(())
    }

    pub async fn memberships_of_workspace(
        &self,
        slug: &str,
        page: &PageRequest,
    ) -> Result<Page<Membership>, Error> {
        let workspace = self.workspace(slug).await?;
        let rows = self
            .store
            .memberships_of_workspace(&workspace.id, page)
            .await?;
        Ok(Page::from_rows(rows, page, |m| {
            PageCursor::new(0, m.user_id.as_str())
        }))
    }

    pub async fn memberships_of_user(
        &self,
        user: &UserId,
        page: &PageRequest,
    ) -> Result<Page<Membership>, Error> {
        let rows = self.store.memberships_of_user(user, page).await?;
        Ok(Page::from_rows(rows, page, |m| {
            PageCursor::new(0, m.workspace.slug.as_str())
        }))
    }

    pub async fn workspace(&self, slug: &str) -> Result<Workspace, Error> {
        let slug = slug.trim();
        if !is_valid_slug(slug) {
            return Err(Error::InvalidArgument(
                Reason::WorkspaceUnknown,
                "invalid workspace slug".into(),
            ));
        }
        self.store
            .workspace_by_slug(slug)
            .await?
            .ok_or(Error::NotFound("workspace"))
    }
}

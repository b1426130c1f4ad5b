//! The admin token guards whole services, not handlers: [`RequireAdmin`]
//! wraps `DirectoryService` where it is assembled, so an RPC added to it
//! cannot forget the check. (`OAuthAppService` also serves workspace
//! admins, so it tells its callers apart per call.)

use tonic::service::Interceptor;
use tonic::{Request, Status};
use velocity_domain::admin::AdminToken;

use crate::metadata::bearer_token;
use crate::status::to_status;

/// Refuses a call without the admin token as its bearer token.
#[derive(Clone, Debug)]
pub struct RequireAdmin(AdminToken);

impl RequireAdmin {
    pub fn new(token: AdminToken) -> Self {
        RequireAdmin(token)
    }
}

impl Interceptor for RequireAdmin {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        // A missing or unreadable header is checked as an empty token, so
        // every refusal is the same ADMIN_TOKEN_INVALID, compared in
        // constant time like the rest.
        let presented = bearer_token(request.metadata()).unwrap_or_default();
        self.0.check(presented).map_err(to_status)?;
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;
    use tonic_types::StatusExt;

    fn call(admin: &mut RequireAdmin, authorization: Option<&str>) -> Result<(), Status> {
        let mut request = Request::new(());
        if let Some(value) = authorization {
            request
                .metadata_mut()
                .insert("authorization", value.parse().unwrap());
        }
        admin.call(request).map(drop)
    }

    #[test]
    fn only_the_admin_token_passes() {
        let mut admin = RequireAdmin::new(AdminToken::new(Some("s3cret-admin")));
        assert!(call(&mut admin, Some("Bearer s3cret-admin")).is_ok());
        assert!(call(&mut admin, Some("bearer\ts3cret-admin")).is_ok());
        assert!(call(&mut admin, Some("s3cret-admin")).is_ok());
        for refused in [
            None,
            Some("Bearer s3cret-admiN"),
            Some("Basic czNjcmV0LWFkbWluOg=="),
            Some("Bearer"),
        ] {
            let status = call(&mut admin, refused).unwrap_err();
            assert_eq!(status.code(), Code::Unauthenticated, "{refused:?}");
            assert_eq!(
                status.get_details_error_info().unwrap().reason,
                "ADMIN_TOKEN_INVALID"
            );
        }
        let mut disabled = RequireAdmin::new(AdminToken::new(None));
        assert!(call(&mut disabled, Some("Bearer anything")).is_err());
    }
}

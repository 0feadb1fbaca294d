//! The `misim.aad.v1.Applications` gRPC adapter: app registrations, their app roles and app-role
//! assignments to managed identities ([`crate::applications`]), converted to and from pb messages.
//!
//! Who may call: only the `admin` role. In Azure these are Microsoft Graph calls a tenant
//! administrator (or the app's owner) makes (`az ad app create`, `az rest … appRoleAssignedTo`,
//! <https://learn.microsoft.com/entra/identity/managed-identities-azure-resources/how-to-assign-app-role-managed-identity>);
//! neither ARM, MSRP nor a host registers applications, so their certificates are refused.

use std::sync::Arc;

use misim_core::control::{ControlAuth, RoleKind};
use misim_proto::aad as pb;
use misim_proto::aad::applications_server::{Applications, ApplicationsServer};
use tonic::{Request, Response, Status};

use crate::applications::{AppRole, AppRoleAssignment, Application, NewApplication};
use crate::directory::{Directory, RoleRef};
use crate::error::AadError;

/// Fully-qualified gRPC service name, for health reporting and reflection.
pub const SERVICE_NAME: &str = pb::applications_server::SERVICE_NAME;

/// Only the admin role (always accepted by [`ControlAuth::check`]).
const ADMIN_ONLY: &[RoleKind] = &[];

/// The applications service over a directory.
pub struct ApplicationsService {
    directory: Arc<Directory>,
    auth: ControlAuth,
}

/// The tonic server of the applications API, checking callers as `auth` says (admin only).
pub fn server(
    directory: Arc<Directory>,
    auth: ControlAuth,
) -> ApplicationsServer<ApplicationsService> {
    ApplicationsServer::new(ApplicationsService { directory, auth })
}

fn required(value: &str, name: &str) -> Result<(), Status> {
    if value.trim().is_empty() {
        return Err(AadError::InvalidArgument(format!("{name} is required")).into());
    }
    Ok(())
}

fn optional(value: &str) -> Option<&str> {
    Some(value.trim()).filter(|v| !v.is_empty())
}

impl From<AppRole> for pb::AppRole {
    fn from(r: AppRole) -> Self {
        pb::AppRole {
            id: r.id,
            value: r.value,
            display_name: r.display_name,
            description: r.description,
            allowed_member_types: r.allowed_member_types,
            is_enabled: r.is_enabled,
        }
    }
}

impl From<Application> for pb::Application {
    fn from(a: Application) -> Self {
        pb::Application {
            tenant_id: a.tenant_id,
            object_id: a.object_id,
            app_id: a.app_id,
            display_name: a.display_name,
            identifier_uris: a.identifier_uris,
            app_roles: a.app_roles.into_iter().map(Into::into).collect(),
            requested_access_token_version: a.requested_access_token_version.map_or(0, i32::from),
            service_principal_id: a.service_principal_id,
            created_date_time: a.created_date_time,
        }
    }
}

impl From<AppRoleAssignment> for pb::AppRoleAssignment {
    fn from(a: AppRoleAssignment) -> Self {
        pb::AppRoleAssignment {
            tenant_id: a.tenant_id,
            id: a.id,
            principal_id: a.principal_id,
            principal_display_name: a.principal_display_name,
            principal_type: "ServicePrincipal".into(),
            resource_id: a.resource_id,
            resource_display_name: a.resource_display_name,
            app_role_id: a.app_role_id,
            created_date_time: a.created_date_time,
        }
    }
}

impl TryFrom<pb::CreateApplicationRequest> for NewApplication {
    type Error = Status;
    fn try_from(r: pb::CreateApplicationRequest) -> Result<Self, Status> {
        required(&r.tenant_id, "tenant_id")?;
        let requested_access_token_version = match r.requested_access_token_version {
            0 => None,
            v @ (1 | 2) => Some(v as u8),
            v => {
                return Err(Status::invalid_argument(format!(
                    "requested_access_token_version must be 0 (null), 1 or 2, not {v}"
                )))
            }
        };
        Ok(NewApplication {
            tenant_id: r.tenant_id,
            display_name: r.display_name,
            identifier_uris: r.identifier_uris,
            app_roles: r
                .app_roles
                .into_iter()
                .map(|n| (n.value, n.display_name, n.description))
                .collect(),
            requested_access_token_version,
        })
    }
}

#[tonic::async_trait]
impl Applications for ApplicationsService {
    async fn create_application(
        &self,
        req: Request<pb::CreateApplicationRequest>,
    ) -> Result<Response<pb::Application>, Status> {
        self.auth
            .check(&req, "Applications/CreateApplication", ADMIN_ONLY)?;
        let new = NewApplication::try_from(req.into_inner())?;
        Ok(Response::new(
            self.directory.create_application(new).await?.into(),
        ))
    }

    async fn get_application(
        &self,
        req: Request<pb::GetApplicationRequest>,
    ) -> Result<Response<pb::Application>, Status> {
        self.auth
            .check(&req, "Applications/GetApplication", ADMIN_ONLY)?;
        let r = req.into_inner();
        required(&r.tenant_id, "tenant_id")?;
        required(&r.id, "id")?;
        Ok(Response::new(
            self.directory.application(&r.tenant_id, &r.id)?.into(),
        ))
    }

    async fn list_applications(
        &self,
        req: Request<pb::ListApplicationsRequest>,
    ) -> Result<Response<pb::ListApplicationsResponse>, Status> {
        self.auth
            .check(&req, "Applications/ListApplications", ADMIN_ONLY)?;
        let r = req.into_inner();
        required(&r.tenant_id, "tenant_id")?;
        let applications = self
            .directory
            .applications(&r.tenant_id)?
            .into_iter()
            .map(Into::into)
            .collect();
        Ok(Response::new(pb::ListApplicationsResponse { applications }))
    }

    async fn delete_application(
        &self,
        req: Request<pb::DeleteApplicationRequest>,
    ) -> Result<Response<pb::DeleteApplicationResponse>, Status> {
        self.auth
            .check(&req, "Applications/DeleteApplication", ADMIN_ONLY)?;
        let r = req.into_inner();
        required(&r.tenant_id, "tenant_id")?;
        required(&r.id, "id")?;
        self.directory
            .delete_application(&r.tenant_id, &r.id)
            .await?;
        Ok(Response::new(pb::DeleteApplicationResponse {}))
    }

    async fn create_app_role_assignment(
        &self,
        req: Request<pb::CreateAppRoleAssignmentRequest>,
    ) -> Result<Response<pb::AppRoleAssignment>, Status> {
        self.auth
            .check(&req, "Applications/CreateAppRoleAssignment", ADMIN_ONLY)?;
        let r = req.into_inner();
        required(&r.tenant_id, "tenant_id")?;
        required(&r.principal_id, "principal_id")?;
        required(&r.app, "app")?;
        let role = match (optional(&r.app_role_id), optional(&r.app_role_value)) {
            (Some(id), None) => RoleRef::Id(id.to_string()),
            (None, Some(value)) => RoleRef::Value(value.to_string()),
            _ => {
                return Err(Status::invalid_argument(
                    "exactly one of app_role_id and app_role_value is required",
                ))
            }
        };
        let a = self
            .directory
            .create_app_role_assignment(&r.tenant_id, &r.principal_id, &r.app, role)
            .await?;
        Ok(Response::new(a.into()))
    }

    async fn list_app_role_assignments(
        &self,
        req: Request<pb::ListAppRoleAssignmentsRequest>,
    ) -> Result<Response<pb::ListAppRoleAssignmentsResponse>, Status> {
        self.auth
            .check(&req, "Applications/ListAppRoleAssignments", ADMIN_ONLY)?;
        let r = req.into_inner();
        required(&r.tenant_id, "tenant_id")?;
        let app_role_assignments = self
            .directory
            .app_role_assignments(&r.tenant_id, optional(&r.app), optional(&r.principal_id))?
            .into_iter()
            .map(Into::into)
            .collect();
        Ok(Response::new(pb::ListAppRoleAssignmentsResponse {
            app_role_assignments,
        }))
    }

    async fn delete_app_role_assignment(
        &self,
        req: Request<pb::DeleteAppRoleAssignmentRequest>,
    ) -> Result<Response<pb::DeleteAppRoleAssignmentResponse>, Status> {
        self.auth
            .check(&req, "Applications/DeleteAppRoleAssignment", ADMIN_ONLY)?;
        let r = req.into_inner();
        required(&r.tenant_id, "tenant_id")?;
        required(&r.id, "id")?;
        self.directory
            .delete_app_role_assignment(&r.tenant_id, &r.id)
            .await?;
        Ok(Response::new(pb::DeleteAppRoleAssignmentResponse {}))
    }
}

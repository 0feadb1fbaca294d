//! The admin gRPC adapter (`misim.aad.v1.AadAdmin`): converts pb messages to domain calls on
//! [`Directory`] and back. The only file that imports `misim_proto`.

use std::sync::Arc;

use misim_core::control::{ControlAuth, RoleKind};

use misim_proto::aad as pb;
use misim_proto::aad::aad_admin_server::{AadAdmin, AadAdminServer};
use tonic::{Request, Response, Status};

use crate::directory::{Directory, NewServicePrincipal};
use crate::error::AadError;
use crate::federation::{FederatedCredential, Federation};
use crate::model::{KeyCredential, ServicePrincipal, Tenant};

/// Fully-qualified gRPC service name, for health reporting.
pub const SERVICE_NAME: &str = pb::aad_admin_server::SERVICE_NAME;

/// The admin service over a directory.
pub struct AdminService {
    directory: Arc<Directory>,
    federation: Arc<Federation>,
    auth: ControlAuth,
}

/// The tonic server of the admin API, checking callers as `auth` says: tenants are read and ensured
/// by ARM and MSRP; service principals and their key credentials are managed by MSRP only (in Azure
/// the resource provider, not ARM or a host, registers an identity's credentials).
/// Federated identity credentials are set by MSRP only, as the resource provider that owns the
/// identity's principal.
pub fn server(
    directory: Arc<Directory>,
    federation: Arc<Federation>,
    auth: ControlAuth,
) -> AadAdminServer<AdminService> {
    AadAdminServer::new(AdminService {
        directory,
        federation,
        auth,
    })
}

/// Who may read and ensure tenants and read service principals.
const ARM_OR_MSRP: &[RoleKind] = &[RoleKind::Arm, RoleKind::Msrp];
/// Who may change service principals and key credentials.
const MSRP_ONLY: &[RoleKind] = &[RoleKind::Msrp];

fn required(value: &str, name: &str) -> Result<(), Status> {
    if value.trim().is_empty() {
        return Err(AadError::InvalidArgument(format!("{name} is required")).into());
    }
    Ok(())
}

impl From<Tenant> for pb::Tenant {
    fn from(t: Tenant) -> Self {
        pb::Tenant {
            tenant_id: t.tenant_id,
            display_name: t.display_name,
            default_domain: t.default_domain,
        }
    }
}

impl From<KeyCredential> for pb::KeyCredential {
    fn from(k: KeyCredential) -> Self {
        pb::KeyCredential {
            key_id: k.key_id,
            certificate_der: k.certificate_der,
            thumbprint_sha1_hex: k.thumbprint_sha1_hex,
            start_date_time: k.start_date_time,
            end_date_time: k.end_date_time,
        }
    }
}

impl From<ServicePrincipal> for pb::ServicePrincipal {
    fn from(sp: ServicePrincipal) -> Self {
        pb::ServicePrincipal {
            alternative_names: sp.alternative_names(),
            service_principal_type: ServicePrincipal::TYPE.to_string(),
            tenant_id: sp.tenant_id,
            object_id: sp.object_id,
            app_id: sp.app_id,
            display_name: sp.display_name,
            msi_resource_id: sp.msi_resource_id,
            key_credentials: sp.key_credentials.into_iter().map(Into::into).collect(),
        }
    }
}

impl TryFrom<pb::CreateServicePrincipalRequest> for NewServicePrincipal {
    type Error = Status;
    fn try_from(r: pb::CreateServicePrincipalRequest) -> Result<Self, Status> {
        required(&r.tenant_id, "tenant_id")?;
        required(&r.msi_resource_id, "msi_resource_id")?;
        Ok(NewServicePrincipal {
            tenant_id: r.tenant_id,
            display_name: r.display_name,
            msi_resource_id: r.msi_resource_id,
            is_explicit: r.is_explicit,
            certificate_der: r.certificate_der,
        })
    }
}

#[tonic::async_trait]
impl AadAdmin for AdminService {
    async fn ensure_default_tenant(
        &self,
        req: Request<pb::EnsureDefaultTenantRequest>,
    ) -> Result<Response<pb::Tenant>, Status> {
        self.auth
            .check(&req, "AadAdmin/EnsureDefaultTenant", ARM_OR_MSRP)?;
        Ok(Response::new(
            self.directory.ensure_default_tenant().await?.into(),
        ))
    }

    async fn create_tenant(
        &self,
        req: Request<pb::CreateTenantRequest>,
    ) -> Result<Response<pb::Tenant>, Status> {
        self.auth
            .check(&req, "AadAdmin/CreateTenant", ARM_OR_MSRP)?;
        let r = req.into_inner();
        let id = Some(r.tenant_id.as_str()).filter(|s| !s.is_empty());
        Ok(Response::new(
            self.directory
                .create_tenant(&r.display_name, id)
                .await?
                .into(),
        ))
    }

    async fn get_tenant(
        &self,
        req: Request<pb::GetTenantRequest>,
    ) -> Result<Response<pb::Tenant>, Status> {
        self.auth.check(&req, "AadAdmin/GetTenant", ARM_OR_MSRP)?;
        let r = req.into_inner();
        required(&r.tenant_id, "tenant_id")?;
        Ok(Response::new(self.directory.tenant(&r.tenant_id)?.into()))
    }

    async fn list_tenants(
        &self,
        req: Request<pb::ListTenantsRequest>,
    ) -> Result<Response<pb::ListTenantsResponse>, Status> {
        self.auth.check(&req, "AadAdmin/ListTenants", ARM_OR_MSRP)?;
        let tenants = self
            .directory
            .tenants()?
            .into_iter()
            .map(Into::into)
            .collect();
        Ok(Response::new(pb::ListTenantsResponse { tenants }))
    }

    async fn create_service_principal(
        &self,
        req: Request<pb::CreateServicePrincipalRequest>,
    ) -> Result<Response<pb::ServicePrincipal>, Status> {
        self.auth
            .check(&req, "AadAdmin/CreateServicePrincipal", MSRP_ONLY)?;
        let new = NewServicePrincipal::try_from(req.into_inner())?;
        Ok(Response::new(
            self.directory.create_service_principal(new).await?.into(),
        ))
    }

    async fn get_service_principal(
        &self,
        req: Request<pb::GetServicePrincipalRequest>,
    ) -> Result<Response<pb::ServicePrincipal>, Status> {
        self.auth
            .check(&req, "AadAdmin/GetServicePrincipal", ARM_OR_MSRP)?;
        let r = req.into_inner();
        required(&r.tenant_id, "tenant_id")?;
        self.directory.tenant(&r.tenant_id)?;
        let sp = match (r.object_id.is_empty(), r.app_id.is_empty()) {
            (false, true) => self
                .directory
                .service_principal(&r.tenant_id, &r.object_id)?,
            (true, false) => self
                .directory
                .service_principal_by_app_id(&r.tenant_id, &r.app_id)?
                .ok_or_else(|| {
                    Status::not_found(format!(
                        "service principal with app id '{}' not found in tenant '{}'",
                        r.app_id, r.tenant_id
                    ))
                })?,
            _ => {
                return Err(Status::invalid_argument(
                    "exactly one of object_id and app_id is required",
                ))
            }
        };
        Ok(Response::new(sp.into()))
    }

    async fn list_service_principals(
        &self,
        req: Request<pb::ListServicePrincipalsRequest>,
    ) -> Result<Response<pb::ListServicePrincipalsResponse>, Status> {
        self.auth
            .check(&req, "AadAdmin/ListServicePrincipals", ARM_OR_MSRP)?;
        let r = req.into_inner();
        required(&r.tenant_id, "tenant_id")?;
        let service_principals = self
            .directory
            .service_principals(&r.tenant_id)?
            .into_iter()
            .map(Into::into)
            .collect();
        Ok(Response::new(pb::ListServicePrincipalsResponse {
            service_principals,
        }))
    }

    async fn add_key_credential(
        &self,
        req: Request<pb::AddKeyCredentialRequest>,
    ) -> Result<Response<pb::ServicePrincipal>, Status> {
        self.auth
            .check(&req, "AadAdmin/AddKeyCredential", MSRP_ONLY)?;
        let r = req.into_inner();
        required(&r.tenant_id, "tenant_id")?;
        required(&r.object_id, "object_id")?;
        let sp = self
            .directory
            .add_key_credential(&r.tenant_id, &r.object_id, &r.certificate_der)
            .await?;
        Ok(Response::new(sp.into()))
    }

    async fn remove_key_credential(
        &self,
        req: Request<pb::RemoveKeyCredentialRequest>,
    ) -> Result<Response<pb::ServicePrincipal>, Status> {
        self.auth
            .check(&req, "AadAdmin/RemoveKeyCredential", MSRP_ONLY)?;
        let r = req.into_inner();
        required(&r.tenant_id, "tenant_id")?;
        required(&r.object_id, "object_id")?;
        required(&r.key_id, "key_id")?;
        let sp = self
            .directory
            .remove_key_credential(&r.tenant_id, &r.object_id, &r.key_id)
            .await?;
        Ok(Response::new(sp.into()))
    }

    async fn delete_service_principal(
        &self,
        req: Request<pb::DeleteServicePrincipalRequest>,
    ) -> Result<Response<pb::DeleteServicePrincipalResponse>, Status> {
        self.auth
            .check(&req, "AadAdmin/DeleteServicePrincipal", MSRP_ONLY)?;
        let r = req.into_inner();
        required(&r.tenant_id, "tenant_id")?;
        required(&r.object_id, "object_id")?;
        self.directory
            .delete_service_principal(&r.tenant_id, &r.object_id)
            .await?;
        // Its federated identity credentials go with it.
        self.federation.remove(&r.tenant_id, &r.object_id).await?;
        Ok(Response::new(pb::DeleteServicePrincipalResponse {}))
    }

    async fn set_federated_identity_credentials(
        &self,
        req: Request<pb::SetFederatedIdentityCredentialsRequest>,
    ) -> Result<Response<pb::SetFederatedIdentityCredentialsResponse>, Status> {
        self.auth
            .check(&req, "AadAdmin/SetFederatedIdentityCredentials", MSRP_ONLY)?;
        let r = req.into_inner();
        required(&r.tenant_id, "tenant_id")?;
        required(&r.object_id, "object_id")?;
        // The principal must exist (a deleted identity cannot gain credentials).
        self.directory
            .service_principal(&r.tenant_id, &r.object_id)?;
        let credentials = r
            .credentials
            .into_iter()
            .map(|c| FederatedCredential {
                name: c.name,
                issuer: c.issuer,
                subject: c.subject,
                audiences: c.audiences,
            })
            .collect();
        self.federation
            .set(&r.tenant_id, &r.object_id, credentials)
            .await?;
        Ok(Response::new(
            pb::SetFederatedIdentityCredentialsResponse {},
        ))
    }
}

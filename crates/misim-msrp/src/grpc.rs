//! The gRPC edge of MSRP: the `misim.msrp.v1.Msrp` service converting pb requests into domain calls
//! and domain records into pb messages. Together with [`aad`] (the Azure AD client) this is the only
//! place that sees `misim_proto` types.

pub mod aad;

use std::sync::Arc;

use misim_core::control::{ControlAuth, Role, RoleKind};
use misim_core::ResourceId;
use misim_proto::msrp::msrp_server::{Msrp as MsrpRpc, MsrpServer};
use misim_proto::msrp::{
    CreateIdentityRequest, Credential, DeleteIdentityRequest, DeleteIdentityResponse,
    GetCredentialRequest, GetIdentityRequest, Identity, IdentityKind as PbKind,
    ListIdentitiesRequest, ListIdentitiesResponse, SetHostAccessRequest, SetHostAccessResponse,
};
use tonic::{Request, Response, Status};

use crate::error::{MsrpError, Result};
use crate::identity::{IdentityKind, IdentityRecord, NewIdentity};
use crate::service::Msrp;
use crate::store::HostGrant;

/// The gRPC service name, as reported by `grpc.health.v1`.
pub const SERVICE_NAME: &str = misim_proto::msrp::msrp_server::SERVICE_NAME;

/// The tonic server for `msrp`, checking callers as `auth` says: ARM (and admin) manage identities
/// and host access; hosts fetch credentials, each only for the identities of its own VMs.
pub fn server(msrp: Arc<Msrp>, auth: ControlAuth) -> MsrpServer<MsrpGrpc> {
    MsrpServer::new(MsrpGrpc { msrp, auth })
}

/// `misim.msrp.v1.Msrp` over an [`Msrp`].
pub struct MsrpGrpc {
    msrp: Arc<Msrp>,
    auth: ControlAuth,
}

/// Who may manage identities: ARM only (admin is always allowed).
const ARM_ONLY: &[RoleKind] = &[RoleKind::Arm];

fn parse_id(s: &str) -> Result<ResourceId> {
    if s.trim().is_empty() {
        return Err(MsrpError::InvalidArgument("resource_id is required".into()));
    }
    Ok(ResourceId::parse(s)?)
}

impl TryFrom<CreateIdentityRequest> for NewIdentity {
    type Error = MsrpError;

    fn try_from(r: CreateIdentityRequest) -> Result<Self> {
        let resource_id = parse_id(&r.resource_id)?;
        let kind = match PbKind::try_from(r.kind) {
            Ok(PbKind::SystemAssigned) => IdentityKind::SystemAssigned,
            Ok(PbKind::UserAssigned) => IdentityKind::UserAssigned,
            Ok(PbKind::Unspecified) => IdentityKind::infer(&resource_id),
            Err(_) => {
                return Err(MsrpError::InvalidArgument(format!(
                    "unknown identity kind {}",
                    r.kind
                )))
            }
        };
        Ok(NewIdentity {
            resource_id,
            kind,
            tenant_id: r.tenant_id,
        })
    }
}

impl From<&IdentityRecord> for Identity {
    fn from(r: &IdentityRecord) -> Self {
        Identity {
            resource_id: r.resource_id.clone(),
            kind: match r.kind {
                IdentityKind::SystemAssigned => PbKind::SystemAssigned,
                IdentityKind::UserAssigned => PbKind::UserAssigned,
            } as i32,
            tenant_id: r.tenant_id.clone(),
            client_id: r.client_id.clone().unwrap_or_default(),
            principal_id: r.principal_id.clone().unwrap_or_default(),
            thumbprint_sha1_hex: r.current.thumbprint_sha1_hex.clone(),
            cert_not_before: r.current.not_before,
            cert_not_after: r.current.not_after,
        }
    }
}

#[tonic::async_trait]
impl MsrpRpc for MsrpGrpc {
    async fn create_identity(
        &self,
        req: Request<CreateIdentityRequest>,
    ) -> Result<Response<Identity>, Status> {
        self.auth.check(&req, "Msrp/CreateIdentity", ARM_ONLY)?;
        let new = NewIdentity::try_from(req.into_inner())?;
        let record = self.msrp.create(new).await?;
        Ok(Response::new(Identity::from(&record)))
    }

    async fn get_identity(
        &self,
        req: Request<GetIdentityRequest>,
    ) -> Result<Response<Identity>, Status> {
        self.auth.check(&req, "Msrp/GetIdentity", ARM_ONLY)?;
        let id = parse_id(&req.into_inner().resource_id)?;
        Ok(Response::new(Identity::from(&self.msrp.get(&id)?)))
    }

    async fn list_identities(
        &self,
        req: Request<ListIdentitiesRequest>,
    ) -> Result<Response<ListIdentitiesResponse>, Status> {
        self.auth.check(&req, "Msrp/ListIdentities", ARM_ONLY)?;
        let identities = self.msrp.list()?.iter().map(Identity::from).collect();
        Ok(Response::new(ListIdentitiesResponse { identities }))
    }

    async fn delete_identity(
        &self,
        req: Request<DeleteIdentityRequest>,
    ) -> Result<Response<DeleteIdentityResponse>, Status> {
        self.auth.check(&req, "Msrp/DeleteIdentity", ARM_ONLY)?;
        let id = parse_id(&req.into_inner().resource_id)?;
        self.msrp.delete(&id).await?;
        Ok(Response::new(DeleteIdentityResponse {}))
    }

    async fn get_credential(
        &self,
        req: Request<GetCredentialRequest>,
    ) -> Result<Response<Credential>, Status> {
        let caller = self
            .auth
            .check(&req, "Msrp/GetCredential", &[RoleKind::Host])?;
        let req = req.into_inner();
        let id = parse_id(&req.resource_id)?;
        let record = match caller {
            // A host fetches for itself, whatever name the request carries.
            Some(Role::Host(host)) => self.msrp.credential_for_host(&id, &host)?,
            // Admin (debugging) or checks off (unit tests with fakes).
            _ => self.msrp.credential(&id, &req.host)?,
        };
        Ok(Response::new(Credential {
            identity: Some(Identity::from(&record)),
            certificate_der: record.current.certificate_der.clone(),
            private_key_pkcs8_der: record.current.private_key_pkcs8_der.clone(),
        }))
    }

    async fn set_host_access(
        &self,
        req: Request<SetHostAccessRequest>,
    ) -> Result<Response<SetHostAccessResponse>, Status> {
        self.auth.check(&req, "Msrp/SetHostAccess", ARM_ONLY)?;
        let req = req.into_inner();
        if req.host.trim().is_empty() {
            return Err(MsrpError::InvalidArgument("host is required".into()).into());
        }
        let grant = HostGrant {
            vm: parse_id(&req.vm_resource_id)?,
            identities: req
                .identity_resource_ids
                .iter()
                .map(|s| parse_id(s))
                .collect::<Result<Vec<_>>>()?,
            host: req.host,
        };
        self.msrp.set_host_access(&grant).await?;
        Ok(Response::new(SetHostAccessResponse {}))
    }

    async fn set_federated_identity_credentials(
        &self,
        req: Request<misim_proto::msrp::SetFederatedIdentityCredentialsRequest>,
    ) -> Result<Response<misim_proto::msrp::SetFederatedIdentityCredentialsResponse>, Status> {
        self.auth
            .check(&req, "Msrp/SetFederatedIdentityCredentials", ARM_ONLY)?;
        let req = req.into_inner();
        let id = parse_id(&req.resource_id)?;
        let credentials = req
            .credentials
            .into_iter()
            .map(|c| crate::federation::FederatedCredential {
                name: c.name,
                issuer: c.issuer,
                subject: c.subject,
                audiences: c.audiences,
            })
            .collect();
        self.msrp
            .set_federated_credentials(&id, credentials)
            .await?;
        Ok(Response::new(
            misim_proto::msrp::SetFederatedIdentityCredentialsResponse {},
        ))
    }
}

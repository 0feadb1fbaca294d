//! The `misim.imds.v1.HostAgent` gRPC service: ARM places VMs on this host and configures their
//! identities (step 3). Each call converts its request, runs the [`Host`] operation and maps errors
//! through [`AgentError::to_status`](crate::AgentError::to_status).

use std::sync::Arc;

use misim_core::control::{ControlAuth, RoleKind};
use misim_proto::imds as pb;
use misim_proto::imds::host_agent_server::HostAgent;
use tonic::{Request, Response, Status};

use super::convert::resource_id;
use crate::error::AgentError;
use crate::host::Host;
use crate::model::{AppServiceSite, IdentityRef, VmInfo};

/// The host agent API over a [`Host`].
#[derive(Clone)]
pub struct AgentService {
    host: Arc<Host>,
    auth: ControlAuth,
}

/// Only ARM configures hosts (and admin, for debugging), as only Azure's fabric configures a node.
const ARM_ONLY: &[RoleKind] = &[RoleKind::Arm];

impl AgentService {
    /// Serves `host`, checking callers as `auth` says (ARM only).
    pub fn new(host: Arc<Host>, auth: ControlAuth) -> Self {
        AgentService { host, auth }
    }
}

#[tonic::async_trait]
impl HostAgent for AgentService {
    async fn place_vm(
        &self,
        request: Request<pb::PlaceVmRequest>,
    ) -> Result<Response<pb::PlacedVm>, Status> {
        self.auth.check(&request, "HostAgent/PlaceVm", ARM_ONLY)?;
        let request = request.into_inner();
        let vm = request
            .vm
            .ok_or_else(|| AgentError::InvalidArgument("vm is required".into()))?;
        let app_service = match request.app_service {
            Some(site) if site.identity_header.len() < 16 => {
                return Err(AgentError::InvalidArgument(
                    "app_service.identity_header must be a secret of at least 16 characters".into(),
                )
                .into())
            }
            Some(site) => Some(AppServiceSite {
                identity_header: site.identity_header,
            }),
            None => None,
        };
        let placed = self.host.place(VmInfo::try_from(vm)?, app_service).await?;
        Ok(Response::new(placed.into()))
    }

    async fn get_vm(
        &self,
        request: Request<pb::GetVmRequest>,
    ) -> Result<Response<pb::PlacedVm>, Status> {
        self.auth.check(&request, "HostAgent/GetVm", ARM_ONLY)?;
        let id = resource_id("resource_id", &request.into_inner().resource_id)?;
        Ok(Response::new(self.host.get_vm(&id)?.into()))
    }

    async fn list_vms(
        &self,
        request: Request<pb::ListVmsRequest>,
    ) -> Result<Response<pb::ListVmsResponse>, Status> {
        self.auth.check(&request, "HostAgent/ListVms", ARM_ONLY)?;
        let vms = self.host.list_vms().into_iter().map(Into::into).collect();
        Ok(Response::new(pb::ListVmsResponse { vms }))
    }

    async fn remove_vm(
        &self,
        request: Request<pb::RemoveVmRequest>,
    ) -> Result<Response<pb::RemoveVmResponse>, Status> {
        self.auth.check(&request, "HostAgent/RemoveVm", ARM_ONLY)?;
        let id = resource_id("resource_id", &request.into_inner().resource_id)?;
        self.host.remove_vm(&id).await?;
        Ok(Response::new(pb::RemoveVmResponse {}))
    }

    async fn set_extension(
        &self,
        request: Request<pb::SetExtensionRequest>,
    ) -> Result<Response<pb::PlacedVm>, Status> {
        self.auth
            .check(&request, "HostAgent/SetExtension", ARM_ONLY)?;
        let request = request.into_inner();
        let id = resource_id("resource_id", &request.resource_id)?;
        let port = u16::try_from(request.port).map_err(|_| {
            AgentError::InvalidArgument(format!("port {} is not a tcp port", request.port))
        })?;
        let placed = self
            .host
            .set_extension(&id, request.installed, port, request.force_update_tag)
            .await?;
        Ok(Response::new(placed.into()))
    }

    async fn configure_identities(
        &self,
        request: Request<pb::ConfigureIdentitiesRequest>,
    ) -> Result<Response<pb::PlacedVm>, Status> {
        self.auth
            .check(&request, "HostAgent/ConfigureIdentities", ARM_ONLY)?;
        let request = request.into_inner();
        let id = resource_id("resource_id", &request.resource_id)?;
        let identities = request
            .identities
            .into_iter()
            .map(IdentityRef::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Response::new(
            self.host
                .configure_identities(&id, identities)
                .await?
                .into(),
        ))
    }
}

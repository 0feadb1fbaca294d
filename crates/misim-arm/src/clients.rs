//! Outbound gRPC adapters to ARM's peers (MSRP, the host agents, Azure AD admin): the only place
//! besides `grpc/` that touches generated types; they take domain types and build the messages
//! straight from them.

use std::collections::BTreeMap;

use misim_core::control::ControlTls;
use misim_core::telemetry::propagation::grpc_request as traced;
use misim_proto::aad::aad_admin_client::AadAdminClient;
use misim_proto::imds::host_agent_client::HostAgentClient;
use misim_proto::msrp::msrp_client::MsrpClient;
use misim_proto::{aad, imds, msrp};
use tonic::transport::Channel;

use misim_core::ResourceId;

use crate::error::{ArmError, Result};
use crate::model::{IdentityIds, IdentityKind, Vm, WebApp};

/// What a host reports about a VM it serves.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostVm {
    /// Base URL of the VM's IMDS.
    pub imds_endpoint: String,
    /// Base URL of the legacy VM extension's endpoint; empty when not installed.
    pub extension_endpoint: String,
    /// Where the extension keeps credentials on the VM side.
    pub extension_credential_path: String,
    /// Web apps: the App Service identity endpoint (`IDENTITY_ENDPOINT`); empty for VMs.
    pub identity_endpoint: String,
}

impl From<imds::PlacedVm> for HostVm {
    fn from(p: imds::PlacedVm) -> Self {
        HostVm {
            imds_endpoint: p.imds_endpoint,
            extension_endpoint: p.extension_endpoint,
            extension_credential_path: p.extension_credential_path,
            identity_endpoint: p.identity_endpoint,
        }
    }
}

/// An identity the host should serve for a VM (no key material).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityRef {
    /// ARM resource id of the identity (VM id for system-assigned).
    pub msi_res_id: String,
    /// Kind.
    pub kind: IdentityKind,
    /// Ids from MSRP.
    pub ids: IdentityIds,
}

fn channel(url: &str, control: Option<&ControlTls>) -> Result<Channel> {
    // Timeouts: 3 s to connect, 30 s per call (peer_endpoint's).
    let endpoint =
        misim_core::control::peer_endpoint(control, url).map_err(ArmError::InvalidArgument)?;
    Ok(endpoint.connect_lazy())
}

fn unavailable(peer: &str, status: tonic::Status) -> ArmError {
    ArmError::Peer {
        peer: peer.to_string(),
        status: Box::new(status),
    }
}

/// The instance metadata a host serves for a VM or scale-set instance (a scale-set instance is
/// named `{scale set}_{instance id}`, as IMDS shows it).
fn vm_info(vm: &Vm) -> imds::VmInfo {
    let (name, scale_set) = match &vm.scale_set {
        Some(ss) => (format!("{}_{}", ss.name(), vm.id.name()), ss.name()),
        None => (vm.id.name().to_string(), ""),
    };
    imds::VmInfo {
        vm_size: vm.vm_size.clone(),
        os_type: vm.os_type.clone(),
        private_ip_address: vm.private_ip.clone(),
        mac_address: vm.mac_address.clone(),
        vm_scale_set_name: scale_set.to_string(),
        ..placement_info(&vm.id, &vm.vm_id, name, &vm.location, &vm.tags)
    }
}

/// What a host needs of any placement (VM, scale-set instance or web app).
fn placement_info(
    id: &ResourceId,
    vm_id: &str,
    name: String,
    location: &str,
    tags: &BTreeMap<String, String>,
) -> imds::VmInfo {
    imds::VmInfo {
        resource_id: id.to_string(),
        vm_id: vm_id.to_string(),
        name,
        subscription_id: id.subscription_id().to_string(),
        resource_group: id.resource_group_name().unwrap_or_default().to_string(),
        location: location.to_string(),
        tags: tags.clone().into_iter().collect(),
        ..Default::default()
    }
}

/// The peers ARM calls, each over a lazily connected channel (start order does not matter).
#[derive(Clone)]
pub struct Peers {
    msrp: MsrpClient<Channel>,
    aad: AadAdminClient<Channel>,
    hosts: BTreeMap<String, HostAgentClient<Channel>>,
}

impl Peers {
    /// Builds lazy clients for MSRP, Azure AD admin and each `(name, url)` host, over mutual TLS
    /// with `control`'s certificate when given.
    ///
    /// # Errors
    /// [`ArmError::InvalidArgument`] when a URL is malformed.
    pub fn new(
        msrp_url: &str,
        aad_url: &str,
        hosts: &[(String, String)],
        control: Option<&ControlTls>,
    ) -> Result<Self> {
        let mut h = BTreeMap::new();
        for (name, url) in hosts {
            h.insert(name.clone(), HostAgentClient::new(channel(url, control)?));
        }
        Ok(Peers {
            msrp: MsrpClient::new(channel(msrp_url, control)?),
            aad: AadAdminClient::new(channel(aad_url, control)?),
            hosts: h,
        })
    }

    /// MSRP `SetHostAccess`: the identities VM `resource_id` on `host` has, so that host may fetch
    /// their credentials (an empty list revokes). Called before the host is configured.
    ///
    /// # Errors
    /// [`ArmError::Unavailable`] when MSRP cannot be reached or fails.
    pub async fn set_host_access(
        &self,
        host: &str,
        resource_id: &str,
        identities: &[IdentityRef],
    ) -> Result<()> {
        let req = msrp::SetHostAccessRequest {
            host: host.to_string(),
            vm_resource_id: resource_id.to_string(),
            identity_resource_ids: identities.iter().map(|i| i.msi_res_id.clone()).collect(),
        };
        self.msrp
            .clone()
            .set_host_access(traced(req))
            .await
            .map_err(|s| unavailable("msrp", s))?;
        Ok(())
    }

    /// Names of the configured hosts.
    pub fn host_names(&self) -> Vec<String> {
        self.hosts.keys().cloned().collect()
    }

    /// Whether host `name` is configured.
    pub fn has_host(&self, name: &str) -> bool {
        self.hosts.contains_key(name)
    }

    fn host(&self, name: &str) -> Result<HostAgentClient<Channel>> {
        self.hosts
            .get(name)
            .cloned()
            .ok_or_else(|| ArmError::Unavailable(format!("host '{name}' is not configured")))
    }

    /// Azure AD `EnsureDefaultTenant`: the default tenant's GUID.
    ///
    /// # Errors
    /// [`ArmError::Unavailable`] when Azure AD cannot be reached.
    pub async fn ensure_default_tenant(&self) -> Result<String> {
        let t = self
            .aad
            .clone()
            .ensure_default_tenant(aad::EnsureDefaultTenantRequest {})
            .await;
        Ok(t.map_err(|s| unavailable("azure ad", s))?
            .into_inner()
            .tenant_id)
    }

    /// MSRP `CreateIdentity` (idempotent on the resource id): the identity's ids (step 2).
    ///
    /// # Errors
    /// [`ArmError::Unavailable`] when MSRP cannot be reached or fails.
    pub async fn create_identity(
        &self,
        resource_id: &str,
        kind: IdentityKind,
        tenant_id: &str,
    ) -> Result<IdentityIds> {
        let req = msrp::CreateIdentityRequest {
            resource_id: resource_id.to_string(),
            kind: msrp::IdentityKind::from(kind) as i32,
            tenant_id: tenant_id.to_string(),
        };
        let id = self
            .msrp
            .clone()
            .create_identity(traced(req))
            .await
            .map_err(|s| unavailable("msrp", s))?
            .into_inner();
        Ok(IdentityIds {
            tenant_id: id.tenant_id,
            principal_id: id.principal_id,
            client_id: id.client_id,
        })
    }

    /// MSRP `DeleteIdentity` (absent identities succeed).
    ///
    /// # Errors
    /// [`ArmError::Unavailable`] when MSRP cannot be reached or fails.
    pub async fn delete_identity(&self, resource_id: &str) -> Result<()> {
        let req = msrp::DeleteIdentityRequest {
            resource_id: resource_id.to_string(),
        };
        self.msrp
            .clone()
            .delete_identity(traced(req))
            .await
            .map_err(|s| unavailable("msrp", s))?;
        Ok(())
    }

    /// Host `PlaceVm` (idempotent): the VM's IMDS endpoint.
    ///
    /// # Errors
    /// [`ArmError::Unavailable`] when the host cannot be reached or fails.
    pub async fn place_vm(&self, host: &str, vm: &Vm) -> Result<String> {
        let request = imds::PlaceVmRequest {
            vm: Some(vm_info(vm)),
            app_service: None,
        };
        let placed = self.host(host)?.place_vm(traced(request)).await;
        Ok(placed
            .map_err(|s| unavailable(&format!("host {host}"), s))?
            .into_inner()
            .imds_endpoint)
    }

    /// Host `PlaceVm` for an App Service web app (idempotent): the host serves it the App Service
    /// identity endpoint guarded by the site's `identity_header`; answers the live endpoints.
    ///
    /// # Errors
    /// [`ArmError::Unavailable`] when the host cannot be reached or fails.
    pub async fn place_site(&self, host: &str, site: &WebApp) -> Result<HostVm> {
        let id = &site.id;
        let info = placement_info(
            id,
            &site.site_id,
            id.name().into(),
            &site.location,
            &site.tags,
        );
        let request = imds::PlaceVmRequest {
            vm: Some(info),
            app_service: Some(imds::AppServiceSite {
                identity_header: site.identity_header.clone(),
            }),
        };
        let placed = self.host(host)?.place_vm(traced(request)).await;
        Ok(placed
            .map_err(|s| unavailable(&format!("host {host}"), s))?
            .into_inner()
            .into())
    }

    /// Host `GetVm`: the VM's live endpoints, `None` when the host does not know the VM.
    ///
    /// # Errors
    /// [`ArmError::Unavailable`] when the host cannot be reached.
    pub async fn host_vm(&self, host: &str, resource_id: &str) -> Result<Option<HostVm>> {
        let req = imds::GetVmRequest {
            resource_id: resource_id.to_string(),
        };
        match self.host(host)?.get_vm(traced(req)).await {
            Ok(r) => Ok(Some(HostVm::from(r.into_inner()))),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
            Err(s) => Err(unavailable(&format!("host {host}"), s)),
        }
    }

    /// Host `SetExtension`: installs, re-runs or removes the legacy managed-identity VM extension.
    ///
    /// # Errors
    /// [`ArmError::InvalidArgument`] when the host rejects the request (e.g. more than 32
    /// user-assigned identities, which the extension cannot serve), [`ArmError::Unavailable`] when
    /// the host cannot be reached or does not implement it yet.
    pub async fn set_extension(
        &self,
        host: &str,
        resource_id: &str,
        installed: bool,
        port: u32,
        force_update_tag: &str,
    ) -> Result<HostVm> {
        let req = imds::SetExtensionRequest {
            resource_id: resource_id.to_string(),
            installed,
            port,
            force_update_tag: force_update_tag.to_string(),
        };
        match self.host(host)?.set_extension(traced(req)).await {
            Ok(r) => Ok(HostVm::from(r.into_inner())),
            Err(s)
                if matches!(
                    s.code(),
                    tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition
                ) =>
            {
                Err(ArmError::InvalidArgument(format!(
                    "VM extension operation failed on host {host}: {}",
                    s.message()
                )))
            }
            Err(s) => Err(unavailable(&format!("host {host}"), s)),
        }
    }

    /// Host `RemoveVm` (absent VMs succeed).
    ///
    /// # Errors
    /// [`ArmError::Unavailable`] when the host cannot be reached or fails.
    pub async fn remove_vm(&self, host: &str, resource_id: &str) -> Result<()> {
        let req = imds::RemoveVmRequest {
            resource_id: resource_id.to_string(),
        };
        self.host(host)?
            .remove_vm(traced(req))
            .await
            .map_err(|s| unavailable(&format!("host {host}"), s))?;
        // The VM is gone from the host: revoke its grant.
        self.set_host_access(host, resource_id, &[]).await
    }

    /// Host `ConfigureIdentities` with the full set the VM should have (step 3).
    ///
    /// # Errors
    /// [`ArmError::Unavailable`] when the host cannot be reached or fails.
    pub async fn configure_identities(
        &self,
        host: &str,
        resource_id: &str,
        identities: &[IdentityRef],
    ) -> Result<()> {
        // MSRP learns the grant first, so the host's credential fetches are allowed.
        self.set_host_access(host, resource_id, identities).await?;
        let identities = identities
            .iter()
            .map(|r| imds::IdentityRef {
                msi_res_id: r.msi_res_id.clone(),
                kind: imds::IdentityKind::from(r.kind) as i32,
                client_id: r.ids.client_id.clone(),
                principal_id: r.ids.principal_id.clone(),
                tenant_id: r.ids.tenant_id.clone(),
            })
            .collect();
        let req = imds::ConfigureIdentitiesRequest {
            resource_id: resource_id.to_string(),
            identities,
        };
        self.host(host)?
            .configure_identities(traced(req))
            .await
            .map_err(|s| unavailable(&format!("host {host}"), s))?;
        Ok(())
    }
}

impl Peers {
    /// Replaces the federated identity credentials of user-assigned identity `resource_id` through
    /// MSRP (which registers them on the identity's service principal in Azure AD).
    ///
    /// # Errors
    /// [`ArmError::Unavailable`] when MSRP refuses or cannot be reached.
    pub async fn set_federated_credentials(
        &self,
        resource_id: &str,
        credentials: &[crate::model::FederatedCredential],
    ) -> Result<()> {
        let req = msrp::SetFederatedIdentityCredentialsRequest {
            resource_id: resource_id.to_string(),
            credentials: credentials
                .iter()
                .map(|c| msrp::FederatedIdentityCredential {
                    name: c.name().to_string(),
                    issuer: c.issuer.clone(),
                    subject: c.subject.clone(),
                    audiences: c.audiences.clone(),
                })
                .collect(),
        };
        self.msrp
            .clone()
            .set_federated_identity_credentials(req)
            .await
            .map_err(|s| unavailable("msrp", s))?;
        Ok(())
    }
}

impl Peers {
    /// The MSRP client (consistency checks, `crate::heal`).
    pub(crate) fn msrp_client(&self) -> MsrpClient<Channel> {
        self.msrp.clone()
    }

    /// The Azure AD admin client (consistency checks, `crate::heal`).
    pub(crate) fn aad_client(&self) -> AadAdminClient<Channel> {
        self.aad.clone()
    }

    /// The client of host `name` (consistency checks, `crate::heal`).
    ///
    /// # Errors
    /// [`ArmError::Unavailable`] when no such host is configured.
    pub(crate) fn host_client(&self, name: &str) -> Result<HostAgentClient<Channel>> {
        self.host(name)
    }
}

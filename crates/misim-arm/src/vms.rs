//! Virtual machines: create (placement on a host), read (with the live IMDS endpoint), list and delete.

use std::collections::BTreeMap;

use misim_core::ResourceId;
use tracing::{info, warn};

use crate::error::{ArmError, Result};
use crate::model::{SyncState, Vm};
use crate::private_ip;
use crate::service::{validate_name, Arm};

/// What a caller asks for when creating a VM (empty strings take ARM/az defaults).
#[derive(Clone, Debug, Default)]
pub struct CreateVm {
    /// Subscription GUID; empty: the default subscription.
    pub subscription_id: String,
    /// Resource group name.
    pub resource_group: String,
    /// VM name.
    pub name: String,
    /// Location; empty: the group's location.
    pub location: String,
    /// Size; empty: `Standard_D2s_v3`.
    pub vm_size: String,
    /// OS type; empty: `Linux`.
    pub os_type: String,
    /// Host name; empty: the host with the fewest VMs.
    pub host: String,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Private IP address; empty: the next free one in 10.0.0.0/16. Unique across all VMs and
    /// instances ([`crate::private_ip`]).
    pub private_ip: String,
}

fn not_found(id: &ResourceId) -> ArmError {
    ArmError::ResourceNotFound {
        resource_type: id.resource_type().unwrap_or_default(),
        name: id.name().to_string(),
        group: id.resource_group_name().unwrap_or_default().to_string(),
    }
}

/// Azure-style MAC address (`000D3A` prefix, Microsoft's OUI) derived from the vmId.
pub(crate) fn mac_from_vm_id(vm_id: &uuid::Uuid) -> String {
    let b = vm_id.as_bytes();
    format!("000D3A{:02X}{:02X}{:02X}", b[0], b[1], b[2])
}

impl Vm {
    /// ARM `provisioningState`: `Succeeded` once placed and reconciled, `Creating` before the host
    /// accepted it, `Updating` while an identity change is pending.
    pub fn provisioning_state(&self) -> &'static str {
        match (&self.sync, self.placed) {
            (SyncState::Succeeded, _) => "Succeeded",
            (_, false) => "Creating",
            (_, true) => "Updating",
        }
    }
}

impl Arm {
    /// The VM id for a request, checking subscription, group and name.
    ///
    /// # Errors
    /// [`ArmError::SubscriptionNotFound`], [`ArmError::ResourceGroupNotFound`], [`ArmError::ResourceNotFound`].
    pub(crate) fn vm_id(
        &self,
        subscription_id: &str,
        group: &str,
        name: &str,
    ) -> Result<ResourceId> {
        let g = self.group(subscription_id, group)?;
        let bad = || ArmError::ResourceNotFound {
            resource_type: "Microsoft.Compute/virtualMachines".into(),
            name: name.to_string(),
            group: group.to_string(),
        };
        validate_name("virtual machine", name).map_err(|_| bad())?;
        ResourceId::vm(g.id.subscription_id(), g.id.name(), name).map_err(|_| bad())
    }

    /// The stored VM (not being deleted).
    ///
    /// # Errors
    /// [`ArmError::ResourceNotFound`] when absent.
    pub(crate) fn live_vm(&self, id: &ResourceId) -> Result<Vm> {
        self.store
            .vm(id)?
            .filter(|v| !v.deleting)
            .ok_or_else(|| not_found(id))
    }

    /// Creates a VM and places it on a host (`HostAgent.PlaceVm`). Creating an existing VM again
    /// returns it unchanged (ARM PUT is idempotent); a different location is a 409
    /// `InvalidResourceLocation` as in ARM.
    ///
    /// # Errors
    /// [`ArmError::InvalidArgument`] (bad name, unknown host, no hosts), lookup errors,
    /// [`ArmError::ReconcilePending`] when the host could not be reached (the VM is recorded and
    /// placement is retried).
    pub async fn create_vm(&self, req: CreateVm) -> Result<Vm> {
        let group = self.group(&req.subscription_id, &req.resource_group)?;
        validate_name("virtual machine", &req.name)?;
        let id = ResourceId::vm(group.id.subscription_id(), group.id.name(), &req.name)?;
        let location = if req.location.is_empty() {
            group.location.clone()
        } else {
            req.location.clone()
        };
        let guard = self.locks.lock(&id.key()).await;
        if let Some(existing) = self.store.vm(&id)? {
            if existing.deleting {
                return Err(ArmError::ReconcilePending(format!(
                    "virtual machine '{}' is still being deleted",
                    req.name
                )));
            }
            if !existing.location.eq_ignore_ascii_case(&location) {
                return Err(ArmError::Conflict {
                    code: "InvalidResourceLocation",
                    message: format!(
                        "The resource '{}' already exists in location '{}' in resource group '{}'. A resource with the same name cannot be created in location '{location}'. Please select a new resource name.",
                        req.name, existing.location, group.id.name()
                    ),
                });
            }
            return Ok(existing);
        }
        let host = self.choose_host(&req.host)?;
        let private_ip = if req.private_ip.is_empty() {
            self.store.allocate_ip(&id.key())?
        } else {
            let ip = private_ip::parse(&req.private_ip)?;
            self.store.claim_static_ip(&ip, &id.key())?;
            ip
        };
        let vm_uuid = uuid::Uuid::new_v4();
        let vm = Vm {
            id: id.clone(),
            vm_id: vm_uuid.to_string(),
            location,
            vm_size: if req.vm_size.is_empty() {
                "Standard_D2s_v3".into()
            } else {
                req.vm_size
            },
            os_type: if req.os_type.is_empty() {
                "Linux".into()
            } else {
                req.os_type
            },
            tags: req.tags,
            host: host.clone(),
            private_ip,
            mac_address: mac_from_vm_id(&vm_uuid),
            imds_endpoint: String::new(),
            placed: false,
            system_assigned: false,
            user_assigned: BTreeMap::new(),
            system_identity: None,
            system_delete_pending: false,
            deleting: false,
            sync: SyncState::Pending,
            scale_set: None,
            extensions: BTreeMap::new(),
            extension_endpoint: String::new(),
            extension_credential_path: String::new(),
        };
        if let Err(e) = self.store.vms.put(&id.key(), &vm) {
            self.store.release_ip(&vm.private_ip, &id.key())?;
            return Err(e.into());
        }
        self.store.flush().await?;
        info!(vm = %id, vm_id = %vm.vm_id, host = %host, ip = %vm.private_ip, "created virtual machine");
        let result = self.reconcile_vm_locked(&id).await;
        drop(guard);
        result.map_err(|e| ArmError::ReconcilePending(e.to_string()))?;
        self.live_vm(&id)
    }

    /// The host for a new VM or instance: `requested`, or the one with the fewest VMs and scale-set
    /// instances among `among` (all hosts when empty).
    pub(crate) fn choose_host_among(&self, requested: &str, among: &[String]) -> Result<String> {
        if !requested.is_empty() || among.is_empty() {
            return self.choose_host(requested);
        }
        for h in among {
            self.choose_host(h)?;
        }
        let vms = self.store.vms.values()?;
        let instances = self.store.instances.values()?;
        among
            .iter()
            .min_by_key(|n| {
                vms.iter().filter(|v| &&v.host == n).count()
                    + instances.iter().filter(|v| &&v.host == n).count()
            })
            .cloned()
            .ok_or_else(|| ArmError::InvalidArgument("no host to place on".into()))
    }

    fn choose_host(&self, requested: &str) -> Result<String> {
        let names = self.peers.host_names();
        if !requested.is_empty() {
            return names.into_iter().find(|n| n == requested).ok_or_else(|| {
                ArmError::InvalidArgument(format!(
                    "unknown host '{requested}'; configured hosts: {:?}",
                    self.peers.host_names()
                ))
            });
        }
        let vms = self.store.vms.values()?;
        let instances = self.store.instances.values()?;
        names
            .into_iter()
            .min_by_key(|n| {
                vms.iter().filter(|v| &v.host == n).count()
                    + instances.iter().filter(|v| &v.host == n).count()
            })
            .ok_or_else(|| {
                ArmError::InvalidArgument(
                    "no host is configured to place virtual machines on".into(),
                )
            })
    }

    /// The VM with its live IMDS endpoint (asked from the host; the stored value when the host
    /// cannot be reached).
    ///
    /// # Errors
    /// Lookup errors ([`ArmError::ResourceNotFound`] etc.).
    pub async fn get_vm(&self, subscription_id: &str, group: &str, name: &str) -> Result<Vm> {
        let id = self.vm_id(subscription_id, group, name)?;
        let mut vm = self.live_vm(&id)?;
        if vm.placed {
            match self.peers.host_vm(&vm.host, id.as_str()).await {
                Ok(Some(live)) => {
                    vm.imds_endpoint = live.imds_endpoint;
                    vm.extension_endpoint = live.extension_endpoint;
                    vm.extension_credential_path = live.extension_credential_path;
                }
                Ok(None) => {
                    warn!(vm = %id, host = %vm.host, "host does not know the vm; using stored imds endpoint")
                }
                Err(e) => {
                    warn!(vm = %id, error = %e, "host unreachable; using stored imds endpoint")
                }
            }
        }
        Ok(vm)
    }

    /// VMs of a resource group.
    ///
    /// # Errors
    /// Lookup errors.
    pub fn list_vms(&self, subscription_id: &str, group: &str) -> Result<Vec<Vm>> {
        let g = self.group(subscription_id, group)?;
        self.store.vms_within(&g.id)
    }

    /// Deletes a VM: removes it from its host, deletes its system-assigned identity in MSRP
    /// (user-assigned identities are untouched, as in Azure) and forgets it. Deleting an absent VM
    /// succeeds (ARM DELETE answers 204).
    ///
    /// # Errors
    /// Group lookup errors; [`ArmError::ReconcilePending`] when a peer is down (the VM is hidden and
    /// the reconciler finishes the delete).
    pub async fn delete_vm(&self, subscription_id: &str, group: &str, name: &str) -> Result<()> {
        let id = match self.vm_id(subscription_id, group, name) {
            Ok(id) => id,
            Err(ArmError::ResourceNotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        let _guard = self.locks.lock(&id.key()).await;
        let Some(mut vm) = self.store.vm(&id)? else {
            return Ok(());
        };
        vm.deleting = true;
        vm.sync = SyncState::Pending;
        self.store.vms.put(&id.key(), &vm)?;
        self.store.flush().await?;
        info!(vm = %id, "deleting virtual machine");
        self.reconcile_vm_locked(&id)
            .await
            .map_err(|e| ArmError::ReconcilePending(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_has_microsoft_prefix() {
        let m = mac_from_vm_id(&uuid::Uuid::nil());
        assert_eq!(m, "000D3A000000");
    }
}

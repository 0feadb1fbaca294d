//! Virtual machines: create (placement on a host), read (with the live IMDS endpoint), list and delete.

use std::collections::BTreeMap;

use misim_core::ResourceId;
use tracing::{info, warn};

use crate::error::{ArmError, Result};
use misim_core::keyed_locks::KeyedGuard;

use crate::clients::HostVm;
use crate::error::not_found;
use crate::model::{IdentityBlock, SyncState, Vm};
use crate::resources::private_ip;
use crate::resources::NewResource;
use crate::service::Record;
use crate::service::{validate_name, Arm};
use crate::store::Stored;

/// The size of a VM or instance created without one.
pub const DEFAULT_VM_SIZE: &str = "Standard_D2s_v3";

/// The OS type of a VM or instance created without one.
pub const DEFAULT_OS_TYPE: &str = "Linux";

/// What a caller asks for when creating a VM (empty strings take ARM/az defaults).
#[derive(Clone, Debug, Default)]
pub struct CreateVm {
    /// Where it goes, its name and tags.
    pub resource: NewResource,
    /// Size; empty: `Standard_D2s_v3`.
    pub vm_size: String,
    /// OS type; empty: `Linux`.
    pub os_type: String,
    /// Host name; empty: the host with the fewest VMs.
    pub host: String,
    /// Private IP address; empty: the next free one in 10.0.0.0/16. Unique across all VMs and
    /// instances ([`crate::resources::private_ip`]).
    pub private_ip: String,
}

/// Azure-style MAC address (`000D3A` prefix, Microsoft's OUI) derived from the vmId.
pub(crate) fn mac_from_vm_id(vm_id: &uuid::Uuid) -> String {
    let b = vm_id.as_bytes();
    format!("000D3A{:02X}{:02X}{:02X}", b[0], b[1], b[2])
}

impl Vm {
    /// A new VM or scale-set instance record `id` on `host` (no address yet, not placed, no
    /// identities); an empty size or OS type takes [`DEFAULT_VM_SIZE`] or [`DEFAULT_OS_TYPE`].
    pub(crate) fn new(
        id: ResourceId,
        host: String,
        location: String,
        vm_size: String,
        os_type: String,
        tags: BTreeMap<String, String>,
    ) -> Vm {
        let vm_uuid = uuid::Uuid::new_v4();
        Vm {
            id,
            vm_id: vm_uuid.to_string(),
            location,
            vm_size: or_default(vm_size, DEFAULT_VM_SIZE),
            os_type: or_default(os_type, DEFAULT_OS_TYPE),
            tags,
            host,
            private_ip: String::new(),
            mac_address: mac_from_vm_id(&vm_uuid),
            imds_endpoint: String::new(),
            placed: false,
            identity: IdentityBlock::default(),
            deleting: false,
            sync: SyncState::Pending,
            scale_set: None,
            extensions: BTreeMap::new(),
            extension_endpoint: String::new(),
            extension_credential_path: String::new(),
        }
    }

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
        self.resource_in(subscription_id, group, Vm::TYPE, name, |n| {
            validate_name("virtual machine", n)
        })
    }

    /// The stored record `id` of type `R`, unless it is being deleted.
    ///
    /// # Errors
    /// [`ArmError::ResourceNotFound`] when absent.
    pub(crate) fn live<R: Record>(&self, id: &ResourceId) -> Result<R> {
        R::table(&self.store)
            .get(&id.key())?
            .filter(|r| !r.deleting())
            .ok_or_else(|| not_found(R::TYPE, id))
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
        let group = self.group(&req.resource.subscription_id, &req.resource.resource_group)?;
        validate_name("virtual machine", &req.resource.name)?;
        let id = ResourceId::vm(
            group.id.subscription_id(),
            group.id.name(),
            &req.resource.name,
        )?;
        let location = or_default(req.resource.location, &group.location);
        let (_guard, existing) = self.begin_create::<Vm>(&id, &location).await?;
        if let Some(existing) = existing {
            return Ok(existing);
        }
        let host = self.choose_host(&req.host)?;
        let static_ip = match req.private_ip.as_str() {
            "" => None,
            ip => Some(private_ip::parse(ip)?),
        };
        let mut vm = Vm::new(
            id.clone(),
            host,
            location,
            req.vm_size,
            req.os_type,
            req.resource.tags,
        );
        self.store.transaction(|tx| {
            let ip = static_ip.as_deref();
            self.store.insert_vm_in(tx, &self.store.vms, &mut vm, ip)
        })?;
        self.store.flush().await?;
        info!(vm = %id, vm_id = %vm.vm_id, host = %vm.host, ip = %vm.private_ip, "created virtual machine");
        self.settle(&mut vm).await.map_err(ArmError::pending)?;
        Ok(vm)
    }

    /// The host for a new VM, instance or web app: `requested`, or the one with the fewest VMs and
    /// scale-set instances among `among` (all hosts when empty). Reads one counter per host
    /// ([`ArmStore::host_load`](crate::store::ArmStore::host_load)), never the VMs.
    ///
    /// # Errors
    /// [`ArmError::InvalidArgument`] for an unknown host or when no host is configured.
    pub(crate) fn choose_host_among(&self, requested: &str, among: &[String]) -> Result<String> {
        let names = self.peers.host_names();
        let unknown = |h: &str| {
            ArmError::InvalidArgument(format!("unknown host '{h}'; configured hosts: {names:?}"))
        };
        if !requested.is_empty() {
            return self
                .peers
                .has_host(requested)
                .then(|| requested.to_string())
                .ok_or_else(|| unknown(requested));
        }
        if let Some(h) = among.iter().find(|h| !self.peers.has_host(h)) {
            return Err(unknown(h));
        }
        let candidates = if among.is_empty() { &names } else { among };
        let mut best: Option<(u64, &String)> = None;
        for h in candidates {
            let load = self.store.host_load(h)?;
            if best.is_none_or(|(least, _)| load < least) {
                best = Some((load, h));
            }
        }
        best.map(|(_, h)| h.clone()).ok_or_else(|| {
            ArmError::InvalidArgument("no host is configured to place virtual machines on".into())
        })
    }

    fn choose_host(&self, requested: &str) -> Result<String> {
        self.choose_host_among(requested, &[])
    }

    /// The VM with its live IMDS endpoint (asked from the host; the stored value when the host
    /// cannot be reached).
    ///
    /// # Errors
    /// Lookup errors ([`ArmError::ResourceNotFound`] etc.).
    pub async fn get_vm(&self, subscription_id: &str, group: &str, name: &str) -> Result<Vm> {
        let id = self.vm_id(subscription_id, group, name)?;
        let mut vm: Vm = self.live(&id)?;
        if vm.placed {
            if let Some(live) = self.live_endpoints(&vm.host, &id).await {
                vm.imds_endpoint = live.imds_endpoint;
                vm.extension_endpoint = live.extension_endpoint;
                vm.extension_credential_path = live.extension_credential_path;
            }
        }
        Ok(vm)
    }

    /// VMs of a resource group.
    ///
    /// # Errors
    /// Lookup errors.
    pub fn list_vms(&self, subscription_id: &str, group: &str) -> Result<Vec<Vm>> {
        self.list_in(subscription_id, group)
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
        self.mark_deleting::<Vm>(&id).await
    }

    /// Takes `id`'s lock for a create at `location` and reads the record: PUT is idempotent, so a
    /// record that exists already is returned for the caller to answer with, unless it is still
    /// being deleted (503, to be retried) or lives in another location (409
    /// `InvalidResourceLocation`, as ARM answers).
    ///
    /// # Errors
    /// [`ArmError::ReconcilePending`], [`ArmError::Conflict`], store failures.
    pub(crate) async fn begin_create<R: Record>(
        &self,
        id: &ResourceId,
        location: &str,
    ) -> Result<(KeyedGuard, Option<R>)> {
        let guard = self.locks.lock(&id.key()).await;
        let Some(existing) = R::table(&self.store).get(&id.key())? else {
            return Ok((guard, None));
        };
        let name = id.name();
        if existing.deleting() {
            return Err(ArmError::pending(ArmError::Unavailable(format!(
                "{} '{name}' is still being deleted",
                R::TYPE
            ))));
        }
        let at = existing.location();
        if !at.eq_ignore_ascii_case(location) {
            return Err(ArmError::Conflict {
                code: "InvalidResourceLocation",
                message: format!(
                    "The resource '{name}' already exists in location '{at}' in resource group '{}'. A resource with the same name cannot be created in location '{location}'. Please select a new resource name.",
                    id.resource_group_name().unwrap_or_default()
                ),
            });
        }
        Ok((guard, Some(existing)))
    }

    /// The live endpoints of placement `id` from its host, `None` (logged) when the host does not
    /// know it or cannot be reached: the caller keeps the stored ones.
    pub(crate) async fn live_endpoints(&self, host: &str, id: &ResourceId) -> Option<HostVm> {
        match self.peers.host_vm(host, id.as_str()).await {
            Ok(Some(live)) => Some(live),
            Ok(None) => {
                warn!(resource = %id, host, "host does not know it; using the stored endpoints");
                None
            }
            Err(e) => {
                warn!(resource = %id, host, error = %e, "host unreachable; using the stored endpoints");
                None
            }
        }
    }

    /// Marks record `id` as being deleted (hidden from reads; flushed), then lets the reconciler
    /// remove it from its peers and forget it. An absent record succeeds.
    ///
    /// # Errors
    /// [`ArmError::ReconcilePending`] when a peer is down (the reconciler finishes the delete).
    pub(crate) async fn mark_deleting<R: Record>(&self, id: &ResourceId) -> Result<()> {
        let _guard = self.locks.lock(&id.key()).await;
        let table = R::table(&self.store);
        let Some(mut r) = table.get(&id.key())? else {
            return Ok(());
        };
        r.mark_deleting();
        table.put(&id.key(), &r)?;
        self.store.flush().await?;
        info!(resource = %id, "deleting {}", R::TYPE);
        self.settle(&mut r).await.map_err(ArmError::pending)
    }
}

/// `value`, or `default` when empty.
pub(crate) fn or_default(value: String, default: &str) -> String {
    if value.is_empty() {
        default.to_string()
    } else {
        value
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

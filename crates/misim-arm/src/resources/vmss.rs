//! Virtual machine scale sets: create with a capacity (instances spread over hosts), read, list,
//! scale, delete, and the scale set's identities, which apply to every instance. The system-assigned
//! identity of a scale set is one identity whose resource id is the scale set
//! (<https://learn.microsoft.com/entra/identity/managed-identities-azure-resources/how-to-configure-managed-identities-scale-sets?pivots=identity-mi-methods-rest>).

use misim_core::ResourceId;
use tracing::info;

use crate::error::{ArmError, Result};
use crate::model::{IdentityBlock, SyncState, Vm, Vmss};
use crate::resources::vms::{or_default, DEFAULT_OS_TYPE, DEFAULT_VM_SIZE};
use crate::resources::NewResource;
use crate::service::{validate_name, Arm};

/// Resource type of scale sets.
pub const VMSS_TYPE: &str = "Microsoft.Compute/virtualMachineScaleSets";

/// The most instances misim places in one scale set (Azure allows 1000; misim keeps it small
/// because every instance gets its own IMDS listener).
pub const MAX_CAPACITY: u32 = 100;

/// What a caller asks for when creating a scale set.
#[derive(Clone, Debug, Default)]
pub struct CreateVmss {
    /// Where it goes, its name and tags.
    pub resource: NewResource,
    /// Instance size; empty: `Standard_D2s_v3`.
    pub vm_size: String,
    /// OS type; empty: `Linux`.
    pub os_type: String,
    /// Instance count (`sku.capacity`).
    pub capacity: u32,
}

fn check_capacity(capacity: u32) -> Result<()> {
    if capacity > MAX_CAPACITY {
        return Err(ArmError::InvalidArgument(format!(
            "The value {capacity} of parameter 'sku.capacity' is out of range. The value must be between 0 and {MAX_CAPACITY}, inclusive."
        )));
    }
    Ok(())
}

impl Vmss {
    /// `provisioningState`, as for VMs.
    pub fn provisioning_state(&self) -> &'static str {
        match self.sync {
            SyncState::Succeeded => "Succeeded",
            SyncState::Pending | SyncState::Failed(_) => "Updating",
        }
    }
}

impl Arm {
    /// The id of scale set `name` in a group, checking that the group exists.
    ///
    /// # Errors
    /// Group lookups, [`ArmError::ResourceNotFound`] for a malformed name.
    pub(crate) fn vmss_id(
        &self,
        subscription_id: &str,
        group: &str,
        name: &str,
    ) -> Result<ResourceId> {
        self.resource_in(subscription_id, group, VMSS_TYPE, name, |n| {
            validate_name("virtual machine scale set", n)
        })
    }

    /// Creates a scale set with `capacity` instances spread over the hosts (each instance is placed
    /// on a host with its own IMDS). Creating it again returns it unchanged (idempotent PUT).
    ///
    /// # Errors
    /// Name/group errors, [`ArmError::InvalidArgument`] for a capacity out of range,
    /// [`ArmError::Conflict`] for another location, [`ArmError::ReconcilePending`] when a host is down.
    pub async fn create_vmss(&self, req: CreateVmss) -> Result<Vmss> {
        let g = self.group(&req.resource.subscription_id, &req.resource.resource_group)?;
        validate_name("virtual machine scale set", &req.resource.name)?;
        check_capacity(req.capacity)?;
        let id = self.vmss_id(
            &req.resource.subscription_id,
            &req.resource.resource_group,
            &req.resource.name,
        )?;
        let location = or_default(req.resource.location, &g.location);
        let (_guard, existing) = self.begin_create::<Vmss>(&id, &location).await?;
        if let Some(existing) = existing {
            return Ok(existing);
        }
        let mut ss = Vmss {
            id: id.clone(),
            unique_id: uuid::Uuid::new_v4().to_string(),
            location,
            vm_size: or_default(req.vm_size, DEFAULT_VM_SIZE),
            os_type: or_default(req.os_type, DEFAULT_OS_TYPE),
            tags: req.resource.tags,
            capacity: req.capacity,
            next_instance: 0,
            identity: IdentityBlock::default(),
            deleting: false,
            sync: SyncState::Pending,
        };
        self.store.vmss.put(&id.key(), &ss)?;
        self.store.flush().await?;
        info!(vmss = %id, capacity = ss.capacity, "created virtual machine scale set");
        self.settle(&mut ss).await.map_err(ArmError::pending)?;
        Ok(ss)
    }

    /// A scale set.
    ///
    /// # Errors
    /// Lookups, [`ArmError::ResourceNotFound`].
    pub fn get_vmss(&self, subscription_id: &str, group: &str, name: &str) -> Result<Vmss> {
        let id = self.vmss_id(subscription_id, group, name)?;
        self.live(&id)
    }

    /// Scale sets of a resource group.
    ///
    /// # Errors
    /// Lookups.
    pub fn list_vmss(&self, subscription_id: &str, group: &str) -> Result<Vec<Vmss>> {
        self.list_in(subscription_id, group)
    }

    /// Sets the instance count: scaling out places new instances (new instance ids, configured with
    /// the scale set's identities), scaling in removes the instances with the highest ids (Azure's
    /// default scale-in policy).
    ///
    /// # Errors
    /// Lookups, capacity range, [`ArmError::ReconcilePending`] when a host is down.
    pub async fn scale_vmss(
        &self,
        subscription_id: &str,
        group: &str,
        name: &str,
        capacity: u32,
    ) -> Result<Vmss> {
        check_capacity(capacity)?;
        let id = self.vmss_id(subscription_id, group, name)?;
        let _guard = self.locks.lock(&id.key()).await;
        let mut ss: Vmss = self.live(&id)?;
        if ss.capacity != capacity || ss.sync.is_dirty() {
            info!(vmss = %id, from = ss.capacity, to = capacity, "scale virtual machine scale set");
            ss.capacity = capacity;
            ss.sync = SyncState::Pending;
            self.store.vmss.put(&id.key(), &ss)?;
            self.store.flush().await?;
            self.settle(&mut ss).await.map_err(ArmError::pending)?;
        }
        Ok(ss)
    }

    /// Deletes a scale set: removes its instances from their hosts and deletes its system-assigned
    /// identity in MSRP (user-assigned identities stay). Deleting an absent scale set succeeds.
    ///
    /// # Errors
    /// Group lookups, [`ArmError::ReconcilePending`] when a peer is down (finished by the reconciler).
    pub async fn delete_vmss(&self, subscription_id: &str, group: &str, name: &str) -> Result<()> {
        match self.vmss_id(subscription_id, group, name) {
            Ok(id) => self.mark_deleting::<Vmss>(&id).await,
            Err(ArmError::ResourceNotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The scale set's live instances, each with its live IMDS endpoint from its host.
    ///
    /// # Errors
    /// Lookups.
    pub async fn list_vmss_instances(
        &self,
        subscription_id: &str,
        group: &str,
        name: &str,
    ) -> Result<(Vmss, Vec<Vm>)> {
        let id = self.vmss_id(subscription_id, group, name)?;
        let ss: Vmss = self.live(&id)?;
        let mut out = Vec::new();
        for mut inst in self.store.instances_of(&id)? {
            if inst.deleting {
                continue;
            }
            if inst.placed {
                if let Ok(Some(live)) = self.peers.host_vm(&inst.host, inst.id.as_str()).await {
                    inst.imds_endpoint = live.imds_endpoint;
                }
            }
            out.push(inst);
        }
        Ok((ss, out))
    }
}

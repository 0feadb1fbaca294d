//! Virtual machine scale sets: create with a capacity (instances spread over hosts), read, list,
//! scale, delete, and the scale set's identities, which apply to every instance. The system-assigned
//! identity of a scale set is one identity whose resource id is the scale set
//! (<https://learn.microsoft.com/entra/identity/managed-identities-azure-resources/how-to-configure-managed-identities-scale-sets?pivots=identity-mi-methods-rest>).

use std::collections::BTreeMap;

use misim_core::ResourceId;
use tracing::info;

use crate::error::{ArmError, Result};
use crate::identity::{current_set, Change};
use crate::identity_spec::{self, IdentityRequest, Mode};
use crate::model::{SyncState, Vm, VmIdentityView, Vmss};
use crate::service::{validate_name, Arm};

/// Resource type of scale sets.
pub const VMSS_TYPE: &str = "Microsoft.Compute/virtualMachineScaleSets";

/// The most instances misim places in one scale set (Azure allows 1000; misim keeps it small
/// because every instance gets its own IMDS listener).
pub const MAX_CAPACITY: u32 = 100;

/// What a caller asks for when creating a scale set.
#[derive(Clone, Debug, Default)]
pub struct CreateVmss {
    /// Subscription GUID; empty: default.
    pub subscription_id: String,
    /// Resource group.
    pub resource_group: String,
    /// Name.
    pub name: String,
    /// Location; empty: the group's.
    pub location: String,
    /// Instance size; empty: `Standard_D2s_v3`.
    pub vm_size: String,
    /// OS type; empty: `Linux`.
    pub os_type: String,
    /// Instance count (`sku.capacity`).
    pub capacity: u32,
    /// Tags.
    pub tags: BTreeMap<String, String>,
}

fn vmss_not_found(id: &ResourceId) -> ArmError {
    ArmError::ResourceNotFound {
        resource_type: VMSS_TYPE.into(),
        name: id.name().to_string(),
        group: id.resource_group_name().unwrap_or_default().to_string(),
    }
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
            _ => "Updating",
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
        let g = self.group(subscription_id, group)?;
        let id = ResourceId::resource(
            g.id.subscription_id(),
            g.id.name(),
            "Microsoft.Compute",
            "virtualMachineScaleSets",
            name,
        );
        match (validate_name("virtual machine scale set", name), id) {
            (Ok(()), Ok(id)) => Ok(id),
            _ => Err(ArmError::ResourceNotFound {
                resource_type: VMSS_TYPE.into(),
                name: name.into(),
                group: group.into(),
            }),
        }
    }

    /// The stored scale set (not being deleted).
    ///
    /// # Errors
    /// [`ArmError::ResourceNotFound`].
    pub(crate) fn live_vmss(&self, id: &ResourceId) -> Result<Vmss> {
        self.store
            .vmss
            .get(&id.key())?
            .filter(|v| !v.deleting)
            .ok_or_else(|| vmss_not_found(id))
    }

    /// Creates a scale set with `capacity` instances spread over the hosts (each instance is placed
    /// on a host with its own IMDS). Creating it again returns it unchanged (idempotent PUT).
    ///
    /// # Errors
    /// Name/group errors, [`ArmError::InvalidArgument`] for a capacity out of range,
    /// [`ArmError::Conflict`] for another location, [`ArmError::ReconcilePending`] when a host is down.
    pub async fn create_vmss(&self, req: CreateVmss) -> Result<Vmss> {
        let g = self.group(&req.subscription_id, &req.resource_group)?;
        validate_name("virtual machine scale set", &req.name)?;
        check_capacity(req.capacity)?;
        let id = self.vmss_id(&req.subscription_id, &req.resource_group, &req.name)?;
        let location = if req.location.is_empty() {
            g.location.clone()
        } else {
            req.location.clone()
        };
        let guard = self.locks.lock(&id.key()).await;
        if let Some(existing) = self.store.vmss.get(&id.key())? {
            if existing.deleting {
                return Err(ArmError::ReconcilePending(format!(
                    "scale set '{}' is still being deleted",
                    req.name
                )));
            }
            if !existing.location.eq_ignore_ascii_case(&location) {
                return Err(ArmError::Conflict {
                    code: "InvalidResourceLocation",
                    message: format!(
                        "The resource '{}' already exists in location '{}' in resource group '{}'. A resource with the same name cannot be created in location '{location}'. Please select a new resource name.",
                        req.name, existing.location, g.id.name()
                    ),
                });
            }
            return Ok(existing);
        }
        let ss = Vmss {
            id: id.clone(),
            unique_id: uuid::Uuid::new_v4().to_string(),
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
            capacity: req.capacity,
            next_instance: 0,
            system_assigned: false,
            user_assigned: BTreeMap::new(),
            system_identity: None,
            system_delete_pending: false,
            deleting: false,
            sync: SyncState::Pending,
        };
        self.store.vmss.put(&id.key(), &ss)?;
        self.store.flush().await?;
        info!(vmss = %id, capacity = ss.capacity, "created virtual machine scale set");
        let result = self.reconcile_vmss_locked(&id).await;
        drop(guard);
        result.map_err(|e| ArmError::ReconcilePending(e.to_string()))?;
        self.live_vmss(&id)
    }

    /// A scale set.
    ///
    /// # Errors
    /// Lookups, [`ArmError::ResourceNotFound`].
    pub fn get_vmss(&self, subscription_id: &str, group: &str, name: &str) -> Result<Vmss> {
        let id = self.vmss_id(subscription_id, group, name)?;
        self.live_vmss(&id)
    }

    /// Scale sets of a resource group.
    ///
    /// # Errors
    /// Lookups.
    pub fn list_vmss(&self, subscription_id: &str, group: &str) -> Result<Vec<Vmss>> {
        let g = self.group(subscription_id, group)?;
        self.store.vmss_within(&g.id)
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
        let guard = self.locks.lock(&id.key()).await;
        let mut ss = self.live_vmss(&id)?;
        if ss.capacity != capacity || ss.sync.is_dirty() {
            info!(vmss = %id, from = ss.capacity, to = capacity, "scale virtual machine scale set");
            ss.capacity = capacity;
            ss.sync = SyncState::Pending;
            self.store.vmss.put(&id.key(), &ss)?;
            self.store.flush().await?;
            let result = self.reconcile_vmss_locked(&id).await;
            result.map_err(|e| ArmError::ReconcilePending(e.to_string()))?;
        }
        drop(guard);
        self.live_vmss(&id)
    }

    /// Deletes a scale set: removes its instances from their hosts and deletes its system-assigned
    /// identity in MSRP (user-assigned identities stay). Deleting an absent scale set succeeds.
    ///
    /// # Errors
    /// Group lookups, [`ArmError::ReconcilePending`] when a peer is down (finished by the reconciler).
    pub async fn delete_vmss(&self, subscription_id: &str, group: &str, name: &str) -> Result<()> {
        let id = match self.vmss_id(subscription_id, group, name) {
            Ok(id) => id,
            Err(ArmError::ResourceNotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        let _guard = self.locks.lock(&id.key()).await;
        let Some(mut ss) = self.store.vmss.get(&id.key())? else {
            return Ok(());
        };
        ss.deleting = true;
        ss.sync = SyncState::Pending;
        self.store.vmss.put(&id.key(), &ss)?;
        self.store.flush().await?;
        info!(vmss = %id, "deleting virtual machine scale set");
        self.reconcile_vmss_locked(&id)
            .await
            .map_err(|e| ArmError::ReconcilePending(e.to_string()))
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
        let ss = self.live_vmss(&id)?;
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

    /// Applies an `identity` block to a scale set with ARM's PUT/PATCH semantics; every instance's
    /// host is then configured with the scale set's identities.
    ///
    /// # Errors
    /// As [`Arm::update_vm_identity`].
    pub async fn update_vmss_identity(
        &self,
        id: &ResourceId,
        req: &IdentityRequest,
        mode: Mode,
    ) -> Result<VmIdentityView> {
        self.change_vmss_identity(id, Change::Request(req), mode)
            .await
    }

    /// [`Arm::update_vmss_identity`] with the request made from the scale set's identities under
    /// its lock.
    async fn change_vmss_identity(
        &self,
        id: &ResourceId,
        change: Change<'_>,
        mode: Mode,
    ) -> Result<VmIdentityView> {
        let guard = self.locks.lock(&id.key()).await;
        let mut ss = self.live_vmss(id)?;
        let req = change.request(ss.system_assigned, &ss.user_assigned)?;
        let plan = identity_spec::plan(&current_set(&ss.user_assigned), &req, mode)?;
        let entries = self.plan_entries(&plan, &ss.user_assigned)?;
        if !plan.system_assigned && (ss.system_assigned || ss.system_identity.is_some()) {
            info!(step = 1, vmss = %id, "disable system-assigned identity");
            ss.system_delete_pending = true;
        }
        if plan.system_assigned && !ss.system_assigned {
            info!(step = 1, vmss = %id, "enable system-assigned identity");
            ss.system_delete_pending = false;
        }
        for added in &plan.added {
            info!(step = 1, vmss = %id, identity = %added, "assign user-assigned identity");
        }
        ss.system_assigned = plan.system_assigned;
        ss.user_assigned = entries;
        ss.sync = SyncState::Pending;
        self.store.vmss.put(&id.key(), &ss)?;
        self.store.flush().await?;
        let result = self.reconcile_vmss_locked(id).await;
        drop(guard);
        result.map_err(|e| ArmError::ReconcilePending(e.to_string()))?;
        Ok(self.live_vmss(id)?.identity_view())
    }

    /// `az vmss identity assign`: adds the system-assigned and/or user-assigned identities.
    ///
    /// # Errors
    /// As [`Arm::update_vmss_identity`].
    pub async fn assign_vmss_identity(
        &self,
        subscription_id: &str,
        group: &str,
        name: &str,
        system_assigned: bool,
        user_assigned: &[String],
    ) -> Result<VmIdentityView> {
        if !system_assigned && user_assigned.is_empty() {
            return Err(ArmError::InvalidArgument(
                "specify system_assigned and/or at least one user-assigned identity".into(),
            ));
        }
        let id = self.vmss_id(subscription_id, group, name)?;
        let change = Change::Assign {
            system: system_assigned,
            user: user_assigned,
        };
        self.change_vmss_identity(&id, change, Mode::Patch).await
    }

    /// `az vmss identity remove`: removes the system-assigned and/or user-assigned identities.
    ///
    /// # Errors
    /// As [`Arm::update_vmss_identity`].
    pub async fn remove_vmss_identity(
        &self,
        subscription_id: &str,
        group: &str,
        name: &str,
        system_assigned: bool,
        user_assigned: &[String],
    ) -> Result<VmIdentityView> {
        let id = self.vmss_id(subscription_id, group, name)?;
        let change = Change::Remove {
            system: system_assigned,
            user: user_assigned,
        };
        self.change_vmss_identity(&id, change, Mode::Patch).await
    }
}

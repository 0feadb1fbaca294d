//! Managed identities on the ARM side (step 1): assigning/removing a VM's system- and user-assigned
//! identities, and the user-assigned identity resources themselves. Each change records the desired
//! state first (flushed), then reconciles MSRP and the host.

use std::borrow::Cow;
use std::collections::BTreeMap;

use misim_core::ResourceId;
use tracing::info;

use crate::error::{ArmError, Result};
use crate::identity_spec::{self, IdentityRequest, Mode, Plan};
use crate::model::{SyncState, Uami, UserAssignedEntry, VmIdentityView};
use crate::service::{validate_name, Arm};

const UAMI_TYPE: &str = "Microsoft.ManagedIdentity/userAssignedIdentities";

pub(crate) fn uami_not_found(id: &ResourceId) -> ArmError {
    ArmError::ResourceNotFound {
        resource_type: UAMI_TYPE.into(),
        name: id.name().to_string(),
        group: id.resource_group_name().unwrap_or_default().to_string(),
    }
}

/// A current user-assigned set as plan input (key → id).
pub(crate) fn current_set(
    entries: &BTreeMap<String, UserAssignedEntry>,
) -> BTreeMap<String, ResourceId> {
    entries
        .iter()
        .map(|(k, e)| (k.clone(), e.id.clone()))
        .collect()
}

/// An identity change asked of a VM or scale set. `az ... identity assign/remove` are turned into
/// an [`IdentityRequest`] from the resource's identities as they are under its lock, so concurrent
/// changes (e.g. enabling system-assigned while assigning a user-assigned one) both survive.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Change<'a> {
    /// An `identity` block as the caller sent it (REST PUT/PATCH).
    Request(&'a IdentityRequest),
    /// Add the system-assigned identity and/or these user-assigned ones, keeping the rest.
    Assign {
        /// Enable the system-assigned identity.
        system: bool,
        /// User-assigned identity ids to add.
        user: &'a [String],
    },
    /// Drop the system-assigned identity and/or these user-assigned ones, keeping the rest.
    Remove {
        /// Disable the system-assigned identity.
        system: bool,
        /// User-assigned identity ids to remove.
        user: &'a [String],
    },
}

impl<'a> Change<'a> {
    /// The request this change makes of a resource that has `has_system` and `current`.
    ///
    /// # Errors
    /// [`ArmError::InvalidArgument`] for a malformed identity id.
    pub(crate) fn request(
        self,
        has_system: bool,
        current: &BTreeMap<String, UserAssignedEntry>,
    ) -> Result<Cow<'a, IdentityRequest>> {
        Ok(match self {
            Change::Request(r) => Cow::Borrowed(r),
            Change::Assign { system, user } => Cow::Owned(identity_spec::assign_request(
                has_system,
                &current_set(current),
                system,
                user,
            )),
            Change::Remove { system, user } => Cow::Owned(identity_spec::remove_request(
                has_system,
                &current_set(current),
                system,
                user,
            )?),
        })
    }
}

impl Arm {
    /// Builds the new user-assigned entries for `plan`: entries already there are kept (dangling
    /// ones too, as Azure keeps them); added ones must exist.
    ///
    /// # Errors
    /// [`ArmError::ResourceNotFound`] for an added identity that does not exist.
    pub(crate) fn plan_entries(
        &self,
        plan: &Plan,
        current: &BTreeMap<String, UserAssignedEntry>,
    ) -> Result<BTreeMap<String, UserAssignedEntry>> {
        let mut out = BTreeMap::new();
        for (key, id) in &plan.user_assigned {
            if let Some(e) = current.get(key) {
                out.insert(key.clone(), e.clone());
                continue;
            }
            let uami = self
                .store
                .uami(id)?
                .filter(|u| !u.deleting)
                .ok_or_else(|| uami_not_found(id))?;
            let (principal_id, client_id) = uami
                .identity
                .map(|i| (i.principal_id, i.client_id))
                .unwrap_or_default();
            out.insert(
                key.clone(),
                UserAssignedEntry {
                    id: id.clone(),
                    principal_id,
                    client_id,
                },
            );
        }
        Ok(out)
    }

    /// Applies an `identity` block to a VM (step 1) with ARM's PUT/PATCH semantics
    /// ([`identity_spec::plan`]), then reconciles: MSRP creates or deletes the system-assigned
    /// identity (step 2) and the host is configured with the full set (step 3).
    ///
    /// # Errors
    /// [`ArmError::InvalidArgument`]/[`ArmError::BadRequest`] for contradictory requests or limits,
    /// [`ArmError::ResourceNotFound`] for a missing VM or identity, [`ArmError::ReconcilePending`]
    /// when MSRP or the host is down (the desired state is recorded and retried).
    pub async fn update_vm_identity(
        &self,
        vm_id: &ResourceId,
        req: &IdentityRequest,
        mode: Mode,
    ) -> Result<VmIdentityView> {
        self.change_vm_identity(vm_id, Change::Request(req), mode)
            .await
    }

    /// [`Arm::update_vm_identity`] with the request made from the VM's identities under its lock.
    async fn change_vm_identity(
        &self,
        vm_id: &ResourceId,
        change: Change<'_>,
        mode: Mode,
    ) -> Result<VmIdentityView> {
        let guard = self.locks.lock(&vm_id.key()).await;
        let mut vm = self.live_vm(vm_id)?;
        let req = change.request(vm.system_assigned, &vm.user_assigned)?;
        let plan = identity_spec::plan(&current_set(&vm.user_assigned), &req, mode)?;
        let entries = self.plan_entries(&plan, &vm.user_assigned)?;
        if plan.system_assigned && !vm.system_assigned {
            info!(step = 1, vm = %vm_id, "enable system-assigned identity");
            vm.system_delete_pending = false;
        }
        if !plan.system_assigned && (vm.system_assigned || vm.system_identity.is_some()) {
            info!(step = 1, vm = %vm_id, "disable system-assigned identity");
            vm.system_delete_pending = true;
        }
        for id in &plan.added {
            info!(step = 1, vm = %vm_id, identity = %id, "assign user-assigned identity");
        }
        for (key, e) in &vm.user_assigned {
            if !entries.contains_key(key) {
                info!(step = 1, vm = %vm_id, identity = %e.id, "remove user-assigned identity");
            }
        }
        vm.system_assigned = plan.system_assigned;
        vm.user_assigned = entries;
        vm.sync = SyncState::Pending;
        self.store.vms.put(&vm_id.key(), &vm)?;
        self.store.flush().await?;
        let result = self.reconcile_vm_locked(vm_id).await;
        drop(guard);
        result.map_err(|e| ArmError::ReconcilePending(e.to_string()))?;
        Ok(self.live_vm(vm_id)?.identity_view())
    }

    /// Enables the system-assigned identity and/or assigns user-assigned identities to a VM, keeping
    /// the ones it has (`az vm identity assign`).
    ///
    /// # Errors
    /// As [`Arm::update_vm_identity`]; [`ArmError::InvalidArgument`] when nothing is asked.
    pub async fn assign_vm_identity(
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
        let id = self.vm_id(subscription_id, group, name)?;
        let change = Change::Assign {
            system: system_assigned,
            user: user_assigned,
        };
        self.change_vm_identity(&id, change, Mode::Patch).await
    }

    /// Disables the system-assigned identity and/or unassigns user-assigned identities (`az vm
    /// identity remove`): the host is configured without them, then a disabled system-assigned
    /// identity is deleted in MSRP with its service principal and certificate (its lifecycle is tied
    /// to the VM, how-managed-identities-work-vm.md). Removing an identity the VM lacks is a no-op.
    ///
    /// # Errors
    /// As [`Arm::update_vm_identity`].
    pub async fn remove_vm_identity(
        &self,
        subscription_id: &str,
        group: &str,
        name: &str,
        system_assigned: bool,
        user_assigned: &[String],
    ) -> Result<VmIdentityView> {
        let id = self.vm_id(subscription_id, group, name)?;
        let change = Change::Remove {
            system: system_assigned,
            user: user_assigned,
        };
        self.change_vm_identity(&id, change, Mode::Patch).await
    }

    /// The VM's identity block.
    ///
    /// # Errors
    /// Lookup errors.
    pub fn get_vm_identity(
        &self,
        subscription_id: &str,
        group: &str,
        name: &str,
    ) -> Result<VmIdentityView> {
        let id = self.vm_id(subscription_id, group, name)?;
        Ok(self.live_vm(&id)?.identity_view())
    }

    fn uami_id(&self, subscription_id: &str, group: &str, name: &str) -> Result<ResourceId> {
        let g = self.group(subscription_id, group)?;
        validate_name("user-assigned identity", name)?;
        Ok(ResourceId::user_assigned_identity(
            g.id.subscription_id(),
            g.id.name(),
            name,
        )?)
    }

    /// Creates a user-assigned identity: records it, then MSRP creates its service principal and
    /// certificate (step 2). Creating it again returns it unchanged (ARM PUT is idempotent).
    ///
    /// # Errors
    /// Lookup/name errors, [`ArmError::Conflict`] for a different location,
    /// [`ArmError::ReconcilePending`] when MSRP is down (retried).
    pub async fn create_user_assigned_identity(
        &self,
        subscription_id: &str,
        group: &str,
        name: &str,
        location: &str,
        tags: BTreeMap<String, String>,
    ) -> Result<Uami> {
        let g = self.group(subscription_id, group)?;
        let id = self.uami_id(subscription_id, group, name)?;
        let location = if location.is_empty() {
            g.location.clone()
        } else {
            location.to_string()
        };
        let tenant_id = self.subscription(g.id.subscription_id())?.tenant_id;
        let guard = self.locks.lock(&id.key()).await;
        if let Some(existing) = self.store.uami(&id)? {
            if existing.deleting {
                return Err(ArmError::ReconcilePending(format!(
                    "identity '{name}' is still being deleted"
                )));
            }
            if !existing.location.eq_ignore_ascii_case(&location) {
                return Err(ArmError::Conflict {
                    code: "InvalidResourceLocation",
                    message: format!(
                        "The resource '{name}' already exists in location '{}' in resource group '{group}'. A resource with the same name cannot be created in location '{location}'. Please select a new resource name.",
                        existing.location
                    ),
                });
            }
            return Ok(existing);
        }
        let uami = Uami {
            id: id.clone(),
            location,
            tags,
            tenant_id,
            identity: None,
            deleting: false,
            sync: SyncState::Pending,
        };
        self.store.uamis.put(&id.key(), &uami)?;
        self.store.flush().await?;
        info!(step = 1, identity = %id, "created user-assigned identity resource");
        let result = self.reconcile_uami_locked(&id).await;
        drop(guard);
        result.map_err(|e| ArmError::ReconcilePending(e.to_string()))?;
        self.store.uami(&id)?.ok_or_else(|| uami_not_found(&id))
    }

    /// A user-assigned identity.
    ///
    /// # Errors
    /// Lookup errors, [`ArmError::ResourceNotFound`].
    pub fn get_user_assigned_identity(
        &self,
        subscription_id: &str,
        group: &str,
        name: &str,
    ) -> Result<Uami> {
        let id = self.uami_id(subscription_id, group, name).map_err(|e| {
            if matches!(e, ArmError::InvalidArgument(_)) {
                uami_not_found_named(group, name)
            } else {
                e
            }
        })?;
        self.store
            .uami(&id)?
            .filter(|u| !u.deleting)
            .ok_or_else(|| uami_not_found(&id))
    }

    /// User-assigned identities of a resource group.
    ///
    /// # Errors
    /// Lookup errors.
    pub fn list_user_assigned_identities(
        &self,
        subscription_id: &str,
        group: &str,
    ) -> Result<Vec<Uami>> {
        let g = self.group(subscription_id, group)?;
        self.store.uamis_within(&g.id)
    }

    /// Deletes a user-assigned identity and (through MSRP) its service principal. VMs keep a dangling
    /// entry with the old ids, as Azure does (reference §4). Deleting an absent identity succeeds.
    ///
    /// # Errors
    /// Lookup errors, [`ArmError::ReconcilePending`] when MSRP is down (retried).
    pub async fn delete_user_assigned_identity(
        &self,
        subscription_id: &str,
        group: &str,
        name: &str,
    ) -> Result<()> {
        let id = match self.uami_id(subscription_id, group, name) {
            Ok(id) => id,
            Err(ArmError::InvalidArgument(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let guard = self.locks.lock(&id.key()).await;
        let Some(mut uami) = self.store.uami(&id)? else {
            return Ok(());
        };
        uami.deleting = true;
        uami.sync = SyncState::Pending;
        self.store.uamis.put(&id.key(), &uami)?;
        self.store.flush().await?;
        info!(identity = %id, "deleting user-assigned identity");
        drop(guard);
        // Hosts stop serving it first (VMs keep the dangling entry), then MSRP deletes it.
        let mut pending = Vec::new();
        for vm in self.store.vms.values()? {
            if vm.user_assigned.contains_key(&id.key()) {
                if let Err(e) = self.reconcile_vm(&vm.id).await {
                    pending.push(e.to_string());
                }
            }
        }
        for ss in self.store.vmss.values()? {
            if ss.user_assigned.contains_key(&id.key()) {
                if let Err(e) = self.reconcile_vmss(&ss.id).await {
                    pending.push(e.to_string());
                }
            }
        }
        let result = self.reconcile_uami(&id).await;
        result.map_err(|e| ArmError::ReconcilePending(e.to_string()))?;
        match pending.first() {
            Some(e) => Err(ArmError::ReconcilePending(e.clone())),
            None => Ok(()),
        }
    }
}

fn uami_not_found_named(group: &str, name: &str) -> ArmError {
    ArmError::ResourceNotFound {
        resource_type: UAMI_TYPE.into(),
        name: name.to_string(),
        group: group.to_string(),
    }
}

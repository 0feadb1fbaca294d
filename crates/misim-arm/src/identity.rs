//! Managed identities on the ARM side (step 1): assigning/removing a VM's system- and user-assigned
//! identities (the user-assigned identity resources themselves are in [`crate::uami`]). Each change
//! records the desired state first (flushed), then reconciles MSRP and the host.

use std::borrow::Cow;
use std::collections::BTreeMap;

use misim_core::ResourceId;
use tracing::info;

use crate::error::{ArmError, Result};
use crate::identity_spec::{self, IdentityRequest, Mode, Plan};
use crate::model::{SyncState, UserAssignedEntry, VmIdentityView};
use crate::service::Arm;
use crate::uami::uami_not_found;

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
        // Step 1 in the flow's trace; MSRP (2) and the host (3) continue it (misim_core::telemetry).
        let step = misim_core::telemetry::step_span(1, "arm");
        misim_core::telemetry::record_vm(&step, vm_id.as_str());
        let result =
            tracing::Instrument::instrument(self.reconcile_vm_locked(vm_id), step.clone()).await;
        misim_core::telemetry::record_outcome(&step, &result);
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
    /// to the VM, <https://learn.microsoft.com/entra/identity/managed-identities-azure-resources/how-managed-identities-work-vm>).
    /// Removing an identity the VM lacks is a no-op.
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
}

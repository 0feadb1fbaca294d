//! Managed identities on the ARM side (step 1), written once for every kind of resource that has
//! them ([`Holder`]: VMs, scale sets, web apps): assigning and removing system- and user-assigned
//! identities with ARM's PUT/PATCH semantics, and the reconcile steps that carry an
//! [`IdentityBlock`] to MSRP (step 2) and the hosts (step 3). The user-assigned identity resources
//! themselves are in [`crate::identity::uami`]. Each change records the desired state first (flushed), then
//! reconciles.

pub(crate) mod spec;
pub(crate) mod uami;
pub(crate) mod workload;

use std::borrow::Cow;
use std::collections::BTreeMap;

use misim_core::ResourceId;
use tracing::info;

use crate::clients::IdentityRef;
use crate::error::{ArmError, Result};
use crate::identity::uami::uami_not_found;
use crate::model::WebApp;
use crate::model::{IdentityBlock, IdentityKind, SyncState, UserAssignedEntry, Vm, Vmss};
use crate::service::Arm;
use crate::service::Record;
use spec::{IdentityRequest, Mode, Plan};

/// A current user-assigned set as plan input (key → id).
pub(crate) fn current_set(
    entries: &BTreeMap<String, UserAssignedEntry>,
) -> BTreeMap<String, ResourceId> {
    entries
        .iter()
        .map(|(k, e)| (k.clone(), e.id.clone()))
        .collect()
}

/// The kinds of resource that have managed identities, as the API names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdentityOwner {
    /// `Microsoft.Compute/virtualMachines`.
    VirtualMachine,
    /// `Microsoft.Compute/virtualMachineScaleSets` (its identities apply to every instance).
    ScaleSet,
    /// `Microsoft.Web/sites` (App Service and Functions).
    WebApp,
}

/// A VM, scale set or web app by name: what `az ... identity` commands address.
#[derive(Clone, Copy, Debug)]
pub struct IdentityTarget<'a> {
    /// Its kind.
    pub owner: IdentityOwner,
    /// Subscription GUID; empty: the default subscription.
    pub subscription_id: &'a str,
    /// Resource group name.
    pub group: &'a str,
    /// Resource name.
    pub name: &'a str,
}

impl<'a> IdentityTarget<'a> {
    /// The resource `name` of kind `owner` in `group` of subscription `subscription_id`.
    pub fn new(
        owner: IdentityOwner,
        subscription_id: &'a str,
        group: &'a str,
        name: &'a str,
    ) -> Self {
        IdentityTarget {
            owner,
            subscription_id,
            group,
            name,
        }
    }

    /// VM `name`.
    pub fn vm(subscription_id: &'a str, group: &'a str, name: &'a str) -> Self {
        Self::new(IdentityOwner::VirtualMachine, subscription_id, group, name)
    }

    /// Scale set `name`.
    pub fn scale_set(subscription_id: &'a str, group: &'a str, name: &'a str) -> Self {
        Self::new(IdentityOwner::ScaleSet, subscription_id, group, name)
    }
}

/// A stored resource with an [`IdentityBlock`]; the identity operations below are written once
/// over it.
pub(crate) trait Holder: Record {
    /// Its identities.
    fn identity(&self) -> &IdentityBlock;
    /// Its identities, to change.
    fn identity_mut(&mut self) -> &mut IdentityBlock;
    /// The id of the resource `name` in a group, checking subscription, group and name.
    fn resolve(arm: &Arm, subscription_id: &str, group: &str, name: &str) -> Result<ResourceId>;
}

/// Implements [`Holder`] for a record with an `identity` field; `$resolve` is the [`Arm`] method
/// that checks and builds its ids.
macro_rules! holder {
    ($($t:ty => $resolve:ident),*) => {$(
        impl Holder for $t {
            fn identity(&self) -> &IdentityBlock {
                &self.identity
            }
            fn identity_mut(&mut self) -> &mut IdentityBlock {
                &mut self.identity
            }
            fn resolve(arm: &Arm, subscription_id: &str, group: &str, name: &str) -> Result<ResourceId> {
                arm.$resolve(subscription_id, group, name)
            }
        }
    )*};
}

holder!(Vm => vm_id, Vmss => vmss_id, WebApp => webapp_id);

/// Runs `$body` with the type alias `$h` set to the [`Holder`] type of `$owner`.
macro_rules! with_holder {
    ($owner:expr, $h:ident => $body:expr) => {
        match $owner {
            IdentityOwner::VirtualMachine => {
                type $h = Vm;
                $body
            }
            IdentityOwner::ScaleSet => {
                type $h = Vmss;
                $body
            }
            IdentityOwner::WebApp => {
                type $h = WebApp;
                $body
            }
        }
    };
}

/// An identity change asked of a resource. `az ... identity assign/remove` are turned into an
/// [`IdentityRequest`] from the resource's identities as they are under its lock, so concurrent
/// changes (e.g. enabling system-assigned while assigning a user-assigned one) both survive.
#[derive(Clone, Copy, Debug)]
enum Change<'a> {
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
    /// The request this change makes of a resource whose identities are `block`.
    fn request(self, block: &IdentityBlock) -> Result<Cow<'a, IdentityRequest>> {
        let current = || current_set(&block.user_assigned);
        Ok(match self {
            Change::Request(r) => Cow::Borrowed(r),
            Change::Assign { system, user } => Cow::Owned(spec::assign_request(
                block.system_assigned,
                &current(),
                system,
                user,
            )),
            Change::Remove { system, user } => Cow::Owned(spec::remove_request(
                block.system_assigned,
                &current(),
                system,
                user,
            )?),
        })
    }
}

impl Arm {
    /// Applies an `identity` block (REST PUT/PATCH) to a VM, scale set or web app with ARM's
    /// semantics ([`identity_spec::plan`]), then reconciles: MSRP creates or deletes the
    /// system-assigned identity (step 2) and the hosts are configured with the full set (step 3).
    ///
    /// # Errors
    /// [`ArmError::InvalidArgument`]/[`ArmError::BadRequest`] for contradictory requests or limits,
    /// [`ArmError::ResourceNotFound`] for a missing resource or identity,
    /// [`ArmError::ReconcilePending`] when MSRP or a host is down (the desired state is recorded
    /// and retried).
    pub async fn update_identity(
        &self,
        owner: IdentityOwner,
        id: &ResourceId,
        req: &IdentityRequest,
        mode: Mode,
    ) -> Result<IdentityBlock> {
        with_holder!(owner, H => self.change_identity::<H>(id, Change::Request(req), mode).await)
    }

    /// Enables the system-assigned identity and/or assigns user-assigned identities, keeping the
    /// ones the resource has (`az vm|vmss|webapp identity assign`).
    ///
    /// # Errors
    /// As [`Arm::update_identity`]; [`ArmError::InvalidArgument`] when nothing is asked.
    pub async fn assign_identity(
        &self,
        target: IdentityTarget<'_>,
        system_assigned: bool,
        user_assigned: &[String],
    ) -> Result<IdentityBlock> {
        if !system_assigned && user_assigned.is_empty() {
            return Err(ArmError::InvalidArgument(
                "specify system_assigned and/or at least one user-assigned identity".into(),
            ));
        }
        let change = Change::Assign {
            system: system_assigned,
            user: user_assigned,
        };
        self.change_target(target, change).await
    }

    /// Disables the system-assigned identity and/or unassigns user-assigned identities (`az
    /// vm|vmss|webapp identity remove`): the hosts are configured without them, then a disabled
    /// system-assigned identity is deleted in MSRP with its service principal and certificate (its
    /// lifecycle is tied to the resource,
    /// <https://learn.microsoft.com/entra/identity/managed-identities-azure-resources/how-managed-identities-work-vm>).
    /// Removing an identity the resource lacks is a no-op.
    ///
    /// # Errors
    /// As [`Arm::update_identity`].
    pub async fn remove_identity(
        &self,
        target: IdentityTarget<'_>,
        system_assigned: bool,
        user_assigned: &[String],
    ) -> Result<IdentityBlock> {
        let change = Change::Remove {
            system: system_assigned,
            user: user_assigned,
        };
        self.change_target(target, change).await
    }

    /// The resource's identity block (`az vm|vmss|webapp identity show`).
    ///
    /// # Errors
    /// Lookup errors ([`ArmError::ResourceNotFound`] etc.).
    pub fn get_identity(&self, target: IdentityTarget<'_>) -> Result<IdentityBlock> {
        let t = target;
        with_holder!(t.owner, H => {
            let id = H::resolve(self, t.subscription_id, t.group, t.name)?;
            Ok(self.live::<H>(&id)?.identity().clone())
        })
    }

    /// [`Arm::change_identity`] of the resource `t` names, as a PATCH.
    async fn change_target(
        &self,
        t: IdentityTarget<'_>,
        change: Change<'_>,
    ) -> Result<IdentityBlock> {
        with_holder!(t.owner, H => {
            let id = H::resolve(self, t.subscription_id, t.group, t.name)?;
            self.change_identity::<H>(&id, change, Mode::Patch).await
        })
    }

    /// The one identity change: under the resource's lock, plans `change` against its identities
    /// as they are, records the new desired state (flushed), then reconciles the record in hand
    /// (read once).
    async fn change_identity<H: Holder>(
        &self,
        id: &ResourceId,
        change: Change<'_>,
        mode: Mode,
    ) -> Result<IdentityBlock> {
        let _guard = self.locks.lock(&id.key()).await;
        let mut record: H = self.live(id)?;
        self.plan_change(id, record.identity_mut(), change, mode)?;
        *record.sync_mut() = SyncState::Pending;
        H::table(&self.store).put(&id.key(), &record)?;
        self.store.flush().await?;
        // Step 1 in the flow's trace; MSRP (2) and the host (3) continue it (misim_core::telemetry).
        let step = misim_core::telemetry::step_span(1, "arm");
        misim_core::telemetry::record_vm(&step, id.as_str());
        let result = tracing::Instrument::instrument(self.settle(&mut record), step.clone()).await;
        misim_core::telemetry::record_outcome(&step, &result);
        result.map_err(ArmError::pending)?;
        Ok(record.identity().clone())
    }

    /// Applies `change` to `block` (step 1): the plan's system-assigned flag and user-assigned
    /// entries, and a pending delete of a disabled system-assigned identity.
    fn plan_change(
        &self,
        owner: &ResourceId,
        block: &mut IdentityBlock,
        change: Change<'_>,
        mode: Mode,
    ) -> Result<()> {
        let req = change.request(block)?;
        let plan = spec::plan(&current_set(&block.user_assigned), &req, mode)?;
        let entries = self.plan_entries(&plan, &block.user_assigned)?;
        if plan.system_assigned && !block.system_assigned {
            info!(step = 1, resource = %owner, "enable system-assigned identity");
            block.system_delete_pending = false;
        }
        if !plan.system_assigned && (block.system_assigned || block.system_identity.is_some()) {
            info!(step = 1, resource = %owner, "disable system-assigned identity");
            block.system_delete_pending = true;
        }
        for added in &plan.added {
            info!(step = 1, resource = %owner, identity = %added, "assign user-assigned identity");
        }
        for (key, e) in &block.user_assigned {
            if !entries.contains_key(key) {
                info!(step = 1, resource = %owner, identity = %e.id, "remove user-assigned identity");
            }
        }
        block.system_assigned = plan.system_assigned;
        block.user_assigned = entries;
        Ok(())
    }

    /// Builds the new user-assigned entries for `plan`: entries already there are kept (dangling
    /// ones too, as Azure keeps them); added ones must exist.
    ///
    /// # Errors
    /// [`ArmError::ResourceNotFound`] for an added identity that does not exist.
    fn plan_entries(
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

    /// The identities `owner` should have served: creates its system-assigned identity in MSRP
    /// when missing (step 2) and refreshes the user-assigned entries' ids. Deleted user-assigned
    /// identities keep their dangling entry but are not served
    /// (<https://learn.microsoft.com/entra/identity/managed-identities-azure-resources/how-manage-user-assigned-managed-identities>).
    pub(crate) async fn identity_refs(
        &self,
        owner: &ResourceId,
        block: &mut IdentityBlock,
    ) -> Result<Vec<IdentityRef>> {
        let mut refs = Vec::new();
        if block.system_assigned {
            let ids = match &block.system_identity {
                Some(ids) => ids.clone(),
                None => {
                    let tenant = self.subscription(owner.subscription_id())?.tenant_id;
                    let ids = self
                        .peers
                        .create_identity(owner.as_str(), IdentityKind::SystemAssigned, &tenant)
                        .await?;
                    info!(step = 2, identity = %owner, client_id = %ids.client_id, principal_id = %ids.principal_id, "msrp created system-assigned identity");
                    block.system_identity = Some(ids.clone());
                    ids
                }
            };
            refs.push(IdentityRef {
                msi_res_id: owner.to_string(),
                kind: IdentityKind::SystemAssigned,
                ids,
            });
        }
        for entry in block.user_assigned.values_mut() {
            let Some(uami) = self.store.uami(&entry.id)?.filter(|u| !u.deleting) else {
                // Deleted UAMI: Azure keeps the dangling entry but it is no longer served.
                continue;
            };
            let ids = match uami.identity {
                Some(ids) => ids,
                None => {
                    self.reconcile::<crate::model::Uami>(&uami.id).await?;
                    self.store
                        .uami(&uami.id)?
                        .and_then(|u| u.identity)
                        .ok_or_else(|| {
                            ArmError::Unavailable(format!(
                                "identity '{}' is not created yet",
                                uami.id
                            ))
                        })?
                }
            };
            entry.principal_id = ids.principal_id.clone();
            entry.client_id = ids.client_id.clone();
            refs.push(IdentityRef {
                msi_res_id: uami.id.to_string(),
                kind: IdentityKind::UserAssigned,
                ids,
            });
        }
        Ok(refs)
    }

    /// Step 3 for one placement: the host of `target` serves `refs` (MSRP grants the host first).
    pub(crate) async fn configure_host(
        &self,
        host: &str,
        target: &ResourceId,
        refs: &[IdentityRef],
    ) -> Result<()> {
        self.peers
            .configure_identities(host, target.as_str(), refs)
            .await?;
        info!(step = 3, resource = %target, host, identities = refs.len(), "configured identities on host");
        Ok(())
    }

    /// Steps 2 and 3 for a resource placed on one host (a VM, a web app): its identities are
    /// created where missing and served by `host`, then a disabled system-assigned identity is
    /// deleted.
    pub(crate) async fn serve_identities(
        &self,
        owner: &ResourceId,
        host: &str,
        block: &mut IdentityBlock,
    ) -> Result<()> {
        let refs = self.identity_refs(owner, block).await?;
        self.configure_host(host, owner, &refs).await?;
        self.finish_system_delete(owner, block).await
    }

    /// Deletes in MSRP a system-assigned identity that was disabled (once the hosts no longer
    /// serve it).
    pub(crate) async fn finish_system_delete(
        &self,
        owner: &ResourceId,
        block: &mut IdentityBlock,
    ) -> Result<()> {
        if block.system_delete_pending && !block.system_assigned {
            self.drop_system_identity(owner, block).await?;
            block.system_delete_pending = false;
            info!(identity = %owner, "deleted system-assigned identity");
        }
        Ok(())
    }

    /// Deletes `owner`'s system-assigned identity in MSRP (absent ones succeed) and forgets its ids.
    pub(crate) async fn drop_system_identity(
        &self,
        owner: &ResourceId,
        block: &mut IdentityBlock,
    ) -> Result<()> {
        self.peers.delete_identity(owner.as_str()).await?;
        block.system_identity = None;
        Ok(())
    }

    /// Removes a resource being deleted from its host (when the host is configured) and deletes its
    /// system-assigned identity in MSRP.
    pub(crate) async fn unplace(
        &self,
        id: &ResourceId,
        host: &str,
        placed: &mut bool,
        block: &mut IdentityBlock,
    ) -> Result<()> {
        if self.peers.has_host(host) {
            self.peers.remove_vm(host, id.as_str()).await?;
            *placed = false;
        }
        self.drop_system_identity(id, block).await
    }

    /// Every VM, scale set and web app that has user-assigned identity `uami` (its users, which
    /// are reconfigured when it is deleted).
    pub(crate) fn users_of(&self, uami: &ResourceId) -> Result<Vec<(IdentityOwner, ResourceId)>> {
        let key = uami.key();
        let mut out = Vec::new();
        for vm in self.store.vms.values()? {
            if vm.identity.has_user_assigned(&key) {
                out.push((IdentityOwner::VirtualMachine, vm.id));
            }
        }
        for ss in self.store.vmss.values()? {
            if ss.identity.has_user_assigned(&key) {
                out.push((IdentityOwner::ScaleSet, ss.id));
            }
        }
        for site in self.store.sites.values()? {
            if site.identity.has_user_assigned(&key) {
                out.push((IdentityOwner::WebApp, site.id));
            }
        }
        Ok(out)
    }

    /// Reconciles the resource `id` of kind `owner` under its lock.
    ///
    /// # Errors
    /// As [`Arm::reconcile_resource`].
    pub(crate) async fn reconcile_owner(
        &self,
        owner: IdentityOwner,
        id: &ResourceId,
    ) -> Result<()> {
        with_holder!(owner, H => self.reconcile::<H>(id).await)
    }
}

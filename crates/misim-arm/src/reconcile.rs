//! The reconciler: carries each VM's and UAMI's recorded desired state to MSRP (step 2) and the
//! host (step 3). Every step is idempotent (MSRP and the host APIs are), so running it again after a
//! crash or a peer outage converges; a loop runs it for everything at startup and for dirty
//! resources every [`TICK_SECONDS`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use misim_core::ResourceId;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::clients::IdentityRef;
use crate::error::{ArmError, Result};
use crate::model::{IdentityIds, IdentityKind, SyncState, UserAssignedEntry, Vm};
use crate::service::Arm;

/// Seconds between reconcile passes over dirty resources.
pub const TICK_SECONDS: u64 = 5;

/// Seconds after a failed step (a peer was down) before the loop retries the dirty resources, so a
/// restarted peer is caught up within about a second instead of at the next tick (the crash soak,
/// docs/reliability.md, holds convergence to 5 s).
pub const RETRY_SECONDS: u64 = 1;

/// Woken by every failed reconcile step; process-wide, so with several ARMs in one process (tests) a
/// wake-up may be another's: that costs one extra pass over dirty resources.
static RETRY_SOON: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// Asks the reconcile loop for a pass over dirty resources in [`RETRY_SECONDS`].
pub(crate) fn retry_soon() {
    RETRY_SOON.notify_one();
}

impl Arm {
    /// Reconciles one VM under its lock.
    ///
    /// # Errors
    /// The first failing step's error; the VM is then marked failed and retried by the loop.
    pub async fn reconcile_vm(&self, id: &ResourceId) -> Result<()> {
        let _guard = self.locks.lock(&id.key()).await;
        self.reconcile_vm_locked(id).await
    }

    /// Reconciles one UAMI under its lock.
    ///
    /// # Errors
    /// As [`Arm::reconcile_vm`].
    pub async fn reconcile_uami(&self, id: &ResourceId) -> Result<()> {
        let _guard = self.locks.lock(&id.key()).await;
        self.reconcile_uami_locked(id).await
    }

    /// Reconciles a VM; the caller holds its lock. Progress made before a failure (e.g. the system
    /// identity MSRP created) is stored with the failure, so nothing is half-made or lost.
    pub(crate) async fn reconcile_vm_locked(&self, id: &ResourceId) -> Result<()> {
        let Some(mut vm) = self.store.vm(id)? else {
            return Ok(());
        };
        let result = self.apply_vm(&mut vm).await;
        match &result {
            Ok(()) if vm.deleting => {
                self.store.remove_vm_and_ip(&self.store.vms, &vm)?;
                info!(vm = %id, "deleted virtual machine");
            }
            Ok(()) => {
                vm.sync = SyncState::Succeeded;
                self.store.vms.put(&id.key(), &vm)?;
            }
            Err(e) => {
                warn!(vm = %id, error = %e, "vm reconcile failed; will retry");
                vm.sync = SyncState::Failed(e.to_string());
                self.store.vms.put(&id.key(), &vm)?;
                retry_soon();
            }
        }
        self.store.flush().await?;
        result
    }

    async fn apply_vm(&self, vm: &mut Vm) -> Result<()> {
        let id = vm.id.clone();
        let host_known = self.peers.host_names().contains(&vm.host);
        if vm.deleting {
            if host_known {
                self.peers.remove_vm(&vm.host, id.as_str()).await?;
                vm.placed = false;
            }
            self.peers.delete_identity(id.as_str()).await?;
            vm.system_identity = None;
            return Ok(());
        }
        if !vm.placed {
            self.place(vm).await?;
        }
        let refs = self
            .identity_refs(
                &id,
                vm.system_assigned,
                &mut vm.system_identity,
                &mut vm.user_assigned,
            )
            .await?;
        self.peers
            .configure_identities(&vm.host, id.as_str(), &refs)
            .await?;
        info!(step = 3, vm = %id, host = %vm.host, identities = refs.len(), "configured vm identities on host");
        self.apply_extensions(vm).await?;
        if vm.system_delete_pending && !vm.system_assigned {
            self.peers.delete_identity(id.as_str()).await?;
            vm.system_identity = None;
            vm.system_delete_pending = false;
            info!(identity = %id, "deleted system-assigned identity");
        }
        Ok(())
    }

    /// Places a VM or scale-set instance on its host (`PlaceVm`, idempotent).
    pub(crate) async fn place(&self, vm: &mut Vm) -> Result<()> {
        let id = &vm.id;
        let (name, scale_set) = match &vm.scale_set {
            Some(ss) => (
                format!("{}_{}", ss.name(), id.name()),
                ss.name().to_string(),
            ),
            None => (id.name().to_string(), String::new()),
        };
        let placement = crate::clients::VmPlacement {
            resource_id: id.to_string(),
            vm_id: vm.vm_id.clone(),
            name,
            subscription_id: id.subscription_id().to_string(),
            resource_group: id.resource_group_name().unwrap_or_default().to_string(),
            location: vm.location.clone(),
            vm_size: vm.vm_size.clone(),
            os_type: vm.os_type.clone(),
            tags: vm.tags.clone(),
            private_ip: vm.private_ip.clone(),
            mac_address: vm.mac_address.clone(),
            vm_scale_set_name: scale_set,
        };
        vm.imds_endpoint = self.peers.place_vm(&vm.host, &placement).await?;
        vm.placed = true;
        info!(vm = %id, host = %vm.host, imds = %vm.imds_endpoint, "placed vm on host");
        Ok(())
    }

    /// The identities a VM or scale set (`owner`) should have served: creates its system-assigned
    /// identity in MSRP when missing (step 2) and refreshes the user-assigned entries' ids. Deleted
    /// user-assigned identities keep their dangling entry but are not served
    /// (<https://learn.microsoft.com/entra/identity/managed-identities-azure-resources/how-manage-user-assigned-managed-identities>).
    pub(crate) async fn identity_refs(
        &self,
        owner: &ResourceId,
        system_assigned: bool,
        system_identity: &mut Option<IdentityIds>,
        user_assigned: &mut BTreeMap<String, UserAssignedEntry>,
    ) -> Result<Vec<IdentityRef>> {
        let mut refs = Vec::new();
        if system_assigned {
            let ids = match system_identity {
                Some(ids) => ids.clone(),
                None => {
                    let tenant = self.subscription(owner.subscription_id())?.tenant_id;
                    let ids = self
                        .peers
                        .create_identity(owner.as_str(), IdentityKind::SystemAssigned, &tenant)
                        .await?;
                    info!(step = 2, identity = %owner, client_id = %ids.client_id, principal_id = %ids.principal_id, "msrp created system-assigned identity");
                    *system_identity = Some(ids.clone());
                    ids
                }
            };
            refs.push(IdentityRef {
                msi_res_id: owner.to_string(),
                kind: IdentityKind::SystemAssigned,
                ids,
            });
        }
        for entry in user_assigned.values_mut() {
            let Some(uami) = self.store.uami(&entry.id)?.filter(|u| !u.deleting) else {
                // Deleted UAMI: Azure keeps the dangling entry but it is no longer served.
                continue;
            };
            let ids = match uami.identity {
                Some(ids) => ids,
                None => {
                    self.reconcile_uami(&uami.id).await?;
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

    /// Reconciles a UAMI; the caller holds its lock.
    pub(crate) async fn reconcile_uami_locked(&self, id: &ResourceId) -> Result<()> {
        let Some(mut uami) = self.store.uami(id)? else {
            return Ok(());
        };
        let result = if uami.deleting {
            self.peers.delete_identity(id.as_str()).await
        } else if uami.identity.is_none() {
            match self
                .peers
                .create_identity(id.as_str(), IdentityKind::UserAssigned, &uami.tenant_id)
                .await
            {
                Ok(ids) => {
                    info!(step = 2, identity = %id, client_id = %ids.client_id, principal_id = %ids.principal_id, "msrp created user-assigned identity");
                    uami.identity = Some(ids);
                    Ok(())
                }
                Err(e) => Err(e),
            }
        } else {
            Ok(())
        };
        match &result {
            Ok(()) if uami.deleting => {
                self.store.uamis.remove(&id.key())?;
                // Its federated identity credentials go with it (Azure AD's copy went with the principal).
                self.forget_federated_credentials(id)?;
                info!(identity = %id, "deleted user-assigned identity");
            }
            Ok(()) => {
                uami.sync = SyncState::Succeeded;
                self.store.uamis.put(&id.key(), &uami)?;
            }
            Err(e) => {
                warn!(identity = %id, error = %e, "identity reconcile failed; will retry");
                uami.sync = SyncState::Failed(e.to_string());
                self.store.uamis.put(&id.key(), &uami)?;
                retry_soon();
            }
        }
        self.store.flush().await?;
        result
    }

    /// One pass over UAMIs, VMs, scale sets, then web apps (all of them, or only dirty ones); returns how many failed.
    ///
    /// # Errors
    /// Store failures while listing.
    pub async fn reconcile_all(&self, only_dirty: bool) -> Result<usize> {
        let mut failed = 0;
        for uami in self.store.uamis.values()? {
            if (!only_dirty || uami.sync.is_dirty()) && self.reconcile_uami(&uami.id).await.is_err()
            {
                failed += 1;
            }
        }
        for vm in self.store.vms.values()? {
            if (!only_dirty || vm.sync.is_dirty()) && self.reconcile_vm(&vm.id).await.is_err() {
                failed += 1;
            }
        }
        for ss in self.store.vmss.values()? {
            if (!only_dirty || ss.sync.is_dirty()) && self.reconcile_vmss(&ss.id).await.is_err() {
                failed += 1;
            }
        }
        failed += self.reconcile_webapps(only_dirty).await?;
        Ok(failed)
    }
}

/// Runs a full pass, then a pass over dirty resources every [`TICK_SECONDS`] (or [`RETRY_SECONDS`]
/// after a failed step), until `shutdown`.
pub async fn run_loop(arm: Arc<Arm>, shutdown: CancellationToken) {
    let mut full = true;
    loop {
        // Cross-party differences (a peer that lost its store) become dirty resources first.
        if let Err(e) = arm.heal().await {
            warn!(error = %e, "consistency check failed");
        }
        match arm.reconcile_all(!full).await {
            Ok(0) => full = false,
            Ok(n) => {
                full = false;
                warn!(failed = n, "reconcile pass left resources to retry");
            }
            Err(e) => warn!(error = %e, "reconcile pass failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(TICK_SECONDS)) => {}
            _ = async {
                RETRY_SOON.notified().await;
                tokio::time::sleep(Duration::from_secs(RETRY_SECONDS)).await;
            } => {}
        }
    }
}

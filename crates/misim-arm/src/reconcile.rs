//! The reconciler: carries each VM's and UAMI's recorded desired state to MSRP (step 2) and the
//! host (step 3). Every step is idempotent (MSRP and the host APIs are), so running it again after a
//! crash or a peer outage converges; a loop runs it for everything at startup and for dirty
//! resources every [`TICK_SECONDS`].

use std::sync::Arc;
use std::time::Duration;

use misim_core::ResourceId;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::error::{ArmError, Result};
use crate::identity::IdentityOwner;
use crate::model::{IdentityKind, SyncState, Uami, Vm, Vmss, WebApp};
use crate::service::{Arm, Record};
use crate::store::{record_fields, Stored};

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

impl Stored for Vm {
    const TYPE: &'static str = "Microsoft.Compute/virtualMachines";
    record_fields!(vms);
}

impl Record for Vm {
    async fn apply(arm: &Arm, vm: &mut Self) -> Result<()> {
        if vm.deleting {
            return arm
                .unplace(&vm.id, &vm.host, &mut vm.placed, &mut vm.identity)
                .await;
        }
        if !vm.placed {
            arm.place(vm).await?;
        }
        arm.serve_identities(&vm.id, &vm.host, &mut vm.identity)
            .await?;
        arm.apply_extensions(vm).await
    }
    fn forget(arm: &Arm, vm: &Self) -> Result<()> {
        arm.store.remove_vm(&arm.store.vms, vm)
    }
}

impl Stored for Uami {
    const TYPE: &'static str = "Microsoft.ManagedIdentity/userAssignedIdentities";
    record_fields!(uamis);
}

impl Record for Uami {
    async fn apply(arm: &Arm, uami: &mut Self) -> Result<()> {
        let id = uami.id.as_str();
        if uami.deleting {
            return arm.peers.delete_identity(id).await;
        }
        if uami.identity.is_none() {
            let ids = arm
                .peers
                .create_identity(id, IdentityKind::UserAssigned, &uami.tenant_id)
                .await?;
            info!(step = 2, identity = %id, client_id = %ids.client_id, principal_id = %ids.principal_id, "msrp created user-assigned identity");
            uami.identity = Some(ids);
        }
        Ok(())
    }
    fn forget(arm: &Arm, uami: &Self) -> Result<()> {
        // Its federated identity credentials go with it (Azure AD's copy went with the principal).
        arm.store.remove_uami(uami)
    }
}

impl Arm {
    /// Reconciles the VM, scale set, web app or user-assigned identity `id` under its lock (the
    /// reconcile loop does this for every dirty resource; tests call it to converge at once).
    ///
    /// # Errors
    /// The first failing step's error (the resource is then marked failed and retried by the
    /// loop); [`ArmError::InvalidArgument`] for another kind of resource.
    pub async fn reconcile_resource(&self, id: &ResourceId) -> Result<()> {
        if id.is_type(Vm::TYPE) {
            self.reconcile_owner(IdentityOwner::VirtualMachine, id)
                .await
        } else if id.is_type(Vmss::TYPE) {
            self.reconcile_owner(IdentityOwner::ScaleSet, id).await
        } else if id.is_type(WebApp::TYPE) {
            self.reconcile_owner(IdentityOwner::WebApp, id).await
        } else if id.is_type(Uami::TYPE) {
            self.reconcile::<Uami>(id).await
        } else {
            Err(ArmError::InvalidArgument(format!(
                "'{id}' is not a resource ARM reconciles"
            )))
        }
    }

    /// Reconciles record `id` of type `R` under its lock.
    pub(crate) async fn reconcile<R: Record>(&self, id: &ResourceId) -> Result<()> {
        let _guard = self.locks.lock(&id.key()).await;
        self.reconcile_locked::<R>(id).await
    }

    /// Reconciles record `id`; the caller holds its lock.
    pub(crate) async fn reconcile_locked<R: Record>(&self, id: &ResourceId) -> Result<()> {
        match R::table(&self.store).get(&id.key())? {
            Some(mut r) => self.settle(&mut r).await,
            None => Ok(()),
        }
    }

    /// Reconciles the record in hand (the caller holds its lock and has just read or written it):
    /// carries it to its peers, then stores the outcome: forgotten once a delete finished,
    /// `Succeeded`, or `Failed` with the progress made before the failure (e.g. the system
    /// identity MSRP created), so nothing is half-made or lost, and the loop retries soon.
    ///
    /// # Errors
    /// The first failing step's error.
    pub(crate) async fn settle<R: Record>(&self, r: &mut R) -> Result<()> {
        let result = R::apply(self, r).await;
        let key = r.id().key();
        match &result {
            Ok(()) if r.deleting() => {
                R::forget(self, r)?;
                info!(resource = %r.id(), "deleted {}", R::TYPE);
            }
            Ok(()) => {
                *r.sync_mut() = SyncState::Succeeded;
                R::table(&self.store).put(&key, r)?;
            }
            Err(e) => {
                warn!(resource = %r.id(), error = %e, "reconcile failed; will retry");
                *r.sync_mut() = SyncState::Failed(e.to_string());
                R::table(&self.store).put(&key, r)?;
                retry_soon();
            }
        }
        self.store.flush().await?;
        result
    }

    /// Places a VM or scale-set instance on its host (`PlaceVm`, idempotent).
    pub(crate) async fn place(&self, vm: &mut Vm) -> Result<()> {
        vm.imds_endpoint = self.peers.place_vm(&vm.host, vm).await?;
        vm.placed = true;
        info!(vm = %vm.id, host = %vm.host, imds = %vm.imds_endpoint, "placed vm on host");
        Ok(())
    }

    /// One pass over UAMIs, VMs, scale sets, then web apps (all of them, or only dirty ones);
    /// returns how many failed.
    ///
    /// # Errors
    /// Store failures while listing.
    pub async fn reconcile_all(&self, only_dirty: bool) -> Result<usize> {
        Ok(self.reconcile_pass::<Uami>(only_dirty).await?
            + self.reconcile_pass::<Vm>(only_dirty).await?
            + self.reconcile_pass::<Vmss>(only_dirty).await?
            + self.reconcile_pass::<WebApp>(only_dirty).await?)
    }

    /// One pass over the records of type `R`; returns how many failed.
    async fn reconcile_pass<R: Record>(&self, only_dirty: bool) -> Result<usize> {
        let mut failed = 0;
        for mut r in R::table(&self.store).values()? {
            if (!only_dirty || r.sync_mut().is_dirty())
                && self.reconcile::<R>(&r.id().clone()).await.is_err()
            {
                failed += 1;
            }
        }
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

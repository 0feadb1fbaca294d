//! User-assigned managed identities as ARM resources (`Microsoft.ManagedIdentity/userAssignedIdentities`):
//! create (MSRP makes the service principal and certificate, step 2), read, list and delete (hosts
//! stop serving it, then MSRP deletes it; VMs keep a dangling entry as Azure does).

use std::collections::BTreeMap;

use misim_core::ResourceId;
use tracing::info;

use crate::error::{ArmError, Result};
use crate::model::{SyncState, Uami};
use crate::service::{validate_name, Arm};

const UAMI_TYPE: &str = "Microsoft.ManagedIdentity/userAssignedIdentities";

/// ARM's 404 `ResourceNotFound` for a missing user-assigned identity.
pub(crate) fn uami_not_found(id: &ResourceId) -> ArmError {
    ArmError::ResourceNotFound {
        resource_type: UAMI_TYPE.into(),
        name: id.name().to_string(),
        group: id.resource_group_name().unwrap_or_default().to_string(),
    }
}

impl Arm {
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
    /// entry with the old ids, as Azure does
    /// (<https://learn.microsoft.com/entra/identity/managed-identities-azure-resources/how-manage-user-assigned-managed-identities>).
    /// Deleting an absent identity succeeds.
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

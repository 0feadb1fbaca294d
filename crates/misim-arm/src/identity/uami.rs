//! User-assigned managed identities as ARM resources (`Microsoft.ManagedIdentity/userAssignedIdentities`):
//! create (MSRP makes the service principal and certificate, step 2), read, list and delete (hosts
//! stop serving it, then MSRP deletes it; VMs keep a dangling entry as Azure does).

use std::collections::BTreeMap;

use misim_core::ResourceId;
use tracing::info;

use crate::error::not_found;
use crate::error::{ArmError, Result};
use crate::model::{SyncState, Uami};
use crate::resources::vms::or_default;
use crate::service::{validate_name, Arm};
use crate::store::Stored;

/// ARM's 404 `ResourceNotFound` for a missing user-assigned identity.
pub(crate) fn uami_not_found(id: &ResourceId) -> ArmError {
    not_found(Uami::TYPE, id)
}

fn valid_uami_name(name: &str) -> Result<()> {
    validate_name("user-assigned identity", name)
}

impl Arm {
    fn uami_id(&self, subscription_id: &str, group: &str, name: &str) -> Result<ResourceId> {
        self.resource_in(subscription_id, group, Uami::TYPE, name, valid_uami_name)
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
        valid_uami_name(name)?;
        let id = self.uami_id(subscription_id, group, name)?;
        let location = or_default(location.to_string(), &g.location);
        let tenant_id = self.subscription(g.id.subscription_id())?.tenant_id;
        let (_guard, existing) = self.begin_create::<Uami>(&id, &location).await?;
        if let Some(existing) = existing {
            return Ok(existing);
        }
        let mut uami = Uami {
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
        self.settle(&mut uami).await.map_err(ArmError::pending)?;
        Ok(uami)
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
        let id = self.uami_id(subscription_id, group, name)?;
        self.live(&id)
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
        self.list_in(subscription_id, group)
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
            Err(ArmError::ResourceNotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        {
            let _guard = self.locks.lock(&id.key()).await;
            let Some(mut uami) = self.store.uami(&id)? else {
                return Ok(());
            };
            uami.mark_deleting();
            self.store.uamis.put(&id.key(), &uami)?;
            self.store.flush().await?;
            info!(identity = %id, "deleting user-assigned identity");
        }
        // Hosts stop serving it first (its users keep the dangling entry), then MSRP deletes it.
        let mut pending = None;
        for (owner, user) in self.users_of(&id)? {
            if let Err(e) = self.reconcile_owner(owner, &user).await {
                pending.get_or_insert(e);
            }
        }
        self.reconcile::<Uami>(&id)
            .await
            .map_err(ArmError::pending)?;
        match pending {
            Some(e) => Err(ArmError::pending(e)),
            None => Ok(()),
        }
    }
}

//! The host's persistent state: one sled table of placed VMs, each with its IMDS port, its identities
//! and their credentials. A VM and its identity set are written as one value, so a reconfiguration is
//! never half-applied.

use misim_core::{ResourceId, Store, Table};

use crate::error::Result;
use crate::model::VmRecord;

/// The host store's schema version ([`misim_core::Store::open_party`]).
pub const SCHEMA_VERSION: u32 = 1;

/// Typed access to the host's database.
#[derive(Clone)]
pub struct HostStore {
    store: Store,
    vms: Table<VmRecord>,
}

impl HostStore {
    /// Wraps an opened store.
    ///
    /// # Errors
    /// [`crate::ImdsError::Store`] when the table cannot be opened.
    pub fn new(store: Store) -> Result<Self> {
        let vms = store.table("vms")?;
        Ok(HostStore { store, vms })
    }

    /// All placed VMs.
    ///
    /// # Errors
    /// [`crate::ImdsError::Store`] on I/O or decoding failure.
    pub fn all(&self) -> Result<Vec<VmRecord>> {
        Ok(self.vms.values()?)
    }

    /// Writes a VM record and flushes it to disk before returning (acknowledged writes survive a crash).
    ///
    /// # Errors
    /// [`crate::ImdsError::Store`] on I/O failure.
    pub async fn put(&self, record: &VmRecord) -> Result<()> {
        self.vms.put(&record.vm.resource_id.key(), record)?;
        self.store.flush().await?;
        Ok(())
    }

    /// Removes a VM record (absent is fine) and flushes.
    ///
    /// # Errors
    /// [`crate::ImdsError::Store`] on I/O failure.
    pub async fn remove(&self, vm: &ResourceId) -> Result<()> {
        self.vms.remove(&vm.key())?;
        self.store.flush().await?;
        Ok(())
    }
}

//! The host's persistent state: a table of placed VMs (metadata, IMDS port, identities) and a table
//! of credentials, one per identity on this host however many VMs have it (issue #18). A VM and its
//! identity set are written as one value, so a reconfiguration is never half-applied; new
//! credentials are written before the VM that refers to them, under the same flush.
//!
//! Schema 1 kept every identity's credential inline in each VM record; [`HostStore::load`] moves
//! such credentials to the `credentials` table and rewrites the VM records (schema 2).

use std::collections::HashMap;

use misim_core::{ResourceId, Store, Table};

use crate::error::AgentError;

type Result<T> = std::result::Result<T, AgentError>;
use crate::model::{Credential, StoredVm, VmRecord};

/// The host store's schema version ([`misim_core::Store::open_party`]): 2 keeps credentials in their
/// own table; stores of version 1 are migrated on open ([`HostStore::load`]).
pub const SCHEMA_VERSION: u32 = 2;

/// Key of the shared loopback IMDS listener's port in the `ports` table.
const SHARED_IMDS: &str = "imds";

/// Typed access to the host's database.
#[derive(Clone)]
pub struct HostStore {
    store: Store,
    vms: Table<StoredVm>,
    credentials: Table<Credential>,
    ports: Table<u16>,
}

/// What [`HostStore::load`] read: the stored VMs (credentials of schema 1 moved out of them) and
/// the credentials by [`crate::model::IdentityRef::credential_key`].
pub struct Loaded {
    /// The placed VMs, identities without credentials.
    pub vms: Vec<StoredVm>,
    /// One credential per identity.
    pub credentials: HashMap<String, Credential>,
}

impl HostStore {
    /// Wraps an opened store.
    ///
    /// # Errors
    /// [`AgentError::Store`] when a table cannot be opened.
    pub fn new(store: Store) -> Result<Self> {
        let vms = store.table("vms")?;
        let credentials = store.table("credentials")?;
        let ports = store.table("ports")?;
        Ok(HostStore {
            store,
            vms,
            credentials,
            ports,
        })
    }

    /// All placed VMs and their identities' credentials. Credentials stored inline by schema 1 are
    /// moved to the `credentials` table (the first VM's copy of an identity wins; the copies were
    /// equal unless a renewal was half-applied, and the next refresh fetches the current one) and
    /// the VM records rewritten without them, then flushed.
    ///
    /// # Errors
    /// [`AgentError::Store`] on I/O or decoding failure.
    pub async fn load(&self) -> Result<Loaded> {
        let mut credentials: HashMap<String, Credential> =
            self.credentials.scan_prefix("")?.into_iter().collect();
        let mut vms = self.vms.values()?;
        let mut migrated = false;
        for vm in &mut vms {
            let mut inline = false;
            for held in &mut vm.identities {
                if let Some(c) = held.credential.take() {
                    inline = true;
                    let key = held.identity.credential_key();
                    if let std::collections::hash_map::Entry::Vacant(e) = credentials.entry(key) {
                        self.credentials.put(e.key(), &c)?;
                        e.insert(c);
                    }
                }
            }
            if inline {
                self.vms.put(&vm.vm.resource_id.key(), vm)?;
                migrated = true;
            }
        }
        if migrated {
            self.store.flush().await?;
        }
        Ok(Loaded { vms, credentials })
    }

    /// Writes a VM record and flushes it to disk before returning (acknowledged writes survive a crash).
    ///
    /// # Errors
    /// [`AgentError::Store`] on I/O failure.
    pub async fn put(&self, record: &VmRecord) -> Result<()> {
        self.vms
            .put(&record.vm.resource_id.key(), &record.stored())?;
        self.store.flush().await?;
        Ok(())
    }

    /// Writes a new credential (flushed with the next flush: the VM record that refers to it).
    ///
    /// # Errors
    /// [`AgentError::Store`] on I/O failure.
    pub fn put_credential(&self, key: &str, credential: &Credential) -> Result<()> {
        Ok(self.credentials.put(key, credential)?)
    }

    /// Writes renewed credentials (by credential key) and flushes.
    ///
    /// # Errors
    /// [`AgentError::Store`] on I/O failure.
    pub async fn put_credentials(&self, credentials: &[(String, &Credential)]) -> Result<()> {
        for (key, credential) in credentials {
            self.credentials.put(key, credential)?;
        }
        self.store.flush().await?;
        Ok(())
    }

    /// Deletes credentials no VM uses any more (flushed with the next write; one left behind by a
    /// crash is deleted on the next start).
    ///
    /// # Errors
    /// [`AgentError::Store`] on I/O failure.
    pub fn remove_credentials(&self, keys: &[String]) -> Result<()> {
        for key in keys {
            self.credentials.remove(key)?;
        }
        Ok(())
    }

    /// The port of the shared loopback IMDS listener of the previous run (0: none yet).
    ///
    /// # Errors
    /// [`AgentError::Store`] on I/O or decoding failure.
    pub fn shared_port(&self) -> Result<u16> {
        Ok(self.ports.get(SHARED_IMDS)?.unwrap_or(0))
    }

    /// Stores the port of the shared loopback IMDS listener and flushes.
    ///
    /// # Errors
    /// [`AgentError::Store`] on I/O failure.
    pub async fn set_shared_port(&self, port: u16) -> Result<()> {
        self.ports.put(SHARED_IMDS, &port)?;
        self.store.flush().await?;
        Ok(())
    }

    /// Removes a VM record (absent is fine) and flushes.
    ///
    /// # Errors
    /// [`AgentError::Store`] on I/O failure.
    pub async fn remove(&self, vm: &ResourceId) -> Result<()> {
        self.vms.remove(&vm.key())?;
        self.store.flush().await?;
        Ok(())
    }
}

//! MSRP's persistent state: one sled table of identity records keyed by the lower-cased resource ID,
//! flushed before any write is acknowledged.

use misim_core::{ResourceId, Store, Table};

use crate::error::Result;
use crate::identity::IdentityRecord;

const IDENTITIES: &str = "identities";
const HOST_ACCESS: &str = "host_access";

/// MSRP's schema version ([`misim_core::Store::open_party`]).
pub const SCHEMA_VERSION: u32 = 1;

/// What ARM grants a host: VM `vm`, placed on `host`, has `identities` (empty: none, the grant is
/// revoked). A host is handed only the credentials of identities some VM on it has
/// (<https://learn.microsoft.com/entra/identity/managed-identities-azure-resources/how-managed-identities-work-vm>).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostGrant {
    /// The host's name (as in its control-plane certificate, `host:NAME`).
    pub host: String,
    /// The VM's resource ID.
    pub vm: ResourceId,
    /// The identities the VM has.
    pub identities: Vec<ResourceId>,
}

/// The identity table behind MSRP, and the host-access grants ARM sets.
#[derive(Clone)]
pub struct IdentityStore {
    store: Store,
    identities: Table<IdentityRecord>,
    /// Key `"<host>\n<lower-cased VM id>"` → lower-cased identity resource IDs the VM has.
    host_access: Table<Vec<String>>,
}

impl IdentityStore {
    /// Opens the identity table in `store`.
    ///
    /// # Errors
    /// [`crate::MsrpError::Store`] when sled cannot open the table.
    pub fn new(store: Store) -> Result<Self> {
        let identities = store.table(IDENTITIES)?;
        let host_access = store.table(HOST_ACCESS)?;
        Ok(IdentityStore {
            store,
            identities,
            host_access,
        })
    }

    /// Replaces the identities of the grant's VM on its host (none: removes the grant) and flushes.
    ///
    /// # Errors
    /// [`crate::MsrpError::Store`] on a sled failure.
    pub async fn set_host_access(&self, grant: &HostGrant) -> Result<()> {
        let key = format!("{}\n{}", grant.host, grant.vm.key());
        if grant.identities.is_empty() {
            self.host_access.remove(&key)?;
        } else {
            let mut ids: Vec<String> = grant.identities.iter().map(ResourceId::key).collect();
            ids.sort();
            ids.dedup();
            self.host_access.put(&key, &ids)?;
        }
        self.store.flush().await?;
        Ok(())
    }

    /// Whether any VM placed on `host` has been granted identity `id`.
    ///
    /// # Errors
    /// [`crate::MsrpError::Store`] on a sled or decoding failure.
    pub fn host_has_access(&self, host: &str, id: &ResourceId) -> Result<bool> {
        let prefix = format!("{host}\n");
        let key = id.key();
        Ok(self
            .host_access
            .scan_prefix(&prefix)?
            .iter()
            .any(|(_, ids)| ids.binary_search(&key).is_ok()))
    }

    /// The record of `id`, if any.
    ///
    /// # Errors
    /// [`crate::MsrpError::Store`] on a sled or decoding failure.
    pub fn get(&self, id: &ResourceId) -> Result<Option<IdentityRecord>> {
        Ok(self.identities.get(&id.key())?)
    }

    /// All records, ordered by lower-cased resource ID.
    ///
    /// # Errors
    /// [`crate::MsrpError::Store`] on a sled or decoding failure.
    pub fn list(&self) -> Result<Vec<IdentityRecord>> {
        Ok(self.identities.values()?)
    }

    /// Writes `record` under `id` and flushes it to disk before returning.
    ///
    /// # Errors
    /// [`crate::MsrpError::Store`] on a sled failure.
    pub async fn put(&self, id: &ResourceId, record: &IdentityRecord) -> Result<()> {
        self.identities.put(&id.key(), record)?;
        self.store.flush().await?;
        Ok(())
    }

    /// Removes the record of `id` (if any) and flushes; returns whether one existed.
    ///
    /// # Errors
    /// [`crate::MsrpError::Store`] on a sled failure.
    pub async fn remove(&self, id: &ResourceId) -> Result<bool> {
        let existed = self.identities.remove(&id.key())?.is_some();
        self.store.flush().await?;
        Ok(existed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{IdentityKind, IdentityState, StoredCredential};

    fn record(id: &ResourceId) -> IdentityRecord {
        IdentityRecord {
            resource_id: id.as_str().to_string(),
            kind: IdentityKind::UserAssigned,
            tenant_id: "t".into(),
            client_id: None,
            principal_id: None,
            state: IdentityState::Pending,
            current: StoredCredential {
                private_key_pkcs8_der: vec![1, 2, 3],
                certificate_der: vec![4, 5],
                thumbprint_sha1_hex: "AB".into(),
                not_before: 10,
                not_after: 20,
                aad_key_id: None,
            },
            previous: Vec::new(),
            next: None,
        }
    }

    #[tokio::test]
    async fn records_are_keyed_case_insensitively_and_blobs_round_trip() {
        let store = IdentityStore::new(Store::temporary().unwrap()).unwrap();
        let id = ResourceId::user_assigned_identity("sub", "RG", "Id1").unwrap();
        store.put(&id, &record(&id)).await.unwrap();
        let lower = ResourceId::parse(&id.as_str().to_lowercase()).unwrap();
        let got = store.get(&lower).unwrap().unwrap();
        assert_eq!(got.resource_id, id.as_str());
        assert_eq!(got.current.private_key_pkcs8_der, vec![1, 2, 3]);
        assert_eq!(got.current.certificate_der, vec![4, 5]);
        assert_eq!(store.list().unwrap().len(), 1);
        assert!(store.remove(&lower).await.unwrap());
        assert!(!store.remove(&id).await.unwrap());
        assert!(store.get(&id).unwrap().is_none());
    }
}

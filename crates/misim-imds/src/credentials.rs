//! Keeping the identities' credentials current: one credential per identity on the host
//! ([`Registry`], shared by every VM that has the identity), the first fetch from MSRP when an
//! identity is configured (step 3), and the periodic re-fetch that brings MSRP's certificate
//! renewals to the host (MSRP renews before expiry; the host must present the current certificate
//! to Azure AD).

use std::collections::HashMap;
use std::sync::Mutex;

use futures_util::stream::{self, StreamExt};
use tracing::{info, warn};

use crate::error::AgentError;

type Result<T> = std::result::Result<T, AgentError>;
use crate::grpc::msrp::MsrpCredentials;
use crate::model::{Credential, HostCredential, IdentityRef, SharedCredential};
use crate::store::HostStore;

/// How many credentials are requested from MSRP at once (configure and refresh).
const PARALLEL_FETCHES: usize = 16;

/// The host's credentials, one per identity ([`IdentityRef::credential_key`]).
#[derive(Debug, Default)]
pub(crate) struct Registry {
    by_key: Mutex<HashMap<String, (IdentityRef, SharedCredential)>>,
}

type Entries = HashMap<String, (IdentityRef, SharedCredential)>;

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.by_key.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The credential of `identity`, when some VM of the host has it.
    pub(crate) fn get(&self, identity: &IdentityRef) -> Option<SharedCredential> {
        self.lock()
            .get(&identity.credential_key())
            .map(|(_, c)| c.clone())
    }

    /// Files a credential read from the store (on start).
    pub(crate) fn load(
        &self,
        identity: &IdentityRef,
        credential: HostCredential,
    ) -> SharedCredential {
        let shared = SharedCredential::new(credential);
        self.lock().insert(
            identity.credential_key(),
            (identity.clone(), shared.clone()),
        );
        shared
    }

    /// Files `credential` for `identity` and writes it to `store` (flushed with the VM record that
    /// refers to it), or returns the one filed meanwhile. Filing and pruning write the store under
    /// the registry's lock, so a deletion never overtakes a new write of the same credential.
    ///
    /// # Errors
    /// [`AgentError::Store`] when the write fails (nothing is filed then).
    pub(crate) fn insert(
        &self,
        identity: &IdentityRef,
        credential: HostCredential,
        store: &HostStore,
    ) -> Result<SharedCredential> {
        let key = identity.credential_key();
        let mut entries = self.lock();
        if let Some((_, existing)) = entries.get(&key) {
            return Ok(existing.clone());
        }
        store.put_credential(&key, &credential.credential)?;
        let shared = SharedCredential::new(credential);
        entries.insert(key, (identity.clone(), shared.clone()));
        Ok(shared)
    }

    /// Every credential with its identity.
    fn all(&self) -> Vec<(String, IdentityRef, SharedCredential)> {
        self.lock()
            .iter()
            .map(|(k, (i, c))| (k.clone(), i.clone(), c.clone()))
            .collect()
    }

    /// Forgets the credentials no VM record (nor a request or change in flight) holds any more and
    /// deletes them from `store`.
    ///
    /// # Errors
    /// [`AgentError::Store`] when a deletion fails (the credential is deleted on the next start).
    pub(crate) fn prune(&self, store: &HostStore) -> Result<()> {
        let mut entries = self.lock();
        let gone: Vec<String> = entries
            .iter()
            .filter(|(_, (_, c))| c.holders() == 1)
            .map(|(k, _)| k.clone())
            .collect();
        for key in &gone {
            entries.remove(key);
        }
        store.remove_credentials(&gone)
    }
}

/// The credentials of `identities` from MSRP, in order, [`PARALLEL_FETCHES`] at a time (a VM may
/// get up to 1000 identities in one call), each checked and its key parsed.
///
/// # Errors
/// The first error of [`fetch`]; the other fetches are then abandoned.
pub(crate) async fn fetch_all(
    msrp: &MsrpCredentials,
    host: &str,
    identities: &[IdentityRef],
) -> Result<Vec<HostCredential>> {
    // In the caller's span: the fetches continue the flow's trace (misim_core::telemetry).
    stream::iter(identities.iter().cloned())
        .map(|identity| {
            let fetch_one = async move { fetch(msrp, host, &identity).await };
            tracing::Instrument::in_current_span(fetch_one)
        })
        .buffered(PARALLEL_FETCHES)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// Fetches every credential of `registry` from MSRP again, [`PARALLEL_FETCHES`] at a time, and
/// keeps the ones whose certificate changed (MSRP renews certificates before they expire; this is
/// how renewals reach the host): one fetch per identity however many VMs have it. The renewed
/// credentials are stored, then replace the old ones for every VM at once. Failures are logged
/// and leave the old credential in place. Returns the renewed identities.
pub(crate) async fn refresh(
    registry: &Registry,
    store: &HostStore,
    msrp: &MsrpCredentials,
    host: &str,
) -> Vec<IdentityRef> {
    let fetched: Vec<_> = stream::iter(registry.all())
        .map(|(key, identity, shared)| async move {
            let got = fetch(msrp, host, &identity).await;
            (key, identity, shared, got)
        })
        .buffer_unordered(PARALLEL_FETCHES)
        .collect()
        .await;
    let mut renewed = Vec::new();
    for (key, identity, shared, got) in fetched {
        match got {
            Ok(c)
                if c.credential.certificate_der != shared.current().credential.certificate_der =>
            {
                renewed.push((key, identity, shared, c))
            }
            Ok(_) => {}
            Err(e) => {
                warn!(identity = %identity.msi_res_id, error = %e, "credential refresh failed")
            }
        }
    }
    if renewed.is_empty() {
        return Vec::new();
    }
    let writes: Vec<(String, &Credential)> = renewed
        .iter()
        .map(|(key, _, _, c)| (key.clone(), &c.credential))
        .collect();
    if let Err(e) = store.put_credentials(&writes).await {
        warn!(error = %e, "cannot store renewed credentials");
        return Vec::new();
    }
    renewed
        .into_iter()
        .map(|(_, identity, shared, credential)| {
            info!(identity = %identity.msi_res_id, thumbprint = %credential.thumbprint, "identity credential renewed on host");
            shared.replace(credential);
            identity
        })
        .collect()
}

/// One credential from MSRP, checked to belong to `identity`'s client id, with its key parsed.
///
/// # Errors
/// [`AgentError::Msrp`] when MSRP fails, [`AgentError::CredentialMismatch`] when MSRP's client id
/// differs, [`AgentError::Key`] when the key is unusable.
async fn fetch(
    msrp: &MsrpCredentials,
    host: &str,
    identity: &IdentityRef,
) -> Result<HostCredential> {
    let (credential, client_id) = msrp
        .get_credential(identity.msi_res_id.as_str(), host)
        .await?;
    if !client_id.is_empty() && !client_id.eq_ignore_ascii_case(&identity.client_id) {
        return Err(AgentError::CredentialMismatch {
            identity: identity.msi_res_id.to_string(),
            expected: identity.client_id.clone(),
            got: client_id,
        });
    }
    // Parsing the RSA key is CPU work (up to 1000 credentials per ConfigureIdentities): off the
    // runtime, once; the parsed key is kept for every token request.
    let identity_id = identity.msi_res_id.to_string();
    tokio::task::spawn_blocking(move || HostCredential::parsed(credential))
        .await
        .map_err(AgentError::Task)?
        .map_err(|source| AgentError::Key {
            identity: identity_id,
            source,
        })
}

//! Keeping the identities' credentials current: one credential per identity on the host
//! ([`Registry`], shared by every VM that has the identity), the first fetch from MSRP when an
//! identity is configured (step 3), and the periodic re-fetch that brings MSRP's certificate
//! renewals to the host (MSRP renews before expiry; the host must present the current certificate
//! to Azure AD).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::error::{ImdsError, Result};
use crate::grpc::msrp::MsrpCredentials;
use crate::host::Host;
use crate::model::{Credential, HostCredential, IdentityRef, SharedCredential};

/// How many credentials are requested from MSRP at once (configure and refresh).
const PARALLEL_FETCHES: usize = 16;

/// The host's credentials, one per identity ([`IdentityRef::credential_key`]).
#[derive(Debug, Default)]
pub(crate) struct Registry {
    by_key: Mutex<HashMap<String, (IdentityRef, SharedCredential)>>,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (IdentityRef, SharedCredential)>> {
        self.by_key.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The credential of `identity`, when some VM of the host has it.
    pub(crate) fn get(&self, identity: &IdentityRef) -> Option<SharedCredential> {
        self.lock()
            .get(&identity.credential_key())
            .map(|(_, c)| c.clone())
    }

    /// Files `credential` for `identity`, or returns the one already filed.
    pub(crate) fn insert(
        &self,
        identity: &IdentityRef,
        credential: HostCredential,
    ) -> SharedCredential {
        self.lock()
            .entry(identity.credential_key())
            .or_insert_with(|| (identity.clone(), SharedCredential::new(credential)))
            .1
            .clone()
    }

    /// Every credential with its identity.
    fn all(&self) -> Vec<(String, IdentityRef, SharedCredential)> {
        self.lock()
            .iter()
            .map(|(k, (i, c))| (k.clone(), i.clone(), c.clone()))
            .collect()
    }

    /// Whether `key` still names `credential` (not pruned or replaced meanwhile).
    fn holds(&self, key: &str, credential: &SharedCredential) -> bool {
        self.lock()
            .get(key)
            .is_some_and(|(_, c)| c.same_cell(credential))
    }

    /// Forgets the credentials no VM record (nor an in-flight request) holds any more; returns
    /// their keys, for the store.
    pub(crate) fn prune(&self) -> Vec<String> {
        let mut gone = Vec::new();
        self.lock().retain(|key, (_, c)| {
            let used = c.holders() > 1;
            if !used {
                gone.push(key.clone());
            }
            used
        });
        gone
    }
}

impl Host {
    /// The credentials of `identities` from MSRP, in order, [`PARALLEL_FETCHES`] at a time (a VM may
    /// get up to 1000 identities in one call), each checked and its key parsed.
    ///
    /// # Errors
    /// The first error of [`fetch`]; the other fetches are then abandoned.
    pub(crate) async fn fetch_credentials(
        &self,
        identities: &[IdentityRef],
    ) -> Result<Vec<HostCredential>> {
        // In the caller's span: the fetches continue the flow's trace (misim_core::telemetry).
        let (msrp, host) = (&self.msrp, self.host_name.as_str());
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

    /// Fetches every credential of the host from MSRP again, [`PARALLEL_FETCHES`] at a time, and
    /// keeps the ones whose certificate changed (MSRP renews certificates before they expire; this
    /// is how renewals reach the host): one fetch per identity however many VMs have it. Failures
    /// are logged and leave the old credential in place. Returns how many credentials changed.
    pub async fn refresh_credentials(&self) -> usize {
        let all = self.credentials.all();
        let fetched: Vec<_> = stream::iter(all)
            .map(|(key, identity, shared)| async move {
                let got = fetch(&self.msrp, &self.host_name, &identity).await;
                (key, identity, shared, got)
            })
            .buffer_unordered(PARALLEL_FETCHES)
            .collect()
            .await;
        let mut renewed = Vec::new();
        for (key, identity, shared, got) in fetched {
            match got {
                Ok(c)
                    if c.credential.certificate_der
                        != shared.current().credential.certificate_der =>
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
            return 0;
        }
        let _admin = self.admin.lock().await;
        // Pruned meanwhile (no VM has the identity any more): nothing to renew.
        renewed.retain(|(key, _, shared, _)| self.credentials.holds(key, shared));
        let writes: Vec<(String, &Credential)> = renewed
            .iter()
            .map(|(key, _, _, c)| (key.clone(), &c.credential))
            .collect();
        if let Err(e) = self.store.put_credentials(&writes).await {
            warn!(error = %e, "cannot store renewed credentials");
            return 0;
        }
        let changed = renewed.len();
        for (_, identity, shared, credential) in renewed {
            info!(identity = %identity.msi_res_id, thumbprint = %credential.thumbprint, "identity credential renewed on host");
            shared.replace(credential);
        }
        let vms: Vec<_> = self.vms_read().values().cloned().collect();
        for vm in vms {
            let record = vm.snapshot();
            if let Err(e) = self.rewrite_extension_files(&record).await {
                warn!(vm = %vm.key, error = %e, "cannot write renewed credentials for the vm extension");
            }
        }
        changed
    }
}

/// One credential from MSRP, checked to belong to `identity`'s client id, with its key parsed.
///
/// # Errors
/// [`ImdsError::Msrp`] when MSRP fails, [`ImdsError::CredentialMismatch`] when MSRP's client id
/// differs, [`ImdsError::Internal`] when the key is unusable.
async fn fetch(
    msrp: &MsrpCredentials,
    host: &str,
    identity: &IdentityRef,
) -> Result<HostCredential> {
    let (credential, client_id) = msrp
        .get_credential(identity.msi_res_id.as_str(), host)
        .await?;
    if !client_id.is_empty() && !client_id.eq_ignore_ascii_case(&identity.client_id) {
        return Err(ImdsError::CredentialMismatch {
            identity: identity.msi_res_id.to_string(),
            expected: identity.client_id.clone(),
            got: client_id,
        });
    }
    // Parsing the RSA key is CPU work (up to 1000 credentials per ConfigureIdentities): off the
    // runtime, once; the parsed key is kept for every token request.
    tokio::task::spawn_blocking(move || HostCredential::parsed(credential))
        .await
        .map_err(|e| ImdsError::Internal(format!("credential key check: {e}")))?
}

/// Spawns the periodic refresh (every `period`) on `tasks` until `stop` is cancelled.
pub fn spawn_periodic_refresh(
    host: Arc<Host>,
    period: Duration,
    tasks: &TaskTracker,
    stop: CancellationToken,
) {
    tasks.spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => { host.refresh_credentials().await; }
            }
        }
    });
}

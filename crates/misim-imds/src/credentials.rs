//! Keeping the identities' credentials current: the first fetch from MSRP when an identity is configured
//! (step 3), and the periodic re-fetch that brings MSRP's certificate renewals to the host (MSRP renews
//! before expiry; the host must present the current certificate to Azure AD).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::aad_client::signing_key;
use crate::error::{ImdsError, Result};
use crate::grpc::msrp::MsrpCredentials;
use crate::host::{same_identity, Host, Vm};
use crate::model::{Credential, IdentityRef, VmRecord};

impl Host {
    /// The current credential of `identity` from MSRP, checked to belong to the configured client id
    /// and to hold a usable RSA key.
    ///
    /// # Errors
    /// [`ImdsError::Msrp`] when MSRP fails, [`ImdsError::CredentialMismatch`] when MSRP's client id
    /// differs, [`ImdsError::Internal`] when the key is unusable.
    pub(crate) async fn fetch_credential(&self, identity: &IdentityRef) -> Result<Credential> {
        fetch(&self.msrp, &self.host_name, identity).await
    }

    /// The credentials of `identities` from MSRP, in order, [`PARALLEL_FETCHES`] at a time (a VM may
    /// get up to 1000 identities in one call).
    ///
    /// # Errors
    /// The first error of [`Host::fetch_credential`]; the other fetches are then abandoned.
    pub(crate) async fn fetch_credentials(
        &self,
        identities: &[IdentityRef],
    ) -> Result<Vec<Credential>> {
        let mut out = Vec::with_capacity(identities.len());
        for chunk in identities.chunks(PARALLEL_FETCHES) {
            let mut set = tokio::task::JoinSet::new();
            for (i, identity) in chunk.iter().enumerate() {
                let (msrp, host) = (self.msrp.clone(), self.host_name.clone());
                let identity = identity.clone();
                let fetch_one = async move { (i, fetch(&msrp, &host, &identity).await) };
                // In the caller's span: the fetch continues the flow's trace (misim_core::telemetry).
                set.spawn(tracing::Instrument::in_current_span(fetch_one));
            }
            let mut got: Vec<Option<Credential>> = vec![None; chunk.len()];
            while let Some(joined) = set.join_next().await {
                let (i, result) =
                    joined.map_err(|e| ImdsError::Internal(format!("credential fetch: {e}")))?;
                got[i] = Some(result?);
            }
            out.extend(got.into_iter().flatten());
        }
        Ok(out)
    }

    /// Fetches every served identity's credential from MSRP again and keeps the ones whose certificate
    /// changed (MSRP renews certificates before they expire; this is how renewals reach the host).
    /// Failures are logged and leave the old credential in place. Returns how many credentials changed.
    pub async fn refresh_credentials(&self) -> usize {
        let vms: Vec<Arc<Vm>> = self.vms_read().values().cloned().collect();
        let mut changed = 0;
        for vm in vms {
            let mut renewed = Vec::new();
            for held in vm.snapshot().identities.iter().cloned() {
                match self.fetch_credential(&held.identity).await {
                    Ok(c) if c.certificate_der != held.credential.certificate_der => {
                        renewed.push((held.identity, c))
                    }
                    Ok(_) => {}
                    Err(e) => {
                        warn!(vm = %vm.key, identity = %held.identity.msi_res_id, error = %e, "credential refresh failed")
                    }
                }
            }
            if renewed.is_empty() {
                continue;
            }
            let _admin = self.admin.lock().await;
            if !self.vms_read().contains_key(&vm.key) {
                continue;
            }
            let mut record = VmRecord::clone(&vm.snapshot());
            for (identity, credential) in renewed {
                if let Some(h) = record
                    .identities
                    .iter_mut()
                    .find(|h| same_identity(&h.identity, &identity))
                {
                    info!(vm = %vm.key, identity = %identity.msi_res_id, thumbprint = %credential.thumbprint(), "identity credential renewed on host");
                    h.credential = credential;
                    changed += 1;
                }
            }
            if let Err(e) = self.store.put(&record).await {
                warn!(vm = %vm.key, error = %e, "cannot store renewed credentials");
                continue;
            }
            if let Err(e) = self.rewrite_extension_files(&record).await {
                warn!(vm = %vm.key, error = %e, "cannot write renewed credentials for the vm extension");
            }
            vm.set(record);
        }
        changed
    }
}

/// How many credentials [`Host::fetch_credentials`] requests from MSRP at once.
const PARALLEL_FETCHES: usize = 16;

/// One credential from MSRP, checked to belong to `identity`'s client id and to hold a usable key.
async fn fetch(msrp: &MsrpCredentials, host: &str, identity: &IdentityRef) -> Result<Credential> {
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
    // Parsing the RSA key is CPU work (up to 1000 credentials per ConfigureIdentities): off the runtime.
    tokio::task::spawn_blocking(move || signing_key(&credential).map(|_| credential))
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

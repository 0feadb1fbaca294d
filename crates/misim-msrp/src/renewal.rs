//! Certificate renewal: certificates older than the renewal age (Azure: 45 of 90 days,
//! <https://learn.microsoft.com/entra/identity/managed-identities-azure-resources/how-managed-identities-work-vm>)
//! are replaced by a new key and certificate registered in Azure AD; the replaced one stays
//! registered until it expires, then is removed from Azure AD.
//!
//! Hosts keep using the old credential until they refresh through `GetCredential`, which returns the
//! newest one; both certificates are valid in Azure AD in between. Age and expiry read the [`Clock`], so
//! tests call [`Msrp::renew_due`] with a manual clock instead of waiting.
//!
//! [`Clock`]: misim_core::Clock

use std::sync::Arc;
use std::time::Duration;

use misim_core::ResourceId;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::error::Result;
use crate::identity::IdentityRecord;
use crate::service::Msrp;

/// What one [`Msrp::renew_due`] pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RenewalReport {
    /// Resource IDs whose certificate was renewed.
    pub renewed: Vec<String>,
    /// Number of expired previous certificates removed from Azure AD.
    pub retired: usize,
    /// Resource IDs whose renewal failed (retried next pass).
    pub failed: Vec<String>,
}

impl Msrp {
    /// One renewal pass over all Ready identities: removes expired previous certificates from Azure AD
    /// and renews current certificates at least `cert_renew_after_secs` old. A failure on one identity
    /// is logged and reported; the others still run.
    ///
    /// # Errors
    /// Store errors while listing identities.
    pub async fn renew_due(&self) -> Result<RenewalReport> {
        let mut report = RenewalReport::default();
        for record in self.store.list()? {
            if !record.is_ready() {
                continue;
            }
            let id = match ResourceId::parse(&record.resource_id) {
                Ok(id) => id,
                Err(e) => {
                    warn!(identity = %record.resource_id, error = %e, "stored identity has a bad resource id");
                    continue;
                }
            };
            match self.renew_one(&id).await {
                Ok((renewed, retired)) => {
                    if renewed {
                        misim_core::telemetry::metrics::get()
                            .cert_renewals
                            .with_label_values(&["msrp"])
                            .inc();
                        report.renewed.push(record.resource_id.clone());
                    }
                    report.retired += retired;
                }
                Err(e) => {
                    warn!(identity = %id, error = %e, "certificate renewal failed, will retry");
                    report.failed.push(record.resource_id.clone());
                }
            }
        }
        Ok(report)
    }

    /// Retires expired previous certificates of `id` and renews its current one if due; returns
    /// (renewed, number retired).
    async fn renew_one(&self, id: &ResourceId) -> Result<(bool, usize)> {
        let _guard = self.lock(id).await;
        let Some(mut record) = self.store.get(id)? else {
            return Ok((false, 0));
        };
        let (Some(object_id), true) = (record.principal_id.clone(), record.is_ready()) else {
            return Ok((false, 0));
        };
        let retired = self.retire_expired(id, &mut record, &object_id).await?;
        let now = self.clock.now();
        if now - record.current.not_before < self.policy.renew_after_secs {
            return Ok((false, retired));
        }
        // Stage the new credential first (flushed), so a crash before AAD answers reuses it.
        let next = match record.next.take() {
            Some(next) => next,
            None => {
                let next = self.new_credential(id.name()).await?;
                record.next = Some(next.clone());
                self.store.put(id, &record).await?;
                next
            }
        };
        let principal = self
            .aad
            .add_key_credential(&record.tenant_id, &object_id, &next.certificate_der)
            .await?;
        let mut next = next;
        next.aad_key_id = principal.key_id_for(&next.thumbprint_sha1_hex);
        let old = std::mem::replace(&mut record.current, next);
        info!(
            identity = %id,
            client_id = record.client_id.as_deref().unwrap_or(""),
            old_thumbprint = %old.thumbprint_sha1_hex,
            thumbprint = %record.current.thumbprint_sha1_hex,
            not_after = record.current.not_after,
            "renewed certificate"
        );
        record.previous.push(old);
        record.next = None;
        self.store.put(id, &record).await?;
        Ok((true, retired))
    }

    /// Removes previous certificates whose validity ended from Azure AD and from the record.
    async fn retire_expired(
        &self,
        id: &ResourceId,
        record: &mut IdentityRecord,
        object_id: &str,
    ) -> Result<usize> {
        let now = self.clock.now();
        let mut retired = 0;
        while let Some(pos) = record.previous.iter().position(|c| c.not_after <= now) {
            let old = &record.previous[pos];
            match &old.aad_key_id {
                Some(key_id) => {
                    self.aad
                        .remove_key_credential(&record.tenant_id, object_id, key_id)
                        .await?
                }
                None => {
                    warn!(identity = %id, thumbprint = %old.thumbprint_sha1_hex, "expired certificate has no azure ad key id to remove")
                }
            }
            info!(identity = %id, thumbprint = %old.thumbprint_sha1_hex, "removed expired previous certificate");
            record.previous.remove(pos);
            self.store.put(id, record).await?;
            retired += 1;
        }
        Ok(retired)
    }
}

/// Runs [`Msrp::renew_due`] every `period`, and whenever a simulated clock moves, until `shutdown`
/// is cancelled.
pub async fn renewal_loop(msrp: Arc<Msrp>, period: Duration, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A simulated clock's advance (`misim clock advance`) starts a pass at once.
    let mut moved = msrp.clock.subscribe();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
            Ok(()) = moved.changed() => {}
        }
        match msrp.renew_due().await {
            Ok(report)
                if report.renewed.is_empty() && report.retired == 0 && report.failed.is_empty() => {
            }
            Ok(report) => info!(
                renewed = report.renewed.len(),
                retired = report.retired,
                failed = report.failed.len(),
                "certificate renewal pass"
            ),
            Err(e) => warn!(error = %e, "certificate renewal pass failed"),
        }
    }
}

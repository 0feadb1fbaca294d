//! Start-up bootstrap: makes sure a default subscription exists, trusting Azure AD's default tenant.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::error::Result;
use crate::model::Subscription;
use crate::service::Arm;

/// Display name of the subscription bootstrap creates.
pub const DEFAULT_SUBSCRIPTION_NAME: &str = "misim default subscription";

impl Arm {
    /// Returns the default subscription, creating it on first start: asks Azure AD for its default
    /// tenant (`EnsureDefaultTenant`, retried with backoff from 200 ms up to 5 s because Azure AD may
    /// start later) and records a subscription with a random GUID, state `Enabled`, trusting that
    /// tenant. Returns `Ok(None)` when `shutdown` fires first.
    ///
    /// # Errors
    /// Store failures.
    pub async fn bootstrap(&self, shutdown: &CancellationToken) -> Result<Option<Subscription>> {
        if let Some(sub) = self.store.default_subscription()? {
            return Ok(Some(sub));
        }
        let mut delay = Duration::from_millis(200);
        let tenant_id = loop {
            match self.peers.ensure_default_tenant().await {
                Ok(t) => break t,
                Err(e) => {
                    warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "azure ad not reachable; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(None),
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        };
        let sub = Subscription {
            subscription_id: uuid::Uuid::new_v4().to_string(),
            tenant_id,
            display_name: DEFAULT_SUBSCRIPTION_NAME.to_string(),
            state: "Enabled".to_string(),
            is_default: true,
        };
        self.store.subscriptions.put(&sub.subscription_id, &sub)?;
        self.store.flush().await?;
        info!(subscription = %sub.subscription_id, tenant = %sub.tenant_id, "created default subscription");
        Ok(Some(sub))
    }
}

//! Per-VM IMDS throttling: the identity category allows 20 requests per second and 5 concurrent
//! requests per VM, the other categories 5 requests per second; beyond that IMDS answers 429
//! "Temporarily throttled, too many requests" (<https://learn.microsoft.com/azure/virtual-machines/instance-metadata-service>,
//! <https://learn.microsoft.com/entra/identity/managed-identities-azure-resources/managed-identities-faq>;
//! the body as <https://github.com/hashicorp/terraform-provider-azurerm/issues/20901> quotes it).
//!
//! Windows are whole seconds of the injected [`Clock`], so tests control them.

use std::sync::{Arc, Mutex};

use misim_core::Clock;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{ImdsError, Result};

/// IMDS rate limits per VM. `Default` is Azure's documented limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImdsLimits {
    /// When false, nothing is throttled.
    pub enabled: bool,
    /// Identity category (`/metadata/identity/*`): requests per second per VM (Azure: 20).
    pub identity_per_second: u32,
    /// Identity category: requests in progress at once per VM (Azure: 5).
    pub identity_concurrent: u32,
    /// Other categories (`/metadata/instance`, `/metadata/versions`): requests per second per VM (Azure: 5).
    pub other_per_second: u32,
    /// `Retry-After` seconds sent with 429 answers; `None` (default) sends none. Whether real IMDS
    /// sends it is undocumented; clients honour it when present (azure-core's retry policy,
    /// msal's throttle cache, which otherwise holds a 429 for 5 s).
    pub retry_after_secs: Option<u32>,
}

impl Default for ImdsLimits {
    fn default() -> Self {
        ImdsLimits {
            enabled: true,
            identity_per_second: 20,
            identity_concurrent: 5,
            other_per_second: 5,
            retry_after_secs: None,
        }
    }
}

impl ImdsLimits {
    /// No throttling at all.
    pub fn unlimited() -> Self {
        ImdsLimits {
            enabled: false,
            ..Self::default()
        }
    }
}

/// Which limit a request counts against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Category {
    /// `/metadata/identity/*`.
    Identity,
    /// Everything else.
    Other,
}

/// Held while a request is in progress; releases the concurrency slot when dropped.
#[derive(Debug)]
pub struct Admission {
    _permit: Option<OwnedSemaphorePermit>,
}

/// One second's request count.
#[derive(Debug, Default)]
struct Window {
    second: i64,
    count: u32,
}

/// The throttle state of one VM.
#[derive(Debug)]
pub struct VmThrottle {
    limits: ImdsLimits,
    clock: Clock,
    identity: Mutex<Window>,
    other: Mutex<Window>,
    concurrent: Arc<Semaphore>,
}

impl VmThrottle {
    /// Fresh state with `limits`, windows read from `clock`.
    pub fn new(limits: ImdsLimits, clock: Clock) -> Self {
        let slots = limits.identity_concurrent as usize;
        VmThrottle {
            limits,
            clock,
            identity: Mutex::new(Window::default()),
            other: Mutex::new(Window::default()),
            concurrent: Arc::new(Semaphore::new(slots)),
        }
    }

    /// Admits one request of `category`, or refuses it.
    ///
    /// # Errors
    /// [`ImdsError::Throttled`] when this second's budget or (identity) the concurrency limit is used up.
    pub fn admit(&self, category: Category) -> Result<Admission> {
        let admitted = self.admit_inner(category);
        if admitted.is_err() {
            let name = match category {
                Category::Identity => "identity",
                Category::Other => "other",
            };
            misim_core::telemetry::metrics::get()
                .throttled
                .with_label_values(&["imds", name])
                .inc();
        }
        admitted
    }

    fn admit_inner(&self, category: Category) -> Result<Admission> {
        if !self.limits.enabled {
            return Ok(Admission { _permit: None });
        }
        let (window, per_second) = match category {
            Category::Identity => (&self.identity, self.limits.identity_per_second),
            Category::Other => (&self.other, self.limits.other_per_second),
        };
        let permit = match category {
            Category::Identity => Some(
                Arc::clone(&self.concurrent)
                    .try_acquire_owned()
                    .map_err(|_| ImdsError::Throttled)?,
            ),
            Category::Other => None,
        };
        let now = self.clock.now();
        let mut w = window.lock().map_err(|_| ImdsError::Poisoned("throttle"))?;
        if w.second != now {
            *w = Window {
                second: now,
                count: 0,
            };
        }
        if w.count >= per_second {
            return Err(ImdsError::Throttled);
        }
        w.count += 1;
        Ok(Admission { _permit: permit })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twenty_first_identity_request_in_a_second_is_throttled_and_next_second_is_fine() {
        let clock = Clock::manual(1_000);
        let t = VmThrottle::new(ImdsLimits::default(), clock.clone());
        for _ in 0..20 {
            drop(t.admit(Category::Identity).unwrap());
        }
        assert!(matches!(
            t.admit(Category::Identity),
            Err(ImdsError::Throttled)
        ));
        clock.advance(1);
        assert!(t.admit(Category::Identity).is_ok());
    }

    #[test]
    fn sixth_concurrent_identity_request_is_throttled() {
        let t = VmThrottle::new(ImdsLimits::default(), Clock::manual(1_000));
        let held: Vec<_> = (0..5)
            .map(|_| t.admit(Category::Identity).unwrap())
            .collect();
        assert!(matches!(
            t.admit(Category::Identity),
            Err(ImdsError::Throttled)
        ));
        drop(held);
        assert!(t.admit(Category::Identity).is_ok());
    }

    #[test]
    fn other_category_allows_five_per_second_and_disabled_allows_all() {
        let t = VmThrottle::new(ImdsLimits::default(), Clock::manual(1_000));
        for _ in 0..5 {
            t.admit(Category::Other).unwrap();
        }
        assert!(matches!(
            t.admit(Category::Other),
            Err(ImdsError::Throttled)
        ));
        let off = VmThrottle::new(ImdsLimits::unlimited(), Clock::manual(1_000));
        for _ in 0..100 {
            off.admit(Category::Other).unwrap();
        }
    }
}

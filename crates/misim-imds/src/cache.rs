//! The IMDS token cache: one token per (VM, identity client id, resource). Azure AD is called only on
//! a miss, when the cached token has less than five minutes left, or on `bypass_cache=true`
//! (reference §1.5: "on-the-wire Entra calls only on cache miss or expired cached token"; S3 for
//! `bypass_cache`). Concurrent misses for one key wait on the same slot, so they cause one AAD call.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use misim_core::Clock;

use crate::aad_client::AadToken;
use crate::error::{ImdsError, Result};

/// A token is refreshed when fewer than this many seconds are left (5 minutes, like the SDK caches).
pub const REFRESH_MARGIN_SECS: i64 = 300;

/// What a cached token is filed under.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct CacheKey {
    /// VM store key (lower-case resource ID).
    pub vm: String,
    /// Identity client id, lower case.
    pub client_id: String,
    /// Resource exactly as requested (it becomes the token's `aud`).
    pub resource: String,
}

impl CacheKey {
    /// The key of `resource` for `client_id` on `vm` (store key).
    pub fn new(vm: &str, client_id: &str, resource: &str) -> Self {
        CacheKey {
            vm: vm.to_string(),
            client_id: client_id.to_ascii_lowercase(),
            resource: resource.to_string(),
        }
    }
}

type Slot = Arc<tokio::sync::Mutex<Option<AadToken>>>;

/// Tokens cached per key; a per-key async mutex coalesces concurrent fetches.
#[derive(Debug)]
pub struct TokenCache {
    clock: Clock,
    slots: Mutex<HashMap<CacheKey, Slot>>,
}

impl TokenCache {
    /// An empty cache whose expiry checks read `clock`.
    pub fn new(clock: Clock) -> Self {
        TokenCache {
            clock,
            slots: Mutex::new(HashMap::new()),
        }
    }

    fn slots(&self) -> Result<std::sync::MutexGuard<'_, HashMap<CacheKey, Slot>>> {
        self.slots
            .lock()
            .map_err(|_| ImdsError::Internal("token cache lock poisoned".into()))
    }

    /// The cached token for `key` if it has at least [`REFRESH_MARGIN_SECS`] left and `bypass` is
    /// false; otherwise the result of `fetch`, which is then cached. Returns the token and whether it
    /// came from the cache.
    ///
    /// # Errors
    /// Whatever `fetch` returns (nothing is cached then).
    pub async fn get_or_fetch<F, Fut>(
        &self,
        key: CacheKey,
        bypass: bool,
        fetch: F,
    ) -> Result<(AadToken, bool)>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<AadToken>>,
    {
        let slot = Arc::clone(self.slots()?.entry(key).or_default());
        let mut cached = slot.lock().await;
        if !bypass {
            if let Some(token) = cached.as_ref() {
                if token.expires_on - self.clock.now() >= REFRESH_MARGIN_SECS {
                    return Ok((token.clone(), true));
                }
            }
        }
        let token = fetch().await?;
        *cached = Some(token.clone());
        Ok((token, false))
    }

    /// Forgets every token of `vm` (store key).
    pub fn remove_vm(&self, vm: &str) {
        if let Ok(mut slots) = self.slots() {
            slots.retain(|k, _| k.vm != vm);
        }
    }

    /// Forgets the tokens of one identity (`client_id`) of `vm`.
    pub fn remove_identity(&self, vm: &str, client_id: &str) {
        if let Ok(mut slots) = self.slots() {
            slots.retain(|k, _| !(k.vm == vm && k.client_id.eq_ignore_ascii_case(client_id)));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn token(expires_on: i64) -> AadToken {
        AadToken {
            access_token: "t".into(),
            expires_on,
            not_before: expires_on - 3600,
            ext_expires_in: 3600,
            resource: "r".into(),
            token_type: "Bearer".into(),
        }
    }

    #[tokio::test]
    async fn hit_until_five_minutes_before_expiry_then_refetch() {
        let clock = Clock::manual(1_000);
        let cache = TokenCache::new(clock.clone());
        let calls = AtomicUsize::new(0);
        let key = CacheKey::new("vm", "C", "r");
        let fetch = || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok(token(clock.now() + 3600))
        };
        assert!(
            !cache
                .get_or_fetch(key.clone(), false, fetch)
                .await
                .unwrap()
                .1
        );
        assert!(
            cache
                .get_or_fetch(key.clone(), false, fetch)
                .await
                .unwrap()
                .1
        );
        clock.advance(3600 - 299);
        assert!(
            !cache
                .get_or_fetch(key.clone(), false, fetch)
                .await
                .unwrap()
                .1
        );
        assert!(
            !cache
                .get_or_fetch(key.clone(), true, fetch)
                .await
                .unwrap()
                .1
        );
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        cache.remove_identity("vm", "c");
        assert!(!cache.get_or_fetch(key, false, fetch).await.unwrap().1);
    }

    #[tokio::test]
    async fn failed_fetch_caches_nothing() {
        let cache = TokenCache::new(Clock::manual(0));
        let key = CacheKey::new("vm", "c", "r");
        let r = cache
            .get_or_fetch(key.clone(), false, || async {
                Err(ImdsError::Aad("down".into()))
            })
            .await;
        assert!(r.is_err());
        let (_, hit) = cache
            .get_or_fetch(key, false, || async { Ok(token(10_000)) })
            .await
            .unwrap();
        assert!(!hit);
    }
}

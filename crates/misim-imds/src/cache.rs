//! The IMDS token cache: one token per (VM, identity client id, resource). Azure AD is called only on
//! a miss, when the cached token has less than five minutes left, or on `bypass_cache=true`
//! (<https://learn.microsoft.com/entra/identity/managed-identities-azure-resources/how-to-use-vm-token>; `bypass_cache` from the IMDS REST spec,
//! <https://github.com/Azure/azure-rest-api-specs/blob/ea83a2a3e90ca3f0420e9d0ef55a811523541aba/specification/imds/data-plane/InstanceMetadataService/stable/2023-07-01/imds.json>).
//! Concurrent misses for one key wait on the same slot, so they cause one AAD call.

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

/// A locked slot; when dropped still empty (the fetch failed or the request was cancelled) the slot is
/// pruned from the map.
struct Held<'a> {
    cache: &'a TokenCache,
    key: CacheKey,
    guard: Option<tokio::sync::OwnedMutexGuard<Option<AadToken>>>,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if let Some(guard) = self.guard.take() {
            let empty = guard.is_none();
            drop(guard);
            if empty {
                self.cache.prune(&self.key);
            }
        }
    }
}

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
            .map_err(|_| ImdsError::Poisoned("token cache"))
    }

    /// The cached token for `key` if it has at least [`REFRESH_MARGIN_SECS`] left and `bypass` is
    /// false; otherwise the result of `fetch`, which is then cached. Returns the token and whether it
    /// came from the cache.
    ///
    /// A `bypass` request fetches without waiting for the key's slot, so concurrent
    /// `bypass_cache=true` requests for one key each get a fresh token in parallel (IMDS documents
    /// no serialization of them); its token is cached unless another fetch for the key is in flight
    /// (that one caches its own, equally fresh token).
    ///
    /// # Errors
    /// Whatever `fetch` returns (nothing is cached then, and the empty slot is dropped again).
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
        if bypass {
            let token = fetch().await?;
            let slot = Arc::clone(self.slots()?.entry(key).or_default());
            if let Ok(mut cached) = slot.try_lock() {
                *cached = Some(token.clone());
            }
            return Ok((token, false));
        }
        let slot = Arc::clone(self.slots()?.entry(key.clone()).or_default());
        let mut held = Held {
            cache: self,
            key,
            guard: Some(slot.lock_owned().await),
        };
        let Some(cached) = held.guard.as_mut() else {
            return Err(ImdsError::Poisoned("token cache slot"));
        };
        if let Some(token) = cached.as_ref() {
            if token.expires_on.saturating_sub(self.clock.now()) >= REFRESH_MARGIN_SECS {
                return Ok((token.clone(), true));
            }
        }
        let token = fetch().await?;
        **cached = Some(token.clone());
        Ok((token, false))
    }

    /// Drops the slot of `key` when it holds no token and nobody else holds it: slots are keyed by the
    /// caller's resource string, so failed fetches (unknown resources) must not grow the map.
    fn prune(&self, key: &CacheKey) {
        let Ok(mut slots) = self.slots() else { return };
        let unused_and_empty = slots.get(key).is_some_and(|slot| {
            Arc::strong_count(slot) == 1 && slot.try_lock().is_ok_and(|t| t.is_none())
        });
        if unused_and_empty {
            slots.remove(key);
        }
    }

    /// How many slots the cache holds (tokens and fetches in flight).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.slots().map_or(0, |s| s.len())
    }

    /// Whether the cache holds no slot at all.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
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
    async fn bypass_requests_for_one_key_fetch_in_parallel_and_cache_their_token() {
        let cache = TokenCache::new(Clock::manual(0));
        let key = CacheKey::new("vm", "c", "r");
        let barrier = tokio::sync::Barrier::new(2);
        // Each fetch waits for the other: both complete only if neither holds the key's slot.
        let fetch = || async {
            barrier.wait().await;
            Ok(token(10_000))
        };
        let (a, b) = tokio::join!(
            cache.get_or_fetch(key.clone(), true, fetch),
            cache.get_or_fetch(key.clone(), true, fetch)
        );
        assert!(!a.unwrap().1 && !b.unwrap().1);
        let (_, hit) = cache
            .get_or_fetch(key, false, || async {
                Err(ImdsError::Poisoned("not called"))
            })
            .await
            .unwrap();
        assert!(hit, "the bypass token is cached");
    }

    #[tokio::test]
    async fn failed_fetch_caches_nothing() {
        let cache = TokenCache::new(Clock::manual(0));
        let key = CacheKey::new("vm", "c", "r");
        let r = cache
            .get_or_fetch(key.clone(), false, || async {
                Err(ImdsError::Aad(crate::error::AadError::Missing(
                    "access_token",
                )))
            })
            .await;
        assert!(r.is_err());
        let (_, hit) = cache
            .get_or_fetch(key, false, || async { Ok(token(10_000)) })
            .await
            .unwrap();
        assert!(!hit);
    }

    #[tokio::test]
    async fn failed_fetches_for_distinct_resources_leave_the_map_size_unchanged() {
        let cache = TokenCache::new(Clock::manual(0));
        cache
            .get_or_fetch(CacheKey::new("vm", "c", "known"), false, || async {
                Ok(token(10_000))
            })
            .await
            .unwrap();
        assert_eq!(cache.len(), 1);
        for i in 0..500 {
            let key = CacheKey::new("vm", "c", &format!("https://unknown-{i}.example/"));
            let r = cache
                .get_or_fetch(key, false, || async {
                    Err(ImdsError::InvalidResource("AADSTS500011".into()))
                })
                .await;
            assert!(r.is_err());
        }
        assert_eq!(cache.len(), 1);
    }

    #[tokio::test]
    async fn concurrent_failures_and_cancelled_fetches_leave_no_slot() {
        let cache = TokenCache::new(Clock::manual(0));
        let key = CacheKey::new("vm", "c", "nope");
        let fail = || async {
            tokio::task::yield_now().await;
            Err(ImdsError::Aad(crate::error::AadError::Missing(
                "access_token",
            )))
        };
        let (a, b) = tokio::join!(
            cache.get_or_fetch(key.clone(), false, fail),
            cache.get_or_fetch(key.clone(), false, fail)
        );
        assert!(a.is_err() && b.is_err());
        assert!(cache.is_empty());

        // A request dropped mid-fetch (client went away) leaves nothing behind either.
        let pending = cache.get_or_fetch(key, false, std::future::pending::<Result<AadToken>>);
        tokio::select! {
            _ = pending => unreachable!("the fetch never finishes"),
            _ = tokio::task::yield_now() => {}
        }
        assert!(cache.is_empty());
    }
}

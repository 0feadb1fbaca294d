//! The IMDS token cache: one token per (VM, identity client id, resource). Azure AD is called only on
//! a miss, when the cached token has less than five minutes left, or on `bypass_cache=true`
//! (<https://learn.microsoft.com/entra/identity/managed-identities-azure-resources/how-to-use-vm-token>; `bypass_cache` from the IMDS REST spec,
//! <https://github.com/Azure/azure-rest-api-specs/blob/ea83a2a3e90ca3f0420e9d0ef55a811523541aba/specification/imds/data-plane/InstanceMetadataService/stable/2023-07-01/imds.json>).
//! Concurrent misses for one key wait on the same slot, so they cause one AAD call.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, RwLock};

use misim_core::Clock;

use crate::aad_client::AadToken;
use crate::error::{ImdsError, Result};

/// A token is refreshed when fewer than this many seconds are left (5 minutes, like the SDK caches).
pub const REFRESH_MARGIN_SECS: i64 = 300;

/// What a cached token is filed under: VM store key, identity client id (lower case) and resource
/// exactly as requested (it becomes the token's `aud`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheKey<'a> {
    /// VM store key (lower-case resource ID).
    pub vm: &'a str,
    /// Identity client id (any case; filed lower case).
    pub client_id: &'a str,
    /// Resource exactly as requested.
    pub resource: &'a str,
}

impl<'a> CacheKey<'a> {
    /// The key of `resource` for `client_id` on `vm` (store key).
    pub fn new(vm: &'a str, client_id: &'a str, resource: &'a str) -> Self {
        CacheKey {
            vm,
            client_id,
            resource,
        }
    }

    /// Writes the map key (`vm \0 client id lower case \0 resource`) into `out`.
    fn write(&self, out: &mut String) {
        out.clear();
        out.push_str(self.vm);
        out.push('\0');
        out.extend(self.client_id.chars().map(|c| c.to_ascii_lowercase()));
        out.push('\0');
        out.push_str(self.resource);
    }
}

thread_local! {
    /// The buffer a lookup writes its map key into: a cache hit allocates nothing.
    static KEY: RefCell<String> = const { RefCell::new(String::new()) };
}

/// One key's token, read without waiting (a hit takes a read lock and an `Arc`), and the lock that
/// coalesces concurrent fetches.
#[derive(Debug, Default)]
struct Slot {
    token: RwLock<Option<Arc<AadToken>>>,
    fetching: tokio::sync::Mutex<()>,
}

impl Slot {
    fn get(&self) -> Option<Arc<AadToken>> {
        self.token.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, token: Arc<AadToken>) {
        *self.token.write().unwrap_or_else(|p| p.into_inner()) = Some(token);
    }
}

/// Drops the slot of `key` when it is still empty on the way out (the fetch failed or the request
/// was cancelled) and nobody else uses it: slots are keyed by the caller's resource string, so failed
/// fetches (unknown resources) must not grow the map.
struct PruneIfEmpty<'a> {
    cache: &'a TokenCache,
    key: String,
    slot: Option<Arc<Slot>>,
}

impl Drop for PruneIfEmpty<'_> {
    fn drop(&mut self) {
        let Some(slot) = self.slot.take() else { return };
        if slot.get().is_some() {
            return;
        }
        let Ok(mut slots) = self.cache.slots() else {
            return;
        };
        drop(slot);
        let unused_and_empty = slots
            .get(&self.key)
            .is_some_and(|s| Arc::strong_count(s) == 1 && s.get().is_none());
        if unused_and_empty {
            slots.remove(&self.key);
        }
    }
}

/// Tokens cached per key; a per-key async mutex coalesces concurrent fetches.
#[derive(Debug)]
pub struct TokenCache {
    clock: Clock,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
}

impl TokenCache {
    /// An empty cache whose expiry checks read `clock`.
    pub fn new(clock: Clock) -> Self {
        TokenCache {
            clock,
            slots: Mutex::new(HashMap::new()),
        }
    }

    fn slots(&self) -> Result<std::sync::MutexGuard<'_, HashMap<String, Arc<Slot>>>> {
        self.slots
            .lock()
            .map_err(|_| ImdsError::Poisoned("token cache"))
    }

    /// The token if it has at least [`REFRESH_MARGIN_SECS`] left.
    fn fresh(&self, slot: &Slot) -> Option<Arc<AadToken>> {
        slot.get()
            .filter(|t| t.expires_on.saturating_sub(self.clock.now()) >= REFRESH_MARGIN_SECS)
    }

    /// The cached token for `key` if it has at least [`REFRESH_MARGIN_SECS`] left and `bypass` is
    /// false; otherwise the result of `fetch`, which is then cached. Returns the token and whether it
    /// came from the cache. A hit allocates nothing and does not wait on other requests.
    ///
    /// A `bypass` request fetches without waiting for the key's slot, so concurrent
    /// `bypass_cache=true` requests for one key each get a fresh token in parallel (IMDS documents
    /// no serialization of them); its token is cached.
    ///
    /// # Errors
    /// Whatever `fetch` returns (nothing is cached then, and the empty slot is dropped again).
    pub async fn get_or_fetch<F, Fut>(
        &self,
        key: CacheKey<'_>,
        bypass: bool,
        fetch: F,
    ) -> Result<(Arc<AadToken>, bool)>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<AadToken>>,
    {
        let found = KEY.with(|buf| {
            let mut buf = buf.borrow_mut();
            key.write(&mut buf);
            self.slots().map(|slots| slots.get(buf.as_str()).cloned())
        })?;
        if let (false, Some(token)) = (bypass, found.as_deref().and_then(|s| self.fresh(s))) {
            return Ok((token, true));
        }
        let mut owned = String::new();
        key.write(&mut owned);
        if bypass {
            let token = Arc::new(fetch().await?);
            let slot = Arc::clone(self.slots()?.entry(owned).or_default());
            slot.set(Arc::clone(&token));
            return Ok((token, false));
        }
        let slot = match found {
            Some(slot) => slot,
            None => Arc::clone(self.slots()?.entry(owned.clone()).or_default()),
        };
        // The guard holds this request's only reference to the slot, so it can tell on the way out
        // whether anyone else still uses it.
        let guard = PruneIfEmpty {
            cache: self,
            key: owned,
            slot: Some(slot),
        };
        let Some(slot) = guard.slot.as_deref() else {
            return Err(ImdsError::Poisoned("token cache slot"));
        };
        let _fetching = slot.fetching.lock().await;
        // Another request may have fetched it while this one waited.
        if let Some(token) = self.fresh(slot) {
            return Ok((token, true));
        }
        let token = Arc::new(fetch().await?);
        slot.set(Arc::clone(&token));
        Ok((token, false))
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
            slots.retain(|k, _| k.split('\0').next() != Some(vm));
        }
    }

    /// Forgets the tokens of one identity (`client_id`) of `vm`.
    pub fn remove_identity(&self, vm: &str, client_id: &str) {
        if let Ok(mut slots) = self.slots() {
            slots.retain(|k, _| {
                let mut parts = k.split('\0');
                let (v, c) = (parts.next(), parts.next());
                !(v == Some(vm) && c.is_some_and(|c| c.eq_ignore_ascii_case(client_id)))
            });
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
        // Whether a lookup of `key` was served from the cache.
        let hit = |bypass: bool| {
            let (cache, key) = (&cache, key.clone());
            async move { cache.get_or_fetch(key, bypass, fetch).await.unwrap().1 }
        };
        assert!(!hit(false).await);
        assert!(hit(false).await);
        clock.advance(3600 - 299);
        assert!(!hit(false).await);
        assert!(!hit(true).await);
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
            let resource = format!("https://unknown-{i}.example/");
            let key = CacheKey::new("vm", "c", &resource);
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

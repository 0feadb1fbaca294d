//! The token-signing key ring: one current key that signs, rotated every `rotation_secs`, and the
//! retired keys, still published in JWKS until every token they signed has expired.
//!
//! Entra rolls its signing keys and tells relying parties to refresh JWKS rather than pin a key
//! (<https://learn.microsoft.com/entra/identity-platform/signing-key-rollover>). misim
//! rotates lazily: the first token request or JWKS read at or after the rotation time makes the next
//! key (so tests drive rotation with a manual clock, without waiting). A retired key is kept for the
//! token lifetime plus clock skew after its retirement, then dropped from JWKS and the store.

use std::sync::{Arc, RwLock};

use tokio::sync::Mutex;
use tracing::info;

use crate::error::Result;
use crate::keys::SigningKey;
use crate::store::AadStore;

/// Signing keys, newest last; the last one is current.
pub struct KeyRing {
    store: AadStore,
    keys: RwLock<Arc<Vec<Arc<SigningKey>>>>,
    rotating: Mutex<()>,
    rotation_secs: i64,
    retention_secs: i64,
}

impl KeyRing {
    /// Loads the persisted keys, or generates and persists the first one. `rotation_secs` is the age
    /// at which the current key is replaced (0 = never); `retention_secs` how long a retired key stays
    /// published (token lifetime + clock skew).
    ///
    /// # Errors
    /// [`crate::AadError::Internal`] when a key cannot be generated or decoded; store errors.
    pub async fn open(
        store: AadStore,
        now: i64,
        rotation_secs: i64,
        retention_secs: i64,
    ) -> Result<Self> {
        let mut keys = Vec::new();
        for (seq, record) in store.signing_keys()? {
            keys.push(Arc::new(SigningKey::from_record(seq, &record)?));
        }
        let ring = KeyRing {
            store,
            keys: RwLock::new(Arc::new(keys)),
            rotating: Mutex::new(()),
            rotation_secs,
            retention_secs,
        };
        if ring.snapshot().is_empty() {
            let _guard = ring.rotating.lock().await;
            ring.add_key(now).await?;
        }
        ring.store.flush().await?;
        Ok(ring)
    }

    fn snapshot(&self) -> Arc<Vec<Arc<SigningKey>>> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn is_due(&self, keys: &[Arc<SigningKey>], now: i64) -> bool {
        match keys.last() {
            None => true,
            Some(current) => {
                self.rotation_secs > 0
                    && now.saturating_sub(current.activated_at) >= self.rotation_secs
            }
        }
    }

    /// The key that signs tokens at `now`, rotating first when the current one is due.
    ///
    /// # Errors
    /// As [`KeyRing::rotate_if_due`].
    pub async fn current(&self, now: i64) -> Result<Arc<SigningKey>> {
        self.rotate_if_due(now).await?;
        let keys = self.snapshot();
        match keys.last() {
            Some(k) => Ok(k.clone()),
            None => Err(crate::AadError::Internal("no signing key".into())),
        }
    }

    /// The keys to publish in JWKS at `now`: the current key first, then retired keys whose tokens
    /// may still be valid, newest first. Rotates first when due.
    ///
    /// # Errors
    /// As [`KeyRing::rotate_if_due`].
    pub async fn published(&self, now: i64) -> Result<Vec<Arc<SigningKey>>> {
        self.rotate_if_due(now).await?;
        Ok(self
            .snapshot()
            .iter()
            .rev()
            .filter(|k| {
                k.retired_at
                    .is_none_or(|r| now < r.saturating_add(self.retention_secs))
            })
            .cloned()
            .collect())
    }

    /// Replaces the current key with a new one when it is `rotation_secs` old, and drops retired keys
    /// past their retention from the store. Returns whether a new key was made.
    ///
    /// # Errors
    /// [`crate::AadError::Internal`] when key generation fails; store errors.
    pub async fn rotate_if_due(&self, now: i64) -> Result<bool> {
        if !self.is_due(&self.snapshot(), now) {
            return Ok(false);
        }
        let _guard = self.rotating.lock().await;
        if !self.is_due(&self.snapshot(), now) {
            return Ok(false);
        }
        self.add_key(now).await?;
        self.store.flush().await?;
        Ok(true)
    }

    /// Makes a new current key at `now`, retiring the previous one and pruning expired retired keys.
    /// The store changes are one transaction and the in-memory ring changes only after it commits, so
    /// a failure leaves both as they were. Callers hold `rotating`.
    async fn add_key(&self, now: i64) -> Result<()> {
        let record = SigningKey::generate(now).await?;
        let old = self.snapshot();
        let seq = old.last().map_or(1, |k| k.seq + 1);
        let key = Arc::new(SigningKey::from_record(seq, &record)?);
        let mut keys: Vec<Arc<SigningKey>> = Vec::with_capacity(old.len() + 1);
        let (mut dropped, mut retired) = (Vec::new(), Vec::new());
        for k in old.iter() {
            let retired_at = k.retired_at.unwrap_or(now);
            if now >= retired_at.saturating_add(self.retention_secs) {
                dropped.push(k.clone());
            } else if k.retired_at.is_none() {
                let mut r = (**k).clone();
                r.retired_at = Some(now);
                retired.push((k.seq, r.to_record()));
                keys.push(Arc::new(r));
            } else {
                keys.push(k.clone());
            }
        }
        let drop: Vec<u64> = dropped.iter().map(|k| k.seq).collect();
        self.store
            .rotate_signing_keys(&drop, &retired, (seq, &record))?;
        for k in &dropped {
            info!(kid = %k.kid, "dropped expired token signing key");
        }
        info!(kid = %key.kid, seq, previous = keys.len(), "new token signing key");
        misim_core::telemetry::metrics::get()
            .key_rotations
            .with_label_values(&["aad"])
            .inc();
        keys.push(key);
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(keys);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_700_000_000;
    const ROTATE: i64 = 1000;
    const KEEP: i64 = 400;

    fn kids(keys: &[Arc<SigningKey>]) -> Vec<&str> {
        keys.iter().map(|k| k.kid.as_str()).collect()
    }

    #[tokio::test]
    async fn rotation_publishes_old_key_until_its_tokens_expire_and_survives_reopen() {
        let store = AadStore::temporary();
        let ring = KeyRing::open(store.clone(), T0, ROTATE, KEEP)
            .await
            .unwrap();
        let k1 = ring.current(T0).await.unwrap();
        assert_eq!(kids(&ring.published(T0).await.unwrap()), [k1.kid.as_str()]);
        assert_eq!(ring.current(T0 + ROTATE - 1).await.unwrap().kid, k1.kid);

        let k2 = ring.current(T0 + ROTATE).await.unwrap();
        assert_ne!(k2.kid, k1.kid);
        let both = ring.published(T0 + ROTATE).await.unwrap();
        assert_eq!(kids(&both), [k2.kid.as_str(), k1.kid.as_str()]);
        assert_eq!(
            ring.published(T0 + ROTATE + KEEP - 1).await.unwrap().len(),
            2
        );
        assert_eq!(
            kids(&ring.published(T0 + ROTATE + KEEP).await.unwrap()),
            [k2.kid.as_str()]
        );

        // Reopening the same store finds both keys (k1 still within retention at that time).
        let reopened = KeyRing::open(store, T0 + ROTATE, ROTATE, KEEP)
            .await
            .unwrap();
        assert_eq!(reopened.current(T0 + ROTATE + 1).await.unwrap().kid, k2.kid);
        assert_eq!(
            kids(&reopened.published(T0 + ROTATE + 1).await.unwrap()),
            [k2.kid.as_str(), k1.kid.as_str()]
        );
    }

    #[tokio::test]
    async fn rotation_zero_never_rotates_and_next_rotation_prunes_the_store() {
        let store = AadStore::temporary();
        let never = KeyRing::open(store, T0, 0, KEEP).await.unwrap();
        let k = never.current(T0).await.unwrap();
        assert_eq!(never.current(T0 + 10 * ROTATE).await.unwrap().kid, k.kid);

        let store = AadStore::temporary();
        let ring = KeyRing::open(store.clone(), T0, ROTATE, KEEP)
            .await
            .unwrap();
        ring.current(T0 + ROTATE).await.unwrap();
        assert_eq!(store.signing_keys().unwrap().len(), 2);
        ring.current(T0 + 2 * ROTATE).await.unwrap();
        // The first key retired at T0+ROTATE and its retention ended before the second rotation.
        assert_eq!(store.signing_keys().unwrap().len(), 2);
        assert!(ring.rotate_if_due(T0 + 2 * ROTATE).await.is_ok_and(|r| !r));
    }

    #[tokio::test]
    async fn a_rotation_the_store_rejects_changes_neither_store_nor_ring() {
        let store = AadStore::temporary();
        let ring = KeyRing::open(store.clone(), T0, ROTATE, KEEP)
            .await
            .unwrap();
        let k1 = ring.current(T0).await.unwrap();
        // Sequence 2 already taken behind the ring's back: the rotation's transaction aborts.
        let stray = store.signing_keys().unwrap()[0].1.clone();
        store.put_signing_key(2, &stray).unwrap();
        assert!(ring.current(T0 + ROTATE).await.is_err());

        let in_memory = ring.snapshot();
        assert_eq!(kids(&in_memory), [k1.kid.as_str()]);
        assert_eq!(in_memory[0].retired_at, None);
        let stored = store.signing_keys().unwrap();
        assert_eq!(stored.len(), 2);
        assert_eq!(stored[0].1.retired_at, None);
        assert_eq!(ring.published(T0).await.unwrap()[0].kid, k1.kid);
    }
}

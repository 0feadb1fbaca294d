//! A small pool of pre-generated RSA-2048 keys, so bursts of identity creations do not each wait for a
//! key generation (the slow part of step 2: tens to hundreds of milliseconds per key).
//!
//! A background task fills a bounded channel of `size` keys, generating each on tokio's blocking pool,
//! and refills it as keys are taken. [`KeyPool::take`] returns a pooled key when one is ready and
//! otherwise generates one on demand (it never waits for the filler). Size 0 disables the pool.
//! Pooled keys live only in memory: a restart starts with an empty pool and refills it.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, Mutex, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::error::Result;

/// Pre-generated RSA keys (PKCS#8 DER) with on-demand fallback.
pub struct KeyPool {
    keys: Mutex<mpsc::Receiver<Vec<u8>>>,
    size: usize,
    ready: Arc<AtomicUsize>,
    filled: Arc<Notify>,
    from_pool: AtomicU64,
    on_demand: AtomicU64,
}

/// How [`KeyPool::take`] calls were served, for tests and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyPoolStats {
    /// Keys handed out from the pool.
    pub from_pool: u64,
    /// Keys generated on demand because the pool was empty (or disabled).
    pub on_demand: u64,
}

impl KeyPool {
    /// Creates a pool of `size` keys and starts filling it in the background until `shutdown` is
    /// cancelled or the pool is dropped. Must be called inside a tokio runtime.
    pub fn start(size: usize, shutdown: CancellationToken) -> Arc<Self> {
        let (tx, rx) = mpsc::channel(size.max(1));
        let filled = Arc::new(Notify::new());
        let ready = Arc::new(AtomicUsize::new(0));
        let pool = Arc::new(KeyPool {
            keys: Mutex::new(rx),
            size,
            ready: ready.clone(),
            filled: filled.clone(),
            from_pool: AtomicU64::new(0),
            on_demand: AtomicU64::new(0),
        });
        if size > 0 {
            tokio::spawn(fill(tx, ready, filled, shutdown));
        }
        pool
    }

    /// A fresh RSA-2048 key: from the pool when one is ready, else generated now on the blocking pool.
    ///
    /// # Errors
    /// [`crate::MsrpError::Cert`] when on-demand generation fails.
    pub async fn take(&self) -> Result<Vec<u8>> {
        if self.size > 0 {
            if let Ok(key) = self.keys.lock().await.try_recv() {
                self.ready.fetch_sub(1, Ordering::SeqCst);
                self.from_pool.fetch_add(1, Ordering::Relaxed);
                return Ok(key);
            }
        }
        self.on_demand.fetch_add(1, Ordering::Relaxed);
        Ok(misim_core::cert::generate_rsa_key_blocking().await?)
    }

    /// Number of keys ready in the pool now.
    pub fn available(&self) -> usize {
        self.ready.load(Ordering::SeqCst)
    }

    /// Waits until the pool holds `size` keys (returns at once for a disabled pool).
    pub async fn wait_filled(&self) {
        loop {
            let notified = self.filled.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.available() >= self.size {
                return;
            }
            notified.await;
        }
    }

    /// How keys were served so far.
    pub fn stats(&self) -> KeyPoolStats {
        KeyPoolStats {
            from_pool: self.from_pool.load(Ordering::Relaxed),
            on_demand: self.on_demand.load(Ordering::Relaxed),
        }
    }
}

/// Generates keys into `tx` until it is closed (pool dropped) or `shutdown` fires; `send` waits while
/// the pool is full, so the filler only works to replace taken keys.
async fn fill(
    tx: mpsc::Sender<Vec<u8>>,
    ready: Arc<AtomicUsize>,
    filled: Arc<Notify>,
    shutdown: CancellationToken,
) {
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => return,
            permit = tx.reserve() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
        };
        let key = tokio::select! {
            _ = shutdown.cancelled() => return,
            key = misim_core::cert::generate_rsa_key_blocking() => key,
        };
        match key {
            Ok(key) => {
                ready.fetch_add(1, Ordering::SeqCst);
                permit.send(key);
                filled.notify_waiters();
                debug!("key pool refilled one key");
            }
            Err(e) => {
                warn!(error = %e, "key pool could not generate a key; stopping the filler");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn filled_pool_serves_keys_then_falls_back_to_on_demand() {
        let pool = KeyPool::start(2, CancellationToken::new());
        pool.wait_filled().await;
        assert_eq!(pool.available(), 2);
        let a = pool.take().await.unwrap();
        let b = pool.take().await.unwrap();
        assert_ne!(a, b);
        assert_eq!(
            pool.stats(),
            KeyPoolStats {
                from_pool: 2,
                on_demand: 0
            }
        );
        assert!(!misim_core::cert::public_key_spki_der(&a)
            .unwrap()
            .is_empty());
    }

    #[tokio::test]
    async fn disabled_pool_generates_on_demand() {
        let pool = KeyPool::start(0, CancellationToken::new());
        pool.wait_filled().await;
        assert_eq!(pool.available(), 0);
        pool.take().await.unwrap();
        assert_eq!(
            pool.stats(),
            KeyPoolStats {
                from_pool: 0,
                on_demand: 1
            }
        );
    }
}

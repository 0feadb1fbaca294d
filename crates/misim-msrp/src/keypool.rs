//! A pool of pre-generated identity keys, so bursts of identity creations do not each wait for a key
//! generation (the slow part of step 2: tens of milliseconds per RSA-2048 key, microseconds for EC
//! P-256).
//!
//! A background task keeps a bounded channel of `size` keys full, generating up to one key per core
//! at once (each on tokio's blocking pool, on aws-lc-rs), and refills it as keys are taken.
//! [`KeyPool::take`] returns a pooled key when one is ready and otherwise generates one on demand (it
//! never waits for the filler). Size 0 disables the pool. Pooled keys live only in memory: a restart
//! starts with an empty pool and refills it.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use misim_core::cert::KeyType;
use tokio::sync::{mpsc, Mutex, Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::error::Result;

/// The default pool size: two keys per core, so a burst finds keys ready while the filler, running on
/// every core, replaces them.
pub fn default_size() -> usize {
    2 * workers()
}

/// How many keys the filler generates at once: one per core.
fn workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Pre-generated private keys (PKCS#8 DER) of one [`KeyType`], with on-demand fallback.
pub struct KeyPool {
    keys: Mutex<mpsc::Receiver<Vec<u8>>>,
    size: usize,
    key_type: KeyType,
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
    /// Creates a pool of `size` keys of `key_type` and starts filling it in the background, one key
    /// per core at once, until `shutdown` is cancelled or the pool is dropped. Must be called inside
    /// a tokio runtime.
    pub fn start(size: usize, key_type: KeyType, shutdown: CancellationToken) -> Arc<Self> {
        let (tx, rx) = mpsc::channel(size.max(1));
        let filled = Arc::new(Notify::new());
        let ready = Arc::new(AtomicUsize::new(0));
        let pool = Arc::new(KeyPool {
            keys: Mutex::new(rx),
            size,
            key_type,
            ready: ready.clone(),
            filled: filled.clone(),
            from_pool: AtomicU64::new(0),
            on_demand: AtomicU64::new(0),
        });
        if size > 0 {
            let filler = Filler {
                tx,
                ready,
                filled,
                key_type,
                stop: shutdown.child_token(),
            };
            tokio::spawn(filler.run(workers()));
        }
        pool
    }

    /// The type of the keys this pool hands out.
    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    /// A fresh key: from the pool when one is ready, else generated now on the blocking pool.
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
        Ok(misim_core::cert::generate_key_blocking(self.key_type).await?)
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

/// The background task that keeps the pool full.
struct Filler {
    tx: mpsc::Sender<Vec<u8>>,
    ready: Arc<AtomicUsize>,
    filled: Arc<Notify>,
    key_type: KeyType,
    /// Cancelled on shutdown, or when a generation fails (the filler stops; `take` still works).
    stop: CancellationToken,
}

impl Filler {
    /// Reserves a free slot of the channel (waiting while the pool is full, so the filler only works
    /// to replace taken keys), then starts a generation for it, at most `workers` at once.
    async fn run(self, workers: usize) {
        let gate = Arc::new(Semaphore::new(workers.max(1)));
        loop {
            let slot = tokio::select! {
                _ = self.stop.cancelled() => return,
                slot = self.tx.clone().reserve_owned() => match slot {
                    Ok(slot) => slot,
                    Err(_) => return,
                },
            };
            let worker = tokio::select! {
                _ = self.stop.cancelled() => return,
                worker = gate.clone().acquire_owned() => match worker {
                    Ok(worker) => worker,
                    Err(_) => return,
                },
            };
            let (ready, filled, stop) =
                (self.ready.clone(), self.filled.clone(), self.stop.clone());
            let key_type = self.key_type;
            tokio::spawn(async move {
                let key = tokio::select! {
                    _ = stop.cancelled() => return,
                    key = misim_core::cert::generate_key_blocking(key_type) => key,
                };
                drop(worker);
                match key {
                    Ok(key) => {
                        ready.fetch_add(1, Ordering::SeqCst);
                        slot.send(key);
                        filled.notify_waiters();
                        debug!("key pool refilled one key");
                    }
                    Err(e) => {
                        warn!(error = %e, "key pool could not generate a key; stopping the filler");
                        stop.cancel();
                    }
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn filled_pool_serves_keys_then_falls_back_to_on_demand() {
        let pool = KeyPool::start(2, KeyType::Rsa2048, CancellationToken::new());
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
        let pool = KeyPool::start(0, KeyType::Rsa2048, CancellationToken::new());
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_ec_pool_fills_beyond_the_number_of_workers_with_p256_keys() {
        let pool = KeyPool::start(3 * workers(), KeyType::EcP256, CancellationToken::new());
        pool.wait_filled().await;
        assert_eq!(pool.available(), 3 * workers());
        assert_eq!(pool.key_type(), KeyType::EcP256);
        let key = pool.take().await.unwrap();
        assert_eq!(KeyType::of_pkcs8(&key).unwrap(), KeyType::EcP256);
    }
}

//! Per-key async locks (one `tokio::sync::Mutex` per resource id, say) that forget a key as soon
//! as nobody holds or waits for its lock, so the map holds only the keys in use, however many
//! resources come and go.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::OwnedMutexGuard;

type Map = HashMap<String, Arc<tokio::sync::Mutex<()>>>;

/// Async locks by string key; [`KeyedLocks::lock`] waits for one and holds it until its guard
/// drops. No std lock is held across an `.await`.
#[derive(Default)]
pub struct KeyedLocks {
    locks: Arc<Mutex<Map>>,
}

/// The lock of one key, held until dropped; dropping the last user of a key removes it from the map.
#[must_use = "the lock is released when the guard is dropped"]
pub struct KeyedGuard {
    guard: Option<OwnedMutexGuard<()>>,
    key: String,
    locks: Arc<Mutex<Map>>,
}

fn map(locks: &Mutex<Map>) -> MutexGuard<'_, Map> {
    locks.lock().unwrap_or_else(PoisonError::into_inner)
}

impl KeyedLocks {
    /// No locks yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Waits for and takes the lock of `key`.
    pub async fn lock(&self, key: &str) -> KeyedGuard {
        let mutex = map(&self.locks).entry(key.to_string()).or_default().clone();
        KeyedGuard {
            guard: Some(mutex.lock_owned().await),
            key: key.to_string(),
            locks: self.locks.clone(),
        }
    }

    /// How many keys are held or waited for now.
    pub fn len(&self) -> usize {
        map(&self.locks).len()
    }

    /// True when no key is held or waited for.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for KeyedGuard {
    fn drop(&mut self) {
        // Release first; then, under the map's lock (where waiters take their reference), the map's
        // own reference being the only one left means nobody holds or waits for this key.
        drop(self.guard.take());
        let mut locks = map(&self.locks);
        if locks
            .get(&self.key)
            .is_some_and(|m| Arc::strong_count(m) == 1)
        {
            locks.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keys_are_forgotten_when_nobody_holds_or_waits() {
        let locks = Arc::new(KeyedLocks::new());
        for i in 0..100 {
            let _g = locks.lock(&format!("vm-{i}")).await;
        }
        assert!(locks.is_empty(), "{} keys kept", locks.len());
        let held = locks.lock("a").await;
        let waiter = {
            let locks = locks.clone();
            tokio::spawn(async move {
                let _g = locks.lock("a").await;
            })
        };
        tokio::task::yield_now().await;
        drop(held);
        assert_eq!(locks.len(), 1, "the waiter's key stays");
        waiter.await.unwrap();
        assert!(locks.is_empty());
    }

    #[tokio::test]
    async fn one_key_is_held_by_one_caller_at_a_time() {
        let locks = Arc::new(KeyedLocks::new());
        let inside = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let (locks, inside) = (locks.clone(), inside.clone());
                tokio::spawn(async move {
                    let _g = locks.lock("k").await;
                    let n = inside.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    assert_eq!(n, 0, "two callers inside");
                    tokio::task::yield_now().await;
                    inside.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert!(locks.is_empty());
    }
}

//! The small store interface every party keeps its state behind: typed tables (JSON values) in one
//! sled database per party.
//!
//! sled writes reach disk every 500 ms on their own; acknowledged writes must call [`Store::flush`]
//! before the API answers, so state the caller saw survives a crash (docs/ARCHITECTURE.md; the test
//! `flushed_writes_survive_reopen` below).

use std::marker::PhantomData;
use std::path::Path;

use serde::{de::DeserializeOwned, Serialize};

/// Page cache of each party's database, bytes (sled's default is 1 GiB).
pub const STORE_CACHE_BYTES: u64 = 4 * 1024 * 1024;

/// How long opening a database waits for the file lock of a store that was just closed in this
/// process: sled releases it from a background thread shortly after the last handle is dropped.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Runs `open` until it does not fail on sled's file lock, for up to [`LOCK_WAIT`] (a restart in the
/// same process right after a stop); a lock held longer (another process) is returned as the error.
///
/// # Errors
/// sled's error from the last attempt.
pub fn open_sled(
    path: &Path,
    open: impl Fn() -> sled::Result<sled::Db>,
) -> Result<sled::Db, sled::Error> {
    let started = std::time::Instant::now();
    loop {
        match open() {
            Err(sled::Error::Io(e)) if is_lock_error(&e) && started.elapsed() < LOCK_WAIT => {
                tracing::debug!(path = %path.display(), "store locked; waiting for its release");
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// Whether sled failed to take its file lock (it wraps `WouldBlock` in a message).
pub fn is_lock_error(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::WouldBlock || e.to_string().contains("could not acquire lock")
}

/// Errors from the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled failed (I/O, corruption).
    #[error("store: {0}")]
    Sled(#[from] sled::Error),
    /// A value could not be (de)serialized.
    #[error("store: bad value in table {table}: {source}")]
    Codec {
        /// The table the value belongs to.
        table: &'static str,
        /// Why it did not (de)serialize.
        source: serde_json::Error,
    },
    /// A transaction failed.
    #[error("store: transaction: {0}")]
    Transaction(String),
}

/// One party's sled database.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
}

impl Store {
    /// Opens (or creates) the database in directory `path`.
    ///
    /// # Errors
    /// [`StoreError::Sled`] when the directory cannot be opened or is locked by another process.
    /// The directory is made 0700 and its files 0600 ([`crate::fsperm`]).
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        crate::fsperm::create_private_dir(path).map_err(sled::Error::Io)?;
        let db = open_sled(path, || {
            sled::Config::new()
                .path(path)
                .flush_every_ms(Some(500))
                // misim's state is small: a small page cache keeps idle memory low (sled's default is 1 GiB).
                .cache_capacity(STORE_CACHE_BYTES)
                .open()
        })?;
        // Keys live in these files: private to the user whatever the umask.
        crate::fsperm::restrict_tree(path).map_err(sled::Error::Io)?;
        Ok(Store { db })
    }

    /// A temporary in-memory database (for unit tests).
    ///
    /// # Errors
    /// [`StoreError::Sled`] when sled cannot create it.
    pub fn temporary() -> Result<Self, StoreError> {
        Ok(Store {
            db: sled::Config::new().temporary(true).open()?,
        })
    }

    /// The typed table named `name`.
    ///
    /// # Errors
    /// [`StoreError::Sled`] when sled cannot open the tree.
    pub fn table<T: Serialize + DeserializeOwned>(
        &self,
        name: &'static str,
    ) -> Result<Table<T>, StoreError> {
        Ok(Table {
            tree: self.db.open_tree(name)?,
            name,
            _t: PhantomData,
        })
    }

    /// Flushes all pending writes to disk, off the async runtime.
    ///
    /// # Errors
    /// [`StoreError::Sled`] on I/O failure.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.flush())
            .await
            .map_err(|e| StoreError::Transaction(e.to_string()))??;
        Ok(())
    }
}

/// A table of `T` values keyed by strings.
#[derive(Clone)]
pub struct Table<T> {
    tree: sled::Tree,
    name: &'static str,
    _t: PhantomData<fn() -> T>,
}

impl<T: Serialize + DeserializeOwned> Table<T> {
    fn decode(&self, bytes: &[u8]) -> Result<T, StoreError> {
        serde_json::from_slice(bytes).map_err(|source| StoreError::Codec {
            table: self.name,
            source,
        })
    }

    fn encode(&self, value: &T) -> Result<Vec<u8>, StoreError> {
        serde_json::to_vec(value).map_err(|source| StoreError::Codec {
            table: self.name,
            source,
        })
    }

    /// The value at `key`, if any.
    ///
    /// # Errors
    /// [`StoreError`] on a sled failure or a value that does not (de)serialize.
    pub fn get(&self, key: &str) -> Result<Option<T>, StoreError> {
        self.tree.get(key)?.map(|v| self.decode(&v)).transpose()
    }

    /// Writes `value` at `key`, replacing any previous value.
    ///
    /// # Errors
    /// [`StoreError`] on a sled failure or a value that does not (de)serialize.
    pub fn put(&self, key: &str, value: &T) -> Result<(), StoreError> {
        self.tree.insert(key, self.encode(value)?)?;
        Ok(())
    }

    /// Removes `key`, returning the old value if there was one.
    ///
    /// # Errors
    /// [`StoreError`] on a sled failure or a value that does not (de)serialize.
    pub fn remove(&self, key: &str) -> Result<Option<T>, StoreError> {
        self.tree.remove(key)?.map(|v| self.decode(&v)).transpose()
    }

    /// Writes `value` at `key` only if the key is absent; returns the value now stored.
    ///
    /// # Errors
    /// [`StoreError`] on a sled failure or a value that does not (de)serialize.
    pub fn insert_if_absent(&self, key: &str, value: &T) -> Result<T, StoreError> {
        let bytes = self.encode(value)?;
        match self
            .tree
            .compare_and_swap(key, None as Option<&[u8]>, Some(bytes))?
        {
            Ok(()) => Ok(self.decode(&self.encode(value)?)?),
            Err(current) => self.decode(&current.current.unwrap_or_default()),
        }
    }

    /// All values, in key order.
    ///
    /// # Errors
    /// [`StoreError`] on a sled failure or a value that does not (de)serialize.
    pub fn values(&self) -> Result<Vec<T>, StoreError> {
        self.tree
            .iter()
            .values()
            .map(|v| self.decode(&v?))
            .collect()
    }

    /// All `(key, value)` pairs whose key starts with `prefix`, in key order.
    ///
    /// # Errors
    /// [`StoreError`] on a sled failure or a value that does not (de)serialize.
    pub fn scan_prefix(&self, prefix: &str) -> Result<Vec<(String, T)>, StoreError> {
        self.tree
            .scan_prefix(prefix)
            .map(|kv| {
                let (k, v) = kv?;
                Ok((String::from_utf8_lossy(&k).into_owned(), self.decode(&v)?))
            })
            .collect()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.tree.len()
    }

    /// True when the table has no entries.
    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq, Clone)]
    struct Rec {
        n: u32,
    }

    #[test]
    fn put_get_remove_scan() {
        let s = Store::temporary().unwrap();
        let t = s.table::<Rec>("recs").unwrap();
        t.put("a/1", &Rec { n: 1 }).unwrap();
        t.put("a/2", &Rec { n: 2 }).unwrap();
        t.put("b/1", &Rec { n: 3 }).unwrap();
        assert_eq!(t.get("a/2").unwrap(), Some(Rec { n: 2 }));
        assert_eq!(t.scan_prefix("a/").unwrap().len(), 2);
        assert_eq!(t.remove("a/1").unwrap(), Some(Rec { n: 1 }));
        assert_eq!(t.get("a/1").unwrap(), None);
        assert_eq!(t.values().unwrap(), vec![Rec { n: 2 }, Rec { n: 3 }]);
    }

    #[test]
    fn insert_if_absent_keeps_first_value() {
        let s = Store::temporary().unwrap();
        let t = s.table::<Rec>("recs").unwrap();
        assert_eq!(
            t.insert_if_absent("k", &Rec { n: 1 }).unwrap(),
            Rec { n: 1 }
        );
        assert_eq!(
            t.insert_if_absent("k", &Rec { n: 2 }).unwrap(),
            Rec { n: 1 }
        );
    }

    #[tokio::test]
    async fn flushed_writes_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            s.table::<Rec>("recs")
                .unwrap()
                .put("k", &Rec { n: 7 })
                .unwrap();
            s.flush().await.unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(
            s.table::<Rec>("recs").unwrap().get("k").unwrap(),
            Some(Rec { n: 7 })
        );
    }
}

//! Typed sled trees (JSON values) that can join multi-tree transactions: Azure AD's stand-in for
//! `misim_core::Table`, which has no transaction API, so that a principal and its index entries (or a
//! key rotation's writes) reach the database all together or not at all.

use std::marker::PhantomData;
use std::path::Path;

use misim_core::StoreError;
use serde::{de::DeserializeOwned, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};

/// Azure AD's schema version ([`misim_core::Store::open_party`]).
pub const SCHEMA_VERSION: u32 = 1;

/// Opens (or creates) the sled database in directory `path`, configured as `misim_core::Store` does
/// (background flush every 500 ms; acknowledged writes still call [`flush`]).
///
/// # Errors
/// [`StoreError::Sled`] when the directory cannot be opened or is locked by another process.
pub fn open_db(path: &Path) -> Result<sled::Db, StoreError> {
    misim_core::fsperm::create_private_dir(path).map_err(sled::Error::Io)?;
    let db = misim_core::store::open_sled(path, || {
        sled::Config::new()
            .path(path)
            .flush_every_ms(Some(500))
            .cache_capacity(misim_core::store::STORE_CACHE_BYTES)
            .open()
    })
    .map_err(|e| match e {
        StoreError::Corrupt { path, detail, .. } => StoreError::Corrupt {
            party: "aad".into(),
            path,
            detail,
        },
        other => other,
    })?;
    // The token-signing key lives here: private to the user whatever the umask.
    misim_core::fsperm::restrict_tree(path).map_err(sled::Error::Io)?;
    // Engine, schema and integrity checks before anything is served (misim_core::store).
    misim_core::Store::check_sled_party(db.clone(), path, "aad", SCHEMA_VERSION)?;
    Ok(db)
}

/// A temporary in-memory database (unit tests).
///
/// # Errors
/// [`StoreError::Sled`] when sled cannot create it.
#[cfg(test)]
pub fn temporary_db() -> Result<sled::Db, StoreError> {
    Ok(sled::Config::new().temporary(true).open()?)
}

/// Flushes `db` to disk on the blocking pool.
///
/// # Errors
/// [`StoreError::Sled`] on I/O failure, [`StoreError::Transaction`] when the blocking task panicked.
pub async fn flush(db: &sled::Db) -> Result<(), StoreError> {
    let db = db.clone();
    tokio::task::spawn_blocking(move || db.flush())
        .await
        .map_err(|e| StoreError::Transaction(e.to_string()))??;
    Ok(())
}

/// What a transaction body returns: a value, or an abort carrying a [`StoreError`].
pub type TxResult<T> = Result<T, ConflictableTransactionError<StoreError>>;

/// Aborts the running transaction with `e`; nothing it wrote is kept.
pub fn abort<T>(e: StoreError) -> TxResult<T> {
    Err(ConflictableTransactionError::Abort(e))
}

/// The outcome of `Transactional::transaction` as a store result.
///
/// # Errors
/// The [`StoreError`] the body aborted with, or [`StoreError::Sled`] when sled failed.
pub fn finish<T>(r: Result<T, TransactionError<StoreError>>) -> Result<T, StoreError> {
    match r {
        Ok(v) => Ok(v),
        Err(TransactionError::Abort(e)) => Err(e),
        Err(TransactionError::Storage(e)) => Err(StoreError::from(e)),
    }
}

/// A sled tree of `T` values (JSON) keyed by strings.
#[derive(Clone)]
pub struct Tree<T> {
    tree: sled::Tree,
    name: &'static str,
    _t: PhantomData<fn() -> T>,
}

impl<T: Serialize + DeserializeOwned> Tree<T> {
    /// Opens the tree `name` of `db`.
    ///
    /// # Errors
    /// [`StoreError::Sled`] when sled cannot open the tree.
    pub fn open(db: &sled::Db, name: &'static str) -> Result<Self, StoreError> {
        Ok(Tree {
            tree: db.open_tree(name)?,
            name,
            _t: PhantomData,
        })
    }

    /// The raw tree, to name in a `(&a, &b).transaction(..)`.
    pub fn raw(&self) -> &sled::Tree {
        &self.tree
    }

    /// `value` as stored bytes.
    ///
    /// # Errors
    /// [`StoreError::Codec`] when it does not serialize.
    pub fn encode(&self, value: &T) -> Result<Vec<u8>, StoreError> {
        serde_json::to_vec(value).map_err(|source| StoreError::Codec {
            table: self.name,
            source,
        })
    }

    fn decode(&self, bytes: &[u8]) -> Result<T, StoreError> {
        serde_json::from_slice(bytes).map_err(|source| StoreError::Codec {
            table: self.name,
            source,
        })
    }

    /// The value at `key`, if any.
    ///
    /// # Errors
    /// [`StoreError::Sled`], [`StoreError::Codec`].
    pub fn get(&self, key: &str) -> Result<Option<T>, StoreError> {
        self.tree.get(key)?.map(|v| self.decode(&v)).transpose()
    }

    /// All values, in key order.
    ///
    /// # Errors
    /// [`StoreError::Sled`], [`StoreError::Codec`].
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
    /// [`StoreError::Sled`], [`StoreError::Codec`].
    pub fn scan_prefix(&self, prefix: &str) -> Result<Vec<(String, T)>, StoreError> {
        self.tree
            .scan_prefix(prefix)
            .map(|kv| {
                let (k, v) = kv?;
                Ok((String::from_utf8_lossy(&k).into_owned(), self.decode(&v)?))
            })
            .collect()
    }

    /// Inside a transaction on [`Tree::raw`] (`tx`): the value at `key`, if any; a value that does
    /// not decode aborts the transaction.
    pub fn tx_get(&self, tx: &TransactionalTree, key: &str) -> TxResult<Option<T>> {
        match tx.get(key)? {
            Some(bytes) => self.decode(&bytes).map(Some).or_else(abort),
            None => Ok(None),
        }
    }

    /// Inside a transaction on [`Tree::raw`] (`tx`): removes `key`, returning the old value if any; a
    /// value that does not decode aborts the transaction.
    pub fn tx_remove(&self, tx: &TransactionalTree, key: &str) -> TxResult<Option<T>> {
        match tx.remove(key)? {
            Some(bytes) => self.decode(&bytes).map(Some).or_else(abort),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use sled::Transactional;

    use super::*;

    #[test]
    fn an_aborted_transaction_writes_nothing_to_any_tree() {
        let db = temporary_db().unwrap();
        let (a, b) = (
            Tree::<u32>::open(&db, "a").unwrap(),
            Tree::<u32>::open(&db, "b").unwrap(),
        );
        let (one, two) = (a.encode(&1).unwrap(), b.encode(&2).unwrap());
        let r: Result<(), StoreError> = finish((a.raw(), b.raw()).transaction(|(ta, tb)| {
            ta.insert("k", one.clone())?;
            tb.insert("k", two.clone())?;
            abort(StoreError::Transaction("injected".into()))
        }));
        assert!(matches!(r, Err(StoreError::Transaction(m)) if m == "injected"));
        assert_eq!((a.get("k").unwrap(), b.get("k").unwrap()), (None, None));
    }

    #[test]
    fn tx_get_aborts_on_a_value_that_does_not_decode() {
        let db = temporary_db().unwrap();
        let t = Tree::<u32>::open(&db, "t").unwrap();
        t.raw().insert("bad", "not json").unwrap();
        let seven = t.encode(&7).unwrap();
        let r = finish(t.raw().transaction(|tx| {
            tx.insert("other", seven.clone())?;
            t.tx_get(tx, "bad")
        }));
        assert!(matches!(r, Err(StoreError::Codec { table: "t", .. })));
        assert_eq!(t.get("other").unwrap(), None);
    }
}

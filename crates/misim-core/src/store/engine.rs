//! The storage-engine trait behind [`super::Store`], and its two implementations: sled (the engine
//! misim ships with) and redb (chosen with `MISIM_STORE_ENGINE=redb`). The rest of misim never names
//! an engine: switching is this file's decision.
//!
//! sled: <https://docs.rs/sled/0.34.7/sled/> (multi-tree transactions, `Transactional for [&Tree]`);
//! redb: <https://docs.rs/redb/2.6.4/redb/> (one write transaction spans every table).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use super::StoreError;

/// One write of an atomic batch: `value` `None` removes `key`.
#[derive(Debug, Clone)]
pub struct Write {
    /// The table written.
    pub table: String,
    /// The key.
    pub key: Vec<u8>,
    /// The new value, or `None` to remove the key.
    pub value: Option<Vec<u8>>,
}

/// `(key, value)` pairs as an engine returns them.
pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// A key-value engine holding named tables of byte keys and values.
///
/// Every method is synchronous; [`super::Store::flush`] calls [`Engine::flush`] off the async runtime.
pub trait Engine: Send + Sync + 'static {
    /// The engine's name (`sled`, `redb`), for messages.
    fn name(&self) -> &'static str;
    /// Creates table `table` if it does not exist.
    fn open_table(&self, table: &str) -> Result<(), StoreError>;
    /// Names of the tables that exist (engine-internal ones excluded).
    fn tables(&self) -> Result<Vec<String>, StoreError>;
    /// The value at `key`.
    fn get(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// `(key, value)` pairs whose key starts with `prefix`, in key order.
    fn scan_prefix(&self, table: &str, prefix: &[u8]) -> Result<Pairs, StoreError>;
    /// Number of entries of `table`.
    fn len(&self, table: &str) -> Result<usize, StoreError>;
    /// Writes `value` at `key` when the key is absent; returns the value already there otherwise.
    fn insert_if_absent(
        &self,
        table: &str,
        key: &[u8],
        value: &[u8],
    ) -> Result<Option<Vec<u8>>, StoreError>;
    /// Applies every write, across tables, atomically: all or none reach the database.
    fn apply(&self, writes: &[Write]) -> Result<(), StoreError>;
    /// Makes every applied write durable.
    fn flush(&self) -> Result<(), StoreError>;
}

/// Which engine a store uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineKind {
    /// sled 0.34 (the default).
    Sled,
    /// redb 2.
    Redb,
}

impl EngineKind {
    /// The engine chosen by the environment variable `MISIM_STORE_ENGINE` (`sled`, the default, or
    /// `redb`).
    ///
    /// # Errors
    /// A message naming an unknown engine.
    pub fn from_env() -> Result<Self, StoreError> {
        match std::env::var("MISIM_STORE_ENGINE").as_deref() {
            Err(_) | Ok("") | Ok("sled") => Ok(EngineKind::Sled),
            Ok("redb") => Ok(EngineKind::Redb),
            Ok(other) => Err(StoreError::Config(format!(
                "MISIM_STORE_ENGINE={other}: unknown storage engine (use sled or redb)"
            ))),
        }
    }

    /// The engine's name.
    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Sled => "sled",
            EngineKind::Redb => "redb",
        }
    }

    /// The file in a store directory that marks this engine's data.
    pub fn marker_file(self) -> &'static str {
        match self {
            EngineKind::Sled => "db",
            EngineKind::Redb => "store.redb",
        }
    }
}

fn engine_err(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Engine(Box::new(e))
}

// ---------------------------------------------------------------------------------------------
// sled

/// sled behind [`Engine`].
pub struct SledEngine {
    db: sled::Db,
    trees: RwLock<HashMap<String, sled::Tree>>,
}

/// How long opening a database waits for the file lock of a store that was just closed in this
/// process: sled releases it from a background thread shortly after the last handle is dropped.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Whether sled failed to take its file lock (it wraps `WouldBlock` in a message).
pub fn is_lock_error(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::WouldBlock || e.to_string().contains("could not acquire lock")
}

/// Runs `open` until it does not fail on sled's file lock, for up to [`LOCK_WAIT`] (a restart in the
/// same process right after a stop); a lock held longer (another process) is returned as the error.
/// A panic inside sled (it panics on some truncated files) is returned as an error, not propagated.
///
/// # Errors
/// sled's error from the last attempt, or [`StoreError::Corrupt`] when sled panicked.
pub fn open_sled(
    path: &Path,
    open: impl Fn() -> sled::Result<sled::Db>,
) -> Result<sled::Db, StoreError> {
    let started = std::time::Instant::now();
    loop {
        let attempt = std::panic::catch_unwind(std::panic::AssertUnwindSafe(&open));
        match attempt {
            Err(panic) => {
                let what = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_string()))
                    .unwrap_or_else(|| "panic".into());
                return Err(StoreError::Corrupt {
                    party: String::new(),
                    path: path.to_path_buf(),
                    detail: format!("sled cannot read it ({what})"),
                });
            }
            Ok(Err(sled::Error::Io(e))) if is_lock_error(&e) && started.elapsed() < LOCK_WAIT => {
                tracing::debug!(path = %path.display(), "store locked; waiting for its release");
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Ok(Err(sled::Error::Corruption { at, .. })) => {
                return Err(StoreError::Corrupt {
                    party: String::new(),
                    path: path.to_path_buf(),
                    detail: format!("sled reports corrupted data at {at:?}"),
                })
            }
            Ok(Err(sled::Error::Io(e))) if is_lock_error(&e) => {
                return Err(StoreError::Locked(path.to_path_buf()))
            }
            Ok(other) => return other.map_err(engine_err),
        }
    }
}

impl SledEngine {
    /// Opens (or creates) the sled database in directory `path`.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`], [`StoreError::Locked`] or an engine error.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = open_sled(path, || {
            sled::Config::new()
                .path(path)
                .flush_every_ms(Some(500))
                // misim's state is small: a small page cache keeps idle memory low (sled's default is 1 GiB).
                .cache_capacity(super::STORE_CACHE_BYTES)
                .open()
        })?;
        Ok(Self::wrap(db))
    }

    /// A temporary in-memory sled database.
    ///
    /// # Errors
    /// An engine error.
    pub fn temporary() -> Result<Self, StoreError> {
        Ok(Self::wrap(
            sled::Config::new()
                .temporary(true)
                .open()
                .map_err(engine_err)?,
        ))
    }

    fn wrap(db: sled::Db) -> Self {
        SledEngine {
            db,
            trees: RwLock::new(HashMap::new()),
        }
    }

    fn tree(&self, table: &str) -> Result<sled::Tree, StoreError> {
        if let Some(t) = self
            .trees
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(table)
        {
            return Ok(t.clone());
        }
        let t = self.db.open_tree(table).map_err(engine_err)?;
        self.trees
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(table.to_string(), t.clone());
        Ok(t)
    }
}

impl Engine for SledEngine {
    fn name(&self) -> &'static str {
        "sled"
    }
    fn open_table(&self, table: &str) -> Result<(), StoreError> {
        self.tree(table).map(|_| ())
    }
    fn tables(&self) -> Result<Vec<String>, StoreError> {
        Ok(self
            .db
            .tree_names()
            .into_iter()
            .map(|n| String::from_utf8_lossy(&n).into_owned())
            .filter(|n| n != "__sled__default")
            .collect())
    }
    fn get(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .tree(table)?
            .get(key)
            .map_err(engine_err)?
            .map(|v| v.to_vec()))
    }
    fn scan_prefix(&self, table: &str, prefix: &[u8]) -> Result<Pairs, StoreError> {
        self.tree(table)?
            .scan_prefix(prefix)
            .map(|kv| {
                let (k, v) = kv.map_err(engine_err)?;
                Ok((k.to_vec(), v.to_vec()))
            })
            .collect()
    }
    fn len(&self, table: &str) -> Result<usize, StoreError> {
        Ok(self.tree(table)?.len())
    }
    fn insert_if_absent(
        &self,
        table: &str,
        key: &[u8],
        value: &[u8],
    ) -> Result<Option<Vec<u8>>, StoreError> {
        match self
            .tree(table)?
            .compare_and_swap(key, None as Option<&[u8]>, Some(value))
            .map_err(engine_err)?
        {
            Ok(()) => Ok(None),
            Err(current) => Ok(Some(
                current.current.map(|v| v.to_vec()).unwrap_or_default(),
            )),
        }
    }
    fn apply(&self, writes: &[Write]) -> Result<(), StoreError> {
        use sled::Transactional;
        // sled's multi-tree transaction indexes its first tree: nothing to write is no transaction.
        if writes.is_empty() {
            return Ok(());
        }
        if let [w] = writes {
            let tree = self.tree(&w.table)?;
            match &w.value {
                Some(v) => tree.insert(&w.key, v.as_slice()).map(|_| ()),
                None => tree.remove(&w.key).map(|_| ()),
            }
            .map_err(engine_err)?;
            return Ok(());
        }
        let mut names: Vec<&str> = writes.iter().map(|w| w.table.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        let trees = names
            .iter()
            .map(|n| self.tree(n))
            .collect::<Result<Vec<_>, _>>()?;
        let refs: Vec<&sled::Tree> = trees.iter().collect();
        refs.as_slice()
            .transaction(|txs| {
                for w in writes {
                    let i = names.binary_search(&w.table.as_str()).unwrap_or(0);
                    match &w.value {
                        Some(v) => {
                            txs[i].insert(w.key.as_slice(), v.as_slice())?;
                        }
                        None => {
                            txs[i].remove(w.key.as_slice())?;
                        }
                    }
                }
                Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
            })
            .map_err(|e| match e {
                sled::transaction::TransactionError::Storage(e) => engine_err(e),
                sled::transaction::TransactionError::Abort(()) => {
                    StoreError::Transaction("aborted".into())
                }
            })
    }
    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map(|_| ()).map_err(engine_err)
    }
}

// ---------------------------------------------------------------------------------------------
// redb

/// redb behind [`Engine`]: one file, `store.redb`, in the store directory.
pub struct RedbEngine {
    db: redb::Database,
    path: PathBuf,
    /// Whether commits reach the disk before they return (`false` for temporary databases, whose
    /// file is gone when the engine is dropped: no fsync per commit).
    durable: bool,
}

type RedbTable<'a> = redb::TableDefinition<'a, &'static [u8], &'static [u8]>;

fn def(table: &str) -> RedbTable<'_> {
    redb::TableDefinition::new(table)
}

impl RedbEngine {
    /// Opens (or creates) `dir/store.redb`.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] when redb finds the file damaged, [`StoreError::Locked`] when another
    /// process has it open, or an engine error.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join(EngineKind::Redb.marker_file());
        let opened = std::panic::catch_unwind(|| redb::Database::create(&path));
        let db = match opened {
            Err(_) => {
                return Err(StoreError::Corrupt {
                    party: String::new(),
                    path,
                    detail: "redb cannot read it".into(),
                })
            }
            Ok(Ok(db)) => db,
            Ok(Err(redb::DatabaseError::DatabaseAlreadyOpen)) => {
                return Err(StoreError::Locked(path))
            }
            Ok(Err(redb::DatabaseError::Storage(redb::StorageError::Corrupted(m)))) => {
                return Err(StoreError::Corrupt {
                    party: String::new(),
                    path,
                    detail: format!("redb reports corruption: {m}"),
                })
            }
            Ok(Err(e)) => {
                return Err(StoreError::Corrupt {
                    party: String::new(),
                    path,
                    detail: format!("redb cannot open it: {e}"),
                })
            }
        };
        Ok(RedbEngine {
            db,
            path,
            durable: true,
        })
    }

    /// A redb database in a new temporary file (removed when the engine is dropped on Unix, as the
    /// file is unlinked right after creation).
    ///
    /// # Errors
    /// An engine error.
    pub fn temporary() -> Result<Self, StoreError> {
        let file = tempfile_path();
        let db = redb::Database::create(&file).map_err(engine_err)?;
        let _ = std::fs::remove_file(&file);
        Ok(RedbEngine {
            db,
            path: file,
            durable: false,
        })
    }

    /// A write transaction, durable on commit unless the database is temporary.
    fn begin_write(&self) -> Result<redb::WriteTransaction, StoreError> {
        let mut tx = self.db.begin_write().map_err(engine_err)?;
        if !self.durable {
            tx.set_durability(redb::Durability::None);
        }
        Ok(tx)
    }

    fn read<R>(
        &self,
        table: &str,
        f: impl FnOnce(
            &redb::ReadOnlyTable<&'static [u8], &'static [u8]>,
        ) -> Result<R, redb::StorageError>,
        missing: R,
    ) -> Result<R, StoreError> {
        let tx = self.db.begin_read().map_err(engine_err)?;
        match tx.open_table(def(table)) {
            Ok(t) => f(&t).map_err(engine_err),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(missing),
            Err(e) => Err(engine_err(e)),
        }
    }
}

fn tempfile_path() -> PathBuf {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::env::temp_dir().join(format!("misim-redb-{}-{n}.redb", std::process::id()))
}

impl Engine for RedbEngine {
    fn name(&self) -> &'static str {
        "redb"
    }
    fn open_table(&self, table: &str) -> Result<(), StoreError> {
        let tx = self.begin_write()?;
        tx.open_table(def(table)).map_err(engine_err)?;
        tx.commit().map_err(engine_err)
    }
    fn tables(&self) -> Result<Vec<String>, StoreError> {
        use redb::TableHandle;
        let tx = self.db.begin_read().map_err(engine_err)?;
        let names = tx
            .list_tables()
            .map_err(engine_err)?
            .map(|h| h.name().to_string())
            .collect();
        Ok(names)
    }
    fn get(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(table, |t| Ok(t.get(key)?.map(|v| v.value().to_vec())), None)
    }
    fn scan_prefix(&self, table: &str, prefix: &[u8]) -> Result<Pairs, StoreError> {
        self.read(
            table,
            |t| {
                let mut out = Vec::new();
                for kv in t.range(prefix..)? {
                    let (k, v) = kv?;
                    if !k.value().starts_with(prefix) {
                        break;
                    }
                    out.push((k.value().to_vec(), v.value().to_vec()));
                }
                Ok(out)
            },
            Vec::new(),
        )
    }
    fn len(&self, table: &str) -> Result<usize, StoreError> {
        use redb::ReadableTableMetadata;
        self.read(table, |t| Ok(t.len()? as usize), 0)
    }
    fn insert_if_absent(
        &self,
        table: &str,
        key: &[u8],
        value: &[u8],
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let tx = self.begin_write()?;
        let current = {
            use redb::ReadableTable;
            let mut t = tx.open_table(def(table)).map_err(engine_err)?;
            let current = t.get(key).map_err(engine_err)?.map(|v| v.value().to_vec());
            if current.is_none() {
                t.insert(key, value).map_err(engine_err)?;
            }
            current
        };
        tx.commit().map_err(engine_err)?;
        Ok(current)
    }
    fn apply(&self, writes: &[Write]) -> Result<(), StoreError> {
        let tx = self.begin_write()?;
        for w in writes {
            let mut t = tx.open_table(def(&w.table)).map_err(engine_err)?;
            match &w.value {
                Some(v) => {
                    t.insert(w.key.as_slice(), v.as_slice())
                        .map_err(engine_err)?;
                }
                None => {
                    t.remove(w.key.as_slice()).map_err(engine_err)?;
                }
            }
        }
        tx.commit().map_err(engine_err)
    }
    fn flush(&self) -> Result<(), StoreError> {
        // Every redb commit is durable (Durability::Immediate is the default).
        let _ = &self.path;
        Ok(())
    }
}

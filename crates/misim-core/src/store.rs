//! The store every party keeps its state behind: typed tables (JSON values) over a storage
//! [`Engine`](engine::Engine) — sled by default, redb with `MISIM_STORE_ENGINE=redb` — with
//! transactions across the tables of a party ([`Store::transaction`]) and an integrity check on
//! open ([`Store::open_party`]).
//!
//! sled writes reach disk every 500 ms on their own; acknowledged writes must call [`Store::flush`]
//! before the API answers, so state the caller saw survives a crash (docs/ARCHITECTURE.md; the test
//! `flushed_writes_survive_reopen` below).

use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{de::DeserializeOwned, Serialize};

pub mod engine;
use engine::Write;
pub use engine::{Engine, EngineKind};

/// Page cache of each party's database, bytes (sled's default is 1 GiB).
pub const STORE_CACHE_BYTES: u64 = 4 * 1024 * 1024;

/// The table holding the store's schema record ([`Store::open_party`]).
pub const META_TABLE: &str = "__misim_meta";
const SCHEMA_KEY: &str = "schema";
/// A file beside the database, written once the schema record is durable: a store directory that
/// has it but whose database has no schema record lost its data.
pub const STAMP_FILE: &str = "misim-store.json";

/// Errors from the store. The engine's own error is kept as the source, never named in the type.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The engine failed (I/O).
    #[error("store: {0}")]
    Engine(#[source] Box<dyn std::error::Error + Send + Sync>),
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
    /// The store on disk is damaged: the party refuses to start rather than serve it.
    #[error("{}", corrupt_message(.party, .path, .detail))]
    Corrupt {
        /// The party whose store it is (`arm`, `msrp`, `aad`, `host:NAME`).
        party: String,
        /// The damaged directory or file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// Another process has the store open.
    #[error("the store {} is in use by another process (is another misim running on this data directory?)", .0.display())]
    Locked(PathBuf),
    /// The store cannot be used as configured.
    #[error("store: {0}")]
    Config(String),
}

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        StoreError::Engine(Box::new(e))
    }
}

/// The refusal of a damaged store: the path, what is wrong, and what to do.
fn corrupt_message(party: &str, path: &Path, detail: &str) -> String {
    // `misim up` lays stores out as DATA/{arm,msrp,aad} and DATA/hosts/NAME; `path` is the store
    // directory or the engine's file in it.
    let is_engine_file = [EngineKind::Sled, EngineKind::Redb]
        .iter()
        .any(|k| path.file_name() == Some(k.marker_file().as_ref()) && path.is_file());
    let dir = if is_engine_file {
        path.parent().unwrap_or(path)
    } else {
        path
    };
    let data = if party.starts_with("host:") {
        dir.parent().and_then(Path::parent)
    } else {
        dir.parent()
    };
    let data = data.map_or_else(|| "<DATA>".to_string(), |d| d.display().to_string());
    let after = if party == "arm" {
        "ARM holds the desired state, so its resources are then gone: prefer a backup"
    } else {
        "ARM re-creates what it knows on its next reconcile; check with `misim doctor`"
    };
    format!(
        "the store {} is damaged: {detail}. Restore the directory from a backup, or run \
         `misim repair --party {party} --data-dir {data}` to move it aside and start empty ({after})",
        path.display()
    )
}

impl StoreError {
    /// Whether this error means the data on disk is damaged.
    pub fn is_corrupt(&self) -> bool {
        matches!(self, StoreError::Corrupt { .. })
    }
}

/// The schema record written in [`META_TABLE`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SchemaRecord {
    /// The party the store belongs to.
    pub party: String,
    /// The party's schema version.
    pub version: u32,
}

/// One party's database.
#[derive(Clone)]
pub struct Store {
    engine: Arc<dyn Engine>,
    /// Serializes [`Store::transaction`]s (read-check-write bodies see no concurrent transaction).
    tx_lock: Arc<Mutex<()>>,
    fresh: bool,
}

impl Store {
    fn wrap(engine: Arc<dyn Engine>, fresh: bool) -> Self {
        Store {
            engine,
            tx_lock: Arc::new(Mutex::new(())),
            fresh,
        }
    }

    /// Opens (or creates) the database in directory `path` with the engine `MISIM_STORE_ENGINE`
    /// names, without the schema and integrity checks of [`Store::open_party`].
    ///
    /// # Errors
    /// [`StoreError`] when the directory cannot be opened, is locked by another process, or is
    /// damaged. The directory is made 0700 and its files 0600 ([`crate::fsperm`]).
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_engine(path, EngineKind::from_env()?, "store")
    }

    /// Opens with the engine `kind`; `party` names the store in messages.
    ///
    /// # Errors
    /// As [`Store::open`].
    pub fn open_engine(path: &Path, kind: EngineKind, party: &str) -> Result<Self, StoreError> {
        crate::fsperm::create_private_dir(path)?;
        // A directory written by the other engine is not silently reinitialized.
        for other in [EngineKind::Sled, EngineKind::Redb] {
            if other != kind && path.join(other.marker_file()).exists() {
                return Err(StoreError::Config(format!(
                    "{} holds a {} store but MISIM_STORE_ENGINE selects {}; export the data or \
                     select {} (docs/ARCHITECTURE.md, \"Storage engines\")",
                    path.display(),
                    other.name(),
                    kind.name(),
                    other.name()
                )));
            }
        }
        let opened: Result<Arc<dyn Engine>, StoreError> = match kind {
            EngineKind::Sled => engine::SledEngine::open(path).map(|e| Arc::new(e) as _),
            EngineKind::Redb => engine::RedbEngine::open(path).map(|e| Arc::new(e) as _),
        };
        let engine = opened.map_err(|e| match e {
            StoreError::Corrupt { path, detail, .. } => StoreError::Corrupt {
                party: party.to_string(),
                path,
                detail,
            },
            other => other,
        })?;
        // Keys live in these files: private to the user whatever the umask.
        crate::fsperm::restrict_tree(path)?;
        Ok(Self::wrap(engine, false))
    }

    /// Opens party `party`'s store in `path` and checks it before anything is served: the engine
    /// opens it (a truncated or empty file is reported, never a panic), its schema record names
    /// this party at a version not newer than `version`, and every value of every table decodes.
    /// A new store gets the schema record and reports [`Store::was_fresh`].
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] naming the path, what is wrong and what to do; [`StoreError::Locked`].
    pub fn open_party(path: &Path, party: &str, version: u32) -> Result<Self, StoreError> {
        let kind = EngineKind::from_env()?;
        let store = Self::open_engine(path, kind, party)?;
        store.check_party(path, party, version)
    }

    fn check_party(mut self, path: &Path, party: &str, version: u32) -> Result<Self, StoreError> {
        let store = &mut self;
        let kind = match store.engine.name() {
            "redb" => EngineKind::Redb,
            _ => EngineKind::Sled,
        };
        let corrupt = |detail: String| StoreError::Corrupt {
            party: party.to_string(),
            path: path.to_path_buf(),
            detail,
        };
        let meta = store.table::<SchemaRecord>(META_TABLE)?;
        let tables = store.engine.tables().map_err(|e| corrupt(e.to_string()))?;
        let mut records = 0usize;
        for t in tables.iter().filter(|t| t.as_str() != META_TABLE) {
            let rows = store
                .engine
                .scan_prefix(t, b"")
                .map_err(|e| corrupt(format!("table {t} cannot be read: {e}")))?;
            for (k, v) in &rows {
                if serde_json::from_slice::<serde_json::Value>(v).is_err() {
                    return Err(corrupt(format!(
                        "table {t}, key {:?}: the record does not decode",
                        String::from_utf8_lossy(k)
                    )));
                }
            }
            records += rows.len();
        }
        match meta.get(SCHEMA_KEY) {
            Err(e) => return Err(corrupt(format!("its schema record does not decode: {e}"))),
            Ok(Some(rec)) if rec.party != party => {
                return Err(corrupt(format!(
                    "it belongs to party {}, not {party}",
                    rec.party
                )))
            }
            Ok(Some(rec)) if rec.version > version => {
                return Err(corrupt(format!(
                    "schema version {} is newer than this misim understands ({version})",
                    rec.version
                )))
            }
            Ok(Some(_)) => {}
            Ok(None) if path.join(STAMP_FILE).exists() => {
                // This store was stamped once: its schema record is gone with the rest.
                return Err(corrupt(format!(
                    "its {} database lost its data (truncated, emptied or replaced; {records} \
                     records left without their schema record)",
                    kind.name()
                )));
            }
            Ok(None) => {
                // New store, or one written before schema records: stamp it.
                store.fresh = records == 0;
                meta.put(
                    SCHEMA_KEY,
                    &SchemaRecord {
                        party: party.to_string(),
                        version,
                    },
                )?;
                store.engine.flush()?;
            }
        }
        if !path.join(STAMP_FILE).exists() {
            let stamp =
                serde_json::json!({ "party": party, "version": version, "engine": kind.name() });
            crate::fsperm::write_private(&path.join(STAMP_FILE), stamp.to_string().as_bytes())?;
        }
        Ok(self)
    }

    /// Whether [`Store::open_party`] found no state at all (a new or emptied store).
    pub fn was_fresh(&self) -> bool {
        self.fresh
    }

    /// The engine's name (`sled`, `redb`).
    pub fn engine_name(&self) -> &'static str {
        self.engine.name()
    }

    /// A temporary database (for unit tests), with the engine `MISIM_STORE_ENGINE` names.
    ///
    /// # Errors
    /// [`StoreError`] when the engine cannot create it.
    pub fn temporary() -> Result<Self, StoreError> {
        let engine: Arc<dyn Engine> = match EngineKind::from_env()? {
            EngineKind::Sled => Arc::new(engine::SledEngine::temporary()?),
            EngineKind::Redb => Arc::new(engine::RedbEngine::temporary()?),
        };
        Ok(Self::wrap(engine, true))
    }

    /// The typed table named `name` (created if missing).
    ///
    /// # Errors
    /// [`StoreError`] when the engine cannot open it.
    pub fn table<T: Serialize + DeserializeOwned>(
        &self,
        name: &'static str,
    ) -> Result<Table<T>, StoreError> {
        self.engine.open_table(name)?;
        Ok(Table {
            engine: self.engine.clone(),
            name,
            _t: PhantomData,
        })
    }

    /// Runs `body` as one transaction over any tables of this store: its writes reach the
    /// database all together when it returns `Ok`, and none when it returns `Err`. Reads inside
    /// see the transaction's own writes; transactions run one at a time.
    ///
    /// # Errors
    /// The body's error, or the engine's when the commit fails (then nothing is written).
    pub fn transaction<R, E: From<StoreError>>(
        &self,
        body: impl FnOnce(&mut Tx) -> Result<R, E>,
    ) -> Result<R, E> {
        let _serial = self.tx_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut tx = Tx { writes: Vec::new() };
        let r = body(&mut tx)?;
        self.engine.apply(&tx.writes)?;
        Ok(r)
    }

    /// Flushes all pending writes to disk, off the async runtime.
    ///
    /// # Errors
    /// [`StoreError`] on I/O failure.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || engine.flush())
            .await
            .map_err(|e| StoreError::Transaction(e.to_string()))?
    }
}

/// Moves the store directory `dir` aside to `dir.damaged-<unix seconds>` (nothing is deleted), so
/// the party starts empty next time; returns where it went.
///
/// # Errors
/// The I/O error of the rename; a message when `dir` does not exist.
pub fn move_aside(dir: &Path) -> Result<PathBuf, StoreError> {
    if !dir.exists() {
        return Err(StoreError::Config(format!(
            "{} does not exist",
            dir.display()
        )));
    }
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let mut name = dir.as_os_str().to_owned();
    name.push(format!(".damaged-{secs}"));
    let to = PathBuf::from(name);
    std::fs::rename(dir, &to)?;
    Ok(to)
}

/// The writes of a running [`Store::transaction`].
pub struct Tx {
    writes: Vec<Write>,
}

impl Tx {
    /// The value at `key` of `table`, as this transaction sees it.
    ///
    /// # Errors
    /// [`StoreError`] on an engine failure or a value that does not decode.
    pub fn get<T: Serialize + DeserializeOwned>(
        &self,
        table: &Table<T>,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        if let Some(w) = self
            .writes
            .iter()
            .rev()
            .find(|w| w.table == table.name && w.key == key.as_bytes())
        {
            return w.value.as_deref().map(|v| table.decode(v)).transpose();
        }
        table.get(key)
    }

    /// Writes `value` at `key` of `table` when the transaction commits.
    ///
    /// # Errors
    /// [`StoreError::Codec`] when the value does not serialize.
    pub fn put<T: Serialize + DeserializeOwned>(
        &mut self,
        table: &Table<T>,
        key: &str,
        value: &T,
    ) -> Result<(), StoreError> {
        let value = Some(table.encode(value)?);
        self.writes.push(Write {
            table: table.name.to_string(),
            key: key.as_bytes().to_vec(),
            value,
        });
        Ok(())
    }

    /// Removes `key` of `table` when the transaction commits; returns the value it sees now.
    ///
    /// # Errors
    /// [`StoreError`] on an engine failure or a value that does not decode.
    pub fn remove<T: Serialize + DeserializeOwned>(
        &mut self,
        table: &Table<T>,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        let old = self.get(table, key)?;
        self.writes.push(Write {
            table: table.name.to_string(),
            key: key.as_bytes().to_vec(),
            value: None,
        });
        Ok(old)
    }
}

/// A table of `T` values keyed by strings.
#[derive(Clone)]
pub struct Table<T> {
    engine: Arc<dyn Engine>,
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

    /// The table's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The value at `key`, if any.
    ///
    /// # Errors
    /// [`StoreError`] on an engine failure or a value that does not (de)serialize.
    pub fn get(&self, key: &str) -> Result<Option<T>, StoreError> {
        self.engine
            .get(self.name, key.as_bytes())?
            .map(|v| self.decode(&v))
            .transpose()
    }

    /// Writes `value` at `key`, replacing any previous value.
    ///
    /// # Errors
    /// [`StoreError`] on an engine failure or a value that does not (de)serialize.
    pub fn put(&self, key: &str, value: &T) -> Result<(), StoreError> {
        self.engine.apply(&[Write {
            table: self.name.to_string(),
            key: key.as_bytes().to_vec(),
            value: Some(self.encode(value)?),
        }])
    }

    /// Removes `key`, returning the old value if there was one.
    ///
    /// # Errors
    /// [`StoreError`] on an engine failure or a value that does not (de)serialize.
    pub fn remove(&self, key: &str) -> Result<Option<T>, StoreError> {
        let old = self.get(key)?;
        self.engine.apply(&[Write {
            table: self.name.to_string(),
            key: key.as_bytes().to_vec(),
            value: None,
        }])?;
        Ok(old)
    }

    /// Writes `value` at `key` only if the key is absent; returns the value now stored.
    ///
    /// # Errors
    /// [`StoreError`] on an engine failure or a value that does not (de)serialize.
    pub fn insert_if_absent(&self, key: &str, value: &T) -> Result<T, StoreError> {
        let bytes = self.encode(value)?;
        match self
            .engine
            .insert_if_absent(self.name, key.as_bytes(), &bytes)?
        {
            None => self.decode(&bytes),
            Some(current) => self.decode(&current),
        }
    }

    /// All values, in key order.
    ///
    /// # Errors
    /// [`StoreError`] on an engine failure or a value that does not (de)serialize.
    pub fn values(&self) -> Result<Vec<T>, StoreError> {
        self.engine
            .scan_prefix(self.name, b"")?
            .into_iter()
            .map(|(_, v)| self.decode(&v))
            .collect()
    }

    /// All `(key, value)` pairs whose key starts with `prefix`, in key order.
    ///
    /// # Errors
    /// [`StoreError`] on an engine failure or a value that does not (de)serialize.
    pub fn scan_prefix(&self, prefix: &str) -> Result<Vec<(String, T)>, StoreError> {
        self.engine
            .scan_prefix(self.name, prefix.as_bytes())?
            .into_iter()
            .map(|(k, v)| Ok((String::from_utf8_lossy(&k).into_owned(), self.decode(&v)?)))
            .collect()
    }

    /// Number of entries (0 when the engine cannot count them).
    pub fn len(&self) -> usize {
        self.engine.len(self.name).unwrap_or(0)
    }

    /// True when the table has no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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

    #[test]
    fn a_transaction_writes_all_tables_or_none() {
        let s = Store::temporary().unwrap();
        let (a, b) = (s.table::<Rec>("a").unwrap(), s.table::<Rec>("b").unwrap());
        let r: Result<(), StoreError> = s.transaction(|tx| {
            tx.put(&a, "k", &Rec { n: 1 })?;
            tx.put(&b, "k", &Rec { n: 2 })?;
            Err(StoreError::Transaction("injected".into()))
        });
        assert!(r.is_err());
        assert_eq!((a.get("k").unwrap(), b.get("k").unwrap()), (None, None));
        s.transaction(|tx| {
            tx.put(&a, "k", &Rec { n: 1 })?;
            assert_eq!(tx.get(&a, "k")?, Some(Rec { n: 1 }));
            assert_eq!(tx.remove(&a, "k")?, Some(Rec { n: 1 }));
            tx.put(&b, "k", &Rec { n: 2 })?;
            Ok::<_, StoreError>(())
        })
        .unwrap();
        assert_eq!(a.get("k").unwrap(), None);
        assert_eq!(b.get("k").unwrap(), Some(Rec { n: 2 }));
        // A transaction that writes nothing commits nothing (and does not trip the engine).
        s.transaction(|_| Ok::<_, StoreError>(())).unwrap();
    }

    #[tokio::test]
    async fn open_party_stamps_a_new_store_and_refuses_another_party() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open_party(dir.path(), "msrp", 1).unwrap();
            assert!(s.was_fresh());
            s.table::<Rec>("recs")
                .unwrap()
                .put("k", &Rec { n: 1 })
                .unwrap();
            s.flush().await.unwrap();
        }
        {
            let s = Store::open_party(dir.path(), "msrp", 1).unwrap();
            assert!(!s.was_fresh());
        }
        let e = Store::open_party(dir.path(), "arm", 1).err().unwrap();
        assert!(e.is_corrupt(), "{e}");
        assert!(e.to_string().contains("misim repair --party arm"), "{e}");
        let e = Store::open_party(dir.path(), "msrp", 0).err().unwrap();
        assert!(e.to_string().contains("newer"), "{e}");
    }

    #[tokio::test]
    async fn open_party_refuses_a_record_that_does_not_decode() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open_party(dir.path(), "aad", 1).unwrap();
            s.transaction(|tx| {
                let t = s.table::<Rec>("recs")?;
                tx.put(&t, "ok", &Rec { n: 1 })
            })
            .unwrap();
            s.engine
                .apply(&[Write {
                    table: "recs".into(),
                    key: b"bad".to_vec(),
                    value: Some(b"{torn".to_vec()),
                }])
                .unwrap();
            s.flush().await.unwrap();
        }
        let e = Store::open_party(dir.path(), "aad", 1).err().unwrap();
        let msg = e.to_string();
        assert!(
            msg.contains("table recs") && msg.contains("does not decode"),
            "{msg}"
        );
        assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
    }

    #[test]
    fn an_empty_or_truncated_database_file_is_refused_without_a_panic() {
        let kind = EngineKind::from_env().unwrap();
        for len in [0u64, 7] {
            let dir = tempfile::tempdir().unwrap();
            {
                let s = Store::open_party(dir.path(), "arm", 1).unwrap();
                let t = s.table::<Rec>("recs").unwrap();
                for i in 0..200 {
                    t.put(&format!("k{i}"), &Rec { n: i }).unwrap();
                }
                s.engine.flush().unwrap();
            }
            let file = dir.path().join(kind.marker_file());
            std::fs::OpenOptions::new()
                .write(true)
                .open(&file)
                .unwrap()
                .set_len(len)
                .unwrap();
            match Store::open_party(dir.path(), "arm", 1) {
                Err(e) => {
                    assert!(e.is_corrupt(), "{len} bytes: {e}");
                    // The data directory is the store directory's parent, whichever path is named.
                    let data = dir.path().parent().unwrap().display().to_string();
                    let fix = format!("misim repair --party arm --data-dir {data}`");
                    assert!(e.to_string().contains(&fix), "{len} bytes: {e}");
                }
                // An engine may recover an earlier consistent state from what is left; then it is
                // a store that opens, never a panic.
                Ok(_) => panic!("{len} bytes: a store that lost its data opened"),
            }
        }
    }

    #[test]
    fn move_aside_keeps_the_damaged_directory() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("msrp");
        std::fs::create_dir(&store).unwrap();
        std::fs::write(store.join("db"), b"x").unwrap();
        let to = move_aside(&store).unwrap();
        assert!(!store.exists());
        assert_eq!(std::fs::read(to.join("db")).unwrap(), b"x");
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

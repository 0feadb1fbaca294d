//! Token-signing keys in the store: the key records, the migration of the single pre-rotation key,
//! and a rotation's writes (drop expired keys, retire the current one, add the new one) as one store
//! transaction, so a failed rotation leaves the stored ring as it was.

use misim_core::StoreError;
use serde::{Deserialize, Serialize};

use super::AadStore;
use crate::error::Result;

/// A persisted token-signing key: the current one, or a retired one still published in JWKS.
#[derive(Clone, Serialize, Deserialize)]
pub struct SigningKeyRecord {
    /// PKCS#8 DER of the RSA-2048 private key. Never logged.
    pub private_key_pkcs8_der: Vec<u8>,
    /// Self-signed certificate of the key, DER (published in the JWKS `x5c`).
    pub certificate_der: Vec<u8>,
    /// When the key became the signing key, epoch seconds (0 in records written before rotation).
    #[serde(default)]
    pub activated_at: i64,
    /// When a newer key replaced it, epoch seconds; `None` for the current key.
    #[serde(default)]
    pub retired_at: Option<i64>,
}

/// Key of the single signing key written before rotation existed (migrated on start).
const LEGACY_SIGNING_KEY: &str = "current";
/// Prefix of rotated signing keys, followed by a zero-padded sequence number.
const SIGNING_KEY_PREFIX: &str = "k/";

fn signing_key(seq: u64) -> String {
    format!("{SIGNING_KEY_PREFIX}{seq:010}")
}

impl AadStore {
    /// The persisted token-signing keys with their sequence numbers, oldest first. A key stored by
    /// a version without rotation is returned as sequence 1 (and moved there in one transaction).
    ///
    /// # Errors
    /// [`crate::error::AadError::Store`] when the store fails or a record does not decode.
    pub fn signing_keys(&self) -> Result<Vec<(u64, SigningKeyRecord)>> {
        let mut keys: Vec<(u64, SigningKeyRecord)> = self
            .signing
            .scan_prefix(SIGNING_KEY_PREFIX)?
            .into_iter()
            .filter_map(|(k, r)| {
                let seq = k.strip_prefix(SIGNING_KEY_PREFIX)?.parse().ok()?;
                Some((seq, r))
            })
            .collect();
        if keys.is_empty() {
            if let Some(legacy) = self.signing.get(LEGACY_SIGNING_KEY)? {
                self.transaction(|tx| {
                    tx.put(&self.signing, &signing_key(1), &legacy)?;
                    tx.remove(&self.signing, LEGACY_SIGNING_KEY)?;
                    Ok(())
                })?;
                keys.push((1, legacy));
            }
        }
        keys.sort_by_key(|(seq, _)| *seq);
        Ok(keys)
    }

    /// Applies one key rotation in one transaction: removes the keys `drop` (retired keys no token
    /// needs any more), rewrites the keys in `retire` (with their `retired_at` set) and adds `add` as
    /// the new current key.
    ///
    /// # Errors
    /// [`StoreError::Transaction`] (as [`crate::error::AadError::Store`]) when a key in `retire` is not
    /// stored or the sequence number of `add` is already taken, an engine error;
    /// in every case nothing is written.
    pub fn rotate_signing_keys(
        &self,
        drop: &[u64],
        retire: &[(u64, SigningKeyRecord)],
        add: (u64, &SigningKeyRecord),
    ) -> Result<()> {
        self.transaction(|tx| {
            for seq in drop {
                tx.remove(&self.signing, &signing_key(*seq))?;
            }
            for (seq, record) in retire {
                let key = signing_key(*seq);
                if tx.get(&self.signing, &key)?.is_none() {
                    return Err(StoreError::Transaction(format!(
                        "signing key {seq} to retire is not stored"
                    )));
                }
                tx.put(&self.signing, &key, record)?;
            }
            let (add_seq, add_key) = (add.0, signing_key(add.0));
            if tx.get(&self.signing, &add_key)?.is_some() {
                return Err(StoreError::Transaction(format!(
                    "signing key {add_seq} is already stored"
                )));
            }
            tx.put(&self.signing, &add_key, add.1)?;
            // In the same transaction as the key, so never durable without it; the key ring's
            // callers flush.
            if tx.get(&self.meta, super::SIGNING_KEY_ISSUED)?.is_none() {
                tx.put(&self.meta, super::SIGNING_KEY_ISSUED, &"1".to_string())?;
            }
            Ok(())
        })?;
        Ok(())
    }

    /// Writes the signing key with sequence number `seq` outside any rotation (tests set up stores).
    #[cfg(test)]
    pub fn put_signing_key(&self, seq: u64, record: &SigningKeyRecord) -> Result<()> {
        Ok(self.signing.put(&signing_key(seq), record)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(activated_at: i64) -> SigningKeyRecord {
        SigningKeyRecord {
            private_key_pkcs8_der: vec![1],
            certificate_der: vec![2],
            activated_at,
            retired_at: None,
        }
    }

    #[test]
    fn rotation_writes_all_or_nothing() {
        let store = AadStore::temporary();
        store.put_signing_key(1, &record(10)).unwrap();
        store.put_signing_key(2, &record(20)).unwrap();
        let retired = SigningKeyRecord {
            retired_at: Some(30),
            ..record(20)
        };
        // Sequence 2 is taken: the drop of 1 and the retirement of 2 must not happen either.
        let r = store.rotate_signing_keys(&[1], &[(2, retired.clone())], (2, &record(30)));
        assert!(r.is_err());
        let keys = store.signing_keys().unwrap();
        assert_eq!(keys.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(keys[1].1.retired_at, None);

        store
            .rotate_signing_keys(&[1], &[(2, retired)], (3, &record(30)))
            .unwrap();
        let keys = store.signing_keys().unwrap();
        assert_eq!(keys.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [2, 3]);
        assert_eq!(keys[0].1.retired_at, Some(30));
        // Retiring a key that is not stored aborts.
        assert!(store
            .rotate_signing_keys(&[], &[(9, record(0))], (4, &record(40)))
            .is_err());
        assert_eq!(store.signing_keys().unwrap().len(), 2);
    }

    #[test]
    fn legacy_single_key_moves_to_sequence_one() {
        let store = AadStore::temporary();
        store.signing.put(LEGACY_SIGNING_KEY, &record(5)).unwrap();
        let keys = store.signing_keys().unwrap();
        assert_eq!((keys.len(), keys[0].0, keys[0].1.activated_at), (1, 1, 5));
        assert_eq!(
            store
                .signing
                .get(LEGACY_SIGNING_KEY)
                .unwrap()
                .map(|r| r.activated_at),
            None
        );
        assert_eq!(store.signing_keys().unwrap().len(), 1);
    }
}

//! The token-signing key: an RSA-2048 key with a self-signed certificate, generated once on first start,
//! persisted, and published as a JWK (`kid` = `x5t` = base64url SHA-1 of the certificate, as Entra does).

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::traits::PublicKeyParts;
use tracing::info;

use crate::error::{AadError, Result};
use crate::store::{AadStore, SigningKeyRecord};

/// Validity of the signing certificate, seconds (10 years; Entra rolls keys, misim keeps one).
const CERT_VALIDITY_SECS: i64 = 10 * 365 * 24 * 3600;

/// The loaded token-signing key. Its private part never leaves this struct except into the signer.
pub struct SigningKey {
    /// Key ID: base64url (no padding) SHA-1 of the certificate DER; also the `x5t`.
    pub kid: String,
    certificate_der: Vec<u8>,
    encoding_key: jsonwebtoken::EncodingKey,
    n: String,
    e: String,
}

impl SigningKey {
    /// Loads the persisted key, or generates (on the blocking pool), persists and flushes one.
    ///
    /// # Errors
    /// [`AadError::Internal`] when generation or decoding fails, [`AadError::Store`] on store failure.
    pub async fn load_or_create(store: &AadStore, now: i64) -> Result<Self> {
        if let Some(record) = store.signing_key()? {
            return Self::from_record(&record);
        }
        let private_key_pkcs8_der = misim_core::cert::generate_rsa_key_blocking()
            .await
            .map_err(|e| AadError::Internal(e.to_string()))?;
        let kc = misim_core::cert::self_signed(
            &private_key_pkcs8_der,
            "misim azure ad token signing",
            now - 3600,
            now + CERT_VALIDITY_SECS,
        )
        .map_err(|e| AadError::Internal(e.to_string()))?;
        let record = SigningKeyRecord {
            private_key_pkcs8_der,
            certificate_der: kc.certificate_der,
        };
        let record = store.insert_signing_key(&record)?;
        store.flush().await?;
        let key = Self::from_record(&record)?;
        info!(kid = %key.kid, "generated token signing key");
        Ok(key)
    }

    fn from_record(record: &SigningKeyRecord) -> Result<Self> {
        let private = rsa::RsaPrivateKey::from_pkcs8_der(&record.private_key_pkcs8_der)
            .map_err(|e| AadError::Internal(format!("signing key: {e}")))?;
        let pkcs1 = private
            .to_pkcs1_der()
            .map_err(|e| AadError::Internal(format!("signing key: {e}")))?;
        let public = private.to_public_key();
        Ok(SigningKey {
            kid: misim_core::cert::x5t(&record.certificate_der),
            certificate_der: record.certificate_der.clone(),
            encoding_key: jsonwebtoken::EncodingKey::from_rsa_der(pkcs1.as_bytes()),
            n: URL_SAFE_NO_PAD.encode(public.n().to_bytes_be()),
            e: URL_SAFE_NO_PAD.encode(public.e().to_bytes_be()),
        })
    }

    /// Signs `claims` as an RS256 JWT with header `{"typ":"JWT","alg":"RS256","kid"}` plus `x5t` when
    /// `with_x5t` (v1 tokens carry both, v2 only `kid`; reference §3.3). CPU-bound: call from a
    /// blocking thread.
    ///
    /// # Errors
    /// [`AadError::Internal`] when signing fails.
    pub fn sign(&self, claims: &serde_json::Value, with_x5t: bool) -> Result<String> {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        if with_x5t {
            header.x5t = Some(self.kid.clone());
        }
        jsonwebtoken::encode(&header, claims, &self.encoding_key)
            .map_err(|e| AadError::Internal(format!("signing: {e}")))
    }

    /// The public key as a JWK in Entra's shape: `kty, use, kid, x5t, n, e, x5c` (standard base64 DER),
    /// plus `issuer` for v2 key sets (reference §3.4, S19).
    pub fn jwk(&self, issuer: Option<&str>) -> serde_json::Value {
        let mut jwk = serde_json::json!({
            "kty": "RSA",
            "use": "sig",
            "kid": self.kid,
            "x5t": self.kid,
            "n": self.n,
            "e": self.e,
            "x5c": [STANDARD.encode(&self.certificate_der)],
        });
        if let (Some(issuer), Some(obj)) = (issuer, jwk.as_object_mut()) {
            obj.insert("issuer".into(), issuer.into());
        }
        jwk
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn key_is_generated_once_and_reloaded() {
        let store = AadStore::open(misim_core::Store::temporary().unwrap()).unwrap();
        let a = SigningKey::load_or_create(&store, 1_700_000_000)
            .await
            .unwrap();
        let b = SigningKey::load_or_create(&store, 1_700_000_000)
            .await
            .unwrap();
        assert_eq!(a.kid, b.kid);
        assert_eq!(a.kid.len(), 27);
        let jwk = a.jwk(Some("iss"));
        assert_eq!(jwk["e"], "AQAB");
        assert_eq!(jwk["issuer"], "iss");
        assert_eq!(jwk["x5t"], jwk["kid"]);
    }
}

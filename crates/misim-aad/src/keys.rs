//! A token-signing key: an RSA-2048 key with a self-signed certificate, published as a JWK (`kid` =
//! `x5t` = base64url SHA-1 of the certificate, as Entra does). [`crate::keyring`] rotates them.
//!
//! The private key is parsed once, when the key is loaded, into an aws-lc-rs key pair
//! ([`misim_core::cert::JwsSigner`]) that signs every token (RS256, RFC 7518 §3.3): no PEM or DER
//! parsing per token.

use std::sync::Arc;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use misim_core::cert::JwsSigner;
use serde::Serialize;

use crate::error::{AadError, Result};
use crate::store::SigningKeyRecord;

/// Validity of a signing certificate, seconds (10 years; rotation, not expiry, ends a key's use).
const CERT_VALIDITY_SECS: i64 = 10 * 365 * 24 * 3600;

/// One loaded token-signing key. Its private part never leaves this struct except into the signer.
#[derive(Clone)]
pub struct SigningKey {
    /// Key ID: base64url (no padding) SHA-1 of the certificate DER; also the `x5t`.
    pub kid: String,
    /// Sequence number in the key ring (1 for the first key).
    pub seq: u64,
    /// When the key became the signing key, epoch seconds.
    pub activated_at: i64,
    /// When a newer key replaced it, epoch seconds; `None` while it signs.
    pub retired_at: Option<i64>,
    private_key_pkcs8_der: Vec<u8>,
    certificate_der: Vec<u8>,
    signer: Arc<JwsSigner>,
    n: String,
    e: String,
}

/// The JOSE header of a token: `{"typ":"JWT","alg":"RS256","kid",["x5t"]}` in Entra's order.
#[derive(Serialize)]
struct JoseHeader<'a> {
    typ: &'static str,
    alg: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    x5t: Option<&'a str>,
    kid: &'a str,
}

impl SigningKey {
    /// Generates a new RSA-2048 key with a self-signed certificate, as the record to persist. Key
    /// generation and the certificate's RSA signature both run on the blocking pool, one task.
    ///
    /// # Errors
    /// [`AadError::Internal`] when generation fails or the blocking task panics.
    pub async fn generate(now: i64) -> Result<SigningKeyRecord> {
        tokio::task::spawn_blocking(move || Self::generate_blocking(now))
            .await
            .map_err(|e| AadError::Internal(format!("signing key generation task: {e}")))?
    }

    fn generate_blocking(now: i64) -> Result<SigningKeyRecord> {
        let private_key_pkcs8_der =
            misim_core::cert::generate_rsa_key().map_err(|e| AadError::Internal(e.to_string()))?;
        let kc = misim_core::cert::self_signed(
            &private_key_pkcs8_der,
            "misim azure ad token signing",
            now.saturating_sub(3600),
            now.saturating_add(CERT_VALIDITY_SECS),
        )
        .map_err(|e| AadError::Internal(e.to_string()))?;
        Ok(SigningKeyRecord {
            private_key_pkcs8_der,
            certificate_der: kc.certificate_der,
            activated_at: now,
            retired_at: None,
        })
    }

    /// Loads a persisted key with sequence number `seq`.
    ///
    /// # Errors
    /// [`AadError::Internal`] when the stored key does not decode.
    pub fn from_record(seq: u64, record: &SigningKeyRecord) -> Result<Self> {
        let signer = JwsSigner::from_pkcs8(&record.private_key_pkcs8_der)
            .map_err(|e| AadError::Internal(format!("signing key: {e}")))?;
        let Some((n, e)) = signer.rsa_public_components() else {
            return Err(AadError::Internal("signing key: not an RSA key".into()));
        };
        let (n, e) = (URL_SAFE_NO_PAD.encode(n), URL_SAFE_NO_PAD.encode(e));
        Ok(SigningKey {
            kid: misim_core::cert::x5t(&record.certificate_der),
            seq,
            activated_at: record.activated_at,
            retired_at: record.retired_at,
            private_key_pkcs8_der: record.private_key_pkcs8_der.clone(),
            certificate_der: record.certificate_der.clone(),
            signer: Arc::new(signer),
            n,
            e,
        })
    }

    /// The record to persist this key as (with its current activation and retirement times).
    pub fn to_record(&self) -> SigningKeyRecord {
        SigningKeyRecord {
            private_key_pkcs8_der: self.private_key_pkcs8_der.clone(),
            certificate_der: self.certificate_der.clone(),
            activated_at: self.activated_at,
            retired_at: self.retired_at,
        }
    }

    /// Signs `claims` as an RS256 JWT with header `{"typ":"JWT","alg":"RS256","kid"}` plus `x5t` when
    /// `with_x5t` (v1 tokens carry both, v2 only `kid`;
    /// <https://learn.microsoft.com/entra/identity-platform/access-token-claims-reference>). CPU-bound: call from a
    /// blocking thread.
    ///
    /// # Errors
    /// [`AadError::Internal`] when signing fails.
    pub fn sign(&self, claims: &impl Serialize, with_x5t: bool) -> Result<String> {
        let header = JoseHeader {
            typ: "JWT",
            alg: "RS256",
            x5t: with_x5t.then_some(self.kid.as_str()),
            kid: &self.kid,
        };
        self.signer
            .sign(&header, claims)
            .map_err(|e| AadError::Internal(format!("signing: {e}")))
    }

    /// The public key as a JWK in Entra's shape: `kty, use, kid, x5t, n, e, x5c` (standard base64 DER),
    /// plus `issuer` for v2 key sets (Entra's key set as captured in
    /// <https://github.com/panva/wellknown/blob/99a4b3ae9d1de76decf16c46cd945d29aa9b2a63/issuers/entra-common/entra-common.mjs>).
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
    async fn generated_key_loads_and_publishes_an_entra_shaped_jwk() {
        let record = SigningKey::generate(1_700_000_000).await.unwrap();
        assert_eq!(record.activated_at, 1_700_000_000);
        let key = SigningKey::from_record(1, &record).unwrap();
        assert_eq!(key.kid.len(), 27);
        let jwk = key.jwk(Some("iss"));
        assert_eq!(jwk["e"], "AQAB");
        assert_eq!(jwk["issuer"], "iss");
        assert_eq!(jwk["x5t"], jwk["kid"]);
        assert!(key.jwk(None).get("issuer").is_none());
    }
}

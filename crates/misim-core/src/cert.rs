//! RSA keys and X.509 certificates: identity certificates (MSRP) and token-signing keys (Azure AD).
//!
//! Keys are generated with the `rsa` crate (rcgen's ring backend cannot generate RSA keys) and
//! certificates are made with rcgen. Key generation takes tens to hundreds of milliseconds, so callers
//! on the async runtime use [`generate_rsa_key_blocking`].

use base64::Engine;
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey};
use rsa::RsaPrivateKey;
use sha1::Digest;

/// Errors while generating keys or certificates.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// RSA key generation or encoding failed.
    #[error("rsa: {0}")]
    Rsa(String),
    /// Certificate generation failed.
    #[error("certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
}

/// An RSA key pair with a certificate for its public key.
#[derive(Clone)]
pub struct KeyAndCert {
    /// PKCS#8 DER of the private key. Never logged, never sent to ARM.
    pub private_key_pkcs8_der: Vec<u8>,
    /// X.509 certificate, DER.
    pub certificate_der: Vec<u8>,
    /// Validity start, epoch seconds.
    pub not_before: i64,
    /// Validity end, epoch seconds.
    pub not_after: i64,
}

impl std::fmt::Debug for KeyAndCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyAndCert")
            .field("thumbprint", &sha1_thumbprint_hex(&self.certificate_der))
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// Generates an RSA-2048 private key as PKCS#8 DER (CPU-bound: call from a blocking thread).
///
/// # Errors
/// [`CertError::Rsa`] if the RNG or encoding fails.
pub fn generate_rsa_key() -> Result<Vec<u8>, CertError> {
    let key = RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048)
        .map_err(|e| CertError::Rsa(e.to_string()))?;
    Ok(key
        .to_pkcs8_der()
        .map_err(|e| CertError::Rsa(e.to_string()))?
        .as_bytes()
        .to_vec())
}

/// [`generate_rsa_key`] on tokio's blocking pool, keeping the runtime free.
///
/// # Errors
/// As [`generate_rsa_key`].
pub async fn generate_rsa_key_blocking() -> Result<Vec<u8>, CertError> {
    tokio::task::spawn_blocking(generate_rsa_key)
        .await
        .map_err(|e| CertError::Rsa(e.to_string()))?
}

/// Makes a self-signed certificate with subject `CN={common_name}` for an existing PKCS#8 RSA key,
/// valid from `not_before` to `not_after` (epoch seconds). Signed with SHA256withRSA.
///
/// # Errors
/// [`CertError::Rcgen`] if the key cannot be loaded or the certificate cannot be signed.
pub fn self_signed(
    private_key_pkcs8_der: &[u8],
    common_name: &str,
    not_before: i64,
    not_after: i64,
) -> Result<KeyAndCert, CertError> {
    let der = rustls_pki_key(private_key_pkcs8_der);
    let key = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&der, &rcgen::PKCS_RSA_SHA256)?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    params.not_before = to_offset(not_before);
    params.not_after = to_offset(not_after);
    params.serial_number = Some(rcgen::SerialNumber::from_slice(
        uuid::Uuid::new_v4().as_bytes(),
    ));
    let cert = params.self_signed(&key)?;
    Ok(KeyAndCert {
        private_key_pkcs8_der: private_key_pkcs8_der.to_vec(),
        certificate_der: cert.der().to_vec(),
        not_before,
        not_after,
    })
}

fn rustls_pki_key(pkcs8: &[u8]) -> rustls_pki_types::PrivatePkcs8KeyDer<'static> {
    rustls_pki_types::PrivatePkcs8KeyDer::from(pkcs8.to_vec())
}

fn to_offset(epoch_seconds: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(epoch_seconds)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// The RSA public key of a PKCS#8 private key, as SPKI DER.
///
/// # Errors
/// [`CertError::Rsa`] if the key does not parse.
pub fn public_key_spki_der(private_key_pkcs8_der: &[u8]) -> Result<Vec<u8>, CertError> {
    use rsa::pkcs8::DecodePrivateKey;
    let key = RsaPrivateKey::from_pkcs8_der(private_key_pkcs8_der)
        .map_err(|e| CertError::Rsa(e.to_string()))?;
    Ok(key
        .to_public_key()
        .to_public_key_der()
        .map_err(|e| CertError::Rsa(e.to_string()))?
        .as_bytes()
        .to_vec())
}

/// Upper-case hex SHA-1 of a certificate's DER: the thumbprint Azure shows (`customKeyIdentifier`).
pub fn sha1_thumbprint_hex(certificate_der: &[u8]) -> String {
    sha1::Sha1::digest(certificate_der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect()
}

/// base64url (no padding) SHA-1 of a certificate's DER: the JOSE `x5t` header and Entra's `kid`.
pub fn x5t(certificate_der: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha1::Sha1::digest(certificate_der))
}

/// base64url (no padding) SHA-256 of a certificate's DER: the JOSE `x5t#S256` header.
pub fn x5t_s256(certificate_der: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(certificate_der))
}

/// PEM text of a DER blob with the given label (`CERTIFICATE`, `PRIVATE KEY`).
pub fn to_pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_certificate_has_requested_validity_and_stable_thumbprints() {
        let key = generate_rsa_key().unwrap();
        let kc = self_signed(&key, "test", 1_700_000_000, 1_700_086_400).unwrap();
        assert_eq!(kc.not_before, 1_700_000_000);
        assert_eq!(sha1_thumbprint_hex(&kc.certificate_der).len(), 40);
        assert_eq!(x5t(&kc.certificate_der).len(), 27);
        assert_eq!(x5t_s256(&kc.certificate_der).len(), 43);
        assert!(
            to_pem("CERTIFICATE", &kc.certificate_der).starts_with("-----BEGIN CERTIFICATE-----\n")
        );
        assert!(!public_key_spki_der(&key).unwrap().is_empty());
    }
}

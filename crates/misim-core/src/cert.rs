//! Keys and X.509 certificates: identity certificates (MSRP) and token-signing keys (Azure AD).
//!
//! One crypto backend, aws-lc-rs, generates the keys (RSA-2048, or EC P-256 for large simulations,
//! [`KeyType`]), and rcgen on the same backend makes the certificates. Digests for thumbprints come
//! from aws-lc-rs too; the `pem` and `hex` crates write PEM and hex. Key generation takes
//! milliseconds (RSA) or microseconds (EC), so callers on the async runtime use
//! [`generate_key_blocking`].

use aws_lc_rs::digest;
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{
    EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P256_SHA256_FIXED_SIGNING,
    RSA_PKCS1_SHA256,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// Errors while generating keys or certificates.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// Key generation, parsing or encoding failed.
    #[error("key: {0}")]
    Key(String),
    /// Certificate generation failed.
    #[error("certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
}

/// The kind of key an identity certificate carries.
///
/// Azure's managed-identity certificates hold RSA-2048 keys
/// (<https://learn.microsoft.com/entra/identity/managed-identities-azure-resources/how-managed-identities-work-vm>);
/// no client ever sees them (only the tokens Azure AD signs), so a large simulation may use EC P-256
/// keys, which generate in microseconds. Client assertions are then signed ES256 (RFC 7518 §3.4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum KeyType {
    /// RSA, 2048-bit modulus, public exponent 65537; assertions RS256. Azure's choice.
    #[default]
    Rsa2048,
    /// ECDSA on NIST P-256; assertions ES256.
    EcP256,
}

/// OID of `rsaEncryption` (RFC 8017 appendix C).
const OID_RSA_ENCRYPTION: &str = "1.2.840.113549.1.1.1";
/// OID of `id-ecPublicKey` (RFC 5480 §2.1.1).
const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
/// OID of the `secp256r1` (P-256) curve (RFC 5480 §2.1.1.1).
const OID_P256: &str = "1.2.840.10045.3.1.7";

impl KeyType {
    /// The command-line spelling: `rsa-2048` or `ec-p256`.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::Rsa2048 => "rsa-2048",
            KeyType::EcP256 => "ec-p256",
        }
    }

    /// The JWS `alg` a client assertion signed with this key uses (`RS256` or `ES256`).
    pub fn jws_alg(self) -> &'static str {
        match self {
            KeyType::Rsa2048 => "RS256",
            KeyType::EcP256 => "ES256",
        }
    }

    /// The key type of a PKCS#8 private key, read from its algorithm identifier.
    ///
    /// # Errors
    /// [`CertError::Key`] when the DER is not PKCS#8, or holds neither an RSA nor a P-256 key.
    pub fn of_pkcs8(private_key_pkcs8_der: &[u8]) -> Result<Self, CertError> {
        use rsa::pkcs8::der::asn1::ObjectIdentifier;
        let info = rsa::pkcs8::PrivateKeyInfo::try_from(private_key_pkcs8_der)
            .map_err(|e| CertError::Key(format!("pkcs#8: {e}")))?;
        let oid = info.algorithm.oid.to_string();
        if oid == OID_RSA_ENCRYPTION {
            return Ok(KeyType::Rsa2048);
        }
        let curve = info
            .algorithm
            .parameters_oid()
            .ok()
            .map(|o: ObjectIdentifier| o.to_string());
        if oid == OID_EC_PUBLIC_KEY && curve.as_deref() == Some(OID_P256) {
            return Ok(KeyType::EcP256);
        }
        Err(CertError::Key(format!(
            "unsupported key algorithm {oid} (curve {curve:?})"
        )))
    }
}

impl std::fmt::Display for KeyType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for KeyType {
    type Err = String;

    /// Parses `rsa-2048` or `ec-p256` (ASCII case-insensitive).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "rsa-2048" => Ok(KeyType::Rsa2048),
            "ec-p256" => Ok(KeyType::EcP256),
            _ => Err(format!(
                "unknown key type '{s}': expected rsa-2048 or ec-p256"
            )),
        }
    }
}

/// A key pair with a certificate for its public key.
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

/// Generates a private key of type `key_type` as PKCS#8 DER (CPU-bound: call from a blocking thread).
///
/// # Errors
/// [`CertError::Key`] if generation or encoding fails.
pub fn generate_key(key_type: KeyType) -> Result<Vec<u8>, CertError> {
    let failed = |e: aws_lc_rs::error::Unspecified| CertError::Key(format!("generate: {e}"));
    match key_type {
        KeyType::Rsa2048 => {
            let key = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                .map_err(failed)?;
            Ok(key.as_der().map_err(failed)?.as_ref().to_vec())
        }
        KeyType::EcP256 => {
            let key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING).map_err(failed)?;
            Ok(key.to_pkcs8v1().map_err(failed)?.as_ref().to_vec())
        }
    }
}

/// Generates an RSA-2048 private key as PKCS#8 DER (CPU-bound: call from a blocking thread).
///
/// # Errors
/// As [`generate_key`].
pub fn generate_rsa_key() -> Result<Vec<u8>, CertError> {
    generate_key(KeyType::Rsa2048)
}

/// [`generate_key`] on tokio's blocking pool, keeping the runtime free.
///
/// # Errors
/// As [`generate_key`].
pub async fn generate_key_blocking(key_type: KeyType) -> Result<Vec<u8>, CertError> {
    tokio::task::spawn_blocking(move || generate_key(key_type))
        .await
        .map_err(|e| CertError::Key(e.to_string()))?
}

/// [`generate_rsa_key`] on tokio's blocking pool.
///
/// # Errors
/// As [`generate_key`].
pub async fn generate_rsa_key_blocking() -> Result<Vec<u8>, CertError> {
    generate_key_blocking(KeyType::Rsa2048).await
}

/// Makes a self-signed certificate with subject `CN={common_name}` for an existing PKCS#8 key (RSA
/// or P-256, [`KeyType::of_pkcs8`]), valid from `not_before` to `not_after` (epoch seconds). Signed
/// with SHA256withRSA or ecdsa-with-SHA256.
///
/// # Errors
/// [`CertError::Key`] for an unsupported key, [`CertError::Rcgen`] if the key cannot be loaded or
/// the certificate cannot be signed.
pub fn self_signed(
    private_key_pkcs8_der: &[u8],
    common_name: &str,
    not_before: i64,
    not_after: i64,
) -> Result<KeyAndCert, CertError> {
    let alg = match KeyType::of_pkcs8(private_key_pkcs8_der)? {
        KeyType::Rsa2048 => &rcgen::PKCS_RSA_SHA256,
        KeyType::EcP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
    };
    let der = rustls_pki_types::PrivatePkcs8KeyDer::from(private_key_pkcs8_der);
    let key = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&der, alg)?;
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

fn to_offset(epoch_seconds: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(epoch_seconds)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// The public key of a PKCS#8 private key (RSA or P-256), as SubjectPublicKeyInfo DER.
///
/// # Errors
/// [`CertError::Key`] if the key does not parse.
pub fn public_key_spki_der(private_key_pkcs8_der: &[u8]) -> Result<Vec<u8>, CertError> {
    let bad = |e: &dyn std::fmt::Display| CertError::Key(format!("parse: {e}"));
    let der = match KeyType::of_pkcs8(private_key_pkcs8_der)? {
        KeyType::Rsa2048 => aws_lc_rs::rsa::KeyPair::from_pkcs8(private_key_pkcs8_der)
            .map_err(|e| bad(&e))?
            .public_key()
            .as_der()
            .map_err(|e| bad(&e))?
            .as_ref()
            .to_vec(),
        KeyType::EcP256 => {
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, private_key_pkcs8_der)
                .map_err(|e| bad(&e))?
                .public_key()
                .as_der()
                .map_err(|e| bad(&e))?
                .as_ref()
                .to_vec()
        }
    };
    Ok(der)
}

/// A private key parsed once into aws-lc-rs and kept parsed, for signing JWS compact serializations
/// (RFC 7515 §7.1): RS256 (RSASSA-PKCS1-v1_5 with SHA-256) for an RSA key, ES256 (ECDSA P-256 with
/// SHA-256, `r ‖ s`, RFC 7518 §3.4) for a P-256 key. Azure AD's token-signing keys and the hosts'
/// identity keys sign with it, so no token pays for parsing a key. `Debug` never shows the key.
pub struct JwsSigner {
    key: SignerKey,
}

enum SignerKey {
    Rsa(aws_lc_rs::rsa::KeyPair),
    EcP256(EcdsaKeyPair),
}

impl JwsSigner {
    /// Parses a PKCS#8 private key (RSA or P-256).
    ///
    /// # Errors
    /// [`CertError::Key`] when the key does not parse or is of another type.
    pub fn from_pkcs8(private_key_pkcs8_der: &[u8]) -> Result<Self, CertError> {
        let bad = |e: &dyn std::fmt::Display| CertError::Key(format!("parse: {e}"));
        let key = match KeyType::of_pkcs8(private_key_pkcs8_der)? {
            KeyType::Rsa2048 => SignerKey::Rsa(
                aws_lc_rs::rsa::KeyPair::from_pkcs8(private_key_pkcs8_der).map_err(|e| bad(&e))?,
            ),
            KeyType::EcP256 => SignerKey::EcP256(
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, private_key_pkcs8_der)
                    .map_err(|e| bad(&e))?,
            ),
        };
        Ok(JwsSigner { key })
    }

    /// The key's type.
    pub fn key_type(&self) -> KeyType {
        match self.key {
            SignerKey::Rsa(_) => KeyType::Rsa2048,
            SignerKey::EcP256(_) => KeyType::EcP256,
        }
    }

    /// The JWS `alg` this key signs with (`RS256` or `ES256`); the header given to
    /// [`JwsSigner::sign`] must name it.
    pub fn alg(&self) -> &'static str {
        self.key_type().jws_alg()
    }

    /// The RSA public key's modulus and exponent, big-endian without leading zeros (a JWK's `n`
    /// and `e` before base64url); `None` for an EC key.
    pub fn rsa_public_components(&self) -> Option<(Vec<u8>, Vec<u8>)> {
        match &self.key {
            SignerKey::Rsa(k) => {
                let public = k.public_key();
                Some((
                    public.modulus().big_endian_without_leading_zero().to_vec(),
                    public.exponent().big_endian_without_leading_zero().to_vec(),
                ))
            }
            SignerKey::EcP256(_) => None,
        }
    }

    /// Signs: `b64url(json(header)) "." b64url(json(claims)) "." b64url(signature)`. CPU-bound (an
    /// RSA signature takes a fraction of a millisecond): call from a blocking thread.
    ///
    /// # Errors
    /// [`CertError::Key`] when the header or claims do not serialize or signing fails.
    pub fn sign(
        &self,
        header: &impl serde::Serialize,
        claims: &impl serde::Serialize,
    ) -> Result<String, CertError> {
        let json = |e: serde_json::Error| CertError::Key(format!("jws json: {e}"));
        let failed = |e: aws_lc_rs::error::Unspecified| CertError::Key(format!("signing: {e}"));
        let mut jws = URL_SAFE_NO_PAD.encode(serde_json::to_vec(header).map_err(json)?);
        jws.push('.');
        URL_SAFE_NO_PAD.encode_string(serde_json::to_vec(claims).map_err(json)?, &mut jws);
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let signature = match &self.key {
            SignerKey::Rsa(k) => {
                let mut sig = vec![0; k.public_modulus_len()];
                k.sign(&RSA_PKCS1_SHA256, &rng, jws.as_bytes(), &mut sig)
                    .map_err(failed)?;
                sig
            }
            SignerKey::EcP256(k) => k
                .sign(&rng, jws.as_bytes())
                .map_err(failed)?
                .as_ref()
                .to_vec(),
        };
        jws.push('.');
        URL_SAFE_NO_PAD.encode_string(signature, &mut jws);
        Ok(jws)
    }
}

impl std::fmt::Debug for JwsSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwsSigner")
            .field("key_type", &self.key_type())
            .finish_non_exhaustive()
    }
}

fn sha1(der: &[u8]) -> digest::Digest {
    digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, der)
}

/// Upper-case hex SHA-1 of a certificate's DER: the thumbprint Azure shows (`customKeyIdentifier`).
pub fn sha1_thumbprint_hex(certificate_der: &[u8]) -> String {
    hex::encode_upper(sha1(certificate_der))
}

/// base64url (no padding) SHA-1 of a certificate's DER: the JOSE `x5t` header and Entra's `kid`.
pub fn x5t(certificate_der: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(sha1(certificate_der))
}

/// base64url (no padding) SHA-256 of a certificate's DER: the JOSE `x5t#S256` header.
pub fn x5t_s256(certificate_der: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, certificate_der))
}

/// PEM text (RFC 7468: 64-character lines, `\n` line ends) of a DER blob with the given label
/// (`CERTIFICATE`, `PRIVATE KEY`, `PUBLIC KEY`).
pub fn to_pem(label: &str, der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new(label, der),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
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
        let pem = to_pem("CERTIFICATE", &kc.certificate_der);
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----\n"));
        assert!(pem.ends_with("-----END CERTIFICATE-----\n"));
        assert!(pem.lines().all(|l| l.len() <= 64) && !pem.contains('\r'));
        assert!(!public_key_spki_der(&key).unwrap().is_empty());
        assert_eq!(KeyType::of_pkcs8(&key).unwrap(), KeyType::Rsa2048);
    }

    #[test]
    fn ec_p256_keys_make_ecdsa_certificates() {
        let key = generate_key(KeyType::EcP256).unwrap();
        assert_eq!(KeyType::of_pkcs8(&key).unwrap(), KeyType::EcP256);
        let kc = self_signed(&key, "ec", 1_700_000_000, 1_700_086_400).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&kc.certificate_der).unwrap();
        assert_eq!(
            cert.public_key().algorithm.algorithm.to_id_string(),
            OID_EC_PUBLIC_KEY
        );
        // SPKI of a P-256 key: 26 bytes of header and the 65-byte uncompressed point.
        assert_eq!(public_key_spki_der(&key).unwrap().len(), 91);
    }

    #[test]
    fn key_types_parse_from_their_cli_spelling_and_refuse_garbage() {
        for t in [KeyType::Rsa2048, KeyType::EcP256] {
            assert_eq!(t.as_str().parse::<KeyType>().unwrap(), t);
        }
        assert_eq!("EC-P256".parse::<KeyType>().unwrap(), KeyType::EcP256);
        assert!("rsa-4096".parse::<KeyType>().is_err());
        assert!(KeyType::of_pkcs8(b"not a key").is_err());
        assert_eq!(KeyType::EcP256.jws_alg(), "ES256");
    }

    #[test]
    fn jws_signer_signs_rs256_and_es256_that_jsonwebtoken_verifies() {
        use x509_parser::prelude::FromDer;
        for key_type in [KeyType::Rsa2048, KeyType::EcP256] {
            let key = generate_key(key_type).unwrap();
            let signer = JwsSigner::from_pkcs8(&key).unwrap();
            assert_eq!(signer.key_type(), key_type);
            let header = serde_json::json!({"typ": "JWT", "alg": signer.alg(), "kid": "k"});
            let jws = signer
                .sign(&header, &serde_json::json!({"sub": "s"}))
                .unwrap();
            let spki = public_key_spki_der(&key).unwrap();
            let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&spki).unwrap();
            let bits = spki.subject_public_key.data.to_vec();
            let (decoding, alg) = match key_type {
                KeyType::Rsa2048 => (
                    jsonwebtoken::DecodingKey::from_rsa_der(&bits),
                    jsonwebtoken::Algorithm::RS256,
                ),
                KeyType::EcP256 => (
                    jsonwebtoken::DecodingKey::from_ec_der(&bits),
                    jsonwebtoken::Algorithm::ES256,
                ),
            };
            let mut v = jsonwebtoken::Validation::new(alg);
            v.required_spec_claims.clear();
            let claims = jsonwebtoken::decode::<serde_json::Value>(&jws, &decoding, &v)
                .unwrap()
                .claims;
            assert_eq!(claims["sub"], "s", "{key_type}");
            assert_eq!(
                signer.rsa_public_components().is_some(),
                key_type == KeyType::Rsa2048
            );
        }
    }
}

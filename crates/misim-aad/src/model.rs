//! Directory objects as stored: tenants, managed-identity service principals and their certificate
//! key credentials.

use serde::{Deserialize, Serialize};

use crate::error::{AadError, Result};

/// An Entra tenant (directory).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    /// Tenant ID, a lower-case GUID (the `tid` claim).
    pub tenant_id: String,
    /// Display name.
    pub display_name: String,
    /// Initial domain, e.g. `misim.onmicrosoft.com`; the token endpoint accepts it in place of the ID.
    pub default_domain: String,
    /// When the tenant was created, epoch seconds: the `xms_tcdt` claim of every token it issues.
    /// 0 for tenants stored before misim recorded it (their tokens then omit `xms_tcdt`).
    #[serde(default)]
    pub created_date_time: i64,
}

/// A managed identity's service principal (Graph `servicePrincipal` with
/// `servicePrincipalType: "ManagedIdentity"`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicePrincipal {
    /// Tenant ID the principal lives in.
    pub tenant_id: String,
    /// Object ID: the identity's `principalId` (token `oid` and `sub`).
    pub object_id: String,
    /// Application ID: the identity's `clientId` (token `appid`/`azp`).
    pub app_id: String,
    /// Display name (the identity's name).
    pub display_name: String,
    /// ARM resource ID of the identity: VM ID (system-assigned) or UAMI ID (user-assigned); the
    /// `xms_mirid` claim. Kept with the casing it was created with.
    pub msi_resource_id: String,
    /// True for user-assigned identities (`alternativeNames[0] = "isExplicit=True"`).
    pub is_explicit: bool,
    /// Certificate key credentials the identity can sign client assertions with.
    pub key_credentials: Vec<KeyCredential>,
}

impl ServicePrincipal {
    /// Graph's `servicePrincipalType` for managed identities.
    pub const TYPE: &'static str = "ManagedIdentity";

    /// Graph's `alternativeNames` of a managed identity: `["isExplicit=True|False", "<msi resource id>"]`.
    pub fn alternative_names(&self) -> Vec<String> {
        let explicit = if self.is_explicit { "True" } else { "False" };
        vec![
            format!("isExplicit={explicit}"),
            self.msi_resource_id.clone(),
        ]
    }
}

/// A certificate key credential with everything the token endpoint needs precomputed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyCredential {
    /// Key ID, a GUID.
    pub key_id: String,
    /// The X.509 certificate, DER.
    pub certificate_der: Vec<u8>,
    /// Upper-case hex SHA-1 of the DER (Graph `customKeyIdentifier`).
    pub thumbprint_sha1_hex: String,
    /// base64url (no padding) SHA-1 of the DER: the assertion's `x5t`.
    pub x5t: String,
    /// base64url (no padding) SHA-256 of the DER: the assertion's `x5t#S256`.
    pub x5t_s256: String,
    /// The certificate's public key bits (the SPKI `subjectPublicKey`): PKCS#1 `RSAPublicKey` DER
    /// for RSA, the SEC1 uncompressed point for EC P-256. (Named for RSA, the first kind stored.)
    pub public_key_pkcs1_der: Vec<u8>,
    /// The key's algorithm; records stored before EC keys were accepted are RSA.
    #[serde(default)]
    pub key_algorithm: KeyAlgorithm,
    /// Certificate `notBefore`, epoch seconds.
    pub start_date_time: i64,
    /// Certificate `notAfter`, epoch seconds.
    pub end_date_time: i64,
}

/// OID of `rsaEncryption` in a SubjectPublicKeyInfo.
const RSA_ENCRYPTION_OID: &str = "1.2.840.113549.1.1.1";
/// OID of `id-ecPublicKey` in a SubjectPublicKeyInfo (RFC 5480 §2.1.1).
const EC_PUBLIC_KEY_OID: &str = "1.2.840.10045.2.1";
/// OID of the P-256 curve (`secp256r1`, RFC 5480 §2.1.1.1).
const P256_OID: &str = "1.2.840.10045.3.1.7";

/// The public-key algorithm of a certificate credential. Entra accepts RSA certificates and, for
/// client assertions, ECDSA ones signed ES256
/// (<https://learn.microsoft.com/entra/identity-platform/certificate-credentials>: `alg` "RS256,
/// PS256 or ES256").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyAlgorithm {
    /// RSA (any modulus size); assertions RS256/384/512 or PS256/384/512.
    #[default]
    Rsa,
    /// ECDSA on P-256; assertions ES256.
    EcP256,
}

impl KeyCredential {
    /// Builds a key credential from a certificate, with a new random key ID.
    ///
    /// # Errors
    /// [`AadError::InvalidArgument`] when the DER is not an X.509 certificate with an RSA or P-256 key.
    pub fn from_certificate(certificate_der: &[u8]) -> Result<Self> {
        if certificate_der.is_empty() {
            return Err(AadError::InvalidArgument(
                "certificate_der is required".into(),
            ));
        }
        let (_, cert) = x509_parser::parse_x509_certificate(certificate_der).map_err(|e| {
            AadError::InvalidArgument(format!("certificate_der is not an x.509 certificate: {e}"))
        })?;
        let spki = cert.public_key();
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .map(|o| o.to_id_string());
        let key_algorithm = match spki.algorithm.algorithm.to_id_string().as_str() {
            RSA_ENCRYPTION_OID => KeyAlgorithm::Rsa,
            EC_PUBLIC_KEY_OID if curve.as_deref() == Some(P256_OID) => KeyAlgorithm::EcP256,
            _ => {
                return Err(AadError::InvalidArgument(
                    "certificate key must be rsa or ec p-256".into(),
                ))
            }
        };
        Ok(KeyCredential {
            key_id: uuid::Uuid::new_v4().to_string(),
            certificate_der: certificate_der.to_vec(),
            thumbprint_sha1_hex: misim_core::cert::sha1_thumbprint_hex(certificate_der),
            x5t: misim_core::cert::x5t(certificate_der),
            x5t_s256: misim_core::cert::x5t_s256(certificate_der),
            public_key_pkcs1_der: spki.subject_public_key.data.to_vec(),
            key_algorithm,
            start_date_time: cert.validity().not_before.timestamp(),
            end_date_time: cert.validity().not_after.timestamp(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_credential_from_certificate_reads_validity_and_thumbprints() {
        let key = misim_core::cert::generate_rsa_key().unwrap();
        let kc = misim_core::cert::self_signed(&key, "t", 1_700_000_000, 1_700_086_400).unwrap();
        let cred = KeyCredential::from_certificate(&kc.certificate_der).unwrap();
        assert_eq!(cred.start_date_time, 1_700_000_000);
        assert_eq!(cred.end_date_time, 1_700_086_400);
        assert_eq!(cred.x5t, misim_core::cert::x5t(&kc.certificate_der));
        assert!(!cred.public_key_pkcs1_der.is_empty());
    }

    #[test]
    fn key_credential_rejects_garbage() {
        assert!(matches!(
            KeyCredential::from_certificate(b"nope"),
            Err(AadError::InvalidArgument(_))
        ));
        assert!(matches!(
            KeyCredential::from_certificate(b""),
            Err(AadError::InvalidArgument(_))
        ));
    }
}

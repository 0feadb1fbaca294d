//! MSRP's domain types: an identity record (what MSRP stores per managed identity) and its credentials.

use misim_core::cert::KeyAndCert;
use serde::{Deserialize, Serialize};

pub use misim_core::identity_kind::IdentityKind;

/// Where an identity is in its creation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum IdentityState {
    /// Key and certificate are stored; the service principal may or may not exist in Azure AD yet.
    /// A later create completes it with the same certificate.
    Pending,
    /// The service principal exists and `client_id`/`principal_id` are set.
    Ready,
}

/// One certificate credential: an RSA key, its self-signed certificate and the Azure AD key credential
/// it was registered as.
#[derive(Clone, Serialize, Deserialize)]
pub struct StoredCredential {
    /// PKCS#8 DER of the private key. Never logged; only `GetCredential` returns it.
    #[serde(with = "misim_core::serde_b64")]
    pub private_key_pkcs8_der: Vec<u8>,
    /// X.509 certificate, DER.
    #[serde(with = "misim_core::serde_b64")]
    pub certificate_der: Vec<u8>,
    /// Upper-case hex SHA-1 of the certificate (Azure's thumbprint / `customKeyIdentifier`).
    pub thumbprint_sha1_hex: String,
    /// Validity start, epoch seconds (also the issue time, used for the renewal age).
    pub not_before: i64,
    /// Validity end, epoch seconds.
    pub not_after: i64,
    /// Azure AD `keyId` of the key credential, once registered.
    pub aad_key_id: Option<String>,
}

impl StoredCredential {
    /// A not-yet-registered credential from a freshly made key and certificate.
    pub fn new(kc: KeyAndCert) -> Self {
        StoredCredential {
            thumbprint_sha1_hex: misim_core::cert::sha1_thumbprint_hex(&kc.certificate_der),
            private_key_pkcs8_der: kc.private_key_pkcs8_der,
            certificate_der: kc.certificate_der,
            not_before: kc.not_before,
            not_after: kc.not_after,
            aad_key_id: None,
        }
    }
}

impl std::fmt::Debug for StoredCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredCredential")
            .field("thumbprint", &self.thumbprint_sha1_hex)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("aad_key_id", &self.aad_key_id)
            .finish_non_exhaustive()
    }
}

/// What MSRP stores per managed identity (keyed by `ResourceId::key()`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IdentityRecord {
    /// ARM resource ID as first created (original casing): the VM for system-assigned, the
    /// `userAssignedIdentities` resource for user-assigned.
    pub resource_id: String,
    /// System- or user-assigned.
    pub kind: IdentityKind,
    /// Tenant (GUID) of the service principal.
    pub tenant_id: String,
    /// Service principal `appId` (the identity's client ID), once Ready.
    pub client_id: Option<String>,
    /// Service principal `objectId` (the identity's principal ID), once Ready.
    pub principal_id: Option<String>,
    /// Pending until the service principal exists.
    pub state: IdentityState,
    /// The credential hosts get from `GetCredential`.
    pub current: StoredCredential,
    /// Credentials replaced by renewal, still registered in Azure AD until they expire (tokens already
    /// requested with them and hosts that have not refreshed yet keep working).
    pub previous: Vec<StoredCredential>,
    /// A renewal credential stored before it is registered in Azure AD, so a crash mid-renewal reuses it.
    pub next: Option<StoredCredential>,
}

impl IdentityRecord {
    /// True once the service principal exists.
    pub fn is_ready(&self) -> bool {
        self.state == IdentityState::Ready
    }
}

/// A request to create an identity (step 2 of the flow: ARM asks MSRP).
#[derive(Clone, Debug)]
pub struct NewIdentity {
    /// The identity's ARM resource ID.
    pub resource_id: misim_core::ResourceId,
    /// System- or user-assigned.
    pub kind: IdentityKind,
    /// Tenant (GUID) the service principal is created in.
    pub tenant_id: String,
}

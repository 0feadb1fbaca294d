//! Domain types of a host: the VMs placed on it, their identities (as ARM describes them) and the
//! credentials fetched from MSRP. These are what the store keeps; the gRPC adapter converts to them.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock, RwLock};

use misim_core::ResourceId;
use serde::{Deserialize, Serialize};

use crate::error::KeyError;

/// What IMDS knows about a VM (instance metadata, from ARM).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmInfo {
    /// ARM resource ID of the VM.
    pub resource_id: ResourceId,
    /// vmId GUID.
    pub vm_id: String,
    /// VM name.
    pub name: String,
    /// Subscription GUID.
    pub subscription_id: String,
    /// Resource group name.
    pub resource_group: String,
    /// Azure region, e.g. `westeurope`.
    pub location: String,
    /// Size, e.g. `Standard_D2s_v3`.
    pub vm_size: String,
    /// `Linux` or `Windows`.
    pub os_type: String,
    /// Scale set name, empty for standalone VMs.
    pub vm_scale_set_name: String,
    /// ARM tags.
    pub tags: BTreeMap<String, String>,
    /// Private IPv4 address of the primary NIC.
    pub private_ip_address: String,
    /// MAC address of the primary NIC.
    pub mac_address: String,
}

pub use misim_core::identity_kind::IdentityKind;

/// An identity of a VM as ARM knows it (no key material).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityRef {
    /// ARM resource ID of the identity (the VM's ID for system-assigned).
    pub msi_res_id: ResourceId,
    /// System- or user-assigned.
    pub kind: IdentityKind,
    /// Application (client) id of the identity's service principal.
    pub client_id: String,
    /// Object (principal) id of the service principal.
    pub principal_id: String,
    /// Tenant of the service principal.
    pub tenant_id: String,
}

impl IdentityRef {
    /// Whether `other` is the same identity: same resource ID and client id (any case).
    pub fn same_as(&self, other: &IdentityRef) -> bool {
        self.msi_res_id == other.msi_res_id && self.client_id.eq_ignore_ascii_case(&other.client_id)
    }

    /// The key of this identity's one credential on the host (store table `credentials`): resource
    /// ID and client id, lower case (an identity deleted and re-created under the same name has a
    /// new client id, so it never gets the old one's credential).
    pub fn credential_key(&self) -> String {
        format!(
            "{}|{}",
            self.msi_res_id.key(),
            self.client_id.to_ascii_lowercase()
        )
    }
}

/// The certificate and private key MSRP issued for an identity. `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    /// X.509 certificate, DER.
    #[serde(with = "misim_core::serde_b64")]
    pub certificate_der: Vec<u8>,
    /// PKCS#8 DER of the RSA private key.
    #[serde(with = "misim_core::serde_b64")]
    pub private_key_pkcs8_der: Vec<u8>,
    /// Certificate validity end, epoch seconds.
    pub not_after: i64,
}

impl Credential {
    /// Upper-case hex SHA-1 thumbprint of the certificate.
    pub fn thumbprint(&self) -> String {
        misim_core::cert::sha1_thumbprint_hex(&self.certificate_der)
    }
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("thumbprint", &self.thumbprint())
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// A credential as the host holds it in memory: MSRP's certificate and key, with the key parsed for
/// signing at most once (when fetched, or on the first token request after a restart) and kept.
/// `Debug` never shows the key.
pub struct HostCredential {
    /// Certificate and key as MSRP issued them.
    pub credential: Credential,
    /// Upper-case hex SHA-1 thumbprint of the certificate.
    pub thumbprint: String,
    /// Base64url SHA-1 thumbprint (`x5t` of the client assertion header).
    pub x5t: String,
    key: OnceLock<misim_core::cert::JwsSigner>,
}

impl HostCredential {
    /// A credential whose key is parsed on first use.
    pub fn new(credential: Credential) -> Self {
        HostCredential {
            thumbprint: credential.thumbprint(),
            x5t: misim_core::cert::x5t(&credential.certificate_der),
            credential,
            key: OnceLock::new(),
        }
    }

    /// A credential whose key is parsed now (CPU work: call from a blocking thread).
    ///
    /// # Errors
    /// [`KeyError`] when the key is not a PKCS#8 RSA or P-256 key.
    pub fn parsed(credential: Credential) -> Result<Self, KeyError> {
        let c = HostCredential::new(credential);
        c.signing_key()?;
        Ok(c)
    }

    /// The signing key, parsed on the first call (CPU work: call from a blocking thread).
    ///
    /// # Errors
    /// [`KeyError`] when the key is not a PKCS#8 RSA or P-256 key.
    pub fn signing_key(&self) -> Result<&misim_core::cert::JwsSigner, KeyError> {
        if let Some(key) = self.key.get() {
            return Ok(key);
        }
        let key = misim_core::cert::JwsSigner::from_pkcs8(&self.credential.private_key_pkcs8_der)
            .map_err(KeyError)?;
        Ok(self.key.get_or_init(|| key))
    }
}

impl std::fmt::Debug for HostCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostCredential")
            .field("thumbprint", &self.thumbprint)
            .field("not_after", &self.credential.not_after)
            .finish_non_exhaustive()
    }
}

/// The one credential of an identity on this host, shared by every VM that has the identity: a
/// user-assigned identity on N VMs is one credential, fetched and renewed once (issue #18). A renewal
/// replaces the current value for all of them at once; readers take an `Arc`, never a copy.
#[derive(Clone, Debug)]
pub struct SharedCredential(Arc<RwLock<Arc<HostCredential>>>);

impl SharedCredential {
    /// A new shared cell holding `credential`.
    pub fn new(credential: HostCredential) -> Self {
        SharedCredential(Arc::new(RwLock::new(Arc::new(credential))))
    }

    /// The current credential.
    pub fn current(&self) -> Arc<HostCredential> {
        Arc::clone(&self.0.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Replaces the credential for every holder (a renewal).
    pub fn replace(&self, credential: HostCredential) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(credential);
    }

    /// How many holders (VM records, in-flight requests, the host's registry) share this cell.
    pub(crate) fn holders(&self) -> usize {
        Arc::strong_count(&self.0)
    }
}

/// An identity this host serves: ARM's description plus the identity's one credential on this host.
#[derive(Clone, Debug)]
pub struct HeldIdentity {
    /// The identity.
    pub identity: IdentityRef,
    /// Its credential, shared with the other VMs of the host that have this identity.
    pub credential: SharedCredential,
}

/// A VM placed on this host, in memory: cloning it copies no key material (credentials are shared).
#[derive(Clone, Debug)]
pub struct VmRecord {
    /// Instance metadata.
    pub vm: VmInfo,
    /// TCP port of the VM's IMDS listener (on `Config::vm_listen_ip`); 0 without an own listener.
    pub port: u16,
    /// Identities served to this VM.
    pub identities: Vec<HeldIdentity>,
    /// The legacy managed-identity VM extension, when installed.
    pub extension: Option<ExtensionState>,
    /// Set when this placement is an App Service web app.
    pub app_service: Option<AppServiceSite>,
}

impl VmRecord {
    /// The stored form: the identities without their credentials (kept once per identity in the
    /// store's `credentials` table).
    pub fn stored(&self) -> StoredVm {
        StoredVm {
            vm: self.vm.clone(),
            port: self.port,
            identities: self
                .identities
                .iter()
                .map(|h| StoredIdentity {
                    identity: h.identity.clone(),
                    credential: None,
                })
                .collect(),
            extension: self.extension.clone(),
            app_service: self.app_service.clone(),
        }
    }
}

/// An identity of a stored VM. Schema 1 kept the credential inline in every VM (`credential`);
/// schema 2 keeps it once per identity in the `credentials` table and writes none here.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StoredIdentity {
    /// The identity.
    pub identity: IdentityRef,
    /// Schema 1 only: the credential, migrated to the `credentials` table on start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<Credential>,
}

/// A VM placed on this host, as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StoredVm {
    /// Instance metadata.
    pub vm: VmInfo,
    /// TCP port of the VM's IMDS listener (on `Config::vm_listen_ip`).
    pub port: u16,
    /// Identities served to this VM.
    pub identities: Vec<StoredIdentity>,
    /// The legacy managed-identity VM extension, when installed (absent in records of older runs).
    #[serde(default)]
    pub extension: Option<ExtensionState>,
    /// Set when this placement is an App Service web app: its listener then speaks the App Service
    /// identity protocol (App Service's `/msi/token`) instead of IMDS.
    #[serde(default)]
    pub app_service: Option<AppServiceSite>,
}

/// A web app (`Microsoft.Web/sites`) as the host runs it: the secret the platform puts in the app's
/// `IDENTITY_HEADER` (<https://learn.microsoft.com/azure/app-service/overview-managed-identity#rest-endpoint-reference>).
/// `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppServiceSite {
    /// The value callers must send as `X-IDENTITY-HEADER`.
    pub identity_header: String,
}

impl std::fmt::Debug for AppServiceSite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppServiceSite").finish_non_exhaustive()
    }
}

/// The legacy managed-identity VM extension (`Microsoft.ManagedIdentity/ManagedIdentityExtensionFor*`)
/// as installed on a VM (<https://learn.microsoft.com/azure/active-directory/managed-identities-azure-resources/howto-migrate-vm-extension>).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtensionState {
    /// `settings.port`: the port the extension serves on the VM's localhost (Azure default 50342).
    pub port: u16,
    /// `forceUpdateTag` of the last run; a different value re-runs the extension.
    pub force_update_tag: String,
    /// Local mode: the loopback port actually bound (two VMs on one loopback cannot both have 50342).
    pub listen_port: u16,
}

/// An identity as the agent API reports it (no key material).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServedIdentity {
    /// The identity.
    pub identity: IdentityRef,
    /// Certificate thumbprint, upper-case hex SHA-1.
    pub thumbprint_sha1_hex: String,
    /// Certificate validity end, epoch seconds.
    pub cert_not_after: i64,
}

/// A placed VM as the agent API reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlacedVm {
    /// Instance metadata.
    pub vm: VmInfo,
    /// Host name.
    pub host: String,
    /// Base URL of the VM's IMDS, e.g. `http://127.0.0.1:40123`.
    pub imds_endpoint: String,
    /// Identities served.
    pub identities: Vec<ServedIdentity>,
    /// The VM extension's endpoint, when installed.
    pub extension: Option<PlacedExtension>,
    /// Web apps: `IDENTITY_ENDPOINT`, e.g. `http://127.0.0.1:40125/msi/token`; empty for VMs.
    pub identity_endpoint: String,
}

/// The installed VM extension as the agent API reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlacedExtension {
    /// Base URL of the extension's token endpoint, e.g. `http://127.0.0.1:40124`.
    pub endpoint: String,
    /// The VM-side directory where the extension keeps the identities' credentials.
    pub credential_path: String,
    /// `settings.port` as configured.
    pub port: u16,
}

impl ServedIdentity {
    /// The reportable view of a held identity.
    pub fn of(held: &HeldIdentity) -> Self {
        let credential = held.credential.current();
        ServedIdentity {
            identity: held.identity.clone(),
            thumbprint_sha1_hex: credential.thumbprint.clone(),
            cert_not_after: credential.credential.not_after,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_round_trips_as_base64_and_debug_hides_the_key() {
        let c = Credential {
            certificate_der: vec![1, 2, 3],
            private_key_pkcs8_der: vec![9, 9],
            not_after: 5,
        };
        let json = serde_json::to_string(&c).unwrap();
        assert!(json.contains("\"AQID\""));
        assert_eq!(serde_json::from_str::<Credential>(&json).unwrap(), c);
        assert!(!format!("{c:?}").contains("private"));
    }
}

//! ARM's domain records: subscriptions, resource groups, VMs with their desired and actual identity
//! state, user-assigned identities and role assignments (what the store keeps, as JSON).

use std::collections::BTreeMap;

use misim_core::ResourceId;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// A subscription and the Azure AD tenant it trusts.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Subscription {
    /// Subscription GUID.
    pub subscription_id: String,
    /// Tenant GUID the subscription trusts (its managed identities live there).
    pub tenant_id: String,
    /// Display name, e.g. `misim default subscription`.
    pub display_name: String,
    /// `Enabled`.
    pub state: String,
    /// True for the subscription used when a request names none.
    pub is_default: bool,
}

impl Subscription {
    /// `/subscriptions/{guid}`.
    pub fn id(&self) -> ResourceId {
        ResourceId::subscription(&self.subscription_id)
    }
}

/// A resource group.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ResourceGroup {
    /// `/subscriptions/{s}/resourceGroups/{name}`.
    pub id: ResourceId,
    /// Location, e.g. `westeurope`.
    pub location: String,
    /// Tags.
    pub tags: BTreeMap<String, String>,
}

/// The ids of a managed identity once MSRP created it (step 2).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct IdentityIds {
    /// Tenant GUID.
    pub tenant_id: String,
    /// Service principal objectId (`principalId`).
    pub principal_id: String,
    /// Service principal appId (`clientId`).
    pub client_id: String,
}

pub use misim_core::identity_kind::IdentityKind;

/// One user-assigned identity as a VM's identity block shows it. The values are a snapshot taken
/// when assigned (refreshed while the UAMI exists), so a deleted UAMI stays as a dangling entry with
/// its old ids, as Azure does
/// (<https://learn.microsoft.com/entra/identity/managed-identities-azure-resources/how-manage-user-assigned-managed-identities>).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct UserAssignedEntry {
    /// UAMI resource id, in the casing it was assigned with.
    pub id: ResourceId,
    /// Principal id, empty until MSRP created the identity.
    pub principal_id: String,
    /// Client id, empty until MSRP created the identity.
    pub client_id: String,
}

/// The managed identities of a resource that has them: a VM, a scale set or a web app
/// (<https://learn.microsoft.com/entra/identity/managed-identities-azure-resources/overview#managed-identity-types>).
/// Its records keep these fields flat (`#[serde(flatten)]`), as they were stored before the block
/// existed, so existing stores decode unchanged.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
pub struct IdentityBlock {
    /// Desired: system-assigned identity enabled.
    pub system_assigned: bool,
    /// Desired: user-assigned identities, keyed by [`ResourceId::key`].
    pub user_assigned: BTreeMap<String, UserAssignedEntry>,
    /// Actual: the system-assigned identity MSRP created (its resource id is the owner's).
    pub system_identity: Option<IdentityIds>,
    /// A disabled system-assigned identity still has to be deleted in MSRP.
    pub system_delete_pending: bool,
}

/// Outcome of the last reconcile of a resource.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
pub enum SyncState {
    /// Desired state changed and was not yet carried to MSRP and the host.
    #[default]
    Pending,
    /// MSRP and the host match the desired state.
    Succeeded,
    /// The last attempt failed with this message; the reconciler retries.
    Failed(String),
}

impl SyncState {
    /// True when the reconciler still has work to do.
    pub fn is_dirty(&self) -> bool {
        !matches!(self, SyncState::Succeeded)
    }
}

/// A virtual machine with its desired and actual identity state.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Vm {
    /// `/subscriptions/{s}/resourceGroups/{g}/providers/Microsoft.Compute/virtualMachines/{name}`.
    pub id: ResourceId,
    /// `vmId` GUID.
    pub vm_id: String,
    /// Location.
    pub location: String,
    /// e.g. `Standard_D2s_v3`.
    pub vm_size: String,
    /// `Linux` or `Windows`.
    pub os_type: String,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Name of the host the VM is placed on.
    pub host: String,
    /// Private IP address given to the VM, e.g. `10.0.0.4`.
    pub private_ip: String,
    /// MAC address, e.g. `000D3A1B2C3D`.
    pub mac_address: String,
    /// Last IMDS endpoint the host reported, empty until placed.
    pub imds_endpoint: String,
    /// True once the host accepted the VM.
    pub placed: bool,
    /// Its managed identities (stored flat: the fields of the record as before the block existed).
    #[serde(flatten)]
    pub identity: IdentityBlock,
    /// The VM is being deleted (hidden from reads; the reconciler finishes the delete).
    pub deleting: bool,
    /// Reconcile state.
    pub sync: SyncState,
    /// For a scale-set instance: the scale set's resource id (its identities apply to the instance).
    #[serde(default)]
    pub scale_set: Option<ResourceId>,
    /// Legacy VM extensions (`Microsoft.Compute/virtualMachines/extensions`) by lower-cased name.
    #[serde(default)]
    pub extensions: BTreeMap<String, VmExtension>,
    /// Last endpoint of the managed-identity VM extension the host reported; empty when none.
    #[serde(default)]
    pub extension_endpoint: String,
    /// Where the VM extension keeps credentials on the VM side, as the host reported it.
    #[serde(default)]
    pub extension_credential_path: String,
}

/// A legacy managed-identity VM extension (publisher `Microsoft.ManagedIdentity`, type
/// `ManagedIdentityExtensionForWindows|Linux`, settings `{"port":50342}`;
/// <https://learn.microsoft.com/azure/active-directory/managed-identities-azure-resources/howto-migrate-vm-extension>).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct VmExtension {
    /// Extension resource name, as given.
    pub name: String,
    /// `Microsoft.ManagedIdentity`.
    pub publisher: String,
    /// `ManagedIdentityExtensionForWindows` or `ManagedIdentityExtensionForLinux`.
    pub extension_type: String,
    /// `typeHandlerVersion`, e.g. `1.0`.
    pub type_handler_version: String,
    /// `settings.port`.
    pub port: u32,
    /// `forceUpdateTag`: a new value re-runs the extension.
    pub force_update_tag: String,
    /// True once the host installed it with these settings.
    pub applied: bool,
}

/// A virtual machine scale set: identities set here apply to every instance; its system-assigned
/// identity is one identity (resource id = the scale set) shared by all instances.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Vmss {
    /// `/subscriptions/{s}/resourceGroups/{g}/providers/Microsoft.Compute/virtualMachineScaleSets/{name}`.
    pub id: ResourceId,
    /// `uniqueId` GUID.
    pub unique_id: String,
    /// Location.
    pub location: String,
    /// Instance size.
    pub vm_size: String,
    /// `Linux` or `Windows`.
    pub os_type: String,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Desired instance count (`sku.capacity`).
    pub capacity: u32,
    /// Next instance id to hand out (instance ids are never reused, as in Azure).
    pub next_instance: u32,
    /// The scale set's managed identities, which every instance serves (stored flat).
    #[serde(flatten)]
    pub identity: IdentityBlock,
    /// The scale set is being deleted.
    pub deleting: bool,
    /// Reconcile state.
    pub sync: SyncState,
}

/// A user-assigned managed identity resource.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Uami {
    /// `/subscriptions/{s}/resourceGroups/{g}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}`.
    pub id: ResourceId,
    /// Location.
    pub location: String,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Tenant of the subscription (where its service principal lives).
    pub tenant_id: String,
    /// The ids MSRP returned, `None` until created.
    pub identity: Option<IdentityIds>,
    /// The UAMI is being deleted (hidden from reads; the reconciler finishes the delete in MSRP).
    pub deleting: bool,
    /// Reconcile state.
    pub sync: SyncState,
}

/// A role assignment: principal × role × scope.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RoleAssignment {
    /// `{scope}/providers/Microsoft.Authorization/roleAssignments/{guid}`.
    pub id: String,
    /// The assignment GUID.
    pub name: String,
    /// Subscription, resource group or resource id.
    pub scope: ResourceId,
    /// Role definition GUID.
    pub role_definition_guid: String,
    /// Assignee object id.
    pub principal_id: String,
    /// `ServicePrincipal`, `User` or `Group`.
    pub principal_type: String,
    /// Simulated time from which it authorizes (creation plus the role-assignment propagation
    /// delay; 0: at once). <https://learn.microsoft.com/en-us/azure/role-based-access-control/troubleshooting#symptom---role-assignment-changes-are-not-being-detected>
    #[serde(default)]
    pub effective_at: i64,
    /// For a deleted assignment whose deletion is still propagating: the simulated time until which
    /// it still authorizes (0: not deleted).
    #[serde(default)]
    pub revoked_until: i64,
}

impl IdentityBlock {
    /// The `identity` block's `type` as ARM shows it: `None`, `SystemAssigned`, `UserAssigned` or
    /// `SystemAssigned, UserAssigned`, following the desired state
    /// (<https://learn.microsoft.com/entra/identity/managed-identities-azure-resources/how-to-configure-managed-identities?pivots=identity-mi-methods-rest>).
    pub fn kind(&self) -> &'static str {
        match (self.system_assigned, !self.user_assigned.is_empty()) {
            (false, false) => "None",
            (true, false) => "SystemAssigned",
            (false, true) => "UserAssigned",
            (true, true) => "SystemAssigned, UserAssigned",
        }
    }

    /// The system-assigned identity's ids while it is enabled and created: what `principalId` and
    /// `tenantId` of the block show (null for `UserAssigned` only,
    /// <https://github.com/Azure/aad-pod-identity/issues/521>).
    pub fn enabled_system_identity(&self) -> Option<&IdentityIds> {
        self.system_identity
            .as_ref()
            .filter(|_| self.system_assigned)
    }

    /// `principalId` of the block: the enabled system-assigned identity's, empty without one.
    pub fn principal_id(&self) -> &str {
        self.enabled_system_identity()
            .map_or("", |i| i.principal_id.as_str())
    }

    /// Whether user-assigned identity `key` ([`ResourceId::key`]) is assigned.
    pub fn has_user_assigned(&self, key: &str) -> bool {
        self.user_assigned.contains_key(key)
    }
}

/// A web app with its desired and actual identity state (what ARM's store keeps).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct WebApp {
    /// `/subscriptions/{s}/resourceGroups/{g}/providers/Microsoft.Web/sites/{name}`.
    pub id: ResourceId,
    /// A GUID identifying the site on its host (the placement's `vm_id`).
    pub site_id: String,
    /// `app` or `functionapp` (ARM's `kind` of a site).
    pub kind: String,
    /// Location.
    pub location: String,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Name of the host the site runs on.
    pub host: String,
    /// The site's secret, `IDENTITY_HEADER` in the app's environment. Kept in ARM's store only and
    /// given to the site's host; shown by the admin gRPC API, never by the REST surface.
    pub identity_header: String,
    /// `IDENTITY_ENDPOINT` as the host last reported it; empty until placed.
    pub identity_endpoint: String,
    /// True once the host accepted the site.
    pub placed: bool,
    /// The site's managed identities (stored flat).
    #[serde(flatten)]
    pub identity: IdentityBlock,
    /// The site is being deleted (hidden from reads; the reconciler finishes the delete).
    pub deleting: bool,
    /// Reconcile state.
    pub sync: SyncState,
}

impl WebApp {
    /// `properties.provisioningState`: `InProgress` until the host runs the site with its identities
    /// (the reconciler retries a failed step), then `Succeeded`.
    pub fn provisioning_state(&self) -> &'static str {
        match &self.sync {
            SyncState::Succeeded => "Succeeded",
            SyncState::Pending | SyncState::Failed(_) => "InProgress",
        }
    }

    /// `properties.defaultHostName`: `{name}.azurewebsites.net` (lower case, as App Service shows it).
    pub fn default_host_name(&self) -> String {
        format!("{}.azurewebsites.net", self.id.name().to_ascii_lowercase())
    }
}

/// A key vault.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Vault {
    /// `/subscriptions/{s}/resourceGroups/{g}/providers/Microsoft.KeyVault/vaults/{name}`.
    pub id: ResourceId,
    /// Location.
    pub location: String,
    /// Tenant of the subscription (Key Vault trusts tokens of this tenant only).
    pub tenant_id: String,
    /// The loopback HTTPS port that serves this vault's data plane at its root, as Key Vault
    /// serves `https://{vault}.vault.azure.net/`; 0 until one is opened (`rest::vault_hosts`).
    #[serde(default)]
    pub port: u16,
}

/// Whether this process serves each vault at its own HTTPS port (set by `rest::vault_hosts::enable`).
static OWN_VAULT_PORTS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes [`Vault::vault_uri`] name each vault's own HTTPS port from now on in this process.
pub(crate) fn serve_own_vault_ports() {
    OWN_VAULT_PORTS.store(true, std::sync::atomic::Ordering::Relaxed);
}

impl Vault {
    /// `properties.vaultUri`: `https://127.0.0.1:{port}/` once the vault has its own HTTPS port
    /// (and this process serves vault ports), else `https://{name}.vault.azure.net/` (what Azure
    /// reports).
    pub fn vault_uri(&self) -> String {
        if self.port != 0 && OWN_VAULT_PORTS.load(std::sync::atomic::Ordering::Relaxed) {
            return format!("https://127.0.0.1:{}/", self.port);
        }
        format!(
            "https://{}.vault.azure.net/",
            self.id.name().to_ascii_lowercase()
        )
    }
}

/// A secret's current version.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Secret {
    /// Vault name.
    pub vault: String,
    /// Secret name.
    pub name: String,
    /// Value.
    pub value: String,
    /// Version (32 hex characters, as Key Vault).
    pub version: String,
    /// Created, epoch seconds.
    pub created: i64,
    /// Updated, epoch seconds.
    pub updated: i64,
    /// `contentType`, empty when not set.
    #[serde(default)]
    pub content_type: String,
    /// Tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// When the secret was soft-deleted, epoch seconds (`None`: live). Only the current-version
    /// record carries it; a deleted secret keeps all its versions until purged or recovered.
    #[serde(default)]
    pub deleted: Option<i64>,
}

impl Secret {
    /// `https://{vault}.vault.azure.net/secrets/{name}/{version}`.
    pub fn id(&self) -> String {
        format!(
            "https://{}.vault.azure.net/secrets/{}/{}",
            self.vault.to_ascii_lowercase(),
            self.name,
            self.version
        )
    }
}

/// Who holds a private IP address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpClaim {
    /// The holder's resource id key (lower-cased VM or instance id).
    pub owner: String,
}

/// Where the next automatic allocation starts looking (a hint; claims decide).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Counter {
    /// Index of the next address to try.
    pub next: u64,
}

/// How many VMs and scale-set instances a host has ([`crate::store::ArmStore::host_load`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostLoad {
    /// VMs plus scale-set instances placed on the host.
    pub placements: u64,
}

/// Resource type of federated identity credentials.
pub const FIC_TYPE: &str =
    "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials";
/// Resource type of AKS clusters (as ARM reports it in `type`).
pub const CLUSTER_TYPE: &str = "Microsoft.ContainerService/ManagedClusters";
/// The Kubernetes version clusters report.
const KUBERNETES_VERSION: &str = "1.30.6";

/// A federated identity credential (child of a user-assigned identity).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FederatedCredential {
    /// `{identity id}/federatedIdentityCredentials/{name}`.
    pub id: ResourceId,
    /// The parent identity.
    pub identity: ResourceId,
    /// Issuer URL (matched exactly by Azure AD).
    pub issuer: String,
    /// Subject (matched exactly by Azure AD).
    pub subject: String,
    /// Audiences (one).
    pub audiences: Vec<String>,
}

impl FederatedCredential {
    /// The credential's name.
    pub fn name(&self) -> &str {
        self.id.name()
    }

    /// The resource as ARM's REST API returns it (API 2023-01-31).
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id.as_str(),
            "name": self.name(),
            "type": FIC_TYPE,
            "properties": {
                "issuer": self.issuer,
                "subject": self.subject,
                "audiences": self.audiences,
            }
        })
    }
}

/// An AKS cluster with its OIDC issuer and signing key.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ManagedCluster {
    /// Resource id.
    pub id: ResourceId,
    /// Location.
    pub location: String,
    /// Tenant of the subscription (part of the issuer URL, as in AKS's).
    pub tenant_id: String,
    /// The cluster's unique id in the issuer URL (a GUID).
    pub uid: String,
    /// `oidcIssuerProfile.issuerURL`, with trailing slash: `{ARM REST}/oidc/{tenant}/{uid}/`, taken
    /// from where ARM's REST surface listens now (stable with `misim up`'s fixed ports).
    pub issuer_url: String,
    /// The service-account signing key, PKCS#8 DER (never leaves ARM's store).
    pub signing_key_pkcs8_der: Vec<u8>,
    /// `kid` of the signing key: base64url SHA-256 of its SubjectPublicKeyInfo, as Kubernetes
    /// computes it.
    pub kid: String,
    /// RSA modulus, base64url.
    pub n: String,
    /// RSA exponent, base64url.
    pub e: String,
}

impl ManagedCluster {
    /// The `dnsPrefix` az derives: `{name}-{group}-{first 6 of subscription}`.
    fn dns_prefix(&self) -> String {
        let sub: String = self.id.subscription_id().chars().take(6).collect();
        format!(
            "{}-{}-{sub}",
            self.id.name(),
            self.id.resource_group_name().unwrap_or_default()
        )
    }

    /// The resource as ARM's REST API returns it (`oidcIssuerProfile.issuerURL`, as in API
    /// 2024-09-01).
    pub fn to_json(&self) -> Value {
        let fqdn = format!(
            "{}-{}.hcp.{}.azmk8s.io",
            self.dns_prefix(),
            &self.uid[..8],
            self.location.to_ascii_lowercase().replace(' ', "")
        );
        json!({
            "id": self.id.as_str(),
            "name": self.id.name(),
            "type": CLUSTER_TYPE,
            "location": self.location,
            "properties": {
                "provisioningState": "Succeeded",
                "powerState": {"code": "Running"},
                "kubernetesVersion": KUBERNETES_VERSION,
                "currentKubernetesVersion": KUBERNETES_VERSION,
                "dnsPrefix": self.dns_prefix(),
                "fqdn": fqdn,
                "oidcIssuerProfile": {"enabled": true, "issuerURL": self.issuer_url},
                "securityProfile": {"workloadIdentity": {"enabled": true}},
            }
        })
    }

    /// The issuer's OpenID discovery document.
    pub fn discovery(&self) -> Value {
        json!({
            "issuer": self.issuer_url,
            "jwks_uri": format!("{}openid/v1/jwks", self.issuer_url),
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
        })
    }

    /// The issuer's key set.
    pub fn jwks(&self) -> Value {
        json!({"keys": [{
            "use": "sig", "kty": "RSA", "kid": self.kid, "alg": "RS256", "n": self.n, "e": self.e,
        }]})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm() -> Vm {
        Vm {
            id: ResourceId::vm("s", "rg", "vm").unwrap(),
            vm_id: "v".into(),
            location: "l".into(),
            vm_size: "Standard_D2s_v3".into(),
            os_type: "Linux".into(),
            tags: BTreeMap::new(),
            host: "h".into(),
            private_ip: "10.0.0.4".into(),
            mac_address: "000D3A000000".into(),
            imds_endpoint: String::new(),
            placed: true,
            identity: IdentityBlock::default(),
            deleting: false,
            sync: SyncState::Succeeded,
            scale_set: None,
            extensions: BTreeMap::new(),
            extension_endpoint: String::new(),
            extension_credential_path: String::new(),
        }
    }

    #[test]
    fn identity_type_follows_desired_state_and_principal_only_with_system() {
        let mut v = vm();
        assert_eq!(v.identity.kind(), "None");
        let u = ResourceId::user_assigned_identity("s", "rg", "u").unwrap();
        v.identity.user_assigned.insert(
            u.key(),
            UserAssignedEntry {
                id: u,
                principal_id: "p".into(),
                client_id: "c".into(),
            },
        );
        assert_eq!(v.identity.kind(), "UserAssigned");
        assert!(v.identity.enabled_system_identity().is_none());
        v.identity.system_assigned = true;
        v.identity.system_identity = Some(IdentityIds {
            tenant_id: "t".into(),
            principal_id: "sp".into(),
            client_id: "sc".into(),
        });
        assert_eq!(v.identity.kind(), "SystemAssigned, UserAssigned");
        let ids = v.identity.enabled_system_identity().unwrap();
        assert_eq!(
            (ids.principal_id.as_str(), ids.tenant_id.as_str()),
            ("sp", "t")
        );
    }

    #[test]
    fn identity_fields_stay_flat_in_stored_records() {
        let mut v = vm();
        v.identity.system_assigned = true;
        let json = serde_json::to_value(&v).unwrap();
        assert_eq!(json["system_assigned"], true, "{json}");
        assert!(json.get("identity").is_none(), "{json}");
        // A record written before the block existed decodes into it.
        let old = r#"{"id":"/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm",
            "vm_id":"v","location":"l","vm_size":"Standard_D2s_v3","os_type":"Linux","tags":{},
            "host":"h","private_ip":"10.0.0.4","mac_address":"000D3A000000","imds_endpoint":"",
            "placed":true,"system_assigned":true,
            "user_assigned":{},"system_identity":{"tenant_id":"t","principal_id":"p","client_id":"c"},
            "system_delete_pending":false,"deleting":false,"sync":"Succeeded"}"#;
        let decoded: Vm = serde_json::from_str(old).unwrap();
        assert_eq!(
            decoded
                .identity
                .enabled_system_identity()
                .map(|i| i.principal_id.as_str()),
            Some("p")
        );
        assert_eq!(serde_json::from_value::<Vm>(json).unwrap(), v);
    }
}

//! The values MSRP exchanges with Azure AD about an identity's service principal: what it creates,
//! what it reads back, and the federated identity credentials it registers. Plain Rust values, free
//! of the gRPC edge ([`crate::grpc::aad`] converts them) and of the service, so both can name them.
//! Graph's shapes: <https://learn.microsoft.com/graph/api/resources/serviceprincipal> and
//! <https://learn.microsoft.com/graph/api/resources/federatedidentitycredential>.

/// A service principal as MSRP needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// `objectId`: the identity's principal ID.
    pub object_id: String,
    /// `appId`: the identity's client ID.
    pub app_id: String,
    /// ARM resource ID the principal belongs to.
    pub msi_resource_id: String,
    /// `(keyId, thumbprint)` of each certificate key credential.
    pub key_credentials: Vec<(String, String)>,
}

impl Principal {
    /// The `keyId` of the key credential whose certificate has `thumbprint_sha1_hex`.
    pub fn key_id_for(&self, thumbprint_sha1_hex: &str) -> Option<String> {
        self.key_credentials
            .iter()
            .find(|(_, t)| t.eq_ignore_ascii_case(thumbprint_sha1_hex))
            .map(|(k, _)| k.clone())
    }
}

/// What [`crate::grpc::aad::AadClient::create_service_principal`] sends.
#[derive(Clone, Debug)]
pub struct NewPrincipal<'a> {
    /// Tenant (GUID).
    pub tenant_id: &'a str,
    /// Display name (Azure: the VM name or the user-assigned identity's name).
    pub display_name: &'a str,
    /// The identity's ARM resource ID.
    pub msi_resource_id: &'a str,
    /// True for user-assigned identities (Graph `alternativeNames` `isExplicit=True`).
    pub is_explicit: bool,
    /// The certificate to register as the first key credential, DER.
    pub certificate_der: &'a [u8],
}

/// One federated identity credential (ARM's `properties.issuer`, `subject`, `audiences`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FederatedCredential {
    /// The child resource's name.
    pub name: String,
    /// Issuer URL, matched exactly.
    pub issuer: String,
    /// Subject, matched exactly.
    pub subject: String,
    /// Accepted audiences.
    pub audiences: Vec<String>,
}

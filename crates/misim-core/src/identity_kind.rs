//! The two kinds of managed identity, defined once for every party
//! (<https://learn.microsoft.com/entra/identity/managed-identities-azure-resources/overview#managed-identity-types>),
//! with the conversions to the `IdentityKind` enums of the MSRP and host-agent protos.

use serde::{Deserialize, Serialize};

/// System- or user-assigned. Stored by name (`"SystemAssigned"`, `"UserAssigned"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum IdentityKind {
    /// Tied to one resource's lifecycle (a VM, scale set or web app); its resource id is that
    /// resource's, and Azure deletes it with the resource.
    SystemAssigned,
    /// A standalone `Microsoft.ManagedIdentity/userAssignedIdentities` resource.
    UserAssigned,
}

impl IdentityKind {
    /// The kind implied by an identity's resource id: `userAssignedIdentities` resources are
    /// user-assigned; anything else (a VM, scale set, web app) carries a system-assigned identity.
    pub fn infer(resource_id: &crate::ResourceId) -> Self {
        if resource_id.is_type("Microsoft.ManagedIdentity/userAssignedIdentities") {
            IdentityKind::UserAssigned
        } else {
            IdentityKind::SystemAssigned
        }
    }
}

impl From<IdentityKind> for misim_proto::msrp::IdentityKind {
    fn from(kind: IdentityKind) -> Self {
        match kind {
            IdentityKind::SystemAssigned => Self::SystemAssigned,
            IdentityKind::UserAssigned => Self::UserAssigned,
        }
    }
}

impl From<IdentityKind> for misim_proto::imds::IdentityKind {
    fn from(kind: IdentityKind) -> Self {
        match kind {
            IdentityKind::SystemAssigned => Self::SystemAssigned,
            IdentityKind::UserAssigned => Self::UserAssigned,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_stored_by_name_and_inferred_from_the_resource_id() {
        let json = serde_json::to_string(&IdentityKind::UserAssigned).unwrap();
        assert_eq!(json, "\"UserAssigned\"");
        let vm = crate::ResourceId::vm("s", "rg", "vm").unwrap();
        let uami = crate::ResourceId::user_assigned_identity("s", "rg", "u").unwrap();
        assert_eq!(IdentityKind::infer(&vm), IdentityKind::SystemAssigned);
        assert_eq!(IdentityKind::infer(&uami), IdentityKind::UserAssigned);
        assert_eq!(
            misim_proto::msrp::IdentityKind::from(IdentityKind::UserAssigned),
            misim_proto::msrp::IdentityKind::UserAssigned
        );
    }
}

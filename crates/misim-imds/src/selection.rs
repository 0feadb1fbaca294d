//! Which of a VM's identities a token request gets: Azure's selection rules
//! (<https://learn.microsoft.com/entra/identity/managed-identities-azure-resources/managed-identities-faq>,
//! <https://learn.microsoft.com/entra/identity/managed-identities-azure-resources/how-to-use-vm-token>); the selectors and their echo come from the IMDS REST spec
//! (<https://github.com/Azure/azure-rest-api-specs/blob/ea83a2a3e90ca3f0420e9d0ef55a811523541aba/specification/imds/data-plane/InstanceMetadataService/stable/2023-07-01/imds.json>).

use misim_core::ResourceId;

use crate::error::{ImdsError, Result};
use crate::model::{HeldIdentity, IdentityKind};

/// The identity selector of a token request (at most one; IMDS REST spec).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    /// No selector: system-assigned if present, else the only user-assigned one.
    Default,
    /// `client_id=`: the identity's application id.
    ClientId(String),
    /// `object_id=`: the identity's principal (object) id.
    ObjectId(String),
    /// `msi_res_id=` / `mi_res_id=`: the identity's ARM resource ID.
    ResourceId(String),
}

impl Selector {
    /// The selector as the success body echoes it (`object_id` / `msi_res_id`; IMDS REST spec 2023-07-01).
    pub fn echo(&self) -> Option<(&'static str, &str)> {
        match self {
            Selector::ObjectId(v) => Some(("object_id", v)),
            Selector::ResourceId(v) => Some(("msi_res_id", v)),
            _ => None,
        }
    }
}

/// Picks the identity for `selector` among `identities` (Azure's rules, see the module doc):
///
/// | VM identities | no selector | matching selector | unknown selector |
/// |---|---|---|---|
/// | none | Identity not found | – | Identity not found |
/// | system only | system | system (by its own ids) | Identity not found |
/// | 1 user-assigned | that one | that one | Identity not found |
/// | ≥2 user-assigned, no system | Multiple user assigned identities exist | that one | Identity not found |
/// | system + user-assigned | system | that one | Identity not found |
///
/// Ids compare case-insensitively (GUIDs and ARM IDs are case-insensitive in Azure).
///
/// # Errors
/// [`ImdsError::IdentityNotFound`] or [`ImdsError::MultipleUserAssigned`] as in the table.
pub fn select<'a>(identities: &'a [HeldIdentity], selector: &Selector) -> Result<&'a HeldIdentity> {
    let found = match selector {
        Selector::Default => return select_default(identities),
        Selector::ClientId(c) => identities
            .iter()
            .find(|h| h.identity.client_id.eq_ignore_ascii_case(c)),
        Selector::ObjectId(o) => identities
            .iter()
            .find(|h| h.identity.principal_id.eq_ignore_ascii_case(o)),
        Selector::ResourceId(r) => {
            let wanted = ResourceId::parse(r).map_err(|_| ImdsError::IdentityNotFound)?;
            identities.iter().find(|h| h.identity.msi_res_id == wanted)
        }
    };
    found.ok_or(ImdsError::IdentityNotFound)
}

fn select_default(identities: &[HeldIdentity]) -> Result<&HeldIdentity> {
    if let Some(system) = identities
        .iter()
        .find(|h| h.identity.kind == IdentityKind::SystemAssigned)
    {
        return Ok(system);
    }
    let mut user = identities
        .iter()
        .filter(|h| h.identity.kind == IdentityKind::UserAssigned);
    match (user.next(), user.next()) {
        (None, _) => Err(ImdsError::IdentityNotFound),
        (Some(only), None) => Ok(only),
        (Some(_), Some(_)) => Err(ImdsError::MultipleUserAssigned),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUB: &str = "00000000-0000-0000-0000-000000000001";

    fn held(kind: IdentityKind, name: &str) -> HeldIdentity {
        let msi_res_id = match kind {
            IdentityKind::SystemAssigned => ResourceId::vm(SUB, "rg", name).unwrap(),
            IdentityKind::UserAssigned => {
                ResourceId::user_assigned_identity(SUB, "rg", name).unwrap()
            }
        };
        crate::test_support::held(msi_res_id, kind, name)
    }

    fn name_of(r: Result<&HeldIdentity>) -> String {
        match r {
            Ok(h) => h.identity.client_id.clone(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn no_identities_means_not_found_with_or_without_selector() {
        assert!(matches!(
            select(&[], &Selector::Default),
            Err(ImdsError::IdentityNotFound)
        ));
        assert!(matches!(
            select(&[], &Selector::ClientId("x".into())),
            Err(ImdsError::IdentityNotFound)
        ));
    }

    #[test]
    fn system_wins_without_selector_and_uami_with_selector() {
        let ids = [
            held(IdentityKind::UserAssigned, "u1"),
            held(IdentityKind::SystemAssigned, "vm"),
        ];
        assert_eq!(name_of(select(&ids, &Selector::Default)), "client-vm");
        assert_eq!(
            name_of(select(&ids, &Selector::ClientId("CLIENT-U1".into()))),
            "client-u1"
        );
        assert_eq!(
            name_of(select(&ids, &Selector::ObjectId("object-u1".into()))),
            "client-u1"
        );
        let rid = format!("/subscriptions/{SUB}/resourcegroups/RG/providers/microsoft.managedidentity/userassignedidentities/u1");
        assert_eq!(
            name_of(select(&ids, &Selector::ResourceId(rid))),
            "client-u1"
        );
        assert!(matches!(
            select(&ids, &Selector::ClientId("nope".into())),
            Err(ImdsError::IdentityNotFound)
        ));
        assert!(matches!(
            select(&ids, &Selector::ResourceId("garbage".into())),
            Err(ImdsError::IdentityNotFound)
        ));
    }

    #[test]
    fn single_uami_is_the_default_and_two_need_a_selector() {
        let one = [held(IdentityKind::UserAssigned, "u1")];
        assert_eq!(name_of(select(&one, &Selector::Default)), "client-u1");
        let two = [
            held(IdentityKind::UserAssigned, "u1"),
            held(IdentityKind::UserAssigned, "u2"),
        ];
        assert!(matches!(
            select(&two, &Selector::Default),
            Err(ImdsError::MultipleUserAssigned)
        ));
        assert_eq!(
            name_of(select(&two, &Selector::ClientId("client-u2".into()))),
            "client-u2"
        );
    }
}

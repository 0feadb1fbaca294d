//! The `identity` block of a VM or scale set PUT/PATCH as ARM interprets it
//! (<https://learn.microsoft.com/entra/identity/managed-identities-azure-resources/how-to-configure-managed-identities?pivots=identity-mi-methods-rest>): which `type` values exist, how `userAssignedIdentities` entries add (`{}`) and remove (`null`), the old
//! `identityIds` array, and the 400s for contradictory requests. Pure functions; no store access.

use std::collections::BTreeMap;

use misim_core::ResourceId;

use crate::error::{ArmError, Result};

/// The most user-assigned identities one VM or scale set can have (Azure: 1000 with IMDS; the
/// legacy VM extension serves at most 32,
/// <https://learn.microsoft.com/azure/active-directory/managed-identities-azure-resources/howto-migrate-vm-extension>).
pub const MAX_USER_ASSIGNED: usize = 1000;

/// The most user-assigned identities one request may add. Azure answers 400 `BadRequest` "User
/// Assigned Identities Number '151' Assign exceed limit '150' in one request."
/// (<https://github.com/Azure/bicep/issues/16559>,
/// <https://github.com/Azure/aad-pod-identity/issues/813>).
pub const MAX_USER_ASSIGNED_PER_REQUEST: usize = 150;

/// Parsed `identity.type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdentityType {
    /// The type includes `SystemAssigned`.
    pub system: bool,
    /// The type includes `UserAssigned`.
    pub user: bool,
}

impl IdentityType {
    /// Parses `None`, `SystemAssigned`, `UserAssigned`, `SystemAssigned, UserAssigned` (also without
    /// the space, as some VMSS doc samples send it; case-insensitive).
    ///
    /// # Errors
    /// [`ArmError::InvalidArgument`] for anything else.
    pub fn parse(raw: &str) -> Result<Self> {
        let norm: String = raw.chars().filter(|c| !c.is_whitespace()).collect();
        let t = match norm.to_ascii_lowercase().as_str() {
            "none" => (false, false),
            "systemassigned" => (true, false),
            "userassigned" => (false, true),
            "systemassigned,userassigned" | "userassigned,systemassigned" => (true, true),
            _ => {
                return Err(ArmError::InvalidArgument(format!(
                    "The value '{raw}' of parameter 'identity.type' is invalid. Allowed values are 'None', 'SystemAssigned', 'UserAssigned' and 'SystemAssigned, UserAssigned'."
                )))
            }
        };
        Ok(IdentityType {
            system: t.0,
            user: t.1,
        })
    }
}

/// An `identity` block as a caller sent it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IdentityRequest {
    /// `type`; required whenever the block is present.
    pub kind: Option<String>,
    /// `userAssignedIdentities`: resource id → `true` for `{}`, `false` for `null` (remove).
    pub user_assigned: Option<Vec<(String, bool)>>,
    /// `identityIds` (api-version ≤ 2017-12-01): the full list of user-assigned identities.
    pub identity_ids: Option<Vec<String>>,
}

/// PUT replaces the user-assigned set with the one given; PATCH merges into the current set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Full replacement.
    Put,
    /// Merge (`{}` adds, `null` removes, others stay).
    Patch,
}

/// The desired identity state after a request.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// System-assigned identity enabled.
    pub system_assigned: bool,
    /// Final user-assigned set by [`ResourceId::key`], with the id in the casing given.
    pub user_assigned: BTreeMap<String, ResourceId>,
    /// Ids newly added by this request (must exist and be assignable).
    pub added: Vec<ResourceId>,
}

fn invalid(message: impl Into<String>) -> ArmError {
    ArmError::InvalidArgument(message.into())
}

/// Parses a user-assigned identity resource id.
///
/// # Errors
/// [`ArmError::InvalidArgument`] when it is not `…/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}`.
pub fn parse_uami_id(raw: &str) -> Result<ResourceId> {
    let id = ResourceId::parse(raw)?;
    if !id.is_type("Microsoft.ManagedIdentity/userAssignedIdentities")
        || id.resource_group_name().is_none()
    {
        return Err(invalid(format!(
            "'{raw}' is not a user-assigned identity resource id (…/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{{name}})"
        )));
    }
    Ok(id)
}

/// Computes the desired state from the `current` user-assigned set (keys → ids) and a request,
/// enforcing Azure's rules: `type` is required; `identityIds`/`userAssignedIdentities` must not come
/// with `SystemAssigned` or `None`; a `UserAssigned` type needs at least one identity; at most
/// [`MAX_USER_ASSIGNED_PER_REQUEST`] added per request and [`MAX_USER_ASSIGNED`] in total.
///
/// # Errors
/// [`ArmError::InvalidArgument`] (ARM `InvalidParameter`, 400), or [`ArmError::BadRequest`] (400)
/// for the per-request limit.
pub fn plan(
    current: &BTreeMap<String, ResourceId>,
    req: &IdentityRequest,
    mode: Mode,
) -> Result<Plan> {
    let raw_type = req.kind.as_deref().ok_or_else(|| {
        invalid("The identity type is required. Specify 'identity.type' with one of 'None', 'SystemAssigned', 'UserAssigned' or 'SystemAssigned, UserAssigned'.")
    })?;
    let t = IdentityType::parse(raw_type)?;
    if req.identity_ids.is_some() && req.user_assigned.is_some() {
        return Err(invalid(
            "ResourceIdentity identityIds and userAssignedIdentities cannot both be provided.",
        ));
    }
    let has_ids = req.identity_ids.as_ref().is_some_and(|v| !v.is_empty());
    let adds_uami = req
        .user_assigned
        .as_ref()
        .is_some_and(|m| m.iter().any(|(_, add)| *add));
    if !t.user {
        let name = if t.system { "SystemAssigned" } else { "None" };
        if has_ids {
            return Err(invalid(format!(
                "ResourceIdentity identityIds should not be provided if the type is \"{name}\"."
            )));
        }
        if adds_uami {
            return Err(invalid(format!(
                "ResourceIdentity userAssignedIdentities should not be provided if the type is \"{name}\"."
            )));
        }
        return Ok(Plan {
            system_assigned: t.system,
            user_assigned: BTreeMap::new(),
            added: Vec::new(),
        });
    }
    let mut set = match (mode, &req.identity_ids) {
        (_, Some(_)) | (Mode::Put, None) => BTreeMap::new(),
        (Mode::Patch, None) => current.clone(),
    };
    let mut added = Vec::new();
    let entries: Vec<(String, bool)> = match (&req.identity_ids, &req.user_assigned) {
        (Some(ids), _) => ids.iter().map(|i| (i.clone(), true)).collect(),
        (None, Some(m)) => m.clone(),
        (None, None) => Vec::new(),
    };
    for (raw, add) in entries {
        let id = parse_uami_id(&raw)?;
        if add {
            if !current.contains_key(&id.key()) && !added.contains(&id) {
                added.push(id.clone());
            }
            set.insert(id.key(), id);
        } else {
            set.remove(&id.key());
        }
    }
    if added.len() > MAX_USER_ASSIGNED_PER_REQUEST {
        return Err(ArmError::BadRequest(format!(
            "User Assigned Identities Number '{}' Assign exceed limit '{MAX_USER_ASSIGNED_PER_REQUEST}' in one request.",
            added.len()
        )));
    }
    if set.len() > MAX_USER_ASSIGNED {
        return Err(invalid(format!(
            "The number of user-assigned identities ({}) exceeds the limit of {MAX_USER_ASSIGNED} per virtual machine or virtual machine scale set.",
            set.len()
        )));
    }
    if set.is_empty() {
        return Err(invalid(format!(
            "ResourceIdentity userAssignedIdentities must be provided if the type is \"{}\".",
            if t.system {
                "SystemAssigned, UserAssigned"
            } else {
                "UserAssigned"
            }
        )));
    }
    Ok(Plan {
        system_assigned: t.system,
        user_assigned: set,
        added,
    })
}

/// The request `az vm identity assign` makes: keep what is there, add `system` and/or `user`.
pub fn assign_request(
    has_system: bool,
    current: &BTreeMap<String, ResourceId>,
    system: bool,
    user: &[String],
) -> IdentityRequest {
    let sys = has_system || system;
    let any_user = !current.is_empty() || !user.is_empty();
    IdentityRequest {
        kind: Some(type_name(sys, any_user).into()),
        user_assigned: Some(user.iter().map(|u| (u.clone(), true)).collect()),
        identity_ids: None,
    }
    .without_empty_user(any_user)
}

/// The request `az vm identity remove` makes: drop `system` and/or `user`, keep the rest.
///
/// # Errors
/// [`ArmError::InvalidArgument`] for a malformed id.
pub fn remove_request(
    has_system: bool,
    current: &BTreeMap<String, ResourceId>,
    system: bool,
    user: &[String],
) -> Result<IdentityRequest> {
    let mut remaining = current.clone();
    for u in user {
        remaining.remove(&parse_uami_id(u)?.key());
    }
    let sys = has_system && !system;
    let any_user = !remaining.is_empty();
    Ok(IdentityRequest {
        kind: Some(type_name(sys, any_user).into()),
        user_assigned: Some(user.iter().map(|u| (u.clone(), false)).collect()),
        identity_ids: None,
    }
    .without_empty_user(any_user))
}

impl IdentityRequest {
    fn without_empty_user(mut self, any_user: bool) -> Self {
        if !any_user {
            self.user_assigned = None;
        }
        self
    }
}

/// The canonical type string.
pub fn type_name(system: bool, user: bool) -> &'static str {
    match (system, user) {
        (false, false) => "None",
        (true, false) => "SystemAssigned",
        (false, true) => "UserAssigned",
        (true, true) => "SystemAssigned, UserAssigned",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uami(n: &str) -> String {
        format!("/subscriptions/s/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{n}")
    }

    fn set(names: &[&str]) -> BTreeMap<String, ResourceId> {
        names
            .iter()
            .map(|n| {
                let id = ResourceId::parse(&uami(n)).unwrap();
                (id.key(), id)
            })
            .collect()
    }

    fn req(kind: &str, ua: &[(&str, bool)]) -> IdentityRequest {
        IdentityRequest {
            kind: Some(kind.into()),
            user_assigned: Some(ua.iter().map(|(n, a)| (uami(n), *a)).collect()),
            identity_ids: None,
        }
    }

    #[test]
    fn type_accepts_azure_spellings_and_rejects_others() {
        for ok in [
            "None",
            "SystemAssigned",
            "UserAssigned",
            "SystemAssigned, UserAssigned",
            "SystemAssigned,UserAssigned",
            "systemassigned",
        ] {
            assert!(IdentityType::parse(ok).is_ok(), "{ok}");
        }
        assert!(IdentityType::parse("Both").is_err());
    }

    #[test]
    fn patch_adds_with_empty_object_and_removes_with_null() {
        let cur = set(&["a", "b"]);
        let p = plan(
            &cur,
            &req("UserAssigned", &[("c", true), ("a", false)]),
            Mode::Patch,
        )
        .unwrap();
        let keys: Vec<_> = p
            .user_assigned
            .values()
            .map(|i| i.name().to_string())
            .collect();
        assert_eq!(keys, ["b", "c"]);
        assert_eq!(p.added.len(), 1);
        assert!(!p.system_assigned);
        let put = plan(&cur, &req("UserAssigned", &[("c", true)]), Mode::Put).unwrap();
        assert_eq!(put.user_assigned.len(), 1);
    }

    #[test]
    fn none_and_system_assigned_clear_user_assigned_and_reject_ids() {
        let cur = set(&["a"]);
        let none = plan(&cur, &req("None", &[]), Mode::Patch).unwrap();
        assert!(!none.system_assigned && none.user_assigned.is_empty());
        let sys = plan(&cur, &req("SystemAssigned", &[]), Mode::Patch).unwrap();
        assert!(sys.system_assigned && sys.user_assigned.is_empty());
        let e = plan(&cur, &req("SystemAssigned", &[("b", true)]), Mode::Patch).unwrap_err();
        assert_eq!(e.code(), "InvalidParameter");
        let ids = IdentityRequest {
            kind: Some("SystemAssigned".into()),
            user_assigned: None,
            identity_ids: Some(vec![uami("a")]),
        };
        assert_eq!(
            plan(&cur, &ids, Mode::Put).unwrap_err().to_string(),
            "ResourceIdentity identityIds should not be provided if the type is \"SystemAssigned\"."
        );
    }

    #[test]
    fn user_assigned_type_needs_an_identity_and_limits_apply() {
        let e = plan(
            &set(&["a"]),
            &req("UserAssigned", &[("a", false)]),
            Mode::Patch,
        )
        .unwrap_err();
        assert!(e.to_string().contains("must be provided"), "{e}");
        let many: Vec<(String, bool)> = (0..151).map(|i| (uami(&format!("u{i}")), true)).collect();
        let r = IdentityRequest {
            kind: Some("UserAssigned".into()),
            user_assigned: Some(many),
            identity_ids: None,
        };
        let e = plan(&BTreeMap::new(), &r, Mode::Patch).unwrap_err();
        assert_eq!(e.code(), "BadRequest");
        let full = set(&(0..1000)
            .map(|i| format!("x{i}"))
            .collect::<Vec<_>>()
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>());
        let e = plan(
            &full,
            &req("UserAssigned", &[("one-more", true)]),
            Mode::Patch,
        )
        .unwrap_err();
        assert!(e.to_string().contains("exceeds the limit of 1000"), "{e}");
    }

    #[test]
    fn az_assign_and_remove_keep_the_rest() {
        let cur = set(&["a"]);
        let r = assign_request(false, &cur, true, &[]);
        let p = plan(&cur, &r, Mode::Patch).unwrap();
        assert!(p.system_assigned && p.user_assigned.len() == 1);
        let r = remove_request(true, &cur, false, &[uami("a")]).unwrap();
        let p = plan(&cur, &r, Mode::Patch).unwrap();
        assert!(p.system_assigned && p.user_assigned.is_empty());
    }
}

//! ARM resource IDs: the one place that knows ARM's resource-ID grammar.
//!
//! `/subscriptions/{sub}[/resourceGroups/{rg}[/providers/{Namespace}/{type}/{name}[/{type}/{name}]…]]`.
//! ARM compares resource IDs case-insensitively (Microsoft's samples write `resourcegroups`,
//! <https://learn.microsoft.com/entra/identity/managed-identities-azure-resources/how-to-configure-managed-identities?pivots=identity-mi-methods-rest>), so
//! equality, hashing and [`ResourceId::key`] ignore case while [`ResourceId::as_str`] keeps the casing
//! the resource was created with.

use std::fmt;
use std::hash::{Hash, Hasher};

/// Why a string is not an ARM resource ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The string does not follow the resource-ID grammar; the message says which part.
    #[error("invalid resource id '{id}': {reason}")]
    Invalid {
        /// The string given.
        id: String,
        /// Which part of the grammar it breaks.
        reason: &'static str,
    },
}

/// A parsed ARM resource ID (subscription, resource group, or a provider resource).
#[derive(Clone, Debug)]
pub struct ResourceId {
    raw: String,
    subscription_id: String,
    resource_group: Option<String>,
    namespace: Option<String>,
    /// `(type, name)` pairs after the namespace, e.g. `[("virtualMachines", "vm1")]`.
    types: Vec<(String, String)>,
}

impl ResourceId {
    /// Parses a resource ID. Accepts any casing of the fixed words (`resourcegroups`, `Providers`).
    ///
    /// # Errors
    /// [`IdError::Invalid`] when the string does not start with `/subscriptions/{id}`, has an empty
    /// segment, or a provider part without a namespace or with an unpaired type/name.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let bad = |reason| IdError::Invalid {
            id: s.to_string(),
            reason,
        };
        let trimmed = s.trim_end_matches('/');
        let mut parts = trimmed.split('/');
        if parts.next() != Some("") {
            return Err(bad("must start with '/'"));
        }
        let parts: Vec<&str> = parts.collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(bad("empty segment"));
        }
        if parts.len() < 2 || !parts[0].eq_ignore_ascii_case("subscriptions") {
            return Err(bad("must start with /subscriptions/{subscriptionId}"));
        }
        let mut id = ResourceId {
            raw: trimmed.to_string(),
            subscription_id: parts[1].to_string(),
            resource_group: None,
            namespace: None,
            types: Vec::new(),
        };
        let mut rest = &parts[2..];
        if rest.len() >= 2 && rest[0].eq_ignore_ascii_case("resourceGroups") {
            id.resource_group = Some(rest[1].to_string());
            rest = &rest[2..];
        } else if rest.len() == 1 {
            return Err(bad("a segment is missing its name"));
        }
        if !rest.is_empty() {
            if !rest[0].eq_ignore_ascii_case("providers") || rest.len() < 2 {
                return Err(bad("expected /providers/{namespace}/{type}/{name}"));
            }
            id.namespace = Some(rest[1].to_string());
            let pairs = &rest[2..];
            if pairs.is_empty() || !pairs.len().is_multiple_of(2) {
                return Err(bad("provider resource types and names must come in pairs"));
            }
            id.types = pairs
                .chunks(2)
                .map(|c| (c[0].to_string(), c[1].to_string()))
                .collect();
        }
        Ok(id)
    }

    /// `/subscriptions/{subscription_id}`.
    ///
    /// # Panics
    /// When `subscription_id` is empty or contains `/`; callers pass GUIDs they generated or parsed.
    pub fn subscription(subscription_id: &str) -> Self {
        Self::parse(&format!("/subscriptions/{subscription_id}")).expect("valid subscription id")
    }

    /// `/subscriptions/{s}/resourceGroups/{rg}`.
    ///
    /// # Panics
    /// When a part is empty or contains `/`; callers pass validated names.
    pub fn resource_group(subscription_id: &str, resource_group: &str) -> Self {
        Self::parse(&format!(
            "/subscriptions/{subscription_id}/resourceGroups/{resource_group}"
        ))
        .expect("valid resource group id")
    }

    /// `/subscriptions/{s}/resourceGroups/{rg}/providers/{namespace}/{type}/{name}`.
    ///
    /// # Errors
    /// [`IdError::Invalid`] when a part is empty or contains `/`.
    pub fn resource(
        subscription_id: &str,
        resource_group: &str,
        namespace: &str,
        resource_type: &str,
        name: &str,
    ) -> Result<Self, IdError> {
        Self::parse(&format!(
            "/subscriptions/{subscription_id}/resourceGroups/{resource_group}/providers/{namespace}/{resource_type}/{name}"
        ))
    }

    /// A virtual machine ID (`Microsoft.Compute/virtualMachines`).
    pub fn vm(subscription_id: &str, resource_group: &str, name: &str) -> Result<Self, IdError> {
        Self::resource(
            subscription_id,
            resource_group,
            "Microsoft.Compute",
            "virtualMachines",
            name,
        )
    }

    /// A user-assigned identity ID (`Microsoft.ManagedIdentity/userAssignedIdentities`).
    pub fn user_assigned_identity(
        subscription_id: &str,
        resource_group: &str,
        name: &str,
    ) -> Result<Self, IdError> {
        Self::resource(
            subscription_id,
            resource_group,
            "Microsoft.ManagedIdentity",
            "userAssignedIdentities",
            name,
        )
    }

    /// The ID as created (original casing, no trailing slash).
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// Lower-cased ID: the store key and the basis of equality.
    pub fn key(&self) -> String {
        self.raw.to_ascii_lowercase()
    }

    /// The subscription GUID.
    pub fn subscription_id(&self) -> &str {
        &self.subscription_id
    }

    /// The resource group name, if the ID is at or below a resource group.
    pub fn resource_group_name(&self) -> Option<&str> {
        self.resource_group.as_deref()
    }

    /// Full resource type, e.g. `Microsoft.Compute/virtualMachines`; `None` for subscriptions and groups.
    pub fn resource_type(&self) -> Option<String> {
        let ns = self.namespace.as_ref()?;
        let types: Vec<&str> = self.types.iter().map(|(t, _)| t.as_str()).collect();
        Some(format!("{ns}/{}", types.join("/")))
    }

    /// The last name segment (resource name, group name, or subscription GUID).
    pub fn name(&self) -> &str {
        if let Some((_, n)) = self.types.last() {
            n
        } else if let Some(rg) = &self.resource_group {
            rg
        } else {
            &self.subscription_id
        }
    }

    /// True when the resource type equals `resource_type`, ignoring case.
    pub fn is_type(&self, resource_type: &str) -> bool {
        self.resource_type()
            .is_some_and(|t| t.eq_ignore_ascii_case(resource_type))
    }

    /// True when `self` is `scope` or lies below it (RBAC inheritance: subscription → group → resource).
    pub fn is_within(&self, scope: &ResourceId) -> bool {
        let me = self.key();
        let s = scope.key();
        me == s || me.starts_with(&format!("{s}/"))
    }
}

impl PartialEq for ResourceId {
    fn eq(&self, other: &Self) -> bool {
        self.raw.eq_ignore_ascii_case(&other.raw)
    }
}
impl Eq for ResourceId {}

impl Hash for ResourceId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key().hash(state)
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl std::str::FromStr for ResourceId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl serde::Serialize for ResourceId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.raw)
    }
}

impl<'de> serde::Deserialize<'de> for ResourceId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ResourceId::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUB: &str = "00000000-0000-0000-0000-000000000001";

    #[test]
    fn parses_vm_id_parts() {
        let id = ResourceId::parse(&format!(
            "/subscriptions/{SUB}/resourcegroups/rg1/providers/Microsoft.Compute/virtualMachines/vm1"
        ))
        .unwrap();
        assert_eq!(id.subscription_id(), SUB);
        assert_eq!(id.resource_group_name(), Some("rg1"));
        assert_eq!(
            id.resource_type().as_deref(),
            Some("Microsoft.Compute/virtualMachines")
        );
        assert_eq!(id.name(), "vm1");
        assert!(id.is_type("microsoft.compute/VIRTUALMACHINES"));
    }

    #[test]
    fn equality_ignores_case_but_display_keeps_it() {
        let a = ResourceId::vm(SUB, "RG1", "VM1").unwrap();
        let b = ResourceId::parse(&format!(
            "/subscriptions/{SUB}/resourcegroups/rg1/providers/microsoft.compute/virtualmachines/vm1"
        ))
        .unwrap();
        assert_eq!(a, b);
        assert_eq!(a.key(), b.key());
        assert!(a.as_str().contains("/resourceGroups/RG1/"));
    }

    #[test]
    fn scope_inheritance() {
        let sub = ResourceId::subscription(SUB);
        let rg = ResourceId::resource_group(SUB, "rg1");
        let rg10 = ResourceId::resource_group(SUB, "rg10");
        let vm = ResourceId::vm(SUB, "rg1", "vm1").unwrap();
        assert!(vm.is_within(&sub));
        assert!(vm.is_within(&rg));
        assert!(vm.is_within(&vm));
        assert!(!vm.is_within(&rg10));
        assert!(!rg.is_within(&vm));
    }

    #[test]
    fn rejects_malformed_ids() {
        for bad in [
            "",
            "subscriptions/x",
            "/subscriptions",
            "/subscriptions/x/resourceGroups",
            "/subscriptions/x/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines",
            "/subscriptions/x//resourceGroups/rg",
            "/tenants/x",
        ] {
            assert!(
                ResourceId::parse(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }
}

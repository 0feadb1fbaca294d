//! ARM resource IDs and request paths: the one place that knows ARM's resource-ID grammar.
//!
//! `/subscriptions/{sub}[/resourceGroups/{rg}][/providers/{Namespace}/{type}/{name}[/{type}/{name}]…]…`;
//! a later `/providers/{Namespace}/…` section is an extension resource of what precedes it (role
//! assignments under any scope). [`ArmPath`] splits a request path by this grammar (a path may end
//! in a collection, a type without a name); [`ResourceId`] is a path that names one resource.
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

/// One `/providers/{Namespace}/…` section of an [`ArmPath`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Section<'a> {
    /// Index in [`ArmPath::segments`] of this section's `providers` segment: the segments before
    /// it are the scope the section's resource lies in.
    pub at: usize,
    /// The resource provider namespace, e.g. `Microsoft.Compute`, as written.
    pub namespace: &'a str,
    /// The segments after the namespace: `{type}/{name}` pairs, then a type alone for a collection.
    pub rest: Vec<&'a str>,
}

impl<'a> Section<'a> {
    /// The `(type, name)` pairs.
    pub fn pairs(&self) -> Vec<(&'a str, &'a str)> {
        self.rest.chunks_exact(2).map(|c| (c[0], c[1])).collect()
    }

    /// The last type when it has no name (the path names a collection).
    pub fn collection(&self) -> Option<&'a str> {
        (self.rest.len() % 2 == 1).then(|| self.rest[self.rest.len() - 1])
    }
}

/// An ARM request path split by the resource-ID grammar: subscription, resource group, provider
/// sections, and what follows a subscription or group that is not a provider section (`locations`,
/// `resources`, the `resourceGroups` list, `operationresults/{id}`). Fixed words match in any
/// case; every part keeps the path's casing. Empty segments (`//`, a trailing `/`) are skipped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArmPath<'a> {
    /// The non-empty segments of the path.
    pub segments: Vec<&'a str>,
    /// The subscription ID segment.
    pub subscription: &'a str,
    /// The resource group, for a path at or below `/resourceGroups/{name}`.
    pub resource_group: Option<&'a str>,
    /// The `/providers/…` sections, outermost first.
    pub sections: Vec<Section<'a>>,
    /// The segments after the subscription or group when no provider section follows it.
    pub tail: Vec<&'a str>,
}

impl<'a> ArmPath<'a> {
    /// Splits `path`; `None` when it does not start with `/subscriptions/{id}` or a `providers`
    /// segment has no namespace after it.
    pub fn parse(path: &'a str) -> Option<Self> {
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let word = |i: usize, w: &str| segments.get(i).is_some_and(|s| s.eq_ignore_ascii_case(w));
        if !word(0, "subscriptions") || segments.len() < 2 {
            return None;
        }
        let mut p = ArmPath {
            subscription: segments[1],
            resource_group: None,
            sections: Vec::new(),
            tail: Vec::new(),
            segments: Vec::new(),
        };
        let mut i = 2;
        if word(i, "resourceGroups") && segments.len() > i + 1 {
            p.resource_group = Some(segments[i + 1]);
            i += 2;
        }
        if i < segments.len() && !word(i, "providers") {
            p.tail = segments[i..].to_vec();
            p.segments = segments;
            return Some(p);
        }
        while i < segments.len() {
            // `providers` at `i`: a namespace, then pairs until the next `providers` in a type's place.
            let namespace = *segments.get(i + 1)?;
            let mut j = i + 2;
            while j < segments.len() && !word(j, "providers") {
                j += 2;
            }
            let end = j.min(segments.len());
            p.sections.push(Section {
                at: i,
                namespace,
                rest: segments[i + 2..end].to_vec(),
            });
            i = end;
        }
        p.segments = segments;
        Some(p)
    }

    /// The path of the scope section `s` lies in (`/subscriptions/…` up to its `providers`), as written.
    pub fn scope_of(&self, s: &Section<'_>) -> String {
        format!("/{}", self.segments[..s.at].join("/"))
    }

    /// This path without its last provider section (the scope of an extension resource).
    pub fn without_last_section(&self) -> Self {
        let mut p = self.clone();
        if let Some(last) = p.sections.pop() {
            p.segments.truncate(last.at);
        }
        p
    }
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
        if parts.any(|p| p.is_empty()) {
            return Err(bad("empty segment"));
        }
        let path = ArmPath::parse(trimmed)
            .ok_or(bad("must start with /subscriptions/{subscriptionId}"))?;
        if !path.tail.is_empty() {
            return Err(if path.tail.len() == 1 && path.resource_group.is_none() {
                bad("a segment is missing its name")
            } else {
                bad("expected /providers/{namespace}/{type}/{name}")
            });
        }
        let mut id = ResourceId {
            raw: trimmed.to_string(),
            subscription_id: path.subscription.to_string(),
            resource_group: path.resource_group.map(str::to_string),
            namespace: None,
            types: Vec::new(),
        };
        // An extension section continues the type list: `…/{type}/{name}/providers/{Namespace}/…`.
        for (n, section) in path.sections.iter().enumerate() {
            if section.rest.is_empty() || section.collection().is_some() {
                return Err(bad("provider resource types and names must come in pairs"));
            }
            if n == 0 {
                id.namespace = Some(section.namespace.to_string());
            } else {
                id.types
                    .push(("providers".to_string(), section.namespace.to_string()));
            }
            id.types.extend(
                section
                    .pairs()
                    .into_iter()
                    .map(|(t, n)| (t.to_string(), n.to_string())),
            );
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
    fn request_paths_split_into_scope_sections_and_tail() {
        let p = ArmPath::parse("/SUBSCRIPTIONS/s/resourcegroups/g/providers/Microsoft.Compute/virtualMachineScaleSets/ss/virtualMachines/3/providers/Microsoft.Authorization/roleAssignments").unwrap();
        assert_eq!((p.subscription, p.resource_group), ("s", Some("g")));
        assert_eq!(p.sections.len(), 2);
        assert_eq!(p.sections[0].namespace, "Microsoft.Compute");
        assert_eq!(
            p.sections[0].pairs(),
            vec![("virtualMachineScaleSets", "ss"), ("virtualMachines", "3")]
        );
        assert_eq!(p.sections[0].collection(), None);
        assert_eq!(p.sections[1].collection(), Some("roleAssignments"));
        assert_eq!(
            p.scope_of(&p.sections[1]),
            "/SUBSCRIPTIONS/s/resourcegroups/g/providers/Microsoft.Compute/virtualMachineScaleSets/ss/virtualMachines/3"
        );
        assert_eq!(p.without_last_section().sections.len(), 1);
        // `providers` in a name's place is a name.
        let p = ArmPath::parse("/subscriptions/s/providers/N/t/providers").unwrap();
        assert_eq!(p.sections[0].pairs(), vec![("t", "providers")]);
        let p = ArmPath::parse("/subscriptions/s/operationresults/x/").unwrap();
        assert_eq!(
            (p.resource_group, p.tail),
            (None, vec!["operationresults", "x"])
        );
        let p = ArmPath::parse("/subscriptions/s/resourceGroups").unwrap();
        assert_eq!((p.resource_group, p.tail), (None, vec!["resourceGroups"]));
        assert!(ArmPath::parse("/subscriptions/s/providers").is_none());
        assert!(ArmPath::parse("/tenants").is_none());
    }

    #[test]
    fn extension_ids_keep_their_full_type() {
        let id = ResourceId::parse(&format!(
            "/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/vm1/providers/Microsoft.Authorization/roleAssignments/ra1"
        ))
        .unwrap();
        assert_eq!(
            id.resource_type().as_deref(),
            Some("Microsoft.Compute/virtualMachines/providers/roleAssignments")
        );
        assert_eq!(id.name(), "ra1");
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
